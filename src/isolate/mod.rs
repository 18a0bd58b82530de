//! The per-process JavaScript isolate host.
//!
//! Every process runs its JIT tools in its own deno_core `JsRuntime` (QuickJS-ng by default,
//! V8 with `--features v8`; this module uses deno_core's API only). [`IsolateHost`] owns
//! `threads` worker threads, each holding many isolates and a pool of pre-created ones; a pid
//! is bound to one thread for its life. A call loads the tool module (once per hash), runs
//! `run(args, libos)` and returns its JSON result, under [`CallLimits`].
//!
//! **Architecture Invariant:** a tool reaches the host only through the ops of
//! `agent-libos-ops`, which forward wire syscalls to the call's [`SyscallPort`]. The libos
//! bootstrap captures the ops in a closure and deletes `Deno`, `__bootstrap` and `__infra`
//! from the global scope before any tool runs; the module loader refuses every import.
//!
//! Limits: time by a watchdog (wall time outside syscalls, see [`limits`]), heap by the
//! isolate's heap limit and near-heap-limit callback, syscalls and console bytes by counters
//! in the ops, result size by the JavaScript entry point before any copy, and stack overflow
//! by the engine (`Limit { limit: "stack" }`). After a time or memory limit the process's
//! isolate is discarded; its next call gets a fresh one (its globals are gone).

mod limits;
mod loader;
mod pool;
mod runtime;
mod worker;

#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use serde_json::Value;
use tokio::sync::{mpsc, oneshot, OwnedSemaphorePermit, Semaphore};

pub use agent_libos_ops::{CallContext, SyscallPort};
pub use limits::CallLimits;

use crate::kernel::error::{SyscallError, WireError};
use limits::Watchdog;
use worker::Command;

/// Sizes of an [`IsolateHost`].
#[derive(Clone, Debug)]
pub struct HostConfig {
    /// Worker threads (default 2).
    pub threads: usize,
    /// Pre-created isolates per thread (default 4).
    pub pool_size: usize,
    /// Heap limit of pooled isolates (default: `CallLimits::default().heap_bytes`). A call
    /// whose `heap_bytes` differs gets an isolate made for it instead.
    pub heap_bytes: usize,
    /// Most commands queued or running on one worker thread (default 1024); the next caller
    /// waits for one to finish, so a flood of calls slows its callers and is never dropped.
    pub max_queued: usize,
}

impl Default for HostConfig {
    fn default() -> Self {
        HostConfig {
            threads: 2,
            pool_size: 4,
            heap_bytes: CallLimits::default().heap_bytes,
            max_queued: 1024,
        }
    }
}

/// A transpiled tool module.
#[derive(Clone, Debug)]
pub struct ToolModule {
    /// A URL such as `tool:count_lines@<hash>.ts`; also the name in stack traces.
    pub specifier: String,
    /// The transpiled JavaScript (an ES module whose default export has `run(args, libos)`).
    pub code: String,
    /// Source map of `code` (JSON), so stack traces point at TypeScript lines.
    pub source_map: Option<String>,
    /// Content hash; an isolate evaluates each hash once.
    pub hash: String,
}

/// One tool call.
#[derive(Clone)]
pub struct CallRequest {
    pub module: Arc<ToolModule>,
    pub args: Value,
    pub limits: CallLimits,
    /// Where the tool's syscalls and console output go.
    pub port: Arc<dyn SyscallPort>,
    /// Passed to the port with each syscall; `ctx.pid` must be the pid called.
    pub ctx: CallContext,
    /// `Date.now()` inside the call starts here (advancing 1 ms per read).
    pub start_time_ms: i64,
    /// Seeds `Math.random()` for the call.
    pub random_seed: u64,
}

/// Why a call failed.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum CallError {
    /// `limit` is one of `cpu_time`, `memory`, `syscalls`, `result_size`, `console_output`,
    /// `stack`.
    #[error("limit exceeded: {limit}: {detail}")]
    Limit { limit: String, detail: String },
    /// The tool threw. `error` is the wire error when the exception was a libos error class
    /// (e.g. an uncaught `PermissionDenied`); the tool can construct those itself, so it is a
    /// report, not evidence.
    #[error("tool threw: {message}")]
    Threw {
        message: String,
        stack: String,
        error: Option<Value>,
    },
    /// The module failed to load or link (bad specifier, syntax error, an import).
    #[error("tool module: {0}")]
    Module(String),
    #[error("isolate host: {0}")]
    Internal(String),
}

impl From<CallError> for SyscallError {
    fn from(err: CallError) -> SyscallError {
        match err {
            CallError::Limit { limit, detail } => SyscallError::LimitExceeded { limit, detail },
            CallError::Threw { message, error, .. }
                if error.is_none() && message.contains("out of memory") =>
            {
                SyscallError::LimitExceeded {
                    limit: "memory".into(),
                    detail: format!("the tool ran out of its heap: {message}"),
                }
            }
            CallError::Threw {
                message,
                stack,
                error,
            } => match error.and_then(|e| serde_json::from_value::<WireError>(e).ok()) {
                Some(wire) => SyscallError::from_wire(&wire),
                None => SyscallError::ToolError { message, stack },
            },
            CallError::Module(message) => SyscallError::ToolError {
                message,
                stack: String::new(),
            },
            CallError::Internal(message) => SyscallError::Internal(message),
        }
    }
}

