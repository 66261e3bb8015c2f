//! How the training commands tune mimalloc, the binary's global allocator.
//!
//! A training step allocates and frees the same few hundred megabytes of activations,
//! tangents and cotangents every time. By default mimalloc (v3) hands freed memory back to the
//! kernel ("purges" it) a second after it is freed, so pages freed in one step and used again in
//! a later one are faulted in and zeroed by the kernel again: on the paper's network (batch 500,
//! 2 threads) about 1,400 page faults per projection step and 6,000 per exact step. Keeping freed
//! memory for reuse removes them (about 500 faults per whole run) at the price of a higher resident
//! peak (+7% for the projection step, +15% for the exact step).

use libmimalloc_sys::{mi_option_get, mi_option_set, mi_option_t};

/// mimalloc's `mi_option_purge_delay` (milliseconds before freed memory goes back to the OS;
/// -1: never). Its position in `mi_option_t` is 15 in mimalloc v2 and v3 alike; the `extended`
/// bindings do not name it. A test checks the ordinal against v3's default.
const PURGE_DELAY: mi_option_t = 15;

/// The environment variable through which mimalloc reads the same option at start-up.
const PURGE_DELAY_ENV: &str = "MIMALLOC_PURGE_DELAY";

/// Makes mimalloc keep freed memory for reuse for the rest of the process, unless the user chose
/// a purge delay through `MIMALLOC_PURGE_DELAY`. Returns the purge delay now in force (ms, -1:
/// never). Harmless when mimalloc is linked but not the global allocator.
pub fn keep_freed_memory_for_reuse() -> i64 {
    if std::env::var_os(PURGE_DELAY_ENV).is_none() {
        // SAFETY: mimalloc's option setters take a plain enum value and an integer and may be
        // called at any time from any thread.
        unsafe { mi_option_set(PURGE_DELAY, -1) };
    }
    purge_delay()
}

/// mimalloc's purge delay in force (ms; -1: freed memory is never returned to the OS).
pub fn purge_delay() -> i64 {
    // SAFETY: reading an option has no preconditions.
    unsafe { mi_option_get(PURGE_DELAY) as i64 }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The ordinal names the purge delay: unless the environment sets it, it reads as mimalloc
    /// v3's default of 1000 ms (no other v3 option defaults to 1000), and setting it reads back.
    #[test]
    fn the_purge_delay_ordinal_reads_and_sets_the_purge_delay() {
        match std::env::var(PURGE_DELAY_ENV) {
            Ok(v) => {
                eprintln!("{PURGE_DELAY_ENV}={v} is set: the default cannot be checked");
                assert_eq!(keep_freed_memory_for_reuse(), purge_delay());
            }
            Err(_) => {
                assert_eq!(purge_delay(), 1000, "mimalloc v3's default purge delay");
                assert_eq!(keep_freed_memory_for_reuse(), -1);
                // SAFETY: as above; restores the default for the other tests of this binary.
                unsafe { mi_option_set(PURGE_DELAY, 1000) };
            }
        }
    }
}
