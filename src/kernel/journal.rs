//! The exactly-once syscall journal of tool invocations.
//!
//! Every tool invocation has an id; every syscall it makes — reads included — gets the next
//! ordinal and a journal row: the primitive, the SHA-256 of its resolved arguments, and its
//! outcome. An effect's *intent* is durable before the effect runs, and its outcome is
//! durable with its audit record before the tool sees it. Reads cost no commit: before the
//! invocation's first effect they are held in memory (a tool that only reads writes no
//! journal at all) and written in the same transaction as that effect's intent; after it,
//! each read's row is queued to the store's writer without waiting. The writer is one task
//! that commits batches in the order they were queued (a batch kept from a failed group is
//! written before anything queued after it; `store/writer.rs`), and a read's row is queued
//! before the tool sees its result — so it is durable before the intent of any effect the
//! tool makes after seeing it.
//!
//! On resume, an interrupted invocation runs again in a fresh isolate with the same
//! arguments, start time and random seed, and each syscall is matched by its ordinal *and*
//! its primitive and arguments hash. A match returns the recorded outcome without running
//! again. Anything else is a *divergence*, never a fresh execution: (a) another call at a
//! recorded ordinal; (b) an effect at an ordinal the journal lacks while it records calls
//! after it; (c) a replay that ends before reaching an effect the journal records. The
//! invocation stops with `NonDeterminism` and is parked on a human request of kind
//! `diverged`: approving runs it again from the start without its journal (its effects may
//! happen again), rejecting fails it. An effect whose intent was journaled but whose
//! outcome was not is *uncertain* (the host died during it): a human is asked, and only an
//! approval repeats it. A read whose outcome was too large to journal runs again, and a
//! result whose hash differs from the recorded one is a divergence too.

use std::collections::{BTreeMap, HashMap};

use parking_lot::Mutex;
use serde_json::{json, Value};
use sqlx::Row;

use super::capability::Pid;
use super::error::{SysResult, SyscallError, WireError};
use super::syscall::{JitCall, Primitive, Syscall};
use super::Kernel;
use crate::store::{JournalRow, WriteBatch};

/// What a journal row records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RowKind {
    /// An effect that started; its outcome was not recorded.
    Intent,
    /// An effect's outcome (rows written before reads had their own status say `done` too).
    Effect,
    /// A read's outcome.
    Read,
    /// A call that failed in a way a replay makes again: it runs again.
    Retry,
}

/// A journal row as read back for replay.
#[derive(Debug, Clone)]
pub(crate) struct Recorded {
    pub primitive: String,
    pub args_hash: String,
    pub kind: RowKind,
    pub outcome: Option<Value>,
}

impl Recorded {
    fn is_effect(&self) -> bool {
        matches!(self.kind, RowKind::Intent | RowKind::Effect)
    }

    /// The SHA-256 of an outcome too large to journal, if this row's outcome is one.
    fn omitted(&self) -> Option<String> {
        let outcome = self.outcome.as_ref()?;
        (outcome["omitted"] == true).then(|| outcome["sha256"].as_str().unwrap_or("").to_string())
    }
}

/// Where a replay left its journal.
#[derive(Debug, Clone)]
pub(crate) struct Divergence {
    pub seq: i64,
    /// The primitive the journal records there (empty: none).
    pub recorded: String,
    /// The primitive the tool called there (empty: the tool ended).
    pub called: String,
    pub why: String,
}

/// An invocation in progress.
pub(crate) struct Invocation {
    pub pid: Pid,
    pub tool: String,
    pub args: Value,
    /// SHA-256 of the call it runs (a `tool.call`'s, or a keyed call's).
    pub args_hash: String,
    pub start_time: i64,
    pub seed: u64,
    pub next_seq: i64,
    /// Whether the invocation row is written (or queued).
    pub recorded: bool,
    /// Rows of an earlier run, by ordinal (empty for a first run).
    pub replay: BTreeMap<i64, Recorded>,
    /// The epoch of this host's lease on the invocation (1 for a first run).
    pub epoch: i64,
    /// Rows of reads made before the invocation recorded anything: written with its first
    /// record, dropped if it never makes one.
    pub pending: Vec<JournalRow>,
    /// Set once a replay left its journal: every later syscall fails.
    pub diverged: Option<Divergence>,
    /// Whether its first run started in an isolate that had served earlier calls.
    pub carried: bool,
}

