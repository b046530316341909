//! The recordings the renderer holds, with their points and the batches already counted.
//!
//! One `std::sync::Mutex` guards the map and is held only to find or insert a recording;
//! each recording has its own lock, so a long render of one recording never delays the
//! batches of another.

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::SystemTime;

use heatmap::grid::{to_fixed, NormPoint};
use protocol::{Error, ErrorCode, PointKind, PointsBatch, RecordingId, Viewport};

use crate::journal::{Journal, Replayed, StoredBatch};

/// How far ahead of the lowest missing batch a sequence number may run; pages send in
/// order, so a larger jump is a bug or an attack, and refusing it bounds [`SeqSet`].
const MAX_SEQ_AHEAD: u64 = 100_000;

/// Bounds of the store.
#[derive(Debug, Clone, Copy)]
pub struct StoreLimits {
    /// Recordings kept; the least recently updated one is dropped beyond this.
    pub max_recordings: usize,
    /// Points one recording may hold.
    pub max_points_per_recording: u64,
    /// Points held over all recordings.
    pub max_total_points: u64,
}

/// One recording: points in fixed point, split by kind, and the batches already counted.
///
/// The point lists are shared (`Arc`), so a render takes them by reference count under the
/// lock instead of copying a million points; a batch arriving while a render still holds
/// them copies them once (`Arc::make_mut`), and only then.
#[derive(Debug)]
pub struct Recording {
    /// Pointer positions, in arrival order.
    pub moves: Arc<Vec<NormPoint>>,
    /// Click positions, in arrival order.
    pub clicks: Arc<Vec<NormPoint>>,
    /// Largest `t` seen: the recording's length in milliseconds.
    pub duration_ms: u32,
    /// When the renderer first heard of it (wall clock, for captions).
    pub created: SystemTime,
    /// When it last changed (a store-wide counter, not a clock, so that ties cannot
    /// happen); the least recently updated recording is evicted first.
    touched: u64,
    /// Whether `stop` was received.
    pub stopped: bool,
    /// Batches already counted, so a resend is acknowledged but not counted twice.
    seqs: SeqSet,
}

impl Recording {
    fn new(now: SystemTime, touched: u64) -> Self {
        Recording {
            moves: Arc::default(),
            clicks: Arc::default(),
            duration_ms: 0,
            created: now,
            touched,
            stopped: false,
            seqs: SeqSet::default(),
        }
    }

    /// Points held.
    pub fn n_points(&self) -> u64 {
        (self.moves.len() + self.clicks.len()) as u64
    }

    /// Batches held: a copy holding as many as the shared database has every one.
    pub fn n_batches(&self) -> u64 {
        self.seqs.next_missing + self.seqs.above.len() as u64
    }
}

/// The outcome of adding a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BatchOutcome {
    /// The batch was new and its points were added; the recording now holds `n_points`.
    Added {
        /// Points in the recording after the batch.
        n_points: u64,
    },
    /// The batch had been counted before; nothing changed.
    Duplicate {
        /// Points in the recording.
        n_points: u64,
    },
}

impl BatchOutcome {
    /// Points in the recording after the call, either way.
    pub fn n_points(self) -> u64 {
        match self {
            BatchOutcome::Added { n_points } | BatchOutcome::Duplicate { n_points } => n_points,
        }
    }
}

/// Every recording the renderer holds.
#[derive(Debug)]
pub struct RecordingStore {
    limits: StoreLimits,
    /// Where accepted batches are made durable; `None` keeps everything in memory only.
    journal: Option<Journal>,
    recordings: Mutex<HashMap<RecordingId, Arc<Mutex<Recording>>>>,
    total_points: AtomicU64,
    /// Source of [`Recording::touched`] values.
    touches: AtomicU64,
}

impl RecordingStore {
    /// An empty store, in memory only.
    pub fn new(limits: StoreLimits) -> Self {
        Self::with_journal(limits, None)
    }

    /// An empty store that writes through `journal`.
    pub fn with_journal(limits: StoreLimits, journal: Option<Journal>) -> Self {
        RecordingStore {
            limits,
            journal,
            recordings: Mutex::new(HashMap::new()),
            total_points: AtomicU64::new(0),
            touches: AtomicU64::new(0),
        }
    }

