//! The HTTP event API: `GET /api/analytics/{summary,sessions,session}`, `GET /api/heatmaps`
//! and `GET /api/insights/clicks` (rage and dead clicks per element), which the relay passes
//! through from dashboards (after its CORS check), and a direct
//! `POST /api/events` for clients of the renderer itself; the relay sends events over its
//! link instead (`link`). The renderer owns the state.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use ::analytics::{
    Event, HeatmapCells, HeatmapQuery, RawSelection, StoreError, WidthBucket as StoredBucket,
    HEAT_COLUMNS,
};
use heatmap::density::Density;
use heatmap::encode::encode_png;
use heatmap::grid::Grid;
use heatmap::render::{colourise, render_png_captioned, RenderInput, RenderSettings};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use hyper::header::{HeaderValue, RETRY_AFTER};
use hyper::{Method, Request, Response, StatusCode};
use netkit::http::{self, Body};
use protocol::analytics::{decode_events, ApiError, EventType, EventsAccepted};
use protocol::{HeatKind, OutputMode, RenderOptions};

use crate::context::Context;
use ::analytics::live::Filter;

/// Largest `POST /api/events` body (500 events of a few hundred bytes each).
const MAX_EVENTS_BODY: usize = 1024 * 1024;

/// Answers one `/api/...` request.
pub(crate) async fn handle(request: Request<Incoming>, ctx: Arc<Context>) -> Response<Body> {
    let path = request.uri().path().to_owned();
    let query = parse_query(request.uri().query().unwrap_or(""));
    match (request.method().clone(), path.as_str()) {
        (Method::POST, "/api/events") => post_events(request, ctx).await,
        (Method::GET, "/api/analytics/summary") => {
            let filter = match filter_of(&query, ctx.analytics.now_ms()) {
                Ok(filter) => filter,
                Err(message) => return bad_request(message),
            };
            // A ranged summary reads the store, which blocks.
            let job_ctx = ctx.clone();
            blocking(move || match job_ctx.analytics.summary(&filter) {
                Ok(summary) => json_ok(&summary),
                Err(err) => store_error(&err),
            })
            .await
        }
        (Method::GET, "/api/analytics/sessions") => match filter_of(&query, ctx.analytics.now_ms())
        {
            Ok(filter) => json_ok(&ctx.analytics.sessions(&filter)),
            Err(message) => bad_request(message),
        },
        (Method::GET, "/api/heatmaps") => {
            let job_ctx = ctx.clone();
            blocking(move || heatmap(&job_ctx, &query)).await
        }
        (Method::GET, "/api/analytics/session") => {
            let job_ctx = ctx.clone();
            blocking(move || session_clicks(&job_ctx, &query)).await
        }
        (Method::GET, "/api/insights/clicks") => {
            let job_ctx = ctx.clone();
            blocking(move || click_insights(&job_ctx, &query)).await
        }
        (Method::GET, confidence) if confidence.starts_with("/api/insights/confidence/") => {
            // The numbers behind one heatmap view, read exactly as the map reads them; the
            // kind is the path's last part (`/api/insights/confidence/click?page=…`).
            let mut query = query;
            let kind = confidence.trim_start_matches("/api/insights/confidence/");
            query.insert("kind".into(), kind.to_owned());
            query.insert("format".into(), "counts".into());
            let job_ctx = ctx.clone();
            blocking(move || heatmap(&job_ctx, &query)).await
        }
        (method, "/api/events") => error(
            StatusCode::METHOD_NOT_ALLOWED,
            format!("{method} /api/events: events are sent with POST"),
        ),
        (method, _) => error(
            StatusCode::NOT_FOUND,
            format!("no api at {method} {path}; see docs/protocol.md for the event API"),
        ),
    }
}

/// Runs `job` (store reads and writes, rendering) on a blocking thread.
async fn blocking(job: impl FnOnce() -> Response<Body> + Send + 'static) -> Response<Body> {
    tokio::task::spawn_blocking(job)
        .await
        .unwrap_or_else(|err| {
            http::text(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("api task failed: {err}"),
            )
        })
}

/// `POST /api/events` straight to the renderer (the relay sends events over its link
/// instead): the same writer, so the same group commit and the same meaning of 202.
async fn post_events(request: Request<Incoming>, ctx: Arc<Context>) -> Response<Body> {
    let body = match Limited::new(request.into_body(), MAX_EVENTS_BODY)
        .collect()
        .await
    {
        Ok(body) => body.to_bytes(),
        Err(_) => {
            return error(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("the body is over {MAX_EVENTS_BODY} bytes"),
            )
        }
    };
    let events = match decode_events(&body) {
        Ok(events) => events,
        Err(err) => return bad_request(err.to_string()),
    };
    match ctx.ingest.submit(events).await {
        Ok(accepted) => {
            let mut response = json_ok(&EventsAccepted { accepted });
            *response.status_mut() = StatusCode::ACCEPTED;
            response
        }
        Err(err) if err.retryable => {
            let mut response = error(
                StatusCode::SERVICE_UNAVAILABLE,
                format!(
                    "the renderer cannot store events now ({}); send them again later",
                    err.message
                ),
            );
            response
                .headers_mut()
                .insert(RETRY_AFTER, HeaderValue::from_static("1"));
            response
        }
        Err(err) => error(StatusCode::INTERNAL_SERVER_ERROR, err.message),
    }
}

/// A rage click, as Microsoft Clarity defines it: at least this many clicks of one
/// session ...
const RAGE_MIN_CLICKS: usize = 3;

/// ... within this many milliseconds of the first ...
const RAGE_WINDOW_MS: i64 = 1_000;

/// ... and within this many CSS pixels of it (in the document).
const RAGE_RADIUS_PX: f32 = 30.0;

