//! The appliance daemon's composition (`gantry run`): store -> proxy (plain, TLS and admin
//! entrypoints, the stored certificates loaded before the first accept) -> [`Appliance`]
//! (certificate manager, auth, cluster seam) -> the setup token on disk and on the console's
//! banner files. The web UI's servers are the caller's (the binary starts them and calls
//! [`Daemon::attach_web_ui`]), so that this crate knows nothing of HTTP handlers.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::net::{IpAddr, SocketAddr};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use gantry_proxy::config::StaticConfig;
use gantry_proxy::{Proxy, ProxyOptions};
use tokio_util::sync::CancellationToken;

use crate::Error;
use crate::appliance::{Appliance, ApplianceOptions, entrypoints};
use crate::auth::{Secret, SessionPolicy, ThrottlePolicy};
use crate::certs::{MachineIdentity, Policy};
use crate::clock::Clock;
use crate::cluster::Cluster;
use crate::store::Store;

/// File name of the setup token in the data directory (and in the run directory).
pub const SETUP_TOKEN_FILE: &str = "setup-token";

/// What `gantry run` needs, validated.
#[derive(Debug, Clone)]
pub struct DaemonConfig {
    pub data_dir: PathBuf,
    /// Runtime files for the console banner (`/run/gantry`: `setup-token`, `urls`, `ready`).
    pub run_dir: Option<PathBuf>,
    /// Plain-HTTP app entrypoint (redirects to HTTPS; answers ACME HTTP-01).
    pub http: SocketAddr,
    /// TLS app entrypoint.
    pub https: SocketAddr,
    /// Admin UI entrypoint (TLS).
    pub admin: SocketAddr,
    pub acme_directory: Option<String>,
    pub acme_ca_root: Option<PathBuf>,
    pub workers: Option<usize>,
    pub cert_policy: Policy,
    pub session_policy: SessionPolicy,
    pub throttle_policy: ThrottlePolicy,
}

/// A running daemon (without the web UI's servers).
#[derive(Debug)]
pub struct Daemon {
    appliance: Arc<Appliance>,
    proxy: Proxy,
    cancel: CancellationToken,
    run_dir: Option<PathBuf>,
    setup_token: Option<Secret>,
}

fn proxy_config(cfg: &DaemonConfig) -> Result<StaticConfig, Error> {
    // The app entrypoints are the defaults for routers that name none (a cluster Ingress
    // without the entrypoints annotation): apps never appear on the admin entrypoint.
    let ep = |addr: SocketAddr, tls: bool, as_default: bool| {
        let mut v = serde_json::json!({
            "address": addr.to_string(),
            "asDefault": as_default,
            // Stop quickly on SIGTERM: systemd waits, and the UI has no long requests.
            "transport": {"lifeCycle": {"requestAcceptGraceTimeout": "0s", "graceTimeOut": "3s"}},
        });
        if tls {
            v["http"] = serde_json::json!({"tls": {}});
        }
        v
    };
    let mut https = ep(cfg.https, true, true);
    // Rocket.Chat accepts uploads up to 100 MB by default: Traefik's 60 s readTimeout would cut
    // them off below ~14 Mbit/s. 30 minutes still bounds a client that trickles a body forever.
    https["transport"]["respondingTimeouts"] = serde_json::json!({"readTimeout": "30m"});
    let v = serde_json::json!({
        "entryPoints": {
            entrypoints::HTTP: ep(cfg.http, false, true),
            entrypoints::HTTPS: https,
            entrypoints::ADMIN: ep(cfg.admin, true, false),
        }
    });
    serde_json::from_value(v).map_err(|e| Error::Invalid(format!("proxy configuration: {e}")))
}

/// Writes a file only root can read (0600), atomically (temporary file, fsync, rename).
pub(crate) fn write_private(path: &Path, content: &str) -> Result<(), Error> {
    let io = |source| Error::Io {
        what: "cannot write",
        path: path.to_owned(),
        source,
    };
    let tmp = path.with_extension("tmp");
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(io)?;
    f.write_all(content.as_bytes()).map_err(io)?;
    f.sync_all().map_err(io)?;
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600)).map_err(io)?;
    std::fs::rename(&tmp, path).map_err(io)
}

