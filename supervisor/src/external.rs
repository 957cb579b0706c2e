//! Routes to services outside the cluster (the "hybrid routing to legacy hosts" lesson): an
//! operator sends `nas.example.com` (and a path prefix) to `http://192.168.1.20:5000`.
//!
//! This module holds the pure parts: validating what the operator typed ([`validate`], each
//! error naming its field) and turning the stored routes into the proxy's `external` provider
//! ([`provider_config`]). The store keeps the rows ([`crate::store::ExternalRouteRecord`]);
//! [`crate::appliance::Appliance`] ties them together, adds certificates and hands the proxy the
//! configuration at start and after every change. Nothing here does IO.

use gantry_proxy::config::DynamicConfig;
use serde::{Deserialize, Serialize};

use crate::Error;
use crate::certs::normalize_domain;
use crate::store::ExternalRouteRecord;

/// The proxy provider these routes are handed to (routers are named `ext-ID@external`).
pub const PROVIDER: &str = "external";

/// What the operator types (form or JSON).
#[derive(Debug, Clone, Default, Deserialize)]
pub struct ExternalRouteInput {
    pub host: String,
    /// Empty or absent means `/`.
    #[serde(default)]
    pub path_prefix: Option<String>,
    pub url: String,
}

/// A route as the UI and the API show it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ExternalRouteView {
    pub id: i64,
    pub host: String,
    pub path_prefix: String,
    pub url: String,
    pub created_at: i64,
    /// The proxy's router and service name.
    pub router: String,
}

impl From<&ExternalRouteRecord> for ExternalRouteView {
    fn from(r: &ExternalRouteRecord) -> Self {
        ExternalRouteView {
            id: r.id,
            host: r.host.clone(),
            path_prefix: r.path_prefix.clone(),
            url: r.target_url.clone(),
            created_at: r.created_at,
            router: format!("{}@{PROVIDER}", name(r.id)),
        }
    }
}

/// A validated route, ready to store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidRoute {
    pub host: String,
    pub path_prefix: String,
    pub url: String,
}

fn field(field: &'static str, message: impl Into<String>) -> Error {
    Error::Field {
        field,
        message: message.into(),
    }
}

/// Checks the three inputs; the error names the field at fault. `chat_domain` is refused with
/// the path `/` (the chat would disappear behind the route).
pub fn validate(
    input: &ExternalRouteInput,
    chat_domain: Option<&str>,
) -> Result<ValidRoute, Error> {
    let host = normalize_domain(&input.host).map_err(|e| field("host", e.to_string()))?;
    let path_prefix = validate_path_prefix(input.path_prefix.as_deref().unwrap_or(""))?;
    let url = validate_url(&input.url)?;
    if chat_domain == Some(host.as_str()) && path_prefix == "/" {
        return Err(field(
            "path_prefix",
            format!(
                "`{host}` is the chat's domain: the path `/` would hide the chat; \
                 give a narrower path prefix (like `/nas`) or another host"
            ),
        ));
    }
    Ok(ValidRoute {
        host,
        path_prefix,
        url,
    })
}

/// A path prefix: starts with `/`, URL path characters only (no query, fragment, spaces or
/// backticks, which would break the router rule). Empty means `/`.
pub fn validate_path_prefix(p: &str) -> Result<String, Error> {
    let p = p.trim();
    if p.is_empty() {
        return Ok("/".to_owned());
    }
    if !p.starts_with('/') {
        return Err(field(
            "path_prefix",
            format!("the path prefix `{p}` must start with `/`"),
        ));
    }
    if p.len() > 1024 {
        return Err(field(
            "path_prefix",
            "the path prefix is longer than 1024 characters",
        ));
    }
    if let Some(c) = p
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || "/-._~%!$&'()*+,;=:@".contains(*c)))
    {
        return Err(field(
            "path_prefix",
            format!(
                "the path prefix may not contain `{}` (letters, digits and -._~%!$&'()*+,;=:@/ only; no query or fragment)",
                c.escape_default()
            ),
        ));
    }
    Ok(p.to_owned())
}

