//! Cluster mode's event path: relays publish `POST /api/events` to NATS JetStream
//! (`--bus`), renderers consume it as one group into one PostgreSQL store. Each test
//! starts its own NATS server and PostgreSQL server, and the real relay and renderer
//! binaries as processes, so it can SIGKILL any of them.
//!
//! What every test checks in the end: each event a relay answered `202` is in the
//! database exactly once, whatever was killed on the way.

mod common;

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::process::Command;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::process::start_renderer_process;
use common::reconnect_page;
use serde_json::{json, Value};
use testkit::nats::NatsServer;
use testkit::postgres::Postgres;
use testkit::{
    eventually, http_get, http_request_on, Image, RawResponse, ServerProcess, TempDir, WsClient,
};

/// Events in one request, as the snippet sends them (it sends up to 50 at a time).
const EVENTS_PER_REQUEST: usize = 20;

/// A renderer's redelivery delay in these tests: a killed renderer's batches go to
/// another within this, instead of the 30 s default.
const ACK_WAIT_SECS: &str = "2";

/// The servers of one test, each its own.
struct Engines {
    nats: NatsServer,
    postgres: Postgres,
}

impl Engines {
    fn start() -> Self {
        let nats = NatsServer::start()
            .unwrap_or_else(|err| panic!("cannot start a nats server for this test: {err:#}"));
        let postgres = Postgres::start().unwrap_or_else(|err| {
            panic!("cannot start a postgresql server for this test: {err:#}")
        });
        Engines { nats, postgres }
    }

    /// A renderer on the bus and the shared store, with folders of its own.
    fn renderer(&self) -> (ServerProcess, TempDir, TempDir) {
        let out_dir = TempDir::new("bus-out");
        let data_dir = TempDir::new("bus-data");
        let renderer = start_renderer_process(
            "127.0.0.1:0",
            &out_dir,
            &data_dir,
            &[
                "--store",
                &self.postgres.url(),
                "--bus",
                &self.nats.url(),
                "--bus-ack-wait-secs",
                ACK_WAIT_SECS,
            ],
        );
        (renderer, out_dir, data_dir)
    }

    /// A relay on the bus, linked to `renderer` for recordings (events do not need it).
    async fn relay(&self, renderer: &str) -> ServerProcess {
        self.relay_with(renderer, &[]).await
    }

    /// [`Engines::relay`] with extra flags.
    async fn relay_with(&self, renderer: &str, extra_args: &[&str]) -> ServerProcess {
        let mut command = Command::new(env!("CARGO_BIN_EXE_relay-process"));
        command.args([
            "--listen",
            "127.0.0.1:0",
            "--renderer",
            renderer,
            "--bus",
            &self.nats.url(),
            // A dead NATS is noticed within this, and found again quickly after it returns.
            "--events-timeout-ms",
            "2000",
            "--backoff-max-ms",
            "200",
            // One address sends everything here.
            "--max-api-requests-per-sec",
            "0",
        ]);
        command.args(extra_args);
        let relay = ServerProcess::start(command);
        wait_for_bus(&relay.addr()).await;
        relay
    }

    /// Every `session:seq` stored, one line per row (duplicates would show twice).
    fn stored(&self) -> Vec<String> {
        self.try_stored().expect("read the events table")
    }

    /// [`Engines::stored`], or the error while no renderer has created the table yet (a
    /// renderer prints its address before it opens the store).
    fn try_stored(&self) -> anyhow::Result<Vec<String>> {
        let text = self
            .postgres
            .psql("heatmap", "SELECT session || ':' || seq FROM events")?;
        Ok(text.lines().map(str::to_owned).collect())
    }
}

/// Fresh engines with one renderer and one relay on them (and the renderer's folders, to
/// keep for the test's length): where most tests here begin.
async fn one_of_each() -> (Engines, ServerProcess, ServerProcess, (TempDir, TempDir)) {
    let engines = Engines::start();
    let (renderer, out_dir, data_dir) = engines.renderer();
    let relay = engines.relay(renderer.url()).await;
    (engines, renderer, relay, (out_dir, data_dir))
}

