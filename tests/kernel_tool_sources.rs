//! What a tool's source can do to the kernel before it ever runs: a source nested deep
//! enough to overflow a parser is refused, not fatal; a candidate's hash is computed, never
//! read from data; and of two concurrent registrations of one name, only the committed
//! one's code ever runs, and both attempts are audited.
// Tests build their fixtures on the host and drive the real binary.
#![allow(clippy::disallowed_methods, clippy::disallowed_types)]

mod common;

use agent_libos::kernel::{JitCall, Kernel, MemCall, ObjectSpec, Pid, Syscall, SyscallError};
use serde_json::{json, Value};

async fn validate(kernel: &Kernel, pid: Pid, id: &str) -> Value {
    kernel
        .syscall(pid, Syscall::Tool(JitCall::Validate { id: id.into() }))
        .await
        .unwrap()
}

async fn register(kernel: &Kernel, pid: Pid, id: &str) -> Result<Value, SyscallError> {
    kernel
        .syscall(pid, Syscall::Tool(JitCall::Register { id: id.into() }))
        .await
}

/// A tool named `name` that returns `{said: word}`.
fn sayer(name: &str, word: &str) -> String {
    format!(
        r#"export const tool = {{
  name: "{name}",
  description: "says a word",
  input: {{ type: "object", properties: {{}} }},
  output: {{ type: "object", properties: {{ said: {{ type: "string" }} }}, required: ["said"] }},
}};
export default async function run() {{ return {{ said: "{word}" }}; }}
"#
    )
}

#[tokio::test]
async fn deeply_nested_source_is_rejected_not_fatal_by_the_kernel() {
    let h = common::host().await;
    let pid = h.spawn(&["tool:*=create"]).await;
    for deep in [
        format!(
            "export const x = {}1{};",
            "[".repeat(5000),
            "]".repeat(5000)
        ),
        format!(
            "export const x = {}1{};",
            "(".repeat(5000),
            ")".repeat(5000)
        ),
        format!("export const x = `{}`;", "${`".repeat(3000)),
        format!("export const x = {}1;", "!".repeat(20000)),
        format!("export const x = {}1;", "- ".repeat(20000)),
    ] {
        let proposed = common::propose_report(&h.kernel, pid, &deep).await;
        let id = proposed["id"].as_str().unwrap();
        let report = validate(&h.kernel, pid, id).await;
        assert_eq!(report["ok"], false, "{report}");
        assert_eq!(report["findings"][0]["rule"], "limits", "{report}");
        let err = register(&h.kernel, pid, id).await.unwrap_err();
        assert!(matches!(err, SyscallError::InvalidArgument(_)), "{err:?}");
    }
    // The kernel still serves: a good tool goes through the same path.
    let proposed = common::propose_report(&h.kernel, pid, &sayer("hello", "hi")).await;
    let id = proposed["id"].as_str().unwrap();
    assert_eq!(validate(&h.kernel, pid, id).await["ok"], true);
    register(&h.kernel, pid, id).await.unwrap();
    assert_eq!(
        common::call(&h.kernel, pid, "hello", json!({}))
            .await
            .unwrap(),
        json!({"said": "hi"})
    );
}

#[tokio::test]
async fn a_candidate_hash_is_computed_not_trusted() {
    let h = common::host().await;
    let pid = h.spawn(&["tool:*=create"]).await;
    let good = sayer("good", "benign");
    let proposed = common::propose_report(&h.kernel, pid, &good).await;
    assert_eq!(
        proposed["hash"],
        agent_libos::util::sha256_hex(good.as_bytes()),
        "the kernel hashes the source itself"
    );
    let id = proposed["id"].as_str().unwrap();
    assert_eq!(validate(&h.kernel, pid, id).await["ok"], true);
    register(&h.kernel, pid, id).await.unwrap();
    assert_eq!(
        common::call(&h.kernel, pid, "good", json!({}))
            .await
            .unwrap(),
        json!({"said": "benign"})
    );

    // An object shaped like a candidate, carrying the good tool's hash over other code, is
    // not a candidate: neither mem.create nor mem.from_file makes one.
    let forged = ObjectSpec {
        object_type: "tool.candidate".into(),
        payload: json!({"source": sayer("evil", "evil"), "hash": proposed["hash"]}),
        ..ObjectSpec::default()
    };
    let err = h
        .kernel
        .syscall(pid, Syscall::Mem(MemCall::Create(forged)))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, SyscallError::InvalidArgument(m) if m.contains("tool.candidate")),
        "{err:?}"
    );
    std::fs::write(h.workspace().join("evil.ts"), sayer("evil", "evil")).unwrap();
    let reader = h.spawn(&["fs:evil.ts=read"]).await;
    let err = h
        .kernel
        .syscall(
            reader,
            Syscall::Mem(MemCall::FromFile {
                path: "evil.ts".into(),
                namespace: None,
                name: None,
                object_type: "tool.candidate".into(),
            }),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, SyscallError::InvalidArgument(_)), "{err:?}");
    // The registered tool still runs its own code.
    assert_eq!(
        common::call(&h.kernel, pid, "good", json!({}))
            .await
            .unwrap(),
        json!({"said": "benign"})
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_registrations_run_the_registered_code() {
    let h = common::host().await;
    for trial in 0..40 {
        let pid = h.spawn(&["tool:twin=create"]).await;
        let mut ids = Vec::new();
        for word in ["first", "second"] {
            let proposed = common::propose_report(&h.kernel, pid, &sayer("twin", word)).await;
            let id = proposed["id"].as_str().unwrap().to_string();
            assert_eq!(validate(&h.kernel, pid, &id).await["ok"], true);
            ids.push((id, proposed["hash"].as_str().unwrap().to_string()));
        }
        let runs: Vec<_> = ids
            .iter()
            .map(|(id, _)| {
                let kernel = h.kernel.clone();
                let id = id.clone();
                tokio::spawn(async move { register(&kernel, pid, &id).await })
            })
            .collect();
        let mut outcomes = Vec::new();
        for run in runs {
            outcomes.push(run.await.unwrap());
        }
        let won: Vec<usize> = (0..2).filter(|i| outcomes[*i].is_ok()).collect();
        assert_eq!(
            won.len(),
            1,
            "trial {trial}: exactly one registration wins: {outcomes:?}"
        );
        let lost = 1 - won[0];
        assert!(
            matches!(outcomes[lost], Err(SyscallError::AlreadyExists(_))),
            "trial {trial}: {outcomes:?}"
        );
        // The table holds the code whose registration committed.
        let listed = h
            .kernel
            .syscall(pid, Syscall::Tool(JitCall::List))
            .await
            .unwrap();
        assert_eq!(listed[0]["hash"], ids[won[0]].1, "trial {trial}: {listed}");
        // Both attempts have their audit record.
        h.kernel.store().flush().await.unwrap();
        let rows = h
            .kernel
            .store()
            .latest_audit_records(&[format!("pid:{pid}")], 50)
            .await
            .unwrap();
        let registers: Vec<&str> = rows
            .iter()
            .filter(|r| r.action == "tool.register")
            .map(|r| r.decision.as_str())
            .collect();
        assert_eq!(registers.len(), 2, "trial {trial}: {registers:?}");
        assert!(
            registers.contains(&"allow") && registers.contains(&"error"),
            "{registers:?}"
        );
        // And the winner's code is what runs.
        if trial % 10 == 0 {
            let said = common::call(&h.kernel, pid, "twin", json!({}))
                .await
                .unwrap();
            let word = ["first", "second"][won[0]];
            assert_eq!(said, json!({ "said": word }), "trial {trial}");
        }
    }
}
