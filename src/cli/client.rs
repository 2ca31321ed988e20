//! Client subcommands: noun-verb commands that drive a server's management REST API
//! (`docs/api.md`) over HTTP. `crate::client` runs them.

use std::str::FromStr;

use clap::{Args, Subcommand, ValueEnum};

use crate::client::Secret;

/// Where and how to reach the server; accepted by every client command.
///
/// The values are plain `Option`s rather than clap `env` arguments so that the precedence
/// (flag > env > stored login) lives in one tested function, `client::credentials::resolve`,
/// and so clap never echoes an env key value in `--help`.
#[derive(Args, Debug, Clone, Default, PartialEq, Eq)]
pub struct ConnArgs {
    /// Server base URL, e.g. http://127.0.0.1:8080 or https://broker:8443 [env: RINGMQ_URL;
    /// default: the stored login].
    #[arg(long, global = true, value_name = "URL")]
    pub url: Option<String>,

    /// PEM file of the CA that signed an https server's certificate (a private CA), trusted
    /// instead of the public roots [env: RINGMQ_CA; default: the stored login's, for its URL].
    #[arg(long, global = true, value_name = "FILE")]
    pub ca: Option<std::path::PathBuf>,

    /// API key, sk_… for management [env: RINGMQ_KEY; default: the stored login]. Prefer the
    /// env variable or `ringmq auth login`: command-line flags are visible to other local users.
    #[arg(long, global = true, value_name = "KEY")]
    pub key: Option<Secret>,

    /// Print the server's JSON response (pretty-printed) instead of tables.
    #[arg(long, global = true)]
    pub json: bool,
}

/// One page of a list instead of following `next_cursor` to the end.
#[derive(Args, Debug, Clone, Default, PartialEq, Eq)]
pub struct PageArgs {
    /// Fetch a single page of at most N items (1..=1000).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub limit: Option<u32>,

    /// Fetch the single page that starts at this cursor (the `next_cursor` of a previous page).
    #[arg(long, value_name = "CURSOR")]
    pub cursor: Option<String>,
}

