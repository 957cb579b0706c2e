//! State shared by every worker thread and every snapshot: the current snapshot, certificates,
//! health of servers, pooled transports, metrics, and the internal services (`ping`, `api`,
//! `prometheus`) that read them.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};

use arc_swap::ArcSwap;
use http::{HeaderValue, StatusCode, header};
use serde_json::{Value, json};

use crate::accesslog::AccessLog;
use crate::body::{Body, Response, text_response};
use crate::config::{DynamicConfig, StaticConfig};
use crate::forward::{Transport, TransportSettings};
use crate::metrics::{Extra, Metrics};
use crate::middleware::MiddlewareState;
use crate::rule::Rule;
use crate::service::{Server, ServerState, Service};
use crate::snapshot::{self, CompileError, Router, Snapshot};
use crate::tls::{AcmeChallenges, CertStore};
use crate::websocket::Tunnels;

/// Priority of Traefik's internal routers (`math.MaxInt32`).
pub const INTERNAL_PRIORITY: i64 = i32::MAX as i64;

/// Process-wide proxy state.
pub struct Shared {
    pub static_cfg: Arc<StaticConfig>,
    pub snapshot: ArcSwap<Snapshot>,
    pub certs: Arc<CertStore>,
    pub acme: Arc<AcmeChallenges>,
    pub tunnels: Arc<Tunnels>,
    pub metrics: Arc<Metrics>,
    pub access_log: Option<AccessLog>,
    /// Set at SIGTERM: `/ping` answers 503 so load balancers stop sending traffic.
    pub draining: AtomicBool,
    /// X-Forwarded-Server.
    pub server_name: HeaderValue,
    pub middleware_state: MiddlewareState,
    /// Runtime for background tasks (health checks, reloads).
    pub control: tokio::runtime::Handle,
    health: Mutex<HashMap<String, Arc<ServerState>>>,
    transports: Mutex<HashMap<String, (TransportSettings, Arc<Transport>)>>,
    /// The latest configuration of each provider.
    inputs: Mutex<BTreeMap<String, DynamicConfig>>,
    /// Where the file provider's objects came from (`router:NAME` -> file).
    origins: Mutex<BTreeMap<String, PathBuf>>,
    generation: AtomicU64,
    /// The port each entrypoint really listens on (differs from the configured one with port 0),
    /// set once all entrypoints are bound; redirections to an entrypoint use it.
    pub(crate) bound_ports: std::sync::OnceLock<BTreeMap<String, u16>>,
    me: Weak<Shared>,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("generation", &self.generation)
            .finish_non_exhaustive()
    }
}

impl Shared {
    pub fn new(
        static_cfg: Arc<StaticConfig>,
        certs: Arc<CertStore>,
        metrics: Arc<Metrics>,
        access_log: Option<AccessLog>,
        control: tokio::runtime::Handle,
    ) -> Result<Arc<Shared>, CompileError> {
        let host = hostname();
        let shared = Arc::new_cyclic(|me| Shared {
            static_cfg,
            snapshot: ArcSwap::from_pointee(placeholder_snapshot()),
            certs,
            acme: Arc::new(AcmeChallenges::default()),
            tunnels: Tunnels::new(),
            metrics,
            access_log,
            draining: AtomicBool::new(false),
            server_name: HeaderValue::from_str(&host).unwrap_or(HeaderValue::from_static("gantry")),
            middleware_state: MiddlewareState::default(),
            control,
            health: Mutex::default(),
            transports: Mutex::default(),
            inputs: Mutex::default(),
            origins: Mutex::default(),
            generation: AtomicU64::new(0),
            bound_ports: std::sync::OnceLock::new(),
            me: me.clone(),
        });
        let first = Snapshot::empty(&shared)?;
        shared.snapshot.store(Arc::new(first));
        Ok(shared)
    }

