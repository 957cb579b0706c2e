//! Talking to k3s's API server (kube-rs over rustls): server-side apply of the rendered stack
//! with pruning, rollout waits, the replica-set initiation through `kubectl exec`-style calls,
//! the dashboard's cluster status, and the live Ingress provider (watchers -> translation ->
//! `Proxy::set_provider("kubernetes", ..)`).
//!
//! The decisions are pure functions next to their IO and unit-tested ([`prune_plan`],
//! [`rollout::deployment_rollout`], [`status::summarize`]); the IO needs a cluster and is run by
//! the ignored test `tests/k3s_real.rs` (`GANTRY_K3S_BIN`). The web UI never calls this module
//! directly: it reads the status and events the supervisor publishes.

pub mod apply;
pub mod cluster;
pub mod install;
pub mod mongo;
pub mod rollout;
pub mod run;
pub mod status;
pub mod watch;

pub use apply::{ObjectRef, apply_stack, prune_plan};

/// Errors talking to the cluster.
#[derive(Debug, thiserror::Error)]
pub enum KubeError {
    #[error("Kubernetes API: {0}")]
    Api(#[from] ::kube::Error),
    #[error("{0}")]
    Manifest(#[from] crate::manifests::ManifestError),
    #[error("timed out after {after:?} waiting for {what}: {last}")]
    Timeout {
        what: String,
        after: std::time::Duration,
        last: String,
    },
    #[error("{what} failed: {reason}")]
    Failed { what: String, reason: String },
}

/// The field manager of every server-side apply Gantry makes.
pub const FIELD_MANAGER: &str = "gantry";
