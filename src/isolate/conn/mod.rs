//! The kernel's side of one isolate worker process: its socket, the table of calls running
//! on it, and the serving of its syscalls.
//!
//! **Attribution:** the table maps each kernel-assigned call id to the call's own port and
//! [`CallContext`](super::CallContext) (held by the caller's future). A syscall or console
//! line from the worker names a call id; it is served with that record, and refused
//! (denied, traced) when the id is not a call running on this worker. What the worker says
//! about pids or invocations is never read. A compromised worker can therefore act only
//! with the authority of the calls it is running now.
//!
//! Robustness: a frame that cannot be read (malformed, oversized) or the worker's death
//! ends the connection: the worker is killed and every call and attach pending on it fails
//! with a clear error; nothing else is affected.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use futures::stream::FuturesUnordered;
use futures::StreamExt;
use serde_json::value::RawValue;
use serde_json::{json, Value};
use tokio::sync::{mpsc, oneshot};

use super::wire::{FromWorker, ToWorker, WorkerSizes, WorkerUsage, MAX_FROM_WORKER, WORKER_MODE};
use super::{CallError, CallRequest, IsolateError};
use crate::providers::frame_writer::FrameWriter;
use crate::providers::worker_process::{self, Reader};
use crate::util::frame;

/// How long past its wall-clock limit a call may go unanswered before the kernel kills its
/// worker. The worker's own watchdog answers a stopped call within a few seconds even when
/// the engine cannot interrupt it; past this, the worker itself is stuck.
pub(crate) const HANG_GRACE: std::time::Duration = std::time::Duration::from_secs(5);

/// How stale a reading of a worker's resident memory may be (see [`Conn::rss_bytes`]).
const RSS_EVERY: std::time::Duration = std::time::Duration::from_millis(25);

/// Bytes that may wait for a worker to read them (a syscall's answer can be as large as the
/// operator's fs and fetch limits); past this the worker is not reading and is killed.
const MAX_WAITING_TO_WORKER: usize = 1 << 30;

/// How long the kernel waits for a worker to bind an isolate to a process (creating a
/// runtime takes milliseconds) before it kills the worker and tries another.
pub(crate) const ATTACH_DEADLINE: std::time::Duration = std::time::Duration::from_secs(30);

/// Call ids, unique in the kernel process.
static NEXT_CALL: AtomicU64 = AtomicU64::new(1);

/// Which isolate a call runs in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Mode {
    /// The process's own (created if it has none).
    Process,
    /// A new one for the process, which it keeps.
    Fresh,
    /// A throwaway one (declared tests).
    Ephemeral,
}

/// What the reader hands to a waiting call.
enum CallEvent {
    Syscall {
        seq: u64,
        request: Box<RawValue>,
    },
    Console {
        level: String,
        text: String,
    },
    Done(Result<Value, CallError>),
    /// The call's process was cancelled or killed: the call ends now, whatever the worker
    /// does.
    Interrupted,
    /// The worker is gone.
    Lost(String),
    /// The worker reports the call stopped but still running in the engine; it is killed.
    Stuck,
}

struct Running {
    events: mpsc::UnboundedSender<CallEvent>,
    pid: i64,
}

#[derive(Default)]
struct Table {
    /// Why the connection ended, once it has.
    ended: Option<String>,
    calls: HashMap<u64, Running>,
    attaches: HashMap<u64, oneshot::Sender<Result<(), IsolateError>>>,
    /// Module hashes sent to the worker.
    modules: HashSet<String>,
    /// Shutdown was sent: the worker takes no more work.
    closing: bool,
    /// Processes interrupted (cancelled or killed): their calls are refused here.
    interrupted: HashSet<i64>,
}

