//! The HTTP side: building API requests, sending them with `ureq`, and mapping failures to
//! [`ClientError`] (error bodies to `Api`, connection problems to `Transport`).

use std::io::Read;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use serde_json::Value;

use super::{ClientError, Secret};

/// How long to wait for the TCP connection.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a whole request may take.
pub const OVERALL_TIMEOUT: Duration = Duration::from_secs(30);
/// The most of a response body read; management responses are far smaller.
const MAX_BODY: u64 = 16 * 1024 * 1024;
/// How much of a non-JSON error body to quote.
const MAX_SNIPPET: usize = 200;

/// An HTTP method the API uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// GET.
    Get,
    /// POST.
    Post,
    /// PATCH.
    Patch,
    /// DELETE.
    Delete,
}

impl Method {
    /// The method's name on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Get => "GET",
            Method::Post => "POST",
            Method::Patch => "PATCH",
            Method::Delete => "DELETE",
        }
    }
}

/// One API call, before it meets a server.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiRequest {
    /// Method.
    pub method: Method,
    /// Percent-encoded path, e.g. `/v1/users/a%20b`.
    pub path: String,
    /// Query parameters, unencoded.
    pub query: Vec<(&'static str, String)>,
    /// JSON body.
    pub body: Option<Value>,
}

impl ApiRequest {
    /// A request whose path is `segments`, each percent-encoded (so a client id holding `/` or
    /// `?` stays one segment).
    pub fn new(method: Method, segments: &[&str]) -> Self {
        let mut path = String::new();
        for segment in segments {
            path.push('/');
            path.push_str(&encode(segment));
        }
        ApiRequest {
            method,
            path,
            query: Vec::new(),
            body: None,
        }
    }

    /// A GET.
    pub fn get(segments: &[&str]) -> Self {
        Self::new(Method::Get, segments)
    }

    /// A POST with a JSON body.
    pub fn post(segments: &[&str], body: Value) -> Self {
        Self::new(Method::Post, segments).with_body(body)
    }

    /// A PATCH with a JSON body.
    pub fn patch(segments: &[&str], body: Value) -> Self {
        Self::new(Method::Patch, segments).with_body(body)
    }

    /// A DELETE.
    pub fn delete(segments: &[&str]) -> Self {
        Self::new(Method::Delete, segments)
    }

    /// Sets the JSON body.
    pub fn with_body(mut self, body: Value) -> Self {
        self.body = Some(body);
        self
    }

    /// Adds a query parameter when `value` is `Some`.
    pub fn with_query(mut self, name: &'static str, value: Option<impl ToString>) -> Self {
        if let Some(value) = value {
            self.query.push((name, value.to_string()));
        }
        self
    }

    /// The full URL under `base` (a URL from [`base_url`]).
    pub fn url(&self, base: &str) -> String {
        let mut url = format!("{base}{}", self.path);
        for (i, (name, value)) in self.query.iter().enumerate() {
            url.push(if i == 0 { '?' } else { '&' });
            url.push_str(name);
            url.push('=');
            url.push_str(&encode(value));
        }
        url
    }
}

/// Everything but RFC 3986's unreserved characters is escaped in a path segment or query value.
const ESCAPED: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// Percent-encodes everything but RFC 3986 unreserved characters.
fn encode(text: &str) -> String {
    percent_encoding::utf8_percent_encode(text, ESCAPED).to_string()
}

/// Checks a server URL (`http://` or `https://`) and drops trailing slashes.
pub fn base_url(url: &str) -> Result<String, ClientError> {
    let trimmed = url.trim().trim_end_matches('/');
    let lower = trimmed.to_ascii_lowercase();
    let rest = lower
        .strip_prefix("http://")
        .or_else(|| lower.strip_prefix("https://"));
    match rest {
        Some(rest) if !rest.is_empty() && !rest.starts_with('/') && !rest.contains(['?', '#']) => {
            Ok(trimmed.to_string())
        }
        _ => Err(ClientError::InvalidUrl(url.to_string())),
    }
}

