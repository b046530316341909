//! Durable analytics: tracked-site events appended to segment files in
//! `--data-dir/analytics`, replayed at start.
//!
//! Events are written before `POST /api/events` answers 202, in the journal's record
//! format (length, CRC-32, payload), into segments of a quarter of `--max-events` each.
//! At most five segments are kept, so the disk holds at most 1.25 × `--max-events`
//! events; replay keeps the newest `--max-events`. A torn record at the end of the newest
//! segment (a crash mid-write) is cut off like a recording log's.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use protocol::analytics::EventType;
use tracing::warn;

use crate::analytics::StoredEvent;
use crate::journal::{next_record, record_of};
use crate::store::lock;

/// Segments kept on disk (the one being written and the four before it).
const MAX_SEGMENTS: u64 = 5;

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
    file: Option<File>,
}

impl EventLog {
    /// Opens (creating) `data_dir/analytics` and replays its newest `max_events` events.
    ///
    /// # Errors
    /// Only if the folder cannot be created or listed; a bad segment is logged and skipped.
    pub fn open(data_dir: &Path, max_events: usize) -> io::Result<(EventLog, Vec<StoredEvent>)> {
        let dir = data_dir.join("analytics");
        std::fs::create_dir_all(&dir)?;
        let mut segments: Vec<(u64, PathBuf)> = std::fs::read_dir(&dir)?
            .filter_map(|entry| entry.ok().map(|entry| entry.path()))
            .filter_map(|path| segment_index(&path).map(|index| (index, path)))
            .collect();
        segments.sort();
        let mut events = Vec::new();
        let last = segments.last().map(|(index, _)| *index);
        for (index, path) in &segments {
            match replay_segment(path, Some(*index) == last) {
                Ok(mut replayed) => events.append(&mut replayed),
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
                file: None,
            }),
        };
        Ok((log, events))
    }

    /// Appends events; returns once the operating system has them.
    ///
    /// # Errors
    /// The IO error (disk full, folder removed…); the caller answers 503.
    pub fn append(&self, events: &[StoredEvent]) -> io::Result<()> {
        let mut bytes = Vec::with_capacity(events.len() * 96);
        for event in events {
            bytes.extend_from_slice(&record_of(&encode(event)));
        }
        let mut active = lock(&self.active);
        if active.events >= self.segment_events {
            active.index += 1;
            active.events = 0;
            active.file = None;
            let doomed = active.index.checked_sub(MAX_SEGMENTS);
            if let Some(doomed) = doomed {
                // Older segments than the kept five (usually just one) go.
                for index in doomed.saturating_sub(MAX_SEGMENTS)..=doomed {
                    let _ = std::fs::remove_file(self.path_of(index));
                }
            }
        }
        if active.file.is_none() {
            let path = self.path_of(active.index);
            active.file = Some(OpenOptions::new().create(true).append(true).open(path)?);
        }
        let Some(file) = active.file.as_mut() else {
            return Err(io::Error::other("analytics segment vanished"));
        };
        if let Err(err) = file.write_all(&bytes) {
            active.file = None;
            return Err(err);
        }
        active.events += events.len();
        Ok(())
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

fn replay_segment(path: &Path, newest: bool) -> io::Result<Vec<StoredEvent>> {
    let bytes = std::fs::read(path)?;
    let mut events = Vec::new();
    let mut offset = 0;
    while let Some((payload, next)) = next_record(&bytes, offset) {
        match decode(payload) {
            Some(event) => events.push(event),
            None => break,
        }
        offset = next;
    }
    if offset < bytes.len() {
        warn!(path = %path.display(), offset, "torn or corrupt record in an analytics segment; skipping the rest");
        if newest {
            OpenOptions::new()
                .write(true)
                .open(path)?
                .set_len(offset as u64)?;
        }
    }
    Ok(events)
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
            let (log, replayed) = EventLog::open(&dir, 10_000).unwrap();
            assert!(replayed.is_empty());
            log.append(&written[..20]).unwrap();
            log.append(&written[20..]).unwrap();
        }
        let (log, replayed) = EventLog::open(&dir, 10_000).unwrap();
        assert_eq!(replayed.len(), 50);
        assert!(replayed.iter().zip(&written).all(|(a, b)| same(a, b)));
        // New events go to a new segment; the old ones stay.
        log.append(&written[..5]).unwrap();
        drop(log);
        let (_, replayed) = EventLog::open(&dir, 30).unwrap();
        assert_eq!(replayed.len(), 30, "only the newest --max-events are kept");
        assert!(same(&replayed[29], &written[4]));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn old_segments_are_deleted() {
        let dir =
            std::env::temp_dir().join(format!("heatmap-event-log-rotate-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let (log, _) = EventLog::open(&dir, 4000).unwrap();
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
        let (_, replayed) = EventLog::open(&dir, 4000).unwrap();
        assert_eq!(replayed.len(), 4000);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn decoding_garbage_never_panics() {
        for len in 0..64 {
            let garbage: Vec<u8> = (0..len).map(|idx| (idx * 37 % 251) as u8).collect();
            let _ = decode(&garbage);
        }
    }
}
