//! `agent-libos demo`: a deterministic, offline story of the runtime at work.
//!
//! A coding-agent image is registered and spawned on a small workspace holding a failing
//! test log. It forks a worker that proposes, validates, registers and calls a TypeScript tool
//! (`fixtures/tools/extract_failures.ts`) to extract the failing tests. The operator
//! checkpoints the parent before its risky write; the parent tries the write without a
//! capability and is denied, asks a human for permission (answered
//! once through the real human queue by a scripted human), writes the report, stores a report
//! object, and finally the audit chain is verified and its head printed.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result};
use serde_json::{json, Value};
use tokio::sync::oneshot;

use super::args::DemoArgs;
use super::terminal;
use super::tool::{self, LoadError};
use super::{exit, Ctx, Failure};
use crate::kernel::{
    CapabilitySpec, FsCall, HumanAnswer, HumanCall, HumanMode, Image, JitCall, Kernel,
    KernelConfig, MemCall, Pid, Policy, ProcCall, ProcessCtx, RequestKind, Right, SpawnOptions,
    SysResult, Syscall, SyscallError,
};

const TOOL_SOURCE: &str = include_str!("../../fixtures/tools/extract_failures.ts");

const IMAGE: &str = r#"
id = "coding-agent"
version = "1.0.0"
system_prompt = "You fix failing tests in the workspace."

[[capabilities]]
resource = "fs:logs/**"
rights = ["read"]
delegable = true

[[capabilities]]
resource = "tool:extract_failures"
rights = ["create"]
delegable = true

[[requestable]]
resource = "fs:REPORT.md"
rights = ["write"]
"#;

const TEST_LOG: &str = "\
running 4 tests
test parser::tests::empty_input ... ok
test parser::tests::nested_lists ... FAILED
test render::tests::escapes_html ... ok
test render::tests::wraps_long_lines ... FAILED

failures:

---- parser::tests::nested_lists stdout ----
thread 'parser::tests::nested_lists' panicked at src/parser.rs:88:9:
assertion `left == right` failed: depth 2 list was flattened

---- render::tests::wraps_long_lines stdout ----
thread 'render::tests::wraps_long_lines' panicked at src/render.rs:41:5:
line 3 is 104 columns, expected at most 80

failures:
    parser::tests::nested_lists
    render::tests::wraps_long_lines

test result: FAILED. 2 passed; 2 failed; 0 ignored; 0 measured; 0 filtered out
";

/// The demo's scripted human.
const HUMAN: &str = "demo:alice";

/// The story's numbered steps: printed as they happen, or (`--json`) kept for the result.
struct Story {
    json: bool,
    steps: Vec<String>,
}

impl Story {
    fn step(&mut self, text: impl AsRef<str>) {
        self.steps.push(text.as_ref().to_string());
        if !self.json {
            terminal::out(format!("{:>2}. {}", self.steps.len(), text.as_ref()));
        }
    }
}

