//! Building the shards' snapshot from the database.

use std::collections::{BTreeMap, HashMap};

use sha2::{Digest, Sha256};

use super::{
    corrupt, opt_u64, org_from_row, parse_action, parse_permission, Store, StoreError, DEFAULT_SET,
    ORG_COLS,
};
use crate::control::acl::{self, Acl};
use crate::control::model::{Action, KeyKindName, KeyPermission, Permission};
use crate::control::snapshot::{KeyAuth, KeyKind, OrgInfo, OrgNum, Snapshot, UserAuth};

impl Store {
    /// Builds the shards' view of everything.
    pub fn snapshot(&self, version: u64) -> Result<Snapshot, StoreError> {
        let mut snap = Snapshot::new(version);
        let mut nums: HashMap<String, OrgNum> = HashMap::new();
        for row in self
            .db
            .query(&format!("SELECT {ORG_COLS} FROM orgs"), &[])?
        {
            let (org, num) = org_from_row(&row)?;
            nums.insert(org.id.clone(), num);
            snap.insert_org(OrgInfo {
                num,
                id: org.id,
                name: org.name,
                settings: org.settings,
            });
        }
        // Rules of every set, keyed by (org, set), in id order so generations are stable.
        let mut rules: HashMap<(String, String), Vec<acl::Rule>> = HashMap::new();
        {
            let rows = self.db.query(
                "SELECT org, set_name, permission, action, topic FROM acl_rules ORDER BY id",
                &[],
            )?;
            for r in rows {
                let perm: String = r.get(2)?;
                let action: String = r.get(3)?;
                rules
                    .entry((r.get(0)?, r.get(1)?))
                    .or_default()
                    .push(acl::Rule {
                        permission: parse_permission(&perm)?,
                        action: parse_action(&action)?,
                        topic: r.get(4)?,
                    });
            }
        }
        let mut user_sets: BTreeMap<(String, String), Vec<String>> = BTreeMap::new();
        {
            let rows = self.db.query(
                "SELECT org, username, set_name FROM user_sets ORDER BY set_name",
                &[],
            )?;
            for r in rows {
                user_sets
                    .entry((r.get(0)?, r.get(1)?))
                    .or_default()
                    .push(r.get(2)?);
            }
        }
        let rules_of = |org: &str, set: &str| -> &[acl::Rule] {
            rules
                .get(&(org.to_string(), set.to_string()))
                .map(Vec::as_slice)
                .unwrap_or(&[])
        };
        {
            let rows = self.db.query(
                "SELECT org, username, password_hash, namespace, enabled, expires_at,
                 allowed_publish, allowed_subscribe, owner FROM users",
                &[],
            )?;
            for r in rows {
                let org: String = r.get(0)?;
                let Some(&num) = nums.get(&org) else { continue };
                let username: String = r.get(1)?;
                let password_hash: String = r.get(2)?;
                let namespace: Option<String> = r.get(3)?;
                let enabled: bool = r.get(4)?;
                let expires_at = opt_u64(r.get(5)?);
                let publish: Option<String> = r.get(6)?;
                let subscribe: Option<String> = r.get(7)?;
                let owner: Option<String> = r.get(8)?;
                let mut all: Vec<acl::Rule> = rules_of(&org, DEFAULT_SET).to_vec();
                let sets = user_sets
                    .get(&(org.clone(), username.clone()))
                    .cloned()
                    .unwrap_or_default();
                for set in &sets {
                    if set != DEFAULT_SET {
                        all.extend_from_slice(rules_of(&org, set));
                    }
                }
                for (json, action) in [(&publish, Action::Publish), (&subscribe, Action::Subscribe)]
                {
                    if let Some(json) = json {
                        let patterns: Vec<String> =
                            serde_json::from_str(json).map_err(|_| corrupt("allowed patterns"))?;
                        all.extend(patterns.into_iter().map(|topic| acl::Rule {
                            permission: Permission::Allow,
                            action,
                            topic,
                        }));
                    }
                }
                let generation = fingerprint(&format!(
                    "{password_hash}\0{namespace:?}\0{enabled}\0{expires_at:?}\0{sets:?}\0{all:?}"
                ));
                snap.insert_user(UserAuth {
                    org: num,
                    username,
                    namespace,
                    enabled,
                    password_hash,
                    expires_at,
                    acl: Acl::from_rules(all),
                    generation,
                    owner,
                });
            }
        }
        {
            let rows = self.db.query(
                "SELECT id, org, kind, key_hash, permissions, root FROM api_keys WHERE revoked_at IS NULL",
                &[],
            )?;
            for r in rows {
                let id: String = r.get(0)?;
                let org: String = r.get(1)?;
                let Some(&num) = nums.get(&org) else { continue };
                let kind: String = r.get(2)?;
                let hash: Vec<u8> = r.get(3)?;
                let perms: String = r.get(4)?;
                let root: bool = r.get(5)?;
                let hash: [u8; 32] = hash.try_into().map_err(|_| corrupt("key hash"))?;
                let kind = KeyKindName::parse(&kind).ok_or_else(|| corrupt("key kind"))?;
                let (kind, acl_rules): (KeyKind, Option<Vec<acl::Rule>>) = match kind {
                    KeyKindName::Secret => (KeyKind::Secret, None),
                    KeyKindName::Restricted => {
                        let perms: Vec<KeyPermission> =
                            serde_json::from_str(&perms).map_err(|_| corrupt("key permissions"))?;
                        let rules = perms
                            .into_iter()
                            .map(|p| acl::Rule {
                                permission: Permission::Allow,
                                action: p.action,
                                topic: p.topic,
                            })
                            .collect();
                        (KeyKind::Restricted, Some(rules))
                    }
                    KeyKindName::Public => {
                        let sets = self.key_sets(&org, &id)?;
                        let rules = if sets.is_empty() {
                            vec![acl::Rule {
                                permission: Permission::Allow,
                                action: Action::Subscribe,
                                topic: "#".to_string(),
                            }]
                        } else {
                            // A public key never publishes, whatever its sets say.
                            sets.iter()
                                .flat_map(|s| rules_of(&org, s).iter().cloned())
                                .filter_map(|mut r| {
                                    match (r.permission, r.action) {
                                        (_, Action::Publish) => return None,
                                        (_, Action::All) => r.action = Action::Subscribe,
                                        _ => {}
                                    }
                                    Some(r)
                                })
                                .collect()
                        };
                        (KeyKind::Public, Some(rules))
                    }
                };
                let generation = fingerprint(&format!("{id}\0{kind:?}\0{root}\0{acl_rules:?}"));
                let acl = match acl_rules {
                    None => Acl::allow_all(),
                    Some(rules) => Acl::from_rules(rules),
                };
                snap.insert_key(
                    hash,
                    KeyAuth {
                        id,
                        org: num,
                        kind,
                        root,
                        acl,
                        generation,
                    },
                );
            }
        }
        Ok(snap)
    }
}

fn fingerprint(s: &str) -> u64 {
    let digest = Sha256::digest(s.as_bytes());
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    u64::from_le_bytes(first)
}
