//! What a thumbnail URL asks for: a width or a box (with its fit and
//! gravity), format and quality, checked against the profile, and the
//! variant key they map to.

use crate::config::{Profile, ThumbSize};
use crate::image::{Fit, Gravity, OutputFormat, Size, ThumbSpec};
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
    /// The width or box asked for (the image is never upscaled).
    pub size: Size,
    /// Output format.
    pub format: OutputFormat,
    /// Encoder quality.
    pub quality: u8,
    /// How the format was chosen.
    pub choice: FormatChoice,
    /// Where the variant is stored.
    pub key: VariantKey,
}

/// The thumbnail parameters of a URL, as sent (each `None` when absent).
#[derive(Debug, Clone, Copy, Default)]
pub struct ThumbParams<'a> {
    /// `width`.
    pub width: Option<&'a str>,
    /// `height`: with it, the size is a box.
    pub height: Option<&'a str>,
    /// `fit`: `cover` (the default) or `inside`.
    pub fit: Option<&'a str>,
    /// `gravity`: what a cover crop keeps.
    pub gravity: Option<&'a str>,
    /// `format`, or `auto`.
    pub format: Option<&'a str>,
    /// `quality`.
    pub quality: Option<&'a str>,
    /// The `Accept` header, for `format=auto`.
    pub accept: Option<&'a str>,
}

/// The size as a profile lists it: a width, or a box whatever its fit and
/// gravity.
pub fn listed_size(size: Size) -> ThumbSize {
    match size {
        Size::Width(w) => ThumbSize::Width(w),
        Size::Box { width, height, .. } => ThumbSize::Box { width, height },
    }
}

impl VariantRequest {
    /// The profile's own format and quality at one of its sizes (a box is
    /// filled as the defaults say: cover, center).
    pub fn default_for(profile: &Profile, size: ThumbSize) -> Self {
        Self::build(profile, image_size(size), profile.convert_to.format, profile.quality, FormatChoice::Fixed)
    }

    fn build(profile: &Profile, size: Size, format: OutputFormat, quality: u8, choice: FormatChoice) -> Self {
        // The seed's layout: the profile's own format keeps its spelling (`jpg`),
        // others use their name; the quality shows only when it differs.
        let ext = if format == profile.convert_to.format {
            profile.convert_to.ext.clone()
        } else {
            format.extension().to_owned()
        };
        let key = VariantKey { size, quality: (quality != profile.quality).then_some(quality), ext };
        Self { size, format, quality, choice, key }
    }

    /// What the image pipeline makes.
    pub fn spec(&self) -> ThumbSpec {
        ThumbSpec { size: self.size, format: self.format, quality: self.quality }
    }

    /// Whether the width or box is one the profile lists (public even with
    /// THUMB_SIGNING_KEY, whatever the fit and gravity).
    pub fn is_listed(&self, profile: &Profile) -> bool {
        profile.sizes.contains(&listed_size(self.size))
    }
}

