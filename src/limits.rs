//! Every limit and default of the node, with its unit, in one place. The configurable ones
//! are defaults for `config.rs`; the rest are fixed by design.

/// `proto-max-bulk-len`: longest bulk string a client may send, and longest string value.
pub const PROTO_MAX_BULK_LEN_BYTES: usize = 512 * 1024 * 1024;
/// `proto-max-multibulk-len`: most arguments in one command.
pub const PROTO_MAX_MULTIBULK_LEN: usize = 16 * 1024 * 1024;
/// `client-query-buffer-limit`: most bytes buffered for one client's incomplete command.
pub const CLIENT_QUERY_BUFFER_LIMIT_BYTES: usize = 1024 * 1024 * 1024;
/// `maxclients`: most connections at once, over all cores.
pub const MAXCLIENTS_DEFAULT: usize = 10_000;
/// `databases`: number of SELECT-able databases.
pub const DATABASES_DEFAULT: usize = 16;
pub const MAX_DATABASES: usize = 1 << 20;

/// Most data cores; SCAN cursors carry the core index in their top 8 bits.
pub const MAX_DATA_CORES: usize = 256;

/// Bytes read from a socket at a time (the read buffer grows past this only for one
/// command that is larger).
pub const READ_CHUNK_BYTES: usize = 16 * 1024;
/// A read buffer larger than this is given back once the connection is idle.
pub const READ_BUFFER_KEEP_BYTES: usize = 64 * 1024;
/// Most commands in one batch to another core; a longer pipeline crosses in several.
pub const PIPELINE_BATCH_MAX_COMMANDS: usize = 1024;
/// Output buffered before it is written even in the middle of a pipeline.
pub const OUTPUT_FLUSH_BYTES: usize = 256 * 1024;
/// Most commands queued in one MULTI.
pub const MULTI_MAX_QUEUED: usize = 1 << 20;

/// Locked memory glommio needs per executor beyond its io_memory, in bytes, and the
/// io_memory we give each executor.
pub const IO_MEMORY_BYTES: usize = 1024 * 1024;
pub const MEMLOCK_MIN_BYTES: u64 = 512 * 1024;
/// How long the cores may take to join the channel mesh before start-up fails.
pub const MESH_JOIN_TIMEOUT_MS: u64 = 10_000;
/// How often an idle accept loop checks for shutdown.
pub const SHUTDOWN_POLL_MS: u64 = 50;
/// How long shutdown waits for connections to finish their replies.
pub const SHUTDOWN_DRAIN_MS: u64 = 2_000;

/// `hz`: background work (active expiry) runs this many times a second, at most
/// `HZ_MAX`.
pub const HZ_DEFAULT: usize = 10;
/// The slow log: the threshold in microseconds (Redis's default), entries kept per node by
/// default and at most, and how much of a command an entry keeps: arguments, and bytes of
/// each (the rest is summarised, as Redis does).
pub const SLOWLOG_SLOWER_THAN_US_DEFAULT: i64 = 10_000;
pub const SLOWLOG_MAX_LEN_DEFAULT: usize = 128;
pub const SLOWLOG_MAX_LEN_MAX: usize = 10_000;
pub const SLOWLOG_ENTRY_MAX_ARGS: usize = 32;
pub const SLOWLOG_ENTRY_MAX_ARG_BYTES: usize = 128;
/// ACL LOG: entries kept by default, and the window in which a repeated denial counts on
/// the entry it repeats.
pub const ACL_LOG_MAX_LEN_DEFAULT: usize = 128;
pub const ACL_LOG_GROUP_MS: u64 = 60_000;
/// Lines a MONITOR client may have waiting before it is dropped.
pub const MONITOR_QUEUE_LINES: usize = 100_000;
/// What a MONITOR client may send at once (it can only QUIT); more closes it.
pub const MONITOR_INPUT_BYTES: usize = 4096;
/// A MONITOR client's waiting lines are written in one write of up to this many bytes.
pub const MONITOR_WRITE_BYTES: usize = 64 * 1024;
/// A TLS client must finish its handshake within this many milliseconds.
pub const TLS_HANDSHAKE_MS: u64 = 10_000;
/// Samples the latency monitor keeps per event (one per second at most), as Redis.
pub const LATENCY_HISTORY_LEN: usize = 160;
pub const HZ_MAX: usize = 500;
/// Most keys `maxmemory-samples` may ask for per database per eviction (Redis: 64).
pub const MAXMEMORY_SAMPLES_MAX: usize = 64;
/// Share of each background tick active expiry may spend, in percent (Redis's
/// ACTIVE_EXPIRE_CYCLE_SLOW_TIME_PERC).
pub const ACTIVE_EXPIRE_TIME_PERCENT: u64 = 25;

