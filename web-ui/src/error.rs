//! Errors: the crate's own (serving), and how the supervisor's errors reach a client: an HTTP
//! status and a message safe to show. Internal failures (database, I/O) are logged whole and
//! shown as a generic sentence.

use axum::Json;
use axum::response::{IntoResponse, Response};
use gantry_supervisor::Error as SupError;
use gantry_supervisor::auth::AuthError;
use http::{HeaderValue, StatusCode, header};

/// Errors of the web UI's public API.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("web UI server: {0}")]
    Serve(#[from] std::io::Error),
}

/// The HTTP status for a supervisor error.
pub(crate) fn status_of(e: &SupError) -> StatusCode {
    match e {
        SupError::Auth(a) => match a {
            AuthError::BadCredentials | AuthError::NotSignedIn => StatusCode::UNAUTHORIZED,
            AuthError::Throttled { .. } => StatusCode::TOO_MANY_REQUESTS,
            AuthError::BadSetupToken | AuthError::Csrf | AuthError::WrongCurrentPassword => {
                StatusCode::FORBIDDEN
            }
            AuthError::SetupDone | AuthError::SetupPending => StatusCode::CONFLICT,
        },
        SupError::Field { .. } | SupError::Import(_) => StatusCode::UNPROCESSABLE_ENTITY,
        SupError::Invalid(_) => StatusCode::BAD_REQUEST,
        SupError::UnknownDomain(_) | SupError::UnknownRoute(_) => StatusCode::NOT_FOUND,
        SupError::Throttled { .. } => StatusCode::TOO_MANY_REQUESTS,
        SupError::NoChallenge(_) => StatusCode::CONFLICT,
        SupError::Acme(_) => StatusCode::BAD_GATEWAY,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// The message the client sees. Server-side failures are logged here with their whole chain.
pub(crate) fn public_message(e: &SupError) -> String {
    if status_of(e).is_server_error() && !matches!(e, SupError::Acme(_)) {
        tracing::error!(error = %e, "request failed");
        "internal error: see the gantry log for details".to_owned()
    } else {
        e.to_string()
    }
}

fn code_of(e: &SupError) -> &'static str {
    match e {
        SupError::Auth(a) => match a {
            AuthError::BadCredentials => "bad_credentials",
            AuthError::Throttled { .. } => "throttled",
            AuthError::BadSetupToken => "bad_setup_token",
            AuthError::SetupDone => "setup_done",
            AuthError::SetupPending => "setup_pending",
            AuthError::NotSignedIn => "not_signed_in",
            AuthError::WrongCurrentPassword => "wrong_password",
            AuthError::Csrf => "csrf",
        },
        SupError::Field { .. } => "invalid_field",
        SupError::Import(_) => "certificate_rejected",
        SupError::Invalid(_) => "invalid",
        SupError::UnknownDomain(_) | SupError::UnknownRoute(_) => "not_found",
        SupError::Throttled { .. } => "acme_throttled",
        SupError::NoChallenge(_) => "no_challenge",
        SupError::Acme(_) => "acme",
        _ => "internal",
    }
}

fn retry_after(e: &SupError) -> Option<i64> {
    match e {
        SupError::Auth(AuthError::Throttled { retry_after, .. }) => Some(*retry_after),
        _ => None,
    }
}

/// A supervisor error as a JSON API response:
/// `{"error": {"code": "...", "message": "...", "field": "..."}}`.
#[derive(Debug)]
pub(crate) struct ApiError(pub SupError);

impl From<SupError> for ApiError {
    fn from(e: SupError) -> ApiError {
        ApiError(e)
    }
}

impl From<AuthError> for ApiError {
    fn from(e: AuthError) -> ApiError {
        ApiError(e.into())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let e = &self.0;
        let mut body = serde_json::json!({
            "error": {"code": code_of(e), "message": public_message(e)}
        });
        if let SupError::Field { field, .. } = e {
            body["error"]["field"] = serde_json::Value::String((*field).to_owned());
        }
        let mut resp = (status_of(e), Json(body)).into_response();
        if let Some(s) = retry_after(e)
            && let Ok(v) = HeaderValue::from_str(&s.to_string())
        {
            resp.headers_mut().insert(header::RETRY_AFTER, v);
        }
        resp
    }
}

/// A plain API error with its own status and code (malformed requests).
pub(crate) fn api_error(status: StatusCode, code: &str, message: &str) -> Response {
    (
        status,
        Json(serde_json::json!({"error": {"code": code, "message": message}})),
    )
        .into_response()
}
