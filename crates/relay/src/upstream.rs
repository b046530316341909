//! The one WebSocket to the renderer: connect, greet, pump, and reconnect forever.
//!
//! Sessions put page messages on a bounded queue ([`Outbound`]); this task writes them to
//! the renderer in order and routes each reply back through the hub. While the link is
//! down, messages wait in a bounded backlog and are replayed when it is back; one that
//! does not fit is answered `busy`, so the page keeps it and resends.
//!
//! Batches and numbered Generates written to a link are kept until their answer comes
//! back. When the link drops, the unanswered ones go back to the front of the backlog in
//! the order they were sent, so a Generate the renderer never answered (it was killed
//! mid-render, say) is replayed on the next link, after the batches sent before it.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{anyhow, bail, Context as _};
use std::collections::{HashMap, VecDeque};

use futures_util::stream::SplitStream;
use futures_util::{SinkExt, StreamExt};
use hyper::header::{HeaderValue, AUTHORIZATION};
use netkit::Shutdown;
use protocol::{
    decode_renderer, encode, ConnId, ErrorCode, LinkState, RecordingId, RelayMessage,
    RendererMessage, ServerMessage, PROTOCOL_VERSION,
};
use tokio::sync::{mpsc, oneshot};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, WebSocketConfig};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;
use tracing::{debug, info, warn};

use crate::backoff::Backoff;
use crate::context::Context;
use crate::events::{EventsAnswer, EventsOutbound};

/// A page message on its way to the renderer.
#[derive(Debug)]
pub(crate) struct Outbound {
    /// The page it came from, for error replies.
    pub conn: ConnId,
    /// The `page` envelope, ready to send.
    pub frame: String,
    /// The recording it names, for error replies.
    pub recording: Option<RecordingId>,
    /// The batch it is, for error replies and to match its `ack`.
    pub seq: Option<u64>,
    /// The page's number for a Generate, to match its answer; a Generate without one is
    /// not replayed after a lost link.
    pub request: Option<u64>,
}

impl Outbound {
    /// Whether this message is kept until answered: a batch, or a numbered Generate.
    fn awaits_answer(&self) -> bool {
        self.recording.is_some() && (self.seq.is_some() || self.request.is_some())
    }

    /// Whether `msg`, sent to `conn`, answers this message.
    fn is_answered_by(&self, conn: ConnId, msg: &ServerMessage) -> bool {
        if conn != self.conn {
            return false;
        }
        let (recording, seq, request) = match msg {
            ServerMessage::Ack { recording, seq, .. } => (recording, Some(*seq), None),
            ServerMessage::Heatmap(ready) => (&ready.recording, None, ready.request),
            ServerMessage::Error {
                recording: Some(recording),
                seq,
                request,
                ..
            } => (recording, *seq, *request),
            _ => return false,
        };
        if self.recording.as_ref() != Some(recording) {
            return false;
        }
        match (self.seq, self.request) {
            (Some(own_seq), _) => seq == Some(own_seq),
            (None, Some(own_request)) => seq.is_none() && request == Some(own_request),
            (None, None) => false,
        }
    }
}

/// Batches and numbered Generates written on the current link and not answered yet, in the
/// order they were sent.
///
/// Shared by the writer (which adds) and the reply reader (which removes). Bounded in
/// bytes by `--buffer-bytes`, like the backlog it is returned to: past it the oldest entry
/// is no longer tracked, which costs nothing but time, because the page keeps batches until
/// acknowledged and resends a Generate it never hears about.
#[derive(Debug, Default)]
struct Unanswered {
    items: VecDeque<Outbound>,
    bytes: usize,
}

impl Unanswered {
    /// Notes a message just written to the renderer, if it expects an answer.
    fn sent(&mut self, outbound: Outbound, max_bytes: usize) {
        if !outbound.awaits_answer() || max_bytes == 0 {
            return;
        }
        self.bytes += outbound.frame.len();
        self.items.push_back(outbound);
        while self.bytes > max_bytes {
            let Some(oldest) = self.items.pop_front() else {
                break;
            };
            self.bytes -= oldest.frame.len();
            debug!(
                conn = oldest.conn,
                "unanswered messages over --buffer-bytes; the oldest is left to the page's resend"
            );
        }
    }

    /// Forgets the message `msg` answers, if one is tracked. Answers mostly come in the
    /// order of their requests, so the search usually ends at the front.
    fn answered(&mut self, conn: ConnId, msg: &ServerMessage) {
        let position = self
            .items
            .iter()
            .position(|outbound| outbound.is_answered_by(conn, msg));
        if let Some(outbound) = position.and_then(|idx| self.items.remove(idx)) {
            self.bytes -= outbound.frame.len();
        }
    }