/// Request `index` of a test's stream in the seed's shape: its own session, events
/// numbered 0.., clicks and moves with positions, timestamps two hours back.
fn body(label: &str, index: usize) -> (String, Vec<String>) {
    let base_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("after 1970")
        .as_millis() as i64
        - 2 * 3_600_000;
    // The timestamp is part of the event's identity: fixed per (request, seq) so that a
    // resend is the same event.
    let base_ms = base_ms - base_ms % 3_600_000 + (index * EVENTS_PER_REQUEST) as i64;
    let session = format!("{label}-{index}");
    let events: Vec<Value> = (0..EVENTS_PER_REQUEST)
        .map(|seq| {
            let kind = if seq % 3 == 0 { "click" } else { "move" };
            json!({"type": kind, "page": "/bus", "sessionId": session, "seq": seq,
                   "timestamp": base_ms + seq as i64,
                   "metadata": {"x": (seq * 13 % 1400) as f64, "y": (index * 37 % 800) as f64,
                                "vw": 1440, "vh": 900, "dw": 1440, "dh": 900}})
        })
        .collect();
    let keys = (0..EVENTS_PER_REQUEST)
        .map(|seq| format!("{session}:{seq}"))
        .collect();
    (Value::Array(events).to_string(), keys)
}

/// Waits until the relay at `addr` says on `/healthz` that its bus is connected (it
/// connects in the background after it starts listening).
async fn wait_for_bus(addr: &str) {
    eventually("the relay's bus to connect", || async move {
        let health = testkit::http_get(addr, "/healthz").await.ok()?;
        let health: Value = serde_json::from_slice(&health.body).ok()?;
        (health["bus"] == "connected").then_some(())
    })
    .await;
}

/// Posts `body` to the relay at `addr`; `None` if the relay cannot be reached at all.
async fn post(addr: &str, body: &str) -> Option<RawResponse> {
    let stream = tokio::net::TcpStream::connect(addr).await.ok()?;
    Some(http_request_on(stream, addr, "POST", "/api/events", &[], body).await)
}

/// Posts requests `indexes` of the `label` stream to the relay at `addr`, checks each is
/// answered `202`, and adds their events to `accepted`.
async fn post_accepted(
    addr: &str,
    label: &str,
    indexes: std::ops::Range<usize>,
    accepted: &mut HashSet<String>,
) {
    for index in indexes {
        let (body, keys) = body(label, index);
        let reply = post(addr, &body).await.expect("the relay is up");
        assert_eq!(reply.status, 202, "request {index}: {}", reply.body);
        accepted.extend(keys);
    }
}

/// Whether a refusal is one a sender should resend after a while.
fn is_retryable_refusal(reply: &RawResponse) -> bool {
    reply.status == 503 && reply.head.contains("retry-after:")
}

/// Waits until every key of `accepted` is stored, then checks none is stored twice and
/// nothing else is stored.
async fn assert_stored_exactly_once(engines: &Engines, accepted: &HashSet<String>) {
    let stored = eventually("every accepted event in the store", || {
        let stored = engines.try_stored().unwrap_or_default();
        let present: HashSet<&String> = stored.iter().collect();
        let all = accepted.iter().all(|key| present.contains(key));
        async move { all.then_some(stored) }
    })
    .await;
    let distinct: HashSet<&String> = stored.iter().collect();
    assert_eq!(
        distinct.len(),
        stored.len(),
        "an event is stored twice ({} rows, {} distinct)",
        stored.len(),
        distinct.len()
    );
    assert_eq!(
        stored.len(),
        accepted.len(),
        "every event once, nothing else"
    );
}

