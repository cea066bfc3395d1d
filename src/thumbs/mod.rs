//! Thumbnails on demand: look up a stored variant, else make it from the
//! original, answer with it, and store it for next time.
//!
//! - Hot variants come from a bounded in-memory cache (bytes,
//!   `CACHE_MEMORY_MB`), trusted for `CACHE_MEMORY_TTL` before the store is
//!   asked again, so a delete made through another instance stops being served.
//! - Concurrent requests for one missing variant share one render
//!   (single-flight), and identical requests are coalesced before they queue.
//! - Renders run on a pool of `MAX_CONCURRENT_TRANSFORMS` threads; at most `TRANSFORM_QUEUE` wait; beyond that the answer is 503.
//! - Each render reserves its estimated peak memory from `MAX_RENDER_MEMORY_MB`
//!   before decoding (waiting while it is spent) and holds it until its work
//!   has stopped; past `TRANSFORM_TIMEOUT` it is answered 503 and cancelled.
//! - The answer does not wait for the variant's store write; shutdown does.

mod budget;
mod limiter;
mod request;
pub mod signature;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use futures::FutureExt;
use futures::future::{BoxFuture, Shared};
use md5::{Digest, Md5};

pub use budget::{OverBudget, RenderBudget, Reservation};
pub use limiter::{Limiter, Overloaded};
pub use request::{FormatChoice, ThumbParams, VariantRequest, listed_size, resolve_variant};
pub use signature::{SignatureError, UrlSignature};

use crate::assets::AssetKey;
use crate::config::Config;
use crate::image::{self, Cancel, ImageError, Limits, OutputFormat, ThumbSpec};
use crate::shutdown::Lifecycle;
use crate::storage::{ByteRange, DynStore, ObjectKey, PutOptions, StorageError};
use crate::video::{VideoError, Videos};

/// Memory for recent poster frames (PNG masters of video thumbnails).
const POSTER_CACHE_BYTES: u64 = 64 * 1024 * 1024;
/// How long a poster frame is kept for the other sizes of a burst.
const POSTER_CACHE_TTL: Duration = Duration::from_secs(120);
/// How long a decoded source is kept for the other sizes of a burst: the
/// sizes of an eager POST, a poster's sizes, a page's `srcset` of a new
/// upload arrive within a second; a workload that comes back later has the
/// variants themselves.
const DECODE_CACHE_TTL: Duration = Duration::from_secs(5);
/// Largest share of the decode cache one source may take: a huge source is
/// rendered the streaming way (box-shrunk as it is decoded) and not kept.
const DECODE_CACHE_ENTRY_SHARE: u64 = 4;
/// Most source ids remembered for DECODE_CACHE_TTL (about 100 bytes each).
const SEEN_SOURCES: u64 = 100_000;
/// Largest stored variant read back into memory.
const MAX_VARIANT_BYTES: u64 = 64 * 1024 * 1024;
/// How much of an original is read first to check its header.
const PROBE_BYTES: u64 = 256 * 1024;

/// Whether a render may keep its decoded source for the next sizes.
#[derive(Debug, Clone, Copy)]
enum Share<'a> {
    /// No: the source has no identity (a placeholder of bytes just read).
    No,
    /// Once a second size of this source (`{key}@{etag}`) is asked for
    /// within DECODE_CACHE_TTL.
    OnRepeat(&'a str),
    /// Always: the sizes of one eager POST, which all follow.
    Always(&'a str),
}

/// A thumbnail ready to serve.
#[derive(Debug, Clone)]
pub struct Variant {
    /// The encoded image.
    pub bytes: Bytes,
    /// Strong content ETag: the quoted MD5 of the bytes (what S3 reports for them).
    pub etag: String,
    /// Its MIME type.
    pub content_type: &'static str,
    /// When it was made or stored.
    pub last_modified: SystemTime,
    /// A slot the HTTP layer fills with the answer's headers on the first
    /// hit and reuses while the variant stays in memory, so a hit costs a
    /// copy of them, not their formatting. Shared by every clone; opaque
    /// here, where nothing knows HTTP.
    pub prepared: Arc<OnceLock<Box<dyn std::any::Any + Send + Sync>>>,
}

impl Variant {
    fn new(bytes: Bytes, format: OutputFormat, last_modified: SystemTime) -> Self {
        let etag = format!("\"{}\"", hex::encode(Md5::digest(&bytes)));
        Self { bytes, etag, content_type: format.mime(), last_modified, prepared: Arc::default() }
    }
}

/// What a page needs to lay out an image before loading it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placeholder {
    /// Displayed width (EXIF orientation applied).
    pub width: u32,
    /// Displayed height.
    pub height: u32,
    /// ThumbHash of the image, base64.
    pub thumbhash: String,
}

