//! Audit records and their canonical hash encoding.

use serde::Serialize;
use serde_json::Value;
use sha2::{Digest, Sha256};

/// The `prev_hash` of the first record.
pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// What became of the request an audit record is about. Stored as its snake_case name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Decision {
    /// The syscall ran.
    Allow,
    /// A capability denied the syscall.
    Deny,
    /// The syscall or request waits for a human.
    Ask,
    /// The syscall failed for another reason.
    Error,
    /// A human rejected it.
    Rejected,
    /// The syscall was answered from the journal without running again.
    Replay,
    /// A human approved a request.
    Approved,
    /// A human answered a question.
    Answered,
    /// An operator action was carried out.
    Ok,
}

impl Decision {
    pub fn as_str(self) -> &'static str {
        match self {
            Decision::Allow => "allow",
            Decision::Deny => "deny",
            Decision::Ask => "ask",
            Decision::Error => "error",
            Decision::Rejected => "rejected",
            Decision::Replay => "replay",
            Decision::Approved => "approved",
            Decision::Answered => "answered",
            Decision::Ok => "ok",
        }
    }
}

impl std::fmt::Display for Decision {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A record as the kernel produces it (the writer assigns seq and hashes).
#[derive(Debug, Clone, PartialEq)]
pub struct AuditEntry {
    pub ts: i64,
    /// `pid:<n>`, `operator`, or `human:<who>`.
    pub actor: String,
    /// The primitive or operator action, e.g. `fs.write_text`, `cap.grant`.
    pub action: String,
    /// The resource acted on, e.g. `fs:notes.md`.
    pub target: String,
    pub decision: Decision,
    pub capability_refs: Vec<i64>,
    pub correlation_id: Option<String>,
    pub parent_seq: Option<i64>,
    /// Request and result summary.
    pub detail: Value,
}

impl AuditEntry {
    /// The entry as it may be stored: credentials redacted (length + SHA-256), long strings
    /// and arrays shrunk, the detail and target bounded (see [`super::redact`]).
    pub fn bounded(mut self) -> AuditEntry {
        use super::redact::{bound_detail, redact, shrink};
        self.detail = bound_detail(shrink(redact(self.detail)));
        self.target = super::redact::bound_target(&self.target);
        self
    }
}

/// A record as stored.
#[derive(Debug, Clone, PartialEq, Serialize, sqlx::FromRow)]
pub struct AuditRow {
    pub seq: i64,
    pub ts: i64,
    pub actor: String,
    pub action: String,
    pub target: String,
    pub decision: String,
    pub capability_refs: String,
    pub correlation_id: Option<String>,
    pub parent_seq: Option<i64>,
    pub detail: String,
    pub prev_hash: String,
    pub hash: String,
    /// The record's seal (see [`super::anchor::record_seal`]); `None` before seals.
    #[sqlx(default)]
    #[serde(skip)]
    pub mac: Option<String>,
}

impl AuditRow {
    /// Builds the stored row for `entry` at `seq` after `prev_hash`, computing its hash.
    pub fn seal(entry: &AuditEntry, seq: i64, prev_hash: &str) -> AuditRow {
        let mut row = AuditRow {
            seq,
            ts: entry.ts,
            actor: entry.actor.clone(),
            action: entry.action.clone(),
            target: entry.target.clone(),
            decision: entry.decision.as_str().to_string(),
            capability_refs: serde_json::to_string(&entry.capability_refs)
                .unwrap_or_else(|_| "[]".into()),
            correlation_id: entry.correlation_id.clone(),
            parent_seq: entry.parent_seq,
            detail: entry.detail.to_string(),
            prev_hash: prev_hash.to_string(),
            hash: String::new(),
            mac: None,
        };
        row.hash = row.compute_hash();
        row
    }

    /// SHA-256 (hex) over `prev_hash` and the length-prefixed fields as stored.
    pub fn compute_hash(&self) -> String {
        let mut hasher = Sha256::new();
        let mut field = |text: &str| {
            hasher.update(text.len().to_string().as_bytes());
            hasher.update(b":");
            hasher.update(text.as_bytes());
            hasher.update(b";");
        };
        field(&self.prev_hash);
        field(&self.seq.to_string());
        field(&self.ts.to_string());
        field(&self.actor);
        field(&self.action);
        field(&self.target);
        field(&self.decision);
        field(&self.capability_refs);
        field(self.correlation_id.as_deref().unwrap_or("\u{0}null"));
        field(
            &self
                .parent_seq
                .map(|s| s.to_string())
                .unwrap_or_else(|| "\u{0}null".into()),
        );
        field(&self.detail);
        hex::encode(hasher.finalize())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn entry() -> AuditEntry {
        AuditEntry {
            ts: 1,
            actor: "pid:1".into(),
            action: "fs.read_text".into(),
            target: "fs:a".into(),
            decision: Decision::Allow,
            capability_refs: vec![3],
            correlation_id: None,
            parent_seq: None,
            detail: json!({"bytes": 3}),
        }
    }

    #[test]
    fn hash_covers_every_field() {
        let row = AuditRow::seal(&entry(), 1, GENESIS_HASH);
        assert_eq!(row.hash, row.compute_hash());
        let mut edited = row.clone();
        edited.decision = "deny".into();
        assert_ne!(edited.compute_hash(), row.hash);
        let mut moved = row.clone();
        moved.seq = 2;
        assert_ne!(moved.compute_hash(), row.hash);
        let mut none_vs_empty = row.clone();
        none_vs_empty.correlation_id = Some(String::new());
        assert_ne!(none_vs_empty.compute_hash(), row.hash);
    }
}
