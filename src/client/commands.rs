//! One handler per noun: builds the API request from the parsed arguments, sends it and prints
//! the answer (tables and `key: value` lines, or the server's JSON with `--json`).

use std::io::{BufRead, Write};

use serde_json::{json, Map, Value};

use super::credentials::{self, Env, StoredLogin};
use super::http::{ApiRequest, HttpClient, Response};
use super::output::{self, col, Column};
use super::{ClientError, Secret};
use crate::cli::client::{
    AclSetsAction, AclVerb, AuthAction, AuthCmd, ClientCommand, KeyKind, KeyPermission, KeysAction,
    OrgAction, OrgChanges, OrgsAction, PageArgs, PublishArgs, SessionsAction, TokenExchangeArgs,
    UserCreateArgs, UserUpdateArgs, UsersAction,
};

/// The most pages a list follows, so a server that keeps answering cursors cannot loop forever.
const MAX_PAGES: usize = 10_000;

const USER_FIELDS: &[&str] = &[
    "username",
    "namespace",
    "enabled",
    "acl_sets",
    "created_at",
    "updated_at",
    "expires_at",
];
const USER_COLUMNS: &[Column] = &[
    col("USERNAME", "username"),
    col("NAMESPACE", "namespace"),
    col("ENABLED", "enabled"),
    col("ACL SETS", "acl_sets"),
    col("CREATED", "created_at"),
];
const RULE_FIELDS: &[&str] = &["id", "set", "permission", "action", "topic", "created_at"];
const RULE_COLUMNS: &[Column] = &[
    col("ID", "id"),
    col("SET", "set"),
    col("PERMISSION", "permission"),
    col("ACTION", "action"),
    col("TOPIC", "topic"),
];
const SET_FIELDS: &[&str] = &["name", "description", "rule_count", "created_at"];
const SET_COLUMNS: &[Column] = &[
    col("NAME", "name"),
    col("RULES", "rule_count"),
    col("CREATED", "created_at"),
    col("DESCRIPTION", "description"),
];
const KEY_FIELDS: &[&str] = &[
    "id",
    "name",
    "kind",
    "prefix",
    "permissions",
    "acl_sets",
    "created_at",
    "last_used_at",
    "revoked_at",
];
const KEY_COLUMNS: &[Column] = &[
    col("ID", "id"),
    col("NAME", "name"),
    col("KIND", "kind"),
    col("PREFIX", "prefix"),
    col("LAST USED", "last_used_at"),
    col("REVOKED", "revoked_at"),
];
const SESSION_FIELDS: &[&str] = &[
    "client_id",
    "username",
    "connected",
    "shard",
    "address",
    "connected_at",
    "subscriptions",
    "queued",
];
const SESSION_COLUMNS: &[Column] = &[
    col("CLIENT ID", "client_id"),
    col("USERNAME", "username"),
    col("CONNECTED", "connected"),
    col("SHARD", "shard"),
    col("ADDRESS", "address"),
    col("QUEUED", "queued"),
];
const ORG_FIELDS: &[&str] = &["id", "name", "created_at", "settings", "usage"];
const ORG_COLUMNS: &[Column] = &[
    col("ID", "id"),
    col("NAME", "name"),
    col("CREATED", "created_at"),
];
const SECRET_NOTE: &str =
    "note: this is the only time the key is shown; store it now, it cannot be retrieved again";

