//! Bakes the libos bootstrap (`ts/libos.ts`) and the ops extension into a startup snapshot,
//! so that every isolate is restored from it instead of running deno_core's built-in scripts
//! and the bootstrap again (`src/isolate/runtime.rs`).
//!
//! Writes two files to `OUT_DIR`: `libos.snapshot` (the snapshot) and `libos.js.map` (the
//! source map of the bootstrap inside it, for stack traces). Both are empty when no snapshot
//! is made — with the `v8` engine, whose prebuilt library may be missing at build time, and
//! under `DOCS_RS` (the offline type-check) — and isolates then run the bootstrap at
//! creation instead.

// A build script reads cargo's environment and writes its own output directory.
#![allow(clippy::disallowed_methods)]

use std::path::Path;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=ts/libos.ts");
    println!("cargo:rerun-if-changed=ops/src");
    println!("cargo:rerun-if-env-changed=DOCS_RS");
    let out_dir = std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR");
    let out_dir = Path::new(&out_dir);
    let (snapshot, source_map) = make();
    write(&out_dir.join("libos.snapshot"), &snapshot);
    write(&out_dir.join("libos.js.map"), source_map.as_bytes());
}

fn write(path: &Path, bytes: &[u8]) {
    if let Err(e) = std::fs::write(path, bytes) {
        panic!("build: cannot write {}: {e}", path.display());
    }
}

#[cfg(not(feature = "quickjs"))]
fn make() -> (Vec<u8>, String) {
    (Vec::new(), String::new())
}

#[cfg(feature = "quickjs")]
fn make() -> (Vec<u8>, String) {
    if std::env::var_os("DOCS_RS").is_some() {
        return (Vec::new(), String::new());
    }
    snapshot::make()
}

#[cfg(feature = "quickjs")]
mod snapshot {

    use deno_ast::{
        EmitOptions, MediaType, ModuleSpecifier, ParseParams, SourceMapOption,
        TranspileModuleOptions, TranspileOptions,
    };
    use deno_core::snapshot::{create_snapshot, CreateSnapshotOptions};
    use deno_core::v8;

    /// The name the bootstrap runs under; `src/isolate/runtime.rs` registers its source map
    /// under the same name.
    const BOOTSTRAP_NAME: &str = "libos:libos.ts";

    pub(super) fn make() -> (Vec<u8>, String) {
        // The engine writes compiled scripts to a per-user cache unless told not to; the
        // build has no business there.
        std::env::set_var("V82JSC_NO_BC_CACHE", "1");
        let source = std::fs::read_to_string("ts/libos.ts")
            .unwrap_or_else(|e| panic!("build: cannot read ts/libos.ts: {e}"));
        let (code, source_map) = transpile(&source);
        // The script calls its function on `globalThis`; the snapshot holds the function
        // uncalled, under a global the host deletes when it calls it.
        let function = code
            .trim_end()
            .strip_suffix("(globalThis);")
            .unwrap_or_else(|| panic!("build: ts/libos.ts must end with `}})(globalThis);`"))
            .to_string();
        let keep_bootstrap = move |runtime: &mut deno_core::JsRuntimeForSnapshot| {
            let function = match runtime.execute_script(BOOTSTRAP_NAME, function.clone()) {
                Ok(function) => function,
                Err(e) => panic!("build: the libos bootstrap does not compile: {e}"),
            };
            deno_core::scope!(scope, runtime);
            let function = v8::Local::new(scope, function);
            let global = scope.get_current_context().global(scope);
            let key = v8::String::new(scope, "__libos_boot__").expect("a short string");
            let defined = global.define_own_property(
                scope,
                key.into(),
                function,
                v8::PropertyAttribute::DONT_ENUM,
            );
            assert_eq!(
                defined,
                Some(true),
                "build: cannot keep the libos bootstrap"
            );
        };
        let output = create_snapshot(
            CreateSnapshotOptions {
                cargo_manifest_dir: env!("CARGO_MANIFEST_DIR"),
                startup_snapshot: None,
                skip_op_registration: false,
                extensions: vec![agent_libos_ops::libos_ops::init()],
                extension_transpiler: None,
                with_runtime_cb: Some(Box::new(keep_bootstrap)),
            },
            None,
        )
        .unwrap_or_else(|e| panic!("build: cannot make the startup snapshot: {e}"));
        for file in output.files_loaded_during_snapshot {
            println!("cargo:rerun-if-changed={}", file.display());
        }
        (output.output.into_vec(), source_map)
    }

    /// Strips the types of `libos.ts` (it uses only type annotations over plain JavaScript).
    fn transpile(source: &str) -> (String, String) {
        let parsed = deno_ast::parse_module(ParseParams {
            specifier: ModuleSpecifier::parse("libos:libos.ts").expect("a static URL"),
            text: source.into(),
            media_type: MediaType::TypeScript,
            capture_tokens: false,
            scope_analysis: false,
            maybe_syntax: None,
        })
        .unwrap_or_else(|e| panic!("build: ts/libos.ts does not parse: {e}"));
        let emitted = parsed
            .transpile(
                &TranspileOptions {
                    jsx: None,
                    ..TranspileOptions::default()
                },
                &TranspileModuleOptions::default(),
                &EmitOptions {
                    source_map: SourceMapOption::Separate,
                    source_map_base: None,
                    source_map_file: Some(BOOTSTRAP_NAME.into()),
                    inline_sources: true,
                    remove_comments: false,
                },
            )
            .unwrap_or_else(|e| panic!("build: ts/libos.ts does not transpile: {e}"))
            .into_source();
        (emitted.text, emitted.source_map.unwrap_or_default())
    }
}
