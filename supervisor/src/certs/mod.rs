//! The certificate manager: every certificate the proxy serves comes from here.
//!
//! - **Bootstrap**: a self-signed ECDSA P-256 certificate for the machine's hostname and IP
//!   addresses ([`CertManager::bootstrap`]), the proxy's default certificate.
//! - **Before listening**: [`load_stored`] hands every stored certificate to the proxy's
//!   [`CertStore`] before `Proxy::start`, so the first TLS connection after a restart already
//!   gets the right certificate (Traefik serves its default one for a while: traefik#7869).
//! - **ACME** ([`CertManager::issue`], [`CertManager::renew_due`], [`CertManager::run`]): one
//!   certificate per domain (plus extra names), HTTP-01 through the proxy's plain-HTTP entrypoint
//!   or TLS-ALPN-01 through its TLS entrypoint, the one that last worked first, falling back to
//!   the other. The chain and key are committed to the store before the proxy gets them.
//! - **Renewal** at one third of the lifetime left, or earlier when the CA's Renewal Information
//!   window opens; exponential backoff with jitter after failures; a per-domain order throttle
//!   counted from the store (so restarts and crash loops count too: traefik#7952, #3653).
//! - **Import** of an operator's PEM chain and key, validated with an error naming the check.
//! - **Expiry warnings** ([`CertManager::warnings`]); the proxy exports each loaded certificate's
//!   not-after as the `gantry_tls_certs_not_after` gauge.

mod acme;
mod x509;

use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use gantry_proxy::tls::{AcmeChallenges, CertStore, LoadedCert, load_pem};
use rand::Rng;
use tokio::sync::{Mutex, Notify};
use tokio_util::sync::CancellationToken;

pub use x509::{
    CertInfo, ImportCheck, ImportError, name_matches, normalize_domain, validate_import,
};

use crate::Error;
use crate::clock::Clock;
use crate::store::{
    AttemptOutcome, AttemptRecord, CertSource, CertificateRecord, ChallengeKind, Domain,
    EventLevel, NewCertificate, Store,
};

/// Let's Encrypt's production directory.
pub const LETS_ENCRYPT: &str = "https://acme-v02.api.letsencrypt.org/directory";
/// Let's Encrypt's staging directory (untrusted certificates, generous limits).
pub const LETS_ENCRYPT_STAGING: &str = "https://acme-staging-v02.api.letsencrypt.org/directory";

/// Which ACME directory to use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Directory {
    LetsEncrypt,
    LetsEncryptStaging,
    Url(String),
}

impl Directory {
    /// `letsencrypt`, `letsencrypt-staging`, or an `https://` directory URL.
    pub fn parse(s: &str) -> Result<Directory, Error> {
        match s {
            "letsencrypt" | "le" => Ok(Directory::LetsEncrypt),
            "letsencrypt-staging" | "le-staging" => Ok(Directory::LetsEncryptStaging),
            url if url.starts_with("https://") => Ok(Directory::Url(url.to_owned())),
            other => Err(Error::Invalid(format!(
                "ACME directory `{other}`: use `letsencrypt`, `letsencrypt-staging` or an https:// URL"
            ))),
        }
    }

    pub fn url(&self) -> &str {
        match self {
            Directory::LetsEncrypt => LETS_ENCRYPT,
            Directory::LetsEncryptStaging => LETS_ENCRYPT_STAGING,
            Directory::Url(u) => u,
        }
    }
}

/// How to talk to the CA and which challenges the network allows.
#[derive(Debug, Clone)]
pub struct AcmeConfig {
    pub directory: Directory,
    /// A PEM file of extra root CAs trusted for the directory's HTTPS (besides the system's).
    pub extra_root: Option<PathBuf>,
    /// Contact address for the account (expiry notices from the CA).
    pub email: Option<String>,
    /// A plain-HTTP entrypoint answers on port 80 of the domains (HTTP-01 can work).
    pub http01: bool,
    /// A TLS entrypoint answers on port 443 of the domains (TLS-ALPN-01 can work).
    pub tls_alpn01: bool,
}

