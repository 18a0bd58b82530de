//! JIT tool lifecycle as primitives: propose, validate, register, list, call.
//!
//! A candidate is an object (`tool.candidate`) holding the TypeScript source. Validation
//! parses and checks it on the syntax tree (`crate::jit`), then runs its declared tests in a
//! throwaway isolate whose syscalls are answered by the test's script, never by the host.
//! Registration puts a validated tool in the calling process's table only (no shadowing;
//! needs `tool:<name>` create). A call checks the arguments and the result against the
//! tool's schemas and runs it in the process's own isolate, where each syscall it makes is
//! checked here like any other: the tool table grants nothing.

use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;

use futures::{FutureExt, StreamExt, TryStreamExt};
use parking_lot::Mutex;
use serde_json::value::RawValue;
use serde_json::{json, Value};
use sqlx::Row;

use super::capability::{Pid, Right};
use super::error::{SysResult, SyscallError, WireError};
use super::image::ToolLimits;
use super::journal::Invocation;
use super::process::own_namespace;
use super::scope::{Done, Scope};
use super::syscall::{JitCall, MemCall, ObjectSpec, Syscall};
use super::unwind::{catch_panic_sync, panicked};
use super::Kernel;
use crate::isolate::{
    CallContext, CallError, CallLimits, CallRequest, HostStats, SyscallPort, ToolModule, WorkerHost,
};
use crate::jit::{self, AnalyzeOptions, DeclaredTest, ToolMeta};
use crate::store::WriteBatch;

/// Largest tool source accepted by `tool.propose`: the most the front end reads.
const MAX_SOURCE_BYTES: usize = jit::guard::MAX_SOURCE_BYTES;

/// How long the declared tests of one validation may run in total.
const VALIDATION_MS: u64 = 10_000;
/// Processes `resume` moves back to RUNNABLE at once (their status commits are grouped).
const RESUME_TRANSITIONS: usize = 256;

/// What `resume` did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ResumeReport {
    /// Every non-terminal process, with its status after resuming.
    pub processes: Vec<(Pid, super::process::Status)>,
    /// Invocations run again from their journals.
    pub invocations: Vec<ResumedInvocation>,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct ResumedInvocation {
    pub id: String,
    pub pid: Pid,
    pub tool: String,
    pub outcome: Result<Value, WireError>,
}

/// A registered tool, ready to call.
pub(crate) struct LoadedTool {
    pub meta: ToolMeta,
    pub module: Arc<ToolModule>,
}

/// One process's tools by name.
pub(crate) type ToolTable = HashMap<String, Arc<LoadedTool>>;

/// Tools of live processes, loaded on first use; a call takes a shared reference to the
/// table, and only registration copies it.
#[derive(Default)]
pub(crate) struct ToolTables {
    tables: Mutex<HashMap<Pid, Arc<ToolTable>>>,
    /// Names a registration has claimed and not yet committed (or given up).
    registering: Mutex<std::collections::HashSet<(Pid, String)>>,
    /// Processes whose isolate has served a call (and may keep globals from it).
    warm: Mutex<std::collections::HashSet<Pid>>,
    transpiled: jit::TranspileCache,
}

/// A tool name claimed by one registration until its commit; released when dropped.
struct NameClaim {
    kernel: Kernel,
    pid: Pid,
    name: String,
}

impl Drop for NameClaim {
    fn drop(&mut self) {
        self.kernel
            .inner
            .tools
            .registering
            .lock()
            .remove(&(self.pid, std::mem::take(&mut self.name)));
    }
}

/// The isolate host of a kernel configured by `config`: a pid space of its own on the host
/// it was given, or a host of its own (whose workers start later: on first use, or at once
/// with `HostConfig::warm`).
pub(crate) fn start_isolate_host(config: &super::KernelConfig) -> WorkerHost {
    if let Some(shared) = &config.isolate_host {
        return shared.share();
    }
    let binary = crate::providers::runtime_binary::locate(config.runtime_binary.as_deref());
    WorkerHost::start(config.isolates.clone(), binary)
}

impl Kernel {
    /// The isolate host (worker processes of the runtime binary), started on first use, or
    /// this kernel's own pid space on the host it was given.
    pub(crate) fn isolates(&self) -> &WorkerHost {
        self.inner
            .isolates
            .get_or_init(|| start_isolate_host(&self.inner.config))
    }

    /// Counters of the isolate workers: started, replaced, lost, runtimes created, largest
    /// resident memory seen.
    pub fn isolate_stats(&self) -> HostStats {
        self.inner
            .isolates
            .get()
            .map(WorkerHost::stats)
            .unwrap_or_default()
    }

