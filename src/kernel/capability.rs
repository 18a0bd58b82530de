//! Capabilities: who may do what to which resource, under which policy.
//!
//! A resource is a string `kind:name`, e.g. `fs:src/main.rs`, `shell:git`, `net:example.org:443`,
//! `namespace:proc/7`, `object:obj_01…`, `image:coder`, `human:operator`, `tool:grep`.
//! The name part of a capability may be a pattern (see [`super::resource`] for the grammar,
//! matching and containment). This module is pure: no I/O.

use serde::{Deserialize, Serialize};

pub use super::resource::{match_resource, pattern_within, validate_resource, Specificity};
use std::fmt;
use std::str::FromStr;

/// The process id of an [`crate::kernel::process`] (stable across restarts).
pub type Pid = i64;

/// A right on a resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Right {
    Read,
    Write,
    Delete,
    Execute,
    Create,
    Append,
    Grant,
    Revoke,
    Approve,
    Signal,
    Admin,
}

impl Right {
    pub const ALL: [Right; 11] = [
        Right::Read,
        Right::Write,
        Right::Delete,
        Right::Execute,
        Right::Create,
        Right::Append,
        Right::Grant,
        Right::Revoke,
        Right::Approve,
        Right::Signal,
        Right::Admin,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Right::Read => "read",
            Right::Write => "write",
            Right::Delete => "delete",
            Right::Execute => "execute",
            Right::Create => "create",
            Right::Append => "append",
            Right::Grant => "grant",
            Right::Revoke => "revoke",
            Right::Approve => "approve",
            Right::Signal => "signal",
            Right::Admin => "admin",
        }
    }
}

impl fmt::Display for Right {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Right {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Right::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| {
                format!(
                    "unknown right '{s}' (expected one of: {})",
                    Right::ALL.map(|r| r.as_str()).join(", ")
                )
            })
    }
}

/// Parses `read,write` or `rw`-style lists (`r`,`w`,`x`,`d` shorthands allowed).
pub fn parse_rights(list: &str) -> Result<Vec<Right>, String> {
    let mut rights = Vec::new();
    for part in list
        .split([',', '+'])
        .map(str::trim)
        .filter(|p| !p.is_empty())
    {
        let right = match part {
            "r" => Right::Read,
            "w" => Right::Write,
            "x" => Right::Execute,
            "d" => Right::Delete,
            other => other.parse()?,
        };
        if !rights.contains(&right) {
            rights.push(right);
        }
    }
    if rights.is_empty() {
        return Err("empty rights list".into());
    }
    Ok(rights)
}

/// What happens when a capability matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Policy {
    AlwaysAllow,
    /// Allowed once: consumed when the operation succeeds (a failed attempt keeps it).
    AllowOnce,
    /// A human must approve each use.
    AskEachTime,
    /// An explicit deny: beats any allow that matches.
    AlwaysDeny,
}

impl Policy {
    pub fn as_str(self) -> &'static str {
        match self {
            Policy::AlwaysAllow => "always_allow",
            Policy::AllowOnce => "allow_once",
            Policy::AskEachTime => "ask_each_time",
            Policy::AlwaysDeny => "always_deny",
        }
    }

    /// Permissiveness rank: higher allows more without a human.
    fn rank(self) -> u8 {
        match self {
            Policy::AlwaysDeny => 0,
            Policy::AskEachTime => 1,
            Policy::AllowOnce => 2,
            Policy::AlwaysAllow => 3,
        }
    }

    /// The stricter of two policies (used when attenuating).
    pub fn stricter(self, other: Policy) -> Policy {
        if self.rank() <= other.rank() {
            self
        } else {
            other
        }
    }
}

impl FromStr for Policy {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "always_allow" | "allow" => Ok(Policy::AlwaysAllow),
            "allow_once" | "once" => Ok(Policy::AllowOnce),
            "ask_each_time" | "ask" => Ok(Policy::AskEachTime),
            "always_deny" | "deny" => Ok(Policy::AlwaysDeny),
            _ => Err(format!(
                "unknown policy '{s}' (expected always_allow, allow_once, ask_each_time or always_deny)"
            )),
        }
    }
}

