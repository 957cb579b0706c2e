//! The crate's error type.

use std::path::PathBuf;

use crate::certs::ImportError;

/// Errors of the supervisor's public API. `Display` says this level only; sources carry the rest.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    // The detail is part of the message (no `source`), so a chain printer does not repeat it.
    #[error("database error: {0}")]
    Db(rusqlite::Error),
    #[error("{what} `{}`", path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Invalid(String),
    #[error("no domain `{0}` is configured")]
    UnknownDomain(String),
    #[error("no external route #{0}")]
    UnknownRoute(i64),
    #[error("certificate rejected: {0}")]
    Import(ImportError),
    #[error("ACME: {0}")]
    Acme(String),
    #[error(
        "ACME order for `{domain}` refused by the throttle: {orders} orders in the last hour \
         (limit {limit}); next possible at unix time {until}"
    )]
    Throttled {
        domain: String,
        orders: u32,
        limit: u32,
        until: i64,
    },
    #[error(
        "no challenge can work for `{0}`: enable a plain-HTTP entrypoint (HTTP-01) or a TLS entrypoint (TLS-ALPN-01)"
    )]
    NoChallenge(String),
    #[error("cannot build a certificate: {0}")]
    Cert(String),
    /// Sign-in, session, CSRF and setup-token failures (messages safe for the client).
    #[error("{0}")]
    Auth(#[from] crate::auth::AuthError),
    /// An input that fails validation; `field` names the form field it belongs to.
    #[error("{message}")]
    Field {
        field: &'static str,
        message: String,
    },
    #[error("proxy: {0}")]
    Proxy(#[from] gantry_proxy::ProxyError),
}

impl From<rusqlite::Error> for Error {
    fn from(e: rusqlite::Error) -> Self {
        Error::Db(e)
    }
}

impl From<ImportError> for Error {
    fn from(e: ImportError) -> Self {
        Error::Import(e)
    }
}

impl From<gantry_proxy::tls::CertError> for Error {
    fn from(e: gantry_proxy::tls::CertError) -> Self {
        Error::Cert(e.to_string())
    }
}

impl From<rcgen::Error> for Error {
    fn from(e: rcgen::Error) -> Self {
        Error::Cert(e.to_string())
    }
}
