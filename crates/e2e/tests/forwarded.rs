//! The real client address behind a reverse proxy: `--trusted-proxy` makes the relay read
//! `X-Forwarded-For` / `Forwarded` from the proxy, and only from it.
//!
//! The test plays the proxy itself, over loopback (127.0.0.1 is trusted or not, per test);
//! `nginx.rs` puts a real nginx in front.

mod common;

use common::{start_relay_with, start_renderer};
use testkit::http_request;

const SUMMARY: &str = "/api/analytics/summary";

/// A relay behind the renderer `url` with a tight event-API budget: 2 requests at once, then
/// one a second, per client address.
async fn relay_with_budget(url: &str, trusted: &[&str]) -> common::Running {
    let trusted: Vec<netkit::IpNet> = trusted.iter().map(|net| net.parse().unwrap()).collect();
    start_relay_with(url, |config| {
        config.max_api_requests_per_sec = 1;
        config.api_burst = 2;
        config.trusted_proxies = trusted;
        config.public_urls = vec!["https://analytics.example".into()];
    })
    .await
}

/// The status of an API call that claims to come from `claimed` (`X-Forwarded-For`).
async fn api_as(addr: &str, claimed: &str) -> u16 {
    http_request(addr, "GET", SUMMARY, &[("x-forwarded-for", claimed)], "")
        .await
        .status
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spoofed_x_forwarded_for_from_an_untrusted_peer_is_ignored() {
    let renderer = start_renderer().await;
    // Only 10.0.0.0/8 is a proxy: this test's loopback peer is a stranger.
    let relay = relay_with_budget(&renderer.ws_url(), &["10.0.0.0/8"]).await;
    let addr = relay.addr.to_string();
    let statuses = [
        api_as(&addr, "203.0.113.1").await,
        api_as(&addr, "203.0.113.2").await,
        api_as(&addr, "203.0.113.3").await,
    ];
    assert_eq!(
        statuses,
        [200, 200, 429],
        "a new X-Forwarded-For per request buys no new budget"
    );
    // Nor do the forwarded scheme and host open the relay to another name.
    let misdirected = http_request(
        &addr,
        "GET",
        "/",
        &[
            ("x-forwarded-host", "analytics.example"),
            ("x-forwarded-proto", "https"),
        ],
        "",
    )
    .await;
    assert_eq!(misdirected.status, 200, "the real Host is the one checked");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trusted_proxy_gives_each_visitor_its_own_api_budget() {
    let renderer = start_renderer().await;
    let relay = relay_with_budget(&renderer.ws_url(), &["127.0.0.1"]).await;
    let addr = relay.addr.to_string();
    for _ in 0..2 {
        assert_eq!(api_as(&addr, "203.0.113.1").await, 200);
    }
    assert_eq!(
        api_as(&addr, "203.0.113.1").await,
        429,
        "one visitor spent its budget"
    );
    assert_eq!(
        api_as(&addr, "203.0.113.2").await,
        200,
        "another visitor behind the same proxy has its own"
    );
    // The visitor wrote the left entry itself; the proxy appended the address it saw.
    assert_eq!(
        api_as(&addr, "203.0.113.2, 203.0.113.1").await,
        429,
        "the rightmost untrusted address counts, not one the visitor made up"
    );
    // Without a forwarded address the proxy is its own client, with its own budget.
    assert_eq!(api_as(&addr, "garbage").await, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_forwarded_scheme_and_host_meet_the_own_origin_check() {
    let relay = relay_with_budget("ws://127.0.0.1:9", &["127.0.0.1"]).await;
    let addr = relay.addr.to_string();
    let page = |host: &'static str, proto: &'static str| {
        let addr = addr.clone();
        async move {
            http_request(
                &addr,
                "GET",
                "/",
                &[("x-forwarded-host", host), ("x-forwarded-proto", proto)],
                "",
            )
            .await
            .status
        }
    };
    assert_eq!(page("analytics.example", "https").await, 200);
    assert_eq!(page("analytics.example:443", "https").await, 200);
    assert_eq!(
        page("analytics.example", "http").await,
        421,
        "the public URL is https only"
    );
    assert_eq!(page("evil.example", "https").await, 421);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_per_address_connection_cap_counts_visitors_not_the_proxy() {
    let trusted: Vec<netkit::IpNet> = vec!["127.0.0.1".parse().unwrap()];
    let relay = start_relay_with("ws://127.0.0.1:9", |config| {
        config.max_connections_per_ip = 2;
        config.trusted_proxies = trusted;
    })
    .await;
    let url = format!("ws://{}/ws", relay.addr);
    let mut pages = Vec::new();
    for visitor in 1..=4 {
        let claimed = format!("198.51.100.{visitor}");
        let page = testkit::WsClient::connect_with(&url, &[("x-forwarded-for", &claimed)])
            .await
            .unwrap_or_else(|err| panic!("visitor {visitor} is let in: {err:#}"));
        pages.push(page);
    }
    let second = testkit::WsClient::connect_with(&url, &[("x-forwarded-for", "198.51.100.1")])
        .await
        .expect("a visitor's second page is within --max-connections-per-ip 2");
    pages.push(second);
    let refused = testkit::WsClient::connect_with(&url, &[("x-forwarded-for", "198.51.100.1")])
        .await
        .err()
        .expect("a visitor's third page is over --max-connections-per-ip 2");
    assert!(format!("{refused:#}").contains("503"), "{refused:#}");
}
