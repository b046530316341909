//! Recordings in PostgreSQL (cluster mode, `--store postgres://…`): every batch of every
//! recording is stored in the shared database, so any renderer can render any recording
//! and none owns data.
//!
//! Tables (their own versioned migrations, in `recording_schema_version`, apart from the
//! event store's so the two schemas evolve on their own):
//! - `recordings`: one row per recording: when it was first stored, its latest viewport,
//!   its points, batches and duration so far, whether it was stopped.
//! - `heatmap_images`: the PNGs drawn for Generate requests that came over the bus, by file
//!   name, so every renderer's `/heatmaps/<name>` serves what any renderer drew.
//! - `recording_batches`: one row per `(recording, seq)` (the primary key), the points as
//!   a compact `bytea` (4 bytes a point, moves first, as the journal stores them). A
//!   resend is `ON CONFLICT DO NOTHING`: the database, not a renderer, de-duplicates.
//!
//! One thread writes. Batches, starts and stops wait in a bounded queue
//! (`--max-queued-batches`; past it a batch is answered `busy`) and the writer commits
//! whatever is waiting, up to `--max-commit-batches`, in one transaction (group commit),
//! then answers each sender. An answer of "stored" therefore means committed: the ack goes
//! out only after the commit, so an acknowledged batch survives any renderer's death.
//! Rows are written in key order, so two renderers' transactions never deadlock on them.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use ::analytics::pg_client::{client_config, connect, ReadConnection};
use ::analytics::StoreError;
use heatmap::grid::NormPoint;
use postgres::Client;
use protocol::{Error, ErrorCode, RecordingId, Viewport};
use tokio::sync::{mpsc, oneshot};

use crate::journal::StoredBatch;
use crate::metrics::RendererMetrics;

/// The migrations, in order: element `i` takes the schema from version `i` to `i + 1`.
const MIGRATIONS: &[&str] = &[MIGRATION_1, MIGRATION_2];

const MIGRATION_1: &str = "
CREATE TABLE recordings (
    id TEXT PRIMARY KEY,
    created_ms BIGINT NOT NULL,
    updated_ms BIGINT NOT NULL,
    viewport_width INTEGER NOT NULL,
    viewport_height INTEGER NOT NULL,
    n_points BIGINT NOT NULL,
    n_batches BIGINT NOT NULL,
    duration_ms BIGINT NOT NULL,
    stopped BOOLEAN NOT NULL DEFAULT FALSE
);
CREATE INDEX recordings_updated ON recordings (updated_ms);
CREATE TABLE recording_batches (
    recording TEXT NOT NULL,
    seq BIGINT NOT NULL,
    max_t BIGINT NOT NULL,
    n_moves INTEGER NOT NULL,
    n_points INTEGER NOT NULL,
    points BYTEA NOT NULL,
    PRIMARY KEY (recording, seq)
);
";

/// The images renderers drew for Generate requests from the bus, so any relay, asking any
/// renderer, can serve an image another renderer drew.
const MIGRATION_2: &str = "
CREATE TABLE heatmap_images (
    name TEXT PRIMARY KEY,
    created_ms BIGINT NOT NULL,
    png BYTEA NOT NULL
);
CREATE INDEX heatmap_images_created ON heatmap_images (created_ms);
";

/// Stores a group's batches, each key once, and returns the keys that were new.
const INSERT_BATCHES_SQL: &str = "INSERT INTO recording_batches
    (recording, seq, max_t, n_moves, n_points, points)
    SELECT * FROM unnest($1::text[], $2::int8[], $3::int8[], $4::int4[], $5::int4[], $6::bytea[])
    ON CONFLICT (recording, seq) DO NOTHING
    RETURNING recording, seq";

/// Creates or updates a group's recordings with what their new batches added, and returns
/// each one's total points (for the acks).
const UPSERT_RECORDINGS_SQL: &str = "INSERT INTO recordings AS r
    (id, created_ms, updated_ms, viewport_width, viewport_height, n_points, n_batches, duration_ms)
    SELECT id, $2::int8, $2::int8, vw, vh, n, nb, d
    FROM unnest($1::text[], $3::int4[], $4::int4[], $5::int8[], $6::int8[], $7::int8[])
        AS u (id, vw, vh, n, nb, d)
    ON CONFLICT (id) DO UPDATE SET
        updated_ms = EXCLUDED.updated_ms,
        viewport_width = EXCLUDED.viewport_width,
        viewport_height = EXCLUDED.viewport_height,
        n_points = r.n_points + EXCLUDED.n_points,
        n_batches = r.n_batches + EXCLUDED.n_batches,
        duration_ms = GREATEST(r.duration_ms, EXCLUDED.duration_ms)
    RETURNING id, n_points";

