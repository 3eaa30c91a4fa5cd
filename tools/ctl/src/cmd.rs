//! The subcommands. Each connects to the nodes it names, sends cluster commands one at a
//! time, blocking, and writes what it found to `out`; `main` turns the [`Outcome`] or the
//! [`CtlError`] into an exit status.

use std::fmt;
use std::io::{self, Write};
use std::net::{SocketAddr, SocketAddrV4, ToSocketAddrs};
use std::str::FromStr;
use std::thread;
use std::time::{Duration, Instant};

use crate::converge::{join_problems, ready_problems};
use crate::nodes::{self, ClusterInfo, NodeEntry, ParseError};
use crate::report::{self, Status};
use crate::resp::{Conn, Reply, RespError};
use crate::{IO_TIMEOUT_MS, POLL_INTERVAL_MS};

/// Longest piece of an unexpected reply quoted in an error message, in characters.
const REPLY_QUOTE_MAX_CHARS: usize = 120;

/// A node as given on the command line: `HOST:PORT`, `[IPV6]:PORT` also parses but has to
/// resolve to IPv4.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeAddr {
    pub host: String,
    pub port: u16,
}

impl FromStr for NodeAddr {
    type Err = String;

    fn from_str(s: &str) -> Result<NodeAddr, String> {
        let bad = || format!("`{s}` is not HOST:PORT (e.g. 127.0.0.1:7000)");
        let (host, port) = s.rsplit_once(':').ok_or_else(bad)?;
        let host = host.trim_start_matches('[').trim_end_matches(']');
        match port.parse::<u16>() {
            Ok(port) if port != 0 && !host.is_empty() => Ok(NodeAddr {
                host: host.to_string(),
                port,
            }),
            _ => Err(bad()),
        }
    }
}

impl fmt::Display for NodeAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.host, self.port)
    }
}

/// How a command that ran to its end came out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Exit 0.
    Ok,
    /// A check failed (slots not covered exactly once); the output says which. Exit 1.
    CheckFailed,
}

#[derive(Debug, thiserror::Error)]
pub enum CtlError {
    #[error("cannot resolve {node}: {source}; check the host name")]
    Resolve { node: String, source: io::Error },
    #[error("{node} has no IPv4 address; give the node as IPV4:PORT")]
    NoIpv4 { node: String },
    #[error("cannot connect to {node}: {source}; is the node running and listening there?")]
    Connect { node: String, source: io::Error },
    #[error("{node}: {cmd}: {source}")]
    Transport {
        node: String,
        cmd: String,
        source: RespError,
    },
    #[error("{node} answered {cmd} with `{message}`")]
    Reply {
        node: String,
        cmd: String,
        message: String,
    },
    #[error("{node} answered {cmd} with `{got}`, expected {expected}")]
    Unexpected {
        node: String,
        cmd: String,
        got: String,
        expected: &'static str,
    },
    #[error("{node}: {source}; is this a tessera or Redis node in cluster mode?")]
    Parse { node: String, source: ParseError },
    #[error("{node} has cluster support disabled; restart it with `--cluster-enabled yes`")]
    ClusterDisabled { node: String },
    #[error(
        "node {node} already belongs to a cluster (epoch {epoch}); create needs empty nodes: \
         leave it out, or use `status` to inspect that cluster"
    )]
    AlreadyInCluster { node: String, epoch: u64 },
    #[error("{first} and {second} are the same node ({addr}); give each node once")]
    Duplicate {
        first: String,
        second: String,
        addr: SocketAddrV4,
    },
    #[error(
        "timed out after {timeout_secs} s waiting for {goal}; the lines above say what each \
         node lacks: check that the nodes reach each other's cluster bus port and read their \
         logs, or raise --timeout-secs"
    )]
    Timeout {
        goal: &'static str,
        timeout_secs: u64,
    },
    #[error("cannot write the output: {0}")]
    Output(#[from] io::Error),
}

/// The address a node is given to other nodes by: the first IPv4 address `addr` resolves
/// to, since `CLUSTER MEET` takes an IP.
pub fn resolve_ipv4(addr: &NodeAddr) -> Result<SocketAddrV4, CtlError> {
    let found = (addr.host.as_str(), addr.port)
        .to_socket_addrs()
        .map_err(|source| CtlError::Resolve {
            node: addr.to_string(),
            source,
        })?;
    found
        .into_iter()
        .find_map(|a| match a {
            SocketAddr::V4(v4) => Some(v4),
            SocketAddr::V6(_) => None,
        })
        .ok_or_else(|| CtlError::NoIpv4 {
            node: addr.to_string(),
        })
}

/// A connected node, named in messages as the operator gave it.
struct Node {
    name: String,
    addr: SocketAddrV4,
    conn: Conn,
}

