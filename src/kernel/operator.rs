//! The operator (host) API: create root processes, run them, signal them, grant and revoke
//! capabilities, post events, register images. Also the lifecycle helpers the syscalls use.

use std::future::Future;
use std::pin::Pin;

use serde_json::{json, Value};

use super::capability::{validate_resource, Capability, CapabilitySpec, Pid};
use super::error::{SysResult, SyscallError};
use super::image::Image;
use super::persist;
use super::process::{own_namespace, Process, Status};
use super::syscall::{Budget, Signal, Syscall};
use super::Kernel;
use crate::audit::{AuditEntry, Decision};
use crate::store::WriteBatch;

/// How the operator creates a root process.
#[derive(Debug, Clone, Default)]
pub struct SpawnOptions {
    /// Image id (its highest registered version); `None` for the built-in `base` image.
    pub image: Option<String>,
    pub goal: String,
    /// Capabilities granted on top of the image's initial ones.
    pub grants: Vec<CapabilitySpec>,
    pub budget: Option<Budget>,
    /// Workspace-relative working directory (default `.`).
    pub cwd: Option<String>,
    /// What the process may ask a human for, on top of its image's `requestable`: the
    /// ceiling of `human.request_permission` (its children inherit it).
    pub requestable: Vec<CapabilitySpec>,
}

/// What a process body sees: its pid and the syscall door.
#[derive(Clone)]
pub struct ProcessCtx {
    pub kernel: Kernel,
    pub pid: Pid,
}

impl ProcessCtx {
    pub async fn syscall(&self, call: Syscall) -> SysResult<Value> {
        self.kernel.syscall(self.pid, call).await
    }
}

type Body = Pin<Box<dyn Future<Output = SysResult<Value>> + Send>>;

/// Parameters of a new process record.
pub(crate) struct NewProcess {
    pub parent: Option<Pid>,
    pub image: Image,
    pub goal: String,
    pub budget: Budget,
    pub cwd: String,
    pub grants: Vec<Capability>,
    /// Its ceiling for `human.request_permission`.
    pub requestable: Vec<CapabilitySpec>,
}

impl Kernel {
    /// Creates a root process from an image, granting the image's capabilities and
    /// `opts.grants` (operator-issued). The process is RUNNABLE.
    pub async fn spawn_root(&self, opts: SpawnOptions) -> SysResult<Pid> {
        let image = match &opts.image {
            Some(id) => self.image(id).await?,
            None => Image::base(),
        };
        let mut specs = image.capabilities.clone();
        specs.extend(opts.grants.iter().cloned());
        let mut grants = Vec::new();
        for spec in specs {
            validate_resource(&spec.resource).map_err(SyscallError::invalid)?;
            grants.push(Capability::from_operator(0, spec));
        }
        let cwd = match &opts.cwd {
            Some(c) => {
                super::paths::normalize(".", c).map_err(|e| SyscallError::invalid(e.to_string()))?
            }
            None => ".".into(),
        };
        let budget = opts.budget.or(image.budget).unwrap_or_default();
        let mut requestable = image.requestable.clone();
        for spec in opts.requestable {
            validate_resource(&spec.resource).map_err(SyscallError::invalid)?;
            requestable.push(spec);
        }
        self.create_process(
            NewProcess {
                parent: None,
                image,
                goal: opts.goal,
                budget,
                cwd,
                grants,
                requestable,
            },
            "operator",
        )
        .await
    }

