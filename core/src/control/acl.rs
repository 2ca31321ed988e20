//! Compiled ACL rules: default deny, deny wins, `{username}` / `{clientid}` substitution.
//!
//! Subscriptions to `$share/{group}/{filter}` are checked on `{filter}`: the caller strips the
//! share prefix (see `ringmq_router::topic::parse_shared`) before calling [`Acl::may_subscribe`].

use std::borrow::Cow;

pub use super::model::{Action, Permission};

/// One uncompiled rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    /// Allow or deny.
    pub permission: Permission,
    /// What it applies to.
    pub action: Action,
    /// Filter pattern, possibly with placeholders.
    pub topic: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Pattern {
    text: String,
    placeholder: bool,
}

impl Pattern {
    fn new(text: String) -> Pattern {
        let placeholder = text.contains("{username}") || text.contains("{clientid}");
        Pattern { text, placeholder }
    }

    /// The pattern for this client, or `None` when a substituted value would add levels or
    /// wildcards (such a value must never widen what the rule grants).
    fn resolve<'a>(&'a self, username: &str, client_id: &str) -> Option<Cow<'a, str>> {
        if !self.placeholder {
            return Some(Cow::Borrowed(&self.text));
        }
        let unsafe_value = |v: &str| v.contains(['+', '#', '/']);
        if (self.text.contains("{username}") && unsafe_value(username))
            || (self.text.contains("{clientid}") && unsafe_value(client_id))
        {
            return None;
        }
        Some(Cow::Owned(
            self.text
                .replace("{username}", username)
                .replace("{clientid}", client_id),
        ))
    }
}

/// Compiled rules of one principal.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Acl {
    allow_all: bool,
    pub_allow: Vec<Pattern>,
    pub_deny: Vec<Pattern>,
    sub_allow: Vec<Pattern>,
    sub_deny: Vec<Pattern>,
}

impl Acl {
    /// Everything allowed (secret keys).
    pub fn allow_all() -> Acl {
        Acl {
            allow_all: true,
            ..Acl::default()
        }
    }

    /// Compiles rules; rules are not validated here (the API validates them on write).
    pub fn from_rules(rules: Vec<Rule>) -> Acl {
        let mut acl = Acl::default();
        for rule in rules {
            let publish = matches!(rule.action, Action::Publish | Action::All);
            let subscribe = matches!(rule.action, Action::Subscribe | Action::All);
            let deny = rule.permission == Permission::Deny;
            if publish {
                let list = if deny {
                    &mut acl.pub_deny
                } else {
                    &mut acl.pub_allow
                };
                list.push(Pattern::new(rule.topic.clone()));
            }
            if subscribe {
                let list = if deny {
                    &mut acl.sub_deny
                } else {
                    &mut acl.sub_allow
                };
                list.push(Pattern::new(rule.topic));
            }
        }
        acl
    }

    /// May this client publish to topic name `topic`?
    pub fn may_publish(&self, topic: &str, username: &str, client_id: &str) -> bool {
        if self.allow_all {
            return true;
        }
        // An unsafe substitution makes a deny rule match, so a hostile client id fails closed.
        let denied = self.pub_deny.iter().any(|p| {
            p.resolve(username, client_id)
                .is_none_or(|p| ringmq_router::topic::matches(&p, topic))
        });
        !denied
            && self.pub_allow.iter().any(|p| {
                p.resolve(username, client_id)
                    .is_some_and(|p| ringmq_router::topic::matches(&p, topic))
            })
    }

    /// May this client subscribe to `filter` (already stripped of any `$share/{group}/`)?
    pub fn may_subscribe(&self, filter: &str, username: &str, client_id: &str) -> bool {
        if self.allow_all {
            return true;
        }
        let denied = self.sub_deny.iter().any(|p| {
            p.resolve(username, client_id)
                .is_none_or(|p| intersects(&p, filter))
        });
        !denied
            && self.sub_allow.iter().any(|p| {
                p.resolve(username, client_id)
                    .is_some_and(|p| covers(&p, filter))
            })
    }
}

fn is_wild(level: &str) -> bool {
    level == "+" || level == "#"
}

/// Does `pattern` match every topic that `filter` matches?
pub fn covers(pattern: &str, filter: &str) -> bool {
    let mut p = pattern.split('/');
    let mut f = filter.split('/');
    let mut first = true;
    loop {
        match (p.next(), f.next()) {
            (Some("#"), Some(fl)) => {
                // A first-level wildcard never matches `$` topics, which a literal `$x` filter has.
                return !(first && !is_wild(fl) && fl.starts_with('$'));
            }
            // `a/#` matches `a`, so a pattern with one extra `#` level covers the shorter filter.
            (Some("#"), None) => return true,
            // At the first level `#` has no parent to match, so it means exactly `+/#`.
            (Some("+"), Some("#")) if first => return p.next() == Some("#") && p.next().is_none(),
            (Some("+"), Some(fl)) => {
                if fl == "#" || (first && fl != "+" && fl.starts_with('$')) {
                    return false;
                }
            }
            (Some(pl), Some(fl)) => {
                if pl != fl {
                    return false;
                }
            }
            (None, None) => return true,
            (Some(_), None) | (None, Some(_)) => return false,
        }
        first = false;
    }
}

