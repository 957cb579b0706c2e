//! The build configuration (`image.toml`): parsed and validated once into [`Config`].

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// The defaults shipped in the repository (`image/image.toml`).
pub const DEFAULT_TOML: &str = include_str!("../image.toml");

/// A validated build configuration. Paths inside are absolute.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub debian: Debian,
    pub disk: Disk,
    pub system: System,
    #[serde(default)]
    pub gantry: GantryInput,
    pub k3s: K3s,
    #[serde(default)]
    pub app_images: Vec<AppImage>,
}

/// The Debian root file system.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Debian {
    pub suite: String,
    pub mirror: String,
    /// `linux-image-<flavour>` is installed.
    pub kernel_flavour: String,
    pub packages: Vec<String>,
    #[serde(default)]
    pub path_exclude: Vec<String>,
    #[serde(default)]
    pub path_include: Vec<String>,
}

/// Partition sizes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Disk {
    pub esp_mib: u64,
    pub root_slot_mib: u64,
    pub data_mib: u64,
    pub boot_tries: u8,
}

/// Appliance settings baked into the root file system.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct System {
    pub hostname: String,
    pub kernel_cmdline: String,
    pub gantry_args: Vec<String>,
}

/// Where `/usr/bin/gantry` comes from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GantryInput {
    /// `None`: the binary running the build.
    #[serde(default)]
    pub path: Option<PathBuf>,
    /// Strip debug symbols (binutils' `strip`) before installing it.
    #[serde(default = "yes")]
    pub strip: bool,
}

impl Default for GantryInput {
    fn default() -> Self {
        GantryInput {
            path: None,
            strip: true,
        }
    }
}

fn yes() -> bool {
    true
}

/// k3s and its air-gap images.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct K3s {
    pub version: String,
    pub binary: Source,
    pub airgap_images: Source,
}

/// A pinned file: downloaded from `url`, or read from `path`; either way it must hash to `sha256`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Source {
    #[serde(default)]
    pub url: Option<String>,
    #[serde(default)]
    pub path: Option<PathBuf>,
    pub sha256: Sha256,
}

/// An application container image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AppImage {
    /// Short name: the archive is `<name>.oci.tar`.
    pub name: String,
    /// `registry/repository:tag`.
    pub reference: String,
    /// `sha256:<hex>` of the manifest or index; empty = not pinned yet (a full build refuses).
    #[serde(default)]
    pub digest: String,
    /// A local OCI image-layout archive to use instead of pulling.
    #[serde(default)]
    pub archive: Option<PathBuf>,
}

/// A lowercase hex SHA-256 digest (64 characters).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Sha256(String);

impl Sha256 {
    /// The hex digits.
    pub fn hex(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for Sha256 {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        let s = s.strip_prefix("sha256:").unwrap_or(&s).to_ascii_lowercase();
        if s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit()) {
            Ok(Sha256(s))
        } else {
            Err(format!("`{s}` is not a sha256 digest (64 hex digits)"))
        }
    }
}

impl From<Sha256> for String {
    fn from(d: Sha256) -> String {
        d.0
    }
}

impl std::fmt::Display for Sha256 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl Config {
    /// The defaults from the repository; relative paths are taken from `base`.
    pub fn defaults(base: &Path) -> Result<Config> {
        Config::parse(DEFAULT_TOML, Path::new("<built-in image.toml>"), base)
    }

