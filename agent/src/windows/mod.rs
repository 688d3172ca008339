//! The Windows event source and host view: ETW through ferrisetw, socket
//! tables through the IP Helper API, http.sys through the HTTP Server API,
//! and the service control manager. Built only for Windows; what it decodes
//! is in `bindwatch_core::etw`, which is tested on Linux.

pub mod files;
pub mod host;
pub mod httpapi;
pub mod iis;
pub mod ports;
pub mod process;
pub mod service;
pub mod session;
pub mod signals;
pub mod who;

pub use host::KernelView;
pub use session::{
    DEFAULT_RING_BUFFER_BYTES, HookIncident, HookStatus, LostCounts, ProbeConfig, Probes,
    RingReader,
};
pub use signals::{Reload, Shutdown};
pub use who::standalone as who_standalone;

/// Windows has no network namespaces to name by path.
pub fn cookie_of_path(path: &std::path::Path) -> std::io::Result<u64> {
    Err(std::io::Error::new(
        std::io::ErrorKind::Unsupported,
        format!(
            "{}: network namespaces are Linux's; on Windows a watch covers the host",
            path.display()
        ),
    ))
}

/// Nothing to give up: the ETW session needs the rights the service
/// starts with for as long as it runs (see README, Windows).
pub fn drop_to_runtime() -> std::io::Result<Vec<String>> {
    Ok(Vec::new())
}

/// No container runtime is read on Windows: owners there are http.sys's.
pub fn read_containers(
    _: &crate::containers::ContainersConfig,
) -> bindwatch_core::owner::Directory {
    bindwatch_core::owner::Directory::default()
}

/// Nothing to follow on Windows (see [`read_containers`]).
pub fn watch_containers(
    _: crate::containers::ContainersConfig,
    _: crate::containers::SharedDirectory,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async {})
}

/// The Windows heap returns freed memory by itself.
pub fn release_free_memory() {}

/// A NUL-terminated UTF-16 string for the Win32 API.
pub(crate) fn wide(s: &str) -> Vec<u16> {
    s.encode_utf16().chain(std::iter::once(0)).collect()
}

/// FILETIME (100 ns since 1601) to Unix nanoseconds.
pub(crate) fn filetime_to_unix_ns(ft: u64) -> u64 {
    const EPOCH_DIFF_100NS: u64 = 116_444_736_000_000_000;
    ft.saturating_sub(EPOCH_DIFF_100NS).saturating_mul(100)
}

/// The kernel, as `probes` reports it.
pub fn kernel_release() -> String {
    "Windows".to_owned()
}

/// Windows has no privileged ports: no user is asked about.
pub fn user_id(user: Option<&str>) -> Result<u32, String> {
    match user {
        None => Ok(0),
        Some(_) => Err("--user is for Linux: Windows has no privileged ports".into()),
    }
}

/// Windows has no network namespaces.
pub fn netns_cookie(path: Option<&std::path::Path>) -> Result<Option<u64>, String> {
    match path {
        None => Ok(None),
        Some(_) => Err("--netns is for Linux".into()),
    }
}

/// The reader of a pipe went away: Windows reports a closed pipe as
/// ERROR_NO_DATA (232, BrokenPipe) or ERROR_PIPE_NOT_CONNECTED (233).
pub fn pipe_closed(e: &std::io::Error) -> bool {
    e.kind() == std::io::ErrorKind::BrokenPipe || e.raw_os_error() == Some(233)
}

/// The daemon may run under the service control manager.
pub const HAS_SERVICE_MANAGER: bool = true;
pub use service::run_as_service;
