//! The append-only file: each core appends its ring's records to its own log on its own core
//! with glommio's file I/O, and fsyncs it by the `appendfsync` policy.
//!
//! On disk, in `dir/appendonlydir/`, each core `i` has a manifest `core-i.manifest` naming
//! its base image (a snapshot of that core's keys, optional) and its logs, oldest first.
//! Loading a core: its base, then its logs in order. A rewrite (BGREWRITEAOF, or a log grown
//! past `auto-aof-rewrite-percentage` / `auto-aof-rewrite-min-size`) captures the shard at
//! sequence number S (the point-in-time capture BGSAVE uses), starts a new log for records
//! after S and lists it in the manifest at once, writes the capture as the new base, then
//! replaces the manifest with the new base and the new log and deletes the old files. A
//! crash at any point leaves a manifest whose files load to the data as it was.
//!
//! `appendfsync always`: a write's reply waits until its record is on disk. Every reply of a
//! read batch that wrote waits for one fsync that covers the whole batch (and whatever
//! other connections wrote meanwhile): group commit. A cross-core write's reply waits on the
//! core that owns the key. `everysec` and `no`: replies wait only until their records are
//! written to the file (one write for many, as above), which is fsynced once a second, or
//! when the kernel decides.

use super::core::Core;
use super::persist::write_all_at;
use crate::config::{AppendFsync, Config};
use crate::limits;
use crate::slot::key_core;
use futures_channel::oneshot;
use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::io::{BufReader, Write};
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::task::{Poll, Waker};
use std::time::Duration;
use tessera_shards::aof::{self as format, AofError, AofReader, End, Next};
use tessera_shards::shard::CaptureTicket;
use tessera_shards::snapshot::{self, Frame, SnapshotReader};
use tessera_shards::wal::{Op, ReaderId, WalError};

/// The directory of the append-only files, inside `dir` (Redis 7's `appenddirname`).
pub const AOF_DIR: &str = "appendonlydir";

const MANIFEST_HEAD: &str = "tessera-aof 1";

/// One core's manifest: its base image and logs, and the next file generation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Manifest {
    pub cores: usize,
    pub core: usize,
    pub next_gen: u64,
    pub base: Option<String>,
    pub logs: Vec<String>,
}

impl Manifest {
    fn new(core: usize, cores: usize) -> Manifest {
        Manifest {
            cores,
            core,
            next_gen: 1,
            base: None,
            logs: Vec::new(),
        }
    }

    fn text(&self) -> String {
        let mut t = format!(
            "{MANIFEST_HEAD}\ncores {}\ncore {}\nnext {}\n",
            self.cores, self.core, self.next_gen
        );
        if let Some(b) = &self.base {
            t += &format!("base {b}\n");
        }
        for l in &self.logs {
            t += &format!("log {l}\n");
        }
        t
    }

    fn parse(text: &str) -> Result<Manifest, String> {
        let mut lines = text.lines();
        if lines.next() != Some(MANIFEST_HEAD) {
            return Err(format!("the first line is not \"{MANIFEST_HEAD}\""));
        }
        let mut m = Manifest::new(usize::MAX, 0);
        for line in lines {
            let (key, value) = line
                .split_once(' ')
                .ok_or_else(|| format!("a line without a value: {line:?}"))?;
            let number = || {
                value
                    .parse::<u64>()
                    .map_err(|_| format!("not a number: {line:?}"))
            };
            let name = || -> Result<String, String> {
                if value.is_empty() || value.contains('/') {
                    return Err(format!("not a file name: {line:?}"));
                }
                Ok(value.to_string())
            };
            match key {
                "cores" => m.cores = number()? as usize,
                "core" => m.core = number()? as usize,
                "next" => m.next_gen = number()?,
                "base" => m.base = Some(name()?),
                "log" => m.logs.push(name()?),
                _ => return Err(format!("an unknown line: {line:?}")),
            }
        }
        if m.cores == 0 || m.core >= m.cores {
            return Err("no valid core number".into());
        }
        Ok(m)
    }
}

pub fn aof_dir(config: &Config) -> PathBuf {
    config.dir.join(AOF_DIR)
}

fn manifest_path(dir: &Path, core: usize) -> PathBuf {
    dir.join(format!("core-{core}.manifest"))
}

/// Writes `m` in place of the core's manifest: a temporary file, synced, renamed, and the
/// directory synced, so a crash leaves the old manifest or the new one.
fn write_manifest(dir: &Path, m: &Manifest) -> std::io::Result<()> {
    let path = manifest_path(dir, m.core);
    let tmp = path.with_extension("manifest.tmp");
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(m.text().as_bytes())?;
    f.sync_all()?;
    drop(f);
    std::fs::rename(&tmp, &path)?;
    std::fs::File::open(dir)?.sync_all()
}

