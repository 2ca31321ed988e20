//! The schema as an ordered list of migrations, one list per engine.

// Applied in order; `PRAGMA user_version` is the number applied so far. Never edit an entry.
pub(super) const MIGRATIONS: &[&str] = &[
    r#"
CREATE TABLE counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
INSERT INTO counters (name, value) VALUES ('org_num', 0);
CREATE TABLE orgs (
    id TEXT PRIMARY KEY,
    num INTEGER NOT NULL UNIQUE,
    name TEXT NOT NULL,
    rate_limit_per_sec INTEGER NOT NULL DEFAULT 100,
    rate_burst INTEGER NOT NULL DEFAULT 200,
    monthly_quota INTEGER NOT NULL DEFAULT 1000000,
    connections_max INTEGER NOT NULL DEFAULT 100000,
    created_at INTEGER NOT NULL
);
CREATE TABLE acl_sets (
    org TEXT NOT NULL REFERENCES orgs(id) ON DELETE CASCADE,
    name TEXT NOT NULL,
    description TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    PRIMARY KEY (org, name)
);
CREATE TABLE users (
    org TEXT NOT NULL REFERENCES orgs(id) ON DELETE CASCADE,
    username TEXT NOT NULL,
    password_hash TEXT NOT NULL,
    namespace TEXT,
    enabled INTEGER NOT NULL,
    expires_at INTEGER,
    allowed_publish TEXT,
    allowed_subscribe TEXT,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    PRIMARY KEY (org, username)
);
CREATE TABLE user_sets (
    org TEXT NOT NULL,
    username TEXT NOT NULL,
    set_name TEXT NOT NULL,
    PRIMARY KEY (org, username, set_name),
    FOREIGN KEY (org, username) REFERENCES users(org, username) ON DELETE CASCADE,
    FOREIGN KEY (org, set_name) REFERENCES acl_sets(org, name) ON DELETE CASCADE
);
CREATE TABLE acl_rules (
    id TEXT PRIMARY KEY,
    org TEXT NOT NULL,
    set_name TEXT NOT NULL,
    permission TEXT NOT NULL,
    action TEXT NOT NULL,
    topic TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    FOREIGN KEY (org, set_name) REFERENCES acl_sets(org, name) ON DELETE CASCADE
);
CREATE INDEX acl_rules_set ON acl_rules (org, set_name);
CREATE TABLE api_keys (
    id TEXT PRIMARY KEY,
    org TEXT NOT NULL REFERENCES orgs(id) ON DELETE CASCADE,
    name TEXT NOT NULL,
    kind TEXT NOT NULL,
    key_hash BLOB NOT NULL UNIQUE,
    prefix TEXT NOT NULL,
    permissions TEXT NOT NULL,
    root INTEGER NOT NULL DEFAULT 0,
    created_at INTEGER NOT NULL,
    last_used_at INTEGER,
    revoked_at INTEGER
);
CREATE INDEX api_keys_org ON api_keys (org, id);
CREATE TABLE key_sets (
    org TEXT NOT NULL,
    key_id TEXT NOT NULL REFERENCES api_keys(id) ON DELETE CASCADE,
    set_name TEXT NOT NULL,
    PRIMARY KEY (key_id, set_name),
    FOREIGN KEY (org, set_name) REFERENCES acl_sets(org, name) ON DELETE CASCADE
);
CREATE TABLE usage (
    org TEXT NOT NULL REFERENCES orgs(id) ON DELETE CASCADE,
    month TEXT NOT NULL,
    messages_in INTEGER NOT NULL DEFAULT 0,
    messages_out INTEGER NOT NULL DEFAULT 0,
    rest_publishes INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (org, month)
);
"#,
    // Token ids already exchanged, kept until the token expires (each is exchanged once).
    r#"
CREATE TABLE exchanged_tokens (
    provider TEXT NOT NULL,
    token_id TEXT NOT NULL,
    expires_at INTEGER NOT NULL,
    PRIMARY KEY (provider, token_id)
);
CREATE INDEX exchanged_tokens_expiry ON exchanged_tokens (expires_at);
"#,
    // Whose sessions a user's logins own when it is not the user itself: token-exchange users
    // are one per exchange, and every exchange of one provider's subject owns the same sessions.
    r#"
ALTER TABLE users ADD COLUMN owner TEXT;
"#,
];

