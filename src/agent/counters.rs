//! What the agent loop of a process has used — model calls, tokens, running time — kept in
//! the store (`agent_usage`), so a host restart or `run --resume` continues the run's limits
//! from the stored counters instead of from zero.

use std::time::{Duration, Instant};

use super::model::Usage;
use super::AgentError;
use crate::kernel::{Kernel, Pid, SyscallError};
use crate::store::WriteBatch;

/// The counters of one process's agent loop.
pub(super) struct Counters {
    /// Model calls.
    pub steps: u32,
    pub usage: Usage,
    /// Running time of earlier hosts.
    wall_before: Duration,
    /// When this host took the run over.
    started: Instant,
}

impl Counters {
    /// The counters of a new run.
    pub fn new() -> Counters {
        Counters {
            steps: 0,
            usage: Usage::default(),
            wall_before: Duration::ZERO,
            started: Instant::now(),
        }
    }

    /// The stored counters of `pid` (zero if its loop never recorded any).
    pub async fn load(kernel: &Kernel, pid: Pid) -> Result<Counters, AgentError> {
        let row = kernel
            .store()
            .agent_usage(pid)
            .await
            .map_err(|e| store_error(format!("reading the usage of process {pid}: {e}")))?
            .unwrap_or_default();
        let count = |n: i64| u64::try_from(n).unwrap_or(0);
        Ok(Counters {
            steps: u32::try_from(row.steps).unwrap_or(u32::MAX),
            usage: Usage {
                prompt_tokens: count(row.prompt_tokens),
                completion_tokens: count(row.completion_tokens),
                total_tokens: count(row.total_tokens),
            },
            wall_before: Duration::from_millis(count(row.wall_ms)),
            started: Instant::now(),
        })
    }

    /// Running time of the run, across hosts.
    pub fn elapsed(&self) -> Duration {
        self.wall_before + self.started.elapsed()
    }

    /// Makes the counters durable (before the caller acts on what they count).
    pub async fn save(&self, kernel: &Kernel, pid: Pid) -> Result<(), AgentError> {
        let int = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
        let wall_ms = int(u64::try_from(self.elapsed().as_millis()).unwrap_or(u64::MAX));
        let batch = WriteBatch::default().stmt(
            "INSERT INTO agent_usage \
             (pid, steps, prompt_tokens, completion_tokens, total_tokens, wall_ms) \
             VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (pid) DO UPDATE SET \
             steps = excluded.steps, prompt_tokens = excluded.prompt_tokens, \
             completion_tokens = excluded.completion_tokens, \
             total_tokens = excluded.total_tokens, wall_ms = excluded.wall_ms",
            vec![
                pid.into(),
                i64::from(self.steps).into(),
                int(self.usage.prompt_tokens).into(),
                int(self.usage.completion_tokens).into(),
                int(self.usage.total_tokens).into(),
                wall_ms.into(),
            ],
        );
        kernel
            .store()
            .commit(batch)
            .await
            .map_err(|e| store_error(format!("recording the usage of process {pid}: {e}")))?;
        Ok(())
    }
}

fn store_error(message: String) -> AgentError {
    AgentError::Kernel(SyscallError::Internal(format!("store: {message}")))
}
