//! The asset library: what happens to an asset as a whole — deleting it (its
//! original, every variant, its video proxies and facts, and their cached
//! copies) and replacing its
//! original by an upload through the service (POST /thumb), which makes
//! every size of the profile before anything is stored.

use std::sync::Arc;

use bytes::Bytes;

use crate::assets::{AssetError, AssetKey};
use crate::config::MediaKind;
use crate::media_type::MediaType;
use crate::storage::keys::Extension;
use crate::storage::{DynStore, ObjectKey, PutOptions, StorageError};
use crate::thumbs::{ThumbError, Thumbs};
use crate::video::Videos;

/// Why a library operation failed. Mapped to HTTP in `http::error`.
#[derive(Debug, thiserror::Error)]
pub enum LibraryError {
    /// Nothing is stored for the asset.
    #[error("nothing is stored for '{key_base}' in profile '{profile}'")]
    NothingStored {
        /// The profile.
        profile: String,
        /// The id.
        key_base: String,
    },
    /// The upload is not one of the profile's types.
    #[error("the file is not one of the types profile '{profile}' allows ({allowed})")]
    TypeNotAllowed {
        /// The profile.
        profile: String,
        /// Its allowed types, comma-separated.
        allowed: String,
    },
    /// The profile holds videos: their posters are made from the stored video.
    #[error("profile '{0}' holds videos: upload them with a presign; posters are made on demand")]
    VideoProfile(String),
    /// The asset reference or a key is invalid.
    #[error(transparent)]
    Asset(#[from] AssetError),
    /// Making the thumbnails failed.
    #[error(transparent)]
    Thumb(#[from] ThumbError),
    /// The store failed.
    #[error(transparent)]
    Storage(#[from] StorageError),
}

/// What [`Library::replace_original`] stored.
#[derive(Debug, Clone)]
pub struct Replaced {
    /// The original's key.
    pub object_key: ObjectKey,
    /// Each size's variant key.
    pub thumbnails: Vec<(crate::config::ThumbSize, ObjectKey)>,
}

/// The asset library service.
#[derive(Debug)]
pub struct Library {
    store: DynStore,
    thumbs: Arc<Thumbs>,
    videos: Arc<Videos>,
}

impl Library {
    /// A library over `store`, whose variants `thumbs` makes and caches.
    pub fn new(store: DynStore, thumbs: Arc<Thumbs>, videos: Arc<Videos>) -> Self {
        Self { store, thumbs, videos }
    }

    /// Deletes the original and every variant of `asset` (all sizes, formats
    /// and qualities), drops them from this instance's memory cache, and
    /// returns how many objects were deleted.
    pub async fn delete(&self, asset: &AssetKey) -> Result<usize, LibraryError> {
        let mut deleted = 0;
        // The original goes first and the variants are listed after: a variant
        // written meanwhile by a render either shows in this listing or sees
        // the original gone and removes itself (`Thumbs::store_later`).
        match asset.find_original(&*self.store).await {
            Ok(original) => {
                self.store.delete(&original.key).await?;
                deleted += 1;
            }
            Err(StorageError::NotFound) => {}
            Err(e) => return Err(e.into()),
        }
        for key in self.variant_keys(asset).await? {
            self.store.delete(&key).await?;
            deleted += 1;
        }
        deleted += self.videos.delete_proxies(asset).await?;
        // The facts are remade from the next original; not counted as media.
        self.store.delete(&asset.facts_key()?).await?;
        self.thumbs.forget(asset);
        if deleted == 0 {
            return Err(LibraryError::NothingStored {
                profile: asset.profile().name.clone(),
                key_base: asset.key_base().to_string(),
            });
        }
        Ok(deleted)
    }

    /// The keys of every stored variant of `asset`.
    async fn variant_keys(&self, asset: &AssetKey) -> Result<Vec<ObjectKey>, LibraryError> {
        let prefix = asset.variant_prefix().map_err(AssetError::from)?;
        let listed = crate::storage::list_all(&*self.store, &prefix).await?;
        // The prefix `k1_` also matches other ids such as `k1_b`: keep only ours.
        Ok(listed.into_iter().map(|o| o.key).filter(|k| asset.owns_variant(k.as_str())).collect())
    }

    /// Stores an uploaded original (replacing an earlier one, whose variants
    /// are deleted) and makes every size of the profile. The image is checked
    /// and rendered before anything is stored, so a bad upload changes nothing.
    pub async fn replace_original(&self, asset: &AssetKey, image: Bytes) -> Result<Replaced, LibraryError> {
        let profile = asset.profile();
        let media: &MediaType =
            crate::media_type::sniff(&image).filter(|t| profile.allows_mime(t.mime)).ok_or_else(|| {
                LibraryError::TypeNotAllowed {
                    profile: profile.name.clone(),
                    allowed: profile.allowed_mimes.join(", "),
                }
            })?;
        if profile.kind() == MediaKind::Video {
            return Err(LibraryError::VideoProfile(profile.name.clone()));
        }
        let rendered = self.thumbs.render_all(asset, image.clone()).await?;
        let asset = match asset.ext() {
            Some(_) => asset.clone(),
            None => asset.clone().with_ext(Extension::parse(media.extension()).map_err(AssetError::from)?),
        };
        let original = asset.original_key()?;
        let opts = PutOptions { content_type: Some(media.mime.to_owned()), if_none_match: false };
        self.store.put(&original, image.into(), opts).await?;
        for key in self.variant_keys(&asset).await? {
            self.store.delete(&key).await?;
        }
        self.thumbs.forget(&asset);
        let mut thumbnails = Vec::with_capacity(rendered.len());
        for (width, key, variant) in rendered {
            self.thumbs.store_variant(&key, &variant).await?;
            thumbnails.push((width, key));
        }
        Ok(Replaced { object_key: original, thumbnails })
    }
}
