//! Table tests from fixture YAML (`supervisor/tests/fixtures/ingress/*.yaml`, each with a golden
//! `.expected` file: set `GANTRY_UPDATE_GOLDEN=1` to rewrite them, then review the diff), and
//! targeted tests of the semantics, some through a running proxy.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use super::*;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/ingress")
}

fn load(name: &str) -> (ClusterObjects, Vec<Skipped>) {
    let path = fixtures().join(name);
    let text = std::fs::read_to_string(&path).unwrap();
    let mut objs = ClusterObjects::default();
    let skipped = objs.add_yaml(name, &text);
    (objs, skipped)
}

/// What `gantry ingress-routes` prints for a file: warnings as comments, then the YAML.
fn render(name: &str) -> String {
    let (objs, skipped) = load(name);
    let t = translate(&objs, &Options::default());
    let mut out = String::new();
    for s in &skipped {
        out.push_str(&format!("# skipped {s}\n"));
    }
    for w in &t.warnings {
        out.push_str(&format!("# warning {w}\n"));
    }
    out.push_str(&t.config.to_yaml(false).unwrap());
    out
}

#[test]
fn golden_files() {
    let update = std::env::var_os("GANTRY_UPDATE_GOLDEN").is_some();
    let mut names: Vec<String> = std::fs::read_dir(fixtures())
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.ends_with(".yaml"))
        .collect();
    names.sort();
    assert!(names.len() >= 6, "fixtures missing: {names:?}");
    let mut failures = Vec::new();
    for name in names {
        let got = render(&name);
        let expected_path = fixtures().join(name.replace(".yaml", ".expected"));
        if update {
            std::fs::write(&expected_path, &got).unwrap();
            continue;
        }
        let want = std::fs::read_to_string(&expected_path).unwrap_or_default();
        if got != want {
            failures.push(format!(
                "{name}: output differs from {}\n--- got ---\n{got}",
                expected_path.display()
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{}\n(rerun with GANTRY_UPDATE_GOLDEN=1 and review the diff)",
        failures.join("\n")
    );
}

#[test]
fn rocketchat_helm_chart_ingress() {
    let (objs, skipped) = load("rocketchat-helm.yaml");
    assert!(skipped.is_empty(), "{skipped:?}");
    let t = translate(&objs, &Options::default());
    assert!(t.warnings.is_empty(), "{:?}", t.warnings);
    let http = &t.config.http;
    assert_eq!(http.routers.len(), 1);
    let r = &http.routers["chat-rocketchat-rocketchat-chat-example-com"];
    assert_eq!(r.rule, "Host(`chat.example.com`) && PathPrefix(`/`)");
    assert_eq!(r.service, "chat-rocketchat-rocketchat-http");
    // Ingress spec.tls alone does not make the router TLS-only (Traefik v3): the entrypoint's
    // TLS setting or the router.tls annotation does.
    assert!(r.tls.is_none());
    let lb = &http.services["chat-rocketchat-rocketchat-http"].load_balancer;
    let urls: Vec<&str> = lb.servers.iter().map(|s| s.url.as_str()).collect();
    // 10.42.0.19 is neither ready nor serving.
    assert_eq!(urls, ["http://10.42.0.17:3000", "http://10.42.0.18:3000"]);
    assert!(lb.pass_host_header);
    assert_eq!(t.config.tls.certificates.len(), 1);
    assert_eq!(t.config.tls.certificates[0].secret, "chat/rocketchat-tls");
    // The certificate really loads, for the SNI name of the Ingress.
    let cert = &t.config.tls.certificates[0];
    let loaded =
        gantry_proxy::tls::load_pem(cert.cert_file.as_bytes(), cert.key_file.as_bytes()).unwrap();
    assert_eq!(loaded.names, ["chat.example.com"]);
}

fn input<'a>(
    host: &'a str,
    path: &'a str,
    method: &'a http::Method,
    headers: &'a http::HeaderMap,
) -> gantry_proxy::rule::RouteInput<'a> {
    gantry_proxy::rule::RouteInput {
        host,
        path,
        query: None,
        method,
        headers,
        client_ip: std::net::Ipv4Addr::LOCALHOST.into(),
    }
}

