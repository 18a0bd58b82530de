//! `agent-libos tool check|test|run`: the JIT tool lifecycle from the command line.
//!
//! `check` runs the static front end ([`crate::jit::analyze`]) locally, then the kernel's
//! `tool.validate` (which also runs the declared tests) on a throwaway database. `test` is
//! `tool.validate`'s test report. `run` proposes, validates, registers and calls the tool in
//! a fresh process on the real database with exactly the grants given on the command line,
//! so that `ps`, `audit show` and `human list` see the run afterwards.

use std::io::IsTerminal;
use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, Result};
use parking_lot::Mutex;
use serde_json::{json, Value};

use super::args::{ToolCommand, ToolFileArgs, ToolRunArgs};
use super::source_view::{in_user_file, print_finding, Stream};
use super::terminal;
use super::{exit, grants, human, note, Ctx, Failure};
use crate::jit::{self, Finding};
use crate::kernel::{
    CapabilitySpec, HumanMode, JitCall, Kernel, KernelConfig, Pid, Policy, ProcessCtx, Right,
    SpawnOptions, SysResult, Syscall, SyscallError,
};

pub async fn run(ctx: &Ctx, cmd: ToolCommand) -> Result<i32> {
    match cmd {
        ToolCommand::Check(args) => check(ctx, args).await,
        ToolCommand::Test(args) => test(ctx, args).await,
        ToolCommand::Run(args) => run_tool(ctx, args).await,
        ToolCommand::Init(args) => super::tool_init::run(ctx, args).await,
    }
}

/// A tool loaded into a process's tool table.
#[derive(Debug, Clone)]
pub struct Loaded {
    pub id: String,
    pub name: String,
    pub hash: String,
    /// The `tool.validate` result.
    pub validation: Value,
}

/// Why loading failed.
#[derive(Debug, Clone)]
pub enum LoadError {
    /// `tool.validate` said `ok: false`; the validation result.
    Rejected(Value),
    Sys(SyscallError),
}

impl From<SyscallError> for LoadError {
    fn from(e: SyscallError) -> Self {
        LoadError::Sys(e)
    }
}

/// `tool.propose` then `tool.validate` as process `pcx`.
pub async fn propose_and_validate(
    pcx: &ProcessCtx,
    source: &str,
) -> Result<(String, String, Value), LoadError> {
    let proposed = pcx
        .syscall(Syscall::Tool(JitCall::Propose {
            source: source.to_string(),
        }))
        .await?;
    let id = proposed["id"]
        .as_str()
        .ok_or_else(|| SyscallError::internal("tool.propose returned no id"))?
        .to_string();
    let hash = proposed["hash"].as_str().unwrap_or_default().to_string();
    let validation = pcx
        .syscall(Syscall::Tool(JitCall::Validate { id: id.clone() }))
        .await?;
    Ok((id, hash, validation))
}

/// Proposes, validates and registers a tool as process `pcx`.
pub async fn load(pcx: &ProcessCtx, source: &str) -> Result<Loaded, LoadError> {
    let (id, hash, validation) = propose_and_validate(pcx, source).await?;
    if validation["ok"] != json!(true) {
        return Err(LoadError::Rejected(validation));
    }
    let registered = pcx
        .syscall(Syscall::Tool(JitCall::Register { id: id.clone() }))
        .await?;
    Ok(Loaded {
        id,
        name: registered["name"]
            .as_str()
            .or(validation["name"].as_str())
            .unwrap_or_default()
            .to_string(),
        hash: registered["hash"].as_str().unwrap_or(&hash).to_string(),
        validation,
    })
}

/// Whether an error says the kernel was built without the JIT tool host.
pub fn is_missing_tool_host(err: &SyscallError) -> bool {
    matches!(err, SyscallError::InvalidArgument(m) if m.contains("served by the JIT tool host"))
}

