//! Writing a tool as the docs say, through the real binary: the documented format is the one
//! `tool check` accepts, `tool init` writes it, types are checked with TypeScript's checker,
//! imports from "libos" are type-only, and libos.d.ts states the kernel's real result shapes.
// Tests build their fixtures on the host and drive the real binary.
#![allow(clippy::disallowed_methods, clippy::disallowed_types)]

mod cli_support;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};

use cli_support::{repo, Env};
use serde_json::Value;

/// The first fenced ```ts block after `marker` in the file `rel`.
fn ts_block_after(rel: &str, marker: &str) -> String {
    let text = std::fs::read_to_string(repo().join(rel)).unwrap();
    let from = text
        .find(marker)
        .unwrap_or_else(|| panic!("{rel}: no {marker:?}"));
    let rest = &text[from..];
    let start = rest.find("```ts\n").expect("a ts block") + "```ts\n".len();
    let end = rest[start..].find("```").unwrap();
    rest[start..start + end].to_string()
}

/// Whether a TypeScript checker is installed where the binary looks for one (scripts/setup
/// puts it in the repository's node_modules, beside the binary's ancestors).
fn checker_installed() -> bool {
    repo().join("node_modules/.bin/tsc").is_file()
        || std::env::var_os("PATH")
            .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join("tsc").is_file()))
}

fn skip_notice(what: &str) {
    eprintln!("NOTICE: {what} skipped: no TypeScript checker installed (run scripts/setup)");
}

const WALKTHROUGH: &str = "`agent-libos tool init count_lines` writes this";

#[test]
fn readme_walkthrough_tool_passes_check_and_its_type_error_is_located() {
    let env = Env::new();
    let source = ts_block_after("README.md", WALKTHROUGH);
    env.write("tools/count_lines.ts", &source);
    let out = env.run(&["tool", "check", "tools/count_lines.ts"]);
    assert_eq!(out.code, 0, "{out:?}");
    assert!(
        out.stdout
            .contains("tools/count_lines.ts: ok (tool count_lines, 1 declared test passed)"),
        "{out:?}"
    );
    if !checker_installed() {
        assert!(out.stderr.contains("types were not checked"), "{out:?}");
        return skip_notice("the type error half");
    }
    assert!(!out.stderr.contains("types were not checked"), "{out:?}");
    // A typo that runs (and would pass the static rules): only a type checker sees it.
    let broken = source.replace("readText(args.path)", "readText(args.pth)");
    let (line, col) = broken
        .lines()
        .enumerate()
        .find_map(|(i, l)| l.find("pth").map(|c| (i + 1, c + 1)))
        .unwrap();
    env.write("tools/count_lines.ts", &broken);
    let out = env.run(&["tool", "check", "tools/count_lines.ts"]);
    assert_eq!(out.code, 2, "{out:?}");
    let expected = format!("tools/count_lines.ts:{line}:{col} type: TS2551: Property 'pth'");
    assert!(out.stdout.contains(&expected), "{expected}\n{out:?}");
    let json = env
        .run(&["--json", "tool", "check", "tools/count_lines.ts"])
        .json();
    assert_eq!(json["error"]["kind"], "ValidationFailed");
    assert_eq!(json["error"]["findings"][0]["rule"], "type");
    assert_eq!(json["error"]["findings"][0]["line"], line);
    assert_eq!(json["error"]["findings"][0]["column"], col);
    // A result of the wrong shape is a type error too: libos calls are typed.
    let wrong = source.replace("text.split(\"\\n\")", "text.stdout.split(\"\\n\")");
    env.write("tools/count_lines.ts", &wrong);
    let out = env.run(&["tool", "check", "tools/count_lines.ts"]);
    assert_eq!(out.code, 2, "{out:?}");
    assert!(
        out.stdout
            .contains("Property 'stdout' does not exist on type 'string'"),
        "{out:?}"
    );
}

#[test]
fn no_checker_is_said_once_and_the_other_checks_still_run() {
    let env = Env::new();
    env.write(
        "tools/count_lines.ts",
        &ts_block_after("README.md", WALKTHROUGH).replace("args.path)", "args.pth)"),
    );
    let out = cli_support::Out::from(
        std::process::Command::new(cli_support::bin())
            .args(["tool", "check", "tools/count_lines.ts"])
            .current_dir(env.ws())
            .env("AGENT_LIBOS_TSC", "none")
            .output()
            .unwrap(),
    );
    // Without types, the typo is found by the declared test (args.pth is undefined).
    assert_eq!(out.code, 2, "{out:?}");
    assert_eq!(
        out.stderr.matches("types were not checked").count(),
        1,
        "{out:?}"
    );
    assert!(
        out.stdout.contains("FAIL counts the non-empty lines"),
        "{out:?}"
    );
}

