//! One page's WebSocket: check, answer or forward each message, and keep the page told
//! about the renderer link.
//!
//! The socket is split: this task reads, a writer task drains the session's bounded
//! queue. Forwarding uses `send().await` on the upstream queue, so a renderer that falls
//! behind slows the page's reads (TCP back-pressure) rather than growing memory.

use std::net::SocketAddr;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use futures_util::{SinkExt, StreamExt};
use netkit::ws::{Inbound, ServerSocket};
use netkit::{Shutdown, TokenBucket};
use protocol::{
    decode_page, encode, Error, ErrorCode, PageMessage, ServerMessage, PROTOCOL_VERSION,
};
use tokio::sync::mpsc;
use tokio::time::{Duration, Instant};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;
use tracing::{debug, info};

use crate::context::Context;
use crate::upstream::Outbound;

/// Serves one page until it disconnects or the relay shuts down.
pub(crate) async fn serve_session(
    socket: ServerSocket,
    peer: SocketAddr,
    ctx: Arc<Context>,
    mut shutdown: Shutdown,
) {
    let (mut sink, mut stream) = socket.split();
    let (tx, mut rx) = mpsc::channel::<Message>(ctx.config.session_queue.max(8));
    let conn = ctx.hub.register(tx.clone());
    info!(%peer, conn, "page connected");
    let writer = tokio::spawn(async move {
        while let Some(msg) = rx.recv().await {
            let closing = matches!(msg, Message::Close(_));
            if sink.send(msg).await.is_err() || closing {
                break;
            }
        }
    });

    let mut session = Session {
        conn,
        ctx: ctx.clone(),
        tx: tx.clone(),
        bucket: TokenBucket::new(ctx.config.max_messages_per_sec, ctx.config.message_burst),
        stats_in_flight: Arc::new(AtomicBool::new(false)),
        shutdown: shutdown.clone(),
        #[cfg(feature = "cluster")]
        page_bus: crate::page_bus::PageBus::default(),
    };
    let mut link = ctx.hub.watch_link();
    link.mark_unchanged();
    let mut presence = ctx.hub.watch_presence();
    // Browsers answer pings by themselves, so a page that is merely idle stays; one whose
    // network vanished (or a client that holds a socket and never speaks) is closed.
    let idle_timeout = Duration::from_secs(ctx.config.idle_timeout_secs.max(1));
    let mut ping = tokio::time::interval_at(Instant::now() + idle_timeout / 4, idle_timeout / 4);
    let mut last_heard = Instant::now();
    let end = loop {
        tokio::select! {
            _ = ping.tick() => {
                if last_heard.elapsed() > idle_timeout {
                    let _ = tx.send(close(CloseCode::Away, "idle for too long".into())).await;
                    break "idle timeout";
                }
                let _ = tx.try_send(Message::Ping(Default::default()));
            }
            frame = stream.next() => {
                last_heard = Instant::now();
                match Inbound::sort(frame) {
                    Inbound::Ended => break "closed by the page",
                    Inbound::Text(text) => session.handle_text(text.as_str()).await,
                    Inbound::Binary => {
                        session.refuse(Error::new(ErrorCode::BinaryFrame, "only text frames are spoken here")).await;
                    }
                    // Pings, pongs and the page's Close are answered by tungstenite on the
                    // next read, which ends the stream after a Close.
                    Inbound::Control => {}
                    Inbound::Violation(violation) => {
                        ctx.hub.metrics.errors.record(violation.error);
                        debug!(conn, cause = %violation.cause, "page broke the websocket protocol");
                        let reply = if violation.error == ErrorCode::TooLarge {
                            let limit = ctx.config.max_frame_bytes;
                            close(CloseCode::Size, format!("message over the {limit}-byte limit"))
                        } else {
                            violation.close_message()
                        };
                        let _ = tx.send(reply).await;
                        break violation.reason;
                    }
                }
            }
                        changed = link.changed() => {
                if changed.is_err() {
                    break "relay stopping";
                }
                let state = *link.borrow_and_update();
                session.send(&ServerMessage::Link { renderer: state }).await;
            }
                        changed = presence.changed() => {
                if changed.is_err() {
                    break "relay stopping";
                }
                let counts = *presence.borrow_and_update();
                session.send(&ServerMessage::Presence { online: counts.online, dashboards: counts.dashboards }).await;
            }
            _ = shutdown.wait() => {
                let _ = tx.send(close(CloseCode::Away, "relay shutting down".into())).await;
                break "relay stopping";
            }
        }
    };
    ctx.hub.unregister(conn);
    drop(session);
    drop(tx);
    let _ = writer.await;
    info!(%peer, conn, why = end, "page disconnected");
}

fn close(code: CloseCode, reason: String) -> Message {
    Message::Close(Some(CloseFrame {
        code,
        reason: reason.into(),
    }))
}