impl Invocation {
    /// A first run of `tool` (empty for a keyed syscall) for `pid`.
    pub(crate) fn new(pid: Pid, tool: &str, args: Value, args_hash: String) -> Invocation {
        Invocation {
            pid,
            tool: tool.to_string(),
            args,
            args_hash,
            start_time: 0,
            seed: 0,
            next_seq: 0,
            recorded: false,
            replay: BTreeMap::new(),
            epoch: 1,
            pending: Vec::new(),
            diverged: None,
            carried: false,
        }
    }
}

/// An invocation id chosen by the caller (an idempotency key), with what an earlier run of
/// it left: its journal, whether its row exists, and its start time and seed.
pub(crate) struct Keyed {
    pub id: String,
    pub replay: BTreeMap<i64, Recorded>,
    pub recorded: bool,
    pub start_seed: Option<(i64, u64)>,
    /// The epoch of this host's lease.
    pub epoch: i64,
    /// Whether its first run started in an isolate that had served earlier calls.
    pub carried: bool,
}

/// What the journal says about the next syscall of an invocation.
pub(crate) enum Step {
    /// Not journaled before (or journaled to run again): run it and journal it.
    Fresh { seq: i64, hash: String },
    /// Journaled with an outcome: return it without running.
    Replay(SysResult<Value>),
    /// A read journaled with an outcome too large to keep: run it again; its outcome must
    /// hash to `sha256`.
    Reread { seq: i64, sha256: String },
    /// Intent journaled, outcome lost: ask before repeating.
    Uncertain { seq: i64, hash: String },
}

#[derive(Default)]
pub(crate) struct Invocations {
    pub live: Mutex<HashMap<String, Invocation>>,
}

pub(crate) fn outcome_json(result: &SysResult<Value>) -> Value {
    match result {
        Ok(v) => json!({"ok": v}),
        Err(e) => json!({"err": e.to_wire()}),
    }
}

pub(crate) fn outcome_result(outcome: &Value) -> SysResult<Value> {
    if let Some(v) = outcome.get("ok") {
        return Ok(v.clone());
    }
    match outcome
        .get("err")
        .cloned()
        .map(serde_json::from_value::<WireError>)
    {
        Some(Ok(wire)) => Err(SyscallError::from_wire(&wire)),
        _ => Err(SyscallError::internal(format!(
            "unreadable journal outcome {outcome}"
        ))),
    }
}

/// Retention: a finished invocation keeps its outcome (a keyed call's answer) but not its
/// journal, nor its arguments; a blob goes with the last row that refers to it.
pub(crate) fn forget_journal(batch: &mut WriteBatch, id: &str) {
    discard_journal(batch, id);
    batch.push(
        "UPDATE invocations SET args = 'null' WHERE id = ?",
        vec![id.into()],
    );
}

/// Deletes the journal rows of invocation `id` (and the blobs only they refer to).
pub(crate) fn discard_journal(batch: &mut WriteBatch, id: &str) {
    batch.push(
        "DELETE FROM journal_blobs WHERE sha256 IN \
           (SELECT blob FROM journal WHERE invocation_id = ?1 AND blob IS NOT NULL) \
         AND NOT EXISTS (SELECT 1 FROM journal j WHERE j.blob = journal_blobs.sha256 \
           AND j.invocation_id <> ?1)",
        vec![id.into()],
    );
    batch.push(
        "DELETE FROM journal WHERE invocation_id = ?",
        vec![id.into()],
    );
}

/// A journal row still held in memory, as a replay reads it.
fn recorded_from(row: &JournalRow) -> Recorded {
    let kind = match row.status {
        "read" => RowKind::Read,
        "retry" => RowKind::Retry,
        "intent" => RowKind::Intent,
        _ => RowKind::Effect,
    };
    let outcome = match &row.blob {
        Some(blob) => serde_json::from_str(&blob.data).ok(),
        None => row.outcome.clone(),
    };
    Recorded {
        primitive: row.primitive.clone(),
        args_hash: row.args_hash.clone(),
        kind,
        outcome,
    }
}

/// Marks `inv` as having left its journal and returns the error its syscall gets.
fn diverge(inv: &mut Invocation, id: &str, divergence: Divergence) -> SyscallError {
    let error = SyscallError::NonDeterminism {
        detail: format!(
            "invocation {id}, syscall #{}: {}",
            divergence.seq, divergence.why
        ),
        request_id: None,
    };
    inv.diverged = Some(divergence);
    error
}

/// Forgets a live invocation if its caller is dropped mid-flight (the journal in the store
/// is what a later retry or `resume` works from).
pub(crate) struct LiveGuard {
    kernel: Kernel,
    id: String,
}

