//! `gantry certs` end to end: issue from a real pebble through the command's own proxy, list,
//! and import errors.

#![allow(clippy::unwrap_used)]

use std::process::Output;
use std::time::Duration;

use gantry_supervisor::testing::{Pebble, free_port};

async fn gantry(args: &[&str]) -> Output {
    let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_gantry"))
        .args(args)
        .env("GANTRY_LOG", "info")
        .kill_on_drop(true)
        .output();
    tokio::time::timeout(Duration::from_secs(120), child)
        .await
        .expect("gantry took over 120 s")
        .unwrap()
}

fn text(o: &Output) -> String {
    format!(
        "status {}\n--- stdout\n{}\n--- stderr\n{}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certs_issue_list_import() {
    let (http, tls) = (free_port(), free_port());
    let Some(pebble) = Pebble::start(http, tls).await.unwrap() else {
        return;
    };
    let data = tempfile::tempdir().unwrap();
    let d = data.path().to_str().unwrap();
    let ca = pebble.listener_ca.to_str().unwrap();
    let http_addr = format!("127.0.0.1:{http}");
    let tls_addr = format!("127.0.0.1:{tls}");
    let out = gantry(&[
        "certs",
        "issue",
        "--data-dir",
        d,
        "--domain",
        "cli.example.com",
        "--extra-name",
        "www.cli.example.com",
        "--acme-directory",
        &pebble.directory_url,
        "--acme-ca-root",
        ca,
        "--http",
        &http_addr,
        "--tls",
        &tls_addr,
        "--email",
        "ops@example.com",
    ])
    .await;
    assert!(out.status.success(), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("issued a certificate for cli.example.com, www.cli.example.com"),
        "{}",
        text(&out)
    );

    let out = gantry(&["certs", "list", "--data-dir", d]).await;
    assert!(out.status.success(), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("cli.example.com (also www.cli.example.com)"),
        "{stdout}"
    );
    assert!(
        stdout.contains("certificate: acme from CN=Pebble Intermediate CA"),
        "{stdout}"
    );
    assert!(stdout.contains("last ACME attempt: issued"), "{stdout}");

    // A bad import names the failed check, exits non-zero and changes nothing.
    let bad = data.path().join("bad.pem");
    std::fs::write(&bad, "not a certificate").unwrap();
    let b = bad.to_str().unwrap();
    let out = gantry(&[
        "certs",
        "import",
        "--data-dir",
        d,
        "--domain",
        "cli.example.com",
        "--cert",
        b,
        "--key",
        b,
    ])
    .await;
    assert!(!out.status.success(), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("certificate rejected: check `chain parses` failed"),
        "{}",
        text(&out)
    );
    let after = gantry(&["certs", "list", "--data-dir", d]).await;
    assert_eq!(
        String::from_utf8_lossy(&after.stdout),
        stdout,
        "a rejected import changed the store"
    );

    // Missing options are explained.
    let out = gantry(&[
        "certs",
        "issue",
        "--data-dir",
        d,
        "--domain",
        "cli.example.com",
    ])
    .await;
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("give --http (HTTP-01) and/or --tls"),
        "{}",
        text(&out)
    );
    drop(pebble);
}