/// Why a thumbnail could not be served.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ThumbError {
    /// The original is not in the store.
    #[error("original not found")]
    OriginalNotFound,
    /// The source cannot be decoded.
    #[error("{0}")]
    Unsupported(String),
    /// The source is over a limit: pixels, side length, the output format's
    /// size, or the render memory budget.
    #[error("{message}")]
    TooLarge {
        /// What is over which limit.
        message: String,
        /// What the client can do about it.
        hint: Option<String>,
    },
    /// Too many renders waiting.
    #[error("too many thumbnails are being made; retry shortly")]
    Overloaded,
    /// The render took longer than `TRANSFORM_TIMEOUT`.
    #[error("making the thumbnail took too long")]
    TimedOut,
    /// The store failed.
    #[error("{0}")]
    Storage(String),
    /// A video poster was asked for and ffmpeg is not installed.
    #[error("{0}")]
    NotImplemented(String),
    /// The encoder failed, or the render task died.
    #[error("{0}")]
    Internal(String),
}

impl From<VideoError> for ThumbError {
    fn from(e: VideoError) -> Self {
        let message = e.to_string();
        match e {
            VideoError::NotInstalled => Self::NotImplemented(message),
            VideoError::NotAVideo(_) | VideoError::Failed(_) | VideoError::NoProxies(_) => Self::Unsupported(message),
            VideoError::TooLarge { .. } => Self::TooLarge {
                message,
                hint: Some("raise MAX_SOURCE_PIXELS to make posters of larger videos".into()),
            },
            VideoError::TimedOut(_) => Self::TimedOut,
            VideoError::Store(_) => Self::Storage(message),
            VideoError::NoOriginal => Self::OriginalNotFound,
        }
    }
}

impl From<StorageError> for ThumbError {
    fn from(e: StorageError) -> Self {
        match e {
            StorageError::NotFound => Self::OriginalNotFound,
            other => Self::Storage(other.to_string()),
        }
    }
}

impl From<ImageError> for ThumbError {
    fn from(e: ImageError) -> Self {
        match e {
            ImageError::TooLarge { .. }
            | ImageError::SideTooLong { .. }
            | ImageError::OutputTooLarge { .. }
            | ImageError::TooManyFrames { .. }
            | ImageError::AnimationTooLarge { .. } => Self::TooLarge { message: e.to_string(), hint: e.hint() },
            ImageError::Unsupported(_) | ImageError::Decode(_) => Self::Unsupported(e.to_string()),
            // Only the timeout cancels a render.
            ImageError::Cancelled => Self::TimedOut,
            ImageError::Encode(_) | ImageError::InvalidSpec(_) => Self::Internal(e.to_string()),
        }
    }
}

/// Counts a refused or abandoned render and passes the error on.
fn rejected(reason: &'static str, e: ThumbError) -> ThumbError {
    metrics::counter!("mediaflow_thumbnail_rejections_total", "reason" => reason).increment(1);
    e
}

/// The rejection reason of a render the plan refused, if it is a limit.
fn limit_reason(e: &ImageError) -> Option<&'static str> {
    match e {
        ImageError::TooLarge { .. } => Some("too_many_pixels"),
        ImageError::SideTooLong { .. } => Some("side_too_long"),
        ImageError::OutputTooLarge { .. } => Some("output_too_large"),
        ImageError::TooManyFrames { .. } => Some("too_many_frames"),
        ImageError::AnimationTooLarge { .. } => Some("animation_too_large"),
        _ => None,
    }
}

/// Raises a render's cancel flag when the wait for it ends, whichever way:
/// answered, timed out, or dropped because the request went away.
struct CancelOnDrop(Cancel);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.cancel();
    }
}

/// The answer for a render whose estimate alone is over the budget.
fn over_budget(over: OverBudget) -> ThumbError {
    let mib = |b: u64| b.div_ceil(1 << 20);
    ThumbError::TooLarge {
        message: format!(
            "making this thumbnail needs about {} MiB of memory, more than the {} MiB renders may use",
            mib(over.needed),
            mib(over.budget)
        ),
        hint: Some("ask for a smaller width, or raise MAX_RENDER_MEMORY_MB".into()),
    }
}

