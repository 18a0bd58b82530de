//! The OS sandbox of shell commands, attacked with real programs on this machine: what a
//! command can read, write, connect to, signal and leave behind is what its process's
//! capabilities say, whatever program runs.

mod common;

use agent_libos::kernel::{Syscall, SyscallError};
use serde_json::Value;

fn run(argv: &[&str]) -> Syscall {
    Syscall::ShellRun {
        argv: argv.iter().map(|s| s.to_string()).collect(),
        timeout_ms: None,
        stdin: None,
    }
}

async fn sh(h: &common::TestHost, pid: i64, script: &str) -> Value {
    h.kernel
        .syscall(pid, run(&["bash", "-c", script]))
        .await
        .unwrap_or_else(|e| panic!("{script}: {e}"))
}

#[tokio::test]
async fn smoke() {
    let h = common::host().await;
    std::fs::write(h.workspace().join("a.txt"), "hello").unwrap();
    let pid = h.spawn(&["shell:bash -c=execute", "shell:cat=execute", "fs:**=read"]).await;
    let out = h.kernel.syscall(pid, run(&["cat", "a.txt"])).await;
    println!("{out:?}");
    let out = sh(&h, pid, "cat /etc/shadow; echo $?; ls /; id; cat /proc/self/status | grep -E 'Cap|NoNew|Secc'").await;
    println!("{}", out["stdout"].as_str().unwrap());
    println!("{}", out["stderr"].as_str().unwrap());
    let _ = SyscallError::internal("x");
}
