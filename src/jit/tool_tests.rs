//! Tests for [`analyze`](super::tool::analyze): whole tool sources in, findings or metadata out.

use serde_json::json;

use super::finding::Finding;
use super::tool::{analyze, is_valid_tool_name, AnalyzeOptions, AnalyzedTool, MAX_DECLARED_TESTS};

pub(super) const GOOD: &str = r#"import type { Libos } from "libos";

export const tool = {
  name: "count_lines",
  description: "Counts lines of a text file",
  input: { type: "object", properties: { path: { type: "string" } }, required: ["path"] },
  output: { type: "object", properties: { lines: { type: "integer" } }, required: ["lines"] },
  tests: [
    { name: "three lines", args: { path: "a.txt" },
      syscalls: [ { primitive: "fs.read_text", result: "a\nb\nc" } ],
      expect: { lines: 3 } },
    { name: "denied", args: { path: "secret.txt" },
      syscalls: [ { primitive: "fs.read_text", args: { path: "secret.txt" },
                    error: { kind: "PermissionDenied", resource: "secret.txt", right: "read" } } ],
      expect_error: { kind: "PermissionDenied" } },
    { name: "null result", args: { path: "n" },
      syscalls: [ { primitive: "fs.write_text", result: null } ], expect: { lines: 0 } },
  ],
  limits: { cpu_ms: 1000, heap_mb: 32 },
};

export default async function run(args: { path: string }, libos: Libos) {
  const text = await libos.fs.readText(args.path);
  return { lines: text.split("\n").length };
}
"#;

fn ok(src: &str) -> AnalyzedTool {
    match analyze("count_lines.ts", src, &AnalyzeOptions::default()) {
        Ok(t) => t,
        Err(f) => panic!("unexpected findings: {f:#?}"),
    }
}

fn findings(src: &str) -> Vec<Finding> {
    analyze("t.ts", src, &AnalyzeOptions::default()).expect_err("should be rejected")
}

fn rules_of(src: &str) -> Vec<String> {
    findings(src).into_iter().map(|f| f.rule).collect()
}

/// GOOD with its `run` body replaced.
fn with_body(body: &str) -> String {
    GOOD.replace(
        "  const text = await libos.fs.readText(args.path);\n",
        &format!("  {body}\n  const text = await libos.fs.readText(args.path);\n"),
    )
}

#[test]
fn clean_tool_passes_and_meta_is_extracted() {
    let t = ok(GOOD);
    assert_eq!(t.meta.name, "count_lines");
    assert_eq!(t.meta.description, "Counts lines of a text file");
    assert_eq!(t.meta.input["required"], json!(["path"]));
    assert_eq!(t.meta.output["properties"]["lines"]["type"], "integer");
    assert_eq!(t.meta.limits.cpu_ms, Some(1000));
    assert_eq!(t.meta.limits.heap_mb, Some(32));
    assert_eq!(t.meta.limits.syscalls, None);
    assert!(!t.transpiled.code.contains("import type"));
    assert!(t.transpiled.source_map.is_some());
    assert_eq!(t.transpiled.hash, super::transpile::source_hash(GOOD));
}

#[test]
fn declared_tests_extracted() {
    let tests = ok(GOOD).meta.tests;
    assert_eq!(tests.len(), 3);
    let t = &tests[0];
    assert_eq!(t.name, "three lines");
    assert_eq!(t.args, json!({"path": "a.txt"}));
    assert_eq!(t.syscalls.len(), 1);
    assert_eq!(t.syscalls[0].primitive, "fs.read_text");
    assert_eq!(t.syscalls[0].result, Some(json!("a\nb\nc")));
    assert_eq!(t.syscalls[0].error, None);
    assert_eq!(t.expect, Some(json!({"lines": 3})));
    assert_eq!(t.expect_error, None);

    let d = &tests[1];
    assert_eq!(d.syscalls[0].args, Some(json!({"path": "secret.txt"})));
    assert_eq!(
        d.syscalls[0].error,
        Some(json!({"kind": "PermissionDenied", "resource": "secret.txt", "right": "read"}))
    );
    assert_eq!(d.expect, None);
    assert_eq!(d.expect_error, Some(json!({"kind": "PermissionDenied"})));

    assert_eq!(
        tests[2].syscalls[0].result,
        Some(json!(null)),
        "null is a value"
    );
}

#[test]
fn every_rule_is_caught_and_named() {
    let cases = [
        ("const m = await import(\"libos\");", "no-dynamic-import"),
        ("eval(\"1\");", "no-eval"),
        ("const e = globalThis.eval;", "no-eval"),
        ("new Function(\"return 1\");", "no-function-constructor"),
        (
            "(async () => {}).constructor(\"x\");",
            "no-function-constructor",
        ),
        ("const fs = require(\"fs\");", "no-require"),
        ("Deno.core.print(\"x\");", "no-host-global"),
    ];
    for (body, rule) in cases {
        let f = findings(&with_body(body));
        assert_eq!(f.len(), 1, "{body}: {f:?}");
        assert_eq!(f[0].rule, rule, "{body}");
        assert_eq!(f[0].line, 23, "{body}");
        assert!(f[0].to_string().starts_with("23:"), "{}", f[0]);
    }
}

