//! The admin UI's pages after setup: sign-in and sign-out, Dashboard, Domains, Certificates,
//! Routes, Events, Settings; and the app side's placeholder. Plain forms, POST-redirect-GET with
//! a fixed notice code on success, the form shown again with its error on failure.

use axum::Form;
use axum::extract::{Multipart, Path, Query, State};
use axum::response::{IntoResponse, Redirect, Response};
use gantry_supervisor::Error as SupError;
use gantry_supervisor::auth::{Secret, password};
use gantry_supervisor::external::ExternalRouteInput;
use http::{HeaderMap, StatusCode, header};
use serde::Deserialize;

use crate::views::{
    AppPlaceholderPage, CertificatesPage, DashboardPage, DomainsPage, EventsPage, FormState,
    Layout, Nav, Notice, RoutesPage, SettingsPage, SignInPage,
};
use crate::web::{
    AppState, ClientIp, HtmlUser, MaybeSession, PRE_COOKIE, SESSION_COOKIE, blocking,
    check_form_csrf, check_pre_csrf, clear_cookie, host_of, hostname, page_error, pre_csrf, render,
    set_cookie,
};
use crate::wizard::{CsrfForm, multipart_fields};

/// `?ok=CODE` after a successful action: a fixed message (nothing from the URL is echoed).
#[derive(Debug, Default, Deserialize)]
pub(crate) struct Flash {
    ok: Option<String>,
}

impl Flash {
    fn notice(&self) -> Option<Notice> {
        let text = match self.ok.as_deref()? {
            "domain-added" => "Domain added: its certificate is being ordered.",
            "domain-removed" => "Domain removed.",
            "renew-started" => "Renewal started: the new certificate appears here when issued.",
            "cert-uploaded" => "Certificate uploaded and in use.",
            "password-changed" => "Password changed. Your other sessions were signed out.",
            "acme-saved" => "ACME email saved.",
            "token-revoked" => "API token revoked.",
            "route-added" => "Route added: the proxy sends the host to the service now.",
            "route-removed" => "Route removed. Its host stays under Domains, with its certificate.",
            "signed-out" => "Signed out.",
            _ => return None,
        };
        Some(Notice {
            kind: "ok",
            text: text.to_owned(),
        })
    }
}

fn layout(title: &str, active: &str, u: &HtmlUser) -> Layout {
    Layout::new(title).nav(Nav::new(active, &u.user.username, &u.session.csrf_token))
}

// --- sign-in ---

fn sign_in_page(
    headers: &HeaderMap,
    status: StatusCode,
    username: String,
    error: Option<String>,
    notice: Option<Notice>,
) -> Response {
    let (csrf, cookie) = pre_csrf(headers);
    let mut resp = render(
        status,
        &SignInPage {
            l: Layout::new("Sign in").narrow().notice(notice),
            csrf,
            username,
            error,
        },
    );
    if let Some(c) = cookie {
        resp.headers_mut().append(header::SET_COOKIE, c);
    }
    resp
}

pub(crate) async fn sign_in_get(
    State(st): State<AppState>,
    headers: HeaderMap,
    MaybeSession(s): MaybeSession,
    Query(flash): Query<Flash>,
) -> Response {
    if st.app.setup_pending() {
        return Redirect::to("/setup").into_response();
    }
    if s.is_some_and(|s| s.user.is_some()) {
        return Redirect::to("/").into_response();
    }
    sign_in_page(
        &headers,
        StatusCode::OK,
        String::new(),
        None,
        flash.notice(),
    )
}

#[derive(Deserialize)]
pub(crate) struct SignInForm {
    #[serde(default, rename = "_csrf")]
    csrf: String,
    #[serde(default)]
    username: String,
    #[serde(default)]
    password: Secret,
}

