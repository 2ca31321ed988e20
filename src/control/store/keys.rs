//! API keys.

use super::*;

impl Store {
    /// Creates a key; the returned object carries the secret in `key`.
    pub fn create_key(
        &mut self,
        org: &str,
        name: &str,
        kind: KeyKindName,
        permissions: &[KeyPermission],
        acl_sets: &[String],
        now: u64,
    ) -> Result<Key, StoreError> {
        self.check_sets(org, acl_sets)?;
        self.check_count(
            "SELECT COUNT(*) FROM api_keys WHERE org = ?1",
            org,
            KEYS_PER_ORG_MAX,
            "keys per org",
        )?;
        let db = &self.db;
        db.transaction(|| insert_key(db, org, name, kind, permissions, acl_sets, false, now))
    }

    pub(super) fn key_row(&self, org: &str, id: &str) -> Result<Key, StoreError> {
        let row = self
            .db
            .query_opt(
                &format!("SELECT {KEY_COLS} FROM api_keys WHERE org = ?1 AND id = ?2"),
                args![org, id],
            )?
            .ok_or(StoreError::NotFound)?;
        self.finish_key(org, key_from_row(&row)?)
    }

    pub(super) fn finish_key(&self, org: &str, raw: RawKey) -> Result<Key, StoreError> {
        let (mut key, kind, perms) = raw;
        key.kind = KeyKindName::parse(&kind).ok_or_else(|| corrupt("key kind"))?;
        key.permissions = serde_json::from_str(&perms).map_err(|_| corrupt("key permissions"))?;
        key.acl_sets = self.key_sets(org, &key.id)?;
        Ok(key)
    }

    /// The rule sets attached to a key, by name.
    pub(super) fn key_sets(&self, org: &str, id: &str) -> Result<Vec<String>, StoreError> {
        self.db.query_map(
            "SELECT set_name FROM key_sets WHERE org = ?1 AND key_id = ?2 ORDER BY set_name",
            args![org, id],
            |r| r.get(0),
        )
    }

    /// One key (never its secret).
    pub fn get_key(&self, org: &str, id: &str) -> Result<Key, StoreError> {
        self.key_row(org, id)
    }

    /// Keys ordered by id.
    pub fn list_keys(
        &self,
        org: &str,
        limit: usize,
        cursor: Option<&str>,
    ) -> Result<(Vec<Key>, Option<String>), StoreError> {
        let rows = self.db.query_map(
            &format!(
                "SELECT {KEY_COLS} FROM api_keys WHERE org = ?1 AND id > ?2 ORDER BY id LIMIT ?3"
            ),
            args![org, cursor.unwrap_or(""), limit_sql(limit)],
            key_from_row,
        )?;
        let (rows, next) = page(rows, limit, |k| k.0.id.clone());
        let keys = rows
            .into_iter()
            .map(|raw| self.finish_key(org, raw))
            .collect::<Result<Vec<_>, _>>()?;
        Ok((keys, next))
    }

    /// Renames a key.
    pub fn rename_key(&mut self, org: &str, id: &str, name: &str) -> Result<Key, StoreError> {
        let n = self.db.execute(
            "UPDATE api_keys SET name = ?3 WHERE org = ?1 AND id = ?2",
            args![org, id, name],
        )?;
        if n == 0 {
            return Err(StoreError::NotFound);
        }
        self.get_key(org, id)
    }

    /// Revokes a key (kept for the audit trail; absent from snapshots from now on).
    pub fn revoke_key(&mut self, org: &str, id: &str, now: u64) -> Result<(), StoreError> {
        self.get_key(org, id)?;
        self.db.execute(
            "UPDATE api_keys SET revoked_at = ?3 WHERE org = ?1 AND id = ?2 AND revoked_at IS NULL",
            args![org, id, to_i64(now)],
        )?;
        Ok(())
    }

    /// Whether `id` is the root key (404 if the org has no such key).
    pub fn is_root_key(&self, org: &str, id: &str) -> Result<bool, StoreError> {
        self.db
            .query_opt(
                "SELECT root FROM api_keys WHERE org = ?1 AND id = ?2",
                args![org, id],
            )?
            .ok_or(StoreError::NotFound)?
            .get(0)
    }

    /// Records a key's use.
    pub fn touch_key(&mut self, id: &str, now: u64) -> Result<(), StoreError> {
        self.db.execute(
            "UPDATE api_keys SET last_used_at = ?2 WHERE id = ?1",
            args![id, to_i64(now)],
        )?;
        Ok(())
    }
}
