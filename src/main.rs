//! The `mediaflow` command: the server and its tools.

use anyhow::Context;
use clap::{Parser, Subcommand};
use mediaflow::client::{ProgressMode, UploadOptions};
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

/// `mediaflow upload`: the flags map one to one onto [`UploadOptions`].
#[derive(clap::Args)]
struct UploadArgs {
    /// The file to upload; its type is sniffed from its first bytes.
    file: std::path::PathBuf,
    /// The server's base URL.
    #[arg(long, env = "MEDIAFLOW_SERVER")]
    server: String,
    /// The profile to upload under (its kind and policy apply).
    #[arg(long)]
    profile: String,
    /// The id to store it under (default: the file name up to its first dot).
    #[arg(long)]
    key_base: Option<String>,
    /// The server's API key.
    #[arg(long, env = "MEDIAFLOW_API_KEY", hide_env_values = true)]
    api_key: Option<String>,
    /// Parts in flight at once (multipart uploads).
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..=64))]
    parallel: u16,
    /// Only resume an interrupted upload; fail if there is none.
    #[arg(long)]
    resume: bool,
    /// Print the result as one JSON object.
    #[arg(long)]
    json: bool,
    /// No progress output and no notices.
    #[arg(short, long)]
    quiet: bool,
}

/// Runs `mediaflow upload` and returns the exit code: 0 done, 1 failed,
/// 3 stopped part-way (a re-run resumes), 130 interrupted by Ctrl-C.
async fn upload(args: UploadArgs) -> i32 {
    let mut opts = UploadOptions::new(args.file, args.server, args.profile);
    opts.key_base = args.key_base;
    opts.api_key = args.api_key.filter(|k| !k.is_empty());
    opts.parallel = usize::from(args.parallel);
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
        Ok(done) if args.json => match serde_json::to_string(&done) {
            Ok(json) => println!("{json}"),
            Err(e) => eprintln!("mediaflow upload: {e}"),
        },
        Ok(done) => {
            println!("object_key: {}", done.object_key);
            println!("original:   {}", done.original_url);
            println!("thumbnail:  {}", done.thumbnail_url);
            if let Some(url) = &done.avatar_url {
                println!("avatar:     {url}");
            }
        }
        Err(e) => {
            eprintln!("mediaflow upload: {e}");
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
/// (bench/http-load.sh). Must run before any thread exists. An explicit
/// `MALLOC_ARENA_MAX` in the environment wins.
fn limit_malloc_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
        // SAFETY: mallopt only sets a tuning parameter; no thread exists yet.
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, 2);
        }
    }
}

fn main() -> std::process::ExitCode {
    limit_malloc_arenas();
    let outcome = tokio::runtime::Runtime::new().map_err(anyhow::Error::from).and_then(|rt| rt.block_on(async_main()));
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

/// Subcommand names, for [`with_default_command`].
const COMMANDS: &[&str] = &["serve", "check-config", "thumb", "sign-url", "upload", "health", "help"];

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

async fn async_main() -> anyhow::Result<()> {
    let _ = dotenvy::dotenv();
    let cli = Cli::parse_from(with_default_command(std::env::args_os().collect()));
    match cli.command {
        // The client needs none of the server's configuration, and its stdout
        // is its result: no tracing there.
        Command::Upload(args) => std::process::exit(upload(args).await),
        Command::Health { url, port, bind_addr } => std::process::exit(health(url, port, bind_addr).await),
        Command::Serve { settings } => {
            init_tracing(settings.log_format);
            let config = Config::from_settings(*settings)?;
            if let Err(e) = config.check_protected_mode() {
                eprintln!("mediaflow: {e}");
                std::process::exit(2);
            }
            mediaflow::run(config).await
        }
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
        assert_eq!(run(&["mf", "--help"]), ["mf", "--help"]);
    }
}
