//! Responses: a status, headers and a body, encoded as HTTP/1.1 into a write buffer.

use std::borrow::Cow;
use std::fmt::Write as _;

use bytes::{BufMut, Bytes, BytesMut};

use crate::error::HttpError;

/// The interim response sent when a client asked `Expect: 100-continue` and the body is wanted.
pub const CONTINUE_100: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";

/// An HTTP response; the encoder adds Content-Length and Connection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Response {
    /// The status code.
    pub status: u16,
    /// Headers other than Content-Length and Connection, in order.
    pub headers: Vec<(Cow<'static, str>, String)>,
    /// The body (a refcounted buffer, so a shared payload is not copied).
    pub body: Bytes,
}

impl Response {
    /// A response with no headers and an empty body.
    pub fn new(status: u16) -> Response {
        Response {
            status,
            headers: Vec::new(),
            body: Bytes::new(),
        }
    }

    /// A `text/plain; charset=utf-8` response.
    pub fn text(status: u16, body: impl Into<String>) -> Response {
        Response::new(status)
            .with_header("Content-Type", "text/plain; charset=utf-8")
            .with_body(Bytes::from(body.into()))
    }

    /// An `application/json` response; the caller serializes the body.
    pub fn json(status: u16, body: impl Into<Bytes>) -> Response {
        Response::new(status)
            .with_header("Content-Type", "application/json")
            .with_body(body.into())
    }

    /// The API's error shape, `{"error": CODE, "detail": SENTENCE}`, as JSON.
    pub fn error(status: u16, code: &str, detail: &str) -> Response {
        let body = serde_json::json!({ "error": code, "detail": detail });
        Response::json(status, serde_json::to_vec(&body).unwrap_or_default())
    }

    /// The JSON error response for a request that could not be parsed.
    pub fn from_error(error: &HttpError) -> Response {
        Response::error(
            error.status(),
            error_code(error.status()),
            &error.to_string(),
        )
    }

    /// Adds a header.
    pub fn with_header(
        mut self,
        name: impl Into<Cow<'static, str>>,
        value: impl Into<String>,
    ) -> Response {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// Replaces the body.
    pub fn with_body(mut self, body: impl Into<Bytes>) -> Response {
        self.body = body.into();
        self
    }

    /// Appends the status line, headers and body to `buf`.
    pub fn encode(&self, keep_alive: bool, buf: &mut BytesMut) {
        self.encode_head(keep_alive, buf);
        if self.body_allowed() {
            buf.put_slice(&self.body);
        }
    }

    /// Appends the status line and headers only, as the answer to a HEAD request.
    pub fn encode_head(&self, keep_alive: bool, buf: &mut BytesMut) {
        let mut head = String::with_capacity(128);
        // Writing into a String cannot fail, so the fmt::Results below carry no information.
        let _ = write!(
            head,
            "HTTP/1.1 {} {}\r\n",
            self.status,
            reason_phrase(self.status)
        );
        for (name, value) in &self.headers {
            push_header(&mut head, name, value);
        }
        if self.body_allowed() {
            let _ = write!(head, "Content-Length: {}\r\n", self.body.len());
        }
        head.push_str(if keep_alive {
            "Connection: keep-alive\r\n\r\n"
        } else {
            "Connection: close\r\n\r\n"
        });
        buf.put_slice(head.as_bytes());
    }

    /// 1xx, 204 and 304 responses carry neither a body nor a Content-Length (RFC 9110 8.6).
    fn body_allowed(&self) -> bool {
        !(self.status < 200 || self.status == 204 || self.status == 304)
    }
}

/// Appends one header line, replacing CR and LF so a value cannot inject headers.
fn push_header(head: &mut String, name: &str, value: &str) {
    let clean = |text: &str, out: &mut String| {
        out.extend(
            text.chars()
                .map(|c| if c == '\r' || c == '\n' { ' ' } else { c }),
        )
    };
    clean(name, head);
    head.push_str(": ");
    clean(value, head);
    head.push_str("\r\n");
}

/// The standard reason phrase for a status code, or "Unknown".
pub fn reason_phrase(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        101 => "Switching Protocols",
        200 => "OK",
        201 => "Created",
        202 => "Accepted",
        204 => "No Content",
        206 => "Partial Content",
        301 => "Moved Permanently",
        302 => "Found",
        304 => "Not Modified",
        307 => "Temporary Redirect",
        308 => "Permanent Redirect",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        406 => "Not Acceptable",
        408 => "Request Timeout",
        409 => "Conflict",
        410 => "Gone",
        411 => "Length Required",
        413 => "Content Too Large",
        414 => "URI Too Long",
        415 => "Unsupported Media Type",
        417 => "Expectation Failed",
        422 => "Unprocessable Content",
        426 => "Upgrade Required",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        505 => "HTTP Version Not Supported",
        507 => "Insufficient Storage",
        _ => "Unknown",
    }
}

