//! `agent-libos replay`: runs fixture files against fresh runtimes and compares outcomes.
//!
//! Every case gets its own temporary directory: a new database (a copy of a template the run
//! migrated once, with its own key and audit log) and a copy of the fixture's workspace,
//! and its own kernel. The kernels of a run share one isolate host, each in a pid space of
//! its own (`WorkerHost::share`): no case reaches another's isolates, and the host's
//! workers start once per run, not once per case. Cases run concurrently (`-j`, default
//! the machine's cores); their lines are printed in fixture order. The case's process is spawned with exactly its grants (plus `tool:<name>` create
//! so that it can register the fixture's tool), loads the tool through the real lifecycle
//! (`tool.propose` → `tool.validate` → `tool.register`) and makes the calls in order. Human
//! requests are answered by a task through [`Kernel::human_respond`], as a human would.

use std::collections::{BTreeMap, HashSet};
use std::io::{IsTerminal, Write};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use futures::StreamExt;
use parking_lot::Mutex;
use serde_json::{json, Value};

use super::args::ReplayArgs;
use super::fixture::{self, Case, Expect, ExpectError, HumanModeName, Loaded};
use super::terminal;
use super::tool::{self, LoadError};
use super::{exit, human, Ctx};
use crate::isolate::{HostConfig, WorkerHost};
use crate::kernel::{
    CapabilitySpec, HumanMode, JitCall, Kernel, KernelConfig, Policy, ProcessCtx, Right,
    SpawnOptions, Syscall, SyscallError, WireError,
};
use crate::providers::{FetchLimits, ShellLimits};
use crate::store::Store;

/// How long one case may take.
const CASE_TIMEOUT: Duration = Duration::from_secs(60);
/// How often the scripted human looks for a process waiting for it.
const HUMAN_POLL: Duration = Duration::from_millis(2);

/// One fixture file ready to run.
struct File {
    loaded: Loaded,
    tool_source: Option<String>,
    tool_name: Option<String>,
    server: Option<super::serve::Server>,
    load_error: Option<String>,
}

#[derive(Debug, Clone)]
enum Status {
    Passed,
    Failed(String),
    Skipped(String),
}

struct CaseResult {
    file: usize,
    case: usize,
    name: String,
    status: Status,
    elapsed: Duration,
    actual: Option<Actual>,
}

/// What a case actually did.
#[derive(Debug, Default, Clone)]
struct Actual {
    validation: Option<Value>,
    outcomes: Vec<Result<Value, WireError>>,
    problems: Vec<String>,
    /// Path → (sha256, utf-8 content) or `None` if absent.
    files: BTreeMap<String, Option<(String, Option<String>)>>,
    objects: u64,
    audit: Vec<crate::audit::AuditRow>,
    audit_broken: Option<String>,
    pending_human: u64,
}

/// What the cases of one run share: nothing any case can see.
struct Shared {
    /// Holds the template database; removed with the run.
    _dir: tempfile::TempDir,
    /// A migrated, empty database that each case starts from a copy of.
    template: std::path::PathBuf,
    /// The isolate host; each case's kernel takes its own pid space on it.
    host: WorkerHost,
}

impl Shared {
    async fn new() -> Result<Shared> {
        let dir = tempfile::Builder::new()
            .prefix("agent-libos-replay-")
            .tempdir()
            .context("creating a temporary directory")?;
        let template = dir.path().join("template.db");
        Store::write_template(&template)
            .await
            .context("preparing the cases' database")?;
        let binary = crate::providers::runtime_binary::locate(None);
        Ok(Shared {
            _dir: dir,
            template,
            host: WorkerHost::start(HostConfig::default(), binary),
        })
    }
}

/// Cases run at once by default: the machine's cores.
fn default_jobs() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

