//! Path rewriting: `addPrefix`, `stripPrefix`, `stripPrefixRegex`, `replacePath`,
//! `replacePathRegex`.
//!
//! Paths are handled as they travel on the wire (percent-encoded, Go's `RawPath`/`EscapedPath`);
//! the query string is kept. A rewritten path always starts with `/`, so the upstream request
//! stays a valid origin-form request.

use http::uri::PathAndQuery;
use http::{HeaderName, HeaderValue, StatusCode, Uri};
use regex::Regex;

use super::{Next, reply, status_text};
use crate::body::{Request, Response};
use crate::config::dynamic;
use crate::context::RequestCtx;

/// The path a request had before `replacePath`/`replacePathRegex`.
pub(crate) static X_REPLACED_PATH: HeaderName = HeaderName::from_static("x-replaced-path");

/// `uri` with its path replaced by `path` (a leading `/` added if missing) and its query kept.
pub(crate) fn with_path(uri: &Uri, path: &str) -> Option<Uri> {
    let query = uri.query();
    let mut pq = String::with_capacity(path.len() + query.map_or(0, |q| q.len() + 1) + 1);
    if !path.starts_with('/') {
        pq.push('/');
    }
    escape_path_into(path, &mut pq);
    if let Some(q) = query {
        pq.push('?');
        pq.push_str(q);
    }
    let mut parts = uri.clone().into_parts();
    parts.path_and_query = Some(PathAndQuery::from_maybe_shared(bytes::Bytes::from(pq)).ok()?);
    Uri::from_parts(parts).ok()
}

/// Whether a byte may appear as-is in a URI path (RFC 3986 `pchar` and `/`; `%` is kept so that
/// existing escapes survive).
fn path_byte_ok(b: u8) -> bool {
    b.is_ascii_alphanumeric()
        || matches!(
            b,
            b'-' | b'.'
                | b'_'
                | b'~'
                | b'!'
                | b'$'
                | b'&'
                | b'\''
                | b'('
                | b')'
                | b'*'
                | b'+'
                | b','
                | b';'
                | b'='
                | b':'
                | b'@'
                | b'/'
                | b'%'
        )
}

/// Appends `path` to `out`, percent-encoding what a path cannot hold (spaces, `?`, `#`, non-ASCII),
/// as Go does when it turns a path into a request URI.
fn escape_path_into(path: &str, out: &mut String) {
    if path.bytes().all(path_byte_ok) {
        out.push_str(path);
        return;
    }
    for b in path.bytes() {
        if path_byte_ok(b) {
            out.push(char::from(b));
        } else {
            out.push('%');
            out.push(char::from(b"0123456789ABCDEF"[usize::from(b >> 4)]));
            out.push(char::from(b"0123456789ABCDEF"[usize::from(b & 15)]));
        }
    }
}

/// Compiles a regex from configuration, with an error that names the key and the pattern.
pub(crate) fn compile_regex(what: &str, pattern: &str) -> Result<Regex, String> {
    Regex::new(pattern).map_err(|e| {
        // regex's message is a multi-line picture; its last line says what is wrong.
        let msg = e.to_string();
        let last = msg.lines().last().unwrap_or("").trim();
        let last = last.strip_prefix("error: ").unwrap_or(last);
        format!("{what}: invalid regex `{pattern}`: {last}")
    })
}

fn rewrite_failed() -> Response {
    reply(
        StatusCode::INTERNAL_SERVER_ERROR,
        status_text(StatusCode::INTERNAL_SERVER_ERROR),
    )
}

/// `addPrefix`: puts `prefix` in front of the path.
#[derive(Debug)]
pub(crate) struct AddPrefix {
    prefix: String,
}

impl AddPrefix {
    pub(crate) fn compile(cfg: &dynamic::AddPrefix) -> Result<Self, String> {
        if cfg.prefix.is_empty() {
            return Err("addPrefix.prefix cannot be empty".into());
        }
        Ok(AddPrefix {
            prefix: cfg.prefix.clone(),
        })
    }

    pub(crate) async fn handle(
        &self,
        mut req: Request,
        ctx: &mut RequestCtx,
        next: Next<'_>,
    ) -> Response {
        let path = format!("{}{}", self.prefix, req.uri().path());
        match with_path(req.uri(), &path) {
            Some(uri) => *req.uri_mut() = uri,
            None => return rewrite_failed(),
        }
        next.run(req, ctx).await
    }
}

