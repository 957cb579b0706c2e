//! The harness every integration test uses: a proxy started from YAML (or JSON) on 127.0.0.1:0,
//! in-process upstreams (HTTP/1.1 + h2c, HTTPS, WebSocket) that echo what they received, clients
//! (HTTP/1.1, HTTP/2, TLS, WebSocket), certificates made with rcgen, log capture, and polling.
//!
//! Nothing here sleeps for a fixed time to "let things settle": tests poll for the condition they
//! need with [`eventually`] and a generous deadline, so they stay deterministic on a loaded machine.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU16, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use gantry_proxy::config::{self, DynamicConfig};
use gantry_proxy::{Proxy, ProxyOptions};
use http::{HeaderMap, Request, Response, StatusCode, Version};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};
use rustls::pki_types::{CertificateDer, ServerName};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

/// Deadline for conditions that should hold within a second or two on an idle machine.
pub const LONG: Duration = Duration::from_secs(20);
/// Deadline for one HTTP exchange made by a test client.
pub const EXCHANGE: Duration = Duration::from_secs(15);

/// A static configuration with one plain entrypoint `web`.
pub const WEB_ONLY: &str = "entryPoints:\n  web:\n    address: \"127.0.0.1:0\"\n";

// ---------------------------------------------------------------------------------------------
// Process-wide setup: captured logs and a count of panics on the proxy's worker threads.

static LOGS: Mutex<Vec<u8>> = Mutex::new(Vec::new());
static WORKER_PANICS: AtomicUsize = AtomicUsize::new(0);

struct Capture;

impl std::io::Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        LOGS.lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Installs the log capture and the panic counter (once per test binary).
pub fn init() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let _ = tracing_subscriber::fmt()
            .with_writer(|| Capture)
            .with_ansi(false)
            .with_max_level(tracing::Level::INFO)
            .try_init();
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if std::thread::current()
                .name()
                .is_some_and(|n| n.starts_with("gantry-"))
            {
                WORKER_PANICS.fetch_add(1, Ordering::SeqCst);
            }
            default(info);
        }));
    });
}

/// Everything the proxy logged so far (all tests of the binary: search for something unique).
pub fn logs() -> String {
    String::from_utf8_lossy(&LOGS.lock().unwrap_or_else(|e| e.into_inner())).into_owned()
}

/// Panics seen on the proxy's own threads since the binary started.
pub fn worker_panics() -> usize {
    WORKER_PANICS.load(Ordering::SeqCst)
}

/// Polls `f` until it returns `Some`, or panics naming `what` after `timeout`.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// A port on 127.0.0.1 where nothing listens (bound, then released): connections are refused.
pub fn refusing_addr() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap()
}

// ---------------------------------------------------------------------------------------------
// The proxy under test.

/// A proxy running in-process with two worker threads, configured from YAML text.
pub struct TestProxy {
    proxy: Option<Proxy>,
    pub dir: tempfile::TempDir,
}

impl TestProxy {
    /// Writes `static_yaml` to a temporary `static.yml`, loads it as `gantry proxy` would, starts.
    pub fn start(static_yaml: &str) -> TestProxy {
        Self::start_in(tempfile::tempdir().unwrap(), static_yaml)
    }

    /// As [`TestProxy::start`], in a directory the test already wrote files into.
    pub fn start_in(dir: tempfile::TempDir, static_yaml: &str) -> TestProxy {
        init();
        let path = dir.path().join("static.yml");
        std::fs::write(&path, static_yaml).unwrap();
        let cfg = config::load_static(&path)
            .unwrap_or_else(|e| panic!("static config does not load: {e}\n{static_yaml}"));
        let proxy = Proxy::start(
            cfg,
            ProxyOptions {
                workers: Some(2),
                ..Default::default()
            },
        )
        .unwrap_or_else(|e| panic!("proxy does not start: {e}"));
        TestProxy {
            proxy: Some(proxy),
            dir,
        }
    }

    pub fn proxy(&self) -> &Proxy {
        self.proxy.as_ref().unwrap()
    }