fn read_source(file: &Path) -> Result<String> {
    std::fs::read_to_string(file).map_err(|e| {
        Failure::new(
            "InvalidArgument",
            exit::INVALID,
            format!("cannot read {}: {e}", file.display()),
        )
        .hint("pass the path of a TypeScript tool file")
        .into()
    })
}

fn findings_json(findings: &[Finding]) -> Value {
    serde_json::to_value(findings).unwrap_or(Value::Null)
}

/// Static analysis on the host; findings as JSON, or the tool's name.
fn analyze_locally(file: &Path, source: &str) -> Result<String, Value> {
    let specifier = format!("file:///{}", file.display());
    match jit::analyze(&specifier, source, &jit::AnalyzeOptions::default()) {
        Ok(tool) => Ok(tool.meta.name),
        Err(findings) => Err(findings_json(&findings)),
    }
}

fn rejected(file: &Path, findings: &Value, tests: &Value) -> Failure {
    let nf = findings.as_array().map_or(0, Vec::len);
    let failed = tests.as_array().map_or(0, |t| {
        t.iter().filter(|t| t["passed"] != json!(true)).count()
    });
    let mut parts = Vec::new();
    if nf > 0 {
        parts.push(format!("{nf} finding{}", if nf == 1 { "" } else { "s" }));
    }
    if failed > 0 {
        parts.push(format!(
            "{failed} failing test{}",
            if failed == 1 { "" } else { "s" }
        ));
    }
    Failure::new(
        "ValidationFailed",
        exit::INVALID,
        format!(
            "{} was rejected by validation ({})",
            file.display(),
            parts.join(", ")
        ),
    )
    .hint(format!(
        "fix the findings above, then run `agent-libos tool check {}` again",
        file.display()
    ))
    .extra(json!({"findings": findings, "tests": tests}))
}

/// Opens a kernel on a throwaway database for validation; returns it with a fresh process.
async fn scratch_kernel() -> Result<(tempfile::TempDir, Kernel, Pid)> {
    let dir = tempfile::Builder::new()
        .prefix("agent-libos-")
        .tempdir()
        .context("creating a temporary directory")?;
    let ws = dir.path().join("ws");
    std::fs::create_dir_all(&ws)?;
    let mut config = KernelConfig::new(dir.path().join("state.db"), ws);
    config.human_mode = HumanMode::FailFast;
    let kernel = Kernel::open(config).await?;
    let pid = kernel
        .spawn_root(SpawnOptions {
            goal: "validate a tool".into(),
            ..SpawnOptions::default()
        })
        .await?;
    Ok((dir, kernel, pid))
}

/// Runs `tool.propose` + `tool.validate` on a scratch kernel.
async fn validate_in_kernel(source: &str) -> Result<Result<Value, SyscallError>> {
    let (_dir, kernel, pid) = scratch_kernel().await?;
    let pcx = ProcessCtx { kernel, pid };
    Ok(match propose_and_validate(&pcx, source).await {
        Ok((_, _, v)) => Ok(v),
        Err(LoadError::Sys(e)) => Err(e),
        Err(LoadError::Rejected(v)) => Ok(v),
    })
}

