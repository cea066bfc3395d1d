//! Format sniffing and header-only dimension probing.
//!
//! Hand-written parsers rather than the decoders' own: they allocate nothing,
//! read at most a few kilobytes and cannot be made to decode pixels, which is
//! what makes the "refuse before decoding" guarantee hold.

use super::{ImageError, ImageInfo, SourceFormat};

/// Recognises the container format from its magic bytes. Returns `None` for
/// anything that is not one of the [`SourceFormat`]s.
pub fn sniff(bytes: &[u8]) -> Option<SourceFormat> {
    if bytes.starts_with(&[0xFF, 0xD8, 0xFF]) {
        Some(SourceFormat::Jpeg)
    } else if bytes.starts_with(b"\x89PNG\r\n\x1a\n") {
        Some(SourceFormat::Png)
    } else if bytes.len() >= 12 && &bytes[0..4] == b"RIFF" && &bytes[8..12] == b"WEBP" {
        Some(SourceFormat::Webp)
    } else if bytes.starts_with(b"GIF87a") || bytes.starts_with(b"GIF89a") {
        Some(SourceFormat::Gif)
    } else if bytes.starts_with(b"II*\0") || bytes.starts_with(b"MM\0*") {
        Some(SourceFormat::Tiff)
    } else if bytes.len() >= 18 && bytes.starts_with(b"BM") && is_bmp_header(bytes) {
        Some(SourceFormat::Bmp)
    } else {
        sniff_isobmff(bytes)
    }
}

/// "BM" alone is too weak a signature (plain text can start with it), so also
/// require a known DIB header size.
fn is_bmp_header(b: &[u8]) -> bool {
    matches!(u32::from_le_bytes([b[14], b[15], b[16], b[17]]), 12 | 16 | 40 | 52 | 56 | 64 | 108 | 124)
}

/// AVIF/HEIF: an ISO-BMFF `ftyp` box whose major or compatible brands name
/// the format. AVIF wins when both are present (AVIF files list `mif1`).
fn sniff_isobmff(b: &[u8]) -> Option<SourceFormat> {
    if b.len() < 16 || &b[4..8] != b"ftyp" {
        return None;
    }
    let size = u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize;
    let end = size.clamp(16, 4096).min(b.len());
    // major brand at 8..12, minor version at 12..16, compatible brands after.
    let brands = std::iter::once(&b[8..12]).chain(b[16..end].chunks_exact(4));
    let mut heif = false;
    for brand in brands {
        match brand {
            b"avif" | b"avis" => return Some(SourceFormat::Avif),
            b"heic" | b"heix" | b"hevc" | b"hevx" | b"heim" | b"heis" | b"mif1" | b"msf1" => heif = true,
            _ => {}
        }
    }
    heif.then_some(SourceFormat::Heif)
}

/// Reads the format, stored pixel dimensions and the other facts a render's
/// memory estimate needs (bit depth, channels, frames, progressive coding,
/// EXIF orientation) from the header and block structure only. Never decodes
/// pixel data and never allocates in proportion to the image.
///
/// Given a prefix of a file (the first few hundred KiB), it reports what the
/// prefix shows: dimensions are exact once the header is in, frame counts are
/// those seen so far.
///
/// Errors: [`ImageError::Unsupported`] when the format is not recognised,
/// [`ImageError::Decode`] when the header is truncated or corrupt (including
/// a zero width or height).
pub fn probe(bytes: &[u8]) -> Result<ImageInfo, ImageError> {
    let format = sniff(bytes).ok_or_else(|| ImageError::Unsupported("unrecognised image format".into()))?;
    let info = match format {
        SourceFormat::Jpeg => jpeg_info(bytes),
        SourceFormat::Png => png_info(bytes),
        SourceFormat::Webp => webp_info(bytes),
        SourceFormat::Gif => gif_info(bytes),
        SourceFormat::Bmp => bmp_info(bytes),
        SourceFormat::Tiff => tiff_dims(bytes).map(|(w, h)| ImageInfo::still(format, w, h, 4)),
        SourceFormat::Avif | SourceFormat::Heif => isobmff_dims(bytes).map(|(w, h)| ImageInfo::still(format, w, h, 4)),
    };
    match info {
        Some(info) if info.width > 0 && info.height > 0 => Ok(info),
        _ => Err(ImageError::Decode(format!("{}: truncated or invalid header", format.name()))),
    }
}

