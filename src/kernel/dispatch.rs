//! The single syscall entry point: gate, dispatch, audit.

use serde_json::{json, Value};
use tracing::Instrument;

use super::capability::Pid;
use super::error::{SysResult, SyscallError};
use super::journal::{Keyed, Step};
use super::process::Status;
use super::scope::{Done, Scope};
use super::syscall::{
    FsCall, IntentTiming, JitCall, MemCall, NetCall, Primitive, ProcCall, ShellCall, Syscall,
};
use super::unwind::catch_panic;
use super::Kernel;
use crate::audit::{AuditEntry, Decision};
use crate::store::{JournalRow, WriteBatch};

/// Where a call of an invocation is journaled.
struct Slot {
    invocation: String,
    seq: i64,
    hash: String,
    /// Whether its intent is in the journal (then a failure that a replay would retry
    /// leaves the intent, and the replay asks a human).
    intent_written: bool,
}

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

    /// Runs `tool.call` as the caller-keyed invocation `keyed` (see `Kernel::syscall_once`).
    pub(crate) async fn syscall_keyed(
        &self,
        pid: Pid,
        call: Syscall,
        keyed: Keyed,
    ) -> SysResult<Value> {
        let scope = Scope {
            invocation_key: Some(keyed),
            ..Scope::default()
        };
        self.syscall_scoped(pid, call, scope).await
    }

    async fn syscall_scoped(&self, pid: Pid, call: Syscall, scope: Scope) -> SysResult<Value> {
        let primitive = call.name();
        let span = tracing::info_span!("syscall", pid, primitive, decision = tracing::field::Empty);
        let mut scope = scope;
        let serve = async move {
            if let Err(e) = self.gate(pid, &call).await {
                return self.finish(pid, &call, scope, Err(e), None).await;
            }
            let mut journal = None;
            if let Some(inv) = scope.correlation.clone() {
                match self.journal_step(pid, &inv, &call) {
                    None => {}
                    Some(Err(e)) => return self.finish(pid, &call, scope, Err(e), None).await,
                    Some(Ok(Step::Replay(result))) => {
                        return self.replayed(pid, &call, &inv, result).await
                    }
                    Some(Ok(Step::Reread { seq, sha256 })) => {
                        let result =
                            catch_panic(primitive, self.dispatch(pid, &call, &mut scope)).await;
                        let outcome = match &result {
                            Ok(done) => json!({"ok": done.value}),
                            Err(e) => json!({"err": e.to_wire()}),
                        };
                        let now = crate::util::sha256_hex(outcome.to_string().as_bytes());
                        let result = match now == sha256 {
                            true => result,
                            false => Err(self.diverge_on_reread(&inv, seq, &call)),
                        };
                        return self.finish(pid, &call, scope, result, None).await;
                    }
                    Some(Ok(Step::Fresh { seq, hash })) => {
                        let mut intent_written = false;
                        match call.intent_timing() {
                            IntentTiming::BeforeDispatch => {
                                if let Err(e) = self.journal_intent(&inv, seq, &call, &hash).await {
                                    return self.finish(pid, &call, scope, Err(e), None).await;
                                }
                                intent_written = true;
                            }
                            IntentTiming::AtEffect => {
                                scope.intent = Some((inv.clone(), seq, hash.clone()))
                            }
                            IntentTiming::Never => {}
                        }
                        journal = Some(Slot {
                            invocation: inv,
                            seq,
                            hash,
                            intent_written,
                        });
                    }
                    Some(Ok(Step::Uncertain { seq, hash })) => {
                        if let Err(e) = self.confirm_uncertain(pid, &inv, seq, &call).await {
                            return self.finish(pid, &call, scope, Err(e), None).await;
                        }
                        journal = Some(Slot {
                            invocation: inv,
                            seq,
                            hash,
                            intent_written: true,
                        });
                    }
                }
            }
            // A panic in a handler or provider is this call's `Internal` error, audited.
            let result = catch_panic(primitive, self.dispatch(pid, &call, &mut scope)).await;
            if let Some(slot) = &mut journal {
                // An intent taken at the effect point was written.
                slot.intent_written |=
                    call.intent_timing() == IntentTiming::AtEffect && scope.intent.is_none();
            }
            self.finish(pid, &call, scope, result, journal).await
        };
        // Anywhere else (the gate, the journal, the audit record itself): still only this call.
        catch_panic(primitive, serve.instrument(span)).await
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
                        && !matches!(call, Syscall::Proc(ProcCall::Exit { .. }))
                    {
                        return Err(SyscallError::limit(
                            "wall_time",
                            format!(
                                "process {pid} ran {elapsed} ms of its {} ms",
                                proc.budget.wall_time_ms
                            ),
                        ));
                    }
                    // A refused call uses nothing, so the stored count never passes the budget.
                    if proc.usage.syscalls >= proc.budget.syscalls {
                        return Err(SyscallError::limit(
                            "syscalls",
                            format!(
                                "process {pid} used its budget of {} syscalls",
                                proc.budget.syscalls
                            ),
                        ));
                    }
                    proc.usage.syscalls += 1;
                    return Ok(());
                }
                state.changes_of(pid).subscribe()
            };
            if rx.changed().await.is_err() {
                return Err(SyscallError::internal("process change channel closed"));
            }
        }
    }

    /// Hands the call to its family's handler; each matches its own enum exhaustively.
    async fn dispatch(&self, pid: Pid, call: &Syscall, scope: &mut Scope) -> SysResult<Done> {
        match call {
            Syscall::Fs(call) => self.fs_call(pid, call, scope).await,
            Syscall::Proc(call) => self.proc_call(pid, call, scope).await,
            Syscall::Event(call) => self.event_call(pid, call, scope).await,
            Syscall::Mem(call) => self.mem_call(pid, call, scope).await,
            Syscall::Clock(call) => self.clock_call(pid, call).await,
            Syscall::Shell(call) => self.shell_call(pid, call, scope).await,
            Syscall::Net(call) => self.net_call(pid, call, scope).await,
            Syscall::Human(call) => self.human_call(pid, call, scope).await,
            Syscall::Cap(call) => self.cap_call(pid, call, scope).await,
            Syscall::Image(call) => self.image_call(pid, call, scope).await,
            Syscall::Tool(call) => self.tool_call(pid, call, scope).await,
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
        journal: Option<Slot>,
    ) -> SysResult<Value> {
        let now = self.now();
        let journal_row = |outcome: Value| {
            journal.as_ref().map(|slot| {
                let row = JournalRow::done(
                    slot.invocation.clone(),
                    slot.seq,
                    call.name().to_string(),
                    slot.hash.clone(),
                    outcome,
                );
                if call.is_effect() {
                    row
                } else {
                    row.as_read()
                }
            })
        };
        let span = tracing::Span::current();
        match result {
            Ok(mut done) => {
                span.record("decision", Decision::Allow.as_str());
                let mut consumed = WriteBatch::default();
                if !scope.once.is_empty() {
                    let mut state = self.inner.state.lock();
                    for id in &scope.once {
                        state.reserved_once.remove(id);
                        if let Some(cap) = state.find_cap_mut(*id) {
                            super::persist::consume_cap(
                                &mut consumed,
                                cap,
                                self.inner.store.sealer(),
                            );
                            // Used up at once (fail closed), before the commit.
                            cap.consumed = true;
                        }
                    }
                    done.batch.stmts.extend(consumed.stmts.iter().cloned());
                }
                let entry = AuditEntry {
                    ts: now,
                    actor: format!("pid:{pid}"),
                    action: call.name().to_string(),
                    target: done.target.clone(),
                    decision: Decision::Allow,
                    capability_refs: scope.caps.clone(),
                    correlation_id: scope.correlation.clone(),
                    parent_seq: scope.parent_seq,
                    detail: json!({"request": call.audit_summary(), "result": done.detail}),
                };
                let on_commit = done.on_commit.take();
                let mut batch = done.batch.audit(entry.clone());
                let mut read_row = None;
                if let Some(row) = journal_row(json!({"ok": done.value})) {
                    if call.is_effect() {
                        // An effect records its invocation (and the reads before it) with
                        // its outcome, if no intent did already.
                        self.record_invocation(&row.invocation_id, &mut batch);
                        self.fence_journal(&row.invocation_id, &mut batch);
                        batch = batch.journal(row);
                    } else {
                        read_row = Some(row);
                    }
                }
                // Effects, state changes and one-shot grants are acknowledged only once
                // durable; so is a read while the store is failing (it must not outrun its
                // record).
                let wait = call.is_effect()
                    || !batch.stmts.is_empty()
                    || !scope.once.is_empty()
                    || !self.inner.store.healthy();
                // The count rides in the same transaction as the audit record; it does not
                // by itself make a read wait for the commit.
                self.record_usage(pid, &mut batch);
                if !wait {
                    self.inner
                        .store
                        .submit(batch)
                        .await
                        .map_err(|e| SyscallError::Internal(format!("store: {e}")))?;
                } else if let Err(e) = self.inner.store.commit(batch).await {
                    return Err(self.commit_failed(call, entry, consumed, e).await);
                }
                // Queued before the tool sees the result (see `journal.rs`).
                if let Some(row) = read_row {
                    let invocation = row.invocation_id.clone();
                    self.journal_read(&invocation, row).await;
                }
                // In-memory effects of the call (a published tool) follow its commit.
                if let Some(apply) = on_commit {
                    apply();
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
                    SyscallError::PermissionDenied { .. } => Decision::Deny,
                    SyscallError::HumanRejected(_) => Decision::Rejected,
                    SyscallError::HumanRequired { .. } => Decision::Ask,
                    _ => Decision::Error,
                };
                span.record("decision", decision.as_str());
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
                    decision,
                    capability_refs: scope.caps,
                    correlation_id: scope.correlation,
                    parent_seq: scope.parent_seq,
                    detail: json!({"request": call.audit_summary(), "error": err.to_wire()}),
                };
                let mut batch = WriteBatch::default().audit(entry);
                self.record_usage(pid, &mut batch);
                let retryable = matches!(
                    err,
                    SyscallError::HumanRequired { .. }
                        | SyscallError::Cancelled(_)
                        | SyscallError::Internal(_)
                );
                // A failure a replay would meet again is journaled as one to run again, so
                // its place stays taken; one after a journaled intent leaves the intent (a
                // replay asks a human).
                let row = match (&journal, retryable) {
                    (Some(slot), true) if !slot.intent_written => Some(JournalRow::retry(
                        slot.invocation.clone(),
                        slot.seq,
                        call.name().to_string(),
                        slot.hash.clone(),
                    )),
                    (_, true) => None,
                    (_, false) => journal_row(json!({"err": err.to_wire()})),
                };
                if let Err(e) = self.inner.store.submit(batch).await {
                    tracing::error!(%e, "the audit record of a failed call was not queued");
                }
                if let Some(row) = row {
                    let invocation = row.invocation_id.clone();
                    self.journal_read(&invocation, row).await;
                }
                Err(err)
            }
        }
    }
}

