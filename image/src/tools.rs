//! The external programs the build drives, how to get them, and running them cancellably.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::error::{Error, Result};

/// A program and the Debian package that provides it.
#[derive(Debug, Clone, Copy)]
pub struct Tool {
    pub program: &'static str,
    pub package: &'static str,
}

/// Every program a build needs (`qemu-img` only for the qcow2 output).
pub const TOOLS: &[Tool] = &[
    Tool {
        program: "mmdebstrap",
        package: "mmdebstrap",
    },
    Tool {
        program: "mkfs.erofs",
        package: "erofs-utils",
    },
    Tool {
        program: "mkfs.ext4",
        package: "e2fsprogs",
    },
    Tool {
        program: "mkfs.vfat",
        package: "dosfstools",
    },
    Tool {
        program: "mcopy",
        package: "mtools",
    },
    Tool {
        program: "mmd",
        package: "mtools",
    },
    Tool {
        program: "sfdisk",
        package: "fdisk",
    },
    Tool {
        program: "qemu-img",
        package: "qemu-utils",
    },
    Tool {
        program: "cp",
        package: "coreutils",
    },
];

/// `strip`, used when `gantry.strip` is set.
pub const STRIP: Tool = Tool {
    program: "strip",
    package: "binutils",
};

/// Finds `program` in `PATH` (and the sbin directories, which a non-login root shell may lack).
pub fn which(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/local/sbin", "/usr/sbin", "/sbin"].map(PathBuf::from))
        .map(|d| d.join(program))
        .find(|p| p.is_file())
}

/// Checks that every tool is installed; the error lists what to `apt-get install`.
pub fn require(tools: &[Tool]) -> Result<()> {
    let missing: Vec<&Tool> = tools
        .iter()
        .filter(|t| which(t.program).is_none())
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    let mut pkgs: Vec<&str> = missing.iter().map(|t| t.package).collect();
    pkgs.sort_unstable();
    pkgs.dedup();
    Err(Error::MissingTool {
        tool: missing
            .iter()
            .map(|t| t.program)
            .collect::<Vec<_>>()
            .join("`, `"),
        hint: format!("apt-get install {}", pkgs.join(" ")),
    })
}

/// Runs a command to completion, capturing stderr (its tail goes into the error) and killing
/// it if `cancel` fires. Stdout goes to the log at debug level.
pub fn run(cmd: &mut Command, cancel: &CancellationToken) -> Result<String> {
    let shown = show(cmd);
    tracing::debug!(command = %shown, "running");
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| Error::Command {
            command: shown.clone(),
            status: format!("not started: {e}"),
            stderr: String::new(),
        })?;
    // Read both pipes on threads so a chatty child never blocks.
    let out = child.stdout.take().map(|mut s| {
        std::thread::spawn(move || {
            let mut v = Vec::new();
            let _ = std::io::Read::read_to_end(&mut s, &mut v);
            v
        })
    });
    let err = child.stderr.take().map(|mut s| {
        std::thread::spawn(move || {
            let mut v = Vec::new();
            let _ = std::io::Read::read_to_end(&mut s, &mut v);
            v
        })
    });
    let status = loop {
        if let Some(st) = child
            .try_wait()
            .map_err(Error::io("waiting for", Path::new(&shown)))?
        {
            break st;
        }
        if cancel.is_cancelled() {
            terminate(&mut child);
            return Err(Error::Cancelled);
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let stdout = out.and_then(|t| t.join().ok()).unwrap_or_default();
    let stderr = err.and_then(|t| t.join().ok()).unwrap_or_default();
    let stdout = String::from_utf8_lossy(&stdout).into_owned();
    if !stdout.trim().is_empty() {
        tracing::debug!(command = %shown, "{}", stdout.trim_end());
    }
    if status.success() {
        return Ok(stdout);
    }
    let stderr = String::from_utf8_lossy(&stderr);
    let tail: Vec<&str> = stderr.lines().rev().take(25).collect();
    Err(Error::Command {
        command: shown,
        status: status.to_string(),
        stderr: tail.into_iter().rev().collect::<Vec<_>>().join("\n"),
    })
}

/// SIGTERM first (mmdebstrap unmounts what it mounted in the chroot), SIGKILL after 10 s.
fn terminate(child: &mut std::process::Child) {
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status();
    for _ in 0..200 {
        if matches!(child.try_wait(), Ok(Some(_))) {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
}

fn show(cmd: &Command) -> String {
    std::iter::once(cmd.get_program())
        .chain(cmd.get_args())
        .map(OsStr::to_string_lossy)
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_tools_name_the_package_to_install() {
        let e = require(&[
            Tool {
                program: "gantry-no-such-tool",
                package: "gantry-pkg",
            },
            Tool {
                program: "sh",
                package: "dash",
            },
        ])
        .unwrap_err()
        .to_string();
        assert!(e.contains("gantry-no-such-tool"), "{e}");
        assert!(e.contains("apt-get install gantry-pkg"), "{e}");
        assert!(!e.contains("dash"), "{e}");
    }

    #[test]
    fn failures_carry_stderr_and_cancellation_kills() {
        let c = CancellationToken::new();
        let out = run(Command::new("sh").args(["-c", "echo hi"]), &c).unwrap();
        assert_eq!(out, "hi\n");
        let e = run(Command::new("sh").args(["-c", "echo boom >&2; exit 3"]), &c)
            .unwrap_err()
            .to_string();
        assert!(e.contains("boom") && e.contains("exit status: 3"), "{e}");
        c.cancel();
        let t = std::time::Instant::now();
        let e = run(Command::new("sleep").arg("30"), &c).unwrap_err();
        assert!(matches!(e, Error::Cancelled));
        assert!(t.elapsed() < Duration::from_secs(10));
    }
}
