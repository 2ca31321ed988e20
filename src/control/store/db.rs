//! The two engines the control plane runs on, behind one small query interface: SQLite for one
//! node, PostgreSQL for a cluster (every node reads and writes the same rows).
//!
//! Queries are written once, in the SQL both engines accept, with `?N` placeholders (rewritten to
//! `$N` for PostgreSQL), so the two backends cannot drift apart query by query. Values cross as
//! [`Value`]s: integers, text, bytes and null, which is all the schema holds.

use std::cell::RefCell;
use std::collections::HashMap;
use std::time::Duration;

use super::StoreError;

/// How long connecting to PostgreSQL may take before the store reports it unreachable.
const PG_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// How long one query may wait for the server (unacknowledged data, a statement behind a lock).
const PG_WAIT_MAX: Duration = Duration::from_secs(10);

/// Prepared statements kept per PostgreSQL connection at most (the store has fewer queries).
const PG_STATEMENTS_MAX: usize = 256;

/// A value bound to a query or read from a row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Value {
    /// SQL NULL.
    Null,
    /// An integer (booleans are 0 and 1).
    Int(i64),
    /// Text.
    Text(String),
    /// Bytes.
    Blob(Vec<u8>),
}

impl From<&str> for Value {
    fn from(v: &str) -> Value {
        Value::Text(v.to_string())
    }
}

impl From<&String> for Value {
    fn from(v: &String) -> Value {
        Value::Text(v.clone())
    }
}

impl From<String> for Value {
    fn from(v: String) -> Value {
        Value::Text(v)
    }
}

impl From<i64> for Value {
    fn from(v: i64) -> Value {
        Value::Int(v)
    }
}

impl From<bool> for Value {
    fn from(v: bool) -> Value {
        Value::Int(i64::from(v))
    }
}

impl From<Vec<u8>> for Value {
    fn from(v: Vec<u8>) -> Value {
        Value::Blob(v)
    }
}

impl<T: Into<Value>> From<Option<T>> for Value {
    fn from(v: Option<T>) -> Value {
        v.map_or(Value::Null, Into::into)
    }
}

impl From<&Option<String>> for Value {
    fn from(v: &Option<String>) -> Value {
        v.as_ref().map_or(Value::Null, |s| Value::Text(s.clone()))
    }
}

/// Binds the listed values to a query: `args![org, name, to_i64(now)]`.
macro_rules! args {
    ($($v:expr),* $(,)?) => {
        &[$($crate::control::store::db::Value::from($v)),*]
    };
}
pub(super) use args;

/// One row of a result.
#[derive(Debug)]
pub(super) struct DbRow(Vec<Value>);

/// A Rust type a column converts to.
pub(super) trait FromValue: Sized {
    /// Converts, or fails on a type the schema never stores there.
    fn from_value(v: &Value) -> Option<Self>;
}

impl FromValue for i64 {
    fn from_value(v: &Value) -> Option<i64> {
        match v {
            Value::Int(i) => Some(*i),
            _ => None,
        }
    }
}

impl FromValue for bool {
    fn from_value(v: &Value) -> Option<bool> {
        i64::from_value(v).map(|i| i != 0)
    }
}

impl FromValue for String {
    fn from_value(v: &Value) -> Option<String> {
        match v {
            Value::Text(s) => Some(s.clone()),
            // Text PostgreSQL keeps as bytes because it may hold NUL (see the schema).
            Value::Blob(b) => String::from_utf8(b.clone()).ok(),
            _ => None,
        }
    }
}

impl FromValue for Vec<u8> {
    fn from_value(v: &Value) -> Option<Vec<u8>> {
        match v {
            Value::Blob(b) => Some(b.clone()),
            _ => None,
        }
    }
}

impl<T: FromValue> FromValue for Option<T> {
    fn from_value(v: &Value) -> Option<Option<T>> {
        match v {
            Value::Null => Some(None),
            other => T::from_value(other).map(Some),
        }
    }
}

