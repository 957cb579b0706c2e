//! Forwarding one request to one upstream server: the pooled clients, hop-by-hop header handling,
//! the upstream URI, timeouts, and WebSocket upgrades.

use std::sync::Arc;
use std::time::{Duration, Instant};

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{StatusCode, Uri, Version};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use crate::body::{Body, Request, Response, text_response};
use crate::context::RequestCtx;
use crate::forwarded::{self, Hop};
use crate::pool::H1Pool;
use crate::websocket;

/// How to reach upstream servers: connect and header timeouts, pooling, TLS trust.
/// Built from a `serversTransport` and shared by the services that name it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransportSettings {
    pub dial_timeout: Duration,
    pub response_header_timeout: Option<Duration>,
    pub idle_conn_timeout: Duration,
    pub max_idle_per_host: usize,
    pub insecure_skip_verify: bool,
    /// Extra trusted roots, as PEM.
    pub root_cas: Vec<Vec<u8>>,
    pub server_name: Option<String>,
    pub disable_http2: bool,
}

impl Default for TransportSettings {
    fn default() -> Self {
        TransportSettings {
            dial_timeout: Duration::from_secs(30),
            response_header_timeout: None,
            idle_conn_timeout: Duration::from_secs(90),
            max_idle_per_host: 200,
            insecure_skip_verify: false,
            root_cas: Vec::new(),
            server_name: None,
            disable_http2: false,
        }
    }
}

type HttpsConnector = hyper_rustls::HttpsConnector<HttpConnector>;

/// The pooled clients of one transport: plain HTTP/1.1 (Gantry's per-worker pool, see
/// [`crate::pool`]), HTTPS (HTTP/1.1 or h2 by ALPN) and h2c (hyper-util's pooled client, which
/// handles ALPN and HTTP/2 multiplexing), and hyper-util's HTTP/1.1 client for health checks.
#[derive(Clone)]
pub struct Transport {
    pub settings: TransportSettings,
    h1: Arc<H1Pool>,
    http: Client<HttpConnector, Body>,
    h2c: Client<HttpConnector, Body>,
    https: Client<HttpsConnector, Body>,
}

impl std::fmt::Debug for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Transport")
            .field("settings", &self.settings)
            .finish()
    }
}

/// Which protocol a server URL asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpstreamScheme {
    Http,
    Https,
    H2c,
}

impl Transport {
    pub fn new(settings: TransportSettings) -> Result<Transport, String> {
        let mut conn = HttpConnector::new();
        conn.set_nodelay(true);
        conn.set_connect_timeout(Some(settings.dial_timeout));
        conn.enforce_http(false);
        conn.set_keepalive(Some(Duration::from_secs(60)));
        let pool = |b: &mut hyper_util::client::legacy::Builder| {
            b.pool_idle_timeout(settings.idle_conn_timeout)
                .pool_max_idle_per_host(settings.max_idle_per_host)
                .pool_timer(TokioTimer::new())
                .timer(TokioTimer::new());
        };
        let mut b = Client::builder(TokioExecutor::new());
        pool(&mut b);
        b.http1_preserve_header_case(false).set_host(false);
        let http = b.build(conn.clone());

        let mut b = Client::builder(TokioExecutor::new());
        pool(&mut b);
        b.http2_only(true).set_host(false);
        let h2c = b.build(conn.clone());

        let tls = crate::tls::client_config(&settings)?;
        let builder = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http();
        let builder = match &settings.server_name {
            Some(name) => builder.with_server_name_resolver(FixedServerName(name.clone())),
            None => builder,
        };
        let https_conn = if settings.disable_http2 {
            builder.enable_http1().wrap_connector(conn)
        } else {
            builder.enable_http1().enable_http2().wrap_connector(conn)
        };
        let mut b = Client::builder(TokioExecutor::new());
        pool(&mut b);
        b.set_host(false);
        let https = b.build(https_conn);
        let h1 = Arc::new(H1Pool::new(
            settings.dial_timeout,
            settings.idle_conn_timeout,
            settings.max_idle_per_host,
        ));
        Ok(Transport {
            settings,
            h1,
            http,
            h2c,
            https,
        })
    }

