//! The event store's retention: a background task deletes events older than
//! `--retention-days`, once at start and then every hour, on a blocking thread.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::event_store::EventStore;
use prometheus_client::metrics::gauge::Gauge;
use tokio::sync::Notify;

use ::analytics::live::{Clock, SystemClock};

/// How often old events are pruned. An hour is the store's unit (it deletes whole hours),
/// so pruning more often would find nothing new.
const PRUNE_EVERY: Duration = Duration::from_secs(3600);

/// Owns the prune task: dropping it stops the task (it sleeps on a `Notify`), so a
/// renderer that stops, or a test that drops its context, leaves nothing running.
#[derive(Debug)]
pub(crate) struct PruneGuard {
    shared: Arc<Shared>,
}

#[derive(Debug, Default)]
struct Shared {
    /// Set on drop; the task checks it after every wake-up.
    stop: AtomicBool,
    /// Wakes the task early, to stop.
    wake: Notify,
}

impl PruneGuard {
    /// Starts pruning `store` of events older than `retention` (measured on the system
    /// clock), updating `store_bytes` after each pass. Must be called inside a Tokio
    /// runtime.
    pub(crate) fn spawn(store: EventStore, retention: Duration, store_bytes: Gauge) -> Self {
        let shared = Arc::new(Shared::default());
        let task_shared = shared.clone();
        let retention_ms = i64::try_from(retention.as_millis()).unwrap_or(i64::MAX);
        tokio::spawn(async move {
            while !task_shared.stop.load(Ordering::SeqCst) {
                let cut_ms = SystemClock.now_ms().saturating_sub(retention_ms);
                let job_store = store.clone();
                let outcome = tokio::task::spawn_blocking(move || {
                    let pruned = job_store.store().prune(cut_ms);
                    (pruned, job_store.size_bytes())
                })
                .await;
                match outcome {
                    Ok((Ok(pruned), size)) => {
                        if pruned > 0 {
                            tracing::info!(
                                events = pruned,
                                cut_ms,
                                "pruned tracked-site events older than the retention"
                            );
                        }
                        if let Ok(bytes) = size {
                            store_bytes.set(i64::try_from(bytes).unwrap_or(i64::MAX));
                        }
                    }
                    Ok((Err(err), _)) => {
                        tracing::error!(cause = %err, "cannot prune tracked-site events; trying again in an hour");
                    }
                    Err(err) => tracing::error!(cause = %err, "the prune task failed"),
                }
                tokio::select! {
                    () = tokio::time::sleep(PRUNE_EVERY) => {}
                    () = task_shared.wake.notified() => {}
                }
            }
        });
        PruneGuard { shared }
    }
}

impl Drop for PruneGuard {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        // notify_one keeps a permit when the task is not waiting yet, so it cannot miss it.
        self.shared.wake.notify_one();
    }
}
