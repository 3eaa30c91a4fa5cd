#!/usr/bin/env python3
"""Kernel and CPU tuning for tessera hosts: check, plan, apply, revert.

Python 3 standard library only. Every path is read under a root, `TESSERA_SYSROOT` (default
`/`), so the same code runs against a fake tree of /proc, /sys and /etc in tests. The four
commands are the executables beside this file; `snapshot DIR` copies what `check` and `plan`
read on this host into a fake tree (for a bug report, or a test fixture).
"""

import argparse
import json
import os
import re
import sys

# Where apply keeps what it changed, and the sysctl drop-in it writes (under the root).
STATE_FILE = "var/lib/tessera/kernel-tuning/saved.json"
DROPIN_FILE = "etc/sysctl.d/90-tessera.conf"
# The systemd units check reads the service's limits from, in order.
UNIT_FILES = ("etc/systemd/system/tessera.service", "lib/systemd/system/tessera.service")

# glommio's own locked memory per process, and what tessera gives each executor's io_uring
# buffers (src/limits.rs: MEMLOCK_MIN_BYTES, IO_MEMORY_BYTES).
MEMLOCK_MIN_BYTES = 512 * 1024
IO_MEMORY_BYTES = 1024 * 1024
# Open files: tessera's default maxclients (10000) plus its own files and the cluster bus.
NOFILE_MIN = 10032
NOFILE_RECOMMENDED = 65536
# The ports tessera listens on by default: the client port and the cluster bus port.
TESSERA_PORTS = (6379, 16379)
# An ephemeral port range narrower than this runs out under many outgoing connections.
PORT_RANGE_MIN_WIDTH = 16384
# Idle states that take longer than this to leave add that much to a data core's wake-up.
IDLE_EXIT_LATENCY_MAX_US = 10
# Above this many CPUs on the NIC's node, two physical cores are set apart for IRQs.
HOUSEKEEPING_SECOND_CORE_ABOVE = 16

# sysctl: (name, minimum for PASS, value apply writes). apply only raises.
SYSCTL_FLOORS = (
    ("net.core.somaxconn", 4096, 8192),
    ("net.ipv4.tcp_max_syn_backlog", 4096, 8192),
    ("net.core.netdev_max_backlog", 16384, 16384),
)
SWAPPINESS_MAX = 10
SWAPPINESS_APPLY = 1


# ----------------------------------------------------------------------------- the host


class Host:
    """Reads and writes under a root; records what it read (for `snapshot`)."""

    def __init__(self, root):
        self.root = root
        self.read_paths = []
        self.listed = []

    def path(self, rel):
        return os.path.join(self.root, rel)

    def read_raw(self, rel):
        """The file's text as it is, or None if it cannot be read."""
        try:
            with open(self.path(rel), encoding="utf-8", errors="replace") as f:
                text = f.read()
        except OSError:
            return None
        self.read_paths.append(rel)
        return text

    def read(self, rel):
        """The file's text without trailing whitespace, or None if it cannot be read."""
        text = self.read_raw(rel)
        return None if text is None else text.rstrip()

    def exists(self, rel):
        found = os.path.exists(self.path(rel))
        if found:
            self.read_paths.append(rel)
        return found

    def listdir(self, rel):
        self.listed.append(rel)
        try:
            return sorted(os.listdir(self.path(rel)))
        except OSError:
            return []

    def realname(self, rel):
        """The last component of the path with every symlink resolved."""
        return os.path.basename(os.path.realpath(self.path(rel)))

    @property
    def fake(self):
        return os.path.realpath(self.root) != "/"


def parse_cpu_list(text):
    """'0-3,8' -> [0, 1, 2, 3, 8]; None for text that is not a CPU list."""
    cpus = set()
    text = (text or "").strip()
    if not text:
        return []
    for part in text.split(","):
        m = re.fullmatch(r"(\d+)(?:-(\d+))?", part.strip())
        if not m:
            return None
        lo = int(m.group(1))
        hi = int(m.group(2) or lo)
        if hi < lo:
            return None
        cpus.update(range(lo, hi + 1))
    return sorted(cpus)


def format_cpu_list(cpus):
    """[0, 1, 2, 3, 8] -> '0-3,8'."""
    cpus = sorted(set(cpus))
    parts = []
    i = 0
    while i < len(cpus):
        j = i
        while j + 1 < len(cpus) and cpus[j + 1] == cpus[j] + 1:
            j += 1
        parts.append(str(cpus[i]) if i == j else f"{cpus[i]}-{cpus[j]}")
        i = j + 1
    return ",".join(parts)


def cpu_mask(cpus):
    """The hex mask /proc/irq/N/smp_affinity takes, in 32-bit groups."""
    value = 0
    for c in cpus:
        value |= 1 << c
    text = f"{value:x}"
    groups = []
    while text:
        groups.insert(0, text[-8:])
        text = text[:-8]
    return ",".join(groups) or "0"


def selected(text):
    """The bracketed word of a sysfs selector ('always [madvise] never' -> 'madvise')."""
    m = re.search(r"\[([^\]]+)\]", text or "")
    return m.group(1) if m else (text or None)


def fmt_bytes(n):
    if n is None:
        return "unlimited"
    for unit, size in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= size and n % size == 0:
            return f"{n // size} {unit}"
    return f"{n} B"


# ----------------------------------------------------------------------------- topology


class Cpu:
    def __init__(self, cpu, core, package, node, siblings):
        self.id = cpu
        self.core = core
        self.package = package
        self.node = node
        self.siblings = siblings


class Nic:
    def __init__(self, name, node, queues, irqs):
        self.name = name
        self.node = node
        self.queues = queues
        self.irqs = irqs  # [(irq number, name in /proc/interrupts)]


