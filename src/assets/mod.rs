//! The asset model: [`AssetKey`], one asset of one profile — a key base, its
//! extension and shard — resolved once, and the owner of every storage key
//! the asset has: its original (and how to find it), its variants (and how
//! to tell them from another asset's), its video proxies and its facts.
//!
//! Presign and every lookup (`/originals`, `/thumb`, `/proxy`,
//! `/v1/assets`, DELETE) resolve through the same functions, so they can
//! never disagree: the Go service built keys in three places and its delete
//! drifted from its upload. The keys themselves are formatted by
//! [`crate::storage::keys`] and by nothing but this type.

use std::sync::Arc;

use crate::config::{Profile, Profiles, ProxyFormat};
use crate::storage::keys::{Extension, KeyBase, KeyError, KeyPrefix, SHARD_FOLDER, Shard, VariantKey, split_image_id};
use crate::storage::{ObjectKey, ObjectMeta, ObjectStore, StorageError};

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

/// One asset of one profile, resolved: the only place its keys are made.
#[derive(Debug, Clone)]
pub struct AssetKey {
    profile: Arc<Profile>,
    key_base: KeyBase,
    /// The extension from the id or upload, when the template uses `{ext}`.
    ext: Option<Extension>,
    /// The client's shard (only when the profile shards).
    shard: Option<Shard>,
}

impl AssetKey {
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

    /// The asset an upload creates: `key_base`, the extension of its type and
    /// the client's shard, through the same rules as every lookup.
    pub fn for_upload(
        profile: Arc<Profile>,
        key_base: &str,
        ext: Extension,
        shard: Option<&str>,
    ) -> Result<Self, AssetError> {
        let key_base = KeyBase::parse(key_base)?;
        let shard = profile.client_shard(shard)?;
        let ext = profile.storage_path.uses_ext().then_some(ext);
        Ok(Self { profile, key_base, ext, shard })
    }

    /// The asset whose original is stored at `key` in `profile`, read back
    /// through the template (`None` when the key is not one it makes).
    pub fn from_original_key(profile: Arc<Profile>, key: &ObjectKey) -> Option<Self> {
        let (key_base, ext, shard) = profile.storage_path.match_key(key.as_str())?;
        let shard = profile.client_shard(shard.as_deref()).ok()?;
        Some(Self { profile, key_base, ext, shard })
    }

    /// The asset's profile.
    pub fn profile(&self) -> &Arc<Profile> {
        &self.profile
    }

    /// The client's id.
    pub fn key_base(&self) -> &KeyBase {
        &self.key_base
    }

    /// The extension the id or upload named, when the template uses `{ext}`.
    pub fn ext(&self) -> Option<&Extension> {
        self.ext.as_ref()
    }

    /// The same asset with its extension: an original found by
    /// [`Self::locate_original`], or an upload's type, names it.
    pub fn with_ext(mut self, ext: Extension) -> Self {
        if self.profile.storage_path.uses_ext() {
            self.ext = Some(ext);
        }
        self
    }

    /// Cache-Control max-age for this asset's media: the profile's
    /// `cache_duration`, else the service's default.
    pub fn max_age(&self, default: u64) -> u64 {
        self.profile.cache_duration.unwrap_or(default)
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

    /// The stored original's key and metadata (`NotFound` when there is none).
    pub async fn find_original(&self, store: &dyn ObjectStore) -> Result<ObjectMeta, StorageError> {
        let key = self.locate_original(store).await?;
        store.head(&key).await
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
            Some(shard) => format!("{}/{SHARD_FOLDER}/{}", self.profile.thumb_folder, shard.as_str()),
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

    /// The key of this video's proxy in `format`: `{proxy_folder}/{key_base}.{format}`,
    /// under `_shard/{shard}/` for a custom shard as variants are. `None`
    /// when the profile makes no proxies.
    pub fn proxy_key(&self, format: ProxyFormat) -> Option<ObjectKey> {
        let folder = self.profile.video()?.proxy_folder.as_deref()?;
        let folder = match self.custom_shard() {
            Some(shard) => format!("{folder}/{SHARD_FOLDER}/{}", shard.as_str()),
            None => folder.to_owned(),
        };
        ObjectKey::parse(format!("{folder}/{}.{}", self.key_base, format.name())).ok()
    }

    /// The key of this asset's media facts (`GET /v1/assets`), stored beside
    /// its variants: `{variant folder}/{key_base}_facts.json`.
    pub fn facts_key(&self) -> Result<ObjectKey, AssetError> {
        Ok(ObjectKey::parse(format!("{}/{}_facts.json", self.variant_folder(), self.key_base))?)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_resolve_to_the_upload_keys() {
        let profiles = Profiles::example();
        let a = AssetKey::resolve(&profiles, "avatar", "hello.jpg", None).unwrap();
        assert_eq!(a.original_key().unwrap().as_str(), "originals/avatars/aa/hello");
        let a = AssetKey::resolve(&profiles, "avatar", "hello", Some("")).unwrap();
        assert_eq!(a.original_key().unwrap().as_str(), "originals/avatars/aa/hello", "empty shard: the computed one");
        let a = AssetKey::resolve(&profiles, "avatar", "hello", Some("custom")).unwrap();
        assert_eq!(a.original_key().unwrap().as_str(), "originals/avatars/custom/hello");
        // banner does not shard: the client's shard is ignored, even a bad one.
        let a = AssetKey::resolve(&profiles, "banner", "b1", Some("BAD!")).unwrap();
        assert_eq!(a.original_key().unwrap().as_str(), "originals/banners/b1");
        // Without {ext} in the template any extension is ignored, whatever it looks like.
        for id in ["hello.png.jpg", "hello.we-bp", "hello.PNG"] {
            let a = AssetKey::resolve(&profiles, "avatar", id, None).unwrap();
            assert_eq!(a.original_key().unwrap().as_str(), "originals/avatars/aa/hello", "{id}");
        }
    }

    #[test]
    fn bad_references_are_refused() {
        let profiles = Profiles::example();
        assert_eq!(
            AssetKey::resolve(&profiles, "nope", "x", None).unwrap_err(),
            AssetError::UnknownProfile { name: "nope".into(), known: "avatar, banner, default, photo, video".into() }
        );
        assert!(matches!(AssetKey::resolve(&profiles, "avatar", "..", None), Err(AssetError::Key(_))));
        assert!(matches!(AssetKey::resolve(&profiles, "avatar", "x", Some("../..")), Err(AssetError::Key(_))));
    }

    #[test]
    fn ext_templates_need_the_extension() {
        let yaml = "profiles:\n  p:\n    allowed_mimes: [image/png]\n    size_max_bytes: 10\n    storage_path: o/{key_base}.{ext}\n    sizes: [64]\n";
        let profiles = Profiles::parse(yaml, "f").unwrap();
        let a = AssetKey::resolve(&profiles, "p", "k.png", None).unwrap();
        assert_eq!(a.original_key().unwrap().as_str(), "o/k.png");
        let a = AssetKey::resolve(&profiles, "p", "k", None).unwrap();
        assert!(matches!(a.original_key(), Err(AssetError::ExtensionRequired(_))));
        assert!(matches!(AssetKey::resolve(&profiles, "p", "k.we-bp", None), Err(AssetError::Key(_))));
    }
}
