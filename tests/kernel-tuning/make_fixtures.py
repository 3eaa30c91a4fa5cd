#!/usr/bin/env python3
"""Writes the fake /proc, /sys and /etc trees of two hosts the kernel-tuning tests run
against (tests/kernel-tuning/fixtures/): `two-socket`, a 2-socket host with SMT and its NIC
on node 1, and `no-numa`, a 4-CPU host without /sys/devices/system/node. The third,
`vm-2cpu`, is this project's 2-CPU build VM as `kernel-tuning/tessera_tuning.py snapshot`
copied it. Run from the repository root; it replaces the two trees.
"""

import os
import shutil

BASE = "tests/kernel-tuning/fixtures"


def put(root, rel, text):
    path = os.path.join(root, rel)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        f.write(text if text.endswith("\n") or text == "" else text + "\n")


def limits(memlock, nofile):
    rows = [
        ("Max open files", nofile, nofile, "files"),
        ("Max locked memory", memlock, memlock, "bytes"),
    ]
    out = f"{'Limit':<26}{'Soft Limit':<21}{'Hard Limit':<21}Units     \n"
    for name, soft, hard, unit in rows:
        out += f"{name:<26}{soft:<21}{hard:<21}{unit:<10}\n"
    return out


def status(uid):
    return f"Name:\tpython3\nUid:\t{uid}\t{uid}\t{uid}\t{uid}\n"


def cpu(root, n, core, package, siblings, governor=None, idle=(), freq_available="performance powersave"):
    base = f"sys/devices/system/cpu/cpu{n}"
    put(root, f"{base}/topology/core_id", str(core))
    put(root, f"{base}/topology/physical_package_id", str(package))
    put(root, f"{base}/topology/thread_siblings_list", siblings)
    if governor:
        put(root, f"{base}/cpufreq/scaling_governor", governor)
        put(root, f"{base}/cpufreq/scaling_available_governors", freq_available)
    for i, (name, latency) in enumerate(idle):
        put(root, f"{base}/cpuidle/state{i}/name", name)
        put(root, f"{base}/cpuidle/state{i}/latency", str(latency))
        put(root, f"{base}/cpuidle/state{i}/disable", "0")


def sysctls(root, values):
    for name, value in values.items():
        put(root, "proc/sys/" + name.replace(".", "/"), value)


def interrupts(root, ncpu, rows):
    head = " " * 4 + "".join(f"      CPU{i}" for i in range(ncpu)) + "\n"
    body = ""
    for irq, name in rows:
        body += (
            f"{irq:>4}:"
            + "".join(f"{0:>10}" for _ in range(ncpu))
            + f"  IR-PCI-MSIX-0000:81:00.0   0-edge      {name}\n"
        )
    put(root, "proc/interrupts", head + body)


def two_socket():
    root = os.path.join(BASE, "two-socket")
    shutil.rmtree(root, ignore_errors=True)
    # 2 sockets x 4 cores x 2 threads, numbered as Linux does on such hosts: 0-3 socket 0,
    # 4-7 socket 1, 8-15 their second threads.
    idle = (("POLL", 0), ("C1", 2), ("C1E", 10), ("C6", 133))
    for n in range(16):
        first = n % 8
        package = first // 4
        core = first % 4
        cpu(root, n, core, package, f"{first},{first + 8}", governor="powersave", idle=idle)
    put(root, "sys/devices/system/cpu/online", "0-15")
    put(root, "sys/devices/system/cpu/cpufreq/boost", "1")
    put(root, "sys/devices/system/node/online", "0-1")
    for node, cpus in ((0, "0-3,8-11"), (1, "4-7,12-15")):
        put(root, f"sys/devices/system/node/node{node}/cpulist", cpus)
        put(
            root,
            f"sys/devices/system/node/node{node}/meminfo",
            f"Node {node} MemTotal:       65536000 kB\nNode {node} MemFree:        60000000 kB",
        )
    # A 8-queue NIC on node 1 (mlx5-like: one async IRQ and one per completion queue).
    nic = "sys/class/net/ens1f0"
    put(root, f"{nic}/device/numa_node", "1")
    rows = [(100, "mlx5_async0@pci:0000:81:00.0")] + [
        (101 + i, f"mlx5_comp{i}@pci:0000:81:00.0") for i in range(8)
    ]
    for irq, _ in rows:
        put(root, f"{nic}/device/msi_irqs/{irq}", "msix")
        put(root, f"proc/irq/{irq}/smp_affinity_list", "0-15")
    for q in range(8):
        put(root, f"{nic}/queues/rx-{q}/rps_cpus", "0000")
        put(root, f"{nic}/queues/tx-{q}/xps_cpus", "0000")
    put(root, "sys/class/net/lo/queues/rx-0/rps_cpus", "0000")
    interrupts(root, 16, rows)
    sysctls(
        root,
        {
            "net.core.somaxconn": "4096",
            "net.ipv4.tcp_max_syn_backlog": "512",
            "net.core.netdev_max_backlog": "1000",
            "net.core.busy_poll": "0",
            "net.core.busy_read": "0",
            "net.ipv4.ip_local_port_range": "1024\t65535",
            "vm.overcommit_memory": "0",
            "vm.swappiness": "60",
        },
    )
    put(
        root,
        "proc/swaps",
        "Filename\t\t\t\tType\t\tSize\t\tUsed\t\tPriority\n/dev/sda2                               partition\t8388604\t\t0\t\t-2",
    )
    put(root, "sys/kernel/mm/transparent_hugepage/enabled", "[always] madvise never")
    put(root, "sys/kernel/mm/transparent_hugepage/defrag", "[always] defer defer+madvise madvise never")
    put(root, "proc/cmdline", "BOOT_IMAGE=/boot/vmlinuz-6.1.0-18-amd64 root=/dev/sda1 ro quiet")
    put(root, "proc/meminfo", "MemTotal:       131072000 kB")
    put(root, "proc/1200/comm", "irqbalance")
    put(root, "proc/self/limits", limits("8388608", "1024"))
    put(root, "proc/self/status", status(0))
    # An installed unit that runs tessera as its own user with too little locked memory.
    put(
        root,
        "etc/systemd/system/tessera.service",
        "[Unit]\nDescription=tessera\n\n[Service]\nUser=tessera\nLimitMEMLOCK=64K\nLimitNOFILE=65536\n"
        "ExecStart=/usr/local/bin/tessera /etc/tessera/tessera.conf\n",
    )
    put(root, "etc/sysctl.d/99-sysctl.conf", "# the distribution's\n")


