//! The mesh between real shards: exchange, backpressure, wait_for_space, throughput.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ringmq_io::Mesh;

#[test]
fn two_shards_exchange_a_million_messages_each_way() {
    let received = common::exchange_both_ways(1_000_000, 256, 1024);
    assert_eq!(received, vec![1_000_000, 1_000_000]);
}

#[test]
fn tiny_queues_still_deliver_everything_in_order() {
    // Capacity below the batch size: senders hit a full queue constantly.
    let received = common::exchange_both_ways(100_000, 64, 4);
    assert_eq!(received, vec![100_000, 100_000]);
}

#[test]
fn one_slot_queues_and_single_item_batches_never_lose_a_wake() {
    // Every message parks one side or the other: the harshest case for lost wake-ups.
    let received = common::exchange_both_ways(20_000, 1, 1);
    assert_eq!(received, vec![20_000, 20_000]);
}

#[test]
fn wait_for_space_resolves_after_the_receiver_drains() {
    let mesh = Mesh::<u64>::new(2, 4);
    let drained = Arc::new(AtomicBool::new(false));
    let outputs = common::run_on_shards(2, move |context| {
        let endpoint = mesh.endpoint(context.shard_id);
        let drained = Arc::clone(&drained);
        async move {
            if context.shard_id == 0 {
                for item in 0..4 {
                    endpoint.try_send(1, item).unwrap();
                }
                assert_eq!(
                    endpoint.try_send(1, 4),
                    Err(4),
                    "a full queue hands the item back"
                );
                monoio::time::timeout(Duration::from_secs(10), endpoint.wait_for_space(1))
                    .await
                    .expect("wait_for_space never resolved");
                assert!(drained.load(Ordering::SeqCst), "resolved before the drain");
                endpoint.try_send(1, 4).unwrap();
                endpoint.wake(1);
                0
            } else {
                // Let the sender park first.
                monoio::time::sleep(Duration::from_millis(50)).await;
                drained.store(true, Ordering::SeqCst);
                common::receive_in_order(&endpoint, 0, 5, 16).await
            }
        }
    });
    assert_eq!(outputs, vec![0, 5]);
}

/// Mesh hand-off throughput between two shards, batched with one wake per batch.
/// Run: `cargo test -p ringmq-io --release --test mesh -- --ignored --nocapture`.
#[test]
#[ignore = "micro benchmark; run in release with --nocapture"]
fn mesh_throughput() {
    const TOTAL: u64 = 20_000_000;
    for (batch, capacity) in [(64, 1024), (256, 1024), (256, 4096)] {
        let mesh = Mesh::<u64>::new(2, capacity);
        let start = Instant::now();
        let received = common::run_on_shards(2, move |context| {
            let mesh = Arc::clone(&mesh);
            async move {
                let endpoint = mesh.endpoint(context.shard_id);
                if context.shard_id == 0 {
                    common::send_batched(&endpoint, 1, TOTAL, batch).await;
                    0
                } else {
                    common::receive_in_order(&endpoint, 0, TOTAL, batch).await
                }
            }
        });
        let elapsed = start.elapsed();
        assert_eq!(received[1], TOTAL);
        println!(
            "one way, batch {batch}, capacity {capacity}: {:.1} M msg/s",
            TOTAL as f64 / elapsed.as_secs_f64() / 1e6
        );

        let start = Instant::now();
        let received = common::exchange_both_ways(TOTAL / 2, batch, capacity);
        let elapsed = start.elapsed();
        assert_eq!(received, vec![TOTAL / 2, TOTAL / 2]);
        println!(
            "both ways, batch {batch}, capacity {capacity}: {:.1} M msg/s total",
            TOTAL as f64 / elapsed.as_secs_f64() / 1e6
        );
    }
}
