//! The state shared by every request.

use std::ops::Deref;
use std::sync::Arc;

use crate::config::{Config, Profiles};
use crate::shutdown::Lifecycle;
use crate::storage::DynStore;
use crate::storage::signing::UrlSigner;
use crate::thumbs::Thumbs;
use crate::uploads::Uploads;

/// Cheap to clone: everything lives behind one `Arc`.
#[derive(Debug, Clone)]
pub struct AppState(Arc<Inner>);

/// What [`AppState`] holds.
#[derive(Debug)]
pub struct Inner {
    /// Validated settings.
    pub config: Config,
    /// Validated profiles.
    pub profiles: Arc<Profiles>,
    /// The store.
    pub store: DynStore,
    /// Verifies the filesystem backend's upload URLs (`None` on S3).
    pub fs_signer: Option<UrlSigner>,
    /// Shutdown and background work.
    pub lifecycle: Lifecycle,
    /// Thumbnails: cache, single-flight, bounded rendering.
    pub thumbs: Arc<Thumbs>,
    /// Whole assets: deletion, replacement by POST /thumb.
    pub library: crate::library::Library,
    /// Presigned uploads: presign, parts, complete, abort.
    pub uploads: Arc<Uploads>,
    /// Video: posters, proxies and their jobs, facts.
    pub videos: Arc<crate::video::Videos>,
}

impl AppState {
    /// Assembles the state. `fs_signer` is set when the store is the
    /// filesystem backend, whose upload URLs this service must accept.
    pub fn new(config: Config, profiles: Profiles, store: DynStore, fs_signer: Option<UrlSigner>) -> Self {
        let lifecycle = Lifecycle::new();
        let profiles = Arc::new(profiles);
        let videos = Arc::new(crate::video::Videos::new(&config, store.clone(), profiles.clone()));
        let thumbs = Arc::new(Thumbs::new(&config, store.clone(), lifecycle.clone(), videos.clone()));
        let uploads = Arc::new(Uploads::new(
            store.clone(),
            profiles.clone(),
            config.signing_secret.expose().as_bytes(),
            lifecycle.clone(),
            config.transforms.max_pixels,
            videos.clone(),
        ));
        let library = crate::library::Library::new(store.clone(), thumbs.clone(), videos.clone());
        Self(Arc::new(Inner { config, profiles, store, fs_signer, lifecycle, thumbs, library, uploads, videos }))
    }
}

impl Deref for AppState {
    type Target = Inner;

    fn deref(&self) -> &Inner {
        &self.0
    }
}
