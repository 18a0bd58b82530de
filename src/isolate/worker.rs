//! Worker threads: each owns many isolates on its own current-thread tokio runtime.
//!
//! `JsRuntime` is not `Send`, so isolates never move between threads. A worker receives
//! commands over a channel; attach and detach are handled in order as they arrive, and each
//! call runs as a local task that locks its process's slot and drives that isolate until the
//! call settles or the watchdog stops it. Calls of different pids on one thread interleave
//! whenever one of them waits (for a syscall, for instance).
//!
//! The command queue of a worker is bounded (`max_queued`, default [`QUEUE`]): a sender waits while it is full,
//! and gives up when the thread is held by one poll or retiring (see [`Worker::send`]).
//!
//! A command carries a [`Claim`]: the worker takes it when it starts the work, and the host
//! may withdraw a command that has not started (the thread is busy in another process's
//! poll) and send it elsewhere. A worker **retires** — answers every new command with
//! [`Answer::Elsewhere`], lets its running calls finish, drops its isolates and ends — when
//! its engine slot budget is spent (`slots.rs`), when creating a runtime fails or its canary
//! does, when the engine reports a deadlock that the canary confirms, or when a stopped call
//! keeps running in the engine (`watchdog.rs`; the process's [`on_stuck`] hook is told
//! first). The host then starts a replacement.
//!
//! Nothing here knows the kernel: a worker sees tool modules, JSON arguments and a
//! [`SyscallPort`](super::SyscallPort).

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinSet;

use super::pool::Pool;
use super::runtime::{self, Health as IsolateHealth, Isolate};
use super::slots;
use super::watchdog::Watchdog;
use super::{CallError, CallRequest, IsolateError};

/// Native stack of worker threads: QuickJS's own stack limit (1 MiB) must hit first.
const WORKER_STACK: usize = 16 * 1024 * 1024;
/// Commands a worker's queue holds before senders wait.
pub(crate) const QUEUE: usize = 64;
/// How often a sender waiting for room in a full queue looks at the thread's health.
const SEND_CHECK: Duration = Duration::from_millis(50);

/// The state of a worker thread that the host and the watchdog read from other threads.
pub(crate) struct Health {
    /// Microseconds since [`epoch`] at which the poll in progress started, plus one; 0 when
    /// no poll runs.
    busy_since: AtomicU64,
    retiring: AtomicBool,
}

/// The instant busy times are counted from.
fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

impl Health {
    pub(crate) fn new() -> Health {
        Health {
            busy_since: AtomicU64::new(0),
            retiring: AtomicBool::new(false),
        }
    }

    /// A poll started at `now`.
    pub(crate) fn busy_since(&self, now: Instant) {
        let micros = now.saturating_duration_since(epoch()).as_micros() as u64;
        self.busy_since.store(micros + 1, Ordering::Release);
    }

    /// The poll ended.
    pub(crate) fn idle(&self) {
        self.busy_since.store(0, Ordering::Release);
    }

    /// How long the poll in progress has been running.
    pub(crate) fn busy_for(&self) -> Duration {
        match self.busy_since.load(Ordering::Acquire) {
            0 => Duration::ZERO,
            since => {
                let now = Instant::now()
                    .saturating_duration_since(epoch())
                    .as_micros() as u64;
                Duration::from_micros(now.saturating_sub(since - 1))
            }
        }
    }

    /// Stops placing work on this thread.
    pub(crate) fn retire(&self, why: &str) {
        if !self.retiring.swap(true, Ordering::AcqRel) {
            tracing::info!(thread = ?thread::current().name(), "isolate worker retires: {why}");
        }
    }

    pub(crate) fn is_retiring(&self) -> bool {
        self.retiring.load(Ordering::Acquire)
    }
}

/// A call's answer, sent once: by the call's task when the call ends, or by the watchdog
/// when a stopped call's poll never returns (the task is stuck in the engine then).
#[derive(Clone)]
struct Reply {
    sender: Arc<Mutex<Option<oneshot::Sender<CallAnswer>>>>,
    ctx: super::CallContext,
}

