//! Every object key MediaFlow reads or writes is built here, and nowhere else.
//!
//! The Go service this replaces formatted keys in three places and they drifted
//! (its delete used another key than its upload). Here a key is a validated
//! [`ObjectKey`], and the only ways to make one from user input are the typed
//! builders below: [`StorageTemplate::original`] for originals and
//! [`VariantKey`] for thumbnails.

use std::fmt;

use sha1::{Digest, Sha1};

use crate::image::{Fit, Gravity, Size};

/// The folder segment that holds the media of custom-shard originals
/// (`{thumb_folder}/_shard/{shard}/…`): reserved, no profile folder may
/// contain it.
pub const SHARD_FOLDER: &str = "_shard";

/// Longest object key accepted (S3's own limit is 1024 bytes).
pub const MAX_KEY_LEN: usize = 1024;
/// Longest `key_base` accepted.
pub const MAX_KEY_BASE_LEN: usize = 200;
/// Longest custom shard accepted.
pub const MAX_SHARD_LEN: usize = 64;
/// Longest file extension accepted.
pub const MAX_EXT_LEN: usize = 16;

/// Why a key, key base, shard or extension was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// The key_base is empty, too long or has a character outside `[A-Za-z0-9_-]`.
    #[error("key_base must be 1-{MAX_KEY_BASE_LEN} characters of [A-Za-z0-9_-]")]
    InvalidKeyBase,
    /// A custom shard outside `[a-z0-9_-]{1,64}`.
    #[error("shard must be 1-{MAX_SHARD_LEN} characters of [a-z0-9_-]")]
    InvalidShard,
    /// A custom shard that names another profile's folder (see `config::overlap`).
    #[error("shard '{0}' is reserved: another profile stores its objects under that name")]
    ReservedShard(String),
    /// An extension outside `[A-Za-z0-9]{1,16}`.
    #[error("extension must be 1-{MAX_EXT_LEN} characters of [A-Za-z0-9]")]
    InvalidExtension,
    /// The object key breaks one of the path rules (see [`ObjectKey`]).
    #[error("invalid object key: {0}")]
    InvalidKey(&'static str),
    /// A storage_path template that cannot produce valid keys.
    #[error("invalid template: {0}")]
    InvalidTemplate(String),
}

/// A validated object key: the path of an object inside the bucket or `DATA_DIR`.
///
/// Rules: 1..=1024 bytes; no leading or trailing `/`; no empty segment; no `.` or
/// `..` segment, and no segment starting with `.` (the filesystem backend keeps
/// its own bookkeeping under a dot-directory); no backslash and no control
/// character. These make a key safe to join under a directory on any OS.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ObjectKey(String);

impl ObjectKey {
    /// Validates `key` as an object key.
    pub fn parse(key: impl Into<String>) -> Result<Self, KeyError> {
        let key = key.into();
        validate_path(&key, false)?;
        Ok(Self(key))
    }

    /// The key as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The key's segments, in order.
    pub fn segments(&self) -> impl Iterator<Item = &str> {
        self.0.split('/')
    }
}

/// The service's own bookkeeping prefix (SPEC §5). [`ObjectKey::parse`]
/// refuses every segment starting with `.`, so no key a client sends can
/// reach it: keys under it are made by [`ObjectKey::internal`] only.
pub const INTERNAL_PREFIX: &str = ".mediaflow/";

