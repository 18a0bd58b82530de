//! The engine's bytecode cache is off in every program that links the library: tools run
//! through the isolate host (in this test binary) and through the `agent-libos` binary
//! leave no file in the user's cache or home directory.
// Tests build their fixtures on the host and inspect the host's cache directories.
#![allow(clippy::disallowed_methods, clippy::disallowed_types)]

mod cli_support;

use std::path::Path;
use std::process::Command;
use std::sync::Arc;

use agent_libos::isolate::{
    BoxFuture, CallContext, CallLimits, CallRequest, HostConfig, IsolateHost, SyscallPort,
    ToolModule,
};
use cli_support::Env;
use serde_json::{json, Value};

/// Set in the child run of this binary, pointing at its private cache and home.
const CHILD: &str = "AGENT_LIBOS_CACHE_CHECK_CHILD";

struct NoSyscalls;

impl SyscallPort for NoSyscalls {
    fn syscall(
        &self,
        _ctx: &CallContext,
        _call: Box<serde_json::value::RawValue>,
    ) -> BoxFuture<'static, Result<Value, Value>> {
        Box::pin(async { Ok(Value::Null) })
    }
    fn console(&self, _ctx: &CallContext, _level: &str, _text: &str) {}
}

fn files_under(dir: &Path) -> Vec<String> {
    let mut found = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return found;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            found.extend(files_under(&path));
        } else {
            found.push(path.display().to_string());
        }
    }
    found
}

/// The child's half: runs a tool in a process isolate and in a throwaway one.
#[tokio::test]
async fn child_runs_tools_for_the_cache_check() {
    if std::env::var_os(CHILD).is_none() {
        return;
    }
    let out = agent_libos::jit::transpile(
        "tool:cached.ts",
        "export default { run(a: { n: number }) { return a.n + 1; } };",
    )
    .unwrap();
    let module = Arc::new(ToolModule {
        specifier: format!("tool:cached@{}.ts", &out.hash[..12]),
        code: out.code,
        source_map: out.source_map,
        hash: out.hash,
    });
    let host = IsolateHost::start(HostConfig::default());
    let request = |pid: i64| CallRequest {
        module: module.clone(),
        args: json!({"n": 1}),
        limits: CallLimits::default(),
        port: Arc::new(NoSyscalls),
        ctx: CallContext {
            pid,
            invocation_id: format!("inv-{pid}"),
        },
        start_time_ms: 0,
        random_seed: 1,
    };
    assert_eq!(host.call(1, request(1)).await, Ok(json!(2)));
    assert_eq!(host.run_ephemeral(request(2)).await, Ok(json!(2)));
}

#[test]
fn no_bytecode_cache_outside_the_runtime() {
    let home = tempfile::tempdir().unwrap();
    let cache = home.path().join("cache");
    // This library, embedded in a test binary.
    let status = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "child_runs_tools_for_the_cache_check",
            "--nocapture",
        ])
        .env(CHILD, "1")
        .env("HOME", home.path())
        .env("XDG_CACHE_HOME", &cache)
        .env_remove("V82JSC_NO_BC_CACHE")
        .env_remove("V82JSC_BC_CACHE_DIR")
        .status()
        .unwrap();
    assert!(status.success());
    assert_eq!(files_under(home.path()), Vec::<String>::new());

    // The command line.
    let env = Env::new();
    let tool = env.write(
        "add.ts",
        "export const tool = { name: \"add\", description: \"d\", input: { type: \"object\" }, output: {},\n\
           tests: [{ name: \"adds\", args: { n: 1 }, expect: 2 }] };\n\
         export default async function run(a: any) { return a.n + 1; }\n",
    );
    let out = Command::new(cli_support::bin())
        .arg("--db")
        .arg(env.db())
        .arg("--workspace")
        .arg(env.ws())
        .args([
            "tool",
            "run",
            tool.to_str().unwrap(),
            "--args",
            r#"{"n":1}"#,
        ])
        .env("HOME", home.path())
        .env("XDG_CACHE_HOME", &cache)
        .env_remove("V82JSC_NO_BC_CACHE")
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert_eq!(files_under(home.path()), Vec::<String>::new());
}
