//! One ACME order with instant-acme, answered through the proxy's challenge hooks.

use std::io::BufReader;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use gantry_proxy::tls::{AcmeChallenges, CertStore};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use instant_acme::{
    Account, AccountCredentials, AuthorizationStatus, BodyWrapper, CertificateIdentifier,
    ChallengeType, HttpClient, Identifier, NewAccount, NewOrder, OrderStatus, RetryPolicy,
};
use rustls::pki_types::CertificateDer;

use crate::Error;
use crate::store::{AcmeAccountRecord, ChallengeKind, Store};

/// The HTTP client towards the CA: the system's roots plus an optional extra root CA file
/// (a private CA, or pebble's listener certificate in tests).
pub(crate) fn http_client(extra_root: Option<&Path>) -> Result<Box<dyn HttpClient>, Error> {
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls_native_certs::load_native_certs().certs {
        let _ = roots.add(c);
    }
    if let Some(path) = extra_root {
        let pem = std::fs::read(path).map_err(|source| Error::Io {
            what: "cannot read the ACME root CA file",
            path: path.to_owned(),
            source,
        })?;
        let certs: Vec<CertificateDer<'static>> =
            rustls_pemfile::certs(&mut BufReader::new(&pem[..]))
                .collect::<Result<_, _>>()
                .map_err(|e| {
                    Error::Invalid(format!("{}: PEM does not parse: {e}", path.display()))
                })?;
        if certs.is_empty() {
            return Err(Error::Invalid(format!(
                "{}: no certificate found in the ACME root CA file",
                path.display()
            )));
        }
        for c in certs {
            roots.add(c).map_err(|e| {
                Error::Invalid(format!(
                    "{}: root certificate rejected: {e}",
                    path.display()
                ))
            })?;
        }
    }
    let tls = rustls::ClientConfig::builder_with_provider(gantry_proxy::tls::provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::Acme(format!("TLS client: {e}")))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_only()
        .enable_http1()
        .enable_http2()
        .build();
    let client: Client<_, BodyWrapper<Bytes>> = Client::builder(TokioExecutor::new()).build(https);
    Ok(Box::new(client))
}

fn acme_err(context: &str) -> impl Fn(instant_acme::Error) -> Error + '_ {
    move |e| Error::Acme(format!("{context}: {e}"))
}

/// The stored account for `directory_url`, or a new one (terms accepted), stored before use.
pub(crate) async fn account(
    store: &Store,
    directory_url: &str,
    extra_root: Option<&Path>,
    email: Option<&str>,
    now: i64,
) -> Result<Account, Error> {
    let contact: Vec<String> = email.map(|e| format!("mailto:{e}")).into_iter().collect();
    let contact_refs: Vec<&str> = contact.iter().map(String::as_str).collect();
    if let Some(rec) = store.acme_account(directory_url)? {
        let creds: AccountCredentials = serde_json::from_str(&rec.credentials_json)
            .map_err(|e| Error::Invalid(format!("stored ACME account does not parse: {e}")))?;
        let account = Account::builder_with_http(http_client(extra_root)?)
            .from_credentials(creds)
            .await
            .map_err(acme_err("cannot reach the ACME directory"))?;
        if rec.email.as_deref() != email && email.is_some() {
            account
                .update_contacts(&contact_refs)
                .await
                .map_err(acme_err("cannot update the account's email"))?;
            store.save_acme_account(&AcmeAccountRecord {
                email: email.map(str::to_owned),
                ..rec
            })?;
        }
        return Ok(account);
    }
    let (account, creds) = Account::builder_with_http(http_client(extra_root)?)
        .create(
            &NewAccount {
                contact: &contact_refs,
                terms_of_service_agreed: true,
                only_return_existing: false,
            },
            directory_url.to_owned(),
            None,
        )
        .await
        .map_err(acme_err("cannot create the ACME account"))?;
    let credentials_json = serde_json::to_string(&creds)
        .map_err(|e| Error::Invalid(format!("cannot serialise the ACME account: {e}")))?;
    store.save_acme_account(&AcmeAccountRecord {
        directory_url: directory_url.to_owned(),
        email: email.map(str::to_owned),
        credentials_json,
        created_at: now,
    })?;
    tracing::info!(directory = directory_url, "ACME account created");
    Ok(account)
}

/// Where challenge answers go: the proxy's hooks.
#[derive(Debug, Clone)]
pub(crate) struct Hooks {
    pub(crate) certs: Arc<CertStore>,
    pub(crate) http01: Option<Arc<AcmeChallenges>>,
}

/// Answers published for one order; removed when dropped (also on error or cancellation).
struct Published<'a> {
    hooks: &'a Hooks,
    tokens: Vec<String>,
    alpn: Vec<String>,
}

impl Drop for Published<'_> {
    fn drop(&mut self) {
        if let Some(h) = &self.hooks.http01 {
            for t in &self.tokens {
                h.remove(t);
            }
        }
        for d in &self.alpn {
            self.hooks.certs.clear_acme_alpn(d);
        }
    }
}

/// Why an order did not produce a certificate.
#[derive(Debug)]
pub(crate) enum OrderError {
    /// The CA does not offer this challenge type: another type may work.
    NotOffered(String),
    /// Validation failed (or did not finish): another challenge type may work.
    Validation(String),
    /// Anything else (the CA refused the order, network, finalisation).
    Other(String),
}

impl OrderError {
    pub(crate) fn message(&self) -> &str {
        match self {
            OrderError::NotOffered(m) | OrderError::Validation(m) | OrderError::Other(m) => m,
        }
    }

    pub(crate) fn may_fall_back(&self) -> bool {
        matches!(self, OrderError::NotOffered(_) | OrderError::Validation(_))
    }
}

