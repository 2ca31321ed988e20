//! Schema, migrations and org-scoped queries of the control plane, on SQLite (one node) or
//! PostgreSQL (every node of a cluster shares the rows).
//!
//! Every query that reads or writes an org's rows takes the org id and filters on it, so one
//! org can never reach another's rows.

use std::cell::RefCell;
use std::path::Path;

use super::model::{
    AclSet, Action, Allowed, Key, KeyKindName, KeyPermission, Org, OrgSettings, OrgSettingsPatch,
    Permission, Rule,
};
use super::secrets::{self, KeyPrefix, SecretError};
use super::snapshot::OrgNum;

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// SQLite failed.
    #[error("database error: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// PostgreSQL failed or could not be reached.
    #[error("postgresql: {0}")]
    Postgres(#[from] postgres::Error),
    /// The store's URL is not one we can use.
    #[error("store URL: {0}")]
    Url(String),
    /// The row does not exist in this org.
    #[error("not found")]
    NotFound,
    /// Already exists, or still in use.
    #[error("{0}")]
    Conflict(String),
    /// A referenced row (e.g. a rule set) does not exist.
    #[error("{0}")]
    Invalid(String),
    /// Random source or hashing failed.
    #[error(transparent)]
    Secret(#[from] SecretError),
    /// A stored value could not be decoded.
    #[error("corrupt stored value: {0}")]
    Corrupt(String),
    /// The database file could not be created or made private.
    #[error("database file: {0}")]
    File(#[from] std::io::Error),
}

impl StoreError {
    /// Whether the database could not be reached (as opposed to refusing or failing a query).
    pub fn is_unavailable(&self) -> bool {
        match self {
            StoreError::Postgres(e) => db::unavailable(e),
            _ => false,
        }
    }
}

/// Id of the org created on first start.
pub const DEFAULT_ORG: &str = "default";
/// Name of the rule set every org has.
pub const DEFAULT_SET: &str = "default";

mod build;
mod db;
mod keys;
mod rules;
mod schema;
#[cfg(test)]
mod tests;
mod users;

use db::{args, Db, DbRow};

/// Most rules in one set (each principal's ACL is scanned linearly).
pub const RULES_PER_SET_MAX: i64 = 1000;
/// Most rule sets in one org.
pub const SETS_PER_ORG_MAX: i64 = 1000;
/// Most API keys (including revoked ones) in one org.
pub const KEYS_PER_ORG_MAX: i64 = 1000;

/// A kind of row an org holds under a per-org cap (`[org_limits]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Counted {
    /// MQTT users, token-exchange users included.
    Users,
    /// ACL rules over all the org's sets.
    Rules,
    /// API keys not revoked.
    ActiveKeys,
}

/// A user row to insert.
#[derive(Debug, Clone)]
pub struct NewUser {
    /// Bare username.
    pub username: String,
    /// argon2id PHC string.
    pub password_hash: String,
    /// Topic namespace.
    pub namespace: Option<String>,
    /// May connect.
    pub enabled: bool,
    /// Attached rule sets.
    pub acl_sets: Vec<String>,
    /// Token-exchange users expire.
    pub expires_at: Option<u64>,
    /// Token-exchange users carry their patterns instead of sets.
    pub allowed: Option<Allowed>,
    /// Whose sessions this user's logins own, when not the user itself (token exchange: the
    /// provider and the token's subject).
    pub owner: Option<String>,
}

/// A user update; `None` leaves a field alone.
#[derive(Debug, Clone, Default)]
pub struct UserChange {
    /// New PHC string.
    pub password_hash: Option<String>,
    /// New namespace.
    pub namespace: Option<Option<String>>,
    /// Enable or disable.
    pub enabled: Option<bool>,
    /// Replace the sets.
    pub acl_sets: Option<Vec<String>>,
}

/// A stored user, for the API.
pub type UserRow = super::model::User;

/// Usage counters of one org and month.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UsageCounters {
    /// Messages received.
    pub messages_in: u64,
    /// Messages delivered.
    pub messages_out: u64,
    /// REST publishes.
    pub rest_publishes: u64,
}

