//! Starting the real relay and renderer in this process, on ephemeral loopback ports.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::PathBuf;

use testkit::TempDir;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// A running server and the means to stop it.
pub struct Running {
    /// Where it listens.
    pub addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<anyhow::Result<()>>>,
}

impl Running {
    /// Stops it and waits until `run` has returned (links closed, tasks done).
    pub async fn stop(mut self) {
        self.stop_in_place().await;
    }

    async fn stop_in_place(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            task.await
                .expect("server task panicked")
                .expect("server returned an error");
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// A renderer with its own output and data folders.
pub struct Renderer {
    pub running: Running,
    pub out_dir: TempDir,
    pub data_dir: TempDir,
}

impl Renderer {
    pub fn ws_url(&self) -> String {
        format!("ws://{}", self.running.addr)
    }

    /// PNG files in the output folder.
    pub fn images(&self) -> Vec<PathBuf> {
        let mut images: Vec<PathBuf> = std::fs::read_dir(self.out_dir.path())
            .map(|entries| {
                entries
                    .filter_map(|entry| entry.ok().map(|entry| entry.path()))
                    .collect()
            })
            .unwrap_or_default();
        images.sort();
        images
    }
}

impl Renderer {
    /// Stops it, keeping its port and folders for [`StoppedRenderer::restart`].
    pub async fn stop(self) -> StoppedRenderer {
        let Renderer {
            running,
            out_dir,
            data_dir,
        } = self;
        let addr = running.addr;
        running.stop().await;
        StoppedRenderer {
            addr,
            out_dir,
            data_dir,
        }
    }
}

/// A renderer that was stopped, with what it needs to come back as it was.
pub struct StoppedRenderer {
    addr: SocketAddr,
    out_dir: TempDir,
    data_dir: TempDir,
}

impl StoppedRenderer {
    /// Starts it again on the same port with the same folders (and so the same data).
    pub async fn restart(self) -> Renderer {
        let listener = rebind(self.addr).await;
        let config = renderer_config(&self.out_dir, &self.data_dir);
        Renderer {
            running: spawn_renderer_on(listener, config),
            out_dir: self.out_dir,
            data_dir: self.data_dir,
        }
    }
}

/// Binds `addr` again after the server that had it stopped, waiting (boundedly) until the
/// port is free.
///
/// A stopped server's listener can outlive it by a few milliseconds: a child process that
/// another test of this binary spawns at that moment is forked with a copy of every open
/// descriptor, the listener included, and holds it until its `exec` closes it
/// (close-on-exec). Binding at once then fails with "address in use" now and then.
pub async fn rebind(addr: SocketAddr) -> TcpListener {
    testkit::eventually(&format!("{addr} to be free again"), || async {
        TcpListener::bind(addr).await.ok()
    })
    .await
}

/// A relay that retries the renderer every few tens of milliseconds, so tests that restart
/// the renderer do not wait out the default back-off.
pub async fn start_relay_reconnecting_fast(renderer_url: &str) -> Running {
    start_relay_with(renderer_url, reconnect_fast).await
}

/// Starts a relay again on `addr` (after a stop), with default settings.
pub async fn restart_relay(addr: SocketAddr, renderer_url: &str) -> Running {
    restart_relay_with(addr, renderer_url, |_| {}).await
}

/// Starts a relay again on `addr` (after a stop), after `adjust` changes its config.
pub async fn restart_relay_with(
    addr: SocketAddr,
    renderer_url: &str,
    adjust: impl FnOnce(&mut relay::Config),
) -> Running {
    let listener = rebind(addr).await;
    let mut config = relay::Config {
        listen: addr,
        renderer: renderer_url.to_owned(),
        ..relay::Config::default()
    };
    adjust(&mut config);
    spawn_relay_on(listener, config)
}

/// Retries the renderer every few tens of milliseconds (see [`start_relay_reconnecting_fast`]).
pub fn reconnect_fast(config: &mut relay::Config) {
    config.backoff_initial_ms = 20;
    config.backoff_max_ms = 200;
}

pub fn renderer_config(out_dir: &TempDir, data_dir: &TempDir) -> renderer::Config {
    renderer::Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        out_dir: out_dir.path().to_owned(),
        data_dir: data_dir.path().to_owned(),
        ..renderer::Config::default()
    }
}

/// Starts a renderer on `listener` with `config`.
pub fn spawn_renderer_on(listener: TcpListener, config: renderer::Config) -> Running {
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(renderer::run(listener, config, async {
        let _ = stopped.await;
    }));
    Running {
        addr,
        stop: Some(stop),
        task: Some(task),
    }
}

/// Starts a renderer on a free port with default settings.
pub async fn start_renderer() -> Renderer {
    start_renderer_with(|_| {}).await
}

/// Starts a renderer on a free port, after `adjust` changes its config.
pub async fn start_renderer_with(adjust: impl FnOnce(&mut renderer::Config)) -> Renderer {
    let out_dir = TempDir::new("out");
    let data_dir = TempDir::new("data");
    let mut config = renderer_config(&out_dir, &data_dir);
    adjust(&mut config);
    let listener = TcpListener::bind(config.listen).await.unwrap();
    Renderer {
        running: spawn_renderer_on(listener, config),
        out_dir,
        data_dir,
    }
}

/// Starts a relay on a free port pointing at `renderer_url`, after `adjust` changes its config.
pub async fn start_relay_with(
    renderer_url: &str,
    adjust: impl FnOnce(&mut relay::Config),
) -> Running {
    let mut config = relay::Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        renderer: renderer_url.to_owned(),
        ..relay::Config::default()
    };
    adjust(&mut config);
    let listener = TcpListener::bind(config.listen).await.unwrap();
    spawn_relay_on(listener, config)
}

