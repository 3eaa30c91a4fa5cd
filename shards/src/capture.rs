//! A point-in-time image of a shard, taken while the shard keeps serving (BGSAVE, an
//! append-only file's rewrite), without fork and without a copy of the dataset.
//!
//! Every item carries a one-bit mark. Starting a capture flips the shard's current mark, so
//! that every item stored at that moment carries the *old* mark, which means "in the image,
//! not written yet". The capture then walks the tables, writes each item that still has
//! the old mark and gives it the new one. Meanwhile:
//! - a change to, or deletion of, an item that still has the old mark first writes the
//!   item as it is (that is what the image must hold) — one item, not a page or a bucket;
//! - every item stored from then on (new keys, changed values) gets the new mark, so the
//!   walk passes it by: the image holds the data as it was when the capture started;
//! - FLUSHDB hands the whole old table to the capture, which writes what is left of it.
//!
//! When the walk ends every item carries the new mark, which is what the next capture
//! starts from. An aborted capture still walks to the end, marking without writing.
//!
//! Memory: what the image costs beyond the dataset is the output not yet handed to the
//! writer, and nothing else. The walk never copies a table.

use crate::item::Item;
use crate::keyspace::Keyspace;
use crate::snapshot::{encode_frame, Frame};
use std::cell::{Cell, RefCell};

/// The capture state a shard shares with its databases.
#[derive(Default)]
pub struct Capture {
    /// The mark items get when they are stored; flipped by each capture's start.
    mark: Cell<bool>,
    active: Cell<bool>,
    state: RefCell<State>,
}

#[derive(Default)]
struct State {
    /// The image's time: keys expired by then are left out.
    at_ms: u64,
    /// Frames written and not yet taken by the writer.
    out: Vec<u8>,
    /// Entries written so far.
    keys: u64,
    /// Tables emptied by FLUSHDB during the capture, still to be written: database, table,
    /// walk position.
    detached: Vec<(usize, Keyspace, u64)>,
}

impl Capture {
    /// The mark to give an item stored now.
    pub fn mark(&self) -> bool {
        self.mark.get()
    }

    pub fn is_active(&self) -> bool {
        self.active.get()
    }

    /// Before `item` (of database `db`) is changed or removed: writes it if the image still
    /// needs it. Cheap when no capture runs: one flag.
    pub fn preserve(&self, db: usize, item: &Item) {
        if self.active.get() && item.snap_mark() != self.mark.get() {
            self.write(db, item);
        }
    }

    /// Writes `item` into the image unless it had expired by the image's time.
    fn write(&self, db: usize, item: &Item) {
        let mut st = self.state.borrow_mut();
        if item.is_expired(st.at_ms) {
            return;
        }
        encode_frame(&Frame::entry(db, item), &mut st.out);
        st.keys += 1;
    }

    /// Takes over a table that FLUSHDB emptied, while a capture runs.
    pub fn detach(&self, db: usize, table: Keyspace) {
        if table.is_empty() {
            return;
        }
        self.state.borrow_mut().detached.push((db, table, 0));
    }

    /// Starts a capture as of `at_ms`.
    pub(crate) fn start(&self, at_ms: u64) {
        debug_assert!(!self.active.get());
        self.mark.set(!self.mark.get());
        self.active.set(true);
        let mut st = self.state.borrow_mut();
        st.at_ms = at_ms;
        st.out.clear();
        st.keys = 0;
        st.detached.clear();
    }

    pub(crate) fn finish(&self, core: usize) {
        let mut st = self.state.borrow_mut();
        let keys = st.keys;
        encode_frame(
            &Frame::CoreEnd {
                core: core as u32,
                keys,
            },
            &mut st.out,
        );
        st.detached.clear();
        self.active.set(false);
    }

    pub(crate) fn abort(&self) {
        let mut st = self.state.borrow_mut();
        st.out = Vec::new();
        st.detached.clear();
        self.active.set(false);
    }

    /// Visits one segment of `table` from `pos`: writes every item with the old mark and
    /// marks it (only marks it when `write` is false). Returns the next position.
    pub(crate) fn walk(
        &self,
        db: usize,
        table: &mut Keyspace,
        pos: u64,
        write: bool,
    ) -> Option<u64> {
        let mark = self.mark.get();
        table.walk_segment(pos, |item| {
            if item.snap_mark() != mark {
                if write {
                    self.write(db, item);
                }
                item.set_snap_mark(mark);
            }
        })
    }

    /// Walks one segment of a table detached by FLUSHDB, if any is left; false when none
    /// is.
    pub(crate) fn walk_detached(&self) -> bool {
        let Some((db, mut table, pos)) = self.state.borrow_mut().detached.pop() else {
            return false;
        };
        if let Some(next) = self.walk(db, &mut table, pos, true) {
            self.state.borrow_mut().detached.push((db, table, next));
        }
        true
    }

    /// Bytes written and not yet taken.
    pub fn pending_bytes(&self) -> usize {
        self.state.borrow().out.len()
    }

    /// Entries written so far.
    pub fn keys(&self) -> u64 {
        self.state.borrow().keys
    }

    /// Hands the frames written so far to the writer.
    pub fn take_output(&self) -> Vec<u8> {
        std::mem::take(&mut self.state.borrow_mut().out)
    }
}
