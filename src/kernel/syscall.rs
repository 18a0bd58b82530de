//! The syscall surface: one enum of primitives, the only way an agent causes an effect.
//!
//! The enum is serializable because it crosses boundaries: ops send it from isolates, the
//! journal hashes it, fixtures and MCP carry it. The wire form is
//! `{"primitive": "fs.read_text", "path": "notes.md"}`.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::capability::{CapabilitySpec, Pid, Right};

/// Per-process budgets; children receive a share of their parent's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Budget {
    pub tool_calls: u64,
    pub children: u64,
    pub syscalls: u64,
    /// Wall time from the process's start, in milliseconds.
    pub wall_time_ms: u64,
}

impl Default for Budget {
    fn default() -> Self {
        Budget {
            tool_calls: 1_000,
            children: 16,
            syscalls: 100_000,
            wall_time_ms: 24 * 3600 * 1000,
        }
    }
}

/// A signal sent to a process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Signal {
    Pause,
    Resume,
    /// Cooperative: the process's next syscall fails with `Cancelled`, then it ends KILLED.
    Cancel,
    /// Immediate: its running work is dropped and it ends KILLED.
    Kill,
}

impl std::str::FromStr for Signal {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "pause" => Ok(Signal::Pause),
            "resume" => Ok(Signal::Resume),
            "cancel" => Ok(Signal::Cancel),
            "kill" => Ok(Signal::Kill),
            _ => Err(format!(
                "unknown signal '{s}' (pause, resume, cancel, kill)"
            )),
        }
    }
}

/// Fields of a new memory object.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct ObjectSpec {
    /// Namespace; defaults to the calling process's own (`proc/<pid>`).
    #[serde(default)]
    pub namespace: Option<String>,
    /// Optional human name, unique in its namespace. Knowing it grants nothing.
    #[serde(default)]
    pub name: Option<String>,
    #[serde(rename = "type")]
    pub object_type: String,
    #[serde(default)]
    pub payload: Value,
    #[serde(default)]
    pub title: Option<String>,
    #[serde(default)]
    pub summary: Option<String>,
    #[serde(default)]
    pub tags: Vec<String>,
    #[serde(default)]
    pub mime: Option<String>,
    /// Appendable objects accept `mem.append`; others are immutable once created.
    #[serde(default)]
    pub appendable: bool,
}

/// When an invocation's journal records a syscall's intent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IntentTiming {
    /// Reads, waits, and effects committed atomically with their journal outcome (object
    /// memory, tool table): nothing to record before.
    Never,
    /// Effects made of several commits (processes, capabilities, events): before they start.
    BeforeDispatch,
    /// Effects outside the runtime (files, commands, network): after authorization and any
    /// human approval, immediately before the provider acts.
    AtEffect,
}

/// Every primitive. Each variant is checked, journaled and audited by the kernel.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "primitive")]
pub enum Syscall {
    // ---- filesystem (confined to the process's workspace) ----
    #[serde(rename = "fs.read_text")]
    FsReadText { path: String },
    #[serde(rename = "fs.read_bytes")]
    FsReadBytes { path: String },
    #[serde(rename = "fs.write_text")]
    FsWriteText {
        path: String,
        content: String,
        #[serde(default)]
        overwrite: bool,
    },
    #[serde(rename = "fs.append_text")]
    FsAppendText { path: String, content: String },
    #[serde(rename = "fs.list")]
    FsList {
        #[serde(default = "dot")]
        path: String,
    },
    #[serde(rename = "fs.mkdir")]
    FsMkdir {
        path: String,
        #[serde(default)]
        recursive: bool,
    },
    #[serde(rename = "fs.delete_file")]
    FsDeleteFile { path: String },
    #[serde(rename = "fs.delete_dir")]
    FsDeleteDir {
        path: String,
        #[serde(default)]
        recursive: bool,
    },

    // ---- process ----
    #[serde(rename = "proc.getcwd")]
    ProcGetCwd,
    #[serde(rename = "proc.chdir")]
    ProcChdir { path: String },
    #[serde(rename = "proc.self")]
    ProcSelf,
    #[serde(rename = "proc.spawn")]
    ProcSpawn {
        image: String,
        goal: String,
        #[serde(default)]
        budget: Option<Budget>,
    },
    #[serde(rename = "proc.fork")]
    ProcFork {
        #[serde(default)]
        goal: Option<String>,
        #[serde(default)]
        inherit: Vec<CapabilitySpec>,
        #[serde(default)]
        budget: Option<Budget>,
    },
    #[serde(rename = "proc.wait")]
    ProcWait {
        pid: Pid,
        #[serde(default)]
        timeout_ms: Option<u64>,
    },
    #[serde(rename = "proc.children")]
    ProcChildren,
    #[serde(rename = "proc.signal")]
    ProcSignal { pid: Pid, signal: Signal },
    #[serde(rename = "proc.exit")]
    ProcExit {
        #[serde(default)]
        payload: Value,
    },
    #[serde(rename = "proc.exec")]
    ProcExec { image: String },

