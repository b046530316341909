//! A page always gets an answer to Generate, whatever fails while the image renders: the
//! renderer stopped (SIGTERM), the renderer killed (SIGKILL) and restarted, the relay
//! restarted. Renders are made slow with a large image, and "during" is seen on the
//! renderer's `renderer_renders_running` gauge, never guessed with a sleep.

mod common;

use common::process::{images, start_renderer_process};
use common::*;
use serde_json::{json, Value};
use testkit::{TempDir, WsClient};

const N_BATCHES: u64 = 10;
const POINTS_PER_BATCH: usize = 400;
/// Large enough that a render takes several hundred milliseconds, small enough for memory.
const SLOW_SIZE: (u32, u32) = (3200, 2400);

/// A renderer process whose renders are slow (a large image).
fn slow_renderer(listen: &str, out_dir: &TempDir, data_dir: &TempDir) -> testkit::ServerProcess {
    let (width, height) = (SLOW_SIZE.0.to_string(), SLOW_SIZE.1.to_string());
    start_renderer_process(
        listen,
        out_dir,
        data_dir,
        &["--width", &width, "--height", &height],
    )
}

/// Sends a whole recording and waits until every batch is acknowledged.
async fn record(client: &mut WsClient, recording: &str) -> PageFigures {
    for seq in 0..N_BATCHES {
        let points: Vec<(f32, f32)> = (0..POINTS_PER_BATCH)
            .map(|idx| {
                (
                    (seq as usize * 37 + idx * 3) as f32 % 800.0,
                    (idx % 600) as f32,
                )
            })
            .collect();
        client
            .send_json(batch(recording, seq, 800, 600, &points))
            .await;
    }
    for _ in 0..N_BATCHES {
        client
            .wait_for("ack", |msg| {
                msg["type"] == "ack" && msg["recording"] == recording
            })
            .await;
    }
    PageFigures {
        batches: N_BATCHES,
        points: expected_points(),
        frames_sent: N_BATCHES,
        acks: N_BATCHES,
    }
}

fn generate(recording: &str, request: u64) -> Value {
    json!({"type": "generate", "recording": recording, "request": request})
}

/// Waits until the renderer at `addr` is computing a render.
async fn render_under_way(addr: &str) {
    testkit::eventually("a render under way", || async {
        let running = metric(addr, "renderer_renders_running").await?;
        (running > 0.0).then_some(())
    })
    .await;
}

fn expected_points() -> u64 {
    N_BATCHES * POINTS_PER_BATCH as u64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_renderer_stopping_mid_render_sends_the_heatmap_before_it_closes() {
    let out_dir = TempDir::new("gen-term-out");
    let data_dir = TempDir::new("gen-term-data");
    let mut renderer = slow_renderer("127.0.0.1:0", &out_dir, &data_dir);
    let relay = start_relay(renderer.url()).await;
    let mut client = page(&relay, "connected").await;
    record(&mut client, "r-gen-term").await;

    client.send_json(generate("r-gen-term", 1)).await;
    render_under_way(&renderer.addr()).await;
    renderer.sigterm();

    // The answer comes first; only then does the link go down.
    let first = client
        .wait_for("the heatmap or the link going down", |msg| {
            msg["type"] == "heatmap" || msg["type"] == "error" || msg["type"] == "link"
        })
        .await;
    assert_eq!(first["type"], "heatmap", "{first}");
    assert_eq!(first["request"], 1);
    assert_eq!(first["n_points"], expected_points());
    let name = first["name"].as_str().unwrap();
    assert!(out_dir.path().join(name).is_file(), "{name} was written");
    client
        .wait_for("the link down after the answer", |msg| {
            msg["type"] == "link" && msg["renderer"] != "connected"
        })
        .await;
    let exit = renderer.exited().await;
    assert!(exit.success(), "exit status {exit}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_renderer_killed_mid_render_answers_once_it_is_back() {
    let out_dir = TempDir::new("gen-kill-out");
    let data_dir = TempDir::new("gen-kill-data");
    let renderer = slow_renderer("127.0.0.1:0", &out_dir, &data_dir);
    let listen = renderer.addr();
    let relay = start_relay_reconnecting_fast(renderer.url()).await;
    let mut client = page(&relay, "connected").await;
    let figures = record(&mut client, "r-gen-kill").await;

    client.send_json(generate("r-gen-kill", 1)).await;
    render_under_way(&renderer.addr()).await;
    renderer.kill();
    client
        .wait_for("the link down", |msg| {
            msg["type"] == "link" && msg["renderer"] != "connected"
        })
        .await;
    assert!(
        images(&out_dir).is_empty(),
        "killed before the file was written"
    );

    // Back on the same port and data: the relay replays the Generate; the page sends nothing.
    let renderer = slow_renderer(&listen, &out_dir, &data_dir);
    let answer = client
        .wait_for("the answer", |msg| {
            msg["type"] == "heatmap" || msg["type"] == "error"
        })
        .await;
    assert_eq!(answer["type"], "heatmap", "{answer}");
    assert_eq!(answer["request"], 1);
    assert_eq!(
        answer["n_points"],
        expected_points(),
        "every acknowledged point"
    );
    assert_eq!(images(&out_dir).len(), 1, "one click, one image");
    let store = report(
        "renderer SIGKILL mid-render",
        &figures,
        &renderer.addr(),
        answer["n_points"].as_u64().unwrap(),
    )
    .await;
    assert_eq!(store.points_held, expected_points());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_restarting_mid_render_answers_the_resent_generate_with_one_image() {
    let renderer = start_renderer_with(|config| {
        (config.width, config.height) = SLOW_SIZE;
    })
    .await;
    let relay = start_relay(&renderer.ws_url()).await;
    let relay_addr = relay.addr;
    let mut client = page(&relay, "connected").await;
    let figures = record(&mut client, "r-gen-relay").await;

    client.send_json(generate("r-gen-relay", 1)).await;
    render_under_way(&renderer.running.addr.to_string()).await;
    relay.stop().await;
    let _relay = restart_relay(relay_addr, &renderer.ws_url()).await;

    // As web/app.js does: reconnect, hello, and resend the Generate still unanswered.
    let mut client = page_at(relay_addr, "connected").await;
    client.send_json(generate("r-gen-relay", 1)).await;
    let answer = client
        .wait_for("the answer", |msg| {
            msg["type"] == "heatmap" || msg["type"] == "error"
        })
        .await;
    assert_eq!(answer["type"], "heatmap", "{answer}");
    assert_eq!(answer["request"], 1);
    assert_eq!(answer["n_points"], expected_points());
    let images = renderer.images();
    assert_eq!(
        images.len(),
        1,
        "the resend drew no second image: {images:?}"
    );
    assert!(images[0].ends_with(answer["name"].as_str().unwrap()));
    let store = report(
        "relay restart mid-render",
        &figures,
        &renderer.running.addr.to_string(),
        answer["n_points"].as_u64().unwrap(),
    )
    .await;
    assert_eq!(store.points_held, expected_points());
}
