//! Keeps one process alive: restart with exponential backoff, a crash-loop state for the UI,
//! restart on request (certificate rotation), and stop with SIGTERM, a timed wait, then SIGKILL.

use std::sync::Arc;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use super::process::{CommandSpec, Exit, ProcessControl, RunningProcess};

/// Restart timing.
#[derive(Debug, Clone)]
pub struct Policy {
    /// First restart delay; doubles (`factor`) per consecutive failure up to `max_backoff`.
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
    pub factor: u32,
    /// A run at least this long counts as healthy: the backoff starts over.
    pub stable_after: Duration,
    /// `crash_loop_restarts` exits within `crash_loop_window` make the state `CrashLoop`
    /// (restarts go on at `max_backoff`, like Kubernetes' CrashLoopBackOff).
    pub crash_loop_restarts: u32,
    pub crash_loop_window: Duration,
    /// SIGTERM, then SIGKILL after this long.
    pub stop_timeout: Duration,
}

impl Default for Policy {
    /// For k3s: it needs tens of seconds to start and stops within seconds.
    fn default() -> Self {
        Policy {
            initial_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(60),
            factor: 2,
            stable_after: Duration::from_secs(120),
            crash_loop_restarts: 5,
            crash_loop_window: Duration::from_secs(300),
            stop_timeout: Duration::from_secs(30),
        }
    }
}

/// What the supervised process is doing (watched by the UI).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum State {
    Starting,
    Running {
        pid: u32,
        /// Restarts since the supervisor started.
        restarts: u32,
    },
    /// Exited; restarting after `delay`.
    BackingOff {
        last_exit: String,
        delay: Duration,
        restarts: u32,
    },
    /// Too many exits in the window: still retried at the maximum backoff.
    CrashLoop {
        last_exit: String,
        delay: Duration,
        restarts: u32,
    },
    Stopping,
    Stopped {
        last_exit: Option<String>,
    },
}

impl State {
    pub fn is_running(&self) -> bool {
        matches!(self, State::Running { .. })
    }
}

/// Requests to the supervisor task.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Request {
    /// Stop (SIGTERM, wait, SIGKILL) and start again at once (certificate rotation, config).
    Restart,
}

/// A handle on a supervised process.
#[derive(Debug)]
pub struct Supervised {
    pub state: watch::Receiver<State>,
    requests: mpsc::Sender<Request>,
    task: tokio::task::JoinHandle<()>,
}

impl Supervised {
    pub async fn restart(&self) -> bool {
        self.requests.send(Request::Restart).await.is_ok()
    }

    /// A sender for [`Request`]s (for other tasks, such as the certificate check).
    pub fn requests(&self) -> mpsc::Sender<Request> {
        self.requests.clone()
    }

    /// Waits for the supervisor task to finish (after its stop token fired).
    pub async fn join(self) {
        let _ = self.task.await;
    }
}

/// Starts supervising `spec` until `stop` fires; then the process is stopped gracefully.
pub fn supervise(
    ctl: Arc<dyn ProcessControl>,
    spec: CommandSpec,
    policy: Policy,
    stop: CancellationToken,
) -> Supervised {
    let (state_tx, state) = watch::channel(State::Starting);
    let (requests, rx) = mpsc::channel(8);
    let task = tokio::spawn(run(ctl, spec, policy, stop, state_tx, rx));
    Supervised {
        state,
        requests,
        task,
    }
}

/// The delay before restart number `failures` (1-based) in a row.
pub fn backoff(policy: &Policy, failures: u32) -> Duration {
    let mut d = policy.initial_backoff;
    for _ in 1..failures {
        d = d.saturating_mul(policy.factor.max(1));
        if d >= policy.max_backoff {
            return policy.max_backoff;
        }
    }
    d.min(policy.max_backoff)
}

