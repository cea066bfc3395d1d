//! Wiring: configuration → store → profiles → state → server.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;

use crate::config::{Config, Profiles, StorageConfig};
use crate::shutdown::Lifecycle;
use crate::state::AppState;
use crate::storage::DynStore;
use crate::storage::fs::FsStore;
use crate::storage::instrumented::Instrumented;
use crate::storage::s3::{S3Settings, S3Store};
use crate::storage::signing::UrlSigner;

/// Temp files of the filesystem store not written to for this long were left
/// by a crash (SPEC §4: gone within the hour).
pub const FS_TEMP_MAX_AGE: Duration = Duration::from_secs(3600);
/// Multipart uploads of the filesystem store untouched for this long were
/// abandoned (SPEC §4: 7 days).
pub const FS_UPLOAD_MAX_AGE: Duration = Duration::from_secs(7 * 24 * 3600);
/// How often the filesystem store is swept while the service runs.
pub const FS_SWEEP_EVERY: Duration = Duration::from_secs(10 * 60);

/// The opened store, and what start-up needs besides.
#[derive(Debug)]
pub struct OpenedStore {
    /// The store the service uses.
    pub store: DynStore,
    /// The filesystem backend's upload URL signer.
    pub fs_signer: Option<UrlSigner>,
    /// The filesystem backend itself, for its sweeper.
    pub fs: Option<Arc<FsStore>>,
}

/// Opens the configured store; the filesystem backend is swept once.
pub async fn build_store(config: &Config) -> anyhow::Result<OpenedStore> {
    match &config.storage {
        StorageConfig::Fs { data_dir } => {
            let signer = UrlSigner::new(config.signing_secret.expose().as_bytes());
            let store = FsStore::open(data_dir, signer.clone())
                .await
                .with_context(|| format!("opening DATA_DIR {}", data_dir.display()))?;
            let store = Arc::new(store);
            sweep_fs(&store).await;
            tracing::info!(root = %store.root().display(), "storage: filesystem");
            let dyn_store: DynStore = Arc::new(Instrumented::new(store.clone()));
            Ok(OpenedStore { store: dyn_store, fs_signer: Some(signer), fs: Some(store) })
        }
        StorageConfig::S3(settings) => {
            let store = S3Store::connect(settings).await;
            let endpoint = settings.endpoint.as_deref().unwrap_or("AWS (region default endpoint)");
            tracing::info!(bucket = %settings.bucket, endpoint, "storage: s3");
            // Say what is wrong in the operator's terms now, not only through
            // /ready later. Not fatal: the store may come up after the service.
            match crate::storage::ObjectStore::check(&store).await {
                Ok(()) => {}
                Err(crate::storage::StorageError::NotFound) => tracing::error!(
                    "S3 bucket '{}' does not exist at {endpoint}: create it, or fix S3_BUCKET / S3_ENDPOINT \
                     (the service starts, but /ready answers 503 until it exists)",
                    settings.bucket
                ),
                Err(e) => tracing::error!(
                    error = %e,
                    "S3 bucket '{}' is not reachable at {endpoint}: check S3_ENDPOINT, credentials and the network \
                     (the service starts, but /ready answers 503 until the store answers)",
                    settings.bucket
                ),
            }
            Ok(OpenedStore { store: Arc::new(Instrumented::new(Arc::new(store))), fs_signer: None, fs: None })
        }
    }
}

async fn sweep_fs(store: &FsStore) {
    match store.sweep(FS_TEMP_MAX_AGE, FS_UPLOAD_MAX_AGE).await {
        Ok(0) => {}
        Ok(n) => tracing::info!(swept = n, "swept abandoned uploads and temp files"),
        Err(e) => tracing::warn!(error = %e, "could not sweep abandoned uploads and temp files"),
    }
}

/// Sweeps the filesystem store every [`FS_SWEEP_EVERY`] until shutdown, so
/// what a crash or an abandoned upload leaves does not wait for a restart.
pub fn spawn_fs_sweeper(lifecycle: &Lifecycle, store: Arc<FsStore>) {
    lifecycle.spawn_daemon(async move {
        let start = tokio::time::Instant::now() + FS_SWEEP_EVERY;
        let mut ticks = tokio::time::interval_at(start, FS_SWEEP_EVERY);
        loop {
            ticks.tick().await;
            sweep_fs(&store).await;
        }
    });
}