/// Two relays and two renderers on one NATS and one PostgreSQL; requests alternate
/// between the relays. One renderer is SIGKILLed a third of the way in, one relay two
/// thirds of the way in (and started again). A request a relay does not answer `202` is
/// sent to the other one, as a load balancer or the snippet's retry would.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_a_renderer_and_a_relay_mid_stream_loses_and_duplicates_nothing() {
    let engines = Engines::start();
    let (renderer_a, _out_a, _data_a) = engines.renderer();
    let (renderer_b, _out_b, _data_b) = engines.renderer();
    let mut relays = [
        Some(engines.relay(renderer_a.url()).await),
        Some(engines.relay(renderer_b.url()).await),
    ];
    let mut addrs: Vec<String> = relays
        .iter()
        .map(|relay| relay.as_ref().map(ServerProcess::addr).unwrap_or_default())
        .collect();
    let mut renderer_a = Some(renderer_a);

    const REQUESTS: usize = 60;
    let mut accepted = HashSet::new();
    let mut accepted_by = [0usize; 2];
    for index in 0..REQUESTS {
        if index == REQUESTS / 3 {
            renderer_a.take().expect("renderer a runs").kill();
        }
        if index == 2 * REQUESTS / 3 {
            relays[1].take().expect("relay b runs").kill();
        }
        if index == 2 * REQUESTS / 3 + 5 {
            // Relay b comes back (on a new port, as after a restart behind a balancer).
            let relay = engines.relay(renderer_b.url()).await;
            addrs[1] = relay.addr();
            relays[1] = Some(relay);
        }
        let (body, keys) = body("kill", index);
        let first = index % 2;
        let mut stored = false;
        for target in [first, 1 - first, first, 1 - first] {
            match post(&addrs[target], &body).await {
                Some(reply) if reply.status == 202 => {
                    accepted_by[target] += 1;
                    stored = true;
                    break;
                }
                Some(reply) => assert!(
                    is_retryable_refusal(&reply),
                    "request {index} refused for good by relay {target}: {} {}",
                    reply.status,
                    reply.body
                ),
                None => {}
            }
        }
        assert!(stored, "request {index}: no relay accepted it");
        accepted.extend(keys);
    }
    assert!(
        accepted_by[0] > 0 && accepted_by[1] > 0,
        "both relays took requests: {accepted_by:?}"
    );
    assert_stored_exactly_once(&engines, &accepted).await;
    assert_eq!(
        engines.stored().len(),
        REQUESTS * EVENTS_PER_REQUEST,
        "every event once, nothing else"
    );
}

/// While every renderer is down, the relay still answers `202` (the stream holds the
/// events, none reaches the store); a renderer that starts later stores them all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_accepted_while_every_renderer_is_down_are_stored_when_one_returns() {
    let engines = Engines::start();
    // A first renderer creates the schema, then dies. It prints its address before it
    // opens the store, so the kill waits for the table.
    let (renderer, _out, _data) = engines.renderer();
    let relay = engines.relay(renderer.url()).await;
    let addr = relay.addr();
    eventually("the first renderer to create the schema", || {
        let ready = engines.try_stored().ok();
        async move { ready }
    })
    .await;
    renderer.kill();

    const REQUESTS: usize = 30;
    let mut accepted = HashSet::new();
    post_accepted(&addr, "down", 0..REQUESTS, &mut accepted).await;
    assert!(
        engines.stored().is_empty(),
        "no renderer is up, so nothing is in the store yet"
    );

    let (_renderer, _out, _data) = engines.renderer();
    assert_stored_exactly_once(&engines, &accepted).await;
}

/// With NATS killed the relay answers `503` with `Retry-After`, never `202`; once NATS is
/// back on its port and store, the relay accepts again, and everything it accepted before,
/// and the refused requests sent again, are stored once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_bus_gets_503_with_retry_after_and_the_relay_recovers_when_it_returns() {
    let (mut engines, _renderer, relay, _dirs) = one_of_each().await;
    let addr = relay.addr();

    let mut accepted = HashSet::new();
    post_accepted(&addr, "nats", 0..5, &mut accepted).await;

    engines.nats.kill().expect("kill nats");
    let mut refused = Vec::new();
    for index in 5..8 {
        let (body, keys) = body("nats", index);
        let reply = post(&addr, &body).await.expect("the relay is up");
        assert!(
            is_retryable_refusal(&reply),
            "request {index} while nats is down: {} {} {}",
            reply.status,
            reply.head,
            reply.body
        );
        refused.push((body, keys));
    }

    engines
        .nats
        .restart()
        .unwrap_or_else(|err| panic!("cannot restart nats: {err:#}"));
    // The snippet resends what was refused; the first resends may still meet a relay
    // that has not reconnected yet.
    for (body, keys) in refused {
        let addr = addr.clone();
        eventually("the relay to accept events again", || {
            let body = body.clone();
            let addr = addr.clone();
            async move {
                let reply = post(&addr, &body).await?;
                (reply.status == 202).then_some(())
            }
        })
        .await;
        accepted.extend(keys);
    }
    assert_stored_exactly_once(&engines, &accepted).await;
}

