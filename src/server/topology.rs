//! The host's CPUs, NUMA nodes and NICs as sysfs shows them, the layout this node runs with
//! on them, and each data core's memory policy.
//!
//! Read once at start-up. Paths are read under `TESSERA_SYSROOT` when it is set (a fake
//! /sys, as kernel-tuning/'s tests use); the start-up log prints the layout and warns when
//! data cores sit off the NIC's node, span nodes, or share a physical core with the control
//! core. A pinned data core on a host with more than one node prefers its own node's memory
//! (`set_mempolicy(MPOL_PREFERRED)`): its shard, buffers and connections are allocated on
//! that thread, and glibc's per-thread arenas keep them there.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

/// The environment variable that moves the root /sys is read under (tests only).
pub const SYSROOT_ENV: &str = "TESSERA_SYSROOT";

#[derive(Debug, Clone, Default)]
pub struct Topology {
    /// Node of each online CPU (0 when the host shows no nodes).
    pub node_of: BTreeMap<usize, usize>,
    /// SMT threads sharing each CPU's physical core, itself included.
    pub siblings: BTreeMap<usize, Vec<usize>>,
    /// Nodes with their CPUs; one node when sysfs has no node directory.
    pub nodes: BTreeMap<usize, Vec<usize>>,
    /// Physical NICs (those with a device): name and node, when the device says.
    pub nics: Vec<(String, Option<usize>)>,
}

/// "0-3,8" -> [0, 1, 2, 3, 8]; None when it is not a CPU list.
pub fn parse_cpu_list(text: &str) -> Option<Vec<usize>> {
    let mut out = Vec::new();
    let text = text.trim();
    if text.is_empty() {
        return Some(out);
    }
    for part in text.split(',') {
        let (lo, hi) = match part.split_once('-') {
            Some((a, b)) => (a.trim().parse().ok()?, b.trim().parse().ok()?),
            None => {
                let n: usize = part.trim().parse().ok()?;
                (n, n)
            }
        };
        if hi < lo || hi - lo > 65_536 {
            return None;
        }
        out.extend(lo..=hi);
    }
    out.sort_unstable();
    out.dedup();
    Some(out)
}

/// [0, 1, 2, 3, 8] -> "0-3,8".
pub fn format_cpu_list(cpus: &[usize]) -> String {
    let mut sorted = cpus.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    let mut parts = Vec::new();
    let mut i = 0;
    while i < sorted.len() {
        let mut j = i;
        while j + 1 < sorted.len() && sorted[j + 1] == sorted[j] + 1 {
            j += 1;
        }
        parts.push(if i == j {
            sorted[i].to_string()
        } else {
            format!("{}-{}", sorted[i], sorted[j])
        });
        i = j + 1;
    }
    parts.join(",")
}

fn read(root: &Path, rel: &str) -> Option<String> {
    std::fs::read_to_string(root.join(rel))
        .ok()
        .map(|s| s.trim().to_string())
}

impl Topology {
    /// The root sysfs is read under: `TESSERA_SYSROOT`, else `/`.
    pub fn root() -> PathBuf {
        std::env::var_os(SYSROOT_ENV).map_or_else(|| PathBuf::from("/"), PathBuf::from)
    }

