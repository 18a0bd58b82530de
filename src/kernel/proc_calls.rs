//! Process primitives: cwd, self, spawn, fork, wait, children, signal, exit, exec.

use serde_json::{json, Value};

use super::capability::{pattern_within, Capability, CapabilitySpec, Pid, Right};
use super::delegation::delegate;
use super::error::{SysResult, SyscallError};
use super::operator::NewProcess;
use super::persist;
use super::process::{divide_budget, Process, Status};
use super::resource;
use super::scope::{Done, Scope};
use super::syscall::{Budget, Primitive, ProcCall};
use super::Kernel;
use crate::store::WriteBatch;

impl Kernel {
    pub(crate) async fn proc_call(
        &self,
        pid: Pid,
        call: &ProcCall,
        scope: &mut Scope,
    ) -> SysResult<Done> {
        match call {
            ProcCall::GetCwd => {
                let cwd = self.cwd_of(pid)?;
                Ok(Done::new(json!(cwd), format!("process:{pid}")))
            }
            ProcCall::SelfInfo => {
                let p = self
                    .process(pid)
                    .ok_or_else(|| SyscallError::NotFound(format!("process {pid}")))?;
                Ok(Done::new(process_json(&p), format!("process:{pid}")))
            }
            ProcCall::Chdir { path } => self.chdir(pid, path, call, scope).await,
            ProcCall::Children => {
                let children: Vec<Value> = {
                    let state = self.inner.state.lock();
                    let mut kids: Vec<&Process> = state
                        .procs
                        .values()
                        .filter(|p| p.parent == Some(pid))
                        .collect();
                    kids.sort_by_key(|p| p.pid);
                    kids.into_iter().map(process_json).collect()
                };
                Ok(Done::new(json!(children), format!("process:{pid}")))
            }
            ProcCall::Spawn {
                image,
                goal,
                budget,
            } => {
                self.authorize_image(pid, image, call, scope).await?;
                let image = self.image(image).await?;
                let child = self
                    .new_child(pid, image, goal.clone(), budget.as_ref(), Vec::new())
                    .await?;
                Ok(Done::new(json!({"pid": child}), format!("process:{child}")))
            }
            ProcCall::Fork {
                goal,
                inherit,
                budget,
            } => self.fork(pid, goal.clone(), inherit, budget.as_ref()).await,
            ProcCall::Wait {
                pid: child,
                timeout_ms,
            } => {
                self.require_descendant(pid, *child, Right::Read)?;
                let out = self.wait_child(pid, *child, *timeout_ms).await?;
                Ok(Done::new(out, format!("process:{child}")))
            }
            ProcCall::Signal {
                pid: target,
                signal,
            } => {
                let descendant = self.inner.state.lock().is_ancestor(pid, *target);
                if !descendant {
                    self.authorize_one(
                        pid,
                        format!("process:{target}"),
                        Right::Signal,
                        call,
                        scope,
                    )
                    .await?;
                }
                let status = self
                    .deliver_signal(*target, *signal, &format!("pid:{pid}"))
                    .await?;
                Ok(Done::new(
                    json!({"pid": target, "status": status}),
                    format!("process:{target}"),
                ))
            }
            ProcCall::Exit { payload } => {
                // The audit record for exit is written by `finish` before the transition
                // would forbid it; the transition itself is durable here.
                self.exit_process(pid, Status::Exited, payload.clone())
                    .await?;
                Ok(Done::new(
                    json!({"pid": pid, "status": Status::Exited}),
                    format!("process:{pid}"),
                ))
            }
            ProcCall::Exec { image } => {
                self.authorize_image(pid, image, call, scope).await?;
                let image = self.image(image).await?;
                let now = self.now();
                let mut batch = WriteBatch::default();
                let missing: Vec<String> = {
                    let mut state = self.inner.state.lock();
                    let held = state.caps_of(pid).to_vec();
                    let missing = image
                        .required_capabilities
                        .iter()
                        .filter(|req| {
                            let Ok(spec) = CapabilitySpec::parse_grant(req) else {
                                return true;
                            };
                            !spec.rights.iter().all(|r| {
                                held.iter().any(|c| {
                                    c.is_live(now)
                                        && c.has_right(*r)
                                        && pattern_within(&c.resource, &spec.resource)
                                })
                            })
                        })
                        .cloned()
                        .collect();
                    let p = state
                        .procs
                        .get_mut(&pid)
                        .ok_or_else(|| SyscallError::NotFound(format!("process {pid}")))?;
                    p.image_id = image.id.clone();
                    p.image_version = image.version.clone();
                    persist::update_process(&mut batch, p, now);
                    missing
                };
                batch.push("DELETE FROM tools WHERE pid = ?", vec![pid.into()]);
                Ok(Done::new(
                    json!({"image": image.id, "version": image.version, "missing_capabilities": missing}),
                    format!("image:{}", image.id),
                )
                .batch(batch))
            }
        }
    }

    /// `spawn` and `exec` start code from an image: both need `image:<id>=execute`.
    async fn authorize_image(
        &self,
        pid: Pid,
        image: &str,
        call: &dyn Primitive,
        scope: &mut Scope,
    ) -> SysResult<()> {
        let resource = resource::exact("image", image);
        self.authorize_one(pid, resource, Right::Execute, call, scope)
            .await
    }

