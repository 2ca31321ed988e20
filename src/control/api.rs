//! The management REST API, sans-IO: the broker parses HTTP, calls [`Api::handle`] on the
//! control thread and writes the [`ApiResponse`] back.

mod resources;
mod util;

use std::collections::HashMap;
use std::sync::Arc;

use serde::de::DeserializeOwned;
use serde::Serialize;

use super::jwt;
use super::model::{
    Allowed, CreateKey, CreateOrg, CreateRule, CreateSet, CreateUser, CreatedOrg, ErrorBody,
    ExchangedCredentials, KeyKindName, KeyPermission, Org, OrgSettings, OrgUsage, Page, PatchKey,
    PatchOrg, PatchRule, PatchSet, PatchUser, TokenExchange,
};
use super::secrets;
use super::snapshot::{KeyAuth, KeyKind, OrgNum, Snapshot};
use super::store::{
    self, Counted, NewUser, Store, StoreError, UsageCounters, UserChange, DEFAULT_SET,
};
use crate::config::OrgLimits;
use util::*;

pub use util::ROUTES;

/// Longest `search` text of a sessions list.
const SEARCH_BYTES_MAX: usize = 256;

/// The OpenAPI document served at `/v1/openapi.json`.
pub const OPENAPI_JSON: &str = include_str!("api/openapi.json");

/// Token-exchange credentials live at most this long.
const EXCHANGE_TTL_MAX: u64 = 24 * 3600;
/// Unexpired exchanged tokens remembered per provider at most: past it exchanges wait (503)
/// for old tokens to expire rather than forgetting one that could then be replayed.
const EXCHANGED_PER_PROVIDER_MAX: u64 = 1_000_000;
/// `last_used_at` is written at most this often per key.
const TOUCH_INTERVAL: u64 = 60;

/// A management request, already parsed from HTTP.
#[derive(Debug, Clone, Default)]
pub struct ApiRequest {
    /// `GET`, `POST`, …
    pub method: String,
    /// Path without the query.
    pub path: String,
    /// Raw query string without `?`.
    pub query: String,
    /// The `Authorization: Bearer` value.
    pub bearer: Option<String>,
    /// Request body.
    pub body: bytes::Bytes,
}

/// A response to write back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiResponse {
    /// HTTP status.
    pub status: u16,
    /// Extra headers (`Content-Type`, `Allow`).
    pub headers: Vec<(String, String)>,
    /// JSON, or empty for 204.
    pub body: Vec<u8>,
}

pub use ringmq_core::control::sessions::{SessionState, SessionsOp};

/// What [`Api::handle`] decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Answer this.
    Done(ApiResponse),
    /// Authorized sessions request for `org`: the broker asks the shards and answers.
    Sessions {
        /// Org of the key.
        org: OrgNum,
        /// What to do.
        op: SessionsOp,
    },
}

/// Live counters of one org that the store does not have yet.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    /// Current connections.
    pub connections: u64,
    /// Messages received since the last [`Api::record_usage`].
    pub messages_in: u64,
    /// Messages delivered since the last [`Api::record_usage`].
    pub messages_out: u64,
    /// REST publishes since the last [`Api::record_usage`].
    pub rest_publishes: u64,
}

/// The broker's live numbers, asked for by `GET /v1/org` and `GET /v1/orgs/{id}`.
pub trait LiveView {
    /// Live counters of `org`.
    fn usage(&self, org: OrgNum) -> Usage;
}

/// The management API and owner of the store.
#[derive(Debug)]
pub struct Api {
    store: Store,
    providers: jwt::Providers,
    snapshot: Arc<Snapshot>,
    changed: bool,
    touched: HashMap<String, u64>,
    /// Per-org caps (`[org_limits]`).
    limits: OrgLimits,
    /// Token exchanges per org in the current minute: (window start, count).
    exchange_windows: HashMap<String, (u64, u32)>,
    /// Unexpired exchanged tokens per provider, as counted since the last sweep.
    exchanged: HashMap<String, u64>,
    /// The shared store's change count the snapshot was built at (`None`: SQLite, this node's
    /// own).
    built_at: Option<i64>,
}

/// The authenticated caller.
pub(super) struct Caller {
    key: Arc<KeyAuth>,
    org_id: String,
}

type Reply = Result<ApiResponse, ApiResponse>;

fn json_response<T: Serialize>(status: u16, value: &T) -> ApiResponse {
    match serde_json::to_vec(value) {
        Ok(body) => ApiResponse {
            status,
            headers: vec![("Content-Type".into(), "application/json".into())],
            body,
        },
        Err(_) => Api::error(500, "internal", "the response could not be encoded"),
    }
}

