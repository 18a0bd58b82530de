//! `agent-libos run` with a scripted model and `agent-libos mcp` over stdio, through the
//! real binary.
// Tests build their fixtures on the host and drive the real binary.
#![allow(clippy::disallowed_methods, clippy::disallowed_types)]

mod cli_support;

use std::process::Stdio;

use cli_support::{bin, Env};
use rmcp::ServiceExt;
use serde_json::{json, Value};

const COUNT_LINES: &str = r#"export const tool = {
  name: "count_lines",
  description: "Count the lines of a text file.",
  input: { type: "object", properties: { path: { type: "string" } }, required: ["path"] },
  output: { type: "object", properties: { lines: { type: "integer" } }, required: ["lines"] },
};

export default async function run(args: any, libos: any) {
  const text = await libos.fs.readText(args.path);
  return { lines: text.split("\n").filter((l: string) => l.length > 0).length };
}
"#;

fn script(replies: &[Value]) -> String {
    replies
        .iter()
        .map(|r| r.to_string())
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn run_with_a_scripted_model_reads_a_file_and_exits() {
    let env = Env::new();
    env.write("poem.txt", "one\ntwo\nthree\n");
    let file = env.write(
        "read.jsonl",
        &script(&[
            json!({"tool_calls": [{"name": "fs_read_text", "arguments": {"path": "poem.txt"}}]}),
            json!({"tool_calls": [{"name": "fs_read_text", "arguments": {"path": "secret.txt"}}]}),
            json!({"content": "done reading"}),
        ]),
    );
    let out = env.run(&[
        "--json",
        "run",
        "base",
        "--goal",
        "read the poem",
        "--script",
        file.to_str().unwrap(),
        "--grant",
        "fs:poem.txt=read",
    ]);
    assert_eq!(out.code, 0, "{out:?}");
    let v = out.json()["result"].clone();
    assert_eq!(v["status"], json!("EXITED"));
    assert_eq!(v["stop"]["reason"], json!("finished"));
    assert_eq!(v["steps"], json!(3));
    assert_eq!(v["exit"], json!({"result": "done reading"}));
    let pid = v["pid"].as_i64().unwrap();

    // Every tool call was a syscall of the process: one allowed, one denied.
    let audit = env.run(&["--json", "audit", "show", "--pid", &pid.to_string()]);
    let records = audit.json()["result"].as_array().cloned().unwrap();
    let reads: Vec<(String, String)> = records
        .iter()
        .filter(|r| r["action"] == json!("fs.read_text"))
        .map(|r| {
            (
                r["target"].as_str().unwrap().to_string(),
                r["decision"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(
        reads,
        vec![
            ("fs:poem.txt".to_string(), "allow".to_string()),
            ("fs:secret.txt".to_string(), "deny".to_string()),
        ]
    );
}

#[test]
fn run_writes_registers_and_calls_a_tool_from_a_manifest_image() {
    let env = Env::new();
    env.write("poem.txt", "one\ntwo\nthree\n");
    let manifest = env.write(
        "counter.toml",
        "id = \"counter\"\nversion = \"1.0.0\"\nsystem_prompt = \"You count.\"\n\n[[capabilities]]\nresource = \"fs:poem.txt\"\nrights = [\"read\"]\n",
    );
    let file = env.write(
        "tool.jsonl",
        &script(&[
            json!({"tool_calls": [{"name": "tool_propose", "arguments": {"source": COUNT_LINES}}]}),
            json!({"tool_calls": [{"name": "tool_validate", "arguments": {"id": "${result.id}"}}]}),
            json!({"tool_calls": [{"name": "tool_register", "arguments": {"id": "${result.id}"}}]}),
            json!({"tool_calls": [{"name": "count_lines", "arguments": {"path": "poem.txt"}}]}),
            json!({"tool_calls": [{"name": "proc_exit", "arguments": {"payload": {"lines": "${result.lines}"}}}]}),
        ]),
    );
    let out = env.run(&[
        "run",
        manifest.to_str().unwrap(),
        "--goal",
        "count the lines of poem.txt",
        "--script",
        file.to_str().unwrap(),
        "--grant",
        "tool:count_lines=create",
        "--max-steps",
        "10",
    ]);
    assert_eq!(out.code, 0, "{out:?}");
    assert!(out.stdout.contains("EXITED"), "{out:?}");
    assert!(out.stdout.contains("proc_exit"), "{out:?}");
    assert!(
        out.stderr.contains("registered image counter@1.0.0"),
        "{out:?}"
    );
    let ps = env.run(&["--json", "ps", "--all"]);
    let p = ps.json()["result"][0].clone();
    assert_eq!(p["image"], json!("counter"));
    assert_eq!(p["status"], json!("EXITED"));
    assert!(p["exit"]["lines"].to_string().contains('3'), "{p}");

    // The same manifest again reuses the registered image.
    let short = env.write(
        "short.jsonl",
        &script(&[json!({"content": "nothing to do"})]),
    );
    let again = env.run(&[
        "run",
        manifest.to_str().unwrap(),
        "--goal",
        "nothing",
        "--script",
        short.to_str().unwrap(),
    ]);
    assert_eq!(again.code, 0, "{again:?}");
    assert!(!again.stderr.contains("registered image"), "{again:?}");
}

#[test]
fn run_stops_at_max_steps_with_exit_4_and_reports_bad_input() {
    let env = Env::new();
    let file = env.write(
        "loop.jsonl",
        &script(&[
            json!({"tool_calls": [{"name": "clock_now", "arguments": {}}]}),
            json!({"tool_calls": [{"name": "clock_now", "arguments": {}}]}),
        ]),
    );
    let out = env.run(&[
        "--json",
        "run",
        "base",
        "--goal",
        "tick",
        "--script",
        file.to_str().unwrap(),
        "--max-steps",
        "1",
    ]);
    assert_eq!(out.code, 4, "{out:?}");
    assert_eq!(
        out.json()["result"]["stop"],
        json!({"reason": "budget", "limit": "steps"})
    );

    let missing = env.run(&[
        "run",
        "nope",
        "--goal",
        "x",
        "--script",
        file.to_str().unwrap(),
    ]);
    assert_eq!(missing.code, 2, "{missing:?}");
    assert!(missing.stderr.contains("image register"), "{missing:?}");
    let no_model = env.run(&["run", "base", "--goal", "x"]);
    assert_eq!(no_model.code, 2, "{no_model:?}");
    assert!(no_model.stderr.contains("--model"), "{no_model:?}");
    let bad_time = env.run(&[
        "run",
        "base",
        "--goal",
        "x",
        "--script",
        file.to_str().unwrap(),
        "--wall-time",
        "soon",
    ]);
    assert_eq!(bad_time.code, 2, "{bad_time:?}");
    assert!(bad_time.stderr.contains("--wall-time"), "{bad_time:?}");
    let empty = env.write("empty.jsonl", "");
    let dry = env.run(&[
        "run",
        "base",
        "--goal",
        "x",
        "--script",
        empty.to_str().unwrap(),
    ]);
    assert_eq!(dry.code, 2, "{dry:?}");
    assert!(dry.stderr.contains("--resume"), "{dry:?}");
}

#[tokio::test]
async fn mcp_over_stdio_initializes_and_lists_tools() {
    let env = Env::new();
    let mut child = tokio::process::Command::new(bin())
        .arg("--db")
        .arg(env.db())
        .arg("--workspace")
        .arg(env.ws())
        .args([
            "mcp",
            "--grant",
            "fs:**=read",
            "--requestable",
            "fs:docs/**=write",
        ])
        .current_dir(env.ws())
        .env_remove("AGENT_LIBOS_DB")
        .env_remove("RUST_LOG")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn agent-libos mcp");
    let stdin = child.stdin.take().unwrap();
    let stdout = child.stdout.take().unwrap();
    let client = tokio::time::timeout(
        std::time::Duration::from_secs(30),
        ().serve(tokio::io::join(stdout, stdin)),
    )
    .await
    .expect("initialize in time")
    .expect("initialize");
    let info = client.peer_info().expect("server info");
    assert!(info.capabilities.tools.is_some(), "{info:?}");
    let tools = client.list_all_tools().await.expect("tools/list");
    let names: Vec<String> = tools.iter().map(|t| t.name.to_string()).collect();
    for name in agent_libos::mcp::TOOL_NAMES {
        assert!(
            names.contains(&name.to_string()),
            "{name} missing: {names:?}"
        );
    }
    assert!(!names
        .iter()
        .any(|n| n.contains("grant") || n.contains("human_respond")));
    client.cancel().await.expect("close");
    let status = tokio::time::timeout(std::time::Duration::from_secs(10), child.wait())
        .await
        .expect("the server exits when the client closes")
        .unwrap();
    assert!(status.success(), "{status:?}");
}
