//! State shared by every task of one renderer.

use std::sync::atomic::AtomicU64;

use netkit::ErrorCounters;
use protocol::Limits;
use tokio::sync::Semaphore;

use crate::config::Config;
use crate::render::RenderSettings;
use crate::store::{RecordingStore, StoreLimits};

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
    /// Refused messages by code.
    pub errors: ErrorCounters,
    /// Caps renders running at once: each holds a few full-size buffers.
    pub render_permits: Semaphore,
    /// Relay links open now.
    pub links_open: AtomicU64,
    /// Heatmaps written since start.
    pub renders_total: AtomicU64,
}

impl Context {
    pub fn new(config: Config) -> Self {
        Context {
            limits: Limits {
                max_points_per_batch: config.max_points_per_batch,
            },
            render_settings: RenderSettings {
                width: config.width,
                height: config.height,
                bandwidth: config.bandwidth,
                ..RenderSettings::default()
            },
            store: RecordingStore::new(StoreLimits {
                max_recordings: config.max_recordings,
                max_points_per_recording: config.max_points_per_recording,
                max_total_points: config.max_total_points,
            }),
            errors: ErrorCounters::default(),
            render_permits: Semaphore::new(config.max_concurrent_renders.max(1)),
            links_open: AtomicU64::new(0),
            renders_total: AtomicU64::new(0),
            config,
        }
    }
}
