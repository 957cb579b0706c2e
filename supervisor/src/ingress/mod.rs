//! The Kubernetes Ingress provider: cluster objects in, proxy routes out.
//!
//! [`translate`] is a pure function from typed Kubernetes objects ([`ClusterObjects`]: Ingress,
//! IngressClass, Service, EndpointSlice, Secret) to the proxy's dynamic configuration
//! ([`IngressConfig`], convertible to [`gantry_proxy::config::DynamicConfig`]) plus a warning per
//! object it skipped. The live provider (`crate::kube::watch`) feeds it from watchers and hands
//! the result to `Proxy::set_provider("kubernetes", ..)`; `gantry ingress-routes` feeds it from
//! YAML files. Both run exactly this code, so the command shows what the appliance will route.
//!
//! Semantics are Traefik v3's Kubernetes Ingress provider (see `translate.rs` for the three
//! deliberate differences). This module does no IO.

mod annotations;
mod objects;
mod output;
mod translate;

#[cfg(test)]
mod tests;

pub use annotations::{RouterAnnotations, ServiceAnnotations, StickyAnnotations};
pub use objects::{ClusterObjects, Skipped};
pub use output::{
    Certificate, Cookie, Http, IngressConfig, LoadBalancer, OutputError, Router, RouterTls, Server,
    Service, Sticky, Tls,
};
pub use translate::{
    CLASS_NAME, CONTROLLER, Options, ProxyContext, Translation, Warning, normalize, translate,
};
