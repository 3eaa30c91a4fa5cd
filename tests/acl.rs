//! ACL users: permissions on commands, categories and key patterns with Redis 7's NOPERM
//! errors; AUTH and HELLO AUTH as a user; requirepass as the default user's password; the
//! ACL log; the aclfile.

mod common;
use common::*;

fn err(s: &str) -> Resp {
    Resp::Error(s.into())
}

fn setup_alice(r: &mut Raw) {
    assert_eq!(
        r.cmd(&[
            "ACL",
            "SETUSER",
            "alice",
            "on",
            ">wonderland",
            "~cache:*",
            "+get",
            "+set"
        ]),
        Resp::ok()
    );
}

#[test]
fn a_user_limited_to_some_keys_and_commands_can_do_exactly_that() {
    let s = Server::with_cores(2);
    let mut admin = s.raw();
    setup_alice(&mut admin);
    let mut r = s.raw();
    assert_eq!(r.cmd(&["AUTH", "alice", "wonderland"]), Resp::ok());
    assert_eq!(
        r.cmd(&["ACL", "WHOAMI"]),
        err("NOPERM User alice has no permissions to run the 'acl|whoami' command")
    );
    assert_eq!(r.cmd(&["SET", "cache:1", "v"]), Resp::ok());
    assert_eq!(r.cmd(&["GET", "cache:1"]), Resp::bulk("v"));
    assert_eq!(
        r.cmd(&["GET", "other"]),
        err("NOPERM No permissions to access a key")
    );
    assert_eq!(
        r.cmd(&["SET", "other", "v"]),
        err("NOPERM No permissions to access a key")
    );
    assert_eq!(
        r.cmd(&["DEL", "cache:1"]),
        err("NOPERM User alice has no permissions to run the 'del' command")
    );
    assert_eq!(
        r.cmd(&["FLUSHALL"]),
        err("NOPERM User alice has no permissions to run the 'flushall' command")
    );
    // Inside MULTI the refusal aborts EXEC, as any refused command does.
    assert_eq!(
        r.cmd(&["MULTI"]),
        err("NOPERM User alice has no permissions to run the 'multi' command")
    );
    // The same through the redis crate, as a client library logs in.
    let client =
        redis::Client::open(format!("redis://alice:wonderland@127.0.0.1:{}/", s.port)).unwrap();
    let mut con = client.get_connection().unwrap();
    let v: String = redis::cmd("GET").arg("cache:1").query(&mut con).unwrap();
    assert_eq!(v, "v");
    let e = redis::cmd("GET")
        .arg("secret")
        .query::<Option<String>>(&mut con)
        .unwrap_err();
    assert_eq!(e.code(), Some("NOPERM"), "{e}");
    // Read-only patterns and categories.
    assert_eq!(
        admin.cmd(&[
            "ACL",
            "SETUSER",
            "reader",
            "on",
            "nopass",
            "%R~*",
            "+@read",
            "+@connection"
        ]),
        Resp::ok()
    );
    let mut reader = s.raw();
    assert_eq!(reader.cmd(&["AUTH", "reader", "anything"]), Resp::ok());
    assert_eq!(reader.cmd(&["GET", "cache:1"]), Resp::bulk("v"));
    assert_eq!(reader.cmd(&["PING"]), Resp::Simple("PONG".into()));
    assert_eq!(
        reader.cmd(&["SET", "cache:1", "x"]),
        err("NOPERM User reader has no permissions to run the 'set' command")
    );
    assert_eq!(admin.cmd(&["ACL", "SETUSER", "reader", "+set"]), Resp::ok());
    // A change applies to connections already open.
    assert_eq!(
        reader.cmd(&["SET", "cache:1", "x"]),
        err("NOPERM No permissions to access a key")
    );
    // DRYRUN says what would happen.
    assert_eq!(
        admin.cmd(&["ACL", "DRYRUN", "alice", "GET", "cache:9"]),
        Resp::ok()
    );
    assert_eq!(
        admin.cmd(&["ACL", "DRYRUN", "alice", "DEL", "cache:9"]),
        Resp::bulk("User alice has no permissions to run the 'del' command")
    );
    assert_eq!(
        admin.cmd(&["ACL", "DRYRUN", "alice", "GET", "x"]),
        Resp::bulk("User alice has no permissions to access the 'x' key")
    );
    assert_eq!(
        admin.cmd(&["ACL", "DRYRUN", "nobody", "GET", "x"]),
        err("ERR User 'nobody' not found")
    );
    assert_eq!(
        admin.cmd(&["ACL", "DRYRUN", "alice", "NOPE", "x"]),
        err("ERR Command 'NOPE' not found")
    );
}