class Topology:
    def __init__(self, host):
        self.host = host
        online = parse_cpu_list(host.read("sys/devices/system/cpu/online")) or [0]
        # Nodes: from /sys/devices/system/node; a host without it is one node.
        self.nodes = {}
        for node in parse_cpu_list(host.read("sys/devices/system/node/online")) or []:
            cpus = parse_cpu_list(host.read(f"sys/devices/system/node/node{node}/cpulist")) or []
            mem_kb = None
            meminfo = host.read(f"sys/devices/system/node/node{node}/meminfo") or ""
            m = re.search(r"MemTotal:\s+(\d+) kB", meminfo)
            if m:
                mem_kb = int(m.group(1))
            self.nodes[node] = {"cpus": [c for c in cpus if c in online], "mem_kb": mem_kb}
        self.numa = bool(self.nodes)
        if not self.nodes:
            mem_kb = None
            m = re.search(r"MemTotal:\s+(\d+) kB", host.read("proc/meminfo") or "")
            if m:
                mem_kb = int(m.group(1))
            self.nodes = {0: {"cpus": list(online), "mem_kb": mem_kb}}
        node_of = {c: n for n, v in self.nodes.items() for c in v["cpus"]}
        self.cpus = []
        for c in online:
            base = f"sys/devices/system/cpu/cpu{c}/topology"
            core = host.read(f"{base}/core_id")
            package = host.read(f"{base}/physical_package_id")
            siblings = parse_cpu_list(host.read(f"{base}/thread_siblings_list")) or [c]
            self.cpus.append(
                Cpu(
                    c,
                    int(core) if core and core.lstrip("-").isdigit() else c,
                    int(package) if package and package.lstrip("-").isdigit() else 0,
                    node_of.get(c, 0),
                    [s for s in siblings if s in online],
                )
            )
        self.by_id = {c.id: c for c in self.cpus}
        self.nics = self._nics()

    def _nics(self):
        host = self.host
        names = {}
        for line in (host.read("proc/interrupts") or "").splitlines()[1:]:
            fields = line.split()
            if fields and fields[0].rstrip(":").isdigit():
                names[int(fields[0].rstrip(":"))] = fields[-1]
        nics = []
        for name in host.listdir("sys/class/net"):
            dev = f"sys/class/net/{name}/device"
            if not host.exists(dev):
                continue  # virtual: lo, bridges, ifb, veth
            queues = len([q for q in host.listdir(f"sys/class/net/{name}/queues") if q.startswith("rx-")])
            node = host.read(f"{dev}/numa_node") or host.read(f"{dev}/../numa_node")
            node = int(node) if node and node.lstrip("-").isdigit() and int(node) >= 0 else None
            if node is None and len(self.nodes) == 1:
                node = next(iter(self.nodes))
            # MSI IRQs are on the PCI function: the device itself, or (virtio) its parent.
            irqs = host.listdir(f"{dev}/msi_irqs") or host.listdir(f"{dev}/../msi_irqs")
            devname = host.realname(dev)
            found = []
            for irq in sorted(int(i) for i in irqs if i.isdigit()):
                label = names.get(irq, "")
                if label.endswith("-config"):
                    continue  # virtio's configuration-change interrupt: no traffic
                found.append((irq, label))
            if not irqs:
                # No MSI listing: the IRQs named after the interface or its device.
                for irq, label in sorted(names.items()):
                    if label.startswith((f"{name}-", f"{devname}-")) and not label.endswith("-config"):
                        found.append((irq, label))
            nics.append(Nic(name, node, queues, found))
        return nics

    def nic(self, name=None):
        """The NIC named, or the one with the most queues (the first by name on a tie)."""
        if name:
            for n in self.nics:
                if n.name == name:
                    return n
            raise SystemExit(f"no such NIC: {name} (have: {', '.join(n.name for n in self.nics) or 'none'})")
        best = None
        for n in self.nics:
            if best is None or n.queues > best.queues:
                best = n
        return best

    def smt(self):
        return any(len(c.siblings) > 1 for c in self.cpus)

    def siblings_of(self, cpu):
        c = self.by_id.get(cpu)
        return [s for s in c.siblings if s != cpu] if c else []


# ----------------------------------------------------------------------------- the plan


class Plan:
    """Which CPUs take NIC IRQs, which run data cores, which runs the control core."""

    def __init__(self, topo, nic_name=None):
        self.topo = topo
        self.nic = topo.nic(nic_name)
        if self.nic is not None and self.nic.node in topo.nodes:
            self.node = self.nic.node
        else:
            self.node = min(topo.nodes, key=lambda n: (-len(topo.nodes[n]["cpus"]), n))
        node_cpus = sorted(topo.nodes[self.node]["cpus"])
        self.notes = []
        if len(topo.cpus) <= 2:
            # Too few CPUs to set any apart: tessera on every CPU, IRQs spread over them,
            # the control core unpinned (it wakes a few times a second).
            self.mode = "spread"
            self.data = [c.id for c in topo.cpus]
            self.housekeeping = []
            self.control = None
            self.irq_cpus = list(self.data)
            self.notes.append(
                f"{len(topo.cpus)} CPU(s): every CPU runs a data core; NIC IRQs are spread over them and the control core is unpinned"
            )
        else:
            # The first physical core of the NIC's node (all its threads) takes the IRQs,
            # the control core and the rest of the system; a second one on a big node.
            cores = []
            for c in node_cpus:
                group = sorted(s for s in topo.by_id[c].siblings if s in node_cpus) or [c]
                if group not in cores:
                    cores.append(group)
            take = 2 if len(node_cpus) > HOUSEKEEPING_SECOND_CORE_ABOVE and len(cores) > 2 else 1
            self.housekeeping = sorted(c for group in cores[:take] for c in group)
            self.data = [c for c in node_cpus if c not in self.housekeeping]
            self.mode = "housekeeping"
            self.irq_cpus = list(self.housekeeping)
            # The control core on the last housekeeping CPU: with SMT, the sibling of the
            # one the first IRQs land on.
            self.control = self.housekeeping[-1]
            others = [c.id for c in topo.cpus if c.node != self.node]
            if others:
                self.notes.append(
                    f"CPUs {format_cpu_list(others)} are on other NUMA nodes than the NIC's (node {self.node}): "
                    "this instance leaves them alone; run one more tessera there, with a NIC of that node"
                )
            if self.nic is None:
                self.notes.append("no physical NIC found: the layout keeps the first core apart all the same")
        # Each NIC IRQ to one CPU of the IRQ set, in turn.
        self.irq_map = []
        if self.nic is not None:
            for i, (irq, label) in enumerate(self.nic.irqs):
                self.irq_map.append((irq, label, self.irq_cpus[i % len(self.irq_cpus)]))
        if topo.smt():
            shared = [c for c in self.data if any(s in self.data for s in topo.siblings_of(c))]
            if shared:
                self.notes.append(
                    f"data cores {format_cpu_list(shared)} are SMT siblings of each other: they share physical cores"
                )

    def command(self):
        control = "shared" if self.control is None else str(self.control)
        return f"tessera --cores {len(self.data)} --cpus {format_cpu_list(self.data)} --control-cpu {control}"

    def as_json(self):
        return {
            "mode": self.mode,
            "nic": None if self.nic is None else self.nic.name,
            "nic_node": self.node,
            "data_cpus": self.data,
            "control_cpu": self.control,
            "irq_cpus": self.irq_cpus,
            "housekeeping_cpus": self.housekeeping,
            "irqs": [
                {"irq": irq, "name": label, "cpu": cpu, "mask": cpu_mask([cpu])}
                for irq, label, cpu in self.irq_map
            ],
            "command": self.command(),
            "notes": self.notes,
        }


