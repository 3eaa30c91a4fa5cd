//! The real `tessera-ctl` binary against fake nodes. Each fake is a `TcpListener` thread
//! answering cluster commands from one shared model of a small cluster, in which a met node
//! stays in handshake for a few polls and a created cluster reports `fail` for a few more,
//! so `create` has to wait for both.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Command, Output};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use tessera_ctl::resp::{decode, encode, Decoded, Reply};

/// Bound on one run of the binary; its own timeouts end it well before.
const RUN_DEADLINE: Duration = Duration::from_secs(30);
/// A fake drops a connection idle this long, so no thread outlives a stuck client forever.
const FAKE_IDLE: Duration = Duration::from_secs(30);
/// Polls of CLUSTER NODES after a MEET during which the met node shows `handshake`.
const HANDSHAKE_POLLS: u32 = 3;
/// Polls of CLUSTER INFO after CLUSTER CREATE during which the state is still `fail`.
const CONVERGE_POLLS: u32 = 4;

#[derive(Default)]
struct FakeNode {
    port: u16,
    id: String,
    cluster_disabled: bool,
    /// Ignores CLUSTER MEET about it, so it never joins.
    unreachable_bus: bool,
    met: bool,
    slots: Option<(u16, u16)>,
    epoch: u64,
}

#[derive(Default)]
struct Model {
    nodes: Vec<FakeNode>,
    nodes_polls_since_meet: u32,
    info_polls_since_create: u32,
    created: bool,
    forgotten: Vec<String>,
}

impl Model {
    fn members(&self) -> Vec<usize> {
        (0..self.nodes.len())
            .filter(|&i| i == 0 || self.nodes[i].met)
            .collect()
    }

    fn answer(&mut self, me: usize, args: &[String]) -> Vec<u8> {
        let words: Vec<String> = args.iter().map(|a| a.to_ascii_uppercase()).collect();
        let words: Vec<&str> = words.iter().map(String::as_str).collect();
        if self.nodes[me].cluster_disabled {
            return b"-ERR This instance has cluster support disabled\r\n".to_vec();
        }
        match words.as_slice() {
            ["CLUSTER", "INFO"] => bulk(&self.info(me)),
            ["CLUSTER", "NODES"] => bulk(&self.cluster_nodes(me)),
            ["CLUSTER", "MEET", _, port] => {
                let target = self.nodes.iter_mut().find(|n| port.parse() == Ok(n.port));
                match target {
                    Some(n) if !n.unreachable_bus => {
                        n.met = true;
                        self.nodes_polls_since_meet = 0;
                        b"+OK\r\n".to_vec()
                    }
                    Some(_) => b"+OK\r\n".to_vec(),
                    None => b"-ERR Invalid node address specified\r\n".to_vec(),
                }
            }
            ["CLUSTER", "CREATE"] => {
                let members = self.members();
                let share = 16384 / members.len();
                for (k, &i) in members.iter().enumerate() {
                    let last = if k + 1 == members.len() {
                        16383
                    } else {
                        (k + 1) * share - 1
                    };
                    self.nodes[i].slots = Some(((k * share) as u16, last as u16));
                    self.nodes[i].epoch = (k + 1) as u64;
                }
                self.created = true;
                b"+OK\r\n".to_vec()
            }
            ["CLUSTER", "FORGET", _] if self.nodes.iter().any(|n| n.id == args[2]) => {
                self.forgotten.push(args[2].clone());
                b"+OK\r\n".to_vec()
            }
            ["CLUSTER", "FORGET", _] => format!("-ERR Unknown node {}\r\n", args[2]).into_bytes(),
            _ => b"-ERR unknown command\r\n".to_vec(),
        }
    }

