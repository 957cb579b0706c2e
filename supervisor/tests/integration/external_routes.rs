//! Routes to services outside the cluster, end to end: a real daemon (store on disk, proxy on
//! loopback ports), a real upstream HTTP server started here, HTTPS requests through the proxy
//! with the route's name as SNI and Host, verified against the host's self-signed certificate.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use gantry_supervisor::Error;
use gantry_supervisor::appliance::{Appliance, keys};
use gantry_supervisor::auth::{SessionPolicy, ThrottlePolicy};
use gantry_supervisor::certs::Policy;
use gantry_supervisor::clock::SystemClock;
use gantry_supervisor::cluster::NoCluster;
use gantry_supervisor::daemon::{Daemon, DaemonConfig};
use gantry_supervisor::external::ExternalRouteInput;
use gantry_supervisor::testing::https_get_host;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// An HTTP/1.1 server answering every request with 200 and `upstream host=H path=P`.
struct Upstream {
    addr: SocketAddr,
    hits: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn upstream() -> Upstream {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let hits = Arc::new(AtomicUsize::new(0));
    let h = hits.clone();
    let task = tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = l.accept().await else {
                return;
            };
            let h = h.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 16384];
                let mut got = 0;
                loop {
                    let Ok(n) = s.read(&mut buf[got..]).await else {
                        return;
                    };
                    if n == 0 {
                        return;
                    }
                    got += n;
                    if buf[..got].windows(4).any(|w| w == b"\r\n\r\n") || got == buf.len() {
                        break;
                    }
                }
                h.fetch_add(1, Ordering::SeqCst);
                let head = String::from_utf8_lossy(&buf[..got]).to_string();
                let path = head.split_whitespace().nth(1).unwrap_or("?").to_owned();
                let host = head
                    .lines()
                    .find_map(|l| {
                        let (k, v) = l.split_once(':')?;
                        k.eq_ignore_ascii_case("host").then(|| v.trim().to_owned())
                    })
                    .unwrap_or_default();
                let body = format!("upstream host={host} path={path}");
                let resp = format!(
                    "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = s.write_all(resp.as_bytes()).await;
            });
        }
    });
    Upstream { addr, hits, task }
}

fn config(data: &Path) -> DaemonConfig {
    DaemonConfig {
        data_dir: data.to_owned(),
        run_dir: None,
        http: "127.0.0.1:0".parse().unwrap(),
        https: "127.0.0.1:0".parse().unwrap(),
        admin: "127.0.0.1:0".parse().unwrap(),
        // A dead local CA: ACME-managed hosts wait, nothing leaves the machine.
        acme_directory: Some("https://127.0.0.1:1/directory".into()),
        acme_ca_root: None,
        workers: Some(1),
        cert_policy: Policy::default(),
        session_policy: SessionPolicy::default(),
        throttle_policy: ThrottlePolicy::default(),
    }
}

async fn start(data: &Path) -> Daemon {
    Daemon::start(
        config(data),
        Arc::new(SystemClock),
        Arc::new(NoCluster::Disabled),
    )
    .await
    .unwrap()
}

/// The current certificate of a domain (the trust root for a self-signed one).
fn cert_pem(app: &Appliance, host: &str) -> String {
    let d = app
        .store()
        .domain(host)
        .unwrap()
        .unwrap_or_else(|| panic!("`{host}` is not a domain"));
    app.store()
        .current_certificate(d.id)
        .unwrap()
        .unwrap_or_else(|| panic!("`{host}` has no certificate"))
        .chain_pem
}

fn input(host: &str, path: Option<&str>, url: &str) -> ExternalRouteInput {
    ExternalRouteInput {
        host: host.into(),
        path_prefix: path.map(Into::into),
        url: url.into(),
    }
}

