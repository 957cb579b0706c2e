//! `inFlightReq`: at most `amount` requests per source (the request host by default) in progress
//! at once; the next one gets 429.
//!
//! A request counts until its response body has been sent completely (or the client went away),
//! not just until the response headers: the permit travels inside the response body and is given
//! back when the body is dropped. A WebSocket counts until its 101 answer has been sent, not for the
//! life of the tunnel. Each router using the middleware counts separately, as in Traefik.
//! Counters live in the
//! [`MiddlewareState`](super::MiddlewareState), so requests that started before a reload are
//! still counted after it. A source's entry disappears when its count drops to zero, so the map
//! holds no more entries than there are requests in flight.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::StatusCode;
use http_body::{Frame, SizeHint};
use pin_project_lite::pin_project;

use super::ip::Source;
use super::shards::{Shards, SourceKey};
use super::{Next, reply, status_text};
use crate::body::{Body, BoxError, Request, Response};
use crate::config::dynamic;
use crate::context::RequestCtx;

/// The in-flight counters of one middleware.
#[derive(Debug)]
pub(crate) struct Store {
    counts: Shards<u64>,
}

impl Store {
    pub(crate) fn new() -> Self {
        // Entries exist only for sources with requests in flight; the capacity only sizes shards.
        Store {
            counts: Shards::new(usize::MAX / 2),
        }
    }

    fn acquire(self: &Arc<Self>, key: SourceKey, amount: u64) -> Option<Permit> {
        let (mut map, _) = self.counts.shard(&key);
        let n = map.entry(key).or_insert(0);
        if *n >= amount {
            if *n == 0 {
                map.remove(&key);
            }
            return None;
        }
        *n += 1;
        Some(Permit {
            store: self.clone(),
            key,
        })
    }

    #[cfg(test)]
    fn count(&self, key: &SourceKey) -> u64 {
        self.counts.shard(key).0.get(key).copied().unwrap_or(0)
    }
}

/// One request in flight; dropping it gives the slot back.
#[derive(Debug)]
struct Permit {
    store: Arc<Store>,
    key: SourceKey,
}

impl Drop for Permit {
    fn drop(&mut self) {
        let (mut map, _) = self.store.counts.shard(&self.key);
        if let Some(n) = map.get_mut(&self.key) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                map.remove(&self.key);
            }
        }
    }
}

pin_project! {
    /// A response body that holds a permit until it is finished or dropped.
    struct Guarded {
        #[pin]
        inner: Body,
        permit: Option<Permit>,
    }
}

impl http_body::Body for Guarded {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.project();
        let res = this.inner.poll_frame(cx);
        if let Poll::Ready(None | Some(Err(_))) = res {
            this.permit.take();
        }
        res
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[derive(Debug)]
pub(crate) struct InFlightReq {
    store: Arc<Store>,
    amount: u64,
    source: Source,
}

impl InFlightReq {
    pub(crate) fn compile(cfg: &dynamic::InFlightReq, store: Arc<Store>) -> Result<Self, String> {
        if cfg.amount == 0 {
            return Err("inFlightReq.amount must be at least 1".into());
        }
        Ok(InFlightReq {
            store,
            amount: cfg.amount,
            source: Source::compile(cfg.source_criterion.as_ref(), true, "inFlightReq")?,
        })
    }

    pub(crate) async fn handle(
        &self,
        req: Request,
        ctx: &mut RequestCtx,
        next: Next<'_>,
    ) -> Response {
        let key = self.source.key(&req, ctx, &self.store.counts);
        let Some(permit) = self.store.acquire(key, self.amount) else {
            return reply(
                StatusCode::TOO_MANY_REQUESTS,
                status_text(StatusCode::TOO_MANY_REQUESTS),
            );
        };
        let resp = next.run(req, ctx).await;
        if http_body::Body::is_end_stream(resp.body()) {
            return resp;
        }
        resp.map(|inner| {
            Body::boxed(Guarded {
                inner,
                permit: Some(permit),
            })
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::super::MiddlewareState;
    use super::super::testutil::{ctx_from, mw_with_state, request, run};
    use super::*;
    use http_body_util::BodyExt;

    #[tokio::test]
    async fn permit_is_held_until_the_body_is_done() {
        let st = MiddlewareState::default();
        let m = mw_with_state("inFlightReq: {amount: 1}", &st);
        let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(1);
        let rx = Arc::new(tokio::sync::Mutex::new(Some(rx)));
        let svc = crate::service::Service::from_fn("s@internal", move |_r, _c| {
            let rx = rx.clone();
            async move {
                let rx = rx.lock().await.take();
                match rx {
                    Some(rx) => {
                        let stream = futures_util::stream::unfold(rx, |mut rx| async move {
                            rx.recv()
                                .await
                                .map(|b| (Ok::<_, BoxError>(Frame::data(b)), rx))
                        });
                        http::Response::new(Body::boxed(http_body_util::StreamBody::new(stream)))
                    }
                    None => http::Response::new(Body::full("second")),
                }
            }
        });
        let (first, _) = run(
            std::slice::from_ref(&m),
            &svc,
            request("GET", "/"),
            ctx_from("1.1.1.1:1"),
        )
        .await;
        assert_eq!(first.status(), 200);
        // Headers are out, the body is not: the slot of example.com is still taken.
        let (second, _) = run(
            std::slice::from_ref(&m),
            &svc,
            request("GET", "/"),
            ctx_from("2.2.2.2:1"),
        )
        .await;
        assert_eq!(second.status(), 429);
        tx.send(Bytes::from_static(b"chunk")).await.unwrap();
        drop(tx);
        let body = first.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(&body[..], b"chunk");
        let (third, _) = run(&[m], &svc, request("GET", "/"), ctx_from("2.2.2.2:1")).await;
        assert_eq!(third.status(), 200);
    }

    #[test]
    fn counters_drop_to_zero_and_disappear() {
        let store = Arc::new(Store::new());
        let k = SourceKey::text(7);
        let a = store.acquire(k, 2).unwrap();
        let b = store.acquire(k, 2).unwrap();
        assert!(store.acquire(k, 2).is_none());
        assert_eq!(store.count(&k), 2);
        drop(a);
        drop(b);
        assert_eq!(store.count(&k), 0);
        assert_eq!(store.counts.len(), 0);
    }
}