    fn info(&mut self, me: usize) -> String {
        let assigned: u32 = self
            .nodes
            .iter()
            .filter_map(|n| n.slots)
            .map(|(a, b)| u32::from(b - a) + 1)
            .sum();
        let converged = self.created && self.info_polls_since_create >= CONVERGE_POLLS;
        if self.created {
            self.info_polls_since_create += 1;
        }
        let mine_only = !self.created && self.nodes[me].slots.is_some();
        let assigned = if mine_only || converged { assigned } else { 0 };
        let epoch = self.nodes.iter().map(|n| n.epoch).max().unwrap_or(0);
        let state = if converged { "ok" } else { "fail" };
        format!(
            "cluster_enabled:1\r\ncluster_state:{state}\r\ncluster_slots_assigned:{assigned}\r\n\
             cluster_known_nodes:{}\r\ncluster_current_epoch:{epoch}\r\ncluster_my_epoch:{}\r\n",
            self.members().len(),
            self.nodes[me].epoch
        )
    }

    fn cluster_nodes(&mut self, me: usize) -> String {
        self.nodes_polls_since_meet += 1;
        let handshake = self.nodes_polls_since_meet <= HANDSHAKE_POLLS;
        let members = self.members();
        let visible: Vec<usize> = if members.contains(&me) {
            members
        } else {
            vec![me]
        };
        let mut text = String::new();
        for i in visible {
            let n = &self.nodes[i];
            let (ip, flags) = match (i == me, handshake) {
                // A node that nobody has met yet does not know its own address.
                (true, _) if !n.met && i != 0 => ("", "myself,master"),
                (true, _) => ("127.0.0.1", "myself,master"),
                (false, true) => ("127.0.0.1", "master,handshake"),
                (false, false) => ("127.0.0.1", "master"),
            };
            let slots = n.slots.map_or(String::new(), |(a, b)| format!(" {a}-{b}"));
            text += &format!(
                "{} {ip}:{}@{} {flags} - 0 1426238317239 {} connected{slots}\n",
                n.id,
                n.port,
                n.port + 10000,
                n.epoch
            );
        }
        text
    }
}

fn bulk(s: &str) -> Vec<u8> {
    format!("${}\r\n{s}\r\n", s.len()).into_bytes()
}

/// Starts one listener thread per node of `model`, filling in ports and ids.
fn start(mut nodes: Vec<FakeNode>) -> (Arc<Mutex<Model>>, Vec<String>) {
    let mut listeners = Vec::new();
    for (i, n) in nodes.iter_mut().enumerate() {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind");
        n.port = l.local_addr().expect("addr").port();
        n.id = format!("{:040x}", 0xe7d1_eecc_u64 + i as u64);
        listeners.push(l);
    }
    let addrs = nodes
        .iter()
        .map(|n| format!("127.0.0.1:{}", n.port))
        .collect();
    let model = Arc::new(Mutex::new(Model {
        nodes,
        ..Model::default()
    }));
    for (i, listener) in listeners.into_iter().enumerate() {
        let model = Arc::clone(&model);
        thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let model = Arc::clone(&model);
                thread::spawn(move || serve(stream, i, &model));
            }
        });
    }
    (model, addrs)
}

