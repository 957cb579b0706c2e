//! Point 5, TLS: certificates chosen by SNI (exact, wildcard, default), replaced at runtime without
//! a restart, TLS-only routers, and the ACME hooks (HTTP-01 ahead of a redirect, TLS-ALPN-01).

use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use sha2::{Digest, Sha256};

use crate::support::*;

const STATIC: &str = "entryPoints:
  web:
    address: \"127.0.0.1:0\"
  websecure:
    address: \"127.0.0.1:0\"
    http:
      tls: {}
";

fn any_cert() -> Arc<rustls::ClientConfig> {
    client_config(
        Trust::Any,
        &[b"http/1.1"],
        &[&rustls::version::TLS13, &rustls::version::TLS12],
    )
}

async fn served_cert(p: &TestProxy, sni: &str) -> Vec<u8> {
    let s = tls_connect(p.addr("websecure"), sni, any_cert())
        .await
        .unwrap_or_else(|e| panic!("handshake with SNI {sni}: {e}"));
    peer_leaf(&s).to_vec()
}

fn der(leaf: &Leaf) -> Vec<u8> {
    leaf.der().to_vec()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sni_picks_exact_then_wildcard_then_default_and_certs_change_at_runtime() {
    let ca = Ca::new("sni CA");
    let exact = ca.issue(&["app.test"]);
    let wildcard = ca.issue(&["*.wild.test"]);
    let exact_in_wild = ca.issue(&["exact.wild.test"]);
    let default = ca.issue(&["default.test"]);
    let up = Upstream::start("app").await;
    let p = TestProxy::start(STATIC);
    let dir = p.dir.path().to_owned();
    let (ec, ek) = exact.write(&dir, "exact");
    let (wc, wk) = wildcard.write(&dir, "wildcard");
    let (xc, xk) = exact_in_wild.write(&dir, "exact-in-wild");
    let (dc, dk) = default.write(&dir, "default");
    p.set(&format!(
        "http:
  routers:
    app:
      rule: \"PathPrefix(`/`)\"
      service: app
  services:
    app:
      loadBalancer:
        servers:
          - url: {url}
tls:
  certificates:
    - certFile: {wc}
      keyFile: {wk}
    - certFile: {ec}
      keyFile: {ek}
    - certFile: {xc}
      keyFile: {xk}
  stores:
    default:
      defaultCertificate:
        certFile: {dc}
        keyFile: {dk}
",
        url = up.url()
    ));
    assert_eq!(served_cert(&p, "app.test").await, der(&exact));
    assert_eq!(
        served_cert(&p, "APP.test").await,
        der(&exact),
        "SNI is case-insensitive"
    );
    assert_eq!(served_cert(&p, "chat.wild.test").await, der(&wildcard));
    assert_eq!(
        served_cert(&p, "exact.wild.test").await,
        der(&exact_in_wild),
        "an exact name wins over a wildcard"
    );
    // A wildcard covers one label only.
    assert_eq!(served_cert(&p, "a.b.wild.test").await, der(&default));
    assert_eq!(served_cert(&p, "unknown.test").await, der(&default));

    // A client trusting the CA gets a verified connection and an answer.
    let cfg = client_config(
        Trust::Roots(ca.roots()),
        &[b"http/1.1"],
        &[&rustls::version::TLS13],
    );
    let s = tls_connect(p.addr("websecure"), "chat.wild.test", cfg.clone())
        .await
        .unwrap();
    let r = send_on(
        s,
        false,
        req("GET", "chat.wild.test", "/")
            .body(Full::new(Bytes::new()))
            .unwrap(),
    )
    .await
    .unwrap();
    assert_eq!(r.server(), "app");

    // A managed certificate (as the supervisor installs after ACME) replaces the file one for its
    // name at once, without a restart; replacing it again takes effect again.
    let renewed = ca.issue(&["app.test"]);
    p.proxy().certs().set_managed(vec![renewed.loaded()], None);
    assert_eq!(served_cert(&p, "app.test").await, der(&renewed));
    let renewed_again = ca.issue(&["app.test", "www.app.test"]);
    p.proxy()
        .certs()
        .set_managed(vec![renewed_again.loaded()], None);
    assert_eq!(served_cert(&p, "app.test").await, der(&renewed_again));
    assert_eq!(served_cert(&p, "www.app.test").await, der(&renewed_again));
    let s = tls_connect(p.addr("websecure"), "app.test", cfg)
        .await
        .unwrap();
    assert_eq!(
        peer_leaf(&s).to_vec(),
        der(&renewed_again),
        "and it verifies"
    );
    // Removing managed certificates falls back to the file's.
    p.proxy().certs().set_managed(Vec::new(), None);
    assert_eq!(served_cert(&p, "app.test").await, der(&exact));

    // A reload that drops the file certificates leaves the generated fallback for unknown names.
    p.set_json(route("PathPrefix(`/`)", &[up.url()]));
    let fallback = served_cert(&p, "app.test").await;
    assert_ne!(fallback, der(&exact));
    assert_ne!(fallback, der(&default));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_routers_serve_tls_connections_only() {
    let ca = Ca::new("routers CA");
    let (plain, secure) = (
        Upstream::start("plain").await,
        Upstream::start("secure").await,
    );
    let p = TestProxy::start(STATIC);
    p.proxy()
        .certs()
        .set_managed(vec![ca.issue(&["app.test"]).loaded()], None);
    p.set(&format!(
        "http:
  routers:
    plain:
      rule: \"Host(`app.test`)\"
      service: plain
      entryPoints: [web]
    secure:
      rule: \"Host(`app.test`) && PathPrefix(`/secure`)\"
      service: secure
      tls: {{}}
  services:
    plain:
      loadBalancer:
        servers:
          - url: {}
    secure:
      loadBalancer:
        servers:
          - url: {}
",
        plain.url(),
        secure.url()
    ));
    // Plain entrypoint: the TLS router is not there.
    assert_eq!(
        get(p.addr("web"), "app.test", "/secure").await.server(),
        "plain"
    );
    // TLS entrypoint: only the TLS router (the plain one is bound to `web`).
    let cfg = client_config(
        Trust::Roots(ca.roots()),
        &[b"h2"],
        &[&rustls::version::TLS13],
    );
    for (path, want) in [("/secure/x", Some("secure")), ("/", None)] {
        let s = tls_connect(p.addr("websecure"), "app.test", cfg.clone())
            .await
            .unwrap();
        let r = send_on(
            s,
            true,
            http::Request::get(format!("https://app.test{path}"))
                .body(Full::new(Bytes::new()))
                .unwrap(),
        )
        .await
        .unwrap();
        match want {
            Some(s) => assert_eq!(r.server(), s),
            None => assert_eq!(r.status, 404),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acme_http01_is_answered_ahead_of_the_entrypoint_redirect() {
    let p = TestProxy::start(
        "entryPoints:
  web:
    address: \"127.0.0.1:0\"
    http:
      redirections:
        entryPoint:
          to: websecure
          scheme: https
  websecure:
    address: \"127.0.0.1:0\"
    http:
      tls: {}
",
    );
    let web = p.addr("web");
    let https_port = p.addr("websecure").port();
    p.proxy().acme().set("tok-123", "tok-123.thumbprint");

    let r = get(
        web,
        "chat.example.com",
        "/.well-known/acme-challenge/tok-123",
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), "tok-123.thumbprint");

    // Everything else on the plain entrypoint is redirected, unknown tokens included.
    for path in [
        "/",
        "/login?next=/home",
        "/.well-known/acme-challenge/other",
    ] {
        let r = get(web, "chat.example.com", path).await;
        assert_eq!(r.status, 301, "{path}");
        assert_eq!(
            r.header("location").unwrap(),
            format!("https://chat.example.com:{https_port}{path}")
        );
    }
    let r = send(
        web,
        req("POST", "chat.example.com", "/form")
            .body(Full::new(Bytes::new()))
            .unwrap(),
    )
    .await;
    assert_eq!(r.status, 308, "non-GET permanent redirects keep the method");

    // A removed token is redirected like any other path.
    p.proxy().acme().remove("tok-123");
    let r = get(
        web,
        "chat.example.com",
        "/.well-known/acme-challenge/tok-123",
    )
    .await;
    assert_eq!(r.status, 301);
}

/// A TLS-ALPN-01 challenge certificate (RFC 8737): self-signed for `domain`, with the critical
/// acmeIdentifier extension holding SHA-256 of the key authorization. Built as a rustls
/// `CertifiedKey` directly, as an ACME client does (webpki cannot parse the critical extension, so
/// `tls::load_pem`'s key check refuses such certificates, with a message saying so).
fn challenge_cert(
    domain: &str,
    key_authorization: &str,
) -> (Leaf, Arc<rustls::sign::CertifiedKey>) {
    let mut params = rcgen::CertificateParams::new(vec![domain.to_owned()]).unwrap();
    let digest = Sha256::digest(key_authorization.as_bytes());
    params
        .custom_extensions
        .push(rcgen::CustomExtension::new_acme_identifier(&digest));
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = params.self_signed(&key).unwrap();
    let leaf = Leaf {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    };
    let signing = rustls::crypto::ring::sign::any_supported_type(&leaf.key_der()).unwrap();
    let certified = Arc::new(rustls::sign::CertifiedKey::new(vec![leaf.der()], signing));
    let err = gantry_proxy::tls::load_pem(leaf.cert_pem.as_bytes(), leaf.key_pem.as_bytes())
        .unwrap_err()
        .to_string();
    assert!(err.contains("cannot be checked"), "{err}");
    (leaf, certified)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acme_tls_alpn01_is_answered_for_acme_tls_1_clients_only() {
    let ca = Ca::new("alpn CA");
    let up = Upstream::start("app").await;
    let p = TestProxy::start(STATIC);
    let normal = ca.issue(&["acme.test"]);
    p.proxy().certs().set_managed(vec![normal.loaded()], None);
    p.set_json(route("PathPrefix(`/`)", &[up.url()]));
    let (challenge, certified) = challenge_cert("acme.test", "token.thumbprint");
    p.proxy().certs().set_acme_alpn("acme.test", certified);
    let addr = p.addr("websecure");
    let tls13 = [&rustls::version::TLS13, &rustls::version::TLS12];

    // The validator offers only acme-tls/1 and gets the challenge certificate.
    let s = tls_connect(
        addr,
        "acme.test",
        client_config(Trust::Any, &[b"acme-tls/1"], &tls13),
    )
    .await
    .expect("the TLS-ALPN-01 handshake completes");
    assert_eq!(s.get_ref().1.alpn_protocol(), Some(&b"acme-tls/1"[..]));
    assert_eq!(peer_leaf(&s).to_vec(), der(&challenge));

    // Browsers get the real certificate for the same name meanwhile.
    let s = tls_connect(
        addr,
        "acme.test",
        client_config(Trust::Any, &[b"h2", b"http/1.1"], &tls13),
    )
    .await
    .unwrap();
    assert_eq!(peer_leaf(&s).to_vec(), der(&normal));

    // No challenge for that name: the acme-tls/1 handshake is refused.
    assert!(
        tls_connect(
            addr,
            "other.test",
            client_config(Trust::Any, &[b"acme-tls/1"], &tls13)
        )
        .await
        .is_err()
    );
    // Cleared: refused too.
    p.proxy().certs().clear_acme_alpn("acme.test");
    assert!(
        tls_connect(
            addr,
            "acme.test",
            client_config(Trust::Any, &[b"acme-tls/1"], &tls13)
        )
        .await
        .is_err()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_options_min_version_and_sni_strict() {
    let ca = Ca::new("options CA");
    let up = Upstream::start("app").await;
    let p = TestProxy::start(
        "entryPoints:
  websecure:
    address: \"127.0.0.1:0\"
    http:
      tls:
        options: modern
",
    );
    p.proxy()
        .certs()
        .set_managed(vec![ca.issue(&["app.test"]).loaded()], None);
    p.set(&format!(
        "http:
  routers:
    app:
      rule: \"Host(`app.test`)\"
      service: app
  services:
    app:
      loadBalancer:
        servers:
          - url: {}
tls:
  options:
    modern:
      minVersion: VersionTLS13
      sniStrict: true
",
        up.url()
    ));
    let addr = p.addr("websecure");
    let tls12 = client_config(Trust::Any, &[b"http/1.1"], &[&rustls::version::TLS12]);
    let tls13 = client_config(Trust::Any, &[b"http/1.1"], &[&rustls::version::TLS13]);
    assert!(
        tls_connect(addr, "app.test", tls12).await.is_err(),
        "TLS 1.2 is refused with minVersion: VersionTLS13"
    );
    let s = tls_connect(addr, "app.test", tls13.clone()).await.unwrap();
    assert_eq!(
        s.get_ref().1.protocol_version(),
        Some(rustls::ProtocolVersion::TLSv1_3)
    );
    let r = send_on(
        s,
        false,
        req("GET", "app.test", "/")
            .body(Full::new(Bytes::new()))
            .unwrap(),
    )
    .await
    .unwrap();
    assert_eq!(r.server(), "app");
    // sniStrict: no certificate for the name, no handshake (instead of the default certificate).
    assert!(tls_connect(addr, "unknown.test", tls13).await.is_err());

    // A reload without the entrypoint's options is refused, naming them; so are insecure versions.
    let err = p.try_set("http: {}\n").unwrap_err().to_string();
    assert!(err.contains("TLS options `modern` do not exist"), "{err}");
    let err = p
        .try_set("tls:\n  options:\n    modern:\n      minVersion: VersionTLS10\n")
        .unwrap_err()
        .to_string();
    assert!(err.contains("VersionTLS10"), "{err}");
    // The running configuration is untouched.
    let s = tls_connect(
        addr,
        "app.test",
        client_config(Trust::Any, &[b"http/1.1"], &[&rustls::version::TLS13]),
    )
    .await
    .unwrap();
    assert_eq!(
        send_on(
            s,
            false,
            req("GET", "app.test", "/")
                .body(Full::new(Bytes::new()))
                .unwrap()
        )
        .await
        .unwrap()
        .server(),
        "app"
    );
}