    /// Writes a new process, its own namespace and its capabilities; returns its pid.
    pub(crate) async fn create_process(&self, new: NewProcess, actor: &str) -> SysResult<Pid> {
        let now = self.now();
        let mut batch = WriteBatch::default();
        let pid = self.new_pid().await?;
        let mut fresh_ids = Vec::with_capacity(new.grants.len() + 2);
        for _ in 0..new.grants.len() + 2 {
            fresh_ids.push(self.new_cap_id().await?);
        }
        let (process, caps) = {
            let process = Process {
                pid,
                parent: new.parent,
                image_id: new.image.id.clone(),
                image_version: new.image.version.clone(),
                goal: new.goal,
                status: Status::Runnable,
                resume_to: None,
                cwd: new.cwd,
                budget: new.budget,
                usage: Budget {
                    tool_calls: 0,
                    children: 0,
                    syscalls: 0,
                    wall_time_ms: 0,
                },
                exit_payload: None,
                started_at: now,
                cancel_requested: false,
                generation: 0,
            };
            persist::insert_process(&mut batch, &process, now);
            let ns = own_namespace(pid);
            persist::insert_namespace(&mut batch, &ns, Some(pid), now);
            let mut caps = vec![
                Capability::own_memory(pid, format!("namespace:{ns}")),
                Capability::own_memory(pid, format!("namespace:{ns}/**")),
            ];
            caps.extend(new.grants);
            let mut stored = Vec::with_capacity(caps.len());
            for (mut cap, id) in caps.into_iter().zip(fresh_ids) {
                cap.id = id;
                cap.subject = pid;
                persist::insert_cap(&mut batch, &cap, now, self.inner.store.sealer());
                stored.push(cap);
            }
            (process, stored)
        };
        let cap_ids: Vec<i64> = caps.iter().map(|c| c.id).collect();
        persist::insert_requestable(&mut batch, pid, &new.requestable, self.inner.store.sealer());
        let batch = batch.audit(AuditEntry {
            ts: now,
            actor: actor.to_string(),
            action: "proc.create".into(),
            target: format!("process:{pid}"),
            decision: Decision::Ok,
            capability_refs: cap_ids,
            correlation_id: None,
            parent_seq: None,
            detail: json!({"parent": new.parent, "image": new.image.id, "version": new.image.version}),
        });
        self.inner
            .store
            .commit(batch)
            .await
            .map_err(|e| SyscallError::Internal(format!("store: {e}")))?;
        // The process and its grants exist in memory only once they are durable.
        let mut state = self.inner.state.lock();
        state.caps.insert(pid, caps);
        // Most processes may request nothing: no entry (absent means none).
        if !new.requestable.is_empty() {
            state.requestable.insert(pid, new.requestable);
        }
        state.procs.insert(pid, process);
        Ok(pid)
    }

    /// Moves `pid` to `to` if the transition is legal; returns the previous status.
    pub(crate) async fn transition(&self, pid: Pid, to: Status) -> SysResult<Status> {
        let now = self.now();
        let mut batch = WriteBatch::default();
        let prev = {
            let mut state = self.inner.state.lock();
            let proc = state
                .procs
                .get_mut(&pid)
                .ok_or_else(|| SyscallError::NotFound(format!("process {pid}")))?;
            let prev = proc.status;
            if prev == to {
                return Ok(prev);
            }
            if !prev.can_become(to) {
                return Err(SyscallError::IllegalState(format!(
                    "process {pid} cannot go from {prev} to {to}"
                )));
            }
            proc.status = to;
            persist::update_process(&mut batch, proc, now);
            if to.is_terminal() {
                state.caps.remove(&pid);
                state.requestable.remove(&pid);
                // An ended process's events are dropped with it.
                state.events.remove(&pid);
                persist::drop_events(&mut batch, pid);
            }
            state.bump(pid);
            prev
        };
        self.inner
            .store
            .commit(batch)
            .await
            .map_err(|e| SyscallError::Internal(format!("store: {e}")))?;
        if to.is_terminal() {
            self.on_terminal(pid).await;
        }
        Ok(prev)
    }

    /// Enters a waiting status; returns the status to go back to.
    pub(crate) async fn enter_wait(&self, pid: Pid, waiting: Status) -> SysResult<Status> {
        self.transition(pid, waiting).await
    }

    /// Leaves a wait: back to `prev`, or (if paused meanwhile) resume to `prev` later.
    pub(crate) async fn leave_wait(&self, pid: Pid, prev: Status) {
        let current = self.process(pid).map(|p| p.status);
        match current {
            Some(Status::Paused | Status::Suspended) => {
                if let Some(p) = self.inner.state.lock().procs.get_mut(&pid) {
                    p.resume_to = Some(prev);
                }
            }
            Some(s) if s.is_waiting() => {
                if let Err(e) = self.transition(pid, prev).await {
                    tracing::warn!(pid, %e, "leaving a wait");
                }
            }
            _ => {}
        }
    }

    /// After a process ends: wake its waiters and tell its parent.
    async fn on_terminal(&self, pid: Pid) {
        let (parent, status, payload) = {
            let state = self.inner.state.lock();
            let Some(p) = state.process(pid) else { return };
            (p.parent, p.status, p.exit_payload.clone())
        };
        if let Some(parent) = parent {
            let payload = json!({"pid": pid, "status": status, "exit": payload});
            if let Err(e) = self
                .enqueue_event(
                    parent,
                    "child.exit",
                    payload,
                    &format!("pid:{pid}"),
                    super::events::Poster::Kernel,
                )
                .await
            {
                tracing::warn!(pid, %e, "notifying the parent");
            }
        }
        self.inner.tasks.lock().remove(&pid);
        self.release_tools(pid).await;
    }

