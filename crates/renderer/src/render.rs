//! From stored points to PNG bytes: accumulate, smooth, colour, annotate, encode.
//!
//! The whole pipeline is synchronous CPU work; callers run it on a blocking thread.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use plotters::prelude::*;
use plotters::style::FontStyle;

use crate::blur::gaussian_blur;
use crate::colormap::{alpha_for, Colormap, Scale};
use crate::error::Error;
use crate::grid::{Grid, NormPoint};

/// The bundled font: DejaVu Sans (licence in `assets/DejaVuSans-LICENSE.txt`), so text
/// renders on a machine with no fonts and no fontconfig.
const FONT: &[u8] = include_bytes!("../assets/DejaVuSans.ttf");

/// The family name under which [`FONT`] is registered with plotters.
const FONT_FAMILY: &str = "sans-serif";

/// How a heatmap is drawn.
#[derive(Debug, Clone, PartialEq)]
pub struct RenderSettings {
    /// Image width in pixels.
    pub width: u32,
    /// Image height in pixels.
    pub height: u32,
    /// Gaussian standard deviation in output pixels.
    pub bandwidth: f32,
    /// Colour map.
    pub colormap: Colormap,
    /// Intensity scale.
    pub scale: Scale,
    /// How much one click weighs against one move: clicks are rarer and mean more.
    pub click_weight: f32,
    /// Whether to draw the colour bar and caption.
    pub annotate: bool,
}

impl Default for RenderSettings {
    fn default() -> Self {
        RenderSettings {
            width: protocol::limits::DEFAULT_IMAGE_WIDTH,
            height: protocol::limits::DEFAULT_IMAGE_HEIGHT,
            bandwidth: 18.0,
            colormap: Colormap::default(),
            scale: Scale::default(),
            click_weight: 5.0,
            annotate: true,
        }
    }
}

/// What to draw: the points of one recording and what the caption says about them.
#[derive(Debug, Clone, Copy)]
pub struct RenderInput<'a> {
    /// Pointer positions.
    pub moves: &'a [NormPoint],
    /// Click positions.
    pub clicks: &'a [NormPoint],
    /// How long the recording lasted, in milliseconds.
    pub duration_ms: u32,
    /// When it started, as local time text for the caption.
    pub started: &'a str,
}

/// A finished image and where the time went.
#[derive(Debug, Clone)]
pub struct Rendered {
    /// The PNG file's bytes.
    pub png: Vec<u8>,
    /// Time per stage.
    pub timings: StageTimings,
}

/// Time spent in each stage of [`render_png`], for logs and benchmarks.
#[derive(Debug, Clone, Copy, Default)]
pub struct StageTimings {
    /// Points into the grid.
    pub accumulate: Duration,
    /// Gaussian smoothing.
    pub smooth: Duration,
    /// Density to colours, plus legend and caption.
    pub colour: Duration,
    /// PNG encoding.
    pub encode: Duration,
}

impl StageTimings {
    /// The sum of the stages.
    pub fn total(&self) -> Duration {
        self.accumulate + self.smooth + self.colour + self.encode
    }
}

/// Accumulates and smooths the points into a density grid at the image size.
pub fn density(
    input: &RenderInput<'_>,
    settings: &RenderSettings,
    timings: &mut StageTimings,
) -> Grid {
    let started = Instant::now();
    let mut grid = Grid::new(settings.width, settings.height);
    grid.accumulate(input.moves, 1.0);
    grid.accumulate(input.clicks, settings.click_weight);
    timings.accumulate = started.elapsed();
    let started = Instant::now();
    gaussian_blur(&mut grid, settings.bandwidth);
    timings.smooth = started.elapsed();
    grid
}

