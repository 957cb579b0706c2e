//! `gantry run` as built, with its cluster on: the real binary with `--k3s-binary /bin/false` (a
//! real child that exits at once, as a broken k3s would), driven over HTTPS with the real curl.
//!
//! Exercised: the binary's `run` wiring (config, proxy entrypoints, web UI behind the proxy, the
//! `K3sCluster` supervising a child), setup through the API with the token from the data
//! directory, sign-in, the dashboard and the install progress reporting k3s's exits, the k3s
//! configuration and the stack credentials written privately, no password in the log, and a clean
//! stop on SIGTERM. Not exercised: a k3s that starts (none can run here; see
//! `supervisor/tests/k3s_real.rs`).
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const DEADLINE: Duration = Duration::from_secs(120);
const ADMIN_PASSWORD: &str = "correct horse battery staple 42";
const CHAT_PASSWORD: &str = "another long passphrase 7";

struct Kill(Child);
impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `curl -sk` with extra arguments; returns (status, body).
fn curl(args: &[&str]) -> (u16, String) {
    let out = Command::new("curl")
        .args(["-sk", "--max-time", "20", "-w", "\n%{http_code}"])
        .args(args)
        .output()
        .expect("curl is needed (apt-get install curl)");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
    (code.trim().parse().unwrap_or(0), body.to_owned())
}

fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    let t0 = Instant::now();
    while !f() {
        assert!(t0.elapsed() < DEADLINE, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

#[test]
fn gantry_run_supervises_k3s_and_reports_its_failures_through_setup_and_dashboard() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut child = Command::new(env!("CARGO_BIN_EXE_gantry"))
        .args(["--log-format", "json", "run", "--data-dir"])
        .arg(&data)
        .arg("--run-dir")
        .arg(dir.path().join("run"))
        .args([
            "--http",
            "127.0.0.1:0",
            "--https",
            "127.0.0.1:0",
            "--admin",
            "127.0.0.1:0",
            "--workers",
            "1",
            "--k3s-binary",
            "/bin/false",
        ])
        .env("GANTRY_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let child = Kill(child);
    let log = Arc::new(Mutex::new(String::new()));
    let addrs = Arc::new(Mutex::new(BTreeMap::new()));
    let reader = {
        let (log, addrs) = (log.clone(), addrs.clone());
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) {
                    let f = &v["fields"];
                    if f["message"] == "listening" {
                        addrs.lock().unwrap().insert(
                            f["entrypoint"].as_str().unwrap_or("").to_owned(),
                            f["addr"].as_str().unwrap_or("").to_owned(),
                        );
                    }
                }
                let mut l = log.lock().unwrap();
                l.push_str(&line);
                l.push('\n');
            }
        })
    };
    wait_until("the admin entrypoint", || {
        addrs.lock().unwrap().contains_key("admin")
    });
    let admin = format!("https://{}", addrs.lock().unwrap()["admin"]);
    wait_until("the web UI behind the proxy", || {
        curl(&[&format!("{admin}/api/v1/setup")]).0 == 200
    });

    let token_file = data.join("setup-token");
    assert_eq!(mode(&token_file), 0o600);
    let token = std::fs::read_to_string(&token_file)
        .unwrap()
        .trim()
        .to_owned();
    let body = serde_json::json!({
        "token": token,
        "admin": {"username": "admin", "password": ADMIN_PASSWORD},
        "chat": {"domain": "chat.gantry.test", "cert_mode": "self-signed"},
        "rocketchat": {"name": "Chat Admin", "username": "rcadmin",
                       "email": "rc@gantry.test", "password": CHAT_PASSWORD},
    })
    .to_string();
    let (code, resp) = curl(&[
        "-H",
        "Content-Type: application/json",
        "-d",
        &body,
        &format!("{admin}/api/v1/setup"),
    ]);
    assert_eq!(code, 201, "{resp}");

    let cookies = dir.path().join("cookies");
    let cookies = cookies.to_str().unwrap();
    let (code, resp) = curl(&[
        "-c",
        cookies,
        "-H",
        "Content-Type: application/json",
        "-d",
        &serde_json::json!({"username": "admin", "password": ADMIN_PASSWORD}).to_string(),
        &format!("{admin}/api/v1/session"),
    ]);
    assert_eq!(code, 200, "{resp}");

    // The dashboard follows k3s's exits: restarting with backoff, then a crash loop.
    let mut dashboard = String::new();
    wait_until("the dashboard to report k3s's exits", || {
        let (code, body) = curl(&["-b", cookies, &format!("{admin}/api/v1/dashboard")]);
        dashboard = body;
        code == 200 && (dashboard.contains("k3s exited") || dashboard.contains("crash-looping"))
    });
    let v: serde_json::Value = serde_json::from_str(&dashboard).unwrap();
    let state = v["cluster"]["state"].as_str().unwrap();
    assert!(state == "starting" || state == "failed", "{dashboard}");

    // The wizard's first cluster step says why it is not done; the certificate step is.
    let (code, progress) = curl(&["-b", cookies, &format!("{admin}/api/v1/setup/progress")]);
    assert_eq!(code, 200, "{progress}");
    assert!(progress.contains("cluster-started"), "{progress}");
    assert!(
        progress.contains("k3s") && !progress.contains("skipped: no cluster"),
        "{progress}"
    );

    // The event log (Events page) has k3s's exit.
    let (code, events) = curl(&["-b", cookies, &format!("{admin}/api/v1/events")]);
    assert_eq!(code, 200, "{events}");
    assert!(events.contains("cluster.k3s_exited"), "{events}");

    // k3s's configuration and the stack's credentials are on disk, the credentials private.
    let config = std::fs::read_to_string(data.join("k3s/config.yaml")).unwrap();
    assert!(config.contains("traefik"), "{config}");
    assert_eq!(mode(&data.join("cluster-secrets.json")), 0o600);

    // SIGTERM: k3s's supervisor and the daemon stop cleanly.
    let pid = child.0.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let mut child = child;
    let t0 = Instant::now();
    let status = loop {
        if let Some(s) = child.0.try_wait().unwrap() {
            break s;
        }
        assert!(
            t0.elapsed() < DEADLINE,
            "gantry run did not stop on SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(status.success(), "{status:?}");
    reader.join().unwrap();
    let log = log.lock().unwrap().clone();
    assert!(log.contains("\"stopped\""), "{log}");
    // (The setup token is printed on purpose, for the console; passwords never.)
    for secret in [ADMIN_PASSWORD, CHAT_PASSWORD] {
        assert!(!log.contains(secret), "a password is in the log");
    }
}
