//! Integer box pre-shrink, fed one decoded row at a time.
//!
//! A source many times larger than its thumbnail is first averaged down by
//! whole factors (k×k blocks) to between two and three times the target, and
//! only then resized with Lanczos3 — libvips' shrink-then-reduce. Done while
//! the decoder hands over rows, this means the full-size image never exists:
//! a 10 000 × 10 000 PNG made into a 256 px thumbnail holds a band of rows
//! and a 512 px image, not 400 MB. It also keeps the Lanczos3 tables small:
//! their size grows with the scale factor, and at 100 000 000 : 256 they took
//! gigabytes.
//!
//! The averaging is plain integer arithmetic rather than fast_image_resize's
//! box filter: its generic SIMD code is instantiated in this crate, so it runs
//! unoptimised in debug builds (27 s for a 100-megapixel source, against about
//! 2 s here), and alpha-weighting the sums costs no extra pass over the band.
//! Colour is weighted by alpha (averaged premultiplied, then divided back), so
//! transparent pixels do not bleed their colour into visible ones.

use super::{Bitmap, Cancel, ImageError};

/// Box factor for one axis: 1 (none) unless the decoded side is more than
/// three times the target; then the largest whole factor that keeps at least
/// twice the target, so Lanczos3 still does the last 2–3×.
pub(crate) fn shrink_factor(decoded: u32, target: u32) -> u32 {
    let (d, t) = (u64::from(decoded), u64::from(target.max(1)));
    if d > 3 * t { (d / (2 * t)) as u32 } else { 1 }
}

/// Averages rows pushed top to bottom by `kx`×`ky` blocks (the last block
/// of each axis may be partial).
pub(crate) struct Shrinker {
    width: u32,
    channels: u8,
    kx: u32,
    ky: u32,
    out_w: u32,
    out_h: u32,
    /// Per output column and channel: the band's sums so far (colour
    /// weighted by alpha for RGBA); u64, since a block may hold a billion
    /// pixels.
    sums: Vec<u64>,
    /// Rows added to the current band (blank ones included).
    band_rows: u32,
    out: Vec<u8>,
    /// A row converted to the output's channels, when the source has others.
    converted: Vec<u8>,
}

impl Shrinker {
    /// For a `width`×`height` source of 3 (RGB) or 4 (RGBA) channels,
    /// shrunk by `factors`.
    pub(crate) fn new(width: u32, height: u32, channels: u8, factors: (u32, u32)) -> Result<Self, ImageError> {
        let (kx, ky) = (factors.0.max(1), factors.1.max(1));
        let (out_w, out_h) = (width.div_ceil(kx), height.div_ceil(ky));
        let shrinking = kx > 1 || ky > 1;
        let out_len = out_w as usize * out_h as usize * usize::from(channels);
        let mut out = Vec::new();
        out.try_reserve_exact(out_len).map_err(|_| ImageError::Decode("out of memory for the decoded image".into()))?;
        let sums = if shrinking { vec![0; out_w as usize * usize::from(channels)] } else { Vec::new() };
        Ok(Self { width, channels, kx, ky, out_w, out_h, sums, band_rows: 0, out, converted: Vec::new() })
    }

    /// Bytes in one source row.
    pub(crate) fn row_len(&self) -> usize {
        self.width as usize * usize::from(self.channels)
    }

