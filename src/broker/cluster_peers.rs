//! What a node knows of the other nodes, so a QoS 1/2 acknowledgement can wait for the nodes
//! that want its message (`docs/cluster.md`, "QoS 1/2 across nodes").
//!
//! Every node announces the filters it subscribes to over NATS (a change at a time, numbered,
//! and a whole snapshot when a peer missed one), so each node keeps a replica of every other
//! node's filters in a [`ShardIndex`] whose "shards" are peer slots. The node a QoS 1/2
//! message is published on matches its topic there: the peers that want it. Each of them,
//! once the message is in a shard's inbox, answers with an acknowledgement of everything it
//! has of the sender through that sequence number (cumulative). The publisher's
//! acknowledgement leaves when every peer in its set answered for its sequence or died.
//!
//! A peer also answers the sender's heartbeat (which carries the sender's last sequence
//! number): NATS keeps one publisher's order to one subscriber, so once the heartbeat is in,
//! everything the sender published before it that the peer was to get is in too. That covers
//! a message a peer was thought to want but never got (its subscription went, or was not yet
//! in place at NATS). A peer not heard for [`PEER_TIMEOUT`] while this node is connected is
//! dead: nothing waits for it any more (its clients lost their connections with it, and
//! their sessions continue from its store when it comes back).
//!
//! Everything here is plain data; the bridge (`cluster.rs`) sends and receives.

use std::collections::{HashMap, HashSet, VecDeque};
use std::time::{Duration, Instant};

use bytes::{Buf, BufMut};
use ringmq_router::index::ShardIndex;

/// How often a node says it is alive (and its last sequence number).
pub const HEARTBEAT: Duration = Duration::from_millis(500);

/// A peer not heard for this long (while this node is connected) is taken for dead.
pub const PEER_TIMEOUT: Duration = Duration::from_secs(3);

/// Peers a node tracks (one bit each in the index's mask); past it a new node is not waited
/// for (logged).
pub const PEERS_MAX: usize = 64;

/// Filters a peer's replica holds at most; past it the peer's further filters are ignored (a
/// node cannot make another hold without bound).
pub const PEER_FILTERS_MAX: usize = 1 << 20;

/// Bytes of filters in one snapshot message (NATS's default payload limit is 1 MiB).
const SNAPSHOT_PART_BYTES: usize = 256 * 1024;

/// Filter bytes a control message may carry.
const FILTER_BYTES_MAX: usize = 65_535;

/// A message between the bridges of two nodes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Control {
    /// "I am alive": its epoch, last sequence number, interest version and name.
    Heartbeat {
        /// The sender.
        epoch: u64,
        /// Its last data message's sequence number.
        seq: u64,
        /// Its interest's version.
        version: u64,
        /// Its node id.
        node_id: String,
    },
    /// One change of the sender's interest, numbered.
    Interest {
        /// The sender.
        epoch: u64,
        /// The interest's version after this change.
        version: u64,
        /// Came (true) or went.
        add: bool,
        /// The filter, in its org's scope.
        filter: String,
    },
    /// A request for `target`'s whole interest.
    Want {
        /// The node asked.
        target: u64,
    },
    /// One part of the sender's whole interest at `version`.
    Snapshot {
        /// The sender.
        epoch: u64,
        /// The version it describes.
        version: u64,
        /// This part's number, from 0.
        part: u32,
        /// How many parts there are.
        parts: u32,
        /// Filters (scoped).
        filters: Vec<String>,
    },
    /// `from` has every message of the receiver through `through`.
    Ack {
        /// The acknowledging node.
        from: u64,
        /// The receiver's sequence number it has everything up to.
        through: u64,
    },
    /// `from` asks the receiver for the session of `client_id` (scoped): a CONNECT without
    /// clean start reached `from` (`cluster_sessions.rs` in the core).
    Fetch {
        /// The asking node.
        from: u64,
        /// Its request's number.
        request: u64,
        /// The client id, in its org's scope.
        client_id: String,
    },
    /// The answer to a [`Control::Fetch`]: the session's record (empty: none).
    Session {
        /// The request answered.
        request: u64,
        /// The durable codec's session record.
        record: Vec<u8>,
    },
    /// `from` lost its NATS connection and may have missed the receiver's messages after
    /// `after` through `through`: their acknowledgements must not go.
    Lost {
        /// The node that was away.
        from: u64,
        /// The last sequence number it had before.
        after: u64,
        /// The first heartbeat's sequence number after it came back.
        through: u64,
    },
}

const HEARTBEAT_KIND: u8 = 1;
const INTEREST_KIND: u8 = 2;
const WANT_KIND: u8 = 3;
const SNAPSHOT_KIND: u8 = 4;
const ACK_KIND: u8 = 5;
const LOST_KIND: u8 = 6;
const FETCH_KIND: u8 = 7;
const SESSION_KIND: u8 = 8;

fn put_str(buf: &mut Vec<u8>, s: &str) {
    let len = s.len().min(FILTER_BYTES_MAX);
    buf.put_u16_le(len as u16);
    buf.extend_from_slice(&s.as_bytes()[..len]);
}