type Flight = Shared<BoxFuture<'static, Result<Variant, ThumbError>>>;

/// Ends flight `number` of `key` when dropped: after its variant's store
/// write, at once after a failed render, and also when its task panics or is
/// cancelled, so no flight can stay in the map and answer its key for good.
/// A flight [`Thumbs::forget`] already removed, and the newer one that took
/// its place, are left alone.
struct Landing {
    thumbs: Arc<Thumbs>,
    key: ObjectKey,
    number: u64,
}

impl Drop for Landing {
    fn drop(&mut self) {
        // Not `expect`: a panic here, during an unwind, would abort.
        let mut flights = self.thumbs.flights.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if flights.get(self.key.as_str()).is_some_and(|(n, _)| *n == self.number) {
            flights.remove(self.key.as_str());
        }
    }
}

/// The thumbnail service: cache, single-flight and bounded rendering.
pub struct Thumbs {
    store: DynStore,
    lifecycle: Lifecycle,
    cache: Option<moka::future::Cache<String, Variant>>,
    /// Renders in flight by variant key, each with a number of its own so
    /// that a flight ends only its own entry.
    flights: Mutex<HashMap<String, (u64, Flight)>>,
    flight_numbers: AtomicU64,
    limiter: Limiter,
    /// A fixed pool of MAX_CONCURRENT_TRANSFORMS threads. Not tokio's blocking
    /// pool: spread over many short-lived threads, the large decode buffers
    /// left one allocator heap per thread at its peak (tests/api/process.rs saw
    /// 500+ MB for 32 renders); a fixed pool reuses the same few heaps.
    pool: rayon::ThreadPool,
    limits: Limits,
    /// SHRINK_ON_LOAD_MARGIN, %.
    shrink_margin: u32,
    budget: RenderBudget,
    timeout: Duration,
    renders: AtomicU64,
    /// THUMB_SIGNING_KEY: URLs outside the listed sizes must be signed.
    signature: Option<UrlSignature>,
    /// Posters of videos are made by ffmpeg.
    videos: Arc<Videos>,
    /// Recent poster frames by original key and ETag.
    posters: moka::future::Cache<String, Bytes>,
    /// Recently decoded sources ([`image::Master`]) by `{source id}#{DCT
    /// scale}`, for DECODE_CACHE_TTL; `None` when DECODE_CACHE_MB is 0.
    masters: Option<moka::future::Cache<String, Arc<image::Master>>>,
    /// Largest master kept, bytes.
    master_max_bytes: u64,
    /// Sources rendered in the last DECODE_CACHE_TTL (their ids): the next
    /// size of one of them is made through a master.
    seen: moka::future::Cache<String, ()>,
    /// `mediaflow_cache_requests_total{result="hit"}`, registered once: the
    /// hit path is the hottest one.
    cache_hits: metrics::Counter,
}

impl std::fmt::Debug for Thumbs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Thumbs").field("renders", &self.renders).finish_non_exhaustive()
    }
}

impl Thumbs {
    /// A service over `store`, sized by the configuration.
    pub fn new(config: &Config, store: DynStore, lifecycle: Lifecycle, videos: Arc<Videos>) -> Self {
        let cache = (config.cache.memory_bytes > 0).then(|| {
            moka::future::Cache::builder()
                .max_capacity(config.cache.memory_bytes)
                .weigher(|k: &String, v: &Variant| (k.len() + v.bytes.len() + 128).min(u32::MAX as usize) as u32)
                .time_to_live(config.cache.memory_ttl.max(Duration::from_millis(1)))
                .support_invalidation_closures()
                .build()
        });
        let t = &config.transforms;
        crate::metrics::handle();
        Self {
            store,
            lifecycle,
            cache,
            flights: Mutex::new(HashMap::new()),
            flight_numbers: AtomicU64::new(0),
            limiter: Limiter::new(t.concurrency, t.queue),
            pool: rayon::ThreadPoolBuilder::new()
                .num_threads(t.concurrency.max(1))
                .thread_name(|i| format!("mediaflow-render-{i}"))
                // The pipeline catches its own panics; this only keeps a stray
                // one from aborting the process (rayon's default).
                .panic_handler(|_| tracing::error!("a render worker panicked"))
                .build()
                .expect("render threads can be spawned"),
            limits: Limits { max_pixels: t.max_pixels, max_frames: t.max_frames },
            shrink_margin: t.shrink_margin,
            budget: RenderBudget::new(t.max_render_memory),
            timeout: t.timeout,
            renders: AtomicU64::new(0),
            signature: config.thumb_signing_key.as_ref().map(|k| UrlSignature::new(k.expose())),
            videos,
            posters: moka::future::Cache::builder()
                .max_capacity(POSTER_CACHE_BYTES)
                .weigher(|_: &String, v: &Bytes| v.len().min(u32::MAX as usize) as u32)
                .time_to_live(POSTER_CACHE_TTL)
                .build(),
            masters: (t.decode_cache > 0).then(|| {
                moka::future::Cache::builder()
                    .max_capacity(t.decode_cache)
                    .weigher(|_: &String, m: &Arc<image::Master>| m.bytes().min(u64::from(u32::MAX)) as u32)
                    .time_to_live(DECODE_CACHE_TTL)
                    .build()
            }),
            master_max_bytes: t.decode_cache / DECODE_CACHE_ENTRY_SHARE,
            seen: moka::future::Cache::builder().max_capacity(SEEN_SOURCES).time_to_live(DECODE_CACHE_TTL).build(),
            cache_hits: metrics::counter!("mediaflow_cache_requests_total", "result" => "hit"),
        }
    }

