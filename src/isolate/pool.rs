//! Pre-created isolates of one worker thread, so `attach` does not pay creation.
//!
//! Creating a runtime and evaluating the libos bootstrap takes ~17 ms on QuickJS (release).
//! Each worker keeps `size` of them ready; taking one starts a background refill that builds
//! one isolate at a time and yields between them, so calls on the thread keep running.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::rc::Rc;

use super::runtime::Isolate;
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
}

impl Pool {
    /// A pool of `size` isolates with a heap limit of `heap_bytes` (filled in the background).
    pub(crate) fn new(size: usize, heap_bytes: usize) -> Pool {
        let pool = Pool {
            inner: Rc::new(PoolInner {
                ready: RefCell::new(VecDeque::new()),
                size,
                heap_bytes,
                refilling: Cell::new(false),
            }),
        };
        pool.refill();
        pool
    }

    /// A fresh isolate with this heap limit: from the pool when it matches the pool's, else new.
    pub(crate) fn take(&self, heap_bytes: usize) -> Result<Isolate, IsolateError> {
        let pooled = if heap_bytes == self.inner.heap_bytes {
            self.inner.ready.borrow_mut().pop_front()
        } else {
            None
        };
        let isolate = match pooled {
            Some(isolate) => isolate,
            None => Isolate::new(heap_bytes)?,
        };
        self.refill();
        Ok(isolate)
    }

    /// Number of isolates ready now.
    pub(crate) fn ready(&self) -> usize {
        self.inner.ready.borrow().len()
    }

    /// Starts filling the pool up to its size, unless that is already under way.
    pub(crate) fn refill(&self) {
        if self.inner.refilling.get() || self.ready() >= self.inner.size {
            return;
        }
        self.inner.refilling.set(true);
        let pool = self.clone();
        tokio::task::spawn_local(async move {
            loop {
                tokio::task::yield_now().await;
                if pool.ready() >= pool.inner.size {
                    break;
                }
                match Isolate::new(pool.inner.heap_bytes) {
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
}
