//! Every middleware end to end: a real `gantry_proxy::Proxy` on 127.0.0.1:0, configured from YAML
//! as the file provider would be, in front of an in-process hyper upstream that echoes what it got
//! (method, path, headers, body) as JSON, and a real HTTP client.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use async_compression::tokio::bufread::{BrotliDecoder, GzipDecoder, ZstdDecoder};
use base64::Engine;
use bytes::Bytes;
use gantry_proxy::body::{Body, BoxError};
use gantry_proxy::config::{DynamicConfig, StaticConfig, parse_str};
use gantry_proxy::{Proxy, ProxyOptions};
use http::{HeaderMap, Request, Response, StatusCode};
use http_body::Frame;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::Value;
use tokio::io::AsyncReadExt;
use tokio::sync::watch;

/// The upstream: echoes requests as JSON; `?size=N` answers N bytes of text instead (with
/// `&ct=type` as its Content-Type), `?hold=1` streams `start`, then waits for `release`, then `end`.
struct Upstream {
    addr: SocketAddr,
    hits: Arc<AtomicUsize>,
    release: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn query_param<'a>(query: &'a str, key: &str) -> Option<&'a str> {
    query
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| *k == key)
        .map(|(_, v)| v)
}

async fn upstream_handle(
    req: Request<Incoming>,
    hits: Arc<AtomicUsize>,
    release: watch::Receiver<bool>,
) -> Result<Response<Body>, Infallible> {
    hits.fetch_add(1, Ordering::SeqCst);
    let query = req.uri().query().unwrap_or("").to_owned();
    if let Some(size) = query_param(&query, "size") {
        let size: usize = size.parse().unwrap();
        let text: String = "hello gantry "
            .chars()
            .cycle()
            .take(size)
            .collect::<String>();
        let mut resp = Response::new(Body::full(text));
        let ct = query_param(&query, "ct")
            .unwrap_or("text/plain")
            .replace("%2F", "/");
        resp.headers_mut()
            .insert(http::header::CONTENT_TYPE, ct.parse().unwrap());
        return Ok(resp);
    }
    if query_param(&query, "hold").is_some() {
        let stream = futures_util::stream::unfold((0, release), |(step, mut rx)| async move {
            match step {
                0 => Some((
                    Ok::<_, BoxError>(Frame::data(Bytes::from_static(b"start;"))),
                    (1, rx),
                )),
                1 => {
                    let _ = rx.wait_for(|released| *released).await;
                    Some((Ok(Frame::data(Bytes::from_static(b"end"))), (2, rx)))
                }
                _ => None,
            }
        });
        let mut resp = Response::new(Body::boxed(http_body_util::StreamBody::new(stream)));
        resp.headers_mut().insert(
            http::header::CONTENT_TYPE,
            "text/event-stream".parse().unwrap(),
        );
        return Ok(resp);
    }
    let method = req.method().to_string();
    let path = req
        .uri()
        .path_and_query()
        .map_or("/".to_owned(), |p| p.to_string());
    let mut headers = serde_json::Map::new();
    for (k, v) in req.headers() {
        let v = v.to_str().unwrap_or("").to_owned();
        headers
            .entry(k.as_str().to_owned())
            .and_modify(|e| {
                *e = Value::String(format!("{}, {v}", e.as_str().unwrap_or("")));
            })
            .or_insert(Value::String(v));
    }
    let body = req.into_body().collect().await.unwrap().to_bytes();
    let json = serde_json::json!({
        "method": method,
        "path": path,
        "headers": headers,
        "body": String::from_utf8_lossy(&body),
    });
    let mut resp = Response::new(Body::full(json.to_string()));
    resp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        "application/json".parse().unwrap(),
    );
    resp.headers_mut()
        .insert("x-upstream-secret", "leak".parse().unwrap());
    Ok(resp)
}

