//! Ingress + Service + EndpointSlice + Secret -> routers, services and certificates.
//!
//! Follows Traefik v3's Kubernetes Ingress provider (names, rules, annotations, default backend,
//! duplicate router keys), with three deliberate differences, each required by Gantry's issue:
//! - `pathType: Prefix` matches whole path segments, as the Kubernetes spec says (`/foo` matches
//!   `/foo` and `/foo/bar`, not `/foobar`); Traefik matches it as a string prefix.
//! - A Service without serving endpoints keeps its router with an empty server list, so the
//!   proxy answers 503 (Traefik's `allowEmptyServices: true`; its default drops the router: 404).
//! - Ingresses without a class are served only when an IngressClass of Gantry's controller is
//!   the cluster default (Kubernetes' default-class rule; Traefik serves every class-less one).
//!
//! Nothing here fails as a whole: an object that cannot be translated is skipped with a warning
//! naming it and why, so one bad Ingress never takes the other routes down.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::core::v1::{Secret, ServicePort};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::{
    HTTPIngressPath, Ingress, IngressBackend, IngressClass, IngressServiceBackend,
};
use sha2::{Digest, Sha256};

use super::annotations::{self, RouterAnnotations};
use super::objects::ClusterObjects;
use super::output::{
    Certificate, Cookie, IngressConfig, LoadBalancer, Router, RouterTls, Server, Service, Sticky,
};

/// Gantry's IngressClass controller name (`spec.controller`).
pub const CONTROLLER: &str = "gantry.io/ingress-controller";
/// The IngressClass the appliance installs, and that `ingressClassName` may name.
pub const CLASS_NAME: &str = "gantry";
const DEFAULT_CLASS_ANNOTATION: &str = "ingressclass.kubernetes.io/is-default-class";
const LEGACY_CLASS_ANNOTATION: &str = "kubernetes.io/ingress.class";
const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// Names the proxy already knows from its other providers (file, internal), used to refuse
/// routers that refer to something missing: the proxy compiles all providers all-or-nothing, so
/// one dangling reference would otherwise reject every cluster route.
#[derive(Debug, Clone, Default)]
pub struct ProxyContext {
    /// Entrypoint names of the static configuration; `None`: not checked.
    pub entry_points: Option<BTreeSet<String>>,
    /// Qualified middleware names (`auth@file`); `None`: not checked (any `@file` name passes).
    pub middlewares: Option<BTreeSet<String>>,
    /// TLS options names; `None`: not checked.
    pub tls_options: Option<BTreeSet<String>>,
    /// Qualified serversTransport names (`name@file`); `None`: not checked.
    pub servers_transports: Option<BTreeSet<String>>,
}

/// How to translate.
#[derive(Debug, Clone)]
pub struct Options {
    /// Treat the IngressClass `gantry` (controller [`CONTROLLER`], marked default) as present
    /// even when it is not among the objects. The appliance installs exactly that class, so
    /// `gantry ingress-routes` on an operator's files behaves like the appliance.
    pub implicit_default_class: bool,
    pub proxy: ProxyContext,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            implicit_default_class: true,
            proxy: ProxyContext::default(),
        }
    }
}

/// An object (or part of one) that was not translated, or was translated with something ignored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Warning {
    /// `Ingress chat/rocketchat`, `Service chat/rocketchat`, `Secret chat/tls`.
    pub object: String,
    pub message: String,
}

impl std::fmt::Display for Warning {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.object, self.message)
    }
}

/// The translation's result: the configuration and what was skipped or ignored.
#[derive(Debug, Clone, Default)]
pub struct Translation {
    pub config: IngressConfig,
    pub warnings: Vec<Warning>,
}

