//! The runtime's own state is out of every process's reach, and a row the kernel did not
//! write grants and answers nothing.
//!
//! The attacker here is a tool-like actor: something with a path to the database (an
//! allowed interpreter, a second program) that writes SQLite directly, bypassing the kernel.
// Tests write the state files on the host, as an attacker with their path would.
#![allow(clippy::disallowed_methods, clippy::disallowed_types)]

mod common;

use std::time::Duration;

use agent_libos::kernel::{
    CapabilitySpec, FsCall, HumanAnswer, Kernel, KernelConfig, MemCall, ObjectSpec, Pid,
    SpawnOptions, Syscall, SyscallError,
};
use serde_json::json;

/// A kernel whose database lives inside its workspace (an operator's `--db` override).
async fn db_in_workspace() -> (tempfile::TempDir, Kernel) {
    let dir = tempfile::tempdir().unwrap();
    let ws = dir.path().join("ws");
    std::fs::create_dir_all(ws.join("state")).unwrap();
    std::fs::write(ws.join("notes.txt"), "mine").unwrap();
    let kernel = Kernel::open(KernelConfig::new(ws.join("state/state.db"), &ws))
        .await
        .unwrap();
    (dir, kernel)
}

async fn spawn(kernel: &Kernel, grants: &[&str]) -> Pid {
    kernel
        .spawn_root(SpawnOptions {
            goal: "test".into(),
            grants: grants
                .iter()
                .map(|g| CapabilitySpec::parse_grant(g).unwrap())
                .collect(),
            ..Default::default()
        })
        .await
        .unwrap()
}

fn fs(call: FsCall) -> Syscall {
    Syscall::Fs(call)
}

fn assert_reserved(result: Result<serde_json::Value, SyscallError>, what: &str) {
    match result {
        Err(SyscallError::PermissionDenied { detail, .. }) => {
            assert!(detail.contains("reserved"), "{what}: {detail}")
        }
        other => panic!("{what}: expected a denial, got {other:?}"),
    }
}

/// A second connection to the database file: what a command with a path to it could do.
async fn outside_writer(db: &std::path::Path) -> sqlx::SqlitePool {
    sqlx::sqlite::SqlitePoolOptions::new()
        .max_connections(1)
        .connect_with(
            sqlx::sqlite::SqliteConnectOptions::new()
                .filename(db)
                .busy_timeout(Duration::from_secs(10)),
        )
        .await
        .unwrap()
}

#[tokio::test]
async fn a_tool_cannot_read_the_state_database_with_fs_all() {
    let (dir, k) = db_in_workspace().await;
    let pid = spawn(&k, &["fs:**=read,write,delete"]).await;
    // The process can use the workspace...
    let text = k
        .syscall(
            pid,
            fs(FsCall::ReadText {
                path: "notes.txt".into(),
            }),
        )
        .await
        .unwrap();
    assert_eq!(text, "mine");
    // ...but not one file of the runtime's state, by any primitive or spelling.
    for path in [
        "state/state.db",
        "state/./state.db",
        "./state/state.db",
        "state//state.db-wal",
        "state/state.db-shm",
        "state/state.db.key",
    ] {
        assert_reserved(
            k.syscall(pid, fs(FsCall::ReadBytes { path: path.into() }))
                .await,
            path,
        );
    }
    assert_reserved(
        k.syscall(
            pid,
            fs(FsCall::WriteText {
                path: "state/state.db".into(),
                content: "".into(),
                overwrite: true,
            }),
        )
        .await,
        "overwrite",
    );
    // A file SQLite has not created yet is reserved by its name.
    assert_reserved(
        k.syscall(
            pid,
            fs(FsCall::WriteText {
                path: "state/state.db-journal".into(),
                content: "planted".into(),
                overwrite: false,
            }),
        )
        .await,
        "plant a journal",
    );
    assert_reserved(
        k.syscall(
            pid,
            fs(FsCall::Mkdir {
                path: "state/state.db.head".into(),
                recursive: true,
            }),
        )
        .await,
        "mkdir over the head",
    );
    assert_reserved(
        k.syscall(
            pid,
            fs(FsCall::DeleteFile {
                path: "state/state.db".into(),
            }),
        )
        .await,
        "delete",
    );
    assert_reserved(
        k.syscall(
            pid,
            fs(FsCall::DeleteDir {
                path: "state".into(),
                recursive: true,
            }),
        )
        .await,
        "recursive delete",
    );
    // A hard link under another name is the same file.
    let ws = dir.path().join("ws");
    std::fs::hard_link(ws.join("state/state.db"), ws.join("innocent.txt")).unwrap();
    assert_reserved(
        k.syscall(
            pid,
            fs(FsCall::ReadBytes {
                path: "innocent.txt".into(),
            }),
        )
        .await,
        "hard link",
    );
    // Listings leave the state out.
    let listed = k
        .syscall(
            pid,
            fs(FsCall::List {
                path: "state".into(),
            }),
        )
        .await
        .unwrap();
    assert_eq!(listed, json!([]), "{listed}");
    let root = k
        .syscall(pid, fs(FsCall::List { path: ".".into() }))
        .await
        .unwrap();
    let names: Vec<&str> = root
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["notes.txt", "state"]);
    // Nothing was lost: the state is intact and the chain verifies.
    assert!(ws.join("state/state.db").exists());
    assert!(k.verify_audit().await.unwrap().is_ok());
}

