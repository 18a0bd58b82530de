//! Pre-created isolates of one worker thread, so `attach` does not pay creation.
//!
//! Creating a runtime takes a few milliseconds from the startup snapshot (`runtime.rs`;
//! `agent-libos-bench cold`), so by default no isolate is pre-created. With `size` > 0 each
//! worker keeps that many ready; taking one starts a background refill that builds
//! one isolate at a time and yields between them, so calls on the thread keep running. The
//! refill stops once the thread retires or could not afford another runtime (`slots.rs`), and
//! a failed creation retires the thread.

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
    heap_bytes: usize,
    refilling: Cell<bool>,
    health: Arc<Health>,
}

impl Pool {
    /// A pool of `size` isolates with a heap limit of `heap_bytes` (filled in the background)
    /// for the worker thread of `health`.
    pub(crate) fn new(size: usize, heap_bytes: usize, health: Arc<Health>) -> Pool {
        let pool = Pool {
            inner: Rc::new(PoolInner {
                ready: RefCell::new(VecDeque::new()),
                size,
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
        self.ready() < self.inner.size && !self.inner.health.is_retiring() && slots::can_create()
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
        self.inner.ready.borrow_mut().clear();
    }
}