#[test]
fn ts_readme_example_and_the_init_skeleton_pass_check_and_agree() {
    let env = Env::new();
    let example = ts_block_after("ts/README.md", "## Tool format");
    env.write("example.ts", &example);
    let out = env.run(&["tool", "check", "example.ts"]);
    assert_eq!(out.code, 0, "{out:?}");

    let out = env.run(&["tool", "init", "count_lines"]);
    assert_eq!(out.code, 0, "{out:?}");
    for f in ["count_lines.ts", "libos.d.ts", "tsconfig.json", "deno.json"] {
        assert!(env.ws().join("tools").join(f).is_file(), "{f}: {out:?}");
    }
    let skeleton = std::fs::read_to_string(env.ws().join("tools/count_lines.ts")).unwrap();
    assert_eq!(
        skeleton, example,
        "ts/README.md shows what `tool init` writes"
    );
    assert_eq!(skeleton, ts_block_after("README.md", WALKTHROUGH));
    assert_eq!(
        std::fs::read_to_string(env.ws().join("tools/libos.d.ts")).unwrap(),
        std::fs::read_to_string(repo().join("ts/libos.d.ts")).unwrap()
    );
    let out = env.run(&["tool", "check", "tools/count_lines.ts"]);
    assert_eq!(out.code, 0, "{out:?}");
    let out = env.run(&["tool", "test", "tools/count_lines.ts"]);
    assert_eq!(out.last_line(), "1 passed, 0 failed", "{out:?}");

    // The editor configuration resolves "libos" to the written types: tsc run on the
    // directory (as an editor does) finds no error.
    if checker_installed() {
        let tsc = repo().join("node_modules/.bin/tsc");
        let tsc = if tsc.is_file() { tsc } else { "tsc".into() };
        let out = std::process::Command::new(tsc)
            .args(["-p", ".", "--pretty", "false"])
            .current_dir(env.ws().join("tools"))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stdout)
        );
    } else {
        skip_notice("the editor configuration check");
    }

    // Bad input: an existing file is not replaced, a bad name is refused; nothing lost.
    std::fs::write(env.ws().join("tools/count_lines.ts"), "// mine\n").unwrap();
    let out = env.run(&["tool", "init", "count_lines"]);
    assert_eq!(out.code, 2, "{out:?}");
    assert!(out.stderr.contains("already exists"), "{out:?}");
    assert!(out.stderr.contains("--force"), "{out:?}");
    assert_eq!(
        std::fs::read_to_string(env.ws().join("tools/count_lines.ts")).unwrap(),
        "// mine\n"
    );
    let out = env.run(&["tool", "init", "Count-Lines"]);
    assert_eq!(out.code, 2, "{out:?}");
    assert!(out.stderr.contains("invalid tool name"), "{out:?}");
}

const BODY: &str = r#"
export const tool = { name: "imp", description: "d", input: { type: "object" }, output: {} };
export default async function run(args: unknown, libos: Libos) {
  return await libos.proc.getcwd();
}
"#;

#[test]
fn imports_from_libos_are_type_only_and_erased() {
    let env = Env::new();
    for (i, ok) in [
        "import type { Libos } from \"libos\";",
        "import { type Libos } from \"libos\";",
    ]
    .iter()
    .enumerate()
    {
        let file = format!("ok{i}.ts");
        env.write(&file, &format!("{ok}{BODY}"));
        let out = env.run(&["tool", "check", &file]);
        assert_eq!(out.code, 0, "{ok}: {out:?}");
        // Erased: running it loads no module.
        let out = env.run(&["--json", "tool", "run", &file]);
        assert_eq!(out.code, 0, "{ok}: {out:?}");
        assert_eq!(out.json()["result"], ".");
    }
    // A value import would be a module load: refused before anything runs, with the fix.
    for bad in [
        "import { Libos } from \"libos\";",
        "import { type Libos, fs } from \"libos\";",
        "import * as Libos from \"libos\";",
        "import Libos from \"libos\";",
        "import \"libos\"; type Libos = any;",
        "export * from \"libos\"; type Libos = any;",
    ] {
        env.write("bad.ts", &format!("{bad}{BODY}"));
        let out = env.run(&["tool", "check", "bad.ts"]);
        assert_eq!(out.code, 2, "{bad}: {out:?}");
        assert!(out.stdout.contains("bad.ts:1:"), "{bad}: {out:?}");
        assert!(out.stdout.contains("type-only-import"), "{bad}: {out:?}");
        assert!(out.stdout.contains("must be type-only"), "{bad}: {out:?}");
        let out = env.run(&["tool", "run", "bad.ts"]);
        assert_eq!(out.code, 2, "{bad}: {out:?}");
        assert!(out.stderr.contains("type-only-import"), "{bad}: {out:?}");
    }
    // Any other specifier stays refused, type-only or not.
    for bad in [
        "import type { Libos } from \"./libos.d.ts\";",
        "import type { Libos } from \"npm:libos\";",
        "import { readFileSync } from \"node:fs\"; type Libos = any;",
    ] {
        env.write("other.ts", &format!("{bad}{BODY}"));
        let out = env.run(&["tool", "check", "other.ts"]);
        assert_eq!(out.code, 2, "{bad}: {out:?}");
        assert!(out.stdout.contains("no-forbidden-import"), "{bad}: {out:?}");
    }
}

