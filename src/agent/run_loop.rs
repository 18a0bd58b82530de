//! The model loop: spawn a process from an image and drive it with a chat model until it
//! exits or a budget ends it.
//!
//! Each step sends the conversation and the process's tool table to the model, then runs
//! every tool call it asks for through [`Kernel::syscall`] as the process and feeds the
//! result back (an error as its wire JSON, so the model sees e.g. `PermissionDenied` with
//! the resource and right). A call that needs a human parks inside the syscall (the
//! kernel's `HumanMode::Wait`) and the loop continues once it is answered. Every message is
//! appended to the process's `agent.transcript` object as it is produced, so
//! [`resume_agent`] can continue after a host restart.

use std::time::Duration;

use serde::Serialize;
use serde_json::{json, Value};

use super::counters::Counters;
use super::model::{ChatModel, Message, Role, ToolCall, Usage};
use super::tools::ToolTable;
use super::transcript::{Transcript, TRANSCRIPT_TYPE};
use super::AgentError;
use crate::kernel::unwind::catch_panic_sync;
use crate::kernel::{
    CapabilitySpec, Image, JitCall, Kernel, MemCall, Pid, ProcCall, Right, Signal, SpawnOptions,
    Status, Syscall, SyscallError,
};

/// Largest tool result (characters) fed back to the model; longer ones are cut.
const MAX_TOOL_RESULT_CHARS: usize = 64 * 1024;
/// How many memory objects the first message lists.
const MAX_MEMORY_LISTED: usize = 50;

/// Limits of one run (or one resumption).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RunLimits {
    /// Model calls.
    pub max_steps: u32,
    /// Total tokens reported by the model (prompt + completion), if limited.
    pub max_tokens: Option<u64>,
    /// Wall time of the loop, if limited.
    pub wall_time: Option<Duration>,
}

impl Default for RunLimits {
    fn default() -> Self {
        RunLimits {
            max_steps: 50,
            max_tokens: None,
            wall_time: None,
        }
    }
}

/// How to start an agent run.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// Image id (`base` for the built-in empty image).
    pub image: String,
    pub goal: String,
    /// Operator grants on top of the image's capabilities.
    pub grants: Vec<CapabilitySpec>,
    /// What the process may ask a human for, on top of the image's `requestable`.
    pub requestable: Vec<CapabilitySpec>,
    /// Workspace-relative working directory (default `.`).
    pub cwd: Option<String>,
    pub limits: RunLimits,
}

/// Why a run stopped.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "reason", rename_all = "snake_case")]
pub enum StopReason {
    /// The model called `proc_exit`.
    Exited,
    /// The model replied without tool calls; its text became the exit payload.
    Finished,
    /// A limit ended the run (`steps`, `tokens` or `wall_time`); the process was exited
    /// with a payload saying so.
    Budget { limit: String },
    /// The process ended from outside (killed, cancelled, failed).
    Ended,
}

/// The result of a run.
#[derive(Debug, Clone, Serialize)]
pub struct RunOutcome {
    pub pid: Pid,
    pub status: Status,
    pub exit: Option<Value>,
    pub stop: StopReason,
    /// Model calls made by the run, across restarts and resumes.
    pub steps: u32,
    pub usage: Usage,
}

/// Spawns a process from `opts.image` and drives it with `model` until it exits or a limit
/// ends it. A model error leaves the process alive (RUNNABLE) and resumable.
pub async fn run_agent(
    kernel: &Kernel,
    opts: RunOptions,
    model: &dyn ChatModel,
) -> Result<RunOutcome, AgentError> {
    let image = kernel.image(&opts.image).await.map_err(AgentError::Spawn)?;
    let pid = kernel
        .spawn_root(SpawnOptions {
            image: Some(opts.image.clone()),
            goal: opts.goal.clone(),
            grants: opts.grants.clone(),
            budget: None,
            cwd: opts.cwd.clone(),
            requestable: opts.requestable.clone(),
        })
        .await
        .map_err(AgentError::Spawn)?;
    tracing::info!(pid, image = %image.id, "agent process spawned");
    let transcript = Transcript::create(kernel, pid, &image.id, &opts.goal).await?;
    let memory = memory_overview(kernel, pid).await;
    let mut messages = vec![
        Message::system(system_prompt(&image, pid)),
        Message::user(first_message(&opts.goal, &memory)),
    ];
    for m in &messages {
        transcript.append(kernel, m).await?;
    }
    let mut driver = Driver {
        kernel,
        pid,
        image,
        transcript,
        model,
        limits: opts.limits,
        counters: Counters::new(),
    };
    driver.drive(&mut messages).await
}