/// Where in a session's clicks (oldest first) each rage burst starts: a burst is the
/// first click and every following one within [`RAGE_WINDOW_MS`] and [`RAGE_RADIUS_PX`]
/// of it, when there are at least [`RAGE_MIN_CLICKS`]; the next burst starts after it, so
/// five angry clicks are one burst, not three. Clicks without a position are near each
/// other when they name the same element.
///
/// Detected here, from the stored clicks, rather than in the snippet: history recorded
/// before the snippet knew of rage clicks counts too, and the thresholds can change
/// without a new snippet on every site.
fn rage_bursts(clicks: &[&Event]) -> Vec<usize> {
    let near = |first: &Event, other: &Event| match (first.position, other.position) {
        (Some(a), Some(b)) => (a.x - b.x).hypot(a.y - b.y) <= RAGE_RADIUS_PX,
        (None, None) => first.element.is_some() && first.element == other.element,
        _ => false,
    };
    let mut starts = Vec::new();
    let mut first = 0;
    while first < clicks.len() {
        let mut end = first + 1;
        while end < clicks.len()
            && clicks[end].at_ms - clicks[first].at_ms <= RAGE_WINDOW_MS
            && near(clicks[first], clicks[end])
        {
            end += 1;
        }
        if end - first >= RAGE_MIN_CLICKS {
            starts.push(first);
            first = end;
        } else {
            first += 1;
        }
    }
    starts
}

/// What the frustration list counts for one element.
#[derive(Debug, Default)]
struct ElementFrustration<'a> {
    clicks: u64,
    rage_bursts: u64,
    dead_clicks: u64,
    sessions: HashSet<&'a str>,
}