/// Under maxmemory a core's write-ahead ring takes at most 1/this of the core's share.
pub const WAL_RING_SHARE_DIVISOR: usize = 8;

/// `dbfilename`: the snapshot's file name in `dir` (not `dump.rdb`: the format is
/// tessera's own).
pub const DBFILENAME_DEFAULT: &str = "dump.tsnap";

/// Each core writes its part of a snapshot through a buffer of this many bytes.
pub const SNAPSHOT_WRITE_BUFFER_BYTES: usize = 1024 * 1024;

/// A background save's walk serializes about this many bytes of entries before it lets the
/// core's connections run again (roughly 30 µs of work). Under load the walk then gets about
/// one step per round of the core's busy connections, so the save slows down rather than the
/// clients; on an idle core it runs flat out.
pub const SNAPSHOT_STEP_BYTES: usize = 16 * 1024;

/// A core writes its part of a background save in chunks of at least this many bytes.
pub const SNAPSHOT_CHUNK_BYTES: usize = 1024 * 1024;

/// Shares of a core's background task queue (snapshot and rewrite writers) against the
/// 1000 of the connections' queue: when both have work, background work gets about 1/11 of
/// the core.
pub const BACKGROUND_SHARES: usize = 100;

/// `save-cpu-percent`: the share of a busy core a background save or rewrite may take.
pub const SAVE_CPU_PERCENT_DEFAULT: usize = 30;

/// `appendfsync everysec`: the most milliseconds between fsyncs.
pub const AOF_EVERYSEC_MS: u64 = 1000;

/// The append-only writer wakes at least this often (milliseconds) when nothing kicks it.
pub const AOF_IDLE_WAKE_MS: u64 = 1000;

/// The append-only writer moves at most this many bytes of records per write.
pub const AOF_WRITE_CHUNK_BYTES: usize = 1024 * 1024;

/// A rewrite waiting for a running capture (a BGSAVE) to end tries again after this many
/// milliseconds.
pub const AOF_REWRITE_RETRY_MS: u64 = 10;

/// At shutdown the append-only writer gets this many milliseconds to write and sync what
/// the ring holds.
pub const AOF_SHUTDOWN_FLUSH_MS: u64 = 5000;

/// SCAN's default COUNT.
pub const SCAN_DEFAULT_COUNT: usize = 10;

const _: () = assert!(
    MAX_DATA_CORES <= 256,
    "SCAN cursors keep the core in 8 bits"
);
const _: () = assert!(READ_CHUNK_BYTES <= READ_BUFFER_KEEP_BYTES);

// The cluster bus and the control core (`server::control`).

/// How often the control core ticks the cluster state machine.
pub const BUS_TICK_MS: u64 = 20;
/// Frames queued for one peer; more are dropped (gossip tolerates loss, and a peer that
/// cannot take them is being suspected anyway).
pub const BUS_LINK_QUEUE_FRAMES: usize = 256;
/// Bytes gathered into one write to a peer.
pub const BUS_WRITE_BATCH_BYTES: usize = 256 * 1024;
/// A connect to a peer, and a write to it, that takes longer fails.
pub const BUS_CONNECT_TIMEOUT_MS: u64 = 1_000;
pub const BUS_WRITE_TIMEOUT_MS: u64 = 2_000;
/// After a failed connect, frames for that peer are dropped for this long, doubling per
/// failure up to the maximum.
pub const BUS_RECONNECT_MIN_MS: u64 = 100;
pub const BUS_RECONNECT_MAX_MS: u64 = 2_000;
/// Inbound bus connections at once; an inbound connection silent this long is closed.
pub const BUS_MAX_INBOUND: usize = 1024;
pub const BUS_INBOUND_IDLE_MS: u64 = 30_000;
/// Bytes read from a peer at a time.
pub const BUS_READ_CHUNK_BYTES: usize = 64 * 1024;
/// Admin requests from data cores waiting for the control core.
pub const CONTROL_QUEUE_REQUESTS: usize = 64;
/// While a node knows no member, it asks its seeds again this often.
pub const SEED_RETRY_MS: u64 = 1_000;

