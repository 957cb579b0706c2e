//! What the translation produces: a Traefik-style dynamic configuration (routers, services, TLS
//! certificates) that prints as the YAML `gantry proxy` reads, and converts into the proxy's
//! [`DynamicConfig`] by going through that same strict parser.

use std::collections::BTreeMap;

use gantry_proxy::config::DynamicConfig;
use serde::Serialize;

/// The Kubernetes provider's dynamic configuration, in Traefik's file-provider shape.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct IngressConfig {
    pub http: Http,
    #[serde(skip_serializing_if = "Tls::is_empty")]
    pub tls: Tls,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Http {
    pub routers: BTreeMap<String, Router>,
    pub services: BTreeMap<String, Service>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Router {
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub entry_points: Vec<String>,
    pub rule: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub priority: Option<i64>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub middlewares: Vec<String>,
    pub service: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls: Option<RouterTls>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct RouterTls {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub options: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Service {
    pub load_balancer: LoadBalancer,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LoadBalancer {
    /// Empty when the Service has no serving endpoint: the proxy answers 503.
    pub servers: Vec<Server>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sticky: Option<Sticky>,
    pub pass_host_header: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub servers_transport: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct Server {
    pub url: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Sticky {
    pub cookie: Cookie,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Cookie {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub secure: bool,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub http_only: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub same_site: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_age: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub domain: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Tls {
    pub certificates: Vec<Certificate>,
}

impl Tls {
    fn is_empty(&self) -> bool {
        self.certificates.is_empty()
    }
}

/// A certificate from an Ingress's `spec.tls` Secret, as PEM content (Traefik accepts PEM content
/// in `certFile`/`keyFile`).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Certificate {
    pub cert_file: String,
    pub key_file: String,
    /// `namespace/name` of the Secret it came from.
    #[serde(skip)]
    pub secret: String,
}

/// The translation could not be expressed in the proxy's configuration types. This is a bug in
/// the translation (it only emits what the proxy parses), reported instead of panicking.
#[derive(Debug, thiserror::Error)]
#[error("the translated Ingress configuration does not parse as a dynamic configuration: {0}")]
pub struct OutputError(String);

impl IngressConfig {
    /// Converts into the proxy's configuration through the proxy's own strict parser, so what
    /// the live provider installs is exactly what `gantry ingress-routes` prints.
    pub fn to_dynamic(&self) -> Result<DynamicConfig, OutputError> {
        let value = serde_json::to_value(self).map_err(|e| OutputError(e.to_string()))?;
        serde_json::from_value(value).map_err(|e| OutputError(e.to_string()))
    }

    /// Traefik-style YAML. Private keys are replaced by a note naming their Secret unless
    /// `show_keys` is set (then the output loads as-is into `gantry proxy`).
    pub fn to_yaml(&self, show_keys: bool) -> Result<String, OutputError> {
        let shown;
        let cfg = if show_keys {
            self
        } else {
            let mut c = self.clone();
            for cert in &mut c.tls.certificates {
                cert.key_file = format!(
                    "<private key of Secret {} (hidden; --show-keys prints it)>",
                    cert.secret
                );
            }
            shown = c;
            &shown
        };
        serde_yaml_ng::to_string(cfg).map_err(|e| OutputError(e.to_string()))
    }
}
