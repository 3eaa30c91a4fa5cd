//! ACL SETUSER, GETUSER, DELUSER, LIST, USERS, WHOAMI, CAT, LOG, DRYRUN, SAVE, LOAD,
//! GENPASS and HELP; AUTH's check of a user and password; the aclfile.

use super::acl::{self, User, Users};
use super::core::{ClientRecord, Core};
use super::session::Session;
use crate::cmd::parse::{eq, int};
use crate::cmd::table::TABLE;
use crate::cmd::{lookup, unknown_subcommand_error, Args};
use crate::resp::Out;
use std::sync::atomic::Ordering;
use std::sync::Arc;

const ACL_HELP: &[&str] = &[
    "ACL <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
    "CAT [<category>]",
    "    List all commands that belong to <category>, or all command categories",
    "    when no category is specified.",
    "DELUSER <username> [<username> ...]",
    "    Delete a list of users.",
    "DRYRUN <username> <command> [<arg> ...]",
    "    Returns whether the user can execute the given command without executing the command.",
    "GETUSER <username>",
    "    Get the user's details.",
    "GENPASS [<bits>]",
    "    Generate a secure 256-bit user password. The optional `bits` argument can",
    "    be used to specify a different size.",
    "LIST",
    "    Show users details in config file format.",
    "LOAD",
    "    Reload users from the ACL file.",
    "LOG [<count> | RESET]",
    "    Show the ACL log entries.",
    "SAVE",
    "    Save the current config to the ACL file.",
    "SETUSER <username> <attribute> [<attribute> ...]",
    "    Create or modify a user with the specified attributes.",
    "USERS",
    "    List all the registered usernames.",
    "WHOAMI",
    "    Return the current connection username.",
    "HELP",
    "    Print this help.",
];

const NO_ACLFILE: &str = "ERR This Redis instance is not configured to use an ACL file. You may want to specify users via the ACL SETUSER command and then issue a CONFIG REWRITE (assuming you have a Redis configuration file set) in order to store users in the Redis configuration.";

/// Adds a denial to the ACL log.
pub fn log(
    core: &Core,
    reason: &'static str,
    context: &'static str,
    object: String,
    username: String,
    record: &ClientRecord,
) {
    let max_len = core.config.borrow().acllog_max_len;
    let now = core.now_ms();
    core.node.acl_log.lock().expect("acl log lock").add(
        reason,
        context,
        object,
        username,
        record.line(),
        now,
        max_len,
    );
}

/// The user AUTH or HELLO AUTH names, if it exists, is on and the password is its.
/// A failure is logged (reason auth).
pub fn authenticate(core: &Core, s: &Session, user: &[u8], pass: &[u8]) -> Option<Arc<User>> {
    let name = String::from_utf8_lossy(user).into_owned();
    let found = core
        .node
        .acl
        .load()
        .users
        .get(&name)
        .filter(|u| u.enabled && u.password_ok(pass))
        .cloned();
    if found.is_none() {
        tracing::debug!(client = s.id, user = %name, "AUTH failed");
        log(
            core,
            "auth",
            "toplevel",
            "AUTH".into(),
            name,
            &s.record.borrow(),
        );
    }
    found
}

/// The users an aclfile holds (none if it does not exist yet), for the start and ACL LOAD.
pub fn load_file(path: &str, requirepass: Option<&str>) -> Result<Users, String> {
    match std::fs::read_to_string(path) {
        Ok(text) => Users::from_file_text(&text, requirepass).map_err(|e| format!("{path}: {e}")),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Users::new(requirepass)),
        Err(e) => Err(format!("{path}: {e}")),
    }
}

fn reply_user(o: &mut Out, u: &User) {
    o.map(6);
    o.bulk(b"flags");
    let flags = u.flags();
    o.array(flags.len());
    for f in flags {
        o.bulk(f.as_bytes());
    }
    o.bulk(b"passwords");
    let hashes = u.password_hashes();
    o.array(hashes.len());
    for h in hashes {
        o.bulk(h.as_bytes());
    }
    o.bulk(b"commands");
    o.bulk(u.commands_text().as_bytes());
    o.bulk(b"keys");
    o.bulk(u.keys_text().as_bytes());
    o.bulk(b"channels");
    o.bulk(u.channels_text().as_bytes());
    o.bulk(b"selectors");
    o.array(0);
}