fn serve(mut stream: TcpStream, me: usize, model: &Mutex<Model>) {
    stream.set_read_timeout(Some(FAKE_IDLE)).expect("timeout");
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        while let Ok(Decoded::Complete(request, used)) = decode(&buf, 1 << 20) {
            buf.drain(..used);
            let Reply::Array(Some(items)) = request else {
                panic!("request is not an array: {request:?}");
            };
            let args: Vec<String> = items
                .into_iter()
                .map(|item| match item {
                    Reply::Bulk(Some(b)) => String::from_utf8(b).expect("utf-8 argument"),
                    other => panic!("argument is not a bulk string: {other:?}"),
                })
                .collect();
            let reply = model.lock().expect("model").answer(me, &args);
            if stream.write_all(&reply).is_err() {
                return;
            }
        }
        match stream.read(&mut chunk) {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

/// Runs the binary, killing it if it outlives `RUN_DEADLINE`.
fn run(args: &[&str]) -> Run {
    let child = Command::new(env!("CARGO_BIN_EXE_tessera-ctl"))
        .args(args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn tessera-ctl");
    let pid = child.id();
    let (tx, rx) = mpsc::channel::<Output>();
    thread::spawn(move || {
        let _ = tx.send(child.wait_with_output().expect("wait"));
    });
    let Ok(out) = rx.recv_timeout(RUN_DEADLINE) else {
        let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
        panic!("tessera-ctl {args:?} ran past {RUN_DEADLINE:?}");
    };
    Run {
        code: out.status.code().expect("exit code"),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn fresh(n: usize) -> Vec<FakeNode> {
    (0..n).map(|_| FakeNode::default()).collect()
}

fn assert_one_line_error(r: &Run, needle: &str) {
    assert_eq!(r.code, 1, "stdout: {}\nstderr: {}", r.stdout, r.stderr);
    assert_eq!(r.stderr.lines().count(), 1, "{}", r.stderr);
    assert!(r.stderr.starts_with("tessera-ctl: "), "{}", r.stderr);
    assert!(r.stderr.contains(needle), "`{}` lacks `{needle}`", r.stderr);
}

#[test]
fn create_forms_a_cluster() {
    let (model, addrs) = start(fresh(3));
    let mut args = vec!["create"];
    args.extend(addrs.iter().map(String::as_str));
    let r = run(&args);
    assert_eq!(r.code, 0, "stdout: {}\nstderr: {}", r.stdout, r.stderr);
    assert!(
        r.stdout.contains("All 16384 slots covered."),
        "{}",
        r.stdout
    );
    assert!(
        r.stdout
            .contains("cluster_state: ok  current_epoch: 3  known nodes: 3"),
        "{}",
        r.stdout
    );
    for addr in &addrs {
        assert!(
            r.stdout.contains(addr.as_str()),
            "{addr} missing from {}",
            r.stdout
        );
    }
    let model = model.lock().expect("model");
    assert!(model.created && model.nodes[1].met && model.nodes[2].met);
}

#[test]
fn create_refuses_a_node_without_cluster_support() {
    let mut nodes = fresh(2);
    nodes[1].cluster_disabled = true;
    let (model, addrs) = start(nodes);
    let r = run(&["create", &addrs[0], &addrs[1]]);
    let want = format!(
        "{} has cluster support disabled; restart it with `--cluster-enabled yes`",
        addrs[1]
    );
    assert_one_line_error(&r, &want);
    assert!(
        !model.lock().expect("model").nodes[1].met,
        "nothing is sent before the checks"
    );
}

#[test]
fn create_refuses_a_node_in_a_cluster() {
    let mut nodes = fresh(2);
    nodes[0].slots = Some((0, 16383));
    nodes[0].epoch = 5;
    let (_model, addrs) = start(nodes);
    let r = run(&["create", &addrs[0], &addrs[1]]);
    assert_one_line_error(
        &r,
        &format!("node {} already belongs to a cluster (epoch 5)", addrs[0]),
    );
}

#[test]
fn create_refuses_a_node_given_twice() {
    let (_model, addrs) = start(fresh(1));
    let localhost = addrs[0].replace("127.0.0.1", "localhost");
    let r = run(&["create", &addrs[0], &localhost]);
    assert_one_line_error(&r, "are the same node");
}

#[test]
fn create_times_out_saying_what_is_missing() {
    let mut nodes = fresh(3);
    nodes[2].unreachable_bus = true;
    let (_model, addrs) = start(nodes);
    let r = run(&[
        "create",
        &addrs[0],
        &addrs[1],
        &addrs[2],
        "--timeout-secs",
        "1",
    ]);
    assert_one_line_error(
        &r,
        "timed out after 1 s waiting for every node to list all nodes",
    );
    let lacks = format!("  {}: does not list {} yet", addrs[0], addrs[2]);
    assert!(r.stdout.contains(&lacks), "{}", r.stdout);
    assert!(r.stdout.contains(&format!(
        "  {}: does not list {}, {} yet",
        addrs[2], addrs[0], addrs[1]
    )));
}

#[test]
fn status_checks_coverage() {
    let mut nodes = fresh(2);
    nodes[0].met = true;
    nodes[1].met = true;
    nodes[0].slots = Some((0, 8191));
    nodes[1].slots = Some((8192, 16383));
    let (model, addrs) = start(nodes);
    let r = run(&["status", &addrs[1]]);
    assert_eq!(r.code, 0, "stdout: {}\nstderr: {}", r.stdout, r.stderr);
    assert!(r.stdout.starts_with("ID "), "{}", r.stdout);
    assert!(r.stdout.contains(" 0-8191\n") && r.stdout.contains(" 8192-16383\n"));
    assert!(
        r.stdout.contains("All 16384 slots covered."),
        "{}",
        r.stdout
    );

    model.lock().expect("model").nodes[1].slots = Some((9000, 16000));
    let r = run(&["status", &addrs[1]]);
    assert_eq!(r.code, 1, "stdout: {}\nstderr: {}", r.stdout, r.stderr);
    assert!(
        r.stdout
            .contains("Uncovered slots (1191): 8192-8999 16001-16383"),
        "{}",
        r.stdout
    );
    assert!(r.stderr.is_empty(), "{}", r.stderr);

    let r = run(&["status", &addrs[1], "--json"]);
    assert_eq!(r.code, 1);
    assert_eq!(r.stdout.lines().count(), 1, "{}", r.stdout);
    assert!(r
        .stdout
        .contains(r#""covered":false,"uncovered":[[8192,8999],[16001,16383]]"#));
}

#[test]
fn meet_and_forget_print_the_reply() {
    let (model, addrs) = start(fresh(2));
    let r = run(&["meet", &addrs[0], &addrs[1]]);
    assert_eq!((r.code, r.stdout.as_str()), (0, "OK\n"), "{}", r.stderr);
    assert!(model.lock().expect("model").nodes[1].met);

    let id = model.lock().expect("model").nodes[1].id.clone();
    let r = run(&["forget", &addrs[0], &id]);
    assert_eq!((r.code, r.stdout.as_str()), (0, "OK\n"), "{}", r.stderr);
    assert_eq!(model.lock().expect("model").forgotten, [id]);

    let stranger = "0".repeat(40);
    let r = run(&["forget", &addrs[0], &stranger]);
    assert_one_line_error(
        &r,
        &format!("answered CLUSTER FORGET {stranger} with `ERR Unknown node"),
    );
}

#[test]
fn unreachable_node_is_one_line() {
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let addr = format!("127.0.0.1:{port}");
    assert_one_line_error(
        &run(&["status", &addr]),
        &format!("cannot connect to {addr}"),
    );
}

#[test]
fn usage_errors_exit_2() {
    let cases: &[&[&str]] = &[
        &[],
        &["create"],
        &["status", "127.0.0.1"],
        &["status", "127.0.0.1:0"],
        &["meet", "127.0.0.1:7000"],
        &["forget", "127.0.0.1:7000", "not-an-id"],
        &["create", "127.0.0.1:7000", "--timeout-secs", "0"],
    ];
    for args in cases {
        let r = run(args);
        assert_eq!(r.code, 2, "{args:?}: {}", r.stderr);
    }
}

#[test]
fn request_encoding_matches_what_fakes_decode() {
    // The fakes parse requests with the crate's own decoder; check the two agree.
    let bytes = encode(&["CLUSTER", "MEET", "127.0.0.1", "7000"]);
    let Ok(Decoded::Complete(Reply::Array(Some(items)), used)) = decode(&bytes, 1 << 20) else {
        panic!("not decodable");
    };
    assert_eq!(used, bytes.len());
    assert_eq!(items.len(), 4);
}
