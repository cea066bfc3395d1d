//! Output geometry: widths, boxes (`fit=cover|inside`), gravity and the smart
//! crop window. Pure arithmetic on sizes, plus the crop searches on an
//! already-resized bitmap.
//!
//! The rules (SPEC §3): never upscale; `inside` fits the whole image in the
//! box; `cover` fills the box exactly and crops the overflow at the
//! gravity; a source smaller than the box gives the largest crop of the
//! box's aspect ratio that it holds, unscaled. Sizes are of the displayed
//! (EXIF-oriented) image. A cover crop is cut from the image already resized
//! to cover the box, so only one axis slides and the smart search looks at a
//! few hundred thousand pixels at most.

use super::Bitmap;

/// How a box is filled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Fit {
    /// Fill the box exactly, cropping the overflow (the default with a height).
    #[default]
    Cover,
    /// Fit the whole image within the box.
    Inside,
}

impl Fit {
    /// Parses `cover` / `inside` (ASCII case-insensitive).
    pub fn from_name(s: &str) -> Option<Self> {
        if s.eq_ignore_ascii_case("cover") {
            Some(Self::Cover)
        } else if s.eq_ignore_ascii_case("inside") {
            Some(Self::Inside)
        } else {
            None
        }
    }

    /// The URL and key spelling.
    pub fn name(self) -> &'static str {
        match self {
            Self::Cover => "cover",
            Self::Inside => "inside",
        }
    }
}

/// What a cover crop keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Gravity {
    /// The middle (the default).
    #[default]
    Center,
    /// The top.
    North,
    /// The bottom.
    South,
    /// The right.
    East,
    /// The left.
    West,
    /// The most salient region: edges, skin tones and saturation, as
    /// libvips' attention crop ([`smart_place`]).
    Smart,
}

impl Gravity {
    /// Every gravity, in the order the docs list them.
    pub const ALL: [Gravity; 6] =
        [Gravity::Center, Gravity::North, Gravity::South, Gravity::East, Gravity::West, Gravity::Smart];

    /// Parses a gravity name (ASCII case-insensitive); `centre` is accepted.
    pub fn from_name(s: &str) -> Option<Self> {
        if s.eq_ignore_ascii_case("centre") {
            return Some(Self::Center);
        }
        Self::ALL.into_iter().find(|g| s.eq_ignore_ascii_case(g.name()))
    }

    /// The URL and key spelling.
    pub fn name(self) -> &'static str {
        match self {
            Self::Center => "center",
            Self::North => "north",
            Self::South => "south",
            Self::East => "east",
            Self::West => "west",
            Self::Smart => "smart",
        }
    }
}

/// The size asked for: a width, or a box.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Size {
    /// A width; the height follows the aspect ratio.
    Width(u32),
    /// A box and how to fill it. Build it with [`Size::boxed`], which keeps
    /// it canonical (an `inside` box has no gravity).
    Box {
        /// Box width.
        width: u32,
        /// Box height.
        height: u32,
        /// Cover or inside.
        fit: Fit,
        /// What a cover crop keeps ([`Gravity::Center`] for `inside`).
        gravity: Gravity,
    },
}

impl Size {
    /// A box; the gravity of an `inside` box is dropped (nothing is cropped).
    pub fn boxed(width: u32, height: u32, fit: Fit, gravity: Gravity) -> Self {
        let gravity = if fit == Fit::Inside { Gravity::Center } else { gravity };
        Size::Box { width, height, fit, gravity }
    }

    /// The width asked for (a box's width).
    pub fn width(&self) -> u32 {
        match *self {
            Size::Width(w) | Size::Box { width: w, .. } => w,
        }
    }

    /// The height asked for, for a box.
    pub fn height(&self) -> Option<u32> {
        match *self {
            Size::Width(_) => None,
            Size::Box { height, .. } => Some(height),
        }
    }

    /// How the size reads in variant names: `256`, or `256x256` followed by
    /// `_inside` and `_{gravity}` when they are not the defaults (cover,
    /// center): `256x256_smart`, `400x300_inside`.
    pub fn name(&self) -> String {
        match *self {
            Size::Width(w) => w.to_string(),
            Size::Box { width, height, fit, gravity } => {
                let mut s = format!("{width}x{height}");
                if fit != Fit::Cover {
                    s.push('_');
                    s.push_str(fit.name());
                }
                if gravity != Gravity::Center {
                    s.push('_');
                    s.push_str(gravity.name());
                }
                s
            }
        }
    }
}

