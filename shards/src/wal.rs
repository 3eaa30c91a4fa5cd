//! The shard's write-ahead ring: every change the shard applies, in order, as a record with
//! a sequence number (the shard's replication offset), the operation encoded with rkyv, and
//! a crc32 of the encoding, computed when written and checked when read.
//!
//! Like Redis's replication backlog, which exists once a replica has connected, the ring
//! keeps records only once it has a reader (or is told to keep them always); before that
//! it only counts them, so a node nobody follows pays nothing to encode. The sequence
//! number counts every change from the start either way.
//!
//! The ring keeps the newest records within [`WalLimits`] (entries and bytes). Readers
//! register and read from their own cursor; a reader whose next record has already been
//! dropped is told so ([`WalError::FellBehind`]) and must start over from a full copy — it is
//! never handed a gap.
//!
//! Records are deterministic: they carry results, not commands (a TTL as an absolute time,
//! INCRBYFLOAT as the value it produced), and deletions by expiry or eviction are logged like
//! any other, so a follower replaying the ring ends with the same keys.

use crate::value::{Entry, Value};
use rkyv::rancor;
use rkyv::util::AlignedVec;
use std::collections::VecDeque;

/// Default bounds of a shard's ring (the node makes them configurable).
pub const WAL_MAX_ENTRIES_DEFAULT: usize = 1 << 20;
pub const WAL_MAX_BYTES_DEFAULT: usize = 16 * 1024 * 1024;

/// Bytes a record costs beyond its encoding (sequence, checksum, buffer header), for the
/// byte bound.
pub const RECORD_OVERHEAD_BYTES: usize = 8 + 4 + 24;

/// Why a key was deleted; followers apply all alike, but it shows in what is logged.
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
pub enum DelReason {
    /// A client command (DEL, GETDEL, RENAME's source, an expiry time in the past...).
    Command,
    /// Its TTL passed (lazy or active expiry).
    Expired,
    /// Evicted under maxmemory.
    Evicted,
}

/// A stored value as logged.
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, Clone, PartialEq, Eq)]
pub enum LoggedValue {
    Int(i64),
    Str { bytes: Vec<u8>, raw: bool },
}

/// One change to a shard.
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// The key now holds this value and expiry (0: none), whatever it held before.
    Set {
        db: u32,
        key: Vec<u8>,
        value: LoggedValue,
        expire_at_ms: u64,
    },
    /// The key is gone.
    Del {
        db: u32,
        key: Vec<u8>,
        why: DelReason,
    },
    /// The key's expiry is now `at_ms` (0: persistent).
    Expire { db: u32, key: Vec<u8>, at_ms: u64 },
    /// Every key of one database is gone.
    FlushDb { db: u32 },
}

impl Op {
    pub fn set(db: usize, key: &[u8], entry: &Entry) -> Op {
        Op::Set {
            db: db as u32,
            key: key.to_vec(),
            value: match &entry.value {
                Value::Int(n) => LoggedValue::Int(*n),
                Value::Str { bytes, raw } => LoggedValue::Str {
                    bytes: bytes.clone(),
                    raw: *raw,
                },
            },
            expire_at_ms: entry.expire_at_ms,
        }
    }

    /// The entry a `Set` describes.
    pub fn entry(value: &LoggedValue, expire_at_ms: u64) -> Entry {
        let value = match value {
            LoggedValue::Int(n) => Value::Int(*n),
            LoggedValue::Str { bytes, raw } => Value::Str {
                bytes: bytes.clone(),
                raw: *raw,
            },
        };
        Entry::with_expiry(value, expire_at_ms)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WalLimits {
    pub max_entries: usize,
    pub max_bytes: usize,
}

impl Default for WalLimits {
    fn default() -> Self {
        WalLimits {
            max_entries: WAL_MAX_ENTRIES_DEFAULT,
            max_bytes: WAL_MAX_BYTES_DEFAULT,
        }
    }
}

struct Record {
    seq: u64,
    crc: u32,
    data: AlignedVec,
}

impl Record {
    fn cost(&self) -> usize {
        self.data.len() + RECORD_OVERHEAD_BYTES
    }
}

/// A registered reader.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ReaderId(usize);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WalError {
    /// The next record the reader needs is no longer in the ring: it must resynchronise
    /// from a full copy. `oldest` is the oldest sequence number still held.
    #[error(
        "record {wanted} is gone from the ring (oldest held: {oldest}); a full sync is needed"
    )]
    FellBehind { wanted: u64, oldest: u64 },
    /// A record's checksum does not match its bytes, or they do not decode.
    #[error("record {seq} is damaged (checksum or encoding)")]
    Corrupt { seq: u64 },
    /// No such reader (never registered, or dropped).
    #[error("no such ring reader")]
    NoReader,
}

