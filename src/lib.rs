//! tessera: a Redis-protocol key-value server, thread-per-core on io_uring.
//!
//! - [`resp`]: the protocol codec — request decoding and reply encoding; pure.
//! - [`cmd`]: the command table and the command families; parse arguments, call the shard,
//!   write replies.
//! - [`slot`]: key → slot (CRC16, hash tags) → owning core.
//! - [`server`]: the runtime — executors per core, the channel mesh, connections,
//!   pipelined batching across cores, transactions, node-wide commands.
//! - [`cluster`]: the cluster control plane as state machines (membership, failure
//!   detection), tested in seeded simulations.
//! - [`repl`]: the replication stream between a primary and a replica, as bytes; pure.
//! - [`config`]: defaults, the redis.conf-style file, flags, CONFIG GET/SET parameters.
//! - [`limits`]: every limit with its unit.
//! - [`alloc`]: the counting allocator behind `used_memory`.
//!
//! The storage engine lives in the `tessera-shards` crate.

pub mod alloc;
pub mod cluster;
pub mod cmd;
pub mod config;
pub mod limits;
pub mod logging;
pub mod repl;
pub mod resp;
pub mod server;
pub mod slot;
