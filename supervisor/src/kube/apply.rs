//! Server-side apply (field manager `gantry`, forced: Gantry owns these objects) and pruning of
//! labelled objects Gantry no longer renders.

use std::collections::BTreeSet;

use ::kube::Api;
use ::kube::api::{DeleteParams, ListParams, Patch, PatchParams};
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Secret, Service};
use k8s_openapi::api::networking::v1::{Ingress, IngressClass};
use k8s_openapi::api::storage::v1::StorageClass;
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::{FIELD_MANAGER, KubeError};
use crate::manifests::{MANAGED_BY, Object, STACK_LABEL, STACK_NAME, Stack};

/// `(kind, namespace, name)` of an object.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct ObjectRef {
    pub kind: String,
    pub namespace: Option<String>,
    pub name: String,
}

impl std::fmt::Display for ObjectRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.namespace {
            Some(ns) => write!(f, "{} {ns}/{}", self.kind, self.name),
            None => write!(f, "{} {}", self.kind, self.name),
        }
    }
}

impl ObjectRef {
    pub fn of(o: &Object) -> ObjectRef {
        ObjectRef {
            kind: o.kind().to_owned(),
            namespace: o.namespace().map(str::to_owned),
            name: o.name().to_owned(),
        }
    }
}

/// The kinds Gantry renders, in apply order. Pruning walks them backwards.
pub const KINDS: [&str; 9] = [
    "Namespace",
    "StorageClass",
    "IngressClass",
    "Secret",
    "ConfigMap",
    "Service",
    "StatefulSet",
    "Deployment",
    "Ingress",
];

/// The label selector of everything this stack rendered.
pub fn stack_selector() -> String {
    format!(
        "{}={},{STACK_LABEL}={STACK_NAME}",
        MANAGED_BY.0, MANAGED_BY.1
    )
}

/// Objects to delete: labelled as this stack's but not rendered any more, workloads first
/// (reverse apply order), the Namespace last.
pub fn prune_plan(rendered: &[ObjectRef], existing: &[ObjectRef]) -> Vec<ObjectRef> {
    let keep: BTreeSet<&ObjectRef> = rendered.iter().collect();
    let mut out: Vec<ObjectRef> = existing
        .iter()
        .filter(|o| !keep.contains(o) && KINDS.contains(&o.kind.as_str()))
        .cloned()
        .collect();
    let rank = |k: &str| KINDS.iter().position(|x| *x == k).unwrap_or(0);
    out.sort_by(|a, b| rank(&b.kind).cmp(&rank(&a.kind)).then_with(|| a.cmp(b)));
    out.dedup();
    out
}

async fn patch<K>(api: Api<K>, name: &str, obj: &K) -> Result<(), KubeError>
where
    K: Clone + DeserializeOwned + Serialize + std::fmt::Debug,
{
    api.patch(
        name,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(obj),
    )
    .await?;
    Ok(())
}

/// Applies one object.
pub async fn apply_object(client: &::kube::Client, o: &Object) -> Result<(), KubeError> {
    let c = client.clone();
    let ns = o.namespace().unwrap_or("default");
    let name = o.name();
    match o {
        Object::Namespace(x) => patch(Api::<Namespace>::all(c), name, x).await,
        Object::StorageClass(x) => patch(Api::<StorageClass>::all(c), name, x).await,
        Object::IngressClass(x) => patch(Api::<IngressClass>::all(c), name, x).await,
        Object::Secret(x) => patch(Api::<Secret>::namespaced(c, ns), name, x).await,
        Object::ConfigMap(x) => patch(Api::<ConfigMap>::namespaced(c, ns), name, x).await,
        Object::Service(x) => patch(Api::<Service>::namespaced(c, ns), name, x).await,
        Object::StatefulSet(x) => patch(Api::<StatefulSet>::namespaced(c, ns), name, x).await,
        Object::Deployment(x) => patch(Api::<Deployment>::namespaced(c, ns), name, x).await,
        Object::Ingress(x) => patch(Api::<Ingress>::namespaced(c, ns), name, x).await,
    }
}

async fn list_refs<K>(api: Api<K>, kind: &str) -> Result<Vec<ObjectRef>, KubeError>
where
    K: Clone + DeserializeOwned + std::fmt::Debug + ::kube::Resource,
{
    let list = api
        .list(&ListParams::default().labels(&stack_selector()))
        .await?;
    Ok(list
        .items
        .iter()
        .map(|o| ObjectRef {
            kind: kind.to_owned(),
            namespace: o.meta().namespace.clone(),
            name: o.meta().name.clone().unwrap_or_default(),
        })
        .collect())
}

