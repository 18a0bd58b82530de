//! Checkpoints: snapshot a process's runtime state, roll it back, fork from it, move it to
//! another database.
//!
//! A checkpoint holds what the kernel owns on a process's behalf: its process fields
//! (image, cwd, budget, usage, goal), its live capabilities, its tool table, the object
//! memory of every namespace it owns (objects with their items), the list of its children
//! (for information) and the audit position it was taken at. The snapshot document is built
//! inside SQLite by one `INSERT … SELECT` run through the writer, so it is ordered after
//! every earlier write and no object row is fetched into Rust.
//!
//! **What a rollback does not undo:** effects outside the runtime (files written, commands
//! run, requests sent). The [`RollbackReport`] lists the ones the process caused after the
//! checkpoint, from the audit log. Children spawned after the checkpoint keep running.
//!
//! These are operator calls (CLI, tests): no syscall reaches them.

use std::collections::{BTreeMap, HashMap, HashSet};

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use sqlx::Row;

use super::capability::{validate_resource, Capability, CapabilitySpec, Pid, Policy, Right};
use super::error::{SysResult, SyscallError};
use super::image::Image;
use super::persist;
use super::process::{own_namespace, Process, Status};
use super::state::State;
use super::syscall::Budget;
use super::Kernel;
use crate::audit::{AuditEntry, Decision};
use crate::store::WriteBatch;

/// The `format` of an exported checkpoint document.
pub const CHECKPOINT_FORMAT: &str = "agent-libos-checkpoint/1";

/// Audit actions of effects outside the runtime, which a rollback cannot undo.
const EXTERNAL_EFFECTS: [&str; 8] = [
    "fs.write_text",
    "fs.append_text",
    "fs.mkdir",
    "fs.delete_file",
    "fs.delete_dir",
    "mem.to_file",
    "shell.run",
    "net.fetch",
];

/// A checkpoint just taken.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Checkpoint {
    pub id: String,
    pub pid: Pid,
    pub name: String,
    pub created_at: i64,
    /// Seq of the checkpoint's own audit record: later records happened after it.
    pub audit_seq: i64,
    pub objects: u64,
    pub capabilities: u64,
    pub tools: u64,
    /// The process's children at that moment (not part of what is restored).
    pub children: Vec<ChildState>,
}

/// A child of the checkpointed process, as it was.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChildState {
    pub pid: Pid,
    pub status: Status,
}

/// One line of [`Kernel::checkpoints`].
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CheckpointInfo {
    pub id: String,
    pub pid: Pid,
    pub name: String,
    pub created_at: i64,
    pub audit_seq: i64,
    pub objects: u64,
}

/// An effect outside the runtime made after the checkpoint: not undone by a rollback.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ExternalEffect {
    pub seq: i64,
    pub ts: i64,
    pub action: String,
    pub target: String,
    pub detail: Value,
}

/// What a rollback restored, and what it could not.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RollbackReport {
    pub checkpoint: String,
    pub pid: Pid,
    /// Objects now in the owned namespaces (all from the checkpoint).
    pub objects: u64,
    /// Objects created after the checkpoint and deleted by the rollback.
    pub objects_removed: u64,
    /// Capabilities of the checkpoint revoked, used up or expired since: a rollback never
    /// brings them back.
    pub capabilities_not_restored: Vec<i64>,
    /// Capabilities gained since the checkpoint (and everything delegated from them),
    /// now revoked.
    pub capabilities_revoked: Vec<i64>,
    pub tools: u64,
    /// Effects outside the runtime the process caused after the checkpoint, oldest first.
    pub external_effects: Vec<ExternalEffect>,
    /// Children spawned after the checkpoint (left as they are).
    pub children_since: Vec<Pid>,
}

/// The process fields of a snapshot.
#[derive(Debug, Clone, Deserialize)]
struct SnapProcess {
    pid: Pid,
    parent: Option<Pid>,
    image_id: String,
    image_version: String,
    goal: String,
    cwd: String,
    budget: Budget,
    usage: Budget,
}

/// A capability of a snapshot.
#[derive(Debug, Clone, Deserialize)]
struct SnapCap {
    id: i64,
    resource: String,
    rights: Vec<Right>,
    policy: String,
    expires_at: Option<i64>,
    delegable: bool,
}

#[derive(Debug, Clone, Deserialize)]
struct SnapNamespace {
    name: String,
}

/// Everything of a snapshot but its objects (kept as JSON: they go back into SQL).
struct Snapshot {
    process: SnapProcess,
    caps: Vec<SnapCap>,
    namespaces: Vec<String>,
    /// The namespaces as stored (`[{name, created_at}]`).
    namespaces_doc: Value,
    tools: Vec<Value>,
    children: Vec<ChildState>,
}

impl Snapshot {
    fn from_parts(process: &str, caps: &str, namespaces: &str, tools: &str) -> SysResult<Self> {
        let bad = |what: &str, e: serde_json::Error| {
            SyscallError::invalid(format!("checkpoint {what}: {e}"))
        };
        let namespaces_doc: Value =
            serde_json::from_str(namespaces).map_err(|e| bad("namespaces", e))?;
        let namespaces: Vec<SnapNamespace> =
            serde_json::from_value(namespaces_doc.clone()).map_err(|e| bad("namespaces", e))?;
        Ok(Snapshot {
            process: serde_json::from_str(process).map_err(|e| bad("process", e))?,
            caps: serde_json::from_str(caps).map_err(|e| bad("capabilities", e))?,
            namespaces: namespaces.into_iter().map(|n| n.name).collect(),
            namespaces_doc,
            tools: serde_json::from_str(tools).map_err(|e| bad("tools", e))?,
            children: Vec::new(),
        })
    }

