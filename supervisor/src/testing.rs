//! Test support (feature `testing`): a real pebble ACME server with pebble-challtestsrv as its
//! DNS (every name resolves to 127.0.0.1), a proxy on loopback ports, and a verifying TLS client.
//!
//! Debian's `pebble` package ships both programs. Tests call [`Pebble::start`], which fails with
//! the `apt-get install` line when pebble is missing, or returns `None` when
//! `GANTRY_SKIP_PEBBLE=1` is set. Every process started here is killed when its guard drops.

use std::io::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use gantry_proxy::tls::CertStore;
use gantry_proxy::{Proxy, ProxyOptions};
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A child process killed (and reaped) on drop.
#[derive(Debug)]
pub struct ChildGuard {
    child: Child,
    name: &'static str,
    log: PathBuf,
}

impl ChildGuard {
    fn spawn(name: &'static str, cmd: &mut Command, log: PathBuf) -> Result<ChildGuard, String> {
        let out = std::fs::File::create(&log).map_err(|e| format!("{}: {e}", log.display()))?;
        let err = out.try_clone().map_err(|e| e.to_string())?;
        let child = cmd
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .map_err(|e| format!("cannot start {name}: {e}"))?;
        Ok(ChildGuard { child, name, log })
    }

    fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("----- {} log -----\n{}", self.name, self.log_text());
        }
    }
}

/// A free TCP port on 127.0.0.1 (bound and released; fine for tests).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or(0)
}

fn free_udp_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .map(|a| a.port())
        .unwrap_or(0)
}

/// Is the binary on the PATH (or an absolute path that exists)?
fn installed(bin: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(bin).is_file()))
}

/// A running pebble with its DNS.
#[derive(Debug)]
pub struct Pebble {
    pub directory_url: String,
    /// The CA of pebble's own HTTPS listener: the ACME client's extra root.
    pub listener_ca: PathBuf,
    /// Pebble's issuing root (new at every start), PEM.
    pub issuing_root_pem: String,
    pub management: SocketAddr,
    // Dropped in order: pebble, then its DNS, then the directory.
    pebble: ChildGuard,
    _dns: ChildGuard,
    _dir: tempfile::TempDir,
}

impl Pebble {
    /// Starts pebble-challtestsrv (DNS answering 127.0.0.1 for every name) and pebble validating
    /// HTTP-01 on `http_port` and TLS-ALPN-01 on `tls_port` of 127.0.0.1, with real validation
    /// and no random sleeps. `None` when `GANTRY_SKIP_PEBBLE=1`.
    pub async fn start(http_port: u16, tls_port: u16) -> Result<Option<Pebble>, String> {
        if std::env::var("GANTRY_SKIP_PEBBLE").as_deref() == Ok("1") {
            eprintln!("GANTRY_SKIP_PEBBLE=1: skipping a test that needs pebble");
            return Ok(None);
        }
        // pebble and its DNS server take ports picked free a moment earlier; a test running in
        // parallel may bind one first. Such a start is retried with fresh ports.
        let mut attempt = 0;
        loop {
            attempt += 1;
            match Self::start_once(http_port, tls_port).await {
                Err(e) if attempt < 4 && e.contains("address already in use") => {
                    eprintln!("pebble: a port was taken meanwhile, retrying: {e}");
                }
                r => return r,
            }
        }
    }

