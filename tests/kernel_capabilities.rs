//! Capabilities through the kernel API: bypass, revocation, attenuation, one-shot, deny.
// Tests build their fixtures on the host and drive the real binary.
#![allow(clippy::disallowed_methods, clippy::disallowed_types)]

mod common;

use agent_libos::kernel::{
    CapabilitySpec, ClockCall, ImageCall, MemCall, ObjectSpec, Policy, ProcCall, Right, Syscall,
    SyscallError,
};
use serde_json::json;

fn create(ns: Option<&str>, name: Option<&str>) -> Syscall {
    Syscall::Mem(MemCall::Create(ObjectSpec {
        namespace: ns.map(String::from),
        name: name.map(String::from),
        object_type: "note".into(),
        payload: json!({"text": "hello"}),
        ..ObjectSpec::default()
    }))
}

fn assert_denied(result: Result<serde_json::Value, SyscallError>, resource: &str, right: &str) {
    match result {
        Err(SyscallError::PermissionDenied {
            resource: r,
            right: g,
            ..
        }) => {
            assert_eq!(r, resource);
            assert_eq!(g, right);
        }
        other => panic!("expected PermissionDenied on {resource} ({right}), got {other:?}"),
    }
}

#[tokio::test]
async fn another_process_cannot_read_my_objects_by_id_or_name() {
    let h = common::host().await;
    let alice = h.spawn(&[]).await;
    let bob = h.spawn(&[]).await;
    let created = h
        .kernel
        .syscall(alice, create(None, Some("diary")))
        .await
        .unwrap();
    let id = created["id"].as_str().unwrap().to_string();
    assert_denied(
        h.kernel
            .syscall(bob, Syscall::Mem(MemCall::Read { id: id.clone() }))
            .await,
        &format!("object:{id}"),
        "read",
    );
    // Knowing the name is no capability either.
    assert_denied(
        h.kernel
            .syscall(
                bob,
                Syscall::Mem(MemCall::Find {
                    namespace: Some(format!("proc/{alice}")),
                    name: "diary".into(),
                }),
            )
            .await,
        &format!("namespace:proc/{alice}"),
        "read",
    );
    // A made-up id is denied too (existence is not revealed).
    assert_denied(
        h.kernel
            .syscall(
                bob,
                Syscall::Mem(MemCall::Read {
                    id: "obj_nope".into(),
                }),
            )
            .await,
        "object:obj_nope",
        "read",
    );
    // The owner reads it.
    let read = h
        .kernel
        .syscall(alice, Syscall::Mem(MemCall::Read { id: id.clone() }))
        .await
        .unwrap();
    assert_eq!(read["payload"]["text"], "hello");
    // Sharing by capability works.
    h.kernel
        .grant(
            bob,
            CapabilitySpec::new(format!("object:{id}"), &[Right::Read], Policy::AlwaysAllow),
        )
        .await
        .unwrap();
    let read = h
        .kernel
        .syscall(bob, Syscall::Mem(MemCall::Read { id }))
        .await
        .unwrap();
    assert_eq!(read["name"], "diary");
}

#[tokio::test]
async fn revoked_capability_denies_and_revocation_reaches_derived_ones() {
    let h = common::host().await;
    let parent = h.spawn(&[]).await;
    h.kernel
        .syscall(
            parent,
            Syscall::Mem(MemCall::CreateNamespace { name: "x".into() }),
        )
        .await
        .unwrap_err();
    let cap = h
        .kernel
        .grant(
            parent,
            CapabilitySpec::new(
                "namespace:shared",
                &[Right::Create, Right::Read],
                Policy::AlwaysAllow,
            )
            .delegable(),
        )
        .await
        .unwrap();
    let child = h
        .kernel
        .syscall(
            parent,
            Syscall::Proc(ProcCall::Fork {
                goal: None,
                inherit: vec![CapabilitySpec::new(
                    "namespace:shared",
                    &[Right::Read],
                    Policy::AlwaysAllow,
                )],
                budget: None,
            }),
        )
        .await
        .unwrap()["pid"]
        .as_i64()
        .unwrap();
    h.kernel
        .syscall(
            parent,
            Syscall::Mem(MemCall::List {
                namespace: Some("shared".into()),
            }),
        )
        .await
        .unwrap();
    h.kernel
        .syscall(
            child,
            Syscall::Mem(MemCall::List {
                namespace: Some("shared".into()),
            }),
        )
        .await
        .unwrap();
    let revoked = h.kernel.revoke(cap).await.unwrap();
    assert_eq!(
        revoked.len(),
        2,
        "the child's derived capability is revoked too"
    );
    assert_denied(
        h.kernel
            .syscall(
                parent,
                Syscall::Mem(MemCall::List {
                    namespace: Some("shared".into()),
                }),
            )
            .await,
        "namespace:shared",
        "read",
    );
    assert_denied(
        h.kernel
            .syscall(
                child,
                Syscall::Mem(MemCall::List {
                    namespace: Some("shared".into()),
                }),
            )
            .await,
        "namespace:shared",
        "read",
    );
}