impl DbRow {
    /// Column `i` as `T`.
    pub(super) fn get<T: FromValue>(&self, i: usize) -> Result<T, StoreError> {
        self.0
            .get(i)
            .and_then(T::from_value)
            .ok_or_else(|| StoreError::Corrupt(format!("column {i} has an unexpected type")))
    }
}

/// The engine under the store.
pub(super) enum Db {
    /// One node's embedded database.
    Sqlite(rusqlite::Connection),
    /// A database every node shares. `RefCell`: the client needs `&mut` for every query, and the
    /// store is owned by one thread.
    Postgres(Box<RefCell<Pg>>),
}

impl std::fmt::Debug for Db {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Db::Sqlite(_) => f.write_str("Db::Sqlite"),
            Db::Postgres(_) => f.write_str("Db::Postgres"),
        }
    }
}

/// Where a shared store is and how to reach it.
#[derive(Clone)]
pub(super) struct PgTarget {
    pub(super) config: postgres::Config,
    /// With `sslmode=require`: TLS whose certificate chain and host name rustls always checks
    /// (what libpq calls `verify-full`).
    tls: Option<tokio_postgres_rustls::MakeRustlsConnect>,
}

impl PgTarget {
    fn connect(&self) -> Result<postgres::Client, postgres::Error> {
        match &self.tls {
            Some(tls) => self.config.connect(tls.clone()),
            None => self.config.connect(postgres::NoTls),
        }
    }

    /// Whether connections use TLS.
    pub(super) fn tls(&self) -> bool {
        self.tls.is_some()
    }
}

/// A PostgreSQL connection that reconnects when it finds itself closed.
pub(super) struct Pg {
    target: PgTarget,
    client: Option<postgres::Client>,
    statements: HashMap<String, postgres::Statement>,
}

/// Parses a `postgres://` (or `postgresql://`) URL into where and how to connect.
///
/// `sslmode=require` (or libpq's `verify-ca` / `verify-full`, which rustls always does) asks
/// for TLS, trusting the public web's roots or, with `sslrootcert=PATH`, only the certificates
/// in that PEM file. `disable`, `allow` and `prefer` mean plain text: a TLS that an attacker on
/// the path can refuse protects nothing, so the only TLS offered is one that cannot be skipped.
pub(super) fn pg_target(url: &str) -> Result<PgTarget, StoreError> {
    if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
        return Err(StoreError::Url(
            "expected postgres://user:password@host:port/database".into(),
        ));
    }
    let (base, query) = url.split_once('?').unwrap_or((url, ""));
    let mut kept = Vec::new();
    let mut tls = false;
    let mut root_cert = None;
    for pair in query.split('&').filter(|pair| !pair.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        match key {
            "sslrootcert" => {
                let path = percent_encoding::percent_decode_str(value)
                    .decode_utf8()
                    .map_err(|_| StoreError::Url("sslrootcert is not UTF-8".into()))?;
                root_cert = Some(std::path::PathBuf::from(path.as_ref()));
            }
            "sslmode" => match value {
                "disable" | "allow" | "prefer" => kept.push("sslmode=disable"),
                "require" | "verify-ca" | "verify-full" => {
                    tls = true;
                    kept.push("sslmode=require");
                }
                other => {
                    return Err(StoreError::Url(format!(
                        "sslmode {other:?} is not one of disable, require, verify-full"
                    )))
                }
            },
            _ => kept.push(pair),
        }
    }
    if root_cert.is_some() && !tls {
        return Err(StoreError::Url(
            "sslrootcert needs sslmode=require (or verify-full)".into(),
        ));
    }
    let rebuilt = if kept.is_empty() {
        base.to_string()
    } else {
        format!("{base}?{}", kept.join("&"))
    };
    let config = pg_config(&rebuilt)?;
    let tls = if tls {
        Some(tokio_postgres_rustls::MakeRustlsConnect::new(tls_config(
            root_cert.as_deref(),
        )?))
    } else {
        None
    };
    Ok(PgTarget { config, tls })
}

