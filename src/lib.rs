//! MediaFlow: presigned uploads straight to object storage, originals served
//! with ranges, image thumbnails and video posters made on demand and stored
//! once, video proxies made in the background, assets described for layout.
//!
//! # Layout
//!
//! - [`config`]: environment settings and YAML profiles, parsed and validated once.
//! - [`storage`]: the [`storage::ObjectStore`] trait, its `fs` and `s3` backends,
//!   typed object keys ([`storage::keys`]) and the fs backend's URL signing.
//! - [`assets`]: an asset named by a URL (`profile`, `image_id`, `shard`) resolved
//!   to the keys of its original and variants.
//! - [`library`]: whole assets: deletion, replacement of an original (POST /thumb),
//!   descriptions (dimensions, placeholder, a video's facts) stored per version.
//! - [`thumbs`]: the thumbnail service: variants looked up in memory, then the store,
//!   then rendered (single-flight, limiter, memory budget, timeout); video posters;
//!   signed URLs.
//! - [`image`]: the image pipeline (sniff, decode, resize, encode), pure and synchronous.
//! - [`media_type`]: the media types MediaFlow knows, one sniffer, one "allowed" rule.
//! - [`http`]: the router, middleware, thin handlers and the one error type.
//! - [`metrics`]: Prometheus metrics, rendered at `/metrics`.
//! - [`server`]: the accept loop with timeouts and graceful drain.
//! - [`shutdown`]: signals, draining and background work.
//! - [`state`]: what every request shares.
//! - [`uploads`]: presign, multipart batches, resume, completion with verification
//!   ([`uploads::complete`]), the claims that serialise completes ([`uploads::claim`]), and the upload token.
//! - [`video`]: ffmpeg as a sandboxed child (probes, poster frames, proxies) and
//!   the proxy jobs coordinated through the store.
//! - [`startup`]: wiring config to store to router, and `run`.
//! - [`client`]: the upload client behind `mediaflow upload` (presign, parallel
//!   parts with retries, resume file, progress), callable as [`client::upload`].

pub mod assets;
pub mod client;
pub mod config;
pub mod http;
pub mod image;
pub mod library;
pub mod media_type;
pub mod metrics;
pub mod server;
pub mod shutdown;
pub mod startup;
pub mod state;
pub mod storage;
pub mod thumbs;
pub mod uploads;
pub mod video;

pub use http::app;
pub use startup::run;
