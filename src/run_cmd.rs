//! `gantry run`: the appliance daemon.
//!
//! Configuration: `/etc/gantry/gantry.toml` (or `--config FILE`), then the command line, which
//! wins; parsed and validated once into [`RunConfig`]. Then: the supervisor's [`Daemon`] (store,
//! proxy entrypoints, certificates, setup token), the web UI's two loopback servers routed by
//! the proxy, the console banner, `READY=1` to systemd, and a clean stop on SIGTERM/SIGINT.

use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use gantry_supervisor::auth::{SessionPolicy, ThrottlePolicy};
use gantry_supervisor::certs::Policy;
use gantry_supervisor::clock::SystemClock;
use gantry_supervisor::cluster::{Cluster, NoCluster};
use gantry_supervisor::daemon::{Daemon, DaemonConfig};
use gantry_supervisor::k3s::{K3sPaths, StartOptions};
use gantry_supervisor::kube::cluster::{K3sCluster, K3sClusterOptions};
use gantry_supervisor::kube::install::Timeouts;
use serde::Deserialize;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// The default configuration file; absent is fine, unless named with `--config`.
pub(crate) const DEFAULT_CONFIG: &str = "/etc/gantry/gantry.toml";

#[derive(Debug, Default, clap::Args)]
pub(crate) struct RunArgs {
    /// Configuration file (TOML, same keys as these flags). Default: /etc/gantry/gantry.toml
    /// when it exists.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// State directory (database, setup token). Default: /var/lib/gantry.
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Plain-HTTP app entrypoint (redirects to HTTPS; ACME HTTP-01). Default: :80.
    #[arg(long)]
    pub http: Option<String>,
    /// TLS app entrypoint. Default: :443.
    #[arg(long)]
    pub https: Option<String>,
    /// Admin UI entrypoint (TLS). Default: :8443.
    #[arg(long)]
    pub admin: Option<String>,
    /// Run everything but the cluster (k3s, MongoDB, Rocket.Chat).
    #[arg(long)]
    pub no_cluster: bool,
    /// ACME directory URL replacing Let's Encrypt's (a private CA; pebble in tests).
    #[arg(long)]
    pub acme_directory: Option<String>,
    /// Extra root CA (PEM) trusted for the ACME directory's HTTPS.
    #[arg(long)]
    pub acme_ca_root: Option<PathBuf>,
    /// Runtime files for the console banner (setup-token, urls, ready). Default: /run/gantry
    /// under systemd, none otherwise.
    #[arg(long)]
    pub run_dir: Option<PathBuf>,
    /// Proxy worker threads (default: one per core).
    #[arg(long)]
    pub workers: Option<usize>,
    /// The k3s binary. Default: /usr/local/bin/k3s (where the image puts it).
    #[arg(long)]
    pub k3s_binary: Option<PathBuf>,
    /// Air-gap image archives to place where k3s imports them at start (the image links its
    /// own through tmpfiles; use this when running by hand).
    #[arg(long)]
    pub k3s_images: Option<PathBuf>,
}

/// The configuration file: the same settings as the flags.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct FileConfig {
    data_dir: Option<PathBuf>,
    http: Option<String>,
    https: Option<String>,
    admin: Option<String>,
    no_cluster: Option<bool>,
    acme_directory: Option<String>,
    acme_ca_root: Option<PathBuf>,
    run_dir: Option<PathBuf>,
    workers: Option<usize>,
    k3s_binary: Option<PathBuf>,
    k3s_images: Option<PathBuf>,
}

/// The validated configuration of `gantry run`.
#[derive(Debug)]
pub(crate) struct RunConfig {
    pub daemon: DaemonConfig,
    pub no_cluster: bool,
    pub k3s_binary: PathBuf,
    pub k3s_images: Option<PathBuf>,
}

/// The appliance's data directory; with it, k3s uses the system paths the image prepares
/// (`/etc/rancher/k3s`, `/var/lib/rancher/k3s`); any other data directory (a developer's) keeps
/// k3s's files under `DIR/k3s`.
const SYSTEM_DATA_DIR: &str = "/var/lib/gantry";

