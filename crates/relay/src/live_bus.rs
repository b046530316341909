//! Live features across relays (`--bus`, cluster builds only): presence counts, members,
//! cursors and the dashboard feed reach pages on every relay over NATS core subjects.
//!
//! Each relay picks a random id at start and publishes what its own pages contribute on
//! `<stream>.live.relay.presence` (counts and its most recent members: when they change
//! and at least once a second, which is also its heartbeat), `<stream>.live.relay.cursors`
//! (its pages' cursors when one moves, at the feed's ten times a second, and with the
//! heartbeat) and `<stream>.live.relay.activity` (the events it accepted while a dashboard
//! anywhere watches). It subscribes to `<stream>.live.relay.*`, ignores its own echoes,
//! and merges the others' into what its pages see, through small hooks in `hub`: the
//! counts in `presence`, the members in `members`/`user_join`/`user_leave`, the dashboards
//! in `user_connected`/`user_disconnected`/`visitor_update`, the cursors in `cursors`, the
//! events in `session_activity`.
//!
//! Live state is soft: plain publish/subscribe, no JetStream. A lost message is repaired
//! by the next heartbeat; a relay not heard from for `--live-expiry-ms` is forgotten, so a
//! killed relay's pages vanish within a few seconds. Everything kept is bounded
//! (`--live-max-relays`, `--live-max-members`, `--live-max-cursors`), the subscription's
//! queue too ([`SUBSCRIPTION_CAPACITY`]); a malformed or oversized message is counted in
//! `relay_live_dropped_total` and dropped.
//!
//! The connection is its own, beside `bus`'s JetStream one; the two could share one
//! client.

use std::collections::{BTreeMap, HashMap};
use std::hash::{BuildHasher, Hasher};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt as _;
use netkit::Shutdown;
use protocol::live::{decode_relay_live, RelayLive};
use protocol::{ConnId, Cursor, ErrorCode, Member};
use tracing::{debug, info, warn};

use crate::context::Context;
use crate::hub::{LocalLive, RemoteView};

/// How often this relay looks for changes to publish and for relays to forget: the
/// cursors' feed rate.
const TICK: Duration = Duration::from_millis(100);

/// Longest time between two presence (and cursor) messages of a relay: its heartbeat.
const HEARTBEAT: Duration = Duration::from_secs(1);

/// Live messages waiting to be merged; past it the NATS client drops them (a slow
/// consumer), which costs a stale second, not correctness.
const SUBSCRIPTION_CAPACITY: usize = 1024;

/// Longest a publish may wait for room in the client's outgoing queue before the message
/// is dropped: a stalled connection must not stall expiry.
const PUBLISH_TIMEOUT: Duration = Duration::from_millis(200);