    /// Checks a thumbnail URL's signature where one is needed: with
    /// THUMB_SIGNING_KEY set, a width (or box) outside the profile's `sizes`,
    /// or an explicit `quality`, makes a variant nobody listed, so only URLs
    /// the application signed may ask for it. The listed sizes stay public.
    pub fn check_signature(
        &self,
        req: &VariantRequest,
        profile: &crate::config::Profile,
        quality_given: bool,
        path: &str,
        query: Option<&str>,
    ) -> Result<(), SignatureError> {
        let Some(signature) = &self.signature else { return Ok(()) };
        if req.is_listed(profile) && !quality_given {
            return Ok(());
        }
        signature.verify(path, query)
    }

    /// Renders started since start-up (every one decodes an original).
    pub fn renders(&self) -> u64 {
        self.renders.load(Ordering::Relaxed)
    }

    /// The limiter (for queue-depth reporting).
    pub fn limiter(&self) -> &Limiter {
        &self.limiter
    }

    /// The render memory budget (for reporting).
    pub fn budget(&self) -> &RenderBudget {
        &self.budget
    }

    /// The variant for `req` if it is in memory, and nothing else: the hit
    /// path answers it before the router (`http::hits`); a miss goes the long
    /// way, through [`Self::get`], and counts there.
    pub async fn cached(&self, asset: &AssetKey, req: &VariantRequest) -> Option<Variant> {
        let key = asset.variant_key(&req.key).ok()?;
        self.in_memory(&key).await
    }

    /// The memory cache's entry for `key`, counted as a hit when found.
    async fn in_memory(&self, key: &ObjectKey) -> Option<Variant> {
        let hit = self.cache.as_ref()?.get(key.as_str()).await?;
        self.cache_hits.increment(1);
        Some(hit)
    }

    /// The variant for `req`: from memory, the store, or made now.
    pub async fn get(self: &Arc<Self>, asset: &AssetKey, req: &VariantRequest) -> Result<Variant, ThumbError> {
        let key = asset.variant_key(&req.key).map_err(|e| ThumbError::Internal(e.to_string()))?;
        if let Some(hit) = self.in_memory(&key).await {
            return Ok(hit);
        }
        if self.cache.is_some() {
            metrics::counter!("mediaflow_cache_requests_total", "result" => "miss").increment(1);
        }
        match self.store.get(&key, None).await {
            Ok(found) => {
                metrics::counter!("mediaflow_variant_store_hits_total").increment(1);
                let last_modified = found.meta.last_modified;
                let bytes = found.collect(MAX_VARIANT_BYTES).await?;
                let variant = Variant::new(bytes, req.format, last_modified);
                self.remember(&key, &variant).await;
                return Ok(variant);
            }
            Err(StorageError::NotFound) => {}
            Err(e) => return Err(e.into()),
        }
        self.flight(key, asset.clone(), req.spec()).await
    }

    async fn remember(&self, key: &ObjectKey, variant: &Variant) {
        if let Some(cache) = &self.cache {
            cache.insert(key.as_str().to_owned(), variant.clone()).await;
        }
    }

