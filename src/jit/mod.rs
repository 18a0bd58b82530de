//! JIT TypeScript tools: static validation, metadata extraction and transpilation.
//!
//! A model writes a tool as a TypeScript ES module mid-task. Before it can run in an isolate,
//! the runtime transpiles it to JavaScript ([`transpile`]) with a separate source map.

pub mod transpile;

pub use transpile::{transpile, Diagnostic, TranspileCache, Transpiled};