fn write_public(path: &Path, content: &str) -> Result<(), Error> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, content)
        .and_then(|()| std::fs::rename(&tmp, path))
        .map_err(|source| Error::Io {
            what: "cannot write",
            path: path.to_owned(),
            source,
        })
}

/// The URLs the admin UI answers on, one per local address (loopback last).
pub fn admin_urls(admin: SocketAddr, identity: &MachineIdentity) -> Vec<String> {
    let port = admin.port();
    let fmt = |ip: IpAddr| match (ip, port) {
        (IpAddr::V6(v6), 443) => format!("https://[{v6}]/"),
        (IpAddr::V6(v6), p) => format!("https://[{v6}]:{p}/"),
        (ip, 443) => format!("https://{ip}/"),
        (ip, p) => format!("https://{ip}:{p}/"),
    };
    if !admin.ip().is_unspecified() {
        return vec![fmt(admin.ip())];
    }
    let mut ips: Vec<IpAddr> = identity
        .ips
        .iter()
        .copied()
        .filter(|ip| admin.is_ipv6() || ip.is_ipv4())
        .collect();
    ips.sort_by_key(|ip| (ip.is_loopback(), ip.is_ipv6(), *ip));
    ips.into_iter().map(fmt).collect()
}

impl Daemon {
    /// Opens the store, starts the proxy and the appliance, and makes the setup token while
    /// setup is pending. Must be called inside a Tokio runtime.
    pub async fn start(
        cfg: DaemonConfig,
        clock: Arc<dyn Clock>,
        cluster: Arc<dyn Cluster>,
    ) -> Result<Daemon, Error> {
        let store = Arc::new(Store::open(&cfg.data_dir, clock.now())?);
        let certs = gantry_proxy::tls::CertStore::new()?;
        // The stored certificates are served from the first connection on.
        crate::certs::load_stored(&store, &certs, clock.now())?;
        let proxy = Proxy::start(
            proxy_config(&cfg)?,
            ProxyOptions {
                workers: cfg.workers,
                certs: Some(certs),
            },
        )?;
        let mut listen = BTreeMap::new();
        for name in [entrypoints::HTTP, entrypoints::HTTPS, entrypoints::ADMIN] {
            if let Some(a) = proxy.local_addr(name) {
                listen.insert(name.to_owned(), a);
            }
        }
        let cancel = CancellationToken::new();
        let identity = MachineIdentity::detect();
        let appliance = Appliance::new(
            ApplianceOptions {
                data_dir: cfg.data_dir.clone(),
                acme_directory: cfg.acme_directory.clone(),
                acme_ca_root: cfg.acme_ca_root.clone(),
                cert_policy: cfg.cert_policy.clone(),
                session_policy: cfg.session_policy.clone(),
                throttle_policy: cfg.throttle_policy.clone(),
                listen,
                setup_token_files: std::iter::once(cfg.data_dir.join(SETUP_TOKEN_FILE))
                    .chain(cfg.run_dir.iter().map(|d| d.join(SETUP_TOKEN_FILE)))
                    .collect(),
            },
            store,
            clock,
            proxy.shared().clone(),
            cluster,
            &identity,
            cancel.clone(),
        )?;
        appliance.start_renewals()?;
        // The operator's routes to services outside the cluster, before the first request. A
        // refusal is logged, not fatal: the admin UI must come up to fix it.
        if let Err(e) = appliance.apply_external_routes() {
            tracing::error!(error = %e, "external routes not applied");
        }
        appliance.spawn_housekeeping();
        appliance.resume_cluster()?;

        let token_path = cfg.data_dir.join(SETUP_TOKEN_FILE);
        let previous = std::fs::read_to_string(&token_path).ok();
        let setup_token = appliance.ensure_setup_token(previous.as_deref())?;
        match &setup_token {
            Some(t) => write_private(&token_path, &format!("{}\n", t.expose()))?,
            None => {
                let _ = std::fs::remove_file(&token_path);
            }
        }
        let daemon = Daemon {
            appliance,
            proxy,
            cancel,
            run_dir: cfg.run_dir.clone(),
            setup_token,
        };
        daemon.write_run_files(&identity)?;
        Ok(daemon)
    }

