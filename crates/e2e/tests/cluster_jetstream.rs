//! The bus on a three-server JetStream cluster, as `docs/scaling.md` tells operators to
//! run it: the stream has three replicas, the relay and the renderer are given one
//! server's URL, and that server is SIGKILLed mid-stream. They find the other two (the
//! servers announce each other), the stream keeps its leader or elects another, and every
//! event the relay answered `202` is in PostgreSQL exactly once.

mod common;

use std::collections::HashSet;
use std::process::Command;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::process::start_renderer_process;
use serde_json::{json, Value};
use testkit::nats_cluster::NatsCluster;
use testkit::postgres::Postgres;
use testkit::{eventually, http_request_on, ServerProcess, TempDir};

const EVENTS_PER_REQUEST: usize = 20;

/// Request `index` in the seed's shape: a session of its own, events numbered 0...
fn body(index: usize) -> (String, Vec<String>) {
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("after 1970")
        .as_millis() as i64;
    let base_ms = now_ms - 2 * 3_600_000 + (index * EVENTS_PER_REQUEST) as i64;
    let session = format!("js3-{index}");
    let events: Vec<Value> = (0..EVENTS_PER_REQUEST)
        .map(|seq| {
            json!({"type": "click", "page": "/js3", "sessionId": session, "seq": seq,
                   "timestamp": base_ms + seq as i64,
                   "metadata": {"x": (seq * 13) as f64, "y": (index * 7 % 800) as f64,
                                "vw": 1440, "vh": 900, "dw": 1440, "dh": 900}})
        })
        .collect();
    let keys = (0..EVENTS_PER_REQUEST)
        .map(|seq| format!("{session}:{seq}"))
        .collect();
    (Value::Array(events).to_string(), keys)
}

async fn post(addr: &str, body: &str) -> Option<u16> {
    let stream = tokio::net::TcpStream::connect(addr).await.ok()?;
    Some(
        http_request_on(stream, addr, "POST", "/api/events", &[], body)
            .await
            .status,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_three_server_jetstream_cluster_loses_nothing_when_the_named_server_dies() {
    let mut nats = NatsCluster::start(3)
        .unwrap_or_else(|err| panic!("cannot start a nats cluster for this test: {err:#}"));
    let postgres = Postgres::start()
        .unwrap_or_else(|err| panic!("cannot start a postgresql server for this test: {err:#}"));
    let bus = nats.url(0);
    let (out_dir, data_dir) = (TempDir::new("js3-out"), TempDir::new("js3-data"));
    let renderer = start_renderer_process(
        "127.0.0.1:0",
        &out_dir,
        &data_dir,
        &[
            "--store",
            &postgres.url(),
            "--bus",
            &bus,
            "--bus-replicas",
            "3",
            "--bus-ack-wait-secs",
            "2",
        ],
    );
    let mut command = Command::new(env!("CARGO_BIN_EXE_relay-process"));
    command.args([
        "--listen",
        "127.0.0.1:0",
        "--renderer",
        renderer.url(),
        "--bus",
        &bus,
        "--bus-replicas",
        "3",
        "--events-timeout-ms",
        "2000",
        "--backoff-max-ms",
        "200",
        "--max-api-requests-per-sec",
        "0",
    ]);
    let relay = ServerProcess::start(command);
    let addr = relay.addr();

    // The cluster elects a leader and the relay declares the stream with three replicas.
    let (first, first_keys) = body(0);
    eventually("the relay to accept on the replicated stream", || {
        let (addr, first) = (addr.clone(), first.clone());
        async move { (post(&addr, &first).await == Some(202)).then_some(()) }
    })
    .await;
    let mut accepted: HashSet<String> = first_keys.into_iter().collect();
    // Each server reports the streams it holds a copy of; the one read here is not the
    // one the relay and the renderer were given.
    let monitor = nats.monitor_addr(1);
    let stream = eventually("server n1 to report the stream", || {
        let monitor = monitor.clone();
        async move {
            let reply = testkit::http_get(&monitor, "/jsz?streams=true&config=true")
                .await
                .ok()?;
            let streams: Value = serde_json::from_slice(&reply.body).ok()?;
            let stream = streams["account_details"][0]["stream_detail"][0].clone();
            (!stream.is_null()).then_some(stream)
        }
    })
    .await;
    assert_eq!(
        stream["config"]["num_replicas"], 3,
        "the stream has three copies: {stream}"
    );

    // The renderer is consuming before anything dies.
    let stored_rows = || {
        postgres
            .psql("heatmap", "SELECT session || ':' || seq FROM events")
            .map(|text| text.lines().map(str::to_owned).collect::<Vec<_>>())
            .unwrap_or_default()
    };
    eventually("the renderer to store the first request", || {
        let all = accepted.iter().all(|key| stored_rows().contains(key));
        async move { all.then_some(()) }
    })
    .await;

    const REQUESTS: usize = 60;
    let mut refusals = 0usize;
    let mut longest_gap = Duration::ZERO;
    for index in 1..REQUESTS {
        if index == REQUESTS / 3 {
            nats.kill(0).expect("SIGKILL the server both were given");
        }
        let (body, keys) = body(index);
        let started = Instant::now();
        let deadline = started + Duration::from_secs(30);
        loop {
            match post(&addr, &body).await {
                Some(202) => break,
                Some(503) => refusals += 1,
                other => panic!("request {index}: {other:?} is neither 202 nor 503"),
            }
            assert!(
                Instant::now() < deadline,
                "request {index} refused for 30 s after the kill; servers' logs:\n{}",
                nats.logs()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        longest_gap = longest_gap.max(started.elapsed());
        accepted.extend(keys);
    }
    eprintln!("{refusals} refusals (503) while the cluster moved on; longest wait {longest_gap:?}");

    let waited = Instant::now();
    // A server that dies may have led the cluster, the stream or the consumer: the
    // others elect new leaders in a few seconds, and the renderer binds again after that,
    // so this wait is longer than `eventually`'s.
    let deadline = Instant::now() + Duration::from_secs(45);
    let stored = loop {
        let stored = stored_rows();
        if accepted.iter().all(|key| stored.contains(key)) {
            break stored;
        }
        assert!(
            Instant::now() < deadline,
            "{} of {} accepted events stored 45 s after the last 202; servers' logs:\n{}",
            stored.len(),
            accepted.len(),
            nats.logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    eprintln!("all stored {:?} after the last 202", waited.elapsed());
    assert_eq!(
        stored.len(),
        REQUESTS * EVENTS_PER_REQUEST,
        "every event once, nothing else"
    );
}
