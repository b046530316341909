//! Site analytics history through the real renderer and its SQLite store: totals and
//! heatmaps over a range count every stored event (not the live ring), a resent numbered
//! event counts once, and the retention prunes what is older.

mod common;

use common::*;
use serde_json::{json, Value};
use testkit::{eventually, http_get, http_request};
use tokio::net::TcpListener;

/// Posts a body to `/api/events` on the renderer; returns the status and the body.
async fn post_events(addr: &str, events: &[Value]) -> (u16, String) {
    let body = Value::Array(events.to_vec()).to_string();
    let json = [("content-type", "application/json")];
    let reply = http_request(addr, "POST", "/api/events", &json, &body).await;
    (reply.status, reply.body)
}

async fn get_json(addr: &str, path: &str) -> Value {
    let reply = http_get(addr, path).await.unwrap();
    assert_eq!(
        reply.status,
        200,
        "{path}: {}",
        String::from_utf8_lossy(&reply.body)
    );
    serde_json::from_slice(&reply.body).unwrap()
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// A numbered desktop click on `/h` at `at_ms`.
fn click(session: &str, seq: u64, at_ms: i64) -> Value {
    json!({"type": "click", "page": "/h", "sessionId": session, "seq": seq, "timestamp": at_ms,
           "metadata": {"x": 100 + (seq % 1000), "y": 300, "vw": 1440, "vh": 800, "dw": 1440, "dh": 2000}})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_counts_every_stored_event_not_the_live_ring() {
    let renderer = start_renderer_with(|config| config.max_events = 100).await;
    let addr = renderer.running.addr.to_string();
    let now = now_ms();
    let events: Vec<Value> = (0..1000)
        .map(|idx| click(&format!("v{}", idx % 50), idx, now - 60_000 - idx as i64))
        .collect();
    for chunk in events.chunks(500) {
        let (status, body) = post_events(&addr, chunk).await;
        assert_eq!(status, 202, "{body}");
    }

    let summary = get_json(&addr, "/api/analytics/summary?range=30d").await;
    assert_eq!(summary["totals"]["events"], 1000, "{summary}");
    assert_eq!(summary["totals"]["clicks"], 1000, "{summary}");
    assert_eq!(summary["totals"]["sessions"], 50, "{summary}");
    assert_eq!(
        summary["top_pages"][0],
        json!({"name": "/h", "events": 1000})
    );
    let live = get_json(&addr, "/api/analytics/summary").await;
    assert_eq!(
        live["events_last_5_minutes"], 100,
        "the live ring holds --max-events: {live}"
    );
    assert!(live.get("totals").is_none(), "{live}");

    for path in [
        "/api/heatmaps?page=/h&kind=click&width=desktop&format=json&range=30d",
        "/api/heatmaps?page=/h&kind=click&width=desktop&format=json",
    ] {
        let grid = get_json(&addr, path).await;
        assert_eq!(grid["n_points"], 1000, "{path}: {grid}");
        let total: u64 = grid["cells"]
            .as_array()
            .unwrap()
            .iter()
            .map(|cell| cell.as_u64().unwrap())
            .sum();
        assert_eq!(total, 1000, "{path}");
        assert_eq!(grid["image_height"], 2000, "{path}");
    }
    // The raw-event path (a pixel width) sees the same history.
    let clicks = get_json(
        &addr,
        "/api/heatmaps?page=/h&kind=click&width=1440&format=clicks",
    )
    .await;
    assert_eq!(clicks["clicks"].as_array().unwrap().len(), 1000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resent_numbered_event_is_counted_once() {
    let renderer = start_renderer().await;
    let addr = renderer.running.addr.to_string();
    let now = now_ms() - 1000;
    let first: Vec<Value> = (0..3)
        .map(|seq| click("r", seq, now + seq as i64))
        .collect();
    assert_eq!(post_events(&addr, &first).await.0, 202);
    // The snippet resends a request whose answer it lost, with one new event after it.
    let mut again = first.clone();
    again.push(click("r", 3, now + 3));
    let (status, body) = post_events(&addr, &again).await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(serde_json::from_str::<Value>(&body).unwrap()["accepted"], 4);

    let summary = get_json(&addr, "/api/analytics/summary?range=1h").await;
    assert_eq!(summary["totals"]["events"], 4, "{summary}");
    assert_eq!(summary["events_last_minute"], 4, "live, too: {summary}");
    let sessions = get_json(&addr, "/api/analytics/sessions").await;
    assert_eq!(sessions[0]["events"], 4, "{sessions}");
    let grid = get_json(
        &addr,
        "/api/heatmaps?page=/h&kind=click&width=desktop&format=json",
    )
    .await;
    assert_eq!(grid["n_points"], 4);
    let metrics = http_get(&addr, "/metrics").await.unwrap();
    let metrics = String::from_utf8_lossy(&metrics.body);
    assert!(
        metrics.contains("renderer_events_duplicate_total 3"),
        "{metrics}"
    );
    assert!(metrics.contains("renderer_store_commit_seconds_count 2"));
    assert!(metrics.contains("renderer_store_bytes "));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_older_than_the_retention_are_pruned() {
    let renderer = start_renderer().await;
    let addr = renderer.running.addr.to_string();
    let now = now_ms();
    let day = 86_400_000;
    let events = [
        click("old", 0, now - 3 * day),
        click("old", 1, now - 2 * day - 3_600_000),
        click("new", 0, now - 60_000),
    ];
    assert_eq!(post_events(&addr, &events).await.0, 202);
    let summary = get_json(&addr, "/api/analytics/summary?range=30d").await;
    assert_eq!(summary["totals"]["events"], 3, "{summary}");

    // The same data folder under a renderer keeping one day: the prune at start removes
    // the old events, and only them.
    let Renderer {
        running,
        out_dir,
        data_dir,
    } = renderer;
    running.stop().await;
    let mut config = renderer_config(&out_dir, &data_dir);
    config.retention_days = 1;
    let listener = TcpListener::bind(config.listen).await.unwrap();
    let running = spawn_renderer_on(listener, config);
    let addr = running.addr.to_string();
    eventually("the old events to be pruned", || {
        let addr = addr.clone();
        async move {
            let summary = get_json(&addr, "/api/analytics/summary?range=30d").await;
            (summary["totals"]["events"] == 1).then_some(summary)
        }
    })
    .await;
    let grid = get_json(
        &addr,
        "/api/heatmaps?page=/h&kind=click&width=desktop&format=json&range=30d",
    )
    .await;
    assert_eq!(grid["n_points"], 1, "{grid}");
    let sessions = get_json(&addr, "/api/analytics/sessions").await;
    assert_eq!(sessions[0]["sessionId"], "new", "{sessions}");
    running.stop().await;
}
