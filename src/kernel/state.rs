//! The kernel's in-memory tables (processes, capabilities, events), loaded from the store
//! at open and written through on every change, so a capability check is a lookup, not a
//! query.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;

use serde::Serialize;
use serde_json::Value;
use sqlx::{Row, SqlitePool};
use tokio::sync::watch;

use super::capability::{Capability, CapabilitySpec, Pid, Policy, Right};
use super::process::Process;
use super::syscall::Budget;
use crate::store::sealed::{refused, CapFields};
use crate::store::Sealer;

/// An event queued for a process.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Event {
    pub id: i64,
    pub name: String,
    pub payload: Value,
    pub source: String,
}

/// Everything the kernel keeps in memory. Guarded by one mutex; never held across `.await`.
#[derive(Default)]
pub struct State {
    pub procs: HashMap<Pid, Process>,
    pub caps: HashMap<Pid, Vec<Capability>>,
    pub events: HashMap<Pid, VecDeque<Event>>,
    /// Bytes each process moved through the filesystem primitives since the kernel opened.
    pub fs_bytes: HashMap<Pid, u64>,
    /// `allow_once` capabilities in use by an operation that has not finished yet.
    pub reserved_once: HashSet<i64>,
    /// Places in event queues taken by posts not yet committed.
    pub event_slots: HashMap<Pid, usize>,
    /// What each live process may ask a human for (`human.request_permission`).
    pub requestable: HashMap<Pid, Vec<CapabilitySpec>>,
    /// Per-process change counters: bumped on any status change or new event; waiters
    /// subscribe and re-check their condition.
    pub changes: HashMap<Pid, Arc<watch::Sender<u64>>>,
}

impl State {
    pub fn process(&self, pid: Pid) -> Option<&Process> {
        self.procs.get(&pid)
    }

    pub fn caps_of(&self, pid: Pid) -> &[Capability] {
        self.caps.get(&pid).map(Vec::as_slice).unwrap_or(&[])
    }

    pub fn find_cap_mut(&mut self, id: i64) -> Option<&mut Capability> {
        self.caps
            .values_mut()
            .flat_map(|v| v.iter_mut())
            .find(|c| c.id == id)
    }

    pub fn changes_of(&mut self, pid: Pid) -> Arc<watch::Sender<u64>> {
        self.changes
            .entry(pid)
            .or_insert_with(|| Arc::new(watch::channel(0).0))
            .clone()
    }

    /// Wakes everything waiting on `pid`.
    pub fn bump(&mut self, pid: Pid) {
        self.changes_of(pid).send_modify(|v| *v += 1);
    }

    /// Whether `ancestor` is a strict ancestor of `pid`.
    pub fn is_ancestor(&self, ancestor: Pid, pid: Pid) -> bool {
        let mut cur = self.procs.get(&pid).and_then(|p| p.parent);
        let mut hops = 0;
        while let Some(p) = cur {
            if p == ancestor {
                return true;
            }
            hops += 1;
            if hops > 10_000 {
                return false;
            }
            cur = self.procs.get(&p).and_then(|q| q.parent);
        }
        false
    }

    /// Ids of `root` and every capability derived from it, transitively.
    pub fn derived_caps(&self, root: i64) -> Vec<i64> {
        let mut out = vec![root];
        let mut frontier = vec![root];
        while let Some(id) = frontier.pop() {
            for cap in self.caps.values().flatten() {
                if cap.parent == Some(id) && !out.contains(&cap.id) {
                    out.push(cap.id);
                    frontier.push(cap.id);
                }
            }
        }
        out
    }