impl Kernel {
    /// A successful call whose final commit failed. What its batch changed in the store did
    /// not happen; but an effect outside the runtime (a file written, a command run, a
    /// request sent) or one committed in steps before (a process spawned, a grant) did: its
    /// record is queued again (kept until the store takes it, with the one-shot grants it
    /// used up) and the caller learns that the outcome is uncertain — never a success. Its
    /// journal keeps the intent without an outcome, so a resumed invocation asks a human
    /// before repeating it.
    async fn commit_failed(
        &self,
        call: &Syscall,
        entry: AuditEntry,
        consumed: WriteBatch,
        err: crate::store::CommitError,
    ) -> SyscallError {
        let external = call.intent_timing() != IntentTiming::Never;
        let mut entry = entry;
        if !external {
            entry.decision = Decision::Error;
        }
        entry.detail["commit"] = json!(format!("failed, recorded later: {err}"));
        let record = if external {
            consumed.audit(entry)
        } else {
            WriteBatch::default().audit(entry)
        };
        if let Err(e) = self.inner.store.submit(record).await {
            tracing::error!(%e, "queueing the record of a call whose commit failed");
        }
        if external {
            SyscallError::Uncertain(format!(
                "{} was carried out, but its record could not be committed ({err}); it is recorded when the store recovers — check its effect before repeating it",
                call.name()
            ))
        } else {
            SyscallError::Internal(format!("store: {err}; nothing was changed"))
        }
    }

