//! The capability check and policy step every primitive runs before its effect.

use serde_json::Value;

use super::capability::{decide_any, Capability, Decision, Pid, Policy, Right};
use super::error::{SysResult, SyscallError};
use super::scope::Scope;
use super::state::State;
use super::syscall::Primitive;
use super::Kernel;

impl Kernel {
    /// Authorizes `right` on the first of `resources` (most specific first; e.g.
    /// `object:<id>` then `namespace:<ns>`) that a capability covers. An explicit deny on
    /// any of them wins. Under `allow_once` the capability is reserved for this call; under
    /// `ask_each_time` a human is asked, shown `context()` (computed only then, so that
    /// preconditions can be checked before prompting).
    pub(crate) async fn authorize(
        &self,
        pid: Pid,
        resources: &[String],
        right: Right,
        call: &dyn Primitive,
        scope: &mut Scope,
        context: impl FnOnce() -> SysResult<Value>,
    ) -> SysResult<()> {
        let (cap, resource) = {
            let mut state = self.inner.state.lock();
            let now = self.now();
            let (cap, resource) = match decide_any(state.caps_of(pid), resources, right, now) {
                (Decision::Denied(cap), Some(resource)) => {
                    return Err(denied_by(resource, right, &cap))
                }
                (Decision::Matched(cap), Some(resource)) => (cap, resource.clone()),
                _ => {
                    return Err(SyscallError::denied(
                        resources.first().cloned().unwrap_or_default(),
                        right,
                    ))
                }
            };
            if cap.policy == Policy::AllowOnce {
                reserve_once(&mut state, &cap, &resource, right, scope)?;
            }
            (cap, resource)
        };
        scope.caps.push(cap.id);
        if cap.policy == Policy::AskEachTime {
            let context = context()?;
            self.ask_approval(pid, &resource, right, cap.id, call, context, scope)
                .await?;
        }
        Ok(())
    }

    /// What the capability table says about `right` on `resources` right now, with no side
    /// effect (nothing reserved, nobody asked).
    pub(crate) fn peek(&self, pid: Pid, resources: &[String], right: Right) -> Decision {
        let state = self.inner.state.lock();
        decide_any(state.caps_of(pid), resources, right, self.now()).0
    }

    /// Whether `pid` may see the entry named by `resources` inside a container this call
    /// already authorized: a capability covers it without a human, or it is covered by the
    /// very capability the call was approved under.
    pub(crate) fn visible(
        &self,
        pid: Pid,
        resources: &[String],
        right: Right,
        scope: &Scope,
    ) -> bool {
        match self.peek(pid, resources, right) {
            Decision::Matched(cap) => {
                cap.policy != Policy::AskEachTime || scope.caps.contains(&cap.id)
            }
            Decision::Denied(_) | Decision::NoCapability => false,
        }
    }

    /// Authorizes `right` on one entry of a bulk operation without asking anyone: an explicit
    /// deny, no capability, or a capability that needs a human (other than the one the call
    /// was already approved under) refuses it.
    pub(crate) fn authorize_entry(
        &self,
        pid: Pid,
        resource: &str,
        right: Right,
        scope: &mut Scope,
    ) -> SysResult<()> {
        let resources = [resource.to_string()];
        let mut state = self.inner.state.lock();
        match decide_any(state.caps_of(pid), &resources, right, self.now()).0 {
            Decision::Denied(cap) => Err(denied_by(resource, right, &cap)),
            Decision::NoCapability => Err(SyscallError::denied(resource, right)),
            Decision::Matched(cap)
                if cap.policy == Policy::AskEachTime && !scope.caps.contains(&cap.id) =>
            {
                Err(SyscallError::denied_because(
                    resource,
                    right,
                    format!(
                        "capability #{} needs a human for each use; act on it separately",
                        cap.id
                    ),
                ))
            }
            Decision::Matched(cap) => {
                if cap.policy == Policy::AllowOnce && !scope.once.contains(&cap.id) {
                    reserve_once(&mut state, &cap, resource, right, scope)?;
                }
                if !scope.caps.contains(&cap.id) {
                    scope.caps.push(cap.id);
                }
                Ok(())
            }
        }
    }

    /// Authorizes a right on one resource with no approval context beyond the call itself.
    pub(crate) async fn authorize_one(
        &self,
        pid: Pid,
        resource: String,
        right: Right,
        call: &dyn Primitive,
        scope: &mut Scope,
    ) -> SysResult<()> {
        self.authorize(pid, &[resource], right, call, scope, || Ok(Value::Null))
            .await
    }
}

/// The denial an explicit deny produces.
fn denied_by(resource: &str, right: Right, cap: &Capability) -> SyscallError {
    SyscallError::denied_because(resource, right, format!("denied by capability #{}", cap.id))
}

/// Reserves a one-shot capability for this call (it is consumed if the call succeeds), or
/// refuses if another call holds it.
fn reserve_once(
    state: &mut State,
    cap: &Capability,
    resource: &str,
    right: Right,
    scope: &mut Scope,
) -> SysResult<()> {
    if !state.reserved_once.insert(cap.id) {
        return Err(SyscallError::denied_because(
            resource,
            right,
            format!("one-shot capability #{} is in use by another call", cap.id),
        ));
    }
    scope.once.push(cap.id);
    Ok(())
}
