//! The immutable view the shards authenticate and authorize from; rebuilt after every change.

use std::collections::HashMap;
use std::sync::Arc;

use super::acl::Acl;
use super::key_hash::key_hash;
use super::model::OrgSettings;

/// Routing number of an org; 0 is `default`.
pub type OrgNum = u32;

/// One org as the shards see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrgInfo {
    /// Routing number.
    pub num: OrgNum,
    /// `default` or `org_…`.
    pub id: String,
    /// Display name.
    pub name: String,
    /// Limits.
    pub settings: OrgSettings,
}

/// An MQTT user's credentials and compiled rules.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserAuth {
    /// Owning org.
    pub org: OrgNum,
    /// Username without `@org`.
    pub username: String,
    /// Topic namespace.
    pub namespace: Option<String>,
    /// Disabled users are refused.
    pub enabled: bool,
    /// argon2id PHC string.
    pub password_hash: String,
    /// Unix seconds after which CONNECT is refused.
    pub expires_at: Option<u64>,
    /// Set `default` + own sets (or token-exchange patterns).
    pub acl: Acl,
    /// Changes whenever anything affecting this user changes.
    pub generation: u64,
    /// Whose sessions its logins own when not the user itself (token exchange: provider and
    /// subject, so a device that exchanges a fresh token resumes its own session).
    pub owner: Option<String>,
}

/// API key kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyKind {
    /// `sk_`.
    Secret,
    /// `pk_`.
    Public,
    /// `rk_`.
    Restricted,
}

/// A valid (not revoked) API key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyAuth {
    /// `key_…`.
    pub id: String,
    /// Owning org.
    pub org: OrgNum,
    /// Kind.
    pub kind: KeyKind,
    /// The bootstrap key of `default`, the only one allowed on `/v1/orgs`.
    pub root: bool,
    /// What it may publish / subscribe.
    pub acl: Acl,
    /// Changes whenever anything affecting this key changes.
    pub generation: u64,
}

/// Immutable auth state of every org.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// Increases with every rebuild.
    pub version: u64,
    org_ids: HashMap<String, OrgNum>,
    orgs: HashMap<OrgNum, OrgInfo>,
    users: HashMap<OrgNum, HashMap<String, Arc<UserAuth>>>,
    keys: HashMap<[u8; 32], Arc<KeyAuth>>,
}

impl Snapshot {
    /// Only the default org, no users or keys (tests, before the control thread starts).
    pub fn empty_default() -> Snapshot {
        let mut s = Snapshot::default();
        s.insert_org(OrgInfo {
            num: 0,
            id: "default".to_string(),
            name: "default".to_string(),
            settings: OrgSettings::default(),
        });
        s
    }

    /// Routing number of an org id.
    pub fn org_num(&self, org_id: &str) -> Option<OrgNum> {
        self.org_ids.get(org_id).copied()
    }

    /// Every org.
    pub fn orgs(&self) -> impl Iterator<Item = &OrgInfo> {
        self.orgs.values()
    }

    /// The org with routing number `num`.
    pub fn org(&self, num: OrgNum) -> Option<&OrgInfo> {
        self.orgs.get(&num)
    }

    /// User by org and bare username.
    pub fn user(&self, org: OrgNum, username: &str) -> Option<&Arc<UserAuth>> {
        self.users.get(&org)?.get(username)
    }

    /// Key by its secret (looked up by SHA-256; revoked keys are absent).
    pub fn key(&self, secret: &str) -> Option<&Arc<KeyAuth>> {
        self.keys.get(&key_hash(secret))
    }

    /// Key by the SHA-256 of its secret (streams keep the hash, not the secret, to recheck it).
    pub fn key_by_hash(&self, hash: &[u8; 32]) -> Option<&Arc<KeyAuth>> {
        self.keys.get(hash)
    }

    /// An empty snapshot with this version (the control thread fills it in).
    pub fn new(version: u64) -> Snapshot {
        Snapshot {
            version,
            ..Snapshot::default()
        }
    }

    /// Adds an org (or replaces the one with its number).
    pub fn insert_org(&mut self, org: OrgInfo) {
        self.org_ids.insert(org.id.clone(), org.num);
        self.orgs.insert(org.num, org);
    }

    /// Adds a user (or replaces the one with its org and username).
    pub fn insert_user(&mut self, user: UserAuth) {
        self.users
            .entry(user.org)
            .or_default()
            .insert(user.username.clone(), Arc::new(user));
    }

    /// Adds a key under the SHA-256 of its secret.
    pub fn insert_key(&mut self, hash: [u8; 32], key: KeyAuth) {
        self.keys.insert(hash, Arc::new(key));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shareable<T: Send + Sync>() {}

    #[test]
    fn empty_default_has_only_the_default_org() {
        shareable::<Snapshot>();
        let s = Snapshot::empty_default();
        assert_eq!(s.org_num("default"), Some(0));
        assert_eq!(s.org(0).map(|o| o.id.as_str()), Some("default"));
        assert_eq!(s.org(0).map(|o| o.settings), Some(OrgSettings::default()));
        assert!(s.org_num("org_x").is_none());
        assert!(s.user(0, "u").is_none());
        assert!(s.key("sk_x").is_none());
    }
}