fn has_event(app: &Appliance, kind: &str, subject: &str) -> bool {
    app.events(100)
        .unwrap()
        .iter()
        .any(|e| e.kind == kind && e.subject.as_deref() == Some(subject))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn external_route_reaches_the_service_is_removed_and_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let up = upstream().await;
    let other = upstream().await;
    let daemon = start(&data).await;
    // The gantry provider's routes too (the UI servers are a dead port here): the external route
    // must win over its catch-all app fallback.
    let dead: SocketAddr = "127.0.0.1:9".parse().unwrap();
    daemon.attach_web_ui(dead, dead).unwrap();
    let app = daemon.appliance().clone();
    let now = app.now();
    app.store()
        .set_setting(keys::CHAT_DOMAIN, "chat.example.test", now)
        .unwrap();

    // Validation: each refusal names its field; nothing is stored.
    let target = format!("http://{}", up.addr);
    for (i, field) in [
        (input("not a host", None, &target), "host"),
        (
            input("nas.example.test", Some("photos"), &target),
            "path_prefix",
        ),
        (input("nas.example.test", None, "ftp://10.0.0.1"), "url"),
        (
            input("nas.example.test", None, "http://me:pw@10.0.0.1"),
            "url",
        ),
        (
            input("nas.example.test", None, "http://10.0.0.1/?q=1"),
            "url",
        ),
        (
            input("chat.example.test", Some("/"), &target),
            "path_prefix",
        ),
    ] {
        match app.add_external_route(&i) {
            Err(Error::Field { field: f, message }) => assert_eq!(f, field, "{i:?}: {message}"),
            other => panic!("{i:?}: expected a `{field}` error, got {other:?}"),
        }
    }
    assert!(app.external_routes().unwrap().is_empty());

    let view = app
        .add_external_route(&input("NAS.example.test", None, &format!("{target}/")))
        .unwrap();
    assert_eq!(view.host, "nas.example.test");
    assert_eq!(view.path_prefix, "/");
    assert_eq!(view.url, target);
    assert_eq!(view.router, format!("ext-{}@external", view.id));
    // A longer prefix on the same host goes to another service.
    let photos = app
        .add_external_route(&input(
            "nas.example.test",
            Some("/photos"),
            &format!("http://{}", other.addr),
        ))
        .unwrap();
    match app.add_external_route(&input("nas.example.test", Some("/"), "http://10.0.0.9")) {
        Err(Error::Field { field, message }) => {
            assert_eq!(field, "path_prefix", "{message}");
            assert!(message.contains("already"), "{message}");
        }
        other => panic!("duplicate accepted: {other:?}"),
    }
    // The chat's domain takes a narrower path.
    app.add_external_route(&input("chat.example.test", Some("/nas"), &target))
        .unwrap();
    assert_eq!(app.external_routes().unwrap().len(), 3);
    assert!(has_event(&app, "route.added", "nas.example.test"));
    let routes = app.routes();
    let r = routes
        .routers
        .iter()
        .find(|r| r.name == view.router)
        .unwrap_or_else(|| panic!("no router {}: {:?}", view.router, routes.routers));
    assert!(r.tls && r.entrypoints == ["websecure"], "{r:?}");

    // Self-signed mode (no ACME cert mode): the host got its own certificate, which the proxy
    // serves; the request reaches the upstream with the original Host and path.
    let root = cert_pem(&app, "nas.example.test");
    let https = daemon.local_addr("websecure").unwrap();
    let (status, body) = https_get_host(https, "nas.example.test", "/a/b?x=1", &root)
        .await
        .unwrap();
    assert_eq!(status, 200, "{body}");
    assert_eq!(body, "upstream host=nas.example.test path=/a/b?x=1");
    let (status, body) = https_get_host(https, "nas.example.test", "/photos/1.jpg", &root)
        .await
        .unwrap();
    assert_eq!(status, 200, "{body}");
    assert_eq!(body, "upstream host=nas.example.test path=/photos/1.jpg");
    assert_eq!(other.hits.load(Ordering::SeqCst), 1);

    // ACME cert mode: a new host becomes an ACME-managed domain (no self-signed certificate).
    app.store()
        .set_setting(keys::CERT_MODE, "letsencrypt", now)
        .unwrap();
    app.add_external_route(&input("acme.example.test", None, &target))
        .unwrap();
    let d = app.store().domain("acme.example.test").unwrap().unwrap();
    assert_eq!(app.store().current_certificate(d.id).unwrap(), None);
    assert!(has_event(&app, "domain.added", "acme.example.test"));

    // Restart: a new daemon over the same data directory serves the routes again.
    drop(app);
    daemon.shutdown().await;
    let daemon = start(&data).await;
    let app = daemon.appliance().clone();
    assert_eq!(app.external_routes().unwrap().len(), 4);
    let https = daemon.local_addr("websecure").unwrap();
    let hits = up.hits.load(Ordering::SeqCst);
    let (status, body) = https_get_host(https, "nas.example.test", "/after-restart", &root)
        .await
        .unwrap();
    assert_eq!(status, 200, "{body}");
    assert_eq!(body, "upstream host=nas.example.test path=/after-restart");
    assert_eq!(up.hits.load(Ordering::SeqCst), hits + 1);

    // Removal: the request no longer reaches the upstream; the domain and certificate stay.
    app.remove_external_route(view.id).unwrap();
    app.remove_external_route(photos.id).unwrap();
    assert!(has_event(&app, "route.removed", "nas.example.test"));
    let hits = up.hits.load(Ordering::SeqCst);
    let (status, body) = https_get_host(https, "nas.example.test", "/a", &root)
        .await
        .unwrap();
    assert_ne!(status, 200, "{body}");
    assert!(!body.contains("upstream"), "{body}");
    assert_eq!(up.hits.load(Ordering::SeqCst), hits);
    assert!(app.store().domain("nas.example.test").unwrap().is_some());
    assert!(
        app.routes()
            .routers
            .iter()
            .all(|r| r.name != view.router && r.name != photos.router)
    );
    match app.remove_external_route(view.id) {
        Err(Error::UnknownRoute(id)) => assert_eq!(id, view.id),
        other => panic!("removed twice: {other:?}"),
    }
    assert_eq!(app.external_routes().unwrap().len(), 2);
    drop(app);
    daemon.shutdown().await;
}
