//! A progressive JPEG without the AC scans a 1/8 scale decode ignores.
//!
//! At 1/8 scale libjpeg's inverse DCT of a full-resolution component (luma,
//! or every component of a 4:4:4 or greyscale file) is `jpeg_idct_1x1`,
//! which reads each block's DC coefficient and nothing else, yet a
//! progressive file's AC scans of that component are still entropy-decoded
//! in full, and they are most of its bits: on the bench photos
//! `decode_mcu_AC_first` and `decode_mcu_AC_refine` were 36 % of a cold
//! request's CPU (bench/README.md, "Round five"). (A subsampled chroma
//! component is decoded at a larger DCT scale instead of being upsampled,
//! 2x2 for 4:2:0, which does read AC coefficients: its scans stay.) In a
//! progressive file every AC scan is a segment of its own for one component
//! (`Ss > 0`, `Ns = 1`), so those of the full-resolution components can be
//! left out before libjpeg sees the file (it reads the other parts one
//! after the other; nothing is copied). It then decodes the same
//! coefficients where they are read and makes the same pixels (`tests`
//! compares them byte for byte), with block smoothing off, which would
//! otherwise guess the missing AC coefficients from the DC ones (only to
//! have the 1x1 inverse DCT ignore them).
//!
//! Anything unexpected (not progressive, a marker out of place, a length
//! past the end) gives `None`, and the file is decoded as it is.

/// Start of frame, progressive Huffman: the only kind this applies to.
const SOF2: u8 = 0xC2;
const SOS: u8 = 0xDA;
const EOI: u8 = 0xD9;

/// Most parts the decoder is handed. Adjacent kept ranges are joined, so a
/// real file has a few (one per run of kept segments between dropped
/// scans); a file made of thousands of tiny scans is decoded as it is
/// rather than making a list of them as long as the file allows.
const MAX_PARTS: usize = 64;

/// The byte ranges of `jpeg` to keep: everything but the AC scans of its
/// full-resolution components (their header and their entropy-coded data),
/// or `None` if `jpeg` is not a progressive JPEG laid out as expected or has
/// no such scan to drop.
fn kept_ranges(jpeg: &[u8]) -> Option<Vec<std::ops::Range<usize>>> {
    if !jpeg.starts_with(&[0xFF, 0xD8]) {
        return None;
    }
    let mut kept: Vec<std::ops::Range<usize>> = Vec::new();
    // Adds `range` to `kept`, joined to the last one when they touch;
    // `None` past `MAX_PARTS`.
    let keep = |kept: &mut Vec<std::ops::Range<usize>>, range: std::ops::Range<usize>| {
        if let Some(last) = kept.last_mut().filter(|last| last.end == range.start) {
            last.end = range.end;
        } else if kept.len() < MAX_PARTS {
            kept.push(range);
        } else {
            return None;
        }
        Some(())
    };
    keep(&mut kept, 0..2)?;
    let mut pos = 2;
    // The ids of the components at full resolution, once the frame is read.
    let mut full_resolution: Option<Vec<u8>> = None;
    let mut dropped = false;
    loop {
        // Markers may be preceded by fill bytes (0xFF).
        if *jpeg.get(pos)? != 0xFF {
            return None;
        }
        while *jpeg.get(pos + 1)? == 0xFF {
            pos += 1;
        }
        let marker = jpeg[pos + 1];
        if marker == EOI {
            keep(&mut kept, pos..pos + 2)?;
            return dropped.then_some(kept);
        }
        // Every other marker that may stand here has a length.
        let len = usize::from(u16::from_be_bytes([*jpeg.get(pos + 2)?, *jpeg.get(pos + 3)?]));
        let end = pos + 2 + len;
        if len < 2 || end > jpeg.len() {
            return None;
        }
        let segment = &jpeg[pos + 4..end];
        match marker {
            SOF2 if full_resolution.is_none() => full_resolution = Some(full_resolution_components(segment)?),
            // Any other frame type (baseline, extended, lossless,
            // arithmetic), or a second frame: not for this.
            SOF2 | 0xC0 | 0xC1 | 0xC3 | 0xC5..=0xC7 | 0xC9..=0xCB | 0xCD..=0xCF => return None,
            _ => {}
        }
        if marker != SOS {
            keep(&mut kept, pos..end)?;
            pos = end;
            continue;
        }
        let full_resolution = full_resolution.as_deref()?;
        // Ns, then Ns × (component, tables), then Ss, Se, Ah/Al.
        let ns = usize::from(*segment.first()?);
        if segment.len() != 1 + 2 * ns + 3 {
            return None;
        }
        let ss = segment[1 + 2 * ns];
        let data_end = entropy_end(jpeg, end)?;
        match (ss, ns) {
            (0, _) => keep(&mut kept, pos..data_end)?,
            (_, 1) if full_resolution.contains(&segment[1]) => dropped = true,
            (_, 1) => keep(&mut kept, pos..data_end)?,
            // An AC scan of several components is not a progressive file.
            _ => return None,
        }
        pos = data_end;
    }
}

