//! Services: where a router sends its requests. Load balancers over upstream servers (weighted round
//! robin, sticky cookies, active health checks, passive ejection), weighted services over services,
//! and the proxy's internal services (`ping@internal`, `api@internal`, ...).

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use http::{HeaderValue, StatusCode, header};

use crate::body::{Request, Response, text_response};
use crate::context::RequestCtx;
use crate::forward::{self, ForwardOptions, Transport, Upstream};

type BoxFuture<'a> = Pin<Box<dyn Future<Output = Response> + Send + 'a>>;

/// A handler for internal services and tests.
pub type HandlerFn = dyn Fn(Request, &RequestCtx) -> BoxFuture<'static> + Send + Sync;

/// A compiled service.
pub struct Service {
    /// Qualified name (`name@file`).
    pub name: Arc<str>,
    kind: Kind,
}

enum Kind {
    LoadBalancer(LoadBalancer),
    Weighted(Weighted),
    Handler(Box<HandlerFn>),
}

impl fmt::Debug for Service {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match &self.kind {
            Kind::LoadBalancer(_) => "loadBalancer",
            Kind::Weighted(_) => "weighted",
            Kind::Handler(_) => "internal",
        };
        f.debug_struct("Service")
            .field("name", &self.name)
            .field("kind", &kind)
            .finish()
    }
}

impl Service {
    pub fn load_balancer(name: &str, lb: LoadBalancer) -> Service {
        Service {
            name: name.into(),
            kind: Kind::LoadBalancer(lb),
        }
    }

    pub fn weighted(name: &str, w: Weighted) -> Service {
        Service {
            name: name.into(),
            kind: Kind::Weighted(w),
        }
    }

    /// A service answered by the proxy itself.
    pub fn from_fn<F, Fut>(name: &str, f: F) -> Service
    where
        F: Fn(Request, &RequestCtx) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Response> + Send + 'static,
    {
        Service {
            name: name.into(),
            kind: Kind::Handler(Box::new(move |req, ctx| Box::pin(f(req, ctx)))),
        }
    }

    /// The load balancer, if this is one (for the API and health checks).
    pub fn as_load_balancer(&self) -> Option<&LoadBalancer> {
        match &self.kind {
            Kind::LoadBalancer(lb) => Some(lb),
            _ => None,
        }
    }

    /// Whether any server could take a request now.
    pub fn is_up(&self) -> bool {
        match &self.kind {
            Kind::LoadBalancer(lb) => lb.servers.iter().any(|s| s.state.available()),
            Kind::Weighted(w) => w.children.iter().any(|c| c.service.is_up()),
            Kind::Handler(_) => true,
        }
    }

    /// Serves one request. Not boxed: the load-balancer path (nearly every request) stays one
    /// state machine; only a weighted service's recursion into its children is boxed.
    pub async fn call(&self, req: Request, ctx: &mut RequestCtx) -> Response {
        match &self.kind {
            Kind::LoadBalancer(lb) => lb.call(&self.name, req, ctx).await,
            Kind::Weighted(w) => w.call(&self.name, req, ctx).await,
            Kind::Handler(f) => {
                if ctx.service.is_none() {
                    ctx.service = Some(self.name.clone());
                }
                f(req, ctx).await
            }
        }
    }
}

/// Health of one server, shared across configuration reloads (keyed by service and URL).
#[derive(Debug)]
pub struct ServerState {
    /// Result of the last active health check (true until a check says otherwise).
    healthy: AtomicBool,
    /// Passive ejection: unix millis until which the server is skipped after a connect failure.
    ejected_until: AtomicU64,
}

impl Default for ServerState {
    fn default() -> Self {
        ServerState {
            healthy: AtomicBool::new(true),
            ejected_until: AtomicU64::new(0),
        }
    }
}

/// How long a server that refused a connection is skipped, unless a health check readmits it.
pub const PASSIVE_EJECTION: Duration = Duration::from_secs(10);

fn now_millis() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl ServerState {
    pub fn healthy(&self) -> bool {
        self.healthy.load(Ordering::Relaxed)
    }

    pub fn set_healthy(&self, up: bool) {
        self.healthy.store(up, Ordering::Relaxed);
        if up {
            self.ejected_until.store(0, Ordering::Relaxed);
        }
    }

    pub fn eject(&self, for_: Duration) {
        self.ejected_until
            .store(now_millis() + for_.as_millis() as u64, Ordering::Relaxed);
    }

    /// Healthy and not passively ejected.
    pub fn available(&self) -> bool {
        if !self.healthy() {
            return false;
        }
        let until = self.ejected_until.load(Ordering::Relaxed);
        until == 0 || now_millis() >= until
    }
}

