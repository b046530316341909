//! The one way the renderer appends to its files: a whole record lands, or nothing does.
//!
//! Recording logs (`journal`) are sequences of
//! records `[payload length u32][crc32 of payload u32][payload]`, little-endian.
//!
//! [`AppendLog`] knows the length of its file up to the end of the last whole record. If
//! an append fails part-way (a full disk, a failed sync), it cuts the file back to that
//! length, so the file is exactly as it was and no later record ever lands after a partial
//! one. If even the cut fails, the log remembers it and repairs the file before it writes
//! anything else; a crash in between leaves the partial bytes at the very end, where
//! recovery sees a torn tail. Only after an append returns `Ok` may the caller
//! acknowledge, so whatever was acknowledged is readable after a restart.
//!
//! [`recover`] reads the records back. Damage at the end of a file (nothing valid after
//! it) is a torn tail, left by a crash mid-write: it was never acknowledged, and it is cut
//! off. Damage followed by valid records cannot come from this writer: it is corruption (a
//! bad disk, an outside edit, or a file written before appends were made atomic). Recovery
//! then resynchronises on the framing, at the next offset where a whole record with a
//! valid length and CRC-32 parses and decodes, keeps everything from there, and reports
//! the damaged span loudly (an `error!` line, `renderer_storage_corrupt_*` metrics and
//! `/healthz`). Resynchronising rather than refusing to start keeps every good record and
//! the service up; a false resynchronisation needs 8 bytes inside the damage whose CRC-32
//! matches the bytes they claim and a payload that decodes, about 2^-32 per offset.

use std::fs::{File, OpenOptions};
use std::io::{self, Seek, SeekFrom, Write};
use std::ops::Range;
use std::path::{Path, PathBuf};

use tracing::{error, warn};

/// Largest payload a record may hold; a longer claimed length is corruption, not data,
/// and an append of a longer payload is refused.
pub const MAX_PAYLOAD: usize = 64 * 1024 * 1024;

/// What recovery found wrong in the files it read, for the log, `/metrics` and `/healthz`.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Damage {
    /// Damaged spans with good records after them (kept); each is an error an operator
    /// should look at.
    pub corrupt_spans: u64,
    /// Bytes in those spans.
    pub corrupt_bytes: u64,
    /// Files whose end held a partial record (a crash or a failed write), cut off.
    pub torn_tails: u64,
    /// Bytes cut off those ends.
    pub torn_bytes: u64,
}

impl Damage {
    /// Adds another file's damage to this total.
    pub fn add(&mut self, other: Damage) {
        self.corrupt_spans += other.corrupt_spans;
        self.corrupt_bytes += other.corrupt_bytes;
        self.torn_tails += other.torn_tails;
        self.torn_bytes += other.torn_bytes;
    }
}

/// Where recovery found the good records of one file.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Recovery {
    /// The end of the last good record: the file's length once its torn tail is cut.
    pub good_end: usize,
    /// Damaged byte ranges that have good records after them, in file order.
    pub corrupt: Vec<Range<usize>>,
}

/// One file open for appending whole records.
///
/// Exactly one `AppendLog` writes a given file at a time (its owner holds it under a lock),
/// so its idea of the file's good length is the truth.
#[derive(Debug)]
pub(crate) struct AppendLog {
    path: PathBuf,
    file: File,
    /// Bytes of whole records in the file; every byte before this was acknowledged or
    /// recovered, nothing after it was.
    len: u64,
    /// A failed append could not be cut back, so bytes past `len` must go before anything
    /// else is written.
    dirty: bool,
    /// Sync every append to disk before it counts (`--fsync`).
    fsync: bool,
    /// Failures a test injects.
    #[cfg(test)]
    pub faults: Faults,
}

