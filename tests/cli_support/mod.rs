//! Shared setup for the CLI's integration tests: the real binary on a temp database and
//! workspace.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

/// The `agent-libos` binary under test.
pub fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_agent-libos"))
}

/// The repository root (fixtures live there).
pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The path of the shipped fixture tool `name` (`fixtures/tools/NAME.ts`).
pub fn fixture_tool(name: &str) -> String {
    repo()
        .join("fixtures/tools")
        .join(format!("{name}.ts"))
        .display()
        .to_string()
}

pub struct Env {
    pub dir: tempfile::TempDir,
}

impl Env {
    pub fn new() -> Env {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir_all(dir.path().join("ws")).unwrap();
        Env { dir }
    }

    pub fn ws(&self) -> PathBuf {
        self.dir.path().join("ws")
    }

    pub fn db(&self) -> PathBuf {
        self.dir.path().join("state.db")
    }

    pub fn write(&self, rel: &str, text: &str) -> PathBuf {
        let p = self.ws().join(rel);
        if let Some(d) = p.parent() {
            std::fs::create_dir_all(d).unwrap();
        }
        std::fs::write(&p, text).unwrap();
        p
    }

    /// `agent-libos --db DB --workspace WS ARGS...` in the workspace, without the caller's
    /// database or log settings.
    fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(bin());
        command
            .arg("--db")
            .arg(self.db())
            .arg("--workspace")
            .arg(self.ws())
            .args(args)
            .current_dir(self.ws())
            .env_remove("AGENT_LIBOS_DB")
            .env_remove("RUST_LOG");
        command
    }

    /// Runs `agent-libos --db DB --workspace WS ARGS...` in the workspace.
    pub fn run(&self, args: &[&str]) -> Out {
        let output = self.command(args).output().expect("run agent-libos");
        Out::from(output)
    }

    /// Starts `agent-libos --db DB --workspace WS ARGS...` in the workspace with its standard
    /// streams piped (for commands that keep running: `--watch`, `logs --follow`).
    pub fn spawn(&self, args: &[&str]) -> std::process::Child {
        use std::process::Stdio;
        self.command(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start agent-libos")
    }
}

/// Runs the binary with exactly `args` in `cwd`.
pub fn run_in(cwd: &Path, args: &[&str]) -> Out {
    let output = Command::new(bin())
        .args(args)
        .current_dir(cwd)
        .env_remove("AGENT_LIBOS_DB")
        .env_remove("RUST_LOG")
        .output()
        .expect("run agent-libos");
    Out::from(output)
}

#[derive(Debug)]
pub struct Out {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl From<Output> for Out {
    fn from(o: Output) -> Out {
        Out {
            code: o.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    }
}

impl Out {
    /// Stdout parsed as one JSON document.
    pub fn json(&self) -> Value {
        serde_json::from_str(self.stdout.trim())
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {self:?}"))
    }

    pub fn last_line(&self) -> &str {
        self.stdout.trim_end().lines().last().unwrap_or("")
    }
}
