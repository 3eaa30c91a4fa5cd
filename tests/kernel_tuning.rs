//! kernel-tuning/{check,plan,apply,revert} against fake /proc, /sys and /etc trees
//! (tests/kernel-tuning/fixtures): their output is compared with the expected files in
//! tests/kernel-tuning/expected, and `apply --yes` then `revert` must leave a copy of each
//! tree byte-identical. `UPDATE_EXPECTED=1 cargo test --test kernel_tuning` rewrites the
//! expected files (read the diff before committing it).

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::Command;

const FIXTURES: [&str; 3] = ["vm-2cpu", "two-socket", "no-numa"];

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Whether python3 is installed: the scripts need it. Without it (a machine with only the
/// Rust toolchain) the tests that run them say so and pass, as the Redis comparisons do.
fn have_python() -> bool {
    static HAVE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    let have = *HAVE.get_or_init(|| {
        Command::new("python3")
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
    });
    if !have {
        eprintln!("skipped: python3 is not installed (apt-get install python3)");
    }
    have
}

/// Runs kernel-tuning/SCRIPT under ROOT; (exit code, stdout).
fn run(script: &str, root: &Path, args: &[&str]) -> (i32, String) {
    let out = Command::new("python3")
        .arg(repo().join("kernel-tuning").join(script))
        .args(args)
        .env("TESSERA_SYSROOT", root)
        .output()
        .expect("python3 runs (the kernel-tuning scripts need Python 3)");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.is_empty() || out.status.code() == Some(2),
        "{script} {args:?} wrote to stderr:\n{stderr}"
    );
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8(out.stdout).expect("utf-8 output"),
    )
}

/// Compares TEXT with the expected file, or writes it there under UPDATE_EXPECTED=1.
fn expect(fixture: &str, name: &str, text: &str) {
    let path = repo()
        .join("tests/kernel-tuning/expected")
        .join(fixture)
        .join(name);
    if std::env::var_os("UPDATE_EXPECTED").is_some() {
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(&path, text).unwrap();
        return;
    }
    let want = fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (UPDATE_EXPECTED=1 writes it)", path.display()));
    assert!(
        want == text,
        "{fixture} {name} differs from {}:\n--- expected\n{want}\n--- got\n{text}",
        path.display()
    );
}

/// What a tree holds: relative path -> "dir", "link -> target" or the file's bytes.
fn tree(root: &Path) -> BTreeMap<String, Vec<u8>> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<String, Vec<u8>>) {
        let mut entries: Vec<_> = fs::read_dir(dir).unwrap().map(|e| e.unwrap()).collect();
        entries.sort_by_key(|e| e.file_name());
        for e in entries {
            let path = e.path();
            let rel = path.strip_prefix(root).unwrap().display().to_string();
            let kind = fs::symlink_metadata(&path).unwrap().file_type();
            if kind.is_symlink() {
                let target = fs::read_link(&path).unwrap();
                out.insert(rel, format!("link -> {}", target.display()).into_bytes());
            } else if kind.is_dir() {
                out.insert(rel, b"dir".to_vec());
                walk(root, &path, out);
            } else {
                out.insert(rel, fs::read(&path).unwrap());
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(root, root, &mut out);
    out
}

fn copy_tree(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    for e in fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let (src, dst) = (e.path(), to.join(e.file_name()));
        let kind = fs::symlink_metadata(&src).unwrap().file_type();
        if kind.is_symlink() {
            symlink(fs::read_link(&src).unwrap(), &dst).unwrap();
        } else if kind.is_dir() {
            copy_tree(&src, &dst);
        } else {
            fs::copy(&src, &dst).unwrap();
        }
    }
}

/// The files that differ between two trees, a line each: "path: before -> after".
fn changed(before: &BTreeMap<String, Vec<u8>>, after: &BTreeMap<String, Vec<u8>>) -> String {
    let show = |v: Option<&Vec<u8>>| match v {
        None => "(absent)".to_string(),
        Some(b) => format!("{:?}", String::from_utf8_lossy(b)),
    };
    let mut out = String::new();
    let keys: std::collections::BTreeSet<_> = before.keys().chain(after.keys()).collect();
    for k in keys {
        let (b, a) = (before.get(k), after.get(k));
        if b != a {
            out.push_str(&format!("{k}: {} -> {}\n", show(b), show(a)));
        }
    }
    out
}

fn fixture(name: &str) -> PathBuf {
    repo().join("tests/kernel-tuning/fixtures").join(name)
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "tessera-kernel-tuning-{}-{name}",
        std::process::id()
    ));
    let _ = fs::remove_dir_all(&dir);
    dir
}

