//! The tracking snippet on the demo site in a real headless Chromium: clicks at two window
//! widths land on their elements in each width's heatmap, the dashboard follows visitors
//! arriving and leaving, clicks made while the renderer is down (on a page the visitor then
//! leaves) reach the heatmap exactly once when it is back, and Do Not Track means nothing is
//! recorded.

mod common;

use common::browser::*;
use common::process::start_renderer_process;
use common::*;
use fantoccini::{Client, Locator};
use serde_json::{json, Value};
use testkit::{eventually, http_get, Image, TempDir};

/// Clicks an element for real and returns its centre in document coordinates and the
/// document's size.
async fn click_and_locate(browser: &Client, selector: &str) -> (f64, f64, f64, f64) {
    browser
        .find(Locator::Css(selector))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let place = browser
        .execute(
                        "const box = document.querySelector(arguments[0]).getBoundingClientRect();
             const doc = document.documentElement;
             return [box.left + scrollX + box.width / 2, box.top + scrollY + box.height / 2,
                     Math.max(doc.scrollWidth, innerWidth), Math.max(doc.scrollHeight, innerHeight)];",
            vec![json!(selector)],
        )
        .await
        .unwrap();
    let number = |idx: usize| place[idx].as_f64().unwrap();
    (number(0), number(1), number(2), number(3))
}

async fn summary(addr: &str) -> Value {
    serde_json::from_slice(&http_get(addr, "/api/analytics/summary").await.unwrap().body).unwrap()
}