/// The ids of the components of a frame header (the segment after its
/// length) sampled at the frame's highest factors both ways.
fn full_resolution_components(frame: &[u8]) -> Option<Vec<u8>> {
    // P, Y, X, Nf, then Nf × (id, H/V, Tq).
    let nf = usize::from(*frame.get(5)?);
    let components = frame.get(6..6 + 3 * nf)?;
    if nf == 0 || frame.len() != 6 + 3 * nf {
        return None;
    }
    let h = |c: &[u8]| c[1] >> 4;
    let v = |c: &[u8]| c[1] & 15;
    let max_h = components.chunks_exact(3).map(h).max()?;
    let max_v = components.chunks_exact(3).map(v).max()?;
    Some(components.chunks_exact(3).filter(|c| h(c) == max_h && v(c) == max_v).map(|c| c[0]).collect())
}

/// Where the entropy-coded data that starts at `from` ends: at the next
/// marker that is not a stuffed zero (0xFF00) or a restart (0xFFD0–D7).
fn entropy_end(jpeg: &[u8], from: usize) -> Option<usize> {
    let mut i = from;
    loop {
        i += memchr::memchr(0xFF, jpeg.get(i..)?)?;
        match *jpeg.get(i + 1)? {
            0x00 | 0xD0..=0xD7 | 0xFF => i += 1,
            _ => return Some(i),
        }
    }
}

/// The parts of `jpeg` that make it without its AC scans, in order, or
/// `None` when that does not apply (see the module documentation). Slices
/// of `jpeg`, not a copy: the decoder reads them one after the other.
pub(crate) fn dc_only(jpeg: &[u8]) -> Option<Vec<&[u8]>> {
    Some(kept_ranges(jpeg)?.into_iter().map(|r| &jpeg[r]).collect())
}

#[cfg(test)]
mod tests {
    use super::super::tests::noisy_rgb;
    use super::*;

    /// Progressive with successive approximation (DC and AC refinement
    /// scans), as libjpeg and mozjpeg write them.
    fn mozjpeg_progressive(img: &image::RgbImage) -> Vec<u8> {
        let mut c = mozjpeg::Compress::new(mozjpeg::ColorSpace::JCS_RGB);
        c.set_size(img.width() as usize, img.height() as usize);
        c.set_quality(85.0);
        c.set_progressive_mode();
        let mut c = c.start_compress(Vec::new()).unwrap();
        c.write_scanlines(img.as_raw()).unwrap();
        c.finish().unwrap()
    }

    /// Spectral selection only (jpeg-encoder's progressive script).
    fn jpeg_encoder_progressive(img: &image::RgbImage, sampling: jpeg_encoder::SamplingFactor) -> Vec<u8> {
        let mut out = Vec::new();
        let mut enc = jpeg_encoder::Encoder::new(&mut out, 85);
        enc.set_progressive(true);
        enc.set_sampling_factor(sampling);
        enc.encode(img.as_raw(), img.width() as u16, img.height() as u16, jpeg_encoder::ColorType::Rgb).unwrap();
        out
    }

    fn decode(jpeg: &[u8], scale: u8, smoothing: bool) -> (usize, usize, Vec<u8>) {
        let mut d = mozjpeg::Decompress::new_mem(jpeg).unwrap();
        d.scale(scale);
        d.do_block_smoothing(smoothing);
        let mut s = d.rgb().unwrap();
        let (w, h) = (s.width(), s.height());
        let px = s.read_scanlines::<u8>().unwrap();
        (w, h, px)
    }