/// `:PORT` (every address), `IP:PORT` or `[IPv6]:PORT`.
pub(crate) fn parse_listen(what: &str, s: &str) -> anyhow::Result<SocketAddr> {
    let s = s.trim();
    if let Some(port) = s.strip_prefix(':') {
        let port: u16 = port
            .parse()
            .with_context(|| format!("{what}: `{s}`: the port is not a number"))?;
        return Ok(SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), port));
    }
    s.parse::<SocketAddr>().with_context(|| {
        format!("{what}: `{s}` is not an address (use :PORT, IP:PORT or [IPv6]:PORT)")
    })
}

fn under_systemd() -> bool {
    std::env::var_os("NOTIFY_SOCKET").is_some() || std::env::var_os("INVOCATION_ID").is_some()
}

impl RunConfig {
    /// Reads the file (if any), applies the flags over it, and validates.
    pub(crate) fn load(args: RunArgs) -> anyhow::Result<RunConfig> {
        let file = match &args.config {
            Some(p) => read_file(p)?,
            None if Path::new(DEFAULT_CONFIG).exists() => read_file(Path::new(DEFAULT_CONFIG))?,
            None => FileConfig::default(),
        };
        Self::merge(args, file, under_systemd())
    }

    fn merge(args: RunArgs, file: FileConfig, systemd: bool) -> anyhow::Result<RunConfig> {
        let data_dir = args
            .data_dir
            .or(file.data_dir)
            .unwrap_or_else(|| PathBuf::from("/var/lib/gantry"));
        let http = parse_listen("http", args.http.or(file.http).as_deref().unwrap_or(":80"))?;
        let https = parse_listen(
            "https",
            args.https.or(file.https).as_deref().unwrap_or(":443"),
        )?;
        let admin = parse_listen(
            "admin",
            args.admin.or(file.admin).as_deref().unwrap_or(":8443"),
        )?;
        let ports = [(http, "http"), (https, "https"), (admin, "admin")];
        for (i, (a, an)) in ports.iter().enumerate() {
            for (b, bn) in &ports[i + 1..] {
                if a.port() != 0
                    && a.port() == b.port()
                    && (a.ip() == b.ip() || a.ip().is_unspecified() || b.ip().is_unspecified())
                {
                    bail!("--{an} and --{bn} both listen on {a} / {b}: give each its own port");
                }
            }
        }
        let acme_directory = args.acme_directory.or(file.acme_directory);
        if let Some(d) = &acme_directory {
            gantry_supervisor::certs::Directory::parse(d)
                .with_context(|| "--acme-directory".to_string())?;
        }
        let acme_ca_root = args.acme_ca_root.or(file.acme_ca_root);
        if let Some(p) = &acme_ca_root
            && !p.is_file()
        {
            bail!("--acme-ca-root: {} is not a file", p.display());
        }
        let run_dir = args
            .run_dir
            .or(file.run_dir)
            .or_else(|| systemd.then(|| PathBuf::from("/run/gantry")));
        let workers = args.workers.or(file.workers);
        if workers == Some(0) {
            bail!("--workers: at least 1");
        }
        let k3s_images = args.k3s_images.or(file.k3s_images);
        if let Some(p) = &k3s_images
            && !p.is_dir()
        {
            bail!("--k3s-images: {} is not a directory", p.display());
        }
        Ok(RunConfig {
            no_cluster: args.no_cluster || file.no_cluster.unwrap_or(false),
            k3s_binary: args
                .k3s_binary
                .or(file.k3s_binary)
                .unwrap_or_else(|| PathBuf::from("/usr/local/bin/k3s")),
            k3s_images,
            daemon: DaemonConfig {
                data_dir,
                run_dir,
                http,
                https,
                admin,
                acme_directory,
                acme_ca_root,
                workers,
                cert_policy: Policy::default(),
                session_policy: SessionPolicy::default(),
                throttle_policy: ThrottlePolicy::default(),
            },
        })
    }
}

fn read_file(path: &Path) -> anyhow::Result<FileConfig> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the configuration {}", path.display()))?;
    toml::from_str(&text).with_context(|| format!("configuration {}", path.display()))
}

