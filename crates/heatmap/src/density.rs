//! Points to a smoothed density at the image size (or half of it, upsampled on use).
//!
//! With a bandwidth of several pixels the smoothed density has no detail finer than a few
//! pixels, so it is computed on a grid of half the image's width and height (a quarter
//! of the cells, for a quarter of the accumulation and blur work) and upsampled
//! bilinearly when coloured. A test holds the result within a few percent of the peak of
//! the full-resolution density.

use std::time::Instant;

use protocol::HeatKind;

use crate::blur::gaussian_blur;
use crate::grid::Grid;
use crate::render::{RenderInput, RenderSettings, StageTimings};

/// Clicks are smoothed with this fraction of the bandwidth: a click is a precise act, a
/// path is a vague one.
const CLICK_SHARPNESS: f32 = 0.5;

/// From this bandwidth (in output pixels) up, the density is computed at half resolution:
/// the half-resolution blur then still spans at least four cells.
const HALF_RESOLUTION_FROM: f32 = 8.0;

/// A smoothed density and how it maps onto the image.
#[derive(Debug)]
pub struct Density {
    /// The cells; `factor` image pixels per cell along each axis.
    pub grid: Grid,
    /// 1 (a cell per pixel) or 2 (half resolution).
    pub factor: usize,
    width: usize,
    height: usize,
}

impl Density {
    /// A density already at the image size, one cell per pixel.
    pub fn full(grid: Grid) -> Self {
        let (width, height) = (grid.width(), grid.height());
        Density {
            grid,
            factor: 1,
            width,
            height,
        }
    }
    /// The largest value, per image pixel.
    pub(crate) fn max(&self) -> f32 {
        self.grid.max() * self.per_pixel()
    }

    /// Converts a cell's mass to mass per image pixel (a cell covers `factor²` pixels).
    fn per_pixel(&self) -> f32 {
        1.0 / (self.factor * self.factor) as f32
    }

    /// Fills `values` (one per image column) with image row `y`, per image pixel.
    ///
    /// At half resolution, pixel `2i` lies a quarter cell before cell `i`'s centre and
    /// pixel `2i + 1` a quarter cell after it, so bilinear upsampling is two fixed blends:
    /// first between the two source rows, then between neighbouring columns.
    pub(crate) fn row_into(&self, y: usize, values: &mut [f32]) {
        let cells = self.grid.cells();
        let grid_width = self.grid.width();
        if self.factor == 1 {
            values.copy_from_slice(&cells[y * grid_width..(y + 1) * grid_width]);
            return;
        }
        let per_pixel = self.per_pixel();
        let last_row = self.grid.height() - 1;
        let (row0, row1, ty) = if y.is_multiple_of(2) {
            let row = y / 2;
            (
                row.saturating_sub(1),
                row,
                if row == 0 { 1.0 } else { 0.75 },
            )
        } else {
            let row = y / 2;
            (row, (row + 1).min(last_row), 0.25)
        };
        let upper = &cells[row0 * grid_width..(row0 + 1) * grid_width];
        let lower = &cells[row1 * grid_width..(row1 + 1) * grid_width];
        let blend = |col: usize| (upper[col] + (lower[col] - upper[col]) * ty) * per_pixel;
        let mut previous = blend(0);
        let mut current = previous;
        for col in 0..grid_width {
            let next = if col + 1 < grid_width {
                blend(col + 1)
            } else {
                current
            };
            if let Some(value) = values.get_mut(2 * col) {
                *value = previous + (current - previous) * 0.75;
            }
            if let Some(value) = values.get_mut(2 * col + 1) {
                *value = current + (next - current) * 0.25;
            }
            previous = current;
            current = next;
        }
    }

    /// The value at image pixel `(x, y)`.
    pub fn sample(&self, x: usize, y: usize) -> f32 {
        let mut row = vec![0.0; self.width];
        self.row_into(y.min(self.height - 1), &mut row);
        row[x.min(self.width - 1)]
    }
}

