//! The tool author's command line through the real binary: console output and logs, hints
//! that lead somewhere, limits the operator sets, process control, approvals for a pattern,
//! and the conveniences (`--args @file|-`, several files, completions, closed pipes).
// Tests build their fixtures on the host and drive the real binary.
#![allow(clippy::disallowed_methods, clippy::disallowed_types)]

mod cli_support;

use std::io::Write as _;

use clap::CommandFactory;
use cli_support::{fixture_tool, repo, Env};
use serde_json::{json, Value};

/// A tool that logs, then reads every path in `paths` in order.
const READER: &str = r#"export const tool = {
  name: "reader",
  description: "Log, then read files in order.",
  input: {
    type: "object",
    properties: { paths: { type: "array", items: { type: "string" } } },
    required: ["paths"],
  },
  output: {},
};

export default async function run(args: any, libos: any) {
  console.log("hi from the tool");
  console.warn("careful");
  const out: string[] = [];
  for (const p of args.paths) {
    out.push(await libos.fs.readText(p));
  }
  return { texts: out };
}
"#;

/// A tool that spins, asking for far more CPU than any default.
const GREEDY: &str = r#"export const tool = {
  name: "greedy",
  description: "Spin forever, asking for a huge CPU limit.",
  input: { type: "object", properties: {}, required: [] },
  output: {},
  limits: { cpu_ms: 100000 },
};

export default async function run(args: any, libos: any) {
  while (true) {}
}
"#;

/// A tool that makes `n` clock reads.
const CLOCKS: &str = r#"export const tool = {
  name: "clocks",
  description: "Read the clock n times.",
  input: { type: "object", properties: { n: { type: "number" } }, required: ["n"] },
  output: {},
};

export default async function run(args: any, libos: any) {
  for (let i = 0; i < args.n; i++) { await libos.clock.now(); }
  return { n: args.n };
}
"#;

fn reader(env: &Env) -> String {
    env.write("tools/reader.ts", READER).display().to_string()
}

fn request_id(out: &cli_support::Out) -> String {
    out.json()["error"]["request_id"]
        .as_str()
        .unwrap_or_else(|| panic!("no request id: {out:?}"))
        .to_string()
}

fn ps_row(env: &Env, pid: i64) -> Value {
    let ps = env.run(&["--json", "ps", "--all"]);
    assert_eq!(ps.code, 0, "{ps:?}");
    ps.json()["result"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["pid"] == json!(pid))
        .cloned()
        .unwrap_or_else(|| panic!("no process {pid}: {ps:?}"))
}

#[test]
fn console_lines_reach_stderr_the_json_result_and_logs() {
    let env = Env::new();
    env.write("a.txt", "A");
    let tool = reader(&env);
    let out = env.run(&[
        "tool",
        "run",
        &tool,
        "--args",
        r#"{"paths":["a.txt"]}"#,
        "--allow-read=a.txt",
    ]);
    assert_eq!(out.code, 0, "{out:?}");
    assert!(
        out.stderr.contains("console.log: hi from the tool"),
        "{out:?}"
    );
    assert!(out.stderr.contains("console.warn: careful"), "{out:?}");
    assert!(!out.stdout.contains("hi from the tool"), "{out:?}");

    let out = env.run(&[
        "--json",
        "tool",
        "run",
        &tool,
        "--args",
        r#"{"paths":["a.txt"]}"#,
        "--allow-read=a.txt",
    ]);
    assert_eq!(out.code, 0, "{out:?}");
    let v = out.json();
    assert_eq!(
        v["console"][0],
        json!({"level": "log", "text": "hi from the tool"})
    );
    let pid = v["pid"].as_i64().unwrap();

    // A failing call keeps its console lines too.
    let denied = env.run(&[
        "--json",
        "tool",
        "run",
        &tool,
        "--args",
        r#"{"paths":["a.txt"]}"#,
    ]);
    assert_eq!(denied.code, 3, "{denied:?}");
    assert_eq!(
        denied.json()["error"]["console"][1]["text"],
        json!("careful")
    );

    let logs = env.run(&["logs", &pid.to_string()]);
    assert_eq!(logs.code, 0, "{logs:?}");
    assert!(
        logs.stdout.contains("console.log: hi from the tool"),
        "{logs:?}"
    );
    let logs = env.run(&["--json", "logs", &pid.to_string()]);
    assert_eq!(logs.json()["result"][1]["level"], json!("warn"), "{logs:?}");
    // --follow on an ended process prints its log and ends.
    let follow = env.run(&["logs", "--follow", &pid.to_string()]);
    assert_eq!(follow.code, 0, "{follow:?}");
    assert!(
        follow.stdout.contains("console.warn: careful"),
        "{follow:?}"
    );
    let missing = env.run(&["logs", "99999"]);
    assert_eq!(missing.code, 2, "{missing:?}");
    assert!(
        missing.stderr.contains("process 99999 not found"),
        "{missing:?}"
    );
}