    /// Called by handlers of external effects after every check and approval, right before
    /// the provider acts: makes the journal intent durable (once).
    pub(crate) async fn intent_point(
        &self,
        call: &dyn Primitive,
        scope: &mut Scope,
    ) -> SysResult<()> {
        if let Some((inv, seq, hash)) = scope.intent.take() {
            self.journal_intent(&inv, seq, call, &hash).await?;
        }
        Ok(())
    }

    /// A syscall answered from the journal on replay: audited, not run.
    async fn replayed(
        &self,
        pid: Pid,
        call: &Syscall,
        invocation: &str,
        result: SysResult<Value>,
    ) -> SysResult<Value> {
        tracing::Span::current().record("decision", Decision::Replay.as_str());
        let entry = AuditEntry {
            ts: self.now(),
            actor: format!("pid:{pid}"),
            action: call.name().to_string(),
            target: target_hint(call),
            decision: Decision::Replay,
            capability_refs: vec![],
            correlation_id: Some(invocation.to_string()),
            parent_seq: None,
            detail: json!({"request": call.audit_summary(), "replayed": result.is_ok()}),
        };
        let mut batch = WriteBatch::default().audit(entry);
        self.record_usage(pid, &mut batch);
        self.inner
            .store
            .submit(batch)
            .await
            .map_err(|e| SyscallError::Internal(format!("store: {e}")))?;
        result
    }