/// One server of a load balancer.
#[derive(Debug)]
pub struct Server {
    pub upstream: Upstream,
    pub weight: u32,
    pub state: Arc<ServerState>,
    /// Value of the sticky cookie that selects this server.
    pub cookie_value: Arc<str>,
}

/// Sticky-session cookie settings.
#[derive(Debug, Clone)]
pub struct StickyCookie {
    pub name: String,
    pub secure: bool,
    pub http_only: bool,
    pub same_site: Option<String>,
    pub max_age: Option<i64>,
    pub path: String,
    pub domain: Option<String>,
}

impl StickyCookie {
    fn set_cookie(&self, value: &str) -> Option<HeaderValue> {
        let mut s = format!("{}={}; Path={}", self.name, value, self.path);
        if let Some(d) = &self.domain {
            s.push_str("; Domain=");
            s.push_str(d);
        }
        if let Some(age) = self.max_age {
            if age > 0 {
                s.push_str(&format!("; Max-Age={age}"));
            } else if age < 0 {
                s.push_str("; Max-Age=0");
            }
        }
        if self.http_only {
            s.push_str("; HttpOnly");
        }
        if self.secure {
            s.push_str("; Secure");
        }
        if let Some(ss) = &self.same_site {
            match ss.to_ascii_lowercase().as_str() {
                "none" => s.push_str("; SameSite=None"),
                "lax" => s.push_str("; SameSite=Lax"),
                "strict" => s.push_str("; SameSite=Strict"),
                _ => {}
            }
        }
        HeaderValue::from_str(&s).ok()
    }

    /// The cookie's value in the request, if sent.
    fn find<'r>(&self, req: &'r Request) -> Option<&'r str> {
        req.headers()
            .get_all(header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(';'))
            .filter_map(|pair| pair.trim().split_once('='))
            .find(|(k, _)| *k == self.name)
            .map(|(_, v)| v)
    }
}

/// A smooth weighted round-robin schedule: indices in an order that spreads each weight evenly
/// (nginx's algorithm), computed once; selection is one atomic increment.
#[derive(Debug)]
pub struct Schedule {
    order: Vec<usize>,
    next: AtomicUsize,
}

impl Schedule {
    pub fn new(weights: &[u32]) -> Schedule {
        let g = weights.iter().copied().filter(|w| *w > 0).fold(0, gcd);
        let weights: Vec<i64> = weights
            .iter()
            .map(|w| i64::from(w.checked_div(g).unwrap_or(0)))
            .collect();
        let total: i64 = weights.iter().sum();
        // Cap the schedule length; beyond that the distribution is approximate but still weighted.
        let len = total.clamp(0, 10_000) as usize;
        let mut current = vec![0i64; weights.len()];
        let mut order = Vec::with_capacity(len);
        for _ in 0..len {
            let mut best = 0;
            for i in 0..weights.len() {
                current[i] += weights[i];
                if current[i] > current[best] {
                    best = i;
                }
            }
            current[best] -= total;
            order.push(best);
        }
        Schedule {
            order,
            next: AtomicUsize::new(0),
        }
    }

    /// The next index whose `ok` is true, trying each slot of the schedule at most once.
    pub fn pick(&self, ok: impl Fn(usize) -> bool) -> Option<usize> {
        let len = self.order.len();
        if len == 0 {
            return None;
        }
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        (0..len)
            .map(|i| self.order[(start + i) % len])
            .find(|&idx| ok(idx))
    }
}

fn gcd(a: u32, b: u32) -> u32 {
    if b == 0 { a } else { gcd(b, a % b) }
}

/// `loadBalancer` service.
#[derive(Debug)]
pub struct LoadBalancer {
    pub servers: Vec<Server>,
    schedule: Schedule,
    pub sticky: Option<StickyCookie>,
    pub options: ForwardOptions,
    pub transport: Arc<Transport>,
}

impl LoadBalancer {
    pub fn new(
        servers: Vec<Server>,
        sticky: Option<StickyCookie>,
        options: ForwardOptions,
        transport: Arc<Transport>,
    ) -> LoadBalancer {
        let weights: Vec<u32> = servers.iter().map(|s| s.weight).collect();
        LoadBalancer {
            schedule: Schedule::new(&weights),
            servers,
            sticky,
            options,
            transport,
        }
    }

    fn pick(&self, req: &Request) -> Option<(usize, bool)> {
        if let Some(sticky) = &self.sticky
            && let Some(value) = sticky.find(req)
            && let Some(i) = self
                .servers
                .iter()
                .position(|s| &*s.cookie_value == value && s.state.available())
        {
            return Some((i, true));
        }
        self.schedule
            .pick(|i| self.servers[i].state.available())
            .map(|i| (i, false))
    }

