//! ACME against a real pebble: issuance through the proxy, serving, renewal with a moved clock,
//! restart, challenge fallback, throttling.

use std::sync::Arc;
use std::time::Duration;

use gantry_proxy::tls::CertStore;
use gantry_supervisor::Error;
use gantry_supervisor::certs::{Policy, RenewalAction, load_stored};
use gantry_supervisor::clock::{Clock, OffsetClock};
use gantry_supervisor::store::{AttemptOutcome, CertSource, ChallengeKind, Store};
use gantry_supervisor::testing::{http_get, start_proxy, tls_connect};

use crate::common::{env, identity, leaf_der, manager, policy};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http01_issue_serve_renew_and_restart() {
    let Some(e) = env(true, false, false, policy()).await else {
        return;
    };
    let tls = e.proxy.local_addr("websecure").unwrap();
    let web = e.proxy.local_addr("web").unwrap();
    let root = e.pebble.issuing_root_pem.clone();

    // Bootstrap: the self-signed certificate is the default.
    assert!(e.mgr.bootstrap(&identity()).unwrap());
    assert!(
        !e.mgr.bootstrap(&identity()).unwrap(),
        "kept on the second start"
    );
    e.mgr.install().unwrap();
    let self_signed = e.mgr.store().current_self_signed().unwrap().unwrap();
    let chain = tls_connect(tls, "gantry-test.local", &self_signed.chain_pem)
        .await
        .unwrap();
    assert_eq!(chain[0].as_ref(), leaf_der(&self_signed.chain_pem));

    // Before issuance, the domain's name gets the default (untrusted by pebble's root).
    assert!(tls_connect(tls, "test.example.com", &root).await.is_err());

    e.mgr
        .add_domain("Test.Example.com", &["www.test.example.com".into()])
        .unwrap();
    let issued = e.mgr.issue("test.example.com").await.unwrap();
    assert_eq!(issued.source, CertSource::Acme);
    assert_eq!(issued.domain.as_deref(), Some("test.example.com"));
    assert!(issued.names.contains(&"www.test.example.com".to_owned()));

    // Served for both names, verified against pebble's issuing root.
    for sni in ["test.example.com", "www.test.example.com"] {
        let chain = tls_connect(tls, sni, &root).await.unwrap();
        assert_eq!(chain[0].as_ref(), leaf_der(&issued.chain_pem), "{sni}");
    }
    // The challenge answers are gone once the order is done.
    let d = e.mgr.store().domain("test.example.com").unwrap().unwrap();
    assert_eq!(d.preferred_challenge, Some(ChallengeKind::Http01));
    let attempts = e.mgr.store().attempts(d.id, 10).unwrap();
    assert_eq!(attempts.len(), 1);
    assert_eq!(attempts[0].outcome, AttemptOutcome::Issued);
    assert_eq!(attempts[0].certificate_id, Some(issued.id));

    // The proxy exports its not-after.
    let metrics = http_get(web, "/metrics").await.unwrap();
    let line = format!(
        "gantry_tls_certs_not_after{{cn=\"test.example.com\",sans=\"test.example.com,www.test.example.com\"}} {}",
        issued.not_after
    );
    assert!(metrics.contains(&line), "{line} not in:\n{metrics}");

    // Not due now.
    let actions = e.mgr.renew_due().await.unwrap();
    assert!(
        matches!(actions[..], [(_, RenewalAction::NotDue)]),
        "{actions:?}"
    );

    // A day past the renewal point: renewed, and the new certificate is served.
    let lifetime = issued.not_after - issued.not_before;
    let until_due = issued.not_after - lifetime / 3 - e.clock.now();
    e.clock.advance(Duration::from_secs(
        u64::try_from(until_due + 86_400).unwrap(),
    ));
    let actions = e.mgr.renew_due().await.unwrap();
    let renewed = match &actions[..] {
        [(_, RenewalAction::Issued(r))] => r.clone(),
        other => panic!("expected a renewal, got {other:?}"),
    };
    assert_ne!(renewed.serial, issued.serial);
    let chain = tls_connect(tls, "test.example.com", &root).await.unwrap();
    assert_eq!(chain[0].as_ref(), leaf_der(&renewed.chain_pem));
    assert_eq!(e.mgr.store().certificate_count(d.id).unwrap(), 2);
    // The same pass replaced the self-signed certificate, which had reached its renewal point.
    let regenerated = e.mgr.store().current_self_signed().unwrap().unwrap();
    assert_ne!(regenerated.serial, self_signed.serial);
    // The CA dated the new certificate from its own (real) clock: back to real time, it is not
    // due.
    e.clock.set_offset(0);
    let actions = e.mgr.renew_due().await.unwrap();
    assert!(
        matches!(actions[..], [(_, RenewalAction::NotDue)]),
        "{actions:?}"
    );

    // Restart: a new store handle, a new proxy loaded before it listens; the first connection
    // already gets the renewed certificate.
    drop(e.mgr);
    e.proxy.shutdown().await;
    let store = Arc::new(Store::open(e.data.path(), 0).unwrap());
    let certs = CertStore::new().unwrap();
    assert_eq!(load_stored(&store, &certs, 0).unwrap(), 2);
    let proxy = start_proxy(certs, true).unwrap();
    let tls2 = proxy.local_addr("websecure").unwrap();
    let chain = tls_connect(tls2, "test.example.com", &root).await.unwrap();
    assert_eq!(chain[0].as_ref(), leaf_der(&renewed.chain_pem));

    // Within 14 days of the end and not renewed: a warning.
    let clock = Arc::new(OffsetClock::new());
    let mgr = manager(&store, &clock, &proxy, &e.pebble, true, false, policy());
    assert!(mgr.warnings().unwrap().is_empty());
    let to_warn = renewed.not_after - 10 * 86_400 - clock.now();
    clock.advance(Duration::from_secs(u64::try_from(to_warn).unwrap()));
    let w = mgr.warnings().unwrap();
    assert_eq!(w.len(), 1, "{w:?}");
    assert_eq!(w[0].domain.as_deref(), Some("test.example.com"));
    assert!(
        w[0].message.contains("expires in 9 days") || w[0].message.contains("expires in 10 days"),
        "{}",
        w[0].message
    );
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_alpn01_fallback_when_http01_cannot_work() {
    // pebble validates HTTP-01 on a port nobody listens on: HTTP-01 fails, TLS-ALPN-01 through
    // the proxy's TLS entrypoint works.
    let Some(e) = env(true, true, true, policy()).await else {
        return;
    };
    let tls = e.proxy.local_addr("websecure").unwrap();
    let root = e.pebble.issuing_root_pem.clone();
    e.mgr.add_domain("alpn.example.com", &[]).unwrap();
    let issued = e.mgr.issue("alpn.example.com").await.unwrap();
    let chain = tls_connect(tls, "alpn.example.com", &root).await.unwrap();
    assert_eq!(chain[0].as_ref(), leaf_der(&issued.chain_pem));

    let d = e.mgr.store().domain("alpn.example.com").unwrap().unwrap();
    let attempts = e.mgr.store().attempts(d.id, 10).unwrap();
    assert_eq!(attempts.len(), 2, "{attempts:?}");
    assert_eq!(attempts[1].challenge, Some(ChallengeKind::Http01));
    assert_eq!(attempts[1].outcome, AttemptOutcome::Failed);
    assert!(
        attempts[1].error.as_deref().unwrap().contains("http-01"),
        "{attempts:?}"
    );
    assert_eq!(attempts[0].challenge, Some(ChallengeKind::TlsAlpn01));
    assert_eq!(attempts[0].outcome, AttemptOutcome::Issued);
    assert_eq!(d.preferred_challenge, Some(ChallengeKind::TlsAlpn01));

    // Next time the challenge that worked goes first: one order only.
    let again = e.mgr.issue("alpn.example.com").await.unwrap();
    assert_ne!(again.serial, issued.serial);
    let attempts = e.mgr.store().attempts(d.id, 10).unwrap();
    assert_eq!(attempts.len(), 3, "{attempts:?}");
    assert_eq!(attempts[0].challenge, Some(ChallengeKind::TlsAlpn01));
    let chain = tls_connect(tls, "alpn.example.com", &root).await.unwrap();
    assert_eq!(chain[0].as_ref(), leaf_der(&again.chain_pem));
    e.proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throttle_and_backoff_after_repeated_failures() {
    let policy = Policy {
        max_orders_per_hour: 2,
        backoff_base: Duration::from_secs(600),
        ..policy()
    };
    // Only HTTP-01, and pebble validates it on a dead port: every order fails.
    let Some(e) = env(true, false, true, policy).await else {
        return;
    };
    e.mgr.add_domain("fail.example.com", &[]).unwrap();
    for _ in 0..2 {
        let err = e.mgr.issue("fail.example.com").await.unwrap_err();
        assert!(matches!(err, Error::Acme(_)), "{err}");
        assert!(err.to_string().contains("fail.example.com"), "{err}");
    }
    let d = e.mgr.store().domain("fail.example.com").unwrap().unwrap();
    let orders_before = e.pebble.log().matches("POST /order-plz").count();

    // The third order within the hour is refused locally, before reaching the CA.
    let err = e.mgr.issue("fail.example.com").await.unwrap_err();
    let Error::Throttled {
        orders,
        limit,
        until,
        ..
    } = err
    else {
        panic!("expected throttling, got {err}");
    };
    assert_eq!((orders, limit), (2, 2));
    assert!(until > e.clock.now() && until <= e.clock.now() + 3600);
    assert_eq!(
        e.pebble.log().matches("POST /order-plz").count(),
        orders_before
    );

    let attempts = e.mgr.store().attempts(d.id, 10).unwrap();
    let outcomes: Vec<_> = attempts.iter().map(|a| a.outcome).collect();
    assert_eq!(
        outcomes,
        [
            AttemptOutcome::Throttled,
            AttemptOutcome::Failed,
            AttemptOutcome::Failed
        ]
    );
    for a in &attempts[1..] {
        let err = a.error.as_deref().unwrap();
        assert!(err.starts_with("http-01:"), "{err}");
    }
    // Backoff doubles (with jitter in [d/2, d]): 600 s after the first failure, 1200 s after the second.
    let first = &attempts[2];
    let second = &attempts[1];
    let b1 = first.retry_after.unwrap() - first.finished_at.unwrap();
    let b2 = second.retry_after.unwrap() - second.finished_at.unwrap();
    assert!((300..=600).contains(&b1), "{b1}");
    assert!((600..=1200).contains(&b2), "{b2}");

    // The automatic check waits.
    let actions = e.mgr.renew_due().await.unwrap();
    assert!(
        matches!(actions[..], [(_, RenewalAction::BackingOff { .. })]),
        "{actions:?}"
    );
    // Two hours later the throttle window and the backoff are over: it tries (and fails) again.
    e.clock.advance(Duration::from_secs(7200));
    let actions = e.mgr.renew_due().await.unwrap();
    assert!(
        matches!(actions[..], [(_, RenewalAction::Failed(Error::Acme(_)))]),
        "{actions:?}"
    );
    assert_eq!(e.mgr.store().attempts(d.id, 10).unwrap().len(), 4);
    // Events record each failure and the throttling.
    let kinds: Vec<String> = e
        .mgr
        .store()
        .events(20)
        .unwrap()
        .into_iter()
        .map(|e| e.kind)
        .collect();
    assert!(
        kinds.iter().filter(|k| *k == "acme.failed").count() >= 3,
        "{kinds:?}"
    );
    assert!(kinds.iter().any(|k| k == "acme.throttled"), "{kinds:?}");
    e.proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_loop_issues_new_domains_and_stops_on_cancel() {
    let Some(e) = env(false, true, true, policy()).await else {
        return;
    };
    let tls = e.proxy.local_addr("websecure").unwrap();
    let root = e.pebble.issuing_root_pem.clone();
    let cancel = tokio_util::sync::CancellationToken::new();
    let task = tokio::spawn(e.mgr.clone().run(cancel.clone()));
    e.mgr.add_domain("loop.example.com", &[]).unwrap();
    e.mgr.wake();
    // Poll until the loop has issued and the proxy serves it.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        if tls_connect(tls, "loop.example.com", &root).await.is_ok() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "not issued by the loop:\n{}",
            e.pebble.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    cancel.cancel();
    tokio::time::timeout(Duration::from_secs(10), task)
        .await
        .expect("the loop stops on cancel")
        .unwrap();
    e.proxy.shutdown().await;
}
