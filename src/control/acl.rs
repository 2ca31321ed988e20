//! (stub until the control branch lands)

/// Compiled ACL.
#[derive(Debug, Clone, Default)]
pub struct Acl {}

impl Acl {
    /// Allows everything.
    pub fn allow_all() -> Acl {
        Acl {}
    }
    /// May publish.
    pub fn may_publish(&self, _topic: &str, _username: &str, _client_id: &str) -> bool {
        true
    }
    /// May subscribe.
    pub fn may_subscribe(&self, _filter: &str, _username: &str, _client_id: &str) -> bool {
        true
    }
}
