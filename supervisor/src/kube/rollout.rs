//! Rollout waits. kube's `is_deployment_completed` ignores `observedGeneration` and reports done
//! right after an apply, before the controller has even seen the new spec: these checks require
//! the controller to have observed the current generation, all replicas updated and available.

use std::time::{Duration, Instant};

use ::kube::Api;
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};

use super::KubeError;

/// Where a rollout is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rollout {
    Complete,
    Progressing(String),
    Failed(String),
}

/// A Deployment's rollout state.
pub fn deployment_rollout(d: &Deployment) -> Rollout {
    let generation = d.metadata.generation.unwrap_or(0);
    let Some(status) = &d.status else {
        return Rollout::Progressing("no status yet".into());
    };
    let observed = status.observed_generation.unwrap_or(0);
    if observed < generation {
        return Rollout::Progressing(format!(
            "controller has not seen generation {generation} yet (observed {observed})"
        ));
    }
    if let Some(c) = status
        .conditions
        .iter()
        .flatten()
        .find(|c| c.type_ == "Progressing")
        && c.reason.as_deref() == Some("ProgressDeadlineExceeded")
    {
        return Rollout::Failed(
            c.message
                .clone()
                .unwrap_or_else(|| "progress deadline exceeded".into()),
        );
    }
    let want = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
    let updated = status.updated_replicas.unwrap_or(0);
    let total = status.replicas.unwrap_or(0);
    let available = status.available_replicas.unwrap_or(0);
    if updated < want {
        return Rollout::Progressing(format!("{updated} of {want} replicas updated"));
    }
    if total > updated {
        return Rollout::Progressing(format!("{} old replicas terminating", total - updated));
    }
    if available < updated {
        return Rollout::Progressing(format!(
            "{available} of {updated} updated replicas available"
        ));
    }
    Rollout::Complete
}

/// A StatefulSet's rollout state (RollingUpdate strategy).
pub fn statefulset_rollout(s: &StatefulSet) -> Rollout {
    let generation = s.metadata.generation.unwrap_or(0);
    let Some(status) = &s.status else {
        return Rollout::Progressing("no status yet".into());
    };
    let observed = status.observed_generation.unwrap_or(0);
    if observed < generation {
        return Rollout::Progressing(format!(
            "controller has not seen generation {generation} yet (observed {observed})"
        ));
    }
    let want = s.spec.as_ref().and_then(|x| x.replicas).unwrap_or(1);
    let ready = status.ready_replicas.unwrap_or(0);
    let updated = status.updated_replicas.unwrap_or(0);
    if status.update_revision.is_some() && status.current_revision != status.update_revision {
        return Rollout::Progressing(format!("{updated} of {want} pods on the new revision"));
    }
    if ready < want {
        return Rollout::Progressing(format!("{ready} of {want} pods ready"));
    }
    Rollout::Complete
}

