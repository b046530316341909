//! The renderer binary killed with SIGKILL in the middle of a recording, then restarted on
//! the same data folder: every acknowledged point is still there, resent batches are not
//! counted twice, and the heatmap counts exactly the points sent.

use std::collections::BTreeMap;
use std::process::Command;

use serde_json::{json, Value};
use testkit::{batch_frame, link_as_relay, ServerProcess, TempDir, WsClient};

const N_BATCHES: u64 = 60;
const POINTS_PER_BATCH: u64 = 50;

/// The real binary on fresh folders, killed on drop.
fn start_renderer(out_dir: &TempDir, data_dir: &TempDir) -> ServerProcess {
    let mut command = Command::new(env!("CARGO_BIN_EXE_renderer"));
    command
        .args(["--listen", "127.0.0.1:0", "--out-dir"])
        .arg(out_dir.path())
        .arg("--data-dir")
        .arg(data_dir.path());
    ServerProcess::start(command)
}

fn batch(seq: u64) -> String {
    batch_frame("r-crash", seq, POINTS_PER_BATCH)
}

/// Reads replies until `want` acks arrived, removing acknowledged batches from `unacked`.
async fn collect_acks(
    link: &mut WsClient,
    unacked: &mut BTreeMap<u64, String>,
    want: usize,
) -> u64 {
    let mut n_points = 0;
    for _ in 0..want {
        let reply = link.next_json().await.expect("a reply");
        let msg = &reply["msg"];
        assert_eq!(msg["type"], "ack", "{reply}");
        unacked.remove(&msg["seq"].as_u64().unwrap());
        n_points = n_points.max(msg["n_points"].as_u64().unwrap());
    }
    n_points
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn points_survive_sigkill_and_are_counted_once() {
    let out_dir = TempDir::new("crash-out");
    let data_dir = TempDir::new("crash-data");
    let mut unacked: BTreeMap<u64, String> = (0..N_BATCHES).map(|seq| (seq, batch(seq))).collect();

    // First half: send 30 batches, read 20 acks, kill the renderer with the rest in flight.
    let renderer = start_renderer(&out_dir, &data_dir);
    let mut first = link_as_relay(renderer.url()).await;
    for seq in 0..N_BATCHES / 2 {
        first.send_text(unacked[&seq].clone()).await;
    }
    collect_acks(&mut first, &mut unacked, 20).await;
    renderer.kill();
    assert!(
        unacked.len() >= 30,
        "the second half and some of the first are unacknowledged"
    );

    // Restart on the same data: resend everything unacknowledged, plus two batches that were
    // acknowledged already (a page whose ack got lost does exactly that).
    let renderer = start_renderer(&out_dir, &data_dir);
    let mut second = link_as_relay(renderer.url()).await;
    let resend: Vec<String> = [batch(0), batch(5)]
        .into_iter()
        .chain(unacked.values().cloned())
        .collect();
    for frame in &resend {
        second.send_text(frame.clone()).await;
    }
    let n_points = collect_acks(&mut second, &mut unacked, resend.len()).await;
    assert!(unacked.is_empty());
    let expected = N_BATCHES * POINTS_PER_BATCH;
    assert_eq!(
        n_points, expected,
        "exactly the points sent, none twice, none lost"
    );

    second
        .send_json(
            json!({"type": "page", "conn": 1, "msg": {"type": "generate", "recording": "r-crash"}}),
        )
        .await;
    let reply = second.next_json().await.unwrap();
    assert_eq!(reply["msg"]["type"], "heatmap", "{reply}");
    assert_eq!(reply["msg"]["n_points"], expected);
    drop(renderer);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_torn_log_tail_does_not_stop_the_renderer() {
    let out_dir = TempDir::new("torn-out");
    let data_dir = TempDir::new("torn-data");
    let renderer = start_renderer(&out_dir, &data_dir);
    let mut first = link_as_relay(renderer.url()).await;
    let mut unacked: BTreeMap<u64, String> = (0..3).map(|seq| (seq, batch(seq))).collect();
    for frame in unacked.clone().values() {
        first.send_text(frame.clone()).await;
    }
    collect_acks(&mut first, &mut unacked, 3).await;
    renderer.kill();

    // Simulate a crash in the middle of a write: half a record at the end of the log.
    let log = data_dir.path().join("recordings/r-crash.log");
    let mut bytes = std::fs::read(&log).unwrap();
    bytes.extend_from_slice(&[200, 0, 0, 0, 1, 2, 3]);
    std::fs::write(&log, bytes).unwrap();

    let renderer = start_renderer(&out_dir, &data_dir);
    let addr = renderer.addr();
    let health = testkit::http_get(&addr, "/healthz").await.unwrap();
    let health: Value = serde_json::from_slice(&health.body).unwrap();
    assert_eq!(health["points"], 3 * POINTS_PER_BATCH, "{health}");
    drop(renderer);
}

/// Once the address line is printed, SIGTERM is graceful: the handlers are installed
/// before the line, so a signal sent the moment it is read ends in exit 0, never in
/// death by the signal's default action.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_right_after_the_address_line_exits_0() {
    for attempt in 0..5 {
        let out_dir = TempDir::new("term-early-out");
        let data_dir = TempDir::new("term-early-data");
        let mut renderer = start_renderer(&out_dir, &data_dir);
        renderer.sigterm();
        let exit = renderer.exited().await;
        assert!(exit.success(), "attempt {attempt}: exit status {exit}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_closes_links_with_1001_and_exits_0() {
    let out_dir = TempDir::new("term-out");
    let data_dir = TempDir::new("term-data");
    let mut renderer = start_renderer(&out_dir, &data_dir);
    let mut first = link_as_relay(renderer.url()).await;
    renderer.sigterm();
    assert_eq!(first.close_code().await, Some(1001));
    let exit = renderer.exited().await;
    assert!(exit.success(), "exit status {exit}");
}
