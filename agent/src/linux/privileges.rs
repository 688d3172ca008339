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

/// What loading the probes needs, each capability with the one that
/// implies it in the kernel (CAP_SYS_ADMIN did everything before 5.8).
const LOAD: &[(Capability, &str)] = &[
    (Capability::CAP_BPF, "load BPF programs and maps"),
    (Capability::CAP_PERFMON, "attach to tracepoints"),
    (
        Capability::CAP_NET_ADMIN,
        "attach to the cgroup socket hooks",
    ),
];

/// Why a load was refused, in terms the operator can act on: the
/// capabilities this process lacks (read from its own effective set), or,
/// when it holds them, the seccomp filter that must be refusing `bpf()`.
pub fn load_refusal_hint() -> String {
    let effective = caps::read(None, CapSet::Effective).ok();
    let seccomp = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| seccomp_mode(&s));
    refusal_hint(effective.as_ref(), seccomp)
}

fn refusal_hint(effective: Option<&CapsHashSet>, seccomp: Option<u8>) -> String {
    let Some(eff) = effective else {
        return "run as root, or with CAP_BPF, CAP_PERFMON, CAP_NET_ADMIN and CAP_SYS_RESOURCE \
                (this process's capabilities could not be read)"
            .to_owned();
    };
    let admin = eff.contains(&Capability::CAP_SYS_ADMIN);
    let missing: Vec<String> = LOAD
        .iter()
        .filter(|(c, _)| !admin && !eff.contains(c))
        .map(|(c, why)| format!("{c} (or CAP_SYS_ADMIN) to {why}"))
        .collect();
    let filtered = seccomp == Some(2);
    if !missing.is_empty() {
        let mut s = format!("this process lacks {}", missing.join(", "));
        if filtered {
            s.push_str(
                "; it runs under a seccomp filter, and container runtimes' default profiles \
                 allow bpf() and perf_event_open() only with CAP_SYS_ADMIN: add CAP_SYS_ADMIN \
                 (deploy/compose.yaml has the flags)",
            );
        }
        s
    } else if filtered && !admin {
        "this process holds CAP_BPF, CAP_PERFMON and CAP_NET_ADMIN but lacks CAP_SYS_ADMIN, and \
         runs under a seccomp filter: container runtimes' default profiles allow bpf() only \
         with CAP_SYS_ADMIN; add it (deploy/compose.yaml has the flags)"
            .to_owned()
    } else if filtered {
        "this process holds the capabilities, so its seccomp filter (or a security module) \
         refuses bpf(): run it unconfined or with a profile that allows bpf and perf_event_open"
            .to_owned()
    } else {
        "this process holds the capabilities, so a security module (or \
         kernel.unprivileged_bpf_disabled in a user namespace) refuses bpf()"
            .to_owned()
    }
}

/// The `Seccomp:` mode of a /proc/PID/status (0 none, 1 strict, 2 filter).
fn seccomp_mode(status: &str) -> Option<u8> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("Seccomp:"))
        .and_then(|v| v.trim().parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(caps: &[Capability]) -> CapsHashSet {
        caps.iter().copied().collect()
    }

    #[test]
    fn a_refusal_names_the_capabilities_missing() {
        // As in a container given everything but CAP_SYS_ADMIN and CAP_BPF.
        let eff = set(&[
            Capability::CAP_PERFMON,
            Capability::CAP_NET_ADMIN,
            Capability::CAP_SYS_PTRACE,
        ]);
        let hint = refusal_hint(Some(&eff), Some(2));
        assert!(
            hint.starts_with("this process lacks CAP_BPF (or CAP_SYS_ADMIN)"),
            "{hint}"
        );
        assert!(!hint.contains("CAP_PERFMON (or"), "{hint}");
        assert!(hint.contains("add CAP_SYS_ADMIN"), "{hint}");
    }

    #[test]
    fn with_every_capability_but_sys_admin_a_seccomp_filter_is_named() {
        let eff = set(&[
            Capability::CAP_BPF,
            Capability::CAP_PERFMON,
            Capability::CAP_NET_ADMIN,
        ]);
        let hint = refusal_hint(Some(&eff), Some(2));
        assert!(
            hint.contains("lacks CAP_SYS_ADMIN") && hint.contains("seccomp"),
            "{hint}"
        );
        // No filter: a security module, not a capability.
        let hint = refusal_hint(Some(&set(&[Capability::CAP_SYS_ADMIN])), Some(0));
        assert!(hint.contains("security module"), "{hint}");
    }

    #[test]
    fn reads_the_seccomp_mode() {
        let status = "Name:\tbindwatch\nNoNewPrivs:\t1\nSeccomp:\t2\nSeccomp_filters:\t1\n";
        assert_eq!(seccomp_mode(status), Some(2));
        assert_eq!(seccomp_mode("Name:\tx\n"), None);
    }
}
