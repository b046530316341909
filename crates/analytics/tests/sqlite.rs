//! The SQLite engine against the conformance suite, each case on a fresh file.

use std::path::PathBuf;

use analytics::conformance::{self, Reopen};
use analytics::{SqliteConfig, SqliteStore, Store};

/// A temporary folder removed when the test ends.
struct TempDir(PathBuf);

impl TempDir {
    fn new(label: &str) -> Self {
        let dir = std::env::temp_dir().join(format!(
            "heatmap-analytics-{label}-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// How often the heat tables are written: with every batch, every few batches (so a
/// suite's queries read both tables and pending counts), and the default (the suites'
/// batches stay pending).
const HEAT_FLUSHES: [u64; 3] = [0, 450, analytics::DEFAULT_HEAT_FLUSH_EVENTS];

fn open(path: &std::path::Path, max_bytes: Option<u64>, heat_flush_events: u64) -> Box<dyn Store> {
    let config = SqliteConfig {
        max_bytes,
        heat_flush_events,
        ..SqliteConfig::at(path)
    };
    Box::new(SqliteStore::open(&config).unwrap())
}

#[test]
fn sqlite_passes_the_conformance_suite() {
    let dir = TempDir::new("suite");
    let mut n = 0;
    for heat_flush_events in HEAT_FLUSHES {
        conformance::run_all(&mut || {
            n += 1;
            open(
                &dir.0.join(format!("store-{n}.sqlite")),
                None,
                heat_flush_events,
            )
        });
    }
}

struct SqliteFiles {
    path: PathBuf,
    heat_flush_events: u64,
}

impl Reopen for SqliteFiles {
    fn open(&mut self) -> Box<dyn Store> {
        open(&self.path, None, self.heat_flush_events)
    }

    fn open_cramped(&mut self, bytes: u64) -> Box<dyn Store> {
        let current = std::fs::metadata(&self.path).map_or(0, |meta| meta.len());
        open(&self.path, Some(current + bytes), self.heat_flush_events)
    }
}

#[test]
fn sqlite_keeps_exactly_what_it_acknowledged_through_a_full_disk() {
    let dir = TempDir::new("full");
    for heat_flush_events in HEAT_FLUSHES {
        let mut files = SqliteFiles {
            path: dir.0.join(format!("events-{heat_flush_events}.sqlite")),
            heat_flush_events,
        };
        let failures =
            conformance::acknowledged_batches_survive_a_full_disk_and_a_reopen(&mut files);
        eprintln!(
            "heat flushed every {heat_flush_events} events: injected {failures} full-disk \
             failures; acknowledged = recovered after each"
        );
        assert!(
            failures >= 10,
            "the test must hit the limit many times, hit it {failures}"
        );
    }
}

#[test]
fn sqlite_rebuilds_pending_heat_from_the_events_after_a_reopen() {
    let dir = TempDir::new("reopen");
    for heat_flush_events in HEAT_FLUSHES {
        let mut files = SqliteFiles {
            path: dir.0.join(format!("events-{heat_flush_events}.sqlite")),
            heat_flush_events,
        };
        conformance::aggregates_survive_a_reopen(&mut files);
    }
}

#[test]
fn a_version_1_file_gets_its_daily_rollups_built_when_opened() {
    use analytics::conformance::{sample_events, Rng, BASE_MS};
    use analytics::{HeatmapQuery, Range, WidthBucket};
    use protocol::analytics::EventType;

    let dir = TempDir::new("migrate");
    let path = dir.0.join("events.sqlite");
    let query = HeatmapQuery {
        page: "/".into(),
        kind: EventType::Move,
        bucket: WidthBucket::Desktop,
        range: Range::all(),
    };
    let before = {
        // A version 1 file's heat tables hold every event.
        let store = open(&path, None, 0);
        let events = sample_events(&mut Rng::new(9), 3000, BASE_MS, 4 * 86_400_000);
        store.ingest(&events).unwrap();
        store.heatmap(&query).unwrap()
    };
    assert!(before.events > 0);
    {
        // What a version 1 file looks like: no daily rows.
        let conn = rusqlite::Connection::open(&path).unwrap();
        conn.execute_batch(
            "DELETE FROM heat_daily; DELETE FROM heat_docs_daily; DROP TABLE meta;
             PRAGMA user_version=1;",
        )
        .unwrap();
    }
    let store = open(&path, None, analytics::DEFAULT_HEAT_FLUSH_EVENTS);
    assert_same_heat(&store.heatmap(&query).unwrap(), &before);
}

/// Heatmaps are equal: the same cells and events, and mean aspect ratios equal but for
/// rounding (sums of floats taken in another order).
fn assert_same_heat(actual: &analytics::HeatmapCells, expected: &analytics::HeatmapCells) {
    assert_eq!(
        (&actual.cells, actual.events),
        (&expected.cells, expected.events)
    );
    assert!((actual.mean_aspect - expected.mean_aspect).abs() < 1e-9);
}

#[test]
fn a_version_2_file_keeps_its_heat_and_counts_new_events_once() {
    use analytics::conformance::{sample_events, Rng, BASE_MS};
    use analytics::{Filter, HeatmapQuery, Range, WidthBucket};
    use protocol::analytics::EventType;

    let dir = TempDir::new("migrate2");
    let path = dir.0.join("events.sqlite");
    let query = HeatmapQuery {
        page: "/pricing".into(),
        kind: EventType::Click,
        bucket: WidthBucket::Mobile,
        range: Range::all(),
    };
    let events = sample_events(&mut Rng::new(11), 4000, BASE_MS, 3 * 86_400_000);
    let (old, new) = events.split_at(2500);
    let (before, all) = {
        // Version 2 wrote the heat tables with every batch and had no `meta` table.
        let store = open(&dir.0.join("reference.sqlite"), None, 0);
        store.ingest(old).unwrap();
        let before = store.heatmap(&query).unwrap();
        store.ingest(new).unwrap();
        (before, store.heatmap(&query).unwrap())
    };
    assert!(before.events > 0 && all.events > before.events);
    {
        let store = open(&path, None, 0);
        store.ingest(old).unwrap();
    }
    {
        let conn = rusqlite::Connection::open(&path).unwrap();
        conn.execute_batch("DROP TABLE meta; PRAGMA user_version=2;")
            .unwrap();
    }
    let store = open(&path, None, analytics::DEFAULT_HEAT_FLUSH_EVENTS);
    // Heat kept, not counted twice.
    assert_same_heat(&store.heatmap(&query).unwrap(), &before);
    assert_eq!(store.ingest(old).unwrap().duplicates, old.len() as u64);
    store.ingest(new).unwrap();
    assert_same_heat(&store.heatmap(&query).unwrap(), &all);
    let totals = store.totals(Range::all(), &Filter::default(), 10).unwrap();
    assert_eq!(totals.events, events.len() as u64);
    drop(store);
    let version: i64 = rusqlite::Connection::open(&path)
        .unwrap()
        .query_row("PRAGMA user_version", [], |row| row.get(0))
        .unwrap();
    assert_eq!(version, 5, "migrated through to the newest version");
}

#[test]
fn a_version_3_file_gets_its_page_sessions_and_new_columns_when_opened() {
    use analytics::conformance::{sample_events, Rng, BASE_MS};
    use analytics::{Filter, Range};

    let dir = TempDir::new("migrate3");
    let path = dir.0.join("events.sqlite");
    let events = sample_events(&mut Rng::new(13), 3000, BASE_MS, 2 * 86_400_000);
    // A range with partial hours at both ends, so both the table and the edges count.
    let range = Range::new(BASE_MS + 1_234_567, BASE_MS + 86_400_000 + 7_654_321).unwrap();
    let pricing = Filter {
        page: Some("/pricing".into()),
        country: None,
    };
    let mut expected: Vec<&str> = events
        .iter()
        .filter(|event| event.page == "/pricing" && range.contains(event.at_ms))
        .map(|event| event.session.as_str())
        .collect();
    expected.sort_unstable();
    expected.dedup();
    assert!(expected.len() > 10);
    {
        let store = open(&path, None, 0);
        store.ingest(&events).unwrap();
    }
    {
        // What a version 3 file looks like: no page_sessions, no device or referrer.
        let conn = rusqlite::Connection::open(&path).unwrap();
        conn.execute_batch(
            "DROP TABLE page_sessions;
             ALTER TABLE events DROP COLUMN device;
             ALTER TABLE events DROP COLUMN referrer;
             ALTER TABLE session_hourly DROP COLUMN device;
             ALTER TABLE session_hourly DROP COLUMN referrer;
             PRAGMA user_version=3;",
        )
        .unwrap();
    }
    let store = open(&path, None, analytics::DEFAULT_HEAT_FLUSH_EVENTS);
    let totals = store.totals(range, &pricing, 10).unwrap();
    assert_eq!(totals.sessions, expected.len() as u64);
    assert_eq!(
        store.sessions(range, &pricing, 10_000).unwrap().len(),
        expected.len()
    );
    let mut visitor = analytics::Event::new(
        protocol::analytics::EventType::Pageview,
        "/pricing",
        "referred",
        BASE_MS + 86_400_000,
    );
    visitor.device = Some("mobile".into());
    visitor.referrer = Some("news.example".into());
    store.ingest(&[visitor]).unwrap();
    let listed = store.sessions(Range::all(), &pricing, 10_000).unwrap();
    let row = listed.iter().find(|row| row.session == "referred").unwrap();
    assert_eq!(
        (row.device.as_deref(), row.referrer.as_deref()),
        (Some("mobile"), Some("news.example"))
    );
}
