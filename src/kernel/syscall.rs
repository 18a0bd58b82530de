//! The syscall surface: every primitive, grouped by family, the only way an agent causes an
//! effect.
//!
//! [`Syscall`] nests one enum per family (`fs.*` is [`FsCall`], `proc.*` is [`ProcCall`], …),
//! so each family's handler matches its own enum exhaustively. The types are serializable
//! because they cross boundaries: ops send them from isolates, the journal hashes them,
//! fixtures, MCP and checkpoints carry them. The wire form is flat and is a contract —
//! `{"primitive": "fs.read_text", "path": "notes.md"}` — whether a whole `Syscall` or one
//! family's call is serialized; [`Primitive::args_hash`] is the SHA-256 of exactly those bytes.

use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize};
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

/// What the kernel knows of any call, whole or one family's: its wire name and the hash of
/// its wire form (the same bytes either way, so approvals and the journal agree).
pub trait Primitive: Send + Sync {
    /// The primitive's wire name, e.g. `fs.read_text`.
    fn name(&self) -> &'static str;
    /// SHA-256 of the call's exact wire form: what journals and approvals are bound to.
    fn args_hash(&self) -> String;
}

fn wire_hash(call: &impl Serialize) -> String {
    crate::util::sha256_hex(serde_json::to_string(call).unwrap_or_default().as_bytes())
}

/// Every primitive, by family. Each one is checked, journaled and audited by the kernel.
///
/// Serialized, a `Syscall` is its family's call (the family is not on the wire); decoded, the
/// family is read from the primitive name's prefix.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum Syscall {
    Fs(FsCall),
    Proc(ProcCall),
    Event(EventCall),
    Mem(MemCall),
    Clock(ClockCall),
    Shell(ShellCall),
    Net(NetCall),
    Human(HumanCall),
    Cap(CapCall),
    Image(ImageCall),
    Tool(JitCall),
}

/// `fs.*`: files, confined to the process's workspace.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "primitive")]
pub enum FsCall {
    #[serde(rename = "fs.read_text")]
    ReadText { path: String },
    #[serde(rename = "fs.read_bytes")]
    ReadBytes { path: String },
    #[serde(rename = "fs.write_text")]
    WriteText {
        path: String,
        content: String,
        #[serde(default)]
        overwrite: bool,
    },
    #[serde(rename = "fs.append_text")]
    AppendText { path: String, content: String },
    #[serde(rename = "fs.list")]
    List {
        #[serde(default = "dot")]
        path: String,
    },
    #[serde(rename = "fs.mkdir")]
    Mkdir {
        path: String,
        #[serde(default)]
        recursive: bool,
    },
    #[serde(rename = "fs.delete_file")]
    DeleteFile { path: String },
    #[serde(rename = "fs.delete_dir")]
    DeleteDir {
        path: String,
        #[serde(default)]
        recursive: bool,
    },
}

/// `proc.*`: the calling process and its children.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "primitive")]
pub enum ProcCall {
    #[serde(rename = "proc.getcwd")]
    GetCwd,
    #[serde(rename = "proc.chdir")]
    Chdir { path: String },
    /// `proc.self` (`Self` is a keyword).
    #[serde(rename = "proc.self")]
    SelfInfo,
    #[serde(rename = "proc.spawn")]
    Spawn {
        image: String,
        goal: String,
        #[serde(default)]
        budget: Option<Budget>,
    },
    #[serde(rename = "proc.fork")]
    Fork {
        #[serde(default)]
        goal: Option<String>,
        #[serde(default)]
        inherit: Vec<CapabilitySpec>,
        #[serde(default)]
        budget: Option<Budget>,
    },
    #[serde(rename = "proc.wait")]
    Wait {
        pid: Pid,
        #[serde(default)]
        timeout_ms: Option<u64>,
    },
    #[serde(rename = "proc.children")]
    Children,
    #[serde(rename = "proc.signal")]
    Signal { pid: Pid, signal: Signal },
    #[serde(rename = "proc.exit")]
    Exit {
        #[serde(default)]
        payload: Value,
    },
    #[serde(rename = "proc.exec")]
    Exec { image: String },
}

/// `event.*`: named events between processes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "primitive")]
pub enum EventCall {
    #[serde(rename = "event.wait")]
    Wait {
        name: String,
        #[serde(default)]
        timeout_ms: Option<u64>,
    },
    #[serde(rename = "event.post")]
    Post {
        name: String,
        #[serde(default)]
        payload: Value,
        /// Target process; `None` posts to the caller's own queue.
        #[serde(default)]
        target: Option<Pid>,
    },
}

/// `mem.*`: typed object memory.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "primitive")]
pub enum MemCall {
    #[serde(rename = "mem.create_namespace")]
    CreateNamespace { name: String },
    #[serde(rename = "mem.list")]
    List {
        #[serde(default)]
        namespace: Option<String>,
    },
    #[serde(rename = "mem.create")]
    Create(ObjectSpec),
    #[serde(rename = "mem.read")]
    Read { id: String },
    #[serde(rename = "mem.find")]
    Find {
        #[serde(default)]
        namespace: Option<String>,
        name: String,
    },
    #[serde(rename = "mem.append")]
    Append { id: String, item: Value },
    #[serde(rename = "mem.from_file")]
    FromFile {
        path: String,
        #[serde(default)]
        namespace: Option<String>,
        #[serde(default)]
        name: Option<String>,
        #[serde(default = "text_type", rename = "type")]
        object_type: String,
    },
    #[serde(rename = "mem.to_file")]
    ToFile {
        id: String,
        path: String,
        #[serde(default)]
        overwrite: bool,
    },
}

