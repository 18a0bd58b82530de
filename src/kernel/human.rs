//! The human queue: questions, outputs and permission requests, and approvals bound to the
//! exact call they were shown.
//!
//! Only the operator API ([`Kernel::human_respond`]) answers a request; no syscall can, so an
//! agent can never approve its own request. An approval of an `ask_each_time` call applies
//! to that pending call only: its request id, and the SHA-256 of its exact arguments together
//! with the resolved target and what the human was shown (the path after the working
//! directory, the command's directory, the addresses a URL resolved to, the content's hash).
//! An approval granted `always` is stored as the exact resource that was shown.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use sqlx::Row;
use tokio::sync::oneshot;

use super::capability::{Capability, Pid, Policy, Right};
use super::error::{SysResult, SyscallError};
use super::persist;
use super::process::Status;
use super::scope::{Done, Scope};
use super::syscall::{HumanCall, Primitive, Syscall};
use super::{HumanMode, Kernel};
use crate::audit::{AuditEntry, Decision};
use crate::store::sealed::RequestFields;
use crate::store::WriteBatch;

/// A human's answer to a request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "answer", rename_all = "snake_case")]
pub enum HumanAnswer {
    /// Allow the pending call (or grant the requested permission) once.
    ApproveOnce,
    /// Allow it and every later call like it (grants an `always_allow` capability).
    ApproveAlways,
    /// Allow it and every later call under the `ask_each_time` capability that asked: an
    /// `always_allow` capability on that capability's resource (its pattern, e.g.
    /// `fs:docs/**`) for the requested right. Approvals only.
    ApprovePattern,
    Reject {
        #[serde(default)]
        reason: String,
    },
    /// The answer to a question.
    Answer { text: String },
}

/// What a request asks of a human. Stored (and serialized) as its snake_case name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RequestKind {
    /// An `ask_each_time` call waiting for approval.
    Approval,
    /// `human.request_permission`: a capability to grant.
    Permission,
    /// `human.ask`.
    Question,
    /// `human.output`: delivered, never answered.
    Output,
    /// An effect whose outcome a crash lost: repeat it or not.
    Uncertain,
    /// A replayed invocation left its journal: run it again from the start, or fail it.
    Diverged,
}

impl RequestKind {
    const ALL: [RequestKind; 6] = [
        RequestKind::Approval,
        RequestKind::Permission,
        RequestKind::Question,
        RequestKind::Output,
        RequestKind::Uncertain,
        RequestKind::Diverged,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            RequestKind::Approval => "approval",
            RequestKind::Permission => "permission",
            RequestKind::Question => "question",
            RequestKind::Output => "output",
            RequestKind::Uncertain => "uncertain",
            RequestKind::Diverged => "diverged",
        }
    }
}

/// Where a request stands. Stored (and serialized) as its snake_case name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RequestStatus {
    Pending,
    Approved,
    Rejected,
    Answered,
    /// An output, shown and done.
    Delivered,
}

impl RequestStatus {
    const ALL: [RequestStatus; 5] = [
        RequestStatus::Pending,
        RequestStatus::Approved,
        RequestStatus::Rejected,
        RequestStatus::Answered,
        RequestStatus::Delivered,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            RequestStatus::Pending => "pending",
            RequestStatus::Approved => "approved",
            RequestStatus::Rejected => "rejected",
            RequestStatus::Answered => "answered",
            RequestStatus::Delivered => "delivered",
        }
    }
}

impl std::str::FromStr for RequestKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        RequestKind::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| format!("unknown human request kind '{s}'"))
    }
}

impl std::str::FromStr for RequestStatus {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        RequestStatus::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| format!("unknown human request status '{s}'"))
    }
}

impl std::fmt::Display for RequestKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::fmt::Display for RequestStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A request as stored.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HumanRequest {
    pub id: String,
    pub pid: Pid,
    pub kind: RequestKind,
    pub channel: String,
    pub payload: Value,
    pub args_hash: String,
    pub status: RequestStatus,
    pub answer: Option<Value>,
    pub answered_by: Option<String>,
    pub created_at: i64,
    pub answered_at: Option<i64>,
    /// The tool invocation or keyed call that raised it (so its caller can name it).
    pub invocation: Option<String>,
}

/// The most requests one process may have pending at once.
pub const MAX_PENDING_REQUESTS: i64 = 8;

/// `SELECT <the columns every read of a request needs> FROM human_requests <rest>`.
macro_rules! select_requests {
    ($rest:literal) => {
        concat!(
            "SELECT id, pid, kind, channel, payload, args_hash, status, answer, answered_by, \
             created_at, answered_at, used, mac, invocation FROM human_requests ",
            $rest
        )
    };
}

/// How often a parked call checks the database for an answer given by another runtime.
const HUMAN_POLL: std::time::Duration = std::time::Duration::from_millis(250);

/// Most calls of one process parked on humans at once: a call beyond it fails with
/// `LimitExceeded { limit: "human_waits" }` before raising a request, instead of growing the
/// waiters without limit. Each parked call waits on a request of its own, so this is the
/// bound on pending requests ([`MAX_PENDING_REQUESTS`], kept durably) seen from memory.
pub(crate) const MAX_PARKED_PER_PROCESS: usize = MAX_PENDING_REQUESTS as usize;

