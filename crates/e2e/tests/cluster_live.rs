//! Cluster mode's live features across relays and renderers: presence, members and
//! dashboards, cursors and the dashboard feed reach pages on every relay over NATS core
//! subjects, and every renderer's live view counts every event on the bus. Each test
//! starts its own NATS server (and PostgreSQL when renderers take part) and the real
//! relay and renderer binaries as processes, so it can SIGKILL a relay.

mod common;

use std::net::SocketAddr;
use std::process::Command;
use std::time::{Duration, Instant};

use common::process::start_renderer_process;
use common::{metric, reconnect_page};
use serde_json::{json, Value};
use testkit::nats::NatsServer;
use testkit::postgres::Postgres;
use testkit::{eventually, http_request, ServerProcess, TempDir, WsClient};

/// What the issue asks of a visitor on another relay: seen by a dashboard within this.
const CROSS_RELAY_DEADLINE: Duration = Duration::from_secs(2);

/// A relay's default `--live-expiry-ms` (3 s) plus a second of ticks and scheduling: a
/// killed relay's pages are gone from the others within this.
const EXPIRY_DEADLINE: Duration = Duration::from_secs(5);

/// Longest wait for one expected message, however many others arrive meanwhile (pushes
/// every second would otherwise keep a wrong expectation waiting for ever).
const MESSAGE_DEADLINE: Duration = Duration::from_secs(15);

/// Skips messages on `client` until one matches `pred`, failing after [`MESSAGE_DEADLINE`].
async fn wait(client: &mut WsClient, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
    tokio::time::timeout(MESSAGE_DEADLINE, client.wait_for(what, pred))
        .await
        .unwrap_or_else(|_| panic!("no {what} within {MESSAGE_DEADLINE:?}"))
}

fn start_nats() -> NatsServer {
    NatsServer::start()
        .unwrap_or_else(|err| panic!("cannot start a nats server for this test: {err:#}"))
}

/// A relay process on `nats`, linked to `renderer` (a vacant address when the test needs
/// no renderer), once its bus is connected.
async fn relay(nats: &NatsServer, renderer: &str) -> ServerProcess {
    let mut command = Command::new(env!("CARGO_BIN_EXE_relay-process"));
    command.args([
        "--listen",
        "127.0.0.1:0",
        "--renderer",
        renderer,
        "--bus",
        &nats.url(),
        "--backoff-max-ms",
        "200",
        "--max-api-requests-per-sec",
        "0",
    ]);
    let relay = ServerProcess::start(command);
    let addr = relay.addr();
    eventually("the relay's bus to connect", || {
        let addr = addr.clone();
        async move {
            let health = testkit::http_get(&addr, "/healthz").await.ok()?;
            let health: Value = serde_json::from_slice(&health.body).ok()?;
            (health["bus"] == "connected").then_some(())
        }
    })
    .await;
    relay
}

/// A `ws://` address nothing listens on (bound, read, released).
async fn vacant_renderer() -> String {
    let vacant = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = vacant.local_addr().unwrap();
    drop(vacant);
    format!("ws://{addr}")
}

/// Waits until every relay in `relays` shows `others` other relays (each has heard the
/// others' heartbeat, so both directions of the live subjects work).
async fn wait_meshed(relays: &[&ServerProcess], others: f64) {
    for relay in relays {
        let addr = relay.addr();
        eventually("the relays to hear each other", || {
            let addr = addr.clone();
            async move { (metric(&addr, "relay_live_relays").await? == others).then_some(()) }
        })
        .await;
    }
}

/// A page on `relay` after hello/welcome, with the `members` message it got.
async fn member(relay: &ServerProcess) -> (WsClient, Value) {
    let addr: SocketAddr = relay.addr().parse().unwrap();
    let (mut client, _welcome) = reconnect_page(addr).await;
    let members = wait(&mut client, "members", |msg| msg["type"] == "members").await;
    (client, members)
}