    /// Everything still unanswered, oldest first, leaving this empty.
    fn take(&mut self) -> VecDeque<Outbound> {
        self.bytes = 0;
        std::mem::take(&mut self.items)
    }
}

type RendererSocket = WebSocketStream<netkit::tls::ClientStream>;

/// Keeps the renderer link up until shutdown.
pub(crate) async fn run_upstream(
    ctx: Arc<Context>,
    mut queue: mpsc::Receiver<Outbound>,
    mut events: mpsc::Receiver<EventsOutbound>,
    mut shutdown: Shutdown,
) {
    let config = &ctx.config;
    let mut backoff = Backoff::new(
        Duration::from_millis(config.backoff_initial_ms),
        Duration::from_millis(config.backoff_max_ms),
    );
    let mut backlog = Backlog::new(config.buffer_bytes);
    ctx.hub
        .metrics
        .backlog_limit_bytes
        .set(i64::try_from(config.buffer_bytes).unwrap_or(i64::MAX));
    let mut failures_in_a_row = 0u32;
    // The link starts out `connecting`; once lost it stays `disconnected` through the
    // retries (no amber/red flicker on every attempt) until it is `connected` again.
    loop {
        let connecting = connect(&ctx);
        tokio::pin!(connecting);
        let connected = loop {
            tokio::select! {
                connected = &mut connecting => break connected,
                outbound = queue.recv() => match outbound {
                    Some(outbound) => backlog.push(&ctx, outbound),
                    None => return,
                },
                Some(outbound) = events.recv() => refuse_events(outbound),
                _ = shutdown.wait() => return,
            }
        };
        match connected {
            Ok(socket) => {
                backoff.reset();
                failures_in_a_row = 0;
                ctx.hub.set_link_state(LinkState::Connected);
                info!(renderer = %config.renderer, replaying = backlog.len(), "renderer link up");
                let why = pump(
                    &ctx,
                    socket,
                    &mut queue,
                    &mut events,
                    &mut backlog,
                    &mut shutdown,
                )
                .await;
                if shutdown.is_started() {
                    break;
                }
                warn!(renderer = %config.renderer, cause = %why, "renderer link lost");
            }
            Err(err) => {
                failures_in_a_row += 1;
                // One line when the renderer goes missing, then quiet until it is back.
                if failures_in_a_row == 1 {
                    warn!(renderer = %config.renderer, cause = %format!("{err:#}"), "cannot reach the renderer; retrying");
                } else {
                    debug!(renderer = %config.renderer, cause = %format!("{err:#}"), "renderer still unreachable");
                }
            }
        }
        ctx.hub.set_link_state(LinkState::Disconnected);
        ctx.hub.forget_analytics();
        let sleep = tokio::time::sleep(backoff.next_delay());
        tokio::pin!(sleep);
        loop {
            tokio::select! {
                () = &mut sleep => break,
                _ = shutdown.wait() => return,
                outbound = queue.recv() => match outbound {
                    Some(outbound) => backlog.push(&ctx, outbound),
                    None => return,
                },
                Some(outbound) = events.recv() => refuse_events(outbound),
            }
        }
    }
}

/// Page messages held while the renderer is away, replayed in order when it is back.
///
/// Bounded in bytes (`--buffer-bytes`); a message that does not fit is answered `busy`, so
/// the page keeps it and resends later. Nothing is dropped silently.
struct Backlog {
    items: VecDeque<Outbound>,
    bytes: usize,
    max_bytes: usize,
}

impl Backlog {
    fn new(max_bytes: usize) -> Self {
        Backlog {
            items: VecDeque::new(),
            bytes: 0,
            max_bytes,
        }
    }

    fn len(&self) -> usize {
        self.items.len()
    }

    /// Holds a message, or tells its page why it cannot.
    fn push(&mut self, ctx: &Context, outbound: Outbound) {
        if self.max_bytes == 0 {
            refuse(
                ctx,
                outbound,
                ErrorCode::RendererUnavailable,
                "the renderer is not connected; the page resends once the link is back".into(),
            );
        } else if self.bytes + outbound.frame.len() > self.max_bytes {
            let message = format!(
                "the relay is holding {} bytes for the renderer (--buffer-bytes); resend later",
                self.bytes
            );
            refuse(ctx, outbound, ErrorCode::Busy, message);
        } else {
            self.bytes += outbound.frame.len();
            self.items.push_back(outbound);
            self.publish(ctx);
        }
    }