/// A full stream refuses: once the events waiting for a renderer fill `--bus-max-bytes`,
/// the relay answers `503` with `Retry-After`, and what it accepted before is stored once
/// a renderer consumes it (the stream never dropped it to make room).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_stream_gets_503_and_keeps_what_it_accepted() {
    let engines = Engines::start();
    // No renderer yet: the relay declares the stream, small (requests here take about
    // 4 KiB each), and nothing consumes it.
    let relay = engines
        .relay_with("ws://127.0.0.1:1", &["--bus-max-bytes", "16384"])
        .await;
    let addr = relay.addr();
    let mut accepted = HashSet::new();
    let mut refused = None;
    for index in 0..20 {
        let (body, keys) = body("full", index);
        let reply = post(&addr, &body).await.expect("the relay is up");
        if reply.status == 202 {
            accepted.extend(keys);
        } else {
            refused = Some((index, reply));
            break;
        }
    }
    let (index, reply) = refused.expect("the small stream filled within 20 requests");
    assert!(index > 0, "the first request fits");
    assert!(
        is_retryable_refusal(&reply),
        "a full stream is a retryable refusal: {} {} {}",
        reply.status,
        reply.head,
        reply.body
    );
    // A renderer with the same stream settings drains it into the store.
    let out_dir = TempDir::new("bus-out");
    let data_dir = TempDir::new("bus-data");
    let _renderer = start_renderer_process(
        "127.0.0.1:0",
        &out_dir,
        &data_dir,
        &[
            "--store",
            &engines.postgres.url(),
            "--bus",
            &engines.nats.url(),
            "--bus-max-bytes",
            "16384",
        ],
    );
    assert_stored_exactly_once(&engines, &accepted).await;
}

/// PostgreSQL crashing mid-stream pauses storing, not accepting: the relay keeps
/// answering `202` (the stream holds the events), the renderer's failed commits are
/// answered to JetStream with a delayed negative acknowledgement, and once the database
/// is back every accepted event is stored once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_crash_pauses_storing_and_loses_nothing() {
    let (mut engines, renderer, relay, _dirs) = one_of_each().await;
    let addr = relay.addr();
    let mut accepted = HashSet::new();
    post_accepted(&addr, "pg", 0..5, &mut accepted).await;
    assert_stored_exactly_once(&engines, &accepted).await;

    engines.postgres.crash().expect("crash postgresql");
    // With the database down: still accepted, the stream holds them.
    post_accepted(&addr, "pg", 5..15, &mut accepted).await;
    // The renderer tried to commit them and failed (so it did not acknowledge them).
    let renderer_addr = renderer.addr();
    eventually("the renderer to fail a commit", || {
        let renderer_addr = renderer_addr.clone();
        async move {
            let health = testkit::http_get(&renderer_addr, "/healthz").await.ok()?;
            let health: Value = serde_json::from_slice(&health.body).ok()?;
            (health["errors"]["storage_failed"].as_u64()? > 0).then_some(())
        }
    })
    .await;
    engines
        .postgres
        .restart()
        .unwrap_or_else(|err| panic!("cannot restart postgresql: {err:#}"));
    assert_stored_exactly_once(&engines, &accepted).await;
}

// Recordings over the bus: pages record through any relay, batches go through JetStream
// to whichever renderer is up, and Generate is asked of the renderer group.

/// Points in one page batch in these tests.
const POINTS_PER_BATCH: usize = 50;

