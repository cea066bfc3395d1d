//! Upload profiles: the YAML file of the Go service, parsed into serde structs
//! that mirror it ([`RawFile`]), then validated once into [`Profile`]s with
//! typed fields (sizes as integers, MiB as bytes, formats as an enum).
//!
//! Every error names the file, the profile, the field and, where known, the line.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;

use crate::image::OutputFormat;
use crate::storage::keys::{KeyError, Shard, StorageTemplate};

/// The bundled example profiles, used when `STORAGE_CONFIG_PATH` is unset.
pub const EXAMPLE_PROFILES: &str = include_str!("../../config/profiles.yaml");

const MIB: u64 = 1024 * 1024;
/// S3's largest single PUT.
pub const MAX_SINGLE_PUT: u64 = 5 * 1024 * MIB;
/// S3's most parts in one upload.
pub const MAX_PARTS: u64 = 10_000;
/// S3's longest presigned URL lifetime (7 days).
pub const MAX_TOKEN_TTL: u64 = 7 * 24 * 3600;

/// A profiles file exactly as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawFile {
    /// Profiles by name.
    #[serde(deserialize_with = "unique_names")]
    pub profiles: BTreeMap<String, RawProfile>,
}

/// A map of profiles that refuses a name defined twice (YAML would keep the
/// last silently; the Go service's parser refused it too).
fn unique_names<'de, D: serde::Deserializer<'de>>(d: D) -> Result<BTreeMap<String, RawProfile>, D::Error> {
    struct Names;
    impl<'de> serde::de::Visitor<'de> for Names {
        type Value = BTreeMap<String, RawProfile>;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a map of profile names to profiles")
        }
        fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            let mut out = BTreeMap::new();
            while let Some(name) = map.next_key::<String>()? {
                if out.contains_key(&name) {
                    return Err(serde::de::Error::custom(format!("profile '{name}' is defined twice")));
                }
                let profile = map.next_value()?;
                out.insert(name, profile);
            }
            Ok(out)
        }
    }
    d.deserialize_map(Names)
}

/// A size written as `"256"` (the seed) or `256`.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum RawSize {
    /// `"256"`
    Text(String),
    /// `256`
    Number(i64),
}

/// A thumbnail size a profile lists: a width (`"256"`: the height follows
/// the image) or a box (`"256x256"`: asked for with `height`, filled as
/// `fit` and `gravity` say).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ThumbSize {
    /// A width.
    Width(u32),
    /// A box.
    Box {
        /// Its width.
        width: u32,
        /// Its height.
        height: u32,
    },
}

impl ThumbSize {
    /// The width (a box's width).
    pub fn width(&self) -> u32 {
        match *self {
            Self::Width(w) | Self::Box { width: w, .. } => w,
        }
    }

    /// The height of a box.
    pub fn height(&self) -> Option<u32> {
        match *self {
            Self::Width(_) => None,
            Self::Box { height, .. } => Some(height),
        }
    }

    /// Parses `256` or `256x256` (positive decimals; no bounds checked).
    pub fn parse(s: &str) -> Option<Self> {
        let number = |t: &str| t.parse::<u32>().ok().filter(|&n| n > 0 && !t.starts_with('+'));
        match s.split_once(['x', 'X']) {
            None => number(s).map(Self::Width),
            Some((w, h)) => Some(Self::Box { width: number(w)?, height: number(h)? }),
        }
    }
}

impl fmt::Display for ThumbSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Width(w) => write!(f, "{w}"),
            Self::Box { width, height } => write!(f, "{width}x{height}"),
        }
    }
}

/// One profile exactly as written. Optional keys have the defaults below.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(missing_docs)]
pub struct RawProfile {
    pub kind: Option<String>,
    pub allowed_mimes: Option<Vec<String>>,
    pub size_max_bytes: Option<i64>,
    pub multipart_threshold_mb: Option<i64>,
    pub part_size_mb: Option<i64>,
    pub token_ttl_seconds: Option<i64>,
    pub storage_path: Option<String>,
    pub enable_sharding: Option<bool>,
    pub thumb_folder: Option<String>,
    pub sizes: Option<Vec<RawSize>>,
    pub default_size: Option<RawSize>,
    pub quality: Option<i64>,
    pub convert_to: Option<String>,
    pub cache_duration: Option<i64>,
    pub proxy_folder: Option<String>,
    pub formats: Option<Vec<String>>,
    pub poster_time: Option<f64>,
    pub allow_any_width: Option<bool>,
    pub max_width: Option<i64>,
    pub max_height: Option<i64>,
    pub initial_batch_size: Option<i64>,
    pub max_batch_size: Option<i64>,
}

/// Image or video.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MediaKind {
    /// Still images: thumbnails are resized images.
    Image,
    /// Videos: thumbnails are poster frames.
    Video,
}

