//! The renderer's settings: command-line flags, with their defaults in one place.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Parser;
use protocol::{limits, Colormap, HeatKind, OutputMode, Scale};

/// Every knob of the renderer. `Config::default()` is what the binary runs with when given
/// no flags, so tests and the binary share the same defaults.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "renderer",
    version,
    about = "Accumulates recorded pointer events and renders PNG heatmaps."
)]
pub struct Config {
    /// Address to listen on for the relay's WebSocket and image requests (port 0 picks a free port).
    #[arg(long, default_value_t = SocketAddr::from(([127, 0, 0, 1], limits::DEFAULT_RENDERER_PORT)))]
    pub listen: SocketAddr,

    /// Folder the PNG heatmaps are written to (created if missing); nothing is written outside it.
    #[arg(long, default_value = "heatmaps")]
    pub out_dir: PathBuf,

    /// Folder where recordings (an append-only log each, in recordings/) and tracked-site events
    /// (analytics.sqlite) are stored and restored from at start.
    #[arg(long, default_value = "data")]
    pub data_dir: PathBuf,

    /// Flush every stored batch and event request to disk before acknowledging it (survives power loss,
    /// costs a disk sync per batch). Without it a batch is acknowledged once the operating system has it,
    /// which survives a crash of the renderer.
    #[arg(long)]
    pub fsync: bool,

    /// Days tracked-site events are kept in the store; older ones are deleted at start and every hour.
    #[arg(long, default_value_t = 90, value_parser = clap::value_parser!(u64).range(1..=36_500))]
    pub retention_days: u64,

    /// Where tracked-site events are stored: unset, the embedded SQLite file in --data-dir;
    /// postgres://user@host:port/database, a PostgreSQL database several renderers can share
    /// (needs a renderer built with the cluster feature), which then also keeps the recordings'
    /// batches (instead of --data-dir/recordings), so any renderer renders any recording.
    /// URL parameters such as connect_timeout (default 10 s) apply.
    #[arg(long, value_name = "URL")]
    pub store: Option<String>,

    /// Largest the event store (analytics.sqlite) may grow, in bytes; past it event requests are
    /// answered 503 until the retention frees space. Unset: only the disk limits it.
    #[arg(long)]
    pub max_store_bytes: Option<u64>,

    /// Heat counts held in memory before they are written to the store's heat tables, in events (0: with every commit). Held counts are added to every heatmap and rebuilt from the stored events after a crash (about 0.3 s per 250,000).
    #[arg(long, default_value_t = analytics::DEFAULT_HEAT_FLUSH_EVENTS)]
    pub store_heat_flush_events: u64,

    /// The store's page cache, in MiB, for each of its two connections (writer and reader). The hot pages are the newest hours' ends of the indexes, so a small cache holds them; more helps queries over long ranges.
    #[arg(long, default_value_t = analytics::DEFAULT_CACHE_MIB)]
    pub store_cache_mib: u32,

    /// Most stored events one scroll map, pixel-width heatmap or click list reads (the oldest of
    /// the range first); other heatmaps and totals read pre-counted hours and have no such bound.
    #[arg(long, default_value_t = 1_000_000)]
    pub max_raw_events: usize,

    /// Most events one page-heatmap event list (`format=points` or `clicks`) sends, the latest of the range: enough for a dense map in the browser, small enough to place in a moment. The answer still gives the totals behind it.
    #[arg(long, default_value_t = 5_000)]
    pub max_listed_points: usize,

    /// Most elements one frustration list (`GET /api/insights/clicks`) names, the worst first: a person reads it, and the answer stays small however many elements a page has. A request's `limit` may ask for fewer.
    #[arg(long, default_value_t = 50)]
    pub max_insight_elements: usize,

    /// Delete stored recordings not changed for this many hours, at start (0 keeps them until --max-recordings evicts them).
    #[arg(long, default_value_t = 24 * 30)]
    pub retention_hours: u64,

    /// Width of generated images, in pixels.
    #[arg(long, default_value_t = limits::DEFAULT_IMAGE_WIDTH, value_parser = clap::value_parser!(u32).range(16..=8192))]
    pub width: u32,

    /// Height of generated images, in pixels.
    #[arg(long, default_value_t = limits::DEFAULT_IMAGE_HEIGHT, value_parser = clap::value_parser!(u32).range(16..=8192))]
    pub height: u32,

    /// Most pixels (width times height) of an image a page enlarges with the `pixel_scale`
    /// option; a larger one is refused as out_of_range. The default allows 3840x2160 and
    /// twice that; a render needs about 8 bytes a pixel while it runs.
    #[arg(long, default_value_t = 2 * 3840 * 2160, value_parser = clap::value_parser!(u64).range(256..=8192 * 8192))]
    pub max_image_pixels: u64,

    /// Smoothing bandwidth: the Gaussian's standard deviation, in pixels of the output image.
    #[arg(long, default_value_t = 18.0, value_parser = parse_bandwidth)]
    pub bandwidth: f32,