/// The control-plane database.
#[derive(Debug)]
pub struct Store {
    db: Db,
}

fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn to_u64(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

fn opt_u64(v: Option<i64>) -> Option<u64> {
    v.map(to_u64)
}

fn corrupt(what: &str) -> StoreError {
    StoreError::Corrupt(what.to_string())
}

fn parse_permission(s: &str) -> Result<Permission, StoreError> {
    match s {
        "allow" => Ok(Permission::Allow),
        "deny" => Ok(Permission::Deny),
        _ => Err(corrupt("rule permission")),
    }
}

fn parse_action(s: &str) -> Result<Action, StoreError> {
    match s {
        "publish" => Ok(Action::Publish),
        "subscribe" => Ok(Action::Subscribe),
        "all" => Ok(Action::All),
        _ => Err(corrupt("rule action")),
    }
}

/// Stored name of a permission.
pub fn permission_str(p: Permission) -> &'static str {
    match p {
        Permission::Allow => "allow",
        Permission::Deny => "deny",
    }
}

/// Stored name of an action.
pub fn action_str(a: Action) -> &'static str {
    match a {
        Action::Publish => "publish",
        Action::Subscribe => "subscribe",
        Action::All => "all",
    }
}

fn rule_from_row(row: &DbRow) -> Result<Rule, StoreError> {
    Ok(Rule {
        id: row.get(0)?,
        set: row.get(1)?,
        permission: parse_permission(&row.get::<String>(2)?)?,
        action: parse_action(&row.get::<String>(3)?)?,
        topic: row.get(4)?,
        created_at: to_u64(row.get(5)?),
    })
}

/// Splits `rows` (fetched with `limit + 1`) into a page and the next cursor.
fn page<T>(
    mut rows: Vec<T>,
    limit: usize,
    cursor_of: impl Fn(&T) -> String,
) -> (Vec<T>, Option<String>) {
    if rows.len() > limit {
        rows.truncate(limit);
        let next = rows.last().map(cursor_of);
        (rows, next)
    } else {
        (rows, None)
    }
}

fn limit_sql(limit: usize) -> i64 {
    i64::try_from(limit.saturating_add(1)).unwrap_or(i64::MAX)
}

const RULE_COLS: &str = "id, set_name, permission, action, topic, created_at";
const KEY_COLS: &str =
    "id, name, kind, prefix, permissions, created_at, last_used_at, revoked_at, root";
const ORG_COLS: &str =
    "id, num, name, rate_limit_per_sec, rate_burst, monthly_quota, connections_max, created_at";

/// A key row as stored: the key (kind, permissions and sets not yet filled in), its kind and
/// permissions as stored.
type RawKey = (Key, String, String);

fn key_from_row(row: &DbRow) -> Result<RawKey, StoreError> {
    Ok((
        Key {
            id: row.get(0)?,
            name: row.get(1)?,
            kind: KeyKindName::Secret,
            prefix: row.get(3)?,
            permissions: Vec::new(),
            acl_sets: Vec::new(),
            created_at: to_u64(row.get(5)?),
            last_used_at: opt_u64(row.get(6)?),
            revoked_at: opt_u64(row.get(7)?),
            key: None,
        },
        row.get(2)?,
        row.get(4)?,
    ))
}

fn org_from_row(row: &DbRow) -> Result<(Org, OrgNum), StoreError> {
    let num: i64 = row.get(1)?;
    Ok((
        Org {
            id: row.get(0)?,
            name: row.get(2)?,
            settings: OrgSettings {
                rate_limit_per_sec: to_u64(row.get(3)?),
                rate_burst: to_u64(row.get(4)?),
                monthly_quota: to_u64(row.get(5)?),
                connections_max: to_u64(row.get(6)?),
            },
            created_at: to_u64(row.get(7)?),
            usage: None,
        },
        OrgNum::try_from(num).unwrap_or(OrgNum::MAX),
    ))
}

