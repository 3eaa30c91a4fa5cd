//! What `status` prints: a table for people, or one JSON object for scripts. Pure.

use std::fmt::Write as _;

use crate::nodes::{coverage, format_ranges, ClusterInfo, Coverage, NodeEntry, ParseError};
use crate::nodes::{SlotRange, SLOT_COUNT};

/// One node's view of the cluster: its `CLUSTER NODES` and `CLUSTER INFO`.
#[derive(Debug, Clone)]
pub struct Status {
    /// Sorted by address, so two runs print in the same order.
    pub nodes: Vec<NodeEntry>,
    pub state: String,
    pub current_epoch: u64,
    pub coverage: Coverage,
}

impl Status {
    pub fn new(mut nodes: Vec<NodeEntry>, info: &ClusterInfo) -> Result<Status, ParseError> {
        nodes.sort_by(|a, b| (&a.ip, a.port, &a.id).cmp(&(&b.ip, b.port, &b.id)));
        Ok(Status {
            state: info.text("cluster_state")?.to_string(),
            current_epoch: info.number("cluster_current_epoch")?,
            coverage: coverage(&nodes),
            nodes,
        })
    }
}

fn slot_total(ranges: &[SlotRange]) -> u32 {
    ranges.iter().map(SlotRange::slot_count).sum()
}

/// The table: one line per node, then the cluster's state and the coverage check.
pub fn table(status: &Status) -> String {
    let rows: Vec<[String; 7]> = status
        .nodes
        .iter()
        .map(|n| {
            [
                n.id.clone(),
                n.addr(),
                n.flags.join(","),
                n.link.as_str().to_string(),
                n.config_epoch.to_string(),
                n.slot_count().to_string(),
                format_ranges(&n.slots),
            ]
        })
        .collect();
    let header = ["ID", "ADDRESS", "FLAGS", "LINK", "EPOCH", "SLOTS", "RANGES"].map(String::from);
    let mut width = header.clone().map(|h| h.len());
    for row in &rows {
        for (w, cell) in width.iter_mut().zip(row) {
            *w = (*w).max(cell.len());
        }
    }
    let mut out = String::new();
    for row in std::iter::once(&header).chain(&rows) {
        let [id, addr, flags, link, epoch, slots, ranges] = row;
        let _ = writeln!(
            out,
            "{id:<w0$}  {addr:<w1$}  {flags:<w2$}  {link:<w3$}  {epoch:>w4$}  {slots:>w5$}  {ranges}",
            w0 = width[0],
            w1 = width[1],
            w2 = width[2],
            w3 = width[3],
            w4 = width[4],
            w5 = width[5],
        );
    }
    let _ = writeln!(
        out,
        "\ncluster_state: {}  current_epoch: {}  known nodes: {}",
        status.state,
        status.current_epoch,
        status.nodes.len()
    );
    let cov = &status.coverage;
    if cov.is_complete() {
        let _ = writeln!(out, "All {SLOT_COUNT} slots covered.");
    }
    if !cov.uncovered.is_empty() {
        let n = slot_total(&cov.uncovered);
        let _ = writeln!(
            out,
            "Uncovered slots ({n}): {}",
            format_ranges(&cov.uncovered)
        );
    }
    if !cov.shared.is_empty() {
        let n = slot_total(&cov.shared);
        let _ = writeln!(
            out,
            "Slots claimed by more than one node ({n}): {}",
            format_ranges(&cov.shared)
        );
    }
    out
}

/// One JSON object on one line. Slot ranges are `[first, last]` pairs, both inclusive.
pub fn json(status: &Status) -> String {
    let nodes: Vec<String> = status.nodes.iter().map(node_json).collect();
    format!(
        "{{\"cluster_state\":{},\"current_epoch\":{},\"nodes\":[{}],\"covered\":{},\
         \"uncovered\":{},\"shared\":{}}}",
        string(&status.state),
        status.current_epoch,
        nodes.join(","),
        status.coverage.is_complete(),
        ranges(&status.coverage.uncovered),
        ranges(&status.coverage.shared),
    )
}

