//! Point 7, hot reload without loss, through the real file provider (a watched temporary file):
//! a WebSocket stays open and echoing across 50 reloads, an in-flight request finishes on the
//! snapshot it started on, and an invalid file is rejected (logged, counted) while the previous
//! configuration keeps serving.

use std::path::Path;
use std::sync::atomic::Ordering;
use std::time::Duration;

use gantry_proxy::config;
use gantry_proxy::config::static_config::FileProvider;
use tokio_util::sync::CancellationToken;

use crate::support::*;

/// Replaces `path` atomically (write a sibling, rename), as editors and config managers do.
fn replace_file(path: &Path, text: &str) {
    let tmp = path.with_extension("yml.tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// A proxy whose static file points `providers.file` at `dynamic.yml` (watched), loaded and
/// watched by the real file provider. Returns the stop token of the watch.
fn start_with_file_provider(static_extra: &str, dynamic: &str) -> (TestProxy, CancellationToken) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("dynamic.yml"), dynamic).unwrap();
    let static_yaml = format!(
        "entryPoints:\n  web:\n    address: \"127.0.0.1:0\"\n{static_extra}providers:\n  file:\n    filename: dynamic.yml\n    watch: true\n"
    );
    let p = TestProxy::start_in(dir, &static_yaml);
    let file: FileProvider = config::load_static(&p.path("static.yml"))
        .unwrap()
        .providers
        .file
        .unwrap();
    assert!(
        file.filename.as_ref().unwrap().is_absolute(),
        "made absolute by load_static"
    );
    gantry_proxy::provider::load(p.proxy(), &file).unwrap();
    let stop = CancellationToken::new();
    gantry_proxy::provider::spawn_watch(p.proxy(), file, Duration::from_millis(50), stop.clone())
        .unwrap();
    (p, stop)
}