fn text(a: &[u8]) -> String {
    String::from_utf8_lossy(a).into_owned()
}

pub async fn acl(core: &Core, s: &mut Session, args: Args<'_>, o: &mut Out<'_>) {
    let sub = args.get(1);
    let node = &core.node;
    let n = args.len();
    if eq(sub, "SETUSER") && n >= 3 {
        let name = text(args.get(2));
        if name.contains(' ') || name.is_empty() {
            return o.error("ERR Usernames can't contain spaces or null characters");
        }
        let users = node.acl.load();
        let mut u = users
            .users
            .get(&name)
            .map_or_else(|| User::new(&name), |u| (**u).clone());
        for i in 3..n {
            let rule = text(args.get(i));
            if let Err(e) = u.apply(&rule) {
                return o.error(&format!("ERR Error in ACL SETUSER modifier '{rule}': {e}"));
            }
        }
        let mut next = (**users).clone();
        next.users.insert(name, Arc::new(u));
        node.set_users(next);
        o.ok()
    } else if eq(sub, "GETUSER") && n == 3 {
        match node.acl.load().users.get(&text(args.get(2))) {
            Some(u) => reply_user(o, u),
            None => o.null(),
        }
    } else if eq(sub, "DELUSER") && n >= 3 {
        let users = node.acl.load();
        let mut next = (**users).clone();
        let mut deleted = 0;
        for i in 2..n {
            let name = text(args.get(i));
            if name == "default" {
                return o.error("ERR The 'default' user cannot be removed");
            }
            deleted += next.users.remove(&name).is_some() as i64;
        }
        if deleted > 0 {
            node.set_users(next);
        }
        o.int(deleted)
    } else if eq(sub, "LIST") && n == 2 {
        let users = node.acl.load();
        o.array(users.users.len());
        for u in users.users.values() {
            o.bulk(u.describe().as_bytes());
        }
    } else if eq(sub, "USERS") && n == 2 {
        let users = node.acl.load();
        o.array(users.users.len());
        for name in users.users.keys() {
            o.bulk(name.as_bytes());
        }
    } else if eq(sub, "WHOAMI") && n == 2 {
        o.bulk(s.user.name.as_bytes())
    } else if eq(sub, "CAT") && n <= 3 {
        if n == 2 {
            o.array(acl::CATEGORIES.len());
            for c in acl::CATEGORIES {
                o.bulk(c.as_bytes());
            }
            return;
        }
        let cat = text(args.get(2)).to_ascii_lowercase();
        if !acl::CATEGORIES.contains(&cat.as_str()) {
            return o.error(&format!("ERR Unknown category '{cat}'"));
        }
        let names: Vec<&str> = TABLE
            .iter()
            .filter(|spec| acl::categories(spec).contains(&cat.as_str()))
            .map(|spec| spec.name)
            .collect();
        o.array(names.len());
        for name in names {
            o.bulk(name.as_bytes());
        }
    } else if eq(sub, "LOG") && n <= 3 {
        if n == 3 && eq(args.get(2), "RESET") {
            node.acl_log.lock().expect("acl log lock").entries.clear();
            return o.ok();
        }
        let count = match n {
            2 => 10,
            _ => match int(args.get(2)) {
                Some(c) if c >= 0 => c as usize,
                _ => return o.error("ERR value is out of range, must be positive"),
            },
        };
        let now = core.now_ms();
        let log = node.acl_log.lock().expect("acl log lock");
        let shown: Vec<_> = log.entries.iter().take(count).cloned().collect();
        drop(log);
        o.array(shown.len());
        for e in shown {
            o.map(10);
            o.bulk(b"count");
            o.int(e.count as i64);
            o.bulk(b"reason");
            o.bulk(e.reason.as_bytes());
            o.bulk(b"context");
            o.bulk(e.context.as_bytes());
            o.bulk(b"object");
            o.bulk(e.object.as_bytes());
            o.bulk(b"username");
            o.bulk(e.username.as_bytes());
            o.bulk(b"age-seconds");
            o.double(now.saturating_sub(e.created_ms) as f64 / 1000.0);
            o.bulk(b"client-info");
            o.bulk(e.client_info.as_bytes());
            o.bulk(b"entry-id");
            o.int(e.entry_id as i64);
            o.bulk(b"timestamp-created");
            o.int(e.created_ms as i64);
            o.bulk(b"timestamp-last-updated");
            o.int(e.updated_ms as i64);
        }
    } else if eq(sub, "DRYRUN") && n >= 4 {
        let users = node.acl.load();
        let name = text(args.get(2));
        let Some(u) = users.users.get(&name) else {
            return o.error(&format!("ERR User '{name}' not found"));
        };
        let Some(spec) = lookup(args.get(3)) else {
            return o.error(&format!("ERR Command '{}' not found", text(args.get(3))));
        };
        let rest = args.slice_from(3);
        if !spec.arity_ok(rest.len()) {
            return o.error(&crate::cmd::arity_error(spec.name));
        }
        match u.check(spec, &rest) {
            Ok(()) => o.ok(),
            Err(acl::Denied::Command(command)) => o.bulk(
                format!("User {name} has no permissions to run the '{command}' command").as_bytes(),
            ),
            Err(acl::Denied::Key(k)) => o.bulk(
                format!(
                    "User {name} has no permissions to access the '{}' key",
                    String::from_utf8_lossy(&k)
                )
                .as_bytes(),
            ),
        }
    } else if eq(sub, "SAVE") && n == 2 {
        let path = core.config.borrow().aclfile.clone();
        if path.is_empty() {
            return o.error(NO_ACLFILE);
        }
        // Written whole to a temporary file, then renamed over the old one.
        let tmp = format!("{path}.tmp-{}", std::process::id());
        let text = node.acl.load().to_file_text();
        let saved = std::fs::write(&tmp, text).and_then(|()| std::fs::rename(&tmp, &path));
        match saved {
            Ok(()) => {
                tracing::info!("ACL users saved to {path}");
                o.ok()
            }
            Err(e) => {
                let _ = std::fs::remove_file(&tmp);
                o.error(&format!("ERR There was an error trying to save the ACLs. Please check the server logs for more information ({e})"))
            }
        }
    } else if eq(sub, "LOAD") && n == 2 {
        let (path, pass) = {
            let c = core.config.borrow();
            (c.aclfile.clone(), c.requirepass.clone())
        };
        if path.is_empty() {
            return o.error(NO_ACLFILE);
        }
        match load_file(&path, pass.as_deref()) {
            Ok(users) => {
                node.set_users(users);
                tracing::info!("ACL users loaded from {path}");
                o.ok()
            }
            Err(e) => o.error(&format!("ERR {e}")),
        }
    } else if eq(sub, "GENPASS") && n <= 3 {
        let bits = match n {
            2 => 256,
            _ => match int(args.get(2)) {
                Some(b) if b > 0 && b <= 4096 => b as usize,
                _ => return o.error("ERR ACL GENPASS argument must be the number of bits for the output password, a positive number up to 4096"),
            },
        };
        let mut bytes = vec![0u8; bits.div_ceil(8)];
        // SAFETY: getrandom writes at most `len` bytes into the buffer it is given.
        let got = unsafe { libc::getrandom(bytes.as_mut_ptr().cast(), bytes.len(), 0) };
        if got != bytes.len() as isize {
            return o.error("ERR no randomness available");
        }
        let mut hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        hex.truncate(bits.div_ceil(4));
        o.bulk(hex.as_bytes())
    } else if eq(sub, "HELP") && n == 2 {
        o.array(ACL_HELP.len());
        for l in ACL_HELP {
            o.simple(l);
        }
    } else {
        o.error_bytes(&unknown_subcommand_error("ACL", sub))
    }
}

/// The generation the users are at now.
pub fn generation(core: &Core) -> u64 {
    core.node.acl_generation.load(Ordering::Acquire)
}