    async fn send(
        &self,
        scheme: UpstreamScheme,
        req: Request,
    ) -> Result<http::Response<hyper::body::Incoming>, hyper_util::client::legacy::Error> {
        match scheme {
            UpstreamScheme::Http => self.http.request(req).await,
            UpstreamScheme::H2c => self.h2c.request(req).await,
            UpstreamScheme::Https => self.https.request(req).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cookies_split_by_h2_are_joined() {
        let mut h = HeaderMap::new();
        h.append(header::COOKIE, HeaderValue::from_static("a=1"));
        h.append(header::COOKIE, HeaderValue::from_static("b=2"));
        join_cookies(&mut h);
        assert_eq!(h.get_all(header::COOKIE).iter().count(), 1);
        assert_eq!(h[header::COOKIE], "a=1; b=2");
    }

    #[test]
    fn hop_by_hop_and_connection_named_headers_are_removed() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, x-secret"),
        );
        h.insert("x-secret", HeaderValue::from_static("1"));
        h.insert(
            header::TRANSFER_ENCODING,
            HeaderValue::from_static("chunked"),
        );
        h.insert("x-kept", HeaderValue::from_static("1"));
        strip_hop_by_hop(&mut h);
        assert!(h.get("x-secret").is_none() && h.get(header::CONNECTION).is_none());
        assert!(h.get(header::TRANSFER_ENCODING).is_none());
        assert_eq!(h["x-kept"], "1");
    }

    #[test]
    fn upstream_urls() {
        let u = Upstream::parse("http://10.0.0.1", false).unwrap();
        assert_eq!(&*u.authority_str, "10.0.0.1:80");
        let u = Upstream::parse("https://svc.local/base/", true).unwrap();
        assert_eq!(u.path_prefix.as_deref(), Some("/base"));
        assert_eq!(u.scheme, UpstreamScheme::Https);
        assert!(
            Upstream::parse("ftp://x", false)
                .unwrap_err()
                .contains("scheme `ftp`")
        );
        assert!(Upstream::parse("127.0.0.1:80", false).is_err());
    }
}

#[derive(Clone)]
struct FixedServerName(String);

impl hyper_rustls::ResolveServerName for FixedServerName {
    fn resolve(
        &self,
        _: &Uri,
    ) -> Result<rustls::pki_types::ServerName<'static>, Box<dyn std::error::Error + Sync + Send>>
    {
        Ok(rustls::pki_types::ServerName::try_from(self.0.clone())?)
    }
}

/// One upstream server as compiled from its URL.
#[derive(Debug)]
pub struct Upstream {
    pub url: Arc<str>,
    pub scheme: UpstreamScheme,
    /// `host:port` for the request URI and the access log.
    pub authority: http::uri::Authority,
    pub authority_str: Arc<str>,
    /// Path prefix of the server URL, kept only with `preservePath`.
    pub path_prefix: Option<String>,
    pub host_header: HeaderValue,
}

impl Upstream {
    pub fn parse(url: &str, preserve_path: bool) -> Result<Upstream, String> {
        let uri: Uri = url
            .parse()
            .map_err(|e| format!("server url `{url}` is not a URL: {e}"))?;
        let scheme = match uri.scheme_str() {
            Some("http") => UpstreamScheme::Http,
            Some("https") => UpstreamScheme::Https,
            Some("h2c") => UpstreamScheme::H2c,
            Some(other) => {
                return Err(format!(
                    "server url `{url}`: scheme `{other}` is not http, https or h2c"
                ));
            }
            None => return Err(format!("server url `{url}` has no scheme")),
        };
        let authority = uri
            .authority()
            .cloned()
            .ok_or_else(|| format!("server url `{url}` has no host"))?;
        let default_port = if scheme == UpstreamScheme::Https {
            443
        } else {
            80
        };
        let authority = if authority.port_u16().is_none() {
            format!("{}:{default_port}", authority.host())
                .parse()
                .map_err(|e| format!("server url `{url}`: {e}"))?
        } else {
            authority
        };
        let path_prefix = (preserve_path && uri.path() != "/" && !uri.path().is_empty())
            .then(|| uri.path().trim_end_matches('/').to_owned());
        let host_header = HeaderValue::from_str(uri.authority().map_or("", |a| a.as_str()))
            .map_err(|e| format!("server url `{url}`: {e}"))?;
        Ok(Upstream {
            url: url.into(),
            scheme,
            authority_str: authority.as_str().into(),
            authority,
            path_prefix,
            host_header,
        })
    }

