//! Tenancy and auth on a shard: CONNECT authentication against the control-plane snapshot,
//! live revocation when the snapshot changes, the sessions API's questions, and per-org usage.

use std::cell::RefCell;
use std::net::IpAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use ahash::AHashMap;
use sha2::{Digest, Sha256};

use super::{Shard, Slot};
use crate::broker::control::{
    OrgCounters, Reply, SessionInfo, ShardAnswer, ShardQuery, SubscriptionInfo, VerifyJob,
};
use crate::control::api::{SessionState as ListState, SessionsOp};
use crate::control::snapshot::{OrgNum, UserAuth};
use crate::mqtt::{Connect, ReasonCode, Str};
use crate::session::connect::Refusal;
use crate::session::{Access, Authorizer};

/// Verified (user, password) digests kept per shard at most; a full cache starts over, which
/// only costs the next logins one argon2 check each.
const PASSWORD_CACHE_MAX: usize = 65_536;

/// How long a login waits for a verifier thread.
const VERIFY_TIMEOUT: Duration = Duration::from_secs(10);

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

fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn digest(hash: &str, password: &[u8]) -> [u8; 32] {
    let mut hasher = Sha256::new();
    hasher.update(hash.as_bytes());
    hasher.update([0]);
    hasher.update(password);
    hasher.finalize().into()
}

fn refused(reason: ReasonCode, text: &'static str) -> Refusal {
    Refusal { reason, text }
}

/// The outcome of a successful login.
pub struct Admitted {
    /// Org scope and ACL for the session.
    pub access: Access,
    /// The user, for revocation; `None` for anonymous clients.
    pub principal: Option<Rc<Principal>>,
}

/// Authenticates a CONNECT: anonymous (when allowed) or `username[@org]` + password against
/// the snapshot, with the argon2 check on a verifier thread and failed logins throttled per
/// source address. `identity` is the CN of a verified TLS client certificate: a CONNECT without
/// a username logs in as the user it names, if that user exists and is enabled (the
/// certificate is the credential). A `foreign_origin` connection (a browser page of another
/// origin, over WebSocket) must name a user: anonymous access is never granted to it.
pub async fn authenticate(
    shard: &Rc<RefCell<Shard>>,
    connect: &Connect,
    peer: Option<IpAddr>,
    identity: Option<&str>,
    foreign_origin: bool,
) -> Result<Admitted, Refusal> {
    let Some(login) = connect.username.as_ref() else {
        if foreign_origin {
            return Err(refused(
                ReasonCode::NOT_AUTHORIZED,
                "a page of another origin must log in with a username and password",
            ));
        }
        if let Some(user) = identity.and_then(|cn| certificate_user(shard, cn)) {
            return admit_user(shard, user);
        }
        if shard.borrow().rules.allow_anonymous {
            return Ok(Admitted {
                access: Access::default(),
                principal: None,
            });
        }
        return Err(refused(
            ReasonCode::NOT_AUTHORIZED,
            "a username is required (anonymous clients are not allowed)",
        ));
    };
    // Counted before any check, so parallel CONNECTs cannot outrun the limit; given back below
    // once the credentials pass.
    if let Some(peer) = peer {
        if !shard.borrow_mut().login_begin(peer) {
            return Err(refused(
                ReasonCode::BAD_USER_NAME_OR_PASSWORD,
                "too many failed logins from this address; try again later",
            ));
        }
    }
    let bad = || {
        refused(
            ReasonCode::BAD_USER_NAME_OR_PASSWORD,
            "bad username or password",
        )
    };
    let (username, org_id) = match login.rsplit_once('@') {
        Some((username, org)) => (username, org),
        None => (&**login, "default"),
    };
    let password = connect.password.as_deref().unwrap_or_default();
    let (user, cached) = {
        let s = shard.borrow();
        let Some(org) = s.snapshot.org_num(org_id) else {
            drop(s);
            return Err(shard.borrow_mut().login_failed(peer, bad()));
        };
        let user = s.snapshot.user(org, username).cloned();
        let Some(user) = user else {
            drop(s);
            return Err(shard.borrow_mut().login_failed(peer, bad()));
        };
        let cached = s
            .auth
            .password_cache
            .get(&(org, username.to_owned()))
            .is_some_and(|known| *known == digest(&user.password_hash, password));
        (user, cached)
    };
    if !user.enabled || user.expires_at.is_some_and(|at| at <= now_unix()) {
        return Err(shard.borrow_mut().login_failed(peer, bad()));
    }
    if !cached {
        let control = shard.borrow().control.clone();
        let Some(control) = control else {
            return Err(bad());
        };
        let reply = Reply::new();
        let job = VerifyJob {
            hash: user.password_hash.clone(),
            password: password.to_vec(),
            reply: Arc::clone(&reply),
        };
        if control.verify(job).is_err() {
            shard.borrow().login_give_back(peer);
            return Err(refused(ReasonCode::SERVER_BUSY, "server busy; try again"));
        }
        match reply.recv(VERIFY_TIMEOUT).await {
            Some(true) => {
                let mut s = shard.borrow_mut();
                if s.auth.password_cache.len() >= PASSWORD_CACHE_MAX {
                    s.auth.password_cache.clear();
                }
                s.auth.password_cache.insert(
                    (user.org, user.username.clone()),
                    digest(&user.password_hash, password),
                );
            }
            Some(false) => return Err(shard.borrow_mut().login_failed(peer, bad())),
            None => {
                shard.borrow().login_give_back(peer);
                return Err(refused(ReasonCode::SERVER_BUSY, "server busy; try again"));
            }
        }
    }
    shard.borrow().login_give_back(peer);
    admit_user(shard, user)
}