/// Reloads the transcript of `pid` (e.g. after a host restart) and continues the run: tool
/// calls of the last assistant message that have no result yet are executed first.
pub async fn resume_agent(
    kernel: &Kernel,
    pid: Pid,
    model: &dyn ChatModel,
    limits: RunLimits,
) -> Result<RunOutcome, AgentError> {
    let process = kernel
        .process(pid)
        .ok_or_else(|| AgentError::Spawn(SyscallError::NotFound(format!("process {pid}"))))?;
    if process.status.is_terminal() {
        return Err(AgentError::Ended {
            pid,
            status: process.status,
        });
    }
    let image = kernel
        .image(&process.image_id)
        .await
        .map_err(AgentError::Spawn)?;
    let (transcript, _start, mut messages) = Transcript::load(kernel, pid).await?;
    if messages.is_empty() {
        return Err(AgentError::Transcript(format!(
            "the transcript of process {pid} is empty"
        )));
    }
    tracing::info!(pid, messages = messages.len(), "resuming agent");
    let mut driver = Driver {
        kernel,
        pid,
        image,
        transcript,
        model,
        limits,
        counters: Counters::load(kernel, pid).await?,
    };
    // Finish the last step if the host stopped between a model reply and its results: each
    // call keeps the key of its place in that reply, so a call the journal knows is settled
    // from the journal (replayed, or parked on a human decision), never run as new.
    if let Some(last) = messages.iter().rposition(|m| m.role == Role::Assistant) {
        let answered: Vec<String> = messages[last + 1..]
            .iter()
            .filter_map(|m| m.tool_call_id.clone())
            .collect();
        let calls = messages[last].tool_calls.clone();
        if calls.iter().any(|c| !answered.contains(&c.id)) {
            let mut table = ToolTable::load(kernel, pid, &driver.image).await;
            if let Some(outcome) = driver
                .run_calls(&calls, &answered, &mut table, &mut messages)
                .await?
            {
                return Ok(outcome);
            }
        }
    }
    driver.drive(&mut messages).await
}

struct Driver<'a> {
    kernel: &'a Kernel,
    pid: Pid,
    image: Image,
    transcript: Transcript,
    model: &'a dyn ChatModel,
    limits: RunLimits,
    /// Durable: a resumed run continues from the stored counters.
    counters: Counters,
}