/// `stripPrefix`: removes the first of `prefixes` the path starts with, and tells the upstream
/// which (X-Forwarded-Prefix, added by the forwarder).
#[derive(Debug)]
pub(crate) struct StripPrefix {
    prefixes: Vec<(String, String)>,
}

impl StripPrefix {
    pub(crate) fn compile(cfg: &dynamic::StripPrefix) -> Result<Self, String> {
        Ok(StripPrefix {
            prefixes: cfg
                .prefixes
                .iter()
                .map(|p| (p.clone(), p.trim().to_owned()))
                .collect(),
        })
    }

    pub(crate) async fn handle(
        &self,
        mut req: Request,
        ctx: &mut RequestCtx,
        next: Next<'_>,
    ) -> Response {
        let path = req.uri().path();
        if let Some((prefix, header)) = self.prefixes.iter().find(|(p, _)| path.starts_with(p)) {
            match with_path(req.uri(), &path[prefix.len()..]) {
                Some(uri) => *req.uri_mut() = uri,
                None => return rewrite_failed(),
            }
            ctx.forwarded_prefix = Some(header.clone());
        }
        next.run(req, ctx).await
    }
}

/// `stripPrefixRegex`: removes the path prefix matched by the first matching regex.
#[derive(Debug)]
pub(crate) struct StripPrefixRegex {
    regexes: Vec<Regex>,
}

impl StripPrefixRegex {
    pub(crate) fn compile(cfg: &dynamic::StripPrefixRegex) -> Result<Self, String> {
        let regexes = cfg
            .regex
            .iter()
            .enumerate()
            .map(|(i, r)| compile_regex(&format!("stripPrefixRegex.regex[{i}]"), r.trim()))
            .collect::<Result<_, _>>()?;
        Ok(StripPrefixRegex { regexes })
    }

    pub(crate) async fn handle(
        &self,
        mut req: Request,
        ctx: &mut RequestCtx,
        next: Next<'_>,
    ) -> Response {
        let path = req.uri().path();
        // The leftmost match must be a non-empty prefix of the path.
        let found = self
            .regexes
            .iter()
            .filter_map(|re| re.find(path))
            .find(|m| m.start() == 0 && !m.is_empty());
        if let Some(m) = found {
            let prefix = m.as_str().to_owned();
            match with_path(req.uri(), &path[m.end()..]) {
                Some(uri) => *req.uri_mut() = uri,
                None => return rewrite_failed(),
            }
            ctx.forwarded_prefix = Some(prefix);
        }
        next.run(req, ctx).await
    }
}

/// `replacePath`: replaces the whole path; the old one goes upstream in X-Replaced-Path.
#[derive(Debug)]
pub(crate) struct ReplacePath {
    path: String,
}

impl ReplacePath {
    pub(crate) fn compile(cfg: &dynamic::ReplacePath) -> Result<Self, String> {
        let mut path = String::new();
        escape_path_into(&cfg.path, &mut path);
        Ok(ReplacePath { path })
    }

    pub(crate) async fn handle(
        &self,
        mut req: Request,
        ctx: &mut RequestCtx,
        next: Next<'_>,
    ) -> Response {
        let old = HeaderValue::from_str(req.uri().path()).ok();
        match with_path(req.uri(), &self.path) {
            Some(uri) => *req.uri_mut() = uri,
            None => return rewrite_failed(),
        }
        if let Some(old) = old {
            req.headers_mut().append(&X_REPLACED_PATH, old);
        }
        next.run(req, ctx).await
    }
}

/// `replacePathRegex`: rewrites a matching path with `regex` and `replacement` (`$1`, `${name}`).
#[derive(Debug)]
pub(crate) struct ReplacePathRegex {
    regex: Regex,
    replacement: String,
}

impl ReplacePathRegex {
    pub(crate) fn compile(cfg: &dynamic::ReplacePathRegex) -> Result<Self, String> {
        Ok(ReplacePathRegex {
            regex: compile_regex("replacePathRegex.regex", cfg.regex.trim())?,
            replacement: cfg.replacement.trim().to_owned(),
        })
    }

