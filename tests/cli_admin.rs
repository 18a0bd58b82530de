//! `ps`, `resume`, `human`, `audit`, `image`, `checkpoint` and help through the real binary.
// Tests build their fixtures on the host and drive the real binary.
#![allow(clippy::disallowed_methods, clippy::disallowed_types)]

mod cli_support;

use agent_libos::kernel::{
    CapabilitySpec, FsCall, HumanMode, Kernel, KernelConfig, SpawnOptions, Syscall, SyscallError,
};
use cli_support::Env;
use serde_json::json;

const IMAGE: &str = r#"
id = "coder"
version = "1.0.0"
system_prompt = "You fix failing tests."

[[capabilities]]
resource = "fs:src/**"
rights = ["read"]
"#;

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Runtime::new().unwrap()
}

/// Opens the env's database through the library (as another host would).
async fn kernel(env: &Env) -> Kernel {
    let mut config = KernelConfig::new(env.db(), env.ws());
    config.human_mode = HumanMode::FailFast;
    Kernel::open(config).await.expect("open")
}

#[test]
fn image_register_and_list() {
    let env = Env::new();
    let manifest = env.write("coder.toml", IMAGE);
    let out = env.run(&["image", "register", manifest.to_str().unwrap()]);
    assert_eq!(out.code, 0, "{out:?}");
    assert!(
        out.stdout.contains("registered image coder@1.0.0"),
        "{out:?}"
    );
    let again = env.run(&["image", "register", manifest.to_str().unwrap()]);
    assert_eq!(again.code, 2, "{again:?}");
    assert!(again.stderr.contains("bump `version`"), "{again:?}");
    let list = env.run(&["--json", "image", "list"]);
    assert_eq!(list.code, 0, "{list:?}");
    let v = list.json();
    assert_eq!(v["ok"], json!(true));
    assert_eq!(v["result"][0]["id"], json!("coder"));
    let text = env.run(&["image", "list"]);
    assert!(text.stdout.contains("coder"), "{text:?}");
}

#[test]
fn image_register_rejects_a_bad_manifest() {
    let env = Env::new();
    let manifest = env.write("bad.toml", "id = 'a b'\nversion = '1'\n");
    let out = env.run(&["--json", "image", "register", manifest.to_str().unwrap()]);
    assert_eq!(out.code, 2, "{out:?}");
    assert_eq!(out.json()["error"]["kind"], json!("InvalidArgument"));
}

#[test]
fn ps_and_resume_list_live_processes() {
    let env = Env::new();
    let pid = rt().block_on(async {
        let k = kernel(&env).await;
        k.spawn_root(SpawnOptions {
            goal: "wait for work".into(),
            ..SpawnOptions::default()
        })
        .await
        .unwrap()
    });
    let out = env.run(&["--json", "ps"]);
    assert_eq!(out.code, 0, "{out:?}");
    let v = out.json();
    assert_eq!(v["result"][0]["pid"], json!(pid));
    assert_eq!(v["result"][0]["status"], json!("RUNNABLE"));
    let text = env.run(&["ps"]);
    assert!(text.stdout.contains("wait for work"), "{text:?}");
    let resumed = env.run(&["resume"]);
    assert_eq!(resumed.code, 0, "{resumed:?}");
    assert!(resumed.stdout.contains("1 live process"), "{resumed:?}");
    assert!(resumed.stdout.contains("RUNNABLE"), "{resumed:?}");
    assert!(
        resumed.stdout.contains("no interrupted tool calls"),
        "{resumed:?}"
    );
    let resumed = env.run(&["--json", "resume"]);
    let v = resumed.json();
    assert_eq!(v["result"]["processes"][0]["pid"], json!(pid));
    assert_eq!(v["result"]["invocations"], json!([]));
}

#[test]
fn ps_all_shows_the_process_of_a_tool_run() {
    let env = Env::new();
    let tool = cli_support::repo().join("fixtures/tools/clock.ts");
    env.run(&[
        "tool",
        "run",
        tool.to_str().unwrap(),
        "--args",
        r#"{"ms":1}"#,
    ]);
    let out = env.run(&["--json", "ps", "--all"]);
    assert_eq!(out.code, 0, "{out:?}");
    let procs = out.json()["result"].as_array().cloned().unwrap();
    assert_eq!(procs.len(), 1, "{out:?}");
    assert!(procs[0]["goal"].as_str().unwrap().contains("clock.ts"));
    // Ended: not in the default listing.
    assert_eq!(env.run(&["--json", "ps"]).json()["result"], json!([]));
}

