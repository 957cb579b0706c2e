//! [`K3sCluster`]: the [`Cluster`] seam of `gantry run` backed by a supervised k3s.
//!
//! k3s starts with the daemon (its boot overlaps the setup wizard); the stack is installed once
//! setup has named the domain and the chat's administrator, and re-applied on every start after
//! that. [`run_cluster`] does the work and reports [`ClusterEvent`]s; this module folds them
//! into the dashboard's [`ClusterStatus`] ([`View`]) and into the wizard's install steps
//! ([`install_outcome`]). Both folds are pure and unit-tested; the generated stack credentials are
//! kept in a 0600 file under the data directory so every start renders the same Secrets.

use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::{broadcast, mpsc, watch};
use tokio_util::sync::CancellationToken;

use super::install::{Step, Timeouts};
use super::run::{ClusterEvent, ClusterOptions, Desired, run_cluster};
use super::status::ClusterStatus as KubeStatus;
use super::watch::{ProviderStatus, RouteTarget};
use crate::cluster::{
    AppStatus, Cluster, ClusterState, ClusterStatus, ClusterStep, InstallPlan, Report, StepOutcome,
};
use crate::k3s::StartOptions;
use crate::k3s::readiness::Progress;
use crate::k3s::supervise::State as K3sState;
use crate::manifests::{MONGO_NAME, ROCKETCHAT_NAME, StackSecrets, StackSettings};
use crate::store::EventLevel;

/// Where notable cluster events go (the store's event log, shown on the Events page).
pub type EventSink = Arc<dyn Fn(EventLevel, &str, &str) + Send + Sync>;

/// What [`notable`] remembers between events.
#[derive(Debug, Default)]
pub struct NotableState {
    /// Keeps a retried error from being logged again and again.
    last_error: Option<String>,
    /// In a crash loop, each restart is not news: logged again once k3s is ready.
    crash_looping: bool,
}

/// The events worth a line in the event log (state changes, not every poll).
pub fn notable(
    ev: &ClusterEvent,
    st: &mut NotableState,
) -> Option<(EventLevel, &'static str, String)> {
    let last_error = &mut st.last_error;
    match ev {
        ClusterEvent::K3s(K3sState::Running { .. } | K3sState::BackingOff { .. })
            if st.crash_looping =>
        {
            None
        }
        ClusterEvent::K3s(K3sState::CrashLoop { .. }) if st.crash_looping => None,
        ClusterEvent::K3s(K3sState::Running { pid, restarts }) => Some((
            EventLevel::Info,
            "cluster.k3s_running",
            format!("k3s is running (pid {pid}, {restarts} restarts)"),
        )),
        ClusterEvent::K3s(K3sState::BackingOff {
            last_exit, delay, ..
        }) => Some((
            EventLevel::Warning,
            "cluster.k3s_exited",
            format!(
                "k3s exited ({last_exit}); restarting in {}s",
                delay.as_secs()
            ),
        )),
        ClusterEvent::K3s(K3sState::CrashLoop {
            last_exit,
            restarts,
            ..
        }) => Some((EventLevel::Error, "cluster.k3s_crash_loop", {
            st.crash_looping = true;
            format!(
                "k3s is crash-looping: {restarts} restarts, last exit: {last_exit}; further restarts are not logged until it is ready"
            )
        })),
        ClusterEvent::K3s(K3sState::Stopped { last_exit }) => Some((
            EventLevel::Info,
            "cluster.k3s_stopped",
            format!(
                "k3s stopped ({})",
                last_exit.as_deref().unwrap_or("cleanly")
            ),
        )),
        ClusterEvent::Readiness(Progress::Ready) => Some((EventLevel::Info, "cluster.ready", {
            st.crash_looping = false;
            "k3s is ready: API server and node".to_owned()
        })),
        ClusterEvent::Install(s @ Step::Applied { .. }) => {
            Some((EventLevel::Info, "cluster.applied", step_text(s)))
        }
        ClusterEvent::Install(Step::Done) => {
            *last_error = None;
            Some((
                EventLevel::Info,
                "cluster.installed",
                "the chat stack is installed and ready".to_owned(),
            ))
        }
        ClusterEvent::Error(e) if last_error.as_deref() != Some(e.as_str()) => {
            *last_error = Some(e.clone());
            Some((EventLevel::Warning, "cluster.error", e.clone()))
        }
        ClusterEvent::Routes(r) => r.error.as_ref().map(|e| {
            (
                EventLevel::Warning,
                "cluster.routes_refused",
                format!("the proxy refused the cluster's routes (previous routes stay): {e}"),
            )
        }),
        _ => None,
    }
}