def print_plan(plan, out):
    topo = plan.topo
    out.write("Topology\n")
    for node, v in sorted(topo.nodes.items()):
        mem = f", {v['mem_kb'] // 1024} MiB" if v["mem_kb"] else ""
        out.write(f"  node {node}: CPUs {format_cpu_list(v['cpus'])}{mem}\n")
    if not topo.numa:
        out.write("  (no /sys/devices/system/node: one memory node)\n")
    groups = sorted({tuple(c.siblings) for c in topo.cpus if len(c.siblings) > 1})
    out.write(
        "  SMT siblings: " + (" ".join(format_cpu_list(g) for g in groups) if groups else "none") + "\n"
    )
    for n in topo.nics:
        node = "unknown" if n.node is None else n.node
        out.write(f"  NIC {n.name}: node {node}, {n.queues} rx queue(s), {len(n.irqs)} IRQ(s)\n")
    if not topo.nics:
        out.write("  no physical NIC\n")
    out.write("\nLayout\n")
    out.write(f"  data cores:    CPUs {format_cpu_list(plan.data)}\n")
    out.write(
        "  control core:  "
        + ("unpinned (--control-cpu shared)" if plan.control is None else f"CPU {plan.control}")
        + "\n"
    )
    out.write(f"  NIC IRQs:      CPUs {format_cpu_list(plan.irq_cpus)}\n")
    if plan.housekeeping:
        out.write(
            f"  housekeeping:  CPUs {format_cpu_list(plan.housekeeping)} (IRQs, control core, the system)\n"
        )
    out.write("\nRun\n")
    out.write(f"  {plan.command()}\n")
    if plan.irq_map:
        out.write(f"\nIRQ affinity ({plan.nic.name})\n")
        for irq, label, cpu in plan.irq_map:
            out.write(f"  irq {irq} {label or '?'}: CPU {cpu} (smp_affinity {cpu_mask([cpu])})\n")
    for note in plan.notes:
        out.write(f"\nnote: {note}\n")


# ----------------------------------------------------------------------------- limits


def parse_limit(text):
    if text is None:
        return None, False
    text = text.strip()
    if text in ("unlimited", "infinity"):
        return None, True
    m = re.fullmatch(r"(\d+)([KMGT]?)", text)
    if not m:
        return None, False
    scale = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}[m.group(2)]
    return int(m.group(1)) * scale, True


def proc_limits(host, pid):
    """(memlock bytes or None for unlimited, nofile or None) from /proc/PID/limits."""
    text = host.read(f"proc/{pid}/limits")
    if text is None:
        return None
    out = {}
    for line in text.splitlines():
        for key, label in (("memlock", "Max locked memory"), ("nofile", "Max open files")):
            if line.startswith(label):
                soft = line[len(label) :].split()[0]
                out[key] = parse_limit(soft)[0]
    return out


def proc_uid(host, pid):
    m = re.search(r"^Uid:\s+\d+\s+(\d+)", host.read(f"proc/{pid}/status") or "", re.M)
    return int(m.group(1)) if m else None


def processes(host, comm):
    return [p for p in host.listdir("proc") if p.isdigit() and host.read(f"proc/{p}/comm") == comm]


def unit_settings(host):
    """(path, {key: value}) of the first tessera unit found, or (None, {})."""
    for rel in UNIT_FILES:
        text = host.read(rel)
        if text is None:
            continue
        settings = {}
        for line in text.splitlines():
            m = re.match(r"\s*(\w+)\s*=\s*(.*?)\s*$", line)
            if m:
                settings[m.group(1)] = m.group(2)
        return "/" + rel, settings
    return None, {}


def service_limits(host):
    """Where the limits come from, and (memlock, nofile, runs as root)."""
    running = processes(host, "tessera")
    if running:
        pid = running[0]
        lim = proc_limits(host, pid) or {}
        return f"running tessera (pid {pid})", lim.get("memlock"), lim.get("nofile"), proc_uid(host, pid) == 0
    path, unit = unit_settings(host)
    if path:
        memlock, ok_m = parse_limit(unit.get("LimitMEMLOCK"))
        nofile, ok_n = parse_limit(unit.get("LimitNOFILE"))
        root = unit.get("User", "root") in ("root", "0") and unit.get("DynamicUser", "no") != "yes"
        # Unset in the unit: systemd's defaults (8 MiB locked, 1024 open files soft).
        return (
            path,
            memlock if ok_m else 8 << 20,
            nofile if ok_n else 1024,
            root,
        )
    lim = proc_limits(host, "self") or {}
    return (
        "this shell (no tessera running, no unit installed)",
        lim.get("memlock"),
        lim.get("nofile"),
        proc_uid(host, "self") == 0,
    )


# ----------------------------------------------------------------------------- check


