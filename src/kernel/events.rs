//! Events and sleeps: a waiting process holds no thread, only a watch subscription.

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

/// Most undelivered events one process's queue holds. A post beyond it fails with
/// `LimitExceeded { limit: "events" }`; nothing queued is ever dropped.
pub(crate) const MAX_QUEUED_EVENTS: usize = 1024;

impl Kernel {
    /// Queues an event for `target` (durably) and wakes its waiters.
    pub(crate) async fn enqueue_event(
        &self,
        target: Pid,
        name: &str,
        payload: Value,
        source: &str,
    ) -> SysResult<i64> {
        {
            let state = self.inner.state.lock();
            if state.process(target).is_none() {
                return Err(SyscallError::NotFound(format!("process {target}")));
            }
            let queued = state.events.get(&target).map_or(0, |q| q.len());
            if queued >= MAX_QUEUED_EVENTS {
                return Err(SyscallError::limit(
                    "events",
                    format!(
                        "process {target} has {queued} undelivered events; it must take some \
                         (event.wait) before more are posted"
                    ),
                ));
            }
        }
        let id = self.new_event_id().await?;
        let now = self.now();
        let mut batch = WriteBatch::default();
        persist::insert_event(&mut batch, id, target, name, &payload, source, now);
        self.inner
            .store
            .commit(batch)
            .await
            .map_err(|e| SyscallError::Internal(format!("store: {e}")))?;
        let mut state = self.inner.state.lock();
        state.events.entry(target).or_default().push_back(Event {
            id,
            name: name.to_string(),
            payload,
            source: source.to_string(),
        });
        state.bump(target);
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
                if target != pid {
                    let related = {
                        let state = self.inner.state.lock();
                        state.is_ancestor(pid, target) || state.is_ancestor(target, pid)
                    };
                    if !related {
                        self.authorize_one(
                            pid,
                            format!("process:{target}"),
                            Right::Signal,
                            call,
                            scope,
                        )
                        .await?;
                    }
                }
                let id = self
                    .enqueue_event(target, name, payload.clone(), &format!("pid:{pid}"))
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