#[test]
fn authentication_users_passwords_and_the_default_user() {
    let s = Server::start(1, &["--requirepass", "s3cret"]);
    let mut r = s.raw();
    assert_eq!(r.cmd(&["GET", "k"]), err("NOAUTH Authentication required."));
    assert_eq!(
        r.cmd(&["AUTH", "wrong"]),
        err("WRONGPASS invalid username-password pair or user is disabled.")
    );
    assert_eq!(r.cmd(&["AUTH", "default", "s3cret"]), Resp::ok());
    assert_eq!(r.cmd(&["ACL", "WHOAMI"]), Resp::bulk("default"));
    setup_alice(&mut r);
    assert_eq!(
        r.cmd(&["ACL", "SETUSER", "carol", "off", ">pw", "+@all", "~*"]),
        Resp::ok()
    );
    let mut c = s.raw();
    assert_eq!(
        c.cmd(&["AUTH", "carol", "pw"]),
        err("WRONGPASS invalid username-password pair or user is disabled.")
    );
    assert_eq!(
        c.cmd(&["AUTH", "alice", "nope"]),
        err("WRONGPASS invalid username-password pair or user is disabled.")
    );
    // HELLO AUTH logs in and switches protocol at once.
    match c.cmd(&["HELLO", "3", "AUTH", "alice", "wonderland"]) {
        Resp::Map(_) => {}
        other => panic!("{other:?}"),
    }
    // (RESP3 now: a missing key is Null.)
    assert_eq!(c.cmd(&["GET", "cache:x"]), Resp::Null);
    // requirepass is the default user's password: changing it changes the user.
    assert_eq!(r.cmd(&["CONFIG", "SET", "requirepass", "n3w"]), Resp::ok());
    let mut d = s.raw();
    assert_eq!(
        d.cmd(&["AUTH", "s3cret"]),
        err("WRONGPASS invalid username-password pair or user is disabled.")
    );
    assert_eq!(d.cmd(&["AUTH", "n3w"]), Resp::ok());
    let Resp::Array(get) = r.cmd(&["ACL", "GETUSER", "default"]) else {
        panic!()
    };
    assert_eq!(get[0], Resp::bulk("flags"));
    assert_eq!(get[1], Resp::Array(vec![Resp::bulk("on")]));
    assert_eq!(get[5], Resp::bulk("+@all"));
    // RESET goes back to the default user, which needs its password again.
    assert_eq!(c.cmd(&["RESET"]), Resp::Simple("RESET".into()));
    assert_eq!(c.cmd(&["GET", "k"]), err("NOAUTH Authentication required."));
    // An unauthenticated client gets only AUTH, HELLO and QUIT, and cannot send a large
    // argument (16 KiB at most before AUTH).
    let mut u = s.raw();
    assert_eq!(u.cmd(&["PING"]), err("NOAUTH Authentication required."));
    let big = "x".repeat(100_000);
    u.send(&encode_cmd(&[b"AUTH", big.as_bytes()]));
    assert!(matches!(u.read(), Resp::Error(e) if e.starts_with("ERR Protocol error")));
    assert!(u.is_closed());
    // Deleting a user ends its connections; the default user stays.
    assert_eq!(r.cmd(&["ACL", "SETUSER", "alice", "on"]), Resp::ok());
    let mut a = s.raw();
    assert_eq!(a.cmd(&["AUTH", "alice", "wonderland"]), Resp::ok());
    assert_eq!(r.cmd(&["ACL", "DELUSER", "alice", "ghost"]), Resp::Int(1));
    assert_eq!(
        a.cmd(&["GET", "cache:1"]),
        err("NOPERM user 'alice' was deleted")
    );
    assert!(a.is_closed());
    assert_eq!(
        r.cmd(&["ACL", "DELUSER", "default"]),
        err("ERR The 'default' user cannot be removed")
    );
    assert_eq!(
        r.cmd(&["ACL", "USERS"]),
        Resp::Array(vec![Resp::bulk("carol"), Resp::bulk("default")])
    );
}

