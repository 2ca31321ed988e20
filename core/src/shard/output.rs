//! What the shard core asks of its IO driver: the outputs of the quinn-proto manner.
//!
//! The core never touches a socket, a waker or another thread. Every effect on the world is
//! queued here and taken by the driver with [`Shard::poll_output`](super::Shard::poll_output)
//! after each input; mesh messages for other shards wait in the core's outgoing lanes
//! ([`Shard::outgoing`](super::Shard::outgoing)) until the driver moves them onto the mesh.

use bytes::BytesMut;
use ringmq_proto::message::SharedMessage;

use super::{Slot, StreamEnd};

/// A connection's id, unique on its shard and never 0 (drivers count from 1; 0 names the
/// shard itself in message origins).
pub type ConnId = u64;

/// A live connection as the core names it to its driver: the slot of the session it is
/// attached to (so a driver can keep its connections in a slot-indexed table, not a second
/// hash map) and its id (so an output meant for a connection that already left the slot is
/// recognised).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ConnAt {
    /// The session's slot.
    pub slot: Slot,
    /// The connection.
    pub conn: ConnId,
}

/// One effect for the IO driver.
#[derive(Debug)]
pub enum Output {
    /// The session in `slot` has bytes in its outbox for connection `conn`: run its writer
    /// (once per slot until the driver took this output, however many deliveries came).
    Write {
        /// The session.
        slot: Slot,
        /// The connection attached to it.
        conn: ConnId,
    },
    /// Stop reading the connection until a matching [`Output::Resume`] (pauses nest).
    Pause(ConnAt),
    /// Undo one [`Output::Pause`] of the connection.
    Resume(ConnAt),
    /// Hold the connection's writer until `count` [`Output::FenceDone`]s arrived (a SUBACK
    /// waits for every replica).
    Fence {
        /// The connection.
        at: ConnAt,
        /// Answers awaited.
        count: u32,
    },
    /// One fence answer for the connection arrived.
    FenceDone(ConnAt),
    /// The session let go of the connection: write `rest`, then close the socket. The slot
    /// may already hold a newer connection (a close that waited for a SUBACK's fence).
    Close {
        /// The connection.
        at: ConnAt,
        /// Its last bytes (a DISCONNECT, unsent deliveries).
        rest: BytesMut,
    },
    /// The pending CONNECT under this token was granted, refused or superseded: its task
    /// reads the outcome from [`Shard::pending`](super::Shard::pending).
    Connect(u64),
    /// `sync` durability: acknowledgements wait for the log; write and sync it now (then
    /// report with [`Shard::synced`](super::Shard::synced)).
    Commit,
    /// Every shard asked under this token answered ([`Shard::take_count`](super::Shard::take_count)).
    Counted(u64),
    /// A message for the stream `id`'s ring.
    StreamItem {
        /// The stream.
        id: u32,
        /// The message.
        message: SharedMessage,
        /// Sent from the retained store as the stream opened.
        retained: bool,
    },
    /// The shard ended stream `id` (its client is told why, then the stream closes).
    StreamEnded {
        /// The stream.
        id: u32,
        /// Why.
        why: StreamEnd,
    },
    /// Stream `id` is gone from the shard: its ring can go.
    StreamRemoved(u32),
    /// The number of connected clients of `org` changed by `delta` (the broker-wide count the
    /// org's `connections_max` is checked against).
    OrgConnections {
        /// The org.
        org: u32,
        /// +1 or -1.
        delta: i64,
    },
    /// A message published on this node, for the other nodes of a cluster (sent once per
    /// message, by the shard it was published on).
    ClusterPublish {
        /// The message.
        message: SharedMessage,
        /// Its ticket when its publisher's acknowledgement waits for the other nodes (answer
        /// with [`super::Input::ClusterDone`] or [`super::Input::ClusterFailed`]); 0: none.
        ticket: u64,
    },
    /// A client id (scoped) connected here: the cluster's registry says so, and a connection
    /// of it on another node is taken over.
    ClusterClaim {
        /// The client id, in its org's scope.
        client_id: ringmq_proto::mqtt::Str,
        /// Its CONNECT asked for a clean start (the other node ends its session).
        clean_start: bool,
    },
    /// Another node's message given with [`super::Input::FromClusterAcked`] is routed here (and,
    /// with `sync` durability, in the logs of every shard that got a copy).
    ClusterReceipt(u64),
    /// Ask the cluster for the session of a client id (scoped) a CONNECT without clean start
    /// claims; answer with [`super::Input::ClusterAdopt`] at shard `home`.
    ClusterFetch {
        /// The client id, in its org's scope.
        client_id: ringmq_proto::mqtt::Str,
        /// The parked claim.
        token: u64,
        /// The shard to answer.
        home: u16,
    },
    /// The answer to [`super::Input::ClusterGiveUp`]: the session's record (the durable
    /// codec's), or `None` when this shard does not hold it.
    ClusterSessionOut {
        /// The request answered.
        request: u64,
        /// The encoded session record.
        record: Option<Vec<u8>>,
    },
    /// The session of a client id (scoped) ended here: the registry forgets this node's claim.
    ClusterRelease(ringmq_proto::mqtt::Str),
    /// This shard's first (`add`) or last subscription or stream on `filter` (scoped) came or
    /// went: the node's interest in the other nodes' messages changes.
    ClusterInterest {
        /// The filter, in its org's scope.
        filter: ringmq_proto::mqtt::Str,
        /// First (`true`) or last (`false`).
        add: bool,
    },
    /// A SUBACK of `at` waits for NATS to have every subscription of this node asked for so
    /// far (the interest outputs before this one): the bridge answers
    /// [`super::Input::ClusterFenceDone`] after a round trip to the server, so "SUBACK
    /// received" means "a message another node publishes from now on reaches me".
    ClusterFence(ConnAt),
    /// This shard's first (`add`) or last member of the shared group (`group`, `filter`) came
    /// or went: the node joins or leaves the group's NATS queue group.
    ClusterShared {
        /// The group's name.
        group: ringmq_proto::mqtt::Str,
        /// The group's filter, in its org's scope.
        filter: ringmq_proto::mqtt::Str,
        /// First (`true`) or last (`false`).
        add: bool,
    },
}
