//! The tool table offered to the model: kernel primitives as built-in function tools, the
//! JIT tool lifecycle (`tool_propose`, `tool_validate`, `tool_register`, `tool_list`), and
//! the process's registered JIT tools (called through `tool.call`).
//!
//! A built-in tool's name is its primitive's with `.` replaced by `_` (`fs.read_text` →
//! `fs_read_text`); its arguments are the primitive's wire fields, so a call becomes
//! `Syscall::from_wire({"primitive": .., ..arguments})`. Every call still goes through
//! [`Kernel::syscall`], which checks capabilities; offering a tool grants nothing.

use std::collections::HashMap;

use serde_json::{json, Map, Value};

use super::model::{ToolCall, ToolSpec};
use crate::kernel::{Image, JitCall, Kernel, Pid, Syscall, SyscallError};

/// One built-in tool: a primitive with a description and an argument schema.
struct Builtin {
    primitive: &'static str,
    description: &'static str,
    /// `(name, JSON type schema, required, description)`.
    params: &'static [(&'static str, &'static str, bool, &'static str)],
}

const STRING: &str = r#"{"type":"string"}"#;
const BOOL: &str = r#"{"type":"boolean"}"#;
const INT: &str = r#"{"type":"integer","minimum":0}"#;
const ANY: &str = r#"{}"#;
const STRINGS: &str = r#"{"type":"array","items":{"type":"string"}}"#;

