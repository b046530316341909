//! The renderer binary with `--store postgres://…` (built with the `cluster` feature)
//! against a PostgreSQL server the test starts: events posted to it are stored in the
//! database, read back as totals and heatmaps, and still there after the renderer is
//! SIGKILLed and a new one (with an empty `--data-dir`) starts on the same database.

mod common;

use common::process::start_renderer_process;
use serde_json::{json, Value};
use testkit::postgres::{Postgres, PostgresOptions};
use testkit::{http_get, http_request, TempDir};

const REQUESTS: usize = 20;
const EVENTS_PER_REQUEST: usize = 100;

/// Request `index`'s body: its own session, events numbered 0.., every other one a click
/// on `/shared` with a desktop position, the rest page views.
fn body(index: usize, base_ms: i64) -> String {
    let events: Vec<Value> = (0..EVENTS_PER_REQUEST)
        .map(|seq| {
            let kind = if seq % 2 == 0 { "click" } else { "pageview" };
            json!({"type": kind, "page": "/shared", "sessionId": format!("pg-{index}"),
                   "seq": seq, "timestamp": base_ms + (index * EVENTS_PER_REQUEST + seq) as i64,
                   "metadata": {"x": (seq * 13 % 1400) as f64, "y": (index * 37 % 800) as f64,
                                "vw": 1440, "vh": 900, "dw": 1440, "dh": 900}})
        })
        .collect();
    Value::Array(events).to_string()
}

/// Totals events, clicks and sessions, and the click heatmap's points, over `[from, to)`.
async fn read_back(addr: &str, from: i64, to: i64) -> (Value, Value, Value, Value) {
    let summary: Value = serde_json::from_slice(
        &http_get(addr, &format!("/api/analytics/summary?from={from}&to={to}"))
            .await
            .expect("summary")
            .body,
    )
    .expect("summary json");
    let grid: Value = serde_json::from_slice(
        &http_get(
            addr,
            &format!(
                "/api/heatmaps?page=/shared&kind=click&width=desktop&format=json&from={from}&to={to}"
            ),
        )
        .await
        .expect("heatmap")
        .body,
    )
    .expect("heatmap json");
    let totals = &summary["totals"];
    (
        totals["events"].clone(),
        totals["clicks"].clone(),
        totals["sessions"].clone(),
        grid["n_points"].clone(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_in_postgres_survive_a_sigkill_and_serve_a_new_renderer() {
    // fsync on: this test is about what a crash keeps.
    let server = Postgres::start_with(PostgresOptions { fsync: true })
        .unwrap_or_else(|err| panic!("cannot start a postgresql server for this test: {err:#}"));
    let url = server.url();
    let out_dir = TempDir::new("pg-out");
    let data_dir = TempDir::new("pg-data");
    let renderer = start_renderer_process("127.0.0.1:0", &out_dir, &data_dir, &["--store", &url]);
    let addr = renderer.addr();
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970")
        .as_millis() as i64;
    // Two hours ago, inside the retention and away from the live hour.
    let base_ms = now_ms - 2 * 3_600_000;
    for index in 0..REQUESTS {
        let reply = http_request(&addr, "POST", "/api/events", &[], &body(index, base_ms)).await;
        assert_eq!(reply.status, 202, "request {index}: {}", reply.body);
    }
    let total = (REQUESTS * EVENTS_PER_REQUEST) as u64;
    let clicks = total / 2;
    let (from, to) = (base_ms - 1, base_ms + total as i64 + 1);
    let expected = (json!(total), json!(clicks), json!(REQUESTS), json!(clicks));
    assert_eq!(
        read_back(&addr, from, to).await,
        expected,
        "before the kill"
    );
    assert!(
        !data_dir.path().join("analytics.sqlite").exists(),
        "with --store the events go to postgresql, not the local file"
    );

    renderer.kill();
    // A new renderer, a new empty data folder: everything it answers comes from the
    // database.
    let fresh_data = TempDir::new("pg-data-2");
    let renderer = start_renderer_process("127.0.0.1:0", &out_dir, &fresh_data, &["--store", &url]);
    let addr = renderer.addr();
    assert_eq!(read_back(&addr, from, to).await, expected, "after the kill");
    // Resends (as the snippet does after a lost answer) are duplicates.
    for index in 0..REQUESTS {
        let reply = http_request(&addr, "POST", "/api/events", &[], &body(index, base_ms)).await;
        assert_eq!(reply.status, 202, "resend {index}: {}", reply.body);
    }
    assert_eq!(read_back(&addr, from, to).await, expected, "after resends");
    let stored = server
        .psql("heatmap", "SELECT COUNT(*) FROM events")
        .expect("count in the database");
    assert_eq!(stored, total.to_string());
}

/// A renderer pointed at a database that is not there fails at start, naming the store.
#[test]
fn a_renderer_whose_database_is_unreachable_fails_at_start_naming_it() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port();
    let data_dir = TempDir::new("pg-unreachable");
    let url = format!("postgres://heatmap:secret@127.0.0.1:{port}/heatmap?connect_timeout=2");
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_renderer-process"))
        .args(["--listen", "127.0.0.1:0", "--store", &url, "--data-dir"])
        .arg(data_dir.path())
        .output()
        .expect("run the renderer");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("cannot open the event store"), "{stderr}");
    assert!(stderr.contains(&format!("127.0.0.1:{port}")), "{stderr}");
    assert!(
        !stderr.contains("secret"),
        "the password stays out: {stderr}"
    );
}
