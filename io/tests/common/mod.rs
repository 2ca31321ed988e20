//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::future::Future;
use std::rc::Rc;
use std::sync::Arc;

use ringmq_io::{spawn_shards, Mesh, MeshEndpoint, ShardConfig, ShardContext};

/// A test configuration with `shard_count` pinned shards.
pub fn config(shard_count: usize) -> ShardConfig {
    ShardConfig {
        shard_count,
        pin_cores: true,
        ring_entries: 256,
        thread_name_prefix: "test-shard".to_owned(),
    }
}

/// Runs `main` on `shard_count` shards and returns each shard's output, in shard order.
pub fn run_on_shards<F, Fut, T>(shard_count: usize, main: F) -> Vec<T>
where
    F: Fn(ShardContext) -> Fut + Send + Sync + 'static + Clone,
    Fut: Future<Output = T> + 'static,
    T: Send + 'static,
{
    spawn_shards(&config(shard_count), main)
        .expect("shards start")
        .into_iter()
        .map(|handle| handle.join().expect("shard thread panicked"))
        .collect()
}

/// Sends `0..total` from this shard to `peer` in batches of `batch`, waking once per batch,
/// while a second task on this shard receives `total` messages from `peer`; checks that every
/// message arrives exactly once and in order. Returns how many messages were received.
pub async fn exchange(
    endpoint: MeshEndpoint<u64>,
    peer: usize,
    total: u64,
    batch: usize,
    receive: bool,
) -> u64 {
    let endpoint = Rc::new(endpoint);
    let receiver = receive.then(|| {
        let endpoint = Rc::clone(&endpoint);
        monoio::spawn(async move { receive_in_order(&endpoint, peer, total, batch).await })
    });
    send_batched(&endpoint, peer, total, batch).await;
    match receiver {
        Some(receiver) => receiver.await,
        None => 0,
    }
}

/// Sends `0..total` to `peer`, waking it once per batch and waiting for space when full.
pub async fn send_batched(endpoint: &MeshEndpoint<u64>, peer: usize, total: u64, batch: usize) {
    let mut next = 0;
    while next < total {
        let batch_end = (next + batch as u64).min(total);
        while next < batch_end {
            match endpoint.try_send(peer, next) {
                Ok(()) => next += 1,
                Err(_) => {
                    endpoint.wake(peer);
                    endpoint.wait_for_space(peer).await;
                }
            }
        }
        endpoint.wake(peer);
    }
}

/// Receives `total` messages from `peer` and checks they are `0..total` in order.
pub async fn receive_in_order(
    endpoint: &MeshEndpoint<u64>,
    peer: usize,
    total: u64,
    batch: usize,
) -> u64 {
    let mut out = Vec::with_capacity(batch);
    let mut expected = 0;
    while expected < total {
        out.clear();
        endpoint.recv_batch(&mut out, batch).await;
        for &(from, value) in &out {
            assert_eq!(from, peer, "message from an unexpected shard");
            assert_eq!(value, expected, "message lost, duplicated or reordered");
            expected += 1;
        }
    }
    expected
}

/// Two shards exchanging `total` messages each way; returns what each received.
pub fn exchange_both_ways(total: u64, batch: usize, queue_capacity: usize) -> Vec<u64> {
    let mesh = Mesh::<u64>::new(2, queue_capacity);
    run_on_shards(2, move |context| {
        let mesh = Arc::clone(&mesh);
        async move {
            let peer = 1 - context.shard_id;
            exchange(mesh.endpoint(context.shard_id), peer, total, batch, true).await
        }
    })
}
