//! The management API's JSON objects: request bodies (unknown fields rejected) and responses.

use serde::{Deserialize, Serialize};

/// Allow or deny.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Permission {
    /// Grants the action.
    Allow,
    /// Refuses the action; wins over any allow.
    Deny,
}

/// What a rule or key permission applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// PUBLISH only.
    Publish,
    /// SUBSCRIBE only.
    Subscribe,
    /// Both.
    All,
}

/// API key kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KeyKindName {
    /// `sk_`: everything in its org.
    Secret,
    /// `pk_`: subscribe and token exchange.
    Public,
    /// `rk_`: only its permissions.
    Restricted,
}

impl KeyKindName {
    /// The stored and serialized name.
    pub fn as_str(self) -> &'static str {
        match self {
            KeyKindName::Secret => "secret",
            KeyKindName::Public => "public",
            KeyKindName::Restricted => "restricted",
        }
    }

    /// Parses a stored name.
    pub fn parse(s: &str) -> Option<KeyKindName> {
        match s {
            "secret" => Some(KeyKindName::Secret),
            "public" => Some(KeyKindName::Public),
            "restricted" => Some(KeyKindName::Restricted),
            _ => None,
        }
    }
}

/// Per-org limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OrgSettings {
    /// Sustained messages per second.
    pub rate_limit_per_sec: u64,
    /// Burst size of the rate limiter.
    pub rate_burst: u64,
    /// Messages per calendar month.
    pub monthly_quota: u64,
    /// Concurrent connections.
    pub connections_max: u64,
}

impl Default for OrgSettings {
    fn default() -> Self {
        OrgSettings {
            rate_limit_per_sec: 100,
            rate_burst: 200,
            monthly_quota: 1_000_000,
            connections_max: 100_000,
        }
    }
}

/// A partial settings update.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OrgSettingsPatch {
    /// New sustained rate.
    pub rate_limit_per_sec: Option<u64>,
    /// New burst.
    pub rate_burst: Option<u64>,
    /// New monthly quota.
    pub monthly_quota: Option<u64>,
    /// New connection limit.
    pub connections_max: Option<u64>,
}

impl OrgSettingsPatch {
    /// True when the patch changes nothing.
    pub fn is_empty(&self) -> bool {
        *self == OrgSettingsPatch::default()
    }

    /// Applies the present fields to `s`.
    pub fn apply(&self, s: &mut OrgSettings) {
        if let Some(v) = self.rate_limit_per_sec {
            s.rate_limit_per_sec = v;
        }
        if let Some(v) = self.rate_burst {
            s.rate_burst = v;
        }
        if let Some(v) = self.monthly_quota {
            s.monthly_quota = v;
        }
        if let Some(v) = self.connections_max {
            s.connections_max = v;
        }
    }
}

/// `POST /v1/users`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateUser {
    /// 1..=64 of `[A-Za-z0-9._-]`.
    pub username: String,
    /// 8..=256 bytes.
    pub password: String,
    /// Optional topic namespace.
    #[serde(default)]
    pub namespace: Option<String>,
    /// Defaults to true.
    #[serde(default)]
    pub enabled: Option<bool>,
    /// Rule sets attached to the user.
    #[serde(default)]
    pub acl_sets: Vec<String>,
}

/// `PATCH /v1/users/{username}`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PatchUser {
    /// New password.
    pub password: Option<String>,
    /// New namespace (`null` clears it).
    #[serde(default, deserialize_with = "double_option")]
    pub namespace: Option<Option<String>>,
    /// Enable or disable.
    pub enabled: Option<bool>,
    /// Replaces the attached sets.
    pub acl_sets: Option<Vec<String>>,
}

fn double_option<'de, D, T>(d: D) -> Result<Option<Option<T>>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(d).map(Some)
}

/// A user as the API shows it (never the password).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct User {
    /// Username without `@org`.
    pub username: String,
    /// Topic namespace.
    pub namespace: Option<String>,
    /// Whether it may connect.
    pub enabled: bool,
    /// Attached rule sets.
    pub acl_sets: Vec<String>,
    /// Unix seconds.
    pub created_at: u64,
    /// Unix seconds.
    pub updated_at: u64,
    /// Token-exchange users expire.
    pub expires_at: Option<u64>,
}

/// `POST /v1/acl/sets`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateSet {
    /// 1..=64 of `[A-Za-z0-9._-]`.
    pub name: String,
    /// Free text.
    #[serde(default)]
    pub description: String,
}

/// `PATCH /v1/acl/sets/{name}`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PatchSet {
    /// New description.
    pub description: String,
}