#[test]
fn check_and_plan_report_each_fake_host_as_expected() {
    if !have_python() {
        return;
    }
    for f in FIXTURES {
        let root = fixture(f);
        let (code, text) = run("check", &root, &[]);
        expect(f, "check.txt", &text);
        // Only the two-socket host has a FAIL (its unit's LimitMEMLOCK=64K for a non-root user).
        assert_eq!(code, i32::from(f == "two-socket"), "{f}: check's exit code");
        let (code, json) = run("check", &root, &["--json"]);
        expect(f, "check.json", &json);
        assert_eq!(code, i32::from(f == "two-socket"));
        let (code, text) = run("plan", &root, &[]);
        assert_eq!(code, 0);
        expect(f, "plan.txt", &text);
        let (_, json) = run("plan", &root, &["--json"]);
        expect(f, "plan.json", &json);
        let (code, text) = run("apply", &root, &[]);
        assert_eq!(code, 0);
        expect(f, "apply-dry-run.txt", &text);
    }
}

#[test]
fn dry_runs_and_checks_change_nothing() {
    if !have_python() {
        return;
    }
    for f in FIXTURES {
        let root = scratch(&format!("dry-{f}"));
        copy_tree(&fixture(f), &root);
        let before = tree(&root);
        run("check", &root, &[]);
        run("plan", &root, &["--json"]);
        run("apply", &root, &[]);
        run("revert", &root, &["--dry-run"]);
        assert_eq!(changed(&before, &tree(&root)), "", "{f}");
        fs::remove_dir_all(&root).unwrap();
    }
}

#[test]
fn apply_then_revert_leaves_each_tree_byte_identical() {
    if !have_python() {
        return;
    }
    for f in FIXTURES {
        let root = scratch(&format!("apply-{f}"));
        copy_tree(&fixture(f), &root);
        let before = tree(&root);
        let (code, text) = run("apply", &root, &["--yes"]);
        assert_eq!(code, 0, "{f}: {text}");
        expect(f, "apply-yes.txt", &text);
        let after = tree(&root);
        // Every change, and the state apply keeps to undo them.
        expect(f, "applied.diff", &changed(&before, &after));
        // Applying again changes nothing, and keeps the first previous values.
        let (code, text) = run("apply", &root, &["--yes"]);
        assert_eq!(code, 0);
        assert_eq!(
            text,
            "nothing to change: every setting apply manages is already as recommended\n"
        );
        assert_eq!(changed(&after, &tree(&root)), "", "{f}: a second apply");
        // check after apply: the items apply manages pass.
        let (_, json) = run("check", &root, &["--json"]);
        for item in [
            "net.ipv4.tcp_max_syn_backlog",
            "net.core.netdev_max_backlog",
            "THP enabled",
            "THP defrag",
        ] {
            let at = json
                .find(&format!("\"item\": \"{item}\""))
                .unwrap_or_else(|| panic!("{f}: no {item} in check --json"));
            let status = &json[at..json[at..].find('}').unwrap() + at];
            assert!(
                !status.contains("\"WARN\"") && !status.contains("\"FAIL\""),
                "{f}: {item} after apply: {status}"
            );
        }
        let (code, _) = run("revert", &root, &[]);
        assert_eq!(code, 0);
        assert_eq!(changed(&before, &tree(&root)), "", "{f}: after revert");
        let (_, text) = run("revert", &root, &[]);
        assert_eq!(text, "nothing to revert: apply has saved nothing\n");
        fs::remove_dir_all(&root).unwrap();
    }
}

#[test]
fn revert_restores_what_was_there_before_apply_even_if_changed_since() {
    if !have_python() {
        return;
    }
    // An operator's own drop-in of the same name is kept, and restored exactly.
    let root = scratch("own-dropin");
    copy_tree(&fixture("two-socket"), &root);
    let dropin = root.join("etc/sysctl.d/90-tessera.conf");
    fs::write(&dropin, "# mine\nnet.core.somaxconn = 65535\n").unwrap();
    let before = tree(&root);
    assert_eq!(run("apply", &root, &["--yes"]).0, 0);
    assert!(fs::read_to_string(&dropin)
        .unwrap()
        .contains("kernel-tuning/apply"));
    // Something else moves a setting after apply: revert still puts back the first value.
    fs::write(root.join("proc/sys/vm/swappiness"), "30\n").unwrap();
    assert_eq!(run("revert", &root, &[]).0, 0);
    assert_eq!(changed(&before, &tree(&root)), "");
    fs::remove_dir_all(&root).unwrap();
}

