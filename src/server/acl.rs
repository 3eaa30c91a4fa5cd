//! Users and their permissions (ACL), as Redis 7: each connection acts as a user; a user is
//! on or off, has passwords (kept as SHA-256 hashes) or none (`nopass`), may run some
//! commands (single ones and categories) and touch keys matching some patterns (for
//! reading, writing or both). `requirepass` is the default user's password.
//!
//! The users live in one table shared by every core (`NodeShared::acl`, swapped whole on
//! each change); a connection keeps its user and looks it up again only when the table's
//! generation moved, so the check on the data path is an atomic load and, for users
//! allowed everything, nothing more.

use crate::cmd::table::{
    command_index as index_of, lookup_subcommand, subcommand_index as sub_index_of, subcommand_of,
    CommandSpec, SubcommandDoc, SUBCOMMANDS, TABLE,
};
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

/// Words of the command bit set: one bit per command-table entry (512 at most; a test
/// checks the table fits).
const COMMAND_WORDS: usize = 8;
/// Words of the subcommand bit set: one bit per subcommand-table entry (`config|get`; 128
/// at most, checked by a test).
const SUBCOMMAND_WORDS: usize = 2;

/// The categories Redis 7 has (we serve commands in some of them).
pub const CATEGORIES: &[&str] = &[
    "keyspace",
    "read",
    "write",
    "set",
    "sortedset",
    "list",
    "hash",
    "string",
    "bitmap",
    "hyperloglog",
    "geo",
    "stream",
    "pubsub",
    "admin",
    "fast",
    "slow",
    "blocking",
    "dangerous",
    "connection",
    "transaction",
    "scripting",
];

/// Commands Redis counts as @dangerous beyond the @admin ones.
const DANGEROUS: &[&str] = &[
    "keys",
    "flushdb",
    "flushall",
    "info",
    "role",
    "client",
    "config",
    "debug",
    "shutdown",
    "save",
    "bgsave",
    "bgrewriteaof",
    "lastsave",
    "replicaof",
    "slaveof",
    "sync",
    "psync",
    "cluster",
    "slowlog",
    "latency",
    "monitor",
    "acl",
    "replsync",
    "replpause",
];

/// The ACL categories of a command, from its flags and group as Redis derives them.
pub fn categories(spec: &CommandSpec) -> Vec<&'static str> {
    let mut c = Vec::new();
    match spec.group {
        "generic" => c.push("keyspace"),
        "string" => c.push("string"),
        "connection" => c.push("connection"),
        "transactions" => c.push("transaction"),
        _ => {}
    }
    if spec.has_flag("write") {
        c.push("write");
    }
    if spec.has_flag("readonly") {
        c.push("read");
    }
    if spec.has_flag("admin") {
        c.push("admin");
        c.push("dangerous");
    } else if DANGEROUS.contains(&spec.name) {
        c.push("dangerous");
    }
    if spec.has_flag("blocking") {
        c.push("blocking");
    }
    c.push(if spec.has_flag("fast") {
        "fast"
    } else {
        "slow"
    });
    c
}

/// The subcommand-table indexes of command-table entry `i`'s subcommands (none unless it
/// is a container: CONFIG, CLIENT, ...).
fn subcommands_of(i: usize) -> impl Iterator<Item = usize> {
    let name = TABLE[i].name;
    SUBCOMMANDS.iter().enumerate().filter_map(move |(j, s)| {
        s.name
            .split_once('|')
            .is_some_and(|(container, _)| container == name)
            .then_some(j)
    })
}

/// A key pattern and what it allows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyPattern {
    pub pattern: Vec<u8>,
    pub read: bool,
    pub write: bool,
}

#[derive(Clone, Debug)]
pub struct User {
    pub name: String,
    pub enabled: bool,
    pub nopass: bool,
    pub passwords: Vec<[u8; 32]>,
    commands: [u64; COMMAND_WORDS],
    /// Per subcommand of a container (`config|get`): allowed or not. A rule on the whole
    /// command (or a category) sets its subcommands with it.
    subcommands: [u64; SUBCOMMAND_WORDS],
    /// The command rules as given since the last reset, for GETUSER and LIST.
    command_rules: Vec<String>,
    pub keys: Vec<KeyPattern>,
    pub channels: Vec<Vec<u8>>,
}

