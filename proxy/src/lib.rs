//! Gantry's ingress proxy: the data plane every byte a user sends to the appliance goes through.
//!
//! It owns HTTP/1.1, HTTP/2 and WebSocket proxying, TLS termination with SNI, routing with Traefik
//! v3 rules, middlewares, load balancing with health checks, hot reload, graceful drain, access logs,
//! metrics and a read-only API. Configuration is Traefik v3's static and dynamic (file provider)
//! format, so an operator's existing Traefik setup works unchanged.
//!
//! It does **not** know about SQLite, Kubernetes, ACME accounts or the web UI. Callers hand it
//! immutable inputs and it swaps them in atomically:
//! - routes and services as a [`config::DynamicConfig`] per provider ([`Proxy::set_provider`]);
//!   the `file` provider is built in ([`provider`]);
//! - certificates through [`tls::CertStore`] ([`Proxy::certs`]);
//! - ACME challenge answers through [`tls::AcmeChallenges`] (HTTP-01) and
//!   [`tls::CertStore::set_acme_alpn`] (TLS-ALPN-01).
//!
//! ```text
//! accept (per-core runtime, SO_REUSEPORT) -> TLS (SNI -> cert, ALPN -> h2/http1.1/acme-tls/1)
//!   -> hyper connection -> handler: ACME HTTP-01? -> snapshot.load() -> route table (host index,
//!      priority order) -> middlewares -> service (WRR / sticky / health) -> forward (pooled client)
//!   -> metrics + access log
//! reload: file change -> parse -> compile Snapshot -> ArcSwap::store (in-flight requests keep theirs)
//! ```

pub mod accesslog;
pub mod body;
pub mod config;
pub mod context;
mod error;
pub mod forward;
pub mod forwarded;
mod handler;
pub mod metrics;
pub mod middleware;
pub mod pool;
pub mod provider;
pub mod rule;
pub mod server;
pub mod service;
pub mod snapshot;
pub mod state;
pub mod tls;
pub mod websocket;

mod proxy;

pub use error::ProxyError;
pub use proxy::{Proxy, ProxyOptions};
pub use snapshot::Snapshot;
