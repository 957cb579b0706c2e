//! The build pipeline: inputs -> overlay -> Debian root (mmdebstrap) -> EROFS root slot, ext4
//! data, FAT ESP -> GPT disk -> raw, qcow2, root-slot image, manifest, SHA256SUMS.

use std::collections::BTreeMap;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::error::{Error, Result};
use crate::fetch::{Cache, sha256_file};
use crate::files::{self, File};
use crate::ids::{self, Ids};
use crate::layout::{Layout, MIB, Role};
use crate::manifest::{self, DebianRecord, Input, Manifest, Output, PartitionRecord};
use crate::oci;
use crate::tools::{self, run};

/// What to build.
#[derive(Debug, Clone)]
pub struct BuildOptions {
    pub config: Config,
    /// Output directory (created). Work files go to `<output>/.gantry-work` and are removed.
    pub output: PathBuf,
    pub cache: Cache,
    /// Leave out k3s and the app images.
    pub no_cluster: bool,
    /// The version written into file names, the release file and boot entries.
    pub version: String,
    /// The `gantry` binary to install (the config's `gantry.path`, or the running binary).
    pub gantry_binary: PathBuf,
    pub source_date_epoch: u64,
    /// Keep the work directory (root tree, partition images) for inspection.
    pub keep_work: bool,
}

/// Receives step boundaries (the CLI draws them with indicatif).
pub trait Progress: Sync {
    /// A step starts.
    fn start(&self, step: &str);
    /// The step that started last is done.
    fn finish(&self, step: &str, elapsed: Duration, detail: &str);
}

/// What a build produced.
#[derive(Debug, Clone)]
pub struct BuildReport {
    pub manifest: Manifest,
    /// Output files with sizes (the manifest and SHA256SUMS included).
    pub files: Vec<(PathBuf, u64)>,
    pub steps: Vec<(String, Duration)>,
}

struct Steps<'a> {
    progress: &'a dyn Progress,
    cancel: &'a CancellationToken,
    done: Vec<(String, Duration)>,
}

impl Steps<'_> {
    fn run<T>(&mut self, name: &str, f: impl FnOnce() -> Result<(T, String)>) -> Result<T> {
        if self.cancel.is_cancelled() {
            return Err(Error::Cancelled);
        }
        self.progress.start(name);
        let t = Instant::now();
        let (v, detail) = f()?;
        let el = t.elapsed();
        self.progress.finish(name, el, &detail);
        self.done.push((name.to_string(), el));
        Ok(v)
    }
}

/// Resolved inputs.
struct Inputs {
    records: Vec<Input>,
    /// (path in the root file system, source file, mode)
    files: Vec<(String, PathBuf, u32)>,
    k3s_image_files: Vec<String>,
}

