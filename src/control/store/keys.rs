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
            &[org],
            KEYS_PER_ORG_MAX,
            "keys per org",
        )?;
        let tx = self.conn.transaction()?;
        let key = insert_key(&tx, org, name, kind, permissions, acl_sets, false, now)?;
        tx.commit()?;
        Ok(key)
    }

    pub(super) fn key_row(&self, org: &str, id: &str) -> Result<Key, StoreError> {
        let raw = self
            .conn
            .query_row(
                &format!("SELECT {KEY_COLS} FROM api_keys WHERE org = ?1 AND id = ?2"),
                [org, id],
                key_from_row,
            )
            .optional()?
            .ok_or(StoreError::NotFound)?;
        self.finish_key(org, raw)
    }

    pub(super) fn finish_key(
        &self,
        org: &str,
        raw: (Key, String, String, bool),
    ) -> Result<Key, StoreError> {
        let (mut key, kind, perms, _root) = raw;
        key.kind = KeyKindName::parse(&kind).ok_or_else(|| corrupt("key kind"))?;
        key.permissions = serde_json::from_str(&perms).map_err(|_| corrupt("key permissions"))?;
        let mut stmt = self.conn.prepare_cached(
            "SELECT set_name FROM key_sets WHERE org = ?1 AND key_id = ?2 ORDER BY set_name",
        )?;
        key.acl_sets = stmt
            .query_map([org, key.id.as_str()], |r| r.get(0))?
            .collect::<Result<Vec<String>, _>>()?;
        Ok(key)
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
        let mut stmt = self.conn.prepare(&format!(
            "SELECT {KEY_COLS} FROM api_keys WHERE org = ?1 AND id > ?2 ORDER BY id LIMIT ?3"
        ))?;
        let rows = stmt
            .query_map(
                params![org, cursor.unwrap_or(""), limit_sql(limit)],
                key_from_row,
            )?
            .collect::<Result<Vec<_>, _>>()?;
        let (rows, next) = page(rows, limit, |k| k.0.id.clone());
        let keys = rows
            .into_iter()
            .map(|raw| self.finish_key(org, raw))
            .collect::<Result<Vec<_>, _>>()?;
        Ok((keys, next))
    }

    /// Renames a key.
    pub fn rename_key(&mut self, org: &str, id: &str, name: &str) -> Result<Key, StoreError> {
        let n = self.conn.execute(
            "UPDATE api_keys SET name = ?3 WHERE org = ?1 AND id = ?2",
            params![org, id, name],
        )?;
        if n == 0 {
            return Err(StoreError::NotFound);
        }
        self.get_key(org, id)
    }

    /// Revokes a key (kept for the audit trail; absent from snapshots from now on).
    pub fn revoke_key(&mut self, org: &str, id: &str, now: u64) -> Result<(), StoreError> {
        self.get_key(org, id)?;
        self.conn.execute(
            "UPDATE api_keys SET revoked_at = ?3 WHERE org = ?1 AND id = ?2 AND revoked_at IS NULL",
            params![org, id, to_i64(now)],
        )?;
        Ok(())
    }

    /// Whether `id` is the root key (404 if the org has no such key).
    pub fn is_root_key(&self, org: &str, id: &str) -> Result<bool, StoreError> {
        self.conn
            .query_row(
                "SELECT root FROM api_keys WHERE org = ?1 AND id = ?2",
                [org, id],
                |r| r.get(0),
            )
            .optional()?
            .ok_or(StoreError::NotFound)
    }

    /// Records a key's use.
    pub fn touch_key(&mut self, id: &str, now: u64) -> Result<(), StoreError> {
        self.conn.execute(
            "UPDATE api_keys SET last_used_at = ?2 WHERE id = ?1",
            params![id, to_i64(now)],
        )?;
        Ok(())
    }
}
