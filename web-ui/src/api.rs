//! The JSON API under `/api/v1/` (documented in `docs/api.md`). Every handler calls the same
//! [`gantry_supervisor::appliance::Appliance`] method as the HTML page doing the same thing.
//! Authentication: a bearer API token, or the session cookie plus `X-CSRF-Token` on
//! state-changing methods (see [`crate::web::ApiUser`]).

use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use axum::{Json, Router, routing};
use gantry_supervisor::auth::{AuthError, Secret};
use gantry_supervisor::external::ExternalRouteInput;
use gantry_supervisor::setup::SetupRequest;
use http::{HeaderMap, StatusCode, header};
use serde::Deserialize;
use serde_json::json;

use crate::error::{ApiError, api_error};
use crate::web::{
    ApiUser, AppState, ClientIp, MaybeSession, SESSION_COOKIE, blocking, clear_cookie, set_cookie,
};

type ApiResult = Result<Response, ApiError>;

/// A JSON body, or a 400 with the parser's message.
fn body<T>(b: Result<Json<T>, JsonRejection>) -> Result<T, Response> {
    b.map(|Json(v)| v)
        .map_err(|e| api_error(StatusCode::BAD_REQUEST, "bad_request", &e.body_text()))
}

fn ok(v: impl serde::Serialize) -> ApiResult {
    Ok(Json(v).into_response())
}

pub(crate) fn router() -> Router<AppState> {
    use routing::{delete, get, post, put};
    Router::new()
        .route("/setup", get(setup_state).post(setup_all))
        .route("/setup/progress", get(setup_progress))
        .route(
            "/session",
            get(session_get).post(session_create).delete(session_delete),
        )
        .route("/password", put(password_change))
        .route("/dashboard", get(dashboard))
        .route("/domains", get(domains).post(domain_add))
        .route("/domains/{name}", delete(domain_remove))
        .route("/certificates", get(certificates).post(certificate_upload))
        .route("/certificates/{domain}/renew", post(certificate_renew))
        .route("/routes", get(routes))
        .route(
            "/external-routes",
            get(external_routes).post(external_route_add),
        )
        .route("/external-routes/{id}", delete(external_route_remove))
        .route("/events", get(events))
        .route("/settings", get(settings))
        .route("/settings/acme", put(settings_acme))
        .route("/tokens", get(tokens).post(token_create))
        .route("/tokens/{id}", delete(token_revoke))
        .fallback(|| async {
            api_error(StatusCode::NOT_FOUND, "not_found", "no such API endpoint")
        })
}

async fn setup_state(State(st): State<AppState>) -> ApiResult {
    ok(json!({"pending": st.app.setup_pending()}))
}

async fn setup_all(
    State(st): State<AppState>,
    ClientIp(ip): ClientIp,
    b: Result<Json<SetupRequest>, JsonRejection>,
) -> Result<Response, Response> {
    let req = body(b)?;
    let app = st.app.clone();
    let user = blocking(move || app.setup_all(&req, ip))
        .await
        .map_err(|e| ApiError(e).into_response())?;
    Ok((
        StatusCode::CREATED,
        Json(json!({"username": user.username, "progress": "/api/v1/setup/progress"})),
    )
        .into_response())
}

async fn setup_progress(State(st): State<AppState>, _u: ApiUser) -> ApiResult {
    let p = st.app.install_progress().borrow().clone();
    ok(p)
}

async fn session_get(u: ApiUser) -> ApiResult {
    ok(json!({
        "username": u.user.username,
        "csrf_token": u.session.as_ref().map(|s| s.csrf_token.clone()),
        "expires_at": u.session.as_ref().map(|s| s.expires_at),
    }))
}

#[derive(Deserialize)]
struct SignIn {
    username: String,
    password: Secret,
}

