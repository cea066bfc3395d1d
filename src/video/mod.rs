//! Video: poster frames, web-playable proxies and media facts, all by the
//! ffmpeg command-line tools run as sandboxed children ([`ffmpeg`]), and the
//! background jobs that make proxies ([`jobs`]).
//!
//! Without ffmpeg the service still runs: [`Videos::available`] is false,
//! posters and `/proxy` answer 501 and the facts of a video leave out what
//! only ffprobe knows.

pub mod ffmpeg;
pub mod jobs;

use std::sync::Arc;
use std::time::{Duration, Instant};

pub use ffmpeg::{Container, Facts, Ffmpeg, Input, Limits, ProxyPlan, VideoError};
use futures::TryStreamExt;
use tokio::sync::{Notify, Semaphore};

use crate::assets::AssetKey;
use crate::config::{Config, Profiles, ProxyFormat};
use crate::shutdown::Lifecycle;
use crate::storage::{
    ByteRange, DynStore, InternalFolder, KeyPrefix, ObjectKey, ObjectMeta, PutBody, PutOptions, ReadSource,
    StorageError,
};

/// Address-space limit of a poster or probe child.
const POSTER_MEMORY: u64 = 2 << 30;
/// Address-space limit of a transcode (x264/VP9 encoders reserve a lot).
const PROXY_MEMORY: u64 = 4 << 30;
/// Most bytes of a poster frame (a 4K RGB PNG is ~25 MB).
const MAX_FRAME_BYTES: usize = 128 << 20;
/// How often idle workers look for queued jobs (a local enqueue wakes them).
const POLL: Duration = Duration::from_secs(10);
/// Name prefix of a proxy job's scratch directory in the system temp folder.
const SCRATCH_PREFIX: &str = "mediaflow-proxy-";
/// Longest a proxy job may run (its ffmpeg timeout is capped at 4 h) plus
/// an hour: a scratch directory older than this was left by a process that
/// died (SIGKILL skips the clean-up on drop), even with other instances
/// sharing the temp folder.
const SCRATCH_MAX_AGE: Duration = Duration::from_secs(5 * 3600);

/// What `/proxy` can answer.
#[derive(Debug, Clone)]
pub enum ProxyState {
    /// Made: serve it.
    Ready(ObjectKey),
    /// Queued or running.
    Pending,
    /// The job failed for this original.
    Failed,
}

/// The video service.
#[derive(Debug)]
pub struct Videos {
    ffmpeg: Option<Ffmpeg>,
    store: DynStore,
    profiles: Arc<Profiles>,
    /// VIDEO_JOBS: transcodes at once on this instance.
    jobs: Arc<Semaphore>,
    /// This instance's name on the leases it takes.
    owner: String,
    wake: Notify,
    /// TRANSFORM_TIMEOUT: a poster takes at most this long.
    poster_timeout: Duration,
    max_pixels: u64,
}

fn to_video_error(e: StorageError) -> VideoError {
    VideoError::Store(e.to_string())
}

impl Videos {
    /// The service for `config`: finds ffmpeg (FFMPEG_PATH or PATH) and says
    /// in the log whether video features are on.
    pub fn new(config: &Config, store: DynStore, profiles: Arc<Profiles>) -> Self {
        let ffmpeg = Ffmpeg::locate(config.video.ffmpeg_path.as_deref());
        match &ffmpeg {
            Some(f) => tracing::info!(ffmpeg = %f.ffmpeg_path().display(), "video: posters, proxies and facts on"),
            None => tracing::warn!(
                configured = ?config.video.ffmpeg_path,
                "video: ffmpeg/ffprobe not found or not executable; posters and /proxy answer 501 (set FFMPEG_PATH)"
            ),
        }
        Self {
            ffmpeg,
            store,
            profiles,
            jobs: Arc::new(Semaphore::new(config.video.jobs.max(1))),
            owner: hex::encode(rand::random::<[u8; 8]>()),
            wake: Notify::new(),
            poster_timeout: config.transforms.timeout,
            max_pixels: config.transforms.max_pixels,
        }
    }