/// Timing and limits.
#[derive(Debug, Clone)]
pub struct Policy {
    /// Orders per domain per rolling hour, counted in the store (across restarts).
    pub max_orders_per_hour: u32,
    /// Backoff after the first failure; doubles per consecutive failure, with jitter.
    pub backoff_base: Duration,
    pub backoff_max: Duration,
    /// How often [`CertManager::run`] checks for due renewals.
    pub check_interval: Duration,
    /// Certificates this close to expiry (and not renewed) are warned about.
    pub warn_before: Duration,
    /// How long to wait for the CA to validate and issue.
    pub order_timeout: Duration,
    /// Lifetime of the self-signed bootstrap certificate.
    pub self_signed_days: u32,
}

impl Default for Policy {
    fn default() -> Policy {
        Policy {
            max_orders_per_hour: 3,
            backoff_base: Duration::from_secs(5 * 60),
            backoff_max: Duration::from_secs(12 * 3600),
            check_interval: Duration::from_secs(3600),
            warn_before: Duration::from_secs(14 * 86_400),
            order_timeout: Duration::from_secs(90),
            self_signed_days: 365,
        }
    }
}

/// The machine's names for the bootstrap certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MachineIdentity {
    pub hostname: String,
    pub ips: Vec<IpAddr>,
}

impl MachineIdentity {
    /// The kernel's hostname and the addresses of every interface.
    pub fn detect() -> MachineIdentity {
        let hostname = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|s| s.trim().to_ascii_lowercase())
            .unwrap_or_default();
        let mut ips: Vec<IpAddr> = match if_addrs::get_if_addrs() {
            Ok(ifs) => ifs.into_iter().map(|i| i.ip()).collect(),
            Err(e) => {
                tracing::warn!(error = %e, "cannot list network interfaces");
                Vec::new()
            }
        };
        ips.retain(|ip| match ip {
            // Link-local v6 addresses need a zone and are no use in a certificate.
            IpAddr::V6(v6) => (v6.segments()[0] & 0xffc0) != 0xfe80,
            IpAddr::V4(_) => true,
        });
        for lo in [
            IpAddr::from([127, 0, 0, 1]),
            IpAddr::from([0u16, 0, 0, 0, 0, 0, 0, 1]),
        ] {
            if !ips.contains(&lo) {
                ips.push(lo);
            }
        }
        ips.sort();
        ips.dedup();
        MachineIdentity { hostname, ips }
    }

    fn names(&self) -> Vec<String> {
        let mut v = Vec::new();
        if !self.hostname.is_empty() {
            v.push(self.hostname.clone());
        }
        v.extend(self.ips.iter().map(IpAddr::to_string));
        v
    }
}

/// Gives the proxy every current certificate from the store, atomically; the self-signed one
/// becomes the default for clients whose SNI matches nothing. Call it before `Proxy::start`.
/// A certificate that does not load is skipped and logged (an event), never fatal.
pub fn load_stored(store: &Store, certs: &CertStore, now: i64) -> Result<usize, Error> {
    let mut loaded: Vec<LoadedCert> = Vec::new();
    let mut default = None;
    // Newest first: on overlapping names the newest certificate wins.
    for rec in store.current_certificates()? {
        match load_pem(rec.chain_pem.as_bytes(), rec.key_pem.as_bytes()) {
            Ok(c) => {
                // A domain's own self-signed certificate is served for its names only; the
                // machine's bootstrap one (no domain) is the default.
                if rec.source == CertSource::SelfSigned && rec.domain_id.is_none() {
                    default = Some(c.clone());
                }
                loaded.push(c);
            }
            Err(e) => {
                let msg = format!("stored certificate #{} does not load: {e}", rec.id);
                tracing::error!(domain = ?rec.domain, "{msg}");
                let _ = store.add_event(
                    EventLevel::Error,
                    "certificate.load_failed",
                    rec.domain.as_deref(),
                    &msg,
                    now,
                );
            }
        }
    }
    let n = loaded.len();
    certs.set_managed(loaded, default);
    Ok(n)
}

/// Human-readable UTC time (`2026-11-23 07:11:35 UTC`) for messages.
pub fn fmt_time(unix: i64) -> String {
    match time::OffsetDateTime::from_unix_timestamp(unix) {
        Ok(t) => format!(
            "{:04}-{:02}-{:02} {:02}:{:02}:{:02} UTC",
            t.year(),
            u8::from(t.month()),
            t.day(),
            t.hour(),
            t.minute(),
            t.second()
        ),
        Err(_) => format!("@{unix}"),
    }
}

