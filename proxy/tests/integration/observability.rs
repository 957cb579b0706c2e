//! Point 10, observability: the JSON access log with Traefik's field names, Prometheus metrics, the
//! read-only API and `/ping`.

use serde_json::{Value, json};

use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_access_log_has_traefiks_fields() {
    let up = Upstream::start("app").await;
    let dir = tempfile::tempdir().unwrap();
    let log_path = dir.path().join("access.log");
    let p = TestProxy::start_in(
        dir,
        &format!(
            "entryPoints:\n  web:\n    address: \"127.0.0.1:0\"\naccessLog:\n  filePath: {}\n  format: json\n",
            log_path.display()
        ),
    );
    p.set_json(json!({"http": {
        "routers": {
            "app": {"rule": "Host(`app.test`)", "service": "app"},
            "quiet": {"rule": "Host(`quiet.test`)", "service": "app", "observability": {"accessLogs": false}},
        },
        "services": {"app": {"loadBalancer": {"servers": [{"url": up.url()}]}}},
    }}));
    let web = p.addr("web");
    assert_eq!(get(web, "quiet.test", "/not-logged").await.status, 200);
    let r = get(web, "App.Test:81", "/some/path?q=1").await;
    let size = r.body.len() as u64;
    assert_eq!(get(web, "nothing.test", "/missing").await.status, 404);
    // A streamed (chunked) answer: the size logged is what was sent.
    up.state.release.add_permits(1);
    let streamed = get(web, "app.test", "/trickle").await;
    assert_eq!(streamed.text(), "first\nsecond\n");
    assert_eq!(streamed.header("content-length"), None, "sent chunked");

    let lines: Vec<Value> = eventually("three access log lines", LONG, || async {
        let text = std::fs::read_to_string(&log_path).unwrap_or_default();
        let lines: Vec<Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
            .collect();
        (lines.len() >= 3).then_some(lines)
    })
    .await;
    assert_eq!(
        lines.len(),
        3,
        "the router with accessLogs: false is not logged: {lines:#?}"
    );
    let e = &lines[0];
    assert_eq!(e["RouterName"], "app@file");
    assert_eq!(e["ServiceName"], "app@file");
    assert_eq!(e["ServiceAddr"], up.addr.to_string());
    assert_eq!(e["EntryPointName"], "web");
    assert_eq!(e["ClientHost"], "127.0.0.1");
    assert!(e["ClientAddr"].as_str().unwrap().starts_with("127.0.0.1:"));
    assert_eq!(e["RequestMethod"], "GET");
    assert_eq!(e["RequestPath"], "/some/path?q=1");
    assert_eq!(e["RequestProtocol"], "HTTP/1.1");
    assert_eq!(e["RequestHost"], "App.Test");
    assert_eq!(e["RequestScheme"], "http");
    assert_eq!(e["DownstreamStatus"], 200);
    assert_eq!(e["DownstreamContentSize"], size);
    assert_eq!(e["OriginStatus"], 200);
    assert!(e["OriginDuration"].as_u64().unwrap() > 0);
    assert!(e["Duration"].as_u64().unwrap() >= e["OriginDuration"].as_u64().unwrap());
    let start = e["StartUTC"].as_str().unwrap();
    assert!(
        start.len() == 30 && start.ends_with('Z') && start.as_bytes()[10] == b'T',
        "RFC 3339 with nanoseconds: {start}"
    );
    let miss = &lines[1];
    assert_eq!(miss["DownstreamStatus"], 404);
    assert_eq!(miss["RouterName"], "");
    assert!(miss.get("OriginStatus").is_none());
    let chunked = &lines[2];
    assert_eq!(chunked["RequestPath"], "/trickle");
    assert_eq!(chunked["DownstreamContentSize"], 13);
}

