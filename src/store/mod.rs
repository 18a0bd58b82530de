//! The store: one SQLite file per runtime, through sqlx.
//!
//! Migrations (`src/store/migrations/`) are applied at open; WAL and foreign keys are on.
//! Reads go through a small pool; every write goes through the [`writer`]'s group commit,
//! which also owns the audit chain head. Queries are plain SQL strings checked at run time
//! (no `query!` macros), written to run on PostgreSQL too where possible.
//!
//! **API Boundary:** the kernel calls only this module for persistence; nothing else opens
//! the database.
// The store owns the database file (and its directory).
#![allow(clippy::disallowed_methods, clippy::disallowed_types)]

pub mod ids;
mod reads;
pub mod writer;

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{ConnectOptions, SqlitePool};

pub use reads::AgentUsageRow;
pub use writer::{CommitError, JournalRow, QueueError, SqlArg, Stmt, WriteBatch};

/// How hard a commit tries to reach the disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Durability {
    /// `synchronous=NORMAL` in WAL mode: survives a killed process (the default).
    #[default]
    Normal,
    /// `synchronous=FULL`: also survives power loss, at ~3x the commit cost.
    Full,
}

impl FromStr for Durability {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "normal" => Ok(Durability::Normal),
            "full" => Ok(Durability::Full),
            _ => Err(format!("unknown durability '{s}' (normal or full)")),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot create the directory for {path}: {source}")]
    CreateDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot open database {path}: {source}")]
    Open { path: PathBuf, source: sqlx::Error },
    #[error("cannot migrate database {path}: {source}")]
    Migrate {
        path: PathBuf,
        source: sqlx::migrate::MigrateError,
    },
    #[error("database error: {0}")]
    Sql(#[from] sqlx::Error),
}

/// An open store.
#[derive(Clone)]
pub struct Store {
    pool: SqlitePool,
    writer: writer::WriterHandle,
    path: PathBuf,
}

impl Store {
    /// Opens (creating if missing) the database at `path` and applies migrations.
    pub async fn open(path: &Path, durability: Durability) -> Result<Store, StoreError> {
        Store::open_with_queue(path, durability, writer::MAX_QUEUED).await
    }

    /// [`Store::open`] with at most `max_queued` batches queued for the writer at once.
    pub(crate) async fn open_with_queue(
        path: &Path,
        durability: Durability,
        max_queued: usize,
    ) -> Result<Store, StoreError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            // The store is the one place besides providers allowed to touch the host fs.
            std::fs::create_dir_all(dir).map_err(|source| StoreError::CreateDir {
                path: path.to_path_buf(),
                source,
            })?;
        }
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(match durability {
                Durability::Normal => SqliteSynchronous::Normal,
                Durability::Full => SqliteSynchronous::Full,
            })
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(10))
            .disable_statement_logging();
        let open_err = |source| StoreError::Open {
            path: path.to_path_buf(),
            source,
        };
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .acquire_timeout(Duration::from_secs(30))
            .connect_with(options.clone())
            .await
            .map_err(open_err)?;
        sqlx::migrate!("src/store/migrations")
            .run(&pool)
            .await
            .map_err(|source| StoreError::Migrate {
                path: path.to_path_buf(),
                source,
            })?;
        let conn = options.connect().await.map_err(open_err)?;
        let writer = writer::WriterHandle::start(conn, max_queued).await?;
        Ok(Store {
            pool,
            writer,
            path: path.to_path_buf(),
        })
    }

    /// The read pool, for the kernel and the store's own queries only: the operator edges
    /// use the queries in `reads`.
    pub(crate) fn pool(&self) -> &SqlitePool {
        &self.pool
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Writes `batch` in the next group commit and waits until it is durable.
    /// Returns the sequence numbers of its audit records.
    pub async fn commit(&self, batch: WriteBatch) -> Result<Vec<i64>, CommitError> {
        self.writer.commit(batch).await
    }

    /// Queues `batch` for the next group commit without waiting for it to be written (only,
    /// when the queue is full, for room in it). Ordering is kept: any later commit is durable
    /// only after this one. Fails only if the store is closed.
    pub async fn submit(&self, batch: WriteBatch) -> Result<(), CommitError> {
        self.writer.submit(batch).await
    }

    /// Queues `batch` if the queue has room now, for callers that cannot wait.
    pub fn try_submit(&self, batch: WriteBatch) -> Result<(), QueueError> {
        self.writer.try_submit(batch)
    }

    /// Waits until everything queued so far is durable.
    pub async fn flush(&self) -> Result<(), CommitError> {
        self.writer.commit(WriteBatch::default()).await.map(|_| ())
    }

    /// Verifies the audit chain (after flushing queued records).
    pub async fn verify_audit(&self) -> Result<crate::audit::VerifyReport, StoreError> {
        let _ = self.flush().await;
        Ok(crate::audit::verify(&self.pool).await?)
    }
}