/// Why a certificate is due for renewal, if it is.
pub fn renewal_reason(cert: &CertificateRecord, now: i64) -> Option<&'static str> {
    if cert.source == CertSource::Uploaded {
        return None;
    }
    let lifetime = (cert.not_after - cert.not_before).max(0);
    if now >= cert.not_after - lifetime / 3 {
        return Some("one third of its lifetime is left");
    }
    if let Some((start, _)) = cert.ari_window
        && now >= start
    {
        return Some("the CA's renewal window (ARI) is open");
    }
    None
}

/// A domain's certificate state, for the CLI and the web UI.
#[derive(Debug, Clone)]
pub struct DomainStatus {
    pub domain: Domain,
    pub certificate: Option<CertificateRecord>,
    pub last_attempt: Option<AttemptRecord>,
    pub renewal_due: Option<&'static str>,
}

/// A certificate near expiry and not renewed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExpiryWarning {
    pub domain: Option<String>,
    pub names: Vec<String>,
    pub source: CertSource,
    pub not_after: i64,
    pub message: String,
}

/// What one automatic check did for a domain.
#[derive(Debug)]
pub enum RenewalAction {
    NotDue,
    /// An uploaded certificate: the operator renews it.
    Uploaded,
    /// A domain in self-signed mode got a fresh self-signed certificate (never switched to ACME
    /// behind the operator's back: the domain may not be reachable from the internet).
    SelfSigned(CertificateRecord),
    /// Waiting for the backoff after a failure.
    BackingOff {
        until: i64,
    },
    Issued(CertificateRecord),
    Failed(Error),
}

/// The certificate manager. Share it behind an `Arc`.
pub struct CertManager {
    store: Arc<Store>,
    clock: Arc<dyn Clock>,
    hooks: acme::Hooks,
    acme: AcmeConfig,
    policy: Policy,
    account: Mutex<Option<instant_acme::Account>>,
    /// One issuance at a time: orders for the same domain never overlap.
    issuing: Mutex<()>,
    wake: Notify,
    /// Set by [`CertManager::bootstrap`]; the periodic check keeps that certificate fresh.
    identity: std::sync::Mutex<Option<MachineIdentity>>,
}

impl std::fmt::Debug for CertManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertManager")
            .field("store", &self.store)
            .field("acme", &self.acme)
            .field("policy", &self.policy)
            .finish_non_exhaustive()
    }
}

impl CertManager {
    /// A manager over `store`, serving into `certs` (the store the proxy will be started with).
    /// HTTP-01 answers need [`CertManager::with_http01`] once the proxy runs.
    pub fn new(
        store: Arc<Store>,
        clock: Arc<dyn Clock>,
        certs: Arc<CertStore>,
        acme: AcmeConfig,
        policy: Policy,
    ) -> CertManager {
        CertManager {
            store,
            clock,
            hooks: acme::Hooks {
                certs,
                http01: None,
            },
            acme,
            policy,
            account: Mutex::new(None),
            issuing: Mutex::new(()),
            wake: Notify::new(),
            identity: std::sync::Mutex::new(None),
        }
    }

    /// Attaches the proxy's HTTP-01 answers (`proxy.acme()`).
    pub fn with_http01(mut self, challenges: Arc<AcmeChallenges>) -> CertManager {
        self.hooks.http01 = Some(challenges);
        self
    }

    pub fn store(&self) -> &Arc<Store> {
        &self.store
    }

    pub fn cert_store(&self) -> &Arc<CertStore> {
        &self.hooks.certs
    }

    pub fn now(&self) -> i64 {
        self.clock.now()
    }

    fn event(&self, level: EventLevel, kind: &str, subject: Option<&str>, message: &str) {
        match level {
            EventLevel::Info => tracing::info!(kind, subject, "{message}"),
            EventLevel::Warning => tracing::warn!(kind, subject, "{message}"),
            EventLevel::Error => tracing::error!(kind, subject, "{message}"),
        }
        if let Err(e) = self
            .store
            .add_event(level, kind, subject, message, self.clock.now())
        {
            tracing::error!(error = %e, "cannot record an event");
        }
    }

    /// Makes sure a self-signed certificate for the machine exists and is not near its end.
    /// Returns whether a new one was generated (and stored).
    pub fn bootstrap(&self, identity: &MachineIdentity) -> Result<bool, Error> {
        if let Ok(mut id) = self.identity.lock() {
            *id = Some(identity.clone());
        }
        let now = self.clock.now();
        let names = identity.names();
        if let Some(cur) = self.store.current_self_signed()?
            && cur.names == names
            && renewal_reason(&cur, now).is_none()
        {
            return Ok(false);
        }
        self.store_self_signed(None, &identity.hostname, &identity.ips, now)?;
        self.event(
            EventLevel::Info,
            "certificate.self_signed",
            None,
            &format!("self-signed certificate generated for {}", names.join(", ")),
        );
        Ok(true)
    }

