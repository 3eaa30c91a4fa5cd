//! Work that must look atomic across cores: multi-key commands whose keys live on several
//! cores, and MULTI/EXEC. Both lock the shards involved (in ascending core order, see
//! [`Core::acquire`]), do their work, and unlock; no other client's command runs on a
//! locked shard in between, so nobody observes half of it.

use super::conn::dispatch;
use super::core::Core;
use super::pipeline::Pipeline;
use super::session::{Session, Watched};
use crate::cmd::keys::parse_copy;
use crate::cmd::table::{CrossCore, Exec, NodeCmd};
use crate::cmd::{errors, Args, CommandSpec};
use crate::resp::Out;
use crate::slot::key_core;
use std::collections::BTreeMap;
use std::rc::Rc;
use tessera_shards::ops::{keys as key_ops, string as string_ops};

/// Keys (with their index in the command) grouped by owning core.
fn group_by_core(
    args: &Args,
    positions: impl Iterator<Item = usize>,
    cores: usize,
) -> BTreeMap<usize, Vec<usize>> {
    let mut groups: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
    for i in positions {
        groups
            .entry(key_core(args.get(i), cores))
            .or_default()
            .push(i);
    }
    groups
}

/// Runs a multi-key command whose keys live on more than one core.
pub async fn run_cross_core(
    core: &Rc<Core>,
    s: &mut Session,
    spec: &'static CommandSpec,
    kind: CrossCore,
    args: Args<'_>,
    out: &mut Vec<u8>,
) {
    let groups = group_by_core(&args, spec.key_positions(args.len()), core.cores);
    let locks = match s.tx {
        Some(_) => None,
        None => Some(core.acquire(groups.keys().copied().collect()).await),
    };
    let tx = s.tx.or(locks.as_ref().map(|l| l.tx));
    let mut o = Out::new(out, s.proto);
    let db = s.db;
    if spec.has_flag("denyoom")
        && core.config.borrow().maxmemory != 0
        && !make_room_on(core, tx, groups.keys().copied()).await
    {
        o.error(errors::OOM);
    } else {
        run_kind(core, spec, kind, tx, db, &args, &groups, &mut o).await;
    }
    if let Some(l) = locks {
        core.release(l).await;
    }
}

/// Makes room under `maxmemory` on each of `cores` (which the caller has locked); false if
/// one of them is full and can evict nothing.
async fn make_room_on(core: &Core, tx: Option<u64>, cores: impl Iterator<Item = usize>) -> bool {
    for c in cores {
        let room = core
            .invoke_on(c, tx, |cc| {
                let now = cc.now_ms();
                cc.shard.borrow_mut().make_room(now)
            })
            .await;
        if room == tessera_shards::shard::Room::Full {
            return false;
        }
    }
    true
}

#[allow(clippy::too_many_arguments)]
async fn run_kind(
    core: &Core,
    spec: &CommandSpec,
    kind: CrossCore,
    tx: Option<u64>,
    db: usize,
    args: &Args<'_>,
    groups: &BTreeMap<usize, Vec<usize>>,
    o: &mut Out<'_>,
) {
    match kind {
        CrossCore::Gather => gather(core, tx, db, args, groups, o).await,
        CrossCore::Sum => {
            let mut total = 0i64;
            let delete = spec.is_write();
            for (&c, idx) in groups {
                let keys: Vec<Vec<u8>> = idx.iter().map(|&i| args.get(i).to_vec()).collect();
                total += core
                    .invoke_on(c, tx, move |cc| {
                        let now = cc.now_ms();
                        let mut shard = cc.shard.borrow_mut();
                        let d = shard.db(db);
                        keys.iter()
                            .filter(|k| {
                                if delete {
                                    key_ops::del(d, k, now)
                                } else {
                                    key_ops::exists(d, k, now)
                                }
                            })
                            .count() as i64
                    })
                    .await;
            }
            o.int(total);
        }
        CrossCore::SetAll | CrossCore::SetAllIfNone => {
            if args.len() % 2 == 0 {
                o.error(&crate::cmd::arity_error(spec.name));
            } else {
                set_all(
                    core,
                    tx,
                    db,
                    args,
                    groups,
                    kind == CrossCore::SetAllIfNone,
                    o,
                )
                .await;
            }
        }
        CrossCore::Rename { only_if_new } => rename(core, tx, db, args, only_if_new, o).await,
        CrossCore::Copy => copy(core, tx, db, args, o).await,
    }
}

