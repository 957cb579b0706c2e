//! k3s's configuration file (`config.yaml`, keys are k3s's flag names) and the kubelet
//! configuration for graceful node shutdown.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Serialize;

use super::K3sError;

/// Where k3s keeps things, all under Gantry's data partition except the config file.
#[derive(Debug, Clone)]
pub struct K3sPaths {
    /// `config.yaml` (default `/etc/rancher/k3s/config.yaml`).
    pub config_file: PathBuf,
    /// The kubelet configuration file referenced by `kubelet-arg: config=...`.
    pub kubelet_config: PathBuf,
    /// k3s's `--data-dir` (default `/var/lib/rancher/k3s`).
    pub data_dir: PathBuf,
    /// Where the admin kubeconfig is written (mode 0600).
    pub kubeconfig: PathBuf,
    /// local-path provisioner's storage (the PersistentVolumes).
    pub storage_dir: PathBuf,
}

impl K3sPaths {
    /// Everything under `root` (Gantry's data directory): `root/k3s/...`.
    pub fn under(root: &Path) -> K3sPaths {
        let base = root.join("k3s");
        K3sPaths {
            config_file: base.join("config.yaml"),
            kubelet_config: base.join("kubelet.yaml"),
            data_dir: base.join("data"),
            kubeconfig: base.join("kubeconfig.yaml"),
            storage_dir: root.join("storage"),
        }
    }

    /// The appliance's layout, k3s's own defaults: `/etc/rancher/k3s` (bind-mounted from the data
    /// partition by the image) and `/var/lib/rancher/k3s` (on the data partition), where the
    /// image's tmpfiles link the air-gap archives.
    pub fn system() -> K3sPaths {
        let etc = Path::new("/etc/rancher/k3s");
        let data = PathBuf::from("/var/lib/rancher/k3s");
        K3sPaths {
            config_file: etc.join("config.yaml"),
            kubelet_config: etc.join("kubelet.yaml"),
            kubeconfig: etc.join("k3s.yaml"),
            storage_dir: data.join("storage"),
            data_dir: data,
        }
    }

    /// Where k3s imports air-gap image archives from at start.
    pub fn images_dir(&self) -> PathBuf {
        self.data_dir.join("agent/images")
    }

    /// k3s's server certificates (renewed by k3s at start when they expire within 90 days).
    pub fn tls_dir(&self) -> PathBuf {
        self.data_dir.join("server/tls")
    }
}

/// The settings Gantry controls.
#[derive(Debug, Clone)]
pub struct K3sSettings {
    /// A fixed node name, so a changed host name does not create a second node.
    pub node_name: String,
    /// How long the kubelet delays a power-off for pods to stop (MongoDB needs the most).
    pub shutdown_grace: Duration,
    /// Part of it reserved for critical pods (CoreDNS, local-path).
    pub shutdown_grace_critical: Duration,
}

impl Default for K3sSettings {
    fn default() -> Self {
        K3sSettings {
            node_name: "gantry".to_owned(),
            shutdown_grace: Duration::from_secs(90),
            shutdown_grace_critical: Duration::from_secs(20),
        }
    }
}