pub(crate) async fn sign_in_post(
    State(st): State<AppState>,
    ClientIp(ip): ClientIp,
    headers: HeaderMap,
    MaybeSession(old): MaybeSession,
    Form(f): Form<SignInForm>,
) -> Response {
    if st.app.setup_pending() {
        return Redirect::to("/setup").into_response();
    }
    if let Err(e) = check_pre_csrf(&headers, &f.csrf) {
        return sign_in_page(
            &headers,
            StatusCode::FORBIDDEN,
            f.username,
            Some(e.to_string()),
            None,
        );
    }
    let app = st.app.clone();
    let username = f.username.clone();
    match blocking(move || app.auth().sign_in(&username, f.password.expose(), ip)).await {
        Ok(s) => {
            // A new session id at every sign-in; the previous session (if any) ends.
            if let Some(old) = old {
                let _ = st.app.auth().sign_out(&old);
            }
            let mut resp = Redirect::to("/").into_response();
            let h = resp.headers_mut();
            h.append(
                header::SET_COOKIE,
                set_cookie(
                    SESSION_COOKIE,
                    s.token.expose(),
                    Some(s.max_age(st.app.now())),
                ),
            );
            h.append(header::SET_COOKIE, clear_cookie(PRE_COOKIE));
            resp
        }
        Err(e) => {
            let status = crate::error::status_of(&e);
            let mut resp = sign_in_page(
                &headers,
                status,
                f.username,
                Some(crate::error::public_message(&e)),
                None,
            );
            if let SupError::Auth(gantry_supervisor::auth::AuthError::Throttled {
                retry_after, ..
            }) = e
                && let Ok(v) = http::HeaderValue::from_str(&retry_after.to_string())
            {
                resp.headers_mut().insert(header::RETRY_AFTER, v);
            }
            resp
        }
    }
}

pub(crate) async fn sign_out(
    State(st): State<AppState>,
    MaybeSession(s): MaybeSession,
    Form(f): Form<CsrfForm>,
) -> Response {
    let Some(s) = s else {
        return Redirect::to("/sign-in").into_response();
    };
    if let Err(e) = check_form_csrf(&st.app, &s, &f.csrf) {
        return page_error(&e, "/");
    }
    if let Err(e) = st.app.auth().sign_out(&s) {
        return page_error(&e, "/");
    }
    let mut resp = Redirect::to("/sign-in?ok=signed-out").into_response();
    resp.headers_mut()
        .append(header::SET_COOKIE, clear_cookie(SESSION_COOKIE));
    resp
}

// --- dashboard ---

pub(crate) async fn dashboard(State(st): State<AppState>, u: HtmlUser) -> Response {
    let app = st.app.clone();
    match blocking(move || app.dashboard()).await {
        Ok(dash) => render(
            StatusCode::OK,
            &DashboardPage {
                l: layout("Dashboard", "/", &u),
                dash,
            },
        ),
        Err(e) => page_error(&e, "/"),
    }
}

// --- domains ---

fn domains_page(
    st: &AppState,
    u: &HtmlUser,
    form: FormState,
    status: StatusCode,
    notice: Option<Notice>,
) -> Response {
    match st.app.domains() {
        Ok(domains) => {
            let mut l = layout("Domains", "/domains", u).notice(notice);
            // Issuance runs in the background: reload while something is in progress.
            if domains
                .iter()
                .any(|d| matches!(d.status, "issuing" | "waiting"))
            {
                l.refresh = Some(2);
            }
            render(
                status,
                &DomainsPage {
                    l,
                    csrf: u.session.csrf_token.clone(),
                    domains,
                    form,
                },
            )
        }
        Err(e) => page_error(&e, "/"),
    }
}

pub(crate) async fn domains_get(
    State(st): State<AppState>,
    u: HtmlUser,
    Query(flash): Query<Flash>,
) -> Response {
    domains_page(
        &st,
        &u,
        FormState::default(),
        StatusCode::OK,
        flash.notice(),
    )
}

#[derive(Deserialize)]
pub(crate) struct DomainForm {
    #[serde(default, rename = "_csrf")]
    csrf: String,
    #[serde(default)]
    domain: String,
}

pub(crate) async fn domains_add(
    State(st): State<AppState>,
    u: HtmlUser,
    Form(f): Form<DomainForm>,
) -> Response {
    if let Err(e) = check_form_csrf(&st.app, &u.session, &f.csrf) {
        return page_error(&e, "/domains");
    }
    match st.app.add_domain(&f.domain) {
        Ok(_) => Redirect::to("/domains?ok=domain-added").into_response(),
        Err(e) => {
            let form = FormState::with_values([("domain", f.domain)]).error_from(&e);
            domains_page(&st, &u, form, crate::error::status_of(&e), None)
        }
    }
}

