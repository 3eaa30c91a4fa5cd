//! `CLUSTER NODES` and `CLUSTER INFO` as Redis 7 formats them, slot ranges, and the coverage
//! check. Pure: text in, values out.
//!
//! `CLUSTER NODES` (redis.io/commands/cluster-nodes) is one line per node:
//! `<id> <ip:port@cport[,hostname[,aux=value...]]> <flags> <master|-> <ping-sent>
//! <pong-recv> <config-epoch> <link-state> <slot> ... <slot>`.

use std::collections::BTreeMap;
use std::fmt;

/// Hash slots in a Redis cluster.
pub const SLOT_COUNT: u16 = 16384;
/// Length of a node id: 40 hex digits (160 random bits).
pub const NODE_ID_LEN: usize = 40;

/// Slots `first..=last`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct SlotRange {
    pub first: u16,
    pub last: u16,
}

impl SlotRange {
    pub fn slot_count(&self) -> u32 {
        u32::from(self.last - self.first) + 1
    }
}

impl fmt::Display for SlotRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.first == self.last {
            write!(f, "{}", self.first)
        } else {
            write!(f, "{}-{}", self.first, self.last)
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Link {
    Connected,
    Disconnected,
}

impl Link {
    pub fn as_str(self) -> &'static str {
        match self {
            Link::Connected => "connected",
            Link::Disconnected => "disconnected",
        }
    }
}

/// One line of `CLUSTER NODES`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeEntry {
    pub id: String,
    /// Empty while the node has not learned its own address (Redis shows `:0@0` or
    /// `:6379@16379` for such a node).
    pub ip: String,
    pub port: u16,
    /// Absent in the pre-Redis-4 form `ip:port`.
    pub cport: Option<u16>,
    pub hostname: Option<String>,
    /// As listed, e.g. `myself`, `master`, `fail?`; `noflags` is kept as sent.
    pub flags: Vec<String>,
    /// `None` for a master (`-`).
    pub master_id: Option<String>,
    pub ping_sent_ms: u64,
    pub pong_recv_ms: u64,
    pub config_epoch: u64,
    pub link: Link,
    /// Served slots, merged and sorted; migrating/importing entries are left out.
    pub slots: Vec<SlotRange>,
}

impl NodeEntry {
    pub fn has_flag(&self, flag: &str) -> bool {
        self.flags.iter().any(|f| f == flag)
    }

    pub fn addr(&self) -> String {
        format!("{}:{}", self.ip, self.port)
    }

    pub fn slot_count(&self) -> u32 {
        self.slots.iter().map(SlotRange::slot_count).sum()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("CLUSTER NODES line {line_no} `{line}`: {reason}")]
    NodesLine {
        line_no: usize,
        line: String,
        reason: String,
    },
    #[error("CLUSTER INFO line {line_no} `{line}` is not `field:value`")]
    InfoLine { line_no: usize, line: String },
    #[error("CLUSTER INFO has no field `{field}`")]
    MissingField { field: String },
    #[error("CLUSTER INFO field `{field}` is `{value}`, not a number")]
    NotANumber { field: String, value: String },
}

/// Parses a whole `CLUSTER NODES` reply. Blank lines are skipped; any other line that does
/// not have the documented shape is an error naming it.
pub fn parse_nodes(text: &str) -> Result<Vec<NodeEntry>, ParseError> {
    text.lines()
        .enumerate()
        .filter(|(_, line)| !line.trim().is_empty())
        .map(|(i, line)| {
            parse_node_line(line).map_err(|reason| ParseError::NodesLine {
                line_no: i + 1,
                line: line.to_string(),
                reason,
            })
        })
        .collect()
}