    /// Hands every stored certificate to the proxy (see [`load_stored`]).
    pub fn install(&self) -> Result<usize, Error> {
        load_stored(&self.store, &self.hooks.certs, self.clock.now())
    }

    /// Adds (or updates the extra names of) a domain. Names are validated.
    pub fn add_domain(&self, name: &str, extra_names: &[String]) -> Result<Domain, Error> {
        let name = normalize_domain(name)?;
        let mut extra = Vec::new();
        for n in extra_names {
            let n = normalize_domain(n)?;
            if n != name && !extra.contains(&n) {
                extra.push(n);
            }
        }
        self.store.upsert_domain(&name, &extra, self.clock.now())
    }

    fn domain(&self, name: &str) -> Result<Domain, Error> {
        let n = normalize_domain(name)?;
        self.store
            .domain(&n)?
            .ok_or_else(|| Error::UnknownDomain(n))
    }

    async fn account(&self) -> Result<instant_acme::Account, Error> {
        let mut cached = self.account.lock().await;
        if let Some(a) = cached.as_ref() {
            return Ok(a.clone());
        }
        let a = acme::account(
            &self.store,
            self.acme.directory.url(),
            self.acme.extra_root.as_deref(),
            self.acme.email.as_deref(),
            self.clock.now(),
        )
        .await?;
        *cached = Some(a.clone());
        Ok(a)
    }

    /// The challenges to try, in order: the one that last worked first.
    fn challenge_order(&self, domain: &Domain) -> Vec<ChallengeKind> {
        let mut v = Vec::new();
        if self.acme.http01 && self.hooks.http01.is_some() {
            v.push(ChallengeKind::Http01);
        }
        if self.acme.tls_alpn01 {
            v.push(ChallengeKind::TlsAlpn01);
        }
        if let Some(p) = domain.preferred_challenge
            && let Some(i) = v.iter().position(|c| *c == p)
        {
            v.swap(0, i);
        }
        v
    }

    /// Refuses (and records) an order the throttle does not allow.
    fn check_throttle(&self, domain: &Domain) -> Result<(), Error> {
        let now = self.clock.now();
        let limit = self.policy.max_orders_per_hour;
        let (orders, oldest) = self.store.orders_since(domain.id, now - 3600)?;
        if orders < limit {
            return Ok(());
        }
        let until = oldest.map_or(now + 3600, |t| t + 3600);
        let err = Error::Throttled {
            domain: domain.name.clone(),
            orders,
            limit,
            until,
        };
        let msg = err.to_string();
        self.store
            .record_throttled(domain.id, self.acme.directory.url(), &msg, until, now)?;
        self.event(
            EventLevel::Warning,
            "acme.throttled",
            Some(&domain.name),
            &msg,
        );
        Err(err)
    }

    /// The backoff after the failures ending the domain's history: (min, max) seconds.
    fn backoff_bounds(&self, failures: u32) -> (u64, u64) {
        let base = self.policy.backoff_base.as_secs().max(1);
        let max = self.policy.backoff_max.as_secs().max(base);
        let d = base
            .saturating_mul(1u64 << failures.saturating_sub(1).min(32))
            .min(max);
        (d / 2, d)
    }

    /// Orders a certificate for a configured domain now, whatever the renewal schedule and
    /// backoff say (an operator's explicit request), within the order throttle. The new chain
    /// and key are committed to the store, then served by the proxy.
    pub async fn issue(&self, domain: &str) -> Result<CertificateRecord, Error> {
        let domain = self.domain(domain)?;
        self.issue_domain(&domain, None).await
    }

