//! Every message survives encode → decode unchanged, and the documented JSON examples decode.

use proptest::prelude::*;
use protocol::*;

fn id(text: &str) -> RecordingId {
    RecordingId::try_from(text).unwrap()
}

fn batch() -> PointsBatch {
    PointsBatch {
        recording: id("r-1"),
        seq: 3,
        viewport: Viewport {
            width: 1280,
            height: 720,
        },
        points: vec![
            Point {
                x: 10.5,
                y: 20.0,
                t: 15,
                kind: PointKind::Move,
            },
            Point {
                x: 1280.0,
                y: 720.0,
                t: 40,
                kind: PointKind::Click,
            },
        ],
    }
}

fn page_messages() -> Vec<PageMessage> {
    vec![
        PageMessage::Hello {
            v: PROTOCOL_VERSION,
        },
        PageMessage::Start {
            recording: id("r-1"),
            viewport: Viewport {
                width: 1920,
                height: 1080,
            },
        },
        PageMessage::Points(batch()),
        PageMessage::Stop {
            recording: id("r-1"),
        },
        PageMessage::Generate(Generate {
            recording: id("r-1"),
            options: RenderOptions::default(),
            request: None,
        }),
        PageMessage::Generate(Generate {
            recording: id("r-1"),
            options: RenderOptions {
                kind: Some(HeatKind::Clicks),
                colormap: Some(Colormap::Viridis),
                scale: Some(Scale::Log),
                output: Some(OutputMode::Overlay),
                bandwidth: Some(12.5),
                pixel_scale: Some(2.0),
            },
            request: Some(7),
        }),
        PageMessage::Preview(Preview {
            recording: id("r-1"),
            kind: Some(HeatKind::Moves),
        }),
        PageMessage::RequestDetailedStats { filters: None },
        PageMessage::RequestDetailedStats {
            filters: Some(StatsFilters {
                country: Some("DE".into()),
                page: Some("/pricing".into()),
            }),
        },
        PageMessage::SetName { name: "Ada".into() },
        PageMessage::TrackDashboardAction {
            action: "export".into(),
            data: Some(serde_json::json!({"format": "csv"})),
        },
    ]
}

fn server_messages() -> Vec<ServerMessage> {
    vec![
        ServerMessage::Welcome {
            v: PROTOCOL_VERSION,
            renderer: LinkState::Connecting,
        },
        ServerMessage::Link {
            renderer: LinkState::Disconnected,
        },
        ServerMessage::Started {
            recording: id("r-1"),
        },
        ServerMessage::Ack {
            recording: id("r-1"),
            seq: 3,
            n_points: 200,
        },
        ServerMessage::Stopped {
            recording: id("r-1"),
            n_points: 200,
        },
        ServerMessage::Heatmap(HeatmapReady {
            recording: id("r-1"),
            name: "heatmap_2026-11-29_19-30-05.png".into(),
            width: 1920,
            height: 1080,
            n_points: 200,
            render_ms: 12.5,
            options: RenderOptions {
                kind: Some(HeatKind::Both),
                ..RenderOptions::default()
            },
            request: Some(7),
        }),
        ServerMessage::Preview(PreviewFrame {
            recording: id("r-1"),
            width: 4,
            height: 2,
            n_points: 3,
            cells: vec![0, 10, 255, 3, 0, 0, 0, 1],
        }),
        ServerMessage::Presence {
            online: 3,
            dashboards: 2,
        },
        ServerMessage::DashboardActionAck {
            action: "export".into(),
        },
        ServerMessage::UserConnected { dashboards: 2 },
        ServerMessage::Members {
            you: Member {
                id: 7,
                name: "User-417".into(),
            },
            count: 2,
            recent: vec![Member {
                id: 7,
                name: "User-417".into(),
            }],
        },
        ServerMessage::UserLeave {
            member: Member {
                id: 7,
                name: "Ada".into(),
            },
            count: 1,
        },
        ServerMessage::SessionActivity {
            events: vec![Activity {
                session_id: "s-1".into(),
                page: "/pricing".into(),
                kind: analytics::EventType::Click,
            }],
            dropped: 3,
        },
        ServerMessage::VisitorUpdate(VisitorUpdate {
            total_active: 1,
            dashboards: 2,
            ..VisitorUpdate::default()
        }),
        ServerMessage::UserDisconnected { dashboards: 1 },
        ServerMessage::Error {
            code: ErrorCode::NoPoints,
            message: "recording r-1 has no points yet".into(),
            recording: Some(id("r-1")),
            seq: None,
            request: Some(7),
        },
    ]
}

#[test]
fn page_messages_round_trip() {
    for msg in page_messages() {
        let text = encode(&msg);
        assert_eq!(
            decode_page(&text, &Limits::default()).unwrap(),
            msg,
            "{text}"
        );
    }
}