/// A worker's answer to a call.
type CallAnswer = Answer<Result<Value, CallError>>;

impl Reply {
    fn new(reply: oneshot::Sender<CallAnswer>, ctx: &super::CallContext) -> Reply {
        Reply {
            sender: Arc::new(Mutex::new(Some(reply))),
            ctx: ctx.clone(),
        }
    }

    /// Sends the answer; a call's outcome goes to the process's [`on_answer`] hook first, on
    /// this thread.
    fn send(&self, answer: CallAnswer) {
        let reply = self.sender.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(reply) = reply {
            if let (Answer::Done(outcome), Some(hook)) = (&answer, ON_ANSWER.get()) {
                hook(&self.ctx, outcome);
            }
            let _ = reply.send(answer);
        }
    }
}

/// Who does a command: the worker that takes it, or nobody once the host withdrew it.
#[derive(Clone, Default)]
pub(crate) struct Claim(Arc<AtomicU8>);

const QUEUED: u8 = 0;
const TAKEN: u8 = 1;
const WITHDRAWN: u8 = 2;

impl Claim {
    /// The worker starts the work; false if the host withdrew it.
    pub(crate) fn take(&self) -> bool {
        self.0
            .compare_exchange(QUEUED, TAKEN, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
    }

    /// The host takes the command back; false if a worker already started it.
    pub(crate) fn withdraw(&self) -> bool {
        self.0
            .compare_exchange(QUEUED, WITHDRAWN, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
    }
}

/// A worker's answer to a command.
pub(crate) enum Answer<T> {
    Done(T),
    /// The worker is retiring (or cannot create an isolate): send the command elsewhere.
    Elsewhere(String),
}

pub(crate) enum Command {
    Attach {
        pid: i64,
        claim: Claim,
        reply: oneshot::Sender<Answer<Result<(), IsolateError>>>,
    },
    Detach {
        pid: i64,
        reply: oneshot::Sender<()>,
    },
    Call {
        pid: i64,
        req: Arc<CallRequest>,
        claim: Claim,
        reply: oneshot::Sender<Answer<Result<Value, CallError>>>,
    },
    /// A call in a fresh isolate that is dropped afterwards.
    Ephemeral {
        req: Arc<CallRequest>,
        claim: Claim,
        reply: oneshot::Sender<Answer<Result<Value, CallError>>>,
    },
}

/// The host's handle on a worker thread; the thread ends once every clone is dropped and its
/// running calls have finished.
#[derive(Clone)]
pub(crate) struct Worker {
    tx: mpsc::Sender<Command>,
    pub(crate) health: Arc<Health>,
}

/// How queueing a command ended.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Sent {
    Queued,
    /// The queue is full and the thread has been in one poll for `stall` or is retiring.
    Busy,
    /// The thread has ended.
    Gone,
}

impl Worker {
    /// Queues `command`, waiting while the queue is full, but not for a thread that has been
    /// busy in one poll for `stall` or longer, or is retiring.
    pub(crate) async fn send(&self, command: Command, stall: Duration) -> Sent {
        let mut command = Some(command);
        loop {
            tokio::select! {
                biased;
                permit = self.tx.reserve() => {
                    return match (permit, command.take()) {
                        (Ok(permit), Some(command)) => {
                            permit.send(command);
                            Sent::Queued
                        }
                        _ => Sent::Gone,
                    };
                }
                _ = tokio::time::sleep(SEND_CHECK) => {
                    if self.health.is_retiring() || self.health.busy_for() >= stall {
                        return Sent::Busy;
                    }
                }
            }
        }
    }

    /// Commands waiting in this worker's queue now.
    pub(crate) fn queued(&self) -> usize {
        self.tx.max_capacity() - self.tx.capacity()
    }

