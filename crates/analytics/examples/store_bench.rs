//! Measures the SQLite store: ingest rate, a 30-day click heatmap for one page, file size
//! and peak memory, at a chosen number of stored events.
//!
//! `cargo run --release -p analytics --example store_bench -- [events] [folder]`
//! (default 1,000,000 events in a temporary folder). `scripts/bench-analytics` runs it.

use std::time::Instant;

use analytics::conformance::Rng;
use analytics::{
    Event, HeatmapQuery, Position, Range, SqliteConfig, SqliteStore, Store, WidthBucket,
};
use protocol::analytics::EventType;

const DAY_MS: i64 = 86_400_000;
const DAYS: i64 = 30;
const PAGES: u64 = 20;

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let batch_size: usize = std::env::var("BATCH")
        .ok()
        .and_then(|text| text.parse().ok())
        .unwrap_or(500);
    let n_events: usize = match args.next() {
        Some(text) => text.replace('_', "").parse()?,
        None => 1_000_000,
    };
    let dir = match args.next() {
        Some(dir) => std::path::PathBuf::from(dir),
        None => std::env::temp_dir().join(format!("heatmap-store-bench-{}", std::process::id())),
    };
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    let store = SqliteStore::open(&SqliteConfig::at(&dir.join("events.sqlite")))?;
    let end_ms = 1_781_481_600_000i64;
    let start_ms = end_ms - DAYS * DAY_MS;
    let mut rng = Rng::new(42);
    let mut seq = 0u64;
    let mut ingest_seconds = 0.0;
    let mut batch = Vec::with_capacity(batch_size);
    let mut stored = 0usize;
    while stored < n_events {
        batch.clear();
        for _ in 0..batch_size.min(n_events - stored) {
            seq += 1;
            let page = format!("/page-{}", rng.below(PAGES));
            let kind = if rng.below(4) == 0 {
                EventType::Click
            } else {
                EventType::Move
            };
            let session = format!("s{}", rng.below(200_000));
            // Live traffic arrives in time order: spread the events evenly over 30 days.
            let at_ms =
                start_ms + (DAYS * DAY_MS) * (stored + batch.len()) as i64 / n_events as i64;
            let mut event = Event::new(kind, &page, &session, at_ms);
            event.seq = Some(seq);
            let viewport_width = [390.0, 1024.0, 1440.0][rng.below(3) as usize];
            // Clustered positions, as real pages have: a few hot elements.
            let hot = rng.below(12) as f32;
            event.position = Some(Position {
                x: (hot * 97.0 + rng.below(120) as f32) % viewport_width,
                y: hot * 211.0 + rng.below(200) as f32,
                viewport_width,
                doc_width: viewport_width,
                doc_height: 4000.0,
            });
            batch.push(event);
        }
        let started = Instant::now();
        store.ingest(&batch)?;
        ingest_seconds += started.elapsed().as_secs_f64();
        stored += batch.len();
    }
    println!(
        "ingest: {n_events} events in {ingest_seconds:.1} s = {:.0} events/s (batches of {batch_size}, one transaction each)",
        n_events as f64 / ingest_seconds
    );
    let query = HeatmapQuery {
        page: "/page-3".into(),
        kind: EventType::Click,
        bucket: WidthBucket::Desktop,
        range: Range::new(start_ms + 1234, end_ms - 4321)?,
    };
    let mut times = Vec::new();
    let mut cells = 0;
    for _ in 0..21 {
        let started = Instant::now();
        let answer = store.heatmap(&query)?;
        times.push(started.elapsed().as_secs_f64() * 1000.0);
        cells = answer.cells.len();
    }
    times.sort_by(f64::total_cmp);
    println!(
        "30-day click heatmap, one page, desktop: median {:.2} ms, max {:.2} ms ({cells} cells)",
        times[times.len() / 2],
        times[times.len() - 1]
    );
    let moves = HeatmapQuery {
        kind: EventType::Move,
        ..query
    };
    let started = Instant::now();
    let answer = store.heatmap(&moves)?;
    println!(
        "30-day move heatmap, one page, desktop: {:.2} ms ({} events)",
        started.elapsed().as_secs_f64() * 1000.0,
        answer.events
    );
    let bytes = store.size_bytes()?;
    println!(
        "store: {:.1} MiB, {:.1} MiB per million events",
        bytes as f64 / 1048576.0,
        bytes as f64 / 1048576.0 / (n_events as f64 / 1e6)
    );
    if let Ok(status) = std::fs::read_to_string("/proc/self/status") {
        if let Some(line) = status.lines().find(|line| line.starts_with("VmHWM")) {
            println!("peak RSS: {}", line.trim_start_matches("VmHWM:").trim());
        }
    }
    drop(store);
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