/// The primitives offered as built-in tools. Capability management (`cap.grant`,
/// `cap.revoke`), `proc.fork`, `proc.exec` and `image.register` are deliberately absent.
const BUILTINS: &[Builtin] = &[
    Builtin {
        primitive: "fs.read_text",
        description: "Read a UTF-8 text file from the workspace.",
        params: &[("path", STRING, true, "Workspace-relative path.")],
    },
    Builtin {
        primitive: "fs.write_text",
        description: "Write a UTF-8 text file in the workspace.",
        params: &[
            ("path", STRING, true, "Workspace-relative path."),
            ("content", STRING, true, "The whole new content."),
            ("overwrite", BOOL, false, "Replace an existing file (default false)."),
        ],
    },
    Builtin {
        primitive: "fs.append_text",
        description: "Append text to a file in the workspace.",
        params: &[
            ("path", STRING, true, "Workspace-relative path."),
            ("content", STRING, true, "Text to append."),
        ],
    },
    Builtin {
        primitive: "fs.list",
        description: "List a directory of the workspace.",
        params: &[("path", STRING, false, "Directory (default '.').")],
    },
    Builtin {
        primitive: "fs.mkdir",
        description: "Create a directory in the workspace.",
        params: &[
            ("path", STRING, true, "Directory to create."),
            ("recursive", BOOL, false, "Create missing parents."),
        ],
    },
    Builtin {
        primitive: "fs.delete_file",
        description: "Delete a file in the workspace.",
        params: &[("path", STRING, true, "File to delete.")],
    },
    Builtin {
        primitive: "fs.delete_dir",
        description: "Delete a directory in the workspace.",
        params: &[
            ("path", STRING, true, "Directory to delete."),
            ("recursive", BOOL, false, "Delete its contents too."),
        ],
    },
    Builtin {
        primitive: "proc.getcwd",
        description: "Your working directory.",
        params: &[],
    },
    Builtin {
        primitive: "proc.chdir",
        description: "Change your working directory.",
        params: &[("path", STRING, true, "New working directory.")],
    },
    Builtin {
        primitive: "proc.self",
        description: "Your process record: pid, image, goal, status, budget and usage.",
        params: &[],
    },
    Builtin {
        primitive: "proc.spawn",
        description: "Start a child process from an image, with a goal.",
        params: &[
            ("image", STRING, true, "Image id."),
            ("goal", STRING, true, "The child's goal."),
        ],
    },
    Builtin {
        primitive: "proc.wait",
        description: "Wait for a child process to end.",
        params: &[
            ("pid", INT, true, "The child's pid."),
            ("timeout_ms", INT, false, "Give up after this many milliseconds."),
        ],
    },
    Builtin {
        primitive: "proc.children",
        description: "List your child processes.",
        params: &[],
    },
    Builtin {
        primitive: "proc.signal",
        description: "Signal a process you may signal: pause, resume, cancel or kill.",
        params: &[
            ("pid", INT, true, "Target pid."),
            (
                "signal",
                r#"{"type":"string","enum":["pause","resume","cancel","kill"]}"#,
                true,
                "The signal.",
            ),
        ],
    },
    Builtin {
        primitive: "proc.exit",
        description: "Finish: end your process with a result. Call this when the goal is done.",
        params: &[("payload", ANY, false, "Your result (any JSON).")],
    },
    Builtin {
        primitive: "event.wait",
        description: "Wait for a named event posted to you.",
        params: &[
            ("name", STRING, true, "Event name."),
            ("timeout_ms", INT, false, "Give up after this many milliseconds."),
        ],
    },
    Builtin {
        primitive: "event.post",
        description: "Post a named event to yourself or another process.",
        params: &[
            ("name", STRING, true, "Event name."),
            ("payload", ANY, false, "Event payload."),
            ("target", INT, false, "Target pid (default: yourself)."),
        ],
    },
    Builtin {
        primitive: "mem.list",
        description: "List memory objects (headers) of a namespace (default: your own).",
        params: &[("namespace", STRING, false, "Namespace, e.g. proc/7.")],
    },
    Builtin {
        primitive: "mem.create",
        description: "Create a memory object.",
        params: &[
            ("type", STRING, true, "Object type, e.g. note."),
            ("payload", ANY, true, "The content (any JSON)."),
            ("title", STRING, false, "Short title."),
            ("summary", STRING, false, "One-paragraph summary."),
            ("tags", STRINGS, false, "Tags."),
            ("name", STRING, false, "Unique name in the namespace."),
            ("namespace", STRING, false, "Namespace (default: your own)."),
            ("appendable", BOOL, false, "Accept mem_append later."),
        ],
    },
    Builtin {
        primitive: "mem.read",
        description: "Read a memory object by id.",
        params: &[("id", STRING, true, "Object id.")],
    },
    Builtin {
        primitive: "mem.find",
        description: "Find a memory object by name.",
        params: &[
            ("name", STRING, true, "Object name."),
            ("namespace", STRING, false, "Namespace (default: your own)."),
        ],
    },
    Builtin {
        primitive: "mem.append",
        description: "Append an item to an appendable memory object.",
        params: &[
            ("id", STRING, true, "Object id."),
            ("item", ANY, true, "The item (any JSON)."),
        ],
    },
    Builtin {
        primitive: "mem.from_file",
        description: "Create a memory object from a workspace text file.",
        params: &[
            ("path", STRING, true, "File path."),
            ("namespace", STRING, false, "Namespace (default: your own)."),
            ("name", STRING, false, "Unique name."),
            ("type", STRING, false, "Object type (default text)."),
        ],
    },
    Builtin {
        primitive: "mem.to_file",
        description: "Write a memory object's payload to a workspace file.",
        params: &[
            ("id", STRING, true, "Object id."),
            ("path", STRING, true, "File path."),
            ("overwrite", BOOL, false, "Replace an existing file."),
        ],
    },
    Builtin {
        primitive: "clock.now",
        description: "The current time in Unix milliseconds.",
        params: &[],
    },
    Builtin {
        primitive: "clock.sleep",
        description: "Sleep for some milliseconds.",
        params: &[("ms", INT, true, "Milliseconds.")],
    },
    Builtin {
        primitive: "shell.run",
        description: "Run a command (argv, no shell) in your working directory.",
        params: &[
            ("argv", STRINGS, true, "Program and arguments."),
            ("timeout_ms", INT, false, "Time limit."),
            ("stdin", STRING, false, "Standard input."),
        ],
    },
    Builtin {
        primitive: "net.fetch",
        description: "Make an HTTP request to an allowed host.",
        params: &[
            ("url", STRING, true, "URL."),
            ("method", STRING, false, "Method (default GET)."),
            (
                "headers",
                r#"{"type":"array","items":{"type":"array","items":{"type":"string"},"minItems":2,"maxItems":2}}"#,
                false,
                "Headers as [name, value] pairs.",
            ),
            ("body", STRING, false, "Request body."),
            ("max_bytes", INT, false, "Largest response to read."),
        ],
    },
    Builtin {
        primitive: "human.output",
        description: "Show a message to the human operator.",
        params: &[("message", STRING, true, "The message.")],
    },
    Builtin {
        primitive: "human.ask",
        description: "Ask the human operator a question and wait for the answer.",
        params: &[
            ("question", STRING, true, "The question."),
            ("choices", STRINGS, false, "Allowed answers, if any."),
        ],
    },
    Builtin {
        primitive: "human.request_permission",
        description: "Ask the human operator for a capability you lack.",
        params: &[
            ("resource", STRING, true, "Resource, e.g. fs:src/**."),
            (
                "rights",
                r#"{"type":"array","items":{"type":"string","enum":["read","write","delete","execute","create","append"]}}"#,
                true,
                "Rights wanted.",
            ),
            ("reason", STRING, true, "Why you need it."),
        ],
    },
    Builtin {
        primitive: "cap.list",
        description: "List your capabilities.",
        params: &[],
    },
    Builtin {
        primitive: "tool.propose",
        description: "Propose a new tool: a TypeScript module `export const tool = {name, description, input, output, tests?}; export default async function run(args, libos) {...}`. Returns its id.",
        params: &[("source", STRING, true, "TypeScript source of the tool module.")],
    },
    Builtin {
        primitive: "tool.validate",
        description: "Validate a proposed tool: static rules and its own tests.",
        params: &[("id", STRING, true, "Id from tool_propose.")],
    },
    Builtin {
        primitive: "tool.register",
        description: "Register a validated tool in your tool table; it becomes callable by its name.",
        params: &[("id", STRING, true, "Id from tool_propose.")],
    },
    Builtin {
        primitive: "tool.list",
        description: "List your registered tools.",
        params: &[],
    },
];