impl fmt::Display for Policy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One capability held by a process.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Capability {
    pub id: i64,
    pub subject: Pid,
    pub resource: String,
    pub rights: Vec<Right>,
    pub policy: Policy,
    /// The process that issued it; `None` for the operator (the host).
    pub issuer: Option<Pid>,
    /// The capability this one was derived from (revocation follows these links).
    pub parent: Option<i64>,
    /// Unix milliseconds after which it no longer matches.
    pub expires_at: Option<i64>,
    pub delegable: bool,
    pub revocable: bool,
    pub revoked: bool,
    /// For `allow_once`: set when the one permitted use succeeded.
    pub consumed: bool,
}

impl Capability {
    /// A capability issued by the operator (no issuer, no parent) to `subject`; its id is
    /// assigned when it is stored.
    pub fn from_operator(subject: Pid, spec: CapabilitySpec) -> Capability {
        Capability {
            id: 0,
            subject,
            resource: spec.resource,
            rights: spec.rights,
            policy: spec.policy,
            issuer: None,
            parent: None,
            expires_at: spec.expires_at,
            delegable: spec.delegable,
            revocable: true,
            revoked: false,
            consumed: false,
        }
    }

    /// What every process holds on its own namespace (`resource`): read, write, create,
    /// append and delete, always allowed, delegable, and not revocable.
    pub fn own_memory(subject: Pid, resource: String) -> Capability {
        Capability {
            id: 0,
            subject,
            resource,
            rights: vec![
                Right::Read,
                Right::Write,
                Right::Create,
                Right::Append,
                Right::Delete,
            ],
            policy: Policy::AlwaysAllow,
            issuer: None,
            parent: None,
            expires_at: None,
            delegable: true,
            revocable: false,
            revoked: false,
            consumed: false,
        }
    }

    /// Whether this capability is live at `now_ms`.
    pub fn is_live(&self, now_ms: i64) -> bool {
        !self.revoked && !self.consumed && self.expires_at.is_none_or(|t| now_ms < t)
    }

    pub fn has_right(&self, right: Right) -> bool {
        self.rights.contains(&right) || self.rights.contains(&Right::Admin)
    }
}

/// A request for a capability (what to grant, or what a fork should inherit).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CapabilitySpec {
    pub resource: String,
    pub rights: Vec<Right>,
    #[serde(default = "default_policy")]
    pub policy: Policy,
    #[serde(default)]
    pub delegable: bool,
    #[serde(default)]
    pub expires_at: Option<i64>,
}

fn default_policy() -> Policy {
    Policy::AlwaysAllow
}

impl CapabilitySpec {
    pub fn new(resource: impl Into<String>, rights: &[Right], policy: Policy) -> Self {
        CapabilitySpec {
            resource: resource.into(),
            rights: rights.to_vec(),
            policy,
            delegable: false,
            expires_at: None,
        }
    }

    pub fn delegable(mut self) -> Self {
        self.delegable = true;
        self
    }

    /// Parses `RESOURCE=RIGHTS[:POLICY]`, the CLI's `--grant` form.
    pub fn parse_grant(text: &str) -> Result<Self, String> {
        let (resource, rest) = text
            .rsplit_once('=')
            .ok_or_else(|| format!("grant '{text}' must look like RESOURCE=RIGHTS[:POLICY]"))?;
        let (rights, policy) = match rest.split_once(':') {
            Some((r, p)) => (r, p.parse()?),
            None => (rest, Policy::AlwaysAllow),
        };
        validate_resource(resource)?;
        Ok(CapabilitySpec::new(
            resource,
            &parse_rights(rights)?,
            policy,
        ))
    }
}

/// The outcome of matching a subject's capabilities against one (resource, right).
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    /// Allowed by this capability (its policy says how).
    Matched(Capability),
    /// An explicit `always_deny` matched.
    Denied(Capability),
    /// Nothing matched.
    NoCapability,
}

