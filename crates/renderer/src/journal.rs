//! Durable recordings: one append-only log file per recording in `--data-dir/recordings`.
//!
//! Every accepted batch is appended before it is acknowledged, so an acknowledged point
//! survives a crash of the renderer process (and, with `--fsync`, of the machine). On
//! start the logs are replayed to rebuild the store. A record is
//! `[payload length u32][crc32 of payload u32][payload]`, little-endian; a torn or corrupt
//! tail (a crash mid-write) is detected by length or checksum, logged, and cut off, so
//! the renderer always starts.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use protocol::RecordingId;
use tracing::{info, warn};

use crate::grid::NormPoint;

/// Largest payload a record may claim; anything larger is corruption, not data.
const MAX_PAYLOAD: usize = 64 * 1024 * 1024;

/// Log files kept open for appending; beyond this the least recently used is closed.
const MAX_OPEN_FILES: usize = 64;

const TAG_START: u8 = 1;
const TAG_BATCH: u8 = 2;
const TAG_STOP: u8 = 3;

/// What the journal holds for one recording, replayed at start.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Replayed {
    /// When the recording began (from its start record), if known.
    pub created: Option<SystemTime>,
    /// Whether it was stopped.
    pub stopped: bool,
    /// Every stored batch, in log order.
    pub batches: Vec<StoredBatch>,
}

/// One stored batch.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredBatch {
    /// Its sequence number.
    pub seq: u64,
    /// The largest `t` in it.
    pub max_t: u32,
    /// Its moves.
    pub moves: Vec<NormPoint>,
    /// Its clicks.
    pub clicks: Vec<NormPoint>,
}

/// The set of log files.
#[derive(Debug)]
pub struct Journal {
    dir: PathBuf,
    fsync: bool,
    /// Open append handles.
    open: Mutex<OpenFiles>,
}

/// Append handles by recording, each with the tick it was last used at, so the least
/// recently used one can be closed when [`MAX_OPEN_FILES`] are open.
#[derive(Debug, Default)]
struct OpenFiles {
    files: HashMap<RecordingId, (File, u64)>,
    clock: u64,
}

impl Journal {
    /// Opens (creating) `data_dir/recordings` and replays every log in it.
    ///
    /// Logs whose last change is older than `retention` (if set) are deleted unread.
    ///
    /// # Errors
    /// Only if the folder cannot be created or listed; a bad file is logged and skipped.
    pub fn open(
        data_dir: &Path,
        fsync: bool,
        retention: Option<Duration>,
    ) -> io::Result<(Journal, Vec<(RecordingId, Replayed)>)> {
        let dir = data_dir.join("recordings");
        std::fs::create_dir_all(&dir)?;
        let mut replayed = Vec::new();
        for entry in std::fs::read_dir(&dir)? {
            let path = entry?.path();
            let Some(id) = recording_of(&path) else {
                continue;
            };
            if let Some(retention) = retention {
                let age = std::fs::metadata(&path)
                    .and_then(|meta| meta.modified())
                    .ok()
                    .and_then(|modified| modified.elapsed().ok());
                if age.is_some_and(|age| age > retention) {
                    info!(recording = %id, "deleting a recording older than --retention-hours");
                    let _ = std::fs::remove_file(&path);
                    continue;
                }
            }
            match replay_file(&path) {
                Ok(recording) => replayed.push((id, recording)),
                Err(err) => {
                    warn!(path = %path.display(), cause = %err, "cannot read a recording log; skipping it")
                }
            }
        }
        let journal = Journal {
            dir,
            fsync,
            open: Mutex::new(OpenFiles::default()),
        };
        Ok((journal, replayed))
    }

    /// Records that a recording began at `created`.
    ///
    /// # Errors
    /// The IO error of the append.
    pub fn append_start(&self, id: &RecordingId, created: SystemTime) -> io::Result<()> {
        let millis = created
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_millis() as u64;
        let mut payload = vec![TAG_START];
        payload.extend_from_slice(&millis.to_le_bytes());
        self.append(id, &payload)
    }