/// A shard's ring of records.
pub struct WalRing {
    records: VecDeque<Record>,
    bytes: usize,
    /// The sequence number the next record gets; the first is 1.
    next_seq: u64,
    limits: WalLimits,
    /// Each reader's next wanted sequence number; `None` for a free slot.
    readers: Vec<Option<u64>>,
    /// Scratch encoding buffer, reused.
    scratch: AlignedVec,
    /// Keep records even without a reader.
    keep_always: bool,
}

impl Default for WalRing {
    fn default() -> Self {
        WalRing::new(WalLimits::default())
    }
}

impl WalRing {
    pub fn new(limits: WalLimits) -> WalRing {
        WalRing {
            records: VecDeque::new(),
            bytes: 0,
            next_seq: 1,
            limits,
            readers: Vec::new(),
            scratch: AlignedVec::new(),
            keep_always: false,
        }
    }

    /// Whether records are kept: always if told so, else once a reader has registered.
    pub fn keeping(&self) -> bool {
        self.keep_always || self.readers.iter().any(Option::is_some)
    }

    pub fn set_keep_always(&mut self, keep: bool) {
        self.keep_always = keep;
    }

    /// Logs a change: encodes and keeps the record `make` builds if records are kept,
    /// else only counts it. Returns its sequence number.
    pub fn log(&mut self, make: impl FnOnce() -> Op) -> u64 {
        if self.keeping() {
            self.append(&make())
        } else {
            self.skip()
        }
    }

    /// Counts a change without keeping a record of it (nobody reads the ring). The records
    /// held before it can no longer be followed on from, so they are dropped.
    pub fn skip(&mut self) -> u64 {
        if !self.records.is_empty() {
            self.records.clear();
            self.bytes = 0;
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        seq
    }

    pub fn set_limits(&mut self, limits: WalLimits) {
        self.limits = limits;
        self.trim();
    }

    /// Appends a change; returns its sequence number.
    pub fn append(&mut self, op: &Op) -> u64 {
        let mut buf = std::mem::take(&mut self.scratch);
        buf.clear();
        let buf = rkyv::api::high::to_bytes_in::<_, rancor::Error>(op, buf)
            .expect("encoding an op into memory cannot fail");
        let mut data = AlignedVec::with_capacity(buf.len());
        data.extend_from_slice(&buf);
        self.scratch = buf;
        let seq = self.next_seq;
        self.next_seq += 1;
        let record = Record {
            seq,
            crc: crc32fast::hash(&data),
            data,
        };
        self.bytes += record.cost();
        self.records.push_back(record);
        self.trim();
        seq
    }

    fn trim(&mut self) {
        while self.records.len() > self.limits.max_entries
            || (self.bytes > self.limits.max_bytes && self.records.len() > 1)
        {
            let dropped = self.records.pop_front().expect("not empty");
            self.bytes -= dropped.cost();
        }
    }

    /// The sequence number of the newest record (0 before any).
    pub fn head(&self) -> u64 {
        self.next_seq - 1
    }

    /// The sequence number of the oldest record held (`head + 1` when empty).
    pub fn tail(&self) -> u64 {
        self.records.front().map_or(self.next_seq, |r| r.seq)
    }

    pub fn len(&self) -> usize {
        self.records.len()
    }

    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// Bytes held (encodings and per-record overhead).
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Registers a reader that starts after everything written so far.
    pub fn register_reader(&mut self) -> ReaderId {
        self.register_reader_at(self.next_seq)
    }

    /// Registers a reader whose next record is `next` (it may already be behind).
    pub fn register_reader_at(&mut self, next: u64) -> ReaderId {
        match self.readers.iter().position(Option::is_none) {
            Some(i) => {
                self.readers[i] = Some(next);
                ReaderId(i)
            }
            None => {
                self.readers.push(Some(next));
                ReaderId(self.readers.len() - 1)
            }
        }
    }

    pub fn drop_reader(&mut self, reader: ReaderId) {
        if let Some(slot) = self.readers.get_mut(reader.0) {
            *slot = None;
        }
    }

    /// How many records a reader has yet to read.
    pub fn lag(&self, reader: ReaderId) -> Option<u64> {
        let next = (*self.readers.get(reader.0)?)?;
        Some(self.next_seq.saturating_sub(next))
    }

    /// Every registered reader's lag.
    pub fn lags(&self) -> impl Iterator<Item = u64> + '_ {
        self.readers
            .iter()
            .flatten()
            .map(|next| self.next_seq.saturating_sub(*next))
    }