impl MediaKind {
    /// The YAML spelling.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Image => "image",
            Self::Video => "video",
        }
    }
}

/// The thumbnail format of a profile and the extension its variants are stored
/// under (`convert_to` as written, so `jpg` stays `jpg` as in the seed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConvertTo {
    /// The encoder.
    pub format: OutputFormat,
    /// The extension as written in the profile.
    pub ext: String,
}

/// A validated profile.
#[derive(Debug, Clone)]
pub struct Profile {
    /// The profile's name (`avatar`).
    pub name: String,
    /// Image or video, with what only videos have.
    pub media: Media,
    /// MIME types a client may upload, canonical names (see [`crate::media_type`]).
    pub allowed_mimes: Vec<String>,
    /// Largest upload, bytes.
    pub size_max_bytes: u64,
    /// Uploads larger than this are multipart, bytes.
    pub multipart_threshold: u64,
    /// Part size, bytes (>= 5 MiB).
    pub part_size: u64,
    /// Lifetime of presigned URLs and upload tokens.
    pub token_ttl: Duration,
    /// Where originals go.
    pub storage_path: StorageTemplate,
    /// Whether originals are sharded.
    pub enable_sharding: bool,
    /// Folder of the thumbnails (no trailing slash).
    pub thumb_folder: String,
    /// Thumbnail widths and boxes anyone may ask for.
    pub sizes: Vec<ThumbSize>,
    /// The size of a request that names none (`None`: the profile has no
    /// sizes, so a thumbnail request must name its width).
    pub default_size: Option<ThumbSize>,
    /// Encoder quality, 1..=100.
    pub quality: u8,
    /// Default thumbnail format.
    pub convert_to: ConvertTo,
    /// Cache-Control max-age for this profile's media; `None`: CACHE_MAX_AGE.
    pub cache_duration: Option<u64>,
    /// Any width up to `max_width`, not only `sizes`.
    pub allow_any_width: bool,
    /// Widest thumbnail.
    pub max_width: u32,
    /// Tallest box (`height`) a request may ask for with `allow_any_width`.
    pub max_height: u32,
    /// Part URLs in the presign answer.
    pub initial_batch_size: u32,
    /// Most part URLs per presign/parts call.
    pub max_batch_size: u32,
    /// Custom shards clients may not send: another profile's folder names
    /// (see [`super::overlap`]).
    pub reserved_shards: BTreeSet<String>,
}

/// What a profile holds: images, or videos with their own settings.
#[derive(Debug, Clone, PartialEq)]
pub enum Media {
    /// Still images.
    Image,
    /// Videos: posters, proxies.
    Video(VideoSettings),
}

/// A web-playable proxy format of videos.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ProxyFormat {
    /// H.264 + AAC in MP4 (`+faststart`).
    Mp4,
    /// VP9 + Opus in WebM.
    Webm,
}

impl ProxyFormat {
    /// `mp4` or `webm` (ASCII case-insensitive).
    pub fn from_name(s: &str) -> Option<Self> {
        if s.eq_ignore_ascii_case("mp4") {
            Some(Self::Mp4)
        } else if s.eq_ignore_ascii_case("webm") {
            Some(Self::Webm)
        } else {
            None
        }
    }

    /// The name, which is also the proxy's extension.
    pub fn name(self) -> &'static str {
        match self {
            Self::Mp4 => "mp4",
            Self::Webm => "webm",
        }
    }
}

/// The settings only a video profile has.
#[derive(Debug, Clone, PartialEq)]
pub struct VideoSettings {
    /// Where proxies are stored (`None`: no proxies).
    pub proxy_folder: Option<String>,
    /// The proxies made of each video.
    pub proxy_formats: Vec<ProxyFormat>,
    /// Seconds into the video where posters are taken (at most half the duration).
    pub poster_time: f64,
}

impl Profile {
    /// Image or video.
    pub fn kind(&self) -> MediaKind {
        match self.media {
            Media::Image => MediaKind::Image,
            Media::Video(_) => MediaKind::Video,
        }
    }

    /// The video settings of a video profile.
    pub fn video(&self) -> Option<&VideoSettings> {
        match &self.media {
            Media::Video(v) => Some(v),
            Media::Image => None,
        }
    }

    /// The shard a client sent, as this profile uses it: `None` (the computed
    /// SHA-1 shard) when absent or empty, or when the profile does not shard
    /// (then any shard is ignored, as in the seed). One rule for presign and
    /// every lookup.
    pub fn client_shard(&self, raw: Option<&str>) -> Result<Option<Shard>, KeyError> {
        let Some(raw) = raw.filter(|s| !s.is_empty()) else { return Ok(None) };
        if !self.enable_sharding || !self.storage_path.uses_shard() {
            return Ok(None);
        }
        let shard = Shard::parse(raw)?;
        if self.reserved_shards.contains(raw) {
            return Err(KeyError::ReservedShard(raw.to_owned()));
        }
        Ok(Some(shard))
    }

