//! Pinned inputs: local files or downloads, verified against their SHA-256 and cached by digest
//! (`<cache>/sha256/<hex>`), so a second build needs no network.

use std::io::Read;
use std::path::{Path, PathBuf};

use futures_util::StreamExt;
use sha2::{Digest, Sha256 as Hasher};
use tokio::io::AsyncWriteExt;
use tokio_util::sync::CancellationToken;

use crate::config::{Sha256, Source};
use crate::error::{Error, Result};

/// SHA-256 of a file, hex.
pub fn sha256_file(path: &Path) -> Result<String> {
    let mut f = std::fs::File::open(path).map_err(Error::io("opening", path))?;
    let mut h = Hasher::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).map_err(Error::io("reading", path))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(format!("{:x}", h.finalize()))
}

/// SHA-256 of bytes, hex.
pub fn sha256_bytes(bytes: &[u8]) -> String {
    format!("{:x}", Hasher::digest(bytes))
}

/// The content-addressed download cache.
#[derive(Debug, Clone)]
pub struct Cache {
    root: PathBuf,
}

impl Cache {
    /// A cache rooted at `root` (created on first use).
    pub fn new(root: impl Into<PathBuf>) -> Cache {
        Cache { root: root.into() }
    }

    /// `$XDG_CACHE_HOME/gantry`, else `~/.cache/gantry`.
    pub fn default_root() -> PathBuf {
        if let Some(x) = std::env::var_os("XDG_CACHE_HOME").filter(|x| !x.is_empty()) {
            return PathBuf::from(x).join("gantry");
        }
        let home = std::env::var_os("HOME").map_or_else(|| PathBuf::from("/root"), PathBuf::from);
        home.join(".cache/gantry")
    }

    /// The cache's root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Where the blob with this digest is (or would be) kept.
    pub fn blob_path(&self, hex: &str) -> PathBuf {
        self.root.join("sha256").join(hex)
    }

    /// A directory in the cache for other uses (e.g. Debian packages).
    pub fn dir(&self, name: &str) -> Result<PathBuf> {
        let d = self.root.join(name);
        std::fs::create_dir_all(&d).map_err(Error::io("creating", &d))?;
        Ok(d)
    }

    /// Resolves a pinned [`Source`] to a verified local file: the given `path` if any, else the
    /// cached download, else a fresh download. `what` names the input in errors.
    pub async fn fetch(
        &self,
        what: &str,
        source: &Source,
        cancel: &CancellationToken,
    ) -> Result<PathBuf> {
        if let Some(path) = &source.path {
            verify_file(what, path, &source.sha256)?;
            return Ok(path.clone());
        }
        let cached = self.blob_path(source.sha256.hex());
        if cached.is_file() {
            match verify_file(what, &cached, &source.sha256) {
                Ok(()) => return Ok(cached),
                Err(e) => {
                    tracing::warn!(error = %e, "dropping a corrupt cache entry");
                    let _ = std::fs::remove_file(&cached);
                }
            }
        }
        let url = source.url.as_deref().ok_or_else(|| {
            Error::Invalid(format!(
                "{what}: neither a local path nor a URL is configured"
            ))
        })?;
        self.download(what, url, &source.sha256, cancel).await
    }

