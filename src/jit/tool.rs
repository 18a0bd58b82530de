//! `analyze`: the whole static front end for one JIT tool source.
//!
//! Parses once, runs the safety [`rules`](super::rules), extracts the `export const tool`
//! literal into [`ToolMeta`] without running code, checks the default export, the name, the
//! schemas and the declared tests, and finally transpiles the same parse to JavaScript.
//! All problems are returned together as [`Finding`]s, ordered by position.

use deno_ast::swc::ast::{Expr, ObjectLit, Prop, PropName, PropOrSpread};
use deno_ast::swc::common::{Span, Spanned};
use deno_ast::{ProgramRef, SourceTextInfo};
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;

use std::sync::Arc;

use super::exports::{check_default_export, find_tool, ToolExport};
use super::finding::{rule, Finding};
use super::guard;
use super::literal::{to_json, unwrap_type_wrappers};
use super::rules::{self, DEFAULT_ALLOWED_IMPORTS};
use super::schema::{check_schema, validate};
use super::transpile::{emit_parsed, parse, source_hash, Diagnostic, Transpiled};

/// Options for [`analyze`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AnalyzeOptions {
    /// Module specifiers a tool may import (statically). Default: `["libos"]`.
    pub allowed_imports: Vec<String>,
}

impl Default for AnalyzeOptions {
    fn default() -> Self {
        Self {
            allowed_imports: DEFAULT_ALLOWED_IMPORTS
                .iter()
                .map(|s| s.to_string())
                .collect(),
        }
    }
}

/// The metadata a tool declares in `export const tool = {…}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ToolMeta {
    /// Tool name, `^[a-z][a-z0-9_]{0,63}$`.
    pub name: String,
    /// One-line description shown to the model.
    pub description: String,
    /// JSON Schema (supported subset) of the arguments; its `type` is `"object"`.
    pub input: Value,
    /// JSON Schema (supported subset) of the result.
    pub output: Value,
    /// Declared tests, run at validation time with mocked syscalls.
    #[serde(default)]
    pub tests: Vec<DeclaredTest>,
    /// Per-tool limit overrides.
    #[serde(default)]
    pub limits: ToolLimits,
}

/// A test the tool declares for itself.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeclaredTest {
    /// Test name, unique within the tool.
    pub name: String,
    /// Arguments passed to the tool (default `{}`); must match the input schema.
    #[serde(default = "empty_object")]
    pub args: Value,
    /// Syscalls the tool is expected to make, in order, with their mocked outcomes.
    #[serde(default)]
    pub syscalls: Vec<MockSyscall>,
    /// Expected result (must match the output schema). `null` is a value, not absence.
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    pub expect: Option<Value>,
    /// Expected error, e.g. `{ kind: "PermissionDenied" }`.
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    pub expect_error: Option<Value>,
}

/// One mocked syscall in a declared test.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MockSyscall {
    /// Primitive name, e.g. `fs.read_text`.
    pub primitive: String,
    /// Expected arguments, if the test pins them.
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    pub args: Option<Value>,
    /// Mocked successful result (`null` is a value).
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    pub result: Option<Value>,
    /// Mocked error, e.g. `{ kind: "PermissionDenied", resource, right }`.
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    pub error: Option<Value>,
}

/// Per-tool limit overrides; `None` means the runtime default.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ToolLimits {
    /// CPU time per call, milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_ms: Option<u64>,
    /// Isolate heap, MiB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub heap_mb: Option<u64>,
    /// Syscalls per call.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub syscalls: Option<u64>,
    /// Serialized result size, bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result_bytes: Option<u64>,
    /// Console output per call, bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub console_bytes: Option<u64>,
}

/// A tool that passed every static check, with its JavaScript.
#[derive(Debug, Clone, PartialEq)]
pub struct AnalyzedTool {
    /// Extracted metadata.
    pub meta: ToolMeta,
    /// Transpiled module (its `hash` is the sha256 of the TS source).
    pub transpiled: Transpiled,
}

fn empty_object() -> Value {
    Value::Object(Default::default())
}

