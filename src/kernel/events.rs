//! Events and sleeps: a waiting process holds no thread, only a watch subscription.
//!
//! Events are bounded: a payload of at most [`EVENT_PAYLOAD_MAX`] bytes (as JSON), a name of
//! at most [`EVENT_NAME_MAX`], at most [`EVENT_QUEUE_MAX`] queued per process (a post to a
//! full queue fails with `LimitExceeded { limit: "events" }`). A process may post to its own
//! queue and to its descendants' (as it may signal them) with no capability; any other
//! target needs `process:<target>=signal`. A process that ends loses its queue, and a
//! consumed event is deleted.

use std::time::Duration;

use serde_json::{json, Value};

use super::capability::{Pid, Right};
use super::error::{SysResult, SyscallError};
use super::persist;
use super::process::Status;
use super::scope::{Done, Scope};
use super::state::Event;
use super::syscall::{ClockCall, EventCall};
use super::Kernel;
use crate::store::WriteBatch;

/// The largest event payload, as JSON.
pub(crate) const EVENT_PAYLOAD_MAX: usize = 64 << 10;
/// The longest event name.
pub(crate) const EVENT_NAME_MAX: usize = 128;
/// The most undelivered events one process's queue holds. A process's post beyond it fails
/// with `LimitExceeded { limit: "events" }`; nothing queued is ever dropped.
pub(crate) const EVENT_QUEUE_MAX: usize = 1024;

/// Who posts an event: a process (bounded by the target's queue) or the kernel itself
/// (`child.exit`, the operator), which a full queue does not stop.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Poster {
    Process,
    Kernel,
}

impl Kernel {
    /// Queues an event for `target` (durably) and wakes its waiters.
    pub(crate) async fn enqueue_event(
        &self,
        target: Pid,
        name: &str,
        payload: Value,
        source: &str,
        poster: Poster,
    ) -> SysResult<i64> {
        if name.is_empty() || name.len() > EVENT_NAME_MAX {
            return Err(SyscallError::invalid(format!(
                "an event name must be 1-{EVENT_NAME_MAX} bytes"
            )));
        }
        let bytes = payload.to_string().len();
        if bytes > EVENT_PAYLOAD_MAX {
            return Err(SyscallError::limit(
                "event_bytes",
                format!("an event payload may take {EVENT_PAYLOAD_MAX} bytes as JSON; this one takes {bytes}"),
            ));
        }
        {
            // Take a place in the queue now, so concurrent posts cannot overfill it.
            let mut state = self.inner.state.lock();
            let Some(p) = state.process(target) else {
                return Err(SyscallError::NotFound(format!("process {target}")));
            };
            if p.status.is_terminal() {
                return Err(SyscallError::IllegalState(format!(
                    "process {target} is {}: it takes no events",
                    p.status
                )));
            }
            let queued = state.events.get(&target).map_or(0, |q| q.len())
                + state.event_slots.get(&target).copied().unwrap_or(0);
            if poster == Poster::Process && queued >= EVENT_QUEUE_MAX {
                return Err(SyscallError::limit(
                    "events",
                    format!(
                        "process {target} has {queued} undelivered events, the most it may \
                         hold ({EVENT_QUEUE_MAX}); it must take some (event.wait) before more \
                         are posted"
                    ),
                ));
            }
            *state.event_slots.entry(target).or_default() += 1;
        }
        let committed = self.commit_event(target, name, &payload, source).await;
        let mut state = self.inner.state.lock();
        if let Some(slots) = state.event_slots.get_mut(&target) {
            *slots = slots.saturating_sub(1);
        }
        let id = committed?;
        // A target that ended meanwhile has dropped its queue: the event goes with it.
        if state
            .process(target)
            .is_some_and(|p| !p.status.is_terminal())
        {
            state.events.entry(target).or_default().push_back(Event {
                id,
                name: name.to_string(),
                payload,
                source: source.to_string(),
            });
            state.bump(target);
        }
        Ok(id)
    }

    async fn commit_event(
        &self,
        target: Pid,
        name: &str,
        payload: &Value,
        source: &str,
    ) -> SysResult<i64> {
        let id = self.new_event_id().await?;
        let mut batch = WriteBatch::default();
        persist::insert_event(&mut batch, id, target, name, payload, source, self.now());
        self.inner
            .store
            .commit(batch)
            .await
            .map_err(|e| SyscallError::Internal(format!("store: {e}")))?;
        Ok(id)
    }

    /// Takes the first queued event named `name` for `pid`, if any.
    fn take_event(&self, pid: Pid, name: &str) -> Option<Event> {
        let mut state = self.inner.state.lock();
        let queue = state.events.get_mut(&pid)?;
        let pos = queue.iter().position(|e| e.name == name)?;
        queue.remove(pos)
    }

