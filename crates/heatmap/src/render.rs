//! From stored points to PNG bytes: accumulate, smooth, colour, annotate, encode.
//!
//! The whole pipeline is synchronous CPU work; callers run it on a blocking thread. The
//! heavy stages use rayon to spread over the machine's cores.

use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use plotters::prelude::*;
use plotters::style::FontStyle;
use protocol::{Colormap, HeatKind, OutputMode, RenderOptions, Scale};
use rayon::prelude::*;

use crate::background::Background;
use crate::colormap::{alpha_for, apply_scale, lut};
pub use crate::density::{density, Density};
use crate::encode::encode_png;
use crate::grid::NormPoint;
use crate::scratch;
use crate::Error;

/// The bundled font: DejaVu Sans (licence in `assets/DejaVuSans-LICENSE.txt`), so text
/// renders on a machine with no fonts and no fontconfig.
const FONT: &[u8] = include_bytes!("../assets/DejaVuSans.ttf");

/// The family name under which [`FONT`] is registered with plotters.
const FONT_FAMILY: &str = "sans-serif";

/// How a heatmap is drawn. The renderer's flags give the defaults; a page's
/// [`RenderOptions`] override them per image ([`RenderSettings::with_options`]).
#[derive(Debug, Clone)]
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
    /// Which events to show.
    pub kind: HeatKind,
    /// Plain image, transparent overlay, or heat over a screenshot.
    pub output: OutputMode,
    /// How much one click weighs against one move when both are shown.
    pub click_weight: f32,
    /// Whether to draw the colour bar and caption.
    pub annotate: bool,
    /// The screenshot for [`OutputMode::Background`], already fitted to the image size.
    pub background: Option<Arc<Background>>,
}

impl Default for RenderSettings {
    fn default() -> Self {
        RenderSettings {
            width: protocol::limits::DEFAULT_IMAGE_WIDTH,
            height: protocol::limits::DEFAULT_IMAGE_HEIGHT,
            bandwidth: 18.0,
            colormap: Colormap::Jet,
            scale: Scale::Sqrt,
            kind: HeatKind::Both,
            output: OutputMode::Image,
            click_weight: 20.0,
            annotate: true,
            background: None,
        }
    }
}

impl RenderSettings {
    /// These settings with a page's choices applied.
    pub fn with_options(&self, options: &RenderOptions) -> RenderSettings {
        RenderSettings {
            bandwidth: options.bandwidth.unwrap_or(self.bandwidth),
            colormap: options.colormap.unwrap_or(self.colormap),
            scale: options.scale.unwrap_or(self.scale),
            kind: options.kind.unwrap_or(self.kind),
            output: options.output.unwrap_or(self.output),
            ..self.clone()
        }
    }

