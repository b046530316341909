//! Durable recordings: one append-only log file per recording in `--data-dir/recordings`.
//!
//! Every accepted batch is appended before it is acknowledged, so an acknowledged point
//! survives a crash of the renderer process (and, with `--fsync`, of the machine). On
//! start the logs are replayed to rebuild the store. Records and appends are
//! `append_log`'s: an append lands whole or leaves the file as it was, a torn tail (a
//! crash mid-write) is cut off, and damage in the middle of a log is reported while the
//! good records after it are kept, so the renderer always starts with everything it
//! acknowledged.

use std::collections::HashMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use heatmap::grid::NormPoint;
use protocol::RecordingId;
use tracing::{info, warn};

use crate::append_log::{record_of, recover, recover_file, AppendLog, Damage, Recovery};

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

/// Every recording the journal replayed at start, with its id.
pub type ReplayedRecordings = Vec<(RecordingId, Replayed)>;

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

impl StoredBatch {
    /// Its points, moves and clicks.
    pub fn n_points(&self) -> u64 {
        (self.moves.len() + self.clicks.len()) as u64
    }
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
    files: HashMap<RecordingId, (AppendLog, u64)>,
    /// The good length of each log without an open handle (from recovery, or from the
    /// handle when it was closed), so reopening cuts whatever a failed append left rather
    /// than writing after it. Bounded by the recordings kept.
    lengths: HashMap<RecordingId, u64>,
    clock: u64,
}

