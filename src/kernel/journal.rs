//! The exactly-once syscall journal of tool invocations.
//!
//! Every tool invocation has an id; every syscall it makes gets the next sequence number.
//! An effect's *intent* (sequence, primitive, SHA-256 of its exact arguments) is durable
//! before the effect runs, and its *outcome* is durable with its audit record before the tool
//! sees it. Reads are journaled once the invocation has recorded anything (a tool that only
//! reads writes no journal at all).
//!
//! On resume, an interrupted invocation runs again in a fresh isolate with the same
//! arguments, start time and random seed. Each syscall at a journaled position returns its
//! recorded outcome without repeating the effect; one whose arguments differ fails the
//! invocation with `NonDeterminism`. An effect whose intent was journaled but whose outcome
//! was not is *uncertain* (the host died during it): it is not repeated silently — a human is
//! asked, and only an approval repeats it.

use std::collections::HashMap;

use parking_lot::Mutex;
use serde_json::{json, Value};
use sqlx::Row;

use super::capability::Pid;
use super::error::{SysResult, SyscallError, WireError};
use super::syscall::{JitCall, Primitive, Syscall};
use super::Kernel;
use crate::store::{JournalRow, WriteBatch};

/// A journal row as read back for replay.
#[derive(Debug, Clone)]
pub(crate) struct Recorded {
    pub primitive: String,
    pub args_hash: String,
    pub done: bool,
    pub outcome: Option<Value>,
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
    /// Rows of an earlier run, by sequence number (empty for a first run).
    pub replay: HashMap<i64, Recorded>,
    /// The epoch of this host's lease on the invocation (1 for a first run).
    pub epoch: i64,
}

/// An invocation id chosen by the caller (an idempotency key), with what an earlier run of
/// it left: its journal, whether its row exists, and its start time and seed.
pub(crate) struct Keyed {
    pub id: String,
    pub replay: HashMap<i64, Recorded>,
    pub recorded: bool,
    pub start_seed: Option<(i64, u64)>,
    /// The epoch of this host's lease.
    pub epoch: i64,
}

/// What the journal says about the next syscall of an invocation.
pub(crate) enum Step {
    /// Not journaled before: run it. `journal` says whether to journal it.
    Fresh {
        seq: i64,
        hash: String,
        journal: bool,
    },
    /// Journaled with an outcome: return it without running.
    Replay(SysResult<Value>),
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
    batch.push(
        "UPDATE invocations SET args = 'null' WHERE id = ?",
        vec![id.into()],
    );
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

    /// Starts live invocation `id` over from its first syscall, answering from `replay`
    /// (the rows its interrupted run journaled).
    pub(crate) fn restart_invocation(&self, id: &str, replay: HashMap<i64, Recorded>) {
        if let Some(inv) = self.inner.invocations.live.lock().get_mut(id) {
            inv.next_seq = 0;
            inv.replay = replay;
        }
    }