/// The built-in tool name of a primitive (`fs.read_text` → `fs_read_text`).
pub fn builtin_name(primitive: &str) -> String {
    primitive.replace('.', "_")
}

fn builtin_spec(b: &Builtin) -> ToolSpec {
    let mut properties = Map::new();
    let mut required = Vec::new();
    for (name, schema, req, description) in b.params {
        let mut schema: Value = serde_json::from_str(schema).expect("built-in schema parses");
        if let Value::Object(map) = &mut schema {
            map.insert("description".into(), json!(description));
        }
        properties.insert((*name).to_string(), schema);
        if *req {
            required.push(json!(name));
        }
    }
    ToolSpec {
        name: builtin_name(b.primitive),
        description: b.description.to_string(),
        parameters: json!({
            "type": "object",
            "properties": properties,
            "required": required,
            "additionalProperties": false,
        }),
    }
}

/// Specs of every built-in tool (for documentation and MCP listings).
pub fn builtin_tools() -> Vec<ToolSpec> {
    BUILTINS.iter().map(builtin_spec).collect()
}

/// Where a tool call goes.
#[derive(Debug, Clone, PartialEq)]
pub enum ToolTarget {
    /// A kernel primitive, by wire name.
    Primitive(&'static str),
    /// A registered JIT tool, by its registered name (called with `tool.call`).
    Jit(String),
}

/// The tools offered to the model in one step, and how to route their calls.
#[derive(Debug, Clone, Default)]
pub struct ToolTable {
    pub specs: Vec<ToolSpec>,
    targets: HashMap<String, ToolTarget>,
}

impl ToolTable {
    /// Built-ins allowed by the image (`default_tools`, when non-empty, lists the primitives
    /// to offer; `proc.exit` is always offered), plus the process's JIT tools from
    /// `tool.list` (skipped quietly when the kernel has no JIT host).
    pub async fn load(kernel: &Kernel, pid: Pid, image: &Image) -> ToolTable {
        let mut table = ToolTable::default();
        let allowed = |primitive: &str| {
            image.default_tools.is_empty()
                || primitive == "proc.exit"
                || image
                    .default_tools
                    .iter()
                    .any(|t| t == primitive || builtin_name(t) == builtin_name(primitive))
        };
        for b in BUILTINS.iter().filter(|b| allowed(b.primitive)) {
            let spec = builtin_spec(b);
            table
                .targets
                .insert(spec.name.clone(), ToolTarget::Primitive(b.primitive));
            table.specs.push(spec);
        }
        match kernel.syscall(pid, Syscall::Tool(JitCall::List)).await {
            Ok(Value::Array(tools)) => {
                for tool in tools {
                    table.add_jit(&tool);
                }
            }
            Ok(other) => tracing::warn!(%other, "tool.list returned a non-array"),
            Err(e) => tracing::debug!(%e, "no JIT tools"),
        }
        table
    }

