//! `POST /api/events` bodies: the seed API's documented shapes are accepted as they are,
//! and every refusal names the event and the field.

use protocol::analytics::{decode_events, EventType};

/// The seed's README example, verbatim (its `curl -d` body).
const SEED_README_PAGEVIEW: &str = r#"{
    "type": "pageview",
    "page": "/home",
    "sessionId": "test-user-123",
    "country": "India"
  }"#;

#[test]
fn the_seed_readme_pageview_is_accepted_with_its_country_as_a_code() {
    let events = decode_events(SEED_README_PAGEVIEW.as_bytes()).unwrap();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].kind, EventType::Pageview);
    assert_eq!(events[0].page, "/home");
    assert_eq!(events[0].session_id, "test-user-123");
    assert_eq!(events[0].country.as_deref(), Some("IN"));
    assert_eq!(
        events[0].timestamp, None,
        "no timestamp: the receive time is used"
    );
}

#[test]
fn the_seed_shapes_are_accepted() {
    let body = r#"[
      {"type": "pageview", "page": "/products", "sessionId": "user-456", "timestamp": "2025-07-19T10:30:00Z", "country": "USA"},
      {"type": "page_view", "page": "/about", "sessionId": "user-456", "timestamp": 1752921000000},
      {"type": "click", "page": "/products", "sessionId": "user-456", "metadata": {"element": "button#buy-now"}},
      {"type": "session_end", "page": "/checkout", "sessionId": "user-456", "country": "us"}
    ]"#;
    let events = decode_events(body.as_bytes()).unwrap();
    let kinds: Vec<EventType> = events.iter().map(|event| event.kind).collect();
    assert_eq!(
        kinds,
        [
            EventType::Pageview,
            EventType::Pageview,
            EventType::Click,
            EventType::Leave
        ]
    );
    assert_eq!(events[0].timestamp, Some(1_752_921_000_000));
    assert_eq!(events[1].timestamp, Some(1_752_921_000_000));
    assert_eq!(events[0].country.as_deref(), Some("US"));
    assert_eq!(events[3].country.as_deref(), Some("US"));
    assert_eq!(events[2].metadata.path.as_deref(), Some("button#buy-now"));
    assert_eq!(
        events[2].metadata.x, None,
        "a click without coordinates is still an event"
    );
}

#[test]
fn device_and_referrer_are_kept_and_a_referrer_url_is_cut_to_its_host() {
    let body = r#"[
      {"type":"pageview","page":"/","sessionId":"s1","metadata":{"device":"Mobile","referrer":"google.com"}},
      {"type":"pageview","page":"/","sessionId":"s1","metadata":{"referrer":"https://user@News.Example:8443/item?id=7#c"}},
      {"type":"pageview","page":"/","sessionId":"s1","metadata":{"device":"  ","referrer":""}}
    ]"#;
    let events = decode_events(body.as_bytes()).unwrap();
    assert_eq!(events[0].metadata.device.as_deref(), Some("mobile"));
    assert_eq!(events[0].metadata.referrer.as_deref(), Some("google.com"));
    assert_eq!(events[1].metadata.referrer.as_deref(), Some("news.example"));
    assert_eq!(
        events[2].metadata.device, None,
        "a blank device is no device"
    );
    assert_eq!(events[2].metadata.referrer, None);
    let too_long = format!(
        r#"{{"type":"pageview","page":"/","sessionId":"s1","metadata":{{"device":"{}"}}}}"#,
        "x".repeat(33)
    );
    let err = decode_events(too_long.as_bytes()).unwrap_err().to_string();
    assert!(err.starts_with("event 0: metadata.device: "), "{err}");
    let wrong_type = r#"{"type":"pageview","page":"/","sessionId":"s1","metadata":{"referrer":7}}"#;
    let err = decode_events(wrong_type.as_bytes())
        .unwrap_err()
        .to_string();
    assert_eq!(err, "event 0: metadata.referrer: expected a string");
}

#[test]
fn whole_urls_give_their_path_without_query() {
    let body =
        r#"{"type":"pageview","page":"https://shop.example/cart?id=7#top","sessionId":"s1"}"#;
    assert_eq!(decode_events(body.as_bytes()).unwrap()[0].page, "/cart");
}

