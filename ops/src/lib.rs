//! deno_core op bindings for Agent libOS primitives (in progress).
