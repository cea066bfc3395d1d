//! An asset as the media URLs name it (`/{profile}/{image_id}?shard=`),
//! resolved against the profiles into the keys of its original and variants.
//!
//! Lookups recompute the key from the id, exactly as uploads computed it, so
//! `/originals`, `/thumb` and `DELETE /v1/assets` can never disagree.

use std::sync::Arc;

use bytes::Bytes;

use crate::config::{MediaKind, Profile, Profiles};
use crate::http::error::ApiError;
use crate::state::AppState;
use crate::storage::keys::{Extension, KeyBase, KeyError, KeyPrefix, Shard, VariantKey, split_image_id};
use crate::storage::{ObjectKey, ObjectStore, PutOptions, StorageError};
use crate::uploads::extension_for_mime;
use crate::uploads::sniff::same_type;

/// Why an asset reference was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AssetError {
    /// No profile of that name.
    #[error("unknown profile '{0}'")]
    UnknownProfile(String),
    /// The id, extension or shard breaks the key rules.
    #[error(transparent)]
    Key(#[from] KeyError),
    /// The profile's storage_path uses `{ext}` but the id has none.
    #[error("this profile stores originals with their extension: add it to the id (e.g. '{0}.jpg')")]
    ExtensionRequired(String),
}

/// What [`AppState::replace_original`] stored.
#[derive(Debug, Clone)]
pub struct Replaced {
    /// The original's key.
    pub object_key: ObjectKey,
    /// Each size's variant key.
    pub thumbnails: Vec<(u32, ObjectKey)>,
}

/// A resolved reference to one asset.
#[derive(Debug, Clone)]
pub struct AssetRef {
    /// The asset's profile.
    pub profile: Arc<Profile>,
    /// The client's id.
    pub key_base: KeyBase,
    /// The extension from the id, when the template uses `{ext}`.
    pub ext: Option<Extension>,
    /// A custom shard (only when the profile shards).
    pub shard: Option<Shard>,
}

impl AssetRef {
    /// Resolves `profile` / `image_id` (which may carry an extension) / `shard`.
    pub fn resolve(
        profiles: &Profiles,
        profile: &str,
        image_id: &str,
        shard: Option<&str>,
    ) -> Result<Self, AssetError> {
        let profile = profiles.get(profile).ok_or_else(|| AssetError::UnknownProfile(profile.to_owned()))?.clone();
        Self::for_profile(profile, image_id, shard)
    }

    /// Resolves an id within a known profile.
    pub fn for_profile(profile: Arc<Profile>, image_id: &str, shard: Option<&str>) -> Result<Self, AssetError> {
        // A template without {ext} ignores whatever extension the id carries
        // (SPEC §2), so only a template with it has the extension validated.
        let (key_base, ext) = if profile.storage_path.uses_ext() {
            split_image_id(image_id)?
        } else {
            (KeyBase::parse(image_id.split_once('.').map_or(image_id, |(base, _)| base))?, None)
        };
        // Without sharding any client shard is ignored, as in the seed; an
        // empty `?shard=` is no shard, as an empty `shard` is in a presign.
        let shard = match shard {
            Some(s) if profile.enable_sharding && !s.is_empty() => Some(Shard::parse(s)?),
            _ => None,
        };
        Ok(Self { profile, key_base, ext, shard })
    }

    /// The key of the stored original. For a `{ext}` template and an id
    /// without an extension the original is found with one list call (`photo`
    /// finds `photo.jpg`); none found is `NotFound`.
    pub async fn locate_original(&self, store: &dyn ObjectStore) -> Result<ObjectKey, StorageError> {
        let template = &self.profile.storage_path;
        let stem = match (&self.ext, template.before_ext(&self.key_base, self.shard.as_ref())) {
            (None, Some(stem)) => stem,
            _ => {
                return self.original_key().map_err(|e| match e {
                    AssetError::Key(k) => StorageError::InvalidKey(k),
                    _ => StorageError::NotFound,
                });
            }
        };
        let page = store.list(&KeyPrefix::parse(stem.as_str())?, None, 100).await?;
        page.objects
            .into_iter()
            .find_map(|o| {
                let ext = Extension::parse(o.key.as_str().strip_prefix(&stem)?).ok()?;
                let key = template.original(&self.key_base, Some(&ext), self.shard.as_ref()).ok()?;
                (key == o.key).then_some(key)
            })
            .ok_or(StorageError::NotFound)
    }

    /// The key of the original.
    pub fn original_key(&self) -> Result<ObjectKey, AssetError> {
        if self.profile.storage_path.uses_ext() && self.ext.is_none() {
            return Err(AssetError::ExtensionRequired(self.key_base.to_string()));
        }
        Ok(self.profile.storage_path.original(&self.key_base, self.ext.as_ref(), self.shard.as_ref())?)
    }

    /// The key of one variant.
    pub fn variant_key(&self, variant: &VariantKey) -> Result<ObjectKey, AssetError> {
        Ok(variant.key(&self.profile.thumb_folder, &self.key_base)?)
    }
}

impl AppState {
    /// Deletes the original and every variant of `asset` (all sizes, formats
    /// and qualities) and returns how many objects were deleted.
    pub async fn delete_asset(&self, asset: &AssetRef) -> Result<usize, ApiError> {
        let mut doomed = Vec::new();
        let found = match asset.locate_original(&*self.store).await {
            Ok(original) => self.store.head(&original).await.map(|_| original),
            Err(e) => Err(e),
        };
        match found {
            Ok(original) => doomed.push(original),
            Err(StorageError::NotFound) => {}
            Err(e) => return Err(e.into()),
        }
        doomed.extend(self.variant_keys(asset).await?);
        for key in &doomed {
            self.store.delete(key).await?;
        }
        self.forget_variants(asset);
        Ok(doomed.len())
    }

