//! Browser origins (RFC 6454) of WebSocket upgrades: which web pages may open `/mqtt` and
//! `/v1/mqtt/stream`, so a page on another site cannot ride the browser's network position
//! (cross-site WebSocket hijacking).
//!
//! Only browsers send `Origin`, and a page cannot forge it nor the `Host` header. The policy:
//! - no `Origin`: not a browser (a device, a server), [`OriginVerdict::NotBrowser`];
//! - the broker's own origin, [`OriginVerdict::Own`]: one of its listener addresses
//!   (`http://127.0.0.1:8080`), or the origin the request's `Host` names when that host is an IP
//!   literal or `localhost` (a DNS name could be rebound to the broker's address by an attacker's
//!   page) and the scheme is the connection's (`http` over plain TCP, `https` over TLS);
//! - an origin of `allowed_origins`, or the origin the `Host` names by a DNS name:
//!   [`OriginVerdict::Foreign`], accepted, but the page must log in with credentials of its own
//!   (nothing the browser holds, no anonymous access);
//! - anything else, `null` included: [`OriginRefusal`] (403).
//!
//! Schemes and hosts compare case-insensitively, default ports (80, 443) are made explicit.

use std::net::{IpAddr, SocketAddr};

use crate::request::RequestHead;
use crate::response::Response;

/// A tuple origin: scheme, host and port, normalized for comparison.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Origin {
    /// `https` (true) or `http` (false).
    pub secure: bool,
    /// The host, lowercase; an IPv6 literal without its brackets.
    pub host: String,
    /// The port, the scheme's default made explicit.
    pub port: u16,
}

/// Why an origin or host text is not one.
#[derive(thiserror::Error, Debug, Clone, PartialEq, Eq)]
pub enum OriginError {
    /// Not `http://` or `https://` (an opaque origin such as `null`, a file or extension page).
    #[error("not an http or https origin")]
    Scheme,
    /// The host part is empty or holds characters no host has.
    #[error("invalid host")]
    Host,
    /// The port is not a number from 1 to 65535.
    #[error("invalid port")]
    Port,
    /// A path, query, fragment or user info follows the authority.
    #[error("an origin has no path, query or user info")]
    Extra,
}

impl Origin {
    /// Parses `scheme://host[:port]` (an `Origin` header value or a configured origin; one
    /// trailing `/` is tolerated in configuration). The URL itself is read by the `url` crate
    /// (WHATWG parsing, as browsers do: lowercase and IDNA hosts, IPv4 and IPv6 literals,
    /// default ports); what is left here is what makes a URL an origin.
    pub fn parse(text: &str) -> Result<Origin, OriginError> {
        let text = text.trim();
        let secure = match text.split_once("://") {
            Some((scheme, _)) if scheme.eq_ignore_ascii_case("http") => false,
            Some((scheme, _)) if scheme.eq_ignore_ascii_case("https") => true,
            _ => return Err(OriginError::Scheme),
        };
        let url = url::Url::parse(text).map_err(|error| match error {
            url::ParseError::InvalidPort => OriginError::Port,
            _ => OriginError::Host,
        })?;
        if !url.username().is_empty()
            || url.password().is_some()
            || url.path() != "/"
            || url.query().is_some()
            || url.fragment().is_some()
        {
            return Err(OriginError::Extra);
        }
        let host = match url.host() {
            Some(url::Host::Domain(name)) => name.to_owned(),
            Some(url::Host::Ipv4(address)) => address.to_string(),
            Some(url::Host::Ipv6(address)) => address.to_string(),
            None => return Err(OriginError::Host),
        };
        match url.port_or_known_default() {
            Some(port) if port != 0 => Ok(Origin { secure, host, port }),
            _ => Err(OriginError::Port),
        }
    }

    /// The host as an IP address, when it is a literal.
    fn ip(&self) -> Option<IpAddr> {
        self.host.parse().ok()
    }

    /// Whether `host` names the same host (IP literals compare as addresses).
    fn same_host(&self, host: &str) -> bool {
        match (self.ip(), host.parse::<IpAddr>()) {
            (Some(mine), Ok(theirs)) => mine == theirs,
            _ => self.host == host,
        }
    }

    /// Whether the host cannot be rebound by DNS: an IP literal, or `localhost` (which browsers
    /// resolve to the loopback address themselves).
    fn pinned(&self) -> bool {
        self.ip().is_some() || self.host == "localhost"
    }
}

/// Who opens a WebSocket, as far as its `Origin` tells.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OriginVerdict {
    /// No `Origin`: not a browser page. Nothing changes.
    NotBrowser,
    /// A page of the broker's own origin. Nothing changes.
    Own,
    /// A page of another origin that may connect: it must log in with credentials of its own
    /// (no anonymous access, no login by the browser's client certificate).
    Foreign,
}

