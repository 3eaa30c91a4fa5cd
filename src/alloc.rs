//! A global allocator that counts live heap bytes (as malloc rounds them) per thread, so
//! INFO can report `used_memory` without a shared atomic on every allocation. A block freed on another
//! thread than the one that allocated it makes one counter go down and another up; the
//! sum over threads is exact.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicI64, Ordering};

pub struct CountingAlloc;

thread_local! {
    static LOCAL: Cell<i64> = const { Cell::new(0) };
}

/// Bytes of threads that are not data cores (start-up, the signal thread), and of data
/// cores once they publish; see [`publish_thread_bytes`].
static OTHERS: AtomicI64 = AtomicI64::new(0);

fn add(n: i64) {
    // `try_with` so that allocations during thread teardown still work.
    let _ = LOCAL.try_with(|c| c.set(c.get() + n));
}

/// What malloc spends on a request of `n` bytes: its chunk, header included (a 55-byte
/// request takes a 64-byte chunk), as Redis's zmalloc counts the allocator's view rather
/// than the request. Computed from glibc's rounding rather than asked of malloc, which
/// would cost a call on every allocation and free.
fn spent(n: usize) -> i64 {
    tessera_shards::memory::alloc_bytes(n) as i64
}

unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = System.alloc(layout);
        if !p.is_null() {
            add(spent(layout.size()));
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        add(-spent(layout.size()));
        System.dealloc(ptr, layout);
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let p = System.alloc_zeroed(layout);
        if !p.is_null() {
            add(spent(layout.size()));
        }
        p
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let p = System.realloc(ptr, layout, new_size);
        if !p.is_null() {
            add(spent(new_size) - spent(layout.size()));
        }
        p
    }
}

/// This thread's net allocated bytes (may be negative; see the module doc).
pub fn thread_bytes() -> i64 {
    LOCAL.with(Cell::get)
}

/// Moves this thread's count into the shared total (for threads about to exit).
pub fn publish_thread_bytes() {
    let n = LOCAL.with(|c| c.replace(0));
    OTHERS.fetch_add(n, Ordering::Relaxed);
}

/// Bytes counted by threads that published theirs.
pub fn published_bytes() -> i64 {
    OTHERS.load(Ordering::Relaxed)
}