fn no_content() -> ApiResponse {
    ApiResponse {
        status: 204,
        headers: Vec::new(),
        body: Vec::new(),
    }
}

fn bad(detail: impl AsRef<str>) -> ApiResponse {
    Api::error(400, "bad_request", detail.as_ref())
}

fn forbidden(detail: &str) -> ApiResponse {
    Api::error(403, "forbidden", detail)
}

fn store_error(e: StoreError) -> ApiResponse {
    match e {
        StoreError::NotFound => Api::error(404, "not_found", "no such resource"),
        StoreError::Conflict(d) => Api::error(409, "conflict", &d),
        StoreError::Invalid(d) => bad(d),
        other if other.is_unavailable() => {
            tracing::warn!(error = %other, "control store unreachable");
            Api::error(
                503,
                "unavailable",
                "the control-plane store cannot be reached; try again",
            )
        }
        other => {
            tracing::error!(error = %other, "control store failed");
            Api::error(500, "internal", "internal error")
        }
    }
}

fn parse_body<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiResponse> {
    serde_json::from_slice(body).map_err(|e| {
        bad(format!(
            "invalid JSON body: {}",
            redact_serde(&e.to_string())
        ))
    })
}

fn page_of<T: Serialize>((items, next_cursor): (Vec<T>, Option<String>)) -> ApiResponse {
    json_response(200, &Page { items, next_cursor })
}

fn check_patterns<'a>(topics: impl IntoIterator<Item = &'a String>) -> Result<(), ApiResponse> {
    for t in topics {
        check_pattern(t).map_err(bad)?;
    }
    Ok(())
}

fn check_sets(sets: &[String]) -> Result<(), ApiResponse> {
    check_list_len("acl_sets", sets.len()).map_err(bad)?;
    for s in sets {
        check_name("acl set name", s).map_err(bad)?;
    }
    Ok(())
}

fn check_settings(s: &OrgSettings) -> Result<(), ApiResponse> {
    const MAX: u64 = 1 << 50;
    let all = [
        s.rate_limit_per_sec,
        s.rate_burst,
        s.monthly_quota,
        s.connections_max,
    ];
    if all.iter().any(|&v| v > MAX) {
        return Err(bad(format!("settings values must be at most {MAX}")));
    }
    Ok(())
}

impl Api {
    /// Takes over the store (bootstrapped or not) and builds the first snapshot.
    pub fn new(
        store: Store,
        providers: jwt::Providers,
        limits: OrgLimits,
    ) -> Result<Api, StoreError> {
        let built_at = store.changes()?;
        let snapshot = Arc::new(store.snapshot(1)?);
        Ok(Api {
            built_at,
            store,
            providers,
            snapshot,
            changed: false,
            touched: HashMap::new(),
            limits,
            exchange_windows: HashMap::new(),
            exchanged: HashMap::new(),
        })
    }

    /// Refuses (403 `limit_exceeded`) one more row of `what` when `org` holds its cap already.
    fn check_cap(&self, org: &str, what: Counted) -> Result<(), ApiResponse> {
        let (max, knob, noun) = match what {
            Counted::Users => (self.limits.users_max, "users_max", "users"),
            Counted::Rules => (self.limits.acl_rules_max, "acl_rules_max", "ACL rules"),
            Counted::ActiveKeys => (self.limits.keys_max, "keys_max", "API keys not revoked"),
        };
        let held = self.store.count_in_org(org, what).map_err(store_error)?;
        if held >= max {
            return Err(Api::error(
                403,
                "limit_exceeded",
                &format!(
                    "the org holds {held} {noun}, its cap ([org_limits] {knob} = {max}); \
                     delete some first"
                ),
            ));
        }
        Ok(())
    }