impl ImageInfo {
    /// A single-frame, 8-bit, sequentially coded image with no orientation.
    fn still(format: SourceFormat, width: u32, height: u32, channels: u8) -> Self {
        ImageInfo {
            format,
            width,
            height,
            bit_depth: 8,
            channels,
            frames: 1,
            max_frame_pixels: u64::from(width) * u64::from(height),
            buffered: false,
            coefficient_blocks: 0,
            orientation: 1,
        }
    }
}

/// EXIF orientation (1–8) from a TIFF-structured block, with or without
/// the `Exif\0\0` prefix JPEG uses (WebP writers disagree on it).
pub(crate) fn exif_orientation(tiff: &[u8]) -> u8 {
    let tiff = tiff.strip_prefix(b"Exif\0\0").unwrap_or(tiff);
    image::metadata::Orientation::from_exif_chunk(tiff).map_or(1, |o| o.to_exif())
}

fn be16(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

fn be32(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_be_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

fn le16(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

fn le32(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

/// Walks JPEG marker segments up to the first scan: EXIF orientation
/// (APP1), the frame header (SOFn: size, precision, components and their
/// sampling) and the first scan header (SOS), which decides whether libjpeg
/// must keep every DCT coefficient of the image in memory (progressive
/// coding, or a first scan that does not cover every component).
fn jpeg_info(b: &[u8]) -> Option<ImageInfo> {
    let mut frame: Option<ImageInfo> = None;
    let mut orientation = 1;
    let mut i = 2; // after SOI
    while let Some(marker) = next_jpeg_marker(b, &mut i) {
        match marker {
            // Standalone markers: no length field.
            0x01 | 0xD0..=0xD7 => continue,
            // SOI again or EOI: nothing more to find.
            0xD8 | 0xD9 => break,
            _ => {}
        }
        let Some(len) = be16(b, i).map(usize::from) else { break };
        if len < 2 {
            // A corrupt segment before the frame header: nothing to trust.
            frame?;
            break;
        }
        // The payload, clipped when the data is a prefix of the file.
        let seg = b.get(i + 2..(i + len).min(b.len())).unwrap_or_default();
        match marker {
            // libjpeg saves every APP1 before the first scan; the decoder
            // takes the orientation of the last EXIF one, so does this.
            0xE1 => {
                if let Some(tiff) = seg.strip_prefix(b"Exif\0\0") {
                    orientation = exif_orientation(tiff);
                }
            }
            // SOF0..SOF15 except DHT (C4), JPG (C8) and DAC (CC).
            0xC0..=0xCF if !matches!(marker, 0xC4 | 0xC8 | 0xCC) && frame.is_none() => {
                frame = Some(jpeg_frame(seg, matches!(marker, 0xC2 | 0xC6 | 0xCA | 0xCE))?);
            }
            // SOS: Ns components in this scan. libjpeg (jdinput.c) buffers
            // the whole image when Ns < Nf or the coding is progressive.
            0xDA => {
                if let (Some(f), Some(&ns)) = (frame.as_mut(), seg.first()) {
                    f.buffered |= ns < f.channels;
                }
                break;
            }
            _ => {}
        }
        i += len;
    }
    frame.map(|f| ImageInfo { orientation, ..f })
}

/// Moves `i` past the next marker (skipping fill bytes) and returns it.
fn next_jpeg_marker(b: &[u8], i: &mut usize) -> Option<u8> {
    while *b.get(*i)? != 0xFF {
        *i += 1;
    }
    while *b.get(*i)? == 0xFF {
        *i += 1;
    }
    let marker = *b.get(*i)?;
    *i += 1;
    Some(marker)
}

/// A SOFn payload: precision(1) height(2) width(2) Nf(1), then per
/// component id(1) sampling(1: h<<4 | v) table(1).
fn jpeg_frame(seg: &[u8], progressive: bool) -> Option<ImageInfo> {
    let precision = *seg.first()?;
    let h = u32::from(be16(seg, 1)?);
    let w = u32::from(be16(seg, 3)?);
    let nf = *seg.get(5)?;
    // Sampling factors as written; a component whose factors are cut off
    // or invalid counts as full resolution (the largest it can cost).
    let sampling: Vec<(u32, u32)> = (0..usize::from(nf))
        .map(|c| match seg.get(7 + 3 * c) {
            Some(&hv) if (1..=4).contains(&(hv >> 4)) && (1..=4).contains(&(hv & 15)) => {
                (u32::from(hv >> 4), u32::from(hv & 15))
            }
            _ => (0, 0),
        })
        .collect();
    let hmax = sampling.iter().map(|s| s.0).max().unwrap_or(1).max(1);
    let vmax = sampling.iter().map(|s| s.1).max().unwrap_or(1).max(1);
    // jdcoefct.c's whole-image buffer: per component, its size in 8x8
    // blocks, rounded up to whole MCUs.
    let blocks: u64 = sampling
        .iter()
        .map(|&(hs, vs)| {
            let (hs, vs, hm, vm) = if hs == 0 { (1, 1, 1, 1) } else { (hs, vs, hmax, vmax) };
            let bw = u64::from(w * hs).div_ceil(u64::from(hm)).div_ceil(8).next_multiple_of(u64::from(hs));
            let bh = u64::from(h * vs).div_ceil(u64::from(vm)).div_ceil(8).next_multiple_of(u64::from(vs));
            bw * bh
        })
        .sum();
    let mut info = ImageInfo::still(SourceFormat::Jpeg, w, h, nf);
    info.bit_depth = precision;
    info.buffered = progressive;
    info.coefficient_blocks = blocks;
    Some(info)
}

/// IHDR, then the chunks before the image data: tRNS (an alpha channel once
/// expanded) and eXIf (orientation). APNG frames are not counted: only the
/// default image is ever decoded.
fn png_info(b: &[u8]) -> Option<ImageInfo> {
    // Signature (8), then the first chunk must be IHDR: length(4) type(4).
    if b.get(12..16)? != b"IHDR" {
        return None;
    }
    let (w, h) = (be32(b, 16)?, be32(b, 20)?);
    let depth = b.get(24).copied().unwrap_or(8);
    let color = b.get(25).copied().unwrap_or(6);
    // Samples per pixel once palettes are expanded; unknown colour types
    // (refused by the decoder) count as the widest.
    let channels = match color {
        0 => 1,
        4 => 2,
        2 | 3 => 3,
        _ => 4,
    };
    let mut info = ImageInfo::still(SourceFormat::Png, w, h, channels);
    info.bit_depth = depth;
    info.buffered = b.get(28) == Some(&1);
    let mut i = 8 + 25; // after IHDR and its CRC
    while let (Some(len), Some(kind)) = (be32(b, i), b.get(i + 4..i + 8)) {
        let data = b.get(i + 8..).map(|d| &d[..d.len().min(len as usize)]).unwrap_or_default();
        match kind {
            b"IDAT" | b"IEND" => break,
            b"tRNS" if matches!(color, 0 | 2 | 3) => info.channels = channels + 1,
            b"eXIf" => info.orientation = exif_orientation(data),
            _ => {}
        }
        i = i.saturating_add(12).saturating_add(len as usize);
    }
    Some(info)
}

/// Logical screen, then every block: extensions are skipped, image
/// descriptors counted (with their own rectangles, which may be larger than
/// the screen). Costs one hop per 255-byte sub-block, no decoding.
fn gif_info(b: &[u8]) -> Option<ImageInfo> {
    let (w, h) = (u32::from(le16(b, 6)?), u32::from(le16(b, 8)?));
    let mut info = ImageInfo::still(SourceFormat::Gif, w, h, 4);
    let Some(&screen_flags) = b.get(10) else { return Some(info) };
    let mut i = 13 + gif_color_table_len(screen_flags);
    let (mut frames, mut largest) = (0u32, 0u64);
    loop {
        match b.get(i) {
            Some(0x21) => i = gif_skip_sub_blocks(b, i + 2),
            Some(0x2C) => {
                let (Some(fw), Some(fh), Some(&flags)) = (le16(b, i + 5), le16(b, i + 7), b.get(i + 9)) else {
                    break;
                };
                if frames == 0 {
                    info.buffered = flags & 0x40 != 0;
                }
                frames += 1;
                largest = largest.max(u64::from(fw) * u64::from(fh));
                // Descriptor, local colour table, LZW minimum code size.
                i = gif_skip_sub_blocks(b, i + 10 + gif_color_table_len(flags) + 1);
            }
            // Trailer, garbage, or the end of the data.
            _ => break,
        }
    }
    info.frames = frames.max(1);
    if frames > 0 {
        info.max_frame_pixels = largest;
    }
    Some(info)
}

/// Bytes of the colour table announced by a GIF flags byte.
fn gif_color_table_len(flags: u8) -> usize {
    if flags & 0x80 != 0 { 3 << ((flags & 7) + 1) } else { 0 }
}

/// Index after a chain of GIF sub-blocks starting at `i` (or past the end).
fn gif_skip_sub_blocks(b: &[u8], mut i: usize) -> usize {
    while let Some(&len) = b.get(i) {
        i += 1 + usize::from(len);
        if len == 0 {
            return i;
        }
    }
    usize::MAX
}

/// The first chunk gives the size (VP8 lossy, VP8L lossless, VP8X
/// extended); an extended file's chunks are then walked by their headers:
/// ANMF frames (each with its own rectangle), ALPH, EXIF.
fn webp_info(b: &[u8]) -> Option<ImageInfo> {
    let chunk = b.get(12..16)?;
    let d = 20; // start of the first chunk's payload
    match chunk {
        b"VP8 " => {
            // 3-byte frame tag, 3-byte start code 9d 01 2a, then 14-bit sizes.
            if b.get(d + 3..d + 6)? != [0x9d, 0x01, 0x2a] {
                return None;
            }
            let w = le16(b, d + 6)? & 0x3fff;
            let h = le16(b, d + 8)? & 0x3fff;
            Some(ImageInfo::still(SourceFormat::Webp, u32::from(w), u32::from(h), 3))
        }
        b"VP8L" => {
            if *b.get(d)? != 0x2f {
                return None;
            }
            let bits = le32(b, d + 1)?;
            let alpha = bits >> 28 & 1 == 1;
            let (w, h) = ((bits & 0x3fff) + 1, ((bits >> 14) & 0x3fff) + 1);
            Some(ImageInfo::still(SourceFormat::Webp, w, h, if alpha { 4 } else { 3 }))
        }
        b"VP8X" => {
            // flags(1) reserved(3) canvas width-1 (24 bits) height-1 (24 bits)
            let flags = *b.get(d)?;
            let w = (le32(b, d + 4)? & 0x00ff_ffff) + 1;
            let h = (le32(b, d + 7)? & 0x00ff_ffff) + 1;
            let animated = flags & 0x02 != 0;
            let alpha = flags & 0x10 != 0 || animated;
            let mut info = ImageInfo::still(SourceFormat::Webp, w, h, if alpha { 4 } else { 3 });
            let (mut frames, mut largest) = (0u32, 0u64);
            let mut i = d + 10;
            while let (Some(kind), Some(size)) = (b.get(i..i + 4), le32(b, i + 4)) {
                let payload = b.get(i + 8..).map(|p| &p[..p.len().min(size as usize)]).unwrap_or_default();
                match kind {
                    b"ANMF" => {
                        frames += 1;
                        let fw = u64::from(le32(payload, 6).unwrap_or(0) & 0x00ff_ffff) + 1;
                        let fh = u64::from(le32(payload, 9).unwrap_or(0) & 0x00ff_ffff) + 1;
                        largest = largest.max(fw * fh);
                    }
                    b"ALPH" => info.channels = 4,
                    b"EXIF" => info.orientation = exif_orientation(payload),
                    _ => {}
                }
                // Chunks are padded to an even size.
                i = i.saturating_add(8).saturating_add(size as usize).saturating_add(size as usize & 1);
            }
            if animated {
                info.frames = frames.max(1);
                if frames > 0 {
                    info.max_frame_pixels = largest;
                }
            }
            Some(info)
        }
        _ => None,
    }
}

/// Size from the DIB header; decoded as RGBA when it has alpha, which is
/// not worth finding out for a format this rare: counted as 4 channels.
fn bmp_info(b: &[u8]) -> Option<ImageInfo> {
    let (w, h) = if le32(b, 14)? == 12 {
        // OS/2 BITMAPCOREHEADER: 16-bit sizes.
        (u32::from(le16(b, 18)?), u32::from(le16(b, 20)?))
    } else {
        let w = le32(b, 18)? as i32;
        // Negative height means top-down rows.
        let h = le32(b, 22)? as i32;
        if w <= 0 {
            return None;
        }
        (w as u32, h.unsigned_abs())
    };
    Some(ImageInfo::still(SourceFormat::Bmp, w, h, 4))
}

/// Reads ImageWidth (256) and ImageLength (257) from the first IFD.
fn tiff_dims(b: &[u8]) -> Option<(u32, u32)> {
    let le = b.starts_with(b"II");
    let r16 = |at| if le { le16(b, at) } else { be16(b, at) };
    let r32 = |at| if le { le32(b, at) } else { be32(b, at) };
    let ifd = r32(4)? as usize;
    let count = usize::from(r16(ifd)?);
    let (mut w, mut h) = (None, None);
    for n in 0..count.min(1024) {
        let e = ifd + 2 + n * 12;
        let tag = r16(e)?;
        let typ = r16(e + 2)?;
        let value = match typ {
            3 => u32::from(r16(e + 8)?), // SHORT
            4 => r32(e + 8)?,            // LONG
            _ => continue,
        };
        match tag {
            256 => w = Some(value),
            257 => h = Some(value),
            _ => {}
        }
        if let (Some(w), Some(h)) = (w, h) {
            return Some((w, h));
        }
    }
    None
}

/// AVIF/HEIF: the largest `ispe` (image spatial extents) property in
/// `meta/iprp/ipco`. The largest is taken because files also carry
/// properties for thumbnails and grid tiles; the primary image (or the grid
/// it is made of) is the biggest.
fn isobmff_dims(b: &[u8]) -> Option<(u32, u32)> {
    let meta = find_box(b, b"meta")?;
    // `meta` is a full box: 4 bytes version/flags before its children.
    let iprp = find_box(meta.get(4..)?, b"iprp")?;
    let ipco = find_box(iprp, b"ipco")?;
    let mut best: Option<(u32, u32)> = None;
    let mut rest = ipco;
    while let Some((kind, body, next)) = next_box(rest) {
        if kind == b"ispe" {
            let w = be32(body, 4)?;
            let h = be32(body, 8)?;
            if best.is_none_or(|(bw, bh)| u64::from(w) * u64::from(h) > u64::from(bw) * u64::from(bh)) {
                best = Some((w, h));
            }
        }
        rest = next;
    }
    best
}

/// Finds the first child box of type `kind` in `b` and returns its payload.
fn find_box<'a>(b: &'a [u8], kind: &[u8; 4]) -> Option<&'a [u8]> {
    let mut rest = b;
    while let Some((k, body, next)) = next_box(rest) {
        if k == kind {
            return Some(body);
        }
        rest = next;
    }
    None
}

/// Splits one ISO-BMFF box off the front of `b`: (type, payload, remainder).
/// A box that claims to extend past the data is clipped, which is what lets
/// probing work on a truncated prefix of the file.
fn next_box(b: &[u8]) -> Option<(&[u8], &[u8], &[u8])> {
    let size = be32(b, 0)? as u64;
    let kind = b.get(4..8)?;
    let (header, size) = match size {
        0 => (8, b.len() as u64), // extends to end of file
        1 => (16, u64::from(be32(b, 8)?) << 32 | u64::from(be32(b, 12)?)),
        s => (8, s),
    };
    if size < header as u64 {
        return None;
    }
    let end = usize::try_from(size).unwrap_or(usize::MAX).min(b.len());
    let body = b.get(header..end)?;
    Some((kind, body, &b[end..]))
}