/// The TLS settings of a connection to a shared store: the certificates of `root_cert` (PEM)
/// as the only trusted roots, or the public web's.
fn tls_config(root_cert: Option<&std::path::Path>) -> Result<rustls::ClientConfig, StoreError> {
    let roots = match root_cert {
        Some(path) => {
            let fail = |reason: String| {
                StoreError::Url(format!("sslrootcert {}: {reason}", path.display()))
            };
            let pem = std::fs::read(path).map_err(|e| fail(e.to_string()))?;
            crate::client_tls::ca_roots(&pem).map_err(fail)?
        }
        None => crate::client_tls::public_roots(),
    };
    crate::client_tls::client_config(roots).map_err(StoreError::Url)
}

/// Parses a URL without TLS options into a client configuration.
pub(super) fn pg_config(url: &str) -> Result<postgres::Config, StoreError> {
    let mut config: postgres::Config = url
        .parse()
        .map_err(|e: postgres::Error| StoreError::Url(e.to_string()))?;
    if config.get_hosts().is_empty() {
        return Err(StoreError::Url("the URL names no host".into()));
    }
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(PG_CONNECT_TIMEOUT);
    }
    // A dead peer behind a silent network is found by keepalives and the TCP user timeout, and
    // a statement stuck behind a lock ends server-side, so the control thread is never held up
    // much longer than PG_WAIT_MAX by one query (it has no query deadline of its own).
    config.keepalives(true);
    config.keepalives_idle(Duration::from_secs(5));
    config.keepalives_interval(Duration::from_secs(2));
    config.keepalives_retries(3);
    config.tcp_user_timeout(PG_WAIT_MAX);
    if config.get_options().is_none() {
        config.options(&format!("-c statement_timeout={}", PG_WAIT_MAX.as_millis()));
    }
    config.application_name("ringmq");
    Ok(config)
}

impl Pg {
    /// A connection made on first use.
    pub(super) fn new(target: PgTarget) -> Pg {
        Pg {
            target,
            client: None,
            statements: HashMap::new(),
        }
    }

    /// Whether connections use TLS.
    pub(super) fn tls(&self) -> bool {
        self.target.tls()
    }

    fn client(&mut self) -> Result<&mut postgres::Client, StoreError> {
        if self
            .client
            .as_ref()
            .is_some_and(postgres::Client::is_closed)
        {
            self.client = None;
        }
        if self.client.is_none() {
            self.statements.clear();
            self.client = Some(self.target.connect()?);
        }
        self.client
            .as_mut()
            .ok_or_else(|| StoreError::Corrupt("no connection".into()))
    }

    fn statement(&mut self, sql: &str) -> Result<postgres::Statement, StoreError> {
        if let Some(stmt) = self.statements.get(sql) {
            return Ok(stmt.clone());
        }
        let stmt = self.client()?.prepare(&dollar_placeholders(sql))?;
        if self.statements.len() >= PG_STATEMENTS_MAX {
            self.statements.clear();
        }
        self.statements.insert(sql.to_string(), stmt.clone());
        Ok(stmt)
    }

    /// Forgets the connection after an error that may have broken it (the next use reconnects).
    fn after(&mut self, error: StoreError) -> StoreError {
        if let StoreError::Postgres(e) = &error {
            if unavailable(e) {
                self.client = None;
            }
        }
        error
    }

    /// Runs `f`, forgetting the connection when its error may have broken it.
    fn guarded<T>(
        &mut self,
        f: impl FnOnce(&mut Pg) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        f(self).map_err(|e| self.after(e))
    }

    fn query(&mut self, sql: &str, args: &[Value]) -> Result<Vec<DbRow>, StoreError> {
        self.guarded(|pg| {
            let stmt = pg.statement(sql)?;
            let rows = pg.client()?.query(&stmt, &pg_params(args))?;
            rows.iter().map(pg_row).collect()
        })
    }

