//! `gantry`: the appliance's one binary. Subcommands stay thin; the work is in the crates.

mod build_cmd;
mod certs_cmd;
mod cli;
mod ingress_cmd;
mod manifests_cmd;
mod run_cmd;

use clap::Parser;

fn main() -> anyhow::Result<()> {
    let cli = cli::Cli::parse();
    cli::init_tracing(cli.log_format);
    cli.run()
}
