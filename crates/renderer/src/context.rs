//! State shared by every task of one renderer.

use std::sync::Arc;
use std::time::Duration;

use protocol::Limits;
use tokio::sync::Semaphore;

use crate::analytics::{Analytics, SystemClock};
use crate::background::Background;
use crate::config::Config;
use crate::event_log::EventLog;
use crate::journal::Journal;
use crate::metrics::RendererMetrics;
use crate::render::RenderSettings;
use crate::requests::GenerateRequests;
use crate::store::{RecordingStore, StoreLimits};

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
    pub metrics: RendererMetrics,
    /// Tracked sites' events and sessions.
    pub analytics: Analytics,
    /// Caps renders running at once: each holds a few full-size buffers.
    pub render_permits: Semaphore,
    /// Caps live previews computing at once; a request finding none free is told `busy`.
    pub preview_permits: Arc<Semaphore>,
    /// Generate requests by the page's number, so a resent one draws no second image.
    pub generates: GenerateRequests,
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
        let (journal, replayed, recordings_damage) =
            Journal::open(&config.data_dir, config.fsync, retention).map_err(|source| {
                crate::Error::Write {
                    path: config.data_dir.clone(),
                    source,
                }
            })?;
        let store = RecordingStore::with_journal(
            StoreLimits {
                max_recordings: config.max_recordings,
                max_points_per_recording: config.max_points_per_recording,
                max_total_points: config.max_total_points,
            },
            Some(journal),
        );
        store.restore(replayed);
        let (event_log, events, events_damage) =
            EventLog::open(&config.data_dir, config.max_events).map_err(|source| {
                crate::Error::Write {
                    path: config.data_dir.join("analytics"),
                    source,
                }
            })?;
        let analytics = Analytics::with_log(
            Arc::new(SystemClock),
            config.max_events,
            config.session_timeout_secs.saturating_mul(1000) as i64,
            Some(event_log),
        );
        let n_events = events.len();
        analytics.restore(events);
        if n_events > 0 {
            tracing::info!(
                events = n_events,
                "tracked-site events restored from the data folder"
            );
        }
        let metrics = RendererMetrics::default();
        let mut damage = recordings_damage;
        damage.add(events_damage);
        metrics.record_storage_damage(damage);
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
            },
            store,
            metrics,
            analytics,
            render_permits: Semaphore::new(config.max_concurrent_renders.max(1)),
            preview_permits: Arc::new(Semaphore::new(PREVIEW_SLOTS)),
            generates: GenerateRequests::new(config.remembered_generates),
            config,
        })
    }
}
