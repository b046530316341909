//! The demo site over `https://` through nginx in a real headless Chromium: the snippet,
//! loaded from an https page, reports its clicks through the proxy, and they land in the
//! page's heatmap. Chromium is told to accept the test's certificate.

mod common;

use common::browser::*;
use common::nginx::{free_port, Nginx};
use common::*;
use fantoccini::Locator;
use serde_json::json;
use testkit::tls::TestPki;
use testkit::{eventually, http_get, Image, TempDir};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_site_over_https_through_nginx_records_clicks_into_its_heatmap() {
    if !browser_available() {
        return;
    }
    let pki = TestPki::new("browser");
    let renderer = start_renderer().await;
    let port = free_port();
    let relay = start_relay_with(&renderer.ws_url(), |config| {
        config.trusted_proxies = vec!["127.0.0.1".parse().unwrap()];
        config.public_urls = vec![format!("https://localhost:{port}")];
    })
    .await;
    let nginx = Nginx::start(port, relay.addr, &pki).await;
    let driver = start_chromedriver().await;
    let profile = TempDir::new("chromium-https");
    let browser = open_browser_with_args(
        &driver,
        &profile,
        json!({}),
        &["--ignore-certificate-errors"],
    )
    .await;

    browser.set_window_size(1400, 900).await.unwrap();
    let pricing = format!("https://localhost:{port}/demo/pricing.html");
    visit(&browser, &pricing).await;
    let scheme = browser
        .execute("return location.protocol;", vec![])
        .await
        .unwrap();
    assert_eq!(scheme, json!("https:"));
    browser
        .find(Locator::Css("#buy-pro"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let place = browser
        .execute(
            "const box = document.querySelector('#buy-pro').getBoundingClientRect();
             const doc = document.documentElement;
             return [box.left + scrollX + box.width / 2, box.top + scrollY + box.height / 2,
                     Math.max(doc.scrollWidth, innerWidth), Math.max(doc.scrollHeight, innerHeight)];",
            vec![],
        )
        .await
        .unwrap();
    let number = |idx: usize| place[idx].as_f64().unwrap();

    // The click went through nginx to the relay and on to the renderer's store.
    let addr = relay.addr.to_string();
    let path = "/api/heatmaps?page=/demo/pricing.html&kind=click&width=desktop";
    let png = eventually("the desktop click heatmap", || async {
        let response = http_get(&addr, path).await.ok()?;
        (response.status == 200).then_some(response.body)
    })
    .await;
    let image = Image::decode(&png).unwrap();
    let px = (number(0) / number(2) * f64::from(image.width)) as u32;
    let py = (number(1) / number(3) * f64::from(image.height)) as u32;
    assert!(
        image.heat(px, py) > 150,
        "hot on the button at ({px}, {py}): {:?}\nnginx:\n{}",
        image.rgb(px, py),
        nginx.error_log()
    );
    browser.close().await.unwrap();
}
