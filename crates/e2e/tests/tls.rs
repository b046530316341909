//! TLS end to end: a page over `wss://` to the relay, the relay over `wss://` to the
//! renderer (checked against `--renderer-ca`), images and the API over `https://`; an
//! untrusted renderer refused; a certificate renewed with SIGHUP while a link stays open.

mod common;

use std::io::Write;
use std::process::Command;
use std::sync::{Arc, Mutex, OnceLock};

use common::*;
use serde_json::json;
use testkit::tls::{connect_from, handshake, peer_certificate, TestPki};
use testkit::{http_request_on, Image, ServerProcess, WsClient};
use tokio_tungstenite::tungstenite::Message;

/// A renderer serving `wss://` with `pki`'s certificate.
async fn tls_renderer(pki: &TestPki) -> Renderer {
    let (cert, key) = (pki.cert.clone(), pki.key.clone());
    start_renderer_with(move |config| {
        config.tls_cert = Some(cert);
        config.tls_key = Some(key);
    })
    .await
}

/// A relay serving `https://` with `pki`'s certificate, linked to `renderer` over `wss://`
/// trusting `renderer_ca`.
async fn tls_relay(pki: &TestPki, renderer: &Renderer, renderer_ca: &TestPki) -> Running {
    let url = format!("wss://{}", renderer.running.addr);
    let (cert, key, ca) = (pki.cert.clone(), pki.key.clone(), renderer_ca.ca.clone());
    start_relay_with(&url, move |config| {
        config.tls_cert = Some(cert);
        config.tls_key = Some(key);
        config.renderer_ca = Some(ca);
        reconnect_fast(config);
    })
    .await
}

/// A page over `wss://` to the relay at `addr`, trusting `pki`.
async fn wss_page(addr: std::net::SocketAddr, pki: &TestPki) -> WsClient {
    let stream = connect_from(None, &addr.to_string()).await.unwrap();
    let stream = handshake(stream, "127.0.0.1", pki.client_config())
        .await
        .unwrap();
    WsClient::connect_on(Box::new(stream), &format!("wss://{addr}/ws"), &[])
        .await
        .unwrap()
}

/// `GET path` over `https://` from the server at `addr`, trusting `pki`.
async fn https_get(addr: std::net::SocketAddr, path: &str, pki: &TestPki) -> testkit::RawResponse {
    let stream = connect_from(None, &addr.to_string()).await.unwrap();
    let stream = handshake(stream, "127.0.0.1", pki.client_config())
        .await
        .unwrap();
    http_request_on(stream, &addr.to_string(), "GET", path, &[], "").await
}

