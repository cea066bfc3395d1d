//! The `mediaflow` command: the server and its tools.

use anyhow::Context;

/// mimalloc instead of glibc's malloc: a hit allocates a few dozen small
/// objects, and glibc's malloc/free was 16 % of the CPU serving hits (bench/README.md, "Hits").
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;
use clap::{Parser, Subcommand};
use mediaflow::client::{AbortOptions, DeleteOptions, DownloadOptions, Multipart, ProgressMode, Retry, UploadOptions};
use mediaflow::config::{Config, LogFormat, Profiles, Settings};
use mediaflow::image::{Fit, Gravity, Limits, OutputFormat, Size, ThumbSpec};

#[derive(Parser)]
#[command(
    name = "mediaflow",
    version,
    about = "Presigned uploads, originals and on-demand thumbnails",
    after_help = "With no command, `serve` is run: `mediaflow --port 9000` is `mediaflow serve --port 9000`."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server (the default). Every option is also an environment variable.
    Serve {
        #[command(flatten)]
        settings: Box<Settings>,
    },
    /// Validate a profiles file (default: STORAGE_CONFIG_PATH or the bundled example) and print it.
    CheckConfig {
        /// The YAML file or s3://bucket/key.
        path: Option<String>,
        #[command(flatten)]
        settings: Box<Settings>,
    },
    /// Make one thumbnail offline with the server's image pipeline.
    Thumb {
        /// Source image (JPEG, PNG, WebP, GIF, BMP). An animated GIF or WebP
        /// made into WebP stays animated.
        input: std::path::PathBuf,
        /// Target width in pixels (never upscaled).
        #[arg(short = 'w', long)]
        width: u32,
        /// Target height: with it, WIDTHxHEIGHT is a box filled as --fit says.
        #[arg(long)]
        height: Option<u32>,
        /// How a box is filled: cover (fill it, crop the overflow) or inside (fit within it).
        #[arg(long, requires = "height", value_parser = parse_fit)]
        fit: Option<Fit>,
        /// What a cover crop keeps: center, north, south, east, west or smart.
        #[arg(long, requires = "height", value_parser = parse_gravity)]
        gravity: Option<Gravity>,
        /// Output format: webp, jpeg, png or avif.
        #[arg(short = 'f', long, default_value = "webp")]
        format: String,
        /// Encoder quality, 1..=100.
        #[arg(short = 'q', long, default_value_t = 85, value_parser = clap::value_parser!(u8).range(1..=100))]
        quality: u8,
        /// Output file.
        #[arg(short = 'o', long)]
        output: std::path::PathBuf,
        /// Largest source image, in pixels (width × height).
        #[arg(long, env = "MAX_SOURCE_PIXELS", default_value_t = 100_000_000)]
        max_source_pixels: u64,
        /// Most frames of an animation made into an animated WebP.
        #[arg(long, env = "MAX_ANIMATION_FRAMES", default_value_t = 1000)]
        max_animation_frames: u32,
    },
    /// Print a signed thumbnail URL, e.g. `/thumb/photo/abc?width=300`.
    SignUrl {
        /// The thumbnail URL: a path with its query, or a full http(s):// URL.
        url: String,
        /// The key the server verifies with.
        #[arg(long, env = "THUMB_SIGNING_KEY", hide_env_values = true)]
        key: String,
    },
    /// Upload a file to a MediaFlow server (presign, parallel parts, resume) and print its URLs.
    Upload(UploadArgs),
    /// Download an asset's original, or a thumbnail (a video's poster) with --width.
    Download(DownloadArgs),
    /// Delete an asset: its original and every thumbnail, poster and proxy (needs the API key).
    Delete(DeleteArgs),
    /// GET a server's /health and exit 0 when it answers OK, 1 otherwise (container health checks).
    Health {
        /// The URL to check (default: http://127.0.0.1:$PORT/health, or BIND_ADDR's address when it names one).
        url: Option<String>,
        /// The server's port, for the default URL.
        #[arg(long, env = "PORT", default_value_t = 8080)]
        port: u16,
        /// The server's listen address, for the default URL.
        #[arg(long, env = "BIND_ADDR")]
        bind_addr: Option<std::net::IpAddr>,
    },
}