#[test]
fn denial_hints_say_what_no_flag_can_allow() {
    let env = Env::new();
    env.write("a.txt", "A");
    std::os::unix::fs::symlink("a.txt", env.ws().join("link.txt")).unwrap();
    let tool = reader(&env);
    let link = env.run(&[
        "tool",
        "run",
        &tool,
        "--args",
        r#"{"paths":["link.txt"]}"#,
        "--allow-read",
    ]);
    assert_eq!(link.code, 3, "{link:?}");
    assert!(
        link.stderr.contains("symlinks are never followed"),
        "{link:?}"
    );
    assert!(!link.stderr.contains("run again with"), "{link:?}");

    for outside in ["../secret.txt", "/etc/passwd", "sub/../../x"] {
        let args = json!({ "paths": [outside] }).to_string();
        let out = env.run(&["tool", "run", &tool, "--args", &args, "--allow-read"]);
        assert_eq!(out.code, 3, "{outside}: {out:?}");
        assert!(
            out.stderr.contains("outside the workspace"),
            "{outside}: {out:?}"
        );
        assert!(
            out.stderr.contains("no flag can grant"),
            "{outside}: {out:?}"
        );
        assert!(!out.stderr.contains("--allow-read="), "{outside}: {out:?}");
    }
}

#[test]
fn hints_quote_arguments_and_name_the_answer_that_fits() {
    let env = Env::new();
    let out = env.run(&[
        "tool",
        "run",
        &fixture_tool("run_cmd"),
        "--args",
        r#"{"argv":["python3","-c","print(1)"]}"#,
    ]);
    assert_eq!(out.code, 3, "{out:?}");
    assert!(out.stderr.contains("'--allow-run=python3 -c'"), "{out:?}");
    let spaced = env.run(&[
        "tool",
        "run",
        &fixture_tool("run_cmd"),
        "--args",
        r#"{"argv":["my tool","x"]}"#,
    ]);
    assert!(
        spaced.stderr.contains("'--allow-run=my tool'"),
        "{spaced:?}"
    );

    env.write("a.txt", "A");
    let exists = env.run(&[
        "tool",
        "run",
        &fixture_tool("write_file"),
        "--args",
        r#"{"path":"a.txt","content":"x"}"#,
        "--allow-write=a.txt",
    ]);
    assert_eq!(exists.code, 2, "{exists:?}");
    assert!(exists.stderr.contains("{overwrite: true}"), "{exists:?}");
    assert_eq!(
        std::fs::read_to_string(env.ws().join("a.txt")).unwrap(),
        "A"
    );

    // A question waits in WAITING_HUMAN and the hint says `human answer`.
    let asked = env.run(&[
        "--json",
        "tool",
        "run",
        &fixture_tool("ask_human"),
        "--args",
        r#"{"question":"which colour?"}"#,
        "--grant",
        "human:operator=write",
    ]);
    assert_eq!(asked.code, 5, "{asked:?}");
    let id = request_id(&asked);
    assert!(
        asked
            .stderr
            .contains(&format!("agent-libos human answer {id}")),
        "{asked:?}"
    );
    assert!(
        !asked.stderr.contains(&format!("human approve {id}`")),
        "{asked:?}"
    );
    let pid = env.run(&["--json", "ps"]).json()["result"][0]["pid"]
        .as_i64()
        .expect("a live process");
    assert_eq!(ps_row(&env, pid)["status"], json!("WAITING_HUMAN"));
    let answer = env.run(&["human", "answer", &id, "blue"]);
    assert_eq!(answer.code, 0, "{answer:?}");
    let resumed = env.run(&["--json", "resume"]);
    assert_eq!(resumed.code, 0, "{resumed:?}");
    assert_eq!(
        resumed.json()["result"]["invocations"][0]["outcome"]["Ok"]["answer"],
        json!("blue"),
        "{resumed:?}"
    );
    assert_eq!(ps_row(&env, pid)["status"], json!("EXITED"));
}

