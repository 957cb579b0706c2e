//! The cluster as `gantry run` drives it: start k3s, wait until ready, install the stack, feed the
//! proxy from the cluster's Ingresses, publish status; re-apply when settings change. Every step
//! reports to `events` (the UI's progress and event log).

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use super::install::{Step, Timeouts, install};
use super::status::{ClusterStatus, fetch};
use super::watch::{ProviderStatus, RouteTarget, run_ingress_provider};
use crate::k3s::{self, StartOptions, readiness::Progress};
use crate::manifests::{DEFAULT_NAMESPACE, Pins, StackSecrets, StackSettings, render};

/// What happened, for the UI.
#[derive(Debug, Clone)]
pub enum ClusterEvent {
    K3s(k3s::State),
    Readiness(Progress),
    Install(Step),
    /// A step failed; the loop retries (after `retry`) unless stopped.
    Error(String),
    Status(Box<ClusterStatus>),
    Routes(ProviderStatus),
}

/// The stack Gantry should run: settings from the wizard and the UI, credentials generated once.
#[derive(Debug, Clone)]
pub struct Desired {
    pub settings: StackSettings,
    pub secrets: StackSecrets,
}

/// Inputs of [`run_cluster`].
pub struct ClusterOptions {
    pub k3s: StartOptions,
    /// What to install: `None` until setup has named the domain (k3s starts anyway, so its
    /// boot overlaps the wizard); a change re-renders and re-applies the stack.
    pub desired: watch::Receiver<Option<std::sync::Arc<Desired>>>,
    pub timeouts: Timeouts,
    pub status_interval: Duration,
    pub retry: Duration,
}

/// Runs until `stop`; k3s is stopped gracefully before it returns.
pub async fn run_cluster(
    mut opts: ClusterOptions,
    proxy: Arc<dyn RouteTarget>,
    events: mpsc::UnboundedSender<ClusterEvent>,
    stop: CancellationToken,
) -> Result<(), super::KubeError> {
    let send = |e: ClusterEvent| {
        let _ = events.send(e);
    };
    let pins = Pins::embedded()?;
    let k3s = k3s::start(opts.k3s, None, stop.clone()).map_err(|e| super::KubeError::Failed {
        what: "starting k3s".into(),
        reason: e.to_string(),
    })?;
    // Forward k3s state changes.
    {
        let mut st = k3s.supervised.state.clone();
        let ev = events.clone();
        let stop = stop.clone();
        tokio::spawn(async move {
            loop {
                let s = st.borrow_and_update().clone();
                let _ = ev.send(ClusterEvent::K3s(s));
                tokio::select! {
                    _ = stop.cancelled() => return,
                    r = st.changed() => if r.is_err() { return },
                }
            }
        });
    }
    let client = loop {
        let ready = tokio::select! {
            r = k3s.wait_ready(Duration::from_secs(600), |p| {
                send(ClusterEvent::Readiness(p.clone()))
            }) => r,
            () = stop.cancelled() => {
                k3s.join().await;
                return Ok(());
            }
        };
        match ready {
            Ok(()) => match k3s::readiness::client(&k3s.paths.kubeconfig).await {
                Ok(c) => break c,
                Err(e) => send(ClusterEvent::Error(e.to_string())),
            },
            Err(e) => send(ClusterEvent::Error(e.to_string())),
        }
        tokio::select! {
            _ = stop.cancelled() => { k3s.join().await; return Ok(()) }
            _ = tokio::time::sleep(opts.retry) => {}
        }
    };
    let (routes_tx, mut routes_rx) = watch::channel(ProviderStatus::default());
    let provider = tokio::spawn(run_ingress_provider(
        client.clone(),
        proxy,
        Duration::from_millis(300),
        routes_tx,
        stop.clone(),
    ));
    let mut applied = false;
    let mut status_tick = tokio::time::interval(opts.status_interval);
    loop {
        if !applied {
            let desired = opts.desired.borrow_and_update().clone();
            let result = match &desired {
                // Nothing to install before setup.
                None => Ok(()),
                Some(d) => match render(&d.settings, &d.secrets, &pins) {
                    Ok(stack) => {
                        let install = install(
                            &client,
                            &stack,
                            &d.settings.namespace,
                            &opts.timeouts,
                            |s| {
                                send(ClusterEvent::Install(s));
                            },
                        );
                        tokio::select! {
                            r = install => r,
                            () = stop.cancelled() => break,
                        }
                    }
                    Err(e) => Err(e.into()),
                },
            };
            match result {
                Ok(()) => applied = true,
                Err(e) => send(ClusterEvent::Error(e.to_string())),
            }
        }
        tokio::select! {
            _ = stop.cancelled() => break,
            r = opts.desired.changed() => if r.is_ok() { applied = false },
            _ = status_tick.tick() => {
                let ns = opts
                    .desired
                    .borrow()
                    .as_ref()
                    .map_or(DEFAULT_NAMESPACE, |d| d.settings.namespace.as_str())
                    .to_owned();
                match fetch(&client, &ns, &k3s.node_name, 20).await {
                    Ok(s) => send(ClusterEvent::Status(Box::new(s))),
                    Err(e) => send(ClusterEvent::Error(e.to_string())),
                }
            }
            r = routes_rx.changed() => if r.is_ok() {
                send(ClusterEvent::Routes(routes_rx.borrow_and_update().clone()));
            },
            _ = tokio::time::sleep(opts.retry), if !applied => {}
        }
    }
    let _ = provider.await;
    k3s.join().await;
    Ok(())
}