/// Errors of attaching an isolate.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum IsolateError {
    #[error("cannot create an isolate: {0}")]
    Create(String),
    #[error("the isolate host has shut down")]
    Closed,
}

/// Hosts the isolates of all processes. Cheap to clone; threads stop when the last clone goes.
#[derive(Clone)]
pub struct IsolateHost {
    inner: Arc<HostInner>,
}

struct HostInner {
    workers: Vec<mpsc::UnboundedSender<Command>>,
    /// One per worker: a permit per command queued or running there, held until it answers.
    room: Vec<Arc<Semaphore>>,
    max_queued: usize,
    /// pid → worker index.
    placement: Mutex<HashMap<i64, usize>>,
    next_ephemeral: AtomicUsize,
}

impl IsolateHost {
    /// Starts the worker threads and the watchdog; pools fill in the background.
    pub fn start(config: HostConfig) -> IsolateHost {
        let watchdog = Arc::new(Watchdog::start());
        let threads = config.threads.max(1);
        let workers = (0..threads)
            .map(|i| worker::spawn(i, &config, watchdog.clone()))
            .collect();
        let max_queued = config.max_queued.max(1);
        IsolateHost {
            inner: Arc::new(HostInner {
                room: (0..threads)
                    .map(|_| Arc::new(Semaphore::new(max_queued)))
                    .collect(),
                max_queued,
                workers,
                placement: Mutex::new(HashMap::new()),
                next_ephemeral: AtomicUsize::new(0),
            }),
        }
    }

    /// Binds a pre-created isolate to `pid` (a no-op if it has one).
    pub async fn attach(&self, pid: i64) -> Result<(), IsolateError> {
        let worker = self.place(pid);
        let (reply, answer) = oneshot::channel();
        let _room = self.room(worker).await.ok_or(IsolateError::Closed)?;
        self.send(worker, Command::Attach { pid, reply })
            .map_err(|_| IsolateError::Closed)?;
        answer.await.map_err(|_| IsolateError::Closed)?
    }

    /// Drops `pid`'s isolate (after its running call, if any, ends).
    pub async fn detach(&self, pid: i64) {
        let worker = self.lock_placement().remove(&pid);
        if let Some(worker) = worker {
            let (reply, answer) = oneshot::channel();
            let Some(_room) = self.room(worker).await else {
                return;
            };
            if self.send(worker, Command::Detach { pid, reply }).is_ok() {
                let _ = answer.await;
            }
        }
    }

    /// Runs a tool call in `pid`'s isolate, attaching one first if needed.
    pub async fn call(&self, pid: i64, req: CallRequest) -> Result<Value, CallError> {
        if req.ctx.pid != pid {
            return Err(CallError::Internal(format!(
                "a call for pid {pid} carries the context of pid {}",
                req.ctx.pid
            )));
        }
        let worker = self.place(pid);
        let (reply, answer) = oneshot::channel();
        let room = self.room(worker).await.ok_or_else(shut_down)?;
        self.send(
            worker,
            Command::Call {
                pid,
                req,
                reply,
                room,
            },
        )
        .map_err(|_| shut_down())?;
        answer
            .await
            .map_err(|_| CallError::Internal("the isolate's worker stopped".into()))?
    }

    /// Runs a call in a fresh isolate that is dropped afterwards (declared tests, mock ports).
    pub async fn run_ephemeral(&self, req: CallRequest) -> Result<Value, CallError> {
        let n = self.inner.workers.len();
        let worker = self.inner.next_ephemeral.fetch_add(1, Ordering::Relaxed) % n;
        let (reply, answer) = oneshot::channel();
        let room = self.room(worker).await.ok_or_else(shut_down)?;
        self.send(worker, Command::Ephemeral { req, reply, room })
            .map_err(|_| shut_down())?;
        answer
            .await
            .map_err(|_| CallError::Internal("the isolate's worker stopped".into()))?
    }

    fn lock_placement(&self) -> std::sync::MutexGuard<'_, HashMap<i64, usize>> {
        self.inner
            .placement
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    /// The worker of `pid`: its current one, or the one with the fewest processes.
    fn place(&self, pid: i64) -> usize {
        let mut placement = self.lock_placement();
        if let Some(worker) = placement.get(&pid) {
            return *worker;
        }
        let mut load = vec![0usize; self.inner.workers.len()];
        for worker in placement.values() {
            load[*worker] += 1;
        }
        let worker = (0..load.len()).min_by_key(|i| load[*i]).unwrap_or(0);
        placement.insert(pid, worker);
        worker
    }

    /// Waits for room on `worker`; `None` once the host shut down.
    async fn room(&self, worker: usize) -> Option<OwnedSemaphorePermit> {
        self.inner.room[worker].clone().acquire_owned().await.ok()
    }

    /// Commands queued or running on all workers now (never more than `max_queued` each).
    pub fn queued(&self) -> usize {
        self.inner
            .room
            .iter()
            .map(|room| self.inner.max_queued - room.available_permits())
            .sum()
    }

    fn send(&self, worker: usize, command: Command) -> Result<(), ()> {
        self.inner.workers[worker].send(command).map_err(|_| ())
    }
}

fn shut_down() -> CallError {
    CallError::Internal("the isolate host has shut down".into())
}