    /// The next sequence number `reader` wants.
    fn cursor(&self, reader: ReaderId) -> Result<u64, WalError> {
        self.readers
            .get(reader.0)
            .copied()
            .flatten()
            .ok_or(WalError::NoReader)
    }

    /// Reads up to `max` records from the reader's cursor, in order, checking each one, and
    /// moves the cursor past them.
    pub fn read(&mut self, reader: ReaderId, max: usize) -> Result<Vec<(u64, Op)>, WalError> {
        let next = self.cursor(reader)?;
        let out = self.read_from(next, max)?;
        if let Some((last, _)) = out.last() {
            self.readers[reader.0] = Some(last + 1);
        }
        Ok(out)
    }

    /// Reads up to `max` records starting at sequence number `next`, without a cursor.
    pub fn read_from(&self, next: u64, max: usize) -> Result<Vec<(u64, Op)>, WalError> {
        let tail = self.tail();
        if next < tail {
            return Err(WalError::FellBehind {
                wanted: next,
                oldest: tail,
            });
        }
        let skip = (next - tail) as usize;
        let mut out = Vec::new();
        for r in self.records.iter().skip(skip).take(max) {
            if crc32fast::hash(&r.data) != r.crc {
                return Err(WalError::Corrupt { seq: r.seq });
            }
            let op = rkyv::from_bytes::<Op, rancor::Error>(&r.data)
                .map_err(|_| WalError::Corrupt { seq: r.seq })?;
            out.push((r.seq, op));
        }
        Ok(out)
    }

    /// Moves the reader on over up to `max_bytes` of records (at least one, if any is
    /// waiting), appending each to `out` in the append-only file's framing (see
    /// [`crate::aof`]) after checking its checksum. Returns the last sequence number
    /// appended, or `None` when the reader was up to date.
    pub fn read_framed(
        &mut self,
        reader: ReaderId,
        max_bytes: usize,
        out: &mut Vec<u8>,
    ) -> Result<Option<u64>, WalError> {
        let next = self.cursor(reader)?;
        let last = self.read_framed_from(next, max_bytes, out)?;
        if let Some(seq) = last {
            self.readers[reader.0] = Some(seq + 1);
        }
        Ok(last)
    }

    /// Like [`WalRing::read_framed`], from sequence number `next`, without a cursor (a
    /// replica's stream keeps its own position).
    pub fn read_framed_from(
        &self,
        next: u64,
        max_bytes: usize,
        out: &mut Vec<u8>,
    ) -> Result<Option<u64>, WalError> {
        let tail = self.tail();
        if next < tail {
            return Err(WalError::FellBehind {
                wanted: next,
                oldest: tail,
            });
        }
        let start = out.len();
        let mut last = None;
        for r in self.records.iter().skip((next - tail) as usize) {
            if last.is_some() && out.len() - start >= max_bytes {
                break;
            }
            if crc32fast::hash(&r.data) != r.crc {
                return Err(WalError::Corrupt { seq: r.seq });
            }
            crate::aof::encode_record(r.seq, &r.data, out);
            last = Some(r.seq);
        }
        Ok(last)
    }

    /// Moves a reader's cursor to `next` (a reader that gives up on what it missed).
    pub fn set_cursor(&mut self, reader: ReaderId, next: u64) {
        if let Some(slot @ Some(_)) = self.readers.get_mut(reader.0) {
            *slot = Some(next);
        }
    }