/// Calls parked until a human answers, by request id.
#[derive(Default)]
pub(crate) struct Waiters {
    map: parking_lot::Mutex<HashMap<String, oneshot::Sender<HumanAnswer>>>,
    /// How many calls of each process hold a [`ParkSlot`].
    parked: parking_lot::Mutex<HashMap<Pid, usize>>,
    /// Requests whose answer a call of this runtime has taken.
    claimed: parking_lot::Mutex<std::collections::HashSet<String>>,
}

/// One of a process's [`MAX_PARKED_PER_PROCESS`] places to wait for a human; given back
/// when dropped.
struct ParkSlot<'a> {
    waiters: &'a Waiters,
    pid: Pid,
}

impl Waiters {
    fn park_slot(&self, pid: Pid) -> SysResult<ParkSlot<'_>> {
        let mut parked = self.parked.lock();
        let count = parked.entry(pid).or_default();
        if *count >= MAX_PARKED_PER_PROCESS {
            return Err(SyscallError::limit(
                "human_waits",
                format!(
                    "process {pid} already has {count} calls waiting for a human; wait for \
                     their answers before asking more"
                ),
            ));
        }
        *count += 1;
        Ok(ParkSlot { waiters: self, pid })
    }
}

impl Drop for ParkSlot<'_> {
    fn drop(&mut self) {
        let mut parked = self.waiters.parked.lock();
        if let Some(count) = parked.get_mut(&self.pid) {
            *count -= 1;
            if *count == 0 {
                parked.remove(&self.pid);
            }
        }
    }
}

impl Kernel {
    /// Asks a human to approve `call` under an `ask_each_time` capability; returns when the
    /// call may proceed.
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn ask_approval(
        &self,
        pid: Pid,
        resource: &str,
        right: Right,
        cap_id: i64,
        call: &dyn Primitive,
        context: Value,
        scope: &mut Scope,
    ) -> SysResult<()> {
        // Bound to the effect as resolved, not the call as written: the same arguments after
        // a `chdir`, or a name that now resolves elsewhere, are another effect and need their
        // own approval.
        let binding = crate::util::sha256_hex(
            json!([call.args_hash(), resource, right, context])
                .to_string()
                .as_bytes(),
        );
        // Kept as long as the request is: credentials in it only as length + SHA-256.
        let payload = json!({
            "primitive": call.name(),
            "resource": resource,
            "right": right,
            "capability": cap_id,
            "context": crate::audit::redact::redact(context),
        });
        let (id, answer) = self
            .request_answer(
                pid,
                RequestKind::Approval,
                "operator",
                payload,
                binding,
                scope,
            )
            .await?;
        match answer {
            HumanAnswer::ApproveOnce | HumanAnswer::ApproveAlways | HumanAnswer::ApprovePattern => {
                Ok(())
            }
            HumanAnswer::Reject { reason } => Err(SyscallError::HumanRejected(format!(
                "request {id} for {right} on {resource} was rejected{}",
                if reason.is_empty() {
                    String::new()
                } else {
                    format!(": {reason}")
                }
            ))),
            HumanAnswer::Answer { .. } => Err(SyscallError::HumanRejected(format!(
                "request {id} was answered with text instead of an approval"
            ))),
        }
    }