    /// Joins the render of `key` in flight, or starts it.
    fn flight(self: &Arc<Self>, key: ObjectKey, asset: AssetKey, spec: ThumbSpec) -> Flight {
        let (flight, number, answer) = {
            let mut flights = self.flights.lock().expect("flights lock");
            if let Some((_, existing)) = flights.get(key.as_str()) {
                return existing.clone();
            }
            let number = self.flight_numbers.fetch_add(1, Ordering::Relaxed);
            let (answer, result) = tokio::sync::oneshot::channel();
            let flight = async move {
                result
                    .await
                    .unwrap_or_else(|_| Err(ThumbError::Internal("the render task ended without an answer".into())))
            }
            .boxed()
            .shared();
            flights.insert(key.as_str().to_owned(), (number, flight.clone()));
            (flight, number, answer)
        };
        // Spawned after the lock is let go: a runtime that is shutting down
        // drops the task at once, and `landing` with it, which takes the lock.
        let landing = Landing { thumbs: Arc::clone(self), key: key.clone(), number };
        let this = Arc::clone(self);
        // Spawned, so the render finishes (and is stored) even if every client leaves.
        self.lifecycle.spawn(async move {
            let result = this.render(&key, &asset, spec).await;
            match &result {
                // The finished flight stays joinable until the variant is in
                // the store: a request that missed memory and the store just
                // before the render ended then takes this result instead of
                // rendering again.
                Ok(variant) => {
                    this.remember(&key, variant).await;
                    this.store_later(key.clone(), variant.clone(), spec.format, asset.clone(), landing);
                }
                // A failure is not kept: the flight ends before its waiters
                // hear, and the next request tries again.
                Err(_) => drop(landing),
            }
            let _ = answer.send(result);
        });
        flight
    }

    /// Writes a variant to the store in the background; shutdown waits for it.
    ///
    /// A DELETE of the original may land while the variant is being made or
    /// written; it deletes the original first and lists the variants after.
    /// So after writing, the original is looked up again: if it is gone, the
    /// delete may have listed before this write, and the variant is removed
    /// here (SPEC §3: a variant never outlives its original).
    ///
    /// The flight of `landing` ends when this does, whatever the outcome.
    fn store_later(
        self: &Arc<Self>,
        key: ObjectKey,
        variant: Variant,
        format: OutputFormat,
        asset: AssetKey,
        landing: Landing,
    ) {
        let this = Arc::clone(self);
        self.lifecycle.spawn(async move {
            let _landing = landing;
            let opts = PutOptions { content_type: Some(format.mime().to_owned()), if_none_match: false };
            if let Err(e) = this.store.put(&key, variant.bytes.into(), opts).await {
                tracing::warn!(key = %key, error = %e, "could not store a variant; it will be made again");
                return;
            }
            let original = match asset.locate_original(&*this.store).await {
                Ok(original) => this.store.head(&original).await.map(|_| ()),
                Err(e) => Err(e),
            };
            if let Err(StorageError::NotFound) = original {
                tracing::info!(key = %key, "the original was deleted while its variant was made; removing the variant");
                if let Err(e) = this.store.delete(&key).await {
                    tracing::warn!(key = %key, error = %e, "could not remove the variant of a deleted original");
                }
                this.forget(&asset);
            }
        });
    }

    /// Fetches the original and makes the variant, within the limiter.
    async fn render(&self, key: &ObjectKey, asset: &AssetKey, spec: ThumbSpec) -> Result<Variant, ThumbError> {
        let _slot = self.limiter.enter().await.map_err(|Overloaded| rejected("overloaded", ThumbError::Overloaded))?;
        let (source, id) = match asset.profile().video() {
            // A video's thumbnails are made from its poster frame, which
            // stands in for the original from here on.
            Some(video) => {
                let (poster, id) = self.poster_with_id(asset, video.poster_time).await?;
                (poster, format!("poster:{id}"))
            }
            None => {
                let original_key = asset.locate_original(&*self.store).await?;
                let limit = asset.profile().size_max_bytes.max(PROBE_BYTES);
                let (bytes, etag) = self.fetch_original(&original_key, limit).await?;
                (bytes, format!("{original_key}@{etag}"))
            }
        };
        tracing::debug!(key = %key, "making variant");
        self.transform(source, spec, Share::OnRepeat(&id)).await
    }

    /// An image asset's original, read within the profile's size limit.
    pub async fn source(&self, asset: &AssetKey) -> Result<Bytes, ThumbError> {
        let key = asset.locate_original(&*self.store).await?;
        Ok(self.fetch_original(&key, asset.profile().size_max_bytes.max(PROBE_BYTES)).await?.0)
    }