/// Runs one client command, printing to `out`.
pub fn run(command: &ClientCommand, env: &dyn Env, out: &mut dyn Write) -> Result<(), ClientError> {
    if let ClientCommand::Auth(cmd) = command {
        return auth(cmd, env, out);
    }
    let conn = command.conn();
    let target = credentials::resolve_from(
        conn.url.as_deref(),
        conn.key.as_ref(),
        conn.ca.as_deref(),
        env,
    )?;
    let mut ctx = Ctx {
        http: HttpClient::new(&target.url, target.key, target.ca.as_deref())?,
        json: conn.json,
        out,
    };
    match command {
        ClientCommand::Auth(_) => Ok(()),
        ClientCommand::Users(cmd) => users(&mut ctx, &cmd.action),
        ClientCommand::Acl(cmd) => acl(&mut ctx, &cmd.action),
        ClientCommand::AclSets(cmd) => acl_sets(&mut ctx, &cmd.action),
        ClientCommand::Keys(cmd) => keys(&mut ctx, &cmd.action),
        ClientCommand::Sessions(cmd) => sessions(&mut ctx, &cmd.action),
        ClientCommand::Org(cmd) => org(&mut ctx, &cmd.action),
        ClientCommand::Orgs(cmd) => orgs(&mut ctx, &cmd.action),
        ClientCommand::TokenExchange(args) => token_exchange(&mut ctx, args),
        ClientCommand::Publish(args) => publish(&mut ctx, args),
    }
}

/// A connected command: the client, the output mode and where to print.
struct Ctx<'a> {
    http: HttpClient,
    json: bool,
    out: &'a mut dyn Write,
}

impl Ctx<'_> {
    /// Prints a body as the server sent it, pretty-printed; nothing for an empty body.
    fn print_raw(&mut self, response: &Response) -> Result<(), ClientError> {
        if response.json.is_some() {
            self.out
                .write_all(output::pretty_json(&response.raw).as_bytes())?;
        }
        Ok(())
    }

    /// Sends a request that answers one object and prints it.
    fn show(&mut self, request: ApiRequest, order: &[&str]) -> Result<(), ClientError> {
        let response = self.http.send(&request)?;
        if self.json {
            return self.print_raw(&response);
        }
        let text = output::fields(response.body()?, order);
        self.out.write_all(text.as_bytes())?;
        Ok(())
    }

    /// Sends a request that answers 204 and prints `message` (nothing with `--json`).
    fn done(&mut self, request: ApiRequest, message: &str) -> Result<(), ClientError> {
        let response = self.http.send(&request)?;
        if self.json {
            return self.print_raw(&response);
        }
        writeln!(self.out, "{message}")?;
        Ok(())
    }

    /// Lists a collection: every page by following `next_cursor`, or the one page that
    /// `--limit` / `--cursor` asks for.
    fn list(
        &mut self,
        request: ApiRequest,
        page: &PageArgs,
        columns: &[Column],
    ) -> Result<(), ClientError> {
        let single = page.limit.is_some() || page.cursor.is_some();
        let mut cursor = page.cursor.clone();
        let mut items: Vec<Value> = Vec::new();
        let mut first_raw: Option<Response> = None;
        let mut pages = 0;
        loop {
            let request = request
                .clone()
                .with_query("limit", page.limit)
                .with_query("cursor", cursor.clone());
            let response = self.http.send(&request)?;
            let (page_items, next) = split_page(&response)?;
            pages += 1;
            if single {
                if self.json {
                    return self.print_raw(&response);
                }
                self.out
                    .write_all(output::table(columns, &page_items).as_bytes())?;
                if let Some(next) = next {
                    // On stderr so the table on stdout stays clean for pipes.
                    eprintln!("more: --cursor {next}");
                }
                return Ok(());
            }
            items.extend(page_items);
            if first_raw.is_none() {
                first_raw = Some(response);
            }
            match next {
                Some(next) if pages < MAX_PAGES && cursor.as_deref() != Some(next.as_str()) => {
                    cursor = Some(next)
                }
                Some(_) => {
                    return Err(ClientError::BadResponse {
                        status: 200,
                        reason: "the server keeps answering the same or endless cursors".into(),
                    })
                }
                None => break,
            }
        }
        if self.json {
            match (pages, &first_raw) {
                // One page: the server's answer verbatim.
                (1, Some(response)) => {
                    let response = response.clone();
                    self.print_raw(&response)?;
                }
                // Several pages: one combined document shaped like a last page.
                _ => {
                    let combined = json!({"items": items, "next_cursor": null});
                    let text = serde_json::to_string_pretty(&combined)
                        .map_err(|e| ClientError::Io(std::io::Error::other(e)))?;
                    writeln!(self.out, "{text}")?;
                }
            }
            return Ok(());
        }
        self.out
            .write_all(output::table(columns, &items).as_bytes())?;
        Ok(())
    }
}

