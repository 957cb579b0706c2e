//! Traefik's `traefik.ingress.kubernetes.io/*` annotations, parsed into typed settings.
//!
//! Router annotations are read from the Ingress, service annotations from the Kubernetes Service,
//! as Traefik's Kubernetes Ingress provider does. Keys are compared case-insensitively (Traefik
//! parses them with its label parser, which ignores case). An annotation Gantry does not implement
//! is reported as a warning, never silently ignored; an invalid value skips the object it is on.

use std::collections::BTreeMap;

pub(crate) const PREFIX: &str = "traefik.ingress.kubernetes.io/";

/// Router settings from an Ingress's annotations.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RouterAnnotations {
    pub entry_points: Vec<String>,
    pub middlewares: Vec<String>,
    pub priority: Option<i64>,
    /// `router.tls: "true"`: the router only serves TLS requests.
    pub tls: bool,
    pub tls_options: Option<String>,
    /// `Path`, `PathPrefix` or `PathRegexp`, for paths of type ImplementationSpecific.
    pub path_matcher: Option<String>,
}

/// Load-balancer settings from a Service's annotations.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServiceAnnotations {
    /// `http`, `https` or `h2c`.
    pub servers_scheme: Option<String>,
    pub servers_transport: Option<String>,
    pub pass_host_header: Option<bool>,
    pub sticky: Option<StickyAnnotations>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StickyAnnotations {
    pub name: Option<String>,
    pub secure: bool,
    pub http_only: bool,
    pub same_site: Option<String>,
    pub max_age: Option<i64>,
    pub path: Option<String>,
    pub domain: Option<String>,
}

/// The outcome of parsing one object's annotations: settings, and notes about keys that were
/// ignored (recognised Traefik features Gantry does not implement, or unknown keys).
#[derive(Debug, Default)]
pub(crate) struct Parsed<T> {
    pub value: T,
    pub ignored: Vec<String>,
}

fn traefik_keys(annotations: Option<&BTreeMap<String, String>>) -> Vec<(String, &str)> {
    let mut out = Vec::new();
    for (k, v) in annotations.into_iter().flatten() {
        if let Some(rest) = k.strip_prefix(PREFIX) {
            out.push((rest.to_ascii_lowercase(), v.as_str()));
        }
    }
    out
}

fn parse_bool(key: &str, v: &str) -> Result<bool, String> {
    // Go's strconv.ParseBool, which Traefik's label parser uses.
    match v.trim() {
        "1" | "t" | "T" | "true" | "TRUE" | "True" => Ok(true),
        "0" | "f" | "F" | "false" | "FALSE" | "False" => Ok(false),
        other => Err(format!(
            "annotation {PREFIX}{key}: `{other}` is not a boolean"
        )),
    }
}

