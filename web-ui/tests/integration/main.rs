//! The web UI's handlers in-process, over a real daemon: a real SQLite file in a temporary
//! directory, the real proxy on 127.0.0.1 port 0 (for the routes page and metrics), no CA.
//! Requests go straight to the axum routers (no TLS); cookies are carried by a small jar.

#![allow(clippy::unwrap_used)]

mod external_routes;
mod flows;
mod harness;
mod security;