    pub fn read(root: &Path) -> Topology {
        let online = read(root, "sys/devices/system/cpu/online")
            .and_then(|s| parse_cpu_list(&s))
            .unwrap_or_default();
        let mut t = Topology::default();
        for node in read(root, "sys/devices/system/node/online")
            .and_then(|s| parse_cpu_list(&s))
            .unwrap_or_default()
        {
            let cpus = read(root, &format!("sys/devices/system/node/node{node}/cpulist"))
                .and_then(|s| parse_cpu_list(&s))
                .unwrap_or_default();
            for &c in &cpus {
                t.node_of.insert(c, node);
            }
            t.nodes.insert(node, cpus);
        }
        if t.nodes.is_empty() {
            t.nodes.insert(0, online.clone());
        }
        for &c in &online {
            t.node_of.entry(c).or_insert(0);
            let siblings = read(
                root,
                &format!("sys/devices/system/cpu/cpu{c}/topology/thread_siblings_list"),
            )
            .and_then(|s| parse_cpu_list(&s))
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| vec![c]);
            t.siblings.insert(c, siblings);
        }
        if let Ok(dir) = std::fs::read_dir(root.join("sys/class/net")) {
            let mut names: Vec<String> = dir
                .filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect();
            names.sort();
            for name in names {
                let dev = format!("sys/class/net/{name}/device");
                if !root.join(&dev).exists() {
                    continue; // lo, bridges, veth: no device
                }
                let node = read(root, &format!("{dev}/numa_node"))
                    .or_else(|| read(root, &format!("{dev}/../numa_node")))
                    .and_then(|s| s.parse::<i64>().ok())
                    .and_then(|n| usize::try_from(n).ok())
                    .or_else(|| (t.nodes.len() == 1).then(|| *t.nodes.keys().next().unwrap()));
                t.nics.push((name, node));
            }
        }
        t
    }

    /// The other SMT threads of `cpu`'s physical core.
    fn siblings_of(&self, cpu: usize) -> Vec<usize> {
        self.siblings
            .get(&cpu)
            .map(|s| s.iter().copied().filter(|&c| c != cpu).collect())
            .unwrap_or_default()
    }
}

/// Where this node runs: its data cores' CPUs (none when unpinned), the control core's CPU
/// (None when shared or not clustered) and the NICs it serves on.
pub struct Layout<'a> {
    pub cores: usize,
    pub data: &'a [usize],
    pub control: Option<usize>,
    pub clustered: bool,
    /// The NICs the bind addresses are on (None: every physical NIC, a wildcard bind).
    pub nics: Option<Vec<String>>,
}

/// The start-up line that says where everything runs, and the warnings about it.
pub fn describe(t: &Topology, l: &Layout) -> (String, Vec<String>) {
    let mut warnings = Vec::new();
    let data_nodes: Vec<usize> = {
        let mut n: Vec<usize> = l
            .data
            .iter()
            .filter_map(|c| t.node_of.get(c))
            .copied()
            .collect();
        n.sort_unstable();
        n.dedup();
        n
    };
    let data = if l.data.is_empty() {
        format!("{} data core(s) unpinned (no --cpus)", l.cores)
    } else {
        let nodes: Vec<String> = data_nodes.iter().map(usize::to_string).collect();
        format!(
            "{} data core(s) on CPUs {} (node {})",
            l.cores,
            format_cpu_list(l.data),
            nodes.join(",")
        )
    };
    let control = match (l.clustered, l.control) {
        (false, _) => "no control core (cluster disabled)".to_string(),
        (true, None) => "control core unpinned (--control-cpu shared)".to_string(),
        (true, Some(c)) => format!("control core on CPU {c}"),
    };
    let nics: Vec<&(String, Option<usize>)> = t
        .nics
        .iter()
        .filter(|(name, _)| l.nics.as_ref().is_none_or(|want| want.contains(name)))
        .collect();
    let nic_text = if nics.is_empty() {
        match &l.nics {
            Some(v) if v.is_empty() => "bound to loopback: no NIC".to_string(),
            _ => "no physical NIC found".to_string(),
        }
    } else {
        nics.iter()
            .map(|(n, node)| match node {
                Some(node) => format!("NIC {n} on node {node}"),
                None => format!("NIC {n} on an unknown node"),
            })
            .collect::<Vec<_>>()
            .join(", ")
    };
    let line = format!(
        "layout: {data}; {control}; {nic_text}; {} NUMA node(s)",
        t.nodes.len()
    );
    if data_nodes.len() > 1 {
        warnings.push(format!(
            "data cores span NUMA nodes {}: cross-core hops and shared memory cross the interconnect (kernel-tuning/plan keeps one instance on one node)",
            data_nodes.iter().map(usize::to_string).collect::<Vec<_>>().join(",")
        ));
    }
    for (name, node) in &nics {
        let Some(node) = node else { continue };
        let off: Vec<usize> = l
            .data
            .iter()
            .copied()
            .filter(|c| t.node_of.get(c).is_some_and(|n| n != node))
            .collect();
        if !off.is_empty() {
            warnings.push(format!(
                "data cores on CPUs {} are not on NIC {name}'s node {node}: its packets reach them across the interconnect",
                format_cpu_list(&off)
            ));
        }
    }
    if let (true, Some(c)) = (l.clustered, l.control) {
        if l.data.contains(&c) {
            warnings.push(format!(
                "the control core shares CPU {c} with a data core: pick another --control-cpu, or shared"
            ));
        }
        let shared: Vec<usize> = t
            .siblings_of(c)
            .into_iter()
            .filter(|s| l.data.contains(s))
            .collect();
        if !shared.is_empty() {
            warnings.push(format!(
                "the control core's CPU {c} is an SMT sibling of data core CPU(s) {}: they share a physical core",
                format_cpu_list(&shared)
            ));
        }
    }
    (line, warnings)
}