/// Marks recordings stopped; those not returned are unknown.
const STOP_SQL: &str = "UPDATE recordings SET stopped = TRUE, updated_ms = $2
    WHERE id = ANY($1::text[]) RETURNING id, n_points";

/// The writer's bounds (`--max-queued-batches`, `--max-commit-batches`).
#[derive(Debug, Clone, Copy)]
pub(crate) struct RecordingDbLimits {
    /// Writes waiting for the writer; past it a write is refused as busy.
    pub max_queued: usize,
    /// Writes committed in one transaction at most.
    pub max_commit: usize,
    /// Points read for one render at most (`--max-points-per-recording`).
    pub max_points_per_recording: u64,
}

/// One change to a recording, queued for the writer.
#[derive(Debug)]
pub(crate) enum Write {
    /// The page started (or restarted) the recording.
    Start {
        /// The recording.
        recording: RecordingId,
        /// Its viewport.
        viewport: Viewport,
    },
    /// A validated batch, its points already in fixed point and encoded.
    Batch {
        /// The recording.
        recording: RecordingId,
        /// The batch's viewport.
        viewport: Viewport,
        /// Its sequence number (the key, with the recording).
        seq: i64,
        /// Its largest `t`.
        max_t: u32,
        /// How many of its points are moves (they come first in `points`).
        n_moves: u32,
        /// Moves then clicks, 4 bytes each (see [`encode_points`]).
        points: Vec<u8>,
    },
    /// The page stopped the recording.
    Stop {
        /// The recording.
        recording: RecordingId,
    },
}

/// What the database did with one [`Write`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Written {
    /// The recording's row exists.
    Started,
    /// The batch is stored: by this write (`new`) or an earlier copy; the recording holds
    /// `n_points` in the database.
    Batch {
        /// Whether this write stored it (rather than finding it there).
        new: bool,
        /// Points the recording holds in the database.
        n_points: u64,
    },
    /// The recording is marked stopped and holds `n_points`.
    Stopped {
        /// Points the recording holds in the database.
        n_points: u64,
    },
    /// A stop for a recording the database does not hold.
    Unknown,
}

/// A recording's row, read before a render.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RecordingRow {
    /// When it was first stored (for the caption, the same on every renderer).
    pub created: SystemTime,
    /// Its largest `t` over every stored batch.
    pub duration_ms: u32,
}

impl Write {
    /// The write that stores one validated batch of `recording`, already in fixed point
    /// (`stored`), under its key `seq`: the same from the link and from the bus.
    pub(crate) fn batch(
        recording: RecordingId,
        viewport: Viewport,
        seq: i64,
        stored: &StoredBatch,
    ) -> Self {
        Write::Batch {
            recording,
            viewport,
            seq,
            max_t: stored.max_t,
            n_moves: stored.moves.len() as u32,
            points: encode_points(stored),
        }
    }
}

/// A queued write and where its outcome goes.
struct Job {
    write: Write,
    reply: oneshot::Sender<Result<Written, Error>>,
}

/// The recordings' database: a writer thread behind a bounded queue, and a reading
/// connection for renders (used from blocking threads only: the `postgres` client blocks).
pub(crate) struct RecordingDb {
    jobs: mpsc::Sender<Job>,
    reader: ReadConnection,
    limits: RecordingDbLimits,
}

impl std::fmt::Debug for RecordingDb {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecordingDb")
            .field("reader", &self.reader)
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

impl RecordingDb {
    /// Connects, applies the migrations, deletes recordings unchanged for longer than
    /// `retention` (if set) and starts the writer thread.
    ///
    /// Blocks: call it off the async workers.
    ///
    /// # Errors
    /// The URL does not parse, the server cannot be reached, the schema is newer than this
    /// build knows, or the writer thread cannot be spawned.
    pub fn open(
        url: &str,
        limits: RecordingDbLimits,
        retention: Option<Duration>,
        metrics: Arc<RendererMetrics>,
    ) -> Result<Self, StoreError> {
        let config = client_config(url, "heatmap-renderer-recordings")?;
        let mut writer = connect(&config)?;
        migrate(&mut writer)?;
        if let Some(retention) = retention {
            prune(&mut writer, retention)?;
        }
        let (jobs, queue) = mpsc::channel(limits.max_queued.max(1));
        let writer_config = config.clone();
        std::thread::Builder::new()
            .name("recording-writer".into())
            .spawn(move || {
                write_until_closed(queue, writer, &writer_config, limits, &metrics);
            })
            .map_err(|err| StoreError::Other(format!("spawn the recording writer: {err}")))?;
        Ok(RecordingDb {
            jobs,
            reader: ReadConnection::new(config, None),
            limits,
        })
    }