/// The keys each interface of libos.d.ts declares: name -> (key -> optional).
fn declared_interfaces() -> BTreeMap<String, BTreeMap<String, bool>> {
    let text = std::fs::read_to_string(repo().join("ts/libos.d.ts")).unwrap();
    let mut out: BTreeMap<String, BTreeMap<String, bool>> = BTreeMap::new();
    let mut current: Option<String> = None;
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("export interface ") {
            let name: String = rest
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            let mut keys = BTreeMap::new();
            if let Some(base) = rest.split(" extends ").nth(1) {
                let base = base.trim_end_matches(" {").trim();
                keys = out.get(base).cloned().unwrap_or_default();
            }
            out.insert(name.clone(), keys);
            current = Some(name);
        } else if line == "}" {
            current = None;
        } else if let (Some(name), Some(member)) = (&current, line.strip_prefix("  ")) {
            let Some((key, _)) = member.split_once(':') else {
                continue;
            };
            if key.contains('(') || key.starts_with([' ', '*', '/']) {
                continue;
            }
            let key = key.trim_start_matches("readonly ");
            let optional = key.ends_with('?');
            out.get_mut(name)
                .unwrap()
                .insert(key.trim_end_matches('?').to_string(), optional);
        }
    }
    out
}

fn assert_shape(
    interfaces: &BTreeMap<String, BTreeMap<String, bool>>,
    what: &str,
    interface: &str,
    value: &Value,
) {
    let declared = interfaces
        .get(interface)
        .unwrap_or_else(|| panic!("libos.d.ts declares no interface {interface}"));
    let obj = value
        .as_object()
        .unwrap_or_else(|| panic!("{what}: not an object: {value}"));
    let actual: BTreeSet<&str> = obj.keys().map(String::as_str).collect();
    for key in &actual {
        assert!(
            declared.contains_key(*key),
            "{what}: the kernel returns `{key}`, which {interface} in ts/libos.d.ts does not declare ({value})"
        );
    }
    for (key, optional) in declared {
        assert!(
            *optional || actual.contains(key.as_str()),
            "{what}: {interface} in ts/libos.d.ts declares `{key}`, which the kernel does not return ({value})"
        );
    }
}

/// One HTTP response on a loopback port, in a thread; returns the URL.
fn one_http_response() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        if let Ok((mut s, _)) = listener.accept() {
            let mut buf = [0u8; 4096];
            let _ = s.read(&mut buf);
            let _ = s.write_all(
                b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 2\r\nconnection: close\r\n\r\nhi",
            );
        }
    });
    format!("http://{addr}/")
}