    /// Makes `batch` commit only while this host holds the lease of `invocation`.
    fn fence_journal(&self, invocation: &str, batch: &mut WriteBatch) {
        if let Some(epoch) = self.invocation_epoch(invocation) {
            self.push_fence(invocation, epoch, batch);
        }
    }

    /// Adds `pid`'s syscall count to `batch`, so usage is durable with the audit record (or
    /// the journal intent) of the call that consumed it and a restart continues from it.
    pub(crate) fn record_usage(&self, pid: Pid, batch: &mut WriteBatch) {
        let used = self
            .inner
            .state
            .lock()
            .procs
            .get(&pid)
            .map(|p| p.usage.syscalls);
        if let Some(used) = used {
            super::persist::record_syscalls_used(batch, pid, used);
        }
    }
}

/// The resource a call is about, for audit records of failed calls.
fn target_hint(call: &Syscall) -> String {
    match call {
        Syscall::Fs(
            FsCall::ReadText { path }
            | FsCall::ReadBytes { path }
            | FsCall::WriteText { path, .. }
            | FsCall::AppendText { path, .. }
            | FsCall::List { path }
            | FsCall::Mkdir { path, .. }
            | FsCall::DeleteFile { path }
            | FsCall::DeleteDir { path, .. },
        )
        | Syscall::Proc(ProcCall::Chdir { path }) => format!("fs:{path}"),
        Syscall::Shell(ShellCall::Run { argv, .. }) => {
            format!("shell:{}", argv.first().map(String::as_str).unwrap_or(""))
        }
        Syscall::Net(NetCall::Fetch { url, .. }) => format!("net:{url}"),
        Syscall::Mem(
            MemCall::Read { id } | MemCall::Append { id, .. } | MemCall::ToFile { id, .. },
        ) => {
            format!("object:{id}")
        }
        Syscall::Proc(ProcCall::Wait { pid, .. } | ProcCall::Signal { pid, .. }) => {
            format!("process:{pid}")
        }
        Syscall::Proc(ProcCall::Spawn { image, .. } | ProcCall::Exec { image }) => {
            format!("image:{image}")
        }
        Syscall::Tool(JitCall::Call { name, .. }) => format!("tool:{name}"),
        _ => call.name().to_string(),
    }
}
