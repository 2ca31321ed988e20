//! The broker's driver, played by the simulator: each connection's handshake, claim, install,
//! read rounds and writes through the core's one entry point, the outputs applied to the
//! connections, and the mesh lanes between the shards.

use std::collections::VecDeque;
use std::rc::Rc;
use std::time::Instant;

use bytes::BytesMut;
use ringmq_core::mesh_msg::MeshMsg;
use ringmq_core::shard::{ConnId, Input, NewSession, Output, Shard, Slot};
use ringmq_proto::mqtt::{decode_packet, Packet, ProtocolVersion, ReasonCode, Str};
use ringmq_proto::session::connect::{
    connack_accepted, connack_refused, negotiate, Negotiated, Refusal,
};
use ringmq_proto::session::{Access, Flow};

use super::{SimAcl, World};
use crate::client::SimClient;

/// Packets one connection's read round handles at most (as the broker's read loop).
const PACKETS_PER_ROUND: usize = 16;

/// Where a connection is in its life.
pub(super) enum Phase {
    /// Waiting for a whole CONNECT.
    Handshake,
    /// Claimed the client id at its home shard; waiting for the grant.
    Pending {
        token: u64,
        negotiated: Box<Negotiated>,
        scoped_id: Str,
    },
    /// Session installed in `slot`.
    Live { slot: Slot },
    /// Gone.
    Dead,
}

/// One simulated socket between a client and a shard.
pub(super) struct SimConn {
    pub(super) client: usize,
    pub(super) shard: usize,
    /// The connection's id on its shard, as the core's outputs name it.
    pub(super) id: ConnId,
    /// What the core's outputs said of this connection (the broker keeps it in `ConnShared`).
    pub(super) link: Link,
    pub(super) phase: Phase,
    /// Bytes the client sent that the shard has not read.
    pub(super) to_broker: BytesMut,
    pub(super) version: ProtocolVersion,
}

/// A connection's state as the core's outputs set it.
#[derive(Debug, Default)]
pub(super) struct Link {
    /// The core let go of it: write `final_out`, then close.
    pub(super) closing: bool,
    pub(super) final_out: BytesMut,
    /// Fence answers the writer still waits for.
    pub(super) fences: u32,
}

/// The mesh between the simulated shards: a bounded FIFO lane per ordered pair, like the
/// broker's; what a full lane cannot take waits in the sending core's outgoing queue.
pub(super) struct SimMesh {
    /// `lanes[to][from]`.
    pub(super) lanes: Vec<Vec<VecDeque<MeshMsg>>>,
    pub(super) capacity: usize,
}

impl SimMesh {
    /// Moves what `from` has for each shard onto the lanes, as far as they have room.
    pub(super) fn send(&mut self, from: usize, shard: &mut Shard) {
        for (to, queue) in shard.outgoing().iter_mut().enumerate() {
            let lane = &mut self.lanes[to][from];
            while lane.len() < self.capacity {
                let Some(msg) = queue.pop_front() else { break };
                lane.push_back(msg);
            }
        }
    }

    /// Shard `to` reads at most `max` messages, lane by lane.
    pub(super) fn receive(&mut self, to: usize, shard: &mut Shard, max: usize, now: Instant) {
        let mut left = max;
        for from in 0..self.lanes.len() {
            while left > 0 {
                let Some(msg) = self.lanes[to][from].pop_front() else {
                    break;
                };
                shard.handle(
                    Input::Mesh {
                        from: from as u16,
                        msg,
                    },
                    now,
                );
                left -= 1;
            }
        }
    }
}

impl World {
    /// The shard learns its connection is gone.
    pub(super) fn lose(&mut self, conn: usize) {
        let now = self.now;
        let sc = &mut self.conns[conn];
        let s = &mut self.shards[sc.shard];
        match sc.phase {
            Phase::Live { slot } => {
                s.handle(Input::Lost { slot, conn: sc.id }, now);
                s.flush(now);
                sc.phase = Phase::Dead;
                let shard = sc.shard;
                self.apply(shard);
            }
            // The connection task still installs the session once granted, then finds the
            // socket gone (`read_side` ends it then).
            Phase::Pending { .. } => {}
            Phase::Handshake | Phase::Dead => sc.phase = Phase::Dead,
        }
    }

