//! The replication stream between a primary and a replica, as bytes: no I/O here.
//!
//! A replica opens a connection to its primary's client port and sends
//! `REPLSYNC <replid|?> <offsets|-> <listening-port> [<announce-ip>]`, where `offsets` are the
//! primary's ring positions it has applied, one per primary shard, comma-separated. The
//! primary answers one line, then the connection carries frames both ways:
//!
//! ```text
//! +CONTINUE <replid> <shards>   the replica's offsets are still in every ring: records follow
//! +CONTINUE <replid> <shards> <offsets>
//!                               the replica had all of the stream this primary followed before
//!                               its promotion: it goes on from these positions in this one's
//! +FULLSYNC <replid> <shards>   Header, then per shard Snapshot... SnapshotEnd, then records
//!
//! frame    kind (u8), shard (u32 LE), length (u32 LE), crc32 of the payload (u32 LE), payload
//! ```
//!
//! Snapshot payloads are snapshot-file frames (`tessera_shards::snapshot`), record payloads
//! are ring records in the append-only file's framing (`tessera_shards::aof`): both check
//! themselves record by record; the outer crc covers the whole payload.

use thiserror::Error;

/// Bytes before a frame's payload.
pub const FRAME_HEADER_BYTES: usize = 13;

/// The largest payload a side accepts: one record may hold a 512 MB value.
pub const FRAME_MAX_BYTES: usize = (1 << 30) + 4096;

/// The most shards a peer may list (as a snapshot header).
pub const MAX_SHARDS: usize = 4096;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// A full sync begins: the replica empties itself and takes this replication id.
    Header {
        replid: String,
        shards: u32,
        databases: u32,
    },
    /// Snapshot-file frames of one shard's image.
    Snapshot { shard: u32, bytes: Vec<u8> },
    /// A shard's image is complete; it stands at ring position `seq`.
    SnapshotEnd { shard: u32, seq: u64 },
    /// Ring records of one shard, in order.
    Records { shard: u32, bytes: Vec<u8> },
    /// Primary → replica, when idle: the newest ring position of every shard.
    Ping { heads: Vec<u64> },
    /// Replica → primary: the ring position it has applied, per primary shard.
    Ack { offsets: Vec<u64> },
}

const HEADER: u8 = 1;
const SNAPSHOT: u8 = 2;
const SNAPSHOT_END: u8 = 3;
const RECORDS: u8 = 4;
const PING: u8 = 5;
const ACK: u8 = 6;

/// Appends a frame whose payload is `payload`.
fn encode_raw(kind: u8, shard: u32, payload: &[u8], out: &mut Vec<u8>) {
    out.reserve(FRAME_HEADER_BYTES + payload.len());
    out.push(kind);
    out.extend_from_slice(&shard.to_le_bytes());
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&crc32fast::hash(payload).to_le_bytes());
    out.extend_from_slice(payload);
}

/// Appends a snapshot chunk of `shard` without copying it into a [`Frame`] first.
pub fn encode_raw_snapshot(shard: u32, bytes: &[u8], out: &mut Vec<u8>) {
    encode_raw(SNAPSHOT, shard, bytes, out)
}

