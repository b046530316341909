//! Every renderer's live view over every event (`--bus`, cluster builds only).
//!
//! On the bus the renderers share the events: JetStream gives each batch to one of them,
//! so each renderer's live view (active users, the last minute, the per-second and
//! 10-second charts, sessions and journeys) would see only its share, and a dashboard
//! would show half the traffic with two renderers. So after each commit a renderer
//! publishes the committed events' live facts (kind, page, session, number, country, the
//! time it stored them at; no positions) on the NATS core subject
//! `<stream>.live.renderer.events`, and folds what the other renderers publish into its
//! own live view, never into the store (which has them already, and is shared).
//!
//! Why this design rather than reading the live numbers from the shared store: the live
//! view is in memory so that a dashboard's push costs no query; the facts of a commit
//! are small, already decoded, and one publish per commit reaches every renderer. Live
//! state is soft: a message lost (NATS away, a full queue) costs that many events in the
//! other renderers' live numbers for their live window, never in the store or history.
//!
//! The payload is a JSON array of events in the event API's shape, decoded with the
//! API's own checks ([`protocol::analytics::decode_events`]); the sender's random id
//! travels in the `Heatmap-Live-Origin` header, so a renderer ignores its own echoes.
//! Numbered events already in a live view are folded once there, so a batch redelivered
//! to a second renderer after a crash counts once.

use std::hash::{BuildHasher, Hasher};
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt as _;
use netkit::Shutdown;
use protocol::analytics::{decode_events, TrackedEvent, MAX_EVENTS_PER_POST};
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

use crate::config::Config;
use crate::context::Context;

/// The header naming the renderer that sent a live message.
const ORIGIN_HEADER: &str = "Heatmap-Live-Origin";

/// Live messages waiting to be folded in; past it the NATS client drops them (a slow
/// consumer), counted by NATS, soft by design.
const SUBSCRIPTION_CAPACITY: usize = 256;

/// Longest the start waits for NATS to confirm the live subscription.
const CONFIRM_TIMEOUT: Duration = Duration::from_secs(2);

/// Longest a publish may wait for room in the client's outgoing queue before the
/// message is dropped and counted.
const PUBLISH_TIMEOUT: Duration = Duration::from_millis(500);

/// Connects to `--bus` for the live view and subscribes to the other renderers' commits.
///
/// Called before the renderer rebuilds its live view from the store, so that no commit of
/// another renderer falls between that read and the subscription (one that lands in both
/// is folded once if numbered); messages wait in the subscription's bounded queue until
/// [`start`]. NATS may start after the renderer: the connection is made in the
/// background, and the wait for the server to confirm the subscription is bounded by
/// [`CONFIRM_TIMEOUT`].
///
/// # Errors
/// The URL cannot be used, or the subscription cannot be made.
pub(crate) async fn subscribe(config: &Config, url: &str) -> anyhow::Result<Subscribed> {
    let client = async_nats::ConnectOptions::new()
        .name("heatmap-renderer-live")
        .no_echo()
        .retry_on_initial_connect()
        .max_reconnects(None)
        .subscription_capacity(SUBSCRIPTION_CAPACITY)
        .reconnect_delay_callback(|attempts| {
            let factor = 1u32 << attempts.min(16) as u32;
            Duration::from_millis(100)
                .saturating_mul(factor)
                .min(Duration::from_secs(2))
        })
        .event_callback(|event| async move {
            match event {
                async_nats::Event::Connected => info!("live bus connected"),
                async_nats::Event::Disconnected => warn!("live bus disconnected"),
                other => debug!(event = %other, "live bus event"),
            }
        })
        .connect(url)
        .await
        .map_err(|err| anyhow::anyhow!("--bus {url}: {err}"))?;
    let subject = format!("{}.live.renderer.events", config.bus_stream);
    let subscriber = client
        .subscribe(subject.clone())
        .await
        .map_err(|err| anyhow::anyhow!("subscribe to {subject}: {err}"))?;
    // A round trip to the server confirms the subscription; without NATS yet, the
    // renderer starts anyway after the timeout.
    let _ = tokio::time::timeout(CONFIRM_TIMEOUT, client.flush()).await;
    Ok(Subscribed {
        client,
        subscriber,
        subject,
    })
}

/// The live connection and subscription, made before the context exists.
pub(crate) struct Subscribed {
    client: async_nats::Client,
    subscriber: async_nats::Subscriber,
    subject: String,
}