async fn session_create(
    State(st): State<AppState>,
    ClientIp(ip): ClientIp,
    MaybeSession(old): MaybeSession,
    b: Result<Json<SignIn>, JsonRejection>,
) -> Result<Response, Response> {
    let f = body(b)?;
    let app = st.app.clone();
    let s = blocking(move || app.auth().sign_in(&f.username, f.password.expose(), ip))
        .await
        .map_err(|e| ApiError(e).into_response())?;
    if let Some(old) = old {
        let _ = st.app.auth().sign_out(&old);
    }
    let mut resp = Json(json!({
        "username": s.session.user.as_ref().map(|u| u.username.clone()),
        "csrf_token": s.session.csrf_token,
        "expires_at": s.session.expires_at,
    }))
    .into_response();
    resp.headers_mut().append(
        header::SET_COOKIE,
        set_cookie(
            SESSION_COOKIE,
            s.token.expose(),
            Some(s.max_age(st.app.now())),
        ),
    );
    Ok(resp)
}

async fn session_delete(State(st): State<AppState>, u: ApiUser) -> ApiResult {
    let s = u.session.ok_or(AuthError::NotSignedIn)?;
    st.app.auth().sign_out(&s)?;
    let mut resp = StatusCode::NO_CONTENT.into_response();
    resp.headers_mut()
        .append(header::SET_COOKIE, clear_cookie(SESSION_COOKIE));
    Ok(resp)
}

#[derive(Deserialize)]
struct PasswordChange {
    current_password: Secret,
    new_password: Secret,
}

async fn password_change(
    State(st): State<AppState>,
    ClientIp(ip): ClientIp,
    headers: HeaderMap,
    u: ApiUser,
    b: Result<Json<PasswordChange>, JsonRejection>,
) -> Result<Response, Response> {
    let f = body(b)?;
    let app = st.app.clone();
    // A bearer caller has no session; the change still ends every session of the user.
    let session = match u.session.clone() {
        Some(s) => s,
        None => {
            let app = app.clone();
            let user = u.user.clone();
            let s = blocking(move || app.auth().session_for(&user))
                .await
                .map_err(|e| ApiError(e).into_response())?;
            s.session
        }
    };
    let fresh = blocking(move || {
        app.auth().change_password(
            &session,
            f.current_password.expose(),
            f.new_password.expose(),
            ip,
        )
    })
    .await
    .map_err(|e| ApiError(e).into_response())?;
    let mut resp =
        Json(json!({"csrf_token": u.session.as_ref().map(|_| fresh.session.csrf_token.clone())}))
            .into_response();
    if u.session.is_some() && crate::web::cookie(&headers, SESSION_COOKIE).is_some() {
        resp.headers_mut().append(
            header::SET_COOKIE,
            set_cookie(
                SESSION_COOKIE,
                fresh.token.expose(),
                Some(fresh.max_age(st.app.now())),
            ),
        );
    } else {
        let _ = st.app.auth().sign_out(&fresh.session);
    }
    Ok(resp)
}

async fn dashboard(State(st): State<AppState>, _u: ApiUser) -> ApiResult {
    let app = st.app.clone();
    ok(blocking(move || app.dashboard()).await?)
}

async fn domains(State(st): State<AppState>, _u: ApiUser) -> ApiResult {
    ok(st.app.domains()?)
}

#[derive(Deserialize)]
struct DomainAdd {
    domain: String,
}

async fn domain_add(
    State(st): State<AppState>,
    _u: ApiUser,
    b: Result<Json<DomainAdd>, JsonRejection>,
) -> Result<Response, Response> {
    let f = body(b)?;
    let d = st
        .app
        .add_domain(&f.domain)
        .map_err(|e| ApiError(e).into_response())?;
    Ok((StatusCode::ACCEPTED, Json(d)).into_response())
}

