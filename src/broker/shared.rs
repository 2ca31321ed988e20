//! What every shard thread of one broker shares: the configuration, the mesh, every shard's
//! counters, the control plane, the acceptor's handoff queues and the shutdown flag.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::time::Instant;

use crossbeam_queue::ArrayQueue;
use ringmq_io::tls::ReloadableTls;
use ringmq_io::{CrossNotify, Mesh};

use super::control::ControlHandle;
use super::error::BrokerError;
use super::mesh_msg::MeshMsg;
use super::stats::ShardStats;
use crate::config::Config;
use crate::session::Rules;

/// Stops the broker from any thread.
#[derive(Debug)]
pub struct ShutdownHandle {
    pub(super) requested: AtomicBool,
    pub(super) notifies: Vec<CrossNotify>,
}

impl ShutdownHandle {
    /// Asks every shard to stop accepting, disconnect clients and exit.
    pub fn shutdown(&self) {
        self.requested.store(true, Ordering::SeqCst);
        for notify in &self.notifies {
            notify.notify();
        }
    }

    /// True once shutdown was asked for.
    pub fn is_requested(&self) -> bool {
        self.requested.load(Ordering::SeqCst)
    }
}

/// Connections accepted by the round-robin acceptor, waiting for their shard.
pub struct Handoff {
    pub(super) queue: ArrayQueue<std::net::TcpStream>,
    pub(super) notify: CrossNotify,
}

/// What every shard thread shares.
pub struct Shared {
    pub(super) config: Config,
    pub(super) rules: Rules,
    pub(super) mesh: Arc<Mesh<MeshMsg>>,
    pub(super) stats: Vec<Arc<ShardStats>>,
    pub(super) shutdown: Arc<ShutdownHandle>,
    pub(super) handoff: Vec<Handoff>,
    pub(super) started: Instant,
    pub(super) ready: std::sync::Mutex<mpsc::Sender<Result<(), BrokerError>>>,
    pub(super) conn_ids: AtomicU64,
    pub(super) control: Arc<ControlHandle>,
    /// The TLS server configuration, when a TLS listener is on.
    pub(super) tls: Option<Arc<ReloadableTls>>,
    /// An instant and the unix ms it stood for, the same for every shard.
    pub(super) clock: (Instant, u64),
    /// Shards whose log cannot be written (disk full): while any, every shard refuses what
    /// would need storing.
    pub(super) storage_failing: Arc<std::sync::atomic::AtomicUsize>,
    /// What the start recovered and where the logs go (`None`: durability mode `memory`).
    pub(super) journal: Option<super::journal::Startup>,
    /// The bridge to the other nodes of a cluster (`None`: one node).
    pub(super) cluster: Option<Arc<super::cluster::ClusterLink>>,
}