fn get_str(bytes: &mut &[u8]) -> Option<String> {
    if bytes.remaining() < 2 {
        return None;
    }
    let len = usize::from(bytes.get_u16_le());
    if bytes.remaining() < len {
        return None;
    }
    let s = std::str::from_utf8(&bytes[..len]).ok()?.to_owned();
    bytes.advance(len);
    Some(s)
}

fn get_u64(bytes: &mut &[u8]) -> Option<u64> {
    (bytes.remaining() >= 8).then(|| bytes.get_u64_le())
}

fn get_u32(bytes: &mut &[u8]) -> Option<u32> {
    (bytes.remaining() >= 4).then(|| bytes.get_u32_le())
}

impl Control {
    /// The message's bytes.
    pub fn encode(&self, buf: &mut Vec<u8>) {
        buf.clear();
        match self {
            Control::Heartbeat {
                epoch,
                seq,
                version,
                node_id,
            } => {
                buf.put_u8(HEARTBEAT_KIND);
                buf.put_u64_le(*epoch);
                buf.put_u64_le(*seq);
                buf.put_u64_le(*version);
                put_str(buf, node_id);
            }
            Control::Interest {
                epoch,
                version,
                add,
                filter,
            } => {
                buf.put_u8(INTEREST_KIND);
                buf.put_u64_le(*epoch);
                buf.put_u64_le(*version);
                buf.put_u8(u8::from(*add));
                put_str(buf, filter);
            }
            Control::Want { target } => {
                buf.put_u8(WANT_KIND);
                buf.put_u64_le(*target);
            }
            Control::Snapshot {
                epoch,
                version,
                part,
                parts,
                filters,
            } => {
                buf.put_u8(SNAPSHOT_KIND);
                buf.put_u64_le(*epoch);
                buf.put_u64_le(*version);
                buf.put_u32_le(*part);
                buf.put_u32_le(*parts);
                buf.put_u32_le(filters.len() as u32);
                for filter in filters {
                    put_str(buf, filter);
                }
            }
            Control::Ack { from, through } => {
                buf.put_u8(ACK_KIND);
                buf.put_u64_le(*from);
                buf.put_u64_le(*through);
            }
            Control::Fetch {
                from,
                request,
                client_id,
            } => {
                buf.put_u8(FETCH_KIND);
                buf.put_u64_le(*from);
                buf.put_u64_le(*request);
                put_str(buf, client_id);
            }
            Control::Session { request, record } => {
                buf.put_u8(SESSION_KIND);
                buf.put_u64_le(*request);
                buf.put_u32_le(record.len() as u32);
                buf.extend_from_slice(record);
            }
            Control::Lost {
                from,
                after,
                through,
            } => {
                buf.put_u8(LOST_KIND);
                buf.put_u64_le(*from);
                buf.put_u64_le(*after);
                buf.put_u64_le(*through);
            }
        }
    }

    /// A message from its bytes (`None`: not one; the bytes come from the network).
    pub fn decode(mut bytes: &[u8]) -> Option<Control> {
        let bytes = &mut bytes;
        if bytes.is_empty() {
            return None;
        }
        let kind = bytes.get_u8();
        let control = match kind {
            HEARTBEAT_KIND => Control::Heartbeat {
                epoch: get_u64(bytes)?,
                seq: get_u64(bytes)?,
                version: get_u64(bytes)?,
                node_id: get_str(bytes)?,
            },
            INTEREST_KIND => Control::Interest {
                epoch: get_u64(bytes)?,
                version: get_u64(bytes)?,
                add: match (bytes.remaining() >= 1).then(|| bytes.get_u8())? {
                    0 => false,
                    1 => true,
                    _ => return None,
                },
                filter: get_str(bytes)?,
            },
            WANT_KIND => Control::Want {
                target: get_u64(bytes)?,
            },
            SNAPSHOT_KIND => {
                let epoch = get_u64(bytes)?;
                let version = get_u64(bytes)?;
                let part = get_u32(bytes)?;
                let parts = get_u32(bytes)?;
                let count = get_u32(bytes)? as usize;
                // Each filter takes at least its 2-byte length: a count the bytes cannot hold
                // is a lie, refused before anything is reserved for it.
                if count > bytes.remaining() / 2 || part >= parts {
                    return None;
                }
                let mut filters = Vec::with_capacity(count);
                for _ in 0..count {
                    filters.push(get_str(bytes)?);
                }
                Control::Snapshot {
                    epoch,
                    version,
                    part,
                    parts,
                    filters,
                }
            }
            ACK_KIND => Control::Ack {
                from: get_u64(bytes)?,
                through: get_u64(bytes)?,
            },
            FETCH_KIND => Control::Fetch {
                from: get_u64(bytes)?,
                request: get_u64(bytes)?,
                client_id: get_str(bytes)?,
            },
            SESSION_KIND => {
                let request = get_u64(bytes)?;
                let len = get_u32(bytes)? as usize;
                if bytes.remaining() < len {
                    return None;
                }
                let record = bytes[..len].to_vec();
                bytes.advance(len);
                Control::Session { request, record }
            }
            LOST_KIND => Control::Lost {
                from: get_u64(bytes)?,
                after: get_u64(bytes)?,
                through: get_u64(bytes)?,
            },
            _ => return None,
        };
        bytes.is_empty().then_some(control)
    }
}