/// How `gantry run` runs the cluster.
#[derive(Debug)]
pub struct K3sClusterOptions {
    pub k3s: StartOptions,
    pub timeouts: Timeouts,
    pub status_interval: Duration,
    pub retry: Duration,
    /// The stack's generated credentials (MongoDB root and keyFile, Rocket.Chat's database
    /// user), made on the first install, mode 0600.
    pub secrets_file: PathBuf,
}

/// The dashboard's view of the cluster, folded from [`ClusterEvent`]s.
#[derive(Debug, Clone, Default)]
pub struct View {
    /// Set when the cluster cannot run at all (no k3s binary).
    pub unavailable: Option<String>,
    pub k3s: Option<K3sState>,
    pub readiness: Option<Progress>,
    pub last_error: Option<String>,
    pub status: Option<KubeStatus>,
    pub routes: Option<ProviderStatus>,
    pub install: Option<Step>,
}

impl View {
    pub fn apply(&mut self, ev: &ClusterEvent) {
        match ev {
            ClusterEvent::K3s(s) => self.k3s = Some(s.clone()),
            ClusterEvent::Readiness(p) => {
                if *p == Progress::Ready {
                    self.last_error = None;
                }
                self.readiness = Some(p.clone());
            }
            ClusterEvent::Install(s) => {
                if *s == Step::Done {
                    self.last_error = None;
                }
                self.install = Some(s.clone());
            }
            ClusterEvent::Error(e) => self.last_error = Some(e.clone()),
            ClusterEvent::Status(s) => self.status = Some((**s).clone()),
            ClusterEvent::Routes(r) => self.routes = Some(r.clone()),
        }
    }

    /// The state in one word and a sentence, and one line per application.
    pub fn status(&self) -> ClusterStatus {
        if let Some(why) = &self.unavailable {
            return ClusterStatus {
                state: ClusterState::Failed,
                message: why.clone(),
                apps: Vec::new(),
            };
        }
        let ready = self.readiness == Some(Progress::Ready);
        let (state, mut message) = match &self.k3s {
            None | Some(K3sState::Starting) => (ClusterState::Starting, "k3s is starting".into()),
            Some(K3sState::Running { restarts, .. }) => {
                let restarts = if *restarts > 0 {
                    format!(" ({restarts} restarts)")
                } else {
                    String::new()
                };
                if ready {
                    (ClusterState::Running, format!("k3s is running{restarts}"))
                } else {
                    let why = match &self.readiness {
                        Some(Progress::ApiServerNotReady(w)) => format!(": API server: {w}"),
                        Some(Progress::NodeNotReady(w)) => format!(": node: {w}"),
                        _ => String::new(),
                    };
                    (
                        ClusterState::Starting,
                        format!("k3s is running, not ready yet{restarts}{why}"),
                    )
                }
            }
            Some(K3sState::BackingOff {
                last_exit, delay, ..
            }) => (
                ClusterState::Starting,
                format!(
                    "k3s exited ({last_exit}); restarting in {}s",
                    delay.as_secs()
                ),
            ),
            Some(K3sState::CrashLoop {
                last_exit,
                delay,
                restarts,
            }) => (
                ClusterState::Failed,
                format!(
                    "k3s is crash-looping: {restarts} restarts, last exit: {last_exit}; next try in {}s",
                    delay.as_secs()
                ),
            ),
            Some(K3sState::Stopping) => (ClusterState::Starting, "k3s is stopping".into()),
            Some(K3sState::Stopped { last_exit }) => (
                ClusterState::Failed,
                format!(
                    "k3s stopped{}",
                    last_exit
                        .as_deref()
                        .map(|e| format!(" ({e})"))
                        .unwrap_or_default()
                ),
            ),
        };
        if let Some(e) = &self.last_error {
            message.push_str(&format!("; last error: {e}"));
        }
        ClusterStatus {
            state,
            message,
            apps: self.apps(),
        }
    }

