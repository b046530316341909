//! The live analytics a relay's dashboards see, pushed over its link while one watches.
//!
//! The relay says `watch {on: true}` while at least one dashboard watches. From then on
//! this task sends an `analytics` update right away, after every commit of new events
//! (at most every [`MIN_INTERVAL`]), and at least every [`MAX_INTERVAL`] so the numbers of
//! a quiet site still age (active users time out, the per-second chart moves on). Nothing
//! is computed while nobody watches, and the relay never polls.

use std::sync::Arc;
use std::time::Duration;

use protocol::{encode, AnalyticsUpdate, RendererMessage};
use tokio::sync::{mpsc, watch};
use tokio_tungstenite::tungstenite::Message;

use crate::context::Context;
use ::analytics::live::Filter;

/// Most updates per second under a stream of commits (dashboards redraw on each).
const MIN_INTERVAL: Duration = Duration::from_millis(250);

/// Longest time between updates while someone watches.
const MAX_INTERVAL: Duration = Duration::from_secs(1);

/// Sessions in each update (the most recent).
const MAX_SESSIONS: usize = 50;

/// Pushes updates to one link until it closes.
pub(crate) async fn push_analytics(
    ctx: Arc<Context>,
    tx: mpsc::Sender<Message>,
    mut watching: watch::Receiver<bool>,
) {
    let mut changes = ctx.ingest.changes();
    loop {
        if !*watching.borrow_and_update() {
            if watching.changed().await.is_err() {
                return;
            }
            continue;
        }
        // Today's numbers come from the store, which blocks.
        let job_ctx = ctx.clone();
        let Ok(update) = tokio::task::spawn_blocking(move || current(&job_ctx)).await else {
            return;
        };
        if tx
            .send(Message::text(encode(&RendererMessage::Analytics(update))))
            .await
            .is_err()
        {
            return;
        }
        tokio::time::sleep(MIN_INTERVAL).await;
        tokio::select! {
            changed = changes.changed() => if changed.is_err() { return },
            changed = watching.changed() => if changed.is_err() { return },
            () = tokio::time::sleep(MAX_INTERVAL.saturating_sub(MIN_INTERVAL)) => {}
        }
    }
}

/// The live summary (today's numbers from the store's aggregates) and the most recent
/// sessions.
fn current(ctx: &Context) -> AnalyticsUpdate {
    let filter = Filter::default();
    let summary = ctx.analytics.summary(&filter).unwrap_or_else(|err| {
        tracing::warn!(cause = %err, "cannot compute the live analytics summary");
        protocol::analytics::Summary::default()
    });
    let mut sessions = ctx.analytics.sessions(&filter);
    sessions.truncate(MAX_SESSIONS);
    AnalyticsUpdate { summary, sessions }
}