impl AppendLog {
    /// Opens (creating) `path` for appending after its last whole record.
    ///
    /// `expected_len` is the good length recovery or an earlier handle left the file at;
    /// bytes past it are the remains of a failed append and are cut. Without it (or if the
    /// file is shorter, which only an outside hand can do) the file is read to find its
    /// last whole record.
    ///
    /// # Errors
    /// The IO error of opening, reading or cutting the file.
    pub fn open(path: &Path, expected_len: Option<u64>, fsync: bool) -> io::Result<AppendLog> {
        let mut file = OpenOptions::new()
            .create(true)
            .read(true)
            .write(true)
            .truncate(false)
            .open(path)?;
        let actual = file.metadata()?.len();
        let len = match expected_len {
            Some(expected) if expected <= actual => expected,
            _ if actual == 0 => 0,
            _ => {
                let bytes = std::fs::read(path)?;
                recover(&bytes, |_| true).good_end as u64
            }
        };
        if len < actual {
            warn!(path = %path.display(), offset = len, dropped_bytes = actual - len, "cutting the remains of a failed append off a log");
            file.set_len(len)?;
        }
        file.seek(SeekFrom::Start(len))?;
        Ok(AppendLog {
            path: path.to_owned(),
            file,
            len,
            dirty: false,
            fsync,
            #[cfg(test)]
            faults: Faults::default(),
        })
    }

    /// The file's good length: the end of its last whole record.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Appends `records` (whole records from [`record_of`]); on `Ok` they are with the
    /// operating system (and on disk, with `--fsync`).
    ///
    /// # Errors
    /// The IO error of the write or sync; the file is then as it was before the call.
    /// If an earlier failure could not be undone and still cannot, that error, and
    /// nothing is written.
    pub fn append(&mut self, records: &[u8]) -> io::Result<()> {
        if self.dirty {
            self.cut_back().map_err(|err| {
                io::Error::new(
                    err.kind(),
                    format!("cannot undo an earlier failed append: {err}"),
                )
            })?;
        }
        let written = self
            .write(records)
            .and_then(|()| if self.fsync { self.sync() } else { Ok(()) });
        match written {
            Ok(()) => {
                self.len += records.len() as u64;
                Ok(())
            }
            Err(err) => {
                if let Err(cut_err) = self.cut_back() {
                    self.dirty = true;
                    error!(
                        path = %self.path.display(),
                        len = self.len,
                        cause = %cut_err,
                        "cannot cut a failed append back; the log is repaired before its next append"
                    );
                }
                Err(err)
            }
        }
    }

    /// Makes the file hold exactly its whole records again, if a failed append left more.
    ///
    /// # Errors
    /// The IO error of the cut; the log stays marked for repair.
    pub fn repair(&mut self) -> io::Result<()> {
        if self.dirty {
            self.cut_back()?;
        }
        Ok(())
    }

    /// Cuts the file back to `len` and puts the cursor there.
    fn cut_back(&mut self) -> io::Result<()> {
        #[cfg(test)]
        if self.faults.failing_cuts > 0 {
            self.faults.failing_cuts -= 1;
            return Err(io::Error::from_raw_os_error(5));
        }
        self.file.set_len(self.len)?;
        self.file.seek(SeekFrom::Start(self.len))?;
        self.dirty = false;
        Ok(())
    }

    fn write(&mut self, bytes: &[u8]) -> io::Result<()> {
        #[cfg(test)]
        if let Some(budget) = self.faults.write_budget {
            // A disk with `budget` bytes free: write what fits, then fail like a full disk.
            let fits = budget.min(bytes.len());
            self.file.write_all(&bytes[..fits])?;
            self.faults.write_budget = Some(budget - fits);
            if fits < bytes.len() {
                return Err(io::Error::from_raw_os_error(28));
            }
            return Ok(());
        }
        self.file.write_all(bytes)
    }

    fn sync(&mut self) -> io::Result<()> {
        #[cfg(test)]
        if self.faults.failing_syncs > 0 {
            self.faults.failing_syncs -= 1;
            return Err(io::Error::from_raw_os_error(5));
        }
        self.file.sync_data()
    }
}

/// Failures a test injects into one [`AppendLog`], to prove appends are all or nothing.
#[cfg(test)]
#[derive(Debug, Default, Clone)]
pub(crate) struct Faults {
    /// Bytes that still fit on the "disk"; a write past them fails with ENOSPC after
    /// writing what fits. `None` is an unlimited disk.
    pub write_budget: Option<usize>,
    /// Cuts (truncations) that fail with EIO before one succeeds.
    pub failing_cuts: usize,
    /// Syncs that fail with EIO before one succeeds.
    pub failing_syncs: usize,
}

