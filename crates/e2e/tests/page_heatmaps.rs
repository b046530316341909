//! The dashboard's page heatmaps in a real headless Chromium: every change of the view
//! draws its own map over the page at the page's size, a late answer to an earlier choice
//! never replaces a newer one, a screenshot lies under its heat, the scroll map veils the
//! page rather than hiding it, and moves recorded at one width land on their elements at
//! another.

mod common;

use common::browser::*;
use common::*;
use fantoccini::actions::{InputSource, MouseActions, PointerAction};
use fantoccini::{Client, Locator};
use serde_json::{json, Value};
use testkit::{eventually, http_get, TempDir};

const PAGE: &str = "/demo/pricing.html";

/// Desktop clicks on the Pro button, moves over the Basic button, and four sessions'
/// scroll depths (everyone past the top, one to the bottom).
fn seeded_events() -> Value {
    let sizes = json!({"vw": 1400, "vh": 900, "dw": 1400, "dh": 1800});
    let with = |extra: Value| {
        let mut metadata = sizes.clone();
        for (key, value) in extra.as_object().unwrap() {
            metadata[key] = value.clone();
        }
        metadata
    };
    let mut events = Vec::new();
    for idx in 0..5 {
        events.push(json!({"type": "click", "page": PAGE, "sessionId": format!("c{idx}"),
            "metadata": with(json!({"x": 900, "y": 330, "path": "button#buy-pro", "ox": 0.5, "oy": 0.5}))}));
    }
    for idx in 0..10 {
        events.push(json!({"type": "move", "page": PAGE, "sessionId": "m0", "seq": idx,
            "metadata": with(json!({"x": 400, "y": 330, "path": "button#buy-basic", "ox": 0.5, "oy": 0.5}))}));
    }
    for (idx, depth) in [1.0, 0.4, 0.4, 0.2].into_iter().enumerate() {
        events.push(
            json!({"type": "scroll", "page": PAGE, "sessionId": format!("s{idx}"),
            "metadata": with(json!({"depth": depth}))}),
        );
    }
    json!(events)
}

/// Everything a test asserts about the view, read from the page.
async fn view(browser: &Client) -> Value {
    browser
        .execute(
            "const $ = (id) => document.getElementById(id);
             const stage = $('hm-stage'), frame = $('hm-frame'), overlay = $('hm-overlay'), canvas = $('hm-canvas');
             const box = (el) => { const r = el.getBoundingClientRect(); return [r.left, r.top, r.width, r.height]; };
             let docHeight = null;
             try { docHeight = frame.contentDocument.documentElement.scrollHeight; } catch (_) { docHeight = null; }
             return {
               state: stage.dataset.state || null, shown: stage.dataset.shown || null,
               source: stage.dataset.source || null, ignored: Number(stage.dataset.ignored || 0),
               message: $('hm-message').textContent,
               stage: box(stage), frame: box(frame), shot: box($('hm-screenshot')),
               overlay: box(overlay), canvas: box(canvas),
               overlayVisible: !overlay.hidden, canvasVisible: !canvas.hidden,
               frameDisplay: getComputedStyle(frame).display, docHeight,
             };",
            vec![],
        )
        .await
        .unwrap()
}

/// Waits until the view shows `kind` (drawn, or found empty) and returns it.
async fn shown(browser: &Client, kind: &str) -> Value {
    eventually(&format!("the {kind} map"), || async {
        let state = view(browser).await;
        let settled = state["state"] == "shown" || state["state"] == "empty";
        (settled && state["shown"] == kind).then_some(state)
    })
    .await
}

/// The opacity of the browser-drawn map at the centre of `selector` in the framed page.
async fn heat_at(browser: &Client, selector: &str) -> u64 {
    let alpha = browser
        .execute(
            "const doc = document.getElementById('hm-frame').contentDocument;
             const box = doc.querySelector(arguments[0]).getBoundingClientRect();
             const canvas = document.getElementById('hm-canvas');
             const x = Math.round((box.left + box.width / 2) * canvas.width / doc.documentElement.scrollWidth);
             const y = Math.round((box.top + box.height / 2) * canvas.height / doc.documentElement.scrollHeight);
             return canvas.getContext('2d').getImageData(x, y, 1, 1).data[3];",
            vec![json!(selector)],
        )
        .await
        .unwrap();
    alpha.as_u64().unwrap()
}

