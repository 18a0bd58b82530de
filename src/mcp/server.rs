//! The `rmcp` server handler and its tools.

use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;
use parking_lot::Mutex;
use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, ContentBlock, ElicitRequestParams,
    ElicitationAction, ElicitationSchema, EnumSchema, Implementation, InitializeResult, JsonObject,
    ListToolsResult, PaginatedRequestParams, ServerCapabilities, Tool,
};
use rmcp::service::{RequestContext, RoleServer};
use rmcp::{ErrorData, Peer, ServerHandler};
use serde_json::{json, Value};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::task::JoinHandle;

use crate::kernel::unwind::panicked;
use crate::kernel::{
    Budget, CapabilitySpec, HumanAnswer, HumanRequest, JitCall, Kernel, MemCall, Pid, RequestKind,
    SpawnOptions, Status, Syscall, SyscallError,
};

/// Operator configuration of an MCP server.
#[derive(Debug, Clone, Default)]
pub struct McpConfig {
    /// Image every process of the session starts from (`None`: the built-in `base`).
    pub image: Option<String>,
    /// Capabilities each spawned process receives: the ceiling of what a session can do.
    pub grants: Vec<CapabilitySpec>,
    /// What a session process may ask a human for (`human.request_permission`), on top of
    /// the image's `requestable`; anything else is refused without asking.
    pub requestable: Vec<CapabilitySpec>,
    /// Budget of each spawned process (`None`: the image's, or the default).
    pub budget: Option<Budget>,
    /// Whether to show pending human requests to the user through MCP elicitation when the
    /// client supports it. Off by default. Turning it on trusts the client's UI: whatever
    /// the client answers is recorded as the human's answer, so a client that answers by
    /// itself approves its own requests. When off (or unsupported) the user answers with
    /// `agent-libos human approve <id>`.
    pub elicitation: bool,
}

/// Why the server stopped abnormally.
#[derive(Debug, thiserror::Error)]
pub enum McpError {
    #[error("MCP initialization failed: {0}")]
    Initialize(String),
    #[error("MCP server task failed: {0}")]
    Task(String),
}

/// The tools a session offers. Nothing here answers approvals or grants capabilities.
pub const TOOL_NAMES: &[&str] = &[
    "spawn_process",
    "list_processes",
    "propose_tool",
    "validate_tool",
    "register_tool",
    "list_tools",
    "call_tool",
    "read_object",
    "read_audit",
    "await_call",
];

/// How often a running call is checked for a pending human request.
const HUMAN_POLL: Duration = Duration::from_millis(100);
/// How long `await_call` waits by default.
const AWAIT_DEFAULT_MS: u64 = 30_000;

/// Serves MCP over `transport` (any `AsyncRead + AsyncWrite`, e.g. one end of
/// `tokio::io::duplex`) until the client disconnects.
pub async fn serve_mcp<T>(kernel: Kernel, config: McpConfig, transport: T) -> Result<(), McpError>
where
    T: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let server = LibosServer {
        session: Arc::new(Session {
            kernel,
            config,
            pids: Mutex::new(Vec::new()),
            parked: Mutex::new(HashMap::new()),
        }),
    };
    let running = rmcp::serve_server(server, transport)
        .await
        .map_err(|e| McpError::Initialize(e.to_string()))?;
    running
        .waiting()
        .await
        .map_err(|e| McpError::Task(e.to_string()))?;
    Ok(())
}

/// Serves MCP on the process's stdin and stdout (the production transport).
pub async fn serve_mcp_stdio(kernel: Kernel, config: McpConfig) -> Result<(), McpError> {
    serve_mcp(
        kernel,
        config,
        tokio::io::join(tokio::io::stdin(), tokio::io::stdout()),
    )
    .await
}

type CallResult = Result<Value, SyscallError>;