/// How to get from a displayed (oriented) source to the output: resize the
/// whole image to `resize`, then, for a cover crop, cut a `window` out of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layout {
    /// Size of the resized whole image.
    pub resize: (u32, u32),
    /// The crop window's size within the resized image (`None`: no crop).
    pub window: Option<(u32, u32)>,
}

impl Layout {
    /// The output size.
    pub fn output(&self) -> (u32, u32) {
        self.window.unwrap_or(self.resize)
    }
}

/// Rounds `a * num / den` to the nearest integer, at least 1.
fn scale(a: u32, num: u32, den: u32) -> u32 {
    let v = (u64::from(a) * u64::from(num) + u64::from(den) / 2) / u64::from(den.max(1));
    v.clamp(1, u64::from(u32::MAX)) as u32
}

/// Whether `w`×`h` is at least as wide, for its height, as `bw`×`bh`.
fn wider(w: u32, h: u32, bw: u32, bh: u32) -> bool {
    u64::from(w) * u64::from(bh) >= u64::from(h) * u64::from(bw)
}

/// The layout for a displayed source of `w`×`h`.
pub fn layout(w: u32, h: u32, size: Size) -> Layout {
    let (w, h) = (w.max(1), h.max(1));
    match size {
        Size::Width(tw) if tw >= w => Layout { resize: (w, h), window: None },
        Size::Width(tw) => Layout { resize: (tw.max(1), scale(h, tw.max(1), w).min(h)), window: None },
        Size::Box { width: bw, height: bh, fit: Fit::Inside, .. } => {
            let (bw, bh) = (bw.max(1), bh.max(1));
            if bw >= w && bh >= h {
                return Layout { resize: (w, h), window: None };
            }
            // The tighter side decides.
            if wider(w, h, bw, bh) {
                Layout { resize: (bw, scale(h, bw, w).min(bh)), window: None }
            } else {
                Layout { resize: (scale(w, bh, h).min(bw), bh), window: None }
            }
        }
        Size::Box { width: bw, height: bh, fit: Fit::Cover, .. } => {
            let (bw, bh) = (bw.max(1), bh.max(1));
            if w >= bw && h >= bh {
                // Resize so the box is covered, then crop the overflow.
                let resize = if wider(w, h, bw, bh) {
                    (scale(w, bh, h).clamp(bw, w), bh)
                } else {
                    (bw, scale(h, bw, w).clamp(bh, h))
                };
                Layout { resize, window: (resize != (bw, bh)).then_some((bw, bh)) }
            } else {
                // Smaller than the box: the largest crop of its aspect, unscaled.
                let window =
                    if wider(w, h, bw, bh) { (scale(h, bw, bh).min(w), h) } else { (w, scale(w, bh, bw).min(h)) };
                Layout { resize: (w, h), window: (window != (w, h)).then_some(window) }
            }
        }
    }
}

/// Where the `window` goes in an image of `size`, for a non-smart gravity
/// (smart falls back to the centre here; see [`smart_place`]).
pub fn place(gravity: Gravity, size: (u32, u32), window: (u32, u32)) -> (u32, u32) {
    let (sx, sy) = (size.0.saturating_sub(window.0), size.1.saturating_sub(window.1));
    match gravity {
        Gravity::Center | Gravity::Smart => (sx / 2, sy / 2),
        Gravity::North => (sx / 2, 0),
        Gravity::South => (sx / 2, sy),
        Gravity::East => (sx, sy / 2),
        Gravity::West => (0, sy / 2),
    }
}

/// Cuts `window` out of `img` at `at`.
pub(crate) fn crop(img: &Bitmap, at: (u32, u32), window: (u32, u32)) -> Bitmap {
    let c = usize::from(img.channels);
    let (x0, y0) = (at.0.min(img.width - window.0.min(img.width)), at.1.min(img.height - window.1.min(img.height)));
    let (ww, wh) = (window.0.min(img.width), window.1.min(img.height));
    let stride = img.width as usize * c;
    let mut data = Vec::with_capacity(ww as usize * wh as usize * c);
    for y in y0..y0 + wh {
        let start = y as usize * stride + x0 as usize * c;
        data.extend_from_slice(&img.data[start..start + ww as usize * c]);
    }
    Bitmap { width: ww, height: wh, channels: img.channels, data }
}