pub(crate) async fn domains_remove(
    State(st): State<AppState>,
    u: HtmlUser,
    Path(name): Path<String>,
    Form(f): Form<CsrfForm>,
) -> Response {
    if let Err(e) = check_form_csrf(&st.app, &u.session, &f.csrf) {
        return page_error(&e, "/domains");
    }
    match st.app.remove_domain(&name) {
        Ok(()) => Redirect::to("/domains?ok=domain-removed").into_response(),
        Err(e) => {
            let form = FormState::default().error_from(&e);
            domains_page(&st, &u, form, crate::error::status_of(&e), None)
        }
    }
}

// --- certificates ---

fn certificates_page(
    st: &AppState,
    u: &HtmlUser,
    form: FormState,
    status: StatusCode,
    notice: Option<Notice>,
) -> Response {
    match st.app.certificates() {
        Ok(certs) => render(
            status,
            &CertificatesPage {
                l: layout("Certificates", "/certificates", u).notice(notice),
                csrf: u.session.csrf_token.clone(),
                certs,
                form,
            },
        ),
        Err(e) => page_error(&e, "/"),
    }
}

pub(crate) async fn certificates_get(
    State(st): State<AppState>,
    u: HtmlUser,
    Query(flash): Query<Flash>,
) -> Response {
    certificates_page(
        &st,
        &u,
        FormState::default(),
        StatusCode::OK,
        flash.notice(),
    )
}

pub(crate) async fn certificates_renew(
    State(st): State<AppState>,
    u: HtmlUser,
    Path(domain): Path<String>,
    Form(f): Form<CsrfForm>,
) -> Response {
    if let Err(e) = check_form_csrf(&st.app, &u.session, &f.csrf) {
        return page_error(&e, "/certificates");
    }
    match st.app.renew(&domain) {
        Ok(()) => Redirect::to("/certificates?ok=renew-started").into_response(),
        Err(e) => {
            let form = FormState::default().error_from(&e);
            certificates_page(&st, &u, form, crate::error::status_of(&e), None)
        }
    }
}

pub(crate) async fn certificates_upload(
    State(st): State<AppState>,
    u: HtmlUser,
    mp: Multipart,
) -> Response {
    let mut f = match multipart_fields(mp).await {
        Ok(f) => f,
        Err(e) => {
            return certificates_page(
                &st,
                &u,
                FormState::default().error_from(&e),
                StatusCode::BAD_REQUEST,
                None,
            );
        }
    };
    if let Err(e) = check_form_csrf(
        &st.app,
        &u.session,
        f.get("_csrf").map_or("", String::as_str),
    ) {
        return page_error(&e, "/certificates");
    }
    let domain = f.remove("domain").unwrap_or_default();
    let chain = f.remove("chain_pem").unwrap_or_default();
    let key = Secret::new(f.remove("key_pem").unwrap_or_default());
    let app = st.app.clone();
    let (d2, c2) = (domain.clone(), chain.clone());
    match blocking(move || app.upload_certificate(&d2, &c2, key.expose())).await {
        Ok(_) => Redirect::to("/certificates?ok=cert-uploaded").into_response(),
        Err(e) => {
            let form =
                FormState::with_values([("domain", domain), ("chain_pem", chain)]).error_from(&e);
            certificates_page(&st, &u, form, crate::error::status_of(&e), None)
        }
    }
}

// --- routes, events ---

fn routes_page(
    st: &AppState,
    u: &HtmlUser,
    form: FormState,
    status: StatusCode,
    notice: Option<Notice>,
) -> Response {
    match st.app.external_routes() {
        Ok(external) => render(
            status,
            &RoutesPage {
                l: layout("Routes", "/routes", u).notice(notice),
                csrf: u.session.csrf_token.clone(),
                r: st.app.routes(),
                external,
                form,
            },
        ),
        Err(e) => page_error(&e, "/"),
    }
}

pub(crate) async fn routes_get(
    State(st): State<AppState>,
    u: HtmlUser,
    Query(flash): Query<Flash>,
) -> Response {
    routes_page(
        &st,
        &u,
        FormState::default(),
        StatusCode::OK,
        flash.notice(),
    )
}

