//! `agent-libos sandbox check`: what this host offers the shell sandbox, then a self-test
//! that tries to break a real sandbox (a read, a write, a connection and a background child
//! that must all fail) through a throwaway kernel.

use anyhow::{Context, Result};
use serde_json::{json, Value};

use super::args::SandboxCommand;
use super::{exit, Ctx, Failure};
use crate::kernel::{CapabilitySpec, Kernel, KernelConfig, ShellCall, SpawnOptions, Syscall};
use crate::providers::{ProcessShell, SandboxSupport};

pub async fn run(ctx: &Ctx, cmd: SandboxCommand) -> Result<i32> {
    match cmd {
        SandboxCommand::Check => check(ctx).await,
    }
}

async fn check(ctx: &Ctx) -> Result<i32> {
    let shell = ProcessShell::new(ctx.workspace.clone());
    let support = shell
        .support()
        .await
        .map_err(|e| Failure::new("IllegalState", exit::INVALID, e.to_string()))?
        .clone();
    let usable = support.unavailable().is_none();
    let checks = if usable {
        self_test().await?
    } else {
        Vec::new()
    };
    let passed = usable && checks.iter().all(|c| c["passed"] == true);
    let result = json!({
        "support": support,
        "tier": support.tier(),
        "sandbox": support.describe(),
        "usable": usable,
        "missing": support.unavailable(),
        "self_test": checks,
    });
    ctx.print(&result, || report(&support, &checks));
    Ok(if passed { exit::OK } else { exit::FAILED })
}

fn report(support: &SandboxSupport, checks: &[Value]) -> String {
    let yes = |b: bool| if b { "yes" } else { "no" };
    let mut out = format!(
        "landlock      ABI {} (errata {:#x}){}\n",
        support.landlock_abi,
        support.landlock_errata,
        support
            .tier()
            .map(|t| format!("; rules built for ABI {t}"))
            .unwrap_or_default()
    );
    out.push_str(&format!("seccomp       {}\n", yes(support.seccomp)));
    out.push_str(&format!(
        "namespaces    {}\n",
        match (support.namespaces, support.user_namespace) {
            (true, false) => "mount, PID, network (as root)".to_string(),
            (true, true) => "user, mount, PID, network".to_string(),
            (false, _) => format!(
                "no: {}",
                support.namespace_error.as_deref().unwrap_or("refused")
            ),
        }
    ));
    out.push_str(&format!(
        "processes     {}\n",
        if support.pid_max {
            "bounded by the PID namespace's pid_max"
        } else {
            "bounded by RLIMIT_NPROC only (not enforced for root)"
        }
    ));
    match support.unavailable() {
        None => out.push_str(&format!("verdict       commands run sandboxed: {}\n", support.describe())),
        Some(missing) => out.push_str(&format!(
            "verdict       commands are refused (missing: {missing}); --unsandboxed-shell runs them \
             without an OS sandbox\n"
        )),
    }
    if !checks.is_empty() {
        out.push_str("self-test\n");
        for check in checks {
            out.push_str(&format!(
                "  {:<5} {}{}\n",
                if check["passed"] == true {
                    "ok"
                } else {
                    "FAIL"
                },
                check["check"].as_str().unwrap_or_default(),
                check["detail"]
                    .as_str()
                    .map(|d| format!(": {d}"))
                    .unwrap_or_default()
            ));
        }
    }
    out
}

/// Runs commands that must be confined in a throwaway kernel; one entry per check.
async fn self_test() -> Result<Vec<Value>> {
    let dir = tempfile::Builder::new()
        .prefix("agent-libos-check-")
        .tempdir()
        .context("creating a temporary directory")?;
    let ws = dir.path().join("ws");
    std::fs::create_dir_all(&ws)?;
    std::fs::write(ws.join("granted.txt"), "granted")?;
    let secret = dir.path().join("outside.txt");
    std::fs::write(&secret, "outside")?;
    let kernel = Kernel::open(KernelConfig::new(dir.path().join("state.db"), &ws)).await?;
    let grants = [
        "shell:cat=execute",
        "shell:bash -c=execute",
        "fs:granted.txt=read",
    ]
    .iter()
    .map(|g| CapabilitySpec::parse_grant(g).map_err(anyhow::Error::msg))
    .collect::<Result<Vec<_>>>()?;
    let pid = kernel
        .spawn_root(SpawnOptions {
            goal: "sandbox self-test".into(),
            grants,
            ..SpawnOptions::default()
        })
        .await?;
    let shell = |argv: Vec<String>| {
        Syscall::Shell(ShellCall::Run {
            argv,
            timeout_ms: Some(10_000),
            stdin: None,
        })
    };
    let bash = |script: String| shell(vec!["bash".into(), "-c".into(), script]);
    let mut checks = Vec::new();
    let mut record = |check: &str, passed: bool, detail: String| {
        checks
            .push(json!({"check": check, "passed": passed, "detail": (!passed).then_some(detail)}));
    };

    let out = kernel
        .syscall(pid, shell(vec!["cat".into(), "granted.txt".into()]))
        .await;
    let passed = out.as_ref().is_ok_and(|o| o["stdout"] == "granted");
    record("a granted read works", passed, format!("{out:?}"));

    let out = kernel
        .syscall(pid, shell(vec!["cat".into(), secret.display().to_string()]))
        .await;
    let passed = out
        .as_ref()
        .is_ok_and(|o| o["exit_code"] != 0 && o["stdout"] == "");
    record(
        "a read outside the grants is refused",
        passed,
        format!("{out:?}"),
    );

    let out = kernel
        .syscall(pid, bash("echo x > written.txt".into()))
        .await;
    let passed = out.is_ok() && !ws.join("written.txt").exists();
    record(
        "a write outside the grants is refused",
        passed,
        format!("{out:?}"),
    );

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let port = listener.local_addr()?.port();
    let out = kernel
        .syscall(pid, bash(format!("exec 3<>/dev/tcp/127.0.0.1/{port}")))
        .await;
    let reached = tokio::time::timeout(std::time::Duration::from_millis(200), listener.accept())
        .await
        .is_ok();
    let passed = !reached && out.as_ref().is_ok_and(|o| o["exit_code"] != 0);
    record(
        "a connection without a net: capability is refused",
        passed,
        format!("{out:?}"),
    );

    let marker = format!("1000.{}", std::process::id());
    let out = kernel
        .syscall(pid, bash(format!("setsid sleep {marker} & echo started")))
        .await;
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    let survivors = processes_with(&marker);
    let passed = out.is_ok() && survivors.is_empty();
    record(
        "a background child dies with the command",
        passed,
        format!("{out:?}, survivors {survivors:?}"),
    );
    Ok(checks)
}

fn processes_with(marker: &str) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| {
            let cmdline = std::fs::read(e.path().join("cmdline")).ok()?;
            let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            cmdline.contains(marker).then_some(cmdline)
        })
        .collect()
}
