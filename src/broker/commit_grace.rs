//! `sync` durability's grace: a round of PUBACKs gives its messages' copies a moment to be
//! consumed before it asks for a sync (`ringmq_core::shard::commit`). Its end is checked at the
//! end of every round; this task ends one when the grace runs out on a shard no connection
//! wakes (an offline or slow subscriber, nothing else to read), so the PUBACK waits for one
//! grace and its sync, never for the next unrelated packet.

use std::rc::Rc;
use std::time::Instant;

use ringmq_io::monoio;

use super::local_notify::LocalStop;
use super::mailbox::ShardHandle;

/// Ends a round on `shard` at each `commit_grace_at`, until `stop`.
pub async fn grace_loop(shard: Rc<ShardHandle>, stop: Rc<LocalStop>) {
    loop {
        let Some(at) = shard.commit_grace_at.get() else {
            monoio::select! {
                _ = shard.commit_grace_armed.notified() => continue,
                _ = stop.wait() => return,
            }
        };
        let left = at.saturating_duration_since(Instant::now());
        monoio::select! {
            _ = monoio::time::sleep(left) => {}
            // An earlier grace was armed meanwhile.
            _ = shard.commit_grace_armed.notified() => continue,
            _ = stop.wait() => return,
        }
        shard.commit_grace_at.set(None);
        if shard.call(|s| s.flush(Instant::now())).await.is_none() {
            return;
        }
    }
}