    /// Queues one write and waits until it is committed (or not).
    ///
    /// # Errors
    /// `busy` when the queue is full, `storage_failed` when the commit failed (nothing of
    /// the write was stored; the sender resends), or the writer is gone.
    pub async fn submit(&self, write: Write) -> Result<Written, Error> {
        let (reply, outcome) = oneshot::channel();
        if let Err(err) = self.jobs.try_send(Job { write, reply }) {
            return Err(match err {
                mpsc::error::TrySendError::Full(_) => Error::new(
                    ErrorCode::Busy,
                    format!(
                        "{} recording writes are waiting for the database (--max-queued-batches); send again later",
                        self.jobs.max_capacity()
                    ),
                ),
                mpsc::error::TrySendError::Closed(_) => Error::new(
                    ErrorCode::StorageFailed,
                    "the recording writer has stopped; send again later",
                ),
            });
        }
        outcome.await.unwrap_or_else(|_| {
            Err(Error::new(
                ErrorCode::StorageFailed,
                "the recording writer stopped before committing; send again later",
            ))
        })
    }

    /// The recording's row, if the database holds it. Blocks.
    ///
    /// # Errors
    /// The database cannot be read.
    pub fn row(&self, id: &RecordingId) -> Result<Option<RecordingRow>, StoreError> {
        self.reader.read(|client| {
            let row = client.query_opt(
                "SELECT created_ms, duration_ms FROM recordings WHERE id = $1",
                &[&id.as_str()],
            )?;
            Ok(row.map(|row| RecordingRow {
                created: UNIX_EPOCH
                    + Duration::from_millis(u64::try_from(row.get::<_, i64>(0)).unwrap_or(0)),
                duration_ms: u32::try_from(row.get::<_, i64>(1)).unwrap_or(u32::MAX),
            }))
        })
    }

    /// Every stored point of the recording, moves and clicks, batch by batch in `seq`
    /// order, up to `--max-points-per-recording`. Blocks.
    ///
    /// # Errors
    /// The database cannot be read, or a stored batch does not decode.
    pub fn points(&self, id: &RecordingId) -> Result<(Vec<NormPoint>, Vec<NormPoint>), StoreError> {
        let max_points = self.limits.max_points_per_recording;
        self.reader.read(|client| {
            let rows = client.query(
                "SELECT seq, n_moves, n_points, points FROM recording_batches
                 WHERE recording = $1 ORDER BY seq",
                &[&id.as_str()],
            )?;
            let (mut moves, mut clicks) = (Vec::new(), Vec::new());
            for row in rows {
                let seq: i64 = row.get(0);
                let n_moves = usize::try_from(row.get::<_, i32>(1)).unwrap_or(usize::MAX);
                let n_points = usize::try_from(row.get::<_, i32>(2)).unwrap_or(usize::MAX);
                let bytes: &[u8] = row.get(3);
                if (moves.len() + clicks.len() + n_points) as u64 > max_points {
                    tracing::warn!(recording = %id, max_points, "the recording holds more points than --max-points-per-recording; rendering the first ones");
                    break;
                }
                decode_points(bytes, n_moves, n_points, &mut moves, &mut clicks).ok_or_else(
                    || StoreError::Corrupt(format!("recording {id} batch {seq}: points do not decode")),
                )?;
            }
            Ok((moves, clicks))
        })
    }
}

impl RecordingDb {
    /// Stores a heatmap under `name`; `false` when another renderer already stored a
    /// different image under that name (both chose it in the same second), so the caller
    /// picks another name. Storing the same image again is `true`. Blocks.
    ///
    /// # Errors
    /// The database cannot be written.
    pub fn store_image(&self, name: &str, png: &[u8]) -> Result<bool, StoreError> {
        self.reader.read(|client| {
            let inserted = client.execute(
                "INSERT INTO heatmap_images (name, created_ms, png) VALUES ($1, $2, $3)
                 ON CONFLICT (name) DO NOTHING",
                &[&name, &now_ms(), &png],
            )?;
            if inserted == 1 {
                return Ok(true);
            }
            let row =
                client.query_opt("SELECT png FROM heatmap_images WHERE name = $1", &[&name])?;
            Ok(row.is_some_and(|row| row.get::<_, &[u8]>(0) == png))
        })
    }