    fn execute(&mut self, sql: &str, args: &[Value]) -> Result<usize, StoreError> {
        self.guarded(|pg| {
            let stmt = pg.statement(sql)?;
            let n = pg.client()?.execute(&stmt, &pg_params(args))?;
            Ok(usize::try_from(n).unwrap_or(usize::MAX))
        })
    }

    fn batch(&mut self, sql: &str) -> Result<(), StoreError> {
        self.guarded(|pg| Ok(pg.client()?.batch_execute(sql)?))
    }
}

/// The values as the client's parameter list.
fn pg_params(args: &[Value]) -> Vec<&(dyn postgres::types::ToSql + Sync)> {
    args.iter()
        .map(|v| v as &(dyn postgres::types::ToSql + Sync))
        .collect()
}

/// Whether `e` says the server could not be reached or dropped the connection (as opposed to
/// refusing a query): no server answer at all, or SQLSTATE class 08 (connection exception) or 57
/// (operator intervention: shutdown, terminated sessions).
pub(super) fn unavailable(e: &postgres::Error) -> bool {
    if e.is_closed() {
        return true;
    }
    match e.code() {
        None => e.as_db_error().is_none(),
        Some(code) => matches!(code.code().get(..2), Some("08" | "57")),
    }
}

/// `?1` → `$1`: the store's SQL uses SQLite's numbered placeholders, PostgreSQL wants dollars.
/// The store's SQL holds no `?` inside literals.
fn dollar_placeholders(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len());
    let mut chars = sql.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '?' && chars.peek().is_some_and(char::is_ascii_digit) {
            out.push('$');
        } else {
            out.push(c);
        }
    }
    out
}

fn pg_row(row: &postgres::Row) -> Result<DbRow, StoreError> {
    use postgres::types::Type;
    let mut values = Vec::with_capacity(row.len());
    for (i, column) in row.columns().iter().enumerate() {
        let ty = column.type_();
        let value = if *ty == Type::INT8 {
            row.try_get::<_, Option<i64>>(i)?.map(Value::Int)
        } else if *ty == Type::INT4 {
            row.try_get::<_, Option<i32>>(i)?
                .map(|v| Value::Int(v.into()))
        } else if *ty == Type::INT2 {
            row.try_get::<_, Option<i16>>(i)?
                .map(|v| Value::Int(v.into()))
        } else if *ty == Type::BOOL {
            row.try_get::<_, Option<bool>>(i)?
                .map(|v| Value::Int(v.into()))
        } else if *ty == Type::BYTEA {
            row.try_get::<_, Option<Vec<u8>>>(i)?.map(Value::Blob)
        } else if *ty == Type::VOID {
            // What functions called for their effect return (`pg_advisory_xact_lock`).
            None
        } else {
            row.try_get::<_, Option<String>>(i)?.map(Value::Text)
        };
        values.push(value.unwrap_or(Value::Null));
    }
    Ok(DbRow(values))
}

impl postgres::types::ToSql for Value {
    fn to_sql(
        &self,
        ty: &postgres::types::Type,
        out: &mut bytes::BytesMut,
    ) -> Result<postgres::types::IsNull, Box<dyn std::error::Error + Sync + Send>> {
        use postgres::types::{IsNull, Type};
        // Checked here rather than in `accepts`, which cannot see the value: a mismatch between
        // the schema and a query is an error, never bytes of the wrong width on the wire.
        match self {
            Value::Null => Ok(IsNull::Yes),
            Value::Int(v) if *ty == Type::INT8 => v.to_sql(ty, out),
            Value::Int(v) if *ty == Type::INT4 => i32::try_from(*v)?.to_sql(ty, out),
            Value::Int(v) if *ty == Type::INT2 => i16::try_from(*v)?.to_sql(ty, out),
            Value::Int(v) if *ty == Type::BOOL => (*v != 0).to_sql(ty, out),
            Value::Text(s) if <String as postgres::types::ToSql>::accepts(ty) => s.to_sql(ty, out),
            Value::Blob(b) if *ty == Type::BYTEA => b.to_sql(ty, out),
            Value::Text(s) if *ty == Type::BYTEA => s.as_bytes().to_sql(ty, out),
            other => Err(format!("a {other:?} cannot be bound to a {ty} parameter").into()),
        }
    }