    /// Gets a human's answer for a request about the exact call `args_hash`: an earlier
    /// request for the same call that is still pending, or answered but not yet used (as
    /// after a restart), is reused; otherwise a new one is raised. The answer is marked used.
    async fn request_answer(
        &self,
        pid: Pid,
        kind: RequestKind,
        channel: &str,
        payload: Value,
        args_hash: String,
        scope: &mut Scope,
    ) -> SysResult<(String, HumanAnswer)> {
        // Only calls that will park take a place; one that fails fast never waits.
        let _slot = match self.inner.config.human_mode {
            HumanMode::Wait => Some(self.inner.human.park_slot(pid)?),
            HumanMode::FailFast => None,
        };
        // A tool invocation parked on a human must be findable by `resume` after a crash.
        if let Some(invocation) = scope.correlation.clone() {
            let mut batch = WriteBatch::default();
            self.record_invocation(&invocation, &mut batch);
            if !batch.is_empty() {
                self.inner
                    .store
                    .commit(batch)
                    .await
                    .map_err(|e| SyscallError::Internal(format!("store: {e}")))?;
            }
        }
        let rows = sqlx::query(select_requests!(
            "WHERE pid = ? AND kind = ? AND args_hash = ? AND used = 0 \
             AND status IN ('pending', 'approved', 'rejected', 'answered') ORDER BY created_at, id"
        ))
        .bind(pid)
        .bind(kind.as_str())
        .bind(&args_hash)
        .fetch_all(self.inner.store.pool())
        .await?;
        // Only a request the kernel wrote counts; one another call of this runtime is
        // already waiting on, or has claimed, is not shared: one approval serves one call.
        let mut earlier = None;
        for row in &rows {
            let stored = self.stored_request(row)?;
            if stored.sealed
                && !self.inner.human.map.lock().contains_key(&stored.request.id)
                && self
                    .inner
                    .human
                    .claimed
                    .lock()
                    .insert(stored.request.id.clone())
            {
                earlier = Some(stored.request);
                break;
            }
        }
        let (id, answer) = match earlier {
            Some(request) => {
                let id = request.id.clone();
                let status = request.status;
                let answer = if status == RequestStatus::Pending {
                    match self.wait_for_human(pid, &id).await {
                        Ok(answer) => answer,
                        Err(e) => {
                            // Not answered: the request stays available to a later call.
                            self.inner.human.claimed.lock().remove(&id);
                            return Err(e);
                        }
                    }
                } else {
                    // Answered while this runtime was away: apply any grant it made.
                    let caps = super::state::State::load_caps(
                        self.inner.store.pool(),
                        pid,
                        self.inner.store.sealer(),
                    )
                    .await?;
                    self.inner.state.lock().caps.insert(pid, caps);
                    request
                        .answer
                        .and_then(|a| serde_json::from_value(a).ok())
                        .unwrap_or(HumanAnswer::Reject {
                            reason: format!("request {id} was {status}"),
                        })
                };
                (id, answer)
            }
            None => {
                // The process is WAITING_HUMAN before its request exists, so a crash never
                // leaves a pending request with a process that looks runnable.
                let prev = match self.inner.config.human_mode {
                    HumanMode::Wait => Some(self.enter_wait(pid, Status::WaitingHuman).await?),
                    HumanMode::FailFast => None,
                };
                let raised = self
                    .raise_request(
                        pid,
                        kind,
                        channel,
                        payload,
                        args_hash,
                        scope.correlation.as_deref(),
                    )
                    .await;
                let answer = match raised {
                    Ok((id, seq)) => {
                        scope.parent_seq = Some(seq);
                        let answer = self.wait_for_human_parked(pid, &id).await;
                        answer.map(|a| (id, a))
                    }
                    Err(e) => Err(e),
                };
                if let Some(prev) = prev {
                    self.leave_wait(pid, prev).await;
                }
                answer?
            }
        };
        self.inner.human.claimed.lock().insert(id.clone());
        self.mark_used(&id).await?;
        Ok((id, answer))
    }

    /// Marks an answered request as used by the call it was answered for (with its seal).
    async fn mark_used(&self, id: &str) -> SysResult<()> {
        let stored = self
            .load_request(id)
            .await?
            .filter(|s| s.sealed)
            .ok_or_else(|| SyscallError::NotFound(format!("human request {id}")))?;
        let seal = stored
            .fields_with(None, true)
            .seal(self.inner.store.sealer());
        // Used at most once, even by calls of two runtimes on one database.
        let mut batch = WriteBatch::default();
        batch.push_guarded(
            "UPDATE human_requests SET used = 1, mac = ? WHERE id = ? AND used = 0 AND mac = ?",
            vec![seal.into(), id.into(), stored.mac.clone().into()],
            1,
        );
        self.inner.store.commit(batch).await.map_err(|e| match e {
            crate::store::CommitError::Conflict(_) => SyscallError::IllegalState(format!(
                "the answer to request {id} was already used by another call"
            )),
            other => SyscallError::Internal(format!("store: {other}")),
        })?;
        Ok(())
    }

    /// Asks a human whether to repeat an effect whose outcome was lost in a crash (its intent
    /// is journaled, its outcome is not). Only an approval repeats it.
    pub(crate) async fn confirm_uncertain(
        &self,
        pid: Pid,
        invocation: &str,
        seq: i64,
        call: &Syscall,
    ) -> SysResult<()> {
        let payload = json!({
            "invocation": invocation,
            "seq": seq,
            "primitive": call.name(),
            "request": call.audit_summary(),
            "why": "the host stopped while this effect was running; it may or may not have happened",
        });
        let mut scope = Scope {
            correlation: Some(invocation.to_string()),
            ..Scope::default()
        };
        let (id, answer) = self
            .request_answer(
                pid,
                RequestKind::Uncertain,
                "operator",
                payload,
                call.args_hash(),
                &mut scope,
            )
            .await?;
        match answer {
            HumanAnswer::ApproveOnce | HumanAnswer::ApproveAlways => Ok(()),
            _ => Err(SyscallError::HumanRejected(format!(
                "request {id}: the uncertain {} was not repeated",
                call.name()
            ))),
        }
    }

    /// Raises the request an invocation that left its journal waits on (one per divergence;
    /// see `Kernel::settle_divergence`). Returns its id.
    pub(crate) async fn raise_divergence(
        &self,
        pid: Pid,
        invocation: &str,
        payload: Value,
    ) -> SysResult<String> {
        let (id, _) = self
            .raise_request(
                pid,
                RequestKind::Diverged,
                "operator",
                payload,
                divergence_binding(invocation),
                Some(invocation),
            )
            .await?;
        Ok(id)
    }