    fn write_run_files(&self, identity: &MachineIdentity) -> Result<(), Error> {
        let Some(dir) = &self.run_dir else {
            return Ok(());
        };
        std::fs::create_dir_all(dir).map_err(|source| Error::Io {
            what: "cannot create the run directory",
            path: dir.clone(),
            source,
        })?;
        let urls = self.admin_urls_for(identity);
        write_public(&dir.join("urls"), &format!("{}\n", urls.join("\n")))?;
        let token = dir.join(SETUP_TOKEN_FILE);
        match &self.setup_token {
            Some(t) => write_private(&token, &format!("{}\n", t.expose()))?,
            None => {
                let _ = std::fs::remove_file(&token);
            }
        }
        Ok(())
    }

    fn admin_urls_for(&self, identity: &MachineIdentity) -> Vec<String> {
        match self.proxy.local_addr(entrypoints::ADMIN) {
            Some(a) => admin_urls(a, identity),
            None => Vec::new(),
        }
    }

    /// The setup wizard's URLs (the admin entrypoint on every local address).
    pub fn admin_urls(&self) -> Vec<String> {
        self.admin_urls_for(&MachineIdentity::detect())
    }

    pub fn appliance(&self) -> &Arc<Appliance> {
        &self.appliance
    }

    /// The setup token made at start (None once setup is complete).
    pub fn setup_token(&self) -> Option<&Secret> {
        self.setup_token.as_ref()
    }

    /// The proxy's shared state, for providers that feed it routes (the cluster's Ingresses).
    pub fn proxy_shared(&self) -> Arc<gantry_proxy::state::Shared> {
        self.proxy.shared().clone()
    }

    pub fn local_addr(&self, entrypoint: &str) -> Option<SocketAddr> {
        self.proxy.local_addr(entrypoint)
    }

    /// Routes the proxy to the web UI's loopback servers and marks the daemon ready (the
    /// banner's `ready` file).
    pub fn attach_web_ui(&self, admin_ui: SocketAddr, app_ui: SocketAddr) -> Result<(), Error> {
        self.appliance.attach_web_ui(admin_ui, app_ui)?;
        if let Some(dir) = &self.run_dir {
            write_public(&dir.join("ready"), "")?;
        }
        Ok(())
    }

    /// Drains the proxy and stops background tasks.
    pub async fn shutdown(self) {
        self.cancel.cancel();
        if let Some(dir) = &self.run_dir {
            let _ = std::fs::remove_file(dir.join("ready"));
        }
        let appliance = self.appliance.clone();
        tokio::join!(self.proxy.shutdown(), async move {
            if tokio::time::timeout(Duration::from_secs(10), appliance.shutdown())
                .await
                .is_err()
            {
                tracing::warn!("background tasks did not stop within 10 s");
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_per_address() {
        let id = MachineIdentity {
            hostname: "g".into(),
            ips: vec![
                "127.0.0.1".parse().unwrap(),
                "192.168.1.5".parse().unwrap(),
                "::1".parse().unwrap(),
            ],
        };
        assert_eq!(
            admin_urls("0.0.0.0:8443".parse().unwrap(), &id),
            vec!["https://192.168.1.5:8443/", "https://127.0.0.1:8443/"]
        );
        assert_eq!(
            admin_urls("[::]:443".parse().unwrap(), &id),
            vec![
                "https://192.168.1.5/",
                "https://127.0.0.1/",
                "https://[::1]/"
            ]
        );
        assert_eq!(
            admin_urls("127.0.0.1:9443".parse().unwrap(), &id),
            vec!["https://127.0.0.1:9443/"]
        );
    }
}
