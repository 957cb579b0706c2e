//! `retry`: tries again, up to `attempts` times in all, when the proxy could not reach an
//! upstream server at all (connection refused or unreachable: the request was never sent).
//!
//! As in Traefik, nothing else is retried: not a 503 for want of a healthy server, not an upstream
//! that failed or timed out after it got the request, not an upstream's own 5xx. A request is
//! retried only if its body can be replayed: no body, or one a `buffering` middleware has read
//! into memory. Attempts are spaced by an exponential backoff starting at `initialInterval`
//! (Traefik's: the multiplier is chosen so the last wait is about twice the first, with ±50%
//! jitter); every retry counts in the access log's `RetryAttempts`.

use std::time::Duration;

use http_body::Body as _;

use super::Next;
use crate::body::{Body, Request, Response};
use crate::config::dynamic;
use crate::context::RequestCtx;
use crate::forward::ForwardError;

#[derive(Debug)]
pub(crate) struct Retry {
    attempts: u32,
    initial_interval: Duration,
    multiplier: f64,
}

impl Retry {
    pub(crate) fn compile(cfg: &dynamic::Retry) -> Result<Self, String> {
        if cfg.attempts == 0 {
            return Err("retry.attempts must be at least 1".into());
        }
        let initial_interval = cfg.initial_interval.map_or(Duration::ZERO, |d| d.0);
        let multiplier = if cfg.attempts > 1 {
            2f64.powf(1.0 / f64::from(cfg.attempts - 1))
        } else {
            1.0
        };
        Ok(Retry {
            attempts: cfg.attempts,
            initial_interval,
            multiplier,
        })
    }

    /// The wait before retry number `n` (1-based), jittered by ±50%.
    fn backoff(&self, n: u32) -> Duration {
        if self.initial_interval.is_zero() {
            return Duration::ZERO;
        }
        let base = self.initial_interval.as_secs_f64() * self.multiplier.powi(n as i32 - 1);
        let jitter = 1.0 + 0.5 * (2.0 * rand::random::<f64>() - 1.0);
        Duration::from_secs_f64((base * jitter).min(60.0))
    }

    pub(crate) async fn handle(
        &self,
        req: Request,
        ctx: &mut RequestCtx,
        next: Next<'_>,
    ) -> Response {
        if self.attempts == 1 {
            return next.run(req, ctx).await;
        }
        let (parts, body) = req.into_parts();
        let body = if body.is_end_stream() {
            Body::empty()
        } else {
            body
        };
        if body.try_clone().is_none() {
            // A streamed body can be sent only once.
            return next.run(http::Request::from_parts(parts, body), ctx).await;
        }
        for attempt in 1..self.attempts {
            let resp = next.run(replay(&parts, &body), ctx).await;
            // Refused and timed-out connections alike: the request never reached a server.
            if !resp
                .extensions()
                .get::<ForwardError>()
                .is_some_and(|e| e.is_connect())
            {
                return resp;
            }
            ctx.retry_attempts += 1;
            tracing::debug!(
                attempt = attempt + 1,
                "retry: upstream unreachable, trying again"
            );
            let wait = self.backoff(attempt);
            if !wait.is_zero() {
                tokio::time::sleep(wait).await;
            }
        }
        // The last attempt takes the originals.
        next.run(http::Request::from_parts(parts, body), ctx).await
    }
}

