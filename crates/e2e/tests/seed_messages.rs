//! The seed's dashboard messages on the page WebSocket, through the real relay and
//! renderer: detailed stats for one dashboard's filter, counted dashboard actions, and
//! dashboards hearing each other come and go.

mod common;

use common::*;
use serde_json::{json, Value};
use testkit::{http_get, http_request};

/// Posts events and waits for their 202 (they are committed then).
async fn post_events(addr: &str, events: Value) {
    let reply = http_request(addr, "POST", "/api/events", &[], &events.to_string()).await;
    assert_eq!(reply.status, 202, "{}", reply.body);
}

/// A page that sent `watch`, after the analytics it is given at once.
async fn dashboard(relay: &Running) -> testkit::WsClient {
    let mut client = page(relay, "connected").await;
    client.send_json(json!({"type": "watch"})).await;
    client
}

fn names(list: &Value) -> Vec<String> {
    list.as_array()
        .unwrap_or_else(|| panic!("not a list: {list}"))
        .iter()
        .map(|count| count["name"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn detailed_stats_answer_only_the_asking_dashboard_with_its_filter() {
    let renderer = start_renderer().await;
    let relay = start_relay(&renderer.ws_url()).await;
    wait_linked(&relay).await;
    let addr = relay.addr.to_string();
    post_events(
        &addr,
        json!([
            {"type": "pageview", "page": "/pricing", "sessionId": "de1", "country": "DE"},
            {"type": "pageview", "page": "/", "sessionId": "de1", "country": "DE"},
            {"type": "pageview", "page": "/pricing", "sessionId": "fr1", "country": "FR"},
            {"type": "pageview", "page": "/about", "sessionId": "fr2", "country": "FR"},
        ]),
    )
    .await;
    let mut asking = dashboard(&relay).await;
    let mut other = dashboard(&relay).await;

    asking
        .send_json(json!({"type": "request_detailed_stats",
                          "filters": {"country": "Germany", "page": "/pricing"}}))
        .await;
    let answer = asking
        .wait_for("detailed stats", |msg| msg["type"] == "detailed_stats")
        .await;
    assert_eq!(
        answer["filters"],
        json!({"country": "DE", "page": "/pricing"})
    );
    assert_eq!(names(&answer["summary"]["top_countries"]), ["DE"]);
    assert_eq!(names(&answer["summary"]["top_pages"]), ["/pricing"]);

    // The other dashboard never hears the first one's answer: the first detailed_stats it
    // gets is the answer to its own, unfiltered request (`filters` null, as absent).
    other
        .send_json(json!({"type": "request_detailed_stats", "filters": null}))
        .await;
    let own = other
        .wait_for("its own detailed stats", |msg| {
            msg["type"] == "detailed_stats"
        })
        .await;
    assert_eq!(own["filters"], json!({}));
    let mut countries = names(&own["summary"]["top_countries"]);
    countries.sort();
    assert_eq!(countries, ["DE", "FR"]);

    // Blank and "all" mean no filter, as the seed's select boxes send them.
    other
        .send_json(json!({"type": "request_detailed_stats",
                          "filters": {"country": "all", "page": ""}}))
        .await;
    let blank = other
        .wait_for("detailed stats", |msg| msg["type"] == "detailed_stats")
        .await;
    assert_eq!(blank["filters"], json!({}));

    for (filters, field) in [
        (json!({"country": "Gondor"}), "filters.country"),
        (json!({"page": "pricing"}), "filters.page"),
        (json!({"country": 7}), "filters.country"),
        (json!({"page": ["/"]}), "filters.page"),
    ] {
        asking
            .send_json(json!({"type": "request_detailed_stats", "filters": filters}))
            .await;
        let error = asking
            .wait_for("a refusal", |msg| msg["type"] == "error")
            .await;
        assert_eq!(error["code"], "bad_field", "{filters}: {error}");
        let message = error["message"].as_str().unwrap();
        assert!(message.contains(field), "{filters}: {message}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn detailed_stats_without_a_renderer_are_an_error_not_silence() {
    // A port nothing listens on: bound, read, released.
    let vacant = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let vacant_addr = vacant.local_addr().unwrap();
    drop(vacant);
    let relay = start_relay(&format!("ws://{vacant_addr}")).await;
    let (mut client, _welcome) = reconnect_page(relay.addr).await;
    client
        .send_json(json!({"type": "request_detailed_stats", "filters": {"country": "DE"}}))
        .await;
    let error = client
        .wait_for("a refusal", |msg| msg["type"] == "error")
        .await;
    assert_eq!(error["code"], "renderer_unavailable", "{error}");
    assert!(
        error["message"]
            .as_str()
            .unwrap()
            .starts_with("request_detailed_stats:"),
        "{error}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_actions_are_acknowledged_and_counted_by_action() {
    let renderer = start_renderer().await;
    let relay = start_relay(&renderer.ws_url()).await;
    wait_linked(&relay).await;
    let addr = relay.addr.to_string();
    let mut client = dashboard(&relay).await;

    for action in ["export", "export", "something_new"] {
        client
            .send_json(json!({"type": "track_dashboard_action", "action": action,
                              "data": {"format": "csv"}}))
            .await;
        let ack = client
            .wait_for("an ack", |msg| msg["type"] == "dashboard_action_ack")
            .await;
        assert_eq!(ack["action"], action);
    }
    for bad in [json!(""), json!(7), json!("x".repeat(65))] {
        client
            .send_json(json!({"type": "track_dashboard_action", "action": bad}))
            .await;
        let error = client
            .wait_for("a refusal", |msg| msg["type"] == "error")
            .await;
        assert_eq!(error["code"], "bad_field", "{bad}: {error}");
        let message = error["message"].as_str().unwrap();
        assert!(message.contains("action:"), "{bad}: {message}");
    }

    let metrics =
        String::from_utf8(http_get(&addr, "/metrics").await.unwrap().body.to_vec()).unwrap();
    for expected in [
        "relay_dashboard_actions_total{action=\"export\"} 2",
        "relay_dashboard_actions_total{action=\"other\"} 1",
    ] {
        assert!(
            metrics.lines().any(|line| line == expected),
            "no {expected} in {metrics}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboards_hear_each_other_connect_and_leave() {
    let renderer = start_renderer().await;
    let relay = start_relay(&renderer.ws_url()).await;
    wait_linked(&relay).await;
    // A recorder page counts as online but not as a dashboard.
    let _recorder = page(&relay, "connected").await;

    let mut first = dashboard(&relay).await;
    let joined = first
        .wait_for("its own arrival", |msg| msg["type"] == "user_connected")
        .await;
    assert_eq!(joined["dashboards"], 1);

    let mut second = dashboard(&relay).await;
    second
        .wait_for("its own arrival", |msg| {
            msg["type"] == "user_connected" && msg["dashboards"] == 2
        })
        .await;
    first
        .wait_for("the second dashboard", |msg| {
            msg["type"] == "user_connected" && msg["dashboards"] == 2
        })
        .await;
    // Presence counts every page, and the dashboards among them.
    first
        .wait_for("presence of three pages, two dashboards", |msg| {
            msg["type"] == "presence" && msg["online"] == 3 && msg["dashboards"] == 2
        })
        .await;

    // Watching again is not a second arrival; leaving is heard by those who stay.
    second.send_json(json!({"type": "watch"})).await;
    drop(second);
    let left = first
        .wait_for("the second dashboard to leave", |msg| {
            matches!(
                msg["type"].as_str(),
                Some("user_disconnected" | "user_connected")
            )
        })
        .await;
    assert_eq!(left, json!({"type": "user_disconnected", "dashboards": 1}));
    first
        .wait_for("presence of two pages, one dashboard", |msg| {
            msg["type"] == "presence" && msg["online"] == 2 && msg["dashboards"] == 1
        })
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_page_hears_the_counts_when_it_arrives_even_if_they_did_not_change() {
    let renderer = start_renderer().await;
    let relay = start_relay(&renderer.ws_url()).await;
    wait_linked(&relay).await;
    let mut leaving = page(&relay, "connected").await;
    leaving
        .wait_for("presence of one page", |msg| {
            msg["type"] == "presence" && msg["online"] == 1
        })
        .await;
    // One leaves as another arrives: the count may never change, and the newcomer still
    // hears it, right after its welcome.
    drop(leaving);
    let mut arriving = page(&relay, "connected").await;
    let first = arriving.next_json().await.expect("a message after welcome");
    assert_eq!(first["type"], "presence", "{first}");
    // The counts published last may still hold the page that left; the next ones do not.
    if first["online"] != 1 {
        arriving
            .wait_for("presence of the one page left", |msg| {
                msg["type"] == "presence" && msg["online"] == 1
            })
            .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboards_get_visitor_updates_and_session_activity() {
    let renderer = start_renderer().await;
    let relay = start_relay(&renderer.ws_url()).await;
    wait_linked(&relay).await;
    let addr = relay.addr.to_string();
    let mut watching = dashboard(&relay).await;
    // The numbers a new dashboard is given at once come in the seed's shape too.
    let first = watching
        .wait_for("a visitor update", |msg| msg["type"] == "visitor_update")
        .await;
    assert_eq!(first["dashboards"], 1, "{first}");

    post_events(
        &addr,
        json!([
            {"type": "pageview", "page": "/shop", "sessionId": "v7", "country": "DE"},
            {"type": "click", "page": "/shop", "sessionId": "v7",
             "metadata": {"x": 10, "y": 20, "vw": 800, "vh": 600}},
        ]),
    )
    .await;
    let activity = watching
        .wait_for("the stored events", |msg| msg["type"] == "session_activity")
        .await;
    assert_eq!(
        activity,
        json!({"type": "session_activity", "dropped": 0, "events": [
            {"sessionId": "v7", "page": "/shop", "type": "pageview"},
            {"sessionId": "v7", "page": "/shop", "type": "click"},
        ]})
    );
    let update = watching
        .wait_for("the visitor in the seed's numbers", |msg| {
            msg["type"] == "visitor_update" && msg["totalActive"] == 1
        })
        .await;
    assert_eq!(update["pagesVisited"]["/shop"], 1, "{update}");
    assert_eq!(update["recentEvents"][0]["sessionId"], "v7", "{update}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_activity_is_bounded_per_message() {
    let renderer = start_renderer().await;
    // 8 a second at four messages a second: at most 2 events listed per message.
    let relay = start_relay_with(&renderer.ws_url(), |config| {
        config.max_activity_per_sec = 8;
    })
    .await;
    wait_linked(&relay).await;
    let addr = relay.addr.to_string();
    let mut watching = dashboard(&relay).await;
    watching
        .wait_for("the first numbers", |msg| msg["type"] == "analytics")
        .await;
    let events: Vec<Value> = (0..5)
        .map(|n| json!({"type": "pageview", "page": format!("/p{n}"), "sessionId": "burst"}))
        .collect();
    post_events(&addr, Value::Array(events)).await;
    let activity = watching
        .wait_for("the stored events", |msg| msg["type"] == "session_activity")
        .await;
    let pages: Vec<&str> = activity["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|event| event["page"].as_str().unwrap())
        .collect();
    assert_eq!(pages, ["/p3", "/p4"], "{activity}");
    assert_eq!(activity["dropped"], 3, "{activity}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_join_rename_and_leave_by_name() {
    let renderer = start_renderer().await;
    let relay = start_relay(&renderer.ws_url()).await;
    wait_linked(&relay).await;
    let mut first = page(&relay, "connected").await;
    let list = first
        .wait_for("the members list", |msg| msg["type"] == "members")
        .await;
    assert_eq!(list["count"], 1, "{list}");
    let first_name = list["you"]["name"].as_str().unwrap().to_owned();
    assert!(first_name.starts_with("User-"), "{list}");
    assert_eq!(list["recent"], json!([list["you"]]));

    let mut second = page(&relay, "connected").await;
    let list = second
        .wait_for("the members list", |msg| msg["type"] == "members")
        .await;
    assert_eq!(list["count"], 2, "{list}");
    let second_id = list["you"]["id"].clone();
    // Newest first.
    assert_eq!(list["recent"][0], list["you"], "{list}");
    assert_eq!(list["recent"][1]["name"], first_name.as_str(), "{list}");
    let joined = first
        .wait_for("the second page", |msg| msg["type"] == "user_join")
        .await;
    assert_eq!(joined["member"], list["you"]);
    assert_eq!(joined["count"], 2);

    second
        .send_json(json!({"type": "set_name", "name": "  Ada "}))
        .await;
    for client in [&mut first, &mut second] {
        let renamed = client
            .wait_for("the new name", |msg| {
                msg["type"] == "user_join" && msg["member"]["name"] == "Ada"
            })
            .await;
        assert_eq!(renamed["member"]["id"], second_id);
    }
    for bad in [json!(""), json!("x".repeat(33)), json!(5)] {
        second
            .send_json(json!({"type": "set_name", "name": bad}))
            .await;
        let error = second
            .wait_for("a refusal", |msg| msg["type"] == "error")
            .await;
        assert_eq!(error["code"], "bad_field", "{bad}: {error}");
        assert!(
            error["message"].as_str().unwrap().contains("name"),
            "{bad}: {error}"
        );
    }

    drop(second);
    let left = first
        .wait_for("the second page to leave", |msg| {
            msg["type"] == "user_leave"
        })
        .await;
    assert_eq!(
        left,
        json!({"type": "user_leave", "member": {"id": second_id, "name": "Ada"}, "count": 1})
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_room_lists_the_count_and_only_the_most_recent_names() {
    let renderer = start_renderer().await;
    let relay = start_relay_with(&renderer.ws_url(), |config| config.members_shown = 2).await;
    wait_linked(&relay).await;
    let _first = page(&relay, "connected").await;
    let _second = page(&relay, "connected").await;
    let mut third = page(&relay, "connected").await;
    let list = third
        .wait_for("the members list", |msg| msg["type"] == "members")
        .await;
    assert_eq!(list["count"], 3, "{list}");
    let recent = list["recent"].as_array().unwrap();
    assert_eq!(recent.len(), 2, "{list}");
    assert_eq!(recent[0], list["you"], "{list}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_traffic_alerts_every_dashboard_once() {
    let renderer = start_renderer().await;
    let relay = start_relay(&renderer.ws_url()).await;
    wait_linked(&relay).await;
    let addr = relay.addr.to_string();
    let mut first = dashboard(&relay).await;
    let mut second = dashboard(&relay).await;
    first
        .wait_for("the first numbers", |msg| msg["type"] == "analytics")
        .await;

    // A silent site, then 30 events at once: 3 a second over the last 10 s.
    let events: Vec<Value> = (0..30)
        .map(|n| json!({"type": "pageview", "page": "/launch", "sessionId": format!("b{n}")}))
        .collect();
    post_events(&addr, Value::Array(events)).await;
    for client in [&mut first, &mut second] {
        let alert = client
            .wait_for("the spike alert", |msg| msg["type"] == "alert")
            .await;
        assert_eq!(alert["kind"], "traffic_spike", "{alert}");
        assert_eq!(alert["rate"], 3.0, "{alert}");
        assert_eq!(alert["factor"], 3.0, "{alert}");
    }

    // The spike goes on for ten seconds; it alerted once, not on every push. Each push
    // also carries the chart's 10 minutes whole, the burst in its newest buckets.
    let mut pushes = 0;
    while pushes < 3 {
        let msg = first.next_json().await.expect("the socket stays open");
        assert_ne!(
            msg["type"], "alert",
            "a second alert for the same spike: {msg}"
        );
        if msg["type"] == "analytics" {
            pushes += 1;
            let buckets: Vec<u64> = msg["summary"]["per_ten_seconds"]
                .as_array()
                .expect("the 10-minute series")
                .iter()
                .map(|count| count.as_u64().unwrap())
                .collect();
            assert_eq!(buckets.len(), 60, "{msg}");
            assert_eq!(buckets.iter().sum::<u64>(), 30, "{buckets:?}");
            assert_eq!(buckets[..58].iter().sum::<u64>(), 0, "{buckets:?}");
        }
    }
    let metrics =
        String::from_utf8(http_get(&addr, "/metrics").await.unwrap().body.to_vec()).unwrap();
    assert!(metrics.contains("relay_alerts_total 1"), "{metrics}");
}
