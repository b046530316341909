//! One HTTP/1.1 request written by hand, so a test controls every header (a foreign
//! `Host`, an `Origin`, a body of any shape) and reads the answer as the bytes came.

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// The answer to [`http_request`].
#[derive(Debug, Clone)]
pub struct RawResponse {
    /// The status code (0 if the answer had no status line).
    pub status: u16,
    /// The head, lower-cased, for `contains` checks on header lines.
    pub head: String,
    /// The body as text.
    pub body: String,
}

/// Sends `method path` to `addr` with `Host: addr`, `connection: close`, the given extra
/// headers and `body`, and reads the whole answer.
///
/// # Panics
/// If the connection fails: the test fails.
pub async fn http_request(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> RawResponse {
    let stream = tokio::net::TcpStream::connect(addr)
        .await
        .expect("connect for the request");
    http_request_on(stream, addr, method, path, headers, body).await
}

/// [`http_request`] over a connection already open (TLS, or from a chosen source address),
/// naming `host` in the `Host` header.
///
/// # Panics
/// If the connection fails: the test fails.
pub async fn http_request_on(
    mut stream: impl AsyncRead + AsyncWrite + Unpin,
    host: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> RawResponse {
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nhost: {host}\r\nconnection: close\r\ncontent-length: {}\r\n",
        body.len()
    );
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    stream
        .write_all(head.as_bytes())
        .await
        .expect("write the head");
    stream
        .write_all(body.as_bytes())
        .await
        .expect("write the body");
    let mut reply = Vec::new();
    if let Err(err) = stream.read_to_end(&mut reply).await {
        // A TLS peer may close without its close_notify once the answer is out.
        assert!(
            err.kind() == std::io::ErrorKind::UnexpectedEof && !reply.is_empty(),
            "read the answer: {err}"
        );
    }
    let reply = String::from_utf8_lossy(&reply).into_owned();
    let (head, body) = reply.split_once("\r\n\r\n").unwrap_or((&reply, ""));
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or(0);
    RawResponse {
        status,
        head: head.to_ascii_lowercase(),
        body: body.to_owned(),
    }
}
