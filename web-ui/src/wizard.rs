//! The setup wizard's pages: token -> administrator -> domain and certificate -> Rocket.Chat
//! administrator -> summary -> live progress. Every step needs the setup session the token
//! opened; each POST checks the session's CSRF token; a refused step shows its error next to the
//! field and keeps the other inputs (never passwords or keys).

use std::collections::HashMap;
use std::convert::Infallible;
use std::time::Duration;

use axum::Form;
use axum::extract::{FromRequestParts, Multipart, State};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Redirect, Response};
use futures_util::{Stream, StreamExt};
use gantry_supervisor::Error as SupError;
use gantry_supervisor::auth::{AuthError, Secret, password};
use gantry_supervisor::setup::{AdminInput, CertMode, ChatAdminInput, ChatInput};
use gantry_supervisor::store::{SessionKind, SessionRecord};
use http::request::Parts;
use http::{HeaderMap, StatusCode, header};
use serde::Deserialize;
use tokio_stream::wrappers::WatchStream;

use crate::views::{
    FormState, Layout, ProgressPage, SetupAdminPage, SetupChatAdminPage, SetupDomainPage,
    SetupSummaryPage, SetupTokenPage, steps,
};
use crate::web::{
    AppState, ClientIp, HtmlUser, SESSION_COOKIE, Side, admin_origin, blocking, check_pre_csrf,
    page_error, pre_csrf, render, set_cookie,
};

/// Where the admin UI's `path` is, seen from this request.
fn to_admin(st: &AppState, headers: &HeaderMap, path: &str) -> Response {
    match (st.side, admin_origin(&st.app, headers)) {
        (Side::App, Some(o)) => Redirect::to(&format!("{o}{path}")).into_response(),
        _ => Redirect::to(path).into_response(),
    }
}

/// A setup session (the token was presented); otherwise back to the token step, or to the
/// admin UI when setup is already complete.
pub(crate) struct SetupSession(pub SessionRecord);

impl FromRequestParts<AppState> for SetupSession {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, st: &AppState) -> Result<Self, Self::Rejection> {
        if !st.app.setup_pending() {
            return Err(to_admin(st, &parts.headers, "/"));
        }
        match crate::web::session_of(&st.app, &parts.headers).await {
            Ok(Some(s)) if s.kind == SessionKind::Setup => Ok(SetupSession(s)),
            Ok(_) => Err(Redirect::to("/setup").into_response()),
            Err(e) => Err(page_error(&e, "/setup")),
        }
    }
}

fn layout(title: &str) -> Layout {
    Layout::new(title).narrow()
}

/// `GET /setup`: the token step (or the next step for a session that has one).
pub(crate) async fn token_page(State(st): State<AppState>, headers: HeaderMap) -> Response {
    if !st.app.setup_pending() {
        return to_admin(&st, &headers, "/");
    }
    if let Ok(Some(s)) = crate::web::session_of(&st.app, &headers).await
        && s.kind == SessionKind::Setup
    {
        let next = match st.app.setup_draft(&s).ok().and_then(|d| d.missing_step()) {
            Some("admin") => "/setup/admin",
            Some("domain") => "/setup/domain",
            Some(_) => "/setup/rocketchat",
            None => "/setup/summary",
        };
        return Redirect::to(next).into_response();
    }
    token_form(&headers, StatusCode::OK, None)
}

fn token_form(headers: &HeaderMap, status: StatusCode, error: Option<String>) -> Response {
    let (csrf, cookie) = pre_csrf(headers);
    let mut resp = render(
        status,
        &SetupTokenPage {
            l: layout("Setup"),
            steps: steps(1),
            csrf,
            error,
        },
    );
    if let Some(c) = cookie {
        resp.headers_mut().append(header::SET_COOKIE, c);
    }
    resp
}

#[derive(Deserialize)]
pub(crate) struct TokenForm {
    #[serde(default, rename = "_csrf")]
    csrf: String,
    #[serde(default)]
    token: Secret,
}