impl Node {
    /// Resolves and connects, blocking at most `IO_TIMEOUT_MS`.
    fn open(addr: &NodeAddr) -> Result<Node, CtlError> {
        let ip = resolve_ipv4(addr)?;
        let timeout = Duration::from_millis(IO_TIMEOUT_MS);
        let conn =
            Conn::connect(SocketAddr::V4(ip), timeout).map_err(|source| CtlError::Connect {
                node: addr.to_string(),
                source,
            })?;
        Ok(Node {
            name: addr.to_string(),
            addr: ip,
            conn,
        })
    }

    /// Sends one command and blocks for its reply; an error reply becomes an `Err`.
    fn call(&mut self, args: &[&str]) -> Result<Reply, CtlError> {
        let cmd = args.join(" ");
        match self.conn.call(args) {
            Ok(Reply::Error(message)) if message.contains("cluster support disabled") => {
                Err(CtlError::ClusterDisabled {
                    node: self.name.clone(),
                })
            }
            Ok(Reply::Error(message)) => Err(CtlError::Reply {
                node: self.name.clone(),
                cmd,
                message,
            }),
            Ok(reply) => Ok(reply),
            Err(source) => Err(CtlError::Transport {
                node: self.name.clone(),
                cmd,
                source,
            }),
        }
    }

    fn unexpected(&self, args: &[&str], got: &Reply, expected: &'static str) -> CtlError {
        CtlError::Unexpected {
            node: self.name.clone(),
            cmd: args.join(" "),
            got: got
                .to_string()
                .chars()
                .take(REPLY_QUOTE_MAX_CHARS)
                .collect(),
            expected,
        }
    }

    fn call_text(&mut self, args: &[&str]) -> Result<String, CtlError> {
        match self.call(args)? {
            Reply::Bulk(Some(bytes)) => Ok(String::from_utf8_lossy(&bytes).into_owned()),
            other => Err(self.unexpected(args, &other, "a bulk string")),
        }
    }

    fn call_ok(&mut self, args: &[&str]) -> Result<(), CtlError> {
        match self.call(args)? {
            Reply::Simple(s) if s == "OK" => Ok(()),
            other => Err(self.unexpected(args, &other, "OK")),
        }
    }

    fn parse_error(&self, source: ParseError) -> CtlError {
        CtlError::Parse {
            node: self.name.clone(),
            source,
        }
    }

    fn cluster_nodes(&mut self) -> Result<Vec<NodeEntry>, CtlError> {
        let text = self.call_text(&["CLUSTER", "NODES"])?;
        nodes::parse_nodes(&text).map_err(|e| self.parse_error(e))
    }

    fn cluster_info(&mut self) -> Result<ClusterInfo, CtlError> {
        let text = self.call_text(&["CLUSTER", "INFO"])?;
        nodes::parse_info(&text).map_err(|e| self.parse_error(e))
    }
}

/// `status`: the slot table as `node` sees it, and the coverage check.
pub fn status(node: &NodeAddr, json: bool, out: &mut dyn Write) -> Result<Outcome, CtlError> {
    print_status(&mut Node::open(node)?, json, out)
}

fn print_status(node: &mut Node, json: bool, out: &mut dyn Write) -> Result<Outcome, CtlError> {
    let entries = node.cluster_nodes()?;
    let info = node.cluster_info()?;
    let status = Status::new(entries, &info).map_err(|e| node.parse_error(e))?;
    if json {
        writeln!(out, "{}", report::json(&status))?;
    } else {
        out.write_all(report::table(&status).as_bytes())?;
    }
    Ok(if status.coverage.is_complete() {
        Outcome::Ok
    } else {
        Outcome::CheckFailed
    })
}

/// `meet`: asks `node` to meet `new_node` (`CLUSTER MEET ip port`).
pub fn meet(
    node: &NodeAddr,
    new_node: &NodeAddr,
    out: &mut dyn Write,
) -> Result<Outcome, CtlError> {
    let mut node = Node::open(node)?;
    let new_addr = resolve_ipv4(new_node)?;
    let (ip, port) = (new_addr.ip().to_string(), new_addr.port().to_string());
    let reply = node.call(&["CLUSTER", "MEET", &ip, &port])?;
    writeln!(out, "{reply}")?;
    Ok(Outcome::Ok)
}

/// `forget`: asks `node` to forget the node with id `node_id` (`CLUSTER FORGET id`).
pub fn forget(node: &NodeAddr, node_id: &str, out: &mut dyn Write) -> Result<Outcome, CtlError> {
    let reply = Node::open(node)?.call(&["CLUSTER", "FORGET", node_id])?;
    writeln!(out, "{reply}")?;
    Ok(Outcome::Ok)
}