    /// The image stored under `name`, if any. Blocks.
    ///
    /// # Errors
    /// The database cannot be read.
    pub fn image(&self, name: &str) -> Result<Option<Vec<u8>>, StoreError> {
        self.reader.read(|client| {
            let row =
                client.query_opt("SELECT png FROM heatmap_images WHERE name = $1", &[&name])?;
            Ok(row.map(|row| row.get::<_, Vec<u8>>(0)))
        })
    }
}

/// A batch's points as the database stores them: moves then clicks, each `u` then `v` as
/// little-endian `u16` (the journal's layout).
fn encode_points(stored: &StoredBatch) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(4 * (stored.moves.len() + stored.clicks.len()));
    for [u, v] in stored.moves.iter().chain(&stored.clicks) {
        bytes.extend_from_slice(&u.to_le_bytes());
        bytes.extend_from_slice(&v.to_le_bytes());
    }
    bytes
}

/// Appends a stored batch's points; `None` if the bytes do not match its counts.
fn decode_points(
    bytes: &[u8],
    n_moves: usize,
    n_points: usize,
    moves: &mut Vec<NormPoint>,
    clicks: &mut Vec<NormPoint>,
) -> Option<()> {
    if n_moves > n_points || bytes.len() != 4 * n_points {
        return None;
    }
    for (idx, chunk) in bytes.chunks_exact(4).enumerate() {
        let point = [
            u16::from_le_bytes([chunk[0], chunk[1]]),
            u16::from_le_bytes([chunk[2], chunk[3]]),
        ];
        if idx < n_moves {
            moves.push(point);
        } else {
            clicks.push(point);
        }
    }
    Some(())
}

/// Applies the migrations this build knows, in one transaction under an advisory lock, so
/// renderers starting together migrate once.
fn migrate(client: &mut Client) -> Result<(), StoreError> {
    let mut tx = client.transaction()?;
    // Any constant will do; it only has to be the same in every renderer (and differ from
    // the event store's).
    tx.execute("SELECT pg_advisory_xact_lock(7301200052)", &[])?;
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS recording_schema_version (version INTEGER NOT NULL)",
    )?;
    let row = tx.query_one(
        "SELECT COALESCE(MAX(version), 0) FROM recording_schema_version",
        &[],
    )?;
    let version: i32 = row.get(0);
    let known = MIGRATIONS.len() as i32;
    if version > known {
        return Err(StoreError::Other(format!(
            "the database has recording schema version {version}; this build knows up to {known}"
        )));
    }
    for (idx, migration) in MIGRATIONS.iter().enumerate().skip(version.max(0) as usize) {
        tx.batch_execute(migration)?;
        let to = idx as i32 + 1;
        tx.execute(
            "INSERT INTO recording_schema_version (version) VALUES ($1)",
            &[&to],
        )?;
        tracing::info!(
            version = to,
            "applied a postgresql recording schema migration"
        );
    }
    tx.commit()?;
    Ok(())
}

/// Deletes recordings not changed within `retention` (`--retention-hours`), as the journal
/// deletes old logs at start.
fn prune(client: &mut Client, retention: Duration) -> Result<(), StoreError> {
    let cutoff = now_ms().saturating_sub(i64::try_from(retention.as_millis()).unwrap_or(i64::MAX));
    let mut tx = client.transaction()?;
    tx.execute(
        "DELETE FROM recording_batches WHERE recording IN
         (SELECT id FROM recordings WHERE updated_ms < $1)",
        &[&cutoff],
    )?;
    let n_recordings = tx.execute("DELETE FROM recordings WHERE updated_ms < $1", &[&cutoff])?;
    tx.execute(
        "DELETE FROM heatmap_images WHERE created_ms < $1",
        &[&cutoff],
    )?;
    tx.commit()?;
    if n_recordings > 0 {
        tracing::info!(
            recordings = n_recordings,
            "deleted recordings older than --retention-hours from postgresql"
        );
    }
    Ok(())
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| {
            i64::try_from(since.as_millis()).unwrap_or(i64::MAX)
        })
}

