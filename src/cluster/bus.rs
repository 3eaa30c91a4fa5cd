//! The cluster bus's wire format: one frame per message, checked before it is believed.
//!
//! ```text
//! magic      4 bytes  "TBUS"
//! version    1 byte   BUS_VERSION
//! reserved   3 bytes  zero
//! length     u32 LE   payload bytes, at most BUS_FRAME_MAX_BYTES
//! crc        u32 LE   crc32 of the payload
//! head crc   u32 LE   crc32 of the 16 bytes before it
//! payload    rkyv     a `Frame`
//! ```
//!
//! The header has its own checksum, so a damaged length is caught at once instead of
//! making the reader wait for bytes that will never come. A peer that sends a bad frame
//! gets its connection closed; nothing in it is applied.

use super::membership::{Addr, Message, NodeId};
use rkyv::rancor;
use rkyv::util::AlignedVec;

pub const MAGIC: &[u8; 4] = b"TBUS";
/// 2: a node's address carries its TLS port.
pub const BUS_VERSION: u8 = 2;
const HEADER_BYTES: usize = 20;

/// The largest payload a node sends or accepts: a full member list of thousands of nodes
/// fits with room to spare.
pub const BUS_FRAME_MAX_BYTES: usize = 1 << 20;

/// One message on the bus: who sends it and what.
#[derive(Clone, Debug, PartialEq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct Frame {
    pub from: NodeId,
    pub body: Body,
}

#[derive(Clone, Debug, PartialEq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub enum Body {
    Member(Message),
    /// "Take me in": a node joining through a seed or CLUSTER MEET, sent to an address
    /// whose node id the sender does not know yet. The receiver answers with its members.
    Join {
        addr: Addr,
    },
    /// "Send me your slot table."
    MapRequest,
    /// A slot table: its epoch, its nodes, and runs of slots as (first, last, node index).
    Map {
        epoch: u64,
        nodes: Vec<NodeId>,
        runs: Vec<(u16, u16, u32)>,
        /// (replica, primary) pairs.
        replicas: Vec<(NodeId, NodeId)>,
    },
    /// "Make `replica` follow `primary`" (CLUSTER REPLICATE), to the coordinator.
    Replicate {
        replica: NodeId,
        primary: NodeId,
    },
    /// A failover candidate asks for a vote.
    Ballot(super::election::Ballot),
    /// The answer to a ballot.
    Vote(super::election::Vote),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BusError {
    #[error("not a tessera cluster bus frame (bad magic)")]
    BadMagic,
    #[error("cluster bus version {0} is not spoken here (this node speaks {BUS_VERSION})")]
    Version(u8),
    #[error("a frame header that does not match its checksum")]
    Header,
    #[error("a frame of {0} bytes (the most is {BUS_FRAME_MAX_BYTES})")]
    TooLarge(usize),
    #[error("a frame whose payload does not match its checksum")]
    Checksum,
    #[error("a frame that does not decode: {0}")]
    Malformed(String),
}

/// Appends `frame` to `out`. Panics if it is larger than BUS_FRAME_MAX_BYTES (the sender's
/// bug: the limits on member lists keep frames far below it).
pub fn encode(frame: &Frame, out: &mut Vec<u8>) {
    let payload = rkyv::to_bytes::<rancor::Error>(frame).expect("encoding into memory");
    assert!(
        payload.len() <= BUS_FRAME_MAX_BYTES,
        "a bus frame of {} bytes",
        payload.len()
    );
    let start = out.len();
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&[BUS_VERSION, 0, 0, 0]);
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
    let head = crc32fast::hash(&out[start..start + 16]);
    out.extend_from_slice(&head.to_le_bytes());
    out.extend_from_slice(&payload);
}

