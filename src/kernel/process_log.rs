//! A process's log read back for its operator: the console lines of its tool calls, in the
//! order they were written, and the process's status as stored — both read from the database,
//! so a host following the log sees what another host writes.

use serde::Serialize;
use sqlx::Row;

use super::capability::Pid;
use super::error::{SysResult, SyscallError};
use super::Kernel;

/// One console line of a tool call.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LogLine {
    /// Its position in the log (increasing); `after` for the next read.
    pub id: i64,
    /// The tool invocation that wrote it.
    pub invocation: String,
    /// `log`, `info`, `warn`, `error` or `debug`.
    pub level: String,
    pub text: String,
    /// When it was written (ms since the epoch).
    pub ts: i64,
}

impl Kernel {
    /// The log lines of `pid` after line `after` (0: from the start), oldest first, and the
    /// process's stored status (`None` when no such process was ever recorded).
    pub async fn process_log_after(
        &self,
        pid: Pid,
        after: i64,
    ) -> SysResult<(Vec<LogLine>, Option<String>)> {
        self.inner
            .store
            .flush()
            .await
            .map_err(|e| SyscallError::Internal(e.to_string()))?;
        let pool = self.inner.store.pool();
        let status: Option<String> = sqlx::query("SELECT status FROM processes WHERE pid = ?")
            .bind(pid)
            .fetch_optional(pool)
            .await?
            .map(|r| r.try_get(0))
            .transpose()?;
        let rows = sqlx::query(
            "SELECT id, invocation_id, level, text, ts FROM process_log \
             WHERE pid = ? AND id > ? ORDER BY id",
        )
        .bind(pid)
        .bind(after)
        .fetch_all(pool)
        .await?;
        let lines = rows
            .iter()
            .map(|r| {
                Ok(LogLine {
                    id: r.try_get(0)?,
                    invocation: r.try_get::<Option<String>, _>(1)?.unwrap_or_default(),
                    level: r.try_get(2)?,
                    text: r.try_get(3)?,
                    ts: r.try_get(4)?,
                })
            })
            .collect::<SysResult<Vec<_>>>()?;
        Ok((lines, status))
    }
}
