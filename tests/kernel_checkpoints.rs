//! Checkpoints through the kernel API: rollback, fork, export/import into another database.
// Tests build their fixtures on the host and drive the real binary.
#![allow(clippy::disallowed_methods, clippy::disallowed_types)]

mod common;

use agent_libos::kernel::{
    CapCall, CapabilitySpec, ClockCall, FsCall, Image, ImportOptions, Kernel, MemCall, ObjectSpec,
    Pid, ProcCall, Signal, SpawnOptions, Syscall, SyscallError, CHECKPOINT_FORMAT,
};
use serde_json::{json, Value};

fn note(ns: Option<&str>, name: &str, payload: Value, appendable: bool) -> Syscall {
    Syscall::Mem(MemCall::Create(ObjectSpec {
        namespace: ns.map(String::from),
        name: Some(name.into()),
        object_type: "note".into(),
        payload,
        tags: vec!["t".into()],
        appendable,
        ..ObjectSpec::default()
    }))
}

async fn call(kernel: &Kernel, pid: Pid, call: Syscall) -> Value {
    kernel.syscall(pid, call).await.expect("syscall")
}

/// Every object of a namespace as the process reads it (header, payload, items), by name.
async fn memory(kernel: &Kernel, pid: Pid, ns: Option<String>) -> Vec<Value> {
    let list = call(kernel, pid, Syscall::Mem(MemCall::List { namespace: ns })).await;
    let mut out = Vec::new();
    for header in list.as_array().unwrap() {
        let id = header["id"].as_str().unwrap().to_string();
        let mut object = call(kernel, pid, Syscall::Mem(MemCall::Read { id })).await;
        // Compare what a checkpoint must keep, not where it lives.
        object.as_object_mut().unwrap().remove("namespace");
        out.push(object);
    }
    out.sort_by_key(|o| o["name"].as_str().unwrap_or_default().to_string());
    out
}

fn without(objects: &[Value], keys: &[&str]) -> Vec<Value> {
    objects
        .iter()
        .map(|o| {
            let mut o = o.clone();
            for k in keys {
                o.as_object_mut().unwrap().remove(*k);
            }
            o
        })
        .collect()
}

/// (id, resource, rights, policy) of a process's live capabilities.
fn caps(kernel: &Kernel, pid: Pid) -> Vec<(i64, String, String, String)> {
    let mut caps: Vec<_> = kernel
        .capabilities(pid)
        .into_iter()
        .map(|c| {
            (
                c.id,
                c.resource,
                format!("{:?}", c.rights),
                c.policy.as_str().to_string(),
            )
        })
        .collect();
    caps.sort();
    caps
}

fn resources(kernel: &Kernel, pid: Pid) -> Vec<(String, String, String)> {
    let mut out: Vec<_> = caps(kernel, pid)
        .into_iter()
        .filter(|(_, r, _, _)| !r.starts_with("namespace:proc/"))
        .map(|(_, r, g, p)| (r, g, p))
        .collect();
    out.sort();
    out
}

fn grant(text: &str) -> CapabilitySpec {
    CapabilitySpec::parse_grant(text).unwrap()
}

/// A process with objects in its own namespace (one appendable with items) and in a second
/// namespace it owns, and an operator grant.
async fn populated(h: &common::TestHost) -> (Pid, String, i64) {
    let pid = h
        .spawn(&["fs:**=read,write", "namespace:team=read,create"])
        .await;
    let k = &h.kernel;
    let log = call(k, pid, note(None, "log", json!({"kind": "log"}), true)).await;
    let log = log["id"].as_str().unwrap().to_string();
    for i in 0..3 {
        call(
            k,
            pid,
            Syscall::Mem(MemCall::Append {
                id: log.clone(),
                item: json!({"step": i, "text": format!("line \"{i}\"")}),
            }),
        )
        .await;
    }
    call(
        k,
        pid,
        note(None, "plan", json!("a plain string, with ' quotes"), false),
    )
    .await;
    call(
        k,
        pid,
        Syscall::Mem(MemCall::CreateNamespace {
            name: "team".into(),
        }),
    )
    .await;
    call(
        k,
        pid,
        note(
            Some("team"),
            "roster",
            json!([1, 2.5, null, {"a": []}]),
            false,
        ),
    )
    .await;
    let granted = k.grant(pid, grant("net:example.org=read")).await.unwrap();
    (pid, log, granted)
}

