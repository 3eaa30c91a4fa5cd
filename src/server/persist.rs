//! Snapshots on disk: SAVE and BGSAVE write every core's keys to `dir/dbfilename` (a
//! temporary file, synced, then renamed over the old one), and a starting node loads that
//! file, each core keeping the keys whose slots it owns, so an image taken with N cores
//! loads into M.
//!
//! SAVE holds every shard while it writes. BGSAVE takes a point-in-time capture of every
//! shard at one moment (all shards locked for the instant it takes to flip their marks,
//! see `tessera_shards::capture`), then each core writes its own part on its own core with
//! glommio's file I/O while it goes on serving: chunks of whole frames at offsets taken
//! from one shared counter, so the parts land side by side in one file with no copy.

use super::core::Core;
use crate::config::Config;
use crate::limits;
use crate::slot::key_core;
use std::io::{BufReader, Write};
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use tessera_shards::shard::CaptureTicket;
use tessera_shards::snapshot::{self, Frame, SnapshotError, SnapshotReader};
use tessera_shards::wal::Op;

pub fn snapshot_path(config: &Config) -> PathBuf {
    config.dir.join(&config.dbfilename)
}

#[derive(Debug, thiserror::Error)]
pub enum SaveError {
    #[error("cannot write {path}: {err}")]
    Io { path: String, err: std::io::Error },
}

/// SAVE: an image of every core's keys, taken with every shard locked (the caller holds the
/// locks), written, synced and renamed into place. Returns the keys saved. On failure the
/// old file stays as it was and the partial one is removed.
pub async fn save(core: &Rc<Core>, tx: Option<u64>) -> Result<u64, SaveError> {
    let config = core.config.borrow().clone();
    let path = snapshot_path(&config);
    let tmp = path.with_extension(format!("tmp-{}", std::process::id()));
    let saved = write_image(core, tx, &config, &path, &tmp).await;
    if saved.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    saved
}

async fn write_image(
    core: &Rc<Core>,
    tx: Option<u64>,
    config: &Config,
    path: &Path,
    tmp: &Path,
) -> Result<u64, SaveError> {
    let io = |err| SaveError::Io {
        path: tmp.display().to_string(),
        err,
    };
    let sequences = core.invoke_all(tx, |c| c.shard.borrow().wal().head()).await;
    let mut file = std::fs::File::create(tmp).map_err(io)?;
    let created = core.node.now_ms();
    snapshot::write_start(&mut file, core.cores, config.databases, created, sequences)
        .map_err(io)?;
    drop(file);
    let mut keys = 0;
    for c in 0..core.cores {
        // Each core appends its own part, one core after another, through a buffer of
        // SNAPSHOT_WRITE_BUFFER_BYTES: the image is never held in memory.
        let target = tmp.to_path_buf();
        let part = core
            .invoke_on(c, tx, move |cc| -> std::io::Result<u64> {
                let file = std::fs::OpenOptions::new().append(true).open(&target)?;
                let mut out =
                    std::io::BufWriter::with_capacity(limits::SNAPSHOT_WRITE_BUFFER_BYTES, file);
                let n = cc
                    .shard
                    .borrow()
                    .snapshot_to(cc.id, cc.now_ms(), &mut out)?;
                out.flush()?;
                Ok(n)
            })
            .await;
        keys += part.map_err(io)?;
    }
    let mut file = std::fs::OpenOptions::new()
        .append(true)
        .open(tmp)
        .map_err(io)?;
    let mut end = Vec::new();
    snapshot::encode_frame(&Frame::FileEnd { keys }, &mut end);
    file.write_all(&end).map_err(io)?;
    file.sync_all().map_err(io)?;
    drop(file);
    std::fs::rename(tmp, path).map_err(|err| SaveError::Io {
        path: path.display().to_string(),
        err,
    })?;
    core.node.saved(created);
    tracing::info!(keys, path = %path.display(), "DB saved on disk");
    Ok(keys)
}

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("cannot read the snapshot {path}: {err}")]
    Io { path: String, err: std::io::Error },
    #[error("the snapshot {path} cannot be loaded: {err}")]
    Bad { path: String, err: SnapshotError },
}