impl Store {
    /// Opens (creating if needed) the database at `path` and migrates it.
    pub fn open(path: impl AsRef<Path>) -> Result<Store, StoreError> {
        let path = path.as_ref();
        make_private(path)?;
        let conn = rusqlite::Connection::open(path)?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        Store::init_sqlite(conn)
    }

    /// A fresh in-memory database (tests).
    pub fn open_in_memory() -> Result<Store, StoreError> {
        Store::init_sqlite(rusqlite::Connection::open_in_memory()?)
    }

    fn init_sqlite(conn: rusqlite::Connection) -> Result<Store, StoreError> {
        conn.pragma_update(None, "foreign_keys", "ON")?;
        conn.set_prepared_statement_cache_capacity(64);
        let mut store = Store {
            db: Db::Sqlite(conn),
        };
        store.migrate()?;
        Ok(store)
    }

    /// Connects to the PostgreSQL database at `url` (`postgres://user:password@host:port/db`),
    /// which every node of a cluster shares, and migrates it.
    pub fn open_postgres(url: &str) -> Result<Store, StoreError> {
        Store::open_postgres_at(db::pg_target(url)?)
    }

    #[cfg(test)]
    fn open_postgres_with(config: postgres::Config) -> Result<Store, StoreError> {
        let mut target = db::pg_target("postgres://unused")?;
        target.config = config;
        Store::open_postgres_at(target)
    }

    fn open_postgres_at(target: db::PgTarget) -> Result<Store, StoreError> {
        let mut store = Store {
            db: Db::Postgres(Box::new(RefCell::new(db::Pg::new(target)))),
        };
        store.migrate()?;
        Ok(store)
    }

    /// A fresh, empty store for a test: in memory, or a new database on the PostgreSQL server
    /// `RINGMQ_TEST_STORE` names (`scripts/test.sh` runs the control tests both ways).
    #[cfg(test)]
    pub(crate) fn for_tests() -> Store {
        match Store::test_database() {
            Some(config) => Store::open_postgres_with(config).expect("open the test database"),
            None => Store::open_in_memory().expect("in-memory store"),
        }
    }

    /// A new, empty database on the server `RINGMQ_TEST_STORE` names, if it names one.
    #[cfg(test)]
    fn test_database() -> Option<postgres::Config> {
        let url = std::env::var("RINGMQ_TEST_STORE").ok()?;
        let mut config = db::pg_config(&url).expect("RINGMQ_TEST_STORE");
        let mut admin = config
            .connect(postgres::NoTls)
            .expect("connect to RINGMQ_TEST_STORE");
        let name = format!(
            "ringmq_test_{}",
            secrets::random_id("", 12).expect("random")
        )
        .to_ascii_lowercase();
        admin
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .expect("create a test database");
        config.dbname(&name);
        Some(config)
    }

    /// Whether connections to the store are encrypted (a shared store with `sslmode=require`).
    pub fn encrypted(&self) -> bool {
        match &self.db {
            Db::Postgres(pg) => pg.borrow().tls(),
            Db::Sqlite(_) => false,
        }
    }

    /// Whether every node of a cluster shares this store (PostgreSQL).
    pub fn shared(&self) -> bool {
        self.db.shared()
    }

    /// Number of migrations applied.
    pub fn schema_version(&self) -> Result<usize, StoreError> {
        let v: i64 = match &self.db {
            Db::Sqlite(_) => self.db.query_one("PRAGMA user_version", &[])?.get(0)?,
            Db::Postgres(_) => self
                .db
                .query_opt("SELECT version FROM ringmq_schema", &[])?
                .map(|r| r.get(0))
                .transpose()?
                .unwrap_or(0),
        };
        Ok(usize::try_from(v).unwrap_or(0))
    }