#[test]
fn the_cpu_hint_names_a_flag_that_raises_the_limit_and_a_tool_never_exceeds_it() {
    let env = Env::new();
    let greedy = env.write("tools/greedy.ts", GREEDY).display().to_string();
    // The tool asks for 100 s; the operator's default maximum (1 s) holds, with a warning.
    let out = env.run(&["--json", "tool", "run", &greedy]);
    assert_eq!(out.code, 4, "{out:?}");
    assert!(out.stderr.contains("limits.cpu_ms = 100000"), "{out:?}");
    assert!(out.stderr.contains("runs with 1000"), "{out:?}");
    let v = out.json();
    assert_eq!(v["error"]["limit"], json!("cpu_time"));
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("longer than 1000 ms"),
        "{out:?}"
    );
    assert!(
        v["error"]["hint"].as_str().unwrap().contains("--cpu-ms"),
        "{out:?}"
    );

    // The flag the hint names exists and sets the maximum; the tool's ask stays clamped.
    let out = env.run(&["--json", "tool", "run", &greedy, "--cpu-ms", "300"]);
    assert_eq!(out.code, 4, "{out:?}");
    assert!(
        out.json()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("longer than 300 ms"),
        "{out:?}"
    );
    // A tool's own lower limit still lowers it.
    let spin = env.run(&[
        "--json",
        "tool",
        "run",
        &fixture_tool("spin"),
        "--cpu-ms",
        "5000",
    ]);
    assert_eq!(spin.code, 4, "{spin:?}");
    assert!(
        spin.json()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("longer than 200 ms"),
        "{spin:?}"
    );

    // --max-syscalls: the per-call syscall maximum, and its hint.
    let clocks = env.write("tools/clocks.ts", CLOCKS).display().to_string();
    let out = env.run(&[
        "--json",
        "tool",
        "run",
        &clocks,
        "--args",
        r#"{"n":20}"#,
        "--max-syscalls",
        "5",
    ]);
    assert_eq!(out.code, 4, "{out:?}");
    assert_eq!(out.json()["error"]["limit"], json!("syscalls"), "{out:?}");
    assert!(
        out.json()["error"]["hint"]
            .as_str()
            .unwrap()
            .contains("--max-syscalls"),
        "{out:?}"
    );
    let ok = env.run(&[
        "tool",
        "run",
        &clocks,
        "--args",
        r#"{"n":20}"#,
        "--max-syscalls",
        "50",
        "--heap-mb",
        "32",
    ]);
    assert_eq!(ok.code, 0, "{ok:?}");
    let zero = env.run(&["tool", "run", &clocks, "--cpu-ms", "0"]);
    assert_eq!(zero.code, 2, "{zero:?}");
}

#[test]
fn an_image_squatting_the_limits_name_is_refused() {
    let env = Env::new();
    // Someone registered an image under the id the CLI uses for --cpu-ms 300, with a grant.
    let squat = env.write(
        "squat.toml",
        "id = \"tool-run-cpu300-heap64-sys1000\"\nversion = \"1\"\n[[capabilities]]\nresource = \"fs:**\"\nrights = [\"read\"]\n",
    );
    let reg = env.run(&["image", "register", squat.to_str().unwrap()]);
    assert_eq!(reg.code, 0, "{reg:?}");
    env.write("a.txt", "A");
    let tool = reader(&env);
    let out = env.run(&[
        "tool",
        "run",
        &tool,
        "--args",
        r#"{"paths":["a.txt"]}"#,
        "--cpu-ms",
        "300",
    ]);
    assert_eq!(out.code, 2, "{out:?}");
    assert!(out.stderr.contains("other contents"), "{out:?}");
    assert!(!out.stdout.contains("\"A\""), "{out:?}");
}