/// Why a user may not run a command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Denied {
    /// The command, or its subcommand (`config|set`), by its name.
    Command(&'static str),
    Key(Vec<u8>),
}

impl User {
    /// A user as ACL SETUSER makes one: off, no passwords, no commands, no keys.
    pub fn new(name: &str) -> User {
        User {
            name: name.to_string(),
            enabled: false,
            nopass: false,
            passwords: Vec::new(),
            commands: [0; COMMAND_WORDS],
            subcommands: [0; SUBCOMMAND_WORDS],
            command_rules: Vec::new(),
            keys: Vec::new(),
            channels: Vec::new(),
        }
    }

    /// The default user: on, every command, key and channel, the password given or none.
    pub fn default_user(password: Option<&str>) -> User {
        let mut u = User::new("default");
        for rule in ["on", "allkeys", "allchannels", "allcommands"] {
            u.apply(rule).expect("valid rule");
        }
        match password {
            Some(p) => u.apply(&format!(">{p}")).expect("valid rule"),
            None => u.apply("nopass").expect("valid rule"),
        }
        u
    }

    fn all_commands(&self) -> bool {
        (0..TABLE.len()).all(|i| self.commands[i / 64] & (1 << (i % 64)) != 0)
            && (0..SUBCOMMANDS.len()).all(|j| self.subcommands[j / 64] & (1 << (j % 64)) != 0)
    }

    fn all_keys(&self) -> bool {
        self.keys
            .iter()
            .any(|k| k.pattern == b"*" && k.read && k.write)
    }

    /// Allowed every command and every key: nothing to check.
    pub fn unrestricted(&self) -> bool {
        self.all_commands() && self.all_keys()
    }

    pub fn may_run(&self, spec: &CommandSpec) -> bool {
        let i = index_of(spec);
        self.commands[i / 64] & (1 << (i % 64)) != 0
    }

    fn may_run_sub(&self, sub: &SubcommandDoc) -> bool {
        let j = sub_index_of(sub);
        self.subcommands[j / 64] & (1 << (j % 64)) != 0
    }

    /// Whether the user may run `spec` with these arguments (command or subcommand, then
    /// keys). A container's unknown subcommand is judged by the command's own rule (it is
    /// refused as unknown anyway).
    pub fn check(&self, spec: &CommandSpec, args: &crate::cmd::Args) -> Result<(), Denied> {
        match subcommand_of(spec, args) {
            Some(sub) if !self.may_run_sub(sub) => return Err(Denied::Command(sub.name)),
            Some(_) => {}
            None if !self.may_run(spec) => return Err(Denied::Command(spec.name)),
            None => {}
        }
        if self.all_keys() {
            return Ok(());
        }
        let write = spec.is_write();
        for i in spec.key_positions(args.len()) {
            let key = args.get(i);
            let ok = self.keys.iter().any(|k| {
                (if write { k.write } else { k.read })
                    && tessera_shards::glob::matches(&k.pattern, key)
            });
            if !ok {
                return Err(Denied::Key(key.to_vec()));
            }
        }
        Ok(())
    }

    pub fn password_ok(&self, pass: &[u8]) -> bool {
        if self.nopass {
            return true;
        }
        let h: [u8; 32] = Sha256::digest(pass).into();
        self.passwords.iter().any(|p| constant_time_eq(p, &h))
    }

    /// Allows or denies the commands `specs` (table indexes) whole, subcommands and all.
    fn set_commands(&mut self, specs: impl Iterator<Item = usize>, allow: bool) {
        for i in specs {
            if allow {
                self.commands[i / 64] |= 1 << (i % 64);
            } else {
                self.commands[i / 64] &= !(1 << (i % 64));
            }
            for j in subcommands_of(i) {
                self.set_subcommand(j, allow);
            }
        }
    }

