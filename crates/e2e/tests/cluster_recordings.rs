//! Recordings in PostgreSQL (`--store postgres://…`, the renderer built with `cluster`):
//! batches sent to one renderer are rendered, pixel for pixel, by another sharing the
//! database; a batch resent after its renderer was SIGKILLed before acknowledging it is
//! stored once; and while the database is down batches are refused (never acknowledged)
//! and are stored once it is back; on a full disk exactly the acknowledged batches survive
//! a crash. Each test drives the real renderer binary over its link as a relay does,
//! against a PostgreSQL server of its own.

mod common;

use common::process::start_renderer_process;
use serde_json::{json, Value};
use testkit::link_as_relay;
use testkit::postgres::{Postgres, PostgresOptions};
use testkit::{http_get, Image, ServerProcess, TempDir, WsClient};

const POINTS_PER_BATCH: u64 = 50;

/// Batch `seq` of `recording` from connection 1: moves spread over a 1280x800 viewport,
/// every fifth point a click.
fn batch_frame(recording: &str, seq: u64) -> String {
    let points: Vec<Value> = (0..POINTS_PER_BATCH)
        .map(|idx| {
            let kind = if idx % 5 == 0 { "click" } else { "move" };
            json!([
                (seq * 37 + idx * 11) % 1280,
                (seq * 19 + idx * 7) % 800,
                seq * 100 + idx,
                kind
            ])
        })
        .collect();
    page_frame(json!({
        "type": "points", "recording": recording, "seq": seq,
        "viewport": {"width": 1280, "height": 800}, "points": points
    }))
}

fn page_frame(msg: Value) -> String {
    json!({"type": "page", "conn": 1, "msg": msg}).to_string()
}

/// The next page reply on the link, skipping anything else (analytics pushes).
async fn next_reply(link: &mut WsClient) -> Value {
    let reply = link.wait_for("a reply", |msg| msg["type"] == "reply").await;
    reply["msg"].clone()
}

/// Sends batches `seqs` and waits for an ack of each.
async fn send_acked(link: &mut WsClient, recording: &str, seqs: std::ops::Range<u64>) {
    let n_batches = seqs.end - seqs.start;
    for seq in seqs {
        link.send_text(batch_frame(recording, seq)).await;
    }
    for _ in 0..n_batches {
        let reply = next_reply(link).await;
        assert_eq!(reply["type"], "ack", "{reply}");
    }
}

/// Asks for a heatmap of `recording` and returns the answer and the decoded PNG.
async fn generate(
    link: &mut WsClient,
    renderer: &ServerProcess,
    recording: &str,
) -> (Value, Image) {
    link.send_text(page_frame(
        json!({"type": "generate", "recording": recording, "request": 1}),
    ))
    .await;
    let reply = next_reply(link).await;
    assert_eq!(reply["type"], "heatmap", "{reply}");
    let name = reply["name"].as_str().expect("a file name");
    let png = http_get(&renderer.addr(), &format!("/heatmaps/{name}"))
        .await
        .expect("fetch the image");
    assert_eq!(png.status, 200);
    let image = Image::decode(&png.body).expect("a PNG");
    (reply, image)
}

fn start_postgres() -> Postgres {
    // fsync on: these tests are about what a crash keeps.
    Postgres::start_with(PostgresOptions { fsync: true })
        .unwrap_or_else(|err| panic!("cannot start a postgresql server for this test: {err:#}"))
}

/// A renderer on the shared database with folders of its own.
struct Node {
    process: ServerProcess,
    _out_dir: TempDir,
    _data_dir: TempDir,
}

fn start_node(url: &str, label: &str) -> Node {
    let out_dir = TempDir::new(&format!("{label}-out"));
    let data_dir = TempDir::new(&format!("{label}-data"));
    let process = start_renderer_process("127.0.0.1:0", &out_dir, &data_dir, &["--store", url]);
    Node {
        process,
        _out_dir: out_dir,
        _data_dir: data_dir,
    }
}

