//! Routes to services outside the cluster through the API and the Routes page: created, listed,
//! refused with the field named, CSRF enforced on both, removed. (The proxy side, with a real
//! upstream, is the supervisor's `external_routes` integration test.)

use http::{Method, StatusCode};
use serde_json::json;

use crate::harness::TestApp;

#[tokio::test]
async fn external_routes_api_and_routes_page() {
    let mut t = TestApp::start().await;
    t.complete_setup().await;
    let csrf = t.session_csrf().await;
    let with_csrf = [("x-csrf-token", csrf.as_str())];
    const PATH: &str = "/api/v1/external-routes";

    let r = t.api(Method::GET, PATH, None, &[]).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.json(), json!([]));

    // The cookie needs X-CSRF-Token on a state change.
    let nas = json!({"host": "nas.example.test", "url": "http://192.0.2.20:5000"});
    let r = t.api(Method::POST, PATH, Some(nas.clone()), &[]).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.body);
    assert_eq!(r.json()["error"]["code"], "csrf");

    let r = t
        .api(Method::POST, PATH, Some(nas.clone()), &with_csrf)
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    let created = r.json();
    assert_eq!(created["host"], "nas.example.test", "{created}");
    assert_eq!(created["path_prefix"], "/", "{created}");
    assert_eq!(created["url"], "http://192.0.2.20:5000", "{created}");
    let id = created["id"].as_i64().unwrap();
    assert_eq!(created["router"], format!("ext-{id}@external"), "{created}");
    let list = t.api(Method::GET, PATH, None, &[]).await.json();
    assert_eq!(list, json!([created]));
    // The proxy has the router, and the host became a (self-signed) domain.
    let routes = t.api(Method::GET, "/api/v1/routes", None, &[]).await.json();
    assert!(
        routes["routers"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["name"] == created["router"] && r["provider"] == "external"),
        "{routes}"
    );
    let domains = t
        .api(Method::GET, "/api/v1/domains", None, &[])
        .await
        .json();
    let d = domains
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["name"] == "nas.example.test")
        .unwrap_or_else(|| panic!("no domain for the route: {domains}"));
    assert_eq!(d["status"], "self-signed", "{d}");

    // Refusals: 422 naming the field, 400 for a malformed body.
    for (body, field) in [
        (
            json!({"host": "b.example.test", "url": "ftp://192.0.2.1"}),
            "url",
        ),
        (
            json!({"host": "b.example.test", "url": "http://u:p@192.0.2.1"}),
            "url",
        ),
        (
            json!({"host": "b.example.test", "path_prefix": "x", "url": "http://192.0.2.1"}),
            "path_prefix",
        ),
        (
            json!({"host": "b..example", "url": "http://192.0.2.1"}),
            "host",
        ),
        (
            json!({"host": "chat.example.test", "url": "http://192.0.2.1"}),
            "path_prefix",
        ),
        (nas.clone(), "path_prefix"),
    ] {
        let r = t
            .api(Method::POST, PATH, Some(body.clone()), &with_csrf)
            .await;
        assert_eq!(
            r.status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{body}: {}",
            r.body
        );
        let e = r.json();
        assert_eq!(e["error"]["code"], "invalid_field", "{e}");
        assert_eq!(e["error"]["field"], field, "{body}: {e}");
    }
    let r = t
        .api(
            Method::POST,
            PATH,
            Some(json!({"host": "b.example.test"})),
            &with_csrf,
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.body);
    assert_eq!(r.json()["error"]["code"], "bad_request");
    assert_eq!(
        t.api(Method::GET, PATH, None, &[])
            .await
            .json()
            .as_array()
            .unwrap()
            .len(),
        1
    );

    // The Routes page lists it with a remove form, and has the add form.
    let r = t.get("/routes").await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(
        r.body.contains("Services outside the cluster"),
        "{}",
        r.body
    );
    assert!(r.body.contains("nas.example.test"), "{}", r.body);
    assert!(
        r.body
            .contains(&format!("action=\"/routes/external/{id}/remove\"")),
        "{}",
        r.body
    );
    assert!(r.body.contains("action=\"/routes/external\""), "{}", r.body);

    // The HTML form needs its CSRF field.
    let fields = [("host", "web.example.test"), ("url", "http://192.0.2.30")];
    let r = t.post_form("/routes/external", &fields).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.body);
    let r = t
        .post_form(
            "/routes/external",
            &[("_csrf", "wrong"), fields[0], fields[1]],
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.body);
    assert_eq!(
        t.api(Method::GET, PATH, None, &[])
            .await
            .json()
            .as_array()
            .unwrap()
            .len(),
        1
    );
    // A field error is shown next to its field, the inputs kept.
    let r = t
        .post_form(
            "/routes/external",
            &[
                ("_csrf", &csrf),
                ("host", "web.example.test"),
                ("path_prefix", ""),
                ("url", "gopher://192.0.2.30"),
            ],
        )
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.body);
    assert!(r.body.contains("gopher"), "{}", r.body);
    assert!(r.body.contains("value=\"web.example.test\""), "{}", r.body);
    assert!(r.body.contains("is not supported"), "{}", r.body);
    let r = t
        .post_form(
            "/routes/external",
            &[
                ("_csrf", &csrf),
                ("host", "web.example.test"),
                ("path_prefix", "/app"),
                ("url", "http://192.0.2.30"),
            ],
        )
        .await;
    assert_eq!(r.location(), "/routes?ok=route-added", "{}", r.body);
    let r = t.get("/routes?ok=route-added").await;
    assert!(r.body.contains("Route added"), "{}", r.body);
    assert!(r.body.contains("web.example.test"), "{}", r.body);
    let list = t.api(Method::GET, PATH, None, &[]).await.json();
    let web = list
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["host"] == "web.example.test")
        .unwrap_or_else(|| panic!("{list}"))
        .clone();
    assert_eq!(web["path_prefix"], "/app");

    // Removal from the page: CSRF needed, then gone.
    let remove = format!("/routes/external/{}/remove", web["id"]);
    let r = t.post_form(&remove, &[("_csrf", "wrong")]).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.body);
    let r = t.post_form(&remove, &[("_csrf", &csrf)]).await;
    assert_eq!(r.location(), "/routes?ok=route-removed", "{}", r.body);

    // Removal through the API: CSRF needed, 204, then 404.
    let one = format!("{PATH}/{id}");
    let r = t.api(Method::DELETE, &one, None, &[]).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.body);
    let r = t.api(Method::DELETE, &one, None, &with_csrf).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.body);
    let r = t.api(Method::DELETE, &one, None, &with_csrf).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "{}", r.body);
    assert_eq!(r.json()["error"]["code"], "not_found");
    assert_eq!(t.api(Method::GET, PATH, None, &[]).await.json(), json!([]));
    // The hosts stay domains (the page says so).
    let domains = t
        .api(Method::GET, "/api/v1/domains", None, &[])
        .await
        .json();
    assert!(
        domains
            .as_array()
            .unwrap()
            .iter()
            .any(|d| d["name"] == "nas.example.test"),
        "{domains}"
    );
    let events = t.api(Method::GET, "/api/v1/events", None, &[]).await.json();
    for kind in ["route.added", "route.removed"] {
        assert!(
            events
                .as_array()
                .unwrap()
                .iter()
                .any(|e| e["kind"] == kind && e["subject"] == "nas.example.test"),
            "{kind}: {events}"
        );
    }
}
