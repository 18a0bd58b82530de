//! Group commit: one task owns the write connection and commits queued batches together.
//!
//! Callers queue a [`WriteBatch`] (state-change statements plus audit entries). The writer
//! drains everything queued, runs each batch under its own savepoint (a failing batch fails
//! alone), appends the surviving batches' audit entries to the hash chain with one
//! multi-row statement, commits once, and then acknowledges every batch. A caller that is
//! acknowledged knows its writes and audit records are durable.
//!
//! When a group's commit fails, every caller waiting on it gets the error, and the batches
//! queued without a waiter (the audit records of reads and failed calls) are kept and
//! written first by the next group: no record is dropped, and any later acknowledgement
//! still implies they are durable. Each commit that appends records re-anchors the chain's
//! head outside the database (see [`crate::audit::anchor`]); a log that no longer extends the
//! anchored head (its last records were cut or rewritten) is never re-anchored, so
//! `audit verify` keeps reporting it.
//!
//! A group that nobody waits for (only the records of reads and other unwaited batches)
//! stays open for up to [`LINGER`] to gather more; a batch with a waiter (an effect, a
//! `flush`) ends that window at once, so waited-for writes never linger.
//!
//! The queue is bounded: a batch holds one of [`MAX_QUEUED`] places from the moment it is
//! queued until it is written (a batch kept from a failed group keeps its place), and a
//! caller waits for a place. A writer that falls behind slows its callers; nothing queues
//! without limit and nothing is dropped.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use sqlx::{Connection, Row, SqliteConnection};

use tokio::sync::{mpsc, oneshot, OwnedSemaphorePermit, Semaphore, TryAcquireError};

use super::seal::Sealer;
use crate::audit::anchor::{record_seal, Anchor, AnchorRead};
use crate::audit::{AuditEntry, AuditRow, GENESIS_HASH};

/// A value bound to a statement.
#[derive(Debug, Clone, PartialEq)]
pub enum SqlArg {
    Int(i64),
    Text(String),
    Null,
}

impl From<i64> for SqlArg {
    fn from(v: i64) -> Self {
        SqlArg::Int(v)
    }
}
impl From<bool> for SqlArg {
    fn from(v: bool) -> Self {
        SqlArg::Int(v as i64)
    }
}
impl From<String> for SqlArg {
    fn from(v: String) -> Self {
        SqlArg::Text(v)
    }
}
impl From<&str> for SqlArg {
    fn from(v: &str) -> Self {
        SqlArg::Text(v.to_string())
    }
}
impl<T: Into<SqlArg>> From<Option<T>> for SqlArg {
    fn from(v: Option<T>) -> Self {
        v.map(Into::into).unwrap_or(SqlArg::Null)
    }
}

/// One state-change statement.
#[derive(Debug, Clone, PartialEq)]
pub struct Stmt {
    pub sql: &'static str,
    pub args: Vec<SqlArg>,
    /// The number of rows it must change; otherwise its whole batch is refused with
    /// [`CommitError::Conflict`] (a compare-and-set: e.g. answer a request only if pending).
    pub expect_rows: Option<u64>,
}

impl Stmt {
    pub fn new(sql: &'static str, args: Vec<SqlArg>) -> Stmt {
        Stmt {
            sql,
            args,
            expect_rows: None,
        }
    }
}

/// One syscall journal row (upserted: an outcome replaces its intent).
#[derive(Debug, Clone, PartialEq)]
pub struct JournalRow {
    pub invocation_id: String,
    pub seq: i64,
    pub primitive: String,
    pub args_hash: String,
    /// `intent`, `done` (an effect's outcome), `read` (a read's outcome) or `retry` (a call
    /// that failed in a way a replay makes again).
    pub status: &'static str,
    pub outcome: Option<Value>,
    /// A large outcome, stored once by hash; `outcome` then refers to it.
    pub blob: Option<Blob>,
}