/// What this node knows of one other node.
#[derive(Debug)]
struct Peer {
    /// Its bit in the index.
    slot: u16,
    /// Its node id (for logs).
    node_id: String,
    /// The version of its interest the replica holds (`None`: no snapshot yet).
    version: Option<u64>,
    /// Its filters (scoped), as the replica holds them.
    filters: HashSet<String>,
    /// A snapshot being received: (version, parts seen, filters).
    staging: Option<(u64, u32, Vec<String>)>,
    /// It has every message of ours through this sequence number.
    acked: u64,
    /// When it was last heard.
    heard: Instant,
    /// When this node last asked it for a snapshot.
    asked: Option<Instant>,
    /// This node was away from NATS since it had the peer's messages through this sequence
    /// number: the peer's next heartbeat closes the gap with a [`Control::Lost`].
    gap_after: Option<u64>,
}

/// A QoS 1/2 message of one of this node's shards, waiting for the peers that want it.
#[derive(Debug)]
struct Pending {
    seq: u64,
    ticket: u64,
    /// Peer slots still to answer.
    mask: u64,
}

/// What this node knows of the others, and what waits for them.
#[derive(Debug)]
pub struct Peers {
    me: u64,
    peers: HashMap<u64, Peer>,
    /// Slots in use (bit per slot).
    used: u64,
    index: ShardIndex,
    /// Per shard of this node, in ticket order.
    pending: Vec<VecDeque<Pending>>,
    /// This node's own interest (scoped filters) and its version.
    mine: HashSet<String>,
    version: u64,
    /// A peer asked for this node's whole interest.
    snapshot_wanted: bool,
    /// When this node's NATS connection last came up (`None`: down).
    connected_since: Option<Instant>,
    /// How many times the connection came up, as the bridge last saw it.
    pub reconnects_seen: u64,
}

/// What the bridge should do after a control message or a tick.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Todo {
    /// Send these to their node (`Want`) or to the node that sent the heartbeat (`Ack`):
    /// (target epoch, message).
    pub direct: Vec<(u64, Control)>,
    /// Tickets now done: (shard, ticket).
    pub done: Vec<(usize, u64)>,
    /// Tickets whose message a peer may have missed: (shard, ticket); their publishers are
    /// closed unacknowledged.
    pub failed: Vec<(usize, u64)>,
}

impl Peers {
    /// Nothing known yet; `me`: this node's epoch, `shards`: its shard count.
    pub fn new(me: u64, shards: usize) -> Self {
        Peers {
            me,
            peers: HashMap::new(),
            used: 0,
            index: ShardIndex::new(),
            pending: (0..shards).map(|_| VecDeque::new()).collect(),
            mine: HashSet::new(),
            version: 0,
            snapshot_wanted: false,
            connected_since: None,
            reconnects_seen: 0,
        }
    }

    /// True while this node's NATS connection is up (as last set).
    pub fn connected(&self) -> bool {
        self.connected_since.is_some()
    }

    /// The NATS connection came up (`Some(now)`) or went down.
    pub fn set_connected(&mut self, since: Option<Instant>) {
        self.connected_since = since;
    }

    /// How many peers are known.
    pub fn peer_count(&self) -> usize {
        self.peers.len()
    }

    /// How many messages wait for peers.
    pub fn waiting(&self) -> usize {
        self.pending.iter().map(VecDeque::len).sum()
    }

    /// This node's interest in `filter` came or went: the change to announce.
    pub fn announce(&mut self, filter: &str, add: bool) -> Control {
        if add {
            self.mine.insert(filter.to_owned());
        } else {
            self.mine.remove(filter);
        }
        self.version += 1;
        Control::Interest {
            epoch: self.me,
            version: self.version,
            add,
            filter: filter.to_owned(),
        }
    }

    /// The heartbeat to send now (`seq`: the last data message's sequence number), and a
    /// snapshot when a peer asked for one.
    pub fn heartbeat(&mut self, seq: u64, node_id: &str) -> (Control, Vec<Control>) {
        let heartbeat = Control::Heartbeat {
            epoch: self.me,
            seq,
            version: self.version,
            node_id: node_id.to_owned(),
        };
        let snapshot = if std::mem::take(&mut self.snapshot_wanted) {
            self.snapshot()
        } else {
            Vec::new()
        };
        (heartbeat, snapshot)
    }

    /// This node's whole interest, in parts.
    fn snapshot(&self) -> Vec<Control> {
        let mut parts: Vec<Vec<String>> = vec![Vec::new()];
        let mut bytes = 0;
        for filter in &self.mine {
            if bytes + filter.len() + 2 > SNAPSHOT_PART_BYTES {
                parts.push(Vec::new());
                bytes = 0;
            }
            bytes += filter.len() + 2;
            if let Some(last) = parts.last_mut() {
                last.push(filter.clone());
            }
        }
        let count = parts.len() as u32;
        parts
            .into_iter()
            .enumerate()
            .map(|(part, filters)| Control::Snapshot {
                epoch: self.me,
                version: self.version,
                part: part as u32,
                parts: count,
                filters,
            })
            .collect()
    }