/// Renders the points as a PNG heatmap.
///
/// # Errors
/// [`Error::NoPoints`] when there is nothing to draw; [`Error::Draw`] or
/// [`Error::Encode`] if annotation or encoding fails.
pub fn render_png(input: &RenderInput<'_>, settings: &RenderSettings) -> Result<Rendered, Error> {
    if input.moves.is_empty() && input.clicks.is_empty() {
        return Err(Error::NoPoints);
    }
    let mut timings = StageTimings::default();
    let grid = density(input, settings, &mut timings);

    let started = Instant::now();
    let mut rgb = colourise(&grid, settings);
    if settings.annotate {
        annotate(&mut rgb, input, settings)?;
    }
    timings.colour = started.elapsed();

    let started = Instant::now();
    let png = encode_png(&rgb, settings.width, settings.height)?;
    timings.encode = started.elapsed();
    Ok(Rendered { png, timings })
}

/// Colours a density grid over a white background, as RGB bytes.
pub fn colourise(grid: &Grid, settings: &RenderSettings) -> Vec<u8> {
    /// Resolution of the precomputed density → colour table.
    const STEPS: usize = 4096;
    const BACKGROUND: [f32; 3] = [255.0, 255.0, 255.0];
    let lut = settings.colormap.lut();
    let table: Vec<[u8; 3]> = (0..STEPS)
        .map(|step| {
            let intensity = settings.scale.apply(step as f32 / (STEPS - 1) as f32);
            let alpha = alpha_for(intensity);
            let colour = lut[(intensity * 255.0).round() as usize];
            let mut blended = [0u8; 3];
            for channel in 0..3 {
                let value =
                    BACKGROUND[channel] * (1.0 - alpha) + f32::from(colour[channel]) * alpha;
                blended[channel] = value.round() as u8;
            }
            blended
        })
        .collect();
    let max = grid.max();
    let to_step = if max > 0.0 {
        (STEPS - 1) as f32 / max
    } else {
        0.0
    };
    let mut rgb = vec![0u8; grid.cells().len() * 3];
    for (pixel, &cell) in rgb.chunks_exact_mut(3).zip(grid.cells()) {
        let step = ((cell * to_step) as usize).min(STEPS - 1);
        pixel.copy_from_slice(&table[step]);
    }
    rgb
}

/// Registers the bundled font with plotters once per process.
fn ensure_font() -> Result<(), Error> {
    static REGISTERED: OnceLock<Result<(), String>> = OnceLock::new();
    REGISTERED
        .get_or_init(|| {
            plotters::style::register_font(FONT_FAMILY, FontStyle::Normal, FONT)
                .map_err(|_| "the bundled font cannot be parsed".to_owned())
        })
        .clone()
        .map_err(Error::Draw)
}

/// Draws the colour bar and the caption onto the RGB image.
fn annotate(
    rgb: &mut [u8],
    input: &RenderInput<'_>,
    settings: &RenderSettings,
) -> Result<(), Error> {
    let (width, height) = (settings.width, settings.height);
    if width < 480 || height < 240 {
        return Ok(());
    }
    ensure_font()?;
    let draw_err = |err: DrawingAreaErrorKind<_>| Error::Draw(err.to_string());
    let font_px = (height / 60).clamp(12, 36);
    let pad = font_px as i32 / 2;
    let line = font_px as i32 + pad;
    let text_style = TextStyle::from((FONT_FAMILY, font_px).into_font()).color(&BLACK);
    let panel = WHITE.mix(0.85).filled();
    let root = BitMapBackend::with_buffer(rgb, (width, height)).into_drawing_area();

    // Caption, bottom left.
    let n_points = input.moves.len() + input.clicks.len();
    let caption = format!(
        "{} points ({} moves, {} {}) · {} · started {}",
        group_thousands(n_points),
        group_thousands(input.moves.len()),
        group_thousands(input.clicks.len()),
        if input.clicks.len() == 1 {
            "click"
        } else {
            "clicks"
        },
        format_duration(input.duration_ms),
        input.started
    );
    let caption_width = (caption.chars().count() as i32 * font_px as i32 * 55) / 100;
    let bottom = height as i32 - pad;
    root.draw(&Rectangle::new(
        [
            (pad, bottom - line - pad),
            (pad * 3 + caption_width, bottom),
        ],
        panel,
    ))
    .map_err(draw_err)?;
    root.draw_text(&caption, &text_style, (pad * 2, bottom - line))
        .map_err(draw_err)?;

    // Colour bar, bottom right: the gradient, then "low" and "high" labels.
    let bar_width = (width as i32 / 6).max(160);
    let bar_height = font_px as i32;
    let right = width as i32 - pad;
    let left = right - bar_width - pad * 2;
    root.draw(&Rectangle::new(
        [(left, bottom - line * 2 - pad), (right, bottom)],
        panel,
    ))
    .map_err(draw_err)?;
    let lut = settings.colormap.lut();
    let bar_top = bottom - line - pad / 2 - bar_height;
    for offset in 0..bar_width {
        let [r, g, b] = lut[(offset * 255 / (bar_width - 1)) as usize];
        let x = left + pad + offset;
        root.draw(&Rectangle::new(
            [(x, bar_top), (x + 1, bar_top + bar_height)],
            RGBColor(r, g, b).filled(),
        ))
        .map_err(draw_err)?;
    }
    let scale_name = match settings.scale {
        Scale::Linear => "linear",
        Scale::Sqrt => "sqrt",
    };
    let label_y = bottom - line + pad / 2;
    root.draw_text("low", &text_style, (left + pad, label_y))
        .map_err(draw_err)?;
    let high = format!("high ({scale_name})");
    let high_width = (high.chars().count() as i32 * font_px as i32 * 55) / 100;
    root.draw_text(&high, &text_style, (right - pad - high_width, label_y))
        .map_err(draw_err)?;
    root.present().map_err(draw_err)?;
    Ok(())
}