/// The writer thread: commits queued writes in groups until the queue closes.
fn write_until_closed(
    mut queue: mpsc::Receiver<Job>,
    writer: Client,
    config: &postgres::Config,
    limits: RecordingDbLimits,
    metrics: &RendererMetrics,
) {
    let mut conn = Some(writer);
    while let Some(first) = queue.blocking_recv() {
        let mut group = vec![first];
        while group.len() < limits.max_commit.max(1) {
            match queue.try_recv() {
                Ok(job) => group.push(job),
                Err(_) => break,
            }
        }
        let writes: Vec<&Write> = group.iter().map(|job| &job.write).collect();
        let started = Instant::now();
        let outcome = commit_with_reconnect(&mut conn, config, &writes);
        metrics
            .recording_commit
            .observe(started.elapsed().as_secs_f64());
        match outcome {
            Ok(written) => {
                for (job, written) in group.into_iter().zip(written) {
                    let _ = job.reply.send(Ok(written));
                }
            }
            Err(err) => {
                tracing::error!(cause = %err, writes = group.len(), "cannot store recording batches in postgresql");
                // Nothing of the group was stored, so every page keeps its batch and resends
                // it (`storage_failed` is a passing refusal for the page).
                let error = Error::new(
                    ErrorCode::StorageFailed,
                    format!(
                        "the renderer cannot store this recording now ({err}); it will be resent"
                    ),
                );
                for job in group {
                    let _ = job.reply.send(Err(error.clone()));
                }
            }
        }
    }
}

/// Commits a group; when the connection turns out dead (the server restarted since the
/// last group), opens a new one and commits the group once more. A retry is harmless even
/// if the first commit landed: the batches' keys make the second one store nothing new.
fn commit_with_reconnect(
    conn: &mut Option<Client>,
    config: &postgres::Config,
    writes: &[&Write],
) -> Result<Vec<Written>, StoreError> {
    if conn.as_ref().is_some_and(Client::is_closed) {
        *conn = None;
    }
    let had_connection = conn.is_some();
    let client = match conn {
        Some(client) => client,
        None => conn.insert(connect(config)?),
    };
    match commit_group(client, writes) {
        Err(StoreError::Unavailable(_)) if had_connection && client.is_closed() => {
            *conn = None;
            let client = conn.insert(connect(config)?);
            commit_group(client, writes)
        }
        Err(err) => {
            if client.is_closed() {
                *conn = None;
            }
            Err(err)
        }
        Ok(written) => Ok(written),
    }
}

/// What a group adds to one recording's row.
#[derive(Debug, Default)]
struct RowChange {
    viewport: Option<Viewport>,
    n_points: i64,
    n_batches: i64,
    duration_ms: i64,
}

