//! Compiling configuration into an immutable [`Snapshot`]: the routers of each entrypoint (indexed by
//! host, sorted by priority), services, middlewares and TLS settings. Requests take the snapshot
//! current when they start and keep it until they finish; a reload builds a new one and swaps it in
//! atomically. Anything wrong in the configuration fails the whole compile, naming the object and
//! the file, and the previous snapshot stays in service.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use http::HeaderValue;
use tokio_util::sync::CancellationToken;

use crate::config::dynamic::{self, DynamicConfig, MiddlewareConfig, ServiceConfig};
use crate::forward::{ForwardOptions, Transport, TransportSettings, Upstream};
use crate::metrics::RequestMetrics;
use crate::middleware::Middleware;
use crate::rule::{RouteInput, Rule};
use crate::service::{
    self, HealthCheck, LoadBalancer, Server, Service, StickyCookie, Weighted, WeightedChild,
};
use crate::state::Shared;
use crate::tls::{self, LoadedCert, TlsOptions};

/// One configuration problem; the compile fails with all of them.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{what}: {message}")]
pub struct CompileError {
    /// `router `web@file` (in /etc/gantry/dynamic.yml)` and the like.
    pub what: String,
    pub message: String,
}

/// A router as compiled for one entrypoint.
#[derive(Debug)]
pub struct Router {
    pub name: Arc<str>,
    pub rule_text: String,
    pub rule: Rule,
    pub priority: i64,
    /// Serves TLS requests only (router has `tls`, or its entrypoint terminates TLS); else plain only.
    pub tls: bool,
    pub tls_options: Option<String>,
    /// Entrypoint middlewares first, then the router's own, chains flattened.
    pub middlewares: Vec<Arc<Middleware>>,
    pub service: Arc<Service>,
    pub access_log: bool,
    pub metrics: bool,
    /// With `metrics`: the router's series (router, its service) and the service's, resolved at
    /// compile time. A weighted service answers under a child's name; those are looked up.
    pub metric_handles: Option<(Arc<RequestMetrics>, Arc<RequestMetrics>)>,
}

/// The routers of one entrypoint.
#[derive(Debug, Default)]
pub struct RouteTable {
    /// Routers that can only match one of a set of hosts, plus every host-independent router,
    /// sorted by priority (highest first).
    by_host: HashMap<String, Vec<Arc<Router>>>,
    /// Host-independent routers, sorted.
    any_host: Vec<Arc<Router>>,
}

impl RouteTable {
    fn build(mut routers: Vec<Arc<Router>>) -> RouteTable {
        sort_routers(&mut routers);
        let mut by_host: HashMap<String, Vec<Arc<Router>>> = HashMap::new();
        let mut any_host = Vec::new();
        for r in &routers {
            match r.rule.required_hosts() {
                Some(hosts) => {
                    for h in hosts {
                        by_host.entry(h).or_default().push(r.clone());
                    }
                }
                None => any_host.push(r.clone()),
            }
        }
        for list in by_host.values_mut() {
            list.extend(any_host.iter().cloned());
            sort_routers(list);
        }
        RouteTable { by_host, any_host }
    }

    /// The highest-priority router matching the request.
    pub fn find(&self, input: &RouteInput<'_>, tls: bool) -> Option<&Arc<Router>> {
        let host = crate::rule::host_lookup_key(input.host);
        let list = if host.bytes().any(|b| b.is_ascii_uppercase()) {
            self.by_host.get(&host.to_ascii_lowercase())
        } else {
            self.by_host.get(host)
        }
        .unwrap_or(&self.any_host);
        list.iter().find(|r| r.tls == tls && r.rule.matches(input))
    }

    pub fn is_empty(&self) -> bool {
        self.any_host.is_empty() && self.by_host.is_empty()
    }
}

fn sort_routers(list: &mut [Arc<Router>]) {
    // Highest priority first; ties broken by name for a stable order (Traefik does the same).
    list.sort_by(|a, b| {
        b.priority
            .cmp(&a.priority)
            .then_with(|| a.name.cmp(&b.name))
    });
}

