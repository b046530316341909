//! The density grid: one cell per output pixel, counting the (weighted) points in it.

use ndarray::Array2;
use rayon::prelude::*;

use crate::scratch;

/// Cells per parallel work item for element-wise passes.
const PAR_CHUNK: usize = 64 * 1024;

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
/// Never serialised: it is an internal of the pipeline, not a wire type.
#[derive(Debug, Clone)]
pub struct Grid {
    cells: Array2<f32>,
}

impl Grid {
    /// An empty grid of `width` x `height` cells.
    pub fn new(width: u32, height: u32) -> Self {
        let shape = (height as usize, width as usize);
        let cells = scratch::floats(shape.0 * shape.1);
        // The buffer has exactly rows x columns cells, so the shape always fits.
        let cells = Array2::from_shape_vec(shape, cells).unwrap_or_else(|_| Array2::zeros(shape));
        Grid { cells }
    }

    /// Width in cells.
    pub(crate) fn width(&self) -> usize {
        self.cells.ncols()
    }

    /// Height in cells.
    pub(crate) fn height(&self) -> usize {
        self.cells.nrows()
    }

    /// Adds `weight` at each point's cell.
    ///
    /// A fixed-point coordinate stands for the interval `[u, u+1) / 65536` of its side; the
    /// cell is the one holding the interval's centre, so a 1920 px viewport maps pixel to
    /// pixel onto a 1920 px image and a smaller one stretches in proportion.
    ///
    /// Large inputs are split across threads in one of two ways. When the points are many
    /// for the grid (at least half a point per cell), two threads each add half of the
    /// points, one into this grid and one into a pooled copy, and the copy is added in:
    /// every point is read once, and memory grows by at most one grid (the image size the
    /// renderer already bounds). Otherwise every thread reads all points (a sequential
    /// scan) and writes only the rows of its band, which needs no extra grid; with many
    /// points that reads each point once per thread, which made accumulation no faster on
    /// two cores than on one.
    ///
    /// Sums of whole-number weights (every caller's) are exact in `f32` far beyond any
    /// cell's count, so both ways give the same cells as one thread.
    pub fn accumulate(&mut self, points: &[NormPoint], weight: f32) {
        self.accumulate_counted(points, &[], weight);
    }

    /// Adds `weight` times `counts[i]` at point `i` (once each where `counts` is empty):
    /// a point standing for many events, such as a stored heat cell's centre, costs the
    /// same as one.
    pub fn accumulate_counted(&mut self, points: &[NormPoint], counts: &[u32], weight: f32) {
        /// Below this many points one thread is faster than coordinating two.
        const PARALLEL_FROM: usize = 100_000;
        let width = self.width();
        let height = self.height();
        let n_threads = rayon::current_num_threads().clamp(1, height.max(1));
        if points.len() < PARALLEL_FROM || n_threads == 1 {
            accumulate_band(self.cells_mut(), points, counts, weight, width, height, 0);
            return;
        }
        if points.len() >= width * height / 2 {
            self.accumulate_in_halves(points, counts, weight);
            return;
        }
        let band_rows = height.div_ceil(n_threads);
        self.cells_mut()
            .par_chunks_mut(band_rows * width)
            .enumerate()
            .for_each(|(band, cells)| {
                accumulate_band(
                    cells,
                    points,
                    counts,
                    weight,
                    width,
                    height,
                    band * band_rows,
                )
            });
    }

