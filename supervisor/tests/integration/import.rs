//! Importing an operator's certificate: each failed check is named, nothing changes on error,
//! and a valid certificate is served at once.

use std::sync::Arc;

use gantry_proxy::tls::CertStore;
use gantry_supervisor::Error;
use gantry_supervisor::certs::{AcmeConfig, CertManager, Directory, ImportCheck};
use gantry_supervisor::clock::{Clock, SystemClock};
use gantry_supervisor::store::{CertSource, Store};
use gantry_supervisor::testing::{start_proxy, tls_connect};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};

use crate::common::policy;

struct Ca {
    pem: String,
    issuer: Issuer<'static, KeyPair>,
}

fn ca(name: &str) -> Ca {
    let key = KeyPair::generate().unwrap();
    let mut p = CertificateParams::default();
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.distinguished_name.push(DnType::CommonName, name);
    let cert = p.self_signed(&key).unwrap();
    Ca {
        pem: cert.pem(),
        issuer: Issuer::new(p, key),
    }
}

/// (leaf PEM, key PEM) for `names`, valid from `from` to `to` (Unix seconds).
fn leaf(ca: &Ca, names: &[&str], from: i64, to: i64) -> (String, String) {
    let key = KeyPair::generate().unwrap();
    let mut p =
        CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap();
    p.not_before = time::OffsetDateTime::from_unix_timestamp(from).unwrap();
    p.not_after = time::OffsetDateTime::from_unix_timestamp(to).unwrap();
    let cert = p.signed_by(&key, &ca.issuer).unwrap();
    (cert.pem(), key.serialize_pem())
}

fn manager(dir: &std::path::Path, certs: Arc<CertStore>) -> CertManager {
    let store = Arc::new(Store::open(dir, 0).unwrap());
    CertManager::new(
        store,
        Arc::new(SystemClock),
        certs,
        AcmeConfig {
            directory: Directory::LetsEncryptStaging,
            extra_root: None,
            email: None,
            http01: false,
            tls_alpn01: false,
        },
        policy(),
    )
}