/// `create`: forms one cluster of the empty nodes `addrs`, the first of which introduces
/// the others and places the slots. Blocks until the cluster is ready or `timeout` has
/// passed since the call began.
pub fn create(
    addrs: &[NodeAddr],
    timeout: Duration,
    out: &mut dyn Write,
) -> Result<Outcome, CtlError> {
    assert!(
        !addrs.is_empty(),
        "the command line requires at least one node"
    );
    let deadline = Instant::now() + timeout;
    let mut nodes = open_empty(addrs)?;
    writeln!(out, "{} nodes are in cluster mode and empty.", nodes.len())?;

    let expected: Vec<String> = nodes.iter().map(|n| n.addr.to_string()).collect();
    let (first, others) = nodes.split_at_mut(1);
    let first = &mut first[0];
    for other in others.iter() {
        let (ip, port) = (other.addr.ip().to_string(), other.addr.port().to_string());
        first.call_ok(&["CLUSTER", "MEET", &ip, &port])?;
    }
    writeln!(
        out,
        "{} met the others; waiting for every node to list all of them.",
        first.name
    )?;
    let goal = "every node to list all nodes, none failing or in handshake";
    wait_blocking(deadline, timeout, goal, out, || {
        let mut problems = Vec::with_capacity(nodes.len());
        for node in nodes.iter_mut() {
            let entries = node.cluster_nodes()?;
            let found = join_problems(&entries, &expected, &node.addr.to_string());
            problems.push((node.name.clone(), found));
        }
        Ok(problems)
    })?;

    nodes[0].call_ok(&["CLUSTER", "CREATE"])?;
    writeln!(
        out,
        "All nodes joined; {} placed the slots. Waiting for every node to agree.",
        nodes[0].name
    )?;
    let goal = "cluster_state:ok, 16384 slots assigned and one current epoch on every node";
    wait_blocking(deadline, timeout, goal, out, || {
        let infos = nodes
            .iter_mut()
            .map(Node::cluster_info)
            .collect::<Result<Vec<_>, _>>()?;
        let names = nodes.iter().map(|n| n.name.clone());
        Ok(names.zip(ready_problems(&infos)).collect())
    })?;
    writeln!(out)?;
    print_status(&mut nodes[0], false, out)
}

/// Connects to every node and checks that it runs in cluster mode, has no slots yet, and is
/// not given twice.
fn open_empty(addrs: &[NodeAddr]) -> Result<Vec<Node>, CtlError> {
    let mut nodes: Vec<Node> = Vec::with_capacity(addrs.len());
    for addr in addrs {
        let mut node = Node::open(addr)?;
        if let Some(prev) = nodes.iter().find(|n| n.addr == node.addr) {
            return Err(CtlError::Duplicate {
                first: prev.name.clone(),
                second: node.name,
                addr: node.addr,
            });
        }
        let info = node.cluster_info()?;
        let number = |field| info.number(field).map_err(|e| node.parse_error(e));
        if number("cluster_slots_assigned")? != 0 {
            return Err(CtlError::AlreadyInCluster {
                node: node.name.clone(),
                epoch: number("cluster_current_epoch")?,
            });
        }
        nodes.push(node);
    }
    Ok(nodes)
}

/// What each node, by name, still lacks; all lists empty means done.
type Problems = Vec<(String, Vec<String>)>;

/// Runs `check` every `POLL_INTERVAL_MS`, sleeping the thread in between, until it finds
/// nothing lacking. At `deadline` it writes what each node still lacks to `out` and fails.
fn wait_blocking(
    deadline: Instant,
    timeout: Duration,
    goal: &'static str,
    out: &mut dyn Write,
    mut check: impl FnMut() -> Result<Problems, CtlError>,
) -> Result<(), CtlError> {
    loop {
        let problems = check()?;
        if problems.iter().all(|(_, p)| p.is_empty()) {
            return Ok(());
        }
        let now = Instant::now();
        if now >= deadline {
            writeln!(out, "Still waiting for {goal}:")?;
            for (name, lacks) in &problems {
                for lack in lacks {
                    writeln!(out, "  {name}: {lack}")?;
                }
            }
            return Err(CtlError::Timeout {
                goal,
                timeout_secs: timeout.as_secs(),
            });
        }
        thread::sleep(Duration::from_millis(POLL_INTERVAL_MS).min(deadline - now));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_node_addresses() {
        let ok = [
            ("127.0.0.1:7000", "127.0.0.1", 7000),
            ("node-1.example:6379", "node-1.example", 6379),
            ("[::1]:7000", "::1", 7000),
        ];
        for (s, host, port) in ok {
            let want = NodeAddr {
                host: host.into(),
                port,
            };
            assert_eq!(s.parse(), Ok(want), "{s}");
        }
        for bad in ["127.0.0.1", ":7000", "h:0", "h:65536", "h:x", ""] {
            assert!(bad.parse::<NodeAddr>().is_err(), "{bad}");
        }
    }

    #[test]
    fn resolves_to_ipv4() {
        let addr = NodeAddr {
            host: "127.0.0.1".into(),
            port: 7000,
        };
        assert_eq!(
            resolve_ipv4(&addr).expect("resolve").to_string(),
            "127.0.0.1:7000"
        );
        let v6 = NodeAddr {
            host: "::1".into(),
            port: 7000,
        };
        assert!(matches!(resolve_ipv4(&v6), Err(CtlError::NoIpv4 { .. })));
    }
}
