//! App images for k3s: pulled by digest from their registries (oci-client) into the download
//! cache, then written as OCI image-layout archives (`<name>.oci.tar`) that k3s's containerd
//! imports from `agent/images/`. A local archive can replace the pull; it is verified the same
//! way: every blob must hash to its name and the pinned digest must be the archive's manifest, or
//! an index inside it that lists that manifest.
//!
//! The pull needs a reachable registry and is not exercised by the tests here (no registry is
//! reachable from this project's machines); archive writing, verification and platform
//! selection are, on small local fixtures.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_json::json;
use sha2::{Digest, Sha256 as Hasher};
use tokio_util::sync::CancellationToken;

use crate::error::{Error, Result};
use crate::fetch::{Cache, sha256_bytes};

const ACCEPT: &[&str] = &[
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
];

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Descriptor {
    #[serde(default)]
    media_type: String,
    digest: String,
    #[serde(default)]
    size: u64,
    #[serde(default)]
    platform: Option<Platform>,
}

#[derive(Debug, Clone, Deserialize)]
struct Platform {
    architecture: String,
    os: String,
}

#[derive(Debug, Deserialize)]
struct Index {
    manifests: Vec<Descriptor>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Manifest {
    #[serde(default)]
    media_type: String,
    config: Descriptor,
    layers: Vec<Descriptor>,
}

fn oci_err(reference: &str, message: impl Into<String>) -> Error {
    Error::Oci {
        reference: reference.to_string(),
        message: message.into(),
    }
}

fn hex_of(reference: &str, digest: &str) -> Result<String> {
    match digest.strip_prefix("sha256:") {
        Some(h) if h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()) => Ok(h.to_string()),
        _ => Err(oci_err(
            reference,
            format!("unsupported digest `{digest}` (sha256 only)"),
        )),
    }
}

/// Whether a manifest document is an index (multi-platform list).
fn is_index(doc: &[u8]) -> bool {
    serde_json::from_slice::<serde_json::Value>(doc)
        .ok()
        .and_then(|v| v.get("manifests").map(serde_json::Value::is_array))
        .unwrap_or(false)
}

/// Picks the linux/amd64 manifest of an index.
fn select_amd64(reference: &str, index: &[u8]) -> Result<Descriptor> {
    let index: Index =
        serde_json::from_slice(index).map_err(|e| oci_err(reference, format!("bad index: {e}")))?;
    index
        .manifests
        .into_iter()
        .find(|d| {
            d.platform
                .as_ref()
                .is_some_and(|p| p.os == "linux" && p.architecture == "amd64")
        })
        .ok_or_else(|| oci_err(reference, "the index has no linux/amd64 image"))
}

