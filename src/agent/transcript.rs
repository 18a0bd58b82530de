//! The conversation of an agent process, persisted as an appendable memory object of type
//! `agent.transcript` named `agent.transcript` in the process's own namespace: its payload
//! records how the run started, its items are the messages in order. Every write goes
//! through [`Kernel::syscall`] as the process, so it is capability-checked and audited.

use serde_json::{json, Value};

use super::model::Message;
use super::AgentError;
use crate::kernel::{Kernel, MemCall, ObjectSpec, Pid, Syscall};

/// Object type and name of a transcript.
pub const TRANSCRIPT_TYPE: &str = "agent.transcript";

/// A handle to a process's transcript object.
#[derive(Debug, Clone)]
pub struct Transcript {
    pub pid: Pid,
    pub object_id: String,
}

impl Transcript {
    /// Creates the transcript of a new run.
    pub async fn create(
        kernel: &Kernel,
        pid: Pid,
        image: &str,
        goal: &str,
    ) -> Result<Transcript, AgentError> {
        let created = kernel
            .syscall(
                pid,
                Syscall::Mem(MemCall::Create(ObjectSpec {
                    name: Some(TRANSCRIPT_TYPE.into()),
                    object_type: TRANSCRIPT_TYPE.into(),
                    payload: json!({"version": 1, "image": image, "goal": goal}),
                    title: Some("Agent transcript".into()),
                    summary: Some(format!("Conversation of process {pid} ({image})")),
                    appendable: true,
                    ..ObjectSpec::default()
                })),
            )
            .await
            .map_err(|e| AgentError::Transcript(format!("creating it: {e}")))?;
        let object_id = created["id"]
            .as_str()
            .ok_or_else(|| AgentError::Transcript(format!("mem.create returned {created}")))?
            .to_string();
        Ok(Transcript { pid, object_id })
    }

    /// Appends one message.
    pub async fn append(&self, kernel: &Kernel, message: &Message) -> Result<(), AgentError> {
        let item =
            serde_json::to_value(message).map_err(|e| AgentError::Transcript(e.to_string()))?;
        kernel
            .syscall(
                self.pid,
                Syscall::Mem(MemCall::Append {
                    id: self.object_id.clone(),
                    item,
                }),
            )
            .await
            .map_err(|e| AgentError::Transcript(format!("appending to {}: {e}", self.object_id)))?;
        Ok(())
    }

    /// Loads the transcript of `pid`: the handle, its start record and its messages.
    pub async fn load(
        kernel: &Kernel,
        pid: Pid,
    ) -> Result<(Transcript, Value, Vec<Message>), AgentError> {
        let object = kernel
            .syscall(
                pid,
                Syscall::Mem(MemCall::Find {
                    namespace: None,
                    name: TRANSCRIPT_TYPE.into(),
                }),
            )
            .await
            .map_err(|e| AgentError::Transcript(format!("process {pid} has none: {e}")))?;
        let object_id = object["id"]
            .as_str()
            .ok_or_else(|| AgentError::Transcript("the transcript object has no id".into()))?
            .to_string();
        let items = object["items"].as_array().cloned().unwrap_or_default();
        let mut messages = Vec::with_capacity(items.len());
        for (i, item) in items.into_iter().enumerate() {
            messages.push(serde_json::from_value(item).map_err(|e| {
                AgentError::Transcript(format!("item {} is not a message: {e}", i + 1))
            })?);
        }
        Ok((
            Transcript { pid, object_id },
            object["payload"].clone(),
            messages,
        ))
    }
}
