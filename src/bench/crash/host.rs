//! The real `agent-libos` binary as the crash loop runs it: a host started on one database
//! and workspace, killed with SIGKILL, and the short commands (`resume`, `human list`,
//! `audit show`, `ps`) that inspect what it left.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;
use serde_json::Value;

/// The `agent-libos` binary next to this one (both are built into the same target dir).
pub fn binary() -> anyhow::Result<PathBuf> {
    let me = std::env::current_exe().context("locating agent-libos-crash")?;
    let bin = me.with_file_name("agent-libos");
    anyhow::ensure!(
        bin.is_file(),
        "{}: no such file; build it with `cargo build --bin agent-libos`",
        bin.display()
    );
    Ok(bin)
}

/// One database and workspace, shared by the hosts of a shape.
pub struct Site {
    pub bin: PathBuf,
    pub db: PathBuf,
    pub ws: PathBuf,
}

impl Site {
    pub fn new(bin: &Path, dir: &Path) -> anyhow::Result<Site> {
        let ws = dir.join("ws");
        std::fs::create_dir_all(&ws).with_context(|| format!("creating {}", ws.display()))?;
        Ok(Site {
            bin: bin.to_path_buf(),
            db: dir.join("state.db"),
            ws,
        })
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(&self.bin);
        command
            .arg("--db")
            .arg(&self.db)
            .arg("--workspace")
            .arg(&self.ws)
            .args(args)
            .current_dir(&self.ws)
            .env_remove("AGENT_LIBOS_DB")
            .env_remove("RUST_LOG")
            .env("CRASH_MODEL_KEY", "sk-crash");
        command
    }

    /// Starts a host running `args`; its stdout is discarded, its stderr kept for
    /// [`Host::errors`].
    pub fn spawn(&self, args: &[&str]) -> anyhow::Result<Host> {
        let stderr = tempfile::tempfile().context("creating a file for the host's stderr")?;
        let child = self
            .command(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr.try_clone()?)
            .spawn()
            .context("starting agent-libos")?;
        Ok(Host { child, stderr })
    }

    /// Runs `--json ARGS` to completion; returns its exit code and parsed stdout.
    pub fn json(&self, args: &[&str]) -> anyhow::Result<(i32, Value)> {
        let out = self
            .command(&[&["--json"], args].concat())
            .stdin(Stdio::null())
            .output()
            .context("running agent-libos")?;
        let text = String::from_utf8_lossy(&out.stdout);
        let value = serde_json::from_str(text.trim()).unwrap_or(Value::Null);
        Ok((out.status.code().unwrap_or(-1), value))
    }

    /// The pending human requests of this site.
    pub fn pending_requests(&self) -> anyhow::Result<Vec<Value>> {
        let (_, out) = self.json(&["human", "list"])?;
        Ok(out["result"].as_array().cloned().unwrap_or_default())
    }

    /// How many syscalls of `pid` the audit log records as allowed.
    pub fn allowed_syscalls(&self, pid: i64) -> anyhow::Result<usize> {
        let pid = pid.to_string();
        let (_, out) = self.json(&["audit", "show", "--pid", &pid, "--limit", "100000"])?;
        Ok(out["result"]
            .as_array()
            .map(|r| r.iter().filter(|r| r["decision"] == "allow").count())
            .unwrap_or(0))
    }

    /// Every process of this site, ended ones too.
    pub fn processes(&self) -> anyhow::Result<Vec<Value>> {
        let (_, out) = self.json(&["ps", "--all"])?;
        Ok(out["result"].as_array().cloned().unwrap_or_default())
    }
}

/// A running `agent-libos` host.
pub struct Host {
    child: Child,
    stderr: std::fs::File,
}

impl Host {
    /// Kills the host with SIGKILL and reaps it.
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Whether the host has exited, and with which code.
    pub fn exited(&mut self) -> Option<i32> {
        self.child
            .try_wait()
            .ok()
            .flatten()
            .map(|s| s.code().unwrap_or(-1))
    }

    /// What the host wrote to stderr so far.
    pub fn errors(&mut self) -> String {
        use std::io::{Read, Seek};
        let mut text = String::new();
        let _ = self.stderr.rewind();
        let _ = self.stderr.read_to_string(&mut text);
        text
    }

    /// Waits until the host exits or `until` says stop (then kills it). Returns the exit
    /// code, or `None` if it was killed.
    pub fn wait_or_kill(
        &mut self,
        limit: Duration,
        mut until: impl FnMut() -> bool,
    ) -> Option<i32> {
        let start = Instant::now();
        loop {
            if let Some(code) = self.exited() {
                return Some(code);
            }
            if until() || start.elapsed() > limit {
                let _ = self.child.kill();
                let _ = self.child.wait();
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

/// Waits until `done` holds or `limit` passes; returns whether it held.
pub fn wait_for(limit: Duration, mut done: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < limit {
        if done() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    done()
}