/// Everything compiled from one generation of configuration.
#[derive(Debug)]
pub struct Snapshot {
    pub generation: u64,
    /// Per entrypoint, looked up on every request (FxHash: the keys come from the configuration).
    pub tables: rustc_hash::FxHashMap<String, RouteTable>,
    /// Every router by qualified name, for the API (one entry per router, first entrypoint).
    pub routers: BTreeMap<String, Arc<Router>>,
    pub router_entrypoints: BTreeMap<String, Vec<String>>,
    pub services: BTreeMap<String, Arc<Service>>,
    pub middlewares: BTreeMap<String, Arc<Middleware>>,
    /// Server config of each TLS options name.
    pub tls_configs: HashMap<String, Arc<rustls::ServerConfig>>,
    /// TLS options chosen by exact SNI (from routers with `tls.options` and a Host rule).
    pub tls_options_by_host: HashMap<String, String>,
    /// Stops this generation's health checks when it is replaced.
    pub stop: CancellationToken,
}

impl Drop for Snapshot {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

impl Snapshot {
    /// An empty snapshot (no routers) for start-up.
    pub fn empty(shared: &Shared) -> Result<Snapshot, CompileError> {
        compile(shared, &BTreeMap::new(), 0)
    }

    /// The rustls config for a TLS connection on `entrypoint` with this SNI.
    pub fn tls_config(
        &self,
        default_options: &str,
        sni: Option<&str>,
    ) -> Option<Arc<rustls::ServerConfig>> {
        let by_host = sni.and_then(|s| self.tls_options_by_host.get(&s.to_ascii_lowercase()));
        let name = by_host.map(String::as_str).unwrap_or(default_options);
        self.tls_configs
            .get(name)
            .or_else(|| self.tls_configs.get("default"))
            .cloned()
    }
}

fn qualify(name: &str, provider: &str) -> String {
    if name.contains('@') {
        name.to_owned()
    } else {
        format!("{name}@{provider}")
    }
}

struct Compiler<'a> {
    shared: &'a Shared,
    providers: &'a BTreeMap<String, DynamicConfig>,
    services: BTreeMap<String, Arc<Service>>,
    middlewares: BTreeMap<String, Arc<Middleware>>,
    transports: BTreeMap<String, Arc<Transport>>,
    health: Vec<(Arc<Service>, HealthCheck)>,
    errors: Vec<CompileError>,
    stack: Vec<String>,
}