    /// Adds one `tool.list` entry. Its function name is its own, made safe
    /// (`[A-Za-z0-9_-]`, at most 64 characters), prefixed `jit_` if a built-in has it.
    fn add_jit(&mut self, tool: &Value) {
        let Some(name) = tool.get("name").and_then(Value::as_str) else {
            return;
        };
        let mut safe: String = name
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        if self.targets.contains_key(&safe) {
            safe = format!("jit_{safe}");
        }
        safe.truncate(64);
        if self.targets.contains_key(&safe) {
            return;
        }
        let mut parameters = tool.get("input").cloned().unwrap_or(json!({}));
        if !parameters.is_object() || parameters.get("type").is_none() {
            parameters = json!({"type": "object", "properties": {}});
        }
        let description = tool
            .get("description")
            .and_then(Value::as_str)
            .unwrap_or("A registered tool.")
            .to_string();
        self.targets
            .insert(safe.clone(), ToolTarget::Jit(name.to_string()));
        self.specs.push(ToolSpec {
            name: safe,
            description: format!("{description} (registered JIT tool)"),
            parameters,
        });
    }

    pub fn target(&self, name: &str) -> Option<&ToolTarget> {
        self.targets.get(name)
    }

    /// Turns a model's tool call into the syscall it stands for. Errors are what the model
    /// is shown.
    pub fn to_syscall(&self, call: &ToolCall) -> Result<Syscall, SyscallError> {
        let target = self.targets.get(&call.name).ok_or_else(|| {
            let mut names: Vec<&str> = self.targets.keys().map(String::as_str).collect();
            names.sort_unstable();
            SyscallError::NotFound(format!(
                "no tool named '{}'; available: {}",
                call.name,
                names.join(", ")
            ))
        })?;
        let args = match &call.arguments {
            Value::Object(map) => map.clone(),
            Value::Null => Map::new(),
            Value::String(raw) => {
                return Err(SyscallError::invalid(format!(
                    "arguments of '{}' are not a JSON object: {}",
                    call.name,
                    super::model::excerpt(raw, 200)
                )))
            }
            other => {
                return Err(SyscallError::invalid(format!(
                    "arguments of '{}' must be a JSON object, not {other}",
                    call.name
                )))
            }
        };
        match target {
            ToolTarget::Primitive(primitive) => {
                let mut wire = args;
                wire.insert("primitive".into(), json!(primitive));
                Syscall::from_wire(Value::Object(wire)).map_err(|e| {
                    SyscallError::invalid(format!("arguments of '{}': {e}", call.name))
                })
            }
            ToolTarget::Jit(name) => Ok(Syscall::Tool(JitCall::Call {
                name: name.clone(),
                args: Value::Object(args),
            })),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernel::{FsCall, MemCall};

    #[test]
    fn every_builtin_maps_to_a_primitive() {
        for spec in builtin_tools() {
            assert!(spec.name.len() <= 64);
            assert_eq!(spec.parameters["type"], "object");
        }
        let table = ToolTable {
            specs: builtin_tools(),
            targets: BUILTINS
                .iter()
                .map(|b| {
                    (
                        builtin_name(b.primitive),
                        ToolTarget::Primitive(b.primitive),
                    )
                })
                .collect(),
        };
        let call = |name: &str, args: Value| ToolCall {
            id: "c".into(),
            name: name.into(),
            arguments: args,
        };
        assert_eq!(
            table
                .to_syscall(&call("fs_read_text", json!({"path": "a"})))
                .unwrap(),
            Syscall::Fs(FsCall::ReadText { path: "a".into() })
        );
        assert!(matches!(
            table.to_syscall(&call("mem_create", json!({"type": "note", "payload": 1}))),
            Ok(Syscall::Mem(MemCall::Create(_)))
        ));
        let err = table
            .to_syscall(&call("fs_read_text", json!({"path": 3})))
            .unwrap_err();
        assert_eq!(err.kind(), "InvalidArgument");
        let err = table
            .to_syscall(&call("human_respond", json!({})))
            .unwrap_err();
        assert_eq!(err.kind(), "NotFound");
    }
}