/// A copy of a request whose body is replayable.
fn replay(p: &http::request::Parts, body: &Body) -> Request {
    let mut r = http::Request::new(body.try_clone().unwrap_or_else(Body::empty));
    *r.method_mut() = p.method.clone();
    *r.uri_mut() = p.uri.clone();
    *r.version_mut() = p.version;
    *r.headers_mut() = p.headers.clone();
    *r.extensions_mut() = p.extensions.clone();
    r
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::super::MiddlewareState;
    use super::super::testutil::{ctx_from, mw, request, run, try_mw};
    use super::*;
    use crate::body::BoxError;
    use crate::service::Service;
    use bytes::Bytes;
    use http_body::Frame;
    use http_body_util::BodyExt;

    /// A service that fails with `err` for the first `fails` calls, then echoes the body.
    fn flaky(fails: u32, err: ForwardError) -> (Service, Arc<AtomicU32>) {
        let calls = Arc::new(AtomicU32::new(0));
        let c = calls.clone();
        let svc = Service::from_fn("s@internal", move |req: Request, _ctx| {
            let n = c.fetch_add(1, Ordering::SeqCst);
            async move {
                if n < fails {
                    return err.response();
                }
                let body = req.into_body().collect().await.unwrap().to_bytes();
                http::Response::new(Body::full(body))
            }
        });
        (svc, calls)
    }

    #[tokio::test]
    async fn retries_unreachable_upstreams_and_counts_attempts() {
        let (svc, calls) = flaky(2, ForwardError::Connect);
        let mut req = request("POST", "/");
        *req.body_mut() = Body::full("payload");
        let (r, ctx) = run(
            &[mw("retry: {attempts: 3}")],
            &svc,
            req,
            ctx_from("1.1.1.1:1"),
        )
        .await;
        assert_eq!(r.status(), 200);
        assert_eq!(calls.load(Ordering::SeqCst), 3);
        assert_eq!(ctx.retry_attempts, 2);
        assert_eq!(
            &r.into_body().collect().await.unwrap().to_bytes()[..],
            b"payload"
        );
    }

    #[tokio::test]
    async fn retries_connect_timeouts_too() {
        let (svc, calls) = flaky(1, ForwardError::ConnectTimeout);
        let (r, ctx) = run(
            &[mw("retry: {attempts: 2}")],
            &svc,
            request("GET", "/"),
            ctx_from("1.1.1.1:1"),
        )
        .await;
        assert_eq!(r.status(), 200);
        assert_eq!(calls.load(Ordering::SeqCst), 2);
        assert_eq!(ctx.retry_attempts, 1);
    }

    #[tokio::test]
    async fn gives_up_after_the_attempts() {
        let (svc, calls) = flaky(10, ForwardError::Connect);
        let (r, ctx) = run(
            &[mw("retry: {attempts: 3, initialInterval: 1ms}")],
            &svc,
            request("GET", "/"),
            ctx_from("1.1.1.1:1"),
        )
        .await;
        assert_eq!(r.status(), 502);
        assert_eq!(calls.load(Ordering::SeqCst), 3);
        assert_eq!(ctx.retry_attempts, 2);
    }

    #[tokio::test]
    async fn does_not_retry_other_failures_or_streamed_bodies() {
        for err in [ForwardError::BadGateway, ForwardError::Timeout] {
            let (svc, calls) = flaky(1, err);
            let (r, _) = run(
                &[mw("retry: {attempts: 3}")],
                &svc,
                request("GET", "/"),
                ctx_from("1.1.1.1:1"),
            )
            .await;
            assert_ne!(r.status(), 200);
            assert_eq!(calls.load(Ordering::SeqCst), 1);
        }
        let (svc, calls) = flaky(1, ForwardError::Connect);
        let mut req = request("POST", "/");
        let frames: Vec<Result<Frame<Bytes>, BoxError>> =
            vec![Ok(Frame::data(Bytes::from_static(b"s")))];
        *req.body_mut() = Body::boxed(http_body_util::StreamBody::new(futures_util::stream::iter(
            frames,
        )));
        let (r, _) = run(
            &[mw("retry: {attempts: 3}")],
            &svc,
            req,
            ctx_from("1.1.1.1:1"),
        )
        .await;
        assert_eq!(r.status(), 502);
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn backoff_grows_to_about_twice_the_first_wait() {
        let st = MiddlewareState::default();
        assert!(
            try_mw("retry: {attempts: 0}", &st)
                .unwrap_err()
                .contains("retry.attempts")
        );
        let r = Retry::compile(&dynamic::Retry {
            attempts: 5,
            initial_interval: Some(crate::config::Dur::millis(100)),
        })
        .unwrap();
        for _ in 0..50 {
            let first = r.backoff(1).as_secs_f64();
            let last = r.backoff(4).as_secs_f64();
            assert!((0.05..=0.15).contains(&first), "{first}");
            // 100ms * 2^(3/4) = 168ms, jittered.
            assert!((0.084..=0.253).contains(&last), "{last}");
        }
    }
}
