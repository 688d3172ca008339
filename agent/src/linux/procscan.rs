//! What /proc says about processes and the sockets they hold. Everything
//! here reads /proc: it runs at start-up, on reconciliation and on the
//! diagnosis's slow path, never per event.

use std::collections::{HashMap, HashSet};
use std::ffi::CStr;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use rustix::fs::{Dir, Mode, OFlags, openat, readlinkat_raw};
use rustix::process::{Pid, PidfdFlags, PidfdGetfdFlags, pidfd_getfd, pidfd_open};

use bindwatch_core::holders::ProcessInfo;
use bindwatch_core::holders::process::{cgroup_path, units_from_cgroup};

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

/// Held while this process holds a duplicate of another's socket
/// descriptor ([`reuse_flags`]), and while a walk reads this process's own
/// descriptors: without it a walk running beside a read of the flags saw
/// the duplicate and named the agent as an owner of the other's socket.
static DUPLICATES: std::sync::Mutex<()> = std::sync::Mutex::new(());

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
    let me = std::process::id();
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
        let _own = (pid == me).then(|| DUPLICATES.lock().unwrap_or_else(|p| p.into_inner()));
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
    drop_own_duplicates(&mut out, me);
    out
}

/// The agent shares no socket with another process: every descriptor it
/// opens is close-on-exec and it passes none. So where another process
/// holds a socket too, a descriptor of the agent's is a duplicate of its
/// own making ([`reuse_flags`]), not an owner: dropped. The mutex above
/// was meant to keep a walk from seeing one; a 6.12 guest's run still
/// named the agent beside nginx once, so this holds whatever the path.
fn drop_own_duplicates(owners: &mut HashMap<u64, Vec<SocketFd>>, me: u32) {
    for fds in owners.values_mut() {
        if fds.iter().any(|f| f.pid != me) {
            fds.retain(|f| f.pid != me);
        }
    }
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

/// Boot time (Unix seconds) and clock ticks per second, for process start
/// times.
fn boot_and_ticks() -> Option<(u64, u64)> {
    static CACHE: std::sync::OnceLock<Option<(u64, u64)>> = std::sync::OnceLock::new();
    *CACHE.get_or_init(|| {
        let btime = procfs::boot_time_secs().ok()?;
        let ticks = procfs::ticks_per_second();
        (ticks > 0).then_some((btime, ticks))
    })
}

/// Reads a process's details through procfs; None when it has exited.
pub fn process_info(pid: u32, users: &mut Users) -> Option<ProcessInfo> {
    let p = procfs::process::Process::new(i32::try_from(pid).ok()?).ok()?;
    let stat = p.stat().ok()?;
    let cmdline = p.cmdline().map(|a| a.join(" ")).unwrap_or_default();
    let uid = p.status().ok().map_or(0, |s| s.euid);
    let (unit, container) = std::fs::read_to_string(format!("/proc/{pid}/cgroup"))
        .ok()
        .and_then(|t| cgroup_path(&t).map(units_from_cgroup))
        .unwrap_or((None, None));
    let started_ns = boot_and_ticks()
        .map(|(btime, ticks)| btime * 1_000_000_000 + stat.starttime * 1_000_000_000 / ticks);
    Some(ProcessInfo {
        pid,
        comm: stat.comm,
        cmdline: crate::redact::redact(&cmdline),
        exe: p.exe().ok().map(|e| e.to_string_lossy().into_owned()),
        uid,
        user: users.name(uid),
        unit,
        container,
        started_ns,
        complete: true,
    })
}

/// SO_REUSEADDR and SO_REUSEPORT of another process's socket, read from a
/// duplicate of its descriptor. None when that is refused.
pub fn reuse_flags(owner: SocketFd) -> Option<(bool, bool)> {
    with_duplicate(owner, |sock| {
        let ra = rustix::net::sockopt::socket_reuseaddr(sock).ok()?;
        let rp = rustix::net::sockopt::socket_reuseport(sock).ok()?;
        Some((ra, rp))
    })
}

/// Runs `f` on a duplicate of another process's descriptor (pidfd_getfd,
/// Linux 5.6, needs ptrace rights over the process), closed after it.
/// None when the duplicate is refused.
pub fn with_duplicate<T>(
    owner: SocketFd,
    f: impl FnOnce(BorrowedFd<'_>) -> Option<T>,
) -> Option<T> {
    let pid = Pid::from_raw(owner.pid as i32)?;
    let pidfd = pidfd_open(pid, PidfdFlags::empty()).ok()?;
    // Declared before `sock`, so the duplicate is closed before it is released.
    let _held = DUPLICATES.lock().unwrap_or_else(|p| p.into_inner());
    let sock = pidfd_getfd(&pidfd, owner.fd, PidfdGetfdFlags::empty()).ok()?;
    f(sock.as_fd())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_agent_is_no_owner_of_another_process_socket() {
        let me = 847;
        let fd = |pid, fd| SocketFd { pid, fd };
        let mut owners: HashMap<u64, Vec<SocketFd>> = HashMap::from([
            // nginx's listener, seen through the agent's duplicate.
            (1, vec![fd(844, 6), fd(me, 31), fd(851, 6)]),
            // The agent's own listener: it stays the owner.
            (2, vec![fd(me, 9)]),
        ]);
        drop_own_duplicates(&mut owners, me);
        let pids = |i| owners[&i].iter().map(|f| f.pid).collect::<Vec<_>>();
        assert_eq!(pids(1), [844, 851]);
        assert_eq!(pids(2), [me]);
    }

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
        let now = bindwatch_core::clock::now_unix_ns();
        assert!(
            started <= now && now - started < 3_600_000_000_000,
            "{started} vs {now}"
        );
        assert!(!info.cmdline.is_empty());
        // procfs read the rest: the test binary, its name, its user.
        let exe = std::env::current_exe().unwrap();
        assert_eq!(info.exe.as_deref(), exe.to_str());
        assert!(
            info.cmdline.starts_with(exe.to_str().unwrap()),
            "{}",
            info.cmdline
        );
        let name: String = exe
            .file_name()
            .unwrap()
            .to_str()
            .unwrap()
            .chars()
            .take(15)
            .collect();
        assert_eq!(info.comm, name);
        assert_eq!(info.uid, rustix::process::geteuid().as_raw());
    }
}
