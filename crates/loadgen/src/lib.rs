//! A load generator that speaks the page's protocol to a relay.
//!
//! Each simulated visitor opens its own WebSocket, starts a recording, and sends batches of
//! pointer moves along human-like paths (smooth drifts, pauses, the odd click) at a set
//! rate, keeping a bounded number of batches in flight. Every acknowledgement is timed.
//! At the end it waits for the outstanding acknowledgements and reports throughput,
//! latency percentiles and loss, cross-checked against the renderer's own counters when
//! `--renderer-metrics` is given.

use std::collections::HashMap;
use std::fmt;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use clap::Parser;
use futures_util::{SinkExt, StreamExt};
use protocol::analytics::{EventMetadata, EventType, TrackedEvent};
use protocol::{
    encode, PageMessage, Point, PointKind, PointsBatch, RecordingId, ServerMessage, Viewport,
    PROTOCOL_VERSION,
};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;

/// What to play.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "loadgen",
    version,
    about = "Plays simulated visitors against a relay and reports throughput, latency and loss."
)]
pub struct Config {
    /// The relay's page WebSocket.
    #[arg(long, default_value = "ws://127.0.0.1:3000/ws")]
    pub relay: String,

    /// Simulated visitors, each on its own WebSocket.
    #[arg(long, default_value_t = 10)]
    pub visitors: usize,

    /// Points per batch.
    #[arg(long, default_value_t = 100)]
    pub batch: usize,

    /// Points per second per visitor (0: as fast as acknowledgements allow).
    #[arg(long, default_value_t = 60)]
    pub rate: u32,

    /// Batches one visitor may have unacknowledged at once.
    #[arg(long, default_value_t = 32)]
    pub window: usize,

    /// How long to send, in seconds.
    #[arg(long, default_value_t = 10.0)]
    pub duration_secs: f64,

    /// Stop after this many points per visitor (0: no limit; the duration still applies).
    #[arg(long, default_value_t = 0)]
    pub points_per_visitor: u64,

    /// The renderer's /metrics URL (http://HOST:PORT/metrics), to cross-check stored points.
    #[arg(long)]
    pub renderer_metrics: Option<String>,

    /// Open this many extra connections that only say hello and stay idle for the duration.
    #[arg(long, default_value_t = 0)]
    pub idle: usize,

    /// Send tracked-site events to POST /api/events (HTTP, one request per batch) instead of
    /// the page WebSocket; the relay's --max-api-requests-per-sec applies.
    #[arg(long)]
    pub api: bool,
}

impl Default for Config {
    fn default() -> Self {
        Config::parse_from(["loadgen"])
    }
}

/// What happened.
#[derive(Debug, Default, Clone)]
pub struct Report {
    /// Visitors that connected.
    pub visitors: usize,
    /// Idle connections held.
    pub idle: usize,
    /// Points sent.
    pub points_sent: u64,
    /// Batches sent.
    pub batches_sent: u64,
    /// Points acknowledged (counting each batch once).
    pub points_acked: u64,
    /// Batches acknowledged.
    pub batches_acked: u64,
    /// Errors the relay answered with, by code.
    pub errors: HashMap<String, u64>,
    /// Sending time.
    pub elapsed: Duration,
    /// Acknowledgement latencies, sorted.
    pub latencies: Vec<Duration>,
    /// Points the renderer stored during the run, from its metrics.
    pub renderer_points: Option<u64>,
}

impl Report {
    /// Points sent but never acknowledged.
    pub fn lost(&self) -> u64 {
        self.points_sent.saturating_sub(self.points_acked)
    }

    /// A latency percentile (0–100).
    pub fn percentile(&self, percent: f64) -> Duration {
        if self.latencies.is_empty() {
            return Duration::ZERO;
        }
        let idx = ((percent / 100.0) * (self.latencies.len() - 1) as f64).round() as usize;
        self.latencies[idx.min(self.latencies.len() - 1)]
    }

