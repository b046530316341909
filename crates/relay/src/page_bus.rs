//! A page's recording over the bus (`--bus`, cluster builds only): `start`, `points` and
//! `stop` are published to JetStream and answered once the stream stored them; Generate is
//! a request to the renderer group, answered to the asking page alone.
//!
//! With a bus, recording needs no renderer link: the stream is the backlog, so a page keeps
//! recording (every batch acknowledged) while every renderer is down. A batch's message id
//! is `<recording>/<seq>`, the identity the page gives it, so a resend after a lost `ack`,
//! to this relay or another, is stored once in the stream within its duplicate window, and
//! once in the database after it (`(recording, seq)` is the key there). A refusal is
//! `busy`: the page keeps the batch and resends it.
//!
//! The `ack`'s point count is what this page has had acknowledged by this relay for the
//! recording (the page shows the largest count it heard); the database's own count is
//! the one a heatmap reports.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use protocol::{
    decode_renderer, ConnId, ErrorCode, PageMessage, RecordingId, RendererMessage, ServerMessage,
};
use tracing::{debug, warn};

use crate::bus::{message_id, Bus};
use crate::context::Context;

/// Whether `msg` travels over the bus when the relay has one.
pub(crate) fn travels_on_bus(msg: &PageMessage) -> bool {
    matches!(
        msg,
        PageMessage::Start { .. }
            | PageMessage::Points(_)
            | PageMessage::Stop { .. }
            | PageMessage::Generate(_)
    )
}

/// What one page has had acknowledged for its current recording, for the `ack`'s count.
#[derive(Debug, Default)]
pub(crate) struct RecordedPoints {
    recording: Option<RecordingId>,
    n_points: u64,
}

impl RecordedPoints {
    /// Adds an acknowledged batch's points and returns the recording's total; a new
    /// recording starts the count again (one page records one at a time).
    fn add(&mut self, recording: &RecordingId, n_points: u64) -> u64 {
        if self.recording.as_ref() != Some(recording) {
            self.recording = Some(recording.clone());
            self.n_points = 0;
        }
        self.n_points += n_points;
        self.n_points
    }

    /// The points acknowledged for `recording` (0 for another one).
    fn of(&self, recording: &RecordingId) -> u64 {
        if self.recording.as_ref() == Some(recording) {
            self.n_points
        } else {
            0
        }
    }
}

/// One page's bus state, kept by its session.
#[derive(Debug, Default)]
pub(crate) struct PageBus {
    /// Points acknowledged for the page's recording.
    points: RecordedPoints,
    /// Whether a Generate of this page waits for a renderer (one at a time, so a page
    /// cannot open unbounded requests).
    generating: Arc<AtomicBool>,
}

