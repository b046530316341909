//! Durable analytics: tracked-site events appended to segment files in
//! `--data-dir/analytics`, replayed at start.
//!
//! Events are written before `POST /api/events` answers 202, through `append_log` (the
//! journal's record format and all-or-nothing appends), into segments of a quarter of
//! `--max-events` each. One request's events are one record, so a request is stored whole
//! or not at all: a 503 stores nothing, even if the process dies right after. At most five
//! segments are kept, so the disk holds at most 1.25 × `--max-events` events; replay keeps
//! the newest `--max-events`. A torn tail is cut off and damage in the middle is reported
//! with the good records after it kept, as for recording logs.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use protocol::analytics::EventType;
use tracing::warn;

use crate::analytics::StoredEvent;
use crate::append_log::{record_of, recover_file, AppendLog, Damage};
use crate::store::lock;

/// Segments kept on disk (the one being written and the four before it).
const MAX_SEGMENTS: u64 = 5;

/// First byte of a record holding several events (one request's). Records written before
/// batches start with an event kind (below `KINDS.len()`) and hold one event; both are read.
const TAG_EVENTS: u8 = 0x80;

/// Event types by their byte in a record (the order is part of the file format).
const KINDS: [EventType; 7] = [
    EventType::Pageview,
    EventType::Move,
    EventType::Click,
    EventType::Scroll,
    EventType::Visibility,
    EventType::Leave,
    EventType::Custom,
];

/// The segment files of the analytics events.
#[derive(Debug)]
pub struct EventLog {
    dir: PathBuf,
    segment_events: usize,
    active: Mutex<Active>,
}

#[derive(Debug)]
struct Active {
    index: u64,
    events: usize,
    log: Option<AppendLog>,
}

impl EventLog {
    /// Opens (creating) `data_dir/analytics` and replays its newest `max_events` events.
    /// The returned [`Damage`] sums what recovery found, for `/metrics` and `/healthz`.
    ///
    /// # Errors
    /// Only if the folder cannot be created or listed; an unreadable segment is logged and
    /// skipped.
    pub fn open(
        data_dir: &Path,
        max_events: usize,
    ) -> io::Result<(EventLog, Vec<StoredEvent>, Damage)> {
        let dir = data_dir.join("analytics");
        std::fs::create_dir_all(&dir)?;
        let mut segments: Vec<(u64, PathBuf)> = std::fs::read_dir(&dir)?
            .filter_map(|entry| entry.ok().map(|entry| entry.path()))
            .filter_map(|path| segment_index(&path).map(|index| (index, path)))
            .collect();
        segments.sort();
        let mut events = Vec::new();
        let mut damage = Damage::default();
        let last = segments.last().map(|(index, _)| *index);
        for (_, path) in &segments {
            match replay_segment(path) {
                Ok((mut replayed, segment_damage)) => {
                    events.append(&mut replayed);
                    damage.add(segment_damage);
                }
                Err(err) => {
                    warn!(path = %path.display(), cause = %err, "cannot read an analytics segment; skipping it")
                }
            }
        }
        if events.len() > max_events {
            events.drain(..events.len() - max_events);
        }
        let log = EventLog {
            dir,
            segment_events: (max_events / 4).max(1000),
            // New events go to a fresh segment after the newest one.
            active: Mutex::new(Active {
                index: last.map_or(0, |index| index + 1),
                events: 0,
                log: None,
            }),
        };
        Ok((log, events, damage))
    }

