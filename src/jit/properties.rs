//! Property tests of the front end: no source — arbitrary text or a valid tool mutated at
//! random — and no schema or value makes [`analyze`], the rules, the literal extraction or
//! the schema checks panic; a source is either analyzed or refused with findings.

use proptest::prelude::*;

use super::tool::{analyze, AnalyzeOptions};
use super::tool_tests::GOOD;
use super::{check_schema, validate};
use crate::proptest_support::{config, json_with_keys, tricky_string};

/// Fragments that change what the parser, the rules and the literal extraction see.
const SNIPPETS: &[&str] = &[
    "{",
    "}",
    "[",
    "]",
    "(",
    ")",
    "\"",
    "'",
    "`",
    "${",
    "/*",
    "*/",
    "//",
    "\n",
    ";",
    ",",
    ":",
    "é",
    "🦀",
    "\u{0}",
    "\u{2028}",
    "\\",
    "eval",
    "eval(\"1\")",
    "import(\"x\")",
    "require(\"fs\")",
    "Deno",
    "new Function(\"\")",
    "x.constructor(\"\")",
    "export default ",
    "export const tool = ",
    "tool",
    "...",
    " as any",
    "<T>",
    "=>",
    "async ",
    "await ",
    "null",
    "-1e309",
    "0x",
    "1n",
    "undefined",
    "{ type: \"object\" }",
    "__proto__",
    "get x() {}",
    "[a]: 1",
    "#x",
    "@dec ",
    "import x from \"libos\";",
    "export * from \"y\";",
];

#[derive(Debug, Clone)]
enum Mutation {
    Insert(f64, &'static str),
    Delete(f64, usize),
    Duplicate(f64, usize),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        3 => (0.0..1.0f64, prop::sample::select(SNIPPETS)).prop_map(|(at, s)| Mutation::Insert(at, s)),
        2 => (0.0..1.0f64, 1..40usize).prop_map(|(at, n)| Mutation::Delete(at, n)),
        1 => (0.0..1.0f64, 1..80usize).prop_map(|(at, n)| Mutation::Duplicate(at, n)),
    ]
}

/// The char boundary nearest to the fraction `at` of `text`.
fn boundary(text: &str, at: f64) -> usize {
    let mut i = ((text.len() as f64) * at) as usize;
    while !text.is_char_boundary(i) {
        i -= 1;
    }
    i
}

fn span(text: &str, start: usize, len: usize) -> usize {
    let mut end = (start + len).min(text.len());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    end
}

fn mutate(mut text: String, mutations: &[Mutation]) -> String {
    for m in mutations {
        match *m {
            Mutation::Insert(at, snippet) => {
                let i = boundary(&text, at);
                text.insert_str(i, snippet);
            }
            Mutation::Delete(at, n) => {
                let i = boundary(&text, at);
                let end = span(&text, i, n);
                text.replace_range(i..end, "");
            }
            Mutation::Duplicate(at, n) => {
                let i = boundary(&text, at);
                let end = span(&text, i, n);
                let piece = text[i..end].to_string();
                text.insert_str(end, &piece);
            }
        }
    }
    text
}

fn analyzes_or_refuses(source: &str) {
    match analyze("p.ts", source, &AnalyzeOptions::default()) {
        Ok(tool) => assert!(!tool.transpiled.code.is_empty()),
        Err(findings) => assert!(!findings.is_empty(), "refused without a finding"),
    }
}

proptest! {
    #![proptest_config(config(96))]

    #[test]
    fn mutated_tools_are_analyzed_or_refused(mutations in prop::collection::vec(mutation(), 1..5)) {
        analyzes_or_refuses(&mutate(GOOD.to_string(), &mutations));
    }

    #[test]
    fn arbitrary_text_is_analyzed_or_refused(parts in prop::collection::vec(
        prop_oneof![tricky_string(), prop::sample::select(SNIPPETS).prop_map(str::to_string)],
        0..24,
    )) {
        analyzes_or_refuses(&parts.concat());
    }
}

const SCHEMA_KEYS: &[&str] = &[
    "type",
    "properties",
    "required",
    "items",
    "enum",
    "const",
    "minimum",
    "maximum",
    "minLength",
    "maxLength",
    "minItems",
    "maxItems",
    "additionalProperties",
    "description",
    "default",
    "pattern",
    "format",
    "anyOf",
    "oneOf",
    "allOf",
    "not",
    "$ref",
    "nullable",
    "object",
    "string",
    "integer",
    "number",
    "boolean",
    "array",
    "null",
];

proptest! {
    #![proptest_config(config(512))]

    #[test]
    fn schemas_and_values_are_checked_without_panics(
        schema in json_with_keys(SCHEMA_KEYS),
        value in json_with_keys(SCHEMA_KEYS),
    ) {
        if check_schema(&schema).is_ok() {
            let _ = validate(&schema, &value);
        }
        // Validation against a schema that is not well-formed must not panic either.
        let _ = validate(&schema, &value);
    }
}
