//! Response builders for the few kinds of answer our servers give.

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{HeaderValue, CACHE_CONTROL, CONTENT_TYPE};
use hyper::{Response, StatusCode};

/// The body type of every response: small, fully buffered answers.
pub type Body = Full<Bytes>;

/// A response with a body and a content type.
pub fn with_body(
    status: StatusCode,
    content_type: &'static str,
    body: impl Into<Bytes>,
) -> Response<Body> {
    let mut response = Response::new(Full::new(body.into()));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
        .headers_mut()
        .insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// A plain-text answer, used for errors so that a person with curl can read them.
pub fn text(status: StatusCode, message: impl Into<String>) -> Response<Body> {
    let mut message = message.into();
    message.push('\n');
    with_body(status, "text/plain; charset=utf-8", message)
}

/// A JSON answer.
pub fn json(status: StatusCode, body: String) -> Response<Body> {
    with_body(status, "application/json", body)
}

/// A JSON error, `{"error": "…"}`: the one shape every API error has, so a client reads
/// any status the same way.
pub fn json_error(status: StatusCode, message: impl Into<String>) -> Response<Body> {
    json(
        status,
        serde_json::json!({ "error": message.into() }).to_string(),
    )
}
