//! The MCP server: Agent libOS as a tool server for MCP clients (editors, chat apps), built
//! on the official Rust SDK (`rmcp`).
//!
//! A session spawns processes from the operator-configured image with exactly the
//! operator-configured grants ([`McpConfig`]; the client cannot pass grants or pick an
//! image), and acts as those processes through [`Kernel::syscall`]: proposing, validating,
//! registering and calling JIT tools, reading objects, reading its own audit records.
//! A denied syscall is an MCP tool error (`isError: true`) naming the resource and right.
//!
//! **Invariant:** no MCP tool grants capabilities or answers a human request. A call that
//! needs a human is shown to the human through MCP elicitation when the client supports it
//! (and the operator allowed it); otherwise the tool returns an error telling the user to
//! run `agent-libos human approve <id>`, and the parked call's result can be collected with
//! `await_call`.

mod server;

pub use server::{serve_mcp, serve_mcp_stdio, McpConfig, McpError, TOOL_NAMES};