/// A journaled outcome stored by content: `(sha256, JSON text)`.
#[derive(Debug, Clone, PartialEq)]
pub struct Blob {
    pub sha256: String,
    pub data: String,
}

/// Outcomes up to this many bytes (as JSON) are stored in their journal row.
pub const JOURNAL_INLINE_MAX: usize = 4 << 10;
/// Outcomes beyond this many bytes are not stored at all: their row says so (with length
/// and hash), and a replay re-reads (a read) or refuses (an effect) rather than answer.
pub const JOURNAL_OUTCOME_MAX: usize = 16 << 20;

impl JournalRow {
    /// The `done` row of a call with `outcome`: inline if small, by hash if large, omitted
    /// (length and hash only) if larger than [`JOURNAL_OUTCOME_MAX`].
    pub fn done(
        invocation_id: String,
        seq: i64,
        primitive: String,
        args_hash: String,
        outcome: Value,
    ) -> JournalRow {
        let text = outcome.to_string();
        let (outcome, blob) = if text.len() <= JOURNAL_INLINE_MAX {
            (outcome, None)
        } else {
            let sha256 = crate::util::sha256_hex(text.as_bytes());
            if text.len() > JOURNAL_OUTCOME_MAX {
                (
                    json!({"omitted": true, "bytes": text.len(), "sha256": sha256}),
                    None,
                )
            } else {
                (
                    json!({"blob": sha256, "bytes": text.len()}),
                    Some(Blob { sha256, data: text }),
                )
            }
        };
        JournalRow {
            invocation_id,
            seq,
            primitive,
            args_hash,
            status: "done",
            outcome: Some(outcome),
            blob,
        }
    }

    /// The same row as a read's outcome.
    pub fn as_read(mut self) -> JournalRow {
        self.status = "read";
        self
    }

    /// The row of a call that failed in a way a replay makes again (a human was needed, it
    /// was cancelled, an internal error): a replay matches it and runs the call again.
    pub fn retry(
        invocation_id: String,
        seq: i64,
        primitive: String,
        args_hash: String,
    ) -> JournalRow {
        JournalRow {
            invocation_id,
            seq,
            primitive,
            args_hash,
            status: "retry",
            outcome: None,
            blob: None,
        }
    }
}

/// What one caller wants written atomically.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct WriteBatch {
    pub stmts: Vec<Stmt>,
    /// Only through [`WriteBatch::audit`], which redacts and bounds every entry.
    pub(crate) audit: Vec<AuditEntry>,
    /// Journal rows; a group writes all of its batches' rows with one statement.
    pub journal: Vec<JournalRow>,
}

impl WriteBatch {
    pub fn stmt(mut self, sql: &'static str, args: Vec<SqlArg>) -> Self {
        self.stmts.push(Stmt::new(sql, args));
        self
    }

    /// Adds an audit record, redacted and bounded ([`AuditEntry::bounded`]).
    pub fn audit(mut self, entry: AuditEntry) -> Self {
        self.audit.push(entry.bounded());
        self
    }

    pub fn push(&mut self, sql: &'static str, args: Vec<SqlArg>) {
        self.stmts.push(Stmt::new(sql, args));
    }

    /// Adds a statement that must change exactly `rows` rows, or the batch is refused with
    /// [`CommitError::Conflict`] and nothing of it is written.
    pub fn push_guarded(&mut self, sql: &'static str, args: Vec<SqlArg>, rows: u64) {
        self.stmts.push(Stmt {
            expect_rows: Some(rows),
            ..Stmt::new(sql, args)
        });
    }

    pub fn journal(mut self, row: JournalRow) -> Self {
        self.journal.push(row);
        self
    }

    pub fn is_empty(&self) -> bool {
        self.stmts.is_empty() && self.audit.is_empty() && self.journal.is_empty()
    }
}

#[derive(Debug, Clone, thiserror::Error, PartialEq)]
pub enum CommitError {
    #[error("write rejected: {0}")]
    Rejected(String),
    /// A guarded statement changed another number of rows than required (someone else
    /// changed the row first); nothing of the batch was written.
    #[error("write conflict: {0}")]
    Conflict(String),
    #[error("commit failed: {0}")]
    Failed(String),
    #[error("the store is closed")]
    Closed,
}