/// The client subcommands, flattened into the top-level command list.
#[derive(Subcommand, Debug, Clone, PartialEq, Eq)]
pub enum ClientCommand {
    /// Log in to a server, log out, or show the current login.
    #[command(
        long_about = "Store, remove or show the server URL and API key that the other client \
commands use.\n\nThe login is kept in $RINGMQ_CONFIG_DIR/credentials.toml, else \
$XDG_CONFIG_HOME/ringmq/credentials.toml, else ~/.config/ringmq/credentials.toml (file mode 0600, \
directory 0700). --url/--key flags and the RINGMQ_URL/RINGMQ_KEY variables override it per command.",
        after_help = "Examples:\n  ringmq auth login --url http://127.0.0.1:8080 --key sk_...\n  \
RINGMQ_KEY=sk_... ringmq auth login --url http://broker:8080\n  ringmq auth status\n  \
ringmq auth logout"
    )]
    Auth(AuthCmd),

    /// Manage MQTT users (username/password logins).
    #[command(
        long_about = "Manage the MQTT users of the key's org. An MQTT client connects with \
username `NAME@ORG_ID` (a bare NAME is in the `default` org) and the user's password. A user gets \
the rules of the org's `default` ACL set plus those of its own --acl-set sets.",
        after_help = "Examples:\n  ringmq users list\n  \
ringmq users create --username sensor-1 --password-stdin --acl-set sensors < pw.txt\n  \
ringmq users get sensor-1\n  ringmq users update sensor-1 --disable\n  \
ringmq users delete sensor-1"
    )]
    Users(UsersCmd),

    /// Manage ACL rules (allow/deny publish or subscribe on topic patterns).
    #[command(
        long_about = "Manage the ACL rules of the key's org. A rule belongs to a set (default: \
`default`, which applies to every MQTT user of the org), allows or denies publish, subscribe or \
both on an MQTT topic pattern (+ and # wildcards; {username} and {clientid} are replaced by the \
connecting client's). Evaluation denies by default and a matching deny rule wins.",
        after_help = "Examples:\n  ringmq acl list --set sensors\n  \
ringmq acl create --topic 'sensors/{username}/#' --action publish --permission allow --set sensors\n  \
ringmq acl update rule_abc123 --permission deny\n  ringmq acl delete rule_abc123"
    )]
    Acl(AclCmd),

    /// Manage ACL rule sets (named groups of rules attached to users and keys).
    #[command(
        long_about = "Manage ACL rule sets. The set `default` exists in every org and applies to \
every MQTT user; other sets apply to the users and public keys they are attached to. A set \
cannot be deleted while it is attached.",
        after_help = "Examples:\n  ringmq acl-sets list\n  \
ringmq acl-sets create --name sensors --description 'field sensors'\n  \
ringmq acl-sets get sensors\n  ringmq acl-sets delete sensors"
    )]
    AclSets(AclSetsCmd),

    /// Manage API keys (secret sk_, public pk_, restricted rk_).
    #[command(
        long_about = "Manage the API keys of the key's org. Secret keys (sk_) may do everything \
in the org; restricted keys (rk_) only the publish/subscribe permissions given at creation; \
public keys (pk_) may read streams (limited to their --acl-set sets) and exchange tokens. The \
secret is printed once, by `create`.",
        after_help = "Examples:\n  ringmq keys list\n  \
ringmq keys create --name ci --kind secret\n  \
ringmq keys create --name alerts-writer --kind restricted --permission publish:alerts/#\n  \
ringmq keys create --name web --kind public --acl-set dashboards\n  \
ringmq keys revoke key_abc123"
    )]
    Keys(KeysCmd),

    /// Inspect MQTT sessions, disconnect clients, discard persistent sessions.
    #[command(
        long_about = "Inspect the MQTT sessions of the key's org (connected clients and stored \
persistent sessions), disconnect a client, or delete a session (disconnects it and discards its \
subscriptions and queued messages).",
        after_help = "Examples:\n  ringmq sessions list --state active\n  \
ringmq sessions get sensor-1\n  ringmq sessions disconnect sensor-1\n  \
ringmq sessions delete sensor-1"
    )]
    Sessions(SessionsCmd),

    /// Show or change the key's org (name, rate limits, quota, usage).
    #[command(after_help = "Examples:\n  ringmq org show\n  \
ringmq org update --rate-limit 1000 --rate-burst 2000\n  ringmq org update --name 'Acme IoT'")]
    Org(OrgCmd),

    /// Manage orgs (root key only).
    #[command(
        long_about = "Manage orgs. Only the root key (the sk_ key in DATA_DIR/bootstrap-key) may \
use these commands. `create` prints the new org's first secret key once.",
        after_help = "Examples:\n  ringmq orgs list\n  ringmq orgs create --name acme\n  \
ringmq orgs delete org_0123456789ab"
    )]
    Orgs(OrgsCmd),

    /// Exchange a JWT for short-lived MQTT credentials.
    #[command(
        long_about = "Exchange a JWT (checked against the server's configured auth providers) for \
an MQTT username and password that expire with the token. Needs an sk_ or pk_ key. The allowed \
topics come from the token's mqtt_publish / mqtt_subscribe claims.",
        after_help = "Examples:\n  ringmq token-exchange --token eyJhbGciOi... --provider auth0\n  \
RINGMQ_KEY=pk_... ringmq token-exchange --token \"$JWT\""
    )]
    TokenExchange(TokenExchangeArgs),

    /// Publish one message over HTTP (POST /v1/publish).
    #[command(
        long_about = "Publish one message to an MQTT topic through the server's REST publish \
endpoint (POST /v1/publish). Needs an sk_ key or an rk_ key with a publish permission for the \
topic.",
        after_help = "Examples:\n  ringmq publish --topic alerts/fire --message 'building 3'\n  \
ringmq publish --topic config/site-1 --message '{\"mode\":\"eco\"}' --qos 1 --retain"
    )]
    Publish(PublishArgs),
}

