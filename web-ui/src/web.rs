//! Request plumbing shared by the HTML pages and the JSON API: the state, client address and
//! host, cookies, the signed-in user (cookie session or bearer token), CSRF checks, security
//! headers and the origin check.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use askama::Template;
use axum::extract::{ConnectInfo, FromRequestParts, Request, State};
use axum::middleware::Next;
use axum::response::{Html, IntoResponse, Redirect, Response};
use gantry_supervisor::Error as SupError;
use gantry_supervisor::appliance::{Appliance, entrypoints};
use gantry_supervisor::auth::AuthError;
use gantry_supervisor::store::{SessionKind, SessionRecord, UserRecord};
use http::request::Parts;
use http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use tokio_util::sync::CancellationToken;

use crate::error::ApiError;
use crate::views::{ErrorPage, Layout};

/// The session cookie. `__Host-`: Secure, Path=/, no Domain, so no other host can set it.
pub(crate) const SESSION_COOKIE: &str = "__Host-gantry";
/// The double-submit CSRF cookie of forms shown before any session exists (sign-in, token).
pub(crate) const PRE_COOKIE: &str = "__Host-gantry-pre";

/// Which of the two loopback servers a request reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Side {
    /// The admin entrypoint: the wizard before setup, the admin UI after.
    Admin,
    /// The app entrypoints: the wizard before setup, a placeholder after.
    App,
}

#[derive(Clone)]
pub(crate) struct AppState {
    pub app: Arc<Appliance>,
    pub side: Side,
    pub cancel: CancellationToken,
}

/// Runs blocking work (password hashing, SQLite) off the async workers.
pub(crate) async fn blocking<T, F>(f: F) -> Result<T, SupError>
where
    F: FnOnce() -> Result<T, SupError> + Send + 'static,
    T: Send + 'static,
{
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| SupError::Invalid(format!("task failed: {e}")))?
}

/// The client's address: the proxy's `X-Real-Ip` (the proxy replaces whatever the client sent)
/// when the peer is the proxy on loopback, else the peer.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ClientIp(pub IpAddr);

impl<S: Send + Sync> FromRequestParts<S> for ClientIp {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        let peer = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|c| c.0.ip());
        let forwarded = parts
            .headers
            .get("x-real-ip")
            .and_then(|v| v.to_str().ok())
            .and_then(|s| s.trim().parse::<IpAddr>().ok());
        Ok(ClientIp(match (peer, forwarded) {
            (Some(p), Some(f)) if p.is_loopback() => f,
            (Some(p), _) => p,
            (None, Some(f)) => f,
            (None, None) => IpAddr::from([127, 0, 0, 1]),
        }))
    }
}

/// The request's `Host`, checked to be a plain host name or address with an optional port.
pub(crate) fn host_of(headers: &HeaderMap) -> Option<String> {
    let h = headers.get(header::HOST)?.to_str().ok()?.trim();
    let ok = !h.is_empty()
        && h.len() <= 260
        && h.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':' | b'[' | b']'));
    ok.then(|| h.to_ascii_lowercase())
}

/// The host without its port.
pub(crate) fn hostname(host: &str) -> &str {
    if let Some(rest) = host.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    host.rsplit_once(':').map_or(host, |(h, _)| h)
}

/// `https://HOST[:admin port]`: where the admin UI is, for this request's host.
pub(crate) fn admin_origin(app: &Appliance, headers: &HeaderMap) -> Option<String> {
    let host = host_of(headers)?;
    let name = hostname(&host);
    let name = if name.contains(':') {
        format!("[{name}]")
    } else {
        name.to_owned()
    };
    Some(match app.port(entrypoints::ADMIN) {
        Some(443) | None => format!("https://{name}"),
        Some(p) => format!("https://{name}:{p}"),
    })
}

/// A cookie's value from the request.
pub(crate) fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// `Set-Cookie` for a secure, script-invisible, same-site-only cookie.
pub(crate) fn set_cookie(name: &str, value: &str, max_age: Option<i64>) -> HeaderValue {
    let mut s = format!("{name}={value}; Path=/; Secure; HttpOnly; SameSite=Strict");
    if let Some(a) = max_age {
        s.push_str(&format!("; Max-Age={a}"));
    }
    HeaderValue::from_str(&s).unwrap_or_else(|_| HeaderValue::from_static("invalid=1"))
}

pub(crate) fn clear_cookie(name: &str) -> HeaderValue {
    set_cookie(name, "", Some(0))
}

/// The session a request's cookie names, if it is live.
pub(crate) async fn session_of(
    app: &Arc<Appliance>,
    headers: &HeaderMap,
) -> Result<Option<SessionRecord>, SupError> {
    let Some(c) = cookie(headers, SESSION_COOKIE).map(str::to_owned) else {
        return Ok(None);
    };
    let app = app.clone();
    blocking(move || app.auth().session(&c)).await
}