    fn apps(&self) -> Vec<AppStatus> {
        let Some(st) = &self.status else {
            let pending = |name: &str| AppStatus {
                name: name.to_owned(),
                state: "unknown".to_owned(),
                detail: match &self.install {
                    None => "not installed yet".to_owned(),
                    Some(s) => step_text(s),
                },
            };
            return vec![pending("Rocket.Chat"), pending("MongoDB")];
        };
        let mut apps = Vec::new();
        if let Some(n) = &st.node {
            apps.push(AppStatus {
                name: format!("Node {}", n.name),
                state: if n.ready { "ready" } else { "not ready" }.to_owned(),
                detail: n
                    .problem
                    .clone()
                    .unwrap_or_else(|| format!("kubelet {}", n.kubelet_version)),
            });
        }
        for (name, component, ready, ready_word) in [
            ("Rocket.Chat", ROCKETCHAT_NAME, st.chat_ready, "ready"),
            ("MongoDB", MONGO_NAME, st.mongo_primary, "primary"),
        ] {
            let pods: Vec<_> = st
                .pods
                .iter()
                .filter(|p| p.component == component)
                .collect();
            let detail = if pods.is_empty() {
                "no pods".to_owned()
            } else {
                pods.iter()
                    .map(|p| {
                        let mut d = format!("{} {}", p.name, p.phase);
                        if p.restarts > 0 {
                            d.push_str(&format!(", {} restarts", p.restarts));
                        }
                        if let Some(r) = &p.reason {
                            d.push_str(&format!(", {r}"));
                        }
                        if let Some(m) = &p.message {
                            d.push_str(&format!(": {m}"));
                        }
                        d
                    })
                    .collect::<Vec<_>>()
                    .join("; ")
            };
            apps.push(AppStatus {
                name: name.to_owned(),
                state: if ready { ready_word } else { "not ready" }.to_owned(),
                detail,
            });
        }
        apps
    }
}

fn step_text(s: &Step) -> String {
    match s {
        Step::Applied { objects, pruned } => {
            format!("{objects} objects applied, {pruned} pruned")
        }
        Step::ReplicaSet(m) | Step::MongoRollout(m) | Step::ChatRollout(m) => m.clone(),
        Step::Done => "installed".to_owned(),
    }
}

/// Where an install stands, for the wizard's steps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum InstallStage {
    #[default]
    WaitingForK3s,
    Database,
    Chat,
    Finished,
}

/// Maps one event to a wizard step update, advancing `stage`.
pub fn install_outcome(
    stage: &mut InstallStage,
    ev: &ClusterEvent,
) -> Vec<(ClusterStep, StepOutcome)> {
    use ClusterStep::{ChatReady, ClusterStarted, DatabaseReady};
    use StepOutcome::{Done, Failed, Running};
    let current = |s: InstallStage| match s {
        InstallStage::WaitingForK3s => ClusterStarted,
        InstallStage::Database => DatabaseReady,
        InstallStage::Chat | InstallStage::Finished => ChatReady,
    };
    match ev {
        ClusterEvent::K3s(K3sState::CrashLoop { last_exit, .. })
            if *stage == InstallStage::WaitingForK3s =>
        {
            vec![(
                ClusterStarted,
                Failed(format!("k3s is crash-looping: {last_exit}")),
            )]
        }
        ClusterEvent::K3s(K3sState::BackingOff {
            last_exit, delay, ..
        }) if *stage == InstallStage::WaitingForK3s => vec![(
            ClusterStarted,
            Running(format!(
                "k3s exited ({last_exit}); restarting in {}s",
                delay.as_secs()
            )),
        )],
        ClusterEvent::Readiness(p) if *stage == InstallStage::WaitingForK3s => match p {
            Progress::Ready => {
                *stage = InstallStage::Database;
                vec![
                    (ClusterStarted, Done("k3s is ready".into())),
                    (DatabaseReady, Running("applying the stack".into())),
                ]
            }
            Progress::KubeconfigMissing => {
                vec![(ClusterStarted, Running("k3s is starting".into()))]
            }
            Progress::ApiServerNotReady(w) => {
                vec![(ClusterStarted, Running(format!("API server: {w}")))]
            }
            Progress::NodeNotReady(w) => vec![(ClusterStarted, Running(format!("node: {w}")))],
        },
        ClusterEvent::Install(step) => {
            // The install runs only once k3s is ready, whatever events were missed.
            let mut out = Vec::new();
            if *stage == InstallStage::WaitingForK3s {
                out.push((ClusterStarted, Done("k3s is ready".into())));
                *stage = InstallStage::Database;
            }
            match step {
                Step::Applied { .. } | Step::ReplicaSet(_) => {
                    out.push((DatabaseReady, Running(step_text(step))));
                }
                Step::MongoRollout(m) => out.push((DatabaseReady, Running(m.clone()))),
                Step::ChatRollout(m) => {
                    if *stage == InstallStage::Database {
                        out.push((DatabaseReady, Done("MongoDB rs0 primary is ready".into())));
                        *stage = InstallStage::Chat;
                    }
                    out.push((ChatReady, Running(m.clone())));
                }
                Step::Done => {
                    if *stage == InstallStage::Database {
                        out.push((DatabaseReady, Done("MongoDB rs0 primary is ready".into())));
                    }
                    out.push((ChatReady, Done("Rocket.Chat is ready".into())));
                    *stage = InstallStage::Finished;
                }
            }
            out
        }
        ClusterEvent::Error(e) if *stage != InstallStage::Finished => {
            vec![(current(*stage), Failed(format!("{e} (retrying)")))]
        }
        _ => Vec::new(),
    }
}

