//! The renderer's side of the NATS JetStream bus (`--bus`, cluster builds only): tracked
//! events consumed from the stream the relays publish to, as one group with every other
//! renderer, and acknowledged only once the event store committed them.
//!
//! Every renderer binds the same durable pull consumer (`--bus-consumer`), so JetStream
//! hands each batch to one of them. A batch is decoded with the same checks as a
//! `POST /api/events` body, queued to the store's one writer (so batches fetched together
//! are committed together, and the live view updates), and acknowledged after the commit.
//! A failed commit is answered with a delayed negative acknowledgement, so JetStream
//! delivers the batch again; a renderer killed mid-batch acknowledges nothing, and its
//! batches are delivered again after `--bus-ack-wait-secs`. Redelivery of a batch already
//! committed stores nothing twice: the store ignores an event whose `(session, seq)` it has.
//!
//! Recordings' batches (with their starts and stops) come the same way on a second shared
//! durable consumer (`--bus-batches-consumer`, subjects `<stream>.batches.>`, apart from the
//! events' subject as a work queue requires), are committed to the shared database's
//! recording writer (`recording_db.rs`, keyed `(recording, seq)`) and acknowledged after
//! the commit. Generate arrives as a core NATS request on `<stream>.generate` to the queue
//! group of every renderer: the one that takes it first waits (up to `--generate-drain-ms`)
//! until the stream holds nothing more of that recording — a work queue deletes a batch
//! when its acknowledgement lands, after the commit, so every batch the page was
//! acknowledged for is in the database — then renders from the database, stores the PNG
//! there too (so any renderer serves it), and replies.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use async_nats::jetstream::{self, consumer::pull, stream, AckKind};
use futures_util::{FutureExt as _, StreamExt as _};
use netkit::Shutdown;
use protocol::analytics::decode_events;
use protocol::{
    decode_page, decode_relay, encode, Error, ErrorCode, Generate, HeatmapReady, PageMessage,
    RecordingId, RelayMessage, RendererMessage, ServerMessage,
};
use tokio::sync::Semaphore;
use tracing::{debug, error, info, warn};

use crate::recording_db::{RecordingDb, Write, Written};

use crate::config::Config;
use crate::context::Context;

/// How long a failed batch waits before JetStream delivers it again: long enough for a
/// restarting database to come back, short enough that the backlog does not stall.
const NAK_DELAY: Duration = Duration::from_secs(1);

/// How often the server must show the consumer's pull is alive; a silent connection past
/// twice this is treated as lost and the pull is opened again. When the server a renderer
/// pulls from dies, the pull is lost with it even after the client reconnects to another
/// server of the cluster, so this bounds the renderer's pause: with 5 s it took up to
/// 15 s (`cluster_jetstream.rs`); an idle heartbeat a second costs nothing worth saving.
const PULL_HEARTBEAT: Duration = Duration::from_secs(1);

/// How long a JetStream API call (declare the stream, bind the consumer) may go
/// unanswered before the attempt is abandoned and retried. A cluster that has not yet
/// elected its leader does not answer at all; the client's default of 10 s kept a renderer
/// started beside a new cluster idle for that long.
const API_TIMEOUT: Duration = Duration::from_secs(2);

/// First and longest wait between attempts to (re)bind the consumer.
const RETRY_INITIAL: Duration = Duration::from_millis(100);
const RETRY_MAX: Duration = Duration::from_secs(2);

/// Starts consuming `--bus` in the background until `shutdown`; returns at once (NATS may
/// start after the renderer, and is retried until it answers).
///
/// # Errors
/// The URL cannot be used.
pub(crate) async fn start(ctx: Arc<Context>, url: &str, shutdown: Shutdown) -> anyhow::Result<()> {
    let client = async_nats::ConnectOptions::new()
        .name("heatmap-renderer")
        .retry_on_initial_connect()
        .max_reconnects(None)
        .reconnect_delay_callback(retry_delay)
        .event_callback(|event| async move {
            match event {
                async_nats::Event::Connected => info!("bus connected"),
                async_nats::Event::Disconnected => warn!("bus disconnected"),
                other => info!(event = %other, "bus event"),
            }
        })
        .connect(url)
        .await
        .with_context(|| format!("--bus {url}"))?;
    let mut jetstream = jetstream::new(client.clone());
    jetstream.set_timeout(API_TIMEOUT);
    tokio::spawn(consume_until_shutdown(
        ctx.clone(),
        jetstream.clone(),
        Lane::Events,
        shutdown.clone(),
    ));
    if let Some(db) = ctx.recording_db.clone() {
        tokio::spawn(consume_until_shutdown(
            ctx.clone(),
            jetstream.clone(),
            Lane::Batches(db.clone()),
            shutdown.clone(),
        ));
        tokio::spawn(answer_generates(ctx, client, jetstream, db, shutdown));
    }
    Ok(())
}

