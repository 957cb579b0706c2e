//! The chat stack Gantry installs into k3s, as typed k8s-openapi objects.
//!
//! [`render`] turns settings, generated secrets and the pinned images (`manifests/images.toml`,
//! [`Pins`]) into a [`Stack`]: Namespace, a Retain StorageClass, the `gantry` IngressClass,
//! MongoDB 8.0 as the one-member replica set `rs0`, and Rocket.Chat with its Service and
//! Ingress. The same objects are printed by `gantry manifests` and applied by
//! `crate::kube::apply` (server-side apply), so what an operator reads is what is applied.
//! [`replica_set`] holds the idempotent `rs.initiate` decision logic.
//!
//! Typed objects rather than text templates: field names and types are checked by the compiler,
//! values are escaped by the serializer (a domain cannot inject YAML), and the objects need no
//! parsing before apply. This module does no IO.

mod images;
pub mod replica_set;
mod stack;

use std::path::Path;

use k8s_openapi::Resource;
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Secret, Service};
use k8s_openapi::api::networking::v1::{Ingress, IngressClass};
use k8s_openapi::api::storage::v1::StorageClass;
use serde::Serialize;

pub use images::{IMAGES_TOML, ImagePin, K3sPin, Pins};
pub use stack::{
    DEFAULT_NAMESPACE, MANAGED_BY, MONGO_NAME, MONGO_PORT, MONGO_READY_SCRIPT, MONGO_SECRET,
    REPLICA_SET, ROCKETCHAT_NAME, Resources, STACK_LABEL, STACK_NAME, STORAGE_CLASS, StackSecrets,
    StackSettings, mongo_member_host, render,
};

/// Errors rendering the stack.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("manifests/images.toml: {0}")]
    Pins(String),
    #[error("invalid settings: {0}")]
    Settings(String),
    #[error("cannot serialize {what}: {message}")]
    Serialize { what: String, message: String },
    #[error("cannot write {path}: {source}")]
    Write {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

/// One rendered object.
#[derive(Debug, Clone, Serialize)]
#[serde(untagged)]
pub enum Object {
    Namespace(Namespace),
    StorageClass(StorageClass),
    IngressClass(IngressClass),
    Secret(Secret),
    ConfigMap(ConfigMap),
    Service(Service),
    StatefulSet(StatefulSet),
    Deployment(Deployment),
    Ingress(Ingress),
}

impl Object {
    pub fn kind(&self) -> &'static str {
        match self {
            Object::Namespace(_) => Namespace::KIND,
            Object::StorageClass(_) => StorageClass::KIND,
            Object::IngressClass(_) => IngressClass::KIND,
            Object::Secret(_) => Secret::KIND,
            Object::ConfigMap(_) => ConfigMap::KIND,
            Object::Service(_) => Service::KIND,
            Object::StatefulSet(_) => StatefulSet::KIND,
            Object::Deployment(_) => Deployment::KIND,
            Object::Ingress(_) => Ingress::KIND,
        }
    }

    pub fn api_version(&self) -> &'static str {
        match self {
            Object::Namespace(_) => Namespace::API_VERSION,
            Object::StorageClass(_) => StorageClass::API_VERSION,
            Object::IngressClass(_) => IngressClass::API_VERSION,
            Object::Secret(_) => Secret::API_VERSION,
            Object::ConfigMap(_) => ConfigMap::API_VERSION,
            Object::Service(_) => Service::API_VERSION,
            Object::StatefulSet(_) => StatefulSet::API_VERSION,
            Object::Deployment(_) => Deployment::API_VERSION,
            Object::Ingress(_) => Ingress::API_VERSION,
        }
    }

    pub fn metadata(&self) -> &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
        match self {
            Object::Namespace(o) => &o.metadata,
            Object::StorageClass(o) => &o.metadata,
            Object::IngressClass(o) => &o.metadata,
            Object::Secret(o) => &o.metadata,
            Object::ConfigMap(o) => &o.metadata,
            Object::Service(o) => &o.metadata,
            Object::StatefulSet(o) => &o.metadata,
            Object::Deployment(o) => &o.metadata,
            Object::Ingress(o) => &o.metadata,
        }
    }

    pub fn name(&self) -> &str {
        self.metadata().name.as_deref().unwrap_or("")
    }

    pub fn namespace(&self) -> Option<&str> {
        self.metadata().namespace.as_deref()
    }

    /// `Kind namespace/name` (or `Kind name` for cluster-scoped objects), for messages.
    pub fn describe(&self) -> String {
        match self.namespace() {
            Some(ns) => format!("{} {ns}/{}", self.kind(), self.name()),
            None => format!("{} {}", self.kind(), self.name()),
        }
    }

    /// As JSON, the form server-side apply sends.
    pub fn to_json(&self) -> Result<serde_json::Value, ManifestError> {
        serde_json::to_value(self).map_err(|e| ManifestError::Serialize {
            what: self.describe(),
            message: e.to_string(),
        })
    }
}

/// The rendered stack, in apply order (namespaces and classes first, workloads last).
#[derive(Debug, Clone)]
pub struct Stack {
    pub objects: Vec<Object>,
}

impl Stack {
    /// Multi-document YAML, like `helm template`.
    pub fn to_yaml(&self) -> Result<String, ManifestError> {
        let mut out =
            String::from("# Rendered by `gantry manifests`: the objects Gantry applies.\n");
        for o in &self.objects {
            out.push_str("---\n");
            out.push_str(&object_yaml(o)?);
        }
        Ok(out)
    }

    /// One file per object (`NN-kind-name.yaml`) in `dir`, which is created if needed.
    pub fn write_dir(&self, dir: &Path) -> Result<Vec<std::path::PathBuf>, ManifestError> {
        let werr = |path: &Path, source| ManifestError::Write {
            path: path.display().to_string(),
            source,
        };
        std::fs::create_dir_all(dir).map_err(|e| werr(dir, e))?;
        let mut written = Vec::new();
        for (i, o) in self.objects.iter().enumerate() {
            let path = dir.join(format!(
                "{:02}-{}-{}.yaml",
                i + 1,
                o.kind().to_ascii_lowercase(),
                o.name()
            ));
            std::fs::write(&path, object_yaml(o)?).map_err(|e| werr(&path, e))?;
            written.push(path);
        }
        Ok(written)
    }
}

fn object_yaml(o: &Object) -> Result<String, ManifestError> {
    serde_yaml_ng::to_string(o).map_err(|e| ManifestError::Serialize {
        what: o.describe(),
        message: e.to_string(),
    })
}

#[cfg(test)]
mod tests;