/// `mediaflow upload`: the flags map one to one onto [`UploadOptions`]
/// (or, with `--abort`, [`AbortOptions`]).
#[derive(clap::Args)]
#[command(after_help = "Exit codes: 0 uploaded (or aborted), 1 failed, 2 bad command line, \
3 stopped part-way (run the same command again to resume), 130 interrupted.")]
struct UploadArgs {
    /// The file to upload; its type is sniffed from its first bytes.
    file: std::path::PathBuf,
    /// The server's base URL; http:// is assumed when no scheme is given.
    #[arg(long, env = "MEDIAFLOW_SERVER", required_unless_present = "abort")]
    server: Option<String>,
    /// The profile to upload under (its kind and policy apply).
    #[arg(long, required_unless_present = "abort")]
    profile: Option<String>,
    /// The id to store it under (default: the file name up to its first dot).
    #[arg(long)]
    key_base: Option<String>,
    /// The server's API key.
    #[arg(long, env = "MEDIAFLOW_API_KEY", hide_env_values = true)]
    api_key: Option<String>,
    /// Parts in flight at once (multipart uploads).
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..=64))]
    parallel: u16,
    /// auto: multipart above the profile's multipart_threshold_mb; force: always
    /// multipart; off: one PUT (at most 5 GiB). The part size is the profile's
    /// part_size_mb (GET /v1/profiles shows it): the API takes no part size.
    #[arg(long, value_enum, default_value = "auto")]
    multipart: Multipart,
    /// Only resume an interrupted upload; fail if there is none.
    #[arg(long)]
    resume: bool,
    /// Abort the interrupted upload of FILE recorded in its resume file (the
    /// store drops its parts) and remove that file.
    #[arg(long, conflicts_with = "resume")]
    abort: bool,
    /// Print the result as one JSON object.
    #[arg(long)]
    json: bool,
    /// No progress output and no notices.
    #[arg(short, long)]
    quiet: bool,
}

/// `mediaflow download`.
#[derive(clap::Args)]
#[command(after_help = "Exit codes: 0 downloaded, 1 failed, 2 bad command line, 130 interrupted.")]
struct DownloadArgs {
    /// The asset's id (its key base; an extension is allowed).
    id: String,
    /// The server's base URL; http:// is assumed when no scheme is given.
    #[arg(long, env = "MEDIAFLOW_SERVER")]
    server: String,
    /// The asset's profile.
    #[arg(long)]
    profile: String,
    /// Download a thumbnail (a video's poster) this many pixels wide instead of the original.
    #[arg(long)]
    width: Option<u32>,
    /// The asset's shard, for profiles that take a client's shard.
    #[arg(long)]
    shard: Option<String>,
    /// Where to write it; `-` for stdout (default: the name the server gives, in this folder).
    #[arg(short, long)]
    output: Option<std::path::PathBuf>,
    /// Overwrite the output file if it exists.
    #[arg(long)]
    force: bool,
    /// Print the result as one JSON object.
    #[arg(long)]
    json: bool,
    /// No progress output.
    #[arg(short, long)]
    quiet: bool,
}

/// `mediaflow delete`.
#[derive(clap::Args)]
#[command(after_help = "Exit codes: 0 deleted, 1 failed (nothing stored under the id: 404), 2 bad command line.")]
struct DeleteArgs {
    /// The asset's key base.
    key_base: String,
    /// The server's base URL; http:// is assumed when no scheme is given.
    #[arg(long, env = "MEDIAFLOW_SERVER")]
    server: String,
    /// The asset's profile.
    #[arg(long)]
    profile: String,
    /// The asset's shard, for profiles that take a client's shard.
    #[arg(long)]
    shard: Option<String>,
    /// The server's API key.
    #[arg(long, env = "MEDIAFLOW_API_KEY", hide_env_values = true)]
    api_key: Option<String>,
    /// Print the server's answer as one JSON object.
    #[arg(long)]
    json: bool,
}

/// Prints a result as one JSON line.
fn print_json(command: &str, value: &impl serde::Serialize) {
    match serde_json::to_string(value) {
        Ok(json) => println!("{json}"),
        Err(e) => eprintln!("mediaflow {command}: {e}"),
    }
}

