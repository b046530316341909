//! Guards for speed work on the pipeline: a fixed input must keep drawing the same picture.
//!
//! The pixel checksums hold across encoder changes (any valid PNG of the same pixels
//! passes); the file checksums pin the exact bytes, so a change to them has to be a
//! deliberate encoder change, made in the same commit as the new values.
//! Annotations are off: their layout and text change for reasons of their own.
//! Renders run in a two-thread pool because the column blur's bands follow the thread
//! count (its running sums restart at each band), which moves a few density steps.

use heatmap::render::{render_png, RenderInput, RenderSettings};
use heatmap::synthetic::pointer_paths;
use protocol::{Colormap, OutputMode, Scale};

/// One image the guards draw.
struct Case {
    name: &'static str,
    settings: RenderSettings,
    /// CRC-32 of the decoded palette (RGBA entries) followed by the decoded indices.
    pixels_crc: u32,
    /// CRC-32 and length of the PNG file.
    file: (u32, usize),
}

fn cases() -> Vec<Case> {
    let plain = RenderSettings {
        annotate: false,
        ..RenderSettings::default()
    };
    vec![
        Case {
            name: "1920x1080 jet sqrt, half-resolution density",
            settings: plain.clone(),
            pixels_crc: 0xeba5fce7,
            file: (0x3a4379a8, 459_974),
        },
        Case {
            name: "1001x333 overlay viridis log, odd sizes",
            settings: RenderSettings {
                width: 1001,
                height: 333,
                output: OutputMode::Overlay,
                colormap: Colormap::Viridis,
                scale: Scale::Log,
                ..plain.clone()
            },
            pixels_crc: 0x3db62a19,
            file: (0xc88aadce, 72_041),
        },
        Case {
            name: "640x361 inferno linear, full-resolution density",
            settings: RenderSettings {
                width: 640,
                height: 361,
                bandwidth: 5.0,
                colormap: Colormap::Inferno,
                scale: Scale::Linear,
                ..plain
            },
            pixels_crc: 0xc0fa986f,
            file: (0xbf63d67c, 53_217),
        },
    ]
}

/// The palette and the indices as a standard decoder reads them.
fn decoded_crc(png: &[u8]) -> u32 {
    let mut reader = png::Decoder::new(std::io::Cursor::new(png))
        .read_info()
        .unwrap();
    let info = reader.info();
    assert_eq!(info.color_type, png::ColorType::Indexed);
    let palette = info.palette.as_deref().unwrap().to_vec();
    let alphas = info.trns.as_deref().unwrap_or(&[]).to_vec();
    let mut indices = vec![0; reader.output_buffer_size().unwrap()];
    let frame = reader.next_frame(&mut indices).unwrap();
    let mut crc = crc32fast::Hasher::new();
    for (entry, rgb) in palette.chunks_exact(3).enumerate() {
        crc.update(rgb);
        crc.update(&[alphas.get(entry).copied().unwrap_or(u8::MAX)]);
    }
    crc.update(&indices[..frame.buffer_size()]);
    crc.finalize()
}

fn render_cases() -> Vec<(Case, Vec<u8>)> {
    let moves = pointer_paths(300_000, 11);
    let clicks = pointer_paths(400, 5);
    let input = RenderInput {
        moves: &moves,
        clicks: &clicks,
        move_counts: &[],
        click_counts: &[],
        duration_ms: 60_000,
        started: "2026-01-01 00:00:00",
    };
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(2)
        .build()
        .unwrap();
    cases()
        .into_iter()
        .map(|case| {
            let png = pool
                .install(|| render_png(&input, &case.settings))
                .unwrap()
                .png;
            (case, png)
        })
        .collect()
}

#[test]
fn a_fixed_input_decodes_to_the_same_pixels() {
    let mut wrong = Vec::new();
    for (case, png) in render_cases() {
        let got = decoded_crc(&png);
        if got != case.pixels_crc {
            wrong.push(format!("{}: pixels {got:#010x}", case.name));
        }
    }
    assert!(wrong.is_empty(), "{wrong:#?}");
}

#[test]
fn a_fixed_input_encodes_to_the_same_file() {
    let mut wrong = Vec::new();
    for (case, png) in render_cases() {
        let got = (crc32fast::hash(&png), png.len());
        if got != case.file {
            wrong.push(format!("{}: file ({:#010x}, {})", case.name, got.0, got.1));
        }
    }
    assert!(wrong.is_empty(), "{wrong:#?}");
}
