//! Configuration: environment variables (SPEC §1, also read from `.env`) and
//! the YAML profiles (SPEC §2), parsed and validated once at start-up.
//!
//! [`Settings`] mirrors the environment (clap reads it, so `mediaflow serve
//! --help` lists every variable); [`Config`] is the validated runtime form.

pub mod overlap;
pub mod profiles;

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

pub use profiles::{Media, MediaKind, Profile, Profiles, ProxyFormat, ThumbSize, VideoSettings};

use crate::storage::s3::S3Settings;

/// A secret string: never printed by `Debug` or `Display`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret.
    pub fn new(s: impl Into<String>) -> Self {
        Self(s.into())
    }

    /// The secret itself; call only where it is used.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per event.
    Json,
}

/// The server's settings as the environment (or flags) give them.
#[derive(Debug, Clone, clap::Args)]
pub struct Settings {
    /// Listen port.
    #[arg(long, env = "PORT", default_value_t = 8080)]
    pub port: u16,
    /// Listen address (default: 0.0.0.0 with API_KEY set, else 127.0.0.1).
    #[arg(long, env = "BIND_ADDR")]
    pub bind_addr: Option<IpAddr>,
    /// Let the service listen on a non-loopback address without API_KEY.
    #[arg(long, env = "ALLOW_ANONYMOUS", default_value_t = false, action = clap::ArgAction::Set)]
    pub allow_anonymous: bool,
    /// Build the service's own URLs from X-Forwarded-Host/-Proto (only behind a proxy that sets them).
    #[arg(long, env = "TRUST_FORWARDED_HEADERS", default_value_t = false, action = clap::ArgAction::Set)]
    pub trust_forwarded_headers: bool,
    /// YAML profiles file; `s3://bucket/key` loads it from a bucket. Unset: the bundled example.
    #[arg(long, env = "STORAGE_CONFIG_PATH")]
    pub storage_config_path: Option<String>,
    /// Set: the S3 backend on this bucket. Unset: the filesystem backend.
    #[arg(long, env = "S3_BUCKET")]
    pub s3_bucket: Option<String>,
    /// S3 region.
    #[arg(long, env = "S3_REGION", default_value = "us-east-1")]
    pub s3_region: String,
    /// Custom S3 endpoint for the service's own calls (path-style).
    #[arg(long, env = "S3_ENDPOINT")]
    pub s3_endpoint: Option<String>,
    /// Endpoint presigned URLs point at (defaults to S3_ENDPOINT).
    #[arg(long, env = "PUBLIC_S3_ENDPOINT")]
    pub public_s3_endpoint: Option<String>,
    /// Static access key id (otherwise the standard AWS credential chain).
    #[arg(long, env = "AWS_ACCESS_KEY_ID", hide_env_values = true)]
    pub aws_access_key_id: Option<String>,
    /// Static secret access key.
    #[arg(long, env = "AWS_SECRET_ACCESS_KEY", hide_env_values = true)]
    pub aws_secret_access_key: Option<String>,
    /// Root of the filesystem backend.
    #[arg(long, env = "DATA_DIR", default_value = "./data")]
    pub data_dir: PathBuf,
    /// Base of URLs pointing at this service (default: from the request's Host).
    #[arg(long, env = "PUBLIC_BASE_URL")]
    pub public_base_url: Option<String>,
    /// Key for mutating endpoints; unset means open (development).
    #[arg(long, env = "API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
    /// Set: thumbnail URLs outside a profile's listed sizes need a signature (`sig`).
    #[arg(long, env = "THUMB_SIGNING_KEY", hide_env_values = true)]
    pub thumb_signing_key: Option<String>,
    /// HMAC secret for URLs and tokens the service signs (random per start if unset).
    #[arg(long, env = "SIGNING_SECRET", hide_env_values = true)]
    pub signing_secret: Option<String>,
    /// Default Cache-Control max-age, seconds.
    #[arg(long, env = "CACHE_MAX_AGE", default_value_t = 86400)]
    pub cache_max_age: u64,
    /// Size of the in-memory cache of hot media, MiB (0 disables it).
    #[arg(long, env = "CACHE_MEMORY_MB", default_value_t = 256)]
    pub cache_memory_mb: u64,
    /// Seconds a memory entry is trusted before the store is asked again.
    #[arg(long, env = "CACHE_MEMORY_TTL", default_value_t = 60)]
    pub cache_memory_ttl: u64,
    /// Threads serving connections (default: number of CPUs).
    #[arg(long, env = "WORKER_THREADS")]
    pub worker_threads: Option<usize>,
    /// Image jobs running at once (default: number of CPUs).
    #[arg(long, env = "MAX_CONCURRENT_TRANSFORMS")]
    pub max_concurrent_transforms: Option<usize>,
    /// Image jobs waiting at most; more get 503 overloaded.
    #[arg(long, env = "TRANSFORM_QUEUE", default_value_t = 64)]
    pub transform_queue: usize,
    /// Largest source image, in pixels (width × height).
    #[arg(long, env = "MAX_SOURCE_PIXELS", default_value_t = 100_000_000)]
    pub max_source_pixels: u64,
    /// Most frames of a GIF or animated WebP made into an animated WebP; more is 422.
    #[arg(long, env = "MAX_ANIMATION_FRAMES", default_value_t = 1000)]
    pub max_animation_frames: u32,
    /// Seconds a transform may run; then it is answered 503 and its work stops.
    #[arg(long, env = "TRANSFORM_TIMEOUT", default_value_t = 30)]
    pub transform_timeout: u64,
    /// Memory budget of the renders running at once, MiB (estimated from each source's header).
    #[arg(long, env = "MAX_RENDER_MEMORY_MB", default_value_t = 1024)]
    pub max_render_memory_mb: u64,
    /// How much larger than the thumbnail (%) a JPEG decoded at a reduced
    /// DCT scale must stay: 100–800; higher is sharper and slower.
    #[arg(long, env = "SHRINK_ON_LOAD_MARGIN", default_value_t = crate::image::SHRINK_ON_LOAD_MARGIN)]
    pub shrink_on_load_margin: u32,
    /// Memory for recently decoded sources, MiB (0 disables it): the other
    /// sizes of a new original made within a few seconds skip its decode.
    #[arg(long, env = "DECODE_CACHE_MB", default_value_t = 32)]
    pub decode_cache_mb: u64,
    /// Seconds a request may take to produce its response headers.
    #[arg(long, env = "REQUEST_TIMEOUT", default_value_t = 60)]
    pub request_timeout: u64,
    /// Seconds a client may stay silent while sending headers or a body.
    #[arg(long, env = "CLIENT_IDLE_TIMEOUT", default_value_t = 30)]
    pub client_idle_timeout: u64,
    /// Seconds to finish in-flight work after SIGTERM.
    #[arg(long, env = "SHUTDOWN_TIMEOUT", default_value_t = 30)]
    pub shutdown_timeout: u64,
    /// Origins browsers may call the whole API from (uploads, media, the fs backend's upload URLs); comma-separated, `*` for any.
    #[arg(long, env = "CORS_ALLOWED_ORIGINS", default_value = "*")]
    pub cors_allowed_origins: String,
    /// `text` or `json`.
    #[arg(long, env = "LOG_FORMAT", value_enum, default_value = "text")]
    pub log_format: LogFormat,
    /// The ffmpeg binary for video posters, proxies and facts (default: `ffmpeg` on PATH, ffprobe beside it).
    #[arg(long, env = "FFMPEG_PATH")]
    pub ffmpeg_path: Option<PathBuf>,
    /// Proxy transcodes running at once on this instance.
    #[arg(long, env = "VIDEO_JOBS", default_value_t = 1)]
    pub video_jobs: usize,
}

