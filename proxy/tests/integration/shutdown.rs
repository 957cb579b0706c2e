//! Point 8, shutdown (what SIGTERM triggers: [`gantry_proxy::Proxy::shutdown`]): in-flight requests
//! all complete, new connections are refused, open WebSockets get close code 1001, and `/ping`
//! answers 503 while the proxy still accepts during `requestAcceptGraceTimeout`.

use std::sync::atomic::Ordering;
use std::time::Duration;

use futures_util::StreamExt;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;

use crate::support::*;

const N: usize = 8;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_completes_in_flight_requests_refuses_new_ones_and_closes_websockets_with_1001() {
    let app = Upstream::start("app").await;
    let ws_up = WsUpstream::start().await;
    let mut p = TestProxy::start(
        "entryPoints:\n  web:\n    address: \"127.0.0.1:0\"\n    transport:\n      lifeCycle:\n        graceTimeOut: 30s\n",
    );
    p.set_json(serde_json::json!({"http": {
        "routers": {
            "app": {"rule": "PathPrefix(`/hold`)", "service": "app"},
            "chat": {"rule": "PathPrefix(`/websocket`)", "service": "chat"},
        },
        "services": {
            "app": {"loadBalancer": {"servers": [{"url": app.url()}]}},
            "chat": {"loadBalancer": {"servers": [{"url": ws_up.url()}]}},
        },
    }}));
    let web = p.addr("web");
    let mut ws = ws_connect(web, "chat.test", "/websocket").await;
    ws_echo(&mut ws, "hello").await;

    let mut held = Vec::new();
    for i in 0..N {
        held.push(tokio::spawn(async move {
            get(web, "app.test", &format!("/hold/{i}")).await
        }));
    }
    eventually("all requests to be in flight", LONG, || async {
        (app.state.in_flight.load(Ordering::SeqCst) == N).then_some(())
    })
    .await;

    let proxy = p.take();
    let shutdown = tokio::spawn(proxy.shutdown());

    // New connections are refused while the in-flight requests are still running.
    eventually("new connections to be refused", LONG, || async {
        TcpStream::connect(web).await.is_err().then_some(())
    })
    .await;
    assert_eq!(app.state.in_flight.load(Ordering::SeqCst), N, "still held");
    assert!(
        !shutdown.is_finished(),
        "shutdown waits for in-flight requests"
    );

    app.state.release.add_permits(N);
    for (i, h) in held.into_iter().enumerate() {
        let r = tokio::time::timeout(EXCHANGE, h).await.unwrap().unwrap();
        assert_eq!(r.status, 200, "request {i}: {}", r.text());
        assert_eq!(r.json()["path"], format!("/hold/{i}"));
    }

    // Then the WebSocket gets close 1001 (going away), and so does the upstream.
    let frame = tokio::time::timeout(EXCHANGE, async {
        loop {
            match ws.next().await {
                Some(Ok(Message::Close(f))) => return f,
                Some(Ok(_)) => continue,
                other => panic!("expected a close frame, got {other:?}"),
            }
        }
    })
    .await
    .expect("no close frame");
    assert_eq!(frame.map(|f| u16::from(f.code)), Some(1001));
    tokio::time::timeout(Duration::from_secs(30), shutdown)
        .await
        .expect("shutdown finishes")
        .unwrap();
    eventually("the upstream to see 1001", LONG, || async {
        let c = ws_up.state.closes.lock().unwrap().clone();
        (!c.is_empty()).then_some(c)
    })
    .await
    .iter()
    .for_each(|c| assert_eq!(*c, Some(1001)));
    assert!(TcpStream::connect(web).await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ping_fails_while_draining_during_the_accept_grace() {
    let app = Upstream::start("app").await;
    let mut p = TestProxy::start(
        "entryPoints:
  web:
    address: \"127.0.0.1:0\"
    transport:
      lifeCycle:
        requestAcceptGraceTimeout: 3s
        graceTimeOut: 5s
  traefik:
    address: \"127.0.0.1:0\"
ping: {}
",
    );
    p.set_json(route("PathPrefix(`/`)", &[app.url()]));
    let (web, admin) = (p.addr("web"), p.addr("traefik"));
    let r = get(admin, "localhost", "/ping").await;
    assert_eq!((r.status.as_u16(), r.text().as_str()), (200, "OK"));

    let shutdown = tokio::spawn(p.take().shutdown());
    // During the accept grace: /ping says 503 so load balancers move away, traffic is still served.
    let r = eventually("/ping to fail", LONG, || async {
        let r = get(admin, "localhost", "/ping").await;
        (r.status == 503).then_some(r)
    })
    .await;
    assert_eq!(r.text(), "Terminating\n");
    assert_eq!(get(web, "app.test", "/").await.server(), "app");
    tokio::time::timeout(Duration::from_secs(30), shutdown)
        .await
        .unwrap()
        .unwrap();
    assert!(TcpStream::connect(web).await.is_err());
}