#[test]
fn the_acl_log_cat_genpass_and_rule_errors() {
    let s = Server::with_cores(1);
    let mut admin = s.raw();
    setup_alice(&mut admin);
    let mut r = s.raw();
    assert_eq!(
        r.cmd(&["AUTH", "alice", "bad"]),
        err("WRONGPASS invalid username-password pair or user is disabled.")
    );
    assert_eq!(r.cmd(&["AUTH", "alice", "wonderland"]), Resp::ok());
    for _ in 0..3 {
        assert!(matches!(r.cmd(&["DEL", "cache:1"]), Resp::Error(_)));
    }
    assert!(matches!(r.cmd(&["GET", "secret"]), Resp::Error(_)));
    let Resp::Array(log) = admin.cmd(&["ACL", "LOG"]) else {
        panic!()
    };
    assert_eq!(log.len(), 3, "{log:?}");
    let field = |e: &Resp, k: &str| -> Resp {
        let Resp::Array(f) = e else { panic!("{e:?}") };
        f.chunks(2)
            .find(|p| p[0] == Resp::bulk(k))
            .unwrap_or_else(|| panic!("no {k}"))[1]
            .clone()
    };
    // Newest first: the key, then the command (three times, one entry), then the AUTH.
    assert_eq!(field(&log[0], "reason"), Resp::bulk("key"));
    assert_eq!(field(&log[0], "object"), Resp::bulk("secret"));
    assert_eq!(field(&log[1], "reason"), Resp::bulk("command"));
    assert_eq!(field(&log[1], "object"), Resp::bulk("del"));
    assert_eq!(field(&log[1], "count"), Resp::Int(3));
    assert_eq!(field(&log[2], "reason"), Resp::bulk("auth"));
    assert_eq!(field(&log[2], "username"), Resp::bulk("alice"));
    let Resp::Array(one) = admin.cmd(&["ACL", "LOG", "1"]) else {
        panic!()
    };
    assert_eq!(one.len(), 1);
    assert_eq!(field(&one[0], "entry-id"), field(&log[0], "entry-id"));
    assert_eq!(admin.cmd(&["ACL", "LOG", "RESET"]), Resp::ok());
    assert_eq!(admin.cmd(&["ACL", "LOG"]), Resp::Array(vec![]));

    let Resp::Array(cats) = admin.cmd(&["ACL", "CAT"]) else {
        panic!()
    };
    assert!(cats.contains(&Resp::bulk("dangerous")) && cats.contains(&Resp::bulk("string")));
    let Resp::Array(strings) = admin.cmd(&["ACL", "CAT", "string"]) else {
        panic!()
    };
    assert!(strings.contains(&Resp::bulk("get")) && !strings.contains(&Resp::bulk("del")));
    assert_eq!(
        admin.cmd(&["ACL", "CAT", "nope"]),
        err("ERR Unknown category 'nope'")
    );
    let Resp::Bulk(p) = admin.cmd(&["ACL", "GENPASS"]) else {
        panic!()
    };
    assert_eq!(p.len(), 64);
    let Resp::Bulk(p) = admin.cmd(&["ACL", "GENPASS", "32"]) else {
        panic!()
    };
    assert_eq!(p.len(), 8);

    assert_eq!(
        admin.cmd(&["ACL", "SETUSER", "x", "+nosuch"]),
        err("ERR Error in ACL SETUSER modifier '+nosuch': Unknown command")
    );
    assert_eq!(
        admin.cmd(&["ACL", "SETUSER", "x", "+@nosuch"]),
        err("ERR Error in ACL SETUSER modifier '+@nosuch': Unknown command category")
    );
    assert_eq!(
        admin.cmd(&["ACL", "SETUSER", "x", "bogus"]),
        err("ERR Error in ACL SETUSER modifier 'bogus': Syntax error")
    );
    // A failed SETUSER changes nothing.
    assert_eq!(admin.cmd(&["ACL", "GETUSER", "x"]), Resp::Nil);
    assert_eq!(
        admin.cmd(&["ACL", "SAVE"]).clone(),
        admin.cmd(&["ACL", "LOAD"])
    );
    assert!(
        matches!(admin.cmd(&["ACL", "SAVE"]), Resp::Error(e) if e.contains("not configured to use an ACL file"))
    );
}

