//! Deno-style permission flags turned into capabilities, and the reverse: which flag would
//! have allowed a denied call.
//!
//! Nothing is allowed by default. `--allow-read` with no value is `fs:**` read; a directory
//! `d` becomes `fs:d` and `fs:d/**`; `--allow-run` always needs the commands named. Every
//! `--deny-*` flag yields the same resources with policy `always_deny`, which beats any allow.

use std::path::Path;

use anyhow::{bail, Context, Result};

use super::args::ToolRunArgs;
use crate::kernel::capability::{validate_resource, CapabilitySpec, Policy, Right};
use crate::kernel::paths;

/// The capabilities `args` ask for, in flag order (allows, then denies, then `--grant`s).
/// A value the capability matcher does not support (`*.env`, `a*b`, `{a,b}`, …) is an error
/// naming the flag, never a rule that silently matches nothing.
pub fn from_flags(args: &ToolRunArgs, workspace: &Path) -> Result<Vec<CapabilitySpec>> {
    let mut out = Vec::new();
    let allow = Policy::AlwaysAllow;
    let deny = Policy::AlwaysDeny;
    for (flag, values, right, policy) in [
        ("--allow-read", &args.allow_read, Right::Read, allow),
        ("--allow-write", &args.allow_write, Right::Write, allow),
        ("--deny-read", &args.deny_read, Right::Read, deny),
        ("--deny-write", &args.deny_write, Right::Write, deny),
    ] {
        for value in values {
            for resource in
                fs_resources(value, workspace).with_context(|| format!("{flag}={value}"))?
            {
                push(&mut out, flag, resource, &[right], policy)?;
            }
        }
    }
    for cmd in &args.allow_run {
        if matches!(cmd.trim(), "" | "*" | "**") {
            bail!(
                "--allow-run needs the commands to allow, e.g. --allow-run=git,cargo (a blanket shell allow is not offered)"
            );
        }
        push(
            &mut out,
            "--allow-run",
            format!("shell:{cmd}"),
            &[Right::Execute],
            allow,
        )?;
    }
    for cmd in &args.deny_run {
        push(
            &mut out,
            "--deny-run",
            format!("shell:{cmd}"),
            &[Right::Execute],
            deny,
        )?;
    }
    for (flag, values, policy) in [
        ("--allow-net", &args.allow_net, allow),
        ("--deny-net", &args.deny_net, deny),
    ] {
        for host in values {
            if host.contains("://") || host.contains('/') {
                bail!("--allow-net/--deny-net take HOST or HOST:PORT, not a URL: '{host}' (e.g. --allow-net=example.org:443)");
            }
            push(
                &mut out,
                flag,
                format!("net:{host}"),
                &[Right::Read, Right::Write],
                policy,
            )?;
        }
    }
    for grant in &args.grant {
        let spec = CapabilitySpec::parse_grant(grant)
            .map_err(|e| anyhow::anyhow!("--grant {grant}: {e}"))?;
        out.push(spec);
    }
    Ok(out)
}

/// Adds one flag's capability after checking its resource.
fn push(
    out: &mut Vec<CapabilitySpec>,
    flag: &str,
    resource: String,
    rights: &[Right],
    policy: Policy,
) -> Result<()> {
    validate_resource(&resource).map_err(|e| anyhow::anyhow!("{flag}: {e}"))?;
    out.push(CapabilitySpec::new(resource, rights, policy));
    Ok(())
}

/// `fs:` resources for one path flag value: a path (a directory covers its tree), or a
/// pattern (`dir/*`, `dir/**`, `**`; `\*` for a literal `*`), checked by the caller.
fn fs_resources(value: &str, workspace: &Path) -> Result<Vec<String>> {
    let value = value.trim();
    if value.is_empty() || value == "**" || value == "." || value == "./" {
        return Ok(vec!["fs:**".into()]);
    }
    let rel = if Path::new(value).is_absolute() {
        let canon = std::fs::canonicalize(value).unwrap_or_else(|_| value.into());
        let ws = std::fs::canonicalize(workspace).unwrap_or_else(|_| workspace.into());
        let rel = canon.strip_prefix(&ws).map_err(|_| {
            anyhow::anyhow!(
                "{value} is outside the workspace {}; pass a path inside it, or choose the workspace with --workspace",
                ws.display()
            )
        })?;
        rel.to_string_lossy().into_owned()
    } else {
        value.to_string()
    };
    let rel = rel.trim_end_matches('/');
    if rel.is_empty() {
        return Ok(vec!["fs:**".into()]);
    }
    if rel.contains(['*', '?', '[', ']', '{', '}', '\\']) {
        return Ok(vec![format!("fs:{rel}")]);
    }
    let norm = paths::normalize(".", rel).map_err(|e| anyhow::anyhow!("path '{value}': {e}"))?;
    if norm == "." {
        return Ok(vec!["fs:**".into()]);
    }
    if workspace.join(&norm).is_dir() {
        Ok(vec![format!("fs:{norm}"), format!("fs:{norm}/**")])
    } else {
        Ok(vec![format!("fs:{norm}")])
    }
}

/// Parses a fixture or CLI grant given as `RESOURCE=RIGHTS[:POLICY]`.
pub fn parse_grant(text: &str) -> Result<CapabilitySpec> {
    CapabilitySpec::parse_grant(text)
        .map_err(anyhow::Error::msg)
        .with_context(|| format!("grant '{text}'"))
}

/// `word` as one shell word: unchanged when it holds only characters no shell treats
/// specially, else in single quotes (a `'` inside written `'\''`).
pub fn shell_quote(word: &str) -> String {
    let plain = !word.is_empty()
        && word
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./:=,@%+".contains(c));
    if plain {
        word.to_string()
    } else {
        format!("'{}'", word.replace('\'', "'\\''"))
    }
}