    /// The step for the next syscall of invocation `id`, or `None` if `id` is not a live
    /// invocation of `pid`.
    pub(crate) fn journal_step(
        &self,
        pid: Pid,
        id: &str,
        call: &Syscall,
    ) -> Option<SysResult<Step>> {
        let mut live = self.inner.invocations.live.lock();
        let inv = live.get_mut(id).filter(|inv| inv.pid == pid)?;
        let seq = inv.next_seq;
        inv.next_seq += 1;
        let hash = call.args_hash();
        let step = match inv.replay.get(&seq) {
            None => Ok(Step::Fresh {
                seq,
                hash,
                journal: inv.recorded || call.is_effect(),
            }),
            Some(rec) if rec.args_hash != hash => Err(SyscallError::NonDeterminism(format!(
                "invocation {id}, syscall #{seq}: the journal recorded {} with other arguments, \
                 but the tool now calls {} — the tool is not deterministic on replay",
                rec.primitive,
                call.name()
            ))),
            // An outcome too large to journal: a read is made again (unjournaled); an
            // effect is never repeated, and its outcome cannot be given.
            Some(rec) if rec.done && rec.outcome.as_ref().is_some_and(|o| o["omitted"] == true) => {
                if call.is_effect() {
                    Ok(Step::Replay(Err(SyscallError::limit(
                        "journal_bytes",
                        format!(
                            "invocation {id}, syscall #{seq}: its outcome was too large to journal \
                             (over {} bytes), so a replay cannot return it; the effect is not repeated",
                            crate::store::writer::JOURNAL_OUTCOME_MAX
                        ),
                    ))))
                } else {
                    Ok(Step::Fresh {
                        seq,
                        hash,
                        journal: false,
                    })
                }
            }
            Some(rec) if rec.done => Ok(Step::Replay(
                rec.outcome
                    .as_ref()
                    .map(outcome_result)
                    .unwrap_or(Ok(Value::Null)),
            )),
            Some(_) => Ok(Step::Uncertain { seq, hash }),
        };
        Some(step)
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

    /// Adds the invocation row to `batch` if it was not written yet.
    pub(crate) fn record_invocation(&self, id: &str, batch: &mut WriteBatch) {
        let mut live = self.inner.invocations.live.lock();
        let Some(inv) = live.get_mut(id) else { return };
        if !inv.recorded {
            inv.recorded = true;
            self.push_invocation_row(id, inv, batch);
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
            "INSERT INTO invocations (id, pid, tool, args, start_time, seed, status, created_at, args_hash) \
             VALUES (?, ?, ?, ?, ?, ?, 'running', ?, ?) ON CONFLICT (id) DO NOTHING",
            vec![
                id.into(),
                inv.pid.into(),
                inv.tool.clone().into(),
                inv.args.to_string().into(),
                inv.start_time.into(),
                inv.seed.to_string().into(),
                self.now().into(),
                inv.args_hash.clone().into(),
            ],
        );
    }

    /// Ends an invocation: its final status and outcome (if it recorded anything).
    pub(crate) async fn end_invocation(&self, id: &str, result: &SysResult<Value>) {
        let Some(inv) = self.inner.invocations.live.lock().remove(id) else {
            return;
        };
        let status = match result {
            Ok(_) => "done",
            Err(SyscallError::HumanRequired { .. }) => "waiting_human",
            Err(_) => "failed",
        };
        if !inv.recorded && status != "waiting_human" {
            return;
        }
        let mut batch = WriteBatch::default();
        if !inv.recorded {
            self.push_invocation_row(id, &inv, &mut batch);
        }
        self.push_fence(id, inv.epoch, &mut batch);
        batch.push(
            "UPDATE invocations SET status = ?, outcome = ?, finished_at = ? WHERE id = ?",
            vec![
                status.into(),
                outcome_json(result).to_string().into(),
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
                "SELECT pid, status, outcome, start_time, seed, args_hash FROM invocations WHERE id = ?",
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
                return Err(SyscallError::NonDeterminism(format!(
                    "invocation key {key} was used for another call ({} with other arguments); \
                     a key names one call",
                    call.name()
                )));
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
        }
        let replay = self.load_journal(key).await?;
        if let Syscall::Tool(JitCall::Call { .. }) = call {
            let keyed = Keyed {
                id: key.to_string(),
                replay,
                recorded,
                start_seed,
                epoch,
            };
            return self.syscall_keyed(pid, call, keyed).await;
        }
        let _live = self.begin_invocation(
            key,
            Invocation {
                pid,
                tool: String::new(),
                // Only what it was: the call itself (content, stdin, headers) is not kept.
                args: json!({"primitive": call.name()}),
                args_hash: args_hash.clone(),
                start_time: self.now(),
                seed: 0,
                next_seq: 0,
                recorded,
                replay,
                epoch,
            },
        );
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
        self.end_invocation(key, &result).await;
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

    /// Journal rows of an earlier run of `id`.
    pub(crate) async fn load_journal(&self, id: &str) -> SysResult<HashMap<i64, Recorded>> {
        let rows = sqlx::query(
            "SELECT j.seq, j.primitive, j.args_hash, j.status, COALESCE(b.data, j.outcome) AS outcome \
             FROM journal j LEFT JOIN journal_blobs b ON b.sha256 = j.blob WHERE j.invocation_id = ?",
        )
        .bind(id)
        .fetch_all(self.inner.store.pool())
        .await?;
        let mut out = HashMap::new();
        for row in rows {
            let outcome: Option<String> = row.try_get("outcome")?;
            out.insert(
                row.try_get::<i64, _>("seq")?,
                Recorded {
                    primitive: row.try_get("primitive")?,
                    args_hash: row.try_get("args_hash")?,
                    done: row.try_get::<String, _>("status")? == "done",
                    outcome: outcome.and_then(|o| serde_json::from_str(&o).ok()),
                },
            );
        }
        Ok(out)
    }
}
