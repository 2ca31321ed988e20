//! What a connection may do and the org its topics live in (tenancy and ACL, sans-IO).
//!
//! The session checks every PUBLISH and SUBSCRIBE against its link's [`Access`] before routing,
//! then puts the topic or filter into the org's scope (see `ringmq_router::org_scope`), so the
//! shard routes scoped strings and no filter of one org can match another org's topics.

use std::fmt::Debug;
use std::rc::Rc;

use crate::mqtt::Str;

/// Decides what one authenticated principal may publish and subscribe to. Topics and filters are
/// given as the client sent them (unscoped); a shared subscription is checked on its filter part.
pub trait Authorizer: Debug {
    /// May this principal publish to `topic`?
    fn may_publish(&self, topic: &str, client_id: &str) -> bool;
    /// May this principal subscribe to `filter`?
    fn may_subscribe(&self, filter: &str, client_id: &str) -> bool;
}

/// The access of one connection: its org scope and its authorizer.
#[derive(Debug, Clone, Default)]
pub struct Access {
    /// Org number (0: the default org).
    pub org: u32,
    /// `None`: everything in the org is allowed (anonymous clients on a loopback-only broker).
    pub authorizer: Option<Rc<dyn Authorizer>>,
    /// Labels stamped on the messages it publishes; boxed, since most connections have none
    /// and every connected session carries this field.
    pub labels: Option<Box<Labels>>,
}

/// Labels a connection stamps on the messages it publishes (streams filter on them).
#[derive(Debug, Clone, Default)]
pub struct Labels {
    /// The user's namespace label.
    pub namespace: Option<Str>,
    /// The device identity from a verified TLS client certificate (its CN).
    pub device: Option<Str>,
}

impl Access {
    /// Access to everything in org `org`.
    pub fn org(org: u32, authorizer: Option<Rc<dyn Authorizer>>) -> Access {
        Access {
            org,
            authorizer,
            labels: None,
        }
    }

    /// The namespace label, if the user has one.
    pub fn namespace(&self) -> Option<&Str> {
        self.labels.as_ref()?.namespace.as_ref()
    }

    /// The device identity, if the connection has one.
    pub fn device(&self) -> Option<&Str> {
        self.labels.as_ref()?.device.as_ref()
    }

    /// Sets the namespace label.
    pub fn set_namespace(&mut self, namespace: Option<Str>) {
        if namespace.is_some() || self.labels.is_some() {
            self.labels.get_or_insert_with(Box::default).namespace = namespace;
        }
    }

    /// Sets the device identity.
    pub fn set_device(&mut self, device: Option<Str>) {
        if device.is_some() || self.labels.is_some() {
            self.labels.get_or_insert_with(Box::default).device = device;
        }
    }

    /// May the client publish to `topic` (unscoped)?
    pub fn may_publish(&self, topic: &str, client_id: &str) -> bool {
        match &self.authorizer {
            None => true,
            Some(authorizer) => authorizer.may_publish(topic, client_id),
        }
    }

    /// May the client subscribe to `filter` (unscoped; `$share/g/` is stripped here)?
    pub fn may_subscribe(&self, filter: &str, client_id: &str) -> bool {
        let plain = ringmq_router::split_shared(filter).map_or(filter, |shared| shared.filter);
        match &self.authorizer {
            None => true,
            Some(authorizer) => authorizer.may_subscribe(plain, client_id),
        }
    }

    /// The topic as routed: in the org's scope. The default org's topics are not copied.
    pub fn scope_topic(&self, topic: Str) -> Str {
        // The prefix is made from the org number here rather than kept: every connected
        // session carries an `Access` (memory per idle connection), and only the topics of
        // orgs other than the default one pay for the copy.
        if self.org == 0 {
            topic
        } else {
            let scope = ringmq_router::org_scope(self.org);
            Str::from(ringmq_router::scoped(&scope, &topic))
        }
    }

    /// The filter as indexed: in the org's scope (inside `$share/{group}/` for shared ones).
    pub fn scope_filter(&self, filter: Str) -> Str {
        self.scope_topic(filter)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct OnlyA;

    impl Authorizer for OnlyA {
        fn may_publish(&self, topic: &str, _client_id: &str) -> bool {
            topic.starts_with("a/")
        }
        fn may_subscribe(&self, filter: &str, _client_id: &str) -> bool {
            filter.starts_with("a/")
        }
    }

    #[test]
    fn default_org_is_not_copied_and_allows_everything() {
        let access = Access::default();
        assert!(access.may_publish("x", "c"));
        assert_eq!(&*access.scope_topic(Str::from("x/y")), "x/y");
    }

    #[test]
    fn scoped_org_checks_the_plain_filter_of_shared_subscriptions() {
        let access = Access::org(3, Some(Rc::new(OnlyA)));
        assert!(access.may_subscribe("$share/g/a/b", "c"));
        assert!(!access.may_subscribe("$share/g/b", "c"));
        assert!(!access.may_publish("b", "c"));
        assert_eq!(
            &*access.scope_filter(Str::from("$share/g/a/#")),
            "$share/g/$\u{0}3/a/#"
        );
        assert_eq!(&*access.scope_topic(Str::from("a/b")), "$\u{0}3/a/b");
    }
}