    pub(crate) async fn tool_call(
        &self,
        pid: Pid,
        call: &JitCall,
        scope: &mut Scope,
    ) -> SysResult<Done> {
        match call {
            JitCall::Propose { source } => self.propose(pid, source, scope).await,
            JitCall::Validate { id } => self.validate(pid, id, scope).await,
            JitCall::Register { id } => self.register(pid, id, call, scope).await,
            JitCall::List => {
                let table = self.tool_table(pid).await?;
                let mut list: Vec<Value> = table
                    .values()
                    .map(|t| {
                        json!({
                            "name": t.meta.name,
                            "description": t.meta.description,
                            "input": t.meta.input,
                            "output": t.meta.output,
                            "hash": t.module.hash,
                        })
                    })
                    .collect();
                list.sort_by(|a, b| a["name"].as_str().cmp(&b["name"].as_str()));
                Ok(Done::new(json!(list), format!("process:{pid}")))
            }
            JitCall::Call { name, args } => {
                if scope.correlation.is_some() {
                    return Err(SyscallError::invalid(
                        "a tool cannot call another tool of its own process; return and let the caller chain them",
                    ));
                }
                let value = self.invoke(pid, name, args.clone(), scope).await?;
                Ok(Done::new(value, format!("tool:{name}")))
            }
        }
    }

    async fn propose(&self, pid: Pid, source: &str, scope: &mut Scope) -> SysResult<Done> {
        if source.len() > MAX_SOURCE_BYTES {
            return Err(SyscallError::limit(
                "source_size",
                format!(
                    "the tool source is {} bytes; the limit is {MAX_SOURCE_BYTES}",
                    source.len()
                ),
            ));
        }
        let hash = crate::util::sha256_hex(source.as_bytes());
        let spec = ObjectSpec {
            namespace: Some(own_namespace(pid)),
            object_type: "tool.candidate".into(),
            payload: json!({"source": source, "hash": hash}),
            mime: Some("text/typescript".into()),
            ..ObjectSpec::default()
        };
        // Created here, not through `mem.create`, which refuses this type: a candidate is
        // what `tool.propose` stored, never an object a process shaped like one.
        let create = MemCall::Create(spec.clone());
        let mut done = self.create_object(pid, &spec, &create, scope).await?;
        let id = done.value["id"].clone();
        done.value = json!({"id": id, "hash": hash});
        done.detail = json!({"id": id, "hash": hash, "bytes": source.len()});
        Ok(done)
    }