    fn from_value(data: &Value) -> SysResult<Self> {
        let part = |key: &str| {
            data.get(key)
                .map(Value::to_string)
                .ok_or_else(|| SyscallError::invalid(format!("checkpoint data has no '{key}'")))
        };
        let mut snap = Snapshot::from_parts(
            &part("process")?,
            &part("capabilities")?,
            &part("namespaces")?,
            &part("tools")?,
        )?;
        snap.children = data
            .get("children")
            .cloned()
            .and_then(|c| serde_json::from_value(c).ok())
            .unwrap_or_default();
        Ok(snap)
    }

    /// Whether a capability resource names one of the snapshot's own namespaces (the copy
    /// of which lives under the new process's own namespace after a fork).
    fn names_owned_namespace(&self, resource: &str) -> bool {
        let Some(ns) = resource.strip_prefix("namespace:") else {
            return false;
        };
        self.namespaces.iter().any(|own| {
            ns == own
                || ns
                    .strip_prefix(own.as_str())
                    .is_some_and(|r| r.starts_with('/'))
        })
    }
}

/// Builds the snapshot document in SQL. Parameters: ?1 checkpoint id, ?2 pid, ?3 name,
/// ?4 now, ?5 process JSON, ?6 children JSON. Strings are built by concatenation (every
/// stored JSON column already holds valid JSON text), so nothing is parsed twice.
const CREATE_SQL: &str = "\
WITH
 o AS (
   SELECT COUNT(*) AS n,
     '[' || COALESCE(group_concat(
       '{\"id\":' || json_quote(o.id) ||
       ',\"namespace\":' || json_quote(o.namespace) ||
       ',\"name\":' || json_quote(o.name) ||
       ',\"type\":' || json_quote(o.type) ||
       ',\"title\":' || json_quote(o.title) ||
       ',\"summary\":' || json_quote(o.summary) ||
       ',\"tags\":' || o.tags ||
       ',\"mime\":' || json_quote(o.mime) ||
       ',\"payload\":' || o.payload ||
       ',\"appendable\":' || iif(o.appendable, 'true', 'false') ||
       ',\"created_by\":' || json_quote(o.created_by) ||
       ',\"created_at\":' || o.created_at ||
       ',\"items\":' || iif(o.appendable,
         (SELECT '[' || COALESCE(group_concat('[' || i.seq || ',' || i.item || ']', ','), '') || ']'
          FROM object_items i WHERE i.object_id = o.id), '[]') ||
       '}', ','), '') || ']' AS j
   FROM objects o JOIN namespaces s ON s.name = o.namespace
   WHERE s.owner = ?2),
 c AS (
   SELECT COUNT(*) AS n,
     '[' || COALESCE(group_concat(json_object(
       'id', id, 'resource', resource, 'rights', json(rights), 'policy', policy,
       'issuer', issuer, 'parent', parent, 'expires_at', expires_at,
       'delegable', json(iif(delegable, 'true', 'false')),
       'revocable', json(iif(revocable, 'true', 'false')),
       'created_at', created_at), ',' ORDER BY id), '') || ']' AS j
   FROM capabilities
   WHERE subject = ?2 AND revoked = 0 AND consumed = 0
     AND (expires_at IS NULL OR expires_at > ?4)),
 t AS (
   SELECT COUNT(*) AS n,
     '[' || COALESCE(group_concat(json_object(
       'name', name, 'object_id', object_id, 'source_hash', source_hash,
       'meta', json(meta), 'registered_at', registered_at), ',' ORDER BY name), '') || ']' AS j
   FROM tools WHERE pid = ?2),
 s AS (
   SELECT '[' || COALESCE(group_concat(json_object('name', name, 'created_at', created_at),
     ',' ORDER BY name), '') || ']' AS j
   FROM namespaces WHERE owner = ?2)
INSERT INTO checkpoints (id, pid, name, created_at, audit_seq, objects, capabilities, tools, data)
SELECT ?1, ?2, ?3, ?4, (SELECT COALESCE(MAX(seq), 0) FROM audit), o.n, c.n, t.n,
  '{\"process\":' || ?5 || ',\"children\":' || ?6 || ',\"namespaces\":' || s.j ||
  ',\"capabilities\":' || c.j || ',\"tools\":' || t.j || ',\"objects\":' || o.j || '}'
FROM o, c, t, s";

impl Kernel {
    /// Takes a checkpoint of `pid`'s runtime state.
    pub async fn checkpoint_create(&self, pid: Pid, name: &str) -> SysResult<Checkpoint> {
        let now = self.now();
        let (process, children) = {
            let state = self.inner.state.lock();
            let process = state
                .process(pid)
                .cloned()
                .ok_or_else(|| SyscallError::NotFound(format!("process {pid}")))?;
            (process, children_of(&state, pid))
        };
        let id = crate::util::new_id("ckpt");
        let batch = WriteBatch::default()
            .stmt(
                CREATE_SQL,
                vec![
                    id.clone().into(),
                    pid.into(),
                    name.into(),
                    now.into(),
                    persist::json(&process).into(),
                    persist::json(&children).into(),
                ],
            )
            .audit(AuditEntry {
                ts: now,
                actor: "operator".into(),
                action: "checkpoint.create".into(),
                target: format!("process:{pid}"),
                decision: Decision::Ok,
                capability_refs: vec![],
                correlation_id: None,
                parent_seq: None,
                detail: json!({"checkpoint": id, "name": name}),
            });
        let seqs = self.ckpt_commit(batch).await?;
        let audit_seq = seqs.first().copied().unwrap_or_default();
        // The SQL could only see the chain head before this group; record the exact seq
        // (queued: readers of checkpoints flush first, and the stored value until then is a
        // lower bound, which can only make a rollback list more effects, never fewer).
        self.inner
            .store
            .submit(WriteBatch::default().stmt(
                "UPDATE checkpoints SET audit_seq = ? WHERE id = ?",
                vec![audit_seq.into(), id.clone().into()],
            ))
            .await
            .map_err(|e| SyscallError::Internal(format!("store: {e}")))?;
        let row = sqlx::query("SELECT objects, capabilities, tools FROM checkpoints WHERE id = ?")
            .bind(&id)
            .fetch_one(self.inner.store.pool())
            .await?;
        Ok(Checkpoint {
            id,
            pid,
            name: name.to_string(),
            created_at: now,
            audit_seq,
            objects: row.try_get::<i64, _>(0)? as u64,
            capabilities: row.try_get::<i64, _>(1)? as u64,
            tools: row.try_get::<i64, _>(2)? as u64,
            children,
        })
    }