impl Settings {
    /// The documented defaults, without reading the environment or `.env`:
    /// a shell with PORT or S3_* set must not change what tests and
    /// embedders get. The defaults stay declared once, in the attributes.
    pub fn defaults() -> Self {
        use clap::{CommandFactory, FromArgMatches};
        #[derive(clap::Parser)]
        struct Defaults {
            #[command(flatten)]
            settings: Settings,
        }
        let command = Defaults::command().mut_args(|arg| arg.env(None::<&str>));
        let matches = command.get_matches_from(["mediaflow"]);
        Defaults::from_arg_matches(&matches).expect("the defaults parse").settings
    }
}

/// Which store to use.
#[derive(Debug, Clone)]
pub enum StorageConfig {
    /// Files under a directory.
    Fs {
        /// The root directory.
        data_dir: PathBuf,
    },
    /// An S3 bucket.
    S3(S3Settings),
}

/// Cache settings.
#[derive(Debug, Clone)]
pub struct CacheConfig {
    /// Default Cache-Control max-age, seconds.
    pub max_age: u64,
    /// In-memory cache capacity, bytes.
    pub memory_bytes: u64,
    /// How long a memory entry is trusted.
    pub memory_ttl: Duration,
}

/// Image transform limits.
#[derive(Debug, Clone)]
pub struct TransformConfig {
    /// Jobs running at once.
    pub concurrency: usize,
    /// Jobs waiting at most.
    pub queue: usize,
    /// Largest source, pixels.
    pub max_pixels: u64,
    /// Most frames of an animation made into an animated WebP.
    pub max_frames: u32,
    /// Per-transform time limit.
    pub timeout: Duration,
    /// Memory budget of the renders running at once, bytes.
    pub max_render_memory: u64,
    /// Memory for decoded sources kept for the next sizes, bytes (0: off).
    pub decode_cache: u64,
    /// Shrink-on-load margin, % (see [`crate::image::plan_with_margin`]).
    pub shrink_margin: u32,
}