    /// Adds the next source row (`row_len` bytes).
    pub(crate) fn push_row(&mut self, row: &[u8]) -> Result<(), ImageError> {
        if row.len() != self.row_len() {
            return Err(ImageError::Decode("a decoded row has the wrong length".into()));
        }
        if self.kx == 1 && self.ky == 1 {
            self.out.extend_from_slice(row);
            return Ok(());
        }
        let kx = self.kx as usize;
        if self.channels == 4 {
            for (sum, block) in self.sums.chunks_exact_mut(4).zip(row.chunks(4 * kx)) {
                let (mut r, mut g, mut b, mut a) = (0u64, 0u64, 0u64, 0u64);
                for p in block.chunks_exact(4) {
                    let alpha = u64::from(p[3]);
                    r += u64::from(p[0]) * alpha;
                    g += u64::from(p[1]) * alpha;
                    b += u64::from(p[2]) * alpha;
                    a += alpha;
                }
                sum[0] += r;
                sum[1] += g;
                sum[2] += b;
                sum[3] += a;
            }
        } else {
            for (sum, block) in self.sums.chunks_exact_mut(3).zip(row.chunks(3 * kx)) {
                let (mut r, mut g, mut b) = (0u64, 0u64, 0u64);
                for p in block.chunks_exact(3) {
                    r += u64::from(p[0]);
                    g += u64::from(p[1]);
                    b += u64::from(p[2]);
                }
                sum[0] += r;
                sum[1] += g;
                sum[2] += b;
            }
        }
        self.end_row()
    }

    /// Adds the next source row, whose pixels have `from` channels (1 grey,
    /// 2 grey + alpha, 3 RGB, 4 RGBA): grey is read as equal R, G and B,
    /// missing alpha as opaque, extra alpha is dropped.
    pub(crate) fn push_row_from(&mut self, row: &[u8], from: usize) -> Result<(), ImageError> {
        let to = usize::from(self.channels);
        if from == to {
            return self.push_row(row);
        }
        if row.len() != self.width as usize * from {
            return Err(ImageError::Decode("a decoded row has the wrong length".into()));
        }
        let shrinking = self.kx > 1 || self.ky > 1;
        let kx = self.kx as usize;
        // Grey sources (the widest PNGs are grey) are summed as they are,
        // without expanding every pixel first.
        match (from, to) {
            (1, 3) if shrinking => {
                for (sum, block) in self.sums.chunks_exact_mut(3).zip(row.chunks(kx)) {
                    let v: u64 = block.iter().map(|&v| u64::from(v)).sum();
                    sum.iter_mut().for_each(|s| *s += v);
                }
                self.end_row()
            }
            (2, 4) if shrinking => {
                for (sum, block) in self.sums.chunks_exact_mut(4).zip(row.chunks(2 * kx)) {
                    let (mut v, mut a) = (0u64, 0u64);
                    for p in block.chunks_exact(2) {
                        v += u64::from(p[0]) * u64::from(p[1]);
                        a += u64::from(p[1]);
                    }
                    sum[..3].iter_mut().for_each(|s| *s += v);
                    sum[3] += a;
                }
                self.end_row()
            }
            _ => {
                let mut converted = std::mem::take(&mut self.converted);
                converted.resize(self.row_len(), 0);
                for (s, d) in row.chunks_exact(from).zip(converted.chunks_exact_mut(to)) {
                    let (rgb, alpha) = match from {
                        1 => ([s[0]; 3], 255),
                        2 => ([s[0]; 3], s[1]),
                        3 => ([s[0], s[1], s[2]], 255),
                        _ => ([s[0], s[1], s[2]], s[3]),
                    };
                    d[..3].copy_from_slice(&rgb);
                    if to == 4 {
                        d[3] = alpha;
                    }
                }
                let pushed = self.push_row(&converted);
                self.converted = converted;
                pushed
            }
        }
    }

    /// Adds a row that is entirely transparent black (a GIF canvas around
    /// its frame), without looking at any pixel.
    pub(crate) fn push_blank_row(&mut self) -> Result<(), ImageError> {
        if self.kx == 1 && self.ky == 1 {
            let len = self.out.len() + self.row_len();
            self.out.resize(len, 0);
            return Ok(());
        }
        self.end_row()
    }

    fn end_row(&mut self) -> Result<(), ImageError> {
        self.band_rows += 1;
        if self.band_rows == self.ky {
            self.flush_band();
        }
        Ok(())
    }