fn node_json(n: &NodeEntry) -> String {
    let flags: Vec<String> = n.flags.iter().map(|f| string(f)).collect();
    format!(
        "{{\"id\":{},\"addr\":{},\"hostname\":{},\"flags\":[{}],\"master\":{},\"link\":{},\
         \"config_epoch\":{},\"slots\":{},\"slot_count\":{}}}",
        string(&n.id),
        string(&n.addr()),
        n.hostname.as_deref().map_or("null".to_string(), string),
        flags.join(","),
        n.master_id.as_deref().map_or("null".to_string(), string),
        string(n.link.as_str()),
        n.config_epoch,
        ranges(&n.slots),
        n.slot_count(),
    )
}

fn ranges(rs: &[SlotRange]) -> String {
    let pairs: Vec<String> = rs
        .iter()
        .map(|r| format!("[{},{}]", r.first, r.last))
        .collect();
    format!("[{}]", pairs.join(","))
}

/// A JSON string literal; a hostname or flag comes from the node and may hold anything.
fn string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if u32::from(c) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nodes::{parse_info, parse_nodes};

    const NODES: &str = "\
67ed2db8d677e59ec4a4cefb06858cf2a1a89fa1 127.0.0.1:30002@31002,h\"2 master,fail? - 0 1426238316232 2 disconnected 5461-10922
e7d1eecce10fd6bb5eb35b9f99a514335d9ba9ca 127.0.0.1:30001@31001 myself,master - 0 0 1 connected 0-5460
";

    fn status(nodes: &str, state: &str) -> Status {
        let info = format!("cluster_state:{state}\r\ncluster_current_epoch:6\r\n");
        Status::new(
            parse_nodes(nodes).expect("nodes"),
            &parse_info(&info).expect("info"),
        )
        .expect("status")
    }

    #[test]
    fn table_lists_nodes_by_address_and_the_gap() {
        let got = table(&status(NODES, "fail"));
        let want = "\
ID                                        ADDRESS          FLAGS          LINK          EPOCH  SLOTS  RANGES
e7d1eecce10fd6bb5eb35b9f99a514335d9ba9ca  127.0.0.1:30001  myself,master  connected         1   5461  0-5460
67ed2db8d677e59ec4a4cefb06858cf2a1a89fa1  127.0.0.1:30002  master,fail?   disconnected      2   5462  5461-10922

cluster_state: fail  current_epoch: 6  known nodes: 2
Uncovered slots (5461): 10923-16383
";
        assert_eq!(got, want);
    }

    #[test]
    fn table_says_when_all_slots_are_covered() {
        let nodes = format!(
            "{NODES}292f8b365bb7edb5e285caf0b7e6ddc7265d2f4f 127.0.0.1:30003@31003 master - 0 0 3 connected 10923-16383 0\n"
        );
        let got = table(&status(&nodes, "ok"));
        assert!(
            got.contains("Slots claimed by more than one node (1): 0\n"),
            "{got}"
        );
        let nodes = nodes.replace(" 10923-16383 0\n", " 10923-16383\n");
        let got = table(&status(&nodes, "ok"));
        assert!(
            got.ends_with("known nodes: 3\nAll 16384 slots covered.\n"),
            "{got}"
        );
    }

    #[test]
    fn json_is_one_escaped_object() {
        let got = json(&status(NODES, "fail"));
        let want = concat!(
            r#"{"cluster_state":"fail","current_epoch":6,"nodes":["#,
            r#"{"id":"e7d1eecce10fd6bb5eb35b9f99a514335d9ba9ca","addr":"127.0.0.1:30001","#,
            r#""hostname":null,"flags":["myself","master"],"master":null,"link":"connected","#,
            r#""config_epoch":1,"slots":[[0,5460]],"slot_count":5461},"#,
            r#"{"id":"67ed2db8d677e59ec4a4cefb06858cf2a1a89fa1","addr":"127.0.0.1:30002","#,
            r#""hostname":"h\"2","flags":["master","fail?"],"master":null,"link":"disconnected","#,
            r#""config_epoch":2,"slots":[[5461,10922]],"slot_count":5462}],"#,
            r#""covered":false,"uncovered":[[10923,16383]],"shared":[]}"#
        );
        assert_eq!(got, want);
        assert_eq!(string("a\\b\u{1}\n"), r#""a\\b\u0001\u000a""#);
    }

    #[test]
    fn status_needs_state_and_epoch() {
        let err = Status::new(vec![], &parse_info("cluster_state:ok\n").expect("info"));
        assert_eq!(
            err.expect_err("no epoch").to_string(),
            "CLUSTER INFO has no field `cluster_current_epoch`"
        );
    }
}