    /// Default colour map: jet, hot, viridis, inferno or turbo (a page may choose another).
    #[arg(long, default_value_t = Colormap::Jet)]
    pub colormap: Colormap,

    /// Default intensity scale: linear, sqrt or log.
    #[arg(long, default_value_t = Scale::Sqrt)]
    pub scale: Scale,

    /// Default events shown: moves, clicks or both.
    #[arg(long, default_value_t = HeatKind::Both)]
    pub kind: HeatKind,

    /// Default output: image (white background), overlay (transparent PNG) or background (over --background).
    #[arg(long, default_value_t = OutputMode::Image)]
    pub output: OutputMode,

    /// A screenshot of the page (PNG) to draw the heat over in background mode; scaled to the image size.
    #[arg(long)]
    pub background: Option<PathBuf>,

    /// How much one click weighs against one move when both are shown.
    #[arg(long, default_value_t = 20.0)]
    pub click_weight: f32,

    /// Shared secret the relay must present (Authorization: Bearer); unset accepts any local peer.
    #[arg(long, env = "HEATMAP_TOKEN", hide_env_values = true)]
    pub token: Option<String>,

    /// PEM certificate chain to serve wss:// and https:// with (needs --tls-key), so the relay
    /// link and its token cross the network encrypted (the relay then uses --renderer wss://...).
    /// Re-read on SIGHUP without dropping the link. Unset: plain ws://.
    #[arg(long, value_name = "PEM", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,

    /// PEM private key of --tls-cert (PKCS#8, PKCS#1 or SEC1).
    #[arg(long, value_name = "PEM", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,

    /// Largest WebSocket message accepted from the relay, in bytes; larger ones close the link with 1009.
    #[arg(long, default_value_t = 1024 * 1024)]
    pub max_frame_bytes: usize,

    /// Most points in one batch.
    #[arg(long, default_value_t = limits::DEFAULT_MAX_POINTS_PER_BATCH)]
    pub max_points_per_batch: usize,

    /// Recordings kept (in memory and in --data-dir); beyond this the least recently updated one is deleted.
    #[arg(long, default_value_t = 1000)]
    pub max_recordings: usize,

    /// Most points one recording may hold; further batches are refused with recording_full.
    #[arg(long, default_value_t = 5_000_000)]
    pub max_points_per_recording: u64,

    /// Most points held over all recordings (4 bytes each); further batches are refused with recording_full.
    #[arg(long, default_value_t = 50_000_000)]
    pub max_total_points: u64,

    /// Recent tracked-site events kept in memory for the live numbers (active users, the last
    /// minute and 5 minutes); oldest dropped first. History is in the store, not bounded by this.
    #[arg(long, default_value_t = 500_000)]
    pub max_events: usize,

    /// Event requests (from the relay or POST /api/events) waiting for the store's writer; past it a request is refused as busy, to be sent again.
    #[arg(long, default_value_t = 1024)]
    pub max_queued_event_requests: usize,

    /// Most events the store's writer commits in one transaction (waiting requests are committed together, never split).
    #[arg(long, default_value_t = 20_000)]
    pub max_commit_events: usize,

    /// With --store postgres://…: recording writes (batches, starts, stops) waiting for the
    /// database's writer; past it a batch is answered busy and the page sends it again.
    #[arg(long, default_value_t = 4096, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub max_queued_batches: u64,

    /// With --store postgres://…: most recording writes committed in one transaction (the
    /// writes waiting are committed together, so a commit's cost is shared under load).
    #[arg(long, default_value_t = 512, value_parser = clap::value_parser!(u64).range(1..=100_000))]
    pub max_commit_batches: u64,

    /// A tracked visitor's session ends after this many seconds without events.
    #[arg(long, default_value_t = 300)]
    pub session_timeout_secs: u64,

    /// Most connections busy at once: relay links and requests being answered. One more
    /// request is answered 503; /healthz and /metrics are answered even then.
    #[arg(long, default_value_t = 64)]
    pub max_connections: usize,

    /// Most connections waiting for a request at once (sending headers, or idle between
    /// requests); over it the oldest waiting one is closed, so strangers cannot keep the relay out.
    #[arg(long, default_value_t = 64)]
    pub max_pending_connections: usize,

    /// How long a client may take to send a request's headers, in milliseconds (from the
    /// connection's start or its previous answer); slower ones are closed.
    #[arg(long, default_value_t = 3000, value_parser = clap::value_parser!(u64).range(1..))]
    pub header_timeout_ms: u64,

    /// Renders running at once; further Generate requests wait their turn.
    #[arg(long, default_value_t = 2)]
    pub max_concurrent_renders: usize,

    /// On shutdown, how long renders in flight may take to finish and be answered before the
    /// link closes, in milliseconds; unfinished ones are answered renderer_unavailable.
    /// Keep it under the 5 s shutdown grace.
    #[arg(long, default_value_t = 4000)]
    pub drain_ms: u64,