#[tokio::test]
async fn fork_inherits_only_what_is_listed_and_never_more_than_the_parent() {
    let h = common::host().await;
    let parent = h.spawn(&["namespace:shared=read,create"]).await;
    // Not delegable: cannot be passed on at all.
    let err = h
        .kernel
        .syscall(
            parent,
            Syscall::Proc(ProcCall::Fork {
                goal: None,
                inherit: vec![CapabilitySpec::new(
                    "namespace:shared",
                    &[Right::Read],
                    Policy::AlwaysAllow,
                )],
                budget: None,
            }),
        )
        .await;
    assert_denied(err, "namespace:shared", "read");

    let h = common::host().await;
    let parent = h
        .kernel
        .spawn_root(agent_libos::kernel::SpawnOptions {
            goal: "p".into(),
            grants: vec![CapabilitySpec::new(
                "namespace:shared/**",
                &[Right::Read, Right::Create],
                Policy::AlwaysAllow,
            )
            .delegable()],
            ..Default::default()
        })
        .await
        .unwrap();
    // Fork with nothing listed: the child has no access to shared.
    let child = h
        .kernel
        .syscall(
            parent,
            Syscall::Proc(ProcCall::Fork {
                goal: None,
                inherit: vec![],
                budget: None,
            }),
        )
        .await
        .unwrap()["pid"]
        .as_i64()
        .unwrap();
    assert_denied(
        h.kernel
            .syscall(
                child,
                Syscall::Mem(MemCall::List {
                    namespace: Some("shared/a".into()),
                }),
            )
            .await,
        "namespace:shared/a",
        "read",
    );
    // Asking for write (the parent lacks it) fails, naming the right.
    let err = h
        .kernel
        .syscall(
            parent,
            Syscall::Proc(ProcCall::Fork {
                goal: None,
                inherit: vec![CapabilitySpec::new(
                    "namespace:shared/a",
                    &[Right::Read, Right::Write],
                    Policy::AlwaysAllow,
                )],
                budget: None,
            }),
        )
        .await;
    assert_denied(err, "namespace:shared/a", "write");
    // Asking for a broader resource than the parent holds fails.
    let err = h
        .kernel
        .syscall(
            parent,
            Syscall::Proc(ProcCall::Fork {
                goal: None,
                inherit: vec![CapabilitySpec::new(
                    "namespace:**",
                    &[Right::Read],
                    Policy::AlwaysAllow,
                )],
                budget: None,
            }),
        )
        .await;
    assert_denied(err, "namespace:**", "read");
    // A narrower, attenuated one works, and the child's policy is never looser.
    let child = h
        .kernel
        .syscall(
            parent,
            Syscall::Proc(ProcCall::Fork {
                goal: None,
                inherit: vec![CapabilitySpec::new(
                    "namespace:shared/a",
                    &[Right::Read],
                    Policy::AlwaysAllow,
                )],
                budget: None,
            }),
        )
        .await
        .unwrap()["pid"]
        .as_i64()
        .unwrap();
    let caps = h.kernel.capabilities(child);
    let inherited = caps
        .iter()
        .find(|c| c.resource == "namespace:shared/a")
        .unwrap();
    assert_eq!(inherited.rights, vec![Right::Read]);
    assert!(!inherited.delegable);
    assert_eq!(inherited.issuer, Some(parent));
}

#[tokio::test]
async fn one_shot_is_consumed_by_success_only() {
    let h = common::host().await;
    let pid = h.spawn(&["namespace:team=create:allow_once"]).await;
    // A failing attempt (the namespace does not exist yet) keeps the grant.
    let err = h
        .kernel
        .syscall(pid, create(Some("team"), None))
        .await
        .unwrap_err();
    assert!(matches!(err, SyscallError::NotFound(_)), "{err:?}");
    // Make the namespace exist through another process with a standing grant.
    let admin = h.spawn(&["namespace:team=create"]).await;
    h.kernel
        .syscall(
            admin,
            Syscall::Mem(MemCall::CreateNamespace {
                name: "team".into(),
            }),
        )
        .await
        .unwrap();
    // First success consumes it; the second is denied.
    h.kernel
        .syscall(pid, create(Some("team"), None))
        .await
        .unwrap();
    assert_denied(
        h.kernel.syscall(pid, create(Some("team"), None)).await,
        "namespace:team",
        "create",
    );
}