/// Connects to `--bus` for live state (in the background: NATS may start after the
/// relay) and starts the task that publishes and merges it until `shutdown`.
///
/// # Errors
/// The URL cannot be used, or the subscription cannot be made.
pub(crate) async fn start(ctx: Arc<Context>, url: &str, shutdown: Shutdown) -> anyhow::Result<()> {
    let backoff_initial = Duration::from_millis(ctx.config.backoff_initial_ms.max(1));
    let backoff_max = Duration::from_millis(ctx.config.backoff_max_ms.max(1));
    let client = async_nats::ConnectOptions::new()
        .name("heatmap-relay-live")
        .no_echo()
        .retry_on_initial_connect()
        .max_reconnects(None)
        .subscription_capacity(SUBSCRIPTION_CAPACITY)
        .connection_timeout(Duration::from_millis(ctx.config.connect_timeout_ms.max(1)))
        .reconnect_delay_callback(move |attempts| {
            let factor = 1u32 << attempts.min(16) as u32;
            backoff_initial.saturating_mul(factor).min(backoff_max)
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
    let prefix = format!("{}.live.relay", ctx.config.bus_stream);
    let subscriber = client
        .subscribe(format!("{prefix}.*"))
        .await
        .map_err(|err| anyhow::anyhow!("subscribe to {prefix}.*: {err}"))?;
    let id = instance_id();
    info!(relay = %id, subjects = %format!("{prefix}.*"), "live state shared over the bus");
    ctx.hub.share_activity();
    let live = LiveBus {
        merged: Merged::new(&ctx),
        ctx,
        client,
        prefix,
        id,
        last_presence: None,
        last_cursors: None,
    };
    tokio::spawn(live.run(subscriber, shutdown));
    Ok(())
}

/// The task's state: the connection, what was last published, and the other relays.
struct LiveBus {
    ctx: Arc<Context>,
    client: async_nats::Client,
    /// `<stream>.live.relay`.
    prefix: String,
    /// This relay's random id, in every message it sends.
    id: String,
    /// What was last published and when, so unchanged state goes out only as heartbeat.
    last_presence: Option<(LocalLive, Instant)>,
    last_cursors: Option<(Vec<Cursor>, Instant)>,
    /// The other relays, merged.
    merged: Merged,
}

impl LiveBus {
    async fn run(mut self, mut subscriber: async_nats::Subscriber, mut shutdown: Shutdown) {
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = shutdown.wait() => break,
                message = subscriber.next() => match message {
                    Some(message) => self.receive(&message.payload),
                    None => {
                        warn!("live bus subscription ended; live state stays local");
                        break;
                    }
                },
                _ = tick.tick() => {
                    self.publish_local().await;
                    if self.merged.expire(&self.ctx) {
                        self.merged.apply(&self.ctx);
                    }
                }
            }
        }
        // Tell the others at once that this relay's pages are gone, rather than letting
        // them wait for the expiry.
        let empty = LocalLive {
            online: 0,
            dashboards: 0,
            n_members: 0,
            recent: Vec::new(),
        };
        self.publish(
            "presence",
            &presence_message(&self.id, &empty, self.ctx.config.members_shown),
        )
        .await;
        let cursors = RelayLive::Cursors {
            relay: self.id.clone(),
            cursors: Vec::new(),
        };
        self.publish("cursors", &cursors).await;
    }

    /// Merges one message from another relay; a bad one is counted and dropped.
    fn receive(&mut self, payload: &[u8]) {
        let max = usize::try_from(self.ctx.config.live_max_message_bytes).unwrap_or(usize::MAX);
        let msg = match decode_relay_live(payload, max) {
            Ok(msg) => msg,
            Err(err) => {
                let reason = match err.code {
                    ErrorCode::TooLarge => "too_large",
                    ErrorCode::BadJson => "bad_json",
                    _ => "bad_field",
                };
                self.ctx.hub.metrics.live_dropped(reason);
                debug!(cause = %err.message, "dropped a live message from another relay");
                return;
            }
        };
        if msg.relay() == self.id {
            return;
        }
        self.merged.receive(&self.ctx, msg);
    }

    /// Publishes what changed among this relay's own pages, and the heartbeat when due.
    async fn publish_local(&mut self) {
        let shown = self.ctx.config.members_shown;
        let local = self.ctx.hub.local_live(shown);
        let due = |last: Option<Instant>| last.is_none_or(|at| at.elapsed() >= HEARTBEAT);
        let presence_due = match &self.last_presence {
            Some((last, at)) => *last != local || due(Some(*at)),
            None => true,
        };
        if presence_due {
            self.publish("presence", &presence_message(&self.id, &local, shown))
                .await;
            self.last_presence = Some((local, Instant::now()));
        }
        let mut cursors = self.ctx.hub.local_cursors();
        cursors.truncate(self.ctx.config.live_max_cursors);
        let cursors_due = match &self.last_cursors {
            Some((last, at)) => *last != cursors || due(Some(*at)),
            None => true,
        };
        if cursors_due {
            let msg = RelayLive::Cursors {
                relay: self.id.clone(),
                cursors: cursors.clone(),
            };
            self.publish("cursors", &msg).await;
            self.last_cursors = Some((cursors, Instant::now()));
        }
        if let Some((events, dropped)) = self.ctx.hub.take_shared_activity() {
            let msg = RelayLive::Activity {
                relay: self.id.clone(),
                events,
                dropped,
            };
            self.publish("activity", &msg).await;
        }
    }

    /// Publishes one message on `<prefix>.<kind>`; one that cannot go (too large, NATS
    /// away or stalled) is counted and dropped: the next heartbeat repairs it.
    async fn publish(&self, kind: &str, msg: &RelayLive) {
        let text = protocol::encode(msg);
        let max = usize::try_from(self.ctx.config.live_max_message_bytes).unwrap_or(usize::MAX);
        if text.len() > max {
            self.ctx.hub.metrics.live_dropped("too_large");
            return;
        }
        if self.client.connection_state() != async_nats::connection::State::Connected {
            self.ctx.hub.metrics.live_dropped("unsent");
            return;
        }
        let subject = format!("{}.{kind}", self.prefix);
        let sent = tokio::time::timeout(
            PUBLISH_TIMEOUT,
            self.client.publish(subject, text.into_bytes().into()),
        )
        .await;
        if !matches!(sent, Ok(Ok(()))) {
            self.ctx.hub.metrics.live_dropped("unsent");
        }
    }
}

/// A presence message of `local`, listing at most `shown` members.
fn presence_message(relay: &str, local: &LocalLive, shown: usize) -> RelayLive {
    RelayLive::Presence {
        relay: relay.to_owned(),
        online: local.online,
        dashboards: local.dashboards,
        members: local.n_members,
        recent: local.recent.iter().take(shown).cloned().collect(),
    }
}

/// What one other relay last said.
#[derive(Debug, Default)]
struct Remote {
    last_heard: Option<Instant>,
    online: usize,
    dashboards: usize,
    n_members: usize,
    /// Its most recent members, newest first, with its own ids.
    members: Vec<Member>,
    /// Its pages' cursors, with its own ids.
    cursors: Vec<Cursor>,
    /// This relay's id for each of its page ids (members and cursors share them).
    aliases: HashMap<ConnId, ConnId>,
}