impl Drop for LiveGuard {
    fn drop(&mut self) {
        self.kernel.inner.invocations.live.lock().remove(&self.id);
    }
}

impl Kernel {
    /// Starts tracking an invocation (first run, or a replay with `replay` rows). Keep the
    /// guard alive until the invocation ends.
    #[must_use = "dropping the guard forgets the invocation"]
    pub(crate) fn begin_invocation(&self, id: &str, inv: Invocation) -> LiveGuard {
        self.inner
            .invocations
            .live
            .lock()
            .insert(id.to_string(), inv);
        LiveGuard {
            kernel: self.clone(),
            id: id.to_string(),
        }
    }

    /// Whether the next syscall of live invocation `id` of `pid` is `call` exactly as the
    /// journal recorded it at that ordinal (it will be answered from the journal, or settled
    /// by a human if only its intent was recorded).
    pub(crate) fn journal_recorded(&self, pid: Pid, id: &str, call: &Syscall) -> bool {
        let live = self.inner.invocations.live.lock();
        let Some(inv) = live.get(id).filter(|inv| inv.pid == pid) else {
            return false;
        };
        inv.diverged.is_none()
            && inv.replay.get(&inv.next_seq).is_some_and(|rec| {
                rec.primitive == call.name() && rec.args_hash == call.args_hash()
            })
    }

    /// The step for the next syscall of invocation `id`, or `None` if `id` is not a live
    /// invocation of `pid`. The call is matched by its ordinal, primitive and arguments hash.
    pub(crate) fn journal_step(
        &self,
        pid: Pid,
        id: &str,
        call: &Syscall,
    ) -> Option<SysResult<Step>> {
        let mut live = self.inner.invocations.live.lock();
        let inv = live.get_mut(id).filter(|inv| inv.pid == pid)?;
        if let Some(earlier) = &inv.diverged {
            return Some(Err(SyscallError::NonDeterminism {
                detail: format!(
                    "invocation {id} left its journal at syscall #{}; it makes no further \
                     syscall until a human decides",
                    earlier.seq
                ),
                request_id: None,
            }));
        }
        let seq = inv.next_seq;
        inv.next_seq += 1;
        let hash = call.args_hash();
        let called = call.name();
        let Some(rec) = inv.replay.get(&seq).cloned() else {
            // (b) An effect where the journal has nothing, while it records calls after: the
            // first run took another path, and this effect could repeat one of its effects.
            let later = inv.replay.range(seq + 1..).next();
            if let (true, Some((at, later))) = (call.is_effect(), later) {
                let divergence = Divergence {
                    seq,
                    recorded: later.primitive.clone(),
                    called: called.to_string(),
                    why: format!(
                        "the tool now calls {called}, an effect, where the journal records \
                         nothing, but it records {} at #{at}: the first run took another path",
                        later.primitive
                    ),
                };
                return Some(Err(diverge(inv, id, divergence)));
            }
            return Some(Ok(Step::Fresh { seq, hash }));
        };
        // (a) Another call at a recorded ordinal.
        if rec.primitive != called || rec.args_hash != hash {
            let why = if rec.primitive != called {
                format!(
                    "the journal records {} here, but the tool now calls {called}",
                    rec.primitive
                )
            } else {
                format!(
                    "the journal records {} here with other arguments than the tool now gives it",
                    rec.primitive
                )
            };
            let divergence = Divergence {
                seq,
                recorded: rec.primitive.clone(),
                called: called.to_string(),
                why,
            };
            return Some(Err(diverge(inv, id, divergence)));
        }
        let step = match (rec.kind, rec.omitted()) {
            (RowKind::Retry, _) => Step::Fresh { seq, hash },
            (RowKind::Intent, _) => Step::Uncertain { seq, hash },
            // An outcome too large to journal: a read is made again (and must read the same);
            // an effect is never repeated, and its outcome cannot be given.
            (_, Some(sha256)) if !call.is_effect() => Step::Reread { seq, sha256 },
            (_, Some(_)) => Step::Replay(Err(SyscallError::limit(
                "journal_bytes",
                format!(
                    "invocation {id}, syscall #{seq}: its outcome was too large to journal \
                     (over {} bytes), so a replay cannot return it; the effect is not repeated",
                    crate::store::writer::JOURNAL_OUTCOME_MAX
                ),
            ))),
            (RowKind::Effect | RowKind::Read, None) => Step::Replay(
                rec.outcome
                    .as_ref()
                    .map(outcome_result)
                    .unwrap_or(Ok(Value::Null)),
            ),
        };
        Some(Ok(step))
    }

