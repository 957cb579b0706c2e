//! Integration tests of the proxy: one test binary (`cargo test -p gantry-proxy --test integration`)
//! that starts the proxy in-process on 127.0.0.1 port 0 against real upstreams (in-process hyper
//! servers, a tokio-tungstenite WebSocket server, nginx from Debian) and real clients.
//!
//! Modules follow the numbered points of the proxy's specification (issue 2); middlewares have their
//! own test binary (`tests/middlewares.rs`).

// A test binary has no public API: `pub` in its modules only shares helpers between them.
#![allow(unreachable_pub)]
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

mod balancing;
mod config_errors;
mod forwarded;
mod nginx;
mod observability;
mod protection;
mod protocols;
mod reload;
mod routing;
mod shutdown;
mod tls;
