//! CLIENT, COMMAND and CONFIG.

use super::core::Core;
use super::mesh::BYPASS_LOCKS;
use super::node_cmds::valid_name;
use super::session::Session;
use crate::cmd::parse::{eq, int, text};
use crate::cmd::table::{CommandSpec, TABLE};
use crate::cmd::{errors, lookup, unknown_subcommand_error, Args};
use crate::config::{param, PARAMS};
use crate::resp::Out;
use std::rc::Rc;
use tessera_shards::glob;

fn help(o: &mut Out, lines: &[&str]) {
    o.array(lines.len());
    for l in lines {
        o.simple(l);
    }
}

const CLIENT_HELP: &[&str] = &[
    "CLIENT <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
    "GETNAME",
    "    Return the name of the current connection.",
    "ID",
    "    Return the ID of the current connection.",
    "INFO",
    "    Return information about the current client connection.",
    "KILL <ip:port>",
    "    Kill connection made from <ip:port>.",
    "KILL <option> <value> [<option> <value> [...]]",
    "    Kill connections. Options are: ID <client-id>, ADDR <ip:port>, LADDR <ip:port>,",
    "    TYPE (NORMAL|MASTER|REPLICA|PUBSUB), USER <username>, SKIPME (YES|NO), MAXAGE <seconds>.",
    "LIST [TYPE (NORMAL|MASTER|REPLICA|PUBSUB)] [ID <id> [...]]",
    "    Return information about client connections.",
    "SETINFO <option> <value>",
    "    Set client meta attributes: LIB-NAME or LIB-VER.",
    "SETNAME <name>",
    "    Assign the name <name> to the current connection.",
    "NO-EVICT (ON|OFF)",
    "    Accepted for compatibility: tessera does not evict clients, so every client is exempt.",
    "HELP",
    "    Prints this help.",
];

/// Which clients CLIENT KILL / CLIENT LIST select.
#[derive(Clone, Default)]
struct ClientFilter {
    ids: Option<Vec<u64>>,
    addr: Option<String>,
    laddr: Option<String>,
    /// The client type asked for: normal, replica, or one that never exists here (master,
    /// pubsub); `None`: any.
    kind: Option<ClientKind>,
    max_age_s: Option<u64>,
}

impl ClientFilter {
    fn new() -> Self {
        ClientFilter::default()
    }

    fn matches(&self, r: &super::core::ClientRecord) -> bool {
        self.kind.is_none_or(|k| match k {
            ClientKind::Normal => !r.replica,
            ClientKind::Replica => r.replica,
            ClientKind::Absent => false,
        }) && self.ids.as_ref().is_none_or(|ids| ids.contains(&r.id))
            && self.addr.as_ref().is_none_or(|a| *a == r.addr.to_string())
            && self
                .laddr
                .as_ref()
                .is_none_or(|a| *a == r.laddr.to_string())
            && self
                .max_age_s
                .is_none_or(|m| r.created.elapsed().as_secs() >= m)
    }
}

#[derive(Clone, Copy)]
enum ClientKind {
    Normal,
    /// A replica's stream (REPLSYNC).
    Replica,
    /// A type no connection here has (master, pubsub).
    Absent,
}

fn client_type_ok(t: &[u8]) -> Option<ClientKind> {
    if eq(t, "normal") {
        Some(ClientKind::Normal)
    } else if eq(t, "replica") || eq(t, "slave") {
        Some(ClientKind::Replica)
    } else if eq(t, "master") || eq(t, "pubsub") {
        Some(ClientKind::Absent)
    } else {
        None
    }
}

async fn client_lines(core: &Rc<Core>, filter: ClientFilter) -> String {
    let per_core = core
        .invoke_all(Some(BYPASS_LOCKS), move |c| {
            c.clients
                .borrow()
                .values()
                .map(|h| h.record.borrow().clone())
                .filter(|r| filter.matches(r))
                .map(|r| (r.id, r.line()))
                .collect::<Vec<_>>()
        })
        .await;
    let mut all: Vec<(u64, String)> = per_core.into_iter().flatten().collect();
    all.sort_by_key(|(id, _)| *id);
    all.into_iter().map(|(_, l)| l + "\n").collect()
}