/// Builds the image. Needs root (mmdebstrap's root mode, device nodes, file ownership).
pub fn build(
    opts: &BuildOptions,
    progress: &dyn Progress,
    cancel: &CancellationToken,
) -> Result<BuildReport> {
    let mut steps = Steps {
        progress,
        cancel,
        done: Vec::new(),
    };
    let cfg = &opts.config;
    let variant = if opts.no_cluster {
        "no-cluster"
    } else {
        "full"
    };
    let base = format!("gantry-{}", opts.version);
    let work = opts.output.join(".gantry-work");

    steps.run("Checking the build host", || {
        preflight(opts)?;
        std::fs::create_dir_all(&opts.output).map_err(Error::io("creating", &opts.output))?;
        remove_work(&work)?;
        std::fs::create_dir_all(&work).map_err(Error::io("creating", &work))?;
        Ok(((), format!("work in {}", work.display())))
    })?;

    let inputs = steps.run("Resolving pinned inputs", || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(Error::io("starting", "tokio runtime"))?;
        let inputs = rt.block_on(resolve_inputs(opts, &work, cancel))?;
        let n = inputs.records.len();
        Ok((inputs, format!("{n} verified")))
    })?;

    let seed = build_seed(cfg, opts, variant, &inputs.records);
    let ids = Ids::derive(&seed);
    let layout = Layout::new(&cfg.disk, &ids);

    let overlay = work.join("overlay");
    let initrd_overlay = work.join("initrd-overlay");
    steps.run("Staging Gantry's files", || {
        for f in files::initrd_files() {
            let p = initrd_overlay.join(&f.path);
            write_file(&p, f.content.as_bytes())?;
            set_mode(&p, f.mode)?;
        }
        // A --no-cluster image has no k3s: `gantry run` is told so, and says so in its UI.
        let mut gantry_args = cfg.system.gantry_args.clone();
        if opts.no_cluster
            && gantry_args.first().is_some_and(|a| a == "run")
            && !gantry_args.iter().any(|a| a == "--no-cluster")
        {
            gantry_args.push("--no-cluster".to_owned());
        }
        let params = files::RootParams {
            version: &opts.version,
            variant,
            seed: &seed,
            source_date_epoch: opts.source_date_epoch,
            hostname: &cfg.system.hostname,
            gantry_args: &gantry_args,
            k3s_version: (!opts.no_cluster).then_some(cfg.k3s.version.as_str()),
            k3s_image_files: &inputs.k3s_image_files,
        };
        stage_overlay(
            &overlay,
            &files::root_files(&params),
            &inputs.files,
            cfg,
            cancel,
        )?;
        Ok((
            (),
            format!(
                "{} files",
                inputs.files.len() + files::root_files(&params).len()
            ),
        ))
    })?;

    let rootfs = work.join("rootfs");
    let debs = opts.cache.dir(&format!("debs/{}", cfg.debian.suite))?;
    steps.run("Installing Debian (mmdebstrap)", || {
        mmdebstrap(
            cfg,
            opts.source_date_epoch,
            &initrd_overlay,
            &overlay,
            &debs,
            &rootfs,
            cancel,
        )?;
        Ok(((), format!("{} {}", cfg.debian.suite, cfg.debian.mirror)))
    })?;

    let data_tree = work.join("data");
    let (packages, kernel) = steps.run("Checking the root file system", || {
        let packages = check_rootfs(&rootfs, cancel)?;
        let kernel = find_kernel(&rootfs)?;
        split_var(&rootfs, &data_tree, cancel)?;
        clamp_times(&rootfs, opts.source_date_epoch)?;
        clamp_times(&data_tree, opts.source_date_epoch)?;
        let detail = format!("{} packages, kernel {}", packages.len(), kernel.version);
        Ok(((packages, kernel), detail))
    })?;

    let root_img = work.join("root.erofs");
    steps.run("Making the root slot (EROFS)", || {
        let mut cmd = Command::new("mkfs.erofs");
        cmd.arg("-zlz4hc")
            .arg(format!("-T{}", opts.source_date_epoch))
            .arg(format!("-U{}", ids.root_fs_uuid))
            .arg("--quiet")
            .arg(&root_img)
            .arg(&rootfs)
            .env("SOURCE_DATE_EPOCH", opts.source_date_epoch.to_string());
        run(&mut cmd, cancel)?;
        let size = len(&root_img)?;
        let slot = layout.get(Role::RootA).size;
        if size > slot {
            return Err(Error::Invalid(format!(
                "the root file system ({} MiB) does not fit a root slot ({} MiB): raise disk.root_slot_mib",
                size / MIB,
                slot / MIB
            )));
        }
        Ok(((), format!("{} MiB of {} MiB", size.div_ceil(MIB), slot / MIB)))
    })?;

    let data_img = work.join("data.ext4");
    steps.run("Making the data partition (ext4)", || {
        let mut cmd = Command::new("mkfs.ext4");
        cmd.args(["-q", "-F", "-L", "gantry-data"])
            .arg("-U")
            .arg(ids.data_fs_uuid.to_string())
            .arg("-E")
            .arg(format!("hash_seed={},root_owner=0:0", ids.data_hash_seed))
            .arg("-d")
            .arg(&data_tree)
            .arg(&data_img)
            .arg(format!("{}M", cfg.disk.data_mib))
            .env("E2FSPROGS_FAKE_TIME", opts.source_date_epoch.to_string());
        run(&mut cmd, cancel)?;
        Ok((
            (),
            format!("{} MiB, grows on first boot", cfg.disk.data_mib),
        ))
    })?;

    let esp_img = work.join("esp.vfat");
    steps.run("Making the ESP (systemd-boot)", || {
        let cmdline = files::kernel_cmdline(
            &layout.get(Role::RootA).uuid,
            'a',
            &cfg.system.kernel_cmdline,
        );
        make_esp(
            &esp_img,
            &rootfs,
            &kernel,
            cfg,
            &ids,
            &opts.version,
            &cmdline,
            opts.source_date_epoch,
            &work,
            cancel,
        )?;
        Ok(((), "entry gantry-a".to_string()))
    })?;

    let raw = opts.output.join(format!("{base}.raw"));
    steps.run("Assembling the GPT disk", || {
        assemble(&raw, &layout, &esp_img, &root_img, &data_img, &work, cancel)?;
        Ok(((), format!("{} MiB (sparse)", layout.disk_size / MIB)))
    })?;

    let root_out = opts.output.join(format!("{base}.root-x86-64.erofs"));
    let qcow2 = opts.output.join(format!("{base}.qcow2"));
    steps.run("Writing the qcow2 and root-slot images", || {
        std::fs::copy(&root_img, &root_out).map_err(Error::io("writing", &root_out))?;
        let _ = std::fs::remove_file(&qcow2);
        let mut cmd = Command::new("qemu-img");
        cmd.args(["convert", "-f", "raw", "-O", "qcow2", "-c"])
            .arg(&raw)
            .arg(&qcow2);
        run(&mut cmd, cancel)?;
        Ok(((), format!("qcow2 {} MiB", len(&qcow2)?.div_ceil(MIB))))
    })?;

    let manifest_path = opts.output.join(format!("{base}.manifest.json"));
    let sums_path = opts.output.join("SHA256SUMS");
    let manifest = steps.run("Writing the manifest and checksums", || {
        let mut outputs = Vec::new();
        for p in [&raw, &qcow2, &root_out] {
            outputs.push(output_record(p)?);
        }
        let manifest = Manifest {
            format: manifest::FORMAT,
            name: "gantry".into(),
            version: opts.version.clone(),
            variant: variant.into(),
            source_date_epoch: opts.source_date_epoch,
            build_seed: seed.clone(),
            inputs: inputs.records.clone(),
            debian: DebianRecord {
                suite: cfg.debian.suite.clone(),
                mirror: cfg.debian.mirror.clone(),
                kernel: kernel.version.clone(),
                packages: packages.clone(),
            },
            partitions: PartitionRecord::of(&layout),
            outputs: outputs.clone(),
        };
        write_file(&manifest_path, manifest.to_json().as_bytes())?;
        outputs.push(output_record(&manifest_path)?);
        write_file(&sums_path, manifest::sha256sums(&outputs).as_bytes())?;
        Ok((manifest, "SHA256SUMS".to_string()))
    })?;

    if !opts.keep_work {
        remove_work(&work)?;
    }
    let mut out_files = Vec::new();
    for p in [&raw, &qcow2, &root_out, &manifest_path, &sums_path] {
        out_files.push((p.clone(), len(p)?));
    }
    Ok(BuildReport {
        manifest,
        files: out_files,
        steps: steps.done,
    })
}

