//! The renderer binary on a real, nearly full filesystem (a 2 MiB tmpfs): batches and
//! tracked-site events are refused while the disk is full, resent once space is freed,
//! and after SIGKILL and a restart exactly what was acknowledged is there: every
//! acknowledged point, every event answered 202, and none of an event request answered
//! 503. Events go to the SQLite store (`analytics.sqlite`), whose SQLITE_FULL maps to
//! `StoreError::Full` and a 503 with `Retry-After`.
//!
//! Mounting needs root; without it the test prints why and returns.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::{json, Value};
use testkit::{batch_frame, link_as_relay, ServerProcess, TempDir, WsClient};

const N_BATCHES: u64 = 1500;
const POINTS_PER_BATCH: u64 = 100;
/// One event request every this many batches.
const BATCHES_PER_EVENT_POST: u64 = 10;
const EVENTS_PER_POST: u64 = 20;
/// Space left free when the filesystem is filled: enough for a hundred-odd batches and the
/// event store's write-ahead log (each event request adds a few pages to it) before both
/// meet the full disk.
const FREE_BYTES: u64 = 700 * 1024;

/// A tmpfs mounted on a fresh folder, unmounted on drop.
struct Tmpfs {
    dir: TempDir,
}

impl Tmpfs {
    /// Mounts a tmpfs of `size` (e.g. "2m"), or says why it cannot.
    fn mount(label: &str, size: &str) -> Result<Tmpfs, String> {
        let dir = TempDir::new(label);
        let output = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .output()
            .map_err(|err| format!("cannot run mount: {err}"))?;
        if !output.status.success() {
            return Err(format!(
                "mount -t tmpfs failed ({}): {}",
                output.status,
                String::from_utf8_lossy(&output.stderr).trim()
            ));
        }
        Ok(Tmpfs { dir })
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        // Lazy, so a renderer still holding a file cannot keep the mount alive.
        let _ = Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}

/// The real binary on the given folders, killed on drop.
fn start_renderer(out_dir: &Path, data_dir: &Path) -> ServerProcess {
    let mut command = Command::new(env!("CARGO_BIN_EXE_renderer"));
    command
        .args(["--listen", "127.0.0.1:0", "--out-dir"])
        .arg(out_dir)
        .arg("--data-dir")
        .arg(data_dir);
    ServerProcess::start(command)
}

fn fill_leaving(dir: &Path, free: u64) -> PathBuf {
    let path = dir.join("filler");
    let mut file = File::create(&path).expect("create the filler");
    let chunk = vec![0x5a_u8; 64 * 1024];
    let mut written = 0u64;
    loop {
        match file.write(&chunk) {
            Ok(0) => break,
            Ok(n) => written += n as u64,
            Err(err) if err.raw_os_error() == Some(28) => break,
            Err(err) => panic!("filling the disk: {err}"),
        }
    }
    file.set_len(written.saturating_sub(free))
        .expect("free some space");
    path
}

/// Copies a folder of folders of files (the data folder's shape).
fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_tree(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

/// Sends one batch and reads its answer: `Ok(n_points)` for an ack, `Err(())` for
/// `storage_failed`; anything else fails the test.
async fn send_batch(link: &mut WsClient, seq: u64) -> Result<u64, ()> {
    link.send_text(batch_frame("r-full", seq, POINTS_PER_BATCH))
        .await;
    let reply = link.next_json().await.expect("a reply");
    let msg = &reply["msg"];
    match msg["type"].as_str() {
        Some("ack") => {
            assert_eq!(msg["seq"], seq, "{reply}");
            Ok(msg["n_points"].as_u64().expect("n_points"))
        }
        Some("error") if msg["code"] == "storage_failed" => Err(()),
        _ => panic!("unexpected reply to batch {seq}: {reply}"),
    }
}

/// Posts one request of events, all in session `s{request}`; returns the status code.
async fn post_events(addr: &str, request: u64) -> u16 {
    let events: Vec<Value> = (0..EVENTS_PER_POST)
        .map(|idx| {
            // No timestamp: the events happen now, so the sessions listing shows them.
            json!({"type": "click", "page": "/full", "sessionId": format!("s{request}"),
                   "metadata": {"x": 100 + idx, "y": 200, "vw": 1440, "vh": 800, "dw": 1440, "dh": 2000}})
        })
        .collect();
    let body = Value::Array(events).to_string();
    let json = [("content-type", "application/json")];
    let reply = testkit::http_request(addr, "POST", "/api/events", &json, &body).await;
    assert_ne!(reply.status, 0, "no status in the answer: {}", reply.head);
    reply.status
}

/// Events held per session, from the renderer's analytics.
async fn events_by_session(addr: &str) -> BTreeMap<String, u64> {
    let response = testkit::http_get(addr, "/api/analytics/sessions")
        .await
        .unwrap();
    let sessions: Value = serde_json::from_slice(&response.body).unwrap();
    sessions
        .as_array()
        .expect("a list of sessions")
        .iter()
        .map(|session| {
            (
                session["sessionId"].as_str().unwrap().to_owned(),
                session["events"].as_u64().unwrap(),
            )
        })
        .collect()
}

async fn health(addr: &str) -> Value {
    let response = testkit::http_get(addr, "/healthz").await.unwrap();
    serde_json::from_slice(&response.body).unwrap()
}

/// What the renderer must hold: `points` points and exactly the accepted event requests.
async fn assert_holds(addr: &str, points: u64, accepted: &BTreeSet<u64>, when: &str) {
    let health = health(addr).await;
    assert_eq!(health["points"], points, "{when}: {health}");
    assert_eq!(health["status"], "ok", "{when}: {health}");
    assert_eq!(health["storage"]["corrupt_spans"], 0, "{when}: {health}");
    let expected: BTreeMap<String, u64> = accepted
        .iter()
        .map(|request| (format!("s{request}"), EVENTS_PER_POST))
        .collect();
    assert_eq!(events_by_session(addr).await, expected, "{when}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_loses_nothing_acknowledged() {
    let tmpfs = match Tmpfs::mount("disk-full", "2m") {
        Ok(tmpfs) => tmpfs,
        Err(reason) => {
            eprintln!("skipping the disk-full test: {reason} (it needs root to mount a tmpfs)");
            return;
        }
    };
    let data_dir = tmpfs.path().join("data");
    let out_dir = tmpfs.path().join("out");

    // Phase 1: the disk fills up while batches and event requests arrive.
    let renderer = start_renderer(&out_dir, &data_dir);
    let addr = renderer.addr();
    let mut page = link_as_relay(renderer.url()).await;
    let filler = fill_leaving(tmpfs.path(), FREE_BYTES);
    let (mut acked, mut refused) = (BTreeSet::new(), Vec::new());
    let (mut accepted, mut refused_requests) = (BTreeSet::new(), BTreeSet::new());
    let mut acks_before_first_refusal = None;
    for seq in 0..N_BATCHES {
        match send_batch(&mut page, seq).await {
            Ok(n_points) => {
                acked.insert(seq);
                assert_eq!(n_points, acked.len() as u64 * POINTS_PER_BATCH);
            }
            Err(()) => {
                acks_before_first_refusal.get_or_insert(acked.len());
                refused.push(seq);
            }
        }
        if seq % BATCHES_PER_EVENT_POST == 0 {
            let request = seq / BATCHES_PER_EVENT_POST;
            match post_events(&addr, request).await {
                202 => accepted.insert(request),
                503 => refused_requests.insert(request),
                status => panic!("event request {request} answered {status}"),
            };
        }
    }
    eprintln!(
        "disk full: {} batches acknowledged ({} before the first refusal), {} refused; \
         {} event requests answered 202, {} answered 503",
        acked.len(),
        acks_before_first_refusal.unwrap_or(acked.len()),
        refused.len(),
        accepted.len(),
        refused_requests.len()
    );
    assert!(!refused.is_empty(), "the disk never filled up");
    assert!(!refused_requests.is_empty(), "no event request was refused");
    assert!(acked.len() > 100, "too few batches fit: {}", acked.len());

    // The live renderer took in memory exactly the requests it answered 202.
    let expected: BTreeMap<String, u64> = accepted
        .iter()
        .map(|request| (format!("s{request}"), EVENTS_PER_POST))
        .collect();
    assert_eq!(
        events_by_session(&addr).await,
        expected,
        "in memory while full"
    );

    // What a SIGKILL right now would leave: a copy of the data folder, opened by a second
    // renderer. The failed appends left nothing behind, not even a torn tail.
    let snapshot = TempDir::new("disk-full-snapshot");
    copy_tree(&data_dir, &snapshot.path().join("data"));
    let probe = start_renderer(&snapshot.path().join("out"), &snapshot.path().join("data"));
    assert_holds(
        &probe.addr(),
        acked.len() as u64 * POINTS_PER_BATCH,
        &accepted,
        "a copy taken while the disk was full",
    )
    .await;
    assert_eq!(health(&probe.addr()).await["storage"]["torn_tails"], 0);
    probe.kill();

    // Phase 2: space is freed; the page resends what was refused and stops, on the same
    // renderer that saw the failures.
    std::fs::remove_file(&filler).expect("free the disk");
    for &seq in &refused {
        let n_points = send_batch(&mut page, seq)
            .await
            .unwrap_or_else(|()| panic!("batch {seq} refused with space free"));
        acked.insert(seq);
        assert_eq!(n_points, acked.len() as u64 * POINTS_PER_BATCH);
    }
    let late_request = N_BATCHES;
    assert_eq!(post_events(&addr, late_request).await, 202);
    accepted.insert(late_request);
    page.send_json(
        json!({"type": "page", "conn": 1, "msg": {"type": "stop", "recording": "r-full"}}),
    )
    .await;
    let stopped = page.next_json().await.unwrap();
    assert_eq!(stopped["msg"]["type"], "stopped", "{stopped}");
    let total = N_BATCHES * POINTS_PER_BATCH;
    assert_eq!(stopped["msg"]["n_points"], total, "{stopped}");

    // SIGKILL and restart: every acknowledged point and 202'd event, nothing of a 503.
    renderer.kill();
    let renderer = start_renderer(&out_dir, &data_dir);
    let addr = renderer.addr();
    assert_holds(&addr, total, &accepted, "after the restart").await;
    assert_eq!(health(&addr).await["storage"]["torn_tails"], 0);
    eprintln!(
        "after restart: {total} points recovered of {total} acknowledged; {} event requests \
         ({} events) recovered, none of the {} refused",
        accepted.len(),
        accepted.len() as u64 * EVENTS_PER_POST,
        refused_requests.len()
    );
    drop(renderer);
}
