//! The MCP server with the official `rmcp` client over an in-memory duplex: initialize, list
//! tools, spawn with operator grants only, see a denial, read the session's own audit, and
//! the refusal of every way a client might answer its own pending request.
// Tests build their fixtures on the host and drive the real binary.
#![allow(clippy::disallowed_methods, clippy::disallowed_types)]

mod common;

use std::time::Duration;

use agent_libos::kernel::{
    CapabilitySpec, HumanAnswer, JitCall, Kernel, MemCall, ObjectSpec, Status, Syscall,
};
use agent_libos::mcp::{serve_mcp, McpConfig, TOOL_NAMES};
use rmcp::model::{
    CallToolRequestParams, CallToolResult, ClientCapabilities, ClientConfig, ElicitRequestParams,
    ElicitResult, ElicitationAction, Implementation, ProtocolVersion,
};
use rmcp::service::{RequestContext, RunningService};
use rmcp::{ClientHandler, ErrorData, RoleClient, ServiceExt};
use serde_json::{json, Value};

fn grants(list: &[&str]) -> Vec<CapabilitySpec> {
    list.iter()
        .map(|g| CapabilitySpec::parse_grant(g).unwrap())
        .collect()
}

async fn connect<C: ClientHandler>(
    kernel: Kernel,
    config: McpConfig,
    client: C,
) -> RunningService<RoleClient, C> {
    let (server_io, client_io) = tokio::io::duplex(1 << 16);
    tokio::spawn(async move {
        if let Err(e) = serve_mcp(kernel, config, server_io).await {
            eprintln!("server: {e}");
        }
    });
    client.serve(client_io).await.expect("initialize")
}

async fn call<C: ClientHandler>(
    client: &RunningService<RoleClient, C>,
    tool: &str,
    args: Value,
) -> CallToolResult {
    let Value::Object(args) = args else {
        panic!("arguments must be an object")
    };
    client
        .call_tool(CallToolRequestParams::new(tool.to_string()).with_arguments(args))
        .await
        .expect("tools/call")
}

fn text(result: &CallToolResult) -> String {
    result
        .content
        .iter()
        .filter_map(|c| c.as_text().map(|t| t.text.clone()))
        .collect::<Vec<_>>()
        .join("\n")
}

fn value(result: &CallToolResult) -> Value {
    assert_ne!(result.is_error, Some(true), "tool failed: {}", text(result));
    serde_json::from_str(&text(result)).expect("JSON result")
}

/// An object owned by an operator-spawned helper process, and the helper's pid.
async fn helper_object(h: &common::TestHost) -> (i64, String) {
    let helper = h.spawn(&[]).await;
    let created = h
        .kernel
        .syscall(
            helper,
            Syscall::Mem(MemCall::Create(ObjectSpec {
                object_type: "note".into(),
                payload: json!("the helper's note"),
                title: Some("note".into()),
                ..ObjectSpec::default()
            })),
        )
        .await
        .unwrap();
    (helper, created["id"].as_str().unwrap().to_string())
}