    /// Whether ffmpeg is installed.
    pub fn available(&self) -> bool {
        self.ffmpeg.is_some()
    }

    fn ffmpeg(&self) -> Result<&Ffmpeg, VideoError> {
        self.ffmpeg.as_ref().ok_or(VideoError::NotInstalled)
    }

    /// What ffmpeg may read the original as, from its first bytes.
    async fn container(&self, original: &ObjectMeta) -> Result<Container, VideoError> {
        if original.size == 0 {
            return Err(VideoError::NotAVideo("the original is empty".into()));
        }
        let len = crate::media_type::SNIFF_LEN.min(original.size);
        let head = self
            .store
            .get(&original.key, Some(ByteRange::Bounded { start: 0, end: len - 1 }))
            .await
            .map_err(to_video_error)?
            .collect(len)
            .await
            .map_err(to_video_error)?;
        crate::media_type::sniff(&head)
            .and_then(|t| Container::of_mime(t.mime))
            .ok_or_else(|| VideoError::NotAVideo("not an MP4, QuickTime, WebM or Matroska file".into()))
    }

    async fn input(&self, key: &ObjectKey, valid_for: Duration) -> Result<Input, VideoError> {
        Ok(match self.store.read_source(key, valid_for).await.map_err(to_video_error)? {
            ReadSource::File(path) => Input::File(path),
            ReadSource::Url(url) => Input::Url(url),
        })
    }

    /// ffprobe failed on an input: a video it cannot read, unless the store
    /// itself failed, which ffmpeg cannot tell apart from stderr alone; ask
    /// the store again.
    async fn classify(&self, original: &ObjectKey, e: VideoError) -> VideoError {
        match e {
            VideoError::NotAVideo(_) => match self.store.head(original).await {
                Ok(_) => e,
                Err(store) => to_video_error(store),
            },
            other => other,
        }
    }

    /// The facts of a video (ffprobe).
    pub async fn facts(&self, original: &ObjectMeta) -> Result<Facts, VideoError> {
        let ffmpeg = self.ffmpeg()?;
        let container = self.container(original).await?;
        let input = self.input(&original.key, self.poster_timeout + Duration::from_secs(60)).await?;
        let limits = Limits { timeout: self.poster_timeout, memory: POSTER_MEMORY, max_output: 1 << 20 };
        match ffmpeg.probe(&input, container, limits).await {
            Ok(facts) => Ok(facts),
            Err(e) => Err(self.classify(&original.key, e).await),
        }
    }

    /// A poster frame of `original` at `poster_time` seconds (at most half
    /// the video; the first frame when that gives none), display rotation
    /// applied, as a PNG for the image pipeline.
    pub async fn poster(&self, original: &ObjectMeta, poster_time: f64) -> Result<Vec<u8>, VideoError> {
        let started = Instant::now();
        let result = self.poster_inner(original, poster_time).await;
        let label = match &result {
            Ok(_) => "ok",
            Err(VideoError::NotAVideo(_)) => "not_a_video",
            Err(VideoError::TimedOut(_)) => "timeout",
            Err(_) => "error",
        };
        metrics::counter!("mediaflow_video_posters_total", "result" => label).increment(1);
        metrics::histogram!("mediaflow_video_poster_duration_seconds").record(started.elapsed().as_secs_f64());
        result
    }