    /// The peers that want a message on `topic` (scoped): a mask of slots.
    pub fn interested(&self, topic: &str) -> u64 {
        if self.peers.is_empty() {
            0
        } else {
            self.index.matching_shards(topic)
        }
    }

    /// A QoS 1/2 message of `shard` (its `ticket`) went out as `seq`, wanted by the peers of
    /// `mask`; true when it is done at once (nobody wants it).
    pub fn wait(&mut self, shard: usize, seq: u64, ticket: u64, mask: u64) -> bool {
        if mask == 0 {
            return true;
        }
        if let Some(queue) = self.pending.get_mut(shard) {
            queue.push_back(Pending { seq, ticket, mask });
        }
        false
    }

    /// Takes the done tickets of every shard off its queue (wherever they are in it: one
    /// connection waiting for a slow node holds up no other; the shard keeps each
    /// connection's acknowledgements in order).
    fn advance_all(&mut self, todo: &mut Todo) {
        // Each slot's acknowledged sequence (a dead peer's slot is cleared from every mask).
        let mut acked = [u64::MAX; PEERS_MAX];
        let mut highest = 0;
        for peer in self.peers.values() {
            if let Some(slot) = acked.get_mut(usize::from(peer.slot)) {
                *slot = peer.acked;
            }
            highest = highest.max(peer.acked);
        }
        for (shard, queue) in self.pending.iter_mut().enumerate() {
            // A queue is in sequence order: past the highest acknowledged sequence nothing was
            // answered, so the walk stops there (masks emptied by a death are swept by
            // `expire`).
            let mut index = 0;
            while let Some(pending) = queue.get_mut(index) {
                if pending.seq > highest && pending.mask != 0 {
                    break;
                }
                let mut mask = pending.mask;
                while mask != 0 {
                    let slot = mask.trailing_zeros() as usize;
                    mask &= mask - 1;
                    if acked[slot] >= pending.seq {
                        pending.mask &= !(1 << slot);
                    }
                }
                if pending.mask == 0 {
                    todo.done.push((shard, pending.ticket));
                    queue.remove(index);
                } else {
                    index += 1;
                }
            }
        }
    }

    /// Takes off every queue the messages whose masks a death emptied.
    fn sweep(&mut self, todo: &mut Todo) {
        for (shard, queue) in self.pending.iter_mut().enumerate() {
            queue.retain(|pending| {
                if pending.mask == 0 {
                    todo.done.push((shard, pending.ticket));
                }
                pending.mask != 0
            });
        }
    }

    /// A control message from another node (or this one's own, ignored).
    pub fn receive(&mut self, control: Control, now: Instant, todo: &mut Todo) {
        match control {
            Control::Heartbeat {
                epoch,
                seq,
                version,
                node_id,
            } => {
                let me = self.me;
                if epoch == me {
                    return;
                }
                let Some(peer) = self.peer(epoch, &node_id, now) else {
                    return;
                };
                peer.heard = now;
                if let Some(lost) = close_gap(peer, me, seq) {
                    todo.direct.push((epoch, lost));
                }
                // Everything it published before this heartbeat that we were to get is in.
                todo.direct.push((
                    epoch,
                    Control::Ack {
                        from: me,
                        through: seq,
                    },
                ));
                if peer.version != Some(version) && peer.staging.is_none() {
                    let due = peer.asked.is_none_or(|at| now >= at + PEER_TIMEOUT);
                    if due {
                        peer.asked = Some(now);
                        todo.direct.push((epoch, Control::Want { target: epoch }));
                    }
                }
            }
            Control::Interest {
                epoch,
                version,
                add,
                filter,
            } => {
                let Some(peer) = heard(&mut self.peers, epoch, now) else {
                    return;
                };
                if peer.version.is_some_and(|v| v + 1 == version) {
                    peer.version = Some(version);
                    let slot = peer.slot;
                    if add {
                        if peer.filters.len() < PEER_FILTERS_MAX
                            && acceptable(&filter)
                            && peer.filters.insert(filter.clone())
                        {
                            self.index.add(&filter, slot);
                        }
                    } else if peer.filters.remove(&filter) {
                        self.index.remove(&filter, slot);
                    }
                } else if peer.version.is_some_and(|v| version > v + 1) {
                    // A change was missed: the next heartbeat asks for the whole interest.
                    peer.version = None;
                    peer.asked = None;
                }
            }
            Control::Want { target } => {
                if target == self.me {
                    self.snapshot_wanted = true;
                }
            }
            Control::Snapshot {
                epoch,
                version,
                part,
                parts,
                filters,
            } => {
                let Some(peer) = heard(&mut self.peers, epoch, now) else {
                    return;
                };
                let staging = match (&mut peer.staging, part) {
                    (_, 0) => peer.staging.insert((version, 0, Vec::new())),
                    (Some(staging), _) if staging.0 == version && staging.1 == part => staging,
                    _ => {
                        peer.staging = None;
                        return;
                    }
                };
                staging.1 += 1;
                staging
                    .2
                    .extend(filters.into_iter().filter(|f| acceptable(f)));
                staging.2.truncate(PEER_FILTERS_MAX);
                if staging.1 < parts {
                    return;
                }
                let Some((version, _, filters)) = peer.staging.take() else {
                    return;
                };
                let slot = peer.slot;
                for old in peer.filters.drain() {
                    self.index.remove(&old, slot);
                }
                for filter in &filters {
                    self.index.add(filter, slot);
                }
                peer.filters = filters.into_iter().collect();
                peer.version = Some(version);
            }
            Control::Ack { from, through } => {
                let Some(peer) = heard(&mut self.peers, from, now) else {
                    return;
                };
                if through > peer.acked {
                    peer.acked = through;
                    self.advance_all(todo);
                }
            }
            // The bridge's own business (sessions moving), not the peers'.
            Control::Fetch { .. } | Control::Session { .. } => {}
            Control::Lost {
                from,
                after,
                through,
            } => {
                let Some(peer) = self.peers.get(&from) else {
                    return;
                };
                let bit = 1u64 << peer.slot;
                for (shard, queue) in self.pending.iter_mut().enumerate() {
                    queue.retain(|p| {
                        let missed = p.mask & bit != 0 && p.seq > after && p.seq <= through;
                        if missed {
                            todo.failed.push((shard, p.ticket));
                        }
                        !missed
                    });
                }
                self.advance_all(todo);
            }
        }
    }

