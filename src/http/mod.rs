//! The HTTP layer: the router, its middleware, and thin handlers that call
//! into the service modules. Errors are mapped in [`error`] only.

pub mod auth;
pub mod body;
pub mod error;
pub mod extract;
pub mod fs_upload;
pub mod health;
pub mod linger;
pub mod media;
pub mod observe;
pub mod openapi;
pub mod originals;
pub mod profiles;
pub mod thumbs;
pub mod uploads;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::handler::Handler;
use axum::http::StatusCode;
use axum::middleware;
use axum::routing::{delete, get, post, put};
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::cors::{AllowOrigin, CorsLayer};
use tower_http::timeout::TimeoutLayer;

use crate::state::AppState;

/// Largest JSON request body.
pub const MAX_JSON_BODY: usize = 1024 * 1024;

/// The service's router, ready to serve (tests drive it in process).
pub fn app(state: AppState) -> Router {
    crate::metrics::handle();
    let timeout = state.config.http.request_timeout;
    let with_key = middleware::from_fn_with_state(state.clone(), auth::require_api_key);
    let api = Router::new()
        .route("/health", get(health::health))
        .route("/ready", get(health::ready))
        .route("/metrics", get(observe::metrics))
        .route("/openapi.json", get(openapi::openapi_json))
        .route("/originals/{profile}/{image_id}", get(originals::get_original))
        .route(
            "/thumb/{profile}/{image_id}",
            get(thumbs::get_thumb).post(thumbs::post_thumb.layer(DefaultBodyLimit::disable()).layer(with_key.clone())),
        )
        .route("/v1/profiles", get(profiles::list_profiles))
        .route("/v1/uploads/presign", post(uploads::presign).route_layer(with_key.clone()))
        // The upload's token authorises these (checked in the handlers), or the API key.
        .route("/v1/uploads/presign/parts", post(uploads::presign_parts))
        .route("/v1/uploads/{*tail}", get(uploads::list_parts).post(uploads::complete).delete(uploads::abort))
        .route("/v1/assets/{profile}/{key_base}", delete(uploads::delete_asset).route_layer(with_key))
        .layer(TimeoutLayer::with_status_code(StatusCode::SERVICE_UNAVAILABLE, timeout));
    // Upload bodies may take long; they are bounded by an idle timeout instead.
    let upload = Router::new().route("/_upload/{*key}", put(fs_upload::receive));
    Router::new()
        .merge(api)
        .merge(upload)
        .fallback(error::not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(MAX_JSON_BODY))
        .layer(CatchPanicLayer::new())
        .layer(cors(&state.config.http.cors_origins))
        .layer(middleware::from_fn(body::close_unread))
        .layer(middleware::from_fn(observe::observe))
        .with_state(state)
}

/// CORS for browsers: direct uploads to the filesystem backend's URLs, the
/// complete/abort URLs a browser holds, and media reads. Auth is by header,
/// never by cookie, so credentials are not allowed.
fn cors(origins: &[String]) -> CorsLayer {
    use axum::http::{HeaderName, Method, header};
    let origin = if origins.is_empty() {
        AllowOrigin::any()
    } else {
        AllowOrigin::list(origins.iter().filter_map(|o| o.parse().ok()))
    };
    CorsLayer::new()
        .allow_origin(origin)
        .allow_methods([Method::GET, Method::HEAD, Method::PUT, Method::POST, Method::DELETE])
        .allow_headers([
            header::CONTENT_TYPE,
            header::IF_NONE_MATCH,
            header::AUTHORIZATION,
            header::RANGE,
            HeaderName::from_static("x-api-key"),
            HeaderName::from_static("x-upload-token"),
        ])
        .expose_headers([header::ETAG, header::CONTENT_RANGE, header::CONTENT_LENGTH, header::ACCEPT_RANGES])
        .max_age(std::time::Duration::from_secs(3600))
}

async fn method_not_allowed() -> error::ApiError {
    error::ApiError::MethodNotAllowed(None)
}