fn read_manifest(dir: &Path, core: usize) -> Result<Option<Manifest>, String> {
    let path = manifest_path(dir, core);
    match std::fs::read_to_string(&path) {
        Ok(t) => Manifest::parse(&t)
            .map(Some)
            .map_err(|e| format!("{}: {e}", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(format!("cannot read {}: {e}", path.display())),
    }
}

/// Whether any core's manifest exists (then the node loads from the append-only files, as
/// Redis prefers the AOF to the RDB file).
pub fn manifests_exist(config: &Config) -> bool {
    let dir = aof_dir(config);
    std::fs::read_dir(&dir).is_ok_and(|entries| {
        entries.flatten().any(|e| {
            e.file_name()
                .to_str()
                .is_some_and(|n| n.starts_with("core-") && n.ends_with(".manifest"))
        })
    })
}

/// What loading one core's files found.
#[derive(Debug, Default)]
pub struct Loaded {
    pub keys_from_base: u64,
    pub records: u64,
    /// A torn last record was dropped (the file was cut back to its good length).
    pub torn: Option<String>,
    /// With `aof-load-truncated yes`: damage was found and the rest dropped.
    pub truncated: Option<String>,
    pub manifest: Option<Manifest>,
}

/// Loads this core's keys from its base and logs. A torn last record is dropped and the
/// file cut back; damage earlier is an error unless `aof-load-truncated yes`, which loads
/// up to the damage and drops the rest (of that file and any later log).
pub fn load(core: &Core, config: &Config) -> Result<Loaded, String> {
    let dir = aof_dir(config);
    let Some(m) = read_manifest(&dir, core.id)? else {
        return Err(format!(
            "{}: the append-only files of core {} are missing (other cores have theirs)",
            dir.display(),
            core.id
        ));
    };
    if m.cores != core.cores || m.core != core.id {
        return Err(format!(
            "{}: written by a node of {} cores; start this one with --cores {} (a snapshot, \
             SAVE or BGSAVE, loads into any number of cores)",
            manifest_path(&dir, core.id).display(),
            m.cores,
            m.cores
        ));
    }
    let mut loaded = Loaded::default();
    if let Some(base) = &m.base {
        loaded.keys_from_base = load_base(core, &dir.join(base))?;
    }
    let allow_truncated = config.aof_load_truncated;
    for (i, name) in m.logs.iter().enumerate() {
        let path = dir.join(name);
        let (records, end) = replay_log(core, &path, allow_truncated)?;
        loaded.records += records;
        if let Some((at, why, damaged)) = end {
            let text = format!("{} at byte {at}: {why}", path.display());
            cut_file(&path, at)?;
            if damaged {
                tracing::warn!("!!! the append-only file {text}: loaded up to there and dropped the rest, as aof-load-truncated allows");
                for later in &m.logs[i + 1..] {
                    tracing::warn!("dropping the later log {later}");
                }
                loaded.truncated = Some(text);
                let mut kept = m.clone();
                kept.logs.truncate(i + 1);
                write_manifest(&dir, &kept).map_err(|e| e.to_string())?;
                loaded.manifest = Some(kept);
                return Ok(loaded);
            }
            if i + 1 < m.logs.len() {
                return Err(format!(
                    "{text}, but later logs follow it: the file is damaged, not torn"
                ));
            }
            tracing::warn!("the append-only file {text}: a torn last record, dropped");
            loaded.torn = Some(text);
        }
    }
    loaded.manifest = Some(m);
    Ok(loaded)
}

fn load_base(core: &Core, path: &Path) -> Result<u64, String> {
    let bad = |e: String| {
        format!(
            "the append-only base {} cannot be loaded: {e}",
            path.display()
        )
    };
    let file = std::fs::File::open(path).map_err(|e| bad(e.to_string()))?;
    let (mut reader, _) =
        SnapshotReader::open(BufReader::new(file)).map_err(|e| bad(e.to_string()))?;
    let mut shard = core.shard.borrow_mut();
    let databases = shard.databases();
    let mut keys = 0;
    while let Some(frame) = reader.next_entry().map_err(|e| bad(e.to_string()))? {
        let Frame::Entry {
            db,
            key,
            value,
            expire_at_ms,
        } = frame
        else {
            continue;
        };
        if db as usize >= databases {
            return Err(bad(format!(
                "a key of database {db}, but this node has {databases}"
            )));
        }
        shard.apply(&Op::Set {
            db,
            key,
            value,
            expire_at_ms,
        });
        keys += 1;
    }
    Ok(keys)
}

/// Replays one log. Returns the records applied and, if the file did not end cleanly, where
/// it stops, why, and whether that is damage (allowed by `aof-load-truncated`) rather than a
/// torn end.
#[allow(clippy::type_complexity)]
fn replay_log(
    core: &Core,
    path: &Path,
    allow_truncated: bool,
) -> Result<(u64, Option<(u64, String, bool)>), String> {
    let bad = |e: String| {
        format!(
            "the append-only file {} cannot be loaded: {e}",
            path.display()
        )
    };
    let file = std::fs::File::open(path).map_err(|e| bad(e.to_string()))?;
    let len = file.metadata().map_err(|e| bad(e.to_string()))?.len();
    let (mut reader, early) =
        AofReader::open(BufReader::new(file), len).map_err(|e| bad(e.to_string()))?;
    if let Some(End::Torn { at, why }) = early {
        return Ok((0, Some((at, why, false))));
    }
    let mut shard = core.shard.borrow_mut();
    let databases = shard.databases() as u32;
    let mut records = 0;
    loop {
        match reader.next_record() {
            Ok(Next::Record(_, op)) => {
                let db = match &op {
                    Op::Set { db, .. } | Op::Del { db, .. } | Op::Expire { db, .. } => *db,
                    Op::FlushDb { db } => *db,
                };
                if db >= databases {
                    return Err(bad(format!(
                        "a record for database {db}, but this node has {databases}"
                    )));
                }
                if let Op::Set { key, .. } | Op::Del { key, .. } | Op::Expire { key, .. } = &op {
                    debug_assert_eq!(key_core(key, core.cores), core.id);
                }
                shard.apply(&op);
                records += 1;
            }
            Ok(Next::End(End::Clean)) => return Ok((records, None)),
            Ok(Next::End(End::Torn { at, why })) => return Ok((records, Some((at, why, false)))),
            Err(AofError::Damaged { at, why }) if allow_truncated => {
                return Ok((records, Some((at, why, true))))
            }
            Err(AofError::Damaged { at, why }) => {
                return Err(bad(format!(
                    "damaged at byte {at}: {why} (aof-load-truncated yes loads up to the damage \
                     and drops the rest)"
                )))
            }
            Err(e) => return Err(bad(e.to_string())),
        }
    }
}

/// Cuts a log back to its good length.
fn cut_file(path: &Path, len: u64) -> Result<(), String> {
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .map_err(|e| format!("cannot open {} to cut it: {e}", path.display()))?;
    let len = len.max(format::MAGIC.len() as u64);
    if f.metadata().map(|m| m.len()).unwrap_or(0) < len {
        // Cut inside the magic: write a fresh one.
        std::fs::write(path, format::MAGIC).map_err(|e| e.to_string())?;
        return Ok(());
    }
    f.set_len(len)
        .and_then(|_| f.sync_all())
        .map_err(|e| format!("cannot cut {}: {e}", path.display()))
}

/// A wake-up for one task on this core: `notify` before or while it waits.
#[derive(Default)]
struct Notify {
    set: Cell<bool>,
    waker: RefCell<Option<Waker>>,
}

impl Notify {
    fn notify(&self) {
        self.set.set(true);
        if let Some(w) = self.waker.borrow_mut().take() {
            w.wake();
        }
    }

    async fn wait(&self) {
        std::future::poll_fn(|cx| {
            if self.set.replace(false) {
                Poll::Ready(())
            } else {
                *self.waker.borrow_mut() = Some(cx.waker().clone());
                Poll::Pending
            }
        })
        .await
    }
}

type Deferred = Box<dyn FnOnce(&Core)>;

/// The current log as a plain file handle: records are copied into the page cache with a
/// pwrite on this core, as Redis writes its AOF before answering (a few microseconds; an
/// io_uring write's round trip through the reactor doubled the latency of every acked write
/// at pipeline 1). fsync, which can take milliseconds, stays asynchronous.
struct Plain {
    file: std::fs::File,
    at: u64,
}

/// What writing the ring's pending records did.
enum Pending {
    /// Everything the ring holds is in the file.
    Done,
    /// A switch of logs is pending, or the log is not open yet: the writer task will do it.
    Busy,
    FellBehind {
        wanted: u64,
        oldest: u64,
    },
    Failed(String),
}

/// A rewrite's switch to a new log: the records up to the capture's sequence number,
/// pulled from the ring when it started, still go to the old log.
struct Switch {
    to_old: Vec<u8>,
    gen: u64,
    done: oneshot::Sender<Result<(), String>>,
}

/// One core's append-only log while `appendonly` is on.
pub struct Aof {
    dir: PathBuf,
    reader: ReaderId,
    manifest: RefCell<Manifest>,
    /// Sequence numbers written to the file, and fsynced.
    written: Cell<u64>,
    durable: Cell<u64>,
    wake: Notify,
    /// Replies waiting for their records to be on disk (`always`), oldest first.
    waiting: RefCell<VecDeque<(u64, Deferred)>>,
    switch: RefCell<Option<Switch>>,
    /// The log's size, and the base's (for the automatic rewrite and INFO).
    log_bytes: Cell<u64>,
    base_bytes: Cell<u64>,
    write_ok: Cell<bool>,
    last_fsync_ms: Cell<u64>,
    pub rewriting: Cell<bool>,
    /// The log's plain handle and where the next record goes; `None` before the writer
    /// opened it.
    plain: RefCell<Option<Plain>>,
    scratch: RefCell<Vec<u8>>,
    /// A rewrite's switch of logs is pending: records wait for the writer.
    switching: Cell<bool>,
    /// The writer fell behind the ring: another rewrite is needed after the running one.
    rewrite_again: Cell<bool>,
    stop: Cell<bool>,
    closed: Cell<bool>,
}

impl Aof {
    pub fn durable(&self) -> u64 {
        self.durable.get()
    }

    pub fn write_ok(&self) -> bool {
        self.write_ok.get()
    }

    pub fn sizes(&self) -> (u64, u64) {
        (
            self.base_bytes.get() + self.log_bytes.get(),
            self.base_bytes.get(),
        )
    }

    pub fn kick(&self) {
        self.wake.notify();
    }

    /// Writes every record the ring holds for this log into the file, now.
    fn write_pending(&self, core: &Core) -> Pending {
        if self.switching.get() {
            return Pending::Busy;
        }
        let mut plain = self.plain.borrow_mut();
        let Some(p) = plain.as_mut() else {
            return Pending::Busy;
        };
        let mut buf = self.scratch.borrow_mut();
        loop {
            buf.clear();
            let read = core.shard.borrow().wal_mut().read_framed(
                self.reader,
                limits::AOF_WRITE_CHUNK_BYTES,
                &mut buf,
            );
            match read {
                Ok(None) => return Pending::Done,
                Ok(Some(last)) => {
                    if let Err(e) = std::os::unix::fs::FileExt::write_all_at(&p.file, &buf, p.at) {
                        // The ring has moved past these records: only a rewrite puts them
                        // back into the files.
                        self.rewrite_again.set(true);
                        return Pending::Failed(e.to_string());
                    }
                    p.at += buf.len() as u64;
                    self.log_bytes.set(self.log_bytes.get() + buf.len() as u64);
                    self.written.set(last);
                    self.write_ok.set(true);
                }
                Err(WalError::FellBehind { wanted, oldest }) => {
                    return Pending::FellBehind { wanted, oldest }
                }
                Err(e) => return Pending::Failed(e.to_string()),
            }
        }
    }

    /// Runs `then` once record `seq` is fsynced (`always`) or written (other policies).
    pub fn after_durable(&self, seq: u64, then: Deferred) {
        self.waiting.borrow_mut().push_back((seq, then));
        self.wake.notify();
    }
}

/// After a batch of commands: the sequence number its replies must wait for (this core's
/// newest record), if that record is not yet fsynced (`always`) or not yet written to the
/// file (`everysec`, `no`: as Redis writes its AOF buffer before it answers, so a killed
/// process loses no acknowledged write).
pub fn must_wait(core: &Core) -> Option<(Rc<Aof>, u64)> {
    let aof = core.aof.borrow().clone()?;
    let head = core.shard.borrow().wal().head();
    let always = core.config.borrow().appendfsync == AppendFsync::Always;
    if head > aof.written.get() {
        // Whoever comes first writes everything pending, for every connection (the
        // group write); the writer task only when that cannot be done here.
        match aof.write_pending(core) {
            Pending::Done if !always => {
                release(core, &aof, aof.written.get());
                return None;
            }
            Pending::Done => {}
            _ => {
                aof.kick();
                return Some((aof, head));
            }
        }
    }
    let done = if always {
        aof.durable.get()
    } else {
        aof.written.get()
    };
    (head > done).then_some((aof, head))
}

/// Waits until this core's records up to `seq` are on disk.
pub async fn wait_durable(aof: &Aof, seq: u64) {
    let (tx, rx) = oneshot::channel();
    aof.after_durable(
        seq,
        Box::new(move |_| {
            let _ = tx.send(());
        }),
    );
    let _ = rx.await;
}

/// Turns the log on for this core: opens a new log after the loaded files (or, with none,
/// a first log and a rewrite to give it a base), registers the ring reader and starts the
/// writer.
pub async fn start(core: &Rc<Core>, manifest: Option<Manifest>) -> Result<(), String> {
    let dir = aof_dir(&core.config.borrow());
    std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let fresh = manifest.is_none();
    let mut m = match manifest {
        Some(m) => m,
        None => {
            // Files of an earlier run may be here (appendonly was turned off, or the node
            // started without it): their manifest is stale, and new files must not reuse
            // their names.
            let _ = std::fs::remove_file(manifest_path(&dir, core.id));
            let mut m = Manifest::new(core.id, core.cores);
            m.next_gen = next_free_gen(&dir, core.id);
            m
        }
    };
    let gen = m.next_gen;
    m.next_gen += 1;
    let name = log_name(core.id, gen);
    let file = create_log(&dir.join(&name)).await?;
    let base_bytes = m
        .base
        .as_ref()
        .and_then(|b| std::fs::metadata(dir.join(b)).ok())
        .map_or(0, |md| md.len());
    let old_logs: u64 = m
        .logs
        .iter()
        .filter_map(|l| std::fs::metadata(dir.join(l)).ok())
        .map(|md| md.len())
        .sum();
    m.logs.push(name);
    if !fresh {
        // The new log joins the loaded files at once. A fresh start (no files yet) writes
        // its manifest only when the first rewrite has a base, so a crash before that
        // loads the snapshot instead of an empty log.
        write_manifest(&dir, &m).map_err(|e| format!("cannot write the manifest: {e}"))?;
    }
    let reader = core.shard.borrow().wal_mut().register_reader();
    let head = core.shard.borrow().wal().head();
    let aof = Rc::new(Aof {
        dir,
        reader,
        manifest: RefCell::new(m),
        written: Cell::new(head),
        durable: Cell::new(head),
        wake: Notify::default(),
        waiting: RefCell::new(VecDeque::new()),
        switch: RefCell::new(None),
        log_bytes: Cell::new(old_logs + format::MAGIC.len() as u64),
        base_bytes: Cell::new(base_bytes),
        write_ok: Cell::new(true),
        last_fsync_ms: Cell::new(core.now_ms()),
        rewriting: Cell::new(false),
        plain: RefCell::new(None),
        scratch: RefCell::new(Vec::new()),
        switching: Cell::new(false),
        rewrite_again: Cell::new(false),
        stop: Cell::new(false),
        closed: Cell::new(false),
    });
    *core.aof.borrow_mut() = Some(aof.clone());
    glommio::spawn_local(run(core.clone(), aof, file)).detach();
    if fresh {
        rewrite(core.clone());
    }
    Ok(())
}

/// Turns the log off for this core (CONFIG SET appendonly no): the writer finishes what it
/// has, and the manifest is removed so a restart does not load a log that stopped.
pub fn stop(core: &Core) {
    let Some(aof) = core.aof.borrow_mut().take() else {
        return;
    };
    aof.stop.set(true);
    aof.wake.notify();
    let _ = std::fs::remove_file(manifest_path(&aof.dir, core.id));
}

/// One more than the highest file generation of `core` in `dir`.
fn next_free_gen(dir: &Path, core: usize) -> u64 {
    let prefix = format!("core-{core}.");
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            let rest = name.strip_prefix(&prefix)?;
            rest.split('.').next()?.parse::<u64>().ok()
        })
        .max()
        .map_or(1, |g| g + 1)
}

