//! The command's Landlock ruleset: capability rights mapped to Landlock access rights, on
//! descriptors the launcher opened itself (workspace paths beneath the workspace without
//! following symlinks), built for the tier's ABI with `HardRequirement` so that nothing the
//! kernel lacks is silently dropped.

use std::os::fd::BorrowedFd;

use landlock::{
    Access, AccessFs, BitFlags, CompatLevel, Compatible, PathBeneath, Ruleset, RulesetAttr,
    RulesetCreatedAttr, RulesetStatus, Scope, ABI,
};

use crate::kernel::sandbox_policy::{FsAccess, Reach};

/// What a rule grants, by kind of location.
#[derive(Debug, Clone, Copy)]
pub enum Grant {
    /// `/usr`, real `/bin` and `/lib*`, toolchains: read and execute.
    ReadExec,
    /// `/etc` allowlist, `/proc`: read.
    Read,
    /// `/dev/null` and friends: read, write, device ioctls.
    Device,
    /// The scratch directory, `/dev/shm`, caches: everything but device nodes.
    Private,
    /// A workspace grant.
    Workspace(FsAccess, Reach),
}

/// The ABI of a tier number (3, 5 or 6).
pub fn abi_of(tier: u32) -> Result<ABI, String> {
    match tier {
        6 => Ok(ABI::V6),
        5 => Ok(ABI::V5),
        3 => Ok(ABI::V3),
        other => Err(format!("no sandbox tier for Landlock ABI {other}")),
    }
}

/// The Landlock rights for a grant on a file or directory.
pub fn rights(abi: ABI, grant: Grant, is_dir: bool) -> BitFlags<AccessFs> {
    let read_dir = if is_dir {
        AccessFs::ReadFile | AccessFs::ReadDir
    } else {
        AccessFs::ReadFile.into()
    };
    let make = AccessFs::MakeReg
        | AccessFs::MakeDir
        | AccessFs::MakeSym
        | AccessFs::MakeFifo
        | AccessFs::MakeSock
        | AccessFs::Refer;
    let write = AccessFs::WriteFile | AccessFs::Truncate;
    let remove = AccessFs::RemoveFile | AccessFs::RemoveDir;
    let mut rights = match grant {
        Grant::ReadExec => read_dir | AccessFs::Execute,
        Grant::Read => read_dir,
        Grant::Device => write | AccessFs::ReadFile | AccessFs::IoctlDev,
        Grant::Private => read_dir | write | make | remove | AccessFs::Execute,
        Grant::Workspace(access, reach) => {
            let mut rights = BitFlags::empty();
            if access.read {
                rights |= match (reach, is_dir) {
                    (Reach::Entry, true) => AccessFs::ReadDir.into(),
                    _ => read_dir,
                };
            }
            if access.write && !(reach == Reach::Entry && is_dir) {
                rights |= write;
                if reach == Reach::Tree {
                    rights |= make;
                }
            }
            if access.delete && reach == Reach::Tree {
                rights |= remove | AccessFs::Refer;
            }
            if access.execute {
                rights |= AccessFs::Execute;
            }
            rights
        }
    };
    if !is_dir {
        rights &= AccessFs::from_file(abi);
    }
    rights & AccessFs::from_all(abi)
}

/// Creates the ruleset with `rules` and restricts the calling thread (and its future
/// children); sets no-new-privs. Fails unless the ruleset is fully enforced.
pub fn restrict_self(
    abi: ABI,
    rules: &[(BorrowedFd<'_>, BitFlags<AccessFs>)],
) -> Result<(), String> {
    let err = |e: landlock::RulesetError| format!("landlock: {e}");
    let mut ruleset = Ruleset::default()
        .set_compatibility(CompatLevel::HardRequirement)
        .handle_access(AccessFs::from_all(abi))
        .map_err(err)?;
    let scopes = Scope::from_all(abi);
    if !scopes.is_empty() {
        ruleset = ruleset.scope(scopes).map_err(err)?;
    }
    let mut created = ruleset.create().map_err(err)?;
    for (fd, access) in rules {
        if access.is_empty() {
            continue;
        }
        created = created
            .add_rule(PathBeneath::new(*fd, *access))
            .map_err(err)?;
    }
    let status = created.restrict_self().map_err(err)?;
    if status.ruleset != RulesetStatus::FullyEnforced {
        return Err(format!(
            "landlock: the ruleset is not fully enforced ({:?})",
            status.ruleset
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rights_follow_the_capability_and_the_file_type() {
        let abi = ABI::V6;
        let read = FsAccess {
            read: true,
            ..FsAccess::default()
        };
        assert_eq!(
            rights(abi, Grant::Workspace(read, Reach::Tree), true),
            AccessFs::ReadFile | AccessFs::ReadDir
        );
        assert_eq!(
            rights(abi, Grant::Workspace(read, Reach::Entry), true),
            AccessFs::ReadDir
        );
        let write = FsAccess {
            write: true,
            ..FsAccess::default()
        };
        let file = rights(abi, Grant::Workspace(write, Reach::Tree), false);
        assert_eq!(file, AccessFs::WriteFile | AccessFs::Truncate);
        let dir = rights(abi, Grant::Workspace(write, Reach::Tree), true);
        assert!(dir.contains(AccessFs::MakeReg) && !dir.contains(AccessFs::RemoveFile));
        assert!(!dir.contains(AccessFs::MakeChar) && !dir.contains(AccessFs::MakeBlock));
        assert!(!rights(ABI::V3, Grant::Device, false).contains(AccessFs::IoctlDev));
        assert!(rights(abi, Grant::Device, false).contains(AccessFs::IoctlDev));
    }
}
