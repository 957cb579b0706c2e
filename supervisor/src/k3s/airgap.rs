//! Air-gap image archives: put the tarballs shipped in the disk image where k3s imports them at
//! start (`<data-dir>/agent/images/`).

use std::path::{Path, PathBuf};

use super::K3sError;

/// Archive names k3s's containerd imports (k3s docs: .tar, .tar.gz/.tgz, .tar.bz2/.tbz,
/// .tar.lz4, .tar.zst/.tzst, .tar.xz/.txz) and image lists (.txt).
pub fn is_image_archive(name: &str) -> bool {
    const SUFFIXES: [&str; 12] = [
        ".tar",
        ".tar.gz",
        ".tgz",
        ".tar.bz2",
        ".tbz",
        ".tar.lz4",
        ".tar.zst",
        ".tzst",
        ".tar.zstd",
        ".tar.xz",
        ".txz",
        ".txt",
    ];
    !name.starts_with('.') && SUFFIXES.iter().any(|s| name.ends_with(s))
}

/// What [`place_images`] did with each archive.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Placed {
    pub linked: Vec<PathBuf>,
    pub copied: Vec<PathBuf>,
    pub unchanged: Vec<PathBuf>,
}

/// Makes every archive of `from` present in `to`: a hard link when both are on one file system,
/// else a copy (written aside, then renamed, so k3s never imports half a file). Archives already
/// there with the same size are left alone. Other files are ignored.
pub fn place_images(from: &Path, to: &Path) -> Result<Placed, K3sError> {
    let mut placed = Placed::default();
    let rd = match std::fs::read_dir(from) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(placed),
        Err(e) => return Err(K3sError::io(from, e)),
    };
    std::fs::create_dir_all(to).map_err(|e| K3sError::io(to, e))?;
    let mut entries: Vec<PathBuf> = rd.flatten().map(|e| e.path()).collect();
    entries.sort();
    for src in entries {
        let Some(name) = src.file_name().and_then(|n| n.to_str()) else {
            continue;
        };
        if !src.is_file() || !is_image_archive(name) {
            continue;
        }
        let dst = to.join(name);
        let src_len = std::fs::metadata(&src)
            .map_err(|e| K3sError::io(&src, e))?
            .len();
        if let Ok(m) = std::fs::metadata(&dst)
            && m.len() == src_len
        {
            placed.unchanged.push(dst);
            continue;
        }
        let tmp = to.join(format!(".{name}.partial"));
        let _ = std::fs::remove_file(&tmp);
        if std::fs::hard_link(&src, &tmp).is_ok() {
            std::fs::rename(&tmp, &dst).map_err(|e| K3sError::io(&dst, e))?;
            placed.linked.push(dst);
        } else {
            std::fs::copy(&src, &tmp).map_err(|e| K3sError::io(&tmp, e))?;
            std::fs::rename(&tmp, &dst).map_err(|e| K3sError::io(&dst, e))?;
            placed.copied.push(dst);
        }
    }
    Ok(placed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn archives_are_recognised() {
        for n in [
            "k3s-airgap-images-amd64.tar.zst",
            "rocketchat.tar",
            "mongo.tar.gz",
            "list.txt",
        ] {
            assert!(is_image_archive(n), "{n}");
        }
        for n in ["README", "k3s", ".hidden.tar", "x.zip"] {
            assert!(!is_image_archive(n), "{n}");
        }
    }

    #[test]
    fn places_links_and_skips_what_is_there() {
        let dir = tempfile::tempdir().unwrap();
        let from = dir.path().join("images");
        let to = dir.path().join("k3s/agent/images");
        std::fs::create_dir_all(&from).unwrap();
        std::fs::write(from.join("k3s-airgap-images-amd64.tar.zst"), b"zstd bytes").unwrap();
        std::fs::write(from.join("apps.tar"), b"tar bytes").unwrap();
        std::fs::write(from.join("notes.md"), b"not an image").unwrap();
        let p = place_images(&from, &to).unwrap();
        assert_eq!(p.linked.len() + p.copied.len(), 2, "{p:?}");
        assert_eq!(std::fs::read(to.join("apps.tar")).unwrap(), b"tar bytes");
        assert!(!to.join("notes.md").exists());
        let again = place_images(&from, &to).unwrap();
        assert_eq!(again.unchanged.len(), 2);
        // A changed archive (new image version) replaces the old one.
        std::fs::write(from.join("apps.tar"), b"new tar bytes!").unwrap();
        place_images(&from, &to).unwrap();
        assert_eq!(
            std::fs::read(to.join("apps.tar")).unwrap(),
            b"new tar bytes!"
        );
        // No images directory: nothing to do.
        assert_eq!(
            place_images(&dir.path().join("none"), &to).unwrap(),
            Placed::default()
        );
    }
}