#[tokio::test]
async fn the_reserved_paths_name_every_state_file() {
    let config = KernelConfig::new("/var/lib/x/state.db", "/w");
    let paths = config.reserved_paths();
    for suffix in ["", "-wal", "-shm", "-journal", ".key", ".head"] {
        let want = std::path::PathBuf::from(format!("/var/lib/x/state.db{suffix}"));
        assert!(paths.contains(&want), "{want:?} in {paths:?}");
    }
}

#[tokio::test]
async fn a_forged_capability_row_grants_nothing() {
    let h = common::host().await;
    let pid = h.spawn(&["fs:notes.txt=read"]).await;
    std::fs::write(h.workspace().join("secret.txt"), "s").unwrap();
    let held: Vec<i64> = h.kernel.capabilities(pid).iter().map(|c| c.id).collect();
    let outside = outside_writer(&h.db_path()).await;
    // Mint fs:** admin, and widen the process's own grant.
    sqlx::query(
        "INSERT INTO capabilities (id, subject, resource, rights, policy, issuer, parent, \
         expires_at, delegable, revocable, revoked, consumed, created_at, mac) \
         VALUES (99999, ?, 'fs:**', '[\"admin\"]', 'always_allow', NULL, NULL, NULL, 1, 0, 0, 0, 0, \
         'ab12')",
    )
    .bind(pid)
    .execute(&outside)
    .await
    .unwrap();
    sqlx::query("UPDATE capabilities SET resource = 'fs:**' WHERE resource = 'fs:notes.txt'")
        .execute(&outside)
        .await
        .unwrap();
    let k = h.reopen().await;
    let caps = k.capabilities(pid);
    assert!(caps.iter().all(|c| c.resource != "fs:**"), "{caps:?}");
    assert!(caps.len() < held.len(), "the widened row is refused too");
    let err = k
        .syscall(
            pid,
            fs(FsCall::ReadText {
                path: "secret.txt".into(),
            }),
        )
        .await
        .unwrap_err();
    assert_eq!(err.kind(), "PermissionDenied");
    // The kernel's own rows still work.
    k.syscall(
        pid,
        Syscall::Mem(MemCall::Create(ObjectSpec {
            object_type: "n".into(),
            ..Default::default()
        })),
    )
    .await
    .unwrap();
}

#[tokio::test]
async fn a_forged_answer_approves_nothing() {
    let h = common::host().await;
    let pid = h
        .spawn(&["fs:out.txt=write:ask_each_time", "human:operator=write"])
        .await;
    let kernel = h.kernel.clone();
    let write = tokio::spawn(async move {
        kernel
            .syscall(
                pid,
                fs(FsCall::WriteText {
                    path: "out.txt".into(),
                    content: "forged approval".into(),
                    overwrite: false,
                }),
            )
            .await
    });
    let pending = wait_pending(&h.kernel).await;
    // The actor approves the request and mints the grant an `approve_always` would make.
    let outside = outside_writer(&h.db_path()).await;
    sqlx::query(
        "UPDATE human_requests SET status = 'approved', answer = '{\"answer\":\"approve_always\"}', \
         answered_by = 'me' WHERE id = ?",
    )
    .bind(&pending.id)
    .execute(&outside)
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO capabilities (id, subject, resource, rights, policy, issuer, parent, \
         expires_at, delegable, revocable, revoked, consumed, created_at) \
         VALUES (99998, ?, 'fs:**', '[\"admin\"]', 'always_allow', NULL, NULL, NULL, 1, 0, 0, 0, 0)",
    )
    .bind(pid)
    .execute(&outside)
    .await
    .unwrap();
    // Several polls later the call is still parked and nothing was written.
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert!(!write.is_finished(), "a forged answer released the call");
    assert!(!h.workspace().join("out.txt").exists());
    assert!(h
        .kernel
        .capabilities(pid)
        .iter()
        .all(|c| c.resource != "fs:**"));
    // The forged row is not listed and cannot be answered any more.
    assert!(h.kernel.human_requests(true).await.unwrap().is_empty());
    let err = h
        .kernel
        .human_respond(&pending.id, HumanAnswer::ApproveOnce, "alice")
        .await
        .unwrap_err();
    assert!(err.to_string().contains("seal"), "{err}");
    write.abort();
}

