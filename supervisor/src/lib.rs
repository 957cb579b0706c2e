//! The control plane of the appliance (not built yet: see the certificate, web UI and cluster issues).
//!
//! It will own everything that has state or spawns processes: the SQLite store (settings, domains,
//! certificates, users, events), the ACME certificate manager, the k3s child process and its
//! supervision, the stack in `manifests/` applied with server-side apply, the watch that turns
//! Ingress and EndpointSlices into proxy routes, backups and upgrades.
//!
//! It hands the proxy immutable snapshots (routes, certificates) through `gantry-proxy`'s public API
//! and never reaches into the proxy's internals. It knows nothing of HTML or HTTP handlers for the
//! browser: that is `gantry-web-ui`, which calls this crate.

pub mod ingress;
pub mod k3s;
pub mod kube;
pub mod manifests;