/// Holds back the dashboard's requests whose URL contains `pattern` until [`release`].
async fn hold_requests(browser: &Client, pattern: &str) {
    browser
        .execute(
            "if (!window.heldRequests) {
               window.heldRequests = [];
               const realFetch = window.fetch.bind(window);
               window.fetch = (input, init) => {
                 const url = String(input);
                 if (window.holdPattern && url.includes(window.holdPattern)) {
                   return new Promise((resolve, reject) => window.heldRequests.push(() => realFetch(input, init).then(resolve, reject)));
                 }
                 return realFetch(input, init);
               };
             }
             window.holdPattern = arguments[0];",
            vec![json!(pattern)],
        )
        .await
        .unwrap();
}

/// The number of requests held now.
async fn n_held(browser: &Client) -> u64 {
    browser
        .execute("return window.heldRequests.length;", vec![])
        .await
        .unwrap()
        .as_u64()
        .unwrap()
}

/// Lets the held requests go (and no more are held).
async fn release(browser: &Client) {
    browser
        .execute(
            "window.holdPattern = null; for (const go of window.heldRequests.splice(0)) go();",
            vec![],
        )
        .await
        .unwrap();
}

/// Asserts that two boxes (`[left, top, width, height]`) are the same to a pixel.
fn assert_same_box(a: &Value, b: &Value, what: &str) {
    for idx in 0..4 {
        let (a_side, b_side) = (a[idx].as_f64().unwrap(), b[idx].as_f64().unwrap());
        assert!((a_side - b_side).abs() <= 1.0, "{what}: {a} against {b}");
    }
}

