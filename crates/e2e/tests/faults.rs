//! Delivery across faults, through the real relay and renderer: a page that keeps its
//! unacknowledged batches and resends them after reconnecting ends with exactly the
//! points it sent, whatever restarted in between.

mod common;

use std::collections::BTreeMap;

use common::*;
use serde_json::json;
use testkit::WsClient;

const N_BATCHES: u64 = 40;
const POINTS_PER_BATCH: usize = 25;

/// A page as `web/app.js` behaves: numbered batches, kept until acknowledged.
struct ResendingPage {
    recording: &'static str,
    unacked: BTreeMap<u64, serde_json::Value>,
    n_points: u64,
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
        }
    }

    async fn send(&self, client: &mut WsClient, seqs: impl Iterator<Item = u64>) {
        for seq in seqs {
            if let Some(frame) = self.unacked.get(&seq) {
                client.send_json(frame.clone()).await;
            }
        }
    }

    async fn read_acks(&mut self, client: &mut WsClient, n: usize) {
        for _ in 0..n {
            let ack = client
                .wait_for("ack", |msg| {
                    msg["type"] == "ack" && msg["recording"] == self.recording
                })
                .await;
            self.unacked.remove(&ack["seq"].as_u64().unwrap());
            self.n_points = self.n_points.max(ack["n_points"].as_u64().unwrap());
        }
    }

    /// Resends everything unacknowledged and waits until all of it is acknowledged.
    async fn finish(&mut self, client: &mut WsClient) {
        let pending: Vec<u64> = self.unacked.keys().copied().collect();
        self.send(client, pending.iter().copied()).await;
        self.read_acks(client, pending.len()).await;
        assert!(self.unacked.is_empty());
    }

    fn expected() -> u64 {
        N_BATCHES * POINTS_PER_BATCH as u64
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
    assert_eq!(page_state.n_points, ResendingPage::expected());
    assert_eq!(
        generate_count(&mut client, "r-relay-restart").await,
        ResendingPage::expected()
    );
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

    let _renderer = stopped.restart().await;
    client
        .wait_for("link up", |msg| {
            msg["type"] == "link" && msg["renderer"] == "connected"
        })
        .await;
    page_state.finish(&mut client).await;
    assert_eq!(page_state.n_points, ResendingPage::expected());
    assert_eq!(
        generate_count(&mut client, "r-renderer-restart").await,
        ResendingPage::expected()
    );
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
    assert_eq!(page_state.n_points, ResendingPage::expected());
    assert_eq!(
        generate_count(&mut client, "r-page-drop").await,
        ResendingPage::expected()
    );
}
