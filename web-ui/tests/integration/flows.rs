//! The wizard's steps and the pages, as a browser without JavaScript uses them.

use http::{Method, StatusCode};

use crate::harness::{ADMIN_PASSWORD, TestApp, cert_for};

#[tokio::test]
async fn wizard_errors_keep_the_other_inputs() {
    let mut t = TestApp::start().await;
    // Every step needs the token first.
    for p in [
        "/setup/admin",
        "/setup/domain",
        "/setup/rocketchat",
        "/setup/summary",
    ] {
        let r = t.get(p).await;
        assert_eq!(
            (r.status, r.location()),
            (StatusCode::SEE_OTHER, "/setup"),
            "{p}"
        );
    }
    // The app entrypoint shows the wizard too.
    let r = t
        .send(
            t.request(Method::GET, "/")
                .body(axum::body::Body::empty())
                .unwrap(),
            true,
        )
        .await;
    assert_eq!(r.location(), "/setup");

    let csrf = t.get("/setup").await.csrf();
    let r = t
        .post_form(
            "/setup",
            &[("_csrf", &csrf), ("token", "aaaaa-bbbbb-ccccc-ddddd")],
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert!(r.body.contains("setup token is not valid"), "{}", r.body);
    let token = t.token.clone();
    let r = t
        .post_form("/setup", &[("_csrf", &csrf), ("token", &token)])
        .await;
    assert_eq!(r.location(), "/setup/admin");

    // Skipping ahead goes back to the first missing step.
    assert_eq!(t.get("/setup/summary").await.location(), "/setup/admin");

    let csrf = t.get("/setup/admin").await.csrf();
    let r = t
        .post_form(
            "/setup/admin",
            &[
                ("_csrf", &csrf),
                ("username", "boss"),
                ("password", "Password123!"),
                ("password_confirm", "Password123!"),
            ],
        )
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(r.body.contains("most common passwords"), "{}", r.body);
    assert!(r.body.contains("value=\"boss\""), "username not kept");
    assert!(!r.body.contains("Password123!"), "password echoed");
    let r = t
        .post_form(
            "/setup/admin",
            &[
                ("_csrf", &csrf),
                ("username", "boss"),
                ("password", ADMIN_PASSWORD),
                ("password_confirm", ADMIN_PASSWORD),
            ],
        )
        .await;
    assert_eq!(r.location(), "/setup/domain");

    let r = t
        .post_multipart(
            "/setup/domain",
            &[
                ("_csrf", &csrf),
                ("domain", "not a domain!"),
                ("cert_mode", "letsencrypt"),
                ("email", "ops@example.test"),
                ("accept_terms", "on"),
            ],
        )
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(r.body.contains("is not a valid domain name"), "{}", r.body);
    assert!(
        r.body.contains("value=\"ops@example.test\""),
        "email not kept"
    );
    assert!(
        r.body.contains("value=\"letsencrypt\" checked"),
        "mode not kept"
    );

    // Upload mode with a key that does not match the certificate.
    let (chain, _key, other) = cert_for("chat.example.test");
    let r = t
        .post_multipart(
            "/setup/domain",
            &[
                ("_csrf", &csrf),
                ("domain", "chat.example.test"),
                ("cert_mode", "upload"),
                ("chain_file", &chain),
                ("key_file", &other),
            ],
        )
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(r.body.contains("key matches the certificate"), "{}", r.body);
    assert!(!r.body.contains("PRIVATE KEY"), "key echoed");
}

#[tokio::test]
async fn full_setup_then_pages_and_api() {
    let mut t = TestApp::start().await;
    let token_file = t.data_dir().join("setup-token");
    let banner_token = t.run_dir().join("setup-token");
    assert!(token_file.exists() && banner_token.exists());
    assert!(t.run_dir().join("urls").exists());
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&token_file).unwrap().permissions().mode() & 0o777,
        0o600
    );

    t.complete_setup().await;
    assert!(
        !token_file.exists() && !banner_token.exists(),
        "token files left behind"
    );

    // Signed in by the wizard; the progress finishes with the cluster steps skipped.
    let r = t.get("/setup/progress").await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let app = t.daemon.appliance().clone();
    t.wait_for("install to finish", |_| {
        app.install_progress().borrow().finished
    })
    .await;
    let p = t
        .api(Method::GET, "/api/v1/setup/progress", None, &[])
        .await
        .json();
    assert_eq!(p["steps"][0]["state"], "done", "{p}");
    for i in 1..4 {
        assert_eq!(p["steps"][i]["state"], "skipped");
        assert!(
            p["steps"][i]["detail"]
                .as_str()
                .unwrap()
                .starts_with("skipped: no cluster")
        );
    }

    for (path, needle) in [
        ("/", "Dashboard"),
        ("/domains", "chat.example.test"),
        ("/certificates", "Gantry self-signed"),
        ("/routes", "admin-ui@gantry"),
        ("/events", "setup.completed"),
        ("/settings", "Change password"),
    ] {
        let r = t.get(path).await;
        assert_eq!(r.status, StatusCode::OK, "{path}");
        assert!(r.body.contains(needle), "{path}: no {needle}");
    }
    let dash = t
        .api(Method::GET, "/api/v1/dashboard", None, &[])
        .await
        .json();
    assert_eq!(dash["cluster"]["state"], "disabled");
    assert!(dash["disk"]["used_bytes"].as_u64().unwrap() > 0);
    // The wizard's self-signed chat certificate is listed as self-signed (not as uploaded), and
    // "renew" is offered: it is how the domain switches to the ACME CA.
    let domains = t
        .api(Method::GET, "/api/v1/domains", None, &[])
        .await
        .json();
    let chat = domains
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["is_chat"] == true)
        .unwrap_or_else(|| panic!("no chat domain: {domains}"));
    assert_eq!(chat["status"], "self-signed", "{chat}");
    assert_eq!(chat["certificate"]["source"], "self-signed", "{chat}");
    assert_eq!(chat["certificate"]["can_renew"], true, "{chat}");
    let r = t.get("/certificates").await;
    assert!(r.body.contains("Order from the ACME CA"), "{}", r.body);

    // The app side is a placeholder now, and the wizard sends browsers to the admin UI.
    let r = t
        .send(
            t.request(Method::GET, "/")
                .body(axum::body::Body::empty())
                .unwrap(),
            true,
        )
        .await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(r.body.contains("no cluster"), "{}", r.body);
    let r = t
        .send(
            t.request(Method::GET, "/setup")
                .body(axum::body::Body::empty())
                .unwrap(),
            true,
        )
        .await;
    assert!(
        r.location().starts_with("https://127.0.0.1:"),
        "{}",
        r.location()
    );

    // Upload: a mismatched key is refused inline, a good one is used.
    let csrf = t.session_csrf().await;
    let (chain, key, other) = cert_for("files.example.test");
    let r = t
        .post_multipart(
            "/certificates/upload",
            &[
                ("_csrf", &csrf),
                ("domain", "files.example.test"),
                ("chain_pem", &chain),
                ("key_pem", &other),
            ],
        )
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(r.body.contains("key matches the certificate"));
    let r = t
        .post_multipart(
            "/certificates/upload",
            &[
                ("_csrf", &csrf),
                ("domain", "files.example.test"),
                ("chain_file", &chain),
                ("key_file", &key),
            ],
        )
        .await;
    assert_eq!(r.location(), "/certificates?ok=cert-uploaded", "{}", r.body);
    let certs = t
        .api(Method::GET, "/api/v1/certificates", None, &[])
        .await
        .json();
    assert!(
        certs
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["domain"] == "files.example.test" && c["source"] == "uploaded")
    );

    // The chat domain cannot be removed; another can.
    let r = t
        .post_form("/domains/chat.example.test/remove", &[("_csrf", &csrf)])
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    let r = t
        .post_form("/domains/files.example.test/remove", &[("_csrf", &csrf)])
        .await;
    assert_eq!(r.location(), "/domains?ok=domain-removed");

    // API token: created in Settings, used as a bearer, revoked.
    let r = t
        .post_form("/settings/tokens", &[("_csrf", &csrf), ("name", "ci")])
        .await;
    let i = r.body.find("id=\"new-token\">").unwrap() + 15;
    let token = r.body[i..].split('<').next().unwrap().to_owned();
    assert!(token.starts_with("gat_"));
    let jar = std::mem::take(&mut t.jar);
    let bearer = format!("Bearer {token}");
    let r = t
        .api(
            Method::GET,
            "/api/v1/domains",
            None,
            &[("authorization", &bearer)],
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    // A bearer needs no CSRF header.
    let r = t
        .api(
            Method::POST,
            "/api/v1/domains",
            Some(serde_json::json!({"domain": "api.example.test"})),
            &[("authorization", &bearer)],
        )
        .await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.body);
    let r = t
        .api(
            Method::GET,
            "/api/v1/domains",
            None,
            &[("authorization", "Bearer gat_nope")],
        )
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    t.jar = jar;

    // Sign out, then sign in again (a new session id), change the password.
    let old = t.jar.get("__Host-gantry").cloned().unwrap();
    let r = t.post_form("/sign-out", &[("_csrf", &csrf)]).await;
    assert_eq!(r.location(), "/sign-in?ok=signed-out");
    assert_eq!(t.get("/").await.location(), "/sign-in");
    let r = t.sign_in("admin", ADMIN_PASSWORD).await;
    assert_eq!(r.location(), "/");
    assert_ne!(t.jar.get("__Host-gantry").unwrap(), &old);
    let csrf = t.session_csrf().await;
    let r = t
        .post_form(
            "/settings/password",
            &[
                ("_csrf", &csrf),
                ("current_password", ADMIN_PASSWORD),
                ("new_password", "quartz-lantern-drifts-east"),
            ],
        )
        .await;
    assert_eq!(r.location(), "/settings?ok=password-changed", "{}", r.body);
    assert_eq!(t.get("/settings").await.status, StatusCode::OK);
}