/// Is there a topic that both filters match?
pub fn intersects(a: &str, b: &str) -> bool {
    let mut a_levels = a.split('/');
    let mut b_levels = b.split('/');
    let mut first = true;
    loop {
        match (a_levels.next(), b_levels.next()) {
            (Some(x), Some(y)) => {
                let x_wild = is_wild(x);
                let y_wild = is_wild(y);
                // A first-level wildcard excludes `$` topics, which a literal `$x` first level requires.
                if first
                    && ((x_wild && !y_wild && y.starts_with('$'))
                        || (y_wild && !x_wild && x.starts_with('$')))
                {
                    return false;
                }
                if x == "#" || y == "#" {
                    return true;
                }
                if !x_wild && !y_wild && x != y {
                    return false;
                }
            }
            (None, None) => return true,
            // The longer one must end in a `#` that also matches the parent level.
            (Some(x), None) => return x == "#" && a_levels.next().is_none(),
            (None, Some(y)) => return y == "#" && b_levels.next().is_none(),
        }
        first = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use ringmq_router::topic::matches;

    fn rule(permission: Permission, action: Action, topic: &str) -> Rule {
        Rule {
            permission,
            action,
            topic: topic.to_string(),
        }
    }

    #[test]
    fn covers_examples() {
        assert!(covers("#", "a/b"));
        assert!(covers("a/#", "a"));
        assert!(covers("a/#", "a/+/c"));
        assert!(covers("a/+", "a/b"));
        assert!(!covers("a/+", "a/#"));
        assert!(!covers("a/b", "a/+"));
        assert!(!covers("#", "$SYS/#"));
        assert!(covers("$SYS/#", "$SYS/a"));
        assert!(covers("#", "+/a"));
        assert!(!covers("+", "$x"));
    }

    #[test]
    fn intersects_examples() {
        assert!(intersects("a/+", "+/b"));
        assert!(intersects("a/#", "a"));
        assert!(!intersects("a/b", "a/c"));
        assert!(!intersects("#", "$SYS/x"));
        assert!(intersects("$SYS/#", "$SYS/x"));
        assert!(!intersects("a/b/c", "a/b"));
        assert!(intersects("+/+", "#"));
    }

    #[test]
    fn deny_wins_and_default_deny() {
        let acl = Acl::from_rules(vec![
            rule(Permission::Allow, Action::All, "a/#"),
            rule(Permission::Deny, Action::Publish, "a/secret"),
            rule(Permission::Deny, Action::Subscribe, "a/secret/#"),
        ]);
        assert!(acl.may_publish("a/x", "u", "c"));
        assert!(!acl.may_publish("a/secret", "u", "c"));
        assert!(!acl.may_publish("b", "u", "c"));
        assert!(acl.may_subscribe("a/x/#", "u", "c"));
        assert!(!acl.may_subscribe("a/#", "u", "c"));
        assert!(!acl.may_subscribe("a/+/x", "u", "c"));
        assert!(!acl.may_subscribe("#", "u", "c"));
        assert!(Acl::allow_all().may_subscribe("#", "u", "c"));
        assert!(!Acl::default().may_publish("a", "u", "c"));
    }

    #[test]
    fn placeholders_are_substituted_and_never_widen() {
        let acl = Acl::from_rules(vec![
            rule(Permission::Allow, Action::All, "users/{username}/#"),
            rule(Permission::Allow, Action::Publish, "clients/{clientid}"),
        ]);
        assert!(acl.may_publish("users/alice/x", "alice", "c1"));
        assert!(!acl.may_publish("users/bob/x", "alice", "c1"));
        assert!(acl.may_subscribe("users/alice/#", "alice", "c1"));
        assert!(acl.may_publish("clients/c1", "alice", "c1"));
        assert!(!acl.may_publish("clients/c2", "alice", "c1"));
        // A client id with wildcards must not turn the rule into `clients/+`.
        assert!(!acl.may_publish("clients/x", "alice", "+"));
        assert!(!acl.may_publish("clients/a/b", "alice", "a/b"));
        let deny = Acl::from_rules(vec![
            rule(Permission::Allow, Action::All, "#"),
            rule(Permission::Deny, Action::All, "x/{clientid}"),
        ]);
        assert!(deny.may_publish("y", "u", "ok"));
        assert!(!deny.may_publish("x/ok", "u", "ok"));
        assert!(!deny.may_publish("y", "u", "#"));
    }

    const LEVELS: &[&str] = &["a", "b", "$", "$a", ""];
    const TOPIC_LEVELS: &[&str] = &["a", "b", "$", "$a", "", "c"];

    fn all_topics() -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        let mut frontier: Vec<String> = TOPIC_LEVELS.iter().map(|s| s.to_string()).collect();
        for _ in 0..4 {
            out.extend(frontier.iter().cloned());
            frontier = frontier
                .iter()
                .flat_map(|t| TOPIC_LEVELS.iter().map(move |l| format!("{t}/{l}")))
                .collect();
        }
        out
    }

    fn filter_strategy() -> impl Strategy<Value = String> {
        (
            proptest::collection::vec(
                prop_oneof![Just("+"), proptest::sample::select(LEVELS)],
                0..3,
            ),
            any::<bool>(),
        )
            .prop_filter_map("non-empty", |(levels, hash)| {
                let mut levels: Vec<&str> = levels;
                if hash {
                    levels.push("#");
                }
                (!levels.is_empty()).then(|| levels.join("/"))
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(1000))]
        #[test]
        fn covers_and_intersects_match_brute_force(p in filter_strategy(), f in filter_strategy()) {
            let topics = all_topics();
            let brute_covers = topics.iter().all(|t| !matches(&f, t) || matches(&p, t));
            let brute_intersects = topics.iter().any(|t| matches(&f, t) && matches(&p, t));
            prop_assert_eq!(covers(&p, &f), brute_covers, "covers({}, {})", p, f);
            prop_assert_eq!(intersects(&p, &f), brute_intersects, "intersects({}, {})", p, f);
        }
    }
}
