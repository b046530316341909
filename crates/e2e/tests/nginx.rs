//! A real reverse proxy: Debian's nginx, configured from `deploy/nginx/heatmaps.conf`,
//! terminating TLS in front of the relay, which trusts it (`--trusted-proxy 127.0.0.1`).
//!
//! Visitors are told apart by their source address: the test connects from several
//! addresses of 127.0.0.0/8 (all local on Linux), none of them nginx's own 127.0.0.1.

mod common;

use std::net::{IpAddr, Ipv4Addr};

use common::nginx::{free_port, Nginx};
use common::*;
use serde_json::json;
use testkit::tls::{connect_from, handshake, TestPki};
use testkit::{http_request_on, RawResponse, WsClient};
use tokio::task::JoinSet;

/// The `n`th visitor's address.
fn visitor(n: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 0, 1, n))
}

/// A renderer, a relay that trusts the proxy and knows its public URL, and nginx in front.
struct Site {
    _renderer: Renderer,
    relay: Running,
    nginx: Nginx,
    pki: TestPki,
}

impl Site {
    async fn start(adjust: impl FnOnce(&mut relay::Config)) -> Site {
        let pki = TestPki::new("nginx");
        let renderer = start_renderer().await;
        let port = free_port();
        let relay = start_relay_with(&renderer.ws_url(), |config| {
            config.trusted_proxies = vec!["127.0.0.1".parse().unwrap()];
            config.public_urls = vec![format!("https://localhost:{port}")];
            adjust(config);
        })
        .await;
        let nginx = Nginx::start(port, relay.addr, &pki).await;
        Site {
            _renderer: renderer,
            relay,
            nginx,
            pki,
        }
    }

    /// The public address, as browsers name it.
    fn public_host(&self) -> String {
        format!("localhost:{}", self.nginx.port)
    }

    /// A page's WebSocket through nginx from `source`, after hello/welcome.
    async fn page_from(&self, source: IpAddr) -> anyhow::Result<WsClient> {
        let stream = connect_from(Some(source), &format!("127.0.0.1:{}", self.nginx.port)).await?;
        let stream = handshake(stream, "localhost", self.pki.client_config()).await?;
        let url = format!("wss://{}/ws", self.public_host());
        let mut page = WsClient::connect_on(Box::new(stream), &url, &[]).await?;
        page.send_json(json!({"type": "hello", "v": 1})).await;
        page.wait_for("welcome", |msg| msg["type"] == "welcome")
            .await;
        Ok(page)
    }

    /// `GET path` through nginx from `source`, with extra headers.
    async fn get_from(&self, source: IpAddr, path: &str, headers: &[(&str, &str)]) -> RawResponse {
        let stream = connect_from(Some(source), &format!("127.0.0.1:{}", self.nginx.port))
            .await
            .unwrap();
        let stream = handshake(stream, "localhost", self.pki.client_config())
            .await
            .unwrap();
        http_request_on(stream, &self.public_host(), "GET", path, headers, "").await
    }

