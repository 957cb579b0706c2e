//! Gantry as a child subreaper: processes k3s starts and leaves behind (containerd shims whose
//! parent exited, hooks) are re-parented to Gantry instead of PID 1, and their zombies are
//! reaped here (containerd's shim does the same: `PR_SET_CHILD_SUBREAPER`, then `waitpid` on
//! `SIGCHLD` until nothing is left, as signals coalesce).
//!
//! tokio reaps the children it spawned itself; reaping one of those here would steal its exit
//! status. So the reaper only takes zombies whose pid is not [`Managed`] and that were already
//! zombies at the previous scan (a freshly spawned child is registered within microseconds).
//! Zombies are found by reading `/proc/<pid>/stat` (state `Z`, parent = this process).

use std::collections::{BTreeSet, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;
use tokio_util::sync::CancellationToken;

/// Pids of children that are waited for by their owner (tokio), not by the reaper.
#[derive(Debug, Clone, Default)]
pub struct Managed(Arc<Mutex<HashSet<u32>>>);

impl Managed {
    pub fn insert(&self, pid: u32) {
        if let Ok(mut s) = self.0.lock() {
            s.insert(pid);
        }
    }
    pub fn remove(&self, pid: u32) {
        if let Ok(mut s) = self.0.lock() {
            s.remove(&pid);
        }
    }
    pub fn contains(&self, pid: u32) -> bool {
        self.0.lock().map(|s| s.contains(&pid)).unwrap_or(true)
    }
}

/// Makes this process the subreaper of its descendants.
pub fn become_subreaper() -> std::io::Result<()> {
    nix::sys::prctl::set_child_subreaper(true).map_err(std::io::Error::from)
}

/// Whether this process is a subreaper.
pub fn is_subreaper() -> bool {
    nix::sys::prctl::get_child_subreaper().unwrap_or(false)
}

/// Zombie children of this process, from `/proc`.
pub fn zombie_children() -> BTreeSet<u32> {
    let me = std::process::id();
    let mut out = BTreeSet::new();
    let Ok(rd) = std::fs::read_dir("/proc") else {
        return out;
    };
    for e in rd.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // `pid (comm) state ppid ...`; comm may contain spaces and parentheses.
        let Some(rest) = stat.rfind(')').map(|i| &stat[i + 1..]) else {
            continue;
        };
        let mut f = rest.split_whitespace();
        let state = f.next();
        let ppid = f.next().and_then(|p| p.parse::<u32>().ok());
        if state == Some("Z") && ppid == Some(me) {
            out.insert(pid);
        }
    }
    out
}

/// Reaps one pid if it is a zombie; returns its status.
fn reap(pid: u32) -> Option<WaitStatus> {
    let p = Pid::from_raw(i32::try_from(pid).ok()?);
    match waitpid(p, Some(WaitPidFlag::WNOHANG)) {
        Ok(WaitStatus::StillAlive) | Err(_) => None,
        Ok(s) => Some(s),
    }
}

/// One scan: reaps unmanaged zombies already seen at the previous scan. Returns those reaped.
pub fn reap_once(managed: &Managed, seen_before: &mut BTreeSet<u32>) -> Vec<u32> {
    let now = zombie_children();
    let mut reaped = Vec::new();
    for pid in &now {
        if seen_before.contains(pid) && !managed.contains(*pid) && reap(*pid).is_some() {
            tracing::debug!(pid, "reaped an orphaned process");
            reaped.push(*pid);
        }
    }
    *seen_before = now.into_iter().filter(|p| !reaped.contains(p)).collect();
    reaped
}

/// Runs the reaper until `stop`: a scan on every SIGCHLD and every `interval`. `on_reap` hears
/// about each reaped pid (tests, the UI's event log).
pub fn spawn_reaper(
    managed: Managed,
    interval: Duration,
    stop: CancellationToken,
    on_reap: Option<Arc<dyn Fn(u32) + Send + Sync>>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut sigchld =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::child()).ok();
        let mut seen = BTreeSet::new();
        loop {
            let chld = async {
                match sigchld.as_mut() {
                    Some(s) => {
                        s.recv().await;
                    }
                    None => std::future::pending::<()>().await,
                }
            };
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = chld => {
                    // A zombie must survive one scan before it is taken: scan again shortly.
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                _ = tokio::time::sleep(interval) => {}
            }
            for _ in 0..2 {
                for pid in reap_once(&managed, &mut seen) {
                    if let Some(f) = &on_reap {
                        f(pid);
                    }
                }
                if seen.is_empty() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    })
}
