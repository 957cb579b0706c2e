//! TLS: certificates chosen by SNI (exact name, then wildcard, then the default certificate), TLS
//! options compiled into rustls configurations, the ACME TLS-ALPN-01 hook, and the client side used
//! towards `https://` upstreams.
//!
//! Certificates come from two places and both can change at runtime without a restart: the dynamic
//! configuration (`tls.certificates`, replaced on every reload) and the embedding program
//! ([`CertStore::set_managed`], used by the supervisor for ACME and uploaded certificates).
//! Managed certificates win over file ones for the same name.

use std::collections::HashMap;
use std::io::BufReader;
use std::sync::{Arc, RwLock};

use arc_swap::ArcSwap;
use rustls::crypto::ring::sign::any_supported_type;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

use crate::forward::TransportSettings;

/// A certificate with its key, ready to serve, and the names it covers.
#[derive(Debug, Clone)]
pub struct LoadedCert {
    pub key: Arc<CertifiedKey>,
    /// DNS names (lowercase; wildcards as `*.example.com`) from the certificate's SAN (or CN).
    pub names: Vec<String>,
    /// Unix seconds.
    pub not_after: i64,
    pub subject: String,
}

/// Errors loading a certificate or key.
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    #[error("cannot read {what} `{path}`: {source}")]
    Read {
        what: &'static str,
        path: String,
        source: std::io::Error,
    },
    #[error("{0}")]
    Invalid(String),
}

/// Reads PEM from a path, or takes it as-is when the value is PEM content (Traefik allows both).
pub fn pem_source(value: &str, what: &'static str) -> Result<Vec<u8>, CertError> {
    if value.trim_start().starts_with("-----BEGIN") {
        Ok(value.as_bytes().to_vec())
    } else {
        std::fs::read(value).map_err(|source| CertError::Read {
            what,
            path: value.to_owned(),
            source,
        })
    }
}

/// Parses a PEM chain and key into a servable certificate; checks that the key matches.
pub fn load_pem(chain_pem: &[u8], key_pem: &[u8]) -> Result<LoadedCert, CertError> {
    let chain: Vec<CertificateDer<'static>> = rustls_pemfile::certs(&mut BufReader::new(chain_pem))
        .collect::<Result<_, _>>()
        .map_err(|e| CertError::Invalid(format!("certificate PEM does not parse: {e}")))?;
    if chain.is_empty() {
        return Err(CertError::Invalid(
            "no certificate found in the certificate PEM".into(),
        ));
    }
    let key: PrivateKeyDer<'static> = rustls_pemfile::private_key(&mut BufReader::new(key_pem))
        .map_err(|e| CertError::Invalid(format!("private key PEM does not parse: {e}")))?
        .ok_or_else(|| CertError::Invalid("no private key found in the key PEM".into()))?;
    let signing = any_supported_type(&key)
        .map_err(|e| CertError::Invalid(format!("unsupported private key: {e}")))?;
    let certified = CertifiedKey::new(chain, signing);
    certified.keys_match().map_err(|e| match e {
        rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch) => {
            CertError::Invalid("the private key does not match the certificate".into())
        }
        // webpki could not read the certificate (an unknown critical extension, for example).
        other => CertError::Invalid(format!(
            "the certificate cannot be checked against its key: {other}"
        )),
    })?;
    let (names, not_after, subject) = describe(&certified.cert[0])?;
    Ok(LoadedCert {
        key: Arc::new(certified),
        names,
        not_after,
        subject,
    })
}

fn describe(der: &CertificateDer<'_>) -> Result<(Vec<String>, i64, String), CertError> {
    use x509_parser::prelude::*;
    let (_, cert) = X509Certificate::from_der(der.as_ref())
        .map_err(|e| CertError::Invalid(format!("certificate does not parse: {e}")))?;
    let mut names = Vec::new();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for n in &san.value.general_names {
            match n {
                GeneralName::DNSName(d) => names.push(d.to_ascii_lowercase()),
                GeneralName::IPAddress(b) => {
                    if let Ok(a) = <[u8; 4]>::try_from(*b) {
                        names.push(std::net::Ipv4Addr::from(a).to_string());
                    } else if let Ok(a) = <[u8; 16]>::try_from(*b) {
                        names.push(std::net::Ipv6Addr::from(a).to_string());
                    }
                }
                _ => {}
            }
        }
    }
    if names.is_empty()
        && let Some(cn) = cert.subject().iter_common_name().next()
        && let Ok(cn) = cn.as_str()
    {
        names.push(cn.to_ascii_lowercase());
    }
    Ok((
        names,
        cert.validity().not_after.timestamp(),
        cert.subject().to_string(),
    ))
}

