//! `agent-libos checkpoint …` through the real binary: create → change → rollback (with the
//! effects it did not undo), fork, and export → import into another database.
// Tests build their fixtures on the host and drive the real binary.
#![allow(clippy::disallowed_methods, clippy::disallowed_types)]

mod cli_support;

use agent_libos::kernel::{
    CapabilitySpec, FsCall, HumanMode, Kernel, KernelConfig, MemCall, ObjectSpec, Pid,
    SpawnOptions, Syscall,
};
use cli_support::Env;
use serde_json::{json, Value};

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Runtime::new().unwrap()
}

async fn kernel(env: &Env) -> Kernel {
    let mut config = KernelConfig::new(env.db(), env.ws());
    config.human_mode = HumanMode::FailFast;
    Kernel::open(config).await.expect("open")
}

async fn note(k: &Kernel, pid: Pid, text: &str) -> String {
    let v = k
        .syscall(
            pid,
            Syscall::Mem(MemCall::Create(ObjectSpec {
                object_type: "note".into(),
                payload: json!(text),
                title: Some(text.into()),
                ..ObjectSpec::default()
            })),
        )
        .await
        .unwrap();
    v["id"].as_str().unwrap().to_string()
}

/// A live process holding one note, able to write `out.txt`.
fn setup(env: &Env) -> (Pid, String) {
    rt().block_on(async {
        let k = kernel(env).await;
        let pid = k
            .spawn_root(SpawnOptions {
                goal: "keep notes".into(),
                grants: vec![CapabilitySpec::parse_grant("fs:out.txt=write").unwrap()],
                ..SpawnOptions::default()
            })
            .await
            .unwrap();
        let id = note(&k, pid, "before").await;
        k.store().flush().await.unwrap();
        (pid, id)
    })
}

fn object_titles(env: &Env, pid: Pid) -> Vec<String> {
    rt().block_on(async {
        let k = kernel(env).await;
        let list = k
            .syscall(pid, Syscall::Mem(MemCall::List { namespace: None }))
            .await
            .unwrap();
        let mut titles: Vec<String> = list
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|o| o["title"].as_str().map(String::from))
            .collect();
        titles.sort();
        titles
    })
}

#[test]
fn create_change_rollback_lists_what_it_did_not_undo() {
    let env = Env::new();
    let (pid, _) = setup(&env);
    let pid_s = pid.to_string();

    let created = env.run(&["--json", "checkpoint", "create", &pid_s, "--name", "clean"]);
    assert_eq!(created.code, 0, "{created:?}");
    let ck = created.json()["result"].clone();
    let id = ck["id"].as_str().unwrap().to_string();
    assert_eq!(ck["pid"], json!(pid));
    assert_eq!(ck["name"], json!("clean"));
    assert_eq!(ck["objects"], json!(1));

    // Change: a second note, and a file written outside the runtime.
    rt().block_on(async {
        let k = kernel(&env).await;
        note(&k, pid, "after").await;
        k.syscall(
            pid,
            Syscall::Fs(FsCall::WriteText {
                path: "out.txt".into(),
                content: "written after the checkpoint".into(),
                overwrite: false,
            }),
        )
        .await
        .unwrap();
        k.store().flush().await.unwrap();
    });
    assert_eq!(object_titles(&env, pid), vec!["after", "before"]);

    let list = env.run(&["checkpoint", "list"]);
    assert_eq!(list.code, 0, "{list:?}");
    assert!(
        list.stdout.contains(&id) && list.stdout.contains("clean"),
        "{list:?}"
    );
    let list = env.run(&["--json", "checkpoint", "list", &pid_s]);
    assert_eq!(list.json()["result"][0]["id"], json!(id));
    let none = env.run(&["--json", "checkpoint", "list", "999"]);
    assert_eq!(none.json()["result"], json!([]));

    let rolled = env.run(&["checkpoint", "rollback", &id]);
    assert_eq!(rolled.code, 0, "{rolled:?}");
    let text = &rolled.stdout;
    assert!(
        text.contains(&format!("rolled back process {pid} to checkpoint {id}")),
        "{text}"
    );
    assert!(text.contains("removed 1 created since"), "{text}");
    assert!(
        text.contains("NOT undone: 1 effect outside the runtime"),
        "{text}"
    );
    assert!(
        text.contains("fs.write_text") && text.contains("fs:out.txt"),
        "{text}"
    );
    assert_eq!(object_titles(&env, pid), vec!["before"]);
    // The file stays: a rollback restores only what the runtime owns.
    assert!(env.ws().join("out.txt").exists());

    let again = env.run(&["--json", "checkpoint", "rollback", &id]);
    assert_eq!(again.code, 0, "{again:?}");
    let report = again.json()["result"].clone();
    assert_eq!(report["objects_removed"], json!(0));
    assert_eq!(
        report["external_effects"][0]["action"],
        json!("fs.write_text")
    );
    assert!(again.stderr.contains("NOT undone"), "{again:?}");

    let missing = env.run(&["checkpoint", "rollback", "ckpt_nope"]);
    assert_eq!(missing.code, 2, "{missing:?}");
    assert!(missing.stderr.contains("checkpoint list"), "{missing:?}");
    let no_proc = env.run(&["checkpoint", "create", "999"]);
    assert_eq!(no_proc.code, 2, "{no_proc:?}");
}

