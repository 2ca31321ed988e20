//! Routing table, query and path decoding, and input validation of the management API.

use ringmq_router::topic::validate_filter;

/// Largest management request body.
pub const BODY_MAX: usize = 64 * 1024;
/// Largest page.
pub const LIMIT_MAX: usize = 1000;
/// Page size when `limit` is absent.
pub const LIMIT_DEFAULT: usize = 100;
/// Most sets or permissions in one request.
pub const LIST_ITEMS_MAX: usize = 64;
/// Most levels in a rule pattern.
pub const PATTERN_LEVELS_MAX: usize = 32;
/// Longest rule pattern in bytes.
pub const PATTERN_BYTES_MAX: usize = 1024;

/// Every route: path template (`{x}` is one segment) and its methods.
pub const ROUTES: &[(&str, &[&str])] = &[
    ("/v1/openapi.json", &["GET"]),
    ("/v1/users", &["GET", "POST"]),
    ("/v1/users/{username}", &["GET", "PATCH", "DELETE"]),
    ("/v1/acl/sets", &["GET", "POST"]),
    ("/v1/acl/sets/{name}", &["GET", "PATCH", "DELETE"]),
    ("/v1/acl/rules", &["GET", "POST"]),
    ("/v1/acl/rules/{id}", &["GET", "PATCH", "DELETE"]),
    ("/v1/keys", &["GET", "POST"]),
    ("/v1/keys/{id}", &["GET", "PATCH", "DELETE"]),
    ("/v1/sessions", &["GET"]),
    ("/v1/sessions/{client_id}", &["GET", "DELETE"]),
    ("/v1/sessions/{client_id}/disconnect", &["POST"]),
    ("/v1/org", &["GET", "PATCH"]),
    ("/v1/orgs", &["GET", "POST"]),
    ("/v1/orgs/{id}", &["GET", "PATCH", "DELETE"]),
    ("/v1/token-exchange", &["POST"]),
];

/// The route template matching `path` and its decoded parameters; `Err` if a segment is not valid UTF-8 after decoding.
pub fn match_route(path: &str) -> Result<Option<(&'static str, Vec<String>)>, ()> {
    let segments: Vec<&str> = path.split('/').collect();
    for (template, _) in ROUTES {
        let parts: Vec<&str> = template.split('/').collect();
        if parts.len() != segments.len() {
            continue;
        }
        let mut params = Vec::new();
        let mut ok = true;
        for (part, seg) in parts.iter().zip(&segments) {
            if part.starts_with('{') {
                if seg.is_empty() {
                    ok = false;
                    break;
                }
                params.push(percent_decode(seg).ok_or(())?);
            } else if part != seg {
                ok = false;
                break;
            }
        }
        if ok {
            return Ok(Some((template, params)));
        }
    }
    Ok(None)
}

/// Longest client id the sessions API takes (an MQTT string).
pub const CLIENT_ID_BYTES_MAX: usize = 65_535;

/// True when `s` holds a control character (C0, DEL or C1), NUL included.
pub fn has_control(s: &str) -> bool {
    s.chars().any(char::is_control)
}

/// Checks the ids a path carries, by the name of their template segment: a client id is any
/// MQTT string without control characters; every other id (username, set name, key, rule and
/// org id) is a name as [`check_name`] allows. Control bytes never reach a lookup, so an id can
/// not spell the broker's internal org scope (`$\0{N}/`).
pub fn check_path_params(template: &str, params: &[String]) -> Result<(), String> {
    let names = template
        .split('/')
        .filter_map(|part| part.strip_prefix('{').and_then(|p| p.strip_suffix('}')));
    for (name, value) in names.zip(params) {
        if has_control(value) {
            return Err(format!("{name} must not contain control characters"));
        }
        if name == "client_id" {
            if value.len() > CLIENT_ID_BYTES_MAX {
                return Err("client id is too long".into());
            }
        } else {
            check_name(name, value)?;
        }
    }
    Ok(())
}

