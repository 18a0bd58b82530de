//! Agent libOS: a runtime for long-running LLM agents.
//!
//! Each agent is an [`kernel::process`] with capabilities, object memory, a tool table and a
//! human queue. Every effect goes through one entry point, [`kernel::Kernel::syscall`], which
//! checks capability and policy, asks a human where needed, performs the effect through a
//! [`providers`] backend, and records a hash-chained [`audit`] entry.

#[cfg(all(feature = "quickjs", feature = "v8"))]
compile_error!(
    "features `quickjs` and `v8` are mutually exclusive: build with the default (quickjs) or with `--no-default-features --features v8`"
);
#[cfg(not(any(feature = "quickjs", feature = "v8")))]
compile_error!("enable one JavaScript engine: feature `quickjs` (default) or `v8`");

pub mod agent;
pub mod audit;
pub mod cli;
pub mod isolate;
pub mod jit;
pub mod kernel;
pub mod mcp;
pub mod providers;
pub mod store;
pub mod util;

#[cfg(test)]
mod proptest_support;