async fn domain_remove(
    State(st): State<AppState>,
    _u: ApiUser,
    Path(name): Path<String>,
) -> ApiResult {
    st.app.remove_domain(&name)?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn certificates(State(st): State<AppState>, _u: ApiUser) -> ApiResult {
    ok(st.app.certificates()?)
}

#[derive(Deserialize)]
struct Upload {
    domain: String,
    chain_pem: String,
    key_pem: Secret,
}

async fn certificate_upload(
    State(st): State<AppState>,
    _u: ApiUser,
    b: Result<Json<Upload>, JsonRejection>,
) -> Result<Response, Response> {
    let f = body(b)?;
    let app = st.app.clone();
    let c = blocking(move || app.upload_certificate(&f.domain, &f.chain_pem, f.key_pem.expose()))
        .await
        .map_err(|e| ApiError(e).into_response())?;
    Ok((StatusCode::CREATED, Json(c)).into_response())
}

async fn certificate_renew(
    State(st): State<AppState>,
    _u: ApiUser,
    Path(domain): Path<String>,
) -> ApiResult {
    st.app.renew(&domain)?;
    Ok((StatusCode::ACCEPTED, Json(json!({"renewing": domain}))).into_response())
}

async fn routes(State(st): State<AppState>, _u: ApiUser) -> ApiResult {
    ok(st.app.routes())
}

async fn external_routes(State(st): State<AppState>, _u: ApiUser) -> ApiResult {
    ok(st.app.external_routes()?)
}

async fn external_route_add(
    State(st): State<AppState>,
    _u: ApiUser,
    b: Result<Json<ExternalRouteInput>, JsonRejection>,
) -> Result<Response, Response> {
    let f = body(b)?;
    let app = st.app.clone();
    // May generate a self-signed certificate for the host: off the async workers.
    let r = blocking(move || app.add_external_route(&f))
        .await
        .map_err(|e| ApiError(e).into_response())?;
    Ok((StatusCode::CREATED, Json(r)).into_response())
}

async fn external_route_remove(
    State(st): State<AppState>,
    _u: ApiUser,
    Path(id): Path<i64>,
) -> ApiResult {
    st.app.remove_external_route(id)?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[derive(Deserialize)]
struct Limit {
    limit: Option<u32>,
}

async fn events(State(st): State<AppState>, _u: ApiUser, Query(q): Query<Limit>) -> ApiResult {
    ok(st.app.events(q.limit.unwrap_or(100).min(1000))?)
}

async fn settings(State(st): State<AppState>, u: ApiUser) -> ApiResult {
    ok(st.app.settings(&u.user)?)
}

#[derive(Deserialize)]
struct Email {
    email: String,
}

async fn settings_acme(
    State(st): State<AppState>,
    _u: ApiUser,
    b: Result<Json<Email>, JsonRejection>,
) -> Result<Response, Response> {
    let f = body(b)?;
    st.app
        .set_acme_email(&f.email)
        .map_err(|e| ApiError(e).into_response())?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn tokens(State(st): State<AppState>, u: ApiUser) -> ApiResult {
    ok(st.app.api_tokens(&u.user)?)
}

#[derive(Deserialize)]
struct TokenName {
    name: String,
}

async fn token_create(
    State(st): State<AppState>,
    u: ApiUser,
    b: Result<Json<TokenName>, JsonRejection>,
) -> Result<Response, Response> {
    let f = body(b)?;
    let (token, rec) = st
        .app
        .auth()
        .create_api_token(&u.user, &f.name)
        .map_err(|e| ApiError(e).into_response())?;
    Ok((
        StatusCode::CREATED,
        Json(
            json!({"id": rec.id, "name": rec.name, "prefix": rec.prefix, "token": token.expose()}),
        ),
    )
        .into_response())
}

async fn token_revoke(State(st): State<AppState>, u: ApiUser, Path(id): Path<i64>) -> ApiResult {
    if st.app.auth().revoke_api_token(&u.user, id)? {
        Ok(StatusCode::NO_CONTENT.into_response())
    } else {
        Ok(api_error(
            StatusCode::NOT_FOUND,
            "not_found",
            "no such token",
        ))
    }
}
