//! The client behind `mediaflow upload`, `download` and `delete`: sniff the
//! file, presign, PUT it (one request, or parts in parallel with retries and
//! resume), complete, and report the URLs to fetch it back; abort an
//! interrupted upload; fetch an original or a thumbnail; delete an asset.
//!
//! - [`api`]: the service's API as wire types and calls.
//! - [`transfer`]: one PUT of a file region, streamed from disk.
//! - [`multipart`]: parts in flight, URL batches, resume, completion, abort.
//! - [`state`]: the resume file.
//! - [`assets`]: `download` and `delete`.
//! - [`progress`]: bar, plain lines or nothing.
//! - [`human`]: sizes and durations as people read them.
//! - [`retry`]: backoff with jitter.
//!
//! [`upload`] is the library entry point; tests drive it directly, with
//! [`UploadOptions::fault`] to simulate failures.

pub mod api;
pub mod assets;
pub mod human;
pub mod multipart;
pub mod progress;
pub mod retry;
pub mod state;
pub mod transfer;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Serialize;
use tokio::io::AsyncReadExt;

use crate::storage::keys::KeyBase;
use api::{Action, Api, Plan, PresignBody, ServerError};
pub use assets::{DeleteOptions, DownloadOptions, Downloaded, delete, download};
pub use multipart::{AbortOptions, Aborted, abort};
pub use progress::ProgressMode;
pub use retry::Retry;
use state::{Fingerprint, StateError, StateFile};
use transfer::{PutFailure, Region, put_region};

/// The step of an upload an error happened in; it words the error message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// `POST /v1/uploads/presign`.
    Presign,
    /// `POST /v1/uploads/presign/parts`.
    PartUrls,
    /// `GET /v1/uploads/{key}/parts/{id}`.
    ListParts,
    /// The completion.
    Complete,
    /// The abort.
    Abort,
    /// `HEAD /originals/…` before uploading.
    Lookup,
    /// The single PUT.
    Single,
    /// One part's PUT.
    Part(u32),
    /// `GET /originals/…` or `/thumb/…` for `mediaflow download`.
    Download,
    /// `DELETE /v1/assets/…`.
    Delete,
}

impl std::fmt::Display for Step {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Presign => f.write_str("the presign"),
            Self::PartUrls => f.write_str("the request for part URLs"),
            Self::ListParts => f.write_str("the listing of stored parts"),
            Self::Complete => f.write_str("the completion"),
            Self::Abort => f.write_str("the abort"),
            Self::Lookup => f.write_str("the check for an existing original"),
            Self::Single => f.write_str("the upload"),
            Self::Part(n) => write!(f, "part {n}"),
            Self::Download => f.write_str("the download"),
            Self::Delete => f.write_str("the delete"),
        }
    }
}

/// A failure to simulate before a PUT, for tests and drills.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Stop as if the process had been killed: no more parts are started,
    /// those in flight finish, the resume file stays.
    Interrupt,
    /// A network failure: retried with backoff.
    Transient,
    /// A 403 from the store: the part's URL is fetched again, once.
    Forbidden,
}

/// Called before every PUT attempt with (part number, attempt from 0); a
/// single upload is part 1. Returning a fault simulates it instead of sending.
pub type FaultHook = Arc<dyn Fn(u32, u32) -> Option<Fault> + Send + Sync>;

/// How a new upload is sent: `--multipart`, the presign's `multipart`.
/// The part size is the profile's (`part_size_mb`): the API has no
/// per-upload part size.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Multipart {
    /// Multipart above the profile's `multipart_threshold_mb`, else one PUT.
    #[default]
    Auto,
    /// Always multipart, even for a file smaller than one part.
    Force,
    /// Always one PUT (at most 5 GiB).
    Off,
}

impl Multipart {
    /// The presign's `multipart` value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Auto => "auto",
            Self::Force => "force",
            Self::Off => "off",
        }
    }
}

