//! Tenancy on a shard: who a session belongs to, the password cache logins consult, live
//! revocation when the control-plane snapshot changes, the sessions API's questions, and
//! per-org usage. (The login itself, which waits for a verifier thread, is the driver's.)

use std::rc::Rc;
use std::sync::Arc;
use std::time::Instant;

use ahash::AHashMap;
use sha2::{Digest, Sha256};

use super::{Output, Shard, Slot};
use crate::control::sessions::{
    OrgCounters, SessionInfo, SessionState as ListState, SessionsOp, ShardAnswer, SubscriptionInfo,
};
use crate::control::snapshot::{OrgNum, Snapshot, UserAuth};
use ringmq_proto::mqtt::{ReasonCode, Str};
use ringmq_proto::session::{Access, Authorizer};

/// Verified (user, password) digests kept per shard at most; a full cache starts over, which
/// only costs the next logins one argon2 check each.
const PASSWORD_CACHE_MAX: usize = 65_536;

/// Who a connection logged in as.
#[derive(Debug)]
pub struct Principal {
    /// The user record the connection was admitted with.
    pub user: Arc<UserAuth>,
}

impl Principal {
    /// The owner tag of this user's sessions ([`owner_tag`]).
    pub fn owner(&self) -> u64 {
        let name = self.user.owner.as_deref().unwrap_or(&self.user.username);
        owner_tag(self.user.org, name)
    }
}

/// The tag of the principal a session belongs to: 0 for anonymous clients, otherwise 64 bits
/// of SHA-256 over the org and username. Stable across restarts (a stored session keeps its
/// owner) and, being a cryptographic digest of admin-chosen names, never the same for two
/// users of one org in practice; 8 bytes per session instead of a copy of the name.
pub fn owner_tag(org: OrgNum, username: &str) -> u64 {
    let mut hasher = Sha256::new();
    hasher.update(org.to_be_bytes());
    hasher.update(username.as_bytes());
    let digest = hasher.finalize();
    let mut tag = [0u8; 8];
    tag.copy_from_slice(&digest[..8]);
    u64::from_be_bytes(tag).max(1)
}

/// A principal's ACL checks, from the snapshot it logged in with (or a newer one): the same
/// `Rc` is the session's principal and its connection's authorizer.
impl Authorizer for Principal {
    fn may_publish(&self, topic: &str, client_id: &str) -> bool {
        self.user
            .acl
            .may_publish(topic, &self.user.username, client_id)
    }

    fn may_subscribe(&self, filter: &str, client_id: &str) -> bool {
        self.user
            .acl
            .may_subscribe(filter, &self.user.username, client_id)
    }
}

/// A shard's auth caches and usage counters.
#[derive(Debug, Default)]
pub struct AuthState {
    /// sha256(stored hash, password) of logins that passed argon2, per (org, username).
    password_cache: AHashMap<(OrgNum, String), [u8; 32]>,
    /// Counters of every org but the default one.
    org_counters: AHashMap<OrgNum, OrgCounters>,
    /// The default org's counters (kept apart: the single-tenant hot path does no lookup).
    default_counters: OrgCounters,
}

impl Shard {
    /// The shard's password cache and usage counters.
    pub fn auth(&self) -> &AuthState {
        &self.auth
    }

    /// The same, to change.
    pub fn auth_mut(&mut self) -> &mut AuthState {
        &mut self.auth
    }
}

impl AuthState {
    /// Counters of `org`.
    pub fn counters(&mut self, org: OrgNum) -> &mut OrgCounters {
        if org == 0 {
            &mut self.default_counters
        } else {
            self.org_counters.entry(org).or_default()
        }
    }
}

/// What the password cache keeps of a login that passed: sha256(stored hash, password), so
/// the cache never holds a password, and a changed hash invalidates it.
pub fn password_digest(hash: &str, password: &[u8]) -> [u8; 32] {
    let mut hasher = Sha256::new();
    hasher.update(hash.as_bytes());
    hasher.update([0]);
    hasher.update(password);
    hasher.finalize().into()
}

