//! The hit path: `GET|HEAD /thumb/{profile}/{image_id}` for a variant that
//! is in memory, answered before the router and its middleware.
//!
//! A hit is most of what a thumbnail service serves, and on it the router's
//! per-request work (route matching and the boxed clones of every layer, the
//! timeout's timer, the extractors) costs as much as the answer itself
//! (bench/README.md, "Hits"). So the hit path reads the URL itself, asks the
//! memory cache only, and answers with the same headers the router would
//! give: the handler's ([`super::thumbs::answer`]), the CORS layer's, the
//! request id, the request metrics and the log event. Anything else (a miss,
//! an error, a body, an unusual URL) goes down the router as before, so the
//! long way stays the one definition of every error; `tests/api/thumbs.rs`
//! checks that a hit and a miss answer with the same headers.
//!
//! The CORS headers are the `tower_http` layer's own, but worked out once
//! at start-up ([`CorsAnswers`]) rather than per request: running the layer
//! on every hit cloned its configuration and built its `Vary` value and a
//! header map, work whose result never changes (bench/README.md, "Round
//! four": 1.00–1.05× on hits, within this machine's noise).

use std::borrow::Cow;
use std::convert::Infallible;
use std::future::ready;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use axum::extract::Request;
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, Uri, header};
use axum::response::Response;
use bytes::Bytes;
use futures::FutureExt;
use percent_encoding::percent_decode_str;
use tower::{Layer, Service};
use tower_http::cors::CorsLayer;

use super::observe;
use super::paths;
use super::thumbs::{ThumbAsk, ThumbQuery, answer};
use crate::state::AppState;

/// The headers the CORS layer adds to a thumbnail's answer, worked out at
/// start-up by running the layer itself on a request from each origin the
/// configuration lists and on one without an origin.
///
/// That is all there is to know: the layer built by [`super::cors`] allows
/// any origin or a fixed list, without credentials or predicates, so for a
/// GET or HEAD its headers depend on the `Origin` only, and only on whether
/// it is listed. An origin not listed gets what no origin gets.
#[derive(Debug)]
struct CorsAnswers {
    /// For no origin, or one not listed.
    default: Vec<(HeaderName, HeaderValue)>,
    /// For each listed origin.
    listed: Vec<(HeaderValue, Vec<(HeaderName, HeaderValue)>)>,
}

impl CorsAnswers {
    fn new(layer: &CorsLayer, origins: &[HeaderValue]) -> Self {
        let run = |origin: Option<&HeaderValue>| {
            let mut req = axum::http::Request::get("/thumb/p/i");
            if let Some(origin) = origin {
                req = req.header(header::ORIGIN, origin);
            }
            let req = req.body(()).expect("a plain GET is a valid request");
            let pass = tower::service_fn(|_| ready(Ok::<_, Infallible>(Response::new(()))));
            let answered = layer.layer(pass).call(req).now_or_never();
            let Some(Ok(response)) = answered else { unreachable!("the CORS layer answers a GET at once") };
            response.headers().iter().map(|(k, v)| (k.clone(), v.clone())).collect()
        };
        let listed = origins.iter().map(|o| (o.clone(), run(Some(o)))).collect();
        Self { default: run(None), listed }
    }

    /// Adds the layer's headers for `origin` to `headers`, as the layer
    /// does: `Vary` appended, the others set.
    fn apply(&self, origin: Option<&HeaderValue>, headers: &mut HeaderMap) {
        let set = origin
            .and_then(|o| self.listed.iter().find(|(listed, _)| listed == o))
            .map_or(&self.default, |(_, set)| set);
        headers.reserve(set.len());
        for (name, value) in set {
            if name == header::VARY {
                headers.append(name, value.clone());
            } else {
                headers.insert(name, value.clone());
            }
        }
    }
}

/// The hit path's state: the app state, the CORS layer's headers, and the
/// request metrics registered once.
pub struct Hits {
    state: AppState,
    cors: CorsAnswers,
    /// `mediaflow_http_requests_total` for GET 200, GET 304, HEAD 200, HEAD 304.
    requests: [metrics::Counter; 4],
    /// `mediaflow_http_request_duration_seconds` for GET and HEAD.
    durations: [metrics::Histogram; 2],
    /// Requests answered here (tests check that a hit took this path).
    answered: AtomicU64,
}

impl std::fmt::Debug for Hits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hits").finish_non_exhaustive()
    }
}

/// The query of a thumbnail URL read as the handler's `ThumbQuery`
/// extractor reads it; `None` for one it would refuse (a repeated
/// parameter): the router answers that one.
fn parse_query(query: &str) -> Option<ThumbQuery> {
    let mut q = ThumbQuery::default();
    for (name, value) in form_urlencoded::parse(query.as_bytes()) {
        let slot = match &*name {
            "width" => &mut q.width,
            "height" => &mut q.height,
            "fit" => &mut q.fit,
            "gravity" => &mut q.gravity,
            "format" => &mut q.format,
            "quality" => &mut q.quality,
            "shard" => &mut q.shard,
            "sig" => &mut q.sig,
            _ => continue,
        };
        if slot.replace(value.into_owned()).is_some() {
            return None;
        }
    }
    Some(q)
}

