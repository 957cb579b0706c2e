//! Configuration files: Traefik v3 static and dynamic configuration, parsed once into typed structs.
//!
//! Parsing is strict: unknown keys and refused features are errors naming the key path, the file and
//! the line. Semantic checks (a router naming a missing service, a bad rule) happen when a dynamic
//! configuration is compiled into a [`crate::Snapshot`].

mod duration;
pub mod dynamic;
pub mod static_config;
mod unsupported;

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;

pub use duration::{Dur, parse_duration};
pub use dynamic::DynamicConfig;
pub use static_config::StaticConfig;
pub use unsupported::{Ignored, Unsupported};

/// Where a configuration error is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    pub line: usize,
    pub column: usize,
}

/// A configuration file that could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}{}: `{key}`: {message}", path.display(), fmt_loc(location))]
    Parse {
        path: PathBuf,
        /// Dotted path of the offending key (`http.routers.web.rulee`).
        key: String,
        location: Option<Location>,
        message: String,
    },
    #[error("{}: unsupported file type (expected .yml, .yaml or .toml)", path.display())]
    Format { path: PathBuf },
    #[error("{}: {message}", path.display())]
    Invalid { path: PathBuf, message: String },
}

fn fmt_loc(loc: &Option<Location>) -> String {
    match loc {
        Some(l) => format!(":{}:{}", l.line, l.column),
        None => String::new(),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    Yaml,
    Toml,
}

fn format_of(path: &Path) -> Result<Format, ConfigError> {
    match path.extension().and_then(|e| e.to_str()) {
        Some("yml" | "yaml") => Ok(Format::Yaml),
        Some("toml") => Ok(Format::Toml),
        _ => Err(ConfigError::Format {
            path: path.to_owned(),
        }),
    }
}

/// Parses `text` (the content of `path`) strictly into `T`.
pub fn parse_str<T: DeserializeOwned + Default>(path: &Path, text: &str) -> Result<T, ConfigError> {
    let parse_err = |key: String, location: Option<Location>, message: String| ConfigError::Parse {
        path: path.to_owned(),
        key,
        location,
        message,
    };
    match format_of(path)? {
        Format::Yaml => {
            if text.trim().is_empty() {
                return Ok(T::default());
            }
            let de = serde_yaml_ng::Deserializer::from_str(text);
            serde_path_to_error::deserialize(de).map_err(|e| {
                let key = e.path().to_string();
                let inner = e.into_inner();
                let location = inner.location().map(|l| Location {
                    line: l.line(),
                    column: l.column(),
                });
                let msg = strip_location(&inner.to_string());
                let msg = msg
                    .strip_prefix(&format!("{key}: "))
                    .map(str::to_owned)
                    .unwrap_or(msg);
                parse_err(key, location, msg)
            })
        }
        Format::Toml => {
            let de = toml::Deserializer::parse(text).map_err(|e| {
                let location = e.span().map(|s| offset_to_location(text, s.start));
                parse_err(String::new(), location, e.message().to_owned())
            })?;
            serde_path_to_error::deserialize(de).map_err(|e| {
                let key = e.path().to_string();
                let inner = e.into_inner();
                let location = inner.span().map(|s| offset_to_location(text, s.start));
                parse_err(key, location, inner.message().to_owned())
            })
        }
    }
}

/// serde_yaml appends " at line X column Y" to messages; the location is reported separately.
fn strip_location(msg: &str) -> String {
    match msg.rfind(" at line ") {
        Some(i) => msg[..i].to_owned(),
        None => msg.to_owned(),
    }
}

fn offset_to_location(text: &str, offset: usize) -> Location {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before
        .rfind('\n')
        .map_or(before.len(), |i| before.len() - i - 1)
        + 1;
    Location { line, column }
}

/// Reads and parses a file strictly into `T`.
pub fn load_file<T: DeserializeOwned + Default>(path: &Path) -> Result<T, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Io {
        path: path.to_owned(),
        source,
    })?;
    parse_str(path, &text)
}

