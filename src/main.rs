//! The `mediaflow` command: the server and its tools.

use clap::{Parser, Subcommand};
use mediaflow::config::{Config, LogFormat, Profiles, Settings};

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

#[tokio::main]
async fn main() -> anyhow::Result<()> {
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
    }
}