    async fn issue_domain(
        &self,
        domain: &Domain,
        replacing: Option<&CertificateRecord>,
    ) -> Result<CertificateRecord, Error> {
        let _one_at_a_time = self.issuing.lock().await;
        let challenges = self.challenge_order(domain);
        if challenges.is_empty() {
            return Err(Error::NoChallenge(domain.name.clone()));
        }
        let names = domain.all_names();
        let directory = self.acme.directory.url().to_owned();
        // Replacing a certificate the CA gave renewal information for: say so in the order.
        let replaces = replacing
            .filter(|c| c.ari_window.is_some())
            .and_then(|c| x509::describe_chain(&c.chain_pem).ok())
            .and_then(|i| acme::cert_identifier(&i));
        let mut errors = Vec::new();
        for (i, &challenge) in challenges.iter().enumerate() {
            self.check_throttle(domain)?;
            let started = self.clock.now();
            let attempt = self
                .store
                .begin_attempt(domain.id, &directory, challenge, started)?;
            tracing::info!(domain = %domain.name, %challenge, "ACME order");
            let result = match self.account().await {
                Ok(account) => acme::order(
                    &account,
                    &names,
                    challenge,
                    &self.hooks,
                    self.policy.order_timeout,
                    replaces.clone(),
                )
                .await
                .map_err(|e| (e.may_fall_back(), e.message().to_owned())),
                Err(e) => Err((false, e.to_string())),
            };
            match result {
                Ok(issued) => {
                    let rec = self.store_issued(domain, &issued, attempt)?;
                    self.store.set_preferred_challenge(domain.id, challenge)?;
                    self.install()?;
                    self.event(
                        EventLevel::Info,
                        "certificate.issued",
                        Some(&domain.name),
                        &format!(
                            "certificate issued with {challenge} for {}, valid until {}",
                            rec.names.join(", "),
                            fmt_time(rec.not_after)
                        ),
                    );
                    return Ok(rec);
                }
                Err((may_fall_back, msg)) => {
                    let msg = format!("{challenge}: {msg}");
                    self.store.finish_attempt(
                        attempt,
                        AttemptOutcome::Failed,
                        Some(&msg),
                        None,
                        self.clock.now(),
                    )?;
                    self.event(
                        EventLevel::Warning,
                        "acme.failed",
                        Some(&domain.name),
                        &format!("ACME order failed: {msg}"),
                    );
                    errors.push(msg);
                    let more = i + 1 < challenges.len();
                    if may_fall_back && more {
                        continue;
                    }
                    // Backoff for automatic retries, with jitter so that many domains do not
                    // retry in lockstep.
                    let failures = self.consecutive_failures(domain.id)?;
                    let (lo, hi) = self.backoff_bounds(failures);
                    let delay = rand::rng().random_range(lo..=hi);
                    let until = self.clock.now() + i64::try_from(delay).unwrap_or(i64::MAX / 2);
                    self.store.set_retry_after(attempt, until)?;
                    break;
                }
            }
        }
        Err(Error::Acme(format!(
            "no certificate for `{}`: {}",
            domain.name,
            errors.join("; then ")
        )))
    }

    fn store_issued(
        &self,
        domain: &Domain,
        issued: &acme::Issued,
        attempt: i64,
    ) -> Result<CertificateRecord, Error> {
        // Checked like an upload: a CA bug must not take the site down.
        let info = validate_import(
            &domain.name,
            &issued.chain_pem,
            &issued.key_pem,
            self.clock.now().max(0),
        )
        .or_else(|e| match e.check {
            // A CA's clock a little ahead of ours, or our moved test clock: still a fine cert.
            ImportCheck::AlreadyValid | ImportCheck::NotExpired => {
                x509::describe_chain(&issued.chain_pem)
            }
            _ => Err(Error::Import(e)),
        });
        let info = match info {
            Ok(i) => i,
            Err(e) => {
                self.store.finish_attempt(
                    attempt,
                    AttemptOutcome::Failed,
                    Some(&e.to_string()),
                    None,
                    self.clock.now(),
                )?;
                return Err(e);
            }
        };
        let rec = self.store.insert_certificate(
            &NewCertificate {
                domain_id: Some(domain.id),
                source: CertSource::Acme,
                names: &info.names,
                chain_pem: &issued.chain_pem,
                key_pem: &issued.key_pem,
                issuer: &info.issuer,
                serial: &info.serial,
                not_before: info.not_before,
                not_after: info.not_after,
            },
            self.clock.now(),
        )?;
        self.store.finish_attempt(
            attempt,
            AttemptOutcome::Issued,
            None,
            Some(rec.id),
            self.clock.now(),
        )?;
        Ok(rec)
    }