/// The viewport every test page records in.
const VIEWPORT: (u32, u32) = (1280, 800);

/// Batch `seq` of a page: moves spread over the viewport, different in every batch.
fn page_batch(recording: &str, seq: u64) -> String {
    let points: Vec<(f32, f32)> = (0..POINTS_PER_BATCH as u64)
        .map(|idx| {
            (
                ((seq * 37 + idx * 11) % u64::from(VIEWPORT.0)) as f32,
                ((seq * 19 + idx * 7) % u64::from(VIEWPORT.1)) as f32,
            )
        })
        .collect();
    common::batch(recording, seq, VIEWPORT.0, VIEWPORT.1, &points).to_string()
}

/// A page recording through a relay as `web/app.js` does: numbered batches kept until
/// acknowledged, and resent after a `busy` or a reconnect (to any relay).
struct RecordingPage {
    client: WsClient,
    recording: String,
    next_seq: u64,
    /// Batches sent and not acknowledged, by number.
    unacked: BTreeMap<u64, String>,
    /// Batches acknowledged.
    acked: BTreeSet<u64>,
    /// Batches answered `busy`, to send again on the next resend tick.
    busy: BTreeSet<u64>,
}

/// How long the test page waits before resending a batch answered `busy` (the page's
/// back-off), so resends stay under the relay's message rate.
const RESEND_EVERY: Duration = Duration::from_millis(200);

impl RecordingPage {
    /// Connects to the relay at `addr` and starts `recording` (answered once the stream
    /// holds the start, renderers or not).
    async fn start(addr: &str, recording: &str) -> Self {
        let (client, _welcome) = reconnect_page(addr.parse().expect("an address")).await;
        let mut page = RecordingPage {
            client,
            recording: recording.to_owned(),
            next_seq: 0,
            unacked: BTreeMap::new(),
            acked: BTreeSet::new(),
            busy: BTreeSet::new(),
        };
        page.client
            .send_json(json!({"type": "start", "recording": recording,
                              "viewport": {"width": VIEWPORT.0, "height": VIEWPORT.1}}))
            .await;
        let started = page
            .client
            .wait_for("started", |msg| {
                msg["type"] == "started" || msg["type"] == "error"
            })
            .await;
        assert_eq!(started["type"], "started", "{started}");
        page
    }

    /// Sends `n` new batches without waiting for their acks.
    async fn send(&mut self, n: u64) {
        for _ in 0..n {
            let seq = self.next_seq;
            self.next_seq += 1;
            let frame = page_batch(&self.recording, seq);
            self.client.send_text(frame.clone()).await;
            self.unacked.insert(seq, frame);
        }
    }

    /// Notes an answer; a `busy` batch is sent again, any other refusal fails the test.
    async fn on_reply(&mut self, msg: &Value) {
        if msg["recording"] != self.recording.as_str() {
            return;
        }
        let Some(seq) = msg["seq"].as_u64() else {
            return;
        };
        match msg["type"].as_str() {
            Some("ack") => {
                self.unacked.remove(&seq);
                self.acked.insert(seq);
            }
            // Sent again on the next resend tick, as the page backs off before resending.
            Some("error") if msg["code"] == "busy" => {
                self.busy.insert(seq);
            }
            _ => panic!("batch {seq} refused for good: {msg}"),
        }
    }

    /// Reads answers until every batch sent is acknowledged.
    async fn wait_acked(&mut self) {
        let deadline = tokio::time::Instant::now() + ACK_DEADLINE;
        let mut resend = tokio::time::interval(RESEND_EVERY);
        while !self.unacked.is_empty() {
            let msg = tokio::select! {
                msg = self.client.next_json() => msg.expect("the relay stays connected"),
                _ = resend.tick() => {
                    for seq in std::mem::take(&mut self.busy) {
                        if let Some(frame) = self.unacked.get(&seq).cloned() {
                            self.client.send_text(frame).await;
                        }
                    }
                    continue;
                }
                () = tokio::time::sleep_until(deadline) => {
                    panic!("batches {:?} not acknowledged in time", self.unacked.keys())
                }
            };
            self.on_reply(&msg).await;
        }
    }

