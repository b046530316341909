//! Times each render stage at 1920x1080 (or `--width`/`--height`) for 10k, 100k and 1M points and prints a table.
//!
//! `cargo run --release -p heatmap --example stages [-- --points 1000000 --runs 15 --bandwidth 18 --width 3840 --height 2160 --save out.png --one-thread]`
//!
//! `--one-thread` runs everything inside a one-thread rayon pool, so every parallel loop
//! runs on the calling stack and `valgrind --tool=callgrind` can charge each stage's work
//! to the stage's function (inclusive cost); without it the work lands in rayon's workers.
//! Used by `scripts/bench`; the criterion benches (`cargo bench -p heatmap`) measure the
//! same stages with statistics.

use std::time::Duration;

use heatmap::render::{render_png, RenderInput, RenderSettings, StageTimings};
use heatmap::synthetic::pointer_paths;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.iter().any(|arg| arg == "--one-thread") {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(1)
            .build()
            .expect("a one-thread pool"); // ok: a profiling run, nothing to recover
        pool.install(|| run(&args));
    } else {
        run(&args);
    }
}

fn run(args: &[String]) {
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
    let defaults = RenderSettings::default();
    let settings = RenderSettings {
        bandwidth: flag("--bandwidth").unwrap_or(18.0) as f32,
        width: flag("--width").map_or(defaults.width, |width| width as u32),
        height: flag("--height").map_or(defaults.height, |height| height as u32),
        ..defaults
    };
    println!("| points | accumulate ms | smooth ms | colour ms | encode ms | total ms | Mpoints/s accumulate | png KiB |");
    println!("| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |");
    for n_points in sizes {
        let moves = pointer_paths(n_points, 7);
        let input = RenderInput {
            moves: &moves,
            clicks: &[],
            move_counts: &[],
            click_counts: &[],
            duration_ms: 60_000,
            started: "2026-01-01 00:00:00",
        };
        let mut all: Vec<StageTimings> = Vec::new();
        let mut png_len = 0;
        for _ in 0..runs {
            let rendered = render_png(&input, &settings).expect("render"); // ok: benchmark data is valid
            png_len = rendered.png.len();
            all.push(rendered.timings);
            if let Some(path) = args
                .iter()
                .position(|arg| arg == "--save")
                .and_then(|idx| args.get(idx + 1))
            {
                std::fs::write(path, &rendered.png).expect("write the --save file");
                // ok: a person asked for it
            }
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

fn peak_rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|line| line.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}
