//! `redirectScheme` and `redirectRegex`.
//!
//! Both compare the URL the client used (`scheme://host[:port]/path?query`) with its rewritten
//! form and redirect when they differ, otherwise pass the request on. The status follows
//! Traefik: 302 (301 with `permanent`) for GET, 307 (308) for every other method, so that a
//! POST body is replayed at the new location.

use http::{HeaderValue, Method, StatusCode, header};
use regex::Regex;

use super::path::compile_regex;
use super::{Next, reply, request_host, status_text};
use crate::body::{Request, Response};
use crate::config::dynamic;
use crate::context::RequestCtx;
use crate::forwarded::{self, X_FORWARDED_PROTO};

fn redirect_status(method: &Method, permanent: bool) -> StatusCode {
    match (method == Method::GET, permanent) {
        (true, false) => StatusCode::FOUND,
        (false, false) => StatusCode::TEMPORARY_REDIRECT,
        (true, true) => StatusCode::MOVED_PERMANENTLY,
        (false, true) => StatusCode::PERMANENT_REDIRECT,
    }
}

fn redirect(method: &Method, permanent: bool, location: &str) -> Response {
    let Ok(location) = HeaderValue::from_str(location) else {
        tracing::debug!(%location, "redirect: the new URL is not a valid header value");
        return reply(
            StatusCode::INTERNAL_SERVER_ERROR,
            status_text(StatusCode::INTERNAL_SERVER_ERROR),
        );
    };
    let status = redirect_status(method, permanent);
    let mut resp = reply(status, status_text(status));
    resp.headers_mut().insert(header::LOCATION, location);
    resp
}

fn path_and_query(req: &Request) -> &str {
    req.uri().path_and_query().map_or("/", |pq| pq.as_str())
}

/// `redirectScheme`: sends the client to the same URL with another scheme (and port).
#[derive(Debug)]
pub(crate) struct RedirectScheme {
    scheme: String,
    /// `:port`, or empty when no port was configured or it is the scheme's default.
    port: String,
    port_num: Option<u16>,
    permanent: bool,
}

impl RedirectScheme {
    pub(crate) fn compile(cfg: &dynamic::RedirectScheme) -> Result<Self, String> {
        if cfg.scheme.is_empty() {
            return Err("redirectScheme.scheme: you must provide a target scheme".into());
        }
        let port_num = match cfg.port.as_deref() {
            None | Some("") => None,
            Some(p) => {
                let n = p
                    .parse::<u16>()
                    .map_err(|_| format!("redirectScheme.port: `{p}` is not a port number"))?;
                let default =
                    (cfg.scheme == "http" && n == 80) || (cfg.scheme == "https" && n == 443);
                (!default).then_some(n)
            }
        };
        Ok(RedirectScheme {
            scheme: cfg.scheme.clone(),
            port: port_num.map(|p| format!(":{p}")).unwrap_or_default(),
            port_num,
            permanent: cfg.permanent,
        })
    }

    /// The scheme the client used: TLS, or X-Forwarded-Proto from a trusted proxy (`ws`/`wss`
    /// count as `http`/`https`).
    fn client_scheme(req: &Request, ctx: &RequestCtx) -> &'static str {
        let mut scheme = if ctx.tls { "https" } else { "http" };
        if ctx.entrypoint.trusted.trusts(ctx.client_addr.ip())
            && let Some(proto) = req.headers().get(&X_FORWARDED_PROTO)
        {
            let p = proto.as_bytes();
            if p.eq_ignore_ascii_case(b"http") || p.eq_ignore_ascii_case(b"ws") {
                scheme = "http";
            } else if p.eq_ignore_ascii_case(b"https") || p.eq_ignore_ascii_case(b"wss") {
                scheme = "https";
            }
        }
        scheme
    }

    pub(crate) async fn handle(
        &self,
        req: Request,
        ctx: &mut RequestCtx,
        next: Next<'_>,
    ) -> Response {
        let scheme = Self::client_scheme(&req, ctx);
        let (host, port) = forwarded::split_port(request_host(&req));
        let port = match (scheme, port) {
            (_, None) | ("http", Some(80)) | ("https", Some(443)) => None,
            (_, p) => p,
        };
        // The URLs differ only in scheme and port; compare those before building anything.
        if scheme == self.scheme && port == self.port_num {
            return next.run(req, ctx).await;
        }
        let location = format!(
            "{}://{}{}{}",
            self.scheme,
            host,
            self.port,
            path_and_query(&req)
        );
        redirect(req.method(), self.permanent, &location)
    }
}

/// `redirectRegex`: redirects when `regex` matches the request URL and `replacement` changes it.
#[derive(Debug)]
pub(crate) struct RedirectRegex {
    regex: Regex,
    replacement: String,
    permanent: bool,
}

impl RedirectRegex {
    pub(crate) fn compile(cfg: &dynamic::RedirectRegex) -> Result<Self, String> {
        Ok(RedirectRegex {
            regex: compile_regex("redirectRegex.regex", &cfg.regex)?,
            replacement: cfg.replacement.clone(),
            permanent: cfg.permanent,
        })
    }

