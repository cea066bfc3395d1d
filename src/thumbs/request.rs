//! What a thumbnail URL asks for: width, format and quality, checked against
//! the profile, and the variant key they map to.

use crate::config::Profile;
use crate::image::{OutputFormat, ThumbSpec};
use crate::storage::keys::VariantKey;

/// Whether the format came from the URL or the profile, or from `Accept`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FormatChoice {
    /// Fixed by the URL or the profile.
    Fixed,
    /// Picked from the Accept header: the answer varies by it.
    Auto,
}

/// A validated thumbnail request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VariantRequest {
    /// Output width asked for (the image is never upscaled past the original).
    pub width: u32,
    /// Output format.
    pub format: OutputFormat,
    /// Encoder quality.
    pub quality: u8,
    /// How the format was chosen.
    pub choice: FormatChoice,
    /// Where the variant is stored.
    pub key: VariantKey,
}

impl VariantRequest {
    /// The profile's own format and quality at `width`.
    pub fn default_for(profile: &Profile, width: u32) -> Self {
        Self::build(profile, width, profile.convert_to.format, profile.quality, FormatChoice::Fixed)
    }

    fn build(profile: &Profile, width: u32, format: OutputFormat, quality: u8, choice: FormatChoice) -> Self {
        // The seed's layout: the profile's own format keeps its spelling (`jpg`),
        // others use their name; the quality shows only when it differs.
        let ext = if format == profile.convert_to.format {
            profile.convert_to.ext.clone()
        } else {
            format.extension().to_owned()
        };
        let key = VariantKey { width, quality: (quality != profile.quality).then_some(quality), ext };
        Self { width, format, quality, choice, key }
    }

    /// What the image pipeline makes.
    pub fn spec(&self) -> ThumbSpec {
        ThumbSpec { width: self.width, format: self.format, quality: self.quality }
    }
}

fn accepts(accept: &str, mime: &str) -> bool {
    accept.split(',').any(|part| {
        let mut it = part.split(';');
        let ty = it.next().unwrap_or("").trim();
        let refused = it
            .any(|p| matches!(p.trim().strip_prefix("q="), Some(q) if q.trim().parse::<f32>().is_ok_and(|q| q <= 0.0)));
        ty.eq_ignore_ascii_case(mime) && !refused
    })
}

