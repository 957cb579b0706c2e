//! Prometheus metrics, named like Traefik's with a `gantry_` prefix.
//!
//! Per-request recording is a few relaxed atomic increments on series found under a read lock;
//! a series is created (write lock) only the first time a label combination is seen. Every
//! [`RequestMetrics`] is split in shards, one per worker thread (threads are spread over the
//! shards), so workers never write the same cache lines; a scrape adds the shards up. Handles
//! (`Arc<RequestMetrics>`) are resolved when an entrypoint starts or a snapshot is compiled, not
//! looked up by name per request.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

/// Traefik's default histogram buckets (seconds).
pub const DEFAULT_BUCKETS: [f64; 4] = [0.1, 0.3, 1.2, 5.0];

/// Labels of one request series.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Labels {
    pub code: u16,
    pub method: http::Method,
    pub protocol: &'static str,
}

#[derive(Debug)]
struct Series {
    count: AtomicU64,
    sum_micros: AtomicU64,
    buckets: Vec<AtomicU64>,
}

impl Series {
    fn new(n: usize) -> Self {
        Series {
            count: AtomicU64::new(0),
            sum_micros: AtomicU64::new(0),
            buckets: (0..n).map(|_| AtomicU64::new(0)).collect(),
        }
    }
}

/// A series' values summed over the shards (scrape time).
#[derive(Debug, Default, Clone)]
struct Totals {
    count: u64,
    sum_micros: u64,
    buckets: Vec<u64>,
}

/// Number of shards per [`RequestMetrics`]: more than the worker threads of a small machine.
const SHARDS: usize = 8;

/// One shard on its own cache lines.
#[derive(Debug, Default)]
#[repr(align(128))]
struct Shard(RwLock<BTreeMap<Labels, Series>>);

/// The shard of the calling thread: threads take shards round robin on first use.
fn shard_index() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static INDEX: usize = NEXT.fetch_add(1, Ordering::Relaxed) % SHARDS;
    }
    INDEX.with(|i| *i)
}

/// Requests of one entrypoint, router or service.
#[derive(Debug)]
pub struct RequestMetrics {
    buckets: Arc<[f64]>,
    shards: Box<[Shard]>,
}

impl RequestMetrics {
    fn new(buckets: Arc<[f64]>) -> Self {
        RequestMetrics {
            buckets,
            shards: (0..SHARDS).map(|_| Shard::default()).collect(),
        }
    }

    pub fn record(&self, labels: &Labels, took: Duration) {
        let shard = &self.shards[shard_index()].0;
        if let Ok(m) = shard.read()
            && let Some(series) = m.get(labels)
        {
            self.bump(series, took);
            return;
        }
        if let Ok(mut m) = shard.write() {
            let series = m
                .entry(labels.clone())
                .or_insert_with(|| Series::new(self.buckets.len()));
            self.bump(series, took);
        }
    }