fn log_name(core: usize, gen: u64) -> String {
    format!("core-{core}.{gen}.aof")
}

fn base_name(core: usize, gen: u64) -> String {
    format!("core-{core}.{gen}.base.tsnap")
}

async fn create_log(path: &Path) -> Result<glommio::io::BufferedFile, String> {
    let err = |e: glommio::GlommioError<()>| format!("cannot create {}: {e}", path.display());
    let file = glommio::io::BufferedFile::create(path).await.map_err(err)?;
    write_all_at(&file, format::MAGIC.to_vec(), 0)
        .await
        .map_err(err)?;
    file.fdatasync().await.map_err(err)?;
    Ok(file)
}

/// The writer: moves records from the ring to the file, fsyncs by the policy, releases the
/// replies waiting for them, and switches logs for a rewrite.
async fn run(core: Rc<Core>, aof: Rc<Aof>, mut file: glommio::io::BufferedFile) {
    let at = file.file_size().await.unwrap_or(format::MAGIC.len() as u64);
    match plain_handle(&file) {
        Ok(f) => *aof.plain.borrow_mut() = Some(Plain { file: f, at }),
        Err(e) => {
            tracing::error!("the append-only file cannot be opened for writing: {e}");
            aof.write_ok.set(false);
            return close(&core, &aof, file).await;
        }
    }
    loop {
        let policy = core.config.borrow().appendfsync;
        let idle = match policy {
            AppendFsync::Everysec => Duration::from_millis(limits::AOF_EVERYSEC_MS / 4),
            _ => Duration::from_millis(limits::AOF_IDLE_WAKE_MS),
        };
        futures_lite::future::or(aof.wake.wait(), glommio::timer::sleep(idle)).await;
        if policy != AppendFsync::Always {
            // Let the core's connections add more before this pass writes.
            futures_lite::future::yield_now().await;
        }
        // Stopping: one last pass writes what the ring holds, then the file is synced.
        let stopping = aof.stop.get() || core.node.shutting_down();
        // A rewrite's switch: finish the old log with the records before the capture.
        let switch = aof.switch.borrow_mut().take();
        if let Some(sw) = switch {
            let at = aof.plain.borrow().as_ref().map_or(0, |p| p.at);
            let r = finish_and_switch(&aof, &file, at, sw.to_old, sw.gen).await;
            match r {
                Ok(new) => match plain_handle(&new) {
                    Ok(p) => {
                        let _ = file.close().await;
                        file = new;
                        *aof.plain.borrow_mut() = Some(Plain {
                            file: p,
                            at: format::MAGIC.len() as u64,
                        });
                        let _ = sw.done.send(Ok(()));
                    }
                    Err(e) => {
                        aof.write_ok.set(false);
                        let _ = new.close().await;
                        let _ = sw.done.send(Err(format!("opening the new log: {e}")));
                    }
                },
                Err(e) => {
                    aof.write_ok.set(false);
                    tracing::warn!("the append-only file could not switch logs: {e}");
                    let _ = sw.done.send(Err(e));
                }
            }
            aof.switching.set(false);
        }
        match aof.write_pending(&core) {
            Pending::Done | Pending::Busy => {}
            Pending::FellBehind { wanted, oldest } => {
                // The records it missed are in no log: a rewrite (which moves the cursor on)
                // makes a base that covers them.
                if !aof.rewriting.get() {
                    tracing::warn!(
                        "the append-only writer fell behind the ring (needs {wanted}, oldest {oldest}): rewriting the log"
                    );
                }
                aof.write_ok.set(false);
                aof.rewrite_again.set(true);
                maybe_auto_rewrite(&core, &aof);
                if stopping {
                    return close(&core, &aof, file).await;
                }
                continue;
            }
            Pending::Failed(e) => {
                write_failed(&core, &aof, policy, &e);
                if stopping {
                    return close(&core, &aof, file).await;
                }
                continue;
            }
        }
        let now = core.now_ms();
        let due = match policy {
            AppendFsync::Always => aof.written.get() > aof.durable.get(),
            AppendFsync::Everysec => {
                aof.written.get() > aof.durable.get()
                    && now.saturating_sub(aof.last_fsync_ms.get()) >= limits::AOF_EVERYSEC_MS
            }
            AppendFsync::No => false,
        };
        if due {
            let upto = aof.written.get();
            let started = std::time::Instant::now();
            let synced = file.fdatasync().await;
            super::metrics::latency(
                if policy == AppendFsync::Always {
                    "aof-fsync-always"
                } else {
                    "aof-fsync-everysec"
                },
                started.elapsed(),
            );
            match synced {
                Ok(()) => {
                    aof.durable.set(upto);
                    aof.last_fsync_ms.set(now);
                }
                Err(e) => {
                    write_failed(&core, &aof, policy, &e.to_string());
                    continue;
                }
            }
        }
        // Replies wait for their records to be fsynced under `always`, written under the
        // other policies.
        let released = match policy {
            AppendFsync::Always => aof.durable.get(),
            _ => aof.written.get(),
        };
        release(&core, &aof, released);
        if stopping && aof.written.get() >= core.shard.borrow().wal().head() {
            return close(&core, &aof, file).await;
        }
        maybe_auto_rewrite(&core, &aof);
    }
}

