//! Small facts of the host the commands need: the kernel's release, a
//! user's id, a namespace named by path, whether standard output's reader
//! went away.

use std::path::Path;

/// The kernel's release, as `probes` reports it.
pub fn kernel_release() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|e| format!("unknown ({e})"))
}

/// A user's id by name or number; None is the caller's own.
pub fn user_id(user: Option<&str>) -> Result<u32, String> {
    let Some(u) = user else {
        return Ok(nix::unistd::getuid().as_raw());
    };
    if let Ok(n) = u.parse::<u32>() {
        return Ok(n);
    }
    match nix::unistd::User::from_name(u) {
        Ok(Some(p)) => Ok(p.uid.as_raw()),
        Ok(None) => Err(format!("no user {u:?} on this host")),
        Err(e) => Err(format!("looking up user {u:?}: {e}")),
    }
}

/// The network namespace at `path` (this process's when None), by cookie.
pub fn netns_cookie(path: Option<&Path>) -> Result<Option<u64>, String> {
    let path = path.unwrap_or(Path::new("/proc/self/ns/net"));
    super::netns::cookie_of_path(path)
        .map(Some)
        .map_err(|e| format!("reading the network namespace {}: {e}", path.display()))
}

/// The reader of a pipe went away (`bindwatch trace | head`).
pub fn pipe_closed(e: &std::io::Error) -> bool {
    e.kind() == std::io::ErrorKind::BrokenPipe
}

/// systemd (or any Unix supervisor) runs the daemon as a plain process.
pub const HAS_SERVICE_MANAGER: bool = false;

/// There is no service control manager to hand the daemon to.
pub fn run_as_service(_: impl Fn() -> i32 + Send + Sync + 'static) -> std::io::Result<()> {
    Err(std::io::Error::new(
        std::io::ErrorKind::Unsupported,
        "--service is for Windows; under systemd run `bindwatch run`",
    ))
}
