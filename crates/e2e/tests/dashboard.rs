//! The dashboard a site owner opens, in a real headless Chromium against the real relay
//! and renderer: events sent over HTTP appear in every open dashboard, a session row opens
//! the whole visit, filters travel over the socket, history is read for a date range, the
//! live part greys while the relay is away, and pages list who is here by name.

mod common;

use common::browser::*;
use common::*;
use fantoccini::{Client, Locator};
use serde_json::{json, Value};
use testkit::{eventually, TempDir};

/// Longer than the 14 characters the table used to cut ids to.
const LONG_SESSION: &str = "s-visitor-with-a-long-session-id-0123456789";

/// A visit of eight pages over the last two minutes, from a German desktop that came from
/// example.org, with two clicks on the pricing page.
fn long_visit(now: i64) -> Value {
    let pages = [
        "/",
        "/demo/pricing.html",
        "/features",
        "/docs",
        "/docs/install",
        "/blog",
        "/about",
        "/contact",
    ];
    let mut events = Vec::new();
    for (idx, page) in pages.iter().enumerate() {
        let at = now - 120_000 + idx as i64 * 10_000;
        events.push(
            json!({"type": "pageview", "page": page, "sessionId": LONG_SESSION,
            "timestamp": at, "country": "DE",
            "metadata": {"device": "desktop", "referrer": "example.org"}}),
        );
        if *page == "/demo/pricing.html" {
            for (x, y) in [(300, 200), (900, 330)] {
                events.push(
                    json!({"type": "click", "page": page, "sessionId": LONG_SESSION,
                    "timestamp": at + 2_000, "country": "DE",
                    "metadata": {"x": x, "y": y, "vw": 1400, "vh": 900, "dw": 1400, "dh": 1800}}),
                );
            }
        }
    }
    json!(events)
}

/// Opens the dashboard in the current tab and waits until it is live (socket open, renderer
/// linked: no `data-stale`).
async fn open_dashboard(browser: &Client, addr: &str) {
    browser
        .goto(&format!("http://{addr}/dashboard"))
        .await
        .unwrap();
    eventually("the dashboard to be live", || async {
        let stale = browser
            .execute(
                "return document.getElementById('live').dataset.stale || null;",
                vec![],
            )
            .await
            .ok()?;
        stale.is_null().then_some(())
    })
    .await;
}

/// Runs `script` (a function body) in the page and returns its result.
async fn js(browser: &Client, script: &str) -> Value {
    browser.execute(script, vec![]).await.unwrap()
}