/// The heights of the page layer (the frame) and of the framed document.
fn heights(state: &Value) -> (f64, f64) {
    (
        state["frame"][3].as_f64().unwrap(),
        state["docHeight"].as_f64().unwrap(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_view_change_draws_its_own_map_over_the_page_at_its_size() {
    if !browser_available() {
        return;
    }
    let renderer = start_renderer().await;
    let relay = start_relay(&renderer.ws_url()).await;
    wait_linked(&relay).await;
    let addr = relay.addr.to_string();
    post_events(&addr, &seeded_events()).await;
    let driver = start_chromedriver().await;
    let profile = TempDir::new("chromium-page-heatmaps");
    let browser = open_browser(&driver, &profile).await;
    open_dashboard_listing(&browser, &addr, PAGE).await;

    // Clicks, each on its element, over a page as tall as its document.
    choose(&browser, "hm-page", PAGE).await;
    click_id(&browser, "hm-show").await;
    let clicks = shown(&browser, "click").await;
    assert_eq!(clicks["source"], "elements", "{clicks}");
    let (frame_height, doc_height) = heights(&clicks);
    assert!(frame_height > 300.0, "{clicks}");
    assert_eq!(frame_height, doc_height, "{clicks}");
    assert_same_box(
        &clicks["canvas"],
        &clicks["frame"],
        "the clicks cover the page",
    );
    assert!(heat_at(&browser, "#buy-pro").await > 200);
    assert_eq!(heat_at(&browser, "#buy-basic").await, 0);

    // Choosing moves is enough to show the moves, and only them.
    choose(&browser, "hm-kind", "move").await;
    let moves = shown(&browser, "move").await;
    assert_eq!(moves["source"], "elements", "{moves}");
    assert!(heat_at(&browser, "#buy-basic").await > 200);
    assert_eq!(heat_at(&browser, "#buy-pro").await, 0, "no click left over");

    // The scroll map's image held back: the view keeps the page's own size meanwhile and
    // shows nothing of the moves; when the image lands it covers the page exactly.
    hold_requests(&browser, "kind=scroll").await;
    choose(&browser, "hm-kind", "scroll").await;
    eventually("the scroll map to be asked for", || async {
        (n_held(&browser).await == 1).then_some(())
    })
    .await;
    let waiting = view(&browser).await;
    assert_eq!(waiting["state"], "loading", "{waiting}");
    assert_eq!(heights(&waiting), (frame_height, doc_height), "{waiting}");
    assert_eq!(waiting["canvasVisible"], false, "{waiting}");
    assert_eq!(waiting["overlayVisible"], false, "{waiting}");
    release(&browser).await;
    let scroll = shown(&browser, "scroll").await;
    assert_eq!(scroll["source"], "image", "{scroll}");
    assert_eq!(scroll["canvasVisible"], false, "{scroll}");
    assert_eq!(heights(&scroll), (frame_height, doc_height), "{scroll}");
    assert_same_box(
        &scroll["overlay"],
        &scroll["frame"],
        "the scroll map covers the page",
    );

    // The scroll map is a veil: clear where every session reached, darker where most did
    // not (one in four reached the bottom), the page visible through it everywhere.
    let alphas = browser
        .execute(
            "const img = document.getElementById('hm-overlay');
             const canvas = document.createElement('canvas');
             canvas.width = img.naturalWidth;
             canvas.height = img.naturalHeight;
             const context = canvas.getContext('2d');
             context.drawImage(img, 0, 0);
             const at = (fy) => context.getImageData(canvas.width >> 1, Math.floor(fy * (canvas.height - 1)), 1, 1).data[3];
             return [at(0.02), at(0.3), at(0.98)];",
            vec![],
        )
        .await
        .unwrap();
    let alpha = |idx: usize| alphas[idx].as_u64().unwrap();
    assert_eq!(alpha(0), 0, "everyone saw the top: {alphas}");
    assert!(alpha(1) > alpha(0) && alpha(2) > alpha(1), "{alphas}");
    assert!(
        (130..=200).contains(&alpha(2)),
        "three in four missed the bottom, and the page still shows: {alphas}"
    );

    // A width with no data says so and shows no map.
    choose(&browser, "hm-width", "mobile").await;
    let empty = eventually("the empty mobile view", || async {
        let state = view(&browser).await;
        (state["state"] == "empty").then_some(state)
    })
    .await;
    assert_eq!(empty["overlayVisible"], false, "{empty}");
    assert_eq!(empty["canvasVisible"], false, "{empty}");
    assert!(
        empty["message"]
            .as_str()
            .unwrap()
            .starts_with("No scroll events for /demo/pricing.html at mobile widths"),
        "{empty}"
    );
    browser.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_answer_never_replaces_a_newer_choice() {
    if !browser_available() {
        return;
    }
    let renderer = start_renderer().await;
    let relay = start_relay(&renderer.ws_url()).await;
    wait_linked(&relay).await;
    let addr = relay.addr.to_string();
    post_events(&addr, &seeded_events()).await;
    let driver = start_chromedriver().await;
    let profile = TempDir::new("chromium-late-answer");
    let browser = open_browser(&driver, &profile).await;
    open_dashboard_listing(&browser, &addr, PAGE).await;
    choose(&browser, "hm-page", PAGE).await;
    click_id(&browser, "hm-show").await;
    shown(&browser, "click").await;

    // The clicks are asked for again, first, and answered last.
    hold_requests(&browser, "kind=click").await;
    click_id(&browser, "hm-show").await;
    eventually("the clicks to be asked for", || async {
        (n_held(&browser).await == 1).then_some(())
    })
    .await;
    choose(&browser, "hm-kind", "move").await;
    let before = shown(&browser, "move").await["ignored"].as_u64().unwrap();
    release(&browser).await;
    let after = eventually("the late clicks to arrive", || async {
        let state = view(&browser).await;
        (state["ignored"].as_u64()? > before || state["shown"] != "move").then_some(state)
    })
    .await;
    assert_eq!(
        after["ignored"].as_u64(),
        Some(before + 1),
        "the late answer is dropped: {after}"
    );
    assert_eq!(after["shown"], "move", "{after}");
    assert!(
        after["message"].as_str().unwrap().contains("moves placed"),
        "{after}"
    );
    assert!(heat_at(&browser, "#buy-basic").await > 200);
    assert_eq!(
        heat_at(&browser, "#buy-pro").await,
        0,
        "the late clicks are not drawn"
    );
    browser.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_screenshot_lies_under_its_heat() {
    if !browser_available() {
        return;
    }
    let renderer = start_renderer().await;
    let relay = start_relay(&renderer.ws_url()).await;
    wait_linked(&relay).await;
    let addr = relay.addr.to_string();
    post_events(&addr, &seeded_events()).await;
    // Any picture of the page will do: the click map itself, drawn as a plain image.
    let picture = http_get(
        &addr,
        &format!("/api/heatmaps?page={PAGE}&kind=click&width=desktop&output=image"),
    )
    .await
    .unwrap();
    assert_eq!(picture.status, 200);
    let folder = TempDir::new("screenshot-upload");
    let screenshot = folder.path().join("pricing.png");
    std::fs::write(&screenshot, &picture.body).unwrap();

    let driver = start_chromedriver().await;
    let profile = TempDir::new("chromium-screenshot");
    let browser = open_browser(&driver, &profile).await;
    open_dashboard_listing(&browser, &addr, PAGE).await;
    choose(&browser, "hm-page", PAGE).await;
    browser
        .find(Locator::Id("hm-shot"))
        .await
        .unwrap()
        .send_keys(&screenshot.display().to_string())
        .await
        .unwrap();
    let state = eventually("the clicks over the screenshot", || async {
        let state = view(&browser).await;
        (state["state"] == "shown" && state["overlayVisible"] == true).then_some(state)
    })
    .await;
    assert_eq!(state["frameDisplay"], "none", "{state}");
    assert_eq!(state["frame"][3], 0.0, "the frame takes no room: {state}");
    assert!(state["shot"][3].as_f64().unwrap() > 100.0, "{state}");
    assert_same_box(
        &state["overlay"],
        &state["shot"],
        "the heat lies on the screenshot",
    );
    browser.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn moves_recorded_at_one_width_land_on_their_element_at_another() {
    if !browser_available() {
        return;
    }
    let renderer = start_renderer().await;
    let relay = start_relay(&renderer.ws_url()).await;
    wait_linked(&relay).await;
    let addr = relay.addr.to_string();
    let driver = start_chromedriver().await;
    let profile = TempDir::new("chromium-moves");
    let browser = open_browser(&driver, &profile).await;

    // A desktop visitor rests the pointer on the Pro button (the plans side by side).
    browser.set_window_size(1400, 900).await.unwrap();
    visit(&browser, &format!("http://{addr}{PAGE}")).await;
    let button = browser.find(Locator::Css("#buy-pro")).await.unwrap();
    let n_events = || async {
        let stats = browser
            .execute("return window.heatmapTracker.stats;", vec![])
            .await
            .ok()?;
        Some(stats["queued"].as_u64()? + stats["sent"].as_u64()? + stats["dropped"].as_u64()?)
    };
    // The page view and the first scroll depth (sent 300 ms after load) out of the way, so
    // that each new event below is the sampled move.
    eventually("the page's own events to be delivered", || async {
        let stats = browser
            .execute("return window.heatmapTracker.stats;", vec![])
            .await
            .ok()?;
        (stats["queued"] == 0 && stats["sent"].as_u64()? >= 2).then_some(())
    })
    .await;
    for (x, y) in [(-20.0, -4.0), (0.0, 0.0), (20.0, 4.0)] {
        let before = n_events().await.unwrap();
        let actions = MouseActions::new("pointer".into()).then(PointerAction::MoveToElement {
            element: button.clone(),
            duration: None,
            x,
            y,
        });
        browser.perform_actions(actions).await.unwrap();
        // The snippet samples the pointer every 100 ms: each position is taken before the next.
        eventually("the move to be sampled", || async {
            (n_events().await? > before).then_some(())
        })
        .await;
    }
    eventually("the moves to be stored", || async {
        let response = http_get(
            &addr,
            &format!("/api/heatmaps?page={PAGE}&kind=move&width=desktop&format=points"),
        )
        .await
        .ok()?;
        let listed: Value = serde_json::from_slice(&response.body).ok()?;
        (listed["points"].as_array()?.len() >= 3).then_some(())
    })
    .await;

    // The dashboard at a phone-like width: the plans stack, and the Pro button is now
    // below the Basic one at the left, far from where the desktop fraction would put it.
    browser.set_window_size(480, 900).await.unwrap();
    open_dashboard_listing(&browser, &addr, PAGE).await;
    choose(&browser, "hm-page", PAGE).await;
    choose(&browser, "hm-kind", "move").await;
    click_id(&browser, "hm-show").await;
    let moves = shown(&browser, "move").await;
    assert_eq!(moves["source"], "elements", "{moves}");
    let message = moves["message"].as_str().unwrap();
    assert!(
        message.contains("moves placed on their elements"),
        "{message}"
    );
    assert!(heat_at(&browser, "#buy-pro").await > 200, "{message}");
    assert_eq!(heat_at(&browser, "#buy-basic").await, 0, "{message}");
    browser.close().await.unwrap();
}
