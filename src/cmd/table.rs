//! The command table: every command we serve, as data.

use super::{keys, string, Args, ShardCtx};
use crate::resp::Out;

pub type ShardFn = fn(&mut ShardCtx, Args, &mut Out);

/// Commands that run on the connection's core (see `server::node_cmds`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeCmd {
    Ping,
    Echo,
    Hello,
    Auth,
    Select,
    Quit,
    Reset,
    Client,
    Command,
    Config,
    Info,
    Time,
    Lastsave,
    Save,
    Bgsave,
    Bgrewriteaof,
    Shutdown,
    Debug,
    Memory,
    Multi,
    Exec,
    Discard,
    Watch,
    Unwatch,
    Dbsize,
    Flushdb,
    Flushall,
    Keys,
    Scan,
    Randomkey,
    Cluster,
    Readonly,
    Readwrite,
    Asking,
    Replicaof,
    Role,
    Wait,
    Replsync,
    Replpause,
    Slowlog,
    Latency,
    Acl,
    Monitor,
}

/// How a multi-key command runs when its keys live on more than one core.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CrossCore {
    /// Split the keys by core, gather the values in order (MGET).
    Gather,
    /// Split by core, add up the integer replies (DEL, UNLINK, EXISTS, TOUCH).
    Sum,
    /// Split key/value pairs by core, set all under one transaction (MSET).
    SetAll,
    /// Like SetAll, only if no key exists (MSETNX).
    SetAllIfNone,
    /// Move one key's entry to another core (RENAME, RENAMENX).
    Rename { only_if_new: bool },
    /// Copy one key's entry to another core (COPY).
    Copy,
}

#[derive(Debug, Clone, Copy)]
pub enum Exec {
    Shard(ShardFn, Option<CrossCore>),
    Node(NodeCmd),
}

/// One command: metadata as COMMAND INFO reports it, and how it runs.
#[derive(Debug, Clone, Copy)]
pub struct CommandSpec {
    pub name: &'static str,
    /// Redis arity: exact when positive, a minimum when negative; the name counts.
    pub arity: i32,
    pub flags: &'static [&'static str],
    /// Position of the first key (0: no keys), of the last (-1: the last argument) and the
    /// step between keys.
    pub first_key: i32,
    pub last_key: i32,
    pub step: i32,
    pub exec: Exec,
    pub group: &'static str,
    pub since: &'static str,
    pub summary: &'static str,
    /// The arguments as `COMMAND DOCS` reports them, in the syntax of [`super::docs`]
    /// (`""`: none; a container's are under its [`SubcommandDoc`]s).
    pub args: &'static str,
    /// `flags` holds "write", worked out when the table is built (read on every command).
    pub write: bool,
}

/// A subcommand's documentation for `COMMAND DOCS` (`client|list`): its group is its
/// container's.
#[derive(Debug, Clone, Copy)]
pub struct SubcommandDoc {
    /// `container|subcommand`, lowercase.
    pub name: &'static str,
    /// Arity counting the container and the subcommand, as Redis reports it.
    pub arity: i32,
    pub since: &'static str,
    pub summary: &'static str,
    /// As [`CommandSpec::args`].
    pub args: &'static str,
}

/// The subcommand `sub` of container `container` (case-insensitive), if we serve it.
pub fn lookup_subcommand(container: &str, sub: &[u8]) -> Option<&'static SubcommandDoc> {
    SUBCOMMANDS.iter().find(|s| {
        s.name.len() == container.len() + 1 + sub.len()
            && s.name.starts_with(container)
            && s.name.as_bytes()[container.len() + 1..].eq_ignore_ascii_case(sub)
    })
}

impl CommandSpec {
    pub fn arity_ok(&self, argc: usize) -> bool {
        let argc = argc as i32;
        if self.arity >= 0 {
            argc == self.arity
        } else {
            argc >= -self.arity
        }
    }

    pub fn has_flag(&self, flag: &str) -> bool {
        self.flags.contains(&flag)
    }

    pub fn is_write(&self) -> bool {
        self.write
    }

    /// Indexes of the key arguments in a call with `argc` arguments.
    pub fn key_positions(&self, argc: usize) -> impl Iterator<Item = usize> {
        let first = self.first_key.max(0) as usize;
        let last = if self.first_key <= 0 || argc <= first {
            0
        } else if self.last_key < 0 {
            (argc as i32 + self.last_key) as usize
        } else {
            (self.last_key as usize).min(argc - 1)
        };
        let step = self.step.max(1) as usize;
        let empty = self.first_key <= 0 || argc <= first;
        (first..=last).step_by(step).filter(move |_| !empty)
    }
}