/// `clock.*`: time and timer waits.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "primitive")]
pub enum ClockCall {
    #[serde(rename = "clock.now")]
    Now,
    #[serde(rename = "clock.sleep")]
    Sleep { ms: u64 },
}

/// `shell.*`: commands, argv only.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "primitive")]
pub enum ShellCall {
    #[serde(rename = "shell.run")]
    Run {
        argv: Vec<String>,
        #[serde(default)]
        timeout_ms: Option<u64>,
        #[serde(default)]
        stdin: Option<String>,
    },
}

/// `net.*`: HTTP requests.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "primitive")]
pub enum NetCall {
    #[serde(rename = "net.fetch")]
    Fetch {
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
}

/// `human.*`: the human queue.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "primitive")]
pub enum HumanCall {
    #[serde(rename = "human.output")]
    Output {
        message: String,
        #[serde(default = "operator")]
        channel: String,
    },
    #[serde(rename = "human.ask")]
    Ask {
        question: String,
        #[serde(default)]
        choices: Vec<String>,
        #[serde(default = "operator")]
        channel: String,
    },
    #[serde(rename = "human.request_permission")]
    RequestPermission {
        resource: String,
        rights: Vec<Right>,
        reason: String,
        #[serde(default = "operator")]
        channel: String,
    },
}

/// `cap.*`: the caller's capabilities and those it delegated.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "primitive")]
pub enum CapCall {
    #[serde(rename = "cap.list")]
    List,
    #[serde(rename = "cap.grant")]
    Grant { to: Pid, spec: CapabilitySpec },
    #[serde(rename = "cap.revoke")]
    Revoke { id: i64 },
}

/// `image.*`: agent images.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "primitive")]
pub enum ImageCall {
    #[serde(rename = "image.register")]
    Register {
        /// The manifest text (TOML).
        manifest: String,
    },
}

/// `tool.*`: the JIT tool lifecycle. (Not `ToolCall`: that is a model's request in `agent`.)
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "primitive")]
pub enum JitCall {
    #[serde(rename = "tool.propose")]
    Propose { source: String },
    #[serde(rename = "tool.validate")]
    Validate { id: String },
    #[serde(rename = "tool.register")]
    Register { id: String },
    #[serde(rename = "tool.list")]
    List,
    #[serde(rename = "tool.call")]
    Call {
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

/// The wire prefixes of the families, for the error naming an unknown one.
const FAMILIES: &str = "fs, proc, event, mem, clock, shell, net, human, cap, image, tool";

impl<'de> Deserialize<'de> for Syscall {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Syscall::decode(Value::deserialize(deserializer)?).map_err(D::Error::custom)
    }
}

impl Syscall {
    /// The primitive's wire name, e.g. `fs.read_text`.
    pub fn name(&self) -> &'static str {
        self.family_call().name()
    }

    /// SHA-256 of the call's exact wire form (see [`Primitive::args_hash`]).
    pub fn args_hash(&self) -> String {
        wire_hash(self)
    }

    fn family_call(&self) -> &dyn Primitive {
        match self {
            Syscall::Fs(call) => call,
            Syscall::Proc(call) => call,
            Syscall::Event(call) => call,
            Syscall::Mem(call) => call,
            Syscall::Clock(call) => call,
            Syscall::Shell(call) => call,
            Syscall::Net(call) => call,
            Syscall::Human(call) => call,
            Syscall::Cap(call) => call,
            Syscall::Image(call) => call,
            Syscall::Tool(call) => call,
        }
    }

    /// Decodes the wire form; the error names an unknown primitive or the wrong field.
    pub fn from_wire(value: Value) -> Result<Syscall, String> {
        Syscall::decode(value).map_err(|e| e.to_string())
    }

