//! A shard: the numbered databases one core owns.

use crate::db::{Db, DbStats};

pub struct Shard {
    dbs: Vec<Db>,
}

impl Shard {
    /// A shard with `databases` empty databases (Redis's `databases`, 16 by default).
    pub fn new(databases: usize) -> Shard {
        assert!(databases > 0, "at least one database");
        Shard {
            dbs: (0..databases).map(|_| Db::new()).collect(),
        }
    }

    pub fn databases(&self) -> usize {
        self.dbs.len()
    }

    /// The database `index`; the caller has checked it against [`Shard::databases`].
    pub fn db(&mut self, index: usize) -> &mut Db {
        &mut self.dbs[index]
    }

    pub fn db_ref(&self, index: usize) -> &Db {
        &self.dbs[index]
    }

    pub fn flush_all(&mut self) {
        for db in &mut self.dbs {
            db.flush();
        }
    }

    pub fn stats(&self) -> DbStats {
        self.dbs.iter().fold(DbStats::default(), |mut acc, db| {
            acc.expired_keys += db.stats.expired_keys;
            acc.keyspace_hits += db.stats.keyspace_hits;
            acc.keyspace_misses += db.stats.keyspace_misses;
            acc.changes += db.stats.changes;
            acc
        })
    }

    pub fn reset_stats(&mut self) {
        for db in &mut self.dbs {
            db.stats = DbStats {
                changes: db.stats.changes,
                ..DbStats::default()
            };
        }
    }
}