    /// A read re-made on replay (its outcome was too large to journal) whose outcome now
    /// hashes differently: the invocation leaves its journal at `seq`.
    pub(crate) fn diverge_on_reread(&self, id: &str, seq: i64, call: &Syscall) -> SyscallError {
        let divergence = Divergence {
            seq,
            recorded: call.name().to_string(),
            called: call.name().to_string(),
            why: format!(
                "{} was too large to journal and reads differently now than in the first run",
                call.name()
            ),
        };
        match self.inner.invocations.live.lock().get_mut(id) {
            Some(inv) => diverge(inv, id, divergence),
            None => SyscallError::NonDeterminism {
                detail: divergence.why,
                request_id: None,
            },
        }
    }

    /// Journals the row of a read (or of a failed call) of live invocation `id`: held in
    /// memory until the invocation records anything, then queued without waiting (see the
    /// module doc for why it is durable before any later intent).
    pub(crate) async fn journal_read(&self, id: &str, row: JournalRow) {
        let epoch = {
            let mut live = self.inner.invocations.live.lock();
            let Some(inv) = live.get_mut(id) else { return };
            if !inv.recorded {
                inv.pending.push(row);
                return;
            }
            inv.epoch
        };
        let mut batch = WriteBatch::default();
        // Its own batch: a stale lease refuses the journal row, never the audit record.
        self.push_fence(id, epoch, &mut batch);
        if let Err(e) = self.inner.store.submit(batch.journal(row)).await {
            tracing::error!(%e, invocation = id, "queueing a journal row");
        }
    }

    /// Makes an effect's intent durable before the effect (with the invocation row, the
    /// first time).
    pub(crate) async fn journal_intent(
        &self,
        id: &str,
        seq: i64,
        call: &dyn Primitive,
        hash: &str,
    ) -> SysResult<()> {
        let mut batch = WriteBatch::default();
        self.record_invocation(id, &mut batch);
        let live = self
            .inner
            .invocations
            .live
            .lock()
            .get(id)
            .map(|inv| (inv.pid, inv.epoch));
        if let Some((pid, epoch)) = live {
            self.record_usage(pid, &mut batch);
            self.push_fence(id, epoch, &mut batch);
        }
        let batch = batch.journal(JournalRow {
            invocation_id: id.to_string(),
            seq,
            primitive: call.name().to_string(),
            args_hash: hash.to_string(),
            status: "intent",
            outcome: None,
            blob: None,
        });
        self.inner.store.commit(batch).await.map_err(|e| {
            let message = e.to_string();
            if super::lease::is_stale(&message) {
                super::lease::stale_error(id)
            } else {
                SyscallError::Internal(format!("store: {message}"))
            }
        })?;
        Ok(())
    }

    /// Adds the invocation row to `batch` if it was not written yet, with the rows of the
    /// reads it made so far.
    pub(crate) fn record_invocation(&self, id: &str, batch: &mut WriteBatch) {
        let mut live = self.inner.invocations.live.lock();
        let Some(inv) = live.get_mut(id) else { return };
        if !inv.recorded {
            self.push_record(id, inv, batch);
        }
    }

    /// Records `inv` in `batch`: its row and lease, and its pending read rows (fenced).
    fn push_record(&self, id: &str, inv: &mut Invocation, batch: &mut WriteBatch) {
        inv.recorded = true;
        self.push_invocation_row(id, inv, batch);
        if !inv.pending.is_empty() {
            self.push_fence(id, inv.epoch, batch);
            batch.journal.append(&mut inv.pending);
        }
    }

    /// The epoch of this host's lease on live invocation `id`.
    pub(crate) fn invocation_epoch(&self, id: &str) -> Option<i64> {
        self.inner
            .invocations
            .live
            .lock()
            .get(id)
            .map(|inv| inv.epoch)
    }

    fn push_invocation_row(&self, id: &str, inv: &Invocation, batch: &mut WriteBatch) {
        self.push_lease(id, batch);
        batch.push(
            "INSERT INTO invocations (id, pid, tool, args, start_time, seed, status, created_at, args_hash, carried) \
             VALUES (?, ?, ?, ?, ?, ?, 'running', ?, ?, ?) ON CONFLICT (id) DO NOTHING",
            vec![
                id.into(),
                inv.pid.into(),
                inv.tool.clone().into(),
                inv.args.to_string().into(),
                inv.start_time.into(),
                inv.seed.to_string().into(),
                self.now().into(),
                inv.args_hash.clone().into(),
                inv.carried.into(),
            ],
        );
    }