/// Pulls `reference` pinned at `digest` and writes `out` (an OCI image-layout tar).
pub async fn pull(
    reference: &str,
    digest: &str,
    cache: &Cache,
    out: &Path,
    mtime: u64,
    cancel: &CancellationToken,
) -> Result<()> {
    use oci_client::client::{ClientConfig, ClientProtocol};
    use oci_client::secrets::RegistryAuth;
    crate::install_crypto_provider();
    let r: oci_client::Reference = reference
        .parse()
        .map_err(|e| oci_err(reference, format!("bad reference: {e}")))?;
    let client = oci_client::Client::new(ClientConfig {
        protocol: ClientProtocol::Https,
        ..ClientConfig::default()
    });
    let auth = RegistryAuth::Anonymous;
    if digest.is_empty() {
        let served = client
            .fetch_manifest_digest(&r, &auth)
            .await
            .map_err(|e| oci_err(reference, format!("{e}")))?;
        return Err(oci_err(
            reference,
            format!(
                "no digest pinned; the registry serves {served}: put `digest = \"{served}\"` in the config"
            ),
        ));
    }
    let pinned = r.clone_with_digest(digest.to_string());
    let mut blobs: BTreeMap<String, PathBuf> = BTreeMap::new();

    let fetch_doc = |d: String| {
        let client = &client;
        let auth = &auth;
        let r = r.clone_with_digest(d.clone());
        async move {
            let (bytes, _) = client
                .pull_manifest_raw(&r, auth, ACCEPT)
                .await
                .map_err(|e| oci_err(reference, format!("{e}")))?;
            let actual = format!("sha256:{}", sha256_bytes(&bytes));
            if actual != d {
                return Err(Error::Digest {
                    what: format!("manifest of {reference}"),
                    expected: d,
                    actual,
                    hint: String::new(),
                });
            }
            Ok::<_, Error>(bytes.to_vec())
        }
    };
    let store = |hex: &str, bytes: &[u8]| -> Result<PathBuf> {
        let p = cache.blob_path(hex);
        if let Some(dir) = p.parent() {
            std::fs::create_dir_all(dir).map_err(Error::io("creating", dir))?;
        }
        std::fs::write(&p, bytes).map_err(Error::io("writing", &p))?;
        Ok(p)
    };

    let top = fetch_doc(digest.to_string()).await?;
    let manifest_bytes = if is_index(&top) {
        blobs.insert(
            hex_of(reference, digest)?,
            store(&hex_of(reference, digest)?, &top)?,
        );
        let d = select_amd64(reference, &top)?;
        fetch_doc(d.digest).await?
    } else {
        top
    };
    let manifest_digest = format!("sha256:{}", sha256_bytes(&manifest_bytes));
    let mhex = hex_of(reference, &manifest_digest)?;
    blobs.insert(mhex.clone(), store(&mhex, &manifest_bytes)?);
    let manifest: Manifest = serde_json::from_slice(&manifest_bytes)
        .map_err(|e| oci_err(reference, format!("bad manifest: {e}")))?;

    for d in std::iter::once(&manifest.config).chain(&manifest.layers) {
        if cancel.is_cancelled() {
            return Err(Error::Cancelled);
        }
        let hex = hex_of(reference, &d.digest)?;
        let path = cache.blob_path(&hex);
        if !path.is_file() {
            let part = path.with_extension("part");
            if let Some(dir) = part.parent() {
                std::fs::create_dir_all(dir).map_err(Error::io("creating", dir))?;
            }
            let f = tokio::fs::File::create(&part)
                .await
                .map_err(Error::io("creating", &part))?;
            tracing::info!(image = reference, blob = %d.digest, size = d.size, "pulling");
            client
                .pull_blob(&pinned, d.digest.as_str(), f)
                .await
                .map_err(|e| oci_err(reference, format!("blob {}: {e}", d.digest)))?;
            let actual = crate::fetch::sha256_file(&part)?;
            if actual != hex {
                let _ = std::fs::remove_file(&part);
                return Err(Error::Digest {
                    what: format!("blob of {reference}"),
                    expected: hex,
                    actual,
                    hint: String::new(),
                });
            }
            std::fs::rename(&part, &path).map_err(Error::io("renaming", &part))?;
        }
        blobs.insert(hex, path);
    }
    let media_type = if manifest.media_type.is_empty() {
        "application/vnd.oci.image.manifest.v1+json".to_string()
    } else {
        manifest.media_type
    };
    write_archive(
        out,
        reference,
        &media_type,
        &manifest_digest,
        manifest_bytes.len() as u64,
        &blobs,
        mtime,
    )
}

