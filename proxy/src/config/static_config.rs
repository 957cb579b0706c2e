//! Traefik v3's static configuration (the `--config` file), as far as Gantry supports it.
//!
//! Every struct denies unknown fields, and features Gantry refuses are typed [`Unsupported`], so a
//! key that would silently do nothing is an error naming the key, file and line instead.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Deserialize;

use super::Dur;
use super::unsupported::{Ignored, Unsupported};

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct StaticConfig {
    #[serde(default)]
    pub entry_points: BTreeMap<String, EntryPoint>,
    #[serde(default)]
    pub providers: Providers,
    pub access_log: Option<AccessLogConfig>,
    pub metrics: Option<MetricsConfig>,
    pub api: Option<ApiConfig>,
    pub ping: Option<PingConfig>,
    pub log: Option<LogConfig>,
    #[serde(default)]
    pub servers_transport: ServersTransportConfig,
    /// `checkNewVersion` and `sendAnonymousUsage`: accepted for compatibility; Gantry never phones home.
    pub global: Option<Global>,
    pub certificates_resolvers: Option<Unsupported>,
    pub tracing: Option<Unsupported>,
    pub experimental: Option<Unsupported>,
    pub hub: Option<Unsupported>,
    pub spiffe: Option<Unsupported>,
    pub core: Option<Unsupported>,
    pub host_resolver: Option<Unsupported>,
    pub tcp_servers_transport: Option<Unsupported>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Global {
    pub check_new_version: Option<Ignored>,
    pub send_anonymous_usage: Option<Ignored>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct EntryPoint {
    /// `[host]:port`, optionally followed by `/tcp` (`/udp` is refused).
    pub address: String,
    #[serde(default)]
    pub as_default: Option<bool>,
    #[serde(default)]
    pub transport: EntryPointTransport,
    #[serde(default)]
    pub forwarded_headers: ForwardedHeaders,
    #[serde(default)]
    pub http: EntryPointHttp,
    pub http2: Option<Http2Config>,
    /// Gantry extensions: connection limits and protections Traefik has no keys for.
    #[serde(default)]
    pub gantry: EntryPointLimits,
    pub proxy_protocol: Option<Unsupported>,
    pub http3: Option<Unsupported>,
    pub udp: Option<Unsupported>,
    pub observability: Option<Unsupported>,
    pub reuse_port: Option<Ignored>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct EntryPointTransport {
    #[serde(default)]
    pub responding_timeouts: RespondingTimeouts,
    #[serde(default)]
    pub life_cycle: LifeCycle,
    /// Close a keep-alive connection after this many requests (0: no limit).
    #[serde(default)]
    pub keep_alive_max_requests: u64,
    /// Close a keep-alive connection after this long (0: no limit).
    #[serde(default)]
    pub keep_alive_max_time: Dur,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RespondingTimeouts {
    /// Maximum time to read a whole request, body included (Traefik default 60s; 0 = none).
    #[serde(default = "default_read_timeout")]
    pub read_timeout: Dur,
    /// Maximum time to write a response (0 = none, Traefik's default).
    #[serde(default)]
    pub write_timeout: Dur,
    /// Keep-alive idle timeout (Traefik default 180s).
    #[serde(default = "default_idle_timeout")]
    pub idle_timeout: Dur,
}

fn default_read_timeout() -> Dur {
    Dur::secs(60)
}
fn default_idle_timeout() -> Dur {
    Dur::secs(180)
}

impl Default for RespondingTimeouts {
    fn default() -> Self {
        Self {
            read_timeout: default_read_timeout(),
            write_timeout: Dur::default(),
            idle_timeout: default_idle_timeout(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct LifeCycle {
    /// Keep accepting (and serving) new requests this long after SIGTERM (default 0).
    #[serde(default)]
    pub request_accept_grace_timeout: Dur,
    /// Then let in-flight requests finish for up to this long (Traefik default 10s).
    #[serde(default = "default_grace")]
    pub grace_time_out: Dur,
}

fn default_grace() -> Dur {
    Dur::secs(10)
}

impl Default for LifeCycle {
    fn default() -> Self {
        Self {
            request_accept_grace_timeout: Dur::default(),
            grace_time_out: default_grace(),
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ForwardedHeaders {
    /// Clients whose X-Forwarded-* headers are kept; from others they are replaced.
    #[serde(default, rename = "trustedIPs", alias = "trustedIps")]
    pub trusted_ips: Vec<String>,
    /// Trust X-Forwarded-* from everyone.
    #[serde(default)]
    pub insecure: bool,
    #[serde(default)]
    pub connection: Vec<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct EntryPointHttp {
    pub redirections: Option<Redirections>,
    pub tls: Option<EntryPointTls>,
    /// Middlewares applied to every router on this entrypoint, before the router's own.
    #[serde(default)]
    pub middlewares: Vec<String>,
    #[serde(default)]
    pub encode_query_semicolons: Option<Ignored>,
    pub max_header_bytes: Option<usize>,
    #[serde(default)]
    pub sanitize_path: Option<bool>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Redirections {
    pub entry_point: Option<EntryPointRedirect>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct EntryPointRedirect {
    /// Target entrypoint name (its port is used) or a `:port`.
    pub to: String,
    #[serde(default = "default_https")]
    pub scheme: String,
    #[serde(default = "default_true")]
    pub permanent: bool,
    /// Priority of the generated catch-all redirect router (Traefik default: max int - 1).
    pub priority: Option<i64>,
}

fn default_https() -> String {
    "https".into()
}
pub(crate) fn default_true() -> bool {
    true
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct EntryPointTls {
    /// Name of a `tls.options` entry from the dynamic configuration.
    pub options: Option<String>,
    pub cert_resolver: Option<Unsupported>,
    pub domains: Option<Unsupported>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Http2Config {
    pub max_concurrent_streams: Option<u32>,
}

/// Gantry's own protections, under `entryPoints.<name>.gantry`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct EntryPointLimits {
    /// Concurrent connections accepted on this entrypoint; beyond it new ones wait in the backlog.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// Time allowed for a client to send a request head (slowloris protection). hyper measures it
    /// from the moment the connection waits for a request, so it also bounds how long an HTTP/1.1
    /// keep-alive connection may sit idle between requests (with `idleTimeout`, the smaller wins).
    #[serde(default = "default_header_timeout")]
    pub header_read_timeout: Dur,
    /// Maximum size of a request head in bytes.
    #[serde(default = "default_max_header")]
    pub max_header_bytes: usize,
    /// A WebSocket tunnel with no traffic in either direction for this long is closed.
    #[serde(default = "default_ws_idle")]
    pub websocket_idle_timeout: Dur,
}

fn default_max_connections() -> usize {
    16_384
}
fn default_header_timeout() -> Dur {
    Dur::secs(30)
}
fn default_max_header() -> usize {
    64 * 1024
}
fn default_ws_idle() -> Dur {
    Dur::secs(600)
}

impl Default for EntryPointLimits {
    fn default() -> Self {
        Self {
            max_connections: default_max_connections(),
            header_read_timeout: default_header_timeout(),
            max_header_bytes: default_max_header(),
            websocket_idle_timeout: default_ws_idle(),
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Providers {
    pub file: Option<FileProvider>,
    /// Minimum time between two applied reloads (Traefik default 2s; Gantry default 200ms).
    pub providers_throttle_duration: Option<Dur>,
    pub docker: Option<Unsupported>,
    pub swarm: Option<Unsupported>,
    pub kubernetes_ingress: Option<Unsupported>,
    pub kubernetes_crd: Option<Unsupported>,
    pub kubernetes_gateway: Option<Unsupported>,
    pub consul: Option<Unsupported>,
    pub consul_catalog: Option<Unsupported>,
    pub etcd: Option<Unsupported>,
    pub redis: Option<Unsupported>,
    pub zoo_keeper: Option<Unsupported>,
    pub http: Option<Unsupported>,
    pub nomad: Option<Unsupported>,
    pub ecs: Option<Unsupported>,
    pub plugin: Option<Unsupported>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct FileProvider {
    pub filename: Option<PathBuf>,
    pub directory: Option<PathBuf>,
    #[serde(default)]
    pub watch: bool,
    pub debug_log_generated_template: Option<Ignored>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct AccessLogConfig {
    /// Log file; stdout when absent.
    pub file_path: Option<PathBuf>,
    /// `json` (the default in Gantry) or `common`.
    pub format: Option<String>,
    /// Number of lines buffered before writing.
    #[serde(default)]
    pub buffering_size: usize,
    pub filters: Option<AccessLogFilters>,
    pub fields: Option<AccessLogFields>,
    pub add_internals: Option<bool>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct AccessLogFilters {
    #[serde(default)]
    pub status_codes: Vec<String>,
    #[serde(default)]
    pub retry_attempts: bool,
    pub min_duration: Option<Dur>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct AccessLogFields {
    pub default_mode: Option<String>,
    #[serde(default)]
    pub names: BTreeMap<String, String>,
    pub headers: Option<AccessLogHeaders>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct AccessLogHeaders {
    pub default_mode: Option<String>,
    #[serde(default)]
    pub names: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct MetricsConfig {
    pub prometheus: Option<PrometheusConfig>,
    pub add_internals: Option<bool>,
    pub datadog: Option<Unsupported>,
    pub statsd: Option<Unsupported>,
    pub influx_db2: Option<Unsupported>,
    pub otlp: Option<Unsupported>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct PrometheusConfig {
    /// Entrypoint that serves `/metrics` (default `traefik`).
    pub entry_point: Option<String>,
    #[serde(default)]
    pub buckets: Vec<f64>,
    pub add_entry_points_labels: Option<bool>,
    pub add_routers_labels: Option<bool>,
    pub add_services_labels: Option<bool>,
    pub manual_routing: Option<Unsupported>,
    pub header_labels: Option<Unsupported>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ApiConfig {
    /// Serve the API on the `traefik` entrypoint without a router.
    #[serde(default)]
    pub insecure: bool,
    /// Gantry serves no dashboard; `true` is refused.
    #[serde(default)]
    pub dashboard: bool,
    #[serde(default)]
    pub debug: bool,
    pub base_path: Option<String>,
    pub disable_dashboard_ad: Option<Ignored>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct PingConfig {
    pub entry_point: Option<String>,
    pub manual_routing: Option<bool>,
    pub terminating_status_code: Option<u16>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct LogConfig {
    pub level: Option<String>,
    pub format: Option<String>,
    pub file_path: Option<Unsupported>,
    pub no_color: Option<Ignored>,
}

/// Default transport to upstream servers (`serversTransport` in the static config).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ServersTransportConfig {
    #[serde(default)]
    pub insecure_skip_verify: bool,
    #[serde(default)]
    pub root_c_as: Vec<String>,
    pub max_idle_conns_per_host: Option<usize>,
    #[serde(default)]
    pub forwarding_timeouts: super::dynamic::ForwardingTimeouts,
    pub spiffe: Option<Unsupported>,
}
