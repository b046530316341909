//! The renderer's metrics, served at `/metrics` (OpenMetrics text) and summarised in `/healthz`.

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use netkit::ErrorCounters;

use crate::append_log::Damage;

/// Every number the renderer exports. Cheap to update (atomics); registered once.
#[derive(Debug)]
pub struct RendererMetrics {
    /// Relay links open now.
    pub links_open: Gauge,
    /// Relay links accepted since start.
    pub links_total: Counter,
    /// Text frames received from relays.
    pub frames_in: Counter,
    /// Bytes of text frames received from relays.
    pub bytes_in: Counter,
    /// Frames written to relays.
    pub frames_out: Counter,
    /// New batches stored.
    pub batches_stored: Counter,
    /// Batches received again and acknowledged without counting.
    pub batches_duplicate: Counter,
    /// Points stored.
    pub points_stored: Counter,
    /// Points in batches refused (the reason is in the error counters).
    pub points_rejected: Counter,
    /// Recordings held now.
    pub recordings: Gauge,
    /// Points held now.
    pub points_held: Gauge,
    /// Heatmaps written.
    pub renders: Counter,
    /// Time from a Generate's start to the written file.
    pub render_duration: Histogram,
    /// Renders computing now; tests and operators use it to see that a Generate is under way.
    pub renders_running: Gauge,
    /// Preview frames computed.
    pub previews: Counter,
    /// Tracked-site events accepted by `POST /api/events`.
    pub events: Counter,
    /// Accepted events the store already held (a resend of a numbered event), acknowledged
    /// and not counted again; a steady rise means senders resend a lot.
    pub events_duplicate: Counter,
    /// Time for the event store to commit one request's events (the 202 waits for it).
    pub store_commit: Histogram,
    /// Time of one group commit of recordings' batches to PostgreSQL (cluster mode).
    pub recording_commit: Histogram,
    /// Batches the bus stream holds for the renderers' consumer, as the last fetched batch
    /// said (cluster mode, `--bus`): the consumer lag an operator watches.
    pub bus_pending: Gauge,
    /// Bytes the event store's file uses, so an operator sees it grow toward
    /// `--max-store-bytes` or the disk's size before event requests get 503.
    pub store_bytes: Gauge,
    /// Damaged spans found in the middle of stored logs at start (their good records after
    /// them kept); non-zero makes `/healthz` say "degraded", because a disk or a hand
    /// damaged stored data.
    pub storage_corrupt_spans: Counter,
    /// Bytes in those spans.
    pub storage_corrupt_bytes: Counter,
    /// Torn log ends (a crash or a failed write, never acknowledged) cut off at start.
    pub storage_torn_tails: Counter,
    /// Requests refused for a missing or wrong `--token` (401).
    pub unauthorized: Counter,
    /// Refused messages by code.
    pub errors: ErrorCounters,
    /// Live messages to or from other renderers dropped (cluster mode): a full queue,
    /// NATS away, or a bad or oversized message.
    pub live_dropped: Counter,
    /// Events other renderers committed, folded into this renderer's live view.
    pub live_folded: Counter,
    /// All of the above, for `/metrics`.
    pub registry: Registry,
}