fn preflight(opts: &BuildOptions) -> Result<()> {
    let uid = std::fs::metadata("/proc/self")
        .map(|m| m.uid())
        .map_err(Error::io("reading", "/proc/self"))?;
    if uid != 0 {
        return Err(Error::Invalid(
            "gantry build must run as root (mmdebstrap's root mode makes device nodes and owned \
             files; the build mounts nothing outside its work directory): run it with sudo"
                .into(),
        ));
    }
    tools::require(tools::TOOLS)?;
    if opts.config.gantry.strip {
        tools::require(&[tools::STRIP])?;
    }
    if !opts.gantry_binary.is_file() {
        return Err(Error::Invalid(format!(
            "the gantry binary {} does not exist",
            opts.gantry_binary.display()
        )));
    }
    // The paths go into mmdebstrap hook scripts: keep them plain.
    let safe = |p: &Path| {
        p.to_str().is_some_and(|s| {
            s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"/._-+".contains(&b))
        })
    };
    for p in [&opts.output, &opts.cache.root().to_path_buf()] {
        if !safe(p) {
            return Err(Error::Invalid(format!(
                "{} contains characters other than letters, digits and /._-+",
                p.display()
            )));
        }
    }
    Ok(())
}

async fn resolve_inputs(
    opts: &BuildOptions,
    work: &Path,
    cancel: &CancellationToken,
) -> Result<Inputs> {
    let cfg = &opts.config;
    let mut records = Vec::new();
    let mut files = Vec::new();
    let mut k3s_image_files = Vec::new();
    let gantry_sha = sha256_file(&opts.gantry_binary)?;
    records.push(Input {
        name: "gantry".into(),
        source: opts.gantry_binary.display().to_string(),
        digest: format!("sha256:{gantry_sha}"),
    });
    files.push((
        "usr/bin/gantry".to_string(),
        opts.gantry_binary.clone(),
        0o755,
    ));
    if opts.no_cluster {
        return Ok(Inputs {
            records,
            files,
            k3s_image_files,
        });
    }
    for (name, src, dest) in [
        ("k3s", &cfg.k3s.binary, "usr/local/bin/k3s"),
        (
            "k3s-airgap-images",
            &cfg.k3s.airgap_images,
            "usr/lib/gantry/k3s/images/k3s-airgap-images-amd64.tar.zst",
        ),
    ] {
        let path = opts.cache.fetch(name, src, cancel).await?;
        records.push(Input {
            name: name.into(),
            source: src
                .path
                .as_ref()
                .map(|p| p.display().to_string())
                .or_else(|| src.url.clone())
                .unwrap_or_default(),
            digest: format!("sha256:{}", src.sha256),
        });
        let mode = if name == "k3s" { 0o755 } else { 0o644 };
        files.push((dest.to_string(), path, mode));
    }
    k3s_image_files.push("k3s-airgap-images-amd64.tar.zst".to_string());
    let images = work.join("images");
    std::fs::create_dir_all(&images).map_err(Error::io("creating", &images))?;
    for app in &cfg.app_images {
        let file = format!("{}.oci.tar", app.name);
        let path = match &app.archive {
            Some(p) => p.clone(),
            None => {
                let out = images.join(&file);
                oci::pull(
                    &app.reference,
                    &app.digest,
                    &opts.cache,
                    &out,
                    opts.source_date_epoch,
                    cancel,
                )
                .await?;
                out
            }
        };
        if app.digest.is_empty() {
            return Err(Error::Invalid(format!(
                "app image {} has no pinned digest: set app_images.digest in the config",
                app.name
            )));
        }
        let info = oci::verify_archive(&path, &app.reference, &app.digest)?;
        records.push(Input {
            name: format!("image/{}", app.name),
            source: app
                .archive
                .as_ref()
                .map_or_else(|| app.reference.clone(), |p| p.display().to_string()),
            digest: info.manifest_digest,
        });
        files.push((format!("{}/{file}", files::K3S_IMAGES_DIR), path, 0o644));
        k3s_image_files.push(file);
    }
    Ok(Inputs {
        records,
        files,
        k3s_image_files,
    })
}