    fn migrate(&mut self) -> Result<(), StoreError> {
        let migrations = match &self.db {
            Db::Sqlite(_) => schema::MIGRATIONS,
            Db::Postgres(_) => schema::PG_MIGRATIONS,
        };
        let db = &self.db;
        db.transaction(|| {
            if db.shared() {
                // Nodes starting together migrate one after another; the lock ends with the
                // transaction.
                db.query("SELECT pg_advisory_xact_lock(?1)", args![schema::PG_LOCK])?;
                db.batch(schema::PG_VERSION_TABLE)?;
            }
            let applied = self.schema_version()?;
            if applied > migrations.len() {
                return Err(StoreError::Corrupt(format!(
                    "the database is at schema version {applied}, newer than this ringmq ({}): \
                     run the newer ringmq",
                    migrations.len()
                )));
            }
            for sql in migrations.iter().skip(applied) {
                db.batch(sql)?;
            }
            let version = i64::try_from(migrations.len()).unwrap_or(0);
            match db {
                Db::Sqlite(_) => db.batch(&format!("PRAGMA user_version = {version}"))?,
                Db::Postgres(_) => {
                    db.execute("UPDATE ringmq_schema SET version = ?1", args![version])?;
                }
            }
            Ok(())
        })
    }

    /// On first start creates org `default` and its root key, returning the key's secret once.
    /// Of nodes starting together on one shared store, exactly one creates them.
    pub fn bootstrap(&mut self) -> Result<Option<String>, StoreError> {
        let now = now_unix();
        let db = &self.db;
        db.transaction(|| {
            if db.shared() {
                db.query("SELECT pg_advisory_xact_lock(?1)", args![schema::PG_LOCK])?;
            }
            let count: i64 = db.query_one("SELECT COUNT(*) FROM orgs", &[])?.get(0)?;
            if count > 0 {
                return Ok(None);
            }
            insert_org(db, DEFAULT_ORG, 0, "default", &OrgSettings::default(), now)?;
            let key = insert_key(
                db,
                DEFAULT_ORG,
                "root",
                KeyKindName::Secret,
                &[],
                &[],
                true,
                now,
            )?;
            Ok(key.key)
        })
    }

    // ---- orgs ----

    /// Creates an org with a fresh routing number, its `default` set and a first secret key.
    pub fn create_org(
        &mut self,
        name: &str,
        settings: &OrgSettings,
        now: u64,
    ) -> Result<(Org, Key), StoreError> {
        let db = &self.db;
        let (id, key) = db.transaction(|| {
            // Numbers are never reused, so a counter survives deletions where max(num) would
            // not; on PostgreSQL the row's lock gives nodes creating orgs together distinct ones.
            let num: i64 = db
                .query_one(
                    "UPDATE counters SET value = value + 1 WHERE name = 'org_num' RETURNING value",
                    &[],
                )?
                .get(0)?;
            let id = secrets::random_id("org_", 12)?;
            insert_org(db, &id, num, name, settings, now)?;
            let key = insert_key(
                db,
                &id,
                "default",
                KeyKindName::Secret,
                &[],
                &[],
                false,
                now,
            )?;
            Ok((id, key))
        })?;
        let org = self.get_org(&id)?;
        Ok((org, key))
    }

    fn org_row(&self, id: &str) -> Result<(Org, OrgNum), StoreError> {
        self.db
            .query_opt(
                &format!("SELECT {ORG_COLS} FROM orgs WHERE id = ?1"),
                args![id],
            )?
            .map(|r| org_from_row(&r))
            .transpose()?
            .ok_or(StoreError::NotFound)
    }

    /// One org by id.
    pub fn get_org(&self, id: &str) -> Result<Org, StoreError> {
        Ok(self.org_row(id)?.0)
    }

    /// Routing number of an org.
    pub fn org_num(&self, id: &str) -> Result<OrgNum, StoreError> {
        Ok(self.org_row(id)?.1)
    }