/// Key of the advisory lock nodes sharing a PostgreSQL store take to migrate and bootstrap one
/// after another ("rmqc" in ASCII).
pub(super) const PG_LOCK: i64 = 0x726d_7163;

/// Where a PostgreSQL store records how many of [`PG_MIGRATIONS`] it has applied (SQLite keeps
/// that number in `PRAGMA user_version`).
pub(super) const PG_VERSION_TABLE: &str = r#"
CREATE TABLE IF NOT EXISTS ringmq_schema (version BIGINT NOT NULL);
INSERT INTO ringmq_schema (version) SELECT 0 WHERE NOT EXISTS (SELECT 1 FROM ringmq_schema);
"#;

// The same tables for PostgreSQL, which every node of a cluster shares: BIGINT where SQLite has
// INTEGER (the store binds 64-bit integers), BOOLEAN for flags, BYTEA for bytes, and the "C"
// collation so names sort (and page) byte by byte as on SQLite. Text that may hold a NUL byte, which
// PostgreSQL's text cannot (a token-exchange user's owner, a token's id), is BYTEA. Never edit an
// entry.
pub(super) const PG_MIGRATIONS: &[&str] = &[r#"
CREATE TABLE counters (name TEXT COLLATE "C" PRIMARY KEY, value BIGINT NOT NULL);
INSERT INTO counters (name, value) VALUES ('org_num', 0), ('changes', 0);
CREATE TABLE orgs (
    id TEXT COLLATE "C" PRIMARY KEY,
    num BIGINT NOT NULL UNIQUE,
    name TEXT NOT NULL,
    rate_limit_per_sec BIGINT NOT NULL DEFAULT 100,
    rate_burst BIGINT NOT NULL DEFAULT 200,
    monthly_quota BIGINT NOT NULL DEFAULT 1000000,
    connections_max BIGINT NOT NULL DEFAULT 100000,
    created_at BIGINT NOT NULL
);
CREATE TABLE acl_sets (
    org TEXT COLLATE "C" NOT NULL REFERENCES orgs(id) ON DELETE CASCADE,
    name TEXT COLLATE "C" NOT NULL,
    description TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (org, name)
);
CREATE TABLE users (
    org TEXT COLLATE "C" NOT NULL REFERENCES orgs(id) ON DELETE CASCADE,
    username TEXT COLLATE "C" NOT NULL,
    password_hash TEXT NOT NULL,
    namespace TEXT,
    enabled BOOLEAN NOT NULL,
    expires_at BIGINT,
    allowed_publish TEXT,
    allowed_subscribe TEXT,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    owner BYTEA,
    PRIMARY KEY (org, username)
);
CREATE TABLE user_sets (
    org TEXT COLLATE "C" NOT NULL,
    username TEXT COLLATE "C" NOT NULL,
    set_name TEXT COLLATE "C" NOT NULL,
    PRIMARY KEY (org, username, set_name),
    FOREIGN KEY (org, username) REFERENCES users(org, username) ON DELETE CASCADE,
    FOREIGN KEY (org, set_name) REFERENCES acl_sets(org, name) ON DELETE CASCADE
);
CREATE TABLE acl_rules (
    id TEXT COLLATE "C" PRIMARY KEY,
    org TEXT COLLATE "C" NOT NULL,
    set_name TEXT COLLATE "C" NOT NULL,
    permission TEXT NOT NULL,
    action TEXT NOT NULL,
    topic TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    FOREIGN KEY (org, set_name) REFERENCES acl_sets(org, name) ON DELETE CASCADE
);
CREATE INDEX acl_rules_set ON acl_rules (org, set_name);
CREATE TABLE api_keys (
    id TEXT COLLATE "C" PRIMARY KEY,
    org TEXT COLLATE "C" NOT NULL REFERENCES orgs(id) ON DELETE CASCADE,
    name TEXT NOT NULL,
    kind TEXT NOT NULL,
    key_hash BYTEA NOT NULL UNIQUE,
    prefix TEXT NOT NULL,
    permissions TEXT NOT NULL,
    root BOOLEAN NOT NULL DEFAULT FALSE,
    created_at BIGINT NOT NULL,
    last_used_at BIGINT,
    revoked_at BIGINT
);
CREATE INDEX api_keys_org ON api_keys (org, id);
CREATE TABLE key_sets (
    org TEXT COLLATE "C" NOT NULL,
    key_id TEXT COLLATE "C" NOT NULL REFERENCES api_keys(id) ON DELETE CASCADE,
    set_name TEXT COLLATE "C" NOT NULL,
    PRIMARY KEY (key_id, set_name),
    FOREIGN KEY (org, set_name) REFERENCES acl_sets(org, name) ON DELETE CASCADE
);
CREATE TABLE usage (
    org TEXT COLLATE "C" NOT NULL REFERENCES orgs(id) ON DELETE CASCADE,
    month TEXT COLLATE "C" NOT NULL,
    messages_in BIGINT NOT NULL DEFAULT 0,
    messages_out BIGINT NOT NULL DEFAULT 0,
    rest_publishes BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (org, month)
);
CREATE TABLE exchanged_tokens (
    provider TEXT COLLATE "C" NOT NULL,
    token_id BYTEA NOT NULL,
    expires_at BIGINT NOT NULL,
    PRIMARY KEY (provider, token_id)
);
CREATE INDEX exchanged_tokens_expiry ON exchanged_tokens (expires_at);
-- Every change a snapshot shows moves the 'changes' counter in the same transaction, whichever
-- node (or operator) made it: nodes poll it and reload when it moved, so no change can be missed
-- or seen before its rows. Rows, not statements, so a sweep that deletes nothing moves nothing.
CREATE FUNCTION ringmq_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE counters SET value = value + 1 WHERE name = 'changes';
    RETURN NULL;
END
$$;
CREATE TRIGGER orgs_changed AFTER INSERT OR UPDATE OR DELETE ON orgs
    FOR EACH ROW EXECUTE FUNCTION ringmq_changed();
CREATE TRIGGER acl_sets_changed AFTER INSERT OR UPDATE OR DELETE ON acl_sets
    FOR EACH ROW EXECUTE FUNCTION ringmq_changed();
CREATE TRIGGER users_changed AFTER INSERT OR UPDATE OR DELETE ON users
    FOR EACH ROW EXECUTE FUNCTION ringmq_changed();
CREATE TRIGGER user_sets_changed AFTER INSERT OR UPDATE OR DELETE ON user_sets
    FOR EACH ROW EXECUTE FUNCTION ringmq_changed();
CREATE TRIGGER acl_rules_changed AFTER INSERT OR UPDATE OR DELETE ON acl_rules
    FOR EACH ROW EXECUTE FUNCTION ringmq_changed();
CREATE TRIGGER key_sets_changed AFTER INSERT OR UPDATE OR DELETE ON key_sets
    FOR EACH ROW EXECUTE FUNCTION ringmq_changed();
-- A key's use (last_used_at) and its name change nothing a node authenticates with.
CREATE TRIGGER api_keys_changed
    AFTER INSERT OR DELETE OR UPDATE OF org, kind, key_hash, permissions, root, revoked_at
    ON api_keys FOR EACH ROW EXECUTE FUNCTION ringmq_changed();
"#];
