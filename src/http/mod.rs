//! The HTTP layer: the router, its middleware, and thin handlers that call
//! into the service modules. Errors are mapped in [`error`] only.

pub mod assets;
pub mod auth;
pub mod body;
pub mod error;
pub mod extract;
pub mod fs_upload;
pub mod health;
pub mod hits;
pub mod linger;
pub mod media;
pub mod observe;
pub mod openapi;
pub mod originals;
pub mod profiles;
pub mod proxy;
pub mod thumbs;
pub mod uploads;
pub mod wire;

use std::convert::Infallible;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::extract::Request;
use axum::handler::Handler;
use axum::http::{HeaderValue, StatusCode};
use axum::middleware;
use axum::response::Response;
use axum::routing::{get, post, put};
use futures::future::BoxFuture;
use tower::Service;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::cors::{AllowOrigin, CorsLayer};
use tower_http::timeout::TimeoutLayer;

use crate::state::AppState;

/// Route paths, declared once: the router is built from them, and the URLs
/// the service hands out that point at itself are built from them.
pub mod paths {
    /// `GET /health`.
    pub const HEALTH: &str = "/health";
    /// `GET /ready`.
    pub const READY: &str = "/ready";
    /// `GET /metrics`.
    pub const METRICS: &str = "/metrics";
    /// `GET /openapi.json`.
    pub const OPENAPI: &str = "/openapi.json";
    /// `GET|HEAD /originals/…`.
    pub const ORIGINAL: &str = "/originals/{profile}/{image_id}";
    /// `GET|HEAD|POST /thumb/…`.
    pub const THUMB: &str = "/thumb/{profile}/{image_id}";
    /// `GET|HEAD /proxy/…`.
    pub const PROXY: &str = "/proxy/{profile}/{image_id}";
    /// `GET /v1/profiles`.
    pub const PROFILES: &str = "/v1/profiles";
    /// `POST /v1/uploads/presign`.
    pub const PRESIGN: &str = "/v1/uploads/presign";
    /// `POST /v1/uploads/presign/parts`.
    pub const PRESIGN_PARTS: &str = "/v1/uploads/presign/parts";
    /// Everything under `/v1/uploads/` but the two above: `{object_key}/{action}/{upload_id}`.
    pub const UPLOAD_ACTIONS: &str = "/v1/uploads/{*tail}";
    /// The prefix of [`UPLOAD_ACTIONS`].
    pub const UPLOADS_BASE: &str = "/v1/uploads";
    /// `GET|DELETE /v1/assets/…` (DELETE with the API key).
    pub const ASSET: &str = "/v1/assets/{profile}/{key_base}";
    /// The actions on an upload (the middle segment of [`UPLOAD_ACTIONS`]).
    pub const PARTS: &str = "parts";
    /// See [`PARTS`].
    pub const COMPLETE: &str = "complete";
    /// See [`PARTS`].
    pub const ABORT: &str = "abort";

    /// The URL of an action on an upload, carrying its token (so a browser
    /// holding it needs no API key): the object key percent-encoded as one
    /// segment.
    pub fn upload_action_url(base_url: &str, object_key: &str, action: &str, upload_id: &str, token: &str) -> String {
        use crate::storage::signing::encode_component;
        format!(
            "{base_url}{UPLOADS_BASE}/{}/{action}/{}?token={token}",
            encode_component(object_key),
            encode_component(upload_id)
        )
    }
}

/// Largest JSON request body.
pub const MAX_JSON_BODY: usize = 1024 * 1024;

/// The service: the hit path ([`hits`]) in front of the router. Cheap to
/// clone (one per connection).
///
/// It is both a tower service (tests drive it in process) and a hyper one
/// (the server's): hyper calls it by reference, so a hit costs one
/// reference count, and the router is cloned only for a request it answers.
#[derive(Clone, Debug)]
pub struct App(Arc<AppParts>);

#[derive(Debug)]
struct AppParts {
    router: Router,
    hits: hits::Hits,
}

impl App {
    /// Requests this app answered on the hit path.
    pub fn hits_answered(&self) -> u64 {
        self.0.hits.answered()
    }

    fn respond(&self, req: Request) -> BoxFuture<'static, Result<Response, Infallible>> {
        if !hits::Hits::candidate(&req) {
            return Box::pin(self.0.router.clone().call(req));
        }
        let app = Arc::clone(&self.0);
        Box::pin(async move {
            match app.hits.answer(req).await {
                Ok(hit) => Ok(hit),
                Err(req) => app.router.clone().call(req).await,
            }
        })
    }
}