/// The objects the service keeps for itself under [`INTERNAL_PREFIX`].
/// Typed, so that no client string can name one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InternalKey<'a> {
    /// The claim a complete holds on an object key while it writes it
    /// (`.mediaflow/claims/<sha256(key)>`).
    Claim(&'a ObjectKey),
    /// The marker that lets exactly one complete take over a stale claim on
    /// an object key, named by that claim's nonce.
    ClaimTakeover(&'a ObjectKey, u128),
    /// A queued proxy job, named by the proxy's key (`.mediaflow/jobs/…`).
    ProxyJob(&'a ObjectKey),
    /// The lease of the instance running a proxy job (`.mediaflow/leases/…`).
    ProxyLease(&'a ObjectKey),
    /// The record of a failed proxy job (`.mediaflow/failures/…`).
    ProxyFailure(&'a ObjectKey),
}

/// Folders of the service's own objects that it lists.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InternalFolder {
    /// Queued proxy jobs ([`InternalKey::ProxyJob`]).
    ProxyJobs,
}

impl ObjectKey {
    /// The key of one of the service's own objects.
    pub fn internal(which: InternalKey<'_>) -> Self {
        let hashed = |key: &ObjectKey| hex::encode(sha2::Sha256::digest(key.as_str().as_bytes()));
        Self(match which {
            InternalKey::Claim(key) => format!("{INTERNAL_PREFIX}claims/{}", hashed(key)),
            InternalKey::ClaimTakeover(key, nonce) => {
                format!("{INTERNAL_PREFIX}claims/{}.takeover-{nonce:032x}", hashed(key))
            }
            InternalKey::ProxyJob(key) => format!("{INTERNAL_PREFIX}jobs/{}", hashed(key)),
            InternalKey::ProxyLease(key) => format!("{INTERNAL_PREFIX}leases/{}", hashed(key)),
            InternalKey::ProxyFailure(key) => format!("{INTERNAL_PREFIX}failures/{}", hashed(key)),
        })
    }

    /// A key a backend listed: a client key, or one of the service's own
    /// (which only [`Self::internal`] makes, and only the service lists).
    pub fn parse_listed(key: &str) -> Result<Self, KeyError> {
        match key.strip_prefix(INTERNAL_PREFIX) {
            Some(rest) => {
                validate_path(rest, false)?;
                Ok(Self(key.to_owned()))
            }
            None => Self::parse(key),
        }
    }

    /// Whether this is one of the service's own keys (never a client's).
    pub fn is_internal(&self) -> bool {
        self.0.starts_with(INTERNAL_PREFIX)
    }
}

impl fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for ObjectKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ObjectKey({:?})", self.0)
    }
}

impl AsRef<str> for ObjectKey {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

/// Validates a key (or, with `allow_trailing_slash`, a listing prefix).
fn validate_path(key: &str, prefix: bool) -> Result<(), KeyError> {
    if key.is_empty() {
        return Err(KeyError::InvalidKey("empty"));
    }
    if key.len() > MAX_KEY_LEN {
        return Err(KeyError::InvalidKey("longer than 1024 bytes"));
    }
    if key.starts_with('/') {
        return Err(KeyError::InvalidKey("leading '/'"));
    }
    if key.chars().any(|c| c.is_control() || c == '\\') {
        return Err(KeyError::InvalidKey("control character or backslash"));
    }
    let body = if prefix { key.strip_suffix('/').unwrap_or(key) } else { key };
    for segment in body.split('/') {
        if segment.is_empty() {
            return Err(KeyError::InvalidKey("empty segment"));
        }
        if segment.starts_with('.') {
            return Err(KeyError::InvalidKey("segment starting with '.'"));
        }
    }
    Ok(())
}

/// A validated listing prefix: like an [`ObjectKey`], but it may end with `/`
/// and its last segment may be partial (`thumbnails/avatars/k1_`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyPrefix(String);

impl KeyPrefix {
    /// The listing prefix of one of the service's own folders.
    pub fn internal(folder: InternalFolder) -> Self {
        Self(match folder {
            InternalFolder::ProxyJobs => format!("{INTERNAL_PREFIX}jobs/"),
        })
    }

    /// Validates `prefix`.
    pub fn parse(prefix: impl Into<String>) -> Result<Self, KeyError> {
        let prefix = prefix.into();
        validate_path(&prefix, true)?;
        Ok(Self(prefix))
    }

    /// The prefix as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The client's id for an asset: 1-200 characters of `[A-Za-z0-9_-]`.
///
/// No dots, so the extension of an `image_id` is unambiguous.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct KeyBase(String);

impl KeyBase {
    /// Validates a key base.
    pub fn parse(s: &str) -> Result<Self, KeyError> {
        let ok = !s.is_empty()
            && s.len() <= MAX_KEY_BASE_LEN
            && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        if ok { Ok(Self(s.to_owned())) } else { Err(KeyError::InvalidKeyBase) }
    }

    /// The key base as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for KeyBase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A shard directory: the seed's hash shard or a client's custom one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shard(String);

impl Shard {
    /// The seed's shard: the first byte of SHA-1(key_base) as two lowercase hex
    /// digits. Identical to the Go service so existing buckets resolve.
    pub fn of(key_base: &KeyBase) -> Self {
        let digest = Sha1::digest(key_base.as_str().as_bytes());
        Self(hex::encode(&digest[..1]))
    }

    /// Validates a client-supplied shard: `[a-z0-9_-]{1,64}`.
    pub fn parse(s: &str) -> Result<Self, KeyError> {
        let ok = !s.is_empty()
            && s.len() <= MAX_SHARD_LEN
            && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
        if ok { Ok(Self(s.to_owned())) } else { Err(KeyError::InvalidShard) }
    }

    /// The shard as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A file extension without the dot: 1-16 characters of `[A-Za-z0-9]`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Extension(String);

impl Extension {
    /// Validates an extension (a leading dot is tolerated and dropped).
    pub fn parse(s: &str) -> Result<Self, KeyError> {
        let s = s.strip_prefix('.').unwrap_or(s);
        let ok = !s.is_empty() && s.len() <= MAX_EXT_LEN && s.bytes().all(|b| b.is_ascii_alphanumeric());
        if ok { Ok(Self(s.to_owned())) } else { Err(KeyError::InvalidExtension) }
    }

    /// The extension as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A profile's folder (`thumb_folder`, `proxy_folder`): valid as a key
/// prefix, without a trailing `/`, and without the reserved [`SHARD_FOLDER`]
/// segment.
pub fn parse_folder(raw: &str) -> Result<String, KeyError> {
    let trimmed = raw.trim_end_matches('/');
    if trimmed.is_empty() {
        return Err(KeyError::InvalidKey("empty folder"));
    }
    KeyPrefix::parse(format!("{trimmed}/"))?;
    if trimmed.split('/').any(|s| s == SHARD_FOLDER) {
        return Err(KeyError::InvalidKey("the segment '_shard' is reserved for the media of custom-shard originals"));
    }
    Ok(trimmed.to_owned())
}

/// Splits an `image_id` from a URL (`photo.jpg`) into its key base and the
/// extension: everything after the first dot.
pub fn split_image_id(image_id: &str) -> Result<(KeyBase, Option<Extension>), KeyError> {
    match image_id.split_once('.') {
        Some((base, ext)) => Ok((KeyBase::parse(base)?, Some(Extension::parse(ext)?))),
        None => Ok((KeyBase::parse(image_id)?, None)),
    }
}

/// One piece of a parsed `storage_path` template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Piece {
    /// Text copied as is (may contain `/`).
    Literal(String),
    /// `{key_base}`.
    KeyBase,
    /// `{ext}`.
    Ext,
    /// `{shard}` or `{shard?}`.
    Shard,
}

/// A profile's `storage_path` template (`originals/avatars/{shard?}/{key_base}`),
/// parsed once at start-up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StorageTemplate {
    source: String,
    pieces: Vec<Piece>,
    uses_ext: bool,
}

impl StorageTemplate {
    /// Parses a template. With `enable_sharding` false every shard placeholder
    /// and one adjacent `/` are removed, as the seed does.
    pub fn parse(template: &str, enable_sharding: bool) -> Result<Self, KeyError> {
        let mut text = template.to_owned();
        if !enable_sharding {
            text = strip_shard_placeholders(&text);
        }
        let mut pieces = Vec::new();
        let mut rest = text.as_str();
        while let Some(start) = rest.find('{') {
            if start > 0 {
                pieces.push(Piece::Literal(rest[..start].to_owned()));
            }
            let end = rest[start..].find('}').ok_or_else(|| KeyError::InvalidTemplate("unclosed '{'".into()))? + start;
            let piece = match &rest[start + 1..end] {
                "key_base" => Piece::KeyBase,
                "ext" => Piece::Ext,
                "shard" | "shard?" => Piece::Shard,
                other => {
                    return Err(KeyError::InvalidTemplate(format!(
                        "unknown placeholder {{{other}}} (known: {{key_base}}, {{ext}}, {{shard}}, {{shard?}})"
                    )));
                }
            };
            pieces.push(piece);
            rest = &rest[end + 1..];
        }
        if !rest.is_empty() {
            pieces.push(Piece::Literal(rest.to_owned()));
        }
        if !pieces.contains(&Piece::KeyBase) {
            return Err(KeyError::InvalidTemplate("must contain {key_base}".into()));
        }
        if pieces.iter().any(|p| matches!(p, Piece::Literal(l) if l.contains('}'))) {
            return Err(KeyError::InvalidTemplate("unmatched '}'".into()));
        }
        let uses_ext = pieces.contains(&Piece::Ext);
        let template = Self { source: template.to_owned(), pieces, uses_ext };
        // Render a sample to catch literal parts that break the key rules.
        let sample = KeyBase::parse("k").expect("valid");
        let ext = Extension::parse("jpg").expect("valid");
        template
            .original(&sample, Some(&ext), Some(&Shard::parse("ab").expect("valid")))
            .map_err(|e| KeyError::InvalidTemplate(e.to_string()))?;
        Ok(template)
    }

    /// The template as written in the profile.
    pub fn as_str(&self) -> &str {
        &self.source
    }

    /// The parsed pieces, in order (shard placeholders already removed when
    /// the profile does not shard).
    pub fn pieces(&self) -> &[Piece] {
        &self.pieces
    }

    /// Whether the template has an `{ext}` placeholder: then lookups take the
    /// extension from the `image_id`; otherwise an extension there is ignored.
    pub fn uses_ext(&self) -> bool {
        self.uses_ext
    }

    /// Whether the template places objects under a shard directory.
    pub fn uses_shard(&self) -> bool {
        self.pieces.contains(&Piece::Shard)
    }

    /// The key of an original.
    ///
    /// `shard` is the client's custom shard; `None` uses the seed's hash shard.
    /// `ext` is required when the template uses `{ext}`.
    pub fn original(
        &self,
        key_base: &KeyBase,
        ext: Option<&Extension>,
        shard: Option<&Shard>,
    ) -> Result<ObjectKey, KeyError> {
        let mut out = String::new();
        for piece in &self.pieces {
            match piece {
                Piece::Literal(l) => out.push_str(l),
                Piece::KeyBase => out.push_str(key_base.as_str()),
                Piece::Ext => out.push_str(ext.ok_or(KeyError::InvalidExtension)?.as_str()),
                Piece::Shard => match shard {
                    Some(s) => out.push_str(s.as_str()),
                    None => out.push_str(Shard::of(key_base).as_str()),
                },
            }
        }
        ObjectKey::parse(out)
    }

    /// The parts of an original's key, read back through the template: its
    /// key base, extension (with `{ext}`) and shard as written in the key.
    /// `None` when the key is not one this template makes.
    pub fn match_key(&self, key: &str) -> Option<(KeyBase, Option<Extension>, Option<String>)> {
        let (mut key_base, mut ext, mut shard) = (None, None, None);
        let mut rest = key;
        for (i, piece) in self.pieces.iter().enumerate() {
            let value = match piece {
                Piece::Literal(l) => {
                    rest = rest.strip_prefix(l.as_str())?;
                    continue;
                }
                // A placeholder runs up to the next literal (or the end).
                _ => match self.pieces.get(i + 1) {
                    Some(Piece::Literal(next)) => {
                        let at = rest.find(next.as_str())?;
                        let (value, after) = rest.split_at(at);
                        rest = after;
                        value
                    }
                    Some(_) => return None,
                    None => std::mem::take(&mut rest),
                },
            };
            match piece {
                Piece::KeyBase => key_base = Some(KeyBase::parse(value).ok()?),
                Piece::Ext => ext = Some(Extension::parse(value).ok()?),
                Piece::Shard => shard = Some(value.to_owned()),
                Piece::Literal(_) => unreachable!("handled above"),
            }
        }
        let key_base = key_base.filter(|_| rest.is_empty())?;
        // What it reads must render back to the very same key.
        let parsed_shard = match &shard {
            Some(s) => Some(Shard::parse(s).ok()?),
            None => None,
        };
        (self.original(&key_base, ext.as_ref(), parsed_shard.as_ref()).ok()?.as_str() == key)
            .then_some((key_base, ext, shard))
    }

    /// With `{ext}` in the template: the original's key up to the extension,
    /// which every original of `key_base` starts with. `None` without `{ext}`.
    pub fn before_ext(&self, key_base: &KeyBase, shard: Option<&Shard>) -> Option<String> {
        let mut out = String::new();
        for piece in &self.pieces {
            match piece {
                Piece::Literal(l) => out.push_str(l),
                Piece::KeyBase => out.push_str(key_base.as_str()),
                Piece::Ext => return Some(out),
                Piece::Shard => match shard {
                    Some(s) => out.push_str(s.as_str()),
                    None => out.push_str(Shard::of(key_base).as_str()),
                },
            }
        }
        None
    }

    /// The literal prefix every key of this template starts with (up to the
    /// first placeholder), used to find a profile from an object key.
    pub fn literal_prefix(&self) -> &str {
        match self.pieces.first() {
            Some(Piece::Literal(l)) => l,
            _ => "",
        }
    }
}

/// Removes `{shard}` / `{shard?}` and one adjacent `/`.
fn strip_shard_placeholders(template: &str) -> String {
    let mut text = template.to_owned();
    for placeholder in ["{shard?}", "{shard}"] {
        while let Some(pos) = text.find(placeholder) {
            let end = pos + placeholder.len();
            if text[end..].starts_with('/') {
                text.replace_range(pos..end + 1, "");
            } else if pos > 0 && text[..pos].ends_with('/') {
                text.replace_range(pos - 1..end, "");
            } else {
                text.replace_range(pos..end, "");
            }
        }
    }
    text
}

/// The key of a stored thumbnail: `{thumb_folder}/{key_base}_{size}.{ext}`,
/// or `{thumb_folder}/{key_base}_{size}_q{quality}.{ext}` when the quality
/// differs from the profile's (the seed's layout). `{size}` is the width
/// (`256`), or a box `{W}x{H}` followed by `_inside` and `_{gravity}` when
/// they are not the defaults (cover, center): `256x256`, `256x256_smart`,
/// `400x300_inside` ([`Size::name`]).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct VariantKey {
    /// The size as requested.
    pub size: Size,
    /// The quality, when it differs from the profile's.
    pub quality: Option<u8>,
    /// The file extension (`webp`, `jpeg`, `png`, or the profile's spelling).
    pub ext: String,
}

impl VariantKey {
    /// The object key of this variant of `key_base` under `thumb_folder`.
    pub fn key(&self, thumb_folder: &str, key_base: &KeyBase) -> Result<ObjectKey, KeyError> {
        let folder = thumb_folder.trim_end_matches('/');
        let q = self.quality.map(|q| format!("_q{q}")).unwrap_or_default();
        let name = format!("{}_{}{}.{}", key_base, self.size.name(), q, self.ext);
        if folder.is_empty() { ObjectKey::parse(name) } else { ObjectKey::parse(format!("{folder}/{name}")) }
    }

    /// The listing prefix under which every variant of `key_base` lives.
    pub fn prefix(thumb_folder: &str, key_base: &KeyBase) -> Result<KeyPrefix, KeyError> {
        let folder = thumb_folder.trim_end_matches('/');
        if folder.is_empty() {
            KeyPrefix::parse(format!("{key_base}_"))
        } else {
            KeyPrefix::parse(format!("{folder}/{key_base}_"))
        }
    }

    /// Parses the file name of a stored key back into a variant of `key_base`,
    /// or `None` when the key is not one (another key base sharing the prefix).
    /// Only canonical names parse (no leading zeros, no default fit or
    /// gravity spelled out, no gravity on an `inside` box), so that a name
    /// parses back exactly when rendering the result gives the same name.
    pub fn parse_name(name: &str, key_base: &KeyBase) -> Option<Self> {
        let rest = name.strip_prefix(key_base.as_str())?.strip_prefix('_')?;
        let (stem, ext) = rest.split_once('.')?;
        if ext.is_empty() || !ext.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return None;
        }
        // Canonical decimals only (no sign, no leading zero).
        let number = |s: &str| {
            (!s.is_empty() && !s.starts_with('0') && s.bytes().all(|b| b.is_ascii_digit()))
                .then(|| s.parse::<u32>().ok())
                .flatten()
        };
        let mut parts = stem.split('_');
        let size = parts.next()?;
        let mut rest: Vec<&str> = parts.collect();
        let quality = match rest.last().and_then(|p| p.strip_prefix('q')) {
            Some(q) => {
                rest.pop();
                Some(u8::try_from(number(q)?).ok()?)
            }
            None => None,
        };
        let size = match size.split_once('x') {
            None if rest.is_empty() => Size::Width(number(size)?),
            None => return None,
            Some((w, h)) => {
                let (width, height) = (number(w)?, number(h)?);
                let mut options = rest.into_iter().peekable();
                let fit = match options.next_if(|o| *o == Fit::Inside.name()) {
                    Some(_) => Fit::Inside,
                    None => Fit::Cover,
                };
                let gravity = match options.next() {
                    None => Gravity::Center,
                    Some(g) => Gravity::ALL.into_iter().find(|v| v.name() == g && *v != Gravity::Center)?,
                };
                if options.next().is_some() || (fit == Fit::Inside && gravity != Gravity::Center) {
                    return None;
                }
                Size::Box { width, height, fit, gravity }
            }
        };
        Some(Self { size, quality, ext: ext.to_owned() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kb(s: &str) -> KeyBase {
        KeyBase::parse(s).unwrap()
    }

    #[test]
    fn shard_matches_the_seed() {
        // First byte of SHA-1, as `printf %s id | sha1sum | cut -c1-2` prints it.
        assert_eq!(Shard::of(&kb("k1")).as_str(), "a2");
        assert_eq!(Shard::of(&kb("user123")).as_str(), "95");
        assert_eq!(Shard::of(&kb("hello")).as_str(), "aa");
        assert_eq!(Shard::of(&kb("photo")).as_str(), "ee");
    }

    #[test]
    fn template_renders_with_hash_shard() {
        let t = StorageTemplate::parse("originals/avatars/{shard?}/{key_base}", true).unwrap();
        let key = t.original(&kb("hello"), None, None).unwrap();
        assert_eq!(key.as_str(), "originals/avatars/aa/hello");
        assert!(!t.uses_ext());
        assert_eq!(t.literal_prefix(), "originals/avatars/");
    }

    #[test]
    fn template_uses_custom_shard_and_ext() {
        let t = StorageTemplate::parse("o/{shard}/{key_base}.{ext}", true).unwrap();
        let ext = Extension::parse("jpg").unwrap();
        let shard = Shard::parse("tenant-1").unwrap();
        let key = t.original(&kb("a"), Some(&ext), Some(&shard)).unwrap();
        assert_eq!(key.as_str(), "o/tenant-1/a.jpg");
        assert!(t.uses_ext());
        assert_eq!(t.original(&kb("a"), None, None), Err(KeyError::InvalidExtension));
    }

    #[test]
    fn keys_read_back_through_their_template() {
        let t = StorageTemplate::parse("originals/avatars/{shard?}/{key_base}", true).unwrap();
        let (kb, ext, shard) = t.match_key("originals/avatars/aa/hello").unwrap();
        assert_eq!((kb.as_str(), ext, shard.as_deref()), ("hello", None, Some("aa")));
        assert_eq!(t.match_key("originals/avatars/tenant-1/k").unwrap().2.as_deref(), Some("tenant-1"));
        assert!(t.match_key("originals/photos/aa/hello").is_none());
        assert!(t.match_key("originals/avatars/aa/hello/x").is_none());
        let t = StorageTemplate::parse("o/{shard}/{key_base}.{ext}", true).unwrap();
        let (kb, ext, _) = t.match_key("o/ab/k1.jpg").unwrap();
        assert_eq!((kb.as_str(), ext.unwrap().as_str()), ("k1", "jpg"));
        assert!(t.match_key("o/ab/k1").is_none());
    }

    #[test]
    fn sharding_disabled_removes_placeholder_and_one_slash() {
        let t = StorageTemplate::parse("originals/avatars/{shard?}/{key_base}", false).unwrap();
        assert_eq!(t.original(&kb("x"), None, None).unwrap().as_str(), "originals/avatars/x");
        let t = StorageTemplate::parse("{shard}/{key_base}", false).unwrap();
        assert_eq!(t.original(&kb("x"), None, None).unwrap().as_str(), "x");
        let t = StorageTemplate::parse("a/{key_base}/{shard}", false).unwrap();
        assert_eq!(t.original(&kb("x"), None, None).unwrap().as_str(), "a/x");
        assert!(!t.uses_shard());
    }

    #[test]
    fn bad_templates_are_refused() {
        assert!(StorageTemplate::parse("originals/", true).is_err());
        assert!(StorageTemplate::parse("a/{nope}/{key_base}", true).is_err());
        assert!(StorageTemplate::parse("a/{key_base", true).is_err());
        assert!(StorageTemplate::parse("/abs/{key_base}", true).is_err());
        assert!(StorageTemplate::parse("a/../{key_base}", true).is_err());
        assert!(StorageTemplate::parse("a//{key_base}", true).is_err());
    }

    #[test]
    fn key_base_rules() {
        assert!(KeyBase::parse("Abc_09-x").is_ok());
        assert!(KeyBase::parse(&"a".repeat(200)).is_ok());
        for bad in ["", "a.b", "a/b", "..", "a b", "é", &"a".repeat(201)] {
            assert_eq!(KeyBase::parse(bad), Err(KeyError::InvalidKeyBase), "{bad:?}");
        }
    }

    #[test]
    fn shard_rules() {
        assert!(Shard::parse("ab").is_ok());
        assert!(Shard::parse(&"a".repeat(64)).is_ok());
        for bad in ["", "AB", "a/b", "..", "a.b", &"a".repeat(65)] {
            assert_eq!(Shard::parse(bad), Err(KeyError::InvalidShard), "{bad:?}");
        }
    }

    #[test]
    fn object_key_rules() {
        assert!(ObjectKey::parse("a/b/c.jpg").is_ok());
        for bad in
            ["", "/a", "a/", "a//b", "a/../b", "..", "a/./b", "a\\b", "a/\u{0}b", "a/\nb", ".hidden", "a/.mediaflow/x"]
        {
            assert!(ObjectKey::parse(bad).is_err(), "{bad:?}");
        }
        assert!(ObjectKey::parse("a".repeat(1025)).is_err());
    }

    #[test]
    fn internal_keys_are_out_of_client_reach() {
        let key = ObjectKey::parse("originals/a/k1").unwrap();
        let claim = ObjectKey::internal(InternalKey::Claim(&key));
        assert!(claim.as_str().starts_with(".mediaflow/claims/") && claim.is_internal(), "{claim}");
        assert!(!key.is_internal());
        // Whatever the internal key, the client-side parser refuses it.
        for k in [claim.clone(), ObjectKey::internal(InternalKey::ClaimTakeover(&key, 7))] {
            assert!(ObjectKey::parse(k.as_str()).is_err(), "{k}");
            assert!(KeyPrefix::parse(k.as_str()).is_err(), "{k}");
        }
        assert!(ObjectKey::parse(".mediaflow/claims/x").is_err());
        assert!(KeyPrefix::parse(".mediaflow/").is_err());
        assert_ne!(claim, ObjectKey::internal(InternalKey::Claim(&ObjectKey::parse("originals/a/k2").unwrap())));
    }

    #[test]
    fn image_id_split() {
        let (base, ext) = split_image_id("photo.jpg").unwrap();
        assert_eq!(base.as_str(), "photo");
        assert_eq!(ext.unwrap().as_str(), "jpg");
        let (base, ext) = split_image_id("photo").unwrap();
        assert_eq!(base.as_str(), "photo");
        assert!(ext.is_none());
        assert!(split_image_id("../etc/passwd").is_err());
        assert!(split_image_id("a.b.c").is_err());
    }

    #[test]
    fn variant_keys_follow_the_seed_layout() {
        let v = VariantKey { size: Size::Width(256), quality: None, ext: "webp".into() };
        assert_eq!(v.key("thumbnails/avatars", &kb("k1")).unwrap().as_str(), "thumbnails/avatars/k1_256.webp");
        let v = VariantKey { size: Size::Width(128), quality: Some(40), ext: "jpeg".into() };
        assert_eq!(v.key("thumbnails/avatars/", &kb("k1")).unwrap().as_str(), "thumbnails/avatars/k1_128_q40.jpeg");
        assert_eq!(VariantKey::prefix("t", &kb("k1")).unwrap().as_str(), "t/k1_");
    }

    #[test]
    fn variant_names_parse_back_only_for_their_key_base() {
        let k = kb("a");
        assert_eq!(
            VariantKey::parse_name("a_256.webp", &k),
            Some(VariantKey { size: Size::Width(256), quality: None, ext: "webp".into() })
        );
        assert_eq!(
            VariantKey::parse_name("a_256_q80.jpeg", &k),
            Some(VariantKey { size: Size::Width(256), quality: Some(80), ext: "jpeg".into() })
        );
        // Variants of other key bases that share the "a_" prefix.
        assert_eq!(VariantKey::parse_name("a_1_256.webp", &k), None);
        assert_eq!(VariantKey::parse_name("a_b_256.webp", &k), None);
        assert_eq!(VariantKey::parse_name("a_128_q.webp", &k), None);
        assert_eq!(VariantKey::parse_name("a_256", &k), None);
        // Found by fuzzing (fuzz/artifacts/keys): `_03` is not a name this
        // service writes, and must not parse as width 3.
        assert_eq!(VariantKey::parse_name("a_03.webp", &k), None);
        assert_eq!(VariantKey::parse_name("a_0.webp", &k), None);
        assert_eq!(VariantKey::parse_name("a_3_q05.webp", &k), None);
        assert_eq!(VariantKey::parse_name("a_3_q256.webp", &k), None, "quality is a byte");
    }

    #[test]
    fn box_variant_keys_follow_the_spec() {
        let k = kb("k1");
        let name = |size: Size, quality: Option<u8>| {
            let v = VariantKey { size, quality, ext: "webp".into() };
            let key = v.key("t", &k).unwrap();
            let name = key.as_str().strip_prefix("t/").unwrap().to_owned();
            assert_eq!(VariantKey::parse_name(&name, &k), Some(v), "{name} parses back");
            name
        };
        assert_eq!(name(Size::boxed(256, 256, Fit::Cover, Gravity::Center), None), "k1_256x256.webp");
        assert_eq!(name(Size::boxed(256, 256, Fit::Cover, Gravity::Smart), Some(70)), "k1_256x256_smart_q70.webp");
        assert_eq!(name(Size::boxed(400, 300, Fit::Inside, Gravity::Center), None), "k1_400x300_inside.webp");
        assert_eq!(name(Size::boxed(400, 300, Fit::Inside, Gravity::West), None), "k1_400x300_inside.webp");
        for g in Gravity::ALL {
            name(Size::boxed(10, 20, Fit::Cover, g), None);
        }
        // Not names this service writes.
        for bad in [
            "k1_256x256_cover.webp",
            "k1_256x256_center.webp",
            "k1_256x256_inside_smart.webp",
            "k1_256x256_smart_inside.webp",
            "k1_256x256_smart_smart.webp",
            "k1_256x0256.webp",
            "k1_256x.webp",
            "k1_x256.webp",
            "k1_256X256.webp",
            "k1_256_smart.webp",
            "k1_256x256_up.webp",
            "k1_256x256__q70.webp",
            "k1_256x256_q70_smart.webp",
            "k1_facts.json",
        ] {
            assert_eq!(VariantKey::parse_name(bad, &k), None, "{bad}");
        }
        // Another key base whose name starts like a box of this one.
        assert_eq!(VariantKey::parse_name("k1_256x256_128.webp", &k), None);
    }
}
