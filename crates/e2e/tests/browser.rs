//! The recorder page in a real headless Chromium, driven over WebDriver (chromedriver).
//!
//! Needs Debian's `chromium` and `chromium-driver`; `scripts/test` installs them. Without
//! them this test fails and says so, unless `HEATMAP_SKIP_BROWSER=1` is set explicitly.

mod common;

use std::time::Duration;

use common::browser::*;
use common::*;
use fantoccini::actions::{InputSource, MouseActions, PointerAction, MOUSE_BUTTON_LEFT};
use fantoccini::{Client, Locator};
use serde_json::json;
use testkit::{eventually, Image, TempDir};

async fn link_state(browser: &Client, link: &str) -> String {
    let selector = format!("[data-link=\"{link}\"]");
    let element = browser.find(Locator::Css(&selector)).await.unwrap();
    element
        .attr("data-state")
        .await
        .unwrap()
        .unwrap_or_default()
}

async fn wait_for_link(browser: &Client, link: &str, want: &str) {
    eventually(&format!("{link} to be {want}"), || async {
        (link_state(browser, link).await == want).then_some(())
    })
    .await;
}

async fn button(browser: &Client, text: &str) -> fantoccini::elements::Element {
    let xpath = format!("//button[contains(normalize-space(.), '{text}')]");
    browser.find(Locator::XPath(&xpath)).await.unwrap()
}

/// Saves a screenshot into `$HEATMAP_SCREENSHOT_DIR`, when set, for a person to look at.
async fn save_screenshot(browser: &Client, name: &str) {
    if let Some(dir) = std::env::var_os("HEATMAP_SCREENSHOT_DIR") {
        let png = browser.screenshot().await.unwrap();
        std::fs::write(std::path::Path::new(&dir).join(name), png).unwrap();
    }
}

