//! Configuration errors: unknown keys and refused features name the key, the file and the line,
//! in static and dynamic files, YAML and TOML; semantic errors name the object and its file.

use std::path::Path;

use gantry_proxy::config::{self, static_config::FileProvider};

use crate::support::*;

fn write(dir: &Path, name: &str, text: &str) -> std::path::PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

#[test]
fn static_unknown_keys_name_key_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    for (text, key, line) in [
        (
            // `graceTimeout` (Traefik spells it graceTimeOut), line 6.
            "entryPoints:\n  web:\n    address: \":80\"\n    transport:\n      lifeCycle:\n        graceTimeout: 5s\n",
            "graceTimeout",
            6,
        ),
        (
            "entryPoints:\n  web:\n    address: \":80\"\nentrypoints:\n  other: {}\n",
            "entrypoints",
            4,
        ),
        (
            // A refused feature, not a typo.
            "entryPoints:\n  web:\n    address: \":80\"\nproviders:\n  docker:\n    exposedByDefault: false\n",
            "docker",
            5,
        ),
    ] {
        let path = write(dir.path(), "static.yml", text);
        let msg = config::load_static(&path).unwrap_err().to_string();
        assert!(
            msg.contains(&format!("{}:{line}:", path.display())),
            "{msg}"
        );
        assert!(msg.contains(key), "{msg}");
    }
    // The whole key path is named too.
    let path = write(
        dir.path(),
        "static.yml",
        "entryPoints:\n  web:\n    address: \":80\"\n    transport:\n      lifeCycle:\n        graceTimeout: 5s\n",
    );
    let msg = config::load_static(&path).unwrap_err().to_string();
    assert!(msg.contains("entryPoints.web.transport.lifeCycle"), "{msg}");
    // TOML static files as well.
    let path = write(
        dir.path(),
        "static.toml",
        "[entryPoints.web]\naddress = \":80\"\n\n[entryPoints.web.http]\nredirect = true\n",
    );
    let msg = config::load_static(&path).unwrap_err().to_string();
    assert!(msg.contains(&format!("{}:5:", path.display())), "{msg}");
    assert!(msg.contains("redirect"), "{msg}");
}

#[test]
fn dynamic_unknown_keys_name_key_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(
        dir.path(),
        "dynamic.yml",
        "http:
  routers:
    web:
      rule: \"Host(`a.test`)\"
      service: app
  services:
    app:
      loadBalancer:
        server:
          - url: http://127.0.0.1:1
",
    );
    let msg = config::load_dynamic(Some(&path), None)
        .unwrap_err()
        .to_string();
    assert!(msg.contains(&format!("{}:9:", path.display())), "{msg}");
    assert!(msg.contains("server"), "{msg}");
    assert!(msg.contains("http.services.app.loadBalancer"), "{msg}");

    // In a directory of files, the bad one is named.
    let d = dir.path().join("conf.d");
    std::fs::create_dir(&d).unwrap();
    write(
        &d,
        "a.yml",
        "http:\n  services:\n    s:\n      loadBalancer:\n        servers:\n          - url: http://127.0.0.1:1\n",
    );
    let bad = write(
        &d,
        "b.toml",
        "[http.routers.r]\nrule = \"Host(`a`)\"\nservice = \"s\"\npriorty = 3\n",
    );
    let msg = config::load_dynamic(None, Some(&d))
        .unwrap_err()
        .to_string();
    assert!(msg.contains(&format!("{}:4:", bad.display())), "{msg}");
    assert!(msg.contains("priorty"), "{msg}");

    // Refused features name their key and line.
    let path = write(
        dir.path(),
        "dynamic.yml",
        "http:\n  services:\n    s:\n      mirroring:\n        service: x\n",
    );
    let msg = config::load_dynamic(Some(&path), None)
        .unwrap_err()
        .to_string();
    assert!(msg.contains(&format!("{}:", path.display())), "{msg}");
    assert!(msg.contains("not supported"), "{msg}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn semantic_errors_name_the_object_and_its_file() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().join("conf.d");
    std::fs::create_dir(&d).unwrap();
    write(
        &d,
        "services.yml",
        "http:\n  services:\n    app:\n      loadBalancer:\n        servers:\n          - url: http://127.0.0.1:1\n",
    );
    let routers = write(
        &d,
        "routers.yml",
        "http:\n  routers:\n    web:\n      rule: \"Host(`a.test`)\"\n      service: ap\n",
    );
    let p = TestProxy::start(WEB_ONLY);
    let file = FileProvider {
        directory: Some(d.clone()),
        ..Default::default()
    };
    let msg = gantry_proxy::provider::load(p.proxy(), &file)
        .unwrap_err()
        .to_string();
    assert!(msg.contains("router `web@file`"), "{msg}");
    assert!(msg.contains(&routers.display().to_string()), "{msg}");
    assert!(msg.contains("service `ap` does not exist"), "{msg}");
    // Fixed: loads.
    write(
        &d,
        "routers.yml",
        "http:\n  routers:\n    web:\n      rule: \"Host(`a.test`)\"\n      service: app\n",
    );
    gantry_proxy::provider::load(p.proxy(), &file).unwrap();
    assert!(p.proxy().snapshot().routers.contains_key("web@file"));
}

#[test]
fn traefik_spellings_of_acronym_keys_are_accepted() {
    // serde's camelCase would spell these trustedIps, disableHttp2, forceStsHeader...
    let dir = tempfile::tempdir().unwrap();
    let path = write(
        dir.path(),
        "static.yml",
        "entryPoints:\n  web:\n    address: \":80\"\n    forwardedHeaders:\n      trustedIPs: [\"10.0.0.0/8\"]\n",
    );
    let cfg = config::load_static(&path).unwrap();
    assert_eq!(
        cfg.entry_points["web"].forwarded_headers.trusted_ips,
        ["10.0.0.0/8"]
    );

    let dynamic = config::parse_str::<config::DynamicConfig>(
        Path::new("d.yml"),
        "http:
  serversTransports:
    t:
      disableHTTP2: true
  middlewares:
    h:
      headers:
        forceSTSHeader: true
        customBrowserXSSValue: \"1; mode=block\"
",
    )
    .unwrap();
    assert!(dynamic.http.servers_transports["t"].disable_http2);
    // Refused features under their Traefik names say so (rather than "unknown field").
    for (file, text) in [
        ("s.yml", "providers:\n  kubernetesCRD: {}\n"),
        ("s.yml", "metrics:\n  influxDB2: {}\n"),
    ] {
        let msg = config::parse_str::<config::StaticConfig>(Path::new(file), text)
            .unwrap_err()
            .to_string();
        assert!(msg.contains("not supported"), "{msg}");
    }
    for text in [
        "http:\n  serversTransports:\n    t:\n      peerCertURI: x\n",
        "http:\n  middlewares:\n    m:\n      passTLSClientCert: {}\n",
    ] {
        let msg = config::parse_str::<config::DynamicConfig>(Path::new("d.yml"), text)
            .unwrap_err()
            .to_string();
        assert!(msg.contains("not supported"), "{msg}");
    }
}
