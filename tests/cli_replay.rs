//! `agent-libos replay` and `agent-libos demo` through the real binary.
// Tests build their fixtures on the host and drive the real binary.
#![allow(clippy::disallowed_methods, clippy::disallowed_types)]

mod cli_support;

use cli_support::{run_in, Env};
use serde_json::json;

fn fixture(cases: serde_json::Value) -> String {
    serde_json::to_string_pretty(&json!({"description": "test", "cases": cases})).unwrap()
}

#[test]
fn replay_prints_one_line_per_case_and_a_closing_line() {
    let env = Env::new();
    env.write(
        "fx/a.json",
        &fixture(json!([
            {"name": "getcwd", "calls": [{"syscall": {"primitive": "proc.getcwd"}, "expect": {"result": "."}}]},
            {"name": "wrong", "calls": [{"syscall": {"primitive": "proc.getcwd"}, "expect": {"result": "elsewhere"}}]},
            {"name": "denied", "calls": [{"syscall": {"primitive": "human.output", "message": "x"},
                "expect": {"error": {"kind": "PermissionDenied", "resource": "human:operator", "right": "write"}}}]},
            {"name": "later", "skip": "not yet", "calls": []}
        ])),
    );
    let junit = env.dir.path().join("junit.xml");
    let out = env.run(&[
        "replay",
        "fx",
        "--junit",
        junit.to_str().unwrap(),
        "-j",
        "2",
    ]);
    assert_eq!(out.code, 1, "{out:?}");
    assert!(out.stdout.contains("ok   a.json: getcwd"), "{out:?}");
    assert!(
        out.stdout
            .contains("FAIL a.json: wrong: call 1: result \".\", expected \"elsewhere\""),
        "{out:?}"
    );
    assert!(out.stdout.contains("ok   a.json: denied"), "{out:?}");
    assert_eq!(out.last_line(), "2 passed, 1 failed, 1 skipped", "{out:?}");
    let xml = std::fs::read_to_string(&junit).unwrap();
    assert!(
        xml.contains("<testsuite") && xml.contains("failures=\"1\""),
        "{xml}"
    );
    assert!(xml.contains("<failure message="), "{xml}");
}

#[test]
fn replay_record_refreshes_expectations() {
    let env = Env::new();
    let path = env.write(
        "fx/r.json",
        &fixture(json!([
            {"name": "getcwd", "calls": [{"syscall": {"primitive": "proc.getcwd"}, "expect": {"result": "stale"}}]},
            {"name": "denied", "calls": [{"syscall": {"primitive": "human.output", "message": "x"}}]}
        ])),
    );
    let out = env.run(&["replay", "--record", path.to_str().unwrap()]);
    assert_eq!(out.code, 0, "{out:?}");
    let recorded: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    assert_eq!(
        recorded["cases"][0]["calls"][0]["expect"],
        json!({"result": "."})
    );
    assert_eq!(
        recorded["cases"][1]["calls"][0]["expect"]["error"],
        json!({"kind": "PermissionDenied", "resource": "human:operator", "right": "write"})
    );
    let again = env.run(&["replay", path.to_str().unwrap()]);
    assert_eq!(again.code, 0, "{again:?}");
    assert_eq!(again.last_line(), "2 passed, 0 failed");
}

#[test]
fn replay_answers_human_requests_from_the_script() {
    let env = Env::new();
    env.write(
        "fx/h.json",
        &fixture(json!([
            {"name": "approved", "grants": ["human:operator=write"],
             "human": [{"kind": "question", "answer": "answer", "text": "yes"}],
             "calls": [{"syscall": {"primitive": "human.ask", "question": "go?"}, "expect": {"result_subset": {"answer": "yes"}}}],
             "effects": {"audit": [{"action": "human.respond", "decision": "answered"}], "pending_human": 0}},
            {"name": "unused answer", "human": [{"answer": "approve_once"}], "calls": []}
        ])),
    );
    let out = env.run(&["replay", "fx"]);
    assert_eq!(out.code, 1, "{out:?}");
    assert!(out.stdout.contains("ok   h.json: approved"), "{out:?}");
    assert!(out.stdout.contains("was never asked for"), "{out:?}");
}

#[test]
fn replay_of_a_bad_fixture_is_invalid_input() {
    let env = Env::new();
    env.write(
        "fx/bad.json",
        r#"{"cases": [{"name": "x", "nonsense": 1}]}"#,
    );
    let out = env.run(&["replay", "fx"]);
    assert_eq!(out.code, 2, "{out:?}");
    assert!(out.stderr.contains("fixtures/README.md"), "{out:?}");
    let out = env.run(&["replay", "missing"]);
    assert_eq!(out.code, 2, "{out:?}");
}

// ---- needs the kernel's JIT tool host ----

#[test]
fn demo_tells_its_story_and_prints_the_audit_head() {
    let env = Env::new();
    let keep = env.dir.path().join("demo");
    let started = std::time::Instant::now();
    let out = run_in(&env.ws(), &["demo", "--keep", keep.to_str().unwrap()]);
    assert_eq!(out.code, 0, "{out:?}");
    assert!(started.elapsed() < std::time::Duration::from_secs(10));
    assert!(out.stdout.contains("audit chain verified"), "{out:?}");
    assert!(out.stdout.contains("head "), "{out:?}");
    assert!(out.stdout.contains("checkpointed process"), "{out:?}");
    assert!(!out.stdout.contains("not available"), "{out:?}");
    assert!(out.stdout.contains("denied"), "{out:?}");
    let db = keep.join("state.db");
    let cks = run_in(
        &env.ws(),
        &["--db", db.to_str().unwrap(), "--json", "checkpoint", "list"],
    );
    assert_eq!(
        cks.json()["result"][0]["name"],
        json!("before-report"),
        "{cks:?}"
    );
    let ps = run_in(
        &env.ws(),
        &["--db", db.to_str().unwrap(), "--json", "ps", "--all"],
    );
    assert_eq!(ps.code, 0, "{ps:?}");
    assert_eq!(ps.json()["result"].as_array().unwrap().len(), 2);
    let human = run_in(
        &env.ws(),
        &[
            "--db",
            db.to_str().unwrap(),
            "--json",
            "human",
            "list",
            "--all",
        ],
    );
    assert_eq!(human.json()["result"][0]["status"], json!("approved"));
    assert!(keep.join("workspace/REPORT.md").exists());
}