PASS, WARN, FAIL, SKIP = "PASS", "WARN", "FAIL", "SKIP"


class Item:
    def __init__(self, name, current, recommended, status, note=""):
        self.name = name
        self.current = current
        self.recommended = recommended
        self.status = status
        self.note = note

    def as_json(self):
        return {
            "item": self.name,
            "current": self.current,
            "recommended": self.recommended,
            "status": self.status,
            "note": self.note,
        }


def swap_on(host):
    """Whether any swap is in use (a line under /proc/swaps' header)."""
    return any(row.strip() for row in (host.read("proc/swaps") or "").splitlines()[1:])


def sysctl(host, name):
    return host.read("proc/sys/" + name.replace(".", "/"))


def running_layout(host):
    """(data CPUs, control CPU or None, where from) of a running tessera, if one runs."""
    for pid in processes(host, "tessera"):
        args = (host.read_raw(f"proc/{pid}/cmdline") or "").split("\0")
        cpus = control = None
        for i, a in enumerate(args):
            value = args[i + 1] if i + 1 < len(args) else ""
            if a.startswith("--cpus="):
                value, a = a.split("=", 1)[1], "--cpus"
            if a.startswith("--control-cpu="):
                value, a = a.split("=", 1)[1], "--control-cpu"
            if a == "--cpus":
                cpus = parse_cpu_list(value)
            elif a == "--control-cpu" and value.isdigit():
                control = int(value)
        if cpus:
            return cpus, control, f"running tessera (pid {pid})"
    return None


