//! Read-only queries for the operator edges (CLI, MCP server, tests, benchmarks), so that
//! none of them holds the connection pool: what they may read is listed here.

use crate::audit::AuditRow;

/// What the agent loop of a process has used so far (`agent_usage`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, sqlx::FromRow)]
pub struct AgentUsageRow {
    pub steps: i64,
    pub prompt_tokens: i64,
    pub completion_tokens: i64,
    pub total_tokens: i64,
    pub wall_ms: i64,
}

use super::{Store, StoreError};

impl Store {
    /// The stored usage of `pid`'s agent loop, if it ever made a model call.
    pub async fn agent_usage(&self, pid: i64) -> Result<Option<AgentUsageRow>, StoreError> {
        Ok(sqlx::query_as(
            "SELECT steps, prompt_tokens, completion_tokens, total_tokens, wall_ms \
             FROM agent_usage WHERE pid = ?",
        )
        .bind(pid)
        .fetch_optional(&self.pool)
        .await?)
    }

    /// Audit records with a sequence number above `after` (0 for all), oldest first.
    pub async fn audit_records_after(&self, after: i64) -> Result<Vec<AuditRow>, StoreError> {
        Ok(sqlx::query_as(
            "SELECT seq, ts, actor, action, target, decision, capability_refs, correlation_id, \
             parent_seq, detail, prev_hash, hash FROM audit WHERE seq > ? ORDER BY seq",
        )
        .bind(after)
        .fetch_all(&self.pool)
        .await?)
    }

    /// The newest `limit` audit records of any of `actors` (e.g. `pid:3`), newest first.
    pub async fn latest_audit_records(
        &self,
        actors: &[String],
        limit: i64,
    ) -> Result<Vec<AuditRow>, StoreError> {
        let actors = serde_json::to_string(actors).unwrap_or_else(|_| "[]".into());
        Ok(sqlx::query_as(
            "SELECT seq, ts, actor, action, target, decision, capability_refs, correlation_id, \
             parent_seq, detail, prev_hash, hash FROM audit \
             WHERE actor IN (SELECT value FROM json_each(?)) ORDER BY seq DESC LIMIT ?",
        )
        .bind(actors)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?)
    }

    /// The sequence number of the newest durable audit record (0 when there is none).
    pub async fn audit_head_seq(&self) -> Result<i64, StoreError> {
        Ok(
            sqlx::query_scalar("SELECT COALESCE(MAX(seq), 0) FROM audit")
                .fetch_one(&self.pool)
                .await?,
        )
    }

    /// How many memory objects exist, of `object_type` only if given.
    pub async fn count_objects(&self, object_type: Option<&str>) -> Result<i64, StoreError> {
        Ok(match object_type {
            Some(t) => {
                sqlx::query_scalar("SELECT COUNT(*) FROM objects WHERE type = ?")
                    .bind(t)
                    .fetch_one(&self.pool)
                    .await?
            }
            None => {
                sqlx::query_scalar("SELECT COUNT(*) FROM objects")
                    .fetch_one(&self.pool)
                    .await?
            }
        })
    }
}
