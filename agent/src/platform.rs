//! The one door to the operating system. Each platform is a folder
//! (`linux/`, `windows/`) exporting the same names: the event source and
//! its reader, the view of the host's sockets and processes, the container
//! runtimes, the signals that stop and reload, the host's small facts and
//! its file permissions (`files`, a leaf the settings and the store may
//! use). Everything else in the crate is written once against these names
//! and carries no `cfg` on the OS; adding a platform is a folder and one
//! line below (and its module line in `lib.rs`).

pub use crate::source::ProbeMode;

#[cfg(target_os = "linux")]
pub use crate::linux::{
    HAS_SERVICE_MANAGER, HookStatus, LostCounts, ProbeConfig, Probes, Reload, RingReader, Shutdown,
    containers::{read_now as read_containers, spawn_watch as watch_containers},
    files,
    kernel::KernelView,
    kernel_release,
    memory::release_free_memory,
    netns::cookie_of_path,
    netns_cookie, pipe_closed,
    privileges::drop_to_runtime,
    probes::{DEFAULT_RING_BUFFER_BYTES, HookIncident},
    run_as_service, user_id, who_standalone,
};

#[cfg(windows)]
pub use crate::windows::{
    DEFAULT_RING_BUFFER_BYTES, HAS_SERVICE_MANAGER, HookIncident, HookStatus, KernelView,
    LostCounts, ProbeConfig, Probes, Reload, RingReader, Shutdown, cookie_of_path, drop_to_runtime,
    files, kernel_release, netns_cookie, pipe_closed, read_containers, release_free_memory,
    run_as_service, user_id, watch_containers, who_standalone,
};