pub async fn client(core: &Rc<Core>, s: &mut Session, args: Args<'_>, o: &mut Out<'_>) {
    let sub = args.get(1);
    let n = args.len();
    if eq(sub, "ID") {
        o.int(s.id as i64)
    } else if eq(sub, "SETNAME") {
        if !valid_name(args.get(2)) {
            return o
                .error("ERR Client names cannot contain spaces, newlines or special characters.");
        }
        s.record.borrow_mut().name = text(args.get(2));
        o.ok()
    } else if eq(sub, "GETNAME") {
        let name = s.record.borrow().name.clone();
        if name.is_empty() {
            o.null()
        } else {
            o.bulk(name.as_bytes())
        }
    } else if eq(sub, "INFO") {
        let line = s.record.borrow().line() + "\n";
        o.verbatim(&line)
    } else if eq(sub, "LIST") {
        let mut filter = ClientFilter::new();
        let mut i = 2;
        while i < n {
            if eq(args.get(i), "TYPE") && i + 1 < n {
                match client_type_ok(args.get(i + 1)) {
                    Some(k) => filter.kind = Some(k),
                    None => {
                        return o.error(&format!(
                            "ERR Unknown client type '{}'",
                            text(args.get(i + 1))
                        ))
                    }
                }
                i += 2;
            } else if eq(args.get(i), "ID") && i + 1 < n {
                let mut ids = Vec::new();
                for a in args.iter().skip(i + 1) {
                    match int(a) {
                        Some(id) if id > 0 => ids.push(id as u64),
                        _ => return o.error("ERR Invalid client ID"),
                    }
                }
                filter.ids = Some(ids);
                i = n;
            } else {
                return o.error(errors::SYNTAX);
            }
        }
        let lines = client_lines(core, filter).await;
        o.verbatim(&lines)
    } else if eq(sub, "KILL") {
        client_kill(core, s, args, o).await
    } else if eq(sub, "SETINFO") {
        let (attr, value) = (args.get(2), args.get(3));
        let field = if eq(attr, "LIB-NAME") {
            "lib-name"
        } else if eq(attr, "LIB-VER") {
            "lib-ver"
        } else {
            return o.error(&format!("ERR Unrecognized option '{}'", text(attr)));
        };
        if !valid_name(value) {
            return o.error(&format!(
                "ERR {field} cannot contain spaces, newlines or special characters."
            ));
        }
        let mut r = s.record.borrow_mut();
        if field == "lib-name" {
            r.lib_name = text(value);
        } else {
            r.lib_ver = text(value);
        }
        o.ok()
    } else if eq(sub, "NO-EVICT") {
        if eq(args.get(2), "ON") || eq(args.get(2), "OFF") {
            o.ok()
        } else {
            o.error(errors::SYNTAX)
        }
    } else if eq(sub, "HELP") {
        help(o, CLIENT_HELP)
    } else {
        o.error_bytes(&unknown_subcommand_error("CLIENT", sub))
    }
}

