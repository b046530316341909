//! Cluster mode's event path: relays publish `POST /api/events` to NATS JetStream
//! (`--bus`), renderers consume it as one group into one PostgreSQL store. Each test
//! starts its own NATS server and PostgreSQL server, and the real relay and renderer
//! binaries as processes, so it can SIGKILL any of them.
//!
//! What every test checks in the end: each event a relay answered `202` is in the
//! database exactly once, whatever was killed on the way.

mod common;

use std::collections::HashSet;
use std::process::Command;
use std::time::{SystemTime, UNIX_EPOCH};

use common::process::start_renderer_process;
use serde_json::{json, Value};
use testkit::nats::NatsServer;
use testkit::postgres::Postgres;
use testkit::{eventually, http_request_on, RawResponse, ServerProcess, TempDir};

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

/// Whether a refusal is one a sender should resend after a while.
fn is_retryable_refusal(reply: &RawResponse) -> bool {
    reply.status == 503 && reply.head.contains("retry-after:")
}

/// Waits until every key of `accepted` is stored, then checks none is stored twice.
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
    // A first renderer creates the schema and the consumer, then dies.
    let (renderer, _out, _data) = engines.renderer();
    let relay = engines.relay(renderer.url()).await;
    let addr = relay.addr();
    renderer.kill();

    const REQUESTS: usize = 30;
    let mut accepted = HashSet::new();
    for index in 0..REQUESTS {
        let (body, keys) = body("down", index);
        let reply = post(&addr, &body).await.expect("the relay is up");
        assert_eq!(reply.status, 202, "request {index}: {}", reply.body);
        accepted.extend(keys);
    }
    assert!(
        engines.stored().is_empty(),
        "no renderer is up, so nothing is in the store yet"
    );

    let (_renderer, _out, _data) = engines.renderer();
    assert_stored_exactly_once(&engines, &accepted).await;
    assert_eq!(engines.stored().len(), accepted.len());
}

/// With NATS killed the relay answers `503` with `Retry-After`, never `202`; once NATS is
/// back on its port and store, the relay accepts again, and everything it accepted before,
/// and the refused requests sent again, are stored once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_bus_gets_503_with_retry_after_and_the_relay_recovers_when_it_returns() {
    let mut engines = Engines::start();
    let (renderer, _out, _data) = engines.renderer();
    let relay = engines.relay(renderer.url()).await;
    let addr = relay.addr();

    let mut accepted = HashSet::new();
    for index in 0..5 {
        let (body, keys) = body("nats", index);
        let reply = post(&addr, &body).await.expect("the relay is up");
        assert_eq!(reply.status, 202, "request {index}: {}", reply.body);
        accepted.extend(keys);
    }

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
    assert_eq!(engines.stored().len(), accepted.len());
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
    assert_eq!(engines.stored().len(), accepted.len());
}

/// PostgreSQL crashing mid-stream pauses storing, not accepting: the relay keeps
/// answering `202` (the stream holds the events), the renderer's failed commits are
/// answered to JetStream with a delayed negative acknowledgement, and once the database
/// is back every accepted event is stored once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_crash_pauses_storing_and_loses_nothing() {
    let mut engines = Engines::start();
    let (renderer, _out, _data) = engines.renderer();
    let relay = engines.relay(renderer.url()).await;
    let addr = relay.addr();
    let mut accepted = HashSet::new();
    for index in 0..5 {
        let (body, keys) = body("pg", index);
        let reply = post(&addr, &body).await.expect("the relay is up");
        assert_eq!(reply.status, 202, "request {index}: {}", reply.body);
        accepted.extend(keys);
    }
    assert_stored_exactly_once(&engines, &accepted).await;

    engines.postgres.crash().expect("crash postgresql");
    for index in 5..15 {
        let (body, keys) = body("pg", index);
        let reply = post(&addr, &body).await.expect("the relay is up");
        assert_eq!(
            reply.status, 202,
            "request {index} with the database down: {}",
            reply.body
        );
        accepted.extend(keys);
    }
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
    assert_eq!(engines.stored().len(), accepted.len());
}
