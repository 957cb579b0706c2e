//! Traefik v3's dynamic configuration (file provider): routers, services, middlewares and TLS.

use std::collections::BTreeMap;

use serde::Deserialize;

use super::Dur;
use super::static_config::default_true;
use super::unsupported::{Ignored, Unsupported};

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct DynamicConfig {
    #[serde(default)]
    pub http: HttpConfig,
    #[serde(default)]
    pub tls: TlsConfig,
    pub tcp: Option<Unsupported>,
    pub udp: Option<Unsupported>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct HttpConfig {
    #[serde(default)]
    pub routers: BTreeMap<String, RouterConfig>,
    #[serde(default)]
    pub services: BTreeMap<String, ServiceConfig>,
    #[serde(default)]
    pub middlewares: BTreeMap<String, MiddlewareConfig>,
    #[serde(default)]
    pub servers_transports: BTreeMap<String, ServersTransport>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RouterConfig {
    /// Entrypoints the router listens on; all (`asDefault` ones, or every one) when empty.
    #[serde(default)]
    pub entry_points: Vec<String>,
    pub rule: String,
    /// Only `v3` is supported.
    pub rule_syntax: Option<String>,
    /// Defaults to the rule's length; higher wins.
    pub priority: Option<i64>,
    #[serde(default)]
    pub middlewares: Vec<String>,
    pub service: String,
    /// Present (even empty) means the router only serves TLS requests.
    pub tls: Option<RouterTls>,
    pub observability: Option<RouterObservability>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RouterTls {
    pub options: Option<String>,
    pub cert_resolver: Option<Unsupported>,
    pub domains: Option<Unsupported>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RouterObservability {
    pub access_logs: Option<bool>,
    pub metrics: Option<bool>,
    pub tracing: Option<Ignored>,
}

/// One service definition: a map with exactly one key naming its type.
#[derive(Debug, Clone, Deserialize)]
#[serde(try_from = "ServiceConfigRaw")]
pub enum ServiceConfig {
    LoadBalancer(Box<LoadBalancerConfig>),
    Weighted(WeightedConfig),
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
#[allow(dead_code)] // refused keys are read only to be refused
struct ServiceConfigRaw {
    load_balancer: Option<LoadBalancerConfig>,
    weighted: Option<WeightedConfig>,
    mirroring: Option<Unsupported>,
    failover: Option<Unsupported>,
}

impl TryFrom<ServiceConfigRaw> for ServiceConfig {
    type Error = String;
    fn try_from(r: ServiceConfigRaw) -> Result<Self, String> {
        match (r.load_balancer, r.weighted) {
            (Some(lb), None) => Ok(ServiceConfig::LoadBalancer(Box::new(lb))),
            (None, Some(w)) => Ok(ServiceConfig::Weighted(w)),
            _ => Err("a service needs exactly one of `loadBalancer` or `weighted`".into()),
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct LoadBalancerConfig {
    #[serde(default)]
    pub servers: Vec<ServerConfig>,
    pub sticky: Option<Sticky>,
    pub health_check: Option<HealthCheckConfig>,
    #[serde(default = "default_true")]
    pub pass_host_header: bool,
    pub response_forwarding: Option<ResponseForwarding>,
    pub servers_transport: Option<String>,
    pub strategy: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ServerConfig {
    pub url: String,
    pub weight: Option<u32>,
    pub preserve_path: Option<bool>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Sticky {
    pub cookie: Option<StickyCookie>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct StickyCookie {
    pub name: Option<String>,
    #[serde(default)]
    pub secure: bool,
    #[serde(default)]
    pub http_only: bool,
    pub same_site: Option<String>,
    pub max_age: Option<i64>,
    pub path: Option<String>,
    pub domain: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct HealthCheckConfig {
    pub scheme: Option<String>,
    pub mode: Option<String>,
    pub path: Option<String>,
    pub method: Option<String>,
    pub status: Option<u16>,
    pub port: Option<u16>,
    pub interval: Option<Dur>,
    pub unhealthy_interval: Option<Dur>,
    pub timeout: Option<Dur>,
    pub hostname: Option<String>,
    #[serde(default = "default_true")]
    pub follow_redirects: bool,
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ResponseForwarding {
    pub flush_interval: Option<Dur>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct WeightedConfig {
    #[serde(default)]
    pub services: Vec<WeightedService>,
    pub sticky: Option<Sticky>,
    pub health_check: Option<Ignored>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct WeightedService {
    pub name: String,
    pub weight: Option<u32>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ServersTransport {
    pub server_name: Option<String>,
    #[serde(default)]
    pub insecure_skip_verify: bool,
    #[serde(default)]
    pub root_c_as: Vec<String>,
    pub max_idle_conns_per_host: Option<usize>,
    #[serde(default)]
    pub forwarding_timeouts: ForwardingTimeouts,
    #[serde(default)]
    pub disable_http2: bool,
    pub peer_cert_uri: Option<Unsupported>,
    pub certificates: Option<Unsupported>,
    pub spiffe: Option<Unsupported>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ForwardingTimeouts {
    /// Connect timeout to an upstream (Traefik default 30s).
    #[serde(default = "default_dial")]
    pub dial_timeout: Dur,
    /// Time to wait for the upstream's response head (0 = none, Traefik's default).
    #[serde(default)]
    pub response_header_timeout: Dur,
    /// Idle pooled connections are closed after this (Traefik default 90s).
    #[serde(default = "default_idle_conn")]
    pub idle_conn_timeout: Dur,
    pub read_idle_timeout: Option<Ignored>,
    pub ping_timeout: Option<Ignored>,
}

fn default_dial() -> Dur {
    Dur::secs(30)
}
fn default_idle_conn() -> Dur {
    Dur::secs(90)
}

impl Default for ForwardingTimeouts {
    fn default() -> Self {
        Self {
            dial_timeout: default_dial(),
            response_header_timeout: Dur::default(),
            idle_conn_timeout: default_idle_conn(),
            read_idle_timeout: None,
            ping_timeout: None,
        }
    }
}

/// One middleware definition: a map with exactly one key naming its type.
#[derive(Debug, Clone, Deserialize)]
#[serde(try_from = "MiddlewareConfigRaw")]
pub enum MiddlewareConfig {
    AddPrefix(AddPrefix),
    StripPrefix(StripPrefix),
    StripPrefixRegex(StripPrefixRegex),
    ReplacePath(ReplacePath),
    ReplacePathRegex(ReplacePathRegex),
    RedirectScheme(RedirectScheme),
    RedirectRegex(RedirectRegex),
    Headers(Box<Headers>),
    BasicAuth(BasicAuth),
    IpAllowList(IpAllowList),
    RateLimit(RateLimit),
    InFlightReq(InFlightReq),
    Buffering(Buffering),
    Compress(Compress),
    Retry(Retry),
    Chain(Chain),
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
#[allow(dead_code)] // refused keys are read only to be refused
struct MiddlewareConfigRaw {
    add_prefix: Option<AddPrefix>,
    strip_prefix: Option<StripPrefix>,
    strip_prefix_regex: Option<StripPrefixRegex>,
    replace_path: Option<ReplacePath>,
    replace_path_regex: Option<ReplacePathRegex>,
    redirect_scheme: Option<RedirectScheme>,
    redirect_regex: Option<RedirectRegex>,
    headers: Option<Box<Headers>>,
    basic_auth: Option<BasicAuth>,
    ip_allow_list: Option<IpAllowList>,
    rate_limit: Option<RateLimit>,
    in_flight_req: Option<InFlightReq>,
    buffering: Option<Buffering>,
    compress: Option<Compress>,
    retry: Option<Retry>,
    chain: Option<Chain>,
    digest_auth: Option<Unsupported>,
    forward_auth: Option<Unsupported>,
    errors: Option<Unsupported>,
    circuit_breaker: Option<Unsupported>,
    pass_tls_client_cert: Option<Unsupported>,
    content_type: Option<Unsupported>,
    grpc_web: Option<Unsupported>,
    plugin: Option<Unsupported>,
    #[serde(rename = "ipWhiteList")]
    ip_white_list: Option<Unsupported>,
}

impl TryFrom<MiddlewareConfigRaw> for MiddlewareConfig {
    type Error = String;
    fn try_from(r: MiddlewareConfigRaw) -> Result<Self, String> {
        let mut found = Vec::new();
        if let Some(x) = r.add_prefix {
            found.push(MiddlewareConfig::AddPrefix(x));
        }
        if let Some(x) = r.strip_prefix {
            found.push(MiddlewareConfig::StripPrefix(x));
        }
        if let Some(x) = r.strip_prefix_regex {
            found.push(MiddlewareConfig::StripPrefixRegex(x));
        }
        if let Some(x) = r.replace_path {
            found.push(MiddlewareConfig::ReplacePath(x));
        }
        if let Some(x) = r.replace_path_regex {
            found.push(MiddlewareConfig::ReplacePathRegex(x));
        }
        if let Some(x) = r.redirect_scheme {
            found.push(MiddlewareConfig::RedirectScheme(x));
        }
        if let Some(x) = r.redirect_regex {
            found.push(MiddlewareConfig::RedirectRegex(x));
        }
        if let Some(x) = r.headers {
            found.push(MiddlewareConfig::Headers(x));
        }
        if let Some(x) = r.basic_auth {
            found.push(MiddlewareConfig::BasicAuth(x));
        }
        if let Some(x) = r.ip_allow_list {
            found.push(MiddlewareConfig::IpAllowList(x));
        }
        if let Some(x) = r.rate_limit {
            found.push(MiddlewareConfig::RateLimit(x));
        }
        if let Some(x) = r.in_flight_req {
            found.push(MiddlewareConfig::InFlightReq(x));
        }
        if let Some(x) = r.buffering {
            found.push(MiddlewareConfig::Buffering(x));
        }
        if let Some(x) = r.compress {
            found.push(MiddlewareConfig::Compress(x));
        }
        if let Some(x) = r.retry {
            found.push(MiddlewareConfig::Retry(x));
        }
        if let Some(x) = r.chain {
            found.push(MiddlewareConfig::Chain(x));
        }
        if found.len() != 1 {
            return Err(format!(
                "a middleware needs exactly one type key (found {}), such as `stripPrefix` or `headers`",
                found.len()
            ));
        }
        found.pop().ok_or_else(|| "no middleware type".to_owned())
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct AddPrefix {
    pub prefix: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct StripPrefix {
    pub prefixes: Vec<String>,
    pub force_slash: Option<Ignored>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct StripPrefixRegex {
    pub regex: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ReplacePath {
    pub path: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ReplacePathRegex {
    pub regex: String,
    pub replacement: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RedirectScheme {
    pub scheme: String,
    pub port: Option<String>,
    #[serde(default)]
    pub permanent: bool,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RedirectRegex {
    pub regex: String,
    pub replacement: String,
    #[serde(default)]
    pub permanent: bool,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Headers {
    #[serde(default)]
    pub custom_request_headers: BTreeMap<String, String>,
    #[serde(default)]
    pub custom_response_headers: BTreeMap<String, String>,
    #[serde(default)]
    pub access_control_allow_credentials: bool,
    #[serde(default)]
    pub access_control_allow_headers: Vec<String>,
    #[serde(default)]
    pub access_control_allow_methods: Vec<String>,
    #[serde(default)]
    pub access_control_allow_origin_list: Vec<String>,
    #[serde(default)]
    pub access_control_allow_origin_list_regex: Vec<String>,
    #[serde(default)]
    pub access_control_expose_headers: Vec<String>,
    pub access_control_max_age: Option<i64>,
    #[serde(default)]
    pub add_vary_header: bool,
    #[serde(default)]
    pub allowed_hosts: Vec<String>,
    #[serde(default)]
    pub hosts_proxy_headers: Vec<String>,
    #[serde(default)]
    pub sts_seconds: i64,
    #[serde(default)]
    pub sts_include_subdomains: bool,
    #[serde(default)]
    pub sts_preload: bool,
    /// Traefik spells it `forceSTSHeader` (its decoder ignores case; ours accepts both forms).
    #[serde(default, rename = "forceSTSHeader", alias = "forceStsHeader")]
    pub force_sts_header: bool,
    #[serde(default)]
    pub frame_deny: bool,
    pub custom_frame_options_value: Option<String>,
    #[serde(default)]
    pub content_type_nosniff: bool,
    #[serde(default)]
    pub browser_xss_filter: bool,
    #[serde(rename = "customBrowserXSSValue", alias = "customBrowserXssValue")]
    pub custom_browser_xss_value: Option<String>,
    pub content_security_policy: Option<String>,
    pub content_security_policy_report_only: Option<String>,
    pub public_key: Option<String>,
    pub referrer_policy: Option<String>,
    pub permissions_policy: Option<String>,
    #[serde(default)]
    pub is_development: bool,
    pub ssl_redirect: Option<Unsupported>,
    pub ssl_temporary_redirect: Option<Unsupported>,
    pub ssl_host: Option<Unsupported>,
    pub ssl_proxy_headers: Option<Unsupported>,
    pub ssl_force_host: Option<Unsupported>,
    pub feature_policy: Option<Unsupported>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct BasicAuth {
    #[serde(default)]
    pub users: Vec<String>,
    pub users_file: Option<String>,
    pub realm: Option<String>,
    #[serde(default)]
    pub remove_header: bool,
    pub header_field: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct IpAllowList {
    pub source_range: Vec<String>,
    pub ip_strategy: Option<IpStrategy>,
    pub reject_status_code: Option<u16>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct IpStrategy {
    #[serde(default)]
    pub depth: usize,
    #[serde(default)]
    pub excluded_i_ps: Vec<String>,
    pub ipv6_subnet: Option<u8>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct SourceCriterion {
    pub ip_strategy: Option<IpStrategy>,
    pub request_header_name: Option<String>,
    #[serde(default)]
    pub request_host: bool,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RateLimit {
    /// Requests per `period` allowed on average (0: no limit).
    #[serde(default)]
    pub average: u64,
    /// Default 1s.
    pub period: Option<Dur>,
    /// Default 1.
    pub burst: Option<u64>,
    pub source_criterion: Option<SourceCriterion>,
    pub redis: Option<Unsupported>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct InFlightReq {
    pub amount: u64,
    pub source_criterion: Option<SourceCriterion>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Buffering {
    #[serde(default)]
    pub max_request_body_bytes: u64,
    #[serde(default)]
    pub mem_request_body_bytes: u64,
    #[serde(default)]
    pub max_response_body_bytes: u64,
    #[serde(default)]
    pub mem_response_body_bytes: u64,
    pub retry_expression: Option<Unsupported>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Compress {
    #[serde(default)]
    pub excluded_content_types: Vec<String>,
    #[serde(default)]
    pub included_content_types: Vec<String>,
    pub min_response_body_bytes: Option<u64>,
    pub default_encoding: Option<String>,
    #[serde(default)]
    pub encodings: Vec<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Retry {
    pub attempts: u32,
    pub initial_interval: Option<Dur>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Chain {
    pub middlewares: Vec<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct TlsConfig {
    #[serde(default)]
    pub certificates: Vec<CertificateConfig>,
    #[serde(default)]
    pub options: BTreeMap<String, TlsOptionsConfig>,
    #[serde(default)]
    pub stores: BTreeMap<String, TlsStoreConfig>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct CertificateConfig {
    /// A path to a PEM file, or the PEM content itself.
    pub cert_file: String,
    /// A path to a PEM file, or the PEM content itself.
    pub key_file: String,
    #[serde(default)]
    pub stores: Vec<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct TlsOptionsConfig {
    /// `VersionTLS12` (default) or `VersionTLS13`.
    pub min_version: Option<String>,
    pub max_version: Option<String>,
    #[serde(default)]
    pub cipher_suites: Vec<String>,
    #[serde(default)]
    pub curve_preferences: Vec<String>,
    #[serde(default)]
    pub sni_strict: bool,
    #[serde(default)]
    pub alpn_protocols: Vec<String>,
    pub client_auth: Option<Unsupported>,
    pub prefer_server_cipher_suites: Option<Ignored>,
    pub disable_session_tickets: Option<bool>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct TlsStoreConfig {
    pub default_certificate: Option<DefaultCertificate>,
    pub default_generated_cert: Option<Unsupported>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct DefaultCertificate {
    pub cert_file: String,
    pub key_file: String,
}