impl Driver<'_> {
    async fn drive(&mut self, messages: &mut Vec<Message>) -> Result<RunOutcome, AgentError> {
        let mut table = ToolTable::load(self.kernel, self.pid, &self.image).await;
        loop {
            if let Some(outcome) = self.check_alive().await? {
                return Ok(outcome);
            }
            if self.counters.steps >= self.limits.max_steps {
                return self
                    .stop_for_budget("steps", format!("{} model calls", self.counters.steps))
                    .await;
            }
            if let Some(max) = self.limits.max_tokens {
                if self.counters.usage.total_tokens >= max {
                    return self
                        .stop_for_budget(
                            "tokens",
                            format!("{} of {max} tokens used", self.counters.usage.total_tokens),
                        )
                        .await;
                }
            }
            let remaining = match self.limits.wall_time {
                Some(limit) => match limit.checked_sub(self.counters.elapsed()) {
                    Some(r) if !r.is_zero() => Some(r),
                    _ => return self.stop_wall_time().await,
                },
                None => None,
            };
            let reply = match remaining {
                Some(r) => {
                    match tokio::time::timeout(r, self.model.complete(messages, &table.specs)).await
                    {
                        Ok(reply) => reply,
                        Err(_) => return self.stop_wall_time().await,
                    }
                }
                None => self.model.complete(messages, &table.specs).await,
            }?;
            self.counters.steps += 1;
            self.counters.usage.add(reply.usage);
            // Counted before anything acts on the reply: a restart never gets this call free.
            self.counters.save(self.kernel, self.pid).await?;
            let mut message = reply.message;
            message.role = Role::Assistant;
            message.tool_call_id = None;
            self.transcript.append(self.kernel, &message).await?;
            messages.push(message.clone());
            if message.tool_calls.is_empty() {
                let text = message.content.clone().unwrap_or_default();
                let payload = json!({"result": text});
                return self.exit(payload, StopReason::Finished).await;
            }
            if let Some(outcome) = self
                .run_calls(&message.tool_calls, &[], &mut table, messages)
                .await?
            {
                return Ok(outcome);
            }
        }
    }

    /// Runs the tool calls of the newest assistant reply in order, except those whose id is
    /// in `answered`, appending each result. Returns an outcome if the process ended.
    ///
    /// Each call is keyed by its identity in the transcript (reply position, index within
    /// the reply, call id, argument hash), so running it again after a restart reaches the
    /// same journal. Calls the journal already knows (an intent or an outcome under their
    /// key) are settled first, before any call of the reply runs as new.
    async fn run_calls(
        &mut self,
        calls: &[ToolCall],
        answered: &[String],
        table: &mut ToolTable,
        messages: &mut Vec<Message>,
    ) -> Result<Option<RunOutcome>, AgentError> {
        let step = messages
            .iter()
            .rposition(|m| m.role == Role::Assistant)
            .unwrap_or(0);
        let pending: Vec<(String, &ToolCall)> = calls
            .iter()
            .enumerate()
            .filter(|(_, c)| !answered.contains(&c.id))
            .map(|(index, c)| (invocation_key(self.pid, step, index, c), c))
            .collect();
        let mut settled: Vec<Option<Result<Value, SyscallError>>> = Vec::new();
        for (key, call) in &pending {
            let journaled = self
                .kernel
                .invocation_recorded(key)
                .await
                .map_err(AgentError::Kernel)?;
            settled.push(match journaled {
                true => Some(self.call_once(key, call, table).await),
                false => None,
            });
        }
        for ((key, call), settled) in pending.iter().zip(settled) {
            let result = match settled {
                Some(result) => result,
                None => self.call_once(key, call, table).await,
            };
            if let Err(
                e @ SyscallError::NonDeterminism {
                    request_id: Some(_),
                    ..
                },
            ) = &result
            {
                // The call's replay left its journal and waits on a human's decision: the
                // run stops here and the model is told nothing; after the decision,
                // `run --resume` settles the call (run again from the start, or failed).
                return Err(AgentError::Kernel(e.clone()));
            }
            let is_exit = matches!(
                catch_panic_sync(&call.name, || table.to_syscall(call)),
                Ok(Syscall::Proc(ProcCall::Exit { .. }))
            );
            if is_exit && result.is_ok() {
                return Ok(Some(self.outcome(StopReason::Exited)));
            }
            if let Err(e) = &result {
                if self.is_gone() {
                    tracing::info!(pid = self.pid, %e, "process ended during a tool call");
                    return Ok(Some(self.outcome(StopReason::Ended)));
                }
            }
            let reply = Message::tool(call.id.clone(), tool_result_text(&result));
            self.transcript.append(self.kernel, &reply).await?;
            messages.push(reply);
            self.counters.save(self.kernel, self.pid).await?;
        }
        Ok(None)
    }

    /// Runs one tool call at most once under `key`; reloads the tool table after a
    /// successful `tool_register`.
    async fn call_once(
        &self,
        key: &str,
        call: &ToolCall,
        table: &mut ToolTable,
    ) -> Result<Value, SyscallError> {
        // A panic while turning the model's call into a syscall fails that call only.
        let syscall = catch_panic_sync(&call.name, || table.to_syscall(call))?;
        let is_register = matches!(syscall, Syscall::Tool(JitCall::Register { .. }));
        let result = self.kernel.syscall_once(self.pid, key, syscall).await;
        if is_register && result.is_ok() {
            *table = ToolTable::load(self.kernel, self.pid, &self.image).await;
        }
        result
    }

    fn is_gone(&self) -> bool {
        self.kernel
            .process(self.pid)
            .is_none_or(|p| p.status.is_terminal())
    }

    /// Waits while the process is paused; returns an outcome if it ended.
    async fn check_alive(&self) -> Result<Option<RunOutcome>, AgentError> {
        loop {
            let Some(process) = self.kernel.process(self.pid) else {
                return Err(AgentError::Spawn(SyscallError::NotFound(format!(
                    "process {}",
                    self.pid
                ))));
            };
            if process.status.is_terminal() {
                return Ok(Some(self.outcome(StopReason::Ended)));
            }
            if process.cancel_requested {
                // Nothing runs the process but this loop: end it as the signal asked.
                let _ = self.kernel.signal(self.pid, Signal::Kill).await;
                return Ok(Some(self.outcome(StopReason::Ended)));
            }
            if !matches!(process.status, Status::Paused | Status::Suspended) {
                return Ok(None);
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    async fn stop_wall_time(&self) -> Result<RunOutcome, AgentError> {
        let limit = self.limits.wall_time.unwrap_or_default();
        self.stop_for_budget("wall_time", format!("ran for {} ms", limit.as_millis()))
            .await
    }

    async fn stop_for_budget(&self, limit: &str, detail: String) -> Result<RunOutcome, AgentError> {
        tracing::info!(pid = self.pid, limit, %detail, "agent budget exhausted");
        let payload = json!({"stopped": "budget", "limit": limit, "detail": detail});
        self.exit(
            payload,
            StopReason::Budget {
                limit: limit.to_string(),
            },
        )
        .await
    }

    /// Ends the process with `proc.exit` (audited as the process); if even that is refused
    /// (e.g. its syscall budget is spent), kills it as the operator.
    async fn exit(&self, payload: Value, stop: StopReason) -> Result<RunOutcome, AgentError> {
        if let Err(e) = self
            .kernel
            .syscall(self.pid, Syscall::Proc(ProcCall::Exit { payload }))
            .await
        {
            if !self.is_gone() {
                tracing::warn!(pid = self.pid, %e, "proc.exit refused; killing");
                self.kernel
                    .signal(self.pid, Signal::Kill)
                    .await
                    .map_err(AgentError::Kernel)?;
            }
        }
        Ok(self.outcome(stop))
    }

    fn outcome(&self, stop: StopReason) -> RunOutcome {
        let process = self.kernel.process(self.pid);
        RunOutcome {
            pid: self.pid,
            status: process.as_ref().map(|p| p.status).unwrap_or(Status::Failed),
            exit: process.and_then(|p| p.exit_payload),
            stop,
            steps: self.counters.steps,
            usage: self.counters.usage,
        }
    }
}

/// What the model is shown for a tool result.
fn tool_result_text(result: &Result<Value, SyscallError>) -> String {
    let text = match result {
        Ok(Value::String(s)) => s.clone(),
        Ok(v) => v.to_string(),
        Err(e) => json!({"error": e.to_wire()}).to_string(),
    };
    if text.chars().count() > MAX_TOOL_RESULT_CHARS {
        let cut: String = text.chars().take(MAX_TOOL_RESULT_CHARS).collect();
        format!(
            "{cut}\n[truncated: the result is {} bytes; read it in parts]",
            text.len()
        )
    } else {
        text
    }
}

fn system_prompt(image: &Image, pid: Pid) -> String {
    let mut prompt = String::new();
    if !image.system_prompt.trim().is_empty() {
        prompt.push_str(image.system_prompt.trim());
        prompt.push_str("\n\n");
    }
    prompt.push_str(&format!(
        "You are process {pid} of Agent libOS (image {} {}). You act only through the tools \
         offered; each call is checked against your capabilities and audited. A denied call \
         returns an error naming the resource and right; ask with human_request_permission \
         if you need more. You can write new tools in TypeScript (tool_propose, \
         tool_validate, tool_register) and then call them by name. When the goal is done, \
         call proc_exit with your result (or reply without tool calls).",
        image.id, image.version
    ));
    prompt
}

fn first_message(goal: &str, memory: &[String]) -> String {
    let mut text = format!("Goal: {goal}");
    if !memory.is_empty() {
        text.push_str("\n\nMemory objects you can read (use mem_read with the id):\n");
        for line in memory {
            text.push_str(line);
            text.push('\n');
        }
    }
    text
}

/// Headers of memory objects in the process's own namespace and every namespace it may read
/// by an exact (non-pattern) capability.
async fn memory_overview(kernel: &Kernel, pid: Pid) -> Vec<String> {
    let mut namespaces = vec![None];
    for cap in kernel.capabilities(pid) {
        if let Some(ns) = cap.resource.strip_prefix("namespace:") {
            if !ns.contains('*') && cap.has_right(Right::Read) && ns != format!("proc/{pid}") {
                namespaces.push(Some(ns.to_string()));
            }
        }
    }
    let mut lines = Vec::new();
    for namespace in namespaces {
        let Ok(Value::Array(objects)) = kernel
            .syscall(pid, Syscall::Mem(MemCall::List { namespace }))
            .await
        else {
            continue;
        };
        for o in objects {
            if o["type"] == TRANSCRIPT_TYPE || lines.len() >= MAX_MEMORY_LISTED {
                continue;
            }
            let mut line = format!(
                "- {} [{}] in {}",
                o["id"].as_str().unwrap_or("?"),
                o["type"].as_str().unwrap_or("?"),
                o["namespace"].as_str().unwrap_or("?")
            );
            if let Some(t) = o["title"].as_str() {
                line.push_str(&format!(": {t}"));
            }
            if let Some(s) = o["summary"].as_str() {
                line.push_str(&format!(" — {s}"));
            }
            lines.push(line);
        }
    }
    lines
}

/// The idempotency key of the `index`-th tool call of the assistant message at `step`: the
/// call's identity in the transcript (position of the reply, index within it, the model's
/// call id, and a hash of its arguments), stable across restarts and `--resume`.
fn invocation_key(pid: Pid, step: usize, index: usize, call: &ToolCall) -> String {
    let id: String = call
        .id
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || "_-.".contains(*c))
        .take(48)
        .collect();
    let args = crate::util::sha256_hex(call.arguments.to_string().as_bytes());
    format!("agent-{pid}-{step}-{index}-{id}-{}", &args[..16])
}