    /// Takes the proxy out (to shut it down).
    pub fn take(&mut self) -> Proxy {
        self.proxy.take().unwrap()
    }

    /// Sets the `file` provider's configuration from YAML; panics if it is rejected.
    pub fn set(&self, yaml: &str) -> u64 {
        self.try_set(yaml)
            .unwrap_or_else(|e| panic!("dynamic config rejected: {e}\n{yaml}"))
    }

    pub fn try_set(&self, yaml: &str) -> Result<u64, gantry_proxy::ProxyError> {
        self.proxy().set_provider("file", dynamic_yaml(yaml))
    }

    /// Sets the `file` provider's configuration from JSON (same keys as the YAML).
    pub fn set_json(&self, v: Value) -> u64 {
        let cfg: DynamicConfig = serde_json::from_value(v.clone())
            .unwrap_or_else(|e| panic!("dynamic config does not parse: {e}\n{v:#}"));
        self.proxy()
            .set_provider("file", cfg)
            .unwrap_or_else(|e| panic!("dynamic config rejected: {e}\n{v:#}"))
    }

    pub fn addr(&self, entrypoint: &str) -> SocketAddr {
        self.proxy()
            .local_addr(entrypoint)
            .unwrap_or_else(|| panic!("no entrypoint {entrypoint}"))
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Scrapes the Prometheus endpoint on `entrypoint`.
    pub async fn metrics(&self, entrypoint: &str) -> String {
        let r = get(self.addr(entrypoint), "localhost", "/metrics").await;
        assert_eq!(r.status, 200, "/metrics: {}", r.text());
        r.text()
    }
}

/// Parses dynamic configuration YAML strictly, as the file provider does.
pub fn dynamic_yaml(yaml: &str) -> DynamicConfig {
    config::parse_str(Path::new("dynamic.yml"), yaml)
        .unwrap_or_else(|e| panic!("dynamic config does not parse: {e}\n{yaml}"))
}

/// A router on `rule` to a load balancer over `urls`, as JSON dynamic configuration.
pub fn route(rule: &str, urls: &[String]) -> Value {
    json!({"http": {
        "routers": {"r": {"rule": rule, "service": "s"}},
        "services": {"s": {"loadBalancer": {"servers": servers(urls)}}},
    }})
}

pub fn servers(urls: &[String]) -> Value {
    Value::Array(urls.iter().map(|u| json!({ "url": u })).collect())
}

/// The value of a Prometheus sample whose line starts with `prefix` (name and labels).
pub fn metric(text: &str, prefix: &str) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

// ---------------------------------------------------------------------------------------------
// Upstreams.

/// What an upstream saw, and knobs a test turns.
#[derive(Debug)]
pub struct UpState {
    /// Requests other than health checks.
    pub hits: AtomicUsize,
    /// Requests being handled now.
    pub in_flight: AtomicUsize,
    /// Status `/health` answers with.
    pub health_status: AtomicU16,
    pub health_checks: AtomicUsize,
    /// Host headers of health checks.
    pub health_hosts: Mutex<Vec<String>>,
    /// Request body bytes received so far (all requests).
    pub body_bytes: AtomicUsize,
    /// TCP connections accepted.
    pub connections: AtomicUsize,
    /// `/hold` requests and the second half of `/trickle` wait for a permit.
    pub release: Semaphore,
}

impl Default for UpState {
    fn default() -> Self {
        UpState {
            hits: AtomicUsize::new(0),
            in_flight: AtomicUsize::new(0),
            health_status: AtomicU16::new(200),
            health_checks: AtomicUsize::new(0),
            health_hosts: Mutex::new(Vec::new()),
            body_bytes: AtomicUsize::new(0),
            connections: AtomicUsize::new(0),
            release: Semaphore::new(0),
        }
    }
}

/// An HTTP upstream (HTTP/1.1 and h2c with prior knowledge; HTTP/1.1 and h2 by ALPN with TLS).
///
/// Every request is answered with JSON describing it (`server`, `method`, `path`, `version`,
/// `host`, `headers`, `body_len`, `body_sha256`), except:
/// - `/health`: status from [`UpState::health_status`] (not counted in `hits`);
/// - `/hold...`: waits for a permit of [`UpState::release`] before answering;
/// - `/trickle`: sends `first\n`, waits for a permit, then sends `second\n` (chunked);
/// - query `delay_ms=N`: answers after N ms; `status=N`: with that status; `close=1`: drops the
///   connection without answering; `bytes=N`: a body of N deterministic bytes.
pub struct Upstream {
    pub name: String,
    pub addr: SocketAddr,
    pub state: Arc<UpState>,
    tls: bool,
    stop: CancellationToken,
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

type UpBody = BoxBody<Bytes, std::io::Error>;

impl Upstream {
    pub async fn start(name: &str) -> Upstream {
        Self::start_with(name, None).await
    }

