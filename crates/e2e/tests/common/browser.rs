//! Headless Chromium over WebDriver (Debian's chromium and chromium-driver).

#![allow(dead_code)]

use std::process::{Child, Command, Stdio};

use fantoccini::{Client, ClientBuilder};
use hyper_util::client::legacy::connect::HttpConnector;
use serde_json::json;
use testkit::{eventually, TempDir};

/// Whether the browser tests should run: they need Chromium, and say so if it is missing,
/// unless `HEATMAP_SKIP_BROWSER=1` asks to skip them.
pub fn browser_available() -> bool {
    if std::env::var_os("HEATMAP_SKIP_BROWSER").is_some() {
        eprintln!("HEATMAP_SKIP_BROWSER is set: skipping a browser test");
        return false;
    }
    assert!(
        std::path::Path::new(CHROMEDRIVER).exists() && std::path::Path::new(CHROMIUM).exists(),
        "{CHROMIUM} and {CHROMEDRIVER} are needed: run scripts/test (it installs them) or apt-get install chromium chromium-driver"
    );
    true
}

pub const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
pub const CHROMIUM: &str = "/usr/bin/chromium";

/// A chromedriver process, killed on drop.
pub struct Chromedriver {
    child: Child,
    url: String,
}

impl Drop for Chromedriver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub async fn start_chromedriver() -> Chromedriver {
    // Ask the OS for a free port, then hand it to chromedriver.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|addr| addr.port())
        .unwrap();
    let child = Command::new(CHROMEDRIVER)
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|err| panic!("cannot start {CHROMEDRIVER}: {err}"));
    let url = format!("http://127.0.0.1:{port}");
    let driver = Chromedriver { child, url };
    let addr = format!("127.0.0.1:{port}");
    eventually("chromedriver to answer /status", || async {
        testkit::http_get(&addr, "/status")
            .await
            .ok()
            .filter(|response| response.status == 200)
            .map(|_| ())
    })
    .await;
    driver
}

pub async fn open_browser(driver: &Chromedriver, profile: &TempDir) -> Client {
    open_browser_with(driver, profile, json!({})).await
}

/// A headless Chromium session with extra Chrome preferences (`prefs`).
pub async fn open_browser_with(
    driver: &Chromedriver,
    profile: &TempDir,
    prefs: serde_json::Value,
) -> Client {
    open_browser_with_args(driver, profile, prefs, &[]).await
}

/// A headless Chromium session with extra preferences and command-line switches (`extra`,
/// e.g. `--ignore-certificate-errors` for a test certificate).
pub async fn open_browser_with_args(
    driver: &Chromedriver,
    profile: &TempDir,
    prefs: serde_json::Value,
    extra: &[&str],
) -> Client {
    let mut args = vec![
        "--headless=new".to_owned(),
        "--no-sandbox".to_owned(),
        "--disable-gpu".to_owned(),
        "--disable-dev-shm-usage".to_owned(),
        "--disable-quic".to_owned(),
        "--no-first-run".to_owned(),
        "--disable-background-networking".to_owned(),
        "--disable-component-update".to_owned(),
        "--disable-sync".to_owned(),
        "--window-size=1280,900".to_owned(),
        format!("--user-data-dir={}", profile.path().display()),
    ];
    args.extend(extra.iter().map(|arg| (*arg).to_owned()));
    let mut capabilities = serde_json::Map::new();
    capabilities.insert(
        "goog:chromeOptions".into(),
        json!({
            "binary": CHROMIUM,
            "prefs": prefs,
            "args": args,
        }),
    );
    ClientBuilder::new(HttpConnector::new())
        .capabilities(capabilities)
        .connect(&driver.url)
        .await
        .expect("start a headless chromium session")
}

/// Loads `url` and waits until the tracking snippet has started on it.
pub async fn visit(browser: &Client, url: &str) {
    browser.goto(url).await.unwrap();
    eventually("the snippet to load", || async {
        let loaded = browser
            .execute("return !!window.heatmapTracker;", vec![])
            .await
            .ok()?;
        (loaded == json!(true)).then_some(())
    })
    .await;
}

/// Chooses `value` in the `<select>` with id `id`.
pub async fn choose(browser: &Client, id: &str, value: &str) {
    browser
        .find(fantoccini::Locator::Id(id))
        .await
        .unwrap()
        .select_by_value(value)
        .await
        .unwrap();
}

/// Clicks the element with id `id`.
pub async fn click_id(browser: &Client, id: &str) {
    click_css(browser, &format!("#{id}")).await;
}

/// Clicks the first element `css` selects.
pub async fn click_css(browser: &Client, css: &str) {
    browser
        .find(fantoccini::Locator::Css(css))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
}

/// Opens the relay's dashboard and waits until `page` is offered in the heatmap's page
/// list (the store's pages have arrived).
pub async fn open_dashboard_listing(browser: &Client, addr: &str, page: &str) {
    browser
        .goto(&format!("http://{addr}/dashboard"))
        .await
        .unwrap();
    eventually("the page to be listed", || async {
        let listed = browser
            .execute(
                "return !!document.querySelector(`#hm-page option[value='${arguments[0]}']`);",
                vec![json!(page)],
            )
            .await
            .ok()?;
        (listed == json!(true)).then_some(())
    })
    .await;
}