/// One worker process (or, in tests, whatever is at the other end of a socket).
pub(crate) struct Conn {
    /// The kernel's number for this worker.
    pub(crate) number: u64,
    /// The worker's OS pid, if it is a child process.
    pub(crate) os_pid: Option<u32>,
    out: Arc<FrameWriter>,
    table: Mutex<Table>,
    created: AtomicU64,
    threads_retired: AtomicU64,
    /// No new work is placed here; it shuts down once its calls are done.
    draining: AtomicBool,
    child: Mutex<Option<tokio::process::Child>>,
    /// The last reading of its resident memory: when, at which runtime count, the bytes.
    rss: Mutex<Option<(std::time::Instant, u64, u64)>>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

impl Conn {
    /// Starts the worker process `binary` in its hidden mode. Call on the host's own
    /// runtime thread: that thread is the worker's parent-death lifeline. The socket is
    /// served on `io` (the kernel's runtime: a frame from the worker wakes the call it is
    /// for on the thread that read it, with no hop through the host's thread).
    pub(crate) fn spawn(
        binary: &Path,
        number: u64,
        sizes: WorkerSizes,
        env: &[(String, String)],
        io: &tokio::runtime::Handle,
    ) -> std::io::Result<Arc<Conn>> {
        let args = [WORKER_MODE.to_string(), std::process::id().to_string()];
        let (mut child, ours) = worker_process::spawn(binary, &args, env)?;
        worker_process::relay_stderr(&mut child, number);
        let os_pid = child.id();
        let conn = {
            let _io = io.enter();
            Conn::over(ours, number, os_pid, Some(child))?
        };
        conn.send(&ToWorker::Start { sizes });
        Ok(conn)
    }

    /// A connection over `socket`; starts its reader and writer on the current runtime.
    pub(crate) fn over(
        socket: std::os::unix::net::UnixStream,
        number: u64,
        os_pid: Option<u32>,
        child: Option<tokio::process::Child>,
    ) -> std::io::Result<Arc<Conn>> {
        Conn::over_bounded(socket, number, os_pid, child, MAX_WAITING_TO_WORKER)
    }

    /// [`Conn::over`], with at most `max_waiting` bytes waiting for the worker to read.
    fn over_bounded(
        socket: std::os::unix::net::UnixStream,
        number: u64,
        os_pid: Option<u32>,
        child: Option<tokio::process::Child>,
        max_waiting: usize,
    ) -> std::io::Result<Arc<Conn>> {
        let (reader, writer) = worker_process::split(socket)?;
        let out = FrameWriter::start(writer, max_waiting);
        let conn = Arc::new(Conn {
            number,
            os_pid,
            out,
            table: Mutex::default(),
            created: AtomicU64::new(0),
            threads_retired: AtomicU64::new(0),
            draining: AtomicBool::new(false),
            child: Mutex::new(child),
            rss: Mutex::new(None),
        });
        tokio::spawn(read_loop(conn.clone(), reader));
        Ok(conn)
    }

    /// Sends `message`. A worker that does not take its frames (its socket failed, or
    /// [`MAX_WAITING_TO_WORKER`] bytes wait for it) loses its socket: the reader then ends
    /// the connection and kills it. Safe under the table's lock.
    fn send(&self, message: &ToWorker) {
        send_to(&self.out, self.number, message);
    }

    /// Why the connection ended, if it has.
    pub(crate) fn ended(&self) -> Option<String> {
        lock(&self.table).ended.clone()
    }