/// Waits for the heatmap of `width` to have data, then checks it is hot at the element.
async fn assert_hot_at(addr: &str, width: &str, place: (f64, f64, f64, f64)) {
    let path = format!("/api/heatmaps?page=/demo/pricing.html&kind=click&width={width}");
    let png = eventually(&format!("the {width} click heatmap"), || async {
        let response = http_get(addr, &path).await.ok()?;
        (response.status == 200).then_some(response.body)
    })
    .await;
    let image = Image::decode(&png).unwrap();
    let (x, y, doc_width, doc_height) = place;
    let px = (x / doc_width * f64::from(image.width)) as u32;
    let py = (y / doc_height * f64::from(image.height)) as u32;
    assert!(
        image.heat(px, py) > 150,
        "{width}: hot on the element at ({px}, {py}): {:?}",
        image.rgb(px, py)
    );
    assert_eq!(
        image.heat(2, image.height / 2),
        0,
        "{width}: cold away from it"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_snippet_tracks_clicks_per_width_and_the_dashboard_follows_visitors() {
    if !browser_available() {
        return;
    }
    let renderer = start_renderer().await;
    let relay = start_relay(&renderer.ws_url()).await;
    let addr = relay.addr.to_string();
    let driver = start_chromedriver().await;
    let profile = TempDir::new("chromium-tracking");
    let browser = open_browser(&driver, &profile).await;
    let pricing = format!("http://{addr}/demo/pricing.html");

    // Desktop width: choose Pro.
    browser.set_window_size(1400, 900).await.unwrap();
    visit(&browser, &pricing).await;
    let desktop = click_and_locate(&browser, "#buy-pro").await;
    // Phone width: the plans stack; choose Basic.
    browser.set_window_size(420, 900).await.unwrap();
    visit(&browser, &pricing).await;
    let mobile = click_and_locate(&browser, "#buy-basic").await;
    assert_hot_at(&addr, "desktop", desktop).await;
    assert_hot_at(&addr, "mobile", mobile).await;

    // The page view said what kind of device this is, and the browser's language gave the
    // country (no proxy header here).
    let language = browser
        .execute("return navigator.language;", vec![])
        .await
        .unwrap();
    let region = protocol::analytics::locale_region(language.as_str().unwrap_or_default());
    let sessions: Value = serde_json::from_slice(
        &http_get(&addr, "/api/analytics/sessions")
            .await
            .unwrap()
            .body,
    )
    .unwrap();
    assert_eq!(sessions[0]["device"], "desktop", "{sessions}");
    assert_eq!(
        sessions[0]["country"].as_str(),
        region.as_deref(),
        "language {language}: {sessions}"
    );

    // The dashboard, in another tab, sees this visitor…
    let visitor_tab = browser.window().await.unwrap();
    let dashboard_tab = browser.new_window(true).await.unwrap().handle;
    browser
        .switch_to_window(dashboard_tab.clone())
        .await
        .unwrap();
    browser
        .goto(&format!("http://{addr}/dashboard"))
        .await
        .unwrap();
    let active_users = || async {
        let text = browser
            .find(Locator::Id("active-users"))
            .await
            .ok()?
            .text()
            .await
            .ok()?;
        text.parse::<u64>().ok()
    };
    eventually("one active user", || async {
        (active_users().await? == 1).then_some(())
    })
    .await;

    // The page's clicks over the page itself, each placed on its element in the live page.
    eventually("the pricing page to be listed", || async {
        let listed = browser
            .execute(
                "return !!document.querySelector('#hm-page option[value=\"/demo/pricing.html\"]');",
                vec![],
            )
            .await
            .ok()?;
        (listed == json!(true)).then_some(())
    })
    .await;
    choose(&browser, "hm-page", "/demo/pricing.html").await;
    choose(&browser, "hm-width", "mobile").await;
    browser
        .find(Locator::Id("hm-show"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let placed = eventually("the clicks to be placed on their elements", || async {
        let message = browser
            .find(Locator::Id("hm-message"))
            .await
            .ok()?
            .text()
            .await
            .ok()?;
        message
            .contains("placed on their elements")
            .then_some(message)
    })
    .await;
    assert!(placed.starts_with("1 of 1 clicks"), "{placed}");

    // …then a second visitor arriving in a new tab (a new session), and leaving.
    let second_tab = browser.new_window(true).await.unwrap().handle;
    browser.switch_to_window(second_tab).await.unwrap();
    visit(&browser, &format!("http://{addr}/demo/")).await;
    browser
        .switch_to_window(dashboard_tab.clone())
        .await
        .unwrap();
    eventually("two active users", || async {
        (active_users().await? == 2).then_some(())
    })
    .await;
    let journeys = browser
        .find(Locator::Id("sessions"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(journeys.contains("/demo/pricing.html"), "{journeys}");

    let handles = browser.windows().await.unwrap();
    let second = handles
        .into_iter()
        .find(|handle| *handle != visitor_tab && *handle != dashboard_tab)
        .unwrap();
    browser.switch_to_window(second).await.unwrap();
    // Closing the tab sends the leave event by beacon.
    browser.close_window().await.unwrap();
    browser.switch_to_window(dashboard_tab).await.unwrap();
    eventually("one active user again", || async {
        (active_users().await? == 1).then_some(())
    })
    .await;
    browser.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn do_not_track_means_nothing_is_recorded() {
    if !browser_available() {
        return;
    }
    let renderer = start_renderer().await;
    let relay = start_relay(&renderer.ws_url()).await;
    let addr = relay.addr.to_string();
    let driver = start_chromedriver().await;
    let profile = TempDir::new("chromium-dnt");
    let browser = open_browser_with(&driver, &profile, json!({"enable_do_not_track": true})).await;
    visit(&browser, &format!("http://{addr}/demo/")).await;
    let dnt = browser
        .execute("return navigator.doNotTrack;", vec![])
        .await
        .unwrap();
    assert_eq!(dnt, json!("1"), "the browser sends Do Not Track");
    let tracking = browser
        .execute("return window.heatmapTracker.tracking;", vec![])
        .await
        .unwrap();
    assert_eq!(tracking, json!(false));
    browser
        .find(Locator::Id("signup"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    // Let the page make a request of its own to the relay, after which anything the
    // snippet had sent would have arrived first on this origin's connection pool.
    browser
        .execute_async(
            "const done = arguments[0]; fetch('/healthz').then(() => done(true), () => done(false));",
            vec![],
        )
        .await
        .unwrap();
    let summary = summary(&addr).await;
    assert_eq!(summary["events_last_5_minutes"], 0, "{summary}");
    browser.close().await.unwrap();
}

/// The snippet's delivery counters (`heatmapTracker.stats`): `queued`, `sent`, `dropped`,
/// `retries` and `lastStatus`.
async fn tracker_stats(browser: &Client) -> Value {
    browser
        .execute("return window.heatmapTracker.stats;", vec![])
        .await
        .unwrap()
}

/// The element paths of the desktop clicks stored for `page`, read through the relay,
/// sorted; `None` while the renderer cannot answer.
async fn stored_click_paths(addr: &str, page: &str) -> Option<Vec<String>> {
    let path = format!("/api/heatmaps?page={page}&kind=click&width=desktop&format=clicks");
    let response = http_get(addr, &path).await.ok()?;
    match response.status {
        200 => {}
        // No click stored for the page yet.
        404 => return Some(Vec::new()),
        _ => return None,
    }
    let listed: Value = serde_json::from_slice(&response.body).ok()?;
    let mut paths: Vec<String> = listed["clicks"]
        .as_array()?
        .iter()
        .map(|click| click["path"].as_str().unwrap_or("<none>").to_owned())
        .collect();
    paths.sort();
    Some(paths)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clicks_made_while_the_renderer_is_down_reach_the_heatmap_once_it_is_back() {
    if !browser_available() {
        return;
    }
    let out_dir = TempDir::new("snippet-outage-out");
    let data_dir = TempDir::new("snippet-outage-data");
    let renderer = start_renderer_process("127.0.0.1:0", &out_dir, &data_dir, &[]);
    let renderer_addr = renderer.addr();
    let relay = start_relay_reconnecting_fast(renderer.url()).await;
    let addr = relay.addr.to_string();
    let driver = start_chromedriver().await;
    let profile = TempDir::new("chromium-outage");
    let browser = open_browser(&driver, &profile).await;
    browser.set_window_size(1400, 900).await.unwrap();
    let pricing_page = "/demo/pricing.html";
    visit(&browser, &format!("http://{addr}{pricing_page}")).await;
    eventually("the page view to be stored", || async {
        let stats = tracker_stats(&browser).await;
        (stats["sent"].as_u64()? >= 1 && stats["queued"] == 0).then_some(())
    })
    .await;
    let summary = summary(&addr).await;
    assert!(
        summary["events_last_5_minutes"].as_u64() >= Some(1),
        "{summary}"
    );

    // The renderer goes (SIGKILL: nothing answered, nothing flushed); five distinct
    // elements are clicked, and the snippet's attempts to send them fail.
    renderer.kill();
    let clicked = [
        "#buy-basic",
        "#buy-pro",
        "h1",
        "section.plan:nth-of-type(1) > h2",
        "section.plan:nth-of-type(2) > p",
    ];
    for selector in clicked {
        browser
            .find(Locator::Css(selector))
            .await
            .unwrap()
            .click()
            .await
            .unwrap();
    }
    let failing = eventually("the snippet's sends to fail", || async {
        let stats = tracker_stats(&browser).await;
        (stats["retries"].as_u64()? >= 1 && stats["queued"].as_u64()? >= 5).then_some(stats)
    })
    .await;
    assert!(
        [0, 502, 503].contains(&failing["lastStatus"].as_u64().unwrap_or(999)),
        "a network error, 502 or 503 while the renderer is down: {failing}"
    );

    // The visitor moves on to another page and clicks there: the first page's unsent
    // clicks travel in the tab's sessionStorage to the next page, which keeps retrying.
    visit(&browser, &format!("http://{addr}/demo/")).await;
    browser
        .find(Locator::Id("signup"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let mut expected_pages = vec![json!(pricing_page); clicked.len()];
    expected_pages.push(json!("/demo/"));
    let expected_pages = json!(expected_pages);
    // The outbox is saved before each attempt, so the next (failing) one shows it.
    eventually("the clicks of both pages to wait in the outbox", || async {
        let carried = browser
            .execute(
                "const saved = JSON.parse(sessionStorage.getItem('heatmap-outbox'));
                 return saved.events.filter((event) => event.type === 'click').map((event) => event.page);",
                vec![],
            )
            .await
            .ok()?;
        (carried == expected_pages).then_some(())
    })
    .await;
    eventually("the next page's sends to fail too", || async {
        let stats = tracker_stats(&browser).await;
        (stats["retries"].as_u64()? >= 1).then_some(())
    })
    .await;

    // The renderer comes back on its port with its data; the snippet's next retry delivers.
    let renderer = start_renderer_process(&renderer_addr, &out_dir, &data_dir, &[]);
    eventually("every queued event to be delivered", || async {
        let stats = tracker_stats(&browser).await;
        (stats["queued"] == 0 && stats["lastStatus"].as_u64()? / 100 == 2).then_some(())
    })
    .await;
    // Everything is acknowledged now, so these counts are final: exactly one of each
    // click, however many times a batch was sent.
    let pricing_clicks = stored_click_paths(&addr, pricing_page).await.unwrap();
    assert_eq!(
        pricing_clicks,
        [
            "body>main>div>section:nth-of-type(1)>h2",
            "body>main>div>section:nth-of-type(2)>p",
            "button#buy-basic",
            "button#buy-pro",
            "html>body>main>h1",
        ],
        "the five clicks made while the renderer was down, each once"
    );
    let home_clicks = stored_click_paths(&addr, "/demo/").await.unwrap();
    assert_eq!(home_clicks, ["button#signup"]);

    // Leaving a page beacons its last events and keeps them for the next page, which sends
    // them again: the renderer counts them once. Every event the visit made, in or out of
    // the outage, is stored exactly once.
    visit(&browser, &format!("http://{addr}{pricing_page}")).await;
    eventually("the next page to deliver what it carried", || async {
        let stats = tracker_stats(&browser).await;
        (stats["queued"] == 0 && stats["lastStatus"].as_u64()? / 100 == 2).then_some(())
    })
    .await;
    let renderer_addr = renderer.addr();
    eventually("a resent event to be counted once", || async {
        (metric(&renderer_addr, "renderer_events_duplicate_total").await? >= 1.0).then_some(())
    })
    .await;
    let numbered = browser
        .execute(
            "return JSON.parse(sessionStorage.getItem('heatmap-session')).seq;",
            vec![],
        )
        .await
        .unwrap();
    let stats = tracker_stats(&browser).await;
    assert_eq!(stats["dropped"], 0, "{stats}");
    let history: Value = serde_json::from_slice(
        &http_get(&addr, "/api/analytics/summary?range=24h")
            .await
            .unwrap()
            .body,
    )
    .unwrap();
    assert_eq!(
        history["totals"]["events"], numbered,
        "each event the session numbered, stored once: {history}"
    );
    browser.close().await.unwrap();
}

/// The types of the events in the outbox as the snippet last wrote it to `sessionStorage`;
/// `None` when there is none.
async fn saved_outbox(browser: &Client) -> Option<Vec<String>> {
    let types = browser
        .execute(
            "const saved = JSON.parse(sessionStorage.getItem('heatmap-outbox') || 'null');
             return saved && saved.events.map((event) => event.type);",
            vec![],
        )
        .await
        .unwrap();
    serde_json::from_value(types).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_outbox_is_bounded_drops_moves_first_and_is_cleared_by_opting_out() {
    if !browser_available() {
        return;
    }
    let out_dir = TempDir::new("snippet-bound-out");
    let data_dir = TempDir::new("snippet-bound-data");
    let renderer = start_renderer_process("127.0.0.1:0", &out_dir, &data_dir, &[]);
    let renderer_addr = renderer.addr();
    let relay = start_relay_reconnecting_fast(renderer.url()).await;
    renderer.kill();
    let addr = relay.addr.to_string();
    let driver = start_chromedriver().await;
    let profile = TempDir::new("chromium-bound");
    let browser = open_browser(&driver, &profile).await;
    browser.set_window_size(1400, 900).await.unwrap();
    let home = format!("http://{addr}/demo/");

    // Opting out throws away what waits, in memory and in the tab's storage.
    visit(&browser, &home).await;
    eventually("the page view to wait in the stored outbox", || async {
        let saved = saved_outbox(&browser).await?;
        saved.contains(&"pageview".to_owned()).then_some(())
    })
    .await;
    browser
        .execute("window.heatmapTracker.optOut();", vec![])
        .await
        .unwrap();
    assert_eq!(saved_outbox(&browser).await, None);
    let stats = tracker_stats(&browser).await;
    assert_eq!(stats["queued"], 0, "{stats}");
    browser
        .execute("window.heatmapTracker.optIn();", vec![])
        .await
        .unwrap();

    // A fresh page with its page view and first scroll depth waiting, then a move, the relay
    // failing every send.
    visit(&browser, &home).await;
    let queued = || async { tracker_stats(&browser).await["queued"].as_u64() };
    eventually("the page view and the scroll depth to wait", || async {
        (queued().await? == 2).then_some(())
    })
    .await;
    browser
        .execute(
            "document.dispatchEvent(new PointerEvent('pointermove', {clientX: 30, clientY: 40}));",
            vec![],
        )
        .await
        .unwrap();
    eventually("the move to wait behind them", || async {
        (queued().await? == 3).then_some(())
    })
    .await;

    // Clicks enough to go one over the bound, made in one go while the snippet is backing
    // off (no request holds events out of reach): the move is the one dropped.
    let made = eventually("clicks made while backing off", || async {
        let made = browser
            .execute(
                "const saved = JSON.parse(sessionStorage.getItem('heatmap-outbox'));
                 if (!(saved.retryAt > Date.now() + 100)) return null;
                 const n = 1000 - window.heatmapTracker.stats.queued + 1;
                 const button = document.getElementById('signup');
                 for (let i = 0; i < n; i++) button.dispatchEvent(new MouseEvent('click', {bubbles: true}));
                 return [n, window.heatmapTracker.stats];",
                vec![],
            )
            .await
            .ok()?;
        (!made.is_null()).then_some(made)
    })
    .await;
    let (n_clicks, stats) = (&made[0], &made[1]);
    assert_eq!(n_clicks, 998);
    assert_eq!(stats["queued"], 1000, "{stats}");
    assert_eq!(stats["dropped"], 1, "{stats}");

    // The renderer back: the thousand waiting events drain in bounded batches, each once,
    // and they are the page view, the scroll depth and the clicks, not the move.
    let _renderer = start_renderer_process(&renderer_addr, &out_dir, &data_dir, &[]);
    eventually("the outbox to drain", || async {
        let stats = tracker_stats(&browser).await;
        (stats["queued"] == 0 && stats["lastStatus"].as_u64()? / 100 == 2).then_some(())
    })
    .await;
    let stats = tracker_stats(&browser).await;
    assert_eq!(stats["sent"], 1000, "{stats}");
    assert_eq!(stats["dropped"], 1, "{stats}");
    let history: Value = serde_json::from_slice(
        &http_get(&addr, "/api/analytics/summary?range=24h&page=/demo/")
            .await
            .unwrap()
            .body,
    )
    .unwrap();
    let totals = &history["totals"];
    assert_eq!(
        (&totals["events"], &totals["pageviews"], &totals["clicks"]),
        (&json!(1000), &json!(1), n_clicks),
        "{history}"
    );
    browser.close().await.unwrap();
}