/// `GET path` over `https://` with the body as bytes (an image), and the head as text.
async fn https_get_bytes(
    addr: std::net::SocketAddr,
    path: &str,
    pki: &TestPki,
) -> (String, Vec<u8>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let stream = connect_from(None, &addr.to_string()).await.unwrap();
    let mut stream = handshake(stream, "127.0.0.1", pki.client_config())
        .await
        .unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut reply = Vec::new();
    // A peer that closes without close_notify after the answer ends the read with an error.
    let _ = stream.read_to_end(&mut reply).await;
    let body_at = reply
        .windows(4)
        .position(|window| window == b"\r\n\r\n")
        .expect("a complete head")
        + 4;
    let head = String::from_utf8_lossy(&reply[..body_at]).into_owned();
    (head, reply[body_at..].to_vec())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_page_records_and_generates_over_wss_end_to_end() {
    let pki = TestPki::new("e2e");
    let renderer = tls_renderer(&pki).await;
    let relay = tls_relay(&pki, &renderer, &pki).await;

    let mut page = wss_page(relay.addr, &pki).await;
    page.send_json(json!({"type": "hello", "v": 1})).await;
    let welcome = page
        .wait_for("welcome", |msg| msg["type"] == "welcome")
        .await;
    // The link may be up before the page says hello (then `welcome` says so) or after.
    if welcome["renderer"] != "connected" {
        page.wait_for("the wss:// link up", |msg| {
            msg["type"] == "link" && msg["renderer"] == "connected"
        })
        .await;
    }
    page.send_json(
        json!({"type": "start", "recording": "r-tls", "viewport": {"width": 1920, "height": 1080}}),
    )
    .await;
    page.wait_for("started", |msg| msg["type"] == "started")
        .await;
    page.send_json(batch("r-tls", 0, 1920, 1080, &cluster(500.0, 400.0, 100)))
        .await;
    page.wait_for("ack", |msg| msg["type"] == "ack" && msg["seq"] == 0)
        .await;
    page.send_json(json!({"type": "stop", "recording": "r-tls"}))
        .await;
    page.wait_for("stopped", |msg| msg["type"] == "stopped")
        .await;
    page.send_json(json!({"type": "generate", "recording": "r-tls"}))
        .await;
    let heatmap = page
        .wait_for("heatmap", |msg| {
            msg["type"] == "heatmap" || msg["type"] == "error"
        })
        .await;
    assert_eq!(heatmap["type"], "heatmap", "{heatmap}");
    let name = heatmap["name"].as_str().unwrap();

    // The image comes over https:// from the relay, which fetches it over TLS as well, and
    // arrives byte for byte as the renderer wrote it.
    let (head, png) = https_get_bytes(relay.addr, &format!("/heatmaps/{name}"), &pki).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let on_disk = std::fs::read(renderer.out_dir.path().join(name)).unwrap();
    assert_eq!(png, on_disk);
    Image::decode(&png).expect("a png");
    // The API passes through the same TLS connection type.
    let summary = https_get(relay.addr, "/api/analytics/summary", &pki).await;
    assert_eq!(summary.status, 200, "{}", summary.body);
    // And the renderer speaks nothing in clear any more.
    let plain = testkit::http_get(&renderer.running.addr.to_string(), "/healthz").await;
    assert!(plain.is_err(), "plain http to a tls renderer fails");
}

/// Log lines of this test binary, for the one test that asserts one.
fn captured_logs() -> Arc<Mutex<Vec<u8>>> {
    static LOGS: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    LOGS.get_or_init(|| {
        let logs = Arc::new(Mutex::new(Vec::new()));
        let sink = logs.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_ansi(false)
            .with_writer(move || LogSink(sink.clone()))
            .finish();
        tracing::subscriber::set_global_default(subscriber).expect("one subscriber");
        logs
    })
    .clone()
}

struct LogSink(Arc<Mutex<Vec<u8>>>);

impl Write for LogSink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_renderer_certificate_from_another_ca_is_refused_with_a_clear_log_line() {
    let logs = captured_logs();
    let renderer_pki = TestPki::new("renderer");
    let other_ca = TestPki::new("other");
    let renderer = tls_renderer(&renderer_pki).await;
    let relay = tls_relay(&other_ca, &renderer, &other_ca).await;
    let port = renderer.running.addr.port().to_string();
    let line = testkit::eventually("the relay to log the refused certificate", || {
        let logs = logs.clone();
        let port = port.clone();
        async move {
            let text = String::from_utf8_lossy(&logs.lock().unwrap()).into_owned();
            text.lines()
                .find(|line| line.contains("cannot reach the renderer") && line.contains(&port))
                .map(str::to_owned)
        }
    })
    .await;
    assert!(line.contains("WARN"), "{line}");
    assert!(line.contains("invalid peer certificate"), "{line}");
    assert!(
        line.contains("--renderer-ca"),
        "names the flag to fix: {line}"
    );
    let health = https_get(relay.addr, "/healthz", &other_ca).await;
    assert!(
        !health.body.contains(r#""renderer":"connected""#),
        "{}",
        health.body
    );
    let renderer_health = https_get(renderer.running.addr, "/healthz", &renderer_pki).await;
    assert!(
        renderer_health.body.contains(r#""links_open":0"#),
        "no link was made: {}",
        renderer_health.body
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_renews_the_certificate_without_dropping_the_open_link() {
    let pki = TestPki::new("renew");
    let out_dir = testkit::TempDir::new("renew-out");
    let data_dir = testkit::TempDir::new("renew-data");
    let mut command = Command::new(env!("CARGO_BIN_EXE_renderer-process"));
    command
        .args(["--listen", "127.0.0.1:0", "--tls-cert"])
        .arg(&pki.cert)
        .arg("--tls-key")
        .arg(&pki.key)
        .arg("--out-dir")
        .arg(out_dir.path())
        .arg("--data-dir")
        .arg(data_dir.path());
    let renderer = ServerProcess::start(command);
    assert!(renderer.url().starts_with("wss://"), "{}", renderer.url());
    let addr = renderer.addr();
    // A reload sent the moment the address line is out finds the handler, not SIGHUP's
    // default action (the end of the process).
    sighup(&renderer);
    let first = peer_certificate(&addr, pki.client_config()).await.unwrap();

    let stream = connect_from(None, &addr).await.unwrap();
    let stream = handshake(stream, "127.0.0.1", pki.client_config())
        .await
        .unwrap();
    let mut link = WsClient::connect_on(Box::new(stream), &format!("wss://{addr}/ws"), &[])
        .await
        .unwrap();
    link.send_json(json!({"type": "hello", "v": 1})).await;
    link.wait_for("welcome", |msg| msg["type"] == "welcome")
        .await;

    let renewed = pki.issue();
    assert_ne!(first, renewed);
    sighup(&renderer);
    testkit::eventually("new handshakes to get the renewed certificate", || {
        let (addr, config, renewed) = (addr.clone(), pki.client_config(), renewed.clone());
        async move {
            let presented = peer_certificate(&addr, config).await.ok()?;
            (presented == renewed).then_some(())
        }
    })
    .await;

    // The link made with the old certificate is still up and answers.
    link.send_frame(Message::Ping(b"still there".to_vec().into()))
        .await
        .unwrap();
    let pong = link.next_frame().await.unwrap();
    assert!(
        matches!(&pong, Some(Message::Pong(payload)) if &payload[..] == b"still there"),
        "{pong:?}"
    );
}

fn sighup(process: &ServerProcess) {
    let status = Command::new("kill")
        .args(["-HUP", &process.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success(), "kill -HUP: {status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_or_plain_client_on_the_tls_port_is_closed_and_serving_goes_on() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let pki = TestPki::new("stall");
    let (cert, key) = (pki.cert.clone(), pki.key.clone());
    let relay = start_relay_with("ws://127.0.0.1:9", move |config| {
        config.tls_cert = Some(cert);
        config.tls_key = Some(key);
        config.header_timeout_ms = 300;
    })
    .await;
    // A client that never starts its handshake is closed after the header timeout.
    let mut stalled = tokio::net::TcpStream::connect(relay.addr).await.unwrap();
    let started = std::time::Instant::now();
    let mut buf = [0u8; 64];
    let read = tokio::time::timeout(testkit::DEADLINE, stalled.read(&mut buf))
        .await
        .expect("closed within the deadline");
    assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
    assert!(
        started.elapsed() >= std::time::Duration::from_millis(250),
        "not before the header timeout: {:?}",
        started.elapsed()
    );
    // Plain HTTP on the TLS port gets no page, just a closed connection.
    let mut plain = tokio::net::TcpStream::connect(relay.addr).await.unwrap();
    plain
        .write_all(b"GET / HTTP/1.1\r\nhost: 127.0.0.1\r\n\r\n")
        .await
        .unwrap();
    let mut reply = Vec::new();
    let _ = tokio::time::timeout(testkit::DEADLINE, plain.read_to_end(&mut reply))
        .await
        .expect("closed within the deadline");
    assert!(!String::from_utf8_lossy(&reply).contains("HTTP/1.1 200"));
    // And the relay still serves https.
    let health = https_get(relay.addr, "/healthz", &pki).await;
    assert_eq!(health.status, 200, "{}", health.body);
}