    /// Downloads `url` into the cache, hashing on the way; the file only appears under its
    /// digest when it matches.
    pub async fn download(
        &self,
        what: &str,
        url: &str,
        expected: &Sha256,
        cancel: &CancellationToken,
    ) -> Result<PathBuf> {
        let dl_err = |message: String| Error::Download {
            url: url.to_string(),
            message,
        };
        let dir = self.root.join("sha256");
        tokio::fs::create_dir_all(&dir)
            .await
            .map_err(Error::io("creating", &dir))?;
        let part = dir.join(format!("{}.part", expected.hex()));
        crate::install_crypto_provider();
        let client = reqwest::Client::builder()
            .user_agent(concat!("gantry-image/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| dl_err(e.to_string()))?;
        let resp = client
            .get(url)
            .send()
            .await
            .and_then(reqwest::Response::error_for_status)
            .map_err(|e| dl_err(format!("{e:#}; give a local copy with `path = ...` in the config for an air-gapped build")))?;
        let mut out = tokio::fs::File::create(&part)
            .await
            .map_err(Error::io("creating", &part))?;
        let mut h = Hasher::new();
        let mut stream = resp.bytes_stream();
        loop {
            let chunk = tokio::select! {
                c = stream.next() => c,
                () = cancel.cancelled() => {
                    drop(out);
                    let _ = tokio::fs::remove_file(&part).await;
                    return Err(Error::Cancelled);
                }
            };
            let Some(chunk) = chunk else { break };
            let chunk = chunk.map_err(|e| dl_err(e.to_string()))?;
            h.update(&chunk);
            out.write_all(&chunk)
                .await
                .map_err(Error::io("writing", &part))?;
        }
        out.flush().await.map_err(Error::io("writing", &part))?;
        drop(out);
        let actual = format!("{:x}", h.finalize());
        if actual != expected.hex() {
            let _ = tokio::fs::remove_file(&part).await;
            return Err(Error::Digest {
                what: format!("{what} from {url}"),
                expected: expected.hex().to_string(),
                actual,
                hint: String::new(),
            });
        }
        let dest = self.blob_path(expected.hex());
        tokio::fs::rename(&part, &dest)
            .await
            .map_err(Error::io("renaming", &part))?;
        Ok(dest)
    }
}

/// Checks that `path` hashes to `expected`.
pub fn verify_file(what: &str, path: &Path, expected: &Sha256) -> Result<()> {
    let actual = sha256_file(path)?;
    if actual == expected.hex() {
        Ok(())
    } else {
        Err(Error::Digest {
            what: format!("{what} ({})", path.display()),
            expected: expected.hex().to_string(),
            actual,
            hint: String::new(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    fn digest(bytes: &[u8]) -> Sha256 {
        Sha256::try_from(sha256_bytes(bytes)).unwrap()
    }

    /// A one-file HTTP server on 127.0.0.1:0 that counts its requests.
    async fn serve(
        body: &'static [u8],
    ) -> (String, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let hits = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let h = hits.clone();
        tokio::spawn(async move {
            loop {
                let Ok((mut s, _)) = listener.accept().await else {
                    return;
                };
                h.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let mut buf = [0u8; 4096];
                let _ = s.read(&mut buf).await;
                let head = format!(
                    "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                    body.len()
                );
                let _ = s.write_all(head.as_bytes()).await;
                let _ = s.write_all(body).await;
            }
        });
        (format!("http://{addr}/k3s"), hits)
    }

    #[tokio::test]
    async fn downloads_are_verified_cached_and_reused() {
        let body: &'static [u8] = b"pretend this is k3s";
        let (url, hits) = serve(body).await;
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::new(dir.path());
        let src = Source {
            url: Some(url),
            path: None,
            sha256: digest(body),
        };
        let cancel = CancellationToken::new();
        let p = cache.fetch("k3s", &src, &cancel).await.unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), body);
        assert_eq!(p, cache.blob_path(src.sha256.hex()));
        let again = cache.fetch("k3s", &src, &cancel).await.unwrap();
        assert_eq!(again, p);
        assert_eq!(
            hits.load(std::sync::atomic::Ordering::SeqCst),
            1,
            "second fetch must hit the cache"
        );

        // A corrupted cache entry is dropped and downloaded again.
        std::fs::write(&p, b"corrupt").unwrap();
        cache.fetch("k3s", &src, &cancel).await.unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), body);
        assert_eq!(hits.load(std::sync::atomic::Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn a_download_with_the_wrong_digest_is_refused_and_not_cached() {
        let (url, _) = serve(b"tampered").await;
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::new(dir.path());
        let src = Source {
            url: Some(url),
            path: None,
            sha256: digest(b"original"),
        };
        let e = cache
            .fetch("k3s", &src, &CancellationToken::new())
            .await
            .unwrap_err();
        assert!(matches!(e, Error::Digest { .. }), "{e}");
        assert!(!cache.blob_path(src.sha256.hex()).exists());
        let leftovers: Vec<_> = std::fs::read_dir(dir.path().join("sha256"))
            .unwrap()
            .collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");
    }

    #[tokio::test]
    async fn local_files_replace_downloads_and_are_verified_too() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("k3s");
        std::fs::write(&f, b"local k3s").unwrap();
        let cache = Cache::new(dir.path().join("cache"));
        let cancel = CancellationToken::new();
        let mut src = Source {
            url: Some("http://127.0.0.1:9/unreachable".into()),
            path: Some(f.clone()),
            sha256: digest(b"local k3s"),
        };
        assert_eq!(cache.fetch("k3s", &src, &cancel).await.unwrap(), f);
        src.sha256 = digest(b"something else");
        let e = cache
            .fetch("k3s", &src, &cancel)
            .await
            .unwrap_err()
            .to_string();
        assert!(e.contains("sha256 mismatch") && e.contains("k3s"), "{e}");
    }

    #[tokio::test]
    async fn an_unreachable_url_says_how_to_build_offline() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::new(dir.path());
        // Port 9 (discard) on loopback: nothing listens there.
        let src = Source {
            url: Some("http://127.0.0.1:9/k3s".into()),
            path: None,
            sha256: digest(b"x"),
        };
        let e = cache
            .fetch("k3s", &src, &CancellationToken::new())
            .await
            .unwrap_err()
            .to_string();
        assert!(e.contains("path = "), "{e}");
    }
}