impl AuthState {
    /// True when `password` passed argon2 for `user` before (and the hash is unchanged).
    pub fn password_known(&self, user: &UserAuth, password: &[u8]) -> bool {
        self.password_cache
            .get(&(user.org, user.username.clone()))
            .is_some_and(|known| *known == password_digest(&user.password_hash, password))
    }

    /// Remembers that `password` passed argon2 for `user`.
    pub fn remember_password(&mut self, user: &UserAuth, password: &[u8]) {
        if self.password_cache.len() >= PASSWORD_CACHE_MAX {
            self.password_cache.clear();
        }
        self.password_cache.insert(
            (user.org, user.username.clone()),
            password_digest(&user.password_hash, password),
        );
    }
}

/// The outcome of a successful login.
pub struct Admitted {
    /// Org scope and ACL for the session.
    pub access: Access,
    /// The user, for revocation; `None` for anonymous clients.
    pub principal: Option<Rc<Principal>>,
}

impl Shard {
    /// Puts a newer control-plane snapshot in force: connections whose user was deleted,
    /// disabled, expired or given a new password are closed (0x87 in v5), and the sessions of
    /// a deleted user (or org) are discarded; the others get the user's new ACL at once, and
    /// lose the subscriptions and queued messages it no longer allows.
    pub fn set_snapshot(&mut self, snapshot: Arc<Snapshot>, now: Instant) {
        if snapshot.version == self.snapshot.version {
            return;
        }
        let previous = std::mem::replace(&mut self.snapshot, snapshot);
        self.auth.password_cache.clear();
        // A deleted org's retained messages are nobody's any more: every replica lets them go
        // (each shard sees the same snapshot), which also gives back the org's retained quota.
        let gone: Vec<OrgNum> = previous
            .orgs()
            .map(|org| org.num)
            .filter(|num| self.snapshot.org(*num).is_none())
            .collect();
        for org in gone {
            self.forget_org_retained(org);
        }
        self.recheck_streams(now);
        let now_secs = self.unix_secs(now);
        let mut closing = Vec::new();
        let mut refilter = Vec::new();
        for slot in 0..self.entries.bound() {
            let Some(entry) = self.entries.get_mut(slot) else {
                continue;
            };
            let Some(principal) = entry.principal.clone() else {
                continue;
            };
            let old = &principal.user;
            match self.snapshot.user(old.org, &old.username) {
                Some(new)
                    if new.enabled
                        && new.password_hash == old.password_hash
                        && !matches!(new.expires_at, Some(at) if at <= now_secs) =>
                {
                    if !Arc::ptr_eq(new, old) {
                        let principal = Rc::new(Principal {
                            user: Arc::clone(new),
                        });
                        if let Some(link) = entry.session.link.as_mut() {
                            link.access.authorizer = Some(principal.clone());
                        }
                        entry.principal = Some(principal);
                        // Every snapshot is built afresh; only a user whose rules changed
                        // (its generation) has subscriptions to check again.
                        if new.generation != old.generation {
                            refilter.push(slot);
                        }
                    }
                }
                Some(_) => closing.push((slot, false)),
                // A deleted user's sessions go with it; a token-exchange user's (deleted when
                // its token expires) wait for the subject's next exchange, or their expiry.
                None => closing.push((slot, old.owner.is_none())),
            }
        }
        for slot in refilter {
            self.refilter_session(slot);
        }
        for (slot, gone) in closing {
            let connected = self.entry_mut(slot).is_some_and(|e| e.conn().is_some());
            if connected {
                tracing::info!(slot, "credentials revoked; closing the connection");
                self.end_connection(
                    slot,
                    Some((ReasonCode::NOT_AUTHORIZED, "credentials revoked")),
                    true,
                    now,
                );
            }
            if gone {
                // The user (or its org) no longer exists: nobody may resume its session, and
                // what it queued must not wait for a namesake created later.
                if self.entries.get(slot).is_some() {
                    tracing::info!(slot, "user deleted; discarding its session");
                    self.end_session(slot, now);
                }
            }
            // Disabled, expired or a new password: the session waits for its own user, and its
            // subscriptions are checked again against the rules of the day when it resumes.
        }
        self.flush(now);
    }

