//! Pre-created isolates of one worker thread, so `attach` does not pay creation.
//!
//! Creating a runtime takes a few milliseconds from the startup snapshot (`runtime.rs`;
//! `agent-libos-bench cold`), so by default no isolate is pre-created. With `size` > 0 each
//! worker keeps that many ready; taking one starts a background refill that builds
//! one isolate at a time and yields between them, so calls on the thread keep running. The
//! refill stops once the thread retires or could not afford another runtime (`slots.rs`), and
//! a failed creation retires the thread.
//!
//! A pool may also hold **warm** isolates: created once when the thread starts, taken like
//! pooled ones, never replaced (a one-shot run's first call takes one instead of waiting for
//! its creation). A warm isolate is as fresh as any other: nothing has run in it but the
//! bootstrap.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::rc::Rc;
use std::sync::Arc;

use super::runtime::Isolate;
use super::slots;
use super::worker::Health;
use super::IsolateError;

#[derive(Clone)]
pub(crate) struct Pool {
    inner: Rc<PoolInner>,
}

struct PoolInner {
    ready: RefCell<VecDeque<Isolate>>,
    size: usize,
    /// Warm isolates not taken yet (counted in `ready` once created).
    warm: Cell<usize>,
    heap_bytes: usize,
    refilling: Cell<bool>,
    health: Arc<Health>,
}

impl Pool {
    /// A pool of `size` isolates plus `warm` created once, with a heap limit of `heap_bytes`
    /// (filled in the background) for the worker thread of `health`.
    pub(crate) fn new(size: usize, warm: usize, heap_bytes: usize, health: Arc<Health>) -> Pool {
        let pool = Pool {
            inner: Rc::new(PoolInner {
                ready: RefCell::new(VecDeque::new()),
                size,
                warm: Cell::new(warm),
                heap_bytes,
                refilling: Cell::new(false),
                health,
            }),
        };
        pool.refill();
        pool
    }

    /// A fresh isolate with this heap limit: from the pool when it matches the pool's, else
    /// new. A failed creation retires the thread.
    pub(crate) fn take(&self, heap_bytes: usize) -> Result<Isolate, IsolateError> {
        let pooled = if heap_bytes == self.inner.heap_bytes {
            self.inner.ready.borrow_mut().pop_front()
        } else {
            None
        };
        // Each take uses up one warm isolate, made yet or not (then none is made for it).
        let warm = &self.inner.warm;
        warm.set(warm.get().saturating_sub(1));
        let isolate = match pooled {
            Some(isolate) => isolate,
            None => self.create(heap_bytes)?,
        };
        self.refill();
        Ok(isolate)
    }

    fn create(&self, heap_bytes: usize) -> Result<Isolate, IsolateError> {
        if !slots::can_create() {
            let err = IsolateError::Create("the thread's engine slot budget is spent".into());
            self.inner.health.retire(&err.to_string());
            return Err(err);
        }
        Isolate::new(heap_bytes).inspect_err(|err| self.inner.health.retire(&err.to_string()))
    }

    /// Number of isolates ready now.
    pub(crate) fn ready(&self) -> usize {
        self.inner.ready.borrow().len()
    }

    fn wanted(&self) -> bool {
        self.ready() < self.inner.size + self.inner.warm.get()
            && !self.inner.health.is_retiring()
            && slots::can_create()
    }

    /// Starts filling the pool up to its size, unless that is already under way.
    pub(crate) fn refill(&self) {
        if self.inner.refilling.get() || !self.wanted() {
            return;
        }
        self.inner.refilling.set(true);
        let pool = self.clone();
        tokio::task::spawn_local(async move {
            loop {
                tokio::task::yield_now().await;
                if !pool.wanted() {
                    break;
                }
                match pool.create(pool.inner.heap_bytes) {
                    Ok(isolate) => pool.inner.ready.borrow_mut().push_back(isolate),
                    Err(err) => {
                        tracing::error!("isolate pool: {err}");
                        break;
                    }
                }
            }
            pool.inner.refilling.set(false);
        });
    }

    /// Drops every pre-created isolate (the thread is retiring).
    pub(crate) fn drain(&self) {
        self.inner.warm.set(0);
        self.inner.ready.borrow_mut().clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Yields on the thread until the pool holds `ready` isolates (or a few seconds pass).
    async fn until_ready(pool: &Pool, ready: usize) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while pool.ready() != ready && std::time::Instant::now() < deadline {
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
    }

    #[tokio::test]
    async fn a_warm_isolate_is_made_once_and_never_replaced() {
        let local = tokio::task::LocalSet::new();
        local
            .run_until(async {
                let heap = crate::isolate::CallLimits::default().heap_bytes;
                let health = Arc::new(Health::new());
                let pool = Pool::new(0, 1, heap, health);
                until_ready(&pool, 1).await;
                assert_eq!(pool.ready(), 1);
                let taken = pool.take(heap).expect("the warm isolate");
                drop(taken);
                // Nothing refills it: the pool stays empty.
                for _ in 0..20 {
                    tokio::task::yield_now().await;
                }
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                assert_eq!(pool.ready(), 0);
                assert!(!pool.wanted());
            })
            .await;
    }

    #[tokio::test]
    async fn a_take_before_the_warm_isolate_exists_cancels_it() {
        let local = tokio::task::LocalSet::new();
        local
            .run_until(async {
                let heap = crate::isolate::CallLimits::default().heap_bytes;
                let health = Arc::new(Health::new());
                // Taken at once, before the background creation had its turn.
                let pool = Pool::new(0, 1, heap, health);
                let taken = pool.take(heap).expect("an isolate made for the take");
                drop(taken);
                for _ in 0..20 {
                    tokio::task::yield_now().await;
                }
                assert_eq!(pool.ready(), 0);
                assert!(!pool.wanted());
            })
            .await;
    }
}