/// What one shared consumer carries.
#[derive(Clone)]
enum Lane {
    /// Tracked events, into the event store.
    Events,
    /// Recordings' starts, batches and stops, into the shared database.
    Batches(Arc<RecordingDb>),
}

impl Lane {
    /// The consumer's durable name and its one filter subject.
    fn consumer(&self, config: &Config) -> (String, String) {
        match self {
            Lane::Events => (
                config.bus_consumer.clone(),
                format!("{}.events", config.bus_stream),
            ),
            Lane::Batches(_) => (
                config.bus_batches_consumer.clone(),
                format!("{}.batches.>", config.bus_stream),
            ),
        }
    }
}

/// Binds the consumer and consumes, binding again after any failure, until shutdown.
async fn consume_until_shutdown(
    ctx: Arc<Context>,
    jetstream: jetstream::Context,
    lane: Lane,
    mut shutdown: Shutdown,
) {
    let mut attempts = 0usize;
    loop {
        let outcome = tokio::select! {
            () = shutdown.wait() => return,
            outcome = consume(&ctx, &jetstream, &lane, &mut attempts) => outcome,
        };
        if let Err(err) = outcome {
            attempts += 1;
            if attempts == 1 || attempts.is_multiple_of(10) {
                warn!(cause = %format!("{err:#}"), attempts, "bus consumer interrupted; binding it again");
            }
        }
        tokio::select! {
            () = shutdown.wait() => return,
            () = tokio::time::sleep(retry_delay(attempts)) => {}
        }
    }
}

/// Declares the stream and the consumer, then stores and acknowledges batches until the
/// pull fails.
async fn consume(
    ctx: &Context,
    jetstream: &jetstream::Context,
    lane: &Lane,
    attempts: &mut usize,
) -> anyhow::Result<()> {
    let config = &ctx.config;
    let settings = stream_config(config);
    let (consumer_name, subject) = lane.consumer(config);
    jetstream
        .create_or_update_stream(settings)
        .await
        .with_context(|| format!("declare the bus stream {}", config.bus_stream))?;
    let stream = jetstream
        .get_stream(&config.bus_stream)
        .await
        .with_context(|| format!("open the bus stream {}", config.bus_stream))?;
    let consumer: jetstream::consumer::PullConsumer = stream
        .get_or_create_consumer(
            &consumer_name,
            consumer_config(config, &consumer_name, subject),
        )
        .await
        .with_context(|| format!("bind the bus consumer {consumer_name}"))?;
    let mut messages = consumer
        .stream()
        .max_messages_per_batch(usize::try_from(config.bus_batch).unwrap_or(usize::MAX))
        .heartbeat(PULL_HEARTBEAT)
        .messages()
        .await
        .context("open the bus pull")?;
    info!(stream = %config.bus_stream, consumer = %consumer_name, "bus consumer bound");
    *attempts = 0;
    loop {
        let Some(first) = messages.next().await else {
            anyhow::bail!("the bus pull ended");
        };
        let mut group = vec![first.context("receive from the bus")?];
        // Whatever else has already arrived joins the group, so it is committed together.
        while group.len() < usize::try_from(config.bus_batch).unwrap_or(usize::MAX) {
            match messages.next().now_or_never() {
                Some(Some(Ok(message))) => group.push(message),
                Some(Some(Err(err))) => {
                    warn!(cause = %err, "bus pull error while draining a group");
                    break;
                }
                Some(None) | None => break,
            }
        }
        // Each delivery says how many more wait for the consumer: the lag, for /metrics.
        if let Some(Ok(info)) = group.last().map(jetstream::Message::info) {
            ctx.metrics
                .bus_pending
                .set(i64::try_from(info.pending).unwrap_or(i64::MAX));
        }
        match lane {
            Lane::Events => store_group(ctx, group).await,
            Lane::Batches(db) => store_batches(ctx, db, group).await,
        }
    }
}

