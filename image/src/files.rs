//! Files Gantry adds to the Debian root file system and to the ESP: systemd units, scripts,
//! fstab, network and journal settings, boot entries. Pure functions, so the appliance's
//! boot-time behaviour is reviewable (and unit-tested) without building a disk.
//!
//! Contract with `gantry run` (the console banner, `usr/lib/gantry/banner`):
//! - while the first-run setup is pending, `gantry run` writes the setup token (one line, mode
//!   0600) to `/run/gantry/setup-token`, and removes it once setup is complete;
//! - once it serves the admin UI it creates `/run/gantry/ready`;
//! - it may write the wizard URLs, one per line, to `/run/gantry/urls` (default:
//!   `https://<each global IPv4 address>/`).
//!
//! `gantry-banner.path` watches `/run/gantry`; on every change `gantry-banner.service` renders
//! `/run/issue.d/50-gantry.issue` (shown by getty above the login prompt), prints the banner on
//! the console and asks running gettys to redraw (`agetty --reload`).

use crate::layout::{LABEL_DATA, LABEL_ESP};

/// A file to create, relative to the root of the tree it goes into.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct File {
    pub path: String,
    pub mode: u32,
    pub content: String,
}

fn file(path: &str, mode: u32, content: impl Into<String>) -> File {
    File {
        path: path.to_string(),
        mode,
        content: content.into(),
    }
}

/// What the root file system files depend on.
#[derive(Debug, Clone)]
pub struct RootParams<'a> {
    pub version: &'a str,
    /// `full` or `no-cluster`.
    pub variant: &'a str,
    pub seed: &'a str,
    pub source_date_epoch: u64,
    pub hostname: &'a str,
    pub gantry_args: &'a [String],
    /// `None` for a `--no-cluster` image.
    pub k3s_version: Option<&'a str>,
    /// File names in `/usr/lib/gantry/k3s/images/` linked into k3s's agent/images directory.
    pub k3s_image_files: &'a [String],
}

/// Units enabled in the image (`systemctl enable` in the chroot).
pub const ENABLED_UNITS: &[&str] = &[
    "systemd-networkd.service",
    "systemd-resolved.service",
    "gantry.service",
    "gantry-banner.path",
    "gantry-banner.service",
];

/// Where k3s image archives are kept in the (read-only, versioned) root slot.
pub const K3S_IMAGES_DIR: &str = "usr/lib/gantry/k3s/images";

/// The files Gantry adds to the root file system.
pub fn root_files(p: &RootParams<'_>) -> Vec<File> {
    let mut v = vec![
        file("usr/lib/gantry/release", 0o644, release(p)),
        file("etc/hostname", 0o644, format!("{}\n", p.hostname)),
        file(
            "etc/hosts",
            0o644,
            format!(
                "127.0.0.1\tlocalhost\n127.0.1.1\t{}\n::1\tlocalhost ip6-localhost ip6-loopback\n",
                p.hostname
            ),
        ),
        file("etc/fstab", 0o644, fstab()),
        file(
            "etc/systemd/network/80-gantry-wired.network",
            0o644,
            NETWORK,
        ),
        file(
            "etc/systemd/system/systemd-networkd-wait-online.service.d/gantry.conf",
            0o644,
            WAIT_ONLINE,
        ),
        file("etc/systemd/journald.conf.d/gantry.conf", 0o644, JOURNALD),
        file(
            "usr/lib/systemd/system/gantry.service",
            0o644,
            gantry_service(p.gantry_args),
        ),
        file(
            "usr/lib/systemd/system/gantry-banner.service",
            0o644,
            BANNER_SERVICE,
        ),
        file(
            "usr/lib/systemd/system/gantry-banner.path",
            0o644,
            BANNER_PATH,
        ),
        file("usr/lib/gantry/banner", 0o755, BANNER_SH),
        file(
            "usr/lib/tmpfiles.d/gantry.conf",
            0o644,
            tmpfiles(p.k3s_image_files),
        ),
    ];
    v.sort_by(|a, b| a.path.cmp(&b.path));
    v
}

/// Directories the data partition starts with (relative to its root, mounted at `/var`).
pub const DATA_DIRS: &[(&str, u32)] = &[
    ("lib/gantry", 0o700),
    ("lib/rancher", 0o755),
    ("lib/gantry-etc", 0o755),
    ("lib/gantry-etc/rancher", 0o755),
    ("log/journal", 0o2755),
];

