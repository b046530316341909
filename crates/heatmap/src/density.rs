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

/// How many steps a density value is quantised to before it is coloured: fine enough that
/// neighbouring steps differ by less than one colour-map entry on any scale.
pub(crate) const COLOUR_STEPS: usize = 4096;

/// Per-thread buffers for [`Density::colour_row_into`], reused from row to row.
#[derive(Debug, Default)]
pub(crate) struct RowScratch {
    /// The two source rows blended, with the edge columns repeated at both ends.
    blended: Vec<f32>,
    /// Steps of the even image columns (all columns at full resolution); `i32` because
    /// that is what the processor converts floats to in vectors.
    evens: Vec<i32>,
    /// Steps of the odd image columns.
    odds: Vec<i32>,
}

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
        let (row0, row1, ty) = self.source_rows(y);
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

    /// Fills `out` (one byte per image column) with image row `y` coloured through `table`:
    /// the byte for a pixel is `table[min(floor(value * to_step), table.len() - 1)]`, where
    /// `value` is exactly what [`Density::row_into`] gives.
    ///
    /// This is the colour stage's inner loop, written for the compiler to vectorise: the
    /// two source rows are blended first (no dependency from one column to the next), the
    /// even and the odd image columns are quantised in separate runs (interleaved stores
    /// would keep the loop scalar), and only the table lookup, which is a gather, is left
    /// one pixel at a time. `scratch` is reused between rows.
    pub(crate) fn colour_row_into(
        &self,
        y: usize,
        to_step: f32,
        table: &[u8; COLOUR_STEPS],
        scratch: &mut RowScratch,
        out: &mut [u8],
    ) {
        let last = (COLOUR_STEPS - 1) as f32;
        // Clamping then flooring equals casting (which saturates) then taking the last
        // step for anything above it, NaN and the blur's slightly negative roundings
        // included (both give 0).
        let quantise = move |value: f32| floor_small((value * to_step).max(0.0).min(last));
        // Steps are from 0 to below `COLOUR_STEPS` (a power of two), so the mask changes
        // nothing and lets the compiler drop the bounds check.
        let colour = |step: i32| table[step as usize & (COLOUR_STEPS - 1)];
        let cells = self.grid.cells();
        let grid_width = self.grid.width();
        if self.factor == 1 {
            let row = &cells[y * grid_width..(y + 1) * grid_width];
            scratch.evens.resize(row.len(), 0);
            let steps = &mut scratch.evens[..row.len()];
            for col in 0..row.len() {
                steps[col] = quantise(row[col]);
            }
            for (byte, &step) in out.iter_mut().zip(&scratch.evens) {
                *byte = colour(step);
            }
            return;
        }
        let per_pixel = self.per_pixel();
        let (row0, row1, ty) = self.source_rows(y);
        let upper = &cells[row0 * grid_width..(row0 + 1) * grid_width];
        let lower = &cells[row1 * grid_width..(row1 + 1) * grid_width];
        // `blended[col + 1]` is source column `col`; both ends repeat the edge column, as
        // `row_into`'s `previous` and `next` do.
        let blended = &mut scratch.blended;
        blended.clear();
        blended.push(0.0);
        blended.extend(
            upper
                .iter()
                .zip(lower)
                .map(|(&up, &down)| (up + (down - up) * ty) * per_pixel),
        );
        let (first, edge) = (blended[1], blended[grid_width]);
        blended[0] = first;
        blended.push(edge);
        // Image column `2 * col` lies a quarter cell before source column `col`, column
        // `2 * col + 1` a quarter cell after it; an odd image width ends with one more even
        // column than odd ones.
        let n_evens = out.len().div_ceil(2).min(grid_width);
        let n_odds = (out.len() / 2).min(grid_width);
        scratch.evens.resize(n_evens, 0);
        scratch.odds.resize(n_odds, 0);
        let before = &blended[..n_evens];
        let at = &blended[1..n_evens + 1];
        let evens = &mut scratch.evens[..n_evens];
        for col in 0..n_evens {
            let (previous, current) = (before[col], at[col]);
            evens[col] = quantise(previous + (current - previous) * 0.75);
        }
        let at = &blended[1..n_odds + 1];
        let after = &blended[2..n_odds + 2];
        let odds = &mut scratch.odds[..n_odds];
        for col in 0..n_odds {
            let (current, next) = (at[col], after[col]);
            odds[col] = quantise(current + (next - current) * 0.25);
        }
        // Iterators over slices, not `&mut` iterators, and cut to one length: the zip
        // then keeps one counter and the loop is the lookups alone.
        let n_pairs = n_odds.min(out.len() / 2);
        let (whole, last) = out.split_at_mut(out.len() / 2 * 2);
        for ((pair, &even), &odd) in whole[..2 * n_pairs]
            .chunks_exact_mut(2)
            .zip(&scratch.evens[..n_pairs])
            .zip(&scratch.odds[..n_pairs])
        {
            pair.copy_from_slice(&[colour(even), colour(odd)]);
        }
        if let (Some(byte), Some(&even)) = (last.first_mut(), scratch.evens.get(n_odds)) {
            *byte = colour(even);
        }
    }

    /// The two source rows image row `y` blends at half resolution, and the weight of the
    /// second.
    fn source_rows(&self, y: usize) -> (usize, usize, f32) {
        let last_row = self.grid.height() - 1;
        let row = y / 2;
        if y.is_multiple_of(2) {
            (
                row.saturating_sub(1),
                row,
                if row == 0 { 1.0 } else { 0.75 },
            )
        } else {
            (row, (row + 1).min(last_row), 0.25)
        }
    }

    /// The value at image pixel `(x, y)`.
    pub fn sample(&self, x: usize, y: usize) -> f32 {
        let mut row = vec![0.0; self.width];
        self.row_into(y.min(self.height - 1), &mut row);
        row[x.min(self.width - 1)]
    }
}

