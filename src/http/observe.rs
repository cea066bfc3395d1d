//! The one middleware around every request: a request id (taken from
//! `x-request-id` or made), a tracing span named by the matched route, one
//! structured event with method, route, status and duration, the request
//! metrics, and the JSON shape for errors the layers below produce.

use std::time::Instant;

use axum::extract::{MatchedPath, Request};
use axum::http::HeaderValue;
use axum::middleware::Next;
use axum::response::Response;
use tracing::Instrument;

/// The request id header, read and returned.
pub const REQUEST_ID: &str = "x-request-id";

/// A client-supplied id is kept when it is short printable ASCII (it ends up
/// in logs); otherwise a fresh one is made.
pub(super) fn request_id(req: &Request) -> String {
    req.headers()
        .get(REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= 128 && v.bytes().all(|b| b.is_ascii_graphic()))
        .map(str::to_owned)
        .unwrap_or_else(|| hex::encode(rand::random::<[u8; 12]>()))
}

/// A static label for a method (no allocation on the hot path).
fn method_label(method: &axum::http::Method) -> &'static str {
    use axum::http::Method;
    match *method {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::OPTIONS => "OPTIONS",
        Method::PATCH => "PATCH",
        _ => "OTHER",
    }
}

/// A static label for a status code.
fn status_label(status: u16) -> metrics::SharedString {
    const COMMON: &[(u16, &str)] = &[
        (200, "200"),
        (201, "201"),
        (204, "204"),
        (206, "206"),
        (304, "304"),
        (400, "400"),
        (401, "401"),
        (403, "403"),
        (404, "404"),
        (405, "405"),
        (409, "409"),
        (412, "412"),
        (413, "413"),
        (415, "415"),
        (416, "416"),
        (422, "422"),
        (500, "500"),
        (502, "502"),
        (503, "503"),
    ];
    match COMMON.iter().find(|(code, _)| *code == status) {
        Some((_, label)) => metrics::SharedString::const_str(label),
        None => metrics::SharedString::from(status.to_string()),
    }
}

/// The middleware.
pub async fn observe(req: Request, next: Next) -> Response {
    let started = Instant::now();
    let id = request_id(&req);
    let method = req.method().clone();
    // The route template, not the path: bounded label values, no ids in metrics.
    let route = req.extensions().get::<MatchedPath>().map_or("unmatched", |p| p.as_str()).to_owned();
    let span = tracing::info_span!("request", request_id = %id, method = %method, route = %route);
    let mut response = super::error::json_error_shape(next.run(req).instrument(span.clone()).await);
    let elapsed = started.elapsed();
    let status = response.status().as_u16();
    if let Ok(v) = HeaderValue::from_str(&id) {
        response.headers_mut().insert(REQUEST_ID, v);
    }
    let method = method_label(&method);
    let status_label = status_label(status);
    metrics::counter!(
        "mediaflow_http_requests_total",
        "method" => method,
        "route" => route.clone(),
        "status" => status_label
    )
    .increment(1);
    metrics::histogram!("mediaflow_http_request_duration_seconds", "method" => method, "route" => route)
        .record(elapsed.as_secs_f64());
    let _enter = span.enter();
    let duration_ms = elapsed.as_secs_f64() * 1000.0;
    if status >= 500 {
        tracing::warn!(status, duration_ms, "request");
    } else {
        tracing::info!(status, duration_ms, "request");
    }
    response
}

/// The span and event of a request answered outside the middleware (the
/// hit path, `super::hits`), as [`observe`] logs them.
pub(super) fn log_request(id: &str, method: &'static str, route: &str, status: u16, elapsed: std::time::Duration) {
    let span = tracing::info_span!("request", request_id = %id, method = %method, route = %route);
    let _enter = span.enter();
    tracing::info!(status, duration_ms = elapsed.as_secs_f64() * 1000.0, "request");
}

/// `GET /metrics`: Prometheus text format.
#[utoipa::path(get, path = "/metrics", tag = "operations",
    responses((status = 200, description = "Prometheus text exposition", body = String, content_type = "text/plain")))]
pub async fn metrics(
    axum::extract::State(state): axum::extract::State<crate::state::AppState>,
) -> ([(axum::http::header::HeaderName, &'static str); 1], String) {
    let body = crate::metrics::render(state.thumbs.cache_usage(), state.thumbs.limiter().queue_depth());
    ([(axum::http::header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], body)
}