/// `ringmq auth …`.
#[derive(Args, Debug, Clone, PartialEq, Eq)]
pub struct AuthCmd {
    /// Server and output flags.
    #[command(flatten)]
    pub conn: ConnArgs,
    /// What to do.
    #[command(subcommand)]
    pub action: AuthAction,
}

/// The `auth` verbs.
#[derive(Subcommand, Debug, Clone, PartialEq, Eq)]
pub enum AuthAction {
    /// Check a URL and key with GET /v1/org, then store them.
    #[command(
        long_about = "Check a server URL and API key with GET /v1/org, then store both in the \
credentials file (mode 0600) for the other client commands. Takes --url and --key, or \
RINGMQ_URL and RINGMQ_KEY.",
        after_help = "Example:\n  ringmq auth login --url http://127.0.0.1:8080 --key \"$(cat ringmq-data/bootstrap-key)\""
    )]
    Login,
    /// Remove the stored login.
    Logout,
    /// Show which URL and key (prefix only) the client commands would use, and check them.
    #[command(
        long_about = "Show the URL and the key prefix (never the whole key) that the client \
commands would use, where each comes from (flag, env or stored login), and check them with \
GET /v1/org."
    )]
    Status,
}

/// `ringmq users …`.
#[derive(Args, Debug, Clone, PartialEq, Eq)]
pub struct UsersCmd {
    /// Server and output flags.
    #[command(flatten)]
    pub conn: ConnArgs,
    /// What to do.
    #[command(subcommand)]
    pub action: UsersAction,
}

/// The `users` verbs.
#[derive(Subcommand, Debug, Clone, PartialEq, Eq)]
pub enum UsersAction {
    /// List users (all pages unless --limit or --cursor).
    List(PageArgs),
    /// Create a user.
    #[command(
        after_help = "Examples:\n  ringmq users create --username sensor-1 --password 's3cret-pw'\n  \
printf '%s' \"$PW\" | ringmq users create --username sensor-1 --password-stdin --acl-set sensors"
    )]
    Create(UserCreateArgs),
    /// Show one user.
    Get {
        /// The username (without @org).
        username: String,
    },
    /// Change a user's password, namespace, enabled flag or ACL sets.
    #[command(
        long_about = "Change a user. Only the given fields change; --acl-set replaces the whole \
list. A password change or --disable closes the user's live connections.",
        after_help = "Examples:\n  ringmq users update sensor-1 --disable\n  \
ringmq users update sensor-1 --acl-set sensors --acl-set alerts\n  \
ringmq users update sensor-1 --password-stdin < new-pw.txt"
    )]
    Update(UserUpdateArgs),
    /// Delete a user (closes its live connections).
    Delete {
        /// The username (without @org).
        username: String,
    },
}

/// `ringmq users create`.
#[derive(Args, Debug, Clone, PartialEq, Eq)]
pub struct UserCreateArgs {
    /// Username: 1 to 64 of A-Z a-z 0-9 . _ -
    #[arg(long, value_name = "NAME")]
    pub username: String,
    /// Password, 8 to 256 bytes. Visible to other local users in `ps`: prefer --password-stdin.
    #[arg(
        long,
        value_name = "PASSWORD",
        required_unless_present = "password_stdin",
        conflicts_with = "password_stdin"
    )]
    pub password: Option<Secret>,
    /// Read the password from the first line of standard input.
    #[arg(long)]
    pub password_stdin: bool,
    /// Namespace to record for the user.
    #[arg(long, value_name = "NS")]
    pub namespace: Option<String>,
    /// ACL set to attach (repeat for several).
    #[arg(long = "acl-set", value_name = "SET")]
    pub acl_sets: Vec<String>,
    /// Create the user disabled (it cannot connect until enabled).
    #[arg(long)]
    pub disabled: bool,
}