struct Queued {
    batch: WriteBatch,
    ack: Option<oneshot::Sender<Result<Vec<i64>, CommitError>>>,
    /// A place in the bounded queue, given back when the batch's group has been written.
    _room: OwnedSemaphorePermit,
}

/// Where and how the writer anchors the audit head.
pub(super) struct AnchorConfig {
    pub path: PathBuf,
    pub sealer: Sealer,
    /// Sync the anchor to disk with each write (`Durability::Full`).
    pub sync: bool,
}

#[derive(Clone)]
pub(super) struct WriterHandle {
    tx: mpsc::UnboundedSender<Queued>,
    healthy: Arc<AtomicBool>,
    /// Places in the queue: a caller waits for one, so a writer that falls behind slows its
    /// callers instead of queueing without limit.
    room: Arc<Semaphore>,
    max_queued: usize,
}

/// Most batches drained into one transaction.
const MAX_GROUP: usize = 512;
/// Longest a group that nobody waits for stays open for more batches (see [`linger`]).
const LINGER: Duration = Duration::from_millis(2);
/// Longest wait before retrying batches kept from a failed group.
const MAX_RETRY_DELAY: Duration = Duration::from_secs(5);

/// Most batches queued or being written at once (the default).
pub(super) const MAX_QUEUED: usize = 4096;

/// Why a batch could not be queued without waiting.
#[derive(Debug, Clone, thiserror::Error, PartialEq)]
pub enum QueueError {
    #[error("the store's write queue is full ({0} batches): the writer is behind")]
    Full(usize),
    #[error("the store is closed")]
    Closed,
}

impl WriterHandle {
    pub(super) async fn start(
        conn: SqliteConnection,
        anchor: AnchorConfig,
        max_queued: usize,
    ) -> Result<WriterHandle, sqlx::Error> {
        let (tx, rx) = mpsc::unbounded_channel();
        let healthy = Arc::new(AtomicBool::new(true));
        tokio::spawn(run(conn, rx, anchor, healthy.clone()));
        let max_queued = max_queued.max(1);
        Ok(WriterHandle {
            tx,
            healthy,
            room: Arc::new(Semaphore::new(max_queued)),
            max_queued,
        })
    }

    /// Whether the last group committed (no batch is waiting to be written again).
    pub(super) fn healthy(&self) -> bool {
        self.healthy.load(Ordering::Acquire)
    }

    /// Waits for a place in the queue.
    async fn room(&self) -> Result<OwnedSemaphorePermit, CommitError> {
        self.room
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| CommitError::Closed)
    }

    pub(super) async fn commit(&self, batch: WriteBatch) -> Result<Vec<i64>, CommitError> {
        let (ack, done) = oneshot::channel();
        let _room = self.room().await?;
        self.tx
            .send(Queued {
                batch,
                ack: Some(ack),
                _room,
            })
            .map_err(|_| CommitError::Closed)?;
        done.await.map_err(|_| CommitError::Closed)?
    }

    /// Queues `batch` once there is room, without waiting for it to be written.
    pub(super) async fn submit(&self, batch: WriteBatch) -> Result<(), CommitError> {
        let _room = self.room().await?;
        self.tx
            .send(Queued {
                batch,
                ack: None,
                _room,
            })
            .map_err(|_| CommitError::Closed)
    }

    /// Queues `batch` if there is room now; never waits (for callers that cannot).
    pub(super) fn try_submit(&self, batch: WriteBatch) -> Result<(), QueueError> {
        let _room = self.room.clone().try_acquire_owned().map_err(|e| match e {
            TryAcquireError::NoPermits => QueueError::Full(self.max_queued),
            TryAcquireError::Closed => QueueError::Closed,
        })?;
        self.tx
            .send(Queued {
                batch,
                ack: None,
                _room,
            })
            .map_err(|_| QueueError::Closed)
    }
}