pub async fn run(ctx: &Ctx, args: ReplayArgs) -> Result<i32> {
    let paths = fixture::discover(&args.paths)
        .map_err(|e| super::Failure::new("InvalidArgument", exit::INVALID, format!("{e:#}")))?;
    if paths.is_empty() {
        return Err(super::Failure::new(
            "InvalidArgument",
            exit::INVALID,
            "no fixture files found",
        )
        .hint("fixture files are *.json; see fixtures/README.md")
        .into());
    }
    let mut files = Vec::new();
    for path in &paths {
        files.push(load_file(path).await?);
    }
    let files = Arc::new(files);
    let shared = Arc::new(Shared::new().await?);
    let jobs: Vec<(usize, usize)> = files
        .iter()
        .enumerate()
        .flat_map(|(fi, f)| (0..f.loaded.fixture.cases.len()).map(move |ci| (fi, ci)))
        .collect();
    let total = jobs.len();
    let progress = std::io::stderr().is_terminal() && !ctx.json;
    let quiet = ctx.json;
    // Each case is a task of its own (so cases use every core); `buffered` keeps the order.
    let mut stream = futures::stream::iter(jobs)
        .map(|(fi, ci)| {
            let name = files[fi].loaded.fixture.cases[ci].name.clone();
            let (files, shared) = (files.clone(), shared.clone());
            let case = tokio::spawn(async move { run_case(&files, &shared, fi, ci).await });
            async move {
                case.await.unwrap_or_else(|e| CaseResult {
                    file: fi,
                    case: ci,
                    name,
                    status: Status::Failed(format!("the case's task ended: {e}")),
                    elapsed: Duration::ZERO,
                    actual: None,
                })
            }
        })
        .buffered(args.jobs.unwrap_or_else(default_jobs).max(1));
    let mut results = Vec::new();
    let (mut passed, mut failed, mut skipped) = (0, 0, 0);
    while let Some(result) = stream.next().await {
        if progress {
            terminal::progress("\r\x1b[K");
        }
        let file_name = files[result.file]
            .loaded
            .path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let label = format!("{file_name}: {}", result.name);
        let line = match &result.status {
            Status::Passed => {
                passed += 1;
                format!("ok   {label}")
            }
            Status::Failed(why) => {
                failed += 1;
                format!("FAIL {label}: {why}")
            }
            Status::Skipped(why) => {
                skipped += 1;
                format!("skip {label}: {why}")
            }
        };
        if !quiet {
            terminal::out(line);
        }
        results.push(result);
        if progress {
            terminal::progress(&format!("[{}/{total}] running…", results.len()));
            let _ = std::io::stderr().flush();
        }
    }
    drop(stream);
    if progress {
        terminal::progress("\r\x1b[K");
    }
    if let Some(junit) = &args.junit {
        write_junit(junit, &files, &results)
            .with_context(|| format!("writing {}", junit.display()))?;
    }
    // With --record, a failure is real only if recording cannot fix it: the case did not
    // run, or it still fails against what was recorded.
    let (recorded, unfixed) = if args.record {
        record(&files, &results, quiet)?
    } else {
        (Vec::new(), Vec::new())
    };
    let real_failures = if args.record { unfixed.len() } else { failed };
    if ctx.json {
        let cases: Vec<Value> = results
            .iter()
            .map(|r| {
                let (status, reason) = match &r.status {
                    Status::Passed => ("passed", None),
                    Status::Failed(why) => ("failed", Some(why.clone())),
                    Status::Skipped(why) => ("skipped", Some(why.clone())),
                };
                json!({
                    "file": files[r.file].loaded.path,
                    "case": r.name,
                    "status": status,
                    "reason": reason,
                    "elapsed_ms": r.elapsed.as_millis() as u64,
                })
            })
            .collect();
        terminal::out(
            json!({"ok": real_failures == 0, "result": {
                "passed": passed, "failed": failed, "skipped": skipped, "cases": cases,
                "recorded": recorded, "still_failing": unfixed,
            }})
            .to_string(),
        );
    } else {
        let mut closing = format!("{passed} passed, {failed} failed");
        if skipped > 0 {
            closing.push_str(&format!(", {skipped} skipped"));
        }
        if args.record {
            closing.push_str(&format!(
                "; recorded {} case{}, {} still failing",
                recorded.len(),
                if recorded.len() == 1 { "" } else { "s" },
                unfixed.len()
            ));
        }
        terminal::out(closing);
    }
    Ok(if real_failures > 0 {
        exit::FAILED
    } else {
        exit::OK
    })
}