const RW_STRING: &[&str] = &["write", "denyoom"];
const RW_STRING_FAST: &[&str] = &["write", "denyoom", "fast"];
const RO_FAST: &[&str] = &["readonly", "fast"];
const RO: &[&str] = &["readonly"];
const W: &[&str] = &["write"];
const W_FAST: &[&str] = &["write", "fast"];
const CONN: &[&str] = &["noscript", "loading", "stale", "fast"];

macro_rules! cmd {
    ($name:literal, $arity:expr, $flags:expr, ($f:expr, $l:expr, $s:expr), $exec:expr, $group:literal, $since:literal, $summary:literal, $args:literal) => {
        CommandSpec {
            name: $name,
            arity: $arity,
            flags: $flags,
            first_key: $f,
            last_key: $l,
            step: $s,
            exec: $exec,
            group: $group,
            since: $since,
            summary: $summary,
            args: $args,
            write: holds($flags, "write"),
        }
    };
}

/// Whether `flags` holds `flag`; a const fn, so the table's booleans cost nothing at run time.
const fn holds(flags: &[&str], flag: &str) -> bool {
    let want = flag.as_bytes();
    let mut i = 0;
    while i < flags.len() {
        let have = flags[i].as_bytes();
        if have.len() == want.len() {
            let mut j = 0;
            while j < have.len() && have[j] == want[j] {
                j += 1;
            }
            if j == have.len() {
                return true;
            }
        }
        i += 1;
    }
    false
}

use CrossCore::*;
use Exec::{Node, Shard};
use NodeCmd as N;