/// The TLS settings of an https client trusting only the certificates of `ca` (PEM): a
/// private CA, as curl's `--cacert` does. Without `--ca`, ureq's own settings trust the public
/// web's roots (webpki-roots).
fn private_ca_config(ca: &Path) -> Result<Arc<rustls::ClientConfig>, ClientError> {
    let fail = |reason: String| ClientError::CaFile {
        path: ca.to_path_buf(),
        reason,
    };
    let pem = std::fs::read(ca).map_err(|e| fail(e.to_string()))?;
    let roots = crate::client_tls::ca_roots(&pem).map_err(fail)?;
    let config = crate::client_tls::client_config(roots).map_err(ClientError::Transport)?;
    Ok(Arc::new(config))
}

/// A success response.
#[derive(Debug, Clone, PartialEq)]
pub struct Response {
    /// HTTP status.
    pub status: u16,
    /// The body as received (empty for 204).
    pub raw: String,
    /// The body parsed, `None` when empty.
    pub json: Option<Value>,
}

impl Response {
    /// The JSON body, or an error saying the server sent none.
    pub fn body(&self) -> Result<&Value, ClientError> {
        self.json.as_ref().ok_or_else(|| ClientError::BadResponse {
            status: self.status,
            reason: "expected a JSON body, got an empty one".into(),
        })
    }
}

/// The API's error body.
#[derive(Deserialize)]
struct ErrorBody {
    error: String,
    #[serde(default)]
    detail: String,
}

/// Maps an error status and its body to [`ClientError::Api`], coping with bodies that are not
/// the API's JSON (a proxy's HTML page, an empty body).
pub fn api_error(status: u16, body: &str) -> ClientError {
    if let Ok(parsed) = serde_json::from_str::<ErrorBody>(body) {
        let detail = if parsed.detail.is_empty() {
            "(no detail)".to_string()
        } else {
            parsed.detail
        };
        return ClientError::Api {
            status,
            code: parsed.error,
            detail,
        };
    }
    let squashed = body.split_whitespace().collect::<Vec<_>>().join(" ");
    let detail = if squashed.is_empty() {
        "(empty response body)".to_string()
    } else if squashed.chars().count() > MAX_SNIPPET {
        let mut s: String = squashed.chars().take(MAX_SNIPPET).collect();
        s.push('…');
        s
    } else {
        squashed
    };
    ClientError::Api {
        status,
        code: format!("http_{status}"),
        detail,
    }
}

/// Parses a success body; an empty body is fine (204), anything else must be JSON.
pub fn parse_success(status: u16, raw: String) -> Result<Response, ClientError> {
    let json = if raw.trim().is_empty() {
        None
    } else {
        Some(
            serde_json::from_str(&raw).map_err(|e| ClientError::BadResponse {
                status,
                reason: format!("body is not JSON ({e})"),
            })?,
        )
    };
    Ok(Response { status, raw, json })
}

