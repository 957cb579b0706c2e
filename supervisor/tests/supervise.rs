//! Supervision with real child processes: `child-fixture` (this crate's test program) exits,
//! crashes, ignores SIGTERM, prints lines or leaves orphans on request. Every process started
//! here is stopped by the supervisor's stop sequence or killed on drop.
#![allow(clippy::unwrap_used)]

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use gantry_supervisor::k3s::process::Stream;
use gantry_supervisor::k3s::reaper::{self, Managed};
use gantry_supervisor::k3s::{
    CommandSpec, OsProcesses, Policy, ProcessControl, State, Supervised, supervise,
};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

const FIXTURE: &str = env!("CARGO_BIN_EXE_child-fixture");
const DEADLINE: Duration = Duration::from_secs(30);

fn spec(args: &[&str]) -> (CommandSpec, mpsc::UnboundedReceiver<(Stream, String)>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let mut s = CommandSpec::new(FIXTURE, args);
    s.sink = Some(Arc::new(move |stream, line: &str| {
        let _ = tx.send((stream, line.to_owned()));
    }));
    (s, rx)
}

fn fast_policy() -> Policy {
    Policy {
        initial_backoff: Duration::from_millis(50),
        max_backoff: Duration::from_millis(400),
        factor: 2,
        stable_after: Duration::from_secs(60),
        crash_loop_restarts: 4,
        crash_loop_window: Duration::from_secs(60),
        stop_timeout: Duration::from_secs(5),
    }
}

fn ctl() -> Arc<dyn ProcessControl> {
    Arc::new(OsProcesses::for_k3s(None))
}

/// Waits (with a deadline) for a state matching `pred`, returning it.
async fn wait_state(s: &mut Supervised, pred: impl Fn(&State) -> bool) -> State {
    tokio::time::timeout(DEADLINE, async {
        loop {
            let cur = s.state.borrow_and_update().clone();
            if pred(&cur) {
                return cur;
            }
            if s.state.changed().await.is_err() {
                let last = s.state.borrow().clone();
                assert!(pred(&last), "supervisor ended in {last:?}");
                return last;
            }
        }
    })
    .await
    .expect("state not reached before the deadline")
}

async fn wait_line(rx: &mut mpsc::UnboundedReceiver<(Stream, String)>, want: &str) {
    tokio::time::timeout(DEADLINE, async {
        while let Some((_, l)) = rx.recv().await {
            if l == want {
                return;
            }
        }
        panic!("output ended before {want:?}");
    })
    .await
    .expect("line not printed before the deadline");
}

#[tokio::test]
async fn exits_are_restarted_with_exponential_backoff_into_a_crash_loop() {
    let (s, _rx) = spec(&["exit", "3"]);
    let stop = CancellationToken::new();
    let started = Instant::now();
    let mut sup = supervise(ctl(), s, fast_policy(), stop.clone());
    let crash = wait_state(&mut sup, |st| matches!(st, State::CrashLoop { .. })).await;
    let State::CrashLoop {
        last_exit,
        delay,
        restarts,
    } = crash
    else {
        unreachable!()
    };
    assert_eq!(last_exit, "exit code 3");
    assert_eq!(
        delay,
        Duration::from_millis(400),
        "crash loop retries at the maximum backoff"
    );
    assert_eq!(restarts, 4);
    // Three backoffs before the fourth exit: 50 + 100 + 200 ms at least.
    assert!(
        started.elapsed() >= Duration::from_millis(350),
        "{:?}",
        started.elapsed()
    );
    stop.cancel();
    wait_state(&mut sup, |st| matches!(st, State::Stopped { .. })).await;
    sup.join().await;
}