    /// Orgs ordered by id.
    pub fn list_orgs(
        &self,
        limit: usize,
        cursor: Option<&str>,
    ) -> Result<(Vec<Org>, Option<String>), StoreError> {
        let rows = self.db.query_map(
            &format!("SELECT {ORG_COLS} FROM orgs WHERE id > ?1 ORDER BY id LIMIT ?2"),
            args![cursor.unwrap_or(""), limit_sql(limit)],
            |r| org_from_row(r).map(|(o, _)| o),
        )?;
        Ok(page(rows, limit, |o| o.id.clone()))
    }

    /// Renames an org and/or changes its settings.
    pub fn update_org(
        &mut self,
        id: &str,
        name: Option<&str>,
        settings: Option<&OrgSettingsPatch>,
    ) -> Result<Org, StoreError> {
        let mut org = self.get_org(id)?;
        if let Some(name) = name {
            org.name = name.to_string();
        }
        if let Some(patch) = settings {
            patch.apply(&mut org.settings);
        }
        let s = &org.settings;
        self.db.execute(
            "UPDATE orgs SET name = ?2, rate_limit_per_sec = ?3, rate_burst = ?4, monthly_quota = ?5,
             connections_max = ?6 WHERE id = ?1",
            args![
                id,
                &org.name,
                to_i64(s.rate_limit_per_sec),
                to_i64(s.rate_burst),
                to_i64(s.monthly_quota),
                to_i64(s.connections_max)
            ],
        )?;
        Ok(org)
    }

    /// Deletes an org and everything in it (never `default`).
    pub fn delete_org(&mut self, id: &str) -> Result<(), StoreError> {
        if id == DEFAULT_ORG {
            return Err(StoreError::Conflict(
                "the default org cannot be deleted".into(),
            ));
        }
        let db = &self.db;
        let n = db.transaction(|| {
            // Join rows first: their set foreign keys would otherwise race the cascade order.
            db.execute("DELETE FROM user_sets WHERE org = ?1", args![id])?;
            db.execute("DELETE FROM key_sets WHERE org = ?1", args![id])?;
            db.execute("DELETE FROM acl_rules WHERE org = ?1", args![id])?;
            db.execute("DELETE FROM orgs WHERE id = ?1", args![id])
        })?;
        if n == 0 {
            return Err(StoreError::NotFound);
        }
        Ok(())
    }

    fn count(&self, sql: &str, org: &str) -> Result<i64, StoreError> {
        self.db.query_one(sql, args![org])?.get(0)
    }

    fn check_count(&self, sql: &str, org: &str, max: i64, what: &str) -> Result<(), StoreError> {
        if self.count(sql, org)? >= max {
            return Err(StoreError::Conflict(format!(
                "at most {max} {what} allowed"
            )));
        }
        Ok(())
    }

    /// How many rows of a capped kind `org` holds now.
    pub fn count_in_org(&self, org: &str, what: Counted) -> Result<u64, StoreError> {
        let sql = match what {
            Counted::Users => "SELECT COUNT(*) FROM users WHERE org = ?1",
            Counted::Rules => "SELECT COUNT(*) FROM acl_rules WHERE org = ?1",
            Counted::ActiveKeys => {
                "SELECT COUNT(*) FROM api_keys WHERE org = ?1 AND revoked_at IS NULL"
            }
        };
        Ok(to_u64(self.count(sql, org)?))
    }

    // ---- usage ----

    /// Adds to an org's counters of `month` (`YYYY-MM`). On a shared store every node adds to
    /// the same row, so the month's figures are the cluster's.
    pub fn add_usage(
        &mut self,
        org: &str,
        month: &str,
        add: UsageCounters,
    ) -> Result<(), StoreError> {
        self.db.execute(
            "INSERT INTO usage (org, month, messages_in, messages_out, rest_publishes)
             VALUES (?1, ?2, ?3, ?4, ?5)
             ON CONFLICT (org, month) DO UPDATE SET messages_in = usage.messages_in + ?3,
             messages_out = usage.messages_out + ?4, rest_publishes = usage.rest_publishes + ?5",
            args![
                org,
                month,
                to_i64(add.messages_in),
                to_i64(add.messages_out),
                to_i64(add.rest_publishes)
            ],
        )?;
        Ok(())
    }