    pub(crate) async fn handle(
        &self,
        req: Request,
        ctx: &mut RequestCtx,
        next: Next<'_>,
    ) -> Response {
        let url = format!(
            "{}://{}{}",
            ctx.scheme(),
            request_host(&req),
            path_and_query(&req)
        );
        if !self.regex.is_match(&url) {
            return next.run(req, ctx).await;
        }
        let new = self.regex.replace_all(&url, self.replacement.as_str());
        if new == url {
            return next.run(req, ctx).await;
        }
        redirect(req.method(), self.permanent, &new)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::super::testutil::{
        body_string, ctx_from, ctx_tls, ctx_trusting, echo_service, mw, request, run,
    };
    use super::*;
    use crate::context::RequestCtx;

    async fn go(yaml: &str, method: &str, uri: &str, host: &str, ctx: RequestCtx) -> Response {
        let mut req = request(method, uri);
        req.headers_mut()
            .insert(header::HOST, host.parse().unwrap());
        run(&[mw(yaml)], &echo_service(), req, ctx).await.0
    }

    fn location(r: &Response) -> &str {
        r.headers()[header::LOCATION].to_str().unwrap()
    }

    #[tokio::test]
    async fn scheme_redirect_statuses_and_ports() {
        let y = "redirectScheme: {scheme: https}";
        let r = go(y, "GET", "/a?b=1", "example.com", ctx_from("1.1.1.1:1")).await;
        assert_eq!(r.status(), 302);
        assert_eq!(location(&r), "https://example.com/a?b=1");
        assert_eq!(body_string(r).await, "Found");
        let r = go(y, "POST", "/a", "example.com:8080", ctx_from("1.1.1.1:1")).await;
        assert_eq!(r.status(), 307);
        assert_eq!(location(&r), "https://example.com/a");
        let y = "redirectScheme: {scheme: https, port: '8443', permanent: true}";
        let r = go(y, "GET", "/", "example.com", ctx_from("1.1.1.1:1")).await;
        assert_eq!(r.status(), 301);
        assert_eq!(location(&r), "https://example.com:8443/");
        let r = go(y, "PUT", "/", "example.com", ctx_from("1.1.1.1:1")).await;
        assert_eq!(r.status(), 308);
        let y = "redirectScheme: {scheme: https, port: '443'}";
        let r = go(y, "GET", "/", "[::1]:80", ctx_from("1.1.1.1:1")).await;
        assert_eq!(location(&r), "https://[::1]/");
    }

    #[tokio::test]
    async fn scheme_redirect_passes_when_already_there() {
        let y = "redirectScheme: {scheme: https}";
        let r = go(y, "GET", "/", "example.com:443", ctx_tls("1.1.1.1:1")).await;
        assert_eq!(r.status(), 200);
        // Another port on the right scheme still redirects (to the default port), as in Traefik.
        let r = go(y, "GET", "/", "example.com:8443", ctx_tls("1.1.1.1:1")).await;
        assert_eq!(r.status(), 302);
        let y = "redirectScheme: {scheme: https, port: '8443'}";
        let r = go(y, "GET", "/", "example.com:8443", ctx_tls("1.1.1.1:1")).await;
        assert_eq!(r.status(), 200);
    }

    #[tokio::test]
    async fn scheme_redirect_trusts_forwarded_proto_only_from_trusted_proxies() {
        let y = "redirectScheme: {scheme: https}";
        let mk = || {
            let mut req = request("GET", "/");
            req.headers_mut()
                .insert(&X_FORWARDED_PROTO, "https".parse().unwrap());
            req
        };
        let trusted = ctx_trusting("10.0.0.1:1", &["10.0.0.0/8"]);
        let r = run(&[mw(y)], &echo_service(), mk(), trusted).await.0;
        assert_eq!(r.status(), 200);
        let r = run(&[mw(y)], &echo_service(), mk(), ctx_from("10.0.0.1:1"))
            .await
            .0;
        assert_eq!(r.status(), 302);
    }

    #[tokio::test]
    async fn regex_redirect() {
        let y = r#"redirectRegex: {regex: "^http://localhost/(.*)", replacement: "http://mydomain/${1}"}"#;
        let r = go(y, "GET", "/x?y", "localhost", ctx_from("1.1.1.1:1")).await;
        assert_eq!(r.status(), 302);
        assert_eq!(location(&r), "http://mydomain/x?y");
        let r = go(y, "GET", "/x", "other", ctx_from("1.1.1.1:1")).await;
        assert_eq!(r.status(), 200);
        // A replacement that changes nothing passes the request on.
        let y = r#"redirectRegex: {regex: ".*", replacement: "$0", permanent: true}"#;
        let r = go(y, "GET", "/x", "h", ctx_from("1.1.1.1:1")).await;
        assert_eq!(r.status(), 200);
        let y = r#"redirectRegex: {regex: "^https://(.*)", replacement: "https://new/$1", permanent: true}"#;
        let r = go(y, "DELETE", "/x", "old", ctx_tls("1.1.1.1:1")).await;
        assert_eq!(r.status(), 308);
        assert_eq!(location(&r), "https://new/old/x");
    }
}
