//! (stub until the control branch lands)
use std::sync::Arc;

use super::acl::Acl;

/// Routing number of an org.
pub type OrgNum = u32;

/// Stub.
#[derive(Debug, Default)]
pub struct Snapshot {
    /// Version.
    pub version: u64,
}

/// Stub.
#[derive(Debug)]
pub struct OrgInfo {
    /// Num.
    pub num: OrgNum,
    /// Id.
    pub id: String,
}

/// Stub.
#[derive(Debug)]
pub struct UserAuth {
    /// Org.
    pub org: OrgNum,
    /// Name.
    pub username: String,
    /// Namespace.
    pub namespace: Option<String>,
    /// Enabled.
    pub enabled: bool,
    /// PHC.
    pub password_hash: String,
    /// Expiry.
    pub expires_at: Option<u64>,
    /// ACL.
    pub acl: Acl,
    /// Generation.
    pub generation: u64,
}

/// Stub.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyKind {
    /// sk.
    Secret,
    /// pk.
    Public,
    /// rk.
    Restricted,
}

/// Stub.
#[derive(Debug)]
pub struct KeyAuth {
    /// Id.
    pub id: String,
    /// Org.
    pub org: OrgNum,
    /// Kind.
    pub kind: KeyKind,
    /// Root.
    pub root: bool,
    /// ACL.
    pub acl: Acl,
    /// Generation.
    pub generation: u64,
}

impl Snapshot {
    /// Stub.
    pub fn empty_default() -> Snapshot {
        Snapshot::default()
    }
    /// Stub.
    pub fn org_num(&self, org_id: &str) -> Option<OrgNum> {
        (org_id == "default").then_some(0)
    }
    /// Stub.
    pub fn org(&self, _num: OrgNum) -> Option<&OrgInfo> {
        None
    }
    /// Stub.
    pub fn user(&self, _org: OrgNum, _username: &str) -> Option<&Arc<UserAuth>> {
        None
    }
    /// Stub.
    pub fn key(&self, _secret: &str) -> Option<&Arc<KeyAuth>> {
        None
    }
}