/// Runs `mediaflow upload` and returns the exit code: 0 done, 1 failed,
/// 2 bad `--server`, 3 stopped part-way (a re-run resumes), 130 interrupted
/// by Ctrl-C.
async fn upload(args: UploadArgs) -> i32 {
    if args.abort {
        return abort(args).await;
    }
    // clap requires both unless --abort.
    let (Some(server), Some(profile)) = (args.server, args.profile) else { return 2 };
    let mut opts = UploadOptions::new(args.file, server, profile);
    opts.key_base = args.key_base;
    opts.api_key = args.api_key.filter(|k| !k.is_empty());
    opts.parallel = usize::from(args.parallel);
    opts.multipart = args.multipart;
    opts.resume = args.resume;
    opts.progress = if args.quiet { ProgressMode::Quiet } else { ProgressMode::Auto };
    let outcome = tokio::select! {
        outcome = mediaflow::client::upload(&opts) => outcome,
        _ = tokio::signal::ctrl_c() => {
            // The parts already stored stay, and so does the resume file.
            eprintln!("\nmediaflow upload: interrupted; run the same command again to resume");
            return 130;
        }
    };
    match outcome {
        Ok(done) if args.json => print_json("upload", &done),
        Ok(done) => {
            println!("object_key: {}", done.object_key);
            println!("original:   {}", done.original_url);
            if let Some(url) = &done.thumbnail_url {
                println!("thumbnail:  {url}");
            }
            if let Some(url) = &done.avatar_url {
                println!("avatar:     {url}");
            }
            if let Some(url) = &done.poster_url {
                println!("poster:     {url}");
            }
            for url in done.proxy_urls.iter().flatten() {
                println!("proxy:      {url}");
            }
            if let Some(asset) = &done.asset
                && let (Some(w), Some(h)) = (asset["width"].as_u64(), asset["height"].as_u64())
            {
                match asset["duration_s"].as_f64() {
                    Some(d) => println!("video:      {w}x{h}, {d:.1} s"),
                    None => println!("image:      {w}x{h}"),
                }
            }
        }
        Err(e) => {
            eprintln!("mediaflow upload: {e}");
            return e.exit_code();
        }
    }
    0
}

/// `mediaflow upload FILE --abort`.
async fn abort(args: UploadArgs) -> i32 {
    let mut opts = AbortOptions::new(&args.file);
    opts.server = args.server;
    opts.profile = args.profile;
    opts.key_base = args.key_base;
    opts.api_key = args.api_key.filter(|k| !k.is_empty());
    match mediaflow::client::abort(&opts).await {
        Ok(done) if args.json => print_json("upload", &done),
        Ok(done) => {
            let what = match done.status {
                "aborted" => "aborted the interrupted upload",
                _ => "the server no longer knew the interrupted upload (completed, aborted or expired)",
            };
            println!(
                "{what} of {} to {} (profile {}, key base {}); removed {}",
                args.file.display(),
                done.server,
                done.profile,
                done.key_base,
                done.resume_file.display()
            );
        }
        Err(e) => {
            eprintln!("mediaflow upload: {e}");
            return e.exit_code();
        }
    }
    0
}

/// `mediaflow download`: 0 done, 1 failed, 2 bad `--server`, 130 Ctrl-C.
async fn download(args: DownloadArgs) -> i32 {
    let mut opts = DownloadOptions::new(args.server, args.profile, args.id);
    opts.width = args.width;
    opts.shard = args.shard.filter(|s| !s.is_empty());
    opts.output = args.output;
    opts.force = args.force;
    opts.progress = if args.quiet { ProgressMode::Quiet } else { ProgressMode::Auto };
    let outcome = tokio::select! {
        outcome = mediaflow::client::download(&opts) => outcome,
        // Dropping the download removes its partial file.
        _ = tokio::signal::ctrl_c() => {
            eprintln!("\nmediaflow download: interrupted");
            return 130;
        }
    };
    match outcome {
        Ok(done) if args.json => print_json("download", &done),
        Ok(done) if done.file.as_os_str() == "-" => {}
        Ok(done) => println!(
            "{} ({}, {})",
            done.file.display(),
            mediaflow::client::human::size(done.size_bytes),
            done.content_type
        ),
        Err(e) => {
            eprintln!("mediaflow download: {e}");
            return e.exit_code();
        }
    }
    0
}

