//! [`Appliance`]: the one API the web UI (and the JSON API) calls. Each operation of the UI is
//! one method here, used by the HTML handler and by the `/api/v1/` handler alike, so the two can
//! never disagree. It composes the store, [`Auth`], the certificate manager, the proxy's
//! read-only state and the [`Cluster`] seam; it returns plain views (serde-serialisable) and
//! never hands out a secret it does not have to.

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use gantry_proxy::config::DynamicConfig;
use gantry_proxy::state::Shared;
use gantry_proxy::tls::{AcmeChallenges, CertStore};
use serde::Serialize;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::Error;
use crate::auth::{Auth, AuthError, NewSession, Secret, SessionPolicy, ThrottlePolicy};
use crate::certs::{
    self, AcmeConfig, CertManager, Directory, MachineIdentity, Policy, normalize_domain,
};
use crate::clock::Clock;
use crate::cluster::{Cluster, ClusterStatus, InstallPlan, StepOutcome};
use crate::external::{self, ExternalRouteInput, ExternalRouteView};
use crate::setup::{
    self, AdminInput, CertMode, ChatAdminInput, ChatDraft, ChatInput, InstallProgress, SetupDraft,
    SetupRequest, StepState,
};
use crate::store::{
    AttemptOutcome, CertSource, CertificateRecord, EventLevel, SessionKind, SessionRecord,
    SetupCompletion, Store, UserRecord,
};

/// Settings keys written by setup and the Settings page.
pub mod keys {
    pub const CHAT_DOMAIN: &str = "chat.domain";
    pub const CERT_MODE: &str = "chat.cert_mode";
    pub const ACME_EMAIL: &str = "acme.email";
    /// `letsencrypt` or `letsencrypt-staging`.
    pub const ACME_DIRECTORY: &str = "acme.directory";
    /// Rocket.Chat's first administrator (JSON), for the cluster to hand to Rocket.Chat.
    pub const CHAT_ADMIN: &str = "rocketchat.admin";
    pub const INSTALL_PROGRESS: &str = "setup.install_progress";
}

/// Names of the proxy's entrypoints in `gantry run`.
pub mod entrypoints {
    pub const HTTP: &str = "web";
    pub const HTTPS: &str = "websecure";
    pub const ADMIN: &str = "admin";
}

/// How the appliance is set up by `gantry run` (or a test).
#[derive(Debug, Clone)]
pub struct ApplianceOptions {
    pub data_dir: PathBuf,
    /// `--acme-directory`: replaces both Let's Encrypt directories (a private CA, pebble).
    pub acme_directory: Option<String>,
    /// `--acme-ca-root`: extra root CA for the directory's HTTPS.
    pub acme_ca_root: Option<PathBuf>,
    pub cert_policy: Policy,
    pub session_policy: SessionPolicy,
    pub throttle_policy: ThrottlePolicy,
    /// The proxy's entrypoints and the addresses they listen on.
    pub listen: BTreeMap<String, SocketAddr>,
    /// Files holding the setup token (the data directory's, the console banner's): removed
    /// when setup completes.
    pub setup_token_files: Vec<PathBuf>,
}

/// A certificate as the UI shows it.
#[derive(Debug, Clone, Serialize)]
pub struct CertView {
    pub id: i64,
    pub domain: Option<String>,
    pub names: Vec<String>,
    pub issuer: String,
    /// `self-signed`, `acme` or `uploaded`.
    pub source: &'static str,
    pub serial: String,
    pub not_before: i64,
    pub not_after: i64,
    pub days_left: i64,
    pub expired: bool,
    pub renewal_due: Option<&'static str>,
    /// Whether "renew now" applies (ACME-managed domains).
    pub can_renew: bool,
    /// Whether the chain verifies against the system's trusted roots.
    pub trusted: bool,
}

/// A domain with its certificate state.
#[derive(Debug, Clone, Serialize)]
pub struct DomainView {
    pub name: String,
    pub extra_names: Vec<String>,
    /// The chat's own domain (set up by the wizard).
    pub is_chat: bool,
    /// `valid`, `issuing`, `waiting`, `failed`, `throttled`, `uploaded` or `self-signed`.
    pub status: &'static str,
    pub status_text: String,
    pub last_error: Option<String>,
    pub retry_after: Option<i64>,
    pub certificate: Option<CertView>,
}

