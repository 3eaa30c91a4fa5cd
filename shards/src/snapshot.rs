//! The snapshot file: a point-in-time image of every shard's keys, loadable into a node with
//! any number of cores (each key goes to the core its slot maps to there).
//!
//! ```text
//! magic      8 bytes  "TSNAP\0\0\x01"
//! frames     each: length (u32 LE), crc32 of the payload (u32 LE), payload (rkyv)
//!            Header { version, cores, databases, created_unix_ms, sequence per core }
//!            Entry { db, key, value, expire_at_ms }   ... for every live key
//!            CoreEnd { core, keys }                    once per core, after its entries
//!            FileEnd { keys }                          last
//! ```
//!
//! The cores of a background save write their parts at once, in chunks of whole frames,
//! so entries of different cores may be interleaved; each core's end frame follows its
//! last chunk.
//!
//! Every frame is checked when read; a file that ends before `FileEnd`, a frame whose
//! checksum does not match, a core's end missing or twice, or counts that do not add up
//! are errors naming the byte offset, never silently loaded.

use crate::item::{Item, ValueRef};
use crate::wal::LoggedValue;
use rkyv::rancor;
use rkyv::util::AlignedVec;
use std::io::{Read, Write};

pub const MAGIC: &[u8; 8] = b"TSNAP\0\0\x01";
pub const FORMAT_VERSION: u32 = 1;

/// The largest frame a reader accepts (a key and value within proto-max-bulk-len, 512 MB,
/// and the framing).
pub const FRAME_MAX_BYTES: usize = 1 << 30;

/// The most cores a header may list (a sanity bound for a damaged header).
pub const MAX_CORES: u32 = 4096;

#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    Header {
        version: u32,
        cores: u32,
        databases: u32,
        created_unix_ms: u64,
        /// Each core's write-ahead sequence number at the time of the image.
        sequences: Vec<u64>,
    },
    Entry {
        db: u32,
        key: Vec<u8>,
        value: LoggedValue,
        expire_at_ms: u64,
    },
    CoreEnd {
        core: u32,
        keys: u64,
    },
    FileEnd {
        keys: u64,
    },
}

impl Frame {
    pub fn entry(db: usize, item: &Item) -> Frame {
        Frame::Entry {
            db: db as u32,
            key: item.key().to_vec(),
            value: match item.value() {
                ValueRef::Int(n) => LoggedValue::Int(n),
                ValueRef::Str { bytes, raw } => LoggedValue::Str {
                    bytes: bytes.to_vec(),
                    raw,
                },
            },
            expire_at_ms: item.expire_at_ms(),
        }
    }
}

/// Appends one frame to `out`.
pub fn encode_frame(frame: &Frame, out: &mut Vec<u8>) {
    let payload = rkyv::to_bytes::<rancor::Error>(frame).expect("encoding into memory");
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
    out.extend_from_slice(&payload);
}

