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

fn open(path: &std::path::Path, max_bytes: Option<u64>) -> Box<dyn Store> {
    let config = SqliteConfig {
        max_bytes,
        ..SqliteConfig::at(path)
    };
    Box::new(SqliteStore::open(&config).unwrap())
}

#[test]
fn sqlite_passes_the_conformance_suite() {
    let dir = TempDir::new("suite");
    let mut n = 0;
    conformance::run_all(&mut || {
        n += 1;
        open(&dir.0.join(format!("store-{n}.sqlite")), None)
    });
}

struct SqliteFiles {
    path: PathBuf,
}

impl Reopen for SqliteFiles {
    fn open(&mut self) -> Box<dyn Store> {
        open(&self.path, None)
    }

    fn open_cramped(&mut self, bytes: u64) -> Box<dyn Store> {
        let current = std::fs::metadata(&self.path).map_or(0, |meta| meta.len());
        open(&self.path, Some(current + bytes))
    }
}

#[test]
fn sqlite_keeps_exactly_what_it_acknowledged_through_a_full_disk() {
    let dir = TempDir::new("full");
    let mut files = SqliteFiles {
        path: dir.0.join("events.sqlite"),
    };
    let failures = conformance::acknowledged_batches_survive_a_full_disk_and_a_reopen(&mut files);
    eprintln!("injected {failures} full-disk failures; acknowledged = recovered after each");
    assert!(
        failures >= 10,
        "the test must hit the limit many times, hit it {failures}"
    );
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
        let store = open(&path, None);
        let events = sample_events(&mut Rng::new(9), 3000, BASE_MS, 4 * 86_400_000);
        store.ingest(&events).unwrap();
        store.heatmap(&query).unwrap()
    };
    assert!(before.events > 0);
    {
        // What a version 1 file looks like: no daily rows.
        let conn = rusqlite::Connection::open(&path).unwrap();
        conn.execute_batch(
            "DELETE FROM heat_daily; DELETE FROM heat_docs_daily; PRAGMA user_version=1;",
        )
        .unwrap();
    }
    let store = open(&path, None);
    assert_eq!(store.heatmap(&query).unwrap(), before);
}
