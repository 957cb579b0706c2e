//! The access log: one JSON object per request with Traefik's field names (or Common Log Format),
//! serialised on the request's thread and written by a dedicated writer thread, so a slow disk never
//! stalls request handling. Lines that cannot be queued are counted, not blocked on.
//! Traefik's `accessLog.filters` (status codes, retries, minimum duration: a line is kept when any
//! filter matches) and `accessLog.fields` (keep, drop or redact each field) are compiled once at
//! start ([`Settings::compile`]); a filtered-out request costs one comparison, no line.

use std::io::Write;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{self, SyncSender, TrySendError};
use std::time::{Duration, SystemTime};

use serde::Serialize;

use crate::config::static_config::AccessLogConfig;
use crate::metrics::Metrics;

/// What Traefik writes in place of a redacted field.
const REDACTED: &str = "REDACTED";

/// `accessLog` settings compiled and checked once at start.
#[derive(Debug, Clone, Default)]
pub struct Settings {
    /// Inclusive status ranges from `filters.statusCodes`.
    status_codes: Vec<(u16, u16)>,
    retry_attempts: bool,
    min_duration: Option<Duration>,
    /// `fields`: the default mode and per-field overrides (JSON lines only, as in Traefik).
    default_mode: FieldMode,
    names: Vec<(String, FieldMode)>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
enum FieldMode {
    #[default]
    Keep,
    Drop,
    Redact,
}

impl FieldMode {
    fn parse(key: &str, v: &str) -> Result<FieldMode, String> {
        match v {
            "keep" => Ok(FieldMode::Keep),
            "drop" => Ok(FieldMode::Drop),
            "redact" => Ok(FieldMode::Redact),
            other => Err(format!(
                "{key}: `{other}` is not a field mode (keep, drop or redact)"
            )),
        }
    }
}

impl Settings {
    /// Checks and compiles the `accessLog` section; errors name the key and the bad value.
    pub fn compile(cfg: &AccessLogConfig) -> Result<Settings, String> {
        let mut out = Settings::default();
        if let Some(f) = cfg.format.as_deref()
            && f != "json"
            && f != "common"
        {
            return Err(format!(
                "accessLog.format: `{f}` is not a log format (json or common)"
            ));
        }
        if let Some(f) = &cfg.filters {
            for code in &f.status_codes {
                out.status_codes
                    .push(parse_status_range(code).ok_or_else(|| {
                        format!(
                            "accessLog.filters.statusCodes: `{code}` is not a status code or range \
                         (e.g. `404` or `500-599`)"
                        )
                    })?);
            }
            out.retry_attempts = f.retry_attempts;
            out.min_duration = f.min_duration.and_then(|d| d.non_zero());
        }
        if let Some(fields) = &cfg.fields {
            if let Some(m) = &fields.default_mode {
                out.default_mode = FieldMode::parse("accessLog.fields.defaultMode", m)?;
            }
            for (name, m) in &fields.names {
                let mode = FieldMode::parse(&format!("accessLog.fields.names.{name}"), m)?;
                out.names.push((name.clone(), mode));
            }
            if let Some(h) = &fields.headers {
                // Traefik drops headers by default; logging them is not implemented, and
                // silently not logging what the operator asked for would be worse than saying so.
                let asks = h
                    .default_mode
                    .as_deref()
                    .map(|m| FieldMode::parse("accessLog.fields.headers.defaultMode", m))
                    .transpose()?
                    .is_some_and(|m| m != FieldMode::Drop);
                for (name, m) in &h.names {
                    let key = format!("accessLog.fields.headers.names.{name}");
                    if FieldMode::parse(&key, m)? != FieldMode::Drop {
                        return Err(format!(
                            "{key}: logging request headers is not supported (only `drop`)"
                        ));
                    }
                }
                if asks {
                    return Err(
                        "accessLog.fields.headers.defaultMode: logging request headers \
                                is not supported (only `drop`)"
                            .into(),
                    );
                }
            }
        }
        Ok(out)
    }

