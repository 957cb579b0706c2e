//! The live Kubernetes Ingress provider: watchers (reflectors) on Ingress, IngressClass,
//! Service, EndpointSlice and Secrets; on any change (debounced) the same translation
//! `gantry ingress-routes` runs, handed to the proxy as provider `kubernetes`. A translation the
//! proxy refuses leaves the previous routes serving, and is reported.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use ::kube::Api;
use ::kube::runtime::{WatchStreamExt, reflector, watcher};
use futures_util::StreamExt;
use gantry_proxy::config::DynamicConfig;
use k8s_openapi::api::core::v1::{Secret, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::{Ingress, IngressClass};
use tokio::sync::{Notify, watch};
use tokio_util::sync::CancellationToken;

use crate::ingress::{ClusterObjects, Options, ProxyContext, translate};

/// The provider name routes appear under in the proxy (`router@kubernetes`).
pub const PROVIDER: &str = "kubernetes";

/// Where translated routes go (the proxy; a recorder in tests).
pub trait RouteTarget: Send + Sync {
    /// What the other providers define (for reference checks).
    fn context(&self) -> ProxyContext;
    /// Installs the configuration; returns the new generation.
    fn set(&self, cfg: DynamicConfig) -> Result<u64, String>;
}

impl RouteTarget for gantry_proxy::state::Shared {
    fn context(&self) -> ProxyContext {
        let snap = self.snapshot.load_full();
        let suffix = format!("@{PROVIDER}");
        ProxyContext {
            entry_points: Some(self.static_cfg.entry_points.keys().cloned().collect()),
            middlewares: Some(
                snap.middlewares
                    .keys()
                    .filter(|k| !k.ends_with(&suffix))
                    .cloned()
                    .collect(),
            ),
            tls_options: Some(snap.tls_configs.keys().cloned().collect()),
            servers_transports: None,
        }
    }

    fn set(&self, cfg: DynamicConfig) -> Result<u64, String> {
        self.set_provider(PROVIDER, cfg, None)
            .map_err(|e| e.to_string())
    }
}

/// What the provider last did (for the UI's Routes page and the event log).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProviderStatus {
    pub generation: Option<u64>,
    pub routers: usize,
    pub services: usize,
    pub certificates: usize,
    pub warnings: Vec<String>,
    /// Set when the proxy refused the last translation (previous routes still serve).
    pub error: Option<String>,
}

/// Runs until `stop`. `status` receives every outcome.
pub async fn run_ingress_provider(
    client: ::kube::Client,
    target: Arc<dyn RouteTarget>,
    debounce: Duration,
    status: watch::Sender<ProviderStatus>,
    stop: CancellationToken,
) {
    let changed = Arc::new(Notify::new());
    let cfg = watcher::Config::default;
    let (ingresses, w1) = reflector::store::<Ingress>();
    let (classes, w2) = reflector::store::<IngressClass>();
    let (services, w3) = reflector::store::<Service>();
    let (slices, w4) = reflector::store::<EndpointSlice>();
    let (secrets, w5) = reflector::store::<Secret>();
    let mut tasks = Vec::new();
    macro_rules! watch_kind {
        ($k:ty, $writer:expr, $config:expr) => {{
            let stream = watcher(Api::<$k>::all(client.clone()), $config)
                .default_backoff()
                .reflect($writer);
            let changed = changed.clone();
            let stop = stop.clone();
            tasks.push(tokio::spawn(async move {
                let mut stream = std::pin::pin!(stream);
                loop {
                    tokio::select! {
                        _ = stop.cancelled() => return,
                        ev = stream.next() => match ev {
                            Some(Ok(_)) => changed.notify_one(),
                            Some(Err(e)) => tracing::warn!(kind = stringify!($k), error = %e, "watch error (retrying)"),
                            None => return,
                        },
                    }
                }
            }));
        }};
    }
    watch_kind!(Ingress, w1, cfg());
    watch_kind!(IngressClass, w2, cfg());
    watch_kind!(Service, w3, cfg());
    watch_kind!(EndpointSlice, w4, cfg());
    // Every Secret, not only `kubernetes.io/tls` ones: Traefik (and the translation) accept any
    // Secret with `tls.crt` and `tls.key`, and `gantry ingress-routes` must agree with the cluster.
    watch_kind!(Secret, w5, cfg());

    // Nothing is installed before every list has completed once: a half-listed cluster would
    // briefly drop routes.
    let ready = async {
        let _ = ingresses.wait_until_ready().await;
        let _ = classes.wait_until_ready().await;
        let _ = services.wait_until_ready().await;
        let _ = slices.wait_until_ready().await;
        let _ = secrets.wait_until_ready().await;
    };
    tokio::select! {
        _ = stop.cancelled() => return,
        _ = ready => {}
    }
    let mut logged: BTreeSet<String> = BTreeSet::new();
    loop {
        let objs = ClusterObjects {
            ingresses: ingresses.state().iter().map(|o| (**o).clone()).collect(),
            ingress_classes: classes.state().iter().map(|o| (**o).clone()).collect(),
            services: services.state().iter().map(|o| (**o).clone()).collect(),
            endpoint_slices: slices.state().iter().map(|o| (**o).clone()).collect(),
            secrets: secrets.state().iter().map(|o| (**o).clone()).collect(),
        };
        let s = apply_once(&objs, target.as_ref(), &mut logged);
        let _ = status.send(s);
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = changed.notified() => {}
        }
        // Coalesce bursts (a rollout changes many EndpointSlices in a row).
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = tokio::time::sleep(debounce) => {}
        }
    }
    for t in tasks {
        t.abort();
    }
}