const PROBE: &str = r#"
export const tool = { name: "probe", description: "calls every primitive", input: { type: "object" }, output: {} };
export default async function run(args: { url: string }, libos: any) {
  const r: any = {};
  r.write = await libos.fs.writeText("d/b.txt", "x");
  r.append = await libos.fs.appendText("d/b.txt", "y");
  r.list = await libos.fs.list("d");
  r.mkdir = await libos.fs.mkdir("d/e");
  r.deleteDir = await libos.fs.deleteDir("d/e");
  r.deleteFile = await libos.fs.deleteFile("d/b.txt");
  r.create = await libos.memory.create({ type: "note", payload: { a: 1 }, name: "n1", appendable: true });
  r.read = await libos.memory.read(r.create.id);
  r.find = await libos.memory.find("n1");
  r.mappend = await libos.memory.append(r.create.id, { b: 2 });
  r.mlist = await libos.memory.list();
  r.ns = await libos.memory.createNamespace("proc/1/x");
  r.fromFile = await libos.memory.fromFile("d/a.txt", { name: "af" });
  r.toFile = await libos.memory.toFile(r.create.id, "d/o.json");
  r.sleep = await libos.clock.sleep(1);
  r.shell = await libos.shell.run(["echo", "hi"]);
  r.fetch = await libos.net.fetch(args.url);
  r.output = await libos.human.output("hello");
  r.fork = await libos.proc.fork({ goal: "child" });
  r.children = await libos.proc.children();
  r.signal = await libos.proc.signal(r.fork.pid, "kill");
  r.wait = await libos.proc.wait(r.fork.pid, { timeoutMs: 5000 });
  r.post = await libos.events.post("e", { x: 1 });
  r.event = await libos.events.wait("e", { timeoutMs: 1000 });
  r.tlist = await libos.tools.list();
  r.propose = await libos.tools.propose(
    'export const tool = { name: "q", description: "d", input: { type: "object" }, output: {} };\nexport default async function run() { return 1; }');
  r.validate = await libos.tools.validate(r.propose.id);
  r.register = await libos.tools.register(r.propose.id);
  r.exit = await libos.proc.exit({ done: true });
  return r;
}
"#;

#[test]
fn libos_d_ts_declares_the_keys_every_primitive_returns() {
    let env = Env::new();
    env.write("d/a.txt", "hello\n");
    env.write("probe.ts", PROBE);
    let url = one_http_response();
    let args = serde_json::json!({ "url": url }).to_string();
    let out = env.run(&[
        "--json",
        "tool",
        "run",
        "probe.ts",
        "--args",
        &args,
        "--allow-read",
        "--allow-write",
        "--allow-run=echo",
        "--allow-net=loopback",
        "--grant",
        "fs:**=delete",
        "--grant",
        "tool:q=create",
        "--grant",
        "namespace:**=read,write,create",
        "--grant",
        "object:**=read,write,append",
        "--grant",
        "human:operator=write",
    ]);
    assert_eq!(out.code, 0, "{out:?}");
    let r = out.json()["result"].clone();
    let interfaces = declared_interfaces();
    let one = |what: &str, interface: &str| assert_shape(&interfaces, what, interface, &r[what]);
    let each = |what: &str, interface: &str| {
        let items = r[what]
            .as_array()
            .unwrap_or_else(|| panic!("{what}: {}", r[what]));
        assert!(!items.is_empty(), "{what}: nothing to check");
        for item in items {
            assert_shape(&interfaces, what, interface, item);
        }
    };
    one("write", "WriteResult");
    one("append", "AppendResult");
    each("list", "DirEntry");
    one("mkdir", "PathResult");
    one("deleteDir", "PathResult");
    one("deleteFile", "PathResult");
    one("create", "ObjectRef");
    one("read", "ObjectRecord");
    one("find", "ObjectRecord");
    one("mappend", "AppendedRef");
    each("mlist", "ObjectInfo");
    one("ns", "NamespaceResult");
    one("fromFile", "ObjectRef");
    one("toFile", "WriteResult");
    one("sleep", "SleepResult");
    one("shell", "ShellResult");
    one("fetch", "FetchResponse");
    one("output", "HumanOutputResult");
    one("fork", "SpawnResult");
    each("children", "ProcessInfo");
    assert_shape(
        &interfaces,
        "children.budget",
        "Budget",
        &r["children"][0]["budget"],
    );
    one("signal", "SignalResult");
    one("wait", "WaitResult");
    one("post", "PostResult");
    one("event", "Event");
    each("tlist", "ToolInfo");
    one("propose", "ProposeResult");
    one("validate", "ValidationResult");
    one("register", "RegisterResult");
    one("exit", "SignalResult");
    assert_eq!(r["fetch"]["headers"][0].as_array().map(Vec::len), Some(2));
}