    fn set_subcommand(&mut self, j: usize, allow: bool) {
        if allow {
            self.subcommands[j / 64] |= 1 << (j % 64);
        } else {
            self.subcommands[j / 64] &= !(1 << (j % 64));
        }
    }

    /// Applies one ACL SETUSER rule; the error names what is wrong with it.
    pub fn apply(&mut self, rule: &str) -> Result<(), String> {
        let lower = rule.to_ascii_lowercase();
        match lower.as_str() {
            "on" => self.enabled = true,
            "off" => self.enabled = false,
            "nopass" => {
                self.nopass = true;
                self.passwords.clear();
            }
            "resetpass" => {
                self.nopass = false;
                self.passwords.clear();
            }
            "allkeys" => {
                self.keys = vec![KeyPattern {
                    pattern: b"*".to_vec(),
                    read: true,
                    write: true,
                }]
            }
            "resetkeys" => self.keys.clear(),
            "allchannels" => self.channels = vec![b"*".to_vec()],
            "resetchannels" => self.channels.clear(),
            "allcommands" => {
                self.set_commands(0..TABLE.len(), true);
                self.command_rules = vec!["+@all".into()];
            }
            "nocommands" => {
                self.set_commands(0..TABLE.len(), false);
                self.command_rules = vec!["-@all".into()];
            }
            "reset" => {
                let name = std::mem::take(&mut self.name);
                *self = User::new(&name);
                self.apply("resetchannels")?;
                self.apply("nocommands")?;
            }
            _ => return self.apply_prefixed(rule),
        }
        Ok(())
    }

    fn apply_prefixed(&mut self, rule: &str) -> Result<(), String> {
        let mut chars = rule.chars();
        let first = chars.next().unwrap_or(' ');
        let rest = chars.as_str();
        match first {
            '>' => {
                let h: [u8; 32] = Sha256::digest(rest.as_bytes()).into();
                if !self.passwords.contains(&h) {
                    self.passwords.push(h);
                }
                self.nopass = false;
            }
            '<' => {
                let h: [u8; 32] = Sha256::digest(rest.as_bytes()).into();
                let before = self.passwords.len();
                self.passwords.retain(|p| *p != h);
                if self.passwords.len() == before {
                    return Err("no such password".into());
                }
            }
            '#' | '!' => {
                let h = parse_hash(rest)
                    .ok_or("The password hash must be exactly 64 characters and contain only lowercase hexadecimal characters")?;
                if first == '#' {
                    if !self.passwords.contains(&h) {
                        self.passwords.push(h);
                    }
                    self.nopass = false;
                } else {
                    let before = self.passwords.len();
                    self.passwords.retain(|p| *p != h);
                    if self.passwords.len() == before {
                        return Err("no such password".into());
                    }
                }
            }
            '~' => self.add_keys(rest, true, true),
            '%' => {
                let (perm, pattern) = rest.split_once('~').ok_or("Syntax error")?;
                let perm = perm.to_ascii_uppercase();
                if perm.is_empty() || !perm.chars().all(|c| c == 'R' || c == 'W') {
                    return Err("Syntax error".into());
                }
                self.add_keys(pattern, perm.contains('R'), perm.contains('W'));
            }
            '&' => {
                if !self.channels.iter().any(|c| c == rest.as_bytes()) {
                    self.channels.push(rest.as_bytes().to_vec());
                }
            }
            '+' | '-' => {
                let allow = first == '+';
                let name = rest.to_ascii_lowercase();
                if let Some(cat) = name.strip_prefix('@') {
                    if cat == "all" {
                        self.set_commands(0..TABLE.len(), allow);
                        self.command_rules.clear();
                    } else if CATEGORIES.contains(&cat) {
                        let in_cat: Vec<usize> = TABLE
                            .iter()
                            .enumerate()
                            .filter(|(_, s)| categories(s).contains(&cat))
                            .map(|(i, _)| i)
                            .collect();
                        self.set_commands(in_cat.into_iter(), allow);
                    } else {
                        return Err("Unknown command category".into());
                    }
                } else if let Some((container, sub)) = name.split_once('|') {
                    // A container's subcommand (`+config|get`). (Redis 7's first-argument
                    // rules for commands without subcommands, `+select|0`, are not taken.)
                    let doc =
                        lookup_subcommand(container, sub.as_bytes()).ok_or("Unknown command")?;
                    self.set_subcommand(sub_index_of(doc), allow);
                } else {
                    let i = TABLE
                        .iter()
                        .position(|s| s.name == name)
                        .ok_or("Unknown command")?;
                    self.set_commands(std::iter::once(i), allow);
                }
                self.command_rules.push(format!("{first}{name}"));
            }
            _ => return Err("Syntax error".into()),
        }
        Ok(())
    }

