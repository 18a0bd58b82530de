//! Shared strategies for the property tests: arbitrary JSON, strings that favour the
//! characters parsers trip on, and the bounded configuration every property runs under.

use proptest::prelude::*;
use proptest::test_runner::Config;
use serde_json::{json, Map, Value};

/// A property's configuration: `cases` inputs, no failure files written into the tree.
pub fn config(cases: u32) -> Config {
    Config {
        cases,
        failure_persistence: None,
        max_shrink_iters: 256,
        ..Config::default()
    }
}

/// Strings of any Unicode scalar values, mixed with the ones parsers get wrong: multi-byte
/// characters, separators, NUL, quotes, escapes, wildcards.
pub fn tricky_string() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        4 => ".{0,6}",
        2 => prop::sample::select(vec![
            "/", "//", ".", "..", "../", "./", "\\", "\0", "é", "日本", "🦀", "\u{202e}", "*", "**",
            "?", ":", ":\\", "=", "\"", "'", "`", "${", "}", "{", "[", "]", "%00", " ", "\n",
            "-", "--", "-é", "~", "$HOME",
        ])
        .prop_map(str::to_string),
    ];
    prop::collection::vec(piece, 0..8).prop_map(|parts| parts.concat())
}

/// Arbitrary JSON, up to four levels deep, with object keys drawn from `keys` or any string.
pub fn json_with_keys(keys: &'static [&'static str]) -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<u64>().prop_map(|n| json!(n)),
        any::<f64>()
            .prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
        tricky_string().prop_map(Value::String),
    ];
    let key = prop_oneof![
        3 => prop::sample::select(keys).prop_map(str::to_string),
        1 => tricky_string(),
    ];
    leaf.prop_recursive(4, 48, 6, move |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::vec((key.clone(), inner), 0..6)
                .prop_map(|entries| Value::Object(entries.into_iter().collect::<Map<_, _>>())),
        ]
    })
}