/// What went wrong; every variant reads as a sentence.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// `--server` cannot be a base URL.
    #[error(
        "--server '{given}' is not a usable base URL: {reason}; give it as http://HOST:PORT or https://HOST, \
         e.g. http://localhost:8080"
    )]
    BadServer {
        /// As given.
        given: String,
        /// Why not.
        reason: String,
    },
    /// `--abort` with no resume file.
    #[error(
        "--abort: there is no interrupted upload of {} to abort (looked for {})",
        input.display(), state::list(looked)
    )]
    NothingToAbort {
        /// The file whose upload was to be aborted.
        input: PathBuf,
        /// Where the resume file was looked for.
        looked: Vec<PathBuf>,
    },
    /// `mediaflow download` would overwrite a file.
    #[error("{} already exists: pass --force to overwrite it, or -o another name", .0.display())]
    OutputExists(PathBuf),
    /// Writing a download failed.
    #[error("cannot write {}: {source}", path.display())]
    Write {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// The input cannot be read.
    #[error("cannot read {}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// The input is empty.
    #[error("{} is empty: there is nothing to upload", .0.display())]
    EmptyFile(PathBuf),
    /// The input's first bytes match no known type.
    #[error(
        "cannot tell what {} is from its first bytes; MediaFlow takes images (JPEG, PNG, WebP, GIF…) and videos \
         (MP4, QuickTime, WebM) recognised by their content, not their name",
        .0.display()
    )]
    UnknownType(PathBuf),
    /// No usable key base.
    #[error("{0}")]
    KeyBase(String),
    /// The service answered with an error.
    #[error("the server refused {step}: {}", sentence(error))]
    Server {
        /// Where.
        step: Step,
        /// The service's `{code, message, hint}`.
        error: ServerError,
    },
    /// The store (or the fs backend's upload endpoint) refused a PUT.
    #[error("the store refused {step}: {}", sentence(error))]
    Store {
        /// Where.
        step: Step,
        /// The answer, as far as it could be read.
        error: ServerError,
    },
    /// No answer at all: connection refused or reset, timeout.
    #[error("network error during {step}: {}", chain(source))]
    Network {
        /// Where.
        step: Step,
        /// The HTTP client's error.
        source: reqwest::Error,
    },
    /// An answer the client cannot use.
    #[error("unexpected answer to {step}: {detail}")]
    Unexpected {
        /// Where.
        step: Step,
        /// What was wrong with it.
        detail: String,
    },
    /// An original is already stored under this id.
    #[error(
        "{url} already exists and MediaFlow never overwrites an original: delete it first \
         (DELETE /v1/assets/{profile}/{key_base}) or upload under another --key-base"
    )]
    AlreadyExists {
        /// The original's URL.
        url: String,
        /// The profile.
        profile: String,
        /// The key base.
        key_base: String,
    },
    /// A failure injected by [`UploadOptions::fault`].
    #[error("simulated {fault:?} failure of {step}")]
    Simulated {
        /// Where.
        step: Step,
        /// What.
        fault: Fault,
    },
    /// The upload was stopped ([`Fault::Interrupt`]).
    #[error("the upload was interrupted")]
    Interrupted,
    /// A multipart upload stopped part-way; a re-run resumes it.
    #[error(
        "{source}; {stored} of {total} parts are stored: run the same command again to resume (state in {})",
        state_file.display()
    )]
    Incomplete {
        /// Parts stored.
        stored: usize,
        /// Parts in all.
        total: u32,
        /// The resume file.
        state_file: PathBuf,
        /// Why it stopped.
        source: Box<ClientError>,
    },
    /// The resume file.
    #[error(transparent)]
    State(#[from] StateError),
}

/// `message [code, HTTP status]. Hint: hint.`, byte counts in the message
/// followed by their human form.
fn sentence(e: &ServerError) -> String {
    let message = human::annotate_sizes(&e.code, e.message.trim_end_matches('.'));
    match &e.hint {
        Some(hint) => format!("{message} [{}, HTTP {}]. Hint: {hint}", e.code, e.status),
        None => format!("{message} [{}, HTTP {}]", e.code, e.status),
    }
}

/// An error and its sources, `a: b: c`, each said once.
fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !out.contains(&text) {
            out = format!("{out}: {text}");
        }
        source = s.source();
    }
    out
}

impl ClientError {
    /// The service's (or store's) error code, if the failure was an answer.
    pub fn code(&self) -> Option<&str> {
        match self {
            Self::Server { error, .. } | Self::Store { error, .. } => Some(&error.code),
            Self::Incomplete { source, .. } => source.code(),
            _ => None,
        }
    }

    /// The HTTP status, if the failure was an answer.
    pub fn status(&self) -> Option<u16> {
        match self {
            Self::Server { error, .. } | Self::Store { error, .. } => Some(error.status),
            Self::Incomplete { source, .. } => source.status(),
            _ => None,
        }
    }