    /// The answer to the divergence request invocation `invocation` waits on, if it waits
    /// on one: `Some(request id)` once approved, an error once rejected; a pending request
    /// is waited on (or, failing fast, is `HumanRequired`).
    pub(crate) async fn confirm_divergence(
        &self,
        pid: Pid,
        invocation: &str,
    ) -> SysResult<Option<String>> {
        let binding = divergence_binding(invocation);
        let open: Option<i64> = sqlx::query_scalar(
            "SELECT 1 FROM human_requests WHERE pid = ? AND kind = ? AND args_hash = ? \
             AND used = 0 LIMIT 1",
        )
        .bind(pid)
        .bind(RequestKind::Diverged.as_str())
        .bind(&binding)
        .fetch_optional(self.inner.store.pool())
        .await?;
        if open.is_none() {
            return Ok(None);
        }
        let mut scope = Scope {
            correlation: Some(invocation.to_string()),
            ..Scope::default()
        };
        let (id, answer) = self
            .request_answer(
                pid,
                RequestKind::Diverged,
                "operator",
                Value::Null,
                binding,
                &mut scope,
            )
            .await?;
        match answer {
            HumanAnswer::ApproveOnce | HumanAnswer::ApproveAlways => Ok(Some(id)),
            _ => Err(SyscallError::HumanRejected(format!(
                "request {id}: invocation {invocation} left its journal and was not run again"
            ))),
        }
    }

    /// Stores a pending request and audits it. Returns its id and audit seq.
    async fn raise_request(
        &self,
        pid: Pid,
        kind: RequestKind,
        channel: &str,
        payload: Value,
        args_hash: String,
        invocation: Option<&str>,
    ) -> SysResult<(String, i64)> {
        let id = crate::util::new_id("hr");
        let now = self.now();
        let mut batch = WriteBatch::default();
        self.insert_request(
            &mut batch,
            NewRequest {
                id: &id,
                pid,
                kind,
                channel,
                payload: &payload,
                args_hash: &args_hash,
                status: RequestStatus::Pending,
                invocation,
            },
        );
        let batch = batch.audit(AuditEntry {
            ts: now,
            actor: format!("pid:{pid}"),
            action: format!("human.{kind}"),
            target: format!("human:{channel}"),
            decision: Decision::Ask,
            capability_refs: vec![],
            correlation_id: Some(id.clone()),
            parent_seq: None,
            detail: payload,
        });
        let seqs = self.inner.store.commit(batch).await.map_err(|e| match e {
            crate::store::CommitError::Conflict(_) => SyscallError::limit(
                "human_requests",
                format!(
                    "process {pid} already has {MAX_PENDING_REQUESTS} requests waiting for a human"
                ),
            ),
            other => SyscallError::Internal(format!("store: {other}")),
        })?;
        Ok((id, seqs.first().copied().unwrap_or(0)))
    }

    /// Parks `pid` in WAITING_HUMAN until request `id` is answered.
    async fn wait_for_human(&self, pid: Pid, id: &str) -> SysResult<HumanAnswer> {
        if self.inner.config.human_mode == HumanMode::FailFast {
            return Err(SyscallError::HumanRequired {
                request_id: id.to_string(),
                detail: format!(
                    "no human is attached; `agent-libos human show {id}` shows what it asks and how to answer it"
                ),
            });
        }
        let prev = self.enter_wait(pid, Status::WaitingHuman).await?;
        let answer = self.wait_for_human_parked(pid, id).await;
        self.leave_wait(pid, prev).await;
        answer
    }