/// A list page's items and next cursor.
fn split_page(response: &Response) -> Result<(Vec<Value>, Option<String>), ClientError> {
    let body = response.body()?;
    let items = body
        .get("items")
        .and_then(Value::as_array)
        .ok_or_else(|| ClientError::BadResponse {
            status: response.status,
            reason: "a list without an `items` array".into(),
        })?
        .clone();
    let next = body
        .get("next_cursor")
        .and_then(Value::as_str)
        .filter(|c| !c.is_empty())
        .map(str::to_string);
    Ok((items, next))
}

fn auth(cmd: &AuthCmd, env: &dyn Env, out: &mut dyn Write) -> Result<(), ClientError> {
    let path = credentials::credentials_path(env)?;
    match cmd.action {
        AuthAction::Login => {
            // Never the stored login: login is how a new one gets there.
            let target = credentials::resolve(
                cmd.conn.url.as_deref(),
                cmd.conn.key.as_ref(),
                cmd.conn.ca.as_deref(),
                env,
                None,
            )?;
            let http = HttpClient::new(&target.url, target.key.clone(), target.ca.as_deref())?;
            let response = http.send(&ApiRequest::get(&["v1", "org"]))?;
            let org = response.body()?;
            credentials::save(
                &path,
                &StoredLogin {
                    url: http.base().to_string(),
                    key: target.key.expose().to_string(),
                    // Absolute, so later commands find it from any directory.
                    ca: target
                        .ca
                        .as_deref()
                        .map(|ca| std::path::absolute(ca).unwrap_or_else(|_| ca.to_path_buf()))
                        .map(|ca| ca.display().to_string()),
                },
            )?;
            if cmd.conn.json {
                out.write_all(output::pretty_json(&response.raw).as_bytes())?;
            } else {
                writeln!(
                    out,
                    "logged in to {} as org {} ({}) with key {}",
                    http.base(),
                    output::cell("", org.get("id")),
                    output::cell("", org.get("name")),
                    target.key.prefix()
                )?;
                writeln!(out, "credentials saved to {}", path.display())?;
            }
        }
        AuthAction::Logout => {
            if credentials::remove(&path)? {
                writeln!(out, "logged out: removed {}", path.display())?;
            } else {
                writeln!(out, "not logged in: {} does not exist", path.display())?;
            }
        }
        AuthAction::Status => {
            let target = credentials::resolve_from(
                cmd.conn.url.as_deref(),
                cmd.conn.key.as_ref(),
                cmd.conn.ca.as_deref(),
                env,
            )?;
            let url_from = target.url_source.describe("--url", "RINGMQ_URL");
            let key_from = target.key_source.describe("--key", "RINGMQ_KEY");
            let http = HttpClient::new(&target.url, target.key.clone(), target.ca.as_deref())?;
            if !cmd.conn.json {
                writeln!(out, "url: {} (from {url_from})", http.base())?;
                writeln!(out, "key: {} (from {key_from})", target.key.prefix())?;
            }
            let response = http.send(&ApiRequest::get(&["v1", "org"]))?;
            let org = response.body()?;
            if cmd.conn.json {
                let status = json!({
                    "url": http.base(),
                    "url_source": url_from,
                    "key_prefix": target.key.prefix(),
                    "key_source": key_from,
                    "org": org,
                });
                let text = serde_json::to_string_pretty(&status)
                    .map_err(|e| ClientError::Io(std::io::Error::other(e)))?;
                writeln!(out, "{text}")?;
            } else {
                writeln!(
                    out,
                    "org: {} ({})",
                    output::cell("", org.get("id")),
                    output::cell("", org.get("name"))
                )?;
            }
        }
    }
    Ok(())
}

