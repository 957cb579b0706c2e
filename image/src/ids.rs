//! Fixed identifiers derived from the build inputs, so that two builds of the same inputs
//! produce the same partition table and file systems.

use sha2::{Digest, Sha256};
use uuid::Uuid;

/// Namespace of Gantry's name-based (version 5) UUIDs.
pub const NAMESPACE: Uuid = Uuid::from_u128(0x6a2f_1c0e_5b7d_4e39_9d41_7c2b_ab80_e113);

/// Every identifier baked into an image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ids {
    /// The hex seed the others derive from (recorded in the manifest).
    pub seed: String,
    pub disk_uuid: Uuid,
    pub esp_partuuid: Uuid,
    pub root_a_partuuid: Uuid,
    pub root_b_partuuid: Uuid,
    pub data_partuuid: Uuid,
    /// File system UUID of the root slot image (the same whichever slot it is written to).
    pub root_fs_uuid: Uuid,
    pub data_fs_uuid: Uuid,
    /// ext4 directory hash seed of the data file system.
    pub data_hash_seed: Uuid,
    /// FAT volume id of the ESP (8 hex digits).
    pub esp_volume_id: String,
}

impl Ids {
    /// Derives every identifier from `seed` (the digest of the build inputs).
    pub fn derive(seed: &str) -> Ids {
        let u = |purpose: &str| Uuid::new_v5(&NAMESPACE, format!("{seed}/{purpose}").as_bytes());
        let vol = u("esp-volume-id");
        Ids {
            seed: seed.to_string(),
            disk_uuid: u("disk"),
            esp_partuuid: u("partition/esp"),
            root_a_partuuid: u("partition/root-a"),
            root_b_partuuid: u("partition/root-b"),
            data_partuuid: u("partition/data"),
            root_fs_uuid: u("fs/root"),
            data_fs_uuid: u("fs/data"),
            data_hash_seed: u("fs/data/hash-seed"),
            esp_volume_id: vol.simple().to_string()[..8].to_string(),
        }
    }
}

/// The seed of a build: SHA-256 over the ordered `(name, value)` pairs that define it.
pub fn seed<'a>(parts: impl IntoIterator<Item = (&'a str, &'a str)>) -> String {
    let mut h = Sha256::new();
    for (k, v) in parts {
        // Length-prefixed so that no two different lists hash alike.
        h.update((k.len() as u64).to_le_bytes());
        h.update(k.as_bytes());
        h.update((v.len() as u64).to_le_bytes());
        h.update(v.as_bytes());
    }
    format!("{:x}", h.finalize())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_ids_and_all_distinct() {
        let a = Ids::derive("abc");
        assert_eq!(a, Ids::derive("abc"));
        let all = [
            a.disk_uuid,
            a.esp_partuuid,
            a.root_a_partuuid,
            a.root_b_partuuid,
            a.data_partuuid,
            a.root_fs_uuid,
            a.data_fs_uuid,
            a.data_hash_seed,
        ];
        let set: std::collections::BTreeSet<_> = all.iter().collect();
        assert_eq!(set.len(), all.len());
        assert_eq!(a.disk_uuid.get_version_num(), 5);
        assert_eq!(a.esp_volume_id.len(), 8);
        assert!(a.esp_volume_id.bytes().all(|b| b.is_ascii_hexdigit()));
    }

    #[test]
    fn different_inputs_give_different_ids() {
        assert_ne!(Ids::derive("abc").disk_uuid, Ids::derive("abd").disk_uuid);
        assert_ne!(seed([("a", "bc")]), seed([("ab", "c")]));
        assert_eq!(seed([("a", "b")]), seed([("a", "b")]));
    }

    #[test]
    fn derivation_is_stable_across_releases() {
        // Changing NAMESPACE or the purposes would change every image's ids: pin one value.
        let ids = Ids::derive("0000");
        assert_eq!(
            ids.disk_uuid,
            Uuid::new_v5(&NAMESPACE, b"0000/disk"),
            "derivation scheme changed"
        );
        assert_eq!(
            NAMESPACE.to_string(),
            "6a2f1c0e-5b7d-4e39-9d41-7c2bab80e113"
        );
    }
}