async fn gather(
    core: &Core,
    tx: Option<u64>,
    db: usize,
    args: &Args<'_>,
    groups: &BTreeMap<usize, Vec<usize>>,
    o: &mut Out<'_>,
) {
    let mut values: Vec<Option<Vec<u8>>> = vec![None; args.len()];
    for (&c, idx) in groups {
        let keys: Vec<Vec<u8>> = idx.iter().map(|&i| args.get(i).to_vec()).collect();
        let got = core
            .invoke_on(c, tx, move |cc| {
                let now = cc.now_ms();
                let mut shard = cc.shard.borrow_mut();
                let d = shard.db(db);
                keys.iter()
                    .map(|k| {
                        string_ops::get(d, k, now)
                            .ok()
                            .flatten()
                            .map(|v| v.to_vec())
                    })
                    .collect::<Vec<_>>()
            })
            .await;
        for (&i, v) in idx.iter().zip(got) {
            values[i] = v;
        }
    }
    o.array(args.len() - 1);
    for v in &values[1..] {
        match v {
            Some(v) => o.bulk(v),
            None => o.null(),
        }
    }
}

#[allow(clippy::too_many_arguments)]
async fn set_all(
    core: &Core,
    tx: Option<u64>,
    db: usize,
    args: &Args<'_>,
    groups: &BTreeMap<usize, Vec<usize>>,
    only_if_none: bool,
    o: &mut Out<'_>,
) {
    let pairs_of = |idx: &Vec<usize>| -> Vec<(Vec<u8>, Vec<u8>)> {
        idx.iter()
            .map(|&i| (args.get(i).to_vec(), args.get(i + 1).to_vec()))
            .collect()
    };
    if only_if_none {
        for (&c, idx) in groups {
            let keys: Vec<Vec<u8>> = idx.iter().map(|&i| args.get(i).to_vec()).collect();
            let any = core
                .invoke_on(c, tx, move |cc| {
                    let now = cc.now_ms();
                    let mut shard = cc.shard.borrow_mut();
                    let d = shard.db(db);
                    keys.iter().any(|k| d.exists(k, now))
                })
                .await;
            if any {
                return o.int(0);
            }
        }
    }
    for (&c, idx) in groups {
        let pairs = pairs_of(idx);
        core.invoke_on(c, tx, move |cc| {
            let now = cc.now_ms();
            let mut shard = cc.shard.borrow_mut();
            let d = shard.db(db);
            for (k, v) in &pairs {
                let _ = string_ops::set(d, k, v, Default::default(), now);
            }
        })
        .await;
    }
    if only_if_none {
        o.int(1)
    } else {
        o.ok()
    }
}