    /// Ends `pid` as EXITED with `payload` (used by `proc.exit` and finished bodies).
    pub(crate) async fn exit_process(
        &self,
        pid: Pid,
        status: Status,
        payload: Value,
    ) -> SysResult<()> {
        if let Some(p) = self.inner.state.lock().procs.get_mut(&pid) {
            if p.status.is_terminal() {
                return Ok(());
            }
            p.exit_payload = Some(payload);
        }
        // Paused processes cannot exit directly: let them end as the status asks.
        let current = self.process(pid).map(|p| p.status);
        if status == Status::Exited && matches!(current, Some(Status::Paused | Status::Suspended)) {
            self.transition(pid, Status::Runnable).await?;
        }
        self.transition(pid, status).await.map(|_| ())
    }

    /// Runs `body` as process `pid` on the tokio runtime: RUNNING while it runs, then
    /// EXITED with its value (or FAILED with its error) unless it already ended.
    pub async fn run<F, Fut>(
        &self,
        pid: Pid,
        body: F,
    ) -> SysResult<tokio::task::JoinHandle<SysResult<Value>>>
    where
        F: FnOnce(ProcessCtx) -> Fut,
        Fut: Future<Output = SysResult<Value>> + Send + 'static,
    {
        self.transition(pid, Status::Running).await?;
        let ctx = ProcessCtx {
            kernel: self.clone(),
            pid,
        };
        let body: Body = Box::pin(body(ctx));
        let kernel = self.clone();
        let handle = tokio::spawn(async move {
            let result = body.await;
            let (status, payload) = match &result {
                Ok(v) => (Status::Exited, v.clone()),
                Err(e) => (Status::Failed, json!({"error": e.to_wire()})),
            };
            if let Err(e) = kernel.exit_process(pid, status, payload).await {
                tracing::warn!(pid, %e, "ending a process");
            }
            result
        });
        self.inner.tasks.lock().insert(pid, handle.abort_handle());
        Ok(handle)
    }

    /// Sends a signal as the operator.
    pub async fn signal(&self, pid: Pid, signal: Signal) -> SysResult<Status> {
        self.deliver_signal(pid, signal, "operator").await
    }

    pub(crate) async fn deliver_signal(
        &self,
        pid: Pid,
        signal: Signal,
        actor: &str,
    ) -> SysResult<Status> {
        let status = self
            .process(pid)
            .ok_or_else(|| SyscallError::NotFound(format!("process {pid}")))?
            .status;
        match signal {
            Signal::Pause => {
                self.transition(pid, Status::Paused).await?;
                if let Some(p) = self.inner.state.lock().procs.get_mut(&pid) {
                    p.resume_to = Some(status);
                }
            }
            Signal::Resume => {
                if !matches!(status, Status::Paused | Status::Suspended) {
                    return Err(SyscallError::IllegalState(format!(
                        "process {pid} is {status}, not paused"
                    )));
                }
                let to = self
                    .inner
                    .state
                    .lock()
                    .procs
                    .get_mut(&pid)
                    .and_then(|p| p.resume_to.take())
                    .unwrap_or(Status::Runnable);
                self.transition(pid, to).await?;
            }
            Signal::Cancel => {
                {
                    let mut state = self.inner.state.lock();
                    if let Some(p) = state.procs.get_mut(&pid) {
                        p.cancel_requested = true;
                    }
                    state.bump(pid);
                }
                self.interrupt_tools(pid);
                if !self.inner.tasks.lock().contains_key(&pid) {
                    self.exit_process(pid, Status::Killed, json!({"signal": "cancel"}))
                        .await?;
                }
            }
            Signal::Kill => {
                self.interrupt_tools(pid);
                if let Some(task) = self.inner.tasks.lock().remove(&pid) {
                    task.abort();
                }
                self.exit_process(pid, Status::Killed, json!({"signal": "kill"}))
                    .await?;
            }
        }
        let after = self.process(pid).map(|p| p.status).unwrap_or(status);
        self.audit_operator(
            actor,
            "proc.signal",
            &format!("process:{pid}"),
            json!({"signal": signal, "status": after}),
        )
        .await?;
        Ok(after)
    }

    /// Grants a capability as the operator.
    pub async fn grant(&self, pid: Pid, spec: CapabilitySpec) -> SysResult<i64> {
        validate_resource(&spec.resource).map_err(SyscallError::invalid)?;
        self.insert_capability(Capability::from_operator(pid, spec), "operator")
            .await
    }