/// Encodes RGB bytes as a PNG with fast compression: heatmaps are smooth, so even the
/// fast setting compresses them well, and time matters more than the last few percent.
pub fn encode_png(rgb: &[u8], width: u32, height: u32) -> Result<Vec<u8>, Error> {
    let mut png = Vec::with_capacity(rgb.len() / 8);
    let mut encoder = png::Encoder::new(&mut png, width, height);
    encoder.set_color(png::ColorType::Rgb);
    encoder.set_depth(png::BitDepth::Eight);
    encoder.set_compression(png::Compression::Fast);
    let mut writer = encoder.write_header()?;
    writer.write_image_data(rgb)?;
    writer.finish()?;
    Ok(png)
}

/// `1234567` → `1,234,567`.
fn group_thousands(n: usize) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (idx, digit) in digits.chars().enumerate() {
        if idx > 0 && (digits.len() - idx).is_multiple_of(3) {
            out.push(',');
        }
        out.push(digit);
    }
    out
}

/// `72_500` → `1 min 12 s`.
fn format_duration(ms: u32) -> String {
    let seconds = ms / 1000;
    match seconds {
        0 => format!("{ms} ms"),
        1..=59 => format!("{seconds} s"),
        _ => format!("{} min {} s", seconds / 60, seconds % 60),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_read_well() {
        assert_eq!(group_thousands(0), "0");
        assert_eq!(group_thousands(999), "999");
        assert_eq!(group_thousands(1_234_567), "1,234,567");
        assert_eq!(format_duration(250), "250 ms");
        assert_eq!(format_duration(72_500), "1 min 12 s");
    }

    #[test]
    fn empty_input_is_refused() {
        let input = RenderInput {
            moves: &[],
            clicks: &[],
            duration_ms: 0,
            started: "",
        };
        assert!(matches!(
            render_png(&input, &RenderSettings::default()),
            Err(Error::NoPoints)
        ));
    }

    #[test]
    fn renders_a_png_of_the_requested_size_with_the_bundled_font() {
        let moves: Vec<NormPoint> = (0..500u16).map(|idx| [idx * 100, 30_000]).collect();
        let input = RenderInput {
            moves: &moves,
            clicks: &[[32768, 32768]],
            duration_ms: 4200,
            started: "12:00:00",
        };
        let rendered = render_png(&input, &RenderSettings::default()).unwrap();
        let decoder = png::Decoder::new(std::io::Cursor::new(&rendered.png));
        let reader = decoder.read_info().unwrap();
        assert_eq!((reader.info().width, reader.info().height), (1920, 1080));
    }
}