fn ns_name(meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> (String, String) {
    (
        meta.namespace
            .clone()
            .unwrap_or_else(|| "default".to_owned()),
        meta.name.clone().unwrap_or_default(),
    )
}

/// Traefik's `provider.Normalize`: runs of characters that are not letters or digits become `-`.
pub fn normalize(name: &str) -> String {
    name.split(|c: char| !c.is_alphanumeric())
        .filter(|s| !s.is_empty())
        .collect::<Vec<_>>()
        .join("-")
}

/// Translates the objects into the Kubernetes provider's dynamic configuration.
pub fn translate(objs: &ClusterObjects, opts: &Options) -> Translation {
    let mut t = Translator {
        objs,
        opts,
        out: Translation::default(),
        routers: BTreeMap::new(),
        secrets_loaded: BTreeSet::new(),
        default_backend_from: None,
    };
    let classes = t.our_classes();
    let mut ingresses: Vec<&Ingress> = objs.ingresses.iter().collect();
    // Deterministic order whatever the watch order: namespace, then name.
    ingresses.sort_by_key(|i| ns_name(&i.metadata));
    for ing in ingresses {
        t.ingress(ing, &classes);
    }
    // Router keys that collide get a hash of their rule appended (Traefik's makeRouterKeyWithHash).
    for (key, list) in std::mem::take(&mut t.routers) {
        if list.len() == 1 {
            if let Some(r) = list.into_iter().next() {
                t.out.config.http.routers.insert(key, r);
            }
            continue;
        }
        for r in list {
            let digest = Sha256::digest(r.rule.as_bytes());
            let hex: String = digest[..10].iter().map(|b| format!("{b:02x}")).collect();
            t.out.config.http.routers.insert(format!("{key}-{hex}"), r);
        }
    }
    t.out
}

/// The classes that select Gantry: `(names, is there a default one)`.
struct OurClasses {
    names: BTreeSet<String>,
    default: bool,
}

struct Translator<'a> {
    objs: &'a ClusterObjects,
    opts: &'a Options,
    out: Translation,
    routers: BTreeMap<String, Vec<Router>>,
    secrets_loaded: BTreeSet<String>,
    default_backend_from: Option<String>,
}