/// Reads a password from the first line of stdin, without its line ending.
fn password_from_stdin() -> Result<Secret, ClientError> {
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line)?;
    let password = line.strip_suffix('\n').unwrap_or(&line);
    let password = password.strip_suffix('\r').unwrap_or(password);
    if password.is_empty() {
        return Err(ClientError::Usage("no password on standard input".into()));
    }
    Ok(Secret::new(password))
}

/// The `POST /v1/users` body.
pub fn user_create_body(args: &UserCreateArgs, password: &Secret) -> Value {
    let mut body = Map::new();
    body.insert("username".into(), json!(args.username));
    body.insert("password".into(), json!(password.expose()));
    if let Some(namespace) = &args.namespace {
        body.insert("namespace".into(), json!(namespace));
    }
    if args.disabled {
        body.insert("enabled".into(), json!(false));
    }
    if !args.acl_sets.is_empty() {
        body.insert("acl_sets".into(), json!(args.acl_sets));
    }
    Value::Object(body)
}

/// The `PATCH /v1/users/{username}` body; an error when it would change nothing.
pub fn user_update_body(
    args: &UserUpdateArgs,
    password: Option<&Secret>,
) -> Result<Value, ClientError> {
    let mut body = Map::new();
    if let Some(password) = password {
        body.insert("password".into(), json!(password.expose()));
    }
    if let Some(namespace) = &args.namespace {
        body.insert("namespace".into(), json!(namespace));
    } else if args.no_namespace {
        body.insert("namespace".into(), Value::Null);
    }
    if !args.acl_sets.is_empty() {
        body.insert("acl_sets".into(), json!(args.acl_sets));
    } else if args.no_acl_sets {
        body.insert("acl_sets".into(), json!([]));
    }
    if args.enable {
        body.insert("enabled".into(), json!(true));
    } else if args.disable {
        body.insert("enabled".into(), json!(false));
    }
    nonempty(
        body,
        "--password, --namespace, --acl-set, --enable or --disable",
    )
}

fn nonempty(body: Map<String, Value>, flags: &str) -> Result<Value, ClientError> {
    if body.is_empty() {
        return Err(ClientError::Usage(format!(
            "nothing to update: give at least one of {flags}"
        )));
    }
    Ok(Value::Object(body))
}

fn users(ctx: &mut Ctx<'_>, action: &UsersAction) -> Result<(), ClientError> {
    match action {
        UsersAction::List(page) => ctx.list(ApiRequest::get(&["v1", "users"]), page, USER_COLUMNS),
        UsersAction::Create(args) => {
            let password = match &args.password {
                Some(password) => password.clone(),
                None => password_from_stdin()?,
            };
            let body = user_create_body(args, &password);
            ctx.show(ApiRequest::post(&["v1", "users"], body), USER_FIELDS)
        }
        UsersAction::Get { username } => {
            ctx.show(ApiRequest::get(&["v1", "users", username]), USER_FIELDS)
        }
        UsersAction::Update(args) => {
            let password = match (&args.password, args.password_stdin) {
                (Some(password), _) => Some(password.clone()),
                (None, true) => Some(password_from_stdin()?),
                (None, false) => None,
            };
            let body = user_update_body(args, password.as_ref())?;
            ctx.show(
                ApiRequest::patch(&["v1", "users", &args.username], body),
                USER_FIELDS,
            )
        }
        UsersAction::Delete { username } => ctx.done(
            ApiRequest::delete(&["v1", "users", username]),
            &format!("deleted user {username}"),
        ),
    }
}