/// Loads this core's keys from the snapshot, if there is one. Keys already expired are
/// skipped. Returns the keys loaded.
pub fn load(core: &Core, config: &Config) -> Result<u64, LoadError> {
    let path = snapshot_path(config);
    load_from(core, &path)
}

fn load_from(core: &Core, path: &Path) -> Result<u64, LoadError> {
    let file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(err) => {
            return Err(LoadError::Io {
                path: path.display().to_string(),
                err,
            })
        }
    };
    let bad = |err| LoadError::Bad {
        path: path.display().to_string(),
        err,
    };
    let (mut reader, _header) = SnapshotReader::open(BufReader::new(file)).map_err(bad)?;
    let now = core.now_ms();
    let mut shard = core.shard.borrow_mut();
    let databases = shard.databases();
    let mut loaded = 0;
    while let Some(frame) = reader.next_entry().map_err(bad)? {
        let Frame::Entry {
            db,
            key,
            value,
            expire_at_ms,
        } = frame
        else {
            continue;
        };
        if key_core(&key, core.cores) != core.id {
            continue;
        }
        if db as usize >= databases {
            return Err(bad(SnapshotError::Malformed(
                0,
                format!("a key of database {db}, but this node has {databases} databases"),
            )));
        }
        let entry = Op::entry(&value, expire_at_ms);
        if entry.is_expired(now) {
            continue;
        }
        shard.db(db as usize).set(&key, entry, now);
        loaded += 1;
    }
    Ok(loaded)
}

/// What the node knows of its background saves (INFO persistence).
#[derive(Debug)]
pub struct SaveState {
    running: AtomicBool,
    /// Node time (ms) the running save started at.
    started_ms: AtomicU64,
    last_ok: AtomicBool,
    /// Seconds the last background save took; -1 before one.
    last_secs: AtomicI64,
    /// Node time (ms) of the last background save attempt, for the retry delay.
    last_try_ms: AtomicU64,
    /// Saves completed since start (SAVE and BGSAVE: Redis's `rdb_saves`).
    pub completed: AtomicU64,
    /// Keys the running save has written, and the keys there were when it started.
    pub keys_written: AtomicU64,
    pub keys_total: AtomicU64,
    /// BGSAVE SCHEDULE arrived during an append-only rewrite.
    pub scheduled: AtomicBool,
}

impl Default for SaveState {
    fn default() -> Self {
        SaveState {
            running: AtomicBool::new(false),
            started_ms: AtomicU64::new(0),
            last_ok: AtomicBool::new(true),
            last_secs: AtomicI64::new(-1),
            last_try_ms: AtomicU64::new(0),
            completed: AtomicU64::new(0),
            keys_written: AtomicU64::new(0),
            keys_total: AtomicU64::new(0),
            scheduled: AtomicBool::new(false),
        }
    }
}

impl SaveState {
    pub fn running(&self) -> bool {
        self.running.load(Ordering::Acquire)
    }

    pub fn last_ok(&self) -> bool {
        self.last_ok.load(Ordering::Relaxed)
    }

    pub fn last_secs(&self) -> i64 {
        self.last_secs.load(Ordering::Relaxed)
    }

    /// Seconds the running save has taken so far; -1 when none runs.
    pub fn current_secs(&self, now_ms: u64) -> i64 {
        if !self.running() {
            return -1;
        }
        (now_ms.saturating_sub(self.started_ms.load(Ordering::Relaxed)) / 1000) as i64
    }

    pub fn scheduled(&self) -> bool {
        self.scheduled.load(Ordering::Relaxed)
    }

