//! Group commit: one task owns the write connection and commits queued batches together.
//!
//! Callers queue a [`WriteBatch`] (state-change statements plus audit entries). The writer
//! drains everything queued, runs each batch under its own savepoint (a failing batch fails
//! alone), appends the surviving batches' audit entries to the hash chain with one
//! multi-row statement, commits once, and then acknowledges every batch. A caller that is
//! acknowledged knows its writes and audit records are durable.
//!
//! The queue is bounded: a batch holds one of [`MAX_QUEUED`] places from the moment it is
//! queued until its group is written, and a caller waits for a place. A writer that falls
//! behind slows its callers; nothing queues without limit and nothing is dropped.

use std::sync::Arc;

use serde_json::{json, Value};
use sqlx::{Connection, Row, SqliteConnection};

use tokio::sync::{mpsc, oneshot, OwnedSemaphorePermit, Semaphore, TryAcquireError};

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
}

impl Stmt {
    pub fn new(sql: &'static str, args: Vec<SqlArg>) -> Stmt {
        Stmt { sql, args }
    }
}

/// One syscall journal row (upserted: an outcome replaces its intent).
#[derive(Debug, Clone, PartialEq)]
pub struct JournalRow {
    pub invocation_id: String,
    pub seq: i64,
    pub primitive: String,
    pub args_hash: String,
    /// `intent` or `done`.
    pub status: &'static str,
    pub outcome: Option<Value>,
}

/// What one caller wants written atomically.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct WriteBatch {
    pub stmts: Vec<Stmt>,
    pub audit: Vec<AuditEntry>,
    /// Journal rows; a group writes all of its batches' rows with one statement.
    pub journal: Vec<JournalRow>,
}

impl WriteBatch {
    pub fn stmt(mut self, sql: &'static str, args: Vec<SqlArg>) -> Self {
        self.stmts.push(Stmt::new(sql, args));
        self
    }

    pub fn audit(mut self, entry: AuditEntry) -> Self {
        self.audit.push(entry);
        self
    }

    pub fn push(&mut self, sql: &'static str, args: Vec<SqlArg>) {
        self.stmts.push(Stmt::new(sql, args));
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

#[derive(Clone)]
pub(super) struct WriterHandle {
    tx: mpsc::UnboundedSender<Queued>,
    /// Places in the queue: a caller waits for one, so a writer that falls behind slows its
    /// callers instead of queueing without limit.
    room: Arc<Semaphore>,
    max_queued: usize,
}

/// Most batches drained into one transaction.
const MAX_GROUP: usize = 512;

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
        max_queued: usize,
    ) -> Result<WriterHandle, sqlx::Error> {
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(run(conn, rx));
        let max_queued = max_queued.max(1);
        Ok(WriterHandle {
            tx,
            room: Arc::new(Semaphore::new(max_queued)),
            max_queued,
        })
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

async fn run(mut conn: SqliteConnection, mut rx: mpsc::UnboundedReceiver<Queued>) {
    while let Some(first) = rx.recv().await {
        let mut group = vec![first];
        while group.len() < MAX_GROUP {
            match rx.try_recv() {
                Ok(next) => group.push(next),
                Err(_) => break,
            }
        }
        let outcome = commit_group(&mut conn, &group).await;
        match outcome {
            Ok(results) => {
                for (queued, result) in group.into_iter().zip(results) {
                    if let Some(ack) = queued.ack {
                        let _ = ack.send(result);
                    } else if let Err(err) = result {
                        tracing::error!(%err, "a queued write was rejected");
                    }
                }
            }
            Err(err) => {
                tracing::error!(%err, "group commit failed");
                for queued in group {
                    if let Some(ack) = queued.ack {
                        let _ = ack.send(Err(CommitError::Failed(err.to_string())));
                    }
                }
            }
        }
    }
}

type GroupResult = Vec<Result<Vec<i64>, CommitError>>;

/// Commits one group. `BEGIN IMMEDIATE` takes SQLite's write lock first, so the chain head
/// read inside the transaction is current even if another runtime shares the database.
async fn commit_group(
    conn: &mut SqliteConnection,
    group: &[Queued],
) -> Result<GroupResult, sqlx::Error> {
    let mut tx = conn.begin_with("BEGIN IMMEDIATE").await?;
    let head = sqlx::query("SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1")
        .fetch_optional(&mut *tx)
        .await?;
    let (mut seq, mut prev) = match head {
        Some(row) => (row.try_get::<i64, _>(0)?, row.try_get::<String, _>(1)?),
        None => (0, GENESIS_HASH.to_string()),
    };
    let mut results = Vec::with_capacity(group.len());
    let mut rows: Vec<Value> = Vec::new();
    let mut journal: Vec<Value> = Vec::new();
    for queued in group {
        match apply_batch(&mut tx, &queued.batch).await {
            Ok(()) => {
                for row in &queued.batch.journal {
                    journal.push(json!([
                        row.invocation_id,
                        row.seq,
                        row.primitive,
                        row.args_hash,
                        row.status,
                        row.outcome.as_ref().map(Value::to_string)
                    ]));
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
                        row.hash
                    ]));
                }
                results.push(Ok(seqs));
            }
            Err(err) => results.push(Err(CommitError::Rejected(err.to_string()))),
        }
    }
    if !journal.is_empty() {
        sqlx::query(
            "INSERT INTO journal (invocation_id, seq, primitive, args_hash, status, outcome) \
             SELECT value->>0, value->>1, value->>2, value->>3, value->>4, value->>5 FROM json_each(?) WHERE 1 \
             ON CONFLICT (invocation_id, seq) DO UPDATE SET status = excluded.status, outcome = excluded.outcome",
        )
        .bind(Value::Array(journal).to_string())
        .execute(&mut *tx)
        .await?;
    }
    if !rows.is_empty() {
        sqlx::query(
            "INSERT INTO audit (seq, ts, actor, action, target, decision, capability_refs, \
             correlation_id, parent_seq, detail, prev_hash, hash) \
             SELECT value->>0, value->>1, value->>2, value->>3, value->>4, value->>5, \
             value->>6, value->>7, value->>8, value->>9, value->>10, value->>11 \
             FROM json_each(?)",
        )
        .bind(Value::Array(rows).to_string())
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    Ok(results)
}

async fn apply_batch(
    tx: &mut sqlx::Transaction<'_, sqlx::Sqlite>,
    batch: &WriteBatch,
) -> Result<(), sqlx::Error> {
    if batch.stmts.is_empty() {
        return Ok(());
    }
    sqlx::query("SAVEPOINT batch").execute(&mut **tx).await?;
    for stmt in &batch.stmts {
        let mut query = sqlx::query(stmt.sql);
        for arg in &stmt.args {
            query = match arg {
                SqlArg::Int(v) => query.bind(*v),
                SqlArg::Text(v) => query.bind(v.clone()),
                SqlArg::Null => query.bind(None::<i64>),
            };
        }
        if let Err(err) = query.execute(&mut **tx).await {
            sqlx::query("ROLLBACK TO batch").execute(&mut **tx).await?;
            sqlx::query("RELEASE batch").execute(&mut **tx).await?;
            return Err(err);
        }
    }
    sqlx::query("RELEASE batch").execute(&mut **tx).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
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
}
