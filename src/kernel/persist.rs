//! The statements that write kernel state through to the store.

use serde_json::Value;

use super::capability::{Capability, CapabilitySpec, Pid};
use super::process::Process;
use crate::store::sealed::CapFields;
use crate::store::{Sealer, WriteBatch};

pub fn insert_process(batch: &mut WriteBatch, p: &Process, now: i64) {
    batch.push(
        "INSERT INTO processes (pid, parent_pid, image_id, image_version, goal, status, cwd, \
         budget, usage, exit_payload, started_at, updated_at, generation) \
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        vec![
            p.pid.into(),
            p.parent.into(),
            p.image_id.clone().into(),
            p.image_version.clone().into(),
            p.goal.clone().into(),
            p.status.as_str().into(),
            p.cwd.clone().into(),
            json(&p.budget).into(),
            json(&p.usage).into(),
            p.exit_payload.as_ref().map(Value::to_string).into(),
            p.started_at.into(),
            now.into(),
            p.generation.into(),
        ],
    );
}

/// Writes the mutable fields of a process (status, cwd, image, budget, usage, exit payload,
/// rollback generation).
pub fn update_process(batch: &mut WriteBatch, p: &Process, now: i64) {
    batch.push(
        "UPDATE processes SET status = ?, cwd = ?, image_id = ?, image_version = ?, budget = ?, \
         usage = ?, exit_payload = ?, updated_at = ?, generation = ? WHERE pid = ?",
        vec![
            p.status.as_str().into(),
            p.cwd.clone().into(),
            p.image_id.clone().into(),
            p.image_version.clone().into(),
            json(&p.budget).into(),
            json(&p.usage).into(),
            p.exit_payload.as_ref().map(Value::to_string).into(),
            now.into(),
            p.generation.into(),
            p.pid.into(),
        ],
    );
}

/// Raises the stored syscall count of `pid` to `used` (never lowers it: batches of
/// concurrent calls may commit out of order).
pub fn record_syscalls_used(batch: &mut WriteBatch, pid: Pid, used: u64) {
    batch.push(
        "UPDATE processes SET usage = json_set(usage, '$.syscalls', \
         MAX(COALESCE(json_extract(usage, '$.syscalls'), 0), ?)) WHERE pid = ?",
        vec![(used as i64).into(), pid.into()],
    );
}

/// Stores a capability with its seal.
pub fn insert_cap(batch: &mut WriteBatch, c: &Capability, now: i64, sealer: &Sealer) {
    batch.push(
        "INSERT INTO capabilities (id, subject, resource, rights, policy, issuer, parent, \
         expires_at, delegable, revocable, revoked, consumed, created_at, mac) \
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        vec![
            c.id.into(),
            c.subject.into(),
            c.resource.clone().into(),
            json(&c.rights).into(),
            c.policy.as_str().into(),
            c.issuer.into(),
            c.parent.into(),
            c.expires_at.into(),
            c.delegable.into(),
            c.revocable.into(),
            c.revoked.into(),
            c.consumed.into(),
            now.into(),
            cap_seal(sealer, c).into(),
        ],
    );
}

/// Marks `c` revoked (with the seal of its revoked form).
pub fn revoke_cap(batch: &mut WriteBatch, c: &Capability, sealer: &Sealer) {
    let revoked = Capability {
        revoked: true,
        ..c.clone()
    };
    batch.push(
        "UPDATE capabilities SET revoked = 1, mac = ? WHERE id = ?",
        vec![cap_seal(sealer, &revoked).into(), c.id.into()],
    );
}

/// Marks the one-shot `c` used up (with the seal of its consumed form).
pub fn consume_cap(batch: &mut WriteBatch, c: &Capability, sealer: &Sealer) {
    let consumed = Capability {
        consumed: true,
        ..c.clone()
    };
    batch.push(
        "UPDATE capabilities SET consumed = 1, mac = ? WHERE id = ?",
        vec![cap_seal(sealer, &consumed).into(), c.id.into()],
    );
}

pub fn insert_namespace(batch: &mut WriteBatch, name: &str, owner: Option<i64>, now: i64) {
    batch.push(
        "INSERT INTO namespaces (name, owner, created_at) VALUES (?, ?, ?)",
        vec![name.into(), owner.into(), now.into()],
    );
}

pub fn insert_event(
    batch: &mut WriteBatch,
    id: i64,
    target: i64,
    name: &str,
    payload: &Value,
    source: &str,
    now: i64,
) {
    batch.push(
        "INSERT INTO events (id, target, name, payload, source, created_at) VALUES (?, ?, ?, ?, ?, ?)",
        vec![
            id.into(),
            target.into(),
            name.into(),
            payload.to_string().into(),
            source.into(),
            now.into(),
        ],
    );
}

/// A consumed event is deleted (nothing reads it again).
pub fn consume_event(batch: &mut WriteBatch, id: i64) {
    batch.push("DELETE FROM events WHERE id = ?", vec![id.into()]);
}

/// Drops every event queued for `pid` (it ended).
pub fn drop_events(batch: &mut WriteBatch, pid: i64) {
    batch.push("DELETE FROM events WHERE target = ?", vec![pid.into()]);
}

pub fn json<T: serde::Serialize>(value: &T) -> String {
    serde_json::to_string(value).unwrap_or_else(|_| "null".into())
}

/// The seal of `cap` as it is about to be stored.
pub(crate) fn cap_seal(sealer: &Sealer, cap: &Capability) -> String {
    let rights = json(&cap.rights);
    CapFields {
        id: cap.id,
        subject: cap.subject,
        resource: &cap.resource,
        rights: &rights,
        policy: cap.policy.as_str(),
        issuer: cap.issuer,
        parent: cap.parent,
        expires_at: cap.expires_at,
        delegable: cap.delegable,
        revocable: cap.revocable,
        revoked: cap.revoked,
        consumed: cap.consumed,
    }
    .seal(sealer)
}

/// Stores a process's ceiling for `human.request_permission`, sealed (nothing if empty).
pub fn insert_requestable(
    batch: &mut WriteBatch,
    pid: i64,
    specs: &[CapabilitySpec],
    sealer: &Sealer,
) {
    if specs.is_empty() {
        return;
    }
    let text = json(&specs);
    let seal = crate::store::sealed::requestable_seal(sealer, pid, &text);
    batch.push(
        "INSERT INTO requestable (pid, specs, mac) VALUES (?, ?, ?)",
        vec![pid.into(), text.into(), seal.into()],
    );
}