/// Taps the store's commits and starts the task that shares them and folds the other
/// renderers' in, until `shutdown`.
///
/// # Errors
/// The commits are already tapped.
pub(crate) fn start(
    ctx: Arc<Context>,
    subscribed: Subscribed,
    shutdown: Shutdown,
) -> anyhow::Result<()> {
    let queue = usize::try_from(ctx.config.live_queue).unwrap_or(usize::MAX);
    let Some(commits) = ctx.ingest.tap_commits(queue) else {
        anyhow::bail!("the store's commits are already shared");
    };
    let Subscribed {
        client,
        subscriber,
        subject,
    } = subscribed;
    let live = LiveBus {
        id: instance_id(),
        ctx,
        client,
        subject,
    };
    info!(renderer = %live.id, subject = %live.subject, "live view shared over the bus");
    tokio::spawn(live.run(subscriber, commits, shutdown));
    Ok(())
}

/// The task's state.
struct LiveBus {
    ctx: Arc<Context>,
    client: async_nats::Client,
    /// `<stream>.live.renderer.events`.
    subject: String,
    /// This renderer's random id, in the header of every message it sends.
    id: String,
}

impl LiveBus {
    async fn run(
        self,
        mut subscriber: async_nats::Subscriber,
        mut commits: mpsc::Receiver<Vec<TrackedEvent>>,
        mut shutdown: Shutdown,
    ) {
        loop {
            tokio::select! {
                () = shutdown.wait() => return,
                facts = commits.recv() => match facts {
                    Some(events) => self.publish(&events).await,
                    None => return,
                },
                message = subscriber.next() => match message {
                    Some(message) => self.receive(&message),
                    None => {
                        warn!("live bus subscription ended; the live view counts this renderer's events only");
                        return;
                    }
                },
            }
        }
    }

    /// Folds another renderer's committed events into the live view; a bad or
    /// oversized message is counted and dropped.
    fn receive(&self, message: &async_nats::Message) {
        let origin = message
            .headers
            .as_ref()
            .and_then(|headers| headers.get(ORIGIN_HEADER))
            .map(|value| value.as_str());
        if origin == Some(self.id.as_str()) {
            return;
        }
        let max = usize::try_from(self.ctx.config.live_max_message_bytes).unwrap_or(usize::MAX);
        if message.payload.len() > max {
            self.ctx.metrics.live_dropped.inc();
            debug!(
                bytes = message.payload.len(),
                max, "dropped an oversized live message from another renderer"
            );
            return;
        }
        match decode_events(&message.payload) {
            Ok(events) => {
                let n_events = events.len() as u64;
                self.ctx.analytics.fold_remote(events);
                self.ctx.metrics.live_folded.inc_by(n_events);
                self.ctx.ingest.note_remote_change();
            }
            Err(err) => {
                self.ctx.metrics.live_dropped.inc();
                debug!(cause = %err, "dropped a malformed live message from another renderer");
            }
        }
    }

    /// Publishes one commit's facts, in as many messages as the size limits need (the
    /// smaller of `--live-max-message-bytes` and the server's own); one that cannot go is
    /// counted and dropped.
    async fn publish(&self, events: &[TrackedEvent]) {
        if self.client.connection_state() != async_nats::connection::State::Connected {
            self.ctx.metrics.live_dropped.inc();
            return;
        }
        let configured =
            usize::try_from(self.ctx.config.live_max_message_bytes).unwrap_or(usize::MAX);
        let server = self.client.server_info().max_payload;
        let max = if server > 0 {
            configured.min(server)
        } else {
            configured
        };
        // Popped from the end: the first chunk last in, so events go out in commit order.
        let mut pending: Vec<&[TrackedEvent]> = events.chunks(MAX_EVENTS_PER_POST).rev().collect();
        while let Some(chunk) = pending.pop() {
            let payload = match serde_json::to_vec(chunk) {
                Ok(payload) => payload,
                Err(err) => {
                    self.ctx.metrics.live_dropped.inc();
                    warn!(cause = %err, "cannot encode committed events for the live bus");
                    continue;
                }
            };
            if payload.len() > max {
                if chunk.len() > 1 {
                    let (first, second) = chunk.split_at(chunk.len() / 2);
                    pending.push(second);
                    pending.push(first);
                } else {
                    self.ctx.metrics.live_dropped.inc();
                }
                continue;
            }
            let mut headers = async_nats::HeaderMap::new();
            headers.insert(ORIGIN_HEADER, self.id.as_str());
            let sent = tokio::time::timeout(
                PUBLISH_TIMEOUT,
                self.client
                    .publish_with_headers(self.subject.clone(), headers, payload.into()),
            )
            .await;
            if !matches!(sent, Ok(Ok(()))) {
                self.ctx.metrics.live_dropped.inc();
            }
        }
    }
}

/// A random id for this run of the renderer: the standard library's per-process random
/// hash keys over the time and the process id (no random-number crate needed).
fn instance_id() -> String {
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |since| since.as_nanos());
    hasher.write_u128(nanos);
    hasher.write_u32(std::process::id());
    format!("n-{:016x}", hasher.finish())
}