    #[test]
    fn the_dc_scans_alone_make_the_same_eighth_scale_pixels() {
        let img = noisy_rgb(803, 597);
        let cases = [
            ("mozjpeg 4:2:0", mozjpeg_progressive(&img)),
            ("jpeg-encoder 4:2:0", jpeg_encoder_progressive(&img, jpeg_encoder::SamplingFactor::R_4_2_0)),
            // Every component at full resolution: every AC scan left out.
            ("jpeg-encoder 4:4:4", jpeg_encoder_progressive(&img, jpeg_encoder::SamplingFactor::R_4_4_4)),
            ("jpeg-encoder 4:2:2", jpeg_encoder_progressive(&img, jpeg_encoder::SamplingFactor::R_4_2_2)),
        ];
        for (what, jpeg) in cases {
            let dc = dc_only(&jpeg).unwrap_or_else(|| panic!("{what}: progressive, has AC scans")).concat();
            assert!(dc.len() < jpeg.len(), "{what}: luma's AC scans are left out");
            let full = decode(&jpeg, 1, true);
            assert_eq!((full.0, full.1), (101, 75), "{what}");
            assert_eq!(decode(&dc, 1, false), full, "{what}: same pixels at 1/8");
            // At 2/8 the AC coefficients matter: the copy is not for that.
            assert_ne!(decode(&dc, 2, false).2, decode(&jpeg, 2, true).2, "{what}");
        }
    }

    #[test]
    fn other_files_are_left_alone() {
        let img = noisy_rgb(64, 48);
        let mut baseline = Vec::new();
        jpeg_encoder::Encoder::new(&mut baseline, 85)
            .encode(img.as_raw(), 64, 48, jpeg_encoder::ColorType::Rgb)
            .unwrap();
        assert!(dc_only(&baseline).is_none(), "baseline");
        let progressive = mozjpeg_progressive(&img);
        assert!(dc_only(&progressive).is_some());
        // Cut anywhere before the end: never a panic, never a copy that
        // claims to be whole.
        for cut in 0..progressive.len() - 1 {
            assert!(dc_only(&progressive[..cut]).is_none(), "cut at {cut}");
        }
        assert!(dc_only(b"").is_none());
        // Thousands of comment segments: joined into one part, not a list
        // as long as the file.
        let mut padded = progressive[..2].to_vec();
        for _ in 0..10_000 {
            padded.extend_from_slice(&[0xFF, 0xFE, 0x00, 0x02]);
        }
        padded.extend_from_slice(&progressive[2..]);
        let (plain, padded) = (dc_only(&progressive).unwrap(), dc_only(&padded).unwrap());
        assert_eq!(padded.len(), plain.len(), "parts");
        assert_eq!(padded.concat().len(), plain.concat().len() + 40_000);
    }

    /// A one-component progressive frame and `scans` pairs of a DC scan
    /// and an AC scan, none with data: as many parts as pairs.
    fn tiny_scans(scans: usize) -> Vec<u8> {
        let mut f = vec![0xFF, 0xD8];
        f.extend_from_slice(&[0xFF, 0xC2, 0x00, 0x0B, 8, 0, 16, 0, 16, 1, 1, 0x11, 0]);
        for _ in 0..scans {
            f.extend_from_slice(&[0xFF, 0xDA, 0x00, 0x08, 1, 1, 0x00, 0, 0, 0]);
            f.extend_from_slice(&[0xFF, 0xDA, 0x00, 0x08, 1, 1, 0x00, 1, 63, 0]);
        }
        f.extend_from_slice(&[0xFF, 0xD9]);
        f
    }

    #[test]
    fn a_file_of_many_scans_is_decoded_as_it_is() {
        let few = tiny_scans(10);
        assert_eq!(dc_only(&few).unwrap().len(), 11, "each DC scan a part, the end another");
        assert!(dc_only(&tiny_scans(MAX_PARTS)).is_none());
        assert!(dc_only(&tiny_scans(100_000)).is_none());
        assert!(dc_only(b"\xFF\xD8\xFF\xDA\x00").is_none());
    }
}