    /// Appends events as one record; returns once the operating system has them.
    ///
    /// # Errors
    /// The IO error (disk full, folder removed…); the caller answers 503, and none of the
    /// events is stored.
    pub fn append(&self, events: &[StoredEvent]) -> io::Result<()> {
        if events.is_empty() {
            return Ok(());
        }
        let record = record_of(&encode_events(events))?;
        let mut active = lock(&self.active);
        if active.events >= self.segment_events {
            // A segment is left only whole: bytes of a failed append must not stay behind.
            if let Some(log) = active.log.as_mut() {
                log.repair()?;
            }
            active.index += 1;
            active.events = 0;
            active.log = None;
            let doomed = active.index.checked_sub(MAX_SEGMENTS);
            if let Some(doomed) = doomed {
                // Older segments than the kept five (usually just one) go.
                for index in doomed.saturating_sub(MAX_SEGMENTS)..=doomed {
                    let _ = std::fs::remove_file(self.path_of(index));
                }
            }
        }
        if active.log.is_none() {
            let path = self.path_of(active.index);
            active.log = Some(AppendLog::open(&path, None, false)?);
        }
        let Some(log) = active.log.as_mut() else {
            return Err(io::Error::other("analytics segment vanished"));
        };
        log.append(&record)?;
        active.events += events.len();
        Ok(())
    }

    /// Injects failures into the open segment, for tests of the failure paths.
    #[cfg(test)]
    fn inject(&self, faults: crate::append_log::Faults) {
        if let Some(log) = lock(&self.active).log.as_mut() {
            log.faults = faults;
        }
    }

    fn path_of(&self, index: u64) -> PathBuf {
        self.dir.join(format!("events-{index:010}.log"))
    }
}

fn segment_index(path: &Path) -> Option<u64> {
    let name = path.file_name()?.to_str()?;
    name.strip_prefix("events-")?
        .strip_suffix(".log")?
        .parse()
        .ok()
}

/// Replays one segment, cutting off a torn tail.
fn replay_segment(path: &Path) -> io::Result<(Vec<StoredEvent>, Damage)> {
    let mut events = Vec::new();
    let (_, damage) = recover_file(path, |payload| match decode_record(payload) {
        Some(mut decoded) => {
            events.append(&mut decoded);
            true
        }
        None => false,
    })?;
    Ok((events, damage))
}

/// One record's payload for several events: the tag, the count, then each event's
/// encoding behind its length.
fn encode_events(events: &[StoredEvent]) -> Vec<u8> {
    let mut payload = Vec::with_capacity(5 + events.len() * 100);
    payload.push(TAG_EVENTS);
    payload.extend_from_slice(&(events.len() as u32).to_le_bytes());
    for event in events {
        let encoded = encode(event);
        payload.extend_from_slice(&(encoded.len() as u32).to_le_bytes());
        payload.extend_from_slice(&encoded);
    }
    payload
}

/// The events of one record (a batch, or one event from before batches); `None` if any
/// part does not decode, so a record is taken whole or not at all.
fn decode_record(payload: &[u8]) -> Option<Vec<StoredEvent>> {
    if payload.first() != Some(&TAG_EVENTS) {
        return decode(payload).map(|event| vec![event]);
    }
    let mut reader = Reader {
        bytes: payload,
        at: 1,
    };
    let count = u32::from_le_bytes(reader.take(4)?.try_into().ok()?) as usize;
    // Each event takes more than 4 bytes, which bounds the allocation by the payload.
    let mut events = Vec::with_capacity(count.min(payload.len() / 4));
    for _ in 0..count {
        let len = u32::from_le_bytes(reader.take(4)?.try_into().ok()?) as usize;
        events.push(decode(reader.take(len)?)?);
    }
    (reader.at == payload.len()).then_some(events)
}

fn encode(event: &StoredEvent) -> Vec<u8> {
    let mut payload = Vec::with_capacity(96);
    let kind = KINDS
        .iter()
        .position(|kind| *kind == event.kind)
        .unwrap_or(KINDS.len() - 1);
    payload.push(kind as u8);
    payload.extend_from_slice(&event.at_ms.to_le_bytes());
    for value in [
        event.x,
        event.y,
        event.vw,
        event.dw,
        event.dh,
        event.depth,
        event.ox,
        event.oy,
    ] {
        payload.extend_from_slice(&value.to_le_bytes());
    }
    payload.push(u8::from(event.visible));
    for text in [
        Some(&*event.page),
        Some(&*event.session),
        event.country.as_deref(),
        event.path.as_deref(),
    ] {
        let text = text.unwrap_or("").as_bytes();
        let len = text.len().min(u16::MAX as usize);
        payload.extend_from_slice(&(len as u16).to_le_bytes());
        payload.extend_from_slice(&text[..len]);
    }
    payload
}