    /// The acknowledgement to send `epoch` for its messages through `through` (data it just
    /// handed over), preceded by a [`Control::Lost`] when this node was away since.
    pub fn ack(&mut self, epoch: u64, through: u64, todo: &mut Todo) {
        let me = self.me;
        if let Some(lost) = self
            .peers
            .get_mut(&epoch)
            .and_then(|peer| close_gap(peer, me, through))
        {
            todo.direct.push((epoch, lost));
        }
        todo.direct
            .push((epoch, Control::Ack { from: me, through }));
    }

    /// This node's NATS connection came back: whatever the peers published meanwhile may be
    /// lost to it (`marks` holds the last sequence number it had of each), and what it sent
    /// just before the break may be lost to them (the socket's unsent bytes died with it), so
    /// every message still waiting for a peer fails.
    pub fn reconnected(&mut self, marks: &HashMap<u64, u64>, todo: &mut Todo) {
        for (epoch, peer) in &mut self.peers {
            let had = marks.get(epoch).copied().unwrap_or(0);
            peer.gap_after = Some(peer.gap_after.map_or(had, |g| g.min(had)));
        }
        for (shard, queue) in self.pending.iter_mut().enumerate() {
            queue.retain(|p| {
                if p.mask != 0 {
                    todo.failed.push((shard, p.ticket));
                }
                p.mask == 0
            });
        }
        self.advance_all(todo);
    }

    /// The peer `epoch`, made known on its first heartbeat (`None`: no slot left).
    fn peer(&mut self, epoch: u64, node_id: &str, now: Instant) -> Option<&mut Peer> {
        if !self.peers.contains_key(&epoch) {
            if self.used == u64::MAX {
                tracing::warn!(
                    node = node_id,
                    "cluster: more than {PEERS_MAX} peers; acknowledgements do not wait for this one"
                );
                return None;
            }
            let slot = (!self.used).trailing_zeros() as u16;
            self.used |= 1 << slot;
            tracing::info!(node = node_id, "cluster: a node joined");
            self.peers.insert(
                epoch,
                Peer {
                    slot,
                    node_id: node_id.to_owned(),
                    version: None,
                    filters: HashSet::new(),
                    staging: None,
                    acked: 0,
                    heard: now,
                    asked: None,
                    gap_after: None,
                },
            );
        }
        self.peers.get_mut(&epoch)
    }

    /// Forgets the peers not heard for [`PEER_TIMEOUT`] while this node was connected: nothing
    /// waits for them any more.
    pub fn expire(&mut self, now: Instant, todo: &mut Todo) {
        let Some(since) = self.connected_since else {
            // Disconnected, this node hears nobody: that says nothing of them.
            return;
        };
        let dead: Vec<u64> = self
            .peers
            .iter()
            .filter(|(_, p)| now.saturating_duration_since(p.heard.max(since)) >= PEER_TIMEOUT)
            .map(|(epoch, _)| *epoch)
            .collect();
        if dead.is_empty() {
            return;
        }
        for epoch in dead {
            let Some(peer) = self.peers.remove(&epoch) else {
                continue;
            };
            tracing::warn!(node = %peer.node_id, "cluster: a node stopped answering; nothing waits for it any more");
            for filter in &peer.filters {
                self.index.remove(filter, peer.slot);
            }
            // Its slot may go to a newcomer: no waiting message may still name it.
            let bit = 1u64 << peer.slot;
            for queue in &mut self.pending {
                for pending in queue.iter_mut() {
                    pending.mask &= !bit;
                }
            }
            self.used &= !bit;
        }
        self.sweep(todo);
        self.advance_all(todo);
    }
}

/// A known peer, heard from now.
fn heard(peers: &mut HashMap<u64, Peer>, epoch: u64, now: Instant) -> Option<&mut Peer> {
    let peer = peers.get_mut(&epoch)?;
    peer.heard = now;
    Some(peer)
}

/// True for a filter a peer may announce (scoped, valid once its scope is off): the replica
/// takes nothing else.
fn acceptable(filter: &str) -> bool {
    ringmq_router::validate_filter(ringmq_router::strip_scope(filter).1, usize::MAX).is_ok()
}

