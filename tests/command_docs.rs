//! COMMAND DOCS reports each command's arguments in Redis 7's shape, so redis-cli can build
//! its hints and `help <command>` text from them.

mod common;
use common::*;

/// The pairs of a map reply: a RESP3 map, or a RESP2 flat array of key, value, ….
fn pairs(r: &Resp) -> Vec<(String, Resp)> {
    let bulk = |k: &Resp| match k {
        Resp::Bulk(b) => String::from_utf8(b.clone()).unwrap(),
        other => panic!("map key {other:?} is not a bulk string"),
    };
    match r {
        Resp::Map(p) => p.iter().map(|(k, v)| (bulk(k), v.clone())).collect(),
        Resp::Array(items) => {
            assert!(items.len() % 2 == 0, "odd flat map {items:?}");
            items
                .chunks(2)
                .map(|kv| (bulk(&kv[0]), kv[1].clone()))
                .collect()
        }
        other => panic!("{other:?} is not a map"),
    }
}

fn get(r: &Resp, key: &str) -> Option<Resp> {
    pairs(r).into_iter().find(|(k, _)| k == key).map(|(_, v)| v)
}

fn text(r: &Resp) -> String {
    match r {
        Resp::Bulk(b) => String::from_utf8(b.clone()).unwrap(),
        other => panic!("{other:?} is not a bulk string"),
    }
}

fn items(r: &Resp) -> Vec<Resp> {
    match r {
        Resp::Array(v) | Resp::Set(v) => v.clone(),
        other => panic!("{other:?} is not an array"),
    }
}

/// The docs of one command: `COMMAND DOCS name` answers a one-entry map.
fn docs(raw: &mut Raw, name: &str) -> Resp {
    let reply = raw.cmd(&["COMMAND", "DOCS", name]);
    let mut entries = pairs(&reply);
    assert_eq!(entries.len(), 1, "{reply:?}");
    let (got, doc) = entries.pop().unwrap();
    assert_eq!(got, name);
    doc
}

/// One argument map as `name:type` with its token, key index and flags, and its members.
fn describe(arg: &Resp) -> String {
    let fields = pairs(arg);
    let keys: Vec<&str> = fields.iter().map(|(k, _)| k.as_str()).collect();
    let order = [
        "name",
        "type",
        "key_spec_index",
        "token",
        "flags",
        "arguments",
    ];
    let mut expected: Vec<&str> = order.to_vec();
    expected.retain(|k| keys.contains(k));
    assert_eq!(keys, expected, "fields out of Redis's order in {arg:?}");
    let mut s = format!(
        "{}:{}",
        text(&get(arg, "name").unwrap()),
        text(&get(arg, "type").unwrap())
    );
    if let Some(t) = get(arg, "token") {
        s = format!("{} {s}", text(&t));
    }
    if let Some(i) = get(arg, "key_spec_index") {
        let Resp::Int(i) = i else {
            panic!("key_spec_index {i:?} is not an integer")
        };
        s = format!("{s}#{i}");
    }
    if let Some(flags) = get(arg, "flags") {
        let flags: Vec<String> = items(&flags)
            .iter()
            .map(|f| match f {
                Resp::Simple(f) => f.clone(),
                other => panic!("flag {other:?} is not a simple string"),
            })
            .collect();
        s = format!("{s}{{{}}}", flags.join(","));
    }
    if let Some(members) = get(arg, "arguments") {
        let m: Vec<String> = items(&members).iter().map(describe).collect();
        s = format!("{s}({})", m.join(" "));
    }
    s
}

fn arguments(doc: &Resp) -> Vec<String> {
    items(&get(doc, "arguments").expect("arguments"))
        .iter()
        .map(describe)
        .collect()
}

/// The parameter line redis-cli 7 builds from the arguments for its hints and `help`.
fn hint(args: &[Resp], sep: &str) -> String {
    let one = |a: &Resp| {
        let ty = text(&get(a, "type").unwrap());
        let flags: Vec<Resp> = get(a, "flags").map(|f| items(&f)).unwrap_or_default();
        let has = |f: &str| flags.contains(&Resp::Simple(f.into()));
        let mut token = get(a, "token").map(|t| text(&t)).unwrap_or_default();
        if !token.is_empty() && ty != "pure-token" {
            token.push(' ');
        }
        let members = || items(&get(a, "arguments").unwrap());
        let repeat = match ty.as_str() {
            "oneof" => hint(&members(), "|"),
            "block" => hint(&members(), " "),
            "pure-token" => String::new(),
            _ => text(&get(a, "name").unwrap()),
        };
        let mut s = format!("{token}{repeat}");
        if has("multiple") {
            let again = if has("multiple_token") {
                format!("{token}{repeat}")
            } else {
                repeat
            };
            s = format!("{s} [{again} ...]");
        }
        if has("optional") {
            s = format!("[{s}]");
        }
        s
    };
    args.iter().map(one).collect::<Vec<_>>().join(sep)
}

