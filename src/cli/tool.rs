//! `agent-libos tool check|test|run`: the JIT tool lifecycle from the command line.
//!
//! `check` runs the static front end ([`crate::jit::analyze`]) locally, then the kernel's
//! `tool.validate` (which also runs the declared tests) on a throwaway database. `test` is
//! `tool.validate`'s test report. `run` proposes, validates, registers and calls the tool in
//! a fresh process on the real database with exactly the grants given on the command line,
//! so that `ps`, `audit show` and `human list` see the run afterwards.

use std::io::{IsTerminal, Read as _};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use anyhow::{Context, Result};
use parking_lot::Mutex;
use serde_json::{json, Value};

use super::args::{ToolCommand, ToolFileArgs, ToolRunArgs};
use super::source_view::{in_user_file, print_finding, Stream};
use super::terminal;
use super::{exit, grants, human, note, Ctx, Failure};
use crate::jit::{self, Finding};
use crate::kernel::{
    Budget, CapabilitySpec, HumanMode, Image, JitCall, Kernel, KernelConfig, Pid, Policy,
    ProcessCtx, RequestKind, Right, SpawnOptions, Status, SysResult, Syscall, SyscallError,
    ToolLimits,
};

pub async fn run(ctx: &Ctx, cmd: ToolCommand) -> Result<i32> {
    match cmd {
        ToolCommand::Check(args) => each_file(ctx, args, Which::Check).await,
        ToolCommand::Test(args) => each_file(ctx, args, Which::Test).await,
        ToolCommand::Run(args) if args.watch => {
            let files = vec![args.file.clone()];
            watch_loop(&files, || async {
                let args = ToolRunArgs {
                    watch: false,
                    ..args.clone()
                };
                run_tool(ctx, args).await
            })
            .await
        }
        ToolCommand::Run(args) => run_tool(ctx, args).await,
        ToolCommand::Init(args) => super::tool_init::run(ctx, args).await,
    }
}

#[derive(Clone, Copy)]
enum Which {
    Check,
    Test,
}

/// `tool check|test` over every file named (a directory: its `*.ts` files, `.d.ts` aside),
/// once or, with `--watch`, again after every change.
async fn each_file(ctx: &Ctx, args: ToolFileArgs, which: Which) -> Result<i32> {
    let files = expand_files(&args.files)?;
    if !args.watch {
        return all_files(ctx, &files, which).await;
    }
    watch_loop(&files, || all_files(ctx, &files, which)).await
}

/// Runs `which` on each file; a single file reports as before, several report each file's
/// failure and exit with the first failing code.
async fn all_files(ctx: &Ctx, files: &[PathBuf], which: Which) -> Result<i32> {
    if let [file] = files {
        return match which {
            Which::Check => check(ctx, file).await,
            Which::Test => test(ctx, file).await,
        };
    }
    let mut code = exit::OK;
    for file in files {
        let result = match which {
            Which::Check => check(ctx, file).await,
            Which::Test => test(ctx, file).await,
        };
        let this = match result {
            Ok(c) => c,
            Err(e) => super::report(&e, ctx.json),
        };
        if code == exit::OK {
            code = this;
        }
    }
    Ok(code)
}

/// The files `paths` name: each file itself, each directory's `*.ts` files (sorted; `.d.ts`
/// declarations aside; not recursive).
pub fn expand_files(paths: &[PathBuf]) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for path in paths {
        if !path.is_dir() {
            out.push(path.clone());
            continue;
        }
        let entries = std::fs::read_dir(path)
            .with_context(|| format!("reading the directory {}", path.display()))?;
        let mut found: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                let name = p
                    .file_name()
                    .map(|n| n.to_string_lossy())
                    .unwrap_or_default();
                p.is_file() && name.ends_with(".ts") && !name.ends_with(".d.ts")
            })
            .collect();
        if found.is_empty() {
            return Err(Failure::new(
                "InvalidArgument",
                exit::INVALID,
                format!("{} holds no .ts tool files", path.display()),
            )
            .hint("name the tool files, or a directory that holds them")
            .into());
        }
        found.sort();
        out.extend(found);
    }
    Ok(out)
}

/// The newest modification time among `files` (a missing file counts as none).
fn newest_mtime(files: &[PathBuf]) -> Vec<Option<SystemTime>> {
    files
        .iter()
        .map(|f| std::fs::metadata(f).and_then(|m| m.modified()).ok())
        .collect()
}

