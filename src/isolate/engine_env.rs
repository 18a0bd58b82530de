//! The engine's bytecode cache is switched off before `main` runs, in every program that
//! links this library (the CLI, the benchmarks, every test binary, any embedding).
//!
//! The QuickJS facade under deno_core (`v8x`) writes the compiled bytecode of every script
//! and module it compiles to the user's cache directory and reads it back unverified
//! (`shared/design/scale.md` §6): a file there becomes code in every isolate, and the folder
//! grows without bound. It reads `V82JSC_NO_BC_CACHE` once, at the first compilation, and has
//! no other switch. Setting an environment variable while other threads run is a data race
//! (C code may read the environment concurrently), so it is set from an ELF constructor
//! (`.init_array`), which the loader runs before `main` while the process has one thread.
//! The test `no_bytecode_cache_outside_the_runtime` checks that no cache file appears.

#[cfg(all(feature = "quickjs", target_os = "linux"))]
#[used]
#[link_section = ".init_array"]
static SWITCH_OFF_BYTECODE_CACHE: extern "C" fn() = switch_off_bytecode_cache;

#[cfg(all(feature = "quickjs", target_os = "linux"))]
extern "C" fn switch_off_bytecode_cache() {
    // SAFETY: runs before `main`, while the process has a single thread, with two valid
    // NUL-terminated strings.
    unsafe {
        libc::setenv(c"V82JSC_NO_BC_CACHE".as_ptr(), c"1".as_ptr(), 1);
    }
}

/// Whether the bytecode cache is off in this process (checked when the host starts).
pub(crate) fn bytecode_cache_is_off() -> bool {
    if cfg!(not(feature = "quickjs")) {
        return true;
    }
    // SAFETY: reads the environment; only constructors before `main` write it here.
    unsafe { !libc::getenv(c"V82JSC_NO_BC_CACHE".as_ptr()).is_null() }
}