#[tokio::test]
async fn explicit_deny_beats_any_allow() {
    let h = common::host().await;
    let pid = h
        .spawn(&["namespace:**=read", "namespace:secrets=read:always_deny"])
        .await;
    let admin = h
        .spawn(&["namespace:secrets=create", "namespace:public=create"])
        .await;
    for ns in ["secrets", "public"] {
        h.kernel
            .syscall(
                admin,
                Syscall::Mem(MemCall::CreateNamespace { name: ns.into() }),
            )
            .await
            .unwrap();
    }
    h.kernel
        .syscall(
            pid,
            Syscall::Mem(MemCall::List {
                namespace: Some("public".into()),
            }),
        )
        .await
        .unwrap();
    assert_denied(
        h.kernel
            .syscall(
                pid,
                Syscall::Mem(MemCall::List {
                    namespace: Some("secrets".into()),
                }),
            )
            .await,
        "namespace:secrets",
        "read",
    );
}

#[tokio::test]
async fn images_need_a_capability_and_exec_never_grants_required_capabilities() {
    let h = common::host().await;
    let manifest = "id = \"writer\"\nversion = \"1\"\nrequired_capabilities = [\"fs:**=write\"]\n[[capabilities]]\nresource = \"fs:**\"\nrights = [\"write\"]\n";
    let pid = h.spawn(&[]).await;
    assert_denied(
        h.kernel
            .syscall(
                pid,
                Syscall::Image(ImageCall::Register {
                    manifest: manifest.into(),
                }),
            )
            .await,
        "image:writer",
        "write",
    );
    let pid = h.spawn(&["image:writer=write,execute"]).await;
    h.kernel
        .syscall(
            pid,
            Syscall::Image(ImageCall::Register {
                manifest: manifest.into(),
            }),
        )
        .await
        .unwrap();
    let out = h
        .kernel
        .syscall(
            pid,
            Syscall::Proc(ProcCall::Exec {
                image: "writer".into(),
            }),
        )
        .await
        .unwrap();
    assert_eq!(out["missing_capabilities"], json!(["fs:**=write"]));
    assert!(h
        .kernel
        .capabilities(pid)
        .iter()
        .all(|c| !c.resource.starts_with("fs:")));
    assert_eq!(h.kernel.process(pid).unwrap().image_id, "writer");
    let bad = h
        .kernel
        .syscall(
            pid,
            Syscall::Image(ImageCall::Register {
                manifest: "id = 1".into(),
            }),
        )
        .await
        .unwrap_err();
    assert_eq!(bad.kind(), "InvalidArgument");
}

#[tokio::test]
async fn unknown_pid_and_bad_arguments_are_clear_errors() {
    let h = common::host().await;
    let err = h
        .kernel
        .syscall(999, Syscall::Clock(ClockCall::Now))
        .await
        .unwrap_err();
    assert_eq!(err, SyscallError::NotFound("process 999".into()));
    let err = Syscall::from_wire(json!({"primitive": "mem.read", "id": 5})).unwrap_err();
    assert!(err.contains("invalid type"), "{err}");
}

/// A process spawned with the given operator specs (delegable ones marked with `+`).
async fn spawn_with(h: &common::TestHost, grants: &[&str]) -> i64 {
    let grants = grants
        .iter()
        .map(|g| match g.strip_prefix('+') {
            Some(g) => CapabilitySpec::parse_grant(g).unwrap().delegable(),
            None => CapabilitySpec::parse_grant(g).unwrap(),
        })
        .collect();
    h.kernel
        .spawn_root(agent_libos::kernel::SpawnOptions {
            goal: "p".into(),
            grants,
            ..Default::default()
        })
        .await
        .unwrap()
}

async fn fork_with(
    h: &common::TestHost,
    parent: i64,
    inherit: &[&str],
) -> Result<i64, SyscallError> {
    let inherit = inherit
        .iter()
        .map(|g| CapabilitySpec::parse_grant(g).unwrap())
        .collect();
    h.kernel
        .syscall(
            parent,
            Syscall::Proc(ProcCall::Fork {
                goal: None,
                inherit,
                budget: None,
            }),
        )
        .await
        .map(|v| v["pid"].as_i64().unwrap())
}

