//! The event API's promise under a crash: 1,000,000 events sent through the relay while
//! the renderer is SIGKILLed mid-way and restarted. Senders behave as the snippet does
//! (numbered events, resent after any answer but 202); afterwards every event is stored
//! exactly once, and the totals and the heatmap count exactly what was sent.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::process::start_renderer_process;
use common::*;
use serde_json::{json, Value};
use testkit::{http_get, http_request, TempDir};

const REQUESTS: usize = 2_000;
const EVENTS_PER_REQUEST: usize = 500;
const SENDERS: usize = 4;

/// Request `index`'s body: its own session, events numbered 0.., a millisecond apart,
/// every third a click on `/kill` with a position, the rest moves and page views.
fn body(index: usize, base_ms: i64) -> String {
    let events: Vec<Value> = (0..EVENTS_PER_REQUEST)
        .map(|seq| {
            let kind = match seq % 3 {
                0 => "click",
                1 => "move",
                _ => "pageview",
            };
            json!({"type": kind, "page": "/kill", "sessionId": format!("k-{index}"), "seq": seq,
                   "timestamp": base_ms + seq as i64,
                   "metadata": {"x": (seq % 1400) as f64, "y": (index % 800) as f64,
                                "vw": 1440, "vh": 900, "dw": 1440, "dh": 900}})
        })
        .collect();
    Value::Array(events).to_string()
}

fn clicks_per_request() -> usize {
    (0..EVENTS_PER_REQUEST).filter(|seq| seq % 3 == 0).count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_million_events_with_the_renderer_killed_midway_are_stored_exactly_once() {
    let out_dir = TempDir::new("ingest-kill-out");
    let data_dir = TempDir::new("ingest-kill-data");
    let renderer = start_renderer_process("127.0.0.1:0", &out_dir, &data_dir, &[]);
    let renderer_addr = renderer.addr();
    let renderer_url = renderer.url().to_owned();
    let relay = start_relay_with(&renderer_url, |config| {
        reconnect_fast(config);
        config.max_api_requests_per_sec = 0;
    })
    .await;
    wait_linked(&relay).await;
    let addr = relay.addr.to_string();
    // Two hours ago: every event lies in one past hour of history.
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let base_ms = now_ms - 2 * 3_600_000;

    let next = Arc::new(AtomicUsize::new(0));
    let stored = Arc::new(AtomicUsize::new(0));
    let refused = Arc::new(AtomicUsize::new(0));
    let mut senders = Vec::new();
    for _ in 0..SENDERS {
        let (next, stored, refused, addr) =
            (next.clone(), stored.clone(), refused.clone(), addr.clone());
        senders.push(tokio::spawn(async move {
            loop {
                let index = next.fetch_add(1, Ordering::Relaxed);
                if index >= REQUESTS {
                    return;
                }
                let body = body(index, base_ms);
                // As the snippet does: keep the events until a 202, resend after anything
                // else (a 503 while the renderer is away, a lost answer), once the relay's
                // link is up again.
                loop {
                    let reply = http_request(&addr, "POST", "/api/events", &[], &body).await;
                    match reply.status {
                        202 => break,
                        503 => {
                            refused.fetch_add(1, Ordering::Relaxed);
                            wait_linked_at(&addr).await;
                        }
                        other => panic!("request {index}: unexpected {other}: {}", reply.body),
                    }
                }
                stored.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }

    // SIGKILL mid-way: some requests are committed and unanswered, some in the writer's
    // queue, some not yet sent.
    let started = std::time::Instant::now();
    let mut tick = tokio::time::interval(Duration::from_millis(10));
    while stored.load(Ordering::Relaxed) < REQUESTS * 2 / 5 {
        assert!(
            started.elapsed() < Duration::from_secs(300),
            "only {} of {REQUESTS} requests stored in 300 s",
            stored.load(Ordering::Relaxed)
        );
        tick.tick().await;
    }
    eprintln!(
        "{} requests stored in {:?}",
        stored.load(Ordering::Relaxed),
        started.elapsed()
    );
    renderer.kill();
    let at_kill = stored.load(Ordering::Relaxed);
    let _renderer = start_renderer_process(&renderer_addr, &out_dir, &data_dir, &[]);
    for sender in senders {
        sender.await.unwrap();
    }
    assert!(at_kill < REQUESTS, "the kill came after the last request");
    assert!(
        refused.load(Ordering::Relaxed) > 0,
        "no request met the renderer away; the kill proved nothing"
    );

    let total = (REQUESTS * EVENTS_PER_REQUEST) as u64;
    let clicks = (REQUESTS * clicks_per_request()) as u64;
    let from = base_ms - 1;
    let to = base_ms + EVENTS_PER_REQUEST as i64 + 1;
    let summary: Value = serde_json::from_slice(
        &http_get(
            &addr,
            &format!("/api/analytics/summary?from={from}&to={to}"),
        )
        .await
        .unwrap()
        .body,
    )
    .unwrap();
    assert_eq!(summary["totals"]["events"], total, "{}", summary["totals"]);
    assert_eq!(summary["totals"]["clicks"], clicks, "{}", summary["totals"]);
    assert_eq!(
        summary["totals"]["sessions"], REQUESTS,
        "{}",
        summary["totals"]
    );
    let grid: Value = serde_json::from_slice(
        &http_get(
            &addr,
            &format!(
                "/api/heatmaps?page=/kill&kind=click&width=desktop&format=json&from={from}&to={to}"
            ),
        )
        .await
        .unwrap()
        .body,
    )
    .unwrap();
    assert_eq!(grid["n_points"], clicks, "click heatmap counts");
}