/// A router of the proxy, as Traefik's dashboard lists it.
#[derive(Debug, Clone, Serialize)]
pub struct RouterView {
    pub name: String,
    pub provider: String,
    pub entrypoints: Vec<String>,
    pub rule: String,
    pub priority: i64,
    pub service: String,
    pub middlewares: Vec<String>,
    pub tls: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct ServerView {
    pub url: String,
    pub up: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct ServiceView {
    pub name: String,
    pub provider: String,
    pub up: bool,
    pub servers: Vec<ServerView>,
}

#[derive(Debug, Clone, Serialize)]
pub struct EntrypointView {
    pub name: String,
    pub address: String,
    pub requests: u64,
    /// Requests per second over the last minute.
    pub rate: f64,
    pub open_connections: i64,
}

#[derive(Debug, Clone, Serialize)]
pub struct RoutesView {
    pub generation: u64,
    pub entrypoints: Vec<EntrypointView>,
    pub routers: Vec<RouterView>,
    pub services: Vec<ServiceView>,
    pub middlewares: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct DiskUse {
    pub data_dir: String,
    /// Bytes used by the data directory's files.
    pub used_bytes: u64,
    /// The file system holding it.
    pub fs_total_bytes: u64,
    pub fs_free_bytes: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Dashboard {
    pub version: &'static str,
    pub chat_domain: Option<String>,
    pub generation: u64,
    pub routers: usize,
    pub services: usize,
    pub entrypoints: Vec<EntrypointView>,
    /// Soonest expiry first.
    pub certificates: Vec<CertView>,
    pub warnings: Vec<String>,
    pub disk: Option<DiskUse>,
    pub cluster: ClusterStatus,
}

#[derive(Debug, Clone, Serialize)]
pub struct EventView {
    pub id: i64,
    pub at: i64,
    pub level: &'static str,
    pub kind: String,
    pub subject: Option<String>,
    pub message: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct SettingsView {
    pub username: String,
    pub chat_domain: Option<String>,
    pub cert_mode: Option<String>,
    pub acme_email: Option<String>,
    pub acme_directory: String,
    /// The directory comes from `--acme-directory`.
    pub acme_directory_overridden: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct ApiTokenView {
    pub id: i64,
    pub name: String,
    pub prefix: String,
    pub created_at: i64,
    pub last_used_at: Option<i64>,
}

/// What the summary step shows (no secrets).
#[derive(Debug, Clone, Serialize)]
pub struct SetupSummary {
    pub admin_username: String,
    pub domain: String,
    pub cert_mode: &'static str,
    pub cert_mode_label: &'static str,
    pub email: Option<String>,
    pub acme_directory: Option<String>,
    pub chat_admin_name: String,
    pub chat_admin_username: String,
    pub chat_admin_email: String,
    pub cluster: String,
}

/// The wizard's answers as the forms show them again (no secrets).
#[derive(Debug, Clone, Default, Serialize)]
pub struct DraftView {
    pub admin_username: Option<String>,
    pub domain: Option<String>,
    pub cert_mode: Option<&'static str>,
    pub email: Option<String>,
    pub chat_admin_name: Option<String>,
    pub chat_admin_username: Option<String>,
    pub chat_admin_email: Option<String>,
}

struct CertsSlot {
    manager: Arc<CertManager>,
    run: Option<CancellationToken>,
}

/// Totals per entrypoint at one time, for request rates.
#[derive(Default)]
struct Samples {
    ring: VecDeque<(i64, BTreeMap<String, u64>)>,
}

/// The appliance's control-plane API. Share it behind an `Arc`.
pub struct Appliance {
    opts: ApplianceOptions,
    store: Arc<Store>,
    clock: Arc<dyn Clock>,
    auth: Auth,
    cert_store: Arc<CertStore>,
    http01: Arc<AcmeChallenges>,
    certs: Mutex<CertsSlot>,
    proxy: Arc<Shared>,
    cluster: Arc<dyn Cluster>,
    setup_pending: AtomicBool,
    progress: watch::Sender<InstallProgress>,
    samples: Mutex<Samples>,
    trusted: ArcSwap<HashSet<String>>,
    /// Serialises external route changes, so the proxy always ends with the store's list.
    external: Mutex<()>,
    tasks: TaskTracker,
    cancel: CancellationToken,
}

impl std::fmt::Debug for Appliance {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Appliance")
            .field("data_dir", &self.opts.data_dir)
            .field("cluster", &self.cluster)
            .finish_non_exhaustive()
    }
}

fn days_left(not_after: i64, now: i64) -> i64 {
    (not_after - now).div_euclid(86_400)
}

fn dir_size(path: &Path, budget: &mut u32) -> u64 {
    let Ok(rd) = std::fs::read_dir(path) else {
        return 0;
    };
    let mut total = 0u64;
    for entry in rd.flatten() {
        if *budget == 0 {
            break;
        }
        *budget -= 1;
        let Ok(meta) = entry.metadata() else { continue };
        if meta.is_dir() {
            total += dir_size(&entry.path(), budget);
        } else {
            total += meta.len();
        }
    }
    total
}

impl Appliance {
    /// Builds the appliance over a running proxy (`proxy` is `Proxy::shared()`, `cert_store` and
    /// `http01` its certificate store and HTTP-01 answers). Generates the self-signed bootstrap
    /// certificate when needed and installs every stored certificate.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        opts: ApplianceOptions,
        store: Arc<Store>,
        clock: Arc<dyn Clock>,
        proxy: Arc<Shared>,
        cluster: Arc<dyn Cluster>,
        identity: &MachineIdentity,
        cancel: CancellationToken,
    ) -> Result<Arc<Appliance>, Error> {
        let auth = Auth::new(
            store.clone(),
            clock.clone(),
            opts.session_policy.clone(),
            opts.throttle_policy.clone(),
        );
        let cert_store = proxy.certs.clone();
        let http01 = proxy.acme.clone();
        let pending = !store.setup_completed()?;
        let progress = match store.setting(keys::INSTALL_PROGRESS)? {
            Some(json) => restore_progress(&json),
            None => InstallProgress::default(),
        };
        let (progress, _) = watch::channel(progress);
        let placeholder = Arc::new(CertManager::new(
            store.clone(),
            clock.clone(),
            cert_store.clone(),
            AcmeConfig {
                directory: Directory::LetsEncrypt,
                extra_root: None,
                email: None,
                http01: true,
                tls_alpn01: true,
            },
            opts.cert_policy.clone(),
        ));
        let app = Arc::new(Appliance {
            opts,
            store,
            clock,
            auth,
            cert_store,
            http01,
            certs: Mutex::new(CertsSlot {
                manager: placeholder,
                run: None,
            }),
            proxy,
            cluster,
            setup_pending: AtomicBool::new(pending),
            progress,
            samples: Mutex::default(),
            trusted: ArcSwap::default(),
            external: Mutex::new(()),
            tasks: TaskTracker::new(),
            cancel,
        });
        let manager = app.build_cert_manager()?;
        app.certs_slot().manager = manager.clone();
        manager.bootstrap(identity)?;
        manager.install()?;
        app.refresh_trust();
        Ok(app)
    }

    fn certs_slot(&self) -> std::sync::MutexGuard<'_, CertsSlot> {
        self.certs.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The certificate manager in use (replaced when the ACME settings change).
    pub fn certs(&self) -> Arc<CertManager> {
        self.certs_slot().manager.clone()
    }

    pub fn auth(&self) -> &Auth {
        &self.auth
    }

    pub fn store(&self) -> &Arc<Store> {
        &self.store
    }

    pub fn now(&self) -> i64 {
        self.clock.now()
    }

    pub fn cluster(&self) -> &Arc<dyn Cluster> {
        &self.cluster
    }

    /// The port an entrypoint listens on.
    pub fn port(&self, entrypoint: &str) -> Option<u16> {
        self.opts.listen.get(entrypoint).map(SocketAddr::port)
    }

    fn directory(&self) -> Result<Directory, Error> {
        if let Some(d) = &self.opts.acme_directory {
            return Directory::parse(d);
        }
        match self.store.setting(keys::ACME_DIRECTORY)?.as_deref() {
            Some("letsencrypt-staging") => Ok(Directory::LetsEncryptStaging),
            _ => Ok(Directory::LetsEncrypt),
        }
    }

    fn build_cert_manager(&self) -> Result<Arc<CertManager>, Error> {
        let acme = AcmeConfig {
            directory: self.directory()?,
            extra_root: self.opts.acme_ca_root.clone(),
            email: self.store.setting(keys::ACME_EMAIL)?,
            http01: self.opts.listen.contains_key(entrypoints::HTTP),
            tls_alpn01: self.opts.listen.contains_key(entrypoints::HTTPS),
        };
        Ok(Arc::new(
            CertManager::new(
                self.store.clone(),
                self.clock.clone(),
                self.cert_store.clone(),
                acme,
                self.opts.cert_policy.clone(),
            )
            .with_http01(self.http01.clone()),
        ))
    }

    /// Starts the certificate manager's renewal loop (again, with a manager built from the
    /// current ACME settings).
    pub fn start_renewals(self: &Arc<Self>) -> Result<(), Error> {
        let manager = self.build_cert_manager()?;
        let run = self.cancel.child_token();
        let old = {
            let mut slot = self.certs_slot();
            slot.manager = manager.clone();
            slot.run.replace(run.clone())
        };
        if let Some(old) = old {
            old.cancel();
        }
        let me = self.clone();
        self.tasks.spawn(async move {
            let watcher = me.clone();
            tokio::join!(manager.run(run.clone()), async move {
                // Certificates change under the loop: keep the HSTS list current.
                loop {
                    tokio::select! {
                        () = run.cancelled() => break,
                        () = tokio::time::sleep(Duration::from_secs(60)) => watcher.refresh_trust(),
                    }
                }
            });
        });
        Ok(())
    }

    /// Background work: request-rate samples and session sweeping, until cancelled.
    pub fn spawn_housekeeping(self: &Arc<Self>) {
        let me = self.clone();
        self.tasks.spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(5));
            let mut n: u64 = 0;
            loop {
                tokio::select! {
                    () = me.cancel.cancelled() => break,
                    _ = tick.tick() => {}
                }
                me.sample_rates();
                n += 1;
                if n.is_multiple_of(120)
                    && let Err(e) = me.auth.sweep()
                {
                    tracing::warn!(error = %e, "cannot delete expired sessions");
                }
            }
        });
    }

    /// After a restart with setup complete: hands the stored plan to the cluster again, which
    /// re-applies the stack (k3s keeps its state; the apply is idempotent).
    pub fn resume_cluster(self: &Arc<Self>) -> Result<(), Error> {
        if self.setup_pending() {
            return Ok(());
        }
        let (Some(domain), Some(admin)) = (
            self.store.setting(keys::CHAT_DOMAIN)?,
            self.store.setting(keys::CHAT_ADMIN)?,
        ) else {
            return Ok(());
        };
        let chat_admin: crate::cluster::ChatAdmin = serde_json::from_str(&admin)
            .map_err(|e| Error::Invalid(format!("stored setting {}: {e}", keys::CHAT_ADMIN)))?;
        let plan = InstallPlan { domain, chat_admin };
        let me = self.clone();
        self.tasks
            .spawn(async move { me.cluster_install(&plan).await });
        Ok(())
    }

    /// Runs the cluster's install, its steps shown on the progress page; ends at shutdown.
    async fn cluster_install(self: &Arc<Self>, plan: &InstallPlan) {
        let me = self.clone();
        let report = move |step, outcome: StepOutcome| {
            me.set_progress(|p| p.apply(step, outcome.clone()));
        };
        tokio::select! {
            () = self.cluster.install(plan, &report) => {}
            () = self.cancel.cancelled() => {}
        }
    }

    /// Stops background tasks and waits for them.
    pub async fn shutdown(&self) {
        self.cancel.cancel();
        self.tasks.close();
        self.tasks.wait().await;
    }

    /// Records an event of another part of the supervisor (the cluster) in the event log.
    pub fn record_event(&self, level: EventLevel, kind: &str, message: &str) {
        self.event(level, kind, None, message);
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

    // --- the proxy's routes for the web UI ---

    /// The `gantry` provider's routes: the admin entrypoint to the admin UI; the TLS app
    /// entrypoint to the app-side server (the wizard before setup, a placeholder after, below any
    /// route the cluster adds); plain HTTP redirected to HTTPS (ACME HTTP-01 is answered before
    /// routing).
    pub fn web_routes(
        &self,
        admin_ui: SocketAddr,
        app_ui: SocketAddr,
    ) -> Result<DynamicConfig, Error> {
        let mut routers = serde_json::Map::new();
        let mut middlewares = serde_json::Map::new();
        if self.opts.listen.contains_key(entrypoints::ADMIN) {
            routers.insert(
                "admin-ui".into(),
                serde_json::json!({
                    "entryPoints": [entrypoints::ADMIN], "rule": "PathPrefix(`/`)", "priority": 1,
                    "service": "admin-ui", "tls": {},
                }),
            );
        }
        if self.opts.listen.contains_key(entrypoints::HTTPS) {
            routers.insert(
                "app-fallback".into(),
                serde_json::json!({
                    "entryPoints": [entrypoints::HTTPS], "rule": "PathPrefix(`/`)", "priority": 1,
                    "service": "app-ui", "tls": {},
                }),
            );
        }
        if self.opts.listen.contains_key(entrypoints::HTTP) {
            let mut redirect = serde_json::json!({"scheme": "https", "permanent": false});
            if let Some(p) = self.port(entrypoints::HTTPS) {
                redirect["port"] = serde_json::Value::String(p.to_string());
            }
            middlewares.insert(
                "to-https".into(),
                serde_json::json!({ "redirectScheme": redirect }),
            );
            routers.insert(
                "http-to-https".into(),
                serde_json::json!({
                    "entryPoints": [entrypoints::HTTP], "rule": "PathPrefix(`/`)", "priority": 1,
                    "middlewares": ["to-https"], "service": "app-ui",
                }),
            );
        }
        let v = serde_json::json!({
            "http": {
                "routers": routers,
                "middlewares": middlewares,
                "services": {
                    "admin-ui": {"loadBalancer": {"servers": [{"url": format!("http://{admin_ui}")}]}},
                    "app-ui": {"loadBalancer": {"servers": [{"url": format!("http://{app_ui}")}]}},
                },
            }
        });
        serde_json::from_value(v).map_err(|e| Error::Invalid(format!("web UI routes: {e}")))
    }

    /// Routes the proxy to the web UI's two loopback servers.
    pub fn attach_web_ui(&self, admin_ui: SocketAddr, app_ui: SocketAddr) -> Result<(), Error> {
        let cfg = self.web_routes(admin_ui, app_ui)?;
        self.proxy
            .set_provider("gantry", cfg, None)
            .map_err(|e| Error::Invalid(format!("web UI routes refused by the proxy: {e}")))?;
        Ok(())
    }

    // --- routes to services outside the cluster ---

    /// The operator's routes to services outside the cluster.
    pub fn external_routes(&self) -> Result<Vec<ExternalRouteView>, Error> {
        Ok(self
            .store
            .external_routes()?
            .iter()
            .map(ExternalRouteView::from)
            .collect())
    }

    fn external_guard(&self) -> std::sync::MutexGuard<'_, ()> {
        self.external.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Hands the proxy the stored external routes (provider `external`): at start, so that a
    /// restart keeps them, and after every change.
    pub fn apply_external_routes(&self) -> Result<(), Error> {
        let _g = self.external_guard();
        self.apply_external_routes_locked()
    }

    fn apply_external_routes_locked(&self) -> Result<(), Error> {
        let routes = self.store.external_routes()?;
        let ep = self
            .opts
            .listen
            .contains_key(entrypoints::HTTPS)
            .then_some(entrypoints::HTTPS);
        if ep.is_none() && !routes.is_empty() {
            tracing::warn!("no TLS entrypoint: the external routes are not served");
        }
        let cfg = external::provider_config(&routes, ep)?;
        self.proxy
            .set_provider(external::PROVIDER, cfg, None)
            .map_err(|e| Error::Invalid(format!("external routes refused by the proxy: {e}")))?;
        Ok(())
    }

    /// Routes a host (and path prefix) to a service outside the cluster. A host that is not yet
    /// a domain becomes one: ACME-managed when the chat's certificate is, else self-signed.
    pub fn add_external_route(
        &self,
        input: &ExternalRouteInput,
    ) -> Result<ExternalRouteView, Error> {
        let chat = self.store.setting(keys::CHAT_DOMAIN)?;
        let v = external::validate(input, chat.as_deref())?;
        let rec = {
            let _g = self.external_guard();
            let Some(rec) = self.store.insert_external_route(
                &v.host,
                &v.path_prefix,
                &v.url,
                self.clock.now(),
            )?
            else {
                return Err(Error::Field {
                    field: "path_prefix",
                    message: format!(
                        "`{}` with the path prefix `{}` already has a route: remove it first",
                        v.host, v.path_prefix
                    ),
                });
            };
            if let Err(e) = self.apply_external_routes_locked() {
                // The proxy did not take it: the store must not keep it either.
                if let Err(e) = self.store.remove_external_route(rec.id) {
                    tracing::error!(error = %e, "cannot remove a route the proxy refused");
                }
                return Err(e);
            }
            rec
        };
        let cert = match self.route_certificate(&v.host) {
            Ok(text) => text,
            Err(e) => {
                self.event(
                    EventLevel::Warning,
                    "route.certificate_failed",
                    Some(&v.host),
                    &format!("no certificate for the route's host: {e}"),
                );
                "no certificate (see the events)"
            }
        };
        self.event(
            EventLevel::Info,
            "route.added",
            Some(&v.host),
            &format!(
                "route added: {}{} -> {} ({cert})",
                v.host, v.path_prefix, v.url
            ),
        );
        Ok(ExternalRouteView::from(&rec))
    }

    /// Makes sure the proxy has (or is getting) a certificate for a route's host.
    fn route_certificate(&self, host: &str) -> Result<&'static str, Error> {
        if self.store.domain(host)?.is_some() {
            return Ok("the domain's certificate");
        }
        let acme = self
            .store
            .setting(keys::CERT_MODE)?
            .and_then(|m| CertMode::parse(&m))
            .is_some_and(CertMode::is_acme);
        let manager = self.certs();
        if acme {
            manager.add_domain(host, &[])?;
            self.event(
                EventLevel::Info,
                "domain.added",
                Some(host),
                "domain added for an external route; ordering its certificate",
            );
            manager.wake();
            Ok("a certificate is being ordered")
        } else {
            manager.self_signed_domain(host)?;
            self.refresh_trust();
            Ok("self-signed certificate")
        }
    }

    /// Removes an external route (its host stays a domain, with its certificate).
    pub fn remove_external_route(&self, id: i64) -> Result<(), Error> {
        let _g = self.external_guard();
        let rec = self
            .store
            .remove_external_route(id)?
            .ok_or(Error::UnknownRoute(id))?;
        self.apply_external_routes_locked()?;
        self.event(
            EventLevel::Info,
            "route.removed",
            Some(&rec.host),
            &format!(
                "route removed: {}{} -> {}",
                rec.host, rec.path_prefix, rec.target_url
            ),
        );
        Ok(())
    }

    // --- setup ---

    pub fn setup_pending(&self) -> bool {
        self.setup_pending.load(Ordering::Acquire)
    }

    /// The setup token for the console while setup is pending (see [`Auth::ensure_setup_token`]).
    pub fn ensure_setup_token(&self, previous: Option<&str>) -> Result<Option<Secret>, Error> {
        self.auth.ensure_setup_token(previous)
    }

    /// Wizard step 1: the token opens a setup session.
    pub fn setup_begin(&self, token: &str, ip: IpAddr) -> Result<NewSession, Error> {
        self.auth.begin_setup(token, ip)
    }

    fn setup_session<'a>(&self, s: &'a SessionRecord) -> Result<&'a SessionRecord, Error> {
        if s.kind != SessionKind::Setup || !self.setup_pending() {
            return Err(AuthError::NotSignedIn.into());
        }
        Ok(s)
    }

    /// The answers of a setup session.
    pub fn setup_draft(&self, s: &SessionRecord) -> Result<SetupDraft, Error> {
        let s = self.setup_session(s)?;
        Ok(SetupDraft::from_json(s.data.as_deref()))
    }

    /// The answers as the forms show them again.
    pub fn setup_draft_view(&self, s: &SessionRecord) -> Result<DraftView, Error> {
        let d = self.setup_draft(s)?;
        Ok(DraftView {
            admin_username: d.admin.as_ref().map(|a| a.username.clone()),
            domain: d.chat.as_ref().map(|c| c.domain.clone()),
            cert_mode: d.chat.as_ref().map(|c| c.cert_mode.as_str()),
            email: d.chat.as_ref().and_then(|c| c.email.clone()),
            chat_admin_name: d.rocketchat.as_ref().map(|r| r.name.clone()),
            chat_admin_username: d.rocketchat.as_ref().map(|r| r.username.clone()),
            chat_admin_email: d.rocketchat.as_ref().map(|r| r.email.clone()),
        })
    }

    fn save_draft(&self, s: &SessionRecord, d: &SetupDraft) -> Result<(), Error> {
        self.auth.set_session_data(s, &d.to_json())
    }

    /// Wizard step 2.
    pub fn setup_admin(&self, s: &SessionRecord, input: &AdminInput) -> Result<(), Error> {
        let mut d = self.setup_draft(s)?;
        d.admin = Some(setup::validate_admin(input)?);
        self.save_draft(s, &d)
    }

    /// Wizard step 3.
    pub fn setup_chat(&self, s: &SessionRecord, input: &ChatInput) -> Result<(), Error> {
        let mut d = self.setup_draft(s)?;
        d.chat = Some(setup::validate_chat(input, self.clock.now())?);
        self.save_draft(s, &d)
    }

    /// Wizard step 4.
    pub fn setup_chat_admin(&self, s: &SessionRecord, input: &ChatAdminInput) -> Result<(), Error> {
        let mut d = self.setup_draft(s)?;
        d.rocketchat = Some(setup::validate_chat_admin(input)?);
        self.save_draft(s, &d)
    }

    /// The ACME directory set by `--acme-directory`, if any (it replaces both Let's Encrypt
    /// directories).
    pub fn acme_directory_override(&self) -> Option<String> {
        self.opts.acme_directory.clone()
    }

    /// The ACME directory a mode would use, for the summary.
    fn directory_for(&self, mode: CertMode) -> Option<String> {
        if !mode.is_acme() {
            return None;
        }
        Some(match &self.opts.acme_directory {
            Some(d) => format!("{d} (set by --acme-directory)"),
            None if mode == CertMode::LetsencryptStaging => certs::LETS_ENCRYPT_STAGING.into(),
            None => certs::LETS_ENCRYPT.into(),
        })
    }

    /// Wizard step 5: what will be done. `Err(Field{field: step})` names a missing step.
    pub fn setup_summary(&self, s: &SessionRecord) -> Result<SetupSummary, Error> {
        let d = self.setup_draft(s)?;
        self.summary_of(&d)
    }

    fn summary_of(&self, d: &SetupDraft) -> Result<SetupSummary, Error> {
        let (Some(admin), Some(chat), Some(rc)) = (&d.admin, &d.chat, &d.rocketchat) else {
            return Err(Error::Field {
                field: d.missing_step().unwrap_or("admin"),
                message: "this step is not done yet".into(),
            });
        };
        Ok(SetupSummary {
            admin_username: admin.username.clone(),
            domain: chat.domain.clone(),
            cert_mode: chat.cert_mode.as_str(),
            cert_mode_label: chat.cert_mode.label(),
            email: chat.email.clone(),
            acme_directory: self.directory_for(chat.cert_mode),
            chat_admin_name: rc.name.clone(),
            chat_admin_username: rc.username.clone(),
            chat_admin_email: rc.email.clone(),
            cluster: self.cluster.status().message,
        })
    }

    /// Wizard step 6: completes the setup from a setup session and signs the administrator in
    /// (a new session id). The install runs in the background: see [`Appliance::install_progress`].
    pub fn setup_finish(self: &Arc<Self>, s: &SessionRecord) -> Result<NewSession, Error> {
        let d = self.setup_draft(s)?;
        let user = self.finish_setup(&d)?;
        self.auth.session_for(&user)
    }

    /// The whole setup in one call (the API), with the token instead of a setup session.
    pub fn setup_all(
        self: &Arc<Self>,
        req: &SetupRequest,
        ip: IpAddr,
    ) -> Result<UserRecord, Error> {
        self.auth.check_setup_token(req.token.expose(), ip)?;
        let draft = SetupDraft {
            admin: Some(setup::validate_admin(&req.admin)?),
            chat: Some(setup::validate_chat(&req.chat, self.clock.now())?),
            rocketchat: Some(setup::validate_chat_admin(&req.rocketchat)?),
        };
        self.finish_setup(&draft)
    }

    fn finish_setup(self: &Arc<Self>, d: &SetupDraft) -> Result<UserRecord, Error> {
        if !self.setup_pending() {
            return Err(AuthError::SetupDone.into());
        }
        self.summary_of(d)?;
        let (Some(admin), Some(chat), Some(rc)) = (&d.admin, &d.chat, &d.rocketchat) else {
            return Err(Error::Invalid("setup is incomplete".into()));
        };
        let rc_json = serde_json::to_string(rc)
            .map_err(|e| Error::Invalid(format!("cannot serialise the chat admin: {e}")))?;
        let mut settings: Vec<(&str, String)> = vec![
            (keys::CHAT_DOMAIN, chat.domain.clone()),
            (keys::CERT_MODE, chat.cert_mode.as_str().to_owned()),
            (keys::CHAT_ADMIN, rc_json),
        ];
        if let Some(e) = &chat.email {
            settings.push((keys::ACME_EMAIL, e.clone()));
        }
        if chat.cert_mode.is_acme() {
            settings.push((keys::ACME_DIRECTORY, chat.cert_mode.as_str().to_owned()));
        }
        let mut progress = InstallProgress {
            started: true,
            ..InstallProgress::default()
        };
        progress.set("certificate", StepState::Running, "starting");
        settings.push((
            keys::INSTALL_PROGRESS,
            serde_json::to_string(&progress).unwrap_or_default(),
        ));
        let user = self.store.complete_setup(
            &SetupCompletion {
                username: &admin.username,
                password_hash: &admin.password_hash,
                settings: &settings,
            },
            self.clock.now(),
        )?;
        self.setup_pending.store(false, Ordering::Release);
        for f in &self.opts.setup_token_files {
            match std::fs::remove_file(f) {
                Ok(()) => {
                    tracing::info!(path = %f.display(), "setup complete: setup token file removed")
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    tracing::warn!(path = %f.display(), error = %e, "cannot remove the setup token file")
                }
            }
        }
        self.progress.send_replace(progress);
        self.event(
            EventLevel::Info,
            "setup.completed",
            Some(&chat.domain),
            &format!(
                "setup completed: administrator `{}`, chat domain {}, certificate: {}",
                admin.username,
                chat.domain,
                chat.cert_mode.label()
            ),
        );
        let plan = InstallPlan {
            domain: chat.domain.clone(),
            chat_admin: rc.clone(),
        };
        let me = self.clone();
        let chat = chat.clone();
        self.tasks
            .spawn(async move { me.install(chat, plan).await });
        Ok(user)
    }

    fn set_progress(&self, f: impl FnOnce(&mut InstallProgress)) {
        self.progress.send_modify(f);
        let json = serde_json::to_string(&*self.progress.borrow()).unwrap_or_default();
        if let Err(e) = self
            .store
            .set_setting(keys::INSTALL_PROGRESS, &json, self.clock.now())
        {
            tracing::warn!(error = %e, "cannot store the install progress");
        }
    }

    async fn install(self: Arc<Self>, chat: ChatDraft, plan: InstallPlan) {
        self.set_progress(|p| {
            p.set(
                "certificate",
                StepState::Running,
                format!("getting a certificate for {}", chat.domain),
            );
        });
        let cert = self.chat_certificate(&chat).await;
        // The renewal loop restarts with the ACME settings setup chose.
        if let Err(e) = self.start_renewals() {
            tracing::error!(error = %e, "cannot start certificate renewals");
        }
        self.refresh_trust();
        match cert {
            Ok(rec) => self.set_progress(|p| {
                let kind = match chat.cert_mode {
                    CertMode::SelfSigned => "self-signed",
                    CertMode::Upload => "uploaded",
                    CertMode::Letsencrypt | CertMode::LetsencryptStaging => "ACME",
                };
                p.set(
                    "certificate",
                    StepState::Done,
                    format!(
                        "{kind} certificate for {} from {}, valid until {}",
                        rec.names.join(", "),
                        rec.issuer,
                        certs_fmt_time(rec.not_after)
                    ),
                );
            }),
            Err(e) => self.set_progress(|p| {
                p.set(
                    "certificate",
                    StepState::Failed,
                    format!("{e} (retry from the Certificates page)"),
                );
            }),
        }
        self.cluster_install(&plan).await;
        self.event(
            EventLevel::Info,
            "setup.install_finished",
            Some(&plan.domain),
            "install finished",
        );
    }

    async fn chat_certificate(&self, chat: &ChatDraft) -> Result<CertificateRecord, Error> {
        let manager = self.build_cert_manager()?;
        match chat.cert_mode {
            CertMode::Letsencrypt | CertMode::LetsencryptStaging => {
                manager.add_domain(&chat.domain, &[])?;
                manager.issue(&chat.domain).await
            }
            CertMode::SelfSigned => manager.self_signed_domain(&chat.domain),
            CertMode::Upload => match (&chat.chain_pem, &chat.key_pem) {
                (Some(c), Some(k)) => manager.import(&chat.domain, c, k),
                _ => Err(Error::Invalid("no certificate was uploaded".into())),
            },
        }
    }

    /// The install's progress; `changed()` fires on every step.
    pub fn install_progress(&self) -> watch::Receiver<InstallProgress> {
        self.progress.subscribe()
    }

    // --- dashboard, domains, certificates, routes, events ---

    fn cert_view(&self, c: &CertificateRecord, now: i64) -> CertView {
        let trusted = c
            .domain
            .as_ref()
            .is_some_and(|d| self.trusted.load().contains(d));
        CertView {
            id: c.id,
            domain: c.domain.clone(),
            names: c.names.clone(),
            issuer: c.issuer.clone(),
            source: c.source.as_str(),
            serial: c.serial.clone(),
            not_before: c.not_before,
            not_after: c.not_after,
            days_left: days_left(c.not_after, now),
            expired: now >= c.not_after,
            renewal_due: certs::renewal_reason(c, now),
            // "Renew" orders from the ACME CA: also how a self-signed domain switches over.
            can_renew: c.domain.is_some() && c.source != CertSource::Uploaded,
            trusted,
        }
    }

    /// Every current certificate (the self-signed bootstrap one included).
    pub fn certificates(&self) -> Result<Vec<CertView>, Error> {
        let now = self.clock.now();
        Ok(self
            .store
            .current_certificates()?
            .iter()
            .map(|c| self.cert_view(c, now))
            .collect())
    }

    pub fn domains(&self) -> Result<Vec<DomainView>, Error> {
        let now = self.clock.now();
        let chat = self.store.setting(keys::CHAT_DOMAIN)?;
        let mut out = Vec::new();
        for s in certs::status(&self.store, now)? {
            let certificate = s.certificate.as_ref().map(|c| self.cert_view(c, now));
            let (status, text, err, retry) = match (&s.last_attempt, &s.certificate) {
                (Some(a), _) if a.outcome == AttemptOutcome::Running => (
                    "issuing",
                    format!(
                        "ordering a certificate ({})",
                        a.challenge.map_or("", |c| c.as_str())
                    ),
                    None,
                    None,
                ),
                (_, Some(c)) if c.source == CertSource::Uploaded => (
                    "uploaded",
                    format!(
                        "uploaded certificate, valid for {} more days",
                        days_left(c.not_after, now)
                    ),
                    None,
                    None,
                ),
                (None, Some(c)) if c.source == CertSource::SelfSigned => (
                    "self-signed",
                    format!(
                        "self-signed certificate (browsers warn), valid for {} more days; \
                         renew to order one from the ACME CA",
                        days_left(c.not_after, now)
                    ),
                    None,
                    None,
                ),
                (Some(a), cert)
                    if matches!(
                        a.outcome,
                        AttemptOutcome::Failed | AttemptOutcome::Throttled
                    ) =>
                {
                    let st = if a.outcome == AttemptOutcome::Throttled {
                        "throttled"
                    } else {
                        "failed"
                    };
                    let text = match cert {
                        Some(_) => {
                            "the last renewal failed; the current certificate is still served"
                                .to_owned()
                        }
                        None => "no certificate: the last attempt failed".to_owned(),
                    };
                    (st, text, a.error.clone(), a.retry_after)
                }
                (_, Some(c)) => (
                    "valid",
                    format!("valid for {} more days", days_left(c.not_after, now)),
                    None,
                    None,
                ),
                (_, None) => (
                    "waiting",
                    "waiting for the first ACME order".to_owned(),
                    None,
                    None,
                ),
            };
            out.push(DomainView {
                is_chat: chat.as_deref() == Some(s.domain.name.as_str()),
                name: s.domain.name.clone(),
                extra_names: s.domain.extra_names.clone(),
                status,
                status_text: text,
                last_error: err,
                retry_after: retry,
                certificate,
            });
        }
        Ok(out)
    }

    /// Adds a domain and starts ACME issuance in the background.
    pub fn add_domain(&self, name: &str) -> Result<DomainView, Error> {
        let name = normalize_domain(name).map_err(|e| Error::Field {
            field: "domain",
            message: e.to_string(),
        })?;
        if self.store.domain(&name)?.is_some() {
            return Err(Error::Field {
                field: "domain",
                message: format!("`{name}` is already configured"),
            });
        }
        let manager = self.certs();
        manager.add_domain(&name, &[])?;
        self.event(
            EventLevel::Info,
            "domain.added",
            Some(&name),
            "domain added; ordering its certificate",
        );
        manager.wake();
        self.domains()?
            .into_iter()
            .find(|d| d.name == name)
            .ok_or(Error::UnknownDomain(name))
    }

    /// Removes a domain and its certificates (not the chat's own domain).
    pub fn remove_domain(&self, name: &str) -> Result<(), Error> {
        let name = normalize_domain(name)?;
        if self.store.setting(keys::CHAT_DOMAIN)?.as_deref() == Some(name.as_str()) {
            return Err(Error::Invalid(format!(
                "`{name}` is the chat's domain: it cannot be removed"
            )));
        }
        if !self.store.remove_domain(&name)? {
            return Err(Error::UnknownDomain(name));
        }
        self.certs().install()?;
        self.refresh_trust();
        self.event(
            EventLevel::Info,
            "domain.removed",
            Some(&name),
            "domain removed",
        );
        Ok(())
    }

    /// Orders a new certificate for an ACME-managed domain now, in the background.
    pub fn renew(self: &Arc<Self>, domain: &str) -> Result<(), Error> {
        let name = normalize_domain(domain)?;
        let d = self
            .store
            .domain(&name)?
            .ok_or_else(|| Error::UnknownDomain(name.clone()))?;
        if let Some(c) = self.store.current_certificate(d.id)?
            && c.source == CertSource::Uploaded
        {
            return Err(Error::Invalid(format!(
                "the certificate of `{name}` was uploaded: upload a new one to replace it"
            )));
        }
        self.event(
            EventLevel::Info,
            "certificate.renew_requested",
            Some(&name),
            "renewal requested",
        );
        let manager = self.certs();
        let me = self.clone();
        self.tasks.spawn(async move {
            if let Err(e) = manager.issue(&name).await {
                tracing::warn!(domain = %name, error = %e, "renewal failed");
            }
            me.refresh_trust();
        });
        Ok(())
    }

    /// Imports an operator's certificate (validated; nothing stored on error).
    pub fn upload_certificate(
        &self,
        domain: &str,
        chain_pem: &str,
        key_pem: &str,
    ) -> Result<CertView, Error> {
        let name = normalize_domain(domain).map_err(|e| Error::Field {
            field: "domain",
            message: e.to_string(),
        })?;
        if chain_pem.trim().is_empty() {
            return Err(Error::Field {
                field: "chain_pem",
                message: "choose or paste the certificate chain (PEM)".into(),
            });
        }
        if key_pem.trim().is_empty() {
            return Err(Error::Field {
                field: "key_pem",
                message: "choose or paste the private key (PEM)".into(),
            });
        }
        let rec = self
            .certs()
            .import(&name, chain_pem, key_pem)
            .map_err(|e| match e {
                Error::Import(i) => Error::Field {
                    field: "chain_pem",
                    message: format!("certificate rejected: {i}"),
                },
                other => other,
            })?;
        self.refresh_trust();
        Ok(self.cert_view(&rec, self.clock.now()))
    }

    /// The proxy's routers, services and entrypoints.
    pub fn routes(&self) -> RoutesView {
        let snap = self.proxy.snapshot.load_full();
        let routers = snap
            .routers
            .iter()
            .map(|(name, r)| RouterView {
                name: name.clone(),
                provider: name.rsplit_once('@').map_or("", |(_, p)| p).to_owned(),
                entrypoints: snap
                    .router_entrypoints
                    .get(name)
                    .cloned()
                    .unwrap_or_default(),
                rule: r.rule_text.clone(),
                priority: r.priority,
                service: r.service.name.to_string(),
                middlewares: r.middlewares.iter().map(|m| m.name.to_string()).collect(),
                tls: r.tls,
            })
            .collect();
        let services = snap
            .services
            .iter()
            .map(|(name, s)| ServiceView {
                name: name.clone(),
                provider: name.rsplit_once('@').map_or("", |(_, p)| p).to_owned(),
                up: s.is_up(),
                servers: s
                    .as_load_balancer()
                    .map(|lb| {
                        lb.servers
                            .iter()
                            .map(|sv| ServerView {
                                url: sv.upstream.url.to_string(),
                                up: sv.state.available(),
                            })
                            .collect()
                    })
                    .unwrap_or_default(),
            })
            .collect();
        RoutesView {
            generation: snap.generation,
            entrypoints: self.entrypoints(),
            routers,
            services,
            middlewares: snap.middlewares.keys().cloned().collect(),
        }
    }

    fn totals(&self) -> BTreeMap<String, u64> {
        self.opts
            .listen
            .keys()
            .map(|n| {
                let t = self.proxy.metrics.entrypoint(n).map_or(0, |m| m.total());
                (n.clone(), t)
            })
            .collect()
    }

    fn sample_rates(&self) {
        let now = self.clock.now();
        let totals = self.totals();
        let mut s = self.samples.lock().unwrap_or_else(|p| p.into_inner());
        s.ring.push_back((now, totals));
        while s.ring.len() > 2 && s.ring.front().is_some_and(|(t, _)| now - t > 65) {
            s.ring.pop_front();
        }
    }

    fn entrypoints(&self) -> Vec<EntrypointView> {
        let now = self.clock.now();
        let totals = self.totals();
        let samples = self.samples.lock().unwrap_or_else(|p| p.into_inner());
        let oldest = samples.ring.iter().find(|(t, _)| now - t <= 65);
        self.opts
            .listen
            .iter()
            .map(|(name, addr)| {
                let total = totals.get(name).copied().unwrap_or(0);
                let rate = match oldest {
                    Some((t, old)) if now > *t => {
                        let d = total.saturating_sub(old.get(name).copied().unwrap_or(0));
                        d as f64 / (now - t) as f64
                    }
                    _ => 0.0,
                };
                EntrypointView {
                    name: name.clone(),
                    address: addr.to_string(),
                    requests: total,
                    rate: (rate * 100.0).round() / 100.0,
                    open_connections: self.proxy.metrics.connections(name).load(Ordering::Relaxed),
                }
            })
            .collect()
    }

    fn disk(&self) -> Option<DiskUse> {
        let dir = &self.opts.data_dir;
        let st = rustix::fs::statvfs(dir).ok()?;
        let mut budget = 100_000;
        Some(DiskUse {
            data_dir: dir.display().to_string(),
            used_bytes: dir_size(dir, &mut budget),
            fs_total_bytes: st.f_blocks.saturating_mul(st.f_frsize),
            fs_free_bytes: st.f_bavail.saturating_mul(st.f_frsize),
        })
    }

    pub fn dashboard(&self) -> Result<Dashboard, Error> {
        let snap = self.proxy.snapshot.load_full();
        let mut certificates = self.certificates()?;
        certificates.sort_by_key(|c| c.not_after);
        let warnings = self
            .certs()
            .warnings()?
            .into_iter()
            .map(|w| match w.domain {
                Some(d) => format!("{d}: {}", w.message),
                None => w.message,
            })
            .collect();
        Ok(Dashboard {
            version: env!("CARGO_PKG_VERSION"),
            chat_domain: self.store.setting(keys::CHAT_DOMAIN)?,
            generation: snap.generation,
            routers: snap.routers.len(),
            services: snap.services.len(),
            entrypoints: self.entrypoints(),
            certificates,
            warnings,
            disk: self.disk(),
            cluster: self.cluster.status(),
        })
    }

    pub fn events(&self, limit: u32) -> Result<Vec<EventView>, Error> {
        Ok(self
            .store
            .events(limit)?
            .into_iter()
            .map(|e| EventView {
                id: e.id,
                at: e.at,
                level: e.level.as_str(),
                kind: e.kind,
                subject: e.subject,
                message: e.message,
            })
            .collect())
    }

    // --- settings ---

    pub fn settings(&self, user: &UserRecord) -> Result<SettingsView, Error> {
        Ok(SettingsView {
            username: user.username.clone(),
            chat_domain: self.store.setting(keys::CHAT_DOMAIN)?,
            cert_mode: self.store.setting(keys::CERT_MODE)?,
            acme_email: self.store.setting(keys::ACME_EMAIL)?,
            acme_directory: self.directory()?.url().to_owned(),
            acme_directory_overridden: self.opts.acme_directory.is_some(),
        })
    }

    /// Sets the ACME contact address; the certificate manager restarts with it.
    pub fn set_acme_email(self: &Arc<Self>, email: &str) -> Result<(), Error> {
        let email = setup::validate_email(email, "email")?;
        self.store
            .set_setting(keys::ACME_EMAIL, &email, self.clock.now())?;
        self.event(
            EventLevel::Info,
            "settings.acme_email",
            None,
            &format!("ACME email set to {email}"),
        );
        self.start_renewals()
    }

    pub fn api_tokens(&self, user: &UserRecord) -> Result<Vec<ApiTokenView>, Error> {
        Ok(self
            .auth
            .api_tokens(user)?
            .into_iter()
            .map(|t| ApiTokenView {
                id: t.id,
                name: t.name,
                prefix: t.prefix,
                created_at: t.created_at,
                last_used_at: t.last_used_at,
            })
            .collect())
    }

    // --- HSTS ---

    /// Whether `host` (from the request) is served a certificate that browsers trust, so that
    /// HSTS may be sent.
    pub fn hsts_for(&self, host: &str) -> bool {
        let h = host.to_ascii_lowercase();
        let h = h.trim_end_matches('.');
        self.trusted.load().contains(h)
    }

    /// Recomputes which domains have a certificate trusted by the system's roots.
    pub fn refresh_trust(&self) {
        let now = self.clock.now();
        let mut set = HashSet::new();
        if let Ok(certs) = self.store.current_certificates() {
            for c in certs {
                if let Some(d) = &c.domain
                    && trust::verifies(&c.chain_pem, d, now)
                {
                    set.insert(d.clone());
                }
            }
        }
        self.trusted.store(Arc::new(set));
    }
}

