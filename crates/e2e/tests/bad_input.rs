//! Bad input at every edge: the sender gets a clear error (or close code), a counter moves,
//! and every other connection and the stored data are untouched.

mod common;

use common::*;
use serde_json::json;
use testkit::{http_get, http_get_with, opcode, RawWs, WsClient};
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
    let addr = relay.addr.to_string();
    let _first = page(&relay, "connected").await;
    let _second = page(&relay, "connected").await;
    // Both busy places of this address are taken: one more request is refused...
    let refused = http_get(&addr, "/").await.unwrap();
    assert_eq!(refused.status, 503);
    let text = String::from_utf8_lossy(&refused.body);
    assert!(text.contains("your address"), "{text}");
    // ...but health stays observable from that address.
    assert_eq!(http_get(&addr, "/healthz").await.unwrap().status, 200);
    // Sockets that say nothing push out only this address's oldest silent one.
    let mut silent = Vec::new();
    for _ in 0..3 {
        silent.push(tokio::net::TcpStream::connect(relay.addr).await.unwrap());
    }
    testkit::eventually("the oldest silent socket to be closed", || async {
        is_closed(&silent[0]).then_some(())
    })
    .await;
    assert!(!is_closed(&silent[2]), "the newest is kept");
    assert_eq!(http_get(&addr, "/healthz").await.unwrap().status, 200);
}