pub async fn run(ctx: &Ctx, args: DemoArgs) -> Result<i32> {
    let started = Instant::now();
    let temp;
    let root: PathBuf = match &args.keep {
        Some(dir) => {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
            if dir.join("state.db").exists() {
                return Err(Failure::new(
                    "AlreadyExists",
                    exit::INVALID,
                    format!("{} already holds a demo database", dir.display()),
                )
                .hint("pass an empty or new directory to --keep")
                .into());
            }
            dir.clone()
        }
        None => {
            temp = tempfile::Builder::new()
                .prefix("agent-libos-")
                .tempdir()
                .context("creating a temporary directory")?;
            temp.path().to_path_buf()
        }
    };
    let ws = root.join("workspace");
    let db = root.join("state.db");
    write_workspace(&ws)?;

    let mut config = KernelConfig::new(&db, &ws);
    config.human_mode = HumanMode::Wait;
    let kernel = Kernel::open(config).await.context("opening the runtime")?;
    let mut story = Story {
        json: ctx.json,
        steps: Vec::new(),
    };
    if !ctx.json {
        terminal::out("agent-libos demo: a coding agent triages a failing test run\n");
    }
    story.step(format!(
        "workspace {} holds logs/test-output.log (2 failing tests)",
        ws.display()
    ));

    let image = Image::from_toml(IMAGE).map_err(anyhow::Error::msg)?;
    kernel.register_image(&image).await.map_err(Failure::from)?;
    story.step(
        "registered image coding-agent@1.0.0: may read logs/**, may register extract_failures",
    );
    let parent = kernel
        .spawn_root(SpawnOptions {
            image: Some("coding-agent".into()),
            goal: "triage the failing tests and write REPORT.md".into(),
            ..SpawnOptions::default()
        })
        .await
        .map_err(Failure::from)?;
    story.step(format!("spawned process {parent} from coding-agent: \"triage the failing tests and write REPORT.md\""),
    );

    // The scripted human: approves the parent's permission request once.
    let human = tokio::spawn(scripted_human(kernel.clone(), parent));

    let (fork_tx, fork_rx) = oneshot::channel::<Pid>();
    let (log_tx, mut log_rx) = tokio::sync::mpsc::unbounded_channel::<String>();
    let plog = log_tx.clone();
    let parent_task = kernel
        .run(parent, move |pcx| parent_body(pcx, fork_tx, plog))
        .await
        .map_err(Failure::from)?;
    // The worker: run by the host once the parent has forked it.
    let child = fork_rx
        .await
        .map_err(|_| anyhow::anyhow!("the parent ended before forking its worker"))?;
    let wlog = log_tx.clone();
    let worker_task = kernel
        .run(child, move |pcx| worker_body(pcx, wlog))
        .await
        .map_err(Failure::from)?;
    drop(log_tx);
    let mut failed: Option<SyscallError> = None;
    let printer = async {
        while let Some(line) = log_rx.recv().await {
            story.step(line);
        }
    };
    let (parent_result, worker_result, ()) = tokio::join!(parent_task, worker_task, printer);
    human.abort();
    for r in [worker_result, parent_result] {
        match r {
            Ok(Err(e)) if failed.is_none() => failed = Some(e),
            Err(e) if failed.is_none() => failed = Some(SyscallError::internal(e)),
            _ => {}
        }
    }
    if let Some(e) = failed {
        let mut f = Failure::from_syscall(&e);
        if tool::is_missing_tool_host(&e) {
            f = f.hint("this build's kernel has no JIT tool host, which the demo's worker needs");
        }
        return Err(anyhow::Error::new(f).context("demo"));
    }

    let report = kernel.verify_audit().await?;
    if let Some(b) = &report.broken {
        return Err(Failure::new(
            "AuditBroken",
            exit::FAILED,
            format!("audit chain broken at record {}: {}", b.seq, b.reason),
        )
        .into());
    }
    story.step(format!(
        "audit chain verified: {} records, head {}",
        report.records, report.head
    ));
    if ctx.json {
        terminal::out(
            json!({"ok": true, "result": {
                "steps": story.steps,
                "audit": {"records": report.records, "head": report.head},
                "elapsed_ms": started.elapsed().as_millis() as u64,
                "kept": args.keep.as_ref().map(|d| d.join("state.db")),
            }})
            .to_string(),
        );
        return Ok(exit::OK);
    }
    terminal::out(format!("\ndone in {} ms.", started.elapsed().as_millis()));
    match &args.keep {
        Some(dir) => {
            let db = dir.join("state.db");
            terminal::out(format!(
                "kept {}; look around with:\n  agent-libos --db {} ps --all\n  agent-libos --db {} audit show\n  agent-libos --db {} human list --all\n  agent-libos --db {} checkpoint list",
                dir.display(),
                db.display(),
                db.display(),
                db.display(),
                db.display()
            ));
        }
        None => terminal::out("(run with --keep DIR to keep the database and workspace)"),
    }
    Ok(exit::OK)
}

fn write_workspace(ws: &Path) -> Result<()> {
    std::fs::create_dir_all(ws.join("logs"))?;
    std::fs::create_dir_all(ws.join("src"))?;
    std::fs::write(ws.join("logs/test-output.log"), TEST_LOG)?;
    std::fs::write(
        ws.join("src/parser.rs"),
        "// a list parser (the demo never edits it)\n",
    )?;
    Ok(())
}