/// `ringmq users update`.
#[derive(Args, Debug, Clone, PartialEq, Eq)]
pub struct UserUpdateArgs {
    /// The username (without @org).
    pub username: String,
    /// New password. Visible in `ps`: prefer --password-stdin.
    #[arg(long, value_name = "PASSWORD", conflicts_with = "password_stdin")]
    pub password: Option<Secret>,
    /// Read the new password from the first line of standard input.
    #[arg(long)]
    pub password_stdin: bool,
    /// New namespace.
    #[arg(long, value_name = "NS", conflicts_with = "no_namespace")]
    pub namespace: Option<String>,
    /// Clear the namespace.
    #[arg(long)]
    pub no_namespace: bool,
    /// ACL set to attach; replaces the whole list (repeat for several).
    #[arg(long = "acl-set", value_name = "SET", conflicts_with = "no_acl_sets")]
    pub acl_sets: Vec<String>,
    /// Detach every ACL set.
    #[arg(long)]
    pub no_acl_sets: bool,
    /// Enable the user.
    #[arg(long, conflicts_with = "disable")]
    pub enable: bool,
    /// Disable the user (closes its live connections).
    #[arg(long)]
    pub disable: bool,
}

/// An ACL rule's or key permission's operation.
#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum AclAction {
    /// PUBLISH.
    Publish,
    /// SUBSCRIBE.
    Subscribe,
    /// Both.
    All,
}

impl AclAction {
    /// The API's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            AclAction::Publish => "publish",
            AclAction::Subscribe => "subscribe",
            AclAction::All => "all",
        }
    }
}

/// Whether an ACL rule allows or denies.
#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum AclPermission {
    /// Allow (when no deny rule matches).
    Allow,
    /// Deny (wins over allow).
    Deny,
}

impl AclPermission {
    /// The API's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            AclPermission::Allow => "allow",
            AclPermission::Deny => "deny",
        }
    }
}

/// `ringmq acl …`.
#[derive(Args, Debug, Clone, PartialEq, Eq)]
pub struct AclCmd {
    /// Server and output flags.
    #[command(flatten)]
    pub conn: ConnArgs,
    /// What to do.
    #[command(subcommand)]
    pub action: AclVerb,
}

/// The `acl` verbs.
#[derive(Subcommand, Debug, Clone, PartialEq, Eq)]
pub enum AclVerb {
    /// List rules, optionally of one set (all pages unless --limit or --cursor).
    List {
        /// Only the rules of this set.
        #[arg(long, value_name = "SET")]
        set: Option<String>,
        /// Paging.
        #[command(flatten)]
        page: PageArgs,
    },
    /// Create a rule.
    #[command(
        after_help = "Examples:\n  ringmq acl create --topic 'devices/{clientid}/#' --action all --permission allow\n  \
ringmq acl create --topic 'admin/#' --action subscribe --permission deny --set guests"
    )]
    Create {
        /// MQTT topic pattern (+ and #; {username} and {clientid} are substituted).
        #[arg(long, value_name = "PATTERN")]
        topic: String,
        /// Operation the rule covers.
        #[arg(long, value_enum)]
        action: AclAction,
        /// Allow or deny.
        #[arg(long, value_enum)]
        permission: AclPermission,
        /// Set to add the rule to [server default: default].
        #[arg(long, value_name = "SET")]
        set: Option<String>,
    },
    /// Show one rule.
    Get {
        /// Rule id (rule_…).
        id: String,
    },
    /// Change a rule's topic, action or permission.
    Update {
        /// Rule id (rule_…).
        id: String,
        /// New topic pattern.
        #[arg(long, value_name = "PATTERN")]
        topic: Option<String>,
        /// New operation.
        #[arg(long, value_enum)]
        action: Option<AclAction>,
        /// New permission.
        #[arg(long, value_enum)]
        permission: Option<AclPermission>,
    },
    /// Delete a rule.
    Delete {
        /// Rule id (rule_…).
        id: String,
    },
}

/// `ringmq acl-sets …`.
#[derive(Args, Debug, Clone, PartialEq, Eq)]
pub struct AclSetsCmd {
    /// Server and output flags.
    #[command(flatten)]
    pub conn: ConnArgs,
    /// What to do.
    #[command(subcommand)]
    pub action: AclSetsAction,
}