pub static TABLE: &[CommandSpec] = &[
    // strings
    cmd!("get", 2, RO_FAST, (1, 1, 1), Shard(string::get, None), "string", "1.0.0", "Returns the string value of a key.", "key:key"),
    cmd!("set", -3, RW_STRING, (1, 1, 1), Shard(string::set, None), "string", "1.0.0", "Sets the string value of a key, ignoring its type. The key is created if it doesn't exist.", "key:key value:string condition:[NX|XX] [GET] expiration:[EX seconds:integer|PX milliseconds:integer|EXAT unix-time-seconds:unix-time|PXAT unix-time-milliseconds:unix-time|KEEPTTL]"),
    cmd!("setnx", 3, RW_STRING_FAST, (1, 1, 1), Shard(string::setnx, None), "string", "1.0.0", "Set the string value of a key only when the key doesn't exist.", "key:key value:string"),
    cmd!("setex", 4, RW_STRING, (1, 1, 1), Shard(string::setex, None), "string", "2.0.0", "Sets the string value and expiration time of a key. Creates the key if it doesn't exist.", "key:key seconds:integer value:string"),
    cmd!("psetex", 4, RW_STRING, (1, 1, 1), Shard(string::psetex, None), "string", "2.6.0", "Sets both string value and expiration time in milliseconds of a key. The key is created if it doesn't exist.", "key:key milliseconds:integer value:string"),
    cmd!("getset", 3, RW_STRING_FAST, (1, 1, 1), Shard(string::getset, None), "string", "1.0.0", "Returns the previous string value of a key after setting it to a new value.", "key:key value:string"),
    cmd!("getdel", 2, W_FAST, (1, 1, 1), Shard(string::getdel, None), "string", "6.2.0", "Returns the string value of a key after deleting the key.", "key:key"),
    cmd!("getex", -2, W_FAST, (1, 1, 1), Shard(string::getex, None), "string", "6.2.0", "Returns the string value of a key after setting its expiration time.", "key:key expiration:[EX seconds:integer|PX milliseconds:integer|EXAT unix-time-seconds:unix-time|PXAT unix-time-milliseconds:unix-time|PERSIST]"),
    cmd!("mget", -2, RO_FAST, (1, -1, 1), Shard(string::mget, Some(Gather)), "string", "1.0.0", "Atomically returns the string values of one or more keys.", "key:key..."),
    cmd!("mset", -3, RW_STRING, (1, -1, 2), Shard(string::mset, Some(SetAll)), "string", "1.0.1", "Atomically creates or modifies the string values of one or more keys.", "(key:key value:string)..."),
    cmd!("msetnx", -3, RW_STRING, (1, -1, 2), Shard(string::msetnx, Some(SetAllIfNone)), "string", "1.0.1", "Atomically modifies the string values of one or more keys only when all keys don't exist.", "(key:key value:string)..."),
    cmd!("incr", 2, RW_STRING_FAST, (1, 1, 1), Shard(string::incr, None), "string", "1.0.0", "Increments the integer value of a key by one. Uses 0 as initial value if the key doesn't exist.", "key:key"),
    cmd!("decr", 2, RW_STRING_FAST, (1, 1, 1), Shard(string::decr, None), "string", "1.0.0", "Decrements the integer value of a key by one. Uses 0 as initial value if the key doesn't exist.", "key:key"),
    cmd!("incrby", 3, RW_STRING_FAST, (1, 1, 1), Shard(string::incrby, None), "string", "1.0.0", "Increments the integer value of a key by a number. Uses 0 as initial value if the key doesn't exist.", "key:key increment:integer"),
    cmd!("decrby", 3, RW_STRING_FAST, (1, 1, 1), Shard(string::decrby, None), "string", "1.0.0", "Decrements a number from the integer value of a key. Uses 0 as initial value if the key doesn't exist.", "key:key decrement:integer"),
    cmd!("incrbyfloat", 3, RW_STRING_FAST, (1, 1, 1), Shard(string::incrbyfloat, None), "string", "2.6.0", "Increment the floating point value of a key by a number. Uses 0 as initial value if the key doesn't exist.", "key:key increment:double"),
    cmd!("append", 3, RW_STRING_FAST, (1, 1, 1), Shard(string::append, None), "string", "2.0.0", "Appends a string to the value of a key. Creates the key if it doesn't exist.", "key:key value:string"),
    cmd!("strlen", 2, RO_FAST, (1, 1, 1), Shard(string::strlen, None), "string", "2.2.0", "Returns the length of a string value.", "key:key"),
    cmd!("getrange", 4, RO, (1, 1, 1), Shard(string::getrange, None), "string", "2.4.0", "Returns a substring of the string stored at a key.", "key:key start:integer end:integer"),
    cmd!("substr", 4, RO, (1, 1, 1), Shard(string::getrange, None), "string", "1.0.0", "Returns a substring from a string value.", "key:key start:integer end:integer"),
    cmd!("setrange", 4, RW_STRING, (1, 1, 1), Shard(string::setrange, None), "string", "2.2.0", "Overwrites a part of a string value with another by an offset. Creates the key if it doesn't exist.", "key:key offset:integer value:string"),
    // keys and TTLs
    cmd!("del", -2, W, (1, -1, 1), Shard(keys::del, Some(Sum)), "generic", "1.0.0", "Deletes one or more keys.", "key:key..."),
    cmd!("unlink", -2, W_FAST, (1, -1, 1), Shard(keys::del, Some(Sum)), "generic", "4.0.0", "Asynchronously deletes one or more keys.", "key:key..."),
    cmd!("exists", -2, RO_FAST, (1, -1, 1), Shard(keys::exists, Some(Sum)), "generic", "1.0.0", "Determines whether one or more keys exist.", "key:key..."),
    cmd!("touch", -2, RO_FAST, (1, -1, 1), Shard(keys::touch, Some(Sum)), "generic", "3.2.1", "Returns the number of existing keys out of those specified after updating the time they were last accessed.", "key:key..."),
    cmd!("type", 2, RO_FAST, (1, 1, 1), Shard(keys::type_, None), "generic", "1.0.0", "Determines the type of value stored at a key.", "key:key"),
    cmd!("rename", 3, W, (1, 2, 1), Shard(keys::rename, Some(Rename { only_if_new: false })), "generic", "1.0.0", "Renames a key and overwrites the destination.", "key:key newkey:key"),
    cmd!("renamenx", 3, W_FAST, (1, 2, 1), Shard(keys::renamenx, Some(Rename { only_if_new: true })), "generic", "1.0.0", "Renames a key only when the target key name doesn't exist.", "key:key newkey:key"),
    cmd!("copy", -3, RW_STRING, (1, 2, 1), Shard(keys::copy, Some(Copy)), "generic", "6.2.0", "Copies the value of a key to a new key.", "source:key destination:key [DB destination-db:integer] [REPLACE]"),
    cmd!("expire", -3, W_FAST, (1, 1, 1), Shard(keys::expire, None), "generic", "1.0.0", "Sets the expiration time of a key in seconds.", "key:key seconds:integer condition:[NX|XX|GT|LT]"),
    cmd!("pexpire", -3, W_FAST, (1, 1, 1), Shard(keys::pexpire, None), "generic", "2.6.0", "Sets the expiration time of a key in milliseconds.", "key:key milliseconds:integer condition:[NX|XX|GT|LT]"),
    cmd!("expireat", -3, W_FAST, (1, 1, 1), Shard(keys::expireat, None), "generic", "1.2.0", "Sets the expiration time of a key to a Unix timestamp.", "key:key unix-time-seconds:unix-time condition:[NX|XX|GT|LT]"),
    cmd!("pexpireat", -3, W_FAST, (1, 1, 1), Shard(keys::pexpireat, None), "generic", "2.6.0", "Sets the expiration time of a key to a Unix milliseconds timestamp.", "key:key unix-time-milliseconds:unix-time condition:[NX|XX|GT|LT]"),
    cmd!("ttl", 2, RO_FAST, (1, 1, 1), Shard(keys::ttl, None), "generic", "1.0.0", "Returns the expiration time in seconds of a key.", "key:key"),
    cmd!("pttl", 2, RO_FAST, (1, 1, 1), Shard(keys::pttl, None), "generic", "2.6.0", "Returns the expiration time in milliseconds of a key.", "key:key"),
    cmd!("expiretime", 2, RO_FAST, (1, 1, 1), Shard(keys::expiretime, None), "generic", "7.0.0", "Returns the expiration time of a key as a Unix timestamp.", "key:key"),
    cmd!("pexpiretime", 2, RO_FAST, (1, 1, 1), Shard(keys::pexpiretime, None), "generic", "7.0.0", "Returns the expiration time of a key as a Unix milliseconds timestamp.", "key:key"),
    cmd!("persist", 2, W_FAST, (1, 1, 1), Shard(keys::persist, None), "generic", "2.2.0", "Removes the expiration time of a key.", "key:key"),
    cmd!("object", -2, RO, (2, 2, 1), Shard(keys::object, None), "generic", "2.2.3", "A container for object introspection commands.", ""),
    cmd!("keys", 2, RO, (0, 0, 0), Node(N::Keys), "generic", "1.0.0", "Returns all key names that match a pattern.", "pattern:pattern"),
    cmd!("scan", -2, RO, (0, 0, 0), Node(N::Scan), "generic", "2.8.0", "Iterates over the key names in the database.", "cursor:integer [MATCH pattern:pattern] [COUNT count:integer] [TYPE type:string]"),
    cmd!("randomkey", 1, RO, (0, 0, 0), Node(N::Randomkey), "generic", "1.0.0", "Returns a random key name from the database.", ""),
    cmd!("dbsize", 1, RO_FAST, (0, 0, 0), Node(N::Dbsize), "server", "1.0.0", "Returns the number of keys in the database.", ""),
    cmd!("flushdb", -1, W, (0, 0, 0), Node(N::Flushdb), "server", "1.0.0", "Remove all keys from the current database.", "async:[ASYNC|SYNC]"),
    cmd!("flushall", -1, W, (0, 0, 0), Node(N::Flushall), "server", "1.0.0", "Removes all keys from all databases.", "async:[ASYNC|SYNC]"),
    // transactions
    cmd!("multi", 1, CONN, (0, 0, 0), Node(N::Multi), "transactions", "1.2.0", "Starts a transaction.", ""),
    cmd!("exec", 1, &["noscript", "loading", "stale", "skip_slowlog"], (0, 0, 0), Node(N::Exec), "transactions", "1.2.0", "Executes all commands in a transaction.", ""),
    cmd!("discard", 1, CONN, (0, 0, 0), Node(N::Discard), "transactions", "2.0.0", "Discards a transaction.", ""),
    cmd!("watch", -2, CONN, (1, -1, 1), Node(N::Watch), "transactions", "2.2.0", "Monitors changes to keys to determine the execution of a transaction.", "key:key..."),
    cmd!("unwatch", 1, CONN, (0, 0, 0), Node(N::Unwatch), "transactions", "2.2.0", "Forgets about watched keys of a transaction.", ""),
    // connection
    cmd!("ping", -1, &["fast"], (0, 0, 0), Node(N::Ping), "connection", "1.0.0", "Returns the server's liveliness response.", "[message:string]"),
    cmd!("echo", 2, &["fast"], (0, 0, 0), Node(N::Echo), "connection", "1.0.0", "Returns the given string.", "message:string"),
    cmd!("hello", -1, &["noscript", "loading", "stale", "fast", "no_auth"], (0, 0, 0), Node(N::Hello), "connection", "6.0.0", "Handshakes with the Redis server.", "arguments:[protover:integer [AUTH (username:string password:string)] [SETNAME clientname:string]]"),
    cmd!("auth", -2, &["noscript", "loading", "stale", "fast", "no_auth"], (0, 0, 0), Node(N::Auth), "connection", "1.0.0", "Authenticates the connection.", "[username:string] password:string"),
    cmd!("select", 2, CONN, (0, 0, 0), Node(N::Select), "connection", "1.0.0", "Changes the selected database.", "index:integer"),
    cmd!("quit", -1, &["noscript", "loading", "stale", "fast", "no_auth"], (0, 0, 0), Node(N::Quit), "connection", "1.0.0", "Closes the connection.", ""),
    cmd!("reset", 1, &["noscript", "loading", "stale", "fast", "no_auth"], (0, 0, 0), Node(N::Reset), "connection", "6.2.0", "Resets the connection.", ""),
    cmd!("client", -2, &["noscript", "loading", "stale"], (0, 0, 0), Node(N::Client), "connection", "2.4.0", "A container for client connection commands.", ""),
    // server
    cmd!("command", -1, &["loading", "stale"], (0, 0, 0), Node(N::Command), "server", "2.8.13", "Returns detailed information about all commands.", ""),
    cmd!("config", -2, &["admin", "noscript", "loading", "stale"], (0, 0, 0), Node(N::Config), "server", "2.0.0", "A container for server configuration commands.", ""),
    cmd!("acl", -2, &["noscript", "loading", "stale"], (0, 0, 0), Node(N::Acl), "server", "6.0.0", "A container for Access List Control commands.", ""),
    cmd!("monitor", 1, &["admin", "noscript", "loading", "stale", "no_multi"], (0, 0, 0), Node(N::Monitor), "server", "1.0.0", "Listens for all requests received by the server in real-time.", ""),
    cmd!("latency", -2, &["admin", "noscript", "loading", "stale"], (0, 0, 0), Node(N::Latency), "server", "2.8.13", "A container for latency diagnostics commands.", ""),
    cmd!("slowlog", -2, &["admin", "loading", "stale"], (0, 0, 0), Node(N::Slowlog), "server", "2.2.12", "A container for slow log commands.", ""),
    cmd!("info", -1, &["loading", "stale"], (0, 0, 0), Node(N::Info), "server", "1.0.0", "Returns information and statistics about the server.", "[section:string...]"),
    cmd!("time", 1, &["loading", "stale", "fast"], (0, 0, 0), Node(N::Time), "server", "2.6.0", "Returns the server time.", ""),
    cmd!("save", 1, &["admin", "noscript", "no_async_loading", "no_multi"], (0, 0, 0), Node(N::Save), "server", "1.0.0", "Synchronously saves the database(s) to disk.", ""),
    cmd!("bgsave", -1, &["admin", "noscript", "no_async_loading"], (0, 0, 0), Node(N::Bgsave), "server", "1.0.0", "Asynchronously saves the database(s) to disk.", "[SCHEDULE]"),
    cmd!("bgrewriteaof", 1, &["admin", "noscript", "no_async_loading"], (0, 0, 0), Node(N::Bgrewriteaof), "server", "1.0.0", "Asynchronously rewrites the append-only file to disk.", ""),
    cmd!("lastsave", 1, &["loading", "stale", "fast"], (0, 0, 0), Node(N::Lastsave), "server", "1.0.0", "Returns the Unix timestamp of the last successful save to disk.", ""),
    cmd!("shutdown", -1, &["admin", "noscript", "loading", "stale", "no_multi"], (0, 0, 0), Node(N::Shutdown), "server", "1.0.0", "Synchronously saves the database(s) to disk and shuts down the server.", "[NOSAVE|SAVE] [NOW] [FORCE] [ABORT]"),
    cmd!("memory", -2, &[], (0, 0, 0), Node(N::Memory), "server", "4.0.0", "A container for memory diagnostics commands.", ""),
    // replication
    cmd!("replicaof", 3, &["admin", "noscript", "stale", "no_async_loading"], (0, 0, 0), Node(N::Replicaof), "server", "5.0.0", "Configures a server as replica of another, or promotes it to a master.", "args:[(host:string port:integer)|(NO ONE)]"),
    cmd!("slaveof", 3, &["admin", "noscript", "stale", "no_async_loading"], (0, 0, 0), Node(N::Replicaof), "server", "1.0.0", "Sets a Redis server as a replica of another, or promotes it to being a master.", "args:[(host:string port:integer)|(NO ONE)]"),
    cmd!("role", 1, &["noscript", "loading", "stale", "fast"], (0, 0, 0), Node(N::Role), "server", "2.8.12", "Returns the replication role.", ""),
    cmd!("wait", 3, &[], (0, 0, 0), Node(N::Wait), "generic", "3.0.0", "Blocks until the asynchronous replication of all preceding write commands sent by the connection is completed.", "numreplicas:integer timeout:integer"),
    cmd!("replsync", -4, &["admin", "noscript", "no_multi", "stale"], (0, 0, 0), Node(N::Replsync), "server", "0.1.0", "Turns the connection into a replication stream to a tessera replica (sent by replicas).", "replid:string offsets:string listening-port:integer [announce-ip:string]"),
    cmd!("replpause", 2, &["admin", "noscript", "no_multi", "stale"], (0, 0, 0), Node(N::Replpause), "server", "0.1.0", "Holds a primary's writes while a replica catches up for a manual CLUSTER FAILOVER (sent by replicas).", "milliseconds:integer"),
    // cluster
    cmd!("cluster", -2, &[], (0, 0, 0), Node(N::Cluster), "cluster", "3.0.0", "A container for Redis Cluster commands.", ""),
    cmd!("readonly", 1, &["loading", "stale", "fast"], (0, 0, 0), Node(N::Readonly), "cluster", "3.0.0", "Enables read-only queries for a connection to a Redis Cluster replica node.", ""),
    cmd!("readwrite", 1, &["loading", "stale", "fast"], (0, 0, 0), Node(N::Readwrite), "cluster", "3.0.0", "Enables read-write queries for a connection to a Redis Cluster replica node.", ""),
    cmd!("asking", 1, &["fast"], (0, 0, 0), Node(N::Asking), "cluster", "3.0.0", "Signals that a cluster client is following an -ASK redirect.", ""),
    cmd!("debug", -2, &["admin", "noscript", "loading", "stale"], (0, 0, 0), Node(N::Debug), "server", "1.0.0", "tessera test hooks (ADVANCE-CLOCK, SET-ACTIVE-EXPIRE); needs enable-debug-command.", ""),
];