/// `POST /setup`: checks the token and opens the setup session.
pub(crate) async fn token_submit(
    State(st): State<AppState>,
    ClientIp(ip): ClientIp,
    headers: HeaderMap,
    Form(f): Form<TokenForm>,
) -> Response {
    if !st.app.setup_pending() {
        return to_admin(&st, &headers, "/");
    }
    if let Err(e) = check_pre_csrf(&headers, &f.csrf) {
        return token_form(&headers, StatusCode::FORBIDDEN, Some(e.to_string()));
    }
    let app = st.app.clone();
    match blocking(move || app.setup_begin(f.token.expose(), ip)).await {
        Ok(s) => {
            let mut resp = Redirect::to("/setup/admin").into_response();
            resp.headers_mut().append(
                header::SET_COOKIE,
                set_cookie(
                    SESSION_COOKIE,
                    s.token.expose(),
                    Some(s.max_age(st.app.now())),
                ),
            );
            resp
        }
        Err(e) => token_form(
            &headers,
            crate::error::status_of(&e),
            Some(crate::error::public_message(&e)),
        ),
    }
}

fn csrf_refused() -> Response {
    page_error(&AuthError::Csrf.into(), "/setup")
}

/// Redirects to the first missing step before `step` (by name), if any.
fn require_before(st: &AppState, s: &SessionRecord, step: &str) -> Option<Response> {
    let order = ["admin", "domain", "rocketchat", "summary"];
    let missing = st
        .app
        .setup_draft(s)
        .ok()?
        .missing_step()
        .unwrap_or("summary");
    let pos = |n: &str| order.iter().position(|o| *o == n).unwrap_or(0);
    (pos(missing) < pos(step)).then(|| Redirect::to(&format!("/setup/{missing}")).into_response())
}

fn admin_page(s: &SessionRecord, form: FormState, status: StatusCode) -> Response {
    render(
        status,
        &SetupAdminPage {
            l: layout("Administrator account"),
            steps: steps(2),
            csrf: s.csrf_token.clone(),
            form,
            min_len: password::MIN_LEN,
        },
    )
}

pub(crate) async fn admin_get(
    State(st): State<AppState>,
    SetupSession(s): SetupSession,
) -> Response {
    let v = st.app.setup_draft_view(&s).unwrap_or_default();
    let form = FormState::with_values(v.admin_username.map(|u| ("username", u)));
    admin_page(&s, form, StatusCode::OK)
}

#[derive(Deserialize)]
pub(crate) struct AdminForm {
    #[serde(default, rename = "_csrf")]
    csrf: String,
    #[serde(flatten)]
    input: AdminInput,
}

pub(crate) async fn admin_post(
    State(st): State<AppState>,
    SetupSession(s): SetupSession,
    Form(f): Form<AdminForm>,
) -> Response {
    if !st.app.auth().csrf_ok(&s, Some(&f.csrf)) {
        return csrf_refused();
    }
    let values = FormState::with_values([("username", f.input.username.clone())]);
    let app = st.app.clone();
    let sess = s.clone();
    match blocking(move || app.setup_admin(&sess, &f.input)).await {
        Ok(()) => Redirect::to("/setup/domain").into_response(),
        Err(e) => admin_page(&s, values.error_from(&e), crate::error::status_of(&e)),
    }
}

fn domain_page(st: &AppState, s: &SessionRecord, form: FormState, status: StatusCode) -> Response {
    let hint = |m: CertMode| match m {
        CertMode::Letsencrypt => {
            " Trusted by every browser. Needs the domain's DNS pointing here and ports 80 or 443 reachable from the internet."
        }
        CertMode::LetsencryptStaging => {
            " Same checks as Let's Encrypt, but browsers warn: for trying the setup out."
        }
        CertMode::SelfSigned => " Works offline; browsers warn until you trust it yourself.",
        CertMode::Upload => " A certificate from your own CA or another provider (below).",
    };
    render(
        status,
        &SetupDomainPage {
            l: layout("Domain and certificate"),
            steps: steps(3),
            csrf: s.csrf_token.clone(),
            form,
            modes: CertMode::ALL
                .iter()
                .map(|m| (m.as_str(), m.label(), hint(*m)))
                .collect(),
            acme_override: st.app.acme_directory_override(),
        },
    )
}

