//! Is the cluster up? The API server's `/readyz` (called with the kubeconfig's credentials:
//! k3s runs kube-apiserver with anonymous auth off) and the node's `Ready` condition.

use std::path::Path;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Node;

use super::K3sError;

/// Progress while waiting (for the UI's event log).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Progress {
    KubeconfigMissing,
    ApiServerNotReady(String),
    NodeNotReady(String),
    Ready,
}

/// Why a node is not Ready, or `Ok` when it is.
pub fn node_ready(node: &Node) -> Result<(), String> {
    let conditions = node
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .ok_or("the node reports no conditions yet")?;
    let ready = conditions
        .iter()
        .find(|c| c.type_ == "Ready")
        .ok_or("the node reports no Ready condition yet")?;
    if ready.status == "True" {
        return Ok(());
    }
    Err(format!(
        "Ready={}: {} {}",
        ready.status,
        ready.reason.as_deref().unwrap_or(""),
        ready.message.as_deref().unwrap_or("")
    )
    .trim()
    .to_owned())
}

/// A client from the admin kubeconfig k3s writes.
pub async fn client(kubeconfig: &Path) -> Result<kube::Client, K3sError> {
    let kc = kube::config::Kubeconfig::read_from(kubeconfig)
        .map_err(|e| K3sError::Kube(format!("reading {}: {e}", kubeconfig.display())))?;
    let cfg = kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
        .await
        .map_err(|e| K3sError::Kube(e.to_string()))?;
    kube::Client::try_from(cfg).map_err(|e| K3sError::Kube(e.to_string()))
}

/// One check of `/readyz` and the node.
pub async fn check(client: &kube::Client, node_name: &str) -> Progress {
    let req = match http::Request::get("/readyz").body(Vec::new()) {
        Ok(r) => r,
        Err(e) => return Progress::ApiServerNotReady(e.to_string()),
    };
    match client.request_text(req).await {
        Ok(body) if body.trim() == "ok" => {}
        Ok(body) => return Progress::ApiServerNotReady(body.trim().to_owned()),
        Err(e) => return Progress::ApiServerNotReady(e.to_string()),
    }
    let nodes: kube::Api<Node> = kube::Api::all(client.clone());
    match nodes.get_opt(node_name).await {
        Ok(Some(n)) => match node_ready(&n) {
            Ok(()) => Progress::Ready,
            Err(why) => Progress::NodeNotReady(why),
        },
        Ok(None) => Progress::NodeNotReady(format!("node {node_name} not registered yet")),
        Err(e) => Progress::NodeNotReady(e.to_string()),
    }
}

/// Polls until ready or `timeout`, reporting each change of progress.
pub async fn wait_ready(
    kubeconfig: &Path,
    node_name: &str,
    timeout: Duration,
    mut progress: impl FnMut(&Progress),
) -> Result<(), K3sError> {
    let deadline = Instant::now() + timeout;
    let mut last: Option<Progress> = None;
    let mut client_cache: Option<kube::Client> = None;
    loop {
        let p = if !kubeconfig.exists() {
            Progress::KubeconfigMissing
        } else {
            if client_cache.is_none() {
                client_cache = client(kubeconfig).await.ok();
            }
            match &client_cache {
                Some(c) => check(c, node_name).await,
                None => Progress::ApiServerNotReady("kubeconfig not usable yet".into()),
            }
        };
        if last.as_ref() != Some(&p) {
            progress(&p);
        }
        if p == Progress::Ready {
            return Ok(());
        }
        last = Some(p.clone());
        if Instant::now() >= deadline {
            return Err(K3sError::NotReady(format!("{p:?}")));
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(yaml: &str) -> Node {
        serde_yaml_ng::from_str(yaml).unwrap()
    }

    #[test]
    fn node_conditions() {
        let ready = node(
            "apiVersion: v1\nkind: Node\nmetadata: {name: gantry}\nstatus:\n  conditions:\n  - {type: MemoryPressure, status: \"False\"}\n  - {type: Ready, status: \"True\", reason: KubeletReady}\n",
        );
        assert_eq!(node_ready(&ready), Ok(()));
        let not = node(
            "apiVersion: v1\nkind: Node\nmetadata: {name: gantry}\nstatus:\n  conditions:\n  - {type: Ready, status: \"False\", reason: KubeletNotReady, message: \"container runtime network not ready\"}\n",
        );
        let e = node_ready(&not).unwrap_err();
        assert!(
            e.contains("KubeletNotReady") && e.contains("network not ready"),
            "{e}"
        );
        let fresh = node("apiVersion: v1\nkind: Node\nmetadata: {name: gantry}\n");
        assert!(node_ready(&fresh).is_err());
    }
}