    /// Puts back a message whose send failed, ahead of the rest (the limit may be passed
    /// by this one message, which was already accepted once).
    fn push_front(&mut self, ctx: &Context, outbound: Outbound) {
        self.bytes += outbound.frame.len();
        self.items.push_front(outbound);
        self.publish(ctx);
    }

    /// Shows the backlog's size in the metrics.
    fn publish(&self, ctx: &Context) {
        ctx.hub.metrics.backlog_depth.set(self.items.len() as i64);
        ctx.hub.metrics.backlog_bytes.set(self.bytes as i64);
    }

    /// Puts messages the renderer never answered back ahead of the rest, oldest first, so
    /// they are replayed in the order they were first sent.
    fn requeue(&mut self, ctx: &Context, unanswered: VecDeque<Outbound>) {
        for outbound in unanswered.into_iter().rev() {
            self.push_front(ctx, outbound);
        }
    }

    fn pop_front(&mut self, ctx: &Context) -> Option<Outbound> {
        let outbound = self.items.pop_front()?;
        self.bytes -= outbound.frame.len();
        self.publish(ctx);
        Some(outbound)
    }
}

/// Connects, sends `hello` and waits for `welcome`, all within the connect timeout.
async fn connect(ctx: &Context) -> anyhow::Result<RendererSocket> {
    let config = &ctx.config;
    let attempt = async {
        let mut request = config
            .renderer
            .as_str()
            .into_client_request()
            .with_context(|| format!("renderer url {}", config.renderer))?;
        if let Some(token) = &config.token {
            let value = HeaderValue::from_str(&format!("Bearer {token}"))
                .context("token is not a valid header value")?;
            request.headers_mut().insert(AUTHORIZATION, value);
        }
        let ws_config = WebSocketConfig::default()
            .max_message_size(Some(RENDERER_MAX_MESSAGE))
            .max_frame_size(Some(RENDERER_MAX_MESSAGE));
        // `wss://` goes through TLS checked against `--renderer-ca`, `ws://` in clear.
        let stream = ctx.renderer_connector.connect().await?;
        let (mut socket, _) =
            tokio_tungstenite::client_async_with_config(request, stream, Some(ws_config))
                .await
                .context("websocket handshake")?;
        socket
            .send(Message::text(encode(&RelayMessage::Hello {
                v: PROTOCOL_VERSION,
            })))
            .await
            .context("send hello")?;
        loop {
            let frame = socket
                .next()
                .await
                .ok_or_else(|| anyhow!("closed before welcome"))?;
            match frame.context("read welcome")? {
                Message::Text(text) => match decode_renderer(text.as_str()) {
                    Ok(RendererMessage::Welcome { v, limits }) if v == PROTOCOL_VERSION => {
                        ctx.hub.set_renderer_limits(limits);
                        return Ok(socket);
                    }
                    Ok(RendererMessage::Error { code, message }) => {
                        bail!("renderer refused the link: {code}: {message}")
                    }
                    Ok(other) => bail!("expected welcome, got {other:?}"),
                    Err(err) => bail!("bad welcome: {err}"),
                },
                Message::Close(frame) => bail!("closed before welcome: {frame:?}"),
                _ => continue,
            }
        }
    };
    tokio::time::timeout(Duration::from_millis(config.connect_timeout_ms), attempt)
        .await
        .map_err(|_| anyhow!("no welcome within {} ms", config.connect_timeout_ms))?
}

/// Largest message accepted from the renderer (replies are small; this is a safety bound).
const RENDERER_MAX_MESSAGE: usize = 1024 * 1024;

