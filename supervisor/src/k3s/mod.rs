//! k3s under supervision: its configuration file, the air-gap images, the child process kept
//! alive with backoff and a crash-loop state, orphan reaping, readiness, and certificate rotation.
//!
//! Only this module (with `crate::kube`'s exec) starts processes in Gantry. The process calls sit
//! behind [`process::ProcessControl`], so the supervision logic is tested with real child
//! processes (the `child-fixture` test program), not with k3s, which cannot run on build
//! machines. [`start`] wires the parts together for `gantry run`.

pub mod airgap;
pub mod certs;
pub mod config;
pub mod process;
pub mod readiness;
pub mod reaper;
pub mod supervise;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

pub use config::{K3sPaths, K3sSettings};
pub use process::{CommandSpec, Exit, LineSink, OsProcesses, ProcessControl, RunningProcess};
pub use supervise::{Policy, Request, State, Supervised, supervise};

/// Errors of the k3s module.
#[derive(Debug, thiserror::Error)]
pub enum K3sError {
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot render the k3s configuration: {0}")]
    Render(String),
    #[error("Kubernetes API: {0}")]
    Kube(String),
    #[error("the cluster did not become ready: {0}")]
    NotReady(String),
}

impl K3sError {
    pub(crate) fn io(path: &Path, source: std::io::Error) -> K3sError {
        K3sError::Io {
            path: path.display().to_string(),
            source,
        }
    }
}

/// How `gantry run` starts k3s.
#[derive(Debug, Clone)]
pub struct StartOptions {
    /// The k3s binary (`/usr/local/bin/k3s` on the appliance).
    pub binary: PathBuf,
    pub paths: K3sPaths,
    pub settings: K3sSettings,
    /// The disk image's air-gap archives (placed into `paths.images_dir()`).
    pub images_from: Option<PathBuf>,
    pub policy: Policy,
    /// How often the certificate expiry is checked.
    pub cert_check_interval: Duration,
}

impl StartOptions {
    pub fn new(binary: PathBuf, data_root: &Path) -> StartOptions {
        StartOptions {
            binary,
            paths: K3sPaths::under(data_root),
            settings: K3sSettings::default(),
            images_from: None,
            policy: Policy::default(),
            cert_check_interval: Duration::from_secs(6 * 3600),
        }
    }
}

/// A running, supervised k3s.
#[derive(Debug)]
pub struct K3s {
    pub supervised: Supervised,
    pub paths: K3sPaths,
    pub node_name: String,
    /// Children the orphan reaper must leave alone. Gantry is a subreaper once k3s runs: any
    /// other code that spawns processes (backups) registers their pids here, or uses
    /// [`OsProcesses`] with it, so the reaper never takes an exit status their owner awaits.
    pub managed: reaper::Managed,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl K3s {
    /// Waits for `/readyz` and the node's Ready condition.
    pub async fn wait_ready(
        &self,
        timeout: Duration,
        progress: impl FnMut(&readiness::Progress),
    ) -> Result<(), K3sError> {
        readiness::wait_ready(&self.paths.kubeconfig, &self.node_name, timeout, progress).await
    }

    /// Waits until k3s has stopped (after the stop token given to [`start`] fired).
    pub async fn join(self) {
        self.supervised.join().await;
        for t in self.tasks {
            t.abort();
        }
    }
}

/// Writes the configuration, places the air-gap images, becomes a subreaper, starts k3s under
/// supervision and the certificate check. Stops everything when `stop` fires.
pub fn start(
    opts: StartOptions,
    sink: Option<LineSink>,
    stop: CancellationToken,
) -> Result<K3s, K3sError> {
    config::write_config(&opts.paths, &opts.settings)?;
    if let Some(from) = &opts.images_from {
        let placed = airgap::place_images(from, &opts.paths.images_dir())?;
        tracing::info!(?placed, "air-gap images in place");
    }
    if let Err(e) = reaper::become_subreaper() {
        tracing::warn!(error = %e, "cannot become a child subreaper: orphans go to PID 1");
    }
    let managed = reaper::Managed::default();
    let mut tasks = vec![reaper::spawn_reaper(
        managed.clone(),
        Duration::from_secs(30),
        stop.clone(),
        None,
    )];
    let ctl: Arc<dyn ProcessControl> = Arc::new(OsProcesses::for_k3s(Some(managed.clone())));
    let spec = CommandSpec {
        program: opts.binary.clone(),
        args: config::server_args(&opts.paths),
        env: Vec::new(),
        sink,
    };
    let supervised = supervise(ctl, spec, opts.policy.clone(), stop.clone());
    tasks.push(certs::spawn_rotation_check(
        certs::cert_dirs(&opts.paths.data_dir),
        opts.cert_check_interval,
        supervised.requests(),
        stop,
    ));
    Ok(K3s {
        supervised,
        paths: opts.paths,
        node_name: opts.settings.node_name,
        managed,
        tasks,
    })
}
