//! One relay connection: decode its envelopes, apply them to the store, answer each.
//!
//! The socket is split into a reader (this task) and a writer task fed by a bounded queue.
//! Batches are applied inline (they take microseconds); renders run on blocking threads
//! behind a semaphore, and their answers join the same queue when they finish.
//!
//! On shutdown the link drains: it stops reading, waits for its renders (up to
//! `--drain-ms`) so their answers go out, answers any still unfinished with
//! `renderer_unavailable`, and only then closes with 1001. A page's Generate therefore
//! always gets an answer from a renderer that stops, and the relay replays what it never
//! read.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use futures_util::{SinkExt, StreamExt};
use heatmap::grid::NormPoint;
use heatmap::render::{preview_cells, render_png, RenderInput, RenderSettings};
use netkit::ws::{Inbound, ServerSocket};
use netkit::Shutdown;
use protocol::analytics::TrackedEvent;
use protocol::{
    decode_relay, encode, ConnId, Error, ErrorCode, Generate, HeatmapReady, LinkLimits,
    PageMessage, PreviewFrame, RecordingId, RelayMessage, RendererMessage, ServerMessage,
    PROTOCOL_VERSION,
};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;
use tracing::{debug, error, info, warn};

use crate::context::Context;
use crate::output::{local_stamp, write_heatmap};
use crate::push::push_analytics;
use crate::requests::RequestKey;
use crate::store::{lock, unknown, BatchOutcome};

/// Frames waiting to be written to one relay.
///
/// Acks are a few dozen bytes; 1024 absorbs a burst while the writer catches up. When it
/// is full the reader waits, so the relay's socket fills and TCP pushes back on it.
const LINK_QUEUE: usize = 1024;

/// Serves one relay until it disconnects or the renderer shuts down.
pub(crate) async fn serve_link(
    socket: ServerSocket,
    peer: SocketAddr,
    ctx: Arc<Context>,
    mut shutdown: Shutdown,
) {
    info!(%peer, "relay connected");
    ctx.metrics.links_open.inc();
    ctx.metrics.links_total.inc();
    let frames_out = ctx.metrics.frames_out.clone();
    let (mut sink, mut stream) = socket.split();
    let (tx, mut rx) = mpsc::channel::<Message>(LINK_QUEUE);
    let writer = tokio::spawn(async move {
        while let Some(msg) = rx.recv().await {
            let closing = matches!(msg, Message::Close(_));
            if let Err(err) = sink.send(msg).await {
                debug!(cause = %err, "relay link write failed");
                break;
            }
            frames_out.inc();
            if closing {
                break;
            }
        }
    });

    let (give_up, _) = watch::channel(false);
    let (watching, watching_rx) = watch::channel(false);
    let pusher = tokio::spawn(push_analytics(ctx.clone(), tx.clone(), watching_rx));
    let mut link = Link {
        ctx: ctx.clone(),
        tx: tx.clone(),
        greeted: false,
        shutdown: shutdown.clone(),
        renders: JoinSet::new(),
        ingests: JoinSet::new(),
        give_up,
        watching,
    };
    loop {
        let frame = tokio::select! {
            frame = stream.next() => frame,
            _ = shutdown.wait() => {
                link.drain(&peer).await;
                let _ = tx.send(close(CloseCode::Away, "renderer shutting down")).await;
                break;
            }
        };
        match Inbound::sort(frame) {
            Inbound::Ended => break,
            Inbound::Text(text) => {
                if link.handle_text(text.as_str()).await.is_break() {
                    break;
                }
            }
            Inbound::Binary => {
                link.refuse(Error::new(
                    ErrorCode::BinaryFrame,
                    "only text frames are spoken on this link",
                ))
                .await;
            }
            // Pings, pongs and the relay's Close are answered by tungstenite on the next
            // read, which ends the stream after a Close.
            Inbound::Control => {}
            Inbound::Violation(violation) => {
                ctx.metrics.errors.record(violation.error);
                warn!(%peer, code = u16::from(violation.code), why = violation.reason, cause = %violation.cause, "relay broke the websocket protocol (or --max-frame-bytes); closing the link");
                let _ = tx.send(violation.close_message()).await;
                break;
            }
        }
    }
    // Renders of a link that closed keep going: their images are remembered by request,
    // so the relay's replay on its next link gets the answer without a second render.
    link.renders.detach_all();
    // Event requests of a closed link finish their commit; their answers have nowhere to
    // go, and the relay has told their senders to resend (numbered events count once).
    link.ingests.detach_all();
    pusher.abort();
    drop(link);
    drop(tx);
    let _ = writer.await;
    ctx.metrics.links_open.dec();
    info!(%peer, "relay disconnected");
}

