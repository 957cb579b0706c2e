//! `gantry manifests`: prints (or writes) the stack Gantry applies to k3s, like `helm template`.

use std::path::PathBuf;

use anyhow::Context;
use gantry_supervisor::manifests::{Pins, StackSecrets, StackSettings, render};

pub(crate) fn run(domain: &str, replicas: i32, out: Option<PathBuf>) -> anyhow::Result<()> {
    let pins = Pins::embedded()?;
    let mut settings = StackSettings::new(domain);
    settings.rocketchat_replicas = replicas;
    // Without the appliance's store there are no saved credentials: fresh ones are generated,
    // so the output is complete and valid, but each run prints different Secrets.
    let secrets = StackSecrets::generate();
    let stack = render(&settings, &secrets, &pins)?;
    match out {
        None => print!("{}", stack.to_yaml()?),
        Some(dir) => {
            let files = stack
                .write_dir(&dir)
                .with_context(|| format!("writing the manifests to {}", dir.display()))?;
            for f in files {
                eprintln!("wrote {}", f.display());
            }
        }
    }
    Ok(())
}