    // ---- events ----
    #[serde(rename = "event.wait")]
    EventWait {
        name: String,
        #[serde(default)]
        timeout_ms: Option<u64>,
    },
    #[serde(rename = "event.post")]
    EventPost {
        name: String,
        #[serde(default)]
        payload: Value,
        /// Target process; `None` posts to the caller's own queue.
        #[serde(default)]
        target: Option<Pid>,
    },

    // ---- object memory ----
    #[serde(rename = "mem.create_namespace")]
    MemCreateNamespace { name: String },
    #[serde(rename = "mem.list")]
    MemList {
        #[serde(default)]
        namespace: Option<String>,
    },
    #[serde(rename = "mem.create")]
    MemCreate(ObjectSpec),
    #[serde(rename = "mem.read")]
    MemRead { id: String },
    #[serde(rename = "mem.find")]
    MemFind {
        #[serde(default)]
        namespace: Option<String>,
        name: String,
    },
    #[serde(rename = "mem.append")]
    MemAppend { id: String, item: Value },
    #[serde(rename = "mem.from_file")]
    MemFromFile {
        path: String,
        #[serde(default)]
        namespace: Option<String>,
        #[serde(default)]
        name: Option<String>,
        #[serde(default = "text_type", rename = "type")]
        object_type: String,
    },
    #[serde(rename = "mem.to_file")]
    MemToFile {
        id: String,
        path: String,
        #[serde(default)]
        overwrite: bool,
    },

    // ---- clock ----
    #[serde(rename = "clock.now")]
    ClockNow,
    #[serde(rename = "clock.sleep")]
    ClockSleep { ms: u64 },

    // ---- shell and network ----
    #[serde(rename = "shell.run")]
    ShellRun {
        argv: Vec<String>,
        #[serde(default)]
        timeout_ms: Option<u64>,
        #[serde(default)]
        stdin: Option<String>,
    },
    #[serde(rename = "net.fetch")]
    NetFetch {
        url: String,
        #[serde(default = "get")]
        method: String,
        #[serde(default)]
        headers: Vec<(String, String)>,
        #[serde(default)]
        body: Option<String>,
        #[serde(default)]
        max_bytes: Option<u64>,
    },

    // ---- human queue ----
    #[serde(rename = "human.output")]
    HumanOutput {
        message: String,
        #[serde(default = "operator")]
        channel: String,
    },
    #[serde(rename = "human.ask")]
    HumanAsk {
        question: String,
        #[serde(default)]
        choices: Vec<String>,
        #[serde(default = "operator")]
        channel: String,
    },
    #[serde(rename = "human.request_permission")]
    HumanRequestPermission {
        resource: String,
        rights: Vec<Right>,
        reason: String,
        #[serde(default = "operator")]
        channel: String,
    },

    // ---- capabilities ----
    #[serde(rename = "cap.list")]
    CapList,
    #[serde(rename = "cap.grant")]
    CapGrant { to: Pid, spec: CapabilitySpec },
    #[serde(rename = "cap.revoke")]
    CapRevoke { id: i64 },

    // ---- images ----
    #[serde(rename = "image.register")]
    ImageRegister {
        /// The manifest text (TOML).
        manifest: String,
    },

    // ---- JIT tools ----
    #[serde(rename = "tool.propose")]
    ToolPropose { source: String },
    #[serde(rename = "tool.validate")]
    ToolValidate { id: String },
    #[serde(rename = "tool.register")]
    ToolRegister { id: String },
    #[serde(rename = "tool.list")]
    ToolList,
    #[serde(rename = "tool.call")]
    ToolCall {
        name: String,
        #[serde(default)]
        args: Value,
    },
}

fn dot() -> String {
    ".".into()
}
fn get() -> String {
    "GET".into()
}
fn operator() -> String {
    "operator".into()
}
fn text_type() -> String {
    "text".into()
}

