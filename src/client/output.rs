//! Human output (aligned tables, `key: value` lines) and pretty JSON that keeps the server's
//! field order.

use serde_json::Value;

/// A table column: header and the item field it shows.
#[derive(Debug, Clone, Copy)]
pub struct Column {
    /// Header text.
    pub header: &'static str,
    /// Field of each item.
    pub field: &'static str,
}

/// Shorthand for a [`Column`].
pub const fn col(header: &'static str, field: &'static str) -> Column {
    Column { header, field }
}

/// Renders `items` as a table with a header row, columns separated by two spaces, no trailing
/// whitespace.
pub fn table(columns: &[Column], items: &[Value]) -> String {
    let mut rows: Vec<Vec<String>> = vec![columns.iter().map(|c| c.header.to_string()).collect()];
    for item in items {
        rows.push(
            columns
                .iter()
                .map(|c| cell(c.field, item.get(c.field)))
                .collect(),
        );
    }
    let mut widths = vec![0; columns.len()];
    for row in &rows {
        for (width, text) in widths.iter_mut().zip(row) {
            *width = (*width).max(text.chars().count());
        }
    }
    let mut out = String::new();
    for row in &rows {
        let mut line = String::new();
        for (i, (text, width)) in row.iter().zip(&widths).enumerate() {
            if i > 0 {
                line.push_str("  ");
            }
            line.push_str(text);
            if i + 1 < row.len() {
                line.extend(std::iter::repeat_n(' ', width - text.chars().count()));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// Renders an object as aligned `key: value` lines: the `order` fields first, then the rest in
/// the body's order; nested objects become dotted keys (`settings.rate_burst`).
pub fn fields(value: &Value, order: &[&str]) -> String {
    let Some(object) = value.as_object() else {
        return format!("{}\n", cell("", Some(value)));
    };
    let mut keys: Vec<&str> = order
        .iter()
        .copied()
        .filter(|k| object.contains_key(*k))
        .collect();
    keys.extend(
        object
            .keys()
            .map(String::as_str)
            .filter(|k| !order.contains(k)),
    );
    let mut lines: Vec<(String, String)> = Vec::new();
    for key in keys {
        flatten(key.to_string(), &object[key], &mut lines);
    }
    let width = lines
        .iter()
        .map(|(k, _)| k.chars().count())
        .max()
        .unwrap_or(0);
    let mut out = String::new();
    for (key, text) in lines {
        let pad = width - key.chars().count();
        out.push_str(&format!("{key}:{} {text}", " ".repeat(pad)));
        out.push('\n');
    }
    out
}

fn flatten(key: String, value: &Value, lines: &mut Vec<(String, String)>) {
    match value {
        Value::Object(map) if !map.is_empty() => {
            for (k, v) in map {
                flatten(format!("{key}.{k}"), v, lines);
            }
        }
        _ => {
            let text = cell(&key, Some(value));
            lines.push((key, text));
        }
    }
}

/// One value as table or line text: `-` for null or missing, timestamps (`*_at` fields) as UTC,
/// lists comma-joined, objects in a list as their values joined by `:` (`publish:alerts/#`).
pub fn cell(field: &str, value: Option<&Value>) -> String {
    match value {
        None | Some(Value::Null) => "-".to_string(),
        Some(Value::Number(n)) if field.ends_with("_at") => match n.as_i64() {
            Some(secs) => format_time(secs),
            None => n.to_string(),
        },
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(items)) if items.is_empty() => "-".to_string(),
        Some(Value::Array(items)) => items
            .iter()
            .map(|item| match item {
                Value::Object(map) => map
                    .values()
                    .map(|v| cell("", Some(v)))
                    .collect::<Vec<_>>()
                    .join(":"),
                other => cell("", Some(other)),
            })
            .collect::<Vec<_>>()
            .join(", "),
        Some(other) => other.to_string(),
    }
}

/// Unix seconds as `YYYY-MM-DD HH:MM:SS UTC`.
pub fn format_time(secs: i64) -> String {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Howard Hinnant's civil-from-days: exact for the proleptic Gregorian calendar.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02} UTC",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Re-indents valid JSON text two spaces per level, keeping the field order and number
/// spelling of the original (serde_json's `Value` would sort keys here).
pub fn pretty_json(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len() * 2);
    let mut depth = 0usize;
    let mut chars = raw.trim().chars().peekable();
    let newline = |out: &mut String, depth: usize| {
        out.push('\n');
        out.push_str(&"  ".repeat(depth));
    };
    while let Some(c) = chars.next() {
        match c {
            '"' => {
                out.push('"');
                while let Some(s) = chars.next() {
                    out.push(s);
                    match s {
                        '\\' => {
                            if let Some(escaped) = chars.next() {
                                out.push(escaped);
                            }
                        }
                        '"' => break,
                        _ => {}
                    }
                }
            }
            '{' | '[' => {
                while chars.peek().is_some_and(|n| n.is_whitespace()) {
                    chars.next();
                }
                let close = if c == '{' { '}' } else { ']' };
                if chars.peek() == Some(&close) {
                    chars.next();
                    out.push(c);
                    out.push(close);
                } else {
                    out.push(c);
                    depth += 1;
                    newline(&mut out, depth);
                }
            }
            '}' | ']' => {
                depth = depth.saturating_sub(1);
                newline(&mut out, depth);
                out.push(c);
            }
            ',' => {
                out.push(',');
                newline(&mut out, depth);
            }
            ':' => out.push_str(": "),
            c if c.is_whitespace() => {}
            c => out.push(c),
        }
    }
    out.push('\n');
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn tables_align_and_fill_gaps() {
        let items = vec![
            json!({"username": "alice", "enabled": true, "acl_sets": ["a", "b"], "namespace": null}),
            json!({"username": "bob-the-builder", "enabled": false, "acl_sets": []}),
        ];
        let columns = [
            col("USERNAME", "username"),
            col("ENABLED", "enabled"),
            col("ACL SETS", "acl_sets"),
            col("NAMESPACE", "namespace"),
        ];
        assert_eq!(
            table(&columns, &items),
            "USERNAME         ENABLED  ACL SETS  NAMESPACE\n\
             alice            true     a, b      -\n\
             bob-the-builder  false    -         -\n"
        );
    }

    #[test]
    fn fields_order_flatten_and_times() {
        let org = json!({
            "name": "Acme",
            "id": "org_1",
            "created_at": 0,
            "permissions": [{"action": "publish", "topic": "alerts/#"}],
            "settings": {"rate_limit_per_sec": 10},
        });
        assert_eq!(
            fields(&org, &["id", "name"]),
            "id:                          org_1\n\
             name:                        Acme\n\
             created_at:                  1970-01-01 00:00:00 UTC\n\
             permissions:                 publish:alerts/#\n\
             settings.rate_limit_per_sec: 10\n"
        );
    }

    #[test]
    fn times() {
        assert_eq!(format_time(1_795_535_388), "2026-11-24 15:49:48 UTC");
        assert_eq!(format_time(951_782_400), "2000-02-29 00:00:00 UTC");
        assert_eq!(format_time(-1), "1969-12-31 23:59:59 UTC");
    }

    #[test]
    fn pretty_json_keeps_order_and_strings() {
        let raw = r#"{"z":1,"a":[1, 2],"s":"x,{y}: \"q\"","e":{},"l":[ ]}"#;
        let pretty = pretty_json(raw);
        assert_eq!(
            pretty,
            "{\n  \"z\": 1,\n  \"a\": [\n    1,\n    2\n  ],\n  \"s\": \"x,{y}: \\\"q\\\"\",\n  \"e\": {},\n  \"l\": []\n}\n"
        );
        // Same document, same layout as serde_json's own pretty printer.
        let value: Value = serde_json::from_str(&pretty).unwrap();
        assert_eq!(value, serde_json::from_str::<Value>(raw).unwrap());
    }
}