async fn rename(
    core: &Core,
    tx: Option<u64>,
    db: usize,
    args: &Args<'_>,
    only_if_new: bool,
    o: &mut Out<'_>,
) {
    let (src, dst) = (args.get(1).to_vec(), args.get(2).to_vec());
    let (sc, dc) = (key_core(&src, core.cores), key_core(&dst, core.cores));
    let src2 = src.clone();
    let present = core
        .invoke_on(sc, tx, move |cc| {
            let now = cc.now_ms();
            cc.shard.borrow_mut().db(db).exists(&src2, now)
        })
        .await;
    if !present {
        return o.error(errors::NO_SUCH_KEY);
    }
    if only_if_new {
        let dst2 = dst.clone();
        let taken = core
            .invoke_on(dc, tx, move |cc| {
                let now = cc.now_ms();
                cc.shard.borrow_mut().db(db).exists(&dst2, now)
            })
            .await;
        if taken {
            return o.int(0);
        }
    }
    let entry = core
        .invoke_on(sc, tx, move |cc| {
            let now = cc.now_ms();
            key_ops::take(cc.shard.borrow_mut().db(db), &src, now)
        })
        .await
        .expect("present under the lock");
    core.invoke_on(dc, tx, move |cc| {
        let now = cc.now_ms();
        key_ops::put(cc.shard.borrow_mut().db(db), &dst, entry, now)
    })
    .await;
    if only_if_new {
        o.int(1)
    } else {
        o.ok()
    }
}

async fn copy(core: &Core, tx: Option<u64>, db: usize, args: &Args<'_>, o: &mut Out<'_>) {
    let databases = core.config.borrow().databases;
    let opts = match parse_copy(args, databases) {
        Ok(opts) => opts,
        Err(e) => return o.error(e),
    };
    let dest_db = opts.dest_db.unwrap_or(db);
    let (src, dst) = (args.get(1).to_vec(), args.get(2).to_vec());
    let (sc, dc) = (key_core(&src, core.cores), key_core(&dst, core.cores));
    let Some(entry) = core
        .invoke_on(sc, tx, move |cc| {
            let now = cc.now_ms();
            key_ops::clone_entry(cc.shard.borrow_mut().db(db), &src, now)
        })
        .await
    else {
        return o.int(0);
    };
    let replace = opts.replace;
    let done = core
        .invoke_on(dc, tx, move |cc| {
            let now = cc.now_ms();
            let mut shard = cc.shard.borrow_mut();
            let d = shard.db(dest_db);
            if !replace && d.exists(&dst, now) {
                return false;
            }
            key_ops::put(d, &dst, entry, now);
            true
        })
        .await;
    o.int(done as i64);
}

/// Node commands that read or change every shard: EXEC must lock all cores for them.
fn touches_all_shards(cmd: NodeCmd) -> bool {
    matches!(
        cmd,
        NodeCmd::Dbsize
            | NodeCmd::Flushdb
            | NodeCmd::Flushall
            | NodeCmd::Keys
            | NodeCmd::Scan
            | NodeCmd::Randomkey
    )
}

pub fn multi(s: &mut Session, o: &mut Out) {
    if s.in_multi() {
        return o.error("ERR MULTI calls can not be nested");
    }
    s.multi = Some(Vec::new());
    s.multi_failed = false;
    s.record.borrow_mut().multi = Some(0);
    o.ok();
}

pub async fn discard(core: &Rc<Core>, s: &mut Session, o: &mut Out<'_>) {
    if !s.in_multi() {
        return o.error("ERR DISCARD without MULTI");
    }
    discard_transaction(core, s).await;
    o.ok();
}

/// Drops the queued transaction and every watch, as DISCARD does.
pub async fn discard_transaction(core: &Rc<Core>, s: &mut Session) {
    end_multi(s);
    unwatch_all(core, s).await;
}

fn end_multi(s: &mut Session) {
    s.multi = None;
    s.multi_failed = false;
    {
        let mut r = s.record.borrow_mut();
        r.multi = None;
        r.multi_bytes = 0;
    }
}

