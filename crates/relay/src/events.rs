//! `POST /api/events` over the renderer link: decoded and checked here, stored by the
//! renderer, and answered `202` only once the renderer says its store committed them.
//!
//! Events take the road recording batches take (the one WebSocket to the renderer), not a
//! connection of their own per request. They are not held while the renderer is away: a
//! `202` must mean stored, so the sender hears `503` with `Retry-After` and sends them
//! again (the snippet keeps them and numbers them, so a resend is counted once).

use std::time::Duration;

use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use hyper::header::{HeaderValue, RETRY_AFTER};
use hyper::{Request, Response, StatusCode};
use netkit::http::{self, Body};
use protocol::analytics::{decode_events, EventsAccepted};
use protocol::Activity;
use protocol::{encode, ErrorCode, LinkState, RelayMessage};
use tokio::sync::{mpsc, oneshot};

use crate::context::Context;

/// One request's events on their way to the renderer, with the way back to the sender.
#[derive(Debug)]
pub(crate) struct EventsOutbound {
    /// The relay's number for the request (echoed in the renderer's answer).
    pub request: u64,
    /// The `events` envelope, ready to send.
    pub frame: String,
    /// Where the renderer's answer goes; dropped unanswered when the link is lost.
    pub reply: oneshot::Sender<EventsAnswer>,
}

/// What became of one request's events.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum EventsAnswer {
    /// The renderer's store committed all of them.
    Stored {
        /// Events of the request now stored.
        accepted: usize,
    },
    /// None of them was stored.
    Refused {
        /// Why, as the renderer (or the upstream task) said.
        code: ErrorCode,
        /// A sentence for the sender.
        message: String,
        /// Seconds after which a resend can work.
        retry_after_s: Option<u32>,
    },
}

impl EventsAnswer {
    /// The answer for events that arrive while no renderer link is up.
    pub fn not_connected() -> Self {
        Self::unavailable(
            "the renderer is not connected; nothing was stored, send these events again after Retry-After",
        )
    }

    /// The answer for events that cannot reach a renderer now.
    pub fn unavailable(message: impl Into<String>) -> Self {
        EventsAnswer::Refused {
            code: ErrorCode::RendererUnavailable,
            message: message.into(),
            retry_after_s: Some(RETRY_AFTER_UNAVAILABLE_S),
        }
    }
}

/// How long a sender should wait when the renderer is away: its restart takes about a
/// second, and the relay reconnects within its back-off.
const RETRY_AFTER_UNAVAILABLE_S: u32 = 2;

/// The relay's side of the event API: numbers requests and queues them for the link.
#[derive(Debug)]
pub(crate) struct EventSender {
    next_request: std::sync::atomic::AtomicU64,
    queue: mpsc::Sender<EventsOutbound>,
}

impl EventSender {
    /// A sender over the upstream task's events queue.
    pub fn new(queue: mpsc::Sender<EventsOutbound>) -> Self {
        EventSender {
            next_request: std::sync::atomic::AtomicU64::new(1),
            queue,
        }
    }
}