/// Loads the profiles from a path, an `s3://bucket/key` URL, or the bundled example.
pub async fn load_profiles(source: Option<&str>, s3: &S3Settings) -> anyhow::Result<Profiles> {
    let Some(source) = source else {
        return Ok(Profiles::example());
    };
    let text = if let Some(rest) = source.strip_prefix("s3://") {
        let (bucket, key) = rest
            .split_once('/')
            .filter(|(b, k)| !b.is_empty() && !k.is_empty())
            .with_context(|| format!("{source}: expected s3://bucket/key"))?;
        let settings = S3Settings { bucket: bucket.to_owned(), ..s3.clone() };
        let store = S3Store::connect(&settings).await;
        let bytes = store
            .read_from(bucket, key)
            .await
            .with_context(|| format!("{source}: could not read the profiles file"))?;
        String::from_utf8(bytes.to_vec()).with_context(|| format!("{source}: not UTF-8"))?
    } else {
        std::fs::read_to_string(source).with_context(|| format!("{source}: could not read the profiles file"))?
    };
    Ok(Profiles::parse(&text, source)?)
}

/// Builds the state from a validated configuration.
pub async fn build_state(config: Config) -> anyhow::Result<AppState> {
    build_state_wrapped(config, |store| store).await
}

/// [`build_state`], the store decorated by `wrap` (instrumentation, fault
/// injection in tests) before anything uses it.
pub async fn build_state_wrapped(config: Config, wrap: impl FnOnce(DynStore) -> DynStore) -> anyhow::Result<AppState> {
    let opened = build_store(&config).await?;
    let profiles = load_profiles(config.profiles_source.as_deref(), &config.profiles_s3).await?;
    let names: Vec<&str> = profiles.iter().map(|p| p.name.as_str()).collect();
    tracing::info!(
        file = config.profiles_source.as_deref().unwrap_or("<bundled config/profiles.yaml>"),
        profiles = %names.join(", "),
        "profiles loaded"
    );
    if config.api_key.is_none() {
        tracing::warn!("API_KEY is not set: mutating endpoints are open to anyone (development mode)");
    }
    if config.signing_secret_generated {
        tracing::warn!(
            "SIGNING_SECRET is not set: a random one is used, so upload URLs and tokens die with this \
             process and other instances reject them"
        );
    }
    if !crate::image::JPEG_SIMD {
        tracing::warn!(
            "this binary's JPEG decoder was built without SIMD (nasm was missing): thumbnails of JPEGs \
             cost ~1.2x more CPU; install nasm, `cargo clean --release -p mozjpeg-sys` and rebuild"
        );
    }
    let state = AppState::new(config, profiles, wrap(opened.store), opened.fs_signer);
    if let Some(fs) = opened.fs {
        spawn_fs_sweeper(&state.lifecycle, fs);
    }
    state.videos.start_worker(&state.lifecycle);
    crate::metrics::spawn_upkeep(&state.lifecycle);
    Ok(state)
}

/// A built service bound to its listener, ready to serve: what `main` runs
/// and what the tests start, through the same code.
#[derive(Debug)]
pub struct Application {
    /// What every request shares.
    pub state: AppState,
    listener: tokio::net::TcpListener,
}

impl Application {
    /// Builds the state, starts its background work (sweeper, video jobs)
    /// and binds `config.listen` (port 0: a free one).
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        Self::build_wrapped(config, |store| store).await
    }

    /// [`Self::build`], the store decorated by `wrap` first.
    pub async fn build_wrapped(config: Config, wrap: impl FnOnce(DynStore) -> DynStore) -> anyhow::Result<Self> {
        let listen = config.listen;
        let state = build_state_wrapped(config, wrap).await?;
        let listener = tokio::net::TcpListener::bind(listen).await.with_context(|| format!("binding {listen}"))?;
        tracing::info!(addr = %listener.local_addr()?, "listening");
        Ok(Self { state, listener })
    }

    /// The address it listens on.
    pub fn local_addr(&self) -> std::io::Result<std::net::SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves until the lifecycle shuts down, then drains requests and
    /// background work up to the deadline. Returns whether everything
    /// finished in time.
    pub async fn run_until_stopped(self) -> bool {
        let Self { state, listener } = self;
        let lifecycle = state.lifecycle.clone();
        let http = state.config.http.clone();
        let drained = crate::server::serve(
            listener,
            crate::app(state.clone()),
            lifecycle.clone(),
            http.client_idle_timeout,
            http.shutdown_timeout,
        )
        .await;
        let tasks_done = lifecycle.wait_for_tasks(http.shutdown_timeout).await;
        if !tasks_done {
            tracing::warn!(pending = lifecycle.pending_tasks(), "background work did not finish before the deadline");
        }
        tracing::info!(drained, tasks_done, "stopped");
        drained && tasks_done
    }
}

/// Runs the server until SIGTERM/SIGINT, then drains and returns.
pub async fn run(config: Config) -> anyhow::Result<()> {
    config.check_protected_mode()?;
    let app = Application::build(config).await?;
    let lifecycle = app.state.lifecycle.clone();
    tokio::spawn(async move {
        crate::shutdown::signal().await;
        lifecycle.shut_down();
    });
    app.run_until_stopped().await;
    Ok(())
}