/// Why an upgrade's origin was refused (answered 403 before the upgrade).
#[derive(thiserror::Error, Debug, Clone, PartialEq, Eq)]
pub enum OriginRefusal {
    /// The `Origin` is opaque (`null`) or not an http(s) origin.
    #[error("the Origin {0:?} is not an http(s) origin; browser pages must be served from an allowed origin")]
    Opaque(String),
    /// More than one `Origin` header.
    #[error("more than one Origin header")]
    Ambiguous,
    /// A well-formed origin that is neither the broker's nor allowed.
    #[error("pages of {0} may not open this WebSocket (not in [http] allowed_origins)")]
    NotAllowed(String),
}

impl OriginRefusal {
    /// The 403 response, in the API's JSON error shape.
    pub fn response(&self) -> Response {
        Response::error(403, "forbidden_origin", &self.to_string())
    }
}

/// The origins whose pages may open the broker's WebSockets.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct OriginPolicy {
    allowed: Vec<Origin>,
    own: Vec<Origin>,
}

impl OriginPolicy {
    /// The policy for configured `allowed` origins (entries that do not parse are skipped: the
    /// configuration is validated at load) and the broker's HTTP listeners, `(tls, address)`
    /// (an unspecified IP or port 0 names no single origin and is skipped).
    pub fn new<'a>(
        allowed: impl IntoIterator<Item = &'a str>,
        listeners: impl IntoIterator<Item = (bool, SocketAddr)>,
    ) -> OriginPolicy {
        OriginPolicy {
            allowed: allowed
                .into_iter()
                .filter_map(|text| Origin::parse(text).ok())
                .collect(),
            own: listeners
                .into_iter()
                .filter(|(_, addr)| !addr.ip().is_unspecified() && addr.port() != 0)
                .map(|(secure, addr)| Origin {
                    secure,
                    host: addr.ip().to_string(),
                    port: addr.port(),
                })
                .collect(),
        }
    }

    /// Judges an upgrade request that arrived over TLS (`tls`) or plain TCP.
    pub fn check(&self, head: &RequestHead, tls: bool) -> Result<OriginVerdict, OriginRefusal> {
        let mut values = head
            .headers
            .iter()
            .filter(|(name, _)| name.eq_ignore_ascii_case("origin"))
            .map(|(_, value)| value.as_str());
        let Some(text) = values.next() else {
            return Ok(OriginVerdict::NotBrowser);
        };
        if values.next().is_some() {
            return Err(OriginRefusal::Ambiguous);
        }
        let origin =
            Origin::parse(text).map_err(|_| OriginRefusal::Opaque(clip(text).to_owned()))?;
        if self.own.iter().any(|own| {
            own.secure == origin.secure && own.port == origin.port && own.same_host(&origin.host)
        }) {
            return Ok(OriginVerdict::Own);
        }
        // The page's origin is the authority the browser connected to: the broker itself (or a
        // proxy in front of it that keeps the Host).
        let scheme = if tls { "https" } else { "http" };
        let host = head
            .header("host")
            .and_then(|host| Origin::parse(&format!("{scheme}://{}", host.trim())).ok());
        if let Some(host) = host {
            if origin.secure == tls && origin.port == host.port && origin.same_host(&host.host) {
                return Ok(if origin.pinned() {
                    OriginVerdict::Own
                } else {
                    OriginVerdict::Foreign
                });
            }
        }
        if self.allowed.contains(&origin) {
            return Ok(OriginVerdict::Foreign);
        }
        Err(OriginRefusal::NotAllowed(clip(text).to_owned()))
    }
}

