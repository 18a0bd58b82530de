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
