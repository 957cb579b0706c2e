//! A real upstream: nginx from Debian (`apt-get install nginx`; `GANTRY_SKIP_NGINX=1` skips), started
//! by the test on a free port with its own configuration, killed when the test ends. Checks pooled
//! keep-alive connections to the upstream, a 10 MiB streamed download, and a chunked upload.

use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use sha2::{Digest, Sha256};
use tokio::net::TcpStream;

use crate::support::*;

const NGINX: &str = "/usr/sbin/nginx";

struct Nginx {
    _child: KillOnDrop,
    port: u16,
    dir: PathBuf,
}

fn running_as_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("Uid:"))
        .and_then(|l| l.split_whitespace().nth(1).map(|u| u == "0"))
        .unwrap_or(false)
}

impl Nginx {
    /// Starts nginx in one process (no master: killing it leaves nothing behind) on a free port.
    async fn start(dir: &Path) -> Nginx {
        let port = refusing_addr().port();
        for sub in ["www/upload", "body", "proxy", "fastcgi", "uwsgi", "scgi"] {
            std::fs::create_dir_all(dir.join(sub)).unwrap();
        }
        let d = dir.display();
        let user = if running_as_root() {
            "user root root;\n"
        } else {
            ""
        };
        let conf = format!(
            "{user}daemon off;
master_process off;
worker_processes 1;
pid {d}/nginx.pid;
error_log {d}/error.log info;
events {{ worker_connections 128; }}
http {{
    log_format conns '$connection $connection_requests $request_method $request_uri $status $body_bytes_sent';
    access_log {d}/access.log conns;
    client_body_temp_path {d}/body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
    keepalive_timeout 60s;
    keepalive_requests 10000;
    client_max_body_size 64m;
    default_type application/octet-stream;
    server {{
        listen 127.0.0.1:{port};
        root {d}/www;
        location /upload/ {{
            dav_methods PUT;
            create_full_put_path on;
        }}
    }}
}}
"
        );
        let conf_path = dir.join("nginx.conf");
        std::fs::write(&conf_path, conf).unwrap();
        let child = std::process::Command::new(NGINX)
            .arg("-p")
            .arg(dir)
            .arg("-e")
            .arg(dir.join("error.log"))
            .arg("-c")
            .arg(&conf_path)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("nginx starts");
        let mut child = KillOnDrop(child);
        let log = dir.join("error.log");
        let deadline = std::time::Instant::now() + LONG;
        while TcpStream::connect(("127.0.0.1", port)).await.is_err() {
            if let Ok(Some(status)) = child.0.try_wait() {
                panic!(
                    "nginx exited with {status}: {}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                );
            }
            assert!(
                std::time::Instant::now() < deadline,
                "nginx does not listen on {port}"
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        Nginx {
            _child: child,
            port,
            dir: dir.to_owned(),
        }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// (connection serial, requests on it) per logged request.
    fn access_log(&self) -> Vec<(u64, u64, String)> {
        std::fs::read_to_string(self.dir.join("access.log"))
            .unwrap_or_default()
            .lines()
            .map(|l| {
                let f: Vec<&str> = l.split(' ').collect();
                (f[0].parse().unwrap(), f[1].parse().unwrap(), l.to_owned())
            })
            .collect()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nginx_upstream_keep_alive_download_and_chunked_upload() {
    if !require_binary(NGINX, "nginx") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let nginx = Nginx::start(dir.path()).await;
    let big = pattern(10 * 1024 * 1024);
    std::fs::write(dir.path().join("www/big.bin"), &big).unwrap();
    std::fs::write(dir.path().join("www/small.txt"), "small\n").unwrap();

    let p = TestProxy::start(WEB_ONLY);
    p.set_json(route("Host(`files.test`)", &[nginx.url()]));
    let web = p.addr("web");

    // 1. Keep-alive: 20 sequential requests on one client connection reuse pooled upstream
    //    connections instead of opening one each.
    let tcp = TcpStream::connect(web).await.unwrap();
    let (mut s, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .unwrap();
    tokio::spawn(conn);
    for i in 0..20 {
        s.ready().await.expect("the client connection stays open");
        let r = tokio::time::timeout(
            EXCHANGE,
            s.send_request(
                req("GET", "files.test", &format!("/small.txt?i={i}"))
                    .body(Full::new(Bytes::new()))
                    .unwrap(),
            ),
        )
        .await
        .unwrap()
        .unwrap();
        assert_eq!(r.status(), 200);
        let body = r.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(body, "small\n");
    }
    let log = eventually("nginx to log 20 requests", LONG, || async {
        let l = nginx.access_log();
        (l.len() >= 20).then_some(l)
    })
    .await;
    let connections: std::collections::BTreeSet<u64> = log.iter().map(|(c, _, _)| *c).collect();
    let most = log.iter().map(|(_, n, _)| *n).max().unwrap();
    assert!(
        connections.len() <= 3 && most >= 10,
        "the proxy opened {} upstream connections for 20 requests (max {most} requests on one): {log:#?}",
        connections.len()
    );

    // 2. A 10 MiB download, streamed, byte-exact.
    s.ready().await.expect("the client connection stays open");
    let r = s
        .send_request(
            req("GET", "files.test", "/big.bin")
                .body(Full::new(Bytes::new()))
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.headers()["content-length"],
        (10 * 1024 * 1024).to_string().as_str()
    );
    let mut body = r.into_body();
    let mut hasher = Sha256::new();
    let mut len = 0usize;
    let mut frames = 0;
    tokio::time::timeout(Duration::from_secs(60), async {
        while let Some(f) = body.frame().await {
            if let Ok(d) = f.unwrap().into_data() {
                len += d.len();
                frames += 1;
                hasher.update(&d);
            }
        }
    })
    .await
    .expect("the download finishes");
    assert_eq!(len, big.len());
    assert_eq!(hex(&hasher.finalize()), sha256_hex(&big));
    assert!(
        frames > 10,
        "the body arrived in {frames} frames: streamed, not in one piece"
    );

    // 3. A chunked upload (unknown length), stored by nginx's PUT, byte-exact.
    let upload = pattern(3 * 1024 * 1024 + 17);
    let (mut tx, body) = http_body_util::channel::Channel::<Bytes, std::io::Error>::new(2);
    let data = Bytes::from(upload.clone());
    let sender = tokio::spawn(async move {
        for chunk in data.chunks(100_000) {
            tx.send_data(Bytes::copy_from_slice(chunk)).await.unwrap();
        }
    });
    let r = send(
        web,
        req("PUT", "files.test", "/upload/file.bin")
            .body(body)
            .unwrap(),
    )
    .await;
    sender.await.unwrap();
    assert_eq!(r.status, 201, "{}", r.text());
    let stored = std::fs::read(dir.path().join("www/upload/file.bin")).unwrap();
    assert_eq!(stored.len(), upload.len());
    assert_eq!(sha256_hex(&stored), sha256_hex(&upload));
    let put_line = nginx
        .access_log()
        .into_iter()
        .find(|(_, _, l)| l.contains("PUT /upload/file.bin"))
        .unwrap();
    assert!(put_line.2.contains(" 201 "), "{}", put_line.2);

    // And it downloads again through the proxy, identical.
    let r = get(web, "files.test", "/upload/file.bin").await;
    assert_eq!(r.status, 200);
    assert_eq!(sha256_hex(&r.body), sha256_hex(&upload));
}