fn u64s(values: &[u64]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

pub fn encode(frame: &Frame, out: &mut Vec<u8>) {
    match frame {
        Frame::Header {
            replid,
            shards,
            databases,
        } => {
            let mut p = Vec::with_capacity(replid.len() + 8);
            p.extend_from_slice(&shards.to_le_bytes());
            p.extend_from_slice(&databases.to_le_bytes());
            p.extend_from_slice(replid.as_bytes());
            encode_raw(HEADER, 0, &p, out);
        }
        Frame::Snapshot { shard, bytes } => encode_raw(SNAPSHOT, *shard, bytes, out),
        Frame::SnapshotEnd { shard, seq } => {
            encode_raw(SNAPSHOT_END, *shard, &seq.to_le_bytes(), out)
        }
        Frame::Records { shard, bytes } => encode_raw(RECORDS, *shard, bytes, out),
        Frame::Ping { heads } => encode_raw(PING, 0, &u64s(heads), out),
        Frame::Ack { offsets } => encode_raw(ACK, 0, &u64s(offsets), out),
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum WireError {
    #[error("a replication frame of {0} bytes (at most {FRAME_MAX_BYTES})")]
    TooLarge(usize),
    #[error("a replication frame failed its checksum")]
    Checksum,
    #[error("an unknown replication frame kind {0}")]
    Kind(u8),
    #[error("a malformed replication frame: {0}")]
    Malformed(&'static str),
}

fn parse_u64s(p: &[u8]) -> Result<Vec<u64>, WireError> {
    if p.len() % 8 != 0 || p.len() / 8 > MAX_SHARDS {
        return Err(WireError::Malformed("a list of positions"));
    }
    Ok(p.chunks_exact(8)
        .map(|c| u64::from_le_bytes(c.try_into().expect("8 bytes")))
        .collect())
}

/// Takes one whole frame off the front of `buf`: `Ok(None)` until it has all arrived.
pub fn decode(buf: &[u8]) -> Result<Option<(Frame, usize)>, WireError> {
    if buf.len() < FRAME_HEADER_BYTES {
        return Ok(None);
    }
    let word = |i: usize| u32::from_le_bytes(buf[i..i + 4].try_into().expect("4 bytes"));
    let (kind, shard, len, crc) = (buf[0], word(1), word(5) as usize, word(9));
    if len > FRAME_MAX_BYTES {
        return Err(WireError::TooLarge(len));
    }
    let Some(p) = buf.get(FRAME_HEADER_BYTES..FRAME_HEADER_BYTES + len) else {
        return Ok(None);
    };
    if crc32fast::hash(p) != crc {
        return Err(WireError::Checksum);
    }
    let frame = match kind {
        HEADER => {
            if p.len() < 8 || p.len() > 8 + 64 {
                return Err(WireError::Malformed("a header"));
            }
            let shards = u32::from_le_bytes(p[..4].try_into().expect("4 bytes"));
            let databases = u32::from_le_bytes(p[4..8].try_into().expect("4 bytes"));
            if shards == 0 || shards as usize > MAX_SHARDS {
                return Err(WireError::Malformed("a header's shard count"));
            }
            let replid = std::str::from_utf8(&p[8..])
                .map_err(|_| WireError::Malformed("a replication id"))?
                .to_string();
            Frame::Header {
                replid,
                shards,
                databases,
            }
        }
        SNAPSHOT => Frame::Snapshot {
            shard,
            bytes: p.to_vec(),
        },
        SNAPSHOT_END => Frame::SnapshotEnd {
            shard,
            seq: u64::from_le_bytes(
                p.try_into()
                    .map_err(|_| WireError::Malformed("a snapshot end"))?,
            ),
        },
        RECORDS => Frame::Records {
            shard,
            bytes: p.to_vec(),
        },
        PING => Frame::Ping {
            heads: parse_u64s(p)?,
        },
        ACK => Frame::Ack {
            offsets: parse_u64s(p)?,
        },
        other => return Err(WireError::Kind(other)),
    };
    Ok(Some((frame, FRAME_HEADER_BYTES + len)))
}

/// What a replica asks for in `REPLSYNC`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncRequest {
    /// The primary's replication id it followed, if any.
    pub replid: Option<String>,
    /// The ring positions it has applied, per primary shard (empty with no replid).
    pub offsets: Vec<u64>,
    /// The port it serves clients on (for INFO and ROLE).
    pub listening_port: u16,
    /// The address it announces, when not the connection's source address.
    pub announce_ip: Option<String>,
}

impl SyncRequest {
    /// The arguments after the command name.
    pub fn to_args(&self) -> Vec<String> {
        let mut args = vec![
            self.replid.clone().unwrap_or_else(|| "?".into()),
            if self.offsets.is_empty() {
                "-".into()
            } else {
                self.offsets
                    .iter()
                    .map(u64::to_string)
                    .collect::<Vec<_>>()
                    .join(",")
            },
            self.listening_port.to_string(),
        ];
        args.extend(self.announce_ip.clone());
        args
    }

    /// Parses the arguments after the command name.
    pub fn parse(args: &[&[u8]]) -> Result<SyncRequest, String> {
        let text = |a: &[u8]| {
            std::str::from_utf8(a)
                .map(str::to_string)
                .map_err(|_| "ERR REPLSYNC arguments must be text".to_string())
        };
        if !(3..=4).contains(&args.len()) {
            return Err("ERR wrong number of arguments for 'replsync' command".into());
        }
        let replid = match text(args[0])?.as_str() {
            "?" => None,
            id if id.len() == 40 && id.bytes().all(|b| b.is_ascii_hexdigit()) => {
                Some(id.to_string())
            }
            _ => return Err("ERR invalid replication id".into()),
        };
        let offsets = match text(args[1])?.as_str() {
            "-" => Vec::new(),
            list => {
                let parsed: Result<Vec<u64>, _> = list.split(',').map(str::parse).collect();
                match parsed {
                    Ok(v) if v.len() <= MAX_SHARDS => v,
                    _ => return Err("ERR invalid replication offsets".into()),
                }
            }
        };
        let listening_port = text(args[2])?
            .parse()
            .map_err(|_| "ERR invalid listening port".to_string())?;
        let announce_ip = args.get(3).map(|a| text(a)).transpose()?;
        Ok(SyncRequest {
            replid,
            offsets,
            listening_port,
            announce_ip,
        })
    }
}

/// The primary's answer line, parsed by the replica.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SyncReply {
    /// Records follow from the replica's offsets — or, with `from`, from those positions in
    /// this primary's rings (the replica continues a stream under a new replication id).
    Continue {
        replid: String,
        shards: usize,
        from: Option<Vec<u64>>,
    },
    FullSync {
        replid: String,
        shards: usize,
    },
}

impl SyncReply {
    pub fn line(&self) -> String {
        match self {
            SyncReply::Continue {
                replid,
                shards,
                from: None,
            } => format!("+CONTINUE {replid} {shards}\r\n"),
            SyncReply::Continue {
                replid,
                shards,
                from: Some(from),
            } => {
                let from: Vec<String> = from.iter().map(u64::to_string).collect();
                format!("+CONTINUE {replid} {shards} {}\r\n", from.join(","))
            }
            SyncReply::FullSync { replid, shards } => format!("+FULLSYNC {replid} {shards}\r\n"),
        }
    }

    /// Parses a status line without its `+` and CRLF.
    pub fn parse(line: &str) -> Option<SyncReply> {
        let mut words = line.split(' ');
        let kind = words.next()?;
        let replid = words.next()?.to_string();
        let shards: usize = words.next()?.parse().ok()?;
        let from = match words.next() {
            None => None,
            Some(list) => {
                let from: Vec<u64> = list
                    .split(',')
                    .map(|o| o.parse().ok())
                    .collect::<Option<_>>()?;
                if from.len() != shards {
                    return None;
                }
                Some(from)
            }
        };
        if words.next().is_some() || shards == 0 || shards > MAX_SHARDS {
            return None;
        }
        match kind {
            "CONTINUE" => Some(SyncReply::Continue {
                replid,
                shards,
                from,
            }),
            "FULLSYNC" if from.is_none() => Some(SyncReply::FullSync { replid, shards }),
            _ => None,
        }
    }
}

/// A new replication id: 40 hex digits from `seed`.
pub fn new_replid(seed: u64) -> String {
    (0..5)
        .map(|i| {
            format!(
                "{:08x}",
                crate::server::core::splitmix(seed.wrapping_add(i * 0x9e37)) as u32
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frames() -> Vec<Frame> {
        vec![
            Frame::Header {
                replid: "ab".repeat(20),
                shards: 3,
                databases: 16,
            },
            Frame::Snapshot {
                shard: 2,
                bytes: vec![1, 2, 3],
            },
            Frame::SnapshotEnd { shard: 2, seq: 77 },
            Frame::Records {
                shard: 1,
                bytes: vec![9; 100],
            },
            Frame::Ping {
                heads: vec![1, 2, 3],
            },
            Frame::Ack {
                offsets: vec![u64::MAX, 0],
            },
        ]
    }

    #[test]
    fn frames_round_trip_whole_and_byte_by_byte() {
        let mut bytes = Vec::new();
        for f in frames() {
            encode(&f, &mut bytes);
        }
        let mut got = Vec::new();
        let mut at = 0;
        while let Some((f, n)) = decode(&bytes[at..]).unwrap() {
            got.push(f);
            at += n;
        }
        assert_eq!(got, frames());
        assert_eq!(at, bytes.len());
        // Every prefix short of a whole frame waits for more.
        let first = {
            let mut b = Vec::new();
            encode(&frames()[3], &mut b);
            b
        };
        for cut in 0..first.len() {
            assert_eq!(decode(&first[..cut]).unwrap(), None);
        }
    }

    #[test]
    fn damage_and_nonsense_are_errors() {
        let mut bytes = Vec::new();
        encode(&frames()[3], &mut bytes);
        for at in FRAME_HEADER_BYTES..bytes.len() {
            let mut bad = bytes.clone();
            bad[at] ^= 1;
            assert_eq!(decode(&bad), Err(WireError::Checksum));
        }
        let mut bad = bytes.clone();
        bad[0] = 99;
        assert_eq!(decode(&bad), Err(WireError::Kind(99)));
        let mut huge = bytes.clone();
        huge[5..9].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(decode(&huge), Err(WireError::TooLarge(_))));
        let mut odd = Vec::new();
        encode_raw(ACK, 0, &[1, 2, 3], &mut odd);
        assert!(matches!(decode(&odd), Err(WireError::Malformed(_))));
        let mut zero = Vec::new();
        encode_raw(HEADER, 0, &[0; 8], &mut zero);
        assert!(matches!(decode(&zero), Err(WireError::Malformed(_))));
    }

    #[test]
    fn requests_and_replies_round_trip() {
        let r = SyncRequest {
            replid: Some("0123456789".repeat(4)),
            offsets: vec![5, 0, 12],
            listening_port: 6380,
            announce_ip: Some("10.0.0.2".into()),
        };
        let args = r.to_args();
        let refs: Vec<&[u8]> = args.iter().map(|a| a.as_bytes()).collect();
        assert_eq!(SyncRequest::parse(&refs).unwrap(), r);
        let fresh = SyncRequest {
            replid: None,
            offsets: vec![],
            listening_port: 1,
            announce_ip: None,
        };
        let args = fresh.to_args();
        let refs: Vec<&[u8]> = args.iter().map(|a| a.as_bytes()).collect();
        assert_eq!(SyncRequest::parse(&refs).unwrap(), fresh);
        for bad in [
            &[&b"xyz"[..], b"-", b"1"][..],
            &[b"?", b"1,x", b"1"],
            &[b"?", b"-", b"70000"],
            &[b"?", b"-"],
        ] {
            assert!(SyncRequest::parse(bad).is_err());
        }
        for reply in [
            SyncReply::Continue {
                replid: "r".into(),
                shards: 2,
                from: None,
            },
            SyncReply::Continue {
                replid: "s".into(),
                shards: 2,
                from: Some(vec![7, 0]),
            },
            SyncReply::FullSync {
                replid: "q".into(),
                shards: 1,
            },
        ] {
            let line = reply.line();
            let inner = &line[1..line.len() - 2];
            assert_eq!(SyncReply::parse(inner), Some(reply));
        }
        assert_eq!(SyncReply::parse("FULLSYNC r 0"), None);
        assert_eq!(
            SyncReply::parse("CONTINUE r 2 1"),
            None,
            "one offset per shard"
        );
        assert_eq!(SyncReply::parse("CONTINUE r 1 x"), None);
        assert_eq!(SyncReply::parse("FULLSYNC r 1 3"), None);
        assert_eq!(SyncReply::parse("OK"), None);
        assert_eq!(new_replid(7).len(), 40);
        assert_ne!(new_replid(7), new_replid(8));
    }
}