/// `{profile}` and `{image_id}` of `/thumb/{profile}/{image_id}`,
/// percent-decoded as the router's path extractor does.
fn thumb_path(path: &str) -> Option<(Cow<'_, str>, Cow<'_, str>)> {
    let (profile, image_id) = path.strip_prefix("/thumb/")?.split_once('/')?;
    if profile.is_empty() || image_id.is_empty() || image_id.contains('/') {
        return None;
    }
    Some((percent_decode_str(profile).decode_utf8().ok()?, percent_decode_str(image_id).decode_utf8().ok()?))
}

impl Hits {
    /// The hit path of the app built on `state` with `cors`, the CORS layer
    /// the router has, and `origins`, the ones it lists (none for any).
    pub fn new(state: AppState, cors: &CorsLayer, origins: &[HeaderValue]) -> Self {
        crate::metrics::handle();
        let route = paths::THUMB;
        let counter = |method: &'static str, status: &'static str| metrics::counter!("mediaflow_http_requests_total", "method" => method, "route" => route, "status" => status);
        let histogram = |method: &'static str| metrics::histogram!("mediaflow_http_request_duration_seconds", "method" => method, "route" => route);
        Self {
            cors: CorsAnswers::new(cors, origins),
            state,
            requests: [counter("GET", "200"), counter("GET", "304"), counter("HEAD", "200"), counter("HEAD", "304")],
            durations: [histogram("GET"), histogram("HEAD")],
            answered: AtomicU64::new(0),
        }
    }

    /// Requests answered on the hit path since start-up.
    pub fn answered(&self) -> u64 {
        self.answered.load(Ordering::Relaxed)
    }

    /// Whether `req` can be a hit at all: a GET or HEAD of a thumbnail URL
    /// without a body. Decided without awaiting, so everything else goes
    /// straight to the router.
    pub fn candidate(req: &Request) -> bool {
        use http_body::Body as _;
        (req.method() == Method::GET || req.method() == Method::HEAD)
            && req.uri().path().starts_with("/thumb/")
            && req.body().is_end_stream()
    }

    /// The answer to `req` if it asks for a variant in memory; otherwise
    /// `req` back, for the router.
    pub async fn answer(&self, req: Request) -> Result<Response, Request> {
        let started = Instant::now();
        let Some(mut response) = self.lookup(req.method(), req.uri(), req.headers()).await else { return Err(req) };
        let head = req.method() == Method::HEAD;
        // Moved into the header, not copied: the log event reads it back.
        let id = HeaderValue::from_maybe_shared(Bytes::from(observe::request_id(&req)));
        if let Ok(v) = &id {
            response.headers_mut().insert(observe::REQUEST_ID, v.clone());
        }
        self.cors.apply(req.headers().get(header::ORIGIN), response.headers_mut());
        let elapsed = started.elapsed();
        let status = response.status().as_u16();
        let not_modified = usize::from(status == 304);
        self.requests[usize::from(head) * 2 + not_modified].increment(1);
        self.durations[usize::from(head)].record(elapsed.as_secs_f64());
        self.answered.fetch_add(1, Ordering::Relaxed);
        let id = id.as_ref().ok().and_then(|v| v.to_str().ok()).unwrap_or_default();
        observe::log_request(id, if head { "HEAD" } else { "GET" }, paths::THUMB, status, elapsed);
        Ok(response)
    }

    // The request's parts, not the request: its body is not `Sync`, and this
    // future must be `Send`.
    async fn lookup(&self, method: &Method, uri: &Uri, headers: &HeaderMap) -> Option<Response> {
        let (profile, image_id) = thumb_path(uri.path())?;
        let q = parse_query(uri.query().unwrap_or(""))?;
        let ask = ThumbAsk::new(&profile, &image_id, &q, uri, headers);
        let (asset, variant_req) = ask.resolve(&self.state).ok()?;
        let variant = self.state.thumbs.cached(&asset, &variant_req).await?;
        Some(answer(&self.state, &asset, &variant_req, &variant, method == Method::HEAD, headers))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_read_as_the_router_reads_them() {
        let (p, id) = thumb_path("/thumb/photo/a%20b.jpg").unwrap();
        assert_eq!((&*p, &*id), ("photo", "a b.jpg"));
        for other in ["/thumb/photo", "/thumb//x", "/thumb/photo/", "/thumb/photo/a/b", "/thumb/p/%ff", "/thumbs/p/x"] {
            assert!(thumb_path(other).is_none(), "{other}");
        }
    }

    #[test]
    fn a_repeated_parameter_goes_to_the_router() {
        let q = parse_query("width=256&format=webp&x=1&sig=abc").unwrap();
        assert_eq!(q.width.as_deref(), Some("256"));
        assert_eq!(q.sig.as_deref(), Some("abc"));
        assert!(parse_query("width=256&width=512").is_none());
        assert_eq!(parse_query("quality=8%30").unwrap().quality.as_deref(), Some("80"));
        assert_eq!(parse_query("").unwrap().width, None);
    }
}
