//! Process control behind a small trait: spawn, signal, wait. [`OsProcesses`] runs real child
//! processes (tokio) with their output forwarded line by line into tracing (target `k3s` for
//! k3s) and to an optional sink (the UI's log tail, tests).

use std::future::Future;
use std::io;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;

use nix::sys::signal::Signal;
use nix::unistd::Pid;
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};

/// Where a line of output came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
}

/// Receives every line a supervised process prints (without the newline).
pub type LineSink = Arc<dyn Fn(Stream, &str) + Send + Sync>;

/// What to run.
#[derive(Clone)]
pub struct CommandSpec {
    pub program: PathBuf,
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    /// Extra receiver of output lines (besides tracing).
    pub sink: Option<LineSink>,
}

impl std::fmt::Debug for CommandSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CommandSpec")
            .field("program", &self.program)
            .field("args", &self.args)
            .finish_non_exhaustive()
    }
}

impl CommandSpec {
    pub fn new(program: impl Into<PathBuf>, args: &[&str]) -> CommandSpec {
        CommandSpec {
            program: program.into(),
            args: args.iter().map(|s| (*s).to_owned()).collect(),
            env: Vec::new(),
            sink: None,
        }
    }
}

/// How a process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    Code(i32),
    Signal(i32),
}

impl std::fmt::Display for Exit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Exit::Code(c) => write!(f, "exit code {c}"),
            Exit::Signal(s) => match Signal::try_from(*s) {
                Ok(sig) => write!(f, "killed by {sig}"),
                Err(_) => write!(f, "killed by signal {s}"),
            },
        }
    }
}

impl Exit {
    /// The shell's convention: the code, or 128 + the signal.
    pub fn code(self) -> i32 {
        match self {
            Exit::Code(c) => c,
            Exit::Signal(s) => 128 + s,
        }
    }
}

pub type WaitFuture<'a> = Pin<Box<dyn Future<Output = io::Result<Exit>> + Send + 'a>>;

/// A running child.
pub trait RunningProcess: Send {
    fn pid(&self) -> u32;
    fn signal(&mut self, sig: Signal) -> io::Result<()>;
    /// Resolves when the process has exited (and was reaped).
    fn wait(&mut self) -> WaitFuture<'_>;
}

/// Starts processes.
pub trait ProcessControl: Send + Sync {
    fn spawn(&self, spec: &CommandSpec) -> io::Result<Box<dyn RunningProcess>>;
}

/// Real processes. Children are killed if their handle is dropped (no strays after a panic),
/// and each is its own process group leader, so a terminal's Ctrl-C reaches Gantry only.
#[derive(Debug, Clone)]
pub struct OsProcesses {
    /// The tracing target of forwarded lines is always `k3s` for this controller (tracing
    /// targets are static); other programs get `child`.
    pub k3s_target: bool,
    /// Pids of live children, excluded from the orphan reaper (see `reaper`).
    pub managed: Option<super::reaper::Managed>,
}

impl OsProcesses {
    pub fn for_k3s(managed: Option<super::reaper::Managed>) -> OsProcesses {
        OsProcesses {
            k3s_target: true,
            managed,
        }
    }
}

struct OsChild {
    child: tokio::process::Child,
    pid: u32,
    managed: Option<super::reaper::Managed>,
    readers: Vec<tokio::task::JoinHandle<()>>,
}

impl RunningProcess for OsChild {
    fn pid(&self) -> u32 {
        self.pid
    }

    fn signal(&mut self, sig: Signal) -> io::Result<()> {
        let pid = i32::try_from(self.pid)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "pid out of range"))?;
        nix::sys::signal::kill(Pid::from_raw(pid), sig).map_err(io::Error::from)
    }

    fn wait(&mut self) -> WaitFuture<'_> {
        Box::pin(async move {
            use std::os::unix::process::ExitStatusExt;
            let status = self.child.wait().await?;
            if let Some(m) = &self.managed {
                m.remove(self.pid);
            }
            // Let the readers drain what the process printed last.
            for r in self.readers.drain(..) {
                let _ = r.await;
            }
            Ok(match (status.code(), status.signal()) {
                (Some(c), _) => Exit::Code(c),
                (None, Some(s)) => Exit::Signal(s),
                (None, None) => Exit::Code(-1),
            })
        })
    }
}

impl Drop for OsChild {
    fn drop(&mut self) {
        if let Some(m) = &self.managed {
            m.remove(self.pid);
        }
    }
}

