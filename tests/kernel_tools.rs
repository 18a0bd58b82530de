//! JIT TypeScript tools through the kernel: lifecycle, isolation, authority, limits.
// Tests build their fixtures on the host and drive the real binary.
#![allow(clippy::disallowed_methods, clippy::disallowed_types)]

mod common;

use agent_libos::kernel::{JitCall, ProcCall, Syscall, SyscallError};
use common::{call, install, propose};
use serde_json::json;

const READ_FILE: &str = r#"
import type { Libos } from "libos";
export const tool = {
  name: "read_file",
  description: "reads a text file",
  input: { type: "object", properties: { path: { type: "string" } }, required: ["path"] },
  output: { type: "object", properties: { text: { type: "string" } }, required: ["text"] },
  tests: [
    { name: "reads", args: { path: "a.txt" }, syscalls: [ { primitive: "fs.read_text", args: { path: "a.txt" }, result: "hi" } ], expect: { text: "hi" } },
    { name: "denied", args: { path: "b.txt" }, syscalls: [ { primitive: "fs.read_text", error: { kind: "PermissionDenied", resource: "fs:b.txt", right: "read" } } ], expect_error: { kind: "PermissionDenied" } }
  ]
};
export default async function run(args: { path: string }, libos: Libos) {
  return { text: await libos.fs.readText(args.path) };
}
"#;

#[tokio::test]
async fn a_tool_is_proposed_validated_registered_and_called_with_the_process_authority() {
    let h = common::host().await;
    std::fs::write(h.workspace().join("a.txt"), "alpha").unwrap();
    std::fs::write(h.workspace().join("secret.txt"), "no").unwrap();
    let pid = h.spawn(&["tool:read_file=create", "fs:a.txt=read"]).await;
    let name = install(&h.kernel, pid, READ_FILE).await.unwrap();
    assert_eq!(
        call(&h.kernel, pid, &name, json!({"path": "a.txt"}))
            .await
            .unwrap(),
        json!({"text": "alpha"})
    );
    match call(&h.kernel, pid, &name, json!({"path": "secret.txt"})).await {
        Err(SyscallError::PermissionDenied {
            resource, right, ..
        }) => {
            assert_eq!(
                (resource.as_str(), right.as_str()),
                ("fs:secret.txt", "read")
            );
        }
        other => panic!("expected a denial, got {other:?}"),
    }
    // Arguments are checked against the input schema.
    let err = call(&h.kernel, pid, &name, json!({"path": 3}))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), "InvalidArgument");
    // No shadowing.
    let id = propose(&h.kernel, pid, READ_FILE).await;
    h.kernel
        .syscall(pid, Syscall::Tool(JitCall::Validate { id: id.clone() }))
        .await
        .unwrap();
    let err = h
        .kernel
        .syscall(pid, Syscall::Tool(JitCall::Register { id }))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), "AlreadyExists");
}

#[tokio::test]
async fn a_registered_tool_is_visible_only_to_its_process_and_children_do_not_get_parent_authority()
{
    let h = common::host().await;
    std::fs::write(h.workspace().join("a.txt"), "alpha").unwrap();
    let parent = h.spawn(&["tool:read_file=create", "fs:a.txt=read"]).await;
    let other = h.spawn(&["fs:a.txt=read"]).await;
    install(&h.kernel, parent, READ_FILE).await.unwrap();
    let err = call(&h.kernel, other, "read_file", json!({"path": "a.txt"}))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), "NotFound");
    // A forked child gets the tool table but not the capability.
    let child = h
        .kernel
        .syscall(
            parent,
            Syscall::Proc(ProcCall::Fork {
                goal: None,
                inherit: vec![],
                budget: None,
            }),
        )
        .await
        .unwrap()["pid"]
        .as_i64()
        .unwrap();
    let err = call(&h.kernel, child, "read_file", json!({"path": "a.txt"}))
        .await
        .unwrap_err();
    assert!(
        matches!(err, SyscallError::PermissionDenied { ref resource, .. } if resource == "fs:a.txt"),
        "{err:?}"
    );
}