#[test]
fn the_aclfile_is_loaded_at_start_saved_and_reloaded() {
    let dir = scratch_dir("aclfile");
    let path = dir.join("users.acl");
    std::fs::write(
        &path,
        "user bob on >builder ~b:* resetchannels -@all +get\n",
    )
    .unwrap();
    let p = path.display().to_string();
    let s = Server::start(1, &["--aclfile", &p]);
    let mut r = s.raw();
    let mut bob = s.raw();
    assert_eq!(bob.cmd(&["AUTH", "bob", "builder"]), Resp::ok());
    assert_eq!(bob.cmd(&["GET", "b:1"]), Resp::Nil);
    assert!(matches!(bob.cmd(&["SET", "b:1", "v"]), Resp::Error(e) if e.starts_with("NOPERM")));
    // SAVE writes every user; after a restart they are all there.
    setup_alice(&mut r);
    assert_eq!(r.cmd(&["ACL", "SAVE"]), Resp::ok());
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(
        text.contains("user alice on #") && text.contains("user bob on #"),
        "{text}"
    );
    assert!(
        !text.contains("wonderland") && !text.contains("builder"),
        "only hashes: {text}"
    );
    drop(r);
    drop(bob);
    drop(s);
    let s = Server::start(1, &["--aclfile", &p]);
    let mut a = s.raw();
    assert_eq!(a.cmd(&["AUTH", "alice", "wonderland"]), Resp::ok());
    // LOAD replaces the users with the file's; a broken file changes nothing.
    std::fs::write(&path, "user carol on nopass ~* +@all\n").unwrap();
    let mut r = s.raw();
    assert_eq!(r.cmd(&["ACL", "LOAD"]), Resp::ok());
    assert_eq!(
        r.cmd(&["ACL", "USERS"]),
        Resp::Array(vec![Resp::bulk("carol"), Resp::bulk("default")])
    );
    std::fs::write(&path, "user dave on +nosuchcommand\n").unwrap();
    assert!(
        matches!(r.cmd(&["ACL", "LOAD"]), Resp::Error(e) if e.contains("line 1") && e.contains("Unknown command"))
    );
    assert_eq!(
        r.cmd(&["ACL", "USERS"]),
        Resp::Array(vec![Resp::bulk("carol"), Resp::bulk("default")])
    );
    // A broken file stops the start, naming the line.
    drop(r);
    drop(a);
    drop(s);
    let text = refused_start(&["--aclfile", &p]);
    assert!(text.contains("ACL:") && text.contains("line 1"), "{text}");
}

#[test]
fn subcommand_rules_allow_config_get_and_not_config_set() {
    let s = Server::with_cores(1);
    let mut admin = s.raw();
    assert_eq!(
        admin.cmd(&[
            "ACL",
            "SETUSER",
            "ops",
            "on",
            ">pw",
            "+config|get",
            "+client|list"
        ]),
        Resp::ok()
    );
    assert_eq!(
        admin.cmd(&[
            "ACL",
            "SETUSER",
            "most",
            "on",
            ">pw",
            "allkeys",
            "+@all",
            "-config|set"
        ]),
        Resp::ok()
    );
    let mut ops = s.raw();
    assert_eq!(ops.cmd(&["AUTH", "ops", "pw"]), Resp::ok());
    assert_eq!(
        ops.cmd(&["CONFIG", "GET", "maxclients"]),
        Resp::Array(vec![Resp::bulk("maxclients"), Resp::bulk("10000")])
    );
    assert!(matches!(ops.cmd(&["CLIENT", "LIST"]), Resp::Bulk(_)));
    assert_eq!(
        ops.cmd(&["CONFIG", "SET", "maxclients", "10"]),
        err("NOPERM User ops has no permissions to run the 'config|set' command")
    );
    assert_eq!(
        ops.cmd(&["CLIENT", "KILL", "ID", "1"]),
        err("NOPERM User ops has no permissions to run the 'client|kill' command")
    );
    let mut most = s.raw();
    assert_eq!(most.cmd(&["AUTH", "most", "pw"]), Resp::ok());
    assert_eq!(most.cmd(&["SET", "k", "v"]), Resp::ok());
    assert!(matches!(
        most.cmd(&["CONFIG", "GET", "port"]),
        Resp::Array(_)
    ));
    assert_eq!(
        most.cmd(&["CONFIG", "SET", "maxclients", "10"]),
        err("NOPERM User most has no permissions to run the 'config|set' command")
    );
    // DRYRUN, the log and GETUSER name the subcommand.
    assert_eq!(
        admin.cmd(&["ACL", "DRYRUN", "ops", "CONFIG", "SET", "maxclients", "10"]),
        Resp::bulk("User ops has no permissions to run the 'config|set' command")
    );
    assert_eq!(
        admin.cmd(&["ACL", "DRYRUN", "ops", "CONFIG", "GET", "port"]),
        Resp::ok()
    );
    let Resp::Array(log) = admin.cmd(&["ACL", "LOG", "1"]) else {
        panic!()
    };
    let Resp::Array(entry) = &log[0] else {
        panic!()
    };
    let object = entry
        .chunks(2)
        .find(|p| p[0] == Resp::bulk("object"))
        .unwrap()[1]
        .clone();
    assert_eq!(object, Resp::bulk("config|set"));
    let Resp::Array(user) = admin.cmd(&["ACL", "GETUSER", "most"]) else {
        panic!()
    };
    let commands = user
        .chunks(2)
        .find(|p| p[0] == Resp::bulk("commands"))
        .unwrap()[1]
        .clone();
    assert_eq!(commands, Resp::bulk("+@all -config|set"));
    assert_eq!(
        admin.cmd(&["ACL", "SETUSER", "x", "+config|nosuch"]),
        err("ERR Error in ACL SETUSER modifier '+config|nosuch': Unknown command")
    );
}