/// A whole record: length, checksum, payload.
///
/// # Errors
/// `InvalidInput` for an empty payload or one over [`MAX_PAYLOAD`], which recovery could
/// not tell from corruption.
pub(crate) fn record_of(payload: &[u8]) -> io::Result<Vec<u8>> {
    if payload.is_empty() || payload.len() > MAX_PAYLOAD {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "a record payload of {} bytes is outside 1..={MAX_PAYLOAD}",
                payload.len()
            ),
        ));
    }
    let mut record = Vec::with_capacity(8 + payload.len());
    record.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    record.extend_from_slice(&crc32fast::hash(payload).to_le_bytes());
    record.extend_from_slice(payload);
    Ok(record)
}

/// The payload of the record at `offset` and the offset after it, if it is whole and sound.
pub(crate) fn next_record(bytes: &[u8], offset: usize) -> Option<(&[u8], usize)> {
    let header = bytes.get(offset..offset.checked_add(8)?)?;
    let len = u32::from_le_bytes(header[..4].try_into().ok()?) as usize;
    let crc = u32::from_le_bytes(header[4..].try_into().ok()?);
    if len == 0 || len > MAX_PAYLOAD {
        return None;
    }
    let end = offset.checked_add(8)?.checked_add(len)?;
    let payload = bytes.get(offset + 8..end)?;
    (crc32fast::hash(payload) == crc).then_some((payload, end))
}

/// Reads every good record of `bytes` in order, handing each payload to `accept`.
///
/// `accept` decodes and keeps a payload, returning `false` (and keeping nothing) if it
/// does not decode, which counts as damage. After damage, recovery resumes at the next
/// offset where a record is whole, sound and accepted; the damage is reported in
/// [`Recovery::corrupt`] if such a record follows, and is the torn tail otherwise.
pub fn recover(bytes: &[u8], mut accept: impl FnMut(&[u8]) -> bool) -> Recovery {
    let mut accept_at = |at: usize| {
        next_record(bytes, at)
            .filter(|(payload, _)| accept(payload))
            .map(|(_, next)| next)
    };
    let mut recovery = Recovery::default();
    let mut offset = 0;
    while offset < bytes.len() {
        if let Some(next) = accept_at(offset) {
            offset = next;
            recovery.good_end = next;
            continue;
        }
        let resumed =
            (offset + 1..bytes.len()).find_map(|probe| accept_at(probe).map(|next| (probe, next)));
        let Some((probe, next)) = resumed else {
            break;
        };
        recovery.corrupt.push(offset..probe);
        offset = next;
        recovery.good_end = next;
    }
    recovery
}

