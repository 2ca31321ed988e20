//! Rate-limit check cost: `TokenBucket::try_take` per call (`cargo bench --bench ratelimit`).
//!
//! `allowed` takes the compare-exchange path (rate and burst too high to ever refuse);
//! `refused` takes the load-only path (bucket empty, no refill). `2_threads` runs the allowed
//! path on two threads hammering one bucket, the worst case of two shards serving one org; its
//! figure is wall time per call on each thread.

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use ringmq::ratelimit::{monotonic_nanos, TokenBucket};
use std::time::{Duration, Instant};

fn try_take(c: &mut Criterion) {
    let mut group = c.benchmark_group("try_take");
    group.bench_function("clock_only", |b| b.iter(|| black_box(monotonic_nanos())));

    let open = TokenBucket::new(u32::MAX, u32::MAX);
    group.bench_function("allowed", |b| {
        b.iter(|| black_box(open.try_take(1, monotonic_nanos())))
    });

    let empty = TokenBucket::new(1, 1);
    let _ = empty.try_take(1, u64::MAX / 2);
    group.bench_function("refused", |b| {
        b.iter(|| black_box(empty.try_take(1, monotonic_nanos())))
    });

    let shared = TokenBucket::new(u32::MAX, u32::MAX);
    group.bench_function("allowed_2_threads", |b| {
        b.iter_custom(|iters| {
            let start = Instant::now();
            std::thread::scope(|scope| {
                for _ in 0..2 {
                    scope.spawn(|| {
                        for _ in 0..iters {
                            black_box(shared.try_take(1, monotonic_nanos()));
                        }
                    });
                }
            });
            start.elapsed()
        })
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(1));
    targets = try_take
}
criterion_main!(benches);