async fn check(ctx: &Ctx, args: ToolFileArgs) -> Result<i32> {
    let file = &args.file;
    let source = read_source(file)?;
    let analyzed = analyze_locally(file, &source);
    // Source that does not parse, or is past the analysis limits, is not handed to tsc.
    let parses = analyzed
        .as_ref()
        .err()
        .and_then(Value::as_array)
        .is_none_or(|fs| {
            !fs.iter()
                .any(|f| f["rule"] == jit::rule::SYNTAX || f["rule"] == jit::rule::LIMITS)
        });
    let type_findings = if parses {
        super::typecheck::findings(file)
    } else {
        Vec::new()
    };
    let name = match analyzed {
        Ok(name) if type_findings.is_empty() => name,
        result => {
            let mut findings = result.err().unwrap_or_else(|| json!([]));
            if let Some(list) = findings.as_array_mut() {
                list.extend(type_findings);
                list.sort_by_key(|f| (f["line"].as_u64(), f["column"].as_u64()));
            }
            if !ctx.json {
                for f in findings.as_array().into_iter().flatten() {
                    print_finding(Stream::Stdout, file, &source, f);
                }
            }
            return Err(rejected(file, &findings, &Value::Null).into());
        }
    };
    match validate_in_kernel(&source).await? {
        Ok(v) => {
            let findings = v["findings"].clone();
            let tests = v["tests"].clone();
            if v["ok"] != json!(true) {
                if !ctx.json {
                    for f in findings.as_array().into_iter().flatten() {
                        print_finding(Stream::Stdout, file, &source, f);
                    }
                    print_tests(&tests, true);
                }
                return Err(rejected(file, &findings, &tests).into());
            }
            let n = tests.as_array().map_or(0, Vec::len);
            ctx.print(
                &json!({"file": file, "name": name, "ok": true, "findings": [], "tests": tests}),
                || {
                    format!(
                        "{}: ok (tool {name}, {n} declared test{} passed)",
                        file.display(),
                        if n == 1 { "" } else { "s" }
                    )
                },
            );
        }
        Err(e) if is_missing_tool_host(&e) => {
            note("declared tests were not run: this build's kernel has no JIT tool host");
            ctx.print(
                &json!({"file": file, "name": name, "ok": true, "findings": [], "tests": null}),
                || format!("{}: ok (tool {name}; static checks only)", file.display()),
            );
        }
        Err(e) => return Err(Failure::from_syscall(&e).into()),
    }
    Ok(exit::OK)
}

fn print_tests(tests: &Value, failures_only: bool) {
    for t in tests.as_array().into_iter().flatten() {
        let name = t["name"].as_str().unwrap_or("?");
        if t["passed"] == json!(true) {
            if !failures_only {
                terminal::out(format!("ok   {name}"));
            }
        } else {
            let why = t["error"].as_str().unwrap_or("failed");
            terminal::out(format!("FAIL {name}: {why}"));
        }
    }
}

async fn test(ctx: &Ctx, args: ToolFileArgs) -> Result<i32> {
    let file = &args.file;
    let source = read_source(file)?;
    if let Err(findings) = analyze_locally(file, &source) {
        if !ctx.json {
            for f in findings.as_array().into_iter().flatten() {
                print_finding(Stream::Stdout, file, &source, f);
            }
        }
        return Err(rejected(file, &findings, &Value::Null).into());
    }
    let v = match validate_in_kernel(&source).await? {
        Ok(v) => v,
        Err(e) if is_missing_tool_host(&e) => {
            return Err(Failure::new(
                "InvalidArgument",
                exit::INVALID,
                "cannot run declared tests: this build's kernel has no JIT tool host",
            )
            .hint("`agent-libos tool check` still runs the static checks")
            .into())
        }
        Err(e) => return Err(Failure::from_syscall(&e).into()),
    };
    let tests = v["tests"].clone();
    let all = tests.as_array().cloned().unwrap_or_default();
    let passed = all.iter().filter(|t| t["passed"] == json!(true)).count();
    let failed = all.len() - passed;
    let findings = v["findings"].clone();
    if ctx.json {
        terminal::out(
            json!({"ok": failed == 0 && v["ok"] == json!(true), "result": {"file": file, "tests": tests, "findings": findings, "passed": passed, "failed": failed}}).to_string());
    } else {
        for f in findings.as_array().into_iter().flatten() {
            print_finding(Stream::Stdout, file, &source, f);
        }
        print_tests(&tests, false);
        terminal::out(format!("{passed} passed, {failed} failed"));
    }
    Ok(if failed == 0 && v["ok"] == json!(true) {
        exit::OK
    } else {
        exit::INVALID
    })
}

/// How the goal of a `tool run` process starts (`resume` ends such a process when its call
/// finishes).
const TOOL_RUN_GOAL: &str = "tool run ";

/// Whether `goal` is that of a `tool run` process.
pub fn is_tool_run_goal(goal: &str) -> bool {
    goal.starts_with(TOOL_RUN_GOAL)
}