    /// Loads a candidate's source (re-checking read access to it).
    async fn candidate_source(
        &self,
        pid: Pid,
        id: &str,
        scope: &mut Scope,
    ) -> SysResult<(String, String)> {
        let object = self
            .mem_call(pid, &MemCall::Read { id: id.to_string() }, scope)
            .await?
            .value;
        if object["type"] != "tool.candidate" {
            return Err(SyscallError::invalid(format!(
                "object {id} is not a tool candidate"
            )));
        }
        let source = object["payload"]["source"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        // Computed, never read from the object: the hash names the code that runs.
        let hash = crate::util::sha256_hex(source.as_bytes());
        Ok((source, hash))
    }

    async fn validate(&self, pid: Pid, id: &str, scope: &mut Scope) -> SysResult<Done> {
        let (source, hash) = self.candidate_source(pid, id, scope).await?;
        let specifier = specifier_for(&hash);
        let analyzed =
            jit::analyze_async(specifier.clone(), source.into(), AnalyzeOptions::default()).await;
        let (report, ok) = match analyzed {
            Err(findings) => (
                json!({"id": id, "name": Value::Null, "ok": false, "findings": findings, "tests": []}),
                false,
            ),
            Ok(analyzed) => {
                let module = Arc::new(ToolModule {
                    specifier: specifier.clone(),
                    code: analyzed.transpiled.code.clone(),
                    source_map: analyzed.transpiled.source_map.clone(),
                    hash: hash.clone(),
                });
                self.inner
                    .tools
                    .transpiled
                    .insert_transpiled(&specifier, analyzed.transpiled);
                let limits = self.limits_for(pid, &analyzed.meta.limits).await;
                let started = std::time::Instant::now();
                let mut tests = Vec::new();
                for test in &analyzed.meta.tests {
                    let left = VALIDATION_MS.saturating_sub(started.elapsed().as_millis() as u64);
                    // Each declared test runs the tool once: it is one of the caller's tool
                    // calls, under the same limits as a call, within the validation's time.
                    let charged = if left == 0 {
                        Err(SyscallError::limit(
                            "validation_time",
                            format!("the declared tests of one validation may run {VALIDATION_MS} ms in total"),
                        ))
                    } else {
                        self.charge_tool_call(pid)
                    };
                    let outcome = match charged {
                        Ok(()) => {
                            let mut limits = limits;
                            limits.cpu_ms = limits.cpu_ms.min(left);
                            limits.wall_ms = limits.wall_ms.min(left);
                            self.run_declared_test(pid, &module, &analyzed.meta, test, limits)
                                .await
                        }
                        Err(e) => {
                            json!({"name": test.name, "passed": false, "error": format!("not run: {e}")})
                        }
                    };
                    tests.push(outcome);
                }
                let ok = tests.iter().all(|t| t["passed"] == true);
                (
                    json!({"id": id, "name": analyzed.meta.name, "ok": ok, "findings": [], "tests": tests}),
                    ok,
                )
            }
        };
        let batch = WriteBatch::default().stmt(
            "INSERT INTO tool_validations (object_id, ok, report, validated_at) VALUES (?, ?, ?, ?) \
             ON CONFLICT (object_id) DO UPDATE SET ok = excluded.ok, report = excluded.report, \
             validated_at = excluded.validated_at",
            vec![id.into(), ok.into(), report.to_string().into(), self.now().into()],
        );
        let detail =
            json!({"ok": ok, "findings": report["findings"].as_array().map_or(0, Vec::len)});
        Ok(Done::new(report, format!("object:{id}"))
            .detail(detail)
            .batch(batch))
    }

    async fn run_declared_test(
        &self,
        pid: Pid,
        module: &Arc<ToolModule>,
        meta: &ToolMeta,
        test: &DeclaredTest,
        limits: CallLimits,
    ) -> Value {
        let port = Arc::new(MockPort::new(test.syscalls.clone()));
        let request = CallRequest {
            module: module.clone(),
            args: test.args.clone(),
            limits,
            port: port.clone(),
            ctx: CallContext {
                pid,
                invocation_id: crate::util::new_id("test"),
            },
            start_time_ms: 0,
            random_seed: 1,
        };
        let outcome = self.isolates().run_ephemeral(request).await;
        let failure = match (outcome, &test.expect, &test.expect_error) {
            (Ok(value), Some(expected), _) if &value == expected => None,
            (Ok(value), Some(expected), _) => Some(format!("expected {expected}, got {value}")),
            (Ok(value), None, None) => jit::validate(&meta.output, &value).err().map(|errs| {
                format!(
                    "result does not match the output schema: {}",
                    errs.join("; ")
                )
            }),
            (Ok(value), None, Some(expected)) => {
                Some(format!("expected error {expected}, got result {value}"))
            }
            (Err(err), _, Some(expected)) => {
                let got = SyscallError::from(err).to_wire();
                let kind_ok = expected["kind"].as_str() == Some(got.kind.as_str());
                let fields_ok = ["resource", "right", "limit"].iter().all(|f| {
                    expected.get(*f).is_none_or(|want| {
                        let have = match *f {
                            "resource" => got.resource.clone(),
                            "right" => got.right.clone(),
                            _ => got.limit.clone(),
                        };
                        want.as_str() == have.as_deref()
                    })
                });
                (!(kind_ok && fields_ok)).then(|| {
                    format!(
                        "expected error {expected}, got {} ({})",
                        got.kind, got.message
                    )
                })
            }
            (Err(err), _, None) => Some(SyscallError::from(err).to_string()),
        };
        let failure = failure.or_else(|| port.unused());
        match failure {
            None => json!({"name": test.name, "passed": true}),
            Some(error) => json!({"name": test.name, "passed": false, "error": error}),
        }
    }

    async fn register(
        &self,
        pid: Pid,
        id: &str,
        call: &JitCall,
        scope: &mut Scope,
    ) -> SysResult<Done> {
        let (source, hash) = self.candidate_source(pid, id, scope).await?;
        let ok: Option<bool> =
            sqlx::query_scalar("SELECT ok FROM tool_validations WHERE object_id = ?")
                .bind(id)
                .fetch_optional(self.inner.store.pool())
                .await?;
        if ok != Some(true) {
            return Err(SyscallError::invalid(format!(
                "tool candidate {id} has not passed validation; call tool.validate first and fix its findings"
            )));
        }
        let loaded = self.load_tool(source, &hash).await?;
        let name = loaded.meta.name.clone();
        self.authorize_one(
            pid,
            super::resource::exact("tool", &name),
            Right::Create,
            call,
            scope,
        )
        .await?;
        self.tool_table(pid).await?;
        let image_tools = {
            let image_id = self.process(pid).map(|p| p.image_id).unwrap_or_default();
            self.image(&image_id)
                .await
                .map(|i| i.default_tools)
                .unwrap_or_default()
        };
        let taken = || {
            SyscallError::AlreadyExists(format!(
                "tool {name} is already in process {pid}'s tool table (tools are never shadowed)"
            ))
        };
        if image_tools.contains(&name) {
            return Err(taken());
        }
        // Claim the name against the current table and every registration in flight, so two
        // concurrent registrations of one name cannot both reach the commit.
        let claim = {
            let tables = self.inner.tools.tables.lock();
            let mut registering = self.inner.tools.registering.lock();
            let in_table = tables.get(&pid).is_some_and(|t| t.contains_key(&name));
            if in_table || !registering.insert((pid, name.clone())) {
                return Err(taken());
            }
            NameClaim {
                kernel: self.clone(),
                pid,
                name: name.clone(),
            }
        };
        let batch = WriteBatch::default().stmt(
            "INSERT INTO tools (pid, name, object_id, source_hash, meta, registered_at) VALUES (?, ?, ?, ?, ?, ?)",
            vec![
                pid.into(),
                name.clone().into(),
                id.into(),
                hash.clone().into(),
                serde_json::to_string(&loaded.meta).unwrap_or_default().into(),
                self.now().into(),
            ],
        );
        // The table changes only once the registration (and its audit record) is durable.
        let kernel = self.clone();
        let registered = name.clone();
        let publish = move || {
            kernel
                .inner
                .tools
                .tables
                .lock()
                .entry(pid)
                .and_modify(|table| {
                    Arc::make_mut(table).insert(registered, Arc::new(loaded));
                });
            drop(claim);
        };
        Ok(Done::new(
            json!({"name": name, "id": id, "hash": hash}),
            format!("tool:{name}"),
        )
        .batch(batch)
        .on_commit(publish))
    }

    /// Analyzes (off the async threads) and wraps a tool's source; `hash` is its SHA-256.
    async fn load_tool(&self, source: String, hash: &str) -> SysResult<LoadedTool> {
        let specifier = specifier_for(hash);
        let analyzed =
            jit::analyze_async(specifier.clone(), source.into(), AnalyzeOptions::default())
                .await
                .map_err(|findings| {
                    SyscallError::invalid(format!(
                        "tool source no longer validates: {}",
                        findings
                            .iter()
                            .map(ToString::to_string)
                            .collect::<Vec<_>>()
                            .join("; ")
                    ))
                })?;
        let transpiled = self
            .inner
            .tools
            .transpiled
            .insert_transpiled(&specifier, analyzed.transpiled);
        Ok(LoadedTool {
            meta: analyzed.meta,
            module: Arc::new(ToolModule {
                specifier,
                code: transpiled.code.clone(),
                source_map: transpiled.source_map.clone(),
                hash: hash.to_string(),
            }),
        })
    }

    /// The process's tool table, loading it from the store on first use.
    pub(crate) async fn tool_table(&self, pid: Pid) -> SysResult<Arc<ToolTable>> {
        if let Some(table) = self.inner.tools.tables.lock().get(&pid) {
            return Ok(table.clone());
        }
        let rows = sqlx::query(
            "SELECT t.name, o.payload FROM tools t JOIN objects o ON o.id = t.object_id WHERE t.pid = ?",
        )
        .bind(pid)
        .fetch_all(self.inner.store.pool())
        .await?;
        let mut table = HashMap::new();
        for row in rows {
            let name: String = row.try_get("name")?;
            let payload: String = row.try_get("payload")?;
            let payload: Value = serde_json::from_str(&payload).unwrap_or(Value::Null);
            let source = payload["source"].as_str().unwrap_or_default().to_string();
            // The stored hash is a record of what was registered; the code is what is hashed.
            let hash = crate::util::sha256_hex(source.as_bytes());
            table.insert(name, Arc::new(self.load_tool(source, &hash).await?));
        }
        let table = self
            .inner
            .tools
            .tables
            .lock()
            .entry(pid)
            .or_insert_with(|| Arc::new(table))
            .clone();
        Ok(table)
    }

    /// Counts one run of tool code (a call or a declared test) against `pid`'s budget.
    fn charge_tool_call(&self, pid: Pid) -> SysResult<()> {
        let mut state = self.inner.state.lock();
        let p = state
            .procs
            .get_mut(&pid)
            .ok_or_else(|| SyscallError::NotFound(format!("process {pid}")))?;
        if p.usage.tool_calls >= p.budget.tool_calls {
            return Err(SyscallError::limit(
                "tool_calls",
                format!(
                    "process {pid} used its budget of {} tool calls",
                    p.budget.tool_calls
                ),
            ));
        }
        p.usage.tool_calls += 1;
        Ok(())
    }

    /// Per-call limits: the image's, lowered (never raised) by the tool's own.
    async fn limits_for(&self, pid: Pid, tool: &jit::ToolLimits) -> CallLimits {
        let image = match self.process(pid) {
            Some(p) => self
                .image(&p.image_id)
                .await
                .map(|i| i.limits)
                .unwrap_or_default(),
            None => ToolLimits::default(),
        };
        let pick = |img: u64, own: Option<u64>| own.map_or(img, |o| o.clamp(1, img));
        CallLimits {
            cpu_ms: pick(image.cpu_ms, tool.cpu_ms),
            wall_ms: image.wall_ms.max(1),
            heap_bytes: (pick(image.heap_mb, tool.heap_mb) as usize) << 20,
            max_syscalls: pick(image.syscalls, tool.syscalls),
            max_result_bytes: pick(image.result_bytes, tool.result_bytes) as usize,
            max_console_bytes: pick(image.console_bytes, tool.console_bytes) as usize,
        }
    }

    /// Calls a registered tool in the process's own isolate.
    async fn invoke(
        &self,
        pid: Pid,
        name: &str,
        args: Value,
        scope: &mut Scope,
    ) -> SysResult<Value> {
        let table = self.tool_table(pid).await?;
        let tool = table.get(name).cloned().ok_or_else(|| {
            SyscallError::NotFound(format!("tool {name} in process {pid}'s tool table"))
        })?;
        self.charge_tool_call(pid)?;
        if let Err(errors) = jit::validate(&tool.meta.input, &args) {
            return Err(SyscallError::invalid(format!(
                "arguments of {name} do not match its input schema: {}",
                errors.join("; ")
            )));
        }
        let keyed = scope.invocation_key.take();
        let invocation = keyed
            .as_ref()
            .map(|k| k.id.clone())
            .unwrap_or_else(|| crate::util::new_id("inv"));
        scope.correlation = Some(invocation.clone());
        let (start_time, seed) = keyed
            .as_ref()
            .and_then(|k| k.start_seed)
            .unwrap_or_else(|| {
                let now = self.now();
                (now, seed_from(&tool.module.hash, now))
            });
        let args_hash = super::syscall::Syscall::Tool(super::syscall::JitCall::Call {
            name: name.to_string(),
            args: args.clone(),
        })
        .args_hash();
        let mut inv = Invocation::new(pid, name, args.clone(), args_hash);
        inv.start_time = start_time;
        inv.seed = seed;
        match keyed {
            Some(k) => {
                inv.recorded = k.recorded;
                inv.replay = k.replay;
                inv.epoch = k.epoch;
                inv.carried = if k.recorded {
                    k.carried
                } else {
                    self.isolate_warm(pid)
                };
            }
            None => inv.carried = self.isolate_warm(pid),
        }
        // A keyed call that ran before (on this host or another) runs again from its journal.
        let rerun = inv.recorded;
        let _live = self.begin_invocation(&invocation, inv);
        let result = match rerun {
            true => self.settle_divergence(pid, &invocation).await,
            false => Ok(()),
        };
        let result = match result {
            Ok(()) => {
                self.run_invocation(pid, &tool, &invocation, args, (start_time, seed), rerun)
                    .await
            }
            Err(e) => Err(e),
        };
        self.end_invocation(&invocation, result).await
    }

    /// Whether `pid`'s isolate has served a call since it was last made fresh.
    fn isolate_warm(&self, pid: Pid) -> bool {
        self.inner.tools.warm.lock().contains(&pid)
    }

    /// Runs one invocation of `tool` in `pid`'s isolate (a first run), or in a fresh one (a
    /// `replay` of an earlier run: nothing an earlier call left in globals is there).
    async fn run_invocation(
        &self,
        pid: Pid,
        tool: &LoadedTool,
        invocation: &str,
        args: Value,
        (start_time, seed): (i64, u64),
        replay: bool,
    ) -> SysResult<Value> {
        let limits = self.limits_for(pid, &tool.meta.limits).await;
        let request = CallRequest {
            module: tool.module.clone(),
            args,
            limits,
            port: Arc::new(KernelPort {
                kernel: self.clone(),
                handle: None,
            }),
            ctx: CallContext {
                pid,
                invocation_id: invocation.to_string(),
            },
            start_time_ms: start_time,
            random_seed: seed,
        };
        let host = self.isolates();
        let mut outcome = match replay {
            true => host.call_fresh(pid, request.clone()).await,
            false => host.call(pid, request.clone()).await,
        };
        if let Err(CallError::Retry(why)) = &outcome {
            // Its worker stopped under it, after every syscall the kernel was serving for it
            // finished: run it once more from the journal (journaled effects are answered
            // from their rows, never repeated), in a fresh isolate.
            tracing::warn!(pid, invocation, "running the invocation again: {why}");
            self.rewind_invocation(invocation).await?;
            outcome = host.call_fresh(pid, request).await;
        }
        self.inner.tools.warm.lock().insert(pid);
        let value = outcome.map_err(SyscallError::from)?;
        if let Err(errors) = jit::validate(&tool.meta.output, &value) {
            return Err(SyscallError::invalid(format!(
                "the result of {} does not match its output schema: {}",
                tool.meta.name,
                errors.join("; ")
            )));
        }
        Ok(value)
    }

    /// Brings interrupted work back after a restart: processes left RUNNING by a dead host
    /// become RUNNABLE, and every tool invocation that was running (or waiting for a human)
    /// runs again from its journal — recorded syscalls return their outcomes, nothing
    /// journaled is repeated, and a pending approval is waited on again, still answerable.
    pub async fn resume(&self) -> SysResult<ResumeReport> {
        self.inner
            .store
            .flush()
            .await
            .map_err(|e| SyscallError::Internal(e.to_string()))?;
        let rows = sqlx::query(
            "SELECT id, pid, tool, args, start_time, seed, carried FROM invocations \
             WHERE status IN ('running', 'waiting_human') AND tool != '' ORDER BY created_at, id",
        )
        .fetch_all(self.inner.store.pool())
        .await?;
        let mut pending = Vec::new();
        let mut owned_elsewhere = Vec::new();
        for row in rows {
            let id: String = row.try_get("id")?;
            let pid: Pid = row.try_get("pid")?;
            // Another host's live invocation (and its process) is left alone.
            let Some(epoch) = self.take_over(&id).await? else {
                tracing::info!(invocation = %id, pid, "leased by a live host; not resumed");
                owned_elsewhere.push(pid);
                continue;
            };
            let args: String = row.try_get("args")?;
            let seed: String = row.try_get("seed")?;
            pending.push((
                id,
                pid,
                row.try_get::<String, _>("tool")?,
                serde_json::from_str::<Value>(&args).unwrap_or(Value::Null),
                row.try_get::<i64, _>("start_time")?,
                seed.parse::<u64>().unwrap_or(0),
                epoch,
                row.try_get::<i64, _>("carried")? != 0,
            ));
        }
        // Sets, not lists: this loop visits every registered process.
        let owned_elsewhere: std::collections::HashSet<Pid> = owned_elsewhere.into_iter().collect();
        let with_invocation: std::collections::HashSet<Pid> =
            pending.iter().map(|(_, pid, ..)| *pid).collect();
        let running_tasks: std::collections::HashSet<Pid> =
            self.inner.tasks.lock().keys().copied().collect();
        let to_runnable: Vec<Pid> = self
            .processes()
            .into_iter()
            .filter(|p| {
                let stale =
                    p.status == super::process::Status::Running && !running_tasks.contains(&p.pid);
                let parked = p.status.is_waiting() && with_invocation.contains(&p.pid);
                !owned_elsewhere.contains(&p.pid) && (stale || parked)
            })
            .map(|p| p.pid)
            .collect();
        // Many at once, so that their commits are grouped instead of one per process.
        futures::stream::iter(to_runnable)
            .map(|pid| self.transition(pid, super::process::Status::Runnable))
            .buffer_unordered(RESUME_TRANSITIONS)
            .try_collect::<Vec<_>>()
            .await?;
        let mut runs = Vec::new();
        for (id, pid, tool_name, args, start_time, seed, epoch, carried) in pending {
            let kernel = self.clone();
            runs.push(async move {
                let mut inv = Invocation::new(pid, &tool_name, args, String::new());
                (inv.start_time, inv.seed, inv.epoch, inv.carried) =
                    (start_time, seed, epoch, carried);
                let outcome = kernel.rerun(&id, inv).await;
                ResumedInvocation {
                    id,
                    pid,
                    tool: tool_name,
                    outcome: outcome.map_err(|e| e.to_wire()),
                }
            });
        }
        let invocations = futures::future::join_all(runs).await;
        let processes = self
            .processes()
            .into_iter()
            .filter(|p| !p.status.is_terminal())
            .map(|p| (p.pid, p.status))
            .collect();
        Ok(ResumeReport {
            processes,
            invocations,
        })
    }

    /// Runs invocation `id` (described by `inv`: its process, tool, arguments, start time,
    /// seed, lease epoch) again from its journal, in a fresh isolate. A divergence an
    /// earlier replay left is settled first (see `Kernel::settle_divergence`).
    async fn rerun(&self, id: &str, mut inv: Invocation) -> SysResult<Value> {
        let (pid, tool_name, args) = (inv.pid, inv.tool.clone(), inv.args.clone());
        let alive = self.process(pid).is_some_and(|p| !p.status.is_terminal());
        let tool = if alive {
            self.tool_table(pid).await?.get(&tool_name).cloned()
        } else {
            None
        };
        inv.replay = self.load_journal(id).await?;
        inv.recorded = true;
        let start_seed = (inv.start_time, inv.seed);
        let _live = self.begin_invocation(id, inv);
        let result = match tool {
            Some(tool) => match self.settle_divergence(pid, id).await {
                Ok(()) => {
                    self.run_invocation(pid, &tool, id, args, start_seed, true)
                        .await
                }
                Err(e) => Err(e),
            },
            None => {
                self.not_replayed(id);
                Err(SyscallError::IllegalState(format!(
                    "invocation {id} cannot resume: process {pid} or its tool {tool_name} is gone"
                )))
            }
        };
        self.end_invocation(id, result).await
    }

    /// Records a tool's console output in the process log (never the host's stdout).
    pub(crate) fn log_console(&self, pid: Pid, invocation: &str, level: &str, text: &str) {
        let batch = WriteBatch::default().stmt(
            "INSERT INTO process_log (pid, invocation_id, level, text, ts) VALUES (?, ?, ?, ?, ?)",
            vec![
                pid.into(),
                invocation.into(),
                level.into(),
                text.into(),
                self.now().into(),
            ],
        );
        // Called from the engine's console op, which cannot wait: a full queue drops this
        // line (never an audit record) and says so.
        if let Err(e) = self.inner.store.try_submit(batch) {
            tracing::warn!(pid, invocation, %e, "console output was not recorded");
        }
    }

    /// The console output of a process, oldest first: (invocation, level, text).
    pub async fn process_log(&self, pid: Pid) -> SysResult<Vec<(String, String, String)>> {
        self.inner
            .store
            .flush()
            .await
            .map_err(|e| SyscallError::Internal(e.to_string()))?;
        let rows = sqlx::query(
            "SELECT invocation_id, level, text FROM process_log WHERE pid = ? ORDER BY id",
        )
        .bind(pid)
        .fetch_all(self.inner.store.pool())
        .await?;
        rows.iter()
            .map(|r| {
                Ok((
                    r.try_get::<Option<String>, _>(0)?.unwrap_or_default(),
                    r.try_get(1)?,
                    r.try_get(2)?,
                ))
            })
            .collect()
    }

    /// Whether `pid`'s isolate is hot in a worker now; `false` when it hibernates (evicted,
    /// or never created in this host): its next tool call creates one.
    pub fn isolate_hot(&self, pid: Pid) -> bool {
        self.inner
            .isolates
            .get()
            .is_some_and(|host| host.is_hot(pid))
    }

    /// Binds an isolate (from the pre-created pool) to a process ahead of its first tool call.
    pub async fn attach_isolate(&self, pid: Pid) -> SysResult<()> {
        if self.process(pid).is_none() {
            return Err(SyscallError::NotFound(format!("process {pid}")));
        }
        self.isolates()
            .attach(pid)
            .await
            .map_err(|e| SyscallError::Internal(e.to_string()))
    }

    /// Stops `pid`'s running tool calls and declared tests (its `cancel` and `kill`
    /// signals): they fail with `Cancelled` at once, whatever their JavaScript is doing.
    pub(crate) fn interrupt_tools(&self, pid: Pid) {
        if let Some(host) = self.inner.isolates.get() {
            host.interrupt(pid);
        }
    }

    /// Drops the cached tool table of a process (it is reloaded from the store on next use).
    pub(crate) fn forget_tool_table(&self, pid: Pid) {
        self.inner.tools.tables.lock().remove(&pid);
    }

    /// Drops a process's isolate and cached tool table (after it ends).
    pub(crate) async fn release_tools(&self, pid: Pid) {
        self.inner.tools.tables.lock().remove(&pid);
        self.inner.tools.warm.lock().remove(&pid);
        if let Some(host) = self.inner.isolates.get() {
            host.detach(pid).await;
        }
    }
}

/// How a failed tool call surfaces as a syscall error. Only an error the port returned to
/// one of this call's syscalls (the host's record of it) becomes a kernel outcome such as
/// `PermissionDenied` or `HumanRequired`; whatever the tool throws itself, libos error
/// classes included, is a `ToolError`.
impl From<CallError> for SyscallError {
    fn from(err: CallError) -> SyscallError {
        match err {
            CallError::Limit { limit, detail } => SyscallError::LimitExceeded { limit, detail },
            CallError::Syscall { error } => match serde_json::from_value::<WireError>(error) {
                Ok(wire) => SyscallError::from_wire(&wire),
                Err(e) => SyscallError::Internal(format!("a syscall error of unknown shape: {e}")),
            },
            CallError::Threw { message, stack } => SyscallError::ToolError { message, stack },
            CallError::Module(message) => SyscallError::ToolError {
                message,
                stack: String::new(),
            },
            CallError::Cancelled(message) => SyscallError::Cancelled(message),
            CallError::Internal(message) | CallError::Retry(message) => {
                SyscallError::Internal(message)
            }
        }
    }
}

/// The module specifier a tool whose source hashes to `hash` is loaded under (stack traces
/// name it; the CLI maps it back to the user's file).
pub fn specifier_for(hash: &str) -> String {
    format!("tool:{}.ts", &hash[..hash.len().min(16)])
}

fn seed_from(hash: &str, now: i64) -> u64 {
    let mut seed = now as u64;
    for b in hash.bytes().take(16) {
        seed = seed.rotate_left(5) ^ b as u64;
    }
    seed
}

/// The port of a real call: every syscall goes to the kernel under the caller's pid.
struct KernelPort {
    kernel: Kernel,
    /// Where syscalls run: `None` runs them on the calling isolate's thread.
    handle: Option<tokio::runtime::Handle>,
}

impl SyscallPort for KernelPort {
    fn syscall(
        &self,
        ctx: &CallContext,
        call: Box<RawValue>,
    ) -> agent_libos_ops::BoxFuture<'static, Result<Value, Value>> {
        // Decoded once, from the text the op wrote, straight into the typed call (a panic
        // in the decoder is this call's `Internal` error, like one in the syscall).
        let decoded = catch_panic_sync("syscall decode", || {
            Syscall::from_wire_text(call.get()).map_err(SyscallError::invalid)
        });
        let call = match decoded {
            Ok(call) => call,
            Err(e) => {
                let refused = Err(wire(&e));
                return Box::pin(async move { refused });
            }
        };
        let kernel = self.kernel.clone();
        let handle = self.handle.clone();
        let ctx = ctx.clone();
        // The engine polls this future inside a callback that cannot unwind: a panic must
        // stop here, as this call's `Internal` error.
        let primitive = call.name();
        let serve = async move {
            let run = async move {
                kernel
                    .syscall_correlated(ctx.pid, call, Some(ctx.invocation_id))
                    .await
            };
            // The kernel's futures are Send and runtime-agnostic: run the syscall right on
            // the isolate's thread (no hop to another runtime and back) unless the caller
            // asked for the host runtime.
            let result = match handle {
                Some(handle) => handle
                    .spawn(run)
                    .await
                    .unwrap_or_else(|join| Err(SyscallError::internal(join))),
                None => run.await,
            };
            result.map_err(|err| wire(&err))
        };
        Box::pin(async move {
            match AssertUnwindSafe(serve).catch_unwind().await {
                Ok(result) => result,
                Err(payload) => Err(wire(&panicked(primitive, payload.as_ref()))),
            }
        })
    }

