//! `buffering`: reads the whole request body before passing the request on, so that the upstream
//! gets it in one go (with a Content-Length) and a `retry` further down can replay it.
//!
//! `maxRequestBodyBytes` caps it (413, decided from Content-Length before reading when possible);
//! `maxResponseBodyBytes` makes the middleware read the response whole too, and answer 500 when it
//! is larger. Unlike Traefik, bodies are never spilled to disk: `memRequestBodyBytes` and
//! `memResponseBodyBytes` are accepted and have no effect, and a response is buffered only when
//! `maxResponseBodyBytes` bounds it (otherwise it streams, as without the middleware).

use bytes::{Bytes, BytesMut};
use http::{HeaderMap, HeaderValue, StatusCode, header};
use http_body::Body as _;
use http_body_util::BodyExt;

use super::{Next, reply, status_text};
use crate::body::{Body, Request, Response};
use crate::config::dynamic;
use crate::context::RequestCtx;

#[derive(Debug)]
pub(crate) struct Buffering {
    max_request: Option<u64>,
    max_response: Option<u64>,
}

enum ReadError {
    TooLarge,
    Io,
}

fn declared_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse().ok())
}

/// Reads `body` to the end, failing as soon as it exceeds `max` bytes.
async fn read_all(mut body: Body, max: Option<u64>) -> Result<Bytes, ReadError> {
    let limit = max.unwrap_or(u64::MAX);
    let mut first: Option<Bytes> = None;
    let mut buf = BytesMut::new();
    let mut total: u64 = 0;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|_| ReadError::Io)?;
        let Ok(data) = frame.into_data() else {
            continue; // trailers are dropped: the body now has a length
        };
        total += data.len() as u64;
        if total > limit {
            return Err(ReadError::TooLarge);
        }
        // One frame (the usual case for small bodies) is kept without copying.
        match first.take() {
            None if buf.is_empty() => first = Some(data),
            None => buf.extend_from_slice(&data),
            Some(f) => {
                buf.reserve(f.len() + data.len());
                buf.extend_from_slice(&f);
                buf.extend_from_slice(&data);
            }
        }
    }
    Ok(first.unwrap_or_else(|| buf.freeze()))
}

impl Buffering {
    pub(crate) fn compile(cfg: &dynamic::Buffering) -> Result<Self, String> {
        if cfg.retry_expression.is_some() {
            return Err(
                "buffering.retryExpression is not supported (use the retry middleware)".into(),
            );
        }
        Ok(Buffering {
            max_request: (cfg.max_request_body_bytes > 0).then_some(cfg.max_request_body_bytes),
            max_response: (cfg.max_response_body_bytes > 0).then_some(cfg.max_response_body_bytes),
        })
    }