/// Writes an OCI image-layout tar: `oci-layout`, `index.json` naming the manifest (annotated
/// with the image reference, as `ctr import` and k3s expect), and `blobs/sha256/*` from `blobs`
/// (hex digest -> file). Entries are sorted with fixed owners, modes and `mtime`.
pub fn write_archive(
    out: &Path,
    reference: &str,
    media_type: &str,
    manifest_digest: &str,
    manifest_size: u64,
    blobs: &BTreeMap<String, PathBuf>,
    mtime: u64,
) -> Result<()> {
    let tag = reference.rsplit_once(':').map_or("latest", |(_, t)| t);
    let index = json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [{
            "mediaType": media_type,
            "digest": manifest_digest,
            "size": manifest_size,
            "annotations": {
                "io.containerd.image.name": reference,
                "org.opencontainers.image.ref.name": tag,
            },
        }],
    });
    let part = out.with_extension("tar.part");
    let file = std::fs::File::create(&part).map_err(Error::io("creating", &part))?;
    let mut tar = tar::Builder::new(std::io::BufWriter::new(file));
    tar.mode(tar::HeaderMode::Deterministic);
    let header = |size: u64, mode: u32| {
        let mut h = tar::Header::new_ustar();
        h.set_size(size);
        h.set_mode(mode);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(mtime);
        h.set_entry_type(tar::EntryType::Regular);
        h
    };
    let w = |e: std::io::Error| Error::Io {
        action: "writing",
        path: part.clone(),
        source: e,
    };
    let layout = br#"{"imageLayoutVersion":"1.0.0"}"#;
    let mut h = header(layout.len() as u64, 0o644);
    tar.append_data(&mut h, "oci-layout", &layout[..])
        .map_err(w)?;
    let index = serde_json::to_vec(&index).map_err(|e| Error::Invalid(e.to_string()))?;
    let mut h = header(index.len() as u64, 0o644);
    tar.append_data(&mut h, "index.json", &index[..])
        .map_err(w)?;
    let mut h = tar::Header::new_ustar();
    h.set_entry_type(tar::EntryType::Directory);
    h.set_mode(0o755);
    h.set_mtime(mtime);
    h.set_size(0);
    for dir in ["blobs/", "blobs/sha256/"] {
        tar.append_data(&mut h.clone(), dir, std::io::empty())
            .map_err(w)?;
    }
    for (hex, path) in blobs {
        let f = std::fs::File::open(path).map_err(Error::io("opening", path))?;
        let len = f.metadata().map_err(Error::io("reading", path))?.len();
        let mut h = header(len, 0o644);
        tar.append_data(&mut h, format!("blobs/sha256/{hex}"), f)
            .map_err(w)?;
    }
    let inner = tar.into_inner().map_err(w)?;
    inner
        .into_inner()
        .map_err(|e| w(e.into_error()))?
        .sync_all()
        .map_err(w)?;
    std::fs::rename(&part, out).map_err(Error::io("renaming", &part))
}

/// What [`verify_archive`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArchiveInfo {
    /// The image name from `index.json` (`io.containerd.image.name`), if any.
    pub image_name: Option<String>,
    /// Digest of the image manifest the archive imports.
    pub manifest_digest: String,
    /// Number of blobs.
    pub blobs: usize,
}

