//! What an audit record may keep: credentials become their length and SHA-256, and no
//! record grows without bound.
//!
//! Redaction is by shape, not by primitive, so a new primitive is covered by the same rules:
//! a credential-bearing header (by name: `Authorization`, `Cookie`, `Proxy-Authorization`,
//! `X-Api-Key`, anything naming a token, secret, password, key, session or auth), a value
//! under a credential-like key, a request `body`, a command's `stdin`, URL userinfo, query
//! and fragment values (in a `url` or any string that holds a URL, including an argv
//! element), `--password=…`-like arguments, and the credential after `Bearer ` or `Basic `
//! in any string (a header pasted into a message or a script). Then strings longer than
//! [`INLINE_LIMIT`] become length + hash and arrays longer than [`ARRAY_LIMIT`] keep their
//! first items and a count.

use serde_json::{json, Map, Value};

/// Strings longer than this are kept as length + SHA-256.
pub const INLINE_LIMIT: usize = 256;
/// Arrays longer than this keep their first items and say how many more there were.
pub const ARRAY_LIMIT: usize = 32;
/// The most a record's detail may take, serialized; beyond it only its length and hash stay.
pub const DETAIL_LIMIT: usize = 8 << 10;
/// The most a record's target may take.
pub const TARGET_LIMIT: usize = 512;

/// `{"redacted": true, "bytes": n, "sha256": …}` for a secret.
pub fn redacted(secret: &str) -> Value {
    json!({
        "redacted": true,
        "bytes": secret.len(),
        "sha256": crate::util::sha256_hex(secret.as_bytes()),
    })
}

fn redacted_inline(secret: &str) -> String {
    format!(
        "<redacted:{}:{}>",
        secret.len(),
        crate::util::sha256_hex(secret.as_bytes())
    )
}

/// Whether a header, field or argument name carries credentials.
pub fn is_credential_name(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    const EXACT: [&str; 7] = [
        "auth",
        "authorization",
        "proxy-authorization",
        "cookie",
        "set-cookie",
        "x-api-key",
        "api-key",
    ];
    const PARTS: [&str; 15] = [
        "authoriz",
        "authenticat",
        "x-auth",
        "auth_",
        "token",
        "secret",
        "passw",
        "apikey",
        "api_key",
        "api-key",
        "private_key",
        "private-key",
        "session",
        "cookie",
        "credential",
    ];
    EXACT.contains(&name.as_str()) || PARTS.iter().any(|p| name.contains(p))
}

/// A URL with its userinfo, query values and fragment redacted; other text unchanged.
/// Works on any string: everything after each `://` up to whitespace is treated as a URL.
pub fn redact_urls(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find("://") {
        let start = at + 3;
        out.push_str(&rest[..start]);
        let after = &rest[start..];
        let end = after
            .find(|c: char| c.is_whitespace() || c == '"' || c == '\'')
            .unwrap_or(after.len());
        out.push_str(&redact_url_tail(&after[..end]));
        rest = &after[end..];
    }
    out.push_str(rest);
    out
}

/// Shortest run after `Bearer ` / `Basic ` taken for a credential (so prose such as
/// "basic setup" is left alone).
const SCHEME_TOKEN_MIN: usize = 8;

/// Whether a word after `Bearer `/`Basic ` is a credential: at least [`SCHEME_TOKEN_MIN`]
/// characters of the token alphabet, with a digit, mixed case or base64 padding (a word of
/// prose has none).
fn looks_like_token(word: &str) -> bool {
    let has = |f: fn(char) -> bool| word.chars().any(f);
    word.len() >= SCHEME_TOKEN_MIN
        && (has(|c| c.is_ascii_digit())
            || (has(|c| c.is_ascii_uppercase()) && has(|c| c.is_ascii_lowercase()))
            || word.ends_with('='))
}