/// The writer's end: the file synced and closed, the reader gone, every waiting reply
/// released.
async fn close(core: &Core, aof: &Aof, file: glommio::io::BufferedFile) {
    aof.plain.borrow_mut().take();
    if file.fdatasync().await.is_ok() {
        aof.durable.set(aof.written.get());
    }
    let _ = file.close().await;
    core.shard.borrow().wal_mut().drop_reader(aof.reader);
    release(core, aof, u64::MAX);
    aof.closed.set(true);
}

/// At shutdown: lets the writer put what the ring holds on disk and sync it (bounded by
/// AOF_SHUTDOWN_FLUSH_MS).
pub async fn flush_at_exit(core: &Core) {
    let Some(aof) = core.aof.borrow().clone() else {
        return;
    };
    aof.stop.set(true);
    aof.wake.notify();
    let deadline = std::time::Instant::now() + Duration::from_millis(limits::AOF_SHUTDOWN_FLUSH_MS);
    while !aof.closed.get() && std::time::Instant::now() < deadline {
        glommio::timer::sleep(Duration::from_millis(1)).await;
    }
}

/// A plain handle on the same file, for synchronous writes into the page cache.
fn plain_handle(file: &glommio::io::BufferedFile) -> std::io::Result<std::fs::File> {
    let path = file
        .path()
        .map(|p| p.to_path_buf())
        .ok_or_else(|| std::io::Error::other("the log has no path"))?;
    std::fs::OpenOptions::new().write(true).open(path)
}