/// Stores a group of batches (queued to the writer together, so one commit usually takes
/// them all) and acknowledges each according to its outcome.
async fn store_group(ctx: &Context, group: Vec<jetstream::Message>) {
    let outcomes = futures_util::future::join_all(group.iter().map(|message| async move {
        match decode_events(&message.payload) {
            Ok(events) => ctx.ingest.submit(events).await.map_err(Outcome::Failed),
            Err(err) => Err(Outcome::Undecodable(err.to_string())),
        }
    }))
    .await;
    for (message, outcome) in group.iter().zip(outcomes) {
        let kind = match outcome {
            Ok(_) => AckKind::Ack,
            Err(Outcome::Failed(err)) if err.retryable => AckKind::Nak(Some(NAK_DELAY)),
            Err(Outcome::Failed(err)) => {
                // The store refuses these events for good; delivering them again would
                // only refuse them again.
                error!(cause = %err.message, "bus batch refused by the event store; dropped");
                ctx.metrics
                    .errors
                    .record(protocol::ErrorCode::StorageFailed);
                AckKind::Term
            }
            Err(Outcome::Undecodable(why)) => {
                error!(cause = %why, subject = %message.subject, "bus batch is not a valid event batch; dropped");
                ctx.metrics.errors.record(protocol::ErrorCode::BadField);
                AckKind::Term
            }
        };
        // A lost acknowledgement costs a redelivery, which the store de-duplicates.
        if let Err(err) = message.ack_with(kind).await {
            warn!(cause = %err, "cannot acknowledge a bus batch; it will be delivered again");
        }
    }
}

/// Commits a group of recording messages through the database's writer (queued together,
/// so one transaction usually takes them all) and acknowledges each after its commit; a
/// failed commit is a delayed negative acknowledgement, so the message comes again.
async fn store_batches(ctx: &Context, db: &RecordingDb, group: Vec<jetstream::Message>) {
    let outcomes = futures_util::future::join_all(
        group
            .iter()
            .map(|message| store_recording_message(ctx, db, &message.payload)),
    )
    .await;
    for (message, outcome) in group.iter().zip(outcomes) {
        let kind = match outcome {
            Ok(()) => AckKind::Ack,
            Err(Outcome::Failed(_)) => AckKind::Nak(Some(NAK_DELAY)),
            Err(Outcome::Undecodable(why)) => {
                error!(cause = %why, subject = %message.subject, "bus message is not a recording message; dropped");
                ctx.metrics.errors.record(ErrorCode::BadField);
                AckKind::Term
            }
        };
        if let Err(err) = message.ack_with(kind).await {
            warn!(cause = %err, "cannot acknowledge a bus batch; it will be delivered again");
        }
    }
}

/// Decodes one recording message (the page's own text, checked again here) and commits it.
async fn store_recording_message(
    ctx: &Context,
    db: &RecordingDb,
    payload: &[u8],
) -> Result<(), Outcome> {
    let text = std::str::from_utf8(payload)
        .map_err(|err| Outcome::Undecodable(format!("not UTF-8: {err}")))?;
    let msg = decode_page(text, &ctx.limits).map_err(|err| {
        Outcome::Undecodable(format!(
            "{err} (give every relay and renderer the same --max-points-per-batch)"
        ))
    })?;
    let failed = |err: Error| {
        warn!(code = %err.code, cause = %err.message, "cannot store a recording message from the bus now; it comes again");
        Outcome::Failed(crate::ingest::IngestError {
            busy: err.code == ErrorCode::Busy,
            retryable: true,
            message: err.message,
        })
    };
    match msg {
        PageMessage::Start {
            recording,
            viewport,
        } => {
            db.submit(Write::Start {
                recording: recording.clone(),
                viewport,
            })
            .await
            .map_err(failed)?;
            // The local copy serves previews; it may refuse (its own limits), which costs
            // previews only.
            let _ = ctx.store.start(&recording, viewport);
        }
        PageMessage::Points(batch) => {
            let seq = i64::try_from(batch.seq).map_err(|_| {
                Outcome::Undecodable(format!("batch seq {} is over 2^63", batch.seq))
            })?;
            let stored = crate::store::fixed_batch(&batch);
            let written = db
                .submit(Write::batch(
                    batch.recording.clone(),
                    batch.viewport,
                    seq,
                    &stored,
                ))
                .await
                .map_err(failed)?;
            if let Written::Batch { new: true, .. } = written {
                ctx.metrics.batches_stored.inc();
                ctx.metrics.points_stored.inc_by(stored.n_points());
                if let Ok(Some(copy)) = ctx.store.prepare_batch(&batch) {
                    ctx.store.finish_batch(&batch.recording, &copy, true);
                }
            } else {
                ctx.metrics.batches_duplicate.inc();
            }
        }
        PageMessage::Stop { recording } => {
            let written = db
                .submit(Write::Stop {
                    recording: recording.clone(),
                })
                .await
                .map_err(failed)?;
            if written == Written::Unknown {
                // Its batches may still be on their way through another renderer; a stop
                // only marks the row, so nothing is lost.
                debug!(recording = %recording, "a stop from the bus for a recording not stored yet");
            }
            let _ = ctx.store.stop(&recording);
        }
        other => {
            return Err(Outcome::Undecodable(format!(
                "a {} message on a recording subject",
                kind_of(&other)
            )))
        }
    }
    Ok(())
}

