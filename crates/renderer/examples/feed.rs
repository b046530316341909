//! Feeds a running renderer like a relay would: streams points, asks for a heatmap, and
//! prints how long each took. `scripts/bench` runs it against the real binary and reads
//! the renderer's peak memory from `/proc`.
//!
//! `cargo run --release -p renderer --example feed -- ws://127.0.0.1:5000 1000000 [GENERATES [PIXEL_SCALE]]`
//!
//! With GENERATES above 1 it asks for that many heatmaps one after another and prints the
//! median round trip too; PIXEL_SCALE (for example 2, for 3840x2160) is sent as the option.

use std::time::Instant;

use futures_util::{SinkExt, StreamExt};
use heatmap::synthetic::pointer_paths;
use protocol::{
    encode, Generate, PageMessage, Point, PointKind, PointsBatch, RecordingId, RelayMessage,
    RenderOptions, RendererMessage, ServerMessage, Viewport, PROTOCOL_VERSION,
};
use tokio_tungstenite::tungstenite::Message;

const BATCH: usize = 1000;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let url = args.next().unwrap_or_else(|| "ws://127.0.0.1:5000".into());
    let n_points: usize = args
        .next()
        .map(|n| n.parse())
        .transpose()?
        .unwrap_or(1_000_000);
    let n_generates: usize = args.next().map(|n| n.parse()).transpose()?.unwrap_or(1);
    let pixel_scale: Option<f32> = args.next().map(|n| n.parse()).transpose()?;
    let (mut socket, _) = tokio_tungstenite::connect_async(url.as_str()).await?;
    socket
        .send(Message::text(encode(&RelayMessage::Hello {
            v: PROTOCOL_VERSION,
        })))
        .await?;
    let recording = RecordingId::try_from("r-bench").map_err(anyhow::Error::msg)?;
    let viewport = Viewport {
        width: 1920,
        height: 1080,
    };
    let points: Vec<Point> = pointer_paths(n_points, 7)
        .into_iter()
        .enumerate()
        .map(|(idx, [u, v])| Point {
            x: f32::from(u) / 65536.0 * 1920.0,
            y: f32::from(v) / 65536.0 * 1080.0,
            t: idx as u32 / 100,
            kind: PointKind::Move,
        })
        .collect();
    let frames: Vec<String> = points
        .chunks(BATCH)
        .enumerate()
        .map(|(seq, chunk)| {
            encode(&RelayMessage::Page {
                conn: 1,
                msg: PageMessage::Points(PointsBatch {
                    recording: recording.clone(),
                    seq: seq as u64,
                    viewport,
                    points: chunk.to_vec(),
                }),
            })
        })
        .collect();
    let n_batches = frames.len();

    let started = Instant::now();
    let (mut sink, mut stream) = socket.split();
    let sender = tokio::spawn(async move {
        for frame in frames {
            sink.send(Message::text(frame)).await?;
        }
        anyhow::Ok(sink)
    });
    let mut acked = 0;
    while acked < n_batches {
        match next_reply(&mut stream).await? {
            ServerMessage::Ack { .. } => acked += 1,
            ServerMessage::Error { code, message, .. } => anyhow::bail!("{code}: {message}"),
            _ => {}
        }
    }
    let ingest = started.elapsed();
    let mut sink = sender.await??;

    let mut round_trips = Vec::with_capacity(n_generates);
    for _ in 0..n_generates.max(1) {
        let started = Instant::now();
        let generate = RelayMessage::Page {
            conn: 1,
            msg: PageMessage::Generate(Generate {
                recording: recording.clone(),
                options: RenderOptions {
                    pixel_scale,
                    ..RenderOptions::default()
                },
                request: None,
            }),
        };
        sink.send(Message::text(encode(&generate))).await?;
        let heatmap = loop {
            match next_reply(&mut stream).await? {
                ServerMessage::Heatmap(heatmap) => break heatmap,
                ServerMessage::Error { code, message, .. } => anyhow::bail!("{code}: {message}"),
                _ => {}
            }
        };
        let generate_time = started.elapsed();
        round_trips.push(generate_time.as_secs_f64() * 1000.0);
        println!(
            "feed points={n_points} ingest_s={:.3} ingest_points_per_s={:.0} size={}x{} render_ms={:.1} round_trip_ms={:.1} name={}",
            ingest.as_secs_f64(),
            n_points as f64 / ingest.as_secs_f64(),
            heatmap.width,
            heatmap.height,
            heatmap.render_ms,
            generate_time.as_secs_f64() * 1000.0,
            heatmap.name
        );
    }
    round_trips.sort_by(f64::total_cmp);
    println!(
        "generate round trip median_ms={:.1} of {}",
        round_trips[round_trips.len() / 2],
        round_trips.len()
    );
    Ok(())
}

async fn next_reply<S>(stream: &mut S) -> anyhow::Result<ServerMessage>
where
    S: futures_util::Stream<Item = Result<Message, tokio_tungstenite::tungstenite::Error>> + Unpin,
{
    loop {
        let frame = stream
            .next()
            .await
            .ok_or_else(|| anyhow::anyhow!("renderer closed the link"))??;
        let Message::Text(text) = frame else { continue };
        match protocol::decode_renderer(text.as_str()).map_err(anyhow::Error::msg)? {
            RendererMessage::Reply { msg, .. } => return Ok(msg),
            RendererMessage::Error { code, message } => anyhow::bail!("{code}: {message}"),
            // Not asked for here: no events are sent and no dashboard watches.
            RendererMessage::Welcome { .. }
            | RendererMessage::EventsStored { .. }
            | RendererMessage::EventsRefused { .. }
            | RendererMessage::Analytics(_) => {}
        }
    }
}
