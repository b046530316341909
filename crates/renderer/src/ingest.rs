//! The event store's one writer: requests' events committed together (group commit).
//!
//! Each `events` request from a relay (and each direct `POST /api/events`) is queued here
//! with a way back to its sender. One thread takes whatever requests are waiting, up to
//! `--max-commit-events`, and commits them in one store transaction: a commit costs about
//! the same for ten events as for ten thousand (the fsync dominates), so under load the
//! writer batches more and the rate grows instead of the queue. Every sender of the group
//! hears the outcome of the same commit, so an acknowledgement still means stored.

use std::sync::{Arc, OnceLock};
use std::time::Instant;

use ::analytics::StoreError;

use crate::event_store::EventStore;
use protocol::analytics::TrackedEvent;
use tokio::sync::{mpsc, oneshot, watch};

use crate::metrics::RendererMetrics;
use ::analytics::live::Analytics;

/// Why a request's events were not stored (none of them was).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct IngestError {
    /// Whether sending them again later can work (a full disk, a busy database).
    pub retryable: bool,
    /// Whether the writer's queue was full (nothing was tried), rather than the store failing.
    pub busy: bool,
    /// The store's reason, for the sender and the log.
    pub message: String,
}

impl From<&StoreError> for IngestError {
    fn from(err: &StoreError) -> Self {
        IngestError {
            retryable: err.is_retryable(),
            busy: false,
            message: err.to_string(),
        }
    }
}

/// One request's events waiting for the writer.
struct Job {
    events: Vec<TrackedEvent>,
    reply: oneshot::Sender<Result<usize, IngestError>>,
}

/// The queue in front of the writer thread. Dropping it ends the thread once the queued
/// requests are committed.
#[derive(Debug)]
pub(crate) struct Ingest {
    jobs: mpsc::Sender<Job>,
    /// Bumped after every commit, so pushers of live analytics know something changed.
    changes: watch::Receiver<u64>,
    /// The sending side of `changes`, shared with the writer thread, so events folded in
    /// from other renderers (`live_bus`) wake the pushers too.
    changed: Arc<watch::Sender<u64>>,
    /// Where the writer sends the live facts of each commit, once `live_bus` asked for
    /// them ([`Ingest::tap_commits`]); unset, the writer copies nothing.
    tap: Arc<OnceLock<mpsc::Sender<Vec<TrackedEvent>>>>,
}

impl std::fmt::Debug for Job {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Job")
            .field("events", &self.events.len())
            .finish()
    }
}

/// The writer's bounds.
#[derive(Debug, Clone, Copy)]
pub(crate) struct IngestLimits {
    /// Requests waiting for the writer; past it a request is refused as busy.
    pub max_queued_requests: usize,
    /// Events committed in one transaction at most (a request is never split).
    pub max_commit_events: usize,
}

impl Ingest {
    /// Starts the writer thread over `analytics`.
    ///
    /// # Errors
    /// The thread cannot be spawned.
    pub fn start(
        analytics: Arc<Analytics>,
        event_store: EventStore,
        metrics: Arc<RendererMetrics>,
        limits: IngestLimits,
    ) -> std::io::Result<Self> {
        let (jobs, queue) = mpsc::channel(limits.max_queued_requests.max(1));
        let (changed, changes) = watch::channel(0u64);
        let changed = Arc::new(changed);
        let tap = Arc::new(OnceLock::new());
        let writer = Writer {
            changed: changed.clone(),
            tap: tap.clone(),
        };
        std::thread::Builder::new()
            .name("event-writer".into())
            .spawn(move || {
                write_until_closed(queue, &analytics, &event_store, &metrics, limits, &writer)
            })?;
        Ok(Ingest {
            jobs,
            changes,
            changed,
            tap,
        })
    }

    /// From now on, sends the live facts of every commit (each event stamped with the
    /// time it was stored at, positions left out) to the returned receiver, for
    /// `live_bus` to tell the other renderers; a full queue drops a commit's facts and
    /// counts them (`renderer_live_dropped_total`), never delaying the commit. `None` if
    /// commits are already tapped.
    #[cfg_attr(not(feature = "cluster"), allow(dead_code))]
    pub fn tap_commits(&self, capacity: usize) -> Option<mpsc::Receiver<Vec<TrackedEvent>>> {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        self.tap.set(tx).ok().map(|()| rx)
    }

    /// Wakes the live pushers as a commit does: another renderer's events were folded
    /// into the live view.
    #[cfg_attr(not(feature = "cluster"), allow(dead_code))]
    pub fn note_remote_change(&self) {
        self.changed
            .send_modify(|version| *version = version.wrapping_add(1));
    }

