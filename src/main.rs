//! The `mediaflow` command: the server and its tools.

use anyhow::Context;
use clap::{Parser, Subcommand};
use mediaflow::config::{Config, LogFormat, Profiles, Settings};
use mediaflow::image::{Limits, OutputFormat, ThumbSpec};

#[derive(Parser)]
#[command(name = "mediaflow", version, about = "Presigned uploads, originals and on-demand thumbnails")]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    settings: Settings,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server (the default).
    Serve,
    /// Validate a profiles file (default: STORAGE_CONFIG_PATH or the bundled example) and print it.
    CheckConfig {
        /// The YAML file or s3://bucket/key.
        path: Option<String>,
    },
    /// Make one thumbnail offline with the server's image pipeline.
    Thumb {
        /// Source image (JPEG, PNG, WebP, GIF, BMP).
        input: std::path::PathBuf,
        /// Target width in pixels (never upscaled).
        #[arg(short = 'w', long)]
        width: u32,
        /// Output format: webp, jpeg or png.
        #[arg(short = 'f', long, default_value = "webp")]
        format: String,
        /// Encoder quality, 1..=100.
        #[arg(short = 'q', long, default_value_t = 85, value_parser = clap::value_parser!(u8).range(1..=100))]
        quality: u8,
        /// Output file.
        #[arg(short = 'o', long)]
        output: std::path::PathBuf,
    },
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
            p.kind.as_str(),
            p.allowed_mimes.join(","),
            p.size_max_bytes,
            p.multipart_threshold,
            p.part_size,
            p.token_ttl.as_secs(),
            p.storage_path.as_str(),
            p.thumb_folder,
            p.sizes,
            p.default_size,
            p.quality,
            p.convert_to.ext,
        );
    }
}

/// `mediaflow thumb`: the pipeline on one file, timed.
fn thumb(input: &std::path::Path, spec: ThumbSpec, max_pixels: u64, output: &std::path::Path) -> anyhow::Result<()> {
    let source = std::fs::read(input).with_context(|| format!("reading {}", input.display()))?;
    let started = std::time::Instant::now();
    let made = mediaflow::image::thumbnail(&source, &spec, &Limits { max_pixels })?;
    let elapsed = started.elapsed();
    std::fs::write(output, &made.bytes).with_context(|| format!("writing {}", output.display()))?;
    println!(
        "{} -> {} {}x{} {} bytes in {:.1} ms",
        input.display(),
        output.display(),
        made.width,
        made.height,
        made.bytes.len(),
        elapsed.as_secs_f64() * 1000.0
    );
    Ok(())
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

fn main() -> anyhow::Result<()> {
    limit_malloc_arenas();
    tokio::runtime::Runtime::new()?.block_on(async_main())
}

async fn async_main() -> anyhow::Result<()> {
    let _ = dotenvy::dotenv();
    let cli = Cli::parse();
    init_tracing(cli.settings.log_format);
    let config = Config::from_settings(cli.settings).map_err(anyhow::Error::msg)?;
    match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => mediaflow::run(config).await,
        Command::CheckConfig { path } => {
            let source = path.or(config.profiles_source.clone());
            let profiles = mediaflow::startup::load_profiles(source.as_deref(), &config.profiles_s3).await?;
            print_profiles(&profiles);
            println!("ok: {} profiles", profiles.iter().count());
            Ok(())
        }
        Command::Thumb { input, width, format, quality, output } => {
            let format = OutputFormat::from_name(&format)
                .with_context(|| format!("format '{format}' is not one of webp, jpeg, png"))?;
            let spec = ThumbSpec { width, format, quality };
            tokio::task::block_in_place(|| thumb(&input, spec, config.transforms.max_pixels, &output))
        }
    }
}