macro_rules! sub {
    ($name:literal, $arity:expr, $since:literal, $summary:literal, $args:literal) => {
        SubcommandDoc {
            name: $name,
            arity: $arity,
            since: $since,
            summary: $summary,
            args: $args,
        }
    };
}

/// The subcommands of the containers in [`TABLE`] (those we serve), as `COMMAND DOCS`
/// reports them.
pub static SUBCOMMANDS: &[SubcommandDoc] = &[
    sub!("object|encoding", 3, "2.2.3", "Returns the internal encoding of a Redis object.", "key:key"),
    sub!("object|freq", 3, "4.0.0", "Returns the logarithmic access frequency counter of a Redis object.", "key:key"),
    sub!("object|help", 2, "6.2.0", "Returns helpful text about the different subcommands.", ""),
    sub!("object|idletime", 3, "2.2.3", "Returns the time since the last access to a Redis object.", "key:key"),
    sub!("memory|help", 2, "4.0.0", "Returns helpful text about the different subcommands.", ""),
    sub!("memory|purge", 2, "4.0.0", "Asks the allocator to release memory.", ""),
    sub!("memory|stats", 2, "4.0.0", "Returns details about memory usage.", ""),
    sub!("memory|usage", -3, "4.0.0", "Estimates the memory usage of a key.", "key:key [SAMPLES count:integer]"),
    sub!("client|id", 2, "5.0.0", "Returns the unique client ID of the connection.", ""),
    sub!("client|setname", 3, "2.6.9", "Sets the connection name.", "connection-name:string"),
    sub!("client|getname", 2, "2.6.9", "Returns the name of the connection.", ""),
    sub!("client|info", 2, "6.2.0", "Returns information about the connection.", ""),
    sub!("client|list", -2, "2.4.0", "Lists open connections.", "[TYPE (NORMAL|MASTER|REPLICA|PUBSUB)] [ID id:(client-id:integer...)]"),
    sub!("client|kill", -3, "2.4.0", "Terminates open connections.", "filter:(ip:port:string|new-format:([ID client-id:integer]|[TYPE normal_master_slave_pubsub:(NORMAL|MASTER|SLAVE|REPLICA|PUBSUB)]|[USER username:string]|[ADDR ip:port:string]|[LADDR ip:port:string]|[SKIPME skipme:(YES|NO)]|[MAXAGE maxage:integer])...)"),
    sub!("client|setinfo", 4, "7.2.0", "Sets information specific to the client or connection.", "attr:(LIB-NAME libname:string|LIB-VER libver:string)"),
    sub!("client|no-evict", 3, "7.0.0", "Sets the client eviction mode of the connection.", "enabled:(ON|OFF)"),
    sub!("client|help", 2, "5.0.0", "Returns helpful text about the different subcommands.", ""),
    sub!("command|count", 2, "2.8.13", "Returns a count of commands.", ""),
    sub!("command|docs", -2, "7.0.0", "Returns documentary information about one, multiple or all commands.", "[command-name:string...]"),
    sub!("command|info", -2, "2.8.13", "Returns information about one, multiple or all commands.", "[command-name:string...]"),
    sub!("command|list", -2, "7.0.0", "Returns a list of command names.", "[FILTERBY filterby:(MODULE module-name:string|ACLCAT category:string|PATTERN pattern:pattern)]"),
    sub!("command|help", 2, "5.0.0", "Returns helpful text about the different subcommands.", ""),
    sub!("config|get", -3, "2.0.0", "Returns the effective values of configuration parameters.", "parameter:(parameter:string)..."),
    sub!("config|set", -4, "2.0.0", "Sets configuration parameters in-flight.", "(parameter:string value:string)..."),
    sub!("config|resetstat", 2, "2.0.0", "Resets the server's statistics.", ""),
    sub!("config|help", 2, "5.0.0", "Returns helpful text about the different subcommands.", ""),
    sub!("acl|cat", -2, "6.0.0", "Lists the ACL categories, or the commands inside a category.", "[category:string]"),
    sub!("acl|deluser", -3, "6.0.0", "Deletes ACL users, and terminates their connections.", "username:string..."),
    sub!("acl|dryrun", -4, "7.0.0", "Simulates the execution of a command by a user, without executing the command.", "username:string command:string [arg:string...]"),
    sub!("acl|genpass", -2, "6.0.0", "Generates a pseudorandom, secure password that can be used to identify ACL users.", "[bits:integer]"),
    sub!("acl|getuser", 3, "6.0.0", "Lists the ACL rules of a user.", "username:string"),
    sub!("acl|list", 2, "6.0.0", "Dumps the effective rules in ACL file format.", ""),
    sub!("acl|load", 2, "6.0.0", "Reloads the rules from the configured ACL file.", ""),
    sub!("acl|log", -2, "6.0.0", "Lists recent security events generated due to ACL rules.", "operation:[count:integer|RESET]"),
    sub!("acl|save", 2, "6.0.0", "Saves the effective ACL rules in the configured ACL file.", ""),
    sub!("acl|setuser", -3, "6.0.0", "Creates and modifies an ACL user and its rules.", "username:string [rule:string...]"),
    sub!("acl|users", 2, "6.0.0", "Lists all ACL users.", ""),
    sub!("acl|whoami", 2, "6.0.0", "Returns the authenticated username of the current connection.", ""),
    sub!("acl|help", 2, "6.0.0", "Returns helpful text about the different subcommands.", ""),
    sub!("latency|history", 3, "2.8.13", "Returns timestamp-latency samples for an event.", "event:string"),
    sub!("latency|histogram", -2, "7.0.0", "Returns the cumulative distribution of latencies of a subset or all commands.", "[command:string...]"),
    sub!("latency|latest", 2, "2.8.13", "Returns the latest latency samples for all events.", ""),
    sub!("latency|reset", -2, "2.8.13", "Resets the latency data for one or more events.", "[event:string...]"),
    sub!("latency|help", 2, "2.8.13", "Returns helpful text about the different subcommands.", ""),
    sub!("slowlog|get", -2, "2.2.12", "Returns the slow log's entries.", "[count:integer]"),
    sub!("slowlog|len", 2, "2.2.12", "Returns the number of entries in the slow log.", ""),
    sub!("slowlog|reset", 2, "2.2.12", "Clears all entries from the slow log.", ""),
    sub!("slowlog|help", 2, "6.2.0", "Show helpful text about the different subcommands", ""),
    sub!("cluster|countkeysinslot", 3, "3.0.0", "Returns the number of keys in a hash slot.", "slot:integer"),
    sub!("cluster|create", 2, "3.0.0", "(tessera) Forms the cluster: places all slots over the nodes that have met.", ""),
    sub!("cluster|failover", -2, "3.0.0", "Forces a replica to perform a manual failover of its master.", "options:[FORCE|TAKEOVER]"),
    sub!("cluster|forget", 3, "3.0.0", "Removes a node from the nodes table.", "node-id:string"),
    sub!("cluster|replicate", 3, "3.0.0", "Configure a node as replica of a master node.", "node-id:string"),
    sub!("cluster|forwarded", 2, "3.0.0", "(tessera) Marks a link carrying commands forwarded by another node.", ""),
    sub!("cluster|getkeysinslot", 4, "3.0.0", "Returns the key names in a hash slot.", "slot:integer count:integer"),
    sub!("cluster|help", 2, "5.0.0", "Returns helpful text about the different subcommands.", ""),
    sub!("cluster|info", 2, "3.0.0", "Returns information about the state of a node.", ""),
    sub!("cluster|keyslot", 3, "3.0.0", "Returns the hash slot for a key.", "key:string"),
    sub!("cluster|meet", -4, "3.0.0", "Forces a node to handshake with another node.", "ip:string port:integer [cluster-bus-port:integer]"),
    sub!("cluster|myid", 2, "3.0.0", "Returns the ID of a node.", ""),
    sub!("cluster|nodes", 2, "3.0.0", "Returns the cluster configuration for a node.", ""),
    sub!("cluster|shards", 2, "7.0.0", "Returns the mapping of cluster slots to shards.", ""),
    sub!("cluster|slots", 2, "3.0.0", "Returns the mapping of cluster slots to nodes.", ""),
    // tessera's own test hook, as old as its container.
    sub!("debug|advance-clock", 3, "1.0.0", "Moves the server's clock forward (tests of TTLs without sleeping).", "milliseconds:integer"),
    sub!("debug|help", 2, "1.0.0", "Returns helpful text about the different subcommands.", ""),
];

