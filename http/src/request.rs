//! Request heads: the request line and headers, parsed with `httparse` under size limits.

use crate::error::HttpError;

/// Bounds on what one request may make the server buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Most bytes in a request head (request line, headers, blank line).
    pub head_bytes_max: usize,
    /// Most headers in a request head.
    pub headers_count_max: usize,
    /// Most bytes in a decoded request body.
    pub body_bytes_max: usize,
}

impl Default for Limits {
    /// 16 KiB heads and 64 headers fit every browser and curl request; a 1 MiB body holds a
    /// 256 KiB payload even when base64 and JSON inflate it.
    fn default() -> Self {
        Limits {
            head_bytes_max: 16 * 1024,
            headers_count_max: 64,
            body_bytes_max: 1024 * 1024,
        }
    }
}

/// The request method.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Method {
    /// GET
    Get,
    /// HEAD
    Head,
    /// POST
    Post,
    /// PUT
    Put,
    /// PATCH
    Patch,
    /// DELETE
    Delete,
    /// OPTIONS
    Options,
    /// Any other syntactically valid method token (methods are case-sensitive).
    Other(String),
}

impl Method {
    /// Maps a method token to a `Method`; unknown tokens become `Other`.
    pub fn from_token(token: &str) -> Method {
        match token {
            "GET" => Method::Get,
            "HEAD" => Method::Head,
            "POST" => Method::Post,
            "PUT" => Method::Put,
            "PATCH" => Method::Patch,
            "DELETE" => Method::Delete,
            "OPTIONS" => Method::Options,
            other => Method::Other(other.to_string()),
        }
    }

    /// The method token as sent on the wire.
    pub fn as_str(&self) -> &str {
        match self {
            Method::Get => "GET",
            Method::Head => "HEAD",
            Method::Post => "POST",
            Method::Put => "PUT",
            Method::Patch => "PATCH",
            Method::Delete => "DELETE",
            Method::Options => "OPTIONS",
            Method::Other(token) => token,
        }
    }
}

/// A parsed request head, with the framing and connection facts the server acts on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestHead {
    /// The request method.
    pub method: Method,
    /// The path of the request target, without the query (`*` for `OPTIONS *`).
    pub path: String,
    /// The query string after `?`, without the `?`.
    pub query: Option<String>,
    /// Headers in order, names lowercased (HTTP names are case-insensitive), values as sent.
    pub headers: Vec<(String, String)>,
    /// The body length when framed by Content-Length.
    pub content_length: Option<u64>,
    /// The body is framed by `Transfer-Encoding: chunked`.
    pub chunked: bool,
    /// The connection stays open after the response (HTTP/1.1 default; `Connection: close`).
    pub keep_alive: bool,
    /// The client waits for `100 Continue` before sending the body.
    pub expect_continue: bool,
    /// 0 for HTTP/1.0, 1 for HTTP/1.1.
    pub version_minor: u8,
}

impl RequestHead {
    /// The first value of a header, matched case-insensitively.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(header, _)| header.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_str())
    }

    /// Whether the request carries a body (Content-Length above zero, or chunked).
    pub fn has_body(&self) -> bool {
        self.chunked || self.content_length.is_some_and(|length| length > 0)
    }
}