    /// The displayed size of an image and its ThumbHash placeholder
    /// (base64): a render at most 100 px on a side through the same budget,
    /// limits and timeout as any thumbnail.
    pub async fn placeholder(&self, source: Bytes) -> Result<Placeholder, ThumbError> {
        let info = image::probe(&source)?;
        let (w, h) = if info.orientation >= 5 { (info.height, info.width) } else { (info.width, info.height) };
        let width = if w >= h { w.min(100) } else { (u64::from(w) * 100 / u64::from(h)).max(1) as u32 };
        let spec = ThumbSpec::of_width(width, OutputFormat::Png, 100);
        let small = self.transform(source, spec, Share::No).await?;
        let rgba = ::image::load_from_memory(&small.bytes)
            .map_err(|e| ThumbError::Internal(format!("placeholder decode: {e}")))?
            .into_rgba8();
        let hash = thumbhash::rgba_to_thumb_hash(rgba.width() as usize, rgba.height() as usize, rgba.as_raw());
        use base64::Engine;
        Ok(Placeholder { width: w, height: h, thumbhash: base64::engine::general_purpose::STANDARD.encode(hash) })
    }

    /// A video's poster frame (a PNG), made once per original version: the
    /// sizes and formats asked for in a burst share one ffmpeg run.
    pub async fn poster(&self, asset: &AssetKey, poster_time: f64) -> Result<Bytes, ThumbError> {
        Ok(self.poster_with_id(asset, poster_time).await?.0)
    }

    /// [`Self::poster`], and the `{key}@{etag}` of the original it was taken from.
    async fn poster_with_id(&self, asset: &AssetKey, poster_time: f64) -> Result<(Bytes, String), ThumbError> {
        let original = asset.find_original(&*self.store).await?;
        let id = format!("{}@{}", original.key, original.etag);
        let videos = self.videos.clone();
        let poster = self
            .posters
            .try_get_with(id.clone(), async move { videos.poster(&original, poster_time).await.map(Bytes::from) })
            .await
            .map_err(|e: Arc<VideoError>| ThumbError::from((*e).clone()))?;
        Ok((poster, id))
    }

    /// Plans the render from the header (limits, output size, memory),
    /// reserves its memory, and runs it on the render pool — all within
    /// `TRANSFORM_TIMEOUT`. Past it, the render is cancelled: its worker
    /// stops at its next check and only then gives its memory back.
    ///
    /// `share` says whether the decoded source may be kept for a few seconds
    /// so later sizes it covers are made from it (see [`image::Master`]).
    async fn transform(&self, source: Bytes, spec: ThumbSpec, share: Share<'_>) -> Result<Variant, ThumbError> {
        let plan =
            image::plan_with_margin(&source, &spec, &self.limits, self.shrink_margin).map_err(
                |e| match limit_reason(&e) {
                    Some(reason) => rejected(reason, e.into()),
                    None => e.into(),
                },
            )?;
        if let Err(over) = self.budget.check(plan.memory.peak()) {
            return Err(rejected("over_budget", over_budget(over)));
        }
        let cancel = Cancel::new();
        let _stop = CancelOnDrop(cancel.clone());
        let started = std::time::Instant::now();
        let run = async {
            if let Some(masters) = &self.masters
                && let Some(thumb) = self.via_master(masters, share, &source, &plan, &cancel).await?
            {
                return Ok(thumb);
            }
            self.renders.fetch_add(1, Ordering::Relaxed);
            self.on_pool(plan.memory.peak(), &cancel, move |cancel| image::render(&source, &plan, cancel)).await
        };
        let outcome = tokio::time::timeout(self.timeout, run).await;
        metrics::histogram!("mediaflow_thumbnail_render_duration_seconds").record(started.elapsed().as_secs_f64());
        let result = outcome.unwrap_or_else(|_| Err(rejected("timeout", ThumbError::TimedOut)));
        let label = if result.is_ok() { "ok" } else { "error" };
        metrics::counter!("mediaflow_thumbnail_renders_total", "result" => label).increment(1);
        let thumb = result?;
        Ok(Variant::new(Bytes::from(thumb.bytes), spec.format, SystemTime::now()))
    }