/// The flag that would have allowed `right` on `resource` in `tool run`, quoted for a shell
/// (`'--allow-run=python3 -c'`).
pub fn suggest_flag(resource: &str, right: &str) -> String {
    let (kind, name) = resource.split_once(':').unwrap_or(("", resource));
    match (kind, right) {
        ("fs", "read") => shell_quote(&format!("--allow-read={name}")),
        ("fs", "write") => shell_quote(&format!("--allow-write={name}")),
        ("shell", "execute") => shell_quote(&format!("--allow-run={name}")),
        ("net", _) => shell_quote(&format!("--allow-net={name}")),
        _ => format!("--grant {}", shell_quote(&format!("{resource}={right}"))),
    }
}

/// A sentence telling the user how to allow a denied call — or, where no flag can allow it
/// (a symlink, a path outside the workspace), saying so.
pub fn denial_hint(resource: &str, right: &str, message: &str) -> String {
    if message.contains("denied by capability") {
        return format!(
            "an explicit deny matched; remove the --deny-* flag (or always_deny grant) that covers {resource}"
        );
    }
    if message.contains("symlinks are not followed") {
        return "symlinks are never followed, whatever is granted (no flag changes that); pass the path of the file itself".into();
    }
    if message.contains("outside the workspace") || message.contains("above the workspace") {
        return "the path is outside the workspace, which no flag can grant: tools see only the workspace; pass a path inside it, or choose another root with --workspace".into();
    }
    format!(
        "to allow it, run again with {}",
        suggest_flag(resource, right)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run_args() -> ToolRunArgs {
        ToolRunArgs::default()
    }

    #[test]
    fn flags_become_capabilities() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("src")).unwrap();
        let mut args = run_args();
        args.allow_read = vec!["src".into(), "README.md".into()];
        args.allow_write = vec!["**".into()];
        args.allow_run = vec!["git".into()];
        args.deny_net = vec!["evil.example".into()];
        args.grant = vec!["object:obj_1=read".into()];
        let specs = from_flags(&args, dir.path()).unwrap();
        let names: Vec<String> = specs
            .iter()
            .map(|s| format!("{}={:?}:{}", s.resource, s.rights, s.policy))
            .collect();
        assert_eq!(
            names,
            vec![
                "fs:src=[Read]:always_allow",
                "fs:src/**=[Read]:always_allow",
                "fs:README.md=[Read]:always_allow",
                "fs:**=[Write]:always_allow",
                "shell:git=[Execute]:always_allow",
                "net:evil.example=[Read, Write]:always_deny",
                "object:obj_1=[Read]:always_allow",
            ]
        );
    }

    #[test]
    fn unsupported_patterns_are_refused_naming_the_flag() {
        let dir = tempfile::tempdir().unwrap();
        for (set, value) in [
            (0, "*.env"),
            (0, "src/**/x"),
            (1, "a?b"),
            (2, "*.example.org"),
            (2, "127.1"),
            (3, "[ab]"),
        ] {
            let mut args = run_args();
            let field = match set {
                0 => &mut args.deny_read,
                1 => &mut args.allow_write,
                2 => &mut args.deny_net,
                _ => &mut args.allow_read,
            };
            field.push(value.into());
            let err = format!("{:#}", from_flags(&args, dir.path()).unwrap_err());
            assert!(err.contains("--"), "{value}: {err}");
            assert!(err.contains(value), "{value}: {err}");
        }
        // A literal star is written escaped, and names only that file.
        let mut args = run_args();
        args.allow_read = vec![r"notes/\*".into()];
        let specs = from_flags(&args, dir.path()).unwrap();
        assert_eq!(specs[0].resource, r"fs:notes/\*");
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(500))]

        /// No flag value makes the CLI's grant parsing panic, and every capability it
        /// accepts has a valid resource.
        #[test]
        fn flag_values_never_panic(value in "\\PC{0,24}", flag in 0usize..6) {
            let dir = tempfile::tempdir().unwrap();
            let mut args = run_args();
            let field = match flag {
                0 => &mut args.allow_read,
                1 => &mut args.deny_write,
                2 => &mut args.allow_run,
                3 => &mut args.deny_net,
                4 => &mut args.allow_net,
                _ => &mut args.grant,
            };
            field.push(value);
            if let Ok(specs) = from_flags(&args, dir.path()) {
                for spec in specs {
                    proptest::prop_assert!(validate_resource(&spec.resource).is_ok(), "{}", spec.resource);
                }
            }
        }
    }

    #[test]
    fn blanket_run_is_refused() {
        for blanket in ["", "*", "**"] {
            let mut args = run_args();
            args.allow_run = vec![blanket.into()];
            let err = from_flags(&args, Path::new(".")).unwrap_err().to_string();
            assert!(err.contains("--allow-run=git"), "{err}");
        }
    }

    #[test]
    fn hints_name_the_flag() {
        assert_eq!(suggest_flag("fs:a/b.txt", "read"), "--allow-read=a/b.txt");
        assert_eq!(suggest_flag("shell:git", "execute"), "--allow-run=git");
        assert_eq!(suggest_flag("fs:a", "delete"), "--grant fs:a=delete");
        assert_eq!(
            suggest_flag("object:obj_1", "read"),
            "--grant object:obj_1=read"
        );
        assert_eq!(
            suggest_flag("shell:python3 -c", "execute"),
            "'--allow-run=python3 -c'"
        );
        assert_eq!(
            suggest_flag("fs:it's here.txt", "read"),
            "'--allow-read=it'\\''s here.txt'"
        );
    }
}