/// The token after each `Bearer ` / `Basic ` (any case) redacted when it looks like one
/// ([`looks_like_token`]); other text unchanged.
pub fn redact_auth_schemes(text: &str) -> String {
    let lower = text.to_ascii_lowercase();
    let mut out = String::with_capacity(text.len());
    let mut pos = 0;
    while let Some((at, len)) = ["bearer ", "basic "]
        .iter()
        .filter_map(|scheme| lower[pos..].find(scheme).map(|i| (pos + i, scheme.len())))
        .min()
    {
        let start = at + len;
        out.push_str(&text[pos..start]);
        let token_len = text[start..]
            .find(|c: char| !(c.is_ascii_alphanumeric() || "-._~+/=".contains(c)))
            .unwrap_or(text.len() - start);
        let token = &text[start..start + token_len];
        if looks_like_token(token) {
            out.push_str(&redacted_inline(token));
        } else {
            out.push_str(token);
        }
        pos = start + token_len;
    }
    out.push_str(&text[pos..]);
    out
}

/// URLs and `Bearer`/`Basic` credentials in free text redacted.
fn redact_text(text: &str) -> String {
    let text = if text.contains("://") {
        redact_urls(text)
    } else {
        text.to_string()
    };
    let lower = text.to_ascii_lowercase();
    if lower.contains("bearer ") || lower.contains("basic ") {
        redact_auth_schemes(&text)
    } else {
        text
    }
}

/// Redacts the part of a URL after `scheme://`.
fn redact_url_tail(tail: &str) -> String {
    let authority_end = tail.find(['/', '?', '#']).unwrap_or(tail.len());
    let (authority, path) = tail.split_at(authority_end);
    let mut out = String::new();
    match authority.rfind('@') {
        Some(at) => {
            out.push_str(&redacted_inline(&authority[..at]));
            out.push_str(&authority[at..]);
        }
        None => out.push_str(authority),
    }
    let (before_fragment, fragment) = match path.find('#') {
        Some(i) => (&path[..i], Some(&path[i + 1..])),
        None => (path, None),
    };
    match before_fragment.find('?') {
        Some(q) => {
            out.push_str(&before_fragment[..=q]);
            let pairs: Vec<String> = before_fragment[q + 1..]
                .split('&')
                .map(|pair| match pair.split_once('=') {
                    Some((k, v)) => format!("{k}={}", redacted_inline(v)),
                    None => pair.to_string(),
                })
                .collect();
            out.push_str(&pairs.join("&"));
        }
        None => out.push_str(before_fragment),
    }
    if let Some(fragment) = fragment {
        out.push('#');
        if !fragment.is_empty() {
            out.push_str(&redacted_inline(fragment));
        }
    }
    out
}

/// One command-line argument: URLs redacted, `Name: value` headers and `--name=value` /
/// `NAME=value` with a credential-like name keep only the name.
pub fn redact_arg(arg: &str) -> String {
    if let Some((name, value)) = arg.split_once(':') {
        let name_ok = !name.is_empty()
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
        if name_ok && !value.starts_with("//") && is_credential_name(name) {
            return format!("{name}: {}", redacted_inline(value.trim_start()));
        }
    }
    if let Some((name, value)) = arg.split_once('=') {
        if !name.contains("://") && is_credential_name(name.trim_start_matches('-')) {
            return format!("{name}={}", redacted_inline(value));
        }
    }
    redact_text(arg)
}

/// Redacts credentials anywhere in a JSON value (see the module documentation).
pub fn redact(value: Value) -> Value {
    redact_in(None, value)
}