    /// Loads processes, live capabilities and pending events from the store. A capability
    /// row whose seal does not verify is refused (logged, not loaded). The four tables are
    /// read at once, on separate connections, and a large set of capabilities is verified
    /// on several threads: a restart with 100,000 processes verifies some 400,000 seals.
    pub async fn load(pool: &SqlitePool, sealer: &Sealer) -> Result<State, sqlx::Error> {
        let mut state = State::default();
        let processes = sqlx::query(
            "SELECT pid, parent_pid, image_id, image_version, goal, status, cwd, budget, usage, \
             exit_payload, started_at, generation FROM processes",
        )
        .fetch_all(pool);
        let caps = sqlx::query(
            "SELECT id, subject, resource, rights, policy, issuer, parent, expires_at, delegable, \
             revocable, revoked, consumed, mac FROM capabilities WHERE revoked = 0 AND consumed = 0",
        )
        .fetch_all(pool);
        let requestable = sqlx::query("SELECT pid, specs, mac FROM requestable").fetch_all(pool);
        // Only live processes' queues, each at most EVENT_QUEUE_MAX long, with payloads
        // within bounds: a backlog left by older runtimes is not loaded whole.
        let events = sqlx::query(
            "SELECT id, target, name, payload, source FROM ( \
               SELECT e.id, e.target, e.name, e.payload, e.source, \
                 ROW_NUMBER() OVER (PARTITION BY e.target ORDER BY e.id) AS n \
               FROM events e JOIN processes p ON p.pid = e.target \
               WHERE e.consumed = 0 AND p.status NOT IN (?, ?, ?) AND length(e.payload) <= ?) \
             WHERE n <= ? ORDER BY id",
        )
        .bind(super::process::Status::Exited.as_str())
        .bind(super::process::Status::Failed.as_str())
        .bind(super::process::Status::Killed.as_str())
        .bind(super::events::EVENT_PAYLOAD_MAX as i64)
        .bind(super::events::EVENT_QUEUE_MAX as i64)
        .fetch_all(pool);
        let (rows, cap_rows, requestable_rows, event_rows) =
            tokio::try_join!(processes, caps, requestable, events)?;
        for row in rows {
            let pid: i64 = row.try_get("pid")?;
            let status: String = row.try_get("status")?;
            let budget: String = row.try_get("budget")?;
            let usage: String = row.try_get("usage")?;
            let exit: Option<String> = row.try_get("exit_payload")?;
            let process = Process {
                pid,
                parent: row.try_get("parent_pid")?,
                image_id: row.try_get("image_id")?,
                image_version: row.try_get("image_version")?,
                goal: row.try_get("goal")?,
                status: status
                    .parse()
                    .map_err(|e: String| sqlx::Error::Decode(e.into()))?,
                resume_to: None,
                cwd: row.try_get("cwd")?,
                budget: serde_json::from_str(&budget).unwrap_or_default(),
                usage: serde_json::from_str(&usage).unwrap_or(Budget {
                    tool_calls: 0,
                    children: 0,
                    syscalls: 0,
                    wall_time_ms: 0,
                }),
                exit_payload: exit.and_then(|e| serde_json::from_str(&e).ok()),
                started_at: row.try_get("started_at")?,
                cancel_requested: false,
                generation: row.try_get("generation")?,
            };
            state.procs.insert(pid, process);
        }
        for cap in verify_caps(&cap_rows, sealer)? {
            if state
                .procs
                .get(&cap.subject)
                .is_none_or(|p| p.status.is_terminal())
            {
                continue;
            }
            state.caps.entry(cap.subject).or_default().push(cap);
        }
        for row in requestable_rows {
            let pid: i64 = row.try_get("pid")?;
            let specs: String = row.try_get("specs")?;
            let mac: Option<String> = row.try_get("mac")?;
            if state.procs.get(&pid).is_none_or(|p| p.status.is_terminal()) {
                continue;
            }
            let sealed = mac.as_deref()
                == Some(crate::store::sealed::requestable_seal(sealer, pid, &specs).as_str());
            match serde_json::from_str::<Vec<CapabilitySpec>>(&specs) {
                Ok(specs) if sealed => {
                    if !specs.is_empty() {
                        state.requestable.insert(pid, specs);
                    }
                }
                _ => refused("requestable", pid),
            }
        }
        for row in event_rows {
            let target: i64 = row.try_get("target")?;
            let payload: String = row.try_get("payload")?;
            state.events.entry(target).or_default().push_back(Event {
                id: row.try_get("id")?,
                name: row.try_get("name")?,
                payload: serde_json::from_str(&payload).unwrap_or(Value::Null),
                source: row.try_get("source")?,
            });
        }
        Ok(state)
    }