#[test]
fn human_answers_have_the_declared_shape() {
    let env = Env::new();
    env.write(
        "ask.ts",
        r#"export const tool = { name: "ask", description: "d", input: { type: "object" }, output: {} };
export default async function run(args: unknown, libos: any) {
  return await libos.human.ask("colour?", ["red", "blue"]);
}
"#,
    );
    let out = env.run(&[
        "--json",
        "tool",
        "run",
        "ask.ts",
        "--grant",
        "human:operator=write",
    ]);
    assert_eq!(out.code, 5, "{out:?}");
    let id = out.json()["error"]["request_id"]
        .as_str()
        .unwrap()
        .to_string();
    let out = env.run(&["human", "answer", &id, "red"]);
    assert_eq!(out.code, 0, "{out:?}");
    let out = env.run(&["--json", "resume"]);
    assert_eq!(out.code, 0, "{out:?}");
    let answer = &out.json()["result"]["invocations"][0]["outcome"]["Ok"];
    assert_shape(&declared_interfaces(), "human.ask", "HumanAnswer", answer);
    assert_eq!(answer["answer"], "red");
}

const THROWER: &str = r#"export const tool = { name: "thrower", description: "d", input: { type: "object" }, output: {} };

function inner(n: number): number {
  if (n > 1) {
    throw new Error("boom at " + n);
  }
  return n;
}

export default async function run(args: unknown, libos: unknown) {
  return inner(2);
}
"#;

#[test]
fn a_thrown_errors_trace_names_the_users_file() {
    let env = Env::new();
    env.write("tools/thrower.ts", THROWER);
    let out = env.run(&["tool", "run", "tools/thrower.ts"]);
    assert_eq!(out.code, 1, "{out:?}");
    assert!(
        out.stderr.contains("at inner (tools/thrower.ts:5:11)"),
        "{out:?}"
    );
    assert!(
        out.stderr.contains("at run (tools/thrower.ts:11:10)"),
        "{out:?}"
    );
    assert!(!out.stderr.contains("tool:"), "{out:?}");
    let json = env
        .run(&["--json", "tool", "run", "tools/thrower.ts"])
        .json();
    let stack = json["error"]["stack"].as_str().unwrap();
    assert!(
        stack.contains("at inner (tools/thrower.ts:5:11)"),
        "{stack}"
    );
    // A runtime error the engine raises (not the tool's own throw) is located the same way.
    env.write(
        "tools/typo.ts",
        &THROWER.replace(
            "throw new Error(\"boom at \" + n);",
            "(undefined as any).x.y;",
        ),
    );
    let out = env.run(&["tool", "run", "tools/typo.ts"]);
    assert_eq!(out.code, 1, "{out:?}");
    assert!(out.stderr.contains("tools/typo.ts:5:"), "{out:?}");
}

/// Runs the binary on a pseudo-terminal (util-linux `script`), returning what it printed.
fn on_a_terminal(env: &Env, args: &str, no_color: bool) -> Option<String> {
    let mut cmd = std::process::Command::new("script");
    cmd.args([
        "-qec",
        &format!("{} {args}", cli_support::bin().display()),
        "/dev/null",
    ])
    .current_dir(env.ws())
    .env_remove("NO_COLOR");
    if no_color {
        cmd.env("NO_COLOR", "1");
    }
    let out = cmd.output().ok()?;
    Some(String::from_utf8_lossy(&out.stdout).into_owned())
}

#[test]
fn findings_get_a_code_frame_and_colours_on_a_terminal_only() {
    let env = Env::new();
    env.write(
        "syn.ts",
        "export const tool = { name: \"s\", description: \"d\", input: { type: \"object\" }, output: {} };\nexport default async function run( {\n",
    );
    let plain = env.run(&["tool", "check", "syn.ts"]);
    assert_eq!(plain.code, 2, "{plain:?}");
    assert!(plain.stdout.contains("syn.ts:2:"), "{plain:?}");
    assert!(
        !plain.stdout.contains('\x1b'),
        "no colours off a terminal: {plain:?}"
    );
    assert!(
        !plain.stdout.contains(" |"),
        "no frame off a terminal: {plain:?}"
    );
    let Some(tty) = on_a_terminal(&env, "tool check syn.ts", false) else {
        return eprintln!("NOTICE: terminal half skipped: `script` (util-linux) is not installed");
    };
    assert!(tty.contains("\x1b[36msyn.ts:2:"), "{tty:?}");
    assert!(
        tty.contains("2 |\x1b[0m export default async function run( {"),
        "{tty:?}"
    );
    assert!(
        tty.contains("\x1b[1;31m^"),
        "a caret under the column: {tty:?}"
    );
    let no_color = on_a_terminal(&env, "tool check syn.ts", true).unwrap();
    assert!(no_color.contains("syn.ts:2:"), "{no_color:?}");
    assert!(
        !no_color.contains('\x1b'),
        "NO_COLOR is respected: {no_color:?}"
    );
}
