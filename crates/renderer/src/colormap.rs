//! Colour maps and intensity scales: density in, colour and opacity out.

/// A 256-entry colour table, indexed by scaled intensity.
pub type Lut = [[u8; 3]; 256];

/// The colour maps the renderer offers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Colormap {
    /// The classic blue-cyan-yellow-red look of the original recorder (matplotlib's `jet`).
    #[default]
    Jet,
}

impl Colormap {
    /// The colour table for this map.
    pub fn lut(self) -> Lut {
        match self {
            Colormap::Jet => lut_from_stops(&[
                (0.0, [0, 0, 143]),
                (0.125, [0, 0, 255]),
                (0.375, [0, 255, 255]),
                (0.625, [255, 255, 0]),
                (0.875, [255, 0, 0]),
                (1.0, [128, 0, 0]),
            ]),
        }
    }
}

/// How density maps to intensity before colouring.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Scale {
    /// Proportional: faithful, but a few hot spots wash out the rest.
    Linear,
    /// Square root: the default, keeps paths visible beside dwell spots.
    #[default]
    Sqrt,
}

impl Scale {
    /// Maps a density fraction in `[0, 1]` to an intensity in `[0, 1]`.
    pub fn apply(self, fraction: f32) -> f32 {
        match self {
            Scale::Linear => fraction,
            Scale::Sqrt => fraction.sqrt(),
        }
    }
}

/// Opacity for an intensity: low density fades to transparent so that the background (or
/// the page under an overlay) stays readable where little happened.
pub fn alpha_for(intensity: f32) -> f32 {
    const FADE_START: f32 = 0.02;
    const FULL_AT: f32 = 0.35;
    ((intensity - FADE_START) / (FULL_AT - FADE_START)).clamp(0.0, 1.0)
}

/// Interpolates a table linearly between `(position, colour)` stops sorted by position.
fn lut_from_stops(stops: &[(f32, [u8; 3])]) -> Lut {
    let mut lut = [[0u8; 3]; 256];
    for (idx, entry) in lut.iter_mut().enumerate() {
        let position = idx as f32 / 255.0;
        let upper = stops
            .iter()
            .position(|(stop, _)| *stop >= position)
            .unwrap_or(stops.len() - 1)
            .max(1);
        let (p0, c0) = stops[upper - 1];
        let (p1, c1) = stops[upper];
        let t = if p1 > p0 {
            ((position - p0) / (p1 - p0)).clamp(0.0, 1.0)
        } else {
            0.0
        };
        for channel in 0..3 {
            let value =
                f32::from(c0[channel]) + t * (f32::from(c1[channel]) - f32::from(c0[channel]));
            entry[channel] = value.round() as u8;
        }
    }
    lut
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jet_runs_from_blue_to_red() {
        let lut = Colormap::Jet.lut();
        assert_eq!(lut[0], [0, 0, 143]);
        assert_eq!(lut[255], [128, 0, 0]);
        assert!(
            lut[128][1] > 200,
            "middle of jet is green-ish: {:?}",
            lut[128]
        );
    }

    #[test]
    fn alpha_fades_low_density() {
        assert_eq!(alpha_for(0.0), 0.0);
        assert_eq!(alpha_for(1.0), 1.0);
        assert!(alpha_for(0.1) > 0.0 && alpha_for(0.1) < 1.0);
    }
}
