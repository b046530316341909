//! The relay's side of the NATS JetStream bus (`--bus`, cluster builds only): tracked
//! events and recordings' batches published to a durable stream that the renderers consume
//! as one group, and Generate sent as a request to the renderer group.
//!
//! With a bus, `POST /api/events` no longer waits for a renderer: it is answered `202`
//! once JetStream has stored the batch (its publish acknowledgement), so events are
//! accepted while every renderer is down and the stream holds them. A batch carries a
//! message id derived from its content, so the sender's resend of the same batch inside
//! JetStream's duplicate window is stored once in the stream; the store's own
//! `(session, seq)` de-duplication covers resends after it and redeliveries.
//!
//! A page's recording messages (`start`, `points`, `stop`) go to the same stream under
//! `<stream>.batches.<recording>` (recording ids are valid subject tokens), a batch with the
//! message id `<recording>/<seq>`, so a page's resend to any relay is stored once; the page
//! gets its `ack` only after the PubAck. Generate is a core NATS request on
//! `<stream>.generate`, answered by one renderer of the queue group.
//!
//! The stream is created or updated at start (and again after a publish finds it gone) by
//! a background task; relays and renderers declare the same settings, so whichever
//! starts first creates it.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self, message::PublishMessage, stream};
use protocol::RecordingId;
use tokio::sync::Notify;
use tracing::{info, warn};

use crate::config::Config;

/// Why a batch was not stored in the stream; the sender gets 503 and resends.
#[derive(Debug)]
pub(crate) struct BusError {
    /// What went wrong, for the sender and the log.
    pub message: String,
}

/// A connection to NATS and the stream the events go to.
#[derive(Debug)]
pub(crate) struct Bus {
    client: async_nats::Client,
    jetstream: jetstream::Context,
    subject: String,
    /// The stream's name, the prefix of the recordings' subjects and the Generate subject.
    stream: String,
    /// How long a Generate waits for a renderer's answer (`--generate-timeout-ms`).
    generate_timeout: Duration,
    /// Woken when a publish suggests the stream is missing (a NATS server that lost its
    /// store), so the declaring task declares it again.
    redeclare: Arc<Notify>,
    /// Set by the declaring task once the stream exists with this relay's settings.
    declared: Arc<AtomicBool>,
}

impl Bus {
    /// Connects to `--bus` in the background (NATS may start after the relay) and starts
    /// the task that declares the stream. Returns at once.
    ///
    /// # Errors
    /// The URL cannot be used.
    pub async fn connect(config: &Config, url: &str) -> anyhow::Result<Self> {
        let backoff_max = Duration::from_millis(config.backoff_max_ms.max(1));
        let backoff_initial = Duration::from_millis(config.backoff_initial_ms.max(1));
        let client = async_nats::ConnectOptions::new()
            .name("heatmap-relay")
            .retry_on_initial_connect()
            .max_reconnects(None)
            .connection_timeout(Duration::from_millis(config.connect_timeout_ms.max(1)))
            // Generate bounds its own wait (`--generate-timeout-ms`).
            .request_timeout(None)
            .reconnect_delay_callback(move |attempts| {
                reconnect_delay(attempts, backoff_initial, backoff_max)
            })
            .event_callback(|event| async move {
                match event {
                    async_nats::Event::Connected => info!("bus connected"),
                    async_nats::Event::Disconnected => warn!("bus disconnected"),
                    other => info!(event = %other, "bus event"),
                }
            })
            .connect(url)
            .await
            .map_err(|err| anyhow::anyhow!("--bus {url}: {err}"))?;
        let mut jetstream = jetstream::new(client.clone());
        jetstream.set_timeout(Duration::from_millis(config.events_timeout_ms.max(1)));
        let settings = StreamSettings::from(config);
        let redeclare = Arc::new(Notify::new());
        let declared = Arc::new(AtomicBool::new(false));
        tokio::spawn(declare_stream(
            jetstream.clone(),
            settings.clone(),
            redeclare.clone(),
            declared.clone(),
            Backoff {
                initial: backoff_initial,
                max: backoff_max,
            },
        ));
        Ok(Bus {
            client,
            jetstream,
            subject: settings.subject(),
            stream: settings.name.clone(),
            generate_timeout: Duration::from_millis(config.generate_timeout_ms.max(1)),
            redeclare,
            declared,
        })
    }