fn redact_in(key: Option<&str>, value: Value) -> Value {
    match (key, value) {
        (Some("stdin" | "body"), Value::String(s)) => redacted(&s),
        (Some("headers"), Value::Array(items)) => Value::Array(
            items
                .into_iter()
                .map(|item| match item {
                    Value::Array(pair) if pair.len() == 2 => {
                        let name = pair[0].as_str().unwrap_or_default().to_string();
                        let value = match &pair[1] {
                            Value::String(v) if is_credential_name(&name) => redacted(v),
                            other => redact_in(None, other.clone()),
                        };
                        json!([name, value])
                    }
                    other => redact_in(None, other),
                })
                .collect(),
        ),
        (Some(k), Value::String(s)) if is_credential_name(k) => redacted(&s),
        (Some("argv"), Value::Array(items)) => Value::Array(
            items
                .into_iter()
                .map(|item| match item {
                    Value::String(s) => Value::String(redact_arg(&s)),
                    other => redact_in(None, other),
                })
                .collect(),
        ),
        (_, Value::String(s)) => Value::String(redact_text(&s)),
        (_, Value::Array(items)) => Value::Array(
            items
                .into_iter()
                .map(|item| redact_in(None, item))
                .collect(),
        ),
        (_, Value::Object(map)) => Value::Object(
            map.into_iter()
                .map(|(k, v)| {
                    let v = redact_in(Some(&k), v);
                    (k, v)
                })
                .collect::<Map<String, Value>>(),
        ),
        (_, other) => other,
    }
}

/// Shrinks a value for a record: long strings become length + hash, long arrays keep their
/// first [`ARRAY_LIMIT`] items and a count.
pub fn shrink(value: Value) -> Value {
    match value {
        Value::String(s) if s.len() > INLINE_LIMIT => json!({
            "bytes": s.len(),
            "sha256": crate::util::sha256_hex(s.as_bytes()),
        }),
        Value::Array(items) if items.len() > ARRAY_LIMIT => {
            let more = items.len() - ARRAY_LIMIT;
            let mut kept: Vec<Value> = items.into_iter().take(ARRAY_LIMIT).map(shrink).collect();
            kept.push(json!({"more": more}));
            Value::Array(kept)
        }
        Value::Array(items) => Value::Array(items.into_iter().map(shrink).collect()),
        Value::Object(map) => Value::Object(map.into_iter().map(|(k, v)| (k, shrink(v))).collect()),
        other => other,
    }
}

/// A record's detail as stored: at most [`DETAIL_LIMIT`] bytes of JSON, else its length
/// and hash only.
pub fn bound_detail(detail: Value) -> Value {
    let text = detail.to_string();
    if text.len() <= DETAIL_LIMIT {
        return detail;
    }
    json!({
        "truncated": true,
        "bytes": text.len(),
        "sha256": crate::util::sha256_hex(text.as_bytes()),
    })
}