/// The position of `spec` in [`TABLE`].
pub fn command_index(spec: &CommandSpec) -> usize {
    (spec as *const CommandSpec as usize - TABLE.as_ptr() as usize)
        / std::mem::size_of::<CommandSpec>()
}

/// The position of `sub` in [`SUBCOMMANDS`].
pub fn subcommand_index(sub: &SubcommandDoc) -> usize {
    (sub as *const SubcommandDoc as usize - SUBCOMMANDS.as_ptr() as usize)
        / std::mem::size_of::<SubcommandDoc>()
}

/// Whether `spec` is a container (CONFIG, CLIENT, ...): one with subcommands.
pub fn is_container(spec: &CommandSpec) -> bool {
    static CONTAINERS: std::sync::OnceLock<Vec<bool>> = std::sync::OnceLock::new();
    CONTAINERS.get_or_init(|| {
        TABLE
            .iter()
            .map(|c| subcommands(c.name).next().is_some())
            .collect()
    })[command_index(spec)]
}

/// The subcommand a call of `spec` with `args` names, when `spec` is a container and we
/// serve that subcommand (one lookup of a static flag for every other command).
pub fn subcommand_of(spec: &CommandSpec, args: &Args) -> Option<&'static SubcommandDoc> {
    if args.len() < 2 || !is_container(spec) {
        return None;
    }
    lookup_subcommand(spec.name, args.get(1))
}