/// Deserializes a present field (even `null`) as `Some`.
fn present<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Value>, D::Error> {
    Value::deserialize(d).map(Some)
}

/// Whether `name` matches `^[a-z][a-z0-9_]{0,63}$`.
pub fn is_valid_tool_name(name: &str) -> bool {
    let bytes = name.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= 64
        && bytes[0].is_ascii_lowercase()
        && bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'_')
}

/// Statically validates a tool source and transpiles it. Returns every finding on failure.
///
/// Refuses sources too large or too deeply nested before parsing, and parses on a thread
/// of its own with a large stack (see [`guard`](super::guard)); the caller's thread waits.
pub fn analyze(
    specifier: &str,
    source: &str,
    opts: &AnalyzeOptions,
) -> Result<AnalyzedTool, Vec<Finding>> {
    guard::check(source).map_err(|f| vec![f])?;
    guard::on_front_end_thread(|| analyze_here(specifier, source, opts))
        .unwrap_or_else(|e| Err(vec![Finding::new(rule::LIMITS, e, 1, 1)]))
}

/// [`analyze`] for async callers: the caller's thread is not blocked while it runs.
pub async fn analyze_async(
    specifier: String,
    source: Arc<str>,
    opts: AnalyzeOptions,
) -> Result<AnalyzedTool, Vec<Finding>> {
    guard::check(&source).map_err(|f| vec![f])?;
    guard::on_front_end_thread_async(move || analyze_here(&specifier, &source, &opts))
        .await
        .unwrap_or_else(|e| Err(vec![Finding::new(rule::LIMITS, e, 1, 1)]))
}

/// The analysis itself, on the current thread: only for sources [`guard::check`] accepted,
/// on a thread with [`guard::FRONT_END_STACK`] bytes of stack.
fn analyze_here(
    specifier: &str,
    source: &str,
    opts: &AnalyzeOptions,
) -> Result<AnalyzedTool, Vec<Finding>> {
    let parsed = parse(specifier, source).map_err(|d| vec![syntax(d)])?;
    let mut findings = rules::check(&parsed, &opts.allowed_imports);
    let meta = {
        let text = parsed.text_info_lazy();
        let ProgramRef::Module(module) = parsed.program_ref() else {
            unreachable!("parse_module always yields a module")
        };
        if let Err((message, span)) = check_default_export(module) {
            findings.push(Finding::at(rule::DEFAULT_EXPORT, message, span, text));
        }
        match find_tool(module) {
            ToolExport::Found(init) => extract_meta(init, text, &mut findings),
            ToolExport::Problem(message, span) => {
                findings.push(Finding::at(rule::TOOL_META, message, span, text));
                None
            }
        }
    };
    findings.sort_by_key(|f| (f.line, f.column));
    match meta {
        Some(meta) if findings.is_empty() => {
            let transpiled =
                emit_parsed(specifier, parsed, source_hash(source)).map_err(|d| vec![syntax(d)])?;
            Ok(AnalyzedTool { meta, transpiled })
        }
        _ => Err(findings),
    }
}

fn syntax(d: Diagnostic) -> Finding {
    Finding::new(rule::SYNTAX, d.message, d.line, d.column)
}

