//! The per-request path: ACME HTTP-01 answers, routing on the current snapshot, the router's
//! middlewares and service, then metrics and the access log.

use std::pin::Pin;
use std::sync::Arc;
use std::time::SystemTime;

use http::{StatusCode, header};

use crate::accesslog::{self, Entry};
use crate::body::{Body, Deadline, Request, Response, text_response};
use crate::context::RequestCtx;
use crate::metrics::Labels;
use crate::middleware::Next;
use crate::rule::RouteInput;
use crate::snapshot::Router;
use crate::state::Shared;

const ACME_PREFIX: &str = "/.well-known/acme-challenge/";

/// Handles one request that arrived on an entrypoint.
pub(crate) async fn handle(
    shared: Arc<Shared>,
    req: hyper::Request<hyper::body::Incoming>,
    mut ctx: RequestCtx,
) -> Response {
    let mut req: Request = req.map(Body::from);
    if let Some(limit) = ctx.entrypoint.read_timeout {
        req = req.map(|b| Deadline::wrap(b, ctx.start.into(), limit, "readTimeout"));
    }
    let method = req.method().clone();
    let version = req.version();
    // Wall-clock start only for the access log (one clock read less per request without it).
    let wall_start = shared.access_log.as_ref().map(|_| SystemTime::now());
    let path_for_log = shared.access_log.as_ref().map(|_| {
        req.uri()
            .path_and_query()
            .map_or_else(|| "/".to_owned(), |p| p.as_str().to_owned())
    });
    let req_size = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let (resp, router) = route(&shared, req, &mut ctx).await;
    let (log, metrics) = router
        .as_ref()
        .map_or((true, false), |r| (r.access_log, r.metrics));

    let status = resp.status().as_u16();
    let took = ctx.start.elapsed();
    let protocol = if crate::forward::is_websocket_response(&resp) {
        "websocket"
    } else if ctx.tls {
        "https"
    } else {
        "http"
    };
    let labels = Labels {
        code: status,
        method: method.clone(),
        protocol,
    };
    if let Some(m) = &ctx.entrypoint.metrics {
        m.record(&labels, took);
    }
    if metrics
        && let Some(router) = &router
        && let Some(s) = &ctx.service
    {
        match &router.metric_handles {
            // The router's own service answered: the handles resolved at compile time.
            Some((r, sm)) if Arc::ptr_eq(s, &router.service.name) || *s == router.service.name => {
                r.record(&labels, took);
                sm.record(&labels, took);
            }
            // A child of a weighted service answered.
            _ => {
                if let Some(m) = shared.metrics.router(&router.name, s) {
                    m.record(&labels, took);
                }
                if let Some(m) = shared.metrics.service(s) {
                    m.record(&labels, took);
                }
            }
        }
    }
    if log && let Some(al) = &shared.access_log {
        let line = LogLine {
            log: al.clone(),
            wall_start: wall_start.unwrap_or_else(SystemTime::now),
            method,
            path: path_for_log.unwrap_or_else(|| "/".to_owned()),
            version,
            req_size,
            status,
            ctx,
        };
        match http_body::Body::size_hint(resp.body()).exact() {
            // Known size (generated answers, Content-Length): log now.
            Some(len) => line.write(len, took),
            // Streamed without a length (chunked, compressed, HTTP/2 without a length): count the
            // bytes actually sent and log when the body ends (or the client goes away).
            None => {
                let (parts, body) = resp.into_parts();
                let counted = CountedBody {
                    inner: body,
                    sent: 0,
                    line: Some(line),
                };
                return http::Response::from_parts(parts, Body::boxed(counted));
            }
        }
    }
    resp
}

/// What an access log line needs once the response is done.
struct LogLine {
    log: crate::accesslog::AccessLog,
    wall_start: SystemTime,
    method: http::Method,
    path: String,
    version: http::Version,
    req_size: u64,
    status: u16,
    ctx: RequestCtx,
}

impl LogLine {
    fn write(&self, body_len: u64, took: std::time::Duration) {
        let ctx = &self.ctx;
        if !self.log.keep(self.status, took, ctx.retry_attempts) {
            return;
        }
        let client = ctx.client_addr;
        let origin = ctx.origin_duration.map(|d| d.as_nanos());
        let entry = Entry {
            start_utc: accesslog::rfc3339(self.wall_start),
            duration: took.as_nanos(),
            router_name: ctx.router.as_deref().unwrap_or(""),
            service_name: ctx.service.as_deref().unwrap_or(""),
            service_addr: ctx.service_addr.as_deref().unwrap_or(""),
            entry_point_name: &ctx.entrypoint.name,
            client_addr: client.to_string(),
            client_host: crate::forwarded::canonical(client.ip()).to_string(),
            client_port: client.port().to_string(),
            request_method: self.method.as_str(),
            request_path: &self.path,
            request_protocol: version_str(self.version),
            request_host: ctx.request_host.as_deref().unwrap_or(""),
            request_scheme: ctx.scheme(),
            request_content_size: self.req_size,
            downstream_status: self.status,
            downstream_content_size: body_len,
            origin_status: ctx.origin_status,
            origin_duration: origin,
            origin_content_size: ctx.origin_content_size,
            retry_attempts: ctx.retry_attempts,
            overhead: took.as_nanos().saturating_sub(origin.unwrap_or(0)),
            tls_version: ctx.tls.then_some("1.3"),
            level: "info",
            msg: "",
            time: accesslog::rfc3339(SystemTime::now()),
        };
        self.log.log(&entry);
    }
}