    /// Waits for the answer to `id`; the caller has put `pid` in WAITING_HUMAN.
    async fn wait_for_human_parked(&self, pid: Pid, id: &str) -> SysResult<HumanAnswer> {
        if self.inner.config.human_mode == HumanMode::FailFast {
            return Err(SyscallError::HumanRequired {
                request_id: id.to_string(),
                detail: format!(
                    "no human is attached; `agent-libos human show {id}` shows what it asks and how to answer it"
                ),
            });
        }
        let (tx, mut rx) = oneshot::channel();
        self.inner.human.map.lock().insert(id.to_string(), tx);
        // If this call is dropped mid-wait (its caller gave up, or its host is going away),
        // the request stays pending in the store and becomes reusable by a retry.
        struct Unpark<'a>(&'a Kernel, &'a str);
        impl Drop for Unpark<'_> {
            fn drop(&mut self) {
                self.0.inner.human.map.lock().remove(self.1);
                self.0.inner.human.claimed.lock().remove(self.1);
            }
        }
        let _unpark = Unpark(self, id);
        // The answer arrives in-process (this runtime's human interface), or is written to
        // the database by another runtime (e.g. `agent-libos human approve` in another
        // terminal), which polling notices.
        let answer = loop {
            tokio::select! {
                got = &mut rx => break got.map_err(|_| SyscallError::Cancelled(format!("request {id} was abandoned"))),
                _ = tokio::time::sleep(HUMAN_POLL) => {
                    if let Some(answer) = self.answered_elsewhere(pid, id).await? {
                        break Ok(answer);
                    }
                }
            }
        };
        self.inner.human.map.lock().remove(id);
        answer
    }

    /// The answer to `id` if another runtime recorded one; reloads `pid`'s capabilities so a
    /// grant made there takes effect here.
    async fn answered_elsewhere(&self, pid: Pid, id: &str) -> SysResult<Option<HumanAnswer>> {
        let Some(request) = self.human_request(id).await? else {
            return Ok(None);
        };
        if request.status == RequestStatus::Pending {
            return Ok(None);
        }
        let answer = request
            .answer
            .and_then(|a| serde_json::from_value(a).ok())
            .unwrap_or(HumanAnswer::Reject {
                reason: format!("request {id} was {}", request.status),
            });
        let caps =
            super::state::State::load_caps(self.inner.store.pool(), pid, self.inner.store.sealer())
                .await?;
        self.inner.state.lock().caps.insert(pid, caps);
        Ok(Some(answer))
    }

    /// Answers a pending request. This is the human interface's entry point (CLI, console,
    /// MCP elicitation); `by` names the human. No syscall reaches it.
    pub async fn human_respond(
        &self,
        id: &str,
        answer: HumanAnswer,
        by: &str,
    ) -> SysResult<HumanRequest> {
        let stored = self
            .load_request(id)
            .await?
            .ok_or_else(|| SyscallError::NotFound(format!("human request {id}")))?;
        if !stored.sealed {
            return Err(SyscallError::IllegalState(format!(
                "request {id} was not written by the runtime (its seal does not verify); it cannot be answered"
            )));
        }
        let request = stored.request.clone();
        if request.status != RequestStatus::Pending {
            return Err(SyscallError::IllegalState(format!(
                "request {id} is already {}",
                request.status
            )));
        }
        use RequestKind::{Approval, Diverged, Permission, Question, Uncertain};
        let status = match (request.kind, &answer) {
            (Question, HumanAnswer::Answer { text }) => {
                let choices: Vec<String> = request.payload["choices"]
                    .as_array()
                    .map(|a| {
                        a.iter()
                            .filter_map(|c| c.as_str().map(String::from))
                            .collect()
                    })
                    .unwrap_or_default();
                if !choices.is_empty() && !choices.contains(text) {
                    return Err(SyscallError::invalid(format!(
                        "answer must be one of: {}",
                        choices.join(", ")
                    )));
                }
                RequestStatus::Answered
            }
            (
                Approval | Permission | Uncertain | Diverged,
                HumanAnswer::ApproveOnce | HumanAnswer::ApproveAlways,
            ) => RequestStatus::Approved,
            (Approval, HumanAnswer::ApprovePattern) => RequestStatus::Approved,
            (
                Approval | Permission | Question | Uncertain | Diverged,
                HumanAnswer::Reject { .. },
            ) => RequestStatus::Rejected,
            (kind, _) => {
                return Err(SyscallError::invalid(format!(
                    "a {kind} request cannot take that answer"
                )))
            }
        };
        let now = self.now();
        let mut batch = WriteBatch::default();
        let answer_json = persist::json(&answer);
        let seal = stored
            .fields_with(Some((status, &answer_json, by)), false)
            .seal(self.inner.store.sealer());
        // Answered at most once: the update applies only to a request still pending with
        // exactly the seal read above, or the whole answer (and its grant) is refused.
        batch.push_guarded(
            "UPDATE human_requests SET status = ?, answer = ?, answered_by = ?, answered_at = ?, mac = ? \
             WHERE id = ? AND status = 'pending' AND mac = ?",
            vec![
                status.as_str().into(),
                answer_json.clone().into(),
                by.into(),
                now.into(),
                seal.into(),
                id.into(),
                stored.mac.clone().into(),
            ],
            1,
        );
        // The resource an approval grants: the one shown, or with `approve_pattern` the
        // resource of the live ask capability that raised the request (never wider).
        let resource = match answer {
            HumanAnswer::ApprovePattern => Some(self.asking_pattern(&request)?),
            _ => None,
        };
        let mut granted = None;
        if let Some(policy) = granted_policy(request.kind, &answer) {
            let cap_id = self.new_cap_id().await?;
            granted = self.grant_from_approval(&request, resource, policy, &mut batch, now, cap_id);
        }
        let batch = batch.audit(AuditEntry {
            ts: now,
            actor: format!("human:{by}"),
            action: "human.respond".into(),
            target: format!("human_request:{id}"),
            decision: match status {
                RequestStatus::Answered => Decision::Answered,
                RequestStatus::Approved => Decision::Approved,
                _ => Decision::Rejected,
            },
            capability_refs: granted.iter().map(|c| c.id).collect(),
            correlation_id: Some(id.to_string()),
            parent_seq: None,
            detail: json!({"answer": answer, "pid": request.pid, "args_hash": request.args_hash}),
        });
        self.inner.store.commit(batch).await.map_err(|e| match e {
            crate::store::CommitError::Conflict(_) => SyscallError::IllegalState(format!(
                "request {id} was answered meanwhile (a request is answered at most once)"
            )),
            other => SyscallError::Internal(format!("store: {other}")),
        })?;
        // Only now, durable, does the answer take effect: the grant, then the waiting call.
        if let Some(cap) = granted {
            let mut state = self.inner.state.lock();
            if state
                .process(cap.subject)
                .is_some_and(|p| !p.status.is_terminal())
            {
                state.caps.entry(cap.subject).or_default().push(cap);
            }
        }
        if let Some(waiter) = self.inner.human.map.lock().remove(id) {
            let _ = waiter.send(answer);
        }
        Ok(self.human_request(id).await?.unwrap_or(request))
    }

    /// The resource of the `ask_each_time` capability that raised approval `request`: held
    /// live by the requesting process and covering the resource shown. Anything else (the
    /// capability was revoked, expired or is not an ask) refuses the answer.
    fn asking_pattern(&self, request: &HumanRequest) -> SysResult<String> {
        let refused = |why: &str| {
            SyscallError::invalid(format!(
                "request {} cannot be approved for its pattern: {why}; approve it once or --always",
                request.id
            ))
        };
        let shown = request.payload["resource"]
            .as_str()
            .ok_or_else(|| refused("it names no resource"))?;
        let cap_id = request.payload["capability"]
            .as_i64()
            .ok_or_else(|| refused("it names no capability"))?;
        let cap = self
            .capabilities(request.pid)
            .into_iter()
            .find(|c| c.id == cap_id)
            .ok_or_else(|| refused("the capability that asked is no longer held"))?;
        if cap.policy != Policy::AskEachTime
            || super::resource::match_resource(&cap.resource, shown).is_none()
        {
            return Err(refused("the capability that asked does not cover it"));
        }
        Ok(cap.resource)
    }

    /// Adds the capability an approval grants (see [`granted_policy`]) to `batch`; returns
    /// it (to be held once the batch is durable).
    fn grant_from_approval(
        &self,
        request: &HumanRequest,
        resource: Option<String>,
        policy: Policy,
        batch: &mut WriteBatch,
        now: i64,
        id: i64,
    ) -> Option<Capability> {
        let resource = match resource {
            Some(r) => r,
            None => request.payload["resource"].as_str()?.to_string(),
        };
        let rights: Vec<Right> = match &request.payload["rights"] {
            Value::Array(_) => serde_json::from_value(request.payload["rights"].clone()).ok()?,
            _ => vec![serde_json::from_value(request.payload["right"].clone()).ok()?],
        };
        if self
            .inner
            .state
            .lock()
            .process(request.pid)
            .is_none_or(|p| p.status.is_terminal())
        {
            return None;
        }
        let cap = Capability {
            id,
            subject: request.pid,
            resource,
            rights,
            policy,
            issuer: None,
            parent: request.payload["capability"].as_i64(),
            expires_at: None,
            delegable: false,
            revocable: true,
            revoked: false,
            consumed: false,
        };
        persist::insert_cap(batch, &cap, now, self.inner.store.sealer());
        Some(cap)
    }

    /// One request by id (only one the kernel wrote: a row whose seal does not verify is
    /// refused).
    pub async fn human_request(&self, id: &str) -> SysResult<Option<HumanRequest>> {
        Ok(self
            .load_request(id)
            .await?
            .filter(|s| s.sealed)
            .map(|s| s.request))
    }

    /// Requests, oldest first; only pending ones unless `all`. Rows the kernel did not
    /// write are left out (and logged).
    pub async fn human_requests(&self, all: bool) -> SysResult<Vec<HumanRequest>> {
        let sql = if all {
            select_requests!("ORDER BY created_at, id")
        } else {
            select_requests!("WHERE status = 'pending' ORDER BY created_at, id")
        };
        let rows = sqlx::query(sql).fetch_all(self.inner.store.pool()).await?;
        let mut requests = Vec::with_capacity(rows.len());
        for row in &rows {
            let stored = self.stored_request(row)?;
            if stored.sealed {
                requests.push(stored.request);
            }
        }
        Ok(requests)
    }

    /// One request row, sealed or not.
    async fn load_request(&self, id: &str) -> SysResult<Option<StoredRequest>> {
        let row = sqlx::query(select_requests!("WHERE id = ?"))
            .bind(id)
            .fetch_optional(self.inner.store.pool())
            .await?;
        row.map(|r| self.stored_request(&r)).transpose()
    }

    fn stored_request(&self, row: &sqlx::sqlite::SqliteRow) -> SysResult<StoredRequest> {
        let stored = StoredRequest::from_row(row)?;
        let sealed = stored
            .fields_with(None, stored.used)
            .verify(self.inner.store.sealer(), stored.mac.as_deref());
        if !sealed {
            crate::store::sealed::refused("human_requests", &stored.request.id);
        }
        Ok(StoredRequest { sealed, ..stored })
    }

    /// Adds a new request row, sealed, to `batch`. A pending one is inserted only while its
    /// process has fewer than [`MAX_PENDING_REQUESTS`] pending (else the batch is refused
    /// with a conflict).
    fn insert_request(&self, batch: &mut WriteBatch, r: NewRequest<'_>) {
        let payload = r.payload.to_string();
        let seal = RequestFields {
            id: r.id,
            pid: r.pid,
            kind: r.kind.as_str(),
            channel: r.channel,
            payload: &payload,
            args_hash: r.args_hash,
            status: r.status.as_str(),
            answer: None,
            answered_by: None,
            used: false,
            invocation: r.invocation,
        }
        .seal(self.inner.store.sealer());
        let args = vec![
            r.id.into(),
            r.pid.into(),
            r.kind.as_str().into(),
            r.channel.into(),
            payload.into(),
            r.args_hash.into(),
            r.status.as_str().into(),
            self.now().into(),
            seal.into(),
            r.invocation.into(),
            r.pid.into(),
            MAX_PENDING_REQUESTS.into(),
        ];
        batch.push_guarded(
            "INSERT INTO human_requests (id, pid, kind, channel, payload, args_hash, status, \
             created_at, mac, invocation) \
             SELECT ?, ?, ?, ?, ?, ?, ?, ?, ?, ? \
             WHERE (SELECT COUNT(*) FROM human_requests WHERE pid = ? AND status = 'pending') < ?",
            args,
            1,
        );
    }

    /// `human.output`, `human.ask`, `human.request_permission`.
    pub(crate) async fn human_call(
        &self,
        pid: Pid,
        call: &HumanCall,
        scope: &mut Scope,
    ) -> SysResult<Done> {
        match call {
            HumanCall::Output { message, channel } => {
                self.authorize_one(
                    pid,
                    super::resource::exact("human", channel),
                    Right::Write,
                    call,
                    scope,
                )
                .await?;
                let id = crate::util::new_id("hr");
                let mut batch = WriteBatch::default();
                self.insert_request(
                    &mut batch,
                    NewRequest {
                        id: &id,
                        pid,
                        kind: RequestKind::Output,
                        channel,
                        payload: &json!({"message": message}),
                        args_hash: &call.args_hash(),
                        status: RequestStatus::Delivered,
                        invocation: scope.correlation.as_deref(),
                    },
                );
                Ok(Done::new(json!({"id": id}), format!("human:{channel}")).batch(batch))
            }
            HumanCall::Ask {
                question,
                choices,
                channel,
            } => {
                self.authorize_one(
                    pid,
                    super::resource::exact("human", channel),
                    Right::Write,
                    call,
                    scope,
                )
                .await?;
                let payload = json!({"question": question, "choices": choices});
                let (id, answer) = self
                    .request_answer(
                        pid,
                        RequestKind::Question,
                        channel,
                        payload,
                        call.args_hash(),
                        scope,
                    )
                    .await?;
                match answer {
                    HumanAnswer::Answer { text } => Ok(Done::new(
                        json!({"id": id, "answer": text}),
                        format!("human:{channel}"),
                    )),
                    HumanAnswer::Reject { reason } => Err(SyscallError::HumanRejected(format!(
                        "question {id} was declined{}",
                        if reason.is_empty() {
                            String::new()
                        } else {
                            format!(": {reason}")
                        }
                    ))),
                    other => Err(SyscallError::internal(format!(
                        "unexpected answer {other:?}"
                    ))),
                }
            }
            HumanCall::RequestPermission {
                resource,
                rights,
                reason,
                channel,
            } => {
                super::capability::validate_resource(resource).map_err(SyscallError::invalid)?;
                if rights.is_empty() {
                    return Err(SyscallError::invalid("rights must not be empty"));
                }
                self.within_requestable(pid, resource, rights)?;
                let payload = json!({"resource": resource, "rights": rights, "reason": reason});
                let (id, answer) = self
                    .request_answer(
                        pid,
                        RequestKind::Permission,
                        channel,
                        payload,
                        call.args_hash(),
                        scope,
                    )
                    .await?;
                match answer {
                    HumanAnswer::ApproveOnce | HumanAnswer::ApproveAlways => {
                        let granted: Vec<i64> = self
                            .capabilities(pid)
                            .into_iter()
                            .filter(|c| &c.resource == resource && c.issuer.is_none())
                            .map(|c| c.id)
                            .collect();
                        Ok(Done::new(
                            json!({"id": id, "granted": true, "capabilities": granted}),
                            resource.clone(),
                        ))
                    }
                    HumanAnswer::Reject { reason } => Err(SyscallError::HumanRejected(format!(
                        "permission request {id} was rejected{}",
                        if reason.is_empty() {
                            String::new()
                        } else {
                            format!(": {reason}")
                        }
                    ))),
                    other => Err(SyscallError::internal(format!(
                        "unexpected answer {other:?}"
                    ))),
                }
            }
        }
    }
}