    /// Ends an invocation: its final status and outcome (if it recorded anything). A replay
    /// that left its journal — or ends before reaching an effect its journal records —
    /// ends with `NonDeterminism`, parked on a human request, its journal kept.
    pub(crate) async fn end_invocation(
        &self,
        id: &str,
        result: SysResult<Value>,
    ) -> SysResult<Value> {
        let Some(mut inv) = self.inner.invocations.live.lock().remove(id) else {
            return result;
        };
        let mut result = result;
        // (c) Parked on a human or stopped, a replay has not ended; otherwise every effect
        // the journal records must have been reached.
        let alive = self
            .process(inv.pid)
            .is_some_and(|p| !p.status.is_terminal());
        let settled = !matches!(
            result,
            Err(SyscallError::HumanRequired { .. } | SyscallError::Cancelled(_))
        );
        if alive && settled && inv.diverged.is_none() {
            let unreached = inv
                .replay
                .range(inv.next_seq..)
                .find(|(_, rec)| rec.is_effect())
                .map(|(seq, rec)| (*seq, rec.primitive.clone()));
            if let Some((seq, recorded)) = unreached {
                inv.diverged = Some(Divergence {
                    seq,
                    why: format!(
                        "the tool ended after {} syscalls, but the journal records {recorded} \
                         at #{seq}: the first run made an effect this run never reached",
                        inv.next_seq
                    ),
                    recorded,
                    called: String::new(),
                });
            }
        }
        // A process that ended has no one to resume it: the invocation just fails.
        if let (true, Some(divergence)) = (alive, inv.diverged.clone()) {
            result = Err(self.park_divergence(id, &inv, &divergence).await);
        }
        let status = match &result {
            _ if alive && inv.diverged.is_some() => "waiting_human",
            Ok(_) => "done",
            Err(SyscallError::HumanRequired { .. }) => "waiting_human",
            Err(_) => "failed",
        };
        if !inv.recorded && status != "waiting_human" {
            return result;
        }
        let mut batch = WriteBatch::default();
        if !inv.recorded {
            self.push_record(id, &mut inv, &mut batch);
        }
        self.push_fence(id, inv.epoch, &mut batch);
        batch.push(
            "UPDATE invocations SET status = ?, outcome = ?, finished_at = ? WHERE id = ?",
            vec![
                status.into(),
                outcome_json(&result).to_string().into(),
                self.now().into(),
                id.into(),
            ],
        );
        // Behind the fence: a host that lost the lease deletes nothing either.
        if status != "waiting_human" {
            forget_journal(&mut batch, id);
        }
        // A waiting invocation must be findable by `resume` even if the host dies now, and
        // no host runs it until a human answers: its lease is released.
        if status == "waiting_human" {
            self.push_lease_release(id, inv.epoch, &mut batch);
            if let Err(e) = self.inner.store.commit(batch).await {
                tracing::error!(%e, "recording a waiting invocation");
            }
        } else if let Err(e) = self.inner.store.submit(batch).await {
            tracing::error!(%e, "recording an invocation's outcome");
        }
        result
    }

    /// Raises the human request a divergence waits on; returns the invocation's error.
    async fn park_divergence(
        &self,
        id: &str,
        inv: &Invocation,
        divergence: &Divergence,
    ) -> SyscallError {
        let carried = if inv.carried {
            "; its first run started in an isolate that had served earlier calls of the \
             process, and values kept in globals between calls are not replayed"
        } else {
            ""
        };
        let detail = format!(
            "invocation {id}, syscall #{}: {}{carried}",
            divergence.seq, divergence.why
        );
        let payload = json!({
            "invocation": id,
            "tool": inv.tool,
            "seq": divergence.seq,
            "recorded": divergence.recorded,
            "called": divergence.called,
            "why": divergence.why,
            "carried": inv.carried,
            "approve": "run the invocation again from the start, in a fresh isolate and \
                        without its journal: effects its first run made (or may have made) \
                        can happen again",
            "reject": "fail the invocation; nothing of it runs again",
        });
        match self.raise_divergence(inv.pid, id, payload).await {
            Ok(request) => SyscallError::NonDeterminism {
                detail: format!(
                    "{detail}. It waits on request {request}: approve it to run the invocation \
                     again from the start without its journal (its effects may happen again), \
                     or reject it to fail the invocation (`agent-libos human approve|reject \
                     {request}`, then `agent-libos resume`)"
                ),
                request_id: Some(request),
            },
            Err(e) => SyscallError::NonDeterminism {
                detail: format!(
                    "{detail}. No human request could be raised ({e}); `agent-libos resume` \
                     tries again"
                ),
                request_id: None,
            },
        }
    }