fn build_seed(cfg: &Config, opts: &BuildOptions, variant: &str, inputs: &[Input]) -> String {
    let d = &cfg.debian;
    let k = &cfg.disk;
    let s = &cfg.system;
    let sde = opts.source_date_epoch.to_string();
    let disk = format!(
        "{} {} {} {}",
        k.esp_mib, k.root_slot_mib, k.data_mib, k.boot_tries
    );
    let packages = d.packages.join(",");
    let filters = format!("{:?} {:?}", d.path_exclude, d.path_include);
    let args = s.gantry_args.join(" ");
    let strip = cfg.gantry.strip.to_string();
    let digests: Vec<String> = inputs
        .iter()
        .map(|i| format!("{}={}", i.name, i.digest))
        .collect();
    let digests = digests.join(",");
    ids::seed([
        ("format", "1"),
        ("version", opts.version.as_str()),
        ("variant", variant),
        ("source_date_epoch", sde.as_str()),
        ("suite", d.suite.as_str()),
        ("mirror", d.mirror.as_str()),
        ("kernel", d.kernel_flavour.as_str()),
        ("packages", packages.as_str()),
        ("filters", filters.as_str()),
        ("disk", disk.as_str()),
        ("hostname", s.hostname.as_str()),
        ("cmdline", s.kernel_cmdline.as_str()),
        ("gantry_args", args.as_str()),
        ("strip", strip.as_str()),
        ("inputs", digests.as_str()),
    ])
}