fn acl(ctx: &mut Ctx<'_>, action: &AclVerb) -> Result<(), ClientError> {
    match action {
        AclVerb::List { set, page } => ctx.list(
            ApiRequest::get(&["v1", "acl", "rules"]).with_query("set", set.as_ref()),
            page,
            RULE_COLUMNS,
        ),
        AclVerb::Create {
            topic,
            action,
            permission,
            set,
        } => {
            let mut body = json!({
                "topic": topic,
                "action": action.as_str(),
                "permission": permission.as_str(),
            });
            if let (Some(set), Some(object)) = (set, body.as_object_mut()) {
                object.insert("set".into(), json!(set));
            }
            ctx.show(ApiRequest::post(&["v1", "acl", "rules"], body), RULE_FIELDS)
        }
        AclVerb::Get { id } => ctx.show(ApiRequest::get(&["v1", "acl", "rules", id]), RULE_FIELDS),
        AclVerb::Update {
            id,
            topic,
            action,
            permission,
        } => {
            let mut body = Map::new();
            if let Some(topic) = topic {
                body.insert("topic".into(), json!(topic));
            }
            if let Some(action) = action {
                body.insert("action".into(), json!(action.as_str()));
            }
            if let Some(permission) = permission {
                body.insert("permission".into(), json!(permission.as_str()));
            }
            let body = nonempty(body, "--topic, --action or --permission")?;
            ctx.show(
                ApiRequest::patch(&["v1", "acl", "rules", id], body),
                RULE_FIELDS,
            )
        }
        AclVerb::Delete { id } => ctx.done(
            ApiRequest::delete(&["v1", "acl", "rules", id]),
            &format!("deleted rule {id}"),
        ),
    }
}

fn acl_sets(ctx: &mut Ctx<'_>, action: &AclSetsAction) -> Result<(), ClientError> {
    match action {
        AclSetsAction::List(page) => {
            ctx.list(ApiRequest::get(&["v1", "acl", "sets"]), page, SET_COLUMNS)
        }
        AclSetsAction::Create { name, description } => {
            let mut body = json!({"name": name});
            if let (Some(description), Some(object)) = (description, body.as_object_mut()) {
                object.insert("description".into(), json!(description));
            }
            ctx.show(ApiRequest::post(&["v1", "acl", "sets"], body), SET_FIELDS)
        }
        AclSetsAction::Get { name } => {
            let response = ctx
                .http
                .send(&ApiRequest::get(&["v1", "acl", "sets", name]))?;
            if ctx.json {
                return ctx.print_raw(&response);
            }
            let mut set = response.body()?.clone();
            let rules = set
                .as_object_mut()
                .and_then(|o| o.remove("rules"))
                .and_then(|r| r.as_array().cloned())
                .unwrap_or_default();
            ctx.out
                .write_all(output::fields(&set, SET_FIELDS).as_bytes())?;
            writeln!(ctx.out)?;
            ctx.out
                .write_all(output::table(RULE_COLUMNS, &rules).as_bytes())?;
            Ok(())
        }
        AclSetsAction::Update { name, description } => ctx.show(
            ApiRequest::patch(
                &["v1", "acl", "sets", name],
                json!({"description": description}),
            ),
            SET_FIELDS,
        ),
        AclSetsAction::Delete { name } => ctx.done(
            ApiRequest::delete(&["v1", "acl", "sets", name]),
            &format!("deleted ACL set {name}"),
        ),
    }
}

/// The `POST /v1/keys` body.
pub fn key_create_body(
    name: &str,
    kind: KeyKind,
    permissions: &[KeyPermission],
    acl_sets: &[String],
) -> Value {
    let mut body = Map::new();
    body.insert("name".into(), json!(name));
    body.insert("kind".into(), json!(kind.as_str()));
    if !permissions.is_empty() {
        let list: Vec<Value> = permissions
            .iter()
            .map(|p| json!({"action": p.action.as_str(), "topic": p.topic}))
            .collect();
        body.insert("permissions".into(), Value::Array(list));
    }
    if !acl_sets.is_empty() {
        body.insert("acl_sets".into(), json!(acl_sets));
    }
    Value::Object(body)
}