    /// The origin-form request target (`/path?query`) for an HTTP/1.1 connection of our own pool;
    /// the client's origin-form URI is reused as is.
    fn origin_form(&self, req_uri: Uri) -> Result<Uri, http::Error> {
        match &self.path_prefix {
            None if req_uri.scheme().is_none() && req_uri.authority().is_none() => Ok(req_uri),
            None => {
                let pq = req_uri
                    .path_and_query()
                    .cloned()
                    .unwrap_or_else(|| http::uri::PathAndQuery::from_static("/"));
                Ok(Uri::from(pq))
            }
            Some(prefix) => {
                let pq = req_uri.path_and_query().map_or("/", |pq| pq.as_str());
                Uri::builder()
                    .path_and_query(format!("{prefix}{pq}"))
                    .build()
            }
        }
    }

    fn uri_for(&self, req_uri: &Uri) -> Result<Uri, http::Error> {
        let scheme = match self.scheme {
            UpstreamScheme::Https => http::uri::Scheme::HTTPS,
            _ => http::uri::Scheme::HTTP,
        };
        let pq = req_uri.path_and_query().map_or("/", |pq| pq.as_str());
        let builder = Uri::builder()
            .scheme(scheme)
            .authority(self.authority.clone());
        match &self.path_prefix {
            Some(prefix) => builder.path_and_query(format!("{prefix}{pq}")).build(),
            None => builder
                .path_and_query(
                    req_uri
                        .path_and_query()
                        .cloned()
                        .unwrap_or_else(|| http::uri::PathAndQuery::from_static("/")),
                )
                .build(),
        }
    }
}

/// Why forwarding failed, mapped to Traefik's status codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ForwardError {
    /// Could not connect (refused, unreachable, TLS failure): the server may be ejected.
    Connect,
    /// The connection attempt timed out (`dialTimeout`): 504 as Traefik answers any timeout, and
    /// the server may be ejected.
    ConnectTimeout,
    /// Connected but the exchange failed.
    BadGateway,
    /// The upstream did not answer in time.
    Timeout,
}

impl ForwardError {
    /// The server could not be reached at all (refused or timed out connecting).
    pub fn is_connect(self) -> bool {
        matches!(self, ForwardError::Connect | ForwardError::ConnectTimeout)
    }

    /// The error response, carrying `self` in its extensions (the retry middleware looks).
    pub fn response(self) -> Response {
        let mut resp = match self {
            ForwardError::Connect => text_response(
                StatusCode::BAD_GATEWAY,
                "502 Bad Gateway: the upstream server refused the connection or could not be reached\n",
            ),
            ForwardError::BadGateway => text_response(
                StatusCode::BAD_GATEWAY,
                "502 Bad Gateway: the upstream server closed the connection or sent an invalid response\n",
            ),
            ForwardError::Timeout | ForwardError::ConnectTimeout => text_response(
                StatusCode::GATEWAY_TIMEOUT,
                "504 Gateway Timeout: the upstream server did not answer in time\n",
            ),
        };
        resp.extensions_mut().insert(self);
        resp
    }
}

static HOP_BY_HOP: [HeaderName; 8] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
];