/// Releases the replies waiting for records up to `upto`.
fn release(core: &Core, aof: &Aof, upto: u64) {
    loop {
        let next = {
            let mut w = aof.waiting.borrow_mut();
            match w.front() {
                Some((seq, _)) if *seq <= upto => w.pop_front(),
                _ => None,
            }
        };
        match next {
            Some((_, then)) => then(core),
            None => return,
        }
    }
}

/// A failed write or fsync: as Redis, with `always` the node cannot keep its promise and
/// exits; otherwise the status turns `err` and the next pass tries again.
fn write_failed(core: &Core, aof: &Aof, policy: AppendFsync, e: &str) {
    aof.write_ok.set(false);
    if policy == AppendFsync::Always {
        tracing::error!(
            "Can't recover from AOF write error when the AOF fsync policy is 'always': {e}. Exiting..."
        );
        std::process::exit(1);
    }
    tracing::warn!("Error writing to the AOF file: {e}");
    let _ = core;
    aof.wake.notify();
}

async fn finish_and_switch(
    aof: &Aof,
    old: &glommio::io::BufferedFile,
    at: u64,
    to_old: Vec<u8>,
    gen: u64,
) -> Result<glommio::io::BufferedFile, String> {
    let n = to_old.len() as u64;
    if n > 0 {
        write_all_at(old, to_old, at)
            .await
            .map_err(|e| format!("writing the old log: {e}"))?;
    }
    old.fdatasync()
        .await
        .map_err(|e| format!("syncing the old log: {e}"))?;
    let name = {
        let m = aof.manifest.borrow();
        log_name(m.core, gen)
    };
    let new = create_log(&aof.dir.join(&name)).await?;
    let mut m = aof.manifest.borrow().clone();
    m.logs.push(name);
    // A first rewrite (no base yet and no manifest on disk) lists nothing until its base
    // is written; a log turned off meanwhile (CONFIG SET appendonly no) keeps no manifest.
    if !aof.stop.get() && (m.base.is_some() || manifest_path(&aof.dir, m.core).exists()) {
        write_manifest(&aof.dir, &m).map_err(|e| format!("writing the manifest: {e}"))?;
    }
    *aof.manifest.borrow_mut() = m;
    aof.log_bytes.set(aof.log_bytes.get() + n);
    Ok(new)
}

