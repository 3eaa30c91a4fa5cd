//! The append-only file: a shard's ring records, as they were logged, one after another.
//!
//! ```text
//! magic    8 bytes  "TAOF\0\0\0\x01"
//! records  each: length (u32 LE) of the payload, crc32 of those 4 length bytes, crc32
//!          of the payload, payload: sequence number (u64 LE), then the op (rkyv, as in
//!          the ring)
//! ```
//!
//! Within one file the sequence numbers rise by one from record to record, so a lost or
//! repeated record is seen. Reading tells a torn end (the last record cut short or not
//! matching its checksum, as a crash in the middle of a write leaves it) from damage
//! earlier in the file (a bad record with more records after it).

use crate::wal::Op;
use rkyv::rancor;
use rkyv::util::AlignedVec;
use std::io::Read;

pub const MAGIC: &[u8; 8] = b"TAOF\0\0\0\x01";

/// The largest record a reader accepts (a key and value within proto-max-bulk-len, 512 MB,
/// and the framing).
pub const RECORD_MAX_BYTES: usize = 1 << 30;

/// A record's header: length, its checksum, the payload's checksum.
const HEADER_BYTES: usize = 12;

/// Appends one record in the file's framing.
pub fn encode_record(seq: u64, op_bytes: &[u8], out: &mut Vec<u8>) {
    let len = (8 + op_bytes.len()) as u32;
    let mut crc = crc32fast::Hasher::new();
    crc.update(&seq.to_le_bytes());
    crc.update(op_bytes);
    out.reserve(HEADER_BYTES + len as usize);
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&crc32fast::hash(&len.to_le_bytes()).to_le_bytes());
    out.extend_from_slice(&crc.finalize().to_le_bytes());
    out.extend_from_slice(&seq.to_le_bytes());
    out.extend_from_slice(op_bytes);
}

/// Encodes `op` as the record `seq` (tests and tools; the server copies the ring's bytes).
pub fn encode_op(seq: u64, op: &Op, out: &mut Vec<u8>) {
    let bytes = rkyv::to_bytes::<rancor::Error>(op).expect("encoding into memory");
    encode_record(seq, &bytes, out);
}

/// Decodes a run of whole records (a replication batch: no magic, nothing torn allowed),
/// checking each record's checksums and that sequence numbers rise by one.
pub fn decode_records(bytes: &[u8]) -> Result<Vec<(u64, Op)>, String> {
    let mut out = Vec::new();
    let mut at = 0usize;
    let mut payload: AlignedVec = AlignedVec::new();
    while at < bytes.len() {
        let head = bytes
            .get(at..at + HEADER_BYTES)
            .ok_or_else(|| format!("cut inside a record's header at byte {at}"))?;
        let word = |i: usize| u32::from_le_bytes(head[i..i + 4].try_into().expect("4 bytes"));
        let n = word(0) as usize;
        if crc32fast::hash(&head[..4]) != word(4) {
            return Err(format!(
                "a record's length does not match its checksum at byte {at}"
            ));
        }
        if !(8..=RECORD_MAX_BYTES).contains(&n) {
            return Err(format!("a record of {n} bytes at byte {at}"));
        }
        let body = bytes
            .get(at + HEADER_BYTES..at + HEADER_BYTES + n)
            .ok_or_else(|| format!("cut inside a record at byte {at}"))?;
        if crc32fast::hash(body) != word(8) {
            return Err(format!("checksum mismatch in the record at byte {at}"));
        }
        let seq = u64::from_le_bytes(body[..8].try_into().expect("8 bytes"));
        if let Some((last, _)) = out.last() {
            if seq != last + 1 {
                return Err(format!("record {seq} follows record {last}"));
            }
        }
        payload.clear();
        payload.extend_from_slice(&body[8..]);
        let op = rkyv::from_bytes::<Op, rancor::Error>(&payload)
            .map_err(|e| format!("record {seq} does not decode: {e}"))?;
        out.push((seq, op));
        at += HEADER_BYTES + n;
    }
    Ok(out)
}

/// How a file's records ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum End {
    /// After the last record, exactly at the end of the file.
    Clean,
    /// The last record is cut short or does not match its checksum: a write torn by a
    /// crash. `at` is where it starts (the file's good length).
    Torn { at: u64, why: String },
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AofError {
    #[error("not a tessera append-only file (bad magic)")]
    BadMagic,
    /// A bad record with more of the file after it. `at` is where it starts.
    #[error("damaged at byte {at}: {why}")]
    Damaged { at: u64, why: String },
    #[error("read error: {0}")]
    Io(String),
}

/// Reads a file's records in order, checking each. `len` is the file's length in bytes.
pub struct AofReader<R: Read> {
    input: R,
    len: u64,
    offset: u64,
    last_seq: Option<u64>,
    buf: AlignedVec,
}

/// One step of [`AofReader::next`].
#[derive(Debug)]
pub enum Next {
    Record(u64, Op),
    End(End),
}