    /// Queues one request's events and waits until they are committed (or not).
    ///
    /// # Errors
    /// `busy` when the queue is full (retryable), the store's error, or the writer gone.
    pub async fn submit(&self, events: Vec<TrackedEvent>) -> Result<usize, IngestError> {
        let (reply, outcome) = oneshot::channel();
        if let Err(err) = self.jobs.try_send(Job { events, reply }) {
            let (busy, message) = match err {
                mpsc::error::TrySendError::Full(_) => (
                    true,
                    format!(
                        "{} event requests are waiting for the store (--max-queued-event-requests)",
                        self.jobs.max_capacity()
                    ),
                ),
                mpsc::error::TrySendError::Closed(_) => {
                    (false, "the event writer has stopped".into())
                }
            };
            return Err(IngestError {
                retryable: true,
                busy,
                message,
            });
        }
        outcome.await.unwrap_or_else(|_| {
            Err(IngestError {
                retryable: true,
                busy: false,
                message: "the event writer stopped before committing these events".into(),
            })
        })
    }

    /// A receiver that changes after every commit.
    pub fn changes(&self) -> watch::Receiver<u64> {
        self.changes.clone()
    }
}

/// What the writer thread tells others after a commit.
struct Writer {
    changed: Arc<watch::Sender<u64>>,
    tap: Arc<OnceLock<mpsc::Sender<Vec<TrackedEvent>>>>,
}

/// What another renderer's live view needs of a committed event: its kind, page,
/// session, number, country, the time it was stored at (as its `timestamp`, so every
/// live view places it alike) and the few metadata fields sessions show.
fn live_facts(event: &TrackedEvent, now_ms: i64) -> TrackedEvent {
    let at = event.timestamp.map_or(now_ms, |at| {
        at.min(now_ms + ::analytics::live::MAX_CLOCK_SKEW_MS)
    });
    TrackedEvent {
        kind: event.kind,
        page: event.page.clone(),
        session_id: event.session_id.clone(),
        timestamp: Some(at),
        seq: event.seq,
        country: event.country.clone(),
        metadata: protocol::analytics::EventMetadata {
            visible: event.metadata.visible,
            device: event.metadata.device.clone(),
            referrer: event.metadata.referrer.clone(),
            ..Default::default()
        },
    }
}

/// The writer thread: commits queued requests in groups until the queue closes.
fn write_until_closed(
    mut queue: mpsc::Receiver<Job>,
    analytics: &Analytics,
    event_store: &EventStore,
    metrics: &RendererMetrics,
    limits: IngestLimits,
    writer: &Writer,
) {
    while let Some(first) = queue.blocking_recv() {
        let mut group = vec![first];
        let mut n_events = group[0].events.len();
        while n_events < limits.max_commit_events {
            match queue.try_recv() {
                Ok(job) => {
                    n_events += job.events.len();
                    group.push(job);
                }
                Err(_) => break,
            }
        }
        let mut events = Vec::with_capacity(n_events);
        let mut replies = Vec::with_capacity(group.len());
        for job in group {
            replies.push((job.events.len(), job.reply));
            events.extend(job.events);
        }
        let tap = writer.tap.get();
        let facts: Option<Vec<TrackedEvent>> = tap.map(|_| {
            let now = analytics.now_ms();
            events.iter().map(|event| live_facts(event, now)).collect()
        });
        let started = Instant::now();
        let outcome = analytics.ingest(events);
        metrics
            .store_commit
            .observe(started.elapsed().as_secs_f64());
        if let Some(Ok(bytes)) = event_store
            .sized_per_commit()
            .then(|| event_store.size_bytes())
        {
            metrics
                .store_bytes
                .set(i64::try_from(bytes).unwrap_or(i64::MAX));
        }
        match outcome {
            Ok(ingested) => {
                metrics.events.inc_by(n_events as u64);
                metrics.events_duplicate.inc_by(ingested.duplicates);
                for (n, reply) in replies {
                    let _ = reply.send(Ok(n));
                }
                writer
                    .changed
                    .send_modify(|version| *version = version.wrapping_add(1));
                if let (Some(tap), Some(facts)) = (tap, facts) {
                    if tap.try_send(facts).is_err() {
                        metrics.live_dropped.inc();
                    }
                }
            }
            Err(err) => {
                tracing::error!(cause = %err, events = n_events, requests = replies.len(), "cannot store tracked events");
                metrics.errors.record(protocol::ErrorCode::StorageFailed);
                let err = IngestError::from(&err);
                for (_, reply) in replies {
                    let _ = reply.send(Err(err.clone()));
                }
            }
        }
    }
}
