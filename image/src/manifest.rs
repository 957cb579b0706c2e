//! The build manifest (`gantry-<version>.manifest.json`) and `SHA256SUMS`.

use serde::{Deserialize, Serialize};

use crate::layout::Layout;

/// Format version of the manifest.
pub const FORMAT: u32 = 1;

/// Everything that went into an image, and what came out.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub format: u32,
    pub name: String,
    pub version: String,
    /// `full`, or `no-cluster` (no k3s, no app images).
    pub variant: String,
    pub source_date_epoch: u64,
    /// Digest of the inputs; every UUID of the image derives from it.
    pub build_seed: String,
    pub inputs: Vec<Input>,
    pub debian: DebianRecord,
    pub partitions: Vec<PartitionRecord>,
    pub outputs: Vec<Output>,
}

/// One pinned input.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Input {
    pub name: String,
    /// Where it came from: a URL, a registry reference or a local path.
    pub source: String,
    /// `sha256:<hex>` of the file, or of the image manifest for container images.
    pub digest: String,
}

/// The Debian side of the root file system.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DebianRecord {
    pub suite: String,
    pub mirror: String,
    pub kernel: String,
    /// Installed packages and versions (`dpkg-query`), sorted by name.
    pub packages: Vec<Package>,
}

/// An installed Debian package.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Package {
    pub name: String,
    pub version: String,
}

/// One GPT partition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionRecord {
    pub number: u32,
    pub label: String,
    pub type_guid: String,
    pub uuid: String,
    pub offset: u64,
    pub size: u64,
}

/// One output file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Output {
    pub file: String,
    pub bytes: u64,
    pub sha256: String,
}

impl PartitionRecord {
    /// The records of a layout.
    pub fn of(layout: &Layout) -> Vec<PartitionRecord> {
        layout
            .partitions
            .iter()
            .map(|p| PartitionRecord {
                number: p.number,
                label: p.label.to_string(),
                type_guid: p.type_guid.to_string(),
                uuid: p.uuid.to_string(),
                offset: p.offset,
                size: p.size,
            })
            .collect()
    }
}

/// Parses `dpkg-query -W -f '${Package}\t${Version}\n'` output, sorted by name.
pub fn parse_packages(text: &str) -> Vec<Package> {
    let mut v: Vec<Package> = text
        .lines()
        .filter_map(|l| l.split_once('\t'))
        .map(|(n, v)| Package {
            name: n.trim().to_string(),
            version: v.trim().to_string(),
        })
        .filter(|p| !p.name.is_empty())
        .collect();
    v.sort_by(|a, b| a.name.cmp(&b.name));
    v
}

impl Manifest {
    /// Pretty JSON with a final newline.
    pub fn to_json(&self) -> String {
        // Serializing plain strings and numbers cannot fail.
        let mut s = serde_json::to_string_pretty(self).unwrap_or_default();
        s.push('\n');
        s
    }
}

/// `SHA256SUMS` in the format `sha256sum -c` reads, sorted by file name.
pub fn sha256sums(outputs: &[Output]) -> String {
    let mut v: Vec<&Output> = outputs.iter().collect();
    v.sort_by(|a, b| a.file.cmp(&b.file));
    v.iter()
        .map(|o| format!("{}  {}\n", o.sha256, o.file))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Disk;
    use crate::ids::Ids;

    fn manifest() -> Manifest {
        let layout = Layout::new(
            &Disk {
                esp_mib: 256,
                root_slot_mib: 1024,
                data_mib: 256,
                boot_tries: 3,
            },
            &Ids::derive("s"),
        );
        Manifest {
            format: FORMAT,
            name: "gantry".into(),
            version: "0.1.0".into(),
            variant: "no-cluster".into(),
            source_date_epoch: 1,
            build_seed: "s".into(),
            inputs: vec![Input {
                name: "gantry".into(),
                source: "/usr/bin/gantry".into(),
                digest: format!("sha256:{}", "a".repeat(64)),
            }],
            debian: DebianRecord {
                suite: "bookworm".into(),
                mirror: "http://deb.debian.org/debian".into(),
                kernel: "6.1.0-1-cloud-amd64".into(),
                packages: parse_packages("systemd\t252.39-1\nbash\t5.2\n\n"),
            },
            partitions: PartitionRecord::of(&layout),
            outputs: vec![
                Output {
                    file: "gantry-0.1.0.raw".into(),
                    bytes: 10,
                    sha256: "b".repeat(64),
                },
                Output {
                    file: "gantry-0.1.0.qcow2".into(),
                    bytes: 5,
                    sha256: "c".repeat(64),
                },
            ],
        }
    }

    #[test]
    fn manifest_round_trips_and_names_its_parts() {
        let m = manifest();
        let json = m.to_json();
        let back: Manifest = serde_json::from_str(&json).unwrap();
        assert_eq!(back, m);
        let v: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(v["variant"], "no-cluster");
        assert_eq!(v["partitions"][3]["label"], "gantry-data");
        assert_eq!(
            v["debian"]["packages"][0]["name"], "bash",
            "packages sorted"
        );
        assert_eq!(v["debian"]["packages"].as_array().unwrap().len(), 2);
        assert!(json.ends_with("}\n"));
    }

    #[test]
    fn sha256sums_is_sorted_and_checkable() {
        let s = sha256sums(&manifest().outputs);
        assert_eq!(
            s,
            format!(
                "{}  gantry-0.1.0.qcow2\n{}  gantry-0.1.0.raw\n",
                "c".repeat(64),
                "b".repeat(64)
            )
        );
    }
}