fn stage_overlay(
    overlay: &Path,
    generated: &[File],
    inputs: &[(String, PathBuf, u32)],
    cfg: &Config,
    cancel: &CancellationToken,
) -> Result<()> {
    for d in files::ROOT_DIRS {
        let p = overlay.join(d);
        std::fs::create_dir_all(&p).map_err(Error::io("creating", &p))?;
    }
    for f in generated {
        let p = overlay.join(&f.path);
        write_file(&p, f.content.as_bytes())?;
        set_mode(&p, f.mode)?;
    }
    for (dest, src, mode) in inputs {
        let p = overlay.join(dest);
        if let Some(dir) = p.parent() {
            std::fs::create_dir_all(dir).map_err(Error::io("creating", dir))?;
        }
        if dest == "usr/bin/gantry" && cfg.gantry.strip {
            let mut cmd = Command::new("strip");
            cmd.arg("--strip-debug").arg("-o").arg(&p).arg(src);
            run(&mut cmd, cancel)?;
        } else {
            // Hard links where possible: image archives are large.
            if std::fs::hard_link(src, &p).is_err() {
                std::fs::copy(src, &p).map_err(Error::io("copying", src))?;
            }
        }
        set_mode(&p, *mode)?;
    }
    Ok(())
}

fn mmdebstrap(
    cfg: &Config,
    sde: u64,
    initrd_overlay: &Path,
    overlay: &Path,
    debs: &Path,
    rootfs: &Path,
    cancel: &CancellationToken,
) -> Result<()> {
    let d = &cfg.debian;
    let mut include = vec![format!("linux-image-{}", d.kernel_flavour)];
    include.extend(d.packages.iter().cloned());
    let q = |p: &Path| format!("'{}'", p.display());
    let units = files::ENABLED_UNITS.join(" ");
    let mut cmd = Command::new("mmdebstrap");
    cmd.args(["--mode=root", "--variant=minbase", "--format=directory"])
        .arg(format!("--include={}", include.join(",")))
        .arg("--aptopt=Acquire::Retries \"3\"")
        .args(["--skip=download/empty", "--skip=essential/unlink"]);
    for p in &d.path_exclude {
        cmd.arg(format!("--dpkgopt=path-exclude={p}"));
    }
    for p in &d.path_include {
        cmd.arg(format!("--dpkgopt=path-include={p}"));
    }
    cmd.arg("--setup-hook=mkdir -p \"$1\"/var/cache/apt/archives/")
        .arg(format!("--setup-hook=sync-in {} /var/cache/apt/archives/", q(debs)))
        // Before the kernel is installed, so that its initrd has them (see files::initrd_files).
        .arg(format!("--essential-hook=sync-in {} /", q(initrd_overlay)))
        .arg(format!("--customize-hook=sync-out /var/cache/apt/archives {}", q(debs)))
        .arg(format!("--customize-hook=sync-in {} /", q(overlay)))
        .arg(format!("--customize-hook=chroot \"$1\" systemctl enable --quiet {units}"))
        .arg("--customize-hook=chroot \"$1\" passwd --quiet --lock root")
        .arg(
            "--customize-hook=rm -f \"$1\"/var/cache/apt/archives/*.deb \"$1\"/etc/issue \"$1\"/etc/issue.net \
             \"$1\"/etc/motd \"$1\"/var/lib/dbus/machine-id \"$1\"/etc/ssh/ssh_host_* && : > \"$1\"/etc/machine-id",
        )
        .arg(&d.suite)
        .arg(rootfs)
        .arg(&d.mirror)
        .env("SOURCE_DATE_EPOCH", sde.to_string())
        .env("DEBIAN_FRONTEND", "noninteractive");
    run(&mut cmd, cancel).map(drop)
}

fn check_rootfs(rootfs: &Path, cancel: &CancellationToken) -> Result<Vec<manifest::Package>> {
    let shadow = rootfs.join("etc/shadow");
    let text = std::fs::read_to_string(&shadow).map_err(Error::io("reading", &shadow))?;
    let root_pw = text
        .lines()
        .find_map(|l| l.strip_prefix("root:"))
        .and_then(|l| l.split(':').next())
        .unwrap_or("");
    if !(root_pw.starts_with('!') || root_pw == "*") {
        return Err(Error::Invalid("the root account is not locked".into()));
    }
    for sshd in ["usr/sbin/sshd", "usr/sbin/dropbear"] {
        if rootfs.join(sshd).exists() {
            return Err(Error::Invalid(format!(
                "an ssh server ({sshd}) is in the image: remove it from debian.packages"
            )));
        }
    }
    let mut cmd = Command::new("dpkg-query");
    cmd.arg(format!(
        "--admindir={}",
        rootfs.join("var/lib/dpkg").display()
    ))
    .args(["-W", "-f", "${Package}\t${Version}\n"]);
    Ok(manifest::parse_packages(&run(&mut cmd, cancel)?))
}