    /// Appends a batch; returns once the bytes are with the operating system (and on disk,
    /// with `--fsync`).
    ///
    /// # Errors
    /// The IO error of the append (disk full, folder removed…).
    pub fn append_batch(&self, id: &RecordingId, batch: &StoredBatch) -> io::Result<()> {
        self.append(id, &batch_payload(batch))
    }

    /// Records that a recording was stopped.
    ///
    /// # Errors
    /// The IO error of the append.
    pub fn append_stop(&self, id: &RecordingId) -> io::Result<()> {
        self.append(id, &[TAG_STOP])
    }

    /// Deletes a recording's log (eviction).
    pub fn remove(&self, id: &RecordingId) {
        lock(&self.open).files.remove(id);
        if let Err(err) = std::fs::remove_file(self.path_of(id)) {
            if err.kind() != io::ErrorKind::NotFound {
                warn!(recording = %id, cause = %err, "cannot delete an evicted recording's log");
            }
        }
    }

    fn path_of(&self, id: &RecordingId) -> PathBuf {
        // Ids are 1-64 characters of [A-Za-z0-9_-] (checked when decoded): always a plain
        // file name inside the folder.
        self.dir.join(format!("{id}.log"))
    }

    fn append(&self, id: &RecordingId, payload: &[u8]) -> io::Result<()> {
        let record = record_of(payload);
        let mut open = lock(&self.open);
        open.clock += 1;
        let now = open.clock;
        let files = &mut open.files;
        if !files.contains_key(id) {
            if files.len() >= MAX_OPEN_FILES {
                let oldest = files
                    .iter()
                    .min_by_key(|(_, (_, used))| *used)
                    .map(|(id, _)| id.clone());
                if let Some(oldest) = oldest {
                    files.remove(&oldest);
                }
            }
            let file = OpenOptions::new()
                .create(true)
                .append(true)
                .open(self.path_of(id))?;
            files.insert(id.clone(), (file, now));
        }
        let Some((file, used)) = files.get_mut(id) else {
            return Err(io::Error::other("log file vanished from the open set"));
        };
        *used = now;
        let result =
            file.write_all(&record)
                .and_then(|()| if self.fsync { file.sync_data() } else { Ok(()) });
        if result.is_err() {
            // A failed write may have left a partial record: drop the handle so the next
            // append reopens, and let recovery cut the tail at the next start.
            files.remove(id);
        }
        result
    }
}

/// A batch record's payload: tag, seq, max t, counts, then moves and clicks.
fn batch_payload(batch: &StoredBatch) -> Vec<u8> {
    let mut payload = Vec::with_capacity(21 + 4 * (batch.moves.len() + batch.clicks.len()));
    payload.push(TAG_BATCH);
    payload.extend_from_slice(&batch.seq.to_le_bytes());
    payload.extend_from_slice(&batch.max_t.to_le_bytes());
    payload.extend_from_slice(&(batch.moves.len() as u32).to_le_bytes());
    payload.extend_from_slice(&(batch.clicks.len() as u32).to_le_bytes());
    for [u, v] in batch.moves.iter().chain(&batch.clicks) {
        payload.extend_from_slice(&u.to_le_bytes());
        payload.extend_from_slice(&v.to_le_bytes());
    }
    payload
}

/// A whole record: length, checksum, payload.
pub(crate) fn record_of(payload: &[u8]) -> Vec<u8> {
    let mut record = Vec::with_capacity(8 + payload.len());
    record.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    record.extend_from_slice(&crc32fast::hash(payload).to_le_bytes());
    record.extend_from_slice(payload);
    record
}

/// The recording id a log file's name stands for, if it is one.
fn recording_of(path: &Path) -> Option<RecordingId> {
    let name = path.file_name()?.to_str()?;
    let id = name.strip_suffix(".log")?;
    RecordingId::try_from(id).ok()
}