    /// Every org's counters of `month`, by org id.
    pub fn usage_of_month(&self, month: &str) -> Result<Vec<(String, UsageCounters)>, StoreError> {
        self.db.query_map(
            "SELECT org, messages_in, messages_out, rest_publishes FROM usage WHERE month = ?1",
            args![month],
            |r| Ok((r.get(0)?, usage_from_row(r, 1)?)),
        )
    }

    /// An org's counters of `month`.
    pub fn usage(&self, org: &str, month: &str) -> Result<UsageCounters, StoreError> {
        self.db
            .query_opt(
                "SELECT messages_in, messages_out, rest_publishes FROM usage WHERE org = ?1 AND month = ?2",
                args![org, month],
            )?
            .map_or(Ok(UsageCounters::default()), |r| usage_from_row(&r, 0))
    }

    // ---- changes between nodes ----

    /// How many changes a snapshot shows were ever made to a shared store (by any node: a
    /// trigger counts them in the writing transaction); `None` on SQLite, which one node owns.
    pub fn changes(&self) -> Result<Option<i64>, StoreError> {
        if !self.shared() {
            return Ok(None);
        }
        self.db
            .query_one("SELECT value FROM counters WHERE name = 'changes'", &[])?
            .get(0)
            .map(Some)
    }
}

/// The three usage counters from columns `at`, `at + 1` and `at + 2`.
fn usage_from_row(row: &DbRow, at: usize) -> Result<UsageCounters, StoreError> {
    Ok(UsageCounters {
        messages_in: to_u64(row.get(at)?),
        messages_out: to_u64(row.get(at + 1)?),
        rest_publishes: to_u64(row.get(at + 2)?),
    })
}

fn user_from_row(row: &DbRow) -> Result<UserRow, StoreError> {
    Ok(UserRow {
        username: row.get(0)?,
        namespace: row.get(1)?,
        enabled: row.get(2)?,
        acl_sets: Vec::new(),
        created_at: to_u64(row.get(3)?),
        updated_at: to_u64(row.get(4)?),
        expires_at: opt_u64(row.get(5)?),
    })
}

fn set_from_row(row: &DbRow) -> Result<AclSet, StoreError> {
    Ok(AclSet {
        name: row.get(0)?,
        description: row.get(1)?,
        created_at: to_u64(row.get(2)?),
        rule_count: to_u64(row.get(3)?),
        rules: None,
    })
}