async fn js_number(browser: &Client, script: &str) -> f64 {
    browser
        .execute(script, vec![])
        .await
        .unwrap()
        .as_f64()
        .unwrap_or(f64::NAN)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_person_records_and_generates_a_heatmap_in_chromium() {
    if !browser_available() {
        return;
    }
    let renderer = start_renderer().await;
    let renderer_url = renderer.ws_url();
    let relay = start_relay_reconnecting_fast(&renderer_url).await;
    let relay_addr = relay.addr;
    let driver = start_chromedriver().await;
    let profile = TempDir::new("chromium");
    let browser = open_browser(&driver, &profile).await;

    browser
        .goto(&format!("http://{relay_addr}/"))
        .await
        .unwrap();
    wait_for_link(&browser, "browser-relay", "connected").await;
    wait_for_link(&browser, "relay-renderer", "connected").await;
    // A marker that a reload would erase: the page must recover links without one.
    browser
        .execute("window.__noReload = 42;", vec![])
        .await
        .unwrap();

    let start = button(&browser, "Start Recording").await;
    let stop = button(&browser, "Stop Recording").await;
    let generate = button(&browser, "Generate Heatmap").await;
    start.click().await.unwrap();

    // Circle around a spot in the lower right quarter of the viewport, then click on it.
    let (spot_x, spot_y) = (960.0, 600.0);
    let mut mouse = MouseActions::new("mouse".into());
    for step in 0..60 {
        let angle = step as f64 * 0.35;
        let radius = 4.0 + (step % 10) as f64 * 3.0;
        mouse = mouse.then(PointerAction::MoveTo {
            duration: Some(Duration::from_millis(10)),
            x: spot_x + radius * angle.cos(),
            y: spot_y + radius * angle.sin(),
        });
    }
    mouse = mouse
        .then(PointerAction::MoveTo {
            duration: None,
            x: spot_x,
            y: spot_y,
        })
        .then(PointerAction::Down {
            button: MOUSE_BUTTON_LEFT,
        })
        .then(PointerAction::Up {
            button: MOUSE_BUTTON_LEFT,
        });
    browser.perform_actions(mouse).await.unwrap();
    // The live preview appears while recording.
    eventually("the live preview", || async {
        let shown = browser
            .execute(
                "const section = document.getElementById('preview-section');
                 return !section.hidden && /[1-9]/.test(document.getElementById('preview-meta').textContent);",
                vec![],
            )
            .await
            .ok()?;
        (shown == json!(true)).then_some(())
    })
    .await;
    save_screenshot(&browser, "while-recording.png").await;
    stop.click().await.unwrap();

    // Every recorded point reaches the renderer.
    let recorded = eventually("points to be stored", || async {
        let recorded = js_number(&browser, "return Number(document.getElementById('points-recorded').textContent.replace(/\\D/g, ''));").await;
        let stored = js_number(&browser, "return Number(document.getElementById('points-stored').textContent.replace(/\\D/g, ''));").await;
        (recorded >= 30.0 && stored == recorded).then_some(recorded)
    })
    .await;

    generate.click().await.unwrap();
    let name = eventually("the heatmap to be shown", || async {
        let loaded = browser
            .execute(
                "const img = document.getElementById('heatmap-image');
                 return img.complete && img.naturalWidth > 0 ? [img.naturalWidth, img.naturalHeight] : null;",
                vec![],
            )
            .await
            .ok()?;
        if loaded != json!([1920, 1080]) {
            return None;
        }
        let name = browser.find(Locator::Id("heatmap-name")).await.ok()?.text().await.ok()?;
        (!name.is_empty()).then_some(name)
    })
    .await;
    assert!(protocol::names::is_heatmap_name(&name), "{name}");
    if let Some(dir) = std::env::var_os("HEATMAP_SCREENSHOT_DIR") {
        std::fs::copy(
            renderer.out_dir.path().join(&name),
            std::path::Path::new(&dir).join(&name),
        )
        .unwrap();
    }

    // The file the page shows is in the renderer's folder, hot where the pointer was.
    let image =
        Image::decode(&std::fs::read(renderer.out_dir.path().join(&name)).unwrap()).unwrap();
    let viewport = browser
        .execute("return [window.innerWidth, window.innerHeight];", vec![])
        .await
        .unwrap();
    let (width, height) = (viewport[0].as_f64().unwrap(), viewport[1].as_f64().unwrap());
    let hot_x = (spot_x / width * 1920.0) as u32;
    let hot_y = (spot_y / height * 1080.0) as u32;
    assert!(
        image.heat(hot_x, hot_y) > 150,
        "hot at the spot: {:?}",
        image.rgb(hot_x, hot_y)
    );
    assert_eq!(image.heat(60, 60), 0, "no heat far from the pointer");
    save_screenshot(&browser, "after-generate.png").await;
    let meta = browser
        .find(Locator::Id("heatmap-meta"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        meta.contains(&format!("{} points", recorded as u64)),
        "{meta}"
    );

    // The settings panel chooses the look: a transparent overlay this time.
    browser
        .find(Locator::Css("#settings summary"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    browser
        .find(Locator::Css("select[name=output]"))
        .await
        .unwrap()
        .select_by_value("overlay")
        .await
        .unwrap();
    generate.click().await.unwrap();
    let overlay = eventually("the overlay to be shown", || async {
        let output = browser
            .execute(
                "const img = document.getElementById('heatmap-image');
                 return img.complete && img.dataset.output === 'overlay' ? document.getElementById('heatmap-name').textContent : null;",
                vec![],
            )
            .await
            .ok()?;
        output.as_str().filter(|found| *found != name).map(str::to_owned)
    })
    .await;
    let image =
        Image::decode(&std::fs::read(renderer.out_dir.path().join(&overlay)).unwrap()).unwrap();
    assert_eq!(image.channels, 4, "the overlay has transparency");

    // The renderer goes away: the light turns red, the relay keeps serving; it comes back by itself.
    let stopped = renderer.stop().await;
    wait_for_link(&browser, "relay-renderer", "disconnected").await;
    assert_eq!(link_state(&browser, "browser-relay").await, "connected");
    let _renderer = stopped.restart().await;
    wait_for_link(&browser, "relay-renderer", "connected").await;

    // The relay goes away: the page notices, and reconnects when it is back.
    relay.stop().await;
    wait_for_link(&browser, "browser-relay", "disconnected").await;
    let _relay = restart_relay(relay_addr, &renderer_url).await;
    wait_for_link(&browser, "browser-relay", "connected").await;
    wait_for_link(&browser, "relay-renderer", "connected").await;
    assert_eq!(
        js_number(&browser, "return window.__noReload;").await,
        42.0,
        "the page was not reloaded"
    );

    browser.close().await.unwrap();
}
