//! Decoding and encoding with errors a sender can act on.
//!
//! serde's messages are already precise ("unknown variant `foo`, expected one of …",
//! "missing field `seq`"); this module sorts them into [`ErrorCode`]s so that a page or a
//! test can tell malformed JSON from an unknown type from a bad field.

use serde::Serialize;

use crate::error::{Error, ErrorCode};
use crate::limits::Limits;
use crate::link::{RelayMessage, RendererMessage};
use crate::page::PageMessage;
use crate::validate::validate_page;

/// Decodes and validates a page's text frame.
///
/// # Errors
/// [`ErrorCode::BadJson`], [`ErrorCode::UnknownType`], [`ErrorCode::BadField`], or a
/// validation error from [`crate::validate::validate_page`].
pub fn decode_page(text: &str, limits: &Limits) -> Result<PageMessage, Error> {
    expect_object(text)?;
    let msg: PageMessage =
        serde_json::from_str(text).map_err(|err| classify(err, text, PAGE_TYPES))?;
    validate_page(&msg, limits)?;
    Ok(msg)
}

/// Decodes and validates a relay → renderer frame (page messages inside are validated too).
///
/// # Errors
/// As [`decode_page`].
pub fn decode_relay(text: &str, limits: &Limits) -> Result<RelayMessage, Error> {
    expect_object(text)?;
    let msg: RelayMessage =
        serde_json::from_str(text).map_err(|err| classify(err, text, RELAY_TYPES))?;
    if let RelayMessage::Page { msg, .. } = &msg {
        validate_page(msg, limits)?;
    }
    Ok(msg)
}

/// Decodes a renderer → relay frame.
///
/// # Errors
/// [`ErrorCode::BadJson`], [`ErrorCode::UnknownType`] or [`ErrorCode::BadField`].
pub fn decode_renderer(text: &str) -> Result<RendererMessage, Error> {
    expect_object(text)?;
    serde_json::from_str(text).map_err(|err| classify(err, text, RENDERER_TYPES))
}