    fn consecutive_failures(&self, domain_id: i64) -> Result<u32, Error> {
        let mut n = 0;
        for a in self.store.attempts(domain_id, 64)? {
            match a.outcome {
                AttemptOutcome::Failed => n += 1,
                AttemptOutcome::Throttled | AttemptOutcome::Running => {}
                AttemptOutcome::Issued => break,
            }
        }
        Ok(n)
    }

    /// Asks the CA for renewal information when it is time to (at most as often as it says).
    async fn refresh_ari(&self, cert: &CertificateRecord) {
        let now = self.clock.now();
        if cert.ari_next_check.is_some_and(|t| t > now) {
            return;
        }
        let Ok(info) = x509::describe_chain(&cert.chain_pem) else {
            return;
        };
        let result = match self.account().await {
            Ok(a) => acme::renewal_window(&a, &info).await,
            Err(e) => Err(e),
        };
        let (window, next) = match result {
            Ok(Some((w, retry))) => (
                Some(w),
                now + i64::try_from(retry.as_secs().clamp(3600, 86_400)).unwrap_or(86_400),
            ),
            // No ARI at this CA: ask again in a day (the directory may gain it).
            Ok(None) => (None, now + 86_400),
            Err(e) => {
                tracing::warn!(domain = ?cert.domain, error = %e, "renewal information");
                (cert.ari_window, now + 3600)
            }
        };
        if let Err(e) = self.store.set_ari(cert.id, window, next) {
            tracing::error!(error = %e, "cannot store renewal information");
        }
    }

    /// One automatic pass: issues missing certificates and renews due ones, honouring the
    /// backoff and the throttle. Never fails as a whole; each domain reports its own outcome.
    pub async fn renew_due(&self) -> Result<Vec<(String, RenewalAction)>, Error> {
        let identity = self.identity.lock().ok().and_then(|i| i.clone());
        if let Some(identity) = identity
            && self.bootstrap(&identity)?
        {
            self.install()?;
        }
        let mut out = Vec::new();
        for domain in self.store.domains()? {
            let action = self.check_domain(&domain).await;
            out.push((domain.name.clone(), action));
        }
        Ok(out)
    }

    async fn check_domain(&self, domain: &Domain) -> RenewalAction {
        let current = match self.store.current_certificate(domain.id) {
            Ok(c) => c,
            Err(e) => return RenewalAction::Failed(e),
        };
        if let Some(cert) = &current {
            if cert.source == CertSource::Uploaded {
                return RenewalAction::Uploaded;
            }
            self.refresh_ari(cert).await;
        }
        // Re-read: refresh_ari may have stored a window.
        let current = match self.store.current_certificate(domain.id) {
            Ok(c) => c,
            Err(e) => return RenewalAction::Failed(e),
        };
        let now = self.clock.now();
        if let Some(c) = &current
            && c.source == CertSource::SelfSigned
        {
            if renewal_reason(c, now).is_none() {
                return RenewalAction::NotDue;
            }
            return match self.self_signed_domain(&domain.name) {
                Ok(rec) => RenewalAction::SelfSigned(rec),
                Err(e) => RenewalAction::Failed(e),
            };
        }
        let reason = match &current {
            None => "no certificate yet",
            Some(c) => match renewal_reason(c, now) {
                Some(r) => r,
                None => return RenewalAction::NotDue,
            },
        };
        match self.store.attempts(domain.id, 1) {
            Ok(a) => {
                if let Some(last) = a.first()
                    && matches!(
                        last.outcome,
                        AttemptOutcome::Failed | AttemptOutcome::Throttled
                    )
                    && let Some(until) = last.retry_after
                    && until > now
                {
                    return RenewalAction::BackingOff { until };
                }
            }
            Err(e) => return RenewalAction::Failed(e),
        }
        tracing::info!(domain = %domain.name, reason, "certificate due");
        match self.issue_domain(domain, current.as_ref()).await {
            Ok(rec) => RenewalAction::Issued(rec),
            Err(e) => RenewalAction::Failed(e),
        }
    }