    /// The thumbnail made from a decoded master: one kept from an earlier
    /// size if it covers this one, else one decoded now (once for all the
    /// requests that want it at once) and kept. `None` when the source is
    /// not worth keeping (an animation, too big a master, or the first size
    /// asked of a source in a while): it is then rendered the streaming way.
    async fn via_master(
        &self,
        masters: &moka::future::Cache<String, Arc<image::Master>>,
        share: Share<'_>,
        source: &Bytes,
        plan: &image::Plan,
        cancel: &Cancel,
    ) -> Result<Option<image::Thumbnail>, ThumbError> {
        let (id, always) = match share {
            Share::No => return Ok(None),
            Share::OnRepeat(id) => (id, false),
            Share::Always(id) => (id, true),
        };
        let Some(master_plan) = image::master_plan(plan) else { return Ok(None) };
        let g = &master_plan.geometry;
        // Any master at this scale or a larger one covers the plan.
        for scale in g.dct_scale..=8 {
            if let Some(master) = masters.get(&format!("{id}#{scale}")).await
                && let Some(from) = image::plan_from_master(&master, plan)
            {
                metrics::counter!("mediaflow_decode_cache_requests_total", "result" => "hit").increment(1);
                return self.render_from(master, from, cancel).await.map(Some);
            }
        }
        let bytes = u64::from(g.decoded.0) * u64::from(g.decoded.1) * u64::from(g.channels);
        if bytes > self.master_max_bytes || self.budget.check(master_plan.memory.peak()).is_err() {
            return Ok(None);
        }
        // Most originals are asked for in one size: a master is only made
        // once a second size of the source comes within the cache's
        // lifetime, so a load of distinct originals keeps none (measured:
        // +70–90 MB peak RSS when every first render kept its decode).
        if !always && !self.seen.contains_key(id) {
            self.seen.insert(id.to_owned(), ()).await;
            return Ok(None);
        }
        metrics::counter!("mediaflow_decode_cache_requests_total", "result" => "miss").increment(1);
        let decode = {
            let source = source.clone();
            async move {
                self.renders.fetch_add(1, Ordering::Relaxed);
                let decoded = self
                    .on_pool(master_plan.memory.peak(), cancel, move |cancel| {
                        image::decode_master(&source, &master_plan, cancel)
                    })
                    .await?;
                Ok::<_, ThumbError>(Arc::new(decoded))
            }
        };
        let master = masters
            .try_get_with(format!("{id}#{}", g.dct_scale), decode)
            .await
            .map_err(|e: Arc<ThumbError>| (*e).clone())?;
        // Keeps the cache within DECODE_CACHE_MB now rather than eventually.
        masters.run_pending_tasks().await;
        match image::plan_from_master(&master, plan) {
            Some(from) => self.render_from(master, from, cancel).await.map(Some),
            // A decoder fallback made another size than planned.
            None => Ok(None),
        }
    }

    async fn render_from(
        &self,
        master: Arc<image::Master>,
        plan: image::Plan,
        cancel: &Cancel,
    ) -> Result<image::Thumbnail, ThumbError> {
        self.on_pool(plan.memory.peak(), cancel, move |cancel| image::render_from_master(&master, &plan, cancel)).await
    }

