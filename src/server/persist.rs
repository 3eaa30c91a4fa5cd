//! Snapshots on disk: SAVE writes every core's keys to `dir/dbfilename` (a temporary file,
//! synced, then renamed over the old one), and a starting node loads that file, each core
//! keeping the keys whose slots it owns, so an image taken with N cores loads into M.

use super::core::Core;
use crate::config::Config;
use crate::limits;
use crate::slot::key_core;
use std::io::{BufReader, Write};
use std::path::{Path, PathBuf};
use std::rc::Rc;
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