    /// Sets one provider's configuration and recompiles. On error nothing changes.
    pub fn set_provider(
        &self,
        provider: &str,
        cfg: DynamicConfig,
        origins: Option<BTreeMap<String, PathBuf>>,
    ) -> Result<u64, CompileError> {
        let mut inputs = self.inputs.lock().map_err(|_| poisoned())?;
        let mut candidate = inputs.clone();
        candidate.insert(provider.to_owned(), cfg);
        // Error messages name files, so the new origins apply during the compile; they are
        // put back if it fails.
        let previous_origins = origins.map(|o| match self.origins.lock() {
            Ok(mut g) => std::mem::replace(&mut *g, o),
            Err(_) => BTreeMap::new(),
        });
        let generation = self.generation.load(Ordering::Relaxed) + 1;
        self.metrics.config_reloads.fetch_add(1, Ordering::Relaxed);
        match snapshot::compile(self, &candidate, generation) {
            Ok(snap) => {
                self.generation.store(generation, Ordering::Relaxed);
                *inputs = candidate;
                self.snapshot.store(Arc::new(snap));
                self.metrics
                    .config_last_reload_success
                    .store(unix_now(), Ordering::Relaxed);
                Ok(generation)
            }
            Err(e) => {
                if let (Some(prev), Ok(mut g)) = (previous_origins, self.origins.lock()) {
                    *g = prev;
                }
                self.count_reload_failure();
                Err(e)
            }
        }
    }

    /// Counts a reload that failed before it could be compiled (a file that does not parse), so
    /// `gantry_config_reloads_failure_total` covers every rejected reload, not only compile errors.
    pub fn reload_failed_to_load(&self) {
        self.metrics.config_reloads.fetch_add(1, Ordering::Relaxed);
        self.count_reload_failure();
    }

    fn count_reload_failure(&self) {
        self.metrics
            .config_reload_failures
            .fetch_add(1, Ordering::Relaxed);
        self.metrics
            .config_last_reload_failure
            .store(unix_now(), Ordering::Relaxed);
    }

    /// ` (in FILE)` for objects of the file provider, for error messages.
    pub fn origin_of(&self, kind: &str, name: &str, provider: &str) -> String {
        if provider != "file" {
            return String::new();
        }
        self.origins
            .lock()
            .ok()
            .and_then(|o| o.get(&format!("{kind}:{name}")).cloned())
            .map(|p| format!(" (in {})", p.display()))
            .unwrap_or_default()
    }

