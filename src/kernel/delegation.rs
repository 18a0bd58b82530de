//! Delegation: what a process may pass on to a child (`proc.fork`, `cap.grant`).
//!
//! A delegated capability is a subset of what the issuer can do, restrictions included. It
//! must be covered — resource and every right — by one delegable, live capability of the
//! issuer (its *source*); its policy is never looser than the source's, its expiry never
//! later. Whatever stops the issuer on part of the delegated resource travels with it:
//!
//! - every explicit deny of the issuer that overlaps the resource (for a delegated right) is
//!   copied to the receiver as it is;
//! - an `ask_each_time` capability of the issuer that decides over the source (it is more
//!   specific) on part of the resource is copied when it lies inside the resource, and lowers
//!   the delegated policy for its rights when the resource lies inside it.
//!
//! Copies name the restriction they came from as their parent (revoking it lifts them) and
//! keep its issuer, so the delegating process cannot revoke them.

use super::capability::{Capability, CapabilitySpec, Policy, Right};
use super::error::{SysResult, SyscallError};
use super::resource::{pattern_within, patterns_overlap, specificity, validate_resource};

/// The capabilities a receiver gets for `spec`: the delegated ones (one per distinct policy,
/// usually one) followed by the restrictions copied with them. Subjects are left at 0.
pub(crate) fn delegate(
    held: &[Capability],
    spec: &CapabilitySpec,
    now: i64,
) -> SysResult<Vec<Capability>> {
    validate_resource(&spec.resource).map_err(SyscallError::invalid)?;
    if spec.rights.is_empty() {
        return Err(SyscallError::invalid("rights must not be empty"));
    }
    let source = source_for(held, spec, now)?;
    let base_policy = source.policy.stricter(spec.policy);
    let expires_at = earlier(source.expires_at, spec.expires_at);
    let mut policies: Vec<(Policy, Vec<Right>)> = Vec::new();
    for right in &spec.rights {
        let policy = held
            .iter()
            .filter(|c| c.is_live(now) && c.policy == Policy::AskEachTime)
            .filter(|c| c.has_right(*right) || *right == Right::Admin)
            .filter(|c| specificity(&c.resource) > specificity(&source.resource))
            .filter(|c| pattern_within(&c.resource, &spec.resource))
            .fold(base_policy, |p, c| p.stricter(c.policy));
        match policies.iter_mut().find(|(p, _)| *p == policy) {
            Some((_, rights)) => rights.push(*right),
            None => policies.push((policy, vec![*right])),
        }
    }
    let mut out: Vec<Capability> = policies
        .into_iter()
        .map(|(policy, rights)| Capability {
            id: 0,
            subject: 0,
            resource: spec.resource.clone(),
            rights,
            policy,
            issuer: Some(source.subject),
            parent: Some(source.id),
            expires_at,
            delegable: spec.delegable && source.delegable,
            revocable: true,
            revoked: false,
            consumed: false,
        })
        .collect();
    let loosest = out
        .iter()
        .map(|c| c.policy)
        .fold(Policy::AlwaysDeny, loosest);
    for restriction in held.iter().filter(|c| c.is_live(now) && c.id != source.id) {
        let rights = shared_rights(restriction, &spec.rights);
        if rights.is_empty() || !patterns_overlap(&restriction.resource, &spec.resource) {
            continue;
        }
        let copied = match restriction.policy {
            Policy::AlwaysDeny => true,
            Policy::AskEachTime => {
                restriction.policy.stricter(loosest) == restriction.policy
                    && restriction.policy != loosest
                    && specificity(&restriction.resource) > specificity(&source.resource)
                    && !pattern_within(&restriction.resource, &spec.resource)
            }
            Policy::AlwaysAllow | Policy::AllowOnce => false,
        };
        if copied {
            out.push(Capability {
                id: 0,
                subject: 0,
                resource: restriction.resource.clone(),
                rights,
                policy: restriction.policy,
                issuer: restriction.issuer,
                parent: Some(restriction.id),
                expires_at: restriction.expires_at,
                delegable: false,
                revocable: restriction.revocable,
                revoked: false,
                consumed: false,
            });
        }
    }
    Ok(out)
}

/// The delegable capability `spec` is carved from, or a denial naming the first right no
/// capability covers.
fn source_for<'a>(
    held: &'a [Capability],
    spec: &CapabilitySpec,
    now: i64,
) -> SysResult<&'a Capability> {
    let source = held.iter().find(|c| {
        c.is_live(now)
            && c.delegable
            && !matches!(c.policy, Policy::AlwaysDeny | Policy::AllowOnce)
            && spec.rights.iter().all(|r| c.has_right(*r))
            && pattern_within(&c.resource, &spec.resource)
    });
    source.ok_or_else(|| {
        let right = spec
            .rights
            .iter()
            .copied()
            .find(|r| {
                !held.iter().any(|c| {
                    c.is_live(now) && c.has_right(*r) && pattern_within(&c.resource, &spec.resource)
                })
            })
            .unwrap_or(spec.rights[0]);
        SyscallError::denied_because(
            spec.resource.clone(),
            right,
            "the issuer holds no delegable capability covering it",
        )
    })
}

