//! The operating system behind the commands: each platform module exports
//! the same names (the event source, its reader, the view of the host's
//! sockets and processes), so `cmd` is written once and compiles against
//! whichever is built. Linux-only and Windows-only code never meet.

pub use crate::source::ProbeMode;

#[cfg(target_os = "linux")]
pub use crate::linux::{
    HookStatus, LostCounts, ProbeConfig, Probes, RingReader,
    containers::{read_now as read_containers, spawn_watch as watch_containers},
    kernel::KernelView,
    memory::release_free_memory,
    netns::cookie_of_path,
    privileges::drop_to_runtime,
    probes::{DEFAULT_RING_BUFFER_BYTES, HookIncident},
};

#[cfg(windows)]
pub use crate::windows::{
    DEFAULT_RING_BUFFER_BYTES, HookIncident, HookStatus, KernelView, LostCounts, ProbeConfig,
    Probes, RingReader, cookie_of_path, drop_to_runtime, read_containers, release_free_memory,
    watch_containers,
};