/// Replays one log, cutting off a torn or corrupt tail.
fn replay_file(path: &Path) -> io::Result<Replayed> {
    let bytes = std::fs::read(path)?;
    let (replayed, good_len) = replay_bytes(&bytes);
    if good_len < bytes.len() {
        warn!(
            path = %path.display(),
            offset = good_len,
            dropped_bytes = bytes.len() - good_len,
            "torn or corrupt record at the end of a recording log (likely a crash mid-write); skipping it"
        );
        OpenOptions::new()
            .write(true)
            .open(path)?
            .set_len(good_len as u64)?;
    }
    Ok(replayed)
}

/// Parses records until the first one that is incomplete or fails its checksum.
///
/// Returns what was read and how many bytes of `bytes` were good.
pub fn replay_bytes(bytes: &[u8]) -> (Replayed, usize) {
    let mut replayed = Replayed::default();
    let mut offset = 0;
    while let Some((payload, next)) = next_record(bytes, offset) {
        if !apply(&mut replayed, payload) {
            break;
        }
        offset = next;
    }
    (replayed, offset)
}

/// The payload of the record at `offset` and the offset after it, if it is whole and sound.
pub(crate) fn next_record(bytes: &[u8], offset: usize) -> Option<(&[u8], usize)> {
    let header = bytes.get(offset..offset.checked_add(8)?)?;
    let len = u32::from_le_bytes(header[..4].try_into().ok()?) as usize;
    let crc = u32::from_le_bytes(header[4..].try_into().ok()?);
    if len == 0 || len > MAX_PAYLOAD {
        return None;
    }
    let end = offset.checked_add(8)?.checked_add(len)?;
    let payload = bytes.get(offset + 8..end)?;
    (crc32fast::hash(payload) == crc).then_some((payload, end))
}

