//! A synthetic, photograph-like test image for when no real photographs are
//! at hand (the large corpus is not committed).
//!
//! What matters for codec timings is how much detail a JPEG has to carry
//! (its bits per pixel) and how smooth areas and edges mix: this image has
//! soft colour gradients (sky/background), fractal value noise of several
//! octaves (foliage, texture), hard-edged discs (objects) and fine grain
//! (sensor noise). At JPEG quality 90 it comes out around 2 bits per pixel,
//! like the real 12–25 MP photographs in the corpus (1.1–8 bpp).
//!
//! Deterministic: the same size and seed always give the same pixels.

/// A tiny xorshift PRNG (no dependency, reproducible across platforms).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    fn unit(&mut self) -> f32 {
        (self.next() >> 40) as f32 / (1u64 << 24) as f32
    }
}

/// A lattice of random values, bilinearly interpolated.
struct Lattice {
    cells: usize,
    values: Vec<f32>,
}

impl Lattice {
    fn new(cells: usize, rng: &mut Rng) -> Self {
        let n = cells + 2;
        Self { cells, values: (0..n * n).map(|_| rng.unit()).collect() }
    }

    /// `u`, `v` in 0..1.
    fn at(&self, u: f32, v: f32) -> f32 {
        let n = self.cells + 2;
        let (x, y) = (u * self.cells as f32, v * self.cells as f32);
        let (xi, yi) = (x as usize, y as usize);
        let (fx, fy) = (x - xi as f32, y - yi as f32);
        // Smoothstep for softer, more natural transitions.
        let (sx, sy) = (fx * fx * (3.0 - 2.0 * fx), fy * fy * (3.0 - 2.0 * fy));
        let v00 = self.values[yi * n + xi];
        let v10 = self.values[yi * n + xi + 1];
        let v01 = self.values[(yi + 1) * n + xi];
        let v11 = self.values[(yi + 1) * n + xi + 1];
        let top = v00 + (v10 - v00) * sx;
        let bottom = v01 + (v11 - v01) * sx;
        top + (bottom - top) * sy
    }
}

/// Tightly packed 8-bit RGB, `width * height * 3` bytes.
pub fn photo_like(width: u32, height: u32, seed: u64) -> Vec<u8> {
    let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
    let aspect = width as f32 / height as f32;
    // Octaves of texture: cell counts relative to the longer side, so the
    // detail per pixel is the same at every image size (like a photograph
    // taken with a sharper lens, not a blown-up one).
    let long = width.max(height) as usize;
    let octaves: Vec<(Lattice, f32)> =
        [(long / 400, 0.45), (long / 120, 0.28), (long / 40, 0.16), (long / 12, 0.08), (long / 4, 0.05)]
            .into_iter()
            .map(|(cells, weight)| (Lattice::new(cells.max(2), &mut rng), weight))
            .collect();
    let hue = [Lattice::new(3, &mut rng), Lattice::new(3, &mut rng), Lattice::new(3, &mut rng)];
    let discs: Vec<(f32, f32, f32, [f32; 3])> = (0..24)
        .map(|_| {
            let (cx, cy, r) = (rng.unit() * aspect, rng.unit(), 0.02 + rng.unit() * 0.12);
            (cx, cy, r, [rng.unit() * 255.0, rng.unit() * 255.0, rng.unit() * 255.0])
        })
        .collect();

    let mut out = vec![0u8; width as usize * height as usize * 3];
    let mut grain = Rng(seed ^ 0xDEAD_BEEF | 1);
    for y in 0..height as usize {
        let v = (y as f32 + 0.5) / height as f32;
        let row = &mut out[y * width as usize * 3..(y + 1) * width as usize * 3];
        for x in 0..width as usize {
            let u = (x as f32 + 0.5) / width as f32;
            let texture: f32 = octaves.iter().map(|(l, w)| l.at(u, v) * w).sum::<f32>() - 0.5;
            let mut rgb = [
                60.0 + 150.0 * hue[0].at(u, v) + 40.0 * (1.0 - v),
                60.0 + 150.0 * hue[1].at(u, v),
                60.0 + 150.0 * hue[2].at(u, v) + 50.0 * (1.0 - v),
            ];
            let (px, py) = (u * aspect, v);
            for (cx, cy, r, colour) in &discs {
                let d2 = (px - cx) * (px - cx) + (py - cy) * (py - cy);
                if d2 < r * r {
                    let shade = 0.75 + 0.25 * (1.0 - d2 / (r * r));
                    rgb = [colour[0] * shade, colour[1] * shade, colour[2] * shade];
                }
            }
            let noise = (grain.next() >> 59) as f32 - 16.0; // ±16 levels of grain, like high-ISO sensor noise
            for (c, value) in rgb.iter().enumerate() {
                let v = value * (1.0 + texture * 1.2) + noise * 0.5;
                row[x * 3 + c] = v.clamp(0.0, 255.0) as u8;
            }
        }
    }
    out
}

/// Encodes RGB as a JPEG at `quality`: baseline, or progressive (what many
/// cameras' and editors' "web" exports produce), 4:2:0.
pub fn jpeg(rgb: &[u8], width: u32, height: u32, quality: u8, progressive: bool) -> Vec<u8> {
    let mut out = Vec::new();
    let mut enc = jpeg_encoder::Encoder::new(&mut out, quality);
    enc.set_sampling_factor(jpeg_encoder::SamplingFactor::R_4_2_0);
    enc.set_progressive(progressive);
    enc.encode(rgb, width as u16, height as u16, jpeg_encoder::ColorType::Rgb).expect("jpeg encode");
    out
}