async fn start_upstream() -> Upstream {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let hits = Arc::new(AtomicUsize::new(0));
    let (release, release_rx) = watch::channel(false);
    let h = hits.clone();
    let task = tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let (h, rx) = (h.clone(), release_rx.clone());
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req| {
                    upstream_handle(req, h.clone(), rx.clone())
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    Upstream {
        addr,
        hits,
        release,
        task,
    }
}

/// Distinct ports nothing listens on (connections are refused).
fn dead_addrs(n: usize) -> Vec<SocketAddr> {
    let listeners: Vec<_> = (0..n)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0").unwrap())
        .collect();
    listeners.iter().map(|l| l.local_addr().unwrap()).collect()
}

struct Env {
    proxy: Proxy,
    addr: SocketAddr,
    up: Upstream,
    log: PathBuf,
    client: Client<HttpConnector, Full<Bytes>>,
    dynamic: String,
    _dir: tempfile::TempDir,
}

struct Reply {
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
}

impl Reply {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", String::from_utf8_lossy(&self.body)))
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(|v| v.to_str().unwrap())
    }

    /// A header the upstream received.
    fn upstream_header(&self, name: &str) -> Option<String> {
        self.json()["headers"][name].as_str().map(str::to_owned)
    }
}

fn dynamic_config(text: &str) -> DynamicConfig {
    parse_str::<DynamicConfig>(Path::new("t.yml"), text).unwrap()
}

impl Env {
    /// `dynamic` may use `{UP}` for the upstream's address and `{DEAD}`, `{DEAD2}`, `{DEAD3}` for
    /// servers that refuse connections.
    async fn start(dynamic: &str) -> Env {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("access.log");
        let static_yaml = format!(
            r#"
entryPoints:
  web:
    address: "127.0.0.1:0"
    forwardedHeaders:
      trustedIPs: ["127.0.0.1"]
accessLog:
  filePath: "{}"
  format: json
"#,
            log.display()
        );
        let static_cfg = parse_str::<StaticConfig>(Path::new("static.yml"), &static_yaml).unwrap();
        let up = start_upstream().await;
        let dead = dead_addrs(3);
        let dynamic = dynamic
            .replace("{UP}", &up.addr.to_string())
            .replace("{DEAD}", &dead[0].to_string())
            .replace("{DEAD2}", &dead[1].to_string())
            .replace("{DEAD3}", &dead[2].to_string());
        let proxy = Proxy::start(
            static_cfg,
            ProxyOptions {
                workers: Some(1),
                certs: None,
            },
        )
        .unwrap();
        proxy
            .set_provider("file", dynamic_config(&dynamic))
            .unwrap();
        let addr = proxy.local_addr("web").unwrap();
        let client = Client::builder(TokioExecutor::new()).build_http();
        Env {
            proxy,
            addr,
            up,
            log,
            client,
            dynamic,
            _dir: dir,
        }
    }

    fn request(
        &self,
        method: &str,
        host: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &'static str,
    ) -> Request<Full<Bytes>> {
        let mut b = Request::builder()
            .method(method)
            .uri(format!("http://{}{path}", self.addr))
            .header("host", host);
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        b.body(Full::new(Bytes::from_static(body.as_bytes())))
            .unwrap()
    }

    async fn send(&self, req: Request<Full<Bytes>>) -> Reply {
        let resp = tokio::time::timeout(Duration::from_secs(20), self.client.request(req))
            .await
            .expect("the proxy did not answer in time")
            .expect("request failed");
        let (parts, body) = resp.into_parts();
        let body = body.collect().await.unwrap().to_bytes();
        Reply {
            status: parts.status,
            headers: parts.headers,
            body,
        }
    }

    async fn get(&self, host: &str, path: &str, headers: &[(&str, &str)]) -> Reply {
        self.send(self.request("GET", host, path, headers, ""))
            .await
    }

