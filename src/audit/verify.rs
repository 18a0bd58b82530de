//! Walks the audit chain from genesis and reports the first broken record.

use serde::Serialize;
use sqlx::SqlitePool;

use super::anchor::{record_seal, Anchor, AnchorRead};
use super::chain::{AuditRow, GENESIS_HASH};
use crate::store::Sealer;

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

/// Verifies every record in order against the anchored head: see [`verify_rows`].
pub async fn verify(
    pool: &SqlitePool,
    anchor: &AnchorRead,
    sealer: &Sealer,
) -> Result<VerifyReport, sqlx::Error> {
    let rows: Vec<AuditRow> = sqlx::query_as(
        "SELECT seq, ts, actor, action, target, decision, capability_refs, correlation_id, \
         parent_seq, detail, prev_hash, hash, mac FROM audit ORDER BY rowid",
    )
    .fetch_all(pool)
    .await?;
    Ok(verify_rows(&rows, anchor, sealer))
}

/// Pure verification over rows in storage order. Finds edits (hash mismatch), drops
/// (sequence gap or `prev_hash` mismatch), reorders (either of those), records not sealed
/// by the key (a recomputed or appended chain), and a log that does not reach its anchored
/// head with the anchored hash (its last records cut, or the chain rewritten).
pub fn verify_rows(rows: &[AuditRow], anchor: &AnchorRead, sealer: &Sealer) -> VerifyReport {
    let anchored = match anchor {
        AnchorRead::Valid(a) => a.clone(),
        AnchorRead::Missing | AnchorRead::Forged => {
            let what = if *anchor == AnchorRead::Missing {
                "the audit head anchor (<db>.head) is missing"
            } else {
                "the audit head anchor (<db>.head) does not verify: it was edited, or sealed with another key"
            };
            return VerifyReport {
                records: rows.len() as u64,
                head: rows.last().map(|r| r.hash.clone()).unwrap_or_default(),
                broken: Some(Broken {
                    seq: 0,
                    reason: what.into(),
                }),
            };
        }
    };
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
        if row.seq >= anchored.sealed_from
            && row.mac.as_deref() != Some(record_seal(sealer, &row.hash).as_str())
        {
            return broken(
                "the record is not sealed by the runtime's key (the chain was recomputed, or the record forged)"
                    .into(),
            );
        }
        if row.seq == anchored.seq && row.hash != anchored.hash {
            return broken(format!(
                "record {} does not match the anchored head (the log was rewritten)",
                anchored.seq
            ));
        }
        prev = row.hash.clone();
    }
    let last = rows.last().map(|r| r.seq).unwrap_or(0);
    if last < anchored.seq {
        return VerifyReport {
            records: rows.len() as u64,
            head: prev,
            broken: Some(Broken {
                seq: last + 1,
                reason: format!(
                    "the log ends at record {last} but its anchored head is record {}: records were deleted",
                    anchored.seq
                ),
            }),
        };
    }
    VerifyReport {
        records: rows.len() as u64,
        head: prev,
        broken: None,
    }
}

/// The anchor a fresh chain starts with: its current head, sealed from the next record on.
pub fn initial_anchor(rows_head: Option<(i64, String)>) -> Anchor {
    let (seq, hash) = rows_head.unwrap_or((0, GENESIS_HASH.to_string()));
    Anchor {
        seq,
        hash,
        sealed_from: seq + 1,
    }
}
