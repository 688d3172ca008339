//! The host's network namespaces: found through /proc/*/ns/net and
//! /run/netns, named by the same cookie the probes report
//! (`bpf_get_netns_cookie`, `SO_NETNS_COOKIE`), each with a sock_diag
//! socket opened inside it.

use std::collections::HashMap;
use std::fs::File;
use std::net::IpAddr;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::fs::MetadataExt;

use super::sockdiag::DiagSocket;

const SO_NETNS_COOKIE: libc::c_int = 71;

pub struct Namespace {
    pub cookie: u64,
    /// nsfs inode, as `ls -i /proc/PID/ns/net` shows it.
    pub ino: u64,
    /// Kept open: the path that led to it (a thread's /proc entry) may be
    /// gone when a diagnosis needs to enter it. Dropped by `refresh` once no
    /// process or bind mount holds the namespace.
    file: File,
    pub diag: DiagSocket,
}

/// The cookie of the namespace a socket lives in (`SO_NETNS_COOKIE`).
pub fn netns_cookie(fd: RawFd) -> std::io::Result<u64> {
    let mut cookie: u64 = 0;
    let mut len = std::mem::size_of::<u64>() as libc::socklen_t;
    // SAFETY: cookie and len are valid for the duration of the call.
    let rc = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            SO_NETNS_COOKIE,
            (&mut cookie as *mut u64).cast(),
            &mut len,
        )
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(cookie)
}

/// Runs `f` on a short-lived thread inside the namespace `ns` (a file of
/// nsfs). Only that thread moves; the agent's own threads never do.
pub fn in_netns<T: Send>(ns: &File, f: impl FnOnce() -> T + Send) -> std::io::Result<T> {
    std::thread::scope(|s| {
        s.spawn(|| {
            rustix::thread::move_into_link_name_space(
                std::os::fd::AsFd::as_fd(ns),
                Some(rustix::thread::LinkNameSpaceType::Network),
            )?;
            Ok(f())
        })
        .join()
        .unwrap_or_else(|_| Err(std::io::Error::other("namespace worker panicked")))
    })
}

/// The addresses of the calling thread's namespace.
pub fn local_addresses() -> Vec<IpAddr> {
    let Ok(list) = nix::ifaddrs::getifaddrs() else {
        return Vec::new();
    };
    let mut out: Vec<IpAddr> = list
        .filter_map(|ifa| {
            let a = ifa.address?;
            if let Some(sin) = a.as_sockaddr_in() {
                Some(IpAddr::V4(sin.ip()))
            } else {
                a.as_sockaddr_in6().map(|sin6| IpAddr::V6(sin6.ip()))
            }
        })
        .collect();
    out.sort();
    out.dedup();
    out
}