    /// Makes sure the recording exists; starting twice is harmless (a page resends `start`
    /// after reconnecting).
    ///
    /// # Errors
    /// [`ErrorCode::StorageFailed`] if a new recording cannot be written to the journal.
    pub fn start(&self, id: &RecordingId, _viewport: Viewport) -> Result<(), Error> {
        self.get_or_create(id).map(|_| ())
    }

    /// Rebuilds recordings from the journal at start.
    ///
    /// Batches are applied with the same de-duplication as live ones; points beyond the
    /// limits are dropped with a warning (the limits may have been lowered since).
    pub fn restore(&self, replayed: Vec<(RecordingId, Replayed)>) {
        let mut replayed = replayed;
        // Oldest first, so that the count limit keeps the newest.
        replayed.sort_by_key(|(_, recording)| recording.created);
        for (id, stored) in replayed {
            let recording = self.insert_new(&id, stored.created.unwrap_or_else(SystemTime::now));
            let mut recording = lock(&recording);
            recording.stopped = stored.stopped;
            let mut dropped = 0usize;
            for batch in stored.batches {
                let n_new = (batch.moves.len() + batch.clicks.len()) as u64;
                if recording.seqs.contains(batch.seq) {
                    continue;
                }
                if recording.n_points() + n_new > self.limits.max_points_per_recording
                    || !self.reserve(n_new)
                {
                    dropped += n_new as usize;
                    continue;
                }
                Arc::make_mut(&mut recording.moves).extend_from_slice(&batch.moves);
                Arc::make_mut(&mut recording.clicks).extend_from_slice(&batch.clicks);
                recording.duration_ms = recording.duration_ms.max(batch.max_t);
                recording.seqs.insert(batch.seq);
            }
            if dropped > 0 {
                tracing::warn!(recording = %id, dropped, "stored points beyond the current limits were not loaded");
            }
        }
        tracing::info!(
            recordings = self.n_recordings(),
            points = self.n_points(),
            "recordings restored from the data folder"
        );
    }

    /// Adds a validated batch, once.
    ///
    /// A batch for a recording never started creates it: the `start` may have been lost
    /// with a connection while the batch was resent.
    ///
    /// # Errors
    /// [`ErrorCode::RecordingFull`] when a point limit would be passed, [`ErrorCode::OutOfRange`]
    /// for a sequence number too far ahead.
    pub fn add_batch(&self, batch: &PointsBatch) -> Result<BatchOutcome, Error> {
        let recording = self.get_or_create(&batch.recording)?;
        let mut recording = lock(&recording);
        let Some(stored) = self.check_and_reserve(&recording, batch)? else {
            return Ok(BatchOutcome::Duplicate {
                n_points: recording.n_points(),
            });
        };
        // Stored before it counts: an acknowledged batch is one the journal holds.
        if let Some(journal) = &self.journal {
            if let Err(err) = journal.append_batch(&batch.recording, &stored) {
                self.release(stored.n_points());
                return Err(storage_failed(&batch.recording, &err));
            }
        }
        self.apply(&mut recording, &stored);
        Ok(BatchOutcome::Added {
            n_points: recording.n_points(),
        })
    }

    /// The first half of [`add_batch`](Self::add_batch) for a store kept elsewhere (the
    /// shared database): checks the batch against the limits and reserves room for it.
    /// `None` means this copy already holds it. Whatever is returned must be given to
    /// [`finish_batch`](Self::finish_batch) once the database has answered.
    ///
    /// # Errors
    /// As [`add_batch`](Self::add_batch).
    pub fn prepare_batch(&self, batch: &PointsBatch) -> Result<Option<StoredBatch>, Error> {
        let recording = self.get_or_create(&batch.recording)?;
        let recording = lock(&recording);
        self.check_and_reserve(&recording, batch)
    }