/// `GET /api/insights/clicks?page=&range=|from=&to=&limit=`: per clicked element, its
/// clicks, rage bursts, dead clicks and sessions, the worst first (rage bursts plus dead
/// clicks, then clicks), at most `--max-insight-elements`; with the spots of the rage
/// bursts and dead clicks (the latest `--max-listed-points`), so a dashboard can mark
/// them on the heatmap.
fn click_insights(ctx: &Context, query: &HashMap<String, String>) -> Response<Body> {
    let Some(page) = query.get("page") else {
        return bad_request("page is required, e.g. ?page=/pricing".into());
    };
    let mut filter = match filter_of(query, ctx.analytics.now_ms()) {
        Ok(filter) => filter,
        Err(message) => return bad_request(message),
    };
    if filter.kind.is_some() {
        return bad_request("type: the click insights read clicks only; leave it out".into());
    }
    filter.page = Some(page.clone());
    let max_elements = ctx.config.max_insight_elements.max(1);
    let limit = match query.get("limit") {
        None => max_elements,
        Some(text) => match text.parse::<usize>() {
            Ok(limit) if (1..=max_elements).contains(&limit) => limit,
            _ => {
                return bad_request(format!(
                "limit: {text:?} is not a number from 1 to {max_elements} (--max-insight-elements)"
            ))
            }
        },
    };
    let only = RawSelection {
        kind: Some(EventType::Click),
        session: None,
    };
    let raw = match ctx.analytics.store().events(
        filter.range(),
        &filter.store_filter(),
        &only,
        ctx.config.max_raw_events,
    ) {
        Ok(raw) => raw,
        Err(err) => return store_error(&err),
    };
    let truncated = raw.len() >= ctx.config.max_raw_events;
    let clicks: Vec<&Event> = raw
        .iter()
        .filter(|event| event.kind == EventType::Click)
        .collect();
    let mut by_session: HashMap<&str, Vec<&Event>> = HashMap::new();
    for &click in &clicks {
        by_session.entry(&click.session).or_default().push(click);
    }
    const NO_ELEMENT: &str = "(no element)";
    let mut elements: HashMap<&str, ElementFrustration<'_>> = HashMap::new();
    let mut spots: Vec<(i64, &'static str, &Event)> = Vec::new();
    let mut n_rage = 0u64;
    let mut n_dead = 0u64;
    for (session, session_clicks) in &by_session {
        for &click in session_clicks {
            let entry = elements
                .entry(click.element.as_deref().unwrap_or(NO_ELEMENT))
                .or_default();
            entry.clicks += 1;
            entry.sessions.insert(session);
            if click.dead == Some(true) {
                entry.dead_clicks += 1;
                n_dead += 1;
                spots.push((click.at_ms, "dead", click));
            }
        }
        for start in rage_bursts(session_clicks) {
            let click = session_clicks[start];
            if let Some(entry) = elements.get_mut(click.element.as_deref().unwrap_or(NO_ELEMENT)) {
                entry.rage_bursts += 1;
            }
            n_rage += 1;
            spots.push((click.at_ms, "rage", click));
        }
    }
    let n_elements = elements.len();
    let mut ranked: Vec<(&str, ElementFrustration<'_>)> = elements.into_iter().collect();
    ranked.sort_by(|(a_path, a), (b_path, b)| {
        (b.rage_bursts + b.dead_clicks)
            .cmp(&(a.rage_bursts + a.dead_clicks))
            .then(b.rage_bursts.cmp(&a.rage_bursts))
            .then(b.clicks.cmp(&a.clicks))
            .then(a_path.cmp(b_path))
    });
    ranked.truncate(limit);
    let listed: Vec<serde_json::Value> = ranked
        .iter()
        .map(|(path, counts)| {
            serde_json::json!({
                "path": path,
                "clicks": counts.clicks,
                "rage_bursts": counts.rage_bursts,
                "dead_clicks": counts.dead_clicks,
                "sessions": counts.sessions.len(),
            })
        })
        .collect();
    spots.sort_by_key(|(at_ms, _, _)| *at_ms);
    let skip = spots.len().saturating_sub(ctx.config.max_listed_points);
    let spots: Vec<serde_json::Value> = spots[skip..]
        .iter()
        .map(|(_, what, click)| {
            let position = click.position;
            serde_json::json!({
                "kind": what,
                "path": click.element.as_deref(),
                "ox": click.element_offset.map(|offset| offset.0),
                "oy": click.element_offset.map(|offset| offset.1),
                "x": position.map(|p| p.x),
                "y": position.map(|p| p.y),
                "dw": position.map(|p| p.doc_width),
                "dh": position.map(|p| p.doc_height),
            })
        })
        .collect();
    json_ok(&serde_json::json!({
        "page": page,
        "range": range_text(query, &filter),
        "clicks": clicks.len(),
        "sessions": by_session.len(),
        "rage_bursts": n_rage,
        "dead_clicks": n_dead,
        "n_elements": n_elements,
        "truncated": truncated,
        "elements": listed,
        "spots": spots,
    }))
}

/// The answer to a store error: 503 with `Retry-After` when trying again later can work
/// (a full disk, a busy database), 400 for a query the store cannot answer, else 500.
fn store_error(err: &StoreError) -> Response<Body> {
    if err.is_retryable() {
        let mut response = error(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("the renderer cannot store or read events now ({err}); send them again later"),
        );
        response
            .headers_mut()
            .insert(RETRY_AFTER, HeaderValue::from_static("1"));
        return response;
    }
    match err {
        StoreError::InvalidQuery(message) => bad_request(message.clone()),
        other => error(StatusCode::INTERNAL_SERVER_ERROR, other.to_string()),
    }
}

/// What `GET /api/heatmaps` answers with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    Png,
    Json,
    /// The events themselves under `clicks` (the first name, kept for old dashboards).
    Clicks,
    /// The events themselves under `points`, for any kind.
    Points,
    /// Only the events and sessions behind the map (`/api/insights/confidence/{kind}`).
    Counts,
    /// The counts of the JSON grid as a spreadsheet: `x,y,count` per non-empty cell under
    /// a header naming the page, kind, widths and range, for a site owner's own analysis.
    Csv,
}

/// One event as a heatmap draws it: a point in the document (fractions of its width and
/// height) and, for the raw reads, what else the event carried.
#[derive(Debug, Clone)]
struct Placed {
    point: [u16; 2],
    dw: f32,
    dh: f32,
    x: f32,
    y: f32,
    session: String,
    path: Option<String>,
    offset: (f32, f32),
    depth: f32,
}

/// Renders the heatmap of one page for one kind and viewport-width bucket: clicks and
/// moves in the three screen buckets from the store's pre-counted cells (cost independent
/// of the number of events); scroll maps, pixel widths and click lists from raw events.
fn heatmap(ctx: &Context, query: &HashMap<String, String>) -> Response<Body> {
    let Some(page) = query.get("page") else {
        return bad_request("page is required, e.g. ?page=/pricing".into());
    };
    let kind = match query.get("kind").map(String::as_str).unwrap_or("click") {
        "click" => EventType::Click,
        "move" => EventType::Move,
        "scroll" => EventType::Scroll,
        other => return bad_request(format!("kind {other:?} is not one of: move, click, scroll")),
    };
    let bucket =
        match WidthBucket::parse(query.get("width").map(String::as_str).unwrap_or("desktop")) {
            Ok(bucket) => bucket,
            Err(message) => return bad_request(message),
        };
    let mut filter = match filter_of(query, ctx.analytics.now_ms()) {
        Ok(filter) => filter,
        Err(message) => return bad_request(message),
    };
    filter.page = Some(page.clone());
    filter.kind = Some(kind);
    let format = match query.get("format").map(String::as_str) {
        None | Some("png") => Format::Png,
        Some("json") => Format::Json,
        Some("clicks") => Format::Clicks,
        Some("points") => Format::Points,
        Some("csv") => Format::Csv,
        Some("counts") => Format::Counts,
        Some(other) => {
            return bad_request(format!(
                "format {other:?} is not one of: png, json, csv, counts, points, clicks"
            ))
        }
    };
    let output = match query.get("output").map(String::as_str) {
        None | Some("image") => OutputMode::Image,
        Some("overlay") => OutputMode::Overlay,
        Some(other) => {
            return bad_request(format!("output {other:?} is not one of: image, overlay"))
        }
    };
    let store = ctx.analytics.store();
    let range = filter.range();
    let width = bucket.image_width();
    let pre_counted = match (kind, bucket.stored(), format) {
        (
            EventType::Click | EventType::Move,
            Some(stored),
            Format::Png | Format::Json | Format::Csv | Format::Counts,
        ) => Some(stored),
        _ => None,
    };
    // Pre-counted maps pass each stored cell's centre once with its count (`counts`), so
    // their cost follows the cells, not the events; raw reads have one point per event.
    let (events, counts, n_events, ratio) = if let Some(stored) = pre_counted {
        let cells = match store.heatmap(&HeatmapQuery {
            page: page.clone(),
            kind,
            bucket: stored,
            range,
        }) {
            Ok(cells) => cells,
            Err(err) => return store_error(&err),
        };
        let ratio = cells.mean_aspect as f32;
        let (placed, counts) = cell_points(&cells, ratio);
        (placed, counts, cells.events, ratio)
    } else {
        let only = RawSelection {
            kind: Some(kind),
            session: None,
        };
        let raw = match store.events(
            range,
            &filter.store_filter(),
            &only,
            ctx.config.max_raw_events,
        ) {
            Ok(raw) => raw,
            Err(err) => return store_error(&err),
        };
        let placed: Vec<Placed> = raw
            .into_iter()
            .filter(|event| event.kind == kind)
            .filter_map(|event| {
                let position = event.position?;
                let usable = bucket.contains(position.viewport_width)
                    && position.doc_width > 0.0
                    && position.doc_height > 0.0;
                usable.then(|| Placed {
                    point: [
                        fraction(position.x / position.doc_width),
                        fraction(position.y / position.doc_height),
                    ],
                    dw: position.doc_width,
                    dh: position.doc_height,
                    x: position.x,
                    y: position.y,
                    session: event.session,
                    path: event.element,
                    offset: event.element_offset.unwrap_or((0.5, 0.5)),
                    depth: event.depth.unwrap_or(0.0),
                })
            })
            .collect();
        let mut ratios: Vec<f32> = placed.iter().map(|event| event.dh / event.dw).collect();
        ratios.sort_by(f32::total_cmp);
        let ratio = ratios.get(ratios.len() / 2).copied().unwrap_or(0.0);
        let n_events = placed.len() as u64;
        (placed, Vec::new(), n_events, ratio)
    };
    if n_events == 0 {
        return error(
            StatusCode::NOT_FOUND,
            format!(
                "no {} events for {page} at {} widths yet",
                kind.as_str(),
                bucket.name()
            ),
        );
    }
    let height = ((width as f32 * ratio).round() as u32).clamp(width / 2, 8192);
    let n_sessions = if pre_counted.is_some() {
        // The cells do not know their sessions: the page's visitors over the range.
        match store.totals(range, &filter.store_filter(), 0) {
            Ok(totals) => totals.sessions as usize,
            Err(err) => return store_error(&err),
        }
    } else {
        sessions_of(&events)
    };
    let points: Vec<[u16; 2]> = events.iter().map(|event| event.point).collect();
    match format {
        Format::Png => {}
        Format::Json => return grid_json(&points, &counts, n_sessions, kind, width, height),
        Format::Counts => {
            return json_ok(&serde_json::json!({
                "kind": kind.as_str(),
                "events": n_events,
                "sessions": n_sessions,
            }))
        }
        Format::Csv => {
            let header = CsvHeader {
                page,
                kind,
                widths: &bucket.name(),
                range: &range_text(query, &filter),
                n_sessions,
            };
            return grid_csv(&header, &points, &counts, width, height);
        }
        Format::Clicks => return points_json(&events, n_sessions, kind, "clicks", ctx),
        Format::Points => return points_json(&events, n_sessions, kind, "points", ctx),
    }
    let settings = RenderSettings {
        width,
        height,
        bandwidth: (width as f32 / 80.0).max(4.0),
        ..ctx.render_settings.with_options(&RenderOptions {
            kind: Some(if kind == EventType::Click {
                HeatKind::Clicks
            } else {
                HeatKind::Moves
            }),
            output: Some(output),
            ..RenderOptions::default()
        })
    };
    let png = if kind == EventType::Scroll {
        scroll_map(&events, &settings)
    } else {
        type Points<'a> = (&'a [[u16; 2]], &'a [u32]);
        let none: Points<'_> = (&[], &[]);
        let ((moves, move_counts), (clicks, click_counts)) = if kind == EventType::Click {
            (none, (&points[..], &counts[..]))
        } else {
            ((&points[..], &counts[..]), none)
        };
        let input = RenderInput {
            moves,
            clicks,
            move_counts,
            click_counts,
            duration_ms: 0,
            started: "",
        };
        let caption = page_caption(
            kind,
            n_events,
            n_sessions,
            &bucket.name(),
            &range_text(query, &filter),
        );
        render_png_captioned(&input, &settings, &caption).map(|rendered| rendered.png)
    };
    match png {
        Ok(png) => http::with_body(StatusCode::OK, "image/png", png),
        Err(err) => error(StatusCode::INTERNAL_SERVER_ERROR, err.to_string()),
    }
}

/// Most clicks one session's answer lists (the dialog draws them on small canvases).
const MAX_SESSION_CLICKS: usize = 2_000;

/// One session's clicks, with their pages and document positions, for the dashboard's
/// session dialog (a mini heatmap per page). The store has no index by session, so this
/// reads the session's span (`from` and `to`, both required) and the query keeps the
/// session's clicks alone: bounded by `--max-raw-events` like every raw read, with
/// `truncated` saying when the session had more clicks than that (the later ones are then
/// missing).
fn session_clicks(ctx: &Context, query: &HashMap<String, String>) -> Response<Body> {
    let Some(session) = query
        .get("id")
        .filter(|id| !id.is_empty() && id.len() <= 64)
    else {
        return bad_request("id: the session id is required (1 to 64 bytes)".into());
    };
    let filter = match filter_of(query, ctx.analytics.now_ms()) {
        Ok(filter) => filter,
        Err(message) => return bad_request(message),
    };
    if filter.from.is_none() || filter.to.is_none() {
        return bad_request("from, to: the session's span is required (epoch ms)".into());
    }
    let limit = ctx.config.max_raw_events;
    let only = RawSelection {
        kind: Some(EventType::Click),
        session: Some(session.clone()),
    };
    let raw =
        match ctx
            .analytics
            .store()
            .events(filter.range(), &filter.store_filter(), &only, limit)
        {
            Ok(raw) => raw,
            Err(err) => return store_error(&err),
        };
    let truncated = raw.len() >= limit;
    let clicks: Vec<serde_json::Value> = raw
        .iter()
        .filter_map(|event| {
            let position = event.position.as_ref()?;
            Some(serde_json::json!({
                "page": event.page, "at": event.at_ms, "x": position.x, "y": position.y,
                "dw": position.doc_width, "dh": position.doc_height,
            }))
        })
        .take(MAX_SESSION_CLICKS)
        .collect();
    json_ok(&serde_json::json!({
        "sessionId": session,
        "clicks": clicks,
        "truncated": truncated,
    }))
}

/// What a page map shows, as its caption says it: the kind, the events and sessions behind
/// it, the widths and the time range (`clicks · 1,234 events · 56 sessions · desktop ·
/// last 7 days`).
fn page_caption(
    kind: EventType,
    n_events: u64,
    n_sessions: usize,
    widths: &str,
    range: &str,
) -> String {
    let kind = match kind {
        EventType::Click => "clicks",
        EventType::Move => "moves",
        EventType::Scroll => "scroll depth",
        other => other.as_str(),
    };
    let plural = |n: u64, one: &str, many: &str| {
        format!(
            "{} {}",
            heatmap::render::group_thousands(n),
            if n == 1 { one } else { many }
        )
    };
    format!(
        "{kind} · {} · {} · {widths} · {range}",
        plural(n_events, "event", "events"),
        plural(n_sessions as u64, "session", "sessions"),
    )
}

/// The time range a query asked for, in words: `last 7 days`, `from … to …` (UTC) or
/// `all time`.
fn range_text(query: &HashMap<String, String>, filter: &Filter) -> String {
    if let Some(range) = query.get("range") {
        let (count, unit) = range.split_at(range.len().saturating_sub(1));
        let unit = match (unit, count) {
            ("m", _) => "min",
            ("h", _) => "h",
            ("d", "1") => "day",
            ("d", _) => "days",
            _ => "",
        };
        return format!("last {count} {unit}");
    }
    let when = |ms: i64| {
        chrono::DateTime::from_timestamp_millis(ms)
            .map(|time| time.format("%Y-%m-%d %H:%M UTC").to_string())
            .unwrap_or_else(|| ms.to_string())
    };
    match (filter.from, filter.to) {
        (Some(from), Some(to)) => format!("from {} to {}", when(from), when(to)),
        (Some(from), None) => format!("since {}", when(from)),
        (None, Some(to)) => format!("until {}", when(to)),
        (None, None) => "all time".to_owned(),
    }
}

/// A fraction of the document (0 to 1) in 16-bit fixed point, as the renderer's points are.
fn fraction(value: f32) -> u16 {
    (value * 65536.0).clamp(0.0, 65535.0) as u16
}

/// One point per stored cell, at its centre, with the cell's count of events beside it:
/// cells are 1/[`HEAT_COLUMNS`] of the
/// document's width, so a row's height in the document is that width over `ratio`
/// (the documents' mean height over width).
fn cell_points(cells: &HeatmapCells, ratio: f32) -> (Vec<Placed>, Vec<u32>) {
    let columns = HEAT_COLUMNS as f32;
    let ratio = if ratio > 0.0 { ratio } else { 1.0 };
    let mut placed = Vec::with_capacity(cells.cells.len());
    let mut counts = Vec::with_capacity(cells.cells.len());
    for cell in &cells.cells {
        let u = (cell.cx as f32 + 0.5) / columns;
        let v = (cell.cy as f32 + 0.5) / columns / ratio;
        placed.push(Placed {
            point: [fraction(u), fraction(v)],
            dw: 1.0,
            dh: ratio,
            x: u,
            y: v * ratio,
            session: String::new(),
            path: None,
            offset: (0.5, 0.5),
            depth: 0.0,
        });
        counts.push(u32::try_from(cell.count).unwrap_or(u32::MAX));
    }
    (placed, counts)
}

/// The veil's colour over the page in a scroll overlay (slate, dark enough to read as
/// "not seen" over light and dark pages alike).
const SCROLL_VEIL_RGB: [u8; 3] = [15, 23, 42];

/// The veil's opacity where no session scrolled: the page stays faintly readable even there.
const SCROLL_VEIL_MAX_ALPHA: f32 = 0.75;

/// The scroll map: for each row, the share of sessions that scrolled at least that far.
///
/// As an overlay it is a veil over the page: clear where every session reached, and
/// darker the more sessions did not (opacity [`SCROLL_VEIL_MAX_ALPHA`] times the share that
/// did not reach the row), so the page itself stays visible under it. As an image it is
/// opaque, each row coloured by the number of sessions that reached it.
fn scroll_map(events: &[Placed], settings: &RenderSettings) -> Result<Vec<u8>, heatmap::Error> {
    let mut deepest: HashMap<&str, f32> = HashMap::new();
    for event in events {
        let depth = deepest.entry(&event.session).or_default();
        *depth = depth.max(event.depth);
    }
    let width = settings.width as usize;
    let height = settings.height as usize;
    let reached_at = |row: usize| {
        let fraction = (row as f32 + 0.5) / height as f32;
        deepest.values().filter(|&&depth| depth >= fraction).count()
    };
    if settings.output == OutputMode::Overlay {
        let n_sessions = deepest.len().max(1) as f32;
        let mut bytes = Vec::with_capacity(width * height * 4);
        for row in 0..height {
            let missed = 1.0 - reached_at(row) as f32 / n_sessions;
            let alpha = (missed * SCROLL_VEIL_MAX_ALPHA * 255.0).round() as u8;
            let [r, g, b] = SCROLL_VEIL_RGB;
            for _ in 0..width {
                bytes.extend_from_slice(&[r, g, b, alpha]);
            }
        }
        let pixels = heatmap::render::Pixels { bytes, channels: 4 };
        return encode_png(&pixels, settings.width, settings.height);
    }
    let mut grid = Grid::new(settings.width, settings.height);
    for (row, cells) in grid.cells_mut().chunks_exact_mut(width).enumerate() {
        cells.fill(reached_at(row) as f32);
    }
    let density = Density::full(grid);
    let linear = RenderSettings {
        scale: protocol::Scale::Linear,
        ..settings.clone()
    };
    let pixels = colourise(&density, &linear);
    encode_png(&pixels, settings.width, settings.height)
}

/// Columns of the coarse grid that `format=json` and `format=csv` count on.
const COARSE_COLUMNS: u32 = 64;

/// The points counted on the coarse grid ([`COARSE_COLUMNS`] wide, as many rows as the
/// image's proportions give), with its rows and the number of events the points stand
/// for. Every point falls in exactly one cell, so the cells sum to the events.
fn coarse_grid(points: &[[u16; 2]], counts: &[u32], width: u32, height: u32) -> (Grid, u32, u64) {
    let rows = (COARSE_COLUMNS * height / width).max(1);
    let mut grid = Grid::new(COARSE_COLUMNS, rows);
    grid.accumulate_counted(points, counts, 1.0);
    let n_points: u64 = if counts.is_empty() {
        points.len() as u64
    } else {
        counts.iter().map(|&n| u64::from(n)).sum()
    };
    (grid, rows, n_points)
}

/// Counts on a coarse grid (64 columns), for programs that draw their own.
fn grid_json(
    points: &[[u16; 2]],
    counts: &[u32],
    n_sessions: usize,
    kind: EventType,
    width: u32,
    height: u32,
) -> Response<Body> {
    let (grid, rows, n_points) = coarse_grid(points, counts, width, height);
    let cells: Vec<u32> = grid.cells().iter().map(|&count| count as u32).collect();
    json_ok(&serde_json::json!({
        "kind": kind.as_str(),
        "width": COARSE_COLUMNS,
        "height": rows,
        "image_width": width,
        "image_height": height,
        "n_points": n_points,
        "n_sessions": n_sessions,
        "cells": cells,
    }))
}

/// What a CSV export's header names, so the file says what it counts when it is read
/// away from the dashboard.
struct CsvHeader<'a> {
    page: &'a str,
    kind: EventType,
    widths: &'a str,
    range: &'a str,
    n_sessions: usize,
}