/// Parses a request head from the start of `buf`.
///
/// Ok(None) when incomplete; Ok(Some((head, consumed))) when a full head is parsed; errors for
/// malformed or oversized heads (HeadTooLarge once the buffer exceeds head_bytes_max without a
/// complete head). The bytes after `consumed` are the body or the next pipelined request.
pub fn parse_head(buf: &[u8], limits: &Limits) -> Result<Option<(RequestHead, usize)>, HttpError> {
    // Parse at most head_bytes_max bytes, so the work per call is bounded too.
    let window = &buf[..buf.len().min(limits.head_bytes_max)];
    let mut headers = vec![httparse::EMPTY_HEADER; limits.headers_count_max];
    let mut request = httparse::Request::new(&mut headers);
    let consumed = match request.parse(window) {
        Ok(httparse::Status::Complete(consumed)) => consumed,
        Ok(httparse::Status::Partial) => {
            if buf.len() >= limits.head_bytes_max {
                return Err(HttpError::HeadTooLarge {
                    limit: limits.head_bytes_max,
                });
            }
            return Ok(None);
        }
        Err(error) => return Err(map_parse_error(error, limits)),
    };

    let (Some(method), Some(target), Some(version_minor)) =
        (request.method, request.path, request.version)
    else {
        // httparse fills all three on Complete; treat anything else as malformed, not a panic.
        return Err(HttpError::Malformed("incomplete request line"));
    };
    if version_minor > 1 {
        return Err(HttpError::UnsupportedVersion);
    }
    let (path, query) = split_target(method, target)?;

    let mut head = RequestHead {
        method: Method::from_token(method),
        path,
        query,
        headers: Vec::with_capacity(request.headers.len()),
        content_length: None,
        chunked: false,
        keep_alive: false,
        expect_continue: false,
        version_minor,
    };
    let mut transfer_encoding_seen = false;
    let mut close_requested = false;
    let mut keep_alive_requested = false;
    for header in request.headers.iter() {
        let value = std::str::from_utf8(header.value)
            .map_err(|_| HttpError::Malformed("header value is not UTF-8"))?;
        let name = header.name.to_ascii_lowercase();
        match name.as_str() {
            "content-length" => {
                let length = parse_content_length(value)?;
                // Repeated Content-Length headers are only tolerable when they agree.
                if head.content_length.is_some_and(|seen| seen != length) {
                    return Err(HttpError::InvalidFraming(
                        "conflicting Content-Length headers",
                    ));
                }
                head.content_length = Some(length);
            }
            "transfer-encoding" => {
                transfer_encoding_seen = true;
                for coding in value.split(',').map(str::trim) {
                    if !coding.eq_ignore_ascii_case("chunked") {
                        return Err(HttpError::UnsupportedTransferCoding);
                    }
                    if head.chunked {
                        return Err(HttpError::InvalidFraming("chunked applied more than once"));
                    }
                    head.chunked = true;
                }
            }
            "connection" => {
                for option in value.split(',').map(str::trim) {
                    close_requested |= option.eq_ignore_ascii_case("close");
                    keep_alive_requested |= option.eq_ignore_ascii_case("keep-alive");
                }
            }
            "expect" => {
                // 100-continue is defined for HTTP/1.1 only; a 1.0 client sends the body anyway.
                head.expect_continue =
                    version_minor == 1 && value.trim().eq_ignore_ascii_case("100-continue");
            }
            _ => {}
        }
        head.headers.push((name, value.to_string()));
    }
    if transfer_encoding_seen {
        // Both framings at once is the classic request-smuggling vector (RFC 9112 6.1), and
        // HTTP/1.0 has no Transfer-Encoding: refuse rather than guess.
        if head.content_length.is_some() {
            return Err(HttpError::InvalidFraming(
                "both Content-Length and Transfer-Encoding",
            ));
        }
        if version_minor == 0 {
            return Err(HttpError::InvalidFraming("Transfer-Encoding in HTTP/1.0"));
        }
        if !head.chunked {
            return Err(HttpError::InvalidFraming("empty Transfer-Encoding"));
        }
    }
    // HTTP/1.1 connections persist unless closed; HTTP/1.0 ones only when asked. `close` wins
    // over `keep-alive` whatever the header order.
    head.keep_alive = !close_requested && (version_minor == 1 || keep_alive_requested);
    Ok(Some((head, consumed)))
}

/// Maps an httparse error to ours.
fn map_parse_error(error: httparse::Error, limits: &Limits) -> HttpError {
    match error {
        httparse::Error::TooManyHeaders => HttpError::TooManyHeaders {
            limit: limits.headers_count_max,
        },
        httparse::Error::Version => HttpError::UnsupportedVersion,
        httparse::Error::Token => HttpError::Malformed("invalid token in request line"),
        httparse::Error::HeaderName => HttpError::Malformed("invalid header name"),
        httparse::Error::HeaderValue => HttpError::Malformed("invalid header value"),
        httparse::Error::NewLine => HttpError::Malformed("invalid line ending"),
        httparse::Error::Status => HttpError::Malformed("invalid status"),
    }
}

/// Parses a Content-Length value: one decimal number, no sign, no list.
fn parse_content_length(value: &str) -> Result<u64, HttpError> {
    let value = value.trim();
    if value.is_empty() || !value.bytes().all(|byte| byte.is_ascii_digit()) {
        return Err(HttpError::InvalidFraming("Content-Length is not a number"));
    }
    value
        .parse::<u64>()
        .map_err(|_| HttpError::InvalidFraming("Content-Length overflows"))
}