/// Any live session (user or setup) from the cookie.
pub(crate) struct MaybeSession(pub Option<SessionRecord>);

impl FromRequestParts<AppState> for MaybeSession {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, st: &AppState) -> Result<Self, Self::Rejection> {
        session_of(&st.app, &parts.headers)
            .await
            .map(MaybeSession)
            .map_err(|e| page_error(&e, "/"))
    }
}

/// A signed-in user on an HTML page; otherwise a redirect to the wizard or the sign-in page.
pub(crate) struct HtmlUser {
    pub user: UserRecord,
    pub session: SessionRecord,
}

impl FromRequestParts<AppState> for HtmlUser {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, st: &AppState) -> Result<Self, Self::Rejection> {
        if st.app.setup_pending() {
            return Err(Redirect::to("/setup").into_response());
        }
        match session_of(&st.app, &parts.headers).await {
            Ok(Some(s)) if s.kind == SessionKind::User => match s.user.clone() {
                Some(user) => Ok(HtmlUser { user, session: s }),
                None => Err(Redirect::to("/sign-in").into_response()),
            },
            Ok(_) => Err(Redirect::to("/sign-in").into_response()),
            Err(e) => Err(page_error(&e, "/")),
        }
    }
}

/// The user of an API call: a bearer token, or a session cookie plus (for state-changing
/// methods) the `X-CSRF-Token` header.
pub(crate) struct ApiUser {
    pub user: UserRecord,
    /// Present when authenticated by cookie.
    pub session: Option<SessionRecord>,
}

impl FromRequestParts<AppState> for ApiUser {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, st: &AppState) -> Result<Self, Self::Rejection> {
        let app = st.app.clone();
        if let Some(auth) = parts.headers.get(header::AUTHORIZATION) {
            let token = auth
                .to_str()
                .ok()
                .and_then(|v| v.strip_prefix("Bearer "))
                .map(|t| t.trim().to_owned())
                .unwrap_or_default();
            let found = blocking(move || app.auth().bearer(&token))
                .await
                .map_err(|e| ApiError(e).into_response())?;
            return match found {
                Some(user) => Ok(ApiUser {
                    user,
                    session: None,
                }),
                None => Err(ApiError(AuthError::NotSignedIn.into()).into_response()),
            };
        }
        let session = session_of(&app, &parts.headers)
            .await
            .map_err(|e| ApiError(e).into_response())?;
        let Some(session) = session.filter(|s| s.kind == SessionKind::User) else {
            return Err(ApiError(AuthError::NotSignedIn.into()).into_response());
        };
        let safe = matches!(parts.method, Method::GET | Method::HEAD | Method::OPTIONS);
        if !safe {
            let presented = parts
                .headers
                .get("x-csrf-token")
                .and_then(|v| v.to_str().ok());
            app.auth()
                .require_csrf(&session, presented)
                .map_err(|e| ApiError(e).into_response())?;
        }
        match session.user.clone() {
            Some(user) => Ok(ApiUser {
                user,
                session: Some(session),
            }),
            None => Err(ApiError(AuthError::NotSignedIn.into()).into_response()),
        }
    }
}

/// Renders a template, or a plain 500 if it fails.
pub(crate) fn render<T: Template>(status: StatusCode, t: &T) -> Response {
    match t.render() {
        Ok(html) => (status, Html(html)).into_response(),
        Err(e) => {
            tracing::error!(error = %e, "template failed");
            (StatusCode::INTERNAL_SERVER_ERROR, "template error").into_response()
        }
    }
}

/// An error page with the status of `e`.
pub(crate) fn page_error(e: &SupError, back: &str) -> Response {
    let status = crate::error::status_of(e);
    let heading = if status == StatusCode::FORBIDDEN {
        "Refused"
    } else if status.is_server_error() {
        "Something went wrong"
    } else {
        "That did not work"
    };
    render(
        status,
        &ErrorPage {
            l: Layout::new(heading).narrow(),
            heading: heading.to_owned(),
            message: crate::error::public_message(e),
            back: back.to_owned(),
        },
    )
}

/// Checks a form's CSRF field against the session's token.
pub(crate) fn check_form_csrf(
    app: &Appliance,
    session: &SessionRecord,
    presented: &str,
) -> Result<(), SupError> {
    app.auth().require_csrf(session, Some(presented))
}

/// Checks a pre-session form's CSRF field against its double-submit cookie.
pub(crate) fn check_pre_csrf(headers: &HeaderMap, presented: &str) -> Result<(), SupError> {
    match cookie(headers, PRE_COOKIE) {
        Some(c)
            if !c.is_empty() && gantry_supervisor::auth::token::constant_time_eq(c, presented) =>
        {
            Ok(())
        }
        _ => Err(AuthError::Csrf.into()),
    }
}

