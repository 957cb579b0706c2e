//! [`Proxy`]: starting the entrypoints' workers, reconfiguring, and shutting down.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::accesslog::AccessLog;
use crate::config::{DynamicConfig, StaticConfig};
use crate::metrics::Metrics;
use crate::server::{self, EntryPointRuntime};
use crate::state::Shared;
use crate::tls::{AcmeChallenges, CertStore};
use crate::{ProxyError, Snapshot};

/// How to run the proxy, beyond the static configuration.
#[derive(Debug, Clone, Default)]
pub struct ProxyOptions {
    /// Worker threads (each a single-threaded runtime). Default: available cores.
    pub workers: Option<usize>,
    /// A certificate store shared with the embedding program (created when absent).
    pub certs: Option<Arc<CertStore>>,
}

/// A running proxy. Dropping it without [`Proxy::shutdown`] stops it abruptly.
#[derive(Debug)]
pub struct Proxy {
    shared: Arc<Shared>,
    addrs: BTreeMap<String, SocketAddr>,
    stop_accepting: CancellationToken,
    drain: CancellationToken,
    conns: TaskTracker,
    workers: Vec<std::thread::JoinHandle<()>>,
    exit: CancellationToken,
}

impl Proxy {
    /// Binds every entrypoint and starts serving (with no routes until a provider sets some).
    /// Must be called inside a Tokio runtime, which runs background tasks (health checks, reloads).
    pub fn start(static_cfg: StaticConfig, opts: ProxyOptions) -> Result<Proxy, ProxyError> {
        let static_cfg = Arc::new(static_cfg);
        let buckets = static_cfg
            .metrics
            .as_ref()
            .and_then(|m| m.prometheus.as_ref())
            .map(|p| p.buckets.clone());
        let metrics = Arc::new(Metrics::new(buckets));
        let access_log = match &static_cfg.access_log {
            Some(al) => Some(AccessLog::open(
                al.file_path.as_deref(),
                al.format.as_deref() != Some("common"),
                al.buffering_size,
                crate::accesslog::Settings::compile(al).map_err(ProxyError::Invalid)?,
                metrics.clone(),
            )?),
            None => None,
        };
        let certs = match opts.certs {
            Some(c) => c,
            None => CertStore::new()?,
        };
        let shared = Shared::new(
            static_cfg.clone(),
            certs,
            metrics,
            access_log,
            tokio::runtime::Handle::current(),
        )?;

        // Bind first: the first socket of an entrypoint picks the port (port 0 in tests), the
        // other workers' sockets join it with SO_REUSEPORT.
        let workers = opts
            .workers
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
            .max(1);
        let mut addrs = BTreeMap::new();
        let mut per_worker: Vec<Vec<(std::net::TcpListener, Arc<EntryPointRuntime>)>> =
            (0..workers).map(|_| Vec::new()).collect();
        for (name, ep) in &static_cfg.entry_points {
            let want = server::parse_address(&ep.address).map_err(ProxyError::Invalid)?;
            let bind_err = |addr, source| ProxyError::Bind {
                entrypoint: name.clone(),
                addr,
                source,
            };
            let first = server::bind_reuseport(want).map_err(|e| bind_err(want, e))?;
            let actual = first.local_addr()?;
            let rt = Arc::new(
                EntryPointRuntime::new(name, ep, actual.port(), &shared)
                    .map_err(ProxyError::Invalid)?,
            );
            addrs.insert(name.clone(), actual);
            per_worker[0].push((first, rt.clone()));
            for list in per_worker.iter_mut().skip(1) {
                let l = server::bind_reuseport(actual).map_err(|e| bind_err(actual, e))?;
                list.push((l, rt.clone()));
            }
        }

        let _ = shared
            .bound_ports
            .set(addrs.iter().map(|(n, a)| (n.clone(), a.port())).collect());
        let stop_accepting = CancellationToken::new();
        let drain = CancellationToken::new();
        let exit = CancellationToken::new();
        let conns = TaskTracker::new();
        let mut handles = Vec::new();
        for (i, listeners) in per_worker.into_iter().enumerate() {
            let shared = shared.clone();
            let (stop_accepting, drain, exit, conns) = (
                stop_accepting.clone(),
                drain.clone(),
                exit.clone(),
                conns.clone(),
            );
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let h = std::thread::Builder::new()
                .name(format!("gantry-worker-{i}"))
                .spawn(move || {
                    rt.block_on(async move {
                        for (l, ep) in listeners {
                            match tokio::net::TcpListener::from_std(l) {
                                Ok(l) => {
                                    tokio::spawn(server::accept_loop(
                                        l,
                                        ep,
                                        shared.clone(),
                                        stop_accepting.clone(),
                                        drain.clone(),
                                        conns.clone(),
                                    ));
                                }
                                Err(e) => tracing::error!(error = %e, "cannot register listener"),
                            }
                        }
                        // Keep the runtime alive (and its connections and tunnels running)
                        // until the proxy exits.
                        exit.cancelled().await;
                    });
                })?;
            handles.push(h);
        }
        Ok(Proxy {
            shared,
            addrs,
            stop_accepting,
            drain,
            conns,
            workers: handles,
            exit,
        })
    }

