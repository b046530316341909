//! Speaking to a renderer as the relay does, for the tests that drive a renderer alone:
//! the `hello`/`welcome` greeting and page batches in their link envelope.

use serde_json::{json, Value};

use crate::WsClient;

/// Opens a link to the renderer at `url` and greets it as a relay.
///
/// # Panics
/// If the renderer cannot be reached or does not answer `welcome`: the test fails.
pub async fn link_as_relay(url: &str) -> WsClient {
    let mut link = WsClient::connect(url)
        .await
        .expect("connect to the renderer");
    link.send_json(json!({"type": "hello", "v": 1})).await;
    let welcome = link.next_json().await.expect("a welcome");
    assert_eq!(welcome["type"], "welcome", "{welcome}");
    link
}

/// Batch `seq` of recording `recording` from connection 1, with `n_points` moves spread
/// over a 1920x1080 viewport, as the relay forwards it.
pub fn batch_frame(recording: &str, seq: u64, n_points: u64) -> String {
    let points: Vec<Value> = (0..n_points)
        .map(|idx| json!([(seq * 7 + idx) % 1920, (idx * 13) % 1080, idx, "move"]))
        .collect();
    json!({"type": "page", "conn": 1, "msg": {
        "type": "points", "recording": recording, "seq": seq,
        "viewport": {"width": 1920, "height": 1080}, "points": points
    }})
    .to_string()
}