struct Session {
    kernel: Kernel,
    config: McpConfig,
    /// Processes this session spawned (the only ones it may act as).
    pids: Mutex<Vec<Pid>>,
    /// Calls parked on a human, by call id.
    parked: Mutex<HashMap<String, JoinHandle<CallResult>>>,
}

#[derive(Clone)]
struct LibosServer {
    session: Arc<Session>,
}

/// What a tool returns before it becomes an MCP result.
enum Reply {
    Ok(Value),
    Err(String),
}

fn schema(properties: Value, required: &[&str]) -> Arc<JsonObject> {
    let value = json!({
        "type": "object",
        "properties": properties,
        "required": required,
        "additionalProperties": false,
    });
    match value {
        Value::Object(map) => Arc::new(map),
        _ => unreachable!(),
    }
}

fn pid_prop() -> Value {
    json!({"type": "integer", "description": "A process this session spawned (default: the most recent; one is spawned if there is none)."})
}

fn tools() -> Vec<Tool> {
    vec![
        Tool::new(
            "spawn_process",
            "Spawn a new agent process from the operator-configured image, with exactly the operator-configured capabilities. Returns its pid.",
            schema(json!({"goal": {"type": "string", "description": "What the process is for."}}), &[]),
        ),
        Tool::new(
            "list_processes",
            "The processes this session spawned, with their status.",
            schema(json!({}), &[]),
        ),
        Tool::new(
            "propose_tool",
            "Propose a JIT tool: a TypeScript module `export const tool = {name, description, input, output, tests?}; export default async function run(args, libos) {...}`. Returns {id, hash}.",
            schema(json!({"source": {"type": "string", "description": "TypeScript source."}, "pid": pid_prop()}), &["source"]),
        ),
        Tool::new(
            "validate_tool",
            "Validate a proposed tool (static rules and its tests). Returns {ok, findings, tests}.",
            schema(json!({"id": {"type": "string"}, "pid": pid_prop()}), &["id"]),
        ),
        Tool::new(
            "register_tool",
            "Register a validated tool in the process's tool table (needs capability tool:<name> create).",
            schema(json!({"id": {"type": "string"}, "pid": pid_prop()}), &["id"]),
        ),
        Tool::new(
            "list_tools",
            "The process's registered JIT tools.",
            schema(json!({"pid": pid_prop()}), &[]),
        ),
        Tool::new(
            "call_tool",
            "Call a registered JIT tool of the process by name with JSON arguments.",
            schema(json!({"name": {"type": "string"}, "args": {"type": "object"}, "pid": pid_prop()}), &["name"]),
        ),
        Tool::new(
            "read_object",
            "Read a memory object by id, as the process (capability-checked).",
            schema(json!({"id": {"type": "string"}, "pid": pid_prop()}), &["id"]),
        ),
        Tool::new(
            "read_audit",
            "Audit records of this session's processes, newest first.",
            schema(json!({"pid": {"type": "integer", "description": "Only this process (default: all of the session's)."}, "limit": {"type": "integer", "minimum": 1, "maximum": 1000}}), &[]),
        ),
        Tool::new(
            "await_call",
            "Wait for a call that was parked on a human answer (its call_id was in the error) and return its result.",
            schema(json!({"call_id": {"type": "string"}, "timeout_ms": {"type": "integer", "minimum": 0}}), &["call_id"]),
        ),
    ]
}

impl ServerHandler for LibosServer {
    fn get_info(&self) -> InitializeResult {
        InitializeResult::new(ServerCapabilities::builder().enable_tools().build())
            .with_server_info(Implementation::new(
                "agent-libos",
                env!("CARGO_PKG_VERSION"),
            ))
            .with_instructions(
                "Agent libOS: spawn a process (spawn_process), write TypeScript tools for it \
                 (propose_tool, validate_tool, register_tool) and call them (call_tool). Every \
                 call is capability-checked and audited; capabilities are set by the operator. \
                 Human approvals are answered by the operator (`agent-libos human approve <id>`), \
                 never through this server.",
            )
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        Ok(ListToolsResult::with_all_items(tools()))
    }