/// A target URL: `http://` or `https://`, a host (name or address) and an optional port;
/// no credentials, path, query or fragment. Returned normalised (`scheme://host[:port]`).
pub fn validate_url(u: &str) -> Result<String, Error> {
    let u = u.trim();
    if u.is_empty() {
        return Err(field(
            "url",
            "enter the service's URL, like http://192.168.1.20:5000",
        ));
    }
    if !u.contains("://") {
        return Err(field(
            "url",
            format!("`{u}` lacks its scheme: write http://{u} or https://{u}"),
        ));
    }
    let parsed = url::Url::parse(u).map_err(|e| {
        field(
            "url",
            format!("`{u}` is not a URL ({e}); write it like http://192.168.1.20:5000"),
        )
    })?;
    let scheme = parsed.scheme();
    if scheme != "http" && scheme != "https" {
        return Err(field(
            "url",
            format!("the URL scheme `{scheme}` is not supported: use http:// or https://"),
        ));
    }
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err(field(
            "url",
            "the URL may not hold a user name or password: they would be stored and shown in clear",
        ));
    }
    let Some(host) = parsed.host_str().filter(|h| !h.is_empty()) else {
        return Err(field("url", format!("the URL `{u}` has no host")));
    };
    if parsed.query().is_some() || parsed.fragment().is_some() {
        return Err(field(
            "url",
            "the URL may not have a query (`?`) or fragment (`#`)",
        ));
    }
    if parsed.path() != "/" && !parsed.path().is_empty() {
        return Err(field(
            "url",
            format!(
                "the URL may not have a path (`{}`): requests keep their own path; \
                 give the service's address only",
                parsed.path()
            ),
        ));
    }
    Ok(match parsed.port() {
        Some(p) => format!("{scheme}://{host}:{p}"),
        None => format!("{scheme}://{host}"),
    })
}

/// The router and service name of a route.
fn name(id: i64) -> String {
    format!("ext-{id}")
}

/// The `external` provider's configuration: for each route a router on `entrypoint` (TLS) with
/// ``Host(`h`) && PathPrefix(`p`)`` and a load balancer to the target passing the Host header on.
/// The priority is the rule's length (Traefik's own default, written out): a longer path prefix
/// on the same host wins, and every route is above the `gantry` provider's fallback (priority 1).
/// `entrypoint` None (no TLS entrypoint) gives an empty configuration.
pub fn provider_config(
    routes: &[ExternalRouteRecord],
    entrypoint: Option<&str>,
) -> Result<DynamicConfig, Error> {
    serde_json::from_value(provider_json(routes, entrypoint))
        .map_err(|e| Error::Invalid(format!("external routes: {e}")))
}

