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

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use async_nats::jetstream::{self, consumer::pull, stream, AckKind};
use futures_util::{FutureExt as _, StreamExt as _};
use netkit::Shutdown;
use protocol::analytics::decode_events;
use tracing::{error, info, warn};

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
    let mut jetstream = jetstream::new(client);
    jetstream.set_timeout(API_TIMEOUT);
    tokio::spawn(consume_until_shutdown(ctx, jetstream, shutdown));
    Ok(())
}

/// Binds the consumer and consumes, binding again after any failure, until shutdown.
async fn consume_until_shutdown(
    ctx: Arc<Context>,
    jetstream: jetstream::Context,
    mut shutdown: Shutdown,
) {
    let mut attempts = 0usize;
    loop {
        let outcome = tokio::select! {
            () = shutdown.wait() => return,
            outcome = consume(&ctx, &jetstream, &mut attempts) => outcome,
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
    attempts: &mut usize,
) -> anyhow::Result<()> {
    let config = &ctx.config;
    let settings = stream_config(config);
    let subject = settings.subjects[0].clone();
    jetstream
        .create_or_update_stream(settings)
        .await
        .with_context(|| format!("declare the bus stream {}", config.bus_stream))?;
    let stream = jetstream
        .get_stream(&config.bus_stream)
        .await
        .with_context(|| format!("open the bus stream {}", config.bus_stream))?;
    let consumer: jetstream::consumer::PullConsumer = stream
        .get_or_create_consumer(&config.bus_consumer, consumer_config(config, subject))
        .await
        .with_context(|| format!("bind the bus consumer {}", config.bus_consumer))?;
    let mut messages = consumer
        .stream()
        .max_messages_per_batch(usize::try_from(config.bus_batch).unwrap_or(usize::MAX))
        .heartbeat(PULL_HEARTBEAT)
        .messages()
        .await
        .context("open the bus pull")?;
    info!(stream = %config.bus_stream, consumer = %config.bus_consumer, "bus consumer bound");
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
        store_group(ctx, group).await;
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
    let subject = format!("{}.events", config.bus_stream);
    stream::Config {
        name: config.bus_stream.clone(),
        subjects: vec![subject],
        retention: stream::RetentionPolicy::WorkQueue,
        discard: stream::DiscardPolicy::New,
        storage: stream::StorageType::File,
        max_bytes: config.bus_max_bytes,
        max_age: Duration::from_secs(config.bus_max_age_secs),
        duplicate_window: Duration::from_secs(config.bus_duplicate_window_secs),
        num_replicas: usize::from(config.bus_replicas),
        description: Some("tracked-site events from the relays, for the renderers".into()),
        ..stream::Config::default()
    }
}

/// The shared durable pull consumer: explicit acknowledgement, a bound on batches in
/// flight, and redelivery after `--bus-ack-wait-secs`. One filter subject (the plural
/// filter needs a 2.10 server).
fn consumer_config(config: &Config, subject: String) -> pull::Config {
    pull::Config {
        durable_name: Some(config.bus_consumer.clone()),
        description: Some("the renderers, storing tracked events".into()),
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
        let consumer = consumer_config(&config, "heatmap.events".into());
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