/// Waits until `script` returns something other than `null` or `false`.
async fn until(browser: &Client, what: &str, script: &str) -> Value {
    eventually(what, || async {
        let value = browser.execute(script, vec![]).await.ok()?;
        (!value.is_null() && value != json!(false)).then_some(value)
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_sent_over_http_appear_in_two_tabs_and_a_row_opens_the_whole_visit() {
    if !browser_available() {
        return;
    }
    let renderer = start_renderer().await;
    let relay = start_relay(&renderer.ws_url()).await;
    wait_linked(&relay).await;
    let addr = relay.addr.to_string();
    let driver = start_chromedriver().await;
    let profile = TempDir::new("chromium-dashboard-tabs");
    let browser = open_browser(&driver, &profile).await;
    open_dashboard(&browser, &addr).await;
    let first_tab = browser.window().await.unwrap();
    let second_tab = browser.new_window(true).await.unwrap().handle;
    browser.switch_to_window(second_tab.clone()).await.unwrap();
    open_dashboard(&browser, &addr).await;

    post_events(&addr, &long_visit(now_ms())).await;

    // Both tabs list the visit in the feed (newest first) and in the sessions table, the id
    // whole (cut only by CSS, the title and the copied text have all of it).
    for tab in [&first_tab, &second_tab] {
        browser.switch_to_window(tab.clone()).await.unwrap();
        let feed = until(
            &browser,
            "the visit in the live feed",
            "const rows = [...document.querySelectorAll('#feed li')];
             return rows.length >= 10 ? rows.map((row) => row.querySelector('.what').textContent) : null;",
        )
        .await;
        assert_eq!(feed[0], "pageview /contact", "newest first: {feed}");
        let row = until(
            &browser,
            "the visit in the sessions table",
            "const row = document.querySelector('#sessions tr[data-session]');
             if (!row) return null;
             const id = row.querySelector('.sid');
             return { id: id.textContent, title: id.title, journey: row.cells[3].textContent,
                      country: row.cells[1].textContent, device: row.cells[2].textContent,
                      height: row.getBoundingClientRect().height };",
        )
        .await;
        assert_eq!(row["id"], LONG_SESSION, "{row}");
        assert_eq!(row["title"], LONG_SESSION, "{row}");
        assert_eq!(row["country"], "DE", "{row}");
        assert_eq!(row["device"], "desktop", "{row}");
        // Eight pages in one short line: the first, how many between, the last.
        assert_eq!(row["journey"], "/ → … 6 more … → /contact", "{row}");
        assert!(row["height"].as_f64().unwrap() < 40.0, "one line: {row}");
    }

    // Today's history, read from the store, follows the new visitor without a reload.
    until(
        &browser,
        "today's history to count the visit",
        "return document.getElementById('h-events').textContent === '10'
           && document.getElementById('h-clicks').textContent === '2';",
    )
    .await;

    // A click on the row opens the whole visit.
    click_css(&browser, "#sessions tr[data-session]").await;
    let dialog = until(
        &browser,
        "the session dialog with its clicks",
        "const dialog = document.getElementById('session-dialog');
         const clicks = document.getElementById('sd-clicks');
         if (!dialog.open || clicks.dataset.state !== 'shown') return null;
         const field = (name) => dialog.querySelector(`dd[data-field='${name}']`).textContent;
         return {
           id: document.getElementById('sd-id').textContent,
           journey: [...dialog.querySelectorAll('#sd-journey li')].map((item) => ({
             page: item.querySelector('.page').textContent,
             stay: item.querySelector('.stay').textContent,
             time: item.querySelector('time').textContent })),
           device: field('device'), country: field('country'), referrer: field('referrer'),
           events: field('events'), clicks: Number(clicks.dataset.clicks),
           canvases: [...clicks.querySelectorAll('canvas')].map((canvas) => {
             const data = canvas.getContext('2d').getImageData(0, 0, canvas.width, canvas.height).data;
             let red = 0;
             for (let idx = 0; idx < data.length; idx += 4) if (data[idx] > data[idx + 2] + 40) red += 1;
             return { page: canvas.dataset.page, red };
           }),
         };",
    )
    .await;
    assert_eq!(dialog["id"], LONG_SESSION, "{dialog}");
    let pages: Vec<&str> = dialog["journey"]
        .as_array()
        .unwrap()
        .iter()
        .map(|step| step["page"].as_str().unwrap())
        .collect();
    assert_eq!(
        pages,
        [
            "/",
            "/demo/pricing.html",
            "/features",
            "/docs",
            "/docs/install",
            "/blog",
            "/about",
            "/contact"
        ],
        "{dialog}"
    );
    // Each page but the last was left for the next after 10 s; the last is still open.
    assert_eq!(dialog["journey"][0]["stay"], "10 s", "{dialog}");
    assert_eq!(dialog["journey"][6]["stay"], "10 s", "{dialog}");
    assert_eq!(dialog["journey"][7]["stay"], "0 s so far", "{dialog}");
    assert_ne!(dialog["journey"][0]["time"], "", "{dialog}");
    assert_eq!(dialog["device"], "desktop", "{dialog}");
    assert_eq!(dialog["country"], "DE", "{dialog}");
    assert_eq!(dialog["referrer"], "example.org", "{dialog}");
    assert_eq!(dialog["events"], "10", "{dialog}");
    assert_eq!(dialog["clicks"], 2, "{dialog}");
    assert_eq!(
        dialog["canvases"][0]["page"], "/demo/pricing.html",
        "{dialog}"
    );
    assert!(
        dialog["canvases"][0]["red"].as_u64().unwrap() > 50,
        "the clicks are drawn: {dialog}"
    );
    // On a phone-wide window the table scrolls sideways; no column is squeezed to nothing.
    browser.set_window_size(420, 900).await.unwrap();
    let widths = until(
        &browser,
        "the narrow layout",
        "if (window.innerWidth > 500) return null;
         const row = document.querySelector('#sessions tr[data-session]');
         return [...row.cells].map((cell) => cell.getBoundingClientRect().width);",
    )
    .await;
    for width in widths.as_array().unwrap() {
        assert!(width.as_f64().unwrap() >= 40.0, "{widths}");
    }

    // Opening it was counted as a dashboard action.
    eventually("the view_session action to be counted", || async {
        let viewed = metric(
            &addr,
            "relay_dashboard_actions_total{action=\"view_session\"}",
        )
        .await?;
        (viewed >= 1.0).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filters_travel_over_the_socket_and_history_follows_the_range() {
    if !browser_available() {
        return;
    }
    let renderer = start_renderer().await;
    let relay = start_relay(&renderer.ws_url()).await;
    wait_linked(&relay).await;
    let addr = relay.addr.to_string();
    let now = now_ms();
    post_events(
        &addr,
        &json!([
            {"type": "pageview", "page": "/pricing", "sessionId": "de-1", "country": "DE", "timestamp": now - 5_000,
             "metadata": {"device": "desktop"}},
            {"type": "pageview", "page": "/", "sessionId": "fr-1", "country": "FR", "timestamp": now - 4_000,
             "metadata": {"device": "mobile"}},
            {"type": "pageview", "page": "/about", "sessionId": "fr-2", "country": "FR", "timestamp": now - 3_000,
             "metadata": {"device": "mobile"}},
        ]),
    )
    .await;
    // A recorder page is online but is not a dashboard.
    let _recorder = page(&relay, "connected").await;
    let driver = start_chromedriver().await;
    let profile = TempDir::new("chromium-dashboard-filters");
    let browser = open_browser(&driver, &profile).await;
    open_dashboard(&browser, &addr).await;

    let cards = until(
        &browser,
        "the cards",
        "const text = (id) => document.getElementById(id).textContent;
         return text('active-users') === '3' && text('dashboards') === '1' && text('online') === '2'
           ? { today: text('visitors-today') } : null;",
    )
    .await;
    assert_eq!(cards["today"], "3", "{cards}");
    // Today's history (the default range) lists both countries, from the store.
    until(
        &browser,
        "today's history",
        "const history = document.getElementById('history');
         return history.dataset.state === 'shown'
           && document.getElementById('h-sessions').textContent === '3'
           && document.getElementById('top-countries').children.length === 2;",
    )
    .await;

    // Record what the page sends from now on.
    js(
        &browser,
        "window.sentFrames = [];
         const realSend = WebSocket.prototype.send;
         WebSocket.prototype.send = function (data) { window.sentFrames.push(String(data)); return realSend.call(this, data); };",
    )
    .await;
    until(
        &browser,
        "Germany to be offered",
        "return !!document.querySelector(\"#f-country option[value='DE']\");",
    )
    .await;
    choose(&browser, "f-country", "DE").await;
    let sent = until(
        &browser,
        "a request_detailed_stats for Germany",
        "return window.sentFrames.map((frame) => JSON.parse(frame))
           .find((msg) => msg.type === 'request_detailed_stats' && msg.filters.country === 'DE') || null;",
    )
    .await;
    assert_eq!(
        sent,
        json!({"type": "request_detailed_stats", "filters": {"country": "DE", "page": null}})
    );
    // The relay's answer, to this dashboard, is what the cards and history show now.
    let filtered = until(
        &browser,
        "the filtered numbers",
        "const live = document.getElementById('live');
         const text = (id) => document.getElementById(id).textContent;
         return live.dataset.filters === '{\"country\":\"DE\"}' && text('active-users') === '1'
           && text('h-sessions') === '1'
           ? { sessions: [...document.querySelectorAll('#sessions tr')].map((row) => row.dataset.session),
               countries: [...document.querySelectorAll('#top-countries li')].map((item) => item.textContent) }
           : null;",
    )
    .await;
    assert_eq!(filtered["sessions"], json!(["de-1"]), "{filtered}");
    assert_eq!(filtered["countries"], json!(["DE — 1"]), "{filtered}");
    eventually("the filter change to be counted", || async {
        let changes = metric(
            &addr,
            "relay_dashboard_actions_total{action=\"filter_change\"}",
        )
        .await?;
        (changes >= 1.0).then_some(())
    })
    .await;

    // The device filter narrows the sessions on the page itself.
    choose(&browser, "f-country", "").await;
    choose(&browser, "f-device", "mobile").await;
    let mobile = until(
        &browser,
        "the mobile sessions",
        "const ids = [...document.querySelectorAll('#sessions tr')].map((row) => row.dataset.session).sort();
         return ids.length === 2 ? ids : null;",
    )
    .await;
    assert_eq!(mobile, json!(["fr-1", "fr-2"]));

    // Ranges: 7 days holds the three visits; a custom range last year holds none.
    choose(&browser, "f-device", "").await;
    choose(&browser, "f-range", "7d").await;
    until(
        &browser,
        "the 7-day history",
        "const history = document.getElementById('history');
         return history.dataset.state === 'shown' && history.dataset.range === 'range=7d'
           && document.getElementById('h-events').textContent === '3';",
    )
    .await;
    choose(&browser, "f-range", "custom").await;
    let invalid = until(
        &browser,
        "the custom range to ask for its ends",
        "const history = document.getElementById('history');
         return history.dataset.state === 'invalid' && !document.getElementById('custom-range').hidden
           ? document.getElementById('history-note').textContent : null;",
    )
    .await;
    assert_eq!(invalid, "Choose both ends of the custom range.");
    js(
        &browser,
        "const year = new Date().getFullYear() - 1;
         document.getElementById('f-from').value = `${year}-01-01T00:00`;
         document.getElementById('f-to').value = `${year}-01-31T00:00`;
         document.getElementById('f-to').dispatchEvent(new Event('change'));",
    )
    .await;
    until(
        &browser,
        "an empty custom range",
        "const history = document.getElementById('history');
         return history.dataset.state === 'shown' && history.dataset.range.startsWith('from=')
           && document.getElementById('h-events').textContent === '0';",
    )
    .await;

    // Sound is off until asked for, and the choice is remembered.
    assert_eq!(
        js(&browser, "return document.getElementById('sound').checked;").await,
        json!(false)
    );
    // Back at the top, where the filters are (the sticky bar would cover them otherwise).
    js(&browser, "window.scrollTo(0, 0);").await;
    click_css(&browser, "#sound").await;
    open_dashboard(&browser, &addr).await;
    assert_eq!(
        js(
            &browser,
            "return [document.getElementById('sound').checked, localStorage.getItem('heatmap.dashboard.sound')];"
        )
        .await,
        json!([true, "on"])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_live_part_greys_while_the_relay_is_down_and_comes_back_after() {
    if !browser_available() {
        return;
    }
    let renderer = start_renderer().await;
    let relay = start_relay(&renderer.ws_url()).await;
    wait_linked(&relay).await;
    let addr = relay.addr;
    let driver = start_chromedriver().await;
    let profile = TempDir::new("chromium-dashboard-stale");
    let browser = open_browser(&driver, &profile).await;
    open_dashboard(&browser, &addr.to_string()).await;

    // A burst: the spike banner shows.
    let burst: Vec<Value> = (0..40)
        .map(|idx| json!({"type": "pageview", "page": "/", "sessionId": format!("b{idx}")}))
        .collect();
    post_events(&addr.to_string(), &json!(burst)).await;
    until(
        &browser,
        "the spike banner",
        "return !document.getElementById('spike-alert').hidden;",
    )
    .await;

    relay.stop().await;
    let stale = until(
        &browser,
        "the live part to go stale",
        "const live = document.getElementById('live');
         const alert = document.getElementById('spike-alert');
         return live.dataset.stale
           ? { stale: live.dataset.stale, alertShown: alert.getClientRects().length > 0,
               opacity: getComputedStyle(document.getElementById('active-users')).opacity,
               feedOpacity: getComputedStyle(document.getElementById('feed')).opacity,
               note: document.getElementById('stale-note').textContent }
           : null;",
    )
    .await;
    assert_eq!(stale["stale"], "relay", "{stale}");
    assert_eq!(stale["alertShown"], false, "{stale}");
    assert_eq!(stale["opacity"], "0.4", "{stale}");
    assert_eq!(stale["feedOpacity"], "0.4", "{stale}");
    assert!(
        stale["note"].as_str().unwrap().contains("Not connected"),
        "{stale}"
    );

    let _relay = restart_relay(addr, &renderer.ws_url()).await;
    let back = until(
        &browser,
        "the live part to be live again",
        "const live = document.getElementById('live');
         return live.dataset.stale ? null
           : { opacity: getComputedStyle(document.getElementById('active-users')).opacity,
               link: document.querySelector('[data-link=\"browser-relay\"]').dataset.state };",
    )
    .await;
    assert_eq!(back, json!({"opacity": "1", "link": "connected"}));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_list_who_is_here_by_name_with_joins_and_leaves() {
    if !browser_available() {
        return;
    }
    let renderer = start_renderer().await;
    let relay = start_relay(&renderer.ws_url()).await;
    wait_linked(&relay).await;
    let addr = relay.addr.to_string();
    let driver = start_chromedriver().await;
    let profile = TempDir::new("chromium-dashboard-members");
    let browser = open_browser(&driver, &profile).await;
    open_dashboard(&browser, &addr).await;
    let dashboard_tab = browser.window().await.unwrap();
    until(
        &browser,
        "the dashboard alone",
        "return document.getElementById('members').dataset.count === '1';",
    )
    .await;

    // The recorder page, in another tab, joins and picks a name.
    let recorder_tab = browser.new_window(true).await.unwrap().handle;
    browser
        .switch_to_window(recorder_tab.clone())
        .await
        .unwrap();
    browser.goto(&format!("http://{addr}/")).await.unwrap();
    let own = until(
        &browser,
        "the recorder's members list",
        "const members = document.getElementById('members');
         return members.dataset.count === '2' ? members.textContent : null;",
    )
    .await;
    assert!(own.as_str().unwrap().contains("(you)"), "{own}");
    let field = browser
        .find(Locator::Css("#members input[name='member-name']"))
        .await
        .unwrap();
    field.send_keys("Ada\n").await.unwrap();
    js(
        &browser,
        "document.querySelector(\"#members input[name='member-name']\").dispatchEvent(new Event('change'));",
    )
    .await;
    assert_eq!(
        js(&browser, "return localStorage.getItem('heatmap.name');").await,
        json!("Ada")
    );

    browser
        .switch_to_window(dashboard_tab.clone())
        .await
        .unwrap();
    until(
        &browser,
        "Ada on the dashboard",
        "const members = document.getElementById('members');
         return members.dataset.count === '2'
           && members.querySelector('.members-names').dataset.names.split('\\n').includes('Ada');",
    )
    .await;

    // The name outlives a reload (a new connection, a new generated name, then Ada again).
    browser
        .switch_to_window(recorder_tab.clone())
        .await
        .unwrap();
    browser.refresh().await.unwrap();
    until(
        &browser,
        "the recorder to be Ada again",
        "const members = document.getElementById('members');
         return members.dataset.count === '2' && members.textContent.includes('Ada (you)');",
    )
    .await;

    // The recorder closes: the dashboard says so and counts one.
    browser.close_window().await.unwrap();
    browser.switch_to_window(dashboard_tab).await.unwrap();
    let left = until(
        &browser,
        "Ada's leave",
        "const members = document.getElementById('members');
         const notice = members.querySelector('.members-notice');
         return members.dataset.count === '1' && notice.dataset.kind === 'leave'
           ? { notice: notice.textContent, names: members.querySelector('.members-names').dataset.names } : null;",
    )
    .await;
    assert_eq!(left["notice"], "Ada left", "{left}");
    assert!(!left["names"].as_str().unwrap().contains("Ada"), "{left}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sessions_clicks_are_its_own_and_bad_queries_name_the_field() {
    let renderer = start_renderer().await;
    let relay = start_relay(&renderer.ws_url()).await;
    wait_linked(&relay).await;
    let addr = relay.addr.to_string();
    let now = now_ms();
    let click = |session: &str, page: &str, x: u32, at: i64| {
        json!({"type": "click", "page": page, "sessionId": session, "timestamp": at,
               "metadata": {"x": x, "y": 40, "vw": 1000, "vh": 800, "dw": 1000, "dh": 2000}})
    };
    post_events(
        &addr,
        &json!([
            click("mine", "/", 10, now - 3_000),
            click("other", "/", 20, now - 2_500),
            click("mine", "/pricing", 30, now - 2_000),
            {"type": "pageview", "page": "/", "sessionId": "mine", "timestamp": now - 1_000},
        ]),
    )
    .await;
    let path = format!(
        "/api/analytics/session?id=mine&from={}&to={}",
        now - 3_000,
        now - 1_000
    );
    let reply = testkit::http_get(&addr, &path).await.unwrap();
    assert_eq!(reply.status, 200);
    let answer: Value = serde_json::from_slice(&reply.body).unwrap();
    assert_eq!(answer["sessionId"], "mine", "{answer}");
    assert_eq!(answer["truncated"], false, "{answer}");
    let clicks: Vec<(&str, f64)> = answer["clicks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|click| {
            (
                click["page"].as_str().unwrap(),
                click["x"].as_f64().unwrap(),
            )
        })
        .collect();
    assert_eq!(clicks, [("/", 10.0), ("/pricing", 30.0)], "{answer}");
    assert_eq!(answer["clicks"][0]["dh"], 2000.0, "{answer}");

    for (query, field) in [
        ("from=1&to=2".to_owned(), "id:"),
        (format!("id={}&from=1&to=2", "x".repeat(65)), "id:"),
        ("id=mine&from=1".to_owned(), "from, to:"),
        ("id=mine&from=yesterday&to=2".to_owned(), "from:"),
    ] {
        let reply = testkit::http_get(&addr, &format!("/api/analytics/session?{query}"))
            .await
            .unwrap();
        assert_eq!(reply.status, 400, "{query}");
        let body = String::from_utf8_lossy(&reply.body).into_owned();
        assert!(body.contains(field), "{query}: {body}");
    }
}