/// Starts a relay on `listener` with `config`.
pub fn spawn_relay_on(listener: TcpListener, config: relay::Config) -> Running {
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(relay::run(listener, config, async {
        let _ = stopped.await;
    }));
    Running {
        addr,
        stop: Some(stop),
        task: Some(task),
    }
}

/// Starts a relay with default settings.
pub async fn start_relay(renderer_url: &str) -> Running {
    start_relay_with(renderer_url, |_| {}).await
}

/// A page's WebSocket to the relay, after the hello/welcome handshake; waits until the
/// relay reports the renderer link as `want_renderer` (skipping intermediate states).
pub async fn page(relay: &Running, want_renderer: &str) -> testkit::WsClient {
    page_at(relay.addr, want_renderer).await
}

/// A page's WebSocket to the relay at `addr`, connected as `web/app.js` reconnects: retried
/// until the relay accepts (it may be restarting), then hello/welcome, then waiting until
/// the relay reports the renderer link as `want_renderer`.
pub async fn page_at(addr: SocketAddr, want_renderer: &str) -> testkit::WsClient {
    let (mut client, welcome) = reconnect_page(addr).await;
    if welcome["renderer"] != want_renderer {
        client
            .wait_for(&format!("renderer link {want_renderer}"), |msg| {
                msg["type"] == "link" && msg["renderer"] == want_renderer
            })
            .await;
    }
    client
}

/// Connects a page to the relay at `addr`, retrying until the relay accepts, and returns
/// it with the relay's `welcome` once the hello/welcome handshake is done.
pub async fn reconnect_page(addr: SocketAddr) -> (testkit::WsClient, serde_json::Value) {
    let mut client = testkit::eventually("the relay to accept a page", || async {
        testkit::WsClient::connect(&format!("ws://{addr}/ws"))
            .await
            .ok()
    })
    .await;
    client
        .send_json(serde_json::json!({"type": "hello", "v": 1}))
        .await;
    let welcome = client
        .wait_for("welcome", |msg| msg["type"] == "welcome")
        .await;
    (client, welcome)
}

/// The value of the sample `name` (a gauge, or a counter with its `_total`) on the
/// `/metrics` page of the server at `addr`; `None` if it cannot be read.
pub async fn metric(addr: &str, name: &str) -> Option<f64> {
    let metrics = testkit::http_get(addr, "/metrics").await.ok()?;
    let text = String::from_utf8_lossy(&metrics.body).into_owned();
    text.lines().find_map(|line| {
        let value = line.strip_prefix(name)?.strip_prefix(' ')?;
        value.trim().parse().ok()
    })
}