/// Methods of a route template.
pub fn methods_of(template: &str) -> &'static [&'static str] {
    ROUTES
        .iter()
        .find(|(t, _)| *t == template)
        .map(|(_, m)| *m)
        .unwrap_or(&[])
}

/// `%XX` decoding (`+` is not a space in this API); `None` on a malformed escape or bad UTF-8.
pub fn percent_decode(s: &str) -> Option<String> {
    ringmq_http::percent::decode(s)
}

/// Decoded value of query parameter `name` (the first one).
pub fn query_param(query: &str, name: &str) -> Result<Option<String>, String> {
    for pair in query.split('&') {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        if k == name {
            return percent_decode(v).map(Some).ok_or_else(|| {
                format!("query parameter '{name}' is not valid percent-encoded UTF-8")
            });
        }
    }
    Ok(None)
}

/// `limit` and `cursor` of a list request.
pub fn paging(query: &str) -> Result<(usize, Option<String>), String> {
    let limit = match query_param(query, "limit")? {
        None => LIMIT_DEFAULT,
        Some(v) => match v.parse::<usize>() {
            Ok(n) if (1..=LIMIT_MAX).contains(&n) => n,
            _ => return Err(format!("limit must be an integer in 1..={LIMIT_MAX}")),
        },
    };
    let cursor = query_param(query, "cursor")?;
    if cursor.as_ref().is_some_and(|c| c.len() > 256) {
        return Err("cursor is too long".into());
    }
    if cursor.as_deref().is_some_and(has_control) {
        return Err("cursor must not contain control characters".into());
    }
    Ok((limit, cursor.filter(|c| !c.is_empty())))
}

/// 1..=64 of `[A-Za-z0-9._-]` (usernames, set names).
pub fn check_name(what: &str, s: &str) -> Result<(), String> {
    let ok = (1..=64).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(format!("{what} must be 1 to 64 of A-Z a-z 0-9 . _ -"))
    }
}

/// Free-text labels (key and org names): 1..=128 bytes, no control characters.
pub fn check_label(what: &str, s: &str) -> Result<(), String> {
    if (1..=128).contains(&s.len()) && !s.chars().any(char::is_control) {
        Ok(())
    } else {
        Err(format!(
            "{what} must be 1 to 128 bytes without control characters"
        ))
    }
}

/// Descriptions: at most 1024 bytes.
pub fn check_description(s: &str) -> Result<(), String> {
    if s.len() <= 1024 {
        Ok(())
    } else {
        Err("description is longer than 1024 bytes".into())
    }
}

/// Passwords: 8..=256 bytes.
pub fn check_password(s: &str) -> Result<(), String> {
    if (8..=256).contains(&s.len()) {
        Ok(())
    } else {
        Err("password must be 8 to 256 bytes".into())
    }
}

/// Namespaces: a topic prefix without wildcards, at most 256 bytes.
pub fn check_namespace(s: &str) -> Result<(), String> {
    if !s.is_empty() && s.len() <= 256 && !s.contains(['+', '#', '\0']) {
        Ok(())
    } else {
        Err("namespace must be 1 to 256 bytes without wildcards".into())
    }
}

/// An ACL pattern: a valid MQTT filter of bounded size (placeholders are ordinary level text here).
pub fn check_pattern(s: &str) -> Result<(), String> {
    if s.len() > PATTERN_BYTES_MAX {
        return Err(format!(
            "topic pattern is longer than {PATTERN_BYTES_MAX} bytes"
        ));
    }
    validate_filter(s, PATTERN_LEVELS_MAX).map_err(|e| format!("invalid topic pattern: {e}"))
}

/// Key permissions accept `a/*` as a synonym of `a/#`.
pub fn normalize_key_topic(s: &str) -> String {
    if s == "*" {
        "#".to_string()
    } else if let Some(base) = s.strip_suffix("/*") {
        format!("{base}/#")
    } else {
        s.to_string()
    }
}

/// Checks a list's length.
pub fn check_list_len(what: &str, n: usize) -> Result<(), String> {
    if n <= LIST_ITEMS_MAX {
        Ok(())
    } else {
        Err(format!("at most {LIST_ITEMS_MAX} {what} allowed"))
    }
}