/// The documented subcommands of container `name` (lowercase), in table order.
pub fn subcommands(name: &str) -> impl Iterator<Item = &'static SubcommandDoc> + '_ {
    SUBCOMMANDS.iter().filter(move |s| {
        s.name
            .split_once('|')
            .is_some_and(|(container, _)| container == name)
    })
}

/// Finds a command by name, case-insensitively, without allocating.
pub fn lookup(name: &[u8]) -> Option<&'static CommandSpec> {
    // The table is small; a linear scan over names of mostly different lengths costs less
    // than hashing a lowercased copy. The most used commands come first.
    TABLE
        .iter()
        .find(|c| c.name.len() == name.len() && c.name.as_bytes().eq_ignore_ascii_case(name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_lowercase() {
        let mut names: Vec<_> = TABLE.iter().map(|c| c.name).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), TABLE.len());
        assert!(TABLE.iter().all(|c| c.name == c.name.to_ascii_lowercase()));
    }

    #[test]
    fn the_write_boolean_matches_the_flags() {
        for c in TABLE {
            assert_eq!(c.write, c.flags.contains(&"write"), "{}", c.name);
        }
        assert!(lookup(b"set").unwrap().is_write());
        assert!(!lookup(b"get").unwrap().is_write());
        assert!(!holds(&["writes", "writ"], "write"));
    }

    #[test]
    fn key_positions_follow_redis_key_specs() {
        let mset = lookup(b"MSET").unwrap();
        assert_eq!(mset.key_positions(5).collect::<Vec<_>>(), vec![1, 3]);
        let del = lookup(b"del").unwrap();
        assert_eq!(del.key_positions(4).collect::<Vec<_>>(), vec![1, 2, 3]);
        let rename = lookup(b"rename").unwrap();
        assert_eq!(rename.key_positions(3).collect::<Vec<_>>(), vec![1, 2]);
        let copy = lookup(b"copy").unwrap();
        assert_eq!(copy.key_positions(6).collect::<Vec<_>>(), vec![1, 2]);
        let object = lookup(b"object").unwrap();
        assert_eq!(object.key_positions(2).count(), 0);
        assert_eq!(object.key_positions(3).collect::<Vec<_>>(), vec![2]);
        assert_eq!(lookup(b"ping").unwrap().key_positions(2).count(), 0);
    }

    #[test]
    fn argument_docs_parse_and_agree_with_the_key_positions() {
        use super::super::docs::{self, ArgType};
        fn keys(args: &[docs::Arg]) -> usize {
            args.iter()
                .map(|a| usize::from(a.kind == ArgType::Key) + keys(&a.args))
                .sum()
        }
        for c in TABLE {
            let args = docs::parse(c.args).unwrap_or_else(|e| panic!("{}: {e}", c.name));
            let container = subcommands(c.name).next().is_some();
            assert!(
                !container || args.is_empty(),
                "{}: a container's arguments are its subcommands'",
                c.name
            );
            if !container {
                assert_eq!(
                    keys(&args) > 0,
                    c.first_key > 0,
                    "{}: key arguments vs first_key",
                    c.name
                );
            }
        }
        for s in SUBCOMMANDS {
            docs::parse(s.args).unwrap_or_else(|e| panic!("{}: {e}", s.name));
            let (container, sub) = s.name.split_once('|').expect("container|subcommand");
            assert!(
                lookup(container.as_bytes()).is_some(),
                "{}: no such container",
                s.name
            );
            assert_eq!(sub, sub.to_ascii_lowercase());
        }
        let names: Vec<_> = subcommands("client").map(|s| s.name).collect();
        assert!(names.contains(&"client|list") && names.contains(&"client|kill"));
        assert_eq!(subcommands("get").count(), 0);
    }

    #[test]
    fn readme_lists_every_command() {
        let readme = include_str!("../../README.md");
        let section = &readme[readme.find("## Commands").expect("a Commands section")..];
        for c in TABLE {
            let upper = c.name.to_ascii_uppercase();
            assert!(
                section
                    .split(|ch: char| !ch.is_ascii_alphanumeric())
                    .any(|w| w == upper),
                "README's command list lacks {upper}"
            );
        }
    }
}