fn dynamic_with_ws(ws_url: &str, app_url: &str, generation: usize) -> String {
    format!(
        "http:
  routers:
    chat:
      rule: \"Host(`chat.test`) && PathPrefix(`/websocket`)\"
      service: chat
    gen:
      rule: \"PathPrefix(`/gen{generation}`)\"
      service: app
  services:
    chat:
      loadBalancer:
        servers:
          - url: {ws_url}
    app:
      loadBalancer:
        servers:
          - url: {app_url}
"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_stays_open_across_50_file_reloads() {
    let ws_up = WsUpstream::start().await;
    let app = Upstream::start("app").await;
    let (p, stop) = start_with_file_provider("", &dynamic_with_ws(&ws_up.url(), &app.url(), 0));
    let web = p.addr("web");
    let mut ws = ws_connect(web, "chat.test", "/websocket").await;
    ws_echo(&mut ws, "before any reload").await;

    let file = p.path("dynamic.yml");
    for i in 1..=50 {
        let before = p.proxy().snapshot().generation;
        replace_file(&file, &dynamic_with_ws(&ws_up.url(), &app.url(), i));
        eventually(&format!("reload {i} to be applied"), LONG, || async {
            (p.proxy().snapshot().generation > before).then_some(())
        })
        .await;
        // The new route serves, the previous generation's is gone, and the tunnel still echoes.
        assert_eq!(
            get(web, "app.test", &format!("/gen{i}")).await.server(),
            "app"
        );
        assert_eq!(
            get(web, "app.test", &format!("/gen{}", i - 1)).await.status,
            404
        );
        ws_echo(&mut ws, &format!("after reload {i}")).await;
    }
    assert_eq!(
        ws_up.state.connections.load(Ordering::SeqCst),
        1,
        "the WebSocket was never re-established"
    );
    assert!(
        ws_up.state.closes.lock().unwrap().is_empty(),
        "nothing closed the tunnel"
    );
    assert_eq!(p.proxy().shared().tunnels.open(), 1);
    ws_echo(&mut ws, "still open").await;
    stop.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_flight_requests_finish_on_the_snapshot_they_started_on() {
    let old = Upstream::start("old").await;
    let new = Upstream::start("new").await;
    let p = TestProxy::start(WEB_ONLY);
    p.set_json(route("PathPrefix(`/hold`)", &[old.url()]));
    let web = p.addr("web");
    let held = tokio::spawn(async move { get(web, "app.test", "/hold").await });
    eventually("the request to reach the old upstream", LONG, || async {
        (old.state.in_flight.load(Ordering::SeqCst) == 1).then_some(())
    })
    .await;

    // Reload: the route now goes elsewhere, and `/hold` no longer exists.
    p.set_json(route("PathPrefix(`/other`)", &[new.url()]));
    assert_eq!(get(web, "app.test", "/hold").await.status, 404);
    assert_eq!(get(web, "app.test", "/other").await.server(), "new");

    old.state.release.add_permits(1);
    let r = tokio::time::timeout(EXCHANGE, held).await.unwrap().unwrap();
    assert_eq!(
        r.server(),
        "old",
        "the in-flight request completed on its own snapshot"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_dynamic_file_is_rejected_while_traffic_continues() {
    let app = Upstream::start("app").await;
    let other = Upstream::start("other").await;
    let valid = |url: &str| {
        format!(
            "http:
  routers:
    web:
      rule: \"PathPrefix(`/`)\"
      service: app
  services:
    app:
      loadBalancer:
        servers:
          - url: {url}
"
        )
    };
    let (p, stop) = start_with_file_provider(
        "  metrics:\n    address: \"127.0.0.1:0\"\nmetrics:\n  prometheus:\n    entryPoint: metrics\n",
        &valid(&app.url()),
    );
    let web = p.addr("web");
    assert_eq!(get(web, "app.test", "/").await.server(), "app");
    let file = p.path("dynamic.yml");
    let failures = |text: &str| metric(text, "gantry_config_reloads_failure_total").unwrap();
    let start_failures = failures(&p.metrics("metrics").await);
    let generation = p.proxy().snapshot().generation;

    // 1. A key that does not exist (line 6): a parse error naming key, file and line.
    replace_file(
        &file,
        &format!(
            "http:\n  routers:\n    web:\n      rule: \"PathPrefix(`/`)\"\n      service: app\n      rulee: typo\n  services:\n    app:\n      loadBalancer:\n        servers:\n          - url: {}\n",
            other.url()
        ),
    );
    let wanted = format!("{}:6:", file.display());
    eventually("the parse error to be logged", LONG, || async {
        let l = logs();
        l.lines()
            .any(|line| {
                line.contains("configuration rejected")
                    && line.contains(&wanted)
                    && line.contains("rulee")
            })
            .then_some(())
    })
    .await;
    let m = eventually("the failure to be counted", LONG, || async {
        let m = p.metrics("metrics").await;
        (failures(&m) >= start_failures + 1.0).then_some(m)
    })
    .await;
    assert!(metric(&m, "gantry_config_last_reload_failure").unwrap() > 0.0);
    assert_eq!(
        p.proxy().snapshot().generation,
        generation,
        "nothing was swapped in"
    );
    for _ in 0..5 {
        assert_eq!(
            get(web, "app.test", "/").await.server(),
            "app",
            "the old config serves"
        );
    }

    // 2. Parses, but a router names a service that does not exist: refused at compile time.
    replace_file(
        &file,
        "http:\n  routers:\n    web:\n      rule: \"PathPrefix(`/`)\"\n      service: missing\n",
    );
    eventually("the compile error to be logged", LONG, || async {
        let l = logs();
        l.lines()
            .any(|line| {
                line.contains("configuration rejected")
                    && line.contains("service `missing` does not exist")
                    && line.contains(&file.display().to_string())
            })
            .then_some(())
    })
    .await;
    eventually("the second failure to be counted", LONG, || async {
        (failures(&p.metrics("metrics").await) >= start_failures + 2.0).then_some(())
    })
    .await;
    assert_eq!(
        get(web, "app.test", "/").await.server(),
        "app",
        "the old config serves"
    );

    // 3. A good file again: applied.
    replace_file(&file, &valid(&other.url()));
    eventually("the fixed file to be applied", LONG, || async {
        (get(web, "app.test", "/").await.server() == "other").then_some(())
    })
    .await;
    assert!(p.proxy().snapshot().generation > generation);
    stop.cancel();
}