#[tokio::test]
async fn a_database_from_before_seals_is_adopted_once_and_audited() {
    let h = common::host().await;
    let pid = h.spawn(&["fs:notes.txt=read"]).await;
    h.kernel.store().flush().await.unwrap();
    // As an older runtime left it: no seals, no key.
    let outside = outside_writer(&h.db_path()).await;
    for table in ["capabilities", "human_requests", "images"] {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "UPDATE {table} SET mac = NULL"
        )))
        .execute(&outside)
        .await
        .unwrap();
    }
    std::fs::remove_file(h.db_path().with_file_name("state.db.key")).unwrap();
    let k = h.reopen().await;
    assert!(k
        .capabilities(pid)
        .iter()
        .any(|c| c.resource == "fs:notes.txt"));
    let adopted: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM audit WHERE action = 'integrity.adopt'")
            .fetch_one(&outside)
            .await
            .unwrap();
    assert_eq!(adopted, 1);
    // Once a key exists, a row without a seal is refused again.
    sqlx::query("UPDATE capabilities SET mac = NULL WHERE resource = 'fs:notes.txt'")
        .execute(&outside)
        .await
        .unwrap();
    let k = h.reopen().await;
    assert!(k
        .capabilities(pid)
        .iter()
        .all(|c| c.resource != "fs:notes.txt"));
}

#[tokio::test]
async fn a_lost_key_is_an_error_not_a_fresh_start() {
    let h = common::host().await;
    h.spawn(&["fs:notes.txt=read"]).await;
    h.kernel.store().flush().await.unwrap();
    std::fs::remove_file(h.db_path().with_file_name("state.db.key")).unwrap();
    let err = match Kernel::open(h.config()).await {
        Err(e) => e.to_string(),
        Ok(_) => panic!("opened without its key"),
    };
    assert!(err.contains("key file"), "{err}");
    assert!(err.contains("restore"), "{err}");
    assert!(!h.db_path().with_file_name("state.db.key").exists());
}

async fn wait_pending(kernel: &Kernel) -> agent_libos::kernel::HumanRequest {
    for _ in 0..400 {
        if let Some(r) = kernel
            .human_requests(false)
            .await
            .unwrap()
            .into_iter()
            .next()
        {
            return r;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    panic!("no pending human request appeared");
}

/// Restoring a large store verifies capability seals on several threads: a forged or
/// widened row anywhere among thousands is refused, and every sealed row loads.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn among_thousands_of_capabilities_a_forged_row_grants_nothing() {
    const PROCESSES: usize = 2_100; // 4 capabilities each: more than one thread's share
    let h = common::host().await;
    let next = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut spawners = Vec::new();
    for _ in 0..32 {
        let (kernel, next) = (h.kernel.clone(), next.clone());
        spawners.push(tokio::spawn(async move {
            let mut pids = Vec::new();
            while next.fetch_add(1, std::sync::atomic::Ordering::Relaxed) < PROCESSES {
                pids.push(
                    common::spawn_on(&kernel, &["fs:notes.txt=read", "namespace:shared=read"])
                        .await,
                );
            }
            pids
        }));
    }
    let mut pids = Vec::new();
    for s in spawners {
        pids.extend(s.await.unwrap());
    }
    pids.sort();
    let (first, middle, last) = (pids[0], pids[PROCESSES / 2], pids[PROCESSES - 1]);
    let held = h.kernel.capabilities(middle).len();
    let outside = outside_writer(&h.db_path()).await;
    sqlx::query(
        "INSERT INTO capabilities (id, subject, resource, rights, policy, issuer, parent, \
         expires_at, delegable, revocable, revoked, consumed, created_at, mac) \
         VALUES (999999, ?, 'fs:**', '[\"admin\"]', 'always_allow', NULL, NULL, NULL, 1, 0, 0, 0, 0, \
         'ab12')",
    )
    .bind(middle)
    .execute(&outside)
    .await
    .unwrap();
    for pid in [first, last] {
        sqlx::query(
            "UPDATE capabilities SET resource = 'fs:**' WHERE subject = ? AND resource = 'fs:notes.txt'",
        )
        .bind(pid)
        .execute(&outside)
        .await
        .unwrap();
    }
    let k = h.reopen().await;
    for &pid in &pids {
        let caps = k.capabilities(pid);
        assert!(caps.iter().all(|c| c.resource != "fs:**"), "{caps:?}");
        let expected = if pid == first || pid == last {
            held - 1
        } else {
            held
        };
        assert_eq!(caps.len(), expected, "pid {pid}: {caps:?}");
    }
}
