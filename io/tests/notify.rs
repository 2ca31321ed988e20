//! CrossNotify waking real parked shards from other threads.

mod common;

use std::sync::Arc;
use std::time::Duration;

use ringmq_io::CrossNotify;

#[test]
fn a_parked_shard_is_woken_from_another_thread() {
    let notify = Arc::new(CrossNotify::new());
    let notifier = {
        let notify = Arc::clone(&notify);
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(30));
            notify.notify();
        })
    };
    let outputs = common::run_on_shards(1, move |_| {
        let notify = Arc::clone(&notify);
        async move {
            monoio::time::timeout(Duration::from_secs(10), notify.notified())
                .await
                .is_ok()
        }
    });
    notifier.join().unwrap();
    assert_eq!(outputs, vec![true]);
}

#[test]
fn notify_before_notified_is_not_lost_and_many_coalesce() {
    let notify = Arc::new(CrossNotify::new());
    let notifier = Arc::clone(&notify);
    std::thread::spawn(move || {
        for _ in 0..1000 {
            notifier.notify();
        }
    })
    .join()
    .unwrap();
    let outputs = common::run_on_shards(1, move |_| {
        let notify = Arc::clone(&notify);
        async move {
            let first = monoio::time::timeout(Duration::from_millis(100), notify.notified()).await;
            let second = monoio::time::timeout(Duration::from_millis(30), notify.notified()).await;
            (first.is_ok(), second.is_ok())
        }
    });
    assert_eq!(outputs, vec![(true, false)]);
}