    pub(crate) fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Acquire)
    }

    /// Stops placing work here; true the first time.
    pub(crate) fn drain(&self) -> bool {
        !self.draining.swap(true, Ordering::AcqRel)
    }

    /// Calls and attaches in flight.
    pub(crate) fn busy(&self) -> usize {
        let table = lock(&self.table);
        table.calls.len() + table.attaches.len()
    }

    /// Calls of `pid` in flight.
    pub(crate) fn calls_of(&self, pid: i64) -> usize {
        lock(&self.table)
            .calls
            .values()
            .filter(|r| r.pid == pid)
            .count()
    }

    /// Runtimes the worker reported creating, and its retired threads.
    pub(crate) fn usage(&self) -> WorkerUsage {
        WorkerUsage {
            created: self.created.load(Ordering::Relaxed),
            threads_retired: self.threads_retired.load(Ordering::Relaxed),
        }
    }

    fn note_usage(&self, usage: WorkerUsage) {
        self.created.fetch_max(usage.created, Ordering::Relaxed);
        self.threads_retired
            .fetch_max(usage.threads_retired, Ordering::Relaxed);
    }

    /// The worker's resident memory, read by the kernel from `/proc/<pid>/statm` — again
    /// only when the worker created a runtime since the last reading or [`RSS_EVERY`] has
    /// passed (a call in a warm isolate grows it by at most its heap limit).
    pub(crate) fn rss_bytes(&self) -> Option<u64> {
        let os_pid = self.os_pid?;
        let created = self.created.load(Ordering::Relaxed);
        let mut last = lock(&self.rss);
        if let Some((at, of_created, bytes)) = *last {
            if of_created == created && at.elapsed() < RSS_EVERY {
                return Some(bytes);
            }
        }
        let bytes = worker_process::rss_bytes(os_pid)?;
        *last = Some((std::time::Instant::now(), created, bytes));
        Some(bytes)
    }

    /// Tells the worker to stop `pid`'s calls, and ends them on the kernel's side at once:
    /// a worker that ignores the interrupt keeps no call of a cancelled or killed process.
    pub(crate) fn interrupt(&self, pid: i64) {
        self.send(&ToWorker::Interrupt { pid });
        let mut table = lock(&self.table);
        table.interrupted.insert(pid);
        for running in table.calls.values().filter(|r| r.pid == pid) {
            let _ = running.events.send(CallEvent::Interrupted);
        }
    }

    pub(crate) fn detach(&self, pid: i64) {
        self.send(&ToWorker::Detach { pid });
    }

    /// Kills the worker process (if any) and fails what is pending on it.
    pub(crate) fn kill(&self, why: &str) {
        if let Some(child) = lock(&self.child).as_mut() {
            let _ = child.start_kill();
        }
        self.end(why.to_string());
    }

    /// Binds an isolate to `pid` in the worker; `None` if the worker takes no more work.
    pub(crate) async fn attach(&self, pid: i64) -> Option<Result<(), IsolateError>> {
        let id = NEXT_CALL.fetch_add(1, Ordering::Relaxed);
        let (reply, answer) = oneshot::channel();
        {
            let mut table = lock(&self.table);
            if table.closing || table.ended.is_some() {
                return None;
            }
            table.attaches.insert(id, reply);
            self.send(&ToWorker::Attach { id, pid });
        }
        let answer = match tokio::time::timeout(ATTACH_DEADLINE, answer).await {
            Ok(answer) => answer,
            Err(_) => {
                lock(&self.table).attaches.remove(&id);
                let why = format!(
                    "it did not bind an isolate within {} s",
                    ATTACH_DEADLINE.as_secs()
                );
                self.kill(&why);
                return Some(Err(IsolateError::Create(format!(
                    "isolate worker {}: {why}; it was killed",
                    self.number
                ))));
            }
        };
        Some(
            answer
                .unwrap_or_else(|_| Err(IsolateError::Create("the isolate worker stopped".into()))),
        )
    }

    /// Sends `shutdown` if nothing is in flight; true if it did (or the worker is gone).
    pub(crate) fn close_if_idle(&self) -> bool {
        let mut table = lock(&self.table);
        if table.ended.is_some() || table.closing {
            return true;
        }
        if !table.calls.is_empty() || !table.attaches.is_empty() {
            return false;
        }
        table.closing = true;
        self.send(&ToWorker::Shutdown);
        true
    }

    /// Waits up to `grace` for the worker process to exit after `shutdown`, then kills it.
    pub(crate) async fn reap(&self, grace: std::time::Duration) {
        let child = lock(&self.child).take();
        if let Some(mut child) = child {
            if tokio::time::timeout(grace, child.wait()).await.is_err() {
                let _ = child.start_kill();
                let _ = child.wait().await;
            }
        }
        self.end("it was shut down".into());
    }

    /// Runs `req` on the worker (in `pid`'s isolate — a new one if `mode` says so — or in a
    /// throwaway one for [`Mode::Ephemeral`]), serving
    /// its syscalls with `req.port` and `req.ctx` until it ends; a syscall in flight when
    /// the worker answers or dies is finished before this returns. `None` if the worker
    /// takes no more work (the call was not sent).
    pub(crate) async fn call(
        &self,
        pid: i64,
        req: &CallRequest,
        mode: Mode,
    ) -> Option<Result<Value, CallError>> {
        let call = NEXT_CALL.fetch_add(1, Ordering::Relaxed);
        let (events, mut rx) = mpsc::unbounded_channel();
        {
            let mut table = lock(&self.table);
            if table.closing || table.ended.is_some() {
                return None;
            }
            // Checked under the lock `interrupt` takes: a call sent while its process is
            // being stopped is either refused here or reached by the interrupt.
            if table.interrupted.contains(&pid) {
                return Some(Err(cancelled()));
            }
            table.calls.insert(call, Running { events, pid });
            let module = &req.module;
            if table.modules.insert(module.hash.clone()) {
                self.send(&ToWorker::Module {
                    hash: module.hash.clone(),
                    specifier: module.specifier.clone(),
                    code: module.code.clone(),
                    source_map: module.source_map.clone(),
                });
            }
            self.send(&ToWorker::Call {
                call,
                pid,
                hash: module.hash.clone(),
                args: req.args.clone(),
                limits: req.limits,
                start_time_ms: req.start_time_ms,
                random_seed: req.random_seed,
                ephemeral: mode == Mode::Ephemeral,
                fresh: mode == Mode::Fresh,
            });
        }
        // Removes the record however this future ends (the caller may drop it).
        let running = Unlist { conn: self, call };
        // If the caller drops this future, the call's syscalls still in flight are stopped
        // and answered as cancelled, so the worker's call ends instead of waiting forever
        // (holding its process's isolate) for answers that will never come.
        let mut abandon = Abandon {
            out: self.out.clone(),
            number: self.number,
            call,
            in_flight: Vec::new(),
            settled: false,
        };
        let mut syscalls = FuturesUnordered::new();
        let (mut served, mut console_bytes) = (0u64, 0usize);
        // The errors the kernel returned to this call's syscalls: the only ones its
        // outcome may carry as a kernel outcome (a denial, a limit, a request for a human).
        let mut returned = Vec::new();
        let deadline = tokio::time::Instant::now()
            + std::time::Duration::from_millis(req.limits.wall_ms)
            + HANG_GRACE;
        let outcome = loop {
            tokio::select! {
                _ = tokio::time::sleep_until(deadline) => {
                    self.kill(&format!("call {call} did not end within its wall-clock limit"));
                    break Err(CallError::Limit {
                        limit: "cpu_time".into(),
                        detail: format!(
                            "the call did not stop within its wall-clock limit of {} ms and {} s more; the isolate worker running it was killed",
                            req.limits.wall_ms,
                            HANG_GRACE.as_secs()
                        ),
                    });
                }
                event = rx.recv() => match event {
                    Some(CallEvent::Syscall { seq, request }) => {
                        // The worker counts too; this count holds against a worker that
                        // does not.
                        if served >= req.limits.max_syscalls {
                            tracing::warn!(worker = self.number, call, "refused a syscall past the call's limit");
                            let refusal = too_many_syscalls(req.limits.max_syscalls);
                            if !returned.contains(&refusal) {
                                returned.push(refusal.clone());
                            }
                            self.send(&ToWorker::SyscallReply {
                                call,
                                seq,
                                outcome: Err(refusal),
                            });
                            continue;
                        }
                        served += 1;
                        let answer = req.port.syscall(&req.ctx, request);
                        let (out, number) = (self.out.clone(), self.number);
                        // A task of its own: the kernel's syscall futures are deep (a tool
                        // call's syscall may be another tool call), and this one is polled at
                        // the top of the caller's runtime, not under the caller's stack.
                        let task = tokio::spawn(async move {
                            let outcome = answer.await;
                            let error = outcome.as_ref().err().cloned();
                            send_to(&out, number, &ToWorker::SyscallReply { call, seq, outcome });
                            error
                        });
                        abandon.in_flight.retain(|(_, task)| !task.is_finished());
                        abandon.in_flight.push((seq, task.abort_handle()));
                        syscalls.push(task);
                    }
                    Some(CallEvent::Console { level, text }) => {
                        // Only the engine's levels, and no empty line: every line the
                        // kernel keeps is charged to the call's console bytes.
                        let Some(level) = console_level(&level) else {
                            tracing::warn!(worker = self.number, call, "dropped console output with an unknown level");
                            continue;
                        };
                        if text.is_empty() {
                            continue;
                        }
                        console_bytes = console_bytes.saturating_add(text.len());
                        if console_bytes <= req.limits.max_console_bytes {
                            req.port.console(&req.ctx, level, &text);
                        }
                    }
                    Some(CallEvent::Done(outcome)) => break outcome,
                    Some(CallEvent::Interrupted) => {
                        break Err(cancelled())
                    }
                    Some(CallEvent::Lost(why)) => break Err(lost(self.number, &why)),
                    Some(CallEvent::Stuck) => break Err(CallError::Limit {
                        limit: "cpu_time".into(),
                        detail: "the call was stopped at its limit but kept running in native code; the isolate worker running it was killed".into(),
                    }),
                    None => break Err(lost(self.number, "the connection ended")),
                },
                Some(served) = syscalls.next(), if !syscalls.is_empty() => {
                    returned.extend(served.ok().flatten());
                }
            }
        };
        // The call has its outcome: from now on its id grants nothing (a late frame is
        // refused, never queued). The syscalls already being served finish first.
        drop(running);
        while let Some(served) = syscalls.next().await {
            returned.extend(served.ok().flatten());
        }
        abandon.settled = true;
        Some(match outcome {
            Err(CallError::Syscall { error })
                if !returned.contains(&error) && !is_argument_error(&error) =>
            {
                tracing::warn!(
                    worker = self.number,
                    call,
                    "the worker reported a syscall error the kernel never returned to the call"
                );
                Err(CallError::Internal(format!(
                    "isolate worker {}: the call ended with a syscall error the kernel never returned to it",
                    self.number
                )))
            }
            outcome => outcome,
        })
    }

    fn dispatch(&self, message: FromWorker) {
        match message {
            FromWorker::Syscall { call, seq, request } => {
                let table = lock(&self.table);
                match table.calls.get(&call) {
                    Some(running) => {
                        let _ = running.events.send(CallEvent::Syscall { seq, request });
                    }
                    None => {
                        drop(table);
                        let primitive = primitive_of(&request);
                        let primitive = primitive.as_deref().unwrap_or("?");
                        tracing::warn!(
                            worker = self.number,
                            call,
                            primitive,
                            "refused a syscall for a call that is not running on this worker"
                        );
                        self.send(&ToWorker::SyscallReply {
                            call,
                            seq,
                            outcome: Err(not_running(call)),
                        });
                    }
                }
            }
            FromWorker::Console { call, level, text } => {
                let table = lock(&self.table);
                match table.calls.get(&call) {
                    Some(running) => {
                        let _ = running.events.send(CallEvent::Console { level, text });
                    }
                    None => tracing::warn!(
                        worker = self.number,
                        call,
                        "dropped console output for a call that is not running on this worker"
                    ),
                }
            }
            FromWorker::Done {
                call,
                outcome,
                usage,
            } => {
                self.note_usage(usage);
                let table = lock(&self.table);
                match table.calls.get(&call) {
                    Some(running) => {
                        let _ = running.events.send(CallEvent::Done(outcome));
                    }
                    None => tracing::warn!(
                        worker = self.number,
                        call,
                        "an answer for a call that is not running on this worker"
                    ),
                }
            }
            FromWorker::Stuck { call } => {
                // Believed whatever the call: a worker can end itself anyway. The call's
                // own answer comes first, then every other call here fails retryably.
                if let Some(running) = lock(&self.table).calls.get(&call) {
                    let _ = running.events.send(CallEvent::Stuck);
                }
                self.kill(&format!(
                    "call {call} was stopped but kept running in the engine"
                ));
            }
            FromWorker::Attached { id, outcome, usage } => {
                self.note_usage(usage);
                if let Some(reply) = lock(&self.table).attaches.remove(&id) {
                    let _ = reply.send(outcome);
                }
            }
        }
    }

    /// Ends the connection: every pending call and attach fails with `why`.
    fn end(&self, why: String) {
        let mut table = lock(&self.table);
        if table.ended.is_some() {
            return;
        }
        tracing::info!(worker = self.number, "isolate worker ended: {why}");
        for running in table.calls.values() {
            let _ = running.events.send(CallEvent::Lost(why.clone()));
        }
        for (_, reply) in table.attaches.drain() {
            let _ = reply.send(Err(IsolateError::Create(format!(
                "the isolate worker stopped: {why}"
            ))));
        }
        table.ended = Some(why);
    }
}