/// A close frame with a code and reason.
pub(crate) fn close(code: CloseCode, reason: &'static str) -> Message {
    Message::Close(Some(CloseFrame {
        code,
        reason: reason.into(),
    }))
}

/// How long, after the drain budget ran out, the given-up renders may take to queue their
/// `renderer_unavailable` answers (they only send a frame).
const GIVE_UP_GRACE: Duration = Duration::from_millis(500);

/// The state of one relay link while its frames are handled.
struct Link {
    ctx: Arc<Context>,
    tx: mpsc::Sender<Message>,
    greeted: bool,
    shutdown: Shutdown,
    /// This link's Generate tasks, so shutdown can wait for their answers to be queued.
    renders: JoinSet<()>,
    /// Set when the drain budget runs out: unfinished renders answer `renderer_unavailable`.
    give_up: watch::Sender<bool>,
    /// This link's event requests waiting for their commit, so shutdown can send their
    /// answers before it closes the link.
    ingests: JoinSet<()>,
    /// Whether the relay has a dashboard watching, for the analytics pusher.
    watching: watch::Sender<bool>,
}

impl Link {
    /// Waits for this link's renders to queue their answers, up to `--drain-ms`; then tells
    /// the rest to answer `renderer_unavailable`, so every Generate read gets an answer.
    async fn drain(&mut self, peer: &SocketAddr) {
        let budget = Duration::from_millis(self.ctx.config.drain_ms);
        if !self.ingests.is_empty() {
            // Commits take milliseconds; answering them spares the senders a resend.
            let ingests = &mut self.ingests;
            let all_done = async { while ingests.join_next().await.is_some() {} };
            if tokio::time::timeout(budget, all_done).await.is_err() {
                warn!(%peer, requests = self.ingests.len(), "event commits did not finish within --drain-ms; their senders will resend");
            }
        }
        if self.renders.is_empty() {
            return;
        }
        info!(%peer, renders = self.renders.len(), "finishing renders before closing the link");
        let renders = &mut self.renders;
        let all_done = async { while renders.join_next().await.is_some() {} };
        if tokio::time::timeout(budget, all_done).await.is_ok() {
            return;
        }
        warn!(%peer, renders = self.renders.len(), budget_ms = self.ctx.config.drain_ms, "renders did not finish within --drain-ms; answering renderer_unavailable");
        self.give_up.send_replace(true);
        let renders = &mut self.renders;
        let answered = async { while renders.join_next().await.is_some() {} };
        let _ = tokio::time::timeout(GIVE_UP_GRACE, answered).await;
    }

    /// Handles one text frame; `Break` ends the link.
    async fn handle_text(&mut self, text: &str) -> std::ops::ControlFlow<()> {
        use std::ops::ControlFlow;
        self.ctx.metrics.frames_in.inc();
        self.ctx.metrics.bytes_in.inc_by(text.len() as u64);
        let msg = match decode_relay(text, &self.ctx.limits) {
            Ok(msg) => msg,
            Err(err) => {
                self.refuse(err).await;
                return ControlFlow::Continue(());
            }
        };
        match msg {
            RelayMessage::Hello { v } if v == PROTOCOL_VERSION => {
                self.greeted = true;
                self.send(&RendererMessage::Welcome {
                    v: PROTOCOL_VERSION,
                    limits: Some(LinkLimits {
                        max_frame_bytes: self.ctx.config.max_frame_bytes,
                        max_points_per_batch: self.ctx.config.max_points_per_batch,
                    }),
                })
                .await;
                ControlFlow::Continue(())
            }
            RelayMessage::Hello { v } => {
                self.refuse(Error::new(
                    ErrorCode::UnsupportedVersion,
                    format!("renderer speaks protocol {PROTOCOL_VERSION}, relay sent {v}"),
                ))
                .await;
                let _ = self
                    .tx
                    .send(close(CloseCode::Policy, "unsupported protocol version"))
                    .await;
                ControlFlow::Break(())
            }
            RelayMessage::Page { .. } | RelayMessage::Events { .. } if !self.greeted => {
                self.refuse(Error::new(
                    ErrorCode::UnsupportedVersion,
                    "send hello with the protocol version before any page message",
                ))
                .await;
                ControlFlow::Continue(())
            }
            RelayMessage::Page { conn, msg } => {
                self.handle_page(conn, msg).await;
                ControlFlow::Continue(())
            }
            RelayMessage::Events { request, events } => {
                self.handle_events(request, events).await;
                ControlFlow::Continue(())
            }
            RelayMessage::Watch { on } => {
                self.watching.send_replace(on);
                ControlFlow::Continue(())
            }
        }
    }