    fn console(&self, ctx: &CallContext, level: &str, text: &str) {
        let logged = catch_panic_sync("console", || {
            self.kernel
                .log_console(ctx.pid, &ctx.invocation_id, level, text);
            Ok(())
        });
        if let Err(err) = logged {
            tracing::error!(pid = ctx.pid, %err, "console output was not recorded");
        }
    }
}

fn wire(err: &SyscallError) -> Value {
    serde_json::to_value(err.to_wire()).unwrap_or(Value::Null)
}

/// The port of a declared test: answers syscalls from the test's script, in order.
struct MockPort {
    script: Vec<jit::MockSyscall>,
    next: Mutex<usize>,
}

impl MockPort {
    fn new(script: Vec<jit::MockSyscall>) -> MockPort {
        MockPort {
            script,
            next: Mutex::new(0),
        }
    }

    /// A failure message if the tool made fewer syscalls than scripted.
    fn unused(&self) -> Option<String> {
        let used = *self.next.lock();
        (used < self.script.len()).then(|| {
            format!(
                "the test scripted {} syscalls but the tool made {used} (next expected: {})",
                self.script.len(),
                self.script[used].primitive
            )
        })
    }
}

impl SyscallPort for MockPort {
    fn syscall(
        &self,
        _ctx: &CallContext,
        call: Box<RawValue>,
    ) -> agent_libos_ops::BoxFuture<'static, Result<Value, Value>> {
        // Answered synchronously, but polled inside the engine all the same.
        let outcome = catch_panic_sync("declared test", || {
            let call = serde_json::from_str(call.get())
                .map_err(|e| SyscallError::invalid(format!("a syscall of unknown shape: {e}")))?;
            Ok(self.answer(call))
        })
        .unwrap_or_else(|err| Err(wire(&err)));
        Box::pin(async move { outcome })
    }

    fn console(&self, _ctx: &CallContext, _level: &str, _text: &str) {}
}