/// Converts the `tool` initializer and checks name, schemas and tests.
fn extract_meta(init: &Expr, text: &SourceTextInfo, out: &mut Vec<Finding>) -> Option<ToolMeta> {
    let value = match to_json(init) {
        Ok(v) => v,
        Err(e) => {
            let message = format!("`tool` must be a static literal: {}", e.message);
            out.push(Finding::at(rule::TOOL_META, message, e.span, text));
            return None;
        }
    };
    let obj = match unwrap_type_wrappers(init) {
        Expr::Object(obj) => obj,
        other => {
            let message = "`tool` must be an object literal";
            out.push(Finding::at(rule::TOOL_META, message, other.span(), text));
            return None;
        }
    };
    let at = |key: &str| key_span(obj, key).unwrap_or(obj.span);
    let meta: ToolMeta = match serde_json::from_value(value) {
        Ok(m) => m,
        Err(e) => {
            out.push(Finding::at(
                rule::TOOL_META,
                format!("`tool`: {e}"),
                obj.span,
                text,
            ));
            return None;
        }
    };
    let before = out.len();
    if !is_valid_tool_name(&meta.name) {
        let message = format!(
            "tool name \"{}\" must match ^[a-z][a-z0-9_]{{0,63}}$",
            meta.name
        );
        out.push(Finding::at(rule::TOOL_META, message, at("name"), text));
    }
    let input_ok = check_io_schema("input", &meta.input, at("input"), text, out);
    let output_ok = check_io_schema("output", &meta.output, at("output"), text, out);
    if input_ok && meta.input.get("type") != Some(&Value::String("object".into())) {
        let message = "input schema: `type` must be \"object\" (arguments are an object)";
        out.push(Finding::at(rule::SCHEMA, message, at("input"), text));
    }
    let tests_span = at("tests");
    for problem in check_tests(&meta, input_ok, output_ok) {
        out.push(Finding::at(rule::TOOL_TEST, problem, tests_span, text));
    }
    (out.len() == before).then_some(meta)
}

fn check_io_schema(
    which: &str,
    schema: &Value,
    span: Span,
    text: &SourceTextInfo,
    out: &mut Vec<Finding>,
) -> bool {
    match check_schema(schema) {
        Ok(()) => true,
        Err(e) => {
            out.push(Finding::at(
                rule::SCHEMA,
                format!("{which} schema: {e}"),
                span,
                text,
            ));
            false
        }
    }
}

/// Problems with the declared tests, each prefixed with the test's name.
fn check_tests(meta: &ToolMeta, input_ok: bool, output_ok: bool) -> Vec<String> {
    let mut problems = Vec::new();
    let mut names = std::collections::HashSet::new();
    for t in &meta.tests {
        let mut bad = |msg: String| problems.push(format!("test \"{}\": {msg}", t.name));
        if t.name.trim().is_empty() {
            bad("name must not be empty".into());
        }
        if !names.insert(t.name.as_str()) {
            bad("duplicate test name".into());
        }
        if input_ok {
            if let Err(errs) = validate(&meta.input, &t.args) {
                bad(format!(
                    "args do not match the input schema: {}",
                    errs.join("; ")
                ));
            }
        }
        match (&t.expect, &t.expect_error) {
            (Some(_), Some(_)) => bad("has both `expect` and `expect_error`".into()),
            (Some(expect), None) if output_ok => {
                if let Err(errs) = validate(&meta.output, expect) {
                    bad(format!(
                        "`expect` does not match the output schema: {}",
                        errs.join("; ")
                    ));
                }
            }
            (None, Some(e)) if !has_kind(e) => {
                bad("`expect_error` must be an object with a string `kind`".into())
            }
            _ => {}
        }
        for (i, s) in t.syscalls.iter().enumerate() {
            if s.primitive.is_empty() {
                bad(format!("syscalls[{i}]: `primitive` must not be empty"));
            }
            match (&s.result, &s.error) {
                (Some(_), Some(_)) => bad(format!("syscalls[{i}]: has both `result` and `error`")),
                (None, Some(e)) if !has_kind(e) => bad(format!(
                    "syscalls[{i}]: `error` must be an object with a string `kind`"
                )),
                _ => {}
            }
        }
    }
    problems
}

fn has_kind(v: &Value) -> bool {
    v.get("kind").is_some_and(Value::is_string)
}

/// The span of top-level property `key` in the `tool` object literal.
fn key_span(obj: &ObjectLit, key: &str) -> Option<Span> {
    obj.props.iter().find_map(|p| match p {
        PropOrSpread::Prop(p) => match &**p {
            Prop::KeyValue(kv) => {
                let name = match &kv.key {
                    PropName::Ident(id) => id.sym.to_string(),
                    PropName::Str(s) => s.value.to_string_lossy().into_owned(),
                    _ => return None,
                };
                (name == key).then(|| kv.key.span())
            }
            _ => None,
        },
        PropOrSpread::Spread(_) => None,
    })
}