pub(crate) async fn domain_get(
    State(st): State<AppState>,
    SetupSession(s): SetupSession,
) -> Response {
    if let Some(r) = require_before(&st, &s, "domain") {
        return r;
    }
    let v = st.app.setup_draft_view(&s).unwrap_or_default();
    let had_email = v.email.is_some();
    let mut form = FormState::with_values(
        [
            v.domain.map(|d| ("domain", d)),
            v.email.map(|e| ("email", e)),
            v.cert_mode.map(|m| ("cert_mode", m.to_owned())),
        ]
        .into_iter()
        .flatten(),
    );
    if form.value("cert_mode").is_empty() {
        form.values.insert("cert_mode".into(), "letsencrypt".into());
    }
    if had_email {
        form.values.insert("accept_terms".into(), "on".into());
    }
    domain_page(&st, &s, form, StatusCode::OK)
}

/// Reads a multipart form into text fields; a non-empty `*_file` upload replaces the pasted
/// text of its field (`chain_file` -> `chain_pem`).
pub(crate) async fn multipart_fields(
    mut mp: Multipart,
) -> Result<HashMap<String, String>, SupError> {
    const MAX_FIELD: usize = 256 * 1024;
    let bad = |m: String| SupError::Invalid(m);
    let mut fields = HashMap::new();
    let mut files = HashMap::new();
    while let Some(field) = mp
        .next_field()
        .await
        .map_err(|e| bad(format!("the form could not be read: {e}")))?
    {
        let name = field.name().unwrap_or_default().to_owned();
        let bytes = field
            .bytes()
            .await
            .map_err(|e| bad(format!("the form could not be read: {e}")))?;
        if bytes.len() > MAX_FIELD {
            return Err(bad(format!(
                "`{name}` is larger than {} KiB",
                MAX_FIELD / 1024
            )));
        }
        let text = String::from_utf8(bytes.to_vec())
            .map_err(|_| bad(format!("`{name}` is not text (PEM files are text)")))?;
        if let Some(base) = name.strip_suffix("_file") {
            if !text.trim().is_empty() {
                files.insert(format!("{base}_pem"), text);
            }
        } else {
            fields.insert(name, text);
        }
    }
    fields.extend(files);
    Ok(fields)
}

pub(crate) async fn domain_post(
    State(st): State<AppState>,
    SetupSession(s): SetupSession,
    mp: Multipart,
) -> Response {
    let mut f = match multipart_fields(mp).await {
        Ok(f) => f,
        Err(e) => {
            return domain_page(
                &st,
                &s,
                FormState::default().error_from(&e),
                StatusCode::BAD_REQUEST,
            );
        }
    };
    if !st
        .app
        .auth()
        .csrf_ok(&s, f.get("_csrf").map(String::as_str))
    {
        return csrf_refused();
    }
    let take = |f: &mut HashMap<String, String>, k: &str| f.remove(k).unwrap_or_default();
    let input = ChatInput {
        domain: take(&mut f, "domain"),
        cert_mode: take(&mut f, "cert_mode"),
        email: take(&mut f, "email"),
        accept_terms: matches!(
            f.get("accept_terms").map(String::as_str),
            Some("on" | "true")
        ),
        chain_pem: take(&mut f, "chain_pem"),
        key_pem: Secret::new(take(&mut f, "key_pem")),
    };
    let mut values = FormState::with_values([
        ("domain", input.domain.clone()),
        ("cert_mode", input.cert_mode.clone()),
        ("email", input.email.clone()),
        ("chain_pem", input.chain_pem.clone()),
    ]);
    if input.accept_terms {
        values.values.insert("accept_terms".into(), "on".into());
    }
    let app = st.app.clone();
    let sess = s.clone();
    match blocking(move || app.setup_chat(&sess, &input)).await {
        Ok(()) => Redirect::to("/setup/rocketchat").into_response(),
        Err(e) => domain_page(&st, &s, values.error_from(&e), crate::error::status_of(&e)),
    }
}

fn chat_admin_page(s: &SessionRecord, form: FormState, status: StatusCode) -> Response {
    render(
        status,
        &SetupChatAdminPage {
            l: layout("Rocket.Chat administrator"),
            steps: steps(4),
            csrf: s.csrf_token.clone(),
            form,
            min_len: password::MIN_LEN,
        },
    )
}

