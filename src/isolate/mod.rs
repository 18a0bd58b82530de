//! The per-process JavaScript isolate host.
//!
//! Every process runs its JIT tools in its own deno_core `JsRuntime` (QuickJS-ng by default,
//! V8 with `--features v8`; this module uses deno_core's API only). [`IsolateHost`] owns
//! `threads` worker threads ("lanes"), each holding many isolates and a pool of pre-created
//! ones, plus one thread for declared tests and other throwaway isolates. A pid stays on its
//! lane unless that thread retires or is busy in another process's JavaScript, in which case
//! it moves (and gets a fresh isolate: its globals are gone); if every lane is held, one more
//! is started, up to twice `threads`. Worker queues are bounded: a sender waits for room,
//! but not behind a stalled or retiring thread. A call loads the tool module
//! (once per hash), runs `run(args, libos)` and returns its JSON result, under
//! [`CallLimits`]. Calls of one pid run one at a time.
//!
//! **Architecture Invariant:** a tool reaches the host only through the ops of
//! `agent-libos-ops`, which forward wire syscalls to the call's [`SyscallPort`]. The libos
//! bootstrap (`ts/libos.ts`) captures the ops in a closure, deletes every global that is not
//! standard ECMAScript, `console` or a libos error class, disables code from strings and
//! freezes the intrinsics before any tool runs; the module loader refuses every import.
//!
//! Limits: time by the [`watchdog`] (the time JavaScript runs, counted inside the polls of
//! the call, plus a wall-clock cap; `cancel`/`kill` stop a call too), heap by the isolate's
//! heap limit and near-heap-limit callback, syscalls and console bytes by counters in the
//! ops, result size by the JavaScript entry point before any copy, and stack overflow by the
//! engine (`Limit { limit: "stack" }`). After a time or memory limit the process's isolate is
//! discarded; its next call gets a fresh one. Worker threads retire before the engine's
//! per-thread function table runs out ([`slots`]), and are replaced.
//!
//! Nothing under `src/isolate` refers to the kernel; `kernel::tools` maps [`CallError`]s to
//! syscall errors.

pub mod confine;
mod conn;
mod engine_env;
mod hibernation;
mod limits;
mod loader;
mod pool;
mod runtime;
mod slots;
mod watchdog;
mod wire;
mod worker;
mod worker_main;
mod workers;

#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use serde_json::Value;
use tokio::sync::oneshot;

pub use agent_libos_ops::{BoxFuture, CallContext, SyscallPort};
pub use limits::CallLimits;
pub use runtime::{time_creations, Boot};
pub use wire::WORKER_MODE;
pub use worker_main::run_hidden_mode as run_worker_mode;
pub use workers::{WorkerHost, SHUTDOWN_GRACE};

use watchdog::Watchdog;
use worker::{Answer, Claim, Command, Sent, Worker, WorkerConfig};

/// Sizes of an [`IsolateHost`].
#[derive(Clone, Debug)]
pub struct HostConfig {
    /// Worker threads for process isolates (default 2); declared tests get one more. While
    /// every one of them is held by a stalled call, up to as many again are started.
    pub threads: usize,
    /// Pre-created isolates per thread (default 0: an isolate restored from the startup
    /// snapshot takes a few milliseconds, and a one-shot run needs only its own).
    pub pool_size: usize,
    /// Warm isolates (default 0): the first process thread creates this many once, as soon
    /// as it starts, and never replaces them once taken. With `warm` > 0 the kernel also
    /// starts its process worker as it opens, so that a one-shot run's worker start and
    /// first isolate overlap the opening of the store (`agent-libos tool run` sets 1).
    pub warm: usize,
    /// Heap limit of pooled isolates (default: `CallLimits::default().heap_bytes`). A call
    /// whose `heap_bytes` differs gets an isolate made for it instead.
    pub heap_bytes: usize,
    /// Commands each worker's queue holds (default 64); past that, callers wait for room —
    /// nothing is dropped — unless the thread is stalled or retiring, and then the call
    /// moves to another thread.
    pub max_queued: usize,
    /// A worker process is drained and replaced once it has created this many runtimes
    /// (default [`WORKER_CREATIONS`]).
    pub worker_creations: u64,
    /// ... or once its resident memory reaches this many bytes (default
    /// [`WORKER_RSS_BYTES`]).
    pub worker_rss_bytes: u64,
    /// **Debug builds only** (the field does not exist in a release build): the workers'
    /// isolates keep `Atomics` and `SharedArrayBuffer`, so a test can block a call in
    /// native code that ignores termination (`Atomics.wait`) and watch its worker be
    /// killed. Default `false`.
    #[cfg(debug_assertions)]
    pub test_keep_atomics: bool,
    /// Hot isolates the host keeps (default sized from the machine's memory, at most 1,000):
    /// past it, the isolate of the process used least recently and not in a call is
    /// evicted (the process **hibernates**); its next call re-creates one.
    pub max_hot: usize,
    /// A process not called for this long hibernates too (default 10 minutes).
    pub idle_timeout: Duration,
    /// Hot isolates placed on one process worker (default [`HOT_PER_WORKER`]); past it, a
    /// process whose isolate is (re-)created goes to another worker, started if needed.
    pub hot_per_worker: usize,
}