#[test]
fn kill_and_signal_reach_a_waiting_process() {
    let env = Env::new();
    let asked = env.run(&[
        "--json",
        "tool",
        "run",
        &fixture_tool("ask_human"),
        "--args",
        r#"{"question":"q?"}"#,
        "--grant",
        "human:operator=write",
    ]);
    assert_eq!(asked.code, 5, "{asked:?}");
    let pid = env.run(&["--json", "ps"]).json()["result"][0]["pid"]
        .as_i64()
        .unwrap();
    let pause = env.run(&["signal", &pid.to_string(), "pause"]);
    assert_eq!(pause.code, 0, "{pause:?}");
    assert_eq!(ps_row(&env, pid)["status"], json!("PAUSED"));
    let resume = env.run(&["signal", &pid.to_string(), "resume"]);
    assert_eq!(resume.code, 0, "{resume:?}");
    let kill = env.run(&["kill", &pid.to_string()]);
    assert_eq!(kill.code, 0, "{kill:?}");
    assert_eq!(ps_row(&env, pid)["status"], json!("KILLED"));
    let again = env.run(&["signal", &pid.to_string(), "pause"]);
    assert_eq!(again.code, 2, "{again:?}");
    let bogus = env.run(&["signal", &pid.to_string(), "stop"]);
    assert_eq!(bogus.code, 2, "{bogus:?}");
    let missing = env.run(&["kill", "99999"]);
    assert_eq!(missing.code, 2, "{missing:?}");
    assert!(missing.stderr.contains("not found"), "{missing:?}");
}

#[test]
fn ps_counts_a_process_own_syscalls_not_its_children_budgets() {
    let env = Env::new();
    let out = env.run(&[
        "--json",
        "tool",
        "run",
        &fixture_tool("spawn_child"),
        "--args",
        r#"{"image":"base"}"#,
        "--grant",
        "image:base=execute",
    ]);
    assert_eq!(out.code, 0, "{out:?}");
    let pid = out.json()["pid"].as_i64().unwrap();
    let row = ps_row(&env, pid);
    let own = row["usage"]["syscalls"].as_u64().unwrap();
    let audited = env.run(&["--json", "audit", "show", "--pid", &pid.to_string()]);
    let records = audited.json()["result"].as_array().unwrap().len() as u64;
    assert!(
        own > 0 && own <= records,
        "own {own}, audited {records}: {row}"
    );
    assert!(
        row["usage_with_children"]["syscalls"].as_u64().unwrap() > own + 1000,
        "{row}"
    );
    let table = env.run(&["ps", "--all"]);
    assert!(!table.stdout.contains("50005"), "{table:?}");
}

