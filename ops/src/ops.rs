//! The `#[op2]` bindings: one async op per primitive, plus `op_console`.
//!
//! Every op is thin. It decodes its argument object into the primitive's wire fields (unknown
//! or mistyped fields are an `InvalidArgument` error), takes the caller's context from the
//! [`CallBinding`] in `OpState` (never from JavaScript), counts the syscall against the call's
//! limit, and forwards the wire form `{"primitive": "fs.read_text", ...}` to the
//! [`SyscallPort`](crate::SyscallPort) as JSON text, serialized once from the typed fields
//! (the kernel decodes that text straight into its `Syscall`). It answers `{ok: true, value}` or
//! `{ok: false, error, call, seq}`, recording every error it answers with in the call's
//! binding (`seq` is its number there); the JavaScript face (`ts/libos.ts`) turns errors into
//! classes. No authority logic lives here: the kernel checks every call.

use std::cell::RefCell;
use std::rc::Rc;

use deno_core::op2;
use deno_core::OpState;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::{json, Value};

use crate::port::CallBinding;

/// A wire error object in the kernel's `WireError` shape.
fn wire_error(kind: &str, message: String) -> Value {
    json!({ "kind": kind, "message": message })
}

fn failure(error: Value) -> Value {
    json!({ "ok": false, "error": error })
}

/// The wire form of one call: the primitive's name, then its typed fields.
#[derive(Serialize)]
struct Tagged<'a, A> {
    primitive: &'a str,
    #[serde(flatten)]
    fields: &'a A,
}

/// Builds the wire form of `primitive` from the op's argument object: decoded once into the
/// primitive's typed fields (unknown or mistyped fields are refused here), then written as
/// JSON text once.
fn wire<A: DeserializeOwned + Serialize>(
    primitive: &str,
    args: Value,
) -> Result<Box<RawValue>, Value> {
    let args = if args.is_null() {
        Value::Object(Default::default())
    } else {
        args
    };
    let invalid = |e: serde_json::Error| {
        wire_error(
            "InvalidArgument",
            format!("invalid argument: {primitive}: {e}"),
        )
    };
    let fields: A = serde_json::from_value(args).map_err(invalid)?;
    let text = serde_json::to_string(&Tagged {
        primitive,
        fields: &fields,
    })
    .map_err(invalid)?;
    RawValue::from_string(text).map_err(invalid)
}

/// The body shared by every syscall op.
async fn dispatch<A: DeserializeOwned + Serialize>(
    state: Rc<RefCell<OpState>>,
    primitive: &'static str,
    args: Value,
) -> Value {
    let (port, ctx, call, record) = {
        let mut state = state.borrow_mut();
        let Some(binding) = state.try_borrow_mut::<CallBinding>() else {
            return failure(wire_error(
                "IllegalState",
                format!("illegal state: {primitive}: no tool call is in progress"),
            ));
        };
        let record = binding.errors.clone();
        let call = match wire::<A>(primitive, args) {
            Ok(call) => call,
            Err(error) => return record.failure(error),
        };
        if binding.syscalls >= binding.max_syscalls {
            binding.syscalls_exceeded = true;
            return record.failure(json!({
                "kind": "LimitExceeded",
                "message": format!(
                    "limit exceeded: syscalls: a tool call may make at most {} syscalls",
                    binding.max_syscalls
                ),
                "limit": "syscalls",
            }));
        }
        binding.syscalls += 1;
        (binding.port.clone(), binding.ctx.clone(), call, record)
    };
    match port.syscall(&ctx, call).await {
        Ok(value) => json!({ "ok": true, "value": value }),
        Err(error) => record.failure(error),
    }
}