    /// Compiles a configuration without listening anywhere (`gantry proxy --check`): every error
    /// a reload would report is reported here. Must be called inside a Tokio runtime.
    pub fn check(
        static_cfg: StaticConfig,
        dynamic: crate::config::LoadedDynamic,
    ) -> Result<Arc<Snapshot>, ProxyError> {
        if let Some(al) = &static_cfg.access_log {
            crate::accesslog::Settings::compile(al).map_err(ProxyError::Invalid)?;
        }
        let shared = Shared::new(
            Arc::new(static_cfg),
            CertStore::new()?,
            Arc::new(Metrics::new(None)),
            None,
            tokio::runtime::Handle::current(),
        )?;
        shared.set_provider("file", dynamic.config, Some(dynamic.origins))?;
        let snap = shared.snapshot.load_full();
        snap.stop.cancel();
        Ok(snap)
    }

    /// The address an entrypoint listens on (with the real port when configured with port 0).
    pub fn local_addr(&self, entrypoint: &str) -> Option<SocketAddr> {
        self.addrs.get(entrypoint).copied()
    }

    /// Replaces one provider's dynamic configuration. On error the running configuration stays.
    pub fn set_provider(&self, provider: &str, cfg: DynamicConfig) -> Result<u64, ProxyError> {
        Ok(self.shared.set_provider(provider, cfg, None)?)
    }

    /// As [`Proxy::set_provider`] for the file provider, with the files objects came from.
    pub fn set_file_provider(
        &self,
        cfg: DynamicConfig,
        origins: BTreeMap<String, PathBuf>,
    ) -> Result<u64, ProxyError> {
        Ok(self.shared.set_provider("file", cfg, Some(origins))?)
    }

    /// The certificate store (install managed certificates, TLS-ALPN-01 answers).
    pub fn certs(&self) -> &Arc<CertStore> {
        &self.shared.certs
    }

    /// HTTP-01 challenge answers.
    pub fn acme(&self) -> &Arc<AcmeChallenges> {
        &self.shared.acme
    }

    /// The configuration in service now.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.shared.snapshot.load_full()
    }

    pub fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// Graceful shutdown, as Traefik's `lifeCycle` describes: keep serving for
    /// `requestAcceptGraceTimeout` (with `/ping` failing so load balancers move away), stop
    /// accepting, let in-flight requests finish for up to `graceTimeOut`, then close WebSockets
    /// with 1001 and stop.
    pub async fn shutdown(self) {
        self.shared.draining.store(true, Ordering::Relaxed);
        let (accept_grace, grace) = self
            .shared
            .static_cfg
            .entry_points
            .values()
            .map(|e| {
                (
                    e.transport.life_cycle.request_accept_grace_timeout.0,
                    e.transport.life_cycle.grace_time_out.0,
                )
            })
            .fold((Duration::ZERO, Duration::ZERO), |a, b| {
                (a.0.max(b.0), a.1.max(b.1))
            });
        if !accept_grace.is_zero() {
            tracing::info!(?accept_grace, "draining: still accepting requests");
            tokio::time::sleep(accept_grace).await;
        }
        self.stop_accepting.cancel();
        self.drain.cancel();
        self.conns.close();
        tracing::info!(?grace, "draining: waiting for in-flight requests");
        if tokio::time::timeout(grace, self.conns.wait())
            .await
            .is_err()
        {
            tracing::warn!("grace period over: closing remaining connections");
        }
        self.shared.tunnels.close_all(Duration::from_secs(5)).await;
        self.stop_now();
    }

    fn stop_now(mut self) {
        self.stop_accepting.cancel();
        self.exit.cancel();
        for h in self.workers.drain(..) {
            let _ = h.join();
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop_accepting.cancel();
        self.exit.cancel();
    }
}