    /// Live invocation `id` will not run: there is no end of a replay to hold against its
    /// journal (which stays in the store).
    pub(crate) fn not_replayed(&self, id: &str) {
        if let Some(inv) = self.inner.invocations.live.lock().get_mut(id) {
            inv.replay.clear();
        }
    }

    /// Before a replay of invocation `id`: if an earlier replay diverged, gets the human's
    /// decision. Approved, the journal is discarded (in the store and in the live
    /// invocation) and the invocation runs from the start; rejected, it fails.
    pub(crate) async fn settle_divergence(&self, pid: Pid, id: &str) -> SysResult<()> {
        let request = match self.confirm_divergence(pid, id).await {
            Ok(Some(request)) => request,
            Ok(None) => return Ok(()),
            Err(e) => {
                self.not_replayed(id);
                return Err(e);
            }
        };
        let epoch = self.invocation_epoch(id).unwrap_or(1);
        let mut batch = WriteBatch::default();
        self.push_fence(id, epoch, &mut batch);
        discard_journal(&mut batch, id);
        let batch = batch.audit(crate::audit::AuditEntry {
            ts: self.now(),
            actor: format!("pid:{pid}"),
            action: "invocation.restart".into(),
            target: format!("invocation:{id}"),
            decision: crate::audit::Decision::Approved,
            capability_refs: vec![],
            correlation_id: Some(request.clone()),
            parent_seq: None,
            detail: json!({"request": request, "journal": "discarded"}),
        });
        self.inner.store.commit(batch).await.map_err(|e| {
            let message = e.to_string();
            if super::lease::is_stale(&message) {
                super::lease::stale_error(id)
            } else {
                SyscallError::Internal(format!("store: {message}"))
            }
        })?;
        if let Some(inv) = self.inner.invocations.live.lock().get_mut(id) {
            inv.replay.clear();
        }
        Ok(())
    }

    /// Runs `call` for `pid` at most once per `key`, across restarts: a call whose outcome
    /// was recorded under `key` returns it without running again; one that was interrupted
    /// runs again from its journal (like `resume`); otherwise it runs now, journaled under
    /// `key`. The agent loop keys each model tool call by its place in the transcript, so a
    /// resumed conversation never repeats an effect. Keys are letters, digits, `_`, `-`, `.`.
    ///
    /// A key names one call: reused for a call with other arguments it fails with
    /// `NonDeterminism` instead of returning the first call's outcome. Keys are scoped to the
    /// process's rollback generation: after a checkpoint rollback the same key is a new
    /// call, so nothing recorded before the rollback is handed out.
    pub async fn syscall_once(&self, pid: Pid, key: &str, call: Syscall) -> SysResult<Value> {
        let primitive = call.name();
        // On the heap: the call's future is large, and callers await it inside their own.
        let call = Box::pin(self.syscall_once_unguarded(pid, key, call));
        super::unwind::catch_panic(primitive, call).await
    }

