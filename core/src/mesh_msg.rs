//! What shards say to each other over the mesh.

use crate::shard::ConnAt;
use ringmq_proto::message::SharedMessage;
use ringmq_proto::mqtt::Str;
use ringmq_proto::session::{Queued, SessionState};

/// One item on a mesh queue. Publishes carry the message once per destination shard, however
/// many subscribers it has there.
#[derive(Debug)]
pub enum MeshMsg {
    /// Deliver to this shard's local (non-shared) subscribers matching the topic.
    Deliver(SharedMessage),
    /// Deliver to one local member of a shared-subscription group.
    DeliverShared {
        /// The message.
        message: SharedMessage,
        /// Group name.
        group: Str,
        /// Filter of the group.
        filter: Str,
        /// Shards (a bit each) that already found no member left: one whose replica lagged
        /// behind a departure passes the message to another member shard instead of dropping it.
        tried: u64,
    },
    /// A shard's first (`add`) or last (`!add`) local subscription on a filter.
    IndexUpdate {
        /// Filter.
        filter: Str,
        /// The shard whose local count changed.
        shard: u16,
        /// Added or removed.
        add: bool,
    },
    /// A member joined or left a shared group on `shard`.
    SharedUpdate {
        /// Group name.
        group: Str,
        /// Filter of the group.
        filter: Str,
        /// The member's shard.
        shard: u16,
        /// Joined or left.
        add: bool,
    },
    /// To the topic's home shard: set (or clear, with `None`) a retained message.
    RetainRequest {
        /// Topic.
        topic: Str,
        /// The message, or `None` to clear.
        message: Option<SharedMessage>,
    },
    /// From the topic's home shard to every replica, in the home's order.
    RetainSet {
        /// Topic.
        topic: Str,
        /// The message, or `None` to clear.
        message: Option<SharedMessage>,
    },
    /// To the client id's home shard: a connection on `shard` wants this client id.
    Claim {
        /// Client id.
        client_id: Str,
        /// Shard of the new connection.
        shard: u16,
        /// Identifies the connection attempt.
        token: u64,
        /// The new connection's clean start flag.
        clean_start: bool,
        /// Who the new connection logged in as (the broker's `shard::owner_tag`).
        owner: u64,
    },
    /// The answer to a claim of a client id whose session belongs to another principal: the
    /// claiming connection is refused, the session and its connection are left alone.
    Refused {
        /// Token of the connection attempt.
        token: u64,
    },
    /// To the shard holding the client id's session: hand it over (or end it) for `to_shard`.
    Takeover {
        /// Client id.
        client_id: Str,
        /// Shard of the new connection.
        to_shard: u16,
        /// Token of the new connection attempt.
        token: u64,
        /// Whether the new connection discards the session.
        clean_start: bool,
    },
    /// The answer to a claim: the session state to resume, if any.
    Grant {
        /// Token of the connection attempt.
        token: u64,
        /// The moved session, if one existed and the new connection keeps it.
        state: Option<Box<SessionState>>,
    },
    /// Answer with `FenceAck` once everything sent before this on the lane is applied.
    Fence {
        /// Shard to answer.
        reply_to: u16,
        /// Connection whose SUBACK waits.
        at: ConnAt,
    },
    /// The answer to a `Fence`.
    FenceAck {
        /// Connection whose SUBACK waits.
        at: ConnAt,
    },
    /// `sync` durability: answer `CommitAck` once the log holds everything sent before this
    /// (the next sync after reading it).
    CommitFence {
        /// Shard to answer.
        reply_to: u16,
        /// The asking shard's commit.
        id: u64,
    },
    /// The answer to a `CommitFence`.
    CommitAck {
        /// The asking shard's commit.
        id: u64,
    },
    /// To a publisher's shard: pause (or resume) reading that connection; pauses count up.
    Pause {
        /// The publisher, as the local part of its origin names it (slot and generation).
        publisher: u64,
        /// Pause (true) or resume (false).
        pause: bool,
    },
    /// Deliver like `Deliver`, then answer `Counted` with the number of local deliveries.
    DeliverCounted {
        /// The message.
        message: SharedMessage,
        /// Shard to answer.
        reply_to: u16,
        /// Identifies the waiting request on `reply_to`.
        token: u64,
    },
    /// Answer `Counted` with a count of 0 (a liveness probe for `/readyz`).
    Ping {
        /// Shard to answer.
        reply_to: u16,
        /// Identifies the waiting request on `reply_to`.
        token: u64,
    },
    /// The answer to `DeliverCounted` or `Ping`.
    Counted {
        /// The waiting request.
        token: u64,
        /// Deliveries made on the answering shard.
        count: u64,
    },
    /// From a moving session's old shard to its new one: a delivery that reached the old
    /// shard's forwarder while the move settles (boxed: rare, and the enum stays small).
    Forward {
        /// Token of the connection the session moved to.
        token: u64,
        /// The delivery.
        item: Box<Queued>,
    },
    /// From a moved session's new shard to every shard, after announcing its subscriptions:
    /// answer `MoveFenceAck` to `ghost_shard` once everything sent before this is applied.
    MoveFence {
        /// The session's old shard, which forwards until every shard has answered.
        ghost_shard: u16,
        /// Token of the connection the session moved to.
        token: u64,
    },
    /// The answer to `MoveFence`, at the old shard.
    MoveFenceAck {
        /// Token of the connection the session moved to.
        token: u64,
    },
    /// From the old shard: its forwarder for `token` is gone; nothing more follows.
    ForwardEnd {
        /// Token of the connection the session moved to.
        token: u64,
    },
    /// To the home shard: the session with this token ended.
    Release {
        /// Client id.
        client_id: Str,
        /// Token of the connection that owned it.
        token: u64,
    },
}
