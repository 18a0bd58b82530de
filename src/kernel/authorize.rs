//! The capability check and policy step every primitive runs before its effect.

use serde_json::Value;

use super::capability::{decide_any, Decision, Pid, Policy, Right};
use super::error::{SysResult, SyscallError};
use super::scope::Scope;
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
                    return Err(SyscallError::denied_because(
                        resource.clone(),
                        right,
                        format!("denied by capability #{}", cap.id),
                    ))
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
                if !state.reserved_once.insert(cap.id) {
                    return Err(SyscallError::denied_because(
                        resource,
                        right,
                        format!("one-shot capability #{} is in use by another call", cap.id),
                    ));
                }
                scope.once.push(cap.id);
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