/// Moves frames both ways until the link fails or shutdown starts; returns why it ended.
///
/// Replies are read by a task of their own, so that a long replay of the backlog can
/// never stall on a renderer waiting for its acknowledgements to be read.
async fn pump(
    ctx: &Arc<Context>,
    socket: RendererSocket,
    queue: &mut mpsc::Receiver<Outbound>,
    events: &mut mpsc::Receiver<EventsOutbound>,
    backlog: &mut Backlog,
    shutdown: &mut Shutdown,
) -> String {
    let (mut sink, stream) = socket.split();
    let unanswered = Arc::new(Mutex::new(Unanswered::default()));
    let pending_events = Arc::new(Mutex::new(PendingEvents::default()));
    let mut reader = tokio::spawn(read_replies(
        ctx.clone(),
        stream,
        unanswered.clone(),
        pending_events.clone(),
    ));
    let max_unanswered = ctx.config.buffer_bytes;
    // The renderer pushes analytics only while a dashboard watches; a new link starts
    // with the renderer believing nobody does.
    let mut watched = ctx.hub.watch_watched();
    watched.mark_changed();
    let why = loop {
        let next = async {
            match backlog.pop_front(ctx) {
                Some(outbound) => Some(outbound),
                None => queue.recv().await,
            }
        };
        tokio::select! {
            why = &mut reader => break why.unwrap_or_else(|err| format!("reply reader failed: {err}")),
            Ok(()) = watched.changed() => {
                let on = *watched.borrow_and_update();
                if let Err(err) = sink.send(Message::text(encode(&RelayMessage::Watch { on }))).await {
                    break format!("write failed: {err}");
                }
            }
            Some(outbound) = events.recv() => {
                let EventsOutbound { request, frame, reply } = outbound;
                lock(&pending_events).insert(request, reply);
                if let Err(err) = sink.send(Message::text(frame)).await {
                    // Dropping the reply tells the sender nothing was confirmed.
                    lock(&pending_events).remove(request);
                    break format!("write failed: {err}");
                }
                ctx.hub.metrics.forwarded.inc();
            }
            outbound = next => {
                let Some(mut outbound) = outbound else { break "relay stopping".into() };
                // The renderer would close the whole link with 1009 over one such message,
                // and every page would lose its link; refuse it to its page alone instead.
                if let Some(limit) = ctx.hub.renderer_limits().map(|limits| limits.max_frame_bytes) {
                    if outbound.frame.len() > limit {
                        let message = format!(
                            "message of {} bytes is over the renderer's {limit}-byte limit; send smaller batches",
                            outbound.frame.len()
                        );
                        refuse(ctx, outbound, ErrorCode::TooLarge, message);
                        continue;
                    }
                }
                let frame = std::mem::take(&mut outbound.frame);
                let written = sink.send(Message::text(frame.clone())).await;
                outbound.frame = frame;
                if let Err(err) = written {
                    backlog.push_front(ctx, outbound);
                    break format!("write failed: {err}");
                }
                lock(&unanswered).sent(outbound, max_unanswered);
                ctx.hub.metrics.forwarded.inc();
            }
            _ = shutdown.wait() => {
                let close = CloseFrame { code: CloseCode::Away, reason: "relay shutting down".into() };
                let _ = sink.send(Message::Close(Some(close))).await;
                break "relay stopping".into();
            }
        }
    };
    reader.abort();
    // Event requests in flight get no confirmation from this link: their senders hear 503
    // and resend, which the renderer's de-duplication makes harmless if they were stored.
    lock(&pending_events).clear();
    let unanswered = lock(&unanswered).take();
    if !unanswered.is_empty() && !shutdown.is_started() {
        info!(
            messages = unanswered.len(),
            "renderer link lost with messages unanswered; replaying them when it is back"
        );
        backlog.requeue(ctx, unanswered);
    }
    why
}

/// Reads the renderer's frames and routes each reply; returns why the link ended.
async fn read_replies(
    ctx: Arc<Context>,
    mut stream: SplitStream<RendererSocket>,
    unanswered: Arc<Mutex<Unanswered>>,
    pending_events: Arc<Mutex<PendingEvents>>,
) -> String {
    loop {
        match stream.next().await {
            Some(Ok(Message::Text(text))) => {
                route(&ctx, text.as_str(), &unanswered, &pending_events)
            }
            Some(Ok(Message::Close(frame))) => {
                return format!("renderer closed the link: {frame:?}")
            }
            Some(Ok(_)) => {}
            Some(Err(err)) => return format!("read failed: {err}"),
            None => return "renderer closed the connection".into(),
        }
    }
}

