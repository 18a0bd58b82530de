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
