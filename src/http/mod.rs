//! The HTTP layer: the router, its middleware, and thin handlers that call
//! into the service modules. Errors are mapped in [`error`] only.

pub mod auth;
pub mod error;
pub mod extract;
pub mod health;
pub mod media;
pub mod originals;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::StatusCode;
use axum::middleware;
use axum::routing::get;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::TraceLayer;

use crate::state::AppState;

/// Largest JSON request body.
pub const MAX_JSON_BODY: usize = 1024 * 1024;

/// The service's router, ready to serve (tests drive it in process).
pub fn app(state: AppState) -> Router {
    let timeout = state.config.http.request_timeout;
    let public = Router::new()
        .route("/health", get(health::health))
        .route("/ready", get(health::ready))
        .route("/originals/{profile}/{image_id}", get(originals::get_original))
        .layer(TimeoutLayer::with_status_code(StatusCode::SERVICE_UNAVAILABLE, timeout));
    Router::new()
        .merge(public)
        .fallback(error::not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(MAX_JSON_BODY))
        .layer(CatchPanicLayer::new())
        .layer(middleware::from_fn(error::json_errors))
        .layer(TraceLayer::new_for_http())
        .with_state(state)
}

async fn method_not_allowed() -> error::ApiError {
    error::ApiError::MethodNotAllowed
}
