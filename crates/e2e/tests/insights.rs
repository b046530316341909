//! What none of the peers shows, end to end: rage and dead clicks found on the demo site in
//! a real Chromium and listed per element, the counts behind a view exported as CSV, the
//! confidence warning under 30 sessions, and two ranges compared with a diverging
//! difference map. API checks go through the relay and renderer on loopback sockets.

mod common;

use common::browser::*;
use common::*;
use fantoccini::actions::{InputSource, MouseActions, PointerAction, MOUSE_BUTTON_LEFT};
use fantoccini::{Client, Locator};
use serde_json::{json, Value};
use testkit::{eventually, http_get, TempDir};

const DAY_MS: i64 = 86_400_000;

/// A desktop click on `page` at (`x`, `y`) of a 1400 × 1800 document.
fn click(page: &str, session: &str, at_ms: i64, x: f64, y: f64, extra: Value) -> Value {
    let mut metadata = json!({"x": x, "y": y, "vw": 1400, "vh": 900, "dw": 1400, "dh": 1800});
    for (key, value) in extra.as_object().unwrap() {
        metadata[key] = value.clone();
    }
    json!({"type": "click", "page": page, "sessionId": session, "timestamp": at_ms, "metadata": metadata})
}

async fn get_json(addr: &str, path: &str) -> (u16, Value) {
    let response = http_get(addr, path).await.unwrap();
    let body = serde_json::from_slice(&response.body).unwrap_or(Value::Null);
    (response.status, body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn click_insights_rank_elements_by_rage_and_dead_clicks() {
    let renderer = start_renderer().await;
    let relay = start_relay(&renderer.ws_url()).await;
    wait_linked(&relay).await;
    let addr = relay.addr.to_string();
    let page = "/shop";
    let start = now_ms() - 60_000;
    let mut events = Vec::new();
    // One rage burst: three clicks within 400 ms and 10 px; later, a slow fourth.
    for (offset, dx) in [(0, 0.0), (200, 5.0), (400, 10.0), (5_000, 0.0)] {
        events.push(click(
            page,
            "angry",
            start + offset,
            300.0 + dx,
            300.0,
            json!({"path": "button#pay", "dead": false}),
        ));
    }
    // Quick clicks spread over 90 px are not rage; a double click is not either.
    for (offset, dx) in [(0, 0.0), (100, 45.0), (200, 90.0)] {
        events.push(click(
            page,
            "browsing",
            start + 10_000 + offset,
            100.0 + dx,
            900.0,
            json!({"path": "ul>li", "dead": false}),
        ));
    }
    // Two sessions click an inert label: dead clicks, the worst element.
    for session in ["d1", "d2"] {
        events.push(click(
            page,
            session,
            start + 20_000,
            700.0,
            100.0,
            json!({"path": "span#price", "dead": true}),
        ));
    }
    // A click with no verdict (an older snippet) is counted, never as dead.
    events.push(click(
        page,
        "old",
        start + 30_000,
        10.0,
        10.0,
        json!({"path": "a#home"}),
    ));
    post_events(&addr, &json!(events)).await;

    let (status, insights) =
        get_json(&addr, &format!("/api/insights/clicks?page={page}&range=1h")).await;
    assert_eq!(status, 200, "{insights}");
    assert_eq!(insights["clicks"], 10, "{insights}");
    assert_eq!(insights["sessions"], 5, "{insights}");
    assert_eq!(insights["rage_bursts"], 1, "{insights}");
    assert_eq!(insights["dead_clicks"], 2, "{insights}");
    let rows: Vec<(String, u64, u64, u64, u64)> = insights["elements"]
        .as_array()
        .unwrap()
        .iter()
        .map(|row| {
            (
                row["path"].as_str().unwrap().to_owned(),
                row["clicks"].as_u64().unwrap(),
                row["rage_bursts"].as_u64().unwrap(),
                row["dead_clicks"].as_u64().unwrap(),
                row["sessions"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        rows,
        [
            ("span#price".into(), 2, 0, 2, 2),
            ("button#pay".into(), 4, 1, 0, 1),
            ("ul>li".into(), 3, 0, 0, 1),
            ("a#home".into(), 1, 0, 0, 1),
        ],
        "the worst first: {insights}"
    );
    let spots: Vec<(&str, &str)> = insights["spots"]
        .as_array()
        .unwrap()
        .iter()
        .map(|spot| {
            (
                spot["kind"].as_str().unwrap(),
                spot["path"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        spots,
        [
            ("rage", "button#pay"),
            ("dead", "span#price"),
            ("dead", "span#price")
        ]
    );

    // Bounded on request, and bad values are refused by name.
    let (_, top) = get_json(&addr, &format!("/api/insights/clicks?page={page}&limit=1")).await;
    assert_eq!(top["elements"].as_array().unwrap().len(), 1, "{top}");
    assert_eq!(top["n_elements"], 4, "{top}");
    for (query, expected) in [
        (
            "page=/shop&limit=0",
            "limit: \"0\" is not a number from 1 to 50",
        ),
        ("page=/shop&limit=many", "limit: \"many\""),
        ("range=1h", "page is required"),
        (
            "page=/shop&type=click",
            "type: the click insights read clicks only",
        ),
        ("page=/shop&range=soon", "range: \"soon\""),
    ] {
        let (status, answer) = get_json(&addr, &format!("/api/insights/clicks?{query}")).await;
        assert_eq!(status, 400, "{query}: {answer}");
        let message = answer["error"].as_str().unwrap();
        assert!(message.starts_with(expected), "{query}: {message}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_csv_export_counts_exactly_the_events_in_the_range() {
    let renderer = start_renderer().await;
    let relay = start_relay(&renderer.ws_url()).await;
    wait_linked(&relay).await;
    let addr = relay.addr.to_string();
    let page = "/export";
    let day = (now_ms() / DAY_MS - 3) * DAY_MS;
    let mut events = Vec::new();
    // Seven clicks on the day asked for, over three spots; three the day after.
    for (idx, (x, y)) in [
        (100.0, 100.0),
        (100.0, 100.0),
        (700.0, 900.0),
        (700.0, 900.0),
        (1300.0, 1700.0),
        (1300.0, 1700.0),
        (1300.0, 1700.0),
    ]
    .into_iter()
    .enumerate()
    {
        events.push(click(
            page,
            &format!("s{idx}"),
            day + 3_600_000 + idx as i64 * 1_000,
            x,
            y,
            json!({}),
        ));
    }
    for idx in 0..3 {
        events.push(click(
            page,
            "later",
            day + DAY_MS + 3_600_000 + idx * 1_000,
            50.0,
            50.0,
            json!({}),
        ));
    }
    post_events(&addr, &json!(events)).await;

    let path = format!(
        "/api/heatmaps?page={page}&kind=click&width=desktop&format=csv&from={day}&to={}",
        day + DAY_MS
    );
    let response = http_get(&addr, &path).await.unwrap();
    assert_eq!(response.status, 200);
    assert_eq!(
        response.content_type.as_deref(),
        Some("text/csv; charset=utf-8")
    );
    let csv = String::from_utf8(response.body.to_vec()).unwrap();
    let header: Vec<&str> = csv
        .lines()
        .take_while(|line| line.starts_with('#'))
        .collect();
    assert_eq!(header[0], "# page: /export", "{csv}");
    assert_eq!(header[1], "# kind: click", "{csv}");
    assert_eq!(header[2], "# widths: desktop", "{csv}");
    assert!(header[3].starts_with("# range: from "), "{csv}");
    assert_eq!(header[4], "# events: 7", "{csv}");
    assert_eq!(header[5], "# sessions: 7", "{csv}");
    let rows: Vec<&str> = csv.lines().skip(header.len()).collect();
    assert_eq!(rows[0], "x,y,count");
    let cells: Vec<(u32, u32, u64)> = rows[1..]
        .iter()
        .map(|row| {
            let fields: Vec<u64> = row.split(',').map(|field| field.parse().unwrap()).collect();
            (fields[0] as u32, fields[1] as u32, fields[2])
        })
        .collect();
    assert_eq!(cells.iter().map(|cell| cell.2).sum::<u64>(), 7, "{csv}");
    assert_eq!(cells.len(), 3, "three spots, three cells: {csv}");
    assert!(cells.iter().all(|&(x, _, _)| x < 64), "{csv}");

    // The confidence numbers of the same view agree, and a wrong kind is named.
    let (status, confidence) = get_json(
        &addr,
        &format!(
            "/api/insights/confidence/click?page={page}&width=desktop&from={day}&to={}",
            day + DAY_MS
        ),
    )
    .await;
    assert_eq!(status, 200, "{confidence}");
    assert_eq!(
        confidence,
        json!({"kind": "click", "events": 7, "sessions": 7})
    );
    let (status, refused) = get_json(
        &addr,
        &format!("/api/insights/confidence/hover?page={page}"),
    )
    .await;
    assert_eq!(status, 400, "{refused}");
    assert!(
        refused["error"]
            .as_str()
            .unwrap()
            .starts_with("kind \"hover\" is not one of"),
        "{refused}"
    );

    // A pixel width reads raw events instead of stored cells, and counts the same.
    let raw = http_get(&addr, &path.replace("width=desktop", "width=1400"))
        .await
        .unwrap();
    let raw = String::from_utf8(raw.body.to_vec()).unwrap();
    assert!(raw.contains("# events: 7\n"), "{raw}");
}

/// Clicks `id` three times within a fraction of a second, as an annoyed visitor does.
async fn triple_click(browser: &Client, id: &str) {
    let element = browser.find(Locator::Id(id)).await.unwrap();
    let mut actions = MouseActions::new("mouse".into()).then(PointerAction::MoveToElement {
        element,
        duration: None,
        x: 0.0,
        y: 0.0,
    });
    for _ in 0..3 {
        actions = actions
            .then(PointerAction::Down {
                button: MOUSE_BUTTON_LEFT,
            })
            .then(PointerAction::Up {
                button: MOUSE_BUTTON_LEFT,
            });
    }
    browser.perform_actions(actions).await.unwrap();
}

/// The frustration answer for `page` once it counts `n_clicks` clicks.
async fn insights_with(addr: &str, page: &str, n_clicks: u64) -> Value {
    eventually(
        &format!("{n_clicks} clicks on {page} to be stored"),
        || async {
            let (status, insights) =
                get_json(addr, &format!("/api/insights/clicks?page={page}")).await;
            (status == 200 && insights["clicks"] == n_clicks).then_some(insights)
        },
    )
    .await
}

/// One element's `(clicks, rage bursts, dead clicks)` in a frustration answer.
fn counts_of(insights: &Value, path: &str) -> (u64, u64, u64) {
    let row = insights["elements"]
        .as_array()
        .unwrap()
        .iter()
        .find(|row| row["path"] == path)
        .unwrap_or_else(|| panic!("{path} is not listed: {insights}"));
    (
        row["clicks"].as_u64().unwrap(),
        row["rage_bursts"].as_u64().unwrap(),
        row["dead_clicks"].as_u64().unwrap(),
    )
}

/// What the insights section shows now.
async fn insights_view(browser: &Client) -> Value {
    browser
        .execute(
            "const $ = (id) => document.getElementById(id);
             const rows = [...$('ins-frustration').querySelectorAll('tbody tr')].map((row) =>
               [row.dataset.path, Number(row.dataset.rage), Number(row.dataset.dead)]);
             const marks = [...document.querySelectorAll('#ins-marks-layer .ins-mark')].map((mark) =>
               [mark.dataset.kind, mark.dataset.path]);
             return {
               page: $('ins-confidence').dataset.page || null,
               sessions: $('ins-confidence').dataset.sessions || null,
               events: $('ins-confidence').dataset.events || null,
               confidence: $('ins-confidence').textContent,
               warningVisible: !$('ins-warning').hidden && $('ins-warning').offsetHeight > 0,
               rows, marks, csv: $('ins-csv').href, png: $('ins-png').href,
             };",
            vec![],
        )
        .await
        .unwrap()
}

/// Chooses `page` in the heatmap view and waits until the insights follow it.
async fn show_page(browser: &Client, page: &str) -> Value {
    choose(browser, "hm-page", page).await;
    click_id(browser, "hm-show").await;
    eventually(&format!("the insights of {page}"), || async {
        let view = insights_view(browser).await;
        (view["page"] == page && view["sessions"].is_string()).then_some(view)
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rage_and_dead_clicks_on_the_demo_site_reach_the_frustration_list() {
    if !browser_available() {
        return;
    }
    let renderer = start_renderer().await;
    let relay = start_relay(&renderer.ws_url()).await;
    wait_linked(&relay).await;
    let addr = relay.addr.to_string();
    let driver = start_chromedriver().await;
    let profile = TempDir::new("chromium-insights");
    let browser = open_browser(&driver, &profile).await;
    browser.set_window_size(1400, 900).await.unwrap();

    // Home: a quick triple click on the inert Sign up button, then the link to pricing.
    visit(&browser, &format!("http://{addr}/demo/")).await;
    triple_click(&browser, "signup").await;
    // Their second passes before the visitor moves on.
    let home = insights_with(&addr, "/demo/", 3).await;
    assert_eq!(
        counts_of(&home, "button#signup"),
        (3, 1, 3),
        "a triple click on an inert button is one rage burst of dead clicks: {home}"
    );
    click_id(&browser, "to-pricing").await;
    // Pricing: the site's own script answers Choose Pro (the DOM changes); Basic does nothing.
    visit(&browser, &format!("http://{addr}/demo/pricing.html")).await;
    browser
        .execute(
            "document.getElementById('buy-pro').addEventListener('click', () => {
               const note = document.createElement('p');
               note.textContent = 'Added to your cart';
               document.querySelector('main').append(note);
             });",
            vec![],
        )
        .await
        .unwrap();
    click_id(&browser, "buy-pro").await;
    click_id(&browser, "buy-basic").await;

    let home = insights_with(&addr, "/demo/", 4).await;
    assert_eq!(
        counts_of(&home, "a#to-pricing"),
        (1, 0, 0),
        "a link that navigates is not dead: {home}"
    );
    let pricing = insights_with(&addr, "/demo/pricing.html", 2).await;
    assert_eq!(
        counts_of(&pricing, "button#buy-pro"),
        (1, 0, 0),
        "a button that changes the page is not dead: {pricing}"
    );
    assert_eq!(
        counts_of(&pricing, "button#buy-basic"),
        (1, 0, 1),
        "a button that does nothing is dead: {pricing}"
    );

    // The dashboard lists them, the worst first, and marks them on the heatmap.
    open_dashboard_listing(&browser, &addr, "/demo/").await;
    let shown = show_page(&browser, "/demo/").await;
    eventually("the frustration list", || async {
        let view = insights_view(&browser).await;
        let rows = view["rows"].as_array()?;
        (rows.first()? == &json!(["button#signup", 1, 3])).then_some(())
    })
    .await;
    assert_eq!(shown["sessions"], "1", "{shown}");
    eventually("the heatmap to be drawn", || async {
        let state = browser
            .execute(
                "return document.getElementById('hm-stage').dataset.state;",
                vec![],
            )
            .await
            .ok()?;
        (state == "shown").then_some(())
    })
    .await;
    click_id(&browser, "ins-marks").await;
    let marks = eventually("the rage and dead marks", || async {
        let view = insights_view(&browser).await;
        let marks = view["marks"].as_array()?.clone();
        (marks.len() == 4).then_some(marks)
    })
    .await;
    let rage = marks.iter().filter(|mark| mark[0] == "rage").count();
    assert_eq!(rage, 1, "{marks:?}");
    assert!(
        marks.iter().all(|mark| mark[1] == "button#signup"),
        "{marks:?}"
    );
    // The rage mark sits on the Sign up button in the framed page.
    let on_button = browser
        .execute(
            "const mark = document.querySelector('#ins-marks-layer .ins-rage').getBoundingClientRect();
             const frame = document.getElementById('hm-frame');
             const button = frame.contentDocument.getElementById('signup').getBoundingClientRect();
             const box = frame.getBoundingClientRect();
             const x = mark.left + mark.width / 2 - box.left, y = mark.top + mark.height / 2 - box.top;
             return x >= button.left - 2 && x <= button.right + 2 && y >= button.top - 2 && y <= button.bottom + 2;",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(on_button, json!(true));
    browser.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn confidence_exports_and_compare_on_the_dashboard() {
    if !browser_available() {
        return;
    }
    let renderer = start_renderer().await;
    let relay = start_relay(&renderer.ws_url()).await;
    wait_linked(&relay).await;
    let addr = relay.addr.to_string();
    // Redesign: three days ago visitors clicked the top left; two days ago the bottom right.
    let day = (now_ms() / DAY_MS - 3) * DAY_MS;
    let few = "/demo/";
    let busy = "/demo/pricing.html";
    let mut events = Vec::new();
    for idx in 0..3 {
        events.push(click(
            few,
            &format!("f{idx}"),
            day + 3_600_000,
            200.0,
            200.0,
            json!({}),
        ));
    }
    for idx in 0..40 {
        events.push(click(
            busy,
            &format!("a{idx}"),
            day + 3_600_000 + idx,
            200.0,
            300.0,
            json!({}),
        ));
        events.push(click(
            busy,
            &format!("b{idx}"),
            day + DAY_MS + 3_600_000 + idx,
            1100.0,
            1400.0,
            json!({}),
        ));
    }
    // A visit to each page now, by sessions already counted, so the dashboard lists them
    // (it offers the pages seen lately).
    for (page, session) in [(few, "f0"), (busy, "a0")] {
        events.push(json!({"type": "pageview", "page": page, "sessionId": session}));
    }
    post_events(&addr, &json!(events)).await;

    let driver = start_chromedriver().await;
    let profile = TempDir::new("chromium-insights-compare");
    let browser = open_browser(&driver, &profile).await;
    browser.set_window_size(1400, 900).await.unwrap();
    open_dashboard_listing(&browser, &addr, busy).await;

    // Three sessions: the warning shows. Eighty: it does not.
    let thin = show_page(&browser, few).await;
    assert_eq!(
        (thin["sessions"].as_str(), thin["events"].as_str()),
        (Some("3"), Some("3")),
        "{thin}"
    );
    assert_eq!(thin["warningVisible"], true, "{thin}");
    let solid = show_page(&browser, busy).await;
    assert_eq!(
        (solid["sessions"].as_str(), solid["events"].as_str()),
        (Some("80"), Some("80")),
        "{solid}"
    );
    assert_eq!(solid["warningVisible"], false, "{solid}");

    // The download links give the server's PNG and the counts behind the view.
    let exported = browser
        .execute_async(
            "const done = arguments[0];
             const csv = fetch(document.getElementById('ins-csv').href).then((r) => r.text());
             const png = fetch(document.getElementById('ins-png').href).then((r) => r.arrayBuffer());
             Promise.all([csv, png]).then(([text, bytes]) => {
               const sum = text.split('\\n').filter((line) => /^\\d+,\\d+,\\d+$/.test(line))
                 .reduce((total, line) => total + Number(line.split(',')[2]), 0);
               done({ sum, png: [...new Uint8Array(bytes.slice(0, 4))] });
             }, (err) => done({ error: String(err) }));",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(exported["sum"], 80, "{exported}");
    assert_eq!(
        exported["png"],
        json!([0x89, b'P', b'N', b'G']),
        "{exported}"
    );

    // Compare the two days: the difference is blue where A clicked and red where B did.
    browser
        .execute(
            "const local = (ms) => new Date(ms - new Date(ms).getTimezoneOffset() * 60000).toISOString().slice(0, 16);
             const set = (id, ms) => { document.getElementById(id).value = local(ms); };
             const day = arguments[0], dayMs = 86400000;
             set('ins-a-from', day); set('ins-a-to', day + dayMs);
             set('ins-b-from', day + dayMs); set('ins-b-to', day + 2 * dayMs);",
            vec![json!(day)],
        )
        .await
        .unwrap();
    click_id(&browser, "ins-compare").await;
    let colours = eventually("the difference map", || async {
        let answer = browser
            .execute(
                "const view = document.getElementById('ins-compare-view');
                 if (view.dataset.state !== 'shown') return null;
                 const a = document.getElementById('ins-map-a'), b = document.getElementById('ins-map-b');
                 if (!a.complete || !b.complete || a.naturalWidth === 0 || b.naturalWidth === 0) return null;
                 const canvas = document.getElementById('ins-diff');
                 const pixel = (x, y) => [...canvas.getContext('2d').getImageData(x, y, 1, 1).data].slice(0, 3);
                 // The most strongly coloured pixel of the spot's cell and its neighbours
                 // (the grid's cells and the store's may split a spot either way).
                 const at = (fx, fy, score) => {
                   const cx = Math.floor(fx * canvas.width), cy = Math.floor(fy * canvas.height);
                   let best = null;
                   for (let dy = -1; dy <= 1; dy += 1) for (let dx = -1; dx <= 1; dx += 1) {
                     const rgb = pixel(cx + dx, cy + dy);
                     if (!best || score(rgb) > score(best)) best = rgb;
                   }
                   return best;
                 };
                 const blue = (rgb) => rgb[2] - rgb[0], red = (rgb) => rgb[0] - rgb[2];
                 return { a: at(200 / 1400, 300 / 1800, blue), b: at(1100 / 1400, 1400 / 1800, red), same: pixel(32, 1),
                          message: document.getElementById('ins-compare-message').textContent };",
                vec![],
            )
            .await
            .ok()?;
        (!answer.is_null()).then_some(answer)
    })
    .await;
    let rgb = |key: &str| -> Vec<u64> {
        colours[key]
            .as_array()
            .unwrap()
            .iter()
            .map(|value| value.as_u64().unwrap())
            .collect()
    };
    let (spot_a, spot_b, same) = (rgb("a"), rgb("b"), rgb("same"));
    assert!(
        spot_a[2] > spot_a[0] + 100,
        "spot A is blue (less in B): {colours}"
    );
    assert!(
        spot_b[0] > spot_b[2] + 100,
        "spot B is red (more in B): {colours}"
    );
    assert_eq!(same, [255, 255, 255], "no change is white: {colours}");
    browser.close().await.unwrap();
}