/// [`provider_config`] as the JSON (Traefik's dynamic configuration) it is parsed from.
pub fn provider_json(
    routes: &[ExternalRouteRecord],
    entrypoint: Option<&str>,
) -> serde_json::Value {
    let mut routers = serde_json::Map::new();
    let mut services = serde_json::Map::new();
    if let Some(ep) = entrypoint {
        for r in routes {
            let rule = format!("Host(`{}`) && PathPrefix(`{}`)", r.host, r.path_prefix);
            let n = name(r.id);
            routers.insert(
                n.clone(),
                serde_json::json!({
                    "entryPoints": [ep], "rule": rule, "priority": rule.len(),
                    "service": n, "tls": {},
                }),
            );
            services.insert(
                n,
                serde_json::json!({"loadBalancer": {
                    "servers": [{"url": r.target_url}], "passHostHeader": true,
                }}),
            );
        }
    }
    serde_json::json!({"http": {"routers": routers, "services": services}})
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input(host: &str, path: Option<&str>, url: &str) -> ExternalRouteInput {
        ExternalRouteInput {
            host: host.into(),
            path_prefix: path.map(Into::into),
            url: url.into(),
        }
    }

    fn field_of(r: Result<ValidRoute, Error>) -> (&'static str, String) {
        match r {
            Err(Error::Field { field, message }) => (field, message),
            other => panic!("expected a field error, got {other:?}"),
        }
    }

    #[test]
    fn valid_routes_are_normalised() {
        let v = validate(
            &input("NAS.Example.com.", None, " http://192.168.1.20:5000/ "),
            Some("chat.example.com"),
        )
        .unwrap();
        assert_eq!(
            v,
            ValidRoute {
                host: "nas.example.com".into(),
                path_prefix: "/".into(),
                url: "http://192.168.1.20:5000".into(),
            }
        );
        let v = validate(
            &input("chat.example.com", Some("/nas"), "https://[fd00::1]"),
            Some("chat.example.com"),
        )
        .unwrap();
        assert_eq!(v.path_prefix, "/nas");
        assert_eq!(v.url, "https://[fd00::1]");
        assert_eq!(
            validate_url("https://legacy.lan:443").unwrap(),
            "https://legacy.lan"
        );
    }

    #[test]
    fn every_error_names_its_field() {
        let chat = Some("chat.example.com");
        let cases: &[(ExternalRouteInput, &str, &str)] = &[
            (
                input("not a host", None, "http://10.0.0.1"),
                "host",
                "not a valid domain",
            ),
            (
                input("10.0.0.1", None, "http://10.0.0.1"),
                "host",
                "IP address",
            ),
            (
                input("a.example.com", Some("api"), "http://10.0.0.1"),
                "path_prefix",
                "start with `/`",
            ),
            (
                input("a.example.com", Some("/a`b"), "http://10.0.0.1"),
                "path_prefix",
                "may not contain",
            ),
            (
                input("a.example.com", Some("/a?x=1"), "http://10.0.0.1"),
                "path_prefix",
                "may not contain",
            ),
            (
                input("a.example.com", None, "ftp://10.0.0.1"),
                "url",
                "scheme `ftp`",
            ),
            (
                input("a.example.com", None, "http://u:p@10.0.0.1"),
                "url",
                "user name or password",
            ),
            (
                input("a.example.com", None, "http://u@10.0.0.1"),
                "url",
                "user name or password",
            ),
            (
                input("a.example.com", None, "http://10.0.0.1/?a=b"),
                "url",
                "query",
            ),
            (
                input("a.example.com", None, "http://10.0.0.1/#top"),
                "url",
                "fragment",
            ),
            (
                input("a.example.com", None, "http://10.0.0.1/base"),
                "url",
                "path",
            ),
            (
                input("a.example.com", None, "192.168.1.20:5000"),
                "url",
                "lacks its scheme",
            ),
            (
                input("a.example.com", None, "http://exa mple"),
                "url",
                "not a URL",
            ),
            (input("a.example.com", None, ""), "url", "enter"),
            (
                input("chat.example.com", Some("/"), "http://10.0.0.1"),
                "path_prefix",
                "hide the chat",
            ),
            (
                input("chat.example.com", None, "http://10.0.0.1"),
                "path_prefix",
                "hide the chat",
            ),
        ];
        for (i, want_field, want_text) in cases {
            let (f, m) = field_of(validate(i, chat));
            assert_eq!(f, *want_field, "{i:?}: {m}");
            assert!(m.contains(want_text), "{i:?}: `{m}` lacks `{want_text}`");
        }
    }

    #[test]
    fn provider_config_has_a_tls_router_and_service_per_route() {
        let routes = vec![
            ExternalRouteRecord {
                id: 7,
                host: "nas.example.com".into(),
                path_prefix: "/".into(),
                target_url: "http://192.168.1.20:5000".into(),
                created_at: 0,
            },
            ExternalRouteRecord {
                id: 8,
                host: "nas.example.com".into(),
                path_prefix: "/photos".into(),
                target_url: "https://192.168.1.21".into(),
                created_at: 0,
            },
        ];
        let cfg = provider_config(&routes, Some("websecure")).unwrap();
        assert_eq!(cfg.http.routers.len(), 2);
        let v = provider_json(&routes, Some("websecure"));
        let r = &v["http"]["routers"]["ext-7"];
        assert_eq!(
            r["rule"], "Host(`nas.example.com`) && PathPrefix(`/`)",
            "{v}"
        );
        assert_eq!(r["entryPoints"], serde_json::json!(["websecure"]), "{v}");
        assert_eq!(r["service"], "ext-7", "{v}");
        assert!(r["tls"].is_object(), "{v}");
        let p7 = r["priority"].as_i64().unwrap();
        let p8 = v["http"]["routers"]["ext-8"]["priority"].as_i64().unwrap();
        assert!(p7 > 1 && p8 > p7, "{v}");
        let s = &v["http"]["services"]["ext-8"]["loadBalancer"];
        assert_eq!(s["servers"][0]["url"], "https://192.168.1.21", "{v}");
        assert_eq!(s["passHostHeader"], true, "{v}");
        assert!(
            provider_config(&routes, None)
                .unwrap()
                .http
                .routers
                .is_empty()
        );
    }
}