#[tokio::test]
async fn registration_needs_a_capability_and_a_passing_validation() {
    let h = common::host().await;
    let pid = h.spawn(&[]).await;
    let id = propose(&h.kernel, pid, READ_FILE).await;
    let err = h
        .kernel
        .syscall(pid, Syscall::Tool(JitCall::Register { id: id.clone() }))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), "InvalidArgument", "not validated yet");
    h.kernel
        .syscall(pid, Syscall::Tool(JitCall::Validate { id: id.clone() }))
        .await
        .unwrap();
    match h
        .kernel
        .syscall(pid, Syscall::Tool(JitCall::Register { id }))
        .await
    {
        Err(SyscallError::PermissionDenied {
            resource, right, ..
        }) => assert_eq!(
            (resource.as_str(), right.as_str()),
            ("tool:read_file", "create")
        ),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn unsafe_sources_are_rejected_with_the_rule_named() {
    let h = common::host().await;
    let pid = h.spawn(&["tool:*=create"]).await;
    let cases = [
        ("const m = await import('x');", "no-dynamic-import"),
        ("eval('1+1');", "no-eval"),
        ("new Function('return 1')();", "no-function-constructor"),
    ];
    for (body, rule) in cases {
        let source = format!(
            "export const tool = {{ name: \"bad\", description: \"d\", input: {{ type: \"object\" }}, output: {{}} }};\nexport default async function run() {{ {body} return {{}}; }}\n"
        );
        let id = propose(&h.kernel, pid, &source).await;
        let report = h
            .kernel
            .syscall(pid, Syscall::Tool(JitCall::Validate { id }))
            .await
            .unwrap();
        assert_eq!(report["ok"], false);
        assert!(
            report["findings"]
                .as_array()
                .unwrap()
                .iter()
                .any(|f| f["rule"] == rule),
            "{rule}: {report}"
        );
    }
    for spec in [
        "node:fs",
        "npm:lodash",
        "https://example.org/x.ts",
        "file:///etc/passwd",
    ] {
        let source = format!(
            "import x from \"{spec}\";\nexport const tool = {{ name: \"bad\", description: \"d\", input: {{ type: \"object\" }}, output: {{}} }};\nexport default async function run() {{ return {{}}; }}\n"
        );
        let id = propose(&h.kernel, pid, &source).await;
        let report = h
            .kernel
            .syscall(pid, Syscall::Tool(JitCall::Validate { id }))
            .await
            .unwrap();
        let finding = report["findings"]
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["rule"] == "no-forbidden-import")
            .cloned();
        assert!(
            finding.is_some_and(|f| f["message"].as_str().unwrap().contains(spec)),
            "{spec}: {report}"
        );
    }
}

#[tokio::test]
async fn a_syntax_error_reports_the_typescript_line_and_column() {
    let h = common::host().await;
    let pid = h.spawn(&[]).await;
    let id = propose(
        &h.kernel,
        pid,
        "export const tool = {\n  name: \"x\",\n  description: \"d\" +* ,\n};\n",
    )
    .await;
    let report = h
        .kernel
        .syscall(pid, Syscall::Tool(JitCall::Validate { id }))
        .await
        .unwrap();
    let f = &report["findings"][0];
    assert_eq!(f["rule"], "syntax");
    assert_eq!(f["line"], 3, "{report}");
}

#[tokio::test]
async fn a_failing_declared_test_blocks_registration() {
    let h = common::host().await;
    let pid = h.spawn(&["tool:*=create"]).await;
    let source = READ_FILE.replace("expect: { text: \"hi\" }", "expect: { text: \"bye\" }");
    let id = propose(&h.kernel, pid, &source).await;
    let report = h
        .kernel
        .syscall(pid, Syscall::Tool(JitCall::Validate { id: id.clone() }))
        .await
        .unwrap();
    assert_eq!(report["ok"], false);
    let failed = report["tests"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["passed"] == false)
        .unwrap();
    assert_eq!(failed["name"], "reads");
    assert!(
        failed["error"].as_str().unwrap().contains("bye"),
        "{failed}"
    );
    assert_eq!(
        h.kernel
            .syscall(pid, Syscall::Tool(JitCall::Register { id }))
            .await
            .unwrap_err()
            .kind(),
        "InvalidArgument"
    );
}

