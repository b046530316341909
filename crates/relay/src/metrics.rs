//! The relay's metrics, served at `/metrics` (OpenMetrics text) and summarised in `/healthz`.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use protocol::LinkState;

use netkit::ErrorCounters;

/// The label of the link-state series.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StateLabel {
    /// `connected`, `connecting` or `disconnected`.
    pub state: &'static str,
}

/// The label of the event-API refusal series.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    /// `invalid`, `too_large`, `rate_limited`, `origin`, or the renderer link's error code
    /// (`renderer_unavailable`, `busy`, `storage_failed`, …).
    pub reason: &'static str,
}

/// The label of the dashboard-action series.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ActionLabel {
    /// One of `protocol::dashboard::DASHBOARD_ACTIONS`, or `other`.
    pub action: &'static str,
}

/// The label of the API-response series.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StatusLabel {
    /// The HTTP status code.
    pub status: u16,
}

/// Every number the relay exports. Cheap to update (atomics); registered once.
#[derive(Debug)]
pub struct RelayMetrics {
    /// Page WebSockets open now.
    pub sessions_open: Gauge,
    /// Page WebSockets accepted since start.
    pub sessions_total: Counter,
    /// Text frames received from pages.
    pub frames_in: Counter,
    /// Bytes of text frames received from pages.
    pub bytes_in: Counter,
    /// Points in valid batches received from pages.
    pub points_in: Counter,
    /// Page messages written to the renderer.
    pub forwarded: Counter,
    /// Replies routed to pages.
    pub replies: Counter,
    /// Replies dropped because a page's queue was full.
    pub replies_dropped: Counter,
    /// Messages waiting for the renderer to come back.
    pub backlog_depth: Gauge,
    /// Bytes waiting for the renderer to come back.
    pub backlog_bytes: Gauge,
    /// The backlog's bound (`--buffer-bytes`), so an alert can compare the two.
    pub backlog_limit_bytes: Gauge,
    /// 1 for the renderer link's current state, 0 for the others.
    pub link_state: Family<StateLabel, Gauge>,
    /// Time from forwarding a batch to routing its acknowledgement back.
    pub ack_latency: Histogram,
    /// Event-API calls refused for their origin.
    pub cors_refused: Counter,
    /// Requests refused for a `Host` outside the public origins (421).
    pub host_refused: Counter,
    /// Page WebSockets refused for their `Origin` (403).
    pub origin_refused: Counter,
    /// Refused page messages by code.
    pub errors: ErrorCounters,
    /// Tracked events the renderer's store committed (their `202` went out).
    pub events_accepted: Counter,
    /// Tracked events refused, by reason.
    pub events_refused: Family<ReasonLabel, Counter>,
    /// `/api/` answers by HTTP status.
    pub api_responses: Family<StatusLabel, Counter>,
    /// Dashboards' `track_dashboard_action` reports, by action (a fixed label set).
    pub dashboard_actions: Family<ActionLabel, Counter>,
    /// Traffic-spike alerts sent to the dashboards (one per spike).
    pub alerts: Counter,
    /// Live messages from or to other relays dropped (cluster mode), by reason:
    /// `too_large`, `bad_json`, `bad_field`, `too_many_relays`, `unsent`.
    pub live_dropped: Family<ReasonLabel, Counter>,
    /// Other relays whose pages this relay shows now (cluster mode).
    pub live_relays: Gauge,
    /// All of the above, for `/metrics`.
    pub registry: Registry,
}

