//! Security properties: CSRF, the setup token's single use, throttling, headers, secrets in logs.

use http::{Method, StatusCode};

use crate::harness::{ADMIN_PASSWORD, CHAT_PASSWORD, TestApp, captured_log, cert_for};

#[tokio::test]
async fn csrf_missing_or_wrong_is_refused() {
    let mut t = TestApp::start().await;
    // Before setup: the token form needs its double-submit value.
    let token = t.token.clone();
    let r = t.post_form("/setup", &[("token", &token)]).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "no CSRF value");
    let _ = t.get("/setup").await;
    let r = t
        .post_form("/setup", &[("_csrf", "wrong"), ("token", &token)])
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "wrong CSRF value");
    t.complete_setup().await;
    let good = t.session_csrf().await;

    for bad in [None, Some("wrong"), Some("")] {
        let mut fields = vec![("domain", "x.example.test")];
        if let Some(b) = bad {
            fields.push(("_csrf", b));
        }
        let r = t.post_form("/domains", &fields).await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{bad:?}: {}", r.body);
        assert!(r.body.contains("CSRF"), "{}", r.body);
    }
    let r = t.post_form("/sign-out", &[("_csrf", "wrong")]).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    // The API with the cookie needs X-CSRF-Token on state changes (not on reads).
    let body = serde_json::json!({"domain": "y.example.test"});
    let r = t
        .api(Method::POST, "/api/v1/domains", Some(body.clone()), &[])
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert_eq!(r.json()["error"]["code"], "csrf");
    let r = t
        .api(
            Method::POST,
            "/api/v1/domains",
            Some(body.clone()),
            &[("x-csrf-token", "nope")],
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert_eq!(
        t.api(Method::GET, "/api/v1/domains", None, &[])
            .await
            .status,
        StatusCode::OK
    );
    // A cross-site origin is refused even with the right token.
    let r = t
        .api(
            Method::POST,
            "/api/v1/domains",
            Some(body.clone()),
            &[("x-csrf-token", &good), ("origin", "https://evil.example")],
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    for (h, v) in [("origin", "null"), ("sec-fetch-site", "cross-site")] {
        let r = t
            .api(
                Method::POST,
                "/api/v1/domains",
                Some(body.clone()),
                &[("x-csrf-token", &good), (h, v)],
            )
            .await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{h}: {v}");
    }
    let r = t
        .api(
            Method::POST,
            "/api/v1/domains",
            Some(body),
            &[("x-csrf-token", &good)],
        )
        .await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.body);
    // Nothing was added by the refused requests.
    let names: Vec<String> = t
        .daemon
        .appliance()
        .domains()
        .unwrap()
        .into_iter()
        .map(|d| d.name)
        .collect();
    assert!(!names.contains(&"x.example.test".to_owned()), "{names:?}");
}

#[tokio::test]
async fn setup_token_cannot_be_reused() {
    let mut t = TestApp::start().await;
    let token = t.token.clone();
    t.complete_setup().await;
    // The wizard is gone...
    t.jar.clear();
    let r = t.get("/setup").await;
    assert_eq!(r.location(), "/");
    let r = t
        .post_form("/setup", &[("_csrf", "x"), ("token", &token)])
        .await;
    assert_eq!(r.location(), "/");
    // ...and the API refuses the token too.
    let body = serde_json::json!({
        "token": token,
        "admin": {"username": "intruder", "password": "another-long-passphrase"},
        "chat": {"domain": "evil.example.test", "cert_mode": "self-signed"},
        "rocketchat": {"name": "X", "username": "x", "email": "x@example.test", "password": "another-long-passphrase"},
    });
    let r = t.api(Method::POST, "/api/v1/setup", Some(body), &[]).await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.body);
    assert_eq!(t.daemon.appliance().store().users().unwrap().len(), 1);
    let r = t.sign_in("intruder", "another-long-passphrase").await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn setup_through_the_api() {
    let mut t = TestApp::start().await;
    let mut body = serde_json::json!({
        "token": "wrong-token",
        "admin": {"username": "admin", "password": ADMIN_PASSWORD},
        "chat": {"domain": "chat.example.test", "cert_mode": "self-signed"},
        "rocketchat": {"name": "RC", "username": "rc", "email": "rc@example.test", "password": CHAT_PASSWORD},
    });
    let r = t
        .api(Method::POST, "/api/v1/setup", Some(body.clone()), &[])
        .await;
    assert_eq!(
        (r.status, r.json()["error"]["code"].clone()),
        (StatusCode::FORBIDDEN, "bad_setup_token".into())
    );
    body["token"] = t.token.clone().into();
    body["admin"]["password"] = "password".into();
    let r = t
        .api(Method::POST, "/api/v1/setup", Some(body.clone()), &[])
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(r.json()["error"]["field"], "password");
    body["admin"]["password"] = ADMIN_PASSWORD.into();
    let r = t.api(Method::POST, "/api/v1/setup", Some(body), &[]).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    let r = t
        .api(
            Method::POST,
            "/api/v1/session",
            Some(serde_json::json!({"username": "admin", "password": ADMIN_PASSWORD})),
            &[],
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let csrf = r.json()["csrf_token"].as_str().unwrap().to_owned();
    let r = t
        .api(
            Method::DELETE,
            "/api/v1/session",
            None,
            &[("x-csrf-token", &csrf)],
        )
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    assert_eq!(
        t.api(Method::GET, "/api/v1/session", None, &[])
            .await
            .status,
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test]
async fn sign_in_throttling_engages() {
    let mut t = TestApp::start().await;
    t.complete_setup().await;
    t.jar.clear();
    t.ip = "198.51.100.20".into();
    for _ in 0..4 {
        let r = t.sign_in("admin", "not-the-password").await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED);
        assert!(r.body.contains("wrong username or password"));
        assert!(r.body.contains("value=\"admin\""), "username not kept");
    }
    // The right password now waits too, with Retry-After.
    let r = t.sign_in("admin", ADMIN_PASSWORD).await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS, "{}", r.body);
    assert!(r.headers.contains_key("retry-after"));
    assert!(r.body.contains("too many failed attempts"));
    // Per username: another address is refused for this account too.
    t.ip = "198.51.100.21".into();
    let r = t.sign_in("admin", ADMIN_PASSWORD).await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS);
    // The API shares the same throttle.
    let r = t
        .api(
            Method::POST,
            "/api/v1/session",
            Some(serde_json::json!({"username": "admin", "password": ADMIN_PASSWORD})),
            &[],
        )
        .await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS);
}