/// Everything in the cluster carrying this stack's labels.
pub async fn existing(client: &::kube::Client) -> Result<Vec<ObjectRef>, KubeError> {
    let c = client.clone();
    let mut all = Vec::new();
    all.extend(list_refs(Api::<Namespace>::all(c.clone()), "Namespace").await?);
    all.extend(list_refs(Api::<StorageClass>::all(c.clone()), "StorageClass").await?);
    all.extend(list_refs(Api::<IngressClass>::all(c.clone()), "IngressClass").await?);
    all.extend(list_refs(Api::<Secret>::all(c.clone()), "Secret").await?);
    all.extend(list_refs(Api::<ConfigMap>::all(c.clone()), "ConfigMap").await?);
    all.extend(list_refs(Api::<Service>::all(c.clone()), "Service").await?);
    all.extend(list_refs(Api::<StatefulSet>::all(c.clone()), "StatefulSet").await?);
    all.extend(list_refs(Api::<Deployment>::all(c.clone()), "Deployment").await?);
    all.extend(list_refs(Api::<Ingress>::all(c), "Ingress").await?);
    Ok(all)
}

async fn delete(client: &::kube::Client, r: &ObjectRef) -> Result<(), KubeError> {
    let c = client.clone();
    let ns = r.namespace.as_deref().unwrap_or("default");
    let dp = DeleteParams::background();
    let n = r.name.as_str();
    let res = match r.kind.as_str() {
        "Namespace" => Api::<Namespace>::all(c).delete(n, &dp).await.map(|_| ()),
        "StorageClass" => Api::<StorageClass>::all(c).delete(n, &dp).await.map(|_| ()),
        "IngressClass" => Api::<IngressClass>::all(c).delete(n, &dp).await.map(|_| ()),
        "Secret" => Api::<Secret>::namespaced(c, ns)
            .delete(n, &dp)
            .await
            .map(|_| ()),
        "ConfigMap" => Api::<ConfigMap>::namespaced(c, ns)
            .delete(n, &dp)
            .await
            .map(|_| ()),
        "Service" => Api::<Service>::namespaced(c, ns)
            .delete(n, &dp)
            .await
            .map(|_| ()),
        "StatefulSet" => Api::<StatefulSet>::namespaced(c, ns)
            .delete(n, &dp)
            .await
            .map(|_| ()),
        "Deployment" => Api::<Deployment>::namespaced(c, ns)
            .delete(n, &dp)
            .await
            .map(|_| ()),
        "Ingress" => Api::<Ingress>::namespaced(c, ns)
            .delete(n, &dp)
            .await
            .map(|_| ()),
        _ => Ok(()),
    };
    match res {
        // Already gone: pruning is idempotent.
        Err(::kube::Error::Api(e)) if e.code == 404 => Ok(()),
        other => Ok(other?),
    }
}

/// What an apply did.
#[derive(Debug, Default)]
pub struct ApplyReport {
    pub applied: Vec<ObjectRef>,
    pub pruned: Vec<ObjectRef>,
}

/// Applies every object of the stack (in order), then prunes what is no longer rendered.
/// Idempotent: run it at every start and whenever settings change.
pub async fn apply_stack(client: &::kube::Client, stack: &Stack) -> Result<ApplyReport, KubeError> {
    let mut report = ApplyReport::default();
    for o in &stack.objects {
        apply_object(client, o).await?;
        tracing::info!(object = %o.describe(), "applied");
        report.applied.push(ObjectRef::of(o));
    }
    let existing = existing(client).await?;
    for r in prune_plan(&report.applied, &existing) {
        delete(client, &r).await?;
        tracing::info!(object = %r, "pruned: no longer rendered");
        report.pruned.push(r);
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(kind: &str, ns: Option<&str>, name: &str) -> ObjectRef {
        ObjectRef {
            kind: kind.to_owned(),
            namespace: ns.map(str::to_owned),
            name: name.to_owned(),
        }
    }

    #[test]
    fn prunes_only_what_is_no_longer_rendered_workloads_first() {
        let rendered = vec![
            r("Namespace", None, "chat"),
            r("Deployment", Some("chat"), "rocketchat"),
            r("Ingress", Some("chat"), "rocketchat"),
        ];
        let existing = vec![
            r("Namespace", None, "chat"),
            r("Namespace", None, "old-chat"),
            r("Deployment", Some("chat"), "rocketchat"),
            r("Deployment", Some("old-chat"), "rocketchat"),
            r("Ingress", Some("old-chat"), "rocketchat"),
            // Not a kind Gantry renders (a PVC from a volumeClaimTemplate): never pruned.
            r("PersistentVolumeClaim", Some("chat"), "data-mongodb-0"),
        ];
        let plan = prune_plan(&rendered, &existing);
        assert_eq!(
            plan,
            [
                r("Ingress", Some("old-chat"), "rocketchat"),
                r("Deployment", Some("old-chat"), "rocketchat"),
                r("Namespace", None, "old-chat"),
            ]
        );
        assert!(prune_plan(&rendered, &rendered).is_empty());
    }

    #[test]
    fn selector_names_the_stack() {
        assert_eq!(
            stack_selector(),
            "app.kubernetes.io/managed-by=gantry,gantry.io/stack=chat"
        );
    }
}