/// Empty directories (mount points) the root file system must have.
pub const ROOT_DIRS: &[&str] = &["efi", "etc/rancher", "var"];

fn release(p: &RootParams<'_>) -> String {
    format!(
        "GANTRY_VERSION='{}'\nGANTRY_VARIANT='{}'\nGANTRY_K3S_VERSION='{}'\nGANTRY_BUILD_SEED='{}'\nSOURCE_DATE_EPOCH='{}'\n",
        p.version,
        p.variant,
        p.k3s_version.unwrap_or(""),
        p.seed,
        p.source_date_epoch
    )
}

fn fstab() -> String {
    format!(
        "# Gantry appliance. The root file system is the read-only slot the initrd mounted\n\
         # (root=PARTUUID=... ro in the boot entry), so it has no line here.\n\
         PARTLABEL={LABEL_DATA}\t/var\text4\tdefaults,noatime,x-systemd.growfs\t0 2\n\
         PARTLABEL={LABEL_ESP}\t/efi\tvfat\tumask=0077,noauto,x-systemd.automount,x-systemd.idle-timeout=60\t0 0\n\
         tmpfs\t/tmp\ttmpfs\tmode=1777,nosuid,nodev,size=25%\t0 0\n\
         /var/lib/gantry-etc/rancher\t/etc/rancher\tnone\tbind,x-systemd.requires-mounts-for=/var\t0 0\n"
    )
}

fn gantry_service(args: &[String]) -> String {
    format!(
        "[Unit]\n\
         Description=Gantry appliance (ingress proxy, supervisor, web UI)\n\
         Documentation=file:/usr/lib/gantry/release\n\
         Wants=network-online.target\n\
         After=network-online.target\n\
         RequiresMountsFor=/var/lib/gantry /var/lib/rancher /etc/rancher\n\
         StartLimitIntervalSec=0\n\
         \n\
         [Service]\n\
         Type=notify\n\
         NotifyAccess=main\n\
         ExecStart=/usr/bin/gantry {}\n\
         Restart=always\n\
         RestartSec=5s\n\
         # gantry supervises k3s as a child: it needs its own cgroup subtree and many files.\n\
         Delegate=yes\n\
         KillMode=mixed\n\
         TimeoutStopSec=120s\n\
         LimitNOFILE=1048576\n\
         \n\
         [Install]\n\
         WantedBy=multi-user.target\n",
        args.join(" ")
    )
}

fn tmpfiles(k3s_images: &[String]) -> String {
    let mut s = String::from(
        "# Gantry: state lives on the data partition (/var); runtime files in /run/gantry.\n\
         d /run/gantry 0755 root root -\n\
         d /var/lib/gantry 0700 root root -\n\
         d /var/lib/rancher 0755 root root -\n\
         d /var/lib/gantry-etc/rancher 0755 root root -\n",
    );
    if !k3s_images.is_empty() {
        // k3s imports every archive in agent/images at start; the archives stay in the root slot
        // (so an upgrade brings its own), linked from the data partition.
        s.push_str("d /var/lib/rancher/k3s/agent/images 0755 root root -\n");
        for f in k3s_images {
            s.push_str(&format!(
                "L+ /var/lib/rancher/k3s/agent/images/{f} - - - - /{K3S_IMAGES_DIR}/{f}\n"
            ));
        }
    }
    s
}

const NETWORK: &str = "\
# Gantry: DHCP on every wired link (not on the links k3s makes: cni0, flannel.1, veth*).
[Match]
Type=ether
Name=en* eth*

[Network]
DHCP=yes
IPv6AcceptRA=yes

[DHCPv4]
# A stable lease per network card, whatever the (transient) machine id.
ClientIdentifier=mac
";

const WAIT_ONLINE: &str = "\
# Gantry: one configured link is enough to be online.
[Service]
ExecStart=
ExecStart=/lib/systemd/systemd-networkd-wait-online --any --timeout=60
";

const JOURNALD: &str = "\
# Gantry: keep the journal on the data partition (/var/log/journal), bounded.
[Journal]
Storage=persistent
SystemMaxUse=512M
";

const BANNER_SERVICE: &str = "\
[Unit]
Description=Gantry console banner (wizard URL and setup token)
Wants=network-online.target
After=network-online.target systemd-growfs@var.service

[Service]
Type=oneshot
ExecStart=/usr/lib/gantry/banner
StandardOutput=journal+console

[Install]
WantedBy=multi-user.target
";

