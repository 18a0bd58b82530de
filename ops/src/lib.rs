//! deno_core op bindings for Agent libOS primitives: thin, no authority logic.
//!
//! [`libos_ops`] is the extension: one async op per primitive (see [`ops`]) plus
//! `op_console` and `op_stop`. The ops reach the host only through the [`SyscallPort`] of the
//! [`CallBinding`] that the isolate host puts into `OpState` for the duration of a call.
//! This crate knows nothing about the kernel: it builds wire JSON and forwards it.

pub mod ops;
pub mod port;

pub use port::{BoxFuture, CallBinding, CallContext, CallUsage, SyscallPort};

use ops::*;

deno_core::extension!(
    libos_ops,
    ops = [
        op_fs_read_text,
        op_fs_read_bytes,
        op_fs_write_text,
        op_fs_append_text,
        op_fs_list,
        op_fs_mkdir,
        op_fs_delete_file,
        op_fs_delete_dir,
        op_mem_create,
        op_mem_read,
        op_mem_find,
        op_mem_append,
        op_mem_list,
        op_mem_create_namespace,
        op_mem_from_file,
        op_mem_to_file,
        op_clock_now,
        op_clock_sleep,
        op_shell_run,
        op_net_fetch,
        op_human_ask,
        op_human_output,
        op_human_request_permission,
        op_proc_spawn,
        op_proc_fork,
        op_proc_wait,
        op_proc_children,
        op_proc_signal,
        op_proc_exit,
        op_proc_getcwd,
        op_proc_chdir,
        op_event_post,
        op_event_wait,
        op_tool_propose,
        op_tool_validate,
        op_tool_register,
        op_tool_list,
        op_tool_call,
        op_console,
        op_stop,
    ],
    docs = "Agent libOS primitives as ops: each forwards a wire syscall to the bound port.",
);
