//! The MCP server: Agent libOS as a tool server for MCP clients (editors, chat apps), built
//! on the official Rust SDK (`rmcp`).
//!
//! A session spawns processes from the operator-configured image with exactly the
//! operator-configured grants ([`McpConfig`]; the client cannot pass grants or pick an
//! image), and acts as those processes through [`Kernel::syscall`]: proposing, validating,
//! registering and calling JIT tools, reading objects, reading its own audit records.
//! A denied syscall is an MCP tool error (`isError: true`) naming the resource and right.
//!
//! **Invariant:** no MCP tool grants capabilities or answers a human request, and a session
//! process can ask a human only for what the operator made requestable. A call that needs a
//! human returns an error naming its own request and telling the user to run
//! `agent-libos human approve <id>`; the parked call's result is collected with
//! `await_call`. Only if the operator turns on elicitation (`--elicitation`) is the request
//! shown through the client — which trusts the client's UI: its answer is taken as the
//! human's.

mod server;

pub use server::{serve_mcp, serve_mcp_stdio, McpConfig, McpError, TOOL_NAMES};
