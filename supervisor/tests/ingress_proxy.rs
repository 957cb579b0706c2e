//! The Ingress translation through a running proxy: a Service with endpoints is reached, one
//! without endpoints answers 503, and Prefix paths match whole segments. Real sockets on
//! 127.0.0.1; the upstream is a minimal HTTP responder started by the test.
#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::time::Duration;

use gantry_proxy::{Proxy, ProxyOptions};
use gantry_supervisor::ingress::{ClusterObjects, Options, translate};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Answers every request with 200 and a body naming the request path.
async fn upstream() -> (u16, tokio::task::JoinHandle<()>) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    let h = tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = l.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let mut buf = vec![0u8; 8192];
                let mut got = 0;
                loop {
                    let Ok(n) = s.read(&mut buf[got..]).await else {
                        return;
                    };
                    if n == 0 {
                        return;
                    }
                    got += n;
                    if buf[..got].windows(4).any(|w| w == b"\r\n\r\n") {
                        break;
                    }
                }
                let head = String::from_utf8_lossy(&buf[..got]).to_string();
                let path = head.split_whitespace().nth(1).unwrap_or("?").to_owned();
                let body = format!("upstream saw {path}");
                let resp = format!(
                    "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = s.write_all(resp.as_bytes()).await;
            });
        }
    });
    (port, h)
}

async fn get(addr: std::net::SocketAddr, host: &str, path: &str) -> (u16, String) {
    let mut s = TcpStream::connect(addr).await.unwrap();
    let req = format!("GET {path} HTTP/1.1\r\nhost: {host}\r\nconnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(20), s.read_to_end(&mut out))
        .await
        .unwrap()
        .unwrap();
    let text = String::from_utf8_lossy(&out).to_string();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = text.split("\r\n\r\n").nth(1).unwrap_or("").to_owned();
    (status, body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn translated_ingress_routes_through_the_proxy() {
    let (port, up) = upstream().await;
    let yaml = format!(
        r#"
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {{name: chat, namespace: chat}}
spec:
  ingressClassName: gantry
  rules:
    - host: chat.example.com
      http:
        paths:
          - path: /api
            pathType: Prefix
            backend: {{service: {{name: rocketchat, port: {{name: http}}}}}}
          - path: /down
            pathType: Prefix
            backend: {{service: {{name: scaled-to-zero, port: {{number: 80}}}}}}
---
apiVersion: v1
kind: Service
metadata: {{name: rocketchat, namespace: chat}}
spec:
  ports: [{{name: http, port: 80, targetPort: 3000}}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: rocketchat-1
  namespace: chat
  labels: {{kubernetes.io/service-name: rocketchat}}
addressType: IPv4
ports: [{{name: http, port: {port}}}]
endpoints:
  - addresses: ["127.0.0.1"]
    conditions: {{ready: true}}
  - addresses: ["127.0.0.2"]
    conditions: {{ready: false, serving: false}}
---
apiVersion: v1
kind: Service
metadata: {{name: scaled-to-zero, namespace: chat}}
spec:
  ports: [{{port: 80}}]
"#
    );
    let mut objs = ClusterObjects::default();
    assert!(objs.add_yaml("test.yaml", &yaml).is_empty());
    let t = translate(&objs, &Options::default());
    assert!(t.warnings.is_empty(), "{:?}", t.warnings);

    let static_cfg = gantry_proxy::config::parse_str(
        Path::new("static.yml"),
        "entryPoints:\n  web:\n    address: \"127.0.0.1:0\"\n",
    )
    .unwrap();
    let proxy = Proxy::start(
        static_cfg,
        ProxyOptions {
            workers: Some(1),
            certs: None,
        },
    )
    .unwrap();
    proxy
        .set_provider("kubernetes", t.config.to_dynamic().unwrap())
        .unwrap();
    let addr = proxy.local_addr("web").unwrap();

    let (status, body) = get(addr, "chat.example.com", "/api/v1/info").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body, "upstream saw /api/v1/info");
    let (status, _) = get(addr, "chat.example.com", "/api").await;
    assert_eq!(status, 200);
    // Prefix `/api` does not match `/apiary` (whole segments).
    let (status, _) = get(addr, "chat.example.com", "/apiary").await;
    assert_eq!(status, 404);
    // A Service without endpoints answers 503.
    let (status, body) = get(addr, "chat.example.com", "/down/x").await;
    assert_eq!(status, 503, "{body}");
    // Other hosts are not routed.
    let (status, _) = get(addr, "other.example.com", "/api").await;
    assert_eq!(status, 404);
    // Only the ready endpoint is used: every request reaches the responder.
    for _ in 0..4 {
        assert_eq!(get(addr, "chat.example.com", "/api/x").await.0, 200);
    }

    tokio::time::timeout(Duration::from_secs(30), proxy.shutdown())
        .await
        .unwrap();
    up.abort();
}