    /// The shard's side of reading `conn`: the handshake, the grant, or a round of packets.
    pub(super) fn read_side(&mut self, conn: usize) {
        let now = self.now;
        let rules = Rc::clone(&self.rules);
        let sc = &mut self.conns[conn];
        let shard = &mut self.shards[sc.shard];
        match &mut sc.phase {
            Phase::Dead => {}
            Phase::Handshake => {
                let Some(client) = self.clients.get(sc.client) else {
                    sc.phase = Phase::Dead;
                    return;
                };
                let packet = match decode_packet(&mut sc.to_broker, ProtocolVersion::V311, 65536) {
                    Ok(Some(Packet::Connect(connect))) => connect,
                    Ok(None) => return,
                    _ => {
                        sc.phase = Phase::Dead;
                        return;
                    }
                };
                let negotiated = match negotiate(&packet, &rules, now, String::new) {
                    Ok(n) => n,
                    Err(refusal) => {
                        refuse(&mut self.clients[sc.client], sc.version, &refusal);
                        sc.phase = Phase::Dead;
                        return;
                    }
                };
                let org = client.spec.org;
                let admin = client.spec.admin;
                let mut negotiated = negotiated;
                let access = Access::org(org, Some(Rc::new(SimAcl { admin })));
                if let Some(will) = negotiated.link.will.as_mut() {
                    will.topic = access.scope_topic(will.topic.clone());
                }
                let scoped_id = access.scope_topic(Str::from(&*negotiated.client_id));
                negotiated.link.access = access;
                // Sessions here carry no principal, so a session stores owner 0 (as the
                // broker's anonymous ones do) and a restart restores that: claim as anonymous.
                let owner = 0;
                let token = shard.begin_connect(scoped_id.clone(), negotiated.clean_start, owner);
                shard.flush(now);
                sc.phase = Phase::Pending {
                    token,
                    negotiated: Box::new(negotiated),
                    scoped_id,
                };
            }
            Phase::Pending { token, .. } => {
                let token = *token;
                let (grant, resume) = match shard.pending.get_mut(&token) {
                    None => {
                        sc.phase = Phase::Dead; // superseded before CONNACK
                        return;
                    }
                    Some(p) if p.refused => {
                        shard.pending.remove(&token);
                        let refusal = Refusal {
                            reason: ReasonCode::NOT_AUTHORIZED,
                            text: "client id in use by another user's session",
                        };
                        if let Some(client) = self.clients.get_mut(sc.client) {
                            refuse(client, sc.version, &refusal);
                        }
                        sc.phase = Phase::Dead;
                        return;
                    }
                    Some(p) => match p.grant.take() {
                        Some(grant) => (grant, p.resume),
                        None => return,
                    },
                };
                shard.pending.remove(&token);
                let Phase::Pending {
                    negotiated,
                    scoped_id,
                    ..
                } = std::mem::replace(&mut sc.phase, Phase::Dead)
                else {
                    return;
                };
                let negotiated = *negotiated;
                let org = self.clients.get(sc.client).map_or(0, |c| c.spec.org);
                let (slot, present) = shard.install_session(
                    NewSession {
                        client_id: scoped_id,
                        token,
                        state: grant,
                        clean_start: negotiated.clean_start,
                        expiry_interval_secs: negotiated.expiry_interval_secs,
                        conn: sc.id,
                        org,
                        principal: None,
                        resume,
                    },
                    now,
                );
                let ack = connack_accepted(&negotiated, present, &rules);
                let version = negotiated.link.version;
                if let Some(entry) = shard.entry_mut(slot) {
                    entry.session.write_packet(&Packet::ConnAck(ack), version);
                    entry.session.attach(negotiated.link, present, now, &rules);
                }
                shard.arm_keep_alive(slot, sc.id);
                shard.flush(now);
                sc.phase = Phase::Live { slot };
                if sc.client == usize::MAX {
                    self.lose(conn);
                }
            }
            Phase::Live { slot } => {
                let slot = *slot;
                // The core's own state says what `ConnShared` says in the broker: a
                // connection it let go of is no longer attached, and pauses are counted.
                let (id, index) = (sc.id, sc.shard);
                let closing = |shard: &mut Shard| shard.entry_for_conn(slot, id).is_none();
                if sc.link.closing || closing(shard) || shard.is_paused(slot, id) {
                    return;
                }
                if self.mesh_delay[index] == 0 {
                    let max = shard.settings.mesh_batch_max;
                    self.mesh.receive(index, shard, max, now);
                    shard.flush(now);
                }
                for _ in 0..PACKETS_PER_ROUND {
                    if closing(shard) {
                        break;
                    }
                    match decode_packet(&mut sc.to_broker, sc.version, 65536) {
                        Ok(Some(packet)) => match shard.handle(Input::Packet { slot, packet }, now)
                        {
                            Flow::Continue if shard.is_paused(slot, id) => break,
                            Flow::Continue | Flow::Close(_) => {}
                        },
                        Ok(None) => break,
                        Err(error) => {
                            let reason = error.reason_code();
                            shard.handle(Input::Malformed { slot, reason }, now);
                        }
                    }
                }
                shard.flush(now);
            }
        }
        let shard = self.conns[conn].shard;
        self.apply(shard);
    }