/// `ps --json` says whether each process's isolate is hot in the runtime that answers:
/// the CLI's own, which has run no tool, so a process hot in another runtime (here the
/// library's kernel, still open) shows `hibernated` (its next call there or here creates
/// one), and so does one that never ran a tool.
#[test]
fn ps_json_shows_each_process_isolate_as_hot_or_hibernated() {
    let env = Env::new();
    let rt = rt();
    let (kernel, caller, idle) = rt.block_on(async {
        let k = kernel(&env).await;
        let spawn = |grants: Vec<CapabilitySpec>| {
            let k = k.clone();
            async move {
                k.spawn_root(SpawnOptions {
                    goal: "scale".into(),
                    grants,
                    ..SpawnOptions::default()
                })
                .await
                .unwrap()
            }
        };
        let caller = spawn(vec![CapabilitySpec::parse_grant("tool:*=create").unwrap()]).await;
        let idle = spawn(vec![]).await;
        let source = "export const tool = { name: \"echo\", description: \"d\", input: { type: \"object\" }, output: {} };\nexport default async function run() { return { ok: true }; }\n";
        let id = k
            .syscall(caller, Syscall::Tool(agent_libos::kernel::JitCall::Propose { source: source.into() }))
            .await
            .unwrap()["id"]
            .as_str()
            .unwrap()
            .to_string();
        k.syscall(caller, Syscall::Tool(agent_libos::kernel::JitCall::Validate { id: id.clone() }))
            .await
            .unwrap();
        k.syscall(caller, Syscall::Tool(agent_libos::kernel::JitCall::Register { id }))
            .await
            .unwrap();
        k.syscall(
            caller,
            Syscall::Tool(agent_libos::kernel::JitCall::Call { name: "echo".into(), args: json!({}) }),
        )
        .await
        .unwrap();
        assert!(k.isolate_hot(caller), "hot in the runtime that called it");
        (k, caller, idle)
    });
    let out = env.run(&["--json", "ps"]);
    assert_eq!(out.code, 0, "{out:?}");
    let procs = out.json()["result"].as_array().cloned().unwrap();
    assert_eq!(procs.len(), 2, "{out:?}");
    for p in &procs {
        assert!(p["pid"] == json!(caller) || p["pid"] == json!(idle), "{p}");
        assert_eq!(p["isolate"], json!("hibernated"), "{p}");
    }
    rt.block_on(async move { drop(kernel) });
}