pub(crate) async fn chat_admin_get(
    State(st): State<AppState>,
    SetupSession(s): SetupSession,
) -> Response {
    if let Some(r) = require_before(&st, &s, "rocketchat") {
        return r;
    }
    let v = st.app.setup_draft_view(&s).unwrap_or_default();
    let form = FormState::with_values(
        [
            v.chat_admin_name.map(|x| ("name", x)),
            v.chat_admin_username.map(|x| ("username", x)),
            v.chat_admin_email.map(|x| ("email", x)),
        ]
        .into_iter()
        .flatten(),
    );
    chat_admin_page(&s, form, StatusCode::OK)
}

#[derive(Deserialize)]
pub(crate) struct ChatAdminForm {
    #[serde(default, rename = "_csrf")]
    csrf: String,
    #[serde(flatten)]
    input: ChatAdminInput,
}

pub(crate) async fn chat_admin_post(
    State(st): State<AppState>,
    SetupSession(s): SetupSession,
    Form(f): Form<ChatAdminForm>,
) -> Response {
    if !st.app.auth().csrf_ok(&s, Some(&f.csrf)) {
        return csrf_refused();
    }
    let values = FormState::with_values([
        ("name", f.input.name.clone()),
        ("username", f.input.username.clone()),
        ("email", f.input.email.clone()),
    ]);
    let app = st.app.clone();
    let sess = s.clone();
    match blocking(move || app.setup_chat_admin(&sess, &f.input)).await {
        Ok(()) => Redirect::to("/setup/summary").into_response(),
        Err(e) => chat_admin_page(&s, values.error_from(&e), crate::error::status_of(&e)),
    }
}

pub(crate) async fn summary_get(
    State(st): State<AppState>,
    SetupSession(s): SetupSession,
) -> Response {
    if let Some(r) = require_before(&st, &s, "summary") {
        return r;
    }
    match st.app.setup_summary(&s) {
        Ok(summary) => render(
            StatusCode::OK,
            &SetupSummaryPage {
                l: layout("Summary"),
                steps: steps(5),
                csrf: s.csrf_token.clone(),
                s: summary,
            },
        ),
        Err(e) => page_error(&e, "/setup"),
    }
}

#[derive(Deserialize)]
pub(crate) struct CsrfForm {
    #[serde(default, rename = "_csrf")]
    pub(crate) csrf: String,
}

/// `POST /setup/finish`: completes setup, signs the administrator in, shows the progress.
pub(crate) async fn finish_post(
    State(st): State<AppState>,
    headers: HeaderMap,
    SetupSession(s): SetupSession,
    Form(f): Form<CsrfForm>,
) -> Response {
    if !st.app.auth().csrf_ok(&s, Some(&f.csrf)) {
        return csrf_refused();
    }
    let app = st.app.clone();
    match blocking(move || app.setup_finish(&s)).await {
        Ok(session) => {
            let mut resp = to_admin(&st, &headers, "/setup/progress");
            resp.headers_mut().append(
                header::SET_COOKIE,
                set_cookie(
                    SESSION_COOKIE,
                    session.token.expose(),
                    Some(session.max_age(st.app.now())),
                ),
            );
            resp
        }
        Err(e) => page_error(&e, "/setup/summary"),
    }
}

/// `GET /setup/progress` (admin side, signed in).
pub(crate) async fn progress_get(
    State(st): State<AppState>,
    headers: HeaderMap,
    u: Result<HtmlUser, Response>,
) -> Response {
    if st.side == Side::App {
        return to_admin(&st, &headers, "/setup/progress");
    }
    if let Err(r) = u {
        return r;
    }
    let p = st.app.install_progress().borrow().clone();
    render(
        StatusCode::OK,
        &ProgressPage {
            l: layout("Installing"),
            p,
        },
    )
}

/// `GET /setup/progress/events`: the progress as server-sent events (`event: progress`, JSON).
pub(crate) async fn progress_events(
    State(st): State<AppState>,
    _u: HtmlUser,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let cancel = st.cancel.clone();
    let stream = WatchStream::new(st.app.install_progress())
        .map(|p| {
            Ok(Event::default()
                .event("progress")
                .json_data(&p)
                .unwrap_or_else(|_| Event::default().comment("unserialisable")))
        })
        .take_until(async move { cancel.cancelled().await });
    Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
}
