//! The `agent-libos` command.
fn main() {}