/// Certificates indexed for SNI lookup.
#[derive(Debug, Default)]
pub struct CertIndex {
    exact: HashMap<String, Arc<CertifiedKey>>,
    /// `example.com` for a `*.example.com` certificate.
    wildcard: HashMap<String, Arc<CertifiedKey>>,
    pub certs: Vec<LoadedCert>,
}

impl CertIndex {
    pub fn new(certs: Vec<LoadedCert>) -> CertIndex {
        let mut idx = CertIndex::default();
        for c in &certs {
            for n in &c.names {
                if let Some(suffix) = n.strip_prefix("*.") {
                    idx.wildcard
                        .entry(suffix.to_owned())
                        .or_insert(c.key.clone());
                } else {
                    idx.exact.entry(n.clone()).or_insert(c.key.clone());
                }
            }
        }
        idx.certs = certs;
        idx
    }

    fn exact(&self, sni: &str) -> Option<&Arc<CertifiedKey>> {
        self.exact.get(sni)
    }

    fn wildcard(&self, sni: &str) -> Option<&Arc<CertifiedKey>> {
        let (_, parent) = sni.split_once('.')?;
        self.wildcard.get(parent)
    }
}

/// The proxy's certificate store and SNI resolver.
#[derive(Debug)]
pub struct CertStore {
    /// From the dynamic configuration (`tls.certificates`).
    file: ArcSwap<CertIndex>,
    /// Installed by the embedding program (ACME, uploads).
    managed: ArcSwap<CertIndex>,
    /// `tls.stores.default.defaultCertificate`, else a managed default, else a generated one.
    default_file: ArcSwap<Option<LoadedCert>>,
    default_managed: ArcSwap<Option<LoadedCert>>,
    fallback: Arc<CertifiedKey>,
    /// TLS-ALPN-01 challenge certificates by (lowercase) domain.
    acme_alpn: RwLock<HashMap<String, Arc<CertifiedKey>>>,
}

impl CertStore {
    pub fn new() -> Result<Arc<CertStore>, CertError> {
        Ok(Arc::new(CertStore {
            file: ArcSwap::from_pointee(CertIndex::default()),
            managed: ArcSwap::from_pointee(CertIndex::default()),
            default_file: ArcSwap::from_pointee(None),
            default_managed: ArcSwap::from_pointee(None),
            fallback: generate_fallback()?,
            acme_alpn: RwLock::new(HashMap::new()),
        }))
    }

    /// Replaces the certificates that came from the dynamic configuration.
    pub fn set_file_certs(&self, certs: Vec<LoadedCert>, default: Option<LoadedCert>) {
        self.file.store(Arc::new(CertIndex::new(certs)));
        self.default_file.store(Arc::new(default));
    }

    /// Replaces the certificates the embedding program manages (ACME, uploads), atomically.
    /// `default` is served to clients whose SNI matches nothing (unless the file config sets one).
    pub fn set_managed(&self, certs: Vec<LoadedCert>, default: Option<LoadedCert>) {
        self.managed.store(Arc::new(CertIndex::new(certs)));
        self.default_managed.store(Arc::new(default));
    }

    /// Installs the TLS-ALPN-01 challenge certificate for `domain` (RFC 8737).
    pub fn set_acme_alpn(&self, domain: &str, cert: Arc<CertifiedKey>) {
        if let Ok(mut m) = self.acme_alpn.write() {
            m.insert(domain.to_ascii_lowercase(), cert);
        }
    }

    pub fn clear_acme_alpn(&self, domain: &str) {
        if let Ok(mut m) = self.acme_alpn.write() {
            m.remove(&domain.to_ascii_lowercase());
        }
    }

    pub(crate) fn acme_alpn_cert(&self, sni: &str) -> Option<Arc<CertifiedKey>> {
        self.acme_alpn
            .read()
            .ok()?
            .get(&sni.to_ascii_lowercase())
            .cloned()
    }

    /// Every certificate currently loaded (for metrics and the API).
    pub fn all(&self) -> Vec<LoadedCert> {
        let mut v: Vec<LoadedCert> = self.managed.load().certs.clone();
        v.extend(self.file.load().certs.iter().cloned());
        v.extend(self.default_file.load().as_ref().as_ref().cloned());
        v.extend(self.default_managed.load().as_ref().as_ref().cloned());
        v
    }

    /// Does any loaded certificate (other than the default) cover `sni`?
    pub fn has_cert_for(&self, sni: &str) -> bool {
        self.lookup_named(sni).is_some()
    }

