//! The agent loop driven by the scripted model: tool calls through the kernel, denials fed
//! back, budgets, human waits, transcripts and resumption after a restart, and a JIT tool
//! written, registered and called by the model.
// Tests build their fixtures on the host and drive the real binary.
#![allow(clippy::disallowed_methods, clippy::disallowed_types)]

mod common;

use std::time::Duration;

use agent_libos::agent::model::{Role, ScriptedModel, ScriptedReply};
use agent_libos::agent::{resume_agent, run_agent, AgentError, RunLimits, RunOptions, StopReason};
use agent_libos::kernel::{CapabilitySpec, HumanAnswer, JitCall, Kernel, MemCall, Status, Syscall};
use serde_json::{json, Value};

fn grants(list: &[&str]) -> Vec<CapabilitySpec> {
    list.iter()
        .map(|g| CapabilitySpec::parse_grant(g).unwrap())
        .collect()
}

fn opts(goal: &str, grant_list: &[&str]) -> RunOptions {
    RunOptions {
        image: "base".into(),
        goal: goal.into(),
        grants: grants(grant_list),
        ..RunOptions::default()
    }
}

/// The tool messages the model was shown, in order.
fn tool_results(model: &ScriptedModel) -> Vec<String> {
    let seen = model.seen();
    let last = seen.last().expect("the model was called");
    last.messages
        .iter()
        .filter(|m| m.role == Role::Tool)
        .map(|m| m.content.clone().unwrap_or_default())
        .collect()
}

