//! Once a second: publish how many pages are here, and push the analytics to dashboards.
//!
//! Dashboards get the numbers pushed over their WebSocket rather than polling; the relay
//! asks the renderer once a second for everyone, and only while someone watches.

use std::sync::Arc;
use std::time::Duration;

use netkit::Shutdown;
use protocol::analytics::{SessionInfo, Summary};
use protocol::{AnalyticsUpdate, ServerMessage};
use tracing::debug;

use crate::context::Context;
use crate::passthrough::get_json;

/// How often presence and the analytics feed are refreshed.
const TICK: Duration = Duration::from_secs(1);

/// Sessions pushed to dashboards (the most recent).
const MAX_SESSIONS: usize = 50;

/// How often live cursors are sent (ten times a second, only when one moved).
const CURSOR_TICK: Duration = Duration::from_millis(100);

/// Sends live cursors until shutdown.
pub(crate) async fn run_cursors(ctx: Arc<Context>, mut shutdown: Shutdown) {
    let mut tick = tokio::time::interval(CURSOR_TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => ctx.hub.broadcast_cursors(),
            _ = shutdown.wait() => return,
        }
    }
}

/// Runs until shutdown.
pub(crate) async fn run_feed(ctx: Arc<Context>, mut shutdown: Shutdown) {
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.wait() => return,
        }
        ctx.hub.publish_presence();
        if !ctx.hub.has_watchers() {
            continue;
        }
        let summary = get_json::<Summary>(&ctx, "/api/analytics/summary").await;
        let sessions = get_json::<Vec<SessionInfo>>(&ctx, "/api/analytics/sessions").await;
        match (summary, sessions) {
            (Ok(summary), Ok(mut sessions)) => {
                sessions.truncate(MAX_SESSIONS);
                ctx.hub
                    .deliver_to_watchers(&ServerMessage::Analytics(AnalyticsUpdate {
                        summary,
                        sessions,
                    }));
            }
            (Err(err), _) | (_, Err(err)) => {
                debug!(cause = %format!("{err:#}"), "no analytics from the renderer this tick")
            }
        }
    }
}