/// Answers `POST /api/events`: 202 once stored, else a JSON error naming what to do.
pub(crate) async fn post_events(ctx: &Context, request: Request<Incoming>) -> Response<Body> {
    let metrics = &ctx.hub.metrics;
    let limit = ctx.config.max_body_bytes;
    let country = country_from_headers(request.headers(), &ctx.config.country_headers);
    let body = match Limited::new(request.into_body(), limit as usize)
        .collect()
        .await
    {
        Ok(body) => body.to_bytes(),
        Err(_) => {
            metrics.events_refused("too_large");
            return http::json_error(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("request bodies over {limit} bytes are refused (--max-body-bytes); send fewer events per request"),
            );
        }
    };
    let mut events = match decode_events(&body) {
        Ok(events) => events,
        Err(err) => {
            metrics.events_refused("invalid");
            return http::json_error(StatusCode::BAD_REQUEST, err.to_string());
        }
    };
    // The event's own country, else the proxy's header, else the region of the browser's
    // language (`en-IN`), the weakest sign. The snippet sends its language with the first
    // event of each request, so it stands for the session's other events in the request.
    let regions: std::collections::HashMap<String, String> = events
        .iter()
        .filter_map(|event| {
            let tag = event.metadata.locale.as_deref()?;
            Some((
                event.session_id.clone(),
                protocol::analytics::locale_region(tag)?,
            ))
        })
        .collect();
    for event in events.iter_mut().filter(|event| event.country.is_none()) {
        event.country = country
            .clone()
            .or_else(|| regions.get(&event.session_id).cloned());
    }
    let n_events = events.len();
    if n_events == 0 {
        return accepted(0);
    }
    // What the dashboards' session_activity will list, taken only while one watches, and
    // only as many as one message may hold.
    let cap = activity_cap(ctx.config.max_activity_per_sec);
    let noted = cap > 0 && ctx.hub.is_watched();
    let skipped = if noted {
        n_events.saturating_sub(cap)
    } else {
        0
    };
    let activity: Vec<Activity> = if noted {
        events[skipped..]
            .iter()
            .map(|event| Activity {
                session_id: event.session_id.clone(),
                page: event.page.clone(),
                kind: event.kind,
            })
            .collect()
    } else {
        Vec::new()
    };
    let answer = send(ctx, events).await;
    match answer {
        EventsAnswer::Stored { accepted: n } => {
            metrics.events_accepted.inc_by(n as u64);
            ctx.hub.note_activity(activity, skipped as u64, cap);
            accepted(n)
        }
        EventsAnswer::Refused {
            code,
            message,
            retry_after_s,
        } => {
            metrics.events_refused(code.as_str());
            let status = status_of(code, retry_after_s.is_some());
            let mut response = http::json_error(status, message);
            if let Some(seconds) = retry_after_s {
                response
                    .headers_mut()
                    .insert(RETRY_AFTER, HeaderValue::from(seconds));
            }
            response
        }
    }
}

/// Most events one `session_activity` lists: a tick's share of `--max-activity-per-sec`
/// (at least one, unless the feed is off).
pub(crate) fn activity_cap(per_sec: usize) -> usize {
    let ticks_per_sec = (1000 / crate::feed::ACTIVITY_TICK.as_millis()).max(1) as usize;
    per_sec.div_ceil(ticks_per_sec)
}

/// The visitor's country as the first of `names` that a proxy set to a known country
/// says, as a two-letter code. Cloudflare writes `XX` for unknown and `T1` for Tor; those
/// and `ZZ` (another "unknown") fall through to the next header. A visitor could set these headers
/// too, but no more than the `country` field of the events it sends.
fn country_from_headers(headers: &hyper::HeaderMap, names: &[String]) -> Option<String> {
    names.iter().find_map(|name| {
        let value = headers.get(name.as_str())?.to_str().ok()?.trim();
        protocol::country_code(value).filter(|code| !matches!(code.as_str(), "XX" | "ZZ"))
    })
}

/// Sends one request's events over the link and waits for the renderer's answer, or with
/// `--bus` publishes them to JetStream and waits for its acknowledgement.
async fn send(ctx: &Context, events: Vec<protocol::analytics::TrackedEvent>) -> EventsAnswer {
    #[cfg(feature = "cluster")]
    if let Some(bus) = &ctx.bus {
        return publish(bus, events).await;
    }
    if ctx.hub.link_state() != LinkState::Connected {
        return EventsAnswer::not_connected();
    }
    let sender = &ctx.events;
    let request = sender
        .next_request
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let frame = encode(&RelayMessage::Events { request, events });
    if let Some(limits) = ctx.hub.renderer_limits() {
        if frame.len() > limits.max_frame_bytes {
            return EventsAnswer::Refused {
                code: ErrorCode::TooLarge,
                message: format!(
                    "these events take {} bytes on the renderer link, over its {}-byte frame limit; send fewer events per request",
                    frame.len(),
                    limits.max_frame_bytes
                ),
                retry_after_s: None,
            };
        }
    }
    let (reply, answer) = oneshot::channel();
    let outbound = EventsOutbound {
        request,
        frame,
        reply,
    };
    if sender.queue.try_send(outbound).is_err() {
        return EventsAnswer::Refused {
            code: ErrorCode::Busy,
            message: format!(
                "{} event requests are already on their way to the renderer (--events-queue); nothing was stored, send again after Retry-After",
                ctx.config.events_queue
            ),
            retry_after_s: Some(1),
        };
    }
    let timeout = Duration::from_millis(ctx.config.events_timeout_ms);
    match tokio::time::timeout(timeout, answer).await {
        Ok(Ok(answer)) => answer,
        Ok(Err(_)) => EventsAnswer::unavailable(
            "the renderer link was lost before the renderer confirmed these events; send them again (numbered events are counted once)",
        ),
        Err(_) => EventsAnswer::unavailable(format!(
            "the renderer did not confirm these events within {} ms (--events-timeout-ms); send them again (numbered events are counted once)",
            ctx.config.events_timeout_ms
        )),
    }
}

