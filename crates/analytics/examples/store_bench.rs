//! Measures a store (SQLite, or PostgreSQL with the `postgres` feature): ingest rate (wall clock and the ingesting thread's CPU time,
//! which other work on the machine does not inflate), 1-day and 30-day click and move
//! heatmaps for one page, file size and peak memory, at a chosen number of stored events.
//!
//! `cargo run --release -p analytics --example store_bench -- [events] [folder]`
//! (default 1,000,000 events in a temporary folder). With `--features postgres`, the
//! second argument may instead be a `postgres://…` URL (an empty database), or just
//! `postgres` to start a server of its own (Debian's, `fsync` on, in a temporary folder).
//! `BATCH` sets the events per ingest call (default 500), `HEAT_FLUSH` the SQLite store's
//! `heat_flush_events`, `CACHE_MIB` and `MMAP_MIB` its page cache and memory map. `LIVE=1` sends
//! what a live site sends instead of 30 days of history: events as they arrive at
//! 300,000 a second, from 1,000 sessions.

use std::time::Instant;

use analytics::conformance::Rng;
use analytics::{
    Event, Filter, HeatmapQuery, Position, Range, SqliteConfig, SqliteStore, Store, WidthBucket,
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
    let on_postgres = dir.to_string_lossy().starts_with("postgres");
    if !on_postgres {
        let _ = std::fs::remove_dir_all(&dir);
    }
    let mut config = SqliteConfig::at(&dir.join("events.sqlite"));
    if let Some(text) = std::env::var_os("HEAT_FLUSH") {
        config.heat_flush_events = text.to_string_lossy().replace('_', "").parse()?;
    }
    if let Some(text) = std::env::var_os("CACHE_MIB") {
        config.cache_mib = text.to_string_lossy().parse()?;
    }
    if let Some(text) = std::env::var_os("MMAP_MIB") {
        config.mmap_mib = text.to_string_lossy().parse()?;
    }
    let engine = Engine::open(&dir, &config)?;
    let store = engine.store();
    let end_ms = 1_781_481_600_000i64;
    let live = std::env::var_os("LIVE").is_some_and(|value| value != "0");
    let (n_sessions, span_ms) = if live {
        (1_000, (n_events as i64 / 300).max(1))
    } else {
        (0, DAYS * DAY_MS)
    };
    let mut rng = Rng::new(42);
    let mut seq = 0u64;
    let mut ingest_seconds = 0.0;
    let mut ingest_cpu_seconds = 0.0;
    let mut batch = Vec::with_capacity(batch_size);
    let mut stored = 0usize;
    while stored < n_events {
        batch.clear();
        for _ in 0..batch_size.min(n_events - stored) {
            seq += 1;
            let idx = (stored + batch.len()) as u64;
            // History arrives as visits: a session's 100 events in a row, 25 per page.
            // Live traffic interleaves 1,000 sessions at random.
            let (page, session) = if live {
                (rng.below(PAGES), rng.below(n_sessions))
            } else {
                (
                    ((idx / 25).wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 32) % PAGES,
                    idx / 100,
                )
            };
            let page = format!("/page-{page}");
            let kind = if rng.below(4) == 0 {
                EventType::Click
            } else {
                EventType::Move
            };
            let session = format!("s{session}");
            // Live traffic arrives in time order: spread the events evenly over the span.
            let at_ms =
                end_ms - span_ms + span_ms * (stored + batch.len()) as i64 / n_events as i64;
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
        let cpu_started = thread_cpu_seconds();
        store.ingest(&batch)?;
        ingest_seconds += started.elapsed().as_secs_f64();
        ingest_cpu_seconds += thread_cpu_seconds() - cpu_started;
        stored += batch.len();
    }
    println!(
        "ingest: {n_events} events in {ingest_seconds:.1} s = {:.0} events/s (batches of {batch_size}, one transaction each, {})",
        n_events as f64 / ingest_seconds,
        engine.describe(&config)
    );
    println!(
        "ingest CPU: {ingest_cpu_seconds:.1} s = {:.2} µs per event ({:.0} events/s of CPU)",
        ingest_cpu_seconds * 1e6 / n_events as f64,
        n_events as f64 / ingest_cpu_seconds
    );
    // What a restart after a crash costs: SQLite re-reads the heat of the events not yet
    // written to the heat tables (up to `heat_flush_events` of them) from the raw events.
    let started = Instant::now();
    engine.reopen(&config)?;
    println!(
        "open again: {:.0} ms",
        started.elapsed().as_secs_f64() * 1000.0
    );
    // Live events reach the end of the span: include them.
    let query_end_ms = end_ms + if live { 4321 } else { -4321 };
    for days in [1, DAYS] {
        for kind in [EventType::Click, EventType::Move] {
            // The range's ends cut hours, so raw edges are read too, and (for 1 day) days.
            let query = HeatmapQuery {
                page: "/page-3".into(),
                kind,
                bucket: WidthBucket::Desktop,
                range: Range::new(end_ms - days * DAY_MS + 1234, query_end_ms)?,
            };
            let mut times = Vec::new();
            let mut answer = store.heatmap(&query)?;
            for _ in 0..21 {
                let started = Instant::now();
                answer = store.heatmap(&query)?;
                times.push(started.elapsed().as_secs_f64() * 1000.0);
            }
            times.sort_by(f64::total_cmp);
            println!(
                "{days}-day {kind:?} heatmap, one page, desktop: median {:.2} ms, max {:.2} ms ({} cells, {} events)",
                times[times.len() / 2],
                times[times.len() - 1],
                answer.cells.len(),
                answer.events
            );
        }
    }
    // What a heatmap's caption and a page-filtered summary ask besides the cells: the
    // page's visitors over the range.
    let page_filter = Filter {
        page: Some("/page-3".into()),
        country: None,
    };
    let range = Range::new(end_ms - DAYS * DAY_MS, query_end_ms)?;
    let mut times = Vec::new();
    let mut totals = store.totals(range, &page_filter, 10)?;
    for _ in 0..11 {
        let started = Instant::now();
        totals = store.totals(range, &page_filter, 10)?;
        times.push(started.elapsed().as_secs_f64() * 1000.0);
    }
    times.sort_by(f64::total_cmp);
    println!(
        "{DAYS}-day totals, one page (its events and visitors): median {:.2} ms, max {:.2} ms ({} events, {} sessions)",
        times[times.len() / 2],
        times[times.len() - 1],
        totals.events,
        totals.sessions
    );
    let bytes = engine.size_bytes()?;
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
    drop(engine);
    if !on_postgres {
        let _ = std::fs::remove_dir_all(&dir);
    }
    Ok(())
}

/// The store measured: SQLite in a folder, or PostgreSQL at a URL.
enum Engine {
    Sqlite(Box<SqliteStore>),
    #[cfg(feature = "postgres")]
    Postgres {
        store: Box<analytics::PostgresStore>,
        url: String,
        /// The server the bench started, stopped when it ends.
        _server: Option<testkit::postgres::Postgres>,
    },
}

impl Engine {
    fn open(target: &std::path::Path, config: &SqliteConfig) -> anyhow::Result<Self> {
        let text = target.to_string_lossy();
        if text == "postgres" || text.starts_with("postgres://") {
            return Self::open_postgres(&text);
        }
        std::fs::create_dir_all(target)?;
        Ok(Engine::Sqlite(Box::new(SqliteStore::open(config)?)))
    }

    #[cfg(feature = "postgres")]
    fn open_postgres(target: &str) -> anyhow::Result<Self> {
        use testkit::postgres::{Postgres, PostgresOptions};
        let (server, url) = if target == "postgres" {
            let server = Postgres::start_with(PostgresOptions { fsync: true })?;
            let url = server.url();
            (Some(server), url)
        } else {
            (None, target.to_owned())
        };
        let store = Box::new(analytics::PostgresStore::open(
            &analytics::PostgresConfig::at(&url),
        )?);
        Ok(Engine::Postgres {
            store,
            url,
            _server: server,
        })
    }

    #[cfg(not(feature = "postgres"))]
    fn open_postgres(_target: &str) -> anyhow::Result<Self> {
        anyhow::bail!("this example was built without the postgres feature (--features postgres)")
    }

    fn store(&self) -> &dyn Store {
        match self {
            Engine::Sqlite(store) => &**store,
            #[cfg(feature = "postgres")]
            Engine::Postgres { store, .. } => &**store,
        }
    }

    fn describe(&self, config: &SqliteConfig) -> String {
        match self {
            Engine::Sqlite(_) => format!(
                "sqlite, heat written every {} events",
                config.heat_flush_events
            ),
            #[cfg(feature = "postgres")]
            Engine::Postgres { .. } => {
                "postgresql, every aggregate in the batch's transaction".into()
            }
        }
    }

    fn reopen(&self, config: &SqliteConfig) -> anyhow::Result<()> {
        match self {
            Engine::Sqlite(_) => drop(SqliteStore::open(config)?),
            #[cfg(feature = "postgres")]
            Engine::Postgres { url, .. } => drop(analytics::PostgresStore::open(
                &analytics::PostgresConfig::at(url),
            )?),
        }
        Ok(())
    }

    fn size_bytes(&self) -> anyhow::Result<u64> {
        Ok(match self {
            Engine::Sqlite(store) => store.size_bytes()?,
            #[cfg(feature = "postgres")]
            Engine::Postgres { store, .. } => store.size_bytes()?,
        })
    }
}

/// CPU time this thread has run, in seconds (0 where `/proc` does not say).
fn thread_cpu_seconds() -> f64 {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|text| text.split_whitespace().next()?.parse::<f64>().ok())
        .map_or(0.0, |ns| ns / 1e9)
}