    fn accepts(_: &postgres::types::Type) -> bool {
        true
    }

    postgres::types::to_sql_checked!();
}

impl rusqlite::ToSql for Value {
    fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
        use rusqlite::types::{ToSqlOutput, ValueRef};
        Ok(ToSqlOutput::Borrowed(match self {
            Value::Null => ValueRef::Null,
            Value::Int(v) => ValueRef::Integer(*v),
            Value::Text(s) => ValueRef::Text(s.as_bytes()),
            Value::Blob(b) => ValueRef::Blob(b),
        }))
    }
}

fn sqlite_row(row: &rusqlite::Row<'_>, columns: usize) -> rusqlite::Result<DbRow> {
    use rusqlite::types::ValueRef;
    let mut values = Vec::with_capacity(columns);
    for i in 0..columns {
        values.push(match row.get_ref(i)? {
            ValueRef::Null => Value::Null,
            ValueRef::Integer(v) => Value::Int(v),
            // The schema holds no reals; one read here is as good as corrupt.
            ValueRef::Real(_) => Value::Null,
            ValueRef::Text(t) => Value::Text(String::from_utf8_lossy(t).into_owned()),
            ValueRef::Blob(b) => Value::Blob(b.to_vec()),
        });
    }
    Ok(DbRow(values))
}

impl Db {
    /// Runs a statement; the number of rows it changed.
    pub(super) fn execute(&self, sql: &str, args: &[Value]) -> Result<usize, StoreError> {
        match self {
            Db::Sqlite(conn) => Ok(conn
                .prepare_cached(sql)?
                .execute(rusqlite::params_from_iter(args.iter()))?),
            Db::Postgres(pg) => pg.borrow_mut().execute(sql, args),
        }
    }

    /// Every row of a query.
    pub(super) fn query(&self, sql: &str, args: &[Value]) -> Result<Vec<DbRow>, StoreError> {
        match self {
            Db::Sqlite(conn) => {
                let mut stmt = conn.prepare_cached(sql)?;
                let columns = stmt.column_count();
                let rows = stmt
                    .query_map(rusqlite::params_from_iter(args.iter()), |row| {
                        sqlite_row(row, columns)
                    })?
                    .collect::<Result<Vec<_>, _>>()?;
                Ok(rows)
            }
            Db::Postgres(pg) => pg.borrow_mut().query(sql, args),
        }
    }

    /// Every row of a query, each converted by `f`.
    pub(super) fn query_map<T>(
        &self,
        sql: &str,
        args: &[Value],
        f: impl FnMut(&DbRow) -> Result<T, StoreError>,
    ) -> Result<Vec<T>, StoreError> {
        self.query(sql, args)?.iter().map(f).collect()
    }

    /// The first row of a query, if any.
    pub(super) fn query_opt(&self, sql: &str, args: &[Value]) -> Result<Option<DbRow>, StoreError> {
        Ok(self.query(sql, args)?.into_iter().next())
    }

    /// The first row of a query that always has one (`COUNT(*)`, `RETURNING`).
    pub(super) fn query_one(&self, sql: &str, args: &[Value]) -> Result<DbRow, StoreError> {
        self.query_opt(sql, args)?
            .ok_or_else(|| StoreError::Corrupt("a query returned no row".into()))
    }

    /// Runs several statements without arguments (migrations).
    pub(super) fn batch(&self, sql: &str) -> Result<(), StoreError> {
        match self {
            Db::Sqlite(conn) => Ok(conn.execute_batch(sql)?),
            Db::Postgres(pg) => pg.borrow_mut().batch(sql),
        }
    }