/// Splits a request target into path and query, accepting origin, absolute and asterisk forms.
fn split_target(method: &str, target: &str) -> Result<(String, Option<String>), HttpError> {
    if target == "*" {
        if method != "OPTIONS" {
            return Err(HttpError::Malformed("`*` target is only valid for OPTIONS"));
        }
        return Ok(("*".to_string(), None));
    }
    // Absolute form (sent to proxies, allowed to servers): keep only what follows the authority.
    let origin_form = if let Some(rest) = target
        .strip_prefix("http://")
        .or_else(|| target.strip_prefix("https://"))
    {
        match rest.find(['/', '?']) {
            Some(start) if rest[start..].starts_with('/') => &rest[start..],
            Some(start) => return Ok(("/".to_string(), Some(rest[start + 1..].to_string()))),
            None => "/",
        }
    } else {
        target
    };
    if !origin_form.starts_with('/') {
        return Err(HttpError::Malformed("request target must start with `/`"));
    }
    Ok(match origin_form.split_once('?') {
        Some((path, query)) => (path.to_string(), Some(query.to_string())),
        None => (origin_form.to_string(), None),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Parses a complete head with default limits.
    fn parse(text: &str) -> Result<Option<(RequestHead, usize)>, HttpError> {
        parse_head(text.as_bytes(), &Limits::default())
    }

    /// Parses a head that must be complete and valid.
    fn parse_ok(text: &str) -> RequestHead {
        let (head, consumed) = parse(text).unwrap().unwrap();
        assert_eq!(consumed, text.len());
        head
    }

    #[test]
    fn simple_get() {
        let head = parse_ok("GET /healthz?verbose=1 HTTP/1.1\r\nHost: x\r\nX-Id: A\r\n\r\n");
        assert_eq!(head.method, Method::Get);
        assert_eq!(head.path, "/healthz");
        assert_eq!(head.query.as_deref(), Some("verbose=1"));
        assert_eq!(head.header("HOST"), Some("x"));
        assert_eq!(head.headers[1], ("x-id".to_string(), "A".to_string()));
        assert!(head.keep_alive);
        assert!(!head.has_body());
        assert_eq!(head.version_minor, 1);
    }

    #[test]
    fn pipelined_requests_in_one_buffer() {
        let first = "GET /a HTTP/1.1\r\nHost: x\r\n\r\n";
        let second = "POST /b HTTP/1.1\r\nContent-Length: 3\r\n\r\n";
        let third = "HEAD /c HTTP/1.1\r\n\r\n";
        let all = format!("{first}{second}abc{third}");
        let bytes = all.as_bytes();
        let limits = Limits::default();

        let (head, consumed) = parse_head(bytes, &limits).unwrap().unwrap();
        assert_eq!((head.method, head.path.as_str()), (Method::Get, "/a"));
        assert_eq!(consumed, first.len());

        let rest = &bytes[consumed..];
        let (head, consumed) = parse_head(rest, &limits).unwrap().unwrap();
        assert_eq!((head.method, head.content_length), (Method::Post, Some(3)));
        let rest = &rest[consumed + 3..];

        let (head, consumed) = parse_head(rest, &limits).unwrap().unwrap();
        assert_eq!((head.method, head.path.as_str()), (Method::Head, "/c"));
        assert_eq!(consumed, rest.len());
    }

    #[test]
    fn byte_at_a_time_head() {
        let text = b"PUT /x HTTP/1.1\r\nHost: h\r\nContent-Length: 0\r\n\r\nNEXT";
        let head_len = text.len() - 4;
        let limits = Limits::default();
        for end in 0..head_len {
            assert_eq!(parse_head(&text[..end], &limits), Ok(None), "prefix {end}");
        }
        let (head, consumed) = parse_head(&text[..head_len], &limits).unwrap().unwrap();
        assert_eq!(consumed, head_len);
        assert_eq!(head.method, Method::Put);
        assert_eq!(head.content_length, Some(0));
        let (_, consumed) = parse_head(text, &limits).unwrap().unwrap();
        assert_eq!(consumed, head_len);
    }

    #[test]
    fn oversized_head_is_431() {
        let limits = Limits {
            head_bytes_max: 64,
            ..Limits::default()
        };
        let long = format!("GET /{} HTTP/1.1\r\n", "a".repeat(100));
        let error = parse_head(long.as_bytes(), &limits).unwrap_err();
        assert_eq!(error, HttpError::HeadTooLarge { limit: 64 });
        assert_eq!(error.status(), 431);

        // Incomplete and below the limit: wait for more.
        assert_eq!(parse_head(&long.as_bytes()[..63], &limits), Ok(None));
        // Exactly at the limit without a complete head: it can only grow, so refuse now.
        assert!(parse_head(&long.as_bytes()[..64], &limits).is_err());

        // A complete head that fits is fine even when the buffer holds more after it.
        let fits = format!("GET / HTTP/1.1\r\n\r\n{}", "b".repeat(200));
        let (_, consumed) = parse_head(fits.as_bytes(), &limits).unwrap().unwrap();
        assert_eq!(consumed, 18);
    }

    #[test]
    fn too_many_headers_is_431() {
        let limits = Limits {
            headers_count_max: 2,
            ..Limits::default()
        };
        let text = "GET / HTTP/1.1\r\nA: 1\r\nB: 2\r\nC: 3\r\n\r\n";
        let error = parse_head(text.as_bytes(), &limits).unwrap_err();
        assert_eq!(error, HttpError::TooManyHeaders { limit: 2 });
        assert_eq!(error.status(), 431);
    }

    #[test]
    fn garbage_and_bad_methods_are_400() {
        for text in [
            &b"G@T / HTTP/1.1\r\n\r\n"[..],
            b"GET\r\n\r\n",
            b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",
            b"GET / HTTP/1.1\r\nBad Header: x\r\n\r\n",
            b"GET / HTTP/1.1\r\nX: a\x01b\r\n\r\n",
            b"GET nopath HTTP/1.1\r\n\r\n",
            b"GET * HTTP/1.1\r\n\r\n",
            b"GET / HTTP/1.1\r\nX: \xff\r\n\r\n",
        ] {
            let error = parse_head(text, &Limits::default()).expect_err(&format!("{text:?}"));
            assert_eq!(error.status(), 400, "{text:?}: {error}");
        }
    }

    #[test]
    fn other_methods_and_targets() {
        let head = parse_ok("BREW /pot HTTP/1.1\r\n\r\n");
        assert_eq!(head.method, Method::Other("BREW".into()));
        assert_eq!(head.method.as_str(), "BREW");
        let head = parse_ok("OPTIONS * HTTP/1.1\r\n\r\n");
        assert_eq!((head.method, head.path.as_str()), (Method::Options, "*"));
        let head = parse_ok("GET http://example.com:8080/v1/x?y=1 HTTP/1.1\r\n\r\n");
        assert_eq!(head.path, "/v1/x");
        assert_eq!(head.query.as_deref(), Some("y=1"));
        let head = parse_ok("GET http://example.com HTTP/1.1\r\n\r\n");
        assert_eq!(head.path, "/");
        let head = parse_ok("GET http://example.com?q HTTP/1.1\r\n\r\n");
        assert_eq!(
            (head.path.as_str(), head.query.as_deref()),
            ("/", Some("q"))
        );
    }

    #[test]
    fn unsupported_version_is_505() {
        let error = parse("GET / HTTP/2.0\r\n\r\n").unwrap_err();
        assert_eq!(error.status(), 505);
    }

    #[test]
    fn connection_close_and_http10_default() {
        let head = parse_ok("GET / HTTP/1.1\r\nConnection: close\r\n\r\n");
        assert!(!head.keep_alive);
        let head = parse_ok("GET / HTTP/1.1\r\nConnection: Keep-Alive, CLOSE\r\n\r\n");
        assert!(!head.keep_alive);
        let head = parse_ok("GET / HTTP/1.1\r\nConnection: Upgrade\r\n\r\n");
        assert!(head.keep_alive);

        let head = parse_ok("GET / HTTP/1.0\r\n\r\n");
        assert_eq!(head.version_minor, 0);
        assert!(!head.keep_alive);
        let head = parse_ok("GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
        assert!(head.keep_alive);
        let head =
            parse_ok("GET / HTTP/1.0\r\nConnection: close\r\nConnection: keep-alive\r\n\r\n");
        assert!(!head.keep_alive);
    }

    #[test]
    fn expect_continue() {
        let head = parse_ok(
            "POST /v1/publish HTTP/1.1\r\nContent-Length: 10\r\nExpect: 100-Continue\r\n\r\n",
        );
        assert!(head.expect_continue);
        assert!(head.has_body());
        let head = parse_ok("POST / HTTP/1.0\r\nContent-Length: 1\r\nExpect: 100-continue\r\n\r\n");
        assert!(!head.expect_continue);
        let head = parse_ok("POST / HTTP/1.1\r\nContent-Length: 1\r\n\r\n");
        assert!(!head.expect_continue);
    }

    #[test]
    fn framing_headers() {
        let head = parse_ok("POST / HTTP/1.1\r\nTransfer-Encoding: Chunked\r\n\r\n");
        assert!(head.chunked);
        assert_eq!(head.content_length, None);
        let head = parse_ok("POST / HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\n");
        assert_eq!(head.content_length, Some(5));

        for (text, status) in [
            (
                "POST / HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n",
                400,
            ),
            ("POST / HTTP/1.1\r\nContent-Length: -1\r\n\r\n", 400),
            ("POST / HTTP/1.1\r\nContent-Length: +1\r\n\r\n", 400),
            ("POST / HTTP/1.1\r\nContent-Length: 1, 1\r\n\r\n", 400),
            (
                "POST / HTTP/1.1\r\nContent-Length: 99999999999999999999999\r\n\r\n",
                400,
            ),
            (
                "POST / HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
                400,
            ),
            (
                "POST / HTTP/1.1\r\nTransfer-Encoding: chunked, chunked\r\n\r\n",
                400,
            ),
            (
                "POST / HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
                501,
            ),
            ("POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n", 501),
            ("POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n", 400),
        ] {
            let error = parse(text).expect_err(text);
            assert_eq!(error.status(), status, "{text}: {error}");
        }
    }
}