/// Publishes one request's events to the bus: stored once JetStream says so, whether or
/// not any renderer is up.
#[cfg(feature = "cluster")]
async fn publish(
    bus: &crate::bus::Bus,
    events: Vec<protocol::analytics::TrackedEvent>,
) -> EventsAnswer {
    let n_events = events.len();
    // The renderers decode this with the same checks as a POST body.
    let payload = match serde_json::to_vec(&events) {
        Ok(payload) => payload,
        Err(err) => {
            return EventsAnswer::Refused {
                code: ErrorCode::StorageFailed,
                message: format!("cannot encode these events for the bus: {err}"),
                retry_after_s: None,
            }
        }
    };
    match bus.publish(payload, n_events).await {
        Ok(()) => EventsAnswer::Stored { accepted: n_events },
        Err(err) => {
            tracing::warn!(cause = %err.message, events = n_events, "events refused: the bus did not store them");
            EventsAnswer::Refused {
                code: ErrorCode::StorageFailed,
                message: format!(
                    "{}; nothing is known to be stored, send these events again after Retry-After (numbered events are counted once)",
                    err.message
                ),
                retry_after_s: Some(RETRY_AFTER_UNAVAILABLE_S),
            }
        }
    }
}

/// The HTTP status for a refusal: retryable ones are 503, bad input 400.
fn status_of(code: ErrorCode, retryable: bool) -> StatusCode {
    match code {
        ErrorCode::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
        ErrorCode::BadJson | ErrorCode::BadField | ErrorCode::OutOfRange => StatusCode::BAD_REQUEST,
        _ if retryable => StatusCode::SERVICE_UNAVAILABLE,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

fn accepted(n: usize) -> Response<Body> {
    http::json(
        StatusCode::ACCEPTED,
        encode(&EventsAccepted { accepted: n }),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_configured_header_with_a_known_country_gives_it() {
        let names = vec!["CF-IPCountry".to_owned(), "X-Country".to_owned()];
        let mut headers = hyper::HeaderMap::new();
        assert_eq!(country_from_headers(&headers, &names), None);
        headers.insert("x-country", HeaderValue::from_static("India"));
        assert_eq!(
            country_from_headers(&headers, &names).as_deref(),
            Some("IN")
        );
        headers.insert("cf-ipcountry", HeaderValue::from_static("XX"));
        assert_eq!(
            country_from_headers(&headers, &names).as_deref(),
            Some("IN"),
            "Cloudflare's unknown falls through"
        );
        headers.insert("cf-ipcountry", HeaderValue::from_static("de"));
        assert_eq!(
            country_from_headers(&headers, &names).as_deref(),
            Some("DE")
        );
        headers.insert("cf-ipcountry", HeaderValue::from_static("T1"));
        assert_eq!(
            country_from_headers(&headers, &names).as_deref(),
            Some("IN")
        );
    }

    #[test]
    fn activity_per_message_is_a_tick_share_of_the_rate() {
        assert_eq!(activity_cap(200), 50);
        assert_eq!(activity_cap(8), 2);
        assert_eq!(activity_cap(1), 1);
        assert_eq!(activity_cap(0), 0);
    }

    #[test]
    fn refusals_map_to_statuses_a_sender_can_act_on() {
        assert_eq!(
            status_of(ErrorCode::StorageFailed, true),
            StatusCode::SERVICE_UNAVAILABLE
        );
        assert_eq!(
            status_of(ErrorCode::RendererUnavailable, true),
            StatusCode::SERVICE_UNAVAILABLE
        );
        assert_eq!(
            status_of(ErrorCode::BadField, false),
            StatusCode::BAD_REQUEST
        );
        assert_eq!(
            status_of(ErrorCode::TooLarge, false),
            StatusCode::PAYLOAD_TOO_LARGE
        );
        assert_eq!(
            status_of(ErrorCode::StorageFailed, false),
            StatusCode::INTERNAL_SERVER_ERROR
        );
    }
}
