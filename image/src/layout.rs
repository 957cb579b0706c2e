//! The GPT disk layout: offsets, sizes, type GUIDs and the `sfdisk` script that writes it.
//!
//! ```text
//! | GPT | ESP (FAT32) | root A (EROFS) | root B (empty) | data (ext4, grows) | backup GPT |
//! ```
//! Every partition starts on a 1 MiB boundary; data is last so it can grow into the rest of
//! whatever disk the image is written to.

use serde::Serialize;
use uuid::Uuid;

use crate::config::Disk;
use crate::ids::Ids;

/// Bytes in a sector (the image is always written with 512-byte sectors).
pub const SECTOR: u64 = 512;
/// Partition alignment.
pub const MIB: u64 = 1024 * 1024;

/// GPT partition type: EFI System Partition.
pub const TYPE_ESP: &str = "C12A7328-F81F-11D2-BA4B-00A0C93EC93B";
/// GPT partition type: Linux root (x86-64), from the Discoverable Partitions Specification.
pub const TYPE_ROOT_X86_64: &str = "4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709";
/// GPT partition type: Linux file system data (not auto-mounted by systemd-gpt-auto-generator).
pub const TYPE_LINUX_DATA: &str = "0FC63DAF-8483-4772-8E79-3D69D8477DE4";

/// Partition names (GPT labels). fstab and scripts refer to `PARTLABEL=` so that a root slot
/// image is independent of the disk it is written to.
pub const LABEL_ESP: &str = "gantry-esp";
/// Label of root slot A.
pub const LABEL_ROOT_A: &str = "gantry-root-a";
/// Label of root slot B.
pub const LABEL_ROOT_B: &str = "gantry-root-b";
/// Label of the data partition.
pub const LABEL_DATA: &str = "gantry-data";

/// What a partition is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    Esp,
    RootA,
    RootB,
    Data,
}

/// One partition of the layout.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Partition {
    pub number: u32,
    pub role: Role,
    pub label: &'static str,
    pub type_guid: &'static str,
    pub uuid: Uuid,
    /// Byte offset from the start of the disk.
    pub offset: u64,
    /// Size in bytes.
    pub size: u64,
}

impl Partition {
    /// First sector.
    pub fn start_sector(&self) -> u64 {
        self.offset / SECTOR
    }
    /// Size in sectors.
    pub fn sectors(&self) -> u64 {
        self.size / SECTOR
    }
}

/// The whole disk.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Layout {
    pub disk_uuid: Uuid,
    /// Size of the image file in bytes.
    pub disk_size: u64,
    pub partitions: Vec<Partition>,
}

impl Layout {
    /// Lays the partitions out back to back from 1 MiB, leaving 1 MiB at the end for the
    /// backup GPT (which needs 33 sectors).
    pub fn new(disk: &Disk, ids: &Ids) -> Layout {
        let spec = [
            (
                Role::Esp,
                LABEL_ESP,
                TYPE_ESP,
                disk.esp_mib,
                ids.esp_partuuid,
            ),
            (
                Role::RootA,
                LABEL_ROOT_A,
                TYPE_ROOT_X86_64,
                disk.root_slot_mib,
                ids.root_a_partuuid,
            ),
            (
                Role::RootB,
                LABEL_ROOT_B,
                TYPE_ROOT_X86_64,
                disk.root_slot_mib,
                ids.root_b_partuuid,
            ),
            (
                Role::Data,
                LABEL_DATA,
                TYPE_LINUX_DATA,
                disk.data_mib,
                ids.data_partuuid,
            ),
        ];
        let mut offset = MIB;
        let mut partitions = Vec::with_capacity(spec.len());
        for (i, (role, label, type_guid, mib, uuid)) in spec.into_iter().enumerate() {
            let size = mib * MIB;
            partitions.push(Partition {
                number: u32::try_from(i + 1).unwrap_or(u32::MAX),
                role,
                label,
                type_guid,
                uuid,
                offset,
                size,
            });
            offset += size;
        }
        Layout {
            disk_uuid: ids.disk_uuid,
            disk_size: offset + MIB,
            partitions,
        }
    }

    /// The partition playing `role` (every role is present).
    pub fn get(&self, role: Role) -> &Partition {
        // Invariant: `new` creates exactly one partition per role, in enum order.
        let index = match role {
            Role::Esp => 0,
            Role::RootA => 1,
            Role::RootB => 2,
            Role::Data => 3,
        };
        &self.partitions[index]
    }

    /// Input for `sfdisk DISK < script`.
    pub fn sfdisk_script(&self) -> String {
        let mut s = format!(
            "label: gpt\nlabel-id: {}\nunit: sectors\nsector-size: {SECTOR}\nfirst-lba: 2048\n\n",
            self.disk_uuid.hyphenated().to_string().to_uppercase()
        );
        for p in &self.partitions {
            s.push_str(&format!(
                "start={}, size={}, type={}, uuid={}, name=\"{}\"\n",
                p.start_sector(),
                p.sectors(),
                p.type_guid,
                p.uuid.hyphenated().to_string().to_uppercase(),
                p.label
            ));
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layout() -> Layout {
        let disk = Disk {
            esp_mib: 256,
            root_slot_mib: 2048,
            data_mib: 256,
            boot_tries: 3,
        };
        Layout::new(&disk, &Ids::derive("seed"))
    }

    #[test]
    fn partitions_are_aligned_contiguous_and_fit_the_disk() {
        let l = layout();
        assert_eq!(l.partitions.len(), 4);
        let mut end = MIB;
        for p in &l.partitions {
            assert_eq!(p.offset % MIB, 0, "{p:?} not 1 MiB aligned");
            assert_eq!(p.offset, end, "gap before {p:?}");
            end = p.offset + p.size;
        }
        // 33 sectors of backup GPT must fit after the last partition.
        assert!(l.disk_size - end >= 33 * SECTOR);
        assert_eq!(l.disk_size, (1 + 256 + 2048 * 2 + 256 + 1) * MIB);
        assert_eq!(l.get(Role::RootB).size, l.get(Role::RootA).size);
        assert_eq!(l.get(Role::Data).number, 4, "data must be last to grow");
        assert_eq!(l.get(Role::Esp).start_sector(), 2048);
        assert_eq!(l.get(Role::RootA).start_sector(), 2048 + 256 * 2048);
    }

    #[test]
    fn sfdisk_script_names_every_partition_with_its_uuid() {
        let l = layout();
        let s = l.sfdisk_script();
        assert!(s.starts_with("label: gpt\n"));
        assert!(s.contains(&l.disk_uuid.to_string().to_uppercase()));
        for p in &l.partitions {
            let line = format!(
                "start={}, size={}, type={}, uuid={}, name=\"{}\"",
                p.start_sector(),
                p.sectors(),
                p.type_guid,
                p.uuid.to_string().to_uppercase(),
                p.label
            );
            assert!(s.contains(&line), "missing {line} in\n{s}");
        }
    }
}
