//! HTTP middlewares (Traefik's `http.middlewares`), compiled once per configuration snapshot.
//!
//! A router's middlewares run in order around its service: each gets the request, may answer it
//! itself (redirect, 401, 403, 429, ...), or passes it on with [`Next::run`] and may then change the
//! response. Compiled middlewares are immutable; everything a request needs (regexes, header names
//! and values, parsed networks) is prepared at compile time. State that must outlive a reload
//! (rate-limit buckets, in-flight counters) lives in [`MiddlewareState`], keyed by middleware name.
//!
//! One file per middleware family: [`path`] (addPrefix, stripPrefix, stripPrefixRegex, replacePath,
//! replacePathRegex), [`redirect`], [`headers`], [`basic_auth`], [`ip`] (ipAllowList and the
//! `ipStrategy`/`sourceCriterion` shared with the limiters), [`rate_limit`], [`in_flight`],
//! [`buffering`], [`compress`] and [`retry`]. `chain` is flattened when routers are compiled.

mod basic_auth;
mod buffering;
mod compress;
mod headers;
mod in_flight;
mod ip;
mod path;
mod rate_limit;
mod redirect;
mod retry;
mod shards;

#[cfg(test)]
pub(crate) mod testutil;

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, Weak};

use http::{HeaderValue, StatusCode, header};

use crate::body::{Body, Request, Response};
use crate::config::dynamic::MiddlewareConfig;
use crate::context::RequestCtx;
use crate::service::Service;

/// A compiled middleware.
#[derive(Debug)]
pub struct Middleware {
    /// Qualified name (`name@file`).
    pub name: Arc<str>,
    kind: Kind,
}

#[derive(Debug)]
enum Kind {
    /// `chain`: the referenced middlewares, resolved at compile time.
    Chain(Vec<Arc<Middleware>>),
    AddPrefix(path::AddPrefix),
    StripPrefix(path::StripPrefix),
    StripPrefixRegex(path::StripPrefixRegex),
    ReplacePath(path::ReplacePath),
    ReplacePathRegex(path::ReplacePathRegex),
    RedirectScheme(redirect::RedirectScheme),
    RedirectRegex(redirect::RedirectRegex),
    Headers(Box<headers::Headers>),
    BasicAuth(basic_auth::BasicAuth),
    IpAllowList(ip::IpAllowList),
    RateLimit(rate_limit::RateLimit),
    InFlightReq(in_flight::InFlightReq),
    Buffering(buffering::Buffering),
    Compress(compress::Compress),
    Retry(retry::Retry),
}

/// State that outlives configuration reloads (rate-limit buckets, in-flight counters), keyed by
/// middleware name, so that a reload does not reset a client's budget. Entries are weak: the
/// state of a middleware that no snapshot uses any more is dropped with its last snapshot.
#[derive(Debug, Default)]
pub struct MiddlewareState {
    rate_limits: Mutex<HashMap<String, Weak<rate_limit::Store>>>,
    in_flight: Mutex<HashMap<String, Weak<in_flight::Store>>>,
}

impl MiddlewareState {
    fn rate_limit_store(&self, name: &str) -> Arc<rate_limit::Store> {
        shared_store(&self.rate_limits, name, rate_limit::Store::new)
    }

    fn in_flight_store(&self, name: &str) -> Arc<in_flight::Store> {
        shared_store(&self.in_flight, name, in_flight::Store::new)
    }
}

/// The live store registered under `name`, or a new one.
fn shared_store<T>(
    map: &Mutex<HashMap<String, Weak<T>>>,
    name: &str,
    new: impl FnOnce() -> T,
) -> Arc<T> {
    // A poisoned lock only means another compile panicked mid-insert; the map is still usable.
    let mut map = map.lock().unwrap_or_else(|e| e.into_inner());
    map.retain(|_, w| w.strong_count() > 0);
    if let Some(store) = map.get(name).and_then(Weak::upgrade) {
        return store;
    }
    let store = Arc::new(new());
    map.insert(name.to_owned(), Arc::downgrade(&store));
    store
}

/// Resolves a middleware reference (as written in a `chain`) to its compiled form.
pub type Resolve<'a> = dyn FnMut(&str) -> Result<Arc<Middleware>, String> + 'a;