/// The message's type, for the log.
fn kind_of(msg: &PageMessage) -> &'static str {
    match msg {
        PageMessage::Generate(_) => "generate",
        PageMessage::Preview(_) => "preview",
        _ => "page",
    }
}

/// How often a Generate from the bus looks again whether its recording's batches have all
/// been committed: short next to a render, long enough not to load the server.
const DRAIN_POLL: Duration = Duration::from_millis(50);

/// Most names tried when other renderers drew different images under the same names.
const MAX_IMAGE_NAMES: usize = 100;

/// Answers Generate requests from the bus as one of the renderers' queue group, at most
/// `--max-bus-generates` at once (one more is answered `busy`), until shutdown.
async fn answer_generates(
    ctx: Arc<Context>,
    client: async_nats::Client,
    jetstream: jetstream::Context,
    db: Arc<RecordingDb>,
    mut shutdown: Shutdown,
) {
    let subject = format!("{}.generate", ctx.config.bus_stream);
    let permits = Arc::new(Semaphore::new(
        usize::try_from(ctx.config.max_bus_generates).unwrap_or(usize::MAX),
    ));
    let mut attempts = 0usize;
    loop {
        // A subscription survives reconnects (the client subscribes again by itself); it is
        // opened again only if the client refused it.
        let mut requests = match client
            .queue_subscribe(subject.clone(), ctx.config.bus_consumer.clone())
            .await
        {
            Ok(requests) => requests,
            Err(err) => {
                attempts += 1;
                warn!(cause = %err, attempts, "cannot subscribe to generate requests; retrying");
                tokio::select! {
                    () = shutdown.wait() => return,
                    () = tokio::time::sleep(retry_delay(attempts)) => continue,
                }
            }
        };
        info!(%subject, "answering generate requests from the bus");
        loop {
            let request = tokio::select! {
                () = shutdown.wait() => return,
                request = requests.next() => request,
            };
            let Some(request) = request else { break };
            let Some(reply_to) = request.reply.clone() else {
                debug!("a generate request without a reply subject; ignored");
                continue;
            };
            let Ok(permit) = permits.clone().try_acquire_owned() else {
                ctx.metrics.errors.record(ErrorCode::Busy);
                let answer = RendererMessage::Error {
                    code: ErrorCode::Busy,
                    message: "this renderer works on --max-bus-generates requests already".into(),
                };
                let _ = client.publish(reply_to, encode(&answer).into()).await;
                continue;
            };
            let ctx = ctx.clone();
            let client = client.clone();
            let jetstream = jetstream.clone();
            let db = db.clone();
            tokio::spawn(async move {
                let answer = answer_request(&ctx, &jetstream, &db, &request.payload).await;
                drop(permit);
                if let Err(err) = client.publish(reply_to, encode(&answer).into()).await {
                    warn!(cause = %err, "cannot send a generate answer over the bus");
                }
            });
        }
    }
}

