//! Delivery across faults, through the real relay and renderer: a page that keeps its
//! unacknowledged batches and resends them after reconnecting ends with exactly the
//! points it sent, whatever restarted in between.
//!
//! With `generate_faults.rs` and `crates/renderer/tests/crash.rs` this is the kill matrix:
//! relay restart, renderer restart, page link drop, renderer SIGKILL and relay stop at the
//! same moment, and the relay restarted while the renderer is down. Each fault comes after
//! a known number of acknowledgements, and each test prints its figures (`--nocapture`).

mod common;

use std::collections::BTreeMap;

use common::process::start_renderer_process;
use common::*;
use serde_json::json;
use testkit::{TempDir, WsClient};

const N_BATCHES: u64 = 40;
const POINTS_PER_BATCH: usize = 25;

/// A page as `web/app.js` behaves: numbered batches, kept until acknowledged, resent
/// after every reconnect; it counts what it sent and what came back.
struct ResendingPage {
    recording: &'static str,
    unacked: BTreeMap<u64, serde_json::Value>,
    /// The recording's point total in the latest acknowledgement.
    n_points: u64,
    figures: PageFigures,
}

impl ResendingPage {
    fn new(recording: &'static str) -> Self {
        let unacked = (0..N_BATCHES)
            .map(|seq| {
                let points: Vec<(f32, f32)> = (0..POINTS_PER_BATCH)
                    .map(|idx| ((seq as usize * 11 + idx) as f32 % 800.0, idx as f32 * 3.0))
                    .collect();
                (seq, batch(recording, seq, 800, 600, &points))
            })
            .collect();
        ResendingPage {
            recording,
            unacked,
            n_points: 0,
            figures: PageFigures {
                batches: N_BATCHES,
                points: Self::expected(),
                ..PageFigures::default()
            },
        }
    }

    async fn send(&mut self, client: &mut WsClient, seqs: impl Iterator<Item = u64>) {
        for seq in seqs {
            if let Some(frame) = self.unacked.get(&seq) {
                client.send_json(frame.clone()).await;
                self.figures.frames_sent += 1;
            }
        }
    }

    /// Sends every batch not yet acknowledged, as the page does after reconnecting, and
    /// returns how many.
    async fn resend_unacked(&mut self, client: &mut WsClient) -> usize {
        let pending: Vec<u64> = self.unacked.keys().copied().collect();
        self.send(client, pending.iter().copied()).await;
        pending.len()
    }

    async fn read_ack(&mut self, client: &mut WsClient) {
        let ack = client
            .wait_for("ack", |msg| {
                msg["type"] == "ack" && msg["recording"] == self.recording
            })
            .await;
        self.figures.acks += 1;
        self.unacked.remove(&ack["seq"].as_u64().unwrap());
        self.n_points = self.n_points.max(ack["n_points"].as_u64().unwrap());
    }

    async fn read_acks(&mut self, client: &mut WsClient, n: usize) {
        for _ in 0..n {
            self.read_ack(client).await;
        }
    }

    /// Reads acknowledgements until every batch has one; a batch acknowledged twice (the
    /// relay's replay and the page's resend) counts once.
    async fn read_until_acked(&mut self, client: &mut WsClient) {
        while !self.unacked.is_empty() {
            self.read_ack(client).await;
        }
    }

    /// Resends everything unacknowledged and waits until all of it is acknowledged.
    async fn finish(&mut self, client: &mut WsClient) {
        self.resend_unacked(client).await;
        self.read_until_acked(client).await;
    }

    fn expected() -> u64 {
        N_BATCHES * POINTS_PER_BATCH as u64
    }

    /// The end of every case: the page's acknowledged total, the heatmap's count and the
    /// renderer's stored points are all exactly the points sent (each batch once), and the
    /// case's figures are printed.
    async fn assert_exact(&self, client: &mut WsClient, case: &str, renderer_addr: &str) {
        assert_eq!(self.n_points, Self::expected(), "{case}: acknowledged");
        let generated = generate_count(client, self.recording).await;
        assert_eq!(generated, Self::expected(), "{case}: each batch once");
        let store = report(case, &self.figures, renderer_addr, generated).await;
        assert_eq!(store.points_held, Self::expected(), "{case}: stored");
    }
}