/// One translation and install; warnings are logged once each.
pub fn apply_once(
    objs: &ClusterObjects,
    target: &dyn RouteTarget,
    logged: &mut BTreeSet<String>,
) -> ProviderStatus {
    let opts = Options {
        proxy: target.context(),
        ..Options::default()
    };
    let t = translate(objs, &opts);
    let warnings: Vec<String> = t.warnings.iter().map(ToString::to_string).collect();
    for w in &warnings {
        if logged.insert(w.clone()) {
            tracing::warn!(target: "gantry::ingress", "{w}");
        }
    }
    logged.retain(|w| warnings.contains(w));
    let mut s = ProviderStatus {
        routers: t.config.http.routers.len(),
        services: t.config.http.services.len(),
        certificates: t.config.tls.certificates.len(),
        warnings,
        ..Default::default()
    };
    match t.config.to_dynamic() {
        Ok(cfg) => match target.set(cfg) {
            Ok(g) => s.generation = Some(g),
            Err(e) => {
                tracing::error!(error = %e, "the proxy refused the cluster's routes; previous routes keep serving");
                s.error = Some(e);
            }
        },
        Err(e) => s.error = Some(e.to_string()),
    }
    s
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;

    #[derive(Default)]
    struct Recorder {
        got: Mutex<Vec<DynamicConfig>>,
        refuse: bool,
    }

    impl RouteTarget for Recorder {
        fn context(&self) -> ProxyContext {
            ProxyContext {
                entry_points: Some(["web".to_owned(), "websecure".to_owned()].into()),
                ..Default::default()
            }
        }
        fn set(&self, cfg: DynamicConfig) -> Result<u64, String> {
            if self.refuse {
                return Err("refused".into());
            }
            let mut g = self.got.lock().unwrap();
            g.push(cfg);
            Ok(g.len() as u64)
        }
    }

    fn objs() -> ClusterObjects {
        let mut o = ClusterObjects::default();
        let text = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/ingress/rocketchat-helm.yaml"
        ))
        .unwrap();
        assert!(o.add_yaml("helm", &text).is_empty());
        o
    }

    #[test]
    fn installs_and_reports() {
        let r = Recorder::default();
        let mut logged = BTreeSet::new();
        let s = apply_once(&objs(), &r, &mut logged);
        assert_eq!(s.generation, Some(1));
        assert_eq!((s.routers, s.services, s.certificates), (1, 1, 1));
        assert!(s.error.is_none());
        assert_eq!(r.got.lock().unwrap()[0].http.routers.len(), 1);
    }

    #[test]
    fn a_refusal_is_reported_not_fatal() {
        let r = Recorder {
            refuse: true,
            ..Default::default()
        };
        let s = apply_once(&objs(), &r, &mut BTreeSet::new());
        assert_eq!(s.error.as_deref(), Some("refused"));
        assert_eq!(s.generation, None);
    }
}
