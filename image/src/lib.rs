//! The image builder behind `gantry build`: turns pinned inputs into a flashable appliance disk.
//!
//! It owns the whole path from inputs to disk: the build configuration (`image.toml`, with
//! defaults compiled in), fetching and verifying pinned downloads into a content-addressed cache
//! (k3s, its air-gap images, the app images pulled by digest into OCI archives), the Debian root
//! file system (mmdebstrap) with the files Gantry adds to it (systemd units, console banner,
//! fstab, network, journal), the disk layout (GPT: ESP with systemd-boot and one boot-counted
//! entry per slot, root slots A and B, a data partition grown on first boot), the file systems
//! (EROFS root, ext4 data, FAT ESP, made from directories: no loop devices, no mounts), and
//! the outputs (raw, compressed qcow2, root-slot image, manifest, SHA256SUMS), reproducible from
//! `SOURCE_DATE_EPOCH` and UUIDs derived from the inputs.
//!
//! ```text
//! image.toml ─▶ config ─▶ fetch/oci (cache) ─┐
//!                 files (units, scripts) ────┼─▶ build: mmdebstrap ─▶ mkfs.erofs/ext4/vfat
//!                 ids ─▶ layout (GPT) ───────┘          ─▶ sfdisk + sparse copy ─▶ qemu-img
//!                                                        ─▶ manifest + SHA256SUMS
//! ```
//!
//! It runs at build time only, as root, driving Debian's tools (it says which package is missing
//! when one is). It never runs on the appliance's request path, does not depend on the proxy,
//! supervisor or web UI crates, and does not boot what it builds (`ci/image-test` does). It
//! does not write slot B or sign anything: that is the upgrade's job, which this layout is
//! designed for. Its only contract with `gantry run` is the one in [`files`] (the banner's
//! `/run/gantry` files) and the unit that starts it.

pub mod build;
pub mod config;
mod error;
pub mod fetch;
pub mod files;
pub mod ids;
pub mod layout;
pub mod manifest;
pub mod oci;
pub mod tools;

pub use build::{BuildOptions, BuildReport, Progress, build};
pub use config::Config;
pub use error::{Error, Result};
pub use fetch::Cache;

/// Installs ring as rustls's process-wide crypto provider (the workspace's choice) if none is.
pub(crate) fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}