    /// The process exit code: 3 when a re-run can resume, 2 for a bad
    /// `--server` (a bad command line, as clap's own errors), else 1.
    pub fn exit_code(&self) -> i32 {
        match self {
            Self::Incomplete { .. } | Self::Interrupted => 3,
            Self::BadServer { .. } => 2,
            _ => 1,
        }
    }
}

/// What to upload, where, and how.
#[derive(Clone)]
pub struct UploadOptions {
    /// The file.
    pub file: PathBuf,
    /// The service's base URL (`http://localhost:8080`).
    pub server: String,
    /// The profile.
    pub profile: String,
    /// The id to store it under; default: the file name up to its first dot.
    pub key_base: Option<String>,
    /// The service's API key.
    pub api_key: Option<String>,
    /// Parts in flight at once.
    pub parallel: usize,
    /// Single or multipart, for a new upload (a resumed one stays multipart).
    pub multipart: Multipart,
    /// Fail unless there is an interrupted upload to resume.
    pub resume: bool,
    /// How to show progress.
    pub progress: ProgressMode,
    /// The cache folder for resume files; default [`state::cache_dir`].
    pub cache_dir: Option<PathBuf>,
    /// Retry policy for PUTs and service calls.
    pub retry: Retry,
    /// Simulated failures (tests).
    pub fault: Option<FaultHook>,
}

impl std::fmt::Debug for UploadOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UploadOptions")
            .field("file", &self.file)
            .field("server", &self.server)
            .field("profile", &self.profile)
            .field("key_base", &self.key_base)
            .field("api_key", &self.api_key.as_ref().map(|_| "<redacted>"))
            .field("parallel", &self.parallel)
            .field("multipart", &self.multipart)
            .field("resume", &self.resume)
            .field("progress", &self.progress)
            .field("fault", &self.fault.as_ref().map(|_| "<hook>"))
            .finish_non_exhaustive()
    }
}

impl UploadOptions {
    /// Defaults: 4 parts in flight, automatic progress, the default retry policy.
    pub fn new(file: impl Into<PathBuf>, server: impl Into<String>, profile: impl Into<String>) -> Self {
        Self {
            file: file.into(),
            server: server.into(),
            profile: profile.into(),
            key_base: None,
            api_key: None,
            parallel: 4,
            multipart: Multipart::Auto,
            resume: false,
            progress: ProgressMode::Auto,
            cache_dir: None,
            retry: Retry::default(),
            fault: None,
        }
    }
}

/// A finished upload: what `mediaflow upload` prints (`--json`: this object).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Uploaded {
    /// Where the original is stored.
    pub object_key: String,
    /// The id it is stored under.
    pub key_base: String,
    /// The profile.
    pub profile: String,
    /// The sniffed MIME type.
    pub mime: String,
    /// The file's size.
    pub size_bytes: u64,
    /// `single` or `multipart`.
    pub method: &'static str,
    /// Parts in all (1 for a single PUT).
    pub parts: u32,
    /// Parts sent by this run (fewer than `parts` after a resume).
    pub parts_sent: u32,
    /// Whether an interrupted upload was resumed.
    pub resumed: bool,
    /// `{server}/originals/{profile}/{id}`.
    pub original_url: String,
    /// `{server}/thumb/{profile}/{id}` (the profile's default size; add
    /// `?width=`): images, and videos when the server cannot say the
    /// profile's kind (no `GET /v1/profiles`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub thumbnail_url: Option<String>,
    /// Videos: `{server}/thumb/{profile}/{id}`, the poster frame (a
    /// thumbnail of the video).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub poster_url: Option<String>,
    /// Videos: `{server}/proxy/{profile}/{id}?format=F` for each of the
    /// profile's proxy formats (none: an empty list).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub proxy_urls: Option<Vec<String>>,
    /// The service's description of the asset (`GET /v1/assets/…`: width,
    /// height, placeholder; a video's duration, codecs and proxy states),
    /// when it could give one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub asset: Option<serde_json::Value>,
    /// A square crop of an image, for profiles that list a square box
    /// (`"256x256"`): `{thumbnail_url}?width=256&height=256`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub avatar_url: Option<String>,
}

