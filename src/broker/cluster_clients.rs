//! The cluster-wide registry of client ids (`docs/cluster.md`, "Client ids").
//!
//! A JetStream key-value bucket holds, per client id, the node that last connected it. A node
//! that connects a client id writes it there; every node watches the bucket, and a node that
//! has the client id connected since before a newer write of another node ends that
//! connection (v5 DISCONNECT 0x8E), as a second CONNECT does on one node. The bucket's order
//! decides between two nodes connecting the same id at once: the last write wins on both.
//!
//! Writes do not hold up the bridge: each is a task of its own, and its revision comes back
//! through a channel. Until it does, a write of another node seen meanwhile is remembered,
//! and decided once this node's revision is known.

use std::collections::HashMap;

use bytes::{Buf, BufMut, Bytes};
use ringmq_proto::mqtt::Str;

/// Local claims the registry tracks at most (a node's connections and kept sessions); past
/// it a claim is not written (logged) and that client id is not taken over from here.
pub const CLAIMS_MAX: usize = 4 << 20;

/// What this node knows of one of its client ids.
#[derive(Debug, Default)]
struct Claim {
    /// Sessions of it here (a takeover between two shards has two for a moment).
    sessions: u32,
    /// The revision of this node's last write of it (`None`: the write is on its way).
    revision: Option<u64>,
    /// The newest revision written by another node while ours was on its way.
    foreign: Option<(u64, bool)>,
}

/// A registration as the bucket holds it: the owner's epoch, whether it asked for a clean
/// start, and its node id (for people reading the bucket).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Registration {
    /// The connecting node's epoch.
    pub epoch: u64,
    /// Its CONNECT asked for a clean start.
    pub clean_start: bool,
    /// Its node id.
    pub node_id: String,
}

impl Registration {
    /// The value's bytes.
    pub fn encode(&self) -> Bytes {
        let mut buf = Vec::with_capacity(9 + self.node_id.len());
        buf.put_u64_le(self.epoch);
        buf.put_u8(u8::from(self.clean_start));
        buf.extend_from_slice(self.node_id.as_bytes());
        Bytes::from(buf)
    }

    /// A value from the bucket (`None`: not one of ours).
    pub fn decode(mut bytes: &[u8]) -> Option<Registration> {
        if bytes.len() < 9 {
            return None;
        }
        let epoch = bytes.get_u64_le();
        let clean_start = match bytes.get_u8() {
            0 => false,
            1 => true,
            _ => return None,
        };
        let node_id = std::str::from_utf8(bytes).ok()?.to_owned();
        // A node id becomes a NATS subject token (fetches are addressed by it): only what the
        // configuration allows for one, never a `.`, `*` or `>` from a forged value.
        let token = |b: u8| b.is_ascii_alphanumeric() || b == b'-' || b == b'_';
        if node_id.is_empty() || node_id.len() > 64 || !node_id.bytes().all(token) {
            return None;
        }
        Some(Registration {
            epoch,
            clean_start,
            node_id,
        })
    }
}

/// The client ids connected on this node, as the registry knows them.
#[derive(Debug, Default)]
pub struct Claims {
    claims: HashMap<Str, Claim>,
}

impl Claims {
    /// A session of `client_id` (scoped) began here; true when the registry must be written
    /// (false: too many tracked).
    pub fn claim(&mut self, client_id: &Str) -> bool {
        if !self.claims.contains_key(client_id) && self.claims.len() >= CLAIMS_MAX {
            tracing::warn!(
                "cluster: more than {CLAIMS_MAX} client ids tracked; one is not registered"
            );
            return false;
        }
        let claim = self.claims.entry(client_id.clone()).or_default();
        claim.sessions += 1;
        claim.revision = None;
        claim.foreign = None;
        true
    }

    /// A session of `client_id` ended here.
    pub fn release(&mut self, client_id: &Str) {
        if let Some(claim) = self.claims.get_mut(client_id) {
            claim.sessions = claim.sessions.saturating_sub(1);
            if claim.sessions == 0 {
                self.claims.remove(client_id);
            }
        }
    }

