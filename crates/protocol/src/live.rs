//! What relays tell each other about their pages in cluster mode (NATS core subjects
//! `<stream>.live.relay.*`), so a dashboard on one relay sees the visitors, cursors and
//! activity of every relay.
//!
//! Live state is soft: a message may be lost, and a relay that stops sending is forgotten
//! after a few seconds. Every message names its sender (`relay`, a random id per run) so a
//! receiver keeps one entry per relay and ignores its own echoes. A receiver trusts no
//! field: [`decode_relay_live`] bounds the size and checks every name, id, path and
//! position before the message is merged.
//!
//! The renderers' live subject (`<stream>.live.renderer.events`) carries a JSON array of
//! tracked events in the event API's own shape, decoded with
//! [`crate::analytics::decode_events`], so it needs no type here.

use serde::{Deserialize, Serialize};

use crate::analytics::MAX_PAGE_LEN;
use crate::dashboard::validate_name;
use crate::{Activity, Cursor, Error, ErrorCode, Member};

/// Longest sender id accepted (a relay's or renderer's random id).
pub const MAX_LIVE_ID_LEN: usize = 64;

/// One relay's live message to the other relays.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum RelayLive {
    /// What the sender's own pages add up to now; sent when it changes and at least once
    /// a second, which is also the sender's heartbeat.
    Presence {
        /// The sending relay.
        relay: String,
        /// Its page sockets (recorders and dashboards).
        online: usize,
        /// Its dashboards (pages that sent `watch`).
        dashboards: usize,
        /// Its members (pages that said `hello`).
        members: usize,
        /// Its most recent members, newest first, with the sender's own ids.
        recent: Vec<Member>,
    },
    /// The sender's pages' cursors (its own ids); sent when one moves, at most ten times a
    /// second, and with the heartbeat.
    Cursors {
        /// The sending relay.
        relay: String,
        /// Every cursor its pages share now.
        cursors: Vec<Cursor>,
    },
    /// Events the sender accepted while a dashboard somewhere watches, for every relay's
    /// `session_activity`.
    Activity {
        /// The sending relay.
        relay: String,
        /// The events, oldest first.
        events: Vec<Activity>,
        /// Events the sender left out of its feed.
        dropped: u64,
    },
}

impl RelayLive {
    /// The relay that sent it.
    pub fn relay(&self) -> &str {
        match self {
            RelayLive::Presence { relay, .. }
            | RelayLive::Cursors { relay, .. }
            | RelayLive::Activity { relay, .. } => relay,
        }
    }

    /// Checks every field a receiver shows to its pages.
    ///
    /// # Errors
    /// [`ErrorCode::BadField`] naming the first bad field.
    pub fn validate(&self) -> Result<(), Error> {
        let relay = self.relay();
        if relay.is_empty()
            || relay.len() > MAX_LIVE_ID_LEN
            || !relay
                .bytes()
                .all(|byte| byte.is_ascii_alphanumeric() || byte == b'-')
        {
            return Err(bad(format!(
                "relay: must be 1 to {MAX_LIVE_ID_LEN} characters of A-Z, a-z, 0-9 or '-'"
            )));
        }
        match self {
            RelayLive::Presence { recent, .. } => {
                for member in recent {
                    validate_name(&member.name)
                        .map_err(|err| bad(format!("recent.{}", err.message)))?;
                }
            }
            RelayLive::Cursors { cursors, .. } => {
                let inside = |value: f32| value.is_finite() && (0.0..=1.0).contains(&value);
                if let Some(cursor) = cursors.iter().find(|c| !inside(c.x) || !inside(c.y)) {
                    return Err(bad(format!(
                        "cursors: ({}, {}) is not within 0..=1",
                        cursor.x, cursor.y
                    )));
                }
            }
            RelayLive::Activity { events, .. } => {
                for event in events {
                    if event.page.is_empty()
                        || event.page.len() > MAX_PAGE_LEN
                        || !event.page.starts_with('/')
                    {
                        return Err(bad(format!(
                            "events.page: must be a path starting with / of at most {MAX_PAGE_LEN} bytes"
                        )));
                    }
                    let id_ok = !event.session_id.is_empty()
                        && event.session_id.len() <= 64
                        && event.session_id.bytes().all(|byte| {
                            byte.is_ascii_alphanumeric() || byte == b'_' || byte == b'-'
                        });
                    if !id_ok {
                        return Err(bad(
                            "events.sessionId: must be 1 to 64 characters of A-Z, a-z, 0-9, '_' or '-'"
                                .into(),
                        ));
                    }
                }
            }
        }
        Ok(())
    }
}

