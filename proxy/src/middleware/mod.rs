//! HTTP middlewares (Traefik's `http.middlewares`), compiled once per configuration snapshot.
//!
//! A router's middlewares run in order around its service: each gets the request, may answer it
//! itself (redirect, 401, 403, 429, ...), or passes it on with [`Next::run`] and may then change the
//! response. Compiled middlewares are immutable; state that must outlive a reload (rate-limit buckets,
//! in-flight counters) lives behind `Arc`s inside them.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use crate::body::{Request, Response};
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
}

/// State that outlives configuration reloads (rate-limit buckets, in-flight counters), keyed by
/// middleware name, so that a reload does not reset a client's budget.
#[derive(Debug, Default)]
pub struct MiddlewareState {}

/// Resolves a middleware reference (as written in a `chain`) to its compiled form.
pub type Resolve<'a> = dyn FnMut(&str) -> Result<Arc<Middleware>, String> + 'a;

impl Middleware {
    /// Compiles one middleware definition. `resolve` compiles (or fetches) referenced middlewares.
    /// The error says what is wrong with the definition; the caller adds the name and file.
    pub fn compile(
        name: &str,
        cfg: &MiddlewareConfig,
        _state: &MiddlewareState,
        resolve: &mut Resolve<'_>,
    ) -> Result<Middleware, String> {
        let kind = match cfg {
            MiddlewareConfig::Chain(c) => Kind::Chain(
                c.middlewares
                    .iter()
                    .map(|m| resolve(m))
                    .collect::<Result<_, _>>()?,
            ),
            other => return Err(format!("middleware type {other:?} is not implemented yet")),
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
        }
    }

    /// Runs this middleware around the rest of the chain.
    pub async fn handle(&self, req: Request, ctx: &mut RequestCtx, next: Next<'_>) -> Response {
        match &self.kind {
            Kind::Chain(list) => {
                // A chain's members run first, then whatever followed the chain.
                let mut all: Vec<Arc<Middleware>> = list.clone();
                all.extend(next.rest.iter().cloned());
                Next {
                    rest: &all,
                    service: next.service,
                }
                .run(req, ctx)
                .await
            }
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