#[test]
fn bad_arguments_are_refused_with_a_reason() {
    if !have_python() {
        return;
    }
    let root = fixture("vm-2cpu");
    for (args, says) in [
        (&["--cpus", "x"][..], "not a CPU list"),
        (&["--cpus", "0-7"][..], "no such online CPU(s): 2-7"),
        (
            &["--cpus", "0", "--control-cpu", "a"][..],
            "a CPU number or 'shared'",
        ),
        (&["--nic", "eth9"][..], "no such NIC: eth9"),
    ] {
        let out = Command::new("python3")
            .arg(repo().join("kernel-tuning/check"))
            .args(args)
            .env("TESSERA_SYSROOT", &root)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_ne!(out.status.code(), Some(0), "{args:?}");
        assert!(stderr.contains(says), "{args:?}: {stderr}");
    }
    // An explicit layout is judged instead of the plan's.
    let (code, text) = run("check", &root, &["--cpus", "1", "--control-cpu", "0"]);
    assert_eq!(code, 0);
    assert!(text.starts_with("tessera's data cores: CPUs 1, control core 0 (from --cpus)"));
}

mod common;

/// The server reads the same fake /sys (TESSERA_SYSROOT) and says where it runs: here two
/// NUMA nodes of one CPU each, the two CPUs SMT siblings, the NIC on node 1, and a layout
/// that gets every warning.
#[test]
fn the_server_logs_its_layout_and_warns_about_a_bad_one() {
    let root = scratch("server-sysfs");
    for (rel, text) in [
        ("sys/devices/system/cpu/online", "0-1\n"),
        ("sys/devices/system/node/online", "0-1\n"),
        ("sys/devices/system/node/node0/cpulist", "0\n"),
        ("sys/devices/system/node/node1/cpulist", "1\n"),
        (
            "sys/devices/system/cpu/cpu0/topology/thread_siblings_list",
            "0-1\n",
        ),
        (
            "sys/devices/system/cpu/cpu1/topology/thread_siblings_list",
            "0-1\n",
        ),
        ("sys/class/net/eth0/device/numa_node", "1\n"),
    ] {
        let p = root.join(rel);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, text).unwrap();
    }
    let dir = common::scratch_dir("layout");
    let port = common::free_port();
    let log = root.join("tessera.log");
    let mut child = Command::new(env!("CARGO_BIN_EXE_tessera"))
        .args([
            "--port",
            &port.to_string(),
            "--bind",
            "0.0.0.0",
            "--save",
            "",
        ])
        .args(["--cores", "2", "--cpus", "0,1", "--control-cpu", "1"])
        .args(["--cluster-enabled", "yes", "--dir"])
        .arg(&*dir)
        .env("TESSERA_SYSROOT", &root)
        .stdout(std::process::Stdio::null())
        .stderr(fs::File::create(&log).unwrap())
        .spawn()
        .expect("spawn tessera");
    let deadline = std::time::Instant::now() + common::START_DEADLINE;
    let text = loop {
        let text = fs::read_to_string(&log).unwrap_or_default();
        if text.contains("Ready to accept connections") {
            break text;
        }
        if let Some(status) = child.try_wait().unwrap() {
            panic!("tessera exited ({status}):\n{text}");
        }
        assert!(
            std::time::Instant::now() < deadline,
            "not ready in time:\n{text}"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    child.kill().unwrap();
    child.wait().unwrap();
    for line in [
        "layout: 2 data core(s) on CPUs 0-1 (node 0,1); control core on CPU 1; NIC eth0 on node 1; 2 NUMA node(s)",
        "data cores span NUMA nodes 0,1",
        "data cores on CPUs 0 are not on NIC eth0's node 1",
        "the control core shares CPU 1 with a data core",
        "the control core's CPU 1 is an SMT sibling of data core CPU(s) 0",
        // This machine has one node: node 0 is there, the fake node 1 is not.
        "core 0: memory from NUMA node 0",
        "core 1: cannot prefer NUMA node 1's memory",
    ] {
        assert!(text.contains(line), "no {line:?} in the log:\n{text}");
    }
    fs::remove_dir_all(&root).unwrap();
}

/// deploy/tessera.conf starts a node with what it says; deploy/tessera.service gives it the
/// limits kernel-tuning/check asks for and the CPUs the config names; systemd accepts the
/// unit (when systemd-analyze is installed: Debian's systemd package).
#[test]
fn the_example_config_and_unit_agree_and_work() {
    use common::*;
    let conf = repo().join("deploy/tessera.conf");
    let unit_path = repo().join("deploy/tessera.service");
    let unit = fs::read_to_string(&unit_path).unwrap();
    let setting = |text: &str, key: &str| -> String {
        text.lines()
            .map(str::trim)
            .find_map(|l| l.strip_prefix(key))
            .unwrap_or_else(|| panic!("no {key} line"))
            .trim_start_matches(['=', ' '])
            .trim()
            .to_string()
    };
    // The config, with only the port, dir and bind overridden (flags win over the file).
    let s = Server::start(2, &[conf.to_str().unwrap(), "--bind", "127.0.0.1"]);
    let mut r = s.raw();
    let text = fs::read_to_string(&conf).unwrap();
    // (`save` is the one left out: the test harness passes --save "".)
    for key in [
        "cpus",
        "control-cpu",
        "maxclients",
        "appendfsync",
        "maxmemory-policy",
    ] {
        let got = match r.cmd(&["CONFIG", "GET", key]) {
            Resp::Array(v) => v[1].clone(),
            other => panic!("CONFIG GET {key}: {other:?}"),
        };
        let want = setting(&text, &format!("{key} "));
        let want = if key == "cpus" {
            // CONFIG GET lists each CPU.
            let cpus = tessera::server::topology::parse_cpu_list(&want).unwrap();
            cpus.iter()
                .map(usize::to_string)
                .collect::<Vec<_>>()
                .join(",")
        } else {
            want
        };
        assert_eq!(got, Resp::bulk(&want), "{key}");
    }
    // The unit's CPUs are the config's.
    assert_eq!(setting(&unit, "CPUAffinity"), setting(&text, "cpus "));
    // check, with the unit installed on a fake host, finds its limits good.
    if have_python() {
        unit_limits_pass_check(&unit);
    }
    // systemd's own reading of it, with ExecStart on the binary and config under test.
    let analyze = Path::new("/usr/bin/systemd-analyze");
    if !analyze.exists() {
        eprintln!("systemd-analyze not installed: the unit's syntax was not checked by systemd");
        return;
    }
    let dir = scratch_dir("unit-verify");
    let local = dir.join("tessera.service");
    fs::write(
        &local,
        unit.replace(
            "/usr/local/bin/tessera /etc/tessera/tessera.conf",
            &format!("{} {}", env!("CARGO_BIN_EXE_tessera"), conf.display()),
        ),
    )
    .unwrap();
    let out = Command::new(analyze)
        .arg("verify")
        .arg(&local)
        .output()
        .unwrap();
    assert!(
        out.status.success() && out.stderr.is_empty(),
        "systemd-analyze verify: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Its sandbox: systemd rates exposure 0 (locked down) to 10; this unit is 1.5.
    let out = Command::new(analyze)
        .args(["security", "--offline=yes", "--threshold=20"])
        .arg(&local)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("Overall exposure level for tessera.service: 1.5"),
        "{text}"
    );
}

/// kernel-tuning/check, on a fake host with UNIT installed, finds its limits good.
fn unit_limits_pass_check(unit: &str) {
    let root = scratch("unit");
    copy_tree(&fixture("vm-2cpu"), &root);
    fs::create_dir_all(root.join("etc/systemd/system")).unwrap();
    fs::write(root.join("etc/systemd/system/tessera.service"), unit).unwrap();
    let (_, out) = run("check", &root, &[]);
    for want in [
        "RLIMIT_MEMLOCK                PASS    unlimited",
        "RLIMIT_NOFILE                 PASS    65536",
        "from /etc/systemd/system/tessera.service",
    ] {
        assert!(out.contains(want), "no {want:?} in:\n{out}");
    }
    fs::remove_dir_all(&root).unwrap();
}
