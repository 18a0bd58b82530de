//! JIT TypeScript tools: static validation, metadata extraction and transpilation.
//!
//! A model writes a tool as a TypeScript ES module mid-task. [`analyze`] checks it on the
//! syntax tree — safety [`rules`], the static `export const tool = {…}` literal ([`ToolMeta`]),
//! a function default export, JSON schemas ([`schema`]) and declared tests — and transpiles it
//! ([`transpile()`]) to a JavaScript ES module with a separate source map. Nothing in the
//! tool is executed here. [`TranspileCache`] memoises transpilation by content hash.

pub mod exports;
pub mod finding;
pub mod guard;
pub mod literal;
pub mod rules;
pub mod schema;
pub mod tool;
pub mod transpile;

#[cfg(test)]
mod properties;
#[cfg(test)]
mod tool_tests;

pub use finding::{rule, Finding};
pub use rules::DEFAULT_ALLOWED_IMPORTS;
pub use schema::{check_schema, validate};
pub use tool::{
    analyze, analyze_async, is_valid_tool_name, AnalyzeOptions, AnalyzedTool, DeclaredTest,
    MockSyscall, ToolLimits, ToolMeta,
};
pub use transpile::{transpile, Diagnostic, TranspileCache, Transpiled};