    /// `event.wait` and `event.post`.
    pub(crate) async fn event_call(
        &self,
        pid: Pid,
        call: &EventCall,
        scope: &mut Scope,
    ) -> SysResult<Done> {
        match call {
            EventCall::Post {
                name,
                payload,
                target,
            } => {
                let target = target.unwrap_or(pid);
                // Its own queue and its descendants' are the poster's to fill (within the
                // bounds); anything else is signalling another process.
                let own = target == pid || self.inner.state.lock().is_ancestor(pid, target);
                if !own {
                    self.authorize_one(
                        pid,
                        format!("process:{target}"),
                        Right::Signal,
                        call,
                        scope,
                    )
                    .await?;
                }
                let id = self
                    .enqueue_event(
                        target,
                        name,
                        payload.clone(),
                        &format!("pid:{pid}"),
                        Poster::Process,
                    )
                    .await?;
                Ok(Done::new(json!({"id": id}), format!("process:{target}")))
            }
            EventCall::Wait { name, timeout_ms } => {
                let event = self.wait_event(pid, name, *timeout_ms).await?;
                let mut batch = WriteBatch::default();
                persist::consume_event(&mut batch, event.id);
                Ok(Done::new(
                    json!({"id": event.id, "name": event.name, "payload": event.payload, "source": event.source}),
                    format!("event:{name}"),
                )
                .batch(batch))
            }
        }
    }

    /// Waits (WAITING_EVENT) for an event named `name`.
    async fn wait_event(&self, pid: Pid, name: &str, timeout_ms: Option<u64>) -> SysResult<Event> {
        if let Some(event) = self.take_event(pid, name) {
            return Ok(event);
        }
        let prev = self.enter_wait(pid, Status::WaitingEvent).await?;
        let result = self.wait_event_parked(pid, name, timeout_ms).await;
        self.leave_wait(pid, prev).await;
        result
    }

    async fn wait_event_parked(
        &self,
        pid: Pid,
        name: &str,
        timeout_ms: Option<u64>,
    ) -> SysResult<Event> {
        let deadline = timeout_ms.map(|ms| tokio::time::Instant::now() + Duration::from_millis(ms));
        loop {
            let mut rx = self.inner.state.lock().changes_of(pid).subscribe();
            if let Some(event) = self.take_event(pid, name) {
                return Ok(event);
            }
            if self
                .process(pid)
                .is_none_or(|p| p.status.is_terminal() || p.cancel_requested)
            {
                return Err(SyscallError::Cancelled(format!(
                    "process {pid} ended while waiting"
                )));
            }
            let changed = rx.changed();
            match deadline {
                Some(at) => {
                    if tokio::time::timeout_at(at, changed).await.is_err() {
                        return Err(SyscallError::Timeout(format!(
                            "no event '{name}' within {} ms",
                            timeout_ms.unwrap_or(0)
                        )));
                    }
                }
                None => {
                    let _ = changed.await;
                }
            }
        }
    }

    /// Waits until `child` ends; returns its status and exit payload.
    pub(crate) async fn wait_child(
        &self,
        pid: Pid,
        child: Pid,
        timeout_ms: Option<u64>,
    ) -> SysResult<Value> {
        let deadline = timeout_ms.map(|ms| tokio::time::Instant::now() + Duration::from_millis(ms));
        let mut prev = None;
        let result = loop {
            let mut rx = self.inner.state.lock().changes_of(child).subscribe();
            let Some(c) = self.process(child) else {
                break Err(SyscallError::NotFound(format!("process {child}")));
            };
            if c.status.is_terminal() {
                break Ok(json!({"pid": child, "status": c.status, "exit": c.exit_payload}));
            }
            if prev.is_none() {
                prev = Some(self.enter_wait(pid, Status::WaitingEvent).await?);
            }
            match deadline {
                Some(at) => {
                    if tokio::time::timeout_at(at, rx.changed()).await.is_err() {
                        break Err(SyscallError::Timeout(format!(
                            "process {child} still {} after {} ms",
                            c.status,
                            timeout_ms.unwrap_or(0)
                        )));
                    }
                }
                None => {
                    let _ = rx.changed().await;
                }
            }
        };
        if let Some(prev) = prev {
            self.leave_wait(pid, prev).await;
        }
        result
    }

    /// `clock.now` and `clock.sleep`.
    pub(crate) async fn clock_call(&self, pid: Pid, call: &ClockCall) -> SysResult<Done> {
        match call {
            ClockCall::Now => Ok(Done::new(json!(self.now()), "clock")),
            ClockCall::Sleep { ms } => self.sleep(pid, *ms).await,
        }
    }

    /// `clock.sleep`: a timer wait; the process holds no thread. Capped by the wall-time
    /// budget left.
    async fn sleep(&self, pid: Pid, ms: u64) -> SysResult<Done> {
        let left = {
            let state = self.inner.state.lock();
            let p = state
                .process(pid)
                .ok_or_else(|| SyscallError::NotFound(format!("process {pid}")))?;
            p.budget
                .wall_time_ms
                .saturating_sub(self.now().saturating_sub(p.started_at) as u64)
        };
        if ms > left {
            return Err(SyscallError::limit(
                "wall_time",
                format!("sleeping {ms} ms would pass the {left} ms left of the process's wall-time budget"),
            ));
        }
        self.inner.providers.clock.sleep(ms).await;
        Ok(Done::new(json!({"slept_ms": ms}), "clock"))
    }
}
