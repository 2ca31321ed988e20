//! ACL rule sets and rules.

use super::*;

const SET_COLS: &str = "name, description, created_at,
    (SELECT COUNT(*) FROM acl_rules r WHERE r.org = s.org AND r.set_name = s.name)";

impl Store {
    /// Creates a rule set.
    pub fn create_set(
        &mut self,
        org: &str,
        name: &str,
        description: &str,
        now: u64,
    ) -> Result<AclSet, StoreError> {
        self.check_count(
            "SELECT COUNT(*) FROM acl_sets WHERE org = ?1",
            org,
            SETS_PER_ORG_MAX,
            "acl sets per org",
        )?;
        let n = self.db.execute(
            "INSERT INTO acl_sets (org, name, description, created_at) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT DO NOTHING",
            args![org, name, description, to_i64(now)],
        )?;
        if n == 0 {
            return Err(StoreError::Conflict(format!(
                "acl set '{name}' already exists"
            )));
        }
        self.get_set(org, name, false)
    }

    /// One set, with its rules when `with_rules`.
    pub fn get_set(&self, org: &str, name: &str, with_rules: bool) -> Result<AclSet, StoreError> {
        let row = self
            .db
            .query_opt(
                &format!("SELECT {SET_COLS} FROM acl_sets s WHERE org = ?1 AND name = ?2"),
                args![org, name],
            )?
            .ok_or(StoreError::NotFound)?;
        let mut set = set_from_row(&row)?;
        if with_rules {
            set.rules = Some(self.list_rules(org, Some(name), usize::MAX - 1, None)?.0);
        }
        Ok(set)
    }

    /// Sets ordered by name.
    pub fn list_sets(
        &self,
        org: &str,
        limit: usize,
        cursor: Option<&str>,
    ) -> Result<(Vec<AclSet>, Option<String>), StoreError> {
        let rows = self.db.query_map(
            &format!(
                "SELECT {SET_COLS} FROM acl_sets s WHERE org = ?1 AND name > ?2
                     ORDER BY name LIMIT ?3"
            ),
            args![org, cursor.unwrap_or(""), limit_sql(limit)],
            set_from_row,
        )?;
        Ok(page(rows, limit, |s| s.name.clone()))
    }

    /// Changes a set's description.
    pub fn update_set(
        &mut self,
        org: &str,
        name: &str,
        description: &str,
    ) -> Result<AclSet, StoreError> {
        let n = self.db.execute(
            "UPDATE acl_sets SET description = ?3 WHERE org = ?1 AND name = ?2",
            args![org, name, description],
        )?;
        if n == 0 {
            return Err(StoreError::NotFound);
        }
        self.get_set(org, name, false)
    }

    /// Deletes a set and its rules; conflict for `default` or while attached.
    pub fn delete_set(&mut self, org: &str, name: &str) -> Result<(), StoreError> {
        self.get_set(org, name, false)?;
        if name == DEFAULT_SET {
            return Err(StoreError::Conflict(
                "the default set cannot be deleted".into(),
            ));
        }
        let users: i64 = self
            .db
            .query_one(
                "SELECT COUNT(*) FROM user_sets WHERE org = ?1 AND set_name = ?2",
                args![org, name],
            )?
            .get(0)?;
        let keys: i64 = self
            .db
            .query_one(
                "SELECT COUNT(*) FROM key_sets k JOIN api_keys a ON a.id = k.key_id
                 WHERE k.org = ?1 AND k.set_name = ?2 AND a.revoked_at IS NULL",
                args![org, name],
            )?
            .get(0)?;
        if users + keys > 0 {
            return Err(StoreError::Conflict(format!(
                "acl set '{name}' is attached to {users} users and {keys} keys"
            )));
        }
        let db = &self.db;
        db.transaction(|| {
            db.execute(
                "DELETE FROM acl_rules WHERE org = ?1 AND set_name = ?2",
                args![org, name],
            )?;
            db.execute(
                "DELETE FROM key_sets WHERE org = ?1 AND set_name = ?2",
                args![org, name],
            )?;
            db.execute(
                "DELETE FROM acl_sets WHERE org = ?1 AND name = ?2",
                args![org, name],
            )
        })?;
        Ok(())
    }

    // ---- rules ----

    /// Adds a rule to a set (invalid if the set does not exist).
    pub fn create_rule(
        &mut self,
        org: &str,
        set: &str,
        permission: Permission,
        action: Action,
        topic: &str,
        now: u64,
    ) -> Result<Rule, StoreError> {
        if !self.set_exists(org, set)? {
            return Err(StoreError::Invalid(format!(
                "acl set '{set}' does not exist"
            )));
        }
        let id = secrets::random_id("rule_", 16)?;
        self.db.execute(
            "INSERT INTO acl_rules (id, org, set_name, permission, action, topic, created_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            args![
                &id,
                org,
                set,
                permission_str(permission),
                action_str(action),
                topic,
                to_i64(now)
            ],
        )?;
        self.get_rule(org, &id)
    }

    /// One rule.
    pub fn get_rule(&self, org: &str, id: &str) -> Result<Rule, StoreError> {
        let row = self
            .db
            .query_opt(
                &format!("SELECT {RULE_COLS} FROM acl_rules WHERE org = ?1 AND id = ?2"),
                args![org, id],
            )?
            .ok_or(StoreError::NotFound)?;
        rule_from_row(&row)
    }

    /// Rules ordered by id, optionally of one set.
    pub fn list_rules(
        &self,
        org: &str,
        set: Option<&str>,
        limit: usize,
        cursor: Option<&str>,
    ) -> Result<(Vec<Rule>, Option<String>), StoreError> {
        // The CAST gives PostgreSQL the parameter's type where `IS NULL` alone would not.
        let rows = self
            .db
            .query_map(
                &format!(
                    "SELECT {RULE_COLS} FROM acl_rules WHERE org = ?1
                     AND (CAST(?2 AS TEXT) IS NULL OR set_name = ?2) AND id > ?3 ORDER BY id LIMIT ?4"
                ),
                args![org, set, cursor.unwrap_or(""), limit_sql(limit)],
                rule_from_row,
            )?;
        Ok(page(rows, limit, |r| r.id.clone()))
    }

    /// Changes a rule.
    pub fn update_rule(
        &mut self,
        org: &str,
        id: &str,
        topic: Option<&str>,
        action: Option<Action>,
        permission: Option<Permission>,
    ) -> Result<Rule, StoreError> {
        let mut rule = self.get_rule(org, id)?;
        if let Some(t) = topic {
            rule.topic = t.to_string();
        }
        if let Some(a) = action {
            rule.action = a;
        }
        if let Some(p) = permission {
            rule.permission = p;
        }
        self.db.execute(
            "UPDATE acl_rules SET topic = ?3, action = ?4, permission = ?5 WHERE org = ?1 AND id = ?2",
            args![
                org,
                id,
                &rule.topic,
                action_str(rule.action),
                permission_str(rule.permission)
            ],
        )?;
        Ok(rule)
    }

    /// Deletes a rule.
    pub fn delete_rule(&mut self, org: &str, id: &str) -> Result<(), StoreError> {
        let n = self.db.execute(
            "DELETE FROM acl_rules WHERE org = ?1 AND id = ?2",
            args![org, id],
        )?;
        if n == 0 {
            return Err(StoreError::NotFound);
        }
        Ok(())
    }
}