/// Declares, for each primitive, its argument struct (the wire fields) and its op.
macro_rules! syscall_ops {
    ($(
        $(#[doc = $doc:literal])*
        $op:ident => $primitive:literal, $args:ident { $( $(#[$attr:meta])* $field:ident : $ty:ty ),* $(,)? }
    )*) => {
        $(
            #[derive(Deserialize, Serialize)]
            #[serde(deny_unknown_fields)]
            struct $args { $( $(#[$attr])* $field: $ty, )* }

            $(#[doc = $doc])*
            #[op2]
            #[serde]
            pub async fn $op(
                state: Rc<RefCell<OpState>>,
                #[serde] args: serde_json::Value,
            ) -> serde_json::Value {
                dispatch::<$args>(state, $primitive, args).await
            }
        )*
    };
}

syscall_ops! {
    /// `fs.read_text { path }`
    op_fs_read_text => "fs.read_text", FsReadText { path: String }
    /// `fs.read_bytes { path }`
    op_fs_read_bytes => "fs.read_bytes", FsReadBytes { path: String }
    /// `fs.write_text { path, content, overwrite }`
    op_fs_write_text => "fs.write_text", FsWriteText {
        path: String,
        content: String,
        #[serde(default)] overwrite: bool,
    }
    /// `fs.append_text { path, content }`
    op_fs_append_text => "fs.append_text", FsAppendText { path: String, content: String }
    /// `fs.list { path? }`
    op_fs_list => "fs.list", FsList {
        #[serde(default, skip_serializing_if = "Option::is_none")] path: Option<String>,
    }
    /// `fs.mkdir { path, recursive }`
    op_fs_mkdir => "fs.mkdir", FsMkdir { path: String, #[serde(default)] recursive: bool }
    /// `fs.delete_file { path }`
    op_fs_delete_file => "fs.delete_file", FsDeleteFile { path: String }
    /// `fs.delete_dir { path, recursive }`
    op_fs_delete_dir => "fs.delete_dir", FsDeleteDir { path: String, #[serde(default)] recursive: bool }

    /// `mem.create { type, payload, namespace?, name?, title?, summary?, tags, mime?, appendable }`
    op_mem_create => "mem.create", MemCreate {
        #[serde(rename = "type")] object_type: String,
        #[serde(default)] payload: Value,
        #[serde(default, skip_serializing_if = "Option::is_none")] namespace: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")] name: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")] title: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")] summary: Option<String>,
        #[serde(default)] tags: Vec<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")] mime: Option<String>,
        #[serde(default)] appendable: bool,
    }
    /// `mem.read { id }`
    op_mem_read => "mem.read", MemRead { id: String }
    /// `mem.find { name, namespace? }`
    op_mem_find => "mem.find", MemFind {
        name: String,
        #[serde(default, skip_serializing_if = "Option::is_none")] namespace: Option<String>,
    }
    /// `mem.append { id, item }`
    op_mem_append => "mem.append", MemAppend { id: String, #[serde(default)] item: Value }
    /// `mem.list { namespace? }`
    op_mem_list => "mem.list", MemList {
        #[serde(default, skip_serializing_if = "Option::is_none")] namespace: Option<String>,
    }
    /// `mem.create_namespace { name }`
    op_mem_create_namespace => "mem.create_namespace", MemCreateNamespace { name: String }
    /// `mem.from_file { path, namespace?, name?, type? }`
    op_mem_from_file => "mem.from_file", MemFromFile {
        path: String,
        #[serde(default, skip_serializing_if = "Option::is_none")] namespace: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")] name: Option<String>,
        #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")] object_type: Option<String>,
    }
    /// `mem.to_file { id, path, overwrite }`
    op_mem_to_file => "mem.to_file", MemToFile {
        id: String,
        path: String,
        #[serde(default)] overwrite: bool,
    }

    /// `clock.now {}`
    op_clock_now => "clock.now", ClockNow {}
    /// `clock.sleep { ms }`
    op_clock_sleep => "clock.sleep", ClockSleep { ms: u64 }

    /// `shell.run { argv, timeout_ms?, stdin? }`
    op_shell_run => "shell.run", ShellRun {
        argv: Vec<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")] timeout_ms: Option<u64>,
        #[serde(default, skip_serializing_if = "Option::is_none")] stdin: Option<String>,
    }
    /// `net.fetch { url, method?, headers: [[name, value]], body?, max_bytes? }`
    op_net_fetch => "net.fetch", NetFetch {
        url: String,
        #[serde(default, skip_serializing_if = "Option::is_none")] method: Option<String>,
        #[serde(default)] headers: Vec<(String, String)>,
        #[serde(default, skip_serializing_if = "Option::is_none")] body: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")] max_bytes: Option<u64>,
    }

    /// `human.ask { question, choices, channel? }`
    op_human_ask => "human.ask", HumanAsk {
        question: String,
        #[serde(default)] choices: Vec<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")] channel: Option<String>,
    }
    /// `human.output { message, channel? }`
    op_human_output => "human.output", HumanOutput {
        message: String,
        #[serde(default, skip_serializing_if = "Option::is_none")] channel: Option<String>,
    }
    /// `human.request_permission { resource, rights, reason, channel? }`
    op_human_request_permission => "human.request_permission", HumanRequestPermission {
        resource: String,
        rights: Vec<String>,
        reason: String,
        #[serde(default, skip_serializing_if = "Option::is_none")] channel: Option<String>,
    }

    /// `proc.spawn { image, goal, budget? }`
    op_proc_spawn => "proc.spawn", ProcSpawn {
        image: String,
        goal: String,
        #[serde(default, skip_serializing_if = "Option::is_none")] budget: Option<Value>,
    }
    /// `proc.fork { goal?, inherit, budget? }`
    op_proc_fork => "proc.fork", ProcFork {
        #[serde(default, skip_serializing_if = "Option::is_none")] goal: Option<String>,
        #[serde(default)] inherit: Vec<Value>,
        #[serde(default, skip_serializing_if = "Option::is_none")] budget: Option<Value>,
    }
    /// `proc.wait { pid, timeout_ms? }` (`pid` is the child waited for)
    op_proc_wait => "proc.wait", ProcWait {
        pid: i64,
        #[serde(default, skip_serializing_if = "Option::is_none")] timeout_ms: Option<u64>,
    }
    /// `proc.children {}`
    op_proc_children => "proc.children", ProcChildren {}
    /// `proc.signal { pid, signal }` (`pid` is the target)
    op_proc_signal => "proc.signal", ProcSignal { pid: i64, signal: String }
    /// `proc.exit { payload }`
    op_proc_exit => "proc.exit", ProcExit { #[serde(default)] payload: Value }
    /// `proc.getcwd {}`
    op_proc_getcwd => "proc.getcwd", ProcGetCwd {}
    /// `proc.chdir { path }`
    op_proc_chdir => "proc.chdir", ProcChdir { path: String }

    /// `event.post { name, payload, target? }`
    op_event_post => "event.post", EventPost {
        name: String,
        #[serde(default)] payload: Value,
        #[serde(default, skip_serializing_if = "Option::is_none")] target: Option<i64>,
    }
    /// `event.wait { name, timeout_ms? }`
    op_event_wait => "event.wait", EventWait {
        name: String,
        #[serde(default, skip_serializing_if = "Option::is_none")] timeout_ms: Option<u64>,
    }

    /// `tool.propose { source }`
    op_tool_propose => "tool.propose", ToolPropose { source: String }
    /// `tool.validate { id }`
    op_tool_validate => "tool.validate", ToolValidate { id: String }
    /// `tool.register { id }`
    op_tool_register => "tool.register", ToolRegister { id: String }
    /// `tool.list {}`
    op_tool_list => "tool.list", ToolList {}
    /// `tool.call { name, args }`
    op_tool_call => "tool.call", ToolCall { name: String, #[serde(default)] args: Value }
}

/// `console.*` of the tool: forwarded to the port, bounded by the call's console limit.
///
/// Returns false when the output was cut (the limit is reached); the JavaScript face then
/// throws `LimitExceeded`.
#[op2(fast)]
pub fn op_console(state: &mut OpState, #[string] level: String, #[string] text: String) -> bool {
    let Some(binding) = state.try_borrow_mut::<CallBinding>() else {
        return false;
    };
    let remaining = binding
        .max_console_bytes
        .saturating_sub(binding.console_bytes);
    let mut cut = text.len().min(remaining);
    while !text.is_char_boundary(cut) {
        cut -= 1;
    }
    binding.console_bytes += cut;
    if cut > 0 {
        binding.port.console(&binding.ctx, &level, &text[..cut]);
    }
    if cut < text.len() {
        binding.console_exceeded = true;
        return false;
    }
    true
}

/// Does nothing. The libos bootstrap calls it once the host flagged the call as stopped:
/// the engine's termination is pending then, and calling into the host throws it.
#[op2(fast)]
pub fn op_stop() {}

#[cfg(test)]
mod tests {
    use super::*;

    /// The wire text of a call, read back as a value.
    fn wire_value<A: DeserializeOwned + Serialize>(primitive: &str, args: Value) -> Value {
        serde_json::from_str(wire::<A>(primitive, args).unwrap().get()).unwrap()
    }

    #[test]
    fn wire_form_has_the_primitive_and_typed_fields() {
        let call =
            wire_value::<FsWriteText>("fs.write_text", json!({"path": "a.txt", "content": "hi"}));
        assert_eq!(
            call,
            json!({"primitive": "fs.write_text", "path": "a.txt", "content": "hi", "overwrite": false})
        );
        let call = wire_value::<FsList>("fs.list", Value::Null);
        assert_eq!(call, json!({"primitive": "fs.list"}));
        let call = wire_value::<ClockNow>("clock.now", json!({}));
        assert_eq!(call, json!({"primitive": "clock.now"}));
        let call = wire_value::<MemCreate>("mem.create", json!({"type": "note", "payload": 1}));
        assert_eq!(call["type"], "note");
        assert_eq!(call["primitive"], "mem.create");
    }

    #[test]
    fn a_smuggled_primitive_or_wrong_type_is_invalid() {
        let err = wire::<FsReadText>(
            "fs.read_text",
            json!({"path": "a", "primitive": "fs.delete_file"}),
        )
        .unwrap_err();
        assert_eq!(err["kind"], "InvalidArgument");
        let err = wire::<FsReadText>("fs.read_text", json!({"path": 3})).unwrap_err();
        assert!(err["message"].as_str().unwrap().contains("fs.read_text"));
    }
}
