//! TypeScript → JavaScript transpilation of JIT tools, with a content-hash cache.
//!
//! [`transpile`] parses a tool as a TypeScript ES module with `deno_ast`, strips types
//! (type-only imports disappear), and emits an ES module plus a *separate* JSON source map
//! so stack traces from the isolate can be mapped back to TypeScript line:column.
//! [`TranspileCache`] memoises results by `(specifier, sha256(source))`; a hit never parses.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use deno_ast::diagnostics::Diagnostic as _;
use deno_ast::{
    EmitOptions, MediaType, ModuleSpecifier, ParseDiagnostic, ParseParams, ParsedSource,
    SourceMapOption, TranspileError, TranspileModuleOptions, TranspileOptions,
};
use parking_lot::Mutex;
use sha2::{Digest, Sha256};

/// The JavaScript emitted for one TypeScript tool source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transpiled {
    /// The emitted ES module (JavaScript). Carries no inline source map.
    pub code: String,
    /// The source map for `code`, as JSON (sources are inlined).
    pub source_map: Option<String>,
    /// Lowercase hex sha256 of the TypeScript source.
    pub hash: String,
}

/// A syntax (or emit) error, located in the TypeScript source.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{specifier}:{line}:{column}: {message}")]
pub struct Diagnostic {
    /// The specifier the caller passed in.
    pub specifier: String,
    /// Human-readable message.
    pub message: String,
    /// 1-based line in the TypeScript source.
    pub line: usize,
    /// 1-based column in the TypeScript source.
    pub column: usize,
}

/// Lowercase hex sha256 of `source`.
pub fn source_hash(source: &str) -> String {
    hex::encode(Sha256::digest(source.as_bytes()))
}

/// Turns the caller's specifier into a URL for deno_ast: absolute URLs are kept,
/// anything else becomes `file:///<specifier>`.
pub(crate) fn module_url(specifier: &str) -> ModuleSpecifier {
    if let Ok(url) = ModuleSpecifier::parse(specifier) {
        return url;
    }
    let path = specifier.trim_start_matches('/');
    ModuleSpecifier::parse(&format!("file:///{path}"))
        .unwrap_or_else(|_| ModuleSpecifier::parse("file:///tool.ts").expect("static URL"))
}

pub(crate) fn diagnostic_from_parse(specifier: &str, d: &ParseDiagnostic) -> Diagnostic {
    let pos = d.display_position();
    Diagnostic {
        specifier: specifier.to_string(),
        message: d.message().into_owned(),
        line: pos.line_number,
        column: pos.column_number,
    }
}

/// Parses `source` as a TypeScript module. Recoverable parse errors are reported too.
pub(crate) fn parse(specifier: &str, source: &str) -> Result<ParsedSource, Diagnostic> {
    let parsed = deno_ast::parse_module(ParseParams {
        specifier: module_url(specifier),
        text: source.into(),
        media_type: MediaType::TypeScript,
        capture_tokens: false,
        scope_analysis: false,
        maybe_syntax: None,
    })
    .map_err(|d| diagnostic_from_parse(specifier, &d))?;
    if let Some(d) = parsed.diagnostics().first() {
        return Err(diagnostic_from_parse(specifier, d));
    }
    Ok(parsed)
}

/// Emits an already-parsed module (consumes it, so the program is not cloned).
pub(crate) fn emit_parsed(
    specifier: &str,
    parsed: ParsedSource,
    hash: String,
) -> Result<Transpiled, Diagnostic> {
    let transpile_options = TranspileOptions {
        jsx: None,
        ..TranspileOptions::default()
    };
    let emit_options = EmitOptions {
        source_map: SourceMapOption::Separate,
        source_map_base: None,
        source_map_file: Some(specifier.to_string()),
        inline_sources: true,
        remove_comments: false,
    };
    let emitted = parsed
        .transpile(
            &transpile_options,
            &TranspileModuleOptions::default(),
            &emit_options,
        )
        .map_err(|e| transpile_error(specifier, e))?
        .into_source();
    Ok(Transpiled {
        code: emitted.text,
        source_map: emitted.source_map,
        hash,
    })
}

