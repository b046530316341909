//! State shared by every task of one renderer.

use std::sync::Arc;
use std::time::Duration;

use protocol::Limits;
use tokio::sync::Semaphore;

use heatmap::background::Background;
use heatmap::render::RenderSettings;

use crate::config::Config;
use crate::event_store::EventStore;
use crate::ingest::{Ingest, IngestLimits};
use crate::journal::Journal;
use crate::metrics::RendererMetrics;
use crate::requests::GenerateRequests;
use crate::retention::PruneGuard;
use crate::store::{RecordingStore, StoreLimits};
use ::analytics::live::{Analytics, SystemClock};

/// Previews computing at once (each takes a few milliseconds on a small grid).
const PREVIEW_SLOTS: usize = 2;

/// Everything a connection or render task needs, behind one `Arc`.
#[derive(Debug)]
pub(crate) struct Context {
    /// The flags the renderer was started with.
    pub config: Config,
    /// Message bounds derived from the flags.
    pub limits: Limits,
    /// How images are drawn, derived from the flags.
    pub render_settings: RenderSettings,
    /// The recordings.
    pub store: RecordingStore,
    /// Counters and gauges for `/metrics` and `/healthz`.
    pub metrics: Arc<RendererMetrics>,
    /// Tracked sites' events and sessions.
    pub analytics: Arc<Analytics>,
    /// The event store's writer: every event request is committed through it.
    pub ingest: Ingest,
    /// Stops the retention task when the context goes.
    _pruner: PruneGuard,
    /// Caps renders running at once: each holds a few full-size buffers.
    pub render_permits: Semaphore,
    /// Caps live previews computing at once; a request finding none free is told `busy`.
    pub preview_permits: Arc<Semaphore>,
    /// Generate requests by the page's number, so a resent one draws no second image.
    pub generates: GenerateRequests,
    /// With `--store postgres://…`: where recordings' batches are stored (instead of the
    /// journal), so any renderer sharing the database renders any recording.
    #[cfg(feature = "cluster")]
    pub recording_db: Option<Arc<crate::recording_db::RecordingDb>>,
}

impl Context {
    /// Builds the shared state: loads the `--background` screenshot if one is given and
    /// restores the recordings stored in `--data-dir`.
    pub fn new(config: Config) -> Result<Self, crate::Error> {
        let background = match &config.background {
            Some(path) => Some(Arc::new(Background::load(
                path,
                config.width,
                config.height,
            )?)),
            None => None,
        };
        let retention = (config.retention_hours > 0)
            .then(|| Duration::from_secs(config.retention_hours * 3600));
        let limits = StoreLimits {
            max_recordings: config.max_recordings,
            max_points_per_recording: config.max_points_per_recording,
            max_total_points: config.max_total_points,
        };
        let metrics = Arc::new(RendererMetrics::default());
        let event_store = EventStore::open(&config)?;
        // With a shared database the recordings live there and this renderer's copy is a
        // cache; without one, the journal in --data-dir keeps them.
        #[cfg(feature = "cluster")]
        let recording_db = match (&event_store, &config.store) {
            (EventStore::Postgres(_), Some(url)) => Some(Arc::new(
                crate::recording_db::RecordingDb::open(
                    url,
                    crate::recording_db::RecordingDbLimits {
                        max_queued: usize::try_from(config.max_queued_batches)
                            .unwrap_or(usize::MAX),
                        max_commit: usize::try_from(config.max_commit_batches)
                            .unwrap_or(usize::MAX),
                        max_points_per_recording: config.max_points_per_recording,
                    },
                    retention,
                    metrics.clone(),
                )
                .map_err(|source| crate::Error::Store {
                    path: crate::event_store::redact(url),
                    source,
                })?,
            )),
            _ => None,
        };
        #[cfg(feature = "cluster")]
        let in_database = recording_db.is_some();
        #[cfg(not(feature = "cluster"))]
        let in_database = false;
        let store = if in_database {
            RecordingStore::new(limits)
        } else {
            let (journal, replayed, recordings_damage) =
                Journal::open(&config.data_dir, config.fsync, retention).map_err(|source| {
                    crate::Error::Write {
                        path: config.data_dir.clone(),
                        source,
                    }
                })?;
            metrics.record_storage_damage(recordings_damage);
            let store = RecordingStore::with_journal(limits, Some(journal));
            store.restore(replayed);
            store
        };
        let analytics = Arc::new(Analytics::new(
            Arc::new(SystemClock),
            event_store.store(),
            config.max_events,
            config.session_timeout_secs.saturating_mul(1000) as i64,
        ));
        match analytics.restore() {
            Ok(0) => {}
            Ok(n_events) => tracing::info!(
                events = n_events,
                "live analytics rebuilt from the event store"
            ),
            Err(err) => tracing::error!(
                cause = %err,
                "cannot read recent events from the store; live numbers start empty"
            ),
        }
        if let Ok(bytes) = event_store.size_bytes() {
            metrics
                .store_bytes
                .set(i64::try_from(bytes).unwrap_or(i64::MAX));
        }
        let pruner = PruneGuard::spawn(
            event_store.clone(),
            Duration::from_secs(config.retention_days.saturating_mul(86_400)),
            metrics.store_bytes.clone(),
        );
        let ingest = Ingest::start(
            analytics.clone(),
            event_store.clone(),
            metrics.clone(),
            IngestLimits {
                max_queued_requests: config.max_queued_event_requests,
                max_commit_events: config.max_commit_events,
            },
        )
        .map_err(|source| crate::Error::Write {
            path: config.data_dir.clone(),
            source,
        })?;
        Ok(Context {
            limits: Limits {
                max_points_per_batch: config.max_points_per_batch,
            },
            render_settings: RenderSettings {
                width: config.width,
                height: config.height,
                bandwidth: config.bandwidth,
                colormap: config.colormap,
                scale: config.scale,
                kind: config.kind,
                output: config.output,
                click_weight: config.click_weight,
                annotate: true,
                background,
                pixel_scale: 1.0,
            },
            store,
            metrics,
            analytics,
            ingest,
            _pruner: pruner,
            render_permits: Semaphore::new(config.max_concurrent_renders.max(1)),
            preview_permits: Arc::new(Semaphore::new(PREVIEW_SLOTS)),
            generates: GenerateRequests::new(config.remembered_generates),
            #[cfg(feature = "cluster")]
            recording_db,
            config,
        })
    }
}