/// The coarse grid's counts as CSV: `#` lines naming the page, kind, widths, range, the
/// events and sessions and the grid's size, then `x,y,count` for every non-empty cell
/// (`x` the column from the left, `y` the row from the top), so the counts sum to the
/// events of the range.
fn grid_csv(
    header: &CsvHeader<'_>,
    points: &[[u16; 2]],
    counts: &[u32],
    width: u32,
    height: u32,
) -> Response<Body> {
    use std::fmt::Write as _;
    let (grid, rows, n_points) = coarse_grid(points, counts, width, height);
    // Commas and line ends in a page path would break a spreadsheet's reading of the
    // header line; they are rare in paths and shown as their percent codes.
    let page = header
        .page
        .replace(',', "%2C")
        .replace('\n', "%0A")
        .replace('\r', "%0D");
    let mut csv = String::with_capacity(64 + grid.cells().len() * 4);
    // Writing to a String cannot fail. ok: `fmt::Write` for String never errors.
    let _ = write!(
        csv,
        "# page: {page}\n# kind: {}\n# widths: {}\n# range: {}\n# events: {n_points}\n# sessions: {}\n# grid: {COARSE_COLUMNS} columns x {rows} rows over the document\nx,y,count\n",
        header.kind.as_str(),
        header.widths,
        header.range,
        header.n_sessions,
    );
    for (cell_idx, &count) in grid.cells().iter().enumerate() {
        if count > 0.0 {
            let column = cell_idx % COARSE_COLUMNS as usize;
            let row = cell_idx / COARSE_COLUMNS as usize;
            let _ = writeln!(csv, "{column},{row},{}", count as u64);
        }
    }
    let mut response = http::with_body(StatusCode::OK, "text/csv; charset=utf-8", csv.into_bytes());
    let name = format!(
        "attachment; filename=\"heatmap-{}-{}.csv\"",
        header.kind.as_str(),
        header.widths.replace(' ', "-")
    );
    if let Ok(value) = HeaderValue::from_str(&name) {
        response
            .headers_mut()
            .insert(hyper::header::CONTENT_DISPOSITION, value);
    }
    response
}