struct Kernel {
    version: String,
    vmlinuz: PathBuf,
    initrd: PathBuf,
}

fn find_kernel(rootfs: &Path) -> Result<Kernel> {
    let boot = rootfs.join("boot");
    let mut found = Vec::new();
    for e in std::fs::read_dir(&boot).map_err(Error::io("reading", &boot))? {
        let e = e.map_err(Error::io("reading", &boot))?;
        if let Some(v) = e
            .file_name()
            .to_str()
            .and_then(|n| n.strip_prefix("vmlinuz-"))
        {
            found.push(v.to_string());
        }
    }
    found.sort();
    let version = match found.as_slice() {
        [one] => one.clone(),
        [] => {
            return Err(Error::Invalid(
                "no kernel in /boot: check debian.kernel_flavour".into(),
            ));
        }
        many => {
            return Err(Error::Invalid(format!(
                "several kernels in /boot: {many:?}"
            )));
        }
    };
    let initrd = boot.join(format!("initrd.img-{version}"));
    if !initrd.is_file() {
        return Err(Error::Invalid(format!(
            "no initrd for kernel {version}: keep initramfs-tools in debian.packages"
        )));
    }
    Ok(Kernel {
        vmlinuz: boot.join(format!("vmlinuz-{version}")),
        initrd,
        version,
    })
}

/// The data partition starts as the root tree's `/var` plus Gantry's state directories.
fn split_var(rootfs: &Path, data: &Path, cancel: &CancellationToken) -> Result<()> {
    std::fs::create_dir_all(data).map_err(Error::io("creating", data))?;
    let mut cmd = Command::new("cp");
    cmd.arg("-a")
        .arg(format!("{}/.", rootfs.join("var").display()))
        .arg(data);
    run(&mut cmd, cancel)?;
    for (d, mode) in files::DATA_DIRS {
        let p = data.join(d);
        std::fs::create_dir_all(&p).map_err(Error::io("creating", &p))?;
        set_mode(&p, *mode)?;
    }
    Ok(())
}