/// Prints a created key: its fields, then the secret and the only-once note.
fn print_new_key(out: &mut dyn Write, key: &Value) -> Result<(), ClientError> {
    let mut shown = key.clone();
    let secret = shown
        .as_object_mut()
        .and_then(|o| o.remove("key"))
        .and_then(|k| k.as_str().map(str::to_string));
    out.write_all(output::fields(&shown, KEY_FIELDS).as_bytes())?;
    if let Some(secret) = secret {
        writeln!(out, "\nkey: {secret}")?;
    }
    Ok(())
}

fn keys(ctx: &mut Ctx<'_>, action: &KeysAction) -> Result<(), ClientError> {
    match action {
        KeysAction::List(page) => ctx.list(ApiRequest::get(&["v1", "keys"]), page, KEY_COLUMNS),
        KeysAction::Create {
            name,
            kind,
            permissions,
            acl_sets,
        } => {
            let body = key_create_body(name, *kind, permissions, acl_sets);
            let response = ctx.http.send(&ApiRequest::post(&["v1", "keys"], body))?;
            if ctx.json {
                ctx.print_raw(&response)?;
            } else {
                print_new_key(ctx.out, response.body()?)?;
            }
            eprintln!("{SECRET_NOTE}");
            Ok(())
        }
        KeysAction::Get { id } => ctx.show(ApiRequest::get(&["v1", "keys", id]), KEY_FIELDS),
        KeysAction::Update { id, name } => ctx.show(
            ApiRequest::patch(&["v1", "keys", id], json!({"name": name})),
            KEY_FIELDS,
        ),
        KeysAction::Revoke { id } => ctx.done(
            ApiRequest::delete(&["v1", "keys", id]),
            &format!("revoked key {id}"),
        ),
    }
}

fn sessions(ctx: &mut Ctx<'_>, action: &SessionsAction) -> Result<(), ClientError> {
    match action {
        SessionsAction::List { state, page } => ctx.list(
            ApiRequest::get(&["v1", "sessions"]).with_query("state", state.map(|s| s.as_str())),
            page,
            SESSION_COLUMNS,
        ),
        SessionsAction::Get { client_id } => ctx.show(
            ApiRequest::get(&["v1", "sessions", client_id]),
            SESSION_FIELDS,
        ),
        SessionsAction::Disconnect { client_id } => ctx.done(
            ApiRequest::new(
                super::http::Method::Post,
                &["v1", "sessions", client_id, "disconnect"],
            ),
            &format!("disconnected {client_id}"),
        ),
        SessionsAction::Delete { client_id } => ctx.done(
            ApiRequest::delete(&["v1", "sessions", client_id]),
            &format!("deleted session {client_id}"),
        ),
    }
}

/// The `PATCH /v1/org` body; an error when it would change nothing.
pub fn org_update_body(changes: &OrgChanges) -> Result<Value, ClientError> {
    let mut settings = Map::new();
    for (field, value) in [
        ("rate_limit_per_sec", changes.rate_limit),
        ("rate_burst", changes.rate_burst),
        ("monthly_quota", changes.monthly_quota),
        ("connections_max", changes.connections_max),
    ] {
        if let Some(value) = value {
            settings.insert(field.into(), json!(value));
        }
    }
    let mut body = Map::new();
    if let Some(name) = &changes.name {
        body.insert("name".into(), json!(name));
    }
    if !settings.is_empty() {
        body.insert("settings".into(), Value::Object(settings));
    }
    nonempty(
        body,
        "--name, --rate-limit, --rate-burst, --monthly-quota or --connections-max",
    )
}