/// What a fault test's page did, for [`report`].
#[derive(Debug, Default)]
pub struct PageFigures {
    /// Distinct batches in the recording.
    pub batches: u64,
    /// Points in those batches, each counted once.
    pub points: u64,
    /// Batch frames written to the relay, resends included.
    pub frames_sent: u64,
    /// Acknowledgements received until every batch had one.
    pub acks: u64,
}

/// What the renderer holds at the end of a fault test, read from its `/metrics`.
#[derive(Debug)]
pub struct StoreFigures {
    /// Points held over all recordings (replayed from the logs at start, then added to).
    pub points_held: u64,
    /// New batches stored since the renderer last started.
    pub batches_stored: u64,
    /// Batches received again and not counted, since the renderer last started.
    pub batches_duplicate: u64,
}

/// Reads the renderer's figures and prints one line with the page's, so that
/// `cargo test -- --nocapture` reports every case of the kill matrix with numbers.
pub async fn report(
    case: &str,
    page: &PageFigures,
    renderer_addr: &str,
    generated: u64,
) -> StoreFigures {
    let read = |name: &'static str| async move {
        metric(renderer_addr, name)
            .await
            .unwrap_or_else(|| panic!("{name} on the renderer's /metrics")) as u64
    };
    let store = StoreFigures {
        points_held: read("renderer_points_held").await,
        batches_stored: read("renderer_batches_stored_total").await,
        batches_duplicate: read("renderer_batches_duplicate_total").await,
    };
    println!(
        "kill matrix | {case} | sent {} batches, {} points | {} batch frames with resends | \
         {} acks | renderer holds {} points; since its last start {} batches \
         new, {} duplicate | Generate counted {generated}",
        page.batches,
        page.points,
        page.frames_sent,
        page.acks,
        store.points_held,
        store.batches_stored,
        store.batches_duplicate,
    );
    store
}

/// A batch of points (`[x, y]` in a `width`x`height` viewport) as JSON.
pub fn batch(
    recording: &str,
    seq: u64,
    width: u32,
    height: u32,
    points: &[(f32, f32)],
) -> serde_json::Value {
    let points: Vec<serde_json::Value> = points
        .iter()
        .enumerate()
        .map(|(idx, (x, y))| serde_json::json!([x, y, idx as u32 * 10, "move"]))
        .collect();
    serde_json::json!({
        "type": "points", "recording": recording, "seq": seq,
        "viewport": {"width": width, "height": height}, "points": points
    })
}

/// `n` points in a small cluster around `(x, y)`.
pub fn cluster(x: f32, y: f32, n: usize) -> Vec<(f32, f32)> {
    (0..n)
        .map(|idx| {
            let angle = idx as f32 * 2.399;
            let radius = (idx % 7) as f32 * 2.0;
            (x + radius * angle.cos(), y + radius * angle.sin())
        })
        .collect()
}
/// Stores `events` through the relay's event API, as a tracked site sends them, and
/// checks the 202.
pub async fn post_events(addr: &str, events: &serde_json::Value) {
    let reply = testkit::http_request(addr, "POST", "/api/events", &[], &events.to_string()).await;
    assert_eq!(reply.status, 202, "{}", reply.body);
}

/// Now in milliseconds since the Unix epoch, as the event API's timestamps count.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

pub mod browser;
pub mod nginx;
pub mod process;

/// Waits until the relay's renderer link is up (its `/healthz` says `connected`): tracked
/// events are stored over the link only, and until it is up the relay answers them 503.
pub async fn wait_linked(relay: &Running) {
    wait_linked_at(&relay.addr.to_string()).await
}

/// [`wait_linked`] for the relay at `addr`.
pub async fn wait_linked_at(addr: &str) {
    let addr = addr.to_owned();
    testkit::eventually("the relay's renderer link to be up", || {
        let addr = addr.clone();
        async move {
            let reply = testkit::http_get(&addr, "/healthz").await.ok()?;
            let health: serde_json::Value = serde_json::from_slice(&reply.body).ok()?;
            (health["renderer"] == "connected").then_some(())
        }
    })
    .await
}