/// Sets every time later than `sde` to `sde` (file systems copy them from the tree).
fn clamp_times(root: &Path, sde: u64) -> Result<()> {
    let t = filetime::FileTime::from_unix_time(i64::try_from(sde).unwrap_or(i64::MAX), 0);
    for e in walkdir::WalkDir::new(root).follow_links(false) {
        let e = e.map_err(|e| Error::Invalid(format!("walking {}: {e}", root.display())))?;
        let md = e
            .path()
            .symlink_metadata()
            .map_err(Error::io("reading", e.path()))?;
        let mtime = filetime::FileTime::from_last_modification_time(&md);
        let atime = filetime::FileTime::from_last_access_time(&md);
        if mtime > t || atime > t {
            filetime::set_symlink_file_times(e.path(), t.min(atime), t.min(mtime))
                .map_err(Error::io("setting times of", e.path()))?;
        }
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn make_esp(
    esp: &Path,
    rootfs: &Path,
    kernel: &Kernel,
    cfg: &Config,
    ids: &Ids,
    version: &str,
    cmdline: &str,
    sde: u64,
    work: &Path,
    cancel: &CancellationToken,
) -> Result<()> {
    let boot_efi = rootfs.join("usr/lib/systemd/boot/efi/systemd-bootx64.efi");
    if !boot_efi.is_file() {
        return Err(Error::Invalid(
            "systemd-bootx64.efi is missing from the root file system: keep systemd-boot-efi in debian.packages".into(),
        ));
    }
    let _ = std::fs::remove_file(esp);
    let mut cmd = Command::new("mkfs.vfat");
    cmd.args(["-F", "32", "-n", "GANTRY-ESP", "--invariant"])
        .arg("-i")
        .arg(&ids.esp_volume_id)
        .arg("-C")
        .arg(esp)
        .arg((cfg.disk.esp_mib * 1024).to_string());
    run(&mut cmd, cancel)?;
    let loader_conf = work.join("loader.conf");
    write_file(&loader_conf, files::LOADER_CONF.as_bytes())?;
    let (entry_name, entry) = files::boot_entry('a', version, cfg.disk.boot_tries, cmdline);
    let entry_path = work.join(&entry_name);
    write_file(&entry_path, entry.as_bytes())?;
    let img = esp.display().to_string();
    let mtools = |args: &[&str], files: &[(&Path, &str)]| -> Result<()> {
        let mut cmd = Command::new(args[0]);
        cmd.args(["-i", img.as_str()])
            .args(&args[1..])
            .env("MTOOLS_SKIP_CHECK", "1")
            .env("SOURCE_DATE_EPOCH", sde.to_string());
        if !files.is_empty() {
            for (src, _) in files {
                cmd.arg(src);
            }
        }
        if let Some((_, dest)) = files.first() {
            cmd.arg(dest);
        }
        run(&mut cmd, cancel).map(drop)
    };
    mtools(
        &[
            "mmd",
            "::/EFI",
            "::/EFI/BOOT",
            "::/EFI/systemd",
            "::/EFI/gantry",
            "::/EFI/gantry/a",
            "::/loader",
            "::/loader/entries",
        ],
        &[],
    )?;
    for (src, dest) in [
        (boot_efi.as_path(), "::/EFI/BOOT/BOOTX64.EFI"),
        (boot_efi.as_path(), "::/EFI/systemd/systemd-bootx64.efi"),
        (kernel.vmlinuz.as_path(), "::/EFI/gantry/a/vmlinuz"),
        (kernel.initrd.as_path(), "::/EFI/gantry/a/initrd.img"),
        (loader_conf.as_path(), "::/loader/loader.conf"),
    ] {
        mtools(&["mcopy", "-m", "-o"], &[(src, dest)])?;
    }
    let dest = format!("::/loader/entries/{entry_name}");
    mtools(
        &["mcopy", "-m", "-o"],
        &[(entry_path.as_path(), dest.as_str())],
    )
}

fn assemble(
    raw: &Path,
    layout: &Layout,
    esp: &Path,
    root: &Path,
    data: &Path,
    work: &Path,
    cancel: &CancellationToken,
) -> Result<()> {
    let _ = std::fs::remove_file(raw);
    let f = std::fs::File::create(raw).map_err(Error::io("creating", raw))?;
    f.set_len(layout.disk_size)
        .map_err(Error::io("sizing", raw))?;
    drop(f);
    let script = work.join("sfdisk.script");
    write_file(&script, layout.sfdisk_script().as_bytes())?;
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg("sfdisk --quiet --no-reread --no-tell-kernel \"$1\" < \"$2\"")
        .arg("sh")
        .arg(raw)
        .arg(&script);
    run(&mut cmd, cancel)?;
    let mut disk = std::fs::OpenOptions::new()
        .write(true)
        .open(raw)
        .map_err(Error::io("opening", raw))?;
    for (img, role) in [(esp, Role::Esp), (root, Role::RootA), (data, Role::Data)] {
        let p = layout.get(role);
        copy_sparse(img, &mut disk, p.offset, p.size, raw, cancel)?;
    }
    disk.sync_all().map_err(Error::io("writing", raw))
}

/// Copies `src` into `dst` at `offset`, skipping all-zero MiB blocks (the file stays sparse).
fn copy_sparse(
    src: &Path,
    dst: &mut std::fs::File,
    offset: u64,
    max: u64,
    dst_path: &Path,
    cancel: &CancellationToken,
) -> Result<()> {
    let size = len(src)?;
    if size > max {
        return Err(Error::Invalid(format!(
            "{} ({size} bytes) is larger than its partition ({max} bytes)",
            src.display()
        )));
    }
    let mut s = std::fs::File::open(src).map_err(Error::io("opening", src))?;
    let mut buf = vec![0u8; MIB as usize];
    let mut pos = 0u64;
    loop {
        if cancel.is_cancelled() {
            return Err(Error::Cancelled);
        }
        let mut n = 0;
        while n < buf.len() {
            let r = s.read(&mut buf[n..]).map_err(Error::io("reading", src))?;
            if r == 0 {
                break;
            }
            n += r;
        }
        if n == 0 {
            return Ok(());
        }
        if buf[..n].iter().any(|&b| b != 0) {
            dst.seek(SeekFrom::Start(offset + pos))
                .map_err(Error::io("seeking", dst_path))?;
            dst.write_all(&buf[..n])
                .map_err(Error::io("writing", dst_path))?;
        }
        pos += n as u64;
    }
}

/// Removes the work directory, refusing if anything is still mounted below it (mmdebstrap
/// mounts /dev, /proc and /sys in the chroot: removing through them would hit the host).
fn remove_work(work: &Path) -> Result<()> {
    if !work.exists() {
        return Ok(());
    }
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let prefix = work.display().to_string();
    if let Some(m) = mounts
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .find(|m| *m == prefix || m.starts_with(&format!("{prefix}/")))
    {
        return Err(Error::Invalid(format!(
            "refusing to remove {}: {m} is still mounted (umount -R it first)",
            work.display()
        )));
    }
    std::fs::remove_dir_all(work).map_err(Error::io("removing", work))
}

fn output_record(p: &Path) -> Result<Output> {
    Ok(Output {
        file: p
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
        bytes: len(p)?,
        sha256: sha256_file(p)?,
    })
}

fn len(p: &Path) -> Result<u64> {
    Ok(std::fs::metadata(p).map_err(Error::io("reading", p))?.len())
}

fn write_file(p: &Path, bytes: &[u8]) -> Result<()> {
    if let Some(dir) = p.parent() {
        std::fs::create_dir_all(dir).map_err(Error::io("creating", dir))?;
    }
    std::fs::write(p, bytes).map_err(Error::io("writing", p))
}

fn set_mode(p: &Path, mode: u32) -> Result<()> {
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode))
        .map_err(Error::io("setting the mode of", p))
}