    /// For `/healthz`: `connected` when events are accepted, else why not.
    pub fn state(&self) -> &'static str {
        if self.client.connection_state() != async_nats::connection::State::Connected {
            "disconnected"
        } else if !self.declared.load(Ordering::Relaxed) {
            "declaring"
        } else {
            "connected"
        }
    }

    /// Publishes one request's events (the JSON body the renderers decode) and waits for
    /// JetStream's acknowledgement; `Ok` means the stream stored them (or already had them).
    ///
    /// # Errors
    /// NATS is not connected, the stream is missing or full, or no acknowledgement came
    /// within `--events-timeout-ms`: nothing is known to be stored.
    pub async fn publish(&self, payload: Vec<u8>, n_events: usize) -> Result<(), BusError> {
        let id = message_id(&payload, n_events);
        self.publish_with_id(self.subject.clone(), id, payload, "events")
            .await
    }

    /// Publishes one of a page's recording messages (its own validated text) under the
    /// recording's subject with the message id `id`, and waits for JetStream's
    /// acknowledgement; `Ok` means the stream holds it until a renderer committed it.
    ///
    /// # Errors
    /// As [`Bus::publish`]: the page keeps the message and resends it.
    pub async fn publish_recording(
        &self,
        recording: &RecordingId,
        id: String,
        text: &str,
    ) -> Result<(), BusError> {
        let subject = recording_subject(&self.stream, recording);
        self.publish_with_id(subject, id, text.as_bytes().to_vec(), "batch")
            .await
    }

    /// Sends a Generate (the `page` envelope, as on the link) to the renderer group and
    /// returns the answering renderer's reply frame.
    ///
    /// # Errors
    /// NATS is not connected, no renderer listens, or none answered within
    /// `--generate-timeout-ms`.
    pub async fn request_generate(&self, frame: String) -> Result<bytes::Bytes, BusError> {
        if self.client.connection_state() != async_nats::connection::State::Connected {
            return Err(BusError {
                message: "the bus (NATS) is not connected".into(),
            });
        }
        let subject = generate_subject(&self.stream);
        let request = self.client.request(subject, frame.into());
        match tokio::time::timeout(self.generate_timeout, request).await {
            Ok(Ok(reply)) => Ok(reply.payload),
            Ok(Err(err)) => Err(BusError {
                message: match err.kind() {
                    async_nats::RequestErrorKind::NoResponders => {
                        "no renderer is listening on the bus".into()
                    }
                    _ => format!("the renderers did not answer: {err}"),
                },
            }),
            Err(_) => Err(BusError {
                message: format!(
                    "no renderer answered within {} ms (--generate-timeout-ms)",
                    self.generate_timeout.as_millis()
                ),
            }),
        }
    }

    /// Publishes `payload` on `subject` with message id `id` and waits for the PubAck.
    async fn publish_with_id(
        &self,
        subject: String,
        id: String,
        payload: Vec<u8>,
        what: &str,
    ) -> Result<(), BusError> {
        if self.client.connection_state() != async_nats::connection::State::Connected {
            return Err(BusError {
                message: "the bus (NATS) is not connected".into(),
            });
        }
        let publish = PublishMessage::build()
            .message_id(id)
            .payload(payload.into());
        let acknowledged = match self.jetstream.send_publish(subject, publish).await {
            Ok(ack) => ack.await,
            Err(err) => Err(err),
        };
        match acknowledged {
            Ok(_ack) => Ok(()),
            Err(err) => {
                // A missing stream (a NATS server that lost its store) is declared again;
                // for any other failure the declaration is a cheap, idempotent update.
                self.redeclare.notify_one();
                Err(BusError {
                    message: format!("the bus did not store this {what}: {err}"),
                })
            }
        }
    }
}

/// The subject a recording's messages are published under: recording ids are 1 to 64
/// characters of `A-Z a-z 0-9 _ -`, all valid in a subject token, so the id is used as it is
/// (a renderer can then ask the stream whether anything of that recording still waits).
pub(crate) fn recording_subject(stream: &str, recording: &RecordingId) -> String {
    format!("{stream}.batches.{recording}")
}

/// The subject Generate requests go to, answered by one renderer of the queue group.
pub(crate) fn generate_subject(stream: &str) -> String {
    format!("{stream}.generate")
}

/// The stream's settings, the same in every relay and renderer given the same flags.
#[derive(Debug, Clone)]
struct StreamSettings {
    name: String,
    max_bytes: i64,
    max_age: Duration,
    duplicate_window: Duration,
    replicas: usize,
}

impl From<&Config> for StreamSettings {
    fn from(config: &Config) -> Self {
        StreamSettings {
            name: config.bus_stream.clone(),
            max_bytes: config.bus_max_bytes,
            max_age: Duration::from_secs(config.bus_max_age_secs),
            duplicate_window: Duration::from_secs(config.bus_duplicate_window_secs),
            replicas: usize::from(config.bus_replicas),
        }
    }
}

impl StreamSettings {
    fn subject(&self) -> String {
        format!("{}.events", self.name)
    }

