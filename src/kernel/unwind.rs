//! A panic stops at the call that raised it.
//!
//! Whatever panics while one call is being served — a provider, a handler, the wire decoding,
//! a bug reached by one odd input — becomes `Internal` for that call, and the host keeps
//! serving every other. This matters most where a tool's syscall runs: the JavaScript engine polls
//! its async op inside a callback that cannot unwind, so a panic that reached the engine
//! would abort the whole host. The kernel's port, `Kernel::syscall`, the MCP server and the
//! agent loop each catch here, before a panic can travel further.

use std::any::Any;
use std::future::Future;
use std::panic::AssertUnwindSafe;

use futures::FutureExt;

use super::error::{SysResult, SyscallError};

/// Runs `call`; a panic inside it becomes `Internal` naming `what` and the panic's message.
///
/// `AssertUnwindSafe` is sound here: the kernel's shared state sits behind `parking_lot`
/// locks, which a panic releases without poisoning, and every change a call makes to the
/// store is committed only by the writer after the call has returned successfully.
pub async fn catch_panic<T>(what: &str, call: impl Future<Output = SysResult<T>>) -> SysResult<T> {
    match AssertUnwindSafe(call).catch_unwind().await {
        Ok(result) => result,
        Err(payload) => Err(panicked(what, payload.as_ref())),
    }
}

/// The synchronous form of [`catch_panic`].
pub fn catch_panic_sync<T>(what: &str, call: impl FnOnce() -> SysResult<T>) -> SysResult<T> {
    match std::panic::catch_unwind(AssertUnwindSafe(call)) {
        Ok(result) => result,
        Err(payload) => Err(panicked(what, payload.as_ref())),
    }
}

/// The `Internal` error of a caught panic (also logged, since it is a bug of the host).
pub fn panicked(what: &str, payload: &(dyn Any + Send)) -> SyscallError {
    let message = crate::util::panic_message(payload);
    tracing::error!(what, %message, "a panic was caught at the call boundary");
    SyscallError::Internal(format!(
        "{what}: the host failed while serving this call ({message}); other calls are unaffected"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_panic_becomes_internal_and_names_the_call() {
        let err = catch_panic("fs.read_text", async {
            if true {
                panic!("index out of bounds");
            }
            Ok(())
        })
        .await
        .unwrap_err();
        let SyscallError::Internal(message) = err else {
            panic!("expected Internal, got {err:?}");
        };
        assert!(message.starts_with("fs.read_text: "), "{message}");
        assert!(message.contains("index out of bounds"), "{message}");
        let owned = catch_panic_sync("shell.run", || -> SysResult<()> {
            panic!("{}", String::from("owned message"))
        });
        assert!(matches!(owned, Err(SyscallError::Internal(m)) if m.contains("owned message")));
        assert_eq!(catch_panic_sync("clock.now", || Ok(7)).unwrap(), 7);
    }
}