    pub(crate) async fn handle(
        &self,
        mut req: Request,
        ctx: &mut RequestCtx,
        next: Next<'_>,
    ) -> Response {
        let path = req.uri().path();
        if self.regex.is_match(path) {
            let old = HeaderValue::from_str(path).ok();
            let new = self.regex.replace_all(path, self.replacement.as_str());
            match with_path(req.uri(), &new) {
                Some(uri) => *req.uri_mut() = uri,
                None => return rewrite_failed(),
            }
            if let Some(old) = old {
                req.headers_mut().append(&X_REPLACED_PATH, old);
            }
        }
        next.run(req, ctx).await
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::super::MiddlewareState;
    use super::super::testutil::{ctx_from, echo_service, echoed, mw, request, run, try_mw};
    use super::*;

    async fn path_after(yaml: &str, uri: &str) -> (String, Option<String>, Option<String>) {
        let (resp, ctx) = run(
            &[mw(yaml)],
            &echo_service(),
            request("GET", uri),
            ctx_from("127.0.0.1:1"),
        )
        .await;
        let e = echoed(&resp);
        let replaced = e
            .headers
            .get(&X_REPLACED_PATH)
            .map(|v| v.to_str().unwrap().to_owned());
        (e.uri.to_string(), ctx.forwarded_prefix, replaced)
    }

    #[tokio::test]
    async fn add_prefix() {
        let y = "addPrefix: {prefix: /api}";
        assert_eq!(path_after(y, "/users?x=1").await.0, "/api/users?x=1");
        let y = "addPrefix: {prefix: v1}";
        assert_eq!(path_after(y, "/users").await.0, "/v1/users");
        let e = try_mw("addPrefix: {prefix: ''}", &MiddlewareState::default()).unwrap_err();
        assert_eq!(e, "addPrefix.prefix cannot be empty");
    }

    #[tokio::test]
    async fn strip_prefix_first_match_and_forwarded_prefix() {
        let y = "stripPrefix: {prefixes: [/foo, /foobar]}";
        let (p, prefix, _) = path_after(y, "/foobar/baz?q=2").await;
        assert_eq!(p, "/bar/baz?q=2");
        assert_eq!(prefix.as_deref(), Some("/foo"));
        let (p, prefix, _) = path_after(y, "/foo").await;
        assert_eq!(p, "/");
        assert_eq!(prefix.as_deref(), Some("/foo"));
        let (p, prefix, _) = path_after(y, "/other").await;
        assert_eq!(p, "/other");
        assert_eq!(prefix, None);
        let y = "stripPrefix: {prefixes: [/api/]}";
        assert_eq!(path_after(y, "/api/v1").await.0, "/v1");
    }

    #[tokio::test]
    async fn strip_prefix_regex() {
        let y = r#"stripPrefixRegex: {regex: ["/users/[a-z0-9]+/", "/api"]}"#;
        let (p, prefix, _) = path_after(y, "/users/bob42/profile").await;
        assert_eq!(p, "/profile");
        assert_eq!(prefix.as_deref(), Some("/users/bob42/"));
        // A match that is not a prefix does not count.
        let (p, prefix, _) = path_after(y, "/x/api/y").await;
        assert_eq!(p, "/x/api/y");
        assert_eq!(prefix, None);
        let e = try_mw(
            r#"stripPrefixRegex: {regex: ["/ok", "("]}"#,
            &MiddlewareState::default(),
        )
        .unwrap_err();
        assert!(
            e.starts_with("stripPrefixRegex.regex[1]: invalid regex `(`: "),
            "{e}"
        );
    }

    #[tokio::test]
    async fn replace_path() {
        let y = "replacePath: {path: /new path}";
        let (p, _, old) = path_after(y, "/old/p?k=v").await;
        assert_eq!(p, "/new%20path?k=v");
        assert_eq!(old.as_deref(), Some("/old/p"));
    }

    #[tokio::test]
    async fn replace_path_regex() {
        let y = r#"replacePathRegex: {regex: "^/foo/(.*)", replacement: "/bar/$1"}"#;
        let (p, _, old) = path_after(y, "/foo/a/b?z").await;
        assert_eq!(p, "/bar/a/b?z");
        assert_eq!(old.as_deref(), Some("/foo/a/b"));
        let (p, _, old) = path_after(y, "/nope").await;
        assert_eq!(p, "/nope");
        assert_eq!(old, None);
        let y = r#"replacePathRegex: {regex: "^/(?P<rest>.*)", replacement: "/v2/${rest}"}"#;
        assert_eq!(path_after(y, "/x").await.0, "/v2/x");
    }

    #[test]
    fn with_path_keeps_authority_for_absolute_form() {
        let uri: Uri = "http://h.example:8080/a?b=c".parse().unwrap();
        assert_eq!(
            with_path(&uri, "/z").unwrap().to_string(),
            "http://h.example:8080/z?b=c"
        );
        assert_eq!(with_path(&uri, "é").unwrap().path(), "/%C3%A9");
    }
}