/// Reads one frame from the front of `buf`: `Ok(None)` until the whole frame is there,
/// then the frame and the bytes it took. Any error means the connection is unusable.
pub fn decode(buf: &[u8]) -> Result<Option<(Frame, usize)>, BusError> {
    let have = buf.len().min(4);
    if buf[..have] != MAGIC[..have] {
        return Err(BusError::BadMagic);
    }
    if buf.len() > 4 && buf[4] != BUS_VERSION {
        return Err(BusError::Version(buf[4]));
    }
    if buf.len() < HEADER_BYTES {
        return Ok(None);
    }
    let word = |i: usize| u32::from_le_bytes(buf[i..i + 4].try_into().expect("4 bytes"));
    if crc32fast::hash(&buf[..16]) != word(16) {
        return Err(BusError::Header);
    }
    let len = word(8) as usize;
    if len > BUS_FRAME_MAX_BYTES {
        return Err(BusError::TooLarge(len));
    }
    if buf.len() < HEADER_BYTES + len {
        return Ok(None);
    }
    let payload = &buf[HEADER_BYTES..HEADER_BYTES + len];
    if crc32fast::hash(payload) != word(12) {
        return Err(BusError::Checksum);
    }
    let mut aligned = AlignedVec::<16>::with_capacity(len);
    aligned.extend_from_slice(payload);
    let frame = rkyv::from_bytes::<Frame, rancor::Error>(&aligned)
        .map_err(|e| BusError::Malformed(e.to_string()))?;
    Ok(Some((frame, HEADER_BYTES + len)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::membership::{Addr, Health, Update};
    use tessera_shards::evict::Rng;

    fn frames() -> Vec<Frame> {
        let mut rng = Rng::new(9);
        let a = NodeId::random(&mut rng);
        let b = NodeId::random(&mut rng);
        let updates = vec![
            Update {
                id: a,
                incarnation: 3,
                health: Health::Pdead,
                addr: Addr::new([127, 0, 0, 2].into(), 7001, 17001),
            },
            Update {
                id: b,
                incarnation: 0,
                health: Health::Dead,
                addr: Addr::UNKNOWN,
            },
        ];
        vec![
            Frame {
                from: a,
                body: Body::Member(Message::Ping {
                    seq: 7,
                    map_epoch: 2,
                    updates: updates.clone(),
                }),
            },
            Frame {
                from: b,
                body: Body::Member(Message::Ack {
                    seq: 7,
                    about: a,
                    map_epoch: 2,
                    updates: Vec::new(),
                }),
            },
            Frame {
                from: a,
                body: Body::Member(Message::PingReq {
                    seq: 8,
                    target: b,
                    updates: updates.clone(),
                }),
            },
            Frame {
                from: a,
                body: Body::Member(Message::Sync {
                    reply: true,
                    members: updates,
                }),
            },
            Frame {
                from: b,
                body: Body::MapRequest,
            },
            Frame {
                from: b,
                body: Body::Map {
                    epoch: 4,
                    nodes: vec![a, b],
                    runs: vec![(0, 8191, 0), (8192, 16383, 1)],
                    replicas: vec![(a, b)],
                },
            },
        ]
    }

    #[test]
    fn frames_round_trip_back_to_back() {
        let all = frames();
        let mut wire = Vec::new();
        for f in &all {
            encode(f, &mut wire);
        }
        let mut at = 0;
        for f in &all {
            let (got, used) = decode(&wire[at..]).unwrap().unwrap();
            assert_eq!(&got, f);
            at += used;
        }
        assert_eq!(at, wire.len());
    }

    /// A frame cut anywhere waits for more; a flipped bit anywhere is refused, never a
    /// frame read wrong and never a wait for bytes that will not come.
    #[test]
    fn cuts_wait_and_flipped_bits_are_refused() {
        for f in frames() {
            let mut wire = Vec::new();
            encode(&f, &mut wire);
            for cut in 0..wire.len() {
                assert_eq!(decode(&wire[..cut]), Ok(None), "cut at {cut}");
            }
            for at in 0..wire.len() {
                for bit in [0x01u8, 0x80] {
                    let mut bad = wire.clone();
                    bad[at] ^= bit;
                    assert!(decode(&bad).is_err(), "a flip at byte {at} was accepted");
                }
            }
        }
        let mut huge = Vec::new();
        huge.extend_from_slice(MAGIC);
        huge.extend_from_slice(&[BUS_VERSION, 0, 0, 0]);
        huge.extend_from_slice(&(BUS_FRAME_MAX_BYTES as u32 + 1).to_le_bytes());
        huge.extend_from_slice(&0u32.to_le_bytes());
        let head = crc32fast::hash(&huge);
        huge.extend_from_slice(&head.to_le_bytes());
        assert_eq!(
            decode(&huge),
            Err(BusError::TooLarge(BUS_FRAME_MAX_BYTES + 1))
        );
        assert_eq!(decode(b"GET x\r\n"), Err(BusError::BadMagic));
    }
}