/// Loads the static configuration and checks what can be checked without the dynamic one.
pub fn load_static(path: &Path) -> Result<StaticConfig, ConfigError> {
    let mut cfg: StaticConfig = load_file(path)?;
    let invalid = |message: String| ConfigError::Invalid {
        path: path.to_owned(),
        message,
    };
    if cfg.entry_points.is_empty() {
        return Err(invalid(
            "no `entryPoints` defined: nothing to listen on".into(),
        ));
    }
    for (name, ep) in &cfg.entry_points {
        crate::server::parse_address(&ep.address)
            .map_err(|e| invalid(format!("entryPoints.{name}.address: {e}")))?;
        if let Some(redirect) = ep
            .http
            .redirections
            .as_ref()
            .and_then(|r| r.entry_point.as_ref())
            && !redirect.to.starts_with(':')
            && !cfg.entry_points.contains_key(&redirect.to)
        {
            return Err(invalid(format!(
                "entryPoints.{name}.http.redirections.entryPoint.to: no entrypoint named `{}`",
                redirect.to
            )));
        }
    }
    if let Some(api) = &cfg.api
        && api.dashboard
    {
        return Err(invalid(
            "api.dashboard: Gantry serves no dashboard (the appliance has its own web UI); set it to false"
                .into(),
        ));
    }
    if let Some(file) = &cfg.providers.file {
        match (&file.filename, &file.directory) {
            (Some(_), Some(_)) => {
                return Err(invalid(
                    "providers.file: set either `filename` or `directory`, not both".into(),
                ));
            }
            (None, None) => {
                return Err(invalid(
                    "providers.file: one of `filename` or `directory` is required".into(),
                ));
            }
            _ => {}
        }
    }
    if let Some(fmt) = cfg.access_log.as_ref().and_then(|a| a.format.as_deref())
        && fmt != "json"
        && fmt != "common"
    {
        return Err(invalid(format!(
            "accessLog.format: `{fmt}` is not a format (json or common)"
        )));
    }
    // Relative paths in the static file are relative to the file's directory.
    let base = path.parent().unwrap_or(Path::new("."));
    if let Some(file) = cfg.providers.file.as_mut() {
        for p in [&mut file.filename, &mut file.directory]
            .into_iter()
            .flatten()
        {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        }
    }
    // The implicit `traefik` entrypoint (port 8080) exists when the API, ping or metrics ask for it.
    let wants_traefik_ep = cfg.api.as_ref().is_some_and(|a| a.insecure)
        || cfg.ping.as_ref().is_some_and(|p| p.entry_point.is_none())
        || cfg
            .metrics
            .as_ref()
            .and_then(|m| m.prometheus.as_ref())
            .is_some_and(|p| p.entry_point.is_none());
    if wants_traefik_ep && !cfg.entry_points.contains_key("traefik") {
        cfg.entry_points.insert(
            "traefik".into(),
            static_config::EntryPoint {
                address: ":8080".into(),
                ..Default::default()
            },
        );
    }
    Ok(cfg)
}

/// A dynamic configuration read from files, with where each named object came from.
#[derive(Debug, Clone, Default)]
pub struct LoadedDynamic {
    pub config: DynamicConfig,
    /// `router:NAME`, `service:NAME`, `middleware:NAME`, `serversTransport:NAME`, `tlsOptions:NAME`
    /// -> the file that defines it.
    pub origins: BTreeMap<String, PathBuf>,
    pub files: Vec<PathBuf>,
}

impl LoadedDynamic {
    /// The file an object was defined in, for error messages.
    pub fn origin(&self, kind: &str, name: &str) -> Option<&Path> {
        self.origins
            .get(&format!("{kind}:{name}"))
            .map(PathBuf::as_path)
    }
}

impl fmt::Display for LoadedDynamic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<_> = self.files.iter().map(|p| p.display().to_string()).collect();
        f.write_str(&names.join(", "))
    }
}

/// Loads the file provider's dynamic configuration: one file, or every `.yml`/`.yaml`/`.toml` file of
/// a directory (sorted by name). An object defined twice is an error naming both files.
pub fn load_dynamic(
    filename: Option<&Path>,
    directory: Option<&Path>,
) -> Result<LoadedDynamic, ConfigError> {
    let mut files = Vec::new();
    if let Some(f) = filename {
        files.push(f.to_owned());
    }
    if let Some(dir) = directory {
        let rd = std::fs::read_dir(dir).map_err(|source| ConfigError::Io {
            path: dir.to_owned(),
            source,
        })?;
        for entry in rd {
            let entry = entry.map_err(|source| ConfigError::Io {
                path: dir.to_owned(),
                source,
            })?;
            let p = entry.path();
            let hidden = p
                .file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with('.'));
            if p.is_file() && !hidden && format_of(&p).is_ok() {
                files.push(p);
            }
        }
        files.sort();
    }
    let mut loaded = LoadedDynamic::default();
    for path in files {
        let part: DynamicConfig = load_file(&path)?;
        merge_into(&mut loaded, part, &path)?;
        loaded.files.push(path);
    }
    Ok(loaded)
}