async fn run(
    mut conn: SqliteConnection,
    mut rx: mpsc::UnboundedReceiver<Queued>,
    anchor: AnchorConfig,
    healthy: Arc<AtomicBool>,
) {
    // Batches without a waiter from groups that failed: written first by the next group.
    let mut kept: Vec<Queued> = Vec::new();
    let mut delay = Duration::from_millis(50);
    let mut open = true;
    let mut broken_reported = false;
    while open || !kept.is_empty() {
        let mut group = std::mem::take(&mut kept);
        if group.is_empty() {
            match rx.recv().await {
                Some(first) => group.push(first),
                None => break,
            }
        } else if open {
            // Retry after a pause, sooner if new work arrives.
            tokio::select! {
                next = rx.recv() => match next {
                    Some(next) => group.push(next),
                    None => open = false,
                },
                _ = tokio::time::sleep(delay) => {}
            }
        }
        while group.len() < MAX_GROUP {
            match rx.try_recv() {
                Ok(next) => group.push(next),
                Err(_) => break,
            }
        }
        if open && !group.iter().any(|q| q.ack.is_some()) {
            open = linger(&mut rx, &mut group).await;
        }
        match commit_group(&mut conn, &group, &anchor).await {
            Ok((results, head)) => {
                healthy.store(true, Ordering::Release);
                delay = Duration::from_millis(50);
                match head {
                    HeadCheck::Extends(Some(new_head)) => {
                        if let Err(err) =
                            super::head::write(&new_head, &anchor.path, &anchor.sealer, anchor.sync)
                        {
                            tracing::error!(%err, path = %anchor.path.display(), "anchoring the audit head");
                        }
                    }
                    HeadCheck::Extends(None) => {}
                    HeadCheck::Broken(reason) => {
                        if !broken_reported {
                            broken_reported = true;
                            tracing::error!(%reason, "the audit log does not extend its anchored head; the anchor is kept as evidence (run `agent-libos audit verify`)");
                        }
                    }
                }
                for (queued, result) in group.into_iter().zip(results) {
                    if let Some(ack) = queued.ack {
                        let _ = ack.send(result);
                    } else if let Err(err) = result {
                        tracing::error!(%err, "a queued write was rejected");
                    }
                }
            }
            Err(err) => {
                healthy.store(false, Ordering::Release);
                tracing::error!(%err, kept = group.iter().filter(|q| q.ack.is_none()).count(), "group commit failed; its queued records are kept and written again");
                for queued in group {
                    match queued.ack {
                        Some(ack) => {
                            let _ = ack.send(Err(CommitError::Failed(err.to_string())));
                        }
                        None => kept.push(queued),
                    }
                }
                delay = (delay * 2).min(MAX_RETRY_DELAY);
            }
        }
    }
}

/// Gathers more batches into a group that nobody waits for, for up to [`LINGER`]: a stream
/// of reads (whose records ride the next commit unwaited) then costs one commit per window
/// instead of one per call. A batch with a waiter, a full group or a closed queue ends the
/// window at once. Returns whether the queue is still open.
async fn linger(rx: &mut mpsc::UnboundedReceiver<Queued>, group: &mut Vec<Queued>) -> bool {
    let until = tokio::time::Instant::now() + LINGER;
    while group.len() < MAX_GROUP {
        match tokio::time::timeout_at(until, rx.recv()).await {
            Ok(Some(next)) => {
                let waited_for = next.ack.is_some();
                group.push(next);
                if waited_for {
                    break;
                }
            }
            Ok(None) => return false,
            Err(_) => break,
        }
    }
    true
}

type GroupResult = Vec<Result<Vec<i64>, CommitError>>;

/// How the log stands against its anchored head.
enum HeadCheck {
    /// It extends the anchor; `Some` is the new head to anchor after the commit.
    Extends(Option<Anchor>),
    /// Its last records were cut or rewritten, or the anchor is missing or forged.
    Broken(String),
}

