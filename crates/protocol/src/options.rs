//! How a heatmap should look: the choices a page (or the renderer's flags) can make.
//!
//! Every field of [`RenderOptions`] is optional; what a page leaves out, the renderer
//! fills from its own flags. The enums are the vocabulary both sides share, so they live
//! here; the renderer maps them to colour tables and kernels.

use serde::{Deserialize, Serialize};

use crate::error::{Error, ErrorCode};

/// Smallest and largest smoothing bandwidth accepted, in output pixels.
pub const BANDWIDTH_RANGE: std::ops::RangeInclusive<f32> = 1.0..=200.0;

/// Smallest and largest [`RenderOptions::pixel_scale`]: up to four times the renderer's
/// image size along each axis (the renderer's `--max-image-pixels` may bound it further).
pub const PIXEL_SCALE_RANGE: std::ops::RangeInclusive<f32> = 1.0..=4.0;

/// A page's choices for one render; `None` means "the renderer's default".
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct RenderOptions {
    /// Which events to show.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<HeatKind>,
    /// The colour map.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub colormap: Option<Colormap>,
    /// How density maps to colour.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scale: Option<Scale>,
    /// What the PNG looks like.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<OutputMode>,
    /// Gaussian standard deviation in output pixels (1 to 200), before `pixel_scale`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bandwidth: Option<f32>,
    /// Renders this many times the renderer's image width and height (1 to 4), with the
    /// bandwidth and text scaled to match: 2 turns 1920x1080 into a sharper 3840x2160 of
    /// the same picture, for high-density screens and print.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pixel_scale: Option<f32>,
}

impl RenderOptions {
    /// Checks the numeric fields.
    ///
    /// # Errors
    /// [`ErrorCode::OutOfRange`] for a bandwidth outside [`BANDWIDTH_RANGE`] or a pixel
    /// scale outside [`PIXEL_SCALE_RANGE`] (either one not finite).
    pub fn validate(&self) -> Result<(), Error> {
        match (self.bandwidth, self.pixel_scale) {
            (Some(bandwidth), _) if !BANDWIDTH_RANGE.contains(&bandwidth) => Err(Error::new(
                ErrorCode::OutOfRange,
                format!(
                    "bandwidth {bandwidth} is outside {}..={} pixels",
                    BANDWIDTH_RANGE.start(),
                    BANDWIDTH_RANGE.end()
                ),
            )),
            (_, Some(pixel_scale)) if !PIXEL_SCALE_RANGE.contains(&pixel_scale) => Err(Error::new(
                ErrorCode::OutOfRange,
                format!(
                    "pixel_scale {pixel_scale} is outside {}..={}",
                    PIXEL_SCALE_RANGE.start(),
                    PIXEL_SCALE_RANGE.end()
                ),
            )),
            _ => Ok(()),
        }
    }
}

/// Declares a wire enum with its names, `FromStr` (for flags) and `Display`.
macro_rules! wire_enum {
    ($(#[$meta:meta])* $name:ident { $($(#[$vmeta:meta])* $variant:ident = $text:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
        #[serde(rename_all = "snake_case")]
        pub enum $name {
            $($(#[$vmeta])* $variant),+
        }

        impl $name {
            /// Every value, in the order the page lists them.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The value as written on the wire and on the command line.
            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text),+
                }
            }
        }

        impl std::str::FromStr for $name {
            type Err = String;

            fn from_str(text: &str) -> Result<Self, Self::Err> {
                $name::ALL
                    .iter()
                    .copied()
                    .find(|value| value.as_str() == text)
                    .ok_or_else(|| {
                        let names: Vec<&str> = $name::ALL.iter().map(|value| value.as_str()).collect();
                        format!("{text:?} is not one of: {}", names.join(", "))
                    })
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

wire_enum! {
    /// Which recorded events a heatmap shows.
    HeatKind {
        /// Pointer movement: where attention went.
        Moves = "moves",
        /// Clicks only, drawn sharper: where people acted.
        Clicks = "clicks",
        /// Both, clicks sharper and stronger on top of movement.
        Both = "both",
    }
}

wire_enum! {
    /// Colour maps.
    Colormap {
        /// The classic blue-cyan-yellow-red (matplotlib's `jet`), the original recorder's look.
        Jet = "jet",
        /// Black-red-yellow-white, like a hot iron.
        Hot = "hot",
        /// Perceptually uniform blue-green-yellow (plotters' viridis).
        Viridis = "viridis",
        /// Perceptually uniform black-purple-orange-yellow.
        Inferno = "inferno",
        /// Google's improved rainbow: jet's contrast without its false edges.
        Turbo = "turbo",
    }
}

wire_enum! {
    /// How density maps to intensity.
    Scale {
        /// Proportional: faithful, but a few hot spots wash out the rest.
        Linear = "linear",
        /// Square root: paths stay visible beside dwell spots.
        Sqrt = "sqrt",
        /// Logarithmic: even single passes show.
        Log = "log",
    }
}

wire_enum! {
    /// What the PNG looks like.
    OutputMode {
        /// Heat on a plain white background, with legend and caption.
        Image = "image",
        /// Heat on transparency (RGBA), to lay over the page itself.
        Overlay = "overlay",
        /// Heat over the screenshot given to the renderer with `--background`.
        Background = "background",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_parse_back() {
        for colormap in Colormap::ALL {
            assert_eq!(colormap.as_str().parse::<Colormap>().unwrap(), *colormap);
        }
        let err = "rainbow".parse::<Colormap>().unwrap_err();
        assert!(err.contains("jet, hot, viridis, inferno, turbo"), "{err}");
    }

    #[test]
    fn bandwidth_is_bounded() {
        let options = RenderOptions {
            bandwidth: Some(0.0),
            ..RenderOptions::default()
        };
        assert_eq!(options.validate().unwrap_err().code, ErrorCode::OutOfRange);
        let options = RenderOptions {
            bandwidth: Some(f32::NAN),
            ..RenderOptions::default()
        };
        assert!(options.validate().is_err());
    }
}