#[test]
fn refusals_name_the_event_and_the_field() {
    let cases = [
        (r#"[{"type":"pageview","page":"/","sessionId":"a"},{"type":"pageview","page":"/","sessionId":"b","timestamp":"last tuesday"}]"#,
         "event 1: timestamp: expected ISO-8601 (2025-07-19T10:30:00Z) or epoch ms"),
        (r#"{"type":"hover","page":"/","sessionId":"a"}"#,
         "event 0: type: unknown event type \"hover\"; expected one of pageview, page_view, move, click, scroll, visibility, leave, session_end, custom"),
        (r#"{"page":"/","sessionId":"a"}"#, "event 0: type: is required"),
        (r#"{"type":"click","sessionId":"a"}"#, "event 0: page: is required"),
        (r#"{"type":"click","page":"/","sessionId":7}"#, "event 0: sessionId: expected a string"),
        (r#"{"type":"click","page":"/","sessionId":"a","country":"Narnia"}"#,
         "event 0: country: \"Narnia\" is neither a two-letter code nor a country name"),
        (r#"{"type":"click","page":"/","sessionId":"a","metadata":{"x":"left"}}"#,
         "event 0: metadata.x: expected a number"),
        (r#"{"type":"click","page":"/","sessionId":"a","metadata":{"x":-5}}"#,
         "event 0: metadata.x: must be a number from 0 to 1000000"),
        (r#"{"type":"click","page":"/","sessionId":"a b"}"#,
         "event 0: sessionId: must be 1 to 64 characters of A-Z, a-z, 0-9, '_' or '-'"),
        (r#"{"type":"click","page":"/","sessionId":"a","seq":-1}"#, "event 0: seq: expected a whole number from 0"),
        (r#"[1]"#, "event 0: expected an object"),
        (r#"{"type":"pageview""#, "the body is not JSON: EOF while parsing an object at line 1 column 18"),
        (r#""pageview""#, "expected an event object or an array of them"),
    ];
    for (body, expected) in cases {
        let err = decode_events(body.as_bytes()).unwrap_err();
        assert_eq!(err.to_string(), expected, "for {body}");
    }
}

#[test]
fn more_than_the_limit_in_one_request_is_refused() {
    let one = r#"{"type":"pageview","page":"/","sessionId":"a"}"#;
    let body = format!("[{}]", vec![one; 501].join(","));
    let err = decode_events(body.as_bytes()).unwrap_err();
    assert_eq!(
        err.to_string(),
        "501 events in one request; the limit is 500"
    );
    let body = format!("[{}]", vec![one; 500].join(","));
    assert_eq!(decode_events(body.as_bytes()).unwrap().len(), 500);
}

#[test]
fn a_locale_gives_its_region_and_a_bad_one_is_refused_by_name() {
    use protocol::analytics::locale_region;
    assert_eq!(locale_region("en-IN").as_deref(), Some("IN"));
    assert_eq!(locale_region("zh-Hant-TW").as_deref(), Some("TW"));
    assert_eq!(locale_region("pt_br").as_deref(), Some("BR"));
    assert_eq!(locale_region("en"), None);
    assert_eq!(locale_region("es-419"), None);
    let body = r#"{"type":"pageview","page":"/","sessionId":"s1","metadata":{"locale":"en IN"}}"#;
    let err = decode_events(body.as_bytes()).unwrap_err().to_string();
    assert!(err.starts_with("event 0: metadata.locale: "), "{err}");
}

#[test]
fn a_click_may_say_it_was_dead_and_a_wrong_flag_is_refused_by_name() {
    let dead = decode_events(
        br#"[{"type":"click","page":"/","sessionId":"a","metadata":{"x":5,"y":5,"dead":true}},
            {"type":"click","page":"/","sessionId":"a","metadata":{"x":5,"y":5}}]"#,
    )
    .unwrap();
    assert_eq!(dead[0].metadata.dead, Some(true));
    assert_eq!(dead[1].metadata.dead, None, "an older snippet says nothing");
    let err =
        decode_events(br#"{"type":"click","page":"/","sessionId":"a","metadata":{"dead":"yes"}}"#)
            .unwrap_err();
    assert_eq!(
        err.to_string(),
        "event 0: metadata.dead: expected true or false"
    );
}