    /// `GET path` straight to the relay (not through nginx) from `source`.
    async fn get_direct_from(
        &self,
        source: IpAddr,
        path: &str,
        headers: &[(&str, &str)],
    ) -> RawResponse {
        let addr = self.relay.addr.to_string();
        let stream = connect_from(Some(source), &addr).await.unwrap();
        http_request_on(stream, &addr, "GET", path, headers, "").await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_pages_through_nginx_are_all_accepted() {
    // Default limits: 64 connections per address. Behind the proxy every page arrives from
    // 127.0.0.1, so without the forwarded address the 65th would get 503.
    let site = std::sync::Arc::new(Site::start(|_| {}).await);
    let mut connecting = JoinSet::new();
    for idx in 0..200u16 {
        let site = site.clone();
        // Four visitors with 50 pages each.
        let source = visitor(1 + (idx % 4) as u8);
        connecting.spawn(async move { (idx, site.page_from(source).await) });
    }
    let mut pages = Vec::new();
    let mut refused = Vec::new();
    while let Some(joined) = connecting.join_next().await {
        match joined.expect("a page task") {
            (_, Ok(page)) => pages.push(page),
            (idx, Err(err)) => refused.push(format!("page {idx}: {err:#}")),
        }
    }
    assert!(
        refused.is_empty(),
        "{} of 200 refused, first: {:?}\nnginx:\n{}",
        refused.len(),
        refused.first(),
        site.nginx.error_log()
    );
    let relay_addr = site.relay.addr.to_string();
    let open = testkit::eventually("the relay to count 200 open pages", || async {
        let health = testkit::http_get(&relay_addr, "/healthz").await.ok()?;
        let health: serde_json::Value = serde_json::from_slice(&health.body).ok()?;
        (health["sessions_open"] == 200).then_some(health["sessions_open"].clone())
    })
    .await;
    assert_eq!(open, 200);
    // Every page is live through the proxy: each answers a hello again.
    for page in pages.iter_mut().take(5) {
        page.send_json(json!({"type": "hello", "v": 1})).await;
        page.wait_for("welcome", |msg| msg["type"] == "welcome")
            .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_event_api_budget_is_per_visitor_behind_nginx() {
    let site = Site::start(|config| {
        config.max_api_requests_per_sec = 1;
        config.api_burst = 2;
    })
    .await;
    let summary = "/api/analytics/summary";
    let first = visitor(1);
    for _ in 0..2 {
        let response = site.get_from(first, summary, &[]).await;
        assert_eq!(
            response.status,
            200,
            "{}\n{}",
            response.body,
            site.nginx.error_log()
        );
    }
    assert_eq!(
        site.get_from(first, summary, &[]).await.status,
        429,
        "the first visitor spent its budget"
    );
    // Another visitor has its own, even when it claims to be the first: nginx appends the
    // address it saw, and the relay takes the rightmost one that is not a proxy.
    let second = visitor(2);
    let spoofing = [("x-forwarded-for", "127.0.1.1")];
    assert_eq!(site.get_from(second, summary, &spoofing).await.status, 200);
    assert_eq!(site.get_from(second, summary, &[]).await.status, 200);
    assert_eq!(site.get_from(second, summary, &[]).await.status, 429);

    // Straight to the relay, a stranger's X-Forwarded-For is ignored: it is its own client.
    let stranger = visitor(3);
    for claimed in ["203.0.113.1", "203.0.113.2"] {
        let response = site
            .get_direct_from(stranger, summary, &[("x-forwarded-for", claimed)])
            .await;
        assert_eq!(response.status, 200, "{}", response.body);
    }
    let response = site
        .get_direct_from(stranger, summary, &[("x-forwarded-for", "203.0.113.3")])
        .await;
    assert_eq!(response.status, 429, "a new claimed address buys nothing");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_forwarded_name_and_scheme_pass_the_own_origin_check() {
    let site = Site::start(|_| {}).await;
    let page = site.get_from(visitor(1), "/", &[]).await;
    assert_eq!(page.status, 200, "{}", page.body);
    // A browser on https://localhost:<port> opens /ws with that Origin: the relay sees it
    // through nginx as one of its own.
    let stream = connect_from(Some(visitor(1)), &format!("127.0.0.1:{}", site.nginx.port))
        .await
        .unwrap();
    let stream = handshake(stream, "localhost", site.pki.client_config())
        .await
        .unwrap();
    let origin = format!("https://{}", site.public_host());
    let url = format!("wss://{}/ws", site.public_host());
    WsClient::connect_on(Box::new(stream), &url, &[("origin", &origin)])
        .await
        .expect("the page's own https origin is accepted");
    // A name the relay does not answer to is refused through nginx as well.
    let misdirected = {
        let stream = connect_from(Some(visitor(1)), &format!("127.0.0.1:{}", site.nginx.port))
            .await
            .unwrap();
        let stream = handshake(stream, "localhost", site.pki.client_config())
            .await
            .unwrap();
        http_request_on(stream, "evil.example", "GET", "/", &[], "").await
    };
    assert_eq!(misdirected.status, 421, "{}", misdirected.body);
}