/// Checks an OCI image-layout tar against the pinned digest (see the module doc).
pub fn verify_archive(path: &Path, reference: &str, pinned: &str) -> Result<ArchiveInfo> {
    let f = std::fs::File::open(path).map_err(Error::io("opening", path))?;
    let mut ar = tar::Archive::new(std::io::BufReader::new(f));
    let mut index: Option<Vec<u8>> = None;
    let mut docs: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    let mut present = std::collections::BTreeSet::new();
    let bad = |m: String| oci_err(reference, format!("{}: {m}", path.display()));
    for entry in ar.entries().map_err(Error::io("reading", path))? {
        let mut entry = entry.map_err(Error::io("reading", path))?;
        let name = entry
            .path()
            .map_err(Error::io("reading", path))?
            .to_string_lossy()
            .trim_start_matches("./")
            .to_string();
        if name == "index.json" {
            let mut v = Vec::new();
            entry
                .read_to_end(&mut v)
                .map_err(Error::io("reading", path))?;
            index = Some(v);
        } else if let Some(hex) = name.strip_prefix("blobs/sha256/").filter(|h| !h.is_empty()) {
            let hex = hex.to_string();
            let mut h = Hasher::new();
            let mut small = Vec::new();
            let mut buf = vec![0u8; 1 << 20];
            loop {
                let n = entry.read(&mut buf).map_err(Error::io("reading", path))?;
                if n == 0 {
                    break;
                }
                h.update(&buf[..n]);
                if small.len() < 4 << 20 {
                    small.extend_from_slice(&buf[..n]);
                }
            }
            let actual = format!("{:x}", h.finalize());
            if actual != hex {
                return Err(bad(format!("blob {hex} hashes to {actual}")));
            }
            if small.len() < 4 << 20 {
                docs.insert(hex.clone(), small);
            }
            present.insert(hex);
        }
    }
    let index = index.ok_or_else(|| bad("no index.json: not an OCI image layout".into()))?;
    let idx: serde_json::Value =
        serde_json::from_slice(&index).map_err(|e| bad(format!("index.json: {e}")))?;
    let entry = idx
        .get("manifests")
        .and_then(|m| m.get(0))
        .ok_or_else(|| bad("index.json lists no manifest".into()))?;
    let manifest_digest = entry
        .get("digest")
        .and_then(|d| d.as_str())
        .ok_or_else(|| bad("index.json manifest has no digest".into()))?
        .to_string();
    let image_name = entry
        .pointer("/annotations/io.containerd.image.name")
        .and_then(|v| v.as_str())
        .map(String::from);
    let mhex = hex_of(reference, &manifest_digest)?;
    let pinned_ok = manifest_digest == pinned || {
        let phex = hex_of(reference, pinned)?;
        docs.get(&phex).is_some_and(|doc| {
            is_index(doc)
                && serde_json::from_slice::<Index>(doc)
                    .is_ok_and(|i| i.manifests.iter().any(|d| d.digest == manifest_digest))
        })
    };
    if !pinned_ok {
        return Err(Error::Digest {
            what: format!("image archive {}", path.display()),
            expected: pinned.to_string(),
            actual: manifest_digest,
            hint: " (the archive holds another image)".into(),
        });
    }
    let manifest: Manifest = docs
        .get(&mhex)
        .ok_or_else(|| bad(format!("manifest blob {mhex} missing")))
        .and_then(|d| serde_json::from_slice(d).map_err(|e| bad(format!("manifest: {e}"))))?;
    for d in std::iter::once(&manifest.config).chain(&manifest.layers) {
        let h = hex_of(reference, &d.digest)?;
        if !present.contains(&h) {
            return Err(bad(format!("blob {} ({}) missing", d.digest, d.media_type)));
        }
    }
    Ok(ArchiveInfo {
        image_name,
        manifest_digest,
        blobs: present.len(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A tiny image: one config, one layer, a manifest and a two-platform index, in a cache dir.
    struct Fixture {
        _dir: tempfile::TempDir,
        out: PathBuf,
        blobs: BTreeMap<String, PathBuf>,
        manifest_digest: String,
        manifest_len: u64,
        index_digest: String,
    }

    fn fixture() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::new(dir.path().join("cache"));
        std::fs::create_dir_all(dir.path().join("cache/sha256")).unwrap();
        let mut blobs = BTreeMap::new();
        let mut put = |bytes: &[u8]| {
            let hex = sha256_bytes(bytes);
            let p = cache.blob_path(&hex);
            std::fs::write(&p, bytes).unwrap();
            blobs.insert(hex.clone(), p);
            format!("sha256:{hex}")
        };
        let config =
            br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#;
        let layer = b"not really a tar.gz, but blobs are opaque here";
        let cd = put(config);
        let ld = put(layer);
        let manifest = serde_json::to_vec(&json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cd, "size": config.len()},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": ld, "size": layer.len()}],
        }))
        .unwrap();
        let md = put(&manifest);
        let index = serde_json::to_vec(&json!({
            "schemaVersion": 2,
            "manifests": [
                {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": format!("sha256:{}", "1".repeat(64)), "size": 1, "platform": {"architecture": "arm64", "os": "linux"}},
                {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": md, "size": manifest.len(), "platform": {"architecture": "amd64", "os": "linux"}},
            ],
        }))
        .unwrap();
        let id = put(&index);
        Fixture {
            out: dir.path().join("app.oci.tar"),
            _dir: dir,
            blobs,
            manifest_digest: md,
            manifest_len: manifest.len() as u64,
            index_digest: id,
        }
    }

    fn write(f: &Fixture) {
        write_archive(
            &f.out,
            "registry.example/app:1.0",
            "application/vnd.oci.image.manifest.v1+json",
            &f.manifest_digest,
            f.manifest_len,
            &f.blobs,
            1_700_000_000,
        )
        .unwrap();
    }

    #[test]
    fn archives_verify_against_the_manifest_or_the_index_digest() {
        let f = fixture();
        write(&f);
        let info = verify_archive(&f.out, "app", &f.manifest_digest).unwrap();
        assert_eq!(info.manifest_digest, f.manifest_digest);
        assert_eq!(info.image_name.as_deref(), Some("registry.example/app:1.0"));
        assert_eq!(info.blobs, 4);
        verify_archive(&f.out, "app", &f.index_digest).unwrap();
        let other = format!("sha256:{}", "2".repeat(64));
        let e = verify_archive(&f.out, "app", &other).unwrap_err();
        assert!(matches!(e, Error::Digest { .. }), "{e}");
    }

    #[test]
    fn archives_are_reproducible_and_sorted() {
        let f = fixture();
        write(&f);
        let first = std::fs::read(&f.out).unwrap();
        write(&f);
        assert_eq!(first, std::fs::read(&f.out).unwrap());
        let mut ar = tar::Archive::new(&first[..]);
        let names: Vec<String> = ar
            .entries()
            .unwrap()
            .map(|e| e.unwrap().path().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            &names[..4],
            ["oci-layout", "index.json", "blobs/", "blobs/sha256/"]
        );
        let blobs = &names[4..];
        let mut sorted = blobs.to_vec();
        sorted.sort();
        assert_eq!(blobs, sorted);
    }

    #[test]
    fn a_tampered_blob_or_a_missing_layer_is_refused() {
        let f = fixture();
        let mut blobs = f.blobs.clone();
        // Drop the layer: the archive no longer holds the whole image.
        let layer = blobs
            .iter()
            .find(|(_, p)| std::fs::read(p).unwrap().starts_with(b"not really"))
            .map(|(h, _)| h.clone())
            .unwrap();
        blobs.remove(&layer);
        write_archive(
            &f.out,
            "a:1",
            "x",
            &f.manifest_digest,
            f.manifest_len,
            &blobs,
            0,
        )
        .unwrap();
        let e = verify_archive(&f.out, "a", &f.manifest_digest)
            .unwrap_err()
            .to_string();
        assert!(e.contains("missing"), "{e}");

        // Same name, other content.
        let mut blobs = f.blobs.clone();
        let evil = f.out.with_file_name("evil");
        std::fs::write(&evil, b"evil").unwrap();
        blobs.insert(layer, evil);
        write_archive(
            &f.out,
            "a:1",
            "x",
            &f.manifest_digest,
            f.manifest_len,
            &blobs,
            0,
        )
        .unwrap();
        let e = verify_archive(&f.out, "a", &f.manifest_digest)
            .unwrap_err()
            .to_string();
        assert!(e.contains("hashes to"), "{e}");
    }

    #[test]
    fn the_amd64_manifest_is_taken_from_an_index() {
        let f = fixture();
        let index = std::fs::read(&f.blobs[f.index_digest.trim_start_matches("sha256:")]).unwrap();
        assert!(is_index(&index));
        assert_eq!(select_amd64("a", &index).unwrap().digest, f.manifest_digest);
        let only_arm = br#"{"manifests":[{"digest":"sha256:00","platform":{"architecture":"arm64","os":"linux"}}]}"#;
        assert!(select_amd64("a", only_arm).is_err());
        assert!(!is_index(br#"{"config":{},"layers":[]}"#));
    }
}