#[test]
fn fork_starts_a_sibling_with_the_checkpointed_memory() {
    let env = Env::new();
    let (pid, _) = setup(&env);
    let created = env.run(&["--json", "checkpoint", "create", &pid.to_string()]);
    let id = created.json()["result"]["id"].as_str().unwrap().to_string();
    let forked = env.run(&["--json", "checkpoint", "fork", &id]);
    assert_eq!(forked.code, 0, "{forked:?}");
    let child: Pid = forked.json()["result"]["pid"].as_i64().unwrap();
    assert_ne!(child, pid);
    assert_eq!(object_titles(&env, child), vec!["before"]);
    let text = env.run(&["checkpoint", "fork", &id]);
    assert!(
        text.stdout
            .starts_with(&format!("forked checkpoint {id} into process ")),
        "{text:?}"
    );
}

#[test]
fn export_then_import_into_another_database() {
    let env = Env::new();
    let (pid, _) = setup(&env);
    let created = env.run(&["--json", "checkpoint", "create", &pid.to_string()]);
    let id = created.json()["result"]["id"].as_str().unwrap().to_string();
    let file = env.dir.path().join("ckpt.json");
    let out = env.run(&["checkpoint", "export", &id, "--out", file.to_str().unwrap()]);
    assert_eq!(out.code, 0, "{out:?}");
    assert!(out.stdout.contains("exported checkpoint"), "{out:?}");
    let doc: Value = serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
    assert_eq!(doc["format"], json!("agent-libos-checkpoint/1"));
    let to_stdout = env.run(&["checkpoint", "export", &id, "--out", "-"]);
    assert_eq!(to_stdout.json()["checkpoint"]["id"], json!(id));

    let other = Env::new();
    // The document's capabilities are listed, never granted; --grant grants.
    let plain = other.run(&["checkpoint", "import", file.to_str().unwrap()]);
    assert_eq!(plain.code, 0, "{plain:?}");
    assert!(plain.stdout.contains("NOT granted"), "{plain:?}");
    assert!(plain.stdout.contains("fs:out.txt=write"), "{plain:?}");
    let imported = other.run(&[
        "--json",
        "checkpoint",
        "import",
        file.to_str().unwrap(),
        "--grant",
        "fs:out.txt=write",
    ]);
    assert_eq!(imported.code, 0, "{imported:?}");
    let result = &imported.json()["result"];
    assert_eq!(result["granted"].as_array().unwrap().len(), 1, "{result}");
    let new_pid: Pid = result["pid"].as_i64().unwrap();
    let caps: Vec<String> = {
        let mut config = KernelConfig::new(other.db(), other.ws());
        config.human_mode = HumanMode::FailFast;
        let rt = tokio::runtime::Runtime::new().unwrap();
        rt.block_on(async {
            Kernel::open(config)
                .await
                .unwrap()
                .capabilities(new_pid)
                .into_iter()
                .map(|c| c.resource)
                .collect()
        })
    };
    assert!(caps.contains(&"fs:out.txt".to_string()), "{caps:?}");
    assert_eq!(object_titles(&other, new_pid), vec!["before"]);
    let ps = other.run(&["--json", "ps"]);
    assert_eq!(ps.json()["result"][0]["goal"], json!("keep notes"));

    let junk = other.write("junk.json", "{\"format\": \"nope\"}");
    let bad = other.run(&["checkpoint", "import", junk.to_str().unwrap()]);
    assert_eq!(bad.code, 2, "{bad:?}");
    assert!(bad.stderr.contains("not a checkpoint document"), "{bad:?}");
}
