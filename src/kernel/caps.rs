//! Capability primitives (list, grant, revoke) and image registration by a process.

use serde_json::json;

use super::capability::{Capability, Pid, Right};
use super::delegation::delegate;
use super::error::{SysResult, SyscallError};
use super::image::Image;
use super::scope::{Done, Scope};
use super::syscall::{CapCall, ImageCall};
use super::Kernel;

impl Kernel {
    pub(crate) async fn cap_call(
        &self,
        pid: Pid,
        call: &CapCall,
        scope: &mut Scope,
    ) -> SysResult<Done> {
        match call {
            CapCall::List => {
                let caps = self.capabilities(pid);
                Ok(Done::new(json!(caps), format!("process:{pid}")))
            }
            CapCall::Grant { to, spec } => {
                let descendant = self.inner.state.lock().is_ancestor(pid, *to);
                if !descendant {
                    return Err(SyscallError::denied_because(
                        format!("process:{to}"),
                        Right::Grant,
                        "a process may grant only to its descendants",
                    ));
                }
                let caps = {
                    let state = self.inner.state.lock();
                    delegate(state.caps_of(pid), spec, self.now())?
                };
                scope.caps.extend(caps.iter().filter_map(|c| c.parent));
                let caps = caps
                    .into_iter()
                    .map(|cap| Capability {
                        subject: *to,
                        ..cap
                    })
                    .collect();
                let ids = self
                    .insert_capabilities(caps, &format!("pid:{pid}"))
                    .await?;
                Ok(Done::new(
                    json!({"id": ids.first(), "restrictions": ids.get(1..)}),
                    spec.resource.clone(),
                ))
            }
            CapCall::Revoke { id } => {
                let issuer = {
                    let state = self.inner.state.lock();
                    state
                        .caps
                        .values()
                        .flatten()
                        .find(|c| c.id == *id)
                        .map(|c| c.issuer)
                };
                match issuer {
                    Some(Some(issuer)) if issuer == pid => {}
                    _ => {
                        return Err(SyscallError::denied_because(
                            format!("capability:{id}"),
                            Right::Revoke,
                            "a process may revoke only capabilities it issued",
                        ))
                    }
                }
                let revoked = self.revoke_tree(*id, &format!("pid:{pid}")).await?;
                Ok(Done::new(
                    json!({"revoked": revoked}),
                    format!("capability:{id}"),
                ))
            }
        }
    }

    pub(crate) async fn image_call(
        &self,
        pid: Pid,
        call: &ImageCall,
        scope: &mut Scope,
    ) -> SysResult<Done> {
        let ImageCall::Register { manifest } = call;
        let image = Image::from_toml(manifest).map_err(SyscallError::invalid)?;
        self.authorize_one(
            pid,
            super::resource::exact("image", &image.id),
            Right::Write,
            call,
            scope,
        )
        .await?;
        self.store_image(&image, Some(pid), &format!("pid:{pid}"))
            .await?;
        Ok(Done::new(
            json!({"id": image.id, "version": image.version}),
            format!("image:{}", image.id),
        ))
    }
}
