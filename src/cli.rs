//! Command-line interface.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use gantry_proxy::config;
use gantry_proxy::{Proxy, ProxyOptions};
use tokio_util::sync::CancellationToken;

#[derive(Debug, Parser)]
#[command(
    name = "gantry",
    version,
    about = "Cluster-in-a-box appliance: Rocket.Chat on k3s behind Gantry's own ingress proxy"
)]
pub(crate) struct Cli {
    /// Log format on stderr.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text, env = "GANTRY_LOG_FORMAT")]
    pub log_format: LogFormat,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub(crate) enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Run the ingress proxy alone with a Traefik v3 static configuration file.
    Proxy {
        /// Static configuration (YAML or TOML), Traefik v3 format.
        #[arg(long, short)]
        config: PathBuf,
        /// Worker threads (default: one per core).
        #[arg(long)]
        workers: Option<usize>,
        /// Check the static and dynamic configuration, print a summary and exit.
        #[arg(long)]
        check: bool,
    },
    /// Run the appliance daemon: proxy, certificates, store and web UI (setup wizard, admin).
    Run(crate::run_cmd::RunArgs),
    /// Certificates: issue with ACME, list, import.
    Certs {
        #[command(subcommand)]
        command: crate::certs_cmd::CertsCommand,
    },
    /// Build the appliance disk image (raw, qcow2, root-slot image, manifest). Runs as root.
    Build(crate::build_cmd::BuildArgs),
    /// Print the Kubernetes objects Gantry installs (Rocket.Chat, MongoDB), like `helm template`.
    Manifests {
        /// The chat's public host name.
        #[arg(long, default_value = "chat.example.com")]
        domain: String,
        /// Rocket.Chat replicas.
        #[arg(long, default_value_t = 1)]
        replicas: i32,
        /// Write one file per object into this directory instead of printing.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Show the proxy routes Kubernetes objects (Ingress, IngressClass, Service, EndpointSlice,
    /// Secret) in YAML files translate to, as Traefik-style dynamic configuration.
    IngressRoutes {
        /// YAML files (multi-document, `kind: List` accepted).
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// Print TLS private keys from Secrets instead of a placeholder.
        #[arg(long)]
        show_keys: bool,
    },
}

pub(crate) fn init_tracing(format: LogFormat) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("GANTRY_LOG")
        .unwrap_or_else(|_| EnvFilter::new("info,rustls=error"));
    let b = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => b.init(),
        LogFormat::Json => b.json().init(),
    }
}

impl Cli {
    pub(crate) fn run(self) -> anyhow::Result<()> {
        match self.command {
            Command::Proxy {
                config,
                workers,
                check,
            } => run_proxy(config, workers, check),
            Command::Run(args) => crate::run_cmd::run(args),
            Command::Certs { command } => crate::certs_cmd::run(command),
            Command::Build(args) => crate::build_cmd::run(args),
            Command::Manifests {
                domain,
                replicas,
                out,
            } => crate::manifests_cmd::run(&domain, replicas, out),
            Command::IngressRoutes { files, show_keys } => {
                crate::ingress_cmd::run(&files, show_keys)
            }
        }
    }
}

fn run_proxy(path: PathBuf, workers: Option<usize>, check: bool) -> anyhow::Result<()> {
    let static_cfg = config::load_static(&path)?;
    // The control runtime runs reloads and health checks; workers have their own runtimes.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    rt.block_on(async move {
        if check {
            let loaded = match &static_cfg.providers.file {
                Some(f) => config::load_dynamic(f.filename.as_deref(), f.directory.as_deref())?,
                None => config::LoadedDynamic::default(),
            };
            let snap = Proxy::check(static_cfg.clone(), loaded)?;
            println!(
                "configuration OK: {} entrypoints, {} routers, {} services, {} middlewares",
                static_cfg.entry_points.len(),
                snap.routers.len(),
                snap.services.len(),
                snap.middlewares.len()
            );
            return Ok(());
        }
        let proxy = Proxy::start(
            static_cfg.clone(),
            ProxyOptions {
                workers,
                certs: None,
            },
        )?;
        let stop = CancellationToken::new();
        if let Some(file) = &static_cfg.providers.file {
            gantry_proxy::provider::load(&proxy, file)
                .context("loading the dynamic configuration")?;
            if file.watch {
                let throttle = static_cfg
                    .providers
                    .providers_throttle_duration
                    .map_or(Duration::from_millis(200), |d| d.0);
                gantry_proxy::provider::spawn_watch(&proxy, file.clone(), throttle, stop.clone())?;
            }
        }
        for name in static_cfg.entry_points.keys() {
            if let Some(addr) = proxy.local_addr(name) {
                tracing::info!(entrypoint = %name, %addr, "listening");
            }
        }
        shutdown_signal().await;
        tracing::info!("shutting down (send SIGINT again to exit now)");
        stop.cancel();
        tokio::select! {
            _ = proxy.shutdown() => {}
            _ = tokio::signal::ctrl_c() => {
                tracing::warn!("second signal: exiting now");
                std::process::exit(130);
            }
        }
        tracing::info!("stopped");
        Ok(())
    })
}

/// Resolves on SIGTERM or SIGINT.
async fn shutdown_signal() {
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