    /// A work queue (a message leaves the stream once a renderer acknowledged it, so the
    /// stream holds exactly the backlog) that refuses new messages when full rather than
    /// dropping old ones it already acknowledged to a sender.
    fn stream_config(&self) -> stream::Config {
        stream::Config {
            name: self.name.clone(),
            subjects: vec![self.subject(), format!("{}.batches.>", self.name)],
            retention: stream::RetentionPolicy::WorkQueue,
            discard: stream::DiscardPolicy::New,
            storage: stream::StorageType::File,
            max_bytes: self.max_bytes,
            max_age: self.max_age,
            duplicate_window: self.duplicate_window,
            num_replicas: self.replicas,
            description: Some(
                "tracked-site events and recordings' batches from the relays, for the renderers"
                    .into(),
            ),
            ..stream::Config::default()
        }
    }
}

/// Declares the stream once NATS answers, retrying with back-off, and again whenever a
/// publish found it missing. Ends with the relay's runtime.
async fn declare_stream(
    jetstream: jetstream::Context,
    settings: StreamSettings,
    redeclare: Arc<Notify>,
    declared: Arc<AtomicBool>,
    backoff: Backoff,
) {
    loop {
        let mut attempts = 0usize;
        loop {
            match jetstream
                .create_or_update_stream(settings.stream_config())
                .await
            {
                Ok(_) => {
                    info!(stream = %settings.name, subject = %settings.subject(), "bus stream ready");
                    declared.store(true, Ordering::Relaxed);
                    break;
                }
                Err(err) => {
                    attempts += 1;
                    if attempts == 1 || attempts.is_multiple_of(10) {
                        warn!(stream = %settings.name, cause = %err, attempts, "cannot declare the bus stream yet; retrying");
                    }
                    tokio::time::sleep(reconnect_delay(attempts, backoff.initial, backoff.max))
                        .await;
                }
            }
        }
        redeclare.notified().await;
    }
}

/// The relay's reconnect delays (`--backoff-initial-ms`, `--backoff-max-ms`).
#[derive(Debug, Clone, Copy)]
struct Backoff {
    initial: Duration,
    max: Duration,
}

/// The wait before reconnect or redeclare attempt `attempts`: doubling from the relay's
/// `--backoff-initial-ms` up to `--backoff-max-ms`.
fn reconnect_delay(attempts: usize, initial: Duration, max: Duration) -> Duration {
    let factor = 1u32 << attempts.min(16) as u32;
    initial.saturating_mul(factor).min(max)
}

/// The batch's JetStream message id: its event count and a 128-bit FNV-1a hash of the
/// published bytes. A resend of the same request (same events, same headers) gives the
/// same bytes, so the same id; 128 bits make an accidental match of two different
/// batches inside the duplicate window negligible (and a deliberate one could only hide
/// a batch whose exact bytes the forger already knows).
pub(crate) fn message_id(payload: &[u8], n_events: usize) -> String {
    const OFFSET: u128 = 0x6c62_272e_07bb_0142_62b8_2175_6295_c58d;
    const PRIME: u128 = 0x0000_0000_0100_0000_0000_0000_0000_013b;
    let hash = payload.iter().fold(OFFSET, |hash, byte| {
        (hash ^ u128::from(*byte)).wrapping_mul(PRIME)
    });
    format!("ev-{n_events}-{hash:032x}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_batch_gets_the_same_id_and_another_batch_another() {
        let batch = br#"[{"type":"click","sessionId":"s","seq":1}]"#;
        assert_eq!(message_id(batch, 1), message_id(batch, 1));
        let other = br#"[{"type":"click","sessionId":"s","seq":2}]"#;
        assert_ne!(message_id(batch, 1), message_id(other, 1));
        // The known FNV-1a 128 value of the empty input is its offset basis.
        assert_eq!(message_id(b"", 0), "ev-0-6c62272e07bb014262b821756295c58d");
    }

    #[test]
    fn reconnect_delays_double_up_to_the_cap() {
        let initial = Duration::from_millis(100);
        let max = Duration::from_millis(5000);
        assert_eq!(reconnect_delay(0, initial, max), initial);
        assert_eq!(reconnect_delay(3, initial, max), Duration::from_millis(800));
        assert_eq!(reconnect_delay(40, initial, max), max);
    }

    #[test]
    fn the_stream_is_a_work_queue_that_refuses_when_full() {
        let config = Config {
            bus_stream: "events-test".into(),
            ..Config::default()
        };
        let stream = StreamSettings::from(&config).stream_config();
        assert_eq!(
            stream.subjects,
            vec![
                "events-test.events".to_owned(),
                "events-test.batches.>".to_owned()
            ]
        );
        assert_eq!(stream.retention, stream::RetentionPolicy::WorkQueue);
        assert_eq!(stream.discard, stream::DiscardPolicy::New);
        assert_eq!(stream.max_bytes, crate::config::DEFAULT_BUS_MAX_BYTES);
    }
}