    /// An HTTPS upstream serving `leaf` (ALPN h2 and http/1.1).
    pub async fn start_tls(name: &str, leaf: &Leaf) -> Upstream {
        let mut cfg = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![leaf.der()], leaf.key_der())
            .unwrap();
        cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Self::start_with(name, Some(tokio_rustls::TlsAcceptor::from(Arc::new(cfg)))).await
    }

    async fn start_with(name: &str, tls: Option<tokio_rustls::TlsAcceptor>) -> Upstream {
        init();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(UpState::default());
        let stop = CancellationToken::new();
        let up = Upstream {
            name: name.to_owned(),
            addr,
            state: state.clone(),
            tls: tls.is_some(),
            stop: stop.clone(),
        };
        let name: Arc<str> = name.into();
        tokio::spawn(async move {
            loop {
                let (tcp, _) = tokio::select! {
                    r = listener.accept() => match r { Ok(x) => x, Err(_) => continue },
                    _ = stop.cancelled() => return,
                };
                state.connections.fetch_add(1, Ordering::SeqCst);
                let (name, state, stop, tls) =
                    (name.clone(), state.clone(), stop.clone(), tls.clone());
                tokio::spawn(async move {
                    match tls {
                        Some(acceptor) => {
                            if let Ok(s) = acceptor.accept(tcp).await {
                                serve_upstream(s, name, state, stop).await;
                            }
                        }
                        None => serve_upstream(tcp, name, state, stop).await,
                    }
                });
            }
        });
        up
    }

    /// `http://127.0.0.1:PORT` (or `https://`).
    pub fn url(&self) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://{}", self.addr)
    }

    /// `h2c://127.0.0.1:PORT`.
    pub fn h2c_url(&self) -> String {
        format!("h2c://{}", self.addr)
    }

    pub fn hits(&self) -> usize {
        self.state.hits.load(Ordering::SeqCst)
    }
}

async fn serve_upstream<I>(io: I, name: Arc<str>, state: Arc<UpState>, stop: CancellationToken)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let svc =
        hyper::service::service_fn(move |req| upstream_handle(name.clone(), state.clone(), req));
    let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    let conn = builder.serve_connection_with_upgrades(TokioIo::new(io), svc);
    tokio::select! {
        _ = conn => {}
        _ = stop.cancelled() => {}
    }
}

struct InFlight(Arc<UpState>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

fn parse_query(q: Option<&str>) -> BTreeMap<String, String> {
    q.unwrap_or("")
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| match p.split_once('=') {
            Some((k, v)) => (k.to_owned(), v.to_owned()),
            None => (p.to_owned(), String::new()),
        })
        .collect()
}

/// The deterministic body of `bytes=N`: byte i is `i % 251`.
pub fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i % 251) as u8).collect()
}

fn full(b: impl Into<Bytes>) -> UpBody {
    Full::new(b.into())
        .map_err(|never: Infallible| match never {})
        .boxed()
}