    /// Decodes the wire form from its JSON text (what an isolate's op wrote) straight into
    /// the family's call, with no intermediate `Value`. Text whose `primitive` is not one
    /// plain string field (missing, mistyped, repeated, or not an object at all) takes the
    /// path of [`Syscall::from_wire`], so its error reads the same.
    pub fn from_wire_text(text: &str) -> Result<Syscall, String> {
        // Only an object is a call: serde would also read a struct from an array (its
        // first element as the tag), which the value decoder refuses.
        if !text.trim_start().starts_with('{') {
            let value: Value = serde_json::from_str(text).map_err(|e| e.to_string())?;
            return Syscall::from_wire(value);
        }
        #[derive(Deserialize)]
        struct Named<'a> {
            #[serde(borrow)]
            primitive: std::borrow::Cow<'a, str>,
        }
        let primitive = match serde_json::from_str::<Named>(text) {
            Ok(named) => named.primitive,
            Err(named) => {
                let value: Value = serde_json::from_str(text).map_err(|e| e.to_string())?;
                // A string `primitive` that `Named` refused was repeated: which one is
                // meant is not for the kernel to guess.
                if value.get("primitive").is_some_and(Value::is_string) {
                    return Err(named.to_string());
                }
                return Syscall::from_wire(value);
            }
        };
        let family = primitive.split_once('.').map_or("", |(family, _)| family);
        let decoded = match family {
            "fs" => serde_json::from_str(text).map(Syscall::Fs),
            "proc" => serde_json::from_str(text).map(Syscall::Proc),
            "event" => serde_json::from_str(text).map(Syscall::Event),
            "mem" => serde_json::from_str(text).map(Syscall::Mem),
            "clock" => serde_json::from_str(text).map(Syscall::Clock),
            "shell" => serde_json::from_str(text).map(Syscall::Shell),
            "net" => serde_json::from_str(text).map(Syscall::Net),
            "human" => serde_json::from_str(text).map(Syscall::Human),
            "cap" => serde_json::from_str(text).map(Syscall::Cap),
            "image" => serde_json::from_str(text).map(Syscall::Image),
            "tool" => serde_json::from_str(text).map(Syscall::Tool),
            _ => {
                return Err(format!(
                    "unknown variant `{primitive}`, expected a primitive of a family: {FAMILIES} \
                     (e.g. `fs.read_text`)"
                ))
            }
        };
        decoded.map_err(|e| e.to_string())
    }

    /// Reads the family from the primitive's prefix, then decodes that family's call (whose
    /// errors name the field, or list the family's primitives).
    fn decode(value: Value) -> Result<Syscall, serde_json::Error> {
        let primitive = match value.get("primitive") {
            Some(Value::String(name)) => name.clone(),
            Some(other) => return Err(serde_json::Error::custom(format!(
                "invalid type: {other}, expected a primitive name like \"fs.read_text\""
            ))),
            None if value.is_object() => {
                return Err(serde_json::Error::missing_field("primitive"))
            }
            None => {
                return Err(serde_json::Error::custom(format!(
                    "invalid type: {value}, expected a call like {{\"primitive\": \"fs.read_text\", \"path\": \"notes.md\"}}"
                )))
            }
        };
        let family = primitive.split_once('.').map_or("", |(family, _)| family);
        Ok(match family {
            "fs" => Syscall::Fs(FsCall::deserialize(value)?),
            "proc" => Syscall::Proc(ProcCall::deserialize(value)?),
            "event" => Syscall::Event(EventCall::deserialize(value)?),
            "mem" => Syscall::Mem(MemCall::deserialize(value)?),
            "clock" => Syscall::Clock(ClockCall::deserialize(value)?),
            "shell" => Syscall::Shell(ShellCall::deserialize(value)?),
            "net" => Syscall::Net(NetCall::deserialize(value)?),
            "human" => Syscall::Human(HumanCall::deserialize(value)?),
            "cap" => Syscall::Cap(CapCall::deserialize(value)?),
            "image" => Syscall::Image(ImageCall::deserialize(value)?),
            "tool" => Syscall::Tool(JitCall::deserialize(value)?),
            _ => {
                return Err(serde_json::Error::custom(format!(
                    "unknown variant `{primitive}`, expected a primitive of a family: {FAMILIES} \
                     (e.g. `fs.read_text`)"
                )))
            }
        })
    }

    /// When the journal makes this call's intent durable (see `IntentTiming`).
    pub fn intent_timing(&self) -> IntentTiming {
        use IntentTiming::{AtEffect, BeforeDispatch, Never};
        match self {
            Syscall::Fs(call) => match call {
                FsCall::ReadText { .. } | FsCall::ReadBytes { .. } | FsCall::List { .. } => Never,
                FsCall::WriteText { .. }
                | FsCall::AppendText { .. }
                | FsCall::Mkdir { .. }
                | FsCall::DeleteFile { .. }
                | FsCall::DeleteDir { .. } => AtEffect,
            },
            Syscall::Proc(call) => match call {
                ProcCall::Spawn { .. }
                | ProcCall::Fork { .. }
                | ProcCall::Signal { .. }
                | ProcCall::Exit { .. } => BeforeDispatch,
                ProcCall::GetCwd
                | ProcCall::Chdir { .. }
                | ProcCall::SelfInfo
                | ProcCall::Wait { .. }
                | ProcCall::Children
                | ProcCall::Exec { .. } => Never,
            },
            Syscall::Event(call) => match call {
                EventCall::Post { .. } => BeforeDispatch,
                EventCall::Wait { .. } => Never,
            },
            Syscall::Mem(call) => match call {
                MemCall::ToFile { .. } => AtEffect,
                MemCall::CreateNamespace { .. }
                | MemCall::List { .. }
                | MemCall::Create(_)
                | MemCall::Read { .. }
                | MemCall::Find { .. }
                | MemCall::Append { .. }
                | MemCall::FromFile { .. } => Never,
            },
            Syscall::Clock(_) => Never,
            Syscall::Shell(_) | Syscall::Net(_) => AtEffect,
            Syscall::Human(_) => Never,
            Syscall::Cap(call) => match call {
                CapCall::Grant { .. } | CapCall::Revoke { .. } => BeforeDispatch,
                CapCall::List => Never,
            },
            Syscall::Image(_) => BeforeDispatch,
            Syscall::Tool(_) => Never,
        }
    }

    /// Whether the primitive changes state outside memory reads (its audit record must be
    /// durable before the caller sees success).
    pub fn is_effect(&self) -> bool {
        match self {
            Syscall::Fs(call) => !matches!(
                call,
                FsCall::ReadText { .. } | FsCall::ReadBytes { .. } | FsCall::List { .. }
            ),
            Syscall::Proc(call) => !matches!(
                call,
                ProcCall::GetCwd | ProcCall::SelfInfo | ProcCall::Children
            ),
            Syscall::Event(_) => true,
            Syscall::Mem(call) => !matches!(
                call,
                MemCall::List { .. } | MemCall::Read { .. } | MemCall::Find { .. }
            ),
            Syscall::Clock(_) => false,
            Syscall::Shell(_) | Syscall::Net(_) | Syscall::Human(_) | Syscall::Image(_) => true,
            Syscall::Cap(call) => !matches!(call, CapCall::List),
            Syscall::Tool(call) => !matches!(call, JitCall::List | JitCall::Call { .. }),
        }
    }

    /// The request as recorded in the audit log: credentials redacted to length + SHA-256,
    /// strings longer than 256 bytes to length + hash (see [`crate::audit::redact`]).
    pub(crate) fn audit_summary(&self) -> Value {
        crate::audit::redact::shrink(crate::audit::redact::redact(
            serde_json::to_value(self).unwrap_or(Value::Null),
        ))
    }
}

