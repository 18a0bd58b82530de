//! Walks the audit chain from genesis and reports the first broken record.

use serde::Serialize;
use sqlx::SqlitePool;

use super::chain::{AuditRow, GENESIS_HASH};

/// The result of a verification walk.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct VerifyReport {
    pub records: u64,
    /// Hash of the last record (the chain head), or the genesis hash for an empty log.
    pub head: String,
    /// The first problem found, if any.
    pub broken: Option<Broken>,
}

/// Where and how the chain breaks.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Broken {
    pub seq: i64,
    pub reason: String,
}

impl VerifyReport {
    pub fn is_ok(&self) -> bool {
        self.broken.is_none()
    }
}

/// Verifies every record in order. Detects edits (hash mismatch), drops (sequence gap or
/// `prev_hash` mismatch) and reorders (either of those).
pub async fn verify(pool: &SqlitePool) -> Result<VerifyReport, sqlx::Error> {
    let rows: Vec<AuditRow> = sqlx::query_as(
        "SELECT seq, ts, actor, action, target, decision, capability_refs, correlation_id, \
         parent_seq, detail, prev_hash, hash FROM audit ORDER BY rowid",
    )
    .fetch_all(pool)
    .await?;
    Ok(verify_rows(&rows))
}

/// Pure verification over rows in storage order.
pub fn verify_rows(rows: &[AuditRow]) -> VerifyReport {
    let mut prev = GENESIS_HASH.to_string();
    for (expected_seq, row) in (1..).zip(rows.iter()) {
        let broken = |reason: String| VerifyReport {
            records: rows.len() as u64,
            head: prev.clone(),
            broken: Some(Broken {
                seq: row.seq,
                reason,
            }),
        };
        if row.seq != expected_seq {
            return broken(format!(
                "expected record {expected_seq} here, found {} (a record was dropped or reordered)",
                row.seq
            ));
        }
        if row.prev_hash != prev {
            return broken("prev_hash does not match the previous record's hash".into());
        }
        if row.compute_hash() != row.hash {
            return broken("the record's content does not match its hash (edited)".into());
        }
        prev = row.hash.clone();
    }
    VerifyReport {
        records: rows.len() as u64,
        head: prev,
        broken: None,
    }
}
