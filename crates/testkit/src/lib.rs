//! Test helpers shared by the integration tests of every crate.
//!
//! Everything here talks to the real servers over real loopback sockets; nothing mocks a
//! tier. Waiting is always "poll until a condition holds or a deadline passes", never a
//! fixed sleep.

pub mod nats;
pub mod nats_cluster;
pub mod postgres;
mod process;
mod raw_http;
mod renderer_link;
pub mod tls;

pub use process::ServerProcess;
pub use raw_http::{http_request, http_request_on, RawResponse};
pub use renderer_link::{batch_frame, link_as_relay};

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{anyhow, bail, Context as _};
use futures_util::{SinkExt, StreamExt};
use http_body_util::{BodyExt, Empty};
use hyper::header::HOST;
use hyper::Request;
use hyper_util::rt::TokioIo;
use protocol::ServerMessage;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

/// How long any single wait in a test may take before the test fails.
pub const DEADLINE: Duration = Duration::from_secs(15);

/// A folder under the system temp dir, removed on drop.
#[derive(Debug)]
pub struct TempDir(PathBuf);

impl TempDir {
    /// A new, empty, uniquely named folder.
    pub fn new(label: &str) -> Self {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let path = std::env::temp_dir().join(format!(
            "heatmap-test-{label}-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).expect("create temp dir"); // ok: test helper, fails the test
        TempDir(path)
    }

    /// The folder's path.
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Polls `check` until it returns `Some`, or fails after [`DEADLINE`].
pub async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        if tokio::time::Instant::now() > deadline {
            panic!("timed out waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A byte stream a client can speak over: plain TCP or TLS.
pub trait Io: AsyncRead + AsyncWrite + Unpin + Send {}

impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// A WebSocket client speaking JSON text frames.
pub struct WsClient {
    socket: WebSocketStream<Box<dyn Io>>,
}

impl WsClient {
    /// Connects to `url`, with extra request headers.
    pub async fn connect_with(url: &str, headers: &[(&'static str, &str)]) -> anyhow::Result<Self> {
        let request = url.into_client_request()?;
        let authority = request
            .uri()
            .authority()
            .map(|authority| authority.as_str().to_owned())
            .context("a url with host and port")?;
        let stream = tokio::time::timeout(DEADLINE, TcpStream::connect(&authority))
            .await
            .context("connect timed out")?
            .with_context(|| format!("connect to {authority}"))?;
        let _ = stream.set_nodelay(true);
        Self::connect_on(Box::new(stream), url, headers).await
    }

    /// Opens the WebSocket `url` (`ws://` or `wss://`) over `stream`, already connected (and
    /// for `wss://`, through its TLS handshake), with extra request headers.
    pub async fn connect_on(
        stream: Box<dyn Io>,
        url: &str,
        headers: &[(&'static str, &str)],
    ) -> anyhow::Result<Self> {
        let mut request = url.into_client_request()?;
        for (name, value) in headers {
            request.headers_mut().insert(*name, value.parse()?);
        }
        let (socket, _) =
            tokio::time::timeout(DEADLINE, tokio_tungstenite::client_async(request, stream))
                .await
                .context("connect timed out")??;
        Ok(WsClient { socket })
    }

    /// Connects to `url`.
    pub async fn connect(url: &str) -> anyhow::Result<Self> {
        Self::connect_with(url, &[]).await
    }

    /// Sends a text frame.
    pub async fn send_text(&mut self, text: impl Into<String>) {
        self.socket
            .send(Message::text(text.into()))
            .await
            .expect("send text frame"); // ok: test helper, fails the test
    }

    /// Sends a JSON value.
    pub async fn send_json(&mut self, value: serde_json::Value) {
        self.send_text(value.to_string()).await;
    }

    /// Sends any frame.
    pub async fn send_frame(&mut self, msg: Message) -> anyhow::Result<()> {
        Ok(self.socket.send(msg).await?)
    }

    /// The next frame, or an error after [`DEADLINE`].
    pub async fn next_frame(&mut self) -> anyhow::Result<Option<Message>> {
        match tokio::time::timeout(DEADLINE, self.socket.next()).await {
            Err(_) => bail!("no frame within {DEADLINE:?}"),
            Ok(None) => Ok(None),
            Ok(Some(frame)) => Ok(Some(frame?)),
        }
    }

    /// The next text frame as JSON, skipping control frames.
    pub async fn next_json(&mut self) -> anyhow::Result<serde_json::Value> {
        loop {
            match self.next_frame().await? {
                Some(Message::Text(text)) => return Ok(serde_json::from_str(text.as_str())?),
                Some(Message::Close(frame)) => bail!("closed: {frame:?}"),
                None => bail!("connection ended"),
                Some(_) => continue,
            }
        }
    }

    /// Skips messages until one matches `pred`, which is returned.
    pub async fn wait_for(
        &mut self,
        what: &str,
        pred: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        loop {
            let msg = self
                .next_json()
                .await
                .unwrap_or_else(|err| panic!("waiting for {what}: {err}"));
            if pred(&msg) {
                return msg;
            }
        }
    }

    /// Waits for a message of `type`, and decodes it as a [`ServerMessage`].
    pub async fn wait_for_type(&mut self, kind: &str) -> ServerMessage {
        let msg = self.wait_for(kind, |msg| msg["type"] == kind).await;
        serde_json::from_value(msg).expect("a well-formed server message") // ok: test helper, fails the test
    }

    /// The close code the server ends with, skipping other frames.
    pub async fn close_code(&mut self) -> Option<u16> {
        loop {
            match self.next_frame().await {
                Ok(Some(Message::Close(frame))) => return frame.map(|frame| frame.code.into()),
                Ok(Some(_)) => continue,
                Ok(None) | Err(_) => return None,
            }
        }
    }
}

/// A fetched HTTP response.
#[derive(Debug)]
pub struct HttpResponse {
    /// Status code.
    pub status: u16,
    /// `Content-Type`, if any.
    pub content_type: Option<String>,
    /// The body.
    pub body: bytes::Bytes,
}

/// `GET http://{addr}{path}` with extra headers.
pub async fn http_get_with(
    addr: &str,
    path: &str,
    headers: &[(&'static str, &str)],
) -> anyhow::Result<HttpResponse> {
    let stream = TcpStream::connect(addr).await?;
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(connection);
    let mut request = Request::get(path).header(HOST, addr);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = tokio::time::timeout(
        DEADLINE,
        sender.send_request(request.body(Empty::<bytes::Bytes>::new())?),
    )
    .await
    .context("request timed out")??;
    let status = response.status().as_u16();
    let content_type = response
        .headers()
        .get(hyper::header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .map(str::to_owned);
    let body = response.into_body().collect().await?.to_bytes();
    Ok(HttpResponse {
        status,
        content_type,
        body,
    })
}

/// `GET http://{addr}{path}`.
pub async fn http_get(addr: &str, path: &str) -> anyhow::Result<HttpResponse> {
    http_get_with(addr, path, &[]).await
}

/// A decoded PNG: size and RGB(A) pixels.
#[derive(Debug)]
pub struct Image {
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// Bytes per pixel (3 or 4).
    pub channels: usize,
    /// Row-major pixels.
    pub pixels: Vec<u8>,
}

impl Image {
    /// Decodes PNG bytes; a palette image (the renderer writes heat on white or on
    /// transparency as one) is expanded to RGB, or RGBA when it has transparency.
    pub fn decode(bytes: &[u8]) -> anyhow::Result<Self> {
        if !bytes.starts_with(b"\x89PNG\r\n\x1a\n") {
            bail!("not a png: starts with {:?}", &bytes[..bytes.len().min(8)]);
        }
        let mut decoder = png::Decoder::new(std::io::Cursor::new(bytes));
        decoder.set_transformations(png::Transformations::EXPAND);
        let mut reader = decoder.read_info()?;
        let mut pixels = vec![
            0;
            reader
                .output_buffer_size()
                .ok_or_else(|| anyhow!("image too large"))?
        ];
        let info = reader.next_frame(&mut pixels)?;
        pixels.truncate(info.buffer_size());
        let channels = match info.color_type {
            png::ColorType::Rgb => 3,
            png::ColorType::Rgba => 4,
            other => bail!("unexpected colour type {other:?}"),
        };
        Ok(Image {
            width: info.width,
            height: info.height,
            channels,
            pixels,
        })
    }

    /// The RGB of pixel `(x, y)`.
    pub fn rgb(&self, x: u32, y: u32) -> [u8; 3] {
        let idx = (y as usize * self.width as usize + x as usize) * self.channels;
        [self.pixels[idx], self.pixels[idx + 1], self.pixels[idx + 2]]
    }

    /// How far a pixel is from plain white: 0 on the background, larger where heat is drawn.
    pub fn heat(&self, x: u32, y: u32) -> u32 {
        self.rgb(x, y)
            .iter()
            .map(|&channel| 255 - u32::from(channel))
            .sum()
    }
}

/// WebSocket opcodes for [`RawWs::send_frame`] (RFC 6455, section 5.2).
pub mod opcode {
    /// A text frame.
    pub const TEXT: u8 = 0x1;
    /// A binary frame.
    pub const BINARY: u8 = 0x2;
    /// A Close frame.
    pub const CLOSE: u8 = 0x8;
}

/// A WebSocket client written by hand over a plain TCP stream.
///
/// It sends the frames a client library refuses to build (unmasked, invalid UTF-8, a bad
/// Close), so tests can check how a server answers a peer that breaks RFC 6455.
#[derive(Debug)]
pub struct RawWs {
    stream: TcpStream,
    /// Bytes read past the handshake's blank line, or past the last frame.
    buffered: Vec<u8>,
}

impl RawWs {
    /// Connects to `addr` and upgrades `path` with a hand-made handshake.
    ///
    /// # Errors
    /// If the connection fails or the server answers anything but `101`.
    pub async fn connect(addr: &str, path: &str) -> anyhow::Result<Self> {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut stream = TcpStream::connect(addr)
            .await
            .with_context(|| format!("connect {addr}"))?;
        let request = format!(
            "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        );
        stream.write_all(request.as_bytes()).await?;
        let mut buffered = Vec::new();
        let head_end = loop {
            if let Some(pos) = buffered.windows(4).position(|w| w == b"\r\n\r\n") {
                break pos + 4;
            }
            let mut chunk = [0u8; 1024];
            let n = tokio::time::timeout(DEADLINE, stream.read(&mut chunk))
                .await
                .context("timed out waiting for the handshake answer")??;
            if n == 0 {
                bail!("connection closed during the handshake");
            }
            buffered.extend_from_slice(&chunk[..n]);
        };
        let head = String::from_utf8_lossy(&buffered[..head_end]).into_owned();
        if !head.starts_with("HTTP/1.1 101") {
            bail!("upgrade refused: {head}");
        }
        buffered.drain(..head_end);
        Ok(RawWs { stream, buffered })
    }

    /// Sends one final frame; `masked` is what RFC 6455 requires of a client.
    pub async fn send_frame(&mut self, opcode: u8, payload: &[u8], masked: bool) {
        use tokio::io::AsyncWriteExt;
        let mut frame = vec![0x80 | opcode];
        let mask_bit = if masked { 0x80 } else { 0 };
        match payload.len() {
            len @ 0..=125 => frame.push(mask_bit | len as u8),
            len @ 126..=0xffff => {
                frame.push(mask_bit | 126);
                frame.extend_from_slice(&(len as u16).to_be_bytes());
            }
            len => {
                frame.push(mask_bit | 127);
                frame.extend_from_slice(&(len as u64).to_be_bytes());
            }
        }
        if masked {
            let key = [0x1f, 0x2e, 0x3d, 0x4c];
            frame.extend_from_slice(&key);
            frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
        } else {
            frame.extend_from_slice(payload);
        }
        // A server may close before reading it all; the reply is what the test checks.
        let _ = self.stream.write_all(&frame).await;
    }

    /// Sends a masked Close frame with `code` and no reason.
    pub async fn send_close(&mut self, code: u16) {
        self.send_frame(opcode::CLOSE, &code.to_be_bytes(), true)
            .await;
    }

    /// Reads frames until a Close and returns its code (`None` for a Close without one).
    ///
    /// # Errors
    /// If the connection ends without a Close or none arrives within [`DEADLINE`].
    pub async fn close_reply(&mut self) -> anyhow::Result<Option<u16>> {
        tokio::time::timeout(DEADLINE, async {
            loop {
                let (opcode, payload) = self.read_frame().await?;
                if opcode == opcode::CLOSE {
                    return Ok(payload
                        .get(..2)
                        .map(|code| u16::from_be_bytes([code[0], code[1]])));
                }
            }
        })
        .await
        .context("timed out waiting for a close frame")?
    }

    /// Reads one frame from the server (servers never mask).
    async fn read_frame(&mut self) -> anyhow::Result<(u8, Vec<u8>)> {
        loop {
            if let Some((opcode, payload, used)) = parse_frame(&self.buffered) {
                self.buffered.drain(..used);
                return Ok((opcode, payload));
            }
            use tokio::io::AsyncReadExt;
            let mut chunk = [0u8; 4096];
            let n = self.stream.read(&mut chunk).await?;
            if n == 0 {
                bail!("the server closed the connection without a close frame");
            }
            self.buffered.extend_from_slice(&chunk[..n]);
        }
    }
}

/// One unmasked frame from the front of `bytes`: opcode, payload and bytes used.
fn parse_frame(bytes: &[u8]) -> Option<(u8, Vec<u8>, usize)> {
    let opcode = bytes.first()? & 0x0f;
    let (len, header) = match bytes.get(1)? & 0x7f {
        126 => (
            u16::from_be_bytes([*bytes.get(2)?, *bytes.get(3)?]) as usize,
            4,
        ),
        127 => {
            let len: [u8; 8] = bytes.get(2..10)?.try_into().ok()?;
            (u64::from_be_bytes(len) as usize, 10)
        }
        len => (len as usize, 2),
    };
    let payload = bytes.get(header..header + len)?.to_vec();
    Some((opcode, payload, header + len))
}