    /// Whether a request's line is written (Traefik: no filter, or any filter matches).
    pub fn keep(&self, status: u16, took: Duration, retry_attempts: u32) -> bool {
        if self.status_codes.is_empty() && !self.retry_attempts && self.min_duration.is_none() {
            return true;
        }
        self.status_codes
            .iter()
            .any(|&(lo, hi)| (lo..=hi).contains(&status))
            || (self.retry_attempts && retry_attempts > 0)
            || self.min_duration.is_some_and(|m| took > m)
    }

    fn fields_all_kept(&self) -> bool {
        self.default_mode == FieldMode::Keep
            && self.names.iter().all(|(_, m)| *m == FieldMode::Keep)
    }

    fn mode(&self, field: &str) -> FieldMode {
        self.names
            .iter()
            .find(|(n, _)| n == field)
            .map_or(self.default_mode, |(_, m)| *m)
    }
}

/// `404` or `500-599` as an inclusive range of valid status codes.
fn parse_status_range(s: &str) -> Option<(u16, u16)> {
    let (lo, hi) = match s.trim().split_once('-') {
        Some((a, b)) => (a.trim().parse().ok()?, b.trim().parse().ok()?),
        None => {
            let c = s.trim().parse().ok()?;
            (c, c)
        }
    };
    ((100..=999).contains(&lo) && (100..=999).contains(&hi) && lo <= hi).then_some((lo, hi))
}

/// One access log entry (Traefik's field names).
#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct Entry<'a> {
    #[serde(rename = "StartUTC")]
    pub start_utc: String,
    pub duration: u128,
    pub router_name: &'a str,
    pub service_name: &'a str,
    #[serde(rename = "ServiceAddr", skip_serializing_if = "str::is_empty")]
    pub service_addr: &'a str,
    pub entry_point_name: &'a str,
    pub client_addr: String,
    pub client_host: String,
    pub client_port: String,
    pub request_method: &'a str,
    pub request_path: &'a str,
    pub request_protocol: &'a str,
    pub request_host: &'a str,
    pub request_scheme: &'static str,
    pub request_content_size: u64,
    pub downstream_status: u16,
    pub downstream_content_size: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub origin_status: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub origin_duration: Option<u128>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub origin_content_size: Option<u64>,
    pub retry_attempts: u32,
    pub overhead: u128,
    #[serde(rename = "TLSVersion", skip_serializing_if = "Option::is_none")]
    pub tls_version: Option<&'a str>,
    // The log record's own keys are lower-case in Traefik's JSON lines.
    #[serde(rename = "level")]
    pub level: &'static str,
    #[serde(rename = "msg")]
    pub msg: &'static str,
    #[serde(rename = "time")]
    pub time: String,
}

/// The access log sink.
#[derive(Debug, Clone)]
pub struct AccessLog {
    tx: SyncSender<Vec<u8>>,
    json: bool,
    settings: Arc<Settings>,
    metrics: Arc<Metrics>,
}

impl AccessLog {
    /// Opens the log (`None` path: stdout) and starts the writer thread.
    pub fn open(
        path: Option<&Path>,
        json: bool,
        buffer: usize,
        settings: Settings,
        metrics: Arc<Metrics>,
    ) -> std::io::Result<Self> {
        let out: Box<dyn Write + Send> = match path {
            Some(p) => Box::new(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(p)?,
            ),
            None => Box::new(std::io::stdout()),
        };
        let (tx, rx) = mpsc::sync_channel::<Vec<u8>>(buffer.max(16_384));
        std::thread::Builder::new()
            .name("gantry-accesslog".into())
            .spawn(move || {
                let mut w = std::io::BufWriter::with_capacity(64 * 1024, out);
                while let Ok(line) = rx.recv() {
                    let _ = w.write_all(&line);
                    while let Ok(more) = rx.try_recv() {
                        let _ = w.write_all(&more);
                    }
                    let _ = w.flush();
                }
                let _ = w.flush();
            })?;
        Ok(AccessLog {
            tx,
            json,
            settings: Arc::new(settings),
            metrics,
        })
    }