impl Syscall {
    /// The primitive's wire name, e.g. `fs.read_text`.
    pub fn name(&self) -> &'static str {
        match self {
            Syscall::FsReadText { .. } => "fs.read_text",
            Syscall::FsReadBytes { .. } => "fs.read_bytes",
            Syscall::FsWriteText { .. } => "fs.write_text",
            Syscall::FsAppendText { .. } => "fs.append_text",
            Syscall::FsList { .. } => "fs.list",
            Syscall::FsMkdir { .. } => "fs.mkdir",
            Syscall::FsDeleteFile { .. } => "fs.delete_file",
            Syscall::FsDeleteDir { .. } => "fs.delete_dir",
            Syscall::ProcGetCwd => "proc.getcwd",
            Syscall::ProcChdir { .. } => "proc.chdir",
            Syscall::ProcSelf => "proc.self",
            Syscall::ProcSpawn { .. } => "proc.spawn",
            Syscall::ProcFork { .. } => "proc.fork",
            Syscall::ProcWait { .. } => "proc.wait",
            Syscall::ProcChildren => "proc.children",
            Syscall::ProcSignal { .. } => "proc.signal",
            Syscall::ProcExit { .. } => "proc.exit",
            Syscall::ProcExec { .. } => "proc.exec",
            Syscall::EventWait { .. } => "event.wait",
            Syscall::EventPost { .. } => "event.post",
            Syscall::MemCreateNamespace { .. } => "mem.create_namespace",
            Syscall::MemList { .. } => "mem.list",
            Syscall::MemCreate { .. } => "mem.create",
            Syscall::MemRead { .. } => "mem.read",
            Syscall::MemFind { .. } => "mem.find",
            Syscall::MemAppend { .. } => "mem.append",
            Syscall::MemFromFile { .. } => "mem.from_file",
            Syscall::MemToFile { .. } => "mem.to_file",
            Syscall::ClockNow => "clock.now",
            Syscall::ClockSleep { .. } => "clock.sleep",
            Syscall::ShellRun { .. } => "shell.run",
            Syscall::NetFetch { .. } => "net.fetch",
            Syscall::HumanOutput { .. } => "human.output",
            Syscall::HumanAsk { .. } => "human.ask",
            Syscall::HumanRequestPermission { .. } => "human.request_permission",
            Syscall::CapList => "cap.list",
            Syscall::CapGrant { .. } => "cap.grant",
            Syscall::CapRevoke { .. } => "cap.revoke",
            Syscall::ImageRegister { .. } => "image.register",
            Syscall::ToolPropose { .. } => "tool.propose",
            Syscall::ToolValidate { .. } => "tool.validate",
            Syscall::ToolRegister { .. } => "tool.register",
            Syscall::ToolList => "tool.list",
            Syscall::ToolCall { .. } => "tool.call",
        }
    }

    /// Decodes the wire form; the error says which field is wrong.
    pub fn from_wire(value: Value) -> Result<Syscall, String> {
        serde_json::from_value(value).map_err(|e| e.to_string())
    }

    /// When the journal makes this call's intent durable (see `IntentTiming`).
    pub fn intent_timing(&self) -> IntentTiming {
        use Syscall::*;
        match self {
            FsWriteText { .. }
            | FsAppendText { .. }
            | FsMkdir { .. }
            | FsDeleteFile { .. }
            | FsDeleteDir { .. }
            | MemToFile { .. }
            | ShellRun { .. }
            | NetFetch { .. } => IntentTiming::AtEffect,
            ProcSpawn { .. }
            | ProcFork { .. }
            | ProcSignal { .. }
            | ProcExit { .. }
            | CapGrant { .. }
            | CapRevoke { .. }
            | ImageRegister { .. }
            | EventPost { .. } => IntentTiming::BeforeDispatch,
            _ => IntentTiming::Never,
        }
    }

    /// Whether the primitive changes state outside memory reads (its audit record must be
    /// durable before the caller sees success).
    pub fn is_effect(&self) -> bool {
        !matches!(
            self,
            Syscall::FsReadText { .. }
                | Syscall::FsReadBytes { .. }
                | Syscall::FsList { .. }
                | Syscall::ProcGetCwd
                | Syscall::ProcSelf
                | Syscall::ProcChildren
                | Syscall::MemList { .. }
                | Syscall::MemRead { .. }
                | Syscall::MemFind { .. }
                | Syscall::ClockNow
                | Syscall::ClockSleep { .. }
                | Syscall::CapList
                | Syscall::ToolList
                | Syscall::ToolCall { .. }
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn wire_form_round_trips() {
        let call =
            Syscall::from_wire(json!({"primitive": "fs.read_text", "path": "a.txt"})).unwrap();
        assert_eq!(
            call,
            Syscall::FsReadText {
                path: "a.txt".into()
            }
        );
        assert_eq!(call.name(), "fs.read_text");
        let create = Syscall::from_wire(
            json!({"primitive": "mem.create", "type": "note", "payload": {"a": 1}}),
        )
        .unwrap();
        assert_eq!(create.name(), "mem.create");
    }

    #[test]
    fn wrong_argument_types_are_named() {
        let err = Syscall::from_wire(json!({"primitive": "fs.read_text", "path": 3})).unwrap_err();
        assert!(err.contains("invalid type"), "{err}");
        let err = Syscall::from_wire(json!({"primitive": "fs.nope"})).unwrap_err();
        assert!(err.contains("unknown variant"), "{err}");
    }
}