/// What the process body of `tool run` leaves for the CLI.
#[derive(Default)]
struct RunSlot {
    validation: Option<Value>,
}

async fn run_tool(ctx: &Ctx, args: ToolRunArgs) -> Result<i32> {
    let file = args.file.clone();
    let source = read_source(&file)?;
    let name = match analyze_locally(&file, &source) {
        Ok(name) => name,
        Err(findings) => {
            if !ctx.json {
                for f in findings.as_array().into_iter().flatten() {
                    print_finding(Stream::Stderr, &file, &source, f);
                }
            }
            return Err(rejected(&file, &findings, &Value::Null).into());
        }
    };
    let call_args: Value = serde_json::from_str(&args.args).map_err(|e| {
        Failure::new(
            "InvalidArgument",
            exit::INVALID,
            format!("--args is not JSON: {e}"),
        )
        .hint("pass a JSON object, e.g. --args '{\"path\":\"README.md\"}'")
    })?;
    let mut specs = grants::from_flags(&args, &ctx.workspace)
        .map_err(|e| Failure::new("InvalidArgument", exit::INVALID, format!("{e:#}")))?;
    // The operator loading this tool: the process may register it under its name.
    specs.push(CapabilitySpec::new(
        format!("tool:{name}"),
        &[Right::Create],
        Policy::AlwaysAllow,
    ));
    let mut requestable = Vec::new();
    for g in &args.requestable {
        let spec = CapabilitySpec::parse_grant(g).map_err(|e| {
            Failure::new(
                "InvalidArgument",
                exit::INVALID,
                format!("--requestable {g}: {e}"),
            )
        })?;
        requestable.push(spec);
    }
    let run_source = source.clone();
    let interactive = args.ask && std::io::stdin().is_terminal() && std::io::stderr().is_terminal();
    if args.ask && !interactive {
        note("--ask needs a terminal on stdin and stderr; requests for a human will fail fast");
    }
    let mode = if interactive {
        HumanMode::Wait
    } else {
        HumanMode::FailFast
    };
    let kernel = ctx.open(mode).await?;
    let start_seq = kernel.store().audit_head_seq().await.unwrap_or(0);
    let pid = kernel
        .spawn_root(SpawnOptions {
            goal: format!("{TOOL_RUN_GOAL}{}", file.display()),
            grants: specs.clone(),
            requestable,
            ..SpawnOptions::default()
        })
        .await
        .map_err(Failure::from)?;
    tracing::info!(pid, tool = %name, "spawned");
    let prompter = interactive.then(|| tokio::spawn(human::prompt_loop(kernel.clone(), pid)));
    let slot = Arc::new(Mutex::new(RunSlot::default()));
    let body_slot = slot.clone();
    let (tx, rx) = tokio::sync::oneshot::channel();
    let task = kernel
        .run(pid, move |pcx: ProcessCtx| async move {
            let result = call_in_process(pcx, source, call_args, body_slot).await;
            let waiting = matches!(result, Err(SyscallError::HumanRequired { .. }));
            let _ = tx.send(result.clone());
            if waiting {
                // The call waits for a human: the process stays alive (its invocation is
                // journaled as waiting) for `agent-libos resume` to finish.
                std::future::pending::<()>().await;
            }
            result
        })
        .await
        .map_err(Failure::from)?;
    let outcome: SysResult<Value> = rx.await.unwrap_or_else(|_| {
        Err(SyscallError::internal(
            "the process task ended without a result",
        ))
    });
    // The process ends (EXITED or FAILED) before this host does, unless it waits for a
    // human.
    if !matches!(outcome, Err(SyscallError::HumanRequired { .. })) {
        let _ = task.await;
    }
    if let Some(p) = prompter {
        p.abort();
    }
    if args.trace {
        print_trace(&kernel, start_seq).await;
    }
    let _ = kernel.store().flush().await;
    match outcome {
        Ok(result) => {
            if ctx.json {
                terminal::out(json!({"ok": true, "result": result, "pid": pid}).to_string());
            } else {
                terminal::out(serde_json::to_string_pretty(&result).unwrap_or_default());
            }
            Ok(exit::OK)
        }
        Err(err) => {
            if let Some(v) = slot.lock().validation.take() {
                if !ctx.json {
                    for f in v["findings"].as_array().into_iter().flatten() {
                        print_finding(Stream::Stderr, &file, &run_source, f);
                    }
                    for t in v["tests"].as_array().into_iter().flatten() {
                        if t["passed"] != json!(true) {
                            terminal::err(format!(
                                "FAIL {}: {}",
                                t["name"].as_str().unwrap_or("?"),
                                t["error"].as_str().unwrap_or("failed")
                            ));
                        }
                    }
                }
                return Err(rejected(&file, &v["findings"], &v["tests"]).into());
            }
            // Traces and messages name the user's file, not the runtime's module specifier.
            let err = in_user_file(err, &run_source, &file);
            let mut failure = Failure::from_syscall(&err);
            if let SyscallError::PermissionDenied {
                resource, right, ..
            } = &err
            {
                // The denial's reason does not survive the isolate boundary: tell an
                // explicit deny from a missing grant by the grants given.
                if explicitly_denied(&specs, resource, right) {
                    failure = failure.hint(format!(
                        "an explicit deny matched; remove the --deny-* flag (or always_deny grant) that covers {resource}"
                    ));
                }
            }
            if let SyscallError::HumanRequired { request_id, .. } = &err {
                failure = failure.hint(format!(
                    "the call is waiting for a human and process {pid} stays alive: approve it with `agent-libos human approve {request_id}` (or reject it), then run `agent-libos resume` to finish the call exactly once (the journal re-runs the invocation and reuses the approved request); or run again with --ask on a terminal, or grant the capability up front"
                ));
            }
            if is_missing_tool_host(&err) {
                failure = failure.hint("this build's kernel has no JIT tool host; `agent-libos tool check` still runs the static checks");
            }
            if let SyscallError::ToolError { stack, .. } = &err {
                if !stack.is_empty() && !ctx.json {
                    terminal::err(stack);
                }
            }
            Err(anyhow::Error::new(failure).context(format!("tool {name} (process {pid})")))
        }
    }
}

