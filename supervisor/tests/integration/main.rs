//! Integration tests of the supervisor, one binary. The ACME tests run a real pebble (Debian
//! package `pebble`) validating through a real proxy on loopback ports.

#![allow(clippy::unwrap_used)]

mod acme;
mod common;
mod external_routes;
mod import;
