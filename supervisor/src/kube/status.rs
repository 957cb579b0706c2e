//! The dashboard's view of the cluster: the node, the stack's pods with restarts and reasons,
//! MongoDB's primary and the chat's readiness, with the last log lines of failing pods.

use ::kube::Api;
use ::kube::api::{ListParams, LogParams};
use k8s_openapi::api::core::v1::{Node, Pod};
use serde::Serialize;

use super::KubeError;
use crate::manifests::{MONGO_NAME, ROCKETCHAT_NAME};

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ClusterStatus {
    pub node: Option<NodeStatus>,
    pub pods: Vec<PodStatus>,
    /// `mongodb-0` is ready, which its probe defines as `db.hello().isWritablePrimary`.
    pub mongo_primary: bool,
    /// At least one Rocket.Chat pod is ready (`/readyz`).
    pub chat_ready: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct NodeStatus {
    pub name: String,
    pub ready: bool,
    pub kubelet_version: String,
    pub problem: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct PodStatus {
    pub name: String,
    pub component: String,
    pub phase: String,
    pub ready: bool,
    pub restarts: i32,
    /// Why it is not running well (`CrashLoopBackOff`, `ImagePullBackOff`, `OOMKilled`...).
    pub reason: Option<String>,
    pub message: Option<String>,
    /// Last log lines of a failing pod's container.
    pub last_log: Vec<String>,
}

impl PodStatus {
    pub fn failing(&self) -> bool {
        self.reason.is_some() || (!self.ready && self.restarts > 0)
    }
}

/// Summarises objects into the status (pure; logs are filled in by [`fetch`]).
pub fn summarize(node: Option<&Node>, pods: &[Pod]) -> ClusterStatus {
    let node = node.map(|n| {
        let ready = crate::k3s::readiness::node_ready(n);
        NodeStatus {
            name: n.metadata.name.clone().unwrap_or_default(),
            ready: ready.is_ok(),
            kubelet_version: n
                .status
                .as_ref()
                .and_then(|s| s.node_info.as_ref())
                .map(|i| i.kubelet_version.clone())
                .unwrap_or_default(),
            problem: ready.err(),
        }
    });
    let mut out = ClusterStatus {
        node,
        ..Default::default()
    };
    for p in pods {
        let s = pod_status(p);
        if s.component == MONGO_NAME && s.ready {
            out.mongo_primary = true;
        }
        if s.component == ROCKETCHAT_NAME && s.ready {
            out.chat_ready = true;
        }
        out.pods.push(s);
    }
    out.pods.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

fn pod_status(p: &Pod) -> PodStatus {
    let st = p.status.as_ref();
    let containers = st.and_then(|s| s.container_statuses.as_ref());
    let mut reason = None;
    let mut message = None;
    let mut restarts = 0;
    for c in containers.into_iter().flatten() {
        restarts += c.restart_count;
        let state = c.state.as_ref();
        if let Some(w) = state.and_then(|s| s.waiting.as_ref())
            && w.reason.as_deref() != Some("ContainerCreating")
        {
            reason = w.reason.clone();
            message = w.message.clone();
        } else if let Some(t) = state.and_then(|s| s.terminated.as_ref())
            && t.exit_code != 0
        {
            reason = t
                .reason
                .clone()
                .or(Some(format!("exit code {}", t.exit_code)));
        }
        if reason.is_none()
            && c.restart_count > 0
            && let Some(t) = c.last_state.as_ref().and_then(|s| s.terminated.as_ref())
            && t.reason.as_deref() == Some("OOMKilled")
        {
            reason = Some("OOMKilled".to_owned());
        }
    }
    if reason.is_none()
        && let Some(c) = st
            .and_then(|s| s.conditions.as_ref())
            .into_iter()
            .flatten()
            .find(|c| c.type_ == "PodScheduled" && c.status == "False")
    {
        reason = c.reason.clone();
        message = c.message.clone();
    }
    let ready = st
        .and_then(|s| s.conditions.as_ref())
        .into_iter()
        .flatten()
        .any(|c| c.type_ == "Ready" && c.status == "True");
    PodStatus {
        name: p.metadata.name.clone().unwrap_or_default(),
        component: p
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get("app.kubernetes.io/name"))
            .cloned()
            .unwrap_or_default(),
        phase: st.and_then(|s| s.phase.clone()).unwrap_or_default(),
        ready,
        restarts,
        reason,
        message,
        last_log: Vec::new(),
    }
}

/// Reads the node and the stack's pods, with the last `tail` log lines of failing pods.
pub async fn fetch(
    client: &::kube::Client,
    ns: &str,
    node_name: &str,
    tail: i64,
) -> Result<ClusterStatus, KubeError> {
    let nodes: Api<Node> = Api::all(client.clone());
    let node = nodes.get_opt(node_name).await?;
    let pods_api: Api<Pod> = Api::namespaced(client.clone(), ns);
    let pods = pods_api.list(&ListParams::default()).await?.items;
    let mut status = summarize(node.as_ref(), &pods);
    for ps in status.pods.iter_mut().filter(|p| p.failing()) {
        let lp = LogParams {
            tail_lines: Some(tail),
            // After a crash, the previous container's output says why.
            previous: ps.restarts > 0,
            ..Default::default()
        };
        if let Ok(text) = pods_api.logs(&ps.name, &lp).await {
            ps.last_log = text.lines().map(str::to_owned).collect();
        }
    }
    Ok(status)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(yaml: &str) -> Pod {
        serde_yaml_ng::from_str(yaml).unwrap()
    }

    #[test]
    fn summarizes_pods_with_reasons() {
        let mongo = pod(
            "apiVersion: v1\nkind: Pod\nmetadata: {name: mongodb-0, labels: {app.kubernetes.io/name: mongodb}}\nstatus:\n  phase: Running\n  conditions: [{type: Ready, status: \"True\"}]\n  containerStatuses:\n  - {name: mongod, ready: true, restartCount: 0, image: m, imageID: m, state: {running: {}}}\n",
        );
        let chat = pod(
            "apiVersion: v1\nkind: Pod\nmetadata: {name: rocketchat-5d9-abc, labels: {app.kubernetes.io/name: rocketchat}}\nstatus:\n  phase: Running\n  conditions: [{type: Ready, status: \"False\"}]\n  containerStatuses:\n  - name: rocketchat\n    ready: false\n    restartCount: 4\n    image: r\n    imageID: r\n    state: {waiting: {reason: CrashLoopBackOff, message: \"back-off 1m20s restarting failed container\"}}\n    lastState: {terminated: {exitCode: 1, reason: Error}}\n",
        );
        let pending = pod(
            "apiVersion: v1\nkind: Pod\nmetadata: {name: rocketchat-5d9-def, labels: {app.kubernetes.io/name: rocketchat}}\nstatus:\n  phase: Pending\n  conditions: [{type: PodScheduled, status: \"False\", reason: Unschedulable, message: \"0/1 nodes are available: 1 Insufficient memory.\"}]\n",
        );
        let s = summarize(None, &[chat, mongo, pending]);
        assert!(s.mongo_primary);
        assert!(!s.chat_ready);
        assert_eq!(s.pods[0].name, "mongodb-0");
        let crash = &s.pods[1];
        assert_eq!(crash.reason.as_deref(), Some("CrashLoopBackOff"));
        assert_eq!(crash.restarts, 4);
        assert!(crash.failing());
        let unsched = &s.pods[2];
        assert_eq!(unsched.reason.as_deref(), Some("Unschedulable"));
        assert!(
            unsched
                .message
                .as_deref()
                .unwrap()
                .contains("Insufficient memory")
        );
        assert!(!s.pods[0].failing());
    }
}