    /// Runs [`CertManager::renew_due`] now, then every `check_interval` or when woken, until
    /// `cancel` fires.
    pub async fn run(self: Arc<Self>, cancel: CancellationToken) {
        // Attempts a previous process left `running` died with it (they still count for the
        // throttle).
        match self.store.fail_interrupted_attempts(self.clock.now()) {
            Ok(0) => {}
            Ok(n) => tracing::warn!(attempts = n, "ACME attempts interrupted by a stop"),
            Err(e) => tracing::error!(error = %e, "cannot close interrupted attempts"),
        }
        loop {
            let pass = tokio::select! {
                r = self.renew_due() => r,
                () = cancel.cancelled() => return,
            };
            match pass {
                Ok(actions) => {
                    for (domain, action) in actions {
                        if let RenewalAction::Failed(e) = action {
                            tracing::warn!(%domain, error = %e, "certificate check failed");
                        }
                    }
                }
                Err(e) => tracing::error!(error = %e, "certificate check failed"),
            }
            tokio::select! {
                () = cancel.cancelled() => return,
                () = tokio::time::sleep(self.policy.check_interval) => {}
                () = self.wake.notified() => {}
            }
        }
    }

    /// Makes [`CertManager::run`] check now (a new domain, the web UI's "renew now").
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// Imports an operator's certificate (see [`import`]) and serves it at once.
    pub fn import(
        &self,
        domain: &str,
        chain_pem: &str,
        key_pem: &str,
    ) -> Result<CertificateRecord, Error> {
        let rec = import(&self.store, self.clock.now(), domain, chain_pem, key_pem)?;
        self.install()?;
        Ok(rec)
    }

    /// Generates and stores a self-signed certificate for `hostname` and `ips`: the machine's
    /// bootstrap one (`domain_id` None) or a domain's own.
    fn store_self_signed(
        &self,
        domain_id: Option<i64>,
        hostname: &str,
        ips: &[IpAddr],
        now: i64,
    ) -> Result<CertificateRecord, Error> {
        let (chain, key) = x509::self_signed(hostname, ips, now, self.policy.self_signed_days)?;
        let info = x509::describe_chain(&chain)?;
        self.store.insert_certificate(
            &NewCertificate {
                domain_id,
                source: CertSource::SelfSigned,
                names: &info.names,
                chain_pem: &chain,
                key_pem: &key,
                issuer: &info.issuer,
                serial: &info.serial,
                not_before: info.not_before,
                not_after: info.not_after,
            },
            now,
        )
    }

    /// Gives `domain` (added if new) a fresh self-signed certificate for its name and serves it at
    /// once: the chat domain in the wizard's self-signed mode, and that certificate's renewal.
    /// Switching such a domain to ACME is [`CertManager::issue`] (the web UI's "renew").
    pub fn self_signed_domain(&self, domain: &str) -> Result<CertificateRecord, Error> {
        let name = normalize_domain(domain)?;
        let now = self.clock.now();
        let d = match self.store.domain(&name)? {
            Some(d) => d,
            None => self.store.upsert_domain(&name, &[], now)?,
        };
        let rec = self.store_self_signed(Some(d.id), &name, &[], now)?;
        self.event(
            EventLevel::Info,
            "certificate.self_signed",
            Some(&name),
            &format!(
                "self-signed certificate generated for {name}, valid until {}",
                fmt_time(rec.not_after)
            ),
        );
        self.install()?;
        Ok(rec)
    }

    /// Every domain with its certificate and last attempt.
    pub fn status(&self) -> Result<Vec<DomainStatus>, Error> {
        status(&self.store, self.clock.now())
    }

    /// Certificates within `warn_before` of expiry (or past it) that renewal has not replaced.
    pub fn warnings(&self) -> Result<Vec<ExpiryWarning>, Error> {
        warnings(&self.store, self.clock.now(), self.policy.warn_before)
    }
}

/// Imports an operator's certificate for `domain` (added if new) after validating it
/// ([`validate_import`]); on error nothing is stored. A running proxy gets it from
/// [`CertManager::import`] or the next [`load_stored`].
pub fn import(
    store: &Store,
    now: i64,
    domain: &str,
    chain_pem: &str,
    key_pem: &str,
) -> Result<CertificateRecord, Error> {
    let name = normalize_domain(domain)?;
    let info = validate_import(&name, chain_pem, key_pem, now)?;
    let d = match store.domain(&name)? {
        Some(d) => d,
        None => store.upsert_domain(&name, &[], now)?,
    };
    let rec = store.insert_certificate(
        &NewCertificate {
            domain_id: Some(d.id),
            source: CertSource::Uploaded,
            names: &info.names,
            chain_pem,
            key_pem,
            issuer: &info.issuer,
            serial: &info.serial,
            not_before: info.not_before,
            not_after: info.not_after,
        },
        now,
    )?;
    let msg = format!(
        "certificate imported for {}, valid until {}",
        info.names.join(", "),
        fmt_time(info.not_after)
    );
    tracing::info!(domain = %name, "{msg}");
    store.add_event(
        EventLevel::Info,
        "certificate.imported",
        Some(&name),
        &msg,
        now,
    )?;
    Ok(rec)
}