    /// The checkpoints of `pid` (or of every process), oldest first.
    pub async fn checkpoints(&self, pid: Option<Pid>) -> SysResult<Vec<CheckpointInfo>> {
        self.ckpt_flush().await?;
        let rows = sqlx::query(
            "SELECT id, pid, name, created_at, audit_seq, objects FROM checkpoints \
             WHERE ?1 IS NULL OR pid = ?1 ORDER BY created_at, id",
        )
        .bind(pid)
        .fetch_all(self.inner.store.pool())
        .await?;
        rows.iter()
            .map(|r| {
                Ok(CheckpointInfo {
                    id: r.try_get("id")?,
                    pid: r.try_get("pid")?,
                    name: r.try_get("name")?,
                    created_at: r.try_get("created_at")?,
                    audit_seq: r.try_get("audit_seq")?,
                    objects: r.try_get::<i64, _>("objects")? as u64,
                })
            })
            .collect()
    }

    /// Restores the runtime state of the checkpointed process in one transaction: the
    /// object memory of its namespaces, its tool table and its process fields (cwd, image,
    /// budget, usage); capabilities gained since are revoked, and those revoked, used up or
    /// expired since stay so (a rollback resurrects no authority). Effects outside the
    /// runtime are listed, not undone.
    pub async fn checkpoint_rollback(&self, id: &str) -> SysResult<RollbackReport> {
        let (pid, audit_seq, snap) = self.load_snapshot_meta(id).await?;
        let now = self.now();
        let snap_cap_ids: HashSet<i64> = snap.caps.iter().map(|c| c.id).collect();

        let objects_removed: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM objects o JOIN namespaces s ON s.name = o.namespace \
             WHERE s.owner = ?1 AND o.id NOT IN (SELECT value ->> 'id' FROM \
             jsonb_each((SELECT data FROM checkpoints WHERE id = ?2), '$.objects'))",
        )
        .bind(pid)
        .bind(id)
        .fetch_one(self.inner.store.pool())
        .await?;
        let has_validations = self.ckpt_table_exists("tool_validations").await?;

        let mut batch = WriteBatch::default();
        let (revoked, not_restored, restored_process, children_since) = {
            let mut state = self.inner.state.lock();
            let current = state
                .process(pid)
                .cloned()
                .ok_or_else(|| SyscallError::NotFound(format!("process {pid}")))?;
            if current.status.is_terminal() {
                return Err(SyscallError::IllegalState(format!(
                    "process {pid} is {}: a checkpoint cannot bring it back",
                    current.status
                )));
            }
            // Capabilities of the checkpoint revoked, used up or expired since stay so: a
            // rollback never brings a capability back.
            let live: HashSet<i64> = state
                .caps_of(pid)
                .iter()
                .filter(|c| c.is_live(now))
                .map(|c| c.id)
                .collect();
            let mut not_restored: Vec<i64> = snap_cap_ids
                .iter()
                .copied()
                .filter(|id| !live.contains(id))
                .collect();
            not_restored.sort_unstable();
            // Capabilities gained since the checkpoint go, with everything derived from them.
            let mut revoked: Vec<i64> = Vec::new();
            let gained: Vec<i64> = state
                .caps_of(pid)
                .iter()
                .filter(|c| !snap_cap_ids.contains(&c.id))
                .map(|c| c.id)
                .collect();
            for cap in gained {
                for id in state.derived_caps(cap) {
                    if !revoked.contains(&id) {
                        revoked.push(id);
                    }
                }
            }
            revoked.sort_unstable();
            // Fail closed: no authorization uses them from now on.
            let gone: HashSet<i64> = revoked.iter().copied().collect();
            for caps in state.caps.values_mut() {
                caps.retain(|c| {
                    if gone.contains(&c.id) {
                        persist::revoke_cap(&mut batch, c, self.inner.store.sealer());
                        false
                    } else {
                        true
                    }
                });
            }
            let mut process = current;
            process.image_id = snap.process.image_id.clone();
            process.image_version = snap.process.image_version.clone();
            process.cwd = snap.process.cwd.clone();
            process.budget = snap.process.budget;
            process.usage = snap.process.usage;
            process.generation += 1;
            let known: HashSet<Pid> = snap.children.iter().map(|c| c.pid).collect();
            let since: Vec<Pid> = children_of(&state, pid)
                .into_iter()
                .map(|c| c.pid)
                .filter(|p| !known.contains(p))
                .collect();
            (revoked, not_restored, process, since)
        };

