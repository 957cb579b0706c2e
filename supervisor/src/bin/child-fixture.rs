//! A test program for the supervision tests: a process that exits, crashes, ignores SIGTERM,
//! stops slowly, leaves an orphan behind or prints log lines, as told on its command line. It is
//! not k3s and does not imitate k3s beyond printing lines in k3s's two log formats.
//!
//! ```text
//! child-fixture exit CODE [DELAY_MS]   exit with CODE after DELAY_MS
//! child-fixture crash                  abort (SIGABRT)
//! child-fixture run                    run until SIGTERM, then exit 0
//! child-fixture slow-stop MS           on SIGTERM, exit 0 after MS
//! child-fixture ignore-term            ignore SIGTERM (only SIGKILL stops it)
//! child-fixture print                  print logrus- and klog-style lines, then run
//! child-fixture orphan MS              start a grandchild that lives MS, then exit 0 at once
//! child-fixture count FILE             append a line to FILE, then run (counts starts)
//! ```
//! Every mode that keeps running prints `ready` on stdout once its signal handling is set up.

use std::time::Duration;

use tokio::signal::unix::{SignalKind, signal};

fn usage() -> ! {
    eprintln!("usage: child-fixture exit|crash|run|slow-stop|ignore-term|print|orphan|count ...");
    std::process::exit(2)
}

async fn run_until_term(after_term: Duration) {
    let Ok(mut term) = signal(SignalKind::terminate()) else {
        std::process::exit(3)
    };
    println!("ready");
    term.recv().await;
    tokio::time::sleep(after_term).await;
    std::process::exit(0)
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let arg = |i: usize| args.get(i).map(String::as_str);
    let num = |i: usize| -> u64 { arg(i).and_then(|s| s.parse().ok()).unwrap_or(0) };
    match arg(0) {
        Some("exit") => {
            let code = arg(1).and_then(|s| s.parse::<i32>().ok()).unwrap_or(1);
            tokio::time::sleep(Duration::from_millis(num(2))).await;
            std::process::exit(code)
        }
        Some("crash") => std::process::abort(),
        Some("run") => run_until_term(Duration::ZERO).await,
        Some("slow-stop") => run_until_term(Duration::from_millis(num(1))).await,
        Some("ignore-term") => {
            // A registered handler replaces the default action (terminate); nothing acts on it.
            let Ok(mut term) = signal(SignalKind::terminate()) else {
                std::process::exit(3)
            };
            println!("ready");
            loop {
                term.recv().await;
                println!("ignoring SIGTERM");
            }
        }
        Some("print") => {
            println!(
                "time=\"2026-11-23T07:00:00Z\" level=info msg=\"Starting k3s v1.36.3+k3s1 (test fixture line)\""
            );
            eprintln!("time=\"2026-11-23T07:00:01Z\" level=warning msg=\"fixture warning\"");
            eprintln!("E1123 07:00:02.000000    4242 fixture.go:1] fixture error");
            run_until_term(Duration::ZERO).await
        }
        Some("orphan") => {
            let Ok(me) = std::env::current_exe() else {
                std::process::exit(3)
            };
            let ms = num(1).to_string();
            match std::process::Command::new(me)
                .args(["exit", "0", &ms])
                .spawn()
            {
                Ok(child) => {
                    println!("orphan {}", child.id());
                    // Exit without waiting: the grandchild is re-parented to the subreaper.
                    std::process::exit(0)
                }
                Err(_) => std::process::exit(3),
            }
        }
        Some("count") => {
            use std::io::Write;
            let Some(path) = arg(1) else { usage() };
            if let Ok(mut f) = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
            {
                let _ = writeln!(f, "start {}", std::process::id());
            }
            run_until_term(Duration::ZERO).await
        }
        _ => usage(),
    }
}