#[test]
fn human_list_show_approve_reject() {
    let env = Env::new();
    let (first, second) = rt().block_on(async {
        let k = kernel(&env).await;
        let pid = k
            .spawn_root(SpawnOptions {
                goal: "ask".into(),
                grants: vec![CapabilitySpec::parse_grant("fs:out.txt=write:ask").unwrap()],
                ..SpawnOptions::default()
            })
            .await
            .unwrap();
        let mut ids = Vec::new();
        // Two different calls (an identical pending call would reuse the first request).
        for content in ["x", "y"] {
            let err = k
                .syscall(
                    pid,
                    Syscall::Fs(FsCall::WriteText {
                        path: "out.txt".into(),
                        content: content.into(),
                        overwrite: false,
                    }),
                )
                .await
                .unwrap_err();
            match err {
                SyscallError::HumanRequired { request_id, .. } => ids.push(request_id),
                other => panic!("{other:?}"),
            }
        }
        k.store().flush().await.unwrap();
        (ids[0].clone(), ids[1].clone())
    });
    let list = env.run(&["human", "list"]);
    assert_eq!(list.code, 0, "{list:?}");
    assert!(
        list.stdout.contains(&first) && list.stdout.contains(&second),
        "{list:?}"
    );
    assert!(
        list.stdout.contains("fs.write_text write on fs:out.txt"),
        "{list:?}"
    );

    let show = env.run(&["human", "show", &first]);
    assert_eq!(show.code, 0, "{show:?}");
    assert!(show.stdout.contains("preview"), "{show:?}");
    assert!(
        show.stdout.contains("agent-libos human approve"),
        "{show:?}"
    );

    let approve = env.run(&[
        "--json", "human", "approve", &first, "--always", "--by", "ann",
    ]);
    assert_eq!(approve.code, 0, "{approve:?}");
    let v = approve.json();
    assert_eq!(v["result"]["status"], json!("approved"));
    assert_eq!(v["result"]["answered_by"], json!("cli:ann"));
    assert_eq!(v["result"]["answer"]["answer"], json!("approve_always"));

    let reject = env.run(&["human", "reject", &second, "--reason", "no", "--by", "ann"]);
    assert_eq!(reject.code, 0, "{reject:?}");
    assert!(reject.stdout.contains("rejected by cli:ann"), "{reject:?}");

    let again = env.run(&["human", "approve", &second]);
    assert_eq!(again.code, 2, "{again:?}");
    assert!(again.stderr.contains("already rejected"), "{again:?}");
    let missing = env.run(&["human", "show", "hr_nope"]);
    assert_eq!(missing.code, 2, "{missing:?}");
    assert!(missing.stderr.contains("human list --all"), "{missing:?}");
    let pending = env.run(&["--json", "human", "list"]);
    assert_eq!(pending.json()["result"], json!([]));
    let all = env.run(&["--json", "human", "list", "--all"]);
    assert_eq!(all.json()["result"].as_array().unwrap().len(), 2);
}

#[test]
fn audit_verify_detects_tampering() {
    let env = Env::new();
    let manifest = env.write("coder.toml", IMAGE);
    assert_eq!(
        env.run(&["image", "register", manifest.to_str().unwrap()])
            .code,
        0
    );
    let ok = env.run(&["audit", "verify"]);
    assert_eq!(ok.code, 0, "{ok:?}");
    assert!(
        ok.stdout.contains("audit chain ok: 1 records, head "),
        "{ok:?}"
    );
    let json_ok = env.run(&["--json", "audit", "verify"]);
    assert_eq!(json_ok.json()["result"]["records"], json!(1));

    let show = env.run(&["audit", "show"]);
    assert!(show.stdout.contains("image.register"), "{show:?}");
    let export = env.dir.path().join("audit.jsonl");
    let out = env.run(&["audit", "export", export.to_str().unwrap()]);
    assert_eq!(out.code, 0, "{out:?}");
    let text = std::fs::read_to_string(&export).unwrap();
    let first: serde_json::Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
    assert_eq!(first["action"], json!("image.register"));
    assert_eq!(first["seq"], json!(1));

    rt().block_on(async {
        let url = format!("sqlite://{}", env.db().display());
        let pool = sqlx::SqlitePool::connect(&url).await.unwrap();
        sqlx::query("UPDATE audit SET decision = 'deny' WHERE seq = 1")
            .execute(&pool)
            .await
            .unwrap();
        pool.close().await;
    });
    let broken = env.run(&["audit", "verify"]);
    assert_eq!(broken.code, 1, "{broken:?}");
    assert!(broken.stderr.contains("broken at record 1"), "{broken:?}");
    let broken = env.run(&["--json", "audit", "verify"]);
    assert_eq!(broken.json()["error"]["seq"], json!(1));
}

#[test]
fn a_missing_database_says_how_to_fix_it() {
    let env = Env::new();
    let out = env.run(&["ps"]);
    assert_eq!(out.code, 2, "{out:?}");
    assert!(out.stderr.contains("no database at"), "{out:?}");
    assert!(out.stderr.contains("--db"), "{out:?}");
    let out = env.run(&["audit", "verify"]);
    assert_eq!(out.code, 2, "{out:?}");
}