        // The snapshot's objects and items, parsed once into temporary tables of the
        // writer's connection (dropped at the end of the batch).
        batch.push("DROP TABLE IF EXISTS temp.ckpt_objects", vec![]);
        batch.push("DROP TABLE IF EXISTS temp.ckpt_items", vec![]);
        batch.push(
            "CREATE TEMP TABLE ckpt_objects (id TEXT PRIMARY KEY, v BLOB NOT NULL)",
            vec![],
        );
        batch.push(
            "CREATE TEMP TABLE ckpt_items (object_id TEXT NOT NULL, seq INTEGER NOT NULL, \
             item TEXT NOT NULL, PRIMARY KEY (object_id, seq))",
            vec![],
        );
        batch.push(
            "INSERT INTO temp.ckpt_objects (id, v) SELECT value ->> 'id', value \
             FROM jsonb_each((SELECT data FROM checkpoints WHERE id = ?), '$.objects')",
            vec![id.into()],
        );
        batch.push(
            "INSERT INTO temp.ckpt_items (object_id, seq, item) \
             SELECT o.id, i.value ->> 0, i.value -> 1 \
             FROM temp.ckpt_objects AS o, jsonb_each(o.v, '$.items') AS i",
            vec![],
        );
        if has_validations {
            batch.push(
                "DELETE FROM tool_validations WHERE object_id IN (\
                   SELECT o.id FROM objects o JOIN namespaces s ON s.name = o.namespace \
                   WHERE s.owner = ? AND o.id NOT IN (SELECT id FROM temp.ckpt_objects))",
                vec![pid.into()],
            );
        }
        // Items appended since go; items are append-only, so the rest are usually untouched.
        batch.push(
            "DELETE FROM object_items WHERE object_id IN (\
               SELECT o.id FROM objects o JOIN namespaces s ON s.name = o.namespace \
               WHERE s.owner = ?) \
             AND NOT EXISTS (SELECT 1 FROM temp.ckpt_items c \
               WHERE c.object_id = object_items.object_id AND c.seq = object_items.seq)",
            vec![pid.into()],
        );
        batch.push(
            "DELETE FROM objects WHERE namespace IN (SELECT name FROM namespaces WHERE owner = ?) \
             AND id NOT IN (SELECT id FROM temp.ckpt_objects)",
            vec![pid.into()],
        );
        batch.push(
            "DELETE FROM namespaces WHERE owner = ?1 AND name <> ?2 AND name NOT IN \
             (SELECT value ->> 'name' FROM json_each(?3))",
            vec![
                pid.into(),
                own_namespace(pid).into(),
                snap.namespaces_doc.to_string().into(),
            ],
        );
        batch.push(
            "INSERT OR IGNORE INTO namespaces (name, owner, created_at) \
             SELECT value ->> 'name', ?1, value ->> 'created_at' FROM json_each(?2)",
            vec![pid.into(), snap.namespaces_doc.to_string().into()],
        );
        // Objects are immutable once created: only missing or altered rows are written.
        batch.push(
            "INSERT INTO objects (id, namespace, name, type, title, summary, tags, mime, payload, \
               appendable, created_by, created_at) \
             SELECT id, v ->> 'namespace', v ->> 'name', v ->> 'type', v ->> 'title', \
               v ->> 'summary', v -> 'tags', v ->> 'mime', v -> 'payload', v ->> 'appendable', \
               v ->> 'created_by', v ->> 'created_at' \
             FROM temp.ckpt_objects WHERE true \
             ON CONFLICT (id) DO UPDATE SET namespace = excluded.namespace, name = excluded.name, \
               type = excluded.type, title = excluded.title, summary = excluded.summary, \
               tags = excluded.tags, mime = excluded.mime, payload = excluded.payload, \
               appendable = excluded.appendable, created_by = excluded.created_by, \
               created_at = excluded.created_at \
             WHERE objects.namespace IS NOT excluded.namespace OR objects.name IS NOT excluded.name \
               OR objects.type IS NOT excluded.type OR objects.title IS NOT excluded.title \
               OR objects.summary IS NOT excluded.summary OR objects.tags IS NOT excluded.tags \
               OR objects.mime IS NOT excluded.mime OR objects.payload IS NOT excluded.payload \
               OR objects.appendable IS NOT excluded.appendable \
               OR objects.created_by IS NOT excluded.created_by \
               OR objects.created_at IS NOT excluded.created_at",
            vec![],
        );
        batch.push(
            "INSERT INTO object_items (object_id, seq, item) \
             SELECT object_id, seq, item FROM temp.ckpt_items WHERE true \
             ON CONFLICT (object_id, seq) DO UPDATE SET item = excluded.item \
             WHERE object_items.item IS NOT excluded.item",
            vec![],
        );
        batch.push("DROP TABLE temp.ckpt_objects", vec![]);
        batch.push("DROP TABLE temp.ckpt_items", vec![]);
        batch.push("DELETE FROM tools WHERE pid = ?", vec![pid.into()]);
        batch.push(
            "INSERT INTO tools (pid, name, object_id, source_hash, meta, registered_at) \
             SELECT ?1, value ->> 'name', value ->> 'object_id', value ->> 'source_hash', \
               value -> 'meta', value ->> 'registered_at' FROM json_each(?2)",
            vec![
                pid.into(),
                Value::Array(snap.tools.clone()).to_string().into(),
            ],
        );
        persist::update_process(&mut batch, &restored_process, now);
        // Work in progress belongs to the timeline left behind: its invocations end, and
        // their journals go, so nothing recorded before the rollback is handed out after it.
        let abandoned = json!({"err": SyscallError::IllegalState(format!(
            "process {pid} was rolled back to checkpoint {id}"
        )).to_wire()});
        batch.push(
            "DELETE FROM journal_blobs WHERE sha256 IN (SELECT j.blob FROM journal j \
               JOIN invocations i ON i.id = j.invocation_id \
               WHERE i.pid = ?1 AND i.status IN ('running', 'waiting_human')) \
             AND NOT EXISTS (SELECT 1 FROM journal j JOIN invocations i ON i.id = j.invocation_id \
               WHERE j.blob = journal_blobs.sha256 \
               AND NOT (i.pid = ?1 AND i.status IN ('running', 'waiting_human')))",
            vec![pid.into()],
        );
        batch.push(
            "DELETE FROM journal WHERE invocation_id IN (SELECT id FROM invocations \
             WHERE pid = ? AND status IN ('running', 'waiting_human'))",
            vec![pid.into()],
        );
        batch.push(
            "UPDATE invocations SET status = 'failed', outcome = ?, finished_at = ? \
             WHERE pid = ? AND status IN ('running', 'waiting_human')",
            vec![abandoned.to_string().into(), now.into(), pid.into()],
        );
        let refs = revoked.clone();
        let batch = batch.audit(AuditEntry {
            ts: now,
            actor: "operator".into(),
            action: "checkpoint.rollback".into(),
            target: format!("process:{pid}"),
            decision: Decision::Ok,
            capability_refs: refs,
            correlation_id: None,
            parent_seq: None,
            detail: json!({
                "checkpoint": id,
                "audit_seq": audit_seq,
                "objects_removed": objects_removed,
                "revoked": revoked,
                "not_restored": not_restored,
            }),
        });
        let committed = self.ckpt_commit(batch).await;
        // Whatever happened, memory follows the store for this process.
        let caps =
            State::load_caps(self.inner.store.pool(), pid, self.inner.store.sealer()).await?;
        {
            let mut state = self.inner.state.lock();
            if committed.is_ok() {
                if let Some(p) = state.procs.get_mut(&pid) {
                    p.image_id = restored_process.image_id.clone();
                    p.image_version = restored_process.image_version.clone();
                    p.cwd = restored_process.cwd.clone();
                    p.budget = restored_process.budget;
                    p.usage = restored_process.usage;
                    p.generation = restored_process.generation;
                }
            }
            if state.process(pid).is_some_and(|p| !p.status.is_terminal()) {
                state.caps.insert(pid, caps);
            }
            state.bump(pid);
        }
        self.forget_tool_table(pid);
        committed?;

