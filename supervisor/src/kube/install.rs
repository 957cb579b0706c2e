//! Installing (and re-applying) the stack: apply + prune, the replica set, rollouts. Run on every
//! start and whenever settings change; every step is idempotent.

use std::time::Duration;

use super::{KubeError, apply, mongo, rollout};
use crate::manifests::{MONGO_NAME, ROCKETCHAT_NAME, Stack};

/// Steps reported to the UI.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    Applied { objects: usize, pruned: usize },
    ReplicaSet(String),
    MongoRollout(String),
    ChatRollout(String),
    Done,
}

/// Timeouts of the install steps.
#[derive(Debug, Clone)]
pub struct Timeouts {
    pub replica_set: Duration,
    pub mongo_rollout: Duration,
    pub chat_rollout: Duration,
}

impl Default for Timeouts {
    /// Generous: first starts import images and run Rocket.Chat's migrations on small machines.
    fn default() -> Self {
        Timeouts {
            replica_set: Duration::from_secs(600),
            mongo_rollout: Duration::from_secs(600),
            chat_rollout: Duration::from_secs(900),
        }
    }
}

/// Applies the stack and waits until the chat is up.
pub async fn install(
    client: &::kube::Client,
    stack: &Stack,
    namespace: &str,
    timeouts: &Timeouts,
    mut progress: impl FnMut(Step),
) -> Result<(), KubeError> {
    let report = apply::apply_stack(client, stack).await?;
    progress(Step::Applied {
        objects: report.applied.len(),
        pruned: report.pruned.len(),
    });
    mongo::ensure_replica_set(client, namespace, timeouts.replica_set, |m| {
        progress(Step::ReplicaSet(m.to_owned()));
    })
    .await?;
    rollout::wait_statefulset(client, namespace, MONGO_NAME, timeouts.mongo_rollout, |m| {
        progress(Step::MongoRollout(m.to_owned()));
    })
    .await?;
    rollout::wait_deployment(
        client,
        namespace,
        ROCKETCHAT_NAME,
        timeouts.chat_rollout,
        |m| {
            progress(Step::ChatRollout(m.to_owned()));
        },
    )
    .await?;
    progress(Step::Done);
    Ok(())
}