/// The interest of each pixel, libvips' attention strategy: edge strength
/// (a Laplacian of luma), colour saturation, and a bonus for skin tones,
/// weighted by alpha (a transparent pixel is of no interest).
fn saliency(img: &Bitmap) -> Vec<u32> {
    let (w, h, c) = (img.width as usize, img.height as usize, usize::from(img.channels));
    let luma: Vec<i32> = img
        .data
        .chunks_exact(c)
        .map(|p| (i32::from(p[0]) * 77 + i32::from(p[1]) * 150 + i32::from(p[2]) * 29) >> 8)
        .collect();
    let mut out = vec![0u32; w * h];
    for y in 0..h {
        for x in 0..w {
            let i = y * w + x;
            let p = &img.data[i * c..i * c + c];
            let alpha = if c == 4 { u32::from(p[3]) } else { 255 };
            let edge = if x > 0 && y > 0 && x + 1 < w && y + 1 < h {
                let l = luma[i];
                (4 * l - luma[i - 1] - luma[i + 1] - luma[i - w] - luma[i + w]).unsigned_abs()
            } else {
                0
            };
            let (r, g, b) = (u32::from(p[0]), u32::from(p[1]), u32::from(p[2]));
            let sat = r.max(g).max(b) - r.min(g).min(b);
            // Skin (the classic RGB rule): red dominant, moderately
            // saturated, neither dark nor blown out.
            let skin = r > 95 && g > 40 && b > 20 && r > g && r > b && r - g.min(b) > 15 && r.abs_diff(g) > 15;
            let score = edge.min(255) * 2 + sat / 2 + if skin { 60 } else { 0 };
            out[i] = score * alpha / 255;
        }
    }
    out
}

/// Which way the window slides in an image of `size`, and over how many
/// positions: after a cover resize only one axis overflows.
fn slide(size: (u32, u32), window: (u32, u32)) -> (bool, usize) {
    let (sx, sy) = (size.0.saturating_sub(window.0), size.1.saturating_sub(window.1));
    if sx >= sy { (true, sx as usize) } else { (false, sy as usize) }
}

/// The best of `positions + 1` scores, ties going to the one nearest the
/// centre (a flat image is cropped as the default gravity would).
fn best_position(positions: usize, score: impl Fn(usize) -> f64) -> usize {
    let centre = positions / 2;
    let mut best = (f64::MIN, centre);
    for p in 0..=positions {
        let s = score(p);
        if s > best.0 + 1e-9 || ((s - best.0).abs() <= 1e-9 && p.abs_diff(centre) < best.1.abs_diff(centre)) {
            best = (s, p);
        }
    }
    best.1
}

/// The position of a `window` in `img` whose pixels are the most salient
/// (libvips' attention strategy). Only one axis slides after a cover resize,
/// so this is a one-dimensional search over prefix sums of the column (or
/// row) totals: one pass over the pixels, then one subtraction per position.
pub(crate) fn smart_place(img: &Bitmap, window: (u32, u32)) -> (u32, u32) {
    let (w, h) = (img.width as usize, img.height as usize);
    let (horizontal, positions) = slide((img.width, img.height), window);
    let (cx, cy) = place(Gravity::Center, (img.width, img.height), window);
    if positions == 0 {
        return (cx, cy);
    }
    let score = saliency(img);
    let totals: Vec<u64> = if horizontal {
        let mut t = vec![0u64; w];
        for row in score.chunks_exact(w) {
            t.iter_mut().zip(row).for_each(|(t, &s)| *t += u64::from(s));
        }
        t
    } else {
        score.chunks_exact(w).map(|row| row.iter().map(|&s| u64::from(s)).sum()).collect()
    };
    let mut prefix = vec![0u64; totals.len() + 1];
    for (i, t) in totals.iter().enumerate() {
        prefix[i + 1] = prefix[i] + t;
    }
    let span = if horizontal { window.0 as usize } else { window.1 as usize }.min(if horizontal { w } else { h });
    let best = best_position(positions, |p| (prefix[p + span] - prefix[p]) as f64);
    if horizontal { (best as u32, cy) } else { (cx, best as u32) }
}