def no_numa():
    root = os.path.join(BASE, "no-numa")
    shutil.rmtree(root, ignore_errors=True)
    # 4 CPUs, 2 cores x 2 threads (0 and 2 share a core, 1 and 3), no NUMA directory.
    for n in range(4):
        cpu(
            root,
            n,
            n % 2,
            0,
            "0,2" if n % 2 == 0 else "1,3",
            governor="performance",
            idle=(("POLL", 0), ("C1", 1)),
        )
    put(root, "sys/devices/system/cpu/online", "0-3")
    put(root, "sys/devices/system/cpu/intel_pstate/no_turbo", "0")
    # A 4-queue NIC whose IRQs are only in /proc/interrupts (no msi_irqs listing).
    nic = "sys/class/net/eth0"
    put(root, f"{nic}/device/numa_node", "-1")
    for q in range(4):
        put(root, f"{nic}/queues/rx-{q}/rps_cpus", "0")
    rows = [(24 + i, f"eth0-TxRx-{i}") for i in range(4)]
    for irq, _ in rows:
        put(root, f"proc/irq/{irq}/smp_affinity_list", "0-3")
    interrupts(root, 4, rows)
    sysctls(
        root,
        {
            "kernel.io_uring_disabled": "1",
            "kernel.io_uring_group": "-1",
            "net.core.somaxconn": "1024",
            "net.ipv4.tcp_max_syn_backlog": "4096",
            "net.core.netdev_max_backlog": "16384",
            "net.core.busy_poll": "50",
            "net.core.busy_read": "50",
            "net.ipv4.ip_local_port_range": "32768\t60999",
            "vm.overcommit_memory": "2",
            "vm.swappiness": "60",
        },
    )
    put(root, "proc/swaps", "Filename\t\t\t\tType\t\tSize\t\tUsed\t\tPriority")
    put(root, "sys/kernel/mm/transparent_hugepage/enabled", "always [madvise] never")
    put(root, "sys/kernel/mm/transparent_hugepage/defrag", "always defer [defer+madvise] madvise never")
    put(
        root,
        "proc/cmdline",
        "BOOT_IMAGE=/vmlinuz root=/dev/vda1 isolcpus=managed_irq,domain,1,3 nohz_full=1,3",
    )
    put(root, "proc/meminfo", "MemTotal:       16384000 kB")
    # A running tessera on CPUs 0 and 1 with its control core on 3 (1's sibling).
    put(root, "proc/4321/comm", "tessera")
    put(root, "proc/4321/cmdline", "tessera\0--cpus\x000,1\0--control-cpu\x003\0")
    put(root, "proc/4321/limits", limits("unlimited", "65536"))
    put(root, "proc/4321/status", status(998))
    put(root, "proc/self/limits", limits("65536", "1024"))
    put(root, "proc/self/status", status(1000))


if __name__ == "__main__":
    two_socket()
    no_numa()