impl Default for RendererMetrics {
    fn default() -> Self {
        let mut metrics = RendererMetrics {
            links_open: Gauge::default(),
            links_total: Counter::default(),
            frames_in: Counter::default(),
            bytes_in: Counter::default(),
            frames_out: Counter::default(),
            batches_stored: Counter::default(),
            batches_duplicate: Counter::default(),
            points_stored: Counter::default(),
            points_rejected: Counter::default(),
            recordings: Gauge::default(),
            points_held: Gauge::default(),
            renders: Counter::default(),
            render_duration: Histogram::new(netkit::metrics::latency_buckets()),
            renders_running: Gauge::default(),
            previews: Counter::default(),
            events: Counter::default(),
            events_duplicate: Counter::default(),
            store_commit: Histogram::new(netkit::metrics::latency_buckets()),
            recording_commit: Histogram::new(netkit::metrics::latency_buckets()),
            bus_pending: Gauge::default(),
            store_bytes: Gauge::default(),
            storage_corrupt_spans: Counter::default(),
            storage_corrupt_bytes: Counter::default(),
            storage_torn_tails: Counter::default(),
            unauthorized: Counter::default(),
            errors: ErrorCounters::default(),
            live_dropped: Counter::default(),
            live_folded: Counter::default(),
            registry: Registry::default(),
        };
        let registry = &mut metrics.registry;
        registry.register(
            "renderer_links_open",
            "Relay links open now",
            metrics.links_open.clone(),
        );
        registry.register(
            "renderer_links",
            "Relay links accepted",
            metrics.links_total.clone(),
        );
        registry.register(
            "renderer_frames_in",
            "Text frames received from relays",
            metrics.frames_in.clone(),
        );
        registry.register(
            "renderer_bytes_in",
            "Bytes of text frames received from relays",
            metrics.bytes_in.clone(),
        );
        registry.register(
            "renderer_frames_out",
            "Frames written to relays",
            metrics.frames_out.clone(),
        );
        registry.register(
            "renderer_batches_stored",
            "New batches stored and acknowledged",
            metrics.batches_stored.clone(),
        );
        registry.register(
            "renderer_batches_duplicate",
            "Batches received again, acknowledged without counting",
            metrics.batches_duplicate.clone(),
        );
        registry.register(
            "renderer_points_stored",
            "Points stored",
            metrics.points_stored.clone(),
        );
        registry.register(
            "renderer_points_rejected",
            "Points in refused batches (reasons in renderer_errors_total)",
            metrics.points_rejected.clone(),
        );
        registry.register(
            "renderer_recordings",
            "Recordings held now",
            metrics.recordings.clone(),
        );
        registry.register(
            "renderer_points_held",
            "Points held now over all recordings",
            metrics.points_held.clone(),
        );
        registry.register(
            "renderer_renders",
            "Heatmaps written",
            metrics.renders.clone(),
        );
        registry.register(
            "renderer_render_duration_seconds",
            "Time from a Generate's start to the written PNG",
            metrics.render_duration.clone(),
        );
        registry.register(
            "renderer_renders_running",
            "Renders computing now",
            metrics.renders_running.clone(),
        );
        registry.register(
            "renderer_previews",
            "Live preview frames computed",
            metrics.previews.clone(),
        );
        registry.register(
            "renderer_events",
            "Tracked-site events accepted",
            metrics.events.clone(),
        );
        registry.register(
            "renderer_events_duplicate",
            "Tracked-site events already stored (resends), acknowledged without counting",
            metrics.events_duplicate.clone(),
        );
        registry.register(
            "renderer_store_commit_seconds",
            "Time for the event store to commit one request's events",
            metrics.store_commit.clone(),
        );
        registry.register(
            "renderer_recording_commit_seconds",
            "Time of one group commit of recordings' batches to PostgreSQL (cluster mode, --store)",
            metrics.recording_commit.clone(),
        );
        registry.register(
            "renderer_bus_pending",
            "Batches waiting in the bus stream for the renderers' consumer, as of the last batch fetched (cluster mode, --bus)",
            metrics.bus_pending.clone(),
        );
        registry.register(
            "renderer_store_bytes",
            "Bytes the event store's file uses",
            metrics.store_bytes.clone(),
        );
        registry.register(
            "renderer_storage_corrupt_spans",
            "Damaged spans found mid-log at start (records after them kept)",
            metrics.storage_corrupt_spans.clone(),
        );
        registry.register(
            "renderer_storage_corrupt_bytes",
            "Bytes in damaged spans found mid-log at start",
            metrics.storage_corrupt_bytes.clone(),
        );
        registry.register(
            "renderer_storage_torn_tails",
            "Torn log ends (never acknowledged) cut off at start",
            metrics.storage_torn_tails.clone(),
        );
        registry.register(
            "renderer_unauthorized",
            "Requests refused for a missing or wrong token (401)",
            metrics.unauthorized.clone(),
        );
        registry.register(
            "renderer_live_dropped",
            "Live messages between renderers dropped (cluster mode): queue full, NATS away, bad or oversized",
            metrics.live_dropped.clone(),
        );
        registry.register(
            "renderer_live_folded",
            "Events other renderers committed, folded into this renderer's live view (cluster mode)",
            metrics.live_folded.clone(),
        );
        metrics.errors.register(registry, "renderer");
        // The storage-failure series exists from the start at 0, so an alert's `increase`
        // sees the very first failure (a series that appears at 1 shows no increase).
        metrics.errors.get(protocol::ErrorCode::StorageFailed);
        metrics
    }
}

impl RendererMetrics {
    /// Counts what recovery found in the data folder at start.
    pub fn record_storage_damage(&self, damage: Damage) {
        self.storage_corrupt_spans.inc_by(damage.corrupt_spans);
        self.storage_corrupt_bytes.inc_by(damage.corrupt_bytes);
        self.storage_torn_tails.inc_by(damage.torn_tails);
    }
}