/// The position of a `window` whose luma histogram has the most entropy:
/// the other classic smart crop (thumbor's and smartcrop.js' basis). A
/// sliding 64-bin histogram, updated by the column (or row) entering and
/// the one leaving. Measured against [`smart_place`] in bench/README.md;
/// the service uses [`smart_place`].
pub(crate) fn entropy_place(img: &Bitmap, window: (u32, u32)) -> (u32, u32) {
    let (w, h, c) = (img.width as usize, img.height as usize, usize::from(img.channels));
    let (horizontal, positions) = slide((img.width, img.height), window);
    let (cx, cy) = place(Gravity::Center, (img.width, img.height), window);
    if positions == 0 {
        return (cx, cy);
    }
    let (ww, wh) = ((window.0 as usize).min(w), (window.1 as usize).min(h));
    let bin = |x: usize, y: usize| {
        let p = &img.data[(y * w + x) * c..];
        ((u32::from(p[0]) * 77 + u32::from(p[1]) * 150 + u32::from(p[2]) * 29) >> 10) as usize
    };
    // The line of pixels at `i` along the sliding axis, within the window's
    // fixed extent on the other.
    let line = |i: usize| -> Vec<usize> {
        if horizontal {
            (cy as usize..cy as usize + wh).map(|y| bin(i, y)).collect()
        } else {
            (cx as usize..cx as usize + ww).map(|x| bin(x, i)).collect()
        }
    };
    let span = if horizontal { ww } else { wh };
    let mut hist = [0u32; 64];
    for i in 0..span {
        line(i).into_iter().for_each(|b| hist[b] += 1);
    }
    let n = (ww * wh) as f64;
    let entropy = |hist: &[u32; 64]| {
        hist.iter().filter(|&&k| k > 0).map(|&k| -(f64::from(k) / n) * (f64::from(k) / n).log2()).sum::<f64>()
    };
    let mut scores = Vec::with_capacity(positions + 1);
    scores.push(entropy(&hist));
    for p in 1..=positions {
        line(p - 1).into_iter().for_each(|b| hist[b] -= 1);
        line(p + span - 1).into_iter().for_each(|b| hist[b] += 1);
        scores.push(entropy(&hist));
    }
    let best = best_position(positions, |p| scores[p]);
    if horizontal { (best as u32, cy) } else { (cx, best as u32) }
}

/// The two ways of placing a smart crop that were measured against each
/// other (bench/README.md, `examples/smart_crop.rs`); `gravity=smart` uses
/// [`SmartStrategy::Attention`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SmartStrategy {
    /// libvips' attention: edges, saturation and skin tones ([`smart_place`]).
    Attention,
    /// The window of highest luma entropy ([`entropy_place`]).
    Entropy,
}