    fn add_keys(&mut self, pattern: &str, read: bool, write: bool) {
        let p = pattern.as_bytes().to_vec();
        match self.keys.iter_mut().find(|k| k.pattern == p) {
            Some(k) => {
                k.read |= read;
                k.write |= write;
            }
            None => self.keys.push(KeyPattern {
                pattern: p,
                read,
                write,
            }),
        }
    }

    pub fn flags(&self) -> Vec<&'static str> {
        let mut f = vec![if self.enabled { "on" } else { "off" }];
        if self.nopass {
            f.push("nopass");
        }
        f
    }

    pub fn password_hashes(&self) -> Vec<String> {
        self.passwords.iter().map(hex).collect()
    }

    pub fn commands_text(&self) -> String {
        if self.command_rules.is_empty() {
            return "-@all".into();
        }
        let mut rules = self.command_rules.clone();
        if !rules[0].starts_with("+@all") && !rules[0].starts_with("-@all") {
            rules.insert(0, "-@all".into());
        }
        rules.join(" ")
    }

    pub fn keys_text(&self) -> String {
        self.keys
            .iter()
            .map(|k| {
                let p = String::from_utf8_lossy(&k.pattern);
                match (k.read, k.write) {
                    (true, true) => format!("~{p}"),
                    (true, false) => format!("%R~{p}"),
                    _ => format!("%W~{p}"),
                }
            })
            .collect::<Vec<_>>()
            .join(" ")
    }

    pub fn channels_text(&self) -> String {
        self.channels
            .iter()
            .map(|c| format!("&{}", String::from_utf8_lossy(c)))
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// The user as ACL LIST and the aclfile describe it: rules that rebuild it.
    pub fn describe(&self) -> String {
        let mut parts = vec![format!("user {}", self.name)];
        parts.extend(self.flags().iter().map(|s| s.to_string()));
        parts.extend(self.password_hashes().iter().map(|h| format!("#{h}")));
        for t in [self.keys_text(), self.channels_text()] {
            if !t.is_empty() {
                parts.push(t);
            }
        }
        if self.channels.is_empty() {
            parts.push("resetchannels".into());
        }
        parts.push(self.commands_text());
        parts.join(" ")
    }
}

fn parse_hash(s: &str) -> Option<[u8; 32]> {
    if s.len() != 64
        || !s
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        return None;
    }
    let mut h = [0u8; 32];
    for (i, byte) in h.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&s[i * 2..i * 2 + 2], 16).ok()?;
    }
    Some(h)
}

