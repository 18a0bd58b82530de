//! Clock provider: wall-clock time and sleeps that hold no thread.
//!
//! Sleeps use tokio's timer, so tests under tokio's paused clock run deterministically.

use async_trait::async_trait;
use std::time::Duration;

#[async_trait]
pub trait Clock: Send + Sync {
    /// Unix time in milliseconds.
    fn now_ms(&self) -> i64;
    /// Suspends the caller's task (not its thread) for `ms` milliseconds.
    async fn sleep(&self, ms: u64);
}

/// The host's clock.
pub struct SystemClock;

#[async_trait]
impl Clock for SystemClock {
    fn now_ms(&self) -> i64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0)
    }

    async fn sleep(&self, ms: u64) {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
}