    /// The second half of [`prepare_batch`](Self::prepare_batch): adds the batch to this
    /// copy if the database stored it now (`stored_new`) and the copy still lacks it;
    /// otherwise gives its reserved room back.
    pub fn finish_batch(&self, id: &RecordingId, stored: &StoredBatch, stored_new: bool) {
        let Some(recording) = self.get(id).filter(|_| stored_new) else {
            self.release(stored.n_points());
            return;
        };
        let mut recording = lock(&recording);
        if recording.seqs.contains(stored.seq) {
            self.release(stored.n_points());
        } else {
            self.apply(&mut recording, stored);
        }
    }

    /// Checks a batch against the sequence set and the limits and, if it is new and fits,
    /// reserves its points in the total and returns it in fixed point.
    fn check_and_reserve(
        &self,
        recording: &Recording,
        batch: &PointsBatch,
    ) -> Result<Option<StoredBatch>, Error> {
        if recording.seqs.contains(batch.seq) {
            return Ok(None);
        }
        if batch.seq >= recording.seqs.next_missing().saturating_add(MAX_SEQ_AHEAD) {
            return Err(Error::new(
                ErrorCode::OutOfRange,
                format!(
                    "batch {} is more than {MAX_SEQ_AHEAD} ahead of the first missing batch {}",
                    batch.seq,
                    recording.seqs.next_missing()
                ),
            ));
        }
        let n_new = batch.points.len() as u64;
        if recording.n_points() + n_new > self.limits.max_points_per_recording {
            return Err(Error::new(
                ErrorCode::RecordingFull,
                format!(
                    "recording {} holds {} points; the limit per recording is {}",
                    batch.recording,
                    recording.n_points(),
                    self.limits.max_points_per_recording
                ),
            ));
        }
        if !self.reserve(n_new) {
            return Err(Error::new(
                ErrorCode::RecordingFull,
                format!(
                    "the renderer holds its limit of {} points over all recordings",
                    self.limits.max_total_points
                ),
            ));
        }
        Ok(Some(fixed_batch(batch)))
    }

    /// Adds a stored batch whose room is reserved to its recording.
    fn apply(&self, recording: &mut Recording, stored: &StoredBatch) {
        Arc::make_mut(&mut recording.moves).extend_from_slice(&stored.moves);
        Arc::make_mut(&mut recording.clicks).extend_from_slice(&stored.clicks);
        recording.duration_ms = recording.duration_ms.max(stored.max_t);
        recording.seqs.insert(stored.seq);
        recording.touched = self.touch();
    }

    /// Gives back room reserved for a batch that was not added.
    fn release(&self, n_points: u64) {
        self.total_points.fetch_sub(n_points, Ordering::AcqRel);
    }

    /// Marks the recording stopped and returns its point count.
    ///
    /// # Errors
    /// [`ErrorCode::UnknownRecording`] if the renderer has never seen it.
    pub fn stop(&self, id: &RecordingId) -> Result<u64, Error> {
        let recording = self.get(id).ok_or_else(|| unknown(id))?;
        let mut recording = lock(&recording);
        if !recording.stopped {
            if let Some(journal) = &self.journal {
                journal
                    .append_stop(id)
                    .map_err(|err| storage_failed(id, &err))?;
            }
        }
        recording.stopped = true;
        recording.touched = self.touch();
        Ok(recording.n_points())
    }

    /// The recording, if held.
    pub fn get(&self, id: &RecordingId) -> Option<Arc<Mutex<Recording>>> {
        lock(&self.recordings).get(id).cloned()
    }

    /// Number of recordings held.
    pub fn n_recordings(&self) -> usize {
        lock(&self.recordings).len()
    }

    /// Points held over all recordings.
    pub fn n_points(&self) -> u64 {
        self.total_points.load(Ordering::Acquire)
    }

    fn touch(&self) -> u64 {
        self.touches.fetch_add(1, Ordering::Relaxed)
    }