def checks(host, topo, plan, data=None, control=None):
    items = []
    source = "the plan"
    if data is None:
        found = running_layout(host)
        if found:
            data, control, source = found
        else:
            data, control = plan.data, plan.control
    else:
        source = "--cpus"
    data_set = set(data)
    many = len(topo.cpus) > 2

    # io_uring
    v = sysctl(host, "kernel.io_uring_disabled")
    if v is None:
        items.append(Item("kernel.io_uring_disabled", "absent", "0", PASS, "no such sysctl: io_uring is on"))
    elif v == "0":
        items.append(Item("kernel.io_uring_disabled", v, "0", PASS))
    elif v == "1":
        group = sysctl(host, "kernel.io_uring_group") or "-1"
        who = "processes with CAP_SYS_ADMIN" if group == "-1" else f"CAP_SYS_ADMIN and group {group}"
        items.append(
            Item(
                "kernel.io_uring_disabled",
                v,
                "0",
                WARN,
                f"only {who} may create rings: run tessera as one (or set kernel.io_uring_group)",
            )
        )
    else:
        items.append(Item("kernel.io_uring_disabled", v, "0", FAIL, "io_uring is off: tessera cannot start"))

    # limits
    where, memlock, nofile, root = service_limits(host)
    need = MEMLOCK_MIN_BYTES
    want = (len(data) + 2) * (IO_MEMORY_BYTES + MEMLOCK_MIN_BYTES)
    if memlock is None:
        status, note = PASS, ""
    elif memlock < need and not root:
        status, note = FAIL, f"below glommio's {fmt_bytes(need)}: tessera refuses to start"
    elif memlock < want:
        status, note = WARN, f"under {fmt_bytes(want)} io_uring buffers may not all be locked"
    else:
        status, note = PASS, ""
    if root and memlock is not None and memlock < need:
        status, note = WARN, "runs as root, which is exempt; a non-root service would fail"
    items.append(
        Item(
            "RLIMIT_MEMLOCK",
            fmt_bytes(memlock),
            f"unlimited (LimitMEMLOCK=infinity), at least {fmt_bytes(want)}",
            status,
            (note + "; " if note else "") + f"from {where}",
        )
    )
    if nofile is None:
        status = PASS
    elif nofile < NOFILE_MIN:
        status = FAIL
    elif nofile < NOFILE_RECOMMENDED:
        status = WARN
    else:
        status = PASS
    note = f"maxclients 10000 needs {NOFILE_MIN}; " if status == FAIL else ""
    items.append(
        Item(
            "RLIMIT_NOFILE",
            "unlimited" if nofile is None else str(nofile),
            f">= {NOFILE_RECOMMENDED}",
            status,
            note + f"from {where}",
        )
    )

    # sockets
    for name, floor, _ in SYSCTL_FLOORS:
        v = sysctl(host, name)
        if v is None or not v.isdigit():
            items.append(Item(name, v or "absent", f">= {floor}", SKIP, "cannot read it"))
            continue
        status = PASS if int(v) >= floor else WARN
        if name == "net.core.somaxconn" and int(v) < 511:
            status = FAIL
        items.append(
            Item(
                name,
                v,
                f">= {floor}",
                status,
                "accept backlog is capped by it" if name == "net.core.somaxconn" and status != PASS else "",
            )
        )
    busy = {n: sysctl(host, n) for n in ("net.core.busy_poll", "net.core.busy_read")}
    isolated = set(parse_cpu_list(kernel_arg(host, "isolcpus")) or [])
    for name, v in busy.items():
        if v is None:
            items.append(Item(name, "absent", "0", SKIP))
        elif v == "0":
            items.append(Item(name, v, "0 (or 50 with data cores isolated)", PASS))
        else:
            status = PASS if data_set <= isolated else WARN
            items.append(
                Item(
                    name,
                    v,
                    "0 unless data cores are isolated",
                    status,
                    "" if status == PASS else "busy polling spins on CPUs the data cores need",
                )
            )
    v = sysctl(host, "net.ipv4.ip_local_port_range")
    if v is None:
        items.append(Item("net.ipv4.ip_local_port_range", "absent", "32768 60999", SKIP))
    else:
        lo, hi = (int(x) for x in v.split()[:2])
        clash = [p for p in TESSERA_PORTS if lo <= p <= hi]
        if clash:
            status, note = (
                WARN,
                f"includes tessera's port(s) {', '.join(map(str, clash))}: an outgoing connection may take one before tessera binds it",
            )
        elif hi - lo + 1 < PORT_RANGE_MIN_WIDTH:
            status, note = WARN, f"{hi - lo + 1} ports: too few for many outgoing connections"
        else:
            status, note = PASS, ""
        items.append(
            Item(
                "net.ipv4.ip_local_port_range",
                f"{lo} {hi}",
                f">= {PORT_RANGE_MIN_WIDTH} ports, not 6379 or 16379",
                status,
                note,
            )
        )

    # memory
    v = sysctl(host, "vm.overcommit_memory")
    items.append(
        Item(
            "vm.overcommit_memory",
            v or "absent",
            "0 or 1",
            WARN if v == "2" else PASS,
            "strict accounting can refuse allocations a cache counts on"
            if v == "2"
            else "tessera does not fork to save",
        )
    )
    swaps = swap_on(host)
    v = sysctl(host, "vm.swappiness")
    if not swaps:
        items.append(Item("vm.swappiness", v or "absent", f"<= {SWAPPINESS_MAX}", PASS, "no swap"))
    else:
        ok = v is not None and v.isdigit() and int(v) <= SWAPPINESS_MAX
        items.append(
            Item(
                "vm.swappiness",
                v or "absent",
                f"<= {SWAPPINESS_MAX}",
                PASS if ok else WARN,
                "" if ok else "swapped-out keys cost a disk read",
            )
        )
    for name, good in (
        ("enabled", ("madvise", "never")),
        ("defrag", ("madvise", "defer+madvise", "defer", "never")),
    ):
        raw = host.read(f"sys/kernel/mm/transparent_hugepage/{name}")
        cur = selected(raw)
        if raw is None:
            items.append(Item(f"THP {name}", "absent", "madvise", SKIP, "no transparent huge pages"))
        else:
            ok = cur in good
            items.append(
                Item(
                    f"THP {name}",
                    cur,
                    "madvise",
                    PASS if ok else WARN,
                    "" if ok else "compaction and huge-page faults stall a data core for milliseconds",
                )
            )

    # CPU frequency and idle
    govs = {}
    for c in sorted(data_set | set(plan.irq_cpus)):
        g = host.read(f"sys/devices/system/cpu/cpu{c}/cpufreq/scaling_governor")
        if g is not None:
            govs.setdefault(g, []).append(c)
    if not govs:
        items.append(
            Item(
                "CPU governor",
                "absent",
                "performance",
                SKIP,
                "no cpufreq (a VM, or frequency set by firmware)",
            )
        )
    else:
        cur = "; ".join(f"{g} on {format_cpu_list(cs)}" for g, cs in sorted(govs.items()))
        ok = list(govs) == ["performance"]
        items.append(
            Item(
                "CPU governor",
                cur,
                "performance",
                PASS if ok else WARN,
                "" if ok else "frequency ramps add latency",
            )
        )
    boost = host.read("sys/devices/system/cpu/cpufreq/boost")
    no_turbo = host.read("sys/devices/system/cpu/intel_pstate/no_turbo")
    if boost is not None:
        items.append(
            Item(
                "CPU boost",
                "on" if boost == "1" else "off",
                "on",
                PASS if boost == "1" else WARN,
                "" if boost == "1" else "cores run at base frequency",
            )
        )
    elif no_turbo is not None:
        items.append(
            Item(
                "CPU boost",
                "off" if no_turbo == "1" else "on",
                "on",
                WARN if no_turbo == "1" else PASS,
                "intel_pstate no_turbo",
            )
        )
    else:
        items.append(Item("CPU boost", "absent", "on", SKIP, "no boost control"))
    deep = {}
    seen = False
    for c in sorted(data_set):
        base = f"sys/devices/system/cpu/cpu{c}/cpuidle"
        for st in host.listdir(base):
            if not st.startswith("state"):
                continue
            seen = True
            lat = host.read(f"{base}/{st}/latency")
            dis = host.read(f"{base}/{st}/disable")
            name = host.read(f"{base}/{st}/name") or st
            if lat and lat.isdigit() and int(lat) > IDLE_EXIT_LATENCY_MAX_US and dis == "0":
                deep.setdefault(f"{name} ({lat} us)", []).append(c)
    if not seen:
        items.append(
            Item(
                "idle states",
                "absent",
                f"none over {IDLE_EXIT_LATENCY_MAX_US} us on data cores",
                SKIP,
                "no cpuidle",
            )
        )
    elif deep:
        cur = "; ".join(f"{k} on {format_cpu_list(v)}" for k, v in sorted(deep.items()))
        items.append(
            Item(
                "idle states",
                cur,
                f"none over {IDLE_EXIT_LATENCY_MAX_US} us on data cores",
                WARN,
                "waking from them adds that to a request",
            )
        )
    else:
        items.append(
            Item(
                "idle states",
                f"none over {IDLE_EXIT_LATENCY_MAX_US} us enabled",
                f"none over {IDLE_EXIT_LATENCY_MAX_US} us on data cores",
                PASS,
            )
        )

    # IRQs
    balancing = processes(host, "irqbalance")
    if balancing:
        items.append(
            Item(
                "irqbalance",
                f"running (pid {balancing[0]})",
                "stopped, or IRQBALANCE_BANNED_CPULIST=" + format_cpu_list(data),
                WARN if plan.mode == "housekeeping" else PASS,
                "it moves IRQs back onto data cores" if plan.mode == "housekeeping" else "",
            )
        )
    else:
        items.append(Item("irqbalance", "not running", "not running", PASS))
    if not topo.nics:
        items.append(Item("NIC", "none", "a physical NIC", SKIP, "no device under /sys/class/net"))
    for nic in topo.nics:
        items.append(
            Item(
                f"NIC {nic.name} queues",
                str(nic.queues),
                f">= {len(data)} (one per data core)" if plan.mode == "spread" else "any",
                PASS,
                f"{len(nic.irqs)} IRQ(s)",
            )
        )
        for irq, label in nic.irqs:
            aff = parse_cpu_list(host.read(f"proc/irq/{irq}/smp_affinity_list")) or []
            on_data = sorted(set(aff) & data_set)
            bad = plan.mode == "housekeeping" and bool(on_data)
            items.append(
                Item(
                    f"IRQ {irq} {label or nic.name}",
                    f"CPUs {format_cpu_list(aff) or '?'}",
                    f"CPUs {format_cpu_list(plan.irq_cpus)}" if plan.mode == "housekeeping" else "any",
                    WARN if bad else PASS,
                    f"lands on data cores {format_cpu_list(on_data)}" if bad else "",
                )
            )

    # NUMA, SMT, isolation
    nodes = "; ".join(
        f"node {n}: CPUs {format_cpu_list(v['cpus'])}"
        + (f", {v['mem_kb'] // 1024} MiB" if v["mem_kb"] else "")
        for n, v in sorted(topo.nodes.items())
    )
    nic = plan.nic
    data_nodes = sorted({topo.by_id[c].node for c in data if c in topo.by_id})
    if nic is None or nic.node is None:
        items.append(Item("NUMA", nodes, "data cores on the NIC's node", SKIP, "NIC's node unknown"))
    else:
        ok = data_nodes == [nic.node]
        items.append(
            Item(
                "NUMA",
                nodes
                + f"; NIC {nic.name} on node {nic.node}; data cores on node(s) {','.join(map(str, data_nodes))}",
                "data cores on the NIC's node",
                PASS if ok else WARN,
                "" if ok else "packets and memory cross the interconnect",
            )
        )
    if topo.smt():
        groups = sorted({tuple(c.siblings) for c in topo.cpus if len(c.siblings) > 1})
        clash = control is not None and any(s in data_set for s in topo.siblings_of(control))
        items.append(
            Item(
                "SMT siblings",
                " ".join(format_cpu_list(g) for g in groups),
                "control core not a sibling of a data core",
                WARN if clash and many else PASS,
                f"control core CPU {control} shares a physical core with a data core" if clash else "",
            )
        )
    else:
        items.append(Item("SMT siblings", "none", "control core not a sibling of a data core", PASS))
    iso = kernel_arg(host, "isolcpus")
    nohz = kernel_arg(host, "nohz_full")
    cur = f"isolcpus={iso or '-'} nohz_full={nohz or '-'}"
    if not many:
        items.append(Item("isolcpus/nohz_full", cur, "none (too few CPUs to set any apart)", PASS))
    else:
        ok = data_set <= isolated and data_set <= set(parse_cpu_list(nohz) or [])
        d = format_cpu_list(data)
        items.append(
            Item(
                "isolcpus/nohz_full",
                cur,
                f"isolcpus=managed_irq,domain,{d} nohz_full={d}",
                PASS if ok else WARN,
                ""
                if ok
                else "the scheduler and timer ticks still use the data cores (kernel command line; reboot)",
            )
        )
    return items, data, control, source