    async fn call(&self, name: &Arc<str>, req: Request, ctx: &mut RequestCtx) -> Response {
        ctx.service = Some(name.clone());
        let Some((idx, from_cookie)) = self.pick(&req) else {
            return text_response(
                StatusCode::SERVICE_UNAVAILABLE,
                "503 Service Unavailable: no healthy upstream server\n",
            );
        };
        let server = &self.servers[idx];
        match forward::forward(&self.transport, &server.upstream, &self.options, req, ctx).await {
            Ok(mut resp) => {
                if let Some(sticky) = &self.sticky
                    && !from_cookie
                    && let Some(v) = sticky.set_cookie(&server.cookie_value)
                {
                    resp.headers_mut().append(header::SET_COOKIE, v);
                }
                resp
            }
            Err(e) => {
                if e == forward::ForwardError::Connect {
                    server.state.eject(PASSIVE_EJECTION);
                    tracing::warn!(service = %name, server = %server.upstream.url,
                        "upstream refused the connection; ejected for {:?}", PASSIVE_EJECTION);
                }
                e.response()
            }
        }
    }
}

/// One child of a `weighted` service.
#[derive(Debug)]
pub struct WeightedChild {
    pub service: Arc<Service>,
    pub weight: u32,
    pub cookie_value: Arc<str>,
}

/// `weighted` service: weighted round robin over other services.
#[derive(Debug)]
pub struct Weighted {
    pub children: Vec<WeightedChild>,
    schedule: Schedule,
    pub sticky: Option<StickyCookie>,
}

impl Weighted {
    pub fn new(children: Vec<WeightedChild>, sticky: Option<StickyCookie>) -> Weighted {
        let weights: Vec<u32> = children.iter().map(|c| c.weight).collect();
        Weighted {
            schedule: Schedule::new(&weights),
            children,
            sticky,
        }
    }

    /// Boxed: a weighted service's children may be weighted services (recursion).
    fn call<'a>(
        &'a self,
        name: &'a Arc<str>,
        req: Request,
        ctx: &'a mut RequestCtx,
    ) -> BoxFuture<'a> {
        Box::pin(self.call_inner(name, req, ctx))
    }

    async fn call_inner(&self, name: &Arc<str>, req: Request, ctx: &mut RequestCtx) -> Response {
        let mut chosen = None;
        if let Some(sticky) = &self.sticky
            && let Some(value) = sticky.find(&req)
        {
            chosen = self
                .children
                .iter()
                .position(|c| &*c.cookie_value == value && c.service.is_up())
                .map(|i| (i, true));
        }
        let chosen = chosen.or_else(|| {
            self.schedule
                .pick(|i| self.children[i].service.is_up())
                .map(|i| (i, false))
        });
        let Some((idx, from_cookie)) = chosen else {
            ctx.service = Some(name.clone());
            return text_response(
                StatusCode::SERVICE_UNAVAILABLE,
                "503 Service Unavailable: no healthy upstream server\n",
            );
        };
        let child = &self.children[idx];
        let mut resp = child.service.call(req, ctx).await;
        if let Some(sticky) = &self.sticky
            && !from_cookie
            && let Some(v) = sticky.set_cookie(&child.cookie_value)
        {
            resp.headers_mut().append(header::SET_COOKIE, v);
        }
        resp
    }
}

/// A stable cookie value for a server URL or child service name (not secret: it only selects).
pub fn cookie_value_for(s: &str) -> String {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(s.as_bytes());
    digest[..8].iter().map(|b| format!("{b:02x}")).collect()
}

/// Traefik's default sticky cookie name: derived from the service name.
pub fn default_cookie_name(service: &str) -> String {
    use sha1::{Digest, Sha1};
    let digest = Sha1::digest(service.as_bytes());
    let hex: String = digest[..3].iter().map(|b| format!("{b:02x}")).collect();
    format!("_{hex}")
}

/// Health-check settings of one load balancer, compiled.
#[derive(Debug, Clone)]
pub struct HealthCheck {
    pub path: String,
    pub method: http::Method,
    pub scheme: Option<String>,
    pub port: Option<u16>,
    pub hostname: Option<String>,
    pub status: Option<u16>,
    pub interval: Duration,
    pub unhealthy_interval: Duration,
    pub timeout: Duration,
    pub headers: Vec<(http::HeaderName, HeaderValue)>,
}

