//! From stored points to PNG bytes: accumulate, smooth, colour, annotate, encode.
//!
//! The whole pipeline is synchronous CPU work; callers run it on a blocking thread. The
//! heavy stages use rayon to spread over the machine's cores.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use plotters::prelude::*;
use plotters::style::FontStyle;
use protocol::{Colormap, HeatKind, OutputMode, RenderOptions, Scale};
use rayon::prelude::*;

use crate::background::Background;
use crate::colormap::{alpha_for, apply_scale, lut};
pub use crate::density::{density, Density};
use crate::density::{RowScratch, COLOUR_STEPS};
use crate::encode::{encode_indexed, encode_png};
use crate::grid::NormPoint;
use crate::palette;
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
    /// How many times the configured size `width`, `height` and `bandwidth` are (a page's
    /// [`RenderOptions::pixel_scale`]); kept to tell the page what it got.
    pub pixel_scale: f32,
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
            pixel_scale: 1.0,
        }
    }
}

impl RenderSettings {
    /// These settings with a page's choices applied. A pixel scale multiplies the size and
    /// the bandwidth (the page's bandwidth is in pixels of the unscaled image), so the
    /// picture is the same, only sharper; the size is not bounded here (the caller holds
    /// it to its own limit).
    pub fn with_options(&self, options: &RenderOptions) -> RenderSettings {
        let pixel_scale = options.pixel_scale.unwrap_or(1.0);
        let scaled = |size: u32| ((size as f32 * pixel_scale).round() as u32).max(1);
        RenderSettings {
            width: scaled(self.width),
            height: scaled(self.height),
            pixel_scale,
            bandwidth: options.bandwidth.unwrap_or(self.bandwidth) * pixel_scale,
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
            bandwidth: Some(self.bandwidth / self.pixel_scale),
            pixel_scale: Some(self.pixel_scale),
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
    /// How many events each move point stands for (empty: one each). A map drawn from
    /// stored heat cells passes each cell's centre once with its count, so its cost
    /// follows the cells, not the events.
    pub move_counts: &'a [u32],
    /// The same for the click points.
    pub click_counts: &'a [u32],
    /// How long the recording lasted, in milliseconds.
    pub duration_ms: u32,
    /// When it started, as local time text for the caption.
    pub started: &'a str,
}

impl RenderInput<'_> {
    /// The points the settings' kind selects.
    pub fn n_shown(&self, kind: HeatKind) -> usize {
        match kind {
            HeatKind::Moves => self.n_moves(),
            HeatKind::Clicks => self.n_clicks(),
            HeatKind::Both => self.n_moves() + self.n_clicks(),
        }
    }

    /// The move events the points stand for.
    pub fn n_moves(&self) -> usize {
        events_of(self.moves, self.move_counts)
    }

    /// The click events the points stand for.
    pub fn n_clicks(&self) -> usize {
        events_of(self.clicks, self.click_counts)
    }
}

/// Events behind `points`: one each, or their counts.
fn events_of(points: &[NormPoint], counts: &[u32]) -> usize {
    if counts.is_empty() {
        points.len()
    } else {
        counts.iter().map(|&n| n as usize).sum()
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
    render_png_captioned(input, settings, &recording_caption(input, settings))
}

/// Renders the points as a PNG heatmap whose caption says `caption` instead of the
/// recording's counts, length and start: for maps drawn from other sources (a page's
/// stored events), whose own facts (events, sessions, range) the caller knows. A long
/// caption is wrapped at its ` · ` separators to fit the image.
///
/// # Errors
/// As [`render_png`].
pub fn render_png_captioned(
    input: &RenderInput<'_>,
    settings: &RenderSettings,
    caption: &str,
) -> Result<Rendered, Error> {
    if input.n_shown(settings.kind) == 0 {
        return Err(Error::NoPoints(settings.kind));
    }
    if settings.output == OutputMode::Background && settings.background.is_none() {
        return Err(Error::NoBackground);
    }
    let mut timings = StageTimings::default();
    let grid = density(input, settings, &mut timings);

    let png = if settings.output == OutputMode::Background {
        render_rgb(&grid, caption, settings, &mut timings)
    } else {
        render_indexed(&grid, caption, settings, &mut timings)
    }?;
    Ok(Rendered { png, timings })
}

/// Heat over a screenshot: every colour of the photo can show, so the PNG is RGB.
fn render_rgb(
    grid: &Density,
    caption: &str,
    settings: &RenderSettings,
    timings: &mut StageTimings,
) -> Result<Vec<u8>, Error> {
    let started = Instant::now();
    let mut pixels = colourise(grid, settings);
    if settings.annotate && has_room_for_annotations(settings) {
        let drawn = Layout::new(caption, settings).and_then(|layout| match layout {
            Some(layout) => draw_annotations(&mut pixels.bytes, 0, &layout, settings, true),
            None => Ok(()),
        });
        if let Err(err) = drawn {
            scratch::recycle_bytes(pixels.bytes);
            return Err(err);
        }
    }
    timings.colour = started.elapsed();

    let started = Instant::now();
    let png = encode_png(&pixels, settings.width, settings.height);
    scratch::recycle_bytes(pixels.bytes);
    timings.encode = started.elapsed();
    png
}

/// Heat on white or on transparency: a palette image, a byte a pixel.
fn render_indexed(
    grid: &Density,
    caption: &str,
    settings: &RenderSettings,
    timings: &mut StageTimings,
) -> Result<Vec<u8>, Error> {
    let started = Instant::now();
    let mut image = colourise_indexed(grid, settings);
    if settings.annotate && has_room_for_annotations(settings) {
        if let Err(err) = annotate_indexed(&mut image, caption, settings) {
            scratch::recycle_bytes(image.indices);
            return Err(err);
        }
    }
    timings.colour = started.elapsed();

    let started = Instant::now();
    let png = encode_indexed(&image, settings.width, settings.height);
    scratch::recycle_bytes(image.indices);
    timings.encode = started.elapsed();
    png
}

/// Image pixels with their channel count.
#[derive(Debug, Clone)]
pub struct Pixels {
    /// Row-major bytes.
    pub bytes: Vec<u8>,
    /// 3 (RGB) or 4 (RGBA, for overlays).
    pub channels: usize,
}

/// An image as palette indices: what [`colourise_indexed`] makes for heat on white or on
/// transparency, a third (or a quarter) of the bytes of RGB (or RGBA).
#[derive(Debug, Clone)]
pub struct Indexed {
    /// Row-major palette indices, one byte a pixel.
    pub indices: Vec<u8>,
    /// RGBA entries, at most 256; alpha is 255 everywhere except in overlays.
    pub palette: Vec<[u8; 4]>,
    /// Largest difference in any channel between a heat or colour-bar pixel and the colour
    /// [`colourise`] gives it (the palette has fewer entries than the colour table has
    /// colours; see `palette.rs`).
    pub tolerance: u8,
    /// Palette index of each colour-map entry as drawn in the colour bar.
    pub(crate) bar_index: Vec<u8>,
    /// Palette index of the first of [`N_GREYS`] annotation greys, black to white.
    pub(crate) grey_base: usize,
}

/// Colours a density as palette indices, for the image and overlay modes.
///
/// The palette holds the density steps' colours (fitted by `palette::fit`, within
/// [`Indexed::tolerance`] of [`colourise`]'s), the colour bar's colours and a grey ramp
/// for the annotations' text. Rows run in parallel, as in [`colourise`].
pub fn colourise_indexed(density: &Density, settings: &RenderSettings) -> Indexed {
    let colours = indexed_colours(settings);
    let to_step = step_scale(density);
    let width = settings.width as usize;
    let mut indices = scratch::bytes(width * settings.height as usize, 0);
    indices.par_chunks_mut(width).enumerate().for_each_init(
        RowScratch::default,
        |row_scratch, (y, out)| {
            density.colour_row_into(y, to_step, &colours.step_index, row_scratch, out);
        },
    );
    Indexed {
        indices,
        palette: colours.palette.clone(),
        tolerance: colours.tolerance,
        bar_index: colours.bar_index.clone(),
        grey_base: colours.grey_base,
    }
}

/// The colour side of an indexed image, which depends only on the colour map, the scale
/// and whether the image is an overlay.
#[derive(Debug)]
struct IndexedColours {
    palette: Vec<[u8; 4]>,
    tolerance: u8,
    /// Palette index of each density step; a fixed-size table lets the compiler drop the
    /// bounds check in the per-pixel loop.
    step_index: [u8; STEPS],
    bar_index: Vec<u8>,
    grey_base: usize,
}

/// The fitted palette for these settings' map, scale and mode, fitted once per process.
///
/// Fitting (the step table, the colour bar's colours, `palette::fit`'s search) is about
/// 6 M instructions, all on one thread before the parallel colour loop: a twentieth of a
/// 1080p render. The cache holds at most one entry per map, scale and mode (a few dozen
/// entries of about 5 KiB), so it needs no bound of its own.
fn indexed_colours(settings: &RenderSettings) -> Arc<IndexedColours> {
    type Key = (Colormap, Scale, bool);
    static CACHE: OnceLock<Mutex<HashMap<Key, Arc<IndexedColours>>>> = OnceLock::new();
    let key = (
        settings.colormap,
        settings.scale,
        settings.output == OutputMode::Overlay,
    );
    let cache = CACHE.get_or_init(|| Mutex::new(HashMap::new()));
    let cached = cache
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .get(&key)
        .cloned();
    if let Some(colours) = cached {
        return colours;
    }
    let colours = Arc::new(fit_indexed_colours(settings));
    cache
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .insert(key, colours.clone());
    colours
}

/// Fits the palette: the density steps' colours, the colour bar's and the text greys.
fn fit_indexed_colours(settings: &RenderSettings) -> IndexedColours {
    let table = step_table(settings);
    let overlay = settings.output == OutputMode::Overlay;
    let panel_alpha = if overlay { PANEL_ALPHA } else { u8::MAX };
    let mut curve: Vec<[u8; 4]> = if overlay {
        translucent_colours(&table)
    } else {
        opaque_colours(&table)
            .into_iter()
            .map(|[r, g, b]| [r, g, b, u8::MAX])
            .collect()
    };
    // The colour bar shows the map at full strength on the panel. Where the heat reaches
    // full strength it already has those colours; the others join the curve after the
    // steps, so that they share the palette and its tolerance.
    let step_of_colour: HashMap<[u8; 4], usize> = curve
        .iter()
        .enumerate()
        .rev()
        .map(|(step, &colour)| (colour, step))
        .collect();
    let bar_steps: Vec<usize> = lut(settings.colormap)
        .iter()
        .map(|&[r, g, b]| {
            let colour = [r, g, b, panel_alpha];
            step_of_colour.get(&colour).copied().unwrap_or_else(|| {
                curve.push(colour);
                curve.len() - 1
            })
        })
        .collect();
    let fitted = palette::fit(&curve, 256 - N_GREYS);
    let mut palette = fitted.colours;
    let grey_base = palette.len();
    palette.extend((0..N_GREYS).map(|level| {
        let grey = (level * 255 / (N_GREYS - 1)) as u8;
        [grey, grey, grey, panel_alpha]
    }));
    // `fit` gives one index per step, and the curve starts with the `STEPS` steps.
    let mut step_index = [0u8; STEPS];
    step_index.copy_from_slice(&fitted.index_of_step[..STEPS]);
    IndexedColours {
        palette,
        tolerance: fitted.tolerance,
        step_index,
        bar_index: bar_steps
            .iter()
            .map(|&step| fitted.index_of_step[step])
            .collect(),
        grey_base,
    }
}

impl Indexed {
    /// The image as RGBA pixels, for tests and for callers that need colours.
    pub fn to_rgba(&self) -> Vec<u8> {
        self.indices
            .iter()
            .flat_map(|&index| self.palette[usize::from(index)])
            .collect()
    }
}

/// Resolution of the precomputed density → colour table.
const STEPS: usize = COLOUR_STEPS;

/// Grey levels the annotations' antialiased black-on-white text is snapped to in an
/// indexed image; the palette keeps this many entries for them.
const N_GREYS: usize = 16;

/// Opacity of the annotation panels in an overlay, so the page shows faintly through.
const PANEL_ALPHA: u8 = 235;

/// Per density step: the colour-map colour and its opacity, scale and alpha ramp applied.
fn step_table(settings: &RenderSettings) -> Vec<([f32; 3], f32)> {
    let lut = lut(settings.colormap);
    (0..STEPS)
        .map(|step| {
            let intensity = apply_scale(settings.scale, step as f32 / (STEPS - 1) as f32);
            let [r, g, b] = lut[(intensity * 255.0).round() as usize];
            (
                [f32::from(r), f32::from(g), f32::from(b)],
                alpha_for(intensity),
            )
        })
        .collect()
}

/// Each step's colour blended over white.
fn opaque_colours(table: &[([f32; 3], f32)]) -> Vec<[u8; 3]> {
    table
        .iter()
        .map(|&(colour, alpha)| {
            colour.map(|value| (255.0 * (1.0 - alpha) + value * alpha).round() as u8)
        })
        .collect()
}

/// Each step's colour with its opacity, for overlays.
fn translucent_colours(table: &[([f32; 3], f32)]) -> Vec<[u8; 4]> {
    table
        .iter()
        .map(|&([r, g, b], alpha)| [r as u8, g as u8, b as u8, (alpha * 255.0).round() as u8])
        .collect()
}

/// Maps a density value to its step in [`step_table`]: the largest value is the last step.
fn step_mapper(density: &Density) -> impl Fn(f32) -> usize + Sync {
    let to_step = step_scale(density);
    move |value: f32| ((value * to_step) as usize).min(STEPS - 1)
}

/// The factor from a density value to a (fractional) step: the largest value is the last
/// step.
fn step_scale(density: &Density) -> f32 {
    let max = density.max();
    if max > 0.0 {
        (STEPS - 1) as f32 / max
    } else {
        0.0
    }
}

/// Colours a density as RGB or RGBA pixels: over white, over the background screenshot, or
/// onto transparency, depending on the output mode. Rows run in parallel; a
/// half-resolution density is upsampled row by row on the way. [`render_png`] uses it for
/// the background mode only (see [`colourise_indexed`]).
pub fn colourise(density: &Density, settings: &RenderSettings) -> Pixels {
    let table = step_table(settings);
    let opaque = opaque_colours(&table);
    let translucent = translucent_colours(&table);
    let step_of = step_mapper(density);

    let width = settings.width as usize;
    let size = (settings.width, settings.height);
    // A pixel scale asks for another size than the screenshot was fitted to.
    let refitted = match (settings.output, settings.background.as_deref()) {
        (OutputMode::Background, Some(background)) if background.size() != size => {
            Some(background.fitted(size.0, size.1))
        }
        _ => None,
    };
    let background = match settings.output {
        OutputMode::Background => refitted.as_ref().or(settings.background.as_deref()),
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

/// Whether the image is large enough to try placing the colour bar and caption at all
/// ([`Layout::new`] decides whether they fit).
fn has_room_for_annotations(settings: &RenderSettings) -> bool {
    settings.width >= 160 && settings.height >= 100
}

/// The caption of a recording: what is shown, how much, how long, when it started.
fn recording_caption(input: &RenderInput<'_>, settings: &RenderSettings) -> String {
    let shown = match settings.kind {
        HeatKind::Moves => "moves",
        HeatKind::Clicks => "clicks",
        HeatKind::Both => "moves and clicks",
    };
    format!(
        "{} · {} moves, {} {} · {} · started {}",
        shown,
        group_thousands(input.n_moves() as u64),
        group_thousands(input.n_clicks() as u64),
        if input.n_clicks() == 1 {
            "click"
        } else {
            "clicks"
        },
        format_duration(input.duration_ms),
        input.started
    )
}

/// Where a caption is broken into lines when it does not fit on one.
const CAPTION_SEPARATOR: &str = " · ";

/// Most of the image's height the panels may cover; past it the caption goes, then the bar.
const MAX_PANEL_SHARE: f32 = 0.5;

/// One line of text in the image: where it is drawn (plotters' top-left text position)
/// and its width as the bundled font lays it out.
#[derive(Debug, Clone)]
struct Label {
    text: String,
    at: (i32, i32),
    width: i32,
}

/// Where the colour bar, its labels and the caption go.
///
/// Every text is measured with the bundled font and placed so that no two texts, the bar
/// and the two panels overlap, and all of them lie inside the image, at any width: the
/// labels shorten (`high (sqrt scale)`, `high (sqrt)`, `high`) when the bar is narrow, and
/// the caption moves above the bar and wraps at its ` · ` separators (a part too long for
/// a line ends in `…`) when it does not fit beside it.
struct Layout {
    font_px: u32,
    /// The caption's lines, top to bottom; none when the image has no room for them.
    caption: Vec<Label>,
    /// The caption's panel; empty (all zero) when there is no caption.
    caption_panel: Rect,
    bar_panel: Rect,
    /// The gradient itself, inside the bar's panel.
    bar: Rect,
    low: Label,
    high: Label,
}

impl Layout {
    /// Lays out `caption` and the colour bar for an image of the settings' size; `None`
    /// when even the bar and its labels do not fit.
    ///
    /// # Errors
    /// [`Error::Draw`] when the bundled font cannot be loaded to measure the text.
    fn new(caption: &str, settings: &RenderSettings) -> Result<Option<Layout>, Error> {
        ensure_font()?;
        let (width, height) = (settings.width as i32, settings.height as i32);
        let font_px = (settings.height / 60)
            .min(settings.width / 30)
            .clamp(11, 36);
        let font = font_px as i32;
        let pad = font / 2;
        let measure = |text: &str| -> Result<i32, Error> {
            let ((min_x, _), (max_x, _)) = (FONT_FAMILY, font_px)
                .into_font()
                .layout_box(text)
                .map_err(|err| Error::Draw(err.to_string()))?;
            Ok(max_x - min_x)
        };
        let label = |text: String, x: i32, box_top: i32| -> Result<Label, Error> {
            let width = measure(&text)?;
            Ok(Label {
                text,
                at: (x, box_top + text_extent(font_px).0),
                width,
            })
        };

        // Colour bar, bottom right: the gradient, then "low" and "high (scale)" under its
        // ends, the longest "high" that leaves a gap of `pad` between the two.
        let right = width - pad;
        let bottom = height - pad;
        let widest_bar = width - 4 * pad;
        let low_width = measure("low")?;
        let highs = [
            format!("high ({} scale)", settings.scale),
            format!("high ({})", settings.scale),
            "high".to_owned(),
        ];
        let mut bar_width = (width / 6).max(160).min(widest_bar);
        let mut high_text = None;
        for text in &highs {
            let needed = low_width + pad + measure(text)?;
            if needed <= bar_width {
                high_text = Some(text.clone());
                break;
            }
        }
        let high_text = match high_text {
            Some(text) => text,
            None => {
                bar_width = low_width + pad + measure("high")?;
                if bar_width > widest_bar {
                    return Ok(None);
                }
                "high".to_owned()
            }
        };
        let bar_height = font;
        let panel_height = pad + bar_height + pad / 2 + font + pad;
        let bar_left = right - pad - bar_width;
        let bar_panel = [bar_left - pad, bottom - panel_height, right, bottom];
        let bar_top = bar_panel[1] + pad;
        let bar = [
            bar_left,
            bar_top,
            bar_left + bar_width,
            bar_top + bar_height,
        ];
        let labels_top = bar[3] + pad / 2;
        let low = label("low".to_owned(), bar_left, labels_top)?;
        let high_width = measure(&high_text)?;
        let high = label(high_text, bar[2] - high_width, labels_top)?;
        let max_panels = (height as f32 * MAX_PANEL_SHARE) as i32;
        if panel_height > max_panels {
            return Ok(None);
        }

        // Caption, bottom left beside the bar when it fits on one line there, else above
        // the bar, wrapped to the image's width.
        let mut layout = Layout {
            font_px,
            caption: Vec::new(),
            caption_panel: [0; 4],
            bar_panel,
            bar,
            low,
            high,
        };
        let beside = bar_panel[0] - pad - pad - 2 * pad;
        let caption_width = measure(caption)?;
        if caption_width <= beside {
            let top = bottom - (font + 2 * pad);
            layout.caption = vec![label(caption.to_owned(), 2 * pad, top + pad)?];
            layout.caption_panel = [pad, top, 3 * pad + caption_width, bottom];
            return Ok(Some(layout));
        }
        let line_width = width - 4 * pad;
        let mut lines: Vec<String> = Vec::new();
        for part in caption.split(CAPTION_SEPARATOR) {
            let part = fit_text(part, line_width, &measure)?;
            let joined = lines
                .last()
                .map(|line| format!("{line}{CAPTION_SEPARATOR}{part}"));
            match joined {
                Some(joined) if measure(&joined)? <= line_width => {
                    if let Some(last) = lines.last_mut() {
                        *last = joined;
                    }
                }
                _ => lines.push(part),
            }
        }
        let pitch = font + pad / 2;
        let panel_bottom = bar_panel[1] - pad / 2;
        // Only as many lines as the height allows: the first ones, which name the map.
        // A caption of n lines is `2 * pad + n * pitch - pad / 2` tall, `pad / 2` above the bar.
        let room = max_panels - panel_height - pad / 2 - 2 * pad + pad / 2;
        let n_lines = (room.max(0) / pitch).min(lines.len() as i32) as usize;
        if n_lines == 0 {
            return Ok(Some(layout));
        }
        lines.truncate(n_lines);
        let caption_height = 2 * pad + n_lines as i32 * pitch - pad / 2;
        let top = panel_bottom - caption_height;
        let mut widest = 0;
        for (idx, line) in lines.into_iter().enumerate() {
            let placed = label(line, 2 * pad, top + pad + idx as i32 * pitch)?;
            widest = widest.max(placed.width);
            layout.caption.push(placed);
        }
        layout.caption_panel = [pad, top, 3 * pad + widest, panel_bottom];
        Ok(Some(layout))
    }

    /// The panels drawn (the caption's only when there is a caption).
    fn panels(&self) -> Vec<Rect> {
        let mut panels = vec![self.bar_panel];
        if !self.caption.is_empty() {
            panels.push(self.caption_panel);
        }
        panels
    }

    /// Every text with the box its glyphs stay within.
    #[cfg(test)]
    fn text_boxes(&self) -> Vec<(&str, Rect)> {
        let (rise, depth) = text_extent(self.font_px);
        self.caption
            .iter()
            .chain([&self.low, &self.high])
            .map(|label| {
                let (x, y) = label.at;
                (
                    label.text.as_str(),
                    [x - 1, y - rise, x + label.width + 1, y + depth],
                )
            })
            .collect()
    }

    /// The image rows the panels cover, `[first, end)`, within an image `height` tall.
    fn rows(&self, height: u32) -> (usize, usize) {
        let panels = self.panels();
        let first = panels
            .iter()
            .map(|panel| panel[1])
            .min()
            .unwrap_or(0)
            .max(0) as usize;
        let end = panels
            .iter()
            .map(|panel| panel[3])
            .max()
            .unwrap_or(0)
            .max(0) as usize;
        let end = end.min(height as usize);
        (first, end.max(first))
    }
}

/// How far above and below plotters' text position the bundled font's glyphs reach: it
/// puts the baseline half a font size below the position; the tallest glyphs rise about
/// 0.7 of the size above the baseline and descenders reach about 0.25 below it (a pixel
/// more each way for antialiasing). The layout's line pitch (1.25 sizes) and panel padding
/// (half a size) leave room for both.
fn text_extent(font_px: u32) -> (i32, i32) {
    let font = font_px as i32;
    (font * 3 / 10 + 1, font * 4 / 5 + 1)
}

/// `text`, cut and ended with `…` when wider than `max_width`.
fn fit_text(
    text: &str,
    max_width: i32,
    measure: &impl Fn(&str) -> Result<i32, Error>,
) -> Result<String, Error> {
    if measure(text)? <= max_width {
        return Ok(text.to_owned());
    }
    let mut chars: Vec<char> = text.chars().collect();
    while !chars.is_empty() {
        chars.pop();
        let cut = format!("{}…", chars.iter().collect::<String>().trim_end());
        if measure(&cut)? <= max_width {
            return Ok(cut);
        }
    }
    Ok("…".to_owned())
}

/// Draws the panels, the caption, the labels and (when `with_bar`) the colour bar onto
/// RGB pixels of the image's full width whose first row is image row `first_row`.
///
/// In the RGB image the panels are translucent white over the heat; an indexed image draws
/// them onto white and copies them in opaque (see [`annotate_indexed`]).
fn draw_annotations(
    rgb: &mut [u8],
    first_row: usize,
    layout: &Layout,
    settings: &RenderSettings,
    with_bar: bool,
) -> Result<(), Error> {
    ensure_font()?;
    let width = settings.width;
    let rows = (rgb.len() / (width as usize * 3)) as u32;
    let draw_err = |err: DrawingAreaErrorKind<_>| Error::Draw(err.to_string());
    let text_style = TextStyle::from((FONT_FAMILY, layout.font_px).into_font()).color(&BLACK);
    let panel = WHITE.mix(0.85).filled();
    // ok: `rows` is derived from the buffer's length, so the buffer is large enough.
    let root = BitMapBackend::with_buffer(rgb, (width, rows)).into_drawing_area();
    let shift = first_row as i32;
    let at = |(x, y): (i32, i32)| (x, y - shift);
    let corners = |[x0, y0, x1, y1]: Rect| [at((x0, y0)), at((x1, y1))];

    for rect in layout.panels() {
        root.draw(&Rectangle::new(corners(rect), panel))
            .map_err(draw_err)?;
    }
    for line in &layout.caption {
        root.draw_text(&line.text, &text_style, at(line.at))
            .map_err(draw_err)?;
    }
    if with_bar {
        let lut = lut(settings.colormap);
        let [left, top, right, bottom] = layout.bar;
        let bar_width = right - left;
        for offset in 0..bar_width {
            let [r, g, b] = lut[(offset * 255 / (bar_width - 1)) as usize];
            let x = left + offset;
            root.draw(&Rectangle::new(
                [at((x, top)), at((x + 1, bottom))],
                RGBColor(r, g, b).filled(),
            ))
            .map_err(draw_err)?;
        }
    }
    for label in [&layout.low, &layout.high] {
        root.draw_text(&label.text, &text_style, at(label.at))
            .map_err(draw_err)?;
    }
    root.present().map_err(draw_err)?;
    Ok(())
}

/// Draws the colour bar and caption into an indexed image.
///
/// plotters draws into RGB buffers only, so the text is drawn onto a white strip as tall
/// as the panels and the panels are copied in as palette greys (the text's antialiasing
/// snapped to [`N_GREYS`] levels, at most 8 off); the bar's pixels are written as palette
/// indices directly. Panels are opaque (in an overlay, [`PANEL_ALPHA`]).
fn annotate_indexed(
    image: &mut Indexed,
    caption: &str,
    settings: &RenderSettings,
) -> Result<(), Error> {
    let Some(layout) = Layout::new(caption, settings)? else {
        return Ok(());
    };
    let width = settings.width as usize;
    let (first, end) = layout.rows(settings.height);
    let mut strip = scratch::bytes(width * (end - first) * 3, u8::MAX);
    let drawn = draw_annotations(&mut strip, first, &layout, settings, false);
    if let Err(err) = drawn {
        scratch::recycle_bytes(strip);
        return Err(err);
    }
    let clip = |[x0, y0, x1, y1]: Rect| {
        let xs = x0.max(0) as usize..(x1.max(0) as usize).min(width);
        let ys = (y0.max(0) as usize).max(first)..(y1.max(0) as usize).min(end);
        (xs, ys)
    };
    let step = 255 / (N_GREYS - 1);
    for panel in layout.panels() {
        let (xs, ys) = clip(panel);
        for y in ys {
            for x in xs.clone() {
                // Black text on white: the three channels are equal, a grey.
                let grey = usize::from(strip[((y - first) * width + x) * 3]);
                image.indices[y * width + x] = (image.grey_base + (grey + step / 2) / step) as u8;
            }
        }
    }
    scratch::recycle_bytes(strip);
    let [left, _, right, _] = layout.bar;
    let bar_width = right - left;
    let (xs, ys) = clip(layout.bar);
    for y in ys {
        for x in xs.clone() {
            let offset = x as i32 - left;
            image.indices[y * width + x] =
                image.bar_index[(offset * 255 / (bar_width - 1)) as usize];
        }
    }
    Ok(())
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

/// `1234567` → `1,234,567`: how every count in a caption is written, here and in the
/// renderer's page-map captions.
pub fn group_thousands(n: u64) -> String {
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

    /// Width, height, the colour type stored in the file, and the pixels as RGB or RGBA
    /// (a palette expanded).
    fn decode(png: &[u8]) -> (u32, u32, png::ColorType, Vec<u8>) {
        let mut decoder = png::Decoder::new(std::io::Cursor::new(png));
        decoder.set_transformations(png::Transformations::EXPAND);
        let mut reader = decoder.read_info().unwrap();
        let stored = reader.info().color_type;
        let mut pixels = vec![0; reader.output_buffer_size().unwrap()];
        let info = reader.next_frame(&mut pixels).unwrap();
        (info.width, info.height, stored, pixels)
    }

    fn sample_input<'a>(moves: &'a [NormPoint], clicks: &'a [NormPoint]) -> RenderInput<'a> {
        RenderInput {
            moves,
            clicks,
            move_counts: &[],
            click_counts: &[],
            duration_ms: 4200,
            started: "2026-11-29 12:00:00",
        }
    }

    /// The largest tolerance the palette fit may need for any map and scale: past it the
    /// indexed image would visibly band.
    const MAX_TOLERANCE: u8 = 4;

    #[test]
    fn indexed_heat_is_within_the_stated_tolerance_of_the_rgb_colours() {
        let moves = crate::synthetic::pointer_paths(100_000, 7);
        let input = sample_input(&moves, &[]);
        let mut worst = 0;
        for colormap in Colormap::ALL {
            for scale in Scale::ALL {
                for output in [OutputMode::Image, OutputMode::Overlay] {
                    let settings = RenderSettings {
                        width: 640,
                        height: 360,
                        colormap: *colormap,
                        scale: *scale,
                        output,
                        ..RenderSettings::default()
                    };
                    let grid = density(&input, &settings, &mut StageTimings::default());
                    let rgb = colourise(&grid, &settings);
                    let indexed = colourise_indexed(&grid, &settings);
                    assert!(indexed.palette.len() <= 256);
                    let rgba = indexed.to_rgba();
                    let mut largest = 0;
                    for (want, got) in rgb
                        .bytes
                        .chunks_exact(rgb.channels)
                        .zip(rgba.chunks_exact(4))
                    {
                        for channel in 0..rgb.channels {
                            largest = largest.max(want[channel].abs_diff(got[channel]));
                        }
                        if rgb.channels == 3 {
                            assert_eq!(got[3], 255, "image mode is opaque");
                        }
                    }
                    assert!(
                        largest <= indexed.tolerance,
                        "{colormap} {scale} {output}: {largest} > {}",
                        indexed.tolerance
                    );
                    worst = worst.max(indexed.tolerance);
                }
            }
        }
        assert!(
            worst <= MAX_TOLERANCE,
            "the palette needs a tolerance of {worst}"
        );
    }

    #[test]
    fn image_and_overlay_modes_write_indexed_pngs_that_decode_to_the_palette_colours() {
        let moves = crate::synthetic::pointer_paths(100_000, 7);
        let input = sample_input(&moves, &[]);
        for output in [OutputMode::Image, OutputMode::Overlay] {
            let settings = RenderSettings {
                output,
                ..RenderSettings::default()
            };
            let grid = density(&input, &settings, &mut StageTimings::default());
            let mut indexed = colourise_indexed(&grid, &settings);
            annotate_indexed(
                &mut indexed,
                &recording_caption(&input, &settings),
                &settings,
            )
            .unwrap();
            let png = render_png(&input, &settings).unwrap().png;

            let reader = png::Decoder::new(std::io::Cursor::new(&png[..]))
                .read_info()
                .unwrap();
            let info = reader.info();
            assert_eq!(info.color_type, png::ColorType::Indexed);
            let palette = info.palette.as_deref().unwrap();
            assert_eq!(palette.len(), indexed.palette.len() * 3);
            assert_eq!(
                info.trns.is_some(),
                output == OutputMode::Overlay,
                "{output}: tRNS only where there is transparency"
            );

            let mut decoder = png::Decoder::new(std::io::Cursor::new(&png[..]));
            decoder.set_transformations(png::Transformations::EXPAND | png::Transformations::ALPHA);
            let mut reader = decoder.read_info().unwrap();
            let mut rgba = vec![0; reader.output_buffer_size().unwrap()];
            let frame = reader.next_frame(&mut rgba).unwrap();
            assert_eq!(frame.color_type, png::ColorType::Rgba);
            assert!(
                rgba[..frame.buffer_size()] == indexed.to_rgba()[..],
                "{output}: decoded pixels differ from the palette colours"
            );
        }
    }

    #[test]
    fn indexed_pngs_are_smaller_than_rgb_ones() {
        let moves = crate::synthetic::pointer_paths(1_000_000, 7);
        let input = sample_input(&moves, &[]);
        let settings = RenderSettings::default();
        let indexed = render_png(&input, &settings).unwrap().png;
        let grid = density(&input, &settings, &mut StageTimings::default());
        let rgb = encode_png(&colourise(&grid, &settings), 1920, 1080).unwrap();
        assert!(
            indexed.len() * 2 < rgb.len(),
            "indexed {} bytes, rgb {} bytes",
            indexed.len(),
            rgb.len()
        );
    }

    #[test]
    fn palettes_are_fitted_once_per_map_scale_and_mode() {
        let image = RenderSettings::default();
        let overlay = RenderSettings {
            output: OutputMode::Overlay,
            ..RenderSettings::default()
        };
        let first = indexed_colours(&image);
        assert!(Arc::ptr_eq(&first, &indexed_colours(&image)));
        let fresh = fit_indexed_colours(&image);
        assert_eq!(first.palette, fresh.palette);
        assert_eq!(first.step_index, fresh.step_index);
        assert_eq!(first.bar_index, fresh.bar_index);
        assert_ne!(indexed_colours(&overlay).palette, first.palette);
    }

    #[test]
    fn annotations_change_only_the_panels() {
        let moves = crate::synthetic::pointer_paths(100_000, 7);
        let input = sample_input(&moves, &[]);
        for output in [OutputMode::Image, OutputMode::Overlay] {
            let settings = RenderSettings {
                output,
                ..RenderSettings::default()
            };
            let grid = density(&input, &settings, &mut StageTimings::default());
            let plain = colourise_indexed(&grid, &settings);
            let mut annotated = plain.clone();
            let caption = recording_caption(&input, &settings);
            annotate_indexed(&mut annotated, &caption, &settings).unwrap();
            let layout = Layout::new(&caption, &settings).unwrap().unwrap();
            let inside = |x: i32, y: i32, [x0, y0, x1, y1]: Rect| {
                (x0..x1).contains(&x) && (y0..y1).contains(&y)
            };
            let mut n_changed = 0;
            for (idx, (before, after)) in plain.indices.iter().zip(&annotated.indices).enumerate() {
                let (x, y) = ((idx % 1920) as i32, (idx / 1920) as i32);
                if before != after {
                    n_changed += 1;
                    assert!(
                        inside(x, y, layout.caption_panel) || inside(x, y, layout.bar_panel),
                        "{output}: pixel {x},{y} changed outside the panels"
                    );
                }
            }
            assert!(
                n_changed > 10_000,
                "{output}: only {n_changed} pixels annotated"
            );
        }
    }

    /// A caption as the page heatmaps write it, too long for one line on a phone.
    const PAGE_CAPTION: &str =
        "clicks · 12,345 events · 678 sessions · desktop · from 2026-11-01 to 2026-11-30";

    #[test]
    fn the_legend_and_caption_never_overlap_at_any_width() {
        let moves = [[1000u16, 1000u16]];
        let input = sample_input(&moves, &[]);
        let within = |inner: Rect, outer: Rect| {
            inner[0] >= outer[0]
                && inner[1] >= outer[1]
                && inner[2] <= outer[2]
                && inner[3] <= outer[3]
        };
        let overlap = |a: Rect, b: Rect| a[0] < b[2] && b[0] < a[2] && a[1] < b[3] && b[1] < a[3];
        let sizes = [
            (390, 844),
            (390, 300),
            (480, 270),
            (640, 360),
            (820, 1200),
            (1440, 900),
            (1920, 1080),
            (3840, 2160),
        ];
        for (width, height) in sizes {
            for scale in Scale::ALL {
                let settings = RenderSettings {
                    width,
                    height,
                    scale: *scale,
                    ..RenderSettings::default()
                };
                for caption in [
                    PAGE_CAPTION.to_owned(),
                    recording_caption(&input, &settings),
                ] {
                    let what = format!("{width}x{height} {scale} {caption:?}");
                    let layout = Layout::new(&caption, &settings)
                        .unwrap()
                        .unwrap_or_else(|| panic!("{what}: no room"));
                    assert!(!layout.caption.is_empty(), "{what}: the caption is shown");
                    let image = [0, 0, width as i32, height as i32];
                    let boxes = layout.text_boxes();
                    for (text, rect) in &boxes {
                        assert!(
                            within(*rect, image),
                            "{what}: {text:?} {rect:?} leaves the image"
                        );
                        assert!(
                            layout.panels().iter().any(|panel| within(*rect, *panel)),
                            "{what}: {text:?} {rect:?} leaves its panel"
                        );
                        assert!(!overlap(*rect, layout.bar), "{what}: {text:?} on the bar");
                    }
                    for (idx, (text, rect)) in boxes.iter().enumerate() {
                        for (other_text, other) in &boxes[idx + 1..] {
                            assert!(
                                !overlap(*rect, *other),
                                "{what}: {text:?} {rect:?} overlaps {other_text:?} {other:?}"
                            );
                        }
                    }
                    assert!(
                        !overlap(layout.caption_panel, layout.bar_panel),
                        "{what}: the panels overlap"
                    );
                    assert!(within(layout.bar, layout.bar_panel), "{what}");

                    // The measurements are true: every glyph pixel lies in its text's box.
                    let (first, end) = layout.rows(height);
                    let mut strip = vec![u8::MAX; width as usize * (end - first) * 3];
                    draw_annotations(&mut strip, first, &layout, &settings, false).unwrap();
                    let mut n_ink = 0;
                    for (idx, pixel) in strip.chunks_exact(3).enumerate() {
                        if pixel[0] > 200 {
                            continue;
                        }
                        n_ink += 1;
                        let x = (idx % width as usize) as i32;
                        let y = (idx / width as usize + first) as i32;
                        assert!(
                            boxes
                                .iter()
                                .any(|(_, rect)| within([x, y, x + 1, y + 1], *rect)),
                            "{what}: ink at {x},{y} outside every text box {boxes:?}"
                        );
                    }
                    assert!(n_ink > 100, "{what}: only {n_ink} pixels of text");
                }
            }
        }

        // On a phone the page caption is all there, wrapped at its separators, and the
        // labels fit under the bar.
        let settings = RenderSettings {
            width: 390,
            height: 844,
            ..RenderSettings::default()
        };
        let layout = Layout::new(PAGE_CAPTION, &settings).unwrap().unwrap();
        let lines: Vec<&str> = layout
            .caption
            .iter()
            .map(|line| line.text.as_str())
            .collect();
        assert!(lines.len() > 1, "{lines:?}");
        assert_eq!(lines.join(CAPTION_SEPARATOR), PAGE_CAPTION);
        assert_eq!(layout.low.text, "low");
        assert!(layout.high.text.starts_with("high"), "{}", layout.high.text);

        // And it is drawn: dark pixels in the caption's panel of the rendered image.
        let rendered = render_png_captioned(&input, &settings, PAGE_CAPTION).unwrap();
        let (_, _, _, pixels) = decode(&rendered.png);
        let [x0, y0, x1, y1] = layout.caption_panel;
        let dark = (y0..y1)
            .flat_map(|y| (x0..x1).map(move |x| (x as usize, y as usize)))
            .filter(|&(x, y)| pixels[(y * 390 + x) * 3] < 100)
            .count();
        assert!(dark > 200, "only {dark} dark pixels in the caption");
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
                        let want = if *output == OutputMode::Background {
                            png::ColorType::Rgb
                        } else {
                            png::ColorType::Indexed
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