async fn upstream_handle(
    name: Arc<str>,
    st: Arc<UpState>,
    req: Request<Incoming>,
) -> Result<Response<UpBody>, Box<dyn std::error::Error + Send + Sync>> {
    let q = parse_query(req.uri().query());
    let path = req.uri().path().to_owned();
    let host = req
        .headers()
        .get(http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(str::to_owned)
        .or_else(|| req.uri().authority().map(|a| a.to_string()))
        .unwrap_or_default();
    if path == "/health" {
        st.health_checks.fetch_add(1, Ordering::SeqCst);
        st.health_hosts.lock().unwrap().push(host);
        let status = st.health_status.load(Ordering::SeqCst);
        let mut r = Response::new(full("health\n"));
        *r.status_mut() = StatusCode::from_u16(status).unwrap();
        return Ok(r);
    }
    st.hits.fetch_add(1, Ordering::SeqCst);
    st.in_flight.fetch_add(1, Ordering::SeqCst);
    let _guard = InFlight(st.clone());
    if q.contains_key("close") {
        return Err("told to drop the connection".into());
    }
    if let Some(ms) = q.get("delay_ms") {
        tokio::time::sleep(Duration::from_millis(ms.parse().unwrap())).await;
    }
    if path.starts_with("/hold") {
        st.release.acquire().await.unwrap().forget();
    }
    if path == "/trickle" {
        let (mut tx, body) = http_body_util::channel::Channel::<Bytes, std::io::Error>::new(4);
        let st2 = st.clone();
        tokio::spawn(async move {
            let _ = tx.send_data(Bytes::from_static(b"first\n")).await;
            st2.release.acquire().await.unwrap().forget();
            let _ = tx.send_data(Bytes::from_static(b"second\n")).await;
        });
        return Ok(Response::new(body.boxed()));
    }
    if let Some(n) = q.get("bytes") {
        let n: usize = n.parse().unwrap();
        let data = Bytes::from(pattern(n));
        let (mut tx, body) = http_body_util::channel::Channel::<Bytes, std::io::Error>::new(4);
        tokio::spawn(async move {
            let mut off = 0;
            while off < data.len() {
                let end = (off + 64 * 1024).min(data.len());
                if tx.send_data(data.slice(off..end)).await.is_err() {
                    return;
                }
                off = end;
            }
        });
        let mut r = Response::new(body.boxed());
        r.headers_mut()
            .insert(http::header::CONTENT_LENGTH, n.into());
        return Ok(r);
    }

    let (parts, mut body) = req.into_parts();
    let mut hasher = Sha256::new();
    let mut len = 0usize;
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame?.into_data() {
            len += data.len();
            st.body_bytes.fetch_add(data.len(), Ordering::SeqCst);
            hasher.update(&data);
        }
    }
    let mut headers = serde_json::Map::new();
    for name in parts.headers.keys() {
        let joined: Vec<&str> = parts
            .headers
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect();
        headers.insert(name.as_str().to_owned(), json!(joined.join(", ")));
    }
    let echo = json!({
        "server": &*name,
        "method": parts.method.as_str(),
        "path": parts.uri.path_and_query().map_or("/", |p| p.as_str()),
        "version": format!("{:?}", parts.version),
        "host": host,
        "headers": headers,
        "body_len": len,
        "body_sha256": hex(&hasher.finalize()),
    });
    let status = q.get("status").map_or(200, |s| s.parse().unwrap());
    let mut r = Response::new(full(echo.to_string()));
    *r.status_mut() = StatusCode::from_u16(status).unwrap();
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    Ok(r)
}

pub fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

pub fn sha256_hex(b: &[u8]) -> String {
    hex(&Sha256::digest(b))
}

/// What a WebSocket upstream saw.
#[derive(Debug, Default)]
pub struct WsState {
    pub connections: AtomicUsize,
    pub messages: AtomicUsize,
    /// Close codes received from the proxy (None: closed without a close frame).
    pub closes: Mutex<Vec<Option<u16>>>,
}