/// The stack credentials as kept on disk.
#[derive(Serialize, Deserialize)]
struct StoredSecrets {
    mongo_root_password: String,
    mongo_keyfile: String,
    rocketchat_db_password: String,
}

/// Reads the stack's credentials, or makes and saves them (0600) on first use.
pub fn load_or_create_secrets(path: &Path) -> Result<StackSecrets, String> {
    match std::fs::read_to_string(path) {
        Ok(text) => {
            let s: StoredSecrets = serde_json::from_str(&text)
                .map_err(|e| format!("{}: not a Gantry secrets file: {e}", path.display()))?;
            Ok(StackSecrets {
                mongo_root_password: s.mongo_root_password,
                mongo_keyfile: s.mongo_keyfile,
                rocketchat_db_password: s.rocketchat_db_password,
                admin_password: String::new(),
            })
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let fresh = StackSecrets::generate();
            let stored = StoredSecrets {
                mongo_root_password: fresh.mongo_root_password.clone(),
                mongo_keyfile: fresh.mongo_keyfile.clone(),
                rocketchat_db_password: fresh.rocketchat_db_password.clone(),
            };
            let json = serde_json::to_string(&stored).map_err(|e| e.to_string())?;
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
            }
            crate::daemon::write_private(path, &json).map_err(
                |e| match std::error::Error::source(&e) {
                    Some(cause) => format!("{e}: {cause}"),
                    None => e.to_string(),
                },
            )?;
            Ok(fresh)
        }
        Err(e) => Err(format!("{}: {e}", path.display())),
    }
}

struct Inner {
    view: Mutex<View>,
    desired: watch::Sender<Option<Arc<Desired>>>,
    events: broadcast::Sender<ClusterEvent>,
    secrets_file: PathBuf,
    sink: Mutex<Option<EventSink>>,
}

/// A k3s-backed [`Cluster`]. Create with [`K3sCluster::new`], hand it to the daemon, then
/// [`K3sCluster::spawn`] it with the proxy once the proxy runs.
pub struct K3sCluster {
    inner: Arc<Inner>,
    opts: Mutex<Option<K3sClusterOptions>>,
}

impl std::fmt::Debug for K3sCluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("K3sCluster").finish_non_exhaustive()
    }
}

impl K3sCluster {
    pub fn new(opts: K3sClusterOptions) -> Arc<K3sCluster> {
        let (desired, _) = watch::channel(None);
        let (events, _) = broadcast::channel(256);
        Arc::new(K3sCluster {
            inner: Arc::new(Inner {
                view: Mutex::new(View::default()),
                desired,
                events,
                secrets_file: opts.secrets_file.clone(),
                sink: Mutex::new(None),
            }),
            opts: Mutex::new(Some(opts)),
        })
    }

    fn update(inner: &Inner, f: impl FnOnce(&mut View)) {
        if let Ok(mut v) = inner.view.lock() {
            f(&mut v);
        }
    }

    /// Sends notable events (see [`notable`]) to `sink` from now on.
    pub fn set_event_sink(&self, sink: EventSink) {
        if let Ok(mut s) = self.inner.sink.lock() {
            *s = Some(sink);
        }
    }