pin_project_lite::pin_project! {
    /// A response body of unknown length that counts what it yields and writes the access log
    /// line when it ends, fails, or is dropped (the client went away).
    struct CountedBody {
        #[pin]
        inner: Body,
        sent: u64,
        line: Option<LogLine>,
    }

    impl PinnedDrop for CountedBody {
        fn drop(this: Pin<&mut Self>) {
            let this = this.project();
            if let Some(line) = this.line.take() {
                line.write(*this.sent, line.ctx.start.elapsed());
            }
        }
    }
}

impl http_body::Body for CountedBody {
    type Data = bytes::Bytes;
    type Error = crate::body::BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<bytes::Bytes>, Self::Error>>> {
        let this = self.project();
        let r = this.inner.poll_frame(cx);
        match &r {
            std::task::Poll::Ready(Some(Ok(frame))) => {
                if let Some(d) = frame.data_ref() {
                    *this.sent += d.len() as u64;
                }
            }
            std::task::Poll::Ready(_) => {
                if let Some(line) = this.line.take() {
                    line.write(*this.sent, line.ctx.start.elapsed());
                }
            }
            std::task::Poll::Pending => {}
        }
        r
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

fn version_str(v: http::Version) -> &'static str {
    match v {
        http::Version::HTTP_10 => "HTTP/1.0",
        http::Version::HTTP_11 => "HTTP/1.1",
        http::Version::HTTP_2 => "HTTP/2.0",
        http::Version::HTTP_3 => "HTTP/3.0",
        _ => "HTTP/0.9",
    }
}

/// Returns the response and the router that handled it (none: log it, do not meter it).
async fn route(
    shared: &Shared,
    req: Request,
    ctx: &mut RequestCtx,
) -> (Response, Option<Arc<Router>>) {
    // HTTP-01 challenges come first, ahead of routers and redirects.
    if !ctx.tls
        && let Some(token) = req.uri().path().strip_prefix(ACME_PREFIX)
        && let Some(answer) = shared.acme.get(token)
    {
        let mut r = http::Response::new(Body::full(answer));
        r.headers_mut().insert(
            header::CONTENT_TYPE,
            http::HeaderValue::from_static("application/octet-stream"),
        );
        return (r, None);
    }
    let snapshot = shared.snapshot.load_full();
    let Some(table) = snapshot.tables.get(&*ctx.entrypoint.name) else {
        return (not_found(), None);
    };
    let host_full = req
        .uri()
        .authority()
        .map(|a| a.as_str())
        .or_else(|| {
            req.headers()
                .get(header::HOST)
                .and_then(|h| h.to_str().ok())
        })
        .unwrap_or("");
    let (host, _) = crate::forwarded::split_port(host_full);
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    let router = {
        let input = RouteInput {
            host,
            path: req.uri().path(),
            query: req.uri().query(),
            method: req.method(),
            headers: req.headers(),
            client_ip: ctx.client_addr.ip(),
        };
        table.find(&input, ctx.tls).cloned()
    };
    if shared.access_log.is_some() {
        ctx.request_host = Some(host.into());
    }
    let Some(router) = router else {
        return (not_found(), None);
    };
    ctx.router = Some(router.name.clone());
    let resp = if router.middlewares.is_empty() {
        router.service.call(req, ctx).await
    } else {
        Next::new(&router.middlewares, &router.service)
            .run(req, ctx)
            .await
    };
    (resp, Some(router))
}

fn not_found() -> Response {
    text_response(StatusCode::NOT_FOUND, "404 page not found\n")
}

#[cfg(test)]
mod future_sizes {
    //! Sizes of the per-request futures. hyper moves the handler's future around (HTTP/2 more
    //! than HTTP/1.1), and every `.await` inside it stores the awaited future inline, so paths
    //! that nearly every request takes must not hold large futures of rare paths (connecting,
    //! middlewares, other upstream schemes): those are boxed. Print with `--nocapture`.

    fn size3<A, B, C, F: FnOnce(A, B, C) -> Fut, Fut>(_: F) -> usize {
        std::mem::size_of::<Fut>()
    }
    fn size5<A, B, C, D, E, F: FnOnce(A, B, C, D, E) -> Fut, Fut>(_: F) -> usize {
        std::mem::size_of::<Fut>()
    }

    #[test]
    fn the_common_path_future_stays_small() {
        let handle = size3(super::handle);
        let route = size3(super::route);
        let service = size3(crate::service::Service::call);
        let forward = size5(crate::forward::forward);
        let send = size3(crate::pool::H1Pool::send);
        println!(
            "handle {handle}, route {route}, Service::call {service}, forward {forward}, \
             H1Pool::send {send} bytes"
        );
        // A guard against regressions, not a target: 5,376 bytes in a release build before the
        // rare paths were boxed; 4,832 in a debug build after.
        assert!(handle <= 6144, "handler future grew to {handle} bytes");
    }
}
