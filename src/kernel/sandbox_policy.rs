//! The OS sandbox of one command, derived from the calling process's capabilities.
//!
//! Pure data, built by the kernel at the command's intent point and handed to the shell
//! provider inside a [`super::authz::CheckedSandbox`]; the provider builds the sandbox from
//! it and never looks at capabilities. Only `always_allow` grants become access (a command
//! cannot stop to ask a human per file); `always_deny` rules inside granted trees become
//! carve-outs; the runtime's own state is reserved whatever the grants say.
//!
//! It is serializable because it crosses a process boundary: the sandbox launcher reads it.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::capability::{match_resource, Capability, Policy, Right};

/// Everything a command may reach, and what it must not.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SandboxPolicy {
    /// The workspace-relative directory the command starts in.
    pub cwd: String,
    /// Access inside the workspace.
    pub grants: Vec<PathGrant>,
    /// Paths inside granted trees the command must not read (`hide`) or change.
    pub carve_outs: Vec<CarveOut>,
    /// Absolute paths of the runtime's own state: never reachable from a command.
    pub reserved: Vec<PathBuf>,
    /// Programs a deny rule names: made unexecutable inside the sandbox.
    pub denied_programs: Vec<String>,
    /// Interpreter script operands (relative to `cwd`) that must be regular files.
    pub code_files: Vec<String>,
    pub network: NetworkPolicy,
    pub limits: SandboxLimits,
}

/// Access to one workspace path.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PathGrant {
    /// Workspace-relative, normalized; `"."` is the workspace root.
    pub path: String,
    pub reach: Reach,
    pub access: FsAccess,
}

/// How far a grant reaches from its path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reach {
    /// The path and everything beneath it (`fs:dir/**`, `fs:**`).
    Tree,
    /// The path itself: a file's contents, a directory's names (`fs:file`).
    Entry,
    /// The regular files directly inside the path, as they exist when the command starts
    /// (`fs:dir/*`; the kernel matches later children too, the sandbox cannot).
    Children,
}

/// Filesystem rights, as capabilities name them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FsAccess {
    pub read: bool,
    pub write: bool,
    pub delete: bool,
    pub execute: bool,
}

impl FsAccess {
    fn of(cap: &Capability) -> FsAccess {
        FsAccess {
            read: cap.has_right(Right::Read),
            write: cap.has_right(Right::Write),
            delete: cap.has_right(Right::Delete),
            execute: cap.has_right(Right::Execute),
        }
    }

    fn union(self, other: FsAccess) -> FsAccess {
        FsAccess {
            read: self.read || other.read,
            write: self.write || other.write,
            delete: self.delete || other.delete,
            execute: self.execute || other.execute,
        }
    }

    fn minus(self, other: FsAccess) -> FsAccess {
        FsAccess {
            read: self.read && !other.read,
            write: self.write && !other.write,
            delete: self.delete && !other.delete,
            execute: self.execute && !other.execute,
        }
    }

    fn overlaps(self, other: FsAccess) -> bool {
        self.minus(other) != self
    }

    pub fn is_empty(self) -> bool {
        self == FsAccess::default()
    }
}

/// A path inside a granted tree that the command must not reach.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CarveOut {
    /// Workspace-relative, normalized.
    pub path: String,
    /// Hidden entirely (neither read nor listed); otherwise readable but not changeable.
    pub hide: bool,
    /// When the path does not exist: refuse the command (a deny rule inside a writable tree
    /// could otherwise be dodged by creating the path) or skip it.
    pub required: bool,
    /// Why, for error messages and the audit record.
    pub reason: String,
}

/// Network access through the sandbox's proxy: the `net:` resources that allow a
/// connection (`always_allow` with the write right: a tunnel carries any bytes) and those
/// denied. Empty `allow`: no network at all.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkPolicy {
    pub allow: Vec<String>,
    pub deny: Vec<String>,
}

impl NetworkPolicy {
    /// Whether a connection to `host:port` is allowed (a deny on either form wins).
    pub fn permits(&self, host: &str, port: u16) -> bool {
        let host = host.to_ascii_lowercase();
        let forms = [format!("net:{host}:{port}"), format!("net:{host}")];
        let matches = |patterns: &[String]| {
            patterns
                .iter()
                .any(|p| forms.iter().any(|f| match_resource(p, f).is_some()))
        };
        !matches(&self.deny) && matches(&self.allow)
    }

