//! What a shard's tasks read without asking its loop: its id, settings and rules, a few
//! counters, its snapshot, and how full its mesh lanes are. The loop and the tasks share it.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::Arc;

use ringmq_core::shard::ShardSettings;

use super::control::ControlHandle;
use super::local_notify::LocalNotify;
use super::stats::ShardStats;
use crate::control::snapshot::Snapshot;
use crate::session::Rules;

/// The facts of one shard.
pub struct ShardFacts {
    /// This shard's id.
    pub id: u16,
    /// Loop settings.
    pub settings: ShardSettings,
    /// Protocol rules.
    pub rules: Rc<Rules>,
    /// Live MQTT connection tasks (for `connections_max` and the shutdown drain).
    pub live_connections: Cell<usize>,
    /// Open HTTP connections (streams and MQTT over WebSocket included).
    pub http_connections: Cell<usize>,
    /// Set once shutdown begins.
    pub shutting_down: Cell<bool>,
    /// The shard's counters.
    pub stats: Arc<ShardStats>,
    /// The control plane (absent in unit tests).
    pub control: Option<Arc<ControlHandle>>,
    /// The control-plane snapshot the shard has in force (swapped by the loop).
    snapshot: RefCell<Arc<Snapshot>>,
    /// Mesh messages waiting for full lanes, as of the last flush.
    pub backlog: Cell<usize>,
    /// Woken when the mesh backlog drains, to resume reading publishers.
    pub backlog_drained: LocalNotify,
    /// `sync` durability: acknowledgements wait for the log (the journal task writes now).
    pub commit_wanted: LocalNotify,
    /// The journal task waits for a batch: the round that next wants a commit hands one over.
    pub journal_ready: Cell<bool>,
    /// A batch of records the shard handed to the journal task, with its number.
    pub journal_batch: Cell<Option<(Vec<u8>, u64)>>,
    /// The journal task's written buffer, kept for the next hand-over to fill.
    pub journal_spare: Cell<Vec<u8>>,
    /// `sync`: when the grace task ends a round next (the earliest grace of a consumable
    /// commit, [`ringmq_core::shard::Shard::commit_deadline`]).
    pub commit_grace_at: Cell<Option<std::time::Instant>>,
    /// Wakes the grace task for an earlier `commit_grace_at`.
    pub commit_grace_armed: LocalNotify,
    /// The bridge to the other nodes of a cluster (`None`: one node).
    pub cluster: Option<Arc<super::cluster::ClusterLink>>,
    /// This shard's handles on the broker-wide per-org rate buckets and quota counters: the
    /// shared maps are locked only on a shard's first request of an org, never per request.
    pub(super) org_counters: RefCell<ahash::AHashMap<u32, OrgCounters>>,
}

/// One org's shared counters, as a shard holds them (the atomics are shared, not copied).
#[derive(Clone, Debug)]
pub(super) struct OrgCounters {
    /// The org's token bucket (its limits are changed in place by the control plane).
    pub bucket: Arc<crate::ratelimit::TokenBucket>,
    /// The org's monthly REST quota counter.
    pub quota: Arc<super::front_door::Quota>,
}

impl std::fmt::Debug for ShardFacts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ShardFacts")
            .field("id", &self.id)
            .field("live_connections", &self.live_connections.get())
            .field("http_connections", &self.http_connections.get())
            .finish_non_exhaustive()
    }
}

impl ShardFacts {
    /// The facts of shard `id` at start.
    pub fn new(
        id: u16,
        (settings, rules): (ShardSettings, Rc<Rules>),
        stats: Arc<ShardStats>,
        control: Option<Arc<ControlHandle>>,
    ) -> Self {
        ShardFacts {
            id,
            settings,
            rules,
            live_connections: Cell::new(0),
            http_connections: Cell::new(0),
            shutting_down: Cell::new(false),
            stats,
            snapshot: RefCell::new(
                control
                    .as_ref()
                    .map_or_else(|| Arc::new(Snapshot::empty_default()), |c| c.snapshot()),
            ),
            control,
            backlog: Cell::new(0),
            backlog_drained: LocalNotify::default(),
            commit_wanted: LocalNotify::default(),
            journal_ready: Cell::new(false),
            journal_batch: Cell::new(None),
            journal_spare: Cell::new(Vec::new()),
            commit_grace_at: Cell::new(None),
            commit_grace_armed: LocalNotify::default(),
            cluster: None,
            org_counters: RefCell::default(),
        }
    }

    /// The control-plane snapshot the shard has in force.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        Arc::clone(&self.snapshot.borrow())
    }

    /// The loop put `snapshot` in force.
    pub(super) fn set_snapshot(&self, snapshot: Arc<Snapshot>) {
        *self.snapshot.borrow_mut() = snapshot;
    }

    /// The counters of `org` (created with `rate`/`burst` on the broker's first request of
    /// the org); `None` when the broker-wide registry is full.
    pub(super) fn org_counters(
        &self,
        front: &super::front_door::FrontDoor,
        org: u32,
        rate: u32,
        burst: u32,
    ) -> Option<OrgCounters> {
        if let Some(counters) = self.org_counters.borrow().get(&org) {
            return Some(counters.clone());
        }
        let counters = OrgCounters {
            bucket: front.rate_limits.get_or_insert(org, rate, burst).ok()?,
            quota: front.quota(org),
        };
        let mut held = self.org_counters.borrow_mut();
        // Bounded as the shared registry is; deleted orgs' entries go with a clear.
        if held.len() >= super::front_door::RATE_LIMITED_ORGS_MAX {
            held.clear();
        }
        held.insert(org, counters.clone());
        Some(counters)
    }

    /// True once the shard is at its share of `connections_max`.
    pub fn full(&self) -> bool {
        self.live_connections.get() >= self.settings.connections_max
    }
}