/// Rows and points the database holds for `recording`.
fn stored(server: &Postgres, recording: &str) -> String {
    server
        .psql(
            "heatmap",
            &format!(
                "SELECT COUNT(*) || ' ' || COALESCE(SUM(n_points), 0) FROM recording_batches WHERE recording = '{recording}'"
            ),
        )
        .expect("query the database")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_renderers_sharing_postgresql_render_identical_pixels() {
    let server = start_postgres();
    let url = server.url();
    let first = start_node(&url, "pg-rec-1");
    let second = start_node(&url, "pg-rec-2");

    let mut link_1 = link_as_relay(first.process.url()).await;
    link_1
        .send_text(page_frame(json!({"type": "start", "recording": "shared",
                                     "viewport": {"width": 1280, "height": 800}})))
        .await;
    assert_eq!(next_reply(&mut link_1).await["type"], "started");
    send_acked(&mut link_1, "shared", 0..20).await;
    assert_eq!(
        stored(&server, "shared"),
        format!("20 {}", 20 * POINTS_PER_BATCH)
    );

    // Both render from the database: the first stored the batches, the second never saw
    // the recording.
    let (ready_1, image_1) = generate(&mut link_1, &first.process, "shared").await;
    let mut link_2 = link_as_relay(second.process.url()).await;
    let (ready_2, image_2) = generate(&mut link_2, &second.process, "shared").await;
    assert_eq!(ready_1["n_points"], 20 * POINTS_PER_BATCH);
    assert_eq!(ready_1["n_points"], ready_2["n_points"]);
    assert_eq!(
        (image_1.width, image_1.height),
        (image_2.width, image_2.height)
    );
    assert!(
        image_1.pixels == image_2.pixels,
        "the two renderers drew different pixels for the same recording"
    );
    // Not a blank image both times: the heat is there.
    assert!(image_1.pixels.iter().any(|&byte| byte != 255));

    // A batch sent to the second is seen by the first, which never held it.
    send_acked(&mut link_2, "shared", 20..21).await;
    link_1
        .send_text(page_frame(
            json!({"type": "generate", "recording": "shared", "request": 2}),
        ))
        .await;
    let reply = next_reply(&mut link_1).await;
    assert_eq!(reply["n_points"], 21 * POINTS_PER_BATCH, "{reply}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_resent_after_a_sigkill_before_its_ack_is_stored_once() {
    let server = start_postgres();
    let url = server.url();
    let first = start_node(&url, "pg-kill-1");
    let mut link = link_as_relay(first.process.url()).await;
    send_acked(&mut link, "killed", 0..10).await;

    // Batch 10 reaches the database, but its renderer dies before the relay reads the ack.
    link.send_text(batch_frame("killed", 10)).await;
    testkit::eventually("batch 10 committed", || {
        let rows = stored(&server, "killed");
        async move { (rows == format!("11 {}", 11 * POINTS_PER_BATCH)).then_some(()) }
    })
    .await;
    first.process.kill();

    // The relay replays it to another renderer, with the next one.
    let second = start_node(&url, "pg-kill-2");
    let mut link = link_as_relay(second.process.url()).await;
    send_acked(&mut link, "killed", 10..12).await;
    assert_eq!(
        stored(&server, "killed"),
        format!("12 {}", 12 * POINTS_PER_BATCH)
    );
    let recorded = server
        .psql(
            "heatmap",
            "SELECT n_points || ' ' || n_batches FROM recordings WHERE id = 'killed'",
        )
        .expect("query the database");
    assert_eq!(recorded, format!("{} 12", 12 * POINTS_PER_BATCH));
    let (ready, _) = generate(&mut link, &second.process, "killed").await;
    assert_eq!(ready["n_points"], 12 * POINTS_PER_BATCH);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_are_refused_while_postgresql_is_down_and_stored_once_it_is_back() {
    let mut server = start_postgres();
    let url = format!("{}?connect_timeout=2", server.url());
    let node = start_node(&url, "pg-down");
    let mut link = link_as_relay(node.process.url()).await;
    send_acked(&mut link, "outage", 0..3).await;

    server.crash().expect("stop postgresql");
    link.send_text(batch_frame("outage", 3)).await;
    let refused = next_reply(&mut link).await;
    assert_eq!(
        refused["type"], "error",
        "not an ack while the database is down: {refused}"
    );
    assert_eq!(refused["code"], "storage_failed", "{refused}");
    assert_eq!(refused["seq"], 3, "{refused}");
    let metrics = http_get(&node.process.addr(), "/metrics")
        .await
        .expect("metrics");
    let metrics = String::from_utf8_lossy(&metrics.body).into_owned();
    assert!(
        metrics.contains("renderer_errors_total{code=\"storage_failed\"} 1"),
        "the failure is counted for the alert"
    );

    server.restart().expect("start postgresql again");
    // The relay resends what was refused (as the page does, until acknowledged); each
    // try waits for its answer, and the database is already up, so a few are plenty.
    let mut answers = Vec::new();
    for _ in 0..5 {
        link.send_text(batch_frame("outage", 3)).await;
        let reply = next_reply(&mut link).await;
        let acked = reply["type"] == "ack";
        answers.push(reply);
        if acked {
            break;
        }
    }
    assert_eq!(
        answers.last().map(|reply| reply["type"].clone()),
        Some(json!("ack")),
        "batch 3 acknowledged after the restart: {answers:?}"
    );
    send_acked(&mut link, "outage", 4..5).await;
    assert_eq!(
        stored(&server, "outage"),
        format!("5 {}", 5 * POINTS_PER_BATCH)
    );
    let (ready, _) = generate(&mut link, &node.process, "outage").await;
    assert_eq!(ready["n_points"], 5 * POINTS_PER_BATCH);
}

/// The sequence numbers stored for `recording`, in order, and the `recordings` row's own
/// counts of points and batches.
fn stored_seqs(server: &Postgres, recording: &str) -> (Vec<u64>, String) {
    let seqs = server
        .psql(
            "cramped_recordings",
            &format!(
                "SELECT COALESCE(string_agg(seq::text, ',' ORDER BY seq), '') FROM recording_batches WHERE recording = '{recording}'"
            ),
        )
        .expect("query the database");
    let seqs = seqs
        .split(',')
        .filter(|seq| !seq.is_empty())
        .map(|seq| seq.parse().expect("a sequence number"))
        .collect();
    let row = server
        .psql(
            "cramped_recordings",
            &format!(
                "SELECT COALESCE((SELECT n_points || ' ' || n_batches FROM recordings WHERE id = '{recording}'), 'none')"
            ),
        )
        .expect("query the database");
    (seqs, row)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_batches_survive_a_full_disk_and_a_restart() {
    let mut server = start_postgres();
    let url = server
        .cramped_url("cramped_recordings")
        .expect("a database on a size-limited tablespace");
    // Room for the schema, which the renderer creates at start.
    server.limit_cramped(64 << 20).expect("room for the schema");
    let node = start_node(&url, "pg-full");
    let mut link = link_as_relay(node.process.url()).await;
    send_acked(&mut link, "full", 0..5).await;

    // Every page on disk, then almost no room: the next writes run out of it part-way,
    // in whichever of the batch's row, its index entry or the recording's row needs a
    // new page first.
    server
        .psql("postgres", "CHECKPOINT")
        .expect("checkpoint before the limit");
    server
        .limit_cramped(16 << 10)
        .expect("limit the tablespace");
    let mut acked = (0..5).collect::<Vec<u64>>();
    let mut refused = Vec::new();
    for seq in 5..2_000 {
        link.send_text(batch_frame("full", seq)).await;
        let reply = next_reply(&mut link).await;
        match reply["type"].as_str() {
            Some("ack") => acked.push(seq),
            _ => {
                assert_eq!(reply["code"], "storage_failed", "{reply}");
                assert_eq!(reply["seq"], seq, "{reply}");
                refused.push(seq);
                if refused.len() == 5 {
                    break;
                }
            }
        }
    }
    assert_eq!(refused.len(), 5, "the disk never filled: {acked:?}");
    eprintln!(
        "{} batches acknowledged before the disk filled, then {refused:?} refused",
        acked.len()
    );
    let metrics = http_get(&node.process.addr(), "/metrics")
        .await
        .expect("metrics");
    let metrics = String::from_utf8_lossy(&metrics.body).into_owned();
    assert!(
        metrics.contains("renderer_errors_total{code=\"storage_failed\"} 5"),
        "each refusal is counted for the storage alert"
    );

    // Whatever failed, the acknowledged batches are there after a crash of the database
    // and of the renderer, each once, and the recording's row agrees with them.
    node.process.kill();
    server.crash().expect("crash postgresql");
    server.limit_cramped(256 << 20).expect("room again");
    server.restart().expect("start postgresql again");
    let (seqs, row) = stored_seqs(&server, "full");
    assert_eq!(seqs, acked, "exactly the acknowledged batches are stored");
    assert_eq!(
        row,
        format!("{} {}", acked.len() as u64 * POINTS_PER_BATCH, acked.len())
    );

    // The refused ones, resent to a new renderer as the relay does, are stored once too.
    let node = start_node(&url, "pg-full-2");
    let mut link = link_as_relay(node.process.url()).await;
    for &seq in &refused {
        send_acked(&mut link, "full", seq..seq + 1).await;
    }
    let (seqs, _) = stored_seqs(&server, "full");
    let mut everything = acked.clone();
    everything.extend(&refused);
    everything.sort_unstable();
    assert_eq!(seqs, everything);
    let (ready, _) = generate(&mut link, &node.process, "full").await;
    assert_eq!(
        ready["n_points"],
        everything.len() as u64 * POINTS_PER_BATCH
    );
}