const BANNER_PATH: &str = "\
[Unit]
Description=Redraw the Gantry console banner when gantry updates /run/gantry

[Path]
PathChanged=/run/gantry
MakeDirectory=yes
Unit=gantry-banner.service

[Install]
WantedBy=paths.target
";

/// The console banner (see the module doc for the contract with `gantry run`).
pub const BANNER_SH: &str = r#"#!/bin/sh
# Gantry console banner: wizard URL(s), setup token, boot slot. See gantry-banner.path.
set -u
run=${GANTRY_RUN_DIR:-/run/gantry}
issue=${GANTRY_ISSUE_FILE:-/run/issue.d/50-gantry.issue}
release=${GANTRY_RELEASE_FILE:-/usr/lib/gantry/release}
cmdline=${GANTRY_CMDLINE_FILE:-/proc/cmdline}
mounts=${GANTRY_MOUNTS_FILE:-/proc/mounts}
GANTRY_VERSION=unknown
GANTRY_VARIANT=unknown
[ -r "$release" ] && . "$release"

slot=unknown
for word in $(cat "$cmdline" 2>/dev/null); do
  case $word in gantry.slot=*) slot=${word#gantry.slot=} ;; esac
done
root=$(awk '$2 == "/" { split($4, o, ","); m = o[1] } END { print m }' "$mounts" 2>/dev/null)
data=$(df -P -m /var 2>/dev/null | awk 'NR == 2 { print $2 }')

if [ -s "$run/urls" ]; then
  urls=$(cat "$run/urls")
else
  urls=$(ip -4 -o addr show scope global 2>/dev/null | awk '{ split($4, a, "/"); print "https://" a[1] "/" }')
fi
if [ -s "$run/setup-token" ]; then
  token=$(head -n 1 "$run/setup-token")
elif [ -e "$run/ready" ]; then
  token="(setup is complete: sign in to the admin UI)"
else
  token="(waiting for gantry to start)"
fi

banner() {
  echo "Gantry $GANTRY_VERSION ($GANTRY_VARIANT), booted from slot $slot"
  if [ -n "$urls" ]; then
    for u in $urls; do echo "  Setup wizard:  $u"; done
  else
    echo "  Setup wizard:  ${1:-(no network address yet)}"
  fi
  echo "  Setup token:   $token"
}

mkdir -p "${issue%/*}"
{ echo; banner 'https://\4/'; echo; } | sed 's/\\\([^4]\)/\\\\\1/g' > "$issue.tmp" && mv -f "$issue.tmp" "$issue"
banner
echo "gantry-status: version=$GANTRY_VERSION variant=$GANTRY_VARIANT slot=$slot root=${root:-unknown} data_mib=${data:-unknown}"
agetty --reload 2>/dev/null || true
"#;

/// Files that must be in place before the kernel's initrd is generated (mmdebstrap's essential
/// hook): the EROFS module, and growing the data partition in the initrd, before anything is
/// mounted from the disk (growing it later makes udev re-probe a mounted partition, and systemd
/// unmounts what is bound to a device that briefly disappears).
pub fn initrd_files() -> Vec<File> {
    vec![
        file(
            "usr/share/initramfs-tools/modules.d/gantry.conf",
            0o644,
            "erofs\n",
        ),
        file("usr/share/initramfs-tools/hooks/gantry", 0o755, INITRD_HOOK),
        file(
            "usr/share/initramfs-tools/scripts/local-premount/gantry-grow-data",
            0o755,
            GROW_SH,
        ),
    ]
}

const INITRD_HOOK: &str = r#"#!/bin/sh
# Gantry: sfdisk in the initrd, for scripts/local-premount/gantry-grow-data.
[ "$1" = prereqs ] && exit 0
. /usr/share/initramfs-tools/hook-functions
copy_exec /usr/sbin/sfdisk /usr/sbin
"#;

/// Grows the data partition in the initrd (initramfs-tools `local-premount`). Plain POSIX sh and
/// sysfs only: the initrd has no awk, grep or readlink -f. Never fails the boot.
pub const GROW_SH: &str = r#"#!/bin/sh
# Gantry: grow the data partition (the disk's last) to the end of its disk once the image was
# written to a larger disk. The ext4 file system follows when /var is mounted (x-systemd.growfs).
case "$1" in prereqs) exit 0 ;; esac
sys=${GANTRY_SYS:-/sys}
dev=${GANTRY_DEV:-/dev}
sfdisk=${GANTRY_SFDISK:-sfdisk}
label=${GANTRY_DATA_LABEL:-gantry-data}
part=
for d in "$sys"/class/block/*; do
  [ -e "$d/partition" ] || continue
  while read -r line; do
    [ "$line" = "PARTNAME=$label" ] && part=$d
  done < "$d/uevent"
done
if [ -z "$part" ]; then
  echo "gantry-grow-data: no partition named $label"
  exit 0
fi
disk_sys=$(cd -P "$part/.." && pwd -P)
disk=$dev/${disk_sys##*/}
read -r num < "$part/partition"
read -r start < "$part/start"
read -r size < "$part/size"
read -r total < "$disk_sys/size"
# Units of 512 bytes; the backup GPT takes the last 33 sectors. Grow for 16 MiB or more.
free=$((total - 34 - start - size))
if [ "$free" -lt 32768 ]; then
  echo "gantry-grow-data: $dev/${part##*/} already fills $disk"
  exit 0