    async fn start_once(http_port: u16, tls_port: u16) -> Result<Option<Pebble>, String> {
        for bin in ["pebble", "pebble-challtestsrv"] {
            if !installed(bin) {
                return Err(format!(
                    "`{bin}` not found: run `apt-get install -y pebble` (or set GANTRY_SKIP_PEBBLE=1)"
                ));
            }
        }
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let p = dir.path();

        // pebble's listener certificate, signed by a CA the ACME client trusts.
        let (ca_pem, cert_pem, key_pem) = listener_certs()?;
        let listener_ca = p.join("listener-ca.pem");
        write(&listener_ca, &ca_pem)?;
        write(&p.join("cert.pem"), &cert_pem)?;
        write(&p.join("key.pem"), &key_pem)?;

        let dns_port = free_udp_port();
        let dns_mgmt = free_port();
        let mut dns = ChildGuard::spawn(
            "pebble-challtestsrv",
            Command::new("pebble-challtestsrv").args([
                "-http01",
                "",
                "-https01",
                "",
                "-tlsalpn01",
                "",
                "-dns01",
                &format!("127.0.0.1:{dns_port}"),
                "-management",
                &format!("127.0.0.1:{dns_mgmt}"),
                "-defaultIPv6",
                "",
                "-defaultIPv4",
                "127.0.0.1",
            ]),
            p.join("challtestsrv.log"),
        )?;
        wait_port(&mut dns, SocketAddr::from(([127, 0, 0, 1], dns_mgmt))).await?;

        let listen = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let management = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let config = serde_json::json!({
            "pebble": {
                "listenAddress": listen.to_string(),
                "managementListenAddress": management.to_string(),
                "certificate": p.join("cert.pem"),
                "privateKey": p.join("key.pem"),
                "httpPort": http_port,
                "tlsPort": tls_port,
                "ocspResponderURL": "",
                "externalAccountBindingRequired": false
            }
        });
        write(&p.join("pebble.json"), &config.to_string())?;
        let mut pebble = ChildGuard::spawn(
            "pebble",
            Command::new("pebble")
                .arg("-config")
                .arg(p.join("pebble.json"))
                .arg("-dnsserver")
                .arg(format!("127.0.0.1:{dns_port}"))
                .env("PEBBLE_VA_NOSLEEP", "1")
                // Every order validates for real (no reuse of earlier authorizations).
                .env("PEBBLE_AUTHZREUSE", "0"),
            p.join("pebble.log"),
        )?;
        wait_port(&mut pebble, listen).await?;
        wait_port(&mut pebble, management).await?;

        let issuing_root_pem = https_get(management, "/roots/0", &ca_pem).await?;
        if !issuing_root_pem.contains("BEGIN CERTIFICATE") {
            return Err(format!("pebble's /roots/0 is no PEM: {issuing_root_pem}"));
        }
        Ok(Some(Pebble {
            directory_url: format!("https://{listen}/dir"),
            listener_ca,
            issuing_root_pem,
            management,
            pebble,
            _dns: dns,
            _dir: dir,
        }))
    }

    /// pebble's log so far.
    pub fn log(&self) -> String {
        self.pebble.log_text()
    }
}

fn write(path: &Path, text: &str) -> Result<(), String> {
    std::fs::File::create(path)
        .and_then(|mut f| f.write_all(text.as_bytes()))
        .map_err(|e| format!("{}: {e}", path.display()))
}

/// (CA PEM, localhost certificate PEM, its key PEM).
fn listener_certs() -> Result<(String, String, String), String> {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, SanType};
    let e = |e: rcgen::Error| e.to_string();
    let ca_key = KeyPair::generate().map_err(e)?;
    let mut ca = CertificateParams::default();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(DnType::CommonName, "gantry test pebble listener CA");
    let ca_cert = ca.self_signed(&ca_key).map_err(e)?;
    let issuer = Issuer::new(ca, ca_key);
    let key = KeyPair::generate().map_err(e)?;
    let mut leaf = CertificateParams::new(vec!["localhost".to_owned()]).map_err(e)?;
    leaf.subject_alt_names
        .push(SanType::IpAddress([127, 0, 0, 1].into()));
    let cert = leaf.signed_by(&key, &issuer).map_err(e)?;
    Ok((ca_cert.pem(), cert.pem(), key.serialize_pem()))
}

async fn wait_port(child: &mut ChildGuard, addr: SocketAddr) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if tokio::net::TcpStream::connect(addr).await.is_ok() {
            return Ok(());
        }
        if let Some(status) = child.exited() {
            return Err(format!(
                "{} exited ({status}) before listening on {addr}:\n{}",
                child.name,
                child.log_text()
            ));
        }
        if Instant::now() > deadline {
            return Err(format!(
                "{} does not listen on {addr} after 30 s:\n{}",
                child.name,
                child.log_text()
            ));
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

fn roots_from_pem(pem: &str) -> Result<rustls::RootCertStore, String> {
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls_pemfile::certs(&mut pem.as_bytes()) {
        roots
            .add(c.map_err(|e| e.to_string())?)
            .map_err(|e| e.to_string())?;
    }
    Ok(roots)
}

/// Connects with TLS to `addr` for `sni`, verifying against `root_pem` only. Returns the
/// server's chain. Any verification failure is an error.
pub async fn tls_connect(
    addr: SocketAddr,
    sni: &str,
    root_pem: &str,
) -> Result<Vec<CertificateDer<'static>>, String> {
    let cfg = rustls::ClientConfig::builder_with_provider(gantry_proxy::tls::provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots_from_pem(root_pem)?)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(cfg));
    let tcp = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect {addr}: {e}"))?;
    let name = ServerName::try_from(sni.to_owned()).map_err(|e| e.to_string())?;
    let tls = connector
        .connect(name, tcp)
        .await
        .map_err(|e| format!("TLS handshake with {addr} for `{sni}`: {e}"))?;
    let (_, conn) = tls.get_ref();
    Ok(conn
        .peer_certificates()
        .map(|c| c.iter().map(|d| d.clone().into_owned()).collect())
        .unwrap_or_default())
}