fn parse_node_line(line: &str) -> Result<NodeEntry, String> {
    let mut fields = line.split_ascii_whitespace();
    let mut next = |name: &str| fields.next().ok_or_else(|| format!("no {name} field"));
    let id = node_id(next("id")?)?;
    let (ip, port, cport, hostname) = parse_addr(next("address")?)?;
    let flags = next("flags")?.split(',').map(str::to_string).collect();
    let master_id = match next("master")? {
        "-" => None,
        m => Some(node_id(m)?),
    };
    let ping_sent_ms = number(next("ping-sent")?, "ping-sent")?;
    let pong_recv_ms = number(next("pong-recv")?, "pong-recv")?;
    let config_epoch = number(next("config-epoch")?, "config-epoch")?;
    let link = match next("link-state")? {
        "connected" => Link::Connected,
        "disconnected" => Link::Disconnected,
        other => {
            return Err(format!(
                "link state `{other}` is neither connected nor disconnected"
            ))
        }
    };
    let mut slots = Vec::new();
    for token in fields {
        // `[slot->-id]` (migrating) and `[slot-<-id]` (importing) are not served slots.
        if !token.starts_with('[') {
            slots.push(parse_slot_range(token)?);
        }
    }
    Ok(NodeEntry {
        id,
        ip,
        port,
        cport,
        hostname,
        flags,
        master_id,
        ping_sent_ms,
        pong_recv_ms,
        config_epoch,
        link,
        slots: merge(slots),
    })
}

/// Whether `s` has the shape of a node id: 40 hex digits.
pub fn is_node_id(s: &str) -> bool {
    s.len() == NODE_ID_LEN && s.bytes().all(|b| b.is_ascii_hexdigit())
}

fn node_id(s: &str) -> Result<String, String> {
    if is_node_id(s) {
        Ok(s.to_string())
    } else {
        Err(format!("`{s}` is not a node id ({NODE_ID_LEN} hex digits)"))
    }
}

type Addr = (String, u16, Option<u16>, Option<String>);

/// `ip:port@cport[,hostname[,aux...]]`. The port is after the last colon, so a bare IPv6
/// address (as Redis prints it) keeps its colons.
fn parse_addr(s: &str) -> Result<Addr, String> {
    let mut parts = s.split(',');
    let addr = parts.next().unwrap_or_default();
    let hostname = parts.next().filter(|h| !h.is_empty()).map(str::to_string);
    let (ip_port, cport) = match addr.split_once('@') {
        Some((ip_port, cport)) => (ip_port, Some(port(cport, s)?)),
        None => (addr, None),
    };
    let (ip, p) = ip_port
        .rsplit_once(':')
        .ok_or_else(|| format!("address `{s}` is not ip:port@cport"))?;
    Ok((ip.to_string(), port(p, s)?, cport, hostname))
}

fn port(p: &str, addr: &str) -> Result<u16, String> {
    p.parse()
        .map_err(|_| format!("address `{addr}` has a bad port `{p}`"))
}

fn number(s: &str, name: &str) -> Result<u64, String> {
    s.parse()
        .map_err(|_| format!("{name} `{s}` is not a number"))
}

/// `N` or `N-M`, with `N <= M < 16384`.
pub fn parse_slot_range(s: &str) -> Result<SlotRange, String> {
    let slot = |t: &str| match t.parse::<u16>() {
        Ok(n) if n < SLOT_COUNT => Ok(n),
        _ => Err(format!(
            "`{s}` is not a slot or slot range (0-{})",
            SLOT_COUNT - 1
        )),
    };
    let (first, last) = match s.split_once('-') {
        Some((a, b)) => (slot(a)?, slot(b)?),
        None => (slot(s)?, slot(s)?),
    };
    if first > last {
        return Err(format!("slot range `{s}` runs backwards"));
    }
    Ok(SlotRange { first, last })
}

/// Sorts ranges and joins those that overlap or touch: `0-5 6-10 3` becomes `0-10`.
pub fn merge(ranges: impl IntoIterator<Item = SlotRange>) -> Vec<SlotRange> {
    let mut sorted: Vec<SlotRange> = ranges.into_iter().collect();
    sorted.sort_unstable();
    let mut out: Vec<SlotRange> = Vec::with_capacity(sorted.len());
    for r in sorted {
        match out.last_mut() {
            Some(prev) if u32::from(r.first) <= u32::from(prev.last) + 1 => {
                prev.last = prev.last.max(r.last);
            }
            _ => out.push(r),
        }
    }
    out
}