    pub(crate) async fn handle(
        &self,
        req: Request,
        ctx: &mut RequestCtx,
        next: Next<'_>,
    ) -> Response {
        let too_large = || {
            reply(
                StatusCode::PAYLOAD_TOO_LARGE,
                status_text(StatusCode::PAYLOAD_TOO_LARGE),
            )
        };
        let (mut parts, body) = req.into_parts();
        if let (Some(max), Some(len)) = (self.max_request, declared_length(&parts.headers))
            && len > max
        {
            return too_large();
        }
        let body = if body.is_end_stream() {
            Body::empty()
        } else {
            match read_all(body, self.max_request).await {
                Ok(bytes) => {
                    parts.headers.remove(header::TRANSFER_ENCODING);
                    parts
                        .headers
                        .insert(header::CONTENT_LENGTH, HeaderValue::from(bytes.len()));
                    Body::full(bytes)
                }
                Err(ReadError::TooLarge) => return too_large(),
                Err(ReadError::Io) => {
                    return reply(
                        StatusCode::BAD_REQUEST,
                        "400 Bad Request: the request body could not be read\n",
                    );
                }
            }
        };
        let resp = next.run(http::Request::from_parts(parts, body), ctx).await;
        let Some(max) = self.max_response else {
            return resp;
        };
        if resp.status() == StatusCode::SWITCHING_PROTOCOLS || resp.body().is_end_stream() {
            return resp;
        }
        let too_big = || {
            reply(
                StatusCode::INTERNAL_SERVER_ERROR,
                status_text(StatusCode::INTERNAL_SERVER_ERROR),
            )
        };
        if declared_length(resp.headers()).is_some_and(|len| len > max) {
            return too_big();
        }
        let (mut parts, body) = resp.into_parts();
        match read_all(body, Some(max)).await {
            Ok(bytes) => {
                parts.headers.remove(header::TRANSFER_ENCODING);
                parts
                    .headers
                    .insert(header::CONTENT_LENGTH, HeaderValue::from(bytes.len()));
                http::Response::from_parts(parts, Body::full(bytes))
            }
            Err(ReadError::TooLarge) => too_big(),
            Err(ReadError::Io) => reply(
                StatusCode::BAD_GATEWAY,
                "502 Bad Gateway: the upstream response body could not be read\n",
            ),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::super::testutil::{body_string, ctx_from, echo_service, echoed, mw, request, run};
    use super::*;
    use crate::body::BoxError;
    use http_body::Frame;

    fn chunked(parts: &[&'static str]) -> Body {
        let frames: Vec<Result<Frame<Bytes>, BoxError>> = parts
            .iter()
            .map(|p| Ok(Frame::data(Bytes::from_static(p.as_bytes()))))
            .collect();
        Body::boxed(http_body_util::StreamBody::new(futures_util::stream::iter(
            frames,
        )))
    }

    #[tokio::test]
    async fn request_body_is_buffered_and_replayable() {
        let m = mw("buffering: {maxRequestBodyBytes: 10}");
        let mut req = request("POST", "/");
        *req.body_mut() = chunked(&["abc", "def"]);
        let (r, _) = run(
            std::slice::from_ref(&m),
            &echo_service(),
            req,
            ctx_from("1.1.1.1:1"),
        )
        .await;
        assert_eq!(r.status(), 200);
        let e = echoed(&r);
        assert_eq!(&e.body[..], b"abcdef");
        assert_eq!(e.headers["content-length"], "6");
    }

    #[tokio::test]
    async fn request_over_the_limit_is_413() {
        let m = mw("buffering: {maxRequestBodyBytes: 5}");
        let mut req = request("POST", "/");
        *req.body_mut() = chunked(&["abc", "def"]);
        let (r, _) = run(
            std::slice::from_ref(&m),
            &echo_service(),
            req,
            ctx_from("1.1.1.1:1"),
        )
        .await;
        assert_eq!(r.status(), 413);
        let mut req = request("POST", "/");
        req.headers_mut()
            .insert(header::CONTENT_LENGTH, HeaderValue::from(100));
        *req.body_mut() = chunked(&["never read"]);
        let (r, _) = run(&[m], &echo_service(), req, ctx_from("1.1.1.1:1")).await;
        assert_eq!(r.status(), 413);
        assert_eq!(body_string(r).await, "Payload Too Large");
    }

    #[tokio::test]
    async fn response_over_the_limit_is_500() {
        let svc = crate::service::Service::from_fn("s@internal", |_r, _c| async {
            http::Response::new(chunked(&["0123456789", "0123456789"]))
        });
        let (r, _) = run(
            &[mw("buffering: {maxResponseBodyBytes: 15}")],
            &svc,
            request("GET", "/"),
            ctx_from("1.1.1.1:1"),
        )
        .await;
        assert_eq!(r.status(), 500);
        let (r, _) = run(
            &[mw("buffering: {maxResponseBodyBytes: 20}")],
            &svc,
            request("GET", "/"),
            ctx_from("1.1.1.1:1"),
        )
        .await;
        assert_eq!(r.status(), 200);
        assert_eq!(r.headers()["content-length"], "20");
        assert_eq!(body_string(r).await.len(), 20);
    }
}