    /// Reserves room for `n_new` points in the total, if the limit allows.
    fn reserve(&self, n_new: u64) -> bool {
        self.total_points
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |total| {
                (total + n_new <= self.limits.max_total_points).then_some(total + n_new)
            })
            .is_ok()
    }

    fn get_or_create(&self, id: &RecordingId) -> Result<Arc<Mutex<Recording>>, Error> {
        if let Some(recording) = self.get(id) {
            return Ok(recording);
        }
        let created = SystemTime::now();
        if let Some(journal) = &self.journal {
            journal
                .append_start(id, created)
                .map_err(|err| storage_failed(id, &err))?;
        }
        Ok(self.insert_new(id, created))
    }

    /// Inserts a recording (or returns the one a racing caller inserted first), evicting
    /// the least recently updated one when the count limit is reached.
    fn insert_new(&self, id: &RecordingId, created: SystemTime) -> Arc<Mutex<Recording>> {
        let mut recordings = lock(&self.recordings);
        if let Some(recording) = recordings.get(id) {
            return recording.clone();
        }
        if recordings.len() >= self.limits.max_recordings.max(1) {
            self.evict_oldest(&mut recordings);
        }
        let recording = Arc::new(Mutex::new(Recording::new(created, self.touch())));
        recordings.insert(id.clone(), recording.clone());
        recording
    }

    fn evict_oldest(&self, recordings: &mut HashMap<RecordingId, Arc<Mutex<Recording>>>) {
        let oldest = recordings
            .iter()
            .min_by_key(|(_, recording)| lock(recording).touched)
            .map(|(id, _)| id.clone());
        if let Some(id) = oldest {
            if let Some(recording) = recordings.remove(&id) {
                let n_points = lock(&recording).n_points();
                self.total_points.fetch_sub(n_points, Ordering::AcqRel);
                if let Some(journal) = &self.journal {
                    journal.remove(&id);
                }
                tracing::info!(recording = %id, n_points, "evicted the least recently updated recording");
            }
        }
    }
}

/// A validated batch in fixed point (16-bit fractions of its viewport), split into moves
/// and clicks: how every store keeps points, and what two renderers sum identically.
pub fn fixed_batch(batch: &PointsBatch) -> StoredBatch {
    let Viewport { width, height } = batch.viewport;
    let mut stored = StoredBatch {
        seq: batch.seq,
        max_t: 0,
        moves: Vec::new(),
        clicks: Vec::new(),
    };
    for point in &batch.points {
        let fixed = [to_fixed(point.x, width), to_fixed(point.y, height)];
        match point.kind {
            PointKind::Move => stored.moves.push(fixed),
            PointKind::Click => stored.clicks.push(fixed),
        }
        stored.max_t = stored.max_t.max(point.t);
    }
    stored
}

/// The error for a recording the store does not hold.
pub fn unknown(id: &RecordingId) -> Error {
    Error::new(
        ErrorCode::UnknownRecording,
        format!("the renderer holds no recording {id}"),
    )
}

/// The error for a batch, start or stop the journal could not take.
fn storage_failed(id: &RecordingId, err: &std::io::Error) -> Error {
    tracing::error!(recording = %id, cause = %err, "cannot store to the data folder");
    Error::new(
        ErrorCode::StorageFailed,
        format!("the renderer cannot store recording {id} ({err}); it will be resent"),
    )
}

/// Locks a mutex, recovering it if a panicking thread poisoned it: the data inside is
/// plain points and counters, still consistent enough to serve.
pub fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The set of sequence numbers seen: everything below `next_missing`, plus a few above.
#[derive(Debug, Default)]
struct SeqSet {
    next_missing: u64,
    above: BTreeSet<u64>,
}

impl SeqSet {
    fn contains(&self, seq: u64) -> bool {
        seq < self.next_missing || self.above.contains(&seq)
    }

    fn next_missing(&self) -> u64 {
        self.next_missing
    }

