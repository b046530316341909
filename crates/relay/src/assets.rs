//! The recorder page, compiled into the binary so the relay runs from any folder.

/// One embedded file.
pub(crate) struct Asset {
    /// Its `Content-Type`.
    pub content_type: &'static str,
    /// Its bytes.
    pub body: &'static [u8],
}

/// The file served at `path`, if any.
pub(crate) fn lookup(path: &str) -> Option<Asset> {
    let (content_type, body): (&str, &[u8]) = match path {
        "/" | "/index.html" => (
            "text/html; charset=utf-8",
            include_bytes!("../../../web/index.html"),
        ),
        "/app.js" => (
            "text/javascript; charset=utf-8",
            include_bytes!("../../../web/app.js"),
        ),
        "/style.css" => (
            "text/css; charset=utf-8",
            include_bytes!("../../../web/style.css"),
        ),
        "/favicon.svg" => ("image/svg+xml", include_bytes!("../../../web/favicon.svg")),
        "/t.js" => (
            "text/javascript; charset=utf-8",
            include_bytes!("../../../web/t.js"),
        ),
        "/dashboard" | "/dashboard.html" => (
            "text/html; charset=utf-8",
            include_bytes!("../../../web/dashboard.html"),
        ),
        "/presence.js" => (
            "text/javascript; charset=utf-8",
            include_bytes!("../../../web/presence.js"),
        ),
        "/dashboard.js" => (
            "text/javascript; charset=utf-8",
            include_bytes!("../../../web/dashboard.js"),
        ),
        "/insights.js" => (
            "text/javascript; charset=utf-8",
            include_bytes!("../../../web/insights.js"),
        ),
        "/demo/" | "/demo/index.html" => (
            "text/html; charset=utf-8",
            include_bytes!("../../../web/demo/index.html"),
        ),
        "/demo/pricing.html" => (
            "text/html; charset=utf-8",
            include_bytes!("../../../web/demo/pricing.html"),
        ),
        "/demo/demo.css" => (
            "text/css; charset=utf-8",
            include_bytes!("../../../web/demo/demo.css"),
        ),
        _ => return None,
    };
    Some(Asset { content_type, body })
}