/// `from` grants `spec` to its descendant `to` by `cap.grant`.
async fn cap_grant(
    h: &common::TestHost,
    from: i64,
    to: i64,
    spec: CapabilitySpec,
) -> Result<serde_json::Value, SyscallError> {
    h.kernel
        .syscall(
            from,
            Syscall::Cap(agent_libos::kernel::CapCall::Grant { to, spec }),
        )
        .await
}

fn read_file(path: &str) -> Syscall {
    Syscall::Fs(agent_libos::kernel::FsCall::ReadText { path: path.into() })
}

#[tokio::test]
async fn fork_carries_the_parents_deny() {
    let h = common::host().await;
    std::fs::write(h.workspace().join("secret.txt"), "s3cret").unwrap();
    std::fs::write(h.workspace().join("notes.txt"), "notes").unwrap();
    let parent = spawn_with(&h, &["+fs:**=read", "fs:secret.txt=read:always_deny"]).await;
    assert_denied(
        h.kernel.syscall(parent, read_file("secret.txt")).await,
        "fs:secret.txt",
        "read",
    );
    let child = fork_with(&h, parent, &["fs:**=read"]).await.unwrap();
    assert_eq!(
        h.kernel
            .syscall(child, read_file("notes.txt"))
            .await
            .unwrap(),
        "notes"
    );
    assert_denied(
        h.kernel.syscall(child, read_file("secret.txt")).await,
        "fs:secret.txt",
        "read",
    );
    // The parent cannot lift the copied deny: it did not issue it.
    let copy = h
        .kernel
        .capabilities(child)
        .into_iter()
        .find(|c| c.policy == Policy::AlwaysDeny)
        .unwrap();
    let err = h
        .kernel
        .syscall(
            parent,
            Syscall::Cap(agent_libos::kernel::CapCall::Revoke { id: copy.id }),
        )
        .await;
    assert_denied(err, &format!("capability:{}", copy.id), "revoke");
    // Nor can it pass the file on by `cap.grant` to a descendant.
    let secret = CapabilitySpec::new("fs:secret.txt", &[Right::Read], Policy::AlwaysAllow);
    cap_grant(&h, parent, child, secret).await.unwrap();
    assert_denied(
        h.kernel.syscall(child, read_file("secret.txt")).await,
        "fs:secret.txt",
        "read",
    );
    // A grandchild inherits the restriction again.
    let grandchild = fork_with(&h, child, &[]).await.unwrap();
    let all = CapabilitySpec::new("fs:**", &[Right::Read], Policy::AlwaysAllow);
    cap_grant(&h, parent, grandchild, all).await.unwrap();
    assert_denied(
        h.kernel.syscall(grandchild, read_file("secret.txt")).await,
        "fs:secret.txt",
        "read",
    );
}

#[tokio::test]
async fn fork_carries_the_parents_need_to_ask() {
    let h = common::host().await;
    std::fs::create_dir(h.workspace().join("keys")).unwrap();
    std::fs::write(h.workspace().join("keys/id"), "key").unwrap();
    let parent = spawn_with(&h, &["+fs:**=read", "fs:keys/*=read:ask"]).await;
    // Whether the child asks for all of `fs:**` or exactly the file, it must ask too.
    for inherit in ["fs:**=read", "fs:keys/id=read"] {
        let child = fork_with(&h, parent, &[inherit]).await.unwrap();
        let err = h.kernel.syscall(child, read_file("keys/id"));
        let err = tokio::time::timeout(std::time::Duration::from_millis(500), err).await;
        assert!(
            err.is_err(),
            "{inherit}: the child read keys/id without a human"
        );
        let pending = h.kernel.human_requests(false).await.unwrap();
        assert!(
            pending
                .iter()
                .any(|r| r.pid == child && r.payload["resource"] == "fs:keys/id"),
            "{inherit}: {pending:?}"
        );
    }
}

#[tokio::test]
async fn fs_star_does_not_delegate_fs_double_star() {
    let h = common::host().await;
    std::fs::create_dir(h.workspace().join("deep")).unwrap();
    std::fs::write(h.workspace().join("deep/x.txt"), "x").unwrap();
    let parent = spawn_with(&h, &["+fs:*=read"]).await;
    for wider in ["fs:**", "fs:deep/*", "fs:deep/x.txt"] {
        let forked = fork_with(&h, parent, &[&format!("{wider}=read")]).await;
        assert_denied(forked.map(serde_json::Value::from), wider, "read");
    }
    let child = fork_with(&h, parent, &["fs:deep=read"]).await.unwrap();
    assert_denied(
        h.kernel.syscall(child, read_file("deep/x.txt")).await,
        "fs:deep/x.txt",
        "read",
    );
}