impl Journal {
    /// Opens (creating) `data_dir/recordings` and replays every log in it.
    ///
    /// Logs whose last change is older than `retention` (if set) are deleted unread. The
    /// returned [`Damage`] sums what recovery found, for `/metrics` and `/healthz`.
    ///
    /// # Errors
    /// Only if the folder cannot be created or listed; an unreadable file is logged and
    /// skipped.
    pub fn open(
        data_dir: &Path,
        fsync: bool,
        retention: Option<Duration>,
    ) -> io::Result<(Journal, ReplayedRecordings, Damage)> {
        let dir = data_dir.join("recordings");
        std::fs::create_dir_all(&dir)?;
        let mut replayed = Vec::new();
        let mut lengths = HashMap::new();
        let mut damage = Damage::default();
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
                Ok((recording, good_len, file_damage)) => {
                    damage.add(file_damage);
                    lengths.insert(id.clone(), good_len);
                    replayed.push((id, recording));
                }
                Err(err) => {
                    warn!(path = %path.display(), cause = %err, "cannot read a recording log; skipping it")
                }
            }
        }
        let journal = Journal {
            dir,
            fsync,
            open: Mutex::new(OpenFiles {
                lengths,
                ..OpenFiles::default()
            }),
        };
        Ok((journal, replayed, damage))
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
        let mut open = lock(&self.open);
        open.files.remove(id);
        open.lengths.remove(id);
        drop(open);
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

    /// Appends one record to a recording's log: whole, or not at all.
    fn append(&self, id: &RecordingId, payload: &[u8]) -> io::Result<()> {
        let record = record_of(payload)?;
        let mut open = lock(&self.open);
        open.clock += 1;
        let now = open.clock;
        let OpenFiles { files, lengths, .. } = &mut *open;
        if !files.contains_key(id) {
            if files.len() >= MAX_OPEN_FILES {
                let oldest = files
                    .iter()
                    .min_by_key(|(_, (_, used))| *used)
                    .map(|(id, _)| id.clone());
                if let Some((oldest, (mut log, _))) = oldest.and_then(|id| files.remove_entry(&id))
                {
                    // Best effort: if the cut fails again, reopening cuts to this length.
                    let _ = log.repair();
                    lengths.insert(oldest, log.len());
                }
            }
            let expected = lengths.get(id).copied();
            let log = AppendLog::open(&self.path_of(id), expected, self.fsync)?;
            lengths.remove(id);
            files.insert(id.clone(), (log, now));
        }
        let Some((log, used)) = files.get_mut(id) else {
            return Err(io::Error::other("log file vanished from the open set"));
        };
        *used = now;
        log.append(&record)
    }

    /// Injects failures into a recording's open log, for tests of the failure paths.
    #[cfg(test)]
    fn inject(&self, id: &RecordingId, faults: crate::append_log::Faults) {
        if let Some((log, _)) = lock(&self.open).files.get_mut(id) {
            log.faults = faults;
        }
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

/// The recording id a log file's name stands for, if it is one.
fn recording_of(path: &Path) -> Option<RecordingId> {
    let name = path.file_name()?.to_str()?;
    let id = name.strip_suffix(".log")?;
    RecordingId::try_from(id).ok()
}

/// Replays one log, cutting off a torn tail; returns it with the log's good length.
fn replay_file(path: &Path) -> io::Result<(Replayed, u64, Damage)> {
    let mut replayed = Replayed::default();
    let (good_len, damage) = recover_file(path, |payload| apply(&mut replayed, payload))?;
    Ok((replayed, good_len, damage))
}

/// Replays a log's bytes: every good record, and where the good and damaged parts are.
pub fn replay_bytes(bytes: &[u8]) -> (Replayed, Recovery) {
    let mut replayed = Replayed::default();
    let recovery = recover(bytes, |payload| apply(&mut replayed, payload));
    (replayed, recovery)
}

/// Applies one record; `false` (changing nothing) if it does not parse, which recovery
/// treats as damage.
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
            let (journal, replayed, _) = Journal::open(&dir, false, None).unwrap();
            assert!(replayed.is_empty());
            journal.append_start(&id, created).unwrap();
            journal.append_batch(&id, &batch(0, 3)).unwrap();
            journal.append_batch(&id, &batch(1, 5)).unwrap();
            journal.append_stop(&id).unwrap();
        }
        let (_, replayed, _) = Journal::open(&dir, false, None).unwrap();
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
            let (journal, _, _) = Journal::open(&dir, false, None).unwrap();
            journal.append_batch(&id, &batch(0, 3)).unwrap();
            journal.append_batch(&id, &batch(1, 3)).unwrap();
        }
        let path = dir.join("recordings/r-torn.log");
        let full = std::fs::read(&path).unwrap();
        std::fs::write(&path, &full[..full.len() - 5]).unwrap();
        let (journal, replayed, _) = Journal::open(&dir, false, None).unwrap();
        assert_eq!(replayed[0].1.batches, vec![batch(0, 3)]);
        // The file was cut back to the good prefix, so appends continue cleanly.
        journal.append_batch(&id, &batch(1, 3)).unwrap();
        drop(journal);
        let (_, replayed, _) = Journal::open(&dir, false, None).unwrap();
        assert_eq!(replayed[0].1.batches, vec![batch(0, 3), batch(1, 3)]);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn foreign_files_are_ignored() {
        let dir = temp_dir("foreign");
        std::fs::create_dir_all(dir.join("recordings")).unwrap();
        std::fs::write(dir.join("recordings/notes.txt"), b"hello").unwrap();
        std::fs::write(dir.join("recordings/bad name!.log"), b"hello").unwrap();
        let (_, replayed, _) = Journal::open(&dir, false, None).unwrap();
        assert!(replayed.is_empty());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    fn encoded(batches: &[StoredBatch]) -> Vec<u8> {
        batches
            .iter()
            .flat_map(|batch| record_of(&batch_payload(batch)).unwrap())
            .collect()
    }

    #[test]
    fn a_corrupt_middle_record_is_reported_and_the_records_after_it_kept() {
        let dir = temp_dir("corrupt");
        let id = RecordingId::try_from("r-corrupt").unwrap();
        {
            let (journal, _, _) = Journal::open(&dir, false, None).unwrap();
            for seq in 0..3 {
                journal.append_batch(&id, &batch(seq, 4)).unwrap();
            }
        }
        let path = dir.join("recordings/r-corrupt.log");
        let mut bytes = std::fs::read(&path).unwrap();
        let first_len = encoded(&[batch(0, 4)]).len();
        bytes[first_len + 12] ^= 0xff;
        std::fs::write(&path, &bytes).unwrap();
        let (journal, replayed, damage) = Journal::open(&dir, false, None).unwrap();
        assert_eq!(replayed[0].1.batches, vec![batch(0, 4), batch(2, 4)]);
        assert_eq!(damage.corrupt_spans, 1);
        assert_eq!(damage.corrupt_bytes, first_len as u64);
        assert_eq!(damage.torn_tails, 0);
        // The file is left as it was (evidence for an operator), and appends continue.
        assert_eq!(std::fs::read(&path).unwrap(), bytes);
        journal.append_batch(&id, &batch(1, 4)).unwrap();
        drop(journal);
        let (_, replayed, _) = Journal::open(&dir, false, None).unwrap();
        assert_eq!(
            replayed[0].1.batches,
            vec![batch(0, 4), batch(2, 4), batch(1, 4)]
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// A full disk at every byte of a batch record: the append fails, nothing of it stays,
    /// the resend after space is freed lands, and a restart recovers exactly the
    /// acknowledged batches. Also with the cut-back failing once (repaired before the next
    /// append) and with the handle closed while a failed append's bytes are still there.
    #[test]
    fn a_full_disk_at_any_byte_loses_nothing_acknowledged() {
        use crate::append_log::Faults;
        let dir = temp_dir("enospc");
        let id = RecordingId::try_from("r-full").unwrap();
        let record_len = encoded(&[batch(1, 10)]).len();
        let mut n_cases = 0;
        for k in 0..record_len {
            for failing_cuts in [0, 1] {
                let _ = std::fs::remove_dir_all(&dir);
                let (journal, _, _) = Journal::open(&dir, false, None).unwrap();
                let mut acknowledged = Vec::new();
                journal.append_batch(&id, &batch(0, 10)).unwrap();
                acknowledged.push(batch(0, 10));
                journal.inject(
                    &id,
                    Faults {
                        write_budget: Some(k),
                        failing_cuts,
                        ..Faults::default()
                    },
                );
                let err = journal.append_batch(&id, &batch(1, 10)).unwrap_err();
                assert_eq!(err.raw_os_error(), Some(28), "k={k}");
                // Space is freed; the page resends the refused batch and sends another.
                journal.inject(&id, Faults::default());
                for seq in [1, 2] {
                    journal.append_batch(&id, &batch(seq, 10)).unwrap();
                    acknowledged.push(batch(seq, 10));
                }
                drop(journal);
                let (_, replayed, damage) = Journal::open(&dir, false, None).unwrap();
                assert_eq!(replayed[0].1.batches, acknowledged, "k={k}");
                assert_eq!(damage, Damage::default(), "k={k}");
                n_cases += 1;
            }
        }
        assert_eq!(n_cases, 2 * record_len);
        eprintln!("journal: {n_cases} failure points in a {record_len}-byte record, all exact");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_log_closed_with_a_failed_append_in_it_is_cut_when_reopened() {
        use crate::append_log::Faults;
        let dir = temp_dir("closed-dirty");
        let (journal, _, _) = Journal::open(&dir, false, None).unwrap();
        let dirty = RecordingId::try_from("r-dirty").unwrap();
        journal.append_batch(&dirty, &batch(0, 5)).unwrap();
        journal.inject(
            &dirty,
            Faults {
                write_budget: Some(11),
                // The cut fails now and again when the handle is closed.
                failing_cuts: 2,
                ..Faults::default()
            },
        );
        assert!(journal.append_batch(&dirty, &batch(1, 5)).is_err());
        // Other recordings push the dirty handle out of the open set.
        for idx in 0..MAX_OPEN_FILES {
            let other = RecordingId::try_from(format!("r-{idx}").as_str()).unwrap();
            journal.append_batch(&other, &batch(0, 1)).unwrap();
        }
        assert!(!lock(&journal.open).files.contains_key(&dirty));
        journal.append_batch(&dirty, &batch(1, 5)).unwrap();
        drop(journal);
        let (_, replayed, damage) = Journal::open(&dir, false, None).unwrap();
        let (_, recording) = replayed.iter().find(|(id, _)| id == &dirty).unwrap();
        assert_eq!(recording.batches, vec![batch(0, 5), batch(1, 5)]);
        assert_eq!(damage, Damage::default());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    proptest! {
        /// Whatever happens to a log (cut anywhere, and a byte flipped anywhere before the
        /// cut), recovery never panics, keeps every record that is whole and undamaged, and
        /// reports damage followed by good records as corrupt rather than dropping them.
        #[test]
        fn recovery_keeps_every_undamaged_record(
            sizes in prop::collection::vec(0u16..20, 1..8),
            cut in any::<prop::sample::Index>(),
            flip in any::<Option<(prop::sample::Index, u8)>>(),
        ) {
            let batches: Vec<StoredBatch> = sizes.iter().enumerate().map(|(seq, n)| batch(seq as u64, *n)).collect();
            let mut bytes = encoded(&batches);
            let boundaries: Vec<usize> = (0..=batches.len()).map(|n| encoded(&batches[..n]).len()).collect();
            let cut_at = cut.index(bytes.len() + 1);
            bytes.truncate(cut_at);
            let mut flipped_at = None;
            if let Some((at, mask)) = flip {
                if !bytes.is_empty() && mask != 0 {
                    let at = at.index(bytes.len());
                    bytes[at] ^= mask;
                    flipped_at = Some(at);
                }
            }
            let (replayed, recovery) = replay_bytes(&bytes);
            // Whole records before the cut, minus the one holding the flipped byte.
            let kept: Vec<usize> = (0..batches.len())
                .filter(|&idx| boundaries[idx + 1] <= cut_at)
                .filter(|&idx| flipped_at.is_none_or(|at| !(boundaries[idx]..boundaries[idx + 1]).contains(&at)))
                .collect();
            let expected: Vec<StoredBatch> = kept.iter().map(|&idx| batches[idx].clone()).collect();
            prop_assert_eq!(&replayed.batches, &expected);
            let good_end = kept.last().map_or(0, |&idx| boundaries[idx + 1]);
            prop_assert_eq!(recovery.good_end, good_end);
            // The damaged record is reported only if good records follow it; else it is
            // part of the torn tail.
            let corrupt: Vec<std::ops::Range<usize>> = flipped_at
                .and_then(|at| (0..batches.len()).find(|&idx| (boundaries[idx]..boundaries[idx + 1]).contains(&at)))
                .filter(|&idx| kept.last().is_some_and(|&last| last > idx))
                .map(|idx| boundaries[idx]..boundaries[idx + 1])
                .into_iter()
                .collect();
            prop_assert_eq!(recovery.corrupt, corrupt);
        }

        /// A log cut anywhere (a crash mid-write) keeps exactly the whole records before
        /// the cut and reports no corruption.
        #[test]
        fn a_cut_log_keeps_exactly_its_whole_prefix(
            sizes in prop::collection::vec(0u16..20, 1..8),
            cut in any::<prop::sample::Index>(),
        ) {
            let batches: Vec<StoredBatch> = sizes.iter().enumerate().map(|(seq, n)| batch(seq as u64, *n)).collect();
            let mut bytes = encoded(&batches);
            let boundaries: Vec<usize> = (0..=batches.len()).map(|n| encoded(&batches[..n]).len()).collect();
            bytes.truncate(cut.index(bytes.len() + 1));
            let (replayed, recovery) = replay_bytes(&bytes);
            let intact = boundaries.iter().filter(|&&end| end > 0 && end <= bytes.len()).count();
            prop_assert_eq!(&replayed.batches[..], &batches[..intact]);
            prop_assert_eq!(recovery.good_end, boundaries[intact]);
            prop_assert!(recovery.corrupt.is_empty());
        }
    }
}