/// Compiles the dynamic configuration of every provider (`file`, `kubernetes`, ...) into a snapshot.
pub fn compile(
    shared: &Shared,
    providers: &BTreeMap<String, DynamicConfig>,
    generation: u64,
) -> Result<Snapshot, CompileError> {
    let mut c = Compiler {
        shared,
        providers,
        services: BTreeMap::new(),
        middlewares: BTreeMap::new(),
        transports: BTreeMap::new(),
        health: Vec::new(),
        errors: Vec::new(),
        stack: Vec::new(),
    };
    c.internal_services();
    // Services first (routers and weighted services refer to them), then routers.
    for (provider, cfg) in providers {
        for name in cfg.http.servers_transports.keys() {
            c.transport(&qualify(name, provider));
        }
        for name in cfg.http.services.keys() {
            c.service(&qualify(name, provider));
        }
        for name in cfg.http.middlewares.keys() {
            c.middleware(&qualify(name, provider));
        }
    }
    let mut per_ep: HashMap<String, Vec<Arc<Router>>> = HashMap::new();
    let mut routers = BTreeMap::new();
    let mut router_eps = BTreeMap::new();
    let mut tls_options_by_host = HashMap::new();
    let static_cfg = &shared.static_cfg;
    let default_eps: Vec<String> = {
        let marked: Vec<String> = static_cfg
            .entry_points
            .iter()
            .filter(|(_, e)| e.as_default == Some(true))
            .map(|(n, _)| n.clone())
            .collect();
        if marked.is_empty() {
            static_cfg
                .entry_points
                .keys()
                .filter(|n| n.as_str() != "traefik")
                .cloned()
                .collect()
        } else {
            marked
        }
    };
    for (provider, cfg) in providers {
        for (name, rc) in &cfg.http.routers {
            let qname = qualify(name, provider);
            let what = format!(
                "router `{qname}`{}",
                shared.origin_of("router", name, provider)
            );
            let err = |message: String| CompileError {
                what: what.clone(),
                message,
            };
            if let Some(syntax) = &rc.rule_syntax
                && syntax != "v3"
            {
                c.errors.push(err(format!(
                    "ruleSyntax `{syntax}` is not supported: Gantry implements Traefik v3 rules only"
                )));
                continue;
            }
            let rule = match Rule::parse(&rc.rule) {
                Ok(r) => r,
                Err(e) => {
                    c.errors.push(err(e.to_string()));
                    continue;
                }
            };
            let service_name = qualify(&rc.service, provider);
            let Some(service) = c.services.get(&service_name).cloned() else {
                c.errors
                    .push(err(format!("service `{}` does not exist", rc.service)));
                continue;
            };
            let mut own_mw = Vec::new();
            for m in &rc.middlewares {
                match c.middleware(&qualify(m, provider)) {
                    Some(mw) => flatten(&mw, &mut own_mw),
                    None => c.errors.push(err(format!(
                        "middleware `{m}` does not exist or is invalid"
                    ))),
                }
            }
            let eps = if rc.entry_points.is_empty() {
                default_eps.clone()
            } else {
                rc.entry_points.clone()
            };
            let priority = rc
                .priority
                .unwrap_or_else(|| Rule::default_priority(&rc.rule));
            let tls_options = rc.tls.as_ref().and_then(|t| t.options.clone());
            if let Some(opts) = &tls_options {
                if !c.tls_options_exist(opts) {
                    c.errors
                        .push(err(format!("TLS options `{opts}` do not exist")));
                }
                for h in rule.required_hosts().unwrap_or_default() {
                    tls_options_by_host.insert(h, opts.clone());
                }
            }
            let mut first = None;
            for ep_name in &eps {
                let Some(ep) = static_cfg.entry_points.get(ep_name) else {
                    c.errors
                        .push(err(format!("entrypoint `{ep_name}` does not exist")));
                    continue;
                };
                let mut middlewares = Vec::new();
                for m in &ep.http.middlewares {
                    match c.middleware(&qualify(m, "file")) {
                        Some(mw) => flatten(&mw, &mut middlewares),
                        None => c.errors.push(err(format!(
                            "entrypoint `{ep_name}` middleware `{m}` does not exist or is invalid"
                        ))),
                    }
                }
                middlewares.extend(own_mw.iter().cloned());
                let metrics = rc
                    .observability
                    .as_ref()
                    .and_then(|o| o.metrics)
                    .unwrap_or(true);
                let router = Arc::new(Router {
                    name: qname.as_str().into(),
                    rule_text: rc.rule.clone(),
                    rule: rule.clone(),
                    priority,
                    tls: rc.tls.is_some() || ep.http.tls.is_some(),
                    tls_options: tls_options.clone(),
                    middlewares,
                    service: service.clone(),
                    access_log: rc
                        .observability
                        .as_ref()
                        .and_then(|o| o.access_logs)
                        .unwrap_or(true),
                    metrics,
                    metric_handles: if metrics {
                        c.shared
                            .metrics
                            .router(&qname, &service.name)
                            .zip(c.shared.metrics.service(&service.name))
                    } else {
                        None
                    },
                });
                first.get_or_insert_with(|| router.clone());
                per_ep.entry(ep_name.clone()).or_default().push(router);
            }
            if let Some(r) = first {
                routers.insert(qname.clone(), r);
                router_eps.insert(qname, eps);
            }
        }
    }
    c.internal_routers(&mut per_ep);

    // TLS: certificates from the configuration, then one rustls config per options name.
    let mut certs = Vec::new();
    let mut default_cert: Option<LoadedCert> = None;
    for (provider, cfg) in providers {
        for (i, cert) in cfg.tls.certificates.iter().enumerate() {
            match load_cert(&cert.cert_file, &cert.key_file) {
                Ok(lc) => certs.push(lc),
                Err(e) => c.errors.push(CompileError {
                    what: format!("tls.certificates[{i}]@{provider}"),
                    message: e,
                }),
            }
        }
        for (store, sc) in &cfg.tls.stores {
            if store != "default" {
                c.errors.push(CompileError {
                    what: format!("tls.stores.{store}@{provider}"),
                    message: "only the `default` store exists in Gantry".into(),
                });
            }
            if let Some(d) = &sc.default_certificate {
                match load_cert(&d.cert_file, &d.key_file) {
                    Ok(lc) => default_cert = Some(lc),
                    Err(e) => c.errors.push(CompileError {
                        what: format!("tls.stores.{store}.defaultCertificate@{provider}"),
                        message: e,
                    }),
                }
            }
        }
    }
    let mut tls_configs = HashMap::new();
    let mut options: BTreeMap<String, TlsOptions> = BTreeMap::new();
    options.insert("default".into(), TlsOptions::default());
    for cfg in providers.values() {
        for (name, oc) in &cfg.tls.options {
            match TlsOptions::compile(oc) {
                Ok(o) => {
                    options.insert(name.clone(), o);
                }
                Err(e) => c.errors.push(CompileError {
                    what: format!("tls.options.{name}"),
                    message: e,
                }),
            }
        }
    }
    // An entrypoint's options come from the dynamic configuration: before any provider has
    // delivered one (the empty snapshot at start), they cannot exist yet.
    for (name, ep) in &static_cfg.entry_points {
        if let Some(opts) = ep.http.tls.as_ref().and_then(|t| t.options.as_ref())
            && !options.contains_key(opts)
            && !providers.is_empty()
        {
            c.errors.push(CompileError {
                what: format!("entrypoint `{name}`"),
                message: format!("TLS options `{opts}` do not exist"),
            });
        }
    }
    for (name, o) in &options {
        match o.server_config(&shared.certs) {
            Ok(sc) => {
                tls_configs.insert(name.clone(), sc);
            }
            Err(e) => c.errors.push(CompileError {
                what: format!("tls.options.{name}"),
                message: e,
            }),
        }
    }

    if let Some(first) = c.errors.first() {
        let mut all = first.clone();
        if c.errors.len() > 1 {
            let rest: Vec<String> = c.errors[1..].iter().map(ToString::to_string).collect();
            all.message = format!(
                "{}; and {} more: {}",
                all.message,
                rest.len(),
                rest.join("; ")
            );
        }
        return Err(all);
    }

    // Only now, with nothing left to fail, touch shared state.
    shared.certs.set_file_certs(certs, default_cert);
    let stop = CancellationToken::new();
    for (svc, check) in c.health {
        shared.spawn(service::run_health_checks(svc, check, stop.clone()));
    }
    let tables = per_ep
        .into_iter()
        .map(|(ep, list)| (ep, RouteTable::build(list)))
        .collect();
    Ok(Snapshot {
        generation,
        tables,
        routers,
        router_entrypoints: router_eps,
        services: c.services,
        middlewares: c.middlewares,
        tls_configs,
        tls_options_by_host,
        stop,
    })
}