/// The login of a verified client certificate whose CN (`name` or `name@org_id`) names an
/// enabled, unexpired user; `None` sends the client to the anonymous rules.
/// The enabled, unexpired user a verified client certificate's CN names, if any.
fn certificate_user(shard: &Rc<RefCell<Shard>>, cn: &str) -> Option<Arc<UserAuth>> {
    let (username, org_id) = cn.rsplit_once('@').unwrap_or((cn, "default"));
    let user = {
        let s = shard.borrow();
        let org = s.snapshot.org_num(org_id)?;
        s.snapshot.user(org, username).cloned()?
    };
    if !user.enabled || user.expires_at.is_some_and(|at| at <= now_unix()) {
        tracing::info!(cn, "certificate names a disabled or expired user");
        return None;
    }
    Some(user)
}

/// Admits an authenticated user: the org's connection limit, then its scope, ACL and namespace.
fn admit_user(shard: &Rc<RefCell<Shard>>, user: Arc<UserAuth>) -> Result<Admitted, Refusal> {
    if user.org != 0 {
        let s = shard.borrow();
        let limit = s
            .snapshot
            .org(user.org)
            .map_or(u64::MAX, |org| org.settings.connections_max);
        let connected = s.control.as_ref().map_or(0, |control| {
            control
                .org_connections(user.org)
                .load(std::sync::atomic::Ordering::Relaxed)
        });
        if u64::try_from(connected).unwrap_or(0) >= limit {
            return Err(refused(
                ReasonCode::QUOTA_EXCEEDED,
                "the org's connection limit is reached",
            ));
        }
    }
    let principal = Rc::new(Principal { user });
    let mut access = Access::org(principal.user.org, Some(principal.clone()));
    access.set_namespace(principal.user.namespace.as_deref().map(Str::from));
    Ok(Admitted {
        access,
        principal: Some(principal),
    })
}

impl Shard {
    /// Counts a login attempt of `peer` as it starts (over all shards); false when `peer` has
    /// used up the current window's attempts.
    fn login_begin(&mut self, peer: IpAddr) -> bool {
        let max = self.settings.login_failures_per_minute_max;
        self.control
            .as_ref()
            .map_or(true, |control| control.login_begin(peer, max))
    }

    /// Gives back the attempt [`Shard::login_begin`] counted: the credentials passed, or were
    /// never checked.
    fn login_give_back(&self, peer: Option<IpAddr>) {
        if let (Some(peer), Some(control)) = (peer, &self.control) {
            control.login_give_back(peer);
        }
    }

    /// Logs a failed login of `peer` (counted already when it began) and passes the refusal
    /// through.
    fn login_failed(&mut self, peer: Option<IpAddr>, refusal: Refusal) -> Refusal {
        let Some(peer) = peer else { return refusal };
        tracing::info!(%peer, reason = refusal.text, "MQTT login refused");
        refusal
    }