    fn get_tool(&self, name: &str) -> Option<Tool> {
        tools().into_iter().find(|t| t.name == name)
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        let args = Value::Object(request.arguments.unwrap_or_default());
        // A panic while serving this request fails this request only; the session goes on.
        let reply =
            match AssertUnwindSafe(self.session.dispatch(&request.name, &args, &context.peer))
                .catch_unwind()
                .await
            {
                Ok(reply) => reply,
                Err(payload) => Reply::Err(error_text(&panicked(&request.name, payload.as_ref()))),
            };
        Ok(CallToolResponse::Complete(match reply {
            Reply::Ok(value) => {
                let text = serde_json::to_string_pretty(&value).unwrap_or_default();
                let mut result = CallToolResult::success(vec![ContentBlock::text(text)]);
                if value.is_object() {
                    result.structured_content = Some(value);
                }
                result
            }
            Reply::Err(text) => CallToolResult::error(vec![ContentBlock::text(text)]),
        }))
    }
}

/// The text of a failed syscall: kind, message, and the wire form (resource, right, ...).
fn error_text(err: &SyscallError) -> String {
    let wire = err.to_wire();
    let mut text = format!("{}: {}", wire.kind, wire.message);
    if let (Some(resource), Some(right)) = (&wire.resource, &wire.right) {
        text.push_str(&format!(" [resource: {resource}, right: {right}]"));
    }
    if let Some(id) = &wire.request_id {
        text.push_str(&format!(
            "\nA human must answer request {id}: run `agent-libos human approve {id}` (or `agent-libos human reject {id}`)."
        ));
    }
    text.push('\n');
    text.push_str(&serde_json::to_string(&wire).unwrap_or_default());
    text
}

/// The arguments each tool accepts; anything else is refused, so that e.g. a `grants`
/// argument to `spawn_process` is an error rather than silently ignored.
fn allowed_arguments(tool: &str) -> Option<&'static [&'static str]> {
    Some(match tool {
        "spawn_process" => &["goal"],
        "list_processes" => &[],
        "propose_tool" => &["source", "pid"],
        "validate_tool" | "register_tool" | "read_object" => &["id", "pid"],
        "list_tools" => &["pid"],
        "call_tool" => &["name", "args", "pid"],
        "read_audit" => &["pid", "limit"],
        "await_call" => &["call_id", "timeout_ms"],
        _ => return None,
    })
}

fn check_arguments(tool: &str, args: &Value) -> Result<(), String> {
    let Some(allowed) = allowed_arguments(tool) else {
        return Ok(());
    };
    let Some(map) = args.as_object() else {
        return Err("InvalidArgument: arguments must be an object".into());
    };
    for key in map.keys() {
        if !allowed.contains(&key.as_str()) {
            let hint = if tool == "spawn_process" {
                " (capabilities and the image are set by the operator, not by the client)"
            } else {
                ""
            };
            return Err(format!(
                "InvalidArgument: {tool} takes no argument `{key}`{hint}; it takes: {}",
                allowed.join(", ")
            ));
        }
    }
    Ok(())
}

fn str_arg<'a>(args: &'a Value, name: &str) -> Result<&'a str, String> {
    args.get(name)
        .and_then(Value::as_str)
        .ok_or_else(|| format!("InvalidArgument: missing string argument `{name}`"))
}