    /// Whether a deny rule matches `resource` (one identity of a destination).
    pub fn denies(&self, resource: &str) -> bool {
        self.deny
            .iter()
            .any(|p| match_resource(p, resource).is_some())
    }

    pub fn is_open(&self) -> bool {
        !self.allow.is_empty()
    }
}

/// Per-command resource limits (each process of the command gets the per-process ones).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SandboxLimits {
    /// CPU seconds per process (`RLIMIT_CPU`).
    pub cpu_seconds: u64,
    /// Data segment per process (`RLIMIT_DATA`): heap and anonymous mappings.
    pub memory_bytes: u64,
    /// Largest file a process may write (`RLIMIT_FSIZE`).
    pub file_bytes: u64,
    /// Open descriptors per process (`RLIMIT_NOFILE`).
    pub open_files: u64,
    /// Processes alive at once in the command's tree.
    pub processes: u64,
}

impl Default for SandboxLimits {
    fn default() -> Self {
        SandboxLimits {
            cpu_seconds: 60,
            memory_bytes: 4 << 30,
            file_bytes: 4 << 30,
            open_files: 4096,
            processes: 512,
        }
    }
}

/// A capability's `fs:` pattern as a workspace path and reach; `None` for names the
/// matcher gives no meaning inside the workspace (absolute, `..`).
fn fs_target(resource: &str) -> Option<(String, Reach)> {
    let name = resource.strip_prefix("fs:")?;
    let (path, reach) = match name {
        "**" => (".", Reach::Tree),
        "*" => (".", Reach::Children),
        _ => match (name.strip_suffix("/**"), name.strip_suffix("/*")) {
            (Some(dir), _) => (dir, Reach::Tree),
            (None, Some(dir)) => (dir, Reach::Children),
            (None, None) => (name, Reach::Entry),
        },
    };
    let normalized = super::paths::normalize(".", path).ok()?;
    // A name the matcher would not match literally (`a/../b`, `a/`) grants nothing.
    (normalized == path).then_some((normalized, reach))
}

/// Whether `inner` is `outer` or lies beneath it (`"."` contains everything).
fn within(outer: &str, inner: &str) -> bool {
    outer == "." || inner == outer || inner.starts_with(&format!("{outer}/"))
}

/// The path directly above `path` (`"."` for a top-level name).
fn parent(path: &str) -> &str {
    path.rsplit_once('/').map_or(".", |(dir, _)| dir)
}

/// Whether a deny rule at (`path`, `reach`) takes away everything `grant` reaches.
fn covers(path: &str, reach: Reach, grant: &PathGrant) -> bool {
    match reach {
        Reach::Tree => {
            path == "."
                || (within(path, &grant.path)
                    && (grant.path != path || grant.reach != Reach::Entry))
        }
        Reach::Entry => grant.reach == Reach::Entry && grant.path == path,
        Reach::Children => {
            (grant.reach == Reach::Children && grant.path == path)
                || (grant.reach == Reach::Entry && grant.path != "." && parent(&grant.path) == path)
        }
    }
}

/// Whether `path` lies inside what `grant` reaches (so a deny there must be carved out).
fn inside(grant: &PathGrant, path: &str) -> bool {
    match grant.reach {
        Reach::Tree => within(&grant.path, path),
        Reach::Children => path == grant.path || (path != "." && parent(path) == grant.path),
        Reach::Entry => false,
    }
}

/// Inputs to [`SandboxPolicy::derive`] that do not come from capabilities.
pub struct SandboxInputs<'a> {
    pub cwd: &'a str,
    pub code_files: Vec<String>,
    pub denied_programs: Vec<String>,
    pub reserved: Vec<PathBuf>,
    pub limits: SandboxLimits,
}