/// Runs `once`, then again after each change of `files` (polled every 200 ms), until the
/// user stops it.
async fn watch_loop<F, Fut>(files: &[PathBuf], mut once: F) -> Result<i32>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<i32>>,
{
    loop {
        let seen = newest_mtime(files);
        if let Err(e) = once().await {
            super::report(&e, false);
        }
        note(format!(
            "watching {} file{} for changes (Ctrl-C stops)",
            files.len(),
            if files.len() == 1 { "" } else { "s" }
        ));
        loop {
            tokio::time::sleep(Duration::from_millis(200)).await;
            if newest_mtime(files) != seen {
                break;
            }
        }
        note("a file changed; running again");
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
    analyze_meta(file, source).map(|meta| meta.name)
}

/// Static analysis on the host; findings as JSON, or the tool's metadata.
fn analyze_meta(file: &Path, source: &str) -> Result<jit::ToolMeta, Value> {
    let specifier = format!("file:///{}", file.display());
    match jit::analyze(&specifier, source, &jit::AnalyzeOptions::default()) {
        Ok(tool) => Ok(tool.meta),
        Err(findings) => Err(findings_json(&findings)),
    }
}

/// `--args`: a JSON object given inline, as `@FILE`, or `-` (stdin).
fn call_args(text: &str) -> Result<Value> {
    let (source, json_text) = if text == "-" {
        let mut buf = String::new();
        std::io::stdin().read_to_string(&mut buf).map_err(|e| {
            Failure::new(
                "InvalidArgument",
                exit::INVALID,
                format!("--args -: cannot read stdin: {e}"),
            )
        })?;
        ("stdin".to_string(), buf)
    } else if let Some(path) = text.strip_prefix('@') {
        let buf = std::fs::read_to_string(path).map_err(|e| {
            Failure::new(
                "InvalidArgument",
                exit::INVALID,
                format!("--args @{path}: cannot read it: {e}"),
            )
            .hint("pass the path of a JSON file after @, e.g. --args @args.json")
        })?;
        (path.to_string(), buf)
    } else {
        ("--args".to_string(), text.to_string())
    };
    let value: Value = serde_json::from_str(&json_text).map_err(|e| {
        Failure::new(
            "InvalidArgument",
            exit::INVALID,
            format!("{source} is not JSON: {e}"),
        )
        .hint("pass a JSON object, e.g. --args '{\"path\":\"README.md\"}', --args @args.json or --args - (stdin)")
    })?;
    if !value.is_object() {
        return Err(Failure::new(
            "InvalidArgument",
            exit::INVALID,
            format!("{source} is not a JSON object"),
        )
        .hint("a tool's arguments are one JSON object, e.g. {\"path\":\"README.md\"}")
        .into());
    }
    Ok(value)
}

/// The operator's per-call maximum for this run: the defaults, raised or lowered by
/// `--cpu-ms`, `--heap-mb`, `--max-syscalls`; `None` when no flag was given.
fn operator_limits(args: &ToolRunArgs) -> Option<ToolLimits> {
    if args.cpu_ms.is_none() && args.heap_mb.is_none() && args.max_syscalls.is_none() {
        return None;
    }
    let mut limits = ToolLimits::default();
    limits.cpu_ms = args.cpu_ms.unwrap_or(limits.cpu_ms);
    limits.heap_mb = args.heap_mb.unwrap_or(limits.heap_mb);
    limits.syscalls = args.max_syscalls.unwrap_or(limits.syscalls);
    Some(limits)
}

/// Warnings for each of a tool's own `limits` above the operator's maximum (the kernel
/// clamps them to it).
fn clamp_warnings(own: &jit::ToolLimits, max: &ToolLimits) -> Vec<String> {
    let pairs = [
        ("cpu_ms", own.cpu_ms, max.cpu_ms, "--cpu-ms"),
        ("heap_mb", own.heap_mb, max.heap_mb, "--heap-mb"),
        ("syscalls", own.syscalls, max.syscalls, "--max-syscalls"),
        ("result_bytes", own.result_bytes, max.result_bytes, ""),
        ("console_bytes", own.console_bytes, max.console_bytes, ""),
    ];
    pairs
        .iter()
        .filter_map(|(name, own, max, flag)| {
            let own = (*own)?;
            (own > *max).then(|| {
                let raise = if flag.is_empty() {
                    String::new()
                } else {
                    format!(" (raise it with {flag} {own})")
                };
                format!(
                    "warning: the tool asks for limits.{name} = {own}, above the operator's maximum {max}; it runs with {max}{raise}"
                )
            })
        })
        .collect()
}

/// The image a `tool run` process starts from when the operator set limits: the base image
/// with exactly those limits, under an id naming them. An image of that id registered
/// earlier is used only if it is exactly this one (a process may register images too).
async fn limits_image(kernel: &Kernel, limits: &ToolLimits) -> Result<String> {
    let id = format!(
        "tool-run-cpu{}-heap{}-sys{}",
        limits.cpu_ms, limits.heap_mb, limits.syscalls
    );
    let image = Image {
        id: id.clone(),
        limits: *limits,
        ..Image::base()
    };
    match kernel.register_image(&image).await {
        Ok(()) | Err(SyscallError::AlreadyExists(_)) => {}
        Err(e) => return Err(Failure::from_syscall(&e).into()),
    }
    match kernel.image(&id).await {
        Ok(found) if found == image => Ok(id),
        _ => Err(Failure::new(
            "IllegalState",
            exit::INVALID,
            format!("image {id} is registered with other contents than the limits it names"),
        )
        .hint("use another --db, or run without --cpu-ms/--heap-mb/--max-syscalls")
        .into()),
    }
}

/// The console lines of `pid` as `[{"level","text"}]`.
async fn console_lines(kernel: &Kernel, pid: Pid) -> Vec<Value> {
    match kernel.process_log(pid).await {
        Ok(rows) => rows
            .into_iter()
            .map(|(_, level, text)| json!({"level": level, "text": text}))
            .collect(),
        Err(e) => {
            note(format!(
                "cannot read the console output of process {pid}: {e}"
            ));
            Vec::new()
        }
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

async fn check(ctx: &Ctx, file: &Path) -> Result<i32> {
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

async fn test(ctx: &Ctx, file: &Path) -> Result<i32> {
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
    let meta = match analyze_meta(&file, &source) {
        Ok(meta) => meta,
        Err(findings) => {
            if !ctx.json {
                for f in findings.as_array().into_iter().flatten() {
                    print_finding(Stream::Stderr, &file, &source, f);
                }
            }
            return Err(rejected(&file, &findings, &Value::Null).into());
        }
    };
    let name = meta.name.clone();
    let call_args = call_args(&args.args)?;
    let limits = operator_limits(&args);
    for warning in clamp_warnings(&meta.limits, &limits.unwrap_or_default()) {
        note(warning);
    }
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
    let kernel = ctx.open_for_one_call(mode).await?;
    let start_seq = kernel.store().audit_head_seq().await.unwrap_or(0);
    let image = match &limits {
        Some(l) => Some(limits_image(&kernel, l).await?),
        None => None,
    };
    // A per-call syscall maximum above the process's default budget raises the budget too.
    let budget = args
        .max_syscalls
        .filter(|n| *n > Budget::default().syscalls)
        .map(|n| Budget {
            syscalls: n.saturating_add(16),
            ..Budget::default()
        });
    let pid = kernel
        .spawn_root(SpawnOptions {
            image,
            goal: format!("{TOOL_RUN_GOAL}{}", file.display()),
            grants: specs.clone(),
            requestable,
            budget,
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
            let kernel = pcx.kernel.clone();
            let result = call_in_process(pcx, source, call_args, body_slot).await;
            let waiting = matches!(result, Err(SyscallError::HumanRequired { .. }));
            if waiting {
                // The call waits for a human: the process stays alive (its invocation is
                // journaled as waiting) in WAITING_HUMAN for `agent-libos resume` to finish.
                if let Err(e) = kernel.enter_wait(pid, Status::WaitingHuman).await {
                    tracing::warn!(pid, %e, "marking the process as waiting for a human");
                }
            }
            let _ = tx.send(result.clone());
            if waiting {
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
    let console = console_lines(&kernel, pid).await;
    if !ctx.json {
        for line in &console {
            terminal::err(format!(
                "console.{}: {}",
                line["level"].as_str().unwrap_or("log"),
                line["text"].as_str().unwrap_or("")
            ));
        }
    }
    match outcome {
        Ok(result) => {
            if ctx.json {
                terminal::out(
                    json!({"ok": true, "result": result, "pid": pid, "console": console})
                        .to_string(),
                );
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
            let mut failure = Failure::from_syscall(&err).extra(json!({"console": console}));
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
                let kind = kernel
                    .human_request(request_id)
                    .await
                    .ok()
                    .flatten()
                    .map(|r| r.kind);
                failure = failure.hint(if kind == Some(RequestKind::Question) {
                    format!(
                        "the tool asked a question and process {pid} waits for the answer: answer it with `agent-libos human answer {request_id} 'TEXT'` (see it with `agent-libos human show {request_id}`), then run `agent-libos resume` to finish the call; or run again with --ask on a terminal"
                    )
                } else {
                    format!(
                        "the call is waiting for a human and process {pid} stays alive: approve it with `agent-libos human approve {request_id}` (or reject it), then run `agent-libos resume` to finish the call exactly once (the journal re-runs the invocation and reuses the approved request); or run again with --ask on a terminal, or grant the capability up front"
                    )
                });
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