fn decode(payload: &[u8]) -> Option<StoredEvent> {
    let mut reader = Reader {
        bytes: payload,
        at: 0,
    };
    let kind = *KINDS.get(reader.take(1)?[0] as usize)?;
    let at_ms = i64::from_le_bytes(reader.take(8)?.try_into().ok()?);
    let mut floats = [0f32; 8];
    for value in &mut floats {
        *value = f32::from_le_bytes(reader.take(4)?.try_into().ok()?);
    }
    let visible = reader.take(1)?[0] != 0;
    let mut text = || -> Option<Option<Arc<str>>> {
        let len = u16::from_le_bytes(reader.take(2)?.try_into().ok()?) as usize;
        let bytes = reader.take(len)?;
        let text = std::str::from_utf8(bytes).ok()?;
        Some((!text.is_empty()).then(|| Arc::from(text)))
    };
    let page = text()??;
    let session = text()??;
    let country = text()?;
    let path = text()?;
    let [x, y, vw, dw, dh, depth, ox, oy] = floats;
    Some(StoredEvent {
        kind,
        page,
        session,
        country,
        at_ms,
        x,
        y,
        vw,
        dw,
        dh,
        depth,
        path,
        ox,
        oy,
        visible,
    })
}

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl Reader<'_> {
    fn take(&mut self, n: usize) -> Option<&[u8]> {
        let slice = self.bytes.get(self.at..self.at.checked_add(n)?)?;
        self.at += n;
        Some(slice)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(idx: usize) -> StoredEvent {
        StoredEvent {
            kind: KINDS[idx % KINDS.len()],
            page: Arc::from(format!("/page/{}", idx % 3)),
            session: Arc::from(format!("s{}", idx % 5)),
            country: idx.is_multiple_of(2).then(|| Arc::from("DE")),
            at_ms: 1_764_000_000_000 + idx as i64,
            x: idx as f32,
            y: 2.0 * idx as f32,
            vw: 1440.0,
            dw: 1440.0,
            dh: 3000.0,
            depth: 0.5,
            path: idx.is_multiple_of(3).then(|| Arc::from("button#buy")),
            ox: 0.25,
            oy: 0.75,
            visible: idx % 2 == 1,
        }
    }

    fn same(a: &StoredEvent, b: &StoredEvent) -> bool {
        encode(a) == encode(b)
    }

    #[test]
    fn events_survive_a_reopen_in_order() {
        let dir = std::env::temp_dir().join(format!("heatmap-event-log-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let written: Vec<StoredEvent> = (0..50).map(event).collect();
        {
            let (log, replayed, _) = EventLog::open(&dir, 10_000).unwrap();
            assert!(replayed.is_empty());
            log.append(&written[..20]).unwrap();
            log.append(&written[20..]).unwrap();
        }
        let (log, replayed, _) = EventLog::open(&dir, 10_000).unwrap();
        assert_eq!(replayed.len(), 50);
        assert!(replayed.iter().zip(&written).all(|(a, b)| same(a, b)));
        // New events go to a new segment; the old ones stay.
        log.append(&written[..5]).unwrap();
        drop(log);
        let (_, replayed, _) = EventLog::open(&dir, 30).unwrap();
        assert_eq!(replayed.len(), 30, "only the newest --max-events are kept");
        assert!(same(&replayed[29], &written[4]));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn old_segments_are_deleted() {
        let dir =
            std::env::temp_dir().join(format!("heatmap-event-log-rotate-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let (log, _, _) = EventLog::open(&dir, 4000).unwrap();
        let batch: Vec<StoredEvent> = (0..1000).map(event).collect();
        for _ in 0..20 {
            log.append(&batch).unwrap();
        }
        let segments = std::fs::read_dir(dir.join("analytics")).unwrap().count();
        assert!(
            segments <= MAX_SEGMENTS as usize,
            "{segments} segments kept"
        );
        drop(log);
        let (_, replayed, _) = EventLog::open(&dir, 4000).unwrap();
        assert_eq!(replayed.len(), 4000);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn decoding_garbage_never_panics() {
        for len in 0..64 {
            let garbage: Vec<u8> = (0..len).map(|idx| (idx * 37 % 251) as u8).collect();
            let _ = decode(&garbage);
            let mut tagged = vec![TAG_EVENTS];
            tagged.extend_from_slice(&garbage);
            let _ = decode_record(&tagged);
        }
    }

    #[test]
    fn single_event_records_from_before_batches_are_still_read() {
        let dir =
            std::env::temp_dir().join(format!("heatmap-event-log-old-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("analytics")).unwrap();
        let old: Vec<u8> = (0..3)
            .flat_map(|idx| record_of(&encode(&event(idx))).unwrap())
            .collect();
        std::fs::write(dir.join("analytics/events-0000000000.log"), old).unwrap();
        let (log, _, _) = EventLog::open(&dir, 10_000).unwrap();
        log.append(&[event(3), event(4)]).unwrap();
        drop(log);
        let (_, replayed, damage) = EventLog::open(&dir, 10_000).unwrap();
        assert_eq!(replayed.len(), 5);
        assert!(replayed
            .iter()
            .enumerate()
            .all(|(idx, e)| same(e, &event(idx))));
        assert_eq!(damage, Damage::default());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// A full disk at every byte of a request's record: the request fails (503) and none
    /// of its events is stored; requests answered 202 before and after are all recovered.
    #[test]
    fn a_full_disk_at_any_byte_stores_a_refused_request_not_at_all() {
        use crate::append_log::Faults;
        let dir =
            std::env::temp_dir().join(format!("heatmap-event-log-enospc-{}", std::process::id()));
        let accepted_before: Vec<StoredEvent> = (0..7).map(event).collect();
        let refused: Vec<StoredEvent> = (100..102).map(event).collect();
        let accepted_after: Vec<StoredEvent> = (200..205).map(event).collect();
        let record_len = record_of(&encode_events(&refused)).unwrap().len();
        let mut n_cases = 0;
        for k in 0..record_len {
            for failing_cuts in [0, 1] {
                let _ = std::fs::remove_dir_all(&dir);
                let (log, _, _) = EventLog::open(&dir, 10_000).unwrap();
                log.append(&accepted_before).unwrap();
                log.inject(Faults {
                    write_budget: Some(k),
                    failing_cuts,
                    ..Faults::default()
                });
                let err = log.append(&refused).unwrap_err();
                assert_eq!(err.raw_os_error(), Some(28), "k={k}");
                log.inject(Faults::default());
                log.append(&accepted_after).unwrap();
                drop(log);
                let (_, replayed, damage) = EventLog::open(&dir, 10_000).unwrap();
                let acknowledged: Vec<&StoredEvent> =
                    accepted_before.iter().chain(&accepted_after).collect();
                assert_eq!(replayed.len(), acknowledged.len(), "k={k}");
                assert!(
                    replayed.iter().zip(&acknowledged).all(|(a, b)| same(a, b)),
                    "k={k}"
                );
                assert_eq!(damage, Damage::default(), "k={k}");
                n_cases += 1;
            }
        }
        assert_eq!(n_cases, 2 * record_len);
        eprintln!("event log: {n_cases} failure points in a {record_len}-byte record, all exact");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
