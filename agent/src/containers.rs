//! Settings for reading the host's container runtimes, and the handle
//! through which the event loop sees their latest directory. The readers
//! are the platform's (`linux::containers`); the owners they name are the
//! core's (`owner`).

use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use serde::Deserialize;

use bindwatch_core::owner::Directory;

/// Where the runtimes are asked, and how long bindwatch waits for them.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ContainersConfig {
    /// Read the runtimes at all (off: owners are named by cgroup only).
    #[serde(default = "yes")]
    pub enabled: bool,
    /// The Docker Engine API (`unix://PATH`); by default `$DOCKER_HOST`
    /// when it names a unix socket, else `unix:///var/run/docker.sock`.
    #[serde(default = "default_docker_host")]
    pub docker_host: String,
    /// Podman's Docker-compatible API socket.
    #[serde(default = "default_podman_socket")]
    pub podman_socket: PathBuf,
    /// containerd's state directory, whose OCI bundles name each
    /// container and, through the CRI's annotations, its pod.
    #[serde(default = "default_containerd_state")]
    pub containerd_state: PathBuf,
    /// Longest wait for one answer of a runtime, in milliseconds.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    /// Seconds between full re-reads besides those a runtime's own event
    /// stream asks for.
    #[serde(default = "default_refresh_secs")]
    pub refresh_secs: u64,
}

fn yes() -> bool {
    true
}

/// `$DOCKER_HOST` when it is a unix socket, as the docker CLI reads it.
pub fn default_docker_host() -> String {
    std::env::var("DOCKER_HOST")
        .ok()
        .filter(|h| h.starts_with("unix://"))
        .unwrap_or_else(|| "unix:///var/run/docker.sock".to_owned())
}

fn default_podman_socket() -> PathBuf {
    PathBuf::from("/run/podman/podman.sock")
}

fn default_containerd_state() -> PathBuf {
    PathBuf::from("/run/containerd")
}

fn default_timeout_ms() -> u64 {
    1000
}

fn default_refresh_secs() -> u64 {
    30
}

impl Default for ContainersConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            docker_host: default_docker_host(),
            podman_socket: default_podman_socket(),
            containerd_state: default_containerd_state(),
            timeout_ms: default_timeout_ms(),
            refresh_secs: default_refresh_secs(),
        }
    }
}

impl ContainersConfig {
    pub fn timeout(&self) -> Duration {
        Duration::from_millis(self.timeout_ms.max(1))
    }

    /// The Docker socket's path, or why `docker_host` names none.
    pub fn docker_socket(&self) -> Result<PathBuf, String> {
        self.docker_host
            .strip_prefix("unix://")
            .map(PathBuf::from)
            .ok_or_else(|| {
                format!(
                    "docker_host {:?}: only unix:// sockets are read",
                    self.docker_host
                )
            })
    }
}

/// The latest directory, swapped in whole by the reader and read by the
/// event loop between batches (never waited on: a read takes the lock for
/// one pointer copy).
#[derive(Clone, Default)]
pub struct SharedDirectory(Arc<RwLock<Arc<Directory>>>);

impl SharedDirectory {
    pub fn get(&self) -> Arc<Directory> {
        match self.0.read() {
            Ok(g) => Arc::clone(&g),
            Err(e) => Arc::clone(&e.into_inner()),
        }
    }

    pub fn set(&self, d: Directory) {
        let d = Arc::new(d);
        match self.0.write() {
            Ok(mut g) => *g = d,
            Err(e) => *e.into_inner() = d,
        }
    }
}