#[tokio::test]
async fn security_headers_on_every_response() {
    let mut t = TestApp::start().await;
    for path in ["/setup", "/", "/static/app.css", "/nope", "/api/v1/setup"] {
        let r = t.get(path).await;
        let h = &r.headers;
        let csp = h.get("content-security-policy").unwrap().to_str().unwrap();
        assert!(
            csp.contains("script-src 'self'") && !csp.contains("unsafe-inline"),
            "{path}: {csp}"
        );
        assert!(csp.contains("frame-ancestors 'none'"));
        assert_eq!(h.get("x-frame-options").unwrap(), "DENY", "{path}");
        assert_eq!(h.get("x-content-type-options").unwrap(), "nosniff");
        assert_eq!(h.get("referrer-policy").unwrap(), "same-origin");
        // A self-signed certificate is not trusted: no HSTS.
        assert!(!h.contains_key("strict-transport-security"), "{path}");
    }
    // No inline script anywhere in the pages.
    let r = t.get("/setup").await;
    assert!(
        !r.body.contains("<script>") && !r.body.contains(" onclick="),
        "{}",
        r.body
    );
}

#[tokio::test]
async fn no_secrets_in_logs() {
    let log = captured_log();
    let mut t = TestApp::start().await;
    let setup_token = t.token.clone();
    t.complete_setup().await;
    let app = t.daemon.appliance().clone();
    t.wait_for("install", |_| app.install_progress().borrow().finished)
        .await;
    let csrf = t.session_csrf().await;
    let session = t.jar.get("__Host-gantry").cloned().unwrap();
    let r = t
        .post_form("/settings/tokens", &[("_csrf", &csrf), ("name", "logs")])
        .await;
    let i = r.body.find("id=\"new-token\">").unwrap() + 15;
    let api_token = r.body[i..].split('<').next().unwrap().to_owned();
    let (chain, key, other) = cert_for("logs.example.test");
    let _ = t
        .post_multipart(
            "/certificates/upload",
            &[
                ("_csrf", &csrf),
                ("domain", "logs.example.test"),
                ("chain_pem", &chain),
                ("key_pem", &other),
            ],
        )
        .await;
    let _ = t
        .post_multipart(
            "/certificates/upload",
            &[
                ("_csrf", &csrf),
                ("domain", "logs.example.test"),
                ("chain_pem", &chain),
                ("key_pem", &key),
            ],
        )
        .await;
    let jar = std::mem::take(&mut t.jar);
    let r = t.sign_in("admin", "wrong-password-for-the-log").await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    t.jar = jar;
    let _ = t
        .api(
            Method::GET,
            "/api/v1/domains",
            None,
            &[("authorization", &format!("Bearer {api_token}"))],
        )
        .await;
    let text = String::from_utf8_lossy(&log.lock().unwrap()).into_owned();
    assert!(
        text.contains("setup.completed"),
        "the log capture does not work"
    );
    let key_body = key.lines().nth(1).unwrap().to_owned();
    for (what, secret) in [
        ("admin password", ADMIN_PASSWORD),
        ("chat password", CHAT_PASSWORD),
        ("wrong password", "wrong-password-for-the-log"),
        ("setup token", setup_token.as_str()),
        ("session id", session.as_str()),
        ("CSRF token", csrf.as_str()),
        ("API token", api_token.as_str()),
        ("private key", key_body.as_str()),
    ] {
        assert!(!text.contains(secret), "the {what} appears in the log");
    }
}