    /// Starts k3s and the cluster loop (once); it stops k3s when `stop` fires. If k3s cannot
    /// run here (no binary), the status says so and nothing is started.
    pub fn spawn(
        &self,
        proxy: Arc<dyn RouteTarget>,
        stop: CancellationToken,
    ) -> Option<tokio::task::JoinHandle<()>> {
        let opts = self.opts.lock().ok()?.take()?;
        let binary = &opts.k3s.binary;
        if !binary.is_file() {
            let why = format!(
                "no k3s binary at {}: this system cannot run the cluster (an image built with \
                 --no-cluster, or k3s not installed); run gantry with --no-cluster, or install k3s there",
                binary.display()
            );
            tracing::error!(target: "gantry::cluster", "{why}");
            Self::update(&self.inner, |v| v.unavailable = Some(why));
            return None;
        }
        let (tx, mut rx) = mpsc::unbounded_channel();
        let inner = self.inner.clone();
        let forward = tokio::spawn(async move {
            let mut notable_state = NotableState::default();
            while let Some(ev) = rx.recv().await {
                log_event(&ev);
                if let Some((level, kind, message)) = notable(&ev, &mut notable_state) {
                    let sink = inner.sink.lock().ok().and_then(|s| s.clone());
                    if let Some(sink) = sink {
                        sink(level, kind, &message);
                    }
                }
                Self::update(&inner, |v| v.apply(&ev));
                let _ = inner.events.send(ev);
            }
        });
        let options = ClusterOptions {
            k3s: opts.k3s,
            desired: self.inner.desired.subscribe(),
            timeouts: opts.timeouts,
            status_interval: opts.status_interval,
            retry: opts.retry,
        };
        let inner = self.inner.clone();
        Some(tokio::spawn(async move {
            if let Err(e) = run_cluster(options, proxy, tx, stop).await {
                tracing::error!(target: "gantry::cluster", error = %e, "the cluster loop stopped");
                Self::update(&inner, |v| v.unavailable = Some(e.to_string()));
            }
            let _ = forward.await;
        }))
    }

    /// The current view (for tests and the API).
    pub fn view(&self) -> View {
        self.inner
            .view
            .lock()
            .map(|v| v.clone())
            .unwrap_or_default()
    }
}

fn log_event(ev: &ClusterEvent) {
    match ev {
        ClusterEvent::K3s(s) => tracing::info!(target: "gantry::cluster", state = ?s, "k3s"),
        ClusterEvent::Readiness(p) => {
            tracing::debug!(target: "gantry::cluster", progress = ?p, "k3s readiness")
        }
        ClusterEvent::Install(s) => tracing::info!(target: "gantry::cluster", step = ?s, "install"),
        ClusterEvent::Error(e) => tracing::warn!(target: "gantry::cluster", error = %e, "cluster"),
        ClusterEvent::Status(_) => {}
        ClusterEvent::Routes(r) => tracing::info!(
            target: "gantry::cluster",
            generation = ?r.generation,
            routers = r.routers,
            services = r.services,
            warnings = r.warnings.len(),
            error = ?r.error,
            "ingress routes"
        ),
    }
}

impl Cluster for K3sCluster {
    fn status(&self) -> ClusterStatus {
        self.view().status()
    }

    fn install<'a>(
        &'a self,
        plan: &'a InstallPlan,
        report: Report<'a>,
    ) -> Pin<Box<dyn std::future::Future<Output = ()> + Send + 'a>> {
        Box::pin(async move {
            use ClusterStep::{ChatReady, ClusterStarted, DatabaseReady};
            let view = self.view();
            if let Some(why) = view.unavailable {
                report(ClusterStarted, StepOutcome::Failed(why));
                for s in [DatabaseReady, ChatReady] {
                    report(s, StepOutcome::Skipped("skipped: no cluster".into()));
                }
                return;
            }
            let mut secrets = match load_or_create_secrets(&self.inner.secrets_file) {
                Ok(s) => s,
                Err(e) => {
                    report(
                        ClusterStarted,
                        StepOutcome::Failed(format!("cannot keep the stack's credentials: {e}")),
                    );
                    return;
                }
            };
            secrets.admin_password = plan.chat_admin.password.clone();
            let mut settings = StackSettings::new(&plan.domain);
            settings.admin_username = plan.chat_admin.username.clone();
            settings.admin_email = plan.chat_admin.email.clone();
            // Subscribe before the change, so no event of this install is missed.
            let mut events = self.inner.events.subscribe();
            let mut stage = InstallStage::default();
            if view.readiness == Some(Progress::Ready) {
                for (s, o) in install_outcome(&mut stage, &ClusterEvent::Readiness(Progress::Ready))
                {
                    report(s, o);
                }
            } else {
                report(ClusterStarted, StepOutcome::Running(view.status().message));
            }
            self.inner
                .desired
                .send_replace(Some(Arc::new(Desired { settings, secrets })));
            while stage != InstallStage::Finished {
                match events.recv().await {
                    Ok(ev) => {
                        for (s, o) in install_outcome(&mut stage, &ev) {
                            report(s, o);
                        }
                    }
                    Err(broadcast::error::RecvError::Lagged(_)) => {}
                    Err(broadcast::error::RecvError::Closed) => return,
                }
            }
        })
    }
}

#[cfg(test)]
mod tests;