/// Takes a call out of the table when its future ends.
struct Unlist<'a> {
    conn: &'a Conn,
    call: u64,
}

impl Drop for Unlist<'_> {
    fn drop(&mut self) {
        lock(&self.conn.table).calls.remove(&self.call);
    }
}

/// The syscalls in flight of a call whose caller went away.
struct Abandon {
    out: Arc<FrameWriter>,
    number: u64,
    call: u64,
    in_flight: Vec<(u64, tokio::task::AbortHandle)>,
    /// The call ended and every syscall it made was answered.
    settled: bool,
}

impl Drop for Abandon {
    fn drop(&mut self) {
        if self.settled {
            return;
        }
        for (seq, task) in &self.in_flight {
            if task.is_finished() {
                continue;
            }
            task.abort();
            let outcome = Err(json!({
                "kind": "Cancelled",
                "message": "cancelled: the caller of this tool call went away",
            }));
            let reply = ToWorker::SyscallReply {
                call: self.call,
                seq: *seq,
                outcome,
            };
            send_to(&self.out, self.number, &reply);
        }
    }
}

/// Sends `message` to worker `number` through `out`. When the worker does not take its
/// frames the writer shuts the socket down: the reader then ends the connection and kills
/// the worker (no lock is taken here).
fn send_to(out: &FrameWriter, number: u64, message: &ToWorker) {
    let sent = frame::encode(message)
        .map_err(|e| e.to_string())
        .and_then(|bytes| out.send(bytes).map_err(|e| e.to_string()));
    if let Err(why) = sent {
        tracing::error!(worker = number, %why, "cannot send to the isolate worker");
        out.close(&why);
    }
}