async fn load_file(path: &Path) -> Result<File> {
    let raw =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let first = fixture::parse(path, &raw, None).map_err(|e| {
        super::Failure::new("InvalidArgument", exit::INVALID, format!("{e:#}"))
            .hint("see fixtures/README.md and fixtures/fixture.schema.json for the format")
    })?;
    let (fixture, server) = match &first.serve {
        Some(serve) => {
            let server = super::serve::start(serve.clone())
                .await
                .context("starting the fixture's loopback server")?;
            (
                fixture::parse(path, &raw, Some(&server.addr))?,
                Some(server),
            )
        }
        None => (first, None),
    };
    let loaded = Loaded {
        path: path.to_path_buf(),
        fixture,
        raw,
    };
    let mut load_error = None;
    let tool_source = match loaded.tool_source() {
        Ok(s) => s,
        Err(e) => {
            load_error = Some(format!("{e:#}"));
            None
        }
    };
    let tool_name = tool_source.as_deref().and_then(|src| {
        crate::jit::analyze("file:///fixture.ts", src, &Default::default())
            .ok()
            .map(|t| t.meta.name)
    });
    Ok(File {
        loaded,
        tool_source,
        tool_name,
        server,
        load_error,
    })
}

async fn run_case(files: &[File], shared: &Shared, fi: usize, ci: usize) -> CaseResult {
    let file = &files[fi];
    let case = &file.loaded.fixture.cases[ci];
    let start = Instant::now();
    let mut result = CaseResult {
        file: fi,
        case: ci,
        name: case.name.clone(),
        status: Status::Passed,
        elapsed: Duration::ZERO,
        actual: None,
    };
    if let Some(why) = &case.skip {
        result.status = Status::Skipped(why.clone());
        return result;
    }
    if let Some(e) = &file.load_error {
        result.status = Status::Failed(e.clone());
        return result;
    }
    match tokio::time::timeout(CASE_TIMEOUT, execute(file, case, shared)).await {
        Err(_) => result.status = Status::Failed(format!("timed out after {CASE_TIMEOUT:?}")),
        Ok(Err(e)) => result.status = Status::Failed(format!("{e:#}")),
        Ok(Ok(actual)) => {
            let problems = compare(case, &actual);
            if !problems.is_empty() {
                result.status = Status::Failed(problems.join("; "));
            }
            result.actual = Some(actual);
        }
    }
    result.elapsed = start.elapsed();
    result
}

fn copy_dir(from: &Path, to: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_dir(&entry.path(), &target)?;
        } else {
            std::fs::copy(entry.path(), target)?;
        }
    }
    Ok(())
}

#[derive(Default)]
struct BodyOut {
    validation: Option<Value>,
    outcomes: Vec<Result<Value, WireError>>,
    load_error: Option<String>,
}

