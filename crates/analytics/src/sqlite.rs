//! The embedded engine: one SQLite file in `--data-dir`, WAL mode, one transaction per
//! batch covering its events and their page and session counts (heat counts follow in
//! steps, see below).
//!
//! Tables (see `docs/storage.md`):
//! - `events`: every accepted event (raw, for sessions, journeys and re-aggregation).
//! - `heat_hourly`: events per page, kind, width bucket, hour and heat cell.
//! - `heat_docs`: events per page, kind, bucket and hour with the sum of document aspect
//!   ratios, to size an image without reading raw events.
//! - `page_hourly`: events per page, hour, kind and country, for totals and top lists.
//! - `session_hourly`: one row per session and hour it was active in (first and last event
//!   of that hour, events, country).
//! - `heat_daily`, `heat_docs_daily`: the heat counts per day.
//! - `meta`: `heat_through`, the last event id the heat tables hold.
//!
//! A query over a range sums the hourly rows of the whole hours inside it and reads raw
//! events only for the partial hours at its ends, so its cost follows the range and the
//! number of cells, not the number of events.
//!
//! The heat tables are written in steps of many batches, not per batch: a batch commits
//! its events with their page and session counts, and its heat counts join a pending set
//! in memory ([`HeatFold`]) that is written out (with `heat_through`) once it holds
//! [`SqliteConfig::heat_flush_events`] events. Every heat row of a busy hour or day is then
//! rewritten once per flush instead of once per batch. Nothing acknowledged depends on the
//! pending set: it is a function of the committed events after `heat_through`, rebuilt
//! from them when the file is opened, and heatmap queries add it to what the tables hold.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use rusqlite::{
    named_params, params, Connection, OptionalExtension, Transaction, TransactionBehavior,
};

use crate::aggregate::{heat_cell, hour_of, HOUR_MS};
use crate::error::StoreError;
use crate::event::{kind_code, kind_of, Event, Position};
use crate::pending::HeatFold;
use crate::query::{Filter, HeatmapCells, HeatmapQuery, Range, RawSelection, SessionRow, Totals};
use crate::span::{split_days, split_hours, top, Rollup};
use crate::store::{Ingested, Store};
use protocol::analytics::EventType;

/// The schema's version, stored in `PRAGMA user_version`; a newer file is refused.
const SCHEMA_VERSION: i64 = 5;

/// The default page cache of each connection, in MiB (see [`SqliteConfig::cache_mib`]).
pub const DEFAULT_CACHE_MIB: u32 = 16;

/// The default of [`SqliteConfig::heat_flush_events`]: at most about 30 MiB of pending heat
/// counts (with the copy a flush takes), re-read in about a second at open, while a busy
/// hour's heat rows are rewritten once per quarter of a million events instead of once
/// per batch.
pub const DEFAULT_HEAT_FLUSH_EVENTS: u64 = 250_000;