#[tokio::test]
async fn rollback_restores_objects_and_items_revokes_new_capabilities_and_lists_external_effects() {
    let h = common::host().await;
    let k = &h.kernel;
    let (pid, log, granted) = populated(&h).await;
    let own_before = memory(k, pid, None).await;
    let team_before = memory(k, pid, Some("team".into())).await;
    let caps_before = caps(k, pid);
    let cwd_before = k.process(pid).unwrap().cwd;

    let ckpt = k.checkpoint_create(pid, "before-changes").await.unwrap();
    assert_eq!(ckpt.objects, 3);
    assert_eq!(ckpt.capabilities as usize, caps_before.len());
    assert!(ckpt.id.starts_with("ckpt_"));
    let listed = k.checkpoints(Some(pid)).await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].id, ckpt.id);
    assert_eq!(listed[0].objects, 3);
    assert_eq!(listed[0].audit_seq, ckpt.audit_seq);
    assert!(k.checkpoints(Some(pid + 1000)).await.unwrap().is_empty());

    // Change everything a checkpoint covers.
    call(
        k,
        pid,
        Syscall::Mem(MemCall::Append {
            id: log.clone(),
            item: json!("after"),
        }),
    )
    .await;
    call(k, pid, note(None, "later", json!({"new": true}), false)).await;
    call(k, pid, note(Some("team"), "later", json!(1), false)).await;
    k.revoke(granted).await.unwrap();
    let gained = k.grant(pid, grant("fs:secret/**=read")).await.unwrap();
    std::fs::create_dir_all(h.workspace().join("sub")).unwrap();
    call(
        k,
        pid,
        Syscall::Proc(ProcCall::Chdir { path: "sub".into() }),
    )
    .await;
    assert_ne!(k.process(pid).unwrap().cwd, cwd_before);
    let wrote = call(
        k,
        pid,
        Syscall::Fs(FsCall::WriteText {
            path: "../after.txt".into(),
            content: "written after the checkpoint".into(),
            overwrite: false,
        }),
    )
    .await;
    assert_eq!(wrote["path"], "after.txt");
    assert_ne!(memory(k, pid, None).await, own_before);

    let report = k.checkpoint_rollback(&ckpt.id).await.unwrap();
    assert_eq!(report.pid, pid);
    assert_eq!(report.objects, 3);
    assert_eq!(report.objects_removed, 2);
    assert_eq!(report.capabilities_not_restored, vec![granted]);
    assert_eq!(report.capabilities_revoked, vec![gained]);
    // The file write is outside the runtime: listed, not undone.
    let effects: Vec<(&str, &str)> = report
        .external_effects
        .iter()
        .map(|e| (e.action.as_str(), e.target.as_str()))
        .collect();
    assert_eq!(effects, [("fs.write_text", "fs:after.txt")]);
    assert!(report.external_effects[0].seq > ckpt.audit_seq);
    assert_eq!(
        std::fs::read_to_string(h.workspace().join("after.txt")).unwrap(),
        "written after the checkpoint"
    );
    // The report crosses the CLI boundary as JSON.
    let wire = serde_json::to_value(&report).unwrap();
    assert_eq!(wire["external_effects"][0]["action"], "fs.write_text");

    // Memory is exactly as it was; capabilities are those of the checkpoint still live.
    assert_eq!(memory(k, pid, None).await, own_before);
    assert_eq!(memory(k, pid, Some("team".into())).await, team_before);
    let still_live: Vec<_> = caps_before
        .iter()
        .filter(|c| c.0 != granted)
        .cloned()
        .collect();
    assert_eq!(caps(k, pid), still_live);
    assert_eq!(k.process(pid).unwrap().cwd, cwd_before);
    let err = k
        .syscall(
            pid,
            Syscall::Mem(MemCall::Find {
                namespace: None,
                name: "later".into(),
            }),
        )
        .await
        .unwrap_err();
    assert_eq!(err.kind(), "NotFound");
    // The grant revoked since stays revoked; the new one is gone.
    let held = k.capabilities(pid);
    assert!(!held.iter().any(|c| c.id == granted));
    assert!(!held.iter().any(|c| c.id == gained));
    // The process carries on: appends continue after the restored items, names are free.
    call(
        k,
        pid,
        Syscall::Mem(MemCall::Append {
            id: log.clone(),
            item: json!("resumed"),
        }),
    )
    .await;
    let read = call(k, pid, Syscall::Mem(MemCall::Read { id: log })).await;
    assert_eq!(read["items"].as_array().unwrap().len(), 4);
    assert_eq!(read["items"][3], "resumed");
    call(k, pid, note(None, "later", json!(2), false)).await;

    // A reopened kernel sees the same state.
    let again = h.reopen().await;
    assert_eq!(caps(&again, pid), caps(k, pid));

    let err = k.checkpoint_rollback("ckpt_nope").await.unwrap_err();
    assert!(matches!(err, SyscallError::NotFound(_)), "{err:?}");
    assert!(k.verify_audit().await.unwrap().is_ok());
}