impl Translator<'_> {
    fn warn(&mut self, object: impl Into<String>, message: impl Into<String>) {
        self.out.warnings.push(Warning {
            object: object.into(),
            message: message.into(),
        });
    }

    fn our_classes(&mut self) -> OurClasses {
        let mut names = BTreeSet::new();
        let mut default = false;
        let mut seen_implicit = false;
        let is_default = |c: &IngressClass| {
            c.metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(DEFAULT_CLASS_ANNOTATION))
                .is_some_and(|v| v == "true")
        };
        for c in &self.objs.ingress_classes {
            let name = c.metadata.name.clone().unwrap_or_default();
            if name == CLASS_NAME {
                seen_implicit = true;
            }
            let controller = c.spec.as_ref().and_then(|s| s.controller.as_deref());
            if controller == Some(CONTROLLER) {
                default |= is_default(c);
                names.insert(name);
            }
        }
        if self.opts.implicit_default_class && !seen_implicit {
            names.insert(CLASS_NAME.to_owned());
            default = true;
        }
        OurClasses { names, default }
    }

    fn selected(&self, ing: &Ingress, classes: &OurClasses) -> Result<(), String> {
        let spec_class = ing
            .spec
            .as_ref()
            .and_then(|s| s.ingress_class_name.as_deref());
        let legacy = ing
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(LEGACY_CLASS_ANNOTATION));
        match (spec_class, legacy) {
            (Some(c), _) if classes.names.contains(c) => Ok(()),
            (Some(c), _) => Err(format!(
                "ingressClassName `{c}` is not an IngressClass of controller {CONTROLLER}"
            )),
            (None, Some(c)) if classes.names.contains(c.as_str()) => Ok(()),
            (None, Some(c)) => Err(format!(
                "annotation {LEGACY_CLASS_ANNOTATION}: `{c}` is not a class of controller {CONTROLLER}"
            )),
            (None, None) if classes.default => Ok(()),
            (None, None) => Err(format!(
                "no ingressClassName, and no IngressClass of controller {CONTROLLER} is the default class"
            )),
        }
    }

    fn ingress(&mut self, ing: &Ingress, classes: &OurClasses) {
        let (ns, name) = ns_name(&ing.metadata);
        let who = format!("Ingress {ns}/{name}");
        if let Err(why) = self.selected(ing, classes) {
            self.warn(&who, format!("skipped: {why}"));
            return;
        }
        let Some(spec) = &ing.spec else {
            self.warn(&who, "skipped: no spec");
            return;
        };
        let ann = match annotations::router(ing.metadata.annotations.as_ref()) {
            Ok(p) => {
                for note in p.ignored {
                    self.warn(&who, note);
                }
                p.value
            }
            Err(e) => {
                self.warn(&who, format!("skipped: {e}"));
                return;
            }
        };
        let ann = match self.check_references(&who, ann) {
            Some(a) => a,
            None => return,
        };

        for tls in spec.tls.iter().flatten() {
            match &tls.secret_name {
                Some(secret) => self.load_secret(&who, &ns, secret),
                None => self.warn(
                    &who,
                    "spec.tls entry without secretName: its hosts use Gantry's managed certificates",
                ),
            }
        }

        if let Some(backend) = &spec.default_backend {
            self.default_backend(&who, &ns, backend, &ann);
        }

        for rule in spec.rules.iter().flatten() {
            let Some(http) = &rule.http else { continue };
            let host = rule.host.as_deref().unwrap_or("");
            for pa in &http.paths {
                let path = pa.path.as_deref().unwrap_or("");
                let path_desc = if path.starts_with('/') || host.is_empty() {
                    format!("{host}{path}")
                } else {
                    format!("{host} {path}")
                };
                let Some(svc_backend) = &pa.backend.service else {
                    self.warn(
                        &who,
                        format!(
                            "path `{path_desc}` skipped: resource backends are not supported (only Services)"
                        ),
                    );
                    continue;
                };
                let service_key = match self.service(&ns, svc_backend) {
                    Ok(k) => k,
                    Err(e) => {
                        self.warn(&who, format!("path `{path_desc}` skipped: {e}"));
                        continue;
                    }
                };
                let rule_text = match build_rule(host, pa, &ann) {
                    Ok(r) => r,
                    Err(e) => {
                        self.warn(&who, format!("path `{path_desc}` skipped: {e}"));
                        continue;
                    }
                };
                if let Err(e) = gantry_proxy::rule::Rule::parse(&rule_text) {
                    self.warn(&who, format!("path `{path_desc}` skipped: {e}"));
                    continue;
                }
                let router = router_with(&ann, rule_text, service_key);
                let key = normalize(&format!(
                    "{ns}-{name}-{host}{}",
                    pa.path.as_deref().unwrap_or("")
                ));
                let key = key.trim_start_matches('-').to_owned();
                self.routers.entry(key).or_default().push(router);
            }
        }
    }

    /// Checks the annotations' references against what the proxy knows. Unknown entrypoints are
    /// dropped (Traefik ignores them); a missing middleware or TLS option skips the Ingress, as a
    /// router whose middlewares cannot run must not serve (an auth middleware, say).
    fn check_references(
        &mut self,
        who: &str,
        mut ann: RouterAnnotations,
    ) -> Option<RouterAnnotations> {
        if let Some(known) = &self.opts.proxy.entry_points {
            let (ok, bad): (Vec<String>, Vec<String>) = ann
                .entry_points
                .into_iter()
                .partition(|e| known.contains(e));
            if !bad.is_empty() {
                self.warn(
                    who,
                    format!("entrypoints {bad:?} do not exist in the proxy's static configuration: ignored"),
                );
                if ok.is_empty() {
                    self.warn(who, "skipped: none of its entrypoints exists");
                    return None;
                }
            }
            ann.entry_points = ok;
        }
        for m in &ann.middlewares {
            let ok = match m.split_once('@') {
                None => Err(
                    "has no provider: write `name@file` for a file-provider middleware".to_owned(),
                ),
                Some((_, "file" | "internal")) => match &self.opts.proxy.middlewares {
                    Some(known) if !known.contains(m) => {
                        Err("does not exist in the file provider".to_owned())
                    }
                    _ => Ok(()),
                },
                Some((_, p)) => Err(format!(
                    "refers to provider `{p}`, which Gantry does not have (use the file provider)"
                )),
            };
            if let Err(why) = ok {
                self.warn(who, format!("skipped: middleware `{m}` {why}"));
                return None;
            }
        }
        if let (Some(opt), Some(known)) = (&ann.tls_options, &self.opts.proxy.tls_options) {
            let bare = opt.split_once('@').map_or(opt.as_str(), |(n, _)| n);
            if !known.contains(bare) {
                self.warn(who, format!("skipped: TLS options `{opt}` do not exist"));
                return None;
            }
        }
        Some(ann)
    }

    fn default_backend(
        &mut self,
        who: &str,
        ns: &str,
        backend: &IngressBackend,
        ann: &RouterAnnotations,
    ) {
        let Some(svc) = &backend.service else {
            self.warn(
                who,
                "default backend skipped: resource backends are not supported",
            );
            return;
        };
        if let Some(first) = &self.default_backend_from {
            self.warn(
                who,
                format!("default backend skipped: {first} already defines the default backend"),
            );
            return;
        }
        let key = match self.service(ns, svc) {
            Ok(k) => k,
            Err(e) => {
                self.warn(who, format!("default backend skipped: {e}"));
                return;
            }
        };
        // Traefik names the default backend's service `default-backend`.
        if let Some(s) = self.out.config.http.services.get(&key).cloned() {
            self.out
                .config
                .http
                .services
                .insert("default-backend".to_owned(), s);
        }
        let mut r = router_with(
            ann,
            "PathPrefix(`/`)".to_owned(),
            "default-backend".to_owned(),
        );
        r.priority = Some(i64::from(i32::MIN));
        self.out
            .config
            .http
            .routers
            .insert("default-router".to_owned(), r);
        self.default_backend_from = Some(who.to_owned());
    }

    fn load_secret(&mut self, who: &str, ns: &str, name: &str) {
        let id = format!("{ns}/{name}");
        if self.secrets_loaded.contains(&id) {
            return;
        }
        let Some(secret) = self
            .objs
            .secrets
            .iter()
            .find(|s| ns_name(&s.metadata) == (ns.to_owned(), name.to_owned()))
        else {
            self.warn(
                who,
                format!("TLS Secret {id} not found: its hosts use Gantry's managed certificates"),
            );
            return;
        };
        match secret_pem(secret) {
            Ok((cert, key)) => match gantry_proxy::tls::load_pem(cert.as_bytes(), key.as_bytes()) {
                Ok(_) => {
                    self.secrets_loaded.insert(id.clone());
                    self.out.config.tls.certificates.push(Certificate {
                        cert_file: cert,
                        key_file: key,
                        secret: id,
                    });
                }
                Err(e) => self.warn(format!("Secret {id}"), format!("skipped: {e}")),
            },
            Err(e) => self.warn(format!("Secret {id}"), format!("skipped: {e}")),
        }
    }

    /// Builds (once) the load balancer for a Service port and returns its key.
    fn service(&mut self, ns: &str, backend: &IngressServiceBackend) -> Result<String, String> {
        let port_ref = backend
            .port
            .as_ref()
            .ok_or_else(|| format!("backend Service `{}` names no port", backend.name))?;
        let port_str = match (&port_ref.name, port_ref.number) {
            (Some(n), _) if !n.is_empty() => n.clone(),
            (_, Some(n)) => n.to_string(),
            _ => return Err(format!("backend Service `{}` names no port", backend.name)),
        };
        let key = normalize(&format!("{ns}-{}-{port_str}", backend.name));
        if self.out.config.http.services.contains_key(&key) {
            return Ok(key);
        }
        let svc = self
            .objs
            .services
            .iter()
            .find(|s| ns_name(&s.metadata) == (ns.to_owned(), backend.name.clone()))
            .ok_or_else(|| format!("Service {ns}/{} not found", backend.name))?;
        let spec = svc
            .spec
            .as_ref()
            .ok_or_else(|| format!("Service {ns}/{} has no spec", backend.name))?;
        if spec.type_.as_deref() == Some("ExternalName") {
            return Err(format!(
                "Service {ns}/{} is of type ExternalName, which is refused (Traefik's default, \
                 allowExternalNameServices: false); route external hosts with the file provider",
                backend.name
            ));
        }
        let sp: &ServicePort = spec
            .ports
            .iter()
            .flatten()
            .find(|p| match (&port_ref.name, port_ref.number) {
                (Some(n), _) if !n.is_empty() => p.name.as_deref() == Some(n.as_str()),
                (_, Some(n)) => p.port == n,
                _ => false,
            })
            .ok_or_else(|| format!("Service {ns}/{} has no port {port_str}", backend.name))?;

        let svc_who = format!("Service {ns}/{}", backend.name);
        let sann = match annotations::service(svc.metadata.annotations.as_ref()) {
            Ok(p) => {
                for note in p.ignored {
                    self.warn(&svc_who, note);
                }
                p.value
            }
            Err(e) => return Err(format!("{svc_who}: {e}")),
        };
        if let (Some(t), Some(known)) =
            (&sann.servers_transport, &self.opts.proxy.servers_transports)
            && !known.contains(t)
        {
            return Err(format!("{svc_who}: serversTransport `{t}` does not exist"));
        }
        let scheme = sann.servers_scheme.clone().unwrap_or_else(|| {
            if sp.port == 443 || sp.name.as_deref().is_some_and(|n| n.starts_with("https")) {
                "https".to_owned()
            } else {
                "http".to_owned()
            }
        });
        let servers = endpoints(&self.objs.endpoint_slices, ns, &backend.name, sp)
            .into_iter()
            .map(|(ip, port)| Server {
                url: if ip.contains(':') {
                    format!("{scheme}://[{ip}]:{port}")
                } else {
                    format!("{scheme}://{ip}:{port}")
                },
            })
            .collect();
        let lb = LoadBalancer {
            servers,
            sticky: sann.sticky.map(|s| Sticky {
                cookie: Cookie {
                    name: s.name,
                    secure: s.secure,
                    http_only: s.http_only,
                    same_site: s.same_site,
                    max_age: s.max_age,
                    path: s.path,
                    domain: s.domain,
                },
            }),
            pass_host_header: sann.pass_host_header.unwrap_or(true),
            servers_transport: sann.servers_transport,
        };
        self.out
            .config
            .http
            .services
            .insert(key.clone(), Service { load_balancer: lb });
        Ok(key)
    }
}