/// Checks the log's head `(seq, hash)` against the anchor file.
async fn check_head(
    tx: &mut sqlx::Transaction<'_, sqlx::Sqlite>,
    anchor: &AnchorConfig,
    seq: i64,
    hash: &str,
) -> Result<Result<i64, String>, sqlx::Error> {
    let anchored = match super::head::read(&anchor.path, &anchor.sealer) {
        AnchorRead::Valid(a) => a,
        AnchorRead::Missing => return Ok(Err("the audit head anchor is missing".into())),
        AnchorRead::Forged => {
            return Ok(Err(
                "the audit head anchor does not verify (edited, or another key)".into(),
            ))
        }
    };
    if seq == anchored.seq && hash == anchored.hash {
        return Ok(Ok(anchored.sealed_from));
    }
    if seq < anchored.seq {
        return Ok(Err(format!(
            "the log ends at record {seq} but its anchored head is record {}",
            anchored.seq
        )));
    }
    if anchored.seq == 0 {
        return Ok(Ok(anchored.sealed_from));
    }
    let at: Option<String> = sqlx::query_scalar("SELECT hash FROM audit WHERE seq = ?")
        .bind(anchored.seq)
        .fetch_optional(&mut **tx)
        .await?;
    if at.as_deref() == Some(anchored.hash.as_str()) {
        Ok(Ok(anchored.sealed_from))
    } else {
        Ok(Err(format!(
            "record {} does not match the anchored head (the log was rewritten)",
            anchored.seq
        )))
    }
}