async fn transcript_roles(kernel: &Kernel, pid: i64) -> Vec<String> {
    let helper = kernel
        .spawn_root(agent_libos::kernel::SpawnOptions {
            goal: "inspect".into(),
            grants: grants(&[&format!("namespace:proc/{pid}=read")]),
            ..Default::default()
        })
        .await
        .unwrap();
    let object = kernel
        .syscall(
            helper,
            Syscall::Mem(MemCall::Find {
                namespace: Some(format!("proc/{pid}")),
                name: "agent.transcript".into(),
            }),
        )
        .await
        .unwrap();
    assert_eq!(object["type"], "agent.transcript");
    object["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["role"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test]
async fn scripted_run_uses_tools_and_exits() {
    let h = common::host().await;
    let model = ScriptedModel::new(vec![
        ScriptedReply::call(
            "fs_write_text",
            json!({"path": "notes.txt", "content": "one\ntwo\n"}),
        ),
        ScriptedReply::call("fs_read_text", json!({"path": "notes.txt"})),
        ScriptedReply::call("proc_exit", json!({"payload": {"lines": 2}})),
    ]);
    let outcome = run_agent(
        &h.kernel,
        opts("write notes", &["fs:**=read,write"]),
        &model,
    )
    .await
    .unwrap();
    assert_eq!(outcome.stop, StopReason::Exited);
    assert_eq!(outcome.status, Status::Exited);
    assert_eq!(outcome.exit, Some(json!({"lines": 2})));
    assert_eq!(outcome.steps, 3);
    assert_eq!(
        std::fs::read_to_string(h.workspace().join("notes.txt")).unwrap(),
        "one\ntwo\n"
    );
    let results = tool_results(&model);
    assert_eq!(results[1], "one\ntwo\n");

    // The model was offered the primitives and the tool lifecycle, with the goal in context.
    let first = &model.seen()[0];
    let names: Vec<&str> = first.tools.iter().map(|t| t.name.as_str()).collect();
    for expected in [
        "fs_read_text",
        "mem_create",
        "shell_run",
        "human_ask",
        "proc_exit",
        "tool_propose",
        "tool_validate",
        "tool_register",
    ] {
        assert!(
            names.contains(&expected),
            "{expected} missing from {names:?}"
        );
    }
    assert!(
        !names
            .iter()
            .any(|n| n.contains("respond") || n.contains("grant")),
        "{names:?}"
    );
    assert_eq!(first.messages[0].role, Role::System);
    assert!(first.messages[1]
        .content
        .as_deref()
        .unwrap()
        .contains("write notes"));

    // Every step was persisted; every call was audited as the process.
    let roles = transcript_roles(&h.kernel, outcome.pid).await;
    assert_eq!(
        roles,
        [
            "system",
            "user",
            "assistant",
            "tool",
            "assistant",
            "tool",
            "assistant"
        ]
    );
    h.kernel.store().flush().await.unwrap();
    let actions: Vec<String> = h
        .kernel
        .store()
        .latest_audit_records(&[format!("pid:{}", outcome.pid)], 1000)
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.action)
        .collect();
    for action in ["fs.write_text", "fs.read_text", "proc.exit"] {
        assert!(
            actions.iter().any(|a| a == action),
            "{action} not audited: {actions:?}"
        );
    }
}

#[tokio::test]
async fn a_denial_is_shown_to_the_model_with_resource_and_right() {
    let h = common::host().await;
    let model = ScriptedModel::new(vec![
        ScriptedReply::call("fs_write_text", json!({"path": "out.txt", "content": "x"})),
        ScriptedReply::call("no_such_tool", json!({})),
        ScriptedReply::call("fs_read_text", json!({"path": 7})),
        ScriptedReply::text("I cannot write there."),
    ]);
    let outcome = run_agent(&h.kernel, opts("try", &["fs:**=read"]), &model)
        .await
        .unwrap();
    assert_eq!(outcome.stop, StopReason::Finished);
    assert_eq!(
        outcome.exit,
        Some(json!({"result": "I cannot write there."}))
    );
    let results = tool_results(&model);
    let denial: Value = serde_json::from_str(&results[0]).unwrap();
    assert_eq!(denial["error"]["kind"], "PermissionDenied");
    assert_eq!(denial["error"]["resource"], "fs:out.txt");
    assert_eq!(denial["error"]["right"], "write");
    assert!(
        results[1].contains("NotFound") && results[1].contains("no_such_tool"),
        "{}",
        results[1]
    );
    assert!(results[2].contains("InvalidArgument"), "{}", results[2]);
    assert!(!h.workspace().join("out.txt").exists());
}

#[tokio::test]
async fn the_step_budget_ends_the_run() {
    let h = common::host().await;
    let model = ScriptedModel::new(vec![
        ScriptedReply::call("fs_list", json!({})),
        ScriptedReply::call("fs_list", json!({})),
        ScriptedReply::call("fs_list", json!({})),
    ]);
    let mut o = opts("loop", &["fs:**=read"]);
    o.limits = RunLimits {
        max_steps: 2,
        ..RunLimits::default()
    };
    let outcome = run_agent(&h.kernel, o, &model).await.unwrap();
    assert_eq!(
        outcome.stop,
        StopReason::Budget {
            limit: "steps".into()
        }
    );
    assert_eq!(outcome.status, Status::Exited);
    assert_eq!(outcome.exit.unwrap()["limit"], "steps");
    assert_eq!(model.remaining(), 1);
}

#[tokio::test]
async fn the_token_budget_ends_the_run() {
    let h = common::host().await;
    let mut reply = ScriptedReply::call("fs_list", json!({}));
    reply.usage = Some(agent_libos::agent::model::Usage {
        prompt_tokens: 90,
        completion_tokens: 20,
        total_tokens: 110,
    });
    let model = ScriptedModel::new(vec![reply.clone(), reply]);
    let mut o = opts("loop", &["fs:**=read"]);
    o.limits.max_tokens = Some(100);
    let outcome = run_agent(&h.kernel, o, &model).await.unwrap();
    assert_eq!(
        outcome.stop,
        StopReason::Budget {
            limit: "tokens".into()
        }
    );
    assert_eq!(outcome.usage.total_tokens, 110);
    assert_eq!(outcome.steps, 1);
}

#[tokio::test]
async fn a_model_error_leaves_the_process_resumable_after_a_restart() {
    let h = common::host().await;
    std::fs::write(h.workspace().join("a.txt"), "alpha").unwrap();
    let model = ScriptedModel::new(vec![ScriptedReply::call(
        "fs_read_text",
        json!({"path": "a.txt"}),
    )]);
    let err = run_agent(&h.kernel, opts("read a", &["fs:**=read"]), &model)
        .await
        .unwrap_err();
    assert!(matches!(err, AgentError::Model(_)), "{err}");
    assert!(err.to_string().contains("has 1 replies"), "{err}");
    let pid = h.kernel.processes().last().unwrap().pid;
    assert!(!h.kernel.process(pid).unwrap().status.is_terminal());

    // A new kernel on the same database (as after a host restart) continues the run.
    h.kernel.store().flush().await.unwrap();
    let kernel = h.reopen().await;
    let model = ScriptedModel::new(vec![ScriptedReply::text("alpha it is")]);
    let outcome = resume_agent(&kernel, pid, &model, RunLimits::default())
        .await
        .unwrap();
    assert_eq!(outcome.stop, StopReason::Finished);
    assert_eq!(outcome.status, Status::Exited);
    let seen = model.seen();
    let roles: Vec<Role> = seen[0].messages.iter().map(|m| m.role).collect();
    assert_eq!(
        roles,
        [Role::System, Role::User, Role::Assistant, Role::Tool]
    );
    assert_eq!(seen[0].messages[3].content.as_deref(), Some("alpha"));
}

#[tokio::test]
async fn a_call_needing_a_human_waits_for_the_answer() {
    let h = common::host().await;
    let kernel = h.kernel.clone();
    let answerer = tokio::spawn(async move {
        loop {
            let pending = kernel.human_requests(false).await.unwrap();
            if let Some(r) = pending.first() {
                let pid = r.pid;
                assert_eq!(kernel.process(pid).unwrap().status, Status::WaitingHuman);
                kernel
                    .human_respond(
                        &r.id,
                        HumanAnswer::Answer {
                            text: "blue".into(),
                        },
                        "test",
                    )
                    .await
                    .unwrap();
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    });
    let model = ScriptedModel::new(vec![
        ScriptedReply::call(
            "human_ask",
            json!({"question": "Which colour?", "choices": ["red", "blue"]}),
        ),
        ScriptedReply::call("proc_exit", json!({"payload": "${result.answer}"})),
    ]);
    let outcome = run_agent(&h.kernel, opts("ask", &["human:operator=write"]), &model)
        .await
        .unwrap();
    answerer.await.unwrap();
    assert_eq!(outcome.exit, Some(json!("blue")));
}

#[tokio::test]
async fn resume_runs_calls_the_host_stopped_in_the_middle_of() {
    let h = common::host().await;
    let model = ScriptedModel::new(vec![ScriptedReply::call(
        "human_ask",
        json!({"question": "Proceed?"}),
    )]);
    // The host "dies" while the call waits for a human.
    let run = run_agent(&h.kernel, opts("ask", &["human:operator=write"]), &model);
    assert!(tokio::time::timeout(Duration::from_millis(500), run)
        .await
        .is_err());
    let pid = h.kernel.processes().last().unwrap().pid;
    assert_eq!(h.kernel.process(pid).unwrap().status, Status::WaitingHuman);

    let kernel = h.kernel.clone();
    let answerer = tokio::spawn(async move {
        loop {
            // The question raised before the "crash" is still the one pending: the resumed
            // call waits on it rather than asking again.
            let pending = kernel.human_requests(false).await.unwrap();
            if pending.len() == 1 {
                kernel
                    .human_respond(
                        &pending[0].id,
                        HumanAnswer::Answer { text: "yes".into() },
                        "test",
                    )
                    .await
                    .unwrap();
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    });
    let model = ScriptedModel::new(vec![ScriptedReply::text("${result.answer}")]);
    let outcome = resume_agent(&h.kernel, pid, &model, RunLimits::default())
        .await
        .unwrap();
    answerer.await.unwrap();
    assert_eq!(outcome.stop, StopReason::Finished);
    let seen = model.seen();
    let last = seen[0].messages.last().unwrap();
    assert_eq!(last.role, Role::Tool);
    assert!(last.content.as_deref().unwrap().contains("yes"));
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
async fn the_model_writes_registers_and_calls_a_tool() {
    let h = common::host().await;
    if !lifecycle_available(&h.kernel).await {
        return;
    }
    std::fs::write(h.workspace().join("poem.txt"), "roses\nviolets\nsugar").unwrap();
    let model = ScriptedModel::new(vec![
        ScriptedReply::call("tool_propose", json!({"source": common::COUNT_LINES})),
        ScriptedReply::call("tool_validate", json!({"id": "${result.id}"})),
        ScriptedReply::call("tool_register", json!({"id": "${result.id}"})),
        ScriptedReply::call("count_lines", json!({"path": "poem.txt"})),
        ScriptedReply::call("proc_exit", json!({"payload": "${result}"})),
    ]);
    let outcome = run_agent(
        &h.kernel,
        opts("count lines", &["fs:**=read", "tool:count_lines=create"]),
        &model,
    )
    .await
    .unwrap();
    let results = tool_results(&model);
    assert_eq!(
        outcome.stop,
        StopReason::Exited,
        "tool results: {results:#?}"
    );
    assert_eq!(
        outcome.exit,
        Some(json!({"lines": 3})),
        "tool results: {results:#?}"
    );
    let validated: Value = serde_json::from_str(&results[1]).unwrap();
    assert_eq!(validated["ok"], true, "{validated}");
    // After registration the tool was offered to the model under its own name.
    let seen = model.seen();
    assert!(seen[3].tools.iter().any(|t| t.name == "count_lines"));
    assert!(!seen[0].tools.iter().any(|t| t.name == "count_lines"));
}

#[tokio::test]
async fn a_panic_while_serving_a_model_call_fails_that_call_and_the_run_goes_on() {
    let h = common::host_with_panicking_clock().await;
    let model = ScriptedModel::new(vec![
        ScriptedReply::call("clock_sleep", json!({"ms": common::PANIC_SLEEP_MS})),
        ScriptedReply::call("clock_sleep", json!({"ms": 1})),
        ScriptedReply::call("proc_exit", json!({"payload": {"done": true}})),
    ]);
    let outcome = run_agent(&h.kernel, opts("sleep", &[]), &model)
        .await
        .unwrap();
    assert_eq!(outcome.stop, StopReason::Exited);
    assert_eq!(outcome.exit, Some(json!({"done": true})));
    let results = tool_results(&model);
    assert!(
        results[0].contains("Internal") && results[0].contains("injected provider bug"),
        "{results:?}"
    );
    assert!(!results[1].contains("Internal"), "{results:?}");
}

/// A tool whose path depends on a count it keeps in a global between calls.
const SHIFTY: &str = r#"export const tool = {
  name: "shifty",
  description: "Appends to log.txt; its text depends on whether it was called before.",
  input: { type: "object" },
  output: {},
};

let calls = 0;

export default async function run(args: any, libos: any) {
  calls += 1;
  if (args.warmup) return { calls };
  const warm = calls > 1;
  await libos.fs.appendText("log.txt", warm ? "warm\n" : "cold\n");
  if (warm) await libos.human.ask("continue?");
  return { warm };
}
"#;

#[tokio::test]
async fn run_resume_stops_on_a_call_whose_replay_left_its_journal_until_a_human_decides() {
    let h = common::host().await;
    let mut config = h.config();
    config.lease_ttl = Duration::ZERO;
    let kernel = Kernel::open(config).await.unwrap();
    let model = ScriptedModel::new(vec![
        ScriptedReply::call("tool_propose", json!({"source": SHIFTY})),
        ScriptedReply::call("tool_validate", json!({"id": "${result.id}"})),
        ScriptedReply::call("tool_register", json!({"id": "${result.id}"})),
        ScriptedReply::call("shifty", json!({"warmup": true})),
        ScriptedReply::call("shifty", json!({})),
    ]);
    let grant_list = ["tool:shifty=create", "fs:**=write", "human:operator=write"];
    // The host "dies" while the second call waits for its question.
    tokio::select! {
        ended = run_agent(&kernel, opts("shift", &grant_list), &model) => {
            panic!("the run ended: {ended:?}")
        }
        _ = common::wait_pending(&kernel) => {}
    }
    let log = || std::fs::read_to_string(h.workspace().join("log.txt")).unwrap_or_default();
    assert_eq!(log(), "warm\n");
    let pid = kernel.processes().last().unwrap().pid;
    // Resumed, the call replays in a fresh isolate, takes the other path and leaves its
    // journal: the run stops on a human request and the model is told nothing.
    let model = ScriptedModel::new(vec![ScriptedReply::text("done")]);
    let err = resume_agent(&kernel, pid, &model, RunLimits::default())
        .await
        .unwrap_err();
    let AgentError::Kernel(agent_libos::kernel::SyscallError::NonDeterminism {
        request_id: Some(request),
        ..
    }) = err
    else {
        panic!("expected NonDeterminism on a request, got {err:?}")
    };
    assert!(model.seen().is_empty(), "the model was not called");
    assert_eq!(log(), "warm\n");
    assert!(!kernel.process(pid).unwrap().status.is_terminal());
    // Approved: the call runs again from the start (the human accepted the repeat), and
    // the run goes on with its result.
    kernel
        .human_respond(&request, HumanAnswer::ApproveOnce, "alice")
        .await
        .unwrap();
    let outcome = resume_agent(&kernel, pid, &model, RunLimits::default())
        .await
        .unwrap();
    assert_eq!(outcome.stop, StopReason::Finished);
    assert_eq!(log(), "warm\ncold\n");
    let results = tool_results(&model);
    assert!(
        results.last().unwrap().contains("\"warm\":false"),
        "{results:?}"
    );
}