impl Session {
    async fn dispatch(&self, tool: &str, args: &Value, peer: &Peer<RoleServer>) -> Reply {
        if let Err(e) = check_arguments(tool, args) {
            return Reply::Err(e);
        }
        let result = match tool {
            "spawn_process" => self.spawn(args.get("goal").and_then(Value::as_str)).await.map(
                |pid| {
                    json!({"pid": pid, "image": self.config.image.clone().unwrap_or_else(|| "base".into()),
                       "grants": self.config.grants})
                },
            ),
            "list_processes" => Ok(self.list_processes()),
            "propose_tool" => match str_arg(args, "source") {
                Ok(source) => {
                    self.call(args, Syscall::Tool(JitCall::Propose { source: source.into() }), peer)
                        .await
                }
                Err(e) => Err(e),
            },
            "validate_tool" => match str_arg(args, "id") {
                Ok(id) => self.call(args, Syscall::Tool(JitCall::Validate { id: id.into() }), peer).await,
                Err(e) => Err(e),
            },
            "register_tool" => match str_arg(args, "id") {
                Ok(id) => self.call(args, Syscall::Tool(JitCall::Register { id: id.into() }), peer).await,
                Err(e) => Err(e),
            },
            "list_tools" => self.call(args, Syscall::Tool(JitCall::List), peer).await,
            "call_tool" => match str_arg(args, "name") {
                Ok(name) => {
                    let call = Syscall::Tool(JitCall::Call {
                        name: name.into(),
                        args: args.get("args").cloned().unwrap_or(json!({})),
                    });
                    self.call(args, call, peer).await
                }
                Err(e) => Err(e),
            },
            "read_object" => match str_arg(args, "id") {
                Ok(id) => self.call(args, Syscall::Mem(MemCall::Read { id: id.into() }), peer).await,
                Err(e) => Err(e),
            },
            "read_audit" => self.read_audit(args).await,
            "await_call" => match str_arg(args, "call_id") {
                Ok(id) => {
                    let timeout = args
                        .get("timeout_ms")
                        .and_then(Value::as_u64)
                        .unwrap_or(AWAIT_DEFAULT_MS);
                    self.await_call(id, Duration::from_millis(timeout)).await
                }
                Err(e) => Err(e),
            },
            other => Err(format!(
                "NotFound: this server has no tool '{other}' (tools: {}). Capabilities are granted \
                 and human requests answered only by the operator, outside MCP \
                 (`agent-libos human approve <id>`).",
                TOOL_NAMES.join(", ")
            )),
        };
        match result {
            Ok(v) => Reply::Ok(v),
            Err(e) => Reply::Err(e),
        }
    }

    async fn spawn(&self, goal: Option<&str>) -> Result<Pid, String> {
        let pid = self
            .kernel
            .spawn_root(SpawnOptions {
                image: self.config.image.clone(),
                goal: goal.unwrap_or("MCP session").to_string(),
                grants: self.config.grants.clone(),
                budget: self.config.budget,
                cwd: None,
                requestable: self.config.requestable.clone(),
            })
            .await
            .map_err(|e| error_text(&e))?;
        self.pids.lock().push(pid);
        Ok(pid)
    }

    fn list_processes(&self) -> Value {
        let pids = self.pids.lock().clone();
        Value::Array(
            pids.into_iter()
                .filter_map(|pid| self.kernel.process(pid))
                .map(|p| {
                    let isolate = if self.kernel.isolate_hot(p.pid) { "hot" } else { "hibernated" };
                    json!({"pid": p.pid, "image": p.image_id, "goal": p.goal, "status": p.status, "isolate": isolate})
                })
                .collect(),
        )
    }

    /// The process a call acts as: `args.pid` if this session spawned it, else the most
    /// recent live one, else a new one.
    async fn resolve_pid(&self, args: &Value) -> Result<Pid, String> {
        if let Some(pid) = args.get("pid").and_then(Value::as_i64) {
            if !self.pids.lock().contains(&pid) {
                return Err(format!(
                    "PermissionDenied: process {pid} was not spawned by this session"
                ));
            }
            return Ok(pid);
        }
        let latest = self.pids.lock().iter().rev().copied().find(|pid| {
            self.kernel
                .process(*pid)
                .is_some_and(|p| !p.status.is_terminal())
        });
        match latest {
            Some(pid) => Ok(pid),
            None => self.spawn(None).await,
        }
    }

