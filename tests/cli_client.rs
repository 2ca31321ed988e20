//! The `ringmq` client commands, run as the built binary against a fake management API that
//! answers canned responses and records what it was sent.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::thread;

use serde_json::{json, Value};

const KEY: &str = "sk_test_0123456789abcdefghij";

/// One request as the fake server saw it.
#[derive(Debug, Clone)]
struct Recorded {
    line: String,
    headers: Vec<(String, String)>,
    body: String,
}

impl Recorded {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn json(&self) -> Value {
        serde_json::from_str(&self.body).expect("request body is JSON")
    }
}

/// A one-request-per-connection HTTP server answering `responses` in order.
struct FakeServer {
    addr: SocketAddr,
    requests: Arc<Mutex<Vec<Recorded>>>,
}

impl FakeServer {
    fn start(responses: Vec<(u16, &str)>) -> FakeServer {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let recorded = Arc::clone(&requests);
        let responses: Vec<(u16, String)> = responses
            .into_iter()
            .map(|(s, b)| (s, b.to_string()))
            .collect();
        thread::spawn(move || {
            let mut responses = responses.into_iter();
            for stream in listener.incoming() {
                let Ok(stream) = stream else { return };
                let mut reader = BufReader::new(stream);
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 {
                    continue;
                }
                let mut headers = Vec::new();
                loop {
                    let mut header = String::new();
                    reader.read_line(&mut header).unwrap();
                    let header = header.trim_end();
                    if header.is_empty() {
                        break;
                    }
                    let (name, value) = header.split_once(':').unwrap();
                    headers.push((name.trim().to_string(), value.trim().to_string()));
                }
                let length: usize = headers
                    .iter()
                    .find(|(n, _)| n.eq_ignore_ascii_case("content-length"))
                    .map(|(_, v)| v.parse().unwrap())
                    .unwrap_or(0);
                let mut body = vec![0; length];
                reader.read_exact(&mut body).unwrap();
                recorded.lock().unwrap().push(Recorded {
                    line: line.trim_end().to_string(),
                    headers,
                    body: String::from_utf8(body).unwrap(),
                });
                let (status, body) = responses.next().unwrap_or((
                    500,
                    r#"{"error":"internal","detail":"no canned response"}"#.into(),
                ));
                let content_type = if body.starts_with('{') {
                    "application/json"
                } else {
                    "text/html"
                };
                let mut stream = reader.into_inner();
                let _ = write!(
                    stream,
                    "HTTP/1.1 {status} X\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = stream.flush();
            }
        });
        FakeServer { addr, requests }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn requests(&self) -> Vec<Recorded> {
        self.requests.lock().unwrap().clone()
    }
}

fn temp_config_dir(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "ringmq-cli-{tag}-{}-{:?}",
        std::process::id(),
        std::time::SystemTime::now()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

/// Runs the binary with a private config dir and none of the caller's RINGMQ_* variables.
fn ringmq(config_dir: &PathBuf, args: &[&str], env: &[(&str, &str)], stdin: &str) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_ringmq"));
    command
        .args(args)
        .env_remove("RINGMQ_URL")
        .env_remove("RINGMQ_KEY")
        .env("RINGMQ_CONFIG_DIR", config_dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (name, value) in env {
        command.env(name, value);
    }
    let mut child = command.spawn().unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

const ORG: &str = r#"{"id":"default","name":"Default org","created_at":1795535388,"settings":{"rate_limit_per_sec":100,"rate_burst":200,"monthly_quota":null,"connections_max":null},"usage":{"connections":2,"messages_in":10,"messages_out":20,"rest_publishes":0,"month":"2026-11"}}"#;

#[test]
fn login_status_logout() {
    let server = FakeServer::start(vec![(200, ORG), (200, ORG)]);
    let dir = temp_config_dir("login");
    let url = server.url();

    let out = ringmq(
        &dir,
        &["auth", "login", "--url", &url, "--key", KEY],
        &[],
        "",
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(stdout.contains("logged in"), "{stdout}");
    assert!(stdout.contains("default"), "{stdout}");
    assert!(!stdout.contains(KEY), "{stdout}");

    let file = dir.join("credentials.toml");
    let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let dir_mode = std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777;
    assert_eq!(dir_mode, 0o700);
    let stored = std::fs::read_to_string(&file).unwrap();
    assert!(stored.contains(KEY) && stored.contains(&url), "{stored}");

    // status uses the stored login and shows the key's prefix only.
    let out = ringmq(&dir, &["auth", "status"], &[], "");
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains("key: sk_test_0… (from stored login)"),
        "{stdout}"
    );
    assert!(stdout.contains("stored login"), "{stdout}");
    assert!(stdout.contains("org: default (Default org)"), "{stdout}");
    assert!(!stdout.contains(KEY), "{stdout}");

    let requests = server.requests();
    assert_eq!(requests.len(), 2);
    for request in &requests {
        assert_eq!(request.line, "GET /v1/org HTTP/1.1");
        let auth = format!("Bearer {KEY}");
        assert_eq!(request.header("authorization"), Some(auth.as_str()));
    }

    let out = ringmq(&dir, &["auth", "logout"], &[], "");
    assert_eq!(out.status.code(), Some(0));
    assert!(!file.exists());
    let out = ringmq(&dir, &["auth", "status"], &[], "");
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("ringmq auth login"),
        "{}",
        text(&out.stderr)
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn login_with_a_rejected_key_stores_nothing() {
    let server = FakeServer::start(vec![(
        401,
        r#"{"error":"unauthorized","detail":"unknown API key"}"#,
    )]);
    let dir = temp_config_dir("badlogin");
    let out = ringmq(
        &dir,
        &["auth", "login", "--url", &server.url()],
        &[("RINGMQ_KEY", KEY)],
        "",
    );
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("error: unauthorized: unknown API key (HTTP 401)"),
        "{stderr}"
    );
    assert!(!stderr.contains(KEY), "{stderr}");
    assert!(!dir.join("credentials.toml").exists());
}

#[test]
fn list_follows_pagination() {
    let server = FakeServer::start(vec![
        (
            200,
            r#"{"items":[{"username":"alice","namespace":null,"enabled":true,"acl_sets":["a"],"created_at":0,"updated_at":0,"expires_at":null}],"next_cursor":"c2"}"#,
        ),
        (
            200,
            r#"{"items":[{"username":"bob","namespace":"ns","enabled":false,"acl_sets":[],"created_at":0,"updated_at":0,"expires_at":null}],"next_cursor":null}"#,
        ),
    ]);
    let dir = temp_config_dir("list");
    let out = ringmq(
        &dir,
        &["users", "list", "--url", &server.url(), "--key", KEY],
        &[],
        "",
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout),
        "USERNAME  NAMESPACE  ENABLED  ACL SETS  CREATED\n\
         alice     -          true     a         1970-01-01 00:00:00 UTC\n\
         bob       ns         false    -         1970-01-01 00:00:00 UTC\n"
    );
    let lines: Vec<String> = server.requests().into_iter().map(|r| r.line).collect();
    assert_eq!(
        lines,
        vec![
            "GET /v1/users HTTP/1.1".to_string(),
            "GET /v1/users?cursor=c2 HTTP/1.1".to_string()
        ]
    );
}

#[test]
fn limit_fetches_one_page_and_hints_the_cursor() {
    let server = FakeServer::start(vec![(
        200,
        r#"{"items":[{"id":"rule_1","set":"default","permission":"allow","action":"all","topic":"a/#","created_at":0}],"next_cursor":"n/2"}"#,
    )]);
    let dir = temp_config_dir("limit");
    let out = ringmq(
        &dir,
        &["acl", "list", "--set", "default", "--limit", "1"],
        &[("RINGMQ_URL", &server.url()), ("RINGMQ_KEY", KEY)],
        "",
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("rule_1  default  allow"));
    assert!(text(&out.stderr).contains("more: --cursor n/2"));
    assert_eq!(
        server.requests()[0].line,
        "GET /v1/acl/rules?set=default&limit=1 HTTP/1.1"
    );
}

#[test]
fn create_user_sends_json_with_password_from_stdin() {
    let server = FakeServer::start(vec![(
        201,
        r#"{"username":"alice","namespace":null,"enabled":false,"acl_sets":["sensors"],"created_at":1795535388,"updated_at":1795535388,"expires_at":null}"#,
    )]);
    let dir = temp_config_dir("create");
    let out = ringmq(
        &dir,
        &[
            "users",
            "create",
            "--username",
            "alice",
            "--password-stdin",
            "--acl-set",
            "sensors",
            "--disabled",
        ],
        &[("RINGMQ_URL", &server.url()), ("RINGMQ_KEY", KEY)],
        "correct horse battery\n",
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(stdout.starts_with("username:   alice\n"), "{stdout}");
    assert!(
        stdout.contains("created_at: 2026-11-24 15:49:48 UTC"),
        "{stdout}"
    );

    let request = &server.requests()[0];
    assert_eq!(request.line, "POST /v1/users HTTP/1.1");
    let bearer = format!("Bearer {KEY}");
    assert_eq!(request.header("Authorization"), Some(bearer.as_str()));
    assert!(request
        .header("content-type")
        .is_some_and(|v| v.starts_with("application/json")));
    assert_eq!(
        request.json(),
        json!({"username": "alice", "password": "correct horse battery",
               "enabled": false, "acl_sets": ["sensors"]})
    );
}

#[test]
fn flag_beats_env() {
    let server = FakeServer::start(vec![(204, "")]);
    let dead = {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap()
    };
    let dir = temp_config_dir("precedence");
    let out = ringmq(
        &dir,
        &["sessions", "disconnect", "dev/1", "--url", &server.url()],
        &[
            ("RINGMQ_URL", &format!("http://{dead}")),
            ("RINGMQ_KEY", KEY),
        ],
        "",
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "disconnected dev/1\n");
    assert_eq!(
        server.requests()[0].line,
        "POST /v1/sessions/dev%2F1/disconnect HTTP/1.1"
    );
}

#[test]
fn error_responses_exit_1_with_the_detail() {
    let server = FakeServer::start(vec![
        (404, r#"{"error":"not_found","detail":"no user named bob"}"#),
        (502, "<html><body>Bad gateway</body></html>"),
    ]);
    let dir = temp_config_dir("error");
    let env = [
        ("RINGMQ_URL", server.url()),
        ("RINGMQ_KEY", KEY.to_string()),
    ];
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();

    let out = ringmq(&dir, &["users", "get", "bob"], &env, "");
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty());
    let stderr = text(&out.stderr);
    assert_eq!(stderr, "error: not_found: no user named bob (HTTP 404)\n");

    let out = ringmq(&dir, &["users", "delete", "bob"], &env, "");
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert!(stderr.contains("http_502"), "{stderr}");
    assert!(stderr.contains("Bad gateway"), "{stderr}");
    assert!(!stderr.contains(KEY), "{stderr}");
    assert_eq!(server.requests()[1].line, "DELETE /v1/users/bob HTTP/1.1");
}

#[test]
fn unreachable_server_exits_3_and_a_bad_ca_file_exits_2() {
    let dead = {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap()
    };
    let dir = temp_config_dir("unreachable");
    let url = format!("http://{dead}");
    let out = ringmq(&dir, &["org", "show", "--url", &url, "--key", KEY], &[], "");
    assert_eq!(out.status.code(), Some(3));
    let stderr = text(&out.stderr);
    assert!(stderr.contains("cannot reach the server"), "{stderr}");
    assert!(!stderr.contains(KEY), "{stderr}");

    // https is spoken: an unreachable https server is 3 as well.
    let url = format!("https://{dead}");
    let out = ringmq(&dir, &["org", "show", "--url", &url, "--key", KEY], &[], "");
    assert_eq!(out.status.code(), Some(3));
    assert!(text(&out.stderr).contains("cannot reach the server"));
    // A --ca file that holds no certificate is a usage error naming the file.
    let ca = dir.join("not-a-ca.pem");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(&ca, "hello\n").unwrap();
    let ca_arg = ca.display().to_string();
    let out = ringmq(
        &dir,
        &["org", "show", "--url", &url, "--key", KEY, "--ca", &ca_arg],
        &[],
        "",
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains(&ca_arg), "{}", text(&out.stderr));

    // Neither flag, env nor stored login.
    let out = ringmq(&dir, &["keys", "list"], &[], "");
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("--url"));
}

#[test]
fn json_prints_the_server_body_verbatim_and_pretty() {
    let server = FakeServer::start(vec![(200, ORG)]);
    let dir = temp_config_dir("json");
    let out = ringmq(
        &dir,
        &[
            "org",
            "show",
            "--json",
            "--url",
            &server.url(),
            "--key",
            KEY,
        ],
        &[],
        "",
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    // The server's field order (id before name before created_at) survives.
    assert!(
        stdout.starts_with("{\n  \"id\": \"default\",\n  \"name\": \"Default org\",\n  \"created_at\": 1795535388,\n  \"settings\": {\n    \"rate_limit_per_sec\": 100,"),
        "{stdout}"
    );
    let parsed: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(parsed, serde_json::from_str::<Value>(ORG).unwrap());
}

#[test]
fn key_create_prints_the_secret_once_with_a_note() {
    let server = FakeServer::start(vec![(
        201,
        r#"{"id":"key_1","name":"writer","kind":"restricted","prefix":"rk_abcdefg","permissions":[{"action":"publish","topic":"alerts/#"}],"acl_sets":[],"created_at":0,"last_used_at":null,"revoked_at":null,"key":"rk_abcdefghijklmnop"}"#,
    )]);
    let dir = temp_config_dir("keys");
    let out = ringmq(
        &dir,
        &[
            "keys",
            "create",
            "--name",
            "writer",
            "--kind",
            "restricted",
            "--permission",
            "publish:alerts/#",
        ],
        &[("RINGMQ_URL", &server.url()), ("RINGMQ_KEY", KEY)],
        "",
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains("permissions:  publish:alerts/#"),
        "{stdout}"
    );
    assert!(stdout.ends_with("\nkey: rk_abcdefghijklmnop\n"), "{stdout}");
    assert!(text(&out.stderr).contains("only time the key is shown"));
    assert_eq!(
        server.requests()[0].json(),
        json!({"name": "writer", "kind": "restricted",
               "permissions": [{"action": "publish", "topic": "alerts/#"}]})
    );
}

#[test]
fn publish_posts_the_message() {
    let server = FakeServer::start(vec![(204, "")]);
    let dir = temp_config_dir("publish");
    let out = ringmq(
        &dir,
        &[
            "publish",
            "--topic",
            "a/b",
            "--message",
            "hello",
            "--qos",
            "1",
            "--retain",
        ],
        &[("RINGMQ_URL", &server.url()), ("RINGMQ_KEY", KEY)],
        "",
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let request = &server.requests()[0];
    assert_eq!(request.line, "POST /v1/publish HTTP/1.1");
    assert_eq!(
        request.json(),
        json!({"topic": "a/b", "payload": "hello", "qos": 1, "retain": true})
    );
}

#[test]
fn help_and_usage_errors() {
    let dir = temp_config_dir("help");
    for args in [
        &["users", "create", "--help"][..],
        &["keys", "create", "--help"],
        &["acl", "--help"],
        &["auth", "login", "--help"],
    ] {
        let out = ringmq(&dir, args, &[], "");
        assert_eq!(out.status.code(), Some(0), "{args:?}");
        let stdout = text(&out.stdout);
        assert!(stdout.contains("Example"), "{args:?}: {stdout}");
        assert!(stdout.contains("--url"), "{args:?}: {stdout}");
        assert!(stdout.contains("--json"), "{args:?}: {stdout}");
    }
    for args in [
        &["users"][..],
        &["users", "create", "--username", "x"],
        &[
            "acl",
            "create",
            "--topic",
            "t",
            "--action",
            "write",
            "--permission",
            "allow",
        ],
        &[
            "keys",
            "create",
            "--name",
            "n",
            "--kind",
            "restricted",
            "--permission",
            "bad",
        ],
        &["publish", "--topic", "t", "--message", "m", "--qos", "2"],
    ] {
        let out = ringmq(&dir, args, &[], "");
        assert_eq!(out.status.code(), Some(2), "{args:?}");
    }
}