/// A WebSocket echo server (text and binary messages come back unchanged).
pub struct WsUpstream {
    pub addr: SocketAddr,
    pub state: Arc<WsState>,
    stop: CancellationToken,
}

impl Drop for WsUpstream {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

impl WsUpstream {
    pub async fn start() -> WsUpstream {
        use futures_util::{SinkExt, StreamExt};
        use tokio_tungstenite::tungstenite::Message;
        init();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(WsState::default());
        let stop = CancellationToken::new();
        let (st, stop2) = (state.clone(), stop.clone());
        tokio::spawn(async move {
            loop {
                let (tcp, _) = tokio::select! {
                    r = listener.accept() => match r { Ok(x) => x, Err(_) => continue },
                    _ = stop2.cancelled() => return,
                };
                let (st, stop3) = (st.clone(), stop2.clone());
                tokio::spawn(async move {
                    let Ok(mut ws) = tokio_tungstenite::accept_async(tcp).await else {
                        return;
                    };
                    st.connections.fetch_add(1, Ordering::SeqCst);
                    loop {
                        let msg = tokio::select! {
                            m = ws.next() => m,
                            _ = stop3.cancelled() => return,
                        };
                        match msg {
                            Some(Ok(m @ (Message::Text(_) | Message::Binary(_)))) => {
                                st.messages.fetch_add(1, Ordering::SeqCst);
                                if ws.send(m).await.is_err() {
                                    return;
                                }
                            }
                            Some(Ok(Message::Close(frame))) => {
                                st.closes
                                    .lock()
                                    .unwrap()
                                    .push(frame.map(|f| u16::from(f.code)));
                                let _ = ws.close(None).await;
                                return;
                            }
                            Some(Ok(_)) => {}
                            Some(Err(_)) | None => {
                                st.closes.lock().unwrap().push(None);
                                return;
                            }
                        }
                    }
                });
            }
        });
        WsUpstream { addr, state, stop }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

pub type WsClient = tokio_tungstenite::WebSocketStream<TcpStream>;

/// Opens a WebSocket to `ws://{host}{path}` through the proxy listening on `addr`.
pub async fn ws_connect(addr: SocketAddr, host: &str, path: &str) -> WsClient {
    let tcp = TcpStream::connect(addr).await.unwrap();
    let url = format!("ws://{host}{path}");
    let (ws, resp) = tokio::time::timeout(EXCHANGE, tokio_tungstenite::client_async(url, tcp))
        .await
        .expect("websocket handshake timed out")
        .expect("websocket handshake failed");
    assert_eq!(resp.status(), 101);
    ws
}

/// Sends `text` and expects it back.
pub async fn ws_echo(ws: &mut WsClient, text: &str) {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    ws.send(Message::text(text)).await.expect("websocket send");
    let got = tokio::time::timeout(EXCHANGE, ws.next())
        .await
        .unwrap_or_else(|_| panic!("no echo of {text:?}"));
    match got {
        Some(Ok(Message::Text(t))) => assert_eq!(t.as_str(), text),
        other => panic!("expected the echo of {text:?}, got {other:?}"),
    }
}

// ---------------------------------------------------------------------------------------------
// HTTP clients.

/// A response read whole.
#[derive(Debug)]
pub struct Resp {
    pub status: StatusCode,
    pub version: Version,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Resp {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {} {}", self.status, self.text()))
    }

    /// The name of the echo upstream that answered.
    pub fn server(&self) -> String {
        assert_eq!(self.status, 200, "{}", self.text());
        self.json()["server"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .get(name)
            .map(|v| v.to_str().unwrap().to_owned())
    }
}

/// A request builder for `path` with a Host header.
pub fn req(method: &str, host: &str, path: &str) -> http::request::Builder {
    Request::builder()
        .method(method)
        .uri(path)
        .header(http::header::HOST, host)
}

/// GET `path` with `Host: host` on a new HTTP/1.1 connection to `addr`.
pub async fn get(addr: SocketAddr, host: &str, path: &str) -> Resp {
    send(
        addr,
        req("GET", host, path)
            .body(Full::new(Bytes::new()))
            .unwrap(),
    )
    .await
}

/// Sends one request on a new HTTP/1.1 connection; panics on failure.
pub async fn send<B>(addr: SocketAddr, req: Request<B>) -> Resp
where
    B: hyper::body::Body<Data = Bytes> + Send + Unpin + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let what = format!("{} {}", req.method(), req.uri());
    try_send(addr, req)
        .await
        .unwrap_or_else(|e| panic!("{what} via {addr}: {e}"))
}

/// Sends one request on a new HTTP/1.1 connection.
pub async fn try_send<B>(addr: SocketAddr, req: Request<B>) -> Result<Resp, String>
where
    B: hyper::body::Body<Data = Bytes> + Send + Unpin + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let tcp = tokio::time::timeout(EXCHANGE, TcpStream::connect(addr))
        .await
        .map_err(|_| "connect timed out".to_owned())?
        .map_err(|e| format!("connect: {e}"))?;
    send_on(tcp, false, req).await
}

/// Sends one request over an established connection, HTTP/1.1 or HTTP/2 (prior knowledge / ALPN).
pub async fn send_on<I, B>(io: I, h2: bool, req: Request<B>) -> Result<Resp, String>
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    B: hyper::body::Body<Data = Bytes> + Send + Unpin + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let exchange = async move {
        let io = TokioIo::new(io);
        let resp = if h2 {
            let (mut s, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
                .await
                .map_err(|e| format!("h2 handshake: {e}"))?;
            tokio::spawn(conn);
            s.send_request(req).await
        } else {
            let (mut s, conn) = hyper::client::conn::http1::handshake(io)
                .await
                .map_err(|e| format!("handshake: {e}"))?;
            tokio::spawn(conn);
            s.send_request(req).await
        }
        .map_err(|e| format!("request: {e}"))?;
        read_resp(resp).await
    };
    tokio::time::timeout(EXCHANGE, exchange)
        .await
        .map_err(|_| "exchange timed out".to_owned())?
}

pub async fn read_resp(resp: Response<Incoming>) -> Result<Resp, String> {
    let (parts, body) = resp.into_parts();
    let body = body
        .collect()
        .await
        .map_err(|e| format!("body: {e}"))?
        .to_bytes();
    Ok(Resp {
        status: parts.status,
        version: parts.version,
        headers: parts.headers,
        body,
    })
}

// ---------------------------------------------------------------------------------------------
// TLS: certificates and clients.

pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A test certificate authority.
pub struct Ca {
    params: CertificateParams,
    key: KeyPair,
    pub cert_pem: String,
    pub der: CertificateDer<'static>,
}

/// A certificate with its key, as PEM.
#[derive(Debug, Clone)]
pub struct Leaf {
    pub cert_pem: String,
    pub key_pem: String,
}

impl Leaf {
    pub fn der(&self) -> CertificateDer<'static> {
        rustls_pemfile::certs(&mut self.cert_pem.as_bytes())
            .next()
            .unwrap()
            .unwrap()
    }