/// A record's target as stored: URLs redacted, at most [`TARGET_LIMIT`] bytes (cut on a
/// character boundary, marked with `…`).
pub fn bound_target(target: &str) -> String {
    let target = redact_urls(target);
    if target.len() <= TARGET_LIMIT {
        return target;
    }
    let mut end = TARGET_LIMIT;
    while !target.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &target[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_secret(value: &Value, secret: &str) {
        let text = value.to_string();
        assert!(!text.contains(secret), "{secret} leaked in {text}");
    }

    #[test]
    fn credential_headers_are_redacted_by_name() {
        let call = json!({"primitive": "net.fetch", "url": "https://api.example.org/x",
            "headers": [["Authorization", "Bearer sk-live-1"], ["cookie", "sid=abc123"],
                        ["X-Api-Key", "k-999"], ["Proxy-Authorization", "Basic cHc="],
                        ["X-Upstream-Token", "tok-7"], ["Accept", "text/plain"]]});
        let out = redact(call);
        for secret in ["sk-live-1", "abc123", "k-999", "cHc=", "tok-7"] {
            no_secret(&out, secret);
        }
        assert_eq!(out["headers"][5], json!(["Accept", "text/plain"]));
        assert_eq!(out["headers"][0][1]["bytes"], 16);
        assert_eq!(
            out["headers"][0][1]["sha256"],
            crate::util::sha256_hex(b"Bearer sk-live-1")
        );
    }

    #[test]
    fn url_userinfo_query_and_fragment_are_redacted() {
        let url = "https://alice:hunter2@example.org:8443/p/a?token=SECRET1&x=2#access_token=FRAG";
        let out = redact_urls(url);
        for secret in ["hunter2", "alice", "SECRET1", "FRAG"] {
            assert!(!out.contains(secret), "{out}");
        }
        assert!(out.starts_with("https://<redacted:13:"), "{out}");
        assert!(
            out.contains("@example.org:8443/p/a?token=<redacted:7:"),
            "{out}"
        );
        assert!(out.contains("&x=<redacted:1:"), "{out}");
        assert_eq!(redact_urls("plain text, no url"), "plain text, no url");
        assert_eq!(
            redact_urls("https://example.org/a/b"),
            "https://example.org/a/b"
        );
        // Anywhere in a string, several times, and never panics on odd input.
        let text = "see http://u:p@h/?q=1 and ftp://h2/?k=v é://?=";
        let out = redact_urls(text);
        assert!(
            !out.contains(":p@") && !out.contains("q=1") && !out.contains("k=v"),
            "{out}"
        );
        for odd in ["://", "a://@", "x://?&&=", "://#", "é://é@é?é=é#é"] {
            let _ = redact_urls(odd);
        }
    }

    #[test]
    fn stdin_body_argv_and_keyed_secrets_are_redacted() {
        let call = json!({"primitive": "shell.run",
            "argv": ["curl", "-H", "Authorization: Bearer T0K", "https://h/?api_key=K3Y",
                     "--password=PW1", "DB_PASSWORD=PW2", "plain"],
            "stdin": "PW3", "body": "user=a&pass=PW4",
            "payload": {"api_token": "PW5", "nested": [{"secret": "PW6"}]}});
        let out = redact(call);
        for secret in ["T0K", "K3Y", "PW1", "PW2", "PW3", "PW4", "PW5", "PW6"] {
            no_secret(&out, secret);
        }
        assert_eq!(out["argv"][0], "curl");
        assert_eq!(out["argv"][6], "plain");
        assert!(out["argv"][2]
            .as_str()
            .unwrap()
            .starts_with("Authorization: <redacted:"));
    }

    #[test]
    fn bearer_and_basic_credentials_in_free_text_are_redacted() {
        let message = json!({"role": "assistant",
            "content": "calling with header Authorization: Bearer sk-FREE1, and BASIC dXNlcjpGUkVFMg==\n",
            "tool_args": "{\"headers\":{\"x\":\"bearer FREE3-tok\"}}"});
        let out = redact(message);
        for secret in ["sk-FREE1", "dXNlcjpGUkVFMg==", "FREE3-tok"] {
            no_secret(&out, secret);
        }
        assert!(out["content"]
            .as_str()
            .unwrap()
            .starts_with("calling with header"));
        let prose = "notes/basic setup.md, a bearer of news";
        assert_eq!(redact_auth_schemes(prose), prose);
        for odd in ["bearer ", "Bearer", "basic  x", "é bearer é", "bearer \\"] {
            let _ = redact_auth_schemes(odd);
        }
    }

    #[test]
    fn records_are_bounded() {
        let long: Vec<Value> = (0..1000).map(|i| json!(format!("arg{i}"))).collect();
        let out = shrink(json!({"argv": long, "text": "x".repeat(1000)}));
        assert_eq!(out["argv"].as_array().unwrap().len(), ARRAY_LIMIT + 1);
        assert_eq!(out["argv"][ARRAY_LIMIT]["more"], 1000 - ARRAY_LIMIT);
        assert_eq!(out["text"]["bytes"], 1000);
        let huge = json!({"k": (0..2000).map(|i| json!({"i": i})).collect::<Vec<_>>()});
        let bounded = bound_detail(huge).to_string();
        assert!(bounded.len() < 200, "{bounded}");
        assert!(bounded.contains("\"truncated\":true"));
        let target = bound_target(&"é".repeat(1000));
        assert!(target.len() <= TARGET_LIMIT + "…".len());
    }
}