    /// The access log entry of the first request routed by `router`, waiting for it to be written.
    async fn log_entry(&self, router: &str) -> Value {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let text = std::fs::read_to_string(&self.log).unwrap_or_default();
            if let Some(v) = text
                .lines()
                .filter_map(|l| serde_json::from_str::<Value>(l).ok())
                .find(|v| v["RouterName"] == router)
            {
                return v;
            }
            assert!(Instant::now() < deadline, "no access log line for {router}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

const SERVICES: &str = r#"
  services:
    up:
      loadBalancer:
        servers: [{url: "http://{UP}"}]
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn path_middlewares_and_chains() {
    let env = Env::start(&format!(
        r#"
http:
{SERVICES}
  middlewares:
    strip: {{stripPrefix: {{prefixes: [/api, /other]}}}}
    strip-re: {{stripPrefixRegex: {{regex: ["^/v[0-9]+"]}}}}
    add: {{addPrefix: {{prefix: /inner}}}}
    replace: {{replacePath: {{path: /fixed}}}}
    replace-re: {{replacePathRegex: {{regex: "^/old/(.*)", replacement: "/new/$1"}}}}
    tag: {{headers: {{customRequestHeaders: {{X-Chained: "yes"}}}}}}
    both: {{chain: {{middlewares: [strip, tag]}}}}
  routers:
    strip: {{rule: "Host(`strip.test`)", middlewares: [strip@file], service: up}}
    strip-re: {{rule: "Host(`strip-re.test`)", middlewares: [strip-re], service: up}}
    add: {{rule: "Host(`add.test`)", middlewares: [add], service: up}}
    replace: {{rule: "Host(`replace.test`)", middlewares: [replace], service: up}}
    replace-re: {{rule: "Host(`replace-re.test`)", middlewares: [replace-re], service: up}}
    chain: {{rule: "Host(`chain.test`)", middlewares: [both@file, add], service: up}}
"#
    ))
    .await;

    let r = env.get("strip.test", "/api/users?id=7", &[]).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["path"], "/users?id=7");
    assert_eq!(
        r.upstream_header("x-forwarded-prefix").as_deref(),
        Some("/api")
    );
    let r = env.get("strip.test", "/api", &[]).await;
    assert_eq!(r.json()["path"], "/");
    let r = env.get("strip.test", "/nothing", &[]).await;
    assert_eq!(r.json()["path"], "/nothing");
    assert_eq!(r.upstream_header("x-forwarded-prefix"), None);

    let r = env.get("strip-re.test", "/v2/items", &[]).await;
    assert_eq!(r.json()["path"], "/items");
    assert_eq!(
        r.upstream_header("x-forwarded-prefix").as_deref(),
        Some("/v2")
    );

    let r = env.get("add.test", "/x?q=1", &[]).await;
    assert_eq!(r.json()["path"], "/inner/x?q=1");

    let r = env.get("replace.test", "/anything/here?k=v", &[]).await;
    assert_eq!(r.json()["path"], "/fixed?k=v");
    assert_eq!(
        r.upstream_header("x-replaced-path").as_deref(),
        Some("/anything/here")
    );

    let r = env.get("replace-re.test", "/old/a/b", &[]).await;
    assert_eq!(r.json()["path"], "/new/a/b");
    assert_eq!(
        r.upstream_header("x-replaced-path").as_deref(),
        Some("/old/a/b")
    );

    // chain (strip, tag) then addPrefix.
    let r = env.get("chain.test", "/api/z", &[]).await;
    assert_eq!(r.json()["path"], "/inner/z");
    assert_eq!(r.upstream_header("x-chained").as_deref(), Some("yes"));
    assert_eq!(
        r.upstream_header("x-forwarded-prefix").as_deref(),
        Some("/api")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redirects() {
    let env = Env::start(&format!(
        r#"
http:
{SERVICES}
  middlewares:
    to-https: {{redirectScheme: {{scheme: https, port: "8443", permanent: true}}}}
    to-https-temp: {{redirectScheme: {{scheme: https}}}}
    moved: {{redirectRegex: {{regex: "^http://moved.test/(.*)", replacement: "https://elsewhere.test/$1"}}}}
  routers:
    https: {{rule: "Host(`https.test`)", middlewares: [to-https], service: up}}
    https-temp: {{rule: "Host(`temp.test`)", middlewares: [to-https-temp], service: up}}
    moved: {{rule: "Host(`moved.test`)", middlewares: [moved], service: up}}
"#
    ))
    .await;
    let r = env.get("https.test", "/a?b=c", &[]).await;
    assert_eq!(r.status, StatusCode::MOVED_PERMANENTLY);
    assert_eq!(r.header("location"), Some("https://https.test:8443/a?b=c"));
    let r = env
        .send(env.request("POST", "temp.test:8080", "/form", &[], "x=1"))
        .await;
    assert_eq!(r.status, StatusCode::TEMPORARY_REDIRECT);
    assert_eq!(r.header("location"), Some("https://temp.test/form"));
    // A trusted proxy that says the client used HTTPS: no redirect.
    let r = env
        .get("temp.test", "/", &[("x-forwarded-proto", "https")])
        .await;
    assert_eq!(r.status, 200);
    let r = env.get("moved.test", "/deep/path", &[]).await;
    assert_eq!(r.status, StatusCode::FOUND);
    assert_eq!(
        r.header("location"),
        Some("https://elsewhere.test/deep/path")
    );
    assert_eq!(env.up.hits.load(Ordering::SeqCst), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn headers_security_and_cors() {
    let env = Env::start(&format!(
        r#"
http:
{SERVICES}
  middlewares:
    hdrs:
      headers:
        customRequestHeaders: {{X-Added: "yes", User-Agent: ""}}
        customResponseHeaders: {{X-Resp: "yes", X-Upstream-Secret: ""}}
        stsSeconds: 100
        stsIncludeSubdomains: true
        forceSTSHeader: true
        frameDeny: true
        contentTypeNosniff: true
        referrerPolicy: no-referrer
        accessControlAllowMethods: [GET, PUT]
        accessControlAllowHeaders: [X-Token]
        accessControlAllowOriginList: ["https://app.test"]
        accessControlAllowOriginListRegex: ["^https://[a-z]+\\.apps\\.test$"]
        accessControlMaxAge: 60
        addVaryHeader: true
    hosts: {{headers: {{allowedHosts: [good.test]}}}}
  routers:
    hdrs: {{rule: "Host(`hdrs.test`)", middlewares: [hdrs], service: up}}
    good: {{rule: "Host(`good.test`)", middlewares: [hosts], service: up}}
    bad: {{rule: "Host(`bad.test`)", middlewares: [hosts], service: up}}
"#
    ))
    .await;
    let r = env
        .get(
            "hdrs.test",
            "/",
            &[("user-agent", "curl"), ("origin", "https://app.test")],
        )
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.upstream_header("x-added").as_deref(), Some("yes"));
    assert_eq!(r.upstream_header("user-agent"), None);
    assert_eq!(r.header("x-resp"), Some("yes"));
    assert_eq!(r.header("x-upstream-secret"), None);
    assert_eq!(
        r.header("strict-transport-security"),
        Some("max-age=100; includeSubDomains")
    );
    assert_eq!(r.header("x-frame-options"), Some("DENY"));
    assert_eq!(r.header("x-content-type-options"), Some("nosniff"));
    assert_eq!(r.header("referrer-policy"), Some("no-referrer"));
    assert_eq!(
        r.header("access-control-allow-origin"),
        Some("https://app.test")
    );
    assert_eq!(r.header("vary"), Some("Origin"));

    // The preflight is answered by the middleware; the upstream never sees it.
    let hits = env.up.hits.load(Ordering::SeqCst);
    let r = env
        .send(env.request(
            "OPTIONS",
            "hdrs.test",
            "/api",
            &[
                ("origin", "https://x.apps.test"),
                ("access-control-request-method", "PUT"),
            ],
            "",
        ))
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(env.up.hits.load(Ordering::SeqCst), hits);
    assert_eq!(
        r.header("access-control-allow-origin"),
        Some("https://x.apps.test")
    );
    assert_eq!(r.header("access-control-allow-methods"), Some("GET,PUT"));
    assert_eq!(r.header("access-control-allow-headers"), Some("X-Token"));
    assert_eq!(r.header("access-control-max-age"), Some("60"));
    let r = env
        .send(env.request(
            "OPTIONS",
            "hdrs.test",
            "/api",
            &[
                ("origin", "https://evil.test"),
                ("access-control-request-method", "PUT"),
            ],
            "",
        ))
        .await;
    assert_eq!(r.header("access-control-allow-origin"), None);

    assert_eq!(env.get("good.test", "/", &[]).await.status, 200);
    let r = env.get("bad.test", "/", &[]).await;
    assert_eq!(r.status, 500);
    assert_eq!(&r.body[..], b"Bad Host");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn basic_auth() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("htpasswd");
    std::fs::write(&file, "apr:$apr1$saltsalt$LrttParrLPdxvgutaSXWJ0\n").unwrap();
    let bc = bcrypt::hash("bc-secret", 4).unwrap();
    let env = Env::start(&format!(
        r#"
http:
{SERVICES}
  middlewares:
    auth:
      basicAuth:
        users: ["bc:{bc}", "sha:{{SHA}}5en6G6MezRroT3XKqkdPOmY/BfQ="]
        usersFile: "{}"
        realm: Gantry
        headerField: X-WebAuth-User
        removeHeader: true
  routers:
    auth: {{rule: "Host(`auth.test`)", middlewares: [auth], service: up}}
"#,
        file.display()
    ))
    .await;
    let basic = |u: &str, p: &str| {
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("{u}:{p}"))
        )
    };
    let r = env.get("auth.test", "/", &[]).await;
    assert_eq!(r.status, 401);
    assert_eq!(r.header("www-authenticate"), Some("Basic realm=\"Gantry\""));
    let r = env
        .get(
            "auth.test",
            "/",
            &[("authorization", &basic("bc", "wrong"))],
        )
        .await;
    assert_eq!(r.status, 401);
    for (u, p) in [("bc", "bc-secret"), ("sha", "secret"), ("apr", "secret")] {
        let r = env
            .get("auth.test", "/", &[("authorization", &basic(u, p))])
            .await;
        assert_eq!(r.status, 200, "{u}");
        assert_eq!(r.upstream_header("x-webauth-user").as_deref(), Some(u));
        assert_eq!(r.upstream_header("authorization"), None);
    }
    assert_eq!(env.up.hits.load(Ordering::SeqCst), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ip_allow_list() {
    let env = Env::start(&format!(
        r#"
http:
{SERVICES}
  middlewares:
    local: {{ipAllowList: {{sourceRange: [127.0.0.1/32, "::1"]}}}}
    office: {{ipAllowList: {{sourceRange: [10.0.0.0/8], rejectStatusCode: 404}}}}
    behind-lb: {{ipAllowList: {{sourceRange: [203.0.113.0/24], ipStrategy: {{depth: 2}}}}}}
  routers:
    local: {{rule: "Host(`local.test`)", middlewares: [local], service: up}}
    office: {{rule: "Host(`office.test`)", middlewares: [office], service: up}}
    lb: {{rule: "Host(`lb.test`)", middlewares: [behind-lb], service: up}}
"#
    ))
    .await;
    assert_eq!(env.get("local.test", "/", &[]).await.status, 200);
    let r = env.get("office.test", "/", &[]).await;
    assert_eq!(r.status, 404);
    assert_eq!(&r.body[..], b"Not Found");
    // 127.0.0.1 is a trusted proxy here, so X-Forwarded-For counts: depth 2 from the right.
    let xff = "198.51.100.1, 203.0.113.9, 192.0.2.1";
    assert_eq!(
        env.get("lb.test", "/", &[("x-forwarded-for", xff)])
            .await
            .status,
        200
    );
    let xff = "203.0.113.9, 198.51.100.1, 192.0.2.1";
    assert_eq!(
        env.get("lb.test", "/", &[("x-forwarded-for", xff)])
            .await
            .status,
        403
    );
    assert_eq!(env.get("lb.test", "/", &[]).await.status, 403);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limit_survives_reloads() {
    let env = Env::start(&format!(
        r#"
http:
{SERVICES}
  middlewares:
    limit: {{rateLimit: {{average: 1, period: 1m, burst: 2}}}}
    per-tenant: {{rateLimit: {{average: 1, period: 1m, sourceCriterion: {{requestHeaderName: X-Tenant}}}}}}
  routers:
    limit: {{rule: "Host(`limit.test`)", middlewares: [limit], service: up}}
    limit2: {{rule: "Host(`limit2.test`)", middlewares: [limit], service: up}}
    tenant: {{rule: "Host(`tenant.test`)", middlewares: [per-tenant], service: up}}
"#
    ))
    .await;
    assert_eq!(env.get("limit.test", "/", &[]).await.status, 200);
    assert_eq!(env.get("limit.test", "/", &[]).await.status, 200);
    let r = env.get("limit.test", "/", &[]).await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS);
    let after: u64 = r.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=60).contains(&after), "{after}");
    assert!(r.header("x-retry-in").is_some());
    // A reload with the same configuration keeps the budget spent.
    env.proxy
        .set_provider("file", dynamic_config(&env.dynamic))
        .unwrap();
    assert_eq!(
        env.get("limit.test", "/", &[]).await.status,
        StatusCode::TOO_MANY_REQUESTS
    );

    // As in Traefik, each router using the middleware has its own budget.
    assert_eq!(env.get("limit2.test", "/", &[]).await.status, 200);

    let t = |tenant: &'static str| [("x-tenant", tenant)];
    assert_eq!(env.get("tenant.test", "/", &t("a")).await.status, 200);
    assert_eq!(env.get("tenant.test", "/", &t("a")).await.status, 429);
    assert_eq!(env.get("tenant.test", "/", &t("b")).await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_flight_counts_until_the_body_is_sent() {
    let env = Env::start(&format!(
        r#"
http:
{SERVICES}
  middlewares:
    one: {{inFlightReq: {{amount: 1}}}}
  routers:
    one: {{rule: "Host(`one.test`)", middlewares: [one], service: up}}
"#
    ))
    .await;
    let first = env
        .client
        .request(env.request("GET", "one.test", "/?hold=1", &[], ""))
        .await
        .unwrap();
    assert_eq!(first.status(), 200);
    let mut body = first.into_body();
    let chunk = body.frame().await.unwrap().unwrap().into_data().unwrap();
    assert_eq!(&chunk[..], b"start;");
    // The first response's headers and first bytes are out, its body is not finished.
    assert_eq!(env.get("one.test", "/", &[]).await.status, 429);
    env.up.release.send(true).unwrap();
    let rest = body.collect().await.unwrap().to_bytes();
    assert_eq!(&rest[..], b"end");
    // The permit is released as the body ends; poll rather than assume when.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let s = env.get("one.test", "/", &[]).await.status;
        if s == 200 {
            break;
        }
        assert!(Instant::now() < deadline, "the slot was never given back");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn buffering_limits_and_retry() {
    let env = Env::start(
        r#"
http:
  services:
    up:
      loadBalancer:
        servers: [{url: "http://{UP}"}]
    half-a:
      loadBalancer:
        servers: [{url: "http://{DEAD}"}, {url: "http://{UP}"}]
    half-b:
      loadBalancer:
        servers: [{url: "http://{DEAD}"}, {url: "http://{UP}"}]
    half-c:
      loadBalancer:
        servers: [{url: "http://{DEAD}"}, {url: "http://{UP}"}]
    dead:
      loadBalancer:
        servers: [{url: "http://{DEAD}"}, {url: "http://{DEAD2}"}, {url: "http://{DEAD3}"}]
  middlewares:
    buffer: {buffering: {maxRequestBodyBytes: 16, maxResponseBodyBytes: 3000}}
    retry: {retry: {attempts: 3, initialInterval: 20ms}}
  routers:
    buffer: {rule: "Host(`buffer.test`)", middlewares: [buffer], service: up}
    retry: {rule: "Host(`retry.test`)", middlewares: [retry], service: half-a}
    retry-post: {rule: "Host(`retry-post.test`)", middlewares: [buffer, retry], service: half-b}
    no-replay: {rule: "Host(`no-replay.test`)", middlewares: [retry], service: half-c}
    retry-dead: {rule: "Host(`retry-dead.test`)", middlewares: [retry], service: dead}
"#,
    )
    .await;
    let r = env
        .send(env.request("POST", "buffer.test", "/", &[], "small body"))
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["body"], "small body");
    let r = env
        .send(env.request(
            "POST",
            "buffer.test",
            "/",
            &[],
            "a body longer than sixteen bytes",
        ))
        .await;
    assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE);
    let r = env.get("buffer.test", "/?size=2500", &[]).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body.len(), 2500);
    assert_eq!(env.get("buffer.test", "/?size=5000", &[]).await.status, 500);

    // The first server refuses connections: retried on the second.
    let r = env.get("retry.test", "/", &[]).await;
    assert_eq!(r.status, 200);
    assert_eq!(env.log_entry("retry@file").await["RetryAttempts"], 1);
    // A POST is replayable once buffered.
    let r = env
        .send(env.request("POST", "retry-post.test", "/", &[], "payload"))
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["body"], "payload");
    // Without buffering, a request body streams and cannot be sent twice.
    let r = env
        .send(env.request("POST", "no-replay.test", "/", &[], "payload"))
        .await;
    assert_eq!(r.status, StatusCode::BAD_GATEWAY);
    // Nothing to fall back on: three attempts (each refused server is ejected, so each attempt
    // goes to the next one), then the 502.
    let started = Instant::now();
    let r = env.get("retry-dead.test", "/", &[]).await;
    assert_eq!(r.status, StatusCode::BAD_GATEWAY);
    assert_eq!(env.log_entry("retry-dead@file").await["RetryAttempts"], 2);
    assert!(started.elapsed() >= Duration::from_millis(20));
}

async fn decode(encoding: &str, data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    match encoding {
        "gzip" => GzipDecoder::new(data).read_to_end(&mut out).await,
        "br" => BrotliDecoder::new(data).read_to_end(&mut out).await,
        "zstd" => ZstdDecoder::new(data).read_to_end(&mut out).await,
        other => panic!("unexpected encoding {other}"),
    }
    .unwrap();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compression() {
    let env = Env::start(&format!(
        r#"
http:
{SERVICES}
  middlewares:
    zip: {{compress: {{}}}}
    gzip-only: {{compress: {{encodings: [gzip], defaultEncoding: gzip, excludedContentTypes: [image/png]}}}}
  routers:
    zip: {{rule: "Host(`zip.test`)", middlewares: [zip], service: up}}
    gzip: {{rule: "Host(`gzip.test`)", middlewares: [gzip-only], service: up}}
"#
    ))
    .await;
    let expected: String = "hello gantry ".chars().cycle().take(5000).collect();
    for (accept, enc) in [
        ("gzip", "gzip"),
        ("br", "br"),
        ("zstd", "zstd"),
        ("gzip;q=0.5, br;q=0.9", "br"),
        ("gzip, br, zstd", "zstd"),
        ("*", "zstd"),
    ] {
        let r = env
            .get("zip.test", "/?size=5000", &[("accept-encoding", accept)])
            .await;
        assert_eq!(r.status, 200);
        assert_eq!(r.header("content-encoding"), Some(enc), "{accept}");
        assert_eq!(r.header("vary"), Some("Accept-Encoding"));
        assert!(r.body.len() < 1000, "{accept}: {} bytes", r.body.len());
        assert_eq!(decode(enc, &r.body).await, expected.as_bytes(), "{accept}");
    }
    // Too small, not asked for, or HEAD: untouched.
    let r = env
        .get("zip.test", "/?size=500", &[("accept-encoding", "gzip")])
        .await;
    assert_eq!(r.header("content-encoding"), None);
    assert_eq!(r.header("content-length"), Some("500"));
    let r = env.get("zip.test", "/?size=5000", &[]).await;
    assert_eq!(r.header("content-encoding"), None);
    let r = env
        .send(env.request(
            "HEAD",
            "zip.test",
            "/?size=5000",
            &[("accept-encoding", "gzip")],
            "",
        ))
        .await;
    assert_eq!(r.header("content-encoding"), None);
    // defaultEncoding applies without Accept-Encoding; excluded types are not compressed.
    let r = env.get("gzip.test", "/?size=5000", &[]).await;
    assert_eq!(r.header("content-encoding"), Some("gzip"));
    let r = env
        .get(
            "gzip.test",
            "/?size=5000&ct=image%2Fpng",
            &[("accept-encoding", "gzip")],
        )
        .await;
    assert_eq!(r.header("content-encoding"), None);
    assert_eq!(r.body.len(), 5000);

    // A streamed response is compressed as it flows: the first bytes arrive before the upstream
    // has finished.
    let resp = env
        .client
        .request(env.request(
            "GET",
            "zip.test",
            "/?hold=1",
            &[("accept-encoding", "gzip")],
            "",
        ))
        .await
        .unwrap();
    assert_eq!(resp.headers()["content-encoding"], "gzip");
    let mut body = resp.into_body();
    let first = tokio::time::timeout(Duration::from_secs(10), body.frame())
        .await
        .expect("no compressed bytes before the upstream finished")
        .unwrap()
        .unwrap()
        .into_data()
        .unwrap();
    assert!(!first.is_empty());
    env.up.release.send(true).unwrap();
    let mut all = first.to_vec();
    all.extend_from_slice(&body.collect().await.unwrap().to_bytes());
    assert_eq!(decode("gzip", &all).await, b"start;end");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_middlewares_are_refused_and_the_old_config_stays() {
    let env = Env::start(&format!(
        r#"
http:
{SERVICES}
  middlewares:
    strip: {{stripPrefix: {{prefixes: [/api]}}}}
  routers:
    strip: {{rule: "Host(`strip.test`)", middlewares: [strip], service: up}}
"#
    ))
    .await;
    let bad = env.dynamic.replace(
        "strip: {stripPrefix: {prefixes: [/api]}}",
        "strip: {stripPrefixRegex: {regex: [\"(\"]}}",
    );
    let err = env
        .proxy
        .set_provider("file", dynamic_config(&bad))
        .unwrap_err()
        .to_string();
    assert!(err.contains("middleware `strip@file`"), "{err}");
    assert!(
        err.contains("stripPrefixRegex.regex[0]: invalid regex `(`"),
        "{err}"
    );
    let r = env.get("strip.test", "/api/x", &[]).await;
    assert_eq!(r.json()["path"], "/x");

    let unknown = env
        .dynamic
        .replace("prefixes: [/api]", "prefixes: [/api], prefix: /x");
    let err = parse_str::<DynamicConfig>(Path::new("t.yml"), &unknown)
        .unwrap_err()
        .to_string();
    assert!(err.contains("prefix"), "{err}");
}