/// Starts a rewrite when the log has grown past the configured share of the base, or when
/// the writer fell behind the ring.
fn maybe_auto_rewrite(core: &Rc<Core>, aof: &Aof) {
    if aof.rewriting.get() || aof.stop.get() {
        return;
    }
    if aof.rewrite_again.replace(false) {
        rewrite(core.clone());
        return;
    }
    let (pct, min) = {
        let c = core.config.borrow();
        (c.auto_aof_rewrite_percentage, c.auto_aof_rewrite_min_size)
    };
    let log = aof.log_bytes.get();
    let base = aof.base_bytes.get().max(1);
    if pct > 0 && log >= min as u64 && log * 100 / base >= pct as u64 {
        tracing::info!(
            core = core.id,
            "Starting automatic rewriting of AOF on {}% growth",
            log * 100 / base
        );
        rewrite(core.clone());
    }
}

/// Starts a rewrite of this core's log in the background (BGREWRITEAOF, the automatic
/// rule, a first start). It waits while another capture (a BGSAVE) holds the shard.
pub fn rewrite(core: Rc<Core>) {
    let Some(aof) = core.aof.borrow().clone() else {
        return;
    };
    if aof.rewriting.replace(true) {
        return;
    }
    core.node
        .aof_rewrites_running
        .fetch_add(1, Ordering::AcqRel);
    let owner = core.clone();
    owner.spawn_background(async move {
        let started = core.now_ms();
        let result = rewrite_now(&core, &aof).await;
        let node = &core.node;
        node.aof_last_rewrite_secs.store(
            (core.now_ms().saturating_sub(started) / 1000) as i64,
            Ordering::Relaxed,
        );
        match &result {
            Ok(()) => {
                node.aof_rewrites.fetch_add(1, Ordering::Relaxed);
                node.aof_last_rewrite_ok.store(true, Ordering::Relaxed);
                tracing::info!(
                    core = core.id,
                    "Background AOF rewrite finished successfully"
                );
            }
            Err(e) => {
                node.aof_last_rewrite_ok.store(false, Ordering::Relaxed);
                tracing::warn!(core = core.id, "Background AOF rewrite failed: {e}");
            }
        }
        aof.rewriting.set(false);
        node.aof_rewrites_running.fetch_sub(1, Ordering::AcqRel);
    });
}