    /// Reads and validates a configuration file.
    pub fn load(path: &Path) -> Result<Config> {
        let text = std::fs::read_to_string(path).map_err(Error::io("reading", path))?;
        let base = path
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("."));
        Config::parse(&text, path, &base)
    }

    /// Parses and validates `text`; `path` names it in errors, `base` anchors relative paths.
    pub fn parse(text: &str, path: &Path, base: &Path) -> Result<Config> {
        let err = |message: String| Error::Config {
            path: path.to_path_buf(),
            message,
        };
        let mut cfg: Config = toml::from_str(text).map_err(|e| err(e.to_string()))?;
        cfg.validate().map_err(err)?;
        let abs = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        };
        if let Some(p) = cfg.gantry.path.as_mut() {
            abs(p);
        }
        for s in [&mut cfg.k3s.binary, &mut cfg.k3s.airgap_images] {
            if let Some(p) = s.path.as_mut() {
                abs(p);
            }
        }
        for a in &mut cfg.app_images {
            if let Some(p) = a.archive.as_mut() {
                abs(p);
            }
        }
        Ok(cfg)
    }

    fn validate(&self) -> std::result::Result<(), String> {
        let d = &self.debian;
        if !is_word(&d.suite) {
            return Err(format!("debian.suite `{}` is not a suite name", d.suite));
        }
        if !(d.mirror.starts_with("http://")
            || d.mirror.starts_with("https://")
            || d.mirror.starts_with("file:/"))
        {
            return Err(format!("debian.mirror `{}` is not a URL", d.mirror));
        }
        if !is_word(&d.kernel_flavour) {
            return Err(format!(
                "debian.kernel_flavour `{}` is not a flavour",
                d.kernel_flavour
            ));
        }
        for p in &d.packages {
            if !is_package_name(p) {
                return Err(format!("debian.packages: `{p}` is not a package name"));
            }
        }
        for p in d.path_exclude.iter().chain(&d.path_include) {
            if !p.starts_with('/') || p.contains(char::is_whitespace) || p.contains('\'') {
                return Err(format!("debian path filter `{p}` must be an absolute glob"));
            }
        }
        let k = &self.disk;
        if k.esp_mib < 64 || k.esp_mib > 4096 {
            return Err("disk.esp_mib must be within 64..=4096 (FAT32)".into());
        }
        if k.root_slot_mib < 256 {
            return Err("disk.root_slot_mib must be at least 256".into());
        }
        if k.data_mib < 64 {
            return Err("disk.data_mib must be at least 64".into());
        }
        if !(1..=9).contains(&k.boot_tries) {
            return Err("disk.boot_tries must be within 1..=9".into());
        }
        if !is_hostname(&self.system.hostname) {
            return Err(format!(
                "system.hostname `{}` is not a host name",
                self.system.hostname
            ));
        }
        if self.system.kernel_cmdline.contains('\n') {
            return Err("system.kernel_cmdline must be one line".into());
        }
        if self.system.gantry_args.is_empty() {
            return Err("system.gantry_args must name a subcommand".into());
        }
        for a in &self.system.gantry_args {
            if a.is_empty() || a.contains(|c: char| c.is_whitespace() || c == '"' || c == '\\') {
                return Err(format!(
                    "system.gantry_args: `{a}` must be one word without quotes"
                ));
            }
        }
        for (name, s) in [
            ("k3s.binary", &self.k3s.binary),
            ("k3s.airgap_images", &self.k3s.airgap_images),
        ] {
            if s.url.is_none() && s.path.is_none() {
                return Err(format!("{name} needs a url or a path"));
            }
        }
        let mut names = std::collections::BTreeSet::new();
        for a in &self.app_images {
            if !is_word(&a.name) || !names.insert(a.name.as_str()) {
                return Err(format!(
                    "app_images: name `{}` must be unique and a plain word",
                    a.name
                ));
            }
            if a.reference.is_empty() || a.reference.contains(char::is_whitespace) {
                return Err(format!("app_images.{}: bad reference", a.name));
            }
            if !a.digest.is_empty() {
                Sha256::try_from(a.digest.clone())
                    .map_err(|e| format!("app_images.{}: {e}", a.name))?;
                if !a.digest.starts_with("sha256:") {
                    return Err(format!(
                        "app_images.{}: digest must read sha256:<hex>",
                        a.name
                    ));
                }
            }
        }
        Ok(())
    }
}

fn is_word(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
}

fn is_package_name(s: &str) -> bool {
    s.len() >= 2
        && s.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric())
        && s.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'+' | b'-' | b'.')
        })
}

fn is_hostname(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && !s.starts_with('-')
        && !s.ends_with('-')
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn defaults() -> Config {
        Config::defaults(Path::new("/repo/image")).unwrap()
    }

    #[test]
    fn repository_defaults_parse_and_validate() {
        let c = defaults();
        assert_eq!(c.debian.suite, "bookworm");
        assert!(c.debian.packages.iter().any(|p| p == "systemd"));
        assert!(!c.debian.packages.iter().any(|p| p.contains("openssh")));
        assert_eq!(c.k3s.binary.sha256.hex().len(), 64);
        assert!(c.app_images.iter().any(|a| a.name == "rocketchat"));
        assert!(c.gantry.strip);
        assert_eq!(c.system.gantry_args[0], "run");
    }

    #[test]
    fn relative_paths_are_anchored_at_the_config_file() {
        let text = DEFAULT_TOML.replace(
            "# path = \"../target/release/gantry\"",
            "path = \"bin/gantry\"",
        );
        let c = Config::parse(&text, Path::new("x.toml"), Path::new("/cfg")).unwrap();
        assert_eq!(c.gantry.path.as_deref(), Some(Path::new("/cfg/bin/gantry")));
    }

    #[test]
    fn errors_name_the_file_and_the_field() {
        let bad = DEFAULT_TOML.replace("hostname = \"gantry\"", "hostname = \"bad host\"");
        let e = Config::parse(&bad, Path::new("my.toml"), Path::new("/")).unwrap_err();
        let s = e.to_string();
        assert!(
            s.contains("my.toml") && s.contains("system.hostname"),
            "{s}"
        );

        let bad = DEFAULT_TOML.replace("15811d34", "zz11d34");
        let s = Config::parse(&bad, Path::new("my.toml"), Path::new("/"))
            .unwrap_err()
            .to_string();
        assert!(s.contains("sha256"), "{s}");

        let bad = format!("{DEFAULT_TOML}\n[extra]\nx = 1\n");
        let s = Config::parse(&bad, Path::new("my.toml"), Path::new("/"))
            .unwrap_err()
            .to_string();
        assert!(s.contains("extra"), "{s}");

        let bad = DEFAULT_TOML.replace("boot_tries = 3", "boot_tries = 0");
        assert!(Config::parse(&bad, Path::new("x"), Path::new("/")).is_err());
        let bad = DEFAULT_TOML.replace("\"socat\",", "\"Bad Name\",");
        assert!(Config::parse(&bad, Path::new("x"), Path::new("/")).is_err());
    }

    #[test]
    fn digests_accept_a_prefix_and_reject_garbage() {
        let d = Sha256::try_from(format!("sha256:{}", "AB".repeat(32))).unwrap();
        assert_eq!(d.hex(), "ab".repeat(32));
        assert!(Sha256::try_from("abc".to_string()).is_err());
        assert!(Sha256::try_from("g".repeat(64)).is_err());
    }
}