    fn lookup_named(&self, sni: &str) -> Option<Arc<CertifiedKey>> {
        let sni = sni.trim_end_matches('.');
        let lower;
        let sni = if sni.bytes().any(|b| b.is_ascii_uppercase()) {
            lower = sni.to_ascii_lowercase();
            lower.as_str()
        } else {
            sni
        };
        let managed = self.managed.load();
        let file = self.file.load();
        managed
            .exact(sni)
            .or_else(|| file.exact(sni))
            .or_else(|| managed.wildcard(sni))
            .or_else(|| file.wildcard(sni))
            .cloned()
    }

    /// The certificate for a connection: by SNI, else the default.
    pub fn resolve_sni(&self, sni: Option<&str>) -> Arc<CertifiedKey> {
        if let Some(k) = sni.and_then(|s| self.lookup_named(s)) {
            return k;
        }
        if let Some(d) = self.default_file.load().as_ref() {
            return d.key.clone();
        }
        if let Some(d) = self.default_managed.load().as_ref() {
            return d.key.clone();
        }
        self.fallback.clone()
    }
}

/// A self-signed certificate served when nothing else is configured (like Traefik's default).
fn generate_fallback() -> Result<Arc<CertifiedKey>, CertError> {
    let ck =
        rcgen::generate_simple_self_signed(vec!["gantry.invalid".to_owned()]).map_err(|e| {
            CertError::Invalid(format!("cannot generate the fallback certificate: {e}"))
        })?;
    let loaded = load_pem(
        ck.cert.pem().as_bytes(),
        ck.signing_key.serialize_pem().as_bytes(),
    )?;
    Ok(loaded.key)
}

/// rustls resolver over the store, used by every TLS entrypoint.
#[derive(Debug)]
pub struct Resolver {
    pub store: Arc<CertStore>,
    pub sni_strict: bool,
}

impl ResolvesServerCert for Resolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let sni = hello.server_name();
        if self.sni_strict {
            return sni.and_then(|s| self.store.lookup_named(s));
        }
        Some(self.store.resolve_sni(sni))
    }
}

/// Resolver for TLS-ALPN-01 validation handshakes.
#[derive(Debug)]
struct AcmeResolver(Arc<CertifiedKey>);

impl ResolvesServerCert for AcmeResolver {
    fn resolve(&self, _: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.clone())
    }
}

/// The ALPN protocol of TLS-ALPN-01 (RFC 8737).
pub const ACME_TLS_ALPN: &[u8] = b"acme-tls/1";

/// A server config that presents the challenge certificate and negotiates only `acme-tls/1`.
pub fn acme_server_config(
    cert: Arc<CertifiedKey>,
) -> Result<Arc<rustls::ServerConfig>, rustls::Error> {
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(AcmeResolver(cert)));
    cfg.alpn_protocols = vec![ACME_TLS_ALPN.to_vec()];
    Ok(Arc::new(cfg))
}

pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(crypto_provider())
}

/// The provider of every rustls configuration here: ring's, with [`ThreadRandom`] for the random
/// values rustls draws itself and [`AwsLcX25519`] (ring's X25519 was almost half a full
/// handshake's CPU; see proxy/Cargo.toml). The groups keep ring's order of preference.
fn crypto_provider() -> rustls::crypto::CryptoProvider {
    let mut provider = rustls::crypto::ring::default_provider();
    provider.secure_random = &ThreadRandom;
    for group in &mut provider.kx_groups {
        if group.name() == rustls::NamedGroup::X25519 {
            *group = &AwsLcX25519;
        }
    }
    provider
}

/// Ephemeral X25519 (RFC 7748) by aws-lc-rs, the same construction as rustls's own aws-lc-rs
/// group: a fresh key per handshake, the peer's key share checked to be 32 bytes, the shared
/// secret refused by aws-lc when it is all zeros (a low-order point).
#[derive(Debug)]
struct AwsLcX25519;

impl rustls::crypto::SupportedKxGroup for AwsLcX25519 {
    fn start(&self) -> Result<Box<dyn rustls::crypto::ActiveKeyExchange>, rustls::Error> {
        use aws_lc_rs::agreement;
        let rng = aws_lc_rs::rand::SystemRandom::new();
        let priv_key = agreement::EphemeralPrivateKey::generate(&agreement::X25519, &rng)
            .map_err(|_| rustls::crypto::GetRandomFailed)?;
        let pub_key = priv_key
            .compute_public_key()
            .map_err(|_| rustls::crypto::GetRandomFailed)?
            .as_ref()
            .to_vec();
        Ok(Box::new(AwsLcX25519Exchange { priv_key, pub_key }))
    }