/// SIGTERM, wait up to `timeout`, then SIGKILL and wait. Returns how it ended.
pub async fn stop_process(p: &mut dyn RunningProcess, timeout: Duration) -> std::io::Result<Exit> {
    let pid = p.pid();
    if let Err(e) = p.signal(Signal::SIGTERM) {
        tracing::warn!(pid, error = %e, "SIGTERM failed");
    }
    match tokio::time::timeout(timeout, p.wait()).await {
        Ok(r) => r,
        Err(_) => {
            tracing::warn!(pid, ?timeout, "did not stop after SIGTERM: sending SIGKILL");
            p.signal(Signal::SIGKILL)?;
            p.wait().await
        }
    }
}

async fn run(
    ctl: Arc<dyn ProcessControl>,
    spec: CommandSpec,
    policy: Policy,
    stop: CancellationToken,
    state: watch::Sender<State>,
    mut requests: mpsc::Receiver<Request>,
) {
    let program = spec.program.display().to_string();
    let mut restarts: u32 = 0;
    let mut failures: u32 = 0;
    let mut exits: Vec<Instant> = Vec::new();
    let mut last_exit: Option<String> = None;
    loop {
        if stop.is_cancelled() {
            break;
        }
        let _ = state.send(State::Starting);
        let started = Instant::now();
        let outcome = match ctl.spawn(&spec) {
            Ok(mut child) => {
                let pid = child.pid();
                tracing::info!(program, pid, restarts, "started");
                let _ = state.send(State::Running { pid, restarts });
                let ended = tokio::select! {
                    r = child.wait() => Ended::Exited(r),
                    _ = stop.cancelled() => Ended::Stop,
                    req = requests.recv() => match req {
                        Some(Request::Restart) => Ended::Restart,
                        None => Ended::Stop,
                    },
                };
                match ended {
                    Ended::Exited(r) => Some(match r {
                        Ok(e) => e.to_string(),
                        Err(e) => format!("wait failed: {e}"),
                    }),
                    Ended::Stop => {
                        let _ = state.send(State::Stopping);
                        let r = stop_process(child.as_mut(), policy.stop_timeout).await;
                        let how = match r {
                            Ok(e) => e.to_string(),
                            Err(e) => format!("stop failed: {e}"),
                        };
                        tracing::info!(program, pid, how, "stopped");
                        last_exit = Some(how);
                        break;
                    }
                    Ended::Restart => {
                        let _ = state.send(State::Stopping);
                        let r = stop_process(child.as_mut(), policy.stop_timeout).await;
                        tracing::info!(program, pid, result = ?r, "restarting on request");
                        restarts += 1;
                        failures = 0;
                        continue;
                    }
                }
            }
            Err(e) => Some(format!("cannot start {program}: {e}")),
        };
        let Some(how) = outcome else { continue };
        let ran = started.elapsed();
        tracing::warn!(program, how, ?ran, "exited");
        last_exit = Some(how.clone());
        let now = Instant::now();
        exits.push(now);
        exits.retain(|t| now.duration_since(*t) <= policy.crash_loop_window);
        failures = if ran >= policy.stable_after {
            1
        } else {
            failures + 1
        };
        restarts += 1;
        let crash_loop = exits.len() as u32 >= policy.crash_loop_restarts;
        let delay = if crash_loop {
            policy.max_backoff
        } else {
            backoff(&policy, failures)
        };
        let _ = state.send(if crash_loop {
            tracing::error!(
                program,
                restarts,
                "crash loop: restarting every {:?}",
                delay
            );
            State::CrashLoop {
                last_exit: how,
                delay,
                restarts,
            }
        } else {
            State::BackingOff {
                last_exit: how,
                delay,
                restarts,
            }
        });
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = stop.cancelled() => break,
            req = requests.recv() => match req {
                // Restart now instead of waiting out the backoff.
                Some(Request::Restart) => {}
                None => break,
            },
        }
    }
    let _ = state.send(State::Stopped { last_exit });
}

enum Ended {
    Exited(std::io::Result<Exit>),
    Stop,
    Restart,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_maximum() {
        let p = Policy {
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_millis(1000),
            ..Policy::default()
        };
        let got: Vec<u128> = (1..=6).map(|n| backoff(&p, n).as_millis()).collect();
        assert_eq!(got, [100, 200, 400, 800, 1000, 1000]);
        assert_eq!(backoff(&p, 1000), Duration::from_millis(1000));
    }
}