fn router_matches(t: &Translation, router: &str, host: &str, path: &str) -> bool {
    let rule = gantry_proxy::rule::Rule::parse(&t.config.http.routers[router].rule).unwrap();
    let m = http::Method::GET;
    let h = http::HeaderMap::new();
    rule.matches(&input(host, path, &m, &h))
}

#[test]
fn prefix_matches_whole_segments_and_exact_matches_exactly() {
    let (objs, _) = load("paths.yaml");
    let t = translate(&objs, &Options::default());
    let host = "app.example.com";
    let foo = "apps-web-app-example-com-foo";
    for (path, want) in [
        ("/foo", true),
        ("/foo/", true),
        ("/foo/bar", true),
        ("/foobar", false),
        ("/fo", false),
        ("/", false),
    ] {
        assert_eq!(
            router_matches(&t, foo, host, path),
            want,
            "Prefix /foo vs {path}"
        );
    }
    // A trailing slash in a Prefix path is ignored (Kubernetes spec).
    let bar = "apps-web-app-example-com-bar";
    for (path, want) in [
        ("/bar", true),
        ("/bar/", true),
        ("/bar/x", true),
        ("/barx", false),
    ] {
        assert_eq!(
            router_matches(&t, bar, host, path),
            want,
            "Prefix /bar/ vs {path}"
        );
    }
    let exact = "apps-web-app-example-com-exact";
    for (path, want) in [("/exact", true), ("/exact/", false), ("/exact/x", false)] {
        assert_eq!(
            router_matches(&t, exact, host, path),
            want,
            "Exact /exact vs {path}"
        );
    }
    // Prefix `/` matches everything on its host, and only its host.
    let root = "apps-web-app-example-com";
    assert!(router_matches(&t, root, host, "/anything/at/all"));
    assert!(!router_matches(&t, root, "other.example.com", "/"));
    // Wildcard host: exactly one label.
    let wild = "apps-web-apps-example-com-static";
    assert!(router_matches(
        &t,
        wild,
        "x.apps.example.com",
        "/static/app.js"
    ));
    assert!(!router_matches(
        &t,
        wild,
        "x.y.apps.example.com",
        "/static/app.js"
    ));
    assert!(!router_matches(
        &t,
        wild,
        "apps.example.com",
        "/static/app.js"
    ));
    // No host: any host.
    let any = "apps-web-healthz";
    assert!(router_matches(&t, any, "whatever.test", "/healthz"));
}

#[test]
fn router_annotations_apply_to_every_path_of_the_ingress() {
    let (objs, _) = load("paths.yaml");
    let t = translate(&objs, &Options::default());
    for (name, r) in &t.config.http.routers {
        if !name.starts_with("apps-web-") {
            continue;
        }
        assert_eq!(r.entry_points, ["websecure"], "{name}");
        assert_eq!(r.middlewares, ["auth@file", "compress@file"], "{name}");
        assert_eq!(r.priority, Some(100), "{name}");
        assert!(r.tls.is_some(), "{name}");
    }
    // router.pathmatcher applies to ImplementationSpecific paths only.
    let regex = &t.config.http.routers["apps-regex-api-example-com-v-0-9-users"];
    assert_eq!(
        regex.rule,
        "Host(`api.example.com`) && PathRegexp(`/v[0-9]+/users`)"
    );
    let docs = &t.config.http.routers["apps-regex-api-example-com-docs"];
    assert_eq!(
        docs.rule,
        "Host(`api.example.com`) && (Path(`/docs`) || PathPrefix(`/docs/`))"
    );
}