    pub fn spawn<F: Future<Output = ()> + Send + 'static>(&self, fut: F) {
        self.control.spawn(fut);
    }

    /// The health state of a server, kept across reloads.
    pub fn server_state(&self, service: &str, url: &str) -> Arc<ServerState> {
        match self.health.lock() {
            Ok(mut m) => m.entry(format!("{service}|{url}")).or_default().clone(),
            Err(_) => Arc::default(),
        }
    }

    /// A transport with these settings, reused across reloads so pooled connections survive.
    pub fn transport(
        &self,
        name: &str,
        settings: TransportSettings,
    ) -> Result<Arc<Transport>, String> {
        let mut m = self
            .transports
            .lock()
            .map_err(|_| "transport registry poisoned".to_owned())?;
        if let Some((s, t)) = m.get(name)
            && *s == settings
        {
            return Ok(t.clone());
        }
        let t = Arc::new(Transport::new(settings.clone())?);
        m.insert(name.to_owned(), (settings, t.clone()));
        Ok(t)
    }

    /// `ping@internal`, `api@internal`, `prometheus@internal`, `noop@internal`.
    pub fn internal_services(&self) -> Vec<Arc<Service>> {
        let mut v = Vec::new();
        let me = self.me.clone();
        let code = self
            .static_cfg
            .ping
            .as_ref()
            .and_then(|p| p.terminating_status_code)
            .unwrap_or(503);
        v.push(Arc::new(Service::from_fn(
            "ping@internal",
            move |_req, _ctx| {
                let draining = me
                    .upgrade()
                    .is_none_or(|s| s.draining.load(Ordering::Relaxed));
                async move {
                    if draining {
                        let mut r = text_response(StatusCode::SERVICE_UNAVAILABLE, "Terminating\n");
                        *r.status_mut() =
                            StatusCode::from_u16(code).unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
                        r
                    } else {
                        text_response(StatusCode::OK, "OK")
                    }
                }
            },
        )));
        let me = self.me.clone();
        v.push(Arc::new(Service::from_fn(
            "api@internal",
            move |req, _ctx| {
                let resp = if req.method() != http::Method::GET
                    && req.method() != http::Method::HEAD
                {
                    // Read-only: nothing can be changed through the API.
                    let mut r =
                        text_response(StatusCode::METHOD_NOT_ALLOWED, "405 Method Not Allowed\n");
                    r.headers_mut()
                        .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
                    r
                } else {
                    match me.upgrade() {
                        Some(s) => s.api(req.uri().path()),
                        None => text_response(StatusCode::SERVICE_UNAVAILABLE, "shutting down\n"),
                    }
                };
                async move { resp }
            },
        )));
        let me = self.me.clone();
        v.push(Arc::new(Service::from_fn(
            "prometheus@internal",
            move |_req, _ctx| {
                let text = me.upgrade().map(|s| s.render_metrics()).unwrap_or_default();
                async move {
                    let mut r = http::Response::new(Body::full(text));
                    r.headers_mut().insert(
                        header::CONTENT_TYPE,
                        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
                    );
                    r
                }
            },
        )));
        v.push(Arc::new(Service::from_fn(
            "noop@internal",
            |_req, _ctx| async { http::Response::new(Body::empty()) },
        )));
        v
    }

    /// Routers Traefik creates by itself: ping, api (insecure), metrics, entrypoint redirections.
    pub fn internal_routers(
        &self,
        services: &BTreeMap<String, Arc<Service>>,
    ) -> Vec<(String, Arc<Router>)> {
        let sc = &self.static_cfg;
        let mut out = Vec::new();
        let mut add = |ep: &str, name: &str, rule: &str, priority: i64, service: Arc<Service>| {
            let Ok(parsed) = Rule::parse(rule) else {
                tracing::error!(rule, "internal rule does not parse");
                return;
            };
            let tls = sc
                .entry_points
                .get(ep)
                .is_some_and(|e| e.http.tls.is_some());
            out.push((
                ep.to_owned(),
                Arc::new(Router {
                    name: name.into(),
                    rule_text: rule.to_owned(),
                    rule: parsed,
                    priority,
                    tls,
                    tls_options: None,
                    middlewares: Vec::new(),
                    service,
                    access_log: false,
                    metrics: false,
                    metric_handles: None,
                }),
            ));
        };
        if let Some(p) = &sc.ping
            && p.manual_routing != Some(true)
            && let Some(svc) = services.get("ping@internal")
        {
            let ep = p.entry_point.as_deref().unwrap_or("traefik");
            add(
                ep,
                "ping@internal",
                "PathPrefix(`/ping`)",
                INTERNAL_PRIORITY,
                svc.clone(),
            );
        }
        if let Some(api) = &sc.api
            && api.insecure
            && let Some(svc) = services.get("api@internal")
        {
            add(
                "traefik",
                "api@internal",
                "PathPrefix(`/api`)",
                INTERNAL_PRIORITY - 1,
                svc.clone(),
            );
        }
        if let Some(p) = sc.metrics.as_ref().and_then(|m| m.prometheus.as_ref())
            && let Some(svc) = services.get("prometheus@internal")
        {
            let ep = p.entry_point.as_deref().unwrap_or("traefik");
            add(
                ep,
                "prometheus@internal",
                "PathPrefix(`/metrics`)",
                INTERNAL_PRIORITY,
                svc.clone(),
            );
        }
        for (name, ep) in &sc.entry_points {
            let Some(r) = ep
                .http
                .redirections
                .as_ref()
                .and_then(|r| r.entry_point.as_ref())
            else {
                continue;
            };
            let (port, target) = if let Some(p) = r.to.strip_prefix(':') {
                (p.parse::<u16>().ok(), None)
            } else {
                let configured = sc
                    .entry_points
                    .get(&r.to)
                    .and_then(|t| crate::server::parse_address(&t.address).ok())
                    .map(|a| a.port());
                (configured, Some(r.to.clone()))
            };
            let scheme = r.scheme.clone();
            let permanent = r.permanent;
            let me = self.me.clone();
            let svc = Arc::new(Service::from_fn(
                &format!("{name}-to-{}@internal", r.to),
                move |req, _ctx| {
                    // An entrypoint target: the port it is bound to (configured `:0` picks one).
                    let bound = target.as_ref().and_then(|t| {
                        me.upgrade()
                            .and_then(|s| s.bound_ports.get().and_then(|m| m.get(t).copied()))
                    });
                    let resp = redirect(&req, &scheme, bound.or(port), permanent);
                    async move { resp }
                },
            ));
            add(
                name,
                &format!("{name}-to-{}@internal", r.to),
                "PathPrefix(`/`)",
                r.priority.unwrap_or(INTERNAL_PRIORITY - 1),
                svc,
            );
        }
        out
    }

    fn render_metrics(&self) -> String {
        let snap = self.snapshot.load();
        let mut extra = Extra {
            websockets: self.tunnels.open(),
            ..Default::default()
        };
        for c in self.certs.all() {
            extra.certs.push((
                c.names.first().cloned().unwrap_or_default(),
                c.names.join(","),
                c.not_after,
            ));
        }
        let servers: Vec<(String, String, bool)> = snap
            .services
            .values()
            .filter_map(|s| s.as_load_balancer().map(|lb| (s.name.clone(), lb)))
            .flat_map(|(n, lb)| {
                lb.servers.iter().map(move |sv: &Server| {
                    (
                        n.to_string(),
                        sv.upstream.url.to_string(),
                        sv.state.available(),
                    )
                })
            })
            .collect();
        extra.servers = servers
            .iter()
            .map(|(a, b, c)| (a.as_str(), b.as_str(), *c))
            .collect();
        self.metrics.render(&extra)
    }

    /// The read-only API (`/api/overview`, `/api/http/{routers,services,middlewares}[/name]`,
    /// `/api/entrypoints`, `/api/version`, `/api/rawdata`).
    fn api(&self, path: &str) -> Response {
        let snap = self.snapshot.load();
        let routers: BTreeMap<&String, Value> = snap
            .routers
            .iter()
            .map(|(name, r)| {
                let eps = snap.router_entrypoints.get(name).cloned().unwrap_or_default();
                let (n, p) = name.rsplit_once('@').unwrap_or((name, ""));
                (
                    name,
                    json!({
                        "name": name, "provider": p, "rule": r.rule_text, "priority": r.priority,
                        "entryPoints": eps, "service": r.service.name.as_ref(),
                        "middlewares": r.middlewares.iter().map(|m| m.name.to_string()).collect::<Vec<_>>(),
                        "tls": r.tls.then(|| json!({"options": r.tls_options})),
                        "status": "enabled", "using": [n],
                    }),
                )
            })
            .collect();
        let services: BTreeMap<&String, Value> = snap
            .services
            .iter()
            .map(|(name, s)| {
                let (_, p) = name.rsplit_once('@').unwrap_or((name, ""));
                let mut v = json!({"name": name, "provider": p, "status": if s.is_up() {"enabled"} else {"disabled"}});
                if let Some(lb) = s.as_load_balancer() {
                    v["loadBalancer"] = json!({
                        "servers": lb.servers.iter().map(|sv| json!({"url": sv.upstream.url.as_ref(), "weight": sv.weight})).collect::<Vec<_>>(),
                        "passHostHeader": lb.options.pass_host_header,
                    });
                    v["serverStatus"] = lb
                        .servers
                        .iter()
                        .map(|sv| (sv.upstream.url.to_string(), json!(if sv.state.available() { "UP" } else { "DOWN" })))
                        .collect::<serde_json::Map<_, _>>()
                        .into();
                }
                (name, v)
            })
            .collect();
        let middlewares: BTreeMap<&String, Value> = snap
            .middlewares
            .keys()
            .map(|name| {
                let (_, p) = name.rsplit_once('@').unwrap_or((name, ""));
                (
                    name,
                    json!({"name": name, "provider": p, "status": "enabled"}),
                )
            })
            .collect();
        let list = |m: &BTreeMap<&String, Value>| Value::Array(m.values().cloned().collect());
        let one = |m: &BTreeMap<&String, Value>, name: &str| {
            m.iter()
                .find(|(k, _)| k.as_str() == name)
                .map(|(_, v)| v.clone())
        };
        let body = match path.trim_end_matches('/') {
            "/api/overview" => Some(json!({
                "http": {
                    "routers": {"total": routers.len(), "warnings": 0, "errors": 0},
                    "services": {"total": services.len(), "warnings": services.values().filter(|v| v["status"] == "disabled").count(), "errors": 0},
                    "middlewares": {"total": middlewares.len(), "warnings": 0, "errors": 0},
                },
                "features": {"tracing": "", "metrics": if self.static_cfg.metrics.is_some() {"prometheus"} else {""}, "accessLog": self.access_log.is_some()},
                "providers": self.inputs.lock().map(|i| i.keys().cloned().collect::<Vec<_>>()).unwrap_or_default(),
                "generation": snap.generation,
            })),
            "/api/http/routers" => Some(list(&routers)),
            "/api/http/services" => Some(list(&services)),
            "/api/http/middlewares" => Some(list(&middlewares)),
            "/api/version" => {
                Some(json!({"Version": env!("CARGO_PKG_VERSION"), "Codename": "gantry"}))
            }
            "/api/entrypoints" => Some(Value::Array(
                self.static_cfg
                    .entry_points
                    .iter()
                    .map(|(n, e)| json!({"name": n, "address": e.address}))
                    .collect(),
            )),
            p => {
                if let Some(n) = p.strip_prefix("/api/http/routers/") {
                    one(&routers, n)
                } else if let Some(n) = p.strip_prefix("/api/http/services/") {
                    one(&services, n)
                } else if let Some(n) = p.strip_prefix("/api/http/middlewares/") {
                    one(&middlewares, n)
                } else {
                    None
                }
            }
        };
        match body {
            Some(v) => {
                let mut r = http::Response::new(Body::full(v.to_string()));
                r.headers_mut().insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/json"),
                );
                r
            }
            None => text_response(StatusCode::NOT_FOUND, "404 page not found\n"),
        }
    }
}