/// Every domain with its certificate and last attempt (no CA needed).
pub fn status(store: &Store, now: i64) -> Result<Vec<DomainStatus>, Error> {
    let mut out = Vec::new();
    for domain in store.domains()? {
        let certificate = store.current_certificate(domain.id)?;
        let last_attempt = store.attempts(domain.id, 1)?.into_iter().next();
        let renewal_due = match &certificate {
            Some(c) => renewal_reason(c, now),
            None => Some("no certificate yet"),
        };
        out.push(DomainStatus {
            domain,
            certificate,
            last_attempt,
            renewal_due,
        });
    }
    Ok(out)
}

/// Expiry warnings (no CA needed): certificates within `warn_before` of their end. ACME ones
/// should have been renewed long before (at a third of their lifetime), so any such one means
/// renewal is failing; uploaded ones are the operator's to replace.
pub fn warnings(
    store: &Store,
    now: i64,
    warn_before: Duration,
) -> Result<Vec<ExpiryWarning>, Error> {
    let horizon = i64::try_from(warn_before.as_secs()).unwrap_or(i64::MAX / 2);
    let mut out = Vec::new();
    for c in store.current_certificates()? {
        if c.source == CertSource::SelfSigned || c.not_after - now > horizon {
            continue;
        }
        let when = if c.not_after <= now {
            format!("expired on {}", fmt_time(c.not_after))
        } else {
            format!(
                "expires in {} days ({})",
                (c.not_after - now) / 86_400,
                fmt_time(c.not_after)
            )
        };
        let message = match c.source {
            CertSource::Uploaded => {
                format!("uploaded certificate {when}: upload a renewed one")
            }
            _ => {
                let last = c
                    .domain_id
                    .map(|d| store.attempts(d, 1))
                    .transpose()?
                    .and_then(|v| v.into_iter().next());
                match last.and_then(|a| a.error) {
                    Some(err) => format!("certificate {when} and renewal is failing: {err}"),
                    None => format!("certificate {when} and has not been renewed"),
                }
            }
        };
        out.push(ExpiryWarning {
            domain: c.domain.clone(),
            names: c.names.clone(),
            source: c.source,
            not_after: c.not_after,
            message,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cert(not_before: i64, not_after: i64, source: CertSource) -> CertificateRecord {
        CertificateRecord {
            id: 1,
            domain_id: Some(1),
            domain: Some("a.example.com".into()),
            source,
            names: vec![],
            chain_pem: String::new(),
            key_pem: String::new(),
            issuer: String::new(),
            serial: String::new(),
            not_before,
            not_after,
            created_at: 0,
            ari_window: None,
            ari_next_check: None,
        }
    }

    #[test]
    fn renewal_at_one_third_or_ari() {
        let day = 86_400;
        let mut c = cert(0, 90 * day, CertSource::Acme);
        assert_eq!(renewal_reason(&c, 59 * day), None);
        assert!(renewal_reason(&c, 60 * day).is_some());
        c.ari_window = Some((10 * day, 11 * day));
        assert!(renewal_reason(&c, 10 * day).is_some());
        assert_eq!(renewal_reason(&c, 9 * day), None);
        let up = cert(0, 90 * day, CertSource::Uploaded);
        assert_eq!(renewal_reason(&up, 89 * day), None);
    }

    #[test]
    fn machine_identity_has_loopback() {
        let id = MachineIdentity::detect();
        assert!(id.ips.contains(&IpAddr::from([127, 0, 0, 1])), "{id:?}");
        assert!(
            !id.ips.iter().any(|ip| ip.to_string().starts_with("fe80")),
            "{id:?}"
        );
    }

    #[test]
    fn directories() {
        assert_eq!(Directory::parse("letsencrypt").unwrap().url(), LETS_ENCRYPT);
        assert_eq!(
            Directory::parse("letsencrypt-staging").unwrap().url(),
            LETS_ENCRYPT_STAGING
        );
        assert_eq!(
            Directory::parse("https://127.0.0.1:14000/dir")
                .unwrap()
                .url(),
            "https://127.0.0.1:14000/dir"
        );
        assert!(Directory::parse("http://plain").is_err());
    }
}
