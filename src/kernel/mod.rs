//! The kernel: processes, capabilities, policy, object memory, human queue and the single
//! syscall dispatcher.

pub mod authz;
pub mod capability;
pub mod error;
pub mod paths;
pub mod syscall;