    fn cwd_of(&self, pid: Pid) -> SysResult<String> {
        self.inner
            .state
            .lock()
            .process(pid)
            .map(|p| p.cwd.clone())
            .ok_or_else(|| SyscallError::NotFound(format!("process {pid}")))
    }

    async fn chdir(
        &self,
        pid: Pid,
        path: &str,
        call: &dyn Primitive,
        scope: &mut Scope,
    ) -> SysResult<Done> {
        let checked = self
            .authorize_path(pid, path, Right::Read, call, scope, |_| Ok(Value::Null))
            .await?;
        let rel = checked.rel().to_string();
        if !self.fs_blocking(move |fs| fs.is_dir(&checked)).await? {
            return Err(SyscallError::NotFound(format!("directory {rel}")));
        }
        let now = self.now();
        let mut batch = WriteBatch::default();
        {
            let mut state = self.inner.state.lock();
            let p = state
                .procs
                .get_mut(&pid)
                .ok_or_else(|| SyscallError::NotFound(format!("process {pid}")))?;
            p.cwd = rel.clone();
            persist::update_process(&mut batch, p, now);
        }
        Ok(Done::new(json!(rel), resource::exact("fs", &rel)).batch(batch))
    }

    /// A child may be waited on (or read) only by its ancestors.
    fn require_descendant(&self, pid: Pid, child: Pid, right: Right) -> SysResult<()> {
        let state = self.inner.state.lock();
        if state.is_ancestor(pid, child) {
            Ok(())
        } else {
            Err(SyscallError::denied_because(
                format!("process:{child}"),
                right,
                "only an ancestor may wait on a process",
            ))
        }
    }

    /// Creates a child of `pid` with a share of its budget and the given capabilities.
    async fn new_child(
        &self,
        pid: Pid,
        image: super::image::Image,
        goal: String,
        requested: Option<&Budget>,
        grants: Vec<Capability>,
    ) -> SysResult<Pid> {
        let now = self.now();
        let (budget, cwd, requestable) = {
            let mut state = self.inner.state.lock();
            // A child may ask for what its parent may (never what its image declares).
            let requestable = state.requestable.get(&pid).cloned().unwrap_or_default();
            let p = state
                .procs
                .get_mut(&pid)
                .ok_or_else(|| SyscallError::NotFound(format!("process {pid}")))?;
            if p.usage.children >= p.budget.children {
                return Err(SyscallError::limit(
                    "children",
                    format!(
                        "process {pid} used its budget of {} children",
                        p.budget.children
                    ),
                ));
            }
            let share = divide_budget(&p.budget, &p.usage, requested);
            p.usage.children += 1;
            p.usage.tool_calls += share.tool_calls;
            p.usage.syscalls += share.syscalls;
            let elapsed = now.saturating_sub(p.started_at) as u64;
            let budget = Budget {
                wall_time_ms: share
                    .wall_time_ms
                    .min(p.budget.wall_time_ms.saturating_sub(elapsed)),
                ..share
            };
            (budget, p.cwd.clone(), requestable)
        };
        let child = self
            .create_process(
                NewProcess {
                    parent: Some(pid),
                    image,
                    goal,
                    budget,
                    cwd,
                    grants,
                    requestable,
                },
                &format!("pid:{pid}"),
            )
            .await?;
        let mut batch = WriteBatch::default();
        if let Some(p) = self.inner.state.lock().process(pid) {
            persist::update_process(&mut batch, p, now);
        }
        self.inner
            .store
            .commit(batch)
            .await
            .map_err(|e| SyscallError::Internal(format!("store: {e}")))?;
        Ok(child)
    }

    /// `proc.fork`: same image and cwd, and only the listed capabilities, each attenuated
    /// from a delegable capability the parent holds.
    async fn fork(
        &self,
        pid: Pid,
        goal: Option<String>,
        inherit: &[CapabilitySpec],
        budget: Option<&Budget>,
    ) -> SysResult<Done> {
        let now = self.now();
        let (parent, grants) = {
            let state = self.inner.state.lock();
            let parent = state
                .process(pid)
                .cloned()
                .ok_or_else(|| SyscallError::NotFound(format!("process {pid}")))?;
            let held = state.caps_of(pid);
            let mut grants = Vec::new();
            for spec in inherit {
                grants.extend(delegate(held, spec, now)?);
            }
            (parent, grants)
        };
        let image = self
            .image(&parent.image_id)
            .await
            .unwrap_or_else(|_| super::image::Image::base());
        let goal = goal.unwrap_or_else(|| parent.goal.clone());
        let child = self.new_child(pid, image, goal, budget, grants).await?;
        // Copy the parent's JIT tools into the child's table.
        let batch = WriteBatch::default().stmt(
            "INSERT INTO tools (pid, name, object_id, source_hash, meta, registered_at) \
             SELECT ?, name, object_id, source_hash, meta, ? FROM tools WHERE pid = ?",
            vec![child.into(), now.into(), pid.into()],
        );
        Ok(Done::new(json!({"pid": child}), format!("process:{child}")).batch(batch))
    }
}

pub(crate) fn process_json(p: &Process) -> Value {
    json!({
        "pid": p.pid,
        "parent": p.parent,
        "image": p.image_id,
        "image_version": p.image_version,
        "goal": p.goal,
        "status": p.status,
        "cwd": p.cwd,
        "budget": p.budget,
        "usage": p.usage,
        "exit": p.exit_payload,
    })
}
