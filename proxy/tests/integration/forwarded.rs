//! Point 6, forwarded headers: X-Forwarded-For/-Proto/-Host/-Port/-Server and X-Real-Ip set as
//! Traefik does, and the client's own trusted only from `forwardedHeaders.trustedIPs`.

use bytes::Bytes;
use http_body_util::Full;
use serde_json::Value;

use crate::support::*;

async fn echo_with_spoofed_headers(addr: std::net::SocketAddr, host: &str) -> Value {
    let r = send(
        addr,
        req("GET", host, "/")
            .header("x-forwarded-for", "6.6.6.6")
            .header("x-forwarded-proto", "https")
            .header("x-forwarded-host", "evil.test")
            .header("x-forwarded-port", "1234")
            .header("x-forwarded-server", "evil")
            .header("x-real-ip", "6.6.6.6")
            .body(Full::new(Bytes::new()))
            .unwrap(),
    )
    .await;
    r.json()["headers"].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarded_headers_from_untrusted_and_trusted_clients() {
    let up = Upstream::start("app").await;
    let p = TestProxy::start(
        "entryPoints:
  untrusting:
    address: \"127.0.0.1:0\"
  trusting:
    address: \"127.0.0.1:0\"
    forwardedHeaders:
      trustedIPs:
        - 10.0.0.0/8
        - 127.0.0.1/32
  elsewhere:
    address: \"127.0.0.1:0\"
    forwardedHeaders:
      trustedIPs: [\"10.0.0.0/8\"]
",
    );
    p.set_json(route("PathPrefix(`/`)", &[up.url()]));
    let hostname = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .unwrap()
        .trim()
        .to_owned();

    // Not trusted (no trustedIPs, or a list without us): the proxy's own view replaces them all.
    for ep in ["untrusting", "elsewhere"] {
        let addr = p.addr(ep);
        let h = echo_with_spoofed_headers(addr, "app.test").await;
        assert_eq!(h["x-forwarded-for"], "127.0.0.1", "{ep}");
        assert_eq!(h["x-real-ip"], "127.0.0.1", "{ep}");
        assert_eq!(h["x-forwarded-proto"], "http", "{ep}");
        assert_eq!(h["x-forwarded-host"], "app.test", "{ep}");
        assert_eq!(
            h["x-forwarded-port"],
            addr.port().to_string(),
            "{ep}: the entrypoint's port"
        );
        assert_eq!(h["x-forwarded-server"], hostname.as_str(), "{ep}");
        // With a port in Host, that port.
        let h = echo_with_spoofed_headers(addr, "app.test:8443").await;
        assert_eq!(h["x-forwarded-host"], "app.test:8443");
        assert_eq!(h["x-forwarded-port"], "8443");
    }

    // Trusted: kept, and this hop is appended to X-Forwarded-For.
    let h = echo_with_spoofed_headers(p.addr("trusting"), "app.test").await;
    assert_eq!(h["x-forwarded-for"], "6.6.6.6, 127.0.0.1");
    assert_eq!(h["x-forwarded-proto"], "https");
    assert_eq!(h["x-forwarded-host"], "evil.test");
    assert_eq!(h["x-forwarded-port"], "1234");
    assert_eq!(h["x-real-ip"], "6.6.6.6");
    // And without incoming headers, the proxy sets them from what it saw.
    let h = get(p.addr("trusting"), "app.test", "/").await.json()["headers"].clone();
    assert_eq!(h["x-forwarded-for"], "127.0.0.1");
    assert_eq!(h["x-forwarded-proto"], "http");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarded_proto_is_https_on_tls_and_ws_for_websockets() {
    let ca = Ca::new("fwd CA");
    let up = Upstream::start("app").await;
    let p = TestProxy::start(
        "entryPoints:\n  websecure:\n    address: \"127.0.0.1:0\"\n    http:\n      tls: {}\n",
    );
    p.proxy()
        .certs()
        .set_managed(vec![ca.issue(&["app.test"]).loaded()], None);
    p.set_json(route("PathPrefix(`/`)", &[up.url()]));
    let cfg = client_config(
        Trust::Roots(ca.roots()),
        &[b"http/1.1"],
        &[&rustls::version::TLS13],
    );
    let addr = p.addr("websecure");
    let s = tls_connect(addr, "app.test", cfg.clone()).await.unwrap();
    let r = send_on(
        s,
        false,
        req("GET", "app.test", "/")
            .body(Full::new(Bytes::new()))
            .unwrap(),
    )
    .await
    .unwrap();
    let h = r.json()["headers"].clone();
    assert_eq!(h["x-forwarded-proto"], "https");
    assert_eq!(h["x-forwarded-port"], addr.port().to_string());

    // A WebSocket upgrade attempt to an HTTP upstream: the upstream sees `wss` and the Upgrade.
    let s = tls_connect(addr, "app.test", cfg).await.unwrap();
    let r = send_on(
        s,
        false,
        req("GET", "app.test", "/socket")
            .header("connection", "Upgrade")
            .header("upgrade", "websocket")
            .header("sec-websocket-version", "13")
            .header("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==")
            .body(Full::new(Bytes::new()))
            .unwrap(),
    )
    .await
    .unwrap();
    let h = r.json()["headers"].clone();
    assert_eq!(h["x-forwarded-proto"], "wss");
    assert_eq!(h["upgrade"], "websocket");
}
