//! Helpers for the middlewares' unit tests: contexts, requests, a service that echoes what it got,
//! and middlewares compiled from YAML exactly as the file provider would write them.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Uri};
use http_body_util::BodyExt;

use super::{Middleware, MiddlewareState, Next};
use crate::body::{Body, Request, Response};
use crate::config::dynamic::MiddlewareConfig;
use crate::context::{EntryPointInfo, RequestCtx};
use crate::forwarded::TrustedIps;
use crate::service::Service;
use crate::websocket::Tunnels;

fn ctx_with(addr: &str, tls: bool, trusted: &[&str]) -> RequestCtx {
    let ep = Arc::new(EntryPointInfo {
        name: "web".into(),
        tls,
        port: if tls { 443 } else { 80 },
        trusted: TrustedIps::parse(
            false,
            &trusted.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
        )
        .unwrap(),
        tunnels: Tunnels::new(),
        websocket_idle_timeout: Duration::from_secs(60),
        read_timeout: None,
        write_timeout: None,
        port_header: http::HeaderValue::from(if tls { 443u16 } else { 80 }),
        metrics: None,
    });
    RequestCtx::new(addr.parse().unwrap(), ep, tls)
}

/// A plain-HTTP request context from `addr` (`ip:port`).
pub(crate) fn ctx_from(addr: &str) -> RequestCtx {
    ctx_with(addr, false, &[])
}

/// A TLS request context from `addr`.
pub(crate) fn ctx_tls(addr: &str) -> RequestCtx {
    ctx_with(addr, true, &[])
}

/// A plain-HTTP context whose entrypoint trusts forwarded headers from `trusted`.
pub(crate) fn ctx_trusting(addr: &str, trusted: &[&str]) -> RequestCtx {
    ctx_with(addr, false, trusted)
}

/// An HTTP/1.1 request with a Host header of `example.com`.
pub(crate) fn request(method: &str, uri: &str) -> Request {
    let mut r = http::Request::new(Body::empty());
    *r.method_mut() = method.parse().unwrap();
    *r.uri_mut() = uri.parse().unwrap();
    r.headers_mut()
        .insert(http::header::HOST, "example.com".parse().unwrap());
    r
}

/// What the echo service received, attached to its response's extensions.
#[derive(Debug, Clone)]
pub(crate) struct Echo {
    pub(crate) uri: Uri,
    pub(crate) headers: HeaderMap,
    pub(crate) body: Bytes,
}

/// A service that answers 200 `ok` and records the request it received.
pub(crate) fn echo_service() -> Service {
    Service::from_fn(
        "echo@internal",
        |req: Request, _ctx: &RequestCtx| async move {
            let (parts, body) = req.into_parts();
            let body = body
                .collect()
                .await
                .map(|c| c.to_bytes())
                .unwrap_or_default();
            let mut resp = http::Response::new(Body::full("ok"));
            resp.extensions_mut().insert(Echo {
                uri: parts.uri,
                headers: parts.headers,
                body,
            });
            resp
        },
    )
}

/// The request the echo service saw.
pub(crate) fn echoed(resp: &Response) -> Echo {
    resp.extensions()
        .get::<Echo>()
        .cloned()
        .expect("the request did not reach the service")
}

/// Compiles one middleware from its YAML definition (`stripPrefix: {prefixes: [/a]}`).
pub(crate) fn mw(yaml: &str) -> Arc<Middleware> {
    mw_with_state(yaml, &MiddlewareState::default())
}

pub(crate) fn mw_with_state(yaml: &str, state: &MiddlewareState) -> Arc<Middleware> {
    Arc::new(try_mw(yaml, state).unwrap())
}

/// The compile result for a YAML definition.
pub(crate) fn try_mw(yaml: &str, state: &MiddlewareState) -> Result<Middleware, String> {
    let cfg: MiddlewareConfig = serde_yaml_ng::from_str(yaml).map_err(|e| e.to_string())?;
    Middleware::compile("t@file", &cfg, state, &mut |n: &str| {
        Err(format!("no middleware `{n}` in tests"))
    })
}

/// Runs `req` through `mws` then `svc`.
pub(crate) async fn run(
    mws: &[Arc<Middleware>],
    svc: &Service,
    req: Request,
    mut ctx: RequestCtx,
) -> (Response, RequestCtx) {
    let resp = Next::new(mws, svc).run(req, &mut ctx).await;
    (resp, ctx)
}

/// The whole body as bytes.
pub(crate) async fn body_bytes(resp: Response) -> Bytes {
    resp.into_body().collect().await.unwrap().to_bytes()
}

pub(crate) async fn body_string(resp: Response) -> String {
    String::from_utf8(body_bytes(resp).await.to_vec()).unwrap()
}