/// Decodes and checks one relay live message of at most `max_bytes`.
///
/// # Errors
/// [`ErrorCode::TooLarge`] over `max_bytes`, [`ErrorCode::BadJson`] for anything that is
/// not a relay live message, [`ErrorCode::BadField`] from [`RelayLive::validate`].
pub fn decode_relay_live(bytes: &[u8], max_bytes: usize) -> Result<RelayLive, Error> {
    if bytes.len() > max_bytes {
        return Err(Error::new(
            ErrorCode::TooLarge,
            format!(
                "live message of {} bytes is over the {max_bytes}-byte limit",
                bytes.len()
            ),
        ));
    }
    let msg: RelayLive = serde_json::from_slice(bytes).map_err(|err| {
        Error::new(
            ErrorCode::BadJson,
            format!("not a relay live message: {err}"),
        )
    })?;
    msg.validate()?;
    Ok(msg)
}

fn bad(message: String) -> Error {
    Error::new(ErrorCode::BadField, message)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analytics::EventType;

    #[test]
    fn a_presence_round_trips() {
        let msg = RelayLive::Presence {
            relay: "r-1a2b".into(),
            online: 3,
            dashboards: 1,
            members: 2,
            recent: vec![Member {
                id: 7,
                name: "Ada".into(),
            }],
        };
        let bytes = crate::encode(&msg);
        assert_eq!(decode_relay_live(bytes.as_bytes(), 1024).unwrap(), msg);
        assert!(bytes.contains(r#""type":"presence""#), "{bytes}");
    }

    #[test]
    fn bad_fields_are_named_and_oversized_messages_refused() {
        let cases = [
            (
                r#"{"type":"presence","relay":"","online":1,"dashboards":0,"members":0,"recent":[]}"#,
                "relay",
            ),
            (
                r#"{"type":"presence","relay":"a","online":1,"dashboards":0,"members":1,"recent":[{"id":1,"name":"\u0007"}]}"#,
                "recent.name",
            ),
            (
                r#"{"type":"cursors","relay":"a","cursors":[{"id":1,"x":2.0,"y":0.5}]}"#,
                "cursors",
            ),
            (
                r#"{"type":"activity","relay":"a","events":[{"sessionId":"s 1","page":"/","type":"click"}],"dropped":0}"#,
                "events.sessionId",
            ),
            (
                r#"{"type":"activity","relay":"a","events":[{"sessionId":"s","page":"x","type":"click"}],"dropped":0}"#,
                "events.page",
            ),
        ];
        for (text, field) in cases {
            let err = decode_relay_live(text.as_bytes(), 4096).expect_err(text);
            assert_eq!(err.code, ErrorCode::BadField, "{text}");
            assert!(err.message.starts_with(field), "{text}: {}", err.message);
        }
        let err = decode_relay_live(b"{\"type\":\"nope\"}", 4096).expect_err("unknown type");
        assert_eq!(err.code, ErrorCode::BadJson);
        let err = decode_relay_live(&[b' '; 100], 10).expect_err("oversized");
        assert_eq!(err.code, ErrorCode::TooLarge);
        let ok = RelayLive::Activity {
            relay: "a".into(),
            events: vec![Activity {
                session_id: "s-1".into(),
                page: "/".into(),
                kind: EventType::Click,
            }],
            dropped: 2,
        };
        assert!(ok.validate().is_ok());
    }
}
