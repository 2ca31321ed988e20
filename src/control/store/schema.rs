//! The schema as an ordered list of migrations.

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