/// The interfaces the bind addresses are on: None when one is a wildcard (every NIC);
/// an empty list when all are loopback.
pub fn bind_interfaces(bind: &[String]) -> Option<Vec<String>> {
    let ips: Vec<IpAddr> = bind
        .iter()
        .filter_map(|b| b.trim_start_matches('-').parse().ok())
        .collect();
    if ips.is_empty() || ips.iter().any(IpAddr::is_unspecified) {
        return None;
    }
    let mut names = Vec::new();
    let mut ifap: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs fills a list we only read and then free with freeifaddrs.
    if unsafe { libc::getifaddrs(&mut ifap) } != 0 {
        return None;
    }
    let mut p = ifap;
    while !p.is_null() {
        // SAFETY: p is a node of the list getifaddrs returned, not yet freed.
        let ifa = unsafe { &*p };
        p = ifa.ifa_next;
        if ifa.ifa_addr.is_null() {
            continue;
        }
        // SAFETY: ifa_addr points at a sockaddr of the family it names.
        let ip = unsafe {
            match i32::from((*ifa.ifa_addr).sa_family) {
                libc::AF_INET => {
                    let a = &*(ifa.ifa_addr as *const libc::sockaddr_in);
                    Some(IpAddr::from(u32::from_be(a.sin_addr.s_addr).to_be_bytes()))
                }
                libc::AF_INET6 => {
                    let a = &*(ifa.ifa_addr as *const libc::sockaddr_in6);
                    Some(IpAddr::from(a.sin6_addr.s6_addr))
                }
                _ => None,
            }
        };
        if ip.is_some_and(|ip| ips.contains(&ip) && !ip.is_loopback()) {
            // SAFETY: ifa_name is a NUL-terminated string owned by the list.
            let name = unsafe { std::ffi::CStr::from_ptr(ifa.ifa_name) };
            names.push(name.to_string_lossy().into_owned());
        }
    }
    // SAFETY: frees the list getifaddrs returned, once.
    unsafe { libc::freeifaddrs(ifap) };
    names.sort();
    names.dedup();
    Some(names)
}