    pub fn key_der(&self) -> rustls::pki_types::PrivateKeyDer<'static> {
        rustls_pemfile::private_key(&mut self.key_pem.as_bytes())
            .unwrap()
            .unwrap()
    }

    /// As the proxy's certificate store wants it.
    pub fn loaded(&self) -> gantry_proxy::tls::LoadedCert {
        gantry_proxy::tls::load_pem(self.cert_pem.as_bytes(), self.key_pem.as_bytes()).unwrap()
    }

    /// Writes `NAME.crt` and `NAME.key` into `dir`; returns their paths.
    pub fn write(&self, dir: &Path, name: &str) -> (String, String) {
        let c = dir.join(format!("{name}.crt"));
        let k = dir.join(format!("{name}.key"));
        std::fs::write(&c, &self.cert_pem).unwrap();
        std::fs::write(&k, &self.key_pem).unwrap();
        (c.display().to_string(), k.display().to_string())
    }
}

impl Ca {
    pub fn new(name: &str) -> Ca {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let key = KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        Ca {
            cert_pem: cert.pem(),
            der: cert.der().clone(),
            params,
            key,
        }
    }

    /// A certificate for `names` (DNS names, wildcards or IP addresses) signed by this CA.
    pub fn issue(&self, names: &[&str]) -> Leaf {
        let mut params =
            CertificateParams::new(names.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>())
                .unwrap();
        params.distinguished_name = rcgen::DistinguishedName::new();
        params.distinguished_name.push(DnType::CommonName, names[0]);
        let key = KeyPair::generate().unwrap();
        let issuer = Issuer::from_params(&self.params, &self.key);
        let cert = params.signed_by(&key, &issuer).unwrap();
        Leaf {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        }
    }