/// The `acl-sets` verbs.
#[derive(Subcommand, Debug, Clone, PartialEq, Eq)]
pub enum AclSetsAction {
    /// List sets (all pages unless --limit or --cursor).
    List(PageArgs),
    /// Create a set.
    Create {
        /// Set name: 1 to 64 of A-Z a-z 0-9 . _ -
        #[arg(long, value_name = "NAME")]
        name: String,
        /// What the set is for.
        #[arg(long, value_name = "TEXT")]
        description: Option<String>,
    },
    /// Show one set with its rules.
    Get {
        /// Set name.
        name: String,
    },
    /// Change a set's description.
    Update {
        /// Set name.
        name: String,
        /// New description.
        #[arg(long, value_name = "TEXT")]
        description: String,
    },
    /// Delete a set (refused while attached to a user or key, and for `default`).
    Delete {
        /// Set name.
        name: String,
    },
}

/// An API key's kind.
#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyKind {
    /// sk_: everything in the org.
    Secret,
    /// pk_: stream read and token exchange.
    Public,
    /// rk_: only the given --permission entries.
    Restricted,
}

impl KeyKind {
    /// The API's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            KeyKind::Secret => "secret",
            KeyKind::Public => "public",
            KeyKind::Restricted => "restricted",
        }
    }
}

/// A restricted key's permission, written `ACTION:PATTERN` on the command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyPermission {
    /// Operation.
    pub action: AclAction,
    /// Topic pattern.
    pub topic: String,
}

impl FromStr for KeyPermission {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (action, topic) = s
            .split_once(':')
            .ok_or_else(|| format!("expected ACTION:PATTERN, e.g. publish:alerts/#, got `{s}`"))?;
        let action = AclAction::from_str(action, true).map_err(|_| {
            format!("unknown action `{action}`: expected publish, subscribe or all")
        })?;
        if topic.is_empty() {
            return Err("the topic pattern after `:` is empty".to_string());
        }
        Ok(KeyPermission {
            action,
            topic: topic.to_string(),
        })
    }
}

/// `ringmq keys …`.
#[derive(Args, Debug, Clone, PartialEq, Eq)]
pub struct KeysCmd {
    /// Server and output flags.
    #[command(flatten)]
    pub conn: ConnArgs,
    /// What to do.
    #[command(subcommand)]
    pub action: KeysAction,
}

/// The `keys` verbs.
#[derive(Subcommand, Debug, Clone, PartialEq, Eq)]
pub enum KeysAction {
    /// List keys (all pages unless --limit or --cursor).
    List(PageArgs),
    /// Create a key and print its secret (shown only this once).
    #[command(
        after_help = "Examples:\n  ringmq keys create --name ci --kind secret\n  \
ringmq keys create --name writer --kind restricted --permission publish:alerts/# --permission subscribe:acks/#\n  \
ringmq keys create --name web --kind public --acl-set dashboards"
    )]
    Create {
        /// A name for the key.
        #[arg(long, value_name = "NAME")]
        name: String,
        /// Key kind.
        #[arg(long, value_enum)]
        kind: KeyKind,
        /// ACTION:PATTERN a restricted key may do, e.g. publish:alerts/# (repeat for several;
        /// restricted keys need at least one).
        #[arg(long = "permission", value_name = "ACTION:PATTERN")]
        permissions: Vec<KeyPermission>,
        /// ACL set limiting what a public key may read (repeat for several; none = every topic).
        #[arg(long = "acl-set", value_name = "SET")]
        acl_sets: Vec<String>,
    },
    /// Show one key (never its secret).
    Get {
        /// Key id (key_…).
        id: String,
    },
    /// Rename a key.
    Update {
        /// Key id (key_…).
        id: String,
        /// New name.
        #[arg(long, value_name = "NAME")]
        name: String,
    },
    /// Revoke a key at once (its streams are closed).
    Revoke {
        /// Key id (key_…).
        id: String,
    },
}

/// Which sessions `sessions list` shows.
#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionState {
    /// Connected clients.
    Active,
    /// Stored persistent sessions without a connection.
    Disconnected,
    /// Both.
    All,
}

impl SessionState {
    /// The API's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            SessionState::Active => "active",
            SessionState::Disconnected => "disconnected",
            SessionState::All => "all",
        }
    }
}