fn flatten(mw: &Arc<Middleware>, out: &mut Vec<Arc<Middleware>>) {
    match mw.chain_members() {
        Some(members) => {
            for m in members {
                flatten(m, out);
            }
        }
        None => out.push(mw.clone()),
    }
}

fn load_cert(cert: &str, key: &str) -> Result<LoadedCert, String> {
    let c = tls::pem_source(cert, "certFile").map_err(|e| e.to_string())?;
    let k = tls::pem_source(key, "keyFile").map_err(|e| e.to_string())?;
    tls::load_pem(&c, &k).map_err(|e| e.to_string())
}

impl Compiler<'_> {
    fn lookup<'c, T>(
        &self,
        qname: &str,
        get: impl Fn(&'c DynamicConfig) -> &'c BTreeMap<String, T>,
    ) -> Option<(&'c T, String, String)>
    where
        Self: 'c,
    {
        let (name, provider) = qname.rsplit_once('@')?;
        let cfg: &'c DynamicConfig = self.providers.get(provider)?;
        get(cfg)
            .get(name)
            .map(|t| (t, name.to_owned(), provider.to_owned()))
    }

    fn tls_options_exist(&self, name: &str) -> bool {
        name == "default"
            || self
                .providers
                .values()
                .any(|c| c.tls.options.contains_key(name))
    }

    fn transport(&mut self, qname: &str) -> Option<Arc<Transport>> {
        if let Some(t) = self.transports.get(qname) {
            return Some(t.clone());
        }
        let settings = if qname == "default@internal" {
            let st = &self.shared.static_cfg.servers_transport;
            settings_from(
                st.insecure_skip_verify,
                &st.root_c_as,
                st.max_idle_conns_per_host,
                &st.forwarding_timeouts,
                None,
                false,
            )
        } else {
            let providers = self.providers;
            let (name, provider) = qname.rsplit_once('@')?;
            let tc = providers.get(provider)?.http.servers_transports.get(name)?;
            settings_from(
                tc.insecure_skip_verify,
                &tc.root_c_as,
                tc.max_idle_conns_per_host,
                &tc.forwarding_timeouts,
                tc.server_name.clone(),
                tc.disable_http2,
            )
        };
        let result = settings.and_then(|s| self.shared.transport(qname, s));
        match result {
            Ok(t) => {
                self.transports.insert(qname.to_owned(), t.clone());
                Some(t)
            }
            Err(message) => {
                self.errors.push(CompileError {
                    what: format!("serversTransport `{qname}`"),
                    message,
                });
                None
            }
        }
    }

    fn service(&mut self, qname: &str) -> Option<Arc<Service>> {
        if let Some(s) = self.services.get(qname) {
            return Some(s.clone());
        }
        let (cfg, name, provider) = self.lookup(qname, |c| &c.http.services)?;
        if self.stack.iter().any(|s| s == qname) {
            self.errors.push(CompileError {
                what: format!("service `{qname}`"),
                message: format!("refers to itself through {}", self.stack.join(" -> ")),
            });
            return None;
        }
        let what = format!(
            "service `{qname}`{}",
            self.shared.origin_of("service", &name, &provider)
        );
        self.stack.push(qname.to_owned());
        let result = self.build_service(qname, cfg, &provider);
        self.stack.pop();
        match result {
            Ok(s) => {
                self.services.insert(qname.to_owned(), s.clone());
                Some(s)
            }
            Err(message) => {
                self.errors.push(CompileError { what, message });
                None
            }
        }
    }

    fn build_service(
        &mut self,
        qname: &str,
        cfg: &ServiceConfig,
        provider: &str,
    ) -> Result<Arc<Service>, String> {
        match cfg {
            ServiceConfig::LoadBalancer(lb) => {
                // An empty server list is valid, as in Traefik: the service answers 503 (the
                // Kubernetes provider emits one for a Service without serving endpoints).
                if let Some(s) = &lb.strategy
                    && s != "wrr"
                {
                    return Err(format!(
                        "loadBalancer.strategy `{s}` is not supported (wrr)"
                    ));
                }
                let transport_name = match &lb.servers_transport {
                    Some(t) => qualify(t, provider),
                    None => "default@internal".to_owned(),
                };
                let transport = self.transport(&transport_name).ok_or_else(|| {
                    format!("serversTransport `{transport_name}` does not exist or is invalid")
                })?;
                let mut servers = Vec::new();
                for (i, s) in lb.servers.iter().enumerate() {
                    let upstream = Upstream::parse(&s.url, s.preserve_path.unwrap_or(false))
                        .map_err(|e| format!("servers[{i}]: {e}"))?;
                    servers.push(Server {
                        cookie_value: service::cookie_value_for(&s.url).into(),
                        state: self.shared.server_state(qname, &s.url),
                        weight: s.weight.unwrap_or(1),
                        upstream,
                    });
                }
                let sticky = lb
                    .sticky
                    .as_ref()
                    .and_then(|s| s.cookie.as_ref())
                    .map(|c| sticky_cookie(c, qname));
                let svc = Arc::new(Service::load_balancer(
                    qname,
                    LoadBalancer::new(
                        servers,
                        sticky,
                        ForwardOptions {
                            pass_host_header: lb.pass_host_header,
                            server_name: self.shared.server_name.clone(),
                        },
                        transport,
                    ),
                ));
                if let Some(hc) = &lb.health_check {
                    self.health.push((svc.clone(), health_check(hc)?));
                }
                Ok(svc)
            }
            ServiceConfig::Weighted(w) => {
                if w.services.is_empty() {
                    return Err("weighted has no services".into());
                }
                let mut children = Vec::new();
                for ws in &w.services {
                    let child_name = qualify(&ws.name, provider);
                    let child = self.service(&child_name).ok_or_else(|| {
                        format!("service `{}` does not exist or is invalid", ws.name)
                    })?;
                    children.push(WeightedChild {
                        service: child,
                        weight: ws.weight.unwrap_or(1),
                        cookie_value: service::cookie_value_for(&child_name).into(),
                    });
                }
                let sticky = w
                    .sticky
                    .as_ref()
                    .and_then(|s| s.cookie.as_ref())
                    .map(|c| sticky_cookie(c, qname));
                Ok(Arc::new(Service::weighted(
                    qname,
                    Weighted::new(children, sticky),
                )))
            }
        }
    }

    fn middleware(&mut self, qname: &str) -> Option<Arc<Middleware>> {
        if let Some(m) = self.middlewares.get(qname) {
            return Some(m.clone());
        }
        let (cfg, name, provider): (&MiddlewareConfig, String, String) =
            self.lookup(qname, |c| &c.http.middlewares)?;
        let what = format!(
            "middleware `{qname}`{}",
            self.shared.origin_of("middleware", &name, &provider)
        );
        if self.stack.iter().any(|s| s == qname) {
            self.errors.push(CompileError {
                what,
                message: format!("chain refers to itself through {}", self.stack.join(" -> ")),
            });
            return None;
        }
        self.stack.push(qname.to_owned());
        let shared = self.shared;
        let result = {
            let mut resolve = |m: &str| -> Result<Arc<Middleware>, String> {
                let q = qualify(m, &provider);
                self.middleware(&q)
                    .ok_or_else(|| format!("middleware `{m}` does not exist or is invalid"))
            };
            Middleware::compile(qname, cfg, &shared.middleware_state, &mut resolve)
        };
        self.stack.pop();
        match result {
            Ok(m) => {
                let m = Arc::new(m);
                self.middlewares.insert(qname.to_owned(), m.clone());
                Some(m)
            }
            Err(message) => {
                self.errors.push(CompileError { what, message });
                None
            }
        }
    }

    fn internal_services(&mut self) {
        for svc in self.shared.internal_services() {
            self.services.insert(svc.name.to_string(), svc);
        }
    }

    fn internal_routers(&mut self, per_ep: &mut HashMap<String, Vec<Arc<Router>>>) {
        for (ep, router) in self.shared.internal_routers(&self.services) {
            per_ep.entry(ep).or_default().push(router);
        }
    }
}

