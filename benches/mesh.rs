//! Mesh hand-off throughput between two shards (`cargo bench --bench mesh`): one thread sends
//! `u64` items in batches with one wake per batch, the other drains them in batches.

use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use ringmq_io::Mesh;

/// Items per batch, as the shard loop sends them.
const BATCH: usize = 256;

/// Queue capacity per ordered pair of shards.
const CAPACITY: usize = 4096;

fn hand_off(items: u64) -> Duration {
    let mesh = Mesh::<u64>::new(2, CAPACITY);
    let receiver_mesh = Arc::clone(&mesh);
    let receiver = std::thread::spawn(move || {
        let endpoint = receiver_mesh.endpoint(1);
        let mut out = Vec::with_capacity(BATCH);
        let mut received = 0u64;
        while received < items {
            out.clear();
            let count = endpoint.try_recv_batch(&mut out, BATCH);
            if count == 0 {
                std::hint::spin_loop();
            }
            received += count as u64;
        }
    });
    let endpoint = mesh.endpoint(0);
    let started = Instant::now();
    let mut sent = 0u64;
    while sent < items {
        let batch_end = (sent + BATCH as u64).min(items);
        while sent < batch_end {
            match endpoint.try_send(1, sent) {
                Ok(()) => sent += 1,
                // Full: backpressure, spin until the receiver drains.
                Err(_) => std::hint::spin_loop(),
            }
        }
        endpoint.wake(1);
    }
    let _ = receiver.join();
    started.elapsed()
}

fn mesh(c: &mut Criterion) {
    let mut group = c.benchmark_group("mesh_two_shards");
    group.throughput(Throughput::Elements(1));
    group.bench_function("hand_off_u64_batch256", |b| b.iter_custom(hand_off));
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(2));
    targets = mesh
}
criterion_main!(benches);