    /// This node's write of `client_id` landed at `revision`; returns the takeover to make
    /// now (`Some(clean_start)`) when another node wrote it later meanwhile.
    pub fn written(&mut self, client_id: &Str, revision: u64) -> Option<bool> {
        let claim = self.claims.get_mut(client_id)?;
        claim.revision = Some(revision);
        match claim.foreign.take() {
            Some((theirs, clean)) if theirs > revision => {
                self.claims.remove(client_id);
                Some(clean)
            }
            _ => None,
        }
    }

    /// Another node wrote `client_id` at `revision`; returns the takeover to make
    /// (`Some(clean_start)`) when this node's claim is older.
    pub fn written_elsewhere(
        &mut self,
        client_id: &Str,
        revision: u64,
        clean_start: bool,
    ) -> Option<bool> {
        let claim = self.claims.get_mut(client_id)?;
        match claim.revision {
            Some(ours) if ours < revision => {
                self.claims.remove(client_id);
                Some(clean_start)
            }
            Some(_) => None,
            None => {
                if claim.foreign.is_none_or(|(seen, _)| seen < revision) {
                    claim.foreign = Some((revision, clean_start));
                }
                None
            }
        }
    }

    /// How many client ids are tracked.
    pub fn len(&self) -> usize {
        self.claims.len()
    }

    /// True when none is.
    pub fn is_empty(&self) -> bool {
        self.claims.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(s: &str) -> Str {
        Str::from(s)
    }

    #[test]
    fn registrations_round_trip_and_hostile_values_are_refused() {
        let r = Registration {
            epoch: 77,
            clean_start: true,
            node_id: "n1".into(),
        };
        assert_eq!(Registration::decode(&r.encode()), Some(r));
        assert_eq!(Registration::decode(&[1, 2, 3]), None);
        let mut bad = vec![0u8; 8];
        bad.push(2);
        assert_eq!(
            Registration::decode(&bad),
            None,
            "a flag that is not 0 or 1"
        );
        let mut bad = vec![0u8; 8];
        bad.extend_from_slice(&[0, 0xff]);
        assert_eq!(Registration::decode(&bad), None, "a node id not UTF-8");
        for forged in ["", "a.b", "*", ">", "n 1"] {
            let value = Registration {
                epoch: 1,
                clean_start: false,
                node_id: forged.into(),
            }
            .encode();
            assert_eq!(Registration::decode(&value), None, "{forged:?}");
        }
    }

    /// The newer write wins, whichever of the two revisions is known first.
    #[test]
    fn the_later_write_wins() {
        let mut claims = Claims::default();
        assert!(claims.claim(&id("x")));
        assert_eq!(claims.written(&id("x"), 5), None);
        assert_eq!(claims.written_elsewhere(&id("x"), 4, false), None, "older");
        assert_eq!(claims.written_elsewhere(&id("x"), 6, true), Some(true));
        assert!(claims.is_empty(), "taken over: forgotten");
        // Another node's write seen while ours is on its way: decided when ours lands.
        claims.claim(&id("y"));
        assert_eq!(claims.written_elsewhere(&id("y"), 9, false), None);
        assert_eq!(claims.written(&id("y"), 8), Some(false), "theirs is newer");
        claims.claim(&id("z"));
        assert_eq!(claims.written_elsewhere(&id("z"), 9, false), None);
        assert_eq!(claims.written(&id("z"), 10), None, "ours is newer");
        assert_eq!(claims.len(), 1);
        // A client id not connected here is nobody's business here.
        assert_eq!(claims.written_elsewhere(&id("w"), 3, false), None);
    }

    /// Two sessions of one id for a moment (a takeover between shards): released in any
    /// order, the claim stays while one does.
    #[test]
    fn sessions_are_counted() {
        let mut claims = Claims::default();
        claims.claim(&id("x"));
        claims.claim(&id("x"));
        claims.release(&id("x"));
        assert_eq!(claims.len(), 1);
        claims.release(&id("x"));
        assert!(claims.is_empty());
        claims.release(&id("x"));
        assert!(claims.is_empty());
    }
}