#[test]
fn the_default_state_lives_outside_the_workspace() {
    use std::os::unix::fs::PermissionsExt;
    let env = Env::new();
    let manifest = env.write("coder.toml", IMAGE);
    let state_home = env.dir.path().join("state-home");
    let run = || {
        let output = std::process::Command::new(cli_support::bin())
            .args(["--json", "image", "register", manifest.to_str().unwrap()])
            .current_dir(env.ws())
            .env_remove("AGENT_LIBOS_DB")
            .env("XDG_STATE_HOME", &state_home)
            .output()
            .unwrap();
        cli_support::Out::from(output)
    };
    let out = run();
    assert_eq!(out.code, 0, "{out:?}");
    // Nothing of the runtime's state is in the workspace.
    let in_ws: Vec<_> = std::fs::read_dir(env.ws())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(in_ws, ["coder.toml"], "{in_ws:?}");
    // One directory per workspace under the per-user state home, private to the user.
    let dirs: Vec<_> = std::fs::read_dir(state_home.join("agent-libos"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(dirs.len(), 1, "{dirs:?}");
    let dir = &dirs[0];
    assert!(dir
        .file_name()
        .unwrap()
        .to_string_lossy()
        .starts_with("ws-"));
    assert!(dir.join("state.db").exists());
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(dir), 0o700);
    assert_eq!(mode(&dir.join("state.db.key")), 0o600);
    // The same workspace finds the same state again.
    let again = run();
    assert_eq!(again.code, 2, "registered twice: {again:?}");
    assert!(again.stdout.contains("AlreadyExists"), "{again:?}");
}

#[test]
fn help_documents_examples_and_exit_codes() {
    let env = Env::new();
    let top = env.run(&["--help"]);
    assert_eq!(top.code, 0);
    assert!(top.stdout.contains("Exit codes:"), "{top:?}");
    assert!(top.stdout.contains("5  waiting for a human"), "{top:?}");
    for sub in [
        vec!["tool", "check"],
        vec!["tool", "test"],
        vec!["tool", "run"],
        vec!["replay"],
        vec!["ps"],
        vec!["human", "list"],
        vec!["human", "approve"],
        vec!["audit", "show"],
        vec!["audit", "verify"],
        vec!["audit", "export"],
        vec!["checkpoint", "create"],
        vec!["checkpoint", "list"],
        vec!["checkpoint", "rollback"],
        vec!["checkpoint", "fork"],
        vec!["checkpoint", "export"],
        vec!["checkpoint", "import"],
        vec!["run"],
        vec!["mcp"],
        vec!["image", "register"],
        vec!["image", "list"],
        vec!["resume"],
        vec!["demo"],
    ] {
        let mut args = sub.clone();
        args.push("--help");
        let out = env.run(&args);
        assert_eq!(out.code, 0, "{sub:?}");
        assert!(out.stdout.contains("Examples:"), "{sub:?}: {}", out.stdout);
    }
    let bad = env.run(&["nope"]);
    assert_eq!(bad.code, 2);
}

#[test]
fn sandbox_check_reports_the_host_and_its_self_test_holds() {
    let env = Env::new();
    let out = env.run(&["sandbox", "check", "--json"]);
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    let result = &out.json()["result"];
    assert_eq!(result["usable"], true, "{result}");
    assert!(result["support"]["landlock_abi"].as_u64().unwrap() >= 3);
    let checks = result["self_test"].as_array().unwrap();
    assert_eq!(checks.len(), 5, "{result}");
    assert!(checks.iter().all(|c| c["passed"] == true), "{result}");
    let text = env.run(&["sandbox", "check"]);
    assert!(
        text.stdout.contains("verdict       commands run sandboxed"),
        "{}",
        text.stdout
    );
}

#[test]
fn unsandboxed_shell_is_the_operators_choice_and_is_audited() {
    let env = Env::new();
    env.write(
        "t.ts",
        r#"export const tool = { name: "t", description: "Runs echo.", input: { type: "object" }, output: {} };
export default async function run(args: any, libos: any) { return await libos.shell.run(["echo", "hi"]); }
"#,
    );
    for (flag, expected) in [
        (None, "landlock-abi"),
        (Some("--unsandboxed-shell"), "unsandboxed (operator opt-out"),
    ] {
        let mut args = vec!["tool", "run", "t.ts", "--args", "{}", "--allow-run=echo"];
        args.extend(flag);
        let out = env.run(&args);
        assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
        let audit = env.run(&[
            "audit",
            "show",
            "--action",
            "shell.run",
            "--limit",
            "1",
            "--json",
        ]);
        assert!(
            audit.stdout.contains(expected),
            "{expected}: {}",
            audit.stdout
        );
    }
}