def kernel_arg(host, name):
    """The CPU list of a kernel command-line argument (isolcpus's flags dropped)."""
    for arg in (host.read("proc/cmdline") or "").split():
        if arg.startswith(name + "="):
            value = arg.split("=", 1)[1]
            parts = [p for p in value.split(",") if p and (p[0].isdigit())]
            return ",".join(parts)
    return ""


# ----------------------------------------------------------------------------- apply


class Change:
    """One file to write: sysctl, selector (sysfs [word] lists) or whole file."""

    def __init__(self, what, path, kind, old, new):
        self.what = what
        self.path = path
        self.kind = kind
        self.old = old
        self.new = new


def planned_changes(host, topo, plan):
    changes = []
    dropin = []
    for name, floor, target in SYSCTL_FLOORS:
        v = sysctl(host, name)
        if v is not None and v.isdigit() and int(v) < floor:
            changes.append(
                Change(f"sysctl {name}", "proc/sys/" + name.replace(".", "/"), "value", v, str(target))
            )
            dropin.append(f"{name} = {target}")
    swaps = swap_on(host)
    v = sysctl(host, "vm.swappiness")
    if swaps and v is not None and v.isdigit() and int(v) > SWAPPINESS_MAX:
        changes.append(
            Change("sysctl vm.swappiness", "proc/sys/vm/swappiness", "value", v, str(SWAPPINESS_APPLY))
        )
        dropin.append(f"vm.swappiness = {SWAPPINESS_APPLY}")
    if dropin:
        text = (
            "# Written by tessera's kernel-tuning/apply; kernel-tuning/revert takes it back.\n"
            + "\n".join(dropin)
            + "\n"
        )
        old = host.read_raw(DROPIN_FILE)
        if old != text:
            changes.append(Change("sysctl drop-in", DROPIN_FILE, "file", old, text))
    for name, good in (
        ("enabled", ("madvise", "never")),
        ("defrag", ("madvise", "defer+madvise", "defer", "never")),
    ):
        rel = f"sys/kernel/mm/transparent_hugepage/{name}"
        cur = selected(host.read(rel))
        if cur is not None and cur not in good:
            changes.append(Change(f"THP {name}", rel, "selector", cur, "madvise"))
    for c in sorted(set(plan.data) | set(plan.irq_cpus) | ({plan.control} - {None})):
        rel = f"sys/devices/system/cpu/cpu{c}/cpufreq/scaling_governor"
        cur = host.read(rel)
        avail = (
            host.read(f"sys/devices/system/cpu/cpu{c}/cpufreq/scaling_available_governors") or ""
        ).split()
        if cur is not None and cur != "performance" and "performance" in avail:
            changes.append(Change(f"CPU {c} governor", rel, "value", cur, "performance"))
    for c in sorted(plan.data):
        base = f"sys/devices/system/cpu/cpu{c}/cpuidle"
        for st in host.listdir(base):
            lat = host.read(f"{base}/{st}/latency")
            dis = host.read(f"{base}/{st}/disable")
            if (
                st.startswith("state")
                and lat
                and lat.isdigit()
                and int(lat) > IDLE_EXIT_LATENCY_MAX_US
                and dis == "0"
            ):
                name = host.read(f"{base}/{st}/name") or st
                changes.append(
                    Change(f"CPU {c} idle state {name} ({lat} us)", f"{base}/{st}/disable", "value", "0", "1")
                )
    for irq, label, cpu in plan.irq_map:
        rel = f"proc/irq/{irq}/smp_affinity_list"
        cur = host.read(rel)
        if plan.mode == "spread":
            # Spread mode only moves an IRQ that several CPUs share onto its own CPU.
            if cur is not None and len(parse_cpu_list(cur) or []) <= 1:
                continue
        if cur is not None and parse_cpu_list(cur) != [cpu]:
            changes.append(Change(f"IRQ {irq} {label} affinity", rel, "value", cur, str(cpu)))
    return changes


