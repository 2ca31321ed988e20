//! The shard core's one way in: every input the driver has, with `now`.
//!
//! Each input changes the core's state and queues what the world must do about it (outputs,
//! mesh messages); the driver then takes them with [`Shard::poll_output`] and
//! [`Shard::outgoing`]. Questions that change nothing (a session's outbox, counts, lookups)
//! are plain methods.

use std::sync::Arc;
use std::time::Instant;

use ringmq_proto::message::SharedMessage;
use ringmq_proto::mqtt::{Packet, ReasonCode};
use ringmq_proto::session::{CloseReason, Flow};

use super::{ConnId, Shard, Slot};
use crate::control::snapshot::Snapshot;
use crate::mesh_msg::MeshMsg;

/// Something that happened to the shard.
#[derive(Debug)]
pub enum Input {
    /// A decoded packet from the connection attached to `slot`.
    Packet {
        /// The session.
        slot: Slot,
        /// The packet.
        packet: Packet,
    },
    /// A connection's bytes did not decode: it is closed with `reason`.
    Malformed {
        /// The session.
        slot: Slot,
        /// The decoder's reason code (v5 DISCONNECT).
        reason: ReasonCode,
    },
    /// The socket of `conn` is gone (read error, hang-up, write failure).
    Lost {
        /// The session.
        slot: Slot,
        /// The connection that was attached.
        conn: ConnId,
    },
    /// `conn`'s writer finished a write: the session may move queued messages on.
    Written {
        /// The session.
        slot: Slot,
        /// The connection.
        conn: ConnId,
    },
    /// A message from shard `from` (itself included).
    Mesh {
        /// The sending shard.
        from: u16,
        /// The message.
        msg: MeshMsg,
    },
    /// Time passed: due timers run and stuck subscribers release their publishers.
    Tick,
    /// A new control-plane snapshot is in force.
    Snapshot(Arc<Snapshot>),
    /// A message published by the broker itself or over HTTP (not counted).
    Publish(SharedMessage),
    /// A message another node of the cluster published: delivered on this node, never sent
    /// on to the cluster again.
    FromCluster(SharedMessage),
    /// The cluster's retained message on a topic changed (an empty payload clears it).
    RetainedFromCluster(SharedMessage),
    /// A message another node published and waits for: routed as [`Input::FromCluster`], then
    /// [`super::Output::ClusterReceipt`] with `receipt` (after the commit, in `sync` mode).
    FromClusterAcked {
        /// The message.
        message: SharedMessage,
        /// The bridge's number for it.
        receipt: u64,
    },
    /// A client id (scoped) connected on another node after it did here: its connection here
    /// ends (v5 DISCONNECT 0x8E), and its session too when the other node's CONNECT asked for
    /// a clean start.
    ClusterTakenOver {
        /// The client id, in its org's scope.
        client_id: ringmq_proto::mqtt::Str,
        /// The other node's CONNECT asked for a clean start.
        clean_start: bool,
    },
    /// The answer to [`super::Output::ClusterFetch`]: the session another node handed over,
    /// if any; the parked claim goes on.
    ClusterAdopt {
        /// The parked claim.
        token: u64,
        /// The session.
        record: Option<Box<crate::durable::SessionRecord>>,
    },
    /// Another node takes the client id's session: hand it over if held here.
    ClusterGiveUp {
        /// The client id, in its org's scope.
        client_id: ringmq_proto::mqtt::Str,
        /// The request to answer ([`super::Output::ClusterSessionOut`]).
        request: u64,
    },
    /// These cluster tickets of this shard were taken by the nodes that wanted their messages:
    /// their acknowledgements go.
    ClusterDone(Vec<u64>),
    /// The message of this cluster ticket never left for the other nodes: its publisher is
    /// closed unacknowledged.
    ClusterFailed(u64),
    /// NATS has the subscriptions a SUBACK of this connection waited for
    /// ([`super::Output::ClusterFence`]).
    ClusterFenceDone(super::ConnAt),
    /// A message NATS's queue group picked this node for: to one member of the shared group
    /// (`group`, `filter`) here.
    FromClusterShared {
        /// The message.
        message: SharedMessage,
        /// The group's name.
        group: ringmq_proto::mqtt::Str,
        /// The group's filter, in its org's scope.
        filter: ringmq_proto::mqtt::Str,
    },
}

impl Shard {
    /// Handles one input. For a packet, the flow says whether its connection goes on (a close
    /// is already done: the session detached and [`super::Output::Close`] queued).
    #[inline(always)]
    pub fn handle(&mut self, input: Input, now: Instant) -> Flow {
        match input {
            Input::Packet { slot, packet } => {
                let flow = self.handle_packet(slot, packet, now);
                match &flow {
                    Flow::Continue => {}
                    Flow::Close(CloseReason::ClientDisconnect { with_will }) => {
                        self.end_connection(slot, None, *with_will, now);
                    }
                    Flow::Close(CloseReason::Violation { reason, text }) => {
                        tracing::debug!(reason = reason.0, text, "closing on protocol violation");
                        self.end_connection(slot, Some((*reason, *text)), true, now);
                    }
                }
                return flow;
            }
            Input::Malformed { slot, reason } => {
                self.end_connection(slot, Some((reason, "malformed packet")), true, now);
            }
            Input::Lost { slot, conn } => {
                if self.entry_for_conn(slot, conn).is_some() {
                    self.end_connection(slot, None, true, now);
                }
            }
            Input::Written { slot, conn } => self.after_write(slot, conn, now),
            Input::Mesh { from, msg } => self.handle_mesh(from, msg, now),
            Input::Tick => {
                self.run_timers(now);
                self.check_stalls(now);
            }
            Input::Snapshot(snapshot) => self.set_snapshot(snapshot, now),
            Input::Publish(message) => self.publish(message, now),
            Input::FromCluster(message) => self.publish_from_cluster(message, now),
            Input::FromClusterAcked { message, receipt } => {
                self.publish_from_cluster(message, now);
                if !self.receipt_commit(receipt) {
                    self.outputs
                        .push_back(super::Output::ClusterReceipt(receipt));
                }
            }
            Input::RetainedFromCluster(message) => self.retained_from_cluster(message),
            Input::ClusterDone(tickets) => self.cluster_done(&tickets),
            Input::ClusterAdopt { token, record } => self.adopt_from_cluster(token, record, now),
            Input::ClusterGiveUp { client_id, request } => {
                self.give_up_to_cluster(&client_id, request, now)
            }
            Input::ClusterTakenOver {
                client_id,
                clean_start,
            } => self.taken_over_by_another_node(&client_id, clean_start, now),
            Input::ClusterFailed(ticket) => self.cluster_failed(ticket, now),
            Input::ClusterFenceDone(at) => self.fence_ack(at),
            Input::FromClusterShared {
                message,
                group,
                filter,
            } => self.shared_from_cluster(message, group, filter, now),
        }
        Flow::Continue
    }
}
