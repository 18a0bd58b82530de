//! The single syscall entry point: gate, dispatch, audit.

use serde_json::{json, Value};
use tracing::Instrument;

use super::capability::Pid;
use super::error::{SysResult, SyscallError};
use super::journal::Step;
use super::process::Status;
use super::syscall::{IntentTiming, Syscall};
use super::Kernel;
use crate::audit::AuditEntry;
use crate::store::{JournalRow, WriteBatch};

/// Per-call bookkeeping handlers add to.
#[derive(Default)]
pub(crate) struct Scope {
    /// Capabilities that authorized the call (for the audit record).
    pub caps: Vec<i64>,
    /// `allow_once` capabilities reserved by this call: consumed on success, released on
    /// failure.
    pub once: Vec<i64>,
    /// The invocation this call belongs to (tool call id), if any.
    pub correlation: Option<String>,
    /// Audit seq of a human approval this call waited for.
    pub parent_seq: Option<i64>,
    /// A journal intent to make durable right before an external effect
    /// (invocation, seq, args hash); see [`Kernel::intent_point`].
    pub intent: Option<(String, i64, String)>,
    /// For `tool.call` through [`Kernel::syscall_once`]: the invocation to run as.
    pub invocation_key: Option<super::journal::Keyed>,
}

/// What a successful handler returns.
pub(crate) struct Done {
    pub value: Value,
    /// The resource acted on, for the audit record.
    pub target: String,
    /// Result summary for the audit record.
    pub detail: Value,
    /// State changes committed together with the audit record.
    pub batch: WriteBatch,
}

impl Done {
    pub fn new(value: Value, target: impl Into<String>) -> Done {
        Done {
            value,
            target: target.into(),
            detail: Value::Null,
            batch: WriteBatch::default(),
        }
    }

    pub fn detail(mut self, detail: Value) -> Done {
        self.detail = detail;
        self
    }

    pub fn batch(mut self, batch: WriteBatch) -> Done {
        self.batch = batch;
        self
    }
}

/// Strings longer than this are summarized (length and hash) in audit records.
const AUDIT_INLINE_LIMIT: usize = 256;

impl Kernel {
    /// Runs one primitive on behalf of `pid`. The only way an agent causes an effect.
    pub async fn syscall(&self, pid: Pid, call: Syscall) -> SysResult<Value> {
        self.syscall_correlated(pid, call, None).await
    }

    /// Like [`Kernel::syscall`], tagging the audit record with a correlation id (the tool
    /// invocation the call belongs to).
    pub async fn syscall_correlated(
        &self,
        pid: Pid,
        call: Syscall,
        correlation: Option<String>,
    ) -> SysResult<Value> {
        let scope = Scope {
            correlation,
            ..Scope::default()
        };
        self.syscall_scoped(pid, call, scope).await
    }

    pub(crate) async fn syscall_scoped(
        &self,
        pid: Pid,
        call: Syscall,
        scope: Scope,
    ) -> SysResult<Value> {
        let primitive = call.name();
        let span = tracing::info_span!("syscall", pid, primitive, decision = tracing::field::Empty);
        let mut scope = scope;
        async move {
            if let Err(e) = self.gate(pid, &call).await {
                return self.finish(pid, &call, scope, Err(e), None).await;
            }
            let mut journal = None;
            if let Some(inv) = scope.correlation.clone() {
                match self.journal_step(pid, &inv, &call) {
                    None => {}
                    Some(Err(e)) => return self.finish(pid, &call, scope, Err(e), None).await,
                    Some(Ok(Step::Replay(result))) => {
                        return self.replayed(pid, &call, &inv, result)
                    }
                    Some(Ok(Step::Fresh {
                        seq,
                        hash,
                        journal: true,
                    })) => {
                        match call.intent_timing() {
                            IntentTiming::BeforeDispatch => {
                                if let Err(e) = self.journal_intent(&inv, seq, &call, &hash).await {
                                    return self.finish(pid, &call, scope, Err(e), None).await;
                                }
                            }
                            IntentTiming::AtEffect => {
                                scope.intent = Some((inv.clone(), seq, hash.clone()))
                            }
                            IntentTiming::Never => {}
                        }
                        journal = Some((inv, seq, hash));
                    }
                    Some(Ok(Step::Fresh { .. })) => {}
                    Some(Ok(Step::Uncertain { seq, hash })) => {
                        if let Err(e) = self.confirm_uncertain(pid, &inv, seq, &call).await {
                            return self.finish(pid, &call, scope, Err(e), None).await;
                        }
                        journal = Some((inv, seq, hash));
                    }
                }
            }
            let result = self.dispatch(pid, &call, &mut scope).await;
            self.finish(pid, &call, scope, result, journal).await
        }
        .instrument(span)
        .await
    }