def write_file(host, rel, kind, value):
    path = host.path(rel)
    if value is None:
        os.remove(path)
        return
    if kind == "selector" and host.fake:
        # A fake tree behaves as sysfs does: the word written becomes the bracketed one.
        words = [w.strip("[]") for w in (host.read_raw(rel) or "").split()]
        text = " ".join(f"[{w}]" if w == value else w for w in words) + "\n"
    elif kind == "file":
        text = value
    else:
        text = value + "\n"
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)


def make_dirs(host, rel, created):
    parts = rel.split("/")
    for i in range(1, len(parts) + 1):
        d = "/".join(parts[:i])
        if not os.path.isdir(host.path(d)):
            os.mkdir(host.path(d))
            created.append(d)


def load_state(host):
    text = host.read_raw(STATE_FILE)
    if text is None:
        return {"version": 1, "saved": {}, "dirs_created": []}
    return json.loads(text)


def save_state(host, state):
    with open(host.path(STATE_FILE), "w", encoding="utf-8") as f:
        json.dump(state, f, indent=1, sort_keys=True)
        f.write("\n")


def apply(host, plan, yes, out):
    topo = plan.topo
    changes = planned_changes(host, topo, plan)
    if not changes:
        out.write("nothing to change: every setting apply manages is already as recommended\n")
        return 0

    def describe(ch):
        if ch.kind == "file":
            old = "absent" if ch.old is None else "other text"
            return f"{ch.what}: /{ch.path} ({old} -> {len(ch.new.splitlines())} line(s))"
        return f"{ch.what}: {ch.old} -> {ch.new} (/{ch.path})"

    if not yes:
        for ch in changes:
            out.write(f"would set {describe(ch)}\n")
        out.write(
            f"dry run: {len(changes)} change(s); run with --yes to make them (kernel-tuning/revert takes them back)\n"
        )
        return 0
    state = load_state(host)
    created = state.setdefault("dirs_created", [])
    for ch in changes:
        if ch.path not in state["saved"]:
            if ch.kind == "file":
                prev = host.read_raw(ch.path)
            elif ch.kind == "selector":
                prev = selected(host.read(ch.path))
            else:
                prev = host.read(ch.path)
            state["saved"][ch.path] = {"kind": ch.kind, "previous": prev, "what": ch.what}
        if ch.kind == "file":
            make_dirs(host, os.path.dirname(ch.path), created)
    make_dirs(host, os.path.dirname(STATE_FILE), created)
    # The previous values are on disk before the first write.
    save_state(host, state)
    failed = 0
    for ch in changes:
        try:
            write_file(host, ch.path, ch.kind, ch.new)
            out.write(f"set {describe(ch)}\n")
        except OSError as e:
            # The kernel refused it (a managed IRQ, a governor the driver lacks): nothing
            # changed, so there is nothing to restore.
            out.write(f"could not set {ch.what}: {e.strerror or e}\n")
            state["saved"].pop(ch.path, None)
            failed += 1
    save_state(host, state)
    out.write(f"{len(changes) - failed} change(s) made; previous values in /{STATE_FILE}\n")
    if processes(host, "irqbalance") and plan.mode == "housekeeping" and plan.irq_map:
        out.write("irqbalance is running and will move the IRQs again: systemctl disable --now irqbalance\n")
    return 1 if failed else 0


def revert(host, dry_run, out):
    if not host.exists(STATE_FILE):
        out.write("nothing to revert: apply has saved nothing\n")
        return 0
    state = load_state(host)
    verb = "would restore" if dry_run else "restored"
    for rel, entry in sorted(state["saved"].items()):
        prev = entry["previous"]
        shown = "removed" if prev is None else ("previous text" if entry["kind"] == "file" else prev)
        out.write(f"{verb} {entry['what']}: /{rel} ({shown})\n")
        if not dry_run:
            write_file(host, rel, entry["kind"], prev)
    if dry_run:
        return 0
    os.remove(host.path(STATE_FILE))
    for d in reversed(state.get("dirs_created", [])):
        try:
            os.rmdir(host.path(d))
        except OSError:
            pass  # something else was put there since: left in place
    out.write(f"{len(state['saved'])} setting(s) restored\n")
    return 0


# ----------------------------------------------------------------------------- snapshot


def snapshot(host, dest, out):
    """Copies every file check and plan read, and every directory they listed, into DEST,
    keeping sysfs's relative symlinks (a device's realpath resolves in the copy as on the
    host). Processes other than tessera and irqbalance are left out."""
    keep = set(processes(host, "tessera")) | set(processes(host, "irqbalance"))

    def wanted(rel):
        parts = rel.split("/")
        return not (len(parts) > 1 and parts[0] == "proc" and parts[1].isdigit() and parts[1] not in keep)

    files = [r for r in sorted(set(host.read_paths)) if wanted(r)]
    for rel in files:
        copy_path(host.root, dest, rel)
    for rel in sorted(set(host.listed)):
        if rel == "proc":
            continue
        for entry in host.listdir(rel):
            if wanted(f"{rel}/{entry}"):
                copy_path(host.root, dest, f"{rel}/{entry}")
    # Git keeps no empty directory: a placeholder in each (a queue's rx-0, say) keeps the
    # copy's listings as they were.
    for d, subdirs, names in os.walk(dest):
        if not subdirs and not names:
            open(os.path.join(d, ".keep"), "w").close()
    out.write(f"copied {len(files)} file(s) to {dest}\n")