/// Encodes any protocol message as a JSON text frame.
pub fn encode<T: Serialize>(msg: &T) -> String {
    // Protocol types have string keys and no fallible Serialize impls, so this cannot fail;
    // should it ever, the peer gets a well-formed error instead of a panic here.
    serde_json::to_string(msg).unwrap_or_else(|err| {
        format!(r#"{{"type":"error","code":"bad_json","message":"cannot encode reply: {err}"}}"#)
    })
}

/// The `type` values a page may send.
const PAGE_TYPES: &[&str] = &[
    "hello",
    "start",
    "points",
    "stop",
    "generate",
    "preview",
    "watch",
    "cursor",
    "request_detailed_stats",
    "track_dashboard_action",
    "set_name",
];
/// The `type` values the relay may send the renderer.
const RELAY_TYPES: &[&str] = &["hello", "page", "events", "watch"];
/// The `type` values the renderer may send the relay.
const RENDERER_TYPES: &[&str] = &[
    "welcome",
    "reply",
    "events_stored",
    "events_refused",
    "analytics",
    "error",
];

/// Refuses a frame that is not a JSON object before serde sees it.
///
/// The rule is: a message is a JSON object, so anything else at the top level (an array,
/// nested or not, a string, a number, `null`, nothing) is [`ErrorCode::BadJson`]; a value
/// of the wrong shape inside a message is [`ErrorCode::BadField`]. Without this check serde
/// would sort arrays by their contents, and would even accept `["stop","r1"]` as a `stop`,
/// because internally tagged enums also read a sequence whose first element is the tag.
/// It looks only at the first byte that is not JSON whitespace, so the hot path pays nothing.
fn expect_object(text: &str) -> Result<(), Error> {
    let found = match text
        .trim_start_matches([' ', '\t', '\n', '\r'])
        .bytes()
        .next()
    {
        Some(b'{') => return Ok(()),
        Some(b'[') => "an array",
        Some(b'"') => "a string",
        Some(b'-' | b'0'..=b'9') => "a number",
        Some(b't' | b'f') => "a boolean",
        Some(b'n') => "null",
        Some(_) => "something that is not json",
        None => "nothing",
    };
    Err(Error::new(
        ErrorCode::BadJson,
        format!("malformed json: expected a json object, found {found}"),
    ))
}

/// Sorts a serde_json error into a protocol error.
///
/// Runs only on the failure path, so it may afford a second parse to tell an unknown
/// `type` (the sender speaks something else) from a bad field (the sender has a bug).
fn classify(err: serde_json::Error, text: &str, known_types: &[&str]) -> Error {
    use serde_json::error::Category;
    let detail = err.to_string();
    let code = match err.classify() {
        Category::Syntax | Category::Eof | Category::Io => ErrorCode::BadJson,
        Category::Data => match serde_json::from_str::<serde_json::Value>(text) {
            Ok(serde_json::Value::Object(object)) => match object.get("type") {
                Some(serde_json::Value::String(kind)) if known_types.contains(&kind.as_str()) => {
                    ErrorCode::BadField
                }
                _ => ErrorCode::UnknownType,
            },
            Ok(_) => ErrorCode::BadJson,
            Err(_) => ErrorCode::BadField,
        },
    };
    let message = match code {
        ErrorCode::BadJson => format!("malformed json: {detail}"),
        ErrorCode::UnknownType => format!(
            "unknown message type (expected one of: {}): {detail}",
            known_types.join(", ")
        ),
        _ => format!("bad field: {detail}"),
    };
    Error::new(code, message)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn code_of(text: &str) -> ErrorCode {
        match decode_page(text, &Limits::default()) {
            Ok(msg) => panic!("{text:?} decoded as {msg:?}"),
            Err(err) => err.code,
        }
    }

    #[test]
    fn errors_are_sorted_by_cause() {
        assert_eq!(code_of("{"), ErrorCode::BadJson);
        assert_eq!(code_of("not json"), ErrorCode::BadJson);
        assert_eq!(code_of("[1,2]"), ErrorCode::BadJson);
        assert_eq!(code_of("[[1,2]]"), ErrorCode::BadJson);
        assert_eq!(code_of(r#"["stop","r1"]"#), ErrorCode::BadJson);
        assert_eq!(code_of(r#"{"type":"launch"}"#), ErrorCode::UnknownType);
        assert_eq!(code_of(r#"{"kind":"points"}"#), ErrorCode::UnknownType);
        assert_eq!(code_of(r#"{"type":"stop"}"#), ErrorCode::BadField);
        assert_eq!(
            code_of(r#"{"type":"stop","recording":"../etc"}"#),
            ErrorCode::BadField
        );
        assert_eq!(
            code_of(
                r#"{"type":"points","recording":"r1","seq":0,"viewport":{"width":10,"height":10},"points":[[1,2,0,"move"],[11,2,0,"move"]]}"#
            ),
            ErrorCode::OutOfRange
        );
        assert_eq!(
            code_of(
                r#"{"type":"points","recording":"r1","seq":0,"viewport":{"width":10,"height":10},"points":[[1e300,2,0,"move"]]}"#
            ),
            ErrorCode::OutOfRange
        );
        assert_eq!(
            code_of(
                r#"{"type":"points","recording":"r1","seq":0,"viewport":{"width":10,"height":10},"points":[[1,2,0,"hover"]]}"#
            ),
            ErrorCode::BadField
        );
        assert_eq!(
            code_of(r#"{"type":"start","recording":"r1","viewport":{"width":0,"height":10}}"#),
            ErrorCode::OutOfRange
        );
    }

    #[test]
    fn messages_name_the_problem() {
        let err = decode_page(r#"{"type":"stop"}"#, &Limits::default()).unwrap_err();
        assert!(err.message.contains("recording"), "{}", err.message);
        let err = decode_page(r#"{"type":"launch"}"#, &Limits::default()).unwrap_err();
        assert!(err.message.contains("launch"), "{}", err.message);
    }
}
