//! Shared setup.

use std::sync::Arc;
use std::time::Duration;

use gantry_proxy::Proxy;
use gantry_proxy::tls::CertStore;
use gantry_supervisor::certs::{AcmeConfig, CertManager, Directory, MachineIdentity, Policy};
use gantry_supervisor::clock::OffsetClock;
use gantry_supervisor::store::Store;
use gantry_supervisor::testing::{Pebble, start_proxy};

pub(crate) fn identity() -> MachineIdentity {
    MachineIdentity {
        hostname: "gantry-test.local".into(),
        ips: vec!["127.0.0.1".parse().unwrap()],
    }
}

pub(crate) fn policy() -> Policy {
    Policy {
        max_orders_per_hour: 10,
        order_timeout: Duration::from_secs(30),
        ..Policy::default()
    }
}

/// A data directory, a proxy (plain + TLS), pebble pointed at the proxy's ports (or at a dead
/// port for HTTP-01 when `http_dead`), and a manager over them.
pub(crate) struct Env {
    pub(crate) data: tempfile::TempDir,
    pub(crate) clock: Arc<OffsetClock>,
    pub(crate) proxy: Proxy,
    pub(crate) pebble: Pebble,
    pub(crate) mgr: Arc<CertManager>,
}

pub(crate) async fn env(
    http01: bool,
    tls_alpn01: bool,
    http_dead: bool,
    policy: Policy,
) -> Option<Env> {
    let certs = CertStore::new().unwrap();
    let proxy = start_proxy(certs, true).unwrap();
    let http_port = if http_dead {
        gantry_supervisor::testing::free_port()
    } else {
        proxy.local_addr("web").unwrap().port()
    };
    let tls_port = proxy.local_addr("websecure").unwrap().port();
    let pebble = Pebble::start(http_port, tls_port).await.unwrap()?;
    let data = tempfile::tempdir().unwrap();
    let clock = Arc::new(OffsetClock::new());
    let store = Arc::new(Store::open(data.path(), 0).unwrap());
    let mgr = manager(&store, &clock, &proxy, &pebble, http01, tls_alpn01, policy);
    Some(Env {
        data,
        clock,
        proxy,
        pebble,
        mgr,
    })
}

pub(crate) fn manager(
    store: &Arc<Store>,
    clock: &Arc<OffsetClock>,
    proxy: &Proxy,
    pebble: &Pebble,
    http01: bool,
    tls_alpn01: bool,
    policy: Policy,
) -> Arc<CertManager> {
    let cfg = AcmeConfig {
        directory: Directory::Url(pebble.directory_url.clone()),
        extra_root: Some(pebble.listener_ca.clone()),
        email: Some("ops@example.com".into()),
        http01,
        tls_alpn01,
    };
    Arc::new(
        CertManager::new(
            store.clone(),
            clock.clone(),
            proxy.certs().clone(),
            cfg,
            policy,
        )
        .with_http01(proxy.acme().clone()),
    )
}

/// The first certificate's DER of a PEM chain.
pub(crate) fn leaf_der(chain_pem: &str) -> Vec<u8> {
    rustls_pemfile::certs(&mut chain_pem.as_bytes())
        .next()
        .unwrap()
        .unwrap()
        .to_vec()
}
