//! Everything of the cluster for real, against a real k3s: supervision, readiness, the stack
//! (apply, replica set, rollouts), the live Ingress provider routing the chat through Gantry's
//! proxy, the dashboard status and the certificate check. It cannot run on build machines (no
//! k3s, no images): run it as root on a disposable Linux machine or VM, see docs/cluster.md:
//!
//! ```sh
//! GANTRY_K3S_BIN=/usr/local/bin/k3s \
//! GANTRY_K3S_IMAGES=/path/to/airgap-images \   # optional: k3s + mongo + rocket.chat archives
//!   cargo test -p gantry-supervisor --test k3s_real -- --ignored --nocapture
//! ```
#![allow(clippy::unwrap_used)]

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use gantry_proxy::{Proxy, ProxyOptions};
use gantry_supervisor::k3s::{self, StartOptions, certs, readiness};
use gantry_supervisor::kube::install::{Timeouts, install};
use gantry_supervisor::kube::{status, watch};
use gantry_supervisor::manifests::{Pins, StackSecrets, StackSettings, render};
use tokio_util::sync::CancellationToken;

const DOMAIN: &str = "chat.gantry.test";

async fn get(addr: std::net::SocketAddr, path: &str) -> (u16, String) {
    // HTTPS with the proxy's default certificate (the stack's Ingress is TLS-only, on websecure).
    let port = addr.port();
    let out = tokio::process::Command::new("curl")
        .args([
            "-sk",
            "--max-time",
            "30",
            "-w",
            "\n%{http_code}",
            "--resolve",
        ])
        .arg(format!("{DOMAIN}:{port}:{}", addr.ip()))
        .arg(format!("https://{DOMAIN}:{port}{path}"))
        .output()
        .await;
    let Ok(out) = out else {
        return (0, String::new());
    };
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
    (code.trim().parse().unwrap_or(0), body.to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a k3s binary and root"]
async fn k3s_runs_the_chat_stack_behind_the_proxy() {
    let bin = PathBuf::from(
        std::env::var_os("GANTRY_K3S_BIN").expect("set GANTRY_K3S_BIN to a k3s binary"),
    );
    {
        use std::os::unix::fs::MetadataExt;
        let uid = std::fs::metadata("/proc/self").unwrap().uid();
        assert_eq!(uid, 0, "k3s server needs root");
    }
    let data = tempfile::Builder::new()
        .prefix("gantry-k3s-")
        .tempdir()
        .unwrap();
    let stop = CancellationToken::new();
    let mut opts = StartOptions::new(bin, data.path());
    opts.images_from = std::env::var_os("GANTRY_K3S_IMAGES").map(PathBuf::from);
    let k3s = k3s::start(opts, None, stop.clone()).unwrap();

    // Readiness: /readyz with the kubeconfig's credentials, then the node.
    k3s.wait_ready(Duration::from_secs(600), |p| eprintln!("k3s: {p:?}"))
        .await
        .unwrap();
    assert!(k3s.supervised.state.borrow().is_running());
    let client = readiness::client(&k3s.paths.kubeconfig).await.unwrap();

    // The stack: apply + prune, rs0, rollouts. Twice: re-applying is idempotent.
    let settings = StackSettings::new(DOMAIN);
    let stack = render(
        &settings,
        &StackSecrets::generate(),
        &Pins::embedded().unwrap(),
    )
    .unwrap();
    install(
        &client,
        &stack,
        &settings.namespace,
        &Timeouts::default(),
        |s| {
            eprintln!("install: {s:?}");
        },
    )
    .await
    .unwrap();
    let t = Instant::now();
    install(
        &client,
        &stack,
        &settings.namespace,
        &Timeouts::default(),
        |_| {},
    )
    .await
    .unwrap();
    eprintln!("re-apply took {:?}", t.elapsed());

    // The live Ingress provider feeds a real proxy; the chat answers through it.
    let static_cfg = gantry_proxy::config::parse_str(
        std::path::Path::new("static.yml"),
        "entryPoints:\n  websecure:\n    address: \"127.0.0.1:0\"\n    http:\n      tls: {}\n",
    )
    .unwrap();
    let proxy = Arc::new(Proxy::start(static_cfg, ProxyOptions::default()).unwrap());
    let addr = proxy.local_addr("websecure").unwrap();
    let (status_tx, mut status_rx) = tokio::sync::watch::channel(Default::default());
    let provider = tokio::spawn(watch::run_ingress_provider(
        client.clone(),
        proxy.shared().clone(),
        Duration::from_millis(200),
        status_tx,
        stop.clone(),
    ));
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let (code, body) = get(addr, "/api/info").await;
        if code == 200 && body.contains("\"success\":true") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "chat not reachable through the proxy: {code} {body}"
        );
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    let ps = status_rx.borrow_and_update().clone();
    assert!(ps.error.is_none() && ps.routers >= 1, "{ps:?}");

    // The dashboard's status.
    let st = status::fetch(&client, &settings.namespace, &k3s.node_name, 20)
        .await
        .unwrap();
    assert!(st.node.as_ref().is_some_and(|n| n.ready), "{st:?}");
    assert!(st.mongo_primary && st.chat_ready, "{st:?}");

    // Fresh k3s certificates: about a year left, no rotation due.
    let e = certs::earliest_expiry(&certs::cert_dirs(&k3s.paths.data_dir)).unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    assert!(!certs::rotation_due(&e, now, certs::RENEW_WITHIN), "{e:?}");

    // Stop: SIGTERM to k3s (its pods keep running by design; the VM is disposable).
    stop.cancel();
    provider.await.unwrap();
    k3s.join().await;
}