fn redirect(
    req: &crate::body::Request,
    scheme: &str,
    port: Option<u16>,
    permanent: bool,
) -> Response {
    let host = req
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .or_else(|| req.uri().authority().map(|a| a.as_str()))
        .unwrap_or("");
    let (host, _) = crate::forwarded::split_port(host);
    let default = if scheme == "https" { 443 } else { 80 };
    let port = match port {
        Some(p) if p != default => format!(":{p}"),
        _ => String::new(),
    };
    let pq = req.uri().path_and_query().map_or("/", |p| p.as_str());
    let location = format!("{scheme}://{host}{port}{pq}");
    let status = match (
        permanent,
        req.method() == http::Method::GET || req.method() == http::Method::HEAD,
    ) {
        (true, true) => StatusCode::MOVED_PERMANENTLY,
        (true, false) => StatusCode::PERMANENT_REDIRECT,
        (false, true) => StatusCode::FOUND,
        (false, false) => StatusCode::TEMPORARY_REDIRECT,
    };
    let mut r = text_response(status, "");
    *r.body_mut() = Body::empty();
    if let Ok(v) = HeaderValue::from_str(&location) {
        r.headers_mut().insert(header::LOCATION, v);
    }
    r
}

fn placeholder_snapshot() -> Snapshot {
    Snapshot {
        generation: 0,
        tables: Default::default(),
        routers: BTreeMap::new(),
        router_entrypoints: BTreeMap::new(),
        services: BTreeMap::new(),
        middlewares: BTreeMap::new(),
        tls_configs: HashMap::new(),
        tls_options_by_host: HashMap::new(),
        stop: tokio_util::sync::CancellationToken::new(),
    }
}

fn poisoned() -> CompileError {
    CompileError {
        what: "configuration".into(),
        message: "internal lock poisoned by an earlier panic".into(),
    }
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_owned())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "gantry".into())
}
