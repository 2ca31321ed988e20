//! MQTT logins: CONNECT authentication against the shard's control-plane snapshot, with the
//! argon2 check on a verifier thread (the task waits; the shard goes on) and failed logins
//! throttled per source address over all shards.

use std::net::IpAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::control::{Reply, VerifyJob};
use super::mailbox::ShardHandle;
use crate::control::snapshot::UserAuth;
use crate::mqtt::{Connect, ReasonCode, Str};
use crate::session::connect::Refusal;
use crate::session::Access;
use ringmq_core::shard::{Admitted, Principal};

/// How long a login waits for a verifier thread.
const VERIFY_TIMEOUT: Duration = Duration::from_secs(10);

fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn refused(reason: ReasonCode, text: &'static str) -> Refusal {
    Refusal { reason, text }
}

/// Authenticates a CONNECT: anonymous (when allowed) or `username[@org]` + password against
/// the shard's snapshot, with the argon2 check on a verifier thread and failed logins throttled
/// per source address. `identity` is the CN of a verified TLS client certificate: a CONNECT
/// without a username logs in as the user it names, if that user exists and is enabled (the
/// certificate is the credential). A `foreign_origin` connection (a browser page of another
/// origin, over WebSocket) must name a user: anonymous access is never granted to it.
pub async fn authenticate(
    handle: &Rc<ShardHandle>,
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
        if let Some(cn) = identity {
            if let Some(user) = certificate_user(handle, cn).await {
                return admit_user(handle, user).await;
            }
        }
        if handle.rules.allow_anonymous {
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
        if !login_begin(handle, peer) {
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
    let lookup = {
        let (username, org_id) = (username.to_owned(), org_id.to_owned());
        let password = password.to_vec();
        handle
            .call(move |s| {
                let org = s.snapshot.org_num(&org_id)?;
                let user = s.snapshot.user(org, &username).cloned()?;
                let cached = s.auth().password_known(&user, &password);
                Some((user, cached))
            })
            .await
            .flatten()
    };
    let Some((user, cached)) = lookup else {
        return Err(login_failed(peer, bad()));
    };
    if !user.enabled || user.expires_at.is_some_and(|at| at <= now_unix()) {
        return Err(login_failed(peer, bad()));
    }
    if !cached {
        let Some(control) = handle.control.clone() else {
            return Err(bad());
        };
        let reply = Reply::new();
        let job = VerifyJob {
            hash: user.password_hash.clone(),
            password: password.to_vec(),
            reply: Arc::clone(&reply),
        };
        if control.verify(job).is_err() {
            login_give_back(handle, peer);
            return Err(refused(ReasonCode::SERVER_BUSY, "server busy; try again"));
        }
        match reply.recv(VERIFY_TIMEOUT).await {
            Some(true) => {
                let (passed, password) = (Arc::clone(&user), password.to_vec());
                handle.post(move |s| s.auth_mut().remember_password(&passed, &password));
            }
            Some(false) => return Err(login_failed(peer, bad())),
            None => {
                login_give_back(handle, peer);
                return Err(refused(ReasonCode::SERVER_BUSY, "server busy; try again"));
            }
        }
    }
    login_give_back(handle, peer);
    admit_user(handle, user).await
}

/// The enabled, unexpired user a verified client certificate's CN (`name` or `name@org_id`)
/// names, if any; `None` sends the client to the anonymous rules.
async fn certificate_user(handle: &Rc<ShardHandle>, cn: &str) -> Option<Arc<UserAuth>> {
    let (username, org_id) = cn.rsplit_once('@').unwrap_or((cn, "default"));
    let (username, org_id) = (username.to_owned(), org_id.to_owned());
    let user = handle
        .call(move |s| {
            let org = s.snapshot.org_num(&org_id)?;
            s.snapshot.user(org, &username).cloned()
        })
        .await
        .flatten()?;
    if !user.enabled || user.expires_at.is_some_and(|at| at <= now_unix()) {
        tracing::info!(cn, "certificate names a disabled or expired user");
        return None;
    }
    Some(user)
}

/// Admits an authenticated user: the org's connection limit, then its scope, ACL and namespace.
async fn admit_user(handle: &Rc<ShardHandle>, user: Arc<UserAuth>) -> Result<Admitted, Refusal> {
    if user.org != 0 {
        let org = user.org;
        let limit = handle
            .call(move |s| {
                s.snapshot
                    .org(org)
                    .map_or(u64::MAX, |org| org.settings.connections_max)
            })
            .await
            .unwrap_or(u64::MAX);
        let connected = handle.control.as_ref().map_or(0, |control| {
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

/// Counts a login attempt of `peer` as it starts (over all shards); false when `peer` has used
/// up the current window's attempts.
fn login_begin(handle: &ShardHandle, peer: IpAddr) -> bool {
    let max = handle.settings.login_failures_per_minute_max;
    handle
        .control
        .as_ref()
        .is_none_or(|control| control.login_begin(peer, max))
}

/// Gives back the attempt [`login_begin`] counted: the credentials passed, or were never
/// checked.
fn login_give_back(handle: &ShardHandle, peer: Option<IpAddr>) {
    if let (Some(peer), Some(control)) = (peer, &handle.control) {
        control.login_give_back(peer);
    }
}

/// Logs a failed login of `peer` (counted already when it began) and passes the refusal
/// through.
fn login_failed(peer: Option<IpAddr>, refusal: Refusal) -> Refusal {
    let Some(peer) = peer else { return refusal };
    tracing::info!(%peer, reason = refusal.text, "MQTT login refused");
    refusal
}