#[tokio::test]
async fn mcp_round_trip_spawns_with_operator_grants_and_reports_denials() {
    let h = common::host().await;
    let (helper, object) = helper_object(&h).await;
    let config = McpConfig {
        grants: grants(&["fs:docs/**=read"]),
        ..McpConfig::default()
    };
    let client = connect(h.kernel.clone(), config, ()).await;

    let info = client.peer_info().expect("server info");
    assert_eq!(info.server_info.as_ref().unwrap().name, "agent-libos");
    let tools = client.list_all_tools().await.unwrap();
    let names: Vec<String> = tools.iter().map(|t| t.name.to_string()).collect();
    assert_eq!(names, TOOL_NAMES);
    for forbidden in ["approve", "respond", "grant", "human"] {
        assert!(!names.iter().any(|n| n.contains(forbidden)), "{names:?}");
    }

    // The client cannot widen its grants or pick an image.
    let refused = call(
        &client,
        "spawn_process",
        json!({"goal": "g", "grants": ["fs:**=write"]}),
    )
    .await;
    assert_eq!(refused.is_error, Some(true));
    assert!(
        text(&refused).contains("set by the operator"),
        "{}",
        text(&refused)
    );
    let spawned = value(&call(&client, "spawn_process", json!({"goal": "read docs"})).await);
    let pid = spawned["pid"].as_i64().unwrap();
    let caps = h.kernel.capabilities(pid);
    let granted: Vec<&str> = caps
        .iter()
        .map(|c| c.resource.as_str())
        .filter(|r| !r.starts_with(&format!("namespace:proc/{pid}")))
        .collect();
    assert_eq!(granted, ["fs:docs/**"]);

    // A denied syscall is a tool error naming resource and right.
    let denied = call(&client, "read_object", json!({"id": object})).await;
    assert_eq!(denied.is_error, Some(true));
    let message = text(&denied);
    assert!(message.starts_with("PermissionDenied"), "{message}");
    assert!(
        message.contains(&format!("resource: object:{object}")),
        "{message}"
    );
    assert!(message.contains("right: read"), "{message}");

    // Processes of other sessions are off limits.
    let other = call(&client, "read_object", json!({"id": object, "pid": helper})).await;
    assert_eq!(other.is_error, Some(true));
    assert!(text(&other).contains("not spawned by this session"));
    let other = call(&client, "read_audit", json!({"pid": helper})).await;
    assert_eq!(other.is_error, Some(true));

    // The session sees its own audit records only, including the denial.
    let audit = value(&call(&client, "read_audit", json!({})).await);
    let records = audit["records"].as_array().unwrap();
    assert!(!records.is_empty());
    assert!(
        records.iter().all(|r| r["actor"] == format!("pid:{pid}")),
        "{records:#?}"
    );
    assert!(records
        .iter()
        .any(|r| r["action"] == "mem.read" && r["decision"] == "deny"));

    let listed = value(&call(&client, "list_processes", json!({})).await);
    assert_eq!(listed[0]["pid"], pid);
    client.cancel().await.unwrap();
}