async fn client_kill(core: &Rc<Core>, s: &mut Session, args: Args<'_>, o: &mut Out<'_>) {
    let n = args.len();
    if n == 3 {
        // Old form: CLIENT KILL ip:port — exactly one client, or an error.
        let filter = ClientFilter {
            addr: Some(text(args.get(2))),
            ..ClientFilter::new()
        };
        let killed = kill_matching(core, None, filter).await;
        if killed == 0 {
            return o.error("ERR No such client");
        }
        if killed_self(s, &args) {
            s.closing = true;
        }
        return o.ok();
    }
    if n < 4 || n % 2 != 0 {
        return o.error(errors::SYNTAX);
    }
    let mut filter = ClientFilter::new();
    let mut skipme = true;
    for pair in (2..n).step_by(2) {
        let (k, v) = (args.get(pair), args.get(pair + 1));
        if eq(k, "ID") {
            match int(v) {
                Some(id) if id > 0 => filter.ids = Some(vec![id as u64]),
                _ => return o.error("ERR client-id should be greater than 0"),
            }
        } else if eq(k, "ADDR") {
            filter.addr = Some(text(v));
        } else if eq(k, "LADDR") {
            filter.laddr = Some(text(v));
        } else if eq(k, "TYPE") {
            match client_type_ok(v) {
                Some(k) => filter.kind = Some(k),
                None => return o.error(&format!("ERR Unknown client type '{}'", text(v))),
            }
        } else if eq(k, "USER") {
            if v != b"default" {
                return o.error(&format!("ERR No such user '{}'", text(v)));
            }
        } else if eq(k, "SKIPME") {
            if eq(v, "YES") {
                skipme = true;
            } else if eq(v, "NO") {
                skipme = false;
            } else {
                return o.error(errors::SYNTAX);
            }
        } else if eq(k, "MAXAGE") {
            match int(v) {
                Some(a) if a >= 0 => filter.max_age_s = Some(a as u64),
                _ => return o.error(errors::NOT_INTEGER),
            }
        } else {
            return o.error(errors::SYNTAX);
        }
    }
    let me = s.record.borrow().clone();
    let self_matches = filter.matches(&me);
    let killed = kill_matching(core, Some(s.id), filter).await;
    let killed = if !skipme && self_matches {
        s.closing = true;
        killed + 1
    } else {
        killed
    };
    o.int(killed as i64)
}

fn killed_self(s: &Session, args: &Args) -> bool {
    s.record.borrow().addr.to_string() == text(args.get(2))
}

async fn kill_matching(core: &Rc<Core>, skip: Option<u64>, filter: ClientFilter) -> usize {
    core.invoke_all(Some(BYPASS_LOCKS), move |c| {
        c.kill_clients(skip, |r| filter.matches(r))
    })
    .await
    .into_iter()
    .sum()
}

/// ACL categories as Redis derives them from a command's flags and group.
fn acl_categories(spec: &CommandSpec) -> Vec<String> {
    let mut cats = Vec::new();
    if spec.has_flag("write") {
        cats.push("@write");
    }
    if spec.has_flag("readonly") {
        cats.push("@read");
    }
    if spec.has_flag("admin") {
        cats.extend(["@admin", "@dangerous"]);
    }
    match spec.group {
        "string" => cats.push("@string"),
        "generic" => cats.push("@keyspace"),
        "transactions" => cats.push("@transaction"),
        "connection" => cats.push("@connection"),
        _ => {}
    }
    cats.push(if spec.has_flag("fast") {
        "@fast"
    } else {
        "@slow"
    });
    cats.into_iter().map(String::from).collect()
}

fn command_info(o: &mut Out, spec: &CommandSpec) {
    let subs: Vec<_> = crate::cmd::table::subcommands(spec.name).collect();
    info_entry(
        o,
        spec.name,
        spec.arity,
        spec,
        (spec.first_key, spec.last_key, spec.step),
    );
    // Subcommands, as Redis lists them: each an entry of its own that shares the
    // container's flags and categories. Only OBJECT's have a key, at position 2.
    o.array(subs.len());
    for sub in subs {
        let keys = if sub.args.contains(":key") {
            (2, 2, 1)
        } else {
            (0, 0, 0)
        };
        info_entry(o, sub.name, sub.arity, spec, keys);
        o.array(0);
    }
}