    pub fn last_try_ms(&self) -> u64 {
        self.last_try_ms.load(Ordering::Relaxed)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum BgsaveError {
    #[error("Background save already in progress")]
    Running,
    #[error("An AOF log rewriting in progress: can't BGSAVE right now. Use BGSAVE SCHEDULE in order to schedule a BGSAVE whenever possible.")]
    Rewriting,
}

/// What BGSAVE did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bgsave {
    Started,
    /// An append-only rewrite holds the shards; the save starts once it is done.
    Scheduled,
}

/// BGSAVE: captures every shard at one moment and starts writing the image in the
/// background. Returns once the capture has started; the caller answers at once.
/// `tx`: the session's transaction, when it already holds every shard.
pub async fn bgsave(
    core: &Rc<Core>,
    tx: Option<u64>,
    schedule: bool,
) -> Result<Bgsave, BgsaveError> {
    let saves = &core.node.saves;
    if core.node.aof_rewrites_running.load(Ordering::Acquire) > 0 {
        if !schedule {
            return Err(BgsaveError::Rewriting);
        }
        saves.scheduled.store(true, Ordering::Relaxed);
        return Ok(Bgsave::Scheduled);
    }
    saves.scheduled.store(false, Ordering::Relaxed);
    if saves
        .running
        .compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
        .is_err()
    {
        return Err(BgsaveError::Running);
    }
    let now = core.now_ms();
    saves.started_ms.store(now, Ordering::Relaxed);
    saves.last_try_ms.store(now, Ordering::Relaxed);
    saves.keys_written.store(0, Ordering::Relaxed);
    let locks = match tx {
        Some(_) => None,
        None if core.cores == 1 => None,
        None => Some(core.acquire((0..core.cores).collect()).await),
    };
    let held = tx.or(locks.as_ref().map(|l| l.tx));
    let started = core
        .invoke_all(held, move |c| {
            let mut shard = c.shard.borrow_mut();
            let keys: usize = (0..shard.databases())
                .map(|db| shard.db_ref(db).len())
                .sum();
            c.changes_at_capture.set(shard.stats().changes);
            shard
                .capture_start(c.id, now)
                .map(|ticket| (ticket, keys as u64))
                .map_err(|e| e.to_string())
        })
        .await;
    if let Some(l) = locks {
        core.release(l).await;
    }
    let config = core.config.borrow().clone();
    let path = snapshot_path(&config);
    let tmp = config
        .dir
        .join(format!("temp-bgsave-{}.tsnap", std::process::id()));
    let owner = core.clone();
    glommio::spawn_local(async move {
        // The captures that did start, to stop them if the save fails.
        let tickets: Vec<Option<CaptureTicket>> = started
            .iter()
            .map(|r| r.as_ref().ok().map(|(t, _)| *t))
            .collect();
        let result = match started.into_iter().collect::<Result<Vec<_>, _>>() {
            Ok(parts) => {
                let (tickets, keys): (Vec<CaptureTicket>, Vec<u64>) = parts.into_iter().unzip();
                owner
                    .node
                    .saves
                    .keys_total
                    .store(keys.iter().sum(), Ordering::Relaxed);
                write_background(&owner, &config, tickets, now, &tmp, &path).await
            }
            Err(e) => Err(e),
        };
        if result.is_err() {
            for (c, ticket) in tickets.into_iter().enumerate() {
                if let Some(t) = ticket {
                    owner
                        .invoke_on(c, None, move |cc| cc.shard.borrow_mut().capture_abort(t))
                        .await;
                }
            }
        }
        finish_bgsave(&owner, now, result, &tmp, &path).await;
    })
    .detach();
    Ok(Bgsave::Started)
}

/// Writes the header, has every core write its part, then the end; syncs and renames.
async fn write_background(
    core: &Rc<Core>,
    config: &Config,
    tickets: Vec<CaptureTicket>,
    created: u64,
    tmp: &Path,
    path: &Path,
) -> Result<u64, String> {
    let io = |e: std::io::Error| format!("cannot write {}: {e}", tmp.display());
    let gio = |e: glommio::GlommioError<()>| format!("cannot write {}: {e}", tmp.display());
    let mut head = Vec::new();
    let sequences = tickets.iter().map(|t| t.seq).collect();
    snapshot::write_start(&mut head, core.cores, config.databases, created, sequences)
        .map_err(io)?;
    let file = glommio::io::BufferedFile::create(tmp).await.map_err(gio)?;
    let next = Arc::new(AtomicU64::new(head.len() as u64));
    write_all_at(&file, head, 0).await.map_err(gio)?;
    let mut pending = Vec::with_capacity(core.cores);
    for (c, ticket) in tickets.into_iter().enumerate() {
        let next = next.clone();
        let target = tmp.to_path_buf();
        pending.push(
            core.invoke_on(c, None, move |cc| {
                let (done, rx) = futures_channel::oneshot::channel();
                let owner = cc.rc();
                cc.spawn_background(async move {
                    let r = write_part(&owner, ticket, &target, &next).await;
                    if r.is_err() {
                        owner.shard.borrow_mut().capture_abort(ticket);
                    }
                    let _ = done.send(r.map_err(|e| e.to_string()));
                });
                rx
            })
            .await,
        );
    }
    let mut keys = 0;
    let mut failed = None;
    for rx in pending {
        match rx.await {
            Ok(Ok(n)) => keys += n,
            Ok(Err(e)) => failed = Some(format!("cannot write {}: {e}", tmp.display())),
            Err(_) => failed = Some("a core stopped during the save".into()),
        }
    }
    if let Some(e) = failed {
        return Err(e);
    }
    let mut end = Vec::new();
    snapshot::encode_frame(&Frame::FileEnd { keys }, &mut end);
    let at = next.fetch_add(end.len() as u64, Ordering::Relaxed);
    write_all_at(&file, end, at).await.map_err(gio)?;
    file.fdatasync().await.map_err(gio)?;
    file.close().await.map_err(gio)?;
    // Renaming over the old image frees it, which for a big file takes the kernel a while
    // (about 200 ms for 256 MB here): on the blocking thread, not the serving core.
    let (from, to) = (tmp.to_path_buf(), path.to_path_buf());
    glommio::executor()
        .spawn_blocking(move || std::fs::rename(from, to))
        .await
        .map_err(|e| format!("cannot rename to {}: {e}", path.display()))?;
    Ok(keys)
}

/// One core's part of a background save: walks its capture a step at a time, yielding to
/// its connections between steps, and writes whole chunks of frames at offsets taken from
/// `next`. Returns the keys written.
async fn write_part(
    core: &Rc<Core>,
    ticket: CaptureTicket,
    path: &Path,
    next: &AtomicU64,
) -> std::io::Result<u64> {
    let file = glommio::io::OpenOptions::new()
        .write(true)
        .buffered_open(path)
        .await
        .map_err(std::io::Error::from)?;
    let saves = &core.node.saves;
    let mut written = 0;
    let mut throttle = Throttle::new(core);
    loop {
        if core.node.shutting_down() {
            let _ = file.close().await;
            return Err(std::io::Error::other("the server is shutting down"));
        }
        let before = core.shard.borrow().capture().keys();
        let step_started = std::time::Instant::now();
        let done = core
            .shard
            .borrow_mut()
            .capture_step(ticket, limits::SNAPSHOT_STEP_BYTES)
            .map_err(std::io::Error::other)?;
        let (ready, keys) = {
            let shard = core.shard.borrow();
            (shard.capture().pending_bytes(), shard.capture().keys())
        };
        if done || ready >= limits::SNAPSHOT_CHUNK_BYTES {
            let chunk = core
                .shard
                .borrow()
                .capture_take(ticket)
                .map_err(std::io::Error::other)?;
            let at = next.fetch_add(chunk.len() as u64, Ordering::Relaxed);
            if let Err(e) = write_all_at(&file, chunk, at).await {
                let _ = file.close().await;
                return Err(e.into());
            }
            saves
                .keys_written
                .fetch_add(keys - written, Ordering::Relaxed);
            written = keys;
        }
        throttle.spent(step_started.elapsed());
        super::metrics::latency("snapshot-step", step_started.elapsed());
        if done {
            break;
        }
        let delay_us = core.config.borrow().rdb_key_save_delay;
        let stepped = keys - before;
        if delay_us > 0 && stepped > 0 {
            glommio::timer::sleep(std::time::Duration::from_micros(delay_us * stepped)).await;
        } else {
            throttle.pause(core).await;
        }
    }
    file.close().await.map_err(std::io::Error::from)?;
    Ok(written)
}

/// Keeps a background writer (a save, a rewrite) within `save-cpu-percent` of its core's
/// time while the core serves clients. Measured: a save walks and writes about a million
/// keys per CPU-second, and left to glommio's scheduler it took ~85% of a busy core, so the
/// core served ~70% fewer requests (benches/bgsave-dip.sh). On a core that served nothing
/// since the last step it runs flat out.
pub struct Throttle {
    started: std::time::Instant,
    spent: std::time::Duration,
    commands: u64,
}

impl Throttle {
    pub fn new(core: &Core) -> Throttle {
        Throttle {
            started: std::time::Instant::now(),
            spent: std::time::Duration::ZERO,
            commands: core.stats.get().total_commands_processed,
        }
    }

