//! A short load run through the real relay and renderer: zero loss, and the renderer's own
//! counters agree with what the visitors sent.

mod common;

use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_short_load_run_loses_nothing_and_the_counters_agree() {
    let renderer = start_renderer().await;
    let relay =
        start_relay_with(&renderer.ws_url(), |config| config.max_messages_per_sec = 0).await;
    let config = loadgen::Config {
        relay: format!("ws://{}/ws", relay.addr),
        visitors: 8,
        batch: 50,
        rate: 0,
        window: 8,
        duration_secs: 1.0,
        renderer_metrics: Some(format!("http://{}/metrics", renderer.running.addr)),
        ..loadgen::Config::default()
    };
    let report = loadgen::run(&config, false).await.unwrap();
    assert_eq!(report.visitors, 8);
    assert!(report.points_sent > 1_000, "{report}");
    assert_eq!(report.lost(), 0, "{report}");
    assert_eq!(report.points_acked, report.points_sent);
    assert_eq!(report.renderer_points, Some(report.points_sent), "{report}");
    assert_eq!(report.latencies.len() as u64, report.batches_acked);

    let relay_health = http_get_json(&relay.addr.to_string(), "/healthz").await;
    assert_eq!(
        relay_health["errors"],
        serde_json::json!({}),
        "no refusals: {relay_health}"
    );
}

async fn http_get_json(addr: &str, path: &str) -> serde_json::Value {
    let response = testkit::http_get(addr, path).await.unwrap();
    serde_json::from_slice(&response.body).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_short_event_api_run_loses_nothing_and_the_counters_agree() {
    let renderer = start_renderer().await;
    let relay = start_relay_with(&renderer.ws_url(), |config| {
        config.max_api_requests_per_sec = 0
    })
    .await;
    let config = loadgen::Config {
        relay: format!("ws://{}/ws", relay.addr),
        visitors: 4,
        batch: 50,
        rate: 0,
        duration_secs: 1.0,
        api: true,
        renderer_metrics: Some(format!("http://{}/metrics", renderer.running.addr)),
        ..loadgen::Config::default()
    };
    let report = loadgen::run(&config, false).await.unwrap();
    assert_eq!(report.visitors, 4);
    assert!(report.points_sent > 200, "{report}");
    assert_eq!(report.lost(), 0, "{report}");
    assert_eq!(report.renderer_points, Some(report.points_sent), "{report}");
}
