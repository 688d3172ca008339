//! Network namespaces of the tests' own, entering one on a thread, and a
//! thread's credentials dropped.

use std::os::fd::AsRawFd;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

use crate::*;

pub(crate) static NS_SEQ: AtomicU32 = AtomicU32::new(0);

/// A network namespace of the test's own, with `lo` up, removed on drop.
pub struct Netns {
    pub name: String,
}

impl Netns {
    pub fn new(tag: &str) -> Self {
        require_root();
        let name = format!(
            "bwt-{tag}-{}-{}",
            std::process::id(),
            NS_SEQ.fetch_add(1, Ordering::Relaxed)
        );
        run_ok("ip", &["netns", "add", &name]);
        let ns = Self { name };
        ns.ip(&["link", "set", "lo", "up"]);
        ns
    }

    /// `ip -n NAME ARGS...`
    pub fn ip(&self, args: &[&str]) {
        let mut a = vec!["-n", self.name.as_str()];
        a.extend_from_slice(args);
        run_ok("ip", &a);
    }

    /// Runs `f` on a thread that has entered this namespace: sockets it
    /// creates live there.
    pub fn run<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        let path = format!("/run/netns/{}", self.name);
        std::thread::spawn(move || {
            enter(&path);
            f()
        })
        .join()
        .expect("namespace thread panicked")
    }

    /// The namespace's cookie, as the probes report it.
    pub fn cookie(&self) -> u64 {
        // An unbound socket: binding one here would add an event to the test's.
        self.run(|| {
            let s =
                socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::DGRAM, None).unwrap();
            netns_cookie_of(s.as_raw_fd())
        })
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

/// Moves the calling thread into the network namespace at `path`.
pub fn enter(path: &str) {
    let f = std::fs::File::open(path).unwrap_or_else(|e| panic!("open {path}: {e}"));
    rustix::thread::move_into_link_name_space(
        std::os::fd::AsFd::as_fd(&f),
        Some(rustix::thread::LinkNameSpaceType::Network),
    )
    .unwrap_or_else(|e| panic!("setns {path}: {e}"));
}

pub fn netns_cookie_of(fd: i32) -> u64 {
    bindwatch::linux::netns::netns_cookie(fd).expect("SO_NETNS_COOKIE")
}

/// Drops this thread's credentials to `uid` (only this thread: the raw
/// syscall bypasses glibc's process-wide setxid broadcast).
pub fn drop_thread_to_uid(uid: u32) {
    let gid = rustix::process::Gid::from_raw(uid);
    rustix::thread::set_thread_res_gid(gid, gid, gid).expect("setresgid");
    let uid = rustix::process::Uid::from_raw(uid);
    rustix::thread::set_thread_res_uid(uid, uid, uid).expect("setresuid");
}