#[tokio::test]
async fn backoff_states_double() {
    let (s, _rx) = spec(&["exit", "1"]);
    let stop = CancellationToken::new();
    let mut sup = supervise(ctl(), s, fast_policy(), stop.clone());
    let mut seen = Vec::new();
    tokio::time::timeout(DEADLINE, async {
        loop {
            let st = sup.state.borrow_and_update().clone();
            match st {
                State::BackingOff { delay, .. } if seen.last() != Some(&delay) => seen.push(delay),
                State::CrashLoop { .. } => break,
                _ => {}
            }
            sup.state.changed().await.unwrap();
        }
    })
    .await
    .unwrap();
    let ms: Vec<u128> = seen.iter().map(Duration::as_millis).collect();
    assert_eq!(ms, [50, 100, 200]);
    stop.cancel();
    sup.join().await;
}

#[tokio::test]
async fn a_crash_is_reported_with_its_signal() {
    let (s, _rx) = spec(&["crash"]);
    let stop = CancellationToken::new();
    let mut sup = supervise(ctl(), s, fast_policy(), stop.clone());
    let st = wait_state(&mut sup, |st| matches!(st, State::BackingOff { .. })).await;
    assert!(
        matches!(&st, State::BackingOff { last_exit, .. } if last_exit == "killed by SIGABRT"),
        "{st:?}"
    );
    stop.cancel();
    sup.join().await;
}

#[tokio::test]
async fn a_missing_program_backs_off_too() {
    let s = CommandSpec::new("/nonexistent/k3s", &["server"]);
    let stop = CancellationToken::new();
    let mut sup = supervise(ctl(), s, fast_policy(), stop.clone());
    let st = wait_state(&mut sup, |st| matches!(st, State::BackingOff { .. })).await;
    assert!(
        matches!(&st, State::BackingOff { last_exit, .. } if last_exit.contains("cannot start /nonexistent/k3s")),
        "{st:?}"
    );
    stop.cancel();
    sup.join().await;
}

#[tokio::test]
async fn stop_is_sigterm_then_sigkill_after_the_timeout() {
    let (s, mut rx) = spec(&["ignore-term"]);
    let stop = CancellationToken::new();
    let policy = Policy {
        stop_timeout: Duration::from_millis(500),
        ..fast_policy()
    };
    let mut sup = supervise(ctl(), s, policy, stop.clone());
    wait_line(&mut rx, "ready").await;
    let t = Instant::now();
    stop.cancel();
    let st = wait_state(&mut sup, |st| matches!(st, State::Stopped { .. })).await;
    assert_eq!(
        st,
        State::Stopped {
            last_exit: Some("killed by SIGKILL".to_owned())
        }
    );
    assert!(
        t.elapsed() >= Duration::from_millis(500),
        "{:?}",
        t.elapsed()
    );
    // It really got (and ignored) the SIGTERM first.
    wait_line(&mut rx, "ignoring SIGTERM").await;
    sup.join().await;
}

#[tokio::test]
async fn a_graceful_stop_waits_for_the_process() {
    let (s, mut rx) = spec(&["slow-stop", "300"]);
    let stop = CancellationToken::new();
    let mut sup = supervise(ctl(), s, fast_policy(), stop.clone());
    wait_line(&mut rx, "ready").await;
    let t = Instant::now();
    stop.cancel();
    let st = wait_state(&mut sup, |st| matches!(st, State::Stopped { .. })).await;
    assert_eq!(
        st,
        State::Stopped {
            last_exit: Some("exit code 0".to_owned())
        }
    );
    let took = t.elapsed();
    assert!(
        took >= Duration::from_millis(300) && took < Duration::from_secs(5),
        "{took:?}"
    );
    sup.join().await;
}

#[tokio::test]
async fn restart_on_request_stops_and_starts_again() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("starts");
    let (s, mut rx) = spec(&["count", file.to_str().unwrap()]);
    let stop = CancellationToken::new();
    let mut sup = supervise(ctl(), s, fast_policy(), stop.clone());
    wait_line(&mut rx, "ready").await;
    let first = match wait_state(&mut sup, State::is_running).await {
        State::Running { pid, restarts } => {
            assert_eq!(restarts, 0);
            pid
        }
        _ => unreachable!(),
    };
    assert!(sup.restart().await);
    let second = wait_state(&mut sup, |st| {
        matches!(st, State::Running { restarts: 1, .. })
    })
    .await;
    let State::Running { pid, .. } = second else {
        unreachable!()
    };
    assert_ne!(pid, first);
    wait_line(&mut rx, "ready").await;
    let starts = std::fs::read_to_string(&file).unwrap();
    assert_eq!(starts.lines().count(), 2, "{starts}");
    stop.cancel();
    sup.join().await;
}

