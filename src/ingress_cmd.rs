//! `gantry ingress-routes`: what the Kubernetes Ingress provider makes of some YAML files.

use std::path::PathBuf;

use anyhow::Context;
use gantry_supervisor::ingress::{ClusterObjects, Options, translate};

pub(crate) fn run(files: &[PathBuf], show_keys: bool) -> anyhow::Result<()> {
    let mut objs = ClusterObjects::default();
    let mut notes = Vec::new();
    for f in files {
        let text =
            std::fs::read_to_string(f).with_context(|| format!("reading {}", f.display()))?;
        for s in objs.add_yaml(&f.display().to_string(), &text) {
            notes.push(format!("skipped {s}"));
        }
    }
    let t = translate(&objs, &Options::default());
    for w in &t.warnings {
        notes.push(format!("warning: {w}"));
    }
    // Warnings go to stderr (one per skipped object) so stdout stays loadable YAML.
    for n in &notes {
        eprintln!("{n}");
    }
    print!("{}", t.config.to_yaml(show_keys)?);
    Ok(())
}
