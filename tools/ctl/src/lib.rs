//! tessera-ctl: the cluster admin tool. It talks to nodes started with
//! `--cluster-enabled yes` over plain TCP with RESP2, one command at a time.
//!
//! - [`resp`]: a small blocking RESP2 client; its decoder [`resp::decode`] is pure.
//! - [`nodes`]: parses `CLUSTER NODES` and `CLUSTER INFO`, merges slot ranges, and checks
//!   that every slot has exactly one owner; pure.
//! - [`converge`]: what a forming cluster still lacks, node by node; pure.
//! - [`report`]: the `status` table and its JSON form; pure.
//! - [`cmd`]: the subcommands `create`, `status`, `meet` and `forget`, over the above.
//!
//! The limits below are the tool's only ones.

pub mod cmd;
pub mod converge;
pub mod nodes;
pub mod report;
pub mod resp;

/// How long one connect, or one command's whole round trip, may take before the node is
/// reported as not answering.
pub const IO_TIMEOUT_MS: u64 = 5_000;
/// Largest reply accepted, in bytes. `CLUSTER NODES` of a 1000-node cluster is about
/// 150 KiB, so this leaves ample room while keeping a confused peer from filling memory.
pub const REPLY_MAX_BYTES: usize = 16 * 1024 * 1024;
/// Deepest nesting of arrays accepted in a reply; the decoder recurses once per level.
pub const REPLY_MAX_DEPTH: usize = 16;
/// How often `create` asks the nodes whether they have converged.
pub const POLL_INTERVAL_MS: u64 = 100;
/// `create --timeout-secs` default: the bound on forming the whole cluster.
pub const CREATE_TIMEOUT_SECS_DEFAULT: u64 = 30;
