//! Point 1, routing: host and path rules, priority (rule length by default, explicit wins),
//! case-insensitive hosts, routers bound to entrypoints.
//!
//! The precedence cases from Traefik's documentation that need the full v3 syntax are at the end.

use serde_json::{Value, json};

use crate::support::*;

async fn four_upstreams() -> [Upstream; 4] {
    [
        Upstream::start("a").await,
        Upstream::start("b").await,
        Upstream::start("c").await,
        Upstream::start("d").await,
    ]
}

fn services(ups: &[Upstream]) -> Value {
    let mut m = serde_json::Map::new();
    for u in ups {
        m.insert(
            u.name.clone(),
            json!({"loadBalancer": {"servers": [{"url": u.url()}]}}),
        );
    }
    Value::Object(m)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_and_path_rules_with_default_priority() {
    let ups = four_upstreams().await;
    let p = TestProxy::start(WEB_ONLY);
    p.set_json(json!({"http": {
        "routers": {
            "host-a": {"rule": "Host(`a.test`)", "service": "a"},
            "host-b": {"rule": "Host(`b.test`)", "service": "b"},
            "api": {"rule": "PathPrefix(`/api`)", "service": "c"},
            "api-v2": {"rule": "PathPrefix(`/api/v2`)", "service": "d"},
            "a-admin": {"rule": "Host(`a.test`) && PathPrefix(`/admin`)", "service": "b"},
        },
        "services": services(&ups),
    }}));
    let web = p.addr("web");
    let cases = [
        ("a.test", "/", "a"),
        // Host matching is case-insensitive and ignores the port.
        ("A.Test", "/x", "a"),
        ("a.test:8080", "/x", "a"),
        ("b.test", "/anything", "b"),
        ("other.test", "/api", "c"),
        ("other.test", "/api/users", "c"),
        // The longer rule has the higher default priority.
        ("other.test", "/api/v2/users", "d"),
        // `PathPrefix(`/api/v2`)` (21 chars) outranks `Host(`a.test`)` (14 chars).
        ("a.test", "/api/v2/users", "d"),
        // ...but `Host(`a.test`)` && ... (38 chars) outranks both.
        ("a.test", "/admin/users", "b"),
    ];
    for (host, path, want) in cases {
        let r = get(web, host, path).await;
        assert_eq!(r.server(), want, "Host: {host}, path {path}");
        assert_eq!(r.json()["path"], path, "the path is forwarded unchanged");
    }
    let r = get(web, "other.test", "/").await;
    assert_eq!(r.status, 404);
    assert_eq!(r.text(), "404 page not found\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn explicit_priority_beats_rule_length() {
    let ups = four_upstreams().await;
    let p = TestProxy::start(WEB_ONLY);
    p.set_json(json!({"http": {
        "routers": {
            "api": {"rule": "PathPrefix(`/api`)", "service": "a", "priority": 100},
            "api-v2": {"rule": "PathPrefix(`/api/v2`)", "service": "b"},
            // A catch-all with the lowest priority only gets what nothing else matches.
            "fallback": {"rule": "PathPrefix(`/`)", "service": "c", "priority": 1},
            "host-d": {"rule": "Host(`d.test`)", "service": "d", "priority": 2},
        },
        "services": services(&ups),
    }}));
    let web = p.addr("web");
    for (host, path, want) in [
        ("x.test", "/api/v2/users", "a"),
        ("x.test", "/api", "a"),
        ("x.test", "/other", "c"),
        ("d.test", "/other", "d"),
        // Explicit 100 beats the Host router's explicit 2.
        ("d.test", "/api/v2", "a"),
    ] {
        assert_eq!(get(web, host, path).await.server(), want, "{host}{path}");
    }

    // Swapping priorities in a reload swaps the winner.
    p.set_json(json!({"http": {
        "routers": {
            "api": {"rule": "PathPrefix(`/api`)", "service": "a", "priority": 1},
            "api-v2": {"rule": "PathPrefix(`/api/v2`)", "service": "b", "priority": 2},
        },
        "services": services(&ups),
    }}));
    assert_eq!(get(web, "x.test", "/api/v2/users").await.server(), "b");
    assert_eq!(get(web, "x.test", "/api/v1").await.server(), "a");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routers_are_bound_to_their_entrypoints() {
    let ups = four_upstreams().await;
    let p = TestProxy::start(
        "entryPoints:\n  web:\n    address: \"127.0.0.1:0\"\n  admin:\n    address: \"127.0.0.1:0\"\n",
    );
    p.set_json(json!({"http": {
        "routers": {
            // No entryPoints: every entrypoint.
            "public": {"rule": "Host(`app.test`)", "service": "a"},
            "admin-only": {"rule": "Host(`app.test`) && PathPrefix(`/admin`)", "service": "b",
                           "entryPoints": ["admin"]},
            "web-only": {"rule": "Host(`app.test`) && PathPrefix(`/web`)", "service": "c",
                         "entryPoints": ["web"]},
        },
        "services": services(&ups),
    }}));
    let (web, admin) = (p.addr("web"), p.addr("admin"));
    assert_eq!(get(web, "app.test", "/").await.server(), "a");
    assert_eq!(get(admin, "app.test", "/").await.server(), "a");
    assert_eq!(get(web, "app.test", "/admin/x").await.server(), "a");
    assert_eq!(get(admin, "app.test", "/admin/x").await.server(), "b");
    assert_eq!(get(web, "app.test", "/web/x").await.server(), "c");
    assert_eq!(get(admin, "app.test", "/web/x").await.server(), "a");

    // A router naming an entrypoint that does not exist is refused, naming it; the old config stays.
    let err = p
        .try_set(
            "http:\n  routers:\n    r:\n      rule: \"Host(`x.test`)\"\n      service: s\n      entryPoints: [nope]\n  services:\n    s:\n      loadBalancer:\n        servers:\n          - url: http://127.0.0.1:1\n",
        )
        .unwrap_err()
        .to_string();
    assert!(err.contains("entrypoint `nope` does not exist"), "{err}");
    assert!(err.contains("r@file"), "{err}");
    assert_eq!(get(admin, "app.test", "/admin/x").await.server(), "b");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn as_default_entrypoints_take_routers_without_entrypoints() {
    let ups = four_upstreams().await;
    let p = TestProxy::start(
        "entryPoints:\n  web:\n    address: \"127.0.0.1:0\"\n    asDefault: true\n  admin:\n    address: \"127.0.0.1:0\"\n",
    );
    p.set_json(json!({"http": {
        "routers": {
            "public": {"rule": "Host(`app.test`)", "service": "a"},
            "admin": {"rule": "Host(`app.test`)", "service": "b", "entryPoints": ["admin"]},
        },
        "services": services(&ups),
    }}));
    assert_eq!(get(p.addr("web"), "app.test", "/").await.server(), "a");
    assert_eq!(get(p.addr("admin"), "app.test", "/").await.server(), "b");
}

// ---------------------------------------------------------------------------------------------
// Precedence cases from Traefik's documentation ("Rules & Priority"), which need the full rule
// engine. Each case: routers, then requests (method, host, path, headers) and the service expected
// (`None`: 404).

type Case<'a> = (
    &'a str,
    &'a str,
    &'a str,
    &'a [(&'a str, &'a str)],
    Option<&'a str>,
);

async fn check_table(routers: Value, cases: &[Case<'_>]) {
    let ups = four_upstreams().await;
    let p = TestProxy::start(WEB_ONLY);
    p.set_json(json!({"http": {"routers": routers, "services": services(&ups)}}));
    let web = p.addr("web");
    for (method, host, path, headers, want) in cases {
        let mut b = req(method, host, path);
        for (k, v) in *headers {
            b = b.header(*k, *v);
        }
        let r = send(
            web,
            b.body(http_body_util::Full::new(bytes::Bytes::new()))
                .unwrap(),
        )
        .await;
        match want {
            Some(s) => assert_eq!(r.server(), *s, "{method} {host}{path} {headers:?}"),
            None => assert_eq!(
                r.status,
                404,
                "{method} {host}{path} {headers:?}: {}",
                r.text()
            ),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docs_longer_hostregexp_outranks_host() {
    // Traefik docs: Router-1 `HostRegexp(`[a-z]+\.traefik\.com`)` (34 chars) gets the requests for
    // foobar.traefik.com, not Router-2 `Host(`foobar.traefik.com`)` (26 chars).
    check_table(
        json!({
            "Router-1": {"rule": "HostRegexp(`[a-z]+\\.traefik\\.com`)", "service": "a"},
            "Router-2": {"rule": "Host(`foobar.traefik.com`)", "service": "b"},
        }),
        &[
            ("GET", "foobar.traefik.com", "/", &[], Some("a")),
            ("GET", "other.traefik.com", "/", &[], Some("a")),
            ("GET", "0.traefik.com", "/", &[], None),
        ],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docs_explicit_priority_overrides_length() {
    // Same routers with Router-1 priority 1 and Router-2 priority 2: Router-2 wins its host.
    check_table(
        json!({
            "Router-1": {"rule": "HostRegexp(`[a-z]+\\.traefik\\.com`)", "service": "a", "priority": 1},
            "Router-2": {"rule": "Host(`foobar.traefik.com`)", "service": "b", "priority": 2},
        }),
        &[
            ("GET", "foobar.traefik.com", "/", &[], Some("b")),
            ("GET", "other.traefik.com", "/", &[], Some("a")),
        ],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn path_is_exact_pathprefix_is_a_prefix_and_regexps_anchor() {
    check_table(
        json!({
            "exact": {"rule": "Path(`/products`)", "service": "a"},
            "prefix": {"rule": "PathPrefix(`/products/`)", "service": "b"},
            "re": {"rule": "PathRegexp(`^/users/[0-9]+$`)", "service": "c"},
        }),
        &[
            ("GET", "x.test", "/products", &[], Some("a")),
            ("GET", "x.test", "/products/1", &[], Some("b")),
            ("GET", "x.test", "/productsX", &[], None),
            ("GET", "x.test", "/users/42", &[], Some("c")),
            ("GET", "x.test", "/users/42/edit", &[], None),
        ],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operators_and_parentheses() {
    check_table(
        json!({
            "site": {"rule": "(Host(`a.test`) || Host(`b.test`)) && !PathPrefix(`/private`)", "service": "a"},
            "post": {"rule": "Method(`POST`) && Path(`/submit`)", "service": "b"},
            "hdr": {"rule": "Header(`X-Canary`, `1`) || HeaderRegexp(`X-Tier`, `^gold|silver$`)", "service": "c"},
            "query": {"rule": "Query(`mode`, `debug`) && QueryRegexp(`id`, `^[0-9]+$`)", "service": "d"},
        }),
        &[
            ("GET", "a.test", "/", &[], Some("a")),
            ("GET", "B.TEST", "/x", &[], Some("a")),
            ("GET", "a.test", "/private/x", &[], None),
            ("POST", "c.test", "/submit", &[], Some("b")),
            ("GET", "c.test", "/submit", &[], None),
            ("GET", "c.test", "/", &[("X-Canary", "1")], Some("c")),
            ("GET", "c.test", "/", &[("X-Tier", "gold")], Some("c")),
            ("GET", "c.test", "/", &[("X-Tier", "bronze")], None),
            ("GET", "c.test", "/q?mode=debug&id=7", &[], Some("d")),
            ("GET", "c.test", "/q?mode=debug&id=x", &[], None),
        ],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_ip_and_hostregexp_matchers() {
    check_table(
        json!({
            "local": {"rule": "ClientIP(`127.0.0.0/8`) && PathPrefix(`/local`)", "service": "a"},
            "remote": {"rule": "ClientIP(`10.0.0.0/8`) && PathPrefix(`/remote`)", "service": "b"},
            "wild": {"rule": "HostRegexp(`^.+\\.example\\.com$`)", "service": "c"},
        }),
        &[
            ("GET", "x.test", "/local/1", &[], Some("a")),
            ("GET", "x.test", "/remote/1", &[], None),
            ("GET", "chat.example.com", "/", &[], Some("c")),
            ("GET", "example.com", "/", &[], None),
        ],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_rules_are_refused_with_their_position() {
    let p = TestProxy::start(WEB_ONLY);
    for rule in [
        "Host(`a.test`",
        "Host(`a.test`) &&",
        "Nope(`x`)",
        "Path(`no-slash`)",
        "HostRegexp(`(`)",
    ] {
        let cfg = json!({"http": {
            "routers": {"r": {"rule": rule, "service": "s"}},
            "services": {"s": {"loadBalancer": {"servers": [{"url": "http://127.0.0.1:1"}]}}},
        }});
        let cfg = serde_json::from_value(cfg).unwrap();
        let err = p.proxy().set_provider("file", cfg).unwrap_err().to_string();
        assert!(err.contains("r@file"), "{rule}: {err}");
    }
}