fn merge_map<V>(
    origins: &mut BTreeMap<String, PathBuf>,
    kind: &str,
    into: &mut BTreeMap<String, V>,
    from: BTreeMap<String, V>,
    path: &Path,
) -> Result<(), ConfigError> {
    for (name, v) in from {
        let key = format!("{kind}:{name}");
        if let Some(first) = origins.get(&key) {
            return Err(ConfigError::Invalid {
                path: path.to_owned(),
                message: format!("{kind} `{name}` is already defined in {}", first.display()),
            });
        }
        origins.insert(key, path.to_owned());
        into.insert(name, v);
    }
    Ok(())
}

fn merge_into(
    loaded: &mut LoadedDynamic,
    part: DynamicConfig,
    path: &Path,
) -> Result<(), ConfigError> {
    let o = &mut loaded.origins;
    let c = &mut loaded.config;
    merge_map(o, "router", &mut c.http.routers, part.http.routers, path)?;
    merge_map(o, "service", &mut c.http.services, part.http.services, path)?;
    merge_map(
        o,
        "middleware",
        &mut c.http.middlewares,
        part.http.middlewares,
        path,
    )?;
    merge_map(
        o,
        "serversTransport",
        &mut c.http.servers_transports,
        part.http.servers_transports,
        path,
    )?;
    merge_map(o, "tlsOptions", &mut c.tls.options, part.tls.options, path)?;
    merge_map(o, "tlsStore", &mut c.tls.stores, part.tls.stores, path)?;
    for cert in part.tls.certificates {
        c.tls.certificates.push(cert);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_dyn(name: &str, text: &str) -> Result<DynamicConfig, ConfigError> {
        parse_str(Path::new(name), text)
    }

    #[test]
    fn unknown_key_names_key_file_and_line() {
        let text = "http:\n  routers:\n    web:\n      rule: \"Host(`a`)\"\n      service: s\n      rulee: x\n";
        let err = parse_dyn("dyn.yml", text).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("dyn.yml:6:"), "{msg}");
        assert!(msg.contains("rulee"), "{msg}");
        assert!(msg.contains("http.routers.web"), "{msg}");
    }

    #[test]
    fn unsupported_feature_is_refused_with_its_path() {
        let text =
            "http:\n  middlewares:\n    auth:\n      forwardAuth:\n        address: http://x\n";
        let msg = parse_dyn("d.yaml", text).unwrap_err().to_string();
        assert!(msg.contains("d.yaml:4"), "{msg}");
        assert!(msg.contains("not supported"), "{msg}");
    }

    #[test]
    fn toml_is_accepted_and_errors_have_lines() {
        let ok = "[http.routers.web]\nrule = \"Path(`/`)\"\nservice = \"s\"\n";
        let cfg = parse_dyn("d.toml", ok).unwrap();
        assert_eq!(cfg.http.routers["web"].service, "s");
        let bad = "[http.routers.web]\nrule = \"Path(`/`)\"\nservice = \"s\"\nbogus = 1\n";
        let msg = parse_dyn("d.toml", bad).unwrap_err().to_string();
        assert!(msg.contains("d.toml:4"), "{msg}");
        assert!(msg.contains("bogus"), "{msg}");
    }

    #[test]
    fn static_config_durations_and_defaults() {
        let text = "entryPoints:\n  web:\n    address: \":80\"\n    transport:\n      lifeCycle:\n        graceTimeOut: 3s\n";
        let cfg: StaticConfig = parse_str(Path::new("s.yml"), text).unwrap();
        let ep = &cfg.entry_points["web"];
        assert_eq!(ep.transport.life_cycle.grace_time_out, Dur::secs(3));
        assert_eq!(
            ep.transport.responding_timeouts.idle_timeout,
            Dur::secs(180)
        );
    }

    #[test]
    fn duplicate_names_across_files_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let a = "http:\n  services:\n    s:\n      loadBalancer:\n        servers: [{url: 'http://127.0.0.1:1'}]\n";
        std::fs::write(dir.path().join("a.yml"), a).unwrap();
        std::fs::write(dir.path().join("b.yml"), a).unwrap();
        let msg = load_dynamic(None, Some(dir.path()))
            .unwrap_err()
            .to_string();
        assert!(msg.contains("b.yml") && msg.contains("a.yml"), "{msg}");
    }
}