    /// Accumulates the two halves of the points in parallel, the first into this grid and
    /// the second into a pooled copy, then adds the copy in.
    fn accumulate_in_halves(&mut self, points: &[NormPoint], counts: &[u32], weight: f32) {
        let (width, height) = (self.width(), self.height());
        let half = points.len() / 2;
        let (first, second) = points.split_at(half);
        let (first_counts, second_counts) = counts.split_at(half.min(counts.len()));
        let mut copy = scratch::floats(width * height);
        let cells = self.cells_mut();
        rayon::join(
            || accumulate_band(cells, first, first_counts, weight, width, height, 0),
            || accumulate_band(&mut copy, second, second_counts, weight, width, height, 0),
        );
        cells
            .par_chunks_mut(PAR_CHUNK)
            .zip(copy.par_chunks(PAR_CHUNK))
            .for_each(|(mine, theirs)| {
                for (cell, add) in mine.iter_mut().zip(theirs) {
                    *cell += add;
                }
            });
        scratch::recycle_floats(copy);
    }

    /// Adds `weight` times a normalised Gaussian of `sigma` cells around each point.
    ///
    /// Exact, and cheaper than accumulating and blurring a whole grid when the points are
    /// few (clicks): the cost is the points times the kernel's area.
    pub(crate) fn splat_gaussian(
        &mut self,
        points: &[NormPoint],
        counts: &[u32],
        weight: f32,
        sigma: f32,
    ) {
        let reach = (3.0 * sigma).ceil().max(1.0) as i64;
        let kernel: Vec<f32> = (-reach..=reach)
            .map(|d| (-(d * d) as f32 / (2.0 * sigma * sigma)).exp())
            .collect();
        let norm: f32 = kernel.iter().sum::<f32>().powi(2);
        let (width, height) = (self.width() as i64, self.height() as i64);
        let cells = self.cells_mut();
        for (idx, &point) in points.iter().enumerate() {
            let (col, row) = cell_of(point, width as u64, height as u64);
            let (col, row) = (col as i64, row as i64);
            let point_weight = weight * counts.get(idx).map_or(1.0, |&n| n as f32);
            for (dy, ky) in (-reach..=reach).zip(&kernel) {
                let y = row + dy;
                if !(0..height).contains(&y) {
                    continue;
                }
                let row_weight = point_weight * ky / norm;
                for (dx, kx) in (-reach..=reach).zip(&kernel) {
                    let x = col + dx;
                    if (0..width).contains(&x) {
                        cells[(y * width + x) as usize] += row_weight * kx;
                    }
                }
            }
        }
    }

    /// Adds `factor` times `other` (of the same size) into this grid.
    pub(crate) fn add_scaled(&mut self, other: &Grid, factor: f32) {
        self.cells_mut()
            .par_chunks_mut(PAR_CHUNK)
            .zip(other.cells().par_chunks(PAR_CHUNK))
            .for_each(|(mine, theirs)| {
                for (cell, add) in mine.iter_mut().zip(theirs) {
                    *cell += factor * add;
                }
            });
    }

    /// Sum of all cells: the mass, which smoothing must (nearly) preserve.
    pub fn total(&self) -> f64 {
        self.cells.iter().map(|&cell| f64::from(cell)).sum()
    }

    /// Largest cell value.
    pub(crate) fn max(&self) -> f32 {
        self.cells()
            .par_chunks(PAR_CHUNK)
            .map(|chunk| chunk.iter().copied().fold(0.0, f32::max))
            .reduce(|| 0.0, f32::max)
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
        self.cells.as_slice().unwrap_or(&[]) // ok: built row-major, always standard layout
    }

    /// The cells in row-major order, mutable.
    pub fn cells_mut(&mut self) -> &mut [f32] {
        // Built row-major from a Vec, and nothing here transposes it.
        self.cells.as_slice_mut().unwrap_or(&mut [])
    }
}

impl Drop for Grid {
    fn drop(&mut self) {
        let (cells, _) = std::mem::take(&mut self.cells).into_raw_vec_and_offset();
        scratch::recycle_floats(cells);
    }
}

/// The cell of a point on a `width` x `height` grid.
fn cell_of([u, v]: NormPoint, width: u64, height: u64) -> (u64, u64) {
    (
        ((2 * u64::from(u) + 1) * width) >> 17,
        ((2 * u64::from(v) + 1) * height) >> 17,
    )
}