    /// Drops the subscriptions of `slot` its principal may no longer make, and the queued
    /// messages whose topics it may no longer read (an ACL change reaches live sessions).
    pub(crate) fn refilter_session(&mut self, slot: Slot) {
        let Some(entry) = self.entries.get_mut(slot) else {
            return;
        };
        let Some(principal) = entry.principal.clone() else {
            return;
        };
        let client_id = ringmq_router::strip_scope(&entry.session.client_id)
            .1
            .to_owned();
        let allowed = |scoped: &str| {
            let plain = ringmq_router::unscoped(scoped).1;
            let filter =
                ringmq_router::split_shared(&plain).map_or(&*plain, |shared| shared.filter);
            principal.may_subscribe(filter, &client_id)
        };
        let state = &mut entry.session.state;
        let refused: Vec<Str> = state
            .subscriptions
            .keys()
            .filter(|filter| !allowed(filter))
            .cloned()
            .collect();
        for filter in &refused {
            state.subscriptions.remove(filter);
        }
        let before = state.queue.len() + state.qos0_queue.len();
        if before > 0 {
            state.queue.retain(|queued| allowed(&queued.message.topic));
            state
                .qos0_queue
                .retain(|queued| allowed(&queued.message.topic));
            let dropped = before - state.queue.len() - state.qos0_queue.len();
            if dropped > 0 {
                tracing::info!(slot, dropped, "queued messages no longer allowed; dropped");
            }
        }
        for filter in refused {
            tracing::info!(slot, %filter, "subscription no longer allowed; removed");
            self.remove_subscription(slot, &filter);
        }
    }

    /// Closes connections whose temporary credentials ran out (token exchange).
    pub fn expire_credentials(&mut self, now: Instant) {
        let now_secs = self.unix_secs(now);
        let mut expired = Vec::new();
        for (slot, entry) in self.entries.iter() {
            if entry.conn().is_some()
                && entry
                    .principal
                    .as_ref()
                    .and_then(|p| p.user.expires_at)
                    .is_some_and(|at| at <= now_secs)
            {
                expired.push(slot as Slot);
            }
        }
        for slot in expired {
            self.end_connection(
                slot,
                Some((ReasonCode::NOT_AUTHORIZED, "credentials expired")),
                true,
                now,
            );
        }
    }

    /// Answers a sessions API question about `org` (list, get, disconnect, delete). The
    /// driver fills in each connected session's address, which only the socket knows.
    pub fn sessions_op(&mut self, org: OrgNum, op: &SessionsOp, now: Instant) -> ShardAnswer {
        let scope = ringmq_router::org_scope(org);
        let mut answer = ShardAnswer::default();
        match op {
            SessionsOp::List { state, search, .. } => {
                for slot in 0..self.entries.bound() {
                    let Some(entry) = self.entries.get(slot) else {
                        continue;
                    };
                    if entry.org != org || self.is_forwarder(slot) {
                        continue;
                    }
                    let connected = entry.conn().is_some();
                    let wanted = match state {
                        ListState::Active => connected,
                        ListState::Disconnected => !connected,
                        ListState::All => true,
                    };
                    if !wanted {
                        continue;
                    }
                    let info = self.session_info(slot);
                    let found = match search.as_deref() {
                        None => true,
                        Some(text) => {
                            info.client_id.contains(text)
                                || info.username.as_deref().is_some_and(|u| u.contains(text))
                        }
                    };
                    if found {
                        answer.sessions.push(info);
                    }
                }
            }
            SessionsOp::Get { client_id } => {
                if let Some(slot) = self.org_session(org, &scope, client_id) {
                    answer.found = true;
                    answer.sessions.push(self.session_info(slot));
                }
            }
            SessionsOp::Disconnect { client_id } | SessionsOp::Delete { client_id } => {
                if let Some(slot) = self.org_session(org, &scope, client_id) {
                    answer.found = true;
                    if self.entry_mut(slot).is_some_and(|e| e.conn().is_some()) {
                        self.end_connection(
                            slot,
                            Some((
                                ReasonCode::ADMINISTRATIVE_ACTION,
                                "disconnected by an administrator",
                            )),
                            true,
                            now,
                        );
                    }
                    if matches!(op, SessionsOp::Delete { .. }) {
                        self.end_session(slot, now);
                    }
                    self.flush(now);
                }
            }
        }
        answer
    }