/// Checks `width`, `format` and `quality` from a URL against the profile.
/// The error is a message for a 400.
pub fn resolve_variant(
    profile: &Profile,
    width: Option<&str>,
    format: Option<&str>,
    quality: Option<&str>,
    accept: Option<&str>,
) -> Result<VariantRequest, String> {
    let width = match width.map(str::trim).filter(|w| !w.is_empty()) {
        None => profile
            .default_size
            .ok_or_else(|| format!("width is required: profile '{}' has no default_size", profile.name))?,
        Some(w) => w.parse::<u32>().map_err(|_| format!("width '{w}' is not a positive integer"))?,
    };
    let allowed =
        if profile.allow_any_width { (1..=profile.max_width).contains(&width) } else { profile.sizes.contains(&width) };
    if !allowed {
        return Err(if profile.allow_any_width {
            format!("width {width} is outside 1..={} for profile '{}'", profile.max_width, profile.name)
        } else if profile.sizes.is_empty() {
            format!("profile '{}' has no thumbnail sizes", profile.name)
        } else {
            let sizes: Vec<String> = profile.sizes.iter().map(u32::to_string).collect();
            format!("width {width} is not allowed for profile '{}'; allowed: {}", profile.name, sizes.join(", "))
        });
    }
    let (format, choice) = match format.map(|f| f.trim().to_ascii_lowercase()).as_deref() {
        None | Some("") => (profile.convert_to.format, FormatChoice::Fixed),
        Some("auto") => {
            let own = profile.convert_to.format;
            // Modern formats only when listed by name: old browsers send `*/*`
            // without being able to show WebP. No Accept header at all (curl,
            // scripts) states no preference (RFC 9110 §12.5.1): the profile's own.
            let f = match accept.map(str::trim).filter(|a| !a.is_empty()) {
                None => own,
                Some(a) if accepts(a, own.mime()) => own,
                Some(a) if accepts(a, "image/webp") => OutputFormat::Webp,
                Some(_) if matches!(own, OutputFormat::Jpeg | OutputFormat::Png) => own,
                Some(a) if accepts(a, "image/png") && !accepts(a, "image/jpeg") => OutputFormat::Png,
                Some(_) => OutputFormat::Jpeg,
            };
            (f, FormatChoice::Auto)
        }
        Some(other) => match OutputFormat::from_name(other) {
            Some(f) => (f, FormatChoice::Fixed),
            None => return Err(format!("format '{other}' is not one of webp, jpeg, png, avif, auto")),
        },
    };
    let quality = match quality.map(str::trim).filter(|q| !q.is_empty()) {
        None => profile.quality,
        Some(q) => match q.parse::<u8>() {
            Ok(q) if (1..=100).contains(&q) => q,
            _ => return Err(format!("quality '{q}' is not an integer in 1..=100")),
        },
    };
    Ok(VariantRequest::build(profile, width, format, quality, choice))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Profiles;

    fn avatar() -> std::sync::Arc<Profile> {
        Profiles::example().get("avatar").unwrap().clone()
    }

    #[test]
    fn widths_follow_the_profile() {
        let p = avatar();
        assert_eq!(resolve_variant(&p, None, None, None, None).unwrap().width, 256);
        assert_eq!(resolve_variant(&p, Some("128"), None, None, None).unwrap().width, 128);
        let e = resolve_variant(&p, Some("300"), None, None, None).unwrap_err();
        assert!(e.contains("128, 256"), "{e}");
        assert!(resolve_variant(&p, Some("abc"), None, None, None).is_err());
        assert!(resolve_variant(&p, Some("-1"), None, None, None).is_err());
        let photo = Profiles::example().get("photo").unwrap().clone();
        assert_eq!(resolve_variant(&photo, Some("333"), None, None, None).unwrap().width, 333);
        assert!(resolve_variant(&photo, Some("4097"), None, None, None).is_err());
        assert!(resolve_variant(&photo, Some("0"), None, None, None).is_err());
    }

    #[test]
    fn keys_use_the_seed_layout() {
        let p = avatar();
        let r = resolve_variant(&p, Some("128"), None, None, None).unwrap();
        assert_eq!(r.key, VariantKey { width: 128, quality: None, ext: "webp".into() });
        let r = resolve_variant(&p, Some("128"), Some("jpeg"), Some("40"), None).unwrap();
        assert_eq!(r.key, VariantKey { width: 128, quality: Some(40), ext: "jpeg".into() });
        let r = resolve_variant(&p, Some("128"), Some("webp"), Some("90"), None).unwrap();
        assert_eq!(r.key.quality, None, "the profile's own quality is not in the key");
        let banner = Profiles::example().get("banner").unwrap().clone();
        let r = resolve_variant(&banner, None, Some("jpg"), None, None).unwrap();
        assert_eq!(r.key.ext, "jpeg", "the profile's format keeps the profile's spelling");
    }

    #[test]
    fn formats_and_quality() {
        let p = avatar();
        let r = resolve_variant(&p, None, Some("auto"), None, Some("image/avif,image/webp,*/*;q=0.8")).unwrap();
        assert_eq!((r.format, r.choice), (OutputFormat::Webp, FormatChoice::Auto));
        let r = resolve_variant(&p, None, Some("auto"), None, Some("image/webp;q=0, */*")).unwrap();
        assert_eq!(r.format, OutputFormat::Jpeg);
        // No Accept header: no preference, the profile's own format.
        let r = resolve_variant(&p, None, Some("auto"), None, None).unwrap();
        assert_eq!(r.format, OutputFormat::Webp);
        let r = resolve_variant(&p, None, Some("auto"), None, Some("image/png")).unwrap();
        assert_eq!(r.format, OutputFormat::Png);
        let r = resolve_variant(&p, None, Some("auto"), None, Some("text/html, */*")).unwrap();
        assert_eq!(r.format, OutputFormat::Jpeg, "a wildcard does not promise WebP");
        assert_eq!(resolve_variant(&p, None, Some("PNG"), None, None).unwrap().format, OutputFormat::Png);
        assert!(resolve_variant(&p, None, Some("gif"), None, None).is_err());
        assert_eq!(resolve_variant(&p, None, Some("avif"), None, None).unwrap().format, OutputFormat::Avif);
        for bad in ["0", "101", "x", "-5"] {
            assert!(resolve_variant(&p, None, None, Some(bad), None).is_err(), "{bad}");
        }
        assert_eq!(resolve_variant(&p, None, None, Some("100"), None).unwrap().quality, 100);
    }
}
