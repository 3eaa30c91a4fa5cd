//! What a forming cluster still lacks, node by node, for `create` to go on: first that
//! every node lists every other as a healthy member, then that all agree the cluster is
//! ready. Pure: parsed replies in, one human-readable line per missing thing out.

use std::collections::BTreeSet;

use crate::nodes::{ClusterInfo, NodeEntry, SLOT_COUNT};

/// Flags that keep a node from counting as a healthy member while a cluster forms.
pub const UNHEALTHY_FLAGS: [&str; 4] = ["fail", "fail?", "handshake", "noaddr"];

/// What one node's `CLUSTER NODES` still lacks for the cluster of `expected` addresses
/// (`ip:port`) to count as joined: every expected node listed, none other, none flagged
/// unhealthy. `me` is the address of the node that answered; its `myself` line may not
/// carry its address yet, so that line counts as `me`. Empty when nothing is missing.
pub fn join_problems(entries: &[NodeEntry], expected: &[String], me: &str) -> Vec<String> {
    let mut problems = Vec::new();
    let mut seen = BTreeSet::new();
    for e in entries {
        let addr = if e.has_flag("myself") {
            me.to_string()
        } else {
            e.addr()
        };
        if let Some(flag) = UNHEALTHY_FLAGS.iter().find(|f| e.has_flag(f)) {
            problems.push(format!("{addr} is flagged {flag}"));
        } else if !expected.contains(&addr) {
            problems.push(format!(
                "lists {addr} ({}), which is not one of the nodes given",
                e.id
            ));
        }
        seen.insert(addr);
    }
    let missing: Vec<&str> = expected
        .iter()
        .filter(|a| !seen.contains(*a))
        .map(String::as_str)
        .collect();
    if !missing.is_empty() {
        problems.push(format!("does not list {} yet", missing.join(", ")));
    }
    problems
}

/// What each node's `CLUSTER INFO` still lacks for a created cluster: state `ok`, all
/// slots assigned, and one `cluster_current_epoch` agreed by all. One list per node, in
/// the order given; all empty when the cluster is ready.
pub fn ready_problems(infos: &[ClusterInfo]) -> Vec<Vec<String>> {
    let epochs: Vec<Option<u64>> = infos
        .iter()
        .map(|i| i.number("cluster_current_epoch").ok())
        .collect();
    let newest = epochs.iter().flatten().max().copied();
    infos
        .iter()
        .zip(&epochs)
        .map(|(info, epoch)| {
            let mut problems = Vec::new();
            match info.get("cluster_state") {
                Some("ok") => {}
                Some(state) => problems.push(format!("cluster_state is {state}, not ok")),
                None => problems.push("no cluster_state field".to_string()),
            }
            match info.number("cluster_slots_assigned") {
                Ok(n) if n == u64::from(SLOT_COUNT) => {}
                Ok(n) => problems.push(format!("cluster_slots_assigned is {n} of {SLOT_COUNT}")),
                Err(e) => problems.push(e.to_string()),
            }
            match (epoch, newest) {
                (Some(e), Some(n)) if e < &n => problems.push(format!(
                    "cluster_current_epoch is {e}, another node has {n}"
                )),
                (None, _) => problems.push("no numeric cluster_current_epoch field".to_string()),
                _ => {}
            }
            problems
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nodes::{parse_info, parse_nodes};

    fn info(text: &str) -> ClusterInfo {
        parse_info(text).expect("info")
    }

    fn entry(line: &str) -> NodeEntry {
        parse_nodes(line).expect("parse").remove(0)
    }

    #[test]
    fn join_needs_every_node_listed_and_healthy() {
        let expected = vec!["10.0.0.1:7000".to_string(), "10.0.0.2:7000".to_string()];
        let me =
            "e7d1eecce10fd6bb5eb35b9f99a514335d9ba9ca :7000@17000 myself,master - 0 0 0 connected";
        let peer = |flags: &str| {
            entry(&format!(
                "67ed2db8d677e59ec4a4cefb06858cf2a1a89fa1 10.0.0.2:7000@17000 {flags} - 0 0 0 connected"
            ))
        };
        let joined = [entry(me), peer("master")];
        assert!(join_problems(&joined, &expected, "10.0.0.1:7000").is_empty());
        assert_eq!(
            join_problems(&[entry(me)], &expected, "10.0.0.1:7000"),
            ["does not list 10.0.0.2:7000 yet"]
        );
        for flag in UNHEALTHY_FLAGS {
            let got = join_problems(
                &[entry(me), peer(&format!("master,{flag}"))],
                &expected,
                "10.0.0.1:7000",
            );
            assert_eq!(got, [format!("10.0.0.2:7000 is flagged {flag}")]);
        }
        let stranger = entry(
            "292f8b365bb7edb5e285caf0b7e6ddc7265d2f4f 10.0.0.9:7000@17000 master - 0 0 0 connected",
        );
        let got = join_problems(
            &[entry(me), peer("master"), stranger],
            &expected,
            "10.0.0.1:7000",
        );
        assert_eq!(
            got,
            ["lists 10.0.0.9:7000 (292f8b365bb7edb5e285caf0b7e6ddc7265d2f4f), which is not one of the nodes given"]
        );
    }

    #[test]
    fn ready_needs_ok_all_slots_and_one_epoch() {
        let ok = "cluster_state:ok\ncluster_slots_assigned:16384\ncluster_current_epoch:3\n";
        let behind = "cluster_state:ok\ncluster_slots_assigned:16384\ncluster_current_epoch:2\n";
        let forming = "cluster_state:fail\ncluster_slots_assigned:0\ncluster_current_epoch:3\n";
        let got = ready_problems(&[info(ok), info(ok)]);
        assert!(got.iter().all(Vec::is_empty), "{got:?}");
        let got = ready_problems(&[info(ok), info(behind), info(forming), info("")]);
        assert_eq!(got[0], Vec::<String>::new());
        assert_eq!(got[1], ["cluster_current_epoch is 2, another node has 3"]);
        assert_eq!(
            got[2],
            [
                "cluster_state is fail, not ok",
                "cluster_slots_assigned is 0 of 16384"
            ]
        );
        assert_eq!(
            got[3],
            [
                "no cluster_state field",
                "CLUSTER INFO has no field `cluster_slots_assigned`",
                "no numeric cluster_current_epoch field"
            ]
        );
    }
}