#[tokio::test]
async fn rollback_does_not_rearm_a_consumed_grant() {
    let h = common::host().await;
    let k = &h.kernel;
    std::fs::write(h.workspace().join("secret.txt"), "once").unwrap();
    let pid = h.spawn(&["fs:secret.txt=read:allow_once"]).await;
    let once = k
        .capabilities(pid)
        .into_iter()
        .find(|c| c.resource == "fs:secret.txt")
        .unwrap()
        .id;
    let ckpt = k.checkpoint_create(pid, "armed").await.unwrap();
    let read = Syscall::Fs(FsCall::ReadText {
        path: "secret.txt".into(),
    });
    assert_eq!(call(k, pid, read.clone()).await, json!("once"));
    let report = k.checkpoint_rollback(&ckpt.id).await.unwrap();
    assert_eq!(report.capabilities_not_restored, vec![once]);
    for kernel in [k.clone(), h.reopen().await] {
        let err = kernel.syscall(pid, read.clone()).await.unwrap_err();
        assert_eq!(err.kind(), "PermissionDenied", "{err:?}");
    }
}

#[tokio::test]
async fn rollback_revokes_what_was_delegated_from_capabilities_gained_since() {
    let h = common::host().await;
    let k = &h.kernel;
    let pid = h.spawn(&["image:base=execute"]).await;
    let ckpt = k.checkpoint_create(pid, "empty").await.unwrap();
    let gained = k
        .grant(
            pid,
            CapabilitySpec {
                delegable: true,
                ..grant("fs:docs/**=read")
            },
        )
        .await
        .unwrap();
    let child = call(
        k,
        pid,
        Syscall::Proc(ProcCall::Spawn {
            image: "base".into(),
            goal: "helper".into(),
            budget: None,
        }),
    )
    .await["pid"]
        .as_i64()
        .unwrap();
    call(
        k,
        pid,
        Syscall::Cap(CapCall::Grant {
            to: child,
            spec: grant("fs:docs/**=read"),
        }),
    )
    .await;
    let delegated = k
        .capabilities(child)
        .into_iter()
        .find(|c| c.resource == "fs:docs/**")
        .unwrap()
        .id;
    let report = k.checkpoint_rollback(&ckpt.id).await.unwrap();
    assert_eq!(report.capabilities_revoked, vec![gained, delegated]);
    assert_eq!(report.children_since, vec![child]);
    assert!(!k.capabilities(child).iter().any(|c| c.id == delegated));
    assert!(k.verify_audit().await.unwrap().is_ok());
}