    /// Runs a syscall as a session process, watching for a human request it waits on. The
    /// call runs keyed (`Kernel::syscall_once`) by its own call id, which every request it
    /// raises carries: a parked call names its own request, never another call's.
    async fn call(
        &self,
        args: &Value,
        call: Syscall,
        peer: &Peer<RoleServer>,
    ) -> Result<Value, String> {
        let pid = self.resolve_pid(args).await?;
        let kernel = self.kernel.clone();
        let call_id = crate::util::new_id("call");
        let key = call_id.clone();
        let mut handle = tokio::spawn(async move { kernel.syscall_once(pid, &key, call).await });
        let mut handled: Vec<String> = Vec::new();
        loop {
            tokio::select! {
                joined = &mut handle => {
                    return match joined {
                        Ok(Ok(v)) => Ok(v),
                        Ok(Err(e)) => Err(error_text(&e)),
                        Err(e) => Err(format!("InternalError: the call failed: {e}")),
                    };
                }
                _ = tokio::time::sleep(HUMAN_POLL) => {
                    let waiting = self.kernel.process(pid).is_some_and(|p| p.status == Status::WaitingHuman);
                    if !waiting {
                        continue;
                    }
                    let pending = match self.kernel.human_requests(false).await {
                        Ok(all) => all
                            .into_iter()
                            .filter(|r| {
                                r.pid == pid
                                    && r.invocation.as_deref() == Some(call_id.as_str())
                                    && !handled.contains(&r.id)
                            })
                            .collect::<Vec<_>>(),
                        Err(e) => return Err(error_text(&e)),
                    };
                    for request in pending {
                        handled.push(request.id.clone());
                        if self.elicit(peer, &request).await {
                            continue;
                        }
                        self.parked.lock().insert(call_id.clone(), handle);
                        return Err(format!(
                            "HumanRequired: this call is waiting for a human to answer request {id} ({summary}).\n\
                             It cannot be answered from this MCP session. Ask the operator to run \
                             `agent-libos human approve {id}` (or `agent-libos human reject {id}`).\n\
                             The call stays parked; collect its result with await_call {{\"call_id\": \"{call_id}\"}}.\n{wire}",
                            id = request.id,
                            summary = describe_request(&request),
                            wire = json!({"kind": "HumanRequired", "request_id": request.id, "call_id": call_id}),
                        ));
                    }
                }
            }
        }
    }

    /// Shows `request` to the user through MCP elicitation, if allowed and supported, and
    /// records the user's answer as the human's. Returns whether it was answered.
    async fn elicit(&self, peer: &Peer<RoleServer>, request: &HumanRequest) -> bool {
        if !self.config.elicitation
            || !peer
                .supported_elicitation_modes()
                .contains(&rmcp::service::ElicitationMode::Form)
        {
            return false;
        }
        let question = request.kind == RequestKind::Question;
        let requested_schema = if question {
            ElicitationSchema::builder()
                .required_string("answer")
                .build_unchecked()
        } else {
            ElicitationSchema::builder()
                .required_enum_schema(
                    "decision",
                    EnumSchema::builder(vec!["approve_once".into(), "reject".into()]).build(),
                )
                .build_unchecked()
        };
        let params = ElicitRequestParams::FormElicitationParams {
            meta: None,
            message: format!(
                "Agent libOS: process {} asks a human: {}",
                request.pid,
                describe_request(request)
            ),
            requested_schema,
        };
        let result = match peer.create_elicitation(params).await {
            Ok(r) => r,
            Err(e) => {
                tracing::info!(%e, "elicitation failed; falling back to the operator");
                return false;
            }
        };
        let content = result.content.unwrap_or(Value::Null);
        let answer = match (result.action, question) {
            (ElicitationAction::Accept, true) => match content["answer"].as_str() {
                Some(text) => HumanAnswer::Answer { text: text.into() },
                None => return false,
            },
            (ElicitationAction::Accept, false) if content["decision"] == "approve_once" => {
                HumanAnswer::ApproveOnce
            }
            _ => HumanAnswer::Reject {
                reason: "declined through MCP elicitation".into(),
            },
        };
        match self
            .kernel
            .human_respond(&request.id, answer, "mcp-elicitation")
            .await
        {
            Ok(_) => true,
            Err(e) => {
                tracing::warn!(%e, id = %request.id, "recording an elicited answer");
                false
            }
        }
    }