    /// Acknowledged points per second.
    pub fn throughput(&self) -> f64 {
        self.points_acked as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        writeln!(f, "visitors            {}", self.visitors)?;
        if self.idle > 0 {
            writeln!(f, "idle connections    {}", self.idle)?;
        }
        writeln!(f, "points sent         {}", self.points_sent)?;
        writeln!(f, "batches sent        {}", self.batches_sent)?;
        writeln!(f, "points acked        {}", self.points_acked)?;
        writeln!(f, "batches acked       {}", self.batches_acked)?;
        writeln!(f, "elapsed             {:.2} s", self.elapsed.as_secs_f64())?;
        writeln!(f, "throughput          {:.0} points/s", self.throughput())?;
        writeln!(
            f,
            "ack latency ms      p50 {:.2}  p95 {:.2}  p99 {:.2}  max {:.2}",
            ms(self.percentile(50.0)),
            ms(self.percentile(95.0)),
            ms(self.percentile(99.0)),
            ms(self.percentile(100.0))
        )?;
        writeln!(f, "lost                {} points", self.lost())?;
        if !self.errors.is_empty() {
            writeln!(f, "errors              {:?}", self.errors)?;
        }
        match self.renderer_points {
            Some(stored) => write!(
                f,
                "renderer stored     {stored} points ({})",
                if stored == self.points_acked {
                    "matches"
                } else {
                    "MISMATCH"
                }
            ),
            None => write!(
                f,
                "renderer stored     (pass --renderer-metrics to cross-check)"
            ),
        }
    }
}

/// Runs the visitors and returns the report; `progress` prints a line a second to stderr.
///
/// # Errors
/// When no visitor can connect, or the renderer's metrics cannot be read.
pub async fn run(config: &Config, progress: bool) -> anyhow::Result<Report> {
    let before = match &config.renderer_metrics {
        Some(url) => Some(stored_points(url, config.api).await?),
        None => None,
    };
    let mut idle_sockets = Vec::with_capacity(config.idle);
    for _ in 0..config.idle {
        let (mut socket, _) = tokio_tungstenite::connect_async(config.relay.as_str())
            .await
            .with_context(|| format!("open an idle connection to {}", config.relay))?;
        socket.send(Message::text(hello())).await?;
        idle_sockets.push(socket);
    }

    let (events_tx, mut events) = mpsc::channel::<Event>(4096);
    let started = Instant::now();
    let mut visitors = Vec::with_capacity(config.visitors);
    for visitor in 0..config.visitors {
        let config = config.clone();
        let events_tx = events_tx.clone();
        visitors.push(tokio::spawn(async move {
            if config.api {
                visit_api(visitor, &config, events_tx).await
            } else {
                visit(visitor, &config, events_tx).await
            }
        }));
    }
    drop(events_tx);

    let mut report = Report {
        idle: idle_sockets.len(),
        ..Report::default()
    };
    let mut last_progress = Instant::now();
    while let Some(event) = events.recv().await {
        match event {
            Event::Connected => report.visitors += 1,
            Event::Sent { points } => {
                report.points_sent += points;
                report.batches_sent += 1;
            }
            Event::Acked { points, latency } => {
                report.points_acked += points;
                report.batches_acked += 1;
                report.latencies.push(latency);
            }
            Event::Error { code } => *report.errors.entry(code).or_default() += 1,
            Event::DoneSending => report.elapsed = report.elapsed.max(started.elapsed()),
        }
        if progress && last_progress.elapsed() >= Duration::from_secs(1) {
            last_progress = Instant::now();
            eprintln!(
                "[{:5.1} s] {} visitors, {} points sent, {} acked, {:.0} points/s",
                started.elapsed().as_secs_f64(),
                report.visitors,
                report.points_sent,
                report.points_acked,
                report.points_acked as f64 / started.elapsed().as_secs_f64()
            );
        }
    }
    let mut failures = Vec::new();
    for visitor in visitors {
        match visitor.await {
            Ok(Ok(())) => {}
            Ok(Err(err)) => failures.push(format!("{err:#}")),
            Err(err) => failures.push(err.to_string()),
        }
    }
    if report.visitors == 0 && config.visitors > 0 {
        bail!("no visitor could connect: {}", failures.join("; "));
    }
    if progress && !failures.is_empty() {
        eprintln!("{} visitors failed: {}", failures.len(), failures[0]);
    }
    report.latencies.sort();
    if let (Some(url), Some(before)) = (&config.renderer_metrics, before) {
        report.renderer_points = Some(stored_points(url, config.api).await?.saturating_sub(before));
    }
    drop(idle_sockets);
    Ok(report)
}