    /// Whether a client may upload `mime` (as declared or sniffed): the one
    /// rule of [`crate::media_type::allows`].
    pub fn allows_mime(&self, mime: &str) -> bool {
        crate::media_type::allows(&self.allowed_mimes, mime)
    }
}

/// A configuration error, located as precisely as the parser allows.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigError {
    /// The file (path, `s3://…`, or `<bundled>`).
    pub file: String,
    /// The profile, when the error is in one.
    pub profile: Option<String>,
    /// The field, when the error is in one.
    pub field: Option<String>,
    /// 1-based line, when known.
    pub line: Option<usize>,
    /// What is wrong.
    pub message: String,
    /// The other problems found in the same file, each located.
    pub more: Vec<ConfigError>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file)?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
        }
        write!(f, ":")?;
        if let Some(p) = &self.profile {
            write!(f, " profile '{p}'")?;
        }
        if let Some(field) = &self.field {
            write!(f, " field '{field}'")?;
        }
        if self.profile.is_some() || self.field.is_some() {
            write!(f, ":")?;
        }
        write!(f, " {}", self.message)?;
        for other in &self.more {
            write!(f, "\n{other}")?;
        }
        Ok(())
    }
}

/// The validated profiles, by name; always has a `default`.
#[derive(Debug, Clone)]
pub struct Profiles {
    by_name: BTreeMap<String, Arc<Profile>>,
}

/// The built-in `default` profile, used when the file has none (the seed's).
const BUILTIN_DEFAULT: &str = r#"
kind: "image"
allowed_mimes: ["image/jpeg", "image/png", "image/webp", "image/gif"]
size_max_bytes: 10485760
multipart_threshold_mb: 15
part_size_mb: 8
token_ttl_seconds: 900
storage_path: "originals/{shard?}/{key_base}"
enable_sharding: true
thumb_folder: "thumbnails"
sizes: ["128", "256", "512", "1024"]
default_size: "256"
quality: 85
convert_to: "webp"
"#;

impl Profiles {
    /// Parses and validates a profiles file; `file` names it in errors.
    pub fn parse(text: &str, file: &str) -> Result<Self, Box<ConfigError>> {
        let raw: RawFile = serde_yaml_ng::from_str(text).map_err(|e| -> Box<ConfigError> {
            let message = e.to_string();
            // The parser knows only where the map starts; the line to fix is
            // the second definition.
            let twice = message.split('\'').nth(1).filter(|_| message.contains("is defined twice"));
            ConfigError {
                file: file.to_owned(),
                profile: twice.map(str::to_owned),
                field: None,
                line: twice.and_then(|name| second_definition(text, name)).or(e.location().map(|l| l.line())),
                message,
                more: Vec::new(),
            }
            .into()
        })?;
        if raw.profiles.is_empty() {
            return Err(ConfigError {
                file: file.to_owned(),
                profile: None,
                field: Some("profiles".into()),
                line: None,
                message: "no profiles defined".into(),
                more: Vec::new(),
            }
            .into());
        }
        let mut by_name = BTreeMap::new();
        let mut problems = Vec::new();
        for (name, raw_profile) in raw.profiles {
            match validate(&name, raw_profile) {
                Ok(profile) => {
                    by_name.insert(name, profile);
                }
                Err(fields) => problems.extend(fields.into_iter().map(|(field, message)| ConfigError {
                    file: file.to_owned(),
                    line: locate(text, &name, field),
                    profile: Some(name.clone()),
                    field: Some(field.to_owned()),
                    message,
                    more: Vec::new(),
                })),
            }
        }
        if let Some(mut first) = (!problems.is_empty()).then(|| problems.remove(0)) {
            first.more = problems;
            return Err(first.into());
        }
        if !by_name.contains_key("default") {
            let raw: RawProfile = serde_yaml_ng::from_str(BUILTIN_DEFAULT).expect("built-in default parses");
            let profile = validate("default", raw).unwrap_or_else(|e| unreachable!("built-in default: {e:?}"));
            by_name.insert("default".into(), profile);
        }
        let all: Vec<&Profile> = by_name.values().collect();
        let reserved = super::overlap::check(&all).map_err(|o| {
            Box::new(ConfigError {
                file: file.to_owned(),
                line: locate(text, &o.profile, "storage_path"),
                profile: Some(o.profile.clone()),
                field: None,
                message: o.message,
                more: Vec::new(),
            })
        })?;
        for (name, shards) in reserved.0 {
            if let Some(p) = by_name.get_mut(&name) {
                p.reserved_shards = shards;
            }
        }
        Ok(Self { by_name: by_name.into_iter().map(|(n, p)| (n, Arc::new(p))).collect() })
    }