/// Removes hop-by-hop headers, including those the Connection header names.
///
/// On the hot path (requests and responses): one pass over the names noting which hop-by-hop
/// headers are present, then only those are removed; the Connection header's tokens are
/// collected only when they name something other than the usual `keep-alive`/`close`/`upgrade`.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let mut present = 0u16;
    for k in headers.keys() {
        let bit = match k.as_str() {
            "connection" => 1,
            "keep-alive" => 1 << 1,
            "proxy-connection" => 1 << 2,
            "proxy-authenticate" => 1 << 3,
            "proxy-authorization" => 1 << 4,
            "te" => 1 << 5,
            "trailer" => 1 << 6,
            "transfer-encoding" => 1 << 7,
            "upgrade" => 1 << 8,
            _ => 0,
        };
        present |= bit;
    }
    if present == 0 {
        return;
    }
    if present & 1 != 0 {
        let named: Vec<HeaderName> = headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .filter(|t| {
                !t.is_empty()
                    && !t.eq_ignore_ascii_case("keep-alive")
                    && !t.eq_ignore_ascii_case("close")
                    && !t.eq_ignore_ascii_case("upgrade")
            })
            .filter_map(|t| HeaderName::from_bytes(t.as_bytes()).ok())
            .collect();
        for n in named {
            headers.remove(n);
        }
    }
    for (i, h) in HOP_BY_HOP.iter().enumerate() {
        if present & (1 << i) != 0 {
            headers.remove(h);
        }
    }
    if present & (1 << 8) != 0 {
        headers.remove(header::UPGRADE);
    }
}

/// HTTP/2 clients may split `Cookie` into several fields (RFC 9113 8.2.3); HTTP/1.1 allows one.
fn join_cookies(headers: &mut HeaderMap) {
    let mut values = headers.get_all(header::COOKIE).iter();
    let (Some(_), Some(_)) = (values.next(), values.next()) else {
        return;
    };
    let joined: Vec<&str> = headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect();
    if let Ok(v) = HeaderValue::from_str(&joined.join("; ")) {
        headers.insert(header::COOKIE, v);
    }
}

/// Is this an HTTP/1.1 WebSocket upgrade request?
pub fn is_websocket_upgrade(req: &Request) -> bool {
    req.version() == Version::HTTP_11
        && req
            .headers()
            .get(header::UPGRADE)
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"websocket"))
        && req.headers().get(header::CONNECTION).is_some_and(|v| {
            v.to_str()
                .unwrap_or("")
                .split(',')
                .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
        })
}

/// Per-process facts the forwarder adds to requests.
#[derive(Debug)]
pub struct ForwardOptions {
    pub pass_host_header: bool,
    /// Value of X-Forwarded-Server (this machine's hostname).
    pub server_name: HeaderValue,
}