    /// Checks one request's events and hands them to the store's writer; the answer goes
    /// out when the commit is done, while this link reads on (so requests group-commit).
    async fn handle_events(&mut self, request: u64, events: Vec<TrackedEvent>) {
        let invalid = events
            .iter()
            .enumerate()
            .find_map(|(index, event)| event.validate().err().map(|why| (index, why)));
        if let Some((index, why)) = invalid {
            self.ctx.metrics.errors.record(ErrorCode::BadField);
            self.send(&RendererMessage::EventsRefused {
                request,
                code: ErrorCode::BadField,
                message: format!("event {index}: {why}"),
                retry_after_s: None,
            })
            .await;
            return;
        }
        while self.ingests.try_join_next().is_some() {}
        let ctx = self.ctx.clone();
        let tx = self.tx.clone();
        self.ingests.spawn(async move {
            let answer = match ctx.ingest.submit(events).await {
                Ok(accepted) => RendererMessage::EventsStored { request, accepted },
                Err(err) => RendererMessage::EventsRefused {
                    request,
                    code: if err.busy {
                        ErrorCode::Busy
                    } else {
                        ErrorCode::StorageFailed
                    },
                    message: if err.retryable {
                        format!(
                            "the renderer cannot store events now ({}); nothing was stored, send them again later",
                            err.message
                        )
                    } else {
                        format!("the renderer did not store these events: {}", err.message)
                    },
                    retry_after_s: err.retryable.then_some(1),
                },
            };
            send_frame(&tx, &answer).await;
        });
    }