/// Ranges as `CLUSTER NODES` lists them, space-separated; `-` for none.
pub fn format_ranges(ranges: &[SlotRange]) -> String {
    if ranges.is_empty() {
        return "-".to_string();
    }
    let parts: Vec<String> = ranges.iter().map(SlotRange::to_string).collect();
    parts.join(" ")
}

/// Which slots no node serves, and which more than one node claims.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Coverage {
    pub uncovered: Vec<SlotRange>,
    pub shared: Vec<SlotRange>,
}

impl Coverage {
    /// Every slot has exactly one owner.
    pub fn is_complete(&self) -> bool {
        self.uncovered.is_empty() && self.shared.is_empty()
    }
}

pub fn coverage(nodes: &[NodeEntry]) -> Coverage {
    let mut owners = vec![0u32; usize::from(SLOT_COUNT)];
    for node in nodes {
        // `slots` is merged, so a node that lists a slot twice counts once.
        for r in &node.slots {
            for slot in r.first..=r.last {
                owners[usize::from(slot)] += 1;
            }
        }
    }
    Coverage {
        uncovered: runs(&owners, |n| n == 0),
        shared: runs(&owners, |n| n > 1),
    }
}

/// The maximal runs of slots whose owner count satisfies `pred`.
fn runs(owners: &[u32], pred: impl Fn(u32) -> bool) -> Vec<SlotRange> {
    let mut out: Vec<SlotRange> = Vec::new();
    for (slot, &n) in (0..SLOT_COUNT).zip(owners) {
        if !pred(n) {
            continue;
        }
        match out.last_mut() {
            Some(r) if r.last + 1 == slot => r.last = slot,
            _ => out.push(SlotRange {
                first: slot,
                last: slot,
            }),
        }
    }
    out
}

/// `CLUSTER INFO`: `field:value` lines.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ClusterInfo {
    fields: BTreeMap<String, String>,
}

impl ClusterInfo {
    pub fn get(&self, field: &str) -> Option<&str> {
        self.fields.get(field).map(String::as_str)
    }

    pub fn text(&self, field: &str) -> Result<&str, ParseError> {
        self.get(field).ok_or_else(|| ParseError::MissingField {
            field: field.to_string(),
        })
    }

    pub fn number(&self, field: &str) -> Result<u64, ParseError> {
        let value = self.text(field)?;
        value.parse().map_err(|_| ParseError::NotANumber {
            field: field.to_string(),
            value: value.to_string(),
        })
    }
}