fn hex(h: &[u8; 32]) -> String {
    h.iter().map(|b| format!("{b:02x}")).collect()
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Every user, by name.
#[derive(Clone, Debug)]
pub struct Users {
    pub users: BTreeMap<String, Arc<User>>,
}

impl Users {
    pub fn new(requirepass: Option<&str>) -> Users {
        let mut users = BTreeMap::new();
        users.insert(
            "default".to_string(),
            Arc::new(User::default_user(requirepass)),
        );
        Users { users }
    }

    /// The users an aclfile describes ("user <name> <rules...>" a line; # comments), with
    /// the default user as given or, if the file has none, as `requirepass` makes it.
    pub fn from_file_text(text: &str, requirepass: Option<&str>) -> Result<Users, String> {
        let mut users = Users::new(requirepass);
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let mut words = line.split_whitespace();
            if words.next() != Some("user") {
                return Err(format!("line {}: should start with user keyword", n + 1));
            }
            let name = words
                .next()
                .ok_or_else(|| format!("line {}: a user name is missing", n + 1))?;
            let mut u = User::new(name);
            for rule in words {
                u.apply(rule)
                    .map_err(|e| format!("line {}: '{rule}': {e}", n + 1))?;
            }
            users.users.insert(name.to_string(), Arc::new(u));
        }
        Ok(users)
    }

    pub fn to_file_text(&self) -> String {
        self.users.values().map(|u| u.describe() + "\n").collect()
    }
}

/// One ACL LOG entry: a denied command, key or authentication, counted while it repeats.
#[derive(Clone, Debug)]
pub struct LogEntry {
    pub count: u64,
    pub reason: &'static str,
    pub context: &'static str,
    pub object: String,
    pub username: String,
    pub client_info: String,
    pub entry_id: u64,
    pub created_ms: u64,
    pub updated_ms: u64,
}

/// The ACL log, newest first, the newest `max_len` kept; a denial like one logged within
/// the last 60 s (same reason, context, object and user) counts on that entry.
#[derive(Default)]
pub struct Log {
    pub entries: VecDeque<LogEntry>,
    next_id: u64,
}

impl Log {
    #[allow(clippy::too_many_arguments)]
    pub fn add(
        &mut self,
        reason: &'static str,
        context: &'static str,
        object: String,
        username: String,
        client_info: String,
        now_ms: u64,
        max_len: usize,
    ) {
        if let Some(e) = self.entries.iter_mut().find(|e| {
            e.reason == reason
                && e.context == context
                && e.object == object
                && e.username == username
                && now_ms.saturating_sub(e.updated_ms) < crate::limits::ACL_LOG_GROUP_MS
        }) {
            e.count += 1;
            e.updated_ms = now_ms;
            e.client_info = client_info;
            return;
        }
        self.entries.push_front(LogEntry {
            count: 1,
            reason,
            context,
            object,
            username,
            client_info,
            entry_id: self.next_id,
            created_ms: now_ms,
            updated_ms: now_ms,
        });
        self.next_id += 1;
        self.entries.truncate(max_len);
    }
}

/// The default user (it cannot be deleted).
pub fn default_of(users: &Users) -> Arc<User> {
    users
        .users
        .get("default")
        .cloned()
        .unwrap_or_else(|| Arc::new(User::default_user(None)))
}