#[derive(Serialize)]
#[serde(rename_all = "kebab-case")]
struct ConfigYaml<'a> {
    data_dir: &'a Path,
    node_name: &'a str,
    write_kubeconfig: &'a Path,
    write_kubeconfig_mode: &'a str,
    /// Gantry's proxy owns ports 80/443: no Traefik, no ServiceLB (klipper).
    disable: [&'a str; 2],
    default_local_storage_path: &'a Path,
    kubelet_arg: Vec<String>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct KubeletConfig {
    api_version: &'static str,
    kind: &'static str,
    shutdown_grace_period: String,
    shutdown_grace_period_critical_pods: String,
}

/// The text of `config.yaml`. No `cluster-init`: the datastore is embedded SQLite (kine).
pub fn render_config(paths: &K3sPaths, s: &K3sSettings) -> Result<String, K3sError> {
    let cfg = ConfigYaml {
        data_dir: &paths.data_dir,
        node_name: &s.node_name,
        write_kubeconfig: &paths.kubeconfig,
        write_kubeconfig_mode: "0600",
        disable: ["traefik", "servicelb"],
        default_local_storage_path: &paths.storage_dir,
        kubelet_arg: vec![format!("config={}", paths.kubelet_config.display())],
    };
    let body = serde_yaml_ng::to_string(&cfg).map_err(|e| K3sError::Render(e.to_string()))?;
    Ok(format!(
        "# Written by Gantry at every start; edits here are overwritten.\n{body}"
    ))
}

/// The kubelet configuration: graceful node shutdown.
pub fn render_kubelet_config(s: &K3sSettings) -> Result<String, K3sError> {
    if s.shutdown_grace_critical >= s.shutdown_grace {
        return Err(K3sError::Render(
            "the critical pods' shutdown grace must be shorter than the whole grace period".into(),
        ));
    }
    let cfg = KubeletConfig {
        api_version: "kubelet.config.k8s.io/v1beta1",
        kind: "KubeletConfiguration",
        shutdown_grace_period: format!("{}s", s.shutdown_grace.as_secs()),
        shutdown_grace_period_critical_pods: format!("{}s", s.shutdown_grace_critical.as_secs()),
    };
    let body = serde_yaml_ng::to_string(&cfg).map_err(|e| K3sError::Render(e.to_string()))?;
    Ok(format!(
        "# Written by Gantry: graceful node shutdown.\n{body}"
    ))
}

/// Writes both files (atomically: temporary file, then rename) and creates the directories.
pub fn write_config(paths: &K3sPaths, s: &K3sSettings) -> Result<(), K3sError> {
    let config = render_config(paths, s)?;
    let kubelet = render_kubelet_config(s)?;
    for dir in [&paths.data_dir, &paths.storage_dir] {
        std::fs::create_dir_all(dir).map_err(|e| K3sError::io(dir, e))?;
    }
    write_atomic(&paths.kubelet_config, kubelet.as_bytes(), 0o644)?;
    write_atomic(&paths.config_file, config.as_bytes(), 0o600)?;
    Ok(())
}

pub(crate) fn write_atomic(path: &Path, data: &[u8], mode: u32) -> Result<(), K3sError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(|e| K3sError::io(dir, e))?;
    let tmp = dir.join(format!(
        ".{}.tmp",
        path.file_name().and_then(|n| n.to_str()).unwrap_or("file")
    ));
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(&tmp)
        .map_err(|e| K3sError::io(&tmp, e))?;
    f.write_all(data).map_err(|e| K3sError::io(&tmp, e))?;
    f.sync_all().map_err(|e| K3sError::io(&tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| K3sError::io(path, e))
}

/// The `k3s server` command line: everything else is in the config file.
pub fn server_args(paths: &K3sPaths) -> Vec<String> {
    vec![
        "server".to_owned(),
        "--config".to_owned(),
        paths.config_file.display().to_string(),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_has_what_the_appliance_needs() {
        let paths = K3sPaths::under(Path::new("/data"));
        let text = render_config(&paths, &K3sSettings::default()).unwrap();
        let v: serde_yaml_ng::Value = serde_yaml_ng::from_str(&text).unwrap();
        assert_eq!(v["disable"][0], "traefik");
        assert_eq!(v["disable"][1], "servicelb");
        assert_eq!(v["write-kubeconfig-mode"], "0600");
        assert_eq!(v["node-name"], "gantry");
        assert_eq!(v["data-dir"], "/data/k3s/data");
        assert_eq!(v["default-local-storage-path"], "/data/storage");
        assert_eq!(v["kubelet-arg"][0], "config=/data/k3s/kubelet.yaml");
        assert!(v.get("cluster-init").is_none(), "embedded SQLite, not etcd");
        let k = render_kubelet_config(&K3sSettings::default()).unwrap();
        let k: serde_yaml_ng::Value = serde_yaml_ng::from_str(&k).unwrap();
        assert_eq!(k["kind"], "KubeletConfiguration");
        assert_eq!(k["shutdownGracePeriod"], "90s");
        assert_eq!(k["shutdownGracePeriodCriticalPods"], "20s");
    }

    #[test]
    fn files_are_written_with_private_modes() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let paths = K3sPaths::under(dir.path());
        write_config(&paths, &K3sSettings::default()).unwrap();
        let mode = std::fs::metadata(&paths.config_file)
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        assert!(paths.data_dir.is_dir() && paths.storage_dir.is_dir());
        assert!(
            std::fs::read_to_string(&paths.kubelet_config)
                .unwrap()
                .contains("90s")
        );
        // Idempotent.
        write_config(&paths, &K3sSettings::default()).unwrap();
    }

    #[test]
    fn bad_grace_periods_are_refused() {
        let s = K3sSettings {
            shutdown_grace_critical: Duration::from_secs(90),
            ..K3sSettings::default()
        };
        assert!(render_kubelet_config(&s).is_err());
    }
}