fn transpile_error(specifier: &str, err: TranspileError) -> Diagnostic {
    match err {
        TranspileError::ParseErrors(errs) if !errs.0.is_empty() => {
            diagnostic_from_parse(specifier, &errs.0[0])
        }
        other => Diagnostic {
            specifier: specifier.to_string(),
            message: other.to_string(),
            line: 1,
            column: 1,
        },
    }
}

/// Transpiles a TypeScript ES module to a JavaScript ES module with a separate source map.
/// Like `analyze`, refuses a source too large or too deeply nested before parsing it, and
/// parses on the front end's own thread.
pub fn transpile(specifier: &str, source: &str) -> Result<Transpiled, Diagnostic> {
    let refused = |message: String| Diagnostic {
        specifier: specifier.to_string(),
        message,
        line: 1,
        column: 1,
    };
    super::guard::check(source).map_err(|f| Diagnostic {
        line: f.line,
        column: f.column,
        ..refused(f.message)
    })?;
    super::guard::on_front_end_thread(|| {
        let parsed = parse(specifier, source)?;
        emit_parsed(specifier, parsed, source_hash(source))
    })
    .unwrap_or_else(|e| Err(refused(e)))
}

type CacheKey = (String, String);

/// Thread-safe, bounded memo of [`transpile`] keyed by specifier and source hash.
///
/// Eviction is FIFO by insertion order. Errors are not cached.
pub struct TranspileCache {
    capacity: usize,
    inner: Mutex<CacheInner>,
}

#[derive(Default)]
struct CacheInner {
    map: HashMap<CacheKey, Arc<Transpiled>>,
    order: VecDeque<CacheKey>,
}

impl Default for TranspileCache {
    fn default() -> Self {
        Self::new(Self::DEFAULT_CAPACITY)
    }
}

impl TranspileCache {
    /// Default number of entries kept.
    pub const DEFAULT_CAPACITY: usize = 512;