/// The events themselves, with their elements, so a dashboard can place each one on its
/// element in the live page (where it can be found) rather than at its old coordinates;
/// with the totals behind them (`events`, `sessions`), since the list is capped at
/// `--max-listed-points` (the most recent).
fn points_json(
    events: &[Placed],
    n_sessions: usize,
    kind: EventType,
    key: &str,
    ctx: &Context,
) -> Response<Body> {
    let skip = events.len().saturating_sub(ctx.config.max_listed_points);
    let points: Vec<serde_json::Value> = events[skip..]
        .iter()
        .map(|event| {
            serde_json::json!({
                "x": event.x, "y": event.y, "dw": event.dw, "dh": event.dh,
                "path": event.path.as_deref(), "ox": event.offset.0, "oy": event.offset.1,
            })
        })
        .collect();
    let mut answer = serde_json::json!({
        "kind": kind.as_str(),
        "events": events.len(),
        "sessions": n_sessions,
    });
    answer[key] = serde_json::Value::Array(points);
    json_ok(&answer)
}

fn sessions_of(events: &[Placed]) -> usize {
    let mut sessions: Vec<&str> = events.iter().map(|event| event.session.as_str()).collect();
    sessions.sort_unstable();
    sessions.dedup();
    sessions.len()
}

/// Viewport widths that are drawn together.
#[derive(Debug, Clone, Copy)]
enum WidthBucket {
    Mobile,
    Tablet,
    Desktop,
    Around(u32),
}