impl Kernel {
    /// Refuses a permission request beyond what the operator lets `pid` ask for: every
    /// right must be covered by one spec of its requestable ceiling.
    fn within_requestable(&self, pid: Pid, resource: &str, rights: &[Right]) -> SysResult<()> {
        let ceiling = self
            .inner
            .state
            .lock()
            .requestable
            .get(&pid)
            .cloned()
            .unwrap_or_default();
        for right in rights {
            let covered = ceiling.iter().any(|spec| {
                (spec.rights.contains(right) || spec.rights.contains(&Right::Admin))
                    && super::capability::pattern_within(&spec.resource, resource)
            });
            if !covered {
                return Err(SyscallError::denied_because(
                    resource,
                    right,
                    format!(
                        "process {pid} may not ask a human for it: it lies outside the requestable \
                         ceiling the operator set (--requestable, SpawnOptions::requestable, an \
                         image's [[requestable]])"
                    ),
                ));
            }
        }
        Ok(())
    }
}

/// The policy of the capability an answer grants: `approve_always` on an approval, and any
/// approval of a permission request. An `approve_once` of an approval grants nothing: it
/// lets that one pending call through.
fn granted_policy(kind: RequestKind, answer: &HumanAnswer) -> Option<Policy> {
    match (kind, answer) {
        (RequestKind::Approval | RequestKind::Permission, HumanAnswer::ApproveAlways)
        | (RequestKind::Approval, HumanAnswer::ApprovePattern) => Some(Policy::AlwaysAllow),
        (RequestKind::Permission, HumanAnswer::ApproveOnce) => Some(Policy::AllowOnce),
        _ => None,
    }
}