#[tokio::test]
async fn output_lines_are_forwarded() {
    let (s, mut rx) = spec(&["print"]);
    let stop = CancellationToken::new();
    let sup = supervise(ctl(), s, fast_policy(), stop.clone());
    let mut got = Vec::new();
    tokio::time::timeout(DEADLINE, async {
        while got.len() < 4 {
            got.push(rx.recv().await.unwrap());
        }
    })
    .await
    .unwrap();
    let has = |stream: Stream, needle: &str| {
        assert!(
            got.iter().any(|(s, l)| *s == stream && l.contains(needle)),
            "{needle:?} on {stream:?} not in {got:?}"
        );
    };
    has(Stream::Stdout, "level=info msg=\"Starting k3s");
    has(Stream::Stderr, "level=warning");
    has(Stream::Stderr, "E1123");
    has(Stream::Stdout, "ready");
    stop.cancel();
    sup.join().await;
}

#[tokio::test]
async fn orphans_are_reaped_by_the_subreaper() {
    reaper::become_subreaper().unwrap();
    assert!(reaper::is_subreaper());
    let managed = Managed::default();
    let reaped = Arc::new(Mutex::new(Vec::new()));
    let r2 = reaped.clone();
    let stop = CancellationToken::new();
    let task = reaper::spawn_reaper(
        managed.clone(),
        Duration::from_millis(200),
        stop.clone(),
        Some(Arc::new(move |pid| r2.lock().unwrap().push(pid))),
    );
    let ctl = OsProcesses::for_k3s(Some(managed.clone()));
    let (s, mut rx) = spec(&["orphan", "300"]);
    let mut child = ctl.spawn(&s).unwrap();
    assert!(managed.contains(child.pid()));
    let line = tokio::time::timeout(DEADLINE, rx.recv())
        .await
        .unwrap()
        .unwrap()
        .1;
    let orphan: u32 = line.strip_prefix("orphan ").unwrap().parse().unwrap();
    // The direct child is waited for by its owner, not stolen by the reaper.
    assert_eq!(child.wait().await.unwrap().code(), 0);
    assert!(!managed.contains(child.pid()));
    tokio::time::timeout(DEADLINE, async {
        while !reaped.lock().unwrap().contains(&orphan) {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("the orphan was not reaped");
    assert!(!std::path::Path::new(&format!("/proc/{orphan}")).exists());
    assert!(!reaper::zombie_children().contains(&orphan));
    stop.cancel();
    task.await.unwrap();
}

/// A `MakeWriter` collecting formatted events.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Captured {
    type Writer = Captured;
    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

// current_thread runtime: the line forwarders run on this thread, under this subscriber.
#[tokio::test(flavor = "current_thread")]
async fn k3s_lines_go_to_tracing_target_k3s_with_their_level() {
    let captured = Captured::default();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(captured.clone())
        .with_ansi(false)
        .with_target(true)
        .with_max_level(tracing::Level::TRACE)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);
    let (s, mut rx) = spec(&["print"]);
    let stop = CancellationToken::new();
    let sup = supervise(ctl(), s, fast_policy(), stop.clone());
    wait_line(&mut rx, "ready").await;
    stop.cancel();
    sup.join().await;
    let text = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    let line_with = |needle: &str| -> String {
        text.lines()
            .find(|l| l.contains(needle))
            .unwrap_or_else(|| panic!("{needle:?} not logged in:\n{text}"))
            .to_owned()
    };
    let info = line_with("Starting k3s v1.36.3+k3s1");
    assert!(info.contains(" INFO k3s:"), "{info}");
    let warn = line_with("fixture warning");
    assert!(warn.contains(" WARN k3s:"), "{warn}");
    let err = line_with("fixture error");
    assert!(err.contains("ERROR k3s:"), "{err}");
}

/// `gantry run`'s cluster with a "k3s" that is `child-fixture` (it exits at once on k3s's
/// arguments): the real start path (config written, subreaper, supervision) runs, the crash loop
/// reaches the dashboard and the wizard's first step, and stop ends everything. What is not
/// exercised: readiness, apply and the Ingress watch (they need a real k3s: `tests/k3s_real.rs`).
#[tokio::test]
async fn k3s_cluster_reports_a_crash_looping_k3s_to_dashboard_and_wizard() {
    use gantry_supervisor::cluster::{
        ChatAdmin, Cluster, ClusterState, ClusterStep, InstallPlan, StepOutcome,
    };
    use gantry_supervisor::ingress::ProxyContext;
    use gantry_supervisor::k3s::StartOptions;
    use gantry_supervisor::kube::cluster::{K3sCluster, K3sClusterOptions};
    use gantry_supervisor::kube::install::Timeouts;
    use gantry_supervisor::kube::watch::RouteTarget;

    struct NoRoutes;
    impl RouteTarget for NoRoutes {
        fn context(&self) -> ProxyContext {
            ProxyContext::default()
        }
        fn set(&self, _: gantry_proxy::config::DynamicConfig) -> Result<u64, String> {
            Err("no cluster routes expected".into())
        }
    }

    let dir = tempfile::tempdir().unwrap();
    let mut k3s = StartOptions::new(FIXTURE.into(), dir.path());
    k3s.policy = fast_policy();
    let cluster = K3sCluster::new(K3sClusterOptions {
        k3s,
        timeouts: Timeouts::default(),
        status_interval: Duration::from_secs(5),
        retry: Duration::from_millis(200),
        secrets_file: dir.path().join("cluster-secrets.json"),
    });
    let stop = CancellationToken::new();
    let task = cluster
        .spawn(Arc::new(NoRoutes), stop.clone())
        .expect("the fixture binary exists");
    // k3s's configuration is written before the first start.
    let config_file = dir.path().join("k3s/config.yaml");
    let t0 = Instant::now();
    while !config_file.exists() {
        assert!(t0.elapsed() < DEADLINE, "no {}", config_file.display());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let config = std::fs::read_to_string(&config_file).unwrap();
    assert!(
        config.contains("traefik") && config.contains("servicelb"),
        "{config}"
    );

    let plan = InstallPlan {
        domain: "chat.example.com".into(),
        chat_admin: ChatAdmin {
            name: "Chat Admin".into(),
            username: "rcadmin".into(),
            email: "rc@example.com".into(),
            password: "another long passphrase".into(),
        },
    };
    let seen = Arc::new(Mutex::new(Vec::new()));
    let s2 = seen.clone();
    let report = move |step, outcome| s2.lock().unwrap().push((step, outcome));
    let crash_looping = || {
        seen.lock().unwrap().iter().any(|(s, o)| {
            *s == ClusterStep::ClusterStarted
                && matches!(o, StepOutcome::Failed(m) if m.contains("crash-looping"))
        })
    };
    let install = cluster.install(&plan, &report);
    let deadline = tokio::time::sleep(DEADLINE);
    tokio::pin!(install, deadline);
    loop {
        tokio::select! {
            () = &mut install => panic!("the install cannot finish without a k3s"),
            () = &mut deadline => panic!("no crash loop reported: {:?}", seen.lock().unwrap()),
            () = tokio::time::sleep(Duration::from_millis(50)) => {
                if crash_looping() { break }
            }
        }
    }
    let status = cluster.status();
    assert_eq!(status.state, ClusterState::Failed, "{status:?}");
    assert!(
        status.message.contains("crash-looping"),
        "{}",
        status.message
    );
    // The stack's credentials were made for the install, privately.
    assert!(dir.path().join("cluster-secrets.json").is_file());

    stop.cancel();
    tokio::time::timeout(DEADLINE, task)
        .await
        .expect("the cluster stops within the deadline")
        .unwrap();
}
