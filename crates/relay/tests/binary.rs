//! The `relay` binary as a person runs it: its address line, `--help`, and a clean stop.

use std::process::Command;

use testkit::{ServerProcess, WsClient};

#[test]
fn help_documents_every_limit_with_its_default() {
    let output = Command::new(env!("CARGO_BIN_EXE_relay"))
        .arg("--help")
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&output.stdout);
    for flag in [
        "--listen",
        "--renderer",
        "--allow-origin",
        "--public-url",
        "--max-frame-bytes",
        "--max-points-per-batch",
        "--max-connections",
        "--max-connections-per-ip",
        "--max-pending-connections",
        "--header-timeout-ms",
        "--max-messages-per-sec",
        "--buffer-bytes",
        "--idle-timeout-secs",
        "--trusted-proxy",
        "--tls-cert",
        "--tls-key",
        "--renderer-ca",
    ] {
        assert!(help.contains(flag), "--help mentions {flag}");
    }
    assert!(
        help.contains("[default: 127.0.0.1:3000]"),
        "binds loopback by default:\n{help}"
    );
}

/// Starts the relay binary on a free port, killed on drop.
fn start_relay() -> ServerProcess {
    let mut command = Command::new(env!("CARGO_BIN_EXE_relay"));
    command.args(["--listen", "127.0.0.1:0", "--renderer", "ws://127.0.0.1:9"]);
    let relay = ServerProcess::start(command);
    assert!(
        relay.url().starts_with("http://127.0.0.1:"),
        "{}",
        relay.url()
    );
    relay
}

/// Once the address line is printed, SIGTERM is graceful: the handlers are installed
/// before the line, so a signal sent the moment it is read ends in exit 0, never in
/// death by the signal's default action.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_right_after_the_address_line_exits_0() {
    for attempt in 0..5 {
        let mut relay = start_relay();
        relay.sigterm();
        let exit = relay.exited().await;
        assert!(exit.success(), "attempt {attempt}: exit status {exit}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_closes_pages_with_1001_and_exits_0() {
    let mut relay = start_relay();
    let url = format!("ws://{}/ws", relay.addr());
    let mut page = WsClient::connect(&url).await.unwrap();
    page.send_json(serde_json::json!({"type": "hello", "v": 1}))
        .await;
    page.wait_for("welcome", |msg| msg["type"] == "welcome")
        .await;

    relay.sigterm();
    assert_eq!(page.close_code().await, Some(1001));
    let exit = relay.exited().await;
    assert!(exit.success(), "exit status {exit}");
}