/// Makes the calling thread (a data core) prefer `node`'s memory. Only worth it, and only
/// done, when the host has more than one node.
pub fn prefer_node(node: usize) -> std::io::Result<()> {
    const MPOL_PREFERRED: libc::c_long = 1;
    const WORD_BITS: usize = libc::c_ulong::BITS as usize;
    let mut mask = [0 as libc::c_ulong; 16];
    if node >= mask.len() * WORD_BITS {
        return Err(std::io::Error::from_raw_os_error(libc::EINVAL));
    }
    mask[node / WORD_BITS] |= 1 << (node % WORD_BITS);
    // SAFETY: set_mempolicy reads `maxnode` bits from the mask, which holds that many.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_set_mempolicy,
            MPOL_PREFERRED,
            mask.as_ptr(),
            (mask.len() * WORD_BITS) as libc::c_ulong,
        )
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fake(files: &[(&str, &str)]) -> PathBuf {
        use std::sync::atomic::{AtomicUsize, Ordering};
        static N: AtomicUsize = AtomicUsize::new(0);
        let root = std::env::temp_dir().join(format!(
            "tessera-topology-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&root);
        for (rel, text) in files {
            let p = root.join(rel);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, text).unwrap();
        }
        root
    }

    /// Two nodes of two CPUs, 0 and 2 SMT siblings, a NIC on node 1.
    fn two_nodes() -> Topology {
        let root = fake(&[
            ("sys/devices/system/cpu/online", "0-3\n"),
            ("sys/devices/system/node/online", "0-1\n"),
            ("sys/devices/system/node/node0/cpulist", "0,2\n"),
            ("sys/devices/system/node/node1/cpulist", "1,3\n"),
            (
                "sys/devices/system/cpu/cpu0/topology/thread_siblings_list",
                "0,2\n",
            ),
            (
                "sys/devices/system/cpu/cpu2/topology/thread_siblings_list",
                "0,2\n",
            ),
            ("sys/class/net/ens1/device/numa_node", "1\n"),
            ("sys/class/net/lo/addr_len", "6\n"),
        ]);
        let t = Topology::read(&root);
        std::fs::remove_dir_all(root).unwrap();
        t
    }

    #[test]
    fn cpu_lists_parse_and_print() {
        assert_eq!(parse_cpu_list("0-3,8"), Some(vec![0, 1, 2, 3, 8]));
        assert_eq!(parse_cpu_list(" 2,1,1 "), Some(vec![1, 2]));
        assert_eq!(parse_cpu_list(""), Some(vec![]));
        assert_eq!(parse_cpu_list("3-1"), None);
        assert_eq!(parse_cpu_list("x"), None);
        assert_eq!(format_cpu_list(&[8, 0, 1, 2, 3, 5]), "0-3,5,8");
    }

    #[test]
    fn sysfs_gives_nodes_siblings_and_nics() {
        let t = two_nodes();
        assert_eq!(t.nodes.len(), 2);
        assert_eq!(t.node_of[&3], 1);
        assert_eq!(t.siblings[&2], vec![0, 2]);
        assert_eq!(t.siblings[&1], vec![1]);
        assert_eq!(t.nics, vec![("ens1".to_string(), Some(1))]);
        // No node directory: one node with every CPU; a NIC of unknown node is on it.
        let root = fake(&[
            ("sys/devices/system/cpu/online", "0-1\n"),
            ("sys/class/net/eth0/device/numa_node", "-1\n"),
        ]);
        let t = Topology::read(&root);
        std::fs::remove_dir_all(root).unwrap();
        assert_eq!(t.nodes[&0], vec![0, 1]);
        assert_eq!(t.nics, vec![("eth0".to_string(), Some(0))]);
    }

    #[test]
    fn the_layout_warns_off_node_spanning_and_smt_shared_control() {
        let t = two_nodes();
        let layout = |data: &'static [usize], control| Layout {
            cores: data.len().max(1),
            data,
            control,
            clustered: true,
            nics: None,
        };
        // On the NIC's node, control core on the other node: nothing to say.
        let (line, w) = describe(&t, &layout(&[1, 3], Some(0)));
        assert_eq!(
            line,
            "layout: 2 data core(s) on CPUs 1,3 (node 1); control core on CPU 0; NIC ens1 on node 1; 2 NUMA node(s)"
        );
        assert!(w.is_empty(), "{w:?}");
        // Spanning both nodes, a data core off the NIC's, the control core 0's sibling.
        let (_, w) = describe(&t, &layout(&[0, 1], Some(2)));
        assert_eq!(w.len(), 3, "{w:?}");
        assert!(w[0].starts_with("data cores span NUMA nodes 0,1"));
        assert!(w[1].starts_with("data cores on CPUs 0 are not on NIC ens1's node 1"));
        assert!(
            w[2].starts_with("the control core's CPU 2 is an SMT sibling of data core CPU(s) 0")
        );
        let (_, w) = describe(&t, &layout(&[1], Some(1)));
        assert!(w[0].starts_with("the control core shares CPU 1 with a data core"));
        // Unpinned, bound to loopback, no cluster.
        let l = Layout {
            cores: 2,
            data: &[],
            control: None,
            clustered: false,
            nics: Some(vec![]),
        };
        let (line, w) = describe(&t, &l);
        assert_eq!(
            line,
            "layout: 2 data core(s) unpinned (no --cpus); no control core (cluster disabled); bound to loopback: no NIC; 2 NUMA node(s)"
        );
        assert!(w.is_empty());
    }

    #[test]
    fn loopback_binds_have_no_nic_and_wildcards_every_nic() {
        assert_eq!(
            bind_interfaces(&["127.0.0.1".into(), "-::1".into()]),
            Some(vec![])
        );
        assert_eq!(bind_interfaces(&["0.0.0.0".into()]), None);
    }
}
