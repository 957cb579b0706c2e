//! The crate's one error type.

use std::path::PathBuf;

/// Everything that can stop a build. `Display` names the failing step only; sources are chained.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A file or directory could not be read or written.
    #[error("{action} {}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The configuration file is not valid.
    #[error("configuration {}: {message}", path.display())]
    Config { path: PathBuf, message: String },
    /// A program the build needs is not installed.
    #[error("`{tool}` is not installed: {hint}")]
    MissingTool { tool: String, hint: String },
    /// An external program failed.
    #[error("`{command}` failed ({status}){}", if stderr.is_empty() { String::new() } else { format!(":\n{stderr}") })]
    Command {
        command: String,
        status: String,
        stderr: String,
    },
    /// A downloaded or local input does not have its pinned digest.
    #[error("{what}: sha256 mismatch: pinned {expected}, got {actual}{hint}")]
    Digest {
        what: String,
        expected: String,
        actual: String,
        hint: String,
    },
    /// A download failed.
    #[error("downloading {url}: {message}")]
    Download { url: String, message: String },
    /// An OCI registry or image archive problem.
    #[error("image {reference}: {message}")]
    Oci { reference: String, message: String },
    /// The build cannot go on for a reason the message explains.
    #[error("{0}")]
    Invalid(String),
    /// The build was cancelled (signal).
    #[error("build cancelled")]
    Cancelled,
}

impl Error {
    pub(crate) fn io(
        action: &'static str,
        path: impl Into<PathBuf>,
    ) -> impl FnOnce(std::io::Error) -> Error {
        let path = path.into();
        move |source| Error::Io {
            action,
            path,
            source,
        }
    }
}

/// Result alias for the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
