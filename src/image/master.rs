//! Decode once, render many: a [`Master`] is a source decoded at the DCT
//! scale its first thumbnail needed (JPEG) or at full size (the others),
//! before any box shrink, so every later thumbnail it still covers is made
//! from it by shrink → resize → encode, without decoding again. The caller
//! (the thumbnail service) keeps masters for a few seconds, for the other
//! sizes of an eager POST, a poster's sizes or a `srcset` burst.
//!
//! "Covers" is the shrink-on-load rule itself: the master must be at least
//! as large as what [`super::plan`] would have decoded for that thumbnail,
//! so a thumbnail made from a master is never of lower quality than one
//! decoded for it alone (it may be decoded at a larger scale, which is
//! sharper, never smaller).

use std::panic::{AssertUnwindSafe, catch_unwind};

use super::shrink::{shrink_factor, shrink_from};
use super::{
    Bitmap, Cancel, ImageError, ImageInfo, MemoryEstimate, Plan, Thumbnail, decode, estimate, panic_message,
    resize_and_encode,
};

/// A decoded source shared by the renders it covers.
#[derive(Debug)]
pub struct Master {
    bitmap: Bitmap,
    icc: Option<Vec<u8>>,
    info: ImageInfo,
}

impl Master {
    /// Bytes of its pixels (what keeping it costs).
    pub fn bytes(&self) -> u64 {
        self.bitmap.data.len() as u64
    }

    /// Its size in pixels (stored orientation).
    pub fn size(&self) -> (u32, u32) {
        (self.bitmap.width, self.bitmap.height)
    }
}

/// The plan that decodes `plan`'s source into a master: the same decoder
/// and DCT scale, no box shrink, priced for holding the whole decoded
/// image. `None` for an animation (decoded frame by frame).
pub fn master_plan(plan: &Plan) -> Option<Plan> {
    if plan.geometry.frames > 1 {
        return None;
    }
    let mut master = *plan;
    let g = &mut master.geometry;
    g.shrink = (1, 1);
    g.shrunk = g.decoded;
    let full = estimate(&plan.info, g, plan.spec.format, 0);
    // Only the decode is done under this plan; the render from the master
    // is priced by its own plan ([`plan_from_master`]).
    master.memory = MemoryEstimate { decode: full.decode, resize: 0, encode: 0, animation: 0, ..plan.memory };
    Some(master)
}

/// Decodes `bytes` as `master_plan` (from [`master_plan`]) says.
pub fn decode_master(bytes: &[u8], master_plan: &Plan, cancel: &Cancel) -> Result<Master, ImageError> {
    catch_unwind(AssertUnwindSafe(|| {
        cancel.check()?;
        let decoded = decode::decode(bytes, master_plan, cancel)?;
        Ok(Master { bitmap: decoded.bitmap, icc: decoded.icc, info: master_plan.info })
    }))
    .unwrap_or_else(|payload| Err(ImageError::Decode(panic_message(payload.as_ref()))))
}

/// `plan` (from [`super::plan`] for the same source) carried out from
/// `master` instead of decoding: `None` when the master does not cover it
/// (smaller than what the plan would decode, another image, an animation).
/// Its memory is that of the shrink, resize and encode; the master itself is
/// held by its keeper.
pub fn plan_from_master(master: &Master, plan: &Plan) -> Option<Plan> {
    let g = plan.geometry;
    let (w, h) = master.size();
    if g.frames > 1 || master.info != plan.info || master.bitmap.channels != g.channels {
        return None;
    }
    if w < g.decoded.0 || h < g.decoded.1 {
        return None;
    }
    let mut from = *plan;
    let fg = &mut from.geometry;
    fg.decoded = (w, h);
    fg.shrink = (shrink_factor(w, g.resized.0), shrink_factor(h, g.resized.1));
    fg.shrunk = (w.div_ceil(fg.shrink.0), h.div_ceil(fg.shrink.1));
    fg.streamed = true;
    let full = estimate(&plan.info, fg, plan.spec.format, 0);
    // What the shrink makes (a copy of the master when there is nothing to
    // shrink) and its band of sums, instead of a decoder's work.
    let c = u64::from(fg.channels);
    let band = if fg.shrink != (1, 1) { u64::from(fg.shrunk.0) * c * 8 } else { 0 };
    let decode = u64::from(fg.shrunk.0) * u64::from(fg.shrunk.1) * c + band;
    from.memory = MemoryEstimate { source: full.source, decode, ..full };
    Some(from)
}

/// Makes the thumbnail `plan` (from [`plan_from_master`]) describes.
pub fn render_from_master(master: &Master, plan: &Plan, cancel: &Cancel) -> Result<Thumbnail, ImageError> {
    catch_unwind(AssertUnwindSafe(|| {
        cancel.check()?;
        let shrunk = shrink_from(&master.bitmap, plan.geometry.shrink, cancel)?;
        resize_and_encode(shrunk, master.icc.as_deref(), plan, cancel)
    }))
    .unwrap_or_else(|payload| Err(ImageError::Decode(panic_message(payload.as_ref()))))
}