/// The pre-session CSRF value for a form: the cookie's if the browser has one, else a new one
/// (returned with its `Set-Cookie`).
pub(crate) fn pre_csrf(headers: &HeaderMap) -> (String, Option<HeaderValue>) {
    match cookie(headers, PRE_COOKIE) {
        Some(c) if c.len() >= 32 && c.len() <= 64 => (c.to_owned(), None),
        _ => {
            let v = gantry_supervisor::auth::token::session_token();
            let h = set_cookie(PRE_COOKIE, &v, None);
            (v, Some(h))
        }
    }
}

/// Refuses state-changing requests whose `Origin` is another site (defence in depth; forms
/// and cookie-authenticated API calls also carry CSRF tokens). Requests without `Origin`
/// (non-browser clients) pass.
pub(crate) async fn origin_check(State(st): State<AppState>, req: Request, next: Next) -> Response {
    let safe = matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS);
    let cross_site = req
        .headers()
        .get("sec-fetch-site")
        .is_some_and(|v| v.as_bytes() == b"cross-site");
    if !safe && cross_site {
        tracing::warn!("cross-site request refused (Sec-Fetch-Site)");
        let e: SupError = AuthError::Csrf.into();
        return if req.uri().path().starts_with("/api/") {
            ApiError(e).into_response()
        } else {
            page_error(&e, "/")
        };
    }
    if !safe && let Some(origin) = req.headers().get(header::ORIGIN) {
        let origin = origin.to_str().unwrap_or("null");
        let host = host_of(req.headers()).unwrap_or_default();
        let same = origin
            .strip_prefix("https://")
            .or_else(|| origin.strip_prefix("http://"))
            .is_some_and(|o| o.eq_ignore_ascii_case(&host));
        // The app-side wizard's last form posts to itself but may be followed to the admin
        // origin; forms only ever post to their own origin.
        if !same {
            tracing::warn!(origin, host, "cross-origin request refused");
            let e: SupError = AuthError::Csrf.into();
            return if req.uri().path().starts_with("/api/") {
                ApiError(e).into_response()
            } else {
                let _ = st;
                page_error(&e, "/")
            };
        }
    }
    next.run(req).await
}

/// Security headers on every response: CSP without inline script, no framing, no sniffing, no
/// referrer, no caching of pages; HSTS when the host's certificate is trusted.
pub(crate) async fn security_headers(
    State(st): State<AppState>,
    req: Request,
    next: Next,
) -> Response {
    let host = host_of(req.headers());
    let admin = admin_origin(&st.app, req.headers());
    let is_static = req.uri().path().starts_with("/static/");
    let mut resp = next.run(req).await;
    let h = resp.headers_mut();
    // The app side's wizard hands over to the admin origin (another port) when setup ends.
    let form_action = match (st.side, admin) {
        (Side::App, Some(a)) => format!("'self' {a}"),
        _ => "'self'".to_owned(),
    };
    let csp = format!(
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
         connect-src 'self'; form-action {form_action}; frame-ancestors 'none'; base-uri 'none'"
    );
    if let Ok(v) = HeaderValue::from_str(&csp) {
        h.insert(header::CONTENT_SECURITY_POLICY, v);
    }
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    // `same-origin`, not `no-referrer`: with the latter, Chromium sends `Origin: null` on form
    // posts, which the origin check must refuse.
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    h.insert(
        "cross-origin-opener-policy",
        HeaderValue::from_static("same-origin"),
    );
    h.insert(
        "permissions-policy",
        HeaderValue::from_static("camera=(), microphone=(), geolocation=()"),
    );
    if !is_static && !h.contains_key(header::CACHE_CONTROL) {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    if let Some(host) = host
        && st.app.hsts_for(hostname(&host))
    {
        h.insert(
            header::STRICT_TRANSPORT_SECURITY,
            HeaderValue::from_static("max-age=31536000"),
        );
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cookies_and_hosts() {
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            HeaderValue::from_static("a=1; __Host-gantry=abc; b=2"),
        );
        assert_eq!(cookie(&h, SESSION_COOKIE), Some("abc"));
        assert_eq!(cookie(&h, "c"), None);
        let c = set_cookie(SESSION_COOKIE, "v", Some(60));
        assert_eq!(
            c.to_str().unwrap(),
            "__Host-gantry=v; Path=/; Secure; HttpOnly; SameSite=Strict; Max-Age=60"
        );
        h.insert(
            header::HOST,
            HeaderValue::from_static("Chat.Example.com:8443"),
        );
        assert_eq!(host_of(&h).as_deref(), Some("chat.example.com:8443"));
        assert_eq!(hostname("chat.example.com:8443"), "chat.example.com");
        assert_eq!(hostname("[::1]:8443"), "::1");
        assert_eq!(hostname("10.0.0.1"), "10.0.0.1");
        h.insert(header::HOST, HeaderValue::from_static("evil\"host"));
        assert_eq!(host_of(&h), None);
    }
}