    /// Applies one page message and answers it.
    async fn handle_page(&mut self, conn: ConnId, msg: PageMessage) {
        #[cfg(feature = "cluster")]
        let msg = match self.ctx.recording_db.clone() {
            Some(db) => match self.write_to_database(db, conn, msg).await {
                Some(msg) => msg,
                None => return,
            },
            None => msg,
        };
        let store = &self.ctx.store;
        let reply = match msg {
            // The relay answers these itself; forwarded ones need no answer.
            PageMessage::Hello { .. }
            | PageMessage::Watch
            | PageMessage::Cursor { .. }
            | PageMessage::RequestDetailedStats { .. }
            | PageMessage::TrackDashboardAction { .. }
            | PageMessage::SetName { .. } => return,
            PageMessage::Start {
                recording,
                viewport,
            } => match store.start(&recording, viewport) {
                Ok(()) => ServerMessage::Started { recording },
                Err(err) => self.page_error(err, Some(recording), None),
            },
            PageMessage::Points(batch) => {
                let metrics = &self.ctx.metrics;
                let n_points = batch.points.len() as u64;
                match store.add_batch(&batch) {
                    Ok(outcome) => {
                        if let BatchOutcome::Added { .. } = outcome {
                            metrics.batches_stored.inc();
                            metrics.points_stored.inc_by(n_points);
                        } else {
                            metrics.batches_duplicate.inc();
                        }
                        ServerMessage::Ack {
                            recording: batch.recording,
                            seq: batch.seq,
                            n_points: outcome.n_points(),
                        }
                    }
                    Err(err) => {
                        metrics.points_rejected.inc_by(n_points);
                        self.page_error(err, Some(batch.recording), Some(batch.seq))
                    }
                }
            }
            PageMessage::Stop { recording } => match store.stop(&recording) {
                Ok(n_points) => ServerMessage::Stopped {
                    recording,
                    n_points,
                },
                Err(err) => self.page_error(err, Some(recording), None),
            },
            PageMessage::Generate(generate) => {
                // Reap finished renders, so the set holds only those in flight.
                while self.renders.try_join_next().is_some() {}
                let ctx = self.ctx.clone();
                let tx = self.tx.clone();
                let shutdown = self.shutdown.clone();
                let mut give_up = self.give_up.subscribe();
                self.renders.spawn(async move {
                    let recording = generate.recording.clone();
                    let request = generate.request;
                    let given_up = async {
                        // A closed channel means the link is gone, never "give up".
                        if give_up.wait_for(|given_up| *given_up).await.is_err() {
                            std::future::pending::<()>().await;
                        }
                    };
                    let reply = tokio::select! {
                        reply = answer_generate(&ctx, generate) => reply,
                        () = given_up => {
                            ctx.metrics.errors.record(ErrorCode::RendererUnavailable);
                            let err = Error::new(
                                ErrorCode::RendererUnavailable,
                                "the renderer stopped before this render finished; resend once the link is back",
                            );
                            error_reply(err, recording, request)
                        }
                    };
                    send_frame(&tx, &RendererMessage::Reply { conn, msg: reply }).await;
                    drop(shutdown);
                });
                return;
            }
            PageMessage::Preview(preview) => {
                // Previews are best-effort: when every preview slot is busy, say so at once
                // rather than queue frames that would be stale when they arrive.
                let Ok(permit) = self.ctx.preview_permits.clone().try_acquire_owned() else {
                    let err =
                        Error::new(ErrorCode::Busy, "preview slots are busy; ask again later");
                    let reply = self.page_error(err, Some(preview.recording), None);
                    self.send(&RendererMessage::Reply { conn, msg: reply })
                        .await;
                    return;
                };
                let ctx = self.ctx.clone();
                let tx = self.tx.clone();
                let shutdown = self.shutdown.clone();
                tokio::spawn(async move {
                    let recording = preview.recording.clone();
                    let job_ctx = ctx.clone();
                    let result =
                        tokio::task::spawn_blocking(move || preview_frame(&job_ctx, preview)).await;
                    drop(permit);
                    let reply = match result {
                        Ok(Ok(frame)) => ServerMessage::Preview(frame),
                        Ok(Err(err)) => {
                            ctx.metrics.errors.record(err.code);
                            error_reply(err, recording, None)
                        }
                        Err(join_err) => error_reply(
                            Error::new(
                                ErrorCode::RenderFailed,
                                format!("preview task failed: {join_err}"),
                            ),
                            recording,
                            None,
                        ),
                    };
                    send_frame(&tx, &RendererMessage::Reply { conn, msg: reply }).await;
                    drop(shutdown);
                });
                return;
            }
        };
        self.send(&RendererMessage::Reply { conn, msg: reply })
            .await;
    }

