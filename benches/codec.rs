//! Micro-benchmarks of the hot path pieces: RESP decode and encode, slot hashing, and shard
//! GET/SET. Run: `cargo bench --bench codec`.

use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use tessera::resp::{Decoded, Limits, Out, Protocol, RequestDecoder};
use tessera_shards::ops::string as op;
use tessera_shards::Shard;

const LIMITS: Limits = Limits {
    max_bulk_bytes: 512 << 20,
    max_multibulk_len: 1 << 24,
    unauthenticated: false,
};

fn pipeline(n: usize) -> Vec<u8> {
    let mut buf = Vec::new();
    for i in 0..n {
        let key = format!("key:{i:08}");
        buf.extend_from_slice(
            format!("*3\r\n$3\r\nSET\r\n${}\r\n{key}\r\n$32\r\n", key.len()).as_bytes(),
        );
        buf.extend_from_slice(&[b'v'; 32]);
        buf.extend_from_slice(b"\r\n");
    }
    buf
}

fn decode(c: &mut Criterion) {
    let buf = pipeline(16);
    let mut g = c.benchmark_group("resp");
    g.throughput(Throughput::Elements(16));
    g.bench_function("decode 16 SETs", |b| {
        let mut dec = RequestDecoder::new();
        b.iter(|| {
            let mut pos = 0;
            while let Decoded::Command { consumed, .. } = dec.decode(&buf[pos..], &LIMITS) {
                black_box(dec.args());
                pos += consumed;
            }
        })
    });
    g.bench_function("encode 16 bulk replies", |b| {
        let mut out = Vec::with_capacity(4096);
        let value = [b'v'; 32];
        b.iter(|| {
            out.clear();
            let mut o = Out::new(&mut out, Protocol::Resp2);
            for _ in 0..16 {
                o.bulk(black_box(&value));
            }
        })
    });
    g.finish();
}

fn hashing(c: &mut Criterion) {
    let keys: Vec<String> = (0..1024)
        .map(|i| format!("user:{i}:{{tag}}:session"))
        .collect();
    c.bench_function("slot of 1024 keys", |b| {
        b.iter(|| {
            keys.iter()
                .map(|k| tessera::slot::key_slot(k.as_bytes()) as u64)
                .sum::<u64>()
        })
    });
}

fn shard(c: &mut Criterion) {
    let mut shard = Shard::new(1);
    let keys: Vec<String> = (0..100_000).map(|i| format!("key:{i:08}")).collect();
    for k in &keys {
        op::set(
            shard.db(0),
            k.as_bytes(),
            &[b'v'; 32],
            Default::default(),
            0,
        )
        .unwrap();
    }
    let mut i = 0usize;
    c.bench_function("shard GET (100k keys)", |b| {
        b.iter(|| {
            i = (i + 7919) % keys.len();
            black_box(
                op::get(shard.db(0), keys[i].as_bytes(), 0)
                    .unwrap()
                    .is_some(),
            )
        })
    });
    c.bench_function("shard SET (100k keys)", |b| {
        b.iter(|| {
            i = (i + 7919) % keys.len();
            op::set(
                shard.db(0),
                keys[i].as_bytes(),
                &[b'w'; 32],
                Default::default(),
                0,
            )
            .unwrap();
        })
    });
}

criterion_group!(benches, decode, hashing, shard);
criterion_main!(benches);
