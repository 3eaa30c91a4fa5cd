//! What each connection sends: the command mix, the key space and its distribution, the
//! value sizes. [`Prepared`] is built once per run and shared; each connection owns a
//! [`RequestGen`] with its own seeded RNG, so a run's request stream is reproducible.

use std::sync::Arc;

use crate::encode::{Encoded, Template};
use crate::zipf::Zipf;

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum KeyDist {
    Uniform,
    /// Key `k` (rank `k + 1`) is drawn with probability proportional to `(k + 1)^-exponent`.
    Zipf {
        exponent: f64,
    },
    /// Each connection walks the key space in order from its own starting point.
    Sequential,
}

/// Value sizes, uniform in `min_bytes..=max_bytes`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ValueSize {
    pub min_bytes: usize,
    pub max_bytes: usize,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Weighted {
    pub weight: u32,
    pub template: Template,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Workload {
    pub mix: Vec<Weighted>,
    /// Keys are numbered `0..keys`.
    pub keys: u64,
    pub key_prefix: String,
    pub dist: KeyDist,
    pub value: ValueSize,
    /// Seconds to live of the keys `--populate` and `--set-on-miss` write (the mix carries
    /// its own EX).
    pub ttl_s: Option<u64>,
    /// Cache-aside load (`--set-on-miss`): a GET answered nil is followed on its connection
    /// by `SET key value [EX ttl]` for the same key, sent as that connection's next request.
    pub set_on_miss: bool,
}

impl Workload {
    /// `SET key value [EX ttl]` and `GET key` in the ratio `set:get`.
    pub fn set_get(set: u32, get: u32, ttl_s: Option<u64>) -> Vec<Weighted> {
        let mut mix = Vec::new();
        if set > 0 {
            mix.push(Weighted {
                weight: set,
                template: set_template(ttl_s),
            });
        }
        if get > 0 {
            mix.push(Weighted {
                weight: get,
                template: Template::parse("GET __key__").expect("valid"),
            });
        }
        mix
    }

    /// A SET:GET workload over `keys` uniform keys with fixed-size values.
    pub fn simple(set: u32, get: u32, keys: u64, value_bytes: usize) -> Workload {
        Workload {
            mix: Self::set_get(set, get, None),
            keys,
            key_prefix: "key:".into(),
            dist: KeyDist::Uniform,
            value: ValueSize {
                min_bytes: value_bytes,
                max_bytes: value_bytes,
            },
            ttl_s: None,
            set_on_miss: false,
        }
    }

    /// `--set-on-miss`: GETs of `keys` uniform keys, each miss followed by a SET of a
    /// `value_bytes` value.
    pub fn cache_aside(keys: u64, value_bytes: usize) -> Workload {
        Workload {
            set_on_miss: true,
            ..Workload::simple(0, 1, keys, value_bytes)
        }
    }

    /// The workload `--populate` runs first: every key SET once, in order.
    pub fn populate(&self) -> Workload {
        Workload {
            mix: vec![Weighted {
                weight: 1,
                template: set_template(self.ttl_s),
            }],
            dist: KeyDist::Sequential,
            set_on_miss: false,
            ..self.clone()
        }
    }
}

fn set_template(ttl_s: Option<u64>) -> Template {
    let text = match ttl_s {
        Some(t) => format!("SET __key__ __data__ EX {t}"),
        None => "SET __key__ __data__".into(),
    };
    Template::parse(&text).expect("valid")
}

/// The SET `--set-on-miss` sends after a GET answered nil.
#[derive(Debug)]
struct OnMiss {
    /// Statistics row of the GETs whose misses are answered.
    get_row: u16,
    /// Statistics row of the SETs.
    set_row: u16,
    /// `SET __key__ __data__ [EX ttl]`; its value is given on every write.
    set: Encoded,
}

/// The read-only part of a workload, shared by every connection of a run.
#[derive(Debug)]
pub struct Prepared {
    encoded: Vec<Encoded>,
    on_miss: Option<OnMiss>,
    /// Template index → row in the per-command statistics (templates may share a name).
    stat_of: Vec<u16>,
    /// Running sums of the weights, for picking a template.
    cumulative: Vec<u32>,
    /// Printable bytes; a value of length n is the first n.
    value_bytes: Box<[u8]>,
    value: ValueSize,
    /// Statistics rows: command names, distinct, in mix order.
    pub names: Vec<String>,
    pub keys: u64,
    pub dist: KeyDist,
}

impl Prepared {
    pub fn new(w: &Workload, seed: u64) -> Arc<Prepared> {
        let mut rng = fastrand::Rng::with_seed(seed ^ 0x5eed_0f7a_1e00);
        let value_bytes: Box<[u8]> = (0..w.value.max_bytes)
            .map(|_| rng.alphanumeric() as u8)
            .collect();
        let fixed = (w.value.min_bytes == w.value.max_bytes).then_some(&value_bytes[..]);
        let mut names: Vec<String> = Vec::new();
        let mut stat_of = Vec::new();
        let mut cumulative = Vec::new();
        let mut sum = 0u32;
        for m in &w.mix {
            let name = m.template.name();
            let row = names.iter().position(|n| *n == name).unwrap_or_else(|| {
                names.push(name);
                names.len() - 1
            });
            stat_of.push(row as u16);
            sum = sum.checked_add(m.weight).expect("the CLI bounds weights");
            cumulative.push(sum);
        }
        assert!(sum > 0, "a workload needs a command with weight > 0");
        let on_miss = w.set_on_miss.then(|| {
            let get_row = names
                .iter()
                .position(|n| n == "GET")
                .expect("--set-on-miss needs GET in the mix") as u16;
            let set_row = names.iter().position(|n| n == "SET").unwrap_or_else(|| {
                names.push("SET".into());
                names.len() - 1
            }) as u16;
            let set = Encoded::new(&set_template(w.ttl_s), w.key_prefix.as_bytes(), None);
            OnMiss {
                get_row,
                set_row,
                set,
            }
        });
        let encoded = w
            .mix
            .iter()
            .map(|m| Encoded::new(&m.template, w.key_prefix.as_bytes(), fixed))
            .collect();
        Arc::new(Prepared {
            encoded,
            on_miss,
            stat_of,
            cumulative,
            value_bytes,
            value: w.value,
            names,
            keys: w.keys,
            dist: w.dist,
        })
    }
}

/// Key numbers for one connection.
#[derive(Debug, Clone)]
pub enum KeySampler {
    Uniform { keys: u64 },
    Zipf(Zipf),
    Sequential { next: u64, keys: u64 },
}

impl KeySampler {
    /// Connection `conn` of `conns`: sequential walks start evenly spread over the space.
    pub fn new(dist: KeyDist, keys: u64, conn: usize, conns: usize) -> KeySampler {
        match dist {
            KeyDist::Uniform => KeySampler::Uniform { keys },
            KeyDist::Zipf { exponent } => KeySampler::Zipf(Zipf::new(keys, exponent)),
            KeyDist::Sequential => KeySampler::Sequential {
                next: start_of(conn, conns, keys),
                keys,
            },
        }
    }

    fn next(&mut self, rng: &mut fastrand::Rng) -> u64 {
        match self {
            KeySampler::Uniform { keys } => rng.u64(..*keys),
            KeySampler::Zipf(z) => z.sample(|| rng.f64()) - 1,
            KeySampler::Sequential { next, keys } => {
                let k = *next;
                *next = if k + 1 == *keys { 0 } else { k + 1 };
                k
            }
        }
    }
}

/// Where connection `conn`'s share of `keys` starts when the space is split in `conns`
/// contiguous parts; part `conn` is `start_of(conn)..start_of(conn + 1)`.
pub fn start_of(conn: usize, conns: usize, keys: u64) -> u64 {
    (keys as u128 * conn as u128 / conns as u128) as u64
}

/// One connection's request stream.
#[derive(Debug)]
pub struct RequestGen {
    shared: Arc<Prepared>,
    keys: KeySampler,
    rng: fastrand::Rng,
}

impl RequestGen {
    pub fn new(shared: Arc<Prepared>, keys: KeySampler, seed: u64) -> RequestGen {
        RequestGen {
            shared,
            keys,
            rng: fastrand::Rng::with_seed(seed),
        }
    }

    /// Appends the next request to `out` and returns its statistics row and key number.
    pub fn write_next(&mut self, out: &mut Vec<u8>) -> (u16, u64) {
        let p = &*self.shared;
        let t = if p.cumulative.len() == 1 {
            0
        } else {
            let r = self.rng.u32(..*p.cumulative.last().expect("non-empty"));
            p.cumulative.partition_point(|&c| c <= r)
        };
        let key = self.keys.next(&mut self.rng);
        let len = if p.value.min_bytes == p.value.max_bytes {
            p.value.max_bytes
        } else {
            self.rng.usize(p.value.min_bytes..=p.value.max_bytes)
        };
        p.encoded[t].write(key, &p.value_bytes[..len], out);
        (p.stat_of[t], key)
    }

    /// Whether this stream answers GET misses with SETs (`--set-on-miss`).
    pub fn has_set_on_miss(&self) -> bool {
        self.shared.on_miss.is_some()
    }

    /// Whether a nil reply to a request of row `row` is a miss to answer with
    /// [`RequestGen::write_miss_set`] (`--set-on-miss`).
    #[inline]
    pub fn sets_on_miss(&self, row: u16) -> bool {
        self.shared
            .on_miss
            .as_ref()
            .is_some_and(|m| m.get_row == row)
    }

    /// Appends `SET key value [EX ttl]` for a GET of `key` that missed and returns its
    /// statistics row. The value's size depends only on the key (a key always gets the
    /// same size, and the RNG is not touched), so the GET key stream is the same whatever
    /// the server answers.
    pub fn write_miss_set(&mut self, key: u64, out: &mut Vec<u8>) -> u16 {
        let p = &*self.shared;
        let m = p
            .on_miss
            .as_ref()
            .expect("write_miss_set needs --set-on-miss");
        let span = (p.value.max_bytes - p.value.min_bytes) as u64 + 1;
        let len = p.value.min_bytes + (mix64(key) % span) as usize;
        m.set.write(key, &p.value_bytes[..len], out);
        m.set_row
    }
}

/// SplitMix64's finaliser: spreads a key number over 64 bits.
fn mix64(mut x: u64) -> u64 {
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tessera::resp::{Decoded, Limits, RequestDecoder};

    fn decode_all(bytes: &[u8]) -> Vec<Vec<Vec<u8>>> {
        let limits = Limits {
            max_bulk_bytes: 1 << 20,
            max_multibulk_len: 64,
            unauthenticated: false,
        };
        let mut d = RequestDecoder::default();
        let mut at = 0;
        let mut out = Vec::new();
        while at < bytes.len() {
            match d.decode(&bytes[at..], &limits) {
                Decoded::Command { consumed, .. } => {
                    let b = &bytes[at..];
                    out.push(d.args().iter().map(|r| b[r.clone()].to_vec()).collect());
                    at += consumed;
                }
                other => panic!("{other:?}"),
            }
        }
        out
    }

    #[test]
    fn the_mix_follows_its_weights() {
        let w = Workload::simple(1, 9, 1000, 8);
        let p = Prepared::new(&w, 1);
        assert_eq!(p.names, ["SET", "GET"]);
        let mut g = RequestGen::new(p.clone(), KeySampler::new(w.dist, w.keys, 0, 1), 3);
        let mut out = Vec::new();
        let mut rows = [0u32; 2];
        for _ in 0..100_000 {
            rows[g.write_next(&mut out).0 as usize] += 1;
        }
        let sets = rows[0] as f64 / 100_000.0;
        assert!((sets - 0.1).abs() < 0.005, "SET share {sets}");
        let cmds = decode_all(&out);
        assert_eq!(cmds.len(), 100_000);
        for c in &cmds {
            assert!(c[0] == b"SET" && c.len() == 3 && c[2].len() == 8 || c[0] == b"GET");
            let n: u64 = std::str::from_utf8(&c[1][4..]).unwrap().parse().unwrap();
            assert!(n < 1000);
        }
    }

    #[test]
    fn value_sizes_cover_the_range() {
        let mut w = Workload::simple(1, 0, 10, 0);
        w.value = ValueSize {
            min_bytes: 3,
            max_bytes: 6,
        };
        let p = Prepared::new(&w, 1);
        let mut g = RequestGen::new(p, KeySampler::new(w.dist, w.keys, 0, 1), 3);
        let mut out = Vec::new();
        for _ in 0..1000 {
            g.write_next(&mut out);
        }
        let mut seen = [false; 7];
        for c in decode_all(&out) {
            seen[c[2].len()] = true;
        }
        assert_eq!(seen, [false, false, false, true, true, true, true]);
    }

    #[test]
    fn sequential_connections_split_the_space_and_populate_covers_it() {
        let w = Workload {
            ttl_s: Some(60),
            ..Workload::simple(1, 1, 10, 4)
        };
        let pop = w.populate();
        let p = Prepared::new(&pop, 1);
        let mut seen = Vec::new();
        for conn in 0..3 {
            let (from, to) = (start_of(conn, 3, 10), start_of(conn + 1, 3, 10));
            let s = KeySampler::new(KeyDist::Sequential, 10, conn, 3);
            let mut g = RequestGen::new(p.clone(), s, conn as u64);
            let mut out = Vec::new();
            for _ in from..to {
                g.write_next(&mut out);
            }
            for c in decode_all(&out) {
                assert_eq!(c[3..], [b"EX".to_vec(), b"60".to_vec()]);
                seen.push(String::from_utf8(c[1].clone()).unwrap());
            }
        }
        let want: Vec<String> = (0..10).map(|k| format!("key:{k:012}")).collect();
        assert_eq!(seen, want);
    }

    #[test]
    fn set_on_miss_adds_a_set_row_and_writes_the_missed_key() {
        let mut w = Workload::cache_aside(1000, 0);
        w.value = ValueSize {
            min_bytes: 4,
            max_bytes: 9,
        };
        w.ttl_s = Some(30);
        let p = Prepared::new(&w, 1);
        assert_eq!(p.names, ["GET", "SET"]);
        let mut g = RequestGen::new(p.clone(), KeySampler::new(w.dist, w.keys, 0, 1), 3);
        let mut twin = RequestGen::new(p, KeySampler::new(w.dist, w.keys, 0, 1), 3);
        assert!(g.sets_on_miss(0) && !g.sets_on_miss(1));
        let mut out = Vec::new();
        let (row, key) = g.write_next(&mut out);
        assert_eq!(row, 0);
        assert_eq!(g.write_miss_set(key, &mut out), 1);
        assert_eq!(g.write_miss_set(key, &mut out), 1);
        let cmds = decode_all(&out);
        let name = format!("key:{key:012}").into_bytes();
        assert_eq!(cmds[0], [b"GET".to_vec(), name.clone()]);
        assert_eq!(cmds[1][..2], [b"SET".to_vec(), name]);
        assert_eq!(cmds[1][3..], [b"EX".to_vec(), b"30".to_vec()]);
        assert!((4..=9).contains(&cmds[1][2].len()));
        assert_eq!(cmds[1], cmds[2], "a key always gets the same value");
        // The SETs draw nothing from the RNG: the GET stream is the same with or without.
        let (mut a, mut b) = (Vec::new(), Vec::new());
        twin.write_next(&mut b);
        for _ in 0..100 {
            let (_, k) = g.write_next(&mut a);
            g.write_miss_set(k, &mut Vec::new());
            twin.write_next(&mut b);
        }
        assert_eq!(decode_all(&a), decode_all(&b)[1..]);
        // The populate pass of such a workload is plain SETs.
        assert!(!w.populate().set_on_miss);
    }

    #[test]
    fn zipf_keys_favour_low_numbers() {
        let mut s = KeySampler::new(KeyDist::Zipf { exponent: 1.0 }, 100, 0, 1);
        let mut rng = fastrand::Rng::with_seed(5);
        let zeros = (0..10_000).filter(|_| s.next(&mut rng) == 0).count();
        // P(rank 1) = 1 / H(100) ≈ 0.193.
        assert!((1_700..2_150).contains(&zeros), "{zeros}");
    }
}