/// Recovers one file: reads it, hands every good record to `accept`, reports the damage
/// (an `error!` per corrupt span, a `warn!` for a torn tail) and cuts the torn tail off.
///
/// Returns the file's good length and its damage. A tail that cannot be cut is logged and
/// left; the next [`AppendLog::open`] with that length cuts it before writing.
///
/// # Errors
/// Only if the file cannot be read.
pub(crate) fn recover_file(
    path: &Path,
    accept: impl FnMut(&[u8]) -> bool,
) -> io::Result<(u64, Damage)> {
    let bytes = std::fs::read(path)?;
    let recovery = recover(&bytes, accept);
    let mut damage = Damage::default();
    for span in &recovery.corrupt {
        error!(
            path = %path.display(),
            offset = span.start,
            bytes = span.len(),
            "corrupt records in the middle of a log (a bad disk or an outside edit, not a crash); kept every good record after them"
        );
        damage.corrupt_spans += 1;
        damage.corrupt_bytes += span.len() as u64;
    }
    if recovery.good_end < bytes.len() {
        let dropped_bytes = bytes.len() - recovery.good_end;
        warn!(
            path = %path.display(),
            offset = recovery.good_end,
            dropped_bytes,
            "torn record at the end of a log (a crash or a failed write, never acknowledged); cutting it off"
        );
        damage.torn_tails += 1;
        damage.torn_bytes += dropped_bytes as u64;
        let cut = OpenOptions::new()
            .write(true)
            .open(path)
            .and_then(|file| file.set_len(recovery.good_end as u64));
        if let Err(err) = cut {
            warn!(path = %path.display(), cause = %err, "cannot cut a torn tail now; it is cut before the next append");
        }
    }
    Ok((recovery.good_end as u64, damage))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn records(payloads: &[&[u8]]) -> Vec<u8> {
        payloads
            .iter()
            .flat_map(|payload| record_of(payload).unwrap())
            .collect()
    }

    fn recovered(bytes: &[u8]) -> (Vec<Vec<u8>>, Recovery) {
        let mut payloads = Vec::new();
        let recovery = recover(bytes, |payload| {
            payloads.push(payload.to_vec());
            true
        });
        (payloads, recovery)
    }

    #[test]
    fn a_damaged_middle_record_is_reported_and_the_rest_kept() {
        let mut bytes = records(&[b"first", b"second", b"third"]);
        // Flip a byte of the second record's payload.
        bytes[13 + 8 + 2] ^= 0x40;
        let (payloads, recovery) = recovered(&bytes);
        assert_eq!(payloads, vec![b"first".to_vec(), b"third".to_vec()]);
        assert_eq!(recovery.corrupt, vec![13..27]);
        assert_eq!(recovery.good_end, bytes.len());
    }

    #[test]
    fn damage_at_the_end_is_a_torn_tail() {
        let mut bytes = records(&[b"first", b"second"]);
        bytes.extend_from_slice(&[9, 0, 0, 0, 1, 2]);
        let (payloads, recovery) = recovered(&bytes);
        assert_eq!(payloads.len(), 2);
        assert!(recovery.corrupt.is_empty());
        assert_eq!(recovery.good_end, 27);
    }

    #[test]
    fn oversized_and_empty_payloads_are_refused() {
        assert_eq!(
            record_of(&[]).unwrap_err().kind(),
            io::ErrorKind::InvalidInput
        );
        let huge = vec![0u8; MAX_PAYLOAD + 1];
        assert_eq!(
            record_of(&huge).unwrap_err().kind(),
            io::ErrorKind::InvalidInput
        );
    }

    #[test]
    fn a_failed_append_leaves_the_file_as_it_was_for_every_failure_point() {
        let dir = std::env::temp_dir().join(format!("heatmap-append-log-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("log");
        let first = record_of(b"acknowledged").unwrap();
        let second = record_of(b"refused, then resent").unwrap();
        for k in 0..second.len() {
            for failing_cuts in [0, 1] {
                let _ = std::fs::remove_file(&path);
                let mut log = AppendLog::open(&path, None, false).unwrap();
                log.append(&first).unwrap();
                log.faults.write_budget = Some(k);
                log.faults.failing_cuts = failing_cuts;
                assert_eq!(
                    log.append(&second).unwrap_err().raw_os_error(),
                    Some(28),
                    "k={k}"
                );
                if failing_cuts == 0 {
                    assert_eq!(std::fs::read(&path).unwrap(), first, "k={k}");
                }
                log.faults.write_budget = None;
                log.append(&second).unwrap();
                let expected: Vec<u8> = [first.clone(), second.clone()].concat();
                assert_eq!(std::fs::read(&path).unwrap(), expected, "k={k}");
                assert_eq!(log.len(), expected.len() as u64);
            }
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_failed_sync_is_undone() {
        let dir =
            std::env::temp_dir().join(format!("heatmap-append-log-sync-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("log");
        let mut log = AppendLog::open(&path, None, true).unwrap();
        let record = record_of(b"payload").unwrap();
        log.append(&record).unwrap();
        log.faults.failing_syncs = 1;
        assert!(log.append(&record).is_err());
        assert_eq!(std::fs::read(&path).unwrap(), record);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn reopening_cuts_what_a_failed_append_left() {
        let dir =
            std::env::temp_dir().join(format!("heatmap-append-log-reopen-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("log");
        let record = record_of(b"payload").unwrap();
        let mut log = AppendLog::open(&path, None, false).unwrap();
        log.append(&record).unwrap();
        log.faults.write_budget = Some(5);
        log.faults.failing_cuts = 1;
        assert!(log.append(&record).is_err());
        let good_len = log.len();
        drop(log);
        assert_eq!(std::fs::metadata(&path).unwrap().len(), good_len + 5);
        // Known length: cut to it. Unknown length: found by reading the records.
        for expected in [Some(good_len), None] {
            let mut bytes = std::fs::read(&path).unwrap();
            bytes.truncate(good_len as usize);
            bytes.extend_from_slice(&record[..5]);
            std::fs::write(&path, &bytes).unwrap();
            let mut log = AppendLog::open(&path, expected, false).unwrap();
            assert_eq!(log.len(), good_len);
            log.append(&record).unwrap();
            assert_eq!(
                std::fs::read(&path).unwrap(),
                [record.clone(), record.clone()].concat()
            );
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