    /// Turns the band's sums into one output row.
    fn flush_band(&mut self) {
        if self.band_rows == 0 {
            return;
        }
        let c = usize::from(self.channels);
        let rows = u64::from(self.band_rows);
        let width = self.width as usize;
        let kx = self.kx as usize;
        for (j, sum) in self.sums.chunks_exact_mut(c).enumerate() {
            let cols = (width - j * kx).min(kx) as u64;
            let n = cols * rows;
            if c == 4 {
                let a = sum[3];
                for &s in &sum[..3] {
                    self.out.push((s + a / 2).checked_div(a).map_or(0, |v| v as u8));
                }
                self.out.push(((a + n / 2) / n) as u8);
            } else {
                for &s in sum.iter() {
                    self.out.push(((s + n / 2) / n) as u8);
                }
            }
            sum.fill(0);
        }
        self.band_rows = 0;
    }

    /// The shrunk image. Rows never pushed (a truncated source) are left
    /// transparent black, as the decoders leave them.
    pub(crate) fn finish(mut self) -> Result<Bitmap, ImageError> {
        self.flush_band();
        let len = self.out_w as usize * self.out_h as usize * usize::from(self.channels);
        self.out.resize(len, 0);
        Ok(Bitmap { width: self.out_w, height: self.out_h, channels: self.channels, data: self.out })
    }
}

/// Shrinks a whole decoded bitmap by `factors`, band by band (so only a
/// band is ever premultiplied), checking `cancel` between bands.
pub(crate) fn shrink_bitmap(bitmap: Bitmap, factors: (u32, u32), cancel: &Cancel) -> Result<Bitmap, ImageError> {
    if factors == (1, 1) {
        return Ok(bitmap);
    }
    shrink_from(&bitmap, factors, cancel)
}