/// Decodes a run of whole frames (a chunk of a snapshot sent to a replica), checking each.
/// Offsets in errors count from the chunk's start.
pub fn decode_frames(bytes: &[u8]) -> Result<Vec<Frame>, SnapshotError> {
    let mut out = Vec::new();
    let mut at = 0usize;
    let mut payload: AlignedVec = AlignedVec::new();
    while at < bytes.len() {
        let head = bytes
            .get(at..at + 8)
            .ok_or(SnapshotError::Truncated(at as u64))?;
        let len = u32::from_le_bytes(head[..4].try_into().expect("4 bytes")) as usize;
        let crc = u32::from_le_bytes(head[4..].try_into().expect("4 bytes"));
        if len > FRAME_MAX_BYTES {
            return Err(SnapshotError::Malformed(
                at as u64,
                format!("a frame of {len} bytes"),
            ));
        }
        let body = bytes
            .get(at + 8..at + 8 + len)
            .ok_or(SnapshotError::Truncated(at as u64))?;
        if crc32fast::hash(body) != crc {
            return Err(SnapshotError::Checksum(at as u64));
        }
        payload.clear();
        payload.extend_from_slice(body);
        let frame = rkyv::from_bytes::<Frame, rancor::Error>(&payload)
            .map_err(|e| SnapshotError::Malformed(at as u64, e.to_string()))?;
        out.push(frame);
        at += 8 + len;
    }
    Ok(out)
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SnapshotError {
    #[error("not a tessera snapshot (bad magic)")]
    BadMagic,
    #[error("snapshot format version {0} is not supported (this build reads {FORMAT_VERSION})")]
    Version(u32),
    #[error("the file ends early, at byte {0}: it was cut short")]
    Truncated(u64),
    #[error("damaged at byte {0}: checksum mismatch")]
    Checksum(u64),
    #[error("damaged at byte {0}: {1}")]
    Malformed(u64, String),
    #[error("read error: {0}")]
    Io(String),
}

/// Reads and checks a snapshot's frames in order.
pub struct SnapshotReader<R: Read> {
    input: R,
    offset: u64,
    done: bool,
    entries: u64,
    /// Which cores' end frames have been read, and the keys they listed.
    cores_ended: Vec<bool>,
    core_keys: u64,
    buf: AlignedVec,
}

impl<R: Read> SnapshotReader<R> {
    /// Checks the magic and reads the header frame.
    pub fn open(mut input: R) -> Result<(SnapshotReader<R>, Frame), SnapshotError> {
        let mut magic = [0u8; 8];
        read_exact(&mut input, &mut magic, 0)?;
        if &magic != MAGIC {
            return Err(SnapshotError::BadMagic);
        }
        let mut r = SnapshotReader {
            input,
            offset: 8,
            done: false,
            entries: 0,
            cores_ended: Vec::new(),
            core_keys: 0,
            buf: AlignedVec::new(),
        };
        let header = r.frame()?;
        match &header {
            Frame::Header { version, .. } if *version != FORMAT_VERSION => {
                return Err(SnapshotError::Version(*version))
            }
            Frame::Header { cores, .. } => {
                if *cores == 0 || *cores > MAX_CORES {
                    return Err(SnapshotError::Malformed(
                        8,
                        format!("a header for {cores} cores"),
                    ));
                }
                r.cores_ended = vec![false; *cores as usize];
            }
            _ => {
                return Err(SnapshotError::Malformed(
                    8,
                    "the first frame is not the header".into(),
                ))
            }
        }
        Ok((r, header))
    }

    fn frame(&mut self) -> Result<Frame, SnapshotError> {
        let at = self.offset;
        let mut head = [0u8; 8];
        read_exact(&mut self.input, &mut head, at)?;
        let len = u32::from_le_bytes(head[..4].try_into().expect("4 bytes")) as usize;
        let crc = u32::from_le_bytes(head[4..].try_into().expect("4 bytes"));
        if len > FRAME_MAX_BYTES {
            return Err(SnapshotError::Malformed(
                at,
                format!("a frame of {len} bytes"),
            ));
        }
        self.buf.clear();
        self.buf.resize(len, 0);
        read_exact(&mut self.input, &mut self.buf, at + 8)?;
        if crc32fast::hash(&self.buf) != crc {
            return Err(SnapshotError::Checksum(at));
        }
        self.offset = at + 8 + len as u64;
        rkyv::from_bytes::<Frame, rancor::Error>(&self.buf)
            .map_err(|e| SnapshotError::Malformed(at, e.to_string()))
    }

    /// The next entry, or `None` after a well-formed end of file. Core and file ends are
    /// checked against the entries actually read.
    pub fn next_entry(&mut self) -> Result<Option<Frame>, SnapshotError> {
        while !self.done {
            let at = self.offset;
            match self.frame()? {
                e @ Frame::Entry { .. } => {
                    self.entries += 1;
                    return Ok(Some(e));
                }
                Frame::CoreEnd { core, keys } => {
                    match self.cores_ended.get_mut(core as usize) {
                        Some(ended @ false) => *ended = true,
                        _ => {
                            return Err(SnapshotError::Malformed(
                                at,
                                format!("an unexpected end of core {core}"),
                            ))
                        }
                    }
                    self.core_keys += keys;
                }
                Frame::FileEnd { keys } => {
                    if let Some(core) = self.cores_ended.iter().position(|e| !e) {
                        return Err(SnapshotError::Malformed(
                            at,
                            format!("core {core}'s part is missing"),
                        ));
                    }
                    if keys != self.entries || self.core_keys != self.entries {
                        return Err(SnapshotError::Malformed(
                            at,
                            format!(
                                "the file lists {keys} keys and its cores {}, {} were read",
                                self.core_keys, self.entries
                            ),
                        ));
                    }
                    self.done = true;
                }
                Frame::Header { .. } => {
                    return Err(SnapshotError::Malformed(at, "a second header".into()))
                }
            }
        }
        Ok(None)
    }
}

fn read_exact(input: &mut impl Read, buf: &mut [u8], at: u64) -> Result<(), SnapshotError> {
    input.read_exact(buf).map_err(|e| match e.kind() {
        std::io::ErrorKind::UnexpectedEof => SnapshotError::Truncated(at),
        _ => SnapshotError::Io(e.to_string()),
    })
}

/// Writes the magic and header.
pub fn write_start(
    out: &mut impl Write,
    cores: usize,
    databases: usize,
    created_unix_ms: u64,
    sequences: Vec<u64>,
) -> std::io::Result<()> {
    let mut buf = MAGIC.to_vec();
    encode_frame(
        &Frame::Header {
            version: FORMAT_VERSION,
            cores: cores as u32,
            databases: databases as u32,
            created_unix_ms,
            sequences,
        },
        &mut buf,
    );
    out.write_all(&buf)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::value::{Entry, Value};

    fn image() -> Vec<u8> {
        let mut out = Vec::new();
        write_start(&mut out, 2, 16, 123, vec![5, 7]).unwrap();
        let mut keys = 0;
        for core in 0..2u32 {
            for i in 0..3 {
                let item = Item::new(
                    format!("k{core}-{i}").as_bytes(),
                    Entry::with_expiry(Value::Int(i), 1000 * i as u64),
                );
                encode_frame(&Frame::entry(i as usize, &item), &mut out);
                keys += 1;
            }
            encode_frame(&Frame::CoreEnd { core, keys: 3 }, &mut out);
        }
        encode_frame(&Frame::FileEnd { keys }, &mut out);
        out
    }

    fn read_all(bytes: &[u8]) -> Result<Vec<Frame>, SnapshotError> {
        let (mut r, _) = SnapshotReader::open(bytes)?;
        let mut all = Vec::new();
        while let Some(e) = r.next_entry()? {
            all.push(e);
        }
        Ok(all)
    }

    #[test]
    fn a_whole_image_reads_back() {
        let bytes = image();
        let (_, header) = SnapshotReader::open(&bytes[..]).unwrap();
        assert!(
            matches!(header, Frame::Header { cores: 2, databases: 16, ref sequences, .. } if sequences == &vec![5, 7])
        );
        let all = read_all(&bytes).unwrap();
        assert_eq!(all.len(), 6);
        assert!(
            matches!(&all[5], Frame::Entry { db: 2, key, expire_at_ms: 2000, .. } if key == b"k1-2")
        );
    }

    #[test]
    fn a_chunk_of_frames_decodes_and_damage_is_refused() {
        let bytes = image();
        let chunk = &bytes[8..];
        let frames = decode_frames(chunk).unwrap();
        assert_eq!(frames.len(), 1 + 6 + 2 + 1);
        assert!(matches!(frames.last(), Some(Frame::FileEnd { keys: 6 })));
        for at in 0..chunk.len() {
            let mut bad = chunk.to_vec();
            bad[at] ^= 0x10;
            assert!(
                decode_frames(&bad).is_err(),
                "a flipped bit at {at} was accepted"
            );
        }
        assert!(decode_frames(&chunk[..chunk.len() - 1]).is_err());
    }

    #[test]
    fn every_cut_and_every_flipped_bit_is_an_error() {
        let bytes = image();
        for cut in 0..bytes.len() {
            assert!(
                read_all(&bytes[..cut]).is_err(),
                "cut at {cut} was accepted"
            );
        }
        for at in 0..bytes.len() {
            let mut bad = bytes.clone();
            bad[at] ^= 0x10;
            assert!(
                read_all(&bad).is_err(),
                "a flipped bit at {at} was accepted"
            );
        }
        assert_eq!(
            read_all(b"RDB0011").unwrap_err(),
            SnapshotError::Truncated(0)
        );
        assert_eq!(
            read_all(b"REDIS0011xxxxxxxx").unwrap_err(),
            SnapshotError::BadMagic
        );
    }
}