    /// Applies the outputs of shard `index` to its connections, as the broker's driver does,
    /// and moves its mesh messages onto the lanes.
    pub(super) fn apply(&mut self, index: usize) {
        let shard = &mut self.shards[index];
        while let Some(output) = shard.poll_output() {
            let named = match &output {
                Output::Pause(at)
                | Output::Resume(at)
                | Output::FenceDone(at)
                | Output::Fence { at, .. }
                | Output::Close { at, .. } => at.conn,
                _ => continue,
            };
            let Some(sc) = self
                .conns
                .iter_mut()
                .find(|sc| sc.shard == index && sc.id == named && !sc.link.closing)
            else {
                continue;
            };
            match output {
                Output::Fence { count, .. } => sc.link.fences += count,
                Output::FenceDone(_) => sc.link.fences = sc.link.fences.saturating_sub(1),
                Output::Close { rest, .. } => {
                    // As the broker's driver: the core closes only after a held SUBACK's
                    // fence answers (or drops the SUBACK with its session).
                    sc.link.fences = 0;
                    sc.link.closing = true;
                    sc.link.final_out.unsplit(rest);
                }
                // Pauses are read from the core (`is_paused`).
                _ => {}
            }
        }
        self.mesh.send(index, shard);
    }

    /// The shard's side of writing `conn`: the outbox to the client, then `after_write`.
    pub(super) fn write_side(&mut self, conn: usize) {
        let now = self.now;
        let sc = &mut self.conns[conn];
        let Phase::Live { slot } = sc.phase else {
            return;
        };
        let stuck = self.clients.get(sc.client).is_some_and(|c| c.stuck);
        let shard = &mut self.shards[sc.shard];
        if sc.link.closing {
            let rest = std::mem::take(&mut sc.link.final_out);
            if let Some(client) = self.clients.get_mut(sc.client) {
                client.inbox.extend_from_slice(&rest);
            }
            sc.phase = Phase::Dead;
            if let Some(client) = self.clients.get_mut(sc.client) {
                // The client reads what was sent before the close, then sees the socket end.
                let mut scratch = BytesMut::new();
                let step = self.step;
                client.read(&mut scratch, &mut self.oracle, &mut self.trace, step, now);
                client.connection_ended(&mut self.oracle, now);
                self.trace
                    .event(step, format!("c{} connection closed", sc.client));
            }
            sc.client = usize::MAX;
            return;
        }
        if stuck || sc.link.fences > 0 {
            return;
        }
        let Some(entry) = shard.entry_for_conn(slot, sc.id) else {
            return;
        };
        if entry.session.out.is_empty() {
            return;
        }
        let chunk = entry.session.out.split();
        self.moved += chunk.len() as u64;
        if let Some(client) = self.clients.get_mut(sc.client) {
            client.inbox.extend_from_slice(&chunk);
        }
        shard.handle(Input::Written { slot, conn: sc.id }, now);
        shard.flush(now);
        let index = sc.shard;
        self.apply(index);
    }
}

/// Writes a refusing CONNACK to the client.
pub(super) fn refuse(client: &mut SimClient, version: ProtocolVersion, refusal: &Refusal) {
    let ack = connack_refused(version, refusal);
    let _ = ringmq_proto::mqtt::encode_packet(&Packet::ConnAck(ack), version, &mut client.inbox);
}