impl WidthBucket {
    fn parse(text: &str) -> Result<Self, String> {
        match text {
            "mobile" => Ok(WidthBucket::Mobile),
            "tablet" => Ok(WidthBucket::Tablet),
            "desktop" => Ok(WidthBucket::Desktop),
            number => match number.parse::<u32>() {
                Ok(width) if (16..=8192).contains(&width) => Ok(WidthBucket::Around(width)),
                _ => Err(format!("width {number:?} is not mobile, tablet, desktop or a pixel width from 16 to 8192")),
            },
        }
    }

    fn contains(self, viewport_width: f32) -> bool {
        match self {
            WidthBucket::Mobile => viewport_width < 768.0,
            WidthBucket::Tablet => (768.0..1200.0).contains(&viewport_width),
            WidthBucket::Desktop => viewport_width >= 1200.0,
            WidthBucket::Around(width) => {
                let width = width as f32;
                (viewport_width - width).abs() <= (width * 0.1).max(50.0)
            }
        }
    }

    /// The store's pre-counted bucket, if this is one of them.
    fn stored(self) -> Option<StoredBucket> {
        match self {
            WidthBucket::Mobile => Some(StoredBucket::Mobile),
            WidthBucket::Tablet => Some(StoredBucket::Tablet),
            WidthBucket::Desktop => Some(StoredBucket::Desktop),
            WidthBucket::Around(_) => None,
        }
    }

    fn image_width(self) -> u32 {
        match self {
            WidthBucket::Mobile => 390,
            WidthBucket::Tablet => 820,
            WidthBucket::Desktop => 1440,
            WidthBucket::Around(width) => width,
        }
    }

    fn name(self) -> String {
        match self {
            WidthBucket::Mobile => "mobile".into(),
            WidthBucket::Tablet => "tablet".into(),
            WidthBucket::Desktop => "desktop".into(),
            WidthBucket::Around(width) => format!("about {width} px"),
        }
    }
}

