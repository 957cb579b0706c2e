//! `gantry`: the appliance's one binary. Subcommands stay thin; the work is in the crates.

mod build_cmd;
mod certs_cmd;
mod cli;
mod ingress_cmd;
mod manifests_cmd;
mod run_cmd;

use clap::Parser;

/// mimalloc instead of glibc's malloc: cheaper per-request allocations in the proxy (see the root
/// Cargo.toml and BENCHMARKS.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> anyhow::Result<()> {
    let cli = cli::Cli::parse();
    cli::init_tracing(cli.log_format);
    cli.run()
}