    /// Cluster mode: starts, batches and stops go to the shared database's writer, and
    /// their answers go out once it has committed, while this link reads on (so batches of
    /// many pages are committed together). Other messages are handed back.
    #[cfg(feature = "cluster")]
    async fn write_to_database(
        &mut self,
        db: Arc<crate::recording_db::RecordingDb>,
        conn: ConnId,
        msg: PageMessage,
    ) -> Option<PageMessage> {
        use crate::recording_db::{Write, Written};
        let (write, recording, prepared) = match msg {
            PageMessage::Start {
                recording,
                viewport,
            } => {
                // The local copy exists too, for previews.
                if let Err(err) = self.ctx.store.start(&recording, viewport) {
                    let reply = self.page_error(err, Some(recording), None);
                    self.send(&RendererMessage::Reply { conn, msg: reply })
                        .await;
                    return None;
                }
                let write = Write::Start {
                    recording: recording.clone(),
                    viewport,
                };
                (write, recording, None)
            }
            PageMessage::Points(batch) => {
                let n_points = batch.points.len() as u64;
                let stored = match self.ctx.store.prepare_batch(&batch) {
                    Ok(Some(stored)) => stored,
                    // This copy holds it, so the database does (a copy only takes what the
                    // database committed).
                    Ok(None) => {
                        self.ctx.metrics.batches_duplicate.inc();
                        let n_points = self
                            .ctx
                            .store
                            .get(&batch.recording)
                            .map_or(0, |recording| lock(&recording).n_points());
                        let reply = ServerMessage::Ack {
                            recording: batch.recording,
                            seq: batch.seq,
                            n_points,
                        };
                        self.send(&RendererMessage::Reply { conn, msg: reply })
                            .await;
                        return None;
                    }
                    Err(err) => {
                        self.ctx.metrics.points_rejected.inc_by(n_points);
                        let reply = self.page_error(err, Some(batch.recording), Some(batch.seq));
                        self.send(&RendererMessage::Reply { conn, msg: reply })
                            .await;
                        return None;
                    }
                };
                let Ok(seq) = i64::try_from(batch.seq) else {
                    self.ctx
                        .store
                        .finish_batch(&batch.recording, &stored, false);
                    let err = Error::new(ErrorCode::OutOfRange, "seq is over 2^63");
                    let reply = self.page_error(err, Some(batch.recording), Some(batch.seq));
                    self.send(&RendererMessage::Reply { conn, msg: reply })
                        .await;
                    return None;
                };
                let write = Write::batch(batch.recording.clone(), batch.viewport, seq, &stored);
                (write, batch.recording, Some(stored))
            }
            PageMessage::Stop { recording } => {
                let write = Write::Stop {
                    recording: recording.clone(),
                };
                (write, recording, None)
            }
            other => return Some(other),
        };
        while self.ingests.try_join_next().is_some() {}
        let ctx = self.ctx.clone();
        let tx = self.tx.clone();
        self.ingests.spawn(async move {
            let outcome = db.submit(write).await;
            let metrics = &ctx.metrics;
            let seq = prepared.as_ref().map(|stored| stored.seq);
            if let Some(stored) = &prepared {
                let stored_new = matches!(outcome, Ok(Written::Batch { new: true, .. }));
                ctx.store.finish_batch(&recording, stored, stored_new);
            }
            let reply = match outcome {
                Ok(Written::Started) => ServerMessage::Started { recording },
                Ok(Written::Batch { new, n_points }) => {
                    if new {
                        metrics.batches_stored.inc();
                        if let Some(stored) = &prepared {
                            metrics.points_stored.inc_by(stored.n_points());
                        }
                    } else {
                        metrics.batches_duplicate.inc();
                    }
                    ServerMessage::Ack {
                        recording,
                        // ok: a batch write always comes with its prepared batch.
                        seq: seq.unwrap_or_default(),
                        n_points,
                    }
                }
                Ok(Written::Stopped { n_points }) => {
                    if let Some(held) = ctx.store.get(&recording) {
                        lock(&held).stopped = true;
                    }
                    ServerMessage::Stopped {
                        recording,
                        n_points,
                    }
                }
                Ok(Written::Unknown) => {
                    let err = unknown(&recording);
                    metrics.errors.record(err.code);
                    error_reply(err, recording, None)
                }
                Err(err) => {
                    metrics.errors.record(err.code);
                    if let Some(stored) = &prepared {
                        metrics.points_rejected.inc_by(stored.n_points());
                    }
                    ServerMessage::Error {
                        code: err.code,
                        message: err.message,
                        recording: Some(recording),
                        seq,
                        request: None,
                    }
                }
            };
            send_frame(&tx, &RendererMessage::Reply { conn, msg: reply }).await;
        });
        None
    }

    /// Counts an error and turns it into a page-level error message.
    fn page_error(
        &self,
        err: Error,
        recording: Option<RecordingId>,
        seq: Option<u64>,
    ) -> ServerMessage {
        self.ctx.metrics.errors.record(err.code);
        ServerMessage::Error {
            code: err.code,
            message: err.message,
            recording,
            seq,
            request: None,
        }
    }

    /// Counts an error with the link itself and tells the relay.
    async fn refuse(&self, err: Error) {
        self.ctx.metrics.errors.record(err.code);
        debug!(code = %err.code, message = %err.message, "refused a frame from the relay");
        self.send(&RendererMessage::Error {
            code: err.code,
            message: err.message,
        })
        .await;
    }

    async fn send(&self, msg: &RendererMessage) {
        send_frame(&self.tx, msg).await;
    }
}

async fn send_frame(tx: &mpsc::Sender<Message>, msg: &RendererMessage) {
    // An error means the writer is gone because the link closed; nobody is left to tell.
    let _ = tx.send(Message::text(encode(msg))).await;
}

fn error_reply(err: Error, recording: RecordingId, request: Option<u64>) -> ServerMessage {
    ServerMessage::Error {
        code: err.code,
        message: err.message,
        recording: Some(recording),
        seq: None,
        request,
    }
}

/// Width of live preview frames; the height follows the image's aspect ratio.
const PREVIEW_WIDTH: u32 = 192;