/// The primitive a syscall request names, for the trace of a refusal.
fn primitive_of(request: &RawValue) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Named {
        primitive: String,
    }
    serde_json::from_str::<Named>(request.get())
        .ok()
        .map(|named| named.primitive)
}

fn lost(worker: u64, why: &str) -> CallError {
    CallError::Retry(format!(
        "isolate worker {worker} stopped while the call ran ({why}); the process's next call gets a fresh isolate"
    ))
}

/// An error the engine's ops make themselves when a tool's arguments do not fit a
/// primitive: it grants, approves and limits nothing, so a call may end with it unseen by
/// the kernel.
fn is_argument_error(error: &Value) -> bool {
    error["kind"] == "InvalidArgument"
}

fn cancelled() -> CallError {
    CallError::Cancelled("the process was cancelled or killed".into())
}

/// The console levels the engine writes (`ts/libos.ts`), as the kernel spells them.
fn console_level(level: &str) -> Option<&'static str> {
    ["log", "info", "warn", "error", "debug"]
        .into_iter()
        .find(|known| *known == level)
}

/// The refusal of a syscall past the call's `max_syscalls` (the ops' own wording).
fn too_many_syscalls(max: u64) -> Value {
    json!({
        "kind": "LimitExceeded",
        "message": format!("limit exceeded: syscalls: a tool call may make at most {max} syscalls"),
        "limit": "syscalls",
    })
}