/// At most 100 bytes of a header value, for an error message.
fn clip(text: &str) -> &str {
    let mut end = text.len().min(100);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::request::{parse_head, Limits};

    fn head(headers: &[(&str, &str)]) -> RequestHead {
        let mut text = String::from("GET /mqtt HTTP/1.1\r\n");
        for (name, value) in headers {
            text.push_str(&format!("{name}: {value}\r\n"));
        }
        text.push_str("\r\n");
        parse_head(text.as_bytes(), &Limits::default())
            .unwrap()
            .unwrap()
            .0
    }

    fn policy(allowed: &[&str]) -> OriginPolicy {
        OriginPolicy::new(
            allowed.iter().copied(),
            [
                (false, "127.0.0.1:8080".parse().unwrap()),
                (true, "[::1]:8443".parse().unwrap()),
                (false, "0.0.0.0:9000".parse().unwrap()),
            ],
        )
    }

    #[test]
    fn parses_and_normalizes_origins() {
        let origin = Origin::parse("HTTPS://Console.Example.COM").unwrap();
        assert_eq!(
            origin,
            Origin {
                secure: true,
                host: "console.example.com".into(),
                port: 443
            }
        );
        assert_eq!(
            Origin::parse("http://example.com:80/").unwrap(),
            Origin::parse("http://EXAMPLE.com").unwrap()
        );
        assert_eq!(Origin::parse("http://[::1]:8080").unwrap().host, "::1");
        for bad in [
            "null",
            "",
            "file://",
            "chrome-extension://abc",
            "http://",
            "http://a b",
            "http://x:0",
            "http://x:99999",
            "http://x:-1",
            "http://x/path",
            "http://u@x",
            "http://[zz]:80",
            "http://[::1]x",
        ] {
            assert!(Origin::parse(bad).is_err(), "{bad:?}");
        }
    }

    proptest::proptest! {
        /// Hostile `Origin` values never panic, and what parses has one canonical form.
        #[test]
        fn any_text_parses_or_is_refused(text in "\\PC{0,40}", scheme in "(http|https|HTTP|ws|null)") {
            for candidate in [text.clone(), format!("{scheme}://{text}")] {
                if let Ok(origin) = Origin::parse(&candidate) {
                    let host = if origin.host.contains(':') {
                        format!("[{}]", origin.host)
                    } else {
                        origin.host.clone()
                    };
                    let scheme = if origin.secure { "https" } else { "http" };
                    let canonical = format!("{scheme}://{host}:{}", origin.port);
                    proptest::prop_assert_eq!(Origin::parse(&canonical), Ok(origin));
                }
            }
        }
    }

    #[test]
    fn no_origin_is_not_a_browser() {
        let verdict = policy(&[]).check(&head(&[("Host", "127.0.0.1:8080")]), false);
        assert_eq!(verdict, Ok(OriginVerdict::NotBrowser));
    }

    #[test]
    fn the_listener_address_and_the_host_by_ip_are_own() {
        let policy = policy(&[]);
        for (origin, host, tls) in [
            ("http://127.0.0.1:8080", "localhost:8080", false),
            ("https://[::1]:8443", "[::1]:8443", true),
            ("http://127.0.0.1:5555", "127.0.0.1:5555", false),
            ("http://LOCALHOST:8080", "localhost:8080", false),
            ("http://10.0.0.5", "10.0.0.5", false),
            ("https://10.0.0.5", "10.0.0.5:443", true),
        ] {
            let head = head(&[("Host", host), ("Origin", origin)]);
            assert_eq!(
                policy.check(&head, tls),
                Ok(OriginVerdict::Own),
                "{origin} {host}"
            );
        }
    }

    #[test]
    fn the_host_by_name_and_allowed_origins_are_foreign() {
        let policy = policy(&["https://console.example.com", "http://app.example:3000"]);
        for (origin, host, tls) in [
            ("http://broker.example:8080", "BROKER.example:8080", false),
            ("https://console.example.com:443", "127.0.0.1:8080", false),
            ("http://app.example:3000", "127.0.0.1:8080", false),
        ] {
            let head = head(&[("Host", host), ("Origin", origin)]);
            assert_eq!(
                policy.check(&head, tls),
                Ok(OriginVerdict::Foreign),
                "{origin} {host}"
            );
        }
    }

    #[test]
    fn other_origins_are_refused() {
        let policy = policy(&["https://console.example.com"]);
        for (origin, host, tls) in [
            ("https://evil.example", "127.0.0.1:8080", false),
            ("null", "127.0.0.1:8080", false),
            ("http://console.example.com", "127.0.0.1:8080", false),
            ("https://console.example.com:8443", "127.0.0.1:8080", false),
            // Same host, another port or scheme: another origin.
            ("http://127.0.0.1:3000", "127.0.0.1:8080", false),
            ("https://127.0.0.1:8080", "127.0.0.1:8080", false),
            ("http://127.0.0.1:8443", "127.0.0.1:8443", true),
            // The unspecified listener address names no origin.
            ("http://0.0.0.0:9000", "127.0.0.1:9000", false),
            ("http://10.0.0.9:8080", "10.0.0.5:8080", false),
        ] {
            let head = head(&[("Host", host), ("Origin", origin)]);
            let verdict = policy.check(&head, tls);
            assert!(verdict.is_err(), "{origin} {host}: {verdict:?}");
            assert_eq!(verdict.unwrap_err().response().status, 403);
        }
        let twice = head(&[
            ("Host", "127.0.0.1:8080"),
            ("Origin", "http://127.0.0.1:8080"),
            ("Origin", "https://evil.example"),
        ]);
        assert_eq!(policy.check(&twice, false), Err(OriginRefusal::Ambiguous));
        let no_host = head(&[("Origin", "http://127.0.0.1:5555")]);
        assert!(policy.check(&no_host, false).is_err());
    }
}