/// Whether the server has closed `stream` (end of stream or reset), without waiting.
fn is_closed(stream: &tokio::net::TcpStream) -> bool {
    let mut byte = [0u8; 1];
    match stream.try_read(&mut byte) {
        Ok(n) => n == 0,
        Err(err) => err.kind() != std::io::ErrorKind::WouldBlock,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_is_answered_when_every_connection_is_busy() {
    let renderer = start_renderer().await;
    let relay = start_relay_with(&renderer.ws_url(), |config| config.max_connections = 4).await;
    let addr = relay.addr.to_string();
    let mut pages = Vec::new();
    for _ in 0..4 {
        pages.push(page(&relay, "connected").await);
    }
    let refused = WsClient::connect(&format!("ws://{addr}/ws")).await;
    let refused = refused.err().expect("a fifth page is refused").to_string();
    assert!(refused.contains("503"), "{refused}");
    for path in ["/healthz", "/metrics"] {
        let response = http_get(&addr, path).await.unwrap();
        assert_eq!(response.status, 200, "{path} at the cap");
    }
    let health = health(relay.addr).await;
    assert_eq!(health["sessions_open"], 4);
    // A place freed is a place for the next page.
    drop(pages.pop());
    testkit::eventually("a page to get the freed place", || async {
        WsClient::connect(&format!("ws://{addr}/ws")).await.ok()
    })
    .await;

    // The renderer too: its one busy place is the relay's link.
    let renderer = start_renderer_with(|config| config.max_connections = 1).await;
    let relay = start_relay(&renderer.ws_url()).await;
    let _page = page(&relay, "connected").await;
    let addr = renderer.running.addr.to_string();
    let image = http_get(&addr, "/heatmaps/heatmap_2000-01-01_00-00-00.png")
        .await
        .unwrap();
    assert_eq!(image.status, 503, "the busy cap holds");
    let health = http_get(&addr, "/healthz").await.unwrap();
    assert_eq!(health.status, 200);
    let health: serde_json::Value = serde_json::from_slice(&health.body).unwrap();
    assert_eq!(health["links_open"], 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strangers_holding_sockets_cannot_keep_the_relay_from_linking() {
    use tokio::io::AsyncWriteExt;
    const STRANGERS: usize = 100;
    // A header timeout far beyond the test: only the waiting pool can let the relay in.
    let renderer = start_renderer_with(|config| {
        config.token = Some("s3cret".into());
        config.header_timeout_ms = 600_000;
    })
    .await;
    let mut strangers = Vec::new();
    for _ in 0..STRANGERS {
        let mut stream = tokio::net::TcpStream::connect(renderer.running.addr)
            .await
            .unwrap();
        stream.write_all(b"G").await.unwrap();
        strangers.push(stream);
    }
    let relay = start_relay_with(&renderer.ws_url(), |config| {
        config.token = Some("s3cret".into());
    })
    .await;
    // Well inside the old fixed 10 s header timeout that used to free the slots.
    let mut page =
        tokio::time::timeout(std::time::Duration::from_secs(5), page(&relay, "connected"))
            .await
            .expect("the relay links while strangers hold sockets");
    page.send_json(batch("r-strangers", 0, 100, 100, &[(1.0, 1.0)]))
        .await;
    page.wait_for("ack", |msg| msg["type"] == "ack").await;
    // The strangers the waiting pool had no room for were closed; the others still wait.
    let pending = renderer::Config::default().max_pending_connections;
    let n_closed = testkit::eventually("strangers beyond the pool to be closed", || async {
        let n_closed = strangers.iter().filter(|stream| is_closed(stream)).count();
        (n_closed >= STRANGERS - pending).then_some(n_closed)
    })
    .await;
    assert!(
        n_closed < STRANGERS,
        "{n_closed} closed: the pool keeps some"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_slow_to_send_its_headers_is_closed_at_the_header_timeout() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let renderer = start_renderer_with(|config| config.header_timeout_ms = 200).await;
    let mut stream = tokio::net::TcpStream::connect(renderer.running.addr)
        .await
        .unwrap();
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\n")
        .await
        .unwrap();
    let mut rest = Vec::new();
    let read = tokio::time::timeout(
        std::time::Duration::from_secs(2),
        stream.read_to_end(&mut rest),
    )
    .await;
    assert!(
        read.is_ok(),
        "closed at the 200 ms timeout, not the default 3 s"
    );
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_renderer_route_but_health_needs_the_token() {
    let renderer = start_renderer_with(|config| config.token = Some("s3cret".into())).await;
    let addr = renderer.running.addr.to_string();
    let image = "/heatmaps/heatmap_2000-01-01_00-00-00.png";
    for path in ["/api/analytics/summary", "/api/heatmaps?page=/", image, "/"] {
        let response = http_get(&addr, path).await.unwrap();
        assert_eq!(response.status, 401, "{path} without the token");
        let wrong = http_get_with(&addr, path, &[("authorization", "Bearer nope")])
            .await
            .unwrap();
        assert_eq!(wrong.status, 401, "{path} with a wrong token");
    }
    // The scheme matches in any case; the secret itself does not.
    for value in ["Bearer s3cret", "bearer s3cret", "BEARER s3cret"] {
        let response = http_get_with(&addr, "/api/analytics/summary", &[("authorization", value)])
            .await
            .unwrap();
        assert_eq!(response.status, 200, "{value}");
    }
    let image_response = http_get_with(&addr, image, &[("authorization", "bearer s3cret")])
        .await
        .unwrap();
    assert_eq!(
        image_response.status, 404,
        "a missing image, past the token"
    );
    // Probes and scrapers need no secret.
    for path in ["/healthz", "/metrics"] {
        assert_eq!(http_get(&addr, path).await.unwrap().status, 200, "{path}");
    }
    let metrics = http_get(&addr, "/metrics").await.unwrap();
    let metrics = String::from_utf8_lossy(&metrics.body);
    assert!(
        metrics.contains("renderer_unauthorized_total 8"),
        "each refusal counted:\n{metrics}"
    );
    // The relay's pass-through presents the token.
    let relay = start_relay_with(&renderer.ws_url(), |config| {
        config.token = Some("s3cret".into())
    })
    .await;
    let through = http_get(&relay.addr.to_string(), "/api/analytics/summary")
        .await
        .unwrap();
    assert_eq!(through.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_symlink_in_the_output_folder_is_not_followed() {
    let renderer = start_renderer().await;
    let secret = renderer.data_dir.path().join("secret.txt");
    std::fs::write(&secret, b"secret").unwrap();
    let name = "heatmap_2026-11-29_19-30-05.png";
    std::os::unix::fs::symlink(&secret, renderer.out_dir.path().join(name)).unwrap();
    std::os::unix::fs::symlink(
        "/etc/passwd",
        renderer
            .out_dir
            .path()
            .join("heatmap_2026-11-29_19-30-06.png"),
    )
    .unwrap();
    std::fs::write(
        renderer
            .out_dir
            .path()
            .join("heatmap_2026-11-29_19-30-07.png"),
        b"\x89PNG",
    )
    .unwrap();
    let relay = start_relay(&renderer.ws_url()).await;
    for addr in [relay.addr.to_string(), renderer.running.addr.to_string()] {
        for linked in [name, "heatmap_2026-11-29_19-30-06.png"] {
            let response = http_get(&addr, &format!("/heatmaps/{linked}"))
                .await
                .unwrap();
            assert_eq!(response.status, 404, "{addr} {linked}");
            assert!(!response.body.starts_with(b"secret"));
            assert!(!response.body.starts_with(b"root:"));
        }
        // A regular file under a heatmap name is still served.
        let real = http_get(&addr, "/heatmaps/heatmap_2026-11-29_19-30-07.png")
            .await
            .unwrap();
        assert_eq!(real.status, 200, "{addr}");
        assert_eq!(&real.body[..], b"\x89PNG");
    }
}

/// Sends one raw HTTP/1.1 request and returns the status code and the body text.
async fn raw_request(addr: std::net::SocketAddr, head: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream.write_all(head.as_bytes()).await.unwrap();
    let mut reply = Vec::new();
    tokio::time::timeout(testkit::DEADLINE, stream.read_to_end(&mut reply))
        .await
        .expect("the relay answers and closes")
        .unwrap();
    let reply = String::from_utf8_lossy(&reply).into_owned();
    let status = reply[9..12].parse().unwrap();
    let body = reply
        .split("\r\n\r\n")
        .nth(1)
        .unwrap_or_default()
        .to_owned();
    (status, body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dns_rebinding_page_is_refused_by_host_and_origin() {
    let renderer = start_renderer().await;
    let relay = start_relay_with(&renderer.ws_url(), |config| {
        config.public_urls = vec!["https://heatmaps.example".into()];
    })
    .await;
    let port = relay.addr.port();
    let evil_host = format!("evil.example:{port}");
    // The rebinding page: its Host and Origin agree with each other, but not with the relay.
    for path in [
        "/",
        "/dashboard",
        "/demo/",
        "/t.js",
        "/api/analytics/summary",
        "/heatmaps/heatmap_2000-01-01_00-00-00.png",
    ] {
        let head = format!(
            "GET {path} HTTP/1.1\r\nhost: {evil_host}\r\norigin: http://{evil_host}\r\nconnection: close\r\n\r\n"
        );
        let (status, body) = raw_request(relay.addr, &head).await;
        assert_eq!(status, 421, "{path}: {body}");
        assert!(body.contains(&evil_host), "{path} names the host: {body}");
    }
    let url = format!("ws://{}/ws", relay.addr);
    let evil_origin = format!("http://{evil_host}");
    let err = WsClient::connect_with(
        &url,
        &[
            ("host", evil_host.as_str()),
            ("origin", evil_origin.as_str()),
        ],
    )
    .await
    .err()
    .expect("a rebinding page's socket is refused")
    .to_string();
    assert!(err.contains("421"), "{err}");
    // The relay's own name with a foreign Origin: 403, as before.
    let err = WsClient::connect_with(&url, &[("origin", evil_origin.as_str())])
        .await
        .err()
        .expect("a foreign origin is refused")
        .to_string();
    assert!(err.contains("403"), "{err}");
    // The public URL and the loopback names are the relay's own.
    for (host, origin) in [
        ("heatmaps.example", "https://heatmaps.example"),
        (
            &*format!("localhost:{port}"),
            &*format!("http://localhost:{port}"),
        ),
        (
            &*format!("127.0.0.1:{port}"),
            &*format!("http://127.0.0.1:{port}"),
        ),
    ] {
        let head = format!("GET / HTTP/1.1\r\nhost: {host}\r\nconnection: close\r\n\r\n");
        assert_eq!(raw_request(relay.addr, &head).await.0, 200, "{host}");
        WsClient::connect_with(&url, &[("host", host), ("origin", origin)])
            .await
            .unwrap_or_else(|err| panic!("{host} {origin}: {err}"));
    }
    // Health stays observable under any name; each refusal was counted.
    let head = format!("GET /healthz HTTP/1.1\r\nhost: {evil_host}\r\nconnection: close\r\n\r\n");
    assert_eq!(raw_request(relay.addr, &head).await.0, 200);
    let metrics = http_get(&relay.addr.to_string(), "/metrics").await.unwrap();
    let metrics = String::from_utf8_lossy(&metrics.body);
    assert!(metrics.contains("relay_host_refused_total 7"), "{metrics}");
    assert!(
        metrics.contains("relay_origin_refused_total 1"),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_too_large_for_the_renderer_is_refused_to_its_page_alone() {
    let renderer = start_renderer_with(|config| config.max_frame_bytes = 8 * 1024).await;
    let relay = start_relay_with(&renderer.ws_url(), |config| {
        config.max_frame_bytes = 256 * 1024
    })
    .await;
    let mut bystander = page(&relay, "connected").await;
    let mut big_sender = page(&relay, "connected").await;
    // A valid batch padded with JSON whitespace to 100 KiB: within the relay's bound, and
    // forwarded verbatim, so over the renderer's.
    let mut big = batch("r-big", 0, 100, 100, &[(1.0, 1.0)]).to_string();
    big.insert_str(big.len() - 1, &" ".repeat(100 * 1024));
    big_sender.send_text(big).await;
    let error = big_sender
        .wait_for("too_large", |msg| msg["type"] == "error")
        .await;
    assert_eq!(error["code"], "too_large", "{error}");
    assert_eq!(error["seq"], 0, "{error}");
    assert!(
        error["message"].as_str().unwrap().contains("8192"),
        "{error}"
    );
    // The link stayed up: both pages' next batches are acknowledged.
    for (client, recording) in [(&mut bystander, "r-other"), (&mut big_sender, "r-big")] {
        client
            .send_json(batch(recording, 1, 100, 100, &[(1.0, 1.0)]))
            .await;
        client.wait_for("ack", |msg| msg["type"] == "ack").await;
    }
    let renderer_health = health(renderer.running.addr).await;
    assert_eq!(renderer_health["links_open"], 1, "{renderer_health}");
    assert_eq!(
        renderer_health["errors"]["too_large"],
        serde_json::Value::Null,
        "{renderer_health}"
    );
    let relay_health = health(relay.addr).await;
    assert_eq!(relay_health["errors"]["too_large"], 1, "{relay_health}");
}
