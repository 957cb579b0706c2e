//! The access log: one JSON object per request with Traefik's field names (or Common Log Format),
//! serialised on the request's thread and written by a dedicated writer thread, so a slow disk never
//! stalls request handling. Lines that cannot be queued are counted, not blocked on.

use std::io::Write;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{self, SyncSender, TrySendError};
use std::time::{Duration, SystemTime};

use serde::Serialize;

use crate::metrics::Metrics;

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
    pub level: &'static str,
    pub msg: &'static str,
    pub time: String,
}

/// The access log sink.
#[derive(Debug, Clone)]
pub struct AccessLog {
    tx: SyncSender<Vec<u8>>,
    json: bool,
    metrics: Arc<Metrics>,
}

impl AccessLog {
    /// Opens the log (`None` path: stdout) and starts the writer thread.
    pub fn open(
        path: Option<&Path>,
        json: bool,
        buffer: usize,
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
        Ok(AccessLog { tx, json, metrics })
    }

    pub fn log(&self, e: &Entry<'_>) {
        let line = if self.json {
            let mut v = match serde_json::to_vec(e) {
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