impl MockPort {
    /// The scripted outcome of `call`, or why the script does not match it.
    fn answer(&self, call: Value) -> Result<Value, Value> {
        let primitive = call["primitive"].as_str().unwrap_or("?").to_string();
        let step = {
            let mut next = self.next.lock();
            let step = self.script.get(*next).cloned();
            if step.is_some() {
                *next += 1;
            }
            step
        };
        let outcome = match step {
            None => Err(wire(&SyscallError::invalid(format!(
                "the test did not script this syscall: {primitive}"
            )))),
            Some(step) if step.primitive != primitive => {
                Err(wire(&SyscallError::invalid(format!(
                    "the test scripted {} here, but the tool called {primitive}",
                    step.primitive
                ))))
            }
            Some(step) => match (&step.args, &step.error) {
                (Some(want), _) if !json_subset(want, &call) => Err(wire(&SyscallError::invalid(
                    format!("{primitive} was called with {call}, the test expected {want}"),
                ))),
                (_, Some(err)) => Err(serde_json::from_value::<WireError>(err.clone())
                    .map(|mut w| {
                        if w.message.is_empty() {
                            w.message = format!("{}: mocked", w.kind);
                        }
                        serde_json::to_value(w).unwrap_or(Value::Null)
                    })
                    .unwrap_or_else(|_| err.clone())),
                _ => Ok(step.result.clone().unwrap_or(Value::Null)),
            },
        };
        outcome
    }
}

/// Whether every field of `want` appears with the same value in `have`.
pub(crate) fn json_subset(want: &Value, have: &Value) -> bool {
    match (want, have) {
        (Value::Object(w), Value::Object(h)) => w
            .iter()
            .all(|(k, v)| h.get(k).is_some_and(|hv| json_subset(v, hv))),
        _ => want == have,
    }
}
