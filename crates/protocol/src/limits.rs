//! Shared defaults for every bound the tiers enforce.
//!
//! The binaries expose each as a flag; these constants are the defaults, kept here so the
//! page, the relay and the renderer agree without copying numbers around.

/// Largest WebSocket message a page may send, in bytes (256 KiB).
///
/// A batch of [`DEFAULT_MAX_POINTS_PER_BATCH`] points is about 40 KiB of JSON, so this
/// leaves room for slow encoders without letting one frame hold much memory.
pub const DEFAULT_MAX_FRAME_BYTES: usize = 256 * 1024;

/// Most points one `points` message may carry.
///
/// The page flushes every 50 ms or 100 points; a thousand covers a burst without letting
/// one message monopolise the renderer.
pub const DEFAULT_MAX_POINTS_PER_BATCH: usize = 1000;

/// Largest viewport side the renderer accepts, in CSS pixels.
pub const MAX_VIEWPORT_SIDE: u32 = 16_384;

/// Longest recording id, in bytes.
pub const MAX_RECORDING_ID_LEN: usize = 64;

/// Default port of the relay (HTTP and the page's WebSocket).
pub const DEFAULT_RELAY_PORT: u16 = 3000;

/// Default port of the renderer (its WebSocket and image endpoint).
pub const DEFAULT_RENDERER_PORT: u16 = 5000;

/// Default output image size: a full-HD picture maps a 1920x1080 viewport pixel to pixel.
pub const DEFAULT_IMAGE_WIDTH: u32 = 1920;
/// See [`DEFAULT_IMAGE_WIDTH`].
pub const DEFAULT_IMAGE_HEIGHT: u32 = 1080;

/// Bounds a receiver checks each message against.
///
/// A struct rather than loose arguments so that a new bound is one field, not a change to
/// every call site.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Most points in one batch.
    pub max_points_per_batch: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_points_per_batch: DEFAULT_MAX_POINTS_PER_BATCH,
        }
    }
}
