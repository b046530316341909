//! The density grid: one cell per output pixel, counting the (weighted) points in it.

use ndarray::Array2;

/// A point as stored: its position as a fraction of its viewport, in 16-bit fixed point.
///
/// `[0, 65535]` covers `[0, 1]` of the viewport side, which is 0.03 px at 1920 px: finer
/// than any screen, and 4 bytes a point instead of 16, so a day of traffic fits in memory.
pub type NormPoint = [u16; 2];

/// Converts a position inside a viewport side of `extent` pixels to fixed point.
///
/// The caller has validated `0 <= position <= extent`; anything else is clamped.
pub fn to_fixed(position: f32, extent: u32) -> u16 {
    let scaled = (position / extent as f32) * 65536.0;
    scaled.clamp(0.0, 65535.0) as u16
}

/// Accumulated point weights, `height` rows of `width` cells.
///
/// Never serialised: it is an internal of the renderer, not a wire type.
#[derive(Debug, Clone)]
pub struct Grid {
    cells: Array2<f32>,
}

impl Grid {
    /// An empty grid of `width` x `height` cells.
    pub fn new(width: u32, height: u32) -> Self {
        Grid {
            cells: Array2::zeros((height as usize, width as usize)),
        }
    }

    /// Width in cells.
    pub fn width(&self) -> usize {
        self.cells.ncols()
    }

    /// Height in cells.
    pub fn height(&self) -> usize {
        self.cells.nrows()
    }

    /// Adds `weight` at each point's cell.
    ///
    /// A fixed-point coordinate stands for the interval `[u, u+1) / 65536` of its side; the
    /// cell is the one holding the interval's centre, so a 1920 px viewport maps pixel to
    /// pixel onto a 1920 px image and a smaller one stretches in proportion.
    pub fn accumulate(&mut self, points: &[NormPoint], weight: f32) {
        let width = self.width() as u64;
        let height = self.height() as u64;
        let row_len = self.width();
        let cells = self.cells_mut();
        for &[u, v] in points {
            let col = ((2 * u64::from(u) + 1) * width) >> 17;
            let row = ((2 * u64::from(v) + 1) * height) >> 17;
            // col < width and row < height by construction (u, v < 65536), so the index is
            // in bounds; `get_mut` keeps it panic-free all the same.
            if let Some(cell) = cells.get_mut(row as usize * row_len + col as usize) {
                *cell += weight;
            }
        }
    }

    /// Sum of all cells: the mass, which smoothing must (nearly) preserve.
    pub fn total(&self) -> f64 {
        self.cells.iter().map(|&cell| f64::from(cell)).sum()
    }

    /// Largest cell value.
    pub fn max(&self) -> f32 {
        self.cells.iter().copied().fold(0.0, f32::max)
    }

    /// The cell at `(col, row)`.
    pub fn get(&self, col: usize, row: usize) -> f32 {
        self.cells.get((row, col)).copied().unwrap_or(0.0)
    }

    /// The position of the largest cell, as `(col, row)`.
    pub fn argmax(&self) -> (usize, usize) {
        let mut best = (0, 0);
        let mut best_value = f32::MIN;
        for ((row, col), &value) in self.cells.indexed_iter() {
            if value > best_value {
                best_value = value;
                best = (col, row);
            }
        }
        best
    }

    /// The cells in row-major order.
    pub fn cells(&self) -> &[f32] {
        self.cells.as_slice().unwrap_or(&[]) // ok: built by Array2::zeros, always standard layout
    }

    /// The cells in row-major order, mutable.
    pub fn cells_mut(&mut self) -> &mut [f32] {
        // Array2::zeros builds a standard-layout array and nothing here transposes it.
        self.cells.as_slice_mut().unwrap_or(&mut [])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_hd_viewport_maps_pixel_to_pixel() {
        let mut grid = Grid::new(1920, 1080);
        for (x, y) in [
            (0.0, 0.0),
            (100.0, 200.0),
            (100.9, 200.9),
            (1919.5, 1079.5),
            (1920.0, 1080.0),
        ] {
            grid.accumulate(&[[to_fixed(x, 1920), to_fixed(y, 1080)]], 1.0);
        }
        assert_eq!(grid.get(0, 0), 1.0);
        assert_eq!(grid.get(100, 200), 2.0);
        assert_eq!(grid.get(1919, 1079), 2.0);
        assert_eq!(grid.total(), 5.0);
    }

    #[test]
    fn smaller_viewport_fills_the_image() {
        let mut grid = Grid::new(1920, 1080);
        // The bottom-right corner of a 960x540 window lands in the image's last cell.
        grid.accumulate(&[[to_fixed(960.0, 960), to_fixed(540.0, 540)]], 1.0);
        grid.accumulate(&[[to_fixed(480.0, 960), to_fixed(270.0, 540)]], 1.0);
        assert_eq!(grid.get(1919, 1079), 1.0);
        assert_eq!(grid.get(960, 540), 1.0);
    }

    #[test]
    fn accumulation_conserves_mass() {
        let mut grid = Grid::new(64, 48);
        let points: Vec<NormPoint> = (0..10_000u32)
            .map(|idx| [(idx * 7919 % 65536) as u16, (idx * 104_729 % 65536) as u16])
            .collect();
        grid.accumulate(&points, 1.0);
        grid.accumulate(&points[..100], 4.0);
        assert_eq!(grid.total(), 10_400.0);
    }
}
