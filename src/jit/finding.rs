//! [`Finding`]: one problem found while statically checking a tool, located in the TS source.

use std::fmt;

use deno_ast::swc::common::Span;
use deno_ast::{SourceRanged, SourceRangedForSpanned, SourceTextInfo, StartSourcePos};

/// Rule ids used in [`Finding::rule`].
pub mod rule {
    /// `import(...)` anywhere.
    pub const NO_DYNAMIC_IMPORT: &str = "no-dynamic-import";
    /// `eval` called or referenced.
    pub const NO_EVAL: &str = "no-eval";
    /// `Function` constructor, or a call through a `.constructor` member.
    pub const NO_FUNCTION_CONSTRUCTOR: &str = "no-function-constructor";
    /// A static import/re-export of a specifier outside the allowlist.
    pub const NO_FORBIDDEN_IMPORT: &str = "no-forbidden-import";
    /// A value import or re-export of an allowed (type) module: only `import type` is erased.
    pub const TYPE_ONLY_IMPORT: &str = "type-only-import";
    /// `require(...)` or `import x = require(...)`.
    pub const NO_REQUIRE: &str = "no-require";
    /// A reference to the host global `Deno`.
    pub const NO_HOST_GLOBAL: &str = "no-host-global";
    /// A name reserved for the runtime (`__libos…`).
    pub const NO_RESERVED_NAME: &str = "no-reserved-name";
    /// The source does not parse (or does not transpile).
    pub const SYNTAX: &str = "syntax";
    /// `export const tool` missing, not a static literal, or malformed.
    pub const TOOL_META: &str = "tool-meta";
    /// No default export, or it is not a function.
    pub const DEFAULT_EXPORT: &str = "default-export";
    /// An input/output schema is not well-formed.
    pub const SCHEMA: &str = "schema";
    /// A declared test does not fit the tool's schemas.
    pub const TOOL_TEST: &str = "tool-test";
    /// The source is too large or too deeply nested to analyze.
    pub const LIMITS: &str = "limits";
}

/// One problem found in a tool's source. Lines and columns are 1-based, in the TS source.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Finding {
    /// Rule id, one of the constants in [`rule`].
    pub rule: String,
    /// Human-readable explanation.
    pub message: String,
    /// 1-based line.
    pub line: usize,
    /// 1-based column.
    pub column: usize,
}

impl Finding {
    /// A finding at an explicit position.
    pub fn new(rule: &str, message: impl Into<String>, line: usize, column: usize) -> Self {
        Self {
            rule: rule.to_string(),
            message: message.into(),
            line,
            column,
        }
    }

    /// A finding at the start of `span`.
    pub fn at(rule: &str, message: impl Into<String>, span: Span, text: &SourceTextInfo) -> Self {
        let (line, column) = line_col(span, text);
        Self::new(rule, message, line, column)
    }
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{} {}: {}",
            self.line, self.column, self.rule, self.message
        )
    }
}

/// 1-based line and column of the start of `span`; `1:1` for a dummy span.
pub fn line_col(span: Span, text: &SourceTextInfo) -> (usize, usize) {
    if span.lo < StartSourcePos::START_SOURCE_POS.as_byte_pos() {
        return (1, 1);
    }
    let start = span.start().min(text.range().end());
    let pos = text.line_and_column_display(start);
    (pos.line_number, pos.column_number)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_format() {
        let f = Finding::new(rule::NO_EVAL, "`eval` is not allowed", 3, 9);
        assert_eq!(f.to_string(), "3:9 no-eval: `eval` is not allowed");
    }

    #[test]
    fn dummy_span_is_line_one() {
        let text = SourceTextInfo::new("let a = 1;".into());
        assert_eq!(line_col(deno_ast::swc::common::DUMMY_SP, &text), (1, 1));
    }
}
