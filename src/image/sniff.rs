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

/// Reads the format and stored pixel dimensions from the header only. Never
/// decodes pixel data and never allocates in proportion to the image.
///
/// Errors: [`ImageError::Unsupported`] when the format is not recognised,
/// [`ImageError::Decode`] when the header is truncated or corrupt (including
/// a zero width or height).
pub fn probe(bytes: &[u8]) -> Result<ImageInfo, ImageError> {
    let format = sniff(bytes).ok_or_else(|| ImageError::Unsupported("unrecognised image format".into()))?;
    let dims = match format {
        SourceFormat::Jpeg => jpeg_dims(bytes),
        SourceFormat::Png => png_dims(bytes),
        SourceFormat::Webp => webp_dims(bytes),
        SourceFormat::Gif => gif_dims(bytes),
        SourceFormat::Bmp => bmp_dims(bytes),
        SourceFormat::Tiff => tiff_dims(bytes),
        SourceFormat::Avif | SourceFormat::Heif => isobmff_dims(bytes),
    };
    match dims {
        Some((width, height)) if width > 0 && height > 0 => Ok(ImageInfo { format, width, height }),
        _ => Err(ImageError::Decode(format!("{}: truncated or invalid header", format.name()))),
    }
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

/// Walks JPEG marker segments up to the first SOFn frame header.
fn jpeg_dims(b: &[u8]) -> Option<(u32, u32)> {
    let mut i = 2; // after SOI
    loop {
        // Find the next 0xFF, then skip fill bytes.
        while *b.get(i)? != 0xFF {
            i += 1;
        }
        while *b.get(i)? == 0xFF {
            i += 1;
        }
        let marker = *b.get(i)?;
        i += 1;
        match marker {
            // Standalone markers: no length field.
            0x01 | 0xD0..=0xD7 => continue,
            // SOI again or EOI before a frame header: nothing to find.
            0xD8 | 0xD9 => return None,
            // SOF0..SOF15 except DHT (C4), JPG (C8) and DAC (CC).
            0xC0..=0xCF if !matches!(marker, 0xC4 | 0xC8 | 0xCC) => {
                // length(2) precision(1) height(2) width(2)
                let h = be16(b, i + 3)?;
                let w = be16(b, i + 5)?;
                return Some((u32::from(w), u32::from(h)));
            }
            _ => {
                let len = usize::from(be16(b, i)?);
                if len < 2 {
                    return None;
                }
                i += len;
            }
        }
    }
}

fn png_dims(b: &[u8]) -> Option<(u32, u32)> {
    // Signature (8), then the first chunk must be IHDR: length(4) type(4).
    if b.get(12..16)? != b"IHDR" {
        return None;
    }
    Some((be32(b, 16)?, be32(b, 20)?))
}

fn gif_dims(b: &[u8]) -> Option<(u32, u32)> {
    // Logical screen size; the image crate composes the first frame onto it.
    Some((u32::from(le16(b, 6)?), u32::from(le16(b, 8)?)))
}

fn webp_dims(b: &[u8]) -> Option<(u32, u32)> {
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
            Some((u32::from(w), u32::from(h)))
        }
        b"VP8L" => {
            if *b.get(d)? != 0x2f {
                return None;
            }
            let bits = le32(b, d + 1)?;
            Some(((bits & 0x3fff) + 1, ((bits >> 14) & 0x3fff) + 1))
        }
        b"VP8X" => {
            // flags(1) reserved(3) canvas width-1 (24 bits) height-1 (24 bits)
            let w = le32(b, d + 4)? & 0x00ff_ffff;
            let h = le32(b, d + 7)? & 0x00ff_ffff;
            Some((w + 1, h + 1))
        }
        _ => None,
    }
}

fn bmp_dims(b: &[u8]) -> Option<(u32, u32)> {
    if le32(b, 14)? == 12 {
        // OS/2 BITMAPCOREHEADER: 16-bit sizes.
        Some((u32::from(le16(b, 18)?), u32::from(le16(b, 20)?)))
    } else {
        let w = le32(b, 18)? as i32;
        // Negative height means top-down rows.
        let h = le32(b, 22)? as i32;
        if w <= 0 {
            return None;
        }
        Some((w as u32, h.unsigned_abs()))
    }
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
