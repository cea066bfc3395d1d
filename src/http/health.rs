//! `/health` (the process runs) and `/ready` (the store answers, not draining).

use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::state::AppState;

/// `GET /health`: 200 while the process runs.
pub async fn health() -> Json<serde_json::Value> {
    Json(json!({"message": "OK"}))
}

/// `GET /ready`: 200 when the store answers, 503 when it does not or while draining.
pub async fn ready(State(state): State<AppState>) -> Response {
    let unavailable = |message: String| {
        let body = json!({"code": "not_ready", "message": message});
        (StatusCode::SERVICE_UNAVAILABLE, [("retry-after", "5")], Json(body)).into_response()
    };
    if state.lifecycle.is_draining() {
        return unavailable("shutting down".into());
    }
    match tokio::time::timeout(Duration::from_secs(3), state.store.check()).await {
        Ok(Ok(())) => Json(json!({"status": "ready", "storage": state.store.name()})).into_response(),
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "readiness check failed");
            unavailable("storage unavailable".into())
        }
        Err(_) => unavailable("storage did not answer in time".into()),
    }
}