#[tokio::test]
async fn spawn_needs_execute_on_the_image() {
    let h = common::host().await;
    let spawn = |image: &str| {
        Syscall::Proc(ProcCall::Spawn {
            image: image.into(),
            goal: "child".into(),
            budget: None,
        })
    };
    let nobody = h.spawn(&[]).await;
    assert_denied(
        h.kernel.syscall(nobody, spawn("base")).await,
        "image:base",
        "execute",
    );
    let allowed = h.spawn(&["image:base=execute"]).await;
    h.kernel.syscall(allowed, spawn("base")).await.unwrap();
    assert_denied(
        h.kernel.syscall(allowed, spawn("other")).await,
        "image:other",
        "execute",
    );
}

#[tokio::test]
async fn unsupported_patterns_are_refused_wherever_a_capability_is_made() {
    let h = common::host().await;
    for bad in [
        "fs:*.env",
        "fs:a*b",
        "fs:src/**/x",
        "fs:{a,b}",
        "fs:a?",
        "net:*.example.org",
        "shell:g[i]t",
    ] {
        let spec = CapabilitySpec::new(bad, &[Right::Read], Policy::AlwaysDeny);
        // Operator grants, at spawn and later.
        let err = h
            .kernel
            .spawn_root(agent_libos::kernel::SpawnOptions {
                goal: "p".into(),
                grants: vec![spec.clone()],
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(err.kind(), "InvalidArgument", "{bad}: {err}");
        let pid = spawn_with(
            &h,
            &[
                "+fs:**=read",
                "+shell:**=read",
                "+net:**=read",
                "human:operator=write",
            ],
        )
        .await;
        assert_eq!(
            h.kernel.grant(pid, spec.clone()).await.unwrap_err().kind(),
            "InvalidArgument"
        );
        // The `--grant` syntax.
        assert!(
            CapabilitySpec::parse_grant(&format!("{bad}=read")).is_err(),
            "{bad}"
        );
        // Delegation by fork and cap.grant.
        let err = h
            .kernel
            .syscall(
                pid,
                Syscall::Proc(ProcCall::Fork {
                    goal: None,
                    inherit: vec![spec.clone()],
                    budget: None,
                }),
            )
            .await
            .unwrap_err();
        assert_eq!(err.kind(), "InvalidArgument", "{bad}: {err}");
        let child = fork_with(&h, pid, &[]).await.unwrap();
        let err = cap_grant(&h, pid, child, spec.clone()).await.unwrap_err();
        assert_eq!(err.kind(), "InvalidArgument", "{bad}: {err}");
        // A permission request.
        let err = h
            .kernel
            .syscall(
                pid,
                Syscall::Human(agent_libos::kernel::HumanCall::RequestPermission {
                    resource: bad.into(),
                    rights: vec![Right::Read],
                    reason: "r".into(),
                    channel: "operator".into(),
                }),
            )
            .await
            .unwrap_err();
        assert_eq!(err.kind(), "InvalidArgument", "{bad}: {err}");
        // An image manifest.
        let manifest = format!(
            "id = \"img\"\nversion = \"1\"\n[[capabilities]]\nresource = \"{bad}\"\nrights = [\"read\"]\n"
        );
        assert!(
            agent_libos::kernel::Image::from_toml(&manifest).is_err(),
            "{bad}"
        );
        let manifest =
            format!("id = \"img\"\nversion = \"1\"\nrequired_capabilities = [\"{bad}=read\"]\n");
        assert!(
            agent_libos::kernel::Image::from_toml(&manifest).is_err(),
            "{bad}"
        );
    }
}

#[tokio::test]
async fn a_literal_star_name_never_becomes_a_pattern() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("ws")).unwrap();
    std::fs::write(dir.path().join("ws/**"), "a file named **").unwrap();
    std::fs::write(dir.path().join("ws/*"), "a file named *").unwrap();
    std::fs::write(dir.path().join("ws/secret.txt"), "secret").unwrap();
    let mut config =
        agent_libos::kernel::KernelConfig::new(dir.path().join("state.db"), dir.path().join("ws"));
    config.human_mode = agent_libos::kernel::HumanMode::FailFast;
    let kernel = agent_libos::kernel::Kernel::open(config).await.unwrap();
    let pid = kernel
        .spawn_root(agent_libos::kernel::SpawnOptions {
            goal: "p".into(),
            grants: vec![CapabilitySpec::parse_grant("fs:**=read:ask").unwrap()],
            ..Default::default()
        })
        .await
        .unwrap();
    for name in ["**", "*"] {
        let err = kernel.syscall(pid, read_file(name)).await.unwrap_err();
        let SyscallError::HumanRequired { request_id, .. } = err else {
            panic!("{err:?}")
        };
        let request = kernel.human_request(&request_id).await.unwrap().unwrap();
        let shown = format!("fs:{}", name.replace('*', "\\*"));
        assert_eq!(request.payload["resource"], shown.as_str());
        kernel
            .human_respond(
                &request_id,
                agent_libos::kernel::HumanAnswer::ApproveAlways,
                "tester",
            )
            .await
            .unwrap();
        assert!(kernel.syscall(pid, read_file(name)).await.is_ok());
        let stored = kernel
            .capabilities(pid)
            .into_iter()
            .any(|c| c.resource == shown);
        assert!(stored, "the approval is stored as the exact name {shown}");
    }
    // Neither approval reaches any other file.
    let err = kernel
        .syscall(pid, read_file("secret.txt"))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), "HumanRequired", "{err:?}");
}