/// Commits a group of writes in one transaction: the batches (each key once), then the
/// recordings' rows with what the new batches added, then the stops.
fn commit_group(client: &mut Client, writes: &[&Write]) -> Result<Vec<Written>, StoreError> {
    let now = now_ms();
    // The batches, first copy of each key, in key order.
    let mut batches: BTreeMap<(&str, i64), &Write> = BTreeMap::new();
    for write in writes {
        if let Write::Batch { recording, seq, .. } = write {
            batches.entry((recording.as_str(), *seq)).or_insert(write);
        }
    }
    let mut tx = client.transaction()?;
    let mut new_keys: HashSet<(String, i64)> = HashSet::new();
    if !batches.is_empty() {
        let mut recordings = Vec::with_capacity(batches.len());
        let mut seqs = Vec::with_capacity(batches.len());
        let mut max_ts = Vec::with_capacity(batches.len());
        let mut n_moves = Vec::with_capacity(batches.len());
        let mut n_points = Vec::with_capacity(batches.len());
        let mut points: Vec<&[u8]> = Vec::with_capacity(batches.len());
        for ((recording, seq), write) in &batches {
            if let Write::Batch {
                max_t,
                n_moves: moves,
                points: bytes,
                ..
            } = write
            {
                recordings.push(*recording);
                seqs.push(*seq);
                max_ts.push(i64::from(*max_t));
                n_moves.push(i32::try_from(*moves).unwrap_or(i32::MAX));
                n_points.push(i32::try_from(bytes.len() / 4).unwrap_or(i32::MAX));
                points.push(bytes.as_slice());
            }
        }
        for row in tx.query(
            INSERT_BATCHES_SQL,
            &[&recordings, &seqs, &max_ts, &n_moves, &n_points, &points],
        )? {
            new_keys.insert((row.get(0), row.get(1)));
        }
    }
    // The recordings' rows, in key order.
    let mut changes: BTreeMap<&str, RowChange> = BTreeMap::new();
    for write in writes {
        match write {
            Write::Start {
                recording,
                viewport,
            } => {
                changes.entry(recording.as_str()).or_default().viewport = Some(*viewport);
            }
            Write::Batch {
                recording,
                viewport,
                seq,
                max_t,
                points,
                ..
            } => {
                let change = changes.entry(recording.as_str()).or_default();
                change.viewport = Some(*viewport);
                if new_keys.contains(&(recording.to_string(), *seq)) {
                    change.n_points += (points.len() / 4) as i64;
                    change.n_batches += 1;
                    change.duration_ms = change.duration_ms.max(i64::from(*max_t));
                }
            }
            Write::Stop { .. } => {}
        }
    }
    let mut totals: HashMap<String, i64> = HashMap::new();
    if !changes.is_empty() {
        let mut ids = Vec::with_capacity(changes.len());
        let (mut widths, mut heights) = (Vec::new(), Vec::new());
        let (mut n_points, mut n_batches, mut durations) = (Vec::new(), Vec::new(), Vec::new());
        for (id, change) in &changes {
            let viewport = change.viewport.unwrap_or(Viewport {
                width: 1,
                height: 1,
            });
            ids.push(*id);
            widths.push(i32::try_from(viewport.width).unwrap_or(i32::MAX));
            heights.push(i32::try_from(viewport.height).unwrap_or(i32::MAX));
            n_points.push(change.n_points);
            n_batches.push(change.n_batches);
            durations.push(change.duration_ms);
        }
        for row in tx.query(
            UPSERT_RECORDINGS_SQL,
            &[
                &ids, &now, &widths, &heights, &n_points, &n_batches, &durations,
            ],
        )? {
            totals.insert(row.get(0), row.get(1));
        }
    }
    // The stops, in key order.
    let mut stops: Vec<&str> = writes
        .iter()
        .filter_map(|write| match write {
            Write::Stop { recording } => Some(recording.as_str()),
            _ => None,
        })
        .collect();
    stops.sort_unstable();
    stops.dedup();
    if !stops.is_empty() {
        for row in tx.query(STOP_SQL, &[&stops, &now])? {
            totals.insert(row.get(0), row.get(1));
        }
    }
    tx.commit()?;
    let total_of = |id: &RecordingId| totals.get(id.as_str()).map(|n| (*n).max(0) as u64);
    let written = writes
        .iter()
        .map(|write| match write {
            Write::Start { .. } => Written::Started,
            Write::Batch { recording, seq, .. } => Written::Batch {
                // Only the first copy of a key in the group claims it.
                new: new_keys.remove(&(recording.to_string(), *seq)),
                n_points: total_of(recording).unwrap_or(0),
            },
            Write::Stop { recording } => match total_of(recording) {
                Some(n_points) => Written::Stopped { n_points },
                None => Written::Unknown,
            },
        })
        .collect();
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn points_round_trip_through_their_bytes() {
        let stored = StoredBatch {
            seq: 3,
            max_t: 40,
            moves: vec![[1, 2], [65535, 0]],
            clicks: vec![[300, 400]],
        };
        let bytes = encode_points(&stored);
        assert_eq!(bytes.len(), 12);
        let (mut moves, mut clicks) = (Vec::new(), Vec::new());
        decode_points(&bytes, 2, 3, &mut moves, &mut clicks).expect("decodes");
        assert_eq!(moves, stored.moves);
        assert_eq!(clicks, stored.clicks);
    }

    #[test]
    fn bytes_that_do_not_match_their_counts_are_refused() {
        let (mut moves, mut clicks) = (Vec::new(), Vec::new());
        assert!(decode_points(&[0; 7], 1, 2, &mut moves, &mut clicks).is_none());
        assert!(decode_points(&[0; 8], 3, 2, &mut moves, &mut clicks).is_none());
        assert!(moves.is_empty() && clicks.is_empty());
    }
}
