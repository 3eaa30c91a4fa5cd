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
    // An operator's own drop-in of the same name is kept, and restored exactly.
    let root = scratch("own-dropin");
    copy_tree(&fixture("two-socket"), &root);
    let dropin = root.join("etc/sysctl.d/90-tessera.conf");
    fs::write(&dropin, "# mine\nnet.core.somaxconn = 65535\n").unwrap();
    let before = tree(&root);
    assert_eq!(run("apply", &root, &["--yes"]).0, 0);
    assert!(fs::read_to_string(&dropin).unwrap().contains("kernel-tuning/apply"));
    // Something else moves a setting after apply: revert still puts back the first value.
    fs::write(root.join("proc/sys/vm/swappiness"), "30\n").unwrap();
    assert_eq!(run("revert", &root, &[]).0, 0);
    assert_eq!(changed(&before, &tree(&root)), "");
    fs::remove_dir_all(&root).unwrap();
}

#[test]
fn bad_arguments_are_refused_with_a_reason() {
    let root = fixture("vm-2cpu");
    for (args, says) in [
        (&["--cpus", "x"][..], "not a CPU list"),
        (&["--cpus", "0-7"][..], "no such online CPU(s): 2-7"),
        (&["--cpus", "0", "--control-cpu", "a"][..], "a CPU number or 'shared'"),
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