    /// Swaps in a newer control-plane snapshot if there is one: connections whose user was
    /// deleted, disabled, expired or given a new password are closed (0x87 in v5), and the
    /// sessions of a deleted user (or org) are discarded; the others get the user's new ACL at
    /// once, and lose the subscriptions and queued messages it no longer allows.
    pub fn refresh_snapshot(&mut self, now: Instant) {
        let Some(control) = &self.control else { return };
        if control.version() == self.snapshot.version {
            return;
        }
        let previous = std::mem::replace(&mut self.snapshot, control.snapshot());
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
        self.recheck_streams();
        let now_secs = now_unix();
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
            let connected = self.entry_mut(slot).is_some_and(|e| e.conn.is_some());
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
    pub(super) fn refilter_session(&mut self, slot: Slot) {
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
        let now_secs = now_unix();
        let mut expired = Vec::new();
        for (slot, entry) in self.entries.iter() {
            if entry.conn.is_some()
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

    /// Answers the control thread's questions waiting in this shard's inbox.
    pub fn answer_control(&mut self, now: Instant) {
        let Some(control) = self.control.clone() else {
            return;
        };
        while let Some(query) = control.next_query(usize::from(self.id)) {
            match query {
                ShardQuery::Sessions { org, op, answer } => {
                    let reply = self.sessions_op(org, &op, now);
                    let _ = answer.send(reply);
                }
            }
        }
    }

    fn sessions_op(&mut self, org: OrgNum, op: &SessionsOp, now: Instant) -> ShardAnswer {
        let scope = ringmq_router::org_scope(org);
        let mut answer = ShardAnswer::default();
        match op {
            SessionsOp::List { state, .. } => {
                for slot in 0..self.entries.bound() {
                    let Some(entry) = self.entries.get(slot) else {
                        continue;
                    };
                    if entry.org != org || self.is_forwarder(slot) {
                        continue;
                    }
                    let connected = entry.conn.is_some();
                    let wanted = match state {
                        ListState::Active => connected,
                        ListState::Disconnected => !connected,
                        ListState::All => true,
                    };
                    if wanted {
                        answer.sessions.push(self.session_info(slot));
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
                    if self.entry_mut(slot).is_some_and(|e| e.conn.is_some()) {
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
            connected: entry.conn.is_some(),
            shard: self.id,
            address: entry
                .conn
                .as_ref()
                .and_then(|conn| peer_address(conn.fd()))
                .map(|addr| addr.to_string()),
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
        if let Some(control) = &self.control {
            control
                .org_connections(org)
                .fetch_add(delta, std::sync::atomic::Ordering::Relaxed);
        }
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

    /// Hands this shard's per-org counters to the control plane (for `GET /v1/org`).
    pub fn report_usage(&mut self) {
        let Some(control) = self.control.clone() else {
            return;
        };
        let mut connections: AHashMap<OrgNum, u64> = AHashMap::new();
        for (_, entry) in self.entries.iter() {
            if entry.conn.is_some() {
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
        control.report_usage(usize::from(self.id), &all);
    }
}

/// The peer address of a socket, asked of the kernel only when someone lists sessions (an idle
/// connection does not carry it).
fn peer_address(fd: std::os::fd::RawFd) -> Option<std::net::SocketAddr> {
    // SAFETY: `storage` is a zeroed sockaddr_storage large enough for any address family and
    // `len` holds its size, as getpeername(2) requires; the fd belongs to a live connection.
    let mut storage: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    // SAFETY: see above; getpeername writes at most `len` bytes into `storage`.
    let rc = unsafe {
        libc::getpeername(
            fd,
            (&mut storage as *mut libc::sockaddr_storage).cast(),
            &mut len,
        )
    };
    if rc != 0 {
        return None;
    }
    match i32::from(storage.ss_family) {
        libc::AF_INET => {
            // SAFETY: the family says the storage holds a sockaddr_in.
            let addr: &libc::sockaddr_in =
                unsafe { &*(&storage as *const libc::sockaddr_storage).cast() };
            let ip = std::net::Ipv4Addr::from(u32::from_be(addr.sin_addr.s_addr));
            Some(std::net::SocketAddr::new(
                ip.into(),
                u16::from_be(addr.sin_port),
            ))
        }
        libc::AF_INET6 => {
            // SAFETY: the family says the storage holds a sockaddr_in6.
            let addr: &libc::sockaddr_in6 =
                unsafe { &*(&storage as *const libc::sockaddr_storage).cast() };
            let ip = std::net::Ipv6Addr::from(addr.sin6_addr.s6_addr);
            Some(std::net::SocketAddr::new(
                ip.into(),
                u16::from_be(addr.sin6_port),
            ))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peer_address_reads_a_loopback_socket() {
        use std::os::fd::AsRawFd;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server, _) = listener.accept().unwrap();
        assert_eq!(
            peer_address(server.as_raw_fd()),
            Some(client.local_addr().unwrap())
        );
        assert_eq!(peer_address(-1), None);
    }

    #[test]
    fn password_digest_depends_on_hash_and_password() {
        assert_ne!(digest("h1", b"pw"), digest("h2", b"pw"));
        assert_ne!(digest("h1", b"pw"), digest("h1", b"pw2"));
        assert_eq!(digest("h1", b"pw"), digest("h1", b"pw"));
    }
}