    /// The bundled example profiles.
    pub fn example() -> Self {
        Self::parse(EXAMPLE_PROFILES, "<bundled config/profiles.yaml>").expect("bundled profiles are valid")
    }

    /// A profile by name.
    pub fn get(&self, name: &str) -> Option<&Arc<Profile>> {
        self.by_name.get(name)
    }

    /// All profiles, by name.
    pub fn iter(&self) -> impl Iterator<Item = &Arc<Profile>> {
        self.by_name.values()
    }

    /// The profile names, comma-separated (for messages).
    pub fn names(&self) -> String {
        self.by_name.keys().map(String::as_str).collect::<Vec<_>>().join(", ")
    }

    /// The profile whose `storage_path` an object key was made from: the one
    /// with the longest literal prefix the key starts with.
    pub fn for_object_key(&self, key: &str) -> Option<&Arc<Profile>> {
        self.by_name
            .values()
            .filter(|p| key.starts_with(p.storage_path.literal_prefix()))
            .max_by_key(|p| p.storage_path.literal_prefix().len())
    }
}

/// The line (1-based) of the second `name:` key at the profiles' indentation.
fn second_definition(text: &str, name: &str) -> Option<usize> {
    let indent = |l: &str| l.len() - l.trim_start().len();
    let is_def = |l: &&str| {
        indent(l) > 0 && l.trim_start().split(':').next().is_some_and(|k| k.trim().trim_matches(['"', '\'']) == name)
    };
    let mut defs = text.lines().enumerate().filter(|(_, l)| is_def(l));
    let (first, first_line) = defs.next()?;
    defs.find(|(_, l)| indent(l) == indent(first_line)).map(|(i, _)| i + 1).filter(|&i| i > first + 1)
}

/// Finds the line of `field` inside profile `name` (1-based), by indentation.
fn locate(text: &str, name: &str, field: &str) -> Option<usize> {
    let lines: Vec<&str> = text.lines().collect();
    let indent = |l: &str| l.len() - l.trim_start().len();
    let key_of = |l: &str| l.trim_start().split(':').next().unwrap_or("").trim().trim_matches(['"', '\'']).to_owned();
    let start = lines.iter().position(|l| indent(l) > 0 && key_of(l) == name && l.trim_end().ends_with(':'))?;
    let base = indent(lines[start]);
    for (i, line) in lines.iter().enumerate().skip(start + 1) {
        if line.trim().is_empty() || line.trim_start().starts_with('#') {
            continue;
        }
        if indent(line) <= base {
            break;
        }
        if key_of(line) == field {
            return Some(i + 1);
        }
    }
    Some(start + 1)
}