/// The endpoints of a Service port that may receive new requests: the ready ones; when none is
/// ready, the serving ones that are terminating (kube-proxy's fallback, so a rolling restart of a
/// single replica does not drop requests); never an endpoint that is not serving.
fn endpoints(
    slices: &[EndpointSlice],
    ns: &str,
    service: &str,
    sp: &ServicePort,
) -> BTreeSet<(String, i32)> {
    let mut ready = BTreeSet::new();
    let mut serving = BTreeSet::new();
    for slice in slices {
        let (sns, _) = ns_name(&slice.metadata);
        let owner = slice
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(SERVICE_NAME_LABEL));
        if sns != ns || owner.map(String::as_str) != Some(service) {
            continue;
        }
        if !matches!(slice.address_type.as_str(), "IPv4" | "IPv6") {
            continue; // FQDN slices are not used for Services with selectors
        }
        // The slice port carrying this Service port: same name (both unnamed for single-port
        // Services).
        let want = sp.name.as_deref().unwrap_or("");
        let Some(port) = slice
            .ports
            .iter()
            .flatten()
            .find(|p| p.name.as_deref().unwrap_or("") == want)
            .and_then(|p| p.port)
        else {
            continue;
        };
        for ep in slice.endpoints.iter().flatten() {
            let c = ep.conditions.as_ref();
            let is_ready = c.and_then(|c| c.ready).unwrap_or(true);
            let is_serving = c.and_then(|c| c.serving).unwrap_or(is_ready);
            let terminating = c.and_then(|c| c.terminating).unwrap_or(false);
            for addr in &ep.addresses {
                if is_ready && !terminating {
                    ready.insert((addr.clone(), port));
                } else if is_serving {
                    serving.insert((addr.clone(), port));
                }
            }
        }
    }
    if ready.is_empty() { serving } else { ready }
}