/// `ringmq sessions …`.
#[derive(Args, Debug, Clone, PartialEq, Eq)]
pub struct SessionsCmd {
    /// Server and output flags.
    #[command(flatten)]
    pub conn: ConnArgs,
    /// What to do.
    #[command(subcommand)]
    pub action: SessionsAction,
}

/// The `sessions` verbs.
#[derive(Subcommand, Debug, Clone, PartialEq, Eq)]
pub enum SessionsAction {
    /// List sessions (all pages unless --limit or --cursor).
    List {
        /// Which sessions [server default: active].
        #[arg(long, value_enum)]
        state: Option<SessionState>,
        /// Paging.
        #[command(flatten)]
        page: PageArgs,
    },
    /// Show one session with its subscriptions.
    Get {
        /// MQTT client id.
        client_id: String,
    },
    /// Disconnect a client (MQTT 5 clients get DISCONNECT 0x98); its session stays.
    Disconnect {
        /// MQTT client id.
        client_id: String,
    },
    /// Disconnect a client if connected and discard its persistent session.
    Delete {
        /// MQTT client id.
        client_id: String,
    },
}

/// `ringmq org …`.
#[derive(Args, Debug, Clone, PartialEq, Eq)]
pub struct OrgCmd {
    /// Server and output flags.
    #[command(flatten)]
    pub conn: ConnArgs,
    /// What to do.
    #[command(subcommand)]
    pub action: OrgAction,
}

/// The `org` verbs.
#[derive(Subcommand, Debug, Clone, PartialEq, Eq)]
pub enum OrgAction {
    /// Show the org, its settings and this month's usage.
    Show,
    /// Change the org's name, or (root key only) its settings; only the given ones change.
    Update(OrgChanges),
}

/// What `org update` and `orgs update` may change; only the given ones change.
#[derive(Args, Debug, Clone, PartialEq, Eq)]
pub struct OrgChanges {
    /// New display name.
    #[arg(long, value_name = "NAME")]
    pub name: Option<String>,
    /// Messages per second the org may publish (root key only).
    #[arg(long, value_name = "N")]
    pub rate_limit: Option<u64>,
    /// Burst above the rate limit (root key only).
    #[arg(long, value_name = "N")]
    pub rate_burst: Option<u64>,
    /// Messages per calendar month (root key only).
    #[arg(long, value_name = "N")]
    pub monthly_quota: Option<u64>,
    /// Concurrent MQTT connections (root key only).
    #[arg(long, value_name = "N")]
    pub connections_max: Option<u64>,
}

/// `ringmq orgs …`.
#[derive(Args, Debug, Clone, PartialEq, Eq)]
pub struct OrgsCmd {
    /// Server and output flags.
    #[command(flatten)]
    pub conn: ConnArgs,
    /// What to do.
    #[command(subcommand)]
    pub action: OrgsAction,
}

/// The `orgs` verbs.
#[derive(Subcommand, Debug, Clone, PartialEq, Eq)]
pub enum OrgsAction {
    /// List orgs (all pages unless --limit or --cursor).
    List(PageArgs),
    /// Create an org and print its first secret key (shown only this once).
    Create {
        /// Display name.
        #[arg(long, value_name = "NAME")]
        name: String,
    },
    /// Show one org.
    Get {
        /// Org id (default or org_…).
        id: String,
    },
    /// Change an org's name or settings (root key; only the given ones change).
    Update {
        /// Org id (default or org_…).
        id: String,
        /// The changes.
        #[command(flatten)]
        changes: OrgChanges,
    },
    /// Delete an org and close its connections (not `default`).
    Delete {
        /// Org id (org_…).
        id: String,
    },
}

/// `ringmq token-exchange`.
#[derive(Args, Debug, Clone, PartialEq, Eq)]
pub struct TokenExchangeArgs {
    /// Server and output flags.
    #[command(flatten)]
    pub conn: ConnArgs,
    /// The JWT to exchange.
    #[arg(long, value_name = "JWT")]
    pub token: Secret,
    /// Auth provider name from the server config [default: the one matching the token's issuer].
    #[arg(long, value_name = "NAME")]
    pub provider: Option<String>,
}