#[test]
fn forbidden_specifiers_rejected() {
    for spec in [
        "node:fs",
        "npm:x",
        "https://x/y.ts",
        "file:///etc/passwd",
        "./local.ts",
    ] {
        let src = format!("import {{ readFileSync }} from \"{spec}\";\n{GOOD}");
        let f = findings(&src);
        assert_eq!(f.len(), 1, "{spec}: {f:?}");
        assert_eq!(f[0].rule, "no-forbidden-import");
        assert!(f[0].message.contains(spec), "{}", f[0].message);
        assert_eq!((f[0].line, f[0].column), (1, 30));
    }
}

#[test]
fn allowlist_option_is_honoured() {
    let src = format!("import type {{ Join }} from \"jsr:@std/path\";\n{GOOD}");
    let opts = AnalyzeOptions {
        allowed_imports: vec!["libos".into(), "jsr:@std/path".into()],
    };
    assert!(analyze("t.ts", &src, &opts).is_ok());
    // Allowed means allowed for types: a value import would be a module load at run time.
    let value = format!("import {{ join }} from \"jsr:@std/path\";\n{GOOD}");
    let f = analyze("t.ts", &value, &opts).unwrap_err();
    assert_eq!(f[0].rule, "type-only-import");
}

#[test]
fn all_findings_reported_at_once() {
    let src = format!(
        "import x from \"node:fs\";\n{}",
        with_body("eval(\"1\"); new Function(\"x\"); Deno.exit(0);")
    );
    let rules = rules_of(&src);
    assert_eq!(
        rules,
        [
            "no-forbidden-import",
            "no-eval",
            "no-function-constructor",
            "no-host-global"
        ]
    );
}

#[test]
fn non_literal_tool_rejected() {
    for (replace, with, needle, line) in [
        (
            "name: \"count_lines\",",
            "name: NAME,",
            "identifier `NAME`",
            4,
        ),
        (
            "name: \"count_lines\",",
            "name: `count_${1}`,",
            "substitutions",
            4,
        ),
        ("name: \"count_lines\",", "name: String(1),", "calls", 4),
        (
            "name: \"count_lines\",",
            "...base, name: \"c\",",
            "spread",
            4,
        ),
        (
            "name: \"count_lines\",",
            "[\"na\" + \"me\"]: \"c\",",
            "computed",
            4,
        ),
        (
            "name: \"count_lines\",",
            "get name() { return \"c\" },",
            "getters",
            4,
        ),
        (
            "limits: { cpu_ms: 1000, heap_mb: 32 },",
            "limits: { cpu_ms: 10 * 100 },",
            "JSON-like",
            19,
        ),
    ] {
        let src = GOOD.replace(replace, with);
        let f = findings(&src);
        assert_eq!(f.len(), 1, "{with}: {f:?}");
        assert_eq!(f[0].rule, "tool-meta", "{with}");
        assert!(f[0].message.contains("static literal"), "{}", f[0].message);
        assert!(f[0].message.contains(needle), "{with}: {}", f[0].message);
        assert_eq!(f[0].line, line, "{with}");
    }
    let src = GOOD
        .replace("export const tool = {", "export const tool = makeTool({")
        .replace("\n};\n\nexport default", "\n});\n\nexport default");
    let f = findings(&src);
    assert_eq!(rules_of(&src), ["tool-meta"]);
    assert!(f[0].message.contains("calls"), "{}", f[0].message);
}

#[test]
fn tool_as_const_is_fine() {
    let src = GOOD.replace(
        "  limits: { cpu_ms: 1000, heap_mb: 32 },\n};",
        "} as const;",
    );
    assert_eq!(ok(&src).meta.limits, Default::default());
}

#[test]
fn missing_tool_and_default_export() {
    let f = findings("export const x = 1;\n");
    let rules: Vec<&str> = f.iter().map(|f| f.rule.as_str()).collect();
    assert!(rules.contains(&"tool-meta"), "{f:?}");
    assert!(rules.contains(&"default-export"), "{f:?}");

    let src = GOOD.replace("export default async function run", "async function run");
    assert_eq!(rules_of(&src), ["default-export"]);
    let src = GOOD.replace(
        "export default async function run",
        "export async function run",
    );
    assert_eq!(rules_of(&src), ["default-export"]);
    let src = format!(
        "{}export default {{}};\n",
        GOOD.replace("export default async function run", "async function run")
    );
    assert_eq!(rules_of(&src), ["default-export"]);
}

#[test]
fn meta_shape_errors() {
    let f = findings(&GOOD.replace("  description: \"Counts lines of a text file\",\n", ""));
    assert_eq!(f[0].rule, "tool-meta");
    assert!(f[0].message.contains("description"), "{}", f[0].message);

    let f = findings(&GOOD.replace("limits: {", "extra: 1, limits: {"));
    assert!(f[0].message.contains("extra"), "{}", f[0].message);

    let f = findings(&GOOD.replace("cpu_ms: 1000", "cpu_ms: -5"));
    assert_eq!(f[0].rule, "tool-meta");
    let f = findings(&GOOD.replace("cpu_ms: 1000", "cpu_ms: 1000, wall_ms: 5"));
    assert!(f[0].message.contains("wall_ms"), "{}", f[0].message);
}