    pub fn roots(&self) -> rustls::RootCertStore {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.der.clone()).unwrap();
        roots
    }
}

/// How a test TLS client checks the server's certificate.
pub enum Trust {
    /// Verify against these roots (and the name).
    Roots(rustls::RootCertStore),
    /// Accept any certificate (the test inspects which one it got).
    Any,
}

pub fn client_config(
    trust: Trust,
    alpn: &[&[u8]],
    versions: &[&'static rustls::SupportedProtocolVersion],
) -> Arc<rustls::ClientConfig> {
    let builder = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(versions)
        .unwrap();
    let mut cfg = match trust {
        Trust::Roots(r) => builder.with_root_certificates(r).with_no_client_auth(),
        Trust::Any => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AcceptAny(provider())))
            .with_no_client_auth(),
    };
    cfg.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Arc::new(cfg)
}

pub type TlsClient = tokio_rustls::client::TlsStream<TcpStream>;

/// Connects to `addr` with TLS, sending `sni`.
pub async fn tls_connect(
    addr: SocketAddr,
    sni: &str,
    cfg: Arc<rustls::ClientConfig>,
) -> std::io::Result<TlsClient> {
    let tcp = TcpStream::connect(addr).await?;
    let name = ServerName::try_from(sni.to_owned()).unwrap();
    tokio::time::timeout(
        EXCHANGE,
        tokio_rustls::TlsConnector::from(cfg).connect(name, tcp),
    )
    .await
    .map_err(|_| std::io::Error::other("TLS handshake timed out"))?
}

/// The leaf certificate the server presented.
pub fn peer_leaf(s: &TlsClient) -> CertificateDer<'static> {
    s.get_ref().1.peer_certificates().unwrap()[0]
        .clone()
        .into_owned()
}

#[derive(Debug)]
struct AcceptAny(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AcceptAny {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    // Not even the signature is checked: webpki cannot parse TLS-ALPN-01 challenge certificates
    // (their acmeIdentifier extension is critical), and these tests only look at what was served.
    fn verify_tls12_signature(
        &self,
        _: &[u8],
        _: &CertificateDer<'_>,
        _: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        Ok(rustls::client::danger::HandshakeSignatureValid::assertion())
    }

    fn verify_tls13_signature(
        &self,
        _: &[u8],
        _: &CertificateDer<'_>,
        _: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        Ok(rustls::client::danger::HandshakeSignatureValid::assertion())
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

// ---------------------------------------------------------------------------------------------
// Child processes.

/// Kills (SIGKILL) and reaps a child process when dropped, so no test leaves one behind.
pub struct KillOnDrop(pub std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Fails with the apt-get line to run unless `GANTRY_SKIP_<NAME>=1`; returns false when skipped.
pub fn require_binary(path: &str, package: &str) -> bool {
    if Path::new(path).exists() {
        return true;
    }
    let var = format!(
        "GANTRY_SKIP_{}",
        package.to_ascii_uppercase().replace('-', "_")
    );
    if std::env::var(&var).as_deref() == Ok("1") {
        eprintln!("{path} missing; skipped because {var}=1");
        return false;
    }
    panic!("{path} is missing: run `apt-get install -y {package}` (or set {var}=1 to skip)");
}