/// Video settings.
#[derive(Debug, Clone)]
pub struct VideoConfig {
    /// FFMPEG_PATH, when set.
    pub ffmpeg_path: Option<PathBuf>,
    /// Proxy transcodes at once.
    pub jobs: usize,
}

/// HTTP server limits.
#[derive(Debug, Clone)]
pub struct HttpConfig {
    /// Time to produce response headers.
    pub request_timeout: Duration,
    /// Longest silence from a client mid-request.
    pub client_idle_timeout: Duration,
    /// Drain deadline after SIGTERM.
    pub shutdown_timeout: Duration,
    /// CORS origins for every route (the API, media, the fs backend's upload URLs); empty means any.
    pub cors_origins: Vec<String>,
}

/// The validated runtime configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where to listen.
    pub listen: SocketAddr,
    /// Threads of the async runtime, which serve connections (renders have
    /// their own pool).
    pub worker_threads: usize,
    /// The store.
    pub storage: StorageConfig,
    /// Where the profiles come from (`None`: bundled).
    pub profiles_source: Option<String>,
    /// How to reach S3 for an `s3://` profiles file (bucket from the URL).
    pub profiles_s3: S3Settings,
    /// Base of URLs pointing at this service, without trailing slash.
    pub public_base_url: Option<String>,
    /// API key; `None` means open.
    pub api_key: Option<Secret>,
    /// Whether an open service (no API key) may listen on a non-loopback address.
    pub allow_anonymous: bool,
    /// Key for signed thumbnail URLs; `None`: every allowed URL is public.
    pub thumb_signing_key: Option<Secret>,
    /// Whether X-Forwarded-Host/-Proto may shape the URLs the service hands out.
    pub trust_forwarded_headers: bool,
    /// HMAC secret.
    pub signing_secret: Secret,
    /// Whether the signing secret was generated (single-instance only).
    pub signing_secret_generated: bool,
    /// Caching.
    pub cache: CacheConfig,
    /// Transforms.
    pub transforms: TransformConfig,
    /// HTTP.
    pub http: HttpConfig,
    /// Video.
    pub video: VideoConfig,
    /// Log format.
    pub log_format: LogFormat,
}

/// Why the settings were refused. Each names the variable to fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SettingsError {
    /// A variable has a value it cannot take.
    #[error("{name} {message}")]
    Invalid {
        /// The environment variable.
        name: &'static str,
        /// What is wrong with its value.
        message: String,
    },
    /// An open service (no API_KEY) asked to listen on a network address.
    #[error(
        "refusing to listen on {0} without API_KEY: anyone on the network could upload. Set API_KEY, \
         listen on loopback (BIND_ADDR=127.0.0.1), or set ALLOW_ANONYMOUS=true to open it on purpose"
    )]
    ProtectedMode(IpAddr),
}

/// More runtime threads than this is a typo, not a tuning: each has its
/// own stack and queue.
const MAX_WORKER_THREADS: usize = 1024;

fn invalid(name: &'static str, message: impl Into<String>) -> SettingsError {
    SettingsError::Invalid { name, message: message.into() }
}

/// Treats `VAR=` like an unset variable.
fn non_empty(v: Option<String>) -> Option<String> {
    v.filter(|s| !s.trim().is_empty())
}

/// MAX_RENDER_MEMORY_MB in bytes: at least 16 MiB (a budget smaller than a
/// small thumbnail's needs would refuse every image), at most 4 TiB.
fn render_memory(mb: u64) -> Result<u64, SettingsError> {
    if !(16..=4 << 20).contains(&mb) {
        return Err(invalid("MAX_RENDER_MEMORY_MB", format!("must be between 16 and 4194304, got {mb}")));
    }
    Ok(mb << 20)
}

