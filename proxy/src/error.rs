//! The proxy crate's error type.

use std::net::SocketAddr;

/// What can go wrong starting or reconfiguring the proxy.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error("invalid configuration: {0}")]
    Compile(#[from] crate::snapshot::CompileError),
    #[error("entrypoint `{entrypoint}`: cannot listen on {addr}: {source}")]
    Bind {
        entrypoint: String,
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("{0}")]
    Invalid(String),
    #[error("certificates: {0}")]
    Cert(#[from] crate::tls::CertError),
    #[error("I/O: {0}")]
    Io(#[from] std::io::Error),
}