#[tokio::test]
async fn a_client_cannot_approve_its_own_pending_request() {
    let h = common::host().await;
    let (helper, object) = helper_object(&h).await;
    // Reading the helper's namespace needs a human's approval each time.
    let config = McpConfig {
        grants: grants(&[&format!("namespace:proc/{helper}=read:ask")]),
        elicitation: true,
        ..McpConfig::default()
    };
    // A client without elicitation support.
    let client = connect(h.kernel.clone(), config, ()).await;
    let pid = value(&call(&client, "spawn_process", json!({"goal": "read"})).await)["pid"]
        .as_i64()
        .unwrap();

    let parked = call(&client, "read_object", json!({"id": object})).await;
    assert_eq!(parked.is_error, Some(true));
    let message = text(&parked);
    assert!(message.starts_with("HumanRequired"), "{message}");
    let pending = h.kernel.human_requests(false).await.unwrap();
    assert_eq!(pending.len(), 1);
    let request = pending[0].id.clone();
    assert!(
        message.contains(&format!("agent-libos human approve {request}")),
        "{message}"
    );
    let call_id = message
        .split("\"call_id\": \"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .expect("call id in the message")
        .to_string();
    assert_eq!(h.kernel.process(pid).unwrap().status, Status::WaitingHuman);

    // Every way the client might try to answer it is refused.
    let attempts = [
        (
            "human_respond",
            json!({"id": request, "answer": "approve_once"}),
        ),
        ("approve", json!({"id": request})),
        ("human_approve", json!({"request_id": request})),
        (
            "call_tool",
            json!({"name": "human_respond", "args": {"id": request, "answer": {"answer": "approve_always"}}}),
        ),
        (
            "call_tool",
            json!({"name": "human.respond", "args": {"primitive": "human.respond", "id": request}}),
        ),
        (
            "call_tool",
            json!({"name": "approve", "args": {"id": request}}),
        ),
    ];
    for (tool, args) in attempts {
        let result = call(&client, tool, args.clone()).await;
        assert_eq!(result.is_error, Some(true), "{tool} {args} was not refused");
    }
    let still = h.kernel.human_request(&request).await.unwrap().unwrap();
    assert_eq!(still.status, agent_libos::kernel::RequestStatus::Pending);
    assert_eq!(h.kernel.process(pid).unwrap().status, Status::WaitingHuman);

    // Waiting without an answer times out and keeps the call parked.
    let waiting = call(
        &client,
        "await_call",
        json!({"call_id": call_id, "timeout_ms": 50}),
    )
    .await;
    assert_eq!(waiting.is_error, Some(true));
    assert!(text(&waiting).starts_with("Timeout"), "{}", text(&waiting));

    // The operator answers outside MCP; the parked call completes.
    h.kernel
        .human_respond(&request, HumanAnswer::ApproveOnce, "operator")
        .await
        .unwrap();
    let done = value(&call(&client, "await_call", json!({"call_id": call_id})).await);
    assert_eq!(done["payload"], "the helper's note");
    let answered = h.kernel.human_request(&request).await.unwrap().unwrap();
    assert_eq!(answered.answered_by.as_deref(), Some("operator"));
    client.cancel().await.unwrap();
}

/// A client that shows elicitations to its "user", who approves.
#[derive(Clone)]
struct ApprovingUser {
    seen: std::sync::Arc<parking_lot::Mutex<Vec<String>>>,
}

impl ClientHandler for ApprovingUser {
    fn get_info(&self) -> ClientConfig {
        ClientConfig::new(
            ClientCapabilities::builder().enable_elicitation().build(),
            Implementation::new("approving-user", "1.0.0"),
        )
        .with_protocol_version(ProtocolVersion::V_2025_06_18)
    }

    async fn create_elicitation(
        &self,
        request: ElicitRequestParams,
        _context: RequestContext<RoleClient>,
    ) -> Result<ElicitResult, ErrorData> {
        if let ElicitRequestParams::FormElicitationParams { message, .. } = &request {
            self.seen.lock().push(message.clone());
        }
        let mut result = ElicitResult::new(ElicitationAction::Accept);
        result.content = Some(json!({"decision": "approve_once"}));
        Ok(result)
    }
}

#[tokio::test]
async fn a_pending_request_is_shown_to_the_user_by_elicitation() {
    let h = common::host().await;
    let (helper, object) = helper_object(&h).await;
    let config = McpConfig {
        grants: grants(&[&format!("namespace:proc/{helper}=read:ask")]),
        elicitation: true,
        ..McpConfig::default()
    };
    let user = ApprovingUser {
        seen: Default::default(),
    };
    let client = connect(h.kernel.clone(), config, user.clone()).await;
    let read = tokio::time::timeout(
        Duration::from_secs(10),
        call(&client, "read_object", json!({"id": object})),
    )
    .await
    .expect("the call completes after the elicited approval");
    assert_eq!(value(&read)["payload"], "the helper's note");
    let shown = user.seen.lock().clone();
    assert_eq!(shown.len(), 1);
    assert!(
        shown[0].contains("mem.read") && shown[0].contains(&object),
        "{shown:?}"
    );
    let requests = h.kernel.human_requests(true).await.unwrap();
    assert_eq!(requests[0].answered_by.as_deref(), Some("mcp-elicitation"));
    client.cancel().await.unwrap();
}

/// Whether the kernel serves the JIT tool lifecycle yet (it is landing on main separately);
/// until it does, the tests that need it report themselves skipped.
async fn lifecycle_available(kernel: &agent_libos::kernel::Kernel) -> bool {
    let pid = kernel
        .spawn_root(agent_libos::kernel::SpawnOptions {
            goal: "probe".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    match kernel
        .syscall(pid, agent_libos::kernel::Syscall::Tool(JitCall::List))
        .await
    {
        Err(e) if e.to_string().contains("JIT tool host") => {
            eprintln!("SKIPPED: the kernel has no JIT tool lifecycle yet ({e})");
            false
        }
        _ => true,
    }
}

/// Needs the kernel's JIT tool lifecycle (`tool.propose/validate/register/list/call`).
#[tokio::test]
async fn mcp_registers_and_calls_a_typescript_tool() {
    let h = common::host().await;
    if !lifecycle_available(&h.kernel).await {
        return;
    }
    std::fs::create_dir_all(h.workspace().join("docs")).unwrap();
    std::fs::write(h.workspace().join("docs/poem.txt"), "roses\nviolets\nsugar").unwrap();
    std::fs::write(h.workspace().join("secret.txt"), "s").unwrap();
    let config = McpConfig {
        grants: grants(&["fs:docs/**=read", "tool:count_lines=create"]),
        ..McpConfig::default()
    };
    let client = connect(h.kernel.clone(), config, ()).await;
    let proposed = value(
        &call(
            &client,
            "propose_tool",
            json!({"source": common::COUNT_LINES}),
        )
        .await,
    );
    let id = proposed["id"].as_str().unwrap().to_string();
    let validated = value(&call(&client, "validate_tool", json!({"id": id})).await);
    assert_eq!(validated["ok"], true, "{validated}");
    let registered = value(&call(&client, "register_tool", json!({"id": id})).await);
    assert_eq!(registered["name"], "count_lines");
    let listed = value(&call(&client, "list_tools", json!({})).await);
    assert!(listed
        .as_array()
        .unwrap()
        .iter()
        .any(|t| t["name"] == "count_lines"));
    let counted = value(
        &call(
            &client,
            "call_tool",
            json!({"name": "count_lines", "args": {"path": "docs/poem.txt"}}),
        )
        .await,
    );
    assert_eq!(counted, json!({"lines": 3}));
    let denied = call(
        &client,
        "call_tool",
        json!({"name": "count_lines", "args": {"path": "secret.txt"}}),
    )
    .await;
    assert_eq!(denied.is_error, Some(true));
    let message = text(&denied);
    assert!(
        message.contains("PermissionDenied") && message.contains("fs:secret.txt"),
        "{message}"
    );
    client.cancel().await.unwrap();
}

/// A kernel whose isolate host has one worker thread for processes: every process of a
/// session lands on the same thread.
async fn one_worker_host() -> common::TestHost {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir_all(dir.path().join("ws")).unwrap();
    let mut config =
        agent_libos::kernel::KernelConfig::new(dir.path().join("state.db"), dir.path().join("ws"));
    config.isolates.threads = 1;
    config.isolates.pool_size = 1;
    let kernel = Kernel::open(config).await.expect("open kernel");
    common::TestHost { dir, kernel }
}

fn small_tool(name: &str, tests: &str, body: &str) -> String {
    format!(
        "export const tool = {{ name: \"{name}\", description: \"d\", input: {{ type: \"object\" }}, output: {{}}, tests: [{tests}] }};\n\
         export default async function run(args: any, libos: any) {{ {body} }}\n"
    )
}

/// Proposes, validates and registers `source` as process `pid` of the session.
async fn install_as<C: ClientHandler>(
    client: &RunningService<RoleClient, C>,
    pid: i64,
    source: &str,
) {
    let proposed = value(
        &call(
            client,
            "propose_tool",
            json!({"pid": pid, "source": source}),
        )
        .await,
    );
    let id = proposed["id"].as_str().unwrap().to_string();
    let validated = value(&call(client, "validate_tool", json!({"pid": pid, "id": id})).await);
    assert_eq!(validated["ok"], true, "{validated}");
    value(&call(client, "register_tool", json!({"pid": pid, "id": id})).await);
}

async fn spawn_two<C: ClientHandler>(client: &RunningService<RoleClient, C>) -> (i64, i64) {
    let a = value(&call(client, "spawn_process", json!({"goal": "a"})).await)["pid"]
        .as_i64()
        .unwrap();
    let b = value(&call(client, "spawn_process", json!({"goal": "b"})).await)["pid"]
        .as_i64()
        .unwrap();
    (a, b)
}

/// Calls `echo` of process `pid` three times; each must answer within 5 s (a bound loose
/// enough for a loaded machine; a stalled worker would hold it forever).
async fn keeps_answering<C: ClientHandler>(client: &RunningService<RoleClient, C>, pid: i64) {
    for n in 0..3 {
        let started = std::time::Instant::now();
        let out = value(
            &call(
                client,
                "call_tool",
                json!({"pid": pid, "name": "echo", "args": {"n": n}}),
            )
            .await,
        );
        assert_eq!(out, json!({"n": n}));
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "the second process waited {:?}",
            started.elapsed()
        );
    }
}

const ECHO_BODY: &str = "return { n: args.n };";

#[tokio::test]
async fn a_stuck_call_does_not_stall_another_process_through_mcp() {
    let h = one_worker_host().await;
    let config = McpConfig {
        grants: grants(&["tool:*=create"]),
        ..McpConfig::default()
    };
    let client = connect(h.kernel.clone(), config, ()).await;
    let (a, b) = spawn_two(&client).await;
    install_as(
        &client,
        a,
        &small_tool("stuck", "", "libos.clock.sleep(30000); for (;;) {}"),
    )
    .await;
    install_as(&client, b, &small_tool("echo", "", ECHO_BODY)).await;
    let stuck = call(&client, "call_tool", json!({"pid": a, "name": "stuck"}));
    let other = async {
        tokio::time::sleep(Duration::from_millis(200)).await;
        keeps_answering(&client, b).await;
    };
    let (stuck, ()) = tokio::join!(stuck, other);
    assert_eq!(stuck.is_error, Some(true));
    let message = text(&stuck);
    assert!(message.contains("cpu_time"), "{message}");
    client.cancel().await.unwrap();
}

#[tokio::test]
async fn atomics_cannot_block_a_worker_through_mcp() {
    let h = one_worker_host().await;
    let config = McpConfig {
        grants: grants(&["tool:*=create"]),
        ..McpConfig::default()
    };
    let client = connect(h.kernel.clone(), config, ()).await;
    let (a, b) = spawn_two(&client).await;
    let wait = "const g: any = globalThis; g.Atomics.wait(new Int32Array(new g.SharedArrayBuffer(4)), 0, 0); return {};";
    install_as(&client, a, &small_tool("waits", "", wait)).await;
    install_as(&client, b, &small_tool("echo", "", ECHO_BODY)).await;
    // A declared test that waits cannot hang the validator either.
    let tested = small_tool(
        "waits_tested",
        "{ name: \"waits\", args: {}, expect: {} }",
        wait,
    );
    let proposed = value(&call(&client, "propose_tool", json!({"pid": a, "source": tested})).await);
    let started = std::time::Instant::now();
    let validated = value(
        &call(
            &client,
            "validate_tool",
            json!({"pid": a, "id": proposed["id"]}),
        )
        .await,
    );
    assert_eq!(validated["ok"], false, "{validated}");
    assert!(started.elapsed() < Duration::from_secs(5));
    let waited = call(&client, "call_tool", json!({"pid": a, "name": "waits"})).await;
    assert_eq!(waited.is_error, Some(true));
    assert!(text(&waited).contains("TypeError"), "{}", text(&waited));
    keeps_answering(&client, b).await;
    client.cancel().await.unwrap();
}

#[tokio::test]
async fn many_runtime_creations_through_mcp_do_not_break_the_host() {
    // Each validation runs its declared test in a fresh runtime: 450 of them pass a worker
    // thread's lifetime budget more than twice, and every one succeeds.
    let h = one_worker_host().await;
    let config = McpConfig {
        grants: grants(&["tool:*=create"]),
        budget: Some(agent_libos::kernel::Budget {
            tool_calls: 10_000,
            ..Default::default()
        }),
        ..McpConfig::default()
    };
    let client = connect(h.kernel.clone(), config, ()).await;
    let (a, b) = spawn_two(&client).await;
    install_as(&client, b, &small_tool("echo", "", ECHO_BODY)).await;
    let source = small_tool(
        "tested",
        "{ name: \"answers\", args: { n: 2 }, expect: { n: 2 } }",
        ECHO_BODY,
    );
    let proposed = value(&call(&client, "propose_tool", json!({"pid": a, "source": source})).await);
    for i in 0..450 {
        let validated = value(
            &call(
                &client,
                "validate_tool",
                json!({"pid": a, "id": proposed["id"]}),
            )
            .await,
        );
        assert_eq!(validated["ok"], true, "validation {i}: {validated}");
    }
    keeps_answering(&client, b).await;
    client.cancel().await.unwrap();
}

#[tokio::test]
async fn elicitation_is_off_by_default() {
    let h = common::host().await;
    let (helper, object) = helper_object(&h).await;
    let config = McpConfig {
        grants: grants(&[&format!("namespace:proc/{helper}=read:ask")]),
        ..McpConfig::default()
    };
    // A client that would approve anything it is shown.
    let user = ApprovingUser {
        seen: Default::default(),
    };
    let client = connect(h.kernel.clone(), config, user.clone()).await;
    let parked = call(&client, "read_object", json!({"id": object})).await;
    assert_eq!(parked.is_error, Some(true));
    assert!(
        text(&parked).starts_with("HumanRequired"),
        "{}",
        text(&parked)
    );
    assert!(user.seen.lock().is_empty(), "the client was asked");
    let pending = h.kernel.human_requests(false).await.unwrap();
    assert_eq!(pending.len(), 1);
    assert_eq!(
        pending[0].status,
        agent_libos::kernel::RequestStatus::Pending
    );
    client.cancel().await.unwrap();
}

/// A tool that asks a human for whatever permission its arguments name.
const ASK_TOOL: &str = r#"export const tool = {
  name: "ask_for",
  description: "Asks a human for a permission",
  input: { type: "object", properties: { resource: { type: "string" }, right: { type: "string" } },
           required: ["resource", "right"] },
  output: {},
};

export default async function run(args: { resource: string, right: string }, libos: any) {
  await libos.human.requestPermission(args.resource, args.right, "I need it");
  return {};
}
"#;

async fn register_ask_tool<C: ClientHandler>(client: &RunningService<RoleClient, C>) {
    let proposed = value(&call(client, "propose_tool", json!({"source": ASK_TOOL})).await);
    let id = proposed["id"].as_str().unwrap().to_string();
    let validated = value(&call(client, "validate_tool", json!({"id": id})).await);
    assert_eq!(validated["ok"], true, "{validated}");
    value(&call(client, "register_tool", json!({"id": id})).await);
}

#[tokio::test]
async fn a_client_cannot_request_beyond_the_operator_ceiling() {
    let h = common::host().await;
    let config = McpConfig {
        grants: grants(&["tool:ask_for=create"]),
        requestable: grants(&["fs:docs/**=read"]),
        // Even a client that approves everything it is shown.
        elicitation: true,
        ..McpConfig::default()
    };
    let user = ApprovingUser {
        seen: Default::default(),
    };
    let client = connect(h.kernel.clone(), config, user.clone()).await;
    let pid = value(&call(&client, "spawn_process", json!({"goal": "ask"})).await)["pid"]
        .as_i64()
        .unwrap();
    register_ask_tool(&client).await;
    for (resource, right) in [
        ("fs:**", "admin"),
        ("fs:docs/**", "write"),
        ("fs:src/a.rs", "read"),
    ] {
        let refused = call(
            &client,
            "call_tool",
            json!({"name": "ask_for", "args": {"resource": resource, "right": right}}),
        )
        .await;
        assert_eq!(refused.is_error, Some(true));
        let message = text(&refused);
        assert!(message.contains("PermissionDenied"), "{message}");
        assert!(message.contains("requestable"), "{message}");
    }
    assert!(user.seen.lock().is_empty(), "nothing was shown");
    assert!(h.kernel.human_requests(true).await.unwrap().is_empty());
    assert!(h
        .kernel
        .capabilities(pid)
        .iter()
        .all(|c| !c.resource.starts_with("fs:")));
    // Within the ceiling, the request reaches the human.
    let asked = call(
        &client,
        "call_tool",
        json!({"name": "ask_for", "args": {"resource": "fs:docs/a.md", "right": "read"}}),
    )
    .await;
    assert_ne!(asked.is_error, Some(true), "{}", text(&asked));
    assert_eq!(user.seen.lock().len(), 1);
    client.cancel().await.unwrap();
}

#[tokio::test]
async fn a_parked_call_names_its_own_request() {
    let h = common::host().await;
    let helper = h.spawn(&[]).await;
    let mut objects = Vec::new();
    for n in ["a", "b"] {
        let created = h
            .kernel
            .syscall(
                helper,
                Syscall::Mem(MemCall::Create(ObjectSpec {
                    object_type: "note".into(),
                    payload: json!(n),
                    ..ObjectSpec::default()
                })),
            )
            .await
            .unwrap();
        objects.push(created["id"].as_str().unwrap().to_string());
    }
    let config = McpConfig {
        grants: grants(&[&format!("namespace:proc/{helper}=read:ask")]),
        ..McpConfig::default()
    };
    let client = connect(h.kernel.clone(), config, ()).await;
    let request_of = |message: &str| -> (String, String) {
        let wire: Value = serde_json::from_str(message.lines().last().unwrap()).unwrap();
        (
            wire["request_id"].as_str().unwrap().to_string(),
            wire["call_id"].as_str().unwrap().to_string(),
        )
    };
    // The second call is parked while the first one's request is still pending.
    let first = text(&call(&client, "read_object", json!({"id": objects[1]})).await);
    let (first_request, _) = request_of(&first);
    let second = text(&call(&client, "read_object", json!({"id": objects[0]})).await);
    let (second_request, second_call) = request_of(&second);
    assert_ne!(second_request, first_request, "{second}");
    let request = h
        .kernel
        .human_request(&second_request)
        .await
        .unwrap()
        .unwrap();
    // Bound to its own call (the binding covers the call's arguments), not the first one's.
    let first = h
        .kernel
        .human_request(&first_request)
        .await
        .unwrap()
        .unwrap();
    assert_ne!(request.args_hash, first.args_hash);
    // Approving it completes exactly that call.
    h.kernel
        .human_respond(&second_request, HumanAnswer::ApproveOnce, "operator")
        .await
        .unwrap();
    let done = value(&call(&client, "await_call", json!({"call_id": second_call})).await);
    assert_eq!(done["payload"], "a");
    client.cancel().await.unwrap();
}

#[tokio::test]
async fn a_panic_while_serving_an_mcp_call_fails_that_call_and_the_session_goes_on() {
    let h = common::host_with_panicking_clock().await;
    let config = McpConfig {
        grants: grants(&["tool:sleeper=create"]),
        ..McpConfig::default()
    };
    let client = connect(h.kernel.clone(), config, ()).await;
    let proposed = value(&call(&client, "propose_tool", json!({"source": common::SLEEPER})).await);
    let id = proposed["id"].as_str().unwrap().to_string();
    let validated = value(&call(&client, "validate_tool", json!({"id": id})).await);
    assert_eq!(validated["ok"], true, "{validated}");
    value(&call(&client, "register_tool", json!({"id": id})).await);
    let failed = call(
        &client,
        "call_tool",
        json!({"name": "sleeper", "args": {"ms": common::PANIC_SLEEP_MS}}),
    )
    .await;
    assert_eq!(failed.is_error, Some(true));
    assert!(text(&failed).contains("Internal"), "{}", text(&failed));
    let slept = value(
        &call(
            &client,
            "call_tool",
            json!({"name": "sleeper", "args": {"ms": 1}}),
        )
        .await,
    );
    assert_eq!(slept, json!({"slept": 1}));
    client.cancel().await.unwrap();
}