    /// Reads what the relay sent before its connection ended (it was killed), keeping the
    /// acks that made it out.
    async fn read_until_closed(&mut self) {
        let deadline = Instant::now() + ACK_DEADLINE;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match tokio::time::timeout(left, self.client.next_json()).await {
                Ok(Ok(msg)) => self.on_reply(&msg).await,
                Ok(Err(_)) => return,
                Err(_) => panic!("the killed relay's connection did not end"),
            }
        }
    }

    /// Reconnects to the relay at `addr` and resends every batch not acknowledged, as the
    /// page does after any reconnect.
    async fn reconnect(&mut self, addr: &str) {
        let (client, _welcome) = reconnect_page(addr.parse().expect("an address")).await;
        self.client = client;
        for frame in self.unacked.values() {
            self.client.send_text(frame.clone()).await;
        }
    }
}

/// Asks the relay at `addr` (through the page `client`) for a heatmap of `recording`,
/// again while no renderer can answer, and returns the answer and the image, fetched
/// through the same relay.
async fn generate(
    client: &mut WsClient,
    addr: &str,
    recording: &str,
    request: u64,
) -> (Value, Image) {
    let deadline = Instant::now() + ACK_DEADLINE;
    // Asked again after a pause, as the page does, so the retries stay under the relay's
    // message rate.
    let mut pace = tokio::time::interval(RESEND_EVERY);
    let ready = loop {
        pace.tick().await;
        assert!(
            Instant::now() < deadline,
            "no heatmap of {recording} in time"
        );
        client
            .send_json(json!({"type": "generate", "recording": recording, "request": request}))
            .await;
        let reply = client
            .wait_for("the generate's answer", |msg| {
                msg["request"] == request && (msg["type"] == "heatmap" || msg["type"] == "error")
            })
            .await;
        match reply["code"].as_str() {
            None => break reply,
            Some("renderer_unavailable" | "busy") => continue,
            Some(_) => panic!("generate refused: {reply}"),
        }
    };
    let name = ready["name"].as_str().expect("an image name");
    let png = http_get(addr, &format!("/heatmaps/{name}"))
        .await
        .expect("fetch the image through the relay");
    assert_eq!(png.status, 200, "image {name} through {addr}");
    let image = Image::decode(&png.body).expect("a PNG");
    (ready, image)
}

/// How long a test waits for acks or a heatmap: long enough for a killed renderer's
/// batches to be delivered again (`ACK_WAIT_SECS`) with room to spare.
const ACK_DEADLINE: Duration = Duration::from_secs(30);

impl Engines {
    /// The batches stored for `recording`, as "batches points" (a batch stored twice would
    /// count twice).
    fn recording_rows(&self, recording: &str) -> String {
        self.postgres
            .psql(
                "heatmap",
                &format!(
                    "SELECT COUNT(*) || ' ' || COALESCE(SUM(n_points), 0) FROM recording_batches WHERE recording = '{recording}'"
                ),
            )
            .expect("query the recording batches")
    }

    /// Waits until exactly the batches `acked` of `recording` are stored, each once.
    async fn assert_batches_stored_once(&self, recording: &str, acked: &BTreeSet<u64>) {
        let want = format!("{} {}", acked.len(), acked.len() * POINTS_PER_BATCH);
        eventually(
            &format!("every acknowledged batch of {recording} stored"),
            || {
                let rows = self.recording_rows(recording);
                let want = want.clone();
                async move { (rows == want).then_some(()) }
            },
        )
        .await;
        let seqs = self
            .postgres
            .psql(
                "heatmap",
                &format!("SELECT seq FROM recording_batches WHERE recording = '{recording}' ORDER BY seq"),
            )
            .expect("query the stored batches");
        let stored: BTreeSet<u64> = seqs
            .lines()
            .map(|seq| seq.parse().expect("a seq"))
            .collect();
        assert_eq!(
            &stored, acked,
            "the stored batches are the acknowledged ones"
        );
    }
}