    async fn syscall_once_unguarded(&self, pid: Pid, key: &str, call: Syscall) -> SysResult<Value> {
        let key_ok = !key.is_empty()
            && key.len() <= 128
            && key
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "_-.".contains(c));
        if !key_ok {
            return Err(SyscallError::invalid(format!(
                "invocation key '{key}' must be 1-128 letters, digits, '_', '-' or '.'"
            )));
        }
        let generation = self
            .process(pid)
            .map(|p| p.generation)
            .ok_or_else(|| SyscallError::NotFound(format!("process {pid}")))?;
        // `@` is not a key character: a generation's ids cannot collide with a caller's key.
        let id = if generation == 0 {
            key.to_string()
        } else {
            format!("{key}@{generation}")
        };
        let key = id.as_str();
        let args_hash = call.args_hash();
        if self.inner.invocations.live.lock().contains_key(key) {
            return Err(SyscallError::IllegalState(format!(
                "invocation {key} is already running"
            )));
        }
        // Read what this host already decided: an earlier run's outcome may still be queued
        // in the writer (its journal rows are deleted in the same batch).
        self.inner
            .store
            .flush()
            .await
            .map_err(|e| SyscallError::Internal(e.to_string()))?;
        let mut epoch = 1;
        let row = loop {
            let row = sqlx::query(
                "SELECT pid, status, outcome, start_time, seed, args_hash, carried FROM invocations WHERE id = ?",
            )
            .bind(key)
            .fetch_optional(self.inner.store.pool())
            .await?;
            let open = match &row {
                Some(row) => {
                    let status: String = row.try_get("status")?;
                    status != "done" && status != "failed"
                }
                None => false,
            };
            if !open {
                break row;
            }
            // An unfinished invocation is taken over only once its owner's lease expired;
            // meanwhile the owner may finish it.
            match self.take_over(key).await? {
                Some(taken) => {
                    epoch = taken;
                    break row;
                }
                None => {
                    tokio::time::sleep(std::time::Duration::from_millis(super::lease::HEARTBEAT_MS))
                        .await
                }
            }
        };
        let mut start_seed = None;
        let mut carried = false;
        let recorded = row.is_some();
        if let Some(row) = row {
            let owner: Pid = row.try_get("pid")?;
            if owner != pid {
                return Err(SyscallError::denied_because(
                    format!("invocation:{key}"),
                    super::capability::Right::Execute,
                    "the invocation belongs to another process",
                ));
            }
            let recorded_hash: Option<String> = row.try_get("args_hash")?;
            if recorded_hash.is_some_and(|h| h != args_hash) {
                return Err(SyscallError::NonDeterminism {
                    detail: format!(
                        "invocation key {key} was used for another call ({} with other \
                         arguments); a key names one call",
                        call.name()
                    ),
                    request_id: None,
                });
            }
            let status: String = row.try_get("status")?;
            let outcome: Option<String> = row.try_get("outcome")?;
            if status == "done" || status == "failed" {
                let outcome: Value = outcome
                    .and_then(|o| serde_json::from_str(&o).ok())
                    .unwrap_or(Value::Null);
                return outcome_result(&outcome);
            }
            let seed: String = row.try_get("seed")?;
            start_seed = Some((row.try_get("start_time")?, seed.parse().unwrap_or(0)));
            carried = row.try_get::<i64, _>("carried")? != 0;
        }
        let replay = self.load_journal(key).await?;
        if let Syscall::Tool(JitCall::Call { .. }) = call {
            let keyed = Keyed {
                id: key.to_string(),
                replay,
                recorded,
                start_seed,
                epoch,
                carried,
            };
            let result = self.syscall_keyed(pid, call, keyed).await;
            // As below: the invocation's end is durable before the caller moves on, so a
            // call under the same key finds it finished (not running, with its journal
            // already deleted: that would run it again).
            if let Err(e) = self.inner.store.flush().await {
                return Err(SyscallError::Internal(format!("store: {e}")));
            }
            return result;
        }
        // Only what it was: the call itself (content, stdin, headers) is not kept.
        let mut inv = Invocation::new(pid, "", json!({"primitive": call.name()}), args_hash);
        inv.start_time = self.now();
        inv.recorded = recorded;
        inv.replay = replay;
        inv.epoch = epoch;
        let _live = self.begin_invocation(key, inv);
        // Record the invocation with its outcome, so a retry finds it even for calls that
        // needed no intent.
        let mut batch = WriteBatch::default();
        self.record_invocation(key, &mut batch);
        let result = self
            .syscall_correlated(pid, call, Some(key.to_string()))
            .await;
        if !batch.is_empty() {
            if let Err(e) = self.inner.store.submit(batch).await {
                tracing::error!(%e, "recording an invocation");
            }
        }
        let result = self.end_invocation(key, result).await;
        // The key's record is durable before the caller moves on, so the key cannot be
        // reused (even for a read) before it names its call.
        if let Err(e) = self.inner.store.flush().await {
            return Err(SyscallError::Internal(format!("store: {e}")));
        }
        result
    }

    /// Whether invocation `id` left anything in the store (its row, or an intent): a call
    /// under that key is settled from the journal rather than run as new.
    pub async fn invocation_recorded(&self, id: &str) -> SysResult<bool> {
        let found: Option<i64> = sqlx::query_scalar(
            "SELECT 1 FROM invocations WHERE id = ? \
             UNION ALL SELECT 1 FROM journal WHERE invocation_id = ? LIMIT 1",
        )
        .bind(id)
        .bind(id)
        .fetch_optional(self.inner.store.pool())
        .await?;
        Ok(found.is_some())
    }

    /// Rewinds live invocation `id` to run again from the start *in this host* (e.g. after
    /// the worker running it died): the journal a replay matches becomes what the store
    /// holds (after a flush) plus the read rows still held in memory, and the next syscall
    /// is ordinal 0 again; `run_invocation` then runs it in a fresh isolate. An invocation
    /// that already left its journal is not rewound.
    pub(crate) async fn rewind_invocation(&self, id: &str) -> SysResult<()> {
        self.inner
            .store
            .flush()
            .await
            .map_err(|e| SyscallError::Internal(format!("store: {e}")))?;
        let mut replay = self.load_journal(id).await?;
        let mut live = self.inner.invocations.live.lock();
        let inv = live
            .get_mut(id)
            .ok_or_else(|| SyscallError::NotFound(format!("live invocation {id}")))?;
        if let Some(divergence) = &inv.diverged {
            return Err(SyscallError::IllegalState(format!(
                "invocation {id} left its journal at syscall #{}; it is not run again without \
                 a human's decision",
                divergence.seq
            )));
        }
        for row in &inv.pending {
            replay.insert(row.seq, recorded_from(row));
        }
        inv.replay = replay;
        inv.next_seq = 0;
        Ok(())
    }

    /// Journal rows of an earlier run of `id`.
    pub(crate) async fn load_journal(&self, id: &str) -> SysResult<BTreeMap<i64, Recorded>> {
        let rows = sqlx::query(
            "SELECT j.seq, j.primitive, j.args_hash, j.status, COALESCE(b.data, j.outcome) AS outcome \
             FROM journal j LEFT JOIN journal_blobs b ON b.sha256 = j.blob WHERE j.invocation_id = ?",
        )
        .bind(id)
        .fetch_all(self.inner.store.pool())
        .await?;
        let mut out = BTreeMap::new();
        for row in rows {
            let outcome: Option<String> = row.try_get("outcome")?;
            let kind = match row.try_get::<String, _>("status")?.as_str() {
                "read" => RowKind::Read,
                "retry" => RowKind::Retry,
                "intent" => RowKind::Intent,
                // `done`, and anything unknown: an effect (never repeated).
                _ => RowKind::Effect,
            };
            out.insert(
                row.try_get::<i64, _>("seq")?,
                Recorded {
                    primitive: row.try_get("primitive")?,
                    args_hash: row.try_get("args_hash")?,
                    kind,
                    outcome: outcome.and_then(|o| serde_json::from_str(&o).ok()),
                },
            );
        }
        Ok(out)
    }
}

