//! Group commit: one task owns the write connection and commits queued batches together.
//!
//! Callers queue a [`WriteBatch`] (state-change statements plus audit entries). The writer
//! drains everything queued, runs each batch under its own savepoint (a failing batch fails
//! alone), appends the surviving batches' audit entries to the hash chain with one
//! multi-row statement, commits once, and then acknowledges every batch. A caller that is
//! acknowledged knows its writes and audit records are durable.

use serde_json::{json, Value};
use sqlx::{Connection, Row, SqliteConnection};
use tokio::sync::{mpsc, oneshot};

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

/// What one caller wants written atomically.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct WriteBatch {
    pub stmts: Vec<Stmt>,
    pub audit: Vec<AuditEntry>,
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

    pub fn is_empty(&self) -> bool {
        self.stmts.is_empty() && self.audit.is_empty()
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
}

#[derive(Clone)]
pub(super) struct WriterHandle {
    tx: mpsc::UnboundedSender<Queued>,
}

/// Most batches drained into one transaction.
const MAX_GROUP: usize = 512;

impl WriterHandle {
    pub(super) async fn start(conn: SqliteConnection) -> Result<WriterHandle, sqlx::Error> {
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(run(conn, rx));
        Ok(WriterHandle { tx })
    }

    pub(super) async fn commit(&self, batch: WriteBatch) -> Result<Vec<i64>, CommitError> {
        let (ack, done) = oneshot::channel();
        self.tx
            .send(Queued {
                batch,
                ack: Some(ack),
            })
            .map_err(|_| CommitError::Closed)?;
        done.await.map_err(|_| CommitError::Closed)?
    }

    pub(super) fn submit(&self, batch: WriteBatch) {
        if self.tx.send(Queued { batch, ack: None }).is_err() {
            tracing::error!("store closed: a queued write was dropped");
        }
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
    for queued in group {
        match apply_batch(&mut tx, &queued.batch).await {
            Ok(()) => {
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