impl Middleware {
    /// Compiles one middleware definition. `resolve` compiles (or fetches) referenced middlewares.
    /// The error says what is wrong with the definition; the caller adds the name and file.
    pub fn compile(
        name: &str,
        cfg: &MiddlewareConfig,
        state: &MiddlewareState,
        resolve: &mut Resolve<'_>,
    ) -> Result<Middleware, String> {
        let kind = match cfg {
            MiddlewareConfig::Chain(c) => Kind::Chain(
                c.middlewares
                    .iter()
                    .map(|m| resolve(m))
                    .collect::<Result<_, _>>()?,
            ),
            MiddlewareConfig::AddPrefix(c) => Kind::AddPrefix(path::AddPrefix::compile(c)?),
            MiddlewareConfig::StripPrefix(c) => Kind::StripPrefix(path::StripPrefix::compile(c)?),
            MiddlewareConfig::StripPrefixRegex(c) => {
                Kind::StripPrefixRegex(path::StripPrefixRegex::compile(c)?)
            }
            MiddlewareConfig::ReplacePath(c) => Kind::ReplacePath(path::ReplacePath::compile(c)?),
            MiddlewareConfig::ReplacePathRegex(c) => {
                Kind::ReplacePathRegex(path::ReplacePathRegex::compile(c)?)
            }
            MiddlewareConfig::RedirectScheme(c) => {
                Kind::RedirectScheme(redirect::RedirectScheme::compile(c)?)
            }
            MiddlewareConfig::RedirectRegex(c) => {
                Kind::RedirectRegex(redirect::RedirectRegex::compile(c)?)
            }
            MiddlewareConfig::Headers(c) => Kind::Headers(Box::new(headers::Headers::compile(c)?)),
            MiddlewareConfig::BasicAuth(c) => Kind::BasicAuth(basic_auth::BasicAuth::compile(c)?),
            MiddlewareConfig::IpAllowList(c) => Kind::IpAllowList(ip::IpAllowList::compile(c)?),
            MiddlewareConfig::RateLimit(c) => Kind::RateLimit(rate_limit::RateLimit::compile(
                c,
                state.rate_limit_store(name),
            )?),
            MiddlewareConfig::InFlightReq(c) => Kind::InFlightReq(in_flight::InFlightReq::compile(
                c,
                state.in_flight_store(name),
            )?),
            MiddlewareConfig::Buffering(c) => Kind::Buffering(buffering::Buffering::compile(c)?),
            MiddlewareConfig::Compress(c) => Kind::Compress(compress::Compress::compile(c)?),
            MiddlewareConfig::Retry(c) => Kind::Retry(retry::Retry::compile(c)?),
        };
        Ok(Middleware {
            name: name.into(),
            kind,
        })
    }

    /// The members of a `chain` (routers flatten chains when compiled).
    pub fn chain_members(&self) -> Option<&[Arc<Middleware>]> {
        match &self.kind {
            Kind::Chain(list) => Some(list),
            _ => None,
        }
    }

    /// Runs this middleware around the rest of the chain.
    pub async fn handle(&self, req: Request, ctx: &mut RequestCtx, next: Next<'_>) -> Response {
        match &self.kind {
            Kind::Chain(list) => {
                // Routers flatten chains, so this only runs for a chain used some other way:
                // its members run first, then whatever followed the chain.
                let mut all: Vec<Arc<Middleware>> = list.clone();
                all.extend(next.rest.iter().cloned());
                Next {
                    rest: &all,
                    service: next.service,
                }
                .run(req, ctx)
                .await
            }
            Kind::AddPrefix(m) => m.handle(req, ctx, next).await,
            Kind::StripPrefix(m) => m.handle(req, ctx, next).await,
            Kind::StripPrefixRegex(m) => m.handle(req, ctx, next).await,
            Kind::ReplacePath(m) => m.handle(req, ctx, next).await,
            Kind::ReplacePathRegex(m) => m.handle(req, ctx, next).await,
            Kind::RedirectScheme(m) => m.handle(req, ctx, next).await,
            Kind::RedirectRegex(m) => m.handle(req, ctx, next).await,
            Kind::Headers(m) => m.handle(req, ctx, next).await,
            Kind::BasicAuth(m) => m.handle(req, ctx, next).await,
            Kind::IpAllowList(m) => m.handle(req, ctx, next).await,
            Kind::RateLimit(m) => m.handle(req, ctx, next).await,
            Kind::InFlightReq(m) => m.handle(req, ctx, next).await,
            Kind::Buffering(m) => m.handle(req, ctx, next).await,
            Kind::Compress(m) => m.handle(req, ctx, next).await,
            Kind::Retry(m) => m.handle(req, ctx, next).await,
        }
    }
}

/// The rest of a router's pipeline: the remaining middlewares, then the service.
#[derive(Clone, Copy)]
pub struct Next<'a> {
    pub rest: &'a [Arc<Middleware>],
    pub service: &'a Service,
}

impl<'a> Next<'a> {
    pub fn new(rest: &'a [Arc<Middleware>], service: &'a Service) -> Self {
        Next { rest, service }
    }

    /// Passes the request on. Boxed because the pipeline is recursive.
    pub fn run<'b>(
        self,
        req: Request,
        ctx: &'b mut RequestCtx,
    ) -> Pin<Box<dyn Future<Output = Response> + Send + 'b>>
    where
        'a: 'b,
    {
        Box::pin(async move {
            match self.rest.split_first() {
                Some((first, rest)) => {
                    first
                        .handle(
                            req,
                            ctx,
                            Next {
                                rest,
                                service: self.service,
                            },
                        )
                        .await
                }
                None => self.service.call(req, ctx).await,
            }
        })
    }
}

/// The host the client asked for, with its port if it sent one: the URI's authority (HTTP/2,
/// absolute-form) or the Host header, as Go's `req.Host`.
pub(crate) fn request_host(req: &Request) -> &str {
    req.uri()
        .authority()
        .map(|a| a.as_str())
        .or_else(|| {
            req.headers()
                .get(header::HOST)
                .and_then(|h| h.to_str().ok())
        })
        .unwrap_or("")
}

/// A response made by a middleware: `status`, a plain-text body, and no caching surprises.
pub(crate) fn reply(status: StatusCode, text: &'static str) -> Response {
    let mut resp = http::Response::new(Body::full(bytes::Bytes::from_static(text.as_bytes())));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}

/// Go's `http.StatusText`, which Traefik's middlewares use as response bodies.
pub(crate) fn status_text(status: StatusCode) -> &'static str {
    status.canonical_reason().unwrap_or("")
}
