//! Eviction: the `maxmemory-policy` names, what each entry's `access` field holds under
//! them, and the LFU counter's arithmetic.
//!
//! The shard evicts as Redis does: it samples `maxmemory-samples` keys per database, keeps
//! the best candidates seen so far in a small pool ([`POOL_SIZE`]), and removes the best
//! one, until its data fits its share of `maxmemory`. The field an entry ranks by is one
//! `u32` whose meaning follows the policy:
//!
//! | tracking | `access` holds | evicted first |
//! |---|---|---|
//! | LRU  | the shard clock's milliseconds at the last access, wrapping | longest idle |
//! | LFU  | minutes of the last decay (16 bits) and a logarithmic counter (8 bits) | lowest count |
//! | FIFO | the database's write sequence number at the last write, wrapping | oldest write |

/// Candidates the eviction pool keeps between evictions (Redis's EVPOOL_SIZE).
pub const POOL_SIZE: usize = 16;

/// A new key's LFU counter, so that it is not evicted before it has had a chance to be
/// read again (Redis's LFU_INIT_VAL).
pub const LFU_INIT_VAL: u8 = 5;

/// Most keys one write may evict before it runs anyway; the next writes go on evicting.
pub const EVICT_MAX_KEYS_PER_CALL: usize = 4096;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Policy {
    NoEviction,
    AllKeysLru,
    AllKeysLfu,
    AllKeysRandom,
    AllKeysFifo,
    VolatileLru,
    VolatileLfu,
    VolatileRandom,
    VolatileTtl,
    VolatileFifo,
}

/// What an entry's `access` field records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tracking {
    Lru,
    Lfu,
    Fifo,
}

const POLICIES: &[(&str, Policy)] = &[
    ("noeviction", Policy::NoEviction),
    ("allkeys-lru", Policy::AllKeysLru),
    ("allkeys-lfu", Policy::AllKeysLfu),
    ("allkeys-random", Policy::AllKeysRandom),
    ("allkeys-fifo", Policy::AllKeysFifo),
    ("volatile-lru", Policy::VolatileLru),
    ("volatile-lfu", Policy::VolatileLfu),
    ("volatile-random", Policy::VolatileRandom),
    ("volatile-ttl", Policy::VolatileTtl),
    ("volatile-fifo", Policy::VolatileFifo),
];

impl Policy {
    /// The policy named as in `maxmemory-policy` (case-insensitive).
    pub fn parse(name: &str) -> Option<Policy> {
        POLICIES
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|&(_, p)| p)
    }

    pub fn name(self) -> &'static str {
        POLICIES
            .iter()
            .find(|&&(_, p)| p == self)
            .map(|&(n, _)| n)
            .expect("every policy is named")
    }

    /// Every policy name, for error messages and CONFIG.
    pub fn names() -> impl Iterator<Item = &'static str> {
        POLICIES.iter().map(|&(n, _)| n)
    }

    /// Only keys with a TTL may be evicted.
    pub fn volatile_only(self) -> bool {
        matches!(
            self,
            Policy::VolatileLru
                | Policy::VolatileLfu
                | Policy::VolatileRandom
                | Policy::VolatileTtl
                | Policy::VolatileFifo
        )
    }

    pub fn tracking(self) -> Tracking {
        match self {
            Policy::AllKeysLfu | Policy::VolatileLfu => Tracking::Lfu,
            Policy::AllKeysFifo | Policy::VolatileFifo => Tracking::Fifo,
            _ => Tracking::Lru,
        }
    }
}

/// The memory settings a shard follows: its share of `maxmemory` and how to make room.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MemoryPolicy {
    /// Bytes this shard's data may use; 0 means no limit.
    pub limit_bytes: usize,
    pub policy: Policy,
    /// Keys sampled per database for each eviction (`maxmemory-samples`).
    pub samples: usize,
    /// `lfu-log-factor`: how many accesses it takes to raise the counter.
    pub lfu_log_factor: u32,
    /// `lfu-decay-time`: minutes per point the counter loses while the key is not read.
    pub lfu_decay_minutes: u32,
}

impl Default for MemoryPolicy {
    fn default() -> Self {
        MemoryPolicy {
            limit_bytes: 0,
            policy: Policy::NoEviction,
            samples: 5,
            lfu_log_factor: 10,
            lfu_decay_minutes: 1,
        }
    }
}

/// The LFU clock: minutes, in 16 bits (wraps every ~45 days, as Redis's).
pub fn lfu_minutes(now_ms: u64) -> u16 {
    (now_ms / 60_000) as u16
}

