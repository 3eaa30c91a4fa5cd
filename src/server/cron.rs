//! Each core's background tick, `hz` times a second: active expiry within its time budget,
//! eviction that writes left unfinished, and (on core 0) the `save` rules.

use super::core::Core;
use super::metrics;
use crate::limits;
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

/// After a failed background save, the save rules try again only after this many
/// milliseconds (Redis's CONFIG_BGSAVE_RETRY_DELAY, 5 s).
pub const BGSAVE_RETRY_DELAY_MS: u64 = 5_000;

pub async fn run(core: Rc<Core>) {
    loop {
        let hz = core.config.borrow().hz.clamp(1, limits::HZ_MAX) as u64;
        let period = Duration::from_micros(1_000_000 / hz);
        glommio::timer::sleep(period).await;
        if core.node.shutting_down() {
            return;
        }
        metrics::set_latency_threshold(core.config.borrow().latency_monitor_threshold);
        tick(&core, period);
        drop_lost_slots(&core);
        publish_changes(&core);
        super::prometheus::sample_if_wanted(&core);
        if core.id == 0 {
            check_save_rules(&core);
        }
    }
}

/// Publishes this core's changes since the last save for the save rules.
fn publish_changes(core: &Core) {
    let changes = core.shard.borrow().stats().changes;
    core.node.dirty[core.id].store(
        changes.saturating_sub(core.changes_at_save.get()),
        Ordering::Relaxed,
    );
}

/// Starts a background save when a `save <seconds> <changes>` rule is met (as Redis's
/// serverCron: more than `seconds` since the last save and at least `changes` changes; after
/// a failure, not again within the retry delay).
fn check_save_rules(core: &Rc<Core>) {
    let node = &core.node;
    if node.saves.running() {
        return;
    }
    if node.saves.scheduled() && node.aof_rewrites_running.load(Ordering::Acquire) == 0 {
        let core = core.clone();
        glommio::spawn_local(async move {
            if let Err(e) = super::persist::bgsave(&core, None, false).await {
                tracing::warn!("the scheduled background save could not start: {e}");
            }
        })
        .detach();
        return;
    }
    let rules = core.config.borrow().save.clone();
    if rules.is_empty() {
        return;
    }
    let now_ms = core.now_ms();
    let since_s = (now_ms / 1000).saturating_sub(node.last_save_unix_s());
    let dirty: u64 = node.dirty.iter().map(|d| d.load(Ordering::Relaxed)).sum();
    let due = rules
        .iter()
        .any(|r| dirty >= r.changes && since_s > r.seconds);
    let may_retry = node.saves.last_ok()
        || now_ms.saturating_sub(node.saves.last_try_ms()) > BGSAVE_RETRY_DELAY_MS;
    if due && may_retry {
        tracing::info!("{dirty} changes in {since_s} seconds. Saving...");
        let core = core.clone();
        glommio::spawn_local(async move {
            if let Err(e) = super::persist::bgsave(&core, None, false).await {
                tracing::warn!("the save rules could not start a background save: {e}");
            }
        })
        .detach();
    }
}

/// Cluster mode: when a new slot table takes slots away from this node, deletes this core's
/// keys in them, so that a slot coming back later does not serve stale values (keys do not
/// migrate yet; in cache mode the new owner starts empty). One scan of the core's keys per
/// table that takes slots away.
fn drop_lost_slots(core: &Core) {
    let Some(h) = core.node.cluster.get() else {
        return;
    };
    let view = h.view.load();
    if view.epoch == 0 || view.epoch == core.cluster_epoch_seen.get() || !core.gate.admits(None) {
        return;
    }
    if view.nodes[0].primary.is_some() {
        // A replica owns no slots and keeps its primary's keys; what it held as a primary
        // before goes with the full sync.
        core.cluster_epoch_seen.set(view.epoch);
        core.slots_held.replace(None);
        return;
    }
    core.cluster_epoch_seen.set(view.epoch);
    let mine: Vec<bool> = (0..crate::slot::SLOTS).map(|s| view.is_mine(s)).collect();
    let held = core.slots_held.replace(Some(mine.clone()));
    let lost: Vec<bool> = match held {
        Some(before) => before.iter().zip(&mine).map(|(b, m)| *b && !*m).collect(),
        None => mine.iter().map(|m| !*m).collect(),
    };
    if !lost.iter().any(|l| *l) {
        return;
    }
    let now = core.now_ms();
    let mut shard = core.shard.borrow_mut();
    let doomed: Vec<Vec<u8>> = shard
        .db_ref(0)
        .live_items(now)
        .filter(|item| lost[crate::slot::key_slot(item.key()) as usize])
        .map(|item| item.key().to_vec())
        .collect();
    for key in &doomed {
        shard.db(0).remove(key, now);
    }
    if !doomed.is_empty() {
        tracing::info!(
            core = core.id,
            keys = doomed.len(),
            epoch = view.epoch,
            "dropped the keys of slots this node no longer owns"
        );
    }
}

fn tick(core: &Core, period: Duration) {
    // A transaction holding this shard sees it unchanged between its steps.
    if !core.gate.admits(None) {
        return;
    }
    // A replica deletes nothing on its own: its primary's expiries and evictions arrive as
    // records (as a Redis replica waits for its primary's DELs).
    if core.node.repl.is_replica() {
        return;
    }
    let now = core.now_ms();
    let mut shard = core.shard.borrow_mut();
    if core.active_expire.get() {
        let budget = period * limits::ACTIVE_EXPIRE_TIME_PERCENT as u32 / 100;
        let start = Instant::now();
        shard.active_expire(now, || start.elapsed() < budget);
        let spent = start.elapsed();
        core.bump(|st| st.expire_cycle_cpu_us += spent.as_micros() as u64);
        metrics::latency("expire-cycle", spent);
    }
    if shard.over_limit() {
        let start = Instant::now();
        shard.make_room(now);
        metrics::latency("eviction-cycle", start.elapsed());
    }
}
