//! Errors of decoding and validation, with a stable machine-readable code.

use serde::{Deserialize, Serialize};

/// Why a message was refused, as sent to the peer in an `error` message.
///
/// The codes are part of the wire contract (pages and tests match on them), so variants
/// are only ever added, never renamed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// The frame was not JSON, or not JSON of the expected shape at the top level.
    BadJson,
    /// The `type` field named a message this receiver does not know.
    UnknownType,
    /// A field was missing or of the wrong type.
    BadField,
    /// A number was NaN, infinite or outside the allowed range (coordinates, viewport).
    OutOfRange,
    /// The frame or the batch was larger than the receiver accepts.
    TooLarge,
    /// The sender exceeded its message rate; the message was not processed.
    RateLimited,
    /// The peer speaks another protocol version.
    UnsupportedVersion,
    /// The renderer is not connected; the page should retry once the link is back.
    RendererUnavailable,
    /// The recording named in the message is not known to the renderer.
    UnknownRecording,
    /// Generate was asked for a recording without a single point.
    NoPoints,
    /// The recording holds as many points as the renderer keeps for one recording.
    RecordingFull,
    /// Rendering or writing the image failed (for example, the output folder is not writable).
    RenderFailed,
    /// The server is busy (queue full); the message was not processed and may be retried.
    Busy,
    /// A binary frame arrived where only text frames are spoken.
    BinaryFrame,
    /// The renderer could not store the batch (disk full, folder unwritable); it was not
    /// acknowledged, so the page keeps it and resends later.
    StorageFailed,
    /// A frame broke the WebSocket protocol (RFC 6455): an unmasked client frame, a text
    /// message that is not UTF-8, reserved bits, a bad Close. Never sent as an `error`
    /// message: the connection is closed with 1002 or 1007 and this code is counted.
    BadFrame,
}

impl ErrorCode {
    /// Every code, for counters that keep one slot per code.
    pub const ALL: [ErrorCode; 16] = [
        ErrorCode::BadJson,
        ErrorCode::UnknownType,
        ErrorCode::BadField,
        ErrorCode::OutOfRange,
        ErrorCode::TooLarge,
        ErrorCode::RateLimited,
        ErrorCode::UnsupportedVersion,
        ErrorCode::RendererUnavailable,
        ErrorCode::UnknownRecording,
        ErrorCode::NoPoints,
        ErrorCode::RecordingFull,
        ErrorCode::RenderFailed,
        ErrorCode::Busy,
        ErrorCode::BinaryFrame,
        ErrorCode::StorageFailed,
        ErrorCode::BadFrame,
    ];

    /// The code as it appears on the wire, for logs and counter labels.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::BadJson => "bad_json",
            ErrorCode::UnknownType => "unknown_type",
            ErrorCode::BadField => "bad_field",
            ErrorCode::OutOfRange => "out_of_range",
            ErrorCode::TooLarge => "too_large",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::UnsupportedVersion => "unsupported_version",
            ErrorCode::RendererUnavailable => "renderer_unavailable",
            ErrorCode::UnknownRecording => "unknown_recording",
            ErrorCode::NoPoints => "no_points",
            ErrorCode::RecordingFull => "recording_full",
            ErrorCode::RenderFailed => "render_failed",
            ErrorCode::Busy => "busy",
            ErrorCode::BinaryFrame => "binary_frame",
            ErrorCode::StorageFailed => "storage_failed",
            ErrorCode::BadFrame => "bad_frame",
        }
    }

    /// A dense index into [`ErrorCode::ALL`], so counters can be a plain array.
    pub fn index(self) -> usize {
        // ALL lists every variant once, so the search always succeeds; 0 is unreachable.
        ErrorCode::ALL
            .iter()
            .position(|code| *code == self)
            .unwrap_or(0)
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A refused message: a code the sender can match on and a sentence a person can read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct Error {
    /// The stable category of the failure.
    pub code: ErrorCode,
    /// What exactly was wrong, lowercase, naming the field where there is one.
    pub message: String,
}

impl Error {
    /// Builds an error from a code and a message.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Error {
            code,
            message: message.into(),
        }
    }
}