fn hint_of(doc: &Resp) -> String {
    hint(&items(&get(doc, "arguments").unwrap()), " ")
}

fn check_set_get_expire_scan(raw: &mut Raw) {
    let set = docs(raw, "set");
    assert_eq!(text(&get(&set, "group").unwrap()), "string");
    assert_eq!(text(&get(&set, "since").unwrap()), "1.0.0");
    assert_eq!(
        arguments(&set),
        [
            "key:key#0",
            "value:string",
            "condition:oneof{optional}(NX nx:pure-token XX xx:pure-token)",
            "GET get:pure-token{optional}",
            "expiration:oneof{optional}(EX seconds:integer PX milliseconds:integer \
             EXAT unix-time-seconds:unix-time PXAT unix-time-milliseconds:unix-time \
             KEEPTTL keepttl:pure-token)",
        ]
    );
    assert_eq!(
        hint_of(&set),
        "key value [NX|XX] [GET] [EX seconds|PX milliseconds|EXAT unix-time-seconds|\
         PXAT unix-time-milliseconds|KEEPTTL]"
    );

    let get_doc = docs(raw, "get");
    assert_eq!(arguments(&get_doc), ["key:key#0"]);
    assert_eq!(hint_of(&get_doc), "key");

    let expire = docs(raw, "expire");
    assert_eq!(
        arguments(&expire),
        [
            "key:key#0",
            "seconds:integer",
            "condition:oneof{optional}(NX nx:pure-token XX xx:pure-token \
             GT gt:pure-token LT lt:pure-token)",
        ]
    );
    assert_eq!(hint_of(&expire), "key seconds [NX|XX|GT|LT]");

    let scan = docs(raw, "scan");
    assert_eq!(
        arguments(&scan),
        [
            "cursor:integer",
            "MATCH pattern:pattern{optional}",
            "COUNT count:integer{optional}",
            "TYPE type:string{optional}",
        ]
    );
    assert_eq!(
        hint_of(&scan),
        "cursor [MATCH pattern] [COUNT count] [TYPE type]"
    );

    let mset = docs(raw, "mset");
    assert_eq!(
        arguments(&mset),
        ["key_value:block{multiple}(key:key#0 value:string)"]
    );
    assert_eq!(hint_of(&mset), "key value [key value ...]");
}

#[test]
fn docs_carry_redis_argument_structure_in_resp2() {
    let server = Server::with_cores(1);
    let mut raw = server.raw();
    check_set_get_expire_scan(&mut raw);
}

#[test]
fn docs_carry_redis_argument_structure_in_resp3() {
    let server = Server::with_cores(1);
    let mut raw = server.raw();
    assert!(matches!(raw.cmd(&["HELLO", "3"]), Resp::Map(_)));
    check_set_get_expire_scan(&mut raw);
    // RESP3 types: maps, a set of simple strings for flags, an integer key index.
    let set = docs(&mut raw, "set");
    assert!(matches!(set, Resp::Map(_)));
    let args = items(&get(&set, "arguments").unwrap());
    assert_eq!(get(&args[0], "key_spec_index"), Some(Resp::Int(0)));
    assert_eq!(
        get(&args[3], "flags"),
        Some(Resp::Set(vec![Resp::Simple("optional".into())]))
    );
}

#[test]
fn containers_report_subcommands_and_argless_commands_no_arguments() {
    let server = Server::with_cores(1);
    let mut raw = server.raw();
    let randomkey = docs(&mut raw, "randomkey");
    let keys: Vec<String> = pairs(&randomkey).into_iter().map(|(k, _)| k).collect();
    assert_eq!(keys, ["summary", "since", "group"]);

    let client = docs(&mut raw, "client");
    assert!(get(&client, "arguments").is_none());
    let subs = pairs(&get(&client, "subcommands").expect("subcommands"));
    let names: Vec<&str> = subs.iter().map(|(n, _)| n.as_str()).collect();
    for want in ["client|id", "client|list", "client|kill", "client|setname"] {
        assert!(names.contains(&want), "{want} missing from {names:?}");
    }
    let list = &subs.iter().find(|(n, _)| n == "client|list").unwrap().1;
    assert_eq!(text(&get(list, "group").unwrap()), "connection");
    assert_eq!(
        hint_of(list),
        "[TYPE NORMAL|MASTER|REPLICA|PUBSUB] [ID client-id [client-id ...]]"
    );
    let id = &subs.iter().find(|(n, _)| n == "client|id").unwrap().1;
    assert!(get(id, "arguments").is_none());

    // Every command's docs parse the same way (a whole-table reply in one go).
    let all = pairs(&raw.cmd(&["COMMAND", "DOCS"]));
    let count = raw.cmd(&["COMMAND", "COUNT"]);
    assert_eq!(Resp::Int(all.len() as i64), count);
    for (name, doc) in &all {
        if let Some(args) = get(doc, "arguments") {
            assert!(!hint(&items(&args), " ").is_empty(), "{name}");
        }
    }
}
