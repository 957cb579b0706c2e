//! The seam where the cluster supervisor (k3s, MongoDB, Rocket.Chat: the cluster issue) plugs
//! in. The rest of the appliance (setup's install steps, the dashboard) talks to a
//! [`Cluster`] and never assumes one is running.
//!
//! This version has no cluster support built in: [`NoCluster`] reports so plainly, either
//! because the operator asked for `--no-cluster` or because the support does not exist yet.
//! It never pretends that a step ran.

use std::fmt;
use std::future::Future;
use std::pin::Pin;

use serde::Serialize;

/// The chat's first administrator, collected by the setup wizard and handed to the cluster,
/// which passes it to Rocket.Chat (`ADMIN_USERNAME`, `ADMIN_PASS`, ...).
#[derive(Clone, serde::Deserialize, Serialize, PartialEq, Eq)]
pub struct ChatAdmin {
    pub name: String,
    pub username: String,
    pub email: String,
    pub password: String,
}

impl fmt::Debug for ChatAdmin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChatAdmin")
            .field("name", &self.name)
            .field("username", &self.username)
            .field("email", &self.email)
            .finish_non_exhaustive()
    }
}

/// What the cluster must install.
#[derive(Debug, Clone)]
pub struct InstallPlan {
    /// The chat's domain (its certificate is managed by the supervisor).
    pub domain: String,
    pub chat_admin: ChatAdmin,
}

/// The install steps the cluster reports on (after the certificate step).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ClusterStep {
    ClusterStarted,
    DatabaseReady,
    ChatReady,
}

/// A step's outcome as the cluster reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StepOutcome {
    Running(String),
    Done(String),
    Skipped(String),
    Failed(String),
}

/// The cluster's state in one word, for the dashboard.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ClusterState {
    /// `--no-cluster`: the operator runs the appliance without a cluster.
    Disabled,
    /// This build has no cluster support.
    NotBuilt,
    Starting,
    Running,
    Failed,
}

/// One application's status (Rocket.Chat, MongoDB).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AppStatus {
    pub name: String,
    pub state: String,
    pub detail: String,
}

/// What the dashboard shows about the cluster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ClusterStatus {
    pub state: ClusterState,
    pub message: String,
    pub apps: Vec<AppStatus>,
}

/// Reports progress of an install.
pub type Report<'a> = &'a (dyn Fn(ClusterStep, StepOutcome) + Send + Sync);

/// The cluster supervisor, as the rest of the appliance sees it.
pub trait Cluster: Send + Sync + fmt::Debug {
    fn status(&self) -> ClusterStatus;

    /// Brings up (or updates) the chat stack for `plan`, reporting every [`ClusterStep`].
    fn install<'a>(
        &'a self,
        plan: &'a InstallPlan,
        report: Report<'a>,
    ) -> Pin<Box<dyn Future<Output = ()> + Send + 'a>>;
}

/// No cluster: every cluster step is skipped, with the reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoCluster {
    /// `gantry run --no-cluster`.
    Disabled,
    /// Cluster support is not part of this build yet.
    NotBuilt,
}

impl NoCluster {
    /// Why no cluster runs, in a sentence.
    pub fn reason(self) -> &'static str {
        match self {
            NoCluster::Disabled => "no cluster: gantry runs with --no-cluster",
            NoCluster::NotBuilt => {
                "no cluster: cluster support (k3s, MongoDB, Rocket.Chat) is not built into this version of gantry yet"
            }
        }
    }
}

impl Cluster for NoCluster {
    fn status(&self) -> ClusterStatus {
        let state = match self {
            NoCluster::Disabled => ClusterState::Disabled,
            NoCluster::NotBuilt => ClusterState::NotBuilt,
        };
        let app = |name: &str| AppStatus {
            name: name.to_owned(),
            state: "not running".to_owned(),
            detail: "no cluster".to_owned(),
        };
        ClusterStatus {
            state,
            message: self.reason().to_owned(),
            apps: vec![app("Rocket.Chat"), app("MongoDB")],
        }
    }

    fn install<'a>(
        &'a self,
        _plan: &'a InstallPlan,
        report: Report<'a>,
    ) -> Pin<Box<dyn Future<Output = ()> + Send + 'a>> {
        Box::pin(async move {
            for step in [
                ClusterStep::ClusterStarted,
                ClusterStep::DatabaseReady,
                ClusterStep::ChatReady,
            ] {
                report(
                    step,
                    StepOutcome::Skipped(format!("skipped: {}", self.reason())),
                );
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    #[tokio::test]
    async fn no_cluster_skips_every_step_and_says_why() {
        let plan = InstallPlan {
            domain: "chat.example.com".into(),
            chat_admin: ChatAdmin {
                name: "A".into(),
                username: "a".into(),
                email: "a@example.com".into(),
                password: "secret-secret".into(),
            },
        };
        assert!(!format!("{plan:?}").contains("secret-secret"));
        let seen = Mutex::new(Vec::new());
        NoCluster::Disabled
            .install(&plan, &|s, o| seen.lock().unwrap().push((s, o)))
            .await;
        let seen = seen.into_inner().unwrap();
        assert_eq!(seen.len(), 3);
        for (_, o) in &seen {
            assert!(
                matches!(o, StepOutcome::Skipped(m) if m.starts_with("skipped: no cluster")),
                "{o:?}"
            );
        }
        assert_eq!(NoCluster::NotBuilt.status().state, ClusterState::NotBuilt);
        assert!(NoCluster::NotBuilt.status().message.contains("not built"));
    }
}
