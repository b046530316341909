//! Colour tables, intensity scales and the alpha ramp: density in, colour and opacity out.
//!
//! Every map is sampled once into a 256-entry table; the hot loop only indexes it.

use plotters::style::colors::colormaps::{ColorMap, DerivedColorMap, ViridisRGB};
use plotters::style::RGBColor;
use protocol::{Colormap, Scale};

/// A 256-entry colour table, indexed by scaled intensity.
pub type Lut = [[u8; 3]; 256];

/// The colour table of a map.
pub fn lut(colormap: Colormap) -> Lut {
    let mut lut = [[0u8; 3]; 256];
    for (idx, entry) in lut.iter_mut().enumerate() {
        let position = idx as f32 / 255.0;
        let RGBColor(r, g, b) = match colormap {
            Colormap::Viridis => ViridisRGB.get_color(position),
            Colormap::Turbo => turbo(position),
            Colormap::Jet => derived(JET).get_color(position),
            Colormap::Hot => derived(HOT).get_color(position),
            Colormap::Inferno => derived(INFERNO).get_color(position),
        };
        *entry = [r, g, b];
    }
    lut
}

/// matplotlib's `jet`, as evenly spaced stops.
const JET: &[(u8, u8, u8)] = &[
    (0, 0, 143),
    (0, 0, 255),
    (0, 128, 255),
    (0, 255, 255),
    (128, 255, 128),
    (255, 255, 0),
    (255, 128, 0),
    (255, 0, 0),
    (128, 0, 0),
];

/// matplotlib's `hot`, as evenly spaced stops.
const HOT: &[(u8, u8, u8)] = &[(10, 0, 0), (255, 0, 0), (255, 255, 0), (255, 255, 255)];

/// matplotlib's `inferno`, sampled every tenth.
const INFERNO: &[(u8, u8, u8)] = &[
    (0, 0, 4),
    (22, 11, 57),
    (66, 10, 104),
    (106, 23, 110),
    (147, 38, 103),
    (188, 55, 84),
    (221, 81, 58),
    (243, 118, 27),
    (252, 165, 10),
    (246, 215, 70),
    (252, 255, 164),
];

fn derived(stops: &[(u8, u8, u8)]) -> DerivedColorMap<RGBColor> {
    let colors: Vec<RGBColor> = stops.iter().map(|&(r, g, b)| RGBColor(r, g, b)).collect();
    DerivedColorMap::new(&colors)
}

/// Google's Turbo, by its published polynomial approximation.
fn turbo(t: f32) -> RGBColor {
    let t = f64::from(t.clamp(0.0, 1.0));
    let poly = |c: [f64; 6]| c[0] + t * (c[1] + t * (c[2] + t * (c[3] + t * (c[4] + t * c[5]))));
    let channel = |value: f64| (value.clamp(0.0, 1.0) * 255.0).round() as u8;
    RGBColor(
        channel(poly([
            0.135_721_38,
            4.615_392_6,
            -42.660_322_58,
            132.131_082_34,
            -152.942_393_96,
            59.286_379_43,
        ])),
        channel(poly([
            0.091_402_61,
            2.194_188_39,
            4.842_966_58,
            -14.185_033_33,
            4.277_298_57,
            2.829_566_04,
        ])),
        channel(poly([
            0.106_673_3,
            12.641_946_08,
            -60.582_048_36,
            110.362_767_71,
            -89.903_109_12,
            27.348_249_73,
        ])),
    )
}

/// Maps a density fraction in `[0, 1]` to an intensity in `[0, 1]`.
pub fn apply_scale(scale: Scale, fraction: f32) -> f32 {
    /// How many decades the log scale spans below the maximum.
    const LOG_RANGE: f32 = 1000.0;
    let fraction = fraction.clamp(0.0, 1.0);
    match scale {
        Scale::Linear => fraction,
        Scale::Sqrt => fraction.sqrt(),
        Scale::Log => (1.0 + LOG_RANGE * fraction).ln() / (1.0 + LOG_RANGE).ln(),
    }
}

/// Opacity for an intensity: low density fades to transparent so that the background (or
/// the page under an overlay) stays readable where little happened.
pub fn alpha_for(intensity: f32) -> f32 {
    const FADE_START: f32 = 0.02;
    const FULL_AT: f32 = 0.35;
    ((intensity - FADE_START) / (FULL_AT - FADE_START)).clamp(0.0, 1.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_run_from_their_cold_to_their_hot_end() {
        let jet = lut(Colormap::Jet);
        assert_eq!(jet[0], [0, 0, 143]);
        assert_eq!(jet[255], [128, 0, 0]);
        let viridis = lut(Colormap::Viridis);
        assert!(
            viridis[0][2] > viridis[0][1],
            "viridis starts purple-blue: {:?}",
            viridis[0]
        );
        assert!(
            viridis[255][0] > 200 && viridis[255][1] > 200,
            "viridis ends yellow: {:?}",
            viridis[255]
        );
        let turbo = lut(Colormap::Turbo);
        assert!(
            turbo[0].iter().all(|&channel| channel < 60),
            "turbo starts dark: {:?}",
            turbo[0]
        );
        assert!(
            turbo[128][1] > 200,
            "turbo is green-yellow in the middle: {:?}",
            turbo[128]
        );
        assert!(
            turbo[255][0] > 100 && turbo[255][2] < 30,
            "turbo ends dark red: {:?}",
            turbo[255]
        );
        assert_eq!(lut(Colormap::Hot)[255], [255, 255, 255]);
        assert_eq!(lut(Colormap::Inferno)[255], [252, 255, 164]);
    }

    #[test]
    fn scales_keep_the_ends_and_lift_the_middle() {
        for scale in Scale::ALL {
            assert_eq!(apply_scale(*scale, 0.0), 0.0);
            assert!((apply_scale(*scale, 1.0) - 1.0).abs() < 1e-6);
        }
        let small = 0.01;
        assert!(apply_scale(Scale::Log, small) > apply_scale(Scale::Sqrt, small));
        assert!(apply_scale(Scale::Sqrt, small) > apply_scale(Scale::Linear, small));
    }

    #[test]
    fn alpha_fades_low_density() {
        assert_eq!(alpha_for(0.0), 0.0);
        assert_eq!(alpha_for(1.0), 1.0);
        assert!(alpha_for(0.1) > 0.0 && alpha_for(0.1) < 1.0);
    }
}