    /// The slot of `org`'s session `client_id`. The org of the entry found is checked too: a
    /// client id that spells another org's scope (`$\0{N}/…`) must never reach its session,
    /// whatever the API let through.
    fn org_session(&self, org: OrgNum, scope: &str, client_id: &str) -> Option<Slot> {
        let key = Str::from(ringmq_router::scoped(scope, client_id));
        let slot = self.by_client_id.get(&self.entries, key.as_bytes())?;
        self.entries
            .get(slot)
            .is_some_and(|entry| entry.org == org)
            .then_some(slot)
    }

    fn session_info(&self, slot: Slot) -> SessionInfo {
        let Some(entry) = self.entries.get(slot) else {
            return SessionInfo {
                client_id: String::new(),
                username: None,
                connected: false,
                shard: self.id,
                address: None,
                conn: None,
                connected_at: None,
                subscriptions: Vec::new(),
                queued: 0,
            };
        };
        let session = &entry.session;
        let subscriptions = session
            .state
            .subscriptions
            .iter()
            .map(|(filter, subscription)| SubscriptionInfo {
                filter: ringmq_router::unscoped(filter).1.into_owned(),
                qos: subscription.options.qos as u8,
            })
            .collect();
        SessionInfo {
            client_id: ringmq_router::strip_scope(&session.client_id).1.to_owned(),
            username: entry
                .principal
                .as_ref()
                .map(|principal| principal.user.username.clone()),
            connected: entry.conn().is_some(),
            shard: self.id,
            address: None,
            conn: entry.conn().map(|conn| super::ConnAt { slot, conn }),
            connected_at: (entry.connected_at != 0).then_some(entry.connected_at),
            subscriptions,
            queued: session.state.queue.len() + session.state.inflight.len(),
        }
    }

    /// Counts one message a client of `org` published.
    pub fn count_in(&mut self, org: OrgNum) {
        self.auth.counters(org).messages_in += 1;
    }

    /// Adjusts the org's connected-clients count (not kept for the default org).
    pub fn count_org_connection(&mut self, org: OrgNum, delta: i64) {
        if org == 0 {
            return;
        }
        self.outputs
            .push_back(Output::OrgConnections { org, delta });
    }

    /// Counts one message of `org` published over REST.
    pub fn count_rest(&mut self, org: OrgNum) {
        let counters = self.auth.counters(org);
        counters.rest_publishes += 1;
        counters.messages_in += 1;
    }

    /// Counts `deliveries` messages delivered to clients of `org`.
    pub fn count_out(&mut self, org: OrgNum, deliveries: u64) {
        self.auth.counters(org).messages_out += deliveries;
    }

    /// This shard's per-org counters since start, for the control plane (`GET /v1/org`).
    pub fn usage(&self) -> AHashMap<OrgNum, OrgCounters> {
        let mut connections: AHashMap<OrgNum, u64> = AHashMap::new();
        for (_, entry) in self.entries.iter() {
            if entry.conn().is_some() {
                *connections.entry(entry.org).or_default() += 1;
            }
        }
        let mut all = self.auth.org_counters.clone();
        all.insert(0, self.auth.default_counters);
        for (org, counters) in all.iter_mut() {
            counters.connections = connections.remove(org).unwrap_or(0);
        }
        for (org, count) in connections {
            all.entry(org).or_default().connections = count;
        }
        all
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn password_digest_depends_on_hash_and_password() {
        assert_ne!(password_digest("h1", b"pw"), password_digest("h2", b"pw"));
        assert_ne!(password_digest("h1", b"pw"), password_digest("h1", b"pw2"));
        assert_eq!(password_digest("h1", b"pw"), password_digest("h1", b"pw"));
    }
}
