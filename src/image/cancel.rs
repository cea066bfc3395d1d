//! Cooperative cancellation of a render.
//!
//! A render runs on a thread nobody can stop from outside; it stops itself
//! when it sees the flag. The pipeline looks at it between stages and inside
//! the long ones (per band of rows while decoding, per chunk of input fed to
//! libjpeg, from libwebp's progress hook), so a raised flag ends the work
//! within milliseconds and its buffers are freed.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use super::ImageError;

/// A flag shared by a render and whoever waits for it. Clones share it.
#[derive(Debug, Clone, Default)]
pub struct Cancel(Arc<AtomicBool>);

impl Cancel {
    /// A flag not raised yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Raises the flag: the render stops at its next check.
    pub fn cancel(&self) {
        self.0.store(true, Ordering::Relaxed);
    }

    /// Whether the flag is raised.
    pub fn is_cancelled(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }

    /// `Err(Cancelled)` once the flag is raised.
    pub(crate) fn check(&self) -> Result<(), ImageError> {
        if self.is_cancelled() { Err(ImageError::Cancelled) } else { Ok(()) }
    }
}
