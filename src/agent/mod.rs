//! The agent loop: drive a process with a chat model.
//!
//! [`run_agent`] spawns a process from an image and runs the model loop until the process
//! exits or a budget ends it; [`resume_agent`] continues a run after a host restart from the
//! process's `agent.transcript` object. Model clients live in [`model`]; the tool table the
//! model is offered (primitives, the JIT tool lifecycle, registered JIT tools) in [`tools`].
//! Every tool call is a [`crate::kernel::Kernel::syscall`] of the process, so capabilities,
//! approvals and audit records are the same as for any other host.

mod counters;
pub mod model;
pub mod run_loop;
pub mod tools;
pub mod transcript;

use crate::kernel::{Pid, Status, SyscallError};

pub use model::{ChatModel, ModelError};
pub use run_loop::{resume_agent, run_agent, RunLimits, RunOptions, RunOutcome, StopReason};

/// Why a run could not continue.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// The image could not be loaded or the process could not be created.
    #[error("starting the agent process: {0}")]
    Spawn(SyscallError),
    /// The model failed (after its client's retries); the process is left resumable.
    #[error(transparent)]
    Model(#[from] ModelError),
    /// Reading or writing the process's transcript failed.
    #[error("agent transcript: {0}")]
    Transcript(String),
    /// An operator action the loop needed failed.
    #[error("kernel: {0}")]
    Kernel(SyscallError),
    /// The process has already ended.
    #[error("process {pid} has already ended ({status})")]
    Ended { pid: Pid, status: Status },
}