    async fn await_call(&self, call_id: &str, timeout: Duration) -> Result<Value, String> {
        let handle = self
            .parked
            .lock()
            .remove(call_id)
            .ok_or_else(|| format!("NotFound: no parked call '{call_id}' in this session"))?;
        let mut handle = handle;
        match tokio::time::timeout(timeout, &mut handle).await {
            Ok(Ok(Ok(v))) => Ok(v),
            Ok(Ok(Err(e))) => Err(error_text(&e)),
            Ok(Err(e)) => Err(format!("InternalError: the call failed: {e}")),
            Err(_) => {
                self.parked.lock().insert(call_id.to_string(), handle);
                Err(format!(
                    "Timeout: call {call_id} is still waiting for a human; try await_call again later"
                ))
            }
        }
    }

    async fn read_audit(&self, args: &Value) -> Result<Value, String> {
        let pids: Vec<Pid> = match args.get("pid").and_then(Value::as_i64) {
            Some(pid) if self.pids.lock().contains(&pid) => vec![pid],
            Some(pid) => {
                return Err(format!(
                    "PermissionDenied: process {pid} was not spawned by this session"
                ))
            }
            None => self.pids.lock().clone(),
        };
        if pids.is_empty() {
            return Ok(json!([]));
        }
        let limit = args
            .get("limit")
            .and_then(Value::as_i64)
            .unwrap_or(100)
            .clamp(1, 1000);
        self.kernel
            .store()
            .flush()
            .await
            .map_err(|e| format!("InternalError: flushing the audit log: {e}"))?;
        let actors: Vec<String> = pids.iter().map(|p| format!("pid:{p}")).collect();
        let rows = self
            .kernel
            .store()
            .latest_audit_records(&actors, limit)
            .await
            .map_err(|e| format!("InternalError: reading the audit log: {e}"))?;
        let records: Vec<Value> = rows
            .iter()
            .map(|r| {
                json!({
                    "seq": r.seq,
                    "ts": r.ts,
                    "actor": r.actor,
                    "action": r.action,
                    "target": r.target,
                    "decision": r.decision,
                    "capability_refs": serde_json::from_str::<Value>(&r.capability_refs).unwrap_or(Value::Null),
                    "correlation_id": r.correlation_id,
                    "detail": serde_json::from_str::<Value>(&r.detail).unwrap_or(Value::Null),
                })
            })
            .collect();
        Ok(json!({"records": records}))
    }
}

fn describe_request(request: &HumanRequest) -> String {
    let p = &request.payload;
    match request.kind.as_str() {
        "approval" => {
            let mut text = format!(
                "approve {} ({} on {})",
                p["primitive"].as_str().unwrap_or("?"),
                p["right"].as_str().unwrap_or("?"),
                p["resource"].as_str().unwrap_or("?")
            );
            if !p["context"].is_null() {
                text.push_str(&format!(" with {}", p["context"]));
            }
            text
        }
        "permission" => format!(
            "grant {} on {} because: {}",
            p["rights"],
            p["resource"].as_str().unwrap_or("?"),
            p["reason"].as_str().unwrap_or("")
        ),
        "question" => format!("question: {}", p["question"].as_str().unwrap_or("?")),
        other => format!("{other}: {p}"),
    }
}