impl Primitive for Syscall {
    fn name(&self) -> &'static str {
        Syscall::name(self)
    }
    fn args_hash(&self) -> String {
        Syscall::args_hash(self)
    }
}

/// Implements [`Primitive`] for a family's enum (its wire names, one per variant) and
/// `From` it for [`Syscall`].
macro_rules! family {
    ($variant:ident($family:ident) { $($call:pat => $name:literal,)* }) => {
        impl Primitive for $family {
            fn name(&self) -> &'static str {
                match self {
                    $($call => $name,)*
                }
            }
            fn args_hash(&self) -> String {
                wire_hash(self)
            }
        }

        impl From<$family> for Syscall {
            fn from(call: $family) -> Self {
                Syscall::$variant(call)
            }
        }
    };
}

family!(Fs(FsCall) {
    FsCall::ReadText { .. } => "fs.read_text",
    FsCall::ReadBytes { .. } => "fs.read_bytes",
    FsCall::WriteText { .. } => "fs.write_text",
    FsCall::AppendText { .. } => "fs.append_text",
    FsCall::List { .. } => "fs.list",
    FsCall::Mkdir { .. } => "fs.mkdir",
    FsCall::DeleteFile { .. } => "fs.delete_file",
    FsCall::DeleteDir { .. } => "fs.delete_dir",
});

family!(Proc(ProcCall) {
    ProcCall::GetCwd => "proc.getcwd",
    ProcCall::Chdir { .. } => "proc.chdir",
    ProcCall::SelfInfo => "proc.self",
    ProcCall::Spawn { .. } => "proc.spawn",
    ProcCall::Fork { .. } => "proc.fork",
    ProcCall::Wait { .. } => "proc.wait",
    ProcCall::Children => "proc.children",
    ProcCall::Signal { .. } => "proc.signal",
    ProcCall::Exit { .. } => "proc.exit",
    ProcCall::Exec { .. } => "proc.exec",
});

family!(Event(EventCall) {
    EventCall::Wait { .. } => "event.wait",
    EventCall::Post { .. } => "event.post",
});

family!(Mem(MemCall) {
    MemCall::CreateNamespace { .. } => "mem.create_namespace",
    MemCall::List { .. } => "mem.list",
    MemCall::Create(_) => "mem.create",
    MemCall::Read { .. } => "mem.read",
    MemCall::Find { .. } => "mem.find",
    MemCall::Append { .. } => "mem.append",
    MemCall::FromFile { .. } => "mem.from_file",
    MemCall::ToFile { .. } => "mem.to_file",
});

family!(Clock(ClockCall) {
    ClockCall::Now => "clock.now",
    ClockCall::Sleep { .. } => "clock.sleep",
});

family!(Shell(ShellCall) {
    ShellCall::Run { .. } => "shell.run",
});

family!(Net(NetCall) {
    NetCall::Fetch { .. } => "net.fetch",
});

family!(Human(HumanCall) {
    HumanCall::Output { .. } => "human.output",
    HumanCall::Ask { .. } => "human.ask",
    HumanCall::RequestPermission { .. } => "human.request_permission",
});

family!(Cap(CapCall) {
    CapCall::List => "cap.list",
    CapCall::Grant { .. } => "cap.grant",
    CapCall::Revoke { .. } => "cap.revoke",
});

family!(Image(ImageCall) {
    ImageCall::Register { .. } => "image.register",
});

