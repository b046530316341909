//! The server side of the WebSocket handshake on a hyper request.
//!
//! hyper answers `101 Switching Protocols` and hands over the raw connection; tungstenite
//! then speaks WebSocket on it (see tokio-tungstenite's `server-custom-accept` example).

use hyper::body::Incoming;
use hyper::header::{
    HeaderValue, CONNECTION, SEC_WEBSOCKET_ACCEPT, SEC_WEBSOCKET_KEY, SEC_WEBSOCKET_VERSION,
    UPGRADE,
};
use hyper::upgrade::Upgraded;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use protocol::ErrorCode;
use tokio_tungstenite::tungstenite::error::ProtocolError;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role, WebSocketConfig};
use tokio_tungstenite::tungstenite::{Error as WsError, Message, Utf8Bytes};
use tokio_tungstenite::WebSocketStream;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use crate::http::{self, Body};
use crate::serve::ConnectionGuard;

/// Initial read and write buffer of each server-side socket (see [`accept`]).
const SOCKET_BUFFER_BYTES: usize = 4 * 1024;

/// A server-side WebSocket over an upgraded hyper connection.
pub type ServerSocket = WebSocketStream<TokioIo<Upgraded>>;

/// Keeps the connection's place under the server's connection limits; hold it for as long
/// as the socket is served.
pub type ConnectionHold = Option<Arc<ConnectionGuard>>;

/// The socket once hyper has handed over the connection (`None` if the upgrade failed).
pub type PendingSocket =
    Pin<Box<dyn Future<Output = Option<(ServerSocket, ConnectionHold)>> + Send>>;

/// Whether the request asks for a WebSocket upgrade.
pub fn is_upgrade(request: &Request<Incoming>) -> bool {
    let has_token = |name, token: &str| {
        request
            .headers()
            .get_all(name)
            .iter()
            .filter_map(|value| value.to_str().ok())
            .flat_map(|value| value.split(','))
            .any(|part| part.trim().eq_ignore_ascii_case(token))
    };
    has_token(CONNECTION, "upgrade") && has_token(UPGRADE, "websocket")
}

/// Answers the handshake and returns the future socket.
///
/// The caller returns the response to hyper, then awaits the socket in a task of its own.
/// `max_message_bytes` bounds one message (and one frame); a larger one ends the socket
/// with a capacity error that [`Inbound::sort`] turns into close code 1009.
///
/// # Errors
/// A `400` response when the request lacks a usable `Sec-WebSocket-Key` or version.
#[allow(clippy::result_large_err)]
pub fn accept(
    mut request: Request<Incoming>,
    max_message_bytes: usize,
) -> Result<(Response<Body>, PendingSocket), Response<Body>> {
    let version_ok = request
        .headers()
        .get(SEC_WEBSOCKET_VERSION)
        .is_some_and(|version| version == "13");
    let Some(key) = request
        .headers()
        .get(SEC_WEBSOCKET_KEY)
        .filter(|_| version_ok)
    else {
        return Err(http::text(
            StatusCode::BAD_REQUEST,
            "websocket upgrade needs sec-websocket-key and sec-websocket-version 13",
        ));
    };
    let accept_key = derive_accept_key(key.as_bytes());
    let hold = request.extensions_mut().remove::<Arc<ConnectionGuard>>();
    let on_upgrade = hyper::upgrade::on(&mut request);
    let mut response = Response::new(Body::default());
    *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let headers = response.headers_mut();
    headers.insert(CONNECTION, HeaderValue::from_static("Upgrade"));
    headers.insert(UPGRADE, HeaderValue::from_static("websocket"));
    if let Ok(value) = HeaderValue::from_str(&accept_key) {
        headers.insert(SEC_WEBSOCKET_ACCEPT, value);
    }
    // tungstenite allocates its read buffer up front (128 KiB by default): with thousands
    // of mostly idle pages that was 1.3 GiB for 10,000 sockets. Small buffers grow on
    // demand for the occasional large batch.
    let config = WebSocketConfig::default()
        .read_buffer_size(SOCKET_BUFFER_BYTES)
        .write_buffer_size(SOCKET_BUFFER_BYTES)
        .max_message_size(Some(max_message_bytes))
        .max_frame_size(Some(max_message_bytes));
    let socket = async move {
        match on_upgrade.await {
            Ok(upgraded) => {
                let socket = WebSocketStream::from_raw_socket(
                    TokioIo::new(upgraded),
                    Role::Server,
                    Some(config),
                )
                .await;
                Some((socket, hold))
            }
            Err(err) => {
                tracing::debug!(cause = %err, "websocket upgrade failed");
                None
            }
        }
    };
    Ok((response, Box::pin(socket)))
}

