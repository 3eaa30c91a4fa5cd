//! tessera's per-core storage engine. No networking and no runtime: the node drives a
//! [`Shard`] from the core that owns it, passing the time in explicitly.
//!
//! - [`keyspace`]: an extendible hash table of small segments, with a SCAN cursor that
//!   survives growth.
//! - [`value`]: stored values (strings, integers) and entries with their expiry.
//! - [`aof`]: the append-only file's records and their checked reading.
//! - [`capture`]: a point-in-time image of a shard taken while it serves (no fork).
//! - [`db`]: one numbered database: lazy and sampled expiry, eviction metadata, memory
//!   accounting, WATCH bookkeeping, statistics.
//! - [`evict`]: eviction policies, LRU/LFU/FIFO stamps, the LFU counter.
//! - [`item`]: a stored key: one block with metadata, key and value (the byte budget).
//! - [`memory`]: what a key costs in bytes.
//! - [`shard`]: the databases of one core, its memory limit and eviction.
//! - [`snapshot`]: the snapshot file: checked frames, loadable into any number of cores.
//! - [`ops`]: typed operations per command family (`ops::string`, `ops::keys`).
//! - [`wal`]: the write-ahead ring of every change, with checked records and reader
//!   cursors.
//! - [`glob`]: Redis's glob patterns for KEYS and SCAN MATCH.

pub mod aof;
pub mod capture;
pub mod db;
pub mod evict;
pub mod glob;
pub mod item;
pub mod keyspace;
pub mod memory;
pub mod ops;
pub mod shard;
pub mod snapshot;
pub mod value;
pub mod wal;

pub use db::{ClientId, Db};
pub use shard::Shard;
pub use value::{Entry, Value};