/// Where `strategy` puts a `window` in an image already resized to cover it:
/// `pixels` are `width`×`height` RGB (`channels` 3) or RGBA (4) rows, tightly
/// packed. For measuring the strategies; the pipeline calls them on its own
/// bitmaps. `None` when the buffer does not match the size.
pub fn smart_window(
    strategy: SmartStrategy,
    (width, height): (u32, u32),
    channels: u8,
    pixels: Vec<u8>,
    window: (u32, u32),
) -> Option<(u32, u32)> {
    let fits = matches!(channels, 3 | 4)
        && pixels.len() == width as usize * height as usize * usize::from(channels)
        && window.0 <= width
        && window.1 <= height;
    if !fits {
        return None;
    }
    let img = Bitmap { width, height, channels, data: pixels };
    Some(match strategy {
        SmartStrategy::Attention => smart_place(&img, window),
        SmartStrategy::Entropy => entropy_place(&img, window),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cover(w: u32, h: u32) -> Size {
        Size::boxed(w, h, Fit::Cover, Gravity::Center)
    }

    #[test]
    fn widths_never_upscale() {
        assert_eq!(layout(1200, 800, Size::Width(600)).output(), (600, 400));
        assert_eq!(layout(1200, 800, Size::Width(2000)).output(), (1200, 800));
        assert_eq!(layout(100, 1, Size::Width(10)).output(), (10, 1), "at least one pixel high");
    }

    #[test]
    fn inside_fits_the_whole_image() {
        let b = |w, h| Size::boxed(w, h, Fit::Inside, Gravity::Smart);
        assert_eq!(b(1, 1), Size::Box { width: 1, height: 1, fit: Fit::Inside, gravity: Gravity::Center });
        assert_eq!(layout(1200, 800, b(300, 300)).output(), (300, 200));
        assert_eq!(layout(800, 1200, b(300, 300)).output(), (200, 300));
        assert_eq!(layout(1200, 800, b(3000, 3000)).output(), (1200, 800), "never upscaled");
        assert_eq!(layout(1200, 800, b(600, 100)).output(), (150, 100));
        assert_eq!(layout(1200, 800, b(1300, 100)).output(), (150, 100), "one side fits, the other does not");
    }

    #[test]
    fn cover_fills_the_box_and_crops() {
        let l = layout(1200, 800, cover(256, 256));
        assert_eq!((l.resize, l.output()), ((384, 256), (256, 256)));
        let l = layout(800, 1200, cover(400, 225));
        assert_eq!((l.resize, l.output()), ((400, 600), (400, 225)));
        // Smaller than the box: the largest crop of the box's aspect, not upscaled.
        let l = layout(300, 200, cover(512, 512));
        assert_eq!((l.resize, l.output()), ((300, 200), (200, 200)));
        assert_eq!(layout(300, 200, cover(1600, 900)).output(), (300, 169));
        // Wider than the box but not as tall: still no upscaling.
        let l = layout(1200, 200, cover(256, 256));
        assert_eq!((l.resize, l.output()), ((1200, 200), (200, 200)));
        // Exactly the box, or the box's aspect: no crop at all.
        assert_eq!(layout(256, 256, cover(256, 256)), Layout { resize: (256, 256), window: None });
        assert_eq!(layout(1000, 500, cover(200, 100)), Layout { resize: (200, 100), window: None });
        assert_eq!(layout(100, 50, cover(400, 200)), Layout { resize: (100, 50), window: None });
    }

    #[test]
    fn gravity_places_the_window() {
        assert_eq!(place(Gravity::Center, (384, 256), (256, 256)), (64, 0));
        assert_eq!(place(Gravity::West, (384, 256), (256, 256)), (0, 0));
        assert_eq!(place(Gravity::East, (384, 256), (256, 256)), (128, 0));
        assert_eq!(place(Gravity::North, (256, 384), (256, 256)), (0, 0));
        assert_eq!(place(Gravity::South, (256, 384), (256, 256)), (0, 128));
        assert_eq!(Gravity::from_name("CENTRE"), Some(Gravity::Center));
        assert_eq!(Gravity::from_name("Smart"), Some(Gravity::Smart));
        assert_eq!(Gravity::from_name("up"), None);
        assert_eq!(Fit::from_name("inside"), Some(Fit::Inside));
        assert_eq!(Fit::from_name("contain"), None);
    }

    #[test]
    fn size_names() {
        assert_eq!(Size::Width(256).name(), "256");
        assert_eq!(cover(256, 256).name(), "256x256");
        assert_eq!(Size::boxed(256, 128, Fit::Cover, Gravity::Smart).name(), "256x128_smart");
        assert_eq!(Size::boxed(256, 128, Fit::Inside, Gravity::North).name(), "256x128_inside");
    }

    #[test]
    fn crop_cuts_the_window() {
        let img = Bitmap { width: 4, height: 2, channels: 3, data: (0..24).collect() };
        let c = crop(&img, (1, 1), (2, 1));
        assert_eq!((c.width, c.height, c.data), (2, 1, vec![15, 16, 17, 18, 19, 20]));
    }

    fn flat_with_patch(w: u32, h: u32, patch_x: u32) -> Bitmap {
        let mut data = vec![200u8; (w * h * 3) as usize];
        for y in h / 4..h * 3 / 4 {
            for x in patch_x..patch_x + w / 8 {
                let i = ((y * w + x) * 3) as usize;
                let v = if (x / 2 + y / 2) % 2 == 0 { 10 } else { 245 };
                data[i..i + 3].copy_from_slice(&[v, v / 2, 255 - v]);
            }
        }
        Bitmap { width: w, height: h, channels: 3, data }
    }

    #[test]
    fn smart_and_entropy_find_the_detailed_patch() {
        // A flat grey picture with a busy patch near the right edge.
        let img = flat_with_patch(384, 256, 330);
        let (x, _) = smart_place(&img, (256, 256));
        assert!(x + 256 >= 330 + 48 && x <= 330, "window {x}..{} misses the patch at 330..378", x + 256);
        let (cx, _) = place(Gravity::Center, (384, 256), (256, 256));
        assert!(cx + 256 < 330 + 48, "the centre crop would not hold it whole");
        let (ex, _) = entropy_place(&img, (256, 256));
        assert!(ex + 256 >= 330 + 48 && ex <= 330, "entropy finds it too: {ex}");
        // Vertically too.
        let tall = Bitmap {
            width: 256,
            height: 384,
            channels: 3,
            data: {
                let wide = flat_with_patch(384, 256, 20);
                // Transpose.
                let mut d = vec![0u8; wide.data.len()];
                for y in 0..256usize {
                    for x in 0..384usize {
                        d[(x * 256 + y) * 3..(x * 256 + y) * 3 + 3]
                            .copy_from_slice(&wide.data[(y * 384 + x) * 3..(y * 384 + x) * 3 + 3]);
                    }
                }
                d
            },
        };
        let (_, y) = smart_place(&tall, (256, 256));
        assert!(y <= 20, "the patch is at the top: {y}");
        // A flat image: the centre.
        let flat = Bitmap { width: 384, height: 256, channels: 3, data: vec![90; 384 * 256 * 3] };
        assert_eq!(smart_place(&flat, (256, 256)), (64, 0));
        assert_eq!(entropy_place(&flat, (256, 256)), (64, 0));
        // Nothing to slide.
        assert_eq!(smart_place(&flat, (384, 256)), (0, 0));
    }
}