    /// Stores a capability for its subject (which must be live); returns its id.
    pub(crate) async fn insert_capability(&self, cap: Capability, actor: &str) -> SysResult<i64> {
        let ids = self.insert_capabilities(vec![cap], actor).await?;
        Ok(ids[0])
    }

    /// Stores capabilities for their subjects (which must be live) in one commit, one audit
    /// record each; returns their ids.
    pub(crate) async fn insert_capabilities(
        &self,
        caps: Vec<Capability>,
        actor: &str,
    ) -> SysResult<Vec<i64>> {
        let now = self.now();
        let mut batch = WriteBatch::default();
        let mut stored = Vec::with_capacity(caps.len());
        for mut cap in caps {
            cap.id = self.new_cap_id().await?;
            stored.push(cap);
        }
        {
            let state = self.inner.state.lock();
            for cap in &stored {
                match state.process(cap.subject) {
                    None => return Err(SyscallError::NotFound(format!("process {}", cap.subject))),
                    Some(p) if p.status.is_terminal() => {
                        return Err(SyscallError::IllegalState(format!(
                            "process {} is {}",
                            cap.subject, p.status
                        )))
                    }
                    _ => {}
                }
            }
            for cap in &stored {
                persist::insert_cap(&mut batch, cap, now, self.inner.store.sealer());
            }
        }
        for cap in &stored {
            batch = batch.audit(AuditEntry {
                ts: now,
                actor: actor.to_string(),
                action: "cap.grant".into(),
                target: cap.resource.clone(),
                decision: Decision::Ok,
                capability_refs: vec![cap.id],
                correlation_id: None,
                parent_seq: None,
                detail: json!({"subject": cap.subject, "rights": cap.rights, "policy": cap.policy, "parent": cap.parent}),
            });
        }
        self.inner
            .store
            .commit(batch)
            .await
            .map_err(|e| SyscallError::Internal(format!("store: {e}")))?;
        // A grant takes effect only once it is durable, and only for a live subject.
        let mut state = self.inner.state.lock();
        for cap in &stored {
            if state
                .process(cap.subject)
                .is_some_and(|p| !p.status.is_terminal())
            {
                state.caps.entry(cap.subject).or_default().push(cap.clone());
            }
        }
        Ok(stored.iter().map(|c| c.id).collect())
    }

    /// Revokes a capability and everything derived from it, as the operator.
    pub async fn revoke(&self, cap_id: i64) -> SysResult<Vec<i64>> {
        self.revoke_tree(cap_id, "operator").await
    }

    pub(crate) async fn revoke_tree(&self, cap_id: i64, actor: &str) -> SysResult<Vec<i64>> {
        let now = self.now();
        let mut batch = WriteBatch::default();
        let ids = {
            let mut state = self.inner.state.lock();
            match state.find_cap_mut(cap_id) {
                None => return Err(SyscallError::NotFound(format!("capability #{cap_id}"))),
                Some(c) if !c.revocable => {
                    return Err(SyscallError::invalid(format!(
                        "capability #{cap_id} is not revocable"
                    )))
                }
                _ => {}
            }
            let ids = state.derived_caps(cap_id);
            for id in &ids {
                if let Some(c) = state.find_cap_mut(*id) {
                    persist::revoke_cap(&mut batch, c, self.inner.store.sealer());
                    // Revocation takes effect at once (fail closed), before its commit.
                    c.revoked = true;
                }
            }
            for caps in state.caps.values_mut() {
                caps.retain(|c| !c.revoked);
            }
            ids
        };
        let batch = batch.audit(AuditEntry {
            ts: now,
            actor: actor.to_string(),
            action: "cap.revoke".into(),
            target: format!("capability:{cap_id}"),
            decision: Decision::Ok,
            capability_refs: ids.clone(),
            correlation_id: None,
            parent_seq: None,
            detail: json!({"revoked": ids}),
        });
        self.inner
            .store
            .commit(batch)
            .await
            .map_err(|e| SyscallError::Internal(format!("store: {e}")))?;
        Ok(ids)
    }

    /// Registers an image as the operator.
    pub async fn register_image(&self, image: &Image) -> SysResult<()> {
        self.store_image(image, None, "operator").await
    }