#[test]
fn link_messages_round_trip() {
    for (conn, msg) in page_messages().into_iter().enumerate() {
        let msg = RelayMessage::Page {
            conn: conn as u64,
            msg,
        };
        assert_eq!(
            decode_relay(&encode(&msg), &Limits::default()).unwrap(),
            msg
        );
    }
    for (conn, msg) in server_messages().into_iter().enumerate() {
        let msg = RendererMessage::Reply {
            conn: conn as u64,
            msg,
        };
        assert_eq!(decode_renderer(&encode(&msg)).unwrap(), msg);
    }
    let hello = RelayMessage::Hello {
        v: PROTOCOL_VERSION,
    };
    assert_eq!(
        decode_relay(&encode(&hello), &Limits::default()).unwrap(),
        hello
    );
}

#[test]
fn server_messages_round_trip() {
    for msg in server_messages() {
        let text = encode(&msg);
        let back: ServerMessage = serde_json::from_str(&text).unwrap();
        assert_eq!(back, msg, "{text}");
    }
}

/// The examples in docs/protocol.md, verbatim, so the document cannot drift from the code.
#[test]
fn documented_examples_decode() {
    let doc = include_str!("../../../docs/protocol.md");
    let mut n_examples = 0;
    for block in doc.split("```json").skip(1) {
        let Some((example, _)) = block.split_once("```") else {
            continue;
        };
        let example = example.trim();
        let value: serde_json::Value = serde_json::from_str(example)
            .unwrap_or_else(|err| panic!("example is not json: {err}\n{example}"));
        let kind = value["type"].as_str().unwrap_or_default().to_owned();
        let decoded_as_any = decode_page(example, &Limits::default()).is_ok()
            || serde_json::from_str::<ServerMessage>(example).is_ok()
            || decode_relay(example, &Limits::default()).is_ok()
            || decode_renderer(example).is_ok();
        assert!(
            decoded_as_any,
            "example of {kind:?} does not decode:\n{example}"
        );
        n_examples += 1;
    }
    assert!(
        n_examples >= 12,
        "only {n_examples} examples found in docs/protocol.md"
    );
}

#[test]
fn too_many_points_are_refused() {
    let limits = Limits {
        max_points_per_batch: 1,
    };
    let err = decode_page(&encode(&PageMessage::Points(batch())), &limits).unwrap_err();
    assert_eq!(err.code, ErrorCode::TooLarge);
}

/// One rule for shapes: a message that is not a JSON object is `bad_json`, however it is
/// nested, and a value of the wrong shape inside a message is `bad_field`.
#[test]
fn anything_but_an_object_is_bad_json_and_a_wrong_shape_inside_is_bad_field() {
    let limits = Limits::default();
    for text in [
        "[1,2,3]",
        "[[1,2,3]]",
        "[[[]]]",
        "[]",
        r#"["stop","r1"]"#,
        r#"[{"type":"stop","recording":"r1"}]"#,
        r#""stop""#,
        "42",
        "true",
        "null",
        "",
        "  \n ",
    ] {
        for err in [
            decode_page(text, &limits).unwrap_err(),
            decode_relay(text, &limits).unwrap_err(),
            decode_renderer(text).unwrap_err(),
        ] {
            assert_eq!(err.code, ErrorCode::BadJson, "{text:?}: {err}");
            assert!(
                err.message.contains("expected a json object"),
                "{text:?}: {err}"
            );
        }
    }
    for text in [
        r#"{"type":"stop","recording":[["r1"]]}"#,
        r#"{"type":"start","recording":"r1","viewport":[[10,10]]}"#,
        r#"{"type":"points","recording":"r1","seq":0,"viewport":{"width":10,"height":10},"points":[[[1,2,0,"move"]]]}"#,
    ] {
        let err = decode_page(text, &limits).unwrap_err();
        assert_eq!(err.code, ErrorCode::BadField, "{text:?}: {err}");
    }
    let err = decode_relay(r#"{"type":"page","conn":1,"msg":[[1]]}"#, &limits).unwrap_err();
    assert_eq!(err.code, ErrorCode::BadField, "{err}");
}

proptest! {
    /// Decoding never panics, whatever the bytes.
    #[test]
    fn decoding_arbitrary_text_never_panics(text in ".{0,200}") {
        let _ = decode_page(&text, &Limits::default());
        let _ = decode_relay(&text, &Limits::default());
        let _ = decode_renderer(&text);
    }

    /// A batch is accepted exactly when every point is finite and inside its viewport.
    #[test]
    fn batches_are_accepted_iff_points_are_inside(
        width in 1u32..4000,
        height in 1u32..4000,
        points in prop::collection::vec((-100f32..4100.0, -100f32..4100.0), 0..50),
    ) {
        let inside = points
            .iter()
            .all(|(x, y)| (0.0..=width as f32).contains(x) && (0.0..=height as f32).contains(y));
        let batch = PointsBatch {
            recording: id("r"),
            seq: 0,
            viewport: Viewport { width, height },
            points: points
                .iter()
                .map(|&(x, y)| Point { x, y, t: 0, kind: PointKind::Move })
                .collect(),
        };
        let decoded = decode_page(&encode(&PageMessage::Points(batch.clone())), &Limits::default());
        prop_assert_eq!(decoded.is_ok(), inside);
        if inside {
            prop_assert_eq!(decoded.unwrap(), PageMessage::Points(batch));
        }
    }
}