/// Commits one group. `BEGIN IMMEDIATE` takes SQLite's write lock first, so the chain head
/// read inside the transaction is current even if another runtime shares the database,
/// and the anchor it is checked against is the one the last writer left.
async fn commit_group(
    conn: &mut SqliteConnection,
    group: &[Queued],
    anchor: &AnchorConfig,
) -> Result<(GroupResult, HeadCheck), sqlx::Error> {
    let mut tx = conn.begin_with("BEGIN IMMEDIATE").await?;
    let head = sqlx::query("SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1")
        .fetch_optional(&mut *tx)
        .await?;
    let (mut seq, mut prev) = match head {
        Some(row) => (row.try_get::<i64, _>(0)?, row.try_get::<String, _>(1)?),
        None => (0, GENESIS_HASH.to_string()),
    };
    let checked = check_head(&mut tx, anchor, seq, &prev).await?;
    let mut results = Vec::with_capacity(group.len());
    let mut rows: Vec<Value> = Vec::new();
    let mut journal: Vec<Value> = Vec::new();
    let mut blobs: Vec<Value> = Vec::new();
    let appended = group.iter().any(|q| !q.batch.audit.is_empty());
    for queued in group {
        match apply_batch(&mut tx, &queued.batch).await? {
            Ok(()) => {
                for row in &queued.batch.journal {
                    journal.push(json!([
                        row.invocation_id,
                        row.seq,
                        row.primitive,
                        row.args_hash,
                        row.status,
                        row.outcome.as_ref().map(Value::to_string),
                        row.blob.as_ref().map(|b| b.sha256.clone())
                    ]));
                    if let Some(blob) = &row.blob {
                        blobs.push(json!([blob.sha256, blob.data.len(), blob.data]));
                    }
                }
                let mut seqs = Vec::with_capacity(queued.batch.audit.len());
                for entry in &queued.batch.audit {
                    seq += 1;
                    let row = AuditRow::seal(entry, seq, &prev);
                    prev = row.hash.clone();
                    seqs.push(seq);
                    rows.push(json!([
                        row.seq,
                        row.ts,
                        row.actor,
                        row.action,
                        row.target,
                        row.decision,
                        row.capability_refs,
                        row.correlation_id,
                        row.parent_seq,
                        row.detail,
                        row.prev_hash,
                        row.hash,
                        record_seal(&anchor.sealer, &row.hash)
                    ]));
                }
                results.push(Ok(seqs));
            }
            Err(err) => results.push(Err(err)),
        }
    }
    if !blobs.is_empty() {
        sqlx::query(
            "INSERT INTO journal_blobs (sha256, bytes, data, created_at) \
             SELECT value->>0, value->>1, value->>2, CAST(strftime('%s', 'now') AS INTEGER) * 1000 \
             FROM json_each(?) WHERE 1 ON CONFLICT (sha256) DO NOTHING",
        )
        .bind(Value::Array(blobs).to_string())
        .execute(&mut *tx)
        .await?;
    }
    if !journal.is_empty() {
        sqlx::query(
            "INSERT INTO journal (invocation_id, seq, primitive, args_hash, status, outcome, blob) \
             SELECT value->>0, value->>1, value->>2, value->>3, value->>4, value->>5, value->>6 \
             FROM json_each(?) WHERE 1 \
             ON CONFLICT (invocation_id, seq) DO UPDATE SET status = excluded.status, \
             outcome = excluded.outcome, blob = excluded.blob",
        )
        .bind(Value::Array(journal).to_string())
        .execute(&mut *tx)
        .await?;
    }
    if !rows.is_empty() {
        sqlx::query(
            "INSERT INTO audit (seq, ts, actor, action, target, decision, capability_refs, \
             correlation_id, parent_seq, detail, prev_hash, hash, mac) \
             SELECT value->>0, value->>1, value->>2, value->>3, value->>4, value->>5, \
             value->>6, value->>7, value->>8, value->>9, value->>10, value->>11, value->>12 \
             FROM json_each(?)",
        )
        .bind(Value::Array(rows).to_string())
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    let head = match checked {
        Ok(sealed_from) if appended => HeadCheck::Extends(Some(Anchor {
            seq,
            hash: prev,
            sealed_from,
        })),
        Ok(_) => HeadCheck::Extends(None),
        Err(reason) => HeadCheck::Broken(reason),
    };
    Ok((results, head))
}

/// Runs one batch's statements under a savepoint. `Err(Ok(_))` is a refusal of this batch
/// alone (rolled back to the savepoint); `Err(Err(_))` fails the whole group.
async fn apply_batch(
    tx: &mut sqlx::Transaction<'_, sqlx::Sqlite>,
    batch: &WriteBatch,
) -> Result<Result<(), CommitError>, sqlx::Error> {
    if batch.stmts.is_empty() {
        return Ok(Ok(()));
    }
    if let [stmt] = batch.stmts.as_slice() {
        if stmt.expect_rows.is_none() {
            return apply_one(tx, stmt).await;
        }
    }
    sqlx::query("SAVEPOINT batch").execute(&mut **tx).await?;
    for stmt in &batch.stmts {
        let refusal = match bound(stmt).execute(&mut **tx).await {
            Ok(done) => match stmt.expect_rows {
                Some(want) if done.rows_affected() != want => Some(CommitError::Conflict(format!(
                    "changed {} rows, not {want}",
                    done.rows_affected()
                ))),
                _ => None,
            },
            Err(err) => Some(CommitError::Rejected(err.to_string())),
        };
        if let Some(refusal) = refusal {
            sqlx::query("ROLLBACK TO batch").execute(&mut **tx).await?;
            sqlx::query("RELEASE batch").execute(&mut **tx).await?;
            return Ok(Err(refusal));
        }
    }
    sqlx::query("RELEASE batch").execute(&mut **tx).await?;
    Ok(Ok(()))
}

/// Runs a batch of one unguarded statement without a savepoint: SQLite backs a failed
/// statement out by itself and keeps the transaction, so the batch fails alone — except
/// for the errors after which SQLite may roll the whole transaction back, which fail the
/// group (its unwaited batches are written again by the next one).
async fn apply_one(
    tx: &mut sqlx::Transaction<'_, sqlx::Sqlite>,
    stmt: &Stmt,
) -> Result<Result<(), CommitError>, sqlx::Error> {
    match bound(stmt).execute(&mut **tx).await {
        Ok(_) => Ok(Ok(())),
        Err(err) if may_end_transaction(&err) => Err(err),
        Err(err) => Ok(Err(CommitError::Rejected(err.to_string()))),
    }
}

/// `stmt` with its arguments bound.
fn bound(stmt: &Stmt) -> sqlx::query::Query<'_, sqlx::Sqlite, sqlx::sqlite::SqliteArguments> {
    let mut query = sqlx::query(stmt.sql);
    for arg in &stmt.args {
        query = match arg {
            SqlArg::Int(v) => query.bind(*v),
            SqlArg::Text(v) => query.bind(v.clone()),
            SqlArg::Null => query.bind(None::<i64>),
        };
    }
    query
}

