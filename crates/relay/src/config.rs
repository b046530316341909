//! The relay's settings: command-line flags, with their defaults in one place.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Parser;
use netkit::IpNet;
use protocol::limits;

/// Every knob of the relay. `Config::default()` is what the binary runs with when given no
/// flags, so tests and the binary share the same defaults.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "relay",
    version,
    about = "Serves the recorder page and relays its traffic to the renderer."
)]
pub struct Config {
    /// Address to serve the page, /ws, /healthz and /heatmaps on (port 0 picks a free port).
    /// Loopback by default; use 0.0.0.0:3000 to let other machines in.
    #[arg(long, default_value_t = SocketAddr::from(([127, 0, 0, 1], limits::DEFAULT_RELAY_PORT)))]
    pub listen: SocketAddr,

    /// A URL browsers use to reach this relay, e.g. https://heatmaps.example (repeatable).
    /// Requests naming another Host get 421 and pages from another Origin 403 (DNS rebinding);
    /// http:// on localhost, 127.0.0.1, [::1] and the listen address are always accepted.
    #[arg(long = "public-url")]
    pub public_urls: Vec<String>,

    /// A reverse proxy in front of the relay, as an address or CIDR block, e.g. 127.0.0.1 or
    /// 10.0.0.0/8 (repeatable). Only from these peers are Forwarded, X-Forwarded-For,
    /// X-Forwarded-Proto and X-Forwarded-Host believed: the client is the rightmost forwarded
    /// address that is not itself a trusted proxy, and every per-address limit and log line uses
    /// it. From anyone else those headers are ignored. None by default.
    #[arg(long = "trusted-proxy", value_name = "CIDR")]
    pub trusted_proxies: Vec<IpNet>,

    /// The renderer's WebSocket URL: ws://host:port, or wss://host:port for a renderer
    /// started with --tls-cert (the link, images and API requests then all go over TLS).
    #[arg(long, default_value_t = format!("ws://127.0.0.1:{}", limits::DEFAULT_RENDERER_PORT))]
    pub renderer: String,

    /// PEM file of the CA certificates that sign the renderer's certificate, for a wss://
    /// --renderer (a private CA). Unset: the system's bundle, /etc/ssl/certs/ca-certificates.crt.
    #[arg(long, value_name = "PEM")]
    pub renderer_ca: Option<PathBuf>,

    /// PEM certificate chain to serve https:// and wss:// with (needs --tls-key). Re-read on
    /// SIGHUP without dropping connections. Unset: plain HTTP, e.g. behind a TLS proxy.
    #[arg(long, value_name = "PEM", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,

    /// PEM private key of --tls-cert (PKCS#8, PKCS#1 or SEC1).
    #[arg(long, value_name = "PEM", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,

    /// Shared secret sent to the renderer (Authorization: Bearer); must match the renderer's --token.
    #[arg(long, env = "HEATMAP_TOKEN", hide_env_values = true)]
    pub token: Option<String>,

    /// Extra origins allowed to open /ws (the page's own origin always is), e.g. http://localhost:8080. Repeatable.
    #[arg(long = "allow-origin")]
    pub allow_origins: Vec<String>,

    /// Largest WebSocket message accepted from a page, in bytes; larger ones close it with 1009.
    #[arg(long, default_value_t = limits::DEFAULT_MAX_FRAME_BYTES)]
    pub max_frame_bytes: usize,

    /// Most points in one batch from a page.
    #[arg(long, default_value_t = limits::DEFAULT_MAX_POINTS_PER_BATCH)]
    pub max_points_per_batch: usize,

    /// Most connections busy at once: pages' WebSockets and requests being answered. One more
    /// request is answered 503; /healthz and /metrics are answered even then.
    #[arg(long, default_value_t = 1024)]
    pub max_connections: usize,

    /// Most connections waiting for a request at once (sending headers, or idle between
    /// requests); over it the oldest waiting one is closed, so slow strangers cannot keep pages out.
    #[arg(long, default_value_t = 1024)]
    pub max_pending_connections: usize,

    /// Most connections from one IP address, busy and waiting each: one more busy one is
    /// answered 503, one more waiting one closes that address's oldest waiting one.
    #[arg(long, default_value_t = 64)]
    pub max_connections_per_ip: usize,

    /// How long a client may take to send a request's headers, in milliseconds (from the
    /// connection's start or its previous answer); slower ones are closed.
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub header_timeout_ms: u64,

    /// Event-API requests per second one address may make on average (0 = unlimited); excess gets 429.
    #[arg(long, default_value_t = 50)]
    pub max_api_requests_per_sec: u32,

