//! A deny rule on a program holds for every spelling that runs it: `shell:rm` also stops
//! `/bin/rm`, `/usr/bin/../bin/rm`, a symlink to rm and a copy of rm found through another
//! `PATH`. A program is known by its names (argv0 as given, its file name) and its canonical
//! identity (the executable the name resolves to, symlinks followed); a rule is known by its
//! name and by the executable *it* resolves to. Any overlap denies.
//!
//! Pure: resolving a name to an executable is the shell provider's (host) job, passed in.

use crate::kernel::capability::{match_resource, Capability, Policy, Right};

/// Why a program is denied: the capability, and which identity matched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProgramDenial {
    pub program: String,
    pub capability: i64,
    pub because: String,
}

/// The names and canonical path under which `program` runs.
fn identities(program: &str, canonical: Option<&str>) -> Vec<String> {
    let mut ids = vec![program.to_string()];
    if let Some((_, name)) = program.rsplit_once('/') {
        ids.push(name.to_string());
    }
    if let Some(path) = canonical {
        ids.push(path.to_string());
        if let Some((_, name)) = path.rsplit_once('/') {
            ids.push(name.to_string());
        }
    }
    ids.retain(|id| !id.is_empty());
    ids.dedup();
    ids
}

/// The live `always_deny` capabilities on `shell:` resources that cover execute.
pub fn program_denies(caps: &[Capability], now_ms: i64) -> Vec<&Capability> {
    caps.iter()
        .filter(|c| {
            c.is_live(now_ms)
                && c.policy == Policy::AlwaysDeny
                && c.has_right(Right::Execute)
                && c.resource.starts_with("shell:")
        })
        .collect()
}

/// The program names a deny rule names exactly (no pattern, no opaque form such as
/// `shell:python3 -c`): what the sandbox makes unexecutable by path.
pub fn denied_program_names(denies: &[&Capability]) -> Vec<String> {
    let mut names: Vec<String> = denies
        .iter()
        .filter_map(|c| c.resource.strip_prefix("shell:"))
        .filter(|name| !name.is_empty() && !name.contains([' ', '*']))
        .map(str::to_string)
        .collect();
    names.sort();
    names.dedup();
    names
}

/// The first of `programs` a deny rule stops, under any of its identities. `resolve` maps a
/// program name (or a rule's name) to the canonical path of the executable it runs.
pub fn first_denied(
    programs: &[String],
    denies: &[&Capability],
    resolve: impl Fn(&str) -> Option<String>,
) -> Option<ProgramDenial> {
    if denies.is_empty() {
        return None;
    }
    let rule_targets: Vec<(&Capability, Option<String>)> = denies
        .iter()
        .map(|cap| {
            let name = cap.resource.strip_prefix("shell:").unwrap_or_default();
            let plain = !name.is_empty() && !name.contains([' ', '*']);
            (*cap, plain.then(|| resolve(name)).flatten())
        })
        .collect();
    for program in programs {
        let canonical = resolve(program);
        for id in identities(program, canonical.as_deref()) {
            let resource = format!("shell:{id}");
            if let Some(cap) = denies
                .iter()
                .find(|cap| match_resource(&cap.resource, &resource).is_some())
            {
                return Some(ProgramDenial {
                    program: program.clone(),
                    capability: cap.id,
                    because: if id == *program {
                        format!("denied by capability #{}", cap.id)
                    } else {
                        format!("denied by capability #{}: {program} runs as {id}", cap.id)
                    },
                });
            }
        }
        if let Some(path) = &canonical {
            if let Some((cap, _)) = rule_targets
                .iter()
                .find(|(_, target)| target.as_deref() == Some(path.as_str()))
            {
                return Some(ProgramDenial {
                    program: program.clone(),
                    capability: cap.id,
                    because: format!(
                        "denied by capability #{} on {}: {program} is the same executable ({path})",
                        cap.id, cap.resource
                    ),
                });
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deny(id: i64, resource: &str) -> Capability {
        let mut cap = Capability::from_operator(
            1,
            crate::kernel::CapabilitySpec::new(resource, &[Right::Execute], Policy::AlwaysDeny),
        );
        cap.id = id;
        cap
    }

    /// A host where `rm`, `/bin/rm`, `/usr/bin/../bin/rm` and the symlink `./gone` are all
    /// `/usr/bin/rm`, `awk` is `/usr/bin/mawk`, and `./bin/rm` is another program.
    fn resolve(name: &str) -> Option<String> {
        let path = match name {
            "rm" | "/bin/rm" | "/usr/bin/../bin/rm" | "./gone" | "/usr/bin/rm" => "/usr/bin/rm",
            "awk" | "mawk" | "/etc/alternatives/awk" => "/usr/bin/mawk",
            "./bin/rm" => "/ws/bin/rm",
            "ls" => "/usr/bin/ls",
            _ => return None,
        };
        Some(path.to_string())
    }

    fn denied(program: &str, rules: &[Capability]) -> bool {
        let denies: Vec<&Capability> = rules.iter().collect();
        first_denied(&[program.to_string()], &denies, resolve).is_some()
    }

    #[test]
    fn deny_rm_also_denies_bin_rm() {
        let rules = [deny(7, "shell:rm")];
        for spelling in [
            "rm",
            "/bin/rm",
            "/usr/bin/../bin/rm",
            "./gone",
            "./bin/rm",
            "/usr/bin/rm",
        ] {
            assert!(denied(spelling, &rules), "{spelling}");
        }
        assert!(!denied("ls", &rules));
    }

    #[test]
    fn a_rule_is_matched_by_the_executable_it_names() {
        let rules = [deny(3, "shell:awk")];
        assert!(denied("mawk", &rules));
        assert!(denied("/etc/alternatives/awk", &rules));
        let rules = [deny(4, "shell:/bin/rm")];
        assert!(denied("rm", &rules));
    }

    #[test]
    fn only_exact_names_become_sandbox_masks() {
        let rules = [
            deny(1, "shell:rm"),
            deny(2, "shell:python3 -c"),
            deny(3, "shell:/usr/bin/*"),
        ];
        let denies: Vec<&Capability> = rules.iter().collect();
        assert_eq!(denied_program_names(&denies), ["rm"]);
        assert!(denied("/usr/bin/ls", &rules), "patterns still match names");
    }
}