#[tokio::test]
async fn fork_from_a_checkpoint_owns_copies_of_the_objects_and_the_capabilities() {
    let h = common::host().await;
    let k = &h.kernel;
    let (pid, _, granted) = populated(&h).await;
    let ckpt = k.checkpoint_create(pid, "fork-point").await.unwrap();
    // Changes after the checkpoint are not in the fork.
    call(k, pid, note(None, "later", json!(1), false)).await;

    let fork = k.checkpoint_fork(&ckpt.id).await.unwrap();
    assert_ne!(fork, pid);
    let original = memory(k, pid, None).await;
    let copied = memory(k, fork, None).await;
    let ignore = ["id", "created_by", "created_at"];
    let expected: Vec<Value> = without(&original, &ignore)
        .into_iter()
        .filter(|o| o["name"] != "later")
        .collect();
    assert_eq!(without(&copied, &ignore), expected);
    for (a, b) in copied.iter().zip(original.iter()) {
        assert_ne!(a["id"], b["id"], "copies get new ids");
    }
    // The second owned namespace lives under the fork's own namespace.
    let team = memory(k, fork, Some(format!("proc/{fork}/team"))).await;
    assert_eq!(
        without(&team, &ignore),
        without(&memory(k, pid, Some("team".into())).await, &ignore)
    );
    // The fork does not reach the original's memory.
    let err = k
        .syscall(
            fork,
            Syscall::Mem(MemCall::List {
                namespace: Some(format!("proc/{pid}")),
            }),
        )
        .await
        .unwrap_err();
    assert_eq!(err.kind(), "PermissionDenied");
    // Same grants, derived from the originals: revoking the original reaches the copy. A
    // grant naming a namespace the original owns is not copied (the fork has its own copy).
    let mut expected = resources(k, pid);
    expected.retain(|(r, _, _)| r != "namespace:team");
    assert_eq!(resources(k, fork), expected);
    let copy = k
        .capabilities(fork)
        .into_iter()
        .find(|c| c.resource == "net:example.org")
        .unwrap();
    assert_eq!(copy.parent, Some(granted));
    let revoked = k.revoke(granted).await.unwrap();
    assert!(revoked.contains(&copy.id));
    assert!(!k.capabilities(fork).iter().any(|c| c.id == copy.id));
    assert_eq!(
        k.process(fork).unwrap().parent,
        k.process(pid).unwrap().parent
    );
    assert!(matches!(
        k.checkpoint_fork("ckpt_nope").await,
        Err(SyscallError::NotFound(_))
    ));
    assert!(k.verify_audit().await.unwrap().is_ok());
}