impl ProcessControl for OsProcesses {
    fn spawn(&self, spec: &CommandSpec) -> io::Result<Box<dyn RunningProcess>> {
        let mut cmd = tokio::process::Command::new(&spec.program);
        cmd.args(&spec.args)
            .envs(spec.env.iter().map(|(k, v)| (k, v)))
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true)
            .process_group(0);
        let mut child = cmd.spawn()?;
        let pid = child
            .id()
            .ok_or_else(|| io::Error::other("child exited before its pid was read"))?;
        if let Some(m) = &self.managed {
            m.insert(pid);
        }
        let mut readers = Vec::new();
        if let Some(out) = child.stdout.take() {
            readers.push(tokio::spawn(forward(
                out,
                Stream::Stdout,
                spec.sink.clone(),
                self.k3s_target,
            )));
        }
        if let Some(err) = child.stderr.take() {
            readers.push(tokio::spawn(forward(
                err,
                Stream::Stderr,
                spec.sink.clone(),
                self.k3s_target,
            )));
        }
        Ok(Box::new(OsChild {
            child,
            pid,
            managed: self.managed.clone(),
            readers,
        }))
    }
}

/// Log level of a k3s line: logrus (`level=warning`) or klog (`E1123 ...`) formats.
pub fn line_level(line: &str) -> tracing::Level {
    if let Some(i) = line.find("level=") {
        let v = &line[i + 6..];
        let v = v.trim_start_matches('"');
        return match v.split(|c: char| !c.is_ascii_alphabetic()).next() {
            Some("error" | "fatal" | "panic") => tracing::Level::ERROR,
            Some("warning" | "warn") => tracing::Level::WARN,
            Some("debug") => tracing::Level::DEBUG,
            Some("trace") => tracing::Level::TRACE,
            _ => tracing::Level::INFO,
        };
    }
    let b = line.as_bytes();
    if b.len() > 5 && b[1..5].iter().all(u8::is_ascii_digit) {
        return match b[0] {
            b'E' | b'F' => tracing::Level::ERROR,
            b'W' => tracing::Level::WARN,
            _ => tracing::Level::INFO,
        };
    }
    tracing::Level::INFO
}

async fn forward(
    r: impl AsyncRead + Unpin,
    stream: Stream,
    sink: Option<LineSink>,
    k3s_target: bool,
) {
    let mut lines = BufReader::new(r).lines();
    loop {
        match lines.next_line().await {
            Ok(Some(line)) => {
                if k3s_target {
                    match line_level(&line) {
                        tracing::Level::ERROR => tracing::error!(target: "k3s", "{line}"),
                        tracing::Level::WARN => tracing::warn!(target: "k3s", "{line}"),
                        tracing::Level::DEBUG => tracing::debug!(target: "k3s", "{line}"),
                        tracing::Level::TRACE => tracing::trace!(target: "k3s", "{line}"),
                        _ => tracing::info!(target: "k3s", "{line}"),
                    }
                } else {
                    tracing::info!(target: "child", "{line}");
                }
                if let Some(s) = &sink {
                    s(stream, &line);
                }
            }
            Ok(None) => return,
            // Not UTF-8 or a read error: keep going with the rest of the output.
            Err(e) if e.kind() == io::ErrorKind::InvalidData => continue,
            Err(_) => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn k3s_line_levels() {
        use tracing::Level;
        assert_eq!(
            line_level(r#"time="2026-11-23T07:00:00Z" level=info msg="Starting k3s v1.36.3+k3s1""#),
            Level::INFO
        );
        assert_eq!(
            line_level("time=\"x\" level=warning msg=\"y\""),
            Level::WARN
        );
        assert_eq!(line_level("time=\"x\" level=error msg=\"y\""), Level::ERROR);
        assert_eq!(line_level("time=\"x\" level=fatal msg=\"y\""), Level::ERROR);
        assert_eq!(
            line_level("E1123 07:00:00.123456    1234 reflector.go:123] failed to list"),
            Level::ERROR
        );
        assert_eq!(line_level("W1123 07:00:00.1 1 x.go:1] w"), Level::WARN);
        assert_eq!(line_level("I1123 07:00:00.1 1 x.go:1] i"), Level::INFO);
        assert_eq!(line_level("plain text"), Level::INFO);
    }

    #[test]
    fn exit_display_and_code() {
        assert_eq!(Exit::Code(3).to_string(), "exit code 3");
        assert_eq!(Exit::Signal(9).to_string(), "killed by SIGKILL");
        assert_eq!(Exit::Signal(15).code(), 143);
    }
}