/// Deny beats allow; otherwise the most specific matching capability decides. Among equally
/// specific ones, the more permissive policy wins (they were all granted).
pub fn decide<'a>(
    caps: impl IntoIterator<Item = &'a Capability>,
    resource: &str,
    right: Right,
    now_ms: i64,
) -> Decision {
    let mut best: Option<(Specificity, &Capability)> = None;
    for cap in caps {
        if !cap.is_live(now_ms) || !cap.has_right(right) {
            continue;
        }
        let Some(spec) = match_resource(&cap.resource, resource) else {
            continue;
        };
        if cap.policy == Policy::AlwaysDeny {
            return Decision::Denied(cap.clone());
        }
        let better = match best {
            None => true,
            Some((s, b)) => spec > s || (spec == s && cap.policy.rank() > b.policy.rank()),
        };
        if better {
            best = Some((spec, cap));
        }
    }
    match best {
        Some((_, cap)) => Decision::Matched(cap.clone()),
        None => Decision::NoCapability,
    }
}

/// [`decide`] over several resources naming one target (most specific first, e.g.
/// `object:<id>` then `namespace:<ns>`, or every identity of a network destination): an
/// explicit deny on any of them wins; otherwise the first one a capability covers decides.
/// Returns the decision and the resource it was made on.
pub fn decide_any<'r>(
    caps: &[Capability],
    resources: &'r [String],
    right: Right,
    now_ms: i64,
) -> (Decision, Option<&'r String>) {
    let mut chosen = None;
    for resource in resources {
        match decide(caps, resource, right, now_ms) {
            Decision::Denied(cap) => return (Decision::Denied(cap), Some(resource)),
            Decision::Matched(cap) if chosen.is_none() => chosen = Some((cap, resource)),
            _ => {}
        }
    }
    match chosen {
        Some((cap, resource)) => (Decision::Matched(cap), Some(resource)),
        None => (Decision::NoCapability, None),
    }
}

#[cfg(test)]
impl Capability {
    /// An operator-issued capability of process 1 with id `id`, for unit tests.
    pub(crate) fn for_test(id: i64, resource: &str, rights: &[Right], policy: Policy) -> Self {
        Capability {
            id,
            ..Capability::from_operator(1, CapabilitySpec::new(resource, rights, policy))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cap(id: i64, resource: &str, rights: &[Right], policy: Policy) -> Capability {
        Capability::for_test(id, resource, rights, policy)
    }

    #[test]
    fn most_specific_wins_and_deny_beats_allow() {
        let caps = [
            cap(1, "fs:**", &[Right::Read], Policy::AlwaysAllow),
            cap(2, "fs:src/*", &[Right::Read], Policy::AskEachTime),
        ];
        match decide(&caps, "fs:src/a", Right::Read, 0) {
            Decision::Matched(c) => assert_eq!(c.id, 2),
            other => panic!("{other:?}"),
        }
        let caps = [
            cap(1, "fs:src/a", &[Right::Read], Policy::AlwaysAllow),
            cap(2, "fs:**", &[Right::Read], Policy::AlwaysDeny),
        ];
        assert!(matches!(
            decide(&caps, "fs:src/a", Right::Read, 0),
            Decision::Denied(_)
        ));
        assert_eq!(
            decide(&caps, "fs:src/a", Right::Write, 0),
            Decision::NoCapability
        );
    }

    #[test]
    fn expired_revoked_consumed_do_not_match() {
        let mut c = cap(1, "fs:a", &[Right::Read], Policy::AlwaysAllow);
        c.expires_at = Some(10);
        assert!(matches!(
            decide([&c], "fs:a", Right::Read, 5),
            Decision::Matched(_)
        ));
        assert_eq!(
            decide([&c], "fs:a", Right::Read, 10),
            Decision::NoCapability
        );
        c.expires_at = None;
        c.revoked = true;
        assert_eq!(decide([&c], "fs:a", Right::Read, 0), Decision::NoCapability);
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(2_000))]

        /// No `--grant` text makes parsing panic, and what it accepts is a valid resource.
        #[test]
        fn grant_parsing_never_panics(text in "\\PC{0,40}") {
            if let Ok(spec) = CapabilitySpec::parse_grant(&text) {
                proptest::prop_assert!(validate_resource(&spec.resource).is_ok());
            }
        }
    }