/// The URL of a square avatar: the smallest square box among `sizes`.
fn avatar_url(thumbnail_url: &str, sizes: &[String]) -> Option<String> {
    let side = sizes
        .iter()
        .filter_map(|s| {
            let (w, h) = s.split_once('x')?;
            let (w, h) = (w.parse::<u32>().ok()?, h.parse::<u32>().ok()?);
            (w == h).then_some(w)
        })
        .min()?;
    Some(format!("{thumbnail_url}?width={side}&height={side}"))
}

/// The file to upload, inspected once.
#[derive(Debug, Clone)]
pub struct Input {
    /// Its path.
    pub path: PathBuf,
    /// Its size and mtime.
    pub fingerprint: Fingerprint,
    /// The MIME type its first bytes say.
    pub mime: &'static str,
    /// The usual extension of that type.
    pub ext: Option<&'static str>,
    /// The id it is stored under.
    pub key_base: String,
}

/// How many leading bytes are read to sniff the type.
const SNIFF_BYTES: u64 = 8192;

impl Input {
    /// Reads the file's size, mtime and first bytes.
    pub async fn inspect(path: &Path, key_base: Option<&str>) -> Result<Self, ClientError> {
        let io = |source| ClientError::Io { path: path.to_owned(), source };
        let file = tokio::fs::File::open(path).await.map_err(io)?;
        let meta = file.metadata().await.map_err(io)?;
        if !meta.is_file() {
            return Err(io(std::io::Error::other("not a regular file")));
        }
        if meta.len() == 0 {
            return Err(ClientError::EmptyFile(path.to_owned()));
        }
        let mut head = Vec::with_capacity(SNIFF_BYTES as usize);
        file.take(SNIFF_BYTES).read_to_end(&mut head).await.map_err(io)?;
        let media = crate::media_type::sniff(&head).ok_or_else(|| ClientError::UnknownType(path.to_owned()))?;
        let mime = media.mime;
        let key_base = match key_base {
            Some(k) => k.to_owned(),
            None => default_key_base(path).ok_or_else(|| {
                ClientError::KeyBase(format!(
                    "cannot make a key base from the name of {}: pass --key-base",
                    path.display()
                ))
            })?,
        };
        KeyBase::parse(&key_base).map_err(|e| ClientError::KeyBase(format!("key base '{key_base}': {e}")))?;
        let fingerprint = Fingerprint::of(&meta);
        Ok(Self { path: path.to_owned(), fingerprint, mime, ext: Some(media.extension()), key_base })
    }

    /// The file's size.
    pub fn size(&self) -> u64 {
        self.fingerprint.size
    }

    /// The id media URLs name the object by: the key base, with the
    /// extension when the profile stores it in the key (the object key ends
    /// with it). Before the key is known, the extension is added whenever
    /// there is one: the service ignores it for templates without `{ext}`.
    pub fn image_id(&self, object_key: Option<&str>) -> String {
        match (self.ext, object_key) {
            (Some(ext), Some(key)) => {
                let id = format!("{}.{ext}", self.key_base);
                let stored_with_ext = key == id || key.ends_with(&format!("/{id}"));
                if stored_with_ext { id } else { self.key_base.clone() }
            }
            (Some(ext), None) => format!("{}.{ext}", self.key_base),
            (None, _) => self.key_base.clone(),
        }
    }
}

/// The file name up to its first dot, with anything outside `[A-Za-z0-9_-]`
/// replaced by `_`, at most 200 characters.
pub fn default_key_base(path: &Path) -> Option<String> {
    let name = path.file_name()?.to_string_lossy().into_owned();
    let stem = name.split('.').find(|s| !s.is_empty())?;
    let safe = |c: char| if c.is_ascii_alphanumeric() || c == '-' || c == '_' { c } else { '_' };
    Some(stem.chars().map(safe).take(200).collect())
}

/// Everything one upload shares.
pub(crate) struct Ctx {
    pub api: Api,
    pub input: Input,
    pub profile: String,
    pub parallel: usize,
    pub multipart: Multipart,
    pub retry: Retry,
    pub fault: Option<FaultHook>,
    pub progress: progress::Progress,
    pub cache: Option<PathBuf>,
}

impl Ctx {
    fn fault(&self, part: u32, attempt: u32) -> Option<Fault> {
        self.fault.as_ref().and_then(|f| f(part, attempt))
    }
}

/// What the upload phase reports.
pub(crate) struct Sent {
    pub object_key: String,
    pub multipart: bool,
    pub parts: u32,
    pub parts_sent: u32,
    pub resumed: bool,
}