fi
echo "gantry-grow-data: growing $dev/${part##*/} by $((free / 2048)) MiB"
echo ', +' | "$sfdisk" --quiet -N "$num" "$disk" || echo "gantry-grow-data: sfdisk failed; data keeps its size"
command -v udevadm >/dev/null 2>&1 && udevadm settle
exit 0
"#;

/// One slot's kernel command line.
pub fn kernel_cmdline(root_partuuid: &uuid::Uuid, slot: char, extra: &str) -> String {
    format!("root=PARTUUID={root_partuuid} rootfstype=erofs ro gantry.slot={slot} {extra}")
        .trim_end()
        .to_string()
}

/// The systemd-boot entry for `slot` (`a` or `b`), named for boot counting: `gantry-a+3.conf`
/// is tried three times, then sorted last; systemd-bless-boot renames it `gantry-a.conf` once
/// the boot reached boot-complete.target.
pub fn boot_entry(slot: char, version: &str, tries: u8, cmdline: &str) -> (String, String) {
    let name = format!("gantry-{slot}+{tries}.conf");
    let body = format!(
        "title Gantry {version} (slot {upper})\n\
         version {version}\n\
         sort-key gantry\n\
         linux /EFI/gantry/{slot}/vmlinuz\n\
         initrd /EFI/gantry/{slot}/initrd.img\n\
         options {cmdline}\n",
        upper = slot.to_ascii_uppercase()
    );
    (name, body)
}