/// `ringmq publish`.
#[derive(Args, Debug, Clone, PartialEq, Eq)]
pub struct PublishArgs {
    /// Server and output flags.
    #[command(flatten)]
    pub conn: ConnArgs,
    /// Topic name (no wildcards).
    #[arg(long, value_name = "TOPIC")]
    pub topic: String,
    /// Payload, sent as a UTF-8 string.
    #[arg(long, value_name = "TEXT")]
    pub message: String,
    /// Quality of service.
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u8).range(0..=1))]
    pub qos: u8,
    /// Keep the message as the topic's retained message.
    #[arg(long)]
    pub retain: bool,
}

impl ClientCommand {
    /// The connection and output flags of whichever command this is.
    pub fn conn(&self) -> &ConnArgs {
        match self {
            ClientCommand::Auth(c) => &c.conn,
            ClientCommand::Users(c) => &c.conn,
            ClientCommand::Acl(c) => &c.conn,
            ClientCommand::AclSets(c) => &c.conn,
            ClientCommand::Keys(c) => &c.conn,
            ClientCommand::Sessions(c) => &c.conn,
            ClientCommand::Org(c) => &c.conn,
            ClientCommand::Orgs(c) => &c.conn,
            ClientCommand::TokenExchange(c) => &c.conn,
            ClientCommand::Publish(c) => &c.conn,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::{Cli, Command};
    use clap::Parser;

    fn parse(args: &[&str]) -> ClientCommand {
        match Cli::try_parse_from(args).map(|cli| cli.command) {
            Ok(Command::Client(command)) => command,
            other => panic!("{args:?}: {other:?}"),
        }
    }

    #[test]
    fn connection_flags_go_before_or_after_the_verb() {
        for args in [
            &["ringmq", "users", "--json", "--url", "http://h:1", "list"][..],
            &["ringmq", "users", "list", "--json", "--url", "http://h:1"],
            &["ringmq", "users", "--url", "http://h:1", "list", "--json"],
        ] {
            let command = parse(args);
            assert!(command.conn().json, "{args:?}");
            assert_eq!(
                command.conn().url.as_deref(),
                Some("http://h:1"),
                "{args:?}"
            );
            assert!(matches!(
                command,
                ClientCommand::Users(UsersCmd {
                    action: UsersAction::List(_),
                    ..
                })
            ));
        }
    }

    #[test]
    fn verbs_parse_into_their_arguments() {
        let command = parse(&[
            "ringmq", "sessions", "list", "--state", "active", "--limit", "5",
        ]);
        let ClientCommand::Sessions(SessionsCmd {
            action: SessionsAction::List { state, page },
            ..
        }) = command
        else {
            panic!("expected sessions list");
        };
        assert_eq!(state, Some(SessionState::Active));
        assert_eq!(page.limit, Some(5));

        let command = parse(&["ringmq", "publish", "--topic", "t", "--message", "m"]);
        let ClientCommand::Publish(args) = command else {
            panic!("expected publish");
        };
        assert_eq!((args.qos, args.retain), (0, false));

        // Flags that only make sense together or apart are refused by clap (exit 2).
        for args in [
            &[
                "ringmq",
                "users",
                "create",
                "--username",
                "u",
                "--password",
                "p",
                "--password-stdin",
            ][..],
            &["ringmq", "users", "update", "u", "--enable", "--disable"],
            &["ringmq", "users", "list", "--limit", "0"],
            &["ringmq", "serve", "--url", "http://h:1"],
        ] {
            assert!(Cli::try_parse_from(args).is_err(), "{args:?}");
        }
    }

    #[test]
    fn debug_output_redacts_secrets() {
        let command = parse(&[
            "ringmq",
            "users",
            "create",
            "--username",
            "u",
            "--password",
            "hunter22",
            "--key",
            "sk_very_secret",
        ]);
        let debug = format!("{command:?}");
        assert!(
            !debug.contains("hunter22") && !debug.contains("sk_very_secret"),
            "{debug}"
        );
    }
}