    /// Answered Generate requests remembered by (recording, request), so a resent one gets
    /// the image already written instead of a second one (0: remember none).
    #[arg(long, default_value_t = 1024)]
    pub remembered_generates: usize,

    /// Cluster mode: the NATS server with JetStream the relays publish tracked events and
    /// recordings' batches to, as nats://HOST:PORT (needs a renderer built with the cluster
    /// feature, and --store postgres://…). Every renderer given it consumes the stream as one
    /// group, commits each batch to the store and only then acknowledges it, so a renderer that
    /// dies mid-batch loses and duplicates nothing; Generate comes as a request to the group.
    #[arg(long, value_name = "URL")]
    pub bus: Option<String>,

    /// The JetStream stream the events come from (subject <STREAM>.events), created or updated
    /// at start by whichever relay or renderer starts first; give every relay and renderer the
    /// same stream settings.
    #[arg(long, default_value = "heatmap", value_parser = protocol::names::parse_bus_name)]
    pub bus_stream: String,

    /// Most bytes of events the stream holds waiting for a renderer; when full, the relays
    /// answer further events 503 (the stream never drops events it accepted to make room).
    #[arg(long, default_value_t = 1 << 30, value_parser = clap::value_parser!(i64).range(1024..))]
    pub bus_max_bytes: i64,

    /// Longest an event waits in the stream for a renderer, in seconds; older ones are deleted
    /// unstored, so keep it above the longest renderer outage you plan for.
    #[arg(long, default_value_t = 7 * 86_400, value_parser = clap::value_parser!(u64).range(60..))]
    pub bus_max_age_secs: u64,

    /// How long JetStream remembers a batch's message id, in seconds (a resend within it is
    /// stored once in the stream).
    #[arg(long, default_value_t = 120, value_parser = clap::value_parser!(u64).range(1..))]
    pub bus_duplicate_window_secs: u64,

    /// Copies of the stream in a JetStream cluster (1 for a single server; 3 survives the loss
    /// of one of three servers).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u8).range(1..=5))]
    pub bus_replicas: u8,

    /// The events' durable consumer and the Generate queue group, the same in every renderer so
    /// that they share the work (each batch and each Generate goes to one of them).
    #[arg(long, default_value = "renderers", value_parser = protocol::names::parse_bus_name)]
    pub bus_consumer: String,

    /// Batches delivered to the renderers and not yet acknowledged, over all of them; JetStream
    /// delivers no more until some are, which bounds the work in flight.
    #[arg(long, default_value_t = 1024, value_parser = clap::value_parser!(i64).range(1..=1_000_000))]
    pub bus_max_ack_pending: i64,

    /// Batches one renderer takes from the stream at a time and commits together.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u64).range(1..=10_000))]
    pub bus_batch: u64,

    /// How long a delivered batch may stay unacknowledged before JetStream delivers it again
    /// (to any renderer), in seconds: the delay before a killed renderer's batches are taken over.
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub bus_ack_wait_secs: u64,

    /// With --bus: commits whose live facts wait to be told to the other renderers (so
    /// every renderer's live view counts every event); past it a commit's facts are
    /// dropped and counted (renderer_live_dropped_total), never delaying the store.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u64).range(1..=100_000))]
    pub live_queue: u64,

    /// With --bus: largest live message accepted from another renderer, in bytes; larger
    /// ones are dropped and counted, and this renderer splits what it sends below it.
    #[arg(long, default_value_t = 1024 * 1024, value_parser = clap::value_parser!(u64).range(16 * 1024..=64 * 1024 * 1024))]
    pub live_max_message_bytes: u64,

    /// The durable consumer of recordings' batches (subjects <STREAM>.batches.>), the same in
    /// every renderer so that they share the work; a different name from --bus-consumer.
    #[arg(long, default_value = "renderer-batches", value_parser = protocol::names::parse_bus_name)]
    pub bus_batches_consumer: String,

    /// With --bus: how long a Generate waits for the recording's batches still in the stream
    /// to be committed before it renders, in milliseconds; past it the page hears busy and
    /// asks again (keep it under the relays' --generate-timeout-ms).
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..=600_000))]
    pub generate_drain_ms: u64,

    /// With --bus: Generate requests from the bus this renderer works on at once (waiting for
    /// their batches or rendering); one more is answered busy, so another renderer or a later
    /// try takes it.
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u64).range(1..=10_000))]
    pub max_bus_generates: u64,
}

fn parse_bandwidth(text: &str) -> Result<f32, String> {
    let value: f32 = text.parse().map_err(|err| format!("{err}"))?;
    let range = protocol::options::BANDWIDTH_RANGE;
    if range.contains(&value) {
        Ok(value)
    } else {
        Err(format!(
            "must be within {}..={} pixels",
            range.start(),
            range.end()
        ))
    }
}

impl Default for Config {
    fn default() -> Self {
        // Parsing no arguments cannot fail: every flag has a default or is optional.
        Config::parse_from(["renderer"])
    }
}
