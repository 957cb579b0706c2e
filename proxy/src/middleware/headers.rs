//! `headers`: custom request and response headers, CORS, and security headers.
//!
//! The order is Traefik's: custom request headers and CORS first (a CORS preflight is answered
//! here, before the security checks), then the security checks (`allowedHosts`), then the
//! service; on the way back the security headers are set first, then the custom response headers
//! (which may override or remove them), then the CORS response headers. An empty value in
//! `customRequestHeaders`/`customResponseHeaders` removes the header.

use http::{HeaderName, HeaderValue, Method, StatusCode, header};
use regex::Regex;

use super::path::compile_regex;
use super::{Next, reply, request_host};
use crate::body::{Body, Request, Response};
use crate::config::dynamic;
use crate::context::RequestCtx;

#[derive(Debug, Default)]
struct HeaderEdits {
    set: Vec<(HeaderName, HeaderValue)>,
    remove: Vec<HeaderName>,
}

impl HeaderEdits {
    fn compile(
        map: &std::collections::BTreeMap<String, String>,
        what: &str,
        host: Option<&mut Option<HeaderValue>>,
    ) -> Result<Self, String> {
        let mut edits = HeaderEdits::default();
        let mut host = host;
        for (k, v) in map {
            let name = HeaderName::from_bytes(k.as_bytes())
                .map_err(|_| format!("{what}: `{k}` is not a valid header name"))?;
            if v.is_empty() {
                // Go cannot delete the Host of a request through its headers; neither do we.
                if !(name == header::HOST && host.is_some()) {
                    edits.remove.push(name);
                }
                continue;
            }
            let value = HeaderValue::from_str(v)
                .map_err(|_| format!("{what}.{k}: `{v}` is not a valid header value"))?;
            if name == header::HOST
                && let Some(h) = host.as_deref_mut()
            {
                *h = Some(value);
                continue;
            }
            edits.set.push((name, value));
        }
        Ok(edits)
    }

    fn apply(&self, headers: &mut http::HeaderMap) {
        for name in &self.remove {
            headers.remove(name);
        }
        for (name, value) in &self.set {
            headers.insert(name.clone(), value.clone());
        }
    }
}

#[derive(Debug)]
struct Cors {
    allow_credentials: bool,
    allow_headers: Option<HeaderValue>,
    allow_methods: Option<HeaderValue>,
    /// `accessControlAllowOriginList`, each with its header value (`*` allows any origin).
    origins: Vec<(String, HeaderValue)>,
    origin_regexes: Vec<Regex>,
    expose_headers: Option<HeaderValue>,
    max_age: HeaderValue,
    add_vary: bool,
}

impl Cors {
    fn compile(h: &dynamic::Headers) -> Result<Option<Self>, String> {
        let defined = h.access_control_allow_credentials
            || !h.access_control_allow_headers.is_empty()
            || !h.access_control_allow_methods.is_empty()
            || !h.access_control_allow_origin_list.is_empty()
            || !h.access_control_allow_origin_list_regex.is_empty()
            || !h.access_control_expose_headers.is_empty()
            || h.access_control_max_age.is_some_and(|a| a != 0)
            || h.add_vary_header;
        if !defined {
            return Ok(None);
        }
        let joined = |list: &[String], what: &str| -> Result<Option<HeaderValue>, String> {
            if list.is_empty() {
                return Ok(None);
            }
            let s = list.join(",");
            HeaderValue::from_str(&s)
                .map(Some)
                .map_err(|_| format!("headers.{what}: `{s}` is not a valid header value"))
        };
        let origins = h
            .access_control_allow_origin_list
            .iter()
            .enumerate()
            .map(|(i, o)| {
                HeaderValue::from_str(o)
                    .map(|v| (o.clone(), v))
                    .map_err(|_| {
                        format!(
                            "headers.accessControlAllowOriginList[{i}]: `{o}` is not a valid header value"
                        )
                    })
            })
            .collect::<Result<_, _>>()?;
        let origin_regexes = h
            .access_control_allow_origin_list_regex
            .iter()
            .enumerate()
            .map(|(i, r)| {
                compile_regex(
                    &format!("headers.accessControlAllowOriginListRegex[{i}]"),
                    r,
                )
            })
            .collect::<Result<_, _>>()?;
        Ok(Some(Cors {
            allow_credentials: h.access_control_allow_credentials,
            allow_headers: joined(&h.access_control_allow_headers, "accessControlAllowHeaders")?,
            allow_methods: joined(&h.access_control_allow_methods, "accessControlAllowMethods")?,
            origins,
            origin_regexes,
            expose_headers: joined(
                &h.access_control_expose_headers,
                "accessControlExposeHeaders",
            )?,
            max_age: HeaderValue::from(h.access_control_max_age.unwrap_or(0)),
            add_vary: h.add_vary_header,
        }))
    }