    /// The live capabilities of one process, from the store (sealed rows only).
    pub async fn load_caps(
        pool: &SqlitePool,
        pid: Pid,
        sealer: &Sealer,
    ) -> Result<Vec<Capability>, sqlx::Error> {
        let rows = sqlx::query(
            "SELECT id, subject, resource, rights, policy, issuer, parent, expires_at, delegable, \
             revocable, revoked, consumed, mac FROM capabilities \
             WHERE subject = ? AND revoked = 0 AND consumed = 0 ORDER BY id",
        )
        .bind(pid)
        .fetch_all(pool)
        .await?;
        let mut caps = Vec::with_capacity(rows.len());
        for row in &rows {
            caps.extend(cap_from_row(row, sealer)?);
        }
        Ok(caps)
    }
}

/// The capabilities of `rows` whose seals verify, in row order; on several threads when
/// there are many.
fn verify_caps(
    rows: &[sqlx::sqlite::SqliteRow],
    sealer: &Sealer,
) -> Result<Vec<Capability>, sqlx::Error> {
    const PER_THREAD: usize = 4_096;
    let verify = |chunk: &[sqlx::sqlite::SqliteRow]| -> Result<Vec<Capability>, sqlx::Error> {
        let mut caps = Vec::with_capacity(chunk.len());
        for row in chunk {
            caps.extend(cap_from_row(row, sealer)?);
        }
        Ok(caps)
    };
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(rows.len() / PER_THREAD)
        .min(8);
    if threads <= 1 {
        return verify(rows);
    }
    std::thread::scope(|scope| {
        let parts: Vec<_> = rows
            .chunks(rows.len().div_ceil(threads))
            .map(|chunk| scope.spawn(move || verify(chunk)))
            .collect();
        let mut caps = Vec::with_capacity(rows.len());
        for part in parts {
            let part = part
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
            caps.extend(part?);
        }
        Ok(caps)
    })
}

/// A capability row as the kernel wrote it, or `None` (logged) if its seal does not verify
/// or it does not parse.
pub(crate) fn cap_from_row(
    row: &sqlx::sqlite::SqliteRow,
    sealer: &Sealer,
) -> Result<Option<Capability>, sqlx::Error> {
    let id: i64 = row.try_get("id")?;
    let rights: String = row.try_get("rights")?;
    let policy: String = row.try_get("policy")?;
    let mac: Option<String> = row.try_get("mac")?;
    let resource: String = row.try_get("resource")?;
    let fields = CapFields {
        id,
        subject: row.try_get("subject")?,
        resource: &resource,
        rights: &rights,
        policy: &policy,
        issuer: row.try_get("issuer")?,
        parent: row.try_get("parent")?,
        expires_at: row.try_get("expires_at")?,
        delegable: row.try_get::<i64, _>("delegable")? != 0,
        revocable: row.try_get::<i64, _>("revocable")? != 0,
        revoked: row.try_get::<i64, _>("revoked")? != 0,
        consumed: row.try_get::<i64, _>("consumed")? != 0,
    };
    let parsed_rights = serde_json::from_str::<Vec<Right>>(&rights);
    let parsed_policy = policy.parse::<Policy>();
    let (true, Ok(rights), Ok(policy)) = (
        fields.verify(sealer, mac.as_deref()),
        parsed_rights,
        parsed_policy,
    ) else {
        refused("capabilities", id);
        return Ok(None);
    };
    Ok(Some(Capability {
        id,
        subject: fields.subject,
        resource: resource.clone(),
        rights,
        policy,
        issuer: fields.issuer,
        parent: fields.parent,
        expires_at: fields.expires_at,
        delegable: fields.delegable,
        revocable: fields.revocable,
        revoked: fields.revoked,
        consumed: fields.consumed,
    }))
}