fn restore_progress(json: &str) -> InstallProgress {
    #[derive(serde::Deserialize)]
    struct Step {
        key: String,
        state: String,
        detail: String,
    }
    #[derive(serde::Deserialize)]
    struct Stored {
        started: bool,
        steps: Vec<Step>,
    }
    let mut p = InstallProgress::default();
    if let Ok(s) = serde_json::from_str::<Stored>(json) {
        p.started = s.started;
        for st in s.steps {
            let state = match st.state.as_str() {
                "done" => StepState::Done,
                "skipped" => StepState::Skipped,
                "failed" => StepState::Failed,
                // Interrupted by a restart.
                "running" | "pending" => StepState::Failed,
                _ => continue,
            };
            let detail = if matches!(st.state.as_str(), "running" | "pending") {
                "interrupted: gantry restarted during the install".to_owned()
            } else {
                st.detail
            };
            p.set(&st.key, state, detail);
        }
    }
    p
}

fn certs_fmt_time(unix: i64) -> String {
    match time::OffsetDateTime::from_unix_timestamp(unix) {
        Ok(t) => format!("{:04}-{:02}-{:02}", t.year(), u8::from(t.month()), t.day()),
        Err(_) => format!("@{unix}"),
    }
}

mod trust {
    //! Does a chain verify against the system's roots (the browser's view, roughly)?