    /// Event-API requests one address may make in a burst above the average.
    #[arg(long, default_value_t = 200)]
    pub api_burst: u32,

    /// Origins of tracked sites allowed to call the event API (/api/...), e.g. https://shop.example. Repeatable.
    #[arg(long = "site")]
    pub sites: Vec<String>,

    /// Largest request body accepted, in bytes (event batches to /api/events); larger ones get 413.
    #[arg(long, default_value_t = 256 * 1024)]
    pub max_body_bytes: u64,

    /// Request headers a proxy or CDN sets to the visitor's country (a two-letter code or a name), read in order for events that carry no country of their own (repeatable). Set it to the header your proxy writes; unknown values such as Cloudflare's XX and T1 are ignored.
    #[arg(long = "country-header", value_name = "NAME", default_values_t = [String::from("CF-IPCountry"), String::from("X-Country")])]
    pub country_headers: Vec<String>,

    /// Close a page's WebSocket after this many seconds without a frame from it (the relay pings at a quarter of it).
    #[arg(long, default_value_t = 120)]
    pub idle_timeout_secs: u64,

    /// Messages per second one page may send on average (0 = unlimited); excess gets rate_limited.
    #[arg(long, default_value_t = 100)]
    pub max_messages_per_sec: u32,

    /// Messages one page may send in a burst above the average (a reconnect resends its backlog).
    #[arg(long, default_value_t = 500)]
    pub message_burst: u32,

    /// Frames queued for one page before further replies to it are dropped and counted.
    #[arg(long, default_value_t = 256)]
    pub session_queue: usize,

    /// Dashboards' request_detailed_stats answered at once, relay-wide (each is one summary read
    /// from the renderer over HTTP); past it, and past one per dashboard, the request gets busy.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_stats_requests: u32,

    /// Stored events listed to dashboards per second in session_activity (sent in up to four
    /// messages a second); more are left out and counted as dropped. 0 turns the feed off.
    #[arg(long, default_value_t = 200)]
    pub max_activity_per_sec: usize,

    /// Names listed in the members list a page gets when it joins (the most recent members;
    /// the count covers everyone), and the room size up to which joins and leaves are
    /// announced to every page one by one (above it only the counts, in presence).
    #[arg(long, default_value_t = 20)]
    pub members_shown: usize,

    /// Traffic counts as spiking, and every dashboard gets an `alert`, when the last 10 s
    /// run above this many times the average of the minutes before them.
    #[arg(long, default_value_t = 3.0, value_parser = spike_factor)]
    pub spike_factor: f64,

    /// Page messages queued for the renderer; when full, pages wait (back-pressure over TCP).
    #[arg(long, default_value_t = 4096)]
    pub upstream_queue: usize,

    /// Event-API requests queued for the renderer link; past it a request gets 503 with Retry-After.
    #[arg(long, default_value_t = 1024)]
    pub events_queue: usize,

    /// How long an event-API request waits for the renderer to confirm its events are stored before it gets 503 (ms).
    #[arg(long, default_value_t = 10_000)]
    pub events_timeout_ms: u64,

    /// Bytes of page messages held while the renderer is away, replayed when it is back (0: refuse instead).
    #[arg(long, default_value_t = 64 * 1024 * 1024)]
    pub buffer_bytes: usize,

    /// First wait before reconnecting to the renderer, in milliseconds (doubles per failure).
    #[arg(long, default_value_t = 100)]
    pub backoff_initial_ms: u64,

    /// Longest wait between reconnection attempts, in milliseconds.
    #[arg(long, default_value_t = 5000)]
    pub backoff_max_ms: u64,

    /// How long one connection attempt to the renderer may take, in milliseconds.
    #[arg(long, default_value_t = 3000)]
    pub connect_timeout_ms: u64,

    /// Cluster mode: the NATS server with JetStream that carries tracked events, pages'
    /// recordings and Generate to the renderers, as nats://HOST:PORT (needs a relay built with
    /// the cluster feature). POST /api/events is then answered 202, and a page's batch
    /// acknowledged, once JetStream has stored it, whether or not a renderer is up; 503 with
    /// Retry-After (a batch: busy) while JetStream cannot store it.
    #[arg(long, value_name = "URL")]
    pub bus: Option<String>,

    /// The JetStream stream the events go to (subject <STREAM>.events), created or updated
    /// at start by whichever relay or renderer starts first; give every relay and renderer
    /// the same stream settings.
    #[arg(long, default_value = DEFAULT_BUS_STREAM, value_parser = protocol::names::parse_bus_name)]
    pub bus_stream: String,

