//! The Kubernetes objects the translation reads, and loading them from YAML files (for
//! `gantry ingress-routes` and the table tests; the live provider fills them from watchers).

use k8s_openapi::api::core::v1::{Secret, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::{Ingress, IngressClass};
use serde::de::DeserializeOwned;

/// Everything the Ingress translation looks at.
#[derive(Debug, Clone, Default)]
pub struct ClusterObjects {
    pub ingresses: Vec<Ingress>,
    pub ingress_classes: Vec<IngressClass>,
    pub services: Vec<Service>,
    pub endpoint_slices: Vec<EndpointSlice>,
    pub secrets: Vec<Secret>,
}

/// A YAML document that is not one of the kinds above, or does not parse.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skipped {
    /// `file.yaml#3` (1-based document number).
    pub source: String,
    pub reason: String,
}

impl std::fmt::Display for Skipped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.source, self.reason)
    }
}

impl ClusterObjects {
    /// Adds every object of a multi-document YAML text (`kind: List` is unpacked). Documents of
    /// other kinds, and documents that do not parse as their kind, are returned as skipped.
    pub fn add_yaml(&mut self, source: &str, text: &str) -> Vec<Skipped> {
        let mut skipped = Vec::new();
        for (i, doc) in serde_yaml_ng::Deserializer::from_str(text).enumerate() {
            let where_ = format!("{source}#{}", i + 1);
            let value = match <serde_yaml_ng::Value as serde::Deserialize>::deserialize(doc) {
                Ok(v) => v,
                Err(e) => {
                    skipped.push(Skipped {
                        source: where_,
                        reason: format!("not YAML: {e}"),
                    });
                    // A syntax error ends the stream: later documents cannot be located.
                    break;
                }
            };
            self.add_value(&where_, value, &mut skipped);
        }
        skipped
    }

    fn add_value(&mut self, source: &str, value: serde_yaml_ng::Value, skipped: &mut Vec<Skipped>) {
        if value.is_null() {
            return; // empty document (`---` at the end)
        }
        let api_version = value
            .get("apiVersion")
            .and_then(|v| v.as_str())
            .unwrap_or("")
            .to_owned();
        let kind = value
            .get("kind")
            .and_then(|v| v.as_str())
            .unwrap_or("")
            .to_owned();
        let name = value
            .get("metadata")
            .and_then(|m| m.get("name"))
            .and_then(|v| v.as_str())
            .unwrap_or("?")
            .to_owned();
        let skip = |reason: String| Skipped {
            source: format!("{source} ({kind} {name})"),
            reason,
        };
        match (api_version.as_str(), kind.as_str()) {
            ("v1", "List") => {
                if let Some(items) = value.get("items").and_then(|v| v.as_sequence()) {
                    for (j, item) in items.iter().enumerate() {
                        self.add_value(&format!("{source}.items[{j}]"), item.clone(), skipped);
                    }
                }
            }
            ("networking.k8s.io/v1", "Ingress") => push(&mut self.ingresses, value, skip, skipped),
            ("networking.k8s.io/v1", "IngressClass") => {
                push(&mut self.ingress_classes, value, skip, skipped);
            }
            ("v1", "Service") => push(&mut self.services, value, skip, skipped),
            ("discovery.k8s.io/v1", "EndpointSlice") => {
                push(&mut self.endpoint_slices, value, skip, skipped);
            }
            ("v1", "Secret") => push(&mut self.secrets, value, skip, skipped),
            (_, "Ingress" | "IngressClass" | "EndpointSlice") => skipped.push(skip(format!(
                "apiVersion `{api_version}` is not served by Kubernetes 1.36 (use networking.k8s.io/v1 or discovery.k8s.io/v1)"
            ))),
            ("", _) | (_, "") => skipped.push(skip(
                "not a Kubernetes object (no apiVersion or kind)".to_owned(),
            )),
            _ => skipped.push(skip(
                "not read: only Ingress, IngressClass, Service, EndpointSlice and Secret matter to routing"
                    .to_owned(),
            )),
        }
    }
}

fn push<T: DeserializeOwned>(
    into: &mut Vec<T>,
    value: serde_yaml_ng::Value,
    skip: impl FnOnce(String) -> Skipped,
    skipped: &mut Vec<Skipped>,
) {
    // Through JSON: k8s-openapi's types deserialize from JSON's data model (their ByteString
    // fields want base64 strings, which YAML also gives).
    let parsed = serde_json::to_value(&value)
        .map_err(|e| e.to_string())
        .and_then(|v| serde_json::from_value::<T>(v).map_err(|e| e.to_string()));
    match parsed {
        Ok(obj) => into.push(obj),
        Err(e) => skipped.push(skip(format!("does not parse: {e}"))),
    }
}