enum Event {
    Connected,
    Sent { points: u64 },
    Acked { points: u64, latency: Duration },
    Error { code: String },
    DoneSending,
}

/// How long a visitor waits for its last acknowledgements after it stops sending.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(15);

/// One visitor: send batches at the rate within the window, then wait for every ack.
async fn visit(visitor: usize, config: &Config, events: mpsc::Sender<Event>) -> anyhow::Result<()> {
    let (socket, _) = tokio_tungstenite::connect_async(config.relay.as_str())
        .await
        .with_context(|| format!("connect to {}", config.relay))?;
    let (mut sink, mut stream) = socket.split();
    let recording = RecordingId::try_from(format!("load-{}-{visitor}", std::process::id()))
        .map_err(|err| anyhow::anyhow!("recording id: {err}"))?;
    sink.send(Message::text(hello())).await?;
    let viewport = Viewport {
        width: 1920,
        height: 1080,
    };
    sink.send(Message::text(encode(&PageMessage::Start {
        recording: recording.clone(),
        viewport,
    })))
    .await?;
    let _ = events.send(Event::Connected).await;

    let mut path = Path::new(visitor as u64);
    let mut in_flight: HashMap<u64, (Instant, u64, String)> = HashMap::new();
    let mut seq = 0u64;
    let mut sent_points = 0u64;
    let batch_interval = if config.rate == 0 {
        Duration::ZERO
    } else {
        Duration::from_secs_f64(config.batch as f64 / f64::from(config.rate))
    };
    let deadline = Instant::now() + Duration::from_secs_f64(config.duration_secs);
    let mut next_send = tokio::time::Instant::now();
    let mut sending = true;
    loop {
        let limit_reached =
            config.points_per_visitor > 0 && sent_points >= config.points_per_visitor;
        if sending && (Instant::now() >= deadline || limit_reached) {
            sending = false;
            let _ = events.send(Event::DoneSending).await;
        }
        if !sending && in_flight.is_empty() {
            break;
        }
        let can_send = sending && in_flight.len() < config.window.max(1);
        tokio::select! {
            _ = tokio::time::sleep_until(next_send), if can_send => {
                let points: Vec<Point> = (0..config.batch).map(|_| path.next_point()).collect();
                let frame = encode(&PageMessage::Points(PointsBatch {
                    recording: recording.clone(),
                    seq,
                    viewport,
                    points,
                }));
                sink.send(Message::text(frame.clone())).await?;
                in_flight.insert(seq, (Instant::now(), config.batch as u64, frame));
                let _ = events.send(Event::Sent { points: config.batch as u64 }).await;
                sent_points += config.batch as u64;
                seq += 1;
                next_send += batch_interval;
                // A sender that fell behind does not try to catch up in a burst.
                let now = tokio::time::Instant::now();
                if next_send < now {
                    next_send = now;
                }
            }
            frame = tokio::time::timeout(DRAIN_TIMEOUT, stream.next()) => {
                let frame = match frame {
                    Err(_) if !sending => break,
                    Err(_) => continue,
                    Ok(None) => bail!("the relay closed the connection"),
                    Ok(Some(frame)) => frame?,
                };
                let Message::Text(text) = frame else { continue };
                // Messages loadgen has no use for (presence, cursors) may be of any type.
                let Ok(msg) = serde_json::from_str::<ServerMessage>(text.as_str()) else { continue };
                match msg {
                    ServerMessage::Ack { seq, .. } => {
                        if let Some((sent_at, points, _)) = in_flight.remove(&seq) {
                            let _ = events.send(Event::Acked { points, latency: sent_at.elapsed() }).await;
                        }
                    }
                    ServerMessage::Error { code, seq, .. } => {
                        let code = code.as_str().to_owned();
                        // A batch refused for a passing reason is resent as it was, as the
                        // page does; one refused for good is given up (and shows as lost).
                        let passing = ["busy", "rate_limited", "renderer_unavailable", "storage_failed"];
                        if let Some(seq) = seq {
                            if passing.contains(&code.as_str()) {
                                if let Some((_, _, frame)) = in_flight.get(&seq) {
                                    sink.send(Message::text(frame.clone())).await?;
                                }
                            } else {
                                in_flight.remove(&seq);
                            }
                        }
                        let _ = events.send(Event::Error { code }).await;
                    }
                    _ => {}
                }
            }
        }
    }
    let _ = sink
        .send(Message::text(encode(&PageMessage::Stop { recording })))
        .await;
    let _ = sink.close().await;
    Ok(())
}