async fn scripted_human(kernel: Kernel, pid: Pid) {
    loop {
        for r in kernel.human_requests(false).await.unwrap_or_default() {
            if r.pid == pid && r.kind == RequestKind::Permission {
                let _ = kernel
                    .human_respond(&r.id, HumanAnswer::ApproveOnce, HUMAN)
                    .await;
            }
        }
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
}

type Log = tokio::sync::mpsc::UnboundedSender<String>;

async fn parent_body(pcx: ProcessCtx, fork_tx: oneshot::Sender<Pid>, log: Log) -> SysResult<Value> {
    let pid = pcx.pid;
    let forked = pcx
        .syscall(Syscall::Proc(ProcCall::Fork {
            goal: Some("extract the failing tests from logs/test-output.log".into()),
            inherit: vec![
                CapabilitySpec::new("fs:logs/**", &[Right::Read], Policy::AlwaysAllow),
                CapabilitySpec::new(
                    "tool:extract_failures",
                    &[Right::Create],
                    Policy::AlwaysAllow,
                ),
            ],
            budget: None,
        }))
        .await?;
    let child = forked["pid"].as_i64().unwrap_or_default();
    let _ = log.send(format!(
        "process {pid} forked worker {child}, passing on only fs:logs/** read and tool:extract_failures create"
    ));
    let _ = fork_tx.send(child);
    let waited = pcx
        .syscall(Syscall::Proc(ProcCall::Wait {
            pid: child,
            timeout_ms: Some(30_000),
        }))
        .await?;
    let result = waited["exit"].clone();
    if waited["status"] != json!("EXITED") {
        return Err(SyscallError::internal(format!(
            "worker {child} ended {}: {}",
            waited["status"], result
        )));
    }
    let failures: Vec<String> = result["failures"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|f| {
            format!(
                "- {}: {}",
                f["name"].as_str().unwrap_or("?"),
                f["message"].as_str().unwrap_or("")
            )
        })
        .collect();
    let _ = log.send(format!(
        "process {pid} got the worker's result: {} failing tests",
        result["count"]
    ));
    // Checkpoints are operator calls (no syscall reaches them): the host takes one for the
    // process before it attempts a write outside the runtime.
    let ck = pcx.kernel.checkpoint_create(pid, "before-report").await?;
    let _ = log.send(format!(
        "the operator checkpointed process {pid} before its risky write: {} ({} capabilities, {} objects, audit #{})",
        ck.id, ck.capabilities, ck.objects, ck.audit_seq
    ));
    let report = format!(
        "# Failing tests\n\n{}\n\nSource: logs/test-output.log\n",
        failures.join("\n")
    );
    let write = Syscall::Fs(FsCall::WriteText {
        path: "REPORT.md".into(),
        content: report.clone(),
        overwrite: false,
    });
    match pcx.syscall(write.clone()).await {
        Err(SyscallError::PermissionDenied {
            resource, right, ..
        }) => {
            let _ = log.send(format!(
                "process {pid} tried to write REPORT.md: denied ({right} on {resource}, no capability)"
            ));
        }
        Err(e) => return Err(e),
        Ok(_) => {
            return Err(SyscallError::internal(
                "the write was allowed without a capability",
            ))
        }
    }
    let asked = pcx
        .syscall(Syscall::Human(HumanCall::RequestPermission {
            resource: "fs:REPORT.md".into(),
            rights: vec![Right::Write],
            reason: "write the failing-test report".into(),
            channel: "operator".into(),
        }))
        .await?;
    let _ = log.send(format!(
        "process {pid} asked a human for write on fs:REPORT.md; {HUMAN} approved it once (request {})",
        asked["id"].as_str().unwrap_or("?")
    ));
    let written = pcx.syscall(write).await?;
    let _ =
        log.send(format!(
        "process {pid} wrote REPORT.md ({} bytes, sha256 {}…); the one-time grant is now used up",
        written["bytes"],
        written["sha256"].as_str().unwrap_or("").get(..12).unwrap_or("")
    ));
    let object = pcx
        .syscall(Syscall::Mem(MemCall::Create(crate::kernel::ObjectSpec {
            name: Some("failing-tests".into()),
            object_type: "report".into(),
            payload: result.clone(),
            title: Some("Failing tests".into()),
            summary: Some(format!("{} failing tests", result["count"])),
            tags: vec!["triage".into()],
            ..Default::default()
        })))
        .await?;
    let _ = log.send(format!(
        "process {pid} stored report object {} in its namespace",
        object["id"].as_str().unwrap_or("?")
    ));
    Ok(json!({"report": object["id"], "failures": result["count"]}))
}

async fn worker_body(pcx: ProcessCtx, log: Log) -> SysResult<Value> {
    let pid = pcx.pid;
    let loaded = match tool::load(&pcx, TOOL_SOURCE).await {
        Ok(l) => l,
        Err(LoadError::Sys(e)) => return Err(e),
        Err(LoadError::Rejected(v)) => {
            return Err(SyscallError::invalid(format!(
                "extract_failures was rejected: {}",
                v["findings"]
            )))
        }
    };
    let tests = loaded.validation["tests"].as_array().map_or(0, Vec::len);
    let _ = log.send(format!(
        "worker {pid} proposed, validated ({tests} declared test passed) and registered tool {} ({}…)",
        loaded.name,
        loaded.hash.get(..12).unwrap_or("")
    ));
    let result = pcx
        .syscall(Syscall::Tool(JitCall::Call {
            name: loaded.name.clone(),
            args: json!({"path": "logs/test-output.log"}),
        }))
        .await?;
    let names: Vec<&str> = result["failures"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|f| f["name"].as_str())
        .collect();
    let _ = log.send(format!(
        "worker {pid} called {}: {}",
        loaded.name,
        names.join(", ")
    ));
    Ok(result)
}