/// A page on `relay` that sent `watch`.
async fn dashboard(relay: &ServerProcess) -> (WsClient, Value) {
    let (mut client, members) = member(relay).await;
    client.send_json(json!({"type": "watch"})).await;
    (client, members)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dashboard_sees_a_visitor_on_another_relay_within_two_seconds_and_loses_it() {
    let nats = start_nats();
    let renderer = vacant_renderer().await;
    let relay_a = relay(&nats, &renderer).await;
    let relay_b = relay(&nats, &renderer).await;
    wait_meshed(&[&relay_a, &relay_b], 1.0).await;
    let (mut watching, _) = dashboard(&relay_a).await;
    wait(&mut watching, "its own arrival", |msg| {
        msg["type"] == "user_connected" && msg["dashboards"] == 1
    })
    .await;

    // A visitor arrives on relay B and picks a name: the dashboard on A hears of it, the
    // name and the counts, within two seconds.
    let started = Instant::now();
    let (mut visitor, _) = member(&relay_b).await;
    visitor
        .send_json(json!({"type": "set_name", "name": "Visitor on B"}))
        .await;
    let joined = wait(&mut watching, "the visitor's name", |msg| {
        msg["type"] == "user_join" && msg["member"]["name"] == "Visitor on B"
    })
    .await;
    assert_eq!(joined["count"], 2, "{joined}");
    wait(&mut watching, "presence with the visitor", |msg| {
        msg["type"] == "presence" && msg["online"] == 2
    })
    .await;
    let seen_after = started.elapsed();
    println!("cross-relay visitor seen after {seen_after:?}");
    assert!(
        seen_after < CROSS_RELAY_DEADLINE,
        "the visitor on B reached the dashboard on A after {seen_after:?}"
    );

    // A second dashboard, on B, is announced to the one on A as dashboards come and go.
    let (second, _) = dashboard(&relay_b).await;
    wait(&mut watching, "the dashboard on B", |msg| {
        msg["type"] == "user_connected" && msg["dashboards"] == 2
    })
    .await;
    drop(second);
    wait(&mut watching, "the dashboard on B leaving", |msg| {
        msg["type"] == "user_disconnected" && msg["dashboards"] == 1
    })
    .await;

    // The visitor closes its page: it leaves the dashboard's list and counts.
    drop(visitor);
    let left = wait(&mut watching, "the visitor leaving", |msg| {
        msg["type"] == "user_leave" && msg["member"]["id"] == joined["member"]["id"]
    })
    .await;
    assert_eq!(left["count"], 1, "{left}");
    wait(&mut watching, "presence without the visitor", |msg| {
        msg["type"] == "presence" && msg["online"] == 1
    })
    .await;

    // Another visitor on B, then relay B is killed outright: nothing says goodbye, and its
    // pages vanish from A's counts when its heartbeat stops.
    let (_stranded, _) = member(&relay_b).await;
    wait(&mut watching, "presence with the second visitor", |msg| {
        msg["type"] == "presence" && msg["online"] == 2
    })
    .await;
    let killed = Instant::now();
    relay_b.kill();
    wait(&mut watching, "presence without relay B", |msg| {
        msg["type"] == "presence" && msg["online"] == 1
    })
    .await;
    let gone_after = killed.elapsed();
    println!("killed relay's pages gone after {gone_after:?}");
    assert!(
        gone_after < EXPIRY_DEADLINE,
        "relay B's pages stayed on A for {gone_after:?} after it was killed"
    );
    assert_eq!(
        metric(&relay_a.addr(), "relay_live_relays").await,
        Some(0.0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cursors_cross_relays_and_a_page_never_gets_its_own() {
    let nats = start_nats();
    let renderer = vacant_renderer().await;
    let relay_a = relay(&nats, &renderer).await;
    let relay_b = relay(&nats, &renderer).await;
    wait_meshed(&[&relay_a, &relay_b], 1.0).await;
    let (mut on_a, members_a) = member(&relay_a).await;
    let (mut on_b, _) = member(&relay_b).await;
    let own_id = members_a["you"]["id"].clone();
    // A's page learns B's page as a member; its cursor must carry the same id.
    let b_as_seen_on_a = wait(&mut on_a, "the page on B as a member", |msg| {
        msg["type"] == "user_join"
    })
    .await["member"]["id"]
        .clone();
    assert_ne!(b_as_seen_on_a, own_id, "ids are unique on each relay");

    on_a.send_json(json!({"type": "cursor", "x": 0.25, "y": 0.5}))
        .await;
    on_b.send_json(json!({"type": "cursor", "x": 0.75, "y": 0.125}))
        .await;
    let seen_on_a = wait(&mut on_a, "B's cursor on A", |msg| {
        msg["type"] == "cursors"
            && msg["cursors"]
                .as_array()
                .is_some_and(|cursors| cursors.iter().any(|c| c["x"] == 0.75))
    })
    .await;
    let cursors = seen_on_a["cursors"].as_array().unwrap();
    assert_eq!(
        cursors.len(),
        1,
        "only the other page's cursor: {seen_on_a}"
    );
    assert_eq!(cursors[0]["id"], b_as_seen_on_a, "{seen_on_a}");
    assert_eq!(cursors[0]["y"], 0.125, "{seen_on_a}");
    let seen_on_b = wait(&mut on_b, "A's cursor on B", |msg| {
        msg["type"] == "cursors"
            && msg["cursors"]
                .as_array()
                .is_some_and(|cursors| cursors.iter().any(|c| c["x"] == 0.25))
    })
    .await;
    assert_eq!(
        seen_on_b["cursors"].as_array().unwrap().len(),
        1,
        "{seen_on_b}"
    );

    // Moving again: A keeps getting B's cursor, never its own.
    on_b.send_json(json!({"type": "cursor", "x": 0.5, "y": 0.5}))
        .await;
    let moved = wait(&mut on_a, "B's cursor moved", |msg| {
        msg["type"] == "cursors"
            && msg["cursors"]
                .as_array()
                .is_some_and(|cursors| cursors.iter().any(|c| c["x"] == 0.5))
    })
    .await;
    assert!(
        moved["cursors"]
            .as_array()
            .unwrap()
            .iter()
            .all(|cursor| cursor["id"] != own_id),
        "a page got its own cursor: {moved}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_posted_to_one_relay_reach_the_feed_of_a_dashboard_on_another() {
    let nats = start_nats();
    let renderer = vacant_renderer().await;
    let relay_a = relay(&nats, &renderer).await;
    let relay_b = relay(&nats, &renderer).await;
    wait_meshed(&[&relay_a, &relay_b], 1.0).await;
    let (mut watching, _) = dashboard(&relay_a).await;
    // Relay B notes activity only while a dashboard somewhere watches: wait until it
    // knows of the one on A (its pages see it in presence).
    let (mut on_b, _) = member(&relay_b).await;
    wait(&mut on_b, "the dashboard on A in B's presence", |msg| {
        msg["type"] == "presence" && msg["dashboards"] == 1
    })
    .await;

    let events = json!([
        {"type": "pageview", "page": "/cross", "sessionId": "cross-relay-1", "seq": 1},
        {"type": "click", "page": "/cross", "sessionId": "cross-relay-1", "seq": 2},
    ]);
    let reply = http_request(
        &relay_b.addr(),
        "POST",
        "/api/events",
        &[],
        &events.to_string(),
    )
    .await;
    assert_eq!(reply.status, 202, "{}", reply.body);
    let mut seen = Vec::new();
    while seen.len() < 2 {
        let activity = wait(&mut watching, "B's events in A's feed", |msg| {
            msg["type"] == "session_activity"
        })
        .await;
        for event in activity["events"].as_array().unwrap() {
            assert_eq!(event["sessionId"], "cross-relay-1", "{activity}");
            seen.push(event["type"].as_str().unwrap().to_owned());
        }
    }
    assert_eq!(seen, ["pageview", "click"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_two_renderers_a_dashboards_live_summary_counts_every_event() {
    let nats = start_nats();
    let postgres = Postgres::start()
        .unwrap_or_else(|err| panic!("cannot start a postgresql server for this test: {err:#}"));
    let renderer = |out_dir: &TempDir, data_dir: &TempDir| {
        start_renderer_process(
            "127.0.0.1:0",
            out_dir,
            data_dir,
            &[
                "--store",
                &postgres.url(),
                "--bus",
                &nats.url(),
                // One batch at a time, so the two renderers take turns on the stream.
                "--bus-batch",
                "1",
            ],
        )
    };
    let (out_a, data_a, out_b, data_b) = (
        TempDir::new("live-out"),
        TempDir::new("live-data"),
        TempDir::new("live-out"),
        TempDir::new("live-data"),
    );
    let renderer_a = renderer(&out_a, &data_a);
    let renderer_b = renderer(&out_b, &data_b);
    // A renderer answers HTTP once it has started (its live subscription made before it
    // read the store): events are posted only then, so each renderer's live view is
    // whole from its start.
    for renderer in [&renderer_a, &renderer_b] {
        let addr = renderer.addr();
        eventually("the renderer to start", || {
            let addr = addr.clone();
            async move { testkit::http_get(&addr, "/healthz").await.ok() }
        })
        .await;
    }
    let relay = relay(&nats, renderer_a.url()).await;
    let addr: SocketAddr = relay.addr().parse().unwrap();
    let mut watching = common::page_at(addr, "connected").await;
    watching.send_json(json!({"type": "watch"})).await;

    // Requests go in rounds sent at once, as many visitors would, until both renderers
    // have stored a share (the second may bind the shared consumer a little later):
    // without sharing, renderer A's live view would then show only its own share.
    const REQUESTS_PER_ROUND: usize = 10;
    const MAX_ROUNDS: usize = 20;
    const EVENTS_PER_REQUEST: usize = 5;
    let now = common::now_ms();
    let mut requests = 0;
    let (stored_a, stored_b) = loop {
        assert!(
            requests < REQUESTS_PER_ROUND * MAX_ROUNDS,
            "renderer B never took a batch from the shared consumer"
        );
        let posts: Vec<_> = (requests..requests + REQUESTS_PER_ROUND)
            .map(|index| {
                let events: Vec<Value> = (0..EVENTS_PER_REQUEST)
                    .map(|seq| {
                        json!({"type": "click", "page": "/live", "sessionId": format!("live-{index}"),
                               "seq": seq, "timestamp": now + seq as i64})
                    })
                    .collect();
                let relay_addr = relay.addr();
                tokio::spawn(async move {
                    http_request(
                        &relay_addr,
                        "POST",
                        "/api/events",
                        &[],
                        &Value::Array(events).to_string(),
                    )
                    .await
                })
            })
            .collect();
        for post in posts {
            let reply = post.await.unwrap();
            assert_eq!(reply.status, 202, "{}", reply.body);
        }
        requests += REQUESTS_PER_ROUND;
        let posted = (requests * EVENTS_PER_REQUEST) as f64;
        let (a, b) = eventually("every event stored by the two renderers", || async {
            let a = metric(&renderer_a.addr(), "renderer_events_total").await?;
            let b = metric(&renderer_b.addr(), "renderer_events_total").await?;
            (a + b >= posted).then_some((a, b))
        })
        .await;
        if a > 0.0 && b > 0.0 {
            break (a, b);
        }
    };
    let total = (requests * EVENTS_PER_REQUEST) as u64;
    println!("renderer A stored {stored_a} events, renderer B {stored_b}, of {total}");
    println!(
        "live messages dropped: renderer A {:?}, renderer B {:?}",
        metric(&renderer_a.addr(), "renderer_live_dropped_total").await,
        metric(&renderer_b.addr(), "renderer_live_dropped_total").await
    );
    let mut last_count = Value::Null;
    let update = tokio::time::timeout(MESSAGE_DEADLINE, async {
        loop {
            let msg = watching.next_json().await.unwrap();
            if msg["type"] == "analytics" {
                last_count = msg["summary"]["events_last_minute"].clone();
                if last_count == total {
                    return msg;
                }
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("the live summary counted {last_count} events, not all {total}"));
    assert_eq!(update["summary"]["active_users"], requests, "{update}");
    let folded = metric(&renderer_a.addr(), "renderer_live_folded_total")
        .await
        .unwrap();
    assert_eq!(folded, stored_b, "renderer A folded in what B stored");
}

/// Publishes `payloads` on `subject` as a bare NATS client would (the text protocol over
/// TCP), and waits for the server's PONG, so they have been routed when it returns.
async fn nats_publish(nats: &NatsServer, subject: &str, payloads: &[Vec<u8>]) {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
    let stream = tokio::net::TcpStream::connect(("127.0.0.1", nats.port()))
        .await
        .expect("connect to nats");
    let (read, mut write) = stream.into_split();
    let mut lines = BufReader::new(read).lines();
    let info = lines.next_line().await.unwrap().unwrap();
    assert!(info.starts_with("INFO"), "{info}");
    let mut out = b"CONNECT {\"verbose\":false,\"pedantic\":false}\r\n".to_vec();
    for payload in payloads {
        out.extend_from_slice(format!("PUB {subject} {}\r\n", payload.len()).as_bytes());
        out.extend_from_slice(payload);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"PING\r\n");
    write.write_all(&out).await.unwrap();
    loop {
        let line = lines.next_line().await.unwrap().expect("a reply from nats");
        assert!(!line.starts_with("-ERR"), "nats refused: {line}");
        if line == "PONG" {
            return;
        }
    }
}

/// The count of `relay_live_dropped_total` for `reason` on the relay at `addr` (0 before
/// the first).
async fn live_dropped(addr: &str, reason: &str) -> f64 {
    metric(
        addr,
        &format!("relay_live_dropped_total{{reason=\"{reason}\"}}"),
    )
    .await
    .unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_live_messages_are_counted_and_dropped_and_what_is_kept_stays_bounded() {
    let nats = start_nats();
    let renderer = vacant_renderer().await;
    let mut command = Command::new(env!("CARGO_BIN_EXE_relay-process"));
    command.args([
        "--listen",
        "127.0.0.1:0",
        "--renderer",
        &renderer,
        "--bus",
        &nats.url(),
        "--live-max-relays",
        "2",
        "--live-max-members",
        "3",
        "--live-max-message-bytes",
        "4096",
    ]);
    let relay = ServerProcess::start(command);
    let addr = relay.addr();
    let (mut page, _) = member(&relay).await;
    // A first bad message, resent until the relay counts it, shows its subscription is
    // live (it connects in the background).
    let subject = "heatmap.live.relay.presence";
    eventually("the relay's live subscription", || {
        let addr = addr.clone();
        let nats = &nats;
        async move {
            nats_publish(nats, subject, &[b"probe".to_vec()]).await;
            (live_dropped(&addr, "bad_json").await >= 1.0).then_some(())
        }
    })
    .await;
    let probes = live_dropped(&addr, "bad_json").await;

    let presence = |relay: &str, members: usize, online: usize| {
        let recent: Vec<Value> = (0..members)
            .map(|id| json!({"id": id, "name": format!("Forged {id}")}))
            .collect();
        json!({"type": "presence", "relay": relay, "online": online, "dashboards": 0,
               "members": usize::MAX, "recent": recent})
        .to_string()
        .into_bytes()
    };
    nats_publish(
        &nats,
        subject,
        &[
            b"not json".to_vec(),
            br#"{"type":"presence","relay":"bad id!","online":1,"dashboards":0,"members":0,"recent":[]}"#.to_vec(),
            vec![b' '; 5000],
            presence("r-one", 10, 2),
            presence("r-two", 10, 3),
            // A third relay is over --live-max-relays 2.
            presence("r-three", 1, 1000),
        ],
    )
    .await;
    eventually("every bad message counted", || {
        let addr = addr.clone();
        async move {
            let counts = (
                live_dropped(&addr, "bad_json").await,
                live_dropped(&addr, "bad_field").await,
                live_dropped(&addr, "too_large").await,
                live_dropped(&addr, "too_many_relays").await,
            );
            (counts == (probes + 1.0, 1.0, 1.0, 1.0)).then_some(())
        }
    })
    .await;
    // The two relays kept count (the third's thousand pages do not), their claimed member
    // counts saturate instead of overflowing, and their listed members are bounded.
    wait(&mut page, "the forged relays' pages", |msg| {
        msg["type"] == "presence" && msg["online"] == 6
    })
    .await;
    assert_eq!(metric(&addr, "relay_live_relays").await, Some(2.0));
    let (_late, members) = member(&relay).await;
    assert_eq!(members["count"], json!(usize::MAX), "{members}");
    let recent = members["recent"].as_array().unwrap();
    let forged = recent
        .iter()
        .filter(|member| member["name"].as_str().unwrap().starts_with("Forged"))
        .count();
    assert_eq!(forged, 3, "--live-max-members 3: {members}");
    // The relay still serves.
    let health = testkit::http_get(&addr, "/healthz").await.unwrap();
    assert_eq!(health.status, 200);
}