/// Starts the capture and the switch to a new log together, with no await between: the
/// capture is the data at sequence number S, the old log ends at S, the new one starts
/// after it. `None` while another capture runs.
#[allow(clippy::type_complexity)]
fn start_rewrite(
    core: &Core,
    aof: &Aof,
) -> Result<Option<(u64, CaptureTicket, oneshot::Receiver<Result<(), String>>)>, String> {
    let mut shard = core.shard.borrow_mut();
    let Ok(ticket) = shard.capture_start(0, core.now_ms()) else {
        return Ok(None);
    };
    let seq = ticket.seq;
    let mut to_old = Vec::new();
    let read = shard
        .wal_mut()
        .read_framed(aof.reader, usize::MAX, &mut to_old);
    match read {
        Ok(_) => {}
        Err(WalError::FellBehind { .. }) => {
            // The old log ends where the writer got to; the base covers the rest.
            to_old.clear();
            shard.wal_mut().set_cursor(aof.reader, seq + 1);
        }
        Err(e) => {
            shard.capture_abort(ticket);
            return Err(format!("reading the ring: {e}"));
        }
    }
    drop(shard);
    aof.written.set(seq);
    let gen = {
        let mut m = aof.manifest.borrow_mut();
        let g = m.next_gen;
        m.next_gen += 1;
        g
    };
    let (done, switched) = oneshot::channel();
    *aof.switch.borrow_mut() = Some(Switch { to_old, gen, done });
    aof.switching.set(true);
    aof.wake.notify();
    Ok(Some((gen, ticket, switched)))
}