    /// Runs `job` on the render pool once `needed` bytes of the budget are
    /// reserved. The worker finishes (or notices the cancel flag) even if
    /// the caller stops waiting; the memory stays reserved until it has,
    /// and whatever `job` holds (the source) is freed before that.
    async fn on_pool<T: Send + 'static>(
        &self,
        needed: u64,
        cancel: &Cancel,
        job: impl FnOnce(&Cancel) -> Result<T, ImageError> + Send + 'static,
    ) -> Result<T, ThumbError> {
        let reservation = self.budget.reserve(needed).await.map_err(over_budget)?;
        let (done, result) = tokio::sync::oneshot::channel();
        let cancel = cancel.clone();
        self.pool.spawn(move || {
            let outcome = job(&cancel);
            drop(reservation);
            let _ = done.send(outcome);
        });
        match result.await {
            Ok(outcome) => outcome.map_err(ThumbError::from),
            Err(_) => Err(ThumbError::Internal("the render worker died".into())),
        }
    }

    /// Reads an original, checking its header from the first bytes before
    /// reading the rest: an oversized image is refused without downloading it.
    /// Gives the bytes and their ETag.
    async fn fetch_original(&self, key: &ObjectKey, limit: u64) -> Result<(Bytes, String), ThumbError> {
        let head = self.store.get(key, Some(ByteRange::Bounded { start: 0, end: PROBE_BYTES - 1 })).await.map_err(
            |e| match e {
                // An empty object has no byte 0.
                StorageError::RangeNotSatisfiable { .. } => ThumbError::Unsupported("the original is empty".into()),
                other => other.into(),
            },
        )?;
        let size = head.meta.size;
        let etag = head.meta.etag.clone();
        let whole = head.range.is_none_or(|(_, end)| end + 1 >= size);
        let head = head.collect(PROBE_BYTES).await?;
        if let Ok(info) = image::probe(&head)
            && u64::from(info.width) * u64::from(info.height) > self.limits.max_pixels
        {
            let e = ImageError::TooLarge { width: info.width, height: info.height, max_pixels: self.limits.max_pixels };
            return Err(rejected("too_many_pixels", e.into()));
        }
        if whole {
            return Ok((head, etag));
        }
        if size > limit {
            return Err(ThumbError::TooLarge {
                message: format!("the original has {size} bytes, more than the profile allows"),
                hint: None,
            });
        }
        // The ETag of the read that gave the bytes: the object may have
        // been replaced since the first one.
        let all = self.store.get(key, None).await?;
        let etag = all.meta.etag.clone();
        Ok((all.collect(limit).await?, etag))
    }

    /// Drops every cached variant of `asset` (after a delete or a replacement).
    pub fn forget(&self, asset: &AssetKey) {
        // A finished flight waiting for its store write would hand out the
        // old variant; a new request renders (or finds no original) instead.
        self.flights.lock().expect("flights lock").retain(|k, _| !asset.owns_variant(k));
        let Some(cache) = &self.cache else { return };
        let asset = asset.clone();
        let _ = cache.invalidate_entries_if(move |k, _| asset.owns_variant(k));
    }

    /// Bytes and entries in the memory cache.
    pub fn cache_usage(&self) -> (u64, u64) {
        self.cache.as_ref().map_or((0, 0), |c| (c.weighted_size(), c.entry_count()))
    }

    /// Makes every size of a profile at its default format and quality,
    /// without storing anything: the largest first, whose decoded source
    /// then makes the others (in parallel, within the limiter) without
    /// decoding again.
    pub async fn render_all(
        self: &Arc<Self>,
        asset: &AssetKey,
        source: Bytes,
    ) -> Result<Vec<(crate::config::ThumbSize, ObjectKey, Variant)>, ThumbError> {
        static CALLS: AtomicU64 = AtomicU64::new(0);
        // This call's source has no ETag yet; its decode is shared within the call only.
        let id = format!("eager:{}", CALLS.fetch_add(1, Ordering::Relaxed));
        let profile = asset.profile();
        let mut sizes = profile.sizes.clone();
        let area = |s: &crate::config::ThumbSize| match *s {
            crate::config::ThumbSize::Width(w) => (u64::from(w), 0),
            crate::config::ThumbSize::Box { width, height } => {
                (u64::from(width.max(height)), u64::from(width.min(height)))
            }
        };
        sizes.sort_by_key(|s| std::cmp::Reverse(area(s)));
        let job = |size: crate::config::ThumbSize| {
            let this = Arc::clone(self);
            let source = source.clone();
            let req = VariantRequest::default_for(profile, size);
            let key = asset.variant_key(&req.key);
            let id = id.clone();
            async move {
                let key = key.map_err(|e| ThumbError::Internal(e.to_string()))?;
                let _slot =
                    this.limiter.enter().await.map_err(|Overloaded| rejected("overloaded", ThumbError::Overloaded))?;
                let variant = this.transform(source, req.spec(), Share::Always(&id)).await?;
                Ok::<_, ThumbError>((size, key, variant))
            }
        };
        let mut made = Vec::with_capacity(sizes.len());
        let result = async {
            if let Some(&first) = sizes.first() {
                made.push(job(first).await?);
            }
            made.extend(futures::future::try_join_all(sizes.iter().skip(1).map(|&s| job(s))).await?);
            Ok(())
        }
        .await;
        if let Some(masters) = &self.masters {
            for scale in 1..=8 {
                masters.invalidate(&format!("{id}#{scale}")).await;
            }
        }
        // In the profile's order, as listed.
        made.sort_by_key(|(size, _, _)| profile.sizes.iter().position(|s| s == size));
        result.map(|()| made)
    }

    /// Stores a variant made elsewhere (e.g. by [`Self::render_all`]) and caches it.
    pub async fn store_variant(&self, key: &ObjectKey, variant: &Variant) -> Result<(), StorageError> {
        let opts = PutOptions { content_type: Some(variant.content_type.to_owned()), if_none_match: false };
        self.store.put(key, variant.bytes.clone().into(), opts).await?;
        self.remember(key, variant).await;
        Ok(())
    }
}