fn org(ctx: &mut Ctx<'_>, action: &OrgAction) -> Result<(), ClientError> {
    match action {
        OrgAction::Show => ctx.show(ApiRequest::get(&["v1", "org"]), ORG_FIELDS),
        OrgAction::Update(changes) => {
            let body = org_update_body(changes)?;
            ctx.show(ApiRequest::patch(&["v1", "org"], body), ORG_FIELDS)
        }
    }
}

fn orgs(ctx: &mut Ctx<'_>, action: &OrgsAction) -> Result<(), ClientError> {
    match action {
        OrgsAction::List(page) => ctx.list(ApiRequest::get(&["v1", "orgs"]), page, ORG_COLUMNS),
        OrgsAction::Create { name } => {
            let response = ctx
                .http
                .send(&ApiRequest::post(&["v1", "orgs"], json!({"name": name})))?;
            if ctx.json {
                ctx.print_raw(&response)?;
            } else {
                let body = response.body()?;
                let org = body.get("org").cloned().unwrap_or(Value::Null);
                ctx.out
                    .write_all(output::fields(&org, ORG_FIELDS).as_bytes())?;
                if let Some(key) = body.get("key") {
                    writeln!(ctx.out, "\nfirst secret key:")?;
                    print_new_key(ctx.out, key)?;
                }
            }
            eprintln!("{SECRET_NOTE}");
            Ok(())
        }
        OrgsAction::Get { id } => ctx.show(ApiRequest::get(&["v1", "orgs", id]), ORG_FIELDS),
        OrgsAction::Update { id, changes } => {
            let body = org_update_body(changes)?;
            ctx.show(ApiRequest::patch(&["v1", "orgs", id], body), ORG_FIELDS)
        }
        OrgsAction::Delete { id } => ctx.done(
            ApiRequest::delete(&["v1", "orgs", id]),
            &format!("deleted org {id}"),
        ),
    }
}

fn token_exchange(ctx: &mut Ctx<'_>, args: &TokenExchangeArgs) -> Result<(), ClientError> {
    let mut body = json!({"token": args.token.expose()});
    if let (Some(provider), Some(object)) = (&args.provider, body.as_object_mut()) {
        object.insert("provider".into(), json!(provider));
    }
    ctx.show(
        ApiRequest::post(&["v1", "token-exchange"], body),
        &["username", "password", "expires_at", "allowed"],
    )
}

/// The `POST /v1/publish` body.
pub fn publish_body(args: &PublishArgs) -> Value {
    json!({
        "topic": args.topic,
        "payload": args.message,
        "qos": args.qos,
        "retain": args.retain,
    })
}