async fn execute(file: &File, case: &Case, shared: &Shared) -> Result<Actual> {
    let dir = tempfile::Builder::new()
        .prefix("agent-libos-")
        .tempdir()
        .context("creating a temporary directory")?;
    let ws = dir.path().join("ws");
    match file.loaded.workspace_dir() {
        Some(src) => copy_dir(&src, &ws)
            .with_context(|| format!("copying the workspace {}", src.display()))?,
        None => std::fs::create_dir_all(&ws)?,
    }
    let db = dir.path().join("state.db");
    std::fs::copy(&shared.template, &db).context("copying the template database")?;
    let mut config = KernelConfig::new(db, &ws);
    config.isolate_host = Some(shared.host.clone());
    config.human_mode = match case.human_mode {
        Some(HumanModeName::FailFast) => HumanMode::FailFast,
        _ => HumanMode::Wait,
    };
    config.shell_limits = ShellLimits {
        timeout_ms: 10_000,
        max_output_bytes: 1 << 20,
    };
    config.fetch_limits = FetchLimits {
        timeout_ms: 5_000,
        max_response_bytes: 1 << 20,
    };
    let kernel = Kernel::open(config).await.context("opening the runtime")?;
    let mut grants: Vec<CapabilitySpec> = Vec::new();
    for g in file.loaded.fixture.grants.iter().chain(&case.grants) {
        grants.push(g.spec()?);
    }
    if let Some(name) = &file.tool_name {
        grants.push(CapabilitySpec::new(
            format!("tool:{name}"),
            &[Right::Create],
            Policy::AlwaysAllow,
        ));
    }
    let mut requestable = Vec::new();
    for g in &case.requestable {
        requestable.push(g.spec()?);
    }
    let pid = kernel
        .spawn_root(SpawnOptions {
            goal: format!("replay {}", case.name),
            grants,
            budget: case.budget.map(|b| b.budget()),
            requestable,
            ..SpawnOptions::default()
        })
        .await
        .map_err(|e| anyhow::anyhow!("spawning the case's process: {e}"))?;

    let problems = Arc::new(Mutex::new(Vec::new()));
    let used = Arc::new(Mutex::new(0usize));
    let responder = (case.human_mode != Some(HumanModeName::FailFast)).then(|| {
        tokio::spawn(respond_loop(
            kernel.clone(),
            case.human.clone(),
            problems.clone(),
            used.clone(),
        ))
    });

    let out = Arc::new(Mutex::new(BodyOut::default()));
    let body_out = out.clone();
    let source = file.tool_source.clone();
    let calls = case.calls.clone();
    let expect_rejection = case.validation.as_ref().is_some_and(|v| !v.ok);
    let handle = kernel
        .run(pid, move |pcx: ProcessCtx| async move {
            body(pcx, source, calls, expect_rejection, body_out).await;
            Ok(Value::Null)
        })
        .await
        .map_err(|e| anyhow::anyhow!("running the case's process: {e}"))?;
    let _ = handle.await;
    if let Some(r) = responder {
        r.abort();
    }
    let out = std::mem::take(&mut *out.lock());
    if let Some(e) = out.load_error {
        anyhow::bail!("loading the tool: {e}");
    }
    let mut problems = std::mem::take(&mut *problems.lock());
    let used = *used.lock();
    for (i, s) in case.human.iter().enumerate().skip(used) {
        problems.push(format!(
            "scripted human answer #{} ({}) was never asked for",
            i + 1,
            s.answer
        ));
    }
    let _ = kernel.store().flush().await;
    let mut files = BTreeMap::new();
    if let Some(effects) = &case.effects {
        for path in effects.files.keys() {
            let p = ws.join(path);
            files.insert(
                path.clone(),
                std::fs::read(&p).ok().filter(|_| p.is_file()).map(|bytes| {
                    (
                        crate::util::sha256_hex(&bytes),
                        String::from_utf8(bytes).ok(),
                    )
                }),
            );
        }
    }
    let object_type = case
        .effects
        .as_ref()
        .and_then(|e| e.objects.as_ref())
        .and_then(|o| o.object_type.clone());
    let objects = kernel.store().count_objects(object_type.as_deref()).await?;
    let audit = kernel.store().audit_records_after(0).await?;
    let report = kernel.verify_audit().await?;
    let pending_human = kernel
        .human_requests(false)
        .await
        .map(|r| r.len())
        .unwrap_or(0) as u64;
    Ok(Actual {
        validation: out.validation,
        outcomes: out.outcomes,
        problems,
        files,
        objects: objects as u64,
        audit,
        audit_broken: report
            .broken
            .map(|b| format!("audit chain broken at {}: {}", b.seq, b.reason)),
        pending_human,
    })
}

