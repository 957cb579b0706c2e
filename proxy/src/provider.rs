//! The file provider: loads `providers.file` (one file or a directory) and, with `watch: true`,
//! reloads on change. A file that fails to parse or compile is logged with its reason and the
//! previous configuration keeps serving.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use notify::{RecursiveMode, Watcher};
use tokio_util::sync::CancellationToken;

use crate::config::{self, static_config::FileProvider};
use crate::state::Shared;
use crate::{Proxy, ProxyError};

/// Loads the file provider's configuration once into `proxy`.
pub fn load(proxy: &Proxy, file: &FileProvider) -> Result<u64, ProxyError> {
    load_into(proxy.shared(), file)
}

fn load_into(shared: &Shared, file: &FileProvider) -> Result<u64, ProxyError> {
    let loaded = config::load_dynamic(file.filename.as_deref(), file.directory.as_deref())?;
    Ok(shared.set_provider("file", loaded.config, Some(loaded.origins))?)
}

/// Watches the file provider's paths and reloads on change until `stop` fires.
pub fn spawn_watch(
    proxy: &Proxy,
    file: FileProvider,
    throttle: Duration,
    stop: CancellationToken,
) -> Result<(), ProxyError> {
    let shared = proxy.shared().clone();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<()>();
    let wanted_file = file
        .filename
        .as_ref()
        .and_then(|f| f.file_name().map(ToOwned::to_owned));
    let mut watcher = notify::recommended_watcher(move |ev: notify::Result<notify::Event>| {
        let Ok(ev) = ev else { return };
        if matches!(ev.kind, notify::EventKind::Access(_)) {
            return;
        }
        // Only our configuration files: other files in the directory (logs) are not config.
        let relevant = ev.paths.iter().any(|p| match &wanted_file {
            Some(name) => p.file_name() == Some(name.as_os_str()),
            None => matches!(
                p.extension().and_then(|e| e.to_str()),
                Some("yml" | "yaml" | "toml")
            ),
        });
        if relevant {
            let _ = tx.send(());
        }
    })
    .map_err(|e| ProxyError::Invalid(format!("providers.file.watch: {e}")))?;
    // Watch the directory (editors replace files by renaming, which a file watch would miss).
    let dir: PathBuf = match (&file.directory, &file.filename) {
        (Some(d), _) => d.clone(),
        (None, Some(f)) => f
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .map_or_else(|| PathBuf::from("."), ToOwned::to_owned),
        (None, None) => return Ok(()),
    };
    watcher
        .watch(&dir, RecursiveMode::NonRecursive)
        .map_err(|e| ProxyError::Invalid(format!("cannot watch {}: {e}", dir.display())))?;
    let shared2: Arc<Shared> = shared.clone();
    shared.spawn(async move {
        let _watcher = watcher;
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                ev = rx.recv() => if ev.is_none() { return },
            }
            // Coalesce a burst of events (an editor's write + rename) into one reload.
            tokio::time::sleep(throttle).await;
            while rx.try_recv().is_ok() {}
            let file = file.clone();
            let s = shared2.clone();
            let result = tokio::task::spawn_blocking(move || load_into(&s, &file)).await;
            match result {
                Ok(Ok(generation)) => tracing::info!(generation, "configuration reloaded"),
                Ok(Err(e)) => tracing::error!(error = %e, "configuration rejected; the previous configuration stays in service"),
                Err(e) => tracing::error!(error = %e, "reload task failed"),
            }
        }
    });
    Ok(())
}
