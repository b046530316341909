//! Times each render stage at 1920x1080 for 10k, 100k and 1M points and prints a table.
//!
//! `cargo run --release -p renderer --example stages [-- --points 1000000 --runs 15 --bandwidth 18]`
//! Used by `scripts/bench`; the criterion benches (`cargo bench -p renderer`) measure the
//! same stages with statistics.

use std::time::Duration;

use renderer::grid::NormPoint;
use renderer::render::{render_png, RenderInput, RenderSettings, StageTimings};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let flag = |name: &str| {
        args.iter()
            .position(|arg| arg == name)
            .and_then(|idx| args.get(idx + 1))
            .and_then(|value| value.parse::<f64>().ok())
    };
    let sizes: Vec<usize> = match flag("--points") {
        Some(n) => vec![n as usize],
        None => vec![10_000, 100_000, 1_000_000],
    };
    let runs = flag("--runs").unwrap_or(15.0) as usize;
    let settings = RenderSettings {
        bandwidth: flag("--bandwidth").unwrap_or(18.0) as f32,
        ..RenderSettings::default()
    };
    println!("| points | accumulate ms | smooth ms | colour ms | encode ms | total ms | Mpoints/s accumulate | png KiB |");
    println!("| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |");
    for n_points in sizes {
        let moves = synthetic_points(n_points, 7);
        let input = RenderInput {
            moves: &moves,
            clicks: &[],
            duration_ms: 60_000,
            started: "2026-01-01 00:00:00",
        };
        let mut all: Vec<StageTimings> = Vec::new();
        let mut png_len = 0;
        for _ in 0..runs {
            let rendered = render_png(&input, &settings).expect("render");
            png_len = rendered.png.len();
            all.push(rendered.timings);
        }
        let median = |stage: fn(&StageTimings) -> Duration| {
            let mut values: Vec<f64> = all
                .iter()
                .map(|t| stage(t).as_secs_f64() * 1000.0)
                .collect();
            values.sort_by(f64::total_cmp);
            values[values.len() / 2]
        };
        let accumulate = median(|t| t.accumulate);
        println!(
            "| {n_points} | {accumulate:.2} | {:.2} | {:.2} | {:.2} | {:.2} | {:.0} | {} |",
            median(|t| t.smooth),
            median(|t| t.colour),
            median(|t| t.encode),
            median(|t| t.total()),
            n_points as f64 / accumulate / 1000.0,
            png_len / 1024
        );
    }
    if let Some(peak) = peak_rss_kib() {
        println!("\npeak RSS: {:.1} MiB", peak as f64 / 1024.0);
    }
}

/// Pointer-like paths: random walks that linger around a few dozen spots, deterministic.
pub fn synthetic_points(n_points: usize, seed: u64) -> Vec<NormPoint> {
    let mut state = seed | 1;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let mut points = Vec::with_capacity(n_points);
    let (mut x, mut y) = (32_768i64, 32_768i64);
    while points.len() < n_points {
        if next() % 500 == 0 {
            x = (next() % 65_536) as i64;
            y = (next() % 65_536) as i64;
        }
        x = (x + (next() % 401) as i64 - 200).clamp(0, 65_535);
        y = (y + (next() % 401) as i64 - 200).clamp(0, 65_535);
        points.push([x as u16, y as u16]);
    }
    points
}

fn peak_rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|line| line.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}