/// Messages of other nodes handed to this node's shards whose senders wait for them: a sender
/// is acknowledged through a sequence number once every such message up to it is routed here
/// (and, with `sync` durability, in the logs), which the shards say with receipts, in order
/// per shard.
#[derive(Debug)]
pub struct Receipts {
    /// Per shard: the last receipt number handed out, and the last one the shard gave back.
    next: Vec<u64>,
    done: Vec<u64>,
    /// Per sender: (sequence, shard, receipt) not given back yet, in sequence order.
    pending: HashMap<u64, VecDeque<(u64, usize, u64)>>,
}

impl Receipts {
    /// None pending, for `shards` shards.
    pub fn new(shards: usize) -> Self {
        Receipts {
            next: vec![0; shards],
            done: vec![0; shards],
            pending: HashMap::new(),
        }
    }

    /// Sender `epoch`'s message `seq` goes to `shard`: its receipt number.
    pub fn expect(&mut self, epoch: u64, seq: u64, shard: usize) -> u64 {
        let Some(next) = self.next.get_mut(shard) else {
            return 0;
        };
        *next += 1;
        let receipt = *next;
        self.pending
            .entry(epoch)
            .or_default()
            .push_back((seq, shard, receipt));
        receipt
    }

    /// `shard` gave back every receipt through `receipt`: the senders to acknowledge, and
    /// through which sequence number (`marks`: the last sequence number seen of each).
    pub fn done(
        &mut self,
        shard: usize,
        receipt: u64,
        marks: &HashMap<u64, u64>,
    ) -> Vec<(u64, u64)> {
        if let Some(done) = self.done.get_mut(shard) {
            *done = (*done).max(receipt);
        }
        let mut acks = Vec::new();
        let done = &self.done;
        self.pending.retain(|epoch, queue| {
            let mut popped = false;
            while queue
                .front()
                .is_some_and(|(_, shard, r)| done.get(*shard).is_some_and(|d| r <= d))
            {
                queue.pop_front();
                popped = true;
            }
            if popped {
                let through = match queue.front() {
                    Some((seq, _, _)) => seq - 1,
                    None => marks.get(epoch).copied().unwrap_or(0),
                };
                acks.push((*epoch, through));
            }
            !queue.is_empty()
        });
        acks
    }

    /// An acknowledgement of `epoch` through `through` lowered below its first message not
    /// given back yet.
    pub fn cap(&self, epoch: u64, through: u64) -> u64 {
        match self.pending.get(&epoch).and_then(VecDeque::front) {
            Some((seq, _, _)) => through.min(seq - 1),
            None => through,
        }
    }
}