    use std::io::BufReader;
    use std::sync::{Arc, OnceLock};

    use rustls::client::WebPkiServerVerifier;
    use rustls::client::danger::ServerCertVerifier;
    use rustls::pki_types::{CertificateDer, ServerName, UnixTime};

    fn verifier() -> Option<Arc<WebPkiServerVerifier>> {
        static V: OnceLock<Option<Arc<WebPkiServerVerifier>>> = OnceLock::new();
        V.get_or_init(|| {
            let mut roots = rustls::RootCertStore::empty();
            for c in rustls_native_certs::load_native_certs().certs {
                let _ = roots.add(c);
            }
            if roots.is_empty() {
                return None;
            }
            WebPkiServerVerifier::builder_with_provider(
                Arc::new(roots),
                gantry_proxy::tls::provider(),
            )
            .build()
            .ok()
        })
        .clone()
    }

    pub(super) fn verifies(chain_pem: &str, name: &str, now: i64) -> bool {
        let Some(v) = verifier() else { return false };
        let Ok(chain) = rustls_pemfile::certs(&mut BufReader::new(chain_pem.as_bytes()))
            .collect::<Result<Vec<CertificateDer<'static>>, _>>()
        else {
            return false;
        };
        let Some((leaf, rest)) = chain.split_first() else {
            return false;
        };
        let Ok(server) = ServerName::try_from(name.to_owned()) else {
            return false;
        };
        let at = UnixTime::since_unix_epoch(std::time::Duration::from_secs(
            u64::try_from(now).unwrap_or(0),
        ));
        v.verify_server_cert(leaf, rest, &server, &[], at).is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_restored_after_restart_marks_interrupted_steps() {
        let mut p = InstallProgress {
            started: true,
            ..InstallProgress::default()
        };
        p.set("certificate", StepState::Done, "ok");
        p.set("cluster-started", StepState::Running, "");
        let r = restore_progress(&serde_json::to_string(&p).unwrap());
        assert_eq!(r.steps[0].state, StepState::Done);
        assert_eq!(r.steps[1].state, StepState::Failed);
        assert!(r.steps[1].detail.contains("interrupted"));
    }
}