    /// Runs `f` in a transaction: committed when it succeeds, rolled back when it fails.
    pub(super) fn transaction<T>(
        &self,
        f: impl FnOnce() -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        self.batch("BEGIN")?;
        match f() {
            Ok(value) => {
                if let Err(e) = self.batch("COMMIT") {
                    let _ = self.batch("ROLLBACK");
                    return Err(e);
                }
                Ok(value)
            }
            Err(e) => {
                // A failed rollback leaves nothing to undo that the error does not already say:
                // SQLite rolls back on the next BEGIN's failure, PostgreSQL when the broken
                // connection is dropped.
                let _ = self.batch("ROLLBACK");
                Err(e)
            }
        }
    }

    /// Whether every node shares this database.
    pub(super) fn shared(&self) -> bool {
        matches!(self, Db::Postgres(_))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_become_dollars_and_nothing_else_changes() {
        assert_eq!(
            dollar_placeholders("SELECT a FROM t WHERE x = ?1 AND y = ?12 OR z = '?'"),
            "SELECT a FROM t WHERE x = $1 AND y = $12 OR z = '?'"
        );
    }

    #[test]
    fn tls_is_asked_for_by_sslmode_and_never_optional() {
        let plain = pg_target("postgres://u@h/db").unwrap();
        assert!(!plain.tls());
        for mode in ["prefer", "allow", "disable"] {
            let t = pg_target(&format!("postgres://u@h/db?sslmode={mode}")).unwrap();
            assert!(
                !t.tls(),
                "{mode} is plain text, not a TLS an attacker may refuse"
            );
        }
        for mode in ["require", "verify-ca", "verify-full"] {
            let t = pg_target(&format!(
                "postgres://u@h/db?application_name=x&sslmode={mode}"
            ));
            assert!(t.unwrap().tls(), "{mode}");
        }
        let bad = |url: &str| match pg_target(url) {
            Err(StoreError::Url(reason)) => reason,
            Err(other) => panic!("{url}: {other}"),
            Ok(_) => panic!("{url} accepted"),
        };
        assert!(bad("postgres://u@h/db?sslmode=sometimes").contains("sslmode"));
        assert!(bad("postgres://u@h/db?sslrootcert=/x.pem").contains("sslmode=require"));
        assert!(
            bad("postgres://u@h/db?sslmode=require&sslrootcert=/nonexistent.pem")
                .contains("/nonexistent.pem")
        );
        let dir = std::env::temp_dir().join(format!("ringmq-pgtls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let empty = dir.join("empty.pem");
        std::fs::write(&empty, "no certificate here\n").unwrap();
        let url = format!(
            "postgres://u@h/db?sslmode=require&sslrootcert={}",
            empty.display()
        );
        assert!(bad(&url).contains("no PEM certificate"));
        let ca = rcgen::generate_simple_self_signed(vec!["h".into()]).unwrap();
        let good = dir.join("ca.pem");
        std::fs::write(&good, ca.cert.pem()).unwrap();
        let url = format!(
            "postgres://u@h/db?sslmode=verify-full&sslrootcert={}",
            good.display()
        );
        assert!(pg_target(&url).unwrap().tls());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn values_convert_both_ways() {
        let row = DbRow(vec![
            Value::Int(7),
            Value::Null,
            Value::Text("x".into()),
            Value::Blob(vec![1]),
        ]);
        assert_eq!(row.get::<i64>(0).unwrap(), 7);
        assert!(row.get::<bool>(0).unwrap());
        assert_eq!(row.get::<Option<i64>>(1).unwrap(), None);
        assert_eq!(row.get::<String>(2).unwrap(), "x");
        assert_eq!(row.get::<Vec<u8>>(3).unwrap(), vec![1]);
        assert!(row.get::<String>(0).is_err(), "a wrong type is an error");
        assert!(row.get::<i64>(9).is_err(), "a missing column is an error");
        assert_eq!(Value::from(Some("a")), Value::Text("a".into()));
        assert_eq!(Value::from(None::<i64>), Value::Null);
        assert_eq!(Value::from(true), Value::Int(1));
    }
}