/// Whether an `always_deny` grant among `specs` covers `right` on `resource`.
fn explicitly_denied(specs: &[CapabilitySpec], resource: &str, right: &str) -> bool {
    specs.iter().any(|s| {
        s.policy == Policy::AlwaysDeny
            && s.rights.iter().any(|r| r.as_str() == right)
            && crate::kernel::capability::match_resource(&s.resource, resource).is_some()
    })
}

/// The process body of `tool run`: load the tool and call it once.
async fn call_in_process(
    pcx: ProcessCtx,
    source: String,
    args: Value,
    slot: Arc<Mutex<RunSlot>>,
) -> SysResult<Value> {
    let loaded = match load(&pcx, &source).await {
        Ok(l) => l,
        Err(LoadError::Sys(e)) => return Err(e),
        Err(LoadError::Rejected(v)) => {
            slot.lock().validation = Some(v);
            return Err(SyscallError::invalid("the tool was rejected by validation"));
        }
    };
    pcx.syscall(Syscall::Tool(JitCall::Call {
        name: loaded.name,
        args,
    }))
    .await
}

/// Prints the audit records written since `after` (this run's syscalls) to stderr.
async fn print_trace(kernel: &Kernel, after: i64) {
    let _ = kernel.store().flush().await;
    let rows = match kernel.store().audit_records_after(after).await {
        Ok(rows) => rows,
        Err(e) => {
            note(format!("--trace: cannot read the audit log: {e}"));
            return;
        }
    };
    for row in rows {
        terminal::err(format!(
            "trace: #{:<5} {:<8} {:<22} {:<6} {}",
            row.seq, row.actor, row.action, row.decision, row.target
        ));
    }
}
