//! Bad input at every edge: the sender gets a clear error (or close code), a counter moves,
//! and every other connection and the stored data are untouched.

mod common;

use common::*;
use serde_json::json;
use testkit::{http_get, opcode, RawWs, WsClient};
use tokio_tungstenite::tungstenite::Message;

async fn health(addr: std::net::SocketAddr) -> serde_json::Value {
    let response = http_get(&addr.to_string(), "/healthz").await.unwrap();
    serde_json::from_slice(&response.body).unwrap()
}

/// One bad frame per row: what is sent, and the code the page must get back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_bad_message_gets_its_error_and_the_session_survives() {
    let renderer = start_renderer().await;
    let relay = start_relay(&renderer.ws_url()).await;
    let mut bystander = page(&relay, "connected").await;
    bystander
        .send_json(batch("r-bystander", 0, 100, 100, &[(50.0, 50.0)]))
        .await;
    bystander
        .wait_for("bystander ack", |msg| msg["type"] == "ack")
        .await;
    let mut page = page(&relay, "connected").await;

    let cases: Vec<(&str, String, &str)> = vec![
        ("not json", "{\"type\": \"points\",".into(), "bad_json"),
        ("a json array", "[1, 2, 3]".into(), "bad_json"),
        ("NaN literal", r#"{"type":"points","recording":"r1","seq":0,"viewport":{"width":10,"height":10},"points":[[NaN,1,0,"move"]]}"#.into(), "bad_json"),
        ("unknown type", r#"{"type":"teleport"}"#.into(), "unknown_type"),
        ("no type", r#"{"recording":"r1"}"#.into(), "unknown_type"),
        ("missing field", r#"{"type":"points","recording":"r1","seq":0,"points":[]}"#.into(), "bad_field"),
        ("wrong field type", r#"{"type":"points","recording":"r1","seq":"zero","viewport":{"width":10,"height":10},"points":[]}"#.into(), "bad_field"),
        ("path in recording id", r#"{"type":"generate","recording":"../../etc/passwd"}"#.into(), "bad_field"),
        ("unknown point kind", r#"{"type":"points","recording":"r1","seq":0,"viewport":{"width":10,"height":10},"points":[[1,1,0,"hover"]]}"#.into(), "bad_field"),
        ("coordinate outside the viewport", batch("r1", 0, 100, 100, &[(50.0, 50.0), (150.0, 50.0)]).to_string(), "out_of_range"),
        ("negative coordinate", batch("r1", 0, 100, 100, &[(-1.0, 50.0)]).to_string(), "out_of_range"),
        ("infinite coordinate", r#"{"type":"points","recording":"r1","seq":0,"viewport":{"width":10,"height":10},"points":[[1e39,1,0,"move"]]}"#.into(), "out_of_range"),
        ("zero viewport", r#"{"type":"start","recording":"r1","viewport":{"width":0,"height":10}}"#.into(), "out_of_range"),
        ("too many points", batch("r1", 0, 100, 100, &vec![(1.0, 1.0); 1001]).to_string(), "too_large"),
        ("old protocol", r#"{"type":"hello","v":0}"#.into(), "unsupported_version"),
    ];
    for (what, frame, code) in &cases {
        page.send_text(frame.clone()).await;
        let error = page.wait_for(what, |msg| msg["type"] == "error").await;
        assert_eq!(error["code"], *code, "{what}: {error}");
        assert!(
            !error["message"].as_str().unwrap_or_default().is_empty(),
            "{what}: {error}"
        );
    }
    page.send_frame(Message::binary(vec![1u8, 2, 3]))
        .await
        .unwrap();
    let error = page.wait_for("binary", |msg| msg["type"] == "error").await;
    assert_eq!(error["code"], "binary_frame");

    // The session is still usable…
    page.send_json(json!({"type": "hello", "v": 1})).await;
    page.wait_for("welcome", |msg| msg["type"] == "welcome")
        .await;
    // …nothing bad reached the renderer's store, the bystander's data is intact…
    bystander
        .send_json(batch("r-bystander", 1, 100, 100, &[(50.0, 50.0)]))
        .await;
    let ack = bystander
        .wait_for("bystander ack", |msg| msg["type"] == "ack")
        .await;
    assert_eq!(ack["n_points"], 2);
    let renderer_health = health(renderer.running.addr).await;
    assert_eq!(renderer_health["points"], 2, "{renderer_health}");
    // …and every refusal was counted.
    let relay_health = health(relay.addr).await;
    for code in [
        "bad_json",
        "unknown_type",
        "bad_field",
        "out_of_range",
        "too_large",
        "binary_frame",
    ] {
        assert!(
            relay_health["errors"][code].as_u64().unwrap_or(0) >= 1,
            "{code} counted: {relay_health}"
        );
    }
    assert_eq!(relay_health["errors"]["bad_json"], 3);
}

/// Speaks raw frames to one WebSocket endpoint and checks each Close it gets back
/// (RFC 6455): a Close is answered with its own code, invalid UTF-8 closes with 1007, an
/// unmasked client frame with 1002, an oversized frame with 1009; and each error is counted.
async fn closes_follow_rfc_6455(addr: std::net::SocketAddr, path: &str, frame_limit: usize) {
    let addr = addr.to_string();
    for code in [1000u16, 1001, 4000] {
        let mut raw = RawWs::connect(&addr, path).await.unwrap();
        raw.send_close(code).await;
        assert_eq!(
            raw.close_reply().await.unwrap(),
            Some(code),
            "{path}: close {code}"
        );
    }
    let mut raw = RawWs::connect(&addr, path).await.unwrap();
    raw.send_frame(opcode::CLOSE, &[], true).await;
    assert_eq!(
        raw.close_reply().await.unwrap(),
        None,
        "{path}: empty close"
    );

    let mut raw = RawWs::connect(&addr, path).await.unwrap();
    raw.send_frame(
        opcode::TEXT,
        b"{\"type\":\"hello\",\"v\":1,\"x\":\"\xff\xfe\"}",
        true,
    )
    .await;
    assert_eq!(
        raw.close_reply().await.unwrap(),
        Some(1007),
        "{path}: invalid utf-8"
    );

    let mut raw = RawWs::connect(&addr, path).await.unwrap();
    raw.send_frame(opcode::TEXT, br#"{"type":"hello","v":1}"#, false)
        .await;
    assert_eq!(
        raw.close_reply().await.unwrap(),
        Some(1002),
        "{path}: unmasked"
    );

    // A Close whose payload is one byte cannot hold a code: a protocol error too.
    let mut raw = RawWs::connect(&addr, path).await.unwrap();
    raw.send_frame(opcode::CLOSE, &[3], true).await;
    assert_eq!(
        raw.close_reply().await.unwrap(),
        Some(1002),
        "{path}: one-byte close"
    );

    let mut raw = RawWs::connect(&addr, path).await.unwrap();
    raw.send_frame(opcode::TEXT, &vec![b'x'; frame_limit + 1], true)
        .await;
    assert_eq!(
        raw.close_reply().await.unwrap(),
        Some(1009),
        "{path}: oversized"
    );

    let counted = testkit::eventually("the errors to be counted", || {
        let addr = addr.clone();
        async move {
            let response = http_get(&addr, "/healthz").await.ok()?;
            let health: serde_json::Value = serde_json::from_slice(&response.body).ok()?;
            let errors = health["errors"].clone();
            (errors["bad_frame"] == 3 && errors["too_large"] == 1).then_some(errors)
        }
    })
    .await;
    assert_eq!(counted["bad_frame"], 3, "{path}: {counted}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_relay_answers_closes_and_protocol_errors_with_the_right_code() {
    let renderer = start_renderer().await;
    let relay = start_relay_with(&renderer.ws_url(), |config| config.max_frame_bytes = 4096).await;
    closes_follow_rfc_6455(relay.addr, "/ws", 4096).await;
    // The relay is still serving pages.
    let mut page = page(&relay, "connected").await;
    page.send_json(batch("r-after", 0, 100, 100, &[(5.0, 5.0)]))
        .await;
    page.wait_for("ack", |msg| msg["type"] == "ack").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_renderer_answers_closes_and_protocol_errors_with_the_right_code() {
    let renderer = start_renderer_with(|config| config.max_frame_bytes = 4096).await;
    closes_follow_rfc_6455(renderer.running.addr, "/", 4096).await;
    // The renderer still serves a relay.
    let relay = start_relay(&renderer.ws_url()).await;
    let mut page = page(&relay, "connected").await;
    page.send_json(batch("r-after", 0, 100, 100, &[(5.0, 5.0)]))
        .await;
    page.wait_for("ack", |msg| msg["type"] == "ack").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_frame_closes_only_that_page_with_1009() {
    let renderer = start_renderer().await;
    let relay = start_relay_with(&renderer.ws_url(), |config| config.max_frame_bytes = 4096).await;
    let mut bystander = page(&relay, "connected").await;
    let mut page = page(&relay, "connected").await;
    page.send_text("x".repeat(10_000)).await;
    assert_eq!(page.close_code().await, Some(1009));
    bystander
        .send_json(batch("r-ok", 0, 100, 100, &[(5.0, 5.0)]))
        .await;
    bystander.wait_for("ack", |msg| msg["type"] == "ack").await;
    let relay_health = health(relay.addr).await;
    assert_eq!(relay_health["errors"]["too_large"], 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flooding_page_is_rate_limited_and_others_are_not() {
    let renderer = start_renderer().await;
    let relay = start_relay_with(&renderer.ws_url(), |config| {
        config.max_messages_per_sec = 5;
        config.message_burst = 5;
    })
    .await;
    let mut flooder = page(&relay, "connected").await;
    let mut bystander = page(&relay, "connected").await;
    for seq in 0..50u64 {
        flooder
            .send_json(batch("r-flood", seq, 100, 100, &[(1.0, 1.0)]))
            .await;
    }
    let limited = flooder
        .wait_for("rate_limited", |msg| {
            msg["type"] == "error" && msg["code"] == "rate_limited"
        })
        .await;
    assert!(limited["message"].as_str().unwrap().contains("per second"));
    bystander
        .send_json(batch("r-calm", 0, 100, 100, &[(1.0, 1.0)]))
        .await;
    bystander.wait_for("ack", |msg| msg["type"] == "ack").await;
    let relay_health = health(relay.addr).await;
    assert!(
        relay_health["errors"]["rate_limited"].as_u64().unwrap() >= 40,
        "{relay_health}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_page_from_another_origin_is_refused() {
    let renderer = start_renderer().await;
    let relay = start_relay_with(&renderer.ws_url(), |config| {
        config.allow_origins = vec!["http://allowed.example".into()];
    })
    .await;
    let url = format!("ws://{}/ws", relay.addr);
    let refused = WsClient::connect_with(&url, &[("origin", "http://evil.example")]).await;
    let err = refused
        .err()
        .expect("another origin is refused")
        .to_string();
    assert!(err.contains("403"), "{err}");
    let own_origin = format!("http://{}", relay.addr);
    WsClient::connect_with(&url, &[("origin", own_origin.as_str())])
        .await
        .unwrap();
    WsClient::connect_with(&url, &[("origin", "http://allowed.example")])
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_paths_cannot_reach_files_outside_the_output_folder() {
    let renderer = start_renderer().await;
    std::fs::write(renderer.data_dir.path().join("secret.png"), b"secret").unwrap();
    let relay = start_relay(&renderer.ws_url()).await;
    for addr in [relay.addr.to_string(), renderer.running.addr.to_string()] {
        for path in [
            "/heatmaps/../data/secret.png",
            "/heatmaps/..%2F..%2Fetc%2Fpasswd",
            "/heatmaps/%2e%2e/Cargo.toml",
            "/heatmaps/heatmap_2026-11-29_19-30-05.png%00.txt",
            "/heatmaps/",
            "/../Cargo.toml",
        ] {
            let response = http_get(&addr, path).await.unwrap();
            assert_eq!(response.status, 404, "{addr}{path}");
            assert!(!response.body.starts_with(b"secret"));
        }
        // A well-shaped name that does not exist is a plain 404 too.
        let response = http_get(&addr, "/heatmaps/heatmap_2000-01-01_00-00-00.png")
            .await
            .unwrap();
        assert_eq!(response.status, 404);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_renderer_checks_its_own_link() {
    let renderer = start_renderer_with(|config| config.token = Some("s3cret".into())).await;
    let url = renderer.ws_url();
    // Without the token: 401.
    let err = WsClient::connect(&url)
        .await
        .err()
        .expect("no token is refused")
        .to_string();
    assert!(err.contains("401"), "{err}");
    // With it: page messages before hello are refused, a wrong version closes the link.
    let mut link = WsClient::connect_with(&url, &[("authorization", "Bearer s3cret")])
        .await
        .unwrap();
    link.send_json(json!({"type": "page", "conn": 1, "msg": {"type": "stop", "recording": "r1"}}))
        .await;
    let error = link.next_json().await.unwrap();
    assert_eq!(error["type"], "error");
    assert_eq!(error["code"], "unsupported_version");
    link.send_text("{oops").await;
    assert_eq!(link.next_json().await.unwrap()["code"], "bad_json");
    link.send_json(json!({"type": "hello", "v": 99})).await;
    assert_eq!(
        link.next_json().await.unwrap()["code"],
        "unsupported_version"
    );
    assert_eq!(link.close_code().await, Some(1008));

    // And a relay with the token works end to end.
    let relay = start_relay_with(&url, |config| config.token = Some("s3cret".into())).await;
    let mut page = page(&relay, "connected").await;
    page.send_json(batch("r-token", 0, 100, 100, &[(1.0, 1.0)]))
        .await;
    page.wait_for("ack", |msg| msg["type"] == "ack").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_with_the_wrong_token_reports_the_link_down() {
    let renderer = start_renderer_with(|config| config.token = Some("right".into())).await;
    let relay = start_relay_with(&renderer.ws_url(), |config| {
        config.token = Some("wrong".into())
    })
    .await;
    let health = testkit::eventually("relay to give up the first attempt", || async {
        let health = health(relay.addr).await;
        (health["renderer"] == "disconnected").then_some(health)
    })
    .await;
    assert_eq!(health["renderer"], "disconnected");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_address_cannot_take_every_connection() {
    let renderer = start_renderer().await;
    let relay = start_relay_with(&renderer.ws_url(), |config| {
        config.max_connections_per_ip = 2
    })
    .await;
    let _first = page(&relay, "connected").await;
    let _second = page(&relay, "connected").await;
    // The server answers before reading anything, so read the raw reply.
    use tokio::io::AsyncReadExt;
    let mut stream = tokio::net::TcpStream::connect(relay.addr).await.unwrap();
    let mut reply = Vec::new();
    stream.read_to_end(&mut reply).await.unwrap();
    let reply = String::from_utf8_lossy(&reply);
    assert!(reply.starts_with("HTTP/1.1 503"), "{reply}");
    assert!(reply.contains("your address"), "{reply}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_request_bodies_get_413() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let renderer = start_renderer().await;
    let relay = start_relay(&renderer.ws_url()).await;
    let mut stream = tokio::net::TcpStream::connect(relay.addr).await.unwrap();
    stream
        .write_all(b"POST /ws HTTP/1.1\r\nhost: x\r\ncontent-length: 100000000\r\n\r\n")
        .await
        .unwrap();
    let mut response = vec![0; 256];
    let n = stream.read(&mut response).await.unwrap();
    let head = String::from_utf8_lossy(&response[..n]);
    assert!(head.starts_with("HTTP/1.1 413"), "{head}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_client_is_closed_after_the_idle_timeout() {
    let renderer = start_renderer().await;
    let relay = start_relay_with(&renderer.ws_url(), |config| config.idle_timeout_secs = 1).await;
    // Connects and then never reads, so it never answers the relay's pings.
    let _silent = WsClient::connect(&format!("ws://{}/ws", relay.addr))
        .await
        .unwrap();
    testkit::eventually("the idle page to be closed", || async {
        let health = health(relay.addr).await;
        (health["sessions_total"] == 1 && health["sessions_open"] == 0).then_some(())
    })
    .await;
}