    /// The Access-Control-Allow-Origin value for `origin` (the request's Origin, possibly empty),
    /// if it is allowed.
    fn allowed(&self, origin: Option<&HeaderValue>) -> Option<HeaderValue> {
        let bytes = origin.map_or(&b""[..], |o| o.as_bytes());
        if let Some((_, v)) = self
            .origins
            .iter()
            .find(|(o, _)| o == "*" || o.as_bytes() == bytes)
        {
            return Some(v.clone());
        }
        let text = std::str::from_utf8(bytes).ok()?;
        if self.origin_regexes.iter().any(|re| re.is_match(text)) {
            return Some(
                origin
                    .cloned()
                    .unwrap_or_else(|| HeaderValue::from_static("")),
            );
        }
        None
    }

    fn is_preflight(req: &Request) -> bool {
        req.method() == Method::OPTIONS
            && req
                .headers()
                .get(header::ACCESS_CONTROL_REQUEST_METHOD)
                .is_some_and(|v| !v.is_empty())
            && req
                .headers()
                .get(header::ORIGIN)
                .is_some_and(|v| !v.is_empty())
    }

    /// The answer to a preflight request, given by the middleware itself.
    fn preflight(&self, req: &Request) -> Response {
        let mut resp = http::Response::new(Body::empty());
        let h = resp.headers_mut();
        if self.allow_credentials {
            h.insert(
                header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
                HeaderValue::from_static("true"),
            );
        }
        if let Some(v) = &self.allow_headers {
            h.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, v.clone());
        }
        if let Some(v) = &self.allow_methods {
            h.insert(header::ACCESS_CONTROL_ALLOW_METHODS, v.clone());
        }
        if let Some(v) = self.allowed(req.headers().get(header::ORIGIN)) {
            h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, v);
        }
        h.insert(header::ACCESS_CONTROL_MAX_AGE, self.max_age.clone());
        h.insert(header::CONTENT_LENGTH, HeaderValue::from_static("0"));
        resp
    }

    fn on_response(&self, origin: Option<&HeaderValue>, h: &mut http::HeaderMap) {
        if let Some(v) = self.allowed(origin) {
            h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, v);
        }
        if self.allow_credentials {
            h.insert(
                header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
                HeaderValue::from_static("true"),
            );
        }
        if let Some(v) = &self.expose_headers {
            h.insert(header::ACCESS_CONTROL_EXPOSE_HEADERS, v.clone());
        }
        if self.add_vary {
            let has_origin = h.get_all(header::VARY).iter().any(|v| {
                v.to_str().unwrap_or("").split(',').any(|t| {
                    let t = t.trim();
                    t.eq_ignore_ascii_case("origin") || t == "*"
                })
            });
            if !has_origin {
                h.append(header::VARY, HeaderValue::from_static("Origin"));
            }
        }
    }
}

#[derive(Debug)]
struct Secure {
    allowed_hosts: Vec<String>,
    hosts_proxy_headers: Vec<HeaderName>,
    is_development: bool,
    sts: Option<HeaderValue>,
    force_sts: bool,
    /// Frame options, nosniff, XSS protection, CSP, HPKP, referrer and permissions policies.
    fixed: Vec<(HeaderName, HeaderValue)>,
}