impl SandboxPolicy {
    /// Derives the sandbox from a process's live capabilities at `now_ms`.
    pub fn derive(caps: &[Capability], now_ms: i64, inputs: SandboxInputs<'_>) -> SandboxPolicy {
        let live: Vec<&Capability> = caps.iter().filter(|c| c.is_live(now_ms)).collect();
        let mut grants: Vec<PathGrant> = Vec::new();
        for cap in live.iter().filter(|c| c.policy == Policy::AlwaysAllow) {
            let Some((path, reach)) = fs_target(&cap.resource) else {
                continue;
            };
            let access = FsAccess::of(cap);
            if access.is_empty() {
                continue;
            }
            match grants
                .iter_mut()
                .find(|g| g.path == path && g.reach == reach)
            {
                Some(existing) => existing.access = existing.access.union(access),
                None => grants.push(PathGrant {
                    path,
                    reach,
                    access,
                }),
            }
        }
        let denies: Vec<(String, Reach, FsAccess)> = live
            .iter()
            .filter(|c| c.policy == Policy::AlwaysDeny)
            .filter_map(|c| fs_target(&c.resource).map(|(p, r)| (p, r, FsAccess::of(c))))
            .filter(|(_, _, access)| !access.is_empty())
            .collect();
        let mut carve_outs: Vec<CarveOut> = Vec::new();
        for grant in &mut grants {
            for (path, reach, denied) in &denies {
                if !grant.access.overlaps(*denied) {
                    continue;
                }
                if covers(path, *reach, grant) {
                    grant.access = grant.access.minus(*denied);
                } else if inside(grant, path) {
                    push_carve_out(
                        &mut carve_outs,
                        CarveOut {
                            path: path.clone(),
                            hide: denied.read,
                            required: grant.access.write || grant.access.delete,
                            reason: format!("an always_deny rule on fs:{path}"),
                        },
                    );
                }
            }
        }
        grants.retain(|g| !g.access.is_empty());
        for root in git_roots(&grants) {
            for protected in [".git/hooks", ".git/config"] {
                let path = if root == "." {
                    protected.to_string()
                } else {
                    format!("{root}/{protected}")
                };
                // A writable grant on `.git` itself or inside it names it explicitly.
                let named = grants.iter().any(|g| {
                    (g.access.write || g.access.delete)
                        && g.path != root
                        && (within(&g.path, &path) || within(&path, &g.path))
                });
                if !named {
                    push_carve_out(
                        &mut carve_outs,
                        CarveOut {
                            path,
                            hide: false,
                            required: false,
                            reason: "git runs hooks and configuration outside the sandbox"
                                .to_string(),
                        },
                    );
                }
            }
        }
        let network = NetworkPolicy {
            allow: net_resources(&live, |c| {
                c.policy == Policy::AlwaysAllow && c.has_right(Right::Write)
            }),
            deny: net_resources(&live, |c| c.policy == Policy::AlwaysDeny),
        };
        SandboxPolicy {
            cwd: inputs.cwd.to_string(),
            grants,
            carve_outs,
            reserved: inputs.reserved,
            denied_programs: inputs.denied_programs,
            code_files: inputs.code_files,
            network,
            limits: inputs.limits,
        }
    }

    /// The SHA-256 of the policy's JSON form, for the audit record.
    pub fn sha256(&self) -> String {
        crate::util::sha256_hex(serde_json::to_string(self).unwrap_or_default().as_bytes())
    }
}

fn push_carve_out(carve_outs: &mut Vec<CarveOut>, carve_out: CarveOut) {
    match carve_outs.iter_mut().find(|c| c.path == carve_out.path) {
        Some(existing) => {
            existing.hide |= carve_out.hide;
            existing.required |= carve_out.required;
        }
        None => carve_outs.push(carve_out),
    }
}

/// Writable trees whose `.git` must stay read-only: the roots of write or delete grants.
fn git_roots(grants: &[PathGrant]) -> Vec<String> {
    let mut roots: Vec<String> = grants
        .iter()
        .filter(|g| g.reach == Reach::Tree && (g.access.write || g.access.delete))
        .map(|g| g.path.clone())
        .collect();
    roots.sort();
    roots.dedup();
    roots
}