#[tokio::test]
async fn a_tool_that_throws_surfaces_its_message_and_typescript_stack() {
    let h = common::host().await;
    let pid = h.spawn(&["tool:*=create"]).await;
    let source = "export const tool = { name: \"boom\", description: \"d\", input: { type: \"object\" }, output: {} };\n\
        function inner(n: number): number {\n  if (n > 0) {\n    throw new Error(\"kaboom \" + n);\n  }\n  return n;\n}\n\
        export default async function run() {\n  return { v: inner(2) };\n}\n";
    install(&h.kernel, pid, source).await.unwrap();
    match call(&h.kernel, pid, "boom", json!({})).await {
        Err(SyscallError::ToolError { message, stack }) => {
            assert!(message.contains("kaboom 2"), "{message}");
            assert!(
                stack.contains(".ts:4:"),
                "the stack points at the TypeScript line of the throw: {stack}"
            );
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn limits_stop_the_call_and_the_process_keeps_working() {
    let h = common::host().await;
    let pid = h.spawn(&["tool:*=create", "fs:**=read"]).await;
    std::fs::write(h.workspace().join("a.txt"), "x").unwrap();
    let tool = |name: &str, body: &str| {
        format!(
            "import type {{ Libos }} from \"libos\";\nexport const tool = {{ name: \"{name}\", description: \"d\", input: {{ type: \"object\" }}, output: {{}}, limits: {{ cpu_ms: 300, syscalls: 20, result_bytes: 100000, console_bytes: 1000 }} }};\nexport default async function run(args: any, libos: Libos) {{ {body} }}\n"
        )
    };
    install(&h.kernel, pid, &tool("spin", "while (true) {} "))
        .await
        .unwrap();
    install(
        &h.kernel,
        pid,
        &tool(
            "flood",
            "for (let i = 0; i < 100; i++) { await libos.fs.readText(\"a.txt\"); } return {};",
        ),
    )
    .await
    .unwrap();
    install(
        &h.kernel,
        pid,
        &tool("huge", "return { s: \"x\".repeat(100 * 1024 * 1024) };"),
    )
    .await
    .unwrap();
    install(
        &h.kernel,
        pid,
        &tool("big", "return { s: \"x\".repeat(2 * 1024 * 1024) };"),
    )
    .await
    .unwrap();
    install(&h.kernel, pid, &tool("bomb", "const keep: number[][] = []; while (true) { keep.push(new Array(1 << 20).fill(keep.length)); }").replace("cpu_ms: 300", "heap_mb: 16")).await.unwrap();
    install(
        &h.kernel,
        pid,
        &tool(
            "deep",
            "function f(n: number): number { return f(n + 1) + 1; } return { v: f(0) };",
        ),
    )
    .await
    .unwrap();
    install(
        &h.kernel,
        pid,
        &tool(
            "chatty",
            "for (let i = 0; i < 1000; i++) { console.log(\"line \" + i); } return {};",
        ),
    )
    .await
    .unwrap();
    install(&h.kernel, pid, &tool("ok", "return { fine: true };"))
        .await
        .unwrap();
    let cases = [
        ("spin", "cpu_time"),
        ("flood", "syscalls"),
        ("huge", "memory"),
        ("big", "result_size"),
        ("bomb", "memory"),
        ("deep", "stack"),
        ("chatty", "console_output"),
    ];
    for (name, limit) in cases {
        match call(&h.kernel, pid, name, json!({})).await {
            Err(SyscallError::LimitExceeded { limit: got, .. }) => assert_eq!(got, limit, "{name}"),
            other => panic!("{name}: expected LimitExceeded {limit}, got {other:?}"),
        }
        assert_eq!(
            call(&h.kernel, pid, "ok", json!({})).await.unwrap(),
            json!({"fine": true}),
            "after {name}"
        );
    }
    // console output went to the process log, not stdout.
    let log = h.kernel.process_log(pid).await.unwrap();
    assert!(
        log.iter()
            .any(|(_, level, text)| level == "log" && text.contains("line 0")),
        "{log:?}"
    );
}

#[tokio::test]
async fn tools_of_different_processes_do_not_share_globals() {
    let h = common::host().await;
    let source = "export const tool = { name: \"counter\", description: \"d\", input: { type: \"object\" }, output: {} };\n\
        export default async function run() { const g = globalThis as any; g.count = (g.count ?? 0) + 1; return { count: g.count }; }\n";
    let a = h.spawn(&["tool:*=create"]).await;
    let b = h.spawn(&["tool:*=create"]).await;
    install(&h.kernel, a, source).await.unwrap();
    install(&h.kernel, b, source).await.unwrap();
    assert_eq!(
        call(&h.kernel, a, "counter", json!({})).await.unwrap()["count"],
        1
    );
    assert_eq!(
        call(&h.kernel, a, "counter", json!({})).await.unwrap()["count"],
        2
    );
    assert_eq!(
        call(&h.kernel, b, "counter", json!({})).await.unwrap()["count"],
        1
    );
}

#[tokio::test]
async fn the_host_is_unreachable_from_tool_code() {
    let h = common::host().await;
    let pid = h.spawn(&["tool:*=create"]).await;
    let source = "export const tool = { name: \"probe\", description: \"d\", input: { type: \"object\" }, output: {} };\n\
        export default async function run() { const g = globalThis as any; return { deno: typeof g[\"De\" + \"no\"], core: typeof g.__bootstrap }; }\n";
    install(&h.kernel, pid, source).await.unwrap();
    assert_eq!(
        call(&h.kernel, pid, "probe", json!({})).await.unwrap(),
        json!({"deno": "undefined", "core": "undefined"})
    );
}
