//! The event API of tracked sites, through the real relay and renderer: validation,
//! batches, CORS, analytics and page heatmaps.

mod common;

use common::*;
use serde_json::{json, Value};
use testkit::{http_get, http_get_with, http_request, Image};

/// A raw HTTP/1.1 request (so tests control every header); returns status, head, body.
async fn request(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, String, String) {
    let reply = http_request(addr, method, path, headers, body).await;
    (reply.status, reply.head, reply.body)
}

fn click(session: &str, page: &str, x: f64, y: f64, vw: f64) -> Value {
    json!({"type": "click", "page": page, "sessionId": session,
           "country": "de", "metadata": {"x": x, "y": y, "vw": vw, "vh": 800, "dw": vw, "dh": 2000, "path": "button#buy"}})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_are_validated_counted_and_summarised() {
    let renderer = start_renderer().await;
    let relay = start_relay(&renderer.ws_url()).await;
    wait_linked(&relay).await;
    let addr = relay.addr.to_string();

    let one = json!({"type": "pageview", "page": "/", "sessionId": "s1"});
    let (status, _, body) = request(&addr, "POST", "/api/events", &[], &one.to_string()).await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(serde_json::from_str::<Value>(&body).unwrap()["accepted"], 1);

    let batch = json!([
        {"type": "pageview", "page": "/pricing", "sessionId": "s1"},
        click("s2", "/pricing", 100.0, 200.0, 1440.0),
    ]);
    let (status, _, body) = request(&addr, "POST", "/api/events", &[], &batch.to_string()).await;
    assert_eq!(status, 202, "{body}");

    for (bad, why) in [
        ("{not json".to_owned(), "the body is not JSON"),
        (json!({"type": "teleport", "page": "/", "sessionId": "s", "timestamp": 1}).to_string(), "event 0: type: unknown event type \"teleport\""),
        (json!({"type": "pageview", "page": "no-slash", "sessionId": "s", "timestamp": 1}).to_string(), "event 0: page: must be"),
        (json!({"type": "pageview", "page": "/", "sessionId": "../x", "timestamp": 1}).to_string(), "event 0: sessionId: must be"),
        (json!([one, {"type": "click", "page": "/", "sessionId": "s", "timestamp": "soon"}]).to_string(), "event 1: timestamp: expected ISO-8601"),
        (json!({"type": "pageview", "page": "/", "sessionId": "s", "timestamp": 1, "country": "Gondor"}).to_string(), "event 0: country:"),
    ] {
        let (status, _, body) = request(&addr, "POST", "/api/events", &[], &bad).await;
        assert_eq!(status, 400, "{bad}: {body}");
        let error = serde_json::from_str::<Value>(&body).unwrap()["error"].as_str().unwrap().to_owned();
        assert!(error.contains(why), "{bad}: {error}");
    }

    let summary: Value = serde_json::from_slice(
        &http_get(&addr, "/api/analytics/summary")
            .await
            .unwrap()
            .body,
    )
    .unwrap();
    assert_eq!(summary["active_users"], 2);
    assert_eq!(
        summary["events_last_minute"], 3,
        "refused events are not counted: {summary}"
    );
    assert_eq!(
        summary["top_pages"][0],
        json!({"name": "/pricing", "events": 2})
    );
    assert_eq!(
        summary["top_countries"][0],
        json!({"name": "DE", "events": 1})
    );
    assert_eq!(summary["per_second"].as_array().unwrap().len(), 300);

    let filtered: Value = serde_json::from_slice(
        &http_get(&addr, "/api/analytics/summary?type=click&country=de")
            .await
            .unwrap()
            .body,
    )
    .unwrap();
    assert_eq!(filtered["events_last_minute"], 1);
    let (status, _, _) = request(
        &addr,
        "GET",
        "/api/analytics/summary?from=yesterday",
        &[],
        "",
    )
    .await;
    assert_eq!(status, 400);

    let sessions: Value = serde_json::from_slice(
        &http_get(&addr, "/api/analytics/sessions?page=/pricing")
            .await
            .unwrap()
            .body,
    )
    .unwrap();
    let sessions = sessions.as_array().unwrap();
    assert_eq!(sessions.len(), 2);
    let s1 = sessions
        .iter()
        .find(|session| session["sessionId"] == "s1")
        .unwrap();
    let journey: Vec<&str> = s1["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|step| step["page"].as_str().unwrap())
        .collect();
    assert_eq!(s1["journey"], json!(["/", "/pricing"]));
    assert_eq!(journey, ["/", "/pricing"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_listed_sites_may_call_the_api_from_a_browser() {
    let renderer = start_renderer().await;
    let relay = start_relay_with(&renderer.ws_url(), |config| {
        config.sites = vec!["https://shop.example".into()]
    })
    .await;
    wait_linked(&relay).await;
    let addr = relay.addr.to_string();
    let event = json!({"type": "pageview", "page": "/", "sessionId": "s1"});

    let (status, head, _) = request(
        &addr,
        "OPTIONS",
        "/api/events",
        &[("origin", "https://shop.example")],
        "",
    )
    .await;
    assert_eq!(status, 204);
    assert!(
        head.contains("access-control-allow-origin: https://shop.example"),
        "{head}"
    );
    assert!(head.contains("access-control-allow-methods"), "{head}");

    let (status, head, _) = request(
        &addr,
        "POST",
        "/api/events",
        &[("origin", "https://shop.example")],
        &event.to_string(),
    )
    .await;
    assert_eq!(status, 202);
    assert!(
        head.contains("access-control-allow-origin: https://shop.example"),
        "{head}"
    );

    let (status, head, body) = request(
        &addr,
        "POST",
        "/api/events",
        &[("origin", "https://evil.example")],
        &event.to_string(),
    )
    .await;
    assert_eq!(status, 403, "{body}");
    assert!(!head.contains("access-control-allow-origin"), "{head}");
    assert!(body.contains("--site https://evil.example"), "{body}");

    // The relay's own pages (the dashboard) are same-origin.
    let own = format!("http://{addr}");
    let response = http_get_with(&addr, "/api/analytics/summary", &[("origin", own.as_str())])
        .await
        .unwrap();
    assert_eq!(response.status, 200);
    let summary: Value = serde_json::from_slice(&response.body).unwrap();
    assert_eq!(
        summary["events_last_minute"], 1,
        "the refused event was not stored"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn page_heatmaps_are_rendered_per_width_bucket() {
    let renderer = start_renderer().await;
    let relay = start_relay(&renderer.ws_url()).await;
    wait_linked(&relay).await;
    let addr = relay.addr.to_string();
    // Desktop visitors click near the top right; mobile visitors near the bottom left.
    let mut events: Vec<Value> = (0..20)
        .map(|idx| click(&format!("d{idx}"), "/shop", 1300.0, 200.0, 1440.0))
        .collect();
    events.extend((0..20).map(|idx| click(&format!("m{idx}"), "/shop", 40.0, 1800.0, 390.0)));
    let (status, _, body) = request(
        &addr,
        "POST",
        "/api/events",
        &[],
        &Value::Array(events).to_string(),
    )
    .await;
    assert_eq!(status, 202, "{body}");

    let desktop = http_get(&addr, "/api/heatmaps?page=/shop&kind=click&width=desktop")
        .await
        .unwrap();
    assert_eq!(desktop.status, 200);
    assert_eq!(desktop.content_type.as_deref(), Some("image/png"));
    let image = Image::decode(&desktop.body).unwrap();
    // 1440 wide, as tall as the document's proportions (2000/1440).
    assert_eq!((image.width, image.height), (1440, 2000));
    assert!(
        image.heat(1300, 200) > 150,
        "desktop clicks where they were"
    );
    assert_eq!(
        image.heat(40, 1800),
        0,
        "mobile clicks are not in the desktop map"
    );

    let mobile = http_get(&addr, "/api/heatmaps?page=/shop&kind=click&width=mobile")
        .await
        .unwrap();
    let image = Image::decode(&mobile.body).unwrap();
    assert_eq!(image.width, 390);
    let (x, y) = (40 * 390 / 390, 1800 * image.height / 2000);
    assert!(image.heat(x, y) > 150, "mobile clicks where they were");

    let grid: Value = serde_json::from_slice(
        &http_get(
            &addr,
            "/api/heatmaps?page=/shop&kind=click&width=desktop&format=json",
        )
        .await
        .unwrap()
        .body,
    )
    .unwrap();
    assert_eq!(grid["n_points"], 20);
    // Pre-counted cells do not know their sessions: this is the page's visitors over the
    // range, desktop and mobile alike.
    assert_eq!(grid["n_sessions"], 40);
    let total: u64 = grid["cells"]
        .as_array()
        .unwrap()
        .iter()
        .map(|cell| cell.as_u64().unwrap())
        .sum();
    assert_eq!(total, 20);

    let listed: Value = serde_json::from_slice(
        &http_get(
            &addr,
            "/api/heatmaps?page=/shop&kind=click&width=mobile&format=clicks",
        )
        .await
        .unwrap()
        .body,
    )
    .unwrap();
    let clicks = listed["clicks"].as_array().unwrap();
    assert_eq!(clicks.len(), 20);
    assert_eq!(clicks[0]["path"], "button#buy");

    let missing = http_get(&addr, "/api/heatmaps?page=/nowhere&kind=click")
        .await
        .unwrap();
    assert_eq!(missing.status, 404);
    let bad = http_get(&addr, "/api/heatmaps?page=/shop&kind=hover")
        .await
        .unwrap();
    assert_eq!(bad.status, 400);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboards_get_analytics_and_presence_pushed() {
    let renderer = start_renderer().await;
    let relay = start_relay(&renderer.ws_url()).await;
    wait_linked(&relay).await;
    let addr = relay.addr.to_string();
    let mut dashboard = page(&relay, "connected").await;
    dashboard.send_json(json!({"type": "watch"})).await;
    let first = dashboard
        .wait_for("an analytics push", |msg| msg["type"] == "analytics")
        .await;
    assert_eq!(first["summary"]["active_users"], 0);

    let event = json!({"type": "pageview", "page": "/live", "sessionId": "v1"});
    request(&addr, "POST", "/api/events", &[], &event.to_string()).await;
    let update = dashboard
        .wait_for("the visitor to show", |msg| {
            msg["type"] == "analytics" && msg["summary"]["active_users"] == 1
        })
        .await;
    assert_eq!(update["sessions"][0]["sessionId"], "v1");
    assert_eq!(update["sessions"][0]["journey"][0], "/live");

    let leave = json!({"type": "leave", "page": "/live", "sessionId": "v1"});
    request(&addr, "POST", "/api/events", &[], &leave.to_string()).await;
    dashboard
        .wait_for("the visitor to leave", |msg| {
            msg["type"] == "analytics" && msg["summary"]["active_users"] == 0
        })
        .await;

    // A second page connecting changes the presence count everyone sees.
    let _second = page(&relay, "connected").await;
    dashboard
        .wait_for("presence of two", |msg| {
            msg["type"] == "presence" && msg["online"] == 2
        })
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_api_flood_gets_429_and_others_are_served() {
    let renderer = start_renderer().await;
    let relay = start_relay_with(&renderer.ws_url(), |config| {
        config.max_api_requests_per_sec = 5;
        config.api_burst = 5;
    })
    .await;
    wait_linked(&relay).await;
    let addr = relay.addr.to_string();
    let mut statuses = Vec::new();
    for _ in 0..20 {
        statuses.push(
            http_get(&addr, "/api/analytics/summary")
                .await
                .unwrap()
                .status,
        );
    }
    assert!(statuses.iter().filter(|status| **status == 200).count() >= 5);
    assert!(statuses.contains(&429), "{statuses:?}");
    let (status, head, body) = request(&addr, "GET", "/api/analytics/summary", &[], "").await;
    assert_eq!(status, 429);
    assert!(head.contains("retry-after: 1"), "{head}");
    let error: Value = serde_json::from_str(&body).unwrap();
    assert!(
        error["error"]
            .as_str()
            .unwrap()
            .contains("--max-api-requests-per-sec"),
        "{body}"
    );
    // Pages and the recorder are not part of the API budget.
    assert_eq!(http_get(&addr, "/").await.unwrap().status, 200);
    // The API's 429s are counted as API answers, not as pages' rate-limited messages.
    let metrics =
        String::from_utf8(http_get(&addr, "/metrics").await.unwrap().body.to_vec()).unwrap();
    let refused_429 = metrics
        .lines()
        .find(|line| line.starts_with("relay_api_responses_total{status=\"429\"}"))
        .unwrap_or_else(|| panic!("no 429 series in {metrics}"));
    assert!(!refused_429.ends_with(" 0"), "{refused_429}");
    let health: Value =
        serde_json::from_slice(&http_get(&addr, "/healthz").await.unwrap().body).unwrap();
    assert!(health["errors"]["rate_limited"].is_null(), "{health}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_cursors_reach_the_others_but_never_echo() {
    let renderer = start_renderer().await;
    let relay = start_relay(&renderer.ws_url()).await;
    wait_linked(&relay).await;
    let mut alice = page(&relay, "connected").await;
    let mut bob = page(&relay, "connected").await;
    alice
        .send_json(json!({"type": "cursor", "x": 0.25, "y": 0.5}))
        .await;
    bob.send_json(json!({"type": "cursor", "x": 0.75, "y": 0.5}))
        .await;
    let seen_by_alice = alice
        .wait_for("bob's cursor", |msg| {
            msg["type"] == "cursors" && msg["cursors"].as_array().is_some_and(|c| !c.is_empty())
        })
        .await;
    let cursors = seen_by_alice["cursors"].as_array().unwrap();
    assert_eq!(cursors.len(), 1, "only the other page: {seen_by_alice}");
    assert_eq!(cursors[0]["x"], 0.75);
    let seen_by_bob = bob
        .wait_for("alice's cursor", |msg| {
            msg["type"] == "cursors" && msg["cursors"].as_array().is_some_and(|c| !c.is_empty())
        })
        .await;
    assert_eq!(seen_by_bob["cursors"][0]["x"], 0.25);
    alice
        .send_json(json!({"type": "cursor", "x": 1.5, "y": 0.5}))
        .await;
    let error = alice
        .wait_for("refusal", |msg| msg["type"] == "error")
        .await;
    assert_eq!(error["code"], "out_of_range");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tracked_events_survive_a_renderer_restart() {
    let renderer = start_renderer().await;
    let relay = start_relay(&renderer.ws_url()).await;
    wait_linked(&relay).await;
    let addr = relay.addr.to_string();
    let events: Vec<Value> = (0..12)
        .map(|idx| click(&format!("r{}", idx % 3), "/kept", 700.0, 300.0, 1440.0))
        .collect();
    let (status, _, body) = request(
        &addr,
        "POST",
        "/api/events",
        &[],
        &Value::Array(events).to_string(),
    )
    .await;
    assert_eq!(status, 202, "{body}");

    let renderer = renderer.stop().await.restart().await;
    let summary: Value = serde_json::from_slice(
        &http_get(&addr, "/api/analytics/summary")
            .await
            .unwrap()
            .body,
    )
    .unwrap();
    assert_eq!(
        summary["top_pages"][0],
        json!({"name": "/kept", "events": 12}),
        "{summary}"
    );
    assert_eq!(summary["active_users"], 3);
    let heatmap = http_get(
        &addr,
        "/api/heatmaps?page=/kept&kind=click&width=desktop&format=json",
    )
    .await
    .unwrap();
    let grid: Value = serde_json::from_slice(&heatmap.body).unwrap();
    assert_eq!(grid["n_points"], 12);
    drop(renderer);
}

/// The seed API's README example, verbatim (its `curl -d` body).
const SEED_README_PAGEVIEW: &str = r#"{
    "type": "pageview",
    "page": "/home",
    "sessionId": "test-user-123",
    "country": "India"
  }"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_seed_example_and_imports_dated_in_the_past_land_in_their_ranges() {
    let renderer = start_renderer().await;
    let relay = start_relay(&renderer.ws_url()).await;
    wait_linked(&relay).await;
    let addr = relay.addr.to_string();
    let (status, _, body) = request(&addr, "POST", "/api/events", &[], SEED_README_PAGEVIEW).await;
    assert_eq!(status, 202, "{body}");

    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let day = 86_400_000i64;
    let import = |at_ms: i64, x: f64| {
        json!({"type": "click", "page": "/imported", "sessionId": format!("imp-{at_ms}"),
               "timestamp": at_ms, "country": "Germany",
               "metadata": {"x": x, "y": 300, "vw": 1440, "vh": 800, "dw": 1440, "dh": 2000}})
    };
    let batch = json!([
        import(now_ms - day, 200.0),
        import(now_ms - 20 * day, 1200.0)
    ]);
    let (status, _, body) = request(&addr, "POST", "/api/events", &[], &batch.to_string()).await;
    assert_eq!(status, 202, "{body}");

    let get = |path: String| {
        let addr = addr.clone();
        async move {
            let reply = http_get(&addr, &path).await.unwrap();
            assert_eq!(
                reply.status,
                200,
                "{path}: {}",
                String::from_utf8_lossy(&reply.body)
            );
            serde_json::from_slice::<Value>(&reply.body).unwrap()
        }
    };
    let summary = get("/api/analytics/summary?range=30d".into()).await;
    let pages = summary["top_pages"].as_array().unwrap().clone();
    assert!(
        pages.contains(&json!({"name": "/imported", "events": 2})),
        "{summary}"
    );
    assert!(
        pages.contains(&json!({"name": "/home", "events": 1})),
        "{summary}"
    );
    let countries = summary["top_countries"].as_array().unwrap().clone();
    assert!(
        countries.contains(&json!({"name": "IN", "events": 1})),
        "{summary}"
    );
    assert!(
        countries.contains(&json!({"name": "DE", "events": 2})),
        "{summary}"
    );
    let recent = get("/api/analytics/summary?range=24h&page=/imported".into()).await;
    assert_eq!(
        recent["active_users"], 0,
        "imports are history, not visitors: {recent}"
    );

    // Only the import from 20 days ago lies between 21 and 19 days back.
    let grid = get(format!(
        "/api/heatmaps?page=/imported&kind=click&width=desktop&format=json&from={}&to={}",
        now_ms - 21 * day,
        now_ms - 19 * day
    ))
    .await;
    assert_eq!(grid["n_points"], 1, "{grid}");
    let both =
        get("/api/heatmaps?page=/imported&kind=click&width=desktop&format=json&range=30d".into())
            .await;
    assert_eq!(both["n_points"], 2, "{both}");

    let (status, _, body) =
        request(&addr, "GET", "/api/analytics/summary?range=30x", &[], "").await;
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("range:"), "{body}");
    drop(renderer);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_store_answers_503_with_retry_after_through_the_relay() {
    let renderer = start_renderer_with(|config| config.max_store_bytes = Some(64 * 1024)).await;
    let relay = start_relay(&renderer.ws_url()).await;
    wait_linked(&relay).await;
    let addr = relay.addr.to_string();
    let batch: Vec<Value> = (0..500)
        .map(|idx| {
            click(
                &format!("full-{idx}"),
                "/full",
                100.0 + idx as f64,
                300.0,
                1440.0,
            )
        })
        .collect();
    let body = Value::Array(batch).to_string();
    let mut refused = None;
    for _ in 0..40 {
        let (status, head, reply) = request(&addr, "POST", "/api/events", &[], &body).await;
        match status {
            202 => continue,
            503 => {
                refused = Some((head, reply));
                break;
            }
            other => panic!("unexpected {other}: {reply}"),
        }
    }
    let (head, reply) = refused.expect("a 64 KiB store fills up within 40 requests");
    assert!(head.contains("retry-after: 1"), "{head}");
    let error: Value = serde_json::from_str(&reply).unwrap();
    assert!(
        error["error"].as_str().unwrap().contains("send them again"),
        "{reply}"
    );
    drop(renderer);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_get_503_while_the_renderer_is_away_and_202_only_once_stored() {
    let renderer = start_renderer().await;
    let relay = start_relay_reconnecting_fast(&renderer.ws_url()).await;
    wait_linked(&relay).await;
    let addr = relay.addr.to_string();
    // An hour ago: inside the retention period, so the restart's pruning keeps them.
    let hour_ago = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
        - 3_600_000;
    let numbered = |seq: u64| {
        json!({"type": "click", "page": "/away", "sessionId": "s-away", "seq": seq,
               "timestamp": hour_ago + seq as i64,
               "metadata": {"x": 10, "y": 20, "vw": 1440, "vh": 900, "dw": 1440, "dh": 900}})
    };
    let (status, _, body) =
        request(&addr, "POST", "/api/events", &[], &numbered(0).to_string()).await;
    assert_eq!(status, 202, "{body}");

    let stopped = renderer.stop().await;
    // Once the relay has noticed, events are refused (none stored), with a time to retry.
    // (Before, a request may meet the link as it drops: also a 503, "link was lost".)
    let (head, body) = testkit::eventually("the relay to refuse events", || async {
        let (status, head, body) =
            request(&addr, "POST", "/api/events", &[], &numbered(1).to_string()).await;
        assert!(matches!(status, 202 | 503), "{status}: {body}");
        (status == 503 && body.contains("not connected")).then_some((head, body))
    })
    .await;
    assert!(head.contains("retry-after: 2"), "{head}");
    assert!(head.contains("content-type: application/json"), "{head}");
    let _: Value = serde_json::from_str(&body).unwrap();

    // The sender keeps its events and sends them again: 202 once the renderer is back,
    // and a numbered event sent twice is counted once.
    let _renderer = stopped.restart().await;
    testkit::eventually(
        "the events to be stored after the renderer returns",
        || async {
            let (status, _, _) =
                request(&addr, "POST", "/api/events", &[], &numbered(1).to_string()).await;
            (status == 202).then_some(())
        },
    )
    .await;
    let (status, _, body) =
        request(&addr, "POST", "/api/events", &[], &numbered(1).to_string()).await;
    assert_eq!(status, 202, "{body}");
    let summary: Value = serde_json::from_slice(
        &http_get(&addr, "/api/analytics/summary?range=24h")
            .await
            .unwrap()
            .body,
    )
    .unwrap();
    assert_eq!(summary["totals"]["clicks"], 2, "{summary}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_api_error_is_json_naming_what_to_do() {
    let renderer = start_renderer().await;
    let relay = start_relay_with(&renderer.ws_url(), |config| config.max_body_bytes = 1024).await;
    wait_linked(&relay).await;
    let addr = relay.addr.to_string();
    let big = format!(
        "[{}]",
        vec![r#"{"type":"pageview","page":"/","sessionId":"s"}"#; 40].join(",")
    );
    let cases = [
        ("POST", "/api/events", big.as_str(), 413, "--max-body-bytes"),
        ("GET", "/api/events", "", 405, "POST"),
        ("DELETE", "/api/analytics/summary", "", 405, "GET"),
        ("GET", "/api/nope", "", 404, "no api at"),
        (
            "POST",
            "/api/events",
            "[{\"type\":\"click\"}]",
            400,
            "event 0: page",
        ),
        ("GET", "/api/analytics/summary?range=30x", "", 400, "range"),
    ];
    for (method, path, body, want_status, want_text) in cases {
        let (status, head, reply) = request(&addr, method, path, &[], body).await;
        assert_eq!(status, want_status, "{method} {path}: {reply}");
        assert!(
            head.contains("content-type: application/json"),
            "{method} {path}: {head}"
        );
        let error: Value = serde_json::from_str(&reply)
            .unwrap_or_else(|err| panic!("{method} {path}: not JSON ({err}): {reply}"));
        let text = error["error"].as_str().unwrap_or_default();
        assert!(text.contains(want_text), "{method} {path}: {reply}");
    }
}

/// The seed API's README requests, verbatim: its two `curl -d` bodies and its Postman
/// tests ("basic pageview", "session navigation").
const SEED_REQUESTS: [&str; 4] = [
    r#"{
    "type": "pageview",
    "page": "/home",
    "sessionId": "visitor-001",
    "timestamp": "2025-07-19T10:30:00Z",
    "country": "India",
    "metadata": {
      "device": "mobile",
      "referrer": "google.com"
    }
  }"#,
    r#"{
    "type": "click",
    "page": "/products",
    "sessionId": "visitor-001",
    "timestamp": "2025-07-19T10:31:00Z",
    "country": "India",
    "metadata": {
      "element": "button",
      "device": "mobile"
    }
  }"#,
    r#"{
     "type": "pageview",
     "page": "/home",
     "sessionId": "test-001",
     "timestamp": "2025-07-19T10:30:00Z",
     "country": "India"
   }"#,
    r#"{
     "type": "pageview",
     "page": "/products",
     "sessionId": "test-001",
     "timestamp": "2025-07-19T10:30:30Z",
     "country": "India"
   }"#,
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_seed_requests_are_accepted_and_summary_and_sessions_carry_its_fields() {
    let renderer = start_renderer_with(|config| config.retention_days = 3650).await;
    let relay = start_relay(&renderer.ws_url()).await;
    wait_linked(&relay).await;
    let addr = relay.addr.to_string();
    for body in SEED_REQUESTS {
        let (status, _, reply) = request(
            &addr,
            "POST",
            "/api/events",
            &[("content-type", "application/json")],
            body,
        )
        .await;
        assert_eq!(status, 202, "{reply}\n{body}");
    }
    // They happened on 2025-07-19, and are counted there.
    let day: Value = serde_json::from_slice(
        &http_get(
            &addr,
            "/api/analytics/summary?from=2025-07-19T00:00:00Z&to=2025-07-20T00:00:00Z",
        )
        .await
        .unwrap()
        .body,
    )
    .unwrap();
    assert_eq!(
        day["totals"],
        json!({"events": 4, "pageviews": 3, "clicks": 1, "sessions": 2}),
        "{day}"
    );

    // The same journey today: the seed's live fields.
    for (kind, page) in [
        ("pageview", "/home"),
        ("pageview", "/products"),
        ("click", "/products"),
    ] {
        let mut body =
            json!({"type": kind, "page": page, "sessionId": "visitor-002", "country": "India"});
        if page == "/home" {
            body["metadata"] =
                json!({"device": "Mobile", "referrer": "https://www.google.com/search?q=x"});
        }
        let (status, _, reply) =
            request(&addr, "POST", "/api/events", &[], &body.to_string()).await;
        assert_eq!(status, 202, "{reply}");
    }
    let summary: Value = serde_json::from_slice(
        &http_get(&addr, "/api/analytics/summary")
            .await
            .unwrap()
            .body,
    )
    .unwrap();
    assert_eq!(summary["totalActive"], 1, "{summary}");
    assert_eq!(summary["totalToday"], 1, "{summary}");
    assert_eq!(
        summary["pagesVisited"],
        json!({"/home": 1, "/products": 1}),
        "{summary}"
    );
    assert_eq!(summary["countries"], json!({"IN": 3}), "{summary}");
    let recent = summary["recentEvents"].as_array().unwrap();
    assert_eq!(recent.len(), 3, "{summary}");
    assert_eq!(recent[0]["type"], "click", "newest first: {summary}");
    assert_eq!(recent[0]["sessionId"], "visitor-002");
    assert!(
        recent[0]["timestamp"].as_str().unwrap().ends_with('Z'),
        "{summary}"
    );

    let sessions: Value = serde_json::from_slice(
        &http_get(&addr, "/api/analytics/sessions")
            .await
            .unwrap()
            .body,
    )
    .unwrap();
    let session = &sessions[0];
    assert_eq!(session["sessionId"], "visitor-002", "{sessions}");
    assert_eq!(session["currentPage"], "/products", "{sessions}");
    assert_eq!(session["device"], "mobile", "{sessions}");
    assert_eq!(session["referrer"], "www.google.com", "{sessions}");
    assert_eq!(
        session["journey"],
        json!(["/home", "/products"]),
        "{sessions}"
    );
    assert_eq!(session["country"], "IN", "{sessions}");
    assert!(
        session["startTime"].as_str().unwrap().ends_with('Z'),
        "{sessions}"
    );
    assert!(session["duration"].is_u64(), "{sessions}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proxys_country_header_fills_events_without_a_country() {
    let renderer = start_renderer().await;
    let relay = start_relay(&renderer.ws_url()).await;
    wait_linked(&relay).await;
    let addr = relay.addr.to_string();
    let body = json!([
        {"type": "pageview", "page": "/", "sessionId": "cdn-1"},
        {"type": "pageview", "page": "/", "sessionId": "cdn-2", "country": "USA"}
    ]);
    let (status, _, reply) = request(
        &addr,
        "POST",
        "/api/events",
        &[("CF-IPCountry", "in")],
        &body.to_string(),
    )
    .await;
    assert_eq!(status, 202, "{reply}");
    let summary: Value = serde_json::from_slice(
        &http_get(&addr, "/api/analytics/summary?range=1h")
            .await
            .unwrap()
            .body,
    )
    .unwrap();
    // The event's own country wins; the header fills the one without.
    assert_eq!(summary["countries"], json!({"IN": 1, "US": 1}), "{summary}");
}
