//! Topic templates: `%i` becomes the client index, `%c` the client id, `%%` a literal `%`.

/// Expands `template` for one client; unknown `%x` sequences are kept as written.
pub fn expand(template: &str, index: usize, client_id: &str) -> String {
    let mut out = String::with_capacity(template.len() + 8);
    let mut chars = template.chars();
    while let Some(character) = chars.next() {
        if character != '%' {
            out.push(character);
            continue;
        }
        match chars.next() {
            Some('i') => out.push_str(&index.to_string()),
            Some('c') => out.push_str(client_id),
            Some('%') => out.push('%'),
            Some(other) => {
                out.push('%');
                out.push(other);
            }
            None => out.push('%'),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::expand;

    #[test]
    fn expands_index_and_client_id() {
        assert_eq!(expand("bench/%i", 42, "c"), "bench/42");
        assert_eq!(expand("a/%c/%i/x", 3, "pub-3"), "a/pub-3/3/x");
        assert_eq!(expand("plain/topic", 9, "c"), "plain/topic");
    }

    #[test]
    fn keeps_unknown_and_escaped_percent() {
        assert_eq!(expand("100%%/%q/%", 1, "c"), "100%/%q/%");
    }
}