/// A request row as stored: the request, its raw sealed fields, and whether its seal
/// verifies.
#[derive(Clone)]
struct StoredRequest {
    request: HumanRequest,
    payload_text: String,
    answer_text: Option<String>,
    used: bool,
    mac: Option<String>,
    sealed: bool,
}

impl StoredRequest {
    fn from_row(row: &sqlx::sqlite::SqliteRow) -> SysResult<StoredRequest> {
        let payload_text: String = row.try_get("payload")?;
        let answer_text: Option<String> = row.try_get("answer")?;
        Ok(StoredRequest {
            request: HumanRequest {
                id: row.try_get("id")?,
                pid: row.try_get("pid")?,
                kind: parse_column(row, "kind")?,
                channel: row.try_get("channel")?,
                payload: serde_json::from_str(&payload_text).unwrap_or(Value::Null),
                args_hash: row.try_get("args_hash")?,
                status: parse_column(row, "status")?,
                answer: answer_text
                    .as_deref()
                    .and_then(|a| serde_json::from_str(a).ok()),
                answered_by: row.try_get("answered_by")?,
                created_at: row.try_get("created_at")?,
                answered_at: row.try_get("answered_at")?,
                invocation: row.try_get("invocation")?,
            },
            payload_text,
            answer_text,
            used: row.try_get::<i64, _>("used")? != 0,
            mac: row.try_get("mac")?,
            sealed: false,
        })
    }