    /// The current snapshot.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        Arc::clone(&self.snapshot)
    }

    /// The new snapshot, once, after any change.
    pub fn take_changed(&mut self) -> Option<Arc<Snapshot>> {
        std::mem::take(&mut self.changed).then(|| self.snapshot())
    }

    /// Persists usage the broker counted (it then resets what its [`LiveView`] reports).
    pub fn record_usage(
        &mut self,
        org: OrgNum,
        now_unix: u64,
        add: UsageCounters,
    ) -> Result<(), StoreError> {
        let Some(info) = self.snapshot.org(org) else {
            return Ok(());
        };
        let id = info.id.clone();
        self.store.add_usage(&id, &store::month_of(now_unix), add)
    }

    /// Every org's stored usage of the month holding `now_unix` (all nodes of a cluster, and
    /// earlier runs), by routing number.
    pub fn month_usage(&self, now_unix: u64) -> Result<Vec<(OrgNum, UsageCounters)>, StoreError> {
        Ok(self
            .store
            .usage_of_month(&store::month_of(now_unix))?
            .into_iter()
            .filter_map(|(id, usage)| Some((self.snapshot.org_num(&id)?, usage)))
            .collect())
    }

    /// Deletes expired token-exchange users; returns how many.
    pub fn sweep(&mut self, now_unix: u64) -> Result<usize, StoreError> {
        self.store.sweep_exchanged(now_unix)?;
        self.exchanged.clear();
        self.exchange_windows
            .retain(|_, (start, _)| now_unix.saturating_sub(*start) < 60);
        let n = self.store.sweep_expired(now_unix)?;
        if n > 0 {
            self.rebuild()?;
        }
        Ok(n)
    }

    /// A JSON error response `{"error", "detail"}`.
    pub fn error(status: u16, code: &str, detail: &str) -> ApiResponse {
        let body = serde_json::to_vec(&ErrorBody {
            error: code.to_string(),
            detail: detail.to_string(),
        })
        .unwrap_or_default();
        ApiResponse {
            status,
            headers: vec![("Content-Type".into(), "application/json".into())],
            body,
        }
    }

    fn rebuild(&mut self) -> Result<(), StoreError> {
        // Read before the rows: a change committed while they are read moves the count past
        // this, so the next poll builds again.
        let count = self.store.changes()?;
        self.rebuild_at(count)
    }

    /// Builds the snapshot from the rows, which the store's change count `count` (read just
    /// before) covers at least.
    fn rebuild_at(&mut self, count: Option<i64>) -> Result<(), StoreError> {
        let version = self.snapshot.version + 1;
        self.built_at = count;
        self.snapshot = Arc::new(self.store.snapshot(version)?);
        self.changed = true;
        Ok(())
    }

    /// On a store other nodes share, builds a new snapshot when any node changed it since the
    /// last one ([`Api::take_changed`] hands it out).
    pub fn reload_if_changed(&mut self) -> Result<(), StoreError> {
        let count = self.store.changes()?;
        if count.is_some() && count != self.built_at {
            self.rebuild_at(count)?;
        }
        Ok(())
    }

    /// Whether every node of a cluster shares the store (PostgreSQL).
    pub fn shared_store(&self) -> bool {
        self.store.shared()
    }

    /// Rebuilds the snapshot after a successful write.
    fn changed(&mut self, reply: Reply) -> Reply {
        if reply.is_ok() {
            self.rebuild().map_err(store_error)?;
        }
        reply
    }

    /// Handles one request.
    pub fn handle(&mut self, req: &ApiRequest, live: &dyn LiveView, now_unix: u64) -> Outcome {
        match self.route(req, live, now_unix) {
            Ok(outcome) => outcome,
            Err(resp) => Outcome::Done(resp),
        }
    }

    fn route(
        &mut self,
        req: &ApiRequest,
        live: &dyn LiveView,
        now: u64,
    ) -> Result<Outcome, ApiResponse> {
        let (template, params) = match match_route(&req.path) {
            Ok(Some(m)) => m,
            Ok(None) => return Err(Api::error(404, "not_found", "no such route")),
            Err(()) => return Err(bad("the path is not valid percent-encoded UTF-8")),
        };
        let methods = methods_of(template);
        let method = req.method.as_str();
        if !methods.contains(&method) {
            let mut resp = Api::error(405, "method_not_allowed", "method not allowed on this path");
            resp.headers.push(("Allow".into(), methods.join(", ")));
            return Err(resp);
        }
        check_path_params(template, &params).map_err(bad)?;
        if req.body.len() > BODY_MAX {
            return Err(Api::error(
                413,
                "payload_too_large",
                "the body is larger than 64 KiB",
            ));
        }
        if template == "/v1/openapi.json" {
            return Ok(Outcome::Done(ApiResponse {
                status: 200,
                headers: vec![("Content-Type".into(), "application/json".into())],
                body: OPENAPI_JSON.as_bytes().to_vec(),
            }));
        }
        let caller = self.authenticate(req, now)?;
        let body = &req.body[..];
        let p0 = params.first().map(String::as_str).unwrap_or("");
        let org = caller.org_id.as_str();
        let is_secret = caller.key.kind == KeyKind::Secret;

        if template == "/v1/token-exchange" {
            if caller.key.kind == KeyKind::Restricted {
                return Err(forbidden("restricted keys cannot exchange tokens"));
            }
            let reply = self.token_exchange(org, body, now);
            return self.changed(reply).map(Outcome::Done);
        }
        if template.starts_with("/v1/orgs") {
            if !caller.key.root {
                return Err(forbidden("only the root key may manage orgs"));
            }
        } else if !is_secret {
            return Err(forbidden("this key may not use the management API"));
        }
        if template.starts_with("/v1/sessions") {
            return self.sessions(&caller, template, method, &params, &req.query);
        }
        let reply: Reply = match (template, method) {
            ("/v1/users", "GET") => self.list(&req.query, |s, l, c| s.list_users(org, l, c)),
            ("/v1/users", "POST") => {
                let r = self.create_user(org, body, now);
                self.changed(r)
            }
            ("/v1/users/{username}", "GET") => self
                .store
                .get_user(org, p0)
                .map(|u| json_response(200, &u))
                .map_err(store_error),
            ("/v1/users/{username}", "PATCH") => {
                let r = self.patch_user(org, p0, body, now);
                self.changed(r)
            }
            ("/v1/users/{username}", "DELETE") => {
                let r = self
                    .store
                    .delete_user(org, p0)
                    .map(|_| no_content())
                    .map_err(store_error);
                self.changed(r)
            }
            ("/v1/acl/sets", "GET") => self.list(&req.query, |s, l, c| s.list_sets(org, l, c)),
            ("/v1/acl/sets", "POST") => {
                let r = self.create_set(org, body, now);
                self.changed(r)
            }
            ("/v1/acl/sets/{name}", "GET") => self
                .store
                .get_set(org, p0, true)
                .map(|s| json_response(200, &s))
                .map_err(store_error),
            ("/v1/acl/sets/{name}", "PATCH") => {
                let r = parse_body::<PatchSet>(body).and_then(|p| {
                    check_description(&p.description).map_err(bad)?;
                    self.store
                        .update_set(org, p0, &p.description)
                        .map(|s| json_response(200, &s))
                        .map_err(store_error)
                });
                self.changed(r)
            }
            ("/v1/acl/sets/{name}", "DELETE") => {
                let r = self
                    .store
                    .delete_set(org, p0)
                    .map(|_| no_content())
                    .map_err(store_error);
                self.changed(r)
            }
            ("/v1/acl/rules", "GET") => {
                let set = query_param(&req.query, "set").map_err(bad)?;
                if let Some(set) = &set {
                    check_name("set", set).map_err(bad)?;
                    self.store.get_set(org, set, false).map_err(store_error)?;
                }
                self.list(&req.query, |s, l, c| {
                    s.list_rules(org, set.as_deref(), l, c)
                })
            }
            ("/v1/acl/rules", "POST") => {
                let r = self.create_rule(org, body, now);
                self.changed(r)
            }
            ("/v1/acl/rules/{id}", "GET") => self
                .store
                .get_rule(org, p0)
                .map(|r| json_response(200, &r))
                .map_err(store_error),
            ("/v1/acl/rules/{id}", "PATCH") => {
                let r = parse_body::<PatchRule>(body).and_then(|p| {
                    if let Some(t) = &p.topic {
                        check_pattern(t).map_err(bad)?;
                    }
                    self.store
                        .update_rule(org, p0, p.topic.as_deref(), p.action, p.permission)
                        .map(|r| json_response(200, &r))
                        .map_err(store_error)
                });
                self.changed(r)
            }
            ("/v1/acl/rules/{id}", "DELETE") => {
                let r = self
                    .store
                    .delete_rule(org, p0)
                    .map(|_| no_content())
                    .map_err(store_error);
                self.changed(r)
            }
            ("/v1/keys", "GET") => self.list(&req.query, |s, l, c| s.list_keys(org, l, c)),
            ("/v1/keys", "POST") => {
                let r = self.create_key(org, body, now);
                self.changed(r)
            }
            ("/v1/keys/{id}", "GET") => self
                .store
                .get_key(org, p0)
                .map(|k| json_response(200, &k))
                .map_err(store_error),
            ("/v1/keys/{id}", "PATCH") => {
                let r = parse_body::<PatchKey>(body).and_then(|p| {
                    check_label("key name", &p.name).map_err(bad)?;
                    self.store
                        .rename_key(org, p0, &p.name)
                        .map(|k| json_response(200, &k))
                        .map_err(store_error)
                });
                self.changed(r)
            }
            ("/v1/keys/{id}", "DELETE") => {
                let r = self.revoke_key(&caller, org, p0, now);
                self.changed(r)
            }
            ("/v1/org", "GET") => self.org_view(org, live, now),
            ("/v1/org", "PATCH") => {
                // An org's limits are the operator's to set: its own keys may rename it only.
                let r = self.patch_org(org, body, caller.key.root, live, now);
                self.changed(r)
            }
            ("/v1/orgs", "GET") => self.list(&req.query, |s, l, c| s.list_orgs(l, c)),
            ("/v1/orgs", "POST") => {
                let r = self.create_org(body, now);
                self.changed(r)
            }
            ("/v1/orgs/{id}", "GET") => self.org_view(p0, live, now),
            ("/v1/orgs/{id}", "PATCH") => {
                let r = self.patch_org(p0, body, true, live, now);
                self.changed(r)
            }
            ("/v1/orgs/{id}", "DELETE") => {
                let r = self
                    .store
                    .delete_org(p0)
                    .map(|_| no_content())
                    .map_err(store_error);
                self.changed(r)
            }
            _ => Err(Api::error(404, "not_found", "no such route")),
        };
        reply.map(Outcome::Done)
    }

    fn authenticate(&mut self, req: &ApiRequest, now: u64) -> Result<Caller, ApiResponse> {
        let unauthorized = || Api::error(401, "unauthorized", "a valid API key is required");
        let secret = req.bearer.as_deref().ok_or_else(unauthorized)?;
        if secret.len() > 128 {
            return Err(unauthorized());
        }
        let key = Arc::clone(self.snapshot.key(secret).ok_or_else(unauthorized)?);
        let org_id = self
            .snapshot
            .org(key.org)
            .map(|o| o.id.clone())
            .ok_or_else(unauthorized)?;
        let last = self.touched.get(&key.id).copied().unwrap_or(0);
        if now.saturating_sub(last) >= TOUCH_INTERVAL {
            if self.touched.len() > 100_000 {
                self.touched.clear();
            }
            self.touched.insert(key.id.clone(), now);
            if let Err(e) = self.store.touch_key(&key.id, now) {
                tracing::warn!(error = %e, "could not record key use");
            }
        }
        Ok(Caller { key, org_id })
    }

    fn list<T: Serialize>(
        &self,
        query: &str,
        f: impl FnOnce(&Store, usize, Option<&str>) -> Result<(Vec<T>, Option<String>), StoreError>,
    ) -> Reply {
        let (limit, cursor) = paging(query).map_err(bad)?;
        f(&self.store, limit, cursor.as_deref())
            .map(page_of)
            .map_err(store_error)
    }

    fn sessions(
        &self,
        caller: &Caller,
        template: &str,
        method: &str,
        params: &[String],
        query: &str,
    ) -> Result<Outcome, ApiResponse> {
        // The route already refused client ids with control bytes or over 64 KiB.
        let client_id = params.first().cloned().unwrap_or_default();
        let op = match (template, method) {
            ("/v1/sessions", _) => {
                let (limit, cursor) = paging(query).map_err(bad)?;
                let state = match query_param(query, "state").map_err(bad)?.as_deref() {
                    // Connected clients unless asked otherwise, as the seed's example reads.
                    None | Some("active") => SessionState::Active,
                    Some("all") => SessionState::All,
                    Some("disconnected") => SessionState::Disconnected,
                    Some(_) => return Err(bad("state must be active, disconnected or all")),
                };
                let search = query_param(query, "search").map_err(bad)?;
                if search
                    .as_deref()
                    .is_some_and(|text| text.len() > SEARCH_BYTES_MAX || has_control(text))
                {
                    return Err(bad(format!(
                        "search must be at most {SEARCH_BYTES_MAX} bytes without control characters"
                    )));
                }
                SessionsOp::List {
                    state,
                    limit,
                    cursor,
                    search: search.filter(|text| !text.is_empty()),
                }
            }
            ("/v1/sessions/{client_id}/disconnect", _) => SessionsOp::Disconnect { client_id },
            (_, "GET") => SessionsOp::Get { client_id },
            _ => SessionsOp::Delete { client_id },
        };
        Ok(Outcome::Sessions {
            org: caller.key.org,
            op,
        })
    }
}

#[cfg(test)]
mod tests;