/// Input digests by name (for the CLI summary).
pub fn input_digests(m: &Manifest) -> BTreeMap<String, String> {
    m.inputs
        .iter()
        .map(|i| (i.name.clone(), i.digest.clone()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sparse_copy_writes_data_and_leaves_zero_blocks_as_holes() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src");
        let mut data = vec![0u8; 3 * MIB as usize];
        data[5] = 1;
        data[2 * MIB as usize + 7] = 2;
        std::fs::write(&src, &data).unwrap();
        let dst_path = dir.path().join("dst");
        let mut dst = std::fs::File::create(&dst_path).unwrap();
        dst.set_len(8 * MIB).unwrap();
        let c = CancellationToken::new();
        copy_sparse(&src, &mut dst, MIB, 4 * MIB, &dst_path, &c).unwrap();
        drop(dst);
        let out = std::fs::read(&dst_path).unwrap();
        assert_eq!(&out[MIB as usize..4 * MIB as usize], &data[..]);
        assert!(out[..MIB as usize].iter().all(|&b| b == 0));
        // Two of the eight MiB are allocated (blocks of 512 bytes).
        let blocks = std::fs::metadata(&dst_path).unwrap().blocks();
        assert!(blocks * 512 <= 3 * MIB, "not sparse: {blocks} blocks");

        let mut dst = std::fs::OpenOptions::new()
            .write(true)
            .open(&dst_path)
            .unwrap();
        let e = copy_sparse(&src, &mut dst, 0, MIB, &dst_path, &c).unwrap_err();
        assert!(e.to_string().contains("larger than its partition"), "{e}");
    }

    #[test]
    fn the_work_directory_is_not_removed_through_a_mount() {
        // /proc is a mount point; pretend it is the work directory.
        let e = remove_work(Path::new("/proc")).unwrap_err().to_string();
        assert!(e.contains("still mounted"), "{e}");
        let dir = tempfile::tempdir().unwrap();
        let w = dir.path().join("w");
        std::fs::create_dir_all(w.join("a/b")).unwrap();
        remove_work(&w).unwrap();
        assert!(!w.exists());
    }

    #[test]
    fn clamping_only_moves_times_back() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("f");
        std::fs::write(&f, b"x").unwrap();
        let old = filetime::FileTime::from_unix_time(1000, 0);
        let g = dir.path().join("g");
        std::fs::write(&g, b"y").unwrap();
        filetime::set_file_times(&g, old, old).unwrap();
        std::os::unix::fs::symlink("f", dir.path().join("l")).unwrap();
        clamp_times(dir.path(), 5000).unwrap();
        let m = |p: &Path| {
            filetime::FileTime::from_last_modification_time(&p.symlink_metadata().unwrap())
                .unix_seconds()
        };
        assert_eq!(m(&f), 5000);
        assert_eq!(m(&g), 1000);
        assert_eq!(m(&dir.path().join("l")), 5000);
    }
}
