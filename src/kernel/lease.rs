//! Ownership of tool invocations across hosts sharing one store.
//!
//! Every opened kernel is a *host* with its own id. An invocation it records gets a lease
//! row (host, epoch 1, heartbeat) in the same transaction; the host renews the heartbeat of
//! every invocation it runs every [`HEARTBEAT_MS`]. Another host takes an invocation over
//! only when its heartbeat is older than the lease TTL (`KernelConfig::lease_ttl`), raising the epoch. Every journal
//! write carries (host, epoch) through a fence row that the store refuses when stale, so a
//! host that lost its lease can neither start nor record another effect of the invocation.

use std::sync::Weak;
use std::time::Duration;

use sqlx::Row;

use super::error::{SysResult, SyscallError};
use super::{Inner, Kernel};
use crate::store::WriteBatch;

/// How long a lease outlives its last heartbeat, unless `KernelConfig::lease_ttl` says.
pub const LEASE_TTL_MS: i64 = 5_000;
/// How often a host renews the leases of the invocations it runs.
pub const HEARTBEAT_MS: u64 = 1_000;

/// The identity of this host.
pub(crate) struct Leases {
    pub host: String,
}

impl Default for Leases {
    fn default() -> Leases {
        Leases {
            host: format!("host_{}", uuid::Uuid::new_v4().simple()),
        }
    }
}

/// Whether a store error is a fence refusing a stale write.
pub(crate) fn is_stale(message: &str) -> bool {
    message.contains("stale lease")
}

pub(crate) fn stale_error(id: &str) -> SyscallError {
    SyscallError::IllegalState(format!(
        "invocation {id}: another host took it over (this host's lease expired); \
         this host records nothing more for it — see `agent-libos resume`"
    ))
}

impl Kernel {
    /// This host's id.
    pub fn host_id(&self) -> &str {
        &self.inner.leases.host
    }

    /// Adds the lease of a new invocation (epoch 1, held by this host) to `batch`.
    pub(crate) fn push_lease(&self, id: &str, batch: &mut WriteBatch) {
        batch.push(
            "INSERT INTO leases (invocation_id, host, epoch, heartbeat) VALUES (?, ?, 1, ?) \
             ON CONFLICT (invocation_id) DO NOTHING",
            vec![
                id.into(),
                self.host_id().to_string().into(),
                self.now().into(),
            ],
        );
    }

    /// Adds the fence of invocation `id` at `epoch` to `batch`: the batch commits only if
    /// this host still holds that lease.
    pub(crate) fn push_fence(&self, id: &str, epoch: i64, batch: &mut WriteBatch) {
        batch.push(
            "INSERT INTO lease_fence (invocation_id, host, epoch) VALUES (?, ?, ?)",
            vec![id.into(), self.host_id().to_string().into(), epoch.into()],
        );
    }

    /// Adds the release of this host's lease on `id` to `batch` (any host may take it over).
    pub(crate) fn push_lease_release(&self, id: &str, epoch: i64, batch: &mut WriteBatch) {
        batch.push(
            "UPDATE leases SET heartbeat = 0 WHERE invocation_id = ? AND host = ? AND epoch = ?",
            vec![id.into(), self.host_id().to_string().into(), epoch.into()],
        );
    }

    /// Takes invocation `id` over if its lease has expired (or it has none) and it has not
    /// finished; returns the new epoch, or `None` if another host holds a live lease or the
    /// invocation finished (the caller looks at its outcome again).
    pub(crate) async fn take_over(&self, id: &str) -> SysResult<Option<i64>> {
        let now = self.now();
        let ttl = i64::try_from(self.inner.config.lease_ttl.as_millis()).unwrap_or(i64::MAX);
        let batch = WriteBatch::default()
            .stmt(
                "INSERT INTO leases (invocation_id, host, epoch, heartbeat) VALUES (?, '', 0, 0) \
                 ON CONFLICT (invocation_id) DO NOTHING",
                vec![id.into()],
            )
            .stmt(
                // Never a finished invocation: its owner's final record may have landed
                // after the caller looked, and its journal is gone with it.
                "UPDATE leases SET host = ?, epoch = epoch + 1, heartbeat = ? \
                 WHERE invocation_id = ? AND heartbeat < ? AND NOT EXISTS \
                   (SELECT 1 FROM invocations WHERE id = ? AND status IN ('done', 'failed'))",
                vec![
                    self.host_id().to_string().into(),
                    now.into(),
                    id.into(),
                    now.saturating_sub(ttl).into(),
                    id.into(),
                ],
            );
        self.inner
            .store
            .commit(batch)
            .await
            .map_err(|e| SyscallError::Internal(format!("store: {e}")))?;
        let row = sqlx::query("SELECT host, epoch FROM leases WHERE invocation_id = ?")
            .bind(id)
            .fetch_one(self.inner.store.pool())
            .await?;
        let host: String = row.try_get("host")?;
        Ok((host == self.host_id()).then_some(row.try_get("epoch")?))
    }

    /// Starts renewing the leases of this host's live invocations until the kernel is
    /// dropped.
    pub(crate) fn start_heartbeat(&self) {
        let weak = std::sync::Arc::downgrade(&self.inner);
        tokio::spawn(heartbeat(weak));
    }
}

async fn heartbeat(inner: Weak<Inner>) {
    loop {
        tokio::time::sleep(Duration::from_millis(HEARTBEAT_MS)).await;
        let Some(inner) = inner.upgrade() else { return };
        let kernel = Kernel { inner };
        let held: Vec<(String, i64)> = kernel
            .inner
            .invocations
            .live
            .lock()
            .iter()
            .filter(|(_, inv)| inv.recorded)
            .map(|(id, inv)| (id.clone(), inv.epoch))
            .collect();
        if held.is_empty() {
            continue;
        }
        let now = kernel.now();
        let mut batch = WriteBatch::default();
        for (id, epoch) in held {
            batch.push(
                "UPDATE leases SET heartbeat = ? WHERE invocation_id = ? AND host = ? AND epoch = ?",
                vec![
                    now.into(),
                    id.into(),
                    kernel.host_id().to_string().into(),
                    epoch.into(),
                ],
            );
        }
        if let Err(e) = kernel.inner.store.submit(batch).await {
            tracing::warn!(%e, "renewing invocation leases");
        }
    }
}