/// The case's process: load the tool, then make the calls in order.
async fn body(
    pcx: ProcessCtx,
    source: Option<String>,
    calls: Vec<fixture::Call>,
    expect_rejection: bool,
    out: Arc<Mutex<BodyOut>>,
) {
    let mut name = None;
    if let Some(src) = source {
        match tool::load(&pcx, &src).await {
            Ok(loaded) => {
                out.lock().validation = Some(loaded.validation);
                name = Some(loaded.name);
            }
            Err(LoadError::Rejected(v)) => {
                if !expect_rejection {
                    out.lock().load_error = Some(format!(
                        "rejected by validation: findings {} tests {}",
                        v["findings"], v["tests"]
                    ));
                }
                out.lock().validation = Some(v);
                return;
            }
            Err(LoadError::Sys(e)) => {
                out.lock().load_error = Some(e.to_string());
                return;
            }
        }
    }
    for call in calls {
        let result = match (&call.syscall, &name) {
            (Some(wire), _) => match Syscall::from_wire(wire.clone()) {
                Ok(sc) => pcx.syscall(sc).await,
                Err(e) => Err(SyscallError::invalid(format!("fixture syscall: {e}"))),
            },
            (None, Some(n)) => {
                pcx.syscall(Syscall::Tool(JitCall::Call {
                    name: n.clone(),
                    args: call.args.clone().unwrap_or_else(|| json!({})),
                }))
                .await
            }
            (None, None) => Err(SyscallError::invalid(
                "the call has no `syscall` and the fixture has no tool",
            )),
        };
        out.lock().outcomes.push(result.map_err(|e| e.to_wire()));
    }
}

/// Answers human requests from the script, in order, as they appear.
async fn respond_loop(
    kernel: Kernel,
    script: Vec<fixture::Scripted>,
    problems: Arc<Mutex<Vec<String>>>,
    used: Arc<Mutex<usize>>,
) {
    let mut seen = HashSet::new();
    loop {
        // A request is pending only while its process waits for the answer: the store is
        // asked only then (the check of the process table costs no query).
        let waiting = kernel
            .processes()
            .iter()
            .any(|p| p.status == crate::kernel::Status::WaitingHuman);
        let pending = match waiting {
            true => kernel.human_requests(false).await.unwrap_or_default(),
            false => Vec::new(),
        };
        for r in pending {
            if !seen.insert(r.id.clone()) {
                continue;
            }
            let next = *used.lock();
            let answer = match script.get(next) {
                None => {
                    problems.lock().push(format!(
                        "unexpected human request ({}: {})",
                        r.kind,
                        human::summary(&r)
                    ));
                    crate::kernel::HumanAnswer::Reject {
                        reason: "no scripted answer".into(),
                    }
                }
                Some(s) => {
                    *used.lock() += 1;
                    if let Some(kind) = &s.kind {
                        if kind != r.kind.as_str() {
                            problems.lock().push(format!(
                                "human answer #{}: expected a {kind} request, got {} ({})",
                                next + 1,
                                r.kind,
                                human::summary(&r)
                            ));
                        }
                    }
                    if let Some(res) = &s.resource {
                        if r.payload["resource"].as_str() != Some(res) {
                            problems.lock().push(format!(
                                "human answer #{}: expected a request about {res}, got {}",
                                next + 1,
                                human::summary(&r)
                            ));
                        }
                    }
                    match s.to_answer() {
                        Ok(a) => a,
                        Err(e) => {
                            problems.lock().push(format!("{e:#}"));
                            crate::kernel::HumanAnswer::Reject {
                                reason: "bad script".into(),
                            }
                        }
                    }
                }
            };
            if let Err(e) = kernel.human_respond(&r.id, answer, "fixture").await {
                problems.lock().push(format!("answering {}: {e}", r.id));
            }
        }
        tokio::time::sleep(HUMAN_POLL).await;
    }
}