/// The other relays, by id, within `--live-max-relays`.
#[derive(Debug)]
struct Merged {
    relays: BTreeMap<String, Remote>,
    max_relays: usize,
    max_members: usize,
    max_cursors: usize,
    expiry: Duration,
}

impl Merged {
    fn new(ctx: &Context) -> Self {
        Merged {
            relays: BTreeMap::new(),
            max_relays: ctx.config.live_max_relays as usize,
            max_members: ctx.config.live_max_members,
            max_cursors: ctx.config.live_max_cursors,
            expiry: Duration::from_millis(ctx.config.live_expiry_ms),
        }
    }

    /// Folds one valid message in and shows the result to this relay's pages.
    fn receive(&mut self, ctx: &Context, msg: RelayLive) {
        let relay_id = msg.relay().to_owned();
        if let RelayLive::Activity {
            events, dropped, ..
        } = msg
        {
            let cap = crate::events::activity_cap(ctx.config.max_activity_per_sec);
            if cap > 0 {
                let extra = events.len().saturating_sub(cap) as u64;
                let kept = events.into_iter().take(cap).collect();
                ctx.hub
                    .note_remote_activity(kept, dropped.saturating_add(extra), cap);
            }
            return;
        }
        if !self.relays.contains_key(&relay_id) {
            if self.relays.len() >= self.max_relays {
                ctx.hub.metrics.live_dropped("too_many_relays");
                return;
            }
            info!(relay = %relay_id, "another relay's pages joined the live view");
        }
        let remote = self.relays.entry(relay_id).or_default();
        remote.last_heard = Some(Instant::now());
        match msg {
            RelayLive::Presence {
                online,
                dashboards,
                members,
                mut recent,
                ..
            } => {
                recent.truncate(self.max_members);
                remote.online = online;
                remote.dashboards = dashboards;
                remote.n_members = members.max(recent.len());
                remote.members = recent;
            }
            RelayLive::Cursors { mut cursors, .. } => {
                cursors.truncate(self.max_cursors);
                remote.cursors = cursors;
            }
            RelayLive::Activity { .. } => {}
        }
        self.apply(ctx);
    }

    /// Forgets relays not heard from within the expiry; `true` if any was.
    fn expire(&mut self, ctx: &Context) -> bool {
        let before = self.relays.len();
        let expiry = self.expiry;
        self.relays.retain(|relay, remote| {
            let alive = remote.last_heard.is_some_and(|at| at.elapsed() < expiry);
            if !alive {
                info!(relay = %relay, "another relay's pages left the live view (not heard from)");
            }
            alive
        });
        ctx.hub.metrics.live_relays.set(self.relays.len() as i64);
        self.relays.len() != before
    }

    /// Shows the merged view to this relay's pages: counts, members and cursors, with
    /// every other relay's page ids mapped to ids unique on this relay.
    fn apply(&mut self, ctx: &Context) {
        let mut view = RemoteView::default();
        let mut cursors = Vec::new();
        for remote in self.relays.values_mut() {
            view.online = view.online.saturating_add(remote.online);
            view.dashboards = view.dashboards.saturating_add(remote.dashboards);
            view.n_members = view.n_members.saturating_add(remote.n_members);
            // Ids no longer listed are forgotten, which bounds the alias table.
            let aliases = &mut remote.aliases;
            aliases.retain(|id, _| {
                remote.members.iter().any(|member| member.id == *id)
                    || remote.cursors.iter().any(|cursor| cursor.id == *id)
            });
            let mut alias = |id: ConnId| *aliases.entry(id).or_insert_with(|| ctx.hub.next_alias());
            for member in &remote.members {
                if view.members.len() < self.max_members {
                    view.members.push(Member {
                        id: alias(member.id),
                        name: member.name.clone(),
                    });
                }
            }
            for cursor in &remote.cursors {
                if cursors.len() < self.max_cursors {
                    cursors.push(Cursor {
                        id: alias(cursor.id),
                        x: cursor.x,
                        y: cursor.y,
                    });
                }
            }
        }
        ctx.hub.metrics.live_relays.set(self.relays.len() as i64);
        ctx.hub.set_remote_cursors(cursors);
        ctx.hub.set_remote(view);
    }
}

/// A random id for this run of the relay: the standard library's per-process random
/// hash keys over the time and the process id (no random-number crate needed).
fn instance_id() -> String {
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |since| since.as_nanos());
    hasher.write_u128(nanos);
    hasher.write_u32(std::process::id());
    format!("r-{:016x}", hasher.finish())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instance_ids_differ_and_pass_the_receivers_check() {
        let (first, second) = (instance_id(), instance_id());
        assert_ne!(first, second);
        let msg = RelayLive::Cursors {
            relay: first,
            cursors: Vec::new(),
        };
        assert!(msg.validate().is_ok());
    }
}