    async fn poster_inner(&self, original: &ObjectMeta, poster_time: f64) -> Result<Vec<u8>, VideoError> {
        let ffmpeg = self.ffmpeg()?;
        let deadline = Instant::now() + self.poster_timeout;
        let facts = self.facts(original).await?;
        if u64::from(facts.width) * u64::from(facts.height) > self.max_pixels {
            return Err(VideoError::TooLarge { width: facts.width, height: facts.height, max_pixels: self.max_pixels });
        }
        let container = self.container(original).await?;
        let input = self.input(&original.key, self.poster_timeout + Duration::from_secs(60)).await?;
        let at = facts.duration_s.map_or(poster_time, |d| poster_time.min(d / 2.0)).max(0.0);
        for at in [at, 0.0] {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(VideoError::TimedOut(self.poster_timeout));
            }
            let limits = Limits { timeout: left, memory: POSTER_MEMORY, max_output: MAX_FRAME_BYTES };
            match ffmpeg.frame(&input, container, at, limits).await {
                Ok(Some(png)) => return Ok(png),
                Ok(None) => continue,
                Err(e) => return Err(self.classify(&original.key, e).await),
            }
        }
        Err(VideoError::NotAVideo("the video has no frame to show".into()))
    }

    /// Where `/proxy` stands for `asset` in `format`: ready, pending (a job
    /// is queued now if none is), or failed for this original.
    pub async fn proxy_state(&self, asset: &AssetKey, format: ProxyFormat) -> Result<ProxyState, VideoError> {
        let proxy = asset.proxy_key(format).ok_or_else(|| VideoError::NoProxies(asset.profile().name.clone()))?;
        let original = asset.find_original(&*self.store).await.map_err(|e| match e {
            StorageError::NotFound => VideoError::NoOriginal,
            other => to_video_error(other),
        })?;
        self.ffmpeg()?;
        match self.store.head(&proxy).await {
            Ok(_) => return Ok(ProxyState::Ready(proxy)),
            Err(StorageError::NotFound) => {}
            Err(e) => return Err(to_video_error(e)),
        }
        if let Some(failure) = jobs::failure(&self.store, &proxy).await.map_err(to_video_error)?
            && failure.original_etag == original.etag
        {
            return Ok(ProxyState::Failed);
        }
        if !jobs::is_queued(&self.store, &proxy).await.map_err(to_video_error)? {
            self.enqueue(asset, &original.key, format).await.map_err(to_video_error)?;
        }
        Ok(ProxyState::Pending)
    }

    /// The state of each of `asset`'s proxies, read without queueing
    /// anything (for `GET /v1/assets`): `ready`, `failed` for this original,
    /// else `pending`.
    pub async fn proxy_states(
        &self,
        asset: &AssetKey,
        original: &ObjectMeta,
    ) -> Result<Vec<(ProxyFormat, &'static str)>, StorageError> {
        let Some(video) = asset.profile().video() else { return Ok(Vec::new()) };
        let mut out = Vec::new();
        for &format in &video.proxy_formats {
            let Some(proxy) = asset.proxy_key(format) else { continue };
            let state = match self.store.head(&proxy).await {
                Ok(_) => "ready",
                Err(StorageError::NotFound) => match jobs::failure(&self.store, &proxy).await? {
                    Some(f) if f.original_etag == original.etag => "failed",
                    _ => "pending",
                },
                Err(e) => return Err(e),
            };
            out.push((format, state));
        }
        Ok(out)
    }

    /// Queues the job that makes `asset`'s proxy in `format`.
    pub async fn enqueue(
        &self,
        asset: &AssetKey,
        original: &ObjectKey,
        format: ProxyFormat,
    ) -> Result<(), StorageError> {
        let Some(proxy) = asset.proxy_key(format) else { return Ok(()) };
        let job = jobs::Job {
            profile: asset.profile().name.clone(),
            original: original.to_string(),
            proxy: proxy.to_string(),
            format: format.name().to_owned(),
        };
        jobs::enqueue(&self.store, &proxy, &job).await?;
        self.wake.notify_one();
        Ok(())
    }

    /// After a video upload completed: queue every proxy its profile makes.
    pub async fn uploaded(&self, profile: &str, original: &ObjectKey) {
        let Some(profile) = self.profiles.get(profile).cloned() else { return };
        let Some(video) = profile.video().cloned() else { return };
        if self.ffmpeg.is_none() {
            return;
        }
        let Some(asset) = AssetKey::from_original_key(profile, original) else { return };
        for format in video.proxy_formats {
            if let Err(e) = self.enqueue(&asset, original, format).await {
                tracing::warn!(key = %original, error = %e, "could not queue a proxy job; /proxy will queue it");
            }
        }
    }

    /// After a single PUT stored `original` through the service (the
    /// filesystem backend's upload URLs; S3 PUTs never pass here, and their
    /// proxies start on the first `/proxy` request): as [`Self::uploaded`]
    /// when the key is a video profile's original.
    pub async fn stored(&self, original: &ObjectKey) {
        let Some(profile) = self.profiles.for_object_key(original.as_str()).filter(|p| p.video().is_some()) else {
            return;
        };
        let name = profile.name.clone();
        self.uploaded(&name, original).await;
    }

    /// Deletes `asset`'s proxies and their job records; returns how many
    /// proxies there were.
    pub async fn delete_proxies(&self, asset: &AssetKey) -> Result<usize, StorageError> {
        let Some(video) = asset.profile().video() else { return Ok(0) };
        let mut deleted = 0;
        for &format in &video.proxy_formats {
            let Some(proxy) = asset.proxy_key(format) else { continue };
            jobs::dequeue(&self.store, &proxy).await?;
            jobs::clear_failure(&self.store, &proxy).await?;
            match self.store.head(&proxy).await {
                Ok(_) => {
                    self.store.delete(&proxy).await?;
                    deleted += 1;
                }
                Err(StorageError::NotFound) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(deleted)
    }

    /// Starts this instance's job worker: it runs queued jobs (at most
    /// VIDEO_JOBS at once) until shutdown.
    pub fn start_worker(self: &Arc<Self>, lifecycle: &Lifecycle) {
        if self.ffmpeg.is_none() {
            return;
        }
        let this = Arc::clone(self);
        lifecycle.spawn_daemon(async move {
            let parent = std::env::temp_dir();
            let cutoff = std::time::SystemTime::now() - SCRATCH_MAX_AGE;
            match tokio::task::spawn_blocking(move || sweep_scratch(&parent, cutoff)).await {
                Ok(0) | Err(_) => {}
                Ok(n) => tracing::info!(removed = n, "removed proxy scratch directories left by a dead process"),
            }
            loop {
                if let Err(e) = this.run_queued().await {
                    tracing::warn!(error = %e, "could not list proxy jobs; retrying");
                }
                tokio::select! {
                    () = this.wake.notified() => {}
                    () = tokio::time::sleep(POLL) => {}
                }
            }
        });
    }

    /// Runs every queued job this instance can take.
    async fn run_queued(self: &Arc<Self>) -> Result<(), StorageError> {
        let markers = crate::storage::list_all(&*self.store, &KeyPrefix::internal(InternalFolder::ProxyJobs)).await?;
        for marker in markers {
            let Some(job) = jobs::read_job(&self.store, &marker.key).await? else {
                self.store.delete(&marker.key).await?;
                continue;
            };
            let permit = Arc::clone(&self.jobs).acquire_owned().await.expect("the semaphore is never closed");
            let this = Arc::clone(self);
            // Not awaited by shutdown: a transcode can take minutes. Its lease
            // expires and another instance (or this one, restarted) takes over.
            tokio::spawn(async move {
                this.run_job(job).await;
                drop(permit);
            });
        }
        Ok(())
    }

    async fn run_job(&self, job: jobs::Job) {
        let (Ok(proxy), Ok(original), Some(format)) =
            (ObjectKey::parse(job.proxy.clone()), ObjectKey::parse(job.original.clone()), job.format())
        else {
            tracing::warn!(?job, "dropping an unreadable proxy job");
            return;
        };
        let held = match jobs::acquire(&self.store, &proxy, &self.owner).await {
            Ok(Some(held)) => held,
            Ok(None) => return, // another instance runs it
            Err(e) => {
                tracing::warn!(error = %e, "could not take a proxy job's lease");
                return;
            }
        };
        let started = Instant::now();
        let renewing = async {
            loop {
                tokio::time::sleep(jobs::LEASE_RENEW).await;
                if let Err(e) = jobs::renew(&self.store, &held).await {
                    tracing::warn!(error = %e, "could not renew a proxy job's lease");
                }
            }
        };
        let outcome = tokio::select! {
            outcome = self.make_proxy(&original, &proxy, format) => outcome,
            () = renewing => unreachable!("renews forever"),
        };
        let label = match &outcome {
            Ok(()) => {
                let _ = jobs::clear_failure(&self.store, &proxy).await;
                "ok"
            }
            Err(JobEnd::Gone) => "gone",
            Err(JobEnd::Failed { etag, reason }) => {
                tracing::warn!(proxy = %proxy, reason = %reason, "proxy job failed");
                let failure = jobs::Failure { original_etag: etag.clone(), reason: reason.clone() };
                if let Err(e) = jobs::record_failure(&self.store, &proxy, &failure).await {
                    tracing::warn!(error = %e, "could not record a proxy job's failure");
                }
                "failed"
            }
            Err(JobEnd::Store(e)) => {
                // Left queued: a later round retries when the store is back.
                tracing::warn!(proxy = %proxy, error = %e, "proxy job interrupted by the store");
                jobs::release(&self.store, held).await;
                return;
            }
        };
        if let Err(e) = jobs::dequeue(&self.store, &proxy).await {
            tracing::warn!(error = %e, "could not remove a finished proxy job");
        }
        jobs::release(&self.store, held).await;
        metrics::counter!("mediaflow_video_proxy_jobs_total", "result" => label).increment(1);
        metrics::histogram!("mediaflow_video_proxy_job_duration_seconds").record(started.elapsed().as_secs_f64());
    }

    /// Transcodes (or remuxes) `original` into `proxy`: a temp file first,
    /// checked, then one atomic put.
    async fn make_proxy(&self, original: &ObjectKey, proxy: &ObjectKey, format: ProxyFormat) -> Result<(), JobEnd> {
        let ffmpeg = self.ffmpeg().map_err(|e| JobEnd::Store(e.to_string()))?;
        let meta = match self.store.head(original).await {
            Ok(meta) => meta,
            Err(StorageError::NotFound) => return Err(JobEnd::Gone),
            Err(e) => return Err(JobEnd::Store(e.to_string())),
        };
        if self.store.head(proxy).await.is_ok() {
            return Ok(());
        }
        let failed = |reason: String| JobEnd::Failed { etag: meta.etag.clone(), reason };
        let classify = |e: VideoError| match e {
            VideoError::Store(s) => JobEnd::Store(s),
            other => JobEnd::Failed { etag: meta.etag.clone(), reason: other.to_string() },
        };
        let facts = self.facts(&meta).await.map_err(classify)?;
        let container = self.container(&meta).await.map_err(classify)?;
        let plan = ProxyPlan::choose(format.name(), &facts).ok_or_else(|| failed("no plan".into()))?;
        // Generous, but bounded: a hostile "video" cannot keep a worker forever.
        let secs = facts.duration_s.unwrap_or(600.0);
        let timeout = Duration::from_secs_f64((60.0 + secs * 20.0).min(4.0 * 3600.0));
        let input = self.input(original, timeout + Duration::from_secs(60)).await.map_err(classify)?;
        let dir =
            tempfile::Builder::new().prefix(SCRATCH_PREFIX).tempdir().map_err(|e| JobEnd::Store(e.to_string()))?;
        let out = dir.path().join(format!("proxy.{}", format.name()));
        let limits = Limits { timeout, memory: PROXY_MEMORY, max_output: 1 << 20 };
        ffmpeg.proxy(&input, container, &plan, &out, limits).await.map_err(classify)?;
        // Never store a partial proxy: it must read back as a video as long
        // as the source.
        let made_container = if format == ProxyFormat::Mp4 { Container::Mov } else { Container::Matroska };
        let probe_limits = Limits { timeout: Duration::from_secs(60), memory: POSTER_MEMORY, max_output: 1 << 20 };
        let made = ffmpeg.probe(&Input::File(out.clone()), made_container, probe_limits).await.map_err(classify)?;
        if let (Some(want), Some(got)) = (facts.duration_s, made.duration_s)
            && (want - got).abs() > (want * 0.1).max(1.0)
        {
            return Err(failed(format!("the proxy lasts {got:.1} s, the source {want:.1} s")));
        }
        let file = tokio::fs::File::open(&out).await.map_err(|e| JobEnd::Store(e.to_string()))?;
        let len = file.metadata().await.map_err(|e| JobEnd::Store(e.to_string()))?.len();
        let stream = tokio_util::io::ReaderStream::with_capacity(file, 256 * 1024).map_err(std::io::Error::other);
        let mime = if format == ProxyFormat::Mp4 { "video/mp4" } else { "video/webm" };
        let opts = PutOptions { content_type: Some(mime.to_owned()), if_none_match: false };
        self.store
            .put(proxy, PutBody::stream(Box::pin(stream), len), opts)
            .await
            .map_err(|e| JobEnd::Store(e.to_string()))?;
        tracing::info!(proxy = %proxy, ?plan, bytes = len, "proxy made");
        Ok(())
    }
}

/// How a job ended other than with its proxy stored.
#[derive(Debug)]
enum JobEnd {
    /// The original was deleted: nothing to do.
    Gone,
    /// ffmpeg could not make it from this original.
    Failed {
        /// The original's ETag.
        etag: String,
        /// Why.
        reason: String,
    },
    /// The store failed: retry later.
    Store(String),
}

/// Removes the proxy scratch directories under `parent` last modified
/// before `cutoff`; returns how many. Anything else is left alone, and a
/// directory that cannot be read or removed is skipped.
fn sweep_scratch(parent: &std::path::Path, cutoff: std::time::SystemTime) -> usize {
    let Ok(entries) = std::fs::read_dir(parent) else { return 0 };
    let mut removed = 0;
    for entry in entries.flatten() {
        let old_scratch = entry.file_name().to_str().is_some_and(|n| n.starts_with(SCRATCH_PREFIX))
            && entry.file_type().is_ok_and(|t| t.is_dir())
            && entry.metadata().and_then(|m| m.modified()).is_ok_and(|t| t < cutoff);
        if old_scratch && std::fs::remove_dir_all(entry.path()).is_ok() {
            removed += 1;
        }
    }
    removed
}

#[cfg(test)]
mod scratch_tests {
    use super::*;

    #[test]
    fn only_old_proxy_scratch_directories_are_swept() {
        let parent = tempfile::tempdir().unwrap();
        let make = |name: &str, age: Duration| {
            let dir = parent.path().join(name);
            std::fs::create_dir(&dir).unwrap();
            std::fs::write(dir.join("proxy.mp4"), b"partial").unwrap();
            let t = std::time::SystemTime::now() - age;
            std::fs::File::open(&dir).unwrap().set_modified(t).unwrap();
            dir
        };
        let dead = make("mediaflow-proxy-dead", SCRATCH_MAX_AGE + Duration::from_secs(60));
        let running = make("mediaflow-proxy-running", Duration::from_secs(60));
        let other = make("someone-else", SCRATCH_MAX_AGE * 2);
        let cutoff = std::time::SystemTime::now() - SCRATCH_MAX_AGE;
        assert_eq!(sweep_scratch(parent.path(), cutoff), 1);
        assert!(!dead.exists(), "a dead process's scratch is removed");
        assert!(running.join("proxy.mp4").exists(), "a job that may still run keeps its scratch");
        assert!(other.exists(), "other programs' directories are left alone");
        assert_eq!(sweep_scratch(&parent.path().join("missing"), cutoff), 0);
    }
}