#[tokio::test]
async fn import_checks_are_named_and_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mgr = manager(dir.path(), CertStore::new().unwrap());
    let now = SystemClock.now();
    let day = 86_400;
    let ca1 = ca("Gantry test CA 1");
    let ca2 = ca("Gantry test CA 2");
    let (good, good_key) = leaf(&ca1, &["app.example.com"], now - day, now + 60 * day);
    let (_, other_key) = leaf(&ca1, &["app.example.com"], now - day, now + 60 * day);
    let (expired, expired_key) = leaf(&ca1, &["app.example.com"], now - 90 * day, now - day);
    let (future, future_key) = leaf(&ca1, &["app.example.com"], now + day, now + 90 * day);
    let (other_name, other_name_key) =
        leaf(&ca1, &["other.example.com"], now - day, now + 60 * day);

    let cases: Vec<(&str, String, String, ImportCheck, &str)> = vec![
        (
            "garbage chain",
            "not a pem".into(),
            good_key.clone(),
            ImportCheck::ChainParses,
            "BEGIN CERTIFICATE",
        ),
        (
            "corrupt certificate",
            "-----BEGIN CERTIFICATE-----\nMIIBAAAA\n-----END CERTIFICATE-----\n".into(),
            good_key.clone(),
            ImportCheck::ChainParses,
            "",
        ),
        (
            "garbage key",
            good.clone(),
            "no key here".into(),
            ImportCheck::KeyParses,
            "no private key",
        ),
        (
            "key of another certificate",
            good.clone(),
            other_key.clone(),
            ImportCheck::KeyMatches,
            "does not belong",
        ),
        (
            "chain out of order",
            format!("{good}{}", ca2.pem),
            good_key.clone(),
            ImportCheck::ChainOrder,
            "did not issue it",
        ),
        (
            "expired",
            expired.clone(),
            expired_key.clone(),
            ImportCheck::NotExpired,
            "expired on",
        ),
        (
            "not yet valid",
            future.clone(),
            future_key.clone(),
            ImportCheck::AlreadyValid,
            "valid only from",
        ),
        (
            "other domain",
            other_name.clone(),
            other_name_key.clone(),
            ImportCheck::CoversDomain,
            "does not cover `app.example.com` (it covers: other.example.com)",
        ),
    ];
    for (what, chain, key, check, detail) in cases {
        let err = mgr.import("app.example.com", &chain, &key).unwrap_err();
        let Error::Import(ref ie) = err else {
            panic!("{what}: expected an import error, got {err}");
        };
        assert_eq!(ie.check, check, "{what}: {err}");
        assert!(err.to_string().contains(detail), "{what}: {err}");
        assert!(
            err.to_string()
                .starts_with(&format!("certificate rejected: check `{check}` failed")),
            "{what}: {err}"
        );
        // Nothing changed.
        assert!(mgr.store().domains().unwrap().is_empty(), "{what}");
        assert!(
            mgr.store().current_certificates().unwrap().is_empty(),
            "{what}"
        );
        assert!(mgr.store().events(10).unwrap().is_empty(), "{what}");
    }
    let err = mgr.import("not a domain", &good, &good_key).unwrap_err();
    assert!(err.to_string().contains("not a valid domain name"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn valid_import_is_stored_and_served_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let certs = CertStore::new().unwrap();
    let proxy = start_proxy(certs.clone(), true).unwrap();
    let tls = proxy.local_addr("websecure").unwrap();
    let mgr = manager(dir.path(), certs);
    let now = SystemClock.now();
    let day = 86_400;
    let ca1 = ca("Gantry test CA");
    // A wildcard certificate with its chain (leaf, then the CA).
    let (cert, key) = leaf(&ca1, &["*.example.com"], now - day, now + 10 * day);
    let chain = format!("{cert}{}", ca1.pem);
    let rec = mgr.import("app.example.com", &chain, &key).unwrap();
    assert_eq!(rec.source, CertSource::Uploaded);
    assert_eq!(rec.names, vec!["*.example.com"]);
    let served = tls_connect(tls, "app.example.com", &ca1.pem).await.unwrap();
    assert_eq!(served.len(), 2, "the chain is served whole");

    // Uploaded certificates are not renewed by ACME, and are warned about near expiry.
    let actions = mgr.renew_due().await.unwrap();
    assert!(
        matches!(
            actions[..],
            [(_, gantry_supervisor::certs::RenewalAction::Uploaded)]
        ),
        "{actions:?}"
    );
    let w = mgr.warnings().unwrap();
    assert_eq!(w.len(), 1);
    assert!(
        w[0].message.starts_with("uploaded certificate expires in"),
        "{}",
        w[0].message
    );
    proxy.shutdown().await;
}

/// The wizard's self-signed mode: the domain gets its own self-signed certificate, listed as
/// such (not as uploaded), served for its name while the machine's bootstrap certificate stays
/// the default, and renewed as self-signed, never by ACME behind the operator's back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn self_signed_domain_is_served_and_renewed_without_acme() {
    use gantry_supervisor::certs::{MachineIdentity, RenewalAction};
    use gantry_supervisor::clock::OffsetClock;

    let dir = tempfile::tempdir().unwrap();
    let certs = CertStore::new().unwrap();
    let proxy = start_proxy(certs.clone(), true).unwrap();
    let tls = proxy.local_addr("websecure").unwrap();
    let clock = Arc::new(OffsetClock::new());
    let store = Arc::new(Store::open(dir.path(), 0).unwrap());
    let mgr = CertManager::new(
        store.clone(),
        clock.clone(),
        certs,
        AcmeConfig {
            // Unreachable here: an ACME attempt would fail and be recorded.
            directory: Directory::LetsEncryptStaging,
            extra_root: None,
            email: None,
            http01: false,
            tls_alpn01: false,
        },
        policy(),
    );
    mgr.bootstrap(&MachineIdentity::detect()).unwrap();
    let rec = mgr.self_signed_domain("Chat.Example.com").unwrap();
    assert_eq!(rec.source, CertSource::SelfSigned);
    assert_eq!(rec.domain.as_deref(), Some("chat.example.com"));
    assert_eq!(rec.names, vec!["chat.example.com"]);
    let served = tls_connect(tls, "chat.example.com", &rec.chain_pem)
        .await
        .unwrap();
    assert_eq!(served.len(), 1);
    // The bootstrap certificate (host name and addresses) is still the default: a client without
    // a matching name (here the address) gets it, not the domain's.
    let boot = store.current_self_signed().unwrap().unwrap();
    assert!(boot.domain_id.is_none());
    tls_connect(tls, "127.0.0.1", &boot.chain_pem)
        .await
        .unwrap();
    assert!(tls_connect(tls, "127.0.0.1", &rec.chain_pem).await.is_err());

    let actions = mgr.renew_due().await.unwrap();
    assert!(
        matches!(actions[..], [(_, RenewalAction::NotDue)]),
        "{actions:?}"
    );
    // Two thirds of its lifetime later it is due: a new self-signed certificate, no ACME order.
    let lifetime = rec.not_after - rec.not_before;
    clock.set_offset(lifetime * 2 / 3 + 86_400);
    let actions = mgr.renew_due().await.unwrap();
    let [(_, RenewalAction::SelfSigned(new))] = &actions[..] else {
        panic!("expected a self-signed renewal: {actions:?}");
    };
    assert_eq!(new.source, CertSource::SelfSigned);
    assert_ne!(new.serial, rec.serial);
    assert!(new.not_after > rec.not_after);
    let d = store.domain("chat.example.com").unwrap().unwrap();
    assert!(
        store.attempts(d.id, 10).unwrap().is_empty(),
        "no ACME attempt"
    );
    // The proxy serves the new one at once (checked on the proxy's certificate store: a TLS
    // client would refuse it, as its validity starts in the test clock's future).
    use rustls::pki_types::{CertificateDer, pem::PemObject};
    let served = mgr.cert_store().resolve_sni(Some("chat.example.com"));
    let new_der = CertificateDer::from_pem_slice(new.chain_pem.as_bytes()).unwrap();
    assert_eq!(served.cert[0], new_der);
    proxy.shutdown().await;
}
