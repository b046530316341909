//! The relay and the renderer together over real sockets: record, generate, fetch, and
//! the link state across a renderer restart.

mod common;

use common::*;
use protocol::ServerMessage;
use serde_json::json;
use testkit::{http_get, Image};

/// Records `points`, generates, and returns the heatmap message.
async fn record_and_generate(
    page: &mut testkit::WsClient,
    recording: &str,
    points: &[(f32, f32)],
) -> serde_json::Value {
    page.send_json(json!({"type": "start", "recording": recording, "viewport": {"width": 1920, "height": 1080}}))
        .await;
    page.wait_for("started", |msg| {
        msg["type"] == "started" && msg["recording"] == recording
    })
    .await;
    for (seq, chunk) in points.chunks(100).enumerate() {
        page.send_json(batch(recording, seq as u64, 1920, 1080, chunk))
            .await;
        page.wait_for("ack", |msg| {
            msg["type"] == "ack" && msg["seq"] == seq as u64
        })
        .await;
    }
    page.send_json(json!({"type": "stop", "recording": recording}))
        .await;
    let stopped = page
        .wait_for("stopped", |msg| msg["type"] == "stopped")
        .await;
    assert_eq!(stopped["n_points"], points.len() as u64);
    page.send_json(json!({"type": "generate", "recording": recording}))
        .await;
    page.wait_for("heatmap", |msg| {
        msg["type"] == "heatmap" || msg["type"] == "error"
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn record_generate_and_fetch_the_png() {
    let renderer = start_renderer().await;
    let relay = start_relay(&renderer.ws_url()).await;
    let mut page = page(&relay, "connected").await;

    let points = cluster(1500.0, 300.0, 400);
    let heatmap = record_and_generate(&mut page, "r-pipeline", &points).await;
    assert_eq!(heatmap["type"], "heatmap", "{heatmap}");
    let name = heatmap["name"].as_str().unwrap().to_owned();
    assert!(protocol::names::is_heatmap_name(&name), "{name}");
    assert_eq!(heatmap["n_points"], 400);

    // The file is in the renderer's output folder…
    let images = renderer.images();
    assert_eq!(images.len(), 1, "{images:?}");
    assert!(images[0].ends_with(&name));

    // …and reaches the page through the relay.
    let response = http_get(&relay.addr.to_string(), &format!("/heatmaps/{name}"))
        .await
        .unwrap();
    assert_eq!(response.status, 200);
    assert_eq!(response.content_type.as_deref(), Some("image/png"));
    assert_eq!(
        response.body.as_ref(),
        std::fs::read(&images[0]).unwrap().as_slice()
    );

    let image = Image::decode(&response.body).unwrap();
    assert_eq!((image.width, image.height), (1920, 1080));
    assert!(
        image.heat(1500, 300) > 200,
        "the cluster is hot: {:?}",
        image.rgb(1500, 300)
    );
    assert_eq!(
        image.heat(300, 300),
        0,
        "far from the cluster is background"
    );
    assert_eq!(
        image.heat(1500, 900),
        0,
        "far from the cluster is background"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_generate_in_the_same_second_gets_a_suffix() {
    let renderer = start_renderer().await;
    let relay = start_relay(&renderer.ws_url()).await;
    let mut page = page(&relay, "connected").await;
    let first = record_and_generate(&mut page, "r-twice", &cluster(100.0, 100.0, 50)).await;
    page.send_json(json!({"type": "generate", "recording": "r-twice"}))
        .await;
    let second = page
        .wait_for("heatmap", |msg| msg["type"] == "heatmap")
        .await;
    assert_ne!(first["name"], second["name"]);
    assert_eq!(renderer.images().len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_pages_recording_at_once_do_not_mix() {
    let renderer = start_renderer().await;
    let relay = start_relay(&renderer.ws_url()).await;
    let mut left = page(&relay, "connected").await;
    let mut right = page(&relay, "connected").await;

    // Interleave the two pages' traffic so the renderer sees them mixed on one link.
    for (client, id) in [(&mut left, "r-left"), (&mut right, "r-right")] {
        client
            .send_json(json!({"type": "start", "recording": id, "viewport": {"width": 800, "height": 600}}))
            .await;
    }
    for seq in 0..5u64 {
        left.send_json(batch("r-left", seq, 800, 600, &cluster(100.0, 300.0, 50)))
            .await;
        right
            .send_json(batch("r-right", seq, 800, 600, &cluster(700.0, 300.0, 50)))
            .await;
    }
    for (client, id) in [(&mut left, "r-left"), (&mut right, "r-right")] {
        client
            .wait_for("last ack", |msg| {
                msg["type"] == "ack" && msg["seq"] == 4 && msg["recording"] == id
            })
            .await;
        client
            .send_json(json!({"type": "generate", "recording": id}))
            .await;
    }
    let left_map = left
        .wait_for("left heatmap", |msg| msg["type"] == "heatmap")
        .await;
    let right_map = right
        .wait_for("right heatmap", |msg| msg["type"] == "heatmap")
        .await;
    assert_eq!(left_map["recording"], "r-left");
    assert_eq!(right_map["recording"], "r-right");
    assert_eq!(left_map["n_points"], 250);
    assert_eq!(right_map["n_points"], 250);

    let fetch = |name: &serde_json::Value| {
        let path = renderer.out_dir.path().join(name.as_str().unwrap());
        Image::decode(&std::fs::read(path).unwrap()).unwrap()
    };
    // 800x600 maps onto 1920x1080 in proportion: x 100 → 240, x 700 → 1680, y 300 → 540.
    let left_image = fetch(&left_map["name"]);
    let right_image = fetch(&right_map["name"]);
    assert!(left_image.heat(240, 540) > 200);
    assert_eq!(
        left_image.heat(1680, 540),
        0,
        "the right page's points are not in the left page's map"
    );
    assert!(right_image.heat(1680, 540) > 200);
    assert_eq!(
        right_image.heat(240, 540),
        0,
        "the left page's points are not in the right page's map"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resent_batches_are_counted_once() {
    let renderer = start_renderer().await;
    let relay = start_relay(&renderer.ws_url()).await;
    let mut page = page(&relay, "connected").await;
    let points = cluster(500.0, 500.0, 30);
    for _ in 0..3 {
        page.send_json(batch("r-dup", 0, 1920, 1080, &points)).await;
        let ack = page.wait_for_type("ack").await;
        assert!(
            matches!(
                ack,
                ServerMessage::Ack {
                    seq: 0,
                    n_points: 30,
                    ..
                }
            ),
            "{ack:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generate_without_points_is_a_clear_error() {
    let renderer = start_renderer().await;
    let relay = start_relay(&renderer.ws_url()).await;
    let mut page = page(&relay, "connected").await;
    page.send_json(
        json!({"type": "start", "recording": "r-empty", "viewport": {"width": 100, "height": 100}}),
    )
    .await;
    page.send_json(json!({"type": "generate", "recording": "r-empty"}))
        .await;
    let error = page.wait_for("error", |msg| msg["type"] == "error").await;
    assert_eq!(error["code"], "no_points");
    assert!(
        error["message"].as_str().unwrap().contains("no points"),
        "{error}"
    );
    page.send_json(json!({"type": "generate", "recording": "r-never-started"}))
        .await;
    let error = page.wait_for("error", |msg| msg["type"] == "error").await;
    assert_eq!(error["code"], "unknown_recording");
    assert!(renderer.images().is_empty(), "no blank image is written");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn link_state_follows_the_renderer_down_and_back() {
    let renderer = start_renderer().await;
    let relay = start_relay_reconnecting_fast(&renderer.ws_url()).await;
    let mut page = page(&relay, "connected").await;
    let mut second = common::page(&relay, "connected").await;

    // Kill the renderer: both pages hear the link go down.
    let stopped = renderer.stop().await;
    for client in [&mut page, &mut second] {
        client
            .wait_for("link down", |msg| {
                msg["type"] == "link" && msg["renderer"] != "connected"
            })
            .await;
    }
    // The relay keeps serving while the renderer is away, and says so.
    let health = http_get(&relay.addr.to_string(), "/healthz").await.unwrap();
    assert_eq!(health.status, 200);
    let health: serde_json::Value = serde_json::from_slice(&health.body).unwrap();
    assert_ne!(health["renderer"], "connected");
    let page_html = http_get(&relay.addr.to_string(), "/").await.unwrap();
    assert_eq!(page_html.status, 200);
    // Messages sent meanwhile wait in the relay's backlog.
    page.send_json(batch("r-away", 0, 100, 100, &[(1.0, 1.0)]))
        .await;
    testkit::eventually("the batch to wait in the backlog", || async {
        let health = http_get(&relay.addr.to_string(), "/healthz").await.ok()?;
        let health: serde_json::Value = serde_json::from_slice(&health.body).ok()?;
        (health["backlog_depth"] == 1).then_some(())
    })
    .await;

    // Bring it back on the same port: the link comes back by itself.
    let _restarted = stopped.restart().await;
    for client in [&mut page, &mut second] {
        client
            .wait_for("link up", |msg| {
                msg["type"] == "link" && msg["renderer"] == "connected"
            })
            .await;
    }
    // The held batch is replayed and acknowledged without being sent again.
    let ack = page
        .wait_for("ack of the replayed batch", |msg| msg["type"] == "ack")
        .await;
    assert_eq!(
        (ack["seq"].as_u64(), ack["n_points"].as_u64()),
        (Some(0), Some(1))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_backlog_answers_busy_and_drops_nothing_silently() {
    let unused = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("ws://{}", unused.local_addr().unwrap());
    drop(unused);
    let relay = start_relay_with(&url, |config| config.buffer_bytes = 600).await;
    let mut page = page(&relay, "disconnected").await;
    for seq in 0..10u64 {
        page.send_json(batch("r-full", seq, 100, 100, &[(1.0, 1.0)]))
            .await;
    }
    let held = testkit::eventually("the relay to hold or refuse every batch", || async {
        let health = http_get(&relay.addr.to_string(), "/healthz").await.ok()?;
        let health: serde_json::Value = serde_json::from_slice(&health.body).ok()?;
        let held = health["backlog_depth"].as_u64().unwrap_or(0);
        (held + health["errors"]["busy"].as_u64().unwrap_or(0) == 10).then_some(held)
    })
    .await;
    assert!(
        held > 0 && held < 10,
        "some batches fit, some do not: {held} held"
    );
    for _ in 0..(10 - held) {
        let error = page.wait_for("busy", |msg| msg["type"] == "error").await;
        assert_eq!(error["code"], "busy");
        assert!(
            error["message"]
                .as_str()
                .unwrap()
                .contains("--buffer-bytes"),
            "{error}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_page_connecting_while_the_renderer_is_down_is_told_so() {
    // Point the relay at a port where nothing listens.
    let unused = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("ws://{}", unused.local_addr().unwrap());
    drop(unused);
    let relay = start_relay(&url).await;
    let mut client = testkit::WsClient::connect(&format!("ws://{}/ws", relay.addr))
        .await
        .unwrap();
    client.send_json(json!({"type": "hello", "v": 1})).await;
    let welcome = client
        .wait_for("welcome", |msg| msg["type"] == "welcome")
        .await;
    assert_ne!(welcome["renderer"], "connected");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_and_renderer_shut_down_cleanly_with_1001() {
    let renderer = start_renderer().await;
    let relay = start_relay(&renderer.ws_url()).await;
    let mut page = page(&relay, "connected").await;
    relay.stop().await;
    assert_eq!(page.close_code().await, Some(1001));
    renderer.running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn page_options_choose_the_look_of_the_image() {
    let renderer = start_renderer().await;
    let relay = start_relay(&renderer.ws_url()).await;
    let mut page = page(&relay, "connected").await;
    record_and_generate(&mut page, "r-options", &cluster(400.0, 400.0, 200)).await;

    // A transparent overlay, with the options echoed back filled in.
    page.send_json(json!({"type": "generate", "recording": "r-options",
        "options": {"output": "overlay", "colormap": "viridis", "scale": "log", "bandwidth": 10}}))
        .await;
    let overlay = page
        .wait_for("overlay", |msg| msg["type"] == "heatmap")
        .await;
    assert_eq!(
        overlay["options"],
        json!({"kind": "both", "colormap": "viridis", "scale": "log", "output": "overlay", "bandwidth": 10.0, "pixel_scale": 1.0})
    );
    let path = renderer
        .out_dir
        .path()
        .join(overlay["name"].as_str().unwrap());
    let image = Image::decode(&std::fs::read(path).unwrap()).unwrap();
    assert_eq!(image.channels, 4, "an overlay has an alpha channel");
    assert_eq!(
        image.pixels[(100 * 1920 + 1800) * 4 + 3],
        0,
        "transparent where nothing happened"
    );

    // Clicks only, when the recording has none: a clear message, no file.
    let n_images = renderer.images().len();
    page.send_json(
        json!({"type": "generate", "recording": "r-options", "options": {"kind": "clicks"}}),
    )
    .await;
    let error = page
        .wait_for("no clicks", |msg| msg["type"] == "error")
        .await;
    assert_eq!(error["code"], "no_points");
    assert!(
        error["message"].as_str().unwrap().contains("clicks"),
        "{error}"
    );
    assert_eq!(renderer.images().len(), n_images);

    // Background mode without a screenshot: the renderer says what is missing.
    page.send_json(
        json!({"type": "generate", "recording": "r-options", "options": {"output": "background"}}),
    )
    .await;
    let error = page
        .wait_for("no background", |msg| msg["type"] == "error")
        .await;
    assert_eq!(error["code"], "render_failed");
    assert!(
        error["message"].as_str().unwrap().contains("--background"),
        "{error}"
    );

    // A bandwidth out of range is refused at the relay.
    page.send_json(
        json!({"type": "generate", "recording": "r-options", "options": {"bandwidth": 0}}),
    )
    .await;
    let error = page
        .wait_for("bad bandwidth", |msg| msg["type"] == "error")
        .await;
    assert_eq!(error["code"], "out_of_range");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pixel_scale_renders_4k_within_the_renderer_bound() {
    let renderer = start_renderer_with(|config| config.max_image_pixels = 3840 * 2160).await;
    let relay = start_relay(&renderer.ws_url()).await;
    let mut page = page(&relay, "connected").await;
    let first = record_and_generate(&mut page, "r-4k", &cluster(960.0, 540.0, 300)).await;
    assert_eq!(
        (first["width"].as_u64(), first["height"].as_u64()),
        (Some(1920), Some(1080))
    );

    // Twice the size: 3840x2160, the same picture with the bandwidth doubled.
    page.send_json(json!({"type": "generate", "recording": "r-4k",
        "options": {"pixel_scale": 2, "bandwidth": 12}}))
        .await;
    let large = page.wait_for("4k", |msg| msg["type"] == "heatmap").await;
    assert_eq!(
        (large["width"].as_u64(), large["height"].as_u64()),
        (Some(3840), Some(2160))
    );
    assert_eq!(large["options"]["pixel_scale"], 2.0);
    assert_eq!(
        large["options"]["bandwidth"], 12.0,
        "echoed in unscaled pixels"
    );
    let path = renderer
        .out_dir
        .path()
        .join(large["name"].as_str().unwrap());
    let image = Image::decode(&std::fs::read(path).unwrap()).unwrap();
    assert_eq!((image.width, image.height), (3840, 2160));
    assert_ne!(
        image.rgb(1920, 1080),
        [255, 255, 255],
        "heat at the cluster"
    );
    assert_eq!(image.rgb(200, 200), [255, 255, 255], "white far from it");

    // Three times is over this renderer's --max-image-pixels: refused, named, counted.
    let n_images = renderer.images().len();
    page.send_json(json!({"type": "generate", "recording": "r-4k", "options": {"pixel_scale": 3}}))
        .await;
    let error = page
        .wait_for("too large", |msg| msg["type"] == "error")
        .await;
    assert_eq!(error["code"], "out_of_range");
    let message = error["message"].as_str().unwrap();
    assert!(
        message.contains("pixel_scale")
            && message.contains("5760x3240")
            && message.contains("--max-image-pixels"),
        "{message}"
    );
    assert_eq!(
        renderer.images().len(),
        n_images,
        "no file for a refused render"
    );
    let metrics = http_get(&renderer.running.addr.to_string(), "/metrics")
        .await
        .unwrap();
    let text = String::from_utf8(metrics.body.to_vec()).unwrap();
    assert_eq!(
        sample(&text, "renderer_errors_total{code=\"out_of_range\"}"),
        1.0
    );

    // Past the protocol's range the relay refuses it before the renderer sees it.
    page.send_json(json!({"type": "generate", "recording": "r-4k", "options": {"pixel_scale": 8}}))
        .await;
    let error = page
        .wait_for("out of range", |msg| msg["type"] == "error")
        .await;
    assert_eq!(error["code"], "out_of_range");
    assert!(
        error["message"].as_str().unwrap().contains("pixel_scale"),
        "{error}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_preview_frames_grow_with_the_recording() {
    let renderer = start_renderer().await;
    let relay = start_relay(&renderer.ws_url()).await;
    let mut page = page(&relay, "connected").await;
    page.send_json(batch("r-live", 0, 1920, 1080, &cluster(480.0, 270.0, 50)))
        .await;
    page.wait_for("ack", |msg| msg["type"] == "ack").await;
    page.send_json(json!({"type": "preview", "recording": "r-live"}))
        .await;
    let first = page
        .wait_for("preview", |msg| msg["type"] == "preview")
        .await;
    assert_eq!(
        (first["width"].as_u64(), first["height"].as_u64()),
        (Some(192), Some(108))
    );
    assert_eq!(first["n_points"], 50);
    let cells: Vec<u64> = first["cells"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap())
        .collect();
    assert_eq!(cells.len(), 192 * 108);
    // 480x270 of 1920x1080 is cell (48, 27) of 192x108: the hottest cell is there.
    let hottest = cells
        .iter()
        .enumerate()
        .max_by_key(|(_, value)| **value)
        .unwrap()
        .0;
    assert!(
        (hottest % 192).abs_diff(48) <= 1 && (hottest / 192).abs_diff(27) <= 1,
        "{hottest}"
    );

    page.send_json(batch("r-live", 1, 1920, 1080, &cluster(1440.0, 810.0, 50)))
        .await;
    page.wait_for("ack", |msg| msg["type"] == "ack").await;
    page.send_json(json!({"type": "preview", "recording": "r-live"}))
        .await;
    let second = page
        .wait_for("preview", |msg| msg["type"] == "preview")
        .await;
    assert_eq!(second["n_points"], 100);
    assert!(
        second["cells"][81 * 192 + 144].as_u64().unwrap() > 100,
        "the new cluster shows"
    );
    assert!(renderer.images().is_empty(), "previews write no files");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unwritable_output_folder_is_a_clear_error_and_the_renderer_keeps_going() {
    // A regular file where the output folder should be: every write fails.
    let blocker = testkit::TempDir::new("blocked");
    let not_a_folder = blocker.path().join("heatmaps");
    std::fs::write(&not_a_folder, b"this is a file").unwrap();
    let renderer = start_renderer_with(|config| config.out_dir = not_a_folder.clone()).await;
    let relay = start_relay(&renderer.ws_url()).await;
    let mut page = page(&relay, "connected").await;
    let error = record_and_generate(&mut page, "r-blocked", &cluster(10.0, 10.0, 20)).await;
    assert_eq!(error["code"], "render_failed", "{error}");
    let message = error["message"].as_str().unwrap();
    assert!(
        message.contains("cannot write") && message.contains("heatmaps"),
        "{message}"
    );
    // Still serving: the next batch is acknowledged.
    page.send_json(batch("r-blocked", 1, 100, 100, &[(1.0, 1.0)]))
        .await;
    page.wait_for("ack", |msg| msg["type"] == "ack").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_out_of_order_count_and_far_ahead_ones_are_refused() {
    let renderer = start_renderer().await;
    let relay = start_relay(&renderer.ws_url()).await;
    let mut page = page(&relay, "connected").await;
    for seq in [3u64, 0, 2, 1] {
        page.send_json(batch("r-order", seq, 100, 100, &[(1.0, 1.0)]))
            .await;
        let ack = page.wait_for("ack", |msg| msg["type"] == "ack").await;
        assert_eq!(ack["seq"], seq);
    }
    page.send_json(batch("r-order", 10_000_000, 100, 100, &[(1.0, 1.0)]))
        .await;
    let error = page.wait_for("refusal", |msg| msg["type"] == "error").await;
    assert_eq!(error["code"], "out_of_range");
    page.send_json(json!({"type": "stop", "recording": "r-order"}))
        .await;
    let stopped = page
        .wait_for("stopped", |msg| msg["type"] == "stopped")
        .await;
    assert_eq!(stopped["n_points"], 4);
}

/// The value of the first sample of `name` (with any labels) in an OpenMetrics text.
fn sample(text: &str, name: &str) -> f64 {
    text.lines()
        .find(|line| line.starts_with(name) && !line.starts_with('#'))
        .and_then(|line| line.rsplit(' ').next())
        .and_then(|value| value.parse().ok())
        .unwrap_or_else(|| panic!("no sample {name} in:\n{text}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_servers_export_metrics_that_match_the_traffic() {
    let renderer = start_renderer().await;
    let relay = start_relay(&renderer.ws_url()).await;
    let mut page = page(&relay, "connected").await;
    record_and_generate(&mut page, "r-metrics", &cluster(100.0, 100.0, 250)).await;
    page.send_text("{not json").await;
    page.wait_for("error", |msg| msg["type"] == "error").await;

    let relay_metrics = http_get(&relay.addr.to_string(), "/metrics").await.unwrap();
    assert_eq!(relay_metrics.status, 200);
    assert!(relay_metrics
        .content_type
        .unwrap()
        .starts_with("application/openmetrics-text"));
    let text = String::from_utf8(relay_metrics.body.to_vec()).unwrap();
    assert_eq!(sample(&text, "relay_points_in_total"), 250.0);
    assert_eq!(sample(&text, "relay_sessions_open"), 1.0);
    assert_eq!(
        sample(&text, "relay_renderer_link{state=\"connected\"}"),
        1.0
    );
    assert_eq!(
        sample(&text, "relay_ack_latency_seconds_count"),
        3.0,
        "three batches timed"
    );
    assert_eq!(sample(&text, "relay_errors_total{code=\"bad_json\"}"), 1.0);

    let renderer_metrics = http_get(&renderer.running.addr.to_string(), "/metrics")
        .await
        .unwrap();
    let text = String::from_utf8(renderer_metrics.body.to_vec()).unwrap();
    assert_eq!(sample(&text, "renderer_points_stored_total"), 250.0);
    assert_eq!(sample(&text, "renderer_batches_stored_total"), 3.0);
    assert_eq!(sample(&text, "renderer_renders_total"), 1.0);
    assert_eq!(sample(&text, "renderer_render_duration_seconds_count"), 1.0);
    assert_eq!(sample(&text, "renderer_points_held"), 250.0);
    assert_eq!(sample(&text, "renderer_links_open"), 1.0);
}