    /// The keys of every stored variant of `asset`.
    async fn variant_keys(&self, asset: &AssetRef) -> Result<Vec<ObjectKey>, ApiError> {
        let prefix = VariantKey::prefix(&asset.profile.thumb_folder, &asset.key_base)?;
        let listed = crate::storage::list_all(&*self.store, &prefix).await?;
        Ok(listed
            .into_iter()
            .map(|o| o.key)
            // The prefix `k1_` also matches other ids such as `k1_b`: keep only ours.
            .filter(|k| {
                VariantKey::parse_name(k.as_str().rsplit('/').next().unwrap_or_default(), &asset.key_base).is_some()
            })
            .collect())
    }

    /// Stores an uploaded original (replacing an earlier one, whose variants
    /// are deleted) and makes every size of the profile. The image is checked
    /// and rendered before anything is stored, so a bad upload changes nothing.
    pub async fn replace_original(&self, asset: &AssetRef, image: Bytes) -> Result<Replaced, ApiError> {
        let profile = &asset.profile;
        let mime = crate::image::sniff(&image)
            .map(|f| f.mime())
            .filter(|m| profile.allowed_mimes.iter().any(|a| same_type(a, m)))
            .ok_or_else(|| {
                ApiError::MimeNotAllowed(format!(
                    "the file is not one of the types profile '{}' allows ({})",
                    profile.name,
                    profile.allowed_mimes.join(", ")
                ))
            })?;
        if profile.kind == MediaKind::Video {
            return Err(no_posters(profile));
        }
        let rendered = self.thumbs.render_all(asset, image.clone()).await?;
        let mut asset = asset.clone();
        if profile.storage_path.uses_ext() && asset.ext.is_none() {
            asset.ext = extension_for_mime(mime).and_then(|e| Extension::parse(e).ok());
        }
        let original = asset.original_key()?;
        let opts = PutOptions { content_type: Some(mime.to_owned()), if_none_match: false };
        self.store.put(&original, image.into(), opts).await?;
        for key in self.variant_keys(&asset).await? {
            self.store.delete(&key).await?;
        }
        self.forget_variants(&asset);
        let mut thumbnails = Vec::with_capacity(rendered.len());
        for (width, key, variant) in rendered {
            self.thumbs.store_variant(&key, &variant).await?;
            thumbnails.push((width, key));
        }
        Ok(Replaced { object_key: original, thumbnails })
    }

    /// Drops an asset's variants from this instance's memory cache.
    pub fn forget_variants(&self, asset: &AssetRef) {
        self.thumbs.forget(asset);
    }
}

/// The answer for a thumbnail of an existing video: poster frames (ffmpeg)
/// are not made by this version.
pub fn no_posters(profile: &Profile) -> ApiError {
    ApiError::UnsupportedMedia(format!(
        "profile '{}' holds videos; poster frames are not made by this version",
        profile.name
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_resolve_to_the_upload_keys() {
        let profiles = Profiles::example();
        let a = AssetRef::resolve(&profiles, "avatar", "hello.jpg", None).unwrap();
        assert_eq!(a.original_key().unwrap().as_str(), "originals/avatars/aa/hello");
        let a = AssetRef::resolve(&profiles, "avatar", "hello", Some("")).unwrap();
        assert_eq!(a.original_key().unwrap().as_str(), "originals/avatars/aa/hello", "empty shard: the computed one");
        let a = AssetRef::resolve(&profiles, "avatar", "hello", Some("custom")).unwrap();
        assert_eq!(a.original_key().unwrap().as_str(), "originals/avatars/custom/hello");
        // banner does not shard: the client's shard is ignored, even a bad one.
        let a = AssetRef::resolve(&profiles, "banner", "b1", Some("BAD!")).unwrap();
        assert_eq!(a.original_key().unwrap().as_str(), "originals/banners/b1");
        // Without {ext} in the template any extension is ignored, whatever it looks like.
        for id in ["hello.png.jpg", "hello.we-bp", "hello.PNG"] {
            let a = AssetRef::resolve(&profiles, "avatar", id, None).unwrap();
            assert_eq!(a.original_key().unwrap().as_str(), "originals/avatars/aa/hello", "{id}");
        }
    }

    #[test]
    fn bad_references_are_refused() {
        let profiles = Profiles::example();
        assert_eq!(
            AssetRef::resolve(&profiles, "nope", "x", None).unwrap_err(),
            AssetError::UnknownProfile("nope".into())
        );
        assert!(matches!(AssetRef::resolve(&profiles, "avatar", "..", None), Err(AssetError::Key(_))));
        assert!(matches!(AssetRef::resolve(&profiles, "avatar", "x", Some("../..")), Err(AssetError::Key(_))));
    }

    #[test]
    fn ext_templates_need_the_extension() {
        let yaml = "profiles:\n  p:\n    allowed_mimes: [image/png]\n    size_max_bytes: 10\n    storage_path: o/{key_base}.{ext}\n    sizes: [64]\n";
        let profiles = Profiles::parse(yaml, "f").unwrap();
        let a = AssetRef::resolve(&profiles, "p", "k.png", None).unwrap();
        assert_eq!(a.original_key().unwrap().as_str(), "o/k.png");
        let a = AssetRef::resolve(&profiles, "p", "k", None).unwrap();
        assert!(matches!(a.original_key(), Err(AssetError::ExtensionRequired(_))));
        assert!(matches!(AssetRef::resolve(&profiles, "p", "k.we-bp", None), Err(AssetError::Key(_))));
    }
}