impl Secure {
    fn compile(h: &dynamic::Headers) -> Result<Option<Self>, String> {
        let value = |v: &str, what: &str| {
            HeaderValue::from_str(v)
                .map_err(|_| format!("headers.{what}: `{v}` is not a valid header value"))
        };
        let mut fixed = Vec::new();
        match h.custom_frame_options_value.as_deref() {
            Some(v) if !v.is_empty() => {
                fixed.push((
                    header::X_FRAME_OPTIONS,
                    value(v, "customFrameOptionsValue")?,
                ));
            }
            _ if h.frame_deny => {
                fixed.push((header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY")));
            }
            _ => {}
        }
        if h.content_type_nosniff {
            fixed.push((
                header::X_CONTENT_TYPE_OPTIONS,
                HeaderValue::from_static("nosniff"),
            ));
        }
        match h.custom_browser_xss_value.as_deref() {
            Some(v) if !v.is_empty() => {
                fixed.push((header::X_XSS_PROTECTION, value(v, "customBrowserXSSValue")?));
            }
            _ if h.browser_xss_filter => {
                fixed.push((
                    header::X_XSS_PROTECTION,
                    HeaderValue::from_static("1; mode=block"),
                ));
            }
            _ => {}
        }
        let optional = [
            (
                &h.content_security_policy,
                header::CONTENT_SECURITY_POLICY,
                "contentSecurityPolicy",
            ),
            (
                &h.content_security_policy_report_only,
                header::CONTENT_SECURITY_POLICY_REPORT_ONLY,
                "contentSecurityPolicyReportOnly",
            ),
            (
                &h.public_key,
                HeaderName::from_static("public-key-pins"),
                "publicKey",
            ),
            (
                &h.referrer_policy,
                header::REFERRER_POLICY,
                "referrerPolicy",
            ),
            (
                &h.permissions_policy,
                HeaderName::from_static("permissions-policy"),
                "permissionsPolicy",
            ),
        ];
        for (v, name, what) in optional {
            if let Some(v) = v.as_deref().filter(|v| !v.is_empty()) {
                fixed.push((name, value(v, what)?));
            }
        }
        if h.sts_seconds < 0 {
            return Err(format!(
                "headers.stsSeconds: {} must not be negative",
                h.sts_seconds
            ));
        }
        let sts = (h.sts_seconds != 0).then(|| {
            let mut s = format!("max-age={}", h.sts_seconds);
            if h.sts_include_subdomains {
                s.push_str("; includeSubDomains");
            }
            if h.sts_preload {
                s.push_str("; preload");
            }
            HeaderValue::from_str(&s)
        });
        let sts = sts
            .transpose()
            .map_err(|_| "headers.stsSeconds: invalid value".to_owned())?;
        let hosts_proxy_headers = h
            .hosts_proxy_headers
            .iter()
            .map(|n| {
                HeaderName::from_bytes(n.as_bytes())
                    .map_err(|_| format!("headers.hostsProxyHeaders: `{n}` is not a header name"))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let defined = !h.allowed_hosts.is_empty()
            || !hosts_proxy_headers.is_empty()
            || h.sts_seconds != 0
            || h.sts_include_subdomains
            || h.sts_preload
            || h.force_sts_header
            || !fixed.is_empty()
            || h.is_development;
        if !defined {
            return Ok(None);
        }
        Ok(Some(Secure {
            allowed_hosts: h.allowed_hosts.clone(),
            hosts_proxy_headers,
            is_development: h.is_development,
            sts,
            force_sts: h.force_sts_header,
            fixed,
        }))
    }

    /// `allowedHosts`: the host (from `hostsProxyHeaders` first, else the request's) must be one
    /// of them, compared case-insensitively; Traefik answers 500 "Bad Host" otherwise.
    fn host_allowed(&self, req: &Request) -> bool {
        if self.allowed_hosts.is_empty() || self.is_development {
            return true;
        }
        let host = self
            .hosts_proxy_headers
            .iter()
            .filter_map(|n| req.headers().get(n))
            .filter_map(|v| v.to_str().ok())
            .find(|v| !v.is_empty())
            .unwrap_or_else(|| request_host(req));
        self.allowed_hosts
            .iter()
            .any(|a| a.eq_ignore_ascii_case(host))
    }

    fn on_response(&self, tls: bool, h: &mut http::HeaderMap) {
        if let Some(sts) = &self.sts
            && !self.is_development
            && (tls || self.force_sts)
        {
            h.insert(header::STRICT_TRANSPORT_SECURITY, sts.clone());
        }
        for (name, value) in &self.fixed {
            h.insert(name.clone(), value.clone());
        }
    }
}

/// `headers`.
#[derive(Debug)]
pub(crate) struct Headers {
    request: HeaderEdits,
    /// `customRequestHeaders.Host`: replaces the Host sent upstream.
    request_host: Option<HeaderValue>,
    response: HeaderEdits,
    cors: Option<Cors>,
    secure: Option<Secure>,
}

impl Headers {
    pub(crate) fn compile(h: &dynamic::Headers) -> Result<Self, String> {
        let mut request_host = None;
        let request = HeaderEdits::compile(
            &h.custom_request_headers,
            "headers.customRequestHeaders",
            Some(&mut request_host),
        )?;
        let response = HeaderEdits::compile(
            &h.custom_response_headers,
            "headers.customResponseHeaders",
            None,
        )?;
        let cors = Cors::compile(h)?;
        let secure = Secure::compile(h)?;
        if h.custom_request_headers.is_empty()
            && h.custom_response_headers.is_empty()
            && cors.is_none()
            && secure.is_none()
        {
            return Err("headers: no option is set (custom headers, CORS or security)".into());
        }
        Ok(Headers {
            request,
            request_host,
            response,
            cors,
            secure,
        })
    }

    pub(crate) async fn handle(
        &self,
        mut req: Request,
        ctx: &mut RequestCtx,
        next: Next<'_>,
    ) -> Response {
        if let Some(cors) = &self.cors
            && Cors::is_preflight(&req)
        {
            return cors.preflight(&req);
        }
        self.request.apply(req.headers_mut());
        if let Some(host) = &self.request_host {
            set_host(&mut req, host);
        }
        if let Some(secure) = &self.secure
            && !secure.host_allowed(&req)
        {
            return reply(StatusCode::INTERNAL_SERVER_ERROR, "Bad Host");
        }
        let origin = self
            .cors
            .as_ref()
            .and_then(|_| req.headers().get(header::ORIGIN).cloned());
        let mut resp = next.run(req, ctx).await;
        let h = resp.headers_mut();
        if let Some(secure) = &self.secure {
            secure.on_response(ctx.tls, h);
        }
        self.response.apply(h);
        if let Some(cors) = &self.cors {
            cors.on_response(origin.as_ref(), h);
        }
        resp
    }
}

/// Replaces the request's host: the Host header, and the URI's authority when it has one.
fn set_host(req: &mut Request, host: &HeaderValue) {
    if req.uri().authority().is_some()
        && let Ok(authority) = http::uri::Authority::try_from(host.as_bytes())
    {
        let mut parts = req.uri().clone().into_parts();
        parts.authority = Some(authority);
        if let Ok(uri) = http::Uri::from_parts(parts) {
            *req.uri_mut() = uri;
        }
    }
    req.headers_mut().insert(header::HOST, host.clone());
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::super::MiddlewareState;
    use super::super::testutil::{
        body_string, ctx_from, ctx_tls, echo_service, echoed, mw, request, run, try_mw,
    };
    use super::*;
    use crate::context::RequestCtx;

    async fn go(yaml: &str, req: Request, ctx: RequestCtx) -> Response {
        run(&[mw(yaml)], &echo_service(), req, ctx).await.0
    }

    fn hv<'a>(r: &'a Response, name: &str) -> Option<&'a str> {
        r.headers().get(name).map(|v| v.to_str().unwrap())
    }

    #[tokio::test]
    async fn custom_request_and_response_headers() {
        let y = r#"headers:
  customRequestHeaders: {X-Script-Name: test, X-Drop: "", Host: backend.local}
  customResponseHeaders: {X-Custom-Response: value, Server: ""}"#;
        let mut req = request("GET", "/");
        req.headers_mut().insert("x-drop", "1".parse().unwrap());
        let r = go(y, req, ctx_from("1.1.1.1:1")).await;
        let e = echoed(&r);
        assert_eq!(e.headers["x-script-name"], "test");
        assert!(e.headers.get("x-drop").is_none());
        assert_eq!(e.headers["host"], "backend.local");
        assert_eq!(hv(&r, "x-custom-response"), Some("value"));
    }

    #[tokio::test]
    async fn empty_response_value_removes_upstream_header() {
        let y = r#"headers: {customResponseHeaders: {X-Powered-By: ""}, frameDeny: true}"#;
        let svc = crate::service::Service::from_fn("s@internal", |_r, _c| async {
            let mut resp = http::Response::new(Body::full("x"));
            resp.headers_mut()
                .insert("x-powered-by", "php".parse().unwrap());
            resp.headers_mut()
                .insert("x-frame-options", "ALLOW".parse().unwrap());
            resp
        });
        let (r, _) = run(&[mw(y)], &svc, request("GET", "/"), ctx_from("1.1.1.1:1")).await;
        assert!(r.headers().get("x-powered-by").is_none());
        assert_eq!(hv(&r, "x-frame-options"), Some("DENY"));
    }

    #[tokio::test]
    async fn hsts_only_over_tls_unless_forced() {
        let y = "headers: {stsSeconds: 31536000, stsIncludeSubdomains: true, stsPreload: true}";
        let r = go(y, request("GET", "/"), ctx_from("1.1.1.1:1")).await;
        assert!(r.headers().get("strict-transport-security").is_none());
        let r = go(y, request("GET", "/"), ctx_tls("1.1.1.1:1")).await;
        assert_eq!(
            hv(&r, "strict-transport-security"),
            Some("max-age=31536000; includeSubDomains; preload")
        );
        let y = "headers: {stsSeconds: 60, forceSTSHeader: true}";
        let r = go(y, request("GET", "/"), ctx_from("1.1.1.1:1")).await;
        assert_eq!(hv(&r, "strict-transport-security"), Some("max-age=60"));
        let y = "headers: {stsSeconds: 60, forceSTSHeader: true, isDevelopment: true}";
        let r = go(y, request("GET", "/"), ctx_tls("1.1.1.1:1")).await;
        assert!(r.headers().get("strict-transport-security").is_none());
    }

    #[tokio::test]
    async fn security_headers() {
        let y = r#"headers:
  frameDeny: true
  customFrameOptionsValue: SAMEORIGIN
  contentTypeNosniff: true
  browserXssFilter: true
  contentSecurityPolicy: "default-src 'self'"
  referrerPolicy: same-origin
  permissionsPolicy: "camera=()""#;
        let r = go(y, request("GET", "/"), ctx_from("1.1.1.1:1")).await;
        assert_eq!(hv(&r, "x-frame-options"), Some("SAMEORIGIN"));
        assert_eq!(hv(&r, "x-content-type-options"), Some("nosniff"));
        assert_eq!(hv(&r, "x-xss-protection"), Some("1; mode=block"));
        assert_eq!(
            hv(&r, "content-security-policy"),
            Some("default-src 'self'")
        );
        assert_eq!(hv(&r, "referrer-policy"), Some("same-origin"));
        assert_eq!(hv(&r, "permissions-policy"), Some("camera=()"));
    }

    #[tokio::test]
    async fn allowed_hosts() {
        let y = "headers: {allowedHosts: [example.com], hostsProxyHeaders: [X-Forwarded-Host]}";
        let r = go(y, request("GET", "/"), ctx_from("1.1.1.1:1")).await;
        assert_eq!(r.status(), 200);
        let mut req = request("GET", "/");
        req.headers_mut()
            .insert("x-forwarded-host", "evil.com".parse().unwrap());
        let r = go(y, req, ctx_from("1.1.1.1:1")).await;
        assert_eq!(r.status(), 500);
        assert_eq!(body_string(r).await, "Bad Host");
    }

    fn preflight(origin: &str) -> Request {
        let mut req = request("OPTIONS", "/api");
        req.headers_mut().insert("origin", origin.parse().unwrap());
        req.headers_mut()
            .insert("access-control-request-method", "PUT".parse().unwrap());
        req
    }

    #[tokio::test]
    async fn cors_preflight_is_answered_by_the_middleware() {
        let y = r#"headers:
  accessControlAllowMethods: [GET, OPTIONS, PUT]
  accessControlAllowHeaders: [Content-Type, X-Token]
  accessControlAllowOriginList: [https://a.example]
  accessControlAllowOriginListRegex: ["^https://.*\\.b\\.example$"]
  accessControlAllowCredentials: true
  accessControlMaxAge: 100
  addVaryHeader: true"#;
        let r = go(y, preflight("https://a.example"), ctx_from("1.1.1.1:1")).await;
        assert_eq!(r.status(), 200);
        assert!(
            r.extensions()
                .get::<super::super::testutil::Echo>()
                .is_none()
        );
        assert_eq!(
            hv(&r, "access-control-allow-origin"),
            Some("https://a.example")
        );
        assert_eq!(
            hv(&r, "access-control-allow-methods"),
            Some("GET,OPTIONS,PUT")
        );
        assert_eq!(
            hv(&r, "access-control-allow-headers"),
            Some("Content-Type,X-Token")
        );
        assert_eq!(hv(&r, "access-control-allow-credentials"), Some("true"));
        assert_eq!(hv(&r, "access-control-max-age"), Some("100"));
        let r = go(y, preflight("https://x.b.example"), ctx_from("1.1.1.1:1")).await;
        assert_eq!(
            hv(&r, "access-control-allow-origin"),
            Some("https://x.b.example")
        );
        let r = go(y, preflight("https://evil.example"), ctx_from("1.1.1.1:1")).await;
        assert!(r.headers().get("access-control-allow-origin").is_none());
    }

    #[tokio::test]
    async fn cors_on_normal_responses() {
        let y = r#"headers:
  accessControlAllowOriginList: ["*"]
  accessControlExposeHeaders: [X-Total]
  addVaryHeader: true"#;
        let mut req = request("GET", "/");
        req.headers_mut()
            .insert("origin", "https://any.example".parse().unwrap());
        let r = go(y, req, ctx_from("1.1.1.1:1")).await;
        assert_eq!(r.status(), 200);
        assert_eq!(hv(&r, "access-control-allow-origin"), Some("*"));
        assert_eq!(hv(&r, "access-control-expose-headers"), Some("X-Total"));
        assert_eq!(hv(&r, "vary"), Some("Origin"));
    }

    #[test]
    fn errors_name_the_key() {
        let st = MiddlewareState::default();
        let e = try_mw("headers: {}", &st).unwrap_err();
        assert!(e.contains("no option"), "{e}");
        let e = try_mw(r#"headers: {customRequestHeaders: {"bad name": x}}"#, &st).unwrap_err();
        assert!(
            e.contains("headers.customRequestHeaders: `bad name`"),
            "{e}"
        );
        let e = try_mw(
            r#"headers: {accessControlAllowOriginListRegex: ["ok", "[z-a]"]}"#,
            &st,
        )
        .unwrap_err();
        assert!(
            e.starts_with("headers.accessControlAllowOriginListRegex[1]: invalid regex"),
            "{e}"
        );
    }
}
