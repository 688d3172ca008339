//! Giving memory back to the system after large transient work.

/// Returns the allocator's free pages to the kernel. A snapshot of the
/// kernel's sockets (netlink replies, the socket-to-process map) is large
/// and short-lived; glibc keeps the freed heap mapped, so without this the
/// daemon's resident memory would stay at the snapshot's peak, not at what
/// the holder table needs (measured in BENCHMARKS.md).
pub fn release_free_memory() {
    #[cfg(target_env = "gnu")]
    // SAFETY: malloc_trim only walks the allocator's own free lists.
    unsafe {
        libc::malloc_trim(0);
    }
}