    #[test]
    fn grant_syntax() {
        let spec = CapabilitySpec::parse_grant("object:obj_1=read,append:ask").unwrap();
        assert_eq!(spec.rights, vec![Right::Read, Right::Append]);
        assert_eq!(spec.policy, Policy::AskEachTime);
        assert!(CapabilitySpec::parse_grant("nokind=read").is_err());
        assert!(CapabilitySpec::parse_grant("fs:x=fly").is_err());
    }
}

/// Property tests: no grant text, resource or pattern makes parsing or matching panic; an
/// explicit deny always beats a match; containment implies matching for concrete names.
#[cfg(test)]
mod properties {
    use super::*;
    use crate::proptest_support::{config, tricky_string};
    use proptest::prelude::*;

    /// A name built from segments that are wildcards, empty, dots or anything at all.
    fn name() -> impl Strategy<Value = String> {
        let segment = prop_oneof![
            Just("*".to_string()),
            Just("**".to_string()),
            Just(String::new()),
            Just("..".to_string()),
            "[a-z]{1,2}",
            tricky_string(),
        ];
        prop::collection::vec(segment, 1..5).prop_map(|segments| segments.join("/"))
    }

    /// A resource or pattern: a known kind, or any text before the colon.
    fn resource() -> impl Strategy<Value = String> {
        let kind = prop_oneof![
            3 => prop::sample::select(vec!["fs", "shell", "net", "object"]).prop_map(str::to_string),
            1 => tricky_string(),
        ];
        (kind, name()).prop_map(|(kind, name)| format!("{kind}:{name}"))
    }

    fn capability(resource: String, policy: Policy) -> Capability {
        Capability {
            id: 1,
            subject: 1,
            resource,
            rights: vec![Right::Read],
            policy,
            issuer: None,
            parent: None,
            expires_at: None,
            delegable: false,
            revocable: true,
            revoked: false,
            consumed: false,
        }
    }

    proptest! {
        #![proptest_config(config(2048))]

        #[test]
        fn any_grant_text_is_parsed_or_refused(text in tricky_string(), resource in resource()) {
            let _ = CapabilitySpec::parse_grant(&text);
            let _ = parse_rights(&text);
            let _ = text.parse::<Policy>();
            for grant in [format!("{resource}={text}"), format!("{resource}=read:{text}")] {
                if let Ok(spec) = CapabilitySpec::parse_grant(&grant) {
                    prop_assert!(validate_resource(&spec.resource).is_ok(), "{grant:?}");
                    prop_assert!(!spec.rights.is_empty(), "{grant:?}");
                }
            }
        }

        #[test]
        fn matching_never_panics_and_never_crosses_kinds(pattern in resource(), name in resource()) {
            let _ = validate_resource(&pattern);
            if match_resource(&pattern, &name).is_some() {
                prop_assert_eq!(pattern.split_once(':').map(|p| p.0), name.split_once(':').map(|n| n.0));
            }
            if pattern_within(&pattern, &name) {
                prop_assert_eq!(pattern.split_once(':').map(|p| p.0), name.split_once(':').map(|n| n.0));
            }
            if pattern.contains(':') {
                prop_assert!(match_resource(&pattern, &pattern).is_some(), "{pattern:?}");
            }
        }

        #[test]
        fn a_matching_deny_always_wins(deny in resource(), allow in resource(), name in resource()) {
            let caps = [
                capability(allow, Policy::AlwaysAllow),
                capability(deny.clone(), Policy::AlwaysDeny),
            ];
            let decision = decide(&caps, &name, Right::Read, 0);
            if match_resource(&deny, &name).is_some() {
                prop_assert!(matches!(decision, Decision::Denied(_)), "{decision:?}");
            } else {
                prop_assert!(!matches!(decision, Decision::Denied(_)), "{decision:?}");
            }
        }
    }
}