/// Computes a preview frame, accumulating under the recording's lock (a small grid, a few
/// milliseconds even for a million points) rather than copying the points out.
fn preview_frame(ctx: &Context, preview: protocol::Preview) -> Result<PreviewFrame, Error> {
    ctx.metrics.previews.inc();
    let settings = &ctx.render_settings;
    let kind = preview.kind.unwrap_or(settings.kind);
    let settings = RenderSettings {
        kind,
        ..settings.clone()
    };
    let width = PREVIEW_WIDTH;
    let height = (PREVIEW_WIDTH * settings.height / settings.width).max(1);
    let recording = ctx
        .store
        .get(&preview.recording)
        .ok_or_else(|| unknown(&preview.recording))?;
    let recording = lock(&recording);
    let input = RenderInput {
        moves: &recording.moves,
        clicks: &recording.clicks,
        move_counts: &[],
        click_counts: &[],
        duration_ms: recording.duration_ms,
        started: "",
    };
    let n_points = input.n_shown(kind) as u64;
    let cells = if n_points == 0 {
        vec![0; (width * height) as usize]
    } else {
        preview_cells(&input, &settings, width, height)
    };
    Ok(PreviewFrame {
        recording: preview.recording,
        width,
        height,
        n_points,
        cells,
    })
}

/// Answers a Generate: a repeat of a numbered request gets the first one's answer (waiting
/// for it if it is still rendering); anything else renders.
pub(crate) async fn answer_generate(ctx: &Arc<Context>, generate: Generate) -> ServerMessage {
    let Some(request) = generate.request else {
        return generate_heatmap(ctx, generate).await;
    };
    let key: RequestKey = (generate.recording.clone(), request);
    let cell = ctx.generates.cell(&key);
    let reply = cell
        .get_or_init(|| generate_heatmap(ctx, generate))
        .await
        .clone();
    if !matches!(reply, ServerMessage::Heatmap(_)) {
        ctx.generates.forget(&key, &cell);
    }
    reply
}

/// Renders a recording on a blocking thread and writes the PNG; the answer for the page.
async fn generate_heatmap(ctx: &Arc<Context>, generate: Generate) -> ServerMessage {
    let asked = Instant::now();
    let permit = ctx.render_permits.acquire().await;
    let job_ctx = ctx.clone();
    let recording = generate.recording.clone();
    let request = generate.request;
    let result = tokio::task::spawn_blocking(move || {
        let started = Instant::now();
        let _running = RunningRender::new(&job_ctx);
        let result = render_recording(&job_ctx, generate);
        (result, started, Instant::now())
    })
    .await;
    drop(permit);
    let result = result.map(|(result, started, finished)| {
        debug!(
            hand_off_ms = ms(started - asked),
            hand_back_ms = ms(finished.elapsed()),
            "generate hand-off"
        );
        result
    });
    let result = result.unwrap_or_else(|join_err| {
        Err(Error::new(
            ErrorCode::RenderFailed,
            format!("render task failed: {join_err}"),
        ))
    });
    match result {
        Ok(ready) => {
            info!(name = %ready.name, n_points = ready.n_points, ms = ready.render_ms, "heatmap written");
            ServerMessage::Heatmap(ready)
        }
        Err(err) => {
            ctx.metrics.errors.record(err.code);
            if err.code == ErrorCode::RenderFailed {
                error!(recording = %recording, cause = %err.message, "render failed");
            }
            error_reply(err, recording, request)
        }
    }
}

/// A duration in milliseconds, for the phase split logged at debug level.
fn ms(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}

/// Counts a render in `renders_running` for as long as it lives, even if the render panics.
struct RunningRender<'a>(&'a Context);

impl<'a> RunningRender<'a> {
    fn new(ctx: &'a Context) -> Self {
        ctx.metrics.renders_running.inc();
        RunningRender(ctx)
    }
}

impl Drop for RunningRender<'_> {
    fn drop(&mut self) {
        self.0.metrics.renders_running.dec();
    }
}

/// A recording as a render needs it.
struct RecordingPoints {
    moves: Arc<Vec<NormPoint>>,
    clicks: Arc<Vec<NormPoint>>,
    duration_ms: u32,
    created: SystemTime,
}