fn insert_org(
    db: &Db,
    id: &str,
    num: i64,
    name: &str,
    s: &OrgSettings,
    now: u64,
) -> Result<(), StoreError> {
    db.execute(
        "INSERT INTO orgs (id, num, name, rate_limit_per_sec, rate_burst, monthly_quota,
         connections_max, created_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        args![
            id,
            num,
            name,
            to_i64(s.rate_limit_per_sec),
            to_i64(s.rate_burst),
            to_i64(s.monthly_quota),
            to_i64(s.connections_max),
            to_i64(now)
        ],
    )?;
    db.execute(
        "INSERT INTO acl_sets (org, name, description, created_at) VALUES (?1, ?2, '', ?3)",
        args![id, DEFAULT_SET, to_i64(now)],
    )?;
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn insert_key(
    db: &Db,
    org: &str,
    name: &str,
    kind: KeyKindName,
    permissions: &[KeyPermission],
    acl_sets: &[String],
    root: bool,
    now: u64,
) -> Result<Key, StoreError> {
    let prefix = match kind {
        KeyKindName::Secret => KeyPrefix::Secret,
        KeyKindName::Public => KeyPrefix::Public,
        KeyKindName::Restricted => KeyPrefix::Restricted,
    };
    let secret = secrets::generate_key(prefix)?;
    let id = secrets::random_id("key_", 16)?;
    let shown: String = secret.chars().take(10).collect();
    let perms =
        serde_json::to_string(permissions).map_err(|e| StoreError::Corrupt(e.to_string()))?;
    db.execute(
        "INSERT INTO api_keys (id, org, name, kind, key_hash, prefix, permissions, root, created_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
        args![
            &id,
            org,
            name,
            kind.as_str(),
            secrets::key_hash(&secret).to_vec(),
            &shown,
            perms,
            root,
            to_i64(now)
        ],
    )?;
    for set in acl_sets {
        db.execute(
            "INSERT INTO key_sets (org, key_id, set_name) VALUES (?1, ?2, ?3) ON CONFLICT DO NOTHING",
            args![org, &id, set],
        )?;
    }
    let mut sets = acl_sets.to_vec();
    sets.sort();
    sets.dedup();
    Ok(Key {
        id,
        name: name.to_string(),
        kind,
        prefix: shown,
        permissions: permissions.to_vec(),
        acl_sets: sets,
        created_at: now,
        last_used_at: None,
        revoked_at: None,
        key: Some(secret),
    })
}

/// Checks that `url` is a PostgreSQL URL the store can use, without connecting.
pub fn check_postgres_url(url: &str) -> Result<(), String> {
    db::pg_target(url).map(|_| ()).map_err(|e| match e {
        StoreError::Url(reason) => reason,
        other => other.to_string(),
    })
}

/// A store URL without its credentials (user information and any `password=` option), for
/// messages and logs.
pub fn redact_url(url: &str) -> String {
    let mut shown = crate::config::redact(url);
    if let Some(at) = shown.find("password=") {
        let end = shown[at..].find('&').map_or(shown.len(), |i| at + i);
        shown.replace_range(at..end, "password=***");
    }
    shown
}

/// Creates the database file with mode 0600 (or narrows an existing one), and its `-wal` and
/// `-shm` journals if they exist: they hold argon2 hashes and key digests. SQLite would create
/// the database 0644 (less the umask); the journals it creates later copy the database's mode.
fn make_private(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(path)?;
    let mut files = vec![path.to_path_buf()];
    for suffix in ["-wal", "-shm"] {
        let mut name = path.as_os_str().to_owned();
        name.push(suffix);
        files.push(name.into());
    }
    for file in files {
        match std::fs::metadata(&file) {
            Ok(meta) if meta.permissions().mode() & 0o077 != 0 => {
                std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600))?;
            }
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Writes the root key once to `path` with mode 0600; fails if the file exists.
pub fn write_bootstrap_key(path: &Path, secret: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(secret.as_bytes())?;
    file.write_all(b"\n")?;
    file.sync_all()
}

/// Current unix time in seconds.
pub fn now_unix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Unix seconds at which the month after the one holding `unix` begins (UTC): when an org's
/// monthly quota resets.
pub fn next_month_start(unix: u64) -> u64 {
    let (year, month) = year_month(unix);
    let (year, month) = if month == 12 {
        (year + 1, 1)
    } else {
        (year, month + 1)
    };
    // Howard Hinnant's days-from-civil algorithm (day 1 of the month).
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = if month > 2 { month - 3 } else { month + 9 };
    let doy = (153 * mp + 2) / 5;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    u64::try_from(days).unwrap_or(0) * 86_400
}

/// `YYYYMM` of `unix` seconds (UTC), as a number.
pub fn month_number(unix: u64) -> u64 {
    let (year, month) = year_month(unix);
    u64::try_from(year * 100 + month).unwrap_or(0)
}

/// `YYYY-MM` of `unix` seconds (UTC).
pub fn month_of(unix: u64) -> String {
    let (year, month) = year_month(unix);
    format!("{year:04}-{month:02}")
}

/// The year and month (1..=12) of `unix` seconds (UTC), by Howard Hinnant's days-to-civil
/// algorithm.
fn year_month(unix: u64) -> (i64, i64) {
    let z = i64::try_from(unix / 86_400).unwrap_or(0) + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(month <= 2), month)
}