/// Uploads `opts.file`: resumes its interrupted multipart upload if a resume
/// file says there is one, else starts a new upload. Progress and notices go
/// to stderr as `opts.progress` says.
pub async fn upload(opts: &UploadOptions) -> Result<Uploaded, ClientError> {
    let api = Api::connect(&opts.server, opts.api_key.clone(), opts.retry)?;
    let input = Input::inspect(&opts.file, opts.key_base.as_deref()).await?;
    let ctx = Ctx {
        progress: progress::Progress::new(opts.progress, input.size()),
        api,
        input,
        profile: opts.profile.clone(),
        parallel: opts.parallel.max(1),
        multipart: opts.multipart,
        retry: opts.retry,
        fault: opts.fault.clone(),
        cache: opts.cache_dir.clone().or_else(state::cache_dir),
    };
    let _ticker = ctx.progress.start();
    let sent = match StateFile::find(&ctx.input.path, ctx.cache.as_deref()) {
        Some(file) => match multipart::resume(&ctx, file).await? {
            Some(sent) => sent,
            None => fresh(&ctx).await?,
        },
        None if opts.resume => {
            let looked = StateFile::candidates(&ctx.input.path, ctx.cache.as_deref());
            return Err(StateError::Missing { input: ctx.input.path.clone(), looked }.into());
        }
        None => fresh(&ctx).await?,
    };
    ctx.progress.finish();
    let summary = ctx.api.profile_summary(&ctx.profile).await;
    let id = ctx.input.image_id(Some(&sent.object_key));
    let mut done = report(&ctx, sent, summary.as_ref());
    for url in done.proxy_urls.iter().flatten() {
        ctx.api.touch(url).await;
    }
    done.asset = ctx.api.describe(&ctx.profile, &id).await;
    Ok(done)
}

/// The result. The profile's kind (from `GET /v1/profiles`) decides between
/// a thumbnail URL (images) and a poster URL with proxy URLs (videos); a
/// server that cannot tell gets the thumbnail URL, as before the endpoint.
fn report(ctx: &Ctx, sent: Sent, profile: Option<&api::ProfileSummary>) -> Uploaded {
    let server = ctx.api.server();
    let id = ctx.input.image_id(Some(&sent.object_key));
    let thumb = format!("{server}/thumb/{}/{id}", ctx.profile);
    let (thumbnail_url, poster_url, proxy_urls) = match profile {
        Some(p) if p.kind == "video" => {
            let proxies =
                p.proxy_formats.iter().map(|f| format!("{server}/proxy/{}/{id}?format={f}", ctx.profile)).collect();
            (None, Some(thumb), Some(proxies))
        }
        _ => (Some(thumb), None, None),
    };
    Uploaded {
        key_base: ctx.input.key_base.clone(),
        profile: ctx.profile.clone(),
        mime: ctx.input.mime.to_owned(),
        size_bytes: ctx.input.size(),
        method: if sent.multipart { "multipart" } else { "single" },
        parts: sent.parts,
        parts_sent: sent.parts_sent,
        resumed: sent.resumed,
        original_url: format!("{server}/originals/{}/{id}", ctx.profile),
        avatar_url: match profile {
            Some(p) if p.kind == "image" => thumbnail_url.as_deref().and_then(|t| avatar_url(t, &p.sizes)),
            _ => None,
        },
        thumbnail_url,
        poster_url,
        proxy_urls,
        asset: None,
        object_key: sent.object_key,
    }
}

/// A new upload: refuse an existing original early, presign, then one PUT or parts.
async fn fresh(ctx: &Ctx) -> Result<Sent, ClientError> {
    let id = ctx.input.image_id(None);
    if ctx.api.original_size(&ctx.profile, &id).await?.is_some() {
        return Err(already_exists(ctx, None).await);
    }
    let body = PresignBody {
        key_base: &ctx.input.key_base,
        mime: ctx.input.mime,
        size_bytes: ctx.input.size(),
        profile: &ctx.profile,
        multipart: ctx.multipart.as_str(),
    };
    let answer = ctx.api.presign(&body).await?;
    match answer.upload {
        Plan::Single(action) => {
            single(ctx, &action, &answer.object_key).await?;
            Ok(Sent { object_key: answer.object_key, multipart: false, parts: 1, parts_sent: 1, resumed: false })
        }
        Plan::Multipart(plan) => multipart::start(ctx, answer.object_key, plan).await,
    }
}