#[test]
fn approving_a_pattern_covers_the_grant_and_nothing_wider() {
    let env = Env::new();
    env.write("docs/a.md", "A");
    env.write("docs/b.md", "B");
    env.write("secret.txt", "S");
    let tool = reader(&env);
    let run = |paths: &str| {
        env.run(&[
            "--json",
            "tool",
            "run",
            &tool,
            "--args",
            paths,
            "--grant",
            "fs:docs/**=read:ask_each_time",
        ])
    };
    // --pattern: one approval for docs/**; b.md needs no second one.
    let out = run(r#"{"paths":["docs/a.md","docs/b.md"]}"#);
    assert_eq!(out.code, 5, "{out:?}");
    let id = request_id(&out);
    let approve = env.run(&["human", "approve", &id, "--pattern"]);
    assert_eq!(approve.code, 0, "{approve:?}");
    let resumed = env.run(&["--json", "resume"]);
    assert_eq!(
        resumed.json()["result"]["invocations"][0]["outcome"]["Ok"]["texts"],
        json!(["A", "B"]),
        "{resumed:?}"
    );

    // Never wider than the grant: a path outside it is still denied.
    let out = run(r#"{"paths":["docs/a.md","secret.txt"]}"#);
    let id = request_id(&out);
    env.run(&["human", "approve", &id, "--pattern"]);
    let resumed = env.run(&["--json", "resume"]);
    assert_eq!(
        resumed.json()["result"]["invocations"][0]["outcome"]["Err"]["kind"],
        json!("PermissionDenied"),
        "{resumed:?}"
    );

    // --always covers only the resource shown: b.md asks again.
    let out = run(r#"{"paths":["docs/a.md","docs/b.md"]}"#);
    let id = request_id(&out);
    env.run(&["human", "approve", &id, "--always"]);
    let resumed = env.run(&["--json", "resume"]);
    assert_eq!(
        resumed.json()["result"]["invocations"][0]["outcome"]["Err"]["kind"],
        json!("HumanRequired"),
        "{resumed:?}"
    );

    // A question has no pattern.
    let asked = env.run(&[
        "--json",
        "tool",
        "run",
        &fixture_tool("ask_human"),
        "--args",
        r#"{"question":"q?"}"#,
        "--grant",
        "human:operator=write",
    ]);
    let id = request_id(&asked);
    let refused = env.run(&["human", "approve", &id, "--pattern"]);
    assert_eq!(refused.code, 2, "{refused:?}");
}

#[test]
fn args_come_from_a_file_or_stdin() {
    let env = Env::new();
    env.write("a.txt", "A");
    let tool = reader(&env);
    let args = env.write("args.json", r#"{"paths":["a.txt"]}"#);
    let at = format!("@{}", args.display());
    let out = env.run(&[
        "--json",
        "tool",
        "run",
        &tool,
        "--args",
        &at,
        "--allow-read=a.txt",
    ]);
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(out.json()["result"]["texts"], json!(["A"]));

    let mut child = env.spawn(&[
        "--json",
        "tool",
        "run",
        &tool,
        "--args",
        "-",
        "--allow-read=a.txt",
    ]);
    child
        .stdin
        .take()
        .unwrap()
        .write_all(br#"{"paths":["a.txt"]}"#)
        .unwrap();
    let out = cli_support::Out::from(child.wait_with_output().unwrap());
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(out.json()["result"]["texts"], json!(["A"]));

    for bad in ["@missing.json", "[1,2]", "{nope"] {
        let out = env.run(&["tool", "run", &tool, "--args", bad]);
        assert_eq!(out.code, 2, "{bad}: {out:?}");
        assert!(out.stderr.contains("hint:"), "{bad}: {out:?}");
    }
}

#[test]
fn check_and_test_take_several_files_and_directories() {
    let env = Env::new();
    let dir = env.ws().join("tools");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(fixture_tool("read_file"), dir.join("read_file.ts")).unwrap();
    std::fs::copy(fixture_tool("uses_eval"), dir.join("uses_eval.ts")).unwrap();
    std::fs::write(dir.join("libos.d.ts"), "declare const x: number;\n").unwrap();
    let other = fixture_tool("clock");
    let out = env.run(&["tool", "check", dir.to_str().unwrap(), &other]);
    assert_eq!(out.code, 2, "{out:?}");
    assert!(out.stdout.contains("read_file.ts: ok"), "{out:?}");
    assert!(out.stdout.contains("clock.ts: ok"), "{out:?}");
    assert!(out.stdout.contains("uses_eval.ts:"), "{out:?}");
    assert!(!out.stdout.contains("libos.d.ts"), "{out:?}");
    std::fs::remove_file(dir.join("uses_eval.ts")).unwrap();
    let out = env.run(&["tool", "test", dir.to_str().unwrap(), &other]);
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(
        out.stdout.matches(" passed, 0 failed").count(),
        2,
        "{out:?}"
    );
    let empty = env.ws().join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    let out = env.run(&["tool", "check", empty.to_str().unwrap()]);
    assert_eq!(out.code, 2, "{out:?}");
    assert!(out.stderr.contains("holds no .ts tool files"), "{out:?}");
}

#[test]
fn watch_runs_the_tests_again_when_the_file_changes() {
    let env = Env::new();
    let file = env.ws().join("read_file.ts");
    std::fs::copy(fixture_tool("read_file"), &file).unwrap();
    let mut child = env.spawn(&["tool", "test", "--watch", file.to_str().unwrap()]);
    let lines = Lines::of(&mut child);
    let first = lines.wait_for("2 passed, 0 failed");
    // Break a declared test: the rerun reports it.
    let text = std::fs::read_to_string(&file)
        .unwrap()
        .replace("expect: { content: \"hi\" }", "expect: { content: \"no\" }");
    std::thread::sleep(std::time::Duration::from_millis(50));
    std::fs::write(&file, text).unwrap();
    let second = lines.wait_for("1 passed, 1 failed");
    let _ = child.kill();
    let _ = child.wait();
    assert!(first, "the first run never finished");
    assert!(second, "no rerun after the change");
}

#[test]
fn a_closed_pipe_ends_quietly() {
    let env = Env::new();
    env.run(&[
        "tool",
        "run",
        &fixture_tool("clock"),
        "--args",
        r#"{"ms":1}"#,
    ]);
    for args in [
        &["--json", "ps", "--all"][..],
        &["audit", "show"][..],
        &["completions", "bash"][..],
    ] {
        let mut child = env.spawn(args);
        // Read nothing and close the pipe at once.
        drop(child.stdout.take());
        let out = cli_support::Out::from(child.wait_with_output().unwrap());
        assert!(!out.stderr.contains("panicked"), "{args:?}: {out:?}");
        assert_eq!(out.code, 0, "{args:?}: {out:?}");
    }
}

#[test]
fn completions_generate_for_each_shell() {
    let env = Env::new();
    for shell in ["bash", "zsh", "fish"] {
        let out = env.run(&["completions", shell]);
        assert_eq!(out.code, 0, "{shell}: {out:?}");
        assert!(out.stdout.contains("agent-libos"), "{shell}");
        assert!(out.stdout.contains("logs"), "{shell}");
    }
    assert_eq!(env.run(&["completions", "tcsh"]).code, 2);
}

/// Every argument of every subcommand says what it is in `--help`.
#[test]
fn every_argument_has_help_text() {
    fn walk(cmd: &clap::Command, path: &str, missing: &mut Vec<String>) {
        for arg in cmd.get_arguments() {
            let id = arg.get_id().as_str();
            if matches!(id, "help" | "version") {
                continue;
            }
            if arg.get_help().is_none() && arg.get_long_help().is_none() {
                missing.push(format!("{path} {id}"));
            }
        }
        for sub in cmd.get_subcommands() {
            if sub.get_about().is_none()
                && sub.get_long_about().is_none()
                && sub.get_name() != "help"
            {
                missing.push(format!("{path} {} (no about)", sub.get_name()));
            }
            walk(sub, &format!("{path} {}", sub.get_name()), missing);
        }
    }
    let mut missing = Vec::new();
    walk(
        &agent_libos::cli::args::Cli::command(),
        "agent-libos",
        &mut missing,
    );
    assert!(missing.is_empty(), "arguments without help: {missing:#?}");
}

#[test]
fn readme_examples_exist_and_install_is_documented() {
    let readme = std::fs::read_to_string(repo().join("README.md")).unwrap();
    assert!(readme.contains("cargo install --path ."));
    assert!(
        !readme.contains("--allow-env"),
        "the README documents a flag that does not exist"
    );
    let env = Env::new();
    let manifest = repo().join("images/coder.toml");
    let out = env.run(&["image", "register", manifest.to_str().unwrap()]);
    assert_eq!(out.code, 0, "{out:?}");
    let allow_env = env.run(&["tool", "run", &fixture_tool("clock"), "--allow-env=HOME"]);
    assert_eq!(allow_env.code, 2, "{allow_env:?}");
}

#[test]
fn replay_and_demo_speak_json_and_record_reports_what_it_rewrote() {
    let env = Env::new();
    let out = env.run(&[
        "--json",
        "replay",
        repo().join("fixtures/clock.json").to_str().unwrap(),
    ]);
    assert_eq!(out.code, 0, "{out:?}");
    let v = out.json();
    assert_eq!(v["result"]["passed"], json!(1), "{out:?}");
    assert_eq!(v["result"]["cases"][0]["status"], json!("passed"));

    // A stale expectation: --record rewrites it, says so, keeps the message, exits 0.
    let fixtures = env.ws().join("fx");
    std::fs::create_dir_all(fixtures.join("tools")).unwrap();
    std::fs::copy(
        fixture_tool("read_file"),
        fixtures.join("tools/read_file.ts"),
    )
    .unwrap();
    let fixture = fixtures.join("stale.json");
    std::fs::write(&fixture, json!({
        "tool": "tools/read_file.ts",
        "cases": [{
            "name": "denied",
            "calls": [{"args": {"path": "nope.txt"}, "expect": {"error": {"kind": "NotFound", "message_contains": "an old message"}}}]
        }]
    }).to_string()).unwrap();
    let plain = env.run(&["replay", fixture.to_str().unwrap()]);
    assert_eq!(plain.code, 1, "{plain:?}");
    let rec = env.run(&["--json", "replay", "--record", fixture.to_str().unwrap()]);
    assert_eq!(rec.code, 0, "{rec:?}");
    assert_eq!(
        rec.json()["result"]["recorded"][0]["case"],
        json!("denied"),
        "{rec:?}"
    );
    let rewritten: Value =
        serde_json::from_str(&std::fs::read_to_string(&fixture).unwrap()).unwrap();
    let error = &rewritten["cases"][0]["calls"][0]["expect"]["error"];
    assert_eq!(error["kind"], json!("PermissionDenied"), "{rewritten}");
    assert!(
        error["message_contains"]
            .as_str()
            .is_some_and(|m| m.contains("nope.txt")),
        "{rewritten}"
    );
    assert_eq!(env.run(&["replay", fixture.to_str().unwrap()]).code, 0);

    // A case that cannot run is a real failure even with --record.
    let broken = fixtures.join("broken.json");
    std::fs::write(
        &broken,
        json!({"tool": "tools/missing.ts", "cases": [{"name": "x", "calls": [{"args": {}}]}]})
            .to_string(),
    )
    .unwrap();
    let rec = env.run(&["replay", "--record", broken.to_str().unwrap()]);
    assert_eq!(rec.code, 1, "{rec:?}");
    assert!(rec.stdout.contains("1 still failing"), "{rec:?}");

    let demo = env.run(&["--json", "demo"]);
    assert_eq!(demo.code, 0, "{demo:?}");
    let v = demo.json();
    assert!(
        v["result"]["steps"].as_array().is_some_and(|s| s.len() > 3),
        "{demo:?}"
    );
    assert!(v["result"]["audit"]["records"].as_u64().unwrap() > 0);
}

/// Logs, asks a human, logs the answer.
const ASKER: &str = r#"export const tool = {
  name: "asker",
  description: "Log, ask, log the answer.",
  input: { type: "object", properties: {}, required: [] },
  output: {},
};

export default async function run(args: any, libos: any) {
  console.log("before");
  const r = await libos.human.ask("colour?");
  console.log("after: " + r.answer);
  return { answer: r.answer };
}
"#;

/// Collects a child's stdout lines on a thread; `wait_for` waits for a line holding `needle`.
struct Lines(std::sync::mpsc::Receiver<String>);

impl Lines {
    fn of(child: &mut std::process::Child) -> Lines {
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            use std::io::BufRead;
            for line in std::io::BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
            {
                let _ = tx.send(line);
            }
        });
        Lines(rx)
    }

    fn wait_for(&self, needle: &str) -> bool {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
        while std::time::Instant::now() < deadline {
            if let Ok(line) = self.0.recv_timeout(std::time::Duration::from_secs(1)) {
                if line.contains(needle) {
                    return true;
                }
            }
        }
        false
    }
}

#[test]
fn logs_follow_sees_another_host_finish_the_call_and_ends_with_the_process() {
    let env = Env::new();
    let asker = env.write("tools/asker.ts", ASKER).display().to_string();
    let asked = env.run(&[
        "--json",
        "tool",
        "run",
        &asker,
        "--grant",
        "human:operator=write",
    ]);
    assert_eq!(asked.code, 5, "{asked:?}");
    let id = request_id(&asked);
    let pid = env.run(&["--json", "ps"]).json()["result"][0]["pid"]
        .as_i64()
        .unwrap();
    let mut follow = env.spawn(&["logs", "--follow", &pid.to_string()]);
    let lines = Lines::of(&mut follow);
    let before = lines.wait_for("console.log: before");
    assert_eq!(env.run(&["human", "answer", &id, "blue"]).code, 0);
    assert_eq!(env.run(&["resume"]).code, 0);
    let after = lines.wait_for("console.log: after: blue");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let mut ended = None;
    while std::time::Instant::now() < deadline && ended.is_none() {
        ended = follow.try_wait().unwrap();
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    if ended.is_none() {
        let _ = follow.kill();
        let _ = follow.wait();
    }
    assert!(before, "--follow did not print the first line");
    assert!(
        after,
        "--follow did not print the line written by another host"
    );
    assert_eq!(
        ended.and_then(|s| s.code()),
        Some(0),
        "--follow did not end with the process"
    );
}

#[test]
fn tool_run_watch_runs_again_after_a_change() {
    let env = Env::new();
    let file = env.write("tools/clocks.ts", CLOCKS);
    let mut child = env.spawn(&[
        "--json",
        "tool",
        "run",
        "--watch",
        "--args",
        r#"{"n":1}"#,
        file.to_str().unwrap(),
    ]);
    let lines = Lines::of(&mut child);
    let first = lines.wait_for(r#""n":1"#);
    std::fs::write(
        &file,
        CLOCKS.replace("return { n: args.n }", "return { n: args.n, again: true }"),
    )
    .unwrap();
    let second = lines.wait_for(r#""again":true"#);
    let _ = child.kill();
    let _ = child.wait();
    assert!(first, "the first run never finished");
    assert!(second, "no rerun after the change");
}