/// The recording's points (moves, clicks), duration and start, taken from the store by
/// reference count so ingest is not held up.
///
/// In cluster mode the shared database is the truth: its row gives the duration and the
/// start (so every renderer draws the same caption), and its batches the points, read in
/// `(recording, seq)` order so every renderer sums them in the same order and draws the
/// same pixels.
fn recording_points(ctx: &Context, id: &RecordingId) -> Result<RecordingPoints, Error> {
    #[cfg(feature = "cluster")]
    if let Some(db) = &ctx.recording_db {
        let unavailable = |err: ::analytics::StoreError| {
            error!(recording = %id, cause = %err, "cannot read a recording from postgresql");
            Error::new(
                ErrorCode::StorageFailed,
                format!("the renderer cannot read recording {id} now ({err}); ask again later"),
            )
        };
        let row = db
            .row(id)
            .map_err(unavailable)?
            .ok_or_else(|| unknown(id))?;
        // Always the database's points, in its (recording, seq) order: a local copy holds
        // the same points in arrival order, and the sums of a different order can differ
        // in the last bit, which flips a pixel now and then between renderers.
        let (moves, clicks) = db.points(id).map_err(unavailable)?;
        let (moves, clicks) = (Arc::new(moves), Arc::new(clicks));
        return Ok(RecordingPoints {
            moves,
            clicks,
            duration_ms: row.duration_ms,
            created: row.created,
        });
    }
    let recording = ctx.store.get(id).ok_or_else(|| unknown(id))?;
    let recording = lock(&recording);
    Ok(RecordingPoints {
        moves: Arc::clone(&recording.moves),
        clicks: Arc::clone(&recording.clicks),
        duration_ms: recording.duration_ms,
        created: recording.created,
    })
}

/// Takes the recording's points (shared, so ingest is not held up), renders and writes them.
fn render_recording(ctx: &Context, generate: Generate) -> Result<HeatmapReady, Error> {
    let started = Instant::now();
    let request = generate.request;
    let id = generate.recording;
    let settings = ctx.render_settings.with_options(&generate.options);
    let n_pixels = u64::from(settings.width) * u64::from(settings.height);
    if settings.pixel_scale > 1.0 && n_pixels > ctx.config.max_image_pixels {
        return Err(Error::new(
            ErrorCode::OutOfRange,
            format!(
                "options.pixel_scale {} makes a {}x{} image, over the renderer's --max-image-pixels {}",
                settings.pixel_scale, settings.width, settings.height, ctx.config.max_image_pixels
            ),
        ));
    }
    let RecordingPoints {
        moves,
        clicks,
        duration_ms,
        created,
    } = recording_points(ctx, &id)?;
    let started_text = chrono::DateTime::<chrono::Local>::from(created)
        .format("%Y-%m-%d %H:%M:%S")
        .to_string();
    let input = RenderInput {
        moves: &moves,
        clicks: &clicks,
        move_counts: &[],
        click_counts: &[],
        duration_ms,
        started: &started_text,
    };
    let render_failed = |err: crate::error::Error| match err {
        crate::error::Error::Render(heatmap::Error::NoPoints(kind)) => {
            let what = match kind {
                protocol::HeatKind::Moves => "pointer moves",
                protocol::HeatKind::Clicks => "clicks",
                protocol::HeatKind::Both => "points",
            };
            Error::new(
                ErrorCode::NoPoints,
                format!("recording {id} has no {what} yet: press Start Recording and move the pointer over the page"),
            )
        }
        other => Error::new(ErrorCode::RenderFailed, other.to_string()),
    };
    let points_taken = Instant::now();
    let rendered = render_png(&input, &settings).map_err(|err| render_failed(err.into()))?;
    let rendered_at = Instant::now();
    let name = write_heatmap(
        &ctx.config.out_dir,
        &local_stamp(chrono::Local::now()),
        &rendered.png,
        ctx.config.fsync,
    )
    .map_err(render_failed)?;
    let timings = &rendered.timings;
    debug!(
        points_ms = ms(points_taken - started),
        accumulate_ms = ms(timings.accumulate),
        smooth_ms = ms(timings.smooth),
        colour_ms = ms(timings.colour),
        encode_ms = ms(timings.encode),
        outside_stages_ms = ms((rendered_at - points_taken).saturating_sub(timings.total())),
        write_ms = ms(rendered_at.elapsed()),
        "generate phases"
    );
    ctx.metrics.renders.inc();
    ctx.metrics
        .render_duration
        .observe(started.elapsed().as_secs_f64());
    Ok(HeatmapReady {
        recording: id,
        name,
        width: settings.width,
        height: settings.height,
        n_points: input.n_shown(settings.kind) as u64,
        render_ms: started.elapsed().as_secs_f64() * 1000.0,
        options: settings.options(),
        request,
    })
}