/// The original already stored, named by the URL a successful upload would
/// have printed: with the extension only when the object key has it. Before
/// a presign the key is unknown, so the server is asked whether the profile
/// ignores extensions (one more HEAD, on this error path only).
async fn already_exists(ctx: &Ctx, object_key: Option<&str>) -> ClientError {
    let id = match object_key {
        Some(key) => ctx.input.image_id(Some(key)),
        None if ctx.api.ignores_extension(&ctx.profile, &ctx.input.key_base).await => ctx.input.key_base.clone(),
        None => ctx.input.image_id(None),
    };
    ClientError::AlreadyExists {
        url: format!("{}/originals/{}/{id}", ctx.api.server(), ctx.profile),
        profile: ctx.profile.clone(),
        key_base: ctx.input.key_base.clone(),
    }
}

/// A simulated failure, sorted like a real one.
pub(crate) fn simulate(fault: Fault, step: Step) -> PutFailure {
    match fault {
        Fault::Interrupt => PutFailure::Fatal(ClientError::Interrupted),
        Fault::Transient => PutFailure::Retry(ClientError::Simulated { step, fault }),
        Fault::Forbidden => PutFailure::Forbidden(ClientError::Simulated { step, fault }),
    }
}

/// The single PUT, retried on network errors and 5xx. Its URL carries
/// `If-None-Match: *`, so a 412 after a failed attempt may mean that attempt
/// landed after all: the stored original's size decides.
async fn single(ctx: &Ctx, action: &Action, object_key: &str) -> Result<(), ClientError> {
    let region = Region { offset: 0, len: ctx.input.size() };
    let mut attempt = 0;
    loop {
        let result = match ctx.fault(1, attempt) {
            Some(fault) => Err(simulate(fault, Step::Single)),
            None => put_region(&ctx.api.http, action, &ctx.input.path, region, &ctx.progress, Step::Single).await,
        };
        let error = match result {
            Ok(_) => return Ok(()),
            Err(PutFailure::Retry(_)) if ctx.retry.may_retry(attempt) => {
                tokio::time::sleep(ctx.retry.delay(attempt)).await;
                attempt += 1;
                continue;
            }
            Err(failure) => failure.into_error(),
        };
        if error.status() != Some(412) {
            return Err(error);
        }
        let id = ctx.input.image_id(Some(object_key));
        return match ctx.api.original_size(&ctx.profile, &id).await? {
            Some(size) if attempt > 0 && size == ctx.input.size() => Ok(()),
            _ => Err(already_exists(ctx, Some(object_key)).await),
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn avatar_urls_use_the_smallest_square_box() {
        let sizes = |s: &[&str]| s.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let url = |s: &[&str]| avatar_url("http://h/thumb/avatar/k1", &sizes(s));
        assert_eq!(
            url(&["128", "512x512", "256x256"]).as_deref(),
            Some("http://h/thumb/avatar/k1?width=256&height=256")
        );
        assert_eq!(url(&["128", "256"]), None, "widths only");
        assert_eq!(url(&["1200x630"]), None, "no square box");
    }

    #[test]
    fn key_bases_come_from_file_names() {
        assert_eq!(default_key_base(Path::new("/a/photo.jpg")).as_deref(), Some("photo"));
        assert_eq!(default_key_base(Path::new("my holiday (1).final.jpeg")).as_deref(), Some("my_holiday__1_"));
        assert_eq!(default_key_base(Path::new(".hidden.png")).as_deref(), Some("hidden"));
        assert_eq!(default_key_base(Path::new("été.png")).as_deref(), Some("_t_"));
        assert_eq!(default_key_base(&PathBuf::from("x".repeat(300))).map(|k| k.len()), Some(200));
        assert_eq!(default_key_base(Path::new("/")), None);
    }

    #[test]
    fn server_errors_read_as_sentences() {
        let error = ServerError {
            status: 400,
            code: "mime_not_allowed".into(),
            message: "mime type 'image/gif' is not allowed for profile 'avatar'".into(),
            hint: Some("convert it to PNG".into()),
        };
        let e = ClientError::Server { step: Step::Presign, error };
        assert_eq!(
            e.to_string(),
            "the server refused the presign: mime type 'image/gif' is not allowed for profile 'avatar' \
             [mime_not_allowed, HTTP 400]. Hint: convert it to PNG"
        );
        assert_eq!((e.code(), e.status(), e.exit_code()), (Some("mime_not_allowed"), Some(400), 1));
        let wrapped = ClientError::Incomplete {
            stored: 2,
            total: 3,
            state_file: "f.json".into(),
            source: Box::new(ClientError::Interrupted),
        };
        assert_eq!(
            wrapped.to_string(),
            "the upload was interrupted; 2 of 3 parts are stored: run the same command again to resume (state in f.json)"
        );
        assert_eq!(wrapped.exit_code(), 3);
    }

    #[tokio::test]
    async fn videos_print_poster_and_proxy_urls_images_a_thumbnail() {
        let ctx = Ctx {
            api: Api::connect("127.0.0.1:1", None, Retry::default()).unwrap(),
            input: Input {
                path: "m.mp4".into(),
                fingerprint: Fingerprint { size: 1, mtime_secs: 0, mtime_nanos: 0 },
                mime: "video/mp4",
                ext: Some("mp4"),
                key_base: "m".into(),
            },
            profile: "video".into(),
            parallel: 1,
            multipart: Multipart::Auto,
            retry: Retry::default(),
            fault: None,
            progress: progress::Progress::new(ProgressMode::Quiet, 1),
            cache: None,
        };
        let sent = || Sent {
            object_key: "originals/videos/ab/m".into(),
            multipart: false,
            parts: 1,
            parts_sent: 1,
            resumed: false,
        };
        let video = api::ProfileSummary {
            kind: "video".into(),
            proxy_formats: vec!["mp4".into(), "webm".into()],
            sizes: vec![],
        };
        let done = report(&ctx, sent(), Some(&video));
        assert_eq!(done.thumbnail_url, None);
        assert_eq!(done.poster_url.as_deref(), Some("http://127.0.0.1:1/thumb/video/m"));
        assert_eq!(
            done.proxy_urls.as_deref(),
            Some(
                &[
                    "http://127.0.0.1:1/proxy/video/m?format=mp4".to_owned(),
                    "http://127.0.0.1:1/proxy/video/m?format=webm".to_owned()
                ][..]
            )
        );
        let json = serde_json::to_value(&done).unwrap();
        assert!(json.get("thumbnail_url").is_none() && json["poster_url"].is_string(), "{json}");
        // A video profile without proxies: the list is there, empty.
        let bare = api::ProfileSummary { kind: "video".into(), proxy_formats: vec![], sizes: vec![] };
        assert_eq!(report(&ctx, sent(), Some(&bare)).proxy_urls, Some(vec![]));
        // An image profile, or a server without GET /v1/profiles: the thumbnail, as before.
        let image = api::ProfileSummary {
            kind: "image".into(),
            proxy_formats: vec![],
            sizes: vec!["128".into(), "64x64".into(), "256x256".into()],
        };
        for profile in [Some(&image), None] {
            let done = report(&ctx, sent(), profile);
            assert_eq!(done.thumbnail_url.as_deref(), Some("http://127.0.0.1:1/thumb/video/m"));
            assert_eq!((done.poster_url, done.proxy_urls), (None, None));
            let json = serde_json::to_value(report(&ctx, sent(), profile)).unwrap();
            assert!(json.get("poster_url").is_none() && json.get("proxy_urls").is_none(), "{json}");
        }
        // The smallest square box of an image profile is the avatar.
        let avatar = report(&ctx, sent(), Some(&image)).avatar_url;
        assert_eq!(avatar.as_deref(), Some("http://127.0.0.1:1/thumb/video/m?width=64&height=64"));
        assert_eq!(report(&ctx, sent(), None).avatar_url, None);
        assert_eq!(report(&ctx, sent(), Some(&video)).avatar_url, None);
    }

    #[test]
    fn image_ids_carry_the_extension_only_when_the_key_does() {
        let input = Input {
            path: "p.png".into(),
            fingerprint: Fingerprint { size: 1, mtime_secs: 0, mtime_nanos: 0 },
            mime: "image/png",
            ext: Some("png"),
            key_base: "s1".into(),
        };
        assert_eq!(input.image_id(Some("originals/scans/s1.png")), "s1.png");
        assert_eq!(input.image_id(Some("s1.png")), "s1.png");
        assert_eq!(input.image_id(Some("originals/avatars/ab/s1")), "s1");
        assert_eq!(input.image_id(Some("originals/xs1.png")), "s1");
        assert_eq!(input.image_id(None), "s1.png");
    }
}