#[test]
fn bad_names_rejected() {
    for bad in ["Count", "1count", "count-lines", "", &"a".repeat(65)] {
        assert!(!is_valid_tool_name(bad), "{bad}");
        let f = findings(&GOOD.replace("\"count_lines\"", &format!("\"{bad}\"")));
        assert_eq!(f[0].rule, "tool-meta");
        assert_eq!((f[0].line, f[0].column), (4, 3), "points at `name`");
    }
    assert!(is_valid_tool_name("a"));
    assert!(is_valid_tool_name(&format!("a{}", "_9".repeat(31) + "x")));
}

#[test]
fn bad_schemas_rejected() {
    let src = GOOD.replace(
        "path: { type: \"string\" }",
        "path: { type: \"string\", pattern: \"^a\" }",
    );
    let f = findings(&src);
    assert_eq!(f.len(), 1, "{f:?}");
    assert_eq!(f[0].rule, "schema");
    assert!(
        f[0].message
            .starts_with("input schema: $.properties.path.pattern"),
        "{}",
        f[0].message
    );
    assert_eq!((f[0].line, f[0].column), (6, 3));

    let src = GOOD.replace("lines: { type: \"integer\" }", "lines: { type: \"int\" }");
    let f = findings(&src);
    assert_eq!(f[0].rule, "schema");
    assert!(
        f[0].message.starts_with("output schema: "),
        "{}",
        f[0].message
    );

    let src = GOOD
        .replace("input: { type: \"object\", properties: { path: { type: \"string\" } }, required: [\"path\"] }", "input: { type: \"string\" }")
        .replace("args: { path: \"a.txt\" }", "args: \"a.txt\"")
        .replace("args: { path: \"secret.txt\" },\n", "args: \"s\",\n")
        .replace("args: { path: \"n\" }", "args: \"n\"");
    let f = findings(&src);
    assert_eq!(f.len(), 1, "{f:?}");
    assert!(
        f[0].message.contains("must be \"object\""),
        "{}",
        f[0].message
    );
}

#[test]
fn declared_tests_checked_against_schemas() {
    let f = findings(&GOOD.replace("args: { path: \"a.txt\" }", "args: { path: 3 }"));
    assert_eq!(f.len(), 1, "{f:?}");
    assert_eq!(f[0].rule, "tool-test");
    assert!(
        f[0].message.contains("test \"three lines\": args do not match the input schema: $.path: expected string, got integer"),
        "{}",
        f[0].message
    );
    let f = findings(&GOOD.replace("expect: { lines: 3 }", "expect: { lines: \"3\" }"));
    assert!(
        f[0].message
            .contains("$.lines: expected integer, got string"),
        "{}",
        f[0].message
    );
    let f = findings(&GOOD.replace(
        "expect: { lines: 3 }",
        "expect: { lines: 3 }, expect_error: { kind: \"X\" }",
    ));
    assert!(f[0].message.contains("both"), "{}", f[0].message);
    let f = findings(&GOOD.replace(
        "expect_error: { kind: \"PermissionDenied\" }",
        "expect_error: \"PermissionDenied\"",
    ));
    assert!(f[0].message.contains("`kind`"), "{}", f[0].message);
    let f = findings(&GOOD.replace(
        "result: \"a\\nb\\nc\"",
        "result: \"x\", error: { kind: \"Io\" }",
    ));
    assert!(
        f[0].message.contains("syscalls[0]: has both"),
        "{}",
        f[0].message
    );
    let f = findings(&GOOD.replace("name: \"denied\"", "name: \"three lines\""));
    assert!(f[0].message.contains("duplicate"), "{}", f[0].message);
    let f = findings(&GOOD.replace("expect: { lines: 3 }", "expected: { lines: 3 }"));
    assert_eq!(f[0].rule, "tool-meta");
    assert!(f[0].message.contains("expected"), "{}", f[0].message);
}

#[test]
fn declared_tests_are_capped_per_tool() {
    let many: String = (0..=MAX_DECLARED_TESTS)
        .map(|i| format!("{{ name: \"t{i}\", args: {{ path: \"a\" }}, expect: {{ lines: 1 }} }},"))
        .collect();
    let src = GOOD.replace("  tests: [", &format!("  tests: [{many}"));
    let f = findings(&src);
    assert_eq!(f[0].rule, "tool-test");
    assert!(
        f[0].message
            .contains(&format!("at most {MAX_DECLARED_TESTS} tests")),
        "{}",
        f[0].message
    );
}

#[test]
fn syntax_error_reported_with_ts_position() {
    let src = "import type { Libos } from \"libos\";\n\nexport const x = {;\n";
    let f = findings(src);
    assert_eq!(f.len(), 1);
    assert_eq!(f[0].rule, "syntax");
    assert_eq!((f[0].line, f[0].column), (3, 19), "{}", f[0]);
}