/// Applies one record; `false` if it does not parse (treated as corruption).
fn apply(replayed: &mut Replayed, payload: &[u8]) -> bool {
    let read_u32 = |at: usize| {
        payload
            .get(at..at + 4)
            .and_then(|b| b.try_into().ok())
            .map(u32::from_le_bytes)
    };
    let read_u64 = |at: usize| {
        payload
            .get(at..at + 8)
            .and_then(|b| b.try_into().ok())
            .map(u64::from_le_bytes)
    };
    match payload.first() {
        Some(&TAG_START) => match read_u64(1) {
            Some(millis) => {
                replayed.created = Some(UNIX_EPOCH + Duration::from_millis(millis));
                true
            }
            None => false,
        },
        Some(&TAG_STOP) => {
            replayed.stopped = true;
            true
        }
        Some(&TAG_BATCH) => {
            let (Some(seq), Some(max_t), Some(n_moves), Some(n_clicks)) =
                (read_u64(1), read_u32(9), read_u32(13), read_u32(17))
            else {
                return false;
            };
            let (n_moves, n_clicks) = (n_moves as usize, n_clicks as usize);
            let points = &payload[21..];
            if points.len() != 4 * (n_moves + n_clicks) {
                return false;
            }
            let mut all = points.chunks_exact(4).map(|p| {
                [
                    u16::from_le_bytes([p[0], p[1]]),
                    u16::from_le_bytes([p[2], p[3]]),
                ]
            });
            let moves: Vec<NormPoint> = all.by_ref().take(n_moves).collect();
            let clicks: Vec<NormPoint> = all.collect();
            replayed.batches.push(StoredBatch {
                seq,
                max_t,
                moves,
                clicks,
            });
            true
        }
        _ => false,
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn batch(seq: u64, n: u16) -> StoredBatch {
        StoredBatch {
            seq,
            max_t: seq as u32 * 10,
            moves: (0..n).map(|idx| [idx, idx * 2]).collect(),
            clicks: vec![[7, 9]],
        }
    }

    fn temp_dir(label: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("heatmap-journal-{label}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn appended_records_replay_in_order() {
        let dir = temp_dir("replay");
        let id = RecordingId::try_from("r-1").unwrap();
        let created = UNIX_EPOCH + Duration::from_millis(1_700_000_000_123);
        {
            let (journal, replayed) = Journal::open(&dir, false, None).unwrap();
            assert!(replayed.is_empty());
            journal.append_start(&id, created).unwrap();
            journal.append_batch(&id, &batch(0, 3)).unwrap();
            journal.append_batch(&id, &batch(1, 5)).unwrap();
            journal.append_stop(&id).unwrap();
        }
        let (_, replayed) = Journal::open(&dir, false, None).unwrap();
        assert_eq!(replayed.len(), 1);
        let (found, recording) = &replayed[0];
        assert_eq!(found, &id);
        assert_eq!(recording.created, Some(created));
        assert!(recording.stopped);
        assert_eq!(recording.batches, vec![batch(0, 3), batch(1, 5)]);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_torn_tail_is_cut_and_the_rest_kept() {
        let dir = temp_dir("torn");
        let id = RecordingId::try_from("r-torn").unwrap();
        {
            let (journal, _) = Journal::open(&dir, false, None).unwrap();
            journal.append_batch(&id, &batch(0, 3)).unwrap();
            journal.append_batch(&id, &batch(1, 3)).unwrap();
        }
        let path = dir.join("recordings/r-torn.log");
        let full = std::fs::read(&path).unwrap();
        std::fs::write(&path, &full[..full.len() - 5]).unwrap();
        let (journal, replayed) = Journal::open(&dir, false, None).unwrap();
        assert_eq!(replayed[0].1.batches, vec![batch(0, 3)]);
        // The file was cut back to the good prefix, so appends continue cleanly.
        journal.append_batch(&id, &batch(1, 3)).unwrap();
        drop(journal);
        let (_, replayed) = Journal::open(&dir, false, None).unwrap();
        assert_eq!(replayed[0].1.batches, vec![batch(0, 3), batch(1, 3)]);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn foreign_files_are_ignored() {
        let dir = temp_dir("foreign");
        std::fs::create_dir_all(dir.join("recordings")).unwrap();
        std::fs::write(dir.join("recordings/notes.txt"), b"hello").unwrap();
        std::fs::write(dir.join("recordings/bad name!.log"), b"hello").unwrap();
        let (_, replayed) = Journal::open(&dir, false, None).unwrap();
        assert!(replayed.is_empty());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    fn encoded(batches: &[StoredBatch]) -> Vec<u8> {
        batches
            .iter()
            .flat_map(|batch| record_of(&batch_payload(batch)))
            .collect()
    }

    proptest! {
        /// Whatever happens to the tail (cut anywhere, or bytes flipped), recovery never
        /// panics and returns exactly the records before the damage.
        #[test]
        fn recovery_keeps_exactly_the_undamaged_prefix(
            sizes in prop::collection::vec(0u16..20, 1..8),
            cut in any::<prop::sample::Index>(),
            flip in any::<Option<(prop::sample::Index, u8)>>(),
        ) {
            let batches: Vec<StoredBatch> = sizes.iter().enumerate().map(|(seq, n)| batch(seq as u64, *n)).collect();
            let mut bytes = encoded(&batches);
            let boundaries: Vec<usize> = (0..=batches.len()).map(|n| encoded(&batches[..n]).len()).collect();
            let cut_at = cut.index(bytes.len() + 1);
            bytes.truncate(cut_at);
            let mut damaged_from = cut_at;
            if let Some((at, mask)) = flip {
                if !bytes.is_empty() && mask != 0 {
                    let at = at.index(bytes.len());
                    bytes[at] ^= mask;
                    damaged_from = damaged_from.min(at);
                }
            }
            let (replayed, good) = replay_bytes(&bytes);
            let intact = boundaries.iter().filter(|&&end| end > 0 && end <= damaged_from).count();
            prop_assert_eq!(replayed.batches.len(), intact);
            prop_assert_eq!(&replayed.batches[..], &batches[..intact]);
            prop_assert_eq!(good, boundaries[intact]);
        }
    }
}