fn list(v: &str) -> Vec<String> {
    v.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

/// Parses the router annotations of an Ingress. `Err` names the annotation with a bad value.
pub(crate) fn router(
    annotations: Option<&BTreeMap<String, String>>,
) -> Result<Parsed<RouterAnnotations>, String> {
    let mut p = Parsed::<RouterAnnotations>::default();
    for (key, v) in traefik_keys(annotations) {
        match key.as_str() {
            "router.entrypoints" => p.value.entry_points = list(v),
            "router.middlewares" => p.value.middlewares = list(v),
            "router.priority" => {
                let n = v.trim().parse::<i64>().map_err(|_| {
                    format!("annotation {PREFIX}router.priority: `{v}` is not an integer")
                })?;
                p.value.priority = Some(n);
            }
            "router.tls" => p.value.tls = parse_bool(&key, v)?,
            "router.tls.options" => {
                p.value.tls = true;
                p.value.tls_options = Some(v.trim().to_owned());
            }
            "router.pathmatcher" => {
                let m = v.trim();
                if !matches!(m, "Path" | "PathPrefix" | "PathRegexp") {
                    return Err(format!(
                        "annotation {PREFIX}router.pathmatcher: `{m}` is not Path, PathPrefix or PathRegexp"
                    ));
                }
                p.value.path_matcher = Some(m.to_owned());
            }
            "router.rulesyntax" => {
                if v.trim() != "v3" {
                    return Err(format!(
                        "annotation {PREFIX}router.rulesyntax: `{}` is not supported (Gantry implements Traefik v3 rules only)",
                        v.trim()
                    ));
                }
            }
            k if k.starts_with("router.tls.certresolver")
                || k.starts_with("router.tls.domains") =>
            {
                p.ignored.push(format!(
                    "{PREFIX}{k} ignored: certificates for Ingress hosts come from spec.tls secrets or from the domains configured in Gantry's UI (ACME)"
                ));
            }
            k if k.starts_with("router.observability") => {
                p.ignored
                    .push(format!("{PREFIX}{k} ignored: not implemented"));
            }
            k if k.starts_with("service.") => {
                p.ignored.push(format!(
                    "{PREFIX}{k} ignored on an Ingress: service annotations belong on the Kubernetes Service"
                ));
            }
            k => p
                .ignored
                .push(format!("{PREFIX}{k} ignored: unknown annotation")),
        }
    }
    Ok(p)
}

/// Parses the service annotations of a Kubernetes Service.
pub(crate) fn service(
    annotations: Option<&BTreeMap<String, String>>,
) -> Result<Parsed<ServiceAnnotations>, String> {
    let mut p = Parsed::<ServiceAnnotations>::default();
    let mut sticky_on = false;
    let mut sticky = StickyAnnotations::default();
    let mut sticky_keys = false;
    for (key, v) in traefik_keys(annotations) {
        match key.as_str() {
            "service.serversscheme" => {
                let s = v.trim().to_ascii_lowercase();
                if !matches!(s.as_str(), "http" | "https" | "h2c") {
                    return Err(format!(
                        "annotation {PREFIX}service.serversscheme: `{s}` is not http, https or h2c"
                    ));
                }
                p.value.servers_scheme = Some(s);
            }
            "service.serverstransport" => p.value.servers_transport = Some(v.trim().to_owned()),
            "service.passhostheader" => p.value.pass_host_header = Some(parse_bool(&key, v)?),
            "service.sticky.cookie" => sticky_on = parse_bool(&key, v)?,
            "service.sticky.cookie.name" => {
                sticky_keys = true;
                sticky.name = Some(v.trim().to_owned());
            }
            "service.sticky.cookie.secure" => {
                sticky_keys = true;
                sticky.secure = parse_bool(&key, v)?;
            }
            "service.sticky.cookie.httponly" => {
                sticky_keys = true;
                sticky.http_only = parse_bool(&key, v)?;
            }
            "service.sticky.cookie.samesite" => {
                sticky_keys = true;
                let s = v.trim();
                if !matches!(
                    s.to_ascii_lowercase().as_str(),
                    "none" | "lax" | "strict" | ""
                ) {
                    return Err(format!(
                        "annotation {PREFIX}service.sticky.cookie.samesite: `{s}` is not none, lax or strict"
                    ));
                }
                sticky.same_site = Some(s.to_owned());
            }
            "service.sticky.cookie.maxage" => {
                sticky_keys = true;
                let n = v.trim().parse::<i64>().map_err(|_| {
                    format!(
                        "annotation {PREFIX}service.sticky.cookie.maxage: `{v}` is not an integer"
                    )
                })?;
                sticky.max_age = Some(n);
            }
            "service.sticky.cookie.path" => {
                sticky_keys = true;
                sticky.path = Some(v.trim().to_owned());
            }
            "service.sticky.cookie.domain" => {
                sticky_keys = true;
                sticky.domain = Some(v.trim().to_owned());
            }
            "service.nativelb" | "service.nodeportlb" => {
                if parse_bool(&key, v)? {
                    p.ignored.push(format!(
                        "{PREFIX}{key} ignored: Gantry always balances over the Service's endpoints"
                    ));
                }
            }
            k if k.starts_with("router.") => p.ignored.push(format!(
                "{PREFIX}{k} ignored on a Service: router annotations belong on the Ingress"
            )),
            k => p
                .ignored
                .push(format!("{PREFIX}{k} ignored: unknown annotation")),
        }
    }
    // Traefik enables stickiness with `service.sticky.cookie: "true"`; any cookie sub-key also
    // creates the sticky section (its label parser fills the struct).
    if sticky_on || sticky_keys {
        p.value.sticky = Some(sticky);
    }
    Ok(p)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ann(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (format!("{PREFIX}{k}"), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn router_annotations_parse() {
        let a = ann(&[
            ("router.entrypoints", "web, websecure"),
            ("router.middlewares", "auth@file,strip@file"),
            ("router.priority", "42"),
            ("router.tls", "true"),
            ("router.pathmatcher", "PathRegexp"),
            ("Router.TLS.CertResolver", "le"),
        ]);
        let p = router(Some(&a)).unwrap();
        assert_eq!(p.value.entry_points, ["web", "websecure"]);
        assert_eq!(p.value.middlewares, ["auth@file", "strip@file"]);
        assert_eq!(p.value.priority, Some(42));
        assert!(p.value.tls);
        assert_eq!(p.value.path_matcher.as_deref(), Some("PathRegexp"));
        assert_eq!(p.ignored.len(), 1, "{:?}", p.ignored);
        assert!(p.ignored[0].contains("certresolver"));
    }

    #[test]
    fn bad_values_are_errors_naming_the_annotation() {
        let e = router(Some(&ann(&[("router.priority", "high")]))).unwrap_err();
        assert!(e.contains("router.priority"), "{e}");
        let e = router(Some(&ann(&[("router.pathmatcher", "Host")]))).unwrap_err();
        assert!(e.contains("pathmatcher"), "{e}");
        let e = service(Some(&ann(&[("service.serversscheme", "ftp")]))).unwrap_err();
        assert!(e.contains("serversscheme"), "{e}");
        let e = service(Some(&ann(&[("service.passhostheader", "maybe")]))).unwrap_err();
        assert!(e.contains("passhostheader"), "{e}");
    }

    #[test]
    fn sticky_cookie_annotations() {
        let p = service(Some(&ann(&[
            ("service.sticky.cookie", "true"),
            ("service.sticky.cookie.name", "rc_sticky"),
            ("service.sticky.cookie.secure", "true"),
            ("service.sticky.cookie.httponly", "true"),
            ("service.sticky.cookie.samesite", "lax"),
            ("service.sticky.cookie.maxage", "3600"),
            ("service.passhostheader", "false"),
        ])))
        .unwrap();
        let s = p.value.sticky.unwrap();
        assert_eq!(s.name.as_deref(), Some("rc_sticky"));
        assert!(s.secure && s.http_only);
        assert_eq!(s.same_site.as_deref(), Some("lax"));
        assert_eq!(s.max_age, Some(3600));
        assert_eq!(p.value.pass_host_header, Some(false));
        let none = service(Some(&ann(&[("service.sticky.cookie", "false")]))).unwrap();
        assert!(none.value.sticky.is_none());
    }

    #[test]
    fn other_annotations_are_not_read() {
        let mut a = BTreeMap::new();
        a.insert(
            "kubernetes.io/ingress.class".to_owned(),
            "gantry".to_owned(),
        );
        a.insert(
            "nginx.ingress.kubernetes.io/proxy-body-size".to_owned(),
            "0".to_owned(),
        );
        let p = router(Some(&a)).unwrap();
        assert_eq!(p.value, RouterAnnotations::default());
        assert!(p.ignored.is_empty());
    }
}