fn short(v: &Value) -> String {
    let s = v.to_string();
    if s.len() > 200 {
        format!(
            "{}…",
            &s[..s.char_indices().nth(200).map_or(s.len(), |(i, _)| i)]
        )
    } else {
        s
    }
}

fn compare(case: &Case, actual: &Actual) -> Vec<String> {
    let mut problems = actual.problems.clone();
    if let Some(v) = &case.validation {
        match &actual.validation {
            None => problems.push("expected a validation result".into()),
            Some(got) => {
                if got["ok"] != json!(v.ok) {
                    problems.push(format!(
                        "validation ok was {}, expected {} (findings {})",
                        got["ok"],
                        v.ok,
                        short(&got["findings"])
                    ));
                }
                for rule in &v.rules {
                    let found = got["findings"]
                        .as_array()
                        .is_some_and(|fs| fs.iter().any(|f| f["rule"] == json!(rule)));
                    if !found {
                        problems.push(format!(
                            "expected a `{rule}` finding, got {}",
                            short(&got["findings"])
                        ));
                    }
                }
                for t in &v.failed_tests {
                    let failed = got["tests"].as_array().is_some_and(|ts| {
                        ts.iter()
                            .any(|x| x["name"] == json!(t) && x["passed"] == json!(false))
                    });
                    if !failed {
                        problems.push(format!(
                            "expected declared test \"{t}\" to fail, got {}",
                            short(&got["tests"])
                        ));
                    }
                }
            }
        }
    }
    if case.validation.as_ref().is_none_or(|v| v.ok) {
        if actual.outcomes.len() != case.calls.len() {
            problems.push(format!(
                "made {} of {} calls",
                actual.outcomes.len(),
                case.calls.len()
            ));
        }
        for (i, (call, outcome)) in case.calls.iter().zip(&actual.outcomes).enumerate() {
            let expect = call.expect.clone().unwrap_or_default();
            if let Some(p) = compare_outcome(&expect, outcome) {
                problems.push(format!("call {}: {p}", i + 1));
            }
        }
    }
    if let Some(effects) = &case.effects {
        for (path, exp) in &effects.files {
            let got = actual.files.get(path).cloned().flatten();
            match (exp.exists, &got) {
                (Some(false), Some(_)) => problems.push(format!("{path} exists, expected none")),
                (Some(false), None) => {}
                (_, None) => problems.push(format!("{path} does not exist")),
                (_, Some((sha, content))) => {
                    if let Some(want) = &exp.sha256 {
                        if want != sha {
                            problems.push(format!("{path}: sha256 {sha}, expected {want}"));
                        }
                    }
                    if let Some(want) = &exp.content {
                        if Some(want) != content.as_ref() {
                            problems.push(format!(
                                "{path}: content {:?}, expected {want:?}",
                                content.as_deref().unwrap_or("<binary>")
                            ));
                        }
                    }
                }
            }
        }
        if let Some(o) = &effects.objects {
            if o.count != actual.objects {
                problems.push(format!(
                    "{} objects{}, expected {}",
                    actual.objects,
                    o.object_type
                        .as_ref()
                        .map(|t| format!(" of type {t}"))
                        .unwrap_or_default(),
                    o.count
                ));
            }
        }
        for a in &effects.audit {
            let found = actual.audit.iter().any(|r| {
                r.action == a.action
                    && a.decision.as_ref().is_none_or(|d| &r.decision == d)
                    && a.target.as_ref().is_none_or(|t| &r.target == t)
            });
            if !found {
                problems.push(format!(
                    "no audit record {} {} {}",
                    a.action,
                    a.decision.as_deref().unwrap_or("*"),
                    a.target.as_deref().unwrap_or("*")
                ));
            }
        }
        if let Some(n) = effects.pending_human {
            if n != actual.pending_human {
                problems.push(format!(
                    "{} pending human requests, expected {n}",
                    actual.pending_human
                ));
            }
        }
    }
    if let Some(b) = &actual.audit_broken {
        problems.push(b.clone());
    }
    problems
}

