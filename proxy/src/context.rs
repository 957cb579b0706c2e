//! Per-request context: what the proxy knows about a request besides the request itself.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Facts about the entrypoint a request arrived on, fixed at start.
#[derive(Debug)]
pub struct EntryPointInfo {
    pub name: Arc<str>,
    /// TLS is terminated on this entrypoint.
    pub tls: bool,
    pub port: u16,
    /// Trust incoming X-Forwarded-* from this client address?
    pub trusted: crate::forwarded::TrustedIps,
    /// Open WebSocket tunnels (process-wide), closed with 1001 at shutdown.
    pub tunnels: Arc<crate::websocket::Tunnels>,
    pub websocket_idle_timeout: Duration,
    /// `respondingTimeouts.readTimeout`: the request (body included) must be read by then,
    /// counted from the request's start.
    pub read_timeout: Option<Duration>,
    /// `respondingTimeouts.writeTimeout`: the response body must be sent by then, counted from
    /// the request's start.
    pub write_timeout: Option<Duration>,
    /// X-Forwarded-Port when the Host header names no port.
    pub port_header: http::HeaderValue,
    /// This entrypoint's request metrics, resolved once.
    pub metrics: Option<Arc<crate::metrics::RequestMetrics>>,
}

/// Mutable per-request state, filled in as the request moves through routing, middlewares and the
/// service, and read by the access log and metrics at the end.
#[derive(Debug)]
pub struct RequestCtx {
    pub client_addr: SocketAddr,
    /// The client's IP as a header value (X-Forwarded-For, X-Real-Ip), formatted once per connection.
    pub client_ip_header: http::HeaderValue,
    pub entrypoint: Arc<EntryPointInfo>,
    /// The connection is TLS.
    pub tls: bool,
    pub start: Instant,
    pub router: Option<Arc<str>>,
    pub service: Option<Arc<str>>,
    /// `host:port` of the upstream server that answered.
    pub service_addr: Option<Arc<str>>,
    pub origin_status: Option<u16>,
    pub origin_duration: Option<Duration>,
    pub origin_content_size: Option<u64>,
    pub retry_attempts: u32,
    /// The request host as received (port stripped), for the access log.
    pub request_host: Option<Arc<str>>,
    /// Middlewares that want the upstream to know the path was rewritten record the prefix here.
    pub forwarded_prefix: Option<String>,
}

impl RequestCtx {
    pub fn new(client_addr: SocketAddr, entrypoint: Arc<EntryPointInfo>, tls: bool) -> Self {
        let ip = crate::forwarded::canonical(client_addr.ip()).to_string();
        let header = http::HeaderValue::from_str(&ip)
            .unwrap_or_else(|_| http::HeaderValue::from_static("unknown"));
        Self::with_ip_header(client_addr, header, entrypoint, tls)
    }

    /// As [`RequestCtx::new`], reusing the connection's formatted client IP.
    pub fn with_ip_header(
        client_addr: SocketAddr,
        client_ip_header: http::HeaderValue,
        entrypoint: Arc<EntryPointInfo>,
        tls: bool,
    ) -> Self {
        RequestCtx {
            client_addr,
            client_ip_header,
            entrypoint,
            tls,
            start: Instant::now(),
            router: None,
            service: None,
            service_addr: None,
            origin_status: None,
            origin_duration: None,
            origin_content_size: None,
            retry_attempts: 0,
            request_host: None,
            forwarded_prefix: None,
        }
    }

    /// `https` or `http`, as seen by the client.
    pub fn scheme(&self) -> &'static str {
        if self.tls { "https" } else { "http" }
    }
}