/// EXEC: lock every shard the queued commands or the watched keys touch, check the
/// watches, run the queue in order, unlock.
pub async fn exec(core: &Rc<Core>, s: &mut Session, out: &mut Vec<u8>) {
    let Some(queue) = s.multi.take() else {
        return Out::new(out, s.proto).error("ERR EXEC without MULTI");
    };
    let failed = s.multi_failed;
    end_multi(s);
    if failed {
        unwatch_all(core, s).await;
        return Out::new(out, s.proto).error(errors::EXECABORT);
    }
    let mut cores: Vec<usize> = s.watched.iter().map(|w| w.core).collect();
    for q in &queue {
        let args = Args::new(&q.data, &q.ranges);
        match q.spec.exec {
            Exec::Shard(..) => {
                let keys = q.spec.key_positions(args.len());
                let before = cores.len();
                cores.extend(keys.map(|i| key_core(args.get(i), core.cores)));
                if cores.len() == before {
                    cores.push(core.id);
                }
            }
            Exec::Node(n) if touches_all_shards(n) => cores.extend(0..core.cores),
            Exec::Node(_) => {}
        }
    }
    let locks = core.acquire(cores).await;
    s.tx = Some(locks.tx);
    if watches_broken(core, s).await {
        s.tx = None;
        core.release(locks).await;
        unwatch_all(core, s).await;
        return Out::new(out, s.proto).null_array();
    }
    Out::new(out, s.proto).array(queue.len());
    let mut pipe = Pipeline::new(core.cores);
    for q in &queue {
        let args = Args::new(&q.data, &q.ranges);
        Box::pin(dispatch(core, s, &mut pipe, q.spec, args, out)).await;
    }
    pipe.flush(core, s, out).await;
    s.tx = None;
    core.release(locks).await;
    unwatch_all(core, s).await;
}

async fn watches_broken(core: &Core, s: &Session) -> bool {
    let mut by_core: BTreeMap<usize, Vec<(usize, Vec<u8>)>> = BTreeMap::new();
    for w in &s.watched {
        by_core
            .entry(w.core)
            .or_default()
            .push((w.db, w.key.clone()));
    }
    let client = s.id;
    for (c, keys) in by_core {
        let broken = core
            .invoke_on(c, s.tx, move |cc| {
                let now = cc.now_ms();
                let mut shard = cc.shard.borrow_mut();
                let mut dbs: BTreeMap<usize, Vec<Vec<u8>>> = BTreeMap::new();
                for (db, k) in keys {
                    dbs.entry(db).or_default().push(k);
                }
                dbs.iter()
                    .any(|(&db, ks)| shard.db(db).watch_broken(ks, client, now))
            })
            .await;
        if broken {
            return true;
        }
    }
    false
}

pub async fn watch(core: &Rc<Core>, s: &mut Session, args: Args<'_>, o: &mut Out<'_>) {
    if s.in_multi() {
        return o.error("ERR WATCH inside MULTI is not allowed");
    }
    let groups = group_by_core(&args, 1..args.len(), core.cores);
    let (db, client) = (s.db, s.id);
    for (c, idx) in groups {
        let keys: Vec<Vec<u8>> = idx.iter().map(|&i| args.get(i).to_vec()).collect();
        for k in &keys {
            let w = Watched {
                core: c,
                db,
                key: k.clone(),
            };
            if !s.watched.contains(&w) {
                s.watched.push(w);
            }
        }
        core.invoke_on(c, None, move |cc| {
            let now = cc.now_ms();
            let mut shard = cc.shard.borrow_mut();
            for k in &keys {
                shard.db(db).watch(k, client, now);
            }
        })
        .await;
    }
    s.record.borrow_mut().watching = s.watched.len();
    o.ok();
}

/// Drops every watch of the session, on every core that holds one.
pub async fn unwatch_all(core: &Rc<Core>, s: &mut Session) {
    let mut by_core: BTreeMap<usize, BTreeMap<usize, Vec<Vec<u8>>>> = BTreeMap::new();
    for w in s.watched.drain(..) {
        by_core
            .entry(w.core)
            .or_default()
            .entry(w.db)
            .or_default()
            .push(w.key);
    }
    let client = s.id;
    for (c, dbs) in by_core {
        core.invoke_on(c, s.tx, move |cc| {
            let mut shard = cc.shard.borrow_mut();
            for (db, keys) in &dbs {
                shard.db(*db).unwatch(keys, client);
            }
        })
        .await;
    }
    s.record.borrow_mut().watching = 0;
}