#[test]
fn endpoint_conditions_and_service_annotations() {
    let (objs, skipped) = load("services.yaml");
    assert!(skipped.is_empty(), "{skipped:?}");
    let t = translate(&objs, &Options::default());
    assert!(t.warnings.is_empty(), "{:?}", t.warnings);
    let svc = |k: &str| &t.config.http.services[k].load_balancer;
    let urls = |k: &str| -> Vec<String> { svc(k).servers.iter().map(|s| s.url.clone()).collect() };
    // Ready endpoints of both slices; the terminating one gets nothing new.
    assert_eq!(
        urls("apps-sticky-web"),
        [
            "http://10.42.0.31:3000",
            "http://10.42.0.32:3000",
            "http://10.42.0.33:3000"
        ]
    );
    let sticky = svc("apps-sticky-web").sticky.as_ref().unwrap();
    assert_eq!(sticky.cookie.name.as_deref(), Some("rc_affinity"));
    assert!(sticky.cookie.secure && sticky.cookie.http_only);
    assert_eq!(sticky.cookie.same_site.as_deref(), Some("lax"));
    assert_eq!(sticky.cookie.max_age, Some(86400));
    assert!(!svc("apps-sticky-web").pass_host_header);
    // No endpoints: kept, empty (503).
    assert!(svc("apps-empty-80").servers.is_empty());
    assert!(
        t.config
            .http
            .routers
            .contains_key("apps-svc-svc-example-com-empty")
    );
    // Only terminating endpoints: the serving one keeps serving, the non-serving one never.
    assert_eq!(urls("apps-draining-80"), ["http://10.42.0.41:8080"]);
    assert_eq!(urls("apps-secure-443"), ["https://10.42.0.51:8443"]);
    assert_eq!(urls("apps-grpc-50051"), ["h2c://10.42.0.61:50051"]);
    assert_eq!(
        svc("apps-grpc-50051").servers_transport.as_deref(),
        Some("fast@file")
    );
    assert_eq!(urls("apps-v6-80"), ["http://[fd00:10:42::7]:8080"]);
}

#[test]
fn ingress_class_selection() {
    let (objs, _) = load("classes.yaml");
    let t = translate(&objs, &Options::default());
    let hosts: BTreeSet<String> = t
        .config
        .http
        .routers
        .values()
        .map(|r| r.rule.clone())
        .collect();
    let want: BTreeSet<String> = ["a", "b", "c"]
        .iter()
        .map(|h| format!("Host(`{h}.example.com`) && PathPrefix(`/`)"))
        .collect();
    assert_eq!(hosts, want);
    let skipped: Vec<&str> = t.warnings.iter().map(|w| w.object.as_str()).collect();
    assert_eq!(
        skipped,
        [
            "Ingress default/classless",
            "Ingress default/other-controller"
        ]
    );

    // The same class-less Ingress is served once Gantry's class is the default one.
    let mut objs2 = objs.clone();
    for c in &mut objs2.ingress_classes {
        if c.metadata.name.as_deref() == Some("gantry") {
            c.metadata.annotations = Some(
                [(
                    "ingressclass.kubernetes.io/is-default-class".to_owned(),
                    "true".to_owned(),
                )]
                .into(),
            );
        }
    }
    let t2 = translate(&objs2, &Options::default());
    assert_eq!(t2.config.http.routers.len(), 4);
}

#[test]
fn one_bad_object_does_not_take_the_others_down() {
    let (objs, skipped) = load("skipped.yaml");
    let kinds: Vec<&str> = skipped.iter().map(|s| s.source.as_str()).collect();
    assert_eq!(kinds.len(), 2, "{skipped:?}");
    assert!(
        skipped[0].source.contains("Ingress ancient")
            && skipped[0].reason.contains("extensions/v1beta1")
    );
    assert!(skipped[1].source.contains("ConfigMap settings"));
    let t = translate(&objs, &Options::default());
    let routers: BTreeSet<&str> = t.config.http.routers.keys().map(String::as_str).collect();
    assert_eq!(
        routers,
        [
            "default-good-ok-example-com",
            "default-ignored-annotations-i-example-com",
            "default-router",
        ]
        .into_iter()
        .collect()
    );
    let text: Vec<String> = t.warnings.iter().map(ToString::to_string).collect();
    let has = |needle: &str| {
        assert!(
            text.iter().any(|w| w.contains(needle)),
            "no warning containing {needle:?} in {text:#?}"
        );
    };
    has("TLS Secret default/does-not-exist not found");
    has("Secret default/broken-tls: skipped");
    has("Service default/nope not found");
    has("has no port 81");
    has("ExternalName");
    has("resource backends are not supported");
    has("path `relative` does not start with `/`");
    has("Ingress default/good already defines the default backend");
    has("router.priority: `high` is not an integer");
    has("middleware `default-auth@kubernetescrd` refers to provider `kubernetescrd`");
    has("certresolver ignored");
    has("service annotations belong on the Kubernetes Service");
    assert!(t.config.tls.certificates.is_empty());
    assert_eq!(
        t.config.http.routers["default-router"].priority,
        Some(i64::from(i32::MIN))
    );
}

