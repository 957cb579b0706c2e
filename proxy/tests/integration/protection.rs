//! Point 9, protection: header read timeout (slowloris, silent connections, slow TLS handshakes),
//! idle timeout (HTTP/1.1 keep-alive and HTTP/2), max header size, max concurrent connections,
//! upstream connect and response-header timeouts, WebSocket idle timeout, and no panic on hostile
//! input.

use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::StreamExt;
use http_body_util::Full;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;

use crate::support::*;

/// Reads until the peer closes (Ok) or `limit` passes (Err); returns what was read.
async fn read_until_closed(s: &mut TcpStream, limit: Duration) -> Result<Vec<u8>, Vec<u8>> {
    let mut out = Vec::new();
    let deadline = Instant::now() + limit;
    let mut buf = [0u8; 4096];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, s.read(&mut buf)).await {
            Err(_) => return Err(out),
            Ok(Ok(0)) | Ok(Err(_)) => return Ok(out),
            Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slowloris_is_closed_by_the_header_read_timeout() {
    let up = Upstream::start("app").await;
    let p = TestProxy::start(
        "entryPoints:\n  web:\n    address: \"127.0.0.1:0\"\n    gantry:\n      headerReadTimeout: 1s\n",
    );
    p.set_json(route("PathPrefix(`/`)", &[up.url()]));
    let web = p.addr("web");
    // A normal client is served.
    assert_eq!(get(web, "app.test", "/").await.server(), "app");

    // One byte per second of a request head that would take 40 s to send.
    let head = b"GET / HTTP/1.1\r\nHost: app.test\r\nX-Slow: aaaaaaaaaa\r\n\r\n";
    let mut s = TcpStream::connect(web).await.unwrap();
    let started = Instant::now();
    let mut closed = false;
    for b in head {
        if s.write_all(&[*b]).await.is_err() {
            closed = true;
            break;
        }
        // Closed by the proxy (EOF or reset) while we trickle?
        let mut buf = [0u8; 512];
        match tokio::time::timeout(Duration::from_secs(1), s.read(&mut buf)).await {
            Err(_) => {}
            Ok(Ok(0)) | Ok(Err(_)) => {
                closed = true;
                break;
            }
            Ok(Ok(n)) => {
                // Some servers say 408 first; then they must close.
                let text = String::from_utf8_lossy(&buf[..n]).to_string();
                assert!(
                    text.starts_with("HTTP/1.1 408"),
                    "unexpected answer: {text}"
                );
            }
        }
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "still open after 15 s"
        );
    }
    assert!(
        closed,
        "the slow client sent its whole head and was never cut off"
    );
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "closed only after {:?}",
        started.elapsed()
    );
    assert_eq!(up.hits(), 1, "the slow request never reached the upstream");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_connections_and_slow_tls_handshakes_are_closed() {
    let p = TestProxy::start(
        "entryPoints:
  web:
    address: \"127.0.0.1:0\"
    gantry:
      headerReadTimeout: 1s
  websecure:
    address: \"127.0.0.1:0\"
    http:
      tls: {}
    gantry:
      headerReadTimeout: 1s
",
    );
    for ep in ["web", "websecure"] {
        // Connect and send nothing.
        let mut s = TcpStream::connect(p.addr(ep)).await.unwrap();
        let r = read_until_closed(&mut s, Duration::from_secs(10)).await;
        assert!(
            r.is_ok(),
            "{ep}: a connection that sends nothing is still open after 10 s"
        );
        // Send a little of something (an HTTP/2 preface's start, a TLS record header), then stall.
        let mut s = TcpStream::connect(p.addr(ep)).await.unwrap();
        s.write_all(if ep == "web" {
            b"PRI * HT"
        } else {
            b"\x16\x03\x01\x02"
        })
        .await
        .unwrap();
        let r = read_until_closed(&mut s, Duration::from_secs(10)).await;
        assert!(
            r.is_ok(),
            "{ep}: a stalled connection is still open after 10 s"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_keep_alive_connections_are_closed_after_the_idle_timeout() {
    let up = Upstream::start("app").await;
    let p = TestProxy::start(
        "entryPoints:
  web:
    address: \"127.0.0.1:0\"
    transport:
      respondingTimeouts:
        idleTimeout: 1s
    gantry:
      headerReadTimeout: 60s
",
    );
    p.set_json(route("PathPrefix(`/`)", &[up.url()]));
    let web = p.addr("web");

    // HTTP/1.1 keep-alive: a request, then silence.
    let mut s = TcpStream::connect(web).await.unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: app.test\r\n\r\n")
        .await
        .unwrap();
    let started = Instant::now();
    let r = read_until_closed(&mut s, Duration::from_secs(15)).await;
    let text = String::from_utf8_lossy(r.as_ref().unwrap_or_else(|e| e)).to_string();
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(
        r.is_ok(),
        "an idle keep-alive connection is still open after 15 s"
    );
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );

    // HTTP/2 (h2c): the connection is closed (GOAWAY) once idle.
    let tcp = TcpStream::connect(web).await.unwrap();
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp))
            .await
            .unwrap();
    let conn = tokio::spawn(conn);
    let r = sender
        .send_request(
            http::Request::get("http://app.test/")
                .body(Full::new(Bytes::new()))
                .unwrap(),
        )
        .await
        .unwrap();
    read_resp(r).await.unwrap();
    tokio::time::timeout(Duration::from_secs(15), conn)
        .await
        .expect("an idle HTTP/2 connection is still open after 15 s")
        .unwrap()
        .unwrap();

    // A request slower than the idle timeout is not cut: idle means no request in progress.
    let r = get(web, "app.test", "/?delay_ms=2500").await;
    assert_eq!(r.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_request_heads_get_431() {
    let up = Upstream::start("app").await;
    let p = TestProxy::start(
        "entryPoints:\n  web:\n    address: \"127.0.0.1:0\"\n    http:\n      maxHeaderBytes: 16384\n",
    );
    p.set_json(route("PathPrefix(`/`)", &[up.url()]));
    let web = p.addr("web");
    let ok = send(
        web,
        req("GET", "app.test", "/")
            .header("x-big", "a".repeat(4000))
            .body(Full::new(Bytes::new()))
            .unwrap(),
    )
    .await;
    assert_eq!(ok.status, 200);
    let mut s = TcpStream::connect(web).await.unwrap();
    let head = format!(
        "GET / HTTP/1.1\r\nHost: app.test\r\nX-Big: {}\r\n\r\n",
        "a".repeat(100_000)
    );
    let _ = s.write_all(head.as_bytes()).await;
    let r = read_until_closed(&mut s, Duration::from_secs(10)).await;
    let text = String::from_utf8_lossy(r.as_ref().unwrap_or_else(|e| e)).to_string();
    assert!(text.starts_with("HTTP/1.1 431"), "{text}");
    assert_eq!(up.hits(), 1);
}

/// Opens a connection, makes one request on it and keeps it open.
async fn served_and_held(web: std::net::SocketAddr, path: &str) -> TcpStream {
    let mut s = TcpStream::connect(web).await.unwrap();
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: app.test\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut buf = [0u8; 4096];
    let n = tokio::time::timeout(EXCHANGE, s.read(&mut buf))
        .await
        .unwrap_or_else(|_| panic!("{path}: not served within {EXCHANGE:?}"))
        .unwrap();
    assert!(buf[..n].starts_with(b"HTTP/1.1 200"), "{path}");
    s
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_beyond_max_connections_wait() {
    let up = Upstream::start("app").await;
    let p = TestProxy::start(
        "entryPoints:\n  web:\n    address: \"127.0.0.1:0\"\n    gantry:\n      maxConnections: 2\n",
    );
    p.set_json(route("PathPrefix(`/`)", &[up.url()]));
    let web = p.addr("web");
    // Two keep-alive connections served and kept open.
    let mut held = vec![
        served_and_held(web, "/1").await,
        served_and_held(web, "/2").await,
    ];
    // A third waits: no answer while the two are open (a negative check, so it has to wait a
    // bounded time to see that nothing happens)...
    let third = tokio::spawn(async move { get(web, "app.test", "/third").await });
    tokio::time::sleep(Duration::from_millis(1500)).await;
    if third.is_finished() {
        let r = third.await.unwrap();
        panic!(
            "a third connection was served beyond maxConnections: 2: {} {}",
            r.status,
            r.text()
        );
    }
    assert_eq!(up.hits(), 2);
    // ...and is served as soon as one closes.
    drop(held.pop());
    let r = tokio::time::timeout(EXCHANGE, third)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(r.json()["path"], "/third");
    // Below the limit every new connection is served at once, whichever worker's socket
    // (SO_REUSEPORT) the kernel queues it on.
    for i in 0..8 {
        held.push(served_and_held(web, &format!("/round/{i}")).await);
        held.remove(0);
    }
}

/// A listener whose accept queue is full: connection attempts hang (their SYNs are dropped).
fn blackhole() -> (
    std::net::SocketAddr,
    Vec<std::net::TcpStream>,
    socket2::Socket,
) {
    use socket2::{Domain, Socket, Type};
    let sock = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
    sock.bind(
        &"127.0.0.1:0"
            .parse::<std::net::SocketAddr>()
            .unwrap()
            .into(),
    )
    .unwrap();
    sock.listen(0).unwrap();
    let addr = sock.local_addr().unwrap().as_socket().unwrap();
    let mut filler = Vec::new();
    for _ in 0..16 {
        match std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(300)) {
            Ok(s) => filler.push(s),
            Err(_) => return (addr, filler, sock),
        }
    }
    panic!("could not fill the accept queue of a listen(0) socket");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_connect_timeout_is_504() {
    let (dead, _filler, _sock) = blackhole();
    let p = TestProxy::start(WEB_ONLY);
    p.set_json(serde_json::json!({"http": {
        "routers": {"r": {"rule": "PathPrefix(`/`)", "service": "s"}},
        "services": {"s": {"loadBalancer": {"servers": [{"url": format!("http://{dead}")}], "serversTransport": "t"}}},
        "serversTransports": {"t": {"forwardingTimeouts": {"dialTimeout": "500ms"}}},
    }}));
    let started = Instant::now();
    let r = get(p.addr("web"), "app.test", "/").await;
    assert!(started.elapsed() < Duration::from_secs(10));
    // Traefik answers 504 for any timeout towards the upstream, dial timeouts included.
    assert_eq!(r.status, 504, "{}", r.text());
    assert!(r.text().contains("did not answer in time"), "{}", r.text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_websockets_are_closed_with_1001() {
    let ws_up = WsUpstream::start().await;
    let p = TestProxy::start(
        "entryPoints:\n  web:\n    address: \"127.0.0.1:0\"\n    gantry:\n      websocketIdleTimeout: 1s\n",
    );
    p.set_json(route("PathPrefix(`/`)", &[ws_up.url()]));
    let mut ws = ws_connect(p.addr("web"), "chat.test", "/ws").await;
    ws_echo(&mut ws, "hi").await;
    let started = Instant::now();
    let frame = tokio::time::timeout(Duration::from_secs(15), async {
        loop {
            match ws.next().await {
                Some(Ok(Message::Close(f))) => return f,
                Some(Ok(_)) => continue,
                other => panic!("expected a close frame, got {other:?}"),
            }
        }
    })
    .await
    .expect("an idle tunnel is still open after 15 s");
    assert_eq!(frame.map(|f| u16::from(f.code)), Some(1001));
    assert!(started.elapsed() >= Duration::from_millis(900));
    eventually("the upstream to see the close too", LONG, || async {
        (!ws_up.state.closes.lock().unwrap().is_empty()).then_some(())
    })
    .await;
    assert_eq!(p.proxy().shared().tunnels.open(), 0);
}

/// A small deterministic PRNG (xorshift) for the garbage inputs.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_input_never_panics_and_service_continues() {
    let up = Upstream::start("app").await;
    let ws_up = WsUpstream::start().await;
    let p = TestProxy::start(
        "entryPoints:
  web:
    address: \"127.0.0.1:0\"
    forwardedHeaders:
      insecure: true
    gantry:
      headerReadTimeout: 2s
      # A tunnel left mid-frame by the garbage below is reaped.
      websocketIdleTimeout: 2s
  websecure:
    address: \"127.0.0.1:0\"
    http:
      tls: {}
    gantry:
      headerReadTimeout: 2s
",
    );
    p.set_json(serde_json::json!({"http": {
        "routers": {
            "app": {"rule": "PathPrefix(`/`)", "service": "sticky"},
            "ws": {"rule": "PathPrefix(`/ws`)", "service": "ws"},
        },
        "services": {
            "sticky": {"loadBalancer": {"servers": [{"url": up.url()}], "sticky": {"cookie": {}}}},
            "ws": {"loadBalancer": {"servers": [{"url": ws_up.url()}]}},
        },
    }}));
    let mut inputs: Vec<Vec<u8>> = [
        &b"\x00\x01\x02garbage\r\n\r\n"[..],
        b"GET / HTTP/1.1\r\nHost: \xff\xfe\r\n\r\n",
        b"GET http://evil.test/ HTTP/1.1\r\nHost: app.test\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: [::1\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a.test:99999\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a:b:c:d\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: \r\n\r\n",
        b"GET / HTTP/1.0\r\n\r\n",
        b"CONNECT app.test:443 HTTP/1.1\r\nHost: app.test:443\r\n\r\n",
        b"OPTIONS * HTTP/1.1\r\nHost: app.test\r\n\r\n",
        b"GET /%zz/../..//\x7f HTTP/1.1\r\nHost: app.test\r\n\r\n",
        b"GET /\xc3\x28 HTTP/1.1\r\nHost: app.test\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: app.test\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: app.test\r\nTransfer-Encoding: chunked\r\n\r\nzzz\r\n",
        b"POST / HTTP/1.1\r\nHost: app.test\r\nContent-Length: -1\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: app.test\r\nContent-Length: 99999999999999999999\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: app.test\r\nX-Forwarded-For: \xff\xfe\r\nX-Forwarded-Proto: \xff\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: app.test\r\nCookie: \xff=\xfe; ;;=; _x\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: app.test\r\nConnection: \xff, keep-alive, , upgrade\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: app.test\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
        b"GET /ws HTTP/1.1\r\nHost: app.test\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
        b"GET /ws HTTP/1.1\r\nHost: app.test\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n\x89\xff\xff\xff\xff\xff\xff\xff\xff\xff",
        b"GET /.well-known/acme-challenge/../../etc/passwd HTTP/1.1\r\nHost: app.test\r\n\r\n",
        b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x04\x08\x00\x00\x00\x00\x00\xff\xff\xff\xff",
        b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\xff\xff\xff\x01\x05\x00\x00\x00\x01garbage",
    ]
    .iter()
    .map(|b| b.to_vec())
    .collect();
    inputs.push(
        format!(
            "GET /{} HTTP/1.1\r\nHost: app.test\r\n\r\n",
            "a".repeat(70_000)
        )
        .into_bytes(),
    );
    inputs.push(
        format!(
            "GET / HTTP/1.1\r\n{}Host: app.test\r\n\r\n",
            "X-A: b\r\n".repeat(500)
        )
        .into_bytes(),
    );
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    for i in 0..60 {
        let n = (rng.next() % 2000) as usize + 1;
        let mut b = rng.bytes(n);
        if i % 2 == 0 {
            // Half start like a request, to get past the first checks.
            let mut head = b"GET / HTTP/1.1\r\nHost: app.test\r\n".to_vec();
            head.append(&mut b);
            b = head;
        }
        inputs.push(b);
    }

    let web = p.addr("web");
    let mut tasks = Vec::new();
    for input in inputs.clone() {
        tasks.push(tokio::spawn(async move {
            let mut s = TcpStream::connect(web).await.unwrap();
            let _ = s.write_all(&input).await;
            let _ = read_until_closed(&mut s, Duration::from_secs(20)).await;
        }));
    }
    // The same garbage (and truncated ClientHellos) on the TLS entrypoint.
    let tls = p.addr("websecure");
    for input in inputs.iter().take(40).cloned().chain([
        b"\x16\x03\x01\x00\x05\x01\x00\x00\x01\x00".to_vec(),
        b"\x16\x03\x03\xff\xff".to_vec(),
    ]) {
        tasks.push(tokio::spawn(async move {
            let mut s = TcpStream::connect(tls).await.unwrap();
            let _ = s.write_all(&input).await;
            let _ = read_until_closed(&mut s, Duration::from_secs(20)).await;
        }));
    }
    for t in tasks {
        tokio::time::timeout(Duration::from_secs(60), t)
            .await
            .unwrap()
            .unwrap();
    }
    assert_eq!(get(web, "app.test", "/after").await.server(), "app");
    assert_eq!(worker_panics(), 0, "a proxy thread panicked:\n{}", logs());
}

/// `respondingTimeouts.readTimeout`: a request body trickled slower than the limit is cut off
/// (the connection ends within the limit plus margin) and the upstream never gets a whole body,
/// while a prompt upload on the same entrypoint passes. `writeTimeout`: a response body that is
/// still streaming at the limit is aborted. `keepAliveMaxTime`: a keep-alive connection older
/// than the limit is told `Connection: close` and closed; an HTTP/2 one gets a GOAWAY.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_write_timeouts_and_keep_alive_max_time() {
    let up = Upstream::start("app").await;
    let p = TestProxy::start(
        "entryPoints:
  web:
    address: \"127.0.0.1:0\"
    transport:
      respondingTimeouts:
        readTimeout: 1s
        writeTimeout: 2s
      keepAliveMaxTime: 2s
    gantry:
      headerReadTimeout: 60s
",
    );
    p.set_json(route("PathPrefix(`/`)", &[up.url()]));
    let web = p.addr("web");

    // A prompt upload passes.
    let body = pattern(64 * 1024);
    let r = send(
        web,
        req("POST", "app.test", "/upload")
            .body(Full::new(Bytes::from(body.clone())))
            .unwrap(),
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["body_len"], body.len());

    // A body announced as 100 bytes, of which 10 arrive, then nothing.
    let hits = up.hits();
    let mut s = TcpStream::connect(web).await.unwrap();
    s.write_all(b"POST /slow HTTP/1.1\r\nHost: app.test\r\nContent-Length: 100\r\n\r\n0123456789")
        .await
        .unwrap();
    let started = Instant::now();
    let r = read_until_closed(&mut s, Duration::from_secs(20)).await;
    let text = String::from_utf8_lossy(r.as_ref().unwrap_or_else(|e| e)).to_string();
    assert!(
        r.is_ok(),
        "a trickled body still holds the connection after 20 s: {text}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "{:?}",
        started.elapsed()
    );
    assert!(!text.starts_with("HTTP/1.1 200"), "{text}");
    // The upstream may have started the request, but never answered one with the whole body.
    if up.hits() > hits {
        assert!(!text.contains("\"body_len\":100"), "{text}");
    }

    // writeTimeout: `/trickle` sends its first chunk, then waits (never released here).
    let mut s = TcpStream::connect(web).await.unwrap();
    s.write_all(b"GET /trickle HTTP/1.1\r\nHost: app.test\r\n\r\n")
        .await
        .unwrap();
    let started = Instant::now();
    let r = read_until_closed(&mut s, Duration::from_secs(20)).await;
    let text = String::from_utf8_lossy(r.as_ref().unwrap_or_else(|e| e)).to_string();
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(text.contains("first"), "{text}");
    assert!(
        r.is_ok(),
        "a response still streaming after writeTimeout was not cut: {text}"
    );
    assert!(!text.contains("second"), "{text}");
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "{:?}",
        started.elapsed()
    );

    // keepAliveMaxTime over HTTP/1.1: requests on one connection until the proxy says close,
    // or closes the connection between two requests (both happen once it is 2 s old).
    let mut s = TcpStream::connect(web).await.unwrap();
    let started = Instant::now();
    let ended = loop {
        s.write_all(b"GET /ka HTTP/1.1\r\nHost: app.test\r\n\r\n")
            .await
            .unwrap();
        let mut buf = vec![0u8; 8192];
        let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut buf))
            .await
            .expect("no answer within 10 s")
            .unwrap();
        if n == 0 {
            break started.elapsed();
        }
        let head = String::from_utf8_lossy(&buf[..n]).to_ascii_lowercase();
        assert!(head.starts_with("http/1.1 200"), "{head}");
        if head.contains("connection: close") {
            assert!(
                read_until_closed(&mut s, Duration::from_secs(10))
                    .await
                    .is_ok(),
                "still open after Connection: close"
            );
            break started.elapsed();
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "never told to close"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(ended >= Duration::from_millis(1900), "{ended:?}");

    // keepAliveMaxTime over HTTP/2 (h2c): the connection ends (GOAWAY) although it is in use.
    let tcp = TcpStream::connect(web).await.unwrap();
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp))
            .await
            .unwrap();
    let conn = tokio::spawn(conn);
    let r = sender
        .send_request(
            http::Request::get("http://app.test/")
                .body(Full::new(Bytes::new()))
                .unwrap(),
        )
        .await
        .unwrap();
    read_resp(r).await.unwrap();
    tokio::time::timeout(Duration::from_secs(15), conn)
        .await
        .expect("an HTTP/2 connection outlived keepAliveMaxTime by 13 s")
        .unwrap()
        .unwrap();
}