    fn bump(&self, series: &Series, took: Duration) {
        series.count.fetch_add(1, Ordering::Relaxed);
        series
            .sum_micros
            .fetch_add(took.as_micros() as u64, Ordering::Relaxed);
        // Only the first bucket the duration fits in (one atomic instead of one per bucket);
        // `totals` makes them cumulative, as Prometheus wants, at scrape time.
        let secs = took.as_secs_f64();
        if let Some(i) = self.buckets.iter().position(|b| secs <= *b)
            && let Some(b) = series.buckets.get(i)
        {
            b.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Every series, summed over the shards.
    fn totals(&self) -> BTreeMap<Labels, Totals> {
        let mut out: BTreeMap<Labels, Totals> = BTreeMap::new();
        for shard in &*self.shards {
            let Ok(m) = shard.0.read() else { continue };
            for (l, s) in m.iter() {
                let t = out.entry(l.clone()).or_insert_with(|| Totals {
                    buckets: vec![0; self.buckets.len()],
                    ..Totals::default()
                });
                t.count += s.count.load(Ordering::Relaxed);
                t.sum_micros += s.sum_micros.load(Ordering::Relaxed);
                for (acc, b) in t.buckets.iter_mut().zip(&s.buckets) {
                    *acc += b.load(Ordering::Relaxed);
                }
            }
        }
        // Cumulative: `le="x"` counts every request that took at most x.
        for t in out.values_mut() {
            let mut sum = 0;
            for b in &mut t.buckets {
                sum += *b;
                *b = sum;
            }
        }
        out
    }

    /// Total requests recorded (all labels).
    pub fn total(&self) -> u64 {
        self.shards
            .iter()
            .filter_map(|s| s.0.read().ok())
            .map(|m| {
                m.values()
                    .map(|s| s.count.load(Ordering::Relaxed))
                    .sum::<u64>()
            })
            .sum()
    }
}

/// The process's metrics.
#[derive(Debug)]
pub struct Metrics {
    buckets: Arc<[f64]>,
    entrypoints: RwLock<BTreeMap<String, Arc<RequestMetrics>>>,
    routers: RwLock<BTreeMap<(String, String), Arc<RequestMetrics>>>,
    services: RwLock<BTreeMap<String, Arc<RequestMetrics>>>,
    open_connections: RwLock<BTreeMap<String, Arc<AtomicI64>>>,
    pub config_reloads: AtomicU64,
    pub config_reload_failures: AtomicU64,
    /// Unix seconds of the last successful reload.
    pub config_last_reload_success: AtomicU64,
    pub config_last_reload_failure: AtomicU64,
    pub access_log_dropped: AtomicU64,
}

impl Metrics {
    pub fn new(buckets: Option<Vec<f64>>) -> Self {
        let buckets: Arc<[f64]> = match buckets {
            Some(b) if !b.is_empty() => b.into(),
            _ => DEFAULT_BUCKETS.to_vec().into(),
        };
        Metrics {
            buckets,
            entrypoints: RwLock::default(),
            routers: RwLock::default(),
            services: RwLock::default(),
            open_connections: RwLock::default(),
            config_reloads: AtomicU64::new(0),
            config_reload_failures: AtomicU64::new(0),
            config_last_reload_success: AtomicU64::new(0),
            config_last_reload_failure: AtomicU64::new(0),
            access_log_dropped: AtomicU64::new(0),
        }
    }

    fn get<K: Ord + Clone>(
        &self,
        map: &RwLock<BTreeMap<K, Arc<RequestMetrics>>>,
        key: &K,
    ) -> Option<Arc<RequestMetrics>> {
        if let Some(m) = map.read().ok()?.get(key) {
            return Some(m.clone());
        }
        let mut w = map.write().ok()?;
        Some(
            w.entry(key.clone())
                .or_insert_with(|| Arc::new(RequestMetrics::new(self.buckets.clone())))
                .clone(),
        )
    }

    pub fn entrypoint(&self, name: &str) -> Option<Arc<RequestMetrics>> {
        self.get(&self.entrypoints, &name.to_owned())
    }
    pub fn router(&self, router: &str, service: &str) -> Option<Arc<RequestMetrics>> {
        self.get(&self.routers, &(router.to_owned(), service.to_owned()))
    }
    pub fn service(&self, name: &str) -> Option<Arc<RequestMetrics>> {
        self.get(&self.services, &name.to_owned())
    }

    /// The open-connections gauge of an entrypoint.
    pub fn connections(&self, entrypoint: &str) -> Arc<AtomicI64> {
        if let Some(g) = self
            .open_connections
            .read()
            .ok()
            .and_then(|m| m.get(entrypoint).cloned())
        {
            return g;
        }
        match self.open_connections.write() {
            Ok(mut m) => m.entry(entrypoint.to_owned()).or_default().clone(),
            Err(_) => Arc::default(),
        }
    }

    /// Renders the Prometheus text format. `extra` adds gauges computed at scrape time.
    pub fn render(&self, extra: &Extra<'_>) -> String {
        let mut out = String::with_capacity(4096);
        let esc = |s: &str| {
            s.replace('\\', "\\\\")
                .replace('"', "\\\"")
                .replace('\n', "\\n")
        };
        let _ = writeln!(
            out,
            "# HELP gantry_config_reloads_total Config reloads.\n# TYPE gantry_config_reloads_total counter"
        );
        let _ = writeln!(
            out,
            "gantry_config_reloads_total {}",
            self.config_reloads.load(Ordering::Relaxed)
        );
        let _ = writeln!(
            out,
            "# HELP gantry_config_reloads_failure_total Config reload failures.\n# TYPE gantry_config_reloads_failure_total counter"
        );
        let _ = writeln!(
            out,
            "gantry_config_reloads_failure_total {}",
            self.config_reload_failures.load(Ordering::Relaxed)
        );
        let _ = writeln!(
            out,
            "# HELP gantry_config_last_reload_success Last config reload success (unix seconds).\n# TYPE gantry_config_last_reload_success gauge"
        );
        let _ = writeln!(
            out,
            "gantry_config_last_reload_success {}",
            self.config_last_reload_success.load(Ordering::Relaxed)
        );
        let _ = writeln!(
            out,
            "# HELP gantry_config_last_reload_failure Last config reload failure (unix seconds).\n# TYPE gantry_config_last_reload_failure gauge"
        );
        let _ = writeln!(
            out,
            "gantry_config_last_reload_failure {}",
            self.config_last_reload_failure.load(Ordering::Relaxed)
        );
        let _ = writeln!(
            out,
            "# HELP gantry_open_connections Open connections per entrypoint.\n# TYPE gantry_open_connections gauge"
        );
        if let Ok(m) = self.open_connections.read() {
            for (ep, g) in m.iter() {
                let _ = writeln!(
                    out,
                    "gantry_open_connections{{entrypoint=\"{}\",protocol=\"TCP\"}} {}",
                    esc(ep),
                    g.load(Ordering::Relaxed)
                );
            }
        }
        let _ = writeln!(
            out,
            "# HELP gantry_websocket_open Open WebSocket tunnels.\n# TYPE gantry_websocket_open gauge"
        );
        let _ = writeln!(out, "gantry_websocket_open {}", extra.websockets);
        let _ = writeln!(
            out,
            "# HELP gantry_accesslog_dropped_total Access log lines dropped because the writer fell behind.\n# TYPE gantry_accesslog_dropped_total counter"
        );
        let _ = writeln!(
            out,
            "gantry_accesslog_dropped_total {}",
            self.access_log_dropped.load(Ordering::Relaxed)
        );
        let _ = writeln!(
            out,
            "# HELP gantry_tls_certs_not_after Certificate expiry (unix seconds).\n# TYPE gantry_tls_certs_not_after gauge"
        );
        for (cn, sans, not_after) in &extra.certs {
            let _ = writeln!(
                out,
                "gantry_tls_certs_not_after{{cn=\"{}\",sans=\"{}\"}} {}",
                esc(cn),
                esc(sans),
                not_after
            );
        }
        let _ = writeln!(
            out,
            "# HELP gantry_service_server_up Server health (1 up, 0 down).\n# TYPE gantry_service_server_up gauge"
        );
        for (svc, url, up) in &extra.servers {
            let _ = writeln!(
                out,
                "gantry_service_server_up{{service=\"{}\",url=\"{}\"}} {}",
                esc(svc),
                esc(url),
                u8::from(*up)
            );
        }
        let mut families = Vec::new();
        if let Ok(m) = self.entrypoints.read() {
            families.push((
                "entrypoint",
                m.iter()
                    .map(|(k, v)| (format!("entrypoint=\"{}\"", esc(k)), v.clone()))
                    .collect::<Vec<_>>(),
            ));
        }
        if let Ok(m) = self.routers.read() {
            families.push((
                "router",
                m.iter()
                    .map(|((r, s), v)| {
                        (
                            format!("router=\"{}\",service=\"{}\"", esc(r), esc(s)),
                            v.clone(),
                        )
                    })
                    .collect(),
            ));
        }
        if let Ok(m) = self.services.read() {
            families.push((
                "service",
                m.iter()
                    .map(|(k, v)| (format!("service=\"{}\"", esc(k)), v.clone()))
                    .collect(),
            ));
        }
        for (family, list) in families {
            let _ = writeln!(
                out,
                "# HELP gantry_{family}_requests_total Requests per {family}.\n# TYPE gantry_{family}_requests_total counter"
            );
            let list: Vec<_> = list
                .into_iter()
                .map(|(lbl, m)| (lbl, m.totals(), m.buckets.clone()))
                .collect();
            for (lbl, series, _) in &list {
                for (l, s) in series.iter() {
                    let _ = writeln!(
                        out,
                        "gantry_{family}_requests_total{{code=\"{}\",method=\"{}\",protocol=\"{}\",{lbl}}} {}",
                        l.code, l.method, l.protocol, s.count
                    );
                }
            }
            let _ = writeln!(
                out,
                "# HELP gantry_{family}_request_duration_seconds Request durations per {family}.\n# TYPE gantry_{family}_request_duration_seconds histogram"
            );
            for (lbl, series, buckets) in &list {
                for (l, s) in series.iter() {
                    let base = format!(
                        "code=\"{}\",method=\"{}\",protocol=\"{}\",{lbl}",
                        l.code, l.method, l.protocol
                    );
                    for (i, b) in buckets.iter().enumerate() {
                        let _ = writeln!(
                            out,
                            "gantry_{family}_request_duration_seconds_bucket{{{base},le=\"{b}\"}} {}",
                            s.buckets[i]
                        );
                    }
                    let count = s.count;
                    let _ = writeln!(
                        out,
                        "gantry_{family}_request_duration_seconds_bucket{{{base},le=\"+Inf\"}} {count}"
                    );
                    let _ = writeln!(
                        out,
                        "gantry_{family}_request_duration_seconds_sum{{{base}}} {}",
                        s.sum_micros as f64 / 1e6
                    );
                    let _ = writeln!(
                        out,
                        "gantry_{family}_request_duration_seconds_count{{{base}}} {count}"
                    );
                }
            }
        }
        out
    }
}

/// Gauges computed at scrape time.
#[derive(Debug, Default)]
pub struct Extra<'a> {
    pub websockets: usize,
    /// (common name, SANs joined by comma, not-after unix seconds)
    pub certs: Vec<(String, String, i64)>,
    /// (service, url, up)
    pub servers: Vec<(&'a str, &'a str, bool)>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_and_counter_render() {
        let m = Metrics::new(None);
        let r = m.router("web@file", "app@file").unwrap();
        let l = Labels {
            code: 200,
            method: http::Method::GET,
            protocol: "http",
        };
        r.record(&l, Duration::from_millis(50));
        r.record(&l, Duration::from_millis(500));
        let text = m.render(&Extra::default());
        assert!(text.contains("gantry_router_requests_total{code=\"200\",method=\"GET\",protocol=\"http\",router=\"web@file\",service=\"app@file\"} 2"), "{text}");
        assert!(text.contains("le=\"0.1\"} 1"), "{text}");
        assert!(text.contains("le=\"1.2\"} 2"), "{text}");
        assert_eq!(r.total(), 2);
    }
}