fn router_with(ann: &RouterAnnotations, rule: String, service: String) -> Router {
    Router {
        entry_points: ann.entry_points.clone(),
        rule,
        priority: ann.priority,
        middlewares: ann.middlewares.clone(),
        service,
        tls: (ann.tls || ann.tls_options.is_some()).then(|| RouterTls {
            options: ann.tls_options.clone(),
        }),
    }
}

/// Traefik v3's host rule: `Host`, or a `HostRegexp` matching exactly one label for `*.` hosts.
fn host_rule(host: &str) -> String {
    if let Some(rest) = host.strip_prefix("*.") {
        format!("HostRegexp(`^[a-zA-Z0-9-]+\\.{}$`)", regex_quote(rest))
    } else {
        format!("Host(`{host}`)")
    }
}

fn regex_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if "\\.+*?()|[]{}^$".contains(c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// The rule of one Ingress path.
fn build_rule(host: &str, pa: &HTTPIngressPath, ann: &RouterAnnotations) -> Result<String, String> {
    if host.contains('`') || pa.path.as_deref().is_some_and(|p| p.contains('`')) {
        return Err("a backtick in a host or path cannot be expressed in a rule".to_owned());
    }
    let mut parts = Vec::new();
    if !host.is_empty() {
        parts.push(host_rule(host));
    }
    let path = pa.path.as_deref().unwrap_or("");
    if !path.is_empty() {
        if !path.starts_with('/') {
            return Err(format!("path `{path}` does not start with `/`"));
        }
        let path_rule = match pa.path_type.as_str() {
            "Exact" => format!("Path(`{path}`)"),
            "Prefix" => prefix_rule(path),
            // ImplementationSpecific (or empty): Traefik's PathPrefix, or the annotated matcher.
            _ => format!(
                "{}(`{path}`)",
                ann.path_matcher.as_deref().unwrap_or("PathPrefix")
            ),
        };
        parts.push(path_rule);
    }
    if parts.is_empty() {
        return Ok("PathPrefix(`/`)".to_owned());
    }
    Ok(parts.join(" && "))
}

/// Kubernetes `Prefix`: element-wise prefix over `/`-separated segments, a trailing `/` ignored.
/// `/foo` and `/foo/` both match `/foo`, `/foo/` and `/foo/bar`, but not `/foobar`.
fn prefix_rule(path: &str) -> String {
    let trimmed = path.trim_end_matches('/');
    if trimmed.is_empty() {
        return "PathPrefix(`/`)".to_owned();
    }
    format!("(Path(`{trimmed}`) || PathPrefix(`{trimmed}/`))")
}

fn secret_pem(secret: &Secret) -> Result<(String, String), String> {
    let get = |k: &str| -> Option<String> {
        if let Some(v) = secret.data.as_ref().and_then(|d| d.get(k)) {
            return String::from_utf8(v.0.clone()).ok();
        }
        secret.string_data.as_ref().and_then(|d| d.get(k)).cloned()
    };
    let cert = get("tls.crt").ok_or("no `tls.crt` key")?;
    let key = get("tls.key").ok_or("no `tls.key` key")?;
    Ok((cert, key))
}