/// A pointer drifting smoothly across a 1920x1080 viewport, pausing now and then.
struct Path {
    state: u64,
    x: f64,
    y: f64,
    vx: f64,
    vy: f64,
    t: u32,
}

impl Path {
    fn new(seed: u64) -> Self {
        Path {
            state: seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1,
            x: 960.0,
            y: 540.0,
            vx: 0.0,
            vy: 0.0,
            t: 0,
        }
    }

    fn random(&mut self) -> f64 {
        self.state ^= self.state << 13;
        self.state ^= self.state >> 7;
        self.state ^= self.state << 17;
        (self.state % 10_000) as f64 / 10_000.0
    }

    fn next_point(&mut self) -> Point {
        self.vx = 0.9 * self.vx + (self.random() - 0.5) * 6.0;
        self.vy = 0.9 * self.vy + (self.random() - 0.5) * 6.0;
        if self.random() < 0.02 {
            self.vx = 0.0;
            self.vy = 0.0;
        }
        self.x = (self.x + self.vx).clamp(0.0, 1920.0);
        self.y = (self.y + self.vy).clamp(0.0, 1080.0);
        self.t += 16;
        let kind = if self.random() < 0.01 {
            PointKind::Click
        } else {
            PointKind::Move
        };
        Point {
            x: ((self.x * 10.0).round() / 10.0) as f32,
            y: ((self.y * 10.0).round() / 10.0) as f32,
            t: self.t,
            kind,
        }
    }
}

/// The page's first message.
fn hello() -> String {
    encode(&PageMessage::Hello {
        v: PROTOCOL_VERSION,
    })
}