/// Publishes (or, for Generate, requests) one of a page's messages and answers the page.
/// `text` is the page's own validated text, published as it is.
pub(crate) async fn handle(
    ctx: &Arc<Context>,
    bus: &Bus,
    conn: ConnId,
    text: &str,
    msg: PageMessage,
    state: &mut PageBus,
) {
    let reply = match msg {
        PageMessage::Start { recording, .. } => {
            // A restart of the recording (another viewport) is another message.
            let id = format!("{recording}/start/{}", message_id(text.as_bytes(), 0));
            match bus.publish_recording(&recording, id, text).await {
                Ok(()) => ServerMessage::Started { recording },
                Err(err) => refusal(ctx, err.message, recording, None),
            }
        }
        PageMessage::Points(batch) => {
            let n_points = batch.points.len() as u64;
            ctx.hub.metrics.points_in.inc_by(n_points);
            ctx.hub.batch_forwarded(conn, &batch.recording, batch.seq);
            let id = format!("{}/{}", batch.recording, batch.seq);
            match bus.publish_recording(&batch.recording, id, text).await {
                Ok(()) => ServerMessage::Ack {
                    n_points: state.points.add(&batch.recording, n_points),
                    recording: batch.recording,
                    seq: batch.seq,
                },
                Err(err) => refusal(ctx, err.message, batch.recording, Some(batch.seq)),
            }
        }
        PageMessage::Stop { recording } => {
            let id = format!("{recording}/stop");
            match bus.publish_recording(&recording, id, text).await {
                Ok(()) => ServerMessage::Stopped {
                    n_points: state.points.of(&recording),
                    recording,
                },
                Err(err) => refusal(ctx, err.message, recording, None),
            }
        }
        PageMessage::Generate(generate) => {
            let recording = generate.recording.clone();
            let request = generate.request;
            if state.generating.swap(true, Ordering::AcqRel) {
                let message = "a Generate of this page is still waiting for a renderer; ask again once it is answered";
                let reply = error(ErrorCode::Busy, message.into(), recording, None, request);
                ctx.hub.metrics.errors.record(ErrorCode::Busy);
                ctx.hub.deliver(conn, &reply);
                return;
            }
            let frame = format!(r#"{{"type":"page","conn":{conn},"msg":{text}}}"#);
            let ctx = ctx.clone();
            let generating = state.generating.clone();
            tokio::spawn(async move {
                let reply = match &ctx.bus {
                    Some(bus) => generate_on_bus(bus, conn, frame, recording, request).await,
                    None => unavailable_without_bus(recording, request),
                };
                generating.store(false, Ordering::Release);
                if let ServerMessage::Error { code, .. } = &reply {
                    ctx.hub.metrics.errors.record(*code);
                }
                ctx.hub.deliver(conn, &reply);
            });
            return;
        }
        _ => return,
    };
    ctx.hub.deliver(conn, &reply);
}

/// Asks the renderer group for a heatmap and turns its answer (or its silence) into the
/// page's reply.
async fn generate_on_bus(
    bus: &Bus,
    conn: ConnId,
    frame: String,
    recording: RecordingId,
    request: Option<u64>,
) -> ServerMessage {
    let unavailable = |message: String, recording: RecordingId| {
        error(
            ErrorCode::RendererUnavailable,
            message,
            recording,
            None,
            request,
        )
    };
    let payload = match bus.request_generate(frame).await {
        Ok(payload) => payload,
        Err(err) => {
            debug!(conn, cause = %err.message, "generate over the bus not answered");
            return unavailable(format!("{}; ask again later", err.message), recording);
        }
    };
    let text = String::from_utf8_lossy(&payload);
    match decode_renderer(&text) {
        Ok(RendererMessage::Reply { msg, .. }) => msg,
        Ok(other) => {
            warn!(?other, "a renderer answered a generate with something else");
            unavailable(
                "the renderer's answer was not a heatmap; ask again".into(),
                recording,
            )
        }
        Err(err) => {
            warn!(cause = %err, "a renderer's answer to a generate does not decode");
            unavailable(
                "the renderer's answer did not decode; ask again".into(),
                recording,
            )
        }
    }
}

/// The answer if the bus went away (it cannot: the context holds it for the relay's life).
fn unavailable_without_bus(recording: RecordingId, request: Option<u64>) -> ServerMessage {
    error(
        ErrorCode::RendererUnavailable,
        "the relay has no bus".into(),
        recording,
        None,
        request,
    )
}

/// A message the stream did not take: `busy`, so the page keeps it and resends.
fn refusal(
    ctx: &Context,
    cause: String,
    recording: RecordingId,
    seq: Option<u64>,
) -> ServerMessage {
    ctx.hub.metrics.errors.record(ErrorCode::Busy);
    error(
        ErrorCode::Busy,
        format!("{cause}; the page sends it again"),
        recording,
        seq,
        None,
    )
}

fn error(
    code: ErrorCode,
    message: String,
    recording: RecordingId,
    seq: Option<u64>,
    request: Option<u64>,
) -> ServerMessage {
    ServerMessage::Error {
        code,
        message,
        recording: Some(recording),
        seq,
        request,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ack_count_follows_the_current_recording() {
        let first = RecordingId::try_from("r-1").unwrap();
        let second = RecordingId::try_from("r-2").unwrap();
        let mut points = RecordedPoints::default();
        assert_eq!(points.add(&first, 10), 10);
        assert_eq!(points.add(&first, 5), 15);
        assert_eq!(points.of(&first), 15);
        assert_eq!(points.of(&second), 0);
        assert_eq!(points.add(&second, 3), 3);
        assert_eq!(points.of(&first), 0);
    }
}