    pub(crate) async fn store_image(
        &self,
        image: &Image,
        by: Option<Pid>,
        actor: &str,
    ) -> SysResult<()> {
        let now = self.now();
        let manifest = persist::json(image);
        let seal = crate::store::sealed::image_seal(
            self.inner.store.sealer(),
            &image.id,
            &image.version,
            &manifest,
            by,
        );
        let batch = WriteBatch::default()
            .stmt(
                "INSERT INTO images (id, version, manifest, registered_by, registered_at, mac) \
                 VALUES (?, ?, ?, ?, ?, ?)",
                vec![
                    image.id.clone().into(),
                    image.version.clone().into(),
                    manifest.into(),
                    by.into(),
                    now.into(),
                    seal.into(),
                ],
            )
            .audit(AuditEntry {
                ts: now,
                actor: actor.into(),
                action: "image.register".into(),
                target: format!("image:{}", image.id),
                decision: Decision::Ok,
                capability_refs: vec![],
                correlation_id: None,
                parent_seq: None,
                detail: json!({"version": image.version}),
            });
        self.inner.store.commit(batch).await.map_err(|e| match e {
            crate::store::CommitError::Rejected(msg) if msg.contains("UNIQUE") => {
                SyscallError::AlreadyExists(format!("image {} version {}", image.id, image.version))
            }
            other => SyscallError::Internal(format!("store: {other}")),
        })?;
        self.inner.images.lock().remove(&image.id);
        Ok(())
    }

    /// The highest registered version of an image (see [`super::image::compare_versions`]),
    /// whatever order the versions were registered in.
    pub async fn image(&self, id: &str) -> SysResult<Image> {
        if id == "base" {
            return Ok(Image::base());
        }
        if let Some(image) = self.inner.images.lock().get(id) {
            return Ok(image.clone());
        }
        let rows = sqlx::query(
            "SELECT id, version, manifest, registered_by, mac FROM images WHERE id = ?",
        )
        .bind(id)
        .fetch_all(self.inner.store.pool())
        .await?;
        // Only rows the kernel wrote count; of those, the highest version.
        let mut highest: Option<Image> = None;
        for image in rows.iter().filter_map(|row| self.sealed_image(row)) {
            let higher = highest
                .as_ref()
                .is_none_or(|h| super::image::compare_versions(&image.version, &h.version).is_gt());
            if higher {
                highest = Some(image);
            }
        }
        let image = highest.ok_or_else(|| SyscallError::NotFound(format!("image {id}")))?;
        self.inner
            .images
            .lock()
            .insert(id.to_string(), image.clone());
        Ok(image)
    }

    /// Every registered image (latest first per id).
    pub async fn images(&self) -> SysResult<Vec<Image>> {
        let rows = sqlx::query(
            "SELECT id, version, manifest, registered_by, mac FROM images ORDER BY id, registered_at",
        )
        .fetch_all(self.inner.store.pool())
        .await?;
        Ok(rows.iter().filter_map(|r| self.sealed_image(r)).collect())
    }

    /// The image of a stored row, if the kernel wrote it (its seal verifies) and it parses.
    pub(crate) fn sealed_image(&self, row: &sqlx::sqlite::SqliteRow) -> Option<Image> {
        use sqlx::Row;
        let id: String = row.try_get("id").ok()?;
        let version: String = row.try_get("version").ok()?;
        let manifest: String = row.try_get("manifest").ok()?;
        let by: Option<i64> = row.try_get("registered_by").ok()?;
        let mac: Option<String> = row.try_get("mac").ok()?;
        let expected = crate::store::sealed::image_seal(
            self.inner.store.sealer(),
            &id,
            &version,
            &manifest,
            by,
        );
        if mac.as_deref() != Some(expected.as_str()) {
            crate::store::sealed::refused("images", format!("{id} {version}"));
            return None;
        }
        serde_json::from_str(&manifest).ok()
    }

    /// Posts an event to a process as the operator.
    pub async fn post_event(&self, target: Pid, name: &str, payload: Value) -> SysResult<i64> {
        self.enqueue_event(
            target,
            name,
            payload,
            "operator",
            super::events::Poster::Kernel,
        )
        .await
    }

    /// Appends an operator action to the audit log.
    pub(crate) async fn audit_operator(
        &self,
        actor: &str,
        action: &str,
        target: &str,
        detail: Value,
    ) -> SysResult<()> {
        let entry = AuditEntry {
            ts: self.now(),
            actor: actor.into(),
            action: action.into(),
            target: target.into(),
            decision: Decision::Ok,
            capability_refs: vec![],
            correlation_id: None,
            parent_seq: None,
            detail,
        };
        self.inner
            .store
            .commit(WriteBatch::default().audit(entry))
            .await
            .map_err(|e| SyscallError::Internal(format!("store: {e}")))?;
        Ok(())
    }
}
