//! Each core's background tick, `hz` times a second: active expiry within its time budget,
//! and eviction that writes left unfinished.

use super::core::Core;
use crate::limits;
use std::rc::Rc;
use std::time::{Duration, Instant};

pub async fn run(core: Rc<Core>) {
    loop {
        let hz = core.config.borrow().hz.clamp(1, limits::HZ_MAX) as u64;
        let period = Duration::from_micros(1_000_000 / hz);
        glommio::timer::sleep(period).await;
        if core.node.shutting_down() {
            return;
        }
        tick(&core, period);
    }
}

fn tick(core: &Core, period: Duration) {
    // A transaction holding this shard sees it unchanged between its steps.
    if !core.gate.admits(None) {
        return;
    }
    let now = core.now_ms();
    let mut shard = core.shard.borrow_mut();
    if core.active_expire.get() {
        let budget = period * limits::ACTIVE_EXPIRE_TIME_PERCENT as u32 / 100;
        let start = Instant::now();
        shard.active_expire(now, || start.elapsed() < budget);
        let spent = start.elapsed().as_micros() as u64;
        core.bump(|st| st.expire_cycle_cpu_us += spent);
    }
    if shard.over_limit() {
        shard.make_room(now);
    }
}