/// Accumulates the points that fall in rows `first_row ..` of a band of `cells`.
fn accumulate_band(
    cells: &mut [f32],
    points: &[NormPoint],
    counts: &[u32],
    weight: f32,
    width: usize,
    height: usize,
    first_row: usize,
) {
    let band_rows = cells.len() / width.max(1);
    let (width64, height64) = (width as u64, height as u64);
    if counts.is_empty() {
        // The usual case, on its own: no index to keep and no count to look up, which is
        // a quarter of the loop's instructions.
        for &point in points {
            let (col, row) = cell_of(point, width64, height64);
            let band_row = (row as usize).wrapping_sub(first_row);
            if band_row < band_rows {
                if let Some(cell) = cells.get_mut(band_row * width + col as usize) {
                    *cell += weight;
                }
            }
        }
        return;
    }
    for (idx, &point) in points.iter().enumerate() {
        let (col, row) = cell_of(point, width64, height64);
        // `wrapping_sub` turns rows above the band into huge values, so one comparison
        // keeps both ends; col < width holds by construction (u < 65536).
        let band_row = (row as usize).wrapping_sub(first_row);
        if band_row < band_rows {
            if let Some(cell) = cells.get_mut(band_row * width + col as usize) {
                // Points past the end of `counts` weigh `weight`, as with none.
                *cell += counts.get(idx).map_or(weight, |&n| weight * n as f32);
            }
        }
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
    fn counted_points_accumulate_alike_on_every_path() {
        let points: Vec<NormPoint> = (0..200_000u64)
            .map(|idx| [(idx * 7919 % 65536) as u16, (idx * 104_729 % 65536) as u16])
            .collect();
        let counts: Vec<u32> = (0..points.len() as u32).map(|idx| idx % 5).collect();
        let expected: f64 = counts.iter().map(|&n| f64::from(n)).sum();
        // 58,000 cells take the halves, 700,000 the bands, one thread the plain loop.
        for (width, height) in [(320, 181), (1000, 700)] {
            let mut serial = Grid::new(width, height);
            accumulate_band(
                serial.cells_mut(),
                &points,
                &counts,
                1.0,
                width as usize,
                height as usize,
                0,
            );
            assert_eq!(serial.total(), expected);
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(2)
                .build()
                .unwrap();
            let mut parallel = Grid::new(width, height);
            pool.install(|| parallel.accumulate_counted(&points, &counts, 1.0));
            assert!(parallel.cells() == serial.cells(), "{width}x{height}");
        }
    }

    #[test]
    fn parallel_accumulation_matches_one_thread() {
        let points: Vec<NormPoint> = (0..300_000u64)
            .map(|idx| [(idx * 7919 % 65536) as u16, (idx * 104_729 % 65536) as u16])
            .collect();
        // 58,000 cells take the halves, 700,000 the bands.
        for (width, height) in [(320, 181), (1000, 700)] {
            let mut serial = Grid::new(width, height);
            accumulate_band(
                serial.cells_mut(),
                &points,
                &[],
                1.0,
                width as usize,
                height as usize,
                0,
            );
            for n_threads in [2, 3] {
                let pool = rayon::ThreadPoolBuilder::new()
                    .num_threads(n_threads)
                    .build()
                    .unwrap();
                let mut parallel = Grid::new(width, height);
                pool.install(|| parallel.accumulate(&points, 1.0));
                assert!(
                    parallel.cells() == serial.cells(),
                    "{width}x{height} on {n_threads} threads"
                );
                assert_eq!(parallel.total(), 300_000.0);
            }
        }
    }

    #[test]
    fn splatted_gaussians_keep_their_mass_and_centre() {
        let mut grid = Grid::new(200, 100);
        grid.splat_gaussian(&[[32768, 32768]], &[], 10.0, 4.0);
        assert!((grid.total() - 10.0).abs() < 1e-3, "{}", grid.total());
        assert_eq!(grid.argmax(), (100, 50));
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
