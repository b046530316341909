//! The alerting rules stay true to the code: every `relay_*` and `renderer_*` metric that
//! an expression in `deploy/prometheus/alerts.yml` reads is one a real relay and renderer
//! export on `/metrics`. A renamed or removed metric would otherwise leave an alert that
//! can never fire, which nobody notices until the outage it was meant to catch.

mod common;

use std::collections::BTreeSet;

use common::*;

/// The rules file, relative to this crate.
const ALERTS: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../deploy/prometheus/alerts.yml"
);

/// The expressions of the rules file: the text after `expr:`, and for a block scalar
/// (`expr: |`) the more indented lines that follow it.
fn expressions(rules: &str) -> Vec<String> {
    let mut found = Vec::new();
    let mut lines = rules.lines().peekable();
    while let Some(line) = lines.next() {
        let Some((indent, rest)) = line.split_once("expr:") else {
            continue;
        };
        if !indent.trim().is_empty() && indent.trim() != "-" {
            continue;
        }
        let rest = rest.trim();
        if rest == "|" || rest == ">" {
            let mut block = String::new();
            while let Some(next) = lines.peek() {
                let depth = next.len() - next.trim_start().len();
                if next.trim().is_empty() || depth > indent.len() {
                    block.push_str(next);
                    block.push('\n');
                    lines.next();
                } else {
                    break;
                }
            }
            found.push(block);
        } else {
            found.push(rest.to_owned());
        }
    }
    found
}

/// Our metric names an expression reads: identifiers starting with `relay_` or
/// `renderer_` (label values are in quotes and skipped).
fn our_metrics(expression: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut in_quotes = false;
    let mut word = String::new();
    for ch in expression.chars().chain(std::iter::once(' ')) {
        if ch == '"' {
            in_quotes = !in_quotes;
            word.clear();
        } else if !in_quotes && (ch.is_ascii_alphanumeric() || ch == '_' || ch == ':') {
            word.push(ch);
        } else {
            if word.starts_with("relay_") || word.starts_with("renderer_") {
                names.insert(std::mem::take(&mut word));
            }
            word.clear();
        }
    }
    names
}

/// The sample names a `/metrics` page can carry: each `# TYPE` line's name with the
/// suffixes its type gets in the OpenMetrics text (`_total` for counters; `_bucket`,
/// `_sum`, `_count` for histograms), so the check holds before anything was counted.
fn exported(metrics: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for line in metrics.lines() {
        let Some(rest) = line.strip_prefix("# TYPE ") else {
            continue;
        };
        let mut parts = rest.split_whitespace();
        let (Some(name), Some(kind)) = (parts.next(), parts.next()) else {
            continue;
        };
        let suffixes: &[&str] = match kind {
            "counter" => &["_total"],
            "histogram" => &["_bucket", "_sum", "_count"],
            _ => &[""],
        };
        for suffix in suffixes {
            names.insert(format!("{name}{suffix}"));
        }
    }
    names
}

async fn metrics_of(addr: &str) -> String {
    let reply = testkit::http_get(addr, "/metrics")
        .await
        .unwrap_or_else(|err| panic!("cannot read /metrics of {addr}: {err:#}"));
    assert_eq!(reply.status, 200, "/metrics of {addr}");
    String::from_utf8(reply.body.to_vec()).expect("metrics are text")
}

#[test]
fn expressions_are_found_in_block_and_plain_form() {
    let rules = "groups:\n  - rules:\n      - alert: A\n        expr: relay_x{code=\"renderer_y\"} > 0\n        for: 1m\n      - alert: B\n        expr: |\n          sum(rate(renderer_z_total[5m]))\n            > 0.5 * relay_w\n        for: 2m\n";
    let expressions = expressions(rules);
    assert_eq!(expressions.len(), 2, "{expressions:?}");
    let names: BTreeSet<String> = expressions.iter().flat_map(|e| our_metrics(e)).collect();
    let want: BTreeSet<String> = ["relay_x", "renderer_z_total", "relay_w"]
        .into_iter()
        .map(String::from)
        .collect();
    assert_eq!(names, want);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_metric_the_alerts_read_is_exported() {
    let rules =
        std::fs::read_to_string(ALERTS).unwrap_or_else(|err| panic!("cannot read {ALERTS}: {err}"));
    let expressions = expressions(&rules);
    let wanted: BTreeSet<String> = expressions.iter().flat_map(|e| our_metrics(e)).collect();
    // The rules read both tiers; a parser that found nothing would pass vacuously.
    assert!(
        wanted.iter().any(|name| name.starts_with("relay_"))
            && wanted.iter().any(|name| name.starts_with("renderer_")),
        "no relay_ or renderer_ metrics found in {ALERTS}: {wanted:?}"
    );

    let renderer = start_renderer().await;
    let relay = start_relay(&renderer.ws_url()).await;
    wait_linked(&relay).await;
    // A labelled family shows on /metrics once it has a series: one event-API answer
    // (an empty batch is refused) gives `relay_api_responses` its first.
    let answer =
        testkit::http_request(&relay.addr.to_string(), "POST", "/api/events", &[], "").await;
    assert!(
        answer.status >= 400,
        "an empty body is refused: {}",
        answer.status
    );
    let mut available = exported(&metrics_of(&relay.addr.to_string()).await);
    available.extend(exported(
        &metrics_of(&renderer.running.addr.to_string()).await,
    ));

    let missing: Vec<&String> = wanted.difference(&available).collect();
    assert!(
        missing.is_empty(),
        "alerts.yml reads metrics no server exports: {missing:?}"
    );
    relay.stop().await;
    renderer.running.stop().await;
}
