//! `gantry build`: the command-line face of the `gantry-image` crate (progress, summary).

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use gantry_image::{BuildOptions, Cache, Config, Progress};
use indicatif::{ProgressBar, ProgressStyle};
use tokio_util::sync::CancellationToken;

#[derive(Debug, clap::Args)]
pub(crate) struct BuildArgs {
    /// Directory for the outputs (created).
    #[arg(long, short)]
    output: PathBuf,
    /// Pinned inputs (default: the image.toml compiled into gantry, see image/image.toml).
    #[arg(long, short)]
    config: Option<PathBuf>,
    /// Build without k3s and the app images (the image is marked `no-cluster`).
    #[arg(long)]
    no_cluster: bool,
    /// Download cache (default: ~/.cache/gantry).
    #[arg(long)]
    cache: Option<PathBuf>,
    /// Keep the work directory (DIR/.gantry-work) for inspection.
    #[arg(long)]
    keep_work: bool,
}

struct Bars {
    current: std::sync::Mutex<Option<ProgressBar>>,
}

impl Progress for Bars {
    fn start(&self, step: &str) {
        let bar = ProgressBar::new_spinner().with_message(step.to_string());
        bar.set_style(
            ProgressStyle::with_template("{spinner} {msg} {elapsed}")
                .unwrap_or_else(|_| ProgressStyle::default_spinner()),
        );
        bar.enable_steady_tick(Duration::from_millis(200));
        if let Ok(mut c) = self.current.lock() {
            *c = Some(bar);
        }
    }

    fn finish(&self, step: &str, elapsed: Duration, detail: &str) {
        let line = format!("✔ {step:<40} {:>6.1}s  {detail}", elapsed.as_secs_f64());
        let bar = self.current.lock().ok().and_then(|mut c| c.take());
        match bar {
            // Without a terminal indicatif draws nothing: print the line for CI logs.
            Some(bar) if console_is_tty() => bar.finish_with_message(line),
            Some(bar) => {
                bar.finish_and_clear();
                eprintln!("{line}");
            }
            None => eprintln!("{line}"),
        }
    }
}

fn console_is_tty() -> bool {
    use std::io::IsTerminal;
    std::io::stderr().is_terminal()
}

pub(crate) fn run(args: BuildArgs) -> anyhow::Result<()> {
    let config = match &args.config {
        Some(p) => Config::load(p)?,
        None => Config::defaults(&std::env::current_dir()?)?,
    };
    let gantry_binary = match &config.gantry.path {
        Some(p) => p.clone(),
        None => std::env::current_exe().context("finding the running gantry binary")?,
    };
    let output = absolute(&args.output)?;
    let cache = Cache::new(match &args.cache {
        Some(c) => absolute(c)?,
        None => Cache::default_root(),
    });
    let opts = BuildOptions {
        config,
        output,
        cache,
        no_cluster: args.no_cluster,
        version: env!("CARGO_PKG_VERSION").to_string(),
        gantry_binary,
        source_date_epoch: source_date_epoch(),
        keep_work: args.keep_work,
    };
    let cancel = CancellationToken::new();
    let signals = cancel_on_signal(cancel.clone());
    eprintln!(
        "Building gantry {} ({}) into {}",
        opts.version,
        if opts.no_cluster {
            "no-cluster"
        } else {
            "full"
        },
        opts.output.display()
    );
    let bars = Bars {
        current: std::sync::Mutex::new(None),
    };
    let result = gantry_image::build(&opts, &bars, &cancel);
    if let Ok(Some(bar)) = bars.current.lock().map(|mut c| c.take()) {
        bar.abandon();
    }
    cancel.cancel(); // ends the signal thread
    let _ = signals.join();
    let report = result?;
    let total: Duration = report.steps.iter().map(|(_, d)| *d).sum();
    println!(
        "\nBuilt gantry {} ({}) in {:.0} s; seed {}",
        report.manifest.version,
        report.manifest.variant,
        total.as_secs_f64(),
        &report.manifest.build_seed[..16]
    );
    for (path, size) in &report.files {
        println!("  {:>10}  {}", human(*size), path.display());
    }
    println!(
        "\nTry it (changes are discarded; image/README.md has the full command): \
         qemu-system-x86_64 -machine q35 -cpu max -m 2048 -smp 2 -bios /usr/share/ovmf/OVMF.fd \
         -snapshot -drive file={},if=virtio \
         -nic user,model=virtio-net-pci,hostfwd=tcp:127.0.0.1:8443-:443 -nographic",
        report
            .files
            .iter()
            .find(|(p, _)| p.extension().is_some_and(|e| e == "qcow2"))
            .map_or_else(String::new, |(p, _)| p.display().to_string())
    );
    Ok(())
}

fn absolute(p: &std::path::Path) -> anyhow::Result<PathBuf> {
    Ok(std::path::absolute(p)?)
}

/// `SOURCE_DATE_EPOCH`, else the time of the current git commit, else now (with a warning).
fn source_date_epoch() -> u64 {
    if let Some(v) = std::env::var("SOURCE_DATE_EPOCH")
        .ok()
        .and_then(|v| v.trim().parse().ok())
    {
        return v;
    }
    let git = std::process::Command::new("git")
        .args(["log", "-1", "--format=%ct"])
        .stderr(std::process::Stdio::null())
        .output();
    if let Some(v) = git
        .ok()
        .filter(|o| o.status.success())
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
    {
        return v;
    }
    tracing::warn!(
        "no SOURCE_DATE_EPOCH and no git commit: using the current time (not reproducible)"
    );
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Cancels the build on SIGINT or SIGTERM (running tools are stopped, mounts undone).
fn cancel_on_signal(cancel: CancellationToken) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let Ok(rt) = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        else {
            return;
        };
        rt.block_on(async {
            let term = async {
                match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                    Ok(mut s) => {
                        s.recv().await;
                    }
                    Err(_) => std::future::pending::<()>().await,
                }
            };
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {
                    eprintln!("\ninterrupted: stopping the build");
                    cancel.cancel();
                }
                _ = term => cancel.cancel(),
                () = cancel.cancelled() => {}
            }
        });
    })
}

fn human(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["B", "KiB", "MiB", "GiB"];
    let mut v = bytes as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    format!("{v:.1} {}", UNITS[u])
}