/// [`shrink_bitmap`] of a bitmap that stays where it is (a decoded master
/// shared by several renders); a copy when there is nothing to shrink.
pub(crate) fn shrink_from(bitmap: &Bitmap, factors: (u32, u32), cancel: &Cancel) -> Result<Bitmap, ImageError> {
    if factors == (1, 1) {
        let mut data = Vec::new();
        data.try_reserve_exact(bitmap.data.len())
            .map_err(|_| ImageError::Decode("out of memory for the decoded image".into()))?;
        data.extend_from_slice(&bitmap.data);
        return Ok(Bitmap { data, ..*bitmap });
    }
    let mut shrinker = Shrinker::new(bitmap.width, bitmap.height, bitmap.channels, factors)?;
    let row_len = shrinker.row_len();
    for (i, row) in bitmap.data.chunks_exact(row_len).enumerate() {
        if i.is_multiple_of(64) {
            cancel.check()?;
        }
        shrinker.push_row(row)?;
    }
    shrinker.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn factor_keeps_two_to_three_times_the_target() {
        assert_eq!(shrink_factor(768, 256), 1, "3x: Lanczos alone");
        assert_eq!(shrink_factor(769, 256), 1, "just over 3x: a factor of 1 is none");
        assert_eq!(shrink_factor(1024, 256), 2);
        assert_eq!(shrink_factor(10_000, 256), 19);
        assert_eq!(shrink_factor(100_000_000, 256), 195_312);
        assert_eq!(shrink_factor(5, 0), 2, "a zero target counts as 1");
        for (d, t) in [(10_000u32, 256u32), (65_535, 1), (4000, 1000), (1001, 100)] {
            let k = shrink_factor(d, t);
            let shrunk = d.div_ceil(k);
            assert!(k == 1 || (shrunk >= 2 * t && shrunk <= 3 * t), "{d}->{t}: k {k}, shrunk {shrunk}");
        }
    }

    #[test]
    fn averages_blocks_and_weights_colour_by_alpha() {
        // 4x2 RGBA: left 2x2 block half opaque red, half transparent green;
        // right block opaque white and black.
        let rows: [[u8; 16]; 2] = [
            [255, 0, 0, 255, 0, 255, 0, 0, 255, 255, 255, 255, 0, 0, 0, 255],
            [255, 0, 0, 255, 0, 255, 0, 0, 255, 255, 255, 255, 0, 0, 0, 255],
        ];
        let mut s = Shrinker::new(4, 2, 4, (2, 2)).unwrap();
        for row in &rows {
            s.push_row(row).unwrap();
        }
        let out = s.finish().unwrap();
        assert_eq!((out.width, out.height), (2, 1));
        let (left, right) = out.data.split_at(4);
        assert_eq!(left[3], 128, "alpha averaged (127.5 rounded up)");
        assert!(left[0] >= 250 && left[1] <= 5, "transparent green does not bleed: {left:?}");
        assert!(right.iter().take(3).all(|&c| c.abs_diff(128) <= 1) && right[3] == 255, "{right:?}");
    }

    #[test]
    fn grey_and_grey_alpha_rows_are_expanded() {
        for factors in [(1, 1), (2, 1)] {
            let mut s = Shrinker::new(2, 1, 3, factors).unwrap();
            s.push_row_from(&[100, 200], 1).unwrap();
            let out = s.finish().unwrap();
            let want: &[u8] = if factors == (1, 1) { &[100, 100, 100, 200, 200, 200] } else { &[150, 150, 150] };
            assert_eq!(out.data, want, "{factors:?}");

            let mut s = Shrinker::new(2, 1, 4, factors).unwrap();
            s.push_row_from(&[100, 255, 7, 0], 2).unwrap();
            let out = s.finish().unwrap();
            let want: &[u8] = if factors == (1, 1) { &[100, 100, 100, 255, 7, 7, 7, 0] } else { &[100, 100, 100, 128] };
            assert_eq!(out.data, want, "{factors:?}");
        }
        // RGBA into RGB drops alpha; RGB into RGBA is opaque.
        let mut s = Shrinker::new(1, 1, 3, (1, 1)).unwrap();
        s.push_row_from(&[1, 2, 3, 4], 4).unwrap();
        assert_eq!(s.finish().unwrap().data, [1, 2, 3]);
        let mut s = Shrinker::new(1, 1, 4, (1, 1)).unwrap();
        s.push_row_from(&[1, 2, 3], 3).unwrap();
        assert_eq!(s.finish().unwrap().data, [1, 2, 3, 255]);
    }

    #[test]
    fn blank_rows_count_as_transparent() {
        let mut s = Shrinker::new(2, 2, 4, (2, 2)).unwrap();
        s.push_row(&[10, 20, 30, 255, 10, 20, 30, 255]).unwrap();
        s.push_blank_row().unwrap();
        let out = s.finish().unwrap();
        assert_eq!(out.data, [10, 20, 30, 128]);
        let mut s = Shrinker::new(2, 1, 4, (1, 1)).unwrap();
        s.push_blank_row().unwrap();
        assert_eq!(s.finish().unwrap().data, [0; 8]);
    }

    #[test]
    fn partial_last_blocks_and_no_shrink() {
        let mut s = Shrinker::new(5, 5, 3, (2, 2)).unwrap();
        for _ in 0..5 {
            s.push_row(&[90; 15]).unwrap();
        }
        let out = s.finish().unwrap();
        assert_eq!((out.width, out.height), (3, 3));
        assert!(out.data.iter().all(|&v| v == 90), "{:?}", out.data);

        let bitmap = Bitmap { width: 3, height: 2, channels: 3, data: (0..18).collect() };
        let same = shrink_bitmap(bitmap.clone(), (1, 1), &Cancel::new()).unwrap();
        assert_eq!(same.data, bitmap.data);
        let cancel = Cancel::new();
        cancel.cancel();
        assert_eq!(shrink_bitmap(bitmap, (2, 2), &cancel).unwrap_err(), ImageError::Cancelled);
    }
}