#[tokio::test]
async fn mem_find_respects_object_denies() {
    let h = common::host().await;
    let admin = h.spawn(&["namespace:team=create,read"]).await;
    let team = MemCall::CreateNamespace {
        name: "team".into(),
    };
    h.kernel.syscall(admin, Syscall::Mem(team)).await.unwrap();
    let id = h
        .kernel
        .syscall(admin, create(Some("team"), Some("plan")))
        .await
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    h.kernel
        .syscall(admin, create(Some("team"), Some("public")))
        .await
        .unwrap();
    let reader = h
        .spawn(&[
            "namespace:team=read",
            &format!("object:{id}=read:always_deny"),
        ])
        .await;
    let find = |name: &str| {
        Syscall::Mem(MemCall::Find {
            namespace: Some("team".into()),
            name: name.into(),
        })
    };
    assert_denied(
        h.kernel
            .syscall(reader, Syscall::Mem(MemCall::Read { id: id.clone() }))
            .await,
        &format!("object:{id}"),
        "read",
    );
    assert_denied(
        h.kernel.syscall(reader, find("plan")).await,
        &format!("object:{id}"),
        "read",
    );
    assert_eq!(
        h.kernel.syscall(reader, find("public")).await.unwrap()["name"],
        "public"
    );
    // The listing does not show the denied object's header either.
    let list = h
        .kernel
        .syscall(
            reader,
            Syscall::Mem(MemCall::List {
                namespace: Some("team".into()),
            }),
        )
        .await
        .unwrap();
    let names: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["public"]);
    // Without read on the namespace, finding by name reveals nothing about the object.
    let outsider = h.spawn(&[]).await;
    assert_denied(
        h.kernel.syscall(outsider, find("plan")).await,
        "namespace:team",
        "read",
    );
}

#[tokio::test]
async fn the_highest_image_version_runs_whatever_the_registration_order() {
    let h = common::host().await;
    for version in ["1.10.0", "1.9.0", "1.2.0"] {
        let manifest = format!("id = \"coder\"\nversion = \"{version}\"\n");
        h.kernel
            .register_image(&agent_libos::kernel::Image::from_toml(&manifest).unwrap())
            .await
            .unwrap();
    }
    assert_eq!(h.kernel.image("coder").await.unwrap().version, "1.10.0");
    let pid = h.spawn(&["image:coder=execute"]).await;
    let out = h
        .kernel
        .syscall(
            pid,
            Syscall::Proc(ProcCall::Exec {
                image: "coder".into(),
            }),
        )
        .await
        .unwrap();
    assert_eq!(out["version"], "1.10.0");
    let child = h
        .kernel
        .syscall(
            pid,
            Syscall::Proc(ProcCall::Spawn {
                image: "coder".into(),
                goal: "c".into(),
                budget: None,
            }),
        )
        .await
        .unwrap()["pid"]
        .as_i64()
        .unwrap();
    assert_eq!(h.kernel.process(child).unwrap().image_version, "1.10.0");
    // A fresh runtime on the same database agrees.
    assert_eq!(
        h.reopen().await.image("coder").await.unwrap().version,
        "1.10.0"
    );
}