type FieldResult<T> = Result<T, (&'static str, String)>;

fn in_range(field: &'static str, v: i64, min: i64, max: i64) -> FieldResult<i64> {
    if v < min || v > max { Err((field, format!("must be between {min} and {max}, got {v}"))) } else { Ok(v) }
}

fn size_value(field: &'static str, raw: &RawSize) -> FieldResult<ThumbSize> {
    let size = match raw {
        RawSize::Number(n) => u32::try_from(*n).ok().filter(|&n| n > 0).map(ThumbSize::Width),
        RawSize::Text(s) => ThumbSize::parse(s.trim()),
    };
    let shown = match raw {
        RawSize::Number(n) => n.to_string(),
        RawSize::Text(s) => format!("'{s}'"),
    };
    match size {
        Some(size) if size.width() <= 16384 && size.height().is_none_or(|h| h <= 16384) => Ok(size),
        _ => Err((field, format!("{shown} is not a width (\"256\") or a box (\"256x256\") of sides in 1..=16384"))),
    }
}

fn folder(field: &'static str, raw: &str) -> FieldResult<String> {
    crate::storage::keys::parse_folder(raw).map_err(|e| (field, e.to_string()))
}

/// Collects every problem of one profile, so a file is fixed in one go.
#[derive(Default)]
struct Problems(Vec<(&'static str, String)>);

impl Problems {
    /// The value, or `fallback` with the problem noted.
    fn take<T>(&mut self, r: FieldResult<T>, fallback: T) -> T {
        r.unwrap_or_else(|e| {
            self.0.push(e);
            fallback
        })
    }

    fn add(&mut self, field: &'static str, message: impl Into<String>) {
        self.0.push((field, message.into()));
    }
}

/// Turns one raw profile into a validated one, or names every bad field.
fn validate(name: &str, raw: RawProfile) -> Result<Profile, Vec<(&'static str, String)>> {
    let mut p = Problems::default();
    if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-') {
        p.add("profiles", format!("profile name '{name}' must be [A-Za-z0-9_-]+"));
    }
    let kind = match raw.kind.as_deref().unwrap_or("image") {
        "image" => MediaKind::Image,
        "video" => MediaKind::Video,
        other => {
            p.add("kind", format!("'{other}' is not image or video"));
            MediaKind::Image
        }
    };
    let allowed_mimes: Vec<String> = match raw.allowed_mimes {
        None => {
            p.add("allowed_mimes", "is required");
            Vec::new()
        }
        Some(list) if list.is_empty() => {
            p.add("allowed_mimes", "must list at least one MIME type");
            Vec::new()
        }
        Some(list) => list
            .iter()
            .filter_map(|m| match crate::media_type::canonical(m) {
                Ok(t) => Some(t.mime.to_owned()),
                Err(e) => {
                    p.add("allowed_mimes", e.to_string());
                    None
                }
            })
            .collect(),
    };
    let size_max_bytes = match raw.size_max_bytes {
        Some(v) => p.take(in_range("size_max_bytes", v, 1, (5 * 1024 * 1024 * MIB) as i64), 1) as u64,
        None => {
            p.add("size_max_bytes", "is required");
            1
        }
    };
    let threshold_mb =
        p.take(in_range("multipart_threshold_mb", raw.multipart_threshold_mb.unwrap_or(15), 0, 5 * 1024), 15);
    let part_size_mb = p.take(in_range("part_size_mb", raw.part_size_mb.unwrap_or(8), 5, 5 * 1024), 8);
    let part_size = part_size_mb as u64 * MIB;
    if size_max_bytes.div_ceil(part_size) > MAX_PARTS {
        p.add(
            "part_size_mb",
            format!("{part_size_mb} MiB parts cannot carry size_max_bytes in {MAX_PARTS} parts (S3's limit)"),
        );
    }
    let token_ttl =
        p.take(in_range("token_ttl_seconds", raw.token_ttl_seconds.unwrap_or(900), 1, MAX_TOKEN_TTL as i64), 900);
    let enable_sharding = raw.enable_sharding.unwrap_or(false);
    let storage_path = match raw.storage_path.as_deref() {
        None => {
            p.add("storage_path", "is required");
            None
        }
        Some(t) => p.take(
            StorageTemplate::parse(t, enable_sharding).map(Some).map_err(|e| ("storage_path", e.to_string())),
            None,
        ),
    };
    let thumb_folder = p.take(
        folder("thumb_folder", raw.thumb_folder.as_deref().unwrap_or(&format!("thumbnails/{name}"))),
        format!("thumbnails/{name}"),
    );
    let max_width = p.take(in_range("max_width", raw.max_width.unwrap_or(4096), 1, 16384), 4096) as u32;
    let max_height = p.take(in_range("max_height", raw.max_height.unwrap_or(4096), 1, 16384), 4096) as u32;
    let sizes: Vec<ThumbSize> = raw
        .sizes
        .unwrap_or_default()
        .iter()
        .filter_map(|s| {
            let r = size_value("sizes", s);
            p.take(r.map(Some), None)
        })
        .collect();
    let allow_any_width = raw.allow_any_width.unwrap_or(false);
    let default_size = match &raw.default_size {
        Some(d) => p.take(size_value("default_size", d).map(Some), None),
        None => sizes.first().copied(),
    };
    if let Some(d) = default_size
        && !sizes.is_empty()
        && !sizes.contains(&d)
    {
        let listed: Vec<String> = sizes.iter().map(ThumbSize::to_string).collect();
        p.add("default_size", format!("{d} is not one of sizes [{}]", listed.join(", ")));
    }
    // A profile without sizes is valid (uploads only, or a video profile):
    // its thumbnail requests are refused with a 400 unless allow_any_width.
    if let Some(s) = sizes.iter().chain(default_size.as_ref()).find(|s| s.width() > max_width) {
        p.add("sizes", format!("{s} is wider than max_width {max_width}"));
    }
    if let Some(s) = sizes.iter().chain(default_size.as_ref()).find(|s| s.height().is_some_and(|h| h > max_height)) {
        p.add("sizes", format!("{s} is taller than max_height {max_height}"));
    }
    let quality = p.take(in_range("quality", raw.quality.unwrap_or(85), 1, 100), 85) as u8;
    let convert_ext = raw.convert_to.unwrap_or_else(|| "webp".into());
    let format = match OutputFormat::from_name(&convert_ext) {
        Some(f) => f,
        None => {
            p.add("convert_to", format!("'{convert_ext}' is not one of webp, jpeg, jpg, png, avif"));
            OutputFormat::Webp
        }
    };
    let cache_duration = match raw.cache_duration {
        Some(d) => p.take(in_range("cache_duration", d, 0, 10 * 365 * 24 * 3600).map(|v| Some(v as u64)), None),
        None => None,
    };
    let initial_batch_size =
        p.take(in_range("initial_batch_size", raw.initial_batch_size.unwrap_or(10), 1, MAX_PARTS as i64), 10) as u32;
    let max_batch_size =
        p.take(in_range("max_batch_size", raw.max_batch_size.unwrap_or(100), 1, MAX_PARTS as i64), 100) as u32;
    if initial_batch_size > max_batch_size {
        p.add("initial_batch_size", format!("{initial_batch_size} is larger than max_batch_size {max_batch_size}"));
    }
    let media = match kind {
        MediaKind::Image => {
            for (field, present) in [
                ("proxy_folder", raw.proxy_folder.is_some()),
                ("formats", raw.formats.is_some()),
                ("poster_time", raw.poster_time.is_some()),
            ] {
                if present {
                    p.add(field, "is for video profiles only (kind: video)");
                }
            }
            Media::Image
        }
        MediaKind::Video => {
            Media::Video(video_settings(&mut p, raw.proxy_folder.as_deref(), raw.formats, raw.poster_time))
        }
    };
    if !p.0.is_empty() {
        return Err(p.0);
    }
    Ok(Profile {
        name: name.to_owned(),
        media,
        allowed_mimes,
        size_max_bytes,
        multipart_threshold: threshold_mb as u64 * MIB,
        part_size,
        token_ttl: Duration::from_secs(token_ttl as u64),
        storage_path: storage_path.expect("no problems means a template"),
        enable_sharding,
        thumb_folder,
        sizes,
        default_size,
        quality,
        convert_to: ConvertTo { format, ext: convert_ext.to_ascii_lowercase() },
        cache_duration,
        allow_any_width,
        max_width,
        max_height,
        initial_batch_size,
        max_batch_size,
        reserved_shards: BTreeSet::new(),
    })
}

/// The video-only part of a profile: proxies (a folder and formats, both or
/// neither) and where posters are taken.
fn video_settings(
    p: &mut Problems,
    proxy_folder: Option<&str>,
    formats: Option<Vec<String>>,
    poster_time: Option<f64>,
) -> VideoSettings {
    let proxy_folder = proxy_folder.and_then(|f| p.take(folder("proxy_folder", f).map(Some), None));
    let mut proxy_formats = Vec::new();
    for f in formats.unwrap_or_default() {
        match ProxyFormat::from_name(&f) {
            Some(format) if !proxy_formats.contains(&format) => proxy_formats.push(format),
            Some(_) => p.add("formats", format!("'{f}' is listed twice")),
            None => p.add("formats", format!("'{f}' is not a proxy format (mp4, webm)")),
        }
    }
    if proxy_folder.is_none() && !proxy_formats.is_empty() {
        p.add("formats", "proxies need a proxy_folder to be stored in");
    }
    let poster_time = poster_time.unwrap_or(1.0);
    if !(poster_time.is_finite() && (0.0..=86_400.0).contains(&poster_time)) {
        p.add("poster_time", format!("{poster_time} is not a number of seconds in 0..=86400"));
    }
    VideoSettings { proxy_folder, proxy_formats, poster_time }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bundled_profiles_are_valid() {
        let p = Profiles::example();
        for name in ["avatar", "photo", "banner", "video", "default"] {
            assert!(p.get(name).is_some(), "{name}");
        }
        let avatar = p.get("avatar").unwrap();
        assert_eq!(avatar.kind(), MediaKind::Image);
        assert_eq!(avatar.size_max_bytes, 5_242_880);
        assert_eq!(avatar.multipart_threshold, 15 * MIB);
        assert_eq!(avatar.part_size, 8 * MIB);
        assert_eq!(avatar.sizes, vec![ThumbSize::Width(128), ThumbSize::Width(256)]);
        assert_eq!(avatar.default_size, Some(ThumbSize::Width(256)));
        assert_eq!(avatar.convert_to.format, OutputFormat::Webp);
        assert_eq!(avatar.token_ttl, Duration::from_secs(900));
        assert_eq!(p.get("video").unwrap().kind(), MediaKind::Video);
    }

    #[test]
    fn builtin_default_is_added() {
        let yaml = "profiles:\n  a:\n    allowed_mimes: [image/png]\n    size_max_bytes: 10\n    storage_path: x/{key_base}\n    sizes: [64]\n";
        let p = Profiles::parse(yaml, "f.yaml").unwrap();
        let d = p.get("default").unwrap();
        assert_eq!(d.default_size, Some(ThumbSize::Width(256)));
        assert_eq!(d.convert_to.format, OutputFormat::Webp);
        assert_eq!(p.get("a").unwrap().sizes, vec![ThumbSize::Width(64)]);
    }

    #[test]
    fn unknown_keys_are_refused_with_line() {
        let yaml = "profiles:\n  a:\n    allowed_mimes: [image/png]\n    size_max_bytes: 10\n    colour: red\n";
        let e = Profiles::parse(yaml, "f.yaml").unwrap_err();
        assert_eq!(e.line, Some(5), "{e}");
        assert!(e.to_string().contains("f.yaml:5"), "{e}");
        assert!(e.to_string().contains("colour"), "{e}");
    }

    #[test]
    fn validation_errors_name_profile_field_and_line() {
        let yaml = "profiles:\n  avatar:\n    allowed_mimes: [image/png]\n    size_max_bytes: 10\n    storage_path: x/{key_base}\n    sizes: [\"128\"]\n    default_size: \"256\"\n";
        let e = Profiles::parse(yaml, "p.yaml").unwrap_err();
        assert_eq!(e.profile.as_deref(), Some("avatar"));
        assert_eq!(e.field.as_deref(), Some("default_size"));
        assert_eq!(e.line, Some(7));
        assert_eq!(e.to_string(), "p.yaml:7: profile 'avatar' field 'default_size': 256 is not one of sizes [128]");
    }

    #[test]
    fn bad_values_are_refused() {
        let base = "profiles:\n  a:\n    allowed_mimes: [image/png]\n    size_max_bytes: 100\n    storage_path: x/{key_base}\n    sizes: [\"64\"]\n";
        for (extra, field) in [
            ("    part_size_mb: 4\n", "part_size_mb"),
            ("    quality: 0\n", "quality"),
            ("    quality: 101\n", "quality"),
            ("    convert_to: gif\n", "convert_to"),
            ("    kind: audio\n", "kind"),
            ("    thumb_folder: ../up\n", "thumb_folder"),
            ("    token_ttl_seconds: 0\n", "token_ttl_seconds"),
            ("    initial_batch_size: 200\n", "initial_batch_size"),
        ] {
            let e = Profiles::parse(&format!("{base}{extra}"), "f").unwrap_err();
            assert_eq!(e.field.as_deref(), Some(field), "{extra}: {e}");
        }
        let no_path = "profiles:\n  a:\n    allowed_mimes: [image/png]\n    size_max_bytes: 100\n    sizes: [\"64\"]\n";
        assert_eq!(Profiles::parse(no_path, "f").unwrap_err().field.as_deref(), Some("storage_path"));
        let bad_size = base.replace("\"64\"", "\"abc\"");
        assert_eq!(Profiles::parse(&bad_size, "f").unwrap_err().field.as_deref(), Some("sizes"));
        let too_many_parts = base.replace("size_max_bytes: 100", "size_max_bytes: 90000000000");
        assert_eq!(Profiles::parse(&too_many_parts, "f").unwrap_err().field.as_deref(), Some("part_size_mb"));
    }

    #[test]
    fn a_profile_defined_twice_is_refused() {
        let one = "  a:\n    allowed_mimes: [image/png]\n    size_max_bytes: 10\n    storage_path: x/{key_base}\n    sizes: [64]\n";
        let e = Profiles::parse(&format!("profiles:\n{one}{one}"), "p.yaml").unwrap_err();
        assert!(e.to_string().contains("profile 'a' is defined twice"), "{e}");
        assert_eq!(e.line, Some(7), "the second definition's line: {e}");
    }

    #[test]
    fn a_profile_may_have_no_sizes() {
        // SPEC's video example lists no sizes; an upload-only profile needs none.
        let yaml = "profiles:\n  video:\n    kind: video\n    allowed_mimes: [video/mp4]\n    size_max_bytes: 1000\n    storage_path: v/{key_base}\n    thumb_folder: posters/videos\n    proxy_folder: proxies/videos\n    formats: [mp4, webm]\n";
        let p = Profiles::parse(yaml, "f").unwrap();
        let video = p.get("video").unwrap();
        assert!(video.sizes.is_empty());
        assert_eq!(video.default_size, None);
        let err = crate::thumbs::resolve_variant(video, &Default::default()).unwrap_err();
        assert!(err.contains("width is required"), "{err}");
        let params = crate::thumbs::ThumbParams { width: Some("64"), ..Default::default() };
        let err = crate::thumbs::resolve_variant(video, &params).unwrap_err();
        assert!(err.contains("no thumbnail sizes"), "{err}");
    }

    #[test]
    fn profile_found_from_object_key() {
        let p = Profiles::example();
        assert_eq!(p.for_object_key("originals/avatars/ab/k1").unwrap().name, "avatar");
        assert_eq!(p.for_object_key("originals/photos/ab/k1").unwrap().name, "photo");
        assert!(p.for_object_key("elsewhere/k1").is_none());
    }

    #[test]
    fn jpg_is_kept_as_the_variant_extension() {
        let yaml = "profiles:\n  a:\n    allowed_mimes: [image/png]\n    size_max_bytes: 10\n    storage_path: x/{key_base}\n    sizes: [64]\n    convert_to: jpg\n";
        let p = Profiles::parse(yaml, "f").unwrap();
        let a = p.get("a").unwrap();
        assert_eq!(a.convert_to, ConvertTo { format: OutputFormat::Jpeg, ext: "jpg".into() });
    }
}

#[cfg(test)]
mod more_tests {
    use super::*;

    #[test]
    fn every_problem_in_the_file_is_reported_at_once() {
        let yaml = "profiles:\n  a:\n    allowed_mimes: [image/jpg]\n    size_max_bytes: 10\n    storage_path: x/{key_base}\n    quality: 0\n  b:\n    allowed_mimes: [image/png]\n    convert_to: gif\n    storage_path: y/{key_base}\n";
        let e = Profiles::parse(yaml, "f.yaml").unwrap_err();
        let all = e.to_string();
        for expected in [
            "f.yaml:3: profile 'a' field 'allowed_mimes'",
            "f.yaml:6: profile 'a' field 'quality'",
            "profile 'b' field 'size_max_bytes': is required",
            "f.yaml:9: profile 'b' field 'convert_to'",
        ] {
            assert!(all.contains(expected), "{expected} in:\n{all}");
        }
        assert_eq!(e.more.len(), 3, "{all}");
    }

    #[test]
    fn video_settings_belong_to_video_profiles() {
        let base = "profiles:\n  v:\n    allowed_mimes: [video/mp4]\n    size_max_bytes: 1000\n    storage_path: v/{key_base}\n";
        let p = Profiles::parse(
            &format!(
                "{base}    kind: video\n    proxy_folder: proxies/v\n    formats: [mp4, webm]\n    poster_time: 2.5\n"
            ),
            "f",
        )
        .unwrap();
        let v = p.get("v").unwrap().video().unwrap().clone();
        assert_eq!(v.proxy_formats, vec![ProxyFormat::Mp4, ProxyFormat::Webm]);
        assert_eq!(v.proxy_folder.as_deref(), Some("proxies/v"));
        assert_eq!(v.poster_time, 2.5);
        let p = Profiles::parse(&format!("{base}    kind: video\n"), "f").unwrap();
        assert_eq!(p.get("v").unwrap().video().unwrap().poster_time, 1.0, "the default");
        // On an image profile they are a mistake, as are unknown formats.
        let e = Profiles::parse(&format!("{base}    proxy_folder: proxies/v\n"), "f").unwrap_err();
        assert_eq!(e.field.as_deref(), Some("proxy_folder"));
        let e = Profiles::parse(&format!("{base}    kind: video\n    proxy_folder: p\n    formats: [avi]\n"), "f")
            .unwrap_err();
        assert!(e.to_string().contains("'avi' is not a proxy format"), "{e}");
        let e = Profiles::parse(&format!("{base}    kind: video\n    formats: [mp4]\n"), "f").unwrap_err();
        assert!(e.to_string().contains("proxy_folder"), "{e}");
    }
}

#[cfg(test)]
mod box_tests {
    use super::*;

    const BASE: &str =
        "profiles:\n  a:\n    allowed_mimes: [image/png]\n    size_max_bytes: 100\n    storage_path: x/{key_base}\n";

    #[test]
    fn sizes_are_widths_or_boxes() {
        let yaml =
            format!("{BASE}    sizes: [\"128\", \"256x256\", 64, \"1200X630\"]\n    default_size: \"256x256\"\n");
        let p = Profiles::parse(&yaml, "f").unwrap();
        let a = p.get("a").unwrap();
        assert_eq!(
            a.sizes,
            vec![
                ThumbSize::Width(128),
                ThumbSize::Box { width: 256, height: 256 },
                ThumbSize::Width(64),
                ThumbSize::Box { width: 1200, height: 630 }
            ]
        );
        assert_eq!(a.default_size, Some(ThumbSize::Box { width: 256, height: 256 }));
        assert_eq!(a.max_height, 4096, "the default");
        assert_eq!(a.sizes.iter().map(ThumbSize::to_string).collect::<Vec<_>>(), ["128", "256x256", "64", "1200x630"]);
    }

    #[test]
    fn bad_boxes_are_refused() {
        for (extra, want) in [
            ("    sizes: [\"256x\"]\n", "'256x' is not a width"),
            ("    sizes: [\"0x10\"]\n", "is not a width"),
            ("    sizes: [\"10x-1\"]\n", "is not a width"),
            ("    sizes: [\"+10\"]\n", "is not a width"),
            ("    sizes: [\"256x300\"]\n    max_height: 200\n", "256x300 is taller than max_height 200"),
            ("    sizes: [\"256x256\"]\n    default_size: \"256x128\"\n", "256x128 is not one of sizes [256x256]"),
            ("    sizes: [\"64\"]\n    max_height: 0\n", "max_height"),
        ] {
            let e = Profiles::parse(&format!("{BASE}{extra}"), "f").unwrap_err();
            assert!(e.to_string().contains(want), "{extra}: {e}");
        }
    }
}