/// Accumulates and smooths the selected points.
///
/// Moves are accumulated and blurred with the bandwidth. Clicks are sharper (half the
/// bandwidth) and, beside moves, weigh [`RenderSettings::click_weight`] each; when they are
/// few they are splatted as exact Gaussians instead of blurring a second grid.
pub fn density(
    input: &RenderInput<'_>,
    settings: &RenderSettings,
    timings: &mut StageTimings,
) -> Density {
    let (width, height) = (settings.width as usize, settings.height as usize);
    let factor = if settings.bandwidth >= HALF_RESOLUTION_FROM && width >= 64 && height >= 64 {
        2
    } else {
        1
    };
    let grid_width = width.div_ceil(factor) as u32;
    let grid_height = height.div_ceil(factor) as u32;
    let bandwidth = settings.bandwidth / factor as f32;

    let mut grid = Grid::new(grid_width, grid_height);
    let show_moves = settings.kind != HeatKind::Clicks && !input.moves.is_empty();
    let show_clicks = settings.kind != HeatKind::Moves && !input.clicks.is_empty();
    if show_moves {
        let started = Instant::now();
        grid.accumulate_counted(input.moves, input.move_counts, 1.0);
        timings.accumulate += started.elapsed();
        let started = Instant::now();
        gaussian_blur(&mut grid, bandwidth);
        timings.smooth += started.elapsed();
    }
    if show_clicks {
        let weight = if settings.kind == HeatKind::Clicks {
            1.0
        } else {
            settings.click_weight
        };
        let sigma = (bandwidth * CLICK_SHARPNESS).max(1.0);
        let kernel_side = 2.0 * (3.0 * sigma).ceil() + 1.0;
        let splat_cost = input.clicks.len() as f64 * f64::from(kernel_side * kernel_side);
        let blur_cost = 8.0 * f64::from(grid_width) * f64::from(grid_height);
        let started = Instant::now();
        if splat_cost < blur_cost {
            grid.splat_gaussian(input.clicks, input.click_counts, weight, sigma);
            timings.smooth += started.elapsed();
        } else {
            let mut clicks = Grid::new(grid_width, grid_height);
            clicks.accumulate_counted(input.clicks, input.click_counts, 1.0);
            timings.accumulate += started.elapsed();
            let started = Instant::now();
            gaussian_blur(&mut clicks, sigma);
            grid.add_scaled(&clicks, weight);
            timings.smooth += started.elapsed();
        }
    }
    Density {
        grid,
        factor,
        width,
        height,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::synthetic::pointer_paths;

    #[test]
    fn half_resolution_matches_full_resolution() {
        let moves = pointer_paths(50_000, 3);
        let clicks = pointer_paths(40, 9);
        let input = RenderInput {
            moves: &moves,
            clicks: &clicks,
            move_counts: &[],
            click_counts: &[],
            duration_ms: 0,
            started: "",
        };
        let settings = RenderSettings {
            width: 640,
            height: 360,
            bandwidth: 12.0,
            ..RenderSettings::default()
        };
        let half = density(&input, &settings, &mut StageTimings::default());
        assert_eq!(half.factor, 2);
        // The same computation at full resolution, built directly.
        let mut full = Grid::new(640, 360);
        full.accumulate(&moves, 1.0);
        gaussian_blur(&mut full, 12.0);
        let mut full_clicks = Grid::new(640, 360);
        full_clicks.splat_gaussian(&clicks, &[], settings.click_weight, 12.0 * CLICK_SHARPNESS);
        full.add_scaled(&full_clicks, 1.0);
        let peak = full.max();
        let mut row = vec![0.0; 640];
        let mut worst = 0.0f32;
        for y in 0..360 {
            half.row_into(y, &mut row);
            for (x, value) in row.iter().enumerate() {
                worst = worst.max((value - full.get(x, y)).abs());
            }
        }
        assert!(
            worst / peak < 0.04,
            "half resolution is off by {worst} of a {peak} peak"
        );
    }

    #[test]
    fn a_counted_point_weighs_as_much_as_that_many_copies() {
        // Few distinct points with large counts, as a stored heatmap's cells are.
        let cells = pointer_paths(300, 5);
        let counts: Vec<u32> = (0..cells.len() as u32).map(|idx| 1 + idx % 7).collect();
        let copies: Vec<crate::grid::NormPoint> = cells
            .iter()
            .zip(&counts)
            .flat_map(|(point, &n)| std::iter::repeat_n(*point, n as usize))
            .collect();
        for kind in [HeatKind::Moves, HeatKind::Clicks] {
            let settings = RenderSettings {
                width: 640,
                height: 360,
                bandwidth: 12.0,
                kind,
                ..RenderSettings::default()
            };
            let counted_input = RenderInput {
                moves: &cells,
                clicks: &cells,
                move_counts: &counts,
                click_counts: &counts,
                duration_ms: 0,
                started: "",
            };
            let repeated_input = RenderInput {
                moves: &copies,
                clicks: &copies,
                move_counts: &[],
                click_counts: &[],
                duration_ms: 0,
                started: "",
            };
            let counted = density(&counted_input, &settings, &mut StageTimings::default());
            let repeated = density(&repeated_input, &settings, &mut StageTimings::default());
            assert_eq!(counted_input.n_shown(kind), copies.len());
            let (mut a, mut b) = (vec![0.0; 640], vec![0.0; 640]);
            let mut worst = 0.0f32;
            let mut peak = 0.0f32;
            for y in 0..360 {
                counted.row_into(y, &mut a);
                repeated.row_into(y, &mut b);
                for (x, y) in a.iter().zip(&b) {
                    worst = worst.max((x - y).abs());
                    peak = peak.max(*y);
                }
            }
            assert!(peak > 0.0);
            assert!(
                worst <= peak * 1e-5,
                "{kind:?}: counted differs by {worst} of a {peak} peak"
            );
        }
    }

    #[test]
    fn small_bandwidths_stay_at_full_resolution() {
        let moves = [[100u16, 100u16]];
        let input = RenderInput {
            moves: &moves,
            clicks: &[],
            move_counts: &[],
            click_counts: &[],
            duration_ms: 0,
            started: "",
        };
        let settings = RenderSettings {
            bandwidth: 4.0,
            ..RenderSettings::default()
        };
        assert_eq!(
            density(&input, &settings, &mut StageTimings::default()).factor,
            1
        );
    }
}
