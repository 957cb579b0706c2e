//! The control plane of the appliance: everything that has state, talks to a CA or (later) spawns
//! processes.
//!
//! It owns today:
//! - [`store`]: the SQLite database (settings, domains, certificates, ACME accounts and attempts,
//!   the events log), with numbered idempotent migrations. No SQL exists outside that module.
//! - [`certs`]: the certificate manager: the self-signed bootstrap certificate, ACME issuance and
//!   renewal with instant-acme (HTTP-01 and TLS-ALPN-01 answered by the proxy), the per-domain
//!   order throttle and backoff, custom certificate import, expiry warnings.
//! - [`clock`]: the time source, so that renewal can be tested with a clock moved forward.
//!
//! - [`auth`]: the setup token, administrator accounts (argon2id), sessions with idle and absolute
//!   expiry, CSRF tokens, API tokens, and sign-in throttling per client address and username.
//! - [`setup`]: the first-run wizard's inputs, their validation and the install progress.
//! - [`cluster`]: the seam the cluster supervisor plugs into; this version has none
//!   ([`cluster::NoCluster`] says so instead of pretending).
//! - [`appliance`]: [`appliance::Appliance`], the one API the web UI and the JSON API call
//!   (setup, domains, certificates, routes, events, settings).
//! - [`daemon`]: `gantry run`'s composition: store, proxy entrypoints, appliance, setup token.
//!
//! - [`k3s`]: k3s's configuration, air-gap images and supervision of the `k3s server` child
//!   (backoff, crash-loop state, SIGTERM then SIGKILL, reaping, certificate rotation).
//! - [`manifests`]: the chat stack (Rocket.Chat, MongoDB replica set) as typed k8s-openapi objects.
//! - [`kube`]: kube-rs server-side apply, prune, rollout waits, the Ingress watch and status.
//! - [`ingress`]: the pure translation of Ingress/Service/EndpointSlice to proxy routes.
//! - [`external`]: routes to services outside the cluster (a host and path prefix to an
//!   `http(s)://host:port` the operator gives), validated and turned into the proxy's `external`
//!   provider; stored in [`store`], applied by [`appliance`] at start and after every change.
//!
//! It will own (see their issues): backups and upgrades.
//!
//! ```text
//! Store (gantry.db) --load_stored--> proxy CertStore::set_managed   (before the first accept)
//! CertManager --ACME order--> CA --validation--> proxy (HTTP-01 token / acme-tls/1 certificate)
//!             --chain+key committed to Store--> set_managed again (no restart)
//! ```
//!
//! It hands the proxy immutable inputs through `gantry-proxy`'s public API (`CertStore`,
//! `AcmeChallenges`) and never reaches into the proxy's internals. It knows nothing of HTML or
//! HTTP handlers for the browser: that is `gantry-web-ui`, which calls this crate.

// Tests may unwrap: a panic there is a failed test with its message.
#![cfg_attr(test, allow(clippy::unwrap_used))]

pub mod appliance;
pub mod auth;
pub mod certs;
pub mod clock;
pub mod cluster;
pub mod daemon;
mod error;
pub mod external;
pub mod ingress;
pub mod k3s;
pub mod kube;
pub mod manifests;
pub mod setup;
pub mod store;
#[cfg(feature = "testing")]
pub mod testing;

pub use error::Error;