fn publish(ctx: &mut Ctx<'_>, args: &PublishArgs) -> Result<(), ClientError> {
    let response = ctx
        .http
        .send(&ApiRequest::post(&["v1", "publish"], publish_body(args)))?;
    if ctx.json {
        return ctx.print_raw(&response);
    }
    writeln!(ctx.out, "published to {}", args.topic)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::client::{AclAction, ConnArgs};

    fn create_args() -> UserCreateArgs {
        UserCreateArgs {
            username: "u1".into(),
            password: None,
            password_stdin: true,
            namespace: None,
            acl_sets: vec![],
            disabled: false,
        }
    }

    #[test]
    fn user_bodies() {
        let pw = Secret::new("password1");
        assert_eq!(
            user_create_body(&create_args(), &pw),
            json!({"username": "u1", "password": "password1"})
        );
        let args = UserCreateArgs {
            namespace: Some("ns".into()),
            acl_sets: vec!["a".into(), "b".into()],
            disabled: true,
            ..create_args()
        };
        assert_eq!(
            user_create_body(&args, &pw),
            json!({"username": "u1", "password": "password1", "namespace": "ns",
                   "enabled": false, "acl_sets": ["a", "b"]})
        );

        let update = UserUpdateArgs {
            username: "u1".into(),
            password: None,
            password_stdin: false,
            namespace: None,
            no_namespace: true,
            acl_sets: vec![],
            no_acl_sets: true,
            enable: true,
            disable: false,
        };
        assert_eq!(
            user_update_body(&update, None).unwrap(),
            json!({"namespace": null, "acl_sets": [], "enabled": true})
        );
        let nothing = UserUpdateArgs {
            no_namespace: false,
            no_acl_sets: false,
            enable: false,
            ..update
        };
        let err = user_update_body(&nothing, None).unwrap_err();
        assert_eq!(err.exit_code(), 2);
        assert_eq!(
            user_update_body(&nothing, Some(&pw)).unwrap(),
            json!({"password": "password1"})
        );
    }

    #[test]
    fn key_and_org_and_publish_bodies() {
        let perms: Vec<KeyPermission> = ["publish:alerts/#", "subscribe:a/+"]
            .iter()
            .map(|s| s.parse().unwrap())
            .collect();
        assert_eq!(perms[0].action, AclAction::Publish);
        assert_eq!(
            key_create_body("w", KeyKind::Restricted, &perms, &[]),
            json!({"name": "w", "kind": "restricted", "permissions": [
                {"action": "publish", "topic": "alerts/#"},
                {"action": "subscribe", "topic": "a/+"}]})
        );
        assert!("publish".parse::<KeyPermission>().is_err());
        assert!("write:x".parse::<KeyPermission>().is_err());
        assert!("all:".parse::<KeyPermission>().is_err());

        let nothing = OrgChanges {
            name: None,
            rate_limit: None,
            rate_burst: None,
            monthly_quota: None,
            connections_max: None,
        };
        let changes = OrgChanges {
            name: Some("Acme".into()),
            rate_limit: Some(10),
            monthly_quota: Some(5),
            ..nothing.clone()
        };
        assert_eq!(
            org_update_body(&changes).unwrap(),
            json!({"name": "Acme", "settings": {"rate_limit_per_sec": 10, "monthly_quota": 5}})
        );
        assert!(org_update_body(&nothing).is_err());

        let args = PublishArgs {
            conn: ConnArgs::default(),
            topic: "t/1".into(),
            message: "hi".into(),
            qos: 1,
            retain: true,
        };
        assert_eq!(
            publish_body(&args),
            json!({"topic": "t/1", "payload": "hi", "qos": 1, "retain": true})
        );
    }

    #[test]
    fn new_key_output_shows_the_secret_last() {
        let mut out = Vec::new();
        let key = json!({"id": "key_1", "name": "ci", "kind": "secret", "key": "sk_full"});
        print_new_key(&mut out, &key).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(text.starts_with("id:   key_1\n"), "{text}");
        assert!(text.ends_with("\nkey: sk_full\n"), "{text}");
    }

    #[test]
    fn commands_without_a_server_are_usage_errors() {
        use clap::Parser;
        let cli = crate::cli::Cli::try_parse_from(["ringmq", "users", "list"]).unwrap();
        let crate::cli::Command::Client(command) = cli.command else {
            panic!("expected a client command");
        };
        let env = |name: &str| (name == "RINGMQ_CONFIG_DIR").then(|| "/nonexistent/ringmq".into());
        let err = run(&command, &env, &mut Vec::new()).unwrap_err();
        assert_eq!(err.exit_code(), 2, "{err}");
        let cli = crate::cli::Cli::try_parse_from([
            "ringmq",
            "users",
            "list",
            "--url",
            "https://h",
            "--key",
            "sk_x",
            "--ca",
            "/nonexistent/ca.pem",
        ])
        .unwrap();
        let crate::cli::Command::Client(command) = cli.command else {
            panic!("expected a client command");
        };
        let err = run(&command, &env, &mut Vec::new()).unwrap_err();
        assert!(matches!(err, ClientError::CaFile { .. }), "{err}");
        assert_eq!(err.exit_code(), 2, "{err}");
    }
}