/// `net.ipv4.ip_unprivileged_port_start` of the calling thread's namespace.
pub fn unprivileged_port_start() -> Option<u16> {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_unprivileged_port_start")
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// The calling thread's namespace's ephemeral range and reserved ports.
pub fn ephemeral_ports() -> Option<bindwatch_core::holders::EphemeralPorts> {
    let read = |f: &str| std::fs::read_to_string(format!("/proc/sys/net/ipv4/{f}")).ok();
    bindwatch_core::holders::EphemeralPorts::parse(
        &read("ip_local_port_range")?,
        &read("ip_local_reserved_ports").unwrap_or_default(),
    )
}

/// The cookie of the namespace at `path` (/run/netns/NAME, /proc/PID/ns/net).
pub fn cookie_of_path(path: &std::path::Path) -> std::io::Result<u64> {
    let file = File::open(path)?;
    let fd = in_netns(&file, || {
        rustix::net::socket(
            rustix::net::AddressFamily::INET,
            rustix::net::SocketType::DGRAM,
            None,
        )
        .map_err(std::io::Error::from)
    })??;
    netns_cookie(fd.as_raw_fd())
}

/// Opens a sock_diag socket inside the namespace at `path`; returns it with
/// the namespace's cookie and inode.
fn open_at(path: &str) -> std::io::Result<Namespace> {
    let file = File::open(path)?;
    let ino = file.metadata()?.ino();
    let diag = in_netns(&file, DiagSocket::open)??;
    let cookie = netns_cookie(diag.as_raw_fd())?;
    Ok(Namespace {
        cookie,
        ino,
        file,
        diag,
    })
}

#[derive(Default)]
pub struct Namespaces {
    by_cookie: HashMap<u64, Namespace>,
    by_ino: HashMap<u64, u64>,
    /// The agent's own namespace.
    pub own: Option<u64>,
    /// Whether other namespaces can be entered (CAP_SYS_ADMIN).
    pub can_enter: bool,
}

impl Namespaces {
    /// Every namespace some process is in or /run/netns names.
    pub fn discover() -> Self {
        let mut me = Self::default();
        match DiagSocket::open() {
            Ok(diag) => {
                if let Ok(cookie) = netns_cookie(diag.as_raw_fd()) {
                    let ino = std::fs::metadata("/proc/self/ns/net")
                        .map(|m| m.ino())
                        .unwrap_or(0);
                    me.own = Some(cookie);
                    me.by_ino.insert(ino, cookie);
                    if let Ok(file) = File::open("/proc/self/ns/net") {
                        me.by_cookie.insert(
                            cookie,
                            Namespace {
                                cookie,
                                ino,
                                file,
                                diag,
                            },
                        );
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "cannot open a sock_diag socket"),
        }
        me.can_enter = File::open("/proc/self/ns/net")
            .and_then(|f| in_netns(&f, || ()))
            .is_ok();
        me.refresh();
        me
    }

    /// Adds namespaces that appeared and drops those no process or bind
    /// mount holds any more (our socket would keep them alive).
    pub fn refresh(&mut self) {
        if !self.can_enter {
            return;
        }
        let mut seen: HashMap<u64, String> = HashMap::new();
        if let Ok(rd) = std::fs::read_dir("/run/netns") {
            for e in rd.flatten() {
                let p = e.path().to_string_lossy().into_owned();
                if let Ok(m) = std::fs::metadata(&p) {
                    seen.entry(m.ino()).or_insert(p);
                }
            }
        }
        if let Ok(rd) = std::fs::read_dir("/proc") {
            for e in rd.flatten() {
                let name = e.file_name();
                let Some(pid) = name
                    .to_str()
                    .filter(|s| s.bytes().all(|b| b.is_ascii_digit()))
                else {
                    continue;
                };
                let p = format!("/proc/{pid}/ns/net");
                if let Ok(m) = std::fs::metadata(&p) {
                    seen.entry(m.ino()).or_insert(p);
                }
            }
        }
        let own_ino = self.own.and_then(|c| self.by_cookie.get(&c)).map(|n| n.ino);
        let gone: Vec<u64> = self
            .by_ino
            .keys()
            .filter(|ino| !seen.contains_key(ino) && Some(**ino) != own_ino)
            .copied()
            .collect();
        for ino in gone {
            if let Some(c) = self.by_ino.remove(&ino) {
                self.by_cookie.remove(&c);
            }
        }
        for (ino, path) in seen {
            if !self.by_ino.contains_key(&ino) {
                self.add(&path);
            }
        }
    }

    fn add(&mut self, path: &str) -> Option<u64> {
        match open_at(path) {
            Ok(ns) => {
                let c = ns.cookie;
                self.by_ino.insert(ns.ino, c);
                self.by_cookie.insert(c, ns);
                Some(c)
            }
            Err(e) => {
                tracing::debug!(path, error = %e, "skipping a network namespace");
                None
            }
        }
    }

    /// The namespace of a process, added if new.
    pub fn of_pid(&mut self, pid: u32) -> Option<u64> {
        let p = format!("/proc/{pid}/ns/net");
        let ino = std::fs::metadata(&p).ok()?.ino();
        if let Some(c) = self.by_ino.get(&ino) {
            return Some(*c);
        }
        if !self.can_enter {
            return None;
        }
        self.add(&p)
    }

    /// The namespace `cookie`, found through thread `tid` (or a fresh
    /// discovery) when not yet known.
    pub fn get_or_find(&mut self, cookie: Option<u64>, tid: u32) -> Option<&mut Namespace> {
        let c = match cookie {
            Some(c) if self.by_cookie.contains_key(&c) => c,
            _ => match (self.of_pid(tid), cookie) {
                (Some(found), None) => found,
                (Some(found), Some(c)) if found == c => c,
                (_, Some(c)) => {
                    // The thread has gone or moved on: look again.
                    self.refresh();
                    c
                }
                (None, None) => return None,
            },
        };
        self.by_cookie.get_mut(&c)
    }

    pub fn iter_mut(&mut self) -> impl Iterator<Item = &mut Namespace> {
        self.by_cookie.values_mut()
    }

    pub fn cookies(&self) -> impl Iterator<Item = u64> + '_ {
        self.by_cookie.keys().copied()
    }

    pub fn contains(&self, cookie: u64) -> bool {
        self.by_cookie.contains_key(&cookie)
    }
}

impl Namespace {
    /// Runs `f` inside this namespace.
    pub fn run<T: Send>(&self, f: impl FnOnce() -> T + Send) -> Option<T> {
        in_netns(&self.file, f).ok()
    }
}