/// One Generate from the bus: decode, wait for its batches, render, share the image.
async fn answer_request(
    ctx: &Arc<Context>,
    jetstream: &jetstream::Context,
    db: &Arc<RecordingDb>,
    payload: &[u8],
) -> RendererMessage {
    let text = String::from_utf8_lossy(payload);
    let (conn, generate) = match decode_relay(&text, &ctx.limits) {
        Ok(RelayMessage::Page {
            conn,
            msg: PageMessage::Generate(generate),
        }) => (conn, generate),
        Ok(_) => {
            return RendererMessage::Error {
                code: ErrorCode::UnknownType,
                message: "only generate is asked on this subject".into(),
            }
        }
        Err(err) => {
            ctx.metrics.errors.record(err.code);
            return RendererMessage::Error {
                code: err.code,
                message: err.message,
            };
        }
    };
    let msg = match wait_for_batches(ctx, jetstream, &generate.recording).await {
        Ok(()) => render_shared(ctx, db, generate).await,
        Err(err) => {
            ctx.metrics.errors.record(err.code);
            ServerMessage::Error {
                code: err.code,
                message: err.message,
                recording: Some(generate.recording),
                seq: None,
                request: generate.request,
            }
        }
    };
    RendererMessage::Reply { conn, msg }
}

/// Waits until the stream holds no message of `recording` (each leaves once committed and
/// acknowledged), up to `--generate-drain-ms`.
///
/// # Errors
/// `busy` when batches still wait after the bound, or the stream cannot be asked.
async fn wait_for_batches(
    ctx: &Context,
    jetstream: &jetstream::Context,
    recording: &RecordingId,
) -> Result<(), Error> {
    let subject = format!("{}.batches.{recording}", ctx.config.bus_stream);
    let deadline =
        tokio::time::Instant::now() + Duration::from_millis(ctx.config.generate_drain_ms);
    let stream = jetstream
        .get_stream(&ctx.config.bus_stream)
        .await
        .map_err(|err| {
            Error::new(
                ErrorCode::Busy,
                format!("the renderer cannot read the bus stream now ({err}); ask again"),
            )
        })?;
    loop {
        match stream.get_last_raw_message_by_subject(&subject).await {
            Err(err)
                if matches!(
                    err.kind(),
                    jetstream::stream::LastRawMessageErrorKind::NoMessageFound
                ) =>
            {
                return Ok(())
            }
            Ok(_) if tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(DRAIN_POLL).await;
            }
            Ok(_) => {
                return Err(Error::new(
                    ErrorCode::Busy,
                    format!(
                        "recording {recording} still has batches waiting to be stored after --generate-drain-ms; ask again"
                    ),
                ))
            }
            Err(err) => {
                return Err(Error::new(
                    ErrorCode::Busy,
                    format!("the renderer cannot read the bus stream now ({err}); ask again"),
                ))
            }
        }
    }
}

/// Renders as a Generate over the link does, then stores the PNG in the shared database
/// before the answer goes out, so the relay that asked can fetch it from any renderer.
async fn render_shared(
    ctx: &Arc<Context>,
    db: &Arc<RecordingDb>,
    generate: Generate,
) -> ServerMessage {
    let recording = generate.recording.clone();
    let request = generate.request;
    let reply = crate::link::answer_generate(ctx, generate).await;
    let ServerMessage::Heatmap(ready) = reply else {
        return reply;
    };
    let job_ctx = ctx.clone();
    let job_db = db.clone();
    let shared = tokio::task::spawn_blocking(move || share_image(&job_ctx, &job_db, ready))
        .await
        .unwrap_or_else(|err| {
            Err(Error::new(
                ErrorCode::RenderFailed,
                format!("storing the image failed: {err}"),
            ))
        });
    match shared {
        Ok(ready) => ServerMessage::Heatmap(ready),
        Err(err) => {
            ctx.metrics.errors.record(err.code);
            ServerMessage::Error {
                code: err.code,
                message: err.message,
                recording: Some(recording),
                seq: None,
                request,
            }
        }
    }
}

/// Stores the image drawn under `ready.name` in the database; when another renderer took
/// that name for another image (the same second), writes it again under a new local name
/// and tries that. Blocks.
fn share_image(
    ctx: &Context,
    db: &RecordingDb,
    mut ready: HeatmapReady,
) -> Result<HeatmapReady, Error> {
    let out_dir = &ctx.config.out_dir;
    let storage = |err: &dyn std::fmt::Display| {
        Error::new(
            ErrorCode::StorageFailed,
            format!("the renderer cannot store the image in the database now ({err}); ask again"),
        )
    };
    let path = out_dir.join(&ready.name);
    let png = crate::output::read_heatmap(&path).map_err(|err| storage(&err))?;
    for _ in 0..MAX_IMAGE_NAMES {
        if db
            .store_image(&ready.name, &png)
            .map_err(|err| storage(&err))?
        {
            return Ok(ready);
        }
        // This name is another renderer's image: serving ours under it would show the
        // wrong picture, so ours moves to a name of its own.
        let old = out_dir.join(&ready.name);
        let stamp = crate::output::local_stamp(chrono::Local::now());
        ready.name = crate::output::write_heatmap(out_dir, &stamp, &png, ctx.config.fsync)
            .map_err(|err| storage(&err))?;
        let _ = std::fs::remove_file(old);
    }
    Err(storage(&"every name tried is taken"))
}

