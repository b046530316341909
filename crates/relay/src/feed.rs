//! The relay's own live feeds: how many pages are here (once a second), the other
//! pages' cursors (ten times a second) and the events just stored (`session_activity`,
//! four times a second). The dashboards' analytics are not polled here:
//! the renderer pushes them over the link while someone watches (`upstream`).

use std::sync::Arc;
use std::time::Duration;

use netkit::Shutdown;

use crate::context::Context;

/// How often presence is refreshed.
const TICK: Duration = Duration::from_secs(1);

/// How often live cursors are sent (ten times a second, only when one moved).
const CURSOR_TICK: Duration = Duration::from_millis(100);

/// How often stored events are listed to dashboards (`session_activity`).
pub(crate) const ACTIVITY_TICK: Duration = Duration::from_millis(250);

/// Lists events just stored to the dashboards, four times a second, until shutdown.
pub(crate) async fn run_activity(ctx: Arc<Context>, mut shutdown: Shutdown) {
    let mut tick = tokio::time::interval(ACTIVITY_TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => ctx.hub.flush_activity(),
            _ = shutdown.wait() => return,
        }
    }
}

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

/// Publishes how many pages are here, once a second, until shutdown.
pub(crate) async fn run_presence(ctx: Arc<Context>, mut shutdown: Shutdown) {
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => ctx.hub.publish_presence(),
            _ = shutdown.wait() => return,
        }
    }
}