fn compare_outcome(expect: &Expect, outcome: &Result<Value, WireError>) -> Option<String> {
    match (&expect.error, outcome) {
        (Some(e), Err(w)) => {
            let mut bad = Vec::new();
            if e.kind != w.kind {
                bad.push(format!("kind {}", w.kind));
            }
            if e.resource.is_some() && e.resource != w.resource {
                bad.push(format!(
                    "resource {:?}",
                    w.resource.as_deref().unwrap_or("")
                ));
            }
            if e.right.is_some() && e.right != w.right {
                bad.push(format!("right {:?}", w.right.as_deref().unwrap_or("")));
            }
            if e.limit.is_some() && e.limit != w.limit {
                bad.push(format!("limit {:?}", w.limit.as_deref().unwrap_or("")));
            }
            if let Some(m) = &e.message_contains {
                if !w.message.contains(m) {
                    bad.push(format!("message {:?}", w.message));
                }
            }
            (!bad.is_empty()).then(|| {
                format!(
                    "expected {} error, got {} ({})",
                    e.kind,
                    bad.join(", "),
                    w.message
                )
            })
        }
        (Some(e), Ok(v)) => Some(format!(
            "expected {} error, got result {}",
            e.kind,
            short(v)
        )),
        (None, Err(w)) => Some(format!("unexpected error {}: {}", w.kind, w.message)),
        (None, Ok(v)) => {
            if let Some(want) = &expect.result {
                if want != v {
                    return Some(format!("result {}, expected {}", short(v), short(want)));
                }
            }
            if let Some(sub) = &expect.result_subset {
                if !fixture::is_subset(sub, v) {
                    return Some(format!(
                        "result {} does not contain {}",
                        short(v),
                        short(sub)
                    ));
                }
            }
            None
        }
    }
}

fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn write_junit(path: &Path, files: &[File], results: &[CaseResult]) -> Result<()> {
    let mut xml = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<testsuites>\n");
    for (fi, f) in files.iter().enumerate() {
        let mine: Vec<&CaseResult> = results.iter().filter(|r| r.file == fi).collect();
        let failures = mine
            .iter()
            .filter(|r| matches!(r.status, Status::Failed(_)))
            .count();
        let skipped = mine
            .iter()
            .filter(|r| matches!(r.status, Status::Skipped(_)))
            .count();
        let time: f64 = mine.iter().map(|r| r.elapsed.as_secs_f64()).sum();
        let suite = f.loaded.path.display().to_string();
        xml.push_str(&format!(
            "  <testsuite name=\"{}\" tests=\"{}\" failures=\"{failures}\" skipped=\"{skipped}\" time=\"{time:.3}\">\n",
            xml_escape(&suite),
            mine.len()
        ));
        for r in mine {
            xml.push_str(&format!(
                "    <testcase classname=\"{}\" name=\"{}\" time=\"{:.3}\"",
                xml_escape(&suite),
                xml_escape(&r.name),
                r.elapsed.as_secs_f64()
            ));
            match &r.status {
                Status::Passed => xml.push_str("/>\n"),
                Status::Failed(why) => xml.push_str(&format!(
                    ">\n      <failure message=\"{}\"/>\n    </testcase>\n",
                    xml_escape(why)
                )),
                Status::Skipped(why) => xml.push_str(&format!(
                    ">\n      <skipped message=\"{}\"/>\n    </testcase>\n",
                    xml_escape(why)
                )),
            }
        }
        xml.push_str("  </testsuite>\n");
    }
    xml.push_str("</testsuites>\n");
    std::fs::write(path, xml)?;
    Ok(())
}