    /// Checks that `pid` may make a syscall now: it exists, is not terminal, is not
    /// cancelled, and has budget left. Waits while it is paused.
    async fn gate(&self, pid: Pid, call: &Syscall) -> SysResult<()> {
        loop {
            let mut rx = {
                let mut state = self.inner.state.lock();
                let now = self.now();
                let Some(proc) = state.procs.get_mut(&pid) else {
                    return Err(SyscallError::NotFound(format!("process {pid}")));
                };
                if proc.status.is_terminal() {
                    return Err(SyscallError::IllegalState(format!(
                        "process {pid} is {}",
                        proc.status
                    )));
                }
                if proc.cancel_requested {
                    return Err(SyscallError::Cancelled(format!(
                        "process {pid} was cancelled"
                    )));
                }
                if !matches!(proc.status, Status::Paused | Status::Suspended) {
                    let elapsed = now.saturating_sub(proc.started_at) as u64;
                    if elapsed > proc.budget.wall_time_ms
                        && !matches!(call, Syscall::ProcExit { .. })
                    {
                        return Err(SyscallError::limit(
                            "wall_time",
                            format!(
                                "process {pid} ran {elapsed} ms of its {} ms",
                                proc.budget.wall_time_ms
                            ),
                        ));
                    }
                    proc.usage.syscalls += 1;
                    if proc.usage.syscalls > proc.budget.syscalls {
                        return Err(SyscallError::limit(
                            "syscalls",
                            format!(
                                "process {pid} used its budget of {} syscalls",
                                proc.budget.syscalls
                            ),
                        ));
                    }
                    return Ok(());
                }
                state.changes_of(pid).subscribe()
            };
            if rx.changed().await.is_err() {
                return Err(SyscallError::internal("process change channel closed"));
            }
        }
    }

    async fn dispatch(&self, pid: Pid, call: &Syscall, scope: &mut Scope) -> SysResult<Done> {
        use Syscall::*;
        match call {
            FsReadText { .. }
            | FsReadBytes { .. }
            | FsWriteText { .. }
            | FsAppendText { .. }
            | FsList { .. }
            | FsMkdir { .. }
            | FsDeleteFile { .. }
            | FsDeleteDir { .. } => self.fs_call(pid, call, scope).await,
            ProcGetCwd
            | ProcChdir { .. }
            | ProcSelf
            | ProcSpawn { .. }
            | ProcFork { .. }
            | ProcWait { .. }
            | ProcChildren
            | ProcSignal { .. }
            | ProcExit { .. }
            | ProcExec { .. } => self.proc_call(pid, call, scope).await,
            EventWait { .. } | EventPost { .. } => self.event_call(pid, call, scope).await,
            MemCreateNamespace { .. }
            | MemList { .. }
            | MemCreate(_)
            | MemRead { .. }
            | MemFind { .. }
            | MemAppend { .. }
            | MemFromFile { .. }
            | MemToFile { .. } => self.mem_call(pid, call, scope).await,
            ClockNow => Ok(Done::new(json!(self.now()), "clock")),
            ClockSleep { ms } => self.sleep(pid, *ms).await,
            ShellRun { .. } | NetFetch { .. } => self.host_call(pid, call, scope).await,
            HumanOutput { .. } | HumanAsk { .. } | HumanRequestPermission { .. } => {
                self.human_call(pid, call, scope).await
            }
            CapList | CapGrant { .. } | CapRevoke { .. } => self.cap_call(pid, call, scope).await,
            ImageRegister { .. } => self.image_register_call(pid, call, scope).await,
            ToolPropose { .. }
            | ToolValidate { .. }
            | ToolRegister { .. }
            | ToolList
            | ToolCall { .. } => self.tool_call(pid, call, scope).await,
        }
    }

