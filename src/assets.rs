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

/// The folder segment that holds the variants of custom-shard originals
/// (`{thumb_folder}/_shard/{shard}/`). No thumb_folder may contain it.
pub const RESERVED_SHARD_SEGMENT: &str = "_shard";

/// Why an asset reference was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AssetError {
    /// No profile of that name.
    #[error("unknown profile '{name}' (profiles: {known})")]
    UnknownProfile {
        /// As asked for.
        name: String,
        /// The profiles that exist, comma-separated.
        known: String,
    },
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
        let profile = profiles
            .get(profile)
            .ok_or_else(|| AssetError::UnknownProfile { name: profile.to_owned(), known: profiles.names() })?
            .clone();
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
        let shard = profile.client_shard(shard)?;
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

    /// The client's shard when it differs from the computed SHA-1 shard: the
    /// original then lives in a folder of its own, and so must its variants.
    pub fn custom_shard(&self) -> Option<&Shard> {
        self.shard.as_ref().filter(|s| **s != Shard::of(&self.key_base))
    }

    /// The folder of this asset's variants: the profile's `thumb_folder`, or
    /// `{thumb_folder}/_shard/{shard}` for an original under a custom shard
    /// (SPEC §3), so that two originals with one key_base in different shards
    /// never share a variant. `_shard` is a reserved segment: no profile's
    /// thumb_folder may contain it, so nesting cannot collide with it.
    pub fn variant_folder(&self) -> String {
        match self.custom_shard() {
            Some(shard) => format!("{}/{RESERVED_SHARD_SEGMENT}/{}", self.profile.thumb_folder, shard.as_str()),
            None => self.profile.thumb_folder.clone(),
        }
    }

    /// The key of one variant.
    pub fn variant_key(&self, variant: &VariantKey) -> Result<ObjectKey, AssetError> {
        Ok(variant.key(&self.variant_folder(), &self.key_base)?)
    }

    /// The listing prefix every variant of this asset starts with.
    pub fn variant_prefix(&self) -> Result<KeyPrefix, KeyError> {
        VariantKey::prefix(&self.variant_folder(), &self.key_base)
    }

    /// Whether `key` (a listed object) is one of this asset's variants, not a
    /// variant of another key base that shares the listing prefix (`k1_b_256`).
    pub fn owns_variant(&self, key: &str) -> bool {
        let folder = self.variant_folder();
        key.strip_prefix(folder.as_str())
            .and_then(|rest| rest.strip_prefix('/'))
            .is_some_and(|name| !name.contains('/') && VariantKey::parse_name(name, &self.key_base).is_some())
    }
}

impl AppState {
    /// Deletes the original and every variant of `asset` (all sizes, formats
    /// and qualities) and returns how many objects were deleted.
    pub async fn delete_asset(&self, asset: &AssetRef) -> Result<usize, ApiError> {
        let found = match asset.locate_original(&*self.store).await {
            Ok(original) => self.store.head(&original).await.map(|_| original),
            Err(e) => Err(e),
        };
        let mut deleted = 0;
        // The original goes first and the variants are listed after: a variant
        // written meanwhile by a render either shows in this listing or sees
        // the original gone and removes itself (`Thumbs::store_later`).
        match found {
            Ok(original) => {
                self.store.delete(&original).await?;
                deleted += 1;
            }
            Err(StorageError::NotFound) => {}
            Err(e) => return Err(e.into()),
        }
        for key in self.variant_keys(asset).await? {
            self.store.delete(&key).await?;
            deleted += 1;
        }
        self.forget_variants(asset);
        Ok(deleted)
    }

    /// The keys of every stored variant of `asset`.
    async fn variant_keys(&self, asset: &AssetRef) -> Result<Vec<ObjectKey>, ApiError> {
        let listed = crate::storage::list_all(&*self.store, &asset.variant_prefix()?).await?;
        // The prefix `k1_` also matches other ids such as `k1_b`: keep only ours.
        Ok(listed.into_iter().map(|o| o.key).filter(|k| asset.owns_variant(k.as_str())).collect())
    }

    /// Stores an uploaded original (replacing an earlier one, whose variants
    /// are deleted) and makes every size of the profile. The image is checked
    /// and rendered before anything is stored, so a bad upload changes nothing.
    pub async fn replace_original(&self, asset: &AssetRef, image: Bytes) -> Result<Replaced, ApiError> {
        let profile = &asset.profile;
        let mime =
            crate::media_type::sniff(&image).map(|t| t.mime).filter(|m| profile.allows_mime(m)).ok_or_else(|| {
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
            AssetError::UnknownProfile { name: "nope".into(), known: "avatar, banner, default, photo, video".into() }
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