/// Rows deleted per statement when pruning, so a large prune never holds the write lock
/// for long.
const PRUNE_CHUNK: i64 = 20_000;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS pages (
    id INTEGER PRIMARY KEY,
    path TEXT NOT NULL UNIQUE
);
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY,
    at_ms INTEGER NOT NULL,
    received_ms INTEGER NOT NULL,
    kind INTEGER NOT NULL,
    page_id INTEGER NOT NULL,
    session TEXT NOT NULL,
    seq INTEGER,
    country TEXT,
    x REAL, y REAL, vw REAL, dw REAL, dh REAL,
    element TEXT, ox REAL, oy REAL,
    depth REAL,
    visible INTEGER
);
CREATE UNIQUE INDEX IF NOT EXISTS events_time_key ON events (at_ms, session, seq);
CREATE INDEX IF NOT EXISTS events_page_kind_time ON events (page_id, kind, at_ms);
CREATE TABLE IF NOT EXISTS heat_hourly (
    page_id INTEGER NOT NULL, kind INTEGER NOT NULL, bucket INTEGER NOT NULL,
    hour INTEGER NOT NULL, cx INTEGER NOT NULL, cy INTEGER NOT NULL, n INTEGER NOT NULL,
    PRIMARY KEY (page_id, kind, bucket, hour, cx, cy)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS heat_docs (
    page_id INTEGER NOT NULL, kind INTEGER NOT NULL, bucket INTEGER NOT NULL,
    hour INTEGER NOT NULL, n INTEGER NOT NULL, aspect_sum REAL NOT NULL,
    PRIMARY KEY (page_id, kind, bucket, hour)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS heat_daily (
    page_id INTEGER NOT NULL, kind INTEGER NOT NULL, bucket INTEGER NOT NULL,
    day INTEGER NOT NULL, cx INTEGER NOT NULL, cy INTEGER NOT NULL, n INTEGER NOT NULL,
    PRIMARY KEY (page_id, kind, bucket, day, cx, cy)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS heat_docs_daily (
    page_id INTEGER NOT NULL, kind INTEGER NOT NULL, bucket INTEGER NOT NULL,
    day INTEGER NOT NULL, n INTEGER NOT NULL, aspect_sum REAL NOT NULL,
    PRIMARY KEY (page_id, kind, bucket, day)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS page_hourly (
    hour INTEGER NOT NULL, page_id INTEGER NOT NULL, kind INTEGER NOT NULL,
    country TEXT NOT NULL, n INTEGER NOT NULL,
    PRIMARY KEY (hour, page_id, kind, country)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS session_hourly (
    hour INTEGER NOT NULL,
    session TEXT NOT NULL,
    first_ms INTEGER NOT NULL,
    last_ms INTEGER NOT NULL,
    events INTEGER NOT NULL,
    country TEXT,
    PRIMARY KEY (hour, session)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS meta (
    key TEXT PRIMARY KEY,
    value INTEGER NOT NULL
) WITHOUT ROWID;
";

/// Fills the daily heat rollups (new in version 2) from the hourly rows of a version 1 file.
const MIGRATE_1_TO_2: &str = "
BEGIN;
INSERT INTO heat_daily (page_id, kind, bucket, day, cx, cy, n)
    SELECT page_id, kind, bucket, hour / 24, cx, cy, SUM(n) FROM heat_hourly
    WHERE true GROUP BY page_id, kind, bucket, hour / 24, cx, cy
    ON CONFLICT DO NOTHING;
INSERT INTO heat_docs_daily (page_id, kind, bucket, day, n, aspect_sum)
    SELECT page_id, kind, bucket, hour / 24, SUM(n), SUM(aspect_sum) FROM heat_docs
    WHERE true GROUP BY page_id, kind, bucket, hour / 24
    ON CONFLICT DO NOTHING;
COMMIT;
";

/// Version 3 writes the heat tables in steps and records in `meta` how far they reach; in
/// a version 2 file they hold every stored event.
const MIGRATE_2_TO_3: &str = "
BEGIN;
INSERT OR IGNORE INTO meta (key, value)
    VALUES ('heat_through', COALESCE((SELECT MAX(id) FROM events), 0));
PRAGMA user_version=3;
COMMIT;
";

/// Columns version 4 adds: the device and referrer of events and sessions.
const COLUMNS_4: [(&str, &str); 4] = [
    ("events", "device"),
    ("events", "referrer"),
    ("session_hourly", "device"),
    ("session_hourly", "referrer"),
];

/// Version 4 also records which sessions visited each page in each hour
/// (`page_sessions`), so a page's session count reads one row per session and hour
/// instead of every raw event of the page. Existing events fill it once.
const MIGRATE_3_TO_4: &str = "
CREATE TABLE IF NOT EXISTS page_sessions (
    page_id INTEGER NOT NULL,
    hour INTEGER NOT NULL,
    session TEXT NOT NULL,
    country TEXT NOT NULL,
    PRIMARY KEY (page_id, hour, session, country)
) WITHOUT ROWID;
INSERT OR IGNORE INTO page_sessions (page_id, hour, session, country)
    SELECT page_id, at_ms / 3600000, session, COALESCE(country, '') FROM events WHERE true;
PRAGMA user_version=4;
";

/// How to open the SQLite store.
#[derive(Debug, Clone)]
pub struct SqliteConfig {
    /// The database file (its `-wal` and `-shm` files sit beside it).
    pub path: PathBuf,
    /// Sync the disk at every commit (`synchronous=FULL`): a committed batch survives a
    /// power cut. Without it (`NORMAL` in WAL mode) it survives a crash of the process.
    pub fsync: bool,
    /// The largest the file may grow, in bytes; a batch that would pass it is refused with
    /// [`StoreError::Full`], exactly like a full disk. `None`: no limit but the disk's.
    pub max_bytes: Option<u64>,
    /// How many stored events' heat counts are held in memory before they are written to
    /// the heat tables in one transaction. More means fewer rewrites of the same heat
    /// rows (faster ingest) but more memory (at most about 120 bytes an event, counting
    /// the copy a flush takes) and more events to re-read at open after a crash. 0 writes
    /// them with every batch, as version 2 did.
    pub heat_flush_events: u64,
    /// The page cache of each of the two connections, in MiB. Every key the writer adds to
    /// grows at the end of its index (keys start with the time), so the hot pages are few
    /// and 16 MiB holds them; SQLite's own default of 2 MiB made every insert a read.
    pub cache_mib: u32,
    /// How much of the file the writer maps into memory, in MiB (0: none, reads go through
    /// the page cache). Mapped pages count in the process's resident memory.
    pub mmap_mib: u32,
}

impl SqliteConfig {
    /// The defaults for a file at `path`.
    pub fn at(path: &Path) -> Self {
        SqliteConfig {
            path: path.to_owned(),
            fsync: false,
            max_bytes: None,
            heat_flush_events: DEFAULT_HEAT_FLUSH_EVENTS,
            cache_mib: DEFAULT_CACHE_MIB,
            mmap_mib: 0,
        }
    }
}

/// The SQLite engine behind [`Store`].
///
/// One connection writes (behind a mutex: SQLite has one writer at a time anyway) and one
/// reads, so queries from dashboards never wait behind an ingest (WAL readers see the last
/// commit).
#[derive(Debug)]
pub struct SqliteStore {
    /// Taken for every write; held across a whole ingest or prune.
    writer: Mutex<Writer>,
    /// Taken by queries, so they never wait behind an ingest.
    reader: Mutex<Connection>,
    /// Heat counts of committed events the heat tables do not hold yet. The writer adds
    /// to it after each commit and empties it after a flush; queries copy the part they
    /// need and add it only when their snapshot's `heat_through` equals its `base`. Never
    /// held while SQL runs.
    pending: Mutex<HeatFold>,
    path: PathBuf,
    heat_flush_events: u64,
}

/// The writing connection and what it has seen committed.
#[derive(Debug)]
struct Writer {
    conn: Connection,
    page_ids: HashMap<String, i64>,
    /// The id the next stored event gets. Ids are assigned here, not by SQLite, so they
    /// keep growing even after a prune empties the table (`heat_through` relies on it).
    next_id: i64,
}

impl SqliteStore {
    /// Opens (creating) the database and applies the schema.
    ///
    /// # Errors
    /// The file cannot be opened or created, is not a database, or was written by a newer
    /// version of this schema.
    pub fn open(config: &SqliteConfig) -> Result<Self, StoreError> {
        if let Some(parent) = config.path.parent() {
            std::fs::create_dir_all(parent).map_err(|err| {
                StoreError::Unavailable(format!("create {}: {err}", parent.display()))
            })?;
        }
        let conn = Connection::open(&config.path)?;
        conn.busy_timeout(Duration::from_secs(5))?;
        let mode: String = conn.query_row("PRAGMA journal_mode=WAL", [], |row| row.get(0))?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(StoreError::Unavailable(format!(
                "{} cannot use write-ahead logging (journal_mode is {mode})",
                config.path.display()
            )));
        }
        let sync = if config.fsync { "FULL" } else { "NORMAL" };
        // The page cache keeps the indexes' hot pages (the newest hours) in memory.
        // Checkpointing the WAL every 64 MiB instead of every 4 MiB writes each hot page
        // back once per many batches (1.7x the ingest rate at batches of 500).
        let cache_kib = u64::from(config.cache_mib.max(1)) * 1024;
        let mmap_bytes = u64::from(config.mmap_mib) * 1024 * 1024;
        conn.execute_batch(&format!(
            "PRAGMA synchronous={sync}; PRAGMA foreign_keys=OFF; PRAGMA cache_size=-{cache_kib}; PRAGMA temp_store=MEMORY; PRAGMA mmap_size={mmap_bytes}; PRAGMA wal_autocheckpoint=16384;"
        ))?;
        let version: i64 = conn.query_row("PRAGMA user_version", [], |row| row.get(0))?;
        if version > SCHEMA_VERSION {
            return Err(StoreError::Other(format!(
                "{} has schema version {version}; this build knows up to {SCHEMA_VERSION}",
                config.path.display()
            )));
        }
        conn.execute_batch(SCHEMA)?;
        if version == 1 {
            // Version 2 added the daily heat rollups: build them from the hourly rows.
            conn.execute_batch(MIGRATE_1_TO_2)?;
        }
        if version < 3 {
            conn.execute_batch(MIGRATE_2_TO_3)?;
        }
        if version < 4 {
            migrate_3_to_4(&conn)?;
        }
        if version < 5 {
            migrate_4_to_5(&conn)?;
        }
        conn.execute_batch(&format!("PRAGMA user_version={SCHEMA_VERSION}"))?;
        let pending = unflushed_heat(&conn)?;
        let max_id: i64 = conn.query_row("SELECT COALESCE(MAX(id), 0) FROM events", [], |row| {
            row.get(0)
        })?;
        if let Some(max_bytes) = config.max_bytes {
            let page_size: i64 = conn.query_row("PRAGMA page_size", [], |row| row.get(0))?;
            let pages = (max_bytes as i64 / page_size.max(512)).max(1);
            // The pragma answers the limit in force (never below the current size).
            let _: i64 = conn.query_row(&format!("PRAGMA max_page_count={pages}"), [], |row| {
                row.get(0)
            })?;
        }
        let reader = Connection::open(&config.path)?;
        reader.busy_timeout(Duration::from_secs(5))?;
        reader.execute_batch(&format!("PRAGMA cache_size=-{cache_kib};"))?;
        Ok(SqliteStore {
            writer: Mutex::new(Writer {
                conn,
                page_ids: HashMap::new(),
                next_id: max_id.max(pending.base) + 1,
            }),
            reader: Mutex::new(reader),
            pending: Mutex::new(pending),
            path: config.path.clone(),
            heat_flush_events: config.heat_flush_events,
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Bytes the database uses (pages in use times the page size), for the metrics.
    ///
    /// # Errors
    /// The engine's error.
    pub fn size_bytes(&self) -> Result<u64, StoreError> {
        let reader = lock(&self.reader);
        let pages: i64 = reader.query_row("PRAGMA page_count", [], |row| row.get(0))?;
        let page_size: i64 = reader.query_row("PRAGMA page_size", [], |row| row.get(0))?;
        Ok((pages * page_size).max(0) as u64)
    }

    /// Writes a consistent copy of the database to `target` while it stays in use
    /// (SQLite's online backup), for `--data-dir` backups.
    ///
    /// # Errors
    /// The engine's error.
    pub fn backup_to(&self, target: &Path) -> Result<(), StoreError> {
        let reader = lock(&self.reader);
        let mut copy = Connection::open(target)?;
        let backup = rusqlite::backup::Backup::new(&reader, &mut copy)?;
        backup.run_to_completion(1024, Duration::from_millis(0), None)?;
        Ok(())
    }
}

impl SqliteStore {
    /// Writes the pending heat counts to the heat tables now, so the tables alone hold
    /// every stored event (before a prune, which edits them by hour).
    ///
    /// # Errors
    /// The engine's error; the counts stay pending and nothing is lost.
    pub fn flush(&self) -> Result<(), StoreError> {
        let mut writer = lock(&self.writer);
        let through = writer.next_id - 1;
        let pending = lock(&self.pending).clone();
        if pending.base == through {
            return Ok(());
        }
        let tx = writer.conn.transaction()?;
        write_heat(&tx, &pending, through)?;
        tx.commit()?;
        *lock(&self.pending) = HeatFold::on(through);
        Ok(())
    }
}

impl Store for SqliteStore {
    fn ingest(&self, events: &[Event]) -> Result<Ingested, StoreError> {
        let mut writer = lock(&self.writer);
        let Writer {
            conn,
            page_ids,
            next_id,
        } = &mut *writer;
        let tx = conn.transaction()?;
        let mut new_pages = HashMap::new();
        let mut heat = HeatFold::default();
        let mut last_id = *next_id - 1;
        let outcome = ingest_in(
            &tx,
            events,
            page_ids,
            &mut new_pages,
            &mut heat,
            &mut last_id,
        )?;
        // Write the pending heat out with this batch's once there is enough of it. The
        // pending set stays as it is until the commit succeeds, so a failed flush loses
        // nothing: the next batch tries again.
        let flushed = {
            let pending = lock(&self.pending);
            if pending.events + heat.events > self.heat_flush_events {
                let mut all = pending.clone();
                drop(pending);
                all.add(&heat);
                write_heat(&tx, &all, last_id)?;
                true
            } else {
                false
            }
        };
        tx.commit()?;
        // Only committed pages and ids are remembered: a rolled-back id may be reused.
        page_ids.extend(new_pages);
        *next_id = last_id + 1;
        let mut pending = lock(&self.pending);
        if flushed {
            *pending = HeatFold::on(last_id);
        } else {
            pending.add(&heat);
        }
        Ok(outcome)
    }

    fn heatmap(&self, query: &HeatmapQuery) -> Result<HeatmapCells, StoreError> {
        let mut reader = lock(&self.reader);
        // A page's id never changes once committed, so it may be read outside the snapshot.
        let Some(page_id) = page_id_of(&reader, &query.page)? else {
            return Ok(HeatmapCells::default());
        };
        let kind = kind_code(query.kind);
        let bucket = query.bucket.code();
        // The pending heat is copied before the snapshot starts, so the snapshot is at least
        // as new as the copy: it either holds the same `heat_through` (add the copy) or a
        // later one, whose flush already put the copy's counts in the tables (skip it). It
        // is copied for the range read up to the end of its last hour, in case the snapshot
        // shows that hour may be read whole (see [`answerable`]).
        let widest = Range {
            from_ms: query.range.from_ms,
            to_ms: hour_end(query.range.to_ms),
        };
        let pending_hours = split_hours(widest).0;
        let unwritten = pending_hours.map(|hours| {
            let pending = lock(&self.pending);
            (pending.base, pending.spans((page_id, kind, bucket), hours))
        });
        // One snapshot for the tables, the raw edges and `heat_through`; it starts with the
        // first read below.
        let reader = reader.transaction_with_behavior(TransactionBehavior::Deferred)?;
        let (whole, edges) = split_hours(answerable(&reader, query.range)?);
        let through: i64 = reader
            .prepare_cached("SELECT value FROM meta WHERE key = 'heat_through'")?
            .query_row([], |row| row.get(0))?;
        let mut cells: HashMap<(i64, i64), u64> = HashMap::new();
        let (mut events, mut aspect_sum) = (0u64, 0f64);
        if let (Some((base, spans)), Some((first, end))) = (unwritten, whole) {
            if through == base {
                for (_, span) in spans.iter().filter(|(hour, _)| (first..end).contains(hour)) {
                    for (cell, n) in &span.cells {
                        *cells.entry(*cell).or_default() += (*n).max(0) as u64;
                    }
                    events += span.events.max(0) as u64;
                    aspect_sum += span.aspect_sum;
                }
            }
        }
        let rollups = whole.map(split_days).unwrap_or_default();
        for (level, span) in rollups {
            let (cells_sql, docs_sql) = match level {
                Rollup::Day => (HEAT_DAILY_SQL, HEAT_DOCS_DAILY_SQL),
                Rollup::Hour => (HEAT_HOURLY_SQL, HEAT_DOCS_HOURLY_SQL),
            };
            let key = params![page_id, kind, bucket, span.0, span.1];
            let mut statement = reader.prepare_cached(cells_sql)?;
            let rows = statement.query_map(key, |row| {
                Ok((
                    row.get::<_, i64>(0)?,
                    row.get::<_, i64>(1)?,
                    row.get::<_, i64>(2)?,
                ))
            })?;
            for row in rows {
                let (cx, cy, n) = row?;
                *cells.entry((cx, cy)).or_default() += n.max(0) as u64;
            }
            let (n, sum): (i64, f64) = reader
                .prepare_cached(docs_sql)?
                .query_row(key, |row| Ok((row.get(0)?, row.get(1)?)))?;
            events += n.max(0) as u64;
            aspect_sum += sum;
        }
        for edge in edges {
            let mut statement = reader.prepare_cached(HEAT_EDGE_SQL)?;
            let rows =
                statement.query_map(params![page_id, kind, edge.from_ms, edge.to_ms], |row| {
                    Ok(Position {
                        x: row.get::<_, f64>(0)? as f32,
                        y: row.get::<_, f64>(1)? as f32,
                        viewport_width: row.get::<_, f64>(2)? as f32,
                        doc_width: row.get::<_, f64>(3)? as f32,
                        doc_height: row.get::<_, f64>(4)? as f32,
                    })
                })?;
            for position in rows {
                let mut event = Event::new(query.kind, &query.page, "", 0);
                event.position = Some(position?);
                if let Some((cell_bucket, cx, cy)) = heat_cell(&event) {
                    if cell_bucket == query.bucket {
                        *cells.entry((cx, cy)).or_default() += 1;
                        events += 1;
                        aspect_sum += aspect(&event);
                    }
                }
            }
        }
        Ok(HeatmapCells::from_sums(cells, events, aspect_sum))
    }

    fn totals(&self, range: Range, filter: &Filter, limit: usize) -> Result<Totals, StoreError> {
        let mut reader = lock(&self.reader);
        // One snapshot, so the newest event read by [`answerable`] is the newest the counts
        // below see.
        let reader = reader.transaction_with_behavior(TransactionBehavior::Deferred)?;
        let page_id = match &filter.page {
            Some(page) => match page_id_of(&reader, page)? {
                Some(id) => Some(id),
                None => return Ok(Totals::default()),
            },
            None => None,
        };
        // (page, kind, country) → events, from whole hours and the raw edges.
        let mut counts: HashMap<(i64, i64, String), u64> = HashMap::new();
        let range = answerable(&reader, range)?;
        let (whole, edges) = split_hours(range);
        let country = filter.country.as_deref();
        if let Some((first_hour, end_hour)) = whole {
            add_page_counts(
                &reader,
                PAGE_HOURLY_SQL,
                (first_hour, end_hour),
                page_id,
                country,
                &mut counts,
            )?;
        }
        for edge in edges {
            let span = (edge.from_ms, edge.to_ms);
            add_page_counts(&reader, PAGE_EDGE_SQL, span, page_id, country, &mut counts)?;
        }
        let mut totals = Totals::default();
        let mut pages: HashMap<i64, u64> = HashMap::new();
        let mut page_events: HashMap<i64, u64> = HashMap::new();
        let mut countries: HashMap<String, u64> = HashMap::new();
        for ((page, kind, country), n) in counts {
            totals.events += n;
            *page_events.entry(page).or_default() += n;
            match kind_of(kind) {
                EventType::Pageview => {
                    totals.pageviews += n;
                    *pages.entry(page).or_default() += n;
                }
                EventType::Click => totals.clicks += n,
                _ => {}
            }
            if !country.is_empty() {
                *countries.entry(country).or_default() += n;
            }
        }
        let mut top_pages = Vec::with_capacity(pages.len());
        for (page, n) in pages {
            top_pages.push((page_path(&reader, page)?, n));
        }
        totals.top_pages = top(top_pages, limit);
        let mut by_events = Vec::with_capacity(page_events.len());
        for (page, n) in page_events {
            by_events.push((page_path(&reader, page)?, n));
        }
        totals.top_pages_by_events = top(by_events, limit);
        totals.top_countries = top(countries.into_iter().collect(), limit);
        totals.sessions = count_sessions(&reader, range, filter, page_id)?;
        drop(reader);
        Ok(totals)
    }

    fn sessions(
        &self,
        range: Range,
        filter: &Filter,
        limit: usize,
    ) -> Result<Vec<SessionRow>, StoreError> {
        let reader = lock(&self.reader);
        let page_id = match &filter.page {
            Some(page) => match page_id_of(&reader, page)? {
                Some(id) => Some(id),
                None => return Ok(Vec::new()),
            },
            None => None,
        };
        let columns = "session, MAX(country), MIN(first_ms), MAX(last_ms), SUM(events),
             MAX(device), MAX(referrer)";
        let row_of = |row: &rusqlite::Row<'_>| {
            Ok(SessionRow {
                session: row.get(0)?,
                country: row.get(1)?,
                first_ms: row.get(2)?,
                last_ms: row.get(3)?,
                events: row.get::<_, i64>(4)?.max(0) as u64,
                device: row.get(5)?,
                referrer: row.get(6)?,
            })
        };
        let hours = (hour_of(range.from_ms), hour_of(range.to_ms - 1));
        let rows: Vec<SessionRow> = match page_id {
            None => {
                let mut statement = reader.prepare_cached(&format!(
                    "SELECT {columns} FROM session_hourly
                     WHERE hour >= ?4 AND hour <= ?5 AND last_ms >= ?1 AND first_ms < ?2
                       AND (?3 IS NULL OR country = ?3)
                     GROUP BY session
                     ORDER BY MAX(last_ms) DESC, session LIMIT ?6"
                ))?;
                let rows = statement.query_map(
                    params![
                        range.from_ms,
                        range.to_ms,
                        filter.country,
                        hours.0,
                        hours.1,
                        limit as i64
                    ],
                    row_of,
                )?;
                rows.collect::<Result<_, _>>()?
            }
            Some(page_id) => {
                let mut statement = reader.prepare_cached(&format!(
                    "WITH visited AS ({PAGE_SESSIONS_SQL})
                     SELECT {columns} FROM session_hourly
                     WHERE hour >= :hour_first AND hour <= :hour_last
                       AND last_ms >= :from AND first_ms < :to
                       AND session IN visited
                     GROUP BY session
                     ORDER BY MAX(last_ms) DESC, session LIMIT :limit"
                ))?;
                let key = PageSessionsKey::new(page_id, range, filter.country.as_deref());
                let limit = limit as i64;
                let mut params = key.params().to_vec();
                params.extend(named_params! {
                    ":hour_first": hours.0,
                    ":hour_last": hours.1,
                    ":from": range.from_ms,
                    ":to": range.to_ms,
                    ":limit": limit,
                });
                let rows = statement.query_map(params.as_slice(), row_of)?;
                rows.collect::<Result<_, _>>()?
            }
        };
        Ok(rows)
    }

    fn events(
        &self,
        range: Range,
        filter: &Filter,
        only: &RawSelection,
        limit: usize,
    ) -> Result<Vec<Event>, StoreError> {
        let reader = lock(&self.reader);
        let mut statement = reader.prepare_cached(
            "SELECT e.kind, p.path, e.session, e.seq, e.at_ms, e.received_ms, e.country,
                    e.x, e.y, e.vw, e.dw, e.dh, e.element, e.ox, e.oy, e.depth, e.visible,
                    e.device, e.referrer, e.dead
             FROM events e JOIN pages p ON p.id = e.page_id
             WHERE e.at_ms >= ?1 AND e.at_ms < ?2
               AND (?3 IS NULL OR p.path = ?3) AND (?4 IS NULL OR e.country = ?4)
               AND (?6 IS NULL OR e.kind = ?6) AND (?7 IS NULL OR e.session = ?7)
             ORDER BY e.at_ms, e.id LIMIT ?5",
        )?;
        let rows = statement.query_map(
            params![
                range.from_ms,
                range.to_ms,
                filter.page,
                filter.country,
                limit as i64,
                only.kind.map(kind_code),
                only.session
            ],
            |row| {
                let x: Option<f64> = row.get(7)?;
                let position = match x {
                    Some(x) => Some(Position {
                        x: x as f32,
                        y: row.get::<_, f64>(8)? as f32,
                        viewport_width: row.get::<_, f64>(9)? as f32,
                        doc_width: row.get::<_, f64>(10)? as f32,
                        doc_height: row.get::<_, f64>(11)? as f32,
                    }),
                    None => None,
                };
                let ox: Option<f64> = row.get(13)?;
                let oy: Option<f64> = row.get(14)?;
                Ok(Event {
                    kind: kind_of(row.get(0)?),
                    page: row.get(1)?,
                    session: row.get(2)?,
                    seq: row.get::<_, Option<i64>>(3)?.map(|seq| seq as u64),
                    at_ms: row.get(4)?,
                    received_ms: row.get(5)?,
                    country: row.get(6)?,
                    position,
                    element: row.get(12)?,
                    element_offset: ox.zip(oy).map(|(ox, oy)| (ox as f32, oy as f32)),
                    depth: row.get::<_, Option<f64>>(15)?.map(|depth| depth as f32),
                    visible: row.get::<_, Option<i64>>(16)?.map(|visible| visible != 0),
                    device: row.get(17)?,
                    referrer: row.get(18)?,
                    dead: row.get::<_, Option<i64>>(19)?.map(|dead| dead != 0),
                })
            },
        )?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn prune(&self, before_ms: i64) -> Result<u64, StoreError> {
        // Whole hours only, so raw events and their hourly aggregates stay in step.
        let cut_hour = hour_of(before_ms);
        let cut_ms = cut_hour.saturating_mul(HOUR_MS);
        self.flush()?;
        let mut removed = 0u64;
        loop {
            let writer = lock(&self.writer);
            let n = writer.conn.execute(
                "DELETE FROM events WHERE id IN (SELECT id FROM events WHERE at_ms < ?1 LIMIT ?2)",
                params![cut_ms, PRUNE_CHUNK],
            )?;
            removed += n as u64;
            if (n as i64) < PRUNE_CHUNK {
                break;
            }
        }
        let writer = lock(&self.writer);
        writer.conn.execute_batch("BEGIN")?;
        let cut_day = cut_hour.div_euclid(24);
        let day_first_hour = cut_day * 24;
        let result = (|| -> Result<(), rusqlite::Error> {
            // The cut's own day keeps its daily row, less the hours pruned from it, so the
            // daily and hourly rollups and the raw events stay in step.
            writer.conn.execute(
                "INSERT INTO heat_daily (page_id, kind, bucket, day, cx, cy, n)
                 SELECT page_id, kind, bucket, ?3, cx, cy, -SUM(n) FROM heat_hourly
                 WHERE hour >= ?1 AND hour < ?2 GROUP BY page_id, kind, bucket, cx, cy
                 ON CONFLICT DO UPDATE SET n = n + excluded.n",
                params![day_first_hour, cut_hour, cut_day],
            )?;
            writer.conn.execute(
                "INSERT INTO heat_docs_daily (page_id, kind, bucket, day, n, aspect_sum)
                 SELECT page_id, kind, bucket, ?3, -SUM(n), -SUM(aspect_sum) FROM heat_docs
                 WHERE hour >= ?1 AND hour < ?2 GROUP BY page_id, kind, bucket
                 ON CONFLICT DO UPDATE SET n = n + excluded.n, aspect_sum = aspect_sum + excluded.aspect_sum",
                params![day_first_hour, cut_hour, cut_day],
            )?;
            writer.conn.execute(
                "DELETE FROM heat_daily WHERE day < ?1 OR (day = ?1 AND n <= 0)",
                [cut_day],
            )?;
            writer.conn.execute(
                "DELETE FROM heat_docs_daily WHERE day < ?1 OR (day = ?1 AND n <= 0)",
                [cut_day],
            )?;
            writer
                .conn
                .execute("DELETE FROM heat_hourly WHERE hour < ?1", [cut_hour])?;
            writer
                .conn
                .execute("DELETE FROM heat_docs WHERE hour < ?1", [cut_hour])?;
            writer
                .conn
                .execute("DELETE FROM page_hourly WHERE hour < ?1", [cut_hour])?;
            writer
                .conn
                .execute("DELETE FROM session_hourly WHERE hour < ?1", [cut_hour])?;
            writer
                .conn
                .execute("DELETE FROM page_sessions WHERE hour < ?1", [cut_hour])?;
            Ok(())
        })();
        match result {
            Ok(()) => writer.conn.execute_batch("COMMIT")?,
            Err(err) => {
                let _ = writer.conn.execute_batch("ROLLBACK");
                return Err(err.into());
            }
        }
        Ok(removed)
    }
}

/// A heatmap's cells over whole days.
const HEAT_DAILY_SQL: &str = "SELECT cx, cy, SUM(n) FROM heat_daily
    WHERE page_id = ?1 AND kind = ?2 AND bucket = ?3 AND day >= ?4 AND day < ?5
    GROUP BY cx, cy";

/// A heatmap's events and aspect sum over whole days.
const HEAT_DOCS_DAILY_SQL: &str =
    "SELECT COALESCE(SUM(n), 0), COALESCE(SUM(aspect_sum), 0.0) FROM heat_docs_daily
    WHERE page_id = ?1 AND kind = ?2 AND bucket = ?3 AND day >= ?4 AND day < ?5";

/// A heatmap's cells over whole hours.
const HEAT_HOURLY_SQL: &str = "SELECT cx, cy, SUM(n) FROM heat_hourly
    WHERE page_id = ?1 AND kind = ?2 AND bucket = ?3 AND hour >= ?4 AND hour < ?5
    GROUP BY cx, cy";

/// A heatmap's events and aspect sum over whole hours.
const HEAT_DOCS_HOURLY_SQL: &str =
    "SELECT COALESCE(SUM(n), 0), COALESCE(SUM(aspect_sum), 0.0) FROM heat_docs
    WHERE page_id = ?1 AND kind = ?2 AND bucket = ?3 AND hour >= ?4 AND hour < ?5";

/// The raw positions of a heatmap's partial hours.
const HEAT_EDGE_SQL: &str = "SELECT x, y, vw, dw, dh FROM events
    WHERE page_id = ?1 AND kind = ?2 AND at_ms >= ?3 AND at_ms < ?4 AND x IS NOT NULL";

/// Totals over whole hours.
const PAGE_HOURLY_SQL: &str = "SELECT page_id, kind, country, SUM(n) FROM page_hourly
    WHERE hour >= ?1 AND hour < ?2
      AND (?3 IS NULL OR page_id = ?3) AND (?4 IS NULL OR country = ?4)
    GROUP BY page_id, kind, country";

/// Totals over the partial hours at a range's ends, from raw events.
const PAGE_EDGE_SQL: &str = "SELECT page_id, kind, COALESCE(country, ''), COUNT(*) FROM events
    WHERE at_ms >= ?1 AND at_ms < ?2
      AND (?3 IS NULL OR page_id = ?3) AND (?4 IS NULL OR country = ?4)
    GROUP BY page_id, kind, country";

/// The events whose heat the heat tables do not hold, re-read at open.
const UNWRITTEN_HEAT_SQL: &str =
    "SELECT page_id, kind, at_ms, x, y, vw, dw, dh FROM events WHERE id > ?1 ORDER BY id";

/// Inserts one event unless its `(at_ms, session, seq)` is already stored. Its values are
/// bound one by one ([`bind_event`]): building a slice of `&dyn ToSql` per event cost a
/// tenth of the ingest's instructions.
const INSERT_EVENT_SQL: &str = "INSERT OR IGNORE INTO events
    (id, at_ms, received_ms, kind, page_id, session, seq, country,
     x, y, vw, dw, dh, element, ox, oy, depth, visible, device, referrer, dead)
    VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18,
            ?19, ?20, ?21)";

/// Binds one event's values to [`INSERT_EVENT_SQL`].
fn bind_event(
    statement: &mut rusqlite::CachedStatement<'_>,
    id: i64,
    page_id: i64,
    event: &Event,
) -> Result<(), rusqlite::Error> {
    let position = event.position;
    let position_value = |value: fn(&Position) -> f32| position.map(|p| f64::from(value(&p)));
    statement.raw_bind_parameter(1, id)?;
    statement.raw_bind_parameter(2, event.at_ms)?;
    statement.raw_bind_parameter(3, event.received_ms)?;
    statement.raw_bind_parameter(4, kind_code(event.kind))?;
    statement.raw_bind_parameter(5, page_id)?;
    statement.raw_bind_parameter(6, event.session.as_str())?;
    statement.raw_bind_parameter(7, event.seq.map(|seq| seq as i64))?;
    statement.raw_bind_parameter(8, event.country.as_deref())?;
    statement.raw_bind_parameter(9, position_value(|p| p.x))?;
    statement.raw_bind_parameter(10, position_value(|p| p.y))?;
    statement.raw_bind_parameter(11, position_value(|p| p.viewport_width))?;
    statement.raw_bind_parameter(12, position_value(|p| p.doc_width))?;
    statement.raw_bind_parameter(13, position_value(|p| p.doc_height))?;
    statement.raw_bind_parameter(14, event.element.as_deref())?;
    let (ox, oy) = event.element_offset.unzip();
    statement.raw_bind_parameter(15, ox.map(f64::from))?;
    statement.raw_bind_parameter(16, oy.map(f64::from))?;
    statement.raw_bind_parameter(17, event.depth.map(f64::from))?;
    statement.raw_bind_parameter(18, event.visible.map(i64::from))?;
    statement.raw_bind_parameter(19, event.device.as_deref())?;
    statement.raw_bind_parameter(20, event.referrer.as_deref())?;
    statement.raw_bind_parameter(21, event.dead.map(i64::from))?;
    Ok(())
}

/// One session's first and last event time, events, country, device and referrer within
/// one hour of a batch.
#[derive(Debug, Clone, Copy)]
struct SessionHour<'a> {
    first_ms: i64,
    last_ms: i64,
    events: i64,
    country: Option<&'a str>,
    device: Option<&'a str>,
    referrer: Option<&'a str>,
}

/// Inserts a batch inside `tx`, numbering its events from `last_id + 1` (and leaving the
/// last id used there), adds it to the page and session counts, and folds its heat into
/// `heat` for the caller to keep pending or write out.
fn ingest_in(
    tx: &Transaction<'_>,
    events: &[Event],
    page_ids: &HashMap<String, i64>,
    new_pages: &mut HashMap<String, i64>,
    heat: &mut HeatFold,
    last_id: &mut i64,
) -> Result<Ingested, StoreError> {
    let mut outcome = Ingested::default();
    let mut pages: BTreeMap<(i64, i64, i64, &str), i64> = BTreeMap::new();
    let mut sessions: BTreeMap<(i64, &str), SessionHour<'_>> = BTreeMap::new();
    let mut page_sessions: BTreeSet<(i64, i64, &str, &str)> = BTreeSet::new();
    {
        let mut event_pages = Vec::with_capacity(events.len());
        for event in events {
            let page_id = match page_ids
                .get(&event.page)
                .or_else(|| new_pages.get(&event.page))
            {
                Some(id) => *id,
                None => {
                    let id = ensure_page(tx, &event.page)?;
                    new_pages.insert(event.page.clone(), id);
                    id
                }
            };
            event_pages.push(page_id);
        }
        // Event `idx` of the batch gets id `first_id + idx`; the ids of duplicates stay
        // unused.
        let first_id = *last_id + 1;
        let mut stored = Vec::with_capacity(events.len());
        let mut insert = tx.prepare_cached(INSERT_EVENT_SQL)?;
        for (idx, (event, page_id)) in events.iter().zip(&event_pages).enumerate() {
            bind_event(&mut insert, first_id + idx as i64, *page_id, event)?;
            stored.push(insert.raw_execute()? == 1);
        }
        *last_id += events.len() as i64;
        for ((event, page_id), stored) in events.iter().zip(event_pages).zip(stored) {
            if !stored {
                outcome.duplicates += 1;
                continue;
            }
            let kind = kind_code(event.kind);
            outcome.stored += 1;
            let hour = hour_of(event.at_ms);
            heat.fold(page_id, kind, hour, event);
            let country = event.country.as_deref().unwrap_or_default();
            *pages.entry((hour, page_id, kind, country)).or_default() += 1;
            page_sessions.insert((page_id, hour, event.session.as_str(), country));
            let session = sessions
                .entry((hour, event.session.as_str()))
                .or_insert(SessionHour {
                    first_ms: event.at_ms,
                    last_ms: event.at_ms,
                    events: 0,
                    country: None,
                    device: None,
                    referrer: None,
                });
            session.first_ms = session.first_ms.min(event.at_ms);
            session.last_ms = session.last_ms.max(event.at_ms);
            session.events += 1;
            session.country = session.country.or(event.country.as_deref());
            session.device = session.device.or(event.device.as_deref());
            session.referrer = session.referrer.or(event.referrer.as_deref());
        }
    }
    let mut upsert = tx.prepare_cached(
        "INSERT INTO page_hourly (hour, page_id, kind, country, n) VALUES (?1, ?2, ?3, ?4, ?5)
         ON CONFLICT DO UPDATE SET n = n + excluded.n",
    )?;
    for ((hour, page_id, kind, country), n) in pages {
        upsert.execute(params![hour, page_id, kind, country, n])?;
    }
    let mut insert = tx.prepare_cached(
        "INSERT OR IGNORE INTO page_sessions (page_id, hour, session, country)
         VALUES (?1, ?2, ?3, ?4)",
    )?;
    for (page_id, hour, session, country) in page_sessions {
        insert.execute(params![page_id, hour, session, country])?;
    }
    let mut upsert = tx.prepare_cached(
        "INSERT INTO session_hourly
            (hour, session, first_ms, last_ms, events, country, device, referrer)
         VALUES (?6, ?1, ?2, ?3, ?4, ?5, ?7, ?8)
         ON CONFLICT DO UPDATE SET
            first_ms = MIN(first_ms, excluded.first_ms),
            last_ms = MAX(last_ms, excluded.last_ms),
            events = events + excluded.events,
            country = COALESCE(country, excluded.country),
            device = COALESCE(device, excluded.device),
            referrer = COALESCE(referrer, excluded.referrer)",
    )?;
    for ((hour, session), row) in sessions {
        upsert.execute(params![
            session,
            row.first_ms,
            row.last_ms,
            row.events,
            row.country,
            hour,
            row.device,
            row.referrer
        ])?;
    }
    Ok(outcome)
}

/// Adds `heat` to the hourly and daily heat tables inside `tx`, and records that they now
/// hold every event up to id `through`.
fn write_heat(tx: &Transaction<'_>, heat: &HeatFold, through: i64) -> Result<(), StoreError> {
    let hours: Vec<_> = heat
        .sorted_hours()
        .into_iter()
        .map(|(key, span)| (*key, span))
        .collect();
    let days = heat.days();
    let days: Vec<_> = days.iter().map(|(key, span)| (*key, span)).collect();
    let tables = [
        (
            hours,
            "INSERT INTO heat_hourly (page_id, kind, bucket, hour, cx, cy, n)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
             ON CONFLICT DO UPDATE SET n = n + excluded.n",
            "INSERT INTO heat_docs (page_id, kind, bucket, hour, n, aspect_sum)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)
             ON CONFLICT DO UPDATE SET n = n + excluded.n, aspect_sum = aspect_sum + excluded.aspect_sum",
        ),
        // The daily rollup gets the same counts, folded by day.
        (
            days,
            "INSERT INTO heat_daily (page_id, kind, bucket, day, cx, cy, n)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
             ON CONFLICT DO UPDATE SET n = n + excluded.n",
            "INSERT INTO heat_docs_daily (page_id, kind, bucket, day, n, aspect_sum)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)
             ON CONFLICT DO UPDATE SET n = n + excluded.n, aspect_sum = aspect_sum + excluded.aspect_sum",
        ),
    ];
    for (spans, cells_sql, docs_sql) in tables {
        let mut cells = tx.prepare_cached(cells_sql)?;
        for (((page_id, kind, bucket), unit), span) in &spans {
            // The span's key is bound once; only the cell and count change per row.
            cells.raw_bind_parameter(1, page_id)?;
            cells.raw_bind_parameter(2, kind)?;
            cells.raw_bind_parameter(3, bucket)?;
            cells.raw_bind_parameter(4, unit)?;
            for ((cx, cy), n) in span.sorted_cells() {
                cells.raw_bind_parameter(5, cx)?;
                cells.raw_bind_parameter(6, cy)?;
                cells.raw_bind_parameter(7, n)?;
                cells.raw_execute()?;
            }
        }
        let mut docs = tx.prepare_cached(docs_sql)?;
        for (((page_id, kind, bucket), unit), span) in &spans {
            if span.events != 0 {
                docs.execute(params![
                    page_id,
                    kind,
                    bucket,
                    unit,
                    span.events,
                    span.aspect_sum
                ])?;
            }
        }
    }
    tx.prepare_cached("UPDATE meta SET value = ?1 WHERE key = 'heat_through'")?
        .execute([through])?;
    Ok(())
}

/// The heat of the events the heat tables do not hold yet (those after `heat_through`),
/// read back from the raw events: what was pending in memory when the store last closed
/// or crashed.
fn unflushed_heat(conn: &Connection) -> Result<HeatFold, StoreError> {
    let base: i64 = conn.query_row(
        "SELECT value FROM meta WHERE key = 'heat_through'",
        [],
        |row| row.get(0),
    )?;
    let mut heat = HeatFold::on(base);
    let mut statement = conn.prepare(UNWRITTEN_HEAT_SQL)?;
    let mut rows = statement.query([base])?;
    while let Some(row) = rows.next()? {
        let kind: i64 = row.get(1)?;
        let at_ms: i64 = row.get(2)?;
        let mut event = Event::new(kind_of(kind), "", "", at_ms);
        event.position = match row.get::<_, Option<f64>>(3)? {
            Some(x) => Some(Position {
                x: x as f32,
                y: row.get::<_, f64>(4)? as f32,
                viewport_width: row.get::<_, f64>(5)? as f32,
                doc_width: row.get::<_, f64>(6)? as f32,
                doc_height: row.get::<_, f64>(7)? as f32,
            }),
            None => None,
        };
        heat.fold(row.get(0)?, kind, hour_of(at_ms), &event);
    }
    Ok(heat)
}

/// Adds the `(page_id, kind, country, events)` rows of `sql` over `span` (hours or ms,
/// whichever the query reads) to `counts`: the whole hours and the raw edges of a range
/// are summed the same way.
fn add_page_counts(
    conn: &Connection,
    sql: &str,
    span: (i64, i64),
    page_id: Option<i64>,
    country: Option<&str>,
    counts: &mut HashMap<(i64, i64, String), u64>,
) -> Result<(), rusqlite::Error> {
    let mut statement = conn.prepare_cached(sql)?;
    let rows = statement.query_map(params![span.0, span.1, page_id, country], |row| {
        Ok((
            row.get::<_, i64>(0)?,
            row.get::<_, i64>(1)?,
            row.get::<_, String>(2)?,
            row.get::<_, i64>(3)?,
        ))
    })?;
    for row in rows {
        let (page, kind, country, n) = row?;
        *counts.entry((page, kind, country)).or_default() += n.max(0) as u64;
    }
    Ok(())
}

/// The id of a page, inserting it if new.
fn ensure_page(tx: &Transaction<'_>, path: &str) -> Result<i64, rusqlite::Error> {
    tx.prepare_cached("INSERT OR IGNORE INTO pages (path) VALUES (?1)")?
        .execute([path])?;
    tx.prepare_cached("SELECT id FROM pages WHERE path = ?1")?
        .query_row([path], |row| row.get(0))
}

fn page_id_of(conn: &Connection, path: &str) -> Result<Option<i64>, rusqlite::Error> {
    conn.prepare_cached("SELECT id FROM pages WHERE path = ?1")?
        .query_row([path], |row| row.get(0))
        .optional()
}

fn page_path(conn: &Connection, id: i64) -> Result<String, rusqlite::Error> {
    conn.prepare_cached("SELECT path FROM pages WHERE id = ?1")?
        .query_row([id], |row| row.get(0))
}

/// The sessions with an event on a page in a range (`:page`, `:country`): the visits of
/// its whole hours (`[:first_hour, :end_hour)`) from `page_sessions`, and those of its
/// partial hours at either end (`[:edgeN_from, :edgeN_to)`) from the raw events. The
/// `kind IN` list lets the raw part walk the `(page_id, kind, at_ms)` index by time.
const PAGE_SESSIONS_SQL: &str = "SELECT session FROM page_sessions
    WHERE page_id = :page AND hour >= :first_hour AND hour < :end_hour
      AND (:country IS NULL OR country = :country)
    UNION
    SELECT session FROM events
    WHERE page_id = :page AND kind IN (0, 1, 2, 3, 4, 5, 6)
      AND at_ms >= :edge1_from AND at_ms < :edge1_to
      AND (:country IS NULL OR country = :country)
    UNION
    SELECT session FROM events
    WHERE page_id = :page AND kind IN (0, 1, 2, 3, 4, 5, 6)
      AND at_ms >= :edge2_from AND at_ms < :edge2_to
      AND (:country IS NULL OR country = :country)";

/// The values [`PAGE_SESSIONS_SQL`] is bound to; absent parts are empty spans.
#[derive(Debug, Clone, Copy)]
struct PageSessionsKey<'a> {
    page_id: i64,
    hours: (i64, i64),
    edges: [(i64, i64); 2],
    country: Option<&'a str>,
}

impl<'a> PageSessionsKey<'a> {
    /// The named values [`PAGE_SESSIONS_SQL`] reads.
    fn params(&self) -> [(&'static str, &dyn rusqlite::ToSql); 8] {
        [
            (":page", &self.page_id),
            (":first_hour", &self.hours.0),
            (":end_hour", &self.hours.1),
            (":edge1_from", &self.edges[0].0),
            (":edge1_to", &self.edges[0].1),
            (":edge2_from", &self.edges[1].0),
            (":edge2_to", &self.edges[1].1),
            (":country", &self.country),
        ]
    }

    fn new(page_id: i64, range: Range, country: Option<&'a str>) -> Self {
        let (whole, edge_ranges) = split_hours(range);
        let mut edges = [(0, 0); 2];
        for (slot, edge) in edges.iter_mut().zip(edge_ranges) {
            *slot = (edge.from_ms, edge.to_ms);
        }
        PageSessionsKey {
            page_id,
            hours: whole.unwrap_or((0, 0)),
            edges,
            country,
        }
    }
}

/// Adds version 5's column, whether a click was dead (`NULL` for every older event and
/// every other kind), where it is missing: one `ALTER TABLE`, which SQLite does without
/// rewriting the rows.
fn migrate_4_to_5(conn: &Connection) -> Result<(), rusqlite::Error> {
    let present: bool = conn
        .prepare("SELECT COUNT(*) > 0 FROM pragma_table_info('events') WHERE name = 'dead'")?
        .query_row([], |row| row.get(0))?;
    if !present {
        conn.execute_batch("ALTER TABLE events ADD COLUMN dead INTEGER")?;
    }
    Ok(())
}

/// Adds version 4's columns and table in one transaction. A column is added only where it
/// is missing, so a file that a failed start left half-migrated opens all the same.
fn migrate_3_to_4(conn: &Connection) -> Result<(), rusqlite::Error> {
    conn.execute_batch("BEGIN")?;
    let result = (|| {
        for (table, column) in COLUMNS_4 {
            let present: bool = conn
                .prepare("SELECT COUNT(*) > 0 FROM pragma_table_info(?1) WHERE name = ?2")?
                .query_row([table, column], |row| row.get(0))?;
            if !present {
                conn.execute_batch(&format!("ALTER TABLE {table} ADD COLUMN {column} TEXT"))?;
            }
        }
        conn.execute_batch(MIGRATE_3_TO_4)
    })();
    match result {
        Ok(()) => conn.execute_batch("COMMIT"),
        Err(err) => {
            let _ = conn.execute_batch("ROLLBACK");
            Err(err)
        }
    }
}

/// The end of the hour holding `at_ms` (itself when it starts an hour).
fn hour_end(at_ms: i64) -> i64 {
    let hour = at_ms.div_euclid(HOUR_MS) + i64::from(at_ms.rem_euclid(HOUR_MS) != 0);
    hour.saturating_mul(HOUR_MS)
}

/// The range as the aggregates can answer it. When no stored event is as new as its end
/// (a range ending now, the usual case), the hour holding the end holds nothing past it,
/// so it is read whole from the aggregates instead of from raw events: a dashboard's
/// "last 30 days" then reads no raw events at all. Call it inside the snapshot the
/// answer is read from.
fn answerable(conn: &Connection, range: Range) -> Result<Range, rusqlite::Error> {
    let newest: Option<i64> = conn
        .prepare_cached("SELECT MAX(at_ms) FROM events")?
        .query_row([], |row| row.get(0))?;
    Ok(match newest {
        Some(newest) if newest >= range.to_ms => range,
        _ => Range {
            from_ms: range.from_ms,
            to_ms: hour_end(range.to_ms),
        },
    })
}

/// Sessions in a range: for a page, those with an event on it in the range; otherwise
/// those with an hour whose first-to-last span overlaps the range.
fn count_sessions(
    conn: &Connection,
    range: Range,
    filter: &Filter,
    page_id: Option<i64>,
) -> Result<u64, rusqlite::Error> {
    let n: i64 = match page_id {
        Some(page_id) => {
            let key = PageSessionsKey::new(page_id, range, filter.country.as_deref());
            conn.prepare_cached(&format!("SELECT COUNT(*) FROM ({PAGE_SESSIONS_SQL})"))?
                .query_row(key.params().as_slice(), |row| row.get(0))?
        }
        None => conn
            .prepare_cached(
                "SELECT COUNT(DISTINCT session) FROM session_hourly
                 WHERE hour >= ?4 AND hour <= ?5 AND last_ms >= ?1 AND first_ms < ?2
                   AND (?3 IS NULL OR country = ?3)",
            )?
            .query_row(
                params![
                    range.from_ms,
                    range.to_ms,
                    filter.country,
                    hour_of(range.from_ms),
                    hour_of(range.to_ms - 1)
                ],
                |row| row.get(0),
            )?,
    };
    Ok(n.max(0) as u64)
}

/// Document height over width (0 when unknown), to size a heatmap image.
pub(crate) fn aspect(event: &Event) -> f64 {
    event
        .position
        .filter(|p| p.doc_width > 0.0 && p.doc_height.is_finite())
        .map_or(0.0, |p| f64::from(p.doc_height) / f64::from(p.doc_width))
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every query whose cost must not grow with the stored events reads through an index
    /// (a key prefix and range), never a whole table: a schema or query change that loses
    /// one fails here rather than at 100 million events.
    #[test]
    fn hot_queries_search_an_index() {
        let dir = std::env::temp_dir().join(format!("analytics-plans-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let store = SqliteStore::open(&SqliteConfig::at(&dir.join("plans.sqlite"))).unwrap();
        let reader = lock(&store.reader);
        let queries = [
            (HEAT_DAILY_SQL, "heat_daily"),
            (HEAT_DOCS_DAILY_SQL, "heat_docs_daily"),
            (HEAT_HOURLY_SQL, "heat_hourly"),
            (HEAT_DOCS_HOURLY_SQL, "heat_docs"),
            (HEAT_EDGE_SQL, "events_page_kind_time"),
            (PAGE_HOURLY_SQL, "page_hourly"),
            (PAGE_EDGE_SQL, "events_time_key"),
            (UNWRITTEN_HEAT_SQL, "INTEGER PRIMARY KEY"),
            (PAGE_SESSIONS_SQL, "page_sessions"),
            (PAGE_SESSIONS_SQL, "events_page_kind_time"),
            ("SELECT MAX(at_ms) FROM events", "events_time_key"),
        ];
        for (sql, access) in queries {
            let mut plan = reader
                .prepare(&format!("EXPLAIN QUERY PLAN {sql}"))
                .unwrap();
            // Unbound parameters are NULL, which does not change the plan.
            let mut rows = plan.raw_query();
            let mut details: Vec<String> = Vec::new();
            while let Some(row) = rows.next().unwrap() {
                details.push(row.get(3).unwrap());
            }
            for detail in &details {
                assert!(!detail.starts_with("SCAN"), "{sql}\nscans: {details:?}");
            }
            assert!(
                details
                    .iter()
                    .any(|detail| detail.starts_with("SEARCH") && detail.contains(access))
                    || access.is_empty(),
                "{sql}\nshould search {access}: {details:?}"
            );
        }
        drop(reader);
        drop(store);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