    /// Consumes or releases one-shot grants, writes the audit record (durably before
    /// returning for effects and failures that changed state), and maps the result.
    async fn finish(
        &self,
        pid: Pid,
        call: &Syscall,
        scope: Scope,
        result: SysResult<Done>,
        journal: Option<(String, i64, String)>,
    ) -> SysResult<Value> {
        let now = self.now();
        let journal_row = |outcome: Value| {
            journal.as_ref().map(|(inv, seq, hash)| JournalRow {
                invocation_id: inv.clone(),
                seq: *seq,
                primitive: call.name().to_string(),
                args_hash: hash.clone(),
                status: "done",
                outcome: Some(outcome),
            })
        };
        let span = tracing::Span::current();
        match result {
            Ok(mut done) => {
                span.record("decision", "allow");
                if !scope.once.is_empty() {
                    let mut state = self.inner.state.lock();
                    for id in &scope.once {
                        state.reserved_once.remove(id);
                        if let Some(cap) = state.find_cap_mut(*id) {
                            cap.consumed = true;
                        }
                        super::persist::consume_cap(&mut done.batch, *id);
                    }
                }
                let entry = AuditEntry {
                    ts: now,
                    actor: format!("pid:{pid}"),
                    action: call.name().to_string(),
                    target: done.target.clone(),
                    decision: "allow".into(),
                    capability_refs: scope.caps.clone(),
                    correlation_id: scope.correlation.clone(),
                    parent_seq: scope.parent_seq,
                    detail: json!({"request": summarize(call), "result": done.detail}),
                };
                let mut batch = done.batch.audit(entry);
                if let Some(row) = journal_row(json!({"ok": done.value})) {
                    batch = batch.journal(row);
                }
                if call.is_effect() || !batch.stmts.is_empty() || !scope.once.is_empty() {
                    self.inner
                        .store
                        .commit(batch)
                        .await
                        .map_err(|e| SyscallError::Internal(format!("store: {e}")))?;
                } else {
                    self.inner.store.submit(batch);
                }
                Ok(done.value)
            }
            Err(err) => {
                if !scope.once.is_empty() {
                    let mut state = self.inner.state.lock();
                    for id in &scope.once {
                        state.reserved_once.remove(id);
                    }
                }
                let decision = match &err {
                    SyscallError::PermissionDenied { .. } => "deny",
                    SyscallError::HumanRejected(_) => "rejected",
                    SyscallError::HumanRequired { .. } => "ask",
                    _ => "error",
                };
                span.record("decision", decision);
                tracing::debug!(%err, "syscall failed");
                let target = match &err {
                    SyscallError::PermissionDenied { resource, .. } => resource.clone(),
                    _ => target_hint(call),
                };
                let entry = AuditEntry {
                    ts: now,
                    actor: format!("pid:{pid}"),
                    action: call.name().to_string(),
                    target,
                    decision: decision.into(),
                    capability_refs: scope.caps,
                    correlation_id: scope.correlation,
                    parent_seq: scope.parent_seq,
                    detail: json!({"request": summarize(call), "error": err.to_wire()}),
                };
                let mut batch = WriteBatch::default().audit(entry);
                let retryable = matches!(
                    err,
                    SyscallError::HumanRequired { .. }
                        | SyscallError::Cancelled(_)
                        | SyscallError::Internal(_)
                );
                if !retryable {
                    if let Some(row) = journal_row(json!({"err": err.to_wire()})) {
                        batch = batch.journal(row);
                    }
                }
                self.inner.store.submit(batch);
                Err(err)
            }
        }
    }
}

impl Kernel {
    /// Called by handlers of external effects after every check and approval, right before
    /// the provider acts: makes the journal intent durable (once).
    pub(crate) async fn intent_point(&self, call: &Syscall, scope: &mut Scope) -> SysResult<()> {
        if let Some((inv, seq, hash)) = scope.intent.take() {
            self.journal_intent(&inv, seq, call, &hash).await?;
        }
        Ok(())
    }

    /// A syscall answered from the journal on replay: audited, not run.
    fn replayed(
        &self,
        pid: Pid,
        call: &Syscall,
        invocation: &str,
        result: SysResult<Value>,
    ) -> SysResult<Value> {
        tracing::Span::current().record("decision", "replay");
        let entry = AuditEntry {
            ts: self.now(),
            actor: format!("pid:{pid}"),
            action: call.name().to_string(),
            target: target_hint(call),
            decision: "replay".into(),
            capability_refs: vec![],
            correlation_id: Some(invocation.to_string()),
            parent_seq: None,
            detail: json!({"request": summarize(call), "replayed": result.is_ok()}),
        };
        self.inner.store.submit(WriteBatch::default().audit(entry));
        result
    }
}

/// The resource a call is about, for audit records of failed calls.
fn target_hint(call: &Syscall) -> String {
    use Syscall::*;
    match call {
        FsReadText { path }
        | FsReadBytes { path }
        | FsWriteText { path, .. }
        | FsAppendText { path, .. }
        | FsList { path }
        | FsMkdir { path, .. }
        | FsDeleteFile { path }
        | FsDeleteDir { path, .. }
        | ProcChdir { path } => format!("fs:{path}"),
        ShellRun { argv, .. } => {
            format!("shell:{}", argv.first().map(String::as_str).unwrap_or(""))
        }
        NetFetch { url, .. } => format!("net:{url}"),
        MemRead { id } | MemAppend { id, .. } | MemToFile { id, .. } => format!("object:{id}"),
        ProcWait { pid, .. } | ProcSignal { pid, .. } => format!("process:{pid}"),
        ProcSpawn { image, .. } | ProcExec { image } => format!("image:{image}"),
        ToolCall { name, .. } => format!("tool:{name}"),
        _ => call.name().to_string(),
    }
}

/// The request as recorded in the audit log: long strings become length + hash.
pub(crate) fn summarize(call: &Syscall) -> Value {
    fn shrink(value: Value) -> Value {
        match value {
            Value::String(s) if s.len() > AUDIT_INLINE_LIMIT => json!({
                "bytes": s.len(),
                "sha256": crate::util::sha256_hex(s.as_bytes()),
            }),
            Value::Array(items) => Value::Array(items.into_iter().map(shrink).collect()),
            Value::Object(map) => {
                Value::Object(map.into_iter().map(|(k, v)| (k, shrink(v))).collect())
            }
            other => other,
        }
    }
    shrink(serde_json::to_value(call).unwrap_or(Value::Null))
}