    fn name(&self) -> rustls::NamedGroup {
        rustls::NamedGroup::X25519
    }
}

struct AwsLcX25519Exchange {
    priv_key: aws_lc_rs::agreement::EphemeralPrivateKey,
    pub_key: Vec<u8>,
}

impl rustls::crypto::ActiveKeyExchange for AwsLcX25519Exchange {
    fn complete(
        self: Box<Self>,
        peer: &[u8],
    ) -> Result<rustls::crypto::SharedSecret, rustls::Error> {
        use aws_lc_rs::agreement;
        let invalid = || rustls::Error::from(rustls::PeerMisbehaved::InvalidKeyShare);
        if peer.len() != 32 {
            return Err(invalid());
        }
        let peer = agreement::UnparsedPublicKey::new(&agreement::X25519, peer);
        agreement::agree_ephemeral(self.priv_key, peer, invalid(), |secret| {
            Ok(rustls::crypto::SharedSecret::from(secret))
        })
    }

    fn pub_key(&self) -> &[u8] {
        &self.pub_key
    }

    fn group(&self) -> rustls::NamedGroup {
        rustls::NamedGroup::X25519
    }
}

/// The random values rustls draws itself (hello randoms, session IDs, TLS 1.3 ticket nonces
/// and age offsets) from `rand`'s thread-local CSPRNG (ChaCha12, seeded from the OS and reseeded
/// every 64 KiB) instead of ring's `SystemRandom`, which makes one `getrandom` system call per
/// value: 9 calls per full handshake, ~6 of them from this path (`strace`, BENCHMARKS.md).
/// ring still draws its ECDSA nonces from the OS itself, aws-lc-rs the X25519 keys of
/// [`AwsLcX25519`] from its own generator.
#[derive(Debug)]
struct ThreadRandom;

impl rustls::crypto::SecureRandom for ThreadRandom {
    fn fill(&self, buf: &mut [u8]) -> Result<(), rustls::crypto::GetRandomFailed> {
        use rand::RngCore;
        rand::rng().fill_bytes(buf);
        Ok(())
    }
}

/// Compiled `tls.options` entry.
#[derive(Debug, Clone)]
pub struct TlsOptions {
    pub min_tls13: bool,
    pub max_tls12: bool,
    pub alpn: Vec<Vec<u8>>,
    pub sni_strict: bool,
    pub cipher_suites: Vec<rustls::SupportedCipherSuite>,
}

impl Default for TlsOptions {
    fn default() -> Self {
        TlsOptions {
            min_tls13: false,
            max_tls12: false,
            alpn: vec![b"h2".to_vec(), b"http/1.1".to_vec()],
            sni_strict: false,
            cipher_suites: Vec::new(),
        }
    }
}

impl TlsOptions {
    pub fn compile(cfg: &crate::config::dynamic::TlsOptionsConfig) -> Result<TlsOptions, String> {
        let version = |v: &Option<String>, key: &str| -> Result<Option<u8>, String> {
            match v.as_deref() {
                None => Ok(None),
                Some("VersionTLS12") => Ok(Some(12)),
                Some("VersionTLS13") => Ok(Some(13)),
                Some(other @ ("VersionTLS10" | "VersionTLS11")) => Err(format!(
                    "{key}: `{other}` is insecure and not supported (TLS 1.2 is the minimum)"
                )),
                Some(other) => Err(format!(
                    "{key}: `{other}` is not a TLS version (VersionTLS12 or VersionTLS13)"
                )),
            }
        };
        let min = version(&cfg.min_version, "minVersion")?;
        let max = version(&cfg.max_version, "maxVersion")?;
        if let (Some(a), Some(b)) = (min, max)
            && a > b
        {
            return Err("minVersion is above maxVersion".into());
        }
        let all = provider().cipher_suites.clone();
        let mut suites = Vec::new();
        for name in &cfg.cipher_suites {
            let want = name.trim().to_ascii_uppercase();
            let found = all
                .iter()
                .find(|s| {
                    let ours = format!("{:?}", s.suite());
                    ours == want || ours.replace("TLS13_", "TLS_") == want
                })
                .ok_or_else(|| format!("cipherSuites: `{name}` is not a supported cipher suite"))?;
            suites.push(*found);
        }
        for c in &cfg.curve_preferences {
            if !matches!(
                c.as_str(),
                "CurveP256" | "CurveP384" | "X25519" | "secp256r1" | "secp384r1" | "x25519"
            ) {
                return Err(format!("curvePreferences: `{c}` is not supported"));
            }
        }
        let alpn = if cfg.alpn_protocols.is_empty() {
            TlsOptions::default().alpn
        } else {
            cfg.alpn_protocols
                .iter()
                .filter(|p| p.as_bytes() != ACME_TLS_ALPN)
                .map(|p| match p.as_str() {
                    "h2" | "http/1.1" => Ok(p.as_bytes().to_vec()),
                    other => Err(format!(
                        "alpnProtocols: `{other}` is not supported (h2, http/1.1)"
                    )),
                })
                .collect::<Result<_, _>>()?
        };
        Ok(TlsOptions {
            min_tls13: min == Some(13),
            max_tls12: max == Some(12),
            alpn,
            sni_strict: cfg.sni_strict,
            cipher_suites: suites,
        })
    }

