//! Which browser origins may open `/ws` or call the event API.
//!
//! One check for both: the relay's own origin is always allowed, and so are the origins
//! listed (`--allow-origin` for `/ws`, `--site` for `/api/...`); non-browser clients send
//! no `Origin` at all. Only the event API answers listed origins with CORS headers.

use hyper::body::Incoming;
use hyper::header::{
    HeaderValue, ACCESS_CONTROL_ALLOW_HEADERS, ACCESS_CONTROL_ALLOW_METHODS,
    ACCESS_CONTROL_ALLOW_ORIGIN, ACCESS_CONTROL_MAX_AGE, HOST, ORIGIN, VARY,
};
use hyper::{Request, Response};
use netkit::http::Body;

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

/// Checks the request's `Origin` against the relay's own host and the `listed` origins.
pub(crate) fn check(request: &Request<Incoming>, listed: &[String]) -> Verdict {
    let Some(origin) = request.headers().get(ORIGIN) else {
        return Verdict::SameOrigin;
    };
    let origin = origin.to_str().unwrap_or("<not ascii>").to_owned();
    let host = request
        .headers()
        .get(HOST)
        .and_then(|host| host.to_str().ok())
        .unwrap_or_default();
    if !host.is_empty()
        && (origin == format!("http://{host}") || origin == format!("https://{host}"))
    {
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
}
