//! The renderer binary killed with SIGKILL in the middle of a recording, then restarted on
//! the same data folder: every acknowledged point is still there, resent batches are not
//! counted twice, and the heatmap counts exactly the points sent.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

use serde_json::{json, Value};
use testkit::{TempDir, WsClient};

const N_BATCHES: u64 = 60;
const POINTS_PER_BATCH: usize = 50;

/// The real binary, killed on drop.
struct RendererProcess {
    child: Child,
    url: String,
}

impl RendererProcess {
    fn start(out_dir: &TempDir, data_dir: &TempDir) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_renderer"))
            .args(["--listen", "127.0.0.1:0", "--out-dir"])
            .arg(out_dir.path())
            .arg("--data-dir")
            .arg(data_dir.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start the renderer binary");
        let stdout = child.stdout.take().expect("piped stdout");
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("read the address line");
        assert!(
            line.starts_with("ws://"),
            "first line is the address: {line:?}"
        );
        RendererProcess {
            child,
            url: line.trim().to_owned(),
        }
    }

    fn kill(mut self) {
        // std's kill is SIGKILL: no shutdown path runs.
        self.child.kill().expect("SIGKILL the renderer");
        self.child.wait().expect("reap the renderer");
    }
}

impl Drop for RendererProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn batch_frame(seq: u64) -> String {
    let points: Vec<Value> = (0..POINTS_PER_BATCH)
        .map(|idx| {
            json!([
                (seq as usize * 7 + idx) % 1920,
                (idx * 13) % 1080,
                idx,
                "move"
            ])
        })
        .collect();
    json!({"type": "page", "conn": 1, "msg": {
        "type": "points", "recording": "r-crash", "seq": seq,
        "viewport": {"width": 1920, "height": 1080}, "points": points
    }})
    .to_string()
}

async fn link(url: &str) -> WsClient {
    let mut link = WsClient::connect(url)
        .await
        .expect("connect to the renderer");
    link.send_json(json!({"type": "hello", "v": 1})).await;
    assert_eq!(link.next_json().await.unwrap()["type"], "welcome");
    link
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
    let mut unacked: BTreeMap<u64, String> =
        (0..N_BATCHES).map(|seq| (seq, batch_frame(seq))).collect();

    // First half: send 30 batches, read 20 acks, kill the renderer with the rest in flight.
    let renderer = RendererProcess::start(&out_dir, &data_dir);
    let mut first = link(&renderer.url).await;
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
    let renderer = RendererProcess::start(&out_dir, &data_dir);
    let mut second = link(&renderer.url).await;
    let resend: Vec<String> = [batch_frame(0), batch_frame(5)]
        .into_iter()
        .chain(unacked.values().cloned())
        .collect();
    for frame in &resend {
        second.send_text(frame.clone()).await;
    }
    let n_points = collect_acks(&mut second, &mut unacked, resend.len()).await;
    assert!(unacked.is_empty());
    let expected = N_BATCHES * POINTS_PER_BATCH as u64;
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
    let renderer = RendererProcess::start(&out_dir, &data_dir);
    let mut first = link(&renderer.url).await;
    let mut unacked: BTreeMap<u64, String> = (0..3).map(|seq| (seq, batch_frame(seq))).collect();
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

    let renderer = RendererProcess::start(&out_dir, &data_dir);
    let addr = renderer.url.trim_start_matches("ws://").to_owned();
    let health = testkit::http_get(&addr, "/healthz").await.unwrap();
    let health: Value = serde_json::from_slice(&health.body).unwrap();
    assert_eq!(health["points"], 3 * POINTS_PER_BATCH as u64, "{health}");
    drop(renderer);
}

/// Sends SIGTERM to the child.
fn sigterm(child: &Child) {
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("run kill");
    assert!(status.success());
}

/// Once the address line is printed, SIGTERM is graceful: the handlers are installed
/// before the line, so a signal sent the moment it is read ends in exit 0, never in
/// death by the signal's default action.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_right_after_the_address_line_exits_0() {
    for attempt in 0..5 {
        let out_dir = TempDir::new("term-early-out");
        let data_dir = TempDir::new("term-early-data");
        let mut renderer = RendererProcess::start(&out_dir, &data_dir);
        sigterm(&renderer.child);
        let exit = testkit::eventually("the renderer to exit", || {
            let exited = renderer.child.try_wait().expect("poll the child");
            async move { exited }
        })
        .await;
        assert!(exit.success(), "attempt {attempt}: exit status {exit}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_closes_links_with_1001_and_exits_0() {
    let out_dir = TempDir::new("term-out");
    let data_dir = TempDir::new("term-data");
    let mut renderer = RendererProcess::start(&out_dir, &data_dir);
    let mut first = link(&renderer.url).await;
    sigterm(&renderer.child);
    assert_eq!(first.close_code().await, Some(1001));
    let exit = testkit::eventually("the renderer to exit", || {
        let exited = renderer.child.try_wait().expect("poll the child");
        async move { exited }
    })
    .await;
    assert!(exit.success(), "exit status {exit}");
}