fn notify(state: sd_notify::NotifyState<'_>) {
    if std::env::var_os("NOTIFY_SOCKET").is_some()
        && let Err(e) = sd_notify::notify(false, &[state])
    {
        tracing::warn!(error = %e, "sd_notify failed");
    }
}

/// The banner on stderr (the journal, a terminal). The setup token is meant to be read here by
/// whoever is at the machine; it is printed only in this block, never in log events, and dies
/// when setup completes.
fn print_banner(daemon: &Daemon, data_dir: &Path) {
    let urls = daemon.admin_urls();
    let mut out = String::from("\n  Gantry is running.\n");
    match daemon.setup_token() {
        Some(t) => {
            for (i, u) in urls.iter().enumerate() {
                let label = if i == 0 { "Setup wizard:" } else { "" };
                out.push_str(&format!("  {label:<14} {u}\n"));
            }
            out.push_str(&format!("  {:<14} {}\n", "Setup token:", t.expose()));
            out.push_str(&format!(
                "  {:<14} (also in {})\n",
                "",
                data_dir.join("setup-token").display()
            ));
        }
        None => {
            for (i, u) in urls.iter().enumerate() {
                let label = if i == 0 { "Admin UI:" } else { "" };
                out.push_str(&format!("  {label:<14} {u}\n"));
            }
        }
    }
    eprintln!("{out}");
}

/// Runs the daemon until SIGTERM or SIGINT.
pub(crate) fn run(args: RunArgs) -> anyhow::Result<()> {
    let cfg = RunConfig::load(args)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("gantry-control")
        .enable_all()
        .build()?;
    rt.block_on(run_async(cfg))
}

async fn run_async(cfg: RunConfig) -> anyhow::Result<()> {
    let k3s_cluster = (!cfg.no_cluster).then(|| k3s_cluster(&cfg));
    let cluster: Arc<dyn Cluster> = match &k3s_cluster {
        Some(c) => c.clone(),
        None => {
            tracing::info!(
                "--no-cluster: running without a cluster (no k3s, MongoDB or Rocket.Chat)"
            );
            Arc::new(NoCluster::Disabled)
        }
    };
    let data_dir = cfg.daemon.data_dir.clone();
    let daemon = Daemon::start(cfg.daemon, Arc::new(SystemClock), cluster)
        .await
        .context("starting gantry")?;
    for name in ["web", "websecure", "admin"] {
        if let Some(a) = daemon.local_addr(name) {
            tracing::info!(entrypoint = name, addr = %a, "listening");
        }
    }

    if let Some(c) = &k3s_cluster {
        let app = daemon.appliance().clone();
        c.set_event_sink(Arc::new(move |level, kind, message| {
            app.record_event(level, kind, message);
        }));
    }
    let stop_cluster = CancellationToken::new();
    let cluster_task = k3s_cluster
        .as_ref()
        .and_then(|c| c.spawn(daemon.proxy_shared(), stop_cluster.clone()));

    let stop_ui = CancellationToken::new();
    let admin_l = TcpListener::bind("127.0.0.1:0").await?;
    let app_l = TcpListener::bind("127.0.0.1:0").await?;
    let (admin_addr, app_addr) = (admin_l.local_addr()?, app_l.local_addr()?);
    let app = daemon.appliance().clone();
    let admin_ui = tokio::spawn(gantry_web_ui::serve(
        admin_l,
        gantry_web_ui::admin_router(app.clone(), stop_ui.clone()),
        stop_ui.clone(),
    ));
    let app_ui = tokio::spawn(gantry_web_ui::serve(
        app_l,
        gantry_web_ui::app_router(app, stop_ui.clone()),
        stop_ui.clone(),
    ));
    daemon
        .attach_web_ui(admin_addr, app_addr)
        .context("routing the web UI")?;
    tracing::info!(admin = %admin_addr, app = %app_addr, "web UI serving behind the proxy");
    print_banner(&daemon, &data_dir);
    notify(sd_notify::NotifyState::Ready);

    shutdown_signal().await;
    tracing::info!("shutting down");
    notify(sd_notify::NotifyState::Stopping);
    stop_ui.cancel();
    stop_cluster.cancel();
    let stop = async {
        // k3s first (SIGTERM, then SIGKILL after its stop timeout), then the rest.
        if let Some(t) = cluster_task
            && let Err(e) = t.await
        {
            tracing::warn!(error = %e, "cluster task");
        }
        daemon.shutdown().await;
        for t in [admin_ui, app_ui] {
            match t.await {
                Ok(Err(e)) => tracing::warn!(error = %e, "web UI server"),
                Err(e) => tracing::warn!(error = %e, "web UI task"),
                Ok(Ok(())) => {}
            }
        }
    };
    tokio::select! {
        () = stop => {}
        () = shutdown_signal() => {
            tracing::warn!("second signal: exiting now");
            std::process::exit(130);
        }
        () = tokio::time::sleep(Duration::from_secs(90)) => {
            tracing::warn!("shutdown took longer than 90 s: exiting");
        }
    }
    tracing::info!("stopped");
    Ok(())
}