fn net_resources(caps: &[&Capability], keep: impl Fn(&Capability) -> bool) -> Vec<String> {
    let mut resources: Vec<String> = caps
        .iter()
        .filter(|c| c.resource.starts_with("net:") && keep(c))
        .map(|c| c.resource.to_ascii_lowercase())
        .collect();
    resources.sort();
    resources.dedup();
    resources
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernel::CapabilitySpec;

    fn policy(grants: &[&str]) -> SandboxPolicy {
        let caps: Vec<Capability> = grants
            .iter()
            .enumerate()
            .map(|(i, g)| {
                // Parse the rights and policy from a valid name, then set the name as given:
                // rows not minted by the grammar (`fs:../x`, `fs:/etc`) must grant nothing.
                let (resource, rest) = g.split_once('=').unwrap();
                let kind = resource.split_once(':').unwrap().0;
                let spec = CapabilitySpec::parse_grant(&format!("{kind}:x={rest}")).unwrap();
                let mut cap = Capability::from_operator(1, spec);
                cap.resource = resource.to_string();
                cap.id = i as i64 + 1;
                cap
            })
            .collect();
        SandboxPolicy::derive(
            &caps,
            0,
            SandboxInputs {
                cwd: ".",
                code_files: vec![],
                denied_programs: vec![],
                reserved: vec![],
                limits: SandboxLimits::default(),
            },
        )
    }

    fn access(read: bool, write: bool, delete: bool, execute: bool) -> FsAccess {
        FsAccess {
            read,
            write,
            delete,
            execute,
        }
    }

    #[test]
    fn only_always_allow_grants_become_access() {
        let p = policy(&[
            "fs:docs/**=read",
            "fs:out/**=write,delete",
            "fs:ask.txt=read:ask",
            "fs:once=read:once",
        ]);
        assert_eq!(
            p.grants,
            [
                PathGrant {
                    path: "docs".into(),
                    reach: Reach::Tree,
                    access: access(true, false, false, false)
                },
                PathGrant {
                    path: "out".into(),
                    reach: Reach::Tree,
                    access: access(false, true, true, false)
                },
            ]
        );
        let p = policy(&[
            "fs:**=read,execute",
            "fs:*=write",
            "fs:a.txt=read",
            "fs:../x=read",
            "fs:/etc=read",
        ]);
        let reaches: Vec<(&str, Reach)> = p
            .grants
            .iter()
            .map(|g| (g.path.as_str(), g.reach))
            .collect();
        assert_eq!(
            reaches,
            [
                (".", Reach::Tree),
                (".", Reach::Children),
                ("a.txt", Reach::Entry)
            ]
        );
    }

    #[test]
    fn a_deny_inside_an_allowed_tree_is_carved_out() {
        let p = policy(&[
            "fs:**=read",
            "fs:docs/secret/**=read:deny",
            "fs:notes.txt=write:deny",
        ]);
        assert_eq!(p.carve_outs.len(), 1, "{:?}", p.carve_outs);
        assert_eq!(
            (
                p.carve_outs[0].path.as_str(),
                p.carve_outs[0].hide,
                p.carve_outs[0].required
            ),
            ("docs/secret", true, false)
        );
        let p = policy(&["fs:out/**=write,read", "fs:out/keep=write:deny"]);
        let keep = p.carve_outs.iter().find(|c| c.path == "out/keep").unwrap();
        assert!(
            !keep.hide && keep.required,
            "write-denied inside a writable tree: read-only, must exist"
        );
    }

    #[test]
    fn a_deny_covering_a_grant_removes_it() {
        let p = policy(&["fs:docs/**=read", "fs:**=read:deny"]);
        assert!(p.grants.is_empty());
        let p = policy(&["fs:docs/a/**=read,write", "fs:docs/**=write:deny"]);
        assert_eq!(p.grants[0].access, access(true, false, false, false));
        assert!(p.carve_outs.is_empty());
    }

    #[test]
    fn git_hooks_and_config_stay_read_only_in_writable_trees() {
        let p = policy(&["fs:**=read,write"]);
        let paths: Vec<&str> = p.carve_outs.iter().map(|c| c.path.as_str()).collect();
        assert_eq!(paths, [".git/hooks", ".git/config"]);
        assert!(p.carve_outs.iter().all(|c| !c.hide && !c.required));
        let p = policy(&["fs:**=read,write", "fs:.git/**=write"]);
        assert!(
            p.carve_outs.is_empty(),
            "named explicitly: {:?}",
            p.carve_outs
        );
        assert!(policy(&["fs:**=read"]).carve_outs.is_empty());
    }

    #[test]
    fn network_needs_write_and_denies_win() {
        let p = policy(&["net:example.org:443=write", "net:api.example.org=read"]);
        assert!(p.network.permits("example.org", 443));
        assert!(p.network.permits("Example.ORG", 443));
        assert!(!p.network.permits("example.org", 80));
        assert!(
            !p.network.permits("api.example.org", 443),
            "read is not enough for a tunnel"
        );
        let p = policy(&["net:*=write", "net:evil.example=write:deny"]);
        assert!(p.network.permits("example.org", 80));
        assert!(!p.network.permits("evil.example", 443));
        assert!(!policy(&["net:example.org=read"]).network.is_open());
        assert!(!policy(&[]).network.permits("example.org", 443));
    }
}