/// Whether SQLite may have rolled back the whole transaction after `err` (disk full, I/O
/// error, busy, out of memory, interrupted), or the error is not SQLite's own.
fn may_end_transaction(err: &sqlx::Error) -> bool {
    let sqlx::Error::Database(db) = err else {
        return true;
    };
    let primary = db
        .code()
        .and_then(|code| code.parse::<i32>().ok())
        .map_or(0, |code| code & 0xff);
    // SQLITE_BUSY 5, SQLITE_NOMEM 7, SQLITE_INTERRUPT 9, SQLITE_IOERR 10, SQLITE_FULL 13.
    primary == 0 || matches!(primary, 5 | 7 | 9 | 10 | 13)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn done(outcome: Value) -> JournalRow {
        JournalRow::done("inv".into(), 1, "fs.read_text".into(), "h".into(), outcome)
    }

    #[test]
    fn a_small_outcome_is_kept_in_its_row() {
        let row = done(json!({"ok": "short"}));
        assert_eq!(row.outcome, Some(json!({"ok": "short"})));
        assert_eq!(row.blob, None);
    }

    #[test]
    fn a_large_outcome_is_stored_by_hash() {
        let outcome = json!({"ok": "x".repeat(JOURNAL_INLINE_MAX)});
        let text = outcome.to_string();
        let row = done(outcome);
        let blob = row.blob.expect("a blob");
        assert_eq!(blob.sha256, crate::util::sha256_hex(text.as_bytes()));
        assert_eq!(blob.data, text);
        assert_eq!(
            row.outcome,
            Some(json!({"blob": blob.sha256, "bytes": text.len()}))
        );
    }

    #[test]
    fn an_outcome_over_the_cap_is_not_stored() {
        let outcome = json!({"ok": "y".repeat(JOURNAL_OUTCOME_MAX)});
        let row = done(outcome);
        assert_eq!(row.blob, None);
        let kept = row.outcome.unwrap();
        assert_eq!(kept["omitted"], true);
        assert!(kept.to_string().len() < 200, "{kept}");
    }
}

