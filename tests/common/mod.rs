//! Shared setup for integration tests: a real kernel on a real SQLite file and workspace.
#![allow(dead_code)]

use agent_libos::kernel::{CapabilitySpec, Kernel, KernelConfig, Pid, SpawnOptions};
use tempfile::TempDir;

pub struct TestHost {
    pub dir: TempDir,
    pub kernel: Kernel,
}

impl TestHost {
    pub fn db_path(&self) -> std::path::PathBuf {
        self.dir.path().join("state.db")
    }

    pub fn workspace(&self) -> std::path::PathBuf {
        self.dir.path().join("ws")
    }

    pub async fn spawn(&self, grants: &[&str]) -> Pid {
        let grants = grants
            .iter()
            .map(|g| CapabilitySpec::parse_grant(g).expect("grant syntax"))
            .collect();
        self.kernel
            .spawn_root(SpawnOptions {
                goal: "test".into(),
                grants,
                ..SpawnOptions::default()
            })
            .await
            .expect("spawn")
    }

    /// Spawns a process that may also ask a human for `requestable`.
    pub async fn spawn_requesting(&self, grants: &[&str], requestable: &[&str]) -> Pid {
        let parse = |list: &[&str]| {
            list.iter()
                .map(|g| CapabilitySpec::parse_grant(g).expect("grant syntax"))
                .collect()
        };
        self.kernel
            .spawn_root(SpawnOptions {
                goal: "test".into(),
                grants: parse(grants),
                requestable: parse(requestable),
                ..SpawnOptions::default()
            })
            .await
            .expect("spawn")
    }

    /// Opens a second kernel on the same database and workspace (as after a restart).
    pub async fn reopen(&self) -> Kernel {
        Kernel::open(self.config()).await.expect("reopen")
    }

    pub fn config(&self) -> KernelConfig {
        KernelConfig::new(self.db_path(), self.workspace())
    }
}

pub async fn host() -> TestHost {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir_all(dir.path().join("ws")).unwrap();
    let kernel = Kernel::open(KernelConfig::new(
        dir.path().join("state.db"),
        dir.path().join("ws"),
    ))
    .await
    .expect("open kernel");
    TestHost { dir, kernel }
}

/// A small tool with a declared test, shared by the agent-loop and MCP tests.
pub const COUNT_LINES: &str = r#"export const tool = {
  name: "count_lines",
  description: "Counts the lines of a text file",
  input: { type: "object", properties: { path: { type: "string" } }, required: ["path"] },
  output: { type: "object", properties: { lines: { type: "integer" } }, required: ["lines"] },
  tests: [
    { name: "three lines", args: { path: "a.txt" },
      syscalls: [ { primitive: "fs.read_text", result: "a\nb\nc" } ],
      expect: { lines: 3 } },
  ],
};

export default async function run(args: { path: string }, libos: any) {
  const text = await libos.fs.readText(args.path);
  return { lines: text.split("\n").length };
}
"#;