/// The state of one page session while its frames are handled.
struct Session {
    conn: protocol::ConnId,
    ctx: Arc<Context>,
    tx: mpsc::Sender<Message>,
    bucket: TokenBucket,
    /// Whether a `request_detailed_stats` of this page is being answered (one at a time).
    stats_in_flight: Arc<AtomicBool>,
    /// Handed to the tasks that answer this page's detailed-stats requests.
    shutdown: Shutdown,
    /// With `--bus`: what this page's recording has had acknowledged, and its Generate.
    #[cfg(feature = "cluster")]
    page_bus: crate::page_bus::PageBus,
}

impl Session {
    async fn handle_text(&mut self, text: &str) {
        if !self.bucket.try_take() {
            self.refuse(Error::new(
                ErrorCode::RateLimited,
                format!(
                    "more than {} messages per second; this one was dropped, resend it later",
                    self.ctx.config.max_messages_per_sec
                ),
            ))
            .await;
            return;
        }
        let metrics = &self.ctx.hub.metrics;
        metrics.frames_in.inc();
        metrics.bytes_in.inc_by(text.len() as u64);
        let msg = match decode_page(text, &self.ctx.limits) {
            Ok(msg) => msg,
            Err(err) => {
                self.refuse(err).await;
                return;
            }
        };
        #[cfg(feature = "cluster")]
        if crate::page_bus::travels_on_bus(&msg) {
            if let Some(bus) = &self.ctx.bus {
                let ctx = self.ctx.clone();
                crate::page_bus::handle(&ctx, bus, self.conn, text, msg, &mut self.page_bus).await;
                return;
            }
        }
        let mut request = None;
        let (recording, seq) = match &msg {
            PageMessage::Watch => {
                self.ctx.hub.watch_analytics(self.conn);
                return;
            }
            PageMessage::Cursor { x, y } => {
                self.ctx.hub.move_cursor(self.conn, *x, *y);
                return;
            }
            PageMessage::RequestDetailedStats { filters } => {
                let filters = filters.clone().unwrap_or_default();
                let started = filters.normalized().and_then(|filters| {
                    crate::dashboard::spawn_detailed_stats(
                        &self.ctx,
                        self.conn,
                        filters,
                        &self.stats_in_flight,
                        self.shutdown.clone(),
                    )
                });
                if let Err(err) = started {
                    self.refuse(err).await;
                }
                return;
            }
            PageMessage::SetName { name } => {
                if !self.ctx.hub.rename(self.conn, name.trim()) {
                    self.refuse(Error::new(
                        ErrorCode::BadField,
                        "set_name: send hello first; names belong to members",
                    ))
                    .await;
                }
                return;
            }
            PageMessage::TrackDashboardAction { action, .. } => {
                metrics.dashboard_action(protocol::dashboard::action_label(action));
                self.send(&ServerMessage::DashboardActionAck {
                    action: action.clone(),
                })
                .await;
                return;
            }
            PageMessage::Hello { v } => {
                if *v == PROTOCOL_VERSION {
                    let renderer = self.ctx.hub.link_state();
                    self.send(&ServerMessage::Welcome {
                        v: PROTOCOL_VERSION,
                        renderer,
                    })
                    .await;
                    let counts = self.ctx.hub.presence_now();
                    self.send(&ServerMessage::Presence {
                        online: counts.online,
                        dashboards: counts.dashboards,
                    })
                    .await;
                    self.ctx.hub.join(self.conn, self.ctx.config.members_shown);
                } else {
                    self.refuse(Error::new(
                        ErrorCode::UnsupportedVersion,
                        format!("relay speaks protocol {PROTOCOL_VERSION}, page sent {v}; reload the page"),
                    ))
                    .await;
                }
                return;
            }
            PageMessage::Start { recording, .. } | PageMessage::Stop { recording } => {
                (Some(recording.clone()), None)
            }
            PageMessage::Points(batch) => {
                metrics.points_in.inc_by(batch.points.len() as u64);
                self.ctx
                    .hub
                    .batch_forwarded(self.conn, &batch.recording, batch.seq);
                (Some(batch.recording.clone()), Some(batch.seq))
            }
            PageMessage::Generate(generate) => {
                request = generate.request;
                (Some(generate.recording.clone()), None)
            }
            PageMessage::Preview(preview) => (Some(preview.recording.clone()), None),
        };
        // The text decoded as exactly one JSON object, so it can be spliced in verbatim:
        // no second encode on the hot path.
        let frame = format!(r#"{{"type":"page","conn":{},"msg":{}}}"#, self.conn, text);
        let outbound = Outbound {
            conn: self.conn,
            frame,
            recording,
            seq,
            request,
        };
        if self.ctx.upstream.send(outbound).await.is_err() {
            debug!(conn = self.conn, "upstream queue closed; relay stopping");
        }
    }

    /// Counts a refused message and tells the page why.
    async fn refuse(&self, err: Error) {
        self.ctx.hub.metrics.errors.record(err.code);
        debug!(conn = self.conn, code = %err.code, message = %err.message, "refused a page message");
        self.send(&ServerMessage::Error {
            code: err.code,
            message: err.message,
            recording: None,
            seq: None,
            request: None,
        })
        .await;
    }

    async fn send(&self, msg: &ServerMessage) {
        // An error means the writer is gone because the page left; nobody is left to tell.
        let _ = self.tx.send(Message::text(encode(msg))).await;
    }
}