/// The [`Control::Lost`] that closes the gap this node's outage left in `peer`'s messages,
/// once it hears of them again through `through` (everything in the gap counts as missed,
/// even what did arrive: a publisher sends again rather than a message go unacknowledged
/// and lost).
fn close_gap(peer: &mut Peer, me: u64, through: u64) -> Option<Control> {
    let after = peer.gap_after.take()?;
    (through > after).then_some(Control::Lost {
        from: me,
        after,
        through,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: u64 = 0xA;
    const B: u64 = 0xB;
    const C: u64 = 0xC;

    fn hb(epoch: u64, seq: u64, version: u64) -> Control {
        Control::Heartbeat {
            epoch,
            seq,
            version,
            node_id: format!("n{epoch}"),
        }
    }

    /// `me` knows `peer` with the given filters (its heartbeat, then its snapshot).
    fn know(me: &mut Peers, peer: u64, filters: &[&str], now: Instant) {
        let mut todo = Todo::default();
        me.receive(hb(peer, 0, 1), now, &mut todo);
        assert!(todo
            .direct
            .contains(&(peer, Control::Want { target: peer })));
        me.receive(
            Control::Snapshot {
                epoch: peer,
                version: 1,
                part: 0,
                parts: 1,
                filters: filters.iter().map(|f| f.to_string()).collect(),
            },
            now,
            &mut todo,
        );
    }

    #[test]
    fn every_control_message_round_trips_and_hostile_bytes_are_refused() {
        let all = [
            hb(A, 7, 3),
            Control::Interest {
                epoch: A,
                version: 4,
                add: true,
                filter: "a/+/#".into(),
            },
            Control::Want { target: B },
            Control::Snapshot {
                epoch: A,
                version: 4,
                part: 0,
                parts: 2,
                filters: vec!["x".into(), "y/#".into()],
            },
            Control::Ack {
                from: B,
                through: 9,
            },
            Control::Lost {
                from: B,
                after: 3,
                through: 9,
            },
            Control::Fetch {
                from: B,
                request: 4,
                client_id: "\u{0}7\u{0}dev".into(),
            },
            Control::Session {
                request: 4,
                record: vec![1, 2, 3],
            },
        ];
        let mut buf = Vec::new();
        for control in all {
            control.encode(&mut buf);
            assert_eq!(Control::decode(&buf), Some(control.clone()));
            for cut in 0..buf.len() {
                assert_eq!(
                    Control::decode(&buf[..cut]),
                    None,
                    "{control:?} cut at {cut}"
                );
            }
            buf.push(0);
            assert_eq!(Control::decode(&buf), None, "trailing bytes");
        }
        // A snapshot announcing four billion filters in a few bytes reserves nothing.
        let mut lie = vec![SNAPSHOT_KIND];
        lie.extend_from_slice(&A.to_le_bytes());
        lie.extend_from_slice(&1u64.to_le_bytes());
        lie.extend_from_slice(&0u32.to_le_bytes());
        lie.extend_from_slice(&1u32.to_le_bytes());
        lie.extend_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(Control::decode(&lie), None);
        assert_eq!(Control::decode(&[9, 1, 2]), None, "unknown kind");
        assert_eq!(Control::decode(&[]), None);
    }

    /// A message waits for exactly the peers whose filters match it, each up to its sequence;
    /// a peer that wants nothing of it is not waited for.
    #[test]
    fn a_message_waits_for_the_peers_that_want_it() {
        let now = Instant::now();
        let mut me = Peers::new(A, 2);
        know(&mut me, B, &["t/#"], now);
        know(&mut me, C, &["t/x", "u/+"], now);
        assert_eq!(me.peer_count(), 2);
        let both = me.interested("t/x");
        assert_eq!(both.count_ones(), 2);
        assert_eq!(me.interested("t/y").count_ones(), 1);
        assert_eq!(me.interested("v"), 0);
        assert!(!me.wait(0, 1, 1, both));
        assert!(me.wait(1, 2, 1, 0), "nobody wants it: done at once");
        let mut todo = Todo::default();
        me.receive(
            Control::Ack {
                from: B,
                through: 1,
            },
            now,
            &mut todo,
        );
        assert!(todo.done.is_empty(), "C still due");
        me.receive(
            Control::Ack {
                from: C,
                through: 5,
            },
            now,
            &mut todo,
        );
        assert_eq!(todo.done, [(0, 1)]);
        assert_eq!(me.waiting(), 0);
    }

    /// A ticket waiting for a slow peer holds up no later ticket of its shard that needs
    /// another (the shard keeps each connection's order).
    #[test]
    fn tickets_complete_as_their_peers_answer() {
        let now = Instant::now();
        let mut me = Peers::new(A, 1);
        know(&mut me, B, &["slow/#"], now);
        know(&mut me, C, &["fast/#"], now);
        let b = me.interested("slow/1");
        let c = me.interested("fast/1");
        assert!(!me.wait(0, 1, 1, b));
        assert!(!me.wait(0, 2, 2, c));
        let mut todo = Todo::default();
        me.receive(
            Control::Ack {
                from: C,
                through: 2,
            },
            now,
            &mut todo,
        );
        assert_eq!(todo.done, [(0, 2)], "ticket 1 still waits for B");
        me.receive(
            Control::Ack {
                from: B,
                through: 1,
            },
            now,
            &mut todo,
        );
        assert_eq!(todo.done, [(0, 2), (0, 1)]);
        assert_eq!(me.waiting(), 0);
    }

    /// A heartbeat is answered with an acknowledgement through its sequence (what we were to
    /// get of it is in), and an unknown version asks for a snapshot, not more than once per
    /// timeout.
    #[test]
    fn heartbeats_are_acknowledged_and_missing_interest_asked_for() {
        let now = Instant::now();
        let mut me = Peers::new(A, 1);
        let mut todo = Todo::default();
        me.receive(hb(B, 42, 3), now, &mut todo);
        assert_eq!(
            todo.direct,
            [
                (
                    B,
                    Control::Ack {
                        from: A,
                        through: 42
                    }
                ),
                (B, Control::Want { target: B })
            ]
        );
        let mut again = Todo::default();
        me.receive(hb(B, 43, 3), now + HEARTBEAT, &mut again);
        assert_eq!(
            again.direct,
            [(
                B,
                Control::Ack {
                    from: A,
                    through: 43
                }
            )]
        );
        // A missed change drops the replica's version: the next heartbeat asks again.
        know(&mut me, C, &[], now);
        let mut todo = Todo::default();
        me.receive(
            Control::Interest {
                epoch: C,
                version: 3,
                add: true,
                filter: "t".into(),
            },
            now,
            &mut todo,
        );
        assert_eq!(me.interested("t"), 0, "out of order: not applied");
        me.receive(hb(C, 0, 3), now, &mut todo);
        assert!(todo.direct.contains(&(C, Control::Want { target: C })));
    }

    /// Interest changes apply in version order; a hostile filter is not taken.
    #[test]
    fn interest_changes_apply_in_order() {
        let now = Instant::now();
        let mut me = Peers::new(A, 1);
        know(&mut me, B, &[], now);
        let mut todo = Todo::default();
        for (version, add, filter) in [(2, true, "a/#"), (3, true, "a/#/b"), (4, false, "a/#")] {
            me.receive(
                Control::Interest {
                    epoch: B,
                    version,
                    add,
                    filter: filter.into(),
                },
                now,
                &mut todo,
            );
        }
        assert_eq!(me.interested("a/x"), 0);
        let mut mine = Peers::new(B, 1);
        mine.announce("a/#", true);
        let Control::Interest { version, .. } = mine.announce("b", true) else {
            panic!("an interest change");
        };
        assert_eq!(version, 2);
        mine.snapshot_wanted = true;
        let (_, parts) = mine.heartbeat(0, "n");
        let Control::Snapshot { filters, parts, .. } = &parts[0] else {
            panic!("a snapshot");
        };
        assert_eq!((filters.len(), *parts), (2, 1));
    }

    /// A peer silent for the timeout while this node is connected is dead and waited for no
    /// more; while this node is disconnected nobody dies.
    #[test]
    fn a_silent_peer_is_waited_for_no_more() {
        let now = Instant::now();
        let mut me = Peers::new(A, 1);
        know(&mut me, B, &["t"], now);
        let b = me.interested("t");
        me.wait(0, 1, 1, b);
        let mut todo = Todo::default();
        me.expire(now + PEER_TIMEOUT * 2, &mut todo);
        assert!(todo.done.is_empty(), "not connected: no verdict");
        me.set_connected(Some(now));
        me.expire(now + PEER_TIMEOUT / 2, &mut todo);
        assert!(todo.done.is_empty());
        me.expire(now + PEER_TIMEOUT, &mut todo);
        assert_eq!(todo.done, [(0, 1)]);
        assert_eq!(me.peer_count(), 0);
        assert_eq!(me.interested("t"), 0);
    }

    /// A snapshot in parts replaces the replica only once every part is in.
    #[test]
    fn a_snapshot_in_parts_replaces_the_replica() {
        let now = Instant::now();
        let mut me = Peers::new(A, 1);
        know(&mut me, B, &["old"], now);
        let mut todo = Todo::default();
        let part = |part, filters: &[&str]| Control::Snapshot {
            epoch: B,
            version: 9,
            part,
            parts: 2,
            filters: filters.iter().map(|f| f.to_string()).collect(),
        };
        me.receive(part(0, &["new/1"]), now, &mut todo);
        assert_ne!(me.interested("old"), 0, "not yet replaced");
        me.receive(part(1, &["new/2", "bad/#/x"]), now, &mut todo);
        assert_eq!(me.interested("old"), 0);
        assert_ne!(me.interested("new/1"), 0);
        assert_ne!(me.interested("new/2"), 0);
        assert_eq!(
            me.interested("bad/y/x"),
            0,
            "an invalid filter is not taken"
        );
    }

    /// A sender is acknowledged only through what every shard gave back, in its order, and a
    /// heartbeat's acknowledgement stops before the first message not given back.
    #[test]
    fn receipts_acknowledge_in_each_senders_order() {
        let mut receipts = Receipts::new(2);
        let marks = HashMap::from([(A, 7), (B, 3)]);
        assert_eq!(receipts.expect(A, 5, 0), 1);
        assert_eq!(receipts.expect(A, 6, 1), 1);
        assert_eq!(receipts.expect(A, 7, 0), 2);
        assert_eq!(receipts.expect(B, 3, 1), 2);
        assert_eq!(receipts.cap(A, 9), 4);
        assert!(
            receipts.done(1, 2, &marks).contains(&(B, 3)),
            "B's one message is in"
        );
        assert_eq!(receipts.cap(A, 9), 4, "A's 5 (shard 0) is not");
        assert_eq!(
            receipts.done(0, 1, &marks),
            [(A, 6)],
            "5 and then 6 (shard 1 did 1)"
        );
        assert_eq!(receipts.done(0, 2, &marks), [(A, 7)]);
        assert_eq!(receipts.cap(A, 9), 9);
    }

    /// A node back from an outage tells each peer which of its messages it may have missed;
    /// the peer fails exactly the tickets in that range that waited for it.
    #[test]
    fn a_gap_after_a_reconnect_fails_the_tickets_it_may_have_lost() {
        let now = Instant::now();
        let mut a = Peers::new(A, 1);
        know(&mut a, B, &["t"], now);
        let b_mask = a.interested("t");
        a.wait(0, 1, 1, b_mask);
        a.wait(0, 2, 2, 0);
        a.wait(0, 3, 3, b_mask);
        a.wait(0, 4, 4, b_mask);
        // B had A's messages through 1, was away, and hears A's heartbeat at 3.
        let mut b = Peers::new(B, 1);
        let mut todo = Todo::default();
        b.receive(hb(A, 1, 0), now, &mut todo);
        b.reconnected(&HashMap::from([(A, 1)]), &mut todo);
        let mut todo = Todo::default();
        b.receive(hb(A, 3, 0), now, &mut todo);
        let lost = todo
            .direct
            .iter()
            .find(|(_, c)| matches!(c, Control::Lost { .. }))
            .cloned()
            .expect("a Lost notice");
        assert_eq!(
            lost,
            (
                A,
                Control::Lost {
                    from: B,
                    after: 1,
                    through: 3
                }
            )
        );
        let mut todo = Todo::default();
        a.receive(lost.1, now, &mut todo);
        assert_eq!(
            todo.failed,
            [(0, 3)],
            "only ticket 3 waited for B in the gap"
        );
        a.receive(
            Control::Ack {
                from: B,
                through: 3,
            },
            now,
            &mut todo,
        );
        // B's ack through 3 lets 1 go (2 needed nobody, 3 failed).
        assert_eq!(todo.done, [(0, 1)]);
        assert_eq!(a.waiting(), 1, "ticket 4 waits on");
    }
}
