//! The README's main job, end to end: the real `gantry` binary runs `examples/proxy/traefik.yml`
//! (entrypoint ports rewritten to free ones, upstream URLs pointed at two in-test upstreams) and
//! every curl command of `examples/proxy/README.md` is run with the real curl and checked.
//!
//! Exercised: the binary's `proxy` subcommand, the example files as shipped, host and path routing,
//! stripPrefix, redirectScheme, TLS with HTTP/2, a WebSocket upgrade, /ping, the API, /metrics.
#![allow(clippy::unwrap_used)]

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine;
use sha1::Digest;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

struct Kill(Child);
impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A minimal HTTP/1.1 upstream: answers with JSON naming itself and the path it saw, and accepts
/// WebSocket upgrades with a correct `Sec-WebSocket-Accept`.
async fn upstream(name: &'static str) -> SocketAddr {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = l.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                loop {
                    let Ok(n) = s.read(&mut chunk).await else {
                        return;
                    };
                    if n == 0 {
                        return;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    while let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        let head = String::from_utf8_lossy(&buf[..end]).to_string();
                        buf.drain(..end + 4);
                        let path = head.split_whitespace().nth(1).unwrap_or("/").to_owned();
                        let header = |name: &str| {
                            head.lines().find_map(|l| {
                                let (k, v) = l.split_once(':')?;
                                k.eq_ignore_ascii_case(name).then(|| v.trim().to_owned())
                            })
                        };
                        if let Some(key) = header("sec-websocket-key") {
                            let mut h = sha1::Sha1::new();
                            h.update(key.as_bytes());
                            h.update(b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11");
                            let accept =
                                base64::engine::general_purpose::STANDARD.encode(h.finalize());
                            let resp = format!(
                                "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n\r\n"
                            );
                            let _ = s.write_all(resp.as_bytes()).await;
                            return;
                        }
                        let prefix = header("x-forwarded-prefix").unwrap_or_default();
                        let body = format!(
                            "{{\"upstream\": \"{name}\", \"path\": \"{path}\", \"prefix\": \"{prefix}\"}}\n"
                        );
                        let resp = format!(
                            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                            body.len()
                        );
                        if s.write_all(resp.as_bytes()).await.is_err() {
                            return;
                        }
                    }
                }
            });
        }
    });
    addr
}

fn curl(args: &[&str]) -> String {
    let out = Command::new("curl")
        .args(["-s", "--max-time", "10"])
        .args(args)
        .output()
        .expect("curl must be installed (ci/install-deps installs it)");
    String::from_utf8_lossy(&out.stdout).to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn example_config_serves_what_its_readme_says() {
    let root = env!("CARGO_MANIFEST_DIR");
    let dir = tempfile::tempdir().unwrap();
    let a = upstream("app-a").await;
    let b = upstream("app-b").await;
    let st = std::fs::read_to_string(format!("{root}/examples/proxy/traefik.yml")).unwrap();
    let st = st
        .replace("127.0.0.1:8000", "127.0.0.1:0")
        .replace("127.0.0.1:8443", "127.0.0.1:0")
        .replace("127.0.0.1:8080", "127.0.0.1:0");
    std::fs::write(dir.path().join("traefik.yml"), st).unwrap();
    let dy = std::fs::read_to_string(format!("{root}/examples/proxy/dynamic.yml")).unwrap();
    assert!(dy.contains("127.0.0.1:9001") && dy.contains("127.0.0.1:9002"));
    let dy = dy
        .replace("127.0.0.1:9001", &a.to_string())
        .replace("127.0.0.1:9002", &b.to_string());
    std::fs::write(dir.path().join("dynamic.yml"), dy).unwrap();

    let mut child = Command::new(env!("CARGO_BIN_EXE_gantry"))
        .args(["--log-format", "json", "proxy", "--config"])
        .arg(dir.path().join("traefik.yml"))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let _guard = Kill(child);
    // Read "listening" lines until all three entrypoints are known.
    let (tx, rx) = std::sync::mpsc::channel::<(String, String)>();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) else {
                continue;
            };
            if v["fields"]["message"] == "listening" {
                let ep = v["fields"]["entrypoint"].as_str().unwrap_or("").to_owned();
                let addr = v["fields"]["addr"].as_str().unwrap_or("").to_owned();
                let _ = tx.send((ep, addr));
            }
        }
    });
    let mut eps = std::collections::HashMap::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while eps.len() < 3 {
        let left = deadline.saturating_duration_since(Instant::now());
        let (ep, addr) = rx
            .recv_timeout(left)
            .expect("gantry proxy did not report its listeners");
        eps.insert(ep, addr);
    }
    let web = eps["web"].clone();
    let secure = eps["websecure"].clone();
    let admin = eps["traefik"].clone();

    tokio::task::spawn_blocking(move || {
        let out = curl(&["-H", "Host: a.localhost", &format!("http://{web}/hello")]);
        assert!(out.contains("\"upstream\": \"app-a\"") && out.contains("\"path\": \"/hello\""), "{out}");

        let out = curl(&["-H", "Host: b.localhost", &format!("http://{web}/api/users")]);
        assert!(out.contains("\"upstream\": \"app-b\""), "{out}");
        assert!(out.contains("\"path\": \"/users\"") && out.contains("\"prefix\": \"/api\""), "{out}");

        let out = curl(&["-i", "-H", "Host: nothing.localhost", &format!("http://{web}/")]);
        assert!(out.starts_with("HTTP/1.1 404"), "{out}");

        let out = curl(&["-i", "-H", "Host: secure.localhost", &format!("http://{web}/x?y=1")]);
        assert!(out.starts_with("HTTP/1.1 301"), "{out}");
        assert!(out.to_ascii_lowercase().contains("location: https://secure.localhost:8443/x?y=1"), "{out}");

        let port = secure.rsplit(':').next().unwrap();
        let out = curl(&[
            "-k", "--http2", "--resolve", &format!("secure.localhost:{port}:127.0.0.1"),
            &format!("https://secure.localhost:{port}/"), "-w", "\n%{http_version}",
        ]);
        assert!(out.contains("\"upstream\": \"app-a\"") && out.ends_with("\n2"), "{out}");

        let out = curl(&[
            "-i", "-H", "Host: b.localhost", "-H", "Connection: Upgrade", "-H", "Upgrade: websocket",
            "-H", "Sec-WebSocket-Version: 13", "-H", "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
            "--max-time", "2", &format!("http://{web}/ws"),
        ]);
        assert!(out.starts_with("HTTP/1.1 101"), "{out}");
        assert!(out.contains("s3pPLMBiTxaQ9kYGzzhZRbK+xOo="), "{out}");

        assert_eq!(curl(&[&format!("http://{admin}/ping")]), "OK");
        let routers = curl(&[&format!("http://{admin}/api/http/routers")]);
        let v: serde_json::Value = serde_json::from_str(&routers).unwrap();
        let names: Vec<&str> = v.as_array().unwrap().iter().filter_map(|r| r["name"].as_str()).collect();
        for want in ["app-a@file", "app-b-api@file", "echo-ws@file", "secure@file", "secure-redirect@file"] {
            assert!(names.contains(&want), "{names:?}");
        }
        let metrics = curl(&[&format!("http://{admin}/metrics")]);
        assert!(
            metrics.contains("gantry_router_requests_total{code=\"200\",method=\"GET\",protocol=\"http\",router=\"app-a@file\",service=\"app-a@file\"} 1"),
            "{metrics}"
        );
    })
    .await
    .unwrap();
}
