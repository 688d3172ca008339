//! What /proc says about processes and the sockets they hold. Everything
//! here reads /proc: it runs at start-up, on reconciliation and on the
//! diagnosis's slow path, never per event.

use std::collections::{HashMap, HashSet};
use std::ffi::CStr;
use std::os::fd::{AsFd, OwnedFd};

use rustix::fs::{Dir, Mode, OFlags, openat, readlinkat_raw};
use rustix::process::{Pid, PidfdFlags, PidfdGetfdFlags, pidfd_getfd, pidfd_open};

use crate::holders::ProcessInfo;
use crate::holders::process::{cgroup_path, units_from_cgroup};

/// One open file descriptor of a socket.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SocketFd {
    pub pid: u32,
    pub fd: i32,
}

fn open_dir(dirfd: impl AsFd, path: &CStr) -> rustix::io::Result<OwnedFd> {
    openat(
        dirfd,
        path,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
}

/// `socket:[12345]` → 12345.
fn socket_inode(link: &[u8]) -> Option<u64> {
    let rest = link.strip_prefix(b"socket:[")?.strip_suffix(b"]")?;
    std::str::from_utf8(rest).ok()?.parse().ok()
}

/// Socket inode → the descriptors that hold it, over every process (what
/// `ss -p` does). With `wanted`, only those inodes are kept.
pub fn socket_owners(wanted: Option<&HashSet<u64>>) -> HashMap<u64, Vec<SocketFd>> {
    let mut out: HashMap<u64, Vec<SocketFd>> = HashMap::new();
    let Ok(proc_fd) = open_dir(rustix::fs::CWD, c"/proc") else {
        return out;
    };
    let Ok(procs) = Dir::read_from(&proc_fd) else {
        return out;
    };
    let mut name = Vec::with_capacity(32);
    let mut link = Vec::with_capacity(64);
    for ent in procs.flatten() {
        let Some(pid) = std::str::from_utf8(ent.file_name().to_bytes())
            .ok()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        name.clear();
        name.extend_from_slice(ent.file_name().to_bytes());
        name.extend_from_slice(b"/fd\0");
        let Ok(path) = CStr::from_bytes_with_nul(&name) else {
            continue;
        };
        // Processes exit and deny access while we walk: skip them.
        let Ok(fd_dir) = open_dir(&proc_fd, path) else {
            continue;
        };
        let Ok(fds) = Dir::read_from(&fd_dir) else {
            continue;
        };
        for fd_ent in fds.flatten() {
            let fname = fd_ent.file_name();
            if fname.to_bytes().first() == Some(&b'.') {
                continue;
            }
            link.clear();
            let Ok((got, _)) = readlinkat_raw(&fd_dir, fname, link.spare_capacity_mut()) else {
                continue;
            };
            let Some(inode) = socket_inode(got) else {
                continue;
            };
            if wanted.is_some_and(|w| !w.contains(&inode)) {
                continue;
            }
            let Some(fd) = std::str::from_utf8(fname.to_bytes())
                .ok()
                .and_then(|s| s.parse().ok())
            else {
                continue;
            };
            out.entry(inode).or_default().push(SocketFd { pid, fd });
        }
    }
    out
}

/// Caches uid → user name lookups.
#[derive(Default)]
pub struct Users(HashMap<u32, Option<String>>);

impl Users {
    pub fn name(&mut self, uid: u32) -> Option<String> {
        self.0
            .entry(uid)
            .or_insert_with(|| lookup_user(uid))
            .clone()
    }
}

fn lookup_user(uid: u32) -> Option<String> {
    nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid))
        .ok()
        .flatten()
        .map(|u| u.name)
}

/// The effective uid, from /proc/PID/status.
fn effective_uid(pid: u32) -> Option<u32> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|v| v.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
}

