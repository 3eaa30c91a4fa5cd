//! The cost of one cross-core hop: `Core::invoke_on` from core 0 to core 1 and back,
//! through the same mesh, gate and reply path the node uses, against the same call made
//! locally. Two executors, unpinned. Run: `cargo bench --bench hop`.

use criterion::{criterion_group, criterion_main, Criterion};
use glommio::channels::channel_mesh::MeshBuilder;
use glommio::{LocalExecutorBuilder, Placement};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};
use tessera::config::Config;
use tessera::server::core::{Core, NodeShared};
use tessera::server::mesh::{self, Mesh, MESH_CHANNEL_CAPACITY};

/// A request from the bench thread to core 0: run `iters` calls to `target`, batched
/// `depth` at a time, and send back the elapsed time.
struct Run {
    target: usize,
    iters: u64,
    depth: usize,
}

fn start_cores() -> (mpsc::Sender<Option<Run>>, mpsc::Receiver<Duration>) {
    let requests = MeshBuilder::full(2, MESH_CHANNEL_CAPACITY);
    let replies = MeshBuilder::full(2, MESH_CHANNEL_CAPACITY);
    let peers = Arc::new(Mutex::new(vec![None; 2]));
    let node = Arc::new(NodeShared::new(None, vec![None, None]));
    let (run_tx, run_rx) = mpsc::channel::<Option<Run>>();
    let (done_tx, done_rx) = mpsc::channel::<Duration>();
    let run_rx = Arc::new(Mutex::new(run_rx));
    for id in 0..2 {
        let (requests, replies, peers, node) = (
            requests.clone(),
            replies.clone(),
            peers.clone(),
            node.clone(),
        );
        let (run_rx, done_tx) = (run_rx.clone(), done_tx.clone());
        LocalExecutorBuilder::new(Placement::Unbound)
            .io_memory(1 << 20)
            .spawn(move || async move {
                let (rq_tx, rq_rx) = requests.join().await.expect("join");
                let (rp_tx, rp_rx) = replies.join().await.expect("join");
                peers.lock().unwrap()[id] = Some(rq_tx.peer_id());
                let peer_of_core: Vec<usize> = loop {
                    let ids = peers.lock().unwrap().clone();
                    if ids.iter().all(Option::is_some) {
                        break ids.into_iter().flatten().collect();
                    }
                    glommio::timer::sleep(Duration::from_millis(1)).await;
                };
                let config = Config {
                    cores: 2,
                    ..Config::default()
                };
                let core = Core::new(id, 2, config, node);
                core.set_mesh(Mesh::new(rq_tx, rp_tx, peer_of_core));
                mesh::spawn_receivers(core.clone(), rq_rx, rp_rx);
                if id == 1 {
                    // Serve core 0's calls until the process ends.
                    futures_lite::future::pending::<()>().await;
                }
                loop {
                    // Blocking here is fine: core 0 has nothing else to do between runs.
                    let next = run_rx.lock().unwrap().recv();
                    let Ok(Some(run)) = next else { return };
                    let start = Instant::now();
                    let mut left = run.iters;
                    while left > 0 {
                        let n = (run.depth as u64).min(left);
                        let mut pending = Vec::with_capacity(n as usize);
                        for _ in 0..n {
                            pending.push(core.start_on(run.target, None, |c| c.id).await);
                        }
                        for p in pending {
                            std::hint::black_box(p.wait().await);
                        }
                        left -= n;
                    }
                    let _ = done_tx.send(start.elapsed());
                }
            })
            .expect("spawn executor");
    }
    (run_tx, done_rx)
}

fn hop(c: &mut Criterion) {
    let (run, done) = start_cores();
    let mut g = c.benchmark_group("invoke_on");
    for (name, target, depth) in [
        ("local", 0, 1),
        ("other core", 1, 1),
        ("other core, 16 in flight", 1, 16),
    ] {
        g.bench_function(name, |b| {
            b.iter_custom(|iters| {
                run.send(Some(Run {
                    target,
                    iters,
                    depth,
                }))
                .expect("core 0 is running");
                done.recv().expect("core 0 answers")
            })
        });
    }
    g.finish();
    let _ = run.send(None);
}

criterion_group!(benches, hop);
criterion_main!(benches);