        let objects: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM objects o JOIN namespaces s ON s.name = o.namespace \
             WHERE s.owner = ?",
        )
        .bind(pid)
        .fetch_one(self.inner.store.pool())
        .await?;
        let rows = sqlx::query(
            "SELECT seq, ts, action, target, detail FROM audit \
             WHERE seq > ? AND actor = ? AND decision = 'allow' \
               AND action IN (SELECT value FROM json_each(?)) ORDER BY seq",
        )
        .bind(audit_seq)
        .bind(format!("pid:{pid}"))
        .bind(persist::json(&EXTERNAL_EFFECTS))
        .fetch_all(self.inner.store.pool())
        .await?;
        let external_effects = rows
            .iter()
            .map(|r| {
                let detail: String = r.try_get("detail")?;
                Ok(ExternalEffect {
                    seq: r.try_get("seq")?,
                    ts: r.try_get("ts")?,
                    action: r.try_get("action")?,
                    target: r.try_get("target")?,
                    detail: serde_json::from_str(&detail).unwrap_or(Value::Null),
                })
            })
            .collect::<SysResult<Vec<_>>>()?;
        Ok(RollbackReport {
            checkpoint: id.to_string(),
            pid,
            objects: objects as u64,
            objects_removed: objects_removed as u64,
            capabilities_not_restored: not_restored,
            capabilities_revoked: revoked,
            tools: snap.tools.len() as u64,
            external_effects,
            children_since,
        })
    }

    /// Starts a new process from a checkpoint, as a sibling of the checkpointed process:
    /// copies of its objects in the new process's own namespace (new ids, same names), its
    /// capabilities re-issued as derived from the originals (revoking an original reaches
    /// the copy; originals revoked or used up since are not re-issued), its tool table.
    pub async fn checkpoint_fork(&self, id: &str) -> SysResult<Pid> {
        let (_, _, snap) = self.load_snapshot_meta(id).await?;
        let objects: String =
            sqlx::query_scalar("SELECT data -> '$.objects' FROM checkpoints WHERE id = ?")
                .bind(id)
                .fetch_one(self.inner.store.pool())
                .await?;
        let objects: Vec<Value> = serde_json::from_str(&objects).map_err(SyscallError::internal)?;
        let image = self
            .ckpt_image(&snap.process.image_id, &snap.process.image_version)
            .await?
            .ok_or_else(|| {
                SyscallError::NotFound(format!(
                    "image {} version {}",
                    snap.process.image_id, snap.process.image_version
                ))
            })?;
        // Re-issued from the capability rows themselves (sealed, still live, the snapshot
        // process's own), never from what the snapshot document says they were.
        let ids: Vec<i64> = snap.caps.iter().map(|c| c.id).collect();
        let rows = sqlx::query(
            "SELECT id, subject, resource, rights, policy, issuer, parent, expires_at, delegable, \
             revocable, revoked, consumed, mac FROM capabilities \
             WHERE id IN (SELECT value FROM json_each(?)) AND revoked = 0 AND consumed = 0 \
             ORDER BY id",
        )
        .bind(persist::json(&ids))
        .fetch_all(self.inner.store.pool())
        .await?;
        let now = self.now();
        let mut issue = Vec::new();
        for row in &rows {
            let Some(cap) = super::state::cap_from_row(row, self.inner.store.sealer())? else {
                continue;
            };
            if cap.subject == snap.process.pid && cap.is_live(now) {
                issue.push(Issue {
                    parent: Some(cap.id),
                    resource: cap.resource,
                    rights: cap.rights,
                    policy: cap.policy,
                    expires_at: cap.expires_at,
                    delegable: cap.delegable,
                });
            }
        }
        let parent = snap
            .process
            .parent
            .filter(|p| self.inner.state.lock().process(*p).is_some());
        // The sibling may ask for what the original may (nothing if it has ended).
        let requestable = self
            .inner
            .state
            .lock()
            .requestable
            .get(&snap.process.pid)
            .cloned()
            .unwrap_or_default();
        self.resume_snapshot(Resume {
            snap: &snap,
            objects,
            image: &image,
            parent,
            issue,
            requestable,
            action: "checkpoint.fork",
            detail: json!({"checkpoint": id, "from": snap.process.pid}),
        })
        .await
    }

    /// A self-contained JSON document of a checkpoint (its data and, if registered, the
    /// manifest of its image), for [`Kernel::checkpoint_import`] into another database.
    pub async fn checkpoint_export(&self, id: &str) -> SysResult<Value> {
        let row = sqlx::query(
            "SELECT pid, name, created_at, audit_seq, data FROM checkpoints WHERE id = ?",
        )
        .bind(id)
        .fetch_optional(self.inner.store.pool())
        .await?
        .ok_or_else(|| SyscallError::NotFound(format!("checkpoint {id}")))?;
        let data: String = row.try_get("data")?;
        let data: Value = serde_json::from_str(&data).map_err(SyscallError::internal)?;
        let pid: Pid = row.try_get("pid")?;
        let image_id = data["process"]["image_id"].as_str().unwrap_or_default();
        let version = data["process"]["image_version"]
            .as_str()
            .unwrap_or_default();
        let image = match self.ckpt_image(image_id, version).await? {
            Some(img) if img.id != "base" => serde_json::to_value(img).ok(),
            _ => None,
        };
        self.audit_operator(
            "operator",
            "checkpoint.export",
            &format!("process:{pid}"),
            json!({"checkpoint": id}),
        )
        .await?;
        Ok(json!({
            "format": CHECKPOINT_FORMAT,
            "checkpoint": {
                "id": id,
                "pid": pid,
                "name": row.try_get::<String, _>("name")?,
                "created_at": row.try_get::<i64, _>("created_at")?,
                "audit_seq": row.try_get::<i64, _>("audit_seq")?,
            },
            "image": image,
            "data": data,
        }))
    }

    /// Resumes an exported checkpoint here as a new root process: its memory, tool table and
    /// fields. A document is data: it grants nothing. The new process holds its own
    /// namespace and exactly `options.grants` (the importing operator's, given again
    /// explicitly); the document's capabilities are only listed in the report. Its image
    /// must be registered here, or `options.register_image` registers the document's
    /// manifest (whose capabilities every later spawn of that image would get).
    pub async fn checkpoint_import(
        &self,
        doc: Value,
        options: ImportOptions,
    ) -> SysResult<ImportReport> {
        if doc.get("format").and_then(Value::as_str) != Some(CHECKPOINT_FORMAT) {
            return Err(SyscallError::invalid(format!(
                "not a checkpoint document (format must be \"{CHECKPOINT_FORMAT}\")"
            )));
        }
        let data = doc
            .get("data")
            .ok_or_else(|| SyscallError::invalid("checkpoint document has no data"))?;
        let snap = Snapshot::from_value(data)?;
        let objects: Vec<Value> = match data.get("objects") {
            Some(Value::Array(objects)) => objects.clone(),
            _ => {
                return Err(SyscallError::invalid(
                    "checkpoint data has no objects array",
                ))
            }
        };
        for spec in &options.grants {
            validate_resource(&spec.resource).map_err(SyscallError::invalid)?;
        }
        let listed: Vec<CapabilitySpec> = snap
            .caps
            .iter()
            .filter(|c| !snap.names_owned_namespace(&c.resource))
            .map(|c| CapabilitySpec {
                resource: c.resource.clone(),
                rights: c.rights.clone(),
                policy: c.policy.parse().unwrap_or(Policy::AlwaysDeny),
                delegable: c.delegable,
                expires_at: c.expires_at,
            })
            .collect();
        let (image_id, version) = (&snap.process.image_id, &snap.process.image_version);
        let image = match self.ckpt_image(image_id, version).await? {
            Some(image) => image,
            None if !options.register_image => {
                return Err(SyscallError::NotFound(format!(
                    "image {image_id} version {version} is not registered here; register it first \
                     (`agent-libos image register`), or import with --register-image to register \
                     the document's manifest (review it: its capabilities go to every spawn of it)"
                )))
            }
            None => {
                let shipped: Image = doc
                    .get("image")
                    .filter(|i| !i.is_null())
                    .cloned()
                    .ok_or_else(|| {
                        SyscallError::NotFound(format!(
                            "image {image_id} version {version} (not registered here, not in the document)"
                        ))
                    })
                    .and_then(|i| {
                        serde_json::from_value(i)
                            .map_err(|e| SyscallError::invalid(format!("image manifest: {e}")))
                    })?;
                if &shipped.id != image_id || &shipped.version != version {
                    return Err(SyscallError::invalid(format!(
                        "the document's image is {} {}, its process ran {image_id} {version}",
                        shipped.id, shipped.version
                    )));
                }
                self.register_image(&shipped).await?;
                shipped
            }
        };
        let from = doc["checkpoint"]["id"].clone();
        let issue = options
            .grants
            .iter()
            .map(|spec| Issue {
                parent: None,
                resource: spec.resource.clone(),
                rights: spec.rights.clone(),
                policy: spec.policy,
                expires_at: spec.expires_at,
                delegable: spec.delegable,
            })
            .collect();
        let pid = self
            .resume_snapshot(Resume {
                snap: &snap,
                objects,
                image: &image,
                parent: None,
                issue,
                requestable: Vec::new(),
                action: "checkpoint.import",
                detail: json!({"checkpoint": from, "from": snap.process.pid, "listed": listed.len()}),
            })
            .await?;
        let own = format!("namespace:{}", own_namespace(pid));
        let granted = self
            .capabilities(pid)
            .into_iter()
            .filter(|c| c.resource != own && c.resource != format!("{own}/**"))
            .map(|c| c.id)
            .collect();
        Ok(ImportReport {
            pid,
            granted,
            not_granted: listed,
        })
    }

    /// Creates the process a fork or import resumes, with its memory, capabilities and tool
    /// table, in one transaction.
    async fn resume_snapshot(&self, r: Resume<'_>) -> SysResult<Pid> {
        let snap = r.snap;
        let now = self.now();
        let pid = self.new_pid().await?;
        let own = own_namespace(pid);

        // Namespaces: the old own namespace becomes the new one; any other owned namespace
        // moves under it.
        let old_own = own_namespace(snap.process.pid);
        let map_ns = |ns: &str| -> SysResult<String> {
            let mapped = if ns == old_own {
                own.clone()
            } else if let Some(rest) = ns.strip_prefix(&format!("{old_own}/")) {
                format!("{own}/{rest}")
            } else {
                format!("{own}/{ns}")
            };
            if valid_namespace(&mapped) {
                Ok(mapped)
            } else {
                Err(SyscallError::invalid(format!(
                    "checkpoint namespace '{ns}' cannot be restored"
                )))
            }
        };
        let mut namespaces: BTreeMap<String, String> = BTreeMap::new();
        namespaces.insert(old_own.clone(), own.clone());
        for ns in &snap.namespaces {
            namespaces.insert(ns.clone(), map_ns(ns)?);
        }

        // Objects: new ids, same names, items kept with their seqs.
        let mut ids: HashMap<String, String> = HashMap::new();
        let mut new_objects = Vec::with_capacity(r.objects.len());
        let mut items = Vec::new();
        for mut object in r.objects {
            let old_id = object["id"].as_str().unwrap_or_default().to_string();
            let ns = object["namespace"].as_str().unwrap_or_default().to_string();
            let ns = match namespaces.get(&ns) {
                Some(n) => n.clone(),
                None => {
                    let mapped = map_ns(&ns)?;
                    namespaces.insert(ns, mapped.clone());
                    mapped
                }
            };
            if object["type"].as_str().is_none_or(str::is_empty) {
                return Err(SyscallError::invalid(format!(
                    "checkpoint object {old_id} has no type"
                )));
            }
            let new_id = crate::util::new_id("obj");
            if let Some(Value::Array(list)) = object.get("items") {
                for item in list {
                    items.push(json!([new_id, item[0], item[1]]));
                }
            }
            object["id"] = json!(new_id);
            object["namespace"] = json!(ns);
            object["created_by"] = json!(pid);
            if let Some(map) = object.as_object_mut() {
                map.remove("items");
            }
            ids.insert(old_id, new_id);
            new_objects.push(object);
        }
        let tools: Vec<Value> = snap
            .tools
            .iter()
            .map(|t| {
                let mut t = t.clone();
                if let Some(new) = t["object_id"].as_str().and_then(|o| ids.get(o)) {
                    t["object_id"] = json!(new);
                }
                t
            })
            .collect();

        // Capabilities: the new own namespace's, then the snapshot's (not those naming the
        // old owned namespaces: the copies live under the new own namespace).
        let mut caps = Vec::new();
        for resource in [format!("namespace:{own}"), format!("namespace:{own}/**")] {
            let mut cap = Capability::own_memory(pid, resource);
            cap.id = self.new_cap_id().await?;
            caps.push(cap);
        }
        for cap in r.issue {
            if snap.names_owned_namespace(&cap.resource) {
                continue;
            }
            let resource = match cap
                .resource
                .strip_prefix("object:")
                .and_then(|o| ids.get(o))
            {
                Some(new) => format!("object:{new}"),
                None => cap.resource.clone(),
            };
            caps.push(Capability {
                id: self.new_cap_id().await?,
                subject: pid,
                resource,
                rights: cap.rights,
                policy: cap.policy,
                issuer: None,
                parent: cap.parent,
                expires_at: cap.expires_at,
                delegable: cap.delegable,
                revocable: true,
                revoked: false,
                consumed: false,
            });
        }

        let process = Process {
            pid,
            parent: r.parent,
            image_id: r.image.id.clone(),
            image_version: r.image.version.clone(),
            goal: snap.process.goal.clone(),
            status: Status::Runnable,
            resume_to: None,
            cwd: snap.process.cwd.clone(),
            budget: snap.process.budget,
            usage: snap.process.usage,
            exit_payload: None,
            started_at: now,
            cancel_requested: false,
            generation: 0,
        };
        let mut batch = WriteBatch::default();
        persist::insert_process(&mut batch, &process, now);
        let mut created: Vec<&String> = namespaces.values().collect();
        created.sort();
        created.dedup();
        for ns in created {
            persist::insert_namespace(&mut batch, ns, Some(pid), now);
        }
        for cap in &caps {
            persist::insert_cap(&mut batch, cap, now, self.inner.store.sealer());
        }
        persist::insert_requestable(&mut batch, pid, &r.requestable, self.inner.store.sealer());
        batch.push(
            "INSERT INTO objects (id, namespace, name, type, title, summary, tags, mime, payload, \
               appendable, created_by, created_at) \
             SELECT value ->> 'id', value ->> 'namespace', value ->> 'name', value ->> 'type', \
               value ->> 'title', value ->> 'summary', COALESCE(value -> 'tags', '[]'), \
               value ->> 'mime', COALESCE(value -> 'payload', 'null'), \
               COALESCE(value ->> 'appendable', 0), value ->> 'created_by', \
               COALESCE(value ->> 'created_at', ?2) \
             FROM json_each(?1)",
            vec![Value::Array(new_objects).to_string().into(), now.into()],
        );
        batch.push(
            "INSERT INTO object_items (object_id, seq, item) \
             SELECT value ->> 0, value ->> 1, value -> 2 FROM json_each(?)",
            vec![Value::Array(items).to_string().into()],
        );
        batch.push(
            "INSERT INTO tools (pid, name, object_id, source_hash, meta, registered_at) \
             SELECT ?1, value ->> 'name', value ->> 'object_id', value ->> 'source_hash', \
               COALESCE(value -> 'meta', '{}'), COALESCE(value ->> 'registered_at', ?2) \
             FROM json_each(?3)",
            vec![
                pid.into(),
                now.into(),
                Value::Array(tools).to_string().into(),
            ],
        );
        let cap_ids: Vec<i64> = caps.iter().map(|c| c.id).collect();
        let mut detail = r.detail;
        detail["pid"] = json!(pid);
        detail["objects"] = json!(ids.len());
        detail["capabilities"] = json!(cap_ids);
        let batch = batch
            .audit(AuditEntry {
                ts: now,
                actor: "operator".into(),
                action: "proc.create".into(),
                target: format!("process:{pid}"),
                decision: Decision::Ok,
                capability_refs: cap_ids.clone(),
                correlation_id: None,
                parent_seq: None,
                detail: json!({"parent": r.parent, "image": r.image.id, "version": r.image.version}),
            })
            .audit(AuditEntry {
                ts: now,
                actor: "operator".into(),
                action: r.action.into(),
                target: format!("process:{pid}"),
                decision: Decision::Ok,
                capability_refs: cap_ids,
                correlation_id: None,
                parent_seq: None,
                detail,
            });
        self.ckpt_commit(batch).await?;
        let mut state = self.inner.state.lock();
        state.caps.insert(pid, caps);
        state.requestable.insert(pid, r.requestable);
        state.procs.insert(pid, process);
        Ok(pid)
    }

    /// The process id, audit position and snapshot (without objects) of a checkpoint.
    async fn load_snapshot_meta(&self, id: &str) -> SysResult<(Pid, i64, Snapshot)> {
        self.ckpt_flush().await?;
        let row = sqlx::query(
            "SELECT pid, audit_seq, json_extract(data, '$.process', '$.capabilities', \
             '$.namespaces', '$.tools', '$.children') AS parts FROM checkpoints WHERE id = ?",
        )
        .bind(id)
        .fetch_optional(self.inner.store.pool())
        .await?
        .ok_or_else(|| SyscallError::NotFound(format!("checkpoint {id}")))?;
        let parts: String = row.try_get("parts")?;
        let parts: Vec<Value> = serde_json::from_str(&parts).map_err(SyscallError::internal)?;
        let [process, caps, namespaces, tools, children] = <[Value; 5]>::try_from(parts)
            .map_err(|_| SyscallError::internal("checkpoint data is incomplete"))?;
        let data = json!({
            "process": process,
            "capabilities": caps,
            "namespaces": namespaces,
            "tools": tools,
            "children": children,
        });
        Ok((
            row.try_get("pid")?,
            row.try_get("audit_seq")?,
            Snapshot::from_value(&data)?,
        ))
    }

    /// A registered image by exact version (`base` is built in).
    async fn ckpt_image(&self, id: &str, version: &str) -> SysResult<Option<Image>> {
        let base = Image::base();
        if id == base.id && version == base.version {
            return Ok(Some(base));
        }
        let row = sqlx::query(
            "SELECT id, version, manifest, registered_by, mac FROM images WHERE id = ? AND version = ?",
        )
        .bind(id)
        .bind(version)
        .fetch_optional(self.inner.store.pool())
        .await?;
        Ok(row.and_then(|r| self.sealed_image(&r)))
    }

    async fn ckpt_table_exists(&self, name: &str) -> SysResult<bool> {
        let found: Option<String> =
            sqlx::query_scalar("SELECT name FROM sqlite_master WHERE type = 'table' AND name = ?")
                .bind(name)
                .fetch_optional(self.inner.store.pool())
                .await?;
        Ok(found.is_some())
    }

    async fn ckpt_flush(&self) -> SysResult<()> {
        self.inner
            .store
            .flush()
            .await
            .map_err(|e| SyscallError::Internal(format!("store: {e}")))
    }

    async fn ckpt_commit(&self, batch: WriteBatch) -> SysResult<Vec<i64>> {
        self.inner
            .store
            .commit(batch)
            .await
            .map_err(|e| SyscallError::Internal(format!("store: {e}")))
    }
}