#[test]
fn colliding_router_keys_get_rule_hashes() {
    let (objs, _) = load("duplicates.yaml");
    let t = translate(&objs, &Options::default());
    let keys: Vec<&String> = t.config.http.routers.keys().collect();
    assert_eq!(keys.len(), 2, "{keys:?}");
    for k in keys {
        assert!(k.starts_with("default-dup-dup-example-com-a-b-"), "{k}");
        assert_eq!(
            k.len(),
            "default-dup-dup-example-com-a-b-".len() + 20,
            "{k}"
        );
    }
}

#[test]
fn references_are_checked_against_the_proxy() {
    let (objs, _) = load("paths.yaml");
    let opts = Options {
        proxy: ProxyContext {
            entry_points: Some(["web".to_owned(), "websecure".to_owned()].into()),
            middlewares: Some(["auth@file".to_owned()].into()),
            ..Default::default()
        },
        ..Default::default()
    };
    let t = translate(&objs, &opts);
    // `compress@file` does not exist: the whole `web` Ingress is refused, not served without it.
    assert!(
        t.config
            .http
            .routers
            .keys()
            .all(|k| !k.starts_with("apps-web-"))
    );
    assert!(
        t.warnings.iter().any(|w| w
            .message
            .contains("middleware `compress@file` does not exist")),
        "{:?}",
        t.warnings
    );
    assert!(
        t.config
            .http
            .routers
            .keys()
            .any(|k| k.starts_with("apps-regex-"))
    );
}

#[test]
fn every_fixture_converts_into_the_proxy_config_types() {
    for name in [
        "rocketchat-helm.yaml",
        "paths.yaml",
        "services.yaml",
        "classes.yaml",
        "skipped.yaml",
        "duplicates.yaml",
    ] {
        let (objs, _) = load(name);
        let t = translate(&objs, &Options::default());
        let dynamic = t.config.to_dynamic().unwrap();
        assert_eq!(
            dynamic.http.routers.len(),
            t.config.http.routers.len(),
            "{name}"
        );
        assert_eq!(
            dynamic.http.services.len(),
            t.config.http.services.len(),
            "{name}"
        );
        // And the printed YAML with keys parses as a dynamic configuration file.
        let yaml = t.config.to_yaml(true).unwrap();
        let parsed: gantry_proxy::config::DynamicConfig =
            gantry_proxy::config::parse_str(Path::new("k.yaml"), &yaml).unwrap();
        assert_eq!(
            parsed.tls.certificates.len(),
            t.config.tls.certificates.len()
        );
    }
}

#[test]
fn private_keys_are_hidden_unless_asked() {
    let (objs, _) = load("rocketchat-helm.yaml");
    let t = translate(&objs, &Options::default());
    let hidden = t.config.to_yaml(false).unwrap();
    assert!(!hidden.contains("PRIVATE KEY"), "{hidden}");
    assert!(hidden.contains("private key of Secret chat/rocketchat-tls"));
    assert!(t.config.to_yaml(true).unwrap().contains("PRIVATE KEY"));
}

#[test]
fn normalize_is_traefiks() {
    assert_eq!(
        normalize("default-whoami-foo.com/bar"),
        "default-whoami-foo-com-bar"
    );
    assert_eq!(normalize("ns-name-*.example.com/"), "ns-name-example-com");
    assert_eq!(normalize("a--b__c"), "a-b-c");
}