/// Reads a body as (lossy) UTF-8, up to [`MAX_BODY`].
fn read_body(response: ureq::Response) -> Result<String, ClientError> {
    let mut bytes = Vec::new();
    response
        .into_reader()
        .take(MAX_BODY)
        .read_to_end(&mut bytes)
        .map_err(|e| ClientError::Transport(format!("reading the response: {e}")))?;
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

/// A management API client for one server and key.
pub struct HttpClient {
    agent: ureq::Agent,
    base: String,
    key: Secret,
}

impl HttpClient {
    /// A client for `url` (checked by [`base_url`]) sending `key` as the bearer token; an
    /// https URL trusts the certificates of `ca` (PEM) when given, else the public roots.
    pub fn new(url: &str, key: Secret, ca: Option<&Path>) -> Result<Self, ClientError> {
        let base = base_url(url)?;
        let mut builder = ureq::AgentBuilder::new()
            .timeout_connect(CONNECT_TIMEOUT)
            .timeout(OVERALL_TIMEOUT);
        if let Some(ca) = ca {
            builder = builder.tls_config(private_ca_config(ca)?);
        }
        Ok(HttpClient {
            agent: builder.build(),
            base,
            key,
        })
    }

    /// The checked base URL.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// Sends one request. Error statuses become [`ClientError::Api`], connection problems
    /// [`ClientError::Transport`].
    pub fn send(&self, request: &ApiRequest) -> Result<Response, ClientError> {
        let url = request.url(&self.base);
        let call = self
            .agent
            .request(request.method.as_str(), &url)
            .set("Authorization", &format!("Bearer {}", self.key.expose()))
            .set("Accept", "application/json");
        let result = match &request.body {
            Some(body) => call.send_json(body),
            None => call.call(),
        };
        match result {
            Ok(response) => {
                let status = response.status();
                parse_success(status, read_body(response)?)
            }
            Err(ureq::Error::Status(status, response)) => {
                Err(api_error(status, &read_body(response)?))
            }
            // ureq's transport errors name the URL and the cause, never request headers.
            Err(ureq::Error::Transport(t)) => Err(ClientError::Transport(t.to_string())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn urls_encode_segments_and_query() {
        let req = ApiRequest::get(&["v1", "sessions", "dev/1 ?x"])
            .with_query("state", Some("active"))
            .with_query("limit", None::<u32>)
            .with_query("cursor", Some("a&b=c"));
        assert_eq!(
            req.url("http://h:1"),
            "http://h:1/v1/sessions/dev%2F1%20%3Fx?state=active&cursor=a%26b%3Dc"
        );
        assert_eq!(req.method, Method::Get);
        assert_eq!(req.body, None);
    }

    #[test]
    fn bodies_and_methods() {
        let req = ApiRequest::post(&["v1", "users"], json!({"username": "u"}));
        assert_eq!(
            (req.method.as_str(), req.path.as_str()),
            ("POST", "/v1/users")
        );
        assert_eq!(req.body, Some(json!({"username": "u"})));
        let req = ApiRequest::delete(&["v1", "keys", "key_1"]);
        assert_eq!(req.url("http://h/prefix"), "http://h/prefix/v1/keys/key_1");
    }

    #[test]
    fn base_urls() {
        assert_eq!(base_url("http://h:8080/").unwrap(), "http://h:8080");
        assert_eq!(base_url(" HTTP://h ").unwrap(), "HTTP://h");
        assert_eq!(base_url("https://h:8443/").unwrap(), "https://h:8443");
        for bad in [
            "h:8080",
            "http://",
            "https://",
            "ftp://h",
            "http:///x",
            "http://h?x=1",
            "https://h#x",
        ] {
            assert!(
                matches!(base_url(bad), Err(ClientError::InvalidUrl(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn error_bodies() {
        let err = api_error(404, r#"{"error":"not_found","detail":"no user named x"}"#);
        assert_eq!(err.to_string(), "not_found: no user named x (HTTP 404)");
        let err = api_error(502, "<html>\n<body>Bad   gateway</body></html>");
        assert_eq!(
            err.to_string(),
            "http_502: <html> <body>Bad gateway</body></html> (HTTP 502)"
        );
        let err = api_error(500, "");
        assert_eq!(
            err.to_string(),
            "http_500: (empty response body) (HTTP 500)"
        );
        let long = "x".repeat(1000);
        let err = api_error(500, &long);
        assert_eq!(err.exit_code(), 1);
        assert!(err.to_string().len() < 300, "{err}");
    }

    #[test]
    fn success_bodies() {
        let r = parse_success(204, String::new()).unwrap();
        assert_eq!(r.json, None);
        assert!(r.body().is_err());
        let r = parse_success(200, r#"{"a":1}"#.into()).unwrap();
        assert_eq!(r.body().unwrap(), &json!({"a": 1}));
        let err = parse_success(200, "<html>".into()).unwrap_err();
        assert_eq!(err.exit_code(), 1);
    }

    #[test]
    fn a_ca_file_without_certificates_is_refused_by_name() {
        let dir = std::env::temp_dir().join(format!("ringmq-ca-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let empty = dir.join("empty.pem");
        std::fs::write(&empty, "not a certificate\n").unwrap();
        let key = Secret::new("sk_x");
        for path in [empty.clone(), dir.join("missing.pem")] {
            let err = HttpClient::new("https://h", key.clone(), Some(&path))
                .err()
                .expect("refused");
            assert!(matches!(err, ClientError::CaFile { .. }), "{err}");
            assert!(
                err.to_string().contains(&path.display().to_string()),
                "{err}"
            );
        }
        std::fs::remove_dir_all(&dir).ok();
    }
}
