//! tessera's per-core storage engine. No networking and no runtime: the node drives a
//! [`Shard`] from the core that owns it, passing the time in explicitly.
//!
//! - [`keyspace`]: an extendible hash table of small segments, with a SCAN cursor that
//!   survives growth.
//! - [`value`]: stored values (strings, integers) and entries with their expiry.
//! - [`db`]: one numbered database: lazy expiry, WATCH bookkeeping, statistics.
//! - [`shard`]: the databases of one core.
//! - [`ops`]: typed operations per command family (`ops::string`, `ops::keys`).
//! - [`glob`]: Redis's glob patterns for KEYS and SCAN MATCH.

pub mod db;
pub mod glob;
pub mod keyspace;
pub mod ops;
pub mod shard;
pub mod value;

pub use db::{ClientId, Db};
pub use shard::Shard;
pub use value::{Entry, Value};