/// `value as i32` for `value` from 0 to 2^22, in operations the compiler vectorises.
///
/// A float-to-integer cast in Rust saturates, and the compiler converts saturating casts
/// one at a time. Adding 2^23 instead leaves the nearest integer in the mantissa's low
/// bits; one exact comparison turns rounding into flooring.
fn floor_small(value: f32) -> i32 {
    const MAGIC: f32 = 8_388_608.0;
    let rounded = value + MAGIC;
    let nearest = rounded.to_bits() as i32 - MAGIC.to_bits() as i32;
    nearest - i32::from(rounded - MAGIC > value)
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
    fn floor_small_equals_the_cast_for_step_values() {
        // Every 61st float from 0 to 4096, and the floats at and next to every integer and
        // half integer there (where rounding and flooring part).
        let mut value = 0.0f32;
        while value <= 4096.0 {
            assert_eq!(floor_small(value), value as i32, "{value}");
            value = f32::from_bits(value.to_bits() + 61);
        }
        for half in 0..=8192u32 {
            let exact = half as f32 / 2.0;
            for value in [exact.next_down(), exact, exact.next_up()] {
                let value = value.max(0.0);
                assert_eq!(floor_small(value), value as i32, "{value}");
            }
        }
    }

    #[test]
    fn coloured_rows_equal_the_upsampled_values_looked_up() {
        let moves = pointer_paths(20_000, 5);
        let input = RenderInput {
            moves: &moves,
            clicks: &[],
            move_counts: &[],
            click_counts: &[],
            duration_ms: 0,
            started: "",
        };
        // Each step its own byte (modulo 256), so a step off by one shows.
        let table: [u8; COLOUR_STEPS] = std::array::from_fn(|step| (step % 251) as u8);
        for (width, height, bandwidth) in [(130, 67, 12.0), (131, 68, 12.0), (97, 41, 3.0)] {
            let settings = RenderSettings {
                width,
                height,
                bandwidth,
                ..RenderSettings::default()
            };
            let density = density(&input, &settings, &mut StageTimings::default());
            let to_step = 4095.0 / density.max();
            let (mut values, mut got) = (vec![0.0; width as usize], vec![0; width as usize]);
            let mut scratch = RowScratch::default();
            let mut highest = 0;
            for y in 0..height as usize {
                density.row_into(y, &mut values);
                density.colour_row_into(y, to_step, &table, &mut scratch, &mut got);
                let steps: Vec<usize> = values
                    .iter()
                    .map(|&value| ((value * to_step) as usize).min(4095))
                    .collect();
                let want: Vec<u8> = steps.iter().map(|&step| table[step]).collect();
                assert_eq!(got, want, "{width}x{height}, row {y}");
                highest = highest.max(*steps.iter().max().unwrap());
            }
            assert!(
                highest > 4000,
                "{width}x{height}: the peak reached step {highest}"
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