/// The first nine fields of a COMMAND INFO entry (the caller writes the tenth,
/// subcommands).
fn info_entry(o: &mut Out, name: &str, arity: i32, spec: &CommandSpec, keys: (i32, i32, i32)) {
    o.array(10);
    o.bulk(name.as_bytes());
    o.int(arity as i64);
    o.set(spec.flags.len());
    for f in spec.flags {
        o.simple(f);
    }
    o.int(keys.0 as i64);
    o.int(keys.1 as i64);
    o.int(keys.2 as i64);
    let cats = acl_categories(spec);
    o.set(cats.len());
    for c in &cats {
        o.simple(c);
    }
    o.array(0); // tips
    o.array(0); // key specifications: first/last/step above describe the keys
}

/// One command's entry in `COMMAND DOCS`, as Redis 7 writes it: its name, then a map of
/// summary, since, group, and "arguments" and "subcommands" when it has any.
fn command_docs(o: &mut Out, spec: &CommandSpec) {
    use crate::cmd::table::subcommands;
    o.bulk(spec.name.as_bytes());
    let subs: Vec<_> = subcommands(spec.name).collect();
    let args = doc_args(spec.name, spec.args);
    o.map(3 + usize::from(!args.is_empty()) + usize::from(!subs.is_empty()));
    doc_fields(o, spec.summary, spec.since, spec.group, &args);
    if !subs.is_empty() {
        o.bulk(b"subcommands");
        o.map(subs.len());
        for sub in subs {
            let args = doc_args(sub.name, sub.args);
            o.bulk(sub.name.as_bytes());
            o.map(3 + usize::from(!args.is_empty()));
            doc_fields(o, sub.summary, sub.since, spec.group, &args);
        }
    }
}

/// The parsed argument docs (the table's are checked by its tests, so none fails here).
fn doc_args(name: &str, syntax: &str) -> Vec<crate::cmd::docs::Arg> {
    crate::cmd::docs::parse(syntax).unwrap_or_else(|e| {
        debug_assert!(false, "{name}: bad argument docs {e}");
        Vec::new()
    })
}

fn doc_fields(
    o: &mut Out,
    summary: &str,
    since: &str,
    group: &str,
    args: &[crate::cmd::docs::Arg],
) {
    o.bulk(b"summary");
    o.bulk(summary.as_bytes());
    o.bulk(b"since");
    o.bulk(since.as_bytes());
    o.bulk(b"group");
    o.bulk(group.as_bytes());
    if !args.is_empty() {
        o.bulk(b"arguments");
        doc_arg_list(o, args);
    }
}

/// An argument list: an array of maps with name, type, key_spec_index, token, flags and
/// (for oneof and block) arguments, in Redis's order; flags are a set of simple strings.
fn doc_arg_list(o: &mut Out, args: &[crate::cmd::docs::Arg]) {
    o.array(args.len());
    for a in args {
        let flags = a.flags();
        o.map(
            2 + usize::from(a.key_spec_index.is_some())
                + usize::from(a.token.is_some())
                + usize::from(!flags.is_empty())
                + usize::from(!a.args.is_empty()),
        );
        o.bulk(b"name");
        o.bulk(a.name.as_bytes());
        o.bulk(b"type");
        o.bulk(a.kind.as_str().as_bytes());
        if let Some(i) = a.key_spec_index {
            o.bulk(b"key_spec_index");
            o.int(i as i64);
        }
        if let Some(t) = &a.token {
            o.bulk(b"token");
            o.bulk(t.as_bytes());
        }
        if !flags.is_empty() {
            o.bulk(b"flags");
            o.set(flags.len());
            flags.iter().for_each(|f| o.simple(f));
        }
        if !a.args.is_empty() {
            o.bulk(b"arguments");
            doc_arg_list(o, &a.args);
        }
    }
}

const COMMAND_HELP: &[&str] = &[
    "COMMAND <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
    "(no subcommand)",
    "    Return details about all commands.",
    "COUNT",
    "    Return the total number of commands in this server.",
    "LIST [FILTERBY (MODULE <module-name>|ACLCAT <category>|PATTERN <pattern>)]",
    "    Return a list of all commands in this server.",
    "INFO [<command-name> ...]",
    "    Return details about the given commands, or all of them.",
    "DOCS [<command-name> ...]",
    "    Return documentation details about the given commands, or all of them.",
    "HELP",
    "    Prints this help.",
];