def copy_path(root, dest, rel):
    """Copies ROOT/REL to DEST/REL: each symlink on the way becomes the same link in DEST
    and the copy goes on at its target; the last component is copied as a file (empty if
    it cannot be read) or made as a directory. /proc/self is this process."""
    if ".." in rel.split("/"):
        # As the kernel does: the links on the way are resolved before "..".
        real = os.path.realpath(os.path.join(root, rel))
        head = rel.split("/..")[0]
        copy_path(root, dest, head)
        rel = os.path.relpath(real, os.path.realpath(root))
    parts = [p for p in rel.split("/") if p]
    src_dir, dst_dir = root, dest
    for i, part in enumerate(parts):
        src = os.path.join(src_dir, part)
        dst = os.path.join(dst_dir, part)
        if part == "self" and os.path.realpath(src_dir) == os.path.realpath(os.path.join(root, "proc")):
            src = os.path.join(src_dir, str(os.getpid()))
        elif os.path.islink(src):
            target = os.readlink(src)
            if os.path.isabs(target):
                target = os.path.relpath(os.path.join(root, target.lstrip("/")), src_dir)
            if not os.path.lexists(dst):
                os.makedirs(dst_dir, exist_ok=True)
                os.symlink(target, dst)
            here = os.path.relpath(src_dir, root)
            copy_path(root, dest, os.path.normpath(os.path.join(here, target, *parts[i + 1 :])))
            return
        if i == len(parts) - 1:
            os.makedirs(dst_dir, exist_ok=True)
            if os.path.isdir(src):
                os.makedirs(dst, exist_ok=True)
                return
            try:
                with open(src, encoding="utf-8", errors="replace") as f:
                    text = f.read()
            except OSError:
                text = ""
            if not os.path.exists(dst):
                with open(dst, "w", encoding="utf-8") as f:
                    f.write(text)
            return
        src_dir, dst_dir = src, dst


# ----------------------------------------------------------------------------- main


def print_items(items, out):
    w = max(len(i.name) for i in items)
    wc = min(max(len(i.current) for i in items), 48)
    out.write(f"{'item':<{w}}  {'status':<6}  {'current':<{wc}}  recommended\n")
    for i in items:
        out.write(f"{i.name:<{w}}  {i.status:<6}  {i.current:<{wc}}  {i.recommended}\n")
        if i.note:
            out.write(f"{'':<{w}}          {i.note}\n")


def main(command, argv=None):
    root = os.environ.get("TESSERA_SYSROOT", "/")
    parser = argparse.ArgumentParser(prog=f"kernel-tuning/{command}")
    parser.add_argument("--nic", help="the NIC tessera serves on (default: the one with the most queues)")
    if command == "check":
        parser.add_argument("--json", action="store_true", help="one JSON object instead of the table")
        parser.add_argument(
            "--cpus", help="tessera's data cores (default: a running tessera's --cpus, else the plan's)"
        )
        parser.add_argument("--control-cpu", help="tessera's control core, a CPU or 'shared'")
    elif command == "plan":
        parser.add_argument("--json", action="store_true")
    elif command == "apply":
        parser.add_argument("--yes", action="store_true", help="make the changes (without it: print them)")
    elif command == "revert":
        parser.add_argument("--dry-run", action="store_true", help="print what would be restored")
    elif command == "snapshot":
        parser.add_argument("dest", help="an empty directory to copy into")
    args = parser.parse_args(argv)
    host = Host(root)
    out = sys.stdout
    try:
        return run(command, args, host, out, parser)
    except OSError as e:
        # A state file or drop-in that cannot be written (not root, a read-only /etc).
        where = f": {e.filename}" if e.filename else ""
        sys.stderr.write(f"kernel-tuning/{command}: {e.strerror or e}{where} (apply and revert need root)\n")
        return 1


def run(command, args, host, out, parser):
    if command == "revert":
        return revert(host, args.dry_run, out)
    topo = Topology(host)
    plan = Plan(topo, args.nic)
    if command == "plan":
        if args.json:
            json.dump(plan.as_json(), out, indent=1)
            out.write("\n")
        else:
            print_plan(plan, out)
        return 0
    if command == "apply":
        return apply(host, plan, args.yes, out)
    data = control = None
    if command == "check" and args.cpus:
        data = parse_cpu_list(args.cpus)
        if not data:
            parser.error(f"--cpus: not a CPU list: {args.cpus}")
        unknown = [c for c in data if c not in topo.by_id]
        if unknown:
            parser.error(f"--cpus: no such online CPU(s): {format_cpu_list(unknown)}")
        control = None
        if args.control_cpu not in (None, "shared"):
            if not args.control_cpu.isdigit():
                parser.error(f"--control-cpu: a CPU number or 'shared', not {args.control_cpu}")
            control = int(args.control_cpu)
    items, data, control, source = checks(host, topo, plan, data, control)
    if command == "snapshot":
        print_plan(plan, open(os.devnull, "w"))
        os.makedirs(args.dest, exist_ok=True)
        snapshot(host, args.dest, out)
        return 0
    failed = any(i.status == FAIL for i in items)
    if args.json:
        json.dump(
            {
                "data_cpus": data,
                "control_cpu": control,
                "layout_from": source,
                "items": [i.as_json() for i in items],
                "failed": failed,
            },
            out,
            indent=1,
        )
        out.write("\n")
    else:
        ctl = "shared" if control is None else str(control)
        out.write(
            f"tessera's data cores: CPUs {format_cpu_list(data)}, control core {ctl} (from {source})\n\n"
        )
        print_items(items, out)
        counts = {s: sum(1 for i in items if i.status == s) for s in (PASS, WARN, FAIL, SKIP)}
        out.write("\n" + ", ".join(f"{n} {s}" for s, n in counts.items()) + "\n")
    return 1 if failed else 0


if __name__ == "__main__":
    if len(sys.argv) < 2 or sys.argv[1] not in ("check", "plan", "apply", "revert", "snapshot"):
        sys.exit("usage: tessera_tuning.py check|plan|apply|revert|snapshot [options]")
    sys.exit(main(sys.argv[1], sys.argv[2:]))