/// Routes one renderer frame to the page it answers.
fn route(
    ctx: &Context,
    text: &str,
    unanswered: &Mutex<Unanswered>,
    pending_events: &Mutex<PendingEvents>,
) {
    match decode_renderer(text) {
        Ok(RendererMessage::Reply { conn, msg }) => {
            lock(unanswered).answered(conn, &msg);
            ctx.hub.deliver(conn, &msg);
        }
        Ok(RendererMessage::EventsStored { request, accepted }) => {
            lock(pending_events).answer(request, EventsAnswer::Stored { accepted });
        }
        Ok(RendererMessage::EventsRefused {
            request,
            code,
            message,
            retry_after_s,
        }) => {
            let answer = EventsAnswer::Refused {
                code,
                message,
                retry_after_s,
            };
            lock(pending_events).answer(request, answer);
        }
        Ok(RendererMessage::Analytics(update)) => {
            ctx.hub.deliver_analytics(update, ctx.config.spike_factor)
        }
        Ok(RendererMessage::Error { code, message }) => {
            warn!(%code, %message, "renderer reported a link error");
        }
        Ok(RendererMessage::Welcome { .. }) => {}
        Err(err) => warn!(cause = %err, "renderer sent a frame the relay cannot read"),
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Event requests written to the current link, by the relay's request number, waiting for
/// the renderer's answer. Bounded by the senders: each HTTP request has at most one entry,
/// and the connection limits bound the requests.
#[derive(Debug, Default)]
struct PendingEvents {
    replies: HashMap<u64, oneshot::Sender<EventsAnswer>>,
}

impl PendingEvents {
    fn insert(&mut self, request: u64, reply: oneshot::Sender<EventsAnswer>) {
        self.replies.insert(request, reply);
    }

    fn remove(&mut self, request: u64) {
        self.replies.remove(&request);
    }

    /// Passes the renderer's answer to the waiting sender (gone if it timed out).
    fn answer(&mut self, request: u64, answer: EventsAnswer) {
        match self.replies.remove(&request) {
            Some(reply) => {
                let _ = reply.send(answer);
            }
            None => debug!(request, "an answer for an event request nobody waits for"),
        }
    }

    /// Drops every waiting sender: each hears that the link was lost.
    fn clear(&mut self) {
        self.replies.clear();
    }
}

/// Answers an event request that arrived while no renderer link is up.
fn refuse_events(outbound: EventsOutbound) {
    let _ = outbound.reply.send(EventsAnswer::not_connected());
}

/// Answers a message that cannot reach the renderer now, and counts it.
fn refuse(ctx: &Context, outbound: Outbound, code: ErrorCode, message: String) {
    ctx.hub.metrics.errors.record(code);
    ctx.hub.deliver(
        outbound.conn,
        &ServerMessage::Error {
            code,
            message,
            recording: outbound.recording,
            seq: outbound.seq,
            request: outbound.request,
        },
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(text: &str) -> RecordingId {
        RecordingId::try_from(text).unwrap()
    }

    fn outbound(conn: ConnId, seq: Option<u64>, request: Option<u64>) -> Outbound {
        Outbound {
            conn,
            frame: format!("{conn}-{seq:?}-{request:?}"),
            recording: Some(id("r-1")),
            seq,
            request,
        }
    }

    fn generate_error(request: Option<u64>) -> ServerMessage {
        ServerMessage::Error {
            code: ErrorCode::NoPoints,
            message: "none".into(),
            recording: Some(id("r-1")),
            seq: None,
            request,
        }
    }

    #[test]
    fn answers_remove_exactly_what_they_answer() {
        let mut unanswered = Unanswered::default();
        unanswered.sent(outbound(1, Some(0), None), 1 << 20);
        unanswered.sent(outbound(1, None, Some(7)), 1 << 20);
        unanswered.sent(outbound(2, Some(0), None), 1 << 20);
        // Untracked: neither a batch nor a numbered Generate.
        unanswered.sent(outbound(1, None, None), 1 << 20);
        assert_eq!(unanswered.items.len(), 3);

        let ack = ServerMessage::Ack {
            recording: id("r-1"),
            seq: 0,
            n_points: 1,
        };
        unanswered.answered(2, &ack);
        unanswered.answered(1, &generate_error(Some(8)));
        unanswered.answered(1, &generate_error(None));
        assert_eq!(
            unanswered.items.len(),
            2,
            "only conn 2's batch was answered"
        );
        unanswered.answered(1, &generate_error(Some(7)));
        let left: Vec<_> = unanswered.take().into_iter().map(|o| o.seq).collect();
        assert_eq!(left, vec![Some(0)]);
        assert_eq!(unanswered.bytes, 0);
    }

    #[test]
    fn the_oldest_entries_leave_past_the_byte_bound() {
        let mut unanswered = Unanswered::default();
        for seq in 0..10 {
            unanswered.sent(outbound(1, Some(seq), None), 40);
        }
        assert!(unanswered.bytes <= 40);
        assert_eq!(unanswered.items.back().and_then(|o| o.seq), Some(9));
    }
}
