//! Criterion benchmarks of each render stage at 1920x1080: `cargo bench -p heatmap`.
//!
//! `scripts/bench` prints the same stages as one table beside the Python reference; these
//! give the statistics (confidence intervals, change since the last run).

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use heatmap::blur::gaussian_blur;
use heatmap::encode::{encode_indexed, encode_png};
use heatmap::grid::Grid;
use heatmap::render::{
    colourise, colourise_indexed, density, render_png, RenderInput, RenderSettings, StageTimings,
};
use heatmap::synthetic::pointer_paths;

const SIZES: [usize; 3] = [10_000, 100_000, 1_000_000];

fn input(moves: &[[u16; 2]]) -> RenderInput<'_> {
    RenderInput {
        moves,
        clicks: &[],
        move_counts: &[],
        click_counts: &[],
        duration_ms: 60_000,
        started: "2026-01-01 00:00:00",
    }
}

fn stages(c: &mut Criterion) {
    let settings = RenderSettings::default();
    let mut group = c.benchmark_group("accumulate");
    for n_points in SIZES {
        let points = pointer_paths(n_points, 7);
        group.throughput(Throughput::Elements(n_points as u64));
        group.bench_with_input(
            BenchmarkId::from_parameter(n_points),
            &points,
            |b, points| {
                let mut grid = Grid::new(1920, 1080);
                b.iter(|| grid.accumulate(points, 1.0));
            },
        );
    }
    group.finish();

    let mut group = c.benchmark_group("smooth");
    for bandwidth in [5.0f32, 18.0, 60.0] {
        let points = pointer_paths(100_000, 7);
        let mut grid = Grid::new(1920, 1080);
        grid.accumulate(&points, 1.0);
        group.bench_with_input(
            BenchmarkId::new("bandwidth", bandwidth),
            &bandwidth,
            |b, &bandwidth| {
                b.iter(|| {
                    let mut copy = grid.clone();
                    gaussian_blur(&mut copy, bandwidth);
                    copy
                });
            },
        );
    }
    group.finish();

    let points = pointer_paths(1_000_000, 7);
    let grid = density(&input(&points), &settings, &mut StageTimings::default());
    c.bench_function("colour", |b| b.iter(|| colourise_indexed(&grid, &settings)));
    let indexed = colourise_indexed(&grid, &settings);
    c.bench_function("encode", |b| {
        b.iter(|| encode_indexed(&indexed, 1920, 1080))
    });
    // The RGB path, which the background mode still takes.
    c.bench_function("colour_rgb", |b| b.iter(|| colourise(&grid, &settings)));
    let pixels = colourise(&grid, &settings);
    c.bench_function("encode_rgb", |b| b.iter(|| encode_png(&pixels, 1920, 1080)));

    let mut group = c.benchmark_group("total");
    group.sample_size(20);
    for n_points in SIZES {
        let points = pointer_paths(n_points, 7);
        group.bench_with_input(
            BenchmarkId::from_parameter(n_points),
            &points,
            |b, points| {
                b.iter(|| render_png(&input(points), &settings));
            },
        );
    }
    group.finish();
}

criterion_group!(benches, stages);
criterion_main!(benches);
