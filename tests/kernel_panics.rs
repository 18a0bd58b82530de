//! A panic while serving one call fails that call with `Internal`; the host keeps serving.
//! The panic is injected by a provider (`common::PanickingClock`) and reached directly, from
//! a tool's syscall under the engine, and from a declared test's mocked syscall path.
// Tests build their fixtures on the host and drive the real binary.
#![allow(clippy::disallowed_methods, clippy::disallowed_types)]

mod common;

use agent_libos::kernel::{ClockCall, Syscall, SyscallError};
use common::{call, install, PANIC_SLEEP_MS};
use serde_json::json;

fn assert_internal_panic(err: &SyscallError) {
    let SyscallError::Internal(message) = err else {
        panic!("expected Internal, got {err:?}");
    };
    assert!(
        message.contains("injected provider bug") && message.contains("clock.sleep"),
        "{message}"
    );
}

#[tokio::test]
async fn a_panicking_provider_fails_only_its_call_and_is_audited() {
    let h = common::host_with_panicking_clock().await;
    let pid = h.spawn(&[]).await;
    let err = h
        .kernel
        .syscall(pid, Syscall::Clock(ClockCall::Sleep { ms: PANIC_SLEEP_MS }))
        .await
        .unwrap_err();
    assert_internal_panic(&err);
    // The same process, and the same primitive, keep working.
    h.kernel
        .syscall(pid, Syscall::Clock(ClockCall::Sleep { ms: 1 }))
        .await
        .unwrap();
    h.kernel
        .syscall(pid, Syscall::Clock(ClockCall::Now))
        .await
        .unwrap();
    // The failed call has its audit record, and the chain is whole.
    assert!(h.kernel.verify_audit().await.unwrap().is_ok());
    let rows = h
        .kernel
        .store()
        .latest_audit_records(&[format!("pid:{pid}")], 10)
        .await
        .unwrap();
    assert!(
        rows.iter().any(|r| r.action == "clock.sleep"
            && r.decision == "error"
            && r.detail.contains("injected provider bug")),
        "{rows:?}"
    );
}

#[tokio::test]
async fn a_panic_under_a_tools_syscall_fails_that_call_and_the_next_call_works() {
    let h = common::host_with_panicking_clock().await;
    let pid = h.spawn(&["tool:sleeper=create"]).await;
    let name = install(&h.kernel, pid, common::SLEEPER).await.unwrap();
    let err = call(&h.kernel, pid, &name, json!({"ms": PANIC_SLEEP_MS}))
        .await
        .unwrap_err();
    assert_internal_panic(&err);
    // Same process, same isolate, same tool: the host is still serving.
    let ok = call(&h.kernel, pid, &name, json!({"ms": 1})).await.unwrap();
    assert_eq!(ok, json!({"slept": 1}));
    // Another process is unaffected too.
    let other = h.spawn(&["tool:sleeper=create"]).await;
    let name = install(&h.kernel, other, common::SLEEPER).await.unwrap();
    assert_eq!(
        call(&h.kernel, other, &name, json!({"ms": 2}))
            .await
            .unwrap(),
        json!({"slept": 2})
    );
}

#[tokio::test]
async fn a_tool_that_catches_the_internal_error_goes_on() {
    let h = common::host_with_panicking_clock().await;
    let pid = h.spawn(&["tool:survivor=create"]).await;
    let source = r#"export const tool = {
  name: "survivor",
  description: "catches the host's failure and carries on",
  input: { type: "object", properties: {} },
  output: { type: "object", properties: { kind: { type: "string" }, now: { type: "integer" } }, required: ["kind", "now"] },
};
export default async function run(args: any, libos: any) {
  let kind = "none";
  try { await libos.clock.sleep(13); } catch (e: any) { kind = e.kind; }
  return { kind, now: await libos.clock.now() };
}
"#;
    let name = install(&h.kernel, pid, source).await.unwrap();
    let out = call(&h.kernel, pid, &name, json!({})).await.unwrap();
    assert_eq!(out["kind"], "InternalError", "{out}");
    assert!(out["now"].as_i64().unwrap() > 0);
}