/// serde's message with echoed string values removed: a secret sent in the wrong field must not come back.
pub fn redact_serde(msg: &str) -> String {
    redact_variant(&redact_strings(msg))
}

/// `unknown variant `x`` echoes the value in backticks.
fn redact_variant(msg: &str) -> String {
    const MARK: &str = "unknown variant `";
    let Some(start) = msg.find(MARK) else {
        return msg.to_string();
    };
    let head = start + MARK.len();
    match msg[head..].find("`, expected") {
        Some(end) => format!("{}…{}", &msg[..head], &msg[head + end..]),
        None => format!("{}…`", &msg[..head]),
    }
}

fn redact_strings(msg: &str) -> String {
    let mut out = String::with_capacity(msg.len());
    let mut rest = msg;
    while let Some(start) = rest.find("string \"") {
        let head = start + "string \"".len();
        out.push_str(&rest[..head]);
        let tail = &rest[head..];
        // serde writes the value Debug-escaped, so the closing quote is the one before ", expected".
        match tail.find("\", expected").or_else(|| tail.rfind('"')) {
            Some(end) => {
                out.push('…');
                rest = &tail[end..];
            }
            None => {
                out.push('…');
                rest = "";
            }
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_and_decoding() {
        let (t, p) = match_route("/v1/sessions/a%2Fb/disconnect")
            .unwrap()
            .unwrap();
        assert_eq!(t, "/v1/sessions/{client_id}/disconnect");
        assert_eq!(p, vec!["a/b".to_string()]);
        assert!(match_route("/v1/nope").unwrap().is_none());
        assert!(match_route("/v1/users/").unwrap().is_none());
        assert!(match_route("/v1/users/%ff").is_err());
        assert_eq!(paging("limit=5&cursor=x").unwrap(), (5, Some("x".into())));
        assert!(paging("limit=0").is_err());
        assert!(paging("limit=1001").is_err());
        assert_eq!(normalize_key_topic("alerts/*"), "alerts/#");
    }

    #[test]
    fn path_ids_with_control_bytes_are_refused() {
        let check = |path: &str| {
            let (t, p) = match_route(path).unwrap().unwrap();
            check_path_params(t, &p)
        };
        assert!(check("/v1/sessions/dev-1").is_ok());
        assert!(check("/v1/sessions/a%2Fb%20c/disconnect").is_ok());
        // The router's org scope of org 1 in front of a client id.
        assert!(check("/v1/sessions/%24%001%2Fdev-1").is_err());
        assert!(check("/v1/sessions/%24%001%2Fdev-1/disconnect").is_err());
        assert!(check("/v1/sessions/a%0ab").is_err());
        assert!(check("/v1/sessions/a%7fb").is_err());
        assert!(check("/v1/sessions/a%c2%85b").is_err());
        assert!(check("/v1/users/alice").is_ok());
        assert!(check("/v1/users/al%00ice").is_err());
        assert!(check("/v1/users/al%0aice").is_err());
        assert!(check("/v1/users/al%2Fice").is_err());
        assert!(check("/v1/keys/key_abc%00").is_err());
        assert!(check("/v1/acl/rules/rule_1%0d").is_err());
        assert!(check("/v1/acl/sets/s%09").is_err());
        assert!(check("/v1/orgs/org_x%00").is_err());
        assert!(check("/v1/orgs/default").is_ok());
        let long = format!("/v1/sessions/{}", "a".repeat(CLIENT_ID_BYTES_MAX + 1));
        assert!(check(&long).is_err());
        assert!(paging("cursor=a%00").is_err());
    }

    #[test]
    fn redaction() {
        let m = redact_serde("invalid type: string \"hunter22\", expected a boolean at line 1");
        assert!(!m.contains("hunter22"));
        assert!(m.contains("expected a boolean"));
        let m = redact_serde("unknown variant `sk_abc`, expected one of `allow`, `deny` at line 1");
        assert!(!m.contains("sk_abc"));
        assert!(m.contains("expected one of `allow`"));
    }
}