impl<R: Read> AofReader<R> {
    /// Checks the magic. An empty file, or one cut inside the magic, reads as a torn end
    /// at 0 (a crash right after it was created).
    pub fn open(mut input: R, len: u64) -> Result<(AofReader<R>, Option<End>), AofError> {
        let mut magic = [0u8; 8];
        let got = read_up_to(&mut input, &mut magic)?;
        let reader = |input| AofReader {
            input,
            len,
            offset: 8,
            last_seq: None,
            buf: AlignedVec::new(),
        };
        if got < 8 {
            if magic[..got] != MAGIC[..got] {
                return Err(AofError::BadMagic);
            }
            let torn = End::Torn {
                at: 0,
                why: format!("the file ends inside its magic ({got} bytes)"),
            };
            return Ok((reader(input), Some(torn)));
        }
        if &magic != MAGIC {
            return Err(AofError::BadMagic);
        }
        Ok((reader(input), None))
    }

    /// Where the next record starts (after a clean end: the file's length).
    pub fn offset(&self) -> u64 {
        self.offset
    }

    pub fn last_seq(&self) -> Option<u64> {
        self.last_seq
    }

    /// Whether everything left in the file is zero bytes.
    fn rest_is_zeros(&mut self) -> Result<bool, AofError> {
        let mut chunk = [0u8; 4096];
        loop {
            let got = read_up_to(&mut self.input, &mut chunk)?;
            if chunk[..got].iter().any(|&b| b != 0) {
                return Ok(false);
            }
            if got < chunk.len() {
                return Ok(true);
            }
        }
    }

    /// The next record, or how the file ends.
    pub fn next_record(&mut self) -> Result<Next, AofError> {
        let at = self.offset;
        if at == self.len {
            return Ok(Next::End(End::Clean));
        }
        let bad = |why: String, end: u64, len: u64| {
            if end >= len {
                Ok(Next::End(End::Torn { at, why }))
            } else {
                Err(AofError::Damaged { at, why })
            }
        };
        let mut head = [0u8; HEADER_BYTES];
        let got = read_up_to(&mut self.input, &mut head)?;
        if got < HEADER_BYTES {
            let why = format!("cut inside a record's header ({got} of {HEADER_BYTES} bytes)");
            return bad(why, self.len, self.len);
        }
        let word = |i: usize| u32::from_le_bytes(head[i..i + 4].try_into().expect("4 bytes"));
        let n = word(0) as usize;
        if crc32fast::hash(&head[..4]) != word(4) {
            // A crash may leave zeros where a write did not land; anything else is damage.
            if self.rest_is_zeros()? {
                return Ok(Next::End(End::Torn {
                    at,
                    why: "zeros where a record should start".into(),
                }));
            }
            return Err(AofError::Damaged {
                at,
                why: "a record's length does not match its checksum".into(),
            });
        }
        let crc = word(8);
        let end = at + (HEADER_BYTES + n) as u64;
        if !(8..=RECORD_MAX_BYTES).contains(&n) {
            return Err(AofError::Damaged {
                at,
                why: format!("a record of {n} bytes"),
            });
        }
        self.buf.clear();
        self.buf.resize(n, 0);
        let got = read_up_to(&mut self.input, &mut self.buf)?;
        if got < n {
            return bad(
                format!("cut inside a record ({got} of {n} bytes)"),
                end,
                self.len,
            );
        }
        if crc32fast::hash(&self.buf) != crc {
            return bad("checksum mismatch".into(), end, self.len);
        }
        let seq = u64::from_le_bytes(self.buf[..8].try_into().expect("8 bytes"));
        let op = match rkyv::from_bytes::<Op, rancor::Error>(&self.buf[8..]) {
            Ok(op) => op,
            Err(e) => return bad(format!("record {seq} does not decode: {e}"), end, self.len),
        };
        if let Some(last) = self.last_seq {
            if seq != last + 1 {
                return Err(AofError::Damaged {
                    at,
                    why: format!("record {seq} follows record {last}"),
                });
            }
        }
        self.last_seq = Some(seq);
        self.offset = end;
        Ok(Next::Record(seq, op))
    }
}