async fn wait<K, F>(
    api: Api<K>,
    name: &str,
    what: &str,
    timeout: Duration,
    check: F,
    mut progress: impl FnMut(&str),
) -> Result<(), KubeError>
where
    K: Clone + serde::de::DeserializeOwned + std::fmt::Debug,
    F: Fn(&K) -> Rollout,
{
    let deadline = Instant::now() + timeout;
    let mut last = String::new();
    loop {
        let state = match api.get_opt(name).await? {
            Some(obj) => check(&obj),
            None => Rollout::Progressing("not created yet".into()),
        };
        match state {
            Rollout::Complete => return Ok(()),
            Rollout::Failed(reason) => {
                return Err(KubeError::Failed {
                    what: format!("rollout of {what}"),
                    reason,
                });
            }
            Rollout::Progressing(p) => {
                if p != last {
                    progress(&p);
                    last = p;
                }
            }
        }
        if Instant::now() >= deadline {
            return Err(KubeError::Timeout {
                what: format!("the rollout of {what}"),
                after: timeout,
                last,
            });
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}

pub async fn wait_deployment(
    client: &::kube::Client,
    ns: &str,
    name: &str,
    timeout: Duration,
    progress: impl FnMut(&str),
) -> Result<(), KubeError> {
    let api: Api<Deployment> = Api::namespaced(client.clone(), ns);
    let what = format!("Deployment {ns}/{name}");
    wait(api, name, &what, timeout, deployment_rollout, progress).await
}

pub async fn wait_statefulset(
    client: &::kube::Client,
    ns: &str,
    name: &str,
    timeout: Duration,
    progress: impl FnMut(&str),
) -> Result<(), KubeError> {
    let api: Api<StatefulSet> = Api::namespaced(client.clone(), ns);
    let what = format!("StatefulSet {ns}/{name}");
    wait(api, name, &what, timeout, statefulset_rollout, progress).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deploy(yaml: &str) -> Deployment {
        serde_yaml_ng::from_str(yaml).unwrap()
    }

    const HEAD: &str = "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: rocketchat, generation: 3}\nspec:\n  replicas: 2\n  selector: {matchLabels: {a: b}}\n  template: {metadata: {labels: {a: b}}, spec: {containers: [{name: c, image: i}]}}\n";

    #[test]
    fn just_applied_is_not_complete_even_if_old_replicas_are_available() {
        // What `is_deployment_completed` would call done: the old ReplicaSet's pods are all
        // updated/available for generation 2, but generation 3 has not been observed.
        let d = deploy(&format!(
            "{HEAD}status: {{observedGeneration: 2, replicas: 2, updatedReplicas: 2, availableReplicas: 2}}\n"
        ));
        assert!(
            matches!(deployment_rollout(&d), Rollout::Progressing(ref m) if m.contains("generation 3"))
        );
    }

    #[test]
    fn rollout_steps() {
        let st = |s: &str| deployment_rollout(&deploy(&format!("{HEAD}status: {s}\n")));
        assert!(
            matches!(st("{observedGeneration: 3, replicas: 3, updatedReplicas: 1, availableReplicas: 2}"), Rollout::Progressing(ref m) if m.contains("1 of 2 replicas updated"))
        );
        assert!(
            matches!(st("{observedGeneration: 3, replicas: 3, updatedReplicas: 2, availableReplicas: 2}"), Rollout::Progressing(ref m) if m.contains("old replicas"))
        );
        assert!(
            matches!(st("{observedGeneration: 3, replicas: 2, updatedReplicas: 2, availableReplicas: 1}"), Rollout::Progressing(ref m) if m.contains("1 of 2 updated replicas available"))
        );
        assert_eq!(
            st("{observedGeneration: 3, replicas: 2, updatedReplicas: 2, availableReplicas: 2}"),
            Rollout::Complete
        );
        assert!(matches!(
            st("{observedGeneration: 3, replicas: 2, updatedReplicas: 1, conditions: [{type: Progressing, status: \"False\", reason: ProgressDeadlineExceeded, message: \"ReplicaSet rocketchat-5d9 has timed out progressing.\"}]}"),
            Rollout::Failed(ref m) if m.contains("timed out")
        ));
        assert!(matches!(
            deployment_rollout(&deploy(HEAD)),
            Rollout::Progressing(_)
        ));
    }

    #[test]
    fn statefulset_steps() {
        let sts = |status: &str| -> StatefulSet {
            serde_yaml_ng::from_str(&format!(
                "apiVersion: apps/v1\nkind: StatefulSet\nmetadata: {{name: mongodb, generation: 2}}\nspec:\n  replicas: 1\n  serviceName: mongodb\n  selector: {{matchLabels: {{a: b}}}}\n  template: {{metadata: {{labels: {{a: b}}}}, spec: {{containers: [{{name: c, image: i}}]}}}}\nstatus: {status}\n"
            ))
            .unwrap()
        };
        assert!(matches!(
            statefulset_rollout(&sts("{replicas: 1, observedGeneration: 1}")),
            Rollout::Progressing(_)
        ));
        assert!(matches!(
            statefulset_rollout(&sts(
                "{replicas: 1, observedGeneration: 2, readyReplicas: 1, currentRevision: a, updateRevision: b}"
            )),
            Rollout::Progressing(_)
        ));
        assert!(
            matches!(statefulset_rollout(&sts("{replicas: 1, observedGeneration: 2, readyReplicas: 0, currentRevision: b, updateRevision: b}")), Rollout::Progressing(ref m) if m.contains("0 of 1"))
        );
        assert_eq!(
            statefulset_rollout(&sts(
                "{replicas: 1, observedGeneration: 2, readyReplicas: 1, currentRevision: b, updateRevision: b}"
            )),
            Rollout::Complete
        );
    }
}