fn other(context: &str) -> impl Fn(instant_acme::Error) -> OrderError + '_ {
    move |e| OrderError::Other(format!("{context}: {e}"))
}

/// A certificate chain and its key, from a finished order.
pub(crate) struct Issued {
    pub(crate) chain_pem: String,
    pub(crate) key_pem: String,
}

/// Places one order for `names`, answers it with `challenge`, finalises with a fresh key.
pub(crate) async fn order(
    account: &Account,
    names: &[String],
    challenge: ChallengeKind,
    hooks: &Hooks,
    timeout: Duration,
    replaces: Option<CertificateIdentifier<'static>>,
) -> Result<Issued, OrderError> {
    let identifiers: Vec<Identifier> = names.iter().map(|n| Identifier::Dns(n.clone())).collect();
    let mut new_order = NewOrder::new(&identifiers);
    if let Some(r) = replaces {
        new_order = new_order.replaces(r);
    }
    let mut order = account
        .new_order(&new_order)
        .await
        .map_err(other("the CA refused the order"))?;
    let want = match challenge {
        ChallengeKind::Http01 => ChallengeType::Http01,
        ChallengeKind::TlsAlpn01 => ChallengeType::TlsAlpn01,
    };
    let mut published = Published {
        hooks,
        tokens: Vec::new(),
        alpn: Vec::new(),
    };
    {
        let mut authzs = order.authorizations();
        while let Some(authz) = authzs.next().await {
            let mut authz = authz.map_err(other("cannot fetch an authorization"))?;
            match authz.status {
                AuthorizationStatus::Pending => {}
                AuthorizationStatus::Valid => continue,
                status => {
                    return Err(OrderError::Other(format!(
                        "authorization for `{}` is {status:?}",
                        authz.identifier()
                    )));
                }
            }
            let ident = authz.identifier().to_string();
            let Some(mut ch) = authz.challenge(want.clone()) else {
                return Err(OrderError::NotOffered(format!(
                    "the CA offers no {challenge} challenge for `{ident}`"
                )));
            };
            let key_auth = ch.key_authorization();
            match challenge {
                ChallengeKind::Http01 => {
                    let Some(h) = &hooks.http01 else {
                        return Err(OrderError::NotOffered(
                            "no plain-HTTP entrypoint to answer HTTP-01".into(),
                        ));
                    };
                    h.set(&ch.token, key_auth.as_str());
                    published.tokens.push(ch.token.clone());
                }
                ChallengeKind::TlsAlpn01 => {
                    let cert = super::x509::alpn_challenge_cert(&ident, key_auth.digest().as_ref())
                        .map_err(|e| OrderError::Other(e.to_string()))?;
                    hooks.certs.set_acme_alpn(&ident, cert);
                    published.alpn.push(ident.clone());
                }
            }
            ch.set_ready()
                .await
                .map_err(other("cannot tell the CA the challenge is ready"))?;
        }
    }

    let retry = RetryPolicy::new()
        .initial_delay(Duration::from_millis(200))
        .backoff(1.5)
        .timeout(timeout);
    let status = order.poll_ready(&retry).await;
    let ready = matches!(status, Ok(OrderStatus::Ready));
    if !ready {
        let mut why = Vec::new();
        match &status {
            Ok(s) => why.push(format!("order is {s:?}")),
            Err(instant_acme::Error::Timeout(_)) => why.push("validation timed out".to_owned()),
            Err(e) => why.push(e.to_string()),
        }
        let mut authzs = order.authorizations();
        while let Some(Ok(mut authz)) = authzs.next().await {
            let ident = authz.identifier().to_string();
            if let Ok(state) = authz.refresh().await {
                for c in &state.challenges {
                    if let Some(err) = &c.error {
                        why.push(format!("{ident}: {err}"));
                    }
                }
            }
        }
        return Err(match status {
            Err(instant_acme::Error::Http(_) | instant_acme::Error::Hyper(_)) => {
                OrderError::Other(why.join("; "))
            }
            _ => OrderError::Validation(why.join("; ")),
        });
    }
    drop(published);

    let (csr, key_pem) = super::x509::csr(names).map_err(|e| OrderError::Other(e.to_string()))?;
    order
        .finalize_csr(&csr)
        .await
        .map_err(other("finalisation failed"))?;
    let chain_pem = order
        .poll_certificate(&retry)
        .await
        .map_err(other("cannot download the certificate"))?;
    Ok(Issued { chain_pem, key_pem })
}

/// The ACME Renewal Information window of a certificate: Ok(None) when the CA has no ARI.
pub(crate) async fn renewal_window(
    account: &Account,
    info: &super::x509::CertInfo,
) -> Result<Option<((i64, i64), Duration)>, Error> {
    let Some(id) = cert_identifier(info) else {
        return Ok(None);
    };
    match account.renewal_info(&id).await {
        Ok((ri, retry)) => Ok(Some((
            (
                ri.suggested_window.start.unix_timestamp(),
                ri.suggested_window.end.unix_timestamp(),
            ),
            retry,
        ))),
        Err(instant_acme::Error::Unsupported(_)) => Ok(None),
        Err(e) => Err(Error::Acme(format!("renewal information: {e}"))),
    }
}

/// The RFC 9773 identifier of a certificate (needs its Authority Key Identifier).
pub(crate) fn cert_identifier(
    info: &super::x509::CertInfo,
) -> Option<CertificateIdentifier<'static>> {
    let aki = info.authority_key_id.as_ref()?;
    Some(
        CertificateIdentifier::new(
            rustls::pki_types::Der::from_slice(aki),
            rustls::pki_types::Der::from_slice(&info.raw_serial),
        )
        .into_owned(),
    )
}