// Forwarding to other nodes (`server::forward`).

/// Most requests on one link waiting for their replies (or for the link to connect); one
/// more fails with [`crate::server::forward::ForwardError::TooManyInFlight`] instead of waiting.
pub const FORWARD_LINK_MAX_INFLIGHT: usize = 4096;
/// Most request bytes on one link waiting for its writer, not counting the batch being
/// written. A request that would pass it fails with [`crate::server::forward::ForwardError::OutboxFull`], unless
/// the outbox is empty: one request of any size can always go.
pub const FORWARD_OUTBOX_MAX_BYTES: usize = 64 * 1024 * 1024;
/// Longest reply accepted, in bytes: the longest string value plus room for the reply's
/// headers. A reply being assembled past this kills the link.
pub const FORWARD_REPLY_MAX_BYTES: usize = PROTO_MAX_BULK_LEN_BYTES + 64 * 1024;
/// Longest time for the TCP connect and the AUTH/HELLO handshake together, in ms.
pub const FORWARD_CONNECT_TIMEOUT_MS: u64 = 1000;
/// Longest a request waits for its reply, in ms: when the oldest request on a link has
/// waited longer, the link is declared lost.
pub const FORWARD_REPLY_TIMEOUT_MS: u64 = 5000;
/// Bytes asked of the socket per read, at least; a read buffer that has grown for a large
/// reply is filled as far as it goes.
pub const FORWARD_READ_CHUNK_BYTES: usize = 16 * 1024;

// Replication (`server::replication`, `server::replica`).

/// Most replicas one primary streams to at once; one more is refused.
pub const REPL_MAX_REPLICAS: usize = 16;
/// Ring bytes read for one replica per hop to a shard's core (at least one record).
pub const REPL_BATCH_BYTES: usize = 256 * 1024;
/// A primary with nothing new checks its rings again after this many ms; WAIT checks the
/// acknowledgements as often.
pub const REPL_POLL_INTERVAL_MS: u64 = 1;
/// An idle primary pings its replicas, and a replica acknowledges, this often (ms).
pub const REPL_PING_INTERVAL_MS: u64 = 1000;
/// While a save or rewrite holds a shard's capture, a full sync tries again this often (ms).
pub const REPL_CAPTURE_RETRY_MS: u64 = 50;
/// Bytes of acknowledgements a primary buffers from one replica (an ack is 13 + 8 per shard).
pub const REPL_ACK_BUFFER_BYTES: usize = 64 * 1024;
/// A replica's TCP connect to its primary, at most (ms).
pub const REPL_CONNECT_TIMEOUT_MS: u64 = 2000;
/// A replica waits this long (ms) before reconnecting, doubling up to the maximum.
pub const REPL_RETRY_MIN_MS: u64 = 100;
pub const REPL_RETRY_MAX_MS: u64 = 2000;
/// A replica's reads wake at least this often (ms) to see REPLICAOF and the timeout.
pub const REPL_READ_POLL_MS: u64 = 20;
/// Longest answer line to REPLSYNC, in bytes.
pub const REPL_LINE_MAX_BYTES: usize = 4096;
/// REPLICAOF waits at most this long (ms) for the old replica task to stop applying.
pub const REPL_STOP_WAIT_MS: u64 = 5000;
/// In a cluster, core 0 compares whom it replicates with the table this often (ms).
pub const REPL_VIEW_CHECK_MS: u64 = 10;
/// A manual CLUSTER FAILOVER: how long (ms) the primary holds its writes and the replica
/// has to catch up and win, as Redis's `CLUSTER_MF_TIMEOUT`. Also the longest REPLPAUSE.
pub const REPL_MANUAL_FAILOVER_MS: u64 = 5000;
