//! Clusters of real nodes on 127.0.x.y: formed with tessera-ctl's `create`, read and written
//! by the `redis` crate's cluster client and by plain clients, a node killed with SIGKILL
//! and restarted, and (as root, with iptables) a partition that splits the view and heals.
//!
//! Each test has its own 127.0.N.0/24 so tests running at once never share an address.
//! Every wait is bounded by a deadline; the times measured are printed.

mod common;
use common::*;
use std::collections::HashMap;
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Membership settings for the tests, the defaults: a probe every 200 ms, dead 2 s after
/// suspicion. (Tighter settings, 100 ms and 1 s, detect faster but under this suite's load —
/// six debug-build nodes and their clients on two CPUs — probes go unanswered long enough
/// for false suspicions to ripen into false deaths.)
const PROBE_MS: &str = "200";
const SUSPECT_MS: &str = "2000";
/// The tests run one at a time: a dozen debug-build nodes and their clients at once on a
/// two-CPU machine starve the control cores enough for false suspicions.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner())
}

/// Bound on any convergence a test waits for.
const CONVERGE: Duration = Duration::from_secs(30);

struct Node {
    ip: String,
    port: u16,
    dir: PathBuf,
    log: PathBuf,
    child: Option<Child>,
    extra: Vec<String>,
}

/// A port free on `ip` whose bus port (+10000) is free too.
fn free_port_pair(ip: &str) -> u16 {
    for _ in 0..100 {
        let l = TcpListener::bind((ip, 0)).expect("bind an ephemeral port");
        let port = l.local_addr().unwrap().port();
        if port < 55_000 && TcpListener::bind((ip, port + 10_000)).is_ok() {
            return port;
        }
    }
    panic!("no free port pair on {ip}");
}

impl Node {
    fn start(ip: &str, tag: &str) -> Node {
        Node::start_with(ip, tag, &[])
    }

