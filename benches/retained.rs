//! Retained-message lookup for a wildcard SUBSCRIBE (`cargo bench --bench retained`).

use std::time::Duration;

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use ringmq_router::RetainedStore;

/// Retained topics `site/{s}/dev/{d}/temp` (1000 sites × 100 devices).
fn store() -> RetainedStore<Bytes> {
    let payload = Bytes::from_static(b"21.5");
    let mut store = RetainedStore::new();
    for site in 0..1000 {
        for device in 0..100 {
            store.insert(&format!("site/{site}/dev/{device}/temp"), payload.clone());
        }
    }
    store
}

fn lookups(c: &mut Criterion) {
    let store = store();
    let mut group = c.benchmark_group("retained_100k");
    for (name, filter, expected) in [
        ("exact", "site/500/dev/50/temp", 1usize),
        ("one_site_hash", "site/500/#", 100),
        ("one_device_all_sites_plus", "site/+/dev/50/temp", 1000),
        ("everything_hash", "#", 100_000),
    ] {
        group.throughput(Throughput::Elements(expected as u64));
        group.bench_function(name, |b| {
            b.iter(|| {
                let mut count = 0usize;
                store.for_each_match(std::hint::black_box(filter), |_, _| count += 1);
                assert_eq!(count, expected);
            })
        });
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(1));
    targets = lookups
}
criterion_main!(benches);