/// The default [`HostConfig::max_hot`]: an eighth of the machine's memory at ~3 MiB per
/// hot isolate, between 16 and 1,000.
pub fn default_max_hot() -> usize {
    // SAFETY: `sysinfo` fills the zeroed struct it is given.
    let total = unsafe {
        let mut info: libc::sysinfo = std::mem::zeroed();
        if libc::sysinfo(&mut info) == 0 {
            (info.totalram as u64).saturating_mul(u64::from(info.mem_unit))
        } else {
            0
        }
    };
    usize::try_from(total / 8 / (3 << 20))
        .unwrap_or(usize::MAX)
        .clamp(16, 1_000)
}

/// Runtime creations after which a worker process is replaced. Each creation leaks ~0.9 MiB
/// the engine never gives back, and one engine thread can make ~79 from the snapshot (~150
/// without) before its budget is spent (`slots.rs`): at 128, spread over a worker's
/// threads, a worker is usually replaced before its threads retire (thread retirement stays
/// the backstop) and holds at most ~115 MiB of leak.
pub const WORKER_CREATIONS: u64 = 128;
/// Resident memory at which a worker process is replaced (512 MiB).
pub const WORKER_RSS_BYTES: u64 = 512 << 20;
/// Hot isolates per process worker: ~2.8 MiB each keeps a full worker well under
/// [`WORKER_RSS_BYTES`], and under [`WORKER_CREATIONS`] a worker can create an isolate for
/// each of its processes and still re-create some before it is replaced.
pub const HOT_PER_WORKER: usize = 96;