/// Builds a filter from `page`, `type`, `country`, and the time range: `from` and `to`
/// (epoch ms or ISO-8601) or `range` (`30m`, `24h`, `7d`, `30d`: ending `now_ms`).
///
/// An invalid value is an error naming the parameter, never silently ignored.
fn filter_of(query: &HashMap<String, String>, now_ms: i64) -> Result<Filter, String> {
    let time = |name: &str| -> Result<Option<i64>, String> {
        query
            .get(name)
            .map(|value| {
                value
                    .parse::<i64>()
                    .ok()
                    .or_else(|| protocol::parse_iso8601_ms(value))
                    .ok_or_else(|| {
                        format!("{name}: {value:?} is neither epoch ms nor ISO-8601 (2025-07-19T10:30:00Z)")
                    })
            })
            .transpose()
    };
    let kind = query
        .get("type")
        .map(|value| {
            serde_json::from_value::<EventType>(serde_json::Value::String(value.clone()))
                .map_err(|_| format!("type: {value:?} is not an event type"))
        })
        .transpose()?;
    let mut from = time("from")?;
    let to = time("to")?;
    if let Some(range) = query.get("range") {
        if from.is_some() {
            return Err("range: give either range or from, not both".into());
        }
        let span = range_ms(range)
            .ok_or_else(|| format!("range: {range:?} is not a span such as 30m, 24h, 7d or 30d"))?;
        let start = to.unwrap_or(now_ms) - span;
        // A span of hours or more starts on the hour, so the store answers it from hourly
        // and daily counts alone, with no raw events at its start (what dashboards show as
        // "last 24 hours" is by the hour anyway).
        from = Some(if span >= HOUR_MS {
            start.div_euclid(HOUR_MS) * HOUR_MS
        } else {
            start
        });
    }
    if let (Some(from), Some(to)) = (from, to) {
        if to < from {
            return Err(format!("to: {to} is before from ({from})"));
        }
    }
    let country = query
        .get("country")
        .map(|country| {
            protocol::country_code(country).ok_or_else(|| {
                format!("country: {country:?} is neither a two-letter code nor a country name")
            })
        })
        .transpose()?;
    if query.get("page").is_some_and(|page| !page.starts_with('/')) {
        return Err("page: must be a path starting with /".into());
    }
    Ok(Filter {
        page: query.get("page").cloned(),
        kind,
        from,
        to,
        country,
    })
}

const HOUR_MS: i64 = 3_600_000;

/// Milliseconds in a span such as `30m`, `24h` or `7d` (at most 10 years).
fn range_ms(text: &str) -> Option<i64> {
    let unit = match text.chars().last()? {
        'm' => 60_000,
        'h' => 3_600_000,
        'd' => 86_400_000,
        _ => return None,
    };
    let count: i64 = text[..text.len() - 1].parse().ok()?;
    let span = count.checked_mul(unit)?;
    (1..=3650 * 86_400_000).contains(&span).then_some(span)
}