/// Boot time (Unix seconds) and clock ticks per second, for process start
/// times.
fn boot_and_ticks() -> Option<(u64, u64)> {
    static CACHE: std::sync::OnceLock<Option<(u64, u64)>> = std::sync::OnceLock::new();
    *CACHE.get_or_init(|| {
        let stat = std::fs::read_to_string("/proc/stat").ok()?;
        let btime = stat
            .lines()
            .find_map(|l| l.strip_prefix("btime "))?
            .trim()
            .parse()
            .ok()?;
        let ticks = rustix::param::clock_ticks_per_second();
        (ticks > 0).then_some((btime, ticks))
    })
}

/// When the process started, from field 22 of /proc/PID/stat.
fn started_ns(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command may hold spaces and parentheses: fields start after the last ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    let start_ticks: u64 = rest.split_whitespace().nth(19)?.parse().ok()?;
    let (btime, ticks) = boot_and_ticks()?;
    Some(btime * 1_000_000_000 + start_ticks * 1_000_000_000 / ticks)
}

/// Reads a process's details; None when it has exited.
pub fn process_info(pid: u32, users: &mut Users) -> Option<ProcessInfo> {
    let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).ok()?;
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|b| {
            b.split(|&c| c == 0)
                .filter(|a| !a.is_empty())
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect::<Vec<_>>()
                .join(" ")
        })
        .unwrap_or_default();
    let uid = effective_uid(pid).unwrap_or(0);
    let (unit, container) = std::fs::read_to_string(format!("/proc/{pid}/cgroup"))
        .ok()
        .and_then(|t| cgroup_path(&t).map(units_from_cgroup))
        .unwrap_or((None, None));
    Some(ProcessInfo {
        pid,
        comm: comm.trim_end().to_owned(),
        cmdline: crate::redact::redact(&cmdline),
        exe: std::fs::read_link(format!("/proc/{pid}/exe"))
            .ok()
            .map(|p| p.to_string_lossy().into_owned()),
        uid,
        user: users.name(uid),
        unit,
        container,
        started_ns: started_ns(pid),
        complete: true,
    })
}

/// SO_REUSEADDR and SO_REUSEPORT of another process's socket, read from a
/// duplicate of its descriptor (pidfd_getfd, Linux 5.6, needs ptrace
/// rights over the process). None when that is refused.
pub fn reuse_flags(owner: SocketFd) -> Option<(bool, bool)> {
    let pid = Pid::from_raw(owner.pid as i32)?;
    let pidfd = pidfd_open(pid, PidfdFlags::empty()).ok()?;
    let sock = pidfd_getfd(&pidfd, owner.fd, PidfdGetfdFlags::empty()).ok()?;
    let ra = rustix::net::sockopt::socket_reuseaddr(&sock).ok()?;
    let rp = rustix::net::sockopt::socket_reuseport(&sock).ok()?;
    Some((ra, rp))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_socket_links_only() {
        assert_eq!(socket_inode(b"socket:[4026]"), Some(4026));
        assert_eq!(socket_inode(b"pipe:[4026]"), None);
        assert_eq!(socket_inode(b"/dev/null"), None);
        assert_eq!(socket_inode(b"socket:[x]"), None);
    }

    #[test]
    fn finds_its_own_socket_with_its_flags() {
        use std::os::fd::AsRawFd;
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let st = rustix::fs::fstat(&l).unwrap();
        let owners = socket_owners(Some(&[st.st_ino].into()));
        let me = std::process::id();
        let fds = owners.get(&st.st_ino).expect("own socket found");
        assert!(fds.contains(&SocketFd {
            pid: me,
            fd: l.as_raw_fd()
        }));
        // std sets SO_REUSEADDR on listeners.
        assert_eq!(
            reuse_flags(SocketFd {
                pid: me,
                fd: l.as_raw_fd()
            }),
            Some((true, false))
        );
        let info = process_info(me, &mut Users::default()).unwrap();
        assert_eq!(info.pid, me);
        let started = info.started_ns.unwrap();
        let now = crate::clock::now_unix_ns();
        assert!(
            started <= now && now - started < 3_600_000_000_000,
            "{started} vs {now}"
        );
        assert!(!info.cmdline.is_empty());
    }
}