/// The denial of a syscall attributed to a call that is not running on the worker.
fn not_running(call: u64) -> Value {
    let detail = format!("call {call} is not running on this isolate worker");
    json!({
        "kind": "PermissionDenied",
        "message": format!("permission denied: call:{call} syscall: {detail}"),
        "detail": detail,
        "resource": format!("call:{call}"),
        "right": "syscall",
    })
}

/// Frames larger than this are decoded off the host's thread, so one worker's large result
/// does not hold up the frames of the others.
const DECODE_INLINE: usize = 1 << 20;

async fn read_loop(conn: Arc<Conn>, mut reader: Reader) {
    let why = loop {
        let body = match frame::read_body(&mut reader, MAX_FROM_WORKER).await {
            Ok(Some(body)) => body,
            Ok(None) => break "the worker closed its socket".to_string(),
            Err(e) => break format!("the worker sent an unreadable frame: {e}"),
        };
        let message = if body.len() <= DECODE_INLINE {
            frame::decode::<FromWorker>(&body)
        } else {
            tokio::task::spawn_blocking(move || frame::decode::<FromWorker>(&body))
                .await
                .unwrap_or_else(|e| Err(std::io::Error::other(e.to_string())))
        };
        match message {
            Ok(message) => conn.dispatch(message),
            Err(e) => break format!("the worker sent an unreadable frame: {e}"),
        }
    };
    conn.kill(&why);
}

#[cfg(test)]
mod tests;