    /// Builds the rustls server configuration for these options over `store`.
    pub fn server_config(
        &self,
        store: &Arc<CertStore>,
    ) -> Result<Arc<rustls::ServerConfig>, String> {
        let mut provider = crypto_provider();
        if !self.cipher_suites.is_empty() {
            // TLS 1.3 suites stay available unless listed: Go's crypto/tls (Traefik) ignores
            // cipherSuites for TLS 1.3 too.
            let mut suites = self.cipher_suites.clone();
            for s in &provider.cipher_suites {
                if s.version() == &rustls::version::TLS13 && !suites.contains(s) {
                    suites.push(*s);
                }
            }
            provider.cipher_suites = suites;
        }
        let versions: Vec<&'static rustls::SupportedProtocolVersion> =
            match (self.min_tls13, self.max_tls12) {
                (true, _) => vec![&rustls::version::TLS13],
                (false, true) => vec![&rustls::version::TLS12],
                _ => vec![&rustls::version::TLS13, &rustls::version::TLS12],
            };
        let mut cfg = rustls::ServerConfig::builder_with_provider(Arc::new(provider))
            .with_protocol_versions(&versions)
            .map_err(|e| format!("TLS options: {e}"))?
            .with_no_client_auth()
            .with_cert_resolver(Arc::new(Resolver {
                store: store.clone(),
                sni_strict: self.sni_strict,
            }));
        cfg.alpn_protocols = self.alpn.clone();
        cfg.session_storage = rustls::server::ServerSessionMemoryCache::new(8192);
        Ok(Arc::new(cfg))
    }
}

/// The client configuration for `https://` upstreams of a transport.
pub fn client_config(settings: &TransportSettings) -> Result<rustls::ClientConfig, String> {
    let builder = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS client: {e}"))?;
    let cfg = if settings.insecure_skip_verify {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(NoVerify(provider())))
            .with_no_client_auth()
    } else {
        let mut roots = rustls::RootCertStore::empty();
        let native = rustls_native_certs::load_native_certs();
        for c in native.certs {
            let _ = roots.add(c);
        }
        for pem in &settings.root_cas {
            let certs: Vec<CertificateDer<'static>> =
                rustls_pemfile::certs(&mut BufReader::new(&pem[..]))
                    .collect::<Result<_, _>>()
                    .map_err(|e| format!("rootCAs: a certificate does not parse: {e}"))?;
            if certs.is_empty() {
                return Err("rootCAs: no certificate found in a rootCAs entry".into());
            }
            for c in certs {
                roots
                    .add(c)
                    .map_err(|e| format!("rootCAs: certificate rejected: {e}"))?;
            }
        }
        builder.with_root_certificates(roots).with_no_client_auth()
    };
    Ok(cfg)
}

/// `insecureSkipVerify`: accept any upstream certificate (signatures are still checked).
#[derive(Debug)]
struct NoVerify(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for NoVerify {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &rustls::pki_types::ServerName<'_>,
        _: &[u8],
        _: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// HTTP-01 challenge responses, served on plain-HTTP entrypoints ahead of routing and redirects.
#[derive(Debug, Default)]
pub struct AcmeChallenges {
    tokens: RwLock<HashMap<String, String>>,
}

impl AcmeChallenges {
    /// Publishes `key_authorization` at `/.well-known/acme-challenge/{token}`.
    pub fn set(&self, token: &str, key_authorization: &str) {
        if let Ok(mut m) = self.tokens.write() {
            m.insert(token.to_owned(), key_authorization.to_owned());
        }
    }

    pub fn remove(&self, token: &str) {
        if let Ok(mut m) = self.tokens.write() {
            m.remove(token);
        }
    }

    pub fn get(&self, token: &str) -> Option<String> {
        self.tokens.read().ok()?.get(token).cloned()
    }
}