    /// Queues `command` if there is room now.
    pub(crate) fn try_send(&self, command: Command) -> bool {
        self.tx.try_send(command).is_ok()
    }
}

/// What the process does about a call whose poll the engine never gives back (see
/// [`on_stuck`]).
pub(crate) type StuckHook = Box<dyn Fn(&super::CallContext) + Send + Sync>;

static ON_STUCK: OnceLock<StuckHook> = OnceLock::new();

/// Sets, once per process, what happens when a stopped call keeps running in the engine
/// (native code that ignores termination, such as `Atomics.wait`). The thread it holds is
/// retired and the call answered with its stop in any case; an isolate worker process also
/// tells the kernel, which kills the whole process: only that frees the thread.
pub(crate) fn on_stuck(hook: StuckHook) {
    let _ = ON_STUCK.set(hook);
}

fn report_stuck(ctx: &super::CallContext) {
    tracing::warn!(pid = ctx.pid, "a stopped call keeps running in the engine");
    if let Some(hook) = ON_STUCK.get() {
        hook(ctx);
    }
}

/// What the process does with a call's outcome on the thread that has it (see
/// [`on_answer`]).
pub(crate) type AnswerHook =
    Box<dyn Fn(&super::CallContext, &Result<Value, CallError>) + Send + Sync>;

static ON_ANSWER: OnceLock<AnswerHook> = OnceLock::new();

/// Sets, once per process, what happens to each call's outcome the moment a worker thread
/// (or the watchdog, for a call stuck in the engine) has it, before the host's caller is
/// woken: an isolate worker process writes its answer to the kernel from there, with no hop
/// through its main thread. The caller still gets the same outcome.
pub(crate) fn on_answer(hook: AnswerHook) {
    let _ = ON_ANSWER.set(hook);
}

/// Sizes of one worker.
#[derive(Clone, Copy)]
pub(crate) struct WorkerConfig {
    pub pool_size: usize,
    /// Warm isolates the thread creates once at start (`pool.rs`).
    pub warm: usize,
    pub heap_bytes: usize,
    /// Commands a worker's queue holds before senders wait.
    pub max_queued: usize,
}

/// Starts a worker thread named `name`.
pub(crate) fn spawn(name: String, config: WorkerConfig, watchdog: Arc<Watchdog>) -> Worker {
    let (tx, rx) = mpsc::channel(config.max_queued.max(1));
    let health = Arc::new(Health::new());
    let shared = health.clone();
    thread::Builder::new()
        .name(name)
        .stack_size(WORKER_STACK)
        .spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("build a worker's tokio runtime");
            let local = tokio::task::LocalSet::new();
            local.block_on(&runtime, serve(rx, config, watchdog, shared));
        })
        .expect("spawn an isolate worker thread");
    Worker { tx, health }
}

/// One process's isolate; `None` until first needed or after it was poisoned.
type Slot = Rc<tokio::sync::Mutex<Option<Isolate>>>;

/// What the call tasks of one worker share.
struct Local {
    pool: Pool,
    watchdog: Arc<Watchdog>,
    health: Arc<Health>,
    procs: RefCell<HashMap<i64, Slot>>,
}

impl Local {
    fn slot(&self, pid: i64) -> Slot {
        self.procs
            .borrow_mut()
            .entry(pid)
            .or_insert_with(|| Rc::new(tokio::sync::Mutex::new(None)))
            .clone()
    }

    /// Retires the thread if it has spent its slot budget.
    fn check_budget(&self) {
        if slots::exhausted() {
            self.health.retire("its engine slot budget is spent");
        }
    }

    /// A fresh isolate; a failure retires the thread (see `pool.rs`).
    fn fresh_isolate(&self, heap_bytes: usize) -> Result<Isolate, String> {
        let isolate = self.pool.take(heap_bytes).map_err(|e| e.to_string());
        self.check_budget();
        isolate
    }
}