/// What became of one batch that was not stored.
enum Outcome {
    /// The store (or its queue) refused it.
    Failed(crate::ingest::IngestError),
    /// It is not an event batch.
    Undecodable(String),
}

/// The stream as every relay and renderer declares it: a work queue (a batch leaves the
/// stream once a renderer acknowledged it, so the stream holds exactly the backlog) that
/// refuses new batches when full rather than dropping ones it acknowledged to a relay.
pub(crate) fn stream_config(config: &Config) -> stream::Config {
    stream::Config {
        name: config.bus_stream.clone(),
        subjects: vec![
            format!("{}.events", config.bus_stream),
            format!("{}.batches.>", config.bus_stream),
        ],
        retention: stream::RetentionPolicy::WorkQueue,
        discard: stream::DiscardPolicy::New,
        storage: stream::StorageType::File,
        max_bytes: config.bus_max_bytes,
        max_age: Duration::from_secs(config.bus_max_age_secs),
        duplicate_window: Duration::from_secs(config.bus_duplicate_window_secs),
        num_replicas: usize::from(config.bus_replicas),
        description: Some(
            "tracked-site events and recordings' batches from the relays, for the renderers".into(),
        ),
        ..stream::Config::default()
    }
}

/// The shared durable pull consumer: explicit acknowledgement, a bound on batches in
/// flight, and redelivery after `--bus-ack-wait-secs`. One filter subject (the plural
/// filter needs a 2.10 server).
fn consumer_config(config: &Config, name: &str, subject: String) -> pull::Config {
    pull::Config {
        durable_name: Some(name.to_owned()),
        description: Some(format!("the renderers, storing {subject}")),
        ack_policy: jetstream::consumer::AckPolicy::Explicit,
        ack_wait: Duration::from_secs(config.bus_ack_wait_secs),
        max_ack_pending: config.bus_max_ack_pending,
        filter_subject: subject,
        ..pull::Config::default()
    }
}

/// The wait before reconnect or rebind attempt `attempts`: doubling from 100 ms to 2 s.
fn retry_delay(attempts: usize) -> Duration {
    let factor = 1u32 << attempts.min(16) as u32;
    RETRY_INITIAL.saturating_mul(factor).min(RETRY_MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_relays_json_is_what_the_consumer_decodes() {
        // The relay publishes `serde_json::to_vec(&events)` of decoded events; the
        // consumer must take it back with the API's own checks.
        let body =
            br#"[{"type":"click","page":"/a","sessionId":"s-1","seq":3,"timestamp":1700000000000,
                         "metadata":{"x":10.0,"y":20.0,"vw":1440,"vh":900,"dw":1440,"dh":900}}]"#;
        let events = decode_events(body).expect("a valid body");
        let published = serde_json::to_vec(&events).expect("encode");
        assert_eq!(decode_events(&published).expect("decode again"), events);
    }

    #[test]
    fn every_renderer_declares_the_same_consumer() {
        let config = Config::default();
        let consumer = consumer_config(&config, "renderers", "heatmap.events".into());
        assert_eq!(consumer.durable_name.as_deref(), Some("renderers"));
        assert_eq!(
            consumer.ack_policy,
            jetstream::consumer::AckPolicy::Explicit
        );
        assert_eq!(consumer.max_ack_pending, 1024);
        // One subject, in the singular field a 2.9 server knows (the plural is compiled
        // out with async-nats's server_2_10 feature).
        assert_eq!(consumer.filter_subject, "heatmap.events");
        let stream = stream_config(&config);
        assert_eq!(stream.retention, stream::RetentionPolicy::WorkQueue);
        assert_eq!(stream.discard, stream::DiscardPolicy::New);
    }

    #[test]
    fn retries_back_off_up_to_two_seconds() {
        assert_eq!(retry_delay(0), RETRY_INITIAL);
        assert_eq!(retry_delay(2), Duration::from_millis(400));
        assert_eq!(retry_delay(30), RETRY_MAX);
    }
}