/// `accessLog.filters` and `accessLog.fields` through a running proxy: only the 404 and the slow
/// request are written (any filter matching keeps a line), with the client's address dropped and
/// the host redacted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_log_filters_and_fields_apply() {
    let up = Upstream::start("app").await;
    let dir = tempfile::tempdir().unwrap();
    let log_path = dir.path().join("access.log");
    let p = TestProxy::start_in(
        dir,
        &format!(
            "entryPoints:\n  web:\n    address: \"127.0.0.1:0\"\naccessLog:\n  filePath: {}\n  \
             filters:\n    statusCodes: ['404']\n    minDuration: 1s\n  fields:\n    \
             names:\n      ClientAddr: drop\n      ClientHost: drop\n      ClientPort: drop\n      \
             RequestHost: redact\n",
            log_path.display()
        ),
    );
    p.set_json(json!({"http": {
        "routers": {"app": {"rule": "Host(`app.test`)", "service": "app"}},
        "services": {"app": {"loadBalancer": {"servers": [{"url": up.url()}]}}},
    }}));
    let web = p.addr("web");
    assert_eq!(get(web, "app.test", "/fast").await.status, 200);
    assert_eq!(get(web, "nothing.test", "/missing").await.status, 404);
    // The upstream holds `/trickle` until released: over minDuration (1 s; a loaded machine
    // must not make `/fast` that slow).
    let slow = tokio::spawn(async move { get(web, "app.test", "/trickle").await });
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    up.state.release.add_permits(1);
    assert_eq!(slow.await.unwrap().status, 200);

    let lines: Vec<Value> = eventually("two access log lines", LONG, || async {
        let text = std::fs::read_to_string(&log_path).unwrap_or_default();
        let lines: Vec<Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
            .collect();
        (lines.len() >= 2).then_some(lines)
    })
    .await;
    let paths: Vec<_> = lines.iter().map(|l| l["RequestPath"].clone()).collect();
    assert_eq!(paths, [json!("/missing"), json!("/trickle")], "{lines:#?}");
    for l in &lines {
        assert!(
            l.get("ClientAddr").is_none() && l.get("ClientHost").is_none(),
            "{l}"
        );
        assert_eq!(l["RequestHost"], "REDACTED", "{l}");
        assert_eq!(l["level"], "info", "{l}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_metrics_named_like_traefiks() {
    let ca = Ca::new("metrics CA");
    let up = Upstream::start("app").await;
    let p = TestProxy::start(
        "entryPoints:
  web:
    address: \"127.0.0.1:0\"
  metrics:
    address: \"127.0.0.1:0\"
metrics:
  prometheus:
    entryPoint: metrics
",
    );
    let leaf = ca.issue(&["metrics.test"]);
    let (cert, key) = leaf.write(p.dir.path(), "m");
    p.set(&format!(
        "http:
  routers:
    app:
      rule: \"Host(`app.test`)\"
      service: app
      entryPoints: [web]
  services:
    app:
      loadBalancer:
        servers:
          - url: {}
tls:
  certificates:
    - certFile: {cert}
      keyFile: {key}
",
        up.url()
    ));
    let web = p.addr("web");
    for _ in 0..3 {
        assert_eq!(get(web, "app.test", "/").await.status, 200);
    }
    assert_eq!(get(web, "app.test", "/?status=500").await.status, 500);
    // One connection held open while scraping.
    let _open = tokio::net::TcpStream::connect(web).await.unwrap();
    let m = eventually("the open connection to be counted", LONG, || async {
        let m = p.metrics("metrics").await;
        (metric(
            &m,
            "gantry_open_connections{entrypoint=\"web\",protocol=\"TCP\"}",
        ) == Some(1.0))
        .then_some(m)
    })
    .await;
    let ok = "code=\"200\",method=\"GET\",protocol=\"http\"";
    let err = "code=\"500\",method=\"GET\",protocol=\"http\"";
    for (name, want) in [
        (
            format!("gantry_entrypoint_requests_total{{{ok},entrypoint=\"web\"}}"),
            3.0,
        ),
        (
            format!("gantry_entrypoint_requests_total{{{err},entrypoint=\"web\"}}"),
            1.0,
        ),
        (
            format!(
                "gantry_router_requests_total{{{ok},router=\"app@file\",service=\"app@file\"}}"
            ),
            3.0,
        ),
        (
            format!("gantry_service_requests_total{{{ok},service=\"app@file\"}}"),
            3.0,
        ),
        (
            format!("gantry_service_request_duration_seconds_count{{{ok},service=\"app@file\"}}"),
            3.0,
        ),
        (
            format!(
                "gantry_service_request_duration_seconds_bucket{{{ok},service=\"app@file\",le=\"+Inf\"}}"
            ),
            3.0,
        ),
        (
            format!(
                "gantry_service_server_up{{service=\"app@file\",url=\"{}\"}}",
                up.url()
            ),
            1.0,
        ),
        ("gantry_config_reloads_total".to_owned(), 1.0),
        ("gantry_config_reloads_failure_total".to_owned(), 0.0),
        ("gantry_websocket_open".to_owned(), 0.0),
    ] {
        assert_eq!(metric(&m, &name), Some(want), "{name} in\n{m}");
    }
    assert!(metric(&m, "gantry_config_last_reload_success").unwrap() > 1.6e9);
    let not_after = metric(
        &m,
        "gantry_tls_certs_not_after{cn=\"metrics.test\",sans=\"metrics.test\"}",
    )
    .unwrap_or_else(|| panic!("certificate expiry missing:\n{m}"));
    assert!(
        not_after > 4.0e9,
        "rcgen's default not-after is far away: {not_after}"
    );
    for family in ["entrypoint", "router", "service"] {
        assert!(m.contains(&format!("# TYPE gantry_{family}_requests_total counter")));
        assert!(m.contains(&format!(
            "# TYPE gantry_{family}_request_duration_seconds histogram"
        )));
    }
    // The metrics entrypoint's own scrapes are not counted as router traffic.
    assert!(!m.contains("router=\"prometheus@internal\""));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_only_api_and_ping() {
    let up = Upstream::start("app").await;
    let p = TestProxy::start(
        "entryPoints:
  web:
    address: \"127.0.0.1:0\"
  traefik:
    address: \"127.0.0.1:0\"
api:
  insecure: true
ping: {}
",
    );
    p.set_json(json!({"http": {
        "routers": {
            "app": {"rule": "Host(`app.test`)", "service": "app", "priority": 7},
            "docs": {"rule": "Host(`app.test`) && PathPrefix(`/docs`)", "service": "app", "entryPoints": ["web"]},
        },
        "services": {"app": {"loadBalancer": {"servers": [{"url": up.url()}]}}},
    }}));
    let api = p.addr("traefik");
    let r = get(api, "localhost", "/api/http/routers").await;
    assert_eq!(r.status, 200);
    assert_eq!(
        r.header("content-type").as_deref(),
        Some("application/json")
    );
    let routers = r.json();
    let by_name = |n: &str| {
        routers
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["name"] == n)
            .unwrap_or_else(|| panic!("router {n} in {routers:#}"))
            .clone()
    };
    let app = by_name("app@file");
    assert_eq!(app["rule"], "Host(`app.test`)");
    assert_eq!(app["priority"], 7);
    assert_eq!(app["service"], "app@file");
    assert_eq!(app["provider"], "file");
    assert_eq!(app["status"], "enabled");
    assert_eq!(
        app["entryPoints"],
        json!(["web"]),
        "every entrypoint but `traefik`"
    );
    let docs = by_name("docs@file");
    assert_eq!(
        docs["priority"],
        "Host(`app.test`) && PathPrefix(`/docs`)".len()
    );

    let one = get(api, "localhost", "/api/http/routers/docs@file")
        .await
        .json();
    assert_eq!(one["name"], "docs@file");
    assert_eq!(
        get(api, "localhost", "/api/http/routers/nope@file")
            .await
            .status,
        404
    );

    let services = get(api, "localhost", "/api/http/services").await.json();
    let svc = services
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "app@file")
        .unwrap();
    assert_eq!(svc["loadBalancer"]["servers"][0]["url"], up.url());
    assert_eq!(svc["serverStatus"][up.url()], "UP");

    let overview = get(api, "localhost", "/api/overview").await.json();
    assert_eq!(overview["http"]["routers"]["total"], 2);
    assert!(overview["http"]["services"]["total"].as_u64().unwrap() >= 1);
    assert_eq!(overview["providers"], json!(["file"]));
    assert_eq!(overview["generation"], 1);

    let r = get(api, "localhost", "/ping").await;
    assert_eq!((r.status.as_u16(), r.text().as_str()), (200, "OK"));
    // The API is read-only and only on its entrypoint.
    let r = send(
        api,
        req("DELETE", "localhost", "/api/http/routers/app@file")
            .body(http_body_util::Full::new(bytes::Bytes::new()))
            .unwrap(),
    )
    .await;
    assert_eq!(r.status, 405);
    assert_eq!(r.header("allow").as_deref(), Some("GET, HEAD"));
    assert_eq!(
        get(api, "localhost", "/api/http/routers")
            .await
            .json()
            .as_array()
            .unwrap()
            .len(),
        2
    );
    assert_eq!(
        get(p.addr("web"), "localhost", "/api/overview")
            .await
            .status,
        404
    );
}