async fn generate_count(client: &mut WsClient, recording: &str) -> u64 {
    client
        .send_json(json!({"type": "generate", "recording": recording}))
        .await;
    let heatmap = client
        .wait_for("heatmap", |msg| msg["type"] == "heatmap")
        .await;
    heatmap["n_points"].as_u64().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_relay_restarting_mid_recording_loses_nothing() {
    let renderer = start_renderer().await;
    let relay = start_relay(&renderer.ws_url()).await;
    let relay_addr = relay.addr;
    let mut page_state = ResendingPage::new("r-relay-restart");
    let mut client = page(&relay, "connected").await;
    page_state.send(&mut client, 0..N_BATCHES / 2).await;
    page_state.read_acks(&mut client, 5).await;

    relay.stop().await;
    let _relay = restart_relay(relay_addr, &renderer.ws_url()).await;
    let mut client = page_at(relay_addr, "connected").await;
    page_state.finish(&mut client).await;
    page_state
        .assert_exact(
            &mut client,
            "relay restart",
            &renderer.running.addr.to_string(),
        )
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_renderer_restarting_mid_recording_loses_nothing() {
    let renderer = start_renderer().await;
    let relay = start_relay_reconnecting_fast(&renderer.ws_url()).await;
    let mut page_state = ResendingPage::new("r-renderer-restart");
    let mut client = page(&relay, "connected").await;
    page_state.send(&mut client, 0..N_BATCHES / 2).await;
    page_state.read_acks(&mut client, 5).await;

    let stopped = renderer.stop().await;
    client
        .wait_for("link down", |msg| {
            msg["type"] == "link" && msg["renderer"] != "connected"
        })
        .await;
    // The second half goes out while the renderer is away: the relay holds it.
    page_state.send(&mut client, N_BATCHES / 2..N_BATCHES).await;

    let renderer = stopped.restart().await;
    client
        .wait_for("link up", |msg| {
            msg["type"] == "link" && msg["renderer"] == "connected"
        })
        .await;
    page_state.finish(&mut client).await;
    page_state
        .assert_exact(
            &mut client,
            "renderer restart (in-process stop)",
            &renderer.running.addr.to_string(),
        )
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_link_dropping_mid_recording_loses_nothing() {
    let renderer = start_renderer().await;
    let relay = start_relay(&renderer.ws_url()).await;
    let mut page_state = ResendingPage::new("r-page-drop");
    let mut client = page(&relay, "connected").await;
    page_state.send(&mut client, 0..N_BATCHES / 2).await;
    page_state.read_acks(&mut client, 3).await;
    // The page's connection drops with acks still on their way.
    drop(client);

    let mut client = page(&relay, "connected").await;
    page_state.send(&mut client, N_BATCHES / 2..N_BATCHES).await;
    page_state.finish(&mut client).await;
    page_state
        .assert_exact(
            &mut client,
            "page link drop",
            &renderer.running.addr.to_string(),
        )
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_renderer_and_the_relay_killed_together_mid_recording_lose_nothing() {
    let out_dir = TempDir::new("both-down-out");
    let data_dir = TempDir::new("both-down-data");
    let renderer = start_renderer_process("127.0.0.1:0", &out_dir, &data_dir, &[]);
    let (renderer_addr, renderer_url) = (renderer.addr(), renderer.url().to_owned());
    let relay = start_relay_reconnecting_fast(&renderer_url).await;
    let relay_addr = relay.addr;
    let mut page_state = ResendingPage::new("r-both-down");
    let mut client = page(&relay, "connected").await;
    page_state.send(&mut client, 0..N_BATCHES / 2).await;
    page_state.read_acks(&mut client, 5).await;

    // Ten more batches go out and both tiers go at the same moment, with batches and acks in
    // flight on both hops: the relay is told to stop and in the same instant the renderer
    // gets SIGKILL (no shutdown path, nothing flushed or answered).
    page_state
        .send(&mut client, N_BATCHES / 2..3 * N_BATCHES / 4)
        .await;
    tokio::join!(relay.stop(), async { renderer.kill() });
    drop(client);

    // Both come back where they were, the renderer on its old data; the page reconnects and
    // resends everything unacknowledged, then the last quarter it never sent.
    let renderer = start_renderer_process(&renderer_addr, &out_dir, &data_dir, &[]);
    let _relay = restart_relay_with(relay_addr, &renderer_url, reconnect_fast).await;
    let mut client = page_at(relay_addr, "connected").await;
    page_state.finish(&mut client).await;
    page_state
        .assert_exact(
            &mut client,
            "renderer SIGKILL + relay stop together",
            &renderer.addr(),
        )
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_relay_restarting_while_the_renderer_is_down_loses_nothing() {
    let out_dir = TempDir::new("relay-while-down-out");
    let data_dir = TempDir::new("relay-while-down-data");
    let renderer = start_renderer_process("127.0.0.1:0", &out_dir, &data_dir, &[]);
    let (renderer_addr, renderer_url) = (renderer.addr(), renderer.url().to_owned());
    let relay = start_relay_reconnecting_fast(&renderer_url).await;
    let relay_addr = relay.addr;
    let mut page_state = ResendingPage::new("r-relay-while-down");
    let mut client = page(&relay, "connected").await;
    page_state.send(&mut client, 0..N_BATCHES / 2).await;
    page_state.read_acks(&mut client, 5).await;

    renderer.kill();
    client
        .wait_for("link down", |msg| {
            msg["type"] == "link" && msg["renderer"] != "connected"
        })
        .await;
    // The third quarter goes into the first relay's backlog, which its restart throws away.
    page_state
        .send(&mut client, N_BATCHES / 2..3 * N_BATCHES / 4)
        .await;
    relay.stop().await;
    drop(client);

    // A new relay, the renderer still down: the page reconnects and resends everything
    // unacknowledged, then the last quarter, all into the new relay's backlog.
    let relay = restart_relay_with(relay_addr, &renderer_url, reconnect_fast).await;
    let (mut client, welcome) = reconnect_page(relay.addr).await;
    assert_ne!(welcome["renderer"], "connected", "{welcome}");
    let n_pending = page_state.resend_unacked(&mut client).await;
    let relay_metrics = relay_addr.to_string();
    testkit::eventually("every pending batch in the new relay's backlog", || async {
        let depth = metric(&relay_metrics, "relay_backlog_depth").await?;
        (depth as usize == n_pending).then_some(())
    })
    .await;

    let renderer = start_renderer_process(&renderer_addr, &out_dir, &data_dir, &[]);
    page_state.read_until_acked(&mut client).await;
    page_state
        .assert_exact(
            &mut client,
            "relay restart while the renderer is down (SIGKILL)",
            &renderer.addr(),
        )
        .await;
}
