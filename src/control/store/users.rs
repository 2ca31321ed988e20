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
            .conn
            .query_row(
                "SELECT 1 FROM acl_sets WHERE org = ?1 AND name = ?2",
                [org, set],
                |_| Ok(()),
            )
            .optional()?
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
        let tx = self.conn.transaction()?;
        let inserted = tx.execute(
            "INSERT OR IGNORE INTO users (org, username, password_hash, namespace, enabled, expires_at,
             allowed_publish, allowed_subscribe, created_at, updated_at, owner)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?9, ?10)",
            params![
                org,
                user.username,
                user.password_hash,
                user.namespace,
                user.enabled,
                user.expires_at.map(to_i64),
                publish,
                subscribe,
                to_i64(now),
                user.owner
            ],
        )?;
        if inserted == 0 {
            return Err(StoreError::Conflict(format!(
                "user '{}' already exists",
                user.username
            )));
        }
        for set in &user.acl_sets {
            tx.execute(
                "INSERT OR IGNORE INTO user_sets (org, username, set_name) VALUES (?1, ?2, ?3)",
                params![org, user.username, set],
            )?;
        }
        tx.commit()?;
        self.get_user(org, &user.username)
    }

    pub(super) fn user_sets(&self, org: &str, username: &str) -> Result<Vec<String>, StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT set_name FROM user_sets WHERE org = ?1 AND username = ?2 ORDER BY set_name",
        )?;
        let sets = stmt
            .query_map([org, username], |r| r.get(0))?
            .collect::<Result<Vec<String>, _>>()?;
        Ok(sets)
    }

    /// One user.
    pub fn get_user(&self, org: &str, username: &str) -> Result<UserRow, StoreError> {
        let row = self
            .conn
            .query_row(
                "SELECT username, namespace, enabled, created_at, updated_at, expires_at
                 FROM users WHERE org = ?1 AND username = ?2",
                [org, username],
                user_from_row,
            )
            .optional()?
            .ok_or(StoreError::NotFound)?;
        self.with_sets(org, row)
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
        let mut stmt = self.conn.prepare(
            "SELECT username, namespace, enabled, created_at, updated_at, expires_at
             FROM users WHERE org = ?1 AND username > ?2 ORDER BY username LIMIT ?3",
        )?;
        let rows = stmt
            .query_map(
                params![org, cursor.unwrap_or(""), limit_sql(limit)],
                user_from_row,
            )?
            .collect::<Result<Vec<_>, _>>()?;
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
        let tx = self.conn.transaction()?;
        if let Some(hash) = &change.password_hash {
            tx.execute(
                "UPDATE users SET password_hash = ?3 WHERE org = ?1 AND username = ?2",
                params![org, username, hash],
            )?;
        }
        if let Some(ns) = &change.namespace {
            tx.execute(
                "UPDATE users SET namespace = ?3 WHERE org = ?1 AND username = ?2",
                params![org, username, ns],
            )?;
        }
        if let Some(enabled) = change.enabled {
            tx.execute(
                "UPDATE users SET enabled = ?3 WHERE org = ?1 AND username = ?2",
                params![org, username, enabled],
            )?;
        }
        if let Some(sets) = &change.acl_sets {
            tx.execute(
                "DELETE FROM user_sets WHERE org = ?1 AND username = ?2",
                [org, username],
            )?;
            for set in sets {
                tx.execute(
                    "INSERT OR IGNORE INTO user_sets (org, username, set_name) VALUES (?1, ?2, ?3)",
                    params![org, username, set],
                )?;
            }
        }
        tx.execute(
            "UPDATE users SET updated_at = ?3 WHERE org = ?1 AND username = ?2",
            params![org, username, to_i64(now)],
        )?;
        tx.commit()?;
        self.get_user(org, username)
    }

    /// Deletes a user.
    pub fn delete_user(&mut self, org: &str, username: &str) -> Result<(), StoreError> {
        let n = self.conn.execute(
            "DELETE FROM users WHERE org = ?1 AND username = ?2",
            [org, username],
        )?;
        if n == 0 {
            return Err(StoreError::NotFound);
        }
        Ok(())
    }

    /// Records that `provider`'s token `token_id` (valid until `expires_at`) was exchanged;
    /// false if it was already.
    pub fn record_exchange(
        &mut self,
        provider: &str,
        token_id: &str,
        expires_at: u64,
    ) -> Result<bool, StoreError> {
        let n = self.conn.execute(
            "INSERT OR IGNORE INTO exchanged_tokens (provider, token_id, expires_at)
             VALUES (?1, ?2, ?3)",
            params![provider, token_id, to_i64(expires_at)],
        )?;
        Ok(n == 1)
    }

    /// Unexpired exchanged tokens of `provider` (as of the last sweep).
    pub fn exchanged_count(&self, provider: &str) -> Result<u64, StoreError> {
        let n: i64 = self.conn.query_row(
            "SELECT COUNT(*) FROM exchanged_tokens WHERE provider = ?1",
            [provider],
            |r| r.get(0),
        )?;
        Ok(to_u64(n))
    }

    /// Forgets exchanged tokens that expired before `now`: they can no longer be exchanged.
    pub fn sweep_exchanged(&mut self, now: u64) -> Result<usize, StoreError> {
        Ok(self.conn.execute(
            "DELETE FROM exchanged_tokens WHERE expires_at < ?1",
            [to_i64(now)],
        )?)
    }

    /// Deletes users whose `expires_at` is before `now`; returns how many.
    pub fn sweep_expired(&mut self, now: u64) -> Result<usize, StoreError> {
        Ok(self.conn.execute(
            "DELETE FROM users WHERE expires_at IS NOT NULL AND expires_at < ?1",
            [to_i64(now)],
        )?)
    }
}