/// A listed size as the pipeline makes it.
fn image_size(size: ThumbSize) -> Size {
    match size {
        ThumbSize::Width(w) => Size::Width(w),
        ThumbSize::Box { width, height } => Size::boxed(width, height, Fit::Cover, Gravity::Center),
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

/// A present, non-blank parameter.
fn given(v: Option<&str>) -> Option<&str> {
    v.map(str::trim).filter(|v| !v.is_empty())
}

fn dimension(name: &str, v: &str) -> Result<u32, String> {
    v.parse::<u32>()
        .ok()
        .filter(|_| !v.starts_with('+'))
        .ok_or_else(|| format!("{name} '{v}' is not a positive integer"))
}

/// The width or box of a URL: `width` (default: the profile's
/// `default_size`), `height` (a box), `fit` and `gravity` (boxes only).
fn resolve_size(profile: &Profile, p: &ThumbParams<'_>) -> Result<Size, String> {
    let (fit, gravity) = (given(p.fit), given(p.gravity));
    let listed = match (given(p.width), given(p.height)) {
        (None, Some(_)) => return Err("height needs a width: ask for width=W&height=H".into()),
        (None, None) => profile
            .default_size
            .ok_or_else(|| format!("width is required: profile '{}' has no default_size", profile.name))?,
        (Some(w), None) => ThumbSize::Width(dimension("width", w)?),
        (Some(w), Some(h)) => ThumbSize::Box { width: dimension("width", w)?, height: dimension("height", h)? },
    };
    let ThumbSize::Box { width, height } = listed else {
        if fit.is_some() || gravity.is_some() {
            return Err("fit and gravity apply to boxes: add a height (width=W&height=H)".into());
        }
        check_allowed(profile, listed)?;
        return Ok(Size::Width(listed.width()));
    };
    check_allowed(profile, listed)?;
    let fit = match fit {
        None => Fit::Cover,
        Some(f) => Fit::from_name(f).ok_or_else(|| format!("fit '{f}' is not one of cover, inside"))?,
    };
    let gravity = match gravity {
        None => Gravity::Center,
        Some(g) => Gravity::from_name(g)
            .ok_or_else(|| format!("gravity '{g}' is not one of center, north, south, east, west, smart"))?,
    };
    Ok(Size::boxed(width, height, fit, gravity))
}

/// Whether the profile allows `size`: one of its `sizes`, or with
/// `allow_any_width` a width up to `max_width` and a height up to `max_height`.
fn check_allowed(profile: &Profile, size: ThumbSize) -> Result<(), String> {
    let (width, height) = (size.width(), size.height());
    let fits = (1..=profile.max_width).contains(&width) && height.is_none_or(|h| (1..=profile.max_height).contains(&h));
    if profile.sizes.contains(&size) || (profile.allow_any_width && fits) {
        return Ok(());
    }
    let what = if height.is_some() { "box" } else { "width" };
    Err(if profile.allow_any_width {
        format!(
            "{what} {size} is outside {}for profile '{}'",
            match height {
                Some(_) => format!("1..={} x 1..={} ", profile.max_width, profile.max_height),
                None => format!("1..={} ", profile.max_width),
            },
            profile.name
        )
    } else if profile.sizes.is_empty() {
        format!("profile '{}' has no thumbnail sizes", profile.name)
    } else {
        let sizes: Vec<String> = profile.sizes.iter().map(ThumbSize::to_string).collect();
        format!("{what} {size} is not allowed for profile '{}'; allowed: {}", profile.name, sizes.join(", "))
    })
}

/// Checks the size, format and quality of a URL against the profile.
/// The error is a message for a 400.
pub fn resolve_variant(profile: &Profile, p: &ThumbParams<'_>) -> Result<VariantRequest, String> {
    let size = resolve_size(profile, p)?;
    let (format, choice) = match given(p.format).map(str::to_ascii_lowercase).as_deref() {
        None => (profile.convert_to.format, FormatChoice::Fixed),
        Some("auto") => {
            let own = profile.convert_to.format;
            // Modern formats only when listed by name: old browsers send `*/*`
            // without being able to show WebP. No Accept header at all (curl,
            // scripts) states no preference (RFC 9110 §12.5.1): the profile's own.
            let f = match given(p.accept) {
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
    let quality = match given(p.quality) {
        None => profile.quality,
        Some(q) => match q.parse::<u8>() {
            Ok(q) if (1..=100).contains(&q) => q,
            _ => return Err(format!("quality '{q}' is not an integer in 1..=100")),
        },
    };
    Ok(VariantRequest::build(profile, size, format, quality, choice))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Profiles;

    /// The parameters of the URLs before boxes.
    fn old(
        p: &Profile,
        width: Option<&str>,
        format: Option<&str>,
        quality: Option<&str>,
        accept: Option<&str>,
    ) -> Result<VariantRequest, String> {
        resolve_variant(p, &ThumbParams { width, format, quality, accept, ..Default::default() })
    }

    fn avatar() -> std::sync::Arc<Profile> {
        Profiles::example().get("avatar").unwrap().clone()
    }

    #[test]
    fn widths_follow_the_profile() {
        let p = avatar();
        assert_eq!(old(&p, None, None, None, None).unwrap().size, Size::Width(256));
        assert_eq!(old(&p, Some("128"), None, None, None).unwrap().size, Size::Width(128));
        let e = old(&p, Some("300"), None, None, None).unwrap_err();
        assert!(e.contains("128, 256"), "{e}");
        assert!(old(&p, Some("abc"), None, None, None).is_err());
        assert!(old(&p, Some("-1"), None, None, None).is_err());
        let photo = Profiles::example().get("photo").unwrap().clone();
        assert_eq!(old(&photo, Some("333"), None, None, None).unwrap().size, Size::Width(333));
        assert!(old(&photo, Some("4097"), None, None, None).is_err());
        assert!(old(&photo, Some("0"), None, None, None).is_err());
    }

    #[test]
    fn keys_use_the_seed_layout() {
        let p = avatar();
        let r = old(&p, Some("128"), None, None, None).unwrap();
        assert_eq!(r.key, VariantKey { size: Size::Width(128), quality: None, ext: "webp".into() });
        let r = old(&p, Some("128"), Some("jpeg"), Some("40"), None).unwrap();
        assert_eq!(r.key, VariantKey { size: Size::Width(128), quality: Some(40), ext: "jpeg".into() });
        let r = old(&p, Some("128"), Some("webp"), Some("90"), None).unwrap();
        assert_eq!(r.key.quality, None, "the profile's own quality is not in the key");
        let banner = Profiles::example().get("banner").unwrap().clone();
        let r = old(&banner, None, Some("jpg"), None, None).unwrap();
        assert_eq!(r.key.ext, "jpeg", "the profile's format keeps the profile's spelling");
    }

    #[test]
    fn formats_and_quality() {
        let p = avatar();
        let r = old(&p, None, Some("auto"), None, Some("image/avif,image/webp,*/*;q=0.8")).unwrap();
        assert_eq!((r.format, r.choice), (OutputFormat::Webp, FormatChoice::Auto));
        let r = old(&p, None, Some("auto"), None, Some("image/webp;q=0, */*")).unwrap();
        assert_eq!(r.format, OutputFormat::Jpeg);
        // No Accept header: no preference, the profile's own format.
        let r = old(&p, None, Some("auto"), None, None).unwrap();
        assert_eq!(r.format, OutputFormat::Webp);
        let r = old(&p, None, Some("auto"), None, Some("image/png")).unwrap();
        assert_eq!(r.format, OutputFormat::Png);
        let r = old(&p, None, Some("auto"), None, Some("text/html, */*")).unwrap();
        assert_eq!(r.format, OutputFormat::Jpeg, "a wildcard does not promise WebP");
        assert_eq!(old(&p, None, Some("PNG"), None, None).unwrap().format, OutputFormat::Png);
        assert!(old(&p, None, Some("gif"), None, None).is_err());
        assert_eq!(old(&p, None, Some("avif"), None, None).unwrap().format, OutputFormat::Avif);
        for bad in ["0", "101", "x", "-5"] {
            assert!(old(&p, None, None, Some(bad), None).is_err(), "{bad}");
        }
        assert_eq!(old(&p, None, None, Some("100"), None).unwrap().quality, 100);
    }

    fn boxed(p: &Profile, q: &[(&str, &str)]) -> Result<VariantRequest, String> {
        let get = |name: &str| q.iter().find(|(n, _)| *n == name).map(|(_, v)| *v);
        let params = ThumbParams {
            width: get("width"),
            height: get("height"),
            fit: get("fit"),
            gravity: get("gravity"),
            ..Default::default()
        };
        resolve_variant(p, &params)
    }

    fn with_boxes() -> std::sync::Arc<Profile> {
        let yaml = "profiles:\n  a:\n    allowed_mimes: [image/png]\n    size_max_bytes: 100\n    storage_path: x/{key_base}\n    sizes: [\"128\", \"256x256\"]\n    default_size: \"256x256\"\n";
        Profiles::parse(yaml, "f").unwrap().get("a").unwrap().clone()
    }

    #[test]
    fn boxes_follow_the_profile() {
        let p = with_boxes();
        let cover = |w, h, g| Size::boxed(w, h, Fit::Cover, g);
        assert_eq!(boxed(&p, &[]).unwrap().size, cover(256, 256, Gravity::Center), "the default size is a box");
        assert_eq!(boxed(&p, &[("gravity", "smart")]).unwrap().size, cover(256, 256, Gravity::Smart));
        let r = boxed(&p, &[("width", "256"), ("height", "256"), ("fit", "inside"), ("gravity", "west")]).unwrap();
        assert_eq!(r.size, Size::boxed(256, 256, Fit::Inside, Gravity::Center), "inside crops nothing");
        assert!(r.is_listed(&p));
        assert_eq!(boxed(&p, &[("width", "128")]).unwrap().size, Size::Width(128));
        for (q, want) in [
            (
                &[("width", "128"), ("height", "128")][..],
                "box 128x128 is not allowed for profile 'a'; allowed: 128, 256x256",
            ),
            (&[("width", "256")][..], "width 256 is not allowed"),
            (&[("height", "256")][..], "height needs a width"),
            (&[("width", "128"), ("gravity", "smart")][..], "fit and gravity apply to boxes"),
            (
                &[("width", "256"), ("height", "256"), ("fit", "contain")][..],
                "fit 'contain' is not one of cover, inside",
            ),
            (&[("width", "256"), ("height", "256"), ("gravity", "up")][..], "gravity 'up' is not one of"),
            (&[("width", "256"), ("height", "x")][..], "height 'x' is not a positive integer"),
        ] {
            let e = boxed(&p, q).unwrap_err();
            assert!(e.contains(want), "{q:?}: {e}");
        }
        // allow_any_width: any box within max_width x max_height.
        let photo = Profiles::example().get("photo").unwrap().clone();
        let r = boxed(&photo, &[("width", "300"), ("height", "200"), ("gravity", "north")]).unwrap();
        assert_eq!(r.size, cover(300, 200, Gravity::North));
        assert!(!r.is_listed(&photo), "a box the profile does not list needs a signature");
        let e = boxed(&photo, &[("width", "300"), ("height", "4097")]).unwrap_err();
        assert!(e.contains("box 300x4097 is outside 1..=4096 x 1..=4096"), "{e}");
    }

    #[test]
    fn box_keys_follow_the_spec() {
        let p = with_boxes();
        let r = boxed(&p, &[("width", "256"), ("height", "256"), ("gravity", "smart")]).unwrap();
        assert_eq!(r.key.size.name(), "256x256_smart");
        let r = VariantRequest::default_for(&p, ThumbSize::Box { width: 256, height: 256 });
        assert_eq!(r.key.size.name(), "256x256");
    }
}