pub fn command(args: Args, o: &mut Out) {
    if args.len() == 1 {
        o.array(TABLE.len());
        return TABLE.iter().for_each(|c| command_info(o, c));
    }
    let sub = args.get(1);
    if eq(sub, "COUNT") {
        o.int(TABLE.len() as i64)
    } else if eq(sub, "INFO") {
        if args.len() == 2 {
            o.array(TABLE.len());
            return TABLE.iter().for_each(|c| command_info(o, c));
        }
        o.array(args.len() - 2);
        for name in args.iter().skip(2) {
            match lookup(name) {
                Some(spec) => command_info(o, spec),
                None => o.null(),
            }
        }
    } else if eq(sub, "DOCS") {
        let specs: Vec<&CommandSpec> = if args.len() == 2 {
            TABLE.iter().collect()
        } else {
            args.iter().skip(2).filter_map(lookup).collect()
        };
        o.map(specs.len());
        specs.into_iter().for_each(|c| command_docs(o, c));
    } else if eq(sub, "LIST") {
        let names: Vec<&str> = match args.len() {
            2 => TABLE.iter().map(|c| c.name).collect(),
            5 if eq(args.get(2), "FILTERBY") => {
                let (kind, v) = (args.get(3), args.get(4));
                if eq(kind, "MODULE") {
                    Vec::new()
                } else if eq(kind, "ACLCAT") {
                    let want = format!("@{}", text(v).to_ascii_lowercase());
                    TABLE
                        .iter()
                        .filter(|c| acl_categories(c).contains(&want))
                        .map(|c| c.name)
                        .collect()
                } else if eq(kind, "PATTERN") {
                    TABLE
                        .iter()
                        .filter(|c| glob::matches(&v.to_ascii_lowercase(), c.name.as_bytes()))
                        .map(|c| c.name)
                        .collect()
                } else {
                    return o.error(errors::SYNTAX);
                }
            }
            _ => return o.error(errors::SYNTAX),
        };
        o.array(names.len());
        names.iter().for_each(|n| o.bulk(n.as_bytes()));
    } else if eq(sub, "HELP") {
        help(o, COMMAND_HELP)
    } else {
        o.error_bytes(&unknown_subcommand_error("COMMAND", sub))
    }
}

const CONFIG_HELP: &[&str] = &[
    "CONFIG <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
    "GET <pattern>",
    "    Return parameters matching the glob-like <pattern> and their values.",
    "SET <directive> <value>",
    "    Set the configuration <directive> to <value>.",
    "RESETSTAT",
    "    Reset statistics reported by the INFO command.",
    "HELP",
    "    Prints this help.",
];