/// The expectation that matches `outcome`, keeping a still-true `result_subset`.
fn recorded_expect(old: Option<&Expect>, outcome: &Result<Value, WireError>) -> Expect {
    match outcome {
        Ok(v) => match old.and_then(|e| e.result_subset.as_ref()) {
            Some(sub) if fixture::is_subset(sub, v) => Expect {
                result_subset: Some(sub.clone()),
                ..Expect::default()
            },
            _ => Expect {
                result: Some(v.clone()),
                ..Expect::default()
            },
        },
        Err(w) => Expect {
            error: Some(ExpectError {
                kind: w.kind.clone(),
                resource: w.resource.clone(),
                right: w.right.clone(),
                limit: w.limit.clone(),
                // A recorded message is kept: still true, as it was; else the new message.
                message_contains: old
                    .and_then(|e| e.error.as_ref())
                    .and_then(|e| e.message_contains.clone())
                    .map(|m| {
                        if w.message.contains(m.as_str()) {
                            m
                        } else {
                            w.message.clone()
                        }
                    }),
            }),
            ..Expect::default()
        },
    }
}

/// Writes actual outcomes back into the fixture files (`--record`). Returns what it rewrote
/// (`{file, case, changes}` for each case whose expectations changed) and the cases that
/// still fail (`{file, case, reason}`: they did not run, or what recording cannot fix).
fn record(files: &[File], results: &[CaseResult], quiet: bool) -> Result<(Vec<Value>, Vec<Value>)> {
    let (mut rewrote, mut unfixed) = (Vec::new(), Vec::new());
    for (fi, f) in files.iter().enumerate() {
        let mut fixture = f.loaded.fixture.clone();
        let mut changed = false;
        for r in results.iter().filter(|r| r.file == fi) {
            let Some(actual) = &r.actual else {
                if let Status::Failed(why) = &r.status {
                    unfixed.push(json!({"file": f.loaded.path, "case": r.name, "reason": why}));
                }
                continue;
            };
            let before = serde_json::to_value(&fixture.cases[r.case]).unwrap_or(Value::Null);
            let case = &mut fixture.cases[r.case];
            for (call, outcome) in case.calls.iter_mut().zip(&actual.outcomes) {
                call.expect = Some(recorded_expect(call.expect.as_ref(), outcome));
                changed = true;
            }
            if let Some(effects) = &mut case.effects {
                for (path, exp) in effects.files.iter_mut() {
                    match actual.files.get(path).cloned().flatten() {
                        Some((sha, content)) => {
                            exp.exists = None;
                            exp.sha256 = Some(sha);
                            if exp.content.is_some() {
                                exp.content = content;
                            }
                        }
                        None => {
                            exp.exists = Some(false);
                            exp.sha256 = None;
                            exp.content = None;
                        }
                    }
                }
                if let Some(o) = &mut effects.objects {
                    o.count = actual.objects;
                }
                if effects.pending_human.is_some() {
                    effects.pending_human = Some(actual.pending_human);
                }
                changed = true;
            }
            let case = &fixture.cases[r.case];
            if serde_json::to_value(case).unwrap_or(Value::Null) != before {
                rewrote.push(json!({"file": f.loaded.path, "case": r.name}));
                if !quiet {
                    super::note(format!(
                        "recorded {}: case '{}' now expects what it did",
                        f.loaded.path.display(),
                        r.name
                    ));
                }
            }
            let problems = compare(case, actual);
            if !problems.is_empty() {
                unfixed.push(
                    json!({"file": f.loaded.path, "case": r.name, "reason": problems.join("; ")}),
                );
                if !quiet {
                    super::note(format!(
                        "{}: case '{}' still fails after recording: {}",
                        f.loaded.path.display(),
                        r.name,
                        problems.join("; ")
                    ));
                }
            }
        }
        if !changed {
            continue;
        }
        let mut text = serde_json::to_string_pretty(&fixture)?;
        if let Some(server) = &f.server {
            text = text.replace(&server.addr, "{{server}}");
        }
        text.push('\n');
        std::fs::write(&f.loaded.path, text)
            .with_context(|| format!("writing {}", f.loaded.path.display()))?;
    }
    Ok((rewrote, unfixed))
}