/// A rule set.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AclSet {
    /// Set name.
    pub name: String,
    /// Free text.
    pub description: String,
    /// Rules in the set.
    pub rule_count: u64,
    /// Unix seconds.
    pub created_at: u64,
    /// Only on `GET /v1/acl/sets/{name}`.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub rules: Option<Vec<Rule>>,
}

/// `POST /v1/acl/rules`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateRule {
    /// Filter pattern with optional `{username}` / `{clientid}`.
    pub topic: String,
    /// What it applies to.
    pub action: Action,
    /// Allow or deny.
    pub permission: Permission,
    /// Defaults to `default`.
    #[serde(default)]
    pub set: Option<String>,
}

/// `PATCH /v1/acl/rules/{id}`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PatchRule {
    /// New pattern.
    pub topic: Option<String>,
    /// New action.
    pub action: Option<Action>,
    /// New permission.
    pub permission: Option<Permission>,
}

/// An ACL rule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rule {
    /// `rule_…`.
    pub id: String,
    /// Owning set.
    pub set: String,
    /// Allow or deny.
    pub permission: Permission,
    /// What it applies to.
    pub action: Action,
    /// Filter pattern.
    pub topic: String,
    /// Unix seconds.
    pub created_at: u64,
}

/// One permission of a restricted key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyPermission {
    /// What it grants.
    pub action: Action,
    /// Filter pattern.
    pub topic: String,
}

/// `POST /v1/keys`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateKey {
    /// Display name.
    pub name: String,
    /// Kind.
    pub kind: KeyKindName,
    /// Restricted keys only, non-empty.
    #[serde(default)]
    pub permissions: Option<Vec<KeyPermission>>,
    /// Public keys only.
    #[serde(default)]
    pub acl_sets: Option<Vec<String>>,
}

/// `PATCH /v1/keys/{id}`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PatchKey {
    /// New name.
    pub name: String,
}

/// An API key (the secret only in `key`, only once).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Key {
    /// `key_…`.
    pub id: String,
    /// Display name.
    pub name: String,
    /// Kind.
    pub kind: KeyKindName,
    /// First 10 characters of the secret.
    pub prefix: String,
    /// Restricted key permissions.
    pub permissions: Vec<KeyPermission>,
    /// Public key rule sets.
    pub acl_sets: Vec<String>,
    /// Unix seconds.
    pub created_at: u64,
    /// Unix seconds, at minute granularity.
    pub last_used_at: Option<u64>,
    /// Set once revoked.
    pub revoked_at: Option<u64>,
    /// The secret, only in the creation response.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub key: Option<String>,
}

/// `PATCH /v1/org`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PatchOrg {
    /// New name.
    pub name: Option<String>,
    /// Settings to change.
    pub settings: Option<OrgSettingsPatch>,
}

/// `POST /v1/orgs`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateOrg {
    /// Display name.
    pub name: String,
    /// Settings differing from the defaults.
    #[serde(default)]
    pub settings: Option<OrgSettingsPatch>,
}

/// Usage of the current month.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrgUsage {
    /// Live connections.
    pub connections: u64,
    /// Messages received.
    pub messages_in: u64,
    /// Messages delivered.
    pub messages_out: u64,
    /// REST publishes.
    pub rest_publishes: u64,
    /// `YYYY-MM`.
    pub month: String,
}

/// An org.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Org {
    /// `default` or `org_…`.
    pub id: String,
    /// Display name.
    pub name: String,
    /// Unix seconds.
    pub created_at: u64,
    /// Limits.
    pub settings: OrgSettings,
    /// Only on `GET /v1/org` and `GET /v1/orgs/{id}`.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub usage: Option<OrgUsage>,
}

/// `POST /v1/orgs` response.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CreatedOrg {
    /// The new org.
    pub org: Org,
    /// Its first secret key, with `key`.
    pub key: Key,
}

/// `POST /v1/token-exchange`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenExchange {
    /// The JWT.
    pub token: String,
    /// Provider name.
    #[serde(default)]
    pub provider: Option<String>,
}

/// Patterns granted by token exchange.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Allowed {
    /// Publish patterns.
    pub publish: Vec<String>,
    /// Subscribe patterns.
    pub subscribe: Vec<String>,
}

/// Token exchange response.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ExchangedCredentials {
    /// `tx_…@org`.
    pub username: String,
    /// The random password.
    pub password: String,
    /// Unix seconds.
    pub expires_at: u64,
    /// What they may do.
    pub allowed: Allowed,
}

/// A page of a list.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Page<T> {
    /// The items, by name or id.
    pub items: Vec<T>,
    /// Cursor of the next page.
    pub next_cursor: Option<String>,
}

/// The error body.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ErrorBody {
    /// Machine code.
    pub error: String,
    /// Human sentence.
    pub detail: String,
}