/// Two relays and two renderers: a page on each relay records; one renderer is SIGKILLed
/// mid-stream (the relays keep acknowledging: the stream holds the batches), then the relay
/// of one page, which reconnects to the other relay and resends what was not acknowledged.
/// Every acknowledged batch is stored exactly once, and a heatmap of the same recording
/// generated through either relay (any renderer may draw it, any renderer serves the
/// image) has the same pixels.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_on_two_relays_lose_nothing_when_a_renderer_and_a_relay_die_and_draw_alike() {
    let engines = Engines::start();
    let (renderer_a, _out_a, _data_a) = engines.renderer();
    let (renderer_b, _out_b, _data_b) = engines.renderer();
    let relay_x = engines.relay(renderer_a.url()).await;
    let relay_y = engines.relay(renderer_b.url()).await;
    let mut page_x = RecordingPage::start(&relay_x.addr(), "on-x").await;
    let mut page_y = RecordingPage::start(&relay_y.addr(), "on-y").await;

    for page in [&mut page_x, &mut page_y] {
        page.send(20).await;
        page.wait_acked().await;
    }
    renderer_a.kill();
    for page in [&mut page_x, &mut page_y] {
        page.send(20).await;
        page.wait_acked().await;
    }
    // Relay x dies with batches of page x on their way; the page moves to relay y.
    page_x.send(10).await;
    relay_x.kill();
    page_x.read_until_closed().await;
    page_x.reconnect(&relay_y.addr()).await;
    page_x.send(10).await;
    page_x.wait_acked().await;
    page_y.send(10).await;
    page_y.wait_acked().await;
    assert_eq!(page_x.acked.len(), 60);
    assert_eq!(page_y.acked.len(), 50);

    engines
        .assert_batches_stored_once("on-x", &page_x.acked)
        .await;
    engines
        .assert_batches_stored_once("on-y", &page_y.acked)
        .await;

    // Renderer a and relay x come back (new ports, as behind a balancer); relay x's image
    // requests go to the new renderer a, whichever renderer drew the image.
    let (renderer_a, _out_a2, _data_a2) = engines.renderer();
    let relay_x = engines.relay(renderer_a.url()).await;
    let (mut viewer, _) = reconnect_page(relay_x.addr().parse().expect("an address")).await;
    let relays = [relay_x.addr(), relay_y.addr()];
    // Four requests, alternating relays; the renderers' queue group spreads them, so the
    // images are drawn by both renderers in all likelihood, and each is fetched through
    // both relays (each asks its own renderer), so one renderer serves another's image.
    let mut first: Option<Image> = None;
    for request in 1..=4u64 {
        let through = &relays[(request % 2) as usize];
        let client = if request % 2 == 0 {
            &mut viewer
        } else {
            &mut page_x.client
        };
        let (ready, _) = generate(client, through, "on-x", request).await;
        assert_eq!(ready["n_points"], 60 * POINTS_PER_BATCH, "{ready}");
        let name = ready["name"].as_str().expect("an image name");
        for addr in &relays {
            let png = http_get(addr, &format!("/heatmaps/{name}"))
                .await
                .expect("fetch the image");
            assert_eq!(png.status, 200, "image {name} through {addr}");
            let image = Image::decode(&png.body).expect("a PNG");
            match &first {
                None => {
                    assert!(
                        image.pixels.iter().any(|&byte| byte != 255),
                        "heat is drawn"
                    );
                    first = Some(image);
                }
                Some(first) => {
                    assert_eq!((image.width, image.height), (first.width, first.height));
                    assert!(
                        image.pixels == first.pixels,
                        "image {name} through {addr} differs from the first heatmap"
                    );
                }
            }
        }
    }
}