fn settings_from(
    insecure: bool,
    root_cas: &[String],
    max_idle: Option<usize>,
    timeouts: &dynamic::ForwardingTimeouts,
    server_name: Option<String>,
    disable_http2: bool,
) -> Result<TransportSettings, String> {
    let mut roots = Vec::new();
    for r in root_cas {
        roots.push(tls::pem_source(r, "rootCAs").map_err(|e| e.to_string())?);
    }
    Ok(TransportSettings {
        dial_timeout: timeouts
            .dial_timeout
            .non_zero()
            .unwrap_or(Duration::from_secs(30)),
        response_header_timeout: timeouts.response_header_timeout.non_zero(),
        idle_conn_timeout: timeouts
            .idle_conn_timeout
            .non_zero()
            .unwrap_or(Duration::from_secs(90)),
        max_idle_per_host: max_idle.unwrap_or(200),
        insecure_skip_verify: insecure,
        root_cas: roots,
        server_name,
        disable_http2,
    })
}

fn sticky_cookie(c: &dynamic::StickyCookie, service: &str) -> StickyCookie {
    StickyCookie {
        name: c
            .name
            .clone()
            .unwrap_or_else(|| service::default_cookie_name(service)),
        secure: c.secure,
        http_only: c.http_only,
        same_site: c.same_site.clone(),
        max_age: c.max_age,
        path: c.path.clone().unwrap_or_else(|| "/".into()),
        domain: c.domain.clone(),
    }
}