/// Answers the handshake and serves the socket with `serve` in a task of its own, which
/// keeps the connection's place under the server's limits for as long as it runs.
///
/// Returns the response for hyper: `101 Switching Protocols`, or `400` for a bad handshake.
pub fn upgrade<S, F>(
    request: Request<Incoming>,
    max_message_bytes: usize,
    serve: S,
) -> Response<Body>
where
    S: FnOnce(ServerSocket) -> F + Send + 'static,
    F: Future<Output = ()> + Send + 'static,
{
    match accept(request, max_message_bytes) {
        Ok((response, socket)) => {
            tokio::spawn(async move {
                if let Some((socket, _hold)) = socket.await {
                    serve(socket).await;
                }
            });
            response
        }
        Err(response) => response,
    }
}

/// One item of a server socket's read half, sorted for the read loop.
///
/// Both servers read through [`Inbound::sort`], so they answer a peer's Close and its
/// protocol errors the same way, as RFC 6455 asks.
#[derive(Debug)]
pub enum Inbound {
    /// A text message for the server to handle.
    Text(Utf8Bytes),
    /// A binary message; the servers answer it with a `binary_frame` error.
    Binary,
    /// A ping, a pong or the peer's Close: keep reading.
    ///
    /// tungstenite queues the answer (a pong, or a Close echoing the peer's code) and the
    /// next read sends it; after a Close that read then ends the stream ([`Inbound::Ended`]).
    /// A loop that stopped reading at the Close would drop the socket with the answer
    /// still queued, which is an unclean close for the peer.
    Control,
    /// The socket is done: the closing handshake finished, or the connection dropped.
    Ended,
    /// The peer broke the protocol or the size limit: send [`Violation::close_message`], count
    /// [`Violation::error`], log [`Violation::cause`] and stop reading.
    Violation(Violation),
}

/// A protocol error of the peer, with the Close frame that answers it.
#[derive(Debug)]
pub struct Violation {
    /// The close code: 1009 for a message over the size limit, 1007 for text that is not
    /// UTF-8, 1002 for anything else RFC 6455 forbids (an unmasked client frame, reserved
    /// bits, a Close with a one-byte payload).
    pub code: CloseCode,
    /// The Close frame's reason, short enough for a control frame; also the log's `why`.
    pub reason: &'static str,
    /// The counter to bump: `too_large` or `bad_frame`.
    pub error: ErrorCode,
    /// What tungstenite saw, for the log line.
    pub cause: WsError,
}

impl Violation {
    /// The Close frame as a message for the socket's write queue.
    ///
    /// tungstenite refuses reads after an error but still writes, so the frame reaches
    /// the peer through the ordinary writer.
    pub fn close_message(&self) -> Message {
        Message::Close(Some(CloseFrame {
            code: self.code,
            reason: self.reason.into(),
        }))
    }
}

impl Inbound {
    /// Sorts what `stream.next()` returned on a server socket.
    pub fn sort(item: Option<Result<Message, WsError>>) -> Inbound {
        let err = match item {
            Some(Ok(Message::Text(text))) => return Inbound::Text(text),
            Some(Ok(Message::Binary(_))) => return Inbound::Binary,
            Some(Ok(_)) => return Inbound::Control,
            None => return Inbound::Ended,
            Some(Err(err)) => err,
        };
        let (code, error, reason) = match &err {
            WsError::Capacity(_) => (CloseCode::Size, ErrorCode::TooLarge, "message too large"),
            WsError::Utf8(_) => (
                CloseCode::Invalid,
                ErrorCode::BadFrame,
                "text message is not utf-8",
            ),
            // The peer dropped the connection without a Close: nobody is left to answer.
            WsError::Protocol(ProtocolError::ResetWithoutClosingHandshake) => {
                return Inbound::Ended
            }
            WsError::Protocol(_) => (
                CloseCode::Protocol,
                ErrorCode::BadFrame,
                "websocket protocol violation",
            ),
            // I/O errors and the rest: the connection is gone or unusable.
            _ => return Inbound::Ended,
        };
        Inbound::Violation(Violation {
            code,
            reason,
            error,
            cause: err,
        })
    }
}