/// `mediaflow delete`: 0 deleted, 1 failed, 2 bad `--server`.
async fn delete(args: DeleteArgs) -> i32 {
    let opts = DeleteOptions {
        server: args.server,
        profile: args.profile,
        key_base: args.key_base,
        shard: args.shard.filter(|s| !s.is_empty()),
        api_key: args.api_key.filter(|k| !k.is_empty()),
        retry: Retry::default(),
    };
    match mediaflow::client::delete(&opts).await {
        Ok(done) if args.json => print_json("delete", &done),
        Ok(done) => println!(
            "deleted {}/{}: objects_deleted {} (the original and its thumbnails, posters and proxies)",
            done.profile, done.key_base, done.objects_deleted
        ),
        Err(e) => {
            eprintln!("mediaflow delete: {e}");
            return e.exit_code();
        }
    }
    0
}

/// `mediaflow health`: what a container's HEALTHCHECK runs, so that the image
/// needs no curl (as `imgproxy health`). Returns the exit code: 0 when the
/// server answers 200 `{"message":"OK"}` within a few seconds, 1 otherwise.
async fn health(url: Option<String>, port: u16, bind_addr: Option<std::net::IpAddr>) -> i32 {
    let url = url.unwrap_or_else(|| {
        // A server bound to every interface is reachable on loopback; one bound
        // to a single address only there.
        let host = match bind_addr {
            Some(ip) if !ip.is_unspecified() => ip,
            _ => std::net::Ipv4Addr::LOCALHOST.into(),
        };
        format!("http://{}/health", std::net::SocketAddr::new(host, port))
    });
    // Docker's default check timeout is 30 s; answer well before it. No proxy:
    // a health check asks this machine's server, not whatever HTTP_PROXY names.
    let client = match reqwest::Client::builder().no_proxy().timeout(std::time::Duration::from_secs(3)).build() {
        Ok(client) => client,
        Err(e) => {
            eprintln!("mediaflow health: {e}");
            return 1;
        }
    };
    let started = std::time::Instant::now();
    let outcome = async {
        let resp = client.get(&url).send().await.map_err(|e| error_chain(&e.without_url()))?;
        let status = resp.status();
        let body = resp.bytes().await.map_err(|e| error_chain(&e.without_url()))?;
        let ok = status == reqwest::StatusCode::OK
            && serde_json::from_slice::<serde_json::Value>(&body).is_ok_and(|v| v["message"] == "OK");
        if ok {
            Ok(())
        } else {
            let body = String::from_utf8_lossy(&body[..body.len().min(200)]).replace('\n', " ");
            Err(format!("answered {status}: {body}"))
        }
    }
    .await;
    match outcome {
        Ok(()) => {
            println!("mediaflow health: OK ({url}, {} ms)", started.elapsed().as_millis());
            0
        }
        Err(why) => {
            eprintln!("mediaflow health: {url} is not healthy: {why}");
            1
        }
    }
}

/// An error and its causes on one line ("error sending request: connection refused").
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut line = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        line.push_str(": ");
        line.push_str(&cause.to_string());
        source = cause.source();
    }
    line
}

fn init_tracing(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,tower_http=info,aws=warn"));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stdout());
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_ansi(ansi);
    match format {
        LogFormat::Json => builder.json().flatten_event(true).init(),
        LogFormat::Text => builder.init(),
    }
}

fn print_profiles(profiles: &Profiles) {
    for p in profiles.iter() {
        println!(
            "{:<12} kind={} mimes={} max={}B multipart>{}B part={}B ttl={}s path={} thumbs={} sizes={:?} default={} q={} format={}",
            p.name,
            p.kind().as_str(),
            p.allowed_mimes.join(","),
            p.size_max_bytes,
            p.multipart_threshold,
            p.part_size,
            p.token_ttl.as_secs(),
            p.storage_path.as_str(),
            p.thumb_folder,
            p.sizes.iter().map(ToString::to_string).collect::<Vec<_>>(),
            p.default_size.map_or_else(|| "-".to_owned(), |d| d.to_string()),
            p.quality,
            p.convert_to.ext,
        );
    }
}

fn parse_fit(s: &str) -> Result<Fit, String> {
    Fit::from_name(s).ok_or_else(|| format!("'{s}' is not one of cover, inside"))
}

fn parse_gravity(s: &str) -> Result<Gravity, String> {
    Gravity::from_name(s).ok_or_else(|| format!("'{s}' is not one of center, north, south, east, west, smart"))
}