/// Whether a command needs no permission check at all: those a connection may send before
/// it authenticates (AUTH, HELLO, QUIT, RESET), as Redis exempts its `no_auth` commands.
pub fn exempt(spec: &CommandSpec) -> bool {
    spec.has_flag("no_auth")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cmd::test_words as args;
    use crate::cmd::{lookup, Args};

    #[test]
    fn rules_build_a_user_and_checks_follow_them() {
        let mut u = User::new("alice");
        for r in ["on", ">secret", "~cache:*", "+get", "+set"] {
            u.apply(r).unwrap();
        }
        assert!(u.password_ok(b"secret") && !u.password_ok(b"nope"));
        let get = lookup(b"get").unwrap();
        let del = lookup(b"del").unwrap();
        let (b, r) = args(&["GET", "cache:1"]);
        assert_eq!(u.check(get, &Args::new(&b, &r)), Ok(()));
        let (b, r) = args(&["GET", "other"]);
        assert_eq!(
            u.check(get, &Args::new(&b, &r)),
            Err(Denied::Key(b"other".to_vec()))
        );
        let (b, r) = args(&["DEL", "cache:1"]);
        assert_eq!(
            u.check(del, &Args::new(&b, &r)),
            Err(Denied::Command("del"))
        );
        assert_eq!(
            u.describe(),
            format!(
                "user alice on #{} ~cache:* resetchannels -@all +get +set",
                hex(&Sha256::digest(b"secret").into())
            )
        );
        // Read-only keys: GET yes, SET no.
        let mut ro = User::new("ro");
        for r in ["on", "nopass", "%R~*", "+@all"] {
            ro.apply(r).unwrap();
        }
        let set = lookup(b"set").unwrap();
        let (b, r) = args(&["SET", "k", "v"]);
        assert_eq!(
            ro.check(set, &Args::new(&b, &r)),
            Err(Denied::Key(b"k".to_vec()))
        );
        let (b, r) = args(&["GET", "k"]);
        assert_eq!(ro.check(get, &Args::new(&b, &r)), Ok(()));
        // Categories.
        let mut w = User::new("w");
        w.apply("+@read").unwrap();
        w.apply("allkeys").unwrap();
        assert!(w.may_run(get) && !w.may_run(set));
        assert!(User::default_user(None).unrestricted());
        assert_eq!(u.apply("+nosuch"), Err("Unknown command".into()));
        assert_eq!(u.apply("+@nosuch"), Err("Unknown command category".into()));
        assert_eq!(u.apply("bogus"), Err("Syntax error".into()));
    }

    #[test]
    fn the_command_table_fits_the_bit_set() {
        assert!(TABLE.len() <= COMMAND_WORDS * 64);
        assert!(SUBCOMMANDS.len() <= SUBCOMMAND_WORDS * 64);
    }

    #[test]
    fn subcommand_rules_allow_and_deny_single_subcommands() {
        let config = lookup(b"config").unwrap();
        let check = |u: &User, words: &[&str]| {
            let (b, r) = args(words);
            u.check(config, &Args::new(&b, &r))
        };
        let mut u = User::new("ops");
        for r in ["on", "nopass", "allkeys", "+config|get"] {
            u.apply(r).unwrap();
        }
        assert_eq!(check(&u, &["CONFIG", "GET", "maxmemory"]), Ok(()));
        assert_eq!(check(&u, &["config", "get", "x"]), Ok(()));
        assert_eq!(
            check(&u, &["CONFIG", "SET", "maxmemory", "1"]),
            Err(Denied::Command("config|set"))
        );
        assert_eq!(
            check(&u, &["CONFIG", "NOSUCH"]),
            Err(Denied::Command("config"))
        );
        // The whole command, less one subcommand.
        let mut v = User::new("v");
        for r in ["on", "nopass", "allkeys", "+@all", "-config|set"] {
            v.apply(r).unwrap();
        }
        assert!(!v.unrestricted());
        assert_eq!(check(&v, &["CONFIG", "GET", "x"]), Ok(()));
        assert_eq!(
            check(&v, &["CONFIG", "SET", "x", "1"]),
            Err(Denied::Command("config|set"))
        );
        // A rule on the command resets its subcommands.
        v.apply("+config").unwrap();
        assert!(v.unrestricted());
        assert_eq!(
            v.commands_text(),
            "+@all -config|set +config",
            "the rules as given"
        );
        assert_eq!(u.apply("+config|nosuch"), Err("Unknown command".into()));
        assert_eq!(u.apply("+get|x"), Err("Unknown command".into()));
    }

    #[test]
    fn the_file_text_round_trips() {
        let text = "user default on nopass ~* &* +@all\nuser bob off #5e884898da28047151d0e56f8dc6292773603d0d6aabbdd62a11ef721d1542d8 %R~r:* resetchannels -@all +get\n";
        let users = Users::from_file_text(text, None).unwrap();
        let again = Users::from_file_text(&users.to_file_text(), None).unwrap();
        assert_eq!(users.to_file_text(), again.to_file_text());
        assert!(users.users["bob"].password_ok(b"password"));
        assert!(Users::from_file_text("nope x", None)
            .unwrap_err()
            .contains("line 1"));
    }
}