#[derive(Deserialize)]
pub(crate) struct ExternalRouteForm {
    #[serde(default, rename = "_csrf")]
    csrf: String,
    #[serde(default)]
    host: String,
    #[serde(default)]
    path_prefix: String,
    #[serde(default)]
    url: String,
}

pub(crate) async fn routes_external_add(
    State(st): State<AppState>,
    u: HtmlUser,
    Form(f): Form<ExternalRouteForm>,
) -> Response {
    if let Err(e) = check_form_csrf(&st.app, &u.session, &f.csrf) {
        return page_error(&e, "/routes");
    }
    let input = ExternalRouteInput {
        host: f.host.clone(),
        path_prefix: Some(f.path_prefix.clone()),
        url: f.url.clone(),
    };
    let app = st.app.clone();
    match blocking(move || app.add_external_route(&input)).await {
        Ok(_) => Redirect::to("/routes?ok=route-added").into_response(),
        Err(e) => {
            let form = FormState::with_values([
                ("host", f.host),
                ("path_prefix", f.path_prefix),
                ("url", f.url),
            ])
            .error_from(&e);
            routes_page(&st, &u, form, crate::error::status_of(&e), None)
        }
    }
}

pub(crate) async fn routes_external_remove(
    State(st): State<AppState>,
    u: HtmlUser,
    Path(id): Path<i64>,
    Form(f): Form<CsrfForm>,
) -> Response {
    if let Err(e) = check_form_csrf(&st.app, &u.session, &f.csrf) {
        return page_error(&e, "/routes");
    }
    match st.app.remove_external_route(id) {
        Ok(()) => Redirect::to("/routes?ok=route-removed").into_response(),
        Err(e) => {
            let form = FormState::default().error_from(&e);
            routes_page(&st, &u, form, crate::error::status_of(&e), None)
        }
    }
}

pub(crate) async fn events_get(State(st): State<AppState>, u: HtmlUser) -> Response {
    match st.app.events(500) {
        Ok(events) => render(
            StatusCode::OK,
            &EventsPage {
                l: layout("Events", "/events", &u),
                events,
            },
        ),
        Err(e) => page_error(&e, "/"),
    }
}

// --- settings ---

#[derive(Default)]
struct SettingsForms {
    pw: FormState,
    acme: FormState,
    tok: FormState,
    new_token: Option<String>,
}

fn settings_page(
    st: &AppState,
    u: &HtmlUser,
    forms: SettingsForms,
    status: StatusCode,
    notice: Option<Notice>,
) -> Response {
    let s = match st.app.settings(&u.user) {
        Ok(s) => s,
        Err(e) => return page_error(&e, "/"),
    };
    let tokens = match st.app.api_tokens(&u.user) {
        Ok(t) => t,
        Err(e) => return page_error(&e, "/"),
    };
    render(
        status,
        &SettingsPage {
            l: layout("Settings", "/settings", u).notice(notice),
            csrf: u.session.csrf_token.clone(),
            s,
            pw: forms.pw,
            acme: forms.acme,
            tok: forms.tok,
            tokens,
            new_token: forms.new_token,
            min_len: password::MIN_LEN,
        },
    )
}

pub(crate) async fn settings_get(
    State(st): State<AppState>,
    u: HtmlUser,
    Query(flash): Query<Flash>,
) -> Response {
    settings_page(
        &st,
        &u,
        SettingsForms::default(),
        StatusCode::OK,
        flash.notice(),
    )
}

#[derive(Deserialize)]
pub(crate) struct PasswordForm {
    #[serde(default, rename = "_csrf")]
    csrf: String,
    #[serde(default)]
    current_password: Secret,
    #[serde(default)]
    new_password: Secret,
}