/// `mediaflow thumb`: the pipeline on one file, timed.
fn thumb(input: &std::path::Path, spec: ThumbSpec, limits: Limits, output: &std::path::Path) -> anyhow::Result<()> {
    let source = std::fs::read(input).with_context(|| format!("reading {}", input.display()))?;
    let started = std::time::Instant::now();
    let made = mediaflow::image::thumbnail(&source, &spec, &limits)?;
    let elapsed = started.elapsed();
    std::fs::write(output, &made.bytes).with_context(|| format!("writing {}", output.display()))?;
    let frames = if made.frames > 1 { format!(" {} frames", made.frames) } else { String::new() };
    println!(
        "{} -> {} {}x{}{frames} {} bytes in {:.1} ms",
        input.display(),
        output.display(),
        made.width,
        made.height,
        made.bytes.len(),
        elapsed.as_secs_f64() * 1000.0
    );
    Ok(())
}

/// Signs a path with its query, or a full URL (its origin is kept as is).
fn sign_url(signature: &mediaflow::thumbs::UrlSignature, url: &str) -> String {
    let path_start = ["http://", "https://"]
        .iter()
        .find_map(|scheme| url.strip_prefix(scheme).map(|rest| scheme.len() + rest.find('/').unwrap_or(rest.len())));
    match path_start {
        Some(at) => format!("{}{}", &url[..at], signature.sign_url(&url[at..])),
        None => signature.sign_url(url),
    }
}

/// At most two glibc malloc arenas instead of eight per core. Renders run on
/// the blocking pool, whose threads come and go; with an arena each, every
/// arena kept its own high-water mark of freed multi-megabyte buffers
/// (sources, bitmaps, libjpeg's coefficient arrays), and 8 concurrent cold
/// thumbnails of 12–24 MP JPEGs peaked at 680–860 MB RSS instead of ~230 MB
/// (bench/http-load.sh). Rust's own allocations now go to mimalloc (above);
/// this still bounds the C libraries' (libjpeg's coefficient arrays,
/// libwebp's buffers), which call glibc's malloc. Must run before any
/// thread exists. An explicit `MALLOC_ARENA_MAX` in the environment wins.
fn limit_malloc_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
        // SAFETY: mallopt only sets a tuning parameter; no thread exists yet.
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, 2);
        }
    }
}

/// mimalloc's `mi_option_purge_delay` (libmimalloc-sys has no constant for
/// it; its place in the C enum of the bundled mimalloc 3.x, and of 2.x).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// Freed memory goes back to the system after 10 ms instead of mimalloc's
/// default 1 s: renders free multi-megabyte buffers on several threads,
/// and with the 1 s delay the cold rounds of bench/http-load.sh peaked at
/// 263-282 MB RSS instead of ~215 MB. Purging at once (0) cost ~4 % of cold
/// throughput against 10 ms, in page faults on the next render's buffers
/// (two runs, bench/README.md "Round four"), for 5-7 % less peak RSS. An
/// explicit `MIMALLOC_PURGE_DELAY` wins.
const PURGE_DELAY_MS: std::ffi::c_long = 10;

fn tune_mimalloc() {
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
        // SAFETY: sets a tuning option; no other thread exists yet.
        unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, PURGE_DELAY_MS) }
    }
}