/// A GET over HTTPS (HTTP/1.0, whole body), trusting `root_pem`.
pub async fn https_get(addr: SocketAddr, path: &str, root_pem: &str) -> Result<String, String> {
    let cfg = rustls::ClientConfig::builder_with_provider(gantry_proxy::tls::provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots_from_pem(root_pem)?)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(cfg));
    let tcp = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect {addr}: {e}"))?;
    let name = ServerName::from(addr.ip());
    let mut tls = connector
        .connect(name, tcp)
        .await
        .map_err(|e| format!("TLS {addr}: {e}"))?;
    http_exchange(&mut tls, addr, path).await
}

/// A GET over HTTPS to `addr` for the name `host` (SNI and `Host`), trusting `root_pem` only.
/// Returns the status and the body, whatever the status.
pub async fn https_get_host(
    addr: SocketAddr,
    host: &str,
    path: &str,
    root_pem: &str,
) -> Result<(u16, String), String> {
    let cfg = rustls::ClientConfig::builder_with_provider(gantry_proxy::tls::provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots_from_pem(root_pem)?)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(cfg));
    let tcp = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect {addr}: {e}"))?;
    let name = ServerName::try_from(host.to_owned()).map_err(|e| e.to_string())?;
    let mut tls = connector
        .connect(name, tcp)
        .await
        .map_err(|e| format!("TLS handshake with {addr} for `{host}`: {e}"))?;
    let req = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
    tls.write_all(req.as_bytes())
        .await
        .map_err(|e| e.to_string())?;
    let mut buf = Vec::new();
    // A TLS peer may close without close_notify; what was read is still the answer.
    let _ = tokio::time::timeout(Duration::from_secs(30), tls.read_to_end(&mut buf)).await;
    let text = String::from_utf8_lossy(&buf).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| format!("GET {path} on {addr} for `{host}`: no HTTP answer: {text}"))?;
    let body = text
        .split_once("\r\n\r\n")
        .map_or("", |(_, b)| b)
        .to_owned();
    Ok((status, body))
}

/// A GET over plain HTTP (HTTP/1.0, whole body).
pub async fn http_get(addr: SocketAddr, path: &str) -> Result<String, String> {
    let mut tcp = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect {addr}: {e}"))?;
    http_exchange(&mut tcp, addr, path).await
}

async fn http_exchange<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(
    s: &mut S,
    addr: SocketAddr,
    path: &str,
) -> Result<String, String> {
    let req = format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes())
        .await
        .map_err(|e| e.to_string())?;
    let mut buf = Vec::new();
    // A TLS peer may close without close_notify; what was read is still the answer.
    let _ = s.read_to_end(&mut buf).await;
    let text = String::from_utf8_lossy(&buf).into_owned();
    match text.split_once("\r\n\r\n") {
        Some((head, body)) if head.starts_with("HTTP/1.") && head.contains(" 200 ") => {
            Ok(body.to_owned())
        }
        _ => Err(format!("GET {path} on {addr}: {text}")),
    }
}

/// Starts a proxy on loopback with a plain entrypoint `web` (which also serves `/metrics`) and,
/// when `tls`, a TLS entrypoint `websecure`, serving certificates from `certs`.
pub fn start_proxy(certs: Arc<CertStore>, tls: bool) -> Result<Proxy, String> {
    start_proxy_on("127.0.0.1:0", tls.then_some("127.0.0.1:0"), certs)
}

/// As [`start_proxy`] with explicit addresses.
pub fn start_proxy_on(
    http: &str,
    tls: Option<&str>,
    certs: Arc<CertStore>,
) -> Result<Proxy, String> {
    let mut yaml = format!("entryPoints:\n  web:\n    address: \"{http}\"\n");
    if let Some(t) = tls {
        yaml.push_str(&format!(
            "  websecure:\n    address: \"{t}\"\n    http:\n      tls: {{}}\n"
        ));
    }
    yaml.push_str("metrics:\n  prometheus:\n    entryPoint: web\n");
    let cfg: gantry_proxy::config::StaticConfig =
        gantry_proxy::config::parse_str(Path::new("static.yml"), &yaml)
            .map_err(|e| e.to_string())?;
    Proxy::start(
        cfg,
        ProxyOptions {
            workers: Some(1),
            certs: Some(certs),
        },
    )
    .map_err(|e| e.to_string())
}