    /// The sealed fields, with a new answer (status, answer, by) and `used` if given.
    fn fields_with<'a>(
        &'a self,
        answered: Option<(RequestStatus, &'a str, &'a str)>,
        used: bool,
    ) -> RequestFields<'a> {
        let r = &self.request;
        let (status, answer, answered_by) = match answered {
            Some((status, answer, by)) => (status.as_str(), Some(answer), Some(by)),
            None => (
                r.status.as_str(),
                self.answer_text.as_deref(),
                r.answered_by.as_deref(),
            ),
        };
        RequestFields {
            id: &r.id,
            pid: r.pid,
            kind: r.kind.as_str(),
            channel: &r.channel,
            payload: &self.payload_text,
            args_hash: &r.args_hash,
            status,
            answer,
            answered_by,
            used,
            invocation: r.invocation.as_deref(),
        }
    }
}

/// A request about to be stored.
struct NewRequest<'a> {
    id: &'a str,
    pid: Pid,
    kind: RequestKind,
    channel: &'a str,
    payload: &'a Value,
    args_hash: &'a str,
    status: RequestStatus,
    invocation: Option<&'a str>,
}

/// Parses a text column into its enum, once, where the row is read.
fn parse_column<T: std::str::FromStr<Err = String>>(
    row: &sqlx::sqlite::SqliteRow,
    column: &str,
) -> SysResult<T> {
    let text: String = row.try_get(column)?;
    text.parse()
        .map_err(|e: String| SyscallError::internal(format!("human_requests.{column}: {e}")))
}

/// What a divergence request of `invocation` is bound to.
fn divergence_binding(invocation: &str) -> String {
    crate::util::sha256_hex(json!(["diverged", invocation]).to_string().as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_and_statuses_are_stored_and_serialized_by_one_name() {
        for kind in RequestKind::ALL {
            assert_eq!(serde_json::to_value(kind).unwrap(), kind.as_str());
            assert_eq!(kind.as_str().parse::<RequestKind>(), Ok(kind));
        }
        for status in RequestStatus::ALL {
            assert_eq!(serde_json::to_value(status).unwrap(), status.as_str());
            assert_eq!(status.as_str().parse::<RequestStatus>(), Ok(status));
        }
        let err = "approved_by_me".parse::<RequestStatus>().unwrap_err();
        assert!(err.contains("unknown human request status"), "{err}");
    }
}