    fn insert(&mut self, seq: u64) {
        if seq == self.next_missing {
            self.next_missing += 1;
            while self.above.remove(&self.next_missing) {
                self.next_missing += 1;
            }
        } else if seq > self.next_missing {
            self.above.insert(seq);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use protocol::Point;

    fn limits() -> StoreLimits {
        StoreLimits {
            max_recordings: 2,
            max_points_per_recording: 5,
            max_total_points: 8,
        }
    }

    fn batch(id: &str, seq: u64, n: usize) -> PointsBatch {
        PointsBatch {
            recording: RecordingId::try_from(id).unwrap(),
            seq,
            viewport: Viewport {
                width: 100,
                height: 100,
            },
            points: vec![
                Point {
                    x: 50.0,
                    y: 50.0,
                    t: 10,
                    kind: PointKind::Move
                };
                n
            ],
        }
    }

    #[test]
    fn duplicates_are_acknowledged_not_counted() {
        let store = RecordingStore::new(limits());
        assert_eq!(
            store.add_batch(&batch("a", 1, 2)).unwrap(),
            BatchOutcome::Added { n_points: 2 }
        );
        assert_eq!(
            store.add_batch(&batch("a", 0, 1)).unwrap(),
            BatchOutcome::Added { n_points: 3 }
        );
        assert_eq!(
            store.add_batch(&batch("a", 1, 2)).unwrap(),
            BatchOutcome::Duplicate { n_points: 3 }
        );
        assert_eq!(
            store.add_batch(&batch("a", 0, 1)).unwrap(),
            BatchOutcome::Duplicate { n_points: 3 }
        );
        assert_eq!(store.n_points(), 3);
    }

    #[test]
    fn limits_refuse_with_recording_full() {
        let store = RecordingStore::new(limits());
        store.add_batch(&batch("a", 0, 5)).unwrap();
        let err = store.add_batch(&batch("a", 1, 1)).unwrap_err();
        assert_eq!(err.code, ErrorCode::RecordingFull);
        store.add_batch(&batch("b", 0, 3)).unwrap();
        let err = store.add_batch(&batch("b", 1, 1)).unwrap_err();
        assert_eq!(err.code, ErrorCode::RecordingFull);
        assert_eq!(store.n_points(), 8);
    }

    #[test]
    fn oldest_recording_is_evicted_past_the_count_limit() {
        let store = RecordingStore::new(limits());
        store.add_batch(&batch("a", 0, 1)).unwrap();
        store.add_batch(&batch("b", 0, 1)).unwrap();
        store.add_batch(&batch("c", 0, 1)).unwrap();
        assert_eq!(store.n_recordings(), 2);
        assert!(store.get(&RecordingId::try_from("a").unwrap()).is_none());
        assert_eq!(store.n_points(), 2);
    }

    #[test]
    fn a_prepared_batch_counts_only_once_the_database_stored_it() {
        let store = RecordingStore::new(limits());
        let id = RecordingId::try_from("a").unwrap();
        let stored = store
            .prepare_batch(&batch("a", 0, 3))
            .unwrap()
            .expect("new");
        assert_eq!(
            store.n_points(),
            3,
            "room reserved while the database commits"
        );
        // Another renderer stored it first: this copy does not take it, the room is freed.
        store.finish_batch(&id, &stored, false);
        assert_eq!(store.n_points(), 0);
        assert_eq!(lock(&store.get(&id).unwrap()).n_batches(), 0);

        let stored = store
            .prepare_batch(&batch("a", 0, 3))
            .unwrap()
            .expect("new");
        // A second copy prepared while the first commits is taken once.
        let again = store
            .prepare_batch(&batch("a", 0, 3))
            .unwrap()
            .expect("not held yet");
        store.finish_batch(&id, &stored, true);
        store.finish_batch(&id, &again, true);
        assert_eq!(store.n_points(), 3);
        assert_eq!(lock(&store.get(&id).unwrap()).n_batches(), 1);
        assert!(
            store.prepare_batch(&batch("a", 0, 3)).unwrap().is_none(),
            "held now"
        );
    }

    #[test]
    fn far_ahead_sequence_numbers_are_refused() {
        let store = RecordingStore::new(limits());
        let err = store.add_batch(&batch("a", MAX_SEQ_AHEAD, 1)).unwrap_err();
        assert_eq!(err.code, ErrorCode::OutOfRange);
    }

    #[test]
    fn stop_of_an_unknown_recording_is_an_error() {
        let store = RecordingStore::new(limits());
        let err = store
            .stop(&RecordingId::try_from("nope").unwrap())
            .unwrap_err();
        assert_eq!(err.code, ErrorCode::UnknownRecording);
    }
}