/// How [`Kernel::resume_snapshot`] makes the new process.
struct Resume<'a> {
    snap: &'a Snapshot,
    objects: Vec<Value>,
    image: &'a Image,
    parent: Option<Pid>,
    /// The capabilities to issue (besides its own namespace's).
    issue: Vec<Issue>,
    /// What it may ask a human for.
    requestable: Vec<CapabilitySpec>,
    action: &'static str,
    detail: Value,
}

/// A capability a fork or import issues to its new process.
struct Issue {
    /// What it derives from (revoking that reaches it); `None` for the operator's.
    parent: Option<i64>,
    resource: String,
    rights: Vec<Right>,
    policy: Policy,
    expires_at: Option<i64>,
    delegable: bool,
}

/// What an importing operator grants the imported process: only what it says here.
#[derive(Debug, Clone, Default)]
pub struct ImportOptions {
    /// Capabilities for the new process, granted by the operator.
    pub grants: Vec<CapabilitySpec>,
    /// Register the document's image manifest if this database lacks the image.
    pub register_image: bool,
}

/// What an import made.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ImportReport {
    pub pid: Pid,
    /// Capabilities granted by the importing operator (besides its own namespace's).
    pub granted: Vec<i64>,
    /// The capabilities the document listed: none of them was granted.
    pub not_granted: Vec<CapabilitySpec>,
}

fn children_of(state: &State, pid: Pid) -> Vec<ChildState> {
    let mut children: Vec<ChildState> = state
        .procs
        .values()
        .filter(|p| p.parent == Some(pid))
        .map(|p| ChildState {
            pid: p.pid,
            status: p.status,
        })
        .collect();
    children.sort_by_key(|c| c.pid);
    children
}

fn valid_namespace(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 256
        && !name.ends_with('/')
        && !name.contains("//")
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./".contains(c))
}
