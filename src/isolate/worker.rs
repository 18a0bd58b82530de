//! Worker threads: each owns many isolates on its own current-thread tokio runtime.
//!
//! `JsRuntime` is not `Send`, so isolates never move between threads. A worker receives
//! commands over a channel. Attach and detach are handled in order as they arrive; each call
//! runs as a local task that locks its process's slot (so calls of one pid are serialized)
//! and drives that isolate's event loop until the call settles. Calls of different pids on
//! one thread interleave whenever one of them waits (for a syscall, for instance).

use std::collections::HashMap;
use std::rc::Rc;
use std::sync::Arc;
use std::thread;

use serde_json::Value;
use tokio::sync::{mpsc, oneshot, Mutex, OwnedSemaphorePermit};

use super::limits::Watchdog;
use super::pool::Pool;
use super::runtime::{Health, Isolate};
use super::{CallError, CallRequest, HostConfig, IsolateError};

/// Native stack of worker threads: QuickJS's own stack limit (1 MiB) must hit first.
const WORKER_STACK: usize = 16 * 1024 * 1024;

pub(crate) enum Command {
    Attach {
        pid: i64,
        reply: oneshot::Sender<Result<(), IsolateError>>,
    },
    Detach {
        pid: i64,
        reply: oneshot::Sender<()>,
    },
    Call {
        pid: i64,
        req: CallRequest,
        reply: oneshot::Sender<Result<Value, CallError>>,
        /// The call's place in the worker's queue, given back when the call ends here
        /// (not when its caller stops waiting), before its answer is sent.
        room: OwnedSemaphorePermit,
    },
    Ephemeral {
        req: CallRequest,
        reply: oneshot::Sender<Result<Value, CallError>>,
        room: OwnedSemaphorePermit,
    },
}

/// One process's isolate; `None` until first needed or after it was poisoned.
type Slot = Rc<Mutex<Option<Isolate>>>;

/// Starts worker thread `index`; it ends when the returned sender and its clones are dropped.
pub(crate) fn spawn(
    index: usize,
    config: &HostConfig,
    watchdog: Arc<Watchdog>,
) -> mpsc::UnboundedSender<Command> {
    let (tx, rx) = mpsc::unbounded_channel();
    let (pool_size, heap_bytes) = (config.pool_size, config.heap_bytes);
    thread::Builder::new()
        .name(format!("isolate-{index}"))
        .stack_size(WORKER_STACK)
        .spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("build a worker's tokio runtime");
            let local = tokio::task::LocalSet::new();
            local.block_on(&runtime, serve(rx, pool_size, heap_bytes, watchdog));
        })
        .expect("spawn an isolate worker thread");
    tx
}

async fn serve(
    mut rx: mpsc::UnboundedReceiver<Command>,
    pool_size: usize,
    heap_bytes: usize,
    watchdog: Arc<Watchdog>,
) {
    let pool = Pool::new(pool_size, heap_bytes);
    let mut procs: HashMap<i64, Slot> = HashMap::new();
    while let Some(command) = rx.recv().await {
        match command {
            Command::Attach { pid, reply } => {
                let result = match procs.get(&pid) {
                    Some(_) => Ok(()),
                    None => pool.take(heap_bytes).map(|isolate| {
                        procs.insert(pid, Rc::new(Mutex::new(Some(isolate))));
                    }),
                };
                let _ = reply.send(result);
            }
            Command::Detach { pid, reply } => {
                procs.remove(&pid);
                let _ = reply.send(());
            }
            Command::Call {
                pid,
                req,
                reply,
                room,
            } => {
                let slot = procs
                    .entry(pid)
                    .or_insert_with(|| Rc::new(Mutex::new(None)))
                    .clone();
                let (pool, watchdog) = (pool.clone(), watchdog.clone());
                tokio::task::spawn_local(async move {
                    let mut isolate = slot.lock().await;
                    let result = call(&mut isolate, &pool, &watchdog, req).await;
                    drop(room);
                    let _ = reply.send(result);
                });
            }
            Command::Ephemeral { req, reply, room } => {
                let (pool, watchdog) = (pool.clone(), watchdog.clone());
                tokio::task::spawn_local(async move {
                    let mut isolate = None;
                    let result = call(&mut isolate, &pool, &watchdog, req).await;
                    drop(room);
                    let _ = reply.send(result);
                });
            }
        }
    }
}

/// Runs `req` on the slot's isolate, replacing it first if it is missing or has another
/// heap limit, and dropping it afterwards if the call poisoned it.
async fn call(
    slot: &mut Option<Isolate>,
    pool: &Pool,
    watchdog: &Watchdog,
    req: CallRequest,
) -> Result<Value, CallError> {
    let fits = slot
        .as_ref()
        .is_some_and(|isolate| isolate.heap_bytes() == req.limits.heap_bytes);
    if !fits {
        *slot = Some(
            pool.take(req.limits.heap_bytes)
                .map_err(|e| CallError::Internal(e.to_string()))?,
        );
    }
    let Some(isolate) = slot.as_mut() else {
        return Err(CallError::Internal("no isolate".into()));
    };
    let (result, health) = isolate.call(&req, watchdog).await;
    if health == Health::Poisoned {
        *slot = None;
    }
    result
}