#[tokio::test]
async fn export_then_import_into_another_database_resumes_the_process() {
    let a = common::host().await;
    let image = Image::from_toml(
        r#"
id = "writer"
version = "2.0.0"
system_prompt = "write notes"
[[capabilities]]
resource = "fs:notes/**"
rights = ["read", "write"]
"#,
    )
    .unwrap();
    a.kernel.register_image(&image).await.unwrap();
    let pid = a
        .kernel
        .spawn_root(SpawnOptions {
            image: Some("writer".into()),
            goal: "take notes".into(),
            grants: vec![grant("namespace:team=create")],
            ..SpawnOptions::default()
        })
        .await
        .unwrap();
    let k = &a.kernel;
    call(k, pid, note(None, "draft", json!({"text": "hello"}), true)).await;
    let draft = call(
        k,
        pid,
        Syscall::Mem(MemCall::Find {
            namespace: None,
            name: "draft".into(),
        }),
    )
    .await;
    call(
        k,
        pid,
        Syscall::Mem(MemCall::Append {
            id: draft["id"].as_str().unwrap().into(),
            item: json!({"edit": 1}),
        }),
    )
    .await;
    let ckpt = k.checkpoint_create(pid, "to-move").await.unwrap();
    let doc = k.checkpoint_export(&ckpt.id).await.unwrap();
    assert_eq!(doc["format"], CHECKPOINT_FORMAT);
    assert_eq!(doc["image"]["id"], "writer");
    // Through a file, as the CLI does.
    let text = serde_json::to_string_pretty(&doc).unwrap();
    let doc: Value = serde_json::from_str(&text).unwrap();

    let b = common::host().await;
    std::fs::create_dir_all(b.workspace().join("notes")).unwrap();
    let other = b.spawn(&[]).await;
    let kb = &b.kernel;
    // The document's image is not registered here: the operator must say so.
    let err = kb
        .checkpoint_import(doc.clone(), ImportOptions::default())
        .await
        .unwrap_err();
    assert_eq!(err.kind(), "NotFound", "{err:?}");
    assert!(err.to_string().contains("--register-image"), "{err}");
    // The document grants nothing; the importing operator grants again what it means to.
    let operator = ImportOptions {
        grants: vec![
            grant("fs:notes/**=read,write"),
            grant("namespace:team=create"),
        ],
        register_image: true,
    };
    let report = kb
        .checkpoint_import(doc.clone(), operator.clone())
        .await
        .unwrap();
    let listed: Vec<&str> = report
        .not_granted
        .iter()
        .map(|c| c.resource.as_str())
        .collect();
    assert_eq!(listed, ["fs:notes/**", "namespace:team"]);
    assert_eq!(report.granted.len(), 2);
    let moved = report.pid;
    assert_eq!(kb.image("writer").await.unwrap(), image);
    let process = kb.process(moved).unwrap();
    assert_eq!(process.image_id, "writer");
    assert_eq!(process.goal, "take notes");
    assert_eq!(process.parent, None);
    let ignore = ["id", "created_by", "created_at"];
    assert_eq!(
        without(&memory(kb, moved, None).await, &ignore),
        without(&memory(k, pid, None).await, &ignore)
    );
    assert_eq!(resources(kb, moved), resources(k, pid));
    // It does what its capabilities allow here, and nothing more.
    call(
        kb,
        moved,
        Syscall::Fs(FsCall::WriteText {
            path: "notes/today.md".into(),
            content: "resumed elsewhere".into(),
            overwrite: false,
        }),
    )
    .await;
    assert!(b.workspace().join("notes/today.md").exists());
    let err = kb
        .syscall(
            moved,
            Syscall::Fs(FsCall::WriteText {
                path: "elsewhere.md".into(),
                content: "no".into(),
                overwrite: false,
            }),
        )
        .await
        .unwrap_err();
    assert_eq!(err.kind(), "PermissionDenied");
    let err = kb
        .syscall(
            moved,
            Syscall::Mem(MemCall::List {
                namespace: Some(format!("proc/{other}")),
            }),
        )
        .await
        .unwrap_err();
    assert_eq!(err.kind(), "PermissionDenied");
    call(
        kb,
        moved,
        Syscall::Mem(MemCall::CreateNamespace {
            name: "team".into(),
        }),
    )
    .await;
    // Importing twice gives two independent processes (the image is registered once).
    let again = kb.checkpoint_import(doc, operator).await.unwrap();
    assert_ne!(again.pid, moved);
    assert_eq!(kb.images().await.unwrap().len(), 1);

    let err = kb
        .checkpoint_import(
            json!({"format": "something-else"}),
            ImportOptions::default(),
        )
        .await
        .unwrap_err();
    assert_eq!(err.kind(), "InvalidArgument");
    assert!(k.verify_audit().await.unwrap().is_ok());
    assert!(kb.verify_audit().await.unwrap().is_ok());
}