/// The counter of an LFU `access` field after its decay up to `now_ms`: one point per
/// `decay_minutes` since the last decay (Redis's LFUDecrAndReturn).
pub fn lfu_decayed(access: u32, now_ms: u64, decay_minutes: u32) -> u8 {
    let last = (access >> 8) as u16;
    let counter = (access & 0xff) as u8;
    if decay_minutes == 0 {
        return counter;
    }
    let elapsed = lfu_minutes(now_ms).wrapping_sub(last) as u32;
    let periods = elapsed / decay_minutes;
    counter.saturating_sub(periods.min(255) as u8)
}

/// One access's increment of the counter: always below [`LFU_INIT_VAL`], then with
/// probability `1 / ((counter - LFU_INIT_VAL) * log_factor + 1)` (Redis's
/// LFULogIncr). `random` is uniform in `[0, 1)`.
pub fn lfu_log_incr(counter: u8, log_factor: u32, random: f64) -> u8 {
    if counter == u8::MAX {
        return counter;
    }
    let base = counter.saturating_sub(LFU_INIT_VAL) as f64;
    let p = 1.0 / (base * log_factor as f64 + 1.0);
    if random < p {
        counter + 1
    } else {
        counter
    }
}

/// An LFU `access` field: the decay time and the counter.
pub fn lfu_pack(now_ms: u64, counter: u8) -> u32 {
    (lfu_minutes(now_ms) as u32) << 8 | counter as u32
}

/// The LRU clock: milliseconds in 32 bits, wrapping every ~49 days. Redis keeps seconds in
/// 24 bits; milliseconds rank keys touched within the same second too.
pub fn lru_clock(now_ms: u64) -> u32 {
    now_ms as u32
}

/// Milliseconds since an LRU `access` stamp.
pub fn lru_idle_ms(access: u32, now_ms: u64) -> u64 {
    lru_clock(now_ms).wrapping_sub(access) as u64
}

/// A small, fast pseudo-random generator (xorshift64*) for sampling and LFU increments;
/// each database keeps its own, seeded once.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed | 1)
    }

    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in `[0, 1)`.
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Uniform in `[0, n)`; `n` must not be 0.
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_policy_round_trips_through_its_name() {
        for name in Policy::names() {
            let p = Policy::parse(name).unwrap();
            assert_eq!(p.name(), name);
            assert_eq!(Policy::parse(&name.to_uppercase()), Some(p));
        }
        assert_eq!(Policy::parse("allkeys-mru"), None);
        assert!(Policy::VolatileTtl.volatile_only());
        assert!(!Policy::AllKeysRandom.volatile_only());
        assert_eq!(Policy::VolatileFifo.tracking(), Tracking::Fifo);
        assert_eq!(Policy::AllKeysLfu.tracking(), Tracking::Lfu);
    }

    #[test]
    fn lfu_counter_grows_logarithmically() {
        // Redis's table for lfu-log-factor 10: about 100 hits reach 10, 1000 hits 18,
        // 100k hits 142; a million saturate near 255.
        let mut rng = Rng::new(7);
        let mut c = LFU_INIT_VAL;
        let mut at = Vec::new();
        for hits in 1..=1_000_000u32 {
            c = lfu_log_incr(c, 10, rng.next_f64());
            if [100, 1000, 100_000, 1_000_000].contains(&hits) {
                at.push(c);
            }
        }
        assert!((8..=14).contains(&at[0]), "{at:?}");
        assert!((15..=22).contains(&at[1]), "{at:?}");
        assert!((120..=160).contains(&at[2]), "{at:?}");
        assert!(at[3] >= 240, "{at:?}");
    }

    #[test]
    fn lfu_counter_decays_per_period() {
        let t0 = 10 * 60_000;
        let access = lfu_pack(t0, 20);
        assert_eq!(lfu_decayed(access, t0 + 59_999, 1), 20);
        assert_eq!(lfu_decayed(access, t0 + 3 * 60_000, 1), 17);
        assert_eq!(lfu_decayed(access, t0 + 3 * 60_000, 2), 19);
        assert_eq!(lfu_decayed(access, t0 + 300 * 60_000, 1), 0);
        assert_eq!(
            lfu_decayed(access, t0 + 300 * 60_000, 0),
            20,
            "decay-time 0: never"
        );
    }

    #[test]
    fn lru_idle_time_survives_the_clock_wrapping() {
        let before_wrap = u32::MAX as u64 - 10;
        let stamp = lru_clock(before_wrap);
        assert_eq!(lru_idle_ms(stamp, before_wrap + 100), 100);
    }
}