fn health_check(hc: &dynamic::HealthCheckConfig) -> Result<HealthCheck, String> {
    if let Some(mode) = &hc.mode
        && mode != "http"
    {
        return Err(format!("healthCheck.mode `{mode}` is not supported (http)"));
    }
    let path = hc.path.clone().unwrap_or_else(|| "/".into());
    if !path.starts_with('/') {
        return Err(format!("healthCheck.path `{path}` must start with /"));
    }
    let method = match &hc.method {
        Some(m) => m
            .parse()
            .map_err(|_| format!("healthCheck.method `{m}` is not an HTTP method"))?,
        None => http::Method::GET,
    };
    let interval = hc
        .interval
        .and_then(|d| d.non_zero())
        .unwrap_or(Duration::from_secs(30));
    let mut headers = Vec::new();
    for (k, v) in &hc.headers {
        let name = http::HeaderName::from_bytes(k.as_bytes())
            .map_err(|_| format!("healthCheck.headers: `{k}` is not a header name"))?;
        let value = HeaderValue::from_str(v)
            .map_err(|_| format!("healthCheck.headers.{k}: invalid value"))?;
        headers.push((name, value));
    }
    Ok(HealthCheck {
        path,
        method,
        scheme: hc.scheme.clone(),
        port: hc.port,
        hostname: hc.hostname.clone(),
        status: hc.status,
        interval,
        unhealthy_interval: hc
            .unhealthy_interval
            .and_then(|d| d.non_zero())
            .unwrap_or(interval),
        timeout: hc
            .timeout
            .and_then(|d| d.non_zero())
            .unwrap_or(Duration::from_secs(5)),
        headers,
    })
}