/// `a=1&b=x%20y` → {a: "1", b: "x y"}; later keys win.
fn parse_query(query: &str) -> HashMap<String, String> {
    query
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            (percent_decode(key), percent_decode(value))
        })
        .collect()
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut idx = 0;
    while idx < bytes.len() {
        match bytes[idx] {
            b'+' => out.push(b' '),
            b'%' if idx + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[idx + 1..idx + 3]).ok();
                match hex.and_then(|hex| u8::from_str_radix(hex, 16).ok()) {
                    Some(byte) => {
                        out.push(byte);
                        idx += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            byte => out.push(byte),
        }
        idx += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn json_ok<T: serde::Serialize>(value: &T) -> Response<Body> {
    match serde_json::to_string(value) {
        Ok(body) => http::json(StatusCode::OK, body),
        Err(err) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("cannot encode: {err}"),
        ),
    }
}

fn bad_request(message: String) -> Response<Body> {
    error(StatusCode::BAD_REQUEST, message)
}

fn error(status: StatusCode, message: String) -> Response<Body> {
    let body = serde_json::to_string(&ApiError { error: message }).unwrap_or_default();
    http::json(status, body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_are_decoded() {
        let query = parse_query("page=%2Fpricing%3Fx&kind=click&width=&a+b=c+d&bad=%zz&end=%4");
        assert_eq!(query["page"], "/pricing?x");
        assert_eq!(query["width"], "");
        assert_eq!(query["a b"], "c d");
        assert_eq!(query["bad"], "%zz");
        assert_eq!(query["end"], "%4");
    }

    #[test]
    fn scroll_overlays_veil_only_what_visitors_missed() {
        // Four sessions: all past a fifth of the page, three past a third, one to the end.
        let events: Vec<Placed> = [1.0, 0.4, 0.4, 0.25]
            .into_iter()
            .enumerate()
            .map(|(idx, depth)| Placed {
                point: [0, 0],
                dw: 1.0,
                dh: 1.0,
                x: 0.0,
                y: 0.0,
                session: format!("s{idx}"),
                path: None,
                offset: (0.5, 0.5),
                depth,
            })
            .collect();
        let settings = RenderSettings {
            width: 40,
            height: 100,
            output: OutputMode::Overlay,
            ..RenderSettings::default()
        };
        let image = testkit::Image::decode(&scroll_map(&events, &settings).unwrap()).unwrap();
        assert_eq!(image.channels, 4);
        let alpha = |row: u32| image.pixels[(row * image.width * 4 + 3) as usize];
        let veil = |missed: f32| (missed * SCROLL_VEIL_MAX_ALPHA * 255.0).round() as u8;
        assert_eq!(alpha(10), 0, "everyone saw the top");
        assert_eq!(alpha(30), veil(0.25));
        assert_eq!(alpha(50), veil(0.75));
        assert_eq!(
            alpha(99),
            veil(0.75),
            "the page still shows where most missed it"
        );
        assert_eq!(image.rgb(20, 50), SCROLL_VEIL_RGB);
    }

    #[test]
    fn captions_say_what_the_map_shows() {
        let now = 1_752_921_000_000;
        let caption = |pairs: &[(&str, &str)], kind, n_events, n_sessions| {
            let query = query_of(pairs);
            let filter = filter_of(&query, now).unwrap();
            page_caption(
                kind,
                n_events,
                n_sessions,
                "desktop",
                &range_text(&query, &filter),
            )
        };
        assert_eq!(
            caption(&[("range", "7d")], EventType::Click, 1234, 56),
            "clicks · 1,234 events · 56 sessions · desktop · last 7 days"
        );
        assert_eq!(
            caption(&[], EventType::Move, 1, 1),
            "moves · 1 event · 1 session · desktop · all time"
        );
        assert_eq!(
            caption(&[("range", "24h")], EventType::Move, 0, 0),
            "moves · 0 events · 0 sessions · desktop · last 24 h"
        );
        assert_eq!(
            caption(
                &[("from", "2025-07-18T00:00:00Z"), ("to", "2025-07-19T10:30:00Z")],
                EventType::Click,
                12,
                3
            ),
            "clicks · 12 events · 3 sessions · desktop · from 2025-07-18 00:00 UTC to 2025-07-19 10:30 UTC"
        );
        assert_eq!(
            caption(
                &[("from", "2025-07-18T00:00:00Z")],
                EventType::Scroll,
                12,
                3
            ),
            "scroll depth · 12 events · 3 sessions · desktop · since 2025-07-18 00:00 UTC"
        );
    }

    fn click_at(session: &str, at_ms: i64, x: f32, y: f32) -> Event {
        let mut click = Event::new(EventType::Click, "/", session, at_ms);
        click.position = Some(::analytics::Position {
            x,
            y,
            viewport_width: 1400.0,
            doc_width: 1400.0,
            doc_height: 1800.0,
        });
        click
    }

    #[test]
    fn rage_bursts_are_three_clicks_within_a_second_and_thirty_pixels() {
        let bursts = |clicks: &[Event]| rage_bursts(&clicks.iter().collect::<Vec<_>>());
        let quick = [0, 200, 400].map(|at| click_at("a", at, 100.0, 100.0));
        assert_eq!(bursts(&quick), vec![0]);
        // Five angry clicks are one burst.
        let five = [0, 150, 300, 450, 600].map(|at| click_at("a", at, 100.0, 100.0));
        assert_eq!(bursts(&five), vec![0]);
        // Two quick clicks are a double click, not rage.
        let double = [0, 150].map(|at| click_at("a", at, 100.0, 100.0));
        assert!(bursts(&double).is_empty());
        // The third click more than a second after the first is too slow.
        let slow = [0, 500, 1_001].map(|at| click_at("a", at, 100.0, 100.0));
        assert!(bursts(&slow).is_empty());
        // Three quick clicks spread over 40 px are a visitor working through a list.
        let spread =
            [(0, 100.0), (100, 120.0), (200, 140.0)].map(|(at, x)| click_at("a", at, x, 100.0));
        assert!(bursts(&spread).is_empty());
        // Within 30 px of the first counts, in any direction.
        let near =
            [(0, 100.0), (100, 121.0), (200, 79.0)].map(|(at, x)| click_at("a", at, x, 100.0));
        assert_eq!(bursts(&near), vec![0]);
        // A slow click before a quick three: the burst starts at the second.
        let later = [0, 2_000, 2_100, 2_200].map(|at| click_at("a", at, 100.0, 100.0));
        assert_eq!(bursts(&later), vec![1]);
    }

    #[test]
    fn csv_counts_sum_to_the_events() {
        let points = [[0u16, 0], [65535, 65535], [32768, 32768], [32768, 32768]];
        let header = CsvHeader {
            page: "/a,b",
            kind: EventType::Click,
            widths: "desktop",
            range: "last 7 days",
            n_sessions: 2,
        };
        let response = grid_csv(&header, &points, &[1, 2, 3, 4], 1440, 1440);
        let body = futures_body(response);
        assert!(
            body.starts_with("# page: /a%2Cb\n# kind: click\n"),
            "{body}"
        );
        assert!(body.contains("# events: 10\n"), "{body}");
        let rows: Vec<&str> = body.lines().filter(|line| !line.starts_with('#')).collect();
        assert_eq!(rows[0], "x,y,count");
        let sum: u64 = rows[1..]
            .iter()
            .map(|row| row.rsplit(',').next().unwrap().parse::<u64>().unwrap())
            .sum();
        assert_eq!(sum, 10);
        assert!(rows.contains(&"0,0,1"), "{body}");
        assert!(rows.contains(&"63,63,2"), "{body}");
        assert!(rows.contains(&"32,32,7"), "{body}");
    }

    /// A fully buffered body as text.
    fn futures_body(response: Response<Body>) -> String {
        let bytes = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(response.into_body().collect())
            .unwrap()
            .to_bytes();
        String::from_utf8(bytes.to_vec()).unwrap()
    }

    #[test]
    fn width_buckets_split_screens() {
        assert!(WidthBucket::Mobile.contains(390.0));
        assert!(!WidthBucket::Mobile.contains(800.0));
        assert!(WidthBucket::Tablet.contains(800.0));
        assert!(WidthBucket::Desktop.contains(1920.0));
        assert!(WidthBucket::Around(1000).contains(1080.0));
        assert!(!WidthBucket::Around(1000).contains(1200.0));
        assert!(WidthBucket::parse("huge").is_err());
    }

    fn query_of(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(name, value)| (name.to_string(), value.to_string()))
            .collect()
    }

    #[test]
    fn filters_take_ranges_iso_times_and_country_names() {
        let now = 1_752_921_000_000;
        let filter = filter_of(&query_of(&[("range", "30d"), ("country", "India")]), now).unwrap();
        // 30 days before 10:30 starts at 10:00 that day.
        assert_eq!(filter.from, Some(now - 30 * 86_400_000 - 1_800_000));
        assert_eq!(filter.to, None);
        assert_eq!(filter.country.as_deref(), Some("IN"));
        let filter = filter_of(&query_of(&[("range", "30m")]), now).unwrap();
        assert_eq!(
            filter.from,
            Some(now - 1_800_000),
            "minutes are not rounded"
        );
        let filter = filter_of(
            &query_of(&[("from", "2025-07-18T00:00:00Z"), ("to", "1752921000000")]),
            now,
        )
        .unwrap();
        assert_eq!(filter.from, Some(1_752_796_800_000));
        assert_eq!(filter.to, Some(1_752_921_000_000));
    }

    #[test]
    fn invalid_filter_values_are_refused_by_name() {
        for (pairs, expected) in [
            (&[("range", "30x")][..], "range: \"30x\" is not a span"),
            (&[("range", "0d")][..], "range:"),
            (
                &[("from", "yesterday")][..],
                "from: \"yesterday\" is neither",
            ),
            (&[("country", "Narnia")][..], "country: \"Narnia\""),
            (&[("type", "hover")][..], "type: \"hover\""),
            (
                &[("from", "5"), ("to", "4")][..],
                "to: 4 is before from (5)",
            ),
            (&[("page", "pricing")][..], "page: must be a path"),
            (&[("range", "7d"), ("from", "5")][..], "range: give either"),
        ] {
            let err = filter_of(&query_of(pairs), 1_000_000_000_000).unwrap_err();
            assert!(err.starts_with(expected), "{pairs:?}: {err}");
        }
    }
}