/// Reads until `buf` is full or the input ends; returns the bytes read.
fn read_up_to(input: &mut impl Read, buf: &mut [u8]) -> Result<usize, AofError> {
    let mut got = 0;
    while got < buf.len() {
        match input.read(&mut buf[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(AofError::Io(e.to_string())),
        }
    }
    Ok(got)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wal::{DelReason, LoggedValue};

    fn ops() -> Vec<Op> {
        (0..20)
            .map(|i| match i % 3 {
                0 => Op::Set {
                    db: 1,
                    key: format!("k{i}").into_bytes(),
                    value: LoggedValue::Str {
                        bytes: vec![b'x'; i],
                        raw: false,
                    },
                    expire_at_ms: i as u64,
                },
                1 => Op::Del {
                    db: 0,
                    key: b"k".to_vec(),
                    why: DelReason::Expired,
                },
                _ => Op::FlushDb { db: 2 },
            })
            .collect()
    }

    #[test]
    fn a_batch_decodes_and_every_flipped_bit_or_cut_is_refused() {
        let mut bytes = Vec::new();
        for (i, op) in ops().iter().enumerate().take(4) {
            encode_op(10 + i as u64, op, &mut bytes);
        }
        let got = decode_records(&bytes).unwrap();
        assert_eq!(got.len(), 4);
        assert_eq!(got[3], (13, ops()[3].clone()));
        for cut in 1..bytes.len() {
            if decode_records(&bytes[..cut]).is_ok() {
                // A cut exactly between records is a shorter, whole batch.
                assert!(decode_records(&bytes[..cut]).unwrap().len() < 4);
            }
        }
        for at in 0..bytes.len() {
            let mut bad = bytes.clone();
            bad[at] ^= 0x04;
            assert!(
                decode_records(&bad).is_err(),
                "a flipped bit at {at} was accepted"
            );
        }
        let mut gap = Vec::new();
        encode_op(1, &ops()[0], &mut gap);
        encode_op(3, &ops()[1], &mut gap);
        assert!(decode_records(&gap).unwrap_err().contains("follows"));
    }

    fn file() -> (Vec<u8>, Vec<u64>) {
        let mut out = MAGIC.to_vec();
        let mut starts = Vec::new();
        for (i, op) in ops().iter().enumerate() {
            starts.push(out.len() as u64);
            encode_op(100 + i as u64, op, &mut out);
        }
        (out, starts)
    }

    fn read_all(bytes: &[u8]) -> Result<(Vec<(u64, Op)>, End), AofError> {
        let (mut r, early) = AofReader::open(bytes, bytes.len() as u64)?;
        if let Some(end) = early {
            return Ok((Vec::new(), end));
        }
        let mut all = Vec::new();
        loop {
            match r.next_record()? {
                Next::Record(seq, op) => all.push((seq, op)),
                Next::End(end) => return Ok((all, end)),
            }
        }
    }

    #[test]
    fn records_read_back_in_order() {
        let (bytes, _) = file();
        let (all, end) = read_all(&bytes).unwrap();
        assert_eq!(end, End::Clean);
        assert_eq!(all.len(), 20);
        assert!(all.iter().map(|(s, _)| *s).eq(100..120));
        assert_eq!(
            all.iter().map(|(_, o)| o.clone()).collect::<Vec<_>>(),
            ops()
        );
    }

    /// Every cut is a torn end at the start of the record it cut, after every whole record
    /// before it; a cut at a record boundary is a clean end.
    #[test]
    fn a_cut_anywhere_is_a_torn_end_after_the_whole_records() {
        let (bytes, starts) = file();
        for cut in 0..bytes.len() as u64 {
            let (all, end) = read_all(&bytes[..cut as usize]).unwrap();
            let whole = starts.iter().filter(|&&s| s < cut).count();
            if cut < 8 {
                assert!(matches!(end, End::Torn { at: 0, .. }), "cut at {cut}");
            } else if starts.contains(&cut) || cut == 8 {
                assert_eq!(end, End::Clean, "cut at {cut}");
                assert_eq!(all.len(), whole, "cut at {cut}");
            } else {
                assert_eq!(all.len(), whole - 1, "cut at {cut}");
                assert!(
                    matches!(end, End::Torn { at, .. } if at == starts[whole - 1]),
                    "cut at {cut}: {end:?}"
                );
            }
        }
        // Zeros after the last record (space a crash left allocated) are a torn end too.
        let mut zeros = bytes.clone();
        zeros.extend_from_slice(&[0; 100]);
        let (all, end) = read_all(&zeros).unwrap();
        assert_eq!(all.len(), 20);
        assert!(matches!(end, End::Torn { at, .. } if at == bytes.len() as u64));
    }

    /// A flipped bit in the last record's payload is a torn end; anywhere else it is damage
    /// at or before the flip, never a record read wrong.
    #[test]
    fn a_flipped_bit_is_a_torn_end_only_in_the_last_payload() {
        let (bytes, starts) = file();
        let last = *starts.last().unwrap();
        for at in 8..bytes.len() as u64 {
            let mut bad = bytes.clone();
            bad[at as usize] ^= 0x04;
            match read_all(&bad) {
                Ok((all, End::Torn { at: torn, .. })) => {
                    assert!(at >= last + HEADER_BYTES as u64 - 4, "flip at {at}");
                    assert_eq!(torn, last, "flip at {at}");
                    assert_eq!(all.len(), 19);
                }
                Ok((_, End::Clean)) => panic!("a flip at {at} was read as clean"),
                Err(AofError::Damaged { at: bad_at, .. }) => {
                    assert!(bad_at <= at, "flip at {at} reported at {bad_at}")
                }
                Err(e) => panic!("{e}"),
            }
        }
        let mut foreign = bytes.clone();
        foreign[0] = b'R';
        assert_eq!(read_all(&foreign).unwrap_err(), AofError::BadMagic);
    }
}