/// Forwards `req` to `upstream` and returns the upstream's response (or an error response).
pub async fn forward(
    transport: &Transport,
    upstream: &Upstream,
    opts: &ForwardOptions,
    mut req: Request,
    ctx: &mut RequestCtx,
) -> Result<Response, ForwardError> {
    let websocket = is_websocket_upgrade(&req);
    let downstream_version = req.version();
    let client_upgrade = websocket.then(|| hyper::upgrade::on(&mut req));

    let (mut parts, body) = req.into_parts();
    let host = parts.headers.get(header::HOST).cloned().or_else(|| {
        parts
            .uri
            .authority()
            .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
    });
    strip_hop_by_hop(&mut parts.headers);
    let trusted =
        !ctx.entrypoint.trusted.is_empty() && ctx.entrypoint.trusted.trusts(ctx.client_addr.ip());
    let proto = match (ctx.tls, websocket) {
        (true, true) => "wss",
        (false, true) => "ws",
        (true, false) => "https",
        (false, false) => "http",
    };
    forwarded::apply(
        &mut parts.headers,
        &Hop {
            client_ip: &ctx.client_ip_header,
            trusted,
            proto,
            host: host.as_ref(),
            default_port: &ctx.entrypoint.port_header,
            server: &opts.server_name,
        },
    );
    if let Some(prefix) = ctx.forwarded_prefix.as_deref()
        && let Ok(v) = HeaderValue::from_str(prefix)
    {
        parts.headers.insert(&forwarded::X_FORWARDED_PREFIX, v);
    }
    let host_value = if opts.pass_host_header {
        host.unwrap_or_else(|| upstream.host_header.clone())
    } else {
        upstream.host_header.clone()
    };
    let upstream_h2 = upstream.scheme == UpstreamScheme::H2c;
    if !upstream_h2 {
        join_cookies(&mut parts.headers);
    }
    if upstream_h2 {
        parts.headers.remove(header::HOST);
    } else {
        parts.headers.insert(header::HOST, host_value);
    }
    if websocket {
        parts
            .headers
            .insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
        parts
            .headers
            .insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    }
    let pooled = upstream.scheme == UpstreamScheme::Http;
    parts.uri = if pooled {
        upstream.origin_form(std::mem::take(&mut parts.uri))
    } else {
        upstream.uri_for(&parts.uri)
    }
    .map_err(|_| ForwardError::BadGateway)?;
    parts.version = if upstream_h2 {
        Version::HTTP_2
    } else {
        Version::HTTP_11
    };
    let req = http::Request::from_parts(parts, body);

    ctx.service_addr = Some(upstream.authority_str.clone());
    let started = Instant::now();
    let (mut resp, checkout) = if pooled {
        let send = transport.h1.send(&upstream.authority_str, req);
        let result = match transport.settings.response_header_timeout {
            Some(t) => match tokio::time::timeout(t, send).await {
                Ok(r) => r,
                Err(_) => return Err(ForwardError::Timeout),
            },
            None => send.await,
        };
        ctx.origin_duration = Some(started.elapsed());
        let (resp, checkout) = result?;
        (resp, Some(checkout))
    } else {
        // Boxed: `https://` and `h2c://` upstreams go through hyper-util's client, whose futures
        // would otherwise widen the future of every request, `http://` ones included.
        let send = Box::pin(transport.send(upstream.scheme, req));
        let result = match transport.settings.response_header_timeout {
            Some(t) => match tokio::time::timeout(t, send).await {
                Ok(r) => r,
                Err(_) => return Err(ForwardError::Timeout),
            },
            None => send.await,
        };
        ctx.origin_duration = Some(started.elapsed());
        match result {
            Ok(r) => (r, None),
            Err(e) => {
                tracing::debug!(upstream = %upstream.url, error = %e, "upstream request failed");
                return Err(if e.is_connect() && caused_by_timeout(&e) {
                    ForwardError::ConnectTimeout
                } else if e.is_connect() {
                    ForwardError::Connect
                } else {
                    ForwardError::BadGateway
                });
            }
        }
    };
    ctx.origin_status = Some(resp.status().as_u16());

    if websocket && resp.status() == StatusCode::SWITCHING_PROTOCOLS {
        let upstream_upgrade = hyper::upgrade::on(&mut resp);
        let (mut parts, _) = resp.into_parts();
        parts.version = downstream_version;
        if let Some(client_upgrade) = client_upgrade {
            websocket::spawn_tunnel(client_upgrade, upstream_upgrade, ctx);
        }
        return Ok(http::Response::from_parts(parts, Body::empty()));
    }
    let (mut parts, body) = resp.into_parts();
    strip_hop_by_hop(&mut parts.headers);
    // The client's protocol version, not the upstream's (an HTTP/1.0 upstream must not turn the
    // client's keep-alive connection into a one-shot one).
    parts.version = downstream_version;
    let body = match checkout {
        // No body (HEAD, 204, 304, Content-Length: 0): the connection is free now.
        Some(mut c) if http_body::Body::is_end_stream(&body) => {
            c.release();
            Body::from(body)
        }
        Some(checkout) => Body::Pooled {
            inner: body,
            checkout,
        },
        None => Body::from(body),
    };
    Ok(http::Response::from_parts(parts, body))
}

/// Whether an I/O timeout is somewhere in the error's chain of causes.
fn caused_by_timeout(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur = Some(e);
    while let Some(err) = cur {
        if let Some(io) = err.downcast_ref::<std::io::Error>()
            && io.kind() == std::io::ErrorKind::TimedOut
        {
            return true;
        }
        cur = err.source();
    }
    false
}

impl Transport {
    /// Sends a request as-is (health checks): no header rewriting.
    pub async fn send_raw(
        &self,
        scheme: UpstreamScheme,
        req: Request,
    ) -> Result<http::Response<hyper::body::Incoming>, hyper_util::client::legacy::Error> {
        self.send(scheme, req).await
    }
}

/// A `101 Switching Protocols` answer to a WebSocket upgrade.
pub fn is_websocket_response(resp: &Response) -> bool {
    resp.status() == StatusCode::SWITCHING_PROTOCOLS
}