/// Runs active health checks for one load balancer until `stop` fires.
pub async fn run_health_checks(
    service: Arc<Service>,
    check: HealthCheck,
    stop: tokio_util::sync::CancellationToken,
) {
    let Some(lb) = service.as_load_balancer() else {
        return;
    };
    let transport = lb.transport.clone();
    loop {
        let started = Instant::now();
        let mut any_down = false;
        for server in &lb.servers {
            let up = check_one(&transport, &server.upstream, &check).await;
            let was = server.state.healthy();
            if up != was {
                if up {
                    tracing::info!(service = %service.name, server = %server.upstream.url, "health check passed: server readmitted");
                } else {
                    tracing::warn!(service = %service.name, server = %server.upstream.url, "health check failed: server removed from rotation");
                }
            }
            server.state.set_healthy(up);
            any_down |= !up;
        }
        let wait = if any_down {
            check.unhealthy_interval
        } else {
            check.interval
        };
        let wait = wait.saturating_sub(started.elapsed());
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(wait) => {}
        }
    }
}

async fn check_one(transport: &Transport, upstream: &Upstream, check: &HealthCheck) -> bool {
    let scheme = check.scheme.as_deref().unwrap_or(match upstream.scheme {
        forward::UpstreamScheme::Https => "https",
        _ => "http",
    });
    let host = upstream.authority.host();
    let port = check.port.or(upstream.authority.port_u16()).unwrap_or(80);
    let host = if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]")
    } else {
        host.to_owned()
    };
    let url = format!("{scheme}://{host}:{port}{}", check.path);
    let Ok(uri) = url.parse::<http::Uri>() else {
        return false;
    };
    let mut req = http::Request::new(crate::body::Body::empty());
    *req.method_mut() = check.method.clone();
    *req.uri_mut() = uri;
    let host_header = check
        .hostname
        .clone()
        .unwrap_or_else(|| upstream.authority.as_str().to_owned());
    if let Ok(v) = HeaderValue::from_str(&host_header) {
        req.headers_mut().insert(header::HOST, v);
    }
    for (k, v) in &check.headers {
        req.headers_mut().insert(k.clone(), v.clone());
    }
    let scheme = if scheme == "https" {
        forward::UpstreamScheme::Https
    } else if upstream.scheme == forward::UpstreamScheme::H2c {
        forward::UpstreamScheme::H2c
    } else {
        forward::UpstreamScheme::Http
    };
    match tokio::time::timeout(check.timeout, transport.send_raw(scheme, req)).await {
        Ok(Ok(resp)) => {
            let status = resp.status().as_u16();
            match check.status {
                Some(want) => status == want,
                None => (200..400).contains(&status),
            }
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn smooth_wrr_spreads_weights() {
        let s = Schedule::new(&[5, 1, 1]);
        let picks: Vec<usize> = (0..7).map(|_| s.pick(|_| true).unwrap()).collect();
        assert_eq!(picks.iter().filter(|&&i| i == 0).count(), 5);
        assert_eq!(picks.iter().filter(|&&i| i == 1).count(), 1);
        // Smoothness: the heavy server never runs more than 3 times in a row here.
        assert_eq!(picks, vec![0, 0, 1, 0, 2, 0, 0]);
    }

    #[test]
    fn wrr_skips_unavailable_and_handles_zero() {
        let s = Schedule::new(&[1, 1]);
        for _ in 0..4 {
            assert_eq!(s.pick(|i| i == 1), Some(1));
        }
        assert_eq!(s.pick(|_| false), None);
        assert_eq!(Schedule::new(&[0, 0]).pick(|_| true), None);
        let big = Schedule::new(&[1_000_000, 3_000_000]);
        assert_eq!(big.order.len(), 4);
    }

    #[test]
    fn passive_ejection_expires() {
        let st = ServerState::default();
        assert!(st.available());
        st.eject(Duration::from_millis(0));
        assert!(st.available());
        st.eject(Duration::from_secs(60));
        assert!(!st.available());
        st.set_healthy(true);
        assert!(st.available());
        st.set_healthy(false);
        assert!(!st.available());
    }

    #[test]
    fn sticky_cookie_rendering() {
        let c = StickyCookie {
            name: "srv".into(),
            secure: true,
            http_only: true,
            same_site: Some("lax".into()),
            max_age: Some(60),
            path: "/".into(),
            domain: None,
        };
        assert_eq!(
            c.set_cookie("abc").unwrap(),
            "srv=abc; Path=/; Max-Age=60; HttpOnly; Secure; SameSite=Lax"
        );
        let req = http::Request::builder()
            .header("cookie", "a=1; srv=xyz")
            .body(crate::body::Body::empty())
            .unwrap();
        assert_eq!(c.find(&req), Some("xyz"));
    }
}
