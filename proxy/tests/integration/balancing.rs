//! Point 3, load balancing: weighted round robin over servers and over services, sticky cookies,
//! active health checks (eject and readmit), passive ejection of a refusing server, and the
//! 502/503/504 answers with bodies that say which.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;

use serde_json::json;

use crate::support::*;

async fn count_servers(
    addr: std::net::SocketAddr,
    n: usize,
    cookie: Option<&str>,
) -> BTreeMap<String, usize> {
    let mut seen = BTreeMap::new();
    for _ in 0..n {
        let mut b = req("GET", "app.test", "/");
        if let Some(c) = cookie {
            b = b.header("cookie", c);
        }
        let r = send(
            addr,
            b.body(http_body_util::Full::new(bytes::Bytes::new()))
                .unwrap(),
        )
        .await;
        *seen.entry(r.server()).or_insert(0) += 1;
    }
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weighted_round_robin_over_servers_and_services() {
    let (a, b, c) = (
        Upstream::start("a").await,
        Upstream::start("b").await,
        Upstream::start("c").await,
    );
    let p = TestProxy::start(WEB_ONLY);
    p.set_json(json!({"http": {
        "routers": {
            "lb": {"rule": "Host(`app.test`)", "service": "lb"},
            "weighted": {"rule": "Host(`split.test`)", "service": "split"},
        },
        "services": {
            "lb": {"loadBalancer": {"servers": [
                {"url": a.url(), "weight": 3},
                {"url": b.url(), "weight": 1},
            ]}},
            "only-b": {"loadBalancer": {"servers": [{"url": b.url()}]}},
            "only-c": {"loadBalancer": {"servers": [{"url": c.url()}]}},
            "split": {"weighted": {"services": [
                {"name": "only-b", "weight": 1},
                {"name": "only-c", "weight": 2},
            ]}},
        },
    }}));
    let web = p.addr("web");
    let seen = count_servers(web, 40, None).await;
    assert_eq!(seen, BTreeMap::from([("a".into(), 30), ("b".into(), 10)]));

    let mut seen = BTreeMap::new();
    for _ in 0..30 {
        *seen
            .entry(get(web, "split.test", "/").await.server())
            .or_insert(0) += 1;
    }
    assert_eq!(seen, BTreeMap::from([("b".into(), 10), ("c".into(), 20)]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sticky_cookie_pins_a_client_to_one_server() {
    let (a, b) = (Upstream::start("a").await, Upstream::start("b").await);
    let p = TestProxy::start(WEB_ONLY);
    p.set_json(json!({"http": {
        "routers": {"r": {"rule": "Host(`app.test`)", "service": "s"}},
        "services": {"s": {"loadBalancer": {
            "servers": servers(&[a.url(), b.url()]),
            "sticky": {"cookie": {"name": "srv", "httpOnly": true, "secure": true, "sameSite": "lax", "maxAge": 60}},
        }}},
    }}));
    let web = p.addr("web");

    // Without the cookie: both servers, and every answer sets the cookie.
    let mut cookies = BTreeMap::new();
    for _ in 0..6 {
        let r = get(web, "app.test", "/").await;
        let set = r
            .header("set-cookie")
            .expect("a Set-Cookie on a request without the cookie");
        assert!(set.starts_with("srv="), "{set}");
        for attr in ["Path=/", "Max-Age=60", "HttpOnly", "Secure", "SameSite=Lax"] {
            assert!(set.contains(attr), "{set} lacks {attr}");
        }
        cookies.insert(r.server(), set.split(';').next().unwrap().to_owned());
    }
    assert_eq!(
        cookies.len(),
        2,
        "without the cookie both servers answer: {cookies:?}"
    );

    // With a server's cookie: always that server, and no new cookie.
    for (server, cookie) in &cookies {
        for _ in 0..10 {
            let r = send(
                web,
                req("GET", "app.test", "/")
                    .header("cookie", format!("other=1; {cookie}"))
                    .body(http_body_util::Full::new(bytes::Bytes::new()))
                    .unwrap(),
            )
            .await;
            assert_eq!(&r.server(), server, "cookie {cookie}");
            assert_eq!(r.header("set-cookie"), None);
        }
    }

    // A cookie naming no server (or a gone one) is ignored: load balanced and re-set.
    let seen = count_servers(web, 6, Some("srv=0123456789abcdef")).await;
    assert_eq!(seen.len(), 2, "{seen:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_check_ejects_a_failing_server_and_readmits_it() {
    let (a, b) = (Upstream::start("a").await, Upstream::start("b").await);
    let p = TestProxy::start(
        "entryPoints:\n  web:\n    address: \"127.0.0.1:0\"\n  metrics:\n    address: \"127.0.0.1:0\"\nmetrics:\n  prometheus:\n    entryPoint: metrics\n",
    );
    p.set_json(json!({"http": {
        "routers": {"r": {"rule": "Host(`app.test`)", "service": "s", "entryPoints": ["web"]}},
        "services": {"s": {"loadBalancer": {
            "servers": servers(&[a.url(), b.url()]),
            "healthCheck": {"path": "/health", "interval": "100ms", "timeout": "2s", "hostname": "health.internal"},
        }}},
    }}));
    let web = p.addr("web");
    let seen = count_servers(web, 4, None).await;
    assert_eq!(seen.len(), 2, "both healthy at first: {seen:?}");

    b.state.health_status.store(500, Ordering::SeqCst);
    let b_url = b.url();
    eventually("b to be reported down", LONG, || async {
        let m = p.metrics("metrics").await;
        (metric(
            &m,
            &format!("gantry_service_server_up{{service=\"s@file\",url=\"{b_url}\"}}"),
        ) == Some(0.0))
        .then_some(())
    })
    .await;
    let b_hits = b.hits();
    let seen = count_servers(web, 10, None).await;
    assert_eq!(
        seen,
        BTreeMap::from([("a".into(), 10)]),
        "b is out of rotation"
    );
    assert_eq!(b.hits(), b_hits);
    let api_status = p.proxy().snapshot().services["s@file"]
        .as_load_balancer()
        .unwrap()
        .servers[1]
        .state
        .available();
    assert!(!api_status);

    b.state.health_status.store(200, Ordering::SeqCst);
    eventually("b to be readmitted", LONG, || async {
        let seen = count_servers(web, 2, None).await;
        (seen.get("b").copied().unwrap_or(0) > 0).then_some(())
    })
    .await;
    let seen = count_servers(web, 10, None).await;
    assert_eq!(seen, BTreeMap::from([("a".into(), 5), ("b".into(), 5)]));
    // The checks used the configured Host.
    assert!(
        b.state
            .health_hosts
            .lock()
            .unwrap()
            .iter()
            .all(|h| h == "health.internal"),
        "{:?}",
        b.state.health_hosts.lock().unwrap()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_check_status_and_all_down_gives_503() {
    let a = Upstream::start("a").await;
    let p = TestProxy::start(WEB_ONLY);
    // `status: 204` demands exactly 204: the upstream's 200 means down.
    p.set_json(json!({"http": {
        "routers": {"r": {"rule": "Host(`app.test`)", "service": "s"}},
        "services": {"s": {"loadBalancer": {
            "servers": servers(&[a.url()]),
            "healthCheck": {"path": "/health", "interval": "100ms", "status": 204},
        }}},
    }}));
    let web = p.addr("web");
    let r = eventually("the only server to be down", LONG, || async {
        let r = get(web, "app.test", "/").await;
        (r.status == 503).then_some(r)
    })
    .await;
    assert_eq!(
        r.text(),
        "503 Service Unavailable: no healthy upstream server\n"
    );
    a.state.health_status.store(204, Ordering::SeqCst);
    eventually("the server to be back", LONG, || async {
        (get(web, "app.test", "/").await.status == 200).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refusing_server_is_ejected_passively() {
    let a = Upstream::start("a").await;
    let dead = refusing_addr();
    let p = TestProxy::start(WEB_ONLY);
    p.set_json(route(
        "Host(`app.test`)",
        &[format!("http://{dead}"), a.url()],
    ));
    let web = p.addr("web");
    let mut failures = 0;
    for _ in 0..20 {
        let r = get(web, "app.test", "/").await;
        if r.status == 502 {
            failures += 1;
            assert!(r.text().contains("refused the connection"), "{}", r.text());
        } else {
            assert_eq!(r.server(), "a");
        }
    }
    assert_eq!(
        failures, 1,
        "one request finds the dead server, which is then skipped"
    );
    assert!(
        logs().contains(&format!("server=http://{dead}")),
        "the ejection is logged"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_are_502_503_504_with_bodies_that_say_which() {
    let a = Upstream::start("a").await;
    let dead = refusing_addr();
    let p = TestProxy::start(WEB_ONLY);
    p.set_json(json!({"http": {
        "routers": {
            "ok": {"rule": "Host(`ok.test`)", "service": "ok"},
            "dead": {"rule": "Host(`dead.test`)", "service": "dead"},
        },
        "services": {
            "ok": {"loadBalancer": {"servers": servers(&[a.url()]), "serversTransport": "quick"}},
            "dead": {"loadBalancer": {"servers": [{"url": format!("http://{dead}")}]}},
        },
        "serversTransports": {"quick": {"forwardingTimeouts": {"responseHeaderTimeout": "500ms"}}},
    }}));
    let web = p.addr("web");

    // The upstream closes the connection without answering: 502.
    let r = get(web, "ok.test", "/?close=1").await;
    assert_eq!(r.status, 502);
    assert_eq!(
        r.text(),
        "502 Bad Gateway: the upstream server closed the connection or sent an invalid response\n"
    );
    // The upstream answers after the response header timeout: 504.
    let r = get(web, "ok.test", "/?delay_ms=5000").await;
    assert_eq!(r.status, 504);
    assert_eq!(
        r.text(),
        "504 Gateway Timeout: the upstream server did not answer in time\n"
    );
    // Still fine for normal requests.
    assert_eq!(get(web, "ok.test", "/").await.server(), "a");

    // Refused: 502 saying so; then the only server is ejected: 503.
    let r = get(web, "dead.test", "/").await;
    assert_eq!(r.status, 502);
    assert_eq!(
        r.text(),
        "502 Bad Gateway: the upstream server refused the connection or could not be reached\n"
    );
    let r = get(web, "dead.test", "/").await;
    assert_eq!(r.status, 503);
    assert_eq!(
        r.text(),
        "503 Service Unavailable: no healthy upstream server\n"
    );
    assert_eq!(
        r.header("content-type").as_deref(),
        Some("text/plain; charset=utf-8")
    );
}
