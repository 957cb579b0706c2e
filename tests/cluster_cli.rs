//! `gantry manifests` and `gantry ingress-routes` as an operator runs them.
#![allow(clippy::unwrap_used)]

use std::process::Command;

const GANTRY: &str = env!("CARGO_BIN_EXE_gantry");

#[test]
fn manifests_prints_the_stack_for_the_domain() {
    let out = Command::new(GANTRY)
        .args([
            "manifests",
            "--domain",
            "chat.example.org",
            "--replicas",
            "2",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    assert_eq!(text.matches("\n---\n").count(), 11, "{text}");
    assert!(text.contains("value: https://chat.example.org"));
    assert!(text.contains("replicas: 2"));
    assert!(text.contains("@sha256:"));
    let bad = Command::new(GANTRY)
        .args(["manifests", "--domain", "not a domain"])
        .output()
        .unwrap();
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("is not a DNS name"));
}

#[test]
fn ingress_routes_prints_routes_and_warns_per_skipped_object() {
    let fixture = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/supervisor/tests/fixtures/ingress/skipped.yaml"
    );
    let out = Command::new(GANTRY)
        .args(["ingress-routes", fixture])
        .output()
        .unwrap();
    assert!(out.status.success());
    let stdout = String::from_utf8(out.stdout).unwrap();
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(stdout.starts_with("http:\n"), "{stdout}");
    assert!(stdout.contains("default-good-ok-example-com:"));
    assert!(
        stderr.contains("skipped") && stderr.contains("Ingress ancient"),
        "{stderr}"
    );
    assert!(
        stderr.contains("warning: Ingress default/crd-middleware"),
        "{stderr}"
    );
    let missing = Command::new(GANTRY)
        .args(["ingress-routes", "/nonexistent.yaml"])
        .output()
        .unwrap();
    assert!(!missing.status.success());
}