#[tokio::test]
async fn a_terminal_process_cannot_be_rolled_back() {
    let h = common::host().await;
    let k = &h.kernel;
    let pid = h.spawn(&[]).await;
    let ckpt = k.checkpoint_create(pid, "last").await.unwrap();
    k.signal(pid, Signal::Kill).await.unwrap();
    let err = k.checkpoint_rollback(&ckpt.id).await.unwrap_err();
    assert!(matches!(err, SyscallError::IllegalState(_)), "{err:?}");
    // Its state can still be forked.
    let fork = k.checkpoint_fork(&ckpt.id).await.unwrap();
    call(k, fork, Syscall::Clock(ClockCall::Now)).await;
    assert!(matches!(
        k.checkpoint_create(9999, "x").await,
        Err(SyscallError::NotFound(_))
    ));
    assert!(k.verify_audit().await.unwrap().is_ok());
}

#[tokio::test]
async fn an_imported_document_grants_nothing_by_itself() {
    let a = common::host().await;
    let pid = a.spawn(&["fs:notes.txt=read"]).await;
    let ckpt = a.kernel.checkpoint_create(pid, "x").await.unwrap();
    let mut doc = a.kernel.checkpoint_export(&ckpt.id).await.unwrap();
    // Whoever holds the file can write anything into it.
    doc["data"]["capabilities"].as_array_mut().unwrap().push(
        json!({"id": 1, "resource": "fs:**", "rights": ["admin"], "policy": "always_allow",
                     "expires_at": null, "delegable": true}),
    );
    let b = common::host().await;
    std::fs::write(b.workspace().join("secret.txt"), "s").unwrap();
    let report = b
        .kernel
        .checkpoint_import(doc, ImportOptions::default())
        .await
        .unwrap();
    assert!(report.granted.is_empty());
    assert!(report.not_granted.iter().any(|c| c.resource == "fs:**"));
    let held: Vec<String> = b
        .kernel
        .capabilities(report.pid)
        .into_iter()
        .map(|c| c.resource)
        .collect();
    assert!(held.iter().all(|r| r.starts_with("namespace:")), "{held:?}");
    let err = b
        .kernel
        .syscall(
            report.pid,
            Syscall::Fs(FsCall::ReadText {
                path: "secret.txt".into(),
            }),
        )
        .await
        .unwrap_err();
    assert_eq!(err.kind(), "PermissionDenied");
}

#[tokio::test]
async fn a_fork_reissues_capabilities_from_their_rows_not_the_snapshot() {
    let h = common::host().await;
    let k = &h.kernel;
    let pid = h.spawn(&["fs:notes.txt=read"]).await;
    let ckpt = k.checkpoint_create(pid, "x").await.unwrap();
    k.store().flush().await.unwrap();
    // The stored snapshot is edited to widen what the capability was.
    let db = sqlx::sqlite::SqlitePoolOptions::new()
        .connect_with(sqlx::sqlite::SqliteConnectOptions::new().filename(h.db_path()))
        .await
        .unwrap();
    let data: String = sqlx::query_scalar("SELECT data FROM checkpoints WHERE id = ?")
        .bind(&ckpt.id)
        .fetch_one(&db)
        .await
        .unwrap();
    let widened = data
        .replace("fs:notes.txt", "fs:**")
        .replace("[\"read\"]", "[\"admin\"]");
    assert_ne!(widened, data);
    sqlx::query("UPDATE checkpoints SET data = ? WHERE id = ?")
        .bind(widened)
        .bind(&ckpt.id)
        .execute(&db)
        .await
        .unwrap();
    let fork = k.checkpoint_fork(&ckpt.id).await.unwrap();
    let held: Vec<(String, String)> = k
        .capabilities(fork)
        .into_iter()
        .filter(|c| c.resource.starts_with("fs:"))
        .map(|c| (c.resource, format!("{:?}", c.rights)))
        .collect();
    assert_eq!(held, [("fs:notes.txt".to_string(), "[Read]".to_string())]);
}