    /// Whether a request's line passes `accessLog.filters` (check before building the entry).
    pub fn keep(&self, status: u16, took: Duration, retry_attempts: u32) -> bool {
        self.settings.keep(status, took, retry_attempts)
    }

    pub fn log(&self, e: &Entry<'_>) {
        let line = if self.json {
            let mut v = match self.json_line(e) {
                Ok(v) => v,
                Err(_) => return,
            };
            v.push(b'\n');
            v
        } else {
            format!(
                "{} - - [{}] \"{} {} {}\" {} {} \"-\" \"-\" 1 \"{}\" \"{}\" {}ms\n",
                e.client_host,
                e.start_utc,
                e.request_method,
                e.request_path,
                e.request_protocol,
                e.downstream_status,
                e.downstream_content_size,
                e.router_name,
                e.service_addr,
                e.duration / 1_000_000
            )
            .into_bytes()
        };
        match self.tx.try_send(line) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                self.metrics
                    .access_log_dropped
                    .fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

impl AccessLog {
    fn json_line(&self, e: &Entry<'_>) -> serde_json::Result<Vec<u8>> {
        if self.settings.fields_all_kept() {
            return serde_json::to_vec(e);
        }
        let serde_json::Value::Object(mut map) = serde_json::to_value(e)? else {
            return serde_json::to_vec(e);
        };
        map.retain(|k, v| {
            // The log record's own keys are not request fields.
            if matches!(k.as_str(), "level" | "msg" | "time") {
                return true;
            }
            match self.settings.mode(k) {
                FieldMode::Keep => true,
                FieldMode::Drop => false,
                FieldMode::Redact => {
                    *v = serde_json::Value::String(REDACTED.into());
                    true
                }
            }
        });
        serde_json::to_vec(&map)
    }
}

/// RFC 3339 UTC time with nanoseconds, as Traefik writes StartUTC.
pub fn rfc3339(t: SystemTime) -> String {
    let d = t
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or(Duration::ZERO);
    let secs = d.as_secs() as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let (y, m, dd) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{dd:02}T{:02}:{:02}:{:02}.{:09}Z",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60,
        d.subsec_nanos()
    )
}

/// Days since 1970-01-01 to (year, month, day), Howard Hinnant's algorithm.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(yaml: &str) -> Result<Settings, String> {
        let cfg: AccessLogConfig = serde_yaml_ng::from_str(yaml).unwrap();
        Settings::compile(&cfg)
    }

    #[test]
    fn filters_keep_a_line_when_any_filter_matches() {
        let none = settings("{}").unwrap();
        assert!(none.keep(200, Duration::ZERO, 0));
        let s = settings(
            "filters: {statusCodes: ['404', '500-599'], retryAttempts: true, minDuration: 10ms}",
        )
        .unwrap();
        assert!(!s.keep(200, Duration::from_millis(1), 0));
        assert!(s.keep(404, Duration::ZERO, 0));
        assert!(s.keep(503, Duration::ZERO, 0));
        assert!(!s.keep(403, Duration::ZERO, 0));
        assert!(s.keep(200, Duration::ZERO, 1), "retried");
        assert!(s.keep(200, Duration::from_millis(11), 0), "slow");
        let codes = settings("filters: {statusCodes: ['200']}").unwrap();
        assert!(!codes.keep(201, Duration::from_secs(5), 3));
    }

    #[test]
    fn bad_filters_and_modes_are_named() {
        for (yaml, needle) in [
            ("format: xml", "accessLog.format: `xml`"),
            (
                "filters: {statusCodes: ['4xx']}",
                "accessLog.filters.statusCodes: `4xx`",
            ),
            ("filters: {statusCodes: ['599-500']}", "`599-500`"),
            (
                "fields: {defaultMode: hide}",
                "accessLog.fields.defaultMode: `hide`",
            ),
            (
                "fields: {names: {ClientHost: nope}}",
                "accessLog.fields.names.ClientHost",
            ),
            (
                "fields: {headers: {defaultMode: keep}}",
                "accessLog.fields.headers.defaultMode: logging request headers",
            ),
            (
                "fields: {headers: {names: {User-Agent: redact}}}",
                "accessLog.fields.headers.names.User-Agent",
            ),
        ] {
            let e = settings(yaml).unwrap_err();
            assert!(e.contains(needle), "{yaml}: {e}");
        }
        // Traefik's default for headers (drop) is fine.
        settings("fields: {headers: {defaultMode: drop, names: {X-Id: drop}}}").unwrap();
    }

    #[test]
    fn fields_are_kept_dropped_or_redacted() {
        let (tx, rx) = mpsc::sync_channel(4);
        let log = AccessLog {
            tx,
            json: true,
            settings: Arc::new(
                settings(
                    "fields: {defaultMode: keep, names: {ClientHost: redact, ClientAddr: drop, \
                     ClientPort: drop}}",
                )
                .unwrap(),
            ),
            metrics: Arc::new(Metrics::new(None)),
        };
        let e = Entry {
            start_utc: "2026-11-23T00:00:00.000000000Z".into(),
            duration: 5,
            router_name: "r@file",
            service_name: "s@file",
            service_addr: "127.0.0.1:80",
            entry_point_name: "web",
            client_addr: "192.0.2.7:4000".into(),
            client_host: "192.0.2.7".into(),
            client_port: "4000".into(),
            request_method: "GET",
            request_path: "/x",
            request_protocol: "HTTP/1.1",
            request_host: "a.test",
            request_scheme: "http",
            request_content_size: 0,
            downstream_status: 200,
            downstream_content_size: 3,
            origin_status: Some(200),
            origin_duration: Some(4),
            origin_content_size: Some(3),
            retry_attempts: 0,
            overhead: 1,
            tls_version: None,
            level: "info",
            msg: "",
            time: "2026-11-23T00:00:00.000000001Z".into(),
        };
        log.log(&e);
        let line: serde_json::Value = serde_json::from_slice(&rx.recv().unwrap()).unwrap();
        assert_eq!(line["ClientHost"], "REDACTED");
        assert!(line.get("ClientAddr").is_none() && line.get("ClientPort").is_none());
        assert_eq!(line["RouterName"], "r@file");
        assert!(!line.to_string().contains("192.0.2.7"), "{line}");
        // defaultMode drop keeps only what is named.
        let (tx, rx) = mpsc::sync_channel(4);
        let log = AccessLog {
            tx,
            settings: Arc::new(
                settings("fields: {defaultMode: drop, names: {DownstreamStatus: keep}}").unwrap(),
            ),
            ..log
        };
        log.log(&e);
        let line: serde_json::Value = serde_json::from_slice(&rx.recv().unwrap()).unwrap();
        let keys: Vec<_> = line.as_object().unwrap().keys().cloned().collect();
        assert_eq!(keys, ["DownstreamStatus", "level", "msg", "time"], "{line}");
    }

    #[test]
    fn rfc3339_dates() {
        let t = SystemTime::UNIX_EPOCH + Duration::new(1_700_000_000, 5);
        assert_eq!(rfc3339(t), "2023-11-14T22:13:20.000000005Z");
        assert_eq!(
            rfc3339(SystemTime::UNIX_EPOCH),
            "1970-01-01T00:00:00.000000000Z"
        );
        let leap = SystemTime::UNIX_EPOCH + Duration::from_secs(951_782_400); // 2000-02-29
        assert!(rfc3339(leap).starts_with("2000-02-29T"));
    }
}