fn main() -> std::process::ExitCode {
    limit_malloc_arenas();
    tune_mimalloc();
    let _ = dotenvy::dotenv();
    let cli = Cli::parse_from(with_default_command(std::env::args_os().collect()));
    let outcome = match cli.command {
        // The server's settings are read before its runtime is built: they
        // say how many threads it has.
        Command::Serve { settings } => serve(*settings),
        command => {
            tokio::runtime::Runtime::new().map_err(anyhow::Error::from).and_then(|rt| rt.block_on(async_main(command)))
        }
    };
    match outcome {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            // The message and its causes on one line: a user's error (bad
            // YAML, port in use) is not a crash, so no backtrace even with
            // RUST_BACKTRACE=1.
            eprintln!("mediaflow: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// `mediaflow serve`: the settings checked, then the server on a runtime of
/// `WORKER_THREADS` threads.
fn serve(settings: Settings) -> anyhow::Result<()> {
    init_tracing(settings.log_format);
    let config = Config::from_settings(settings)?;
    if let Err(e) = config.check_protected_mode() {
        eprintln!("mediaflow: {e}");
        std::process::exit(2);
    }
    let runtime =
        tokio::runtime::Builder::new_multi_thread().worker_threads(config.worker_threads).enable_all().build()?;
    runtime.block_on(mediaflow::run(config))
}

/// Subcommand names, for [`with_default_command`].
const COMMANDS: &[&str] =
    &["serve", "check-config", "thumb", "sign-url", "upload", "download", "delete", "health", "help"];

/// `mediaflow [OPTIONS]` means `mediaflow serve [OPTIONS]`, and so does
/// `mediaflow [OPTIONS] serve`: the server's options belong to `serve`, and
/// both spellings users try are accepted.
fn with_default_command(mut args: Vec<std::ffi::OsString>) -> Vec<std::ffi::OsString> {
    let named = args.iter().skip(1).position(|a| a.to_str().is_some_and(|a| COMMANDS.contains(&a))).map(|p| p + 1);
    match named {
        Some(p) if p > 1 && args[p] == "serve" => {
            let serve = args.remove(p);
            args.insert(1, serve);
        }
        Some(_) => {}
        None if args.get(1).is_some_and(|a| ["-h", "--help", "-V", "--version"].iter().any(|f| a == f)) => {}
        None => args.insert(1, "serve".into()),
    }
    args
}

/// Every command but `serve`, on a default runtime.
async fn async_main(command: Command) -> anyhow::Result<()> {
    match command {
        // The client needs none of the server's configuration, and its stdout
        // is its result: no tracing there.
        Command::Upload(args) => std::process::exit(upload(args).await),
        Command::Download(args) => std::process::exit(download(args).await),
        Command::Delete(args) => std::process::exit(delete(args).await),
        Command::Health { url, port, bind_addr } => std::process::exit(health(url, port, bind_addr).await),
        Command::Serve { .. } => unreachable!("main() runs serve on a runtime of its own"),
        Command::CheckConfig { path, settings } => {
            init_tracing(settings.log_format);
            let config = Config::from_settings(*settings)?;
            let source = path.or(config.profiles_source.clone());
            let profiles = mediaflow::startup::load_profiles(source.as_deref(), &config.profiles_s3).await?;
            println!("checked: {}", source.as_deref().unwrap_or("the bundled example (config/profiles.yaml)"));
            print_profiles(&profiles);
            println!("ok: {} profiles", profiles.iter().count());
            Ok(())
        }
        Command::Thumb {
            input,
            width,
            height,
            fit,
            gravity,
            format,
            quality,
            output,
            max_source_pixels,
            max_animation_frames,
        } => {
            let format = OutputFormat::from_name(&format)
                .with_context(|| format!("format '{format}' is not one of webp, jpeg, png, avif"))?;
            let size = match height {
                Some(h) => Size::boxed(width, h, fit.unwrap_or_default(), gravity.unwrap_or_default()),
                None => Size::Width(width),
            };
            let spec = ThumbSpec { size, format, quality };
            let limits = Limits { max_pixels: max_source_pixels, max_frames: max_animation_frames };
            tokio::task::block_in_place(|| thumb(&input, spec, limits, &output))
        }
        Command::SignUrl { url, key } => {
            anyhow::ensure!(!key.is_empty(), "THUMB_SIGNING_KEY is empty: nothing to sign with");
            println!("{}", sign_url(&mediaflow::thumbs::UrlSignature::new(&key), &url));
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::with_default_command;

    fn run(args: &[&str]) -> Vec<String> {
        let args = args.iter().map(std::ffi::OsString::from).collect();
        with_default_command(args).into_iter().map(|a| a.into_string().unwrap()).collect()
    }

    #[test]
    fn serve_is_the_default_command_wherever_it_is_written() {
        assert_eq!(run(&["mf"]), ["mf", "serve"]);
        assert_eq!(run(&["mf", "--port", "9000"]), ["mf", "serve", "--port", "9000"]);
        assert_eq!(run(&["mf", "--port", "9000", "serve"]), ["mf", "serve", "--port", "9000"]);
        assert_eq!(run(&["mf", "serve", "--port", "9000"]), ["mf", "serve", "--port", "9000"]);
        assert_eq!(run(&["mf", "upload", "x"]), ["mf", "upload", "x"]);
        assert_eq!(run(&["mf", "download", "x"]), ["mf", "download", "x"]);
        assert_eq!(run(&["mf", "delete", "x"]), ["mf", "delete", "x"]);
        assert_eq!(run(&["mf", "--help"]), ["mf", "--help"]);
    }
}
