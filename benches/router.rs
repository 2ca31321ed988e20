//! Router matching with 1M subscriptions (`cargo bench --bench router`): exact filters, `+`
//! and `#` wildcards mixed in, the replicated shard index, and shared-group routing.
//!
//! Each structure is built once per group (building 1M filters takes seconds) and matched
//! against topics that hit and miss.

use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use ringmq_router::{ShardIndex, SharedIndex, SubscriptionTrie};

/// Subscriptions in each structure.
const SUBSCRIPTIONS: u32 = 1_000_000;

/// Exact filters `site/{i / 1000}/dev/{i}/temp`.
fn exact_filter(i: u32) -> String {
    format!("site/{}/dev/{}/temp", i / 1000, i)
}

fn trie(wildcards_every: u32, wildcard: impl Fn(u32) -> String) -> SubscriptionTrie<u32, u8> {
    let mut trie = SubscriptionTrie::new();
    for i in 0..SUBSCRIPTIONS {
        let filter = if wildcards_every > 0 && i % wildcards_every == 0 {
            wildcard(i)
        } else {
            exact_filter(i)
        };
        trie.insert(&filter, i, 1);
    }
    trie
}

fn count_matches(trie: &SubscriptionTrie<u32, u8>, topic: &str) -> usize {
    let mut count = 0;
    trie.for_each_match(topic, |_, _| count += 1);
    count
}

fn subscription_trie(c: &mut Criterion) {
    let mut group = c.benchmark_group("trie_1M");
    group.throughput(Throughput::Elements(1));
    let exact = trie(0, |_| String::new());
    group.bench_function("exact_hit", |b| {
        b.iter(|| count_matches(&exact, std::hint::black_box("site/123/dev/123456/temp")))
    });
    group.bench_function("exact_miss", |b| {
        b.iter(|| count_matches(&exact, std::hint::black_box("site/123/dev/999999999/temp")))
    });
    drop(exact);
    // 1% of the subscriptions are `site/+/dev/{i}/temp`.
    let plus = trie(100, |i| format!("site/+/dev/{i}/temp"));
    group.bench_function("plus_1pct_hit", |b| {
        b.iter(|| count_matches(&plus, std::hint::black_box("site/777/dev/700/temp")))
    });
    group.bench_function("plus_1pct_exact_hit", |b| {
        b.iter(|| count_matches(&plus, std::hint::black_box("site/123/dev/123457/temp")))
    });
    drop(plus);
    // 0.1% are `site/{i / 1000}/#`.
    let hash = trie(1000, |i| format!("site/{}/#", i / 1000));
    group.bench_function("hash_0.1pct_hit", |b| {
        b.iter(|| count_matches(&hash, std::hint::black_box("site/123/dev/123456/temp")))
    });
    drop(hash);
    group.finish();
}

fn shard_index(c: &mut Criterion) {
    let mut group = c.benchmark_group("shard_index_1M");
    group.throughput(Throughput::Elements(1));
    let mut index = ShardIndex::new();
    for i in 0..SUBSCRIPTIONS {
        let filter = if i % 100 == 0 {
            format!("site/+/dev/{i}/temp")
        } else {
            exact_filter(i)
        };
        index.add(&filter, (i % 8) as u16);
    }
    group.bench_function("matching_shards_hit", |b| {
        b.iter(|| index.matching_shards(std::hint::black_box("site/123/dev/123457/temp")))
    });
    group.bench_function("matching_shards_miss", |b| {
        b.iter(|| index.matching_shards(std::hint::black_box("other/1/dev/2/temp")))
    });
    group.finish();
}

fn shared_groups(c: &mut Criterion) {
    let mut group = c.benchmark_group("shared_index");
    group.throughput(Throughput::Elements(1));
    // 100k groups on exact filters plus 1k groups on `+` filters, members on 4 shards.
    let mut index = SharedIndex::new();
    for i in 0..100_000u32 {
        let filter = exact_filter(i);
        for shard in 0..4u16 {
            index.add_member(&format!("g{}", i % 10), &filter, shard);
        }
    }
    for i in 0..1_000u32 {
        index.add_member("wild", &format!("site/+/dev/{i}/temp"), (i % 4) as u16);
    }
    group.bench_function("route_exact", |b| {
        b.iter(|| {
            let mut picked = 0u32;
            index.route(
                std::hint::black_box("site/12/dev/12345/temp"),
                |_, _, shard| picked += u32::from(shard) + 1,
            );
            picked
        })
    });
    group.bench_function("route_exact_and_plus", |b| {
        b.iter(|| {
            let mut picked = 0u32;
            index.route(
                std::hint::black_box("site/0/dev/500/temp"),
                |_, _, shard| picked += u32::from(shard) + 1,
            );
            picked
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
    targets = subscription_trie, shard_index, shared_groups
}
criterion_main!(benches);