pub(crate) async fn settings_password(
    State(st): State<AppState>,
    ClientIp(ip): ClientIp,
    u: HtmlUser,
    Form(f): Form<PasswordForm>,
) -> Response {
    if let Err(e) = check_form_csrf(&st.app, &u.session, &f.csrf) {
        return page_error(&e, "/settings");
    }
    let app = st.app.clone();
    let session = u.session.clone();
    let result = blocking(move || {
        app.auth().change_password(
            &session,
            f.current_password.expose(),
            f.new_password.expose(),
            ip,
        )
    })
    .await;
    match result {
        Ok(fresh) => {
            let mut resp = Redirect::to("/settings?ok=password-changed").into_response();
            resp.headers_mut().append(
                header::SET_COOKIE,
                set_cookie(
                    SESSION_COOKIE,
                    fresh.token.expose(),
                    Some(fresh.max_age(st.app.now())),
                ),
            );
            resp
        }
        Err(e) => {
            let mut pw = FormState::default().error_from(&e);
            if let SupError::Auth(gantry_supervisor::auth::AuthError::WrongCurrentPassword) = e {
                pw.general = None;
                pw.errors.insert("current_password".into(), e.to_string());
            }
            let forms = SettingsForms {
                pw,
                ..SettingsForms::default()
            };
            settings_page(&st, &u, forms, crate::error::status_of(&e), None)
        }
    }
}

#[derive(Deserialize)]
pub(crate) struct EmailForm {
    #[serde(default, rename = "_csrf")]
    csrf: String,
    #[serde(default)]
    email: String,
}

pub(crate) async fn settings_acme(
    State(st): State<AppState>,
    u: HtmlUser,
    Form(f): Form<EmailForm>,
) -> Response {
    if let Err(e) = check_form_csrf(&st.app, &u.session, &f.csrf) {
        return page_error(&e, "/settings");
    }
    match st.app.set_acme_email(&f.email) {
        Ok(()) => Redirect::to("/settings?ok=acme-saved").into_response(),
        Err(e) => {
            let forms = SettingsForms {
                acme: FormState::with_values([("email", f.email)]).error_from(&e),
                ..SettingsForms::default()
            };
            settings_page(&st, &u, forms, crate::error::status_of(&e), None)
        }
    }
}

#[derive(Deserialize)]
pub(crate) struct TokenNameForm {
    #[serde(default, rename = "_csrf")]
    csrf: String,
    #[serde(default)]
    name: String,
}

pub(crate) async fn settings_token_create(
    State(st): State<AppState>,
    u: HtmlUser,
    Form(f): Form<TokenNameForm>,
) -> Response {
    if let Err(e) = check_form_csrf(&st.app, &u.session, &f.csrf) {
        return page_error(&e, "/settings");
    }
    match st.app.auth().create_api_token(&u.user, &f.name) {
        // Shown once, in this response only (never in a URL or a log).
        Ok((token, _)) => {
            let forms = SettingsForms {
                new_token: Some(token.expose().to_owned()),
                ..SettingsForms::default()
            };
            settings_page(&st, &u, forms, StatusCode::OK, None)
        }
        Err(e) => {
            let forms = SettingsForms {
                tok: FormState::with_values([("name", f.name)]).error_from(&e),
                ..SettingsForms::default()
            };
            settings_page(&st, &u, forms, crate::error::status_of(&e), None)
        }
    }
}

pub(crate) async fn settings_token_revoke(
    State(st): State<AppState>,
    u: HtmlUser,
    Path(id): Path<i64>,
    Form(f): Form<CsrfForm>,
) -> Response {
    if let Err(e) = check_form_csrf(&st.app, &u.session, &f.csrf) {
        return page_error(&e, "/settings");
    }
    match st.app.auth().revoke_api_token(&u.user, id) {
        Ok(_) => Redirect::to("/settings?ok=token-revoked").into_response(),
        Err(e) => page_error(&e, "/settings"),
    }
}

// --- the app side after setup ---

pub(crate) async fn app_root(State(st): State<AppState>, headers: HeaderMap) -> Response {
    if st.app.setup_pending() {
        return Redirect::to("/setup").into_response();
    }
    let host = host_of(&headers).unwrap_or_default();
    render(
        StatusCode::SERVICE_UNAVAILABLE,
        &AppPlaceholderPage {
            l: Layout::new("Chat not running").narrow(),
            domain: hostname(&host).to_owned(),
            reason: st.app.cluster().status().message,
        },
    )
}

pub(crate) async fn not_found() -> Response {
    render(
        StatusCode::NOT_FOUND,
        &crate::views::ErrorPage {
            l: Layout::new("Not found").narrow(),
            heading: "Not found".to_owned(),
            message: "There is no page at this address.".to_owned(),
            back: "/".to_owned(),
        },
    )
}