/// systemd-boot's `loader.conf`: boot the best `gantry-*` entry at once (hold a key for the
/// menu). With boot counting, an entry out of tries sorts last, so the other slot wins.
pub const LOADER_CONF: &str = "default gantry-*\ntimeout 0\neditor no\nconsole-mode keep\n";

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    fn params() -> RootParams<'static> {
        static ARGS: std::sync::OnceLock<Vec<String>> = std::sync::OnceLock::new();
        static IMAGES: std::sync::OnceLock<Vec<String>> = std::sync::OnceLock::new();
        RootParams {
            version: "1.2.3",
            variant: "full",
            seed: "abc",
            source_date_epoch: 1_700_000_000,
            hostname: "gantry",
            gantry_args: ARGS.get_or_init(|| {
                ["run", "--data-dir", "/var/lib/gantry"]
                    .map(String::from)
                    .to_vec()
            }),
            k3s_version: Some("v1.34.2+k3s1"),
            k3s_image_files: IMAGES.get_or_init(|| vec!["rocketchat.oci.tar".to_string()]),
        }
    }

    fn get<'a>(files: &'a [File], path: &str) -> &'a File {
        files.iter().find(|f| f.path == path).unwrap()
    }

    #[test]
    fn gantry_service_is_notify_always_restarted_and_runs_gantry_run() {
        let files = root_files(&params());
        let unit = &get(&files, "usr/lib/systemd/system/gantry.service").content;
        assert!(unit.contains("Type=notify\n"));
        assert!(unit.contains("Restart=always\n"));
        assert!(unit.contains("ExecStart=/usr/bin/gantry run --data-dir /var/lib/gantry\n"));
        assert!(unit.contains("WantedBy=multi-user.target"));
    }

    #[test]
    fn state_directories_are_on_the_data_partition() {
        let files = root_files(&params());
        let fstab = &get(&files, "etc/fstab").content;
        assert!(
            fstab.contains(
                "PARTLABEL=gantry-data\t/var\text4\tdefaults,noatime,x-systemd.growfs\t0 2"
            )
        );
        assert!(fstab.contains("/var/lib/gantry-etc/rancher\t/etc/rancher\tnone\tbind"));
        assert!(
            !fstab.contains("\t/\t"),
            "root must stay as the initrd mounted it (ro)"
        );
        let data: Vec<_> = DATA_DIRS.iter().map(|(d, _)| *d).collect();
        for d in [
            "lib/gantry",
            "lib/rancher",
            "lib/gantry-etc/rancher",
            "log/journal",
        ] {
            assert!(data.contains(&d), "{d}");
        }
        let journald = &get(&files, "etc/systemd/journald.conf.d/gantry.conf").content;
        assert!(journald.contains("Storage=persistent"));
    }

    #[test]
    fn k3s_archives_are_linked_into_agent_images() {
        let files = root_files(&params());
        let t = &get(&files, "usr/lib/tmpfiles.d/gantry.conf").content;
        assert!(t.contains(
            "L+ /var/lib/rancher/k3s/agent/images/rocketchat.oci.tar - - - - /usr/lib/gantry/k3s/images/rocketchat.oci.tar"
        ));
        let mut p = params();
        p.k3s_image_files = &[];
        let files = root_files(&p);
        let t = &get(&files, "usr/lib/tmpfiles.d/gantry.conf").content;
        assert!(!t.contains("k3s"));
    }

    #[test]
    fn files_are_sorted_and_units_exist_for_what_is_enabled() {
        let files = root_files(&params());
        let paths: Vec<_> = files.iter().map(|f| f.path.clone()).collect();
        let mut sorted = paths.clone();
        sorted.sort();
        assert_eq!(paths, sorted);
        for u in ENABLED_UNITS.iter().filter(|u| u.starts_with("gantry")) {
            assert!(
                paths.contains(&format!("usr/lib/systemd/system/{u}")),
                "{u} enabled but not shipped"
            );
        }
    }

    #[test]
    fn boot_entries_count_tries_and_name_their_slot() {
        let uuid = uuid::Uuid::nil();
        let cmd = kernel_cmdline(&uuid, 'b', "console=ttyS0");
        assert_eq!(
            cmd,
            "root=PARTUUID=00000000-0000-0000-0000-000000000000 rootfstype=erofs ro gantry.slot=b console=ttyS0"
        );
        let (name, body) = boot_entry('b', "1.2.3", 3, &cmd);
        assert_eq!(name, "gantry-b+3.conf");
        assert!(body.contains("linux /EFI/gantry/b/vmlinuz\n"));
        assert!(body.contains("initrd /EFI/gantry/b/initrd.img\n"));
        assert!(body.contains(&format!("options {cmd}\n")));
        assert!(LOADER_CONF.contains("default gantry-*"));
    }

    /// Runs the real banner script with `sh` against fixture files.
    fn banner(dir: &std::path::Path) -> (String, String) {
        let script = dir.join("banner");
        std::fs::write(&script, BANNER_SH).unwrap();
        std::fs::write(dir.join("release"), release(&params())).unwrap();
        std::fs::write(dir.join("cmdline"), "root=x ro gantry.slot=b quiet\n").unwrap();
        std::fs::write(dir.join("mounts"), "/dev/vda2 / erofs ro,relatime 0 0\n").unwrap();
        let out = Command::new("sh")
            .arg(&script)
            .env("GANTRY_RUN_DIR", dir.join("run"))
            .env("GANTRY_ISSUE_FILE", dir.join("issue.d/50-gantry.issue"))
            .env("GANTRY_RELEASE_FILE", dir.join("release"))
            .env("GANTRY_CMDLINE_FILE", dir.join("cmdline"))
            .env("GANTRY_MOUNTS_FILE", dir.join("mounts"))
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        let issue = std::fs::read_to_string(dir.join("issue.d/50-gantry.issue")).unwrap();
        (String::from_utf8(out.stdout).unwrap(), issue)
    }

    #[test]
    fn banner_shows_token_urls_and_slot() {
        let dir = tempfile::tempdir().unwrap();
        let run = dir.path().join("run");
        std::fs::create_dir_all(&run).unwrap();
        std::fs::write(
            run.join("urls"),
            "https://192.0.2.7/\nhttps://gantry.example/\n",
        )
        .unwrap();
        std::fs::write(run.join("setup-token"), "tok-123\n").unwrap();
        let (console, issue) = banner(dir.path());
        assert!(
            console.contains("Gantry 1.2.3 (full), booted from slot b"),
            "{console}"
        );
        assert!(console.contains("  Setup wizard:  https://192.0.2.7/\n"));
        assert!(console.contains("  Setup wizard:  https://gantry.example/\n"));
        assert!(console.contains("  Setup token:   tok-123\n"));
        assert!(console.contains("gantry-status: version=1.2.3 variant=full slot=b root=ro"));
        assert!(issue.contains("Setup token:   tok-123"), "{issue}");
        assert!(!issue.contains("gantry-status"));

        std::fs::remove_file(run.join("setup-token")).unwrap();
        std::fs::write(run.join("ready"), "").unwrap();
        let (console, _) = banner(dir.path());
        assert!(console.contains("setup is complete"), "{console}");
    }

    #[test]
    fn banner_without_gantry_or_addresses_says_what_it_waits_for() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("run")).unwrap();
        std::fs::write(dir.path().join("run/urls"), "").unwrap();
        let (console, issue) = banner(dir.path());
        assert!(
            console.contains("(waiting for gantry to start)"),
            "{console}"
        );
        // With no URL from gantry, the issue file falls back to agetty's \4 (IPv4 address),
        // whatever `ip` finds on the machine running the test.
        if !console.contains("https://") {
            assert!(issue.contains("https://\\4/"), "{issue}");
        }
    }

    /// A fake sysfs with disk `vda` of `total` sectors and partition 4 named gantry-data.
    fn fake_sys(dir: &std::path::Path, start: u64, size: u64, total: u64) {
        let disk = dir.join("sys/devices/pci0/virtio2/block/vda");
        let part = disk.join("vda4");
        std::fs::create_dir_all(&part).unwrap();
        std::fs::write(disk.join("size"), format!("{total}\n")).unwrap();
        std::fs::write(part.join("partition"), "4\n").unwrap();
        std::fs::write(part.join("start"), format!("{start}\n")).unwrap();
        std::fs::write(part.join("size"), format!("{size}\n")).unwrap();
        std::fs::write(
            part.join("uevent"),
            "MAJOR=254\nDEVNAME=vda4\nPARTN=4\nPARTNAME=gantry-data\n",
        )
        .unwrap();
        let class = dir.join("sys/class/block");
        std::fs::create_dir_all(&class).unwrap();
        std::os::unix::fs::symlink(
            "../../devices/pci0/virtio2/block/vda/vda4",
            class.join("vda4"),
        )
        .unwrap();
        std::os::unix::fs::symlink("../../devices/pci0/virtio2/block/vda", class.join("vda"))
            .unwrap();
        // A fake sfdisk that records its arguments and input.
        let fake = dir.join("sfdisk");
        std::fs::write(
            &fake,
            format!(
                "#!/bin/sh\necho \"$@\" > {0}/args\ncat > {0}/stdin\n",
                dir.display()
            ),
        )
        .unwrap();
        std::fs::set_permissions(&fake, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
    }

    fn grow(dir: &std::path::Path) -> String {
        let script = dir.join("grow");
        std::fs::write(&script, GROW_SH).unwrap();
        let out = Command::new("sh")
            .arg(&script)
            .env("GANTRY_SYS", dir.join("sys"))
            .env("GANTRY_DEV", "/dev")
            .env("GANTRY_SFDISK", dir.join("sfdisk"))
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        String::from_utf8(out.stdout).unwrap()
    }

    #[test]
    fn grow_data_extends_the_last_partition_on_a_larger_disk() {
        let dir = tempfile::tempdir().unwrap();
        // Image: data at 4 GiB for 256 MiB on an 8 GiB disk.
        fake_sys(dir.path(), 8_388_608, 524_288, 16_777_216);
        let out = grow(dir.path());
        assert!(out.contains("growing /dev/vda4 by 3839 MiB"), "{out}");
        assert_eq!(
            std::fs::read_to_string(dir.path().join("args")).unwrap(),
            "--quiet -N 4 /dev/vda\n"
        );
        assert_eq!(
            std::fs::read_to_string(dir.path().join("stdin")).unwrap(),
            ", +\n"
        );
    }

    #[test]
    fn grow_data_leaves_a_full_disk_alone() {
        let dir = tempfile::tempdir().unwrap();
        fake_sys(dir.path(), 8_388_608, 8_388_608 - 34 - 2048, 16_777_216);
        let out = grow(dir.path());
        assert!(out.contains("already fills /dev/vda"), "{out}");
        assert!(!dir.path().join("args").exists());
    }
}
