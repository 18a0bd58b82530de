//! `agent-libos replay` runs every case of a run on one isolate host and concurrently, yet
//! each case is as isolated as if it ran alone: its own database, workspace copy, process,
//! grants and isolate. Each test is a fixture whose cases try to see or disturb each other.
// Tests build their fixtures on the host and drive the real binary.
#![allow(clippy::disallowed_methods, clippy::disallowed_types)]

mod cli_support;

use cli_support::{fixture_tool, Env};
use serde_json::{json, Value};

/// Reports what earlier calls left in its isolate, workspace, object memory and grants,
/// then leaves its own marks there.
const PROBE: &str = r#"export const tool = {
  name: "probe",
  description: "Reports what earlier calls left behind, then leaves its own marks.",
  input: { type: "object", properties: { action: { type: "string" } }, required: ["action"] },
  output: {},
};

let calls = 0;

export default async function run(args: any, libos: any) {
  const g = globalThis as any;
  if (args.action === "mark") {
    const before = { calls, global: g.mark ?? null };
    calls += 1;
    g.mark = "set";
    return before;
  }
  if (args.action === "write") {
    const r = await libos.fs.writeText("probe.txt", "mine", { overwrite: false });
    return { bytes: r.bytes };
  }
  if (args.action === "remember") {
    await libos.memory.create({ type: "probe", payload: {} });
    const all = await libos.memory.list();
    return { objects: all.filter((o: any) => o.type === "probe").length };
  }
  if (args.action === "ask") {
    await libos.human.requestPermission("fs:granted.txt", "write", "leave a grant behind");
    return { asked: true };
  }
  if (args.action === "use_grant") {
    const r = await libos.fs.writeText("granted.txt", "x", { overwrite: true });
    return { bytes: r.bytes };
  }
  throw new Error("unknown action");
}
"#;

/// Reaches its heap limit at its first step (quickly, however loaded the machine is).
const BOMB: &str = r#"export const tool = {
  name: "bomb",
  description: "Allocate without bound.",
  input: { type: "object" },
  output: {},
  limits: { heap_mb: 8 },
};

export default async function run(args: any, libos: any) {
  const keep: any[] = [];
  while (true) {
    keep.push(new Array(1 << 22).fill(keep.length));
  }
}
"#;

fn call(action: &str, expect: Value) -> Value {
    json!({"args": {"action": action}, "expect": expect})
}

/// A case that finds nothing of any other case, then leaves marks of every kind: a global
/// and a module variable, a workspace file, an object, and (if `asks`) a grant a human
/// approved for good. A case that does not ask tries to use that grant.
fn probe_case(n: usize, asks: bool) -> Value {
    let mut calls = vec![
        call("mark", json!({"result": {"calls": 0, "global": null}})),
        // Within the case the marks stay: the probe would see another case's.
        call("mark", json!({"result": {"calls": 1, "global": "set"}})),
        call("write", json!({"result": {"bytes": 4}})),
        call("remember", json!({"result": {"objects": 1}})),
    ];
    if asks {
        calls.push(call("ask", json!({"result": {"asked": true}})));
        calls.push(call("use_grant", json!({"result": {"bytes": 1}})));
    } else {
        calls.push(call(
            "use_grant",
            json!({"error": {"kind": "PermissionDenied", "resource": "fs:granted.txt", "right": "write"}}),
        ));
    }
    let mut case = json!({
        "name": format!("probe {n}"),
        "calls": calls,
        "effects": {
            "files": {"probe.txt": {"content": "mine"}},
            "objects": {"count": 1, "type": "probe"},
            "pending_human": 0
        }
    });
    if asks {
        case["requestable"] = json!(["fs:granted.txt=write"]);
        case["human"] = json!([{"kind": "permission", "resource": "fs:granted.txt", "answer": "approve_always"}]);
    }
    case
}

fn write_fixture(env: &Env, name: &str, tool: &str, cases: Vec<Value>) {
    let fixture = json!({
        "description": "isolation",
        "tool": tool,
        "grants": ["fs:probe.txt=write"],
        "cases": cases,
    });
    env.write(
        &format!("fx/{name}.json"),
        &serde_json::to_string_pretty(&fixture).unwrap(),
    );
}

fn passed_and_failed(stdout: &str) -> (usize, usize) {
    let ok = stdout.lines().filter(|l| l.starts_with("ok ")).count();
    let failed = stdout.lines().filter(|l| l.starts_with("FAIL")).count();
    (ok, failed)
}

#[test]
fn cases_on_one_host_see_no_global_file_object_or_grant_of_another() {
    let env = Env::new();
    env.write("fx/probe.ts", PROBE);
    // Twelve cases of the same tool (same name, same hash), half of them leaving a grant.
    let cases = (0..12).map(|n| probe_case(n, n % 2 == 0)).collect();
    write_fixture(&env, "probe", "probe.ts", cases);
    // One at a time, and more at once than there are cores.
    for jobs in ["1", "6"] {
        let out = env.run(&["replay", "fx", "-j", jobs]);
        assert_eq!(out.code, 0, "-j {jobs}: {out:?}");
        assert_eq!(out.last_line(), "12 passed, 0 failed", "-j {jobs}: {out:?}");
    }
    // What the cases did stays in their own copies: the fixture's workspace is untouched.
    assert!(!env.ws().join("fx/probe.txt").exists());
    assert!(!env.ws().join("fx/granted.txt").exists());
}

#[test]
fn a_case_that_breaks_its_isolate_or_fails_changes_no_other_outcome() {
    let env = Env::new();
    env.write("fx/probe.ts", PROBE);
    env.write(
        "fx/spin.ts",
        &std::fs::read_to_string(fixture_tool("spin")).unwrap(),
    );
    env.write("fx/bomb.ts", BOMB);
    let limit = |limit: &str| {
        json!({"name": format!("{limit} limit"), "calls": [{"args": {},
            "expect": {"error": {"kind": "LimitExceeded", "limit": limit}}}]})
    };
    // A busy loop past its cpu limit and a heap bomb, each twice, beside probes that run
    // on the same host at the same time; one probe case is wrong on purpose.
    write_fixture(
        &env,
        "a_spin",
        "spin.ts",
        vec![limit("cpu_time"), limit("cpu_time")],
    );
    write_fixture(
        &env,
        "b_bomb",
        "bomb.ts",
        vec![limit("memory"), limit("memory")],
    );
    let mut probes: Vec<Value> = (0..6).map(|n| probe_case(n, n % 2 == 0)).collect();
    probes[3]["calls"][0]["expect"] = json!({"result": {"calls": 99, "global": null}});
    write_fixture(&env, "c_probe", "probe.ts", probes);

    let out = env.run(&["replay", "fx", "-j", "4"]);
    assert_eq!(out.code, 1, "{out:?}");
    assert_eq!(passed_and_failed(&out.stdout), (9, 1), "{out:?}");
    assert!(
        out.stdout
            .contains("FAIL c_probe.json: probe 3: call 1: result {\"calls\":0,\"global\":null}"),
        "{out:?}"
    );
    // Lines come in fixture order, whatever order the cases ended in.
    let names: Vec<&str> = out
        .stdout
        .lines()
        .filter(|l| l.starts_with("ok ") || l.starts_with("FAIL"))
        .map(|l| l[5..].split(':').next().unwrap_or(""))
        .collect();
    let mut sorted = names.clone();
    sorted.sort();
    assert_eq!(names, sorted, "{out:?}");
}