/// The rights of `restriction` among `rights` (all of them if either side has `admin`).
fn shared_rights(restriction: &Capability, rights: &[Right]) -> Vec<Right> {
    if rights.contains(&Right::Admin) {
        return restriction.rights.clone();
    }
    rights
        .iter()
        .copied()
        .filter(|r| restriction.has_right(*r))
        .collect()
}

fn earlier(a: Option<i64>, b: Option<i64>) -> Option<i64> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// The more permissive of two policies.
fn loosest(a: Policy, b: Policy) -> Policy {
    if a.stricter(b) == a {
        b
    } else {
        a
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernel::capability::decide;
    use crate::kernel::capability::Decision;

    fn cap(
        id: i64,
        resource: &str,
        rights: &[Right],
        policy: Policy,
        delegable: bool,
    ) -> Capability {
        Capability {
            delegable,
            ..Capability::for_test(id, resource, rights, policy)
        }
    }

    fn spec(resource: &str, rights: &[Right]) -> CapabilitySpec {
        CapabilitySpec::new(resource, rights, Policy::AlwaysAllow)
    }

    /// What a holder of `caps` may do with `right` on `resource`, without a human.
    fn outcome(caps: &[Capability], resource: &str, right: Right) -> &'static str {
        match decide(caps, resource, right, 0) {
            Decision::Denied(_) | Decision::NoCapability => "deny",
            Decision::Matched(c) if c.policy == Policy::AskEachTime => "ask",
            Decision::Matched(_) => "allow",
        }
    }

    #[test]
    fn denies_travel_with_the_delegation() {
        let parent = [
            cap(1, "fs:**", &[Right::Read], Policy::AlwaysAllow, true),
            cap(
                2,
                "fs:secret.txt",
                &[Right::Read],
                Policy::AlwaysDeny,
                false,
            ),
            cap(3, "fs:other/**", &[Right::Write], Policy::AlwaysDeny, false),
        ];
        let child = delegate(&parent, &spec("fs:**", &[Right::Read]), 0).unwrap();
        assert_eq!(outcome(&child, "fs:secret.txt", Right::Read), "deny");
        assert_eq!(outcome(&child, "fs:notes.txt", Right::Read), "allow");
        // The write deny does not concern a read delegation.
        assert_eq!(child.len(), 2);
        assert_eq!(child[1].parent, Some(2));
        assert_eq!(child[1].issuer, None);
    }

    #[test]
    fn asks_travel_with_the_delegation() {
        let parent = [
            cap(
                1,
                "fs:**",
                &[Right::Read, Right::Write],
                Policy::AlwaysAllow,
                true,
            ),
            cap(2, "fs:secret/*", &[Right::Read], Policy::AskEachTime, false),
        ];
        // Inside the ask: the delegated read is ask, the write is not.
        let child = delegate(
            &parent,
            &spec("fs:secret/key", &[Right::Read, Right::Write]),
            0,
        )
        .unwrap();
        assert_eq!(outcome(&child, "fs:secret/key", Right::Read), "ask");
        assert_eq!(outcome(&child, "fs:secret/key", Right::Write), "allow");
        // Around the ask: the ask is copied and, being more specific, decides.
        let child = delegate(&parent, &spec("fs:**", &[Right::Read]), 0).unwrap();
        assert_eq!(outcome(&child, "fs:secret/key", Right::Read), "ask");
        assert_eq!(outcome(&child, "fs:public.txt", Right::Read), "allow");
    }

    #[test]
    fn top_level_never_yields_everything() {
        let parent = [cap(1, "fs:*", &[Right::Read], Policy::AlwaysAllow, true)];
        let err = delegate(&parent, &spec("fs:**", &[Right::Read]), 0).unwrap_err();
        assert_eq!(err.kind(), "PermissionDenied");
        assert!(delegate(&parent, &spec("fs:a.txt", &[Right::Read]), 0).is_ok());
        assert!(delegate(&parent, &spec("fs:a/b", &[Right::Read]), 0).is_err());
    }

    #[test]
    fn unsupported_patterns_cannot_be_delegated() {
        let parent = [cap(1, "fs:**", &[Right::Read], Policy::AlwaysAllow, true)];
        let err = delegate(&parent, &spec("fs:*.env", &[Right::Read]), 0).unwrap_err();
        assert_eq!(err.kind(), "InvalidArgument");
    }
}