/// Parses a `CLUSTER INFO` reply; blank lines and `#` section headers (as in INFO) are
/// skipped.
pub fn parse_info(text: &str) -> Result<ClusterInfo, ParseError> {
    let mut fields = BTreeMap::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (field, value) = line.split_once(':').ok_or_else(|| ParseError::InfoLine {
            line_no: i + 1,
            line: line.to_string(),
        })?;
        fields.insert(field.to_string(), value.to_string());
    }
    Ok(ClusterInfo { fields })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The example from redis.io/commands/cluster-nodes (Redis 7, with hostnames), one
    /// master per third of the slots, one replica each, and a migrating slot.
    const REDIS_DOCS_NODES: &str = "\
07c37dfeb235213a872192d90877d0cd55635b91 127.0.0.1:30004@31004,hostname4 slave e7d1eecce10fd6bb5eb35b9f99a514335d9ba9ca 0 1426238317239 4 connected
67ed2db8d677e59ec4a4cefb06858cf2a1a89fa1 127.0.0.1:30002@31002,hostname2 master - 0 1426238316232 2 connected 5461-10922
292f8b365bb7edb5e285caf0b7e6ddc7265d2f4f 127.0.0.1:30003@31003,hostname3 master - 0 1426238318243 3 connected 10923-16383
6ec23923021cf3ffec47632106199cb7f496ce01 127.0.0.1:30005@31005,hostname5 slave 67ed2db8d677e59ec4a4cefb06858cf2a1a89fa1 0 1426238316232 5 connected
824fe116063bc5fcf9f4ffd895bc17aee7731ac3 127.0.0.1:30006@31006,hostname6 slave 292f8b365bb7edb5e285caf0b7e6ddc7265d2f4f 0 1426238317741 6 connected
e7d1eecce10fd6bb5eb35b9f99a514335d9ba9ca 127.0.0.1:30001@31001,hostname1 myself,master - 0 0 1 connected 0-5460 [93->-292f8b365bb7edb5e285caf0b7e6ddc7265d2f4f]
";

    fn range(first: u16, last: u16) -> SlotRange {
        SlotRange { first, last }
    }

    fn info(text: &str) -> ClusterInfo {
        parse_info(text).expect("info")
    }

    #[test]
    fn parses_the_redis_docs_example() {
        let nodes = parse_nodes(REDIS_DOCS_NODES).expect("parse");
        assert_eq!(nodes.len(), 6);
        let replica = &nodes[0];
        assert_eq!(replica.id, "07c37dfeb235213a872192d90877d0cd55635b91");
        assert_eq!((replica.ip.as_str(), replica.port), ("127.0.0.1", 30004));
        assert_eq!(replica.cport, Some(31004));
        assert_eq!(replica.hostname.as_deref(), Some("hostname4"));
        assert_eq!(replica.flags, ["slave"]);
        assert_eq!(
            replica.master_id.as_deref(),
            Some("e7d1eecce10fd6bb5eb35b9f99a514335d9ba9ca")
        );
        assert_eq!(
            (replica.ping_sent_ms, replica.pong_recv_ms),
            (0, 1426238317239)
        );
        assert_eq!(replica.config_epoch, 4);
        assert_eq!(replica.link, Link::Connected);
        assert!(replica.slots.is_empty());
        let me = &nodes[5];
        assert!(me.has_flag("myself") && me.has_flag("master"));
        assert_eq!(me.master_id, None);
        // The migrating entry `[93->-…]` is not a served slot.
        assert_eq!(me.slots, [range(0, 5460)]);
        assert_eq!(me.slot_count(), 5461);
        assert!(coverage(&nodes).is_complete());
    }

    /// Shapes CLUSTER NODES takes besides the docs example: no hostname, the pre-4.0
    /// address without `@cport`, a node that does not know its own address yet, IPv6,
    /// Redis 7.2 auxiliary fields, an importing entry, CRLF line ends.
    #[test]
    fn parses_other_line_shapes() {
        // (address field, ip, port, cport, hostname)
        type Case<'a> = (&'a str, &'a str, u16, Option<u16>, Option<&'a str>);
        let cases: &[Case] = &[
            ("127.0.0.1:7000@17000", "127.0.0.1", 7000, Some(17000), None),
            ("127.0.0.1:7000", "127.0.0.1", 7000, None, None),
            (":0@0", "", 0, Some(0), None),
            ("::1:7000@17000", "::1", 7000, Some(17000), None),
            (
                "10.0.0.1:7000@17000,,shard-id=ab",
                "10.0.0.1",
                7000,
                Some(17000),
                None,
            ),
            (
                "10.0.0.1:7000@17000,h1,shard-id=ab",
                "10.0.0.1",
                7000,
                Some(17000),
                Some("h1"),
            ),
        ];
        for (addr, ip, port, cport, hostname) in cases {
            let line = format!(
                "e7d1eecce10fd6bb5eb35b9f99a514335d9ba9ca {addr} myself,master - 0 0 7 \
                 disconnected 0 2-3 [5-<-07c37dfeb235213a872192d90877d0cd55635b91]\r\n"
            );
            let node = &parse_nodes(&line).expect(addr)[0];
            assert_eq!(
                (
                    node.ip.as_str(),
                    node.port,
                    node.cport,
                    node.hostname.as_deref()
                ),
                (*ip, *port, *cport, *hostname),
                "{addr}"
            );
            assert_eq!(node.link, Link::Disconnected);
            assert_eq!(node.slots, [range(0, 0), range(2, 3)]);
        }
    }

    #[test]
    fn malformed_lines_are_named() {
        // `ID` stands for a valid node id.
        let cases = [
            ("ID", "no address field"),
            ("ID 1.2.3.4:1@2 master -", "no ping-sent field"),
            (
                "xyz 1.2.3.4:1@2 master - 0 0 1 connected",
                "`xyz` is not a node id",
            ),
            (
                "ID 1.2.3.4@2 master - 0 0 1 connected",
                "is not ip:port@cport",
            ),
            (
                "ID 1.2.3.4:99999@2 master - 0 0 1 connected",
                "bad port `99999`",
            ),
            (
                "ID 1.2.3.4:1@2 master abc 0 0 1 connected",
                "`abc` is not a node id",
            ),
            (
                "ID 1.2.3.4:1@2 master - 0 0 -1 connected",
                "config-epoch `-1`",
            ),
            ("ID 1.2.3.4:1@2 master - 0 0 1 up", "link state `up`"),
            (
                "ID 1.2.3.4:1@2 master - 0 0 1 connected 16384",
                "`16384` is not a slot",
            ),
            (
                "ID 1.2.3.4:1@2 master - 0 0 1 connected 9-3",
                "runs backwards",
            ),
            (
                "ID 1.2.3.4:1@2 master - 0 0 1 connected 1-x",
                "`1-x` is not a slot",
            ),
        ];
        for (line, reason) in cases {
            let line = line.replace("ID", "e7d1eecce10fd6bb5eb35b9f99a514335d9ba9ca");
            let text = format!("\n{line}\n");
            let err = parse_nodes(&text).expect_err(&line).to_string();
            assert!(
                err.starts_with(&format!("CLUSTER NODES line 2 `{line}`")),
                "{err}"
            );
            assert!(err.contains(reason), "{err} lacks {reason}");
        }
    }

    #[test]
    fn merges_and_formats_ranges() {
        let cases: &[(&[(u16, u16)], &str)] = &[
            (&[], "-"),
            (&[(7, 7)], "7"),
            (&[(6, 10), (0, 5), (3, 3)], "0-10"),
            (&[(0, 5460), (10923, 12000)], "0-5460 10923-12000"),
            (&[(0, 2), (4, 4), (5, 9), (1, 1)], "0-2 4-9"),
            (&[(0, 16383), (100, 200)], "0-16383"),
        ];
        for (input, want) in cases {
            let merged = merge(input.iter().map(|&(a, b)| range(a, b)));
            assert_eq!(format_ranges(&merged), *want, "{input:?}");
        }
    }

    #[test]
    fn coverage_finds_gaps_and_double_owners() {
        let text = "\
67ed2db8d677e59ec4a4cefb06858cf2a1a89fa1 127.0.0.1:30002@31002 master - 0 0 2 connected 1-10922
292f8b365bb7edb5e285caf0b7e6ddc7265d2f4f 127.0.0.1:30003@31003 master - 0 0 3 connected 10900-16000 16002
";
        let cov = coverage(&parse_nodes(text).expect("parse"));
        assert_eq!(
            cov.uncovered,
            [range(0, 0), range(16001, 16001), range(16003, 16383)]
        );
        assert_eq!(cov.shared, [range(10900, 10922)]);
        assert!(!cov.is_complete());
        let none = coverage(&[]);
        assert_eq!(none.uncovered, [range(0, 16383)]);
    }

    #[test]
    fn parses_cluster_info() {
        // The shape of redis.io/commands/cluster-info's example.
        let text = "cluster_enabled:1\r\ncluster_state:ok\r\ncluster_slots_assigned:16384\r\n\
                    cluster_slots_ok:16384\r\ncluster_slots_pfail:0\r\ncluster_slots_fail:0\r\n\
                    cluster_known_nodes:6\r\ncluster_size:3\r\ncluster_current_epoch:6\r\n\
                    cluster_my_epoch:2\r\ncluster_stats_messages_sent:1483972\r\n";
        let i = info(text);
        assert_eq!(i.text("cluster_state"), Ok("ok"));
        assert_eq!(i.number("cluster_current_epoch"), Ok(6));
        assert_eq!(
            i.number("nope"),
            Err(ParseError::MissingField {
                field: "nope".into()
            })
        );
        assert_eq!(
            info("cluster_state:ok\n").number("cluster_state"),
            Err(ParseError::NotANumber {
                field: "cluster_state".into(),
                value: "ok".into()
            })
        );
        assert_eq!(
            parse_info("# Cluster\ncluster_state:ok\nbogus\n"),
            Err(ParseError::InfoLine {
                line_no: 3,
                line: "bogus".into()
            })
        );
    }
}
