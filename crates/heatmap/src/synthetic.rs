//! Deterministic pointer-like data for benchmarks and load tests.

use crate::grid::NormPoint;

/// `n_points` positions along random walks that linger around spots and now and then jump
/// elsewhere, like a pointer reading a page. The same `seed` gives the same points.
pub fn pointer_paths(n_points: usize, seed: u64) -> Vec<NormPoint> {
    let mut state = seed | 1;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let mut points = Vec::with_capacity(n_points);
    let (mut x, mut y) = (32_768i64, 32_768i64);
    while points.len() < n_points {
        if next() % 500 == 0 {
            x = (next() % 65_536) as i64;
            y = (next() % 65_536) as i64;
        }
        x = (x + (next() % 401) as i64 - 200).clamp(0, 65_535);
        y = (y + (next() % 401) as i64 - 200).clamp(0, 65_535);
        points.push([x as u16, y as u16]);
    }
    points
}