    /// Most bytes of events the stream holds waiting for a renderer; when full, further
    /// events are answered 503 (the stream never drops events it accepted to make room).
    #[arg(long, default_value_t = DEFAULT_BUS_MAX_BYTES, value_parser = clap::value_parser!(i64).range(1024..))]
    pub bus_max_bytes: i64,

    /// Longest an event waits in the stream for a renderer, in seconds; older ones are
    /// deleted unstored, so keep it above the longest renderer outage you plan for.
    #[arg(long, default_value_t = DEFAULT_BUS_MAX_AGE_SECS, value_parser = clap::value_parser!(u64).range(60..))]
    pub bus_max_age_secs: u64,

    /// How long JetStream remembers a batch's message id, in seconds: a sender's resend of the
    /// same batch within it is stored once in the stream (the store's de-duplication covers
    /// later ones).
    #[arg(long, default_value_t = DEFAULT_BUS_DUPLICATE_WINDOW_SECS, value_parser = clap::value_parser!(u64).range(1..))]
    pub bus_duplicate_window_secs: u64,

    /// Copies of the stream in a JetStream cluster (1 for a single server; 3 survives the
    /// loss of one of three servers).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u8).range(1..=5))]
    pub bus_replicas: u8,

    /// With --bus: most other relays whose pages (presence, members, cursors) this relay
    /// shows; live messages from more are dropped and counted (relay_live_dropped_total).
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..))]
    pub live_max_relays: u32,

    /// With --bus: most members of other relays kept for this relay's members lists (the
    /// counts cover everyone).
    #[arg(long, default_value_t = 200)]
    pub live_max_members: usize,

    /// With --bus: most cursors of other relays' pages kept; past 50 cursors in all, live
    /// cursors switch off anyway.
    #[arg(long, default_value_t = 50)]
    pub live_max_cursors: usize,

    /// With --bus: another relay's pages vanish from this relay's counts, members and
    /// cursors this long after its last message, in milliseconds (relays send one at
    /// least every second).
    #[arg(long, default_value_t = 3000, value_parser = clap::value_parser!(u64).range(1500..))]
    pub live_expiry_ms: u64,

    /// With --bus: largest live message accepted from another relay, in bytes; larger ones
    /// are dropped and counted, and this relay sends none larger.
    #[arg(long, default_value_t = 256 * 1024, value_parser = clap::value_parser!(u64).range(1024..=1024 * 1024))]
    pub live_max_message_bytes: u64,

    /// With --bus: how long a page's Generate waits for a renderer's answer, in milliseconds,
    /// including the renderer's wait for the recording's batches still in the stream; past
    /// it (or with no renderer listening) the page hears renderer_unavailable and asks again.
    #[arg(long, default_value_t = 30_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub generate_timeout_ms: u64,
}

/// The stream every relay and renderer uses unless told otherwise.
pub const DEFAULT_BUS_STREAM: &str = "heatmap";

/// 1 GiB: at about 300 bytes an event, some three million events, hours of a busy site's
/// traffic while every renderer is down.
pub const DEFAULT_BUS_MAX_BYTES: i64 = 1 << 30;

/// A week: longer than any planned renderer outage, short enough to bound the disk.
pub const DEFAULT_BUS_MAX_AGE_SECS: u64 = 7 * 86_400;

/// JetStream's own default, two minutes: far longer than the snippet's quick resends.
pub const DEFAULT_BUS_DUPLICATE_WINDOW_SECS: u64 = 120;

impl Config {
    /// The certificate from `--tls-cert`/`--tls-key`, or `None` to serve plain HTTP.
    ///
    /// # Errors
    /// A file that cannot be read or a key that does not match the certificate.
    pub fn tls_server(&self) -> anyhow::Result<Option<netkit::tls::TlsServer>> {
        match (&self.tls_cert, &self.tls_key) {
            (Some(cert), Some(key)) => Ok(Some(netkit::tls::TlsServer::load(cert, key)?)),
            (None, None) => Ok(None),
            _ => anyhow::bail!("--tls-cert and --tls-key go together"),
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        // Parsing no arguments cannot fail: every flag has a default or is optional.
        Config::parse_from(["relay"])
    }
}

/// A `--spike-factor`: a number from 1.5 to 50, as the dashboard's own banner allows.
fn spike_factor(text: &str) -> Result<f64, String> {
    let factor: f64 = text
        .parse()
        .map_err(|_| format!("{text:?} is not a number"))?;
    if (1.5..=50.0).contains(&factor) {
        Ok(factor)
    } else {
        Err(format!("{factor} is outside 1.5 to 50"))
    }
}
