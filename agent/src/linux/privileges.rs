//! Keeping only the capabilities the running daemon needs. Loading and
//! attaching the probes needs CAP_BPF, CAP_PERFMON, CAP_NET_ADMIN and
//! CAP_SYS_RESOURCE (and mounting tracefs CAP_SYS_ADMIN); once they are
//! attached, the links are held by file descriptors and reading the maps
//! needs none of them.

use caps::{CapSet, Capability, CapsHashSet};

/// What the daemon keeps after start-up, and why.
pub const RUNTIME: &[(Capability, &str)] = &[
    (
        Capability::CAP_SYS_ADMIN,
        "setns into other network namespaces to read their sockets (sock_diag)",
    ),
    (
        Capability::CAP_SYS_PTRACE,
        "read other processes' /proc/PID/fd, ns/net and exe; pidfd_getfd for the socket options of sockets bound before start",
    ),
    (
        Capability::CAP_DAC_READ_SEARCH,
        "walk /proc and /run/netns entries owned by other users",
    ),
    (
        Capability::CAP_NET_ADMIN,
        "list each namespace's nftables rules (nft), for ports a NAT rule takes",
    ),
];

/// Drops every capability but [`RUNTIME`] from all sets (bounding
/// included, so they cannot come back) and sets no_new_privs. Returns the
/// names kept; an error leaves the process as it was.
pub fn drop_to_runtime() -> Result<Vec<String>, caps::errors::CapsError> {
    let permitted = caps::read(None, CapSet::Permitted)?;
    let keep: CapsHashSet = RUNTIME
        .iter()
        .map(|(c, _)| *c)
        .filter(|c| permitted.contains(c))
        .collect();
    // The bounding set first: that needs CAP_SETPCAP, about to go.
    for c in caps::read(None, CapSet::Bounding)? {
        if !keep.contains(&c) {
            caps::drop(None, CapSet::Bounding, c)?;
        }
    }
    caps::clear(None, CapSet::Ambient)?;
    caps::clear(None, CapSet::Inheritable)?;
    caps::set(None, CapSet::Effective, &keep)?;
    caps::set(None, CapSet::Permitted, &keep)?;
    if let Err(e) = rustix::thread::set_no_new_privs(true) {
        tracing::warn!(error = %e, "could not set no_new_privs");
    }
    let mut names: Vec<String> = keep.iter().map(|c| c.to_string()).collect();
    names.sort();
    Ok(names)
}
