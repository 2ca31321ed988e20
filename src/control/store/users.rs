//! MQTT users and their rule-set attachments.

use super::*;

impl Store {
    pub(super) fn check_sets(&self, org: &str, sets: &[String]) -> Result<(), StoreError> {
        for set in sets {
            if !self.set_exists(org, set)? {
                return Err(StoreError::Invalid(format!(
                    "acl set '{set}' does not exist"
                )));
            }
        }
        Ok(())
    }

    pub(super) fn set_exists(&self, org: &str, set: &str) -> Result<bool, StoreError> {
        Ok(self
            .db
            .query_opt(
                "SELECT 1 FROM acl_sets WHERE org = ?1 AND name = ?2",
                args![org, set],
            )?
            .is_some())
    }

    /// Creates a user; 409 if it exists, invalid if a set does not.
    pub fn create_user(
        &mut self,
        org: &str,
        user: &NewUser,
        now: u64,
    ) -> Result<UserRow, StoreError> {
        self.check_sets(org, &user.acl_sets)?;
        let (publish, subscribe) = match &user.allowed {
            Some(a) => (
                Some(
                    serde_json::to_string(&a.publish)
                        .map_err(|e| StoreError::Corrupt(e.to_string()))?,
                ),
                Some(
                    serde_json::to_string(&a.subscribe)
                        .map_err(|e| StoreError::Corrupt(e.to_string()))?,
                ),
            ),
            None => (None, None),
        };
        let db = &self.db;
        db.transaction(|| {
            let inserted = db.execute(
                "INSERT INTO users (org, username, password_hash, namespace, enabled, expires_at,
                 allowed_publish, allowed_subscribe, created_at, updated_at, owner)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?9, ?10) ON CONFLICT DO NOTHING",
                args![
                    org,
                    &user.username,
                    &user.password_hash,
                    &user.namespace,
                    user.enabled,
                    user.expires_at.map(to_i64),
                    publish,
                    subscribe,
                    to_i64(now),
                    &user.owner
                ],
            )?;
            if inserted == 0 {
                return Err(StoreError::Conflict(format!(
                    "user '{}' already exists",
                    user.username
                )));
            }
            for set in &user.acl_sets {
                db.execute(
                    "INSERT INTO user_sets (org, username, set_name) VALUES (?1, ?2, ?3)
                     ON CONFLICT DO NOTHING",
                    args![org, &user.username, set],
                )?;
            }
            Ok(())
        })?;
        self.get_user(org, &user.username)
    }

    pub(super) fn user_sets(&self, org: &str, username: &str) -> Result<Vec<String>, StoreError> {
        self.db.query_map(
            "SELECT set_name FROM user_sets WHERE org = ?1 AND username = ?2 ORDER BY set_name",
            args![org, username],
            |r| r.get(0),
        )
    }

    /// One user.
    pub fn get_user(&self, org: &str, username: &str) -> Result<UserRow, StoreError> {
        let row = self
            .db
            .query_opt(
                "SELECT username, namespace, enabled, created_at, updated_at, expires_at
                 FROM users WHERE org = ?1 AND username = ?2",
                args![org, username],
            )?
            .ok_or(StoreError::NotFound)?;
        self.with_sets(org, user_from_row(&row)?)
    }

    pub(super) fn with_sets(&self, org: &str, mut user: UserRow) -> Result<UserRow, StoreError> {
        user.acl_sets = self.user_sets(org, &user.username)?;
        Ok(user)
    }

    /// Users ordered by name.
    pub fn list_users(
        &self,
        org: &str,
        limit: usize,
        cursor: Option<&str>,
    ) -> Result<(Vec<UserRow>, Option<String>), StoreError> {
        let rows = self.db.query_map(
            "SELECT username, namespace, enabled, created_at, updated_at, expires_at
                 FROM users WHERE org = ?1 AND username > ?2 ORDER BY username LIMIT ?3",
            args![org, cursor.unwrap_or(""), limit_sql(limit)],
            user_from_row,
        )?;
        let (rows, next) = page(rows, limit, |u| u.username.clone());
        let rows = rows
            .into_iter()
            .map(|u| self.with_sets(org, u))
            .collect::<Result<Vec<_>, _>>()?;
        Ok((rows, next))
    }

    /// Applies a change to a user.
    pub fn update_user(
        &mut self,
        org: &str,
        username: &str,
        change: &UserChange,
        now: u64,
    ) -> Result<UserRow, StoreError> {
        self.get_user(org, username)?;
        if let Some(sets) = &change.acl_sets {
            self.check_sets(org, sets)?;
        }
        let db = &self.db;
        db.transaction(|| {
            if let Some(hash) = &change.password_hash {
                db.execute(
                    "UPDATE users SET password_hash = ?3 WHERE org = ?1 AND username = ?2",
                    args![org, username, hash],
                )?;
            }
            if let Some(ns) = &change.namespace {
                db.execute(
                    "UPDATE users SET namespace = ?3 WHERE org = ?1 AND username = ?2",
                    args![org, username, ns],
                )?;
            }
            if let Some(enabled) = change.enabled {
                db.execute(
                    "UPDATE users SET enabled = ?3 WHERE org = ?1 AND username = ?2",
                    args![org, username, enabled],
                )?;
            }
            if let Some(sets) = &change.acl_sets {
                db.execute(
                    "DELETE FROM user_sets WHERE org = ?1 AND username = ?2",
                    args![org, username],
                )?;
                for set in sets {
                    db.execute(
                        "INSERT INTO user_sets (org, username, set_name) VALUES (?1, ?2, ?3)
                         ON CONFLICT DO NOTHING",
                        args![org, username, set],
                    )?;
                }
            }
            db.execute(
                "UPDATE users SET updated_at = ?3 WHERE org = ?1 AND username = ?2",
                args![org, username, to_i64(now)],
            )
        })?;
        self.get_user(org, username)
    }

    /// Deletes a user.
    pub fn delete_user(&mut self, org: &str, username: &str) -> Result<(), StoreError> {
        let n = self.db.execute(
            "DELETE FROM users WHERE org = ?1 AND username = ?2",
            args![org, username],
        )?;
        if n == 0 {
            return Err(StoreError::NotFound);
        }
        Ok(())
    }

    /// Records that `provider`'s token `token_id` (valid until `expires_at`) was exchanged;
    /// false if it was already (on a shared store: by any node).
    pub fn record_exchange(
        &mut self,
        provider: &str,
        token_id: &str,
        expires_at: u64,
    ) -> Result<bool, StoreError> {
        let n = self.db.execute(
            "INSERT INTO exchanged_tokens (provider, token_id, expires_at) VALUES (?1, ?2, ?3)
             ON CONFLICT DO NOTHING",
            args![provider, token_id, to_i64(expires_at)],
        )?;
        Ok(n == 1)
    }

    /// Unexpired exchanged tokens of `provider` (as of the last sweep).
    pub fn exchanged_count(&self, provider: &str) -> Result<u64, StoreError> {
        Ok(to_u64(self.count(
            "SELECT COUNT(*) FROM exchanged_tokens WHERE provider = ?1",
            provider,
        )?))
    }

    /// Forgets exchanged tokens that expired before `now`: they can no longer be exchanged.
    pub fn sweep_exchanged(&mut self, now: u64) -> Result<usize, StoreError> {
        self.db.execute(
            "DELETE FROM exchanged_tokens WHERE expires_at < ?1",
            args![to_i64(now)],
        )
    }

    /// Deletes users whose `expires_at` is before `now`; returns how many.
    pub fn sweep_expired(&mut self, now: u64) -> Result<usize, StoreError> {
        self.db.execute(
            "DELETE FROM users WHERE expires_at IS NOT NULL AND expires_at < ?1",
            args![to_i64(now)],
        )
    }
}