    #[cfg(test)]
    fn flip_bit(&mut self, seq: u64) {
        let tail = self.tail();
        let r = &mut self.records[(seq - tail) as usize];
        r.data[0] ^= 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(i: u64) -> Op {
        Op::Set {
            db: 0,
            key: format!("k{i}").into_bytes(),
            value: LoggedValue::Int(i as i64),
            expire_at_ms: 0,
        }
    }

    #[test]
    fn every_kind_of_op_round_trips() {
        let mut ring = WalRing::default();
        let ops = vec![
            set(1),
            Op::Set {
                db: 3,
                key: b"s".to_vec(),
                value: LoggedValue::Str {
                    bytes: vec![0, 255, 7],
                    raw: true,
                },
                expire_at_ms: 1_700_000_000_123,
            },
            Op::Del {
                db: 1,
                key: b"gone".to_vec(),
                why: DelReason::Evicted,
            },
            Op::Expire {
                db: 0,
                key: b"t".to_vec(),
                at_ms: 42,
            },
            Op::FlushDb { db: 15 },
        ];
        let reader = ring.register_reader();
        for op in &ops {
            ring.append(op);
        }
        let got = ring.read(reader, 100).unwrap();
        assert_eq!(
            got.iter().map(|(s, _)| *s).collect::<Vec<_>>(),
            vec![1, 2, 3, 4, 5]
        );
        assert_eq!(got.into_iter().map(|(_, o)| o).collect::<Vec<_>>(), ops);
        assert_eq!(ring.lag(reader), Some(0));
        assert!(ring.read(reader, 100).unwrap().is_empty());
    }

    #[test]
    fn readers_see_everything_in_order_or_are_told_they_fell_behind() {
        let mut ring = WalRing::new(WalLimits {
            max_entries: 100,
            max_bytes: usize::MAX,
        });
        let fast = ring.register_reader();
        let slow = ring.register_reader();
        let mut seen = Vec::new();
        for i in 1..=1000u64 {
            ring.append(&set(i));
            if i % 7 == 0 {
                seen.extend(ring.read(fast, 50).unwrap().into_iter().map(|(s, _)| s));
            }
        }
        seen.extend(ring.read(fast, 1000).unwrap().into_iter().map(|(s, _)| s));
        assert_eq!(seen, (1..=1000).collect::<Vec<_>>(), "no gap, no repeat");
        assert_eq!(ring.len(), 100);
        assert_eq!((ring.tail(), ring.head()), (901, 1000));
        assert_eq!(ring.lag(slow), Some(1000));
        assert_eq!(
            ring.read(slow, 10),
            Err(WalError::FellBehind {
                wanted: 1,
                oldest: 901
            })
        );
        // Still behind on a second try: the cursor did not move.
        assert!(matches!(
            ring.read(slow, 10),
            Err(WalError::FellBehind { .. })
        ));
        ring.drop_reader(slow);
        assert_eq!(ring.read(slow, 1), Err(WalError::NoReader));
        let late = ring.register_reader_at(950);
        assert_eq!(ring.read(late, 1000).unwrap().len(), 51);
    }

    #[test]
    fn the_byte_bound_drops_the_oldest() {
        let mut ring = WalRing::new(WalLimits {
            max_entries: usize::MAX,
            max_bytes: 10_000,
        });
        ring.set_keep_always(true);
        for i in 1..=1000 {
            ring.append(&set(i));
            assert!(ring.bytes() <= 10_000);
        }
        assert!(ring.len() > 10 && ring.len() < 1000);
        assert_eq!(ring.head(), 1000);
        assert_eq!(ring.tail(), 1000 - ring.len() as u64 + 1);
    }

    #[test]
    fn without_readers_records_are_only_counted() {
        let mut ring = WalRing::default();
        for i in 1..=10 {
            assert_eq!(ring.log(|| set(i)), i);
        }
        assert_eq!((ring.head(), ring.len(), ring.bytes()), (10, 0, 0));
        let r = ring.register_reader();
        ring.log(|| set(11));
        assert_eq!(ring.read(r, 10).unwrap(), vec![(11, set(11))]);
        ring.drop_reader(r);
        ring.log(|| set(12));
        assert!(ring.is_empty(), "no reader: nothing kept");
        ring.set_keep_always(true);
        ring.log(|| set(13));
        assert_eq!(ring.read_from(13, 10).unwrap(), vec![(13, set(13))]);
    }

    #[test]
    fn a_flipped_bit_is_reported_not_returned() {
        let mut ring = WalRing::default();
        let r = ring.register_reader();
        for i in 1..=3 {
            ring.append(&set(i));
        }
        ring.flip_bit(2);
        assert_eq!(ring.read(r, 10), Err(WalError::Corrupt { seq: 2 }));
        // Records before the damage are readable on their own.
        assert_eq!(ring.read_from(1, 1).unwrap().len(), 1);
    }
}