/// `renderer_points_stored_total` from the renderer's metrics.
/// One visitor on the event API: a keep-alive HTTP connection, one POST per batch.
async fn visit_api(
    visitor: usize,
    config: &Config,
    events: mpsc::Sender<Event>,
) -> anyhow::Result<()> {
    let uri: hyper::Uri = config
        .relay
        .parse()
        .with_context(|| format!("relay url {}", config.relay))?;
    let authority = uri
        .authority()
        .map(|a| a.to_string())
        .context("relay url needs host:port")?;
    let stream = tokio::net::TcpStream::connect(&authority)
        .await
        .with_context(|| format!("connect to {authority}"))?;
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await?;
    tokio::spawn(connection);
    let _ = events.send(Event::Connected).await;
    let session = format!("load-{}-{visitor}", std::process::id());
    let mut path = Path::new(visitor as u64);
    let started_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|since| since.as_millis() as i64)
        .unwrap_or(0);
    let mut next_seq = 0u64;
    let interval = if config.rate == 0 {
        Duration::ZERO
    } else {
        Duration::from_secs_f64(config.batch as f64 / f64::from(config.rate))
    };
    let deadline = Instant::now() + Duration::from_secs_f64(config.duration_secs);
    let mut next_send = tokio::time::Instant::now();
    let mut sent_points = 0u64;
    while Instant::now() < deadline
        && (config.points_per_visitor == 0 || sent_points < config.points_per_visitor)
    {
        tokio::time::sleep_until(next_send).await;
        let batch: Vec<TrackedEvent> = (0..config.batch)
            .map(|_| {
                let point = path.next_point();
                let event = TrackedEvent {
                    kind: if point.kind == PointKind::Click {
                        EventType::Click
                    } else {
                        EventType::Move
                    },
                    page: "/load".into(),
                    session_id: session.clone(),
                    // Numbered and dated like the snippet's events, so the store's
                    // de-duplication runs as it does for real visitors.
                    timestamp: Some(started_ms + i64::from(point.t)),
                    seq: Some(next_seq),
                    country: None,
                    metadata: EventMetadata {
                        x: Some(f64::from(point.x)),
                        y: Some(f64::from(point.y)),
                        vw: Some(1920.0),
                        vh: Some(1080.0),
                        dw: Some(1920.0),
                        dh: Some(1080.0),
                        ..EventMetadata::default()
                    },
                };
                next_seq += 1;
                event
            })
            .collect();
        let body = encode(&batch);
        let started = Instant::now();
        let request = hyper::Request::post("/api/events")
            .header(hyper::header::HOST, authority.as_str())
            .body(http_body_util::Full::new(bytes::Bytes::from(body)))?;
        let response = sender.send_request(request).await.context("post events")?;
        let status = response.status();
        let _ = http_body_util::BodyExt::collect(response.into_body()).await?;
        let _ = events
            .send(Event::Sent {
                points: config.batch as u64,
            })
            .await;
        sent_points += config.batch as u64;
        if status == hyper::StatusCode::ACCEPTED {
            let latency = started.elapsed();
            let _ = events
                .send(Event::Acked {
                    points: config.batch as u64,
                    latency,
                })
                .await;
        } else {
            let _ = events
                .send(Event::Error {
                    code: status.as_u16().to_string(),
                })
                .await;
        }
        next_send += interval;
        let now = tokio::time::Instant::now();
        if next_send < now {
            next_send = now;
        }
    }
    let _ = events.send(Event::DoneSending).await;
    Ok(())
}

/// The renderer's count of what this run should have added: stored points, or accepted
/// events in `--api` mode.
async fn stored_points(url: &str, api: bool) -> anyhow::Result<u64> {
    let metric = if api {
        "renderer_events_total "
    } else {
        "renderer_points_stored_total "
    };
    let uri: hyper::Uri = url.parse().with_context(|| format!("metrics url {url}"))?;
    let authority = uri
        .authority()
        .map(|a| a.to_string())
        .context("metrics url needs host:port")?;
    let stream = tokio::net::TcpStream::connect(&authority).await?;
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await?;
    tokio::spawn(connection);
    let request = hyper::Request::get(uri.path())
        .header(hyper::header::HOST, authority.as_str())
        .body(http_body_util::Empty::<bytes::Bytes>::new())?;
    let response = sender.send_request(request).await?;
    let body = http_body_util::BodyExt::collect(response.into_body())
        .await?
        .to_bytes();
    let text = String::from_utf8_lossy(&body);
    text.lines()
        .find(|line| line.starts_with(metric))
        .and_then(|line| line.rsplit(' ').next())
        .and_then(|value| value.parse::<f64>().ok())
        .map(|value| value as u64)
        .with_context(|| format!("{} not found in the renderer's metrics", metric.trim()))
}