/// SHRINK_ON_LOAD_MARGIN: 100 % (the smallest scale that covers the
/// thumbnail) to 800 % (never scale a source under 8× the thumbnail).
fn shrink_margin(pct: u32) -> Result<u32, SettingsError> {
    if !(100..=800).contains(&pct) {
        return Err(invalid("SHRINK_ON_LOAD_MARGIN", format!("must be between 100 and 800, got {pct}")));
    }
    Ok(pct)
}

/// DECODE_CACHE_MB in bytes: at most 64 GiB.
fn decode_cache(mb: u64) -> Result<u64, SettingsError> {
    if mb > 64 << 10 {
        return Err(invalid("DECODE_CACHE_MB", format!("must be between 0 and 65536, got {mb}")));
    }
    Ok(mb << 20)
}

fn check_url(name: &'static str, url: &Option<String>) -> Result<(), SettingsError> {
    match url {
        Some(u) if !(u.starts_with("http://") || u.starts_with("https://")) => {
            Err(invalid(name, format!("must start with http:// or https://, got '{u}'")))
        }
        _ => Ok(()),
    }
}

impl Config {
    /// Validates the settings.
    pub fn from_settings(s: Settings) -> Result<Self, SettingsError> {
        let s3_endpoint = non_empty(s.s3_endpoint);
        let public_s3_endpoint = non_empty(s.public_s3_endpoint);
        let public_base_url = non_empty(s.public_base_url).map(|u| u.trim_end_matches('/').to_owned());
        check_url("S3_ENDPOINT", &s3_endpoint)?;
        check_url("PUBLIC_S3_ENDPOINT", &public_s3_endpoint)?;
        check_url("PUBLIC_BASE_URL", &public_base_url)?;
        let s3 = S3Settings {
            bucket: non_empty(s.s3_bucket.clone()).unwrap_or_default(),
            region: s.s3_region,
            endpoint: s3_endpoint,
            public_endpoint: public_s3_endpoint,
            access_key_id: non_empty(s.aws_access_key_id),
            secret_access_key: non_empty(s.aws_secret_access_key),
        };
        let storage = match non_empty(s.s3_bucket) {
            Some(_) => StorageConfig::S3(s3.clone()),
            None => StorageConfig::Fs { data_dir: s.data_dir },
        };
        let (signing_secret, generated) = match non_empty(s.signing_secret) {
            Some(secret) if secret.len() < 16 => {
                return Err(invalid("SIGNING_SECRET", "must be at least 16 characters"));
            }
            Some(secret) => (Secret::new(secret), false),
            None => (Secret::new(hex::encode(rand::random::<[u8; 32]>())), true),
        };
        let cpus = || std::thread::available_parallelism().map_or(2, |n| n.get());
        let concurrency = s.max_concurrent_transforms.unwrap_or_else(cpus);
        if concurrency == 0 {
            return Err(invalid("MAX_CONCURRENT_TRANSFORMS", "must be at least 1"));
        }
        let worker_threads = match s.worker_threads.unwrap_or_else(cpus) {
            0 => return Err(invalid("WORKER_THREADS", "must be at least 1")),
            n if n > MAX_WORKER_THREADS => {
                return Err(invalid("WORKER_THREADS", format!("must be at most {MAX_WORKER_THREADS}")));
            }
            n => n,
        };
        if s.max_source_pixels == 0 {
            return Err(invalid("MAX_SOURCE_PIXELS", "must be at least 1"));
        }
        if s.max_animation_frames == 0 {
            return Err(invalid("MAX_ANIMATION_FRAMES", "must be at least 1"));
        }
        let secs = |name: &'static str, v: u64| {
            if v == 0 { Err(invalid(name, "must be at least 1 second")) } else { Ok(Duration::from_secs(v)) }
        };
        let cors_origins = s
            .cors_allowed_origins
            .split(',')
            .map(|o| o.trim().trim_end_matches('/').to_owned())
            .filter(|o| !o.is_empty() && o != "*")
            .collect();
        let api_key = non_empty(s.api_key).map(Secret::new);
        let bind_addr = s.bind_addr.unwrap_or(if api_key.is_some() {
            IpAddr::from([0, 0, 0, 0])
        } else {
            IpAddr::from([127, 0, 0, 1])
        });
        Ok(Self {
            listen: SocketAddr::new(bind_addr, s.port),
            worker_threads,
            storage,
            profiles_source: non_empty(s.storage_config_path),
            profiles_s3: s3,
            public_base_url,
            api_key,
            allow_anonymous: s.allow_anonymous,
            thumb_signing_key: non_empty(s.thumb_signing_key).map(Secret::new),
            trust_forwarded_headers: s.trust_forwarded_headers,
            signing_secret,
            signing_secret_generated: generated,
            cache: CacheConfig {
                max_age: s.cache_max_age,
                memory_bytes: s.cache_memory_mb.saturating_mul(1024 * 1024),
                memory_ttl: Duration::from_secs(s.cache_memory_ttl),
            },
            transforms: TransformConfig {
                concurrency,
                queue: s.transform_queue,
                max_pixels: s.max_source_pixels,
                max_frames: s.max_animation_frames,
                timeout: secs("TRANSFORM_TIMEOUT", s.transform_timeout)?,
                max_render_memory: render_memory(s.max_render_memory_mb)?,
                decode_cache: decode_cache(s.decode_cache_mb)?,
                shrink_margin: shrink_margin(s.shrink_on_load_margin)?,
            },
            http: HttpConfig {
                request_timeout: secs("REQUEST_TIMEOUT", s.request_timeout)?,
                client_idle_timeout: secs("CLIENT_IDLE_TIMEOUT", s.client_idle_timeout)?,
                shutdown_timeout: Duration::from_secs(s.shutdown_timeout),
                cors_origins,
            },
            log_format: s.log_format,
            video: VideoConfig {
                ffmpeg_path: s.ffmpeg_path.filter(|p| !p.as_os_str().is_empty()),
                jobs: if s.video_jobs == 0 {
                    return Err(invalid("VIDEO_JOBS", "must be at least 1"));
                } else {
                    s.video_jobs
                },
            },
        })
    }

    /// Redis' protected mode (SPEC §1): an open service (no API key) listens
    /// on loopback only, unless ALLOW_ANONYMOUS says otherwise. Checked by
    /// `serve` only: the offline subcommands listen on nothing.
    pub fn check_protected_mode(&self) -> Result<(), SettingsError> {
        if self.api_key.is_none() && !self.listen.ip().is_loopback() && !self.allow_anonymous {
            return Err(SettingsError::ProtectedMode(self.listen.ip()));
        }
        Ok(())
    }

    /// A configuration for tests and embedding: filesystem store at `data_dir`,
    /// defaults everywhere else, a fixed signing secret.
    pub fn for_fs(data_dir: impl Into<PathBuf>) -> Self {
        let mut settings = Settings::defaults();
        settings.data_dir = data_dir.into();
        settings.signing_secret = Some("test-signing-secret-0123456789".into());
        Self::from_settings(settings).expect("defaults are valid")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn render_memory_budget_is_in_mib_with_a_floor() {
        assert_eq!(Config::for_fs("/tmp/x").transforms.max_render_memory, 1024 << 20, "default 1024 MiB");
        assert_eq!(render_memory(256), Ok(256 << 20));
        assert!(render_memory(15).unwrap_err().to_string().starts_with("MAX_RENDER_MEMORY_MB"));
        assert!(render_memory(u64::MAX).is_err());
    }

    #[test]
    fn worker_threads_default_to_the_cpus_and_are_bounded() {
        let cpus = std::thread::available_parallelism().map_or(2, |n| n.get());
        assert_eq!(Config::for_fs("/tmp/x").worker_threads, cpus);
        let with = |n| {
            let mut s = Settings::defaults();
            s.worker_threads = Some(n);
            Config::from_settings(s).map(|c| c.worker_threads)
        };
        assert_eq!(with(3), Ok(3));
        assert_eq!(with(0).unwrap_err().to_string(), "WORKER_THREADS must be at least 1");
        assert!(with(MAX_WORKER_THREADS + 1).unwrap_err().to_string().starts_with("WORKER_THREADS must be at most"));
    }

    #[test]
    fn defaults_do_not_read_the_environment() {
        // SAFETY (of the test): this variable is read by no other test.
        unsafe { std::env::set_var("S3_REGION", "eu-from-the-environment") };
        let s = Settings::defaults();
        unsafe { std::env::remove_var("S3_REGION") };
        assert_eq!(s.s3_region, "us-east-1");
        assert_eq!(s.port, 8080);
        assert_eq!(s.bind_addr, None);
    }

    #[test]
    fn secrets_are_not_in_debug_output() {
        let mut c = Config::for_fs("/tmp/x");
        c.api_key = Some(Secret::new("api-key-value"));
        let dbg = format!("{c:?}");
        assert!(!dbg.contains("api-key-value"));
        assert!(!dbg.contains("test-signing-secret"));
    }
}