pub async fn config(core: &Rc<Core>, args: Args<'_>, o: &mut Out<'_>) {
    let sub = args.get(1);
    if eq(sub, "GET") {
        let cfg = core.config.borrow().clone();
        let mut found: Vec<(&str, String)> = Vec::new();
        for pattern in args.iter().skip(2) {
            let pattern = pattern.to_ascii_lowercase();
            for p in PARAMS {
                if glob::matches(&pattern, p.name.as_bytes())
                    && !found.iter().any(|(n, _)| *n == p.name)
                {
                    found.push((p.name, (p.get)(&cfg)));
                }
            }
        }
        o.map(found.len());
        for (name, value) in found {
            o.bulk(name.as_bytes());
            o.bulk(value.as_bytes());
        }
    } else if eq(sub, "SET") {
        if args.len() % 2 != 0 {
            return o.error(errors::SYNTAX);
        }
        let mut cfg = core.config.borrow().clone();
        let mut changes = Vec::new();
        for pair in (2..args.len()).step_by(2) {
            let name = text(args.get(pair));
            let Some(p) = param(&name) else {
                return o.error(&format!(
                    "ERR Unknown option or number of arguments for CONFIG SET - '{name}'"
                ));
            };
            if !p.mutable {
                return o.error(&format!("ERR CONFIG SET failed (possibly related to argument '{}') - can't set immutable config", p.name));
            }
            if let Err(e) = (p.set)(&mut cfg, &text(args.get(pair + 1))) {
                return o.error(&format!(
                    "ERR CONFIG SET failed (possibly related to argument '{}') - {e}",
                    p.name
                ));
            }
            let shown = if matches!(p.name, "requirepass" | "masterauth") {
                "(redacted)".to_string()
            } else {
                (p.get)(&cfg)
            };
            changes.push((p.name, shown));
        }
        // New TLS settings take effect for new connections once they make a server
        // configuration; until then nothing changes.
        if let Some((name, _)) = changes.iter().find(|(n, _)| super::tls::PARAMS.contains(n)) {
            let server = (cfg.tls_port != 0).then(|| super::tls::server_config(&cfg));
            let client = super::tls::dials_tls(&cfg).then(|| super::tls::client_config(&cfg));
            match (server.transpose(), client.transpose()) {
                (Ok(server), Ok(client)) => {
                    if server.is_some() {
                        core.node.tls.store(server);
                    }
                    core.node.tls_client.store(client);
                }
                (Err(e), _) | (_, Err(e)) => {
                    tracing::warn!("CONFIG SET could not update TLS: {e}");
                    return o.error(&format!(
                        "ERR CONFIG SET failed (possibly related to argument '{name}') - Unable to update TLS configuration: {e}"
                    ));
                }
            }
        }
        // requirepass is the default user's password (as Redis: resetpass, then the new one,
        // or nopass when it is empty).
        if changes.iter().any(|(n, _)| *n == "loglevel") {
            if let Err(e) = crate::logging::set_level(&cfg.loglevel) {
                return o.error(&format!(
                    "ERR CONFIG SET failed (possibly related to argument 'loglevel') - {e}"
                ));
            }
        }
        if changes.iter().any(|(n, _)| *n == "requirepass") {
            let users = core.node.acl.load();
            let mut default = (*super::acl::default_of(&users)).clone();
            let rules = match &cfg.requirepass {
                Some(p) => vec!["resetpass".to_string(), format!(">{p}")],
                None => vec!["nopass".to_string()],
            };
            for r in rules {
                default.apply(&r).expect("valid password rule");
            }
            let mut next = (**users).clone();
            next.users
                .insert("default".into(), std::sync::Arc::new(default));
            core.node.set_users(next);
        }
        for (name, value) in changes {
            tracing::info!("CONFIG SET {name} {value}");
        }
        core.invoke_all(Some(BYPASS_LOCKS), move |c| {
            let was_appending = c.config.borrow().appendonly;
            *c.config.borrow_mut() = cfg.clone();
            c.apply_memory_config();
            super::metrics::set_latency_threshold(cfg.latency_monitor_threshold);
            match (was_appending, cfg.appendonly) {
                (false, true) => {
                    // A first log and a rewrite to give it a base of the data there is.
                    let c = c.rc();
                    glommio::spawn_local(async move {
                        if let Err(e) = super::aof::start(&c, None).await {
                            tracing::warn!(core = c.id, "appendonly could not start: {e}");
                        }
                    })
                    .detach();
                }
                (true, false) => super::aof::stop(c),
                _ => {}
            }
        })
        .await;
        o.ok()
    } else if eq(sub, "RESETSTAT") {
        core.invoke_all(Some(BYPASS_LOCKS), |c| {
            c.stats.set(Default::default());
            c.shard.borrow_mut().reset_stats();
            super::metrics::reset();
        })
        .await;
        o.ok()
    } else if eq(sub, "HELP") {
        help(o, CONFIG_HELP)
    } else {
        o.error_bytes(&unknown_subcommand_error("CONFIG", sub))
    }
}