impl Default for HostConfig {
    fn default() -> Self {
        HostConfig {
            threads: 2,
            pool_size: 0,
            warm: 0,
            heap_bytes: CallLimits::default().heap_bytes,
            max_queued: worker::QUEUE,
            worker_creations: WORKER_CREATIONS,
            worker_rss_bytes: WORKER_RSS_BYTES,
            #[cfg(debug_assertions)]
            test_keep_atomics: false,
            max_hot: default_max_hot(),
            idle_timeout: Duration::from_secs(600),
            hot_per_worker: HOT_PER_WORKER,
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
#[derive(Clone, Debug, PartialEq, thiserror::Error, serde::Serialize, serde::Deserialize)]
pub enum CallError {
    /// `limit` is one of `cpu_time`, `wall_clock`, `memory`, `syscalls`, `result_size`,
    /// `console_output`, `stack`.
    #[error("limit exceeded: {limit}: {detail}")]
    Limit { limit: String, detail: String },
    /// A syscall of this call failed and the tool let that error escape: `error` is the wire
    /// error the port returned (the host's record, not the tool's copy of it).
    #[error("syscall failed: {error}")]
    Syscall { error: Value },
    /// The tool threw its own error (whatever its class: a tool can construct libos errors,
    /// and those are its own too).
    #[error("tool threw: {message}")]
    Threw { message: String, stack: String },
    /// The module failed to load or link (bad specifier, syntax error, an import).
    #[error("tool module: {0}")]
    Module(String),
    /// The process was cancelled or killed while the call ran.
    #[error("cancelled: {0}")]
    Cancelled(String),
    #[error("isolate host: {0}")]
    Internal(String),
    /// The worker process running the call stopped (it died, or was killed because another
    /// call on it hung) before the call ended; every syscall the kernel was serving for it
    /// has finished. Running the call again from its journal is safe.
    #[error("isolate worker: {0}")]
    Retry(String),
}

/// Errors of attaching an isolate.
#[derive(Clone, Debug, PartialEq, thiserror::Error, serde::Serialize, serde::Deserialize)]
pub enum IsolateError {
    #[error("cannot create an isolate: {0}")]
    Create(String),
    #[error("the isolate host has shut down")]
    Closed,
}

/// Counters of an [`IsolateHost`], for tests and diagnostics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HostStats {
    /// Worker threads started (lanes, the test thread and their replacements).
    pub threads_started: usize,
    /// Worker threads replaced because they retired.
    pub threads_retired: usize,
    /// Worker processes started (each process worker and test worker, replacements too).
    pub workers_started: usize,
    /// Worker processes drained and replaced for their wear (runtimes created, memory).
    pub workers_replaced: usize,
    /// Worker processes that died or were killed.
    pub workers_lost: usize,
    /// Worker processes running now (the current ones and those draining).
    pub workers_live: usize,
    /// Runtimes the worker processes created.
    pub runtimes_created: u64,
    /// The largest resident memory of a worker process seen, in bytes.
    pub max_worker_rss_bytes: u64,
    /// Processes whose isolate is hot now (see [`HostConfig::max_hot`]).
    pub isolates_hot: usize,
    /// Isolates evicted so far (over the cap, or idle).
    pub isolates_evicted: u64,
    /// Calls that re-created the isolate of a hibernated process.
    pub isolates_recreated: u64,
}

/// How often a waiting command checks whether its thread is stalled.
const STALL_CHECK: Duration = Duration::from_millis(50);
/// How long a poll may hold a lane before other processes' waiting calls move off it.
const STALL_LIMIT: Duration = Duration::from_millis(250);
/// How many threads a command tries before it gives up.
const MAX_ATTEMPTS: usize = 4;

/// Hosts the isolates of all processes. Cheap to clone; threads stop when the last clone goes.
#[derive(Clone)]
pub struct IsolateHost {
    inner: Arc<HostInner>,
}

struct HostInner {
    config: WorkerConfig,
    watchdog: Arc<Watchdog>,
    /// Process lanes, by index; a retiring worker is replaced in place.
    lanes: Mutex<Vec<Worker>>,
    /// Lanes may grow to this many (twice `threads`) while every lane is held by a stalled
    /// call; they never shrink.
    max_lanes: usize,
    /// The thread of declared tests and other throwaway isolates.
    tester: Mutex<Worker>,
    /// pid → lane.
    placement: Mutex<HashMap<i64, usize>>,
    /// One call at a time per pid.
    serial: Mutex<HashMap<i64, Arc<tokio::sync::Mutex<()>>>>,
    started: AtomicUsize,
    retired: AtomicUsize,
}

/// Why a command could not be run on a process's lane.
enum LaneError {
    /// The host has shut down.
    ShutDown,
    /// The worker thread stopped while the command was on it.
    WorkerStopped,
    /// Every attempt went to a worker that could not do it; the last reason.
    NoWorker(String),
}

/// How waiting for a worker's answer ended.
enum Waited<T> {
    Done(T),
    /// The worker could not do it: try another thread.
    Elsewhere(String),
    /// The command was withdrawn from a stalled thread before it started.
    Stalled,
    /// The worker thread is gone.
    Gone,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

impl IsolateHost {
    /// Starts the worker threads and the watchdog; pools fill in the background.
    pub fn start(config: HostConfig) -> IsolateHost {
        if !engine_env::bytecode_cache_is_off() {
            tracing::error!("the engine's bytecode cache is on in this process (unsupported platform): compiled tools are written to the user's cache directory");
        }
        let watchdog = Arc::new(Watchdog::start());
        let worker = WorkerConfig {
            pool_size: config.pool_size,
            warm: 0,
            heap_bytes: config.heap_bytes,
            max_queued: config.max_queued,
        };
        let started = AtomicUsize::new(0);
        let spawn = |name: &str, config: WorkerConfig| {
            let n = started.fetch_add(1, Ordering::Relaxed);
            worker::spawn(format!("{name}-{n}"), config, watchdog.clone())
        };
        // Only the first lane is warm: a process's first placement is the first lane when
        // none holds a process yet (`least_loaded`).
        let lanes = (0..config.threads.max(1))
            .map(|lane| {
                let warm = if lane == 0 { config.warm } else { 0 };
                spawn("isolate", WorkerConfig { warm, ..worker })
            })
            .collect();
        let tester = spawn("isolate-test", worker);
        IsolateHost {
            inner: Arc::new(HostInner {
                config: worker,
                watchdog,
                lanes: Mutex::new(lanes),
                max_lanes: config.threads.max(1) * 2,
                tester: Mutex::new(tester),
                placement: Mutex::new(HashMap::new()),
                serial: Mutex::new(HashMap::new()),
                started,
                retired: AtomicUsize::new(0),
            }),
        }
    }

    /// Binds a pre-created isolate to `pid` (a no-op if it has one).
    pub async fn attach(&self, pid: i64) -> Result<(), IsolateError> {
        let sent = self
            .on_lane(pid, |claim, reply| Command::Attach { pid, claim, reply })
            .await;
        match sent {
            Ok(result) => result,
            Err(LaneError::ShutDown | LaneError::WorkerStopped) => Err(IsolateError::Closed),
            Err(LaneError::NoWorker(why)) => Err(IsolateError::Create(why)),
        }
    }

    /// Sends the command `make` builds to `pid`'s lane and waits for its answer; moves `pid`
    /// to another lane when its thread is stalled, and tries again (up to `MAX_ATTEMPTS`
    /// times) when a worker could not do it.
    async fn on_lane<T>(
        &self,
        pid: i64,
        make: impl Fn(Claim, oneshot::Sender<Answer<T>>) -> Command,
    ) -> Result<T, LaneError> {
        let mut why = String::new();
        let mut attempts = 0;
        while attempts < MAX_ATTEMPTS {
            let (lane, worker) = self.lane_of(pid);
            let claim = Claim::default();
            let (reply, answer) = oneshot::channel();
            match worker.send(make(claim.clone(), reply), STALL_LIMIT).await {
                Sent::Queued => {}
                Sent::Busy => {
                    self.move_pid(pid, lane);
                    continue;
                }
                Sent::Gone => return Err(LaneError::ShutDown),
            }
            match wait(&worker, &claim, answer, true).await {
                Waited::Done(result) => return Ok(result),
                Waited::Stalled => self.move_pid(pid, lane),
                Waited::Elsewhere(reason) => {
                    why = reason;
                    attempts += 1;
                }
                Waited::Gone => return Err(LaneError::WorkerStopped),
            }
        }
        Err(LaneError::NoWorker(why))
    }

    /// Drops `pid`'s isolate (after its running call, if any, ends).
    pub async fn detach(&self, pid: i64) {
        lock(&self.inner.serial).remove(&pid);
        let lane = lock(&self.inner.placement).remove(&pid);
        if let Some(lane) = lane {
            let worker = lock(&self.inner.lanes)[lane].clone();
            let (reply, answer) = oneshot::channel();
            if worker
                .send(Command::Detach { pid, reply }, STALL_LIMIT)
                .await
                == Sent::Queued
            {
                // Waits for the worker, but not for a thread stalled in someone's poll.
                let _ = wait_unless_stalled(&worker, answer).await;
            }
        }
    }

    /// Drops `pid`'s isolate on its lane, keeping the placement; the caller holds `pid`'s
    /// call lock, so no call of `pid` runs. A stalled thread gets the command in its queue,
    /// ahead of the next call.
    async fn drop_isolate(&self, pid: i64) {
        let lane = lock(&self.inner.placement).get(&pid).copied();
        let Some(lane) = lane else { return };
        let worker = lock(&self.inner.lanes)[lane].clone();
        let (reply, answer) = oneshot::channel();
        if worker
            .send(Command::Detach { pid, reply }, STALL_LIMIT)
            .await
            == Sent::Queued
        {
            let _ = wait_unless_stalled(&worker, answer).await;
        }
    }

    /// Stops `pid`'s running calls (and declared tests) at once, and every later one: they
    /// fail with [`CallError::Cancelled`] and their isolates are discarded (a cancelled or
    /// killed process never runs again). Returns how many were running.
    pub fn interrupt(&self, pid: i64) -> usize {
        self.inner.watchdog.cancel(pid)
    }

    /// Runs a tool call in `pid`'s isolate, attaching one first if needed.
    pub async fn call(&self, pid: i64, req: CallRequest) -> Result<Value, CallError> {
        self.call_in(pid, req, false).await
    }

    /// Runs a tool call in a fresh isolate for `pid`, which then stays `pid`'s isolate: the
    /// one it had (and whatever earlier calls left in its globals) is dropped first. For
    /// replays, which must not see state the run they replay did not see.
    pub async fn call_fresh(&self, pid: i64, req: CallRequest) -> Result<Value, CallError> {
        self.call_in(pid, req, true).await
    }

    async fn call_in(&self, pid: i64, req: CallRequest, fresh: bool) -> Result<Value, CallError> {
        if req.ctx.pid != pid {
            return Err(CallError::Internal(format!(
                "a call for pid {pid} carries the context of pid {}",
                req.ctx.pid
            )));
        }
        let serial = lock(&self.inner.serial).entry(pid).or_default().clone();
        let _one_at_a_time = serial.lock().await;
        if fresh {
            self.drop_isolate(pid).await;
        }
        let req = Arc::new(req);
        let sent = self
            .on_lane(pid, |claim, reply| Command::Call {
                pid,
                req: req.clone(),
                claim,
                reply,
            })
            .await;
        match sent {
            Ok(result) => result,
            Err(LaneError::ShutDown) => {
                Err(CallError::Internal("the isolate host has shut down".into()))
            }
            Err(LaneError::WorkerStopped) => {
                Err(CallError::Internal("the isolate's worker stopped".into()))
            }
            Err(LaneError::NoWorker(why)) => Err(CallError::Internal(format!(
                "no worker thread could run the call: {why}"
            ))),
        }
    }

    /// Runs a call in a fresh isolate that is dropped afterwards (declared tests, mock
    /// ports), on the host's test thread.
    pub async fn run_ephemeral(&self, req: CallRequest) -> Result<Value, CallError> {
        let req = Arc::new(req);
        let mut why = String::new();
        for _ in 0..MAX_ATTEMPTS {
            let worker = self.tester();
            let claim = Claim::default();
            let (reply, answer) = oneshot::channel();
            let command = Command::Ephemeral {
                req: req.clone(),
                claim: claim.clone(),
                reply,
            };
            match worker.send(command, Duration::MAX).await {
                Sent::Queued => {}
                Sent::Busy => {
                    why = "the test thread retired".into();
                    continue;
                }
                Sent::Gone => {
                    return Err(CallError::Internal("the isolate host has shut down".into()))
                }
            }
            match wait(&worker, &claim, answer, false).await {
                Waited::Done(result) => return result,
                Waited::Elsewhere(reason) => why = reason,
                Waited::Stalled | Waited::Gone => {
                    return Err(CallError::Internal("the isolate's worker stopped".into()))
                }
            }
        }
        Err(CallError::Internal(format!(
            "no worker thread could run the call: {why}"
        )))
    }

    /// Commands waiting in the queues of the process threads now (each at most
    /// `max_queued`).
    pub fn queued(&self) -> usize {
        lock(&self.inner.lanes).iter().map(Worker::queued).sum()
    }

    /// Threads started and retired so far.
    pub fn stats(&self) -> HostStats {
        HostStats {
            threads_started: self.inner.started.load(Ordering::Relaxed),
            threads_retired: self.inner.retired.load(Ordering::Relaxed),
            runtimes_created: slots::runtimes_created(),
            ..HostStats::default()
        }
    }

    fn spawn(&self, name: &str) -> Worker {
        let n = self.inner.started.fetch_add(1, Ordering::Relaxed);
        worker::spawn(
            format!("{name}-{n}"),
            self.inner.config,
            self.inner.watchdog.clone(),
        )
    }

    /// `worker` itself, or its replacement if it retired.
    fn renew(&self, worker: &mut Worker, name: &str) {
        if worker.health.is_retiring() {
            *worker = self.spawn(name);
            self.inner.retired.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn tester(&self) -> Worker {
        let mut tester = lock(&self.inner.tester);
        self.renew(&mut tester, "isolate-test");
        tester.clone()
    }

    /// The lane of `pid` (placing it on the least loaded one first) and its worker.
    fn lane_of(&self, pid: i64) -> (usize, Worker) {
        let mut lanes = lock(&self.inner.lanes);
        let lane = {
            let mut placement = lock(&self.inner.placement);
            match placement.get(&pid) {
                Some(lane) => *lane,
                None => {
                    let lane = least_loaded(&placement, lanes.len(), |_| true);
                    placement.insert(pid, lane);
                    lane
                }
            }
        };
        self.renew(&mut lanes[lane], "isolate");
        (lane, lanes[lane].clone())
    }

    /// Moves `pid` off lane `from` to the least loaded lane that is not stalled, and drops
    /// its isolate there (if `from`'s queue has room; otherwise it goes with the thread).
    /// When every other lane is stalled too, starts one more lane, up to
    /// [`HostInner::max_lanes`]; past that, stays put.
    fn move_pid(&self, pid: i64, from: usize) {
        let mut lanes = lock(&self.inner.lanes);
        let mut placement = lock(&self.inner.placement);
        let stalled: Vec<bool> = lanes
            .iter()
            .enumerate()
            .map(|(lane, worker)| lane == from || worker.health.busy_for() >= STALL_LIMIT)
            .collect();
        let to = if stalled.iter().any(|s| !s) {
            least_loaded(&placement, lanes.len(), |lane| !stalled[lane])
        } else if lanes.len() < self.inner.max_lanes {
            lanes.push(self.spawn("isolate"));
            lanes.len() - 1
        } else {
            return;
        };
        placement.insert(pid, to);
        let (reply, _) = oneshot::channel();
        lanes[from].try_send(Command::Detach { pid, reply });
    }
}

/// The lane with the fewest pids among those `eligible`.
fn least_loaded(
    placement: &HashMap<i64, usize>,
    lanes: usize,
    eligible: impl Fn(usize) -> bool,
) -> usize {
    let mut load = vec![0usize; lanes];
    for lane in placement.values() {
        load[*lane] += 1;
    }
    (0..lanes)
        .filter(|lane| eligible(*lane))
        .min_by_key(|lane| load[*lane])
        .unwrap_or(0)
}

/// Waits for `worker`'s answer to a command. If `may_move`, withdraws the command (before it
/// starts) when the thread has been busy in one poll longer than [`STALL_LIMIT`]; any
/// command is withdrawn from a retiring thread.
async fn wait<T>(
    worker: &Worker,
    claim: &Claim,
    mut answer: oneshot::Receiver<Answer<T>>,
    may_move: bool,
) -> Waited<T> {
    loop {
        tokio::select! {
            biased;
            reply = &mut answer => return match reply {
                Ok(Answer::Done(value)) => Waited::Done(value),
                Ok(Answer::Elsewhere(why)) => Waited::Elsewhere(why),
                Err(_) => Waited::Gone,
            },
            _ = tokio::time::sleep(STALL_CHECK) => {
                let stalled = may_move && worker.health.busy_for() >= STALL_LIMIT;
                if stalled && claim.withdraw() {
                    return Waited::Stalled;
                }
                if worker.health.is_retiring() && claim.withdraw() {
                    return Waited::Elsewhere("the worker thread retired".into());
                }
            }
        }
    }
}

/// Waits for an answer that needs no claim, giving up while the thread is stalled.
async fn wait_unless_stalled<T>(worker: &Worker, mut answer: oneshot::Receiver<T>) -> Option<T> {
    loop {
        tokio::select! {
            biased;
            reply = &mut answer => return reply.ok(),
            _ = tokio::time::sleep(STALL_CHECK) => {
                if worker.health.busy_for() >= STALL_LIMIT {
                    return None;
                }
            }
        }
    }
}
