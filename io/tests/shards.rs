//! spawn_shards: one thread per shard, pinning, driver reporting.

mod common;

use std::collections::HashSet;

use ringmq_io::{runtime::allowed_cores, spawn_shards};

#[test]
fn each_shard_runs_on_its_own_thread_and_returns_its_id() {
    let outputs = common::run_on_shards(2, |context| async move {
        let thread = std::thread::current();
        (
            context.shard_id,
            context.shard_count,
            format!("{:?}", thread.id()),
            thread.name().map(str::to_owned),
        )
    });
    assert_eq!(outputs.len(), 2);
    let threads: HashSet<_> = outputs.iter().map(|output| output.2.clone()).collect();
    assert_eq!(threads.len(), 2, "shards share a thread");
    for (index, (shard_id, shard_count, _, name)) in outputs.into_iter().enumerate() {
        assert_eq!(shard_id, index);
        assert_eq!(shard_count, 2);
        assert_eq!(
            name.as_deref(),
            Some(format!("test-shard-{index}").as_str())
        );
    }
}

#[test]
fn more_shards_than_cores_pin_round_robin() {
    let cores = allowed_cores();
    let shard_count = cores.len() * 2 + 1;
    let outputs = common::run_on_shards(shard_count, |context| async move {
        (context.shard_id, context.core)
    });
    for (shard_id, core) in outputs {
        assert_eq!(core, Some(cores[shard_id % cores.len()]));
    }
}

#[test]
fn unpinned_shards_report_no_core() {
    let config = ringmq_io::ShardConfig {
        pin_cores: false,
        ..common::config(2)
    };
    let handles = spawn_shards(&config, |context| async move { context.core }).unwrap();
    for handle in handles {
        assert_eq!(handle.join().unwrap(), None);
    }
}

#[test]
fn shards_have_timers_and_a_driver() {
    let outputs = common::run_on_shards(2, |context| async move {
        let start = std::time::Instant::now();
        monoio::time::sleep(std::time::Duration::from_millis(10)).await;
        (context.driver, start.elapsed())
    });
    for (driver, elapsed) in outputs {
        // Without RINGMQ_DRIVER either driver is acceptable: it depends on the kernel.
        println!("driver: {driver}");
        assert!(elapsed >= std::time::Duration::from_millis(10));
    }
}