    /// Counts time the writer worked.
    pub fn spent(&mut self, d: std::time::Duration) {
        self.spent += d;
    }

    /// Before the next step: lets the connections run, and waits as long as the writer is
    /// over its share of a busy core.
    pub async fn pause(&mut self, core: &Core) {
        glommio::executor().yield_task_queue_now().await;
        let commands = core.stats.get().total_commands_processed;
        let busy = commands != self.commands;
        self.commands = commands;
        let percent = core.config.borrow().save_cpu_percent.clamp(1, 100) as u32;
        if !busy || percent == 100 {
            return;
        }
        let due = self.spent * 100 / percent;
        let elapsed = self.started.elapsed();
        if due > elapsed {
            glommio::timer::sleep(due - elapsed).await;
        }
    }
}

/// Writes all of `buf` at `at`. A regular file takes less only when the disk is full: that
/// is an error, as it is for Redis's writes.
pub(super) async fn write_all_at(
    file: &glommio::io::BufferedFile,
    buf: Vec<u8>,
    at: u64,
) -> Result<(), glommio::GlommioError<()>> {
    let len = buf.len();
    let n = file.write_at(buf, at).await?;
    if n < len {
        let short = format!("wrote {n} of {len} bytes (is the disk full?)");
        return Err(std::io::Error::new(std::io::ErrorKind::WriteZero, short).into());
    }
    Ok(())
}

/// Records the outcome of a background save; on failure removes the partial file and
/// stops every core's capture.
async fn finish_bgsave(
    core: &Rc<Core>,
    started: u64,
    result: Result<u64, String>,
    tmp: &Path,
    path: &Path,
) {
    let saves = &core.node.saves;
    let secs = (core.now_ms().saturating_sub(started) / 1000) as i64;
    match result {
        Ok(keys) => {
            core.invoke_all(None, |c| c.changes_at_save.set(c.changes_at_capture.get()))
                .await;
            core.node.saved(started);
            saves.completed.fetch_add(1, Ordering::Relaxed);
            saves.last_ok.store(true, Ordering::Relaxed);
            tracing::info!(keys, path = %path.display(), "Background saving terminated with success");
        }
        Err(e) => {
            let _ = std::fs::remove_file(tmp);
            saves.last_ok.store(false, Ordering::Relaxed);
            tracing::warn!("Background saving error: {e}");
        }
    }
    saves.last_secs.store(secs, Ordering::Relaxed);
    saves.running.store(false, Ordering::Release);
}