    /// The settings as options with every field filled, to tell the page what it got.
    pub fn options(&self) -> RenderOptions {
        RenderOptions {
            kind: Some(self.kind),
            colormap: Some(self.colormap),
            scale: Some(self.scale),
            output: Some(self.output),
            bandwidth: Some(self.bandwidth),
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

impl RenderInput<'_> {
    /// The points the settings' kind selects.
    pub fn n_shown(&self, kind: HeatKind) -> usize {
        match kind {
            HeatKind::Moves => self.moves.len(),
            HeatKind::Clicks => self.clicks.len(),
            HeatKind::Both => self.moves.len() + self.clicks.len(),
        }
    }
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

/// Renders the points as a PNG heatmap.
///
/// # Errors
/// [`Error::NoPoints`] when the chosen kind has nothing to draw; [`Error::Draw`] or
/// [`Error::Encode`] if annotation or encoding fails; [`Error::NoBackground`] when the
/// background mode is asked for without a screenshot.
pub fn render_png(input: &RenderInput<'_>, settings: &RenderSettings) -> Result<Rendered, Error> {
    if input.n_shown(settings.kind) == 0 {
        return Err(Error::NoPoints(settings.kind));
    }
    if settings.output == OutputMode::Background && settings.background.is_none() {
        return Err(Error::NoBackground);
    }
    let mut timings = StageTimings::default();
    let grid = density(input, settings, &mut timings);

    let started = Instant::now();
    let mut pixels = colourise(&grid, settings);
    if settings.annotate {
        annotate(&mut pixels, input, settings)?;
    }
    timings.colour = started.elapsed();

    let started = Instant::now();
    let png = encode_png(&pixels, settings.width, settings.height);
    scratch::recycle_bytes(pixels.bytes);
    let png = png?;
    timings.encode = started.elapsed();
    Ok(Rendered { png, timings })
}

/// Image pixels with their channel count.
#[derive(Debug, Clone)]
pub struct Pixels {
    /// Row-major bytes.
    pub bytes: Vec<u8>,
    /// 3 (RGB) or 4 (RGBA, for overlays).
    pub channels: usize,
}

/// Colours a density: over white, over the background screenshot, or onto transparency,
/// depending on the output mode. Rows run in parallel; a half-resolution density is
/// upsampled row by row on the way.
pub fn colourise(density: &Density, settings: &RenderSettings) -> Pixels {
    /// Resolution of the precomputed density → colour table.
    const STEPS: usize = 4096;
    let lut = lut(settings.colormap);
    // Per step: the colour and its opacity, scale and alpha ramp applied once.
    let table: Vec<([f32; 3], f32)> = (0..STEPS)
        .map(|step| {
            let intensity = apply_scale(settings.scale, step as f32 / (STEPS - 1) as f32);
            let [r, g, b] = lut[(intensity * 255.0).round() as usize];
            (
                [f32::from(r), f32::from(g), f32::from(b)],
                alpha_for(intensity),
            )
        })
        .collect();
    let opaque: Vec<[u8; 3]> = table
        .iter()
        .map(|&(colour, alpha)| {
            colour.map(|value| (255.0 * (1.0 - alpha) + value * alpha).round() as u8)
        })
        .collect();
    let translucent: Vec<[u8; 4]> = table
        .iter()
        .map(|&([r, g, b], alpha)| [r as u8, g as u8, b as u8, (alpha * 255.0).round() as u8])
        .collect();
    let max = density.max();
    let to_step = if max > 0.0 {
        (STEPS - 1) as f32 / max
    } else {
        0.0
    };
    let step_of = |value: f32| ((value * to_step) as usize).min(STEPS - 1);

    let width = settings.width as usize;
    let background = match settings.output {
        OutputMode::Background => settings.background.as_deref(),
        _ => None,
    };
    let channels = if settings.output == OutputMode::Overlay {
        4
    } else {
        3
    };
    let mut bytes = scratch::bytes(width * settings.height as usize * channels, 0);
    bytes
        .par_chunks_mut(width * channels)
        .enumerate()
        .for_each_init(
            || vec![0.0f32; width],
            |values, (y, out)| {
                density.row_into(y, values);
                match (channels, background) {
                    (4, _) => {
                        for (pixel, &value) in out.chunks_exact_mut(4).zip(values.iter()) {
                            pixel.copy_from_slice(&translucent[step_of(value)]);
                        }
                    }
                    (_, Some(background)) => {
                        let under = &background.rgb()[y * width * 3..(y + 1) * width * 3];
                        for ((pixel, under), &value) in out
                            .chunks_exact_mut(3)
                            .zip(under.chunks_exact(3))
                            .zip(values.iter())
                        {
                            let (colour, alpha) = table[step_of(value)];
                            for channel in 0..3 {
                                pixel[channel] = (f32::from(under[channel]) * (1.0 - alpha)
                                    + colour[channel] * alpha)
                                    .round() as u8;
                            }
                        }
                    }
                    _ => {
                        for (pixel, &value) in out.chunks_exact_mut(3).zip(values.iter()) {
                            pixel.copy_from_slice(&opaque[step_of(value)]);
                        }
                    }
                }
            },
        );
    Pixels { bytes, channels }
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

/// A rectangle of the image, `[x0, y0, x1, y1)`.
type Rect = [i32; 4];

/// Draws the colour bar and the caption.
///
/// plotters draws into RGB buffers only, so an overlay's annotations are drawn onto a
/// white scratch image and their panels copied, opaque, into the RGBA pixels.
fn annotate(
    pixels: &mut Pixels,
    input: &RenderInput<'_>,
    settings: &RenderSettings,
) -> Result<(), Error> {
    if settings.width < 480 || settings.height < 240 {
        return Ok(());
    }
    if pixels.channels == 3 {
        annotate_rgb(&mut pixels.bytes, input, settings)?;
        return Ok(());
    }
    let mut white = scratch::bytes(settings.width as usize * settings.height as usize * 3, 255);
    let panels = annotate_rgb(&mut white, input, settings);
    let panels = match panels {
        Ok(panels) => panels,
        Err(err) => {
            scratch::recycle_bytes(white);
            return Err(err);
        }
    };
    let width = settings.width as usize;
    for [x0, y0, x1, y1] in panels {
        for y in y0.max(0) as usize..(y1.max(0) as usize).min(settings.height as usize) {
            for x in x0.max(0) as usize..(x1.max(0) as usize).min(width) {
                let (src, dst) = ((y * width + x) * 3, (y * width + x) * 4);
                pixels.bytes[dst..dst + 3].copy_from_slice(&white[src..src + 3]);
                pixels.bytes[dst + 3] = 235;
            }
        }
    }
    scratch::recycle_bytes(white);
    Ok(())
}

/// Draws the annotations onto RGB pixels and returns the panels it covered.
fn annotate_rgb(
    rgb: &mut [u8],
    input: &RenderInput<'_>,
    settings: &RenderSettings,
) -> Result<Vec<Rect>, Error> {
    ensure_font()?;
    let (width, height) = (settings.width, settings.height);
    let draw_err = |err: DrawingAreaErrorKind<_>| Error::Draw(err.to_string());
    let font_px = (height / 60).clamp(12, 36);
    let pad = font_px as i32 / 2;
    let line = font_px as i32 + pad;
    let text_style = TextStyle::from((FONT_FAMILY, font_px).into_font()).color(&BLACK);
    let text_width = |text: &str| (text.chars().count() as i32 * font_px as i32 * 55) / 100;
    let panel = WHITE.mix(0.85).filled();
    let root = BitMapBackend::with_buffer(rgb, (width, height)).into_drawing_area();
    let bottom = height as i32 - pad;

    // Caption, bottom left: what, how much, how long, when.
    let shown = match settings.kind {
        HeatKind::Moves => "moves",
        HeatKind::Clicks => "clicks",
        HeatKind::Both => "moves and clicks",
    };
    let caption = format!(
        "{} · {} moves, {} {} · {} · started {}",
        shown,
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
    let caption_panel = [
        pad,
        bottom - line - pad,
        pad * 3 + text_width(&caption),
        bottom,
    ];
    root.draw(&Rectangle::new(
        [
            (caption_panel[0], caption_panel[1]),
            (caption_panel[2], caption_panel[3]),
        ],
        panel,
    ))
    .map_err(draw_err)?;
    root.draw_text(&caption, &text_style, (pad * 2, bottom - line))
        .map_err(draw_err)?;

    // Colour bar, bottom right: the gradient, then "low" and "high (scale)".
    let bar_width = (width as i32 / 6).max(160);
    let right = width as i32 - pad;
    let left = right - bar_width - pad * 2;
    let bar_panel = [left, bottom - line * 2 - pad, right, bottom];
    root.draw(&Rectangle::new(
        [(bar_panel[0], bar_panel[1]), (bar_panel[2], bar_panel[3])],
        panel,
    ))
    .map_err(draw_err)?;
    let lut = lut(settings.colormap);
    let bar_top = bottom - line - pad / 2 - font_px as i32;
    for offset in 0..bar_width {
        let [r, g, b] = lut[(offset * 255 / (bar_width - 1)) as usize];
        let x = left + pad + offset;
        root.draw(&Rectangle::new(
            [(x, bar_top), (x + 1, bar_top + font_px as i32)],
            RGBColor(r, g, b).filled(),
        ))
        .map_err(draw_err)?;
    }
    let label_y = bottom - line + pad / 2;
    root.draw_text("low", &text_style, (left + pad, label_y))
        .map_err(draw_err)?;
    let high = format!("high ({} scale)", settings.scale);
    root.draw_text(
        &high,
        &text_style,
        (right - pad - text_width(&high), label_y),
    )
    .map_err(draw_err)?;
    root.present().map_err(draw_err)?;
    Ok(vec![caption_panel, bar_panel])
}

/// A small density frame for the live preview: `width` x `height` intensities, 0 to 255,
/// on a square-root scale, computed at that size (cheap enough to run twice a second on a
/// recording of any length).
pub fn preview_cells(
    input: &RenderInput<'_>,
    settings: &RenderSettings,
    width: u32,
    height: u32,
) -> Vec<u8> {
    let preview = RenderSettings {
        width,
        height,
        bandwidth: (settings.bandwidth * width as f32 / settings.width as f32).max(0.8),
        ..settings.clone()
    };
    let density = density(input, &preview, &mut StageTimings::default());
    let max = density.max();
    let scale = if max > 0.0 { 1.0 / max } else { 0.0 };
    let mut row = vec![0.0f32; width as usize];
    let mut cells = Vec::with_capacity(width as usize * height as usize);
    for y in 0..height as usize {
        density.row_into(y, &mut row);
        cells.extend(
            row.iter()
                .map(|&value| (apply_scale(Scale::Sqrt, value * scale) * 255.0).round() as u8),
        );
    }
    cells
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

    fn decode(png: &[u8]) -> (u32, u32, png::ColorType, Vec<u8>) {
        let mut reader = png::Decoder::new(std::io::Cursor::new(png))
            .read_info()
            .unwrap();
        let mut pixels = vec![0; reader.output_buffer_size().unwrap()];
        let info = reader.next_frame(&mut pixels).unwrap();
        (info.width, info.height, info.color_type, pixels)
    }

    fn sample_input<'a>(moves: &'a [NormPoint], clicks: &'a [NormPoint]) -> RenderInput<'a> {
        RenderInput {
            moves,
            clicks,
            duration_ms: 4200,
            started: "2026-11-29 12:00:00",
        }
    }

    #[test]
    fn numbers_read_well() {
        assert_eq!(group_thousands(0), "0");
        assert_eq!(group_thousands(999), "999");
        assert_eq!(group_thousands(1_234_567), "1,234,567");
        assert_eq!(format_duration(250), "250 ms");
        assert_eq!(format_duration(72_500), "1 min 12 s");
    }

    #[test]
    fn an_empty_selection_is_refused() {
        let clicks = [[100, 100]];
        let input = sample_input(&[], &clicks);
        let moves_only = RenderSettings {
            kind: HeatKind::Moves,
            ..RenderSettings::default()
        };
        assert!(matches!(
            render_png(&input, &moves_only),
            Err(Error::NoPoints(HeatKind::Moves))
        ));
        assert!(render_png(&input, &RenderSettings::default()).is_ok());
    }

    #[test]
    fn every_option_renders_an_image_of_the_requested_size() {
        let moves: Vec<NormPoint> = (0..500u16).map(|idx| [idx * 100, 30_000]).collect();
        let clicks = [[32768, 32768], [10_000, 50_000]];
        let input = sample_input(&moves, &clicks);
        let background = Arc::new(Background::solid(640, 360, [30, 60, 90]));
        for kind in HeatKind::ALL {
            for colormap in Colormap::ALL {
                for scale in Scale::ALL {
                    for output in OutputMode::ALL {
                        let settings = RenderSettings {
                            width: 640,
                            height: 360,
                            bandwidth: 6.0,
                            kind: *kind,
                            colormap: *colormap,
                            scale: *scale,
                            output: *output,
                            background: Some(background.clone()),
                            ..RenderSettings::default()
                        };
                        let rendered = render_png(&input, &settings).unwrap();
                        let (width, height, colour, _) = decode(&rendered.png);
                        assert_eq!(
                            (width, height),
                            (640, 360),
                            "{kind} {colormap} {scale} {output}"
                        );
                        let want = if *output == OutputMode::Overlay {
                            png::ColorType::Rgba
                        } else {
                            png::ColorType::Rgb
                        };
                        assert_eq!(colour, want);
                    }
                }
            }
        }
    }

    #[test]
    fn the_bundled_font_draws_the_caption() {
        let moves = [[60_000u16, 10_000u16]; 10];
        let rendered = render_png(&sample_input(&moves, &[]), &RenderSettings::default()).unwrap();
        let (width, height, _, pixels) = decode(&rendered.png);
        // The caption sits bottom left, far from the only heat (top right): dark pixels
        // there can only be glyphs.
        let dark = (height - 40..height - 10)
            .flat_map(|y| (10..400).map(move |x| (x, y)))
            .filter(|&(x, y)| {
                let idx = ((y * width + x) * 3) as usize;
                pixels[idx..idx + 3].iter().all(|&channel| channel < 100)
            })
            .count();
        assert!(
            dark > 100,
            "only {dark} dark pixels where the caption should be"
        );
    }

    #[test]
    fn overlays_are_transparent_where_nothing_happened() {
        let moves = [[32768u16, 32768u16]; 50];
        let settings = RenderSettings {
            output: OutputMode::Overlay,
            ..RenderSettings::default()
        };
        let rendered = render_png(&sample_input(&moves, &[]), &settings).unwrap();
        let (width, _, _, pixels) = decode(&rendered.png);
        let alpha = |x: u32, y: u32| pixels[((y * width + x) * 4 + 3) as usize];
        assert_eq!(alpha(100, 100), 0);
        assert_eq!(alpha(960, 540), 255);
    }

    #[test]
    fn background_mode_draws_over_the_screenshot() {
        let moves = [[32768u16, 32768u16]; 50];
        let settings = RenderSettings {
            output: OutputMode::Background,
            annotate: false,
            background: Some(Arc::new(Background::solid(1920, 1080, [10, 200, 10]))),
            ..RenderSettings::default()
        };
        let rendered = render_png(&sample_input(&moves, &[]), &settings).unwrap();
        let (_, _, _, pixels) = decode(&rendered.png);
        assert_eq!(
            &pixels[..3],
            &[10, 200, 10],
            "the screenshot shows where there is no heat"
        );
        let centre = (540 * 1920 + 960) * 3;
        assert_ne!(&pixels[centre..centre + 3], &[10, 200, 10]);
        let without = RenderSettings {
            background: None,
            ..settings
        };
        assert!(matches!(
            render_png(&sample_input(&moves, &[]), &without),
            Err(Error::NoBackground)
        ));
    }

    #[test]
    fn clicks_are_sharper_than_moves() {
        let spot = [[32768u16, 32768u16]; 20];
        let spread = |kind| {
            let settings = RenderSettings {
                kind,
                ..RenderSettings::default()
            };
            let input = sample_input(&spot, &spot);
            let density = density(&input, &settings, &mut StageTimings::default());
            // Fraction of the peak 20 px away from it.
            density.sample(980, 540) / density.sample(960, 540)
        };
        assert!(spread(HeatKind::Clicks) < spread(HeatKind::Moves) / 2.0);
    }

    #[test]
    fn preview_frames_are_small_and_peak_at_the_points() {
        let moves = [[16384u16, 16384u16]; 30];
        let cells = preview_cells(
            &sample_input(&moves, &[]),
            &RenderSettings::default(),
            160,
            90,
        );
        assert_eq!(cells.len(), 160 * 90);
        let peak = cells
            .iter()
            .enumerate()
            .max_by_key(|(_, value)| **value)
            .map(|(idx, _)| idx);
        assert_eq!(peak, Some(22 * 160 + 40));
        assert_eq!(cells[0], 0);
    }
}