/// While NATS is down a batch is answered `busy` (never acknowledged), so the page keeps
/// it; once NATS is back the resend is acknowledged and stored once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_is_busy_while_the_bus_is_down_and_stored_once_after() {
    let (mut engines, _renderer, relay, _dirs) = one_of_each().await;
    let mut page = RecordingPage::start(&relay.addr(), "nats-down").await;
    page.send(3).await;
    page.wait_acked().await;

    engines.nats.kill().expect("kill nats");
    page.send(1).await;
    let refused = page
        .client
        .wait_for("batch 3's answer", |msg| msg["seq"] == 3)
        .await;
    assert_eq!(refused["type"], "error", "{refused}");
    assert_eq!(refused["code"], "busy", "{refused}");

    engines
        .nats
        .restart()
        .unwrap_or_else(|err| panic!("cannot restart nats: {err:#}"));
    // The page resends on `busy` until the relay has reconnected and the stream takes it.
    page.on_reply(&refused).await;
    page.wait_acked().await;
    engines
        .assert_batches_stored_once("nats-down", &page.acked)
        .await;
}

/// How long every renderer stays down in the outage test, as the issue asks.
const OUTAGE: Duration = Duration::from_secs(30);

/// A page keeps recording through a relay while every renderer is down for 30 s: each
/// batch is acknowledged (the stream holds it), none reaches the database until a
/// renderer returns, then every one is stored once and Generate draws all of them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_page_records_through_a_30_s_renderer_outage_and_loses_nothing() {
    let engines = Engines::start();
    let (renderer, _out, _data) = engines.renderer();
    let renderer_addr = renderer.addr();
    // Its schema is in place once it answers: it opens the store before serving.
    eventually("the first renderer to serve", || {
        let renderer_addr = renderer_addr.clone();
        async move { http_get(&renderer_addr, "/healthz").await.ok() }
    })
    .await;
    let relay = engines.relay(renderer.url()).await;
    let mut page = RecordingPage::start(&relay.addr(), "outage").await;
    page.send(5).await;
    page.wait_acked().await;
    renderer.kill();

    let outage = Instant::now();
    let mut pace = tokio::time::interval(Duration::from_millis(100));
    while outage.elapsed() < OUTAGE {
        pace.tick().await;
        page.send(1).await;
        page.wait_acked().await;
    }
    let n_batches = page.acked.len();
    assert!(
        n_batches > 200,
        "the page kept recording: {n_batches} batches"
    );
    // Nothing consumed them: a renderer killed with batches delivered and unacknowledged
    // may have committed some before it died, never the ones sent after.
    let during = engines.recording_rows("outage");
    let stored_during: usize = during
        .split(' ')
        .next()
        .and_then(|n| n.parse().ok())
        .expect("a count");
    assert!(stored_during <= 5, "no renderer stored batches: {during}");

    // A renderer returns where the relay looks for images.
    let out_dir = TempDir::new("bus-out");
    let data_dir = TempDir::new("bus-data");
    let _renderer = start_renderer_process(
        &renderer_addr,
        &out_dir,
        &data_dir,
        &[
            "--store",
            &engines.postgres.url(),
            "--bus",
            &engines.nats.url(),
            "--bus-ack-wait-secs",
            ACK_WAIT_SECS,
        ],
    );
    // Asked at once: the renderer waits until the stream holds nothing more of the
    // recording before it draws, so the heatmap has every acknowledged point.
    let (ready, image) = generate(&mut page.client, &relay.addr(), "outage", 1).await;
    assert_eq!(ready["n_points"], n_batches * POINTS_PER_BATCH, "{ready}");
    engines
        .assert_batches_stored_once("outage", &page.acked)
        .await;
    assert!(
        image.pixels.iter().any(|&byte| byte != 255),
        "heat is drawn"
    );
}

/// A renderer on the bus stores recordings' batches in the shared database, so it refuses
/// to start without one, saying which flag is missing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_renderer_on_the_bus_without_postgresql_refuses_to_start() {
    let out_dir = TempDir::new("bus-nopg-out");
    let data_dir = TempDir::new("bus-nopg-data");
    let mut config = common::renderer_config(&out_dir, &data_dir);
    // Never reached: the check comes first.
    config.bus = Some("nats://127.0.0.1:1".into());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let refused = renderer::run(listener, config, std::future::pending::<()>())
        .await
        .expect_err("a renderer on the bus needs --store postgres://");
    let message = format!("{refused:#}");
    assert!(message.contains("--store postgres://"), "{message}");
}
