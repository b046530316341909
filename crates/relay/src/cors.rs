//! Which browser origins may open `/ws` or call the event API.
//!
//! One check for both: the relay's own origins ([`PublicOrigins`]) are always allowed, and so are the origins
//! listed (`--allow-origin` for `/ws`, `--site` for `/api/...`); non-browser clients send
//! no `Origin` at all. Only the event API answers listed origins with CORS headers.

use hyper::body::Incoming;
use hyper::header::{
    HeaderValue, ACCESS_CONTROL_ALLOW_HEADERS, ACCESS_CONTROL_ALLOW_METHODS,
    ACCESS_CONTROL_ALLOW_ORIGIN, ACCESS_CONTROL_EXPOSE_HEADERS, ACCESS_CONTROL_MAX_AGE, ORIGIN,
    VARY,
};
use hyper::{Request, Response};
use netkit::http::Body;

use crate::origins::PublicOrigins;

/// The outcome of the origin check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// No `Origin`, or the relay's own: no CORS headers needed.
    SameOrigin,
    /// A listed site: answer with `Access-Control-Allow-Origin` for it.
    Allowed(String),
    /// Anyone else.
    Refused(String),
}

/// Checks the request's `Origin` against the relay's own origins and the `listed` ones.
///
/// The `Host` header is not trusted for this: a DNS-rebinding page sends a `Host` that
/// matches its own `Origin`.
pub(crate) fn check(
    request: &Request<Incoming>,
    own: &PublicOrigins,
    listed: &[String],
) -> Verdict {
    let Some(origin) = request.headers().get(ORIGIN) else {
        return Verdict::SameOrigin;
    };
    let origin = origin.to_str().unwrap_or("<not ascii>").to_owned();
    if own.allows_origin(&origin) {
        Verdict::SameOrigin
    } else if listed
        .iter()
        .any(|site| site.trim_end_matches('/') == origin)
    {
        Verdict::Allowed(origin)
    } else {
        Verdict::Refused(origin)
    }
}

/// Adds the CORS headers for an allowed cross-origin caller.
pub(crate) fn allow(response: &mut Response<Body>, origin: &str) {
    let headers = response.headers_mut();
    if let Ok(value) = HeaderValue::from_str(origin) {
        headers.insert(ACCESS_CONTROL_ALLOW_ORIGIN, value);
    }
    headers.insert(VARY, HeaderValue::from_static("Origin"));
    headers.insert(
        ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static("GET, POST, OPTIONS"),
    );
    headers.insert(
        ACCESS_CONTROL_ALLOW_HEADERS,
        HeaderValue::from_static("content-type"),
    );
    headers.insert(ACCESS_CONTROL_MAX_AGE, HeaderValue::from_static("600"));
    // The snippet on another site waits as long as a 503 or 429 says; without this the
    // browser hides the header from it.
    headers.insert(
        ACCESS_CONTROL_EXPOSE_HEADERS,
        HeaderValue::from_static("retry-after"),
    );
}