async fn rewrite_now(core: &Rc<Core>, aof: &Rc<Aof>) -> Result<(), String> {
    let (gen, ticket, switched) = loop {
        if aof.stop.get() {
            return Err("appendonly was turned off".into());
        }
        match start_rewrite(core, aof)? {
            Some(started) => break started,
            // A BGSAVE's capture holds the shard: try again shortly.
            None => {
                glommio::timer::sleep(Duration::from_millis(limits::AOF_REWRITE_RETRY_MS)).await
            }
        }
    };
    let base = base_name(core.id, gen);
    let path = aof.dir.join(&base);
    let written = write_base(core, &path, ticket).await;
    if let Err(e) = written {
        core.shard.borrow_mut().capture_abort(ticket);
        let _ = std::fs::remove_file(&path);
        return Err(e);
    }
    match switched.await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            let _ = std::fs::remove_file(&path);
            return Err(e);
        }
        Err(_) => return Err("the writer stopped".into()),
    }
    if aof.stop.get() {
        return Err("appendonly was turned off".into());
    }
    // The new base and the log that follows it replace everything before.
    let old = aof.manifest.borrow().clone();
    let newest = old.logs.last().cloned().expect("the switch added a log");
    let m = Manifest {
        base: Some(base),
        logs: vec![newest.clone()],
        ..old.clone()
    };
    write_manifest(&aof.dir, &m).map_err(|e| format!("writing the manifest: {e}"))?;
    *aof.manifest.borrow_mut() = m;
    // Freeing big files takes the kernel a while: on the blocking thread.
    let stale: Vec<PathBuf> = old
        .base
        .iter()
        .chain(old.logs.iter())
        .filter(|name| **name != newest)
        .map(|name| aof.dir.join(name))
        .collect();
    glommio::executor()
        .spawn_blocking(move || {
            for path in stale {
                let _ = std::fs::remove_file(path);
            }
        })
        .await;
    let base_len = std::fs::metadata(&path).map_or(0, |m| m.len());
    let log_len = std::fs::metadata(aof.dir.join(&newest)).map_or(0, |m| m.len());
    aof.base_bytes.set(base_len);
    aof.log_bytes.set(log_len);
    Ok(())
}

/// Writes the running capture as a one-core snapshot file, a step at a time between the
/// core's requests.
async fn write_base(core: &Rc<Core>, path: &Path, ticket: CaptureTicket) -> Result<(), String> {
    let err = |e: glommio::GlommioError<()>| format!("writing {}: {e}", path.display());
    let file = glommio::io::BufferedFile::create(path).await.map_err(err)?;
    let databases = core.shard.borrow().databases();
    let mut head = Vec::new();
    snapshot::write_start(&mut head, 1, databases, core.now_ms(), vec![ticket.seq])
        .map_err(|e| e.to_string())?;
    let mut at = head.len() as u64;
    write_all_at(&file, head, 0).await.map_err(err)?;
    let mut throttle = super::persist::Throttle::new(core);
    loop {
        let step_started = std::time::Instant::now();
        let done = core
            .shard
            .borrow_mut()
            .capture_step(ticket, limits::SNAPSHOT_STEP_BYTES)
            .map_err(|e| e.to_string())?;
        let ready = core.shard.borrow().capture().pending_bytes();
        if done || ready >= limits::SNAPSHOT_CHUNK_BYTES {
            let mut chunk = core
                .shard
                .borrow()
                .capture_take(ticket)
                .map_err(|e| e.to_string())?;
            if done {
                let keys = core.shard.borrow().capture().keys();
                snapshot::encode_frame(&Frame::FileEnd { keys }, &mut chunk);
            }
            let n = chunk.len() as u64;
            write_all_at(&file, chunk, at).await.map_err(err)?;
            at += n;
        }
        throttle.spent(step_started.elapsed());
        if done {
            break;
        }
        throttle.pause(core).await;
    }
    file.fdatasync().await.map_err(err)?;
    file.close().await.map_err(err)?;
    Ok(())
}