    /// A cache holding at most `capacity` entries (at least one).
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity: capacity.max(1),
            inner: Mutex::new(CacheInner::default()),
        }
    }

    /// Number of cached entries.
    pub fn len(&self) -> usize {
        self.inner.lock().map.len()
    }

    /// Whether the cache is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Returns the cached result for this exact source, or transpiles and caches it.
    pub fn get_or_transpile(
        &self,
        specifier: &str,
        source: &str,
    ) -> Result<Arc<Transpiled>, Diagnostic> {
        let key = (specifier.to_string(), source_hash(source));
        if let Some(hit) = self.inner.lock().map.get(&key) {
            return Ok(hit.clone());
        }
        // Transpile outside the lock; a racing duplicate is harmless.
        let out = Arc::new(transpile(specifier, source)?);
        Ok(self.insert(key, out))
    }

    /// Stores an already-transpiled result (e.g. from `analyze`), returning the cached Arc.
    pub fn insert_transpiled(&self, specifier: &str, transpiled: Transpiled) -> Arc<Transpiled> {
        let key = (specifier.to_string(), transpiled.hash.clone());
        self.insert(key, Arc::new(transpiled))
    }

    fn insert(&self, key: CacheKey, value: Arc<Transpiled>) -> Arc<Transpiled> {
        let mut inner = self.inner.lock();
        if let Some(existing) = inner.map.get(&key) {
            return existing.clone();
        }
        while inner.map.len() >= self.capacity {
            match inner.order.pop_front() {
                Some(old) => {
                    inner.map.remove(&old);
                }
                None => break,
            }
        }
        inner.order.push_back(key.clone());
        inner.map.insert(key, value.clone());
        value
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOOL: &str = r#"import type { Libos } from "libos";
interface Args { path: string }
export const tool = { name: "count_lines" };
export default async function run(args: Args, libos: Libos): Promise<{ lines: number }> {
  const text: string = await libos.fs.readText(args.path);
  return { lines: text.split("\n").length as number };
}
"#;

    #[test]
    fn strips_types_and_keeps_esm() {
        let out = transpile("file:///tools/count_lines.ts", TOOL).unwrap();
        assert!(!out.code.contains("import type"), "{}", out.code);
        assert!(!out.code.contains("libos\""), "{}", out.code);
        assert!(!out.code.contains("interface"), "{}", out.code);
        assert!(!out.code.contains(": Args"), "{}", out.code);
        assert!(!out.code.contains("Promise<"), "{}", out.code);
        assert!(!out.code.contains(" as number"), "{}", out.code);
        assert!(out
            .code
            .contains("export default async function run(args, libos)"));
        assert!(out.code.contains("export const tool"));
        assert!(
            !out.code.contains("sourceMappingURL=data:"),
            "map must not be inline"
        );
        assert_eq!(out.hash, source_hash(TOOL));
        assert_eq!(out.hash.len(), 64);
    }

    #[test]
    fn source_map_is_separate_json() {
        let out = transpile("count_lines.ts", TOOL).unwrap();
        let map: serde_json::Value =
            serde_json::from_str(out.source_map.as_deref().expect("source map")).unwrap();
        assert_eq!(map["version"], 3);
        assert!(map["mappings"].as_str().is_some_and(|m| !m.is_empty()));
        assert_eq!(map["sources"][0], "file:///count_lines.ts");
        assert_eq!(map["sourcesContent"][0], TOOL);
    }

    #[test]
    fn syntax_error_has_ts_line_and_column() {
        let src = "export const a = 1;\nexport const b = 2;\nconst x = ;\n";
        let err = transpile("bad.ts", src).unwrap_err();
        assert_eq!(err.specifier, "bad.ts");
        assert_eq!((err.line, err.column), (3, 11), "{err}");
        assert!(err.to_string().starts_with("bad.ts:3:11: "), "{err}");

        let src = "// one\nlet ok = 1;\nconst x = ;\n";
        let err = transpile("bad.ts", src).unwrap_err();
        assert_eq!(err.line, 3);
    }

    #[test]
    fn syntax_error_col_nine() {
        let src = "// line 1\n// line 2\nlet a = {{;\n";
        let err = transpile("bad.ts", src).unwrap_err();
        assert_eq!((err.line, err.column), (3, 10), "{err}");
        let src = "// line 1\n// line 2\nlet a = );\n";
        let err = transpile("bad.ts", src).unwrap_err();
        assert_eq!((err.line, err.column), (3, 9), "{err}");
    }

    #[test]
    fn cache_hit_returns_same_arc() {
        let cache = TranspileCache::default();
        let a = cache.get_or_transpile("t.ts", TOOL).unwrap();
        let b = cache.get_or_transpile("t.ts", TOOL).unwrap();
        assert!(Arc::ptr_eq(&a, &b));
        assert_eq!(cache.len(), 1);
        let c = cache.get_or_transpile("u.ts", TOOL).unwrap();
        assert!(!Arc::ptr_eq(&a, &c));
        assert!(cache.get_or_transpile("t.ts", "let = ;").is_err());
        assert_eq!(cache.len(), 2);
    }

    #[test]
    fn cache_is_shareable_across_threads() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<TranspileCache>();
        let cache = Arc::new(TranspileCache::default());
        let handles: Vec<_> = (0..4)
            .map(|_| {
                let cache = cache.clone();
                std::thread::spawn(move || cache.get_or_transpile("t.ts", TOOL).unwrap())
            })
            .collect();
        for h in handles {
            assert_eq!(h.join().unwrap().hash, source_hash(TOOL));
        }
        assert_eq!(cache.len(), 1);
    }

    #[test]
    fn cache_is_bounded() {
        let cache = TranspileCache::new(2);
        let first = cache
            .get_or_transpile("a.ts", "export const a = 1;")
            .unwrap();
        cache
            .get_or_transpile("b.ts", "export const b = 1;")
            .unwrap();
        cache
            .get_or_transpile("c.ts", "export const c = 1;")
            .unwrap();
        assert_eq!(cache.len(), 2);
        let again = cache
            .get_or_transpile("a.ts", "export const a = 1;")
            .unwrap();
        assert!(!Arc::ptr_eq(&first, &again), "oldest entry was evicted");
    }
}
