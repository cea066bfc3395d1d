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

/// The media facts of an original, computed once per version (ETag) and
/// stored beside its variants.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Facts {
    /// The version these facts describe.
    pub etag: String,
    /// Displayed width (orientation or rotation applied).
    pub width: Option<u32>,
    /// Displayed height.
    pub height: Option<u32>,
    /// ThumbHash of the image or poster, base64.
    pub placeholder: Option<String>,
    /// What only videos have (ffprobe).
    pub video: Option<VideoFacts>,
}

/// The facts of a video.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct VideoFacts {
    /// Seconds.
    pub duration_s: Option<f64>,
    /// `h264`, `vp9`…
    pub video_codec: Option<String>,
    /// `aac`, `opus`… (none without audio).
    pub audio_codec: Option<String>,
    /// Frames per second.
    pub frame_rate: Option<f64>,
}

/// What a page needs to lay out an asset before loading it.
#[derive(Debug, Clone)]
pub struct Description {
    /// The original's metadata.
    pub original: crate::storage::ObjectMeta,
    /// Its type.
    pub mime: String,
    /// Its facts.
    pub facts: Facts,
    /// Each proxy format's state (videos with proxies).
    pub proxies: Vec<(crate::config::ProxyFormat, &'static str)>,
}

impl Library {
    /// Describes `asset`: the original's metadata and its facts (computed on
    /// the first call for each version and stored), and its proxies' state,
    /// read live.
    pub async fn describe(&self, asset: &AssetKey) -> Result<Description, LibraryError> {
        let original = match asset.find_original(&*self.store).await {
            Ok(meta) => meta,
            Err(StorageError::NotFound) => {
                return Err(LibraryError::NothingStored {
                    profile: asset.profile().name.clone(),
                    key_base: asset.key_base().to_string(),
                });
            }
            Err(e) => return Err(e.into()),
        };
        let facts = match self.stored_facts(asset, &original.etag).await? {
            Some(facts) => facts,
            None => self.compute_facts(asset, &original).await?,
        };
        let mime = match original.content_type.as_deref().filter(|t| crate::media_type::resolve(t).is_some()) {
            Some(t) => t.to_owned(),
            None => self.sniffed_type(&original).await?.unwrap_or_else(|| "application/octet-stream".into()),
        };
        let proxies = self.videos.proxy_states(asset, &original).await?;
        Ok(Description { original, mime, facts, proxies })
    }

    async fn sniffed_type(&self, original: &crate::storage::ObjectMeta) -> Result<Option<String>, LibraryError> {
        if original.size == 0 {
            return Ok(None);
        }
        let len = crate::media_type::SNIFF_LEN.min(original.size);
        let range = crate::storage::ByteRange::Bounded { start: 0, end: len - 1 };
        let head = self.store.get(&original.key, Some(range)).await?.collect(len).await?;
        Ok(crate::media_type::sniff(&head).map(|t| t.mime.to_owned()))
    }

    async fn stored_facts(&self, asset: &AssetKey, etag: &str) -> Result<Option<Facts>, LibraryError> {
        match self.store.get(&asset.facts_key()?, None).await {
            Ok(object) => {
                let bytes = object.collect(64 * 1024).await?;
                Ok(serde_json::from_slice::<Facts>(&bytes).ok().filter(|f| f.etag == etag))
            }
            Err(StorageError::NotFound) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    async fn compute_facts(
        &self,
        asset: &AssetKey,
        original: &crate::storage::ObjectMeta,
    ) -> Result<Facts, LibraryError> {
        let mut facts =
            Facts { etag: original.etag.clone(), width: None, height: None, placeholder: None, video: None };
        let complete = match asset.profile().video() {
            None => {
                let placeholder = self.thumbs.placeholder(self.thumbs.source(asset).await?).await?;
                facts.width = Some(placeholder.width);
                facts.height = Some(placeholder.height);
                facts.placeholder = Some(placeholder.thumbhash);
                true
            }
            Some(video) if self.videos.available() => {
                match self.videos.facts(original).await {
                    Ok(v) => {
                        facts.width = Some(v.width);
                        facts.height = Some(v.height);
                        facts.video = Some(VideoFacts {
                            duration_s: v.duration_s,
                            video_codec: v.video_codec,
                            audio_codec: v.audio_codec,
                            frame_rate: v.frame_rate,
                        });
                        let poster = self.thumbs.poster(asset, video.poster_time).await?;
                        facts.placeholder = Some(self.thumbs.placeholder(poster).await?.thumbhash);
                    }
                    // Not a video ffmpeg can read: the facts say so by what they lack.
                    Err(crate::video::VideoError::NotAVideo(_)) => {}
                    Err(e) => return Err(ThumbError::from(e).into()),
                }
                true
            }
            // Without ffmpeg the video fields are left out, and nothing is
            // stored: they are computed once ffmpeg is there.
            Some(_) => false,
        };
        if complete {
            let body = serde_json::to_vec(&facts).expect("serialisable");
            let opts = PutOptions { content_type: Some("application/json".into()), if_none_match: false };
            self.store.put(&asset.facts_key()?, body.into(), opts).await?;
        }
        Ok(facts)
    }
}