impl Service<Request> for App {
    type Response = Response;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<Response, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request) -> Self::Future {
        self.respond(req)
    }
}

impl hyper::service::Service<hyper::Request<hyper::body::Incoming>> for App {
    type Response = Response;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<Response, Infallible>>;

    fn call(&self, req: hyper::Request<hyper::body::Incoming>) -> Self::Future {
        self.respond(req.map(axum::body::Body::new))
    }
}

/// The service, ready to serve (tests drive it in process).
pub fn app(state: AppState) -> App {
    let origins = allowed_origins(&state.config.http.cors_origins);
    let cors = cors(origins.as_deref());
    let hits = hits::Hits::new(state.clone(), &cors, origins.as_deref().unwrap_or_default());
    App(Arc::new(AppParts { hits, router: routes(state, cors) }))
}

/// The router and its middleware alone, without the hit path in front: what
/// answers every request but a hit (tests compare the two).
pub fn router(state: AppState) -> Router {
    let cors = cors(allowed_origins(&state.config.http.cors_origins).as_deref());
    routes(state, cors)
}

fn routes(state: AppState, cors: CorsLayer) -> Router {
    crate::metrics::handle();
    let timeout = state.config.http.request_timeout;
    let with_key = middleware::from_fn_with_state(state.clone(), auth::require_api_key);
    let api = Router::new()
        .route(paths::HEALTH, get(health::health))
        .route(paths::READY, get(health::ready))
        .route(paths::METRICS, get(observe::metrics))
        .route(paths::OPENAPI, get(openapi::openapi_json))
        .route(paths::ORIGINAL, get(originals::get_original))
        .route(
            paths::THUMB,
            get(thumbs::get_thumb).post(thumbs::post_thumb.layer(DefaultBodyLimit::disable()).layer(with_key.clone())),
        )
        .route(paths::PROXY, get(proxy::get_proxy))
        .route(paths::PROFILES, get(profiles::list_profiles))
        .route(paths::PRESIGN, post(uploads::presign).route_layer(with_key.clone()))
        // The upload's token authorises these (checked in the handlers), or the API key.
        .route(paths::PRESIGN_PARTS, post(uploads::presign_parts))
        .route(paths::UPLOAD_ACTIONS, get(uploads::list_parts).post(uploads::complete).delete(uploads::abort))
        .route(paths::ASSET, get(assets::get_asset).delete(uploads::delete_asset.layer(with_key)))
        .layer(TimeoutLayer::with_status_code(StatusCode::SERVICE_UNAVAILABLE, timeout));
    // Upload bodies may take long; they are bounded by an idle timeout instead.
    let upload_route = format!("{}/{{*key}}", crate::storage::signing::UPLOAD_ROUTE_PREFIX);
    let upload = Router::new().route(&upload_route, put(fs_upload::receive));
    Router::new()
        .merge(api)
        .merge(upload)
        .fallback(error::not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(MAX_JSON_BODY))
        .layer(CatchPanicLayer::new())
        .layer(cors)
        .layer(middleware::from_fn(body::close_unread))
        .layer(middleware::from_fn(observe::observe))
        .with_state(state)
}

/// CORS for browsers: direct uploads to the filesystem backend's URLs, the
/// complete/abort URLs a browser holds, and media reads. Auth is by header,
/// never by cookie, so credentials are not allowed. `None` allows any
/// origin.
///
/// The hit path works this layer's headers out once at start-up
/// (`hits::CorsAnswers`), which holds while they depend on the `Origin`
/// alone: any origin or a list, no credentials, no predicate.
fn cors(origins: Option<&[HeaderValue]>) -> CorsLayer {
    use axum::http::{HeaderName, Method, header};
    let origin = match origins {
        None => AllowOrigin::any(),
        Some(list) => AllowOrigin::list(list.iter().cloned()),
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

/// `CORS_ALLOWED_ORIGINS` read once for the CORS layer and the hit path:
/// `None` (any origin) when none is configured, else the ones that are valid
/// header values.
fn allowed_origins(origins: &[String]) -> Option<Vec<HeaderValue>> {
    (!origins.is_empty()).then(|| origins.iter().filter_map(|o| HeaderValue::from_str(o).ok()).collect())
}

async fn method_not_allowed() -> error::ApiError {
    error::ApiError::MethodNotAllowed(None)
}
