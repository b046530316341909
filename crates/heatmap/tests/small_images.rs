//! Edge sizes for the row-wise colour pass and the banded encoder: odd widths, one-pixel
//! images, and sizes just past the half-resolution threshold all render and decode.

use heatmap::render::{render_png, RenderInput, RenderSettings};
use heatmap::synthetic::pointer_paths;
use protocol::OutputMode;

#[test]
fn tiny_and_odd_sizes_render_and_decode_to_their_size() {
    let moves = pointer_paths(5_000, 3);
    let input = RenderInput {
        moves: &moves,
        clicks: &[],
        move_counts: &[],
        click_counts: &[],
        duration_ms: 1_000,
        started: "2026-01-01 00:00:00",
    };
    for (width, height) in [
        (1, 1),
        (1, 2),
        (2, 1),
        (3, 3),
        (64, 64),
        (65, 65),
        (127, 64),
    ] {
        for bandwidth in [2.0, 18.0] {
            for output in [OutputMode::Image, OutputMode::Overlay] {
                let settings = RenderSettings {
                    width,
                    height,
                    bandwidth,
                    output,
                    ..RenderSettings::default()
                };
                let png = render_png(&input, &settings).unwrap().png;
                let mut reader = png::Decoder::new(std::io::Cursor::new(png))
                    .read_info()
                    .unwrap();
                let mut indices = vec![0; reader.output_buffer_size().unwrap()];
                let frame = reader.next_frame(&mut indices).unwrap();
                assert_eq!(
                    (frame.width, frame.height),
                    (width, height),
                    "{width}x{height} at {bandwidth} px, {output}"
                );
            }
        }
    }
}