#[cfg(test)]
#[allow(clippy::disallowed_methods)]
mod tests {
    use super::*;
    use crate::kernel::{CapabilitySpec, FsCall, KernelConfig, SpawnOptions};

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_rewound_invocation_replays_what_its_first_run_saw_and_did() {
        let dir = tempfile::tempdir().unwrap();
        let ws = dir.path().join("ws");
        std::fs::create_dir_all(&ws).unwrap();
        std::fs::write(ws.join("a.txt"), "first").unwrap();
        let kernel = Kernel::open(KernelConfig::new(dir.path().join("state.db"), ws.clone()))
            .await
            .unwrap();
        let pid = kernel
            .spawn_root(SpawnOptions {
                goal: "rewind".into(),
                grants: vec![CapabilitySpec::parse_grant("fs:**=read,write").unwrap()],
                ..Default::default()
            })
            .await
            .unwrap();
        let read = || {
            Syscall::Fs(FsCall::ReadText {
                path: "a.txt".into(),
            })
        };
        let append = Syscall::Fs(FsCall::AppendText {
            path: "log.txt".into(),
            content: "x".into(),
        });
        let run = |call: Syscall| kernel.syscall_correlated(pid, call, Some("inv_r".into()));
        let _live = kernel.begin_invocation(
            "inv_r",
            Invocation::new(pid, "t", Value::Null, String::new()),
        );
        // A first run: a read held in memory; rewound before anything was written.
        assert_eq!(run(read()).await.unwrap(), "first");
        std::fs::write(ws.join("a.txt"), "second").unwrap();
        kernel.rewind_invocation("inv_r").await.unwrap();
        assert_eq!(run(read()).await.unwrap(), "first", "replayed from memory");
        // Then an effect (it writes the journal) and a read; rewound again.
        run(append.clone()).await.unwrap();
        assert_eq!(run(read()).await.unwrap(), "second");
        std::fs::write(ws.join("a.txt"), "third").unwrap();
        kernel.rewind_invocation("inv_r").await.unwrap();
        assert_eq!(run(read()).await.unwrap(), "first");
        run(append.clone()).await.unwrap();
        assert_eq!(run(read()).await.unwrap(), "second");
        assert_eq!(
            std::fs::read_to_string(ws.join("log.txt")).unwrap(),
            "x",
            "the effect was not repeated"
        );
        // Past the journal, calls run fresh.
        assert_eq!(run(read()).await.unwrap(), "third");
    }
}
