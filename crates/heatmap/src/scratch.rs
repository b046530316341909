//! Reused pixel and density buffers.
//!
//! A 1920x1080 render touches about 30 MB of fresh buffers. Freshly mapped memory costs a
//! page fault per 4 KiB page on first touch, which measured as a third of the render time
//! (`examples/stages.rs`). Keeping a few buffers between renders turns that into a memset.
//! The pool is bounded in bytes, so the renderer's resident size stays predictable.

use std::sync::Mutex;

/// Most bytes kept in each pool between renders.
const MAX_POOLED_BYTES: usize = 40 * 1024 * 1024;

struct Pool<T> {
    buffers: Mutex<Vec<Vec<T>>>,
}

impl<T: Copy> Pool<T> {
    const fn new() -> Self {
        Pool {
            buffers: Mutex::new(Vec::new()),
        }
    }

    /// A buffer of `len` copies of `fill`, reusing a pooled one when one is large enough.
    fn take(&self, len: usize, fill: T) -> Vec<T> {
        let reused = {
            let mut buffers = self
                .buffers
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            let found = buffers.iter().position(|buffer| buffer.capacity() >= len);
            found.map(|idx| buffers.swap_remove(idx))
        };
        match reused {
            Some(mut buffer) => {
                buffer.clear();
                buffer.resize(len, fill);
                buffer
            }
            None => vec![fill; len],
        }
    }

    /// Keeps `buffer` for a later render if the pool has room.
    fn give(&self, buffer: Vec<T>) {
        let mut buffers = self
            .buffers
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let pooled: usize = buffers
            .iter()
            .map(|buffer| buffer.capacity() * size_of::<T>())
            .sum();
        if pooled + buffer.capacity() * size_of::<T>() <= MAX_POOLED_BYTES {
            buffers.push(buffer);
        }
    }
}

static FLOATS: Pool<f32> = Pool::new();
static BYTES: Pool<u8> = Pool::new();

/// A zeroed `f32` buffer of `len` cells.
pub fn floats(len: usize) -> Vec<f32> {
    FLOATS.take(len, 0.0)
}

/// Returns a buffer from [`floats`] to the pool.
pub fn recycle_floats(buffer: Vec<f32>) {
    FLOATS.give(buffer);
}

/// A byte buffer of `len` copies of `fill`.
pub fn bytes(len: usize, fill: u8) -> Vec<u8> {
    BYTES.take(len, fill)
}

/// Returns a buffer from [`bytes`] to the pool.
pub fn recycle_bytes(buffer: Vec<u8>) {
    BYTES.give(buffer);
}
