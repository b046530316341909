//! Fitting a heatmap's colours into a PNG palette, with a known largest error.
//!
//! A colour-mapped heatmap is one curve through colour space: the density, quantised to a
//! few thousand steps, picks a colour from a table. Blending the colour map over white (or
//! fading its alpha) makes 400–700 distinct colours along that curve, more than a PNG
//! palette's 256, so the steps are grouped into runs of neighbouring steps whose colours
//! stay within a tolerance of the run's middle colour, and the smallest tolerance that fits
//! the budget is chosen. Each image pixel then costs one byte instead of three or four,
//! which is what makes the colour and encode stages cheap.

/// Steps grouped into palette entries.
#[derive(Debug, Clone)]
pub struct StepPalette {
    /// The entries, RGBA, in step order: the index grows with the density, so PNG's row
    /// filters predict indices as well as they predict colours.
    pub colours: Vec<[u8; 4]>,
    /// Palette index of each step.
    pub index_of_step: Vec<u8>,
    /// Largest difference, in any channel, between a step's own colour and its entry's.
    pub tolerance: u8,
}

/// Groups `colours_by_step` (one colour per step, in step order) into at most `budget`
/// entries with the smallest tolerance that fits. A budget outside 1 to 256 (the most a PNG
/// palette holds) is taken as the nearest of those.
pub fn fit(colours_by_step: &[[u8; 4]], budget: usize) -> StepPalette {
    let budget = budget.clamp(1, 256);
    // A tolerance of 128 puts every colour within reach of a single middle colour, so the
    // search always ends with a fitting tolerance.
    let (mut low, mut high) = (0u8, 128u8);
    while low < high {
        let middle = low + (high - low) / 2;
        if runs(colours_by_step, middle).len() <= budget {
            high = middle;
        } else {
            low = middle + 1;
        }
    }
    let mut colours = Vec::new();
    let mut index_of_step = Vec::with_capacity(colours_by_step.len());
    for (start, end) in runs(colours_by_step, low) {
        let (min, max) = bounds(&colours_by_step[start..end]);
        let index = colours.len() as u8; // ok: at most `budget` ≤ 256 runs, so ≤ 255
        colours.push(std::array::from_fn(|channel| {
            ((u16::from(min[channel]) + u16::from(max[channel])) / 2) as u8
        }));
        index_of_step.extend(std::iter::repeat_n(index, end - start));
    }
    StepPalette {
        colours,
        index_of_step,
        tolerance: low,
    }
}

/// The `[start, end)` step ranges whose colours span at most `2 * tolerance` per channel.
///
/// The first run holds only the first step's exact colour: where nothing happened the
/// image must be exactly white (or exactly transparent), not a tolerance away from it.
fn runs(colours_by_step: &[[u8; 4]], tolerance: u8) -> Vec<(usize, usize)> {
    let mut runs = Vec::new();
    let mut start = 0;
    while start < colours_by_step.len() {
        let spread = if start == 0 {
            0
        } else {
            2 * u16::from(tolerance)
        };
        let (mut min, mut max) = (colours_by_step[start], colours_by_step[start]);
        let mut end = start + 1;
        while let Some(colour) = colours_by_step.get(end) {
            let fits = (0..4).all(|channel| {
                let low = min[channel].min(colour[channel]);
                let high = max[channel].max(colour[channel]);
                u16::from(high - low) <= spread
            });
            if !fits {
                break;
            }
            for channel in 0..4 {
                min[channel] = min[channel].min(colour[channel]);
                max[channel] = max[channel].max(colour[channel]);
            }
            end += 1;
        }
        runs.push((start, end));
        start = end;
    }
    runs
}

/// Per-channel smallest and largest values of `colours`.
fn bounds(colours: &[[u8; 4]]) -> ([u8; 4], [u8; 4]) {
    let mut min = [u8::MAX; 4];
    let mut max = [0; 4];
    for colour in colours {
        for channel in 0..4 {
            min[channel] = min[channel].min(colour[channel]);
            max[channel] = max[channel].max(colour[channel]);
        }
    }
    (min, max)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn few_colours_are_kept_exactly() {
        let steps = [[1, 2, 3, 255], [1, 2, 3, 255], [9, 9, 9, 255], [0, 0, 0, 0]];
        let palette = fit(&steps, 256);
        assert_eq!(palette.tolerance, 0);
        assert_eq!(palette.colours.len(), 3);
        assert_eq!(palette.index_of_step, [0, 0, 1, 2]);
    }

    #[test]
    fn a_long_ramp_fits_the_budget_within_the_tolerance() {
        let steps: Vec<[u8; 4]> = (0..4096u32)
            .map(|step| {
                let value = (step * 255 / 4095) as u8;
                [value, 255 - value, value / 2, 255]
            })
            .collect();
        let palette = fit(&steps, 100);
        assert!(palette.colours.len() <= 100);
        assert_eq!(
            palette.colours[0], steps[0],
            "the first step is kept exactly"
        );
        assert!(palette.tolerance > 0);
        for (step, colour) in steps.iter().enumerate() {
            let entry = palette.colours[usize::from(palette.index_of_step[step])];
            for channel in 0..4 {
                assert!(colour[channel].abs_diff(entry[channel]) <= palette.tolerance);
            }
        }
        assert!(palette
            .index_of_step
            .windows(2)
            .all(|pair| pair[0] <= pair[1]));
    }
}
