//! The proxy alone, for profiling (`valgrind --tool=callgrind`) without building the whole
//! `gantry` binary: `cargo build --release -p gantry-proxy --example profile_proxy`, then
//! `profile_proxy STATIC.yml [WORKERS]`. Same start-up as `gantry proxy` (file provider, no watch);
//! stops on SIGINT. See bench/README.md ("Profiling").

#![allow(clippy::unwrap_used)]

use gantry_proxy::config;
use gantry_proxy::{Proxy, ProxyOptions};

/// The `gantry` binary's allocator (src/main.rs).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    let mut args = std::env::args().skip(1);
    let path = args
        .next()
        .expect("usage: profile_proxy STATIC.yml [WORKERS]");
    let workers = args.next().map(|w| w.parse().expect("WORKERS is a number"));
    let static_cfg = config::load_static(std::path::Path::new(&path)).unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let proxy = Proxy::start(
            static_cfg.clone(),
            ProxyOptions {
                workers,
                certs: None,
            },
        )
        .unwrap();
        if let Some(file) = &static_cfg.providers.file {
            gantry_proxy::provider::load(&proxy, file).unwrap();
        }
        tokio::signal::ctrl_c().await.unwrap();
        proxy.shutdown().await;
    });
}