impl Default for RelayMetrics {
    fn default() -> Self {
        let mut metrics = RelayMetrics {
            sessions_open: Gauge::default(),
            sessions_total: Counter::default(),
            frames_in: Counter::default(),
            bytes_in: Counter::default(),
            points_in: Counter::default(),
            forwarded: Counter::default(),
            replies: Counter::default(),
            replies_dropped: Counter::default(),
            backlog_depth: Gauge::default(),
            backlog_bytes: Gauge::default(),
            backlog_limit_bytes: Gauge::default(),
            link_state: Family::default(),
            ack_latency: Histogram::new(netkit::metrics::latency_buckets()),
            cors_refused: Counter::default(),
            host_refused: Counter::default(),
            origin_refused: Counter::default(),
            errors: ErrorCounters::default(),
            events_accepted: Counter::default(),
            events_refused: Family::default(),
            api_responses: Family::default(),
            dashboard_actions: Family::default(),
            alerts: Counter::default(),
            live_dropped: Family::default(),
            live_relays: Gauge::default(),
            registry: Registry::default(),
        };
        let registry = &mut metrics.registry;
        registry.register(
            "relay_sessions_open",
            "Page WebSockets open now",
            metrics.sessions_open.clone(),
        );
        registry.register(
            "relay_sessions",
            "Page WebSockets accepted",
            metrics.sessions_total.clone(),
        );
        registry.register(
            "relay_frames_in",
            "Text frames received from pages",
            metrics.frames_in.clone(),
        );
        registry.register(
            "relay_bytes_in",
            "Bytes of text frames received from pages",
            metrics.bytes_in.clone(),
        );
        registry.register(
            "relay_points_in",
            "Points in valid batches received from pages",
            metrics.points_in.clone(),
        );
        registry.register(
            "relay_forwarded",
            "Page messages written to the renderer",
            metrics.forwarded.clone(),
        );
        registry.register(
            "relay_replies",
            "Replies routed back to pages",
            metrics.replies.clone(),
        );
        registry.register(
            "relay_replies_dropped",
            "Replies dropped because a page's queue (--session-queue) was full",
            metrics.replies_dropped.clone(),
        );
        registry.register(
            "relay_backlog_depth",
            "Page messages held while the renderer is away",
            metrics.backlog_depth.clone(),
        );
        registry.register(
            "relay_backlog_bytes",
            "Bytes held while the renderer is away (limit --buffer-bytes)",
            metrics.backlog_bytes.clone(),
        );
        registry.register(
            "relay_backlog_limit_bytes",
            "Bytes the backlog may hold for the renderer (--buffer-bytes); past it pages are answered busy",
            metrics.backlog_limit_bytes.clone(),
        );
        registry.register(
            "relay_renderer_link",
            "1 for the renderer link's current state",
            metrics.link_state.clone(),
        );
        registry.register(
            "relay_ack_latency_seconds",
            "Time from forwarding a batch to the renderer to routing its acknowledgement to the page",
            metrics.ack_latency.clone(),
        );
        registry.register(
            "relay_cors_refused",
            "Event-API calls refused because their site is not listed with --site",
            metrics.cors_refused.clone(),
        );
        registry.register(
            "relay_host_refused",
            "Requests refused with 421 because their Host is not one of the relay's public origins",
            metrics.host_refused.clone(),
        );
        registry.register(
            "relay_origin_refused",
            "Page WebSockets refused with 403 because of their Origin",
            metrics.origin_refused.clone(),
        );
        registry.register(
            "relay_events_accepted",
            "Tracked events the renderer's store committed before the relay answered 202",
            metrics.events_accepted.clone(),
        );
        registry.register(
            "relay_event_requests_refused",
            "Event-API requests refused, by reason (none of their events was stored)",
            metrics.events_refused.clone(),
        );
        registry.register(
            "relay_api_responses",
            "Answers to /api/ requests by HTTP status",
            metrics.api_responses.clone(),
        );
        registry.register(
            "relay_dashboard_actions",
            "Dashboard actions reported with track_dashboard_action, by action (unlisted ones as other)",
            metrics.dashboard_actions.clone(),
        );
        registry.register(
            "relay_alerts",
            "Traffic-spike alerts sent to the dashboards (one per spike, --spike-factor)",
            metrics.alerts.clone(),
        );
        registry.register(
            "relay_live_dropped",
            "Live messages between relays dropped (cluster mode), by reason",
            metrics.live_dropped.clone(),
        );
        registry.register(
            "relay_live_relays",
            "Other relays whose pages this relay shows now (cluster mode)",
            metrics.live_relays.clone(),
        );
        metrics.errors.register(registry, "relay");
        metrics.set_link_state(LinkState::Connecting);
        metrics
    }
}

impl RelayMetrics {
    /// Counts one refused event-API request under `reason`.
    pub fn events_refused(&self, reason: &'static str) {
        self.events_refused
            .get_or_create(&ReasonLabel { reason })
            .inc();
    }

    /// Counts one live message dropped under `reason`.
    #[cfg_attr(not(feature = "cluster"), allow(dead_code))]
    pub fn live_dropped(&self, reason: &'static str) {
        self.live_dropped
            .get_or_create(&ReasonLabel { reason })
            .inc();
    }

    /// Counts one dashboard action under its label.
    pub fn dashboard_action(&self, action: &'static str) {
        self.dashboard_actions
            .get_or_create(&ActionLabel { action })
            .inc();
    }

    /// Counts one `/api/` answer.
    pub fn api_response(&self, status: hyper::StatusCode) {
        self.api_responses
            .get_or_create(&StatusLabel {
                status: status.as_u16(),
            })
            .inc();
    }

    /// Marks `state` as the link's current state.
    pub fn set_link_state(&self, state: LinkState) {
        for candidate in [
            LinkState::Connected,
            LinkState::Connecting,
            LinkState::Disconnected,
        ] {
            let value = i64::from(candidate == state);
            self.link_state
                .get_or_create(&StateLabel {
                    state: candidate.as_str(),
                })
                .set(value);
        }
    }
}