    fn start_with(ip: &str, tag: &str, extra: &[&str]) -> Node {
        let port = free_port_pair(ip);
        let dir =
            std::env::temp_dir().join(format!("tessera-cluster-{tag}-{ip}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        // (Not `with_extension`: the address's dots would make every node's log one file.)
        let log = PathBuf::from(format!("{}.log", dir.display()));
        let mut node = Node {
            ip: ip.to_string(),
            port,
            dir,
            log,
            child: None,
            extra: extra.iter().map(|s| s.to_string()).collect(),
        };
        node.spawn();
        node
    }

    /// Starts (or restarts) the process on the node's port and directory.
    fn spawn(&mut self) {
        let logfile = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_tessera"))
            .args(["--bind", &self.ip, "--port", &self.port.to_string()])
            .args(["--cores", "1", "--save", "", "--cluster-enabled", "yes"])
            .args(["--cluster-probe-interval-ms", PROBE_MS])
            .args(["--cluster-suspect-timeout-ms", SUSPECT_MS])
            .args(["--dir", &self.dir.display().to_string()])
            .args(&self.extra)
            .stdout(Stdio::null())
            .stderr(logfile)
            .spawn()
            .expect("spawn tessera");
        self.child = Some(child);
        // Up when it answers PING. (Just after a kill -9 the old process's listener can
        // outlive it for a moment, io_uring tearing down late: a connection that lands there
        // is reset, so a bare connect is not proof.)
        let deadline = Instant::now() + START_DEADLINE;
        while Instant::now() < deadline {
            use std::io::{Read, Write};
            if let Ok(mut s) = std::net::TcpStream::connect((self.ip.as_str(), self.port)) {
                s.set_read_timeout(Some(Duration::from_secs(2))).ok();
                let mut buf = [0u8; 16];
                if s.write_all(b"PING\r\n").is_ok() && s.read(&mut buf).is_ok_and(|n| n > 0) {
                    return;
                }
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("node {} did not start: {}", self.addr(), self.log_text());
    }

    fn addr(&self) -> String {
        format!("{}:{}", self.ip, self.port)
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn raw(&self) -> Raw {
        Raw::connect_addr((self.ip.as_str(), self.port))
    }

    fn cmd(&self, args: &[&str]) -> Resp {
        self.raw().cmd(args)
    }

    fn text(&self, args: &[&str]) -> String {
        match self.cmd(args) {
            Resp::Bulk(b) => String::from_utf8(b).unwrap(),
            other => panic!("{args:?} on {} replied {other:?}", self.addr()),
        }
    }

    /// CLUSTER INFO as fields.
    fn info(&self) -> HashMap<String, String> {
        self.text(&["CLUSTER", "INFO"])
            .lines()
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.to_string(), v.trim().to_string()))
            .collect()
    }

    /// CLUSTER NODES: per node address, its flags and slot count.
    fn nodes(&self) -> HashMap<String, (String, usize)> {
        self.text(&["CLUSTER", "NODES"])
            .lines()
            .map(|l| {
                let f: Vec<&str> = l.split(' ').collect();
                let addr = f[1].split('@').next().unwrap().to_string();
                let slots = f[8..]
                    .iter()
                    .map(|r| match r.split_once('-') {
                        Some((a, b)) => {
                            b.parse::<usize>().unwrap() - a.parse::<usize>().unwrap() + 1
                        }
                        None => 1,
                    })
                    .sum();
                (addr, (f[2].to_string(), slots))
            })
            .collect()
    }

    /// Which slots this node owns, from its own line of CLUSTER NODES.
    fn my_slots(&self) -> Vec<bool> {
        let mut held = vec![false; 16384];
        let text = self.text(&["CLUSTER", "NODES"]);
        let mine = text.lines().find(|l| l.contains("myself")).unwrap();
        for r in mine.split(' ').skip(8) {
            let (a, b) = r.split_once('-').unwrap_or((r, r));
            let (a, b) = (a.parse::<usize>().unwrap(), b.parse::<usize>().unwrap());
            held[a..=b].fill(true);
        }
        held
    }

    fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill9();
        if std::thread::panicking() {
            let log = self.log_text();
            let tail: Vec<&str> = log.lines().rev().take(30).collect();
            eprintln!("--- {} log (last 30 lines, newest first):", self.addr());
            for l in tail {
                eprintln!("{l}");
            }
        }
        let _ = std::fs::remove_dir_all(&self.dir);
        let _ = std::fs::remove_file(&self.log);
    }
}

/// `n` nodes on 127.0.`net`.1..=n, formed into a cluster by tessera-ctl's `create`.
fn cluster(n: usize, net: u8, tag: &str) -> Vec<Node> {
    cluster_with(n, net, tag, &[])
}

/// [`cluster`], every node started with `extra` arguments.
fn cluster_with(n: usize, net: u8, tag: &str, extra: &[&str]) -> Vec<Node> {
    let nodes: Vec<Node> = (1..=n)
        .map(|i| Node::start_with(&format!("127.0.{net}.{i}"), tag, extra))
        .collect();
    form(nodes)
}

/// Forms started `nodes` into a cluster with tessera-ctl's `create`.
fn form(nodes: Vec<Node>) -> Vec<Node> {
    let addrs: Vec<tessera_ctl::cmd::NodeAddr> =
        nodes.iter().map(|n| n.addr().parse().unwrap()).collect();
    let mut out = Vec::new();
    let outcome = tessera_ctl::cmd::create(&addrs, CONVERGE, &mut out);
    let text = String::from_utf8_lossy(&out);
    assert!(
        matches!(outcome, Ok(tessera_ctl::cmd::Outcome::Ok)),
        "tessera-ctl create: {outcome:?}\n{text}\n{}",
        nodes[0].log_text()
    );
    assert!(text.contains("All 16384 slots covered."), "{text}");
    nodes
}

/// Waits until `cond` holds, polling every 20 ms; returns how long it took.
fn wait_for(what: &str, within: Duration, cond: impl FnMut() -> bool) -> Duration {
    wait_or_show(what, within, &[], cond)
}

/// As [`wait_for`], showing what `nodes` think when it times out.
fn wait_or_show(
    what: &str,
    within: Duration,
    nodes: &[&Node],
    mut cond: impl FnMut() -> bool,
) -> Duration {
    let start = Instant::now();
    while !cond() {
        if start.elapsed() >= within {
            let views: Vec<String> = nodes
                .iter()
                .map(|n| {
                    format!(
                        "{}:\n{}{}",
                        n.addr(),
                        n.text(&["CLUSTER", "INFO"]),
                        n.text(&["CLUSTER", "NODES"])
                    )
                })
                .collect();
            panic!("not within {within:?}: {what}\n{}", views.join("\n"));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    start.elapsed()
}

/// One key per slot: `key_for_slot[s]` hashes to slot `s`.
fn key_per_slot() -> Vec<String> {
    let mut keys: Vec<Option<String>> = vec![None; 16384];
    let mut left = 16384;
    let mut i = 0u64;
    while left > 0 {
        let k = format!("k{i}");
        let s = tessera::slot::key_slot(k.as_bytes()) as usize;
        if keys[s].is_none() {
            keys[s] = Some(k);
            left -= 1;
        }
        i += 1;
    }
    keys.into_iter().map(Option::unwrap).collect()
}

fn cluster_client(nodes: &[Node]) -> redis::cluster::ClusterConnection {
    let urls: Vec<String> = nodes
        .iter()
        .map(|n| format!("redis://{}/", n.addr()))
        .collect();
    redis::cluster::ClusterClient::new(urls)
        .unwrap()
        .get_connection()
        .expect("a cluster connection")
}

/// A plain client on the first node writes every slot (forwarding does the rest) and the
/// cluster client reads them all from their owners; then the cluster client writes every
/// slot and a plain client on the last node reads them.
fn every_slot_both_ways(nodes: &[Node], keys: &[String]) {
    let mut plain = nodes[0].raw();
    plain.pipeline(
        0..keys.len(),
        |i| encode_cmd(&[b"SET", keys[i].as_bytes(), format!("v{i}").as_bytes()]),
        |i, r| assert_eq!(r, Resp::ok(), "SET {}", keys[i]),
    );
    let mut cc = cluster_client(nodes);
    for (i, k) in keys.iter().enumerate() {
        let v: Option<String> = redis::cmd("GET").arg(k).query(&mut cc).unwrap();
        assert_eq!(v.as_deref(), Some(format!("v{i}").as_str()), "GET {k}");
    }
    for (i, k) in keys.iter().enumerate() {
        let _: () = redis::cmd("SET")
            .arg(k)
            .arg(format!("w{i}"))
            .query(&mut cc)
            .unwrap();
    }
    let mut plain = nodes[nodes.len() - 1].raw();
    plain.pipeline(
        0..keys.len(),
        |i| encode_cmd(&[b"GET", keys[i].as_bytes()]),
        |i, r| assert_eq!(r, Resp::bulk(&format!("w{i}")), "GET {}", keys[i]),
    );
}

#[test]
fn three_nodes_serve_every_slot_detect_a_kill_and_take_it_back() {
    let _serial = serial();
    let mut nodes = cluster(3, 21, "three");
    for n in &nodes {
        let info = n.info();
        assert_eq!(info["cluster_state"], "ok", "{}", n.addr());
        assert_eq!(info["cluster_slots_assigned"], "16384");
        assert_eq!(info["cluster_known_nodes"], "3");
        assert_eq!(info["cluster_current_epoch"], "1");
        assert!(n.text(&["INFO", "cluster"]).contains("cluster_enabled:1"));
    }

    let keys = key_per_slot();
    every_slot_both_ways(&nodes, &keys);
    let mut cc = cluster_client(&nodes);
    // The cluster client writes, a plain client on another node reads.
    let _: () = redis::cmd("SET")
        .arg("{user1}.a")
        .arg("x")
        .query(&mut cc)
        .unwrap();
    assert_eq!(nodes[2].cmd(&["GET", "{user1}.a"]), Resp::bulk("x"));
    // Keys on several nodes fan out for a plain client.
    let mut r = nodes[1].raw();
    assert_eq!(
        r.cmd(&["MSET", &keys[0], "a", &keys[8000], "b", &keys[16000], "c"]),
        Resp::ok()
    );
    assert_eq!(
        r.cmd(&["MGET", &keys[16000], "nope", &keys[0], &keys[8000]]),
        Resp::Array(vec![
            Resp::bulk("c"),
            Resp::Nil,
            Resp::bulk("a"),
            Resp::bulk("b")
        ])
    );
    assert_eq!(
        r.cmd(&["EXISTS", &keys[0], &keys[8000], "nope"]),
        Resp::Int(2)
    );
    assert_eq!(r.cmd(&["DEL", &keys[0], &keys[8000]]), Resp::Int(2));
    // SELECT other than 0 is refused, as in Redis Cluster.
    assert_eq!(
        r.cmd(&["SELECT", "1"]),
        Resp::err("ERR SELECT is not allowed in cluster mode")
    );

    // A transaction runs on one node: a key elsewhere is refused when queued or watched.
    let held = nodes[0].my_slots();
    let foreign = keys
        .iter()
        .find(|k| !held[tessera::slot::key_slot(k.as_bytes()) as usize])
        .unwrap();
    let mut t = nodes[0].raw();
    let Resp::Error(e) = t.cmd(&["WATCH", foreign]) else {
        panic!("WATCH of a key on another node")
    };
    assert!(e.starts_with("MOVED "), "{e}");
    assert_eq!(t.cmd(&["MULTI"]), Resp::ok());
    let Resp::Error(e) = t.cmd(&["GET", foreign]) else {
        panic!("a queued command for another node")
    };
    assert!(e.starts_with("MOVED "), "{e}");
    assert_eq!(
        t.cmd(&["EXEC"]),
        Resp::err("EXECABORT Transaction discarded because of previous errors.")
    );

    // Redirect mode answers as Redis Cluster does.
    assert_eq!(
        nodes[0].cmd(&["CONFIG", "SET", "cluster-routing", "redirect"]),
        Resp::ok()
    );
    let view = nodes[0].nodes();
    let mut r = nodes[0].raw();
    let mut seen_moved = false;
    for (s, k) in keys.iter().enumerate().step_by(97) {
        match r.cmd(&["GET", k]) {
            Resp::Error(e) => {
                let want = e.strip_prefix("MOVED ").expect("a MOVED error");
                let (slot, addr) = want.split_once(' ').unwrap();
                assert_eq!(slot, s.to_string());
                assert!(view.contains_key(addr) && addr != nodes[0].addr(), "{e}");
                seen_moved = true;
            }
            // (keys[0] was deleted above)
            Resp::Bulk(_) | Resp::Nil => {}
            other => panic!("GET {k}: {other:?}"),
        }
    }
    assert!(seen_moved);
    assert_eq!(
        r.cmd(&["MGET", "a", "b"]),
        Resp::err("CROSSSLOT Keys in request don't hash to the same slot")
    );
    assert_eq!(r.cmd(&["CLUSTER", "KEYSLOT", "foo"]), Resp::Int(12182));
    assert_eq!(
        r.cmd(&["CLUSTER", "COUNTKEYSINSLOT", "16384"]),
        Resp::err("ERR Invalid slot")
    );

    // Garbage on the bus port closes that link only.
    {
        use std::io::{Read, Write};
        let mut bus =
            std::net::TcpStream::connect((nodes[1].ip.as_str(), nodes[1].port + 10_000)).unwrap();
        bus.set_read_timeout(Some(REPLY_DEADLINE)).unwrap();
        bus.write_all(b"GET / HTTP/1.1\r\n\r\n").unwrap();
        let mut buf = [0u8; 64];
        assert_eq!(bus.read(&mut buf).unwrap(), 0, "the node closes the link");
    }
    assert_eq!(nodes[1].cmd(&["PING"]), Resp::Simple("PONG".into()));

    // kill -9 node 3: the others suspect it (fail?), then declare it dead (fail), then
    // take its slots under epoch 2.
    let gone = nodes[2].addr();
    let id = nodes[2].text(&["CLUSTER", "MYID"]);
    nodes[2].kill9();
    let killed = Instant::now();
    let flags = |n: &Node| {
        n.nodes()
            .get(&gone)
            .map(|f| f.0.clone())
            .unwrap_or_default()
    };
    wait_for("pdead seen", CONVERGE, || {
        nodes[..2].iter().all(|n| flags(n).contains("fail"))
    });
    let pdead = killed.elapsed();
    wait_for("dead seen", CONVERGE, || {
        nodes[..2]
            .iter()
            .all(|n| flags(n).split(',').any(|f| f == "fail"))
    });
    let dead = killed.elapsed();
    wait_for("the slots re-placed", CONVERGE, || {
        nodes[..2].iter().all(|n| {
            let i = n.info();
            i["cluster_state"] == "ok" && i["cluster_current_epoch"] == "2"
        })
    });
    let replaced = killed.elapsed();
    eprintln!(
        "3 nodes, kill -9: suspected (fail?) by both after {pdead:?}, dead (fail) after {dead:?}, slots re-placed after {replaced:?}"
    );
    assert_eq!(nodes[0].nodes()[&gone].1, 0, "the dead node holds no slots");
    // Every slot is served again (the dead node's keys are gone: a cache refills).
    let v: Option<String> = redis::cmd("GET")
        .arg(&keys[1])
        .query(&mut cluster_client(&nodes[..2]))
        .unwrap();
    assert!(v.is_none() || v.as_deref() == Some("w1"));
    let mut plain = nodes[0].raw();
    assert_eq!(
        plain.cmd(&["CONFIG", "SET", "cluster-routing", "forward"]),
        Resp::ok()
    );
    plain.pipeline(
        (0..keys.len()).step_by(7),
        |i| encode_cmd(&[b"SET", keys[i].as_bytes(), b"again"]),
        |i, r| assert_eq!(r, Resp::ok(), "SET {} after the kill", keys[i]),
    );

    // Restart it: same id (nodes.conf), alive again everywhere, its share back (epoch 3).
    nodes[2].spawn();
    let back = wait_for("the node rejoined with slots", CONVERGE, || {
        nodes.iter().all(|n| {
            let i = n.info();
            i["cluster_state"] == "ok"
                && i["cluster_current_epoch"] == "3"
                && n.nodes()
                    .values()
                    .all(|(f, slots)| !f.contains("fail") && *slots > 4000)
        })
    });
    eprintln!("3 nodes, restart: rejoined with its share after {back:?}");
    assert_eq!(nodes[2].text(&["CLUSTER", "MYID"]), id);
    let mut cc = cluster_client(&nodes);
    for k in keys.iter().step_by(101) {
        let _: () = redis::cmd("SET").arg(k).arg("last").query(&mut cc).unwrap();
        let v: String = redis::cmd("GET").arg(k).query(&mut cc).unwrap();
        assert_eq!(v, "last");
    }
}

#[test]
fn six_nodes_form_and_detect_a_kill() {
    let _serial = serial();
    let mut nodes = cluster(6, 22, "six");
    for n in &nodes {
        let info = n.info();
        assert_eq!(info["cluster_state"], "ok");
        assert_eq!(info["cluster_size"], "6");
        let counts: Vec<usize> = n.nodes().values().map(|v| v.1).collect();
        assert!(
            counts.iter().all(|&c| (2000..3500).contains(&c)),
            "{counts:?}"
        );
    }
    every_slot_both_ways(&nodes, &key_per_slot());
    let mut cc = cluster_client(&nodes);
    for i in 0..50 {
        let _: () = redis::cmd("SET")
            .arg(format!("key{i}"))
            .arg(i)
            .query(&mut cc)
            .unwrap();
    }
    // A plain client on every node reads keys from all nodes with one MGET.
    let keys: Vec<String> = (0..50).map(|i| format!("key{i}")).collect();
    for n in &nodes {
        let mut args = vec!["MGET"];
        args.extend(keys.iter().map(String::as_str));
        let Resp::Array(vals) = n.cmd(&args) else {
            panic!("MGET on {}", n.addr())
        };
        let want: Vec<Resp> = (0..50).map(|i| Resp::bulk(&i.to_string())).collect();
        assert_eq!(vals, want);
    }
    let gone = nodes[4].addr();
    nodes[4].kill9();
    let killed = Instant::now();
    let alive: Vec<&Node> = nodes.iter().filter(|n| n.addr() != gone).collect();
    let dead = wait_for("all five see it dead", CONVERGE, || {
        alive.iter().all(|n| {
            n.nodes()
                .get(&gone)
                .is_some_and(|f| f.0.split(',').any(|x| x == "fail"))
        })
    });
    wait_for("the slots re-placed", CONVERGE, || {
        alive
            .iter()
            .all(|n| n.info()["cluster_current_epoch"] == "2")
    });
    eprintln!(
        "6 nodes, kill -9: dead (fail) on all five after {dead:?}, slots re-placed after {:?}",
        killed.elapsed()
    );
    // FORGET on every survivor drops it from every list (and gossip does not bring it back).
    let id = alive[0]
        .text(&["CLUSTER", "NODES"])
        .lines()
        .find(|l| l.contains(&gone))
        .map(|l| l.split(' ').next().unwrap().to_string())
        .unwrap();
    for n in &alive {
        assert_eq!(n.cmd(&["CLUSTER", "FORGET", &id]), Resp::ok());
    }
    assert_eq!(
        alive[0].cmd(&["CLUSTER", "FORGET", &id]),
        Resp::Error(format!("ERR Unknown node {id}"))
    );
    let myself = alive[0].text(&["CLUSTER", "MYID"]);
    assert_eq!(
        alive[0].cmd(&["CLUSTER", "FORGET", &myself]),
        Resp::err("ERR I tried hard but I can't forget myself...")
    );
    // Let gossip run (every survivor hears 40 more frames): the node must stay forgotten.
    let heard = |n: &Node| -> u64 { n.info()["cluster_stats_messages_received"].parse().unwrap() };
    let before: Vec<u64> = alive.iter().map(|n| heard(n)).collect();
    wait_for("more gossip", CONVERGE, || {
        alive.iter().zip(&before).all(|(n, b)| heard(n) >= b + 40)
    });
    for n in &alive {
        assert!(
            !n.nodes().contains_key(&gone),
            "{} still lists it",
            n.addr()
        );
        assert_eq!(n.info()["cluster_known_nodes"], "5");
    }
}

#[test]
fn nodes_join_through_seeds_and_a_newcomer_takes_its_share() {
    let _serial = serial();
    let first = Node::start("127.0.24.1", "seeds");
    let seed = first.addr();
    let mut nodes = vec![first];
    for i in 2..=3 {
        let ip = format!("127.0.24.{i}");
        nodes.push(Node::start_with(&ip, "seeds", &["--cluster-seeds", &seed]));
    }
    wait_for("the seeds' joiners know everyone", CONVERGE, || {
        nodes.iter().all(|n| n.info()["cluster_known_nodes"] == "3")
    });
    assert_eq!(nodes[1].cmd(&["CLUSTER", "CREATE"]), Resp::ok());
    wait_for("the table reached every node", CONVERGE, || {
        nodes
            .iter()
            .all(|n| n.info()["cluster_current_epoch"] == "1")
    });
    assert_eq!(
        nodes[2].cmd(&["CLUSTER", "CREATE"]),
        Resp::err("ERR the cluster already has a slot table (epoch 1)")
    );
    wait_for("formed", CONVERGE, || {
        nodes.iter().all(|n| n.info()["cluster_state"] == "ok")
    });
    let before: HashMap<String, (String, usize)> = nodes[0].nodes();
    // One key per slot, through one node.
    let keys = key_per_slot();
    nodes[0].raw().pipeline(
        0..keys.len(),
        |i| encode_cmd(&[b"SET", keys[i].as_bytes(), b"old"]),
        |i, r| assert_eq!(r, Resp::ok(), "SET {}", keys[i]),
    );
    // A fourth node joins through a seed: the coordinator gives it a quarter of the slots,
    // taken from the others, under epoch 2.
    nodes.push(Node::start_with(
        "127.0.24.4",
        "seeds",
        &["--cluster-seeds", &seed],
    ));
    wait_for("the newcomer holds its share", CONVERGE, || {
        nodes.iter().all(|n| {
            let i = n.info();
            i["cluster_state"] == "ok"
                && i["cluster_current_epoch"] == "2"
                && i["cluster_size"] == "4"
        })
    });
    let after = nodes[0].nodes();
    let share = after[&nodes[3].addr()].1;
    assert!((4096 - 8..=4096 + 8).contains(&share), "{share} slots");
    for (addr, (_, slots)) in &before {
        assert!(after[addr].1 < *slots, "{addr} gave some slots");
    }
    let moved: usize = before.iter().map(|(a, (_, s))| s - after[a].1).sum();
    assert_eq!(moved, share, "only the newcomer's share moved");
    // The old owners dropped the keys of the slots they gave away (no stale value can come
    // back with a slot); the newcomer starts empty; every other key is where it was.
    let dbsize = |n: &Node| match n.cmd(&["DBSIZE"]) {
        Resp::Int(k) => k as usize,
        other => panic!("DBSIZE {other:?}"),
    };
    wait_for("the given-away keys dropped", CONVERGE, || {
        nodes[..3].iter().map(dbsize).sum::<usize>() == keys.len() - share
    });
    assert_eq!(dbsize(&nodes[3]), 0);
    let mut cc = cluster_client(&nodes);
    let (mut kept, mut gone) = (0, 0);
    for k in &keys {
        match redis::cmd("GET")
            .arg(k)
            .query::<Option<String>>(&mut cc)
            .unwrap()
        {
            Some(v) => {
                assert_eq!(v, "old");
                kept += 1
            }
            None => gone += 1,
        }
    }
    assert_eq!((kept, gone), (keys.len() - share, share));
}

/// iptables rules that cut addresses (or one TCP port between two) apart, removed when
/// dropped.
struct Cut {
    /// Each rule's match arguments.
    rules: Vec<Vec<String>>,
}

impl Cut {
    fn available() -> bool {
        // SAFETY: geteuid has no preconditions.
        let root = unsafe { libc::geteuid() } == 0;
        root && Command::new("iptables")
            .args(["-w", "-L", "INPUT", "-n"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    }

    fn between(a: &[&str], b: &[&str]) -> Cut {
        let mut rules = Vec::new();
        for x in a {
            for y in b {
                rules.push(vec!["-s".into(), x.to_string(), "-d".into(), y.to_string()]);
                rules.push(vec!["-s".into(), y.to_string(), "-d".into(), x.to_string()]);
            }
        }
        Cut::install(rules)
    }

    /// Only TCP between `client` and `server`'s `port`, both ways (other ports still pass).
    fn port(client: &str, server: &str, port: u16) -> Cut {
        let p = port.to_string();
        let rule = |from: &str, to: &str, dir: &str| -> Vec<String> {
            ["-s", from, "-d", to, "-p", "tcp", dir, &p]
                .iter()
                .map(|a| a.to_string())
                .collect()
        };
        Cut::install(vec![
            rule(client, server, "--dport"),
            rule(server, client, "--sport"),
        ])
    }

    fn install(rules: Vec<Vec<String>>) -> Cut {
        for r in &rules {
            let ok = Command::new("iptables")
                .args(["-w", "-I", "INPUT"])
                .args(r)
                .args(["-j", "DROP"])
                .status()
                .is_ok_and(|st| st.success());
            assert!(ok, "iptables refused a rule");
        }
        Cut { rules }
    }
}

impl Drop for Cut {
    fn drop(&mut self) {
        for r in &self.rules {
            let _ = Command::new("iptables")
                .args(["-w", "-D", "INPUT"])
                .args(r)
                .args(["-j", "DROP"])
                .status();
        }
    }
}

#[test]
fn a_partition_splits_the_view_and_heals() {
    let _serial = serial();
    if !Cut::available() {
        // The README's test command runs anywhere; CI runs as root with iptables.
        eprintln!("SKIPPED a_partition_splits_the_view_and_heals: needs root and iptables");
        return;
    }
    let nodes = cluster(3, 23, "partition");
    let (a, b, c) = (&nodes[0], &nodes[1], &nodes[2]);
    for n in &nodes {
        assert_eq!(
            n.info()["cluster_current_epoch"],
            "1",
            "{}",
            n.text(&["CLUSTER", "NODES"])
        );
    }
    let cut = Cut::between(&[&c.ip], &[&a.ip, &b.ip]);
    let start = Instant::now();
    let fail = |n: &Node, of: &Node| {
        n.nodes()
            .get(&of.addr())
            .is_some_and(|f| f.0.split(',').any(|x| x == "fail"))
    };
    wait_for("each side sees the other dead", CONVERGE, || {
        fail(a, c) && fail(b, c) && fail(c, a) && fail(c, b)
    });
    let split = start.elapsed();
    // The majority re-places the lone node's slots; the lone node says the cluster is down.
    wait_for("the majority takes the slots", CONVERGE, || {
        [a, b].iter().all(|n| {
            let i = n.info();
            i["cluster_state"] == "ok" && i["cluster_current_epoch"] == "2"
        })
    });
    let i = c.info();
    assert_eq!(i["cluster_state"], "fail");
    assert_eq!(
        i["cluster_current_epoch"],
        "1",
        "the minority changes nothing: {}\n{}",
        c.text(&["CLUSTER", "NODES"]),
        c.log_text()
    );
    assert_eq!(
        c.cmd(&["GET", "k"]),
        Resp::err("CLUSTERDOWN The cluster is down")
    );
    drop(cut);
    let healed = Instant::now();
    // One table everywhere (epoch 3 unless a suspicion under load added a change), every
    // node alive and holding its share.
    wait_or_show("the view heals", CONVERGE, &[a, b, c], || {
        let epochs: Vec<String> = nodes
            .iter()
            .map(|n| n.info()["cluster_current_epoch"].clone())
            .collect();
        epochs
            .iter()
            .all(|e| *e == epochs[0] && e.parse::<u64>().unwrap() >= 3)
            && nodes.iter().all(|n| {
                n.info()["cluster_state"] == "ok"
                    && n.nodes()
                        .values()
                        .all(|(f, s)| !f.contains("fail") && *s > 4000)
            })
    });
    eprintln!(
        "partition of 1 from 2: split seen after {split:?}; healed (all alive, one table) {:?} after the cut was lifted",
        healed.elapsed()
    );
}

#[test]
fn cluster_commands_answer_as_redis_on_one_node() {
    let _serial = serial();
    // Without cluster support, as Redis.
    let plain = Server::with_cores(1);
    let mut r = plain.raw();
    let disabled = Resp::err("ERR This instance has cluster support disabled");
    assert_eq!(r.cmd(&["CLUSTER", "INFO"]), disabled);
    assert_eq!(r.cmd(&["READONLY"]), disabled);
    assert_eq!(r.cmd(&["ASKING"]), disabled);
    assert_eq!(r.info("cluster_enabled"), "0");

    let mut node = Node::start("127.0.25.1", "one");
    let mut r = node.raw();
    // Not formed yet: no slot is served.
    assert_eq!(
        r.cmd(&["GET", "k"]),
        Resp::err("CLUSTERDOWN Hash slot not served")
    );
    let info = node.info();
    assert_eq!(info["cluster_state"], "fail");
    assert_eq!(info["cluster_slots_assigned"], "0");
    assert_eq!(info["cluster_known_nodes"], "1");
    let id = node.text(&["CLUSTER", "MYID"]);
    assert_eq!(id.len(), 40);
    assert_eq!(
        node.text(&["CLUSTER", "NODES"]),
        format!(
            "{id} {}@{} myself,master - 0 0 0 connected\n",
            node.addr(),
            node.port + 10_000
        )
    );
    assert_eq!(
        r.cmd(&["CLUSTER", "MEET", "not-an-ip", "7000"]),
        Resp::err("ERR Invalid node address specified: not-an-ip:7000")
    );
    assert_eq!(
        r.cmd(&["CLUSTER", "MEET", "127.0.0.1", "x"]),
        Resp::err("ERR Invalid base port specified: x")
    );
    assert_eq!(
        r.cmd(&["CLUSTER", "FORGET", "abc"]),
        Resp::err("ERR Unknown node abc")
    );
    assert_eq!(
        r.cmd(&["CLUSTER", "NOPE"]),
        Resp::err("ERR unknown subcommand 'NOPE'. Try CLUSTER HELP.")
    );
    assert_eq!(
        r.cmd(&["CLUSTER", "KEYSLOT"]),
        Resp::err("ERR wrong number of arguments for 'cluster|keyslot' command")
    );
    assert_eq!(
        r.cmd(&["CLUSTER", "KEYSLOT", "{user1000}.following"]),
        Resp::Int(3443)
    );
    assert_eq!(r.cmd(&["READONLY"]), Resp::ok());
    assert_eq!(r.cmd(&["READWRITE"]), Resp::ok());

    // A cluster of one: every slot here, one range.
    assert_eq!(r.cmd(&["CLUSTER", "CREATE"]), Resp::ok());
    wait_for("formed", CONVERGE, || node.info()["cluster_state"] == "ok");
    assert_eq!(
        r.cmd(&["CLUSTER", "SLOTS"]),
        Resp::Array(vec![Resp::Array(vec![
            Resp::Int(0),
            Resp::Int(16383),
            Resp::Array(vec![
                Resp::bulk(&node.ip),
                Resp::Int(node.port as i64),
                Resp::bulk(&id),
                Resp::Array(vec![]),
            ]),
        ])])
    );
    let Resp::Array(shards) = r.cmd(&["CLUSTER", "SHARDS"]) else {
        panic!("CLUSTER SHARDS is an array")
    };
    assert_eq!(shards.len(), 1);
    let Resp::Array(shard) = &shards[0] else {
        panic!("a shard is a map")
    };
    assert_eq!(shard[0], Resp::bulk("slots"));
    assert_eq!(shard[1], Resp::Array(vec![Resp::Int(0), Resp::Int(16383)]));
    assert_eq!(shard[2], Resp::bulk("nodes"));
    // Keys per slot, from the shard that holds it.
    let slot = tessera::slot::key_slot(b"{t}a").to_string();
    for k in ["{t}a", "{t}b", "{t}c"] {
        assert_eq!(r.cmd(&["SET", k, "v"]), Resp::ok());
    }
    assert_eq!(r.cmd(&["CLUSTER", "COUNTKEYSINSLOT", &slot]), Resp::Int(3));
    let Resp::Array(two) = r.cmd(&["CLUSTER", "GETKEYSINSLOT", &slot, "2"]) else {
        panic!("GETKEYSINSLOT is an array")
    };
    assert_eq!(two.len(), 2);
    assert_eq!(
        r.cmd(&["CLUSTER", "GETKEYSINSLOT", &slot, "-1"]),
        Resp::err("ERR Invalid slot or number of keys")
    );
    // A transaction and multi-key commands within the node.
    assert_eq!(r.cmd(&["MULTI"]), Resp::ok());
    assert_eq!(
        r.cmd(&["MGET", "{t}a", "other"]),
        Resp::Simple("QUEUED".into())
    );
    assert_eq!(
        r.cmd(&["EXEC"]),
        Resp::Array(vec![Resp::Array(vec![Resp::bulk("v"), Resp::Nil])])
    );
    // Its configuration survives a restart: same id, same table.
    let conf = std::fs::read_to_string(node.dir.join("nodes.conf")).unwrap();
    assert!(conf.starts_with("tessera-cluster-config 1\n"), "{conf}");
    node.kill9();
    node.spawn();
    assert_eq!(node.text(&["CLUSTER", "MYID"]), id);
    wait_for("back", CONVERGE, || node.info()["cluster_state"] == "ok");
    assert_eq!(node.info()["cluster_current_epoch"], "1");
    // A damaged configuration stops start-up with a message naming the file.
    node.kill9();
    std::fs::write(
        node.dir.join("nodes.conf"),
        "tessera-cluster-config 1\nmyself nope 0\n",
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_tessera"))
        .args([
            "--bind",
            &node.ip,
            "--port",
            &node.port.to_string(),
            "--save",
            "",
        ])
        .args([
            "--cluster-enabled",
            "yes",
            "--dir",
            &node.dir.display().to_string(),
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("nodes.conf") && err.contains("line 2"),
        "{err}"
    );
}

/// This node's own line of CLUSTER NODES: (flags, master id).
fn my_role(node: &Node) -> (String, String) {
    let text = node.text(&["CLUSTER", "NODES"]);
    let line = text
        .lines()
        .find(|l| l.contains("myself"))
        .unwrap()
        .to_string();
    let f: Vec<&str> = line.split(' ').collect();
    (f[2].to_string(), f[3].to_string())
}

fn replication_field(node: &Node, field: &str) -> String {
    let text = match node.cmd(&["INFO", "replication"]) {
        Resp::Bulk(b) => String::from_utf8(b).unwrap(),
        other => panic!("INFO replied {other:?}"),
    };
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{field}:")))
        .unwrap_or_default()
        .trim()
        .to_string()
}

/// CLUSTER REPLICATE for each (replica, primary) pair, then waits until each replica
/// shows itself following its primary with its link up.
fn make_replicas(nodes: &[Node], ids: &[String], pairs: &[(usize, usize)]) {
    for &(r, p) in pairs {
        assert_eq!(nodes[r].cmd(&["CLUSTER", "REPLICATE", &ids[p]]), Resp::ok());
    }
    for &(r, p) in pairs {
        wait_or_show(
            "the replicas follow their primaries",
            CONVERGE,
            &[&nodes[r]],
            || {
                my_role(&nodes[r]) == ("myself,slave".to_string(), ids[p].clone())
                    && replication_field(&nodes[r], "master_link_status") == "up"
            },
        );
    }
    // Every node has the table that says so (until then a primary may still send a replica
    // writes for slots it had).
    wait_for("every node sees the replicas", CONVERGE, || {
        nodes.iter().all(|n| {
            let view = n.nodes();
            pairs.iter().all(|&(r, _)| {
                view.get(&nodes[r].addr())
                    .is_some_and(|(f, slots)| f.contains("slave") && *slots == 0)
            })
        })
    });
}

/// Pipelined SETs (100 a round, each key's value unique) on one connection to a node, on
/// a thread, until stopped or the connection fails: the log of acknowledged writes.
struct WriteLoad {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    count: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    thread: std::thread::JoinHandle<Vec<(String, String)>>,
}

impl WriteLoad {
    fn start(node: &Node, keys: Vec<String>) -> WriteLoad {
        use std::io::{Read, Write};
        use std::sync::atomic::Ordering::Relaxed;
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let count = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let (ip, port) = (node.ip.clone(), node.port);
        let (stopped, counter) = (stop.clone(), count.clone());
        let thread = std::thread::spawn(move || {
            let mut acked = Vec::new();
            let Ok(mut s) = std::net::TcpStream::connect((ip.as_str(), port)) else {
                return acked;
            };
            s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            let mut round = 0usize;
            let mut pending = Vec::new();
            'load: while !stopped.load(Relaxed) {
                let batch: Vec<(String, String)> = (0..100)
                    .map(|i| {
                        let k = &keys[(round * 100 + i) % keys.len()];
                        (k.clone(), format!("r{round}-{i}"))
                    })
                    .collect();
                let wire: Vec<u8> = batch
                    .iter()
                    .flat_map(|(k, v)| encode_cmd(&[b"SET", k.as_bytes(), v.as_bytes()]))
                    .collect();
                if s.write_all(&wire).is_err() {
                    break;
                }
                // Every reply is one line: +OK, or an error (not acknowledged).
                let mut got = 0;
                let mut buf = [0u8; 4096];
                while got < batch.len() {
                    match s.read(&mut buf) {
                        Ok(0) | Err(_) => break 'load,
                        Ok(n) => pending.extend_from_slice(&buf[..n]),
                    }
                    while let Some(end) = pending.windows(2).position(|w| w == b"\r\n") {
                        if &pending[..end] == b"+OK" {
                            acked.push(batch[got].clone());
                        }
                        pending.drain(..end + 2);
                        got += 1;
                    }
                }
                counter.store(acked.len(), Relaxed);
                round += 1;
            }
            acked
        });
        WriteLoad {
            stop,
            count,
            thread,
        }
    }

    fn acked(&self) -> usize {
        self.count.load(std::sync::atomic::Ordering::Relaxed)
    }

    fn wait_for_acks(&self, n: usize) {
        wait_for("the write load runs", CONVERGE, || self.acked() >= n);
    }

    fn stop(self) -> Vec<(String, String)> {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.thread.join().expect("the write load thread")
    }
}

/// Keys whose last acknowledged value (in `acked`, oldest first) `node` does not hold.
fn lost_writes(node: &Node, acked: &[(String, String)]) -> usize {
    let mut last: HashMap<&str, &str> = HashMap::new();
    for (k, v) in acked {
        last.insert(k, v);
    }
    let mut c = node.raw();
    last.iter()
        .filter(|(k, v)| c.cmd(&["GET", k]) != Resp::bulk(v))
        .count()
}

#[test]
fn replicas_take_over_killed_primaries_and_the_old_primary_follows() {
    let _serial = serial();
    let mut nodes = cluster(6, 26, "failover");
    let ids: Vec<String> = nodes.iter().map(|n| n.text(&["CLUSTER", "MYID"])).collect();
    assert_eq!(
        nodes[3].cmd(&["CLUSTER", "REPLICATE", &ids[3]]),
        Resp::err("ERR Can't replicate myself")
    );
    // Nodes 3, 4, 5 follow 0, 1, 2: their slots go to the others.
    make_replicas(&nodes, &ids, &[(3, 0), (4, 1), (5, 2)]);
    wait_for("every node sees three primaries", CONVERGE, || {
        nodes.iter().all(|n| {
            n.nodes()
                .values()
                .filter(|(f, s)| f.contains("master") && *s > 0)
                .count()
                == 3
        })
    });
    let keys = key_per_slot();
    // CLUSTER SLOTS lists each range's replica after its primary.
    match nodes[0].cmd(&["CLUSTER", "SLOTS"]) {
        Resp::Array(ranges) => {
            assert!(ranges
                .iter()
                .all(|r| matches!(r, Resp::Array(v) if v.len() == 4)))
        }
        other => panic!("CLUSTER SLOTS replied {other:?}"),
    }

    // A READONLY client reads node 0's slots on its replica (which redirects otherwise).
    let slots0 = nodes[0].my_slots();
    let key0 = (0..16384)
        .find(|s| slots0[*s])
        .map(|s| keys[s].clone())
        .unwrap();
    assert_eq!(nodes[0].cmd(&["SET", &key0, "on-zero"]), Resp::ok());
    assert_eq!(nodes[0].cmd(&["WAIT", "1", "20000"]), Resp::Int(1));
    let mut r3 = nodes[3].raw();
    assert_eq!(
        r3.cmd(&["CONFIG", "SET", "cluster-routing", "redirect"]),
        Resp::ok()
    );
    assert!(matches!(r3.cmd(&["GET", &key0]), Resp::Error(e) if e.starts_with("MOVED ")));
    assert_eq!(r3.cmd(&["READONLY"]), Resp::ok());
    assert_eq!(r3.cmd(&["GET", &key0]), Resp::bulk("on-zero"));
    assert!(matches!(r3.cmd(&["SET", &key0, "x"]), Resp::Error(e) if e.starts_with("MOVED ")));

    // With repl-ack-replicas 1 on node 1, every write it acknowledged is on its replica:
    // none is lost when it is killed in the middle of a write load.
    assert_eq!(
        nodes[1].cmd(&["CONFIG", "SET", "repl-ack-replicas", "1"]),
        Resp::ok()
    );
    let slots1 = nodes[1].my_slots();
    let mine1: Vec<&String> = (0..16384)
        .filter(|s| slots1[*s])
        .map(|s| &keys[s])
        .collect();
    let mut w = nodes[1].raw();
    let mut acked = Vec::new();
    for (i, k) in mine1.iter().enumerate().take(400) {
        assert_eq!(w.cmd(&["SET", k, &format!("a{i}")]), Resp::ok());
        acked.push((k.to_string(), format!("a{i}")));
    }
    // Then a pipeline in flight when the process dies.
    w.send(
        &mine1[400..]
            .iter()
            .take(2000)
            .flat_map(|k| encode_cmd(&[b"SET", k.as_bytes(), b"late"]))
            .collect::<Vec<u8>>(),
    );
    let killed_at = Instant::now();
    nodes[1].kill9();
    let took = wait_or_show(
        "node 4 takes over node 1's slots",
        CONVERGE,
        &[&nodes[0], &nodes[4]],
        || {
            my_role(&nodes[4]).0 == "myself,master"
                && nodes[0]
                    .nodes()
                    .get(&nodes[4].addr())
                    .is_some_and(|(_, s)| *s > 0)
        },
    );
    let first_write = wait_for("a write to the failed slots succeeds", CONVERGE, || {
        nodes[0].cmd(&["SET", &mine1[0].to_string(), "after"]) == Resp::ok()
    });
    let _ = killed_at;
    eprintln!(
        "failover: node 4 primary {took:?} after the kill; first write {:?} after",
        took + first_write
    );
    let mut r4 = nodes[4].raw();
    let mut lost = 0;
    for (k, v) in acked.iter().skip(1) {
        if r4.cmd(&["GET", k]) != Resp::bulk(v) {
            lost += 1;
        }
    }
    assert_eq!(lost, 0, "acknowledged writes lost with repl-ack-replicas 1");

    // The old primary comes back as node 4's replica, with the new data.
    nodes[1].spawn();
    wait_or_show(
        "the old primary follows its successor",
        CONVERGE,
        &[&nodes[1], &nodes[4]],
        || {
            my_role(&nodes[1]) == ("myself,slave".to_string(), ids[4].clone())
                && replication_field(&nodes[1], "master_link_status") == "up"
        },
    );
    assert_eq!(nodes[4].cmd(&["WAIT", "1", "20000"]), Resp::Int(1));
    let mut r1 = nodes[1].raw();
    assert_eq!(r1.cmd(&["READONLY"]), Resp::ok());
    assert_eq!(r1.cmd(&["GET", mine1[0]]), Resp::bulk("after"));
    assert_eq!(r1.cmd(&["DBSIZE"]), nodes[4].cmd(&["DBSIZE"]));

    // Planned switchovers. The plain form under a write load: node 0 holds its writes,
    // node 3 catches up and wins; the held writes then go to node 3 (node 0 forwards them),
    // and none acknowledged is lost.
    assert_eq!(
        nodes[0].cmd(&["CLUSTER", "FAILOVER"]),
        Resp::err("ERR You should send CLUSTER FAILOVER to a replica")
    );
    let load0: Vec<String> = (0..16384)
        .filter(|s| slots0[*s] && keys[*s] != key0)
        .map(|s| keys[s].clone())
        .collect();
    let load = WriteLoad::start(&nodes[0], load0);
    load.wait_for_acks(5_000);
    let asked = Instant::now();
    assert_eq!(nodes[3].cmd(&["CLUSTER", "FAILOVER"]), Resp::ok());
    let answered = asked.elapsed();
    let acked_before = load.acked();
    load.wait_for_acks(acked_before + 5_000);
    let acked = load.stop();
    eprintln!(
        "manual failover: answered in {answered:?}; {} writes acknowledged, {acked_before} before the switch",
        acked.len()
    );
    assert_eq!(my_role(&nodes[3]).0, "myself,master");
    wait_or_show(
        "the old primary follows node 3",
        CONVERGE,
        &[&nodes[0], &nodes[3]],
        || {
            my_role(&nodes[0]) == ("myself,slave".to_string(), ids[3].clone())
                && replication_field(&nodes[0], "master_link_status") == "up"
        },
    );
    let lost = lost_writes(&nodes[3], &acked);
    assert_eq!(lost, 0, "a manual failover lost acknowledged writes");
    // The old primary had exactly what node 3 had: it continues, no full sync.
    assert_eq!(replication_field(&nodes[3], "tessera_partial_syncs"), "1");
    assert_eq!(replication_field(&nodes[3], "tessera_full_syncs"), "0");
    assert_eq!(nodes[0].cmd(&["DBSIZE"]), nodes[3].cmd(&["DBSIZE"]));

    // FORCE (the primaries vote while the primary lives) back to node 0, then TAKEOVER
    // (no vote) to node 3.
    assert_eq!(
        nodes[3].cmd(&["CLUSTER", "FAILOVER", "FORCE"]),
        Resp::err("ERR You should send CLUSTER FAILOVER to a replica")
    );
    assert_eq!(nodes[0].cmd(&["CLUSTER", "FAILOVER", "FORCE"]), Resp::ok());
    wait_or_show(
        "FORCE: node 0 takes over node 3",
        CONVERGE,
        &[&nodes[0], &nodes[3]],
        || {
            my_role(&nodes[0]).0 == "myself,master"
                && my_role(&nodes[3]) == ("myself,slave".to_string(), ids[0].clone())
                && replication_field(&nodes[3], "master_link_status") == "up"
        },
    );
    let mut r0 = nodes[0].raw();
    assert_eq!(r0.cmd(&["GET", &key0]), Resp::bulk("on-zero"));
    assert_eq!(
        nodes[3].cmd(&["CLUSTER", "FAILOVER", "TAKEOVER"]),
        Resp::ok()
    );
    wait_or_show(
        "TAKEOVER: node 3 is back",
        CONVERGE,
        &[&nodes[0], &nodes[3]],
        || {
            my_role(&nodes[3]).0 == "myself,master"
                && my_role(&nodes[0]) == ("myself,slave".to_string(), ids[3].clone())
        },
    );

    // Without repl-ack-replicas, a primary killed under a write load loses at most what its
    // replica had not applied yet: count it.
    let slots2 = nodes[2].my_slots();
    let mine2: Vec<String> = (0..16384)
        .filter(|s| slots2[*s])
        .map(|s| keys[s].clone())
        .collect();
    let load = WriteLoad::start(&nodes[2], mine2);
    load.wait_for_acks(20_000);
    let lag_at_kill = replication_field(&nodes[2], "slave0");
    nodes[2].kill9();
    let acked = load.stop();
    wait_or_show(
        "node 5 takes over node 2's slots",
        CONVERGE,
        &[&nodes[0], &nodes[5]],
        || my_role(&nodes[5]).0 == "myself,master",
    );
    let lost = lost_writes(&nodes[5], &acked);
    eprintln!(
        "async failover: {} writes acknowledged, {lost} keys without their last acknowledged value on the new primary; replica before the kill: {lag_at_kill}",
        acked.len(),
    );
    // The loss is bounded by what the replica had not acknowledged at the last look.
    let offset: usize = lag_at_kill
        .split(',')
        .find_map(|f| f.strip_prefix("offset="))
        .and_then(|o| o.parse().ok())
        .expect("the replica's offset");
    assert!(
        lost <= acked.len().saturating_sub(offset),
        "{lost} lost, but only {} writes were acknowledged after the replica's last offset",
        acked.len().saturating_sub(offset)
    );
}

#[test]
fn a_primary_left_without_a_replica_gets_one_donated() {
    let _serial = serial();
    let mut nodes = cluster(5, 27, "donation");
    let ids: Vec<String> = nodes.iter().map(|n| n.text(&["CLUSTER", "MYID"])).collect();
    // Node 4 first, seen by all: were node 0 to have its two replicas while node 4 is still
    // a primary with none, the coordinator would rightly donate one to node 4 mid-setup.
    make_replicas(&nodes, &ids, &[(4, 1)]);
    make_replicas(&nodes, &ids, &[(2, 0), (3, 0)]);
    // Data on node 1, then its only replica dies: node 0 (two replicas, barrier 1) gives
    // one, which empties itself and syncs from node 1 in full.
    let keys = key_per_slot();
    let slots1 = nodes[1].my_slots();
    let mut w = nodes[1].raw();
    for s in (0..16384).filter(|s| slots1[*s]).take(500) {
        assert_eq!(w.cmd(&["SET", &keys[s], "one"]), Resp::ok());
    }
    nodes[4].kill9();
    let took = wait_or_show(
        "a replica of node 0 moves to node 1",
        CONVERGE,
        &[&nodes[0], &nodes[1], &nodes[2], &nodes[3]],
        || {
            [2, 3].iter().any(|&r| {
                my_role(&nodes[r]) == ("myself,slave".to_string(), ids[1].clone())
                    && replication_field(&nodes[r], "master_link_status") == "up"
            })
        },
    );
    eprintln!("donation: a replica followed the orphaned primary {took:?} after the kill");
    let moved = if my_role(&nodes[2]).1 == ids[1] { 2 } else { 3 };
    let stayed = 5 - moved;
    assert_eq!(
        my_role(&nodes[stayed]).1,
        ids[0],
        "node 0 keeps one replica"
    );
    assert_eq!(w.cmd(&["WAIT", "1", "20000"]), Resp::Int(1));
    assert_eq!(nodes[moved].cmd(&["DBSIZE"]), nodes[1].cmd(&["DBSIZE"]));
}

#[test]
fn readonly_reads_on_a_replica_never_go_back_in_time() {
    let _serial = serial();
    let nodes = cluster(2, 28, "monotonic");
    let ids: Vec<String> = nodes.iter().map(|n| n.text(&["CLUSTER", "MYID"])).collect();
    make_replicas(&nodes, &ids, &[(1, 0)]);
    // Next to no lag allowed: under the load below the replica drops out of the in-sync set
    // (and back in) all the time, so READONLY reads would switch between it and the primary.
    for (name, value) in [("repl-max-lag-entries", "0"), ("repl-max-lag-ms", "1")] {
        assert_eq!(nodes[1].cmd(&["CONFIG", "SET", name, value]), Resp::ok());
    }
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (ip, port, stopped) = (nodes[0].ip.clone(), nodes[0].port, stop.clone());
    let writer = std::thread::spawn(move || {
        let mut w = Raw::connect_addr((ip.as_str(), port));
        let batch: Vec<u8> = (0..50)
            .flat_map(|_| encode_cmd(&[b"INCR", b"counter"]))
            .collect();
        let mut last = 0;
        while !stopped.load(std::sync::atomic::Ordering::Relaxed) {
            w.send(&batch);
            w.read_each(50, |_, r| match r {
                Resp::Int(n) => last = n,
                other => panic!("INCR answered {other:?}"),
            });
        }
        last
    });
    let mut r = nodes[1].raw();
    assert_eq!(r.cmd(&["READONLY"]), Resp::ok());
    let (mut seen, mut reads) = (0i64, 0);
    let started = Instant::now();
    while reads < 5_000 && started.elapsed() < CONVERGE {
        let now = match r.cmd(&["GET", "counter"]) {
            Resp::Nil => 0,
            Resp::Bulk(b) => String::from_utf8_lossy(&b).parse().expect("a number"),
            other => panic!("GET answered {other:?}"),
        };
        assert!(
            now >= seen,
            "read {reads}: the counter went back from {seen} to {now}"
        );
        seen = now;
        reads += 1;
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let last = writer.join().expect("the writer");
    let moved: u64 = replication_field(&nodes[1], "tessera_readonly_clients_moved")
        .parse()
        .expect("a count");
    eprintln!("monotonic reads: {reads} reads up to {seen} of {last}; connections moved to the primary: {moved}");
    assert!(
        moved >= 1,
        "the replica never fell out of sync: the test proved nothing"
    );
    // Caught up, a new READONLY connection reads the replica again.
    assert_eq!(
        nodes[1].cmd(&["CONFIG", "SET", "repl-max-lag-ms", "10000"]),
        Resp::ok()
    );
    wait_for("the replica catches up", CONVERGE, || {
        replication_field(&nodes[1], "tessera_lag_entries") == "0"
            && replication_field(&nodes[1], "slave_repl_offset")
                == replication_field(&nodes[0], "master_repl_offset")
    });
    let mut again = nodes[1].raw();
    assert_eq!(again.cmd(&["READONLY"]), Resp::ok());
    assert_eq!(
        again.cmd(&["GET", "counter"]),
        Resp::bulk(&last.to_string())
    );
    assert_eq!(
        replication_field(&nodes[1], "tessera_readonly_clients_moved"),
        moved.to_string(),
        "an in-sync replica sent a new connection to its primary"
    );
}

#[test]
fn a_lagging_replica_is_not_promoted() {
    let _serial = serial();
    if !Cut::available() {
        eprintln!("SKIPPED a_lagging_replica_is_not_promoted: needs root and iptables");
        return;
    }
    // Out of sync 2.5 s after the primary's last word — less than detection (2.5 s) plus
    // the idle ping interval (1 s): staleness counts until the primary is suspected, not
    // until it is declared dead. No replica migration (node 0's two replicas stay with it).
    let conf = std::env::temp_dir().join(format!("tessera-lagging-{}.conf", std::process::id()));
    std::fs::write(
        &conf,
        "repl-max-lag-ms 2500\ncluster-allow-replica-migration no\ncluster-require-full-coverage no\n",
    )
    .unwrap();
    let mut nodes = cluster_with(5, 29, "lagging", &[&conf.display().to_string()]);
    let ids: Vec<String> = nodes.iter().map(|n| n.text(&["CLUSTER", "MYID"])).collect();
    make_replicas(&nodes, &ids, &[(3, 0), (4, 0)]);
    let keys = key_per_slot();
    let slots0 = nodes[0].my_slots();
    let mine0: Vec<String> = (0..16384)
        .filter(|s| slots0[*s])
        .map(|s| keys[s].clone())
        .collect();
    let mut w = nodes[0].raw();
    for k in mine0.iter().take(100) {
        assert_eq!(w.cmd(&["SET", k, "early"]), Resp::ok());
    }
    assert_eq!(w.cmd(&["WAIT", "2", "20000"]), Resp::Int(2));

    // Node 4's stream from node 0 is cut (its cluster bus is not): node 3 gets what follows,
    // node 4 does not, and drops out of sync.
    let cut = Cut::port(&nodes[4].ip, &nodes[0].ip, nodes[0].port);
    for k in mine0.iter().take(1000) {
        assert_eq!(w.cmd(&["SET", k, "late"]), Resp::ok());
    }
    assert_eq!(w.cmd(&["WAIT", "1", "20000"]), Resp::Int(1));
    wait_for("node 4 goes stale", CONVERGE, || {
        replication_field(&nodes[4], "master_last_io_seconds_ago")
            .parse::<i64>()
            .is_ok_and(|s| s >= 4)
    });
    nodes[0].kill9();
    wait_or_show(
        "the in-sync replica takes over and the lagging one follows it",
        CONVERGE,
        &[&nodes[3], &nodes[4]],
        || {
            my_role(&nodes[3]).0 == "myself,master"
                && my_role(&nodes[4]) == ("myself,slave".to_string(), ids[3].clone())
        },
    );
    assert!(!nodes[4].log_text().contains("won the election"));
    assert_eq!(lost_writes(&nodes[3], &late_log(&mine0[..1000])), 0);
    drop(cut);

    // Now node 4 is node 3's only replica. Cut it off again: when node 3 dies, the stale
    // replica does not stand, and after the grace the other primaries take the slots.
    wait_for("node 4 syncs from node 3", CONVERGE, || {
        replication_field(&nodes[4], "master_link_status") == "up"
    });
    let cut = Cut::port(&nodes[4].ip, &nodes[3].ip, nodes[3].port);
    let mut w = nodes[3].raw();
    for k in mine0.iter().take(1000) {
        assert_eq!(w.cmd(&["SET", k, "later"]), Resp::ok());
    }
    wait_for("node 4 goes stale again", CONVERGE, || {
        replication_field(&nodes[4], "master_last_io_seconds_ago")
            .parse::<i64>()
            .is_ok_and(|s| s >= 4)
    });
    let slots1 = nodes[1].my_slots();
    let key1 = (0..16384)
        .find(|s| slots1[*s])
        .map(|s| keys[s].clone())
        .unwrap();
    assert_eq!(nodes[1].cmd(&["SET", &key1, "one"]), Resp::ok());
    nodes[3].kill9();
    // Without full coverage, while node 3 is dead and still owns its slots (the 5 s grace
    // for a replica that cannot stand), the others serve theirs and refuse only its.
    wait_for("node 1 sees node 3 dead", CONVERGE, || {
        nodes[1]
            .nodes()
            .get(&nodes[3].addr())
            .is_some_and(|(f, s)| f.split(',').any(|x| x == "fail") && *s > 0)
    });
    assert_eq!(nodes[1].cmd(&["GET", &key1]), Resp::bulk("one"));
    assert_eq!(
        nodes[1].cmd(&["GET", &mine0[0]]),
        Resp::err("CLUSTERDOWN Hash slot not served")
    );
    wait_or_show(
        "the surviving primaries take the dead primary's slots",
        CONVERGE,
        &[&nodes[1], &nodes[4]],
        || {
            let view = nodes[1].nodes();
            view.get(&nodes[3].addr()).is_some_and(|(_, s)| *s == 0)
                && [&nodes[1], &nodes[2]]
                    .iter()
                    .map(|n| view.get(&n.addr()).map_or(0, |(_, s)| *s))
                    .sum::<usize>()
                    == 16384
        },
    );
    // (Left without a primary, node 4 may then become a primary with no slots, its stale
    // keys dropped: it never takes the dead primary's slots.)
    assert!(
        !nodes[4].log_text().contains("won the election"),
        "a stale replica was promoted"
    );
    drop(cut);
    let _ = std::fs::remove_file(&conf);
}

/// The write log of one `SET k late` per key.
fn late_log(keys: &[String]) -> Vec<(String, String)> {
    keys.iter()
        .map(|k| (k.clone(), "late".to_string()))
        .collect()
}

/// A port nothing listens on at `ip`.
fn free_port_at(ip: &str) -> u16 {
    TcpListener::bind((ip, 0))
        .expect("bind an ephemeral port")
        .local_addr()
        .unwrap()
        .port()
}

/// Whether the TLS port `port` at `ip` takes a peer that trusts `ca` and shows the
/// certificate `cert`/`key` (PEM): the handshake, then the server's answer to 32 bytes
/// that are no frame — it closes the connection (`Ok`), or its TLS alert (`Err`: with
/// TLS 1.3 a refused client certificate shows only after the client's side is done).
fn tls_peer_taken(ip: &str, port: u16, ca: &str, cert: &str, key: &str) -> Result<(), String> {
    use std::io::{Read, Write};
    use std::sync::Arc;
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls_pemfile::certs(&mut ca.as_bytes()) {
        roots.add(c.unwrap()).unwrap();
    }
    let certs = rustls_pemfile::certs(&mut cert.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    let key = rustls_pemfile::private_key(&mut key.as_bytes())
        .unwrap()
        .unwrap();
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_client_auth_cert(certs, key)
    .unwrap();
    let name = rustls::pki_types::ServerName::try_from(ip.to_string()).unwrap();
    let mut conn = rustls::ClientConnection::new(Arc::new(config), name).unwrap();
    let mut tcp = std::net::TcpStream::connect((ip, port)).map_err(|e| e.to_string())?;
    tcp.set_read_timeout(Some(CONVERGE)).unwrap();
    let mut tls = rustls::Stream::new(&mut conn, &mut tcp);
    tls.write_all(&[b'x'; 32]).map_err(|e| e.to_string())?;
    let mut buf = [0u8; 64];
    match tls.read(&mut buf) {
        Ok(0) => Ok(()),
        Ok(n) => Err(format!("the server answered {n} bytes")),
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Ok(()),
        Err(e) => Err(e.to_string()),
    }
}

#[test]
fn with_tls_cluster_and_tls_replication_nodes_talk_tls_to_each_other() {
    let _serial = serial();
    let dir = std::env::temp_dir().join(format!("tessera-cluster-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let ips: Vec<String> = (1..=3).map(|i| format!("127.0.30.{i}")).collect();
    let ca = common::certs::Ca::new("tessera cluster CA");
    let names: Vec<&str> = ips.iter().map(String::as_str).collect();
    let (cert_pem, key_pem) = ca.sign_node(&names);
    let cert = common::certs::write(&dir, "node.crt", &cert_pem);
    let key = common::certs::write(&dir, "node.key", &key_pem);
    let ca_file = common::certs::write(&dir, "ca.crt", &ca.cert_pem);
    let tls_ports: Vec<u16> = ips.iter().map(|ip| free_port_at(ip)).collect();
    let nodes: Vec<Node> = ips
        .iter()
        .zip(&tls_ports)
        .map(|(ip, tls)| {
            let tls = tls.to_string();
            let args = [
                "--tls-port",
                &tls,
                "--tls-cert-file",
                &cert,
                "--tls-key-file",
                &key,
                "--tls-ca-cert-file",
                &ca_file,
                "--tls-cluster",
                "yes",
                "--tls-replication",
                "yes",
            ];
            Node::start_with(ip, "tls", &args)
        })
        .collect();
    // The bus takes TLS only (a formed cluster shows the nodes understood each other).
    let nodes = form(nodes);
    let bus = nodes[1].port + 10_000;
    assert_eq!(
        tls_peer_taken(&nodes[1].ip, bus, &ca.cert_pem, &cert_pem, &key_pem),
        Ok(()),
        "a TLS peer on the bus port"
    );
    let rogue = common::certs::Ca::new("someone else");
    let (rogue_cert, rogue_key) = rogue.sign_node(&names);
    let refused = tls_peer_taken(&nodes[1].ip, bus, &ca.cert_pem, &rogue_cert, &rogue_key);
    assert!(
        refused.as_ref().is_err_and(|e| e.contains("alert")),
        "a peer with a certificate from another CA is turned away: {refused:?}"
    );

    // Forwarded commands go to their owners' TLS ports.
    let keys = key_per_slot();
    every_slot_both_ways_tls(&nodes, &keys, &tls_ports);
    // CLUSTER NODES names each client's kind of port; SHARDS gives both.
    let plain_nodes = nodes[0].text(&["CLUSTER", "NODES"]);
    let tls_nodes: String = {
        let certs = redis::TlsCertificates {
            client_tls: Some(redis::ClientTlsConfig {
                client_cert: cert_pem.as_bytes().to_vec(),
                client_key: key_pem.as_bytes().to_vec(),
            }),
            root_cert: Some(ca.cert_pem.as_bytes().to_vec()),
        };
        let url = format!("rediss://{}:{}/", nodes[0].ip, tls_ports[0]);
        let mut c = redis::Client::build_with_tls(url, certs)
            .unwrap()
            .get_connection_with_timeout(CONVERGE)
            .unwrap();
        redis::cmd("CLUSTER").arg("NODES").query(&mut c).unwrap()
    };
    for (n, tls) in nodes.iter().zip(&tls_ports) {
        assert!(
            plain_nodes.contains(&format!(" {}:{}@", n.ip, n.port)),
            "{plain_nodes}"
        );
        assert!(
            tls_nodes.contains(&format!(" {}:{tls}@", n.ip)),
            "{tls_nodes}"
        );
    }
    // (RESP2: each node is a flat array of field, value pairs.)
    fn tls_ports_in(r: &Resp, found: &mut Vec<i64>) {
        if let Resp::Array(items) = r {
            for pair in items.windows(2) {
                if let [Resp::Bulk(f), Resp::Int(p)] = pair {
                    if f.as_slice() == b"tls-port" {
                        found.push(*p);
                    }
                }
            }
            items.iter().for_each(|i| tls_ports_in(i, found));
        }
    }
    let mut found = Vec::new();
    tls_ports_in(&nodes[0].cmd(&["CLUSTER", "SHARDS"]), &mut found);
    found.sort();
    let mut want: Vec<i64> = tls_ports.iter().map(|p| *p as i64).collect();
    want.sort();
    assert_eq!(found, want, "CLUSTER SHARDS' tls-port fields");
    // (Only node 0's forwarding links ran SET on node 1.)
    let list = nodes[1].text(&["CLIENT", "LIST"]);
    let forwarded: Vec<&str> = list.lines().filter(|l| l.contains(" cmd=set ")).collect();
    assert!(!forwarded.is_empty(), "node 0 forwards to node 1:\n{list}");
    let on_tls = format!("laddr={}:{} ", nodes[1].ip, tls_ports[1]);
    for l in &forwarded {
        assert!(
            l.contains(&on_tls),
            "a forwarding link not on the TLS port: {l}"
        );
    }

    // The replica follows its primary over TLS, at the primary's TLS port.
    let ids: Vec<String> = nodes.iter().map(|n| n.text(&["CLUSTER", "MYID"])).collect();
    make_replicas(&nodes, &ids, &[(2, 0)]);
    assert_eq!(
        replication_field(&nodes[2], "master_port"),
        tls_ports[0].to_string()
    );
    let mut w = nodes[0].raw();
    let slots0 = nodes[0].my_slots();
    let mine: Vec<&String> = (0..16384)
        .filter(|s| slots0[*s])
        .map(|s| &keys[s])
        .collect();
    for k in mine.iter().take(200) {
        assert_eq!(w.cmd(&["SET", k, "replicated"]), Resp::ok());
    }
    assert_eq!(w.cmd(&["WAIT", "1", "20000"]), Resp::Int(1));
    let mut r = nodes[2].raw();
    assert_eq!(r.cmd(&["READONLY"]), Resp::ok());
    assert_eq!(r.cmd(&["GET", mine[0]]), Resp::Bulk(b"replicated".to_vec()));
    let _ = std::fs::remove_dir_all(&dir);
}

/// Plain clients write every slot through node 0 (forwarded to the owners), then the
/// `redis` crate's cluster client over TLS — seeded with the TLS ports, finding the rest
/// in CLUSTER SLOTS, which names TLS ports to a TLS client — reads them all.
fn every_slot_both_ways_tls(nodes: &[Node], keys: &[String], tls_ports: &[u16]) {
    let mut plain = nodes[0].raw();
    plain.pipeline(
        0..keys.len(),
        |i| encode_cmd(&[b"SET", keys[i].as_bytes(), format!("v{i}").as_bytes()]),
        |i, r| assert_eq!(r, Resp::ok(), "SET {}", keys[i]),
    );
    let urls: Vec<String> = nodes
        .iter()
        .zip(tls_ports)
        .map(|(n, p)| format!("rediss://{}:{p}/", n.ip))
        .collect();
    let ca = std::fs::read(nodes[0].extra[7].clone()).unwrap();
    let cert = std::fs::read(nodes[0].extra[3].clone()).unwrap();
    let key = std::fs::read(nodes[0].extra[5].clone()).unwrap();
    let certs = redis::TlsCertificates {
        client_tls: Some(redis::ClientTlsConfig {
            client_cert: cert,
            client_key: key,
        }),
        root_cert: Some(ca),
    };
    let mut c = redis::cluster::ClusterClient::builder(urls)
        .certs(certs)
        .build()
        .unwrap()
        .get_connection()
        .expect("a cluster connection over TLS");
    for (i, k) in keys.iter().enumerate().step_by(97) {
        let v: String = redis::cmd("GET").arg(k).query(&mut c).unwrap();
        assert_eq!(v, format!("v{i}"));
    }
}