#[cfg(test)]
mod queue_tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    use sqlx::sqlite::SqliteConnectOptions;
    use sqlx::ConnectOptions;

    use super::*;
    use crate::audit::Decision;
    use crate::store::{Durability, Store};

    fn entry(i: usize) -> AuditEntry {
        AuditEntry {
            ts: i as i64,
            actor: "pid:1".into(),
            action: "clock.now".into(),
            target: "clock".into(),
            decision: Decision::Allow,
            capability_refs: vec![],
            correlation_id: None,
            parent_seq: None,
            detail: json!({"n": i}),
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_full_write_queue_slows_the_caller_and_loses_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.db");
        let store = Store::open_with_queue(&path, Durability::Normal, 4)
            .await
            .unwrap();
        // Another connection holds SQLite's write lock: the writer stalls in BEGIN IMMEDIATE.
        let mut blocker = SqliteConnectOptions::new()
            .filename(&path)
            .connect()
            .await
            .unwrap();
        sqlx::query("BEGIN IMMEDIATE")
            .execute(&mut blocker)
            .await
            .unwrap();
        let queued = Arc::new(AtomicUsize::new(0));
        let submitter = {
            let (store, queued) = (store.clone(), queued.clone());
            tokio::spawn(async move {
                for i in 0..20 {
                    store
                        .submit(WriteBatch::default().audit(entry(i)))
                        .await
                        .unwrap();
                    queued.fetch_add(1, Ordering::SeqCst);
                }
            })
        };
        tokio::time::sleep(Duration::from_millis(300)).await;
        let stalled = queued.load(Ordering::SeqCst);
        assert!(stalled <= 4, "{stalled} batches queued past a bound of 4");
        assert!(!submitter.is_finished(), "the caller waits for room");
        assert_eq!(
            store.try_submit(WriteBatch::default()),
            Err(QueueError::Full(4)),
            "a caller that cannot wait is told the queue is full"
        );
        sqlx::query("COMMIT").execute(&mut blocker).await.unwrap();
        submitter.await.unwrap();
        store.flush().await.unwrap();
        let rows = store.audit_records_after(0).await.unwrap();
        assert_eq!(rows.len(), 20, "every queued audit record is written");
        assert!(store.verify_audit().await.unwrap().is_ok());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_failing_batch_fails_alone_in_its_group_with_or_without_a_savepoint() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.db");
        let store = Store::open_with_queue(&path, Durability::Normal, 64)
            .await
            .unwrap();
        let mut other = SqliteConnectOptions::new()
            .filename(&path)
            .connect()
            .await
            .unwrap();
        sqlx::query("CREATE TABLE scratch (k INTEGER PRIMARY KEY)")
            .execute(&mut other)
            .await
            .unwrap();
        sqlx::query("INSERT INTO scratch (k) VALUES (1)")
            .execute(&mut other)
            .await
            .unwrap();
        // Holds the write lock so that every batch below lands in one group.
        sqlx::query("BEGIN IMMEDIATE")
            .execute(&mut other)
            .await
            .unwrap();
        let insert = |k: i64| Stmt::new("INSERT INTO scratch (k) VALUES (?)", vec![k.into()]);
        let batches = vec![
            // One statement that breaks a constraint: no savepoint is taken for it.
            WriteBatch::default()
                .audit(entry(1))
                .stmt(insert(1).sql, insert(1).args),
            WriteBatch::default()
                .audit(entry(2))
                .stmt(insert(2).sql, insert(2).args),
            // Two statements, the second failing: the first is backed out too.
            WriteBatch::default()
                .audit(entry(3))
                .stmt(insert(3).sql, insert(3).args)
                .stmt(insert(2).sql, insert(2).args),
            WriteBatch::default()
                .audit(entry(4))
                .stmt(insert(4).sql, insert(4).args),
        ];
        let pending: Vec<_> = batches
            .into_iter()
            .map(|batch| {
                let store = store.clone();
                tokio::spawn(async move { store.commit(batch).await })
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(200)).await;
        sqlx::query("COMMIT").execute(&mut other).await.unwrap();
        let mut outcomes = Vec::new();
        for p in pending {
            outcomes.push(p.await.unwrap().is_ok());
        }
        assert_eq!(
            outcomes,
            [false, true, false, true],
            "only the failing batches fail"
        );
        let keys: Vec<i64> = sqlx::query_scalar("SELECT k FROM scratch ORDER BY k")
            .fetch_all(&mut other)
            .await
            .unwrap();
        assert_eq!(
            keys,
            [1, 2, 4],
            "a failed batch leaves none of its statements"
        );
        let mut actions: Vec<i64> = store
            .audit_records_after(0)
            .await
            .unwrap()
            .iter()
            .map(|r| {
                serde_json::from_str::<Value>(&r.detail).unwrap()["n"]
                    .as_i64()
                    .unwrap()
            })
            .collect();
        // The batches were queued by tasks of their own, in any order.
        actions.sort();
        assert_eq!(actions, [2, 4], "a failed batch leaves no audit record");
        assert!(store.verify_audit().await.unwrap().is_ok());
    }
}