fn k3s_cluster(cfg: &RunConfig) -> Arc<K3sCluster> {
    let data_dir = &cfg.daemon.data_dir;
    let mut k3s = StartOptions::new(cfg.k3s_binary.clone(), data_dir);
    if data_dir == Path::new(SYSTEM_DATA_DIR) {
        k3s.paths = K3sPaths::system();
    }
    k3s.images_from = cfg.k3s_images.clone();
    tracing::info!(
        binary = %cfg.k3s_binary.display(),
        data = %k3s.paths.data_dir.display(),
        "cluster: k3s under supervision"
    );
    K3sCluster::new(K3sClusterOptions {
        k3s,
        timeouts: Timeouts::default(),
        status_interval: Duration::from_secs(10),
        retry: Duration::from_secs(15),
        secrets_file: data_dir.join("cluster-secrets.json"),
    })
}

/// Resolves on SIGTERM or SIGINT.
pub(crate) async fn shutdown_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_win_over_the_file_and_defaults_fill_in() {
        let file: FileConfig = toml::from_str(
            "data-dir = \"/srv/g\"\nhttp = \"127.0.0.1:8080\"\nadmin = \":9443\"\nno-cluster = true\n",
        )
        .unwrap();
        let args = RunArgs {
            http: Some("127.0.0.1:8081".into()),
            ..RunArgs::default()
        };
        let c = RunConfig::merge(args, file, false).unwrap();
        assert_eq!(c.daemon.data_dir, PathBuf::from("/srv/g"));
        assert_eq!(c.daemon.http, "127.0.0.1:8081".parse().unwrap());
        assert_eq!(c.daemon.https.port(), 443);
        assert_eq!(c.daemon.admin.port(), 9443);
        assert!(c.no_cluster);
        assert_eq!(c.daemon.run_dir, None);
        let c = RunConfig::merge(RunArgs::default(), FileConfig::default(), true).unwrap();
        assert_eq!(c.daemon.run_dir, Some(PathBuf::from("/run/gantry")));
        assert_eq!(c.daemon.data_dir, PathBuf::from("/var/lib/gantry"));
    }

    #[test]
    fn bad_configurations_are_refused() {
        assert!(toml::from_str::<FileConfig>("typo = 1").is_err());
        let same = RunArgs {
            http: Some(":8443".into()),
            ..RunArgs::default()
        };
        let e = RunConfig::merge(same, FileConfig::default(), false).unwrap_err();
        assert!(e.to_string().contains("own port"), "{e}");
        assert!(parse_listen("http", "localhost:80").is_err());
        assert!(parse_listen("http", ":x").is_err());
        assert_eq!(
            parse_listen("http", "[::1]:80").unwrap(),
            "[::1]:80".parse().unwrap()
        );
        let bad_acme = RunArgs {
            acme_directory: Some("http://insecure".into()),
            ..RunArgs::default()
        };
        assert!(RunConfig::merge(bad_acme, FileConfig::default(), false).is_err());
    }
}