async fn serve(
    mut rx: mpsc::Receiver<Command>,
    config: WorkerConfig,
    watchdog: Arc<Watchdog>,
    health: Arc<Health>,
) {
    let local = Rc::new(Local {
        pool: Pool::new(
            config.pool_size,
            config.warm,
            config.heap_bytes,
            health.clone(),
        ),
        watchdog,
        health,
        procs: RefCell::new(HashMap::new()),
    });
    let mut tasks = JoinSet::new();
    while let Some(command) = rx.recv().await {
        match command {
            Command::Attach { pid, claim, reply } => {
                if !claim.take() {
                    continue;
                }
                let _ = reply.send(attach(&local, pid, config.heap_bytes));
            }
            Command::Detach { pid, reply } => {
                local.procs.borrow_mut().remove(&pid);
                let _ = reply.send(());
            }
            Command::Call {
                pid,
                req,
                claim,
                reply,
            } => {
                let local = local.clone();
                let reply = Reply::new(reply, &req.ctx);
                tasks.spawn_local(async move {
                    let slot = local.slot(pid);
                    let mut isolate = slot.lock().await;
                    if !claim.take() {
                        return;
                    }
                    reply.send(run(&local, &mut isolate, &req, &reply).await);
                });
            }
            Command::Ephemeral { req, claim, reply } => {
                let local = local.clone();
                let reply = Reply::new(reply, &req.ctx);
                tasks.spawn_local(async move {
                    if !claim.take() {
                        return;
                    }
                    let mut isolate = None;
                    reply.send(run(&local, &mut isolate, &req, &reply).await);
                });
            }
        }
        while tasks.try_join_next().is_some() {}
    }
    // The host dropped its handle: finish what runs, then drop every isolate here.
    while tasks.join_next().await.is_some() {}
    local.pool.drain();
    local.procs.borrow_mut().clear();
}

fn attach(local: &Local, pid: i64, heap_bytes: usize) -> Answer<Result<(), IsolateError>> {
    if local.health.is_retiring() {
        return Answer::Elsewhere("the worker thread is retiring".into());
    }
    let slot = local.slot(pid);
    // A running call holds the slot: the process has an isolate.
    let Ok(mut isolate) = slot.try_lock() else {
        return Answer::Done(Ok(()));
    };
    if isolate.is_none() {
        match local.fresh_isolate(heap_bytes) {
            Ok(fresh) => *isolate = Some(fresh),
            Err(why) => return Answer::Elsewhere(why),
        }
    }
    Answer::Done(Ok(()))
}

/// Runs `req` on the slot's isolate, replacing it first if it is missing or has another heap
/// limit, and dropping it afterwards if the call poisoned it. If the call is stopped and the
/// engine never returns, the watchdog answers `reply` itself.
async fn run(
    local: &Local,
    slot: &mut Option<Isolate>,
    req: &CallRequest,
    reply: &Reply,
) -> Answer<Result<Value, CallError>> {
    if local.health.is_retiring() {
        return Answer::Elsewhere("the worker thread is retiring".into());
    }
    let fits = slot
        .as_ref()
        .is_some_and(|isolate| isolate.heap_bytes() == req.limits.heap_bytes);
    if !fits {
        *slot = None;
        match local.fresh_isolate(req.limits.heap_bytes) {
            Ok(isolate) => *slot = Some(isolate),
            Err(why) => return Answer::Elsewhere(why),
        }
    }
    let Some(isolate) = slot.as_mut() else {
        return Answer::Done(Err(CallError::Internal("no isolate".into())));
    };
    let abandon = {
        let (reply, limits, ctx) = (reply.clone(), req.limits, req.ctx.clone());
        Box::new(move |stop| {
            report_stuck(&ctx);
            reply.send(Answer::Done(Err(runtime::stopped(stop, &limits))))
        })
    };
    let ticket = local.watchdog.watch(
        req.ctx.pid,
        isolate.stop_handles(),
        (req.limits.cpu_ms, req.limits.wall_ms),
        local.health.clone(),
        abandon,
    );
    let (result, health) = isolate.call(req, &ticket).await;
    match health {
        IsolateHealth::Healthy => {}
        IsolateHealth::Poisoned => *slot = None,
        IsolateHealth::ThreadPoisoned(why) => {
            *slot = None;
            local.health.retire(&why);
        }
    }
    local.check_budget();
    Answer::Done(result)
}
