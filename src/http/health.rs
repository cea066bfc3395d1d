//! `/health` (the process runs) and `/ready` (the store answers, not draining).

use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use super::error::ErrorBody;
use crate::state::AppState;

/// `/health` answer.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Health {
    /// Always `OK`.
    pub message: &'static str,
}

/// `/ready` answer.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Ready {
    /// Always `ready`.
    pub status: &'static str,
    /// The backend: `fs` or `s3`.
    pub storage: &'static str,
}

/// `GET /health`: 200 while the process runs.
#[utoipa::path(get, path = "/health", tag = "operations",
    responses((status = 200, description = "The process runs", body = Health)))]
pub async fn health() -> Json<Health> {
    Json(Health { message: "OK" })
}

/// `GET /ready`: 200 when the store answers, 503 when it does not or while draining.
#[utoipa::path(get, path = "/ready", tag = "operations", responses(
    (status = 200, description = "The store answers", body = Ready),
    (status = 503, description = "The store does not answer, or the service is draining", body = ErrorBody),
))]
pub async fn ready(State(state): State<AppState>) -> Response {
    let unavailable = |message: String| {
        let body = ErrorBody { code: "not_ready", message, hint: None };
        (StatusCode::SERVICE_UNAVAILABLE, [("retry-after", "5")], Json(body)).into_response()
    };
    if state.lifecycle.is_draining() {
        return unavailable("shutting down".into());
    }
    match tokio::time::timeout(Duration::from_secs(3), state.store.check()).await {
        Ok(Ok(())) => Json(Ready { status: "ready", storage: state.store.name() }).into_response(),
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "readiness check failed");
            unavailable("storage unavailable".into())
        }
        Err(_) => unavailable("storage did not answer in time".into()),
    }
}