/// The API's error code for an HTTP-layer status (docs/api.md, "Errors").
pub fn error_code(status: u16) -> &'static str {
    match status {
        400 => "bad_request",
        401 => "unauthorized",
        403 => "forbidden",
        404 => "not_found",
        405 => "method_not_allowed",
        408 => "request_timeout",
        413 => "payload_too_large",
        426 => "upgrade_required",
        429 => "rate_limited",
        431 => "headers_too_large",
        503 => "unavailable",
        _ if status >= 500 => "internal",
        _ => "bad_request",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Encodes into a fresh buffer and returns it as text.
    fn encoded(response: &Response, keep_alive: bool) -> String {
        let mut buf = BytesMut::new();
        response.encode(keep_alive, &mut buf);
        String::from_utf8(buf.to_vec()).unwrap()
    }

    #[test]
    fn text_response() {
        let text = encoded(&Response::text(200, "ok\n"), true);
        assert_eq!(
            text,
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain; charset=utf-8\r\n\
Content-Length: 3\r\nConnection: keep-alive\r\n\r\nok\n"
        );
    }

    #[test]
    fn json_response_with_close() {
        let response = Response::json(429, &b"{\"detail\":\"slow down\"}"[..])
            .with_header("Retry-After", "2")
            .with_header(String::from("X-RateLimit-Limit"), "10");
        let text = encoded(&response, false);
        assert!(text.starts_with("HTTP/1.1 429 Too Many Requests\r\n"));
        assert!(text.contains("Content-Type: application/json\r\n"));
        assert!(text.contains("Retry-After: 2\r\nX-RateLimit-Limit: 10\r\n"));
        assert!(text.contains("Content-Length: 22\r\nConnection: close\r\n\r\n{"));
    }

    #[test]
    fn no_body_statuses_and_head() {
        let text = encoded(&Response::new(204), true);
        assert_eq!(
            text,
            "HTTP/1.1 204 No Content\r\nConnection: keep-alive\r\n\r\n"
        );
        let mut buf = BytesMut::new();
        Response::text(200, "hello").encode_head(true, &mut buf);
        let text = String::from_utf8(buf.to_vec()).unwrap();
        assert!(text.ends_with("Content-Length: 5\r\nConnection: keep-alive\r\n\r\n"));
    }

    #[test]
    fn error_responses_and_header_injection() {
        let text = encoded(
            &Response::from_error(&HttpError::HeadTooLarge { limit: 10 }),
            false,
        );
        assert!(text.starts_with("HTTP/1.1 431 Request Header Fields Too Large\r\n"));
        let text = encoded(
            &Response::new(599).with_header("X", "a\r\nSet-Cookie: x"),
            true,
        );
        assert!(text.starts_with("HTTP/1.1 599 Unknown\r\n"));
        assert!(text.contains("X: a  Set-Cookie: x\r\n"));
        assert_eq!(CONTINUE_100, b"HTTP/1.1 100 Continue\r\n\r\n");
    }
}