family!(Tool(JitCall) {
    JitCall::Propose { .. } => "tool.propose",
    JitCall::Validate { .. } => "tool.validate",
    JitCall::Register { .. } => "tool.register",
    JitCall::List => "tool.list",
    JitCall::Call { .. } => "tool.call",
});

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
            Syscall::Fs(FsCall::ReadText {
                path: "a.txt".into()
            })
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
        assert!(err.contains("unknown variant `fs.nope`"), "{err}");
        assert!(err.contains("`fs.read_text`"), "{err}");
    }

    #[test]
    fn unknown_families_and_malformed_calls_are_named() {
        let err = Syscall::from_wire(json!({"primitive": "foo.bar"})).unwrap_err();
        assert!(err.contains("unknown variant `foo.bar`"), "{err}");
        assert!(err.contains("fs, proc"), "{err}");
        let err = Syscall::from_wire(json!({"primitive": "nodot"})).unwrap_err();
        assert!(err.contains("unknown variant `nodot`"), "{err}");
        let err = Syscall::from_wire(json!({"path": "a"})).unwrap_err();
        assert!(err.contains("missing field `primitive`"), "{err}");
        let err = Syscall::from_wire(json!({"primitive": 3})).unwrap_err();
        assert!(err.contains("expected a primitive name"), "{err}");
        let err = Syscall::from_wire(json!("fs.read_text")).unwrap_err();
        assert!(err.contains("invalid type"), "{err}");
        let err = Syscall::from_wire(json!({"primitive": "mem.create", "type": 3})).unwrap_err();
        assert!(err.contains("invalid type: integer `3`"), "{err}");
        let err = serde_json::from_str::<Syscall>(r#"{"primitive": "fs.mkdir"}"#).unwrap_err();
        assert!(err.to_string().contains("missing field `path`"), "{err}");
    }

    /// What a compromised isolate worker can put in a syscall's text: each class is refused
    /// with an error that names what is wrong, and a well-formed call decodes as its value
    /// would.
    #[test]
    fn malformed_syscall_text_is_refused_with_a_clear_error() {
        let call = Syscall::from_wire_text(r#"{"primitive":"fs.read_text","path":"a.txt"}"#);
        assert_eq!(
            call,
            Ok(Syscall::Fs(FsCall::ReadText {
                path: "a.txt".into()
            }))
        );
        let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
        let huge = format!(
            r#"{{"primitive":"fs.read_text","path":"{}"}}"#,
            "x".repeat(1 << 24)
        );
        let wrong_family =
            r#"{"primitive":"fs.delete_file","path":"a","payload":{"primitive":"mem.read"}}"#;
        for (text, names) in [
            ("", "EOF"),
            ("{", "EOF"),
            ("null", "invalid type: null"),
            ("3", "invalid type"),
            (r#""fs.read_text""#, "invalid type"),
            (r#"["fs.read_text", "a"]"#, "invalid type"),
            (r#"["fs.list"]"#, "invalid type"),
            (r#"["clock.now"]"#, "invalid type"),
            (r#" ["proc.exit"]"#, "invalid type"),
            (r#"{"path": "a"}"#, "missing field `primitive`"),
            (r#"{"primitive": 3}"#, "expected a primitive name"),
            (r#"{"primitive": null}"#, "expected a primitive name"),
            (
                r#"{"primitive": "fs.read_text", "primitive": "fs.delete_file", "path": "a"}"#,
                "duplicate field `primitive`",
            ),
            (r#"{"primitive": "foo.bar"}"#, "unknown variant `foo.bar`"),
            (
                r#"{"primitive": "fs.nope", "path": "a"}"#,
                "unknown variant `fs.nope`",
            ),
            (
                r#"{"primitive": "fs.read_text", "path": 3}"#,
                "invalid type: integer `3`",
            ),
            (r#"{"primitive": "fs.read_text"}"#, "missing field `path`"),
            (
                r#"{"primitive": "fs.read_text", "path": "a", "path": "b"}"#,
                "duplicate field `path`",
            ),
            (
                r#"{"primitive": "proc.wait", "pid": 1e400}"#,
                "number out of range",
            ),
            (deep.as_str(), "recursion limit exceeded"),
        ] {
            let err = Syscall::from_wire_text(text).expect_err(text);
            assert!(err.contains(names), "{text:.80}: {err}");
        }
        // Large but well formed: decoded, not refused (the frame bound limits its size).
        assert!(Syscall::from_wire_text(&huge).is_ok());
        // What the call does not take is never read: not a pid, not a primitive nested in
        // another field.
        let stated = r#"{"primitive": "fs.read_text", "path": "a", "pid": 8}"#;
        assert_eq!(
            Syscall::from_wire_text(stated),
            Ok(Syscall::Fs(FsCall::ReadText { path: "a".into() }))
        );
        assert_eq!(
            Syscall::from_wire_text(wrong_family),
            Ok(Syscall::Fs(FsCall::DeleteFile { path: "a".into() }))
        );
    }
}

/// The wire form is a contract: journal hashes, approvals bound to a call, fixtures, MCP and
/// stored checkpoints depend on its exact bytes. These hashes were recorded from the flat
/// enum the families replaced; a change here breaks every stored journal.
#[cfg(test)]
mod wire_contract {
    use super::*;
    use serde_json::json;

    #[test]
    fn args_hashes_of_every_primitive_are_unchanged() {
        for (input, want) in samples() {
            let call = Syscall::from_wire(input.clone()).unwrap_or_else(|e| panic!("{input}: {e}"));
            let wire = serde_json::to_string(&call).unwrap();
            assert_eq!(call.args_hash(), want, "wire form {wire}");
            assert_eq!(
                call.family_call().args_hash(),
                want,
                "family wire form {wire}"
            );
            assert_eq!(Some(call.name()), input["primitive"].as_str());
            let back = Syscall::from_wire(serde_json::from_str(&wire).unwrap()).unwrap();
            assert_eq!(back, call, "{wire} does not round-trip");
        }
    }

    /// One call per primitive (defaulted fields left out, so defaults are pinned too).
    pub(super) fn samples() -> Vec<(Value, &'static str)> {
        vec![
            (
                json!({"primitive": "fs.read_text", "path": "notes.md"}),
                "218a0d7a0c80d38571c56e1b24663bb3a01288bc368f28c9e3427bfa0ab46b9a",
            ),
            (
                json!({"primitive": "fs.read_bytes", "path": "a.bin"}),
                "fbe3b6beefe6e7491b5e30804601d6ae163f99a0a721d7f38d726751a26b3985",
            ),
            (
                json!({"primitive": "fs.write_text", "path": "out.txt", "content": "hi"}),
                "ff5528d5d7aeb6f4dda1355aa11d6f7015b0624c68084f98007fedfcebd88969",
            ),
            (
                json!({"primitive": "fs.append_text", "path": "log.txt", "content": "x\n"}),
                "30edd0e13e3c33b1c8130049967b7ce905975ff9b10611fa8ae9cb55a90bb71d",
            ),
            (
                json!({"primitive": "fs.list"}),
                "1c6bc7a11e722a3bfef368415f6e69703549cfbd3fb05db03b5696bf0085f455",
            ),
            (
                json!({"primitive": "fs.mkdir", "path": "d"}),
                "ef6088cc07f45652e9423aafb7618d7d6d270fdc34c7da076ba617fda6d776d0",
            ),
            (
                json!({"primitive": "fs.delete_file", "path": "f"}),
                "4b901eb0a85ca9a902602efdc5b1fd45775f9030f737e2ed2caa0fe2ba376a32",
            ),
            (
                json!({"primitive": "fs.delete_dir", "path": "d", "recursive": true}),
                "b5654c2670bbfdd40157262680300eb28c2cb0600125ed313e3625434d1d1079",
            ),
            (
                json!({"primitive": "proc.getcwd"}),
                "451c4795b03b92a986e9d29272042df885cb07c4573aeace438d15188ba6105b",
            ),
            (
                json!({"primitive": "proc.chdir", "path": "sub"}),
                "16fce5e4b4bd91d43156d4c5862621ddba971176e0669ea8aa741c02482f30df",
            ),
            (
                json!({"primitive": "proc.self"}),
                "5708cf35a4dcefae7d971e1f2d963b2ca312168c3b08851196a76818546b8506",
            ),
            (
                json!({"primitive": "proc.spawn", "image": "base", "goal": "g"}),
                "bbf3221f343605ff8f758454775e736843b1f57666735734f76773a793983f83",
            ),
            (
                json!({"primitive": "proc.fork"}),
                "8b3651c261aa4977b799fd4d7ef432af8ceadc173d790c78c1af7fea2b314a43",
            ),
            (
                json!({"primitive": "proc.fork", "goal": "g", "inherit": [{"resource": "fs:**", "rights": ["read"]}], "budget": {"tool_calls": 1, "children": 2, "syscalls": 3, "wall_time_ms": 4}}),
                "bdd19ecf2586b602d9d3979301e1e0b697bf7f83004247c1ad364462762e32e1",
            ),
            (
                json!({"primitive": "proc.wait", "pid": 7}),
                "57c3f64fd635c8227cba011804a04b9c47c241a4e6bfa3c5871472fcb2886a05",
            ),
            (
                json!({"primitive": "proc.children"}),
                "77d5b5ad4cd1d5c6fabc26e009909690d60db1ff3e8ba5c408874363c12edfc0",
            ),
            (
                json!({"primitive": "proc.signal", "pid": 7, "signal": "cancel"}),
                "8dfc3c1432fb6cc0036ff36cd8af9258fea9641bbf04e8838c479d67a8dfb660",
            ),
            (
                json!({"primitive": "proc.exit"}),
                "e4308c0f6ae264a4daafdfa2ed8ffd6ed5276ad40fcd200ee316c3e8f4cef6c3",
            ),
            (
                json!({"primitive": "proc.exec", "image": "coder"}),
                "7a0e6fbf648ebe1baf152356afceadd11a4e3c5bacee9d75518807d49f46c584",
            ),
            (
                json!({"primitive": "event.wait", "name": "go", "timeout_ms": 5}),
                "1ac3f630dc6ddd3d3e8bfa0484ee06885090c60ce9780f4224ff7f1e3da0374b",
            ),
            (
                json!({"primitive": "event.post", "name": "go"}),
                "5b4d399dbef0e181b461f60725042ff648c4bd9f595c5b88f878b8a5e290322d",
            ),
            (
                json!({"primitive": "mem.create_namespace", "name": "shared"}),
                "3c04868dcda4307c96d8d0dc4eab3377d49724bdea8af92f22b6bc6eb86101d5",
            ),
            (
                json!({"primitive": "mem.list"}),
                "c0ac452c08c8f8a58810ba153d1946cb7acb22916931d40646b743d15a4bc363",
            ),
            (
                json!({"primitive": "mem.create", "type": "note"}),
                "060756255941abd7a39a1e336f1b0ea23af9bbc46a82f6bc87c812ac4753e006",
            ),
            (
                json!({"primitive": "mem.create", "type": "note", "payload": {"a": [1, 2]}, "tags": ["t"], "appendable": true}),
                "9bfc06cfb17edf342be4825b78464e61f1fa82a2f447514a5bd28b2cc69025ba",
            ),
            (
                json!({"primitive": "mem.read", "id": "obj_1"}),
                "ec41c084491f43613fd67c9be903e964425eb222fefaa24eb2f1e35130562b5e",
            ),
            (
                json!({"primitive": "mem.find", "name": "n"}),
                "98edee6bd19e3a846b7fd0806ff0ed3c3bffcfe2f15d4373f30e4651aa9a895f",
            ),
            (
                json!({"primitive": "mem.append", "id": "obj_1", "item": {"k": "v"}}),
                "06e8a43cd2c0977206affdc050e94ec68b7134fd6a917e14510bdf24288f69ea",
            ),
            (
                json!({"primitive": "mem.from_file", "path": "a.txt"}),
                "dca730a43c0b2dbbdde36978c9beceaa21bef5e48c38e4bb299d071c06b3fd18",
            ),
            (
                json!({"primitive": "mem.to_file", "id": "obj_1", "path": "b.txt"}),
                "c4cde7cbf972af5da891a4016ea2e027a638766ad1fb9693d5b058d1602e56a0",
            ),
            (
                json!({"primitive": "clock.now"}),
                "6b8717beff9c573edc298bc909d15ce10fa048a3548ba8ddef8298927a60475b",
            ),
            (
                json!({"primitive": "clock.sleep", "ms": 10}),
                "45d21fa98b5608c0891643c7ec31b10a0e5016447b10afa6485d1c2074e6b3e2",
            ),
            (
                json!({"primitive": "shell.run", "argv": ["ls", "-la"]}),
                "41949c1987ff811ccbd0d6f6f7e634dcaaf5dba9d34013235f8be58ef7efac8f",
            ),
            (
                json!({"primitive": "net.fetch", "url": "http://127.0.0.1:1/x"}),
                "384723bb5de1a308ed0550bfc0b8c814514e445aaf56298b01e60f76697c3626",
            ),
            (
                json!({"primitive": "net.fetch", "url": "http://h/x", "method": "POST", "headers": [["a", "b"]], "body": "{}", "max_bytes": 9}),
                "000bd808e8f491dcb5a43e7705016308c5711d3463f8134ec4447b2bbfb7f192",
            ),
            (
                json!({"primitive": "human.output", "message": "hello"}),
                "07c92dca5d363058816fd620befde5671c0d0c9558d40f8b7469271dbb2daba8",
            ),
            (
                json!({"primitive": "human.ask", "question": "which?", "choices": ["a", "b"]}),
                "7f7d7ac614eda08f141eec680226a7ed583b6047e84dcf4d2fce0c777492cc35",
            ),
            (
                json!({"primitive": "human.request_permission", "resource": "fs:x", "rights": ["write"], "reason": "r"}),
                "4dc0936fdf2ac916594ceb227881c12e5fd8fec1e1f918c653fba6772f5e8bb1",
            ),
            (
                json!({"primitive": "cap.list"}),
                "59b3977bf9a82543cb71fee10f6bf2f09f72a777e1d794e4f31e6be596c0128c",
            ),
            (
                json!({"primitive": "cap.grant", "to": 3, "spec": {"resource": "fs:a", "rights": ["read"]}}),
                "4f38c1305e0816c396827c774b2bc8478aad64f1b3282a4def135b56a51788d3",
            ),
            (
                json!({"primitive": "cap.revoke", "id": 12}),
                "8761f95cec4d9bc42fdfe0e0bba98c40c9fc4dc8674e22a8b2713a05b58c385a",
            ),
            (
                json!({"primitive": "image.register", "manifest": "id = \"x\""}),
                "c3200af0fa1dee0eae8b8e8dcfd122b542d7f962a51bc58dd04efa302f3cbbc1",
            ),
            (
                json!({"primitive": "tool.propose", "source": "export default 1"}),
                "a461afee2e882c9d6c53944f7c2ebfcc2d3df7c646dd0ed2fc8ab95b7058d7b8",
            ),
            (
                json!({"primitive": "tool.validate", "id": "obj_2"}),
                "9517f863a58c76e5afe8a1edb3280e6fec9189408b762e6a1db8e72c2a6ed364",
            ),
            (
                json!({"primitive": "tool.register", "id": "obj_2"}),
                "406509a77d8ee779d3563971c848b98eebb73fccbbcff040501074e81d43dd64",
            ),
            (
                json!({"primitive": "tool.list"}),
                "78077e32fc7475d1a26a6e0f32221c3f871a3cf7feeb2d9dc5fd4e6b766abdc9",
            ),
            (
                json!({"primitive": "tool.call", "name": "wc"}),
                "e08fe749661ecfea1ae958ff34ae8e5543d1fc5db2e720c08527b3e259b0054f",
            ),
            (
                json!({"primitive": "tool.call", "name": "wc", "args": {"path": "a"}}),
                "dad198088a936e2145703b875edc0fb5500d235d1a5999355ccf3fc3ded3e27e",
            ),
        ]
    }
}

/// No wire input panics the decoder, and whatever decodes means what it says: it round-trips,
/// and its name, hash and audit summary are computed without a panic.
#[cfg(test)]
mod properties {
    use super::*;
    use crate::proptest_support::{config, json_with_keys, tricky_string};
    use proptest::prelude::*;

    const FIELDS: &[&str] = &[
        "primitive",
        "argv",
        "body",
        "budget",
        "channel",
        "choices",
        "content",
        "goal",
        "headers",
        "id",
        "image",
        "inherit",
        "manifest",
        "max_bytes",
        "message",
        "method",
        "name",
        "namespace",
        "type",
        "overwrite",
        "path",
        "payload",
        "pid",
        "question",
        "reason",
        "recursive",
        "resource",
        "rights",
        "stdin",
        "target",
        "timeout_ms",
        "url",
        "ms",
        "item",
        "tags",
        "appendable",
        "source",
        "args",
        "signal",
        "tool_calls",
        "children",
        "syscalls",
        "wall_time_ms",
        "right",
        "policy",
        "delegable",
    ];

    fn primitive_names() -> Vec<String> {
        let mut names: Vec<String> = wire_contract::samples()
            .iter()
            .map(|(call, _)| call["primitive"].as_str().unwrap_or_default().to_string())
            .collect();
        names.extend(["fs.", ".read_text", "fs", "", "fs.read_text.x", "é.é"].map(String::from));
        names
    }

    /// A call shaped like the wire form: a known (or near-known) primitive and random fields.
    fn call_like() -> impl Strategy<Value = Value> {
        (
            prop::sample::select(primitive_names()),
            prop::collection::vec((prop::sample::select(FIELDS), json_with_keys(FIELDS)), 0..6),
        )
            .prop_map(|(primitive, fields)| {
                let mut map: serde_json::Map<String, Value> = fields
                    .into_iter()
                    .map(|(k, v)| (k.to_string(), v))
                    .collect();
                map.insert("primitive".into(), Value::String(primitive));
                Value::Object(map)
            })
    }

    /// A valid call of some primitive with one field replaced, added or removed.
    fn mutated_sample() -> impl Strategy<Value = Value> {
        let samples: Vec<Value> = wire_contract::samples()
            .into_iter()
            .map(|(v, _)| v)
            .collect();
        (
            prop::sample::select(samples),
            prop::sample::select(FIELDS),
            prop::option::of(json_with_keys(FIELDS)),
        )
            .prop_map(|(mut call, field, value)| {
                if let Value::Object(map) = &mut call {
                    match value {
                        Some(v) => map.insert(field.to_string(), v),
                        None => map.remove(field),
                    };
                }
                call
            })
    }

    fn check(input: Value) -> Result<(), TestCaseError> {
        let Ok(call) = Syscall::from_wire(input.clone()) else {
            return Ok(());
        };
        prop_assert_eq!(Some(call.name()), input["primitive"].as_str());
        let _ = (
            call.args_hash(),
            call.audit_summary(),
            call.intent_timing(),
            call.is_effect(),
        );
        let wire = serde_json::to_value(&call).expect("a decoded call serializes");
        let back = Syscall::from_wire(wire.clone());
        prop_assert_eq!(back.as_ref(), Ok(&call), "{} does not round-trip", wire);
        Ok(())
    }

    /// The decoder of an op's text means what the decoder of values means: the same call,
    /// or a refusal.
    fn check_text(input: Value) -> Result<(), TestCaseError> {
        let from_value = Syscall::from_wire(input.clone());
        let from_text = Syscall::from_wire_text(&input.to_string());
        prop_assert_eq!(
            from_text.as_ref().ok(),
            from_value.as_ref().ok(),
            "{}",
            input
        );
        Ok(())
    }

    proptest! {
        #![proptest_config(config(512))]

        #[test]
        fn any_json_decodes_or_is_refused(input in json_with_keys(FIELDS)) {
            check_text(input.clone())?;
            check(input)?;
        }

        #[test]
        fn call_shaped_json_decodes_or_is_refused(input in call_like()) {
            check_text(input.clone())?;
            check(input)?;
        }

        #[test]
        fn mutated_calls_decode_or_are_refused(input in mutated_sample()) {
            check_text(input.clone())?;
            check(input)?;
        }

        #[test]
        fn any_text_decodes_or_is_refused(text in ".{0,64}") {
            let _ = Syscall::from_wire_text(&text);
        }

        #[test]
        fn any_primitive_name_decodes_or_is_refused(name in tricky_string()) {
            check(serde_json::json!({"primitive": name, "path": "a"}))?;
        }
    }
}
