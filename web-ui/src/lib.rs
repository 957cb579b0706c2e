//! The browser side of the appliance: the setup wizard, sign-in, the admin pages (Dashboard,
//! Domains, Certificates, Routes, Events, Settings) and the JSON API under `/api/v1/`.
//!
//! It owns HTML (askama templates compiled in), the embedded stylesheet and the one small script
//! (live install progress), the axum handlers, cookies, CSRF checks and security headers. It
//! must not talk to k3s, SQLite or the proxy directly: every read and change goes through
//! [`gantry_supervisor::appliance::Appliance`], and the HTML and JSON handlers of one action
//! call the same method.
//!
//! Two routers, each served on its own loopback listener behind the proxy (which terminates TLS
//! with the managed certificates and sets `X-Real-Ip`):
//!
//! ```text
//! admin entrypoint (:8443, TLS) -> proxy -> admin_router: wizard until setup completes, then
//!                                           sign-in, pages, /api/v1/
//! app entrypoints (:443, TLS)   -> proxy -> app_router: wizard until setup completes, then a
//! (:80 redirects to :443)                   placeholder below the cluster's routes
//! ```
//!
//! The admin pages exist only on the admin router, so no app-side route can reach them.

#![cfg_attr(test, allow(clippy::unwrap_used))]
// Handlers return `Result<_, Response>` (axum's own idiom): the error is the response itself.
#![allow(clippy::result_large_err)]

mod api;
mod error;
mod pages;
mod views;
mod web;
mod wizard;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use gantry_supervisor::appliance::Appliance;
use http::{HeaderValue, StatusCode, header};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use error::Error;
use web::{AppState, Side};

const CSS: &str = include_str!("../static/app.css");
const PROGRESS_JS: &str = include_str!("../static/progress.js");

fn asset(content_type: &'static str, body: &'static str) -> Response {
    let mut r = body.into_response();
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=3600"),
    );
    r
}

fn static_routes() -> Router<AppState> {
    Router::new()
        .route(
            "/static/app.css",
            get(|| async { asset("text/css; charset=utf-8", CSS) }),
        )
        .route(
            "/static/progress.js",
            get(|| async { asset("text/javascript; charset=utf-8", PROGRESS_JS) }),
        )
        .route(
            "/favicon.ico",
            get(|| async { StatusCode::NO_CONTENT.into_response() }),
        )
}

fn wizard_routes() -> Router<AppState> {
    Router::new()
        .route("/setup", get(wizard::token_page).post(wizard::token_submit))
        .route(
            "/setup/admin",
            get(wizard::admin_get).post(wizard::admin_post),
        )
        .route(
            "/setup/domain",
            get(wizard::domain_get).post(wizard::domain_post),
        )
        .route(
            "/setup/rocketchat",
            get(wizard::chat_admin_get).post(wizard::chat_admin_post),
        )
        .route("/setup/summary", get(wizard::summary_get))
        .route("/setup/finish", post(wizard::finish_post))
        .route("/setup/progress", get(wizard::progress_get))
}

fn finish(router: Router<AppState>, state: AppState) -> Router {
    router
        .fallback(pages::not_found)
        // Uploads are PEM text: 1 MiB is plenty.
        .layer(DefaultBodyLimit::max(1024 * 1024))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            web::origin_check,
        ))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            web::security_headers,
        ))
        .with_state(state)
}

/// The admin entrypoint's application.
pub fn admin_router(app: Arc<Appliance>, cancel: CancellationToken) -> Router {
    let state = AppState {
        app,
        side: Side::Admin,
        cancel,
    };
    let r = Router::new()
        .route("/", get(pages::dashboard))
        .route(
            "/sign-in",
            get(pages::sign_in_get).post(pages::sign_in_post),
        )
        .route("/sign-out", post(pages::sign_out))
        .route("/setup/progress/events", get(wizard::progress_events))
        .route("/domains", get(pages::domains_get).post(pages::domains_add))
        .route("/domains/{name}/remove", post(pages::domains_remove))
        .route("/certificates", get(pages::certificates_get))
        .route("/certificates/upload", post(pages::certificates_upload))
        .route(
            "/certificates/{domain}/renew",
            post(pages::certificates_renew),
        )
        .route("/routes", get(pages::routes_get))
        .route("/routes/external", post(pages::routes_external_add))
        .route(
            "/routes/external/{id}/remove",
            post(pages::routes_external_remove),
        )
        .route("/events", get(pages::events_get))
        .route("/settings", get(pages::settings_get))
        .route("/settings/password", post(pages::settings_password))
        .route("/settings/acme", post(pages::settings_acme))
        .route("/settings/tokens", post(pages::settings_token_create))
        .route(
            "/settings/tokens/{id}/revoke",
            post(pages::settings_token_revoke),
        )
        .nest("/api/v1", api::router())
        .merge(wizard_routes())
        .merge(static_routes());
    finish(r, state)
}

/// The app entrypoints' application: the wizard before setup, a placeholder after.
pub fn app_router(app: Arc<Appliance>, cancel: CancellationToken) -> Router {
    let state = AppState {
        app,
        side: Side::App,
        cancel,
    };
    let r = Router::new()
        .route("/", get(pages::app_root))
        .merge(wizard_routes())
        .merge(static_routes());
    finish(r, state)
}

/// Serves `router` on `listener` until `cancel` fires (open server-sent event streams end
/// then too).
pub async fn serve(
    listener: TcpListener,
    router: Router,
    cancel: CancellationToken,
) -> Result<(), Error> {
    axum::serve(
        listener,
        router.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(async move { cancel.cancelled().await })
    .await?;
    Ok(())
}
