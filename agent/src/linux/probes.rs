//! Loading and attaching the embedded eBPF object.

use std::collections::HashMap;
use std::fs::File;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};

use aya::maps::{MapData, PerCpuArray, PerCpuHashMap, RingBuf};
use aya::programs::{
    CgroupAttachMode, CgroupSock, CgroupSockAddr, FEntry, FExit, SockOps, TracePoint,
};
use aya::{Btf, Ebpf, EbpfLoader};
use bindwatch_common::{
    AcceptKey, BoundSock, LAYOUT_SYMBOL, LAYOUT_VERSION, bound, config, lost, names,
};
use object::{Object, ObjectSection, ObjectSymbol};

use super::procscan::SocketFd;
use crate::error::{Error, Result};

/// The probe object, built by `scripts/build-probes` and committed, so that
/// neither building nor running the agent needs LLVM.
pub static PROBE_OBJECT: &[u8] =
    aya::include_bytes_aligned!("../../../probes/bindwatch-probes.bpf.o");

pub use crate::source::{
    DEFAULT_RING_BUFFER_BYTES, HookIncident, HookStatus, LostCounts, ProbeConfig, ProbeMode,
};

enum Hook {
    TracePoint(&'static str, &'static str),
    FEntry(&'static str),
    FExit(&'static str),
    SockAddr,
    Sock,
    SockOps,
}

/// Binds and listens from the syscalls' exit tracepoints: a bind begins
/// at the cgroup bind hook, a plain listen at its address
/// (`config::LISTEN_BEGINS_AT_ADDRESS`), as in the fexit set. No entry
/// tracepoint, so other syscalls take only the kernel's exit path. The
/// exits read a refused call's arguments from the task's saved registers
/// (`bpf_task_pt_regs`, Linux 5.15 with BTF; x86-64's layout). All or
/// nothing; ends before beginnings.
const TRACEPOINT_SET: &[(&str, Hook)] = &[
    (
        names::BIND_EXIT,
        Hook::TracePoint("syscalls", "sys_exit_bind"),
    ),
    (
        names::LISTEN_EXIT,
        Hook::TracePoint("syscalls", "sys_exit_listen"),
    ),
    (names::BIND4_BEGIN, Hook::SockAddr),
    (names::BIND6_BEGIN, Hook::SockAddr),
];

/// Binds and listens from the syscalls' entry and exit tracepoints (every
/// kernel). Exit hooks come before their entry hooks so no entry is
/// recorded that nothing would complete; the cgroup bind hooks add to the
/// entries.
const ENTRY_SET: &[(&str, Hook)] = &[
    (
        names::SYS_EXIT_BIND,
        Hook::TracePoint("syscalls", "sys_exit_bind"),
    ),
    (
        names::SYS_EXIT_LISTEN,
        Hook::TracePoint("syscalls", "sys_exit_listen"),
    ),
    (
        names::SYS_ENTER_BIND,
        Hook::TracePoint("syscalls", "sys_enter_bind"),
    ),
    (
        names::SYS_ENTER_LISTEN,
        Hook::TracePoint("syscalls", "sys_enter_listen"),
    ),
    (names::BIND4, Hook::SockAddr),
    (names::BIND6, Hook::SockAddr),
];

/// Binds and listens from trampolines on the kernel's functions and the
/// cgroup bind hooks (where a bind begins in this set; a plain listen
/// begins at its address, `config::LISTEN_BEGINS_AT_ADDRESS`): no syscall
/// tracepoint, so no tax on other syscalls. All or nothing; ends before
/// beginnings, as above.
const FEXIT_SET: &[(&str, Hook)] = &[
    (names::FEXIT_INET_BIND, Hook::FExit("inet_bind")),
    (names::FEXIT_INET6_BIND, Hook::FExit("inet6_bind")),
    (names::FEXIT_MPTCP_BIND, Hook::FExit("mptcp_bind")),
    (names::FEXIT_INET_LISTEN, Hook::FExit("inet_listen")),
    (names::FEXIT_MPTCP_LISTEN, Hook::FExit("mptcp_listen")),
    (names::FENTRY_MPTCP_LISTEN, Hook::FEntry("mptcp_listen")),
    (names::BIND4_BEGIN, Hook::SockAddr),
    (names::BIND6_BEGIN, Hook::SockAddr),
];

/// Kernel functions the fexit set hooks only where the kernel has them:
/// MPTCP is a build option. Where it is built, its sockets bind and listen
/// through these (newer kernels without calling `inet_bind` or
/// `inet_listen`).
const IF_PRESENT: &[&str] = &["mptcp_bind", "mptcp_listen"];

/// Attached with every set, after it (they only add to its entries): the
/// marks of bound sockets in each socket's own storage.
const COMMON: &[(&str, Hook)] = &[
    (names::POST_BIND4, Hook::Sock),
    (names::POST_BIND6, Hook::Sock),
    (names::SOCK_RELEASE, Hook::Sock),
];

/// `COMMON` with the marks in the `BOUND` map, where the kernel refuses
/// socket-local storage to cgroup socket programs (before Linux 5.11).
const COMMON_MAP: &[(&str, Hook)] = &[
    (names::POST_BIND4_MAP, Hook::Sock),
    (names::POST_BIND6_MAP, Hook::Sock),
    (names::RELEASE_MAP, Hook::Sock),
];

/// Where the probes mark the sockets bindwatch follows, for their release.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BoundStore {
    /// Each socket's own storage (`BOUND_SK`): freed with the socket, and
    /// a close of an unmarked socket costs one look at it.
    SocketStorage,
    /// The `BOUND` LRU map, by socket cookie.
    Map,
}

impl BoundStore {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::SocketStorage => "socket_storage",
            Self::Map => "map",
        }
    }

    fn common(self) -> &'static [(&'static str, Hook)] {
        match self {
            Self::SocketStorage => COMMON,
            Self::Map => COMMON_MAP,
        }
    }

    fn sock_ops(self) -> &'static (&'static str, Hook) {
        match self {
            Self::SocketStorage => &LIFECYCLE_SOCK_OPS,
            Self::Map => &LIFECYCLE_SOCK_OPS_MAP,
        }
    }
}

/// Set (to anything), makes the agent take the `BOUND` map as if the
/// kernel refused socket-local storage: the tests' way to run the
/// fallback where the kernel has it.
pub const REFUSE_SOCKET_STORAGE_ENV: &str = "BINDWATCH_REFUSE_SOCKET_STORAGE";

/// Listen addresses, listener stops and accept counts: from sock_ops
/// callbacks on the cgroup where the kernel has them (acting at a listen,
/// a handshake's end and a listener's stop), else from the state
/// tracepoint (called at every state change of every TCP connection).
const LIFECYCLE_SOCK_OPS: (&str, Hook) = (names::SOCK_OPS, Hook::SockOps);
const LIFECYCLE_SOCK_OPS_MAP: (&str, Hook) = (names::SOCK_OPS_MAP, Hook::SockOps);
const LIFECYCLE_TRACEPOINT: (&str, Hook) = (
    names::SOCK_SET_STATE,
    Hook::TracePoint("sock", "inet_sock_set_state"),
);

/// Set (to anything), keeps the sock_ops program from attaching: the tests'
/// way to run the state tracepoint's lifecycle where sock_ops works.
pub const NO_SOCK_OPS_ENV: &str = "BINDWATCH_NO_SOCK_OPS";

/// Where the TCP lifecycle comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lifecycle {
    SockOps,
    StateTracepoint,
}

impl Lifecycle {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::SockOps => "sock_ops",
            Self::StateTracepoint => "state_tracepoint",
        }
    }
}

/// The loaded probes. Dropping this detaches every program.
pub struct Probes {
    ebpf: Ebpf,
    hooks: Vec<HookStatus>,
    cgroup_root: PathBuf,
    set: ProbeMode,
    fallback: Option<String>,
    exits_refused: Option<String>,
    lifecycle: Lifecycle,
    sock_ops_refused: Option<String>,
    store: BoundStore,
    storage_refused: Option<String>,
}

/// The layout version recorded in a probe object.
pub fn object_layout_version(obj: &[u8]) -> Result<u16> {
    let file = object::File::parse(obj).map_err(|e| Error::BadObject(e.to_string()))?;
    let sym = file
        .symbols()
        .find(|s| s.name() == Ok(LAYOUT_SYMBOL))
        .ok_or_else(|| Error::BadObject(format!("no {LAYOUT_SYMBOL} symbol")))?;
    let section = sym
        .section_index()
        .and_then(|i| file.section_by_index(i).ok())
        .ok_or_else(|| Error::BadObject(format!("{LAYOUT_SYMBOL} has no section")))?;
    let data = section
        .data()
        .map_err(|e| Error::BadObject(e.to_string()))?;
    let off = (sym.address() - section.address()) as usize;
    let bytes = data
        .get(off..off + 2)
        .ok_or_else(|| Error::BadObject(format!("{LAYOUT_SYMBOL} lies outside its section")))?;
    Ok(u16::from_le_bytes([bytes[0], bytes[1]]))
}

/// Refuses an object built for another event layout.
pub fn check_layout(obj: &[u8]) -> Result<()> {
    let object = object_layout_version(obj)?;
    if object != LAYOUT_VERSION {
        return Err(Error::LayoutMismatch {
            object,
            agent: LAYOUT_VERSION,
        });
    }
    Ok(())
}

/// The cgroup v2 mount point, from a /proc/mounts-format text.
pub fn cgroup2_root_from(mounts: &str) -> Option<PathBuf> {
    mounts.lines().find_map(|line| {
        let mut f = line.split_whitespace();
        let (_dev, path, fstype) = (f.next()?, f.next()?, f.next()?);
        (fstype == "cgroup2").then(|| PathBuf::from(unescape_mount_path(path)))
    })
}

/// /proc/mounts escapes space, tab, newline and backslash as octal.
fn unescape_mount_path(p: &str) -> String {
    p.replace("\\040", " ")
        .replace("\\011", "\t")
        .replace("\\012", "\n")
        .replace("\\134", "\\")
}

pub fn cgroup2_root() -> Result<PathBuf> {
    let mounts = std::fs::read_to_string("/proc/mounts")
        .map_err(|e| Error::io("reading /proc/mounts", e))?;
    cgroup2_root_from(&mounts).ok_or(Error::NoCgroup2)
}

const TRACEFS: &str = "/sys/kernel/tracing";

/// aya finds tracepoint ids through tracefs; mount it when nothing has.
fn ensure_tracefs() -> Result<()> {
    let mounts = std::fs::read_to_string("/proc/mounts")
        .map_err(|e| Error::io("reading /proc/mounts", e))?;
    if mounts
        .lines()
        .any(|l| l.split_whitespace().nth(2) == Some("tracefs"))
        || Path::new("/sys/kernel/debug/tracing/events").exists()
    {
        return Ok(());
    }
    let src = c"nodev";
    let target = c"/sys/kernel/tracing";
    let fstype = c"tracefs";
    rustix::mount::mount(
        src,
        target,
        fstype,
        rustix::mount::MountFlags::empty(),
        None,
    )
    .map_err(|e| Error::Tracefs {
        path: TRACEFS,
        source: e.into(),
    })?;
    tracing::info!(path = TRACEFS, "mounted tracefs");
    Ok(())
}

fn raise_memlock() {
    // None: unlimited.
    let lim = rustix::process::Rlimit {
        current: None,
        maximum: None,
    };
    if let Err(e) = rustix::process::setrlimit(rustix::process::Resource::Memlock, lim) {
        // Kernels since 5.11 account BPF memory to the cgroup instead.
        tracing::debug!(error = %e, "could not raise RLIMIT_MEMLOCK");
    }
}

/// True when an error chain holds EPERM or EACCES from the kernel.
fn is_permission_error(err: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur = Some(err);
    while let Some(e) = cur {
        if let Some(io) = e.downcast_ref::<std::io::Error>()
            && matches!(io.raw_os_error(), Some(libc::EPERM) | Some(libc::EACCES))
        {
            return true;
        }
        cur = e.source();
    }
    false
}

fn describe(err: &(dyn std::error::Error + 'static)) -> String {
    let mut s = err.to_string();
    let mut cur = err.source();
    while let Some(e) = cur {
        // aya's messages often already quote their cause.
        let msg = e.to_string();
        if !s.contains(&msg) {
            s.push_str(": ");
            s.push_str(&msg);
        }
        cur = e.source();
    }
    s
}

impl Probes {
    /// Loads the embedded object and attaches every hook it can. A hook that
    /// cannot attach is reported in [`Probes::hooks`], not fatal; the load is
    /// fatal only when the kernel refuses the object or nothing attaches.
    pub fn load(cfg: &ProbeConfig) -> Result<(Self, RingBuf<MapData>)> {
        Self::load_object(PROBE_OBJECT, cfg)
    }

    pub fn load_object(obj: &[u8], cfg: &ProbeConfig) -> Result<(Self, RingBuf<MapData>)> {
        check_layout(obj)?;
        let cgroup_root = cgroup2_root()?;
        raise_memlock();
        ensure_tracefs()?;
        // aya 0.13 has no type for socket-local storage maps and refuses an
        // object with one unless told; the map is created all the same, and
        // the agent writes to it through the map's descriptor
        // (`seed_bound`).
        let mut ebpf = EbpfLoader::new()
            .allow_unsupported_maps()
            .set_max_entries(names::EVENTS, cfg.ring_buffer_bytes)
            .load(obj)
            .map_err(|e| {
                if is_permission_error(&e) {
                    Error::NotPrivileged(describe(&e), super::privileges::load_refusal_hint())
                } else {
                    Error::Load(describe(&e))
                }
            })?;
        let cgroup = File::open(&cgroup_root)
            .map_err(|e| Error::io(format!("opening cgroup root {}", cgroup_root.display()), e))?;

        let mut first_refusal = None;
        let mut fallback = None;
        let mut exits_refused = None;
        let mut chosen = None;
        if matches!(cfg.mode, ProbeMode::Fexit | ProbeMode::Auto) {
            match attach_begun_in_kernel(&mut ebpf, FEXIT_SET, &cgroup, REFUSE_FEXIT_AT_ENV) {
                Ok(h) => chosen = Some((ProbeMode::Fexit, h)),
                Err(why) if cfg.mode == ProbeMode::Fexit => return Err(Error::FexitRefused(why)),
                Err(why) => {
                    tracing::info!(reason = %why, "fexit probe set refused; trying the syscalls' exit tracepoints");
                    fallback = Some(why);
                }
            }
        }
        if chosen.is_none() && matches!(cfg.mode, ProbeMode::Tracepoint | ProbeMode::Auto) {
            let attached = if cfg!(target_arch = "x86_64") {
                attach_begun_in_kernel(&mut ebpf, TRACEPOINT_SET, &cgroup, REFUSE_EXITS_AT_ENV)
            } else {
                Err("the exits read x86-64's saved registers".to_owned())
            };
            match attached {
                Ok(h) => chosen = Some((ProbeMode::Tracepoint, h)),
                Err(why) => {
                    tracing::info!(reason = %why, "exit-only tracepoint set refused; using the entry and exit tracepoints");
                    exits_refused = Some(why);
                }
            }
        }
        let (set, mut hooks) = chosen.unwrap_or_else(|| {
            (
                ProbeMode::TracepointEntry,
                attach_each(&mut ebpf, ENTRY_SET, &cgroup, &mut first_refusal),
            )
        });
        let (store, storage_refused) = choose_store(&mut ebpf);
        hooks.extend(attach_each(
            &mut ebpf,
            store.common(),
            &cgroup,
            &mut first_refusal,
        ));
        let (lifecycle, lifecycle_hook, sock_ops_refused) =
            attach_lifecycle(&mut ebpf, store.sock_ops(), &cgroup, &mut first_refusal);
        hooks.push(lifecycle_hook);
        if lifecycle == Lifecycle::SockOps
            && store == BoundStore::SocketStorage
            && let Err(e) = set_config(&mut ebpf, config::STOPS_FROM_SOCK_OPS, 1)
        {
            // Still right, only one record more a listener: its release
            // and its stop each send their own.
            tracing::warn!(error = %e, "cannot tell the release hook to carry listeners' stops");
        }
        if lifecycle == Lifecycle::SockOps
            && store == BoundStore::Map
            && let Err(e) = set_config(&mut ebpf, config::RELEASE_SKIPS_CONNECTIONS, 1)
        {
            // Still right, only slower: every close looks the socket up.
            tracing::warn!(error = %e, "cannot tell the release hook to skip connections");
        }
        if hooks.iter().all(|h| !h.attached)
            && let Some((denied, msg)) = first_refusal
        {
            return Err(if denied {
                Error::NotPrivileged(msg, super::privileges::load_refusal_hint())
            } else {
                Error::NothingAttached(msg)
            });
        }
        let ring = ebpf
            .take_map(names::EVENTS)
            .ok_or_else(|| Error::Map {
                name: names::EVENTS,
                reason: "not in the object".into(),
            })
            .and_then(|m| {
                RingBuf::try_from(m).map_err(|e| Error::Map {
                    name: names::EVENTS,
                    reason: e.to_string(),
                })
            })?;
        Ok((
            Self {
                ebpf,
                hooks,
                cgroup_root,
                set,
                fallback,
                exits_refused,
                lifecycle,
                sock_ops_refused,
                store,
                storage_refused,
            },
            ring,
        ))
    }

    pub fn hooks(&self) -> &[HookStatus] {
        &self.hooks
    }

    /// The probe set in use: `fexit`, `tracepoint` or `tracepoint_entry`.
    pub fn probe_set(&self) -> &'static str {
        self.set.as_str()
    }

    /// Why `auto` did not get the fexit set (the kernel's refusal).
    pub fn fallback(&self) -> Option<&str> {
        self.fallback.as_deref()
    }

    /// Why the exit-only tracepoint set was refused, where the entry set
    /// stands in for it.
    pub fn exits_refused(&self) -> Option<&str> {
        self.exits_refused.as_deref()
    }

    /// Where the TCP lifecycle comes from: `sock_ops` or `state_tracepoint`.
    pub fn lifecycle(&self) -> &'static str {
        self.lifecycle.as_str()
    }

    /// Why the lifecycle is not from sock_ops (the kernel's refusal).
    pub fn sock_ops_refused(&self) -> Option<&str> {
        self.sock_ops_refused.as_deref()
    }

    /// Where bound sockets are marked: `socket_storage` or `map`.
    pub fn bound_store(&self) -> &'static str {
        self.store.as_str()
    }

    /// Why the marks are not in socket-local storage (the kernel's refusal).
    pub fn storage_refused(&self) -> Option<&str> {
        self.storage_refused.as_deref()
    }

    pub fn attached_count(&self) -> usize {
        self.hooks.iter().filter(|h| h.attached).count()
    }

    /// What feeds the agent, for the start-up log.
    pub fn source_name(&self) -> String {
        format!("eBPF (cgroup {})", self.cgroup_root().display())
    }

    pub fn cgroup_root(&self) -> &Path {
        &self.cgroup_root
    }

    /// The hooks of this load that hang on the cgroup: the set's own, the
    /// common ones and the sock_ops lifecycle.
    fn cgroup_hooks(&self) -> impl Iterator<Item = &'static (&'static str, Hook)> {
        let set = match self.set {
            ProbeMode::Fexit => FEXIT_SET,
            ProbeMode::TracepointEntry => ENTRY_SET,
            _ => TRACEPOINT_SET,
        };
        set.iter()
            .chain(self.store.common())
            .chain((self.lifecycle == Lifecycle::SockOps).then_some(self.store.sock_ops()))
            .filter(|(_, h)| matches!(h, Hook::SockAddr | Hook::Sock | Hook::SockOps))
    }

    /// Finds cgroup hooks detached behind bindwatch's back (`bpftool link
    /// detach`, a cgroup removed) or whose link now runs another program
    /// (`BPF_LINK_UPDATE`), and attaches each again. Tracepoint links
    /// cannot be detached by others. Returns what it found and did.
    pub fn check_hooks(&mut self) -> Vec<HookIncident> {
        // Our cgroup programs' ids, and which of them run on a live link.
        let mut ours: Vec<(&'static str, u32)> = Vec::new();
        for (name, hook) in self.cgroup_hooks() {
            if matches!(hook, Hook::TracePoint(..))
                || !self.hooks.iter().any(|h| h.hook == *name && h.attached)
            {
                continue;
            }
            if let Some(id) = self
                .ebpf
                .program(name)
                .and_then(|p| p.info().ok())
                .map(|i| i.id())
            {
                ours.push((name, id));
            }
        }
        if ours.is_empty() {
            return Vec::new();
        }
        let mut live: HashMap<u32, bool> = HashMap::new();
        for info in aya::programs::loaded_links().flatten() {
            if info.type_ != BPF_LINK_TYPE_CGROUP {
                continue;
            }
            // SAFETY: the union's cgroup member is the one a cgroup link's
            // info fills.
            let cgroup_id = unsafe { info.__bindgen_anon_1.cgroup.cgroup_id };
            *live.entry(info.prog_id).or_default() |= cgroup_id != 0;
        }
        let mut out = Vec::new();
        for (name, id) in ours {
            if live.get(&id) == Some(&true) {
                continue;
            }
            let what = if live.contains_key(&id) {
                "detached"
            } else {
                "replaced or removed"
            };
            let result = File::open(&self.cgroup_root)
                .map_err(|e| e.to_string())
                .and_then(|cgroup| {
                    let hook = self
                        .cgroup_hooks()
                        .find(|(n, _)| *n == name)
                        .map(|(_, h)| h)
                        .expect("listed above");
                    attach_one(&mut self.ebpf, name, hook, &cgroup, false)
                        .map_err(|e| describe(e.as_ref()))
                });
            if let Some(h) = self.hooks.iter_mut().find(|h| h.hook == name) {
                h.attached = result.is_ok();
                h.error = result.as_ref().err().cloned();
            }
            out.push(HookIncident {
                hook: name,
                what,
                reattached: result,
            });
        }
        out
    }

    /// The probes' loss counters, summed over CPUs.
    pub fn lost(&self) -> Result<LostCounts> {
        let map = self.ebpf.map(names::LOST).ok_or_else(|| Error::Map {
            name: names::LOST,
            reason: "not in the object".into(),
        })?;
        let arr: PerCpuArray<_, u64> = PerCpuArray::try_from(map).map_err(|e| Error::Map {
            name: names::LOST,
            reason: e.to_string(),
        })?;
        let slot = |i: u32| -> u64 {
            arr.get(&i, 0)
                .map(|v| v.iter().sum::<u64>())
                .unwrap_or_default()
        };
        Ok(LostCounts {
            ringbuf_full: slot(lost::RINGBUF_FULL),
            accept_map_full: slot(lost::ACCEPT_MAP_FULL),
            pending_map_full: slot(lost::PENDING_MAP_FULL),
            program_skipped: self.programs_skipped(),
            undecodable: 0,
        })
    }

    /// How often the kernel skipped one of our programs since load: a
    /// tracepoint program does not run while another BPF program (or a BPF
    /// map syscall, such as our own reads of the accept counters) holds the
    /// CPU's `bpf_prog_active`, and fentry/fexit programs do not recurse.
    /// The kernel counts each skip in the program's `recursion_misses`
    /// (Linux 5.12), shown in its descriptor's fdinfo; a kernel without the
    /// field reads 0.
    fn programs_skipped(&self) -> u64 {
        use std::os::fd::{AsFd, AsRawFd};
        self.ebpf
            .programs()
            .filter_map(|(_, p)| p.fd().ok())
            .filter_map(|fd| {
                let raw = fd.as_fd().as_raw_fd();
                let info = std::fs::read_to_string(format!("/proc/self/fdinfo/{raw}")).ok()?;
                recursion_misses(&info)
            })
            .sum()
    }

    /// Tells the release hook about sockets bound before the probes were
    /// loaded (found in the start-up snapshot), so their release is
    /// reported too. `descriptors` names a process's descriptor of each
    /// socket, by cookie: socket-local storage is written through one (a
    /// duplicate, `pidfd_getfd`); a socket without one is left to the
    /// reconciliation. Returns how many were written.
    pub fn seed_bound(
        &mut self,
        socks: &[(u64, BoundSock)],
        descriptors: &HashMap<u64, SocketFd>,
    ) -> Result<usize> {
        let lifecycle = self.lifecycle;
        let seeds = socks.iter().map(|(cookie, b)| {
            let mut b = *b;
            if lifecycle != Lifecycle::SockOps {
                // The state tracepoint reports every listener's stop.
                b.flags &= !bound::REPORTS_STOP;
            }
            (*cookie, b)
        });
        match self.store {
            BoundStore::SocketStorage => {
                let map = self.ebpf.map(names::BOUND_SK).ok_or_else(|| Error::Map {
                    name: names::BOUND_SK,
                    reason: "not in the object".into(),
                })?;
                let aya::maps::Map::Unsupported(data) = map else {
                    return Err(Error::Map {
                        name: names::BOUND_SK,
                        reason: "not a socket storage map".into(),
                    });
                };
                let map_fd = data.fd().as_fd();
                let mut n = 0;
                for (cookie, b) in seeds {
                    let Some(owner) = descriptors.get(&cookie) else {
                        continue;
                    };
                    let written = super::procscan::with_duplicate(*owner, |sock| {
                        super::sk_storage::update(map_fd, sock, &b).ok()
                    });
                    n += usize::from(written.is_some());
                }
                Ok(n)
            }
            BoundStore::Map => {
                let map = self.ebpf.map_mut(names::BOUND).ok_or_else(|| Error::Map {
                    name: names::BOUND,
                    reason: "not in the object".into(),
                })?;
                let mut m: aya::maps::HashMap<_, u64, BoundSock> =
                    aya::maps::HashMap::try_from(map).map_err(|e| Error::Map {
                        name: names::BOUND,
                        reason: e.to_string(),
                    })?;
                Ok(seeds
                    .filter(|(cookie, b)| m.insert(cookie, b, 0).is_ok())
                    .count())
            }
        }
    }

    /// Completed passive TCP handshakes per (family, port), since load.
    pub fn accepts(&self) -> Result<HashMap<(u8, u16), u64>> {
        let map = self.ebpf.map(names::ACCEPTS).ok_or_else(|| Error::Map {
            name: names::ACCEPTS,
            reason: "not in the object".into(),
        })?;
        let m: PerCpuHashMap<_, AcceptKey, u64> =
            PerCpuHashMap::try_from(map).map_err(|e| Error::Map {
                name: names::ACCEPTS,
                reason: e.to_string(),
            })?;
        let mut out = HashMap::new();
        for (k, v) in m.iter().flatten() {
            out.insert((k.family, k.port), v.iter().sum());
        }
        Ok(out)
    }
}

/// The `recursion_misses` line of a BPF program's fdinfo.
fn recursion_misses(fdinfo: &str) -> Option<u64> {
    fdinfo
        .lines()
        .find_map(|l| l.strip_prefix("recursion_misses:"))
        .and_then(|v| v.trim().parse().ok())
}

/// Sets one slot of the probes' `CONFIG` array.
fn set_config(ebpf: &mut Ebpf, slot: u32, value: u32) -> Result<()> {
    let map = ebpf.map_mut(names::CONFIG).ok_or_else(|| Error::Map {
        name: names::CONFIG,
        reason: "not in the object".into(),
    })?;
    let mut arr: aya::maps::Array<_, u32> =
        aya::maps::Array::try_from(map).map_err(|e| Error::Map {
            name: names::CONFIG,
            reason: e.to_string(),
        })?;
    arr.set(slot, value, 0).map_err(|e| Error::Map {
        name: names::CONFIG,
        reason: e.to_string(),
    })
}

/// Socket-local storage where the kernel lets cgroup socket programs use
/// it (the storage programs of `COMMON` load; they stay loaded for their
/// attach), else the `BOUND` map, with the refusal.
fn choose_store(ebpf: &mut Ebpf) -> (BoundStore, Option<String>) {
    let refused = if std::env::var_os(REFUSE_SOCKET_STORAGE_ENV).is_some() {
        format!("{REFUSE_SOCKET_STORAGE_ENV} is set")
    } else {
        let loaded = COMMON.iter().try_for_each(|(name, _)| {
            let prog = ebpf
                .program_mut(name)
                .ok_or_else(|| format!("program {name} is not in the object"))?;
            let p: &mut CgroupSock = prog.try_into().map_err(|e| format!("{name}: {e}"))?;
            p.load().map_err(|e| format!("{name}: {}", describe(&e)))
        });
        match loaded {
            Ok(()) => return (BoundStore::SocketStorage, None),
            Err(why) => why,
        }
    };
    for (name, _) in COMMON {
        if let Some(Ok(p)) = ebpf.program_mut(name).map(<&mut CgroupSock>::try_from) {
            let _ = p.unload();
        }
    }
    tracing::info!(reason = %refused, "socket-local storage refused; bound sockets are marked in a map");
    (BoundStore::Map, Some(refused))
}

/// Attaches the sock_ops lifecycle, or the state tracepoint when the kernel
/// refuses it (or the tests ask, [`NO_SOCK_OPS_ENV`]).
fn attach_lifecycle(
    ebpf: &mut Ebpf,
    sock_ops: &(&'static str, Hook),
    cgroup: &File,
    first_refusal: &mut Option<(bool, String)>,
) -> (Lifecycle, HookStatus, Option<String>) {
    let (name, hook) = sock_ops;
    let refused = if std::env::var_os(NO_SOCK_OPS_ENV).is_some() {
        format!("{NO_SOCK_OPS_ENV} is set")
    } else {
        match attach_one(ebpf, name, hook, cgroup, true) {
            Ok(()) => {
                return (
                    Lifecycle::SockOps,
                    HookStatus {
                        hook: name,
                        attached: true,
                        error: None,
                    },
                    None,
                );
            }
            Err(e) => describe(e.as_ref()),
        }
    };
    tracing::info!(reason = %refused, "sock_ops refused; the TCP lifecycle comes from the state tracepoint");
    let status = attach_each(
        ebpf,
        std::slice::from_ref(&LIFECYCLE_TRACEPOINT),
        cgroup,
        first_refusal,
    )
    .pop()
    .expect("one hook in, one status out");
    (Lifecycle::StateTracepoint, status, Some(refused))
}

/// Attaches each hook of a list, reporting each; a refusal is logged and
/// the rest go on.
fn attach_each(
    ebpf: &mut Ebpf,
    list: &[(&'static str, Hook)],
    cgroup: &File,
    first_refusal: &mut Option<(bool, String)>,
) -> Vec<HookStatus> {
    list
        .iter()
        .map(|(name, hook)| {
            let error = attach_one(ebpf, name, hook, cgroup, true).err().map(|e| {
                let msg = describe(e.as_ref());
                tracing::warn!(hook = name, error = %msg, "hook not attached; its events will be missing");
                first_refusal.get_or_insert((is_permission_error(e.as_ref()), msg.clone()));
                msg
            });
            HookStatus {
                hook: name,
                attached: error.is_none(),
                error,
            }
        })
        .collect()
}

/// Set to N, makes the Nth program of the fexit set (0-based) fail to
/// attach: the tests' way to force a refusal where the kernel accepts it.
pub const REFUSE_FEXIT_AT_ENV: &str = "BINDWATCH_REFUSE_FEXIT_AT";

/// The same for the exit-only tracepoint set: the tests' way to see the
/// entry set stand in for it.
pub const REFUSE_EXITS_AT_ENV: &str = "BINDWATCH_REFUSE_EXITS_AT";

/// A set whose binds begin in the kernel's bind (the cgroup bind hook) and
/// whose listens begin at their address, with the switch that says so
/// (set before the set attaches, cleared again if it is refused).
fn attach_begun_in_kernel(
    ebpf: &mut Ebpf,
    list: &[(&'static str, Hook)],
    cgroup: &File,
    refuse_env: &str,
) -> std::result::Result<Vec<HookStatus>, String> {
    set_config(ebpf, config::LISTEN_BEGINS_AT_ADDRESS, 1)
        .map_err(|e| format!("setting the probes' listen switch: {e}"))?;
    attach_all(ebpf, list, cgroup, refuse_env).inspect_err(|_| {
        if let Err(e) = set_config(ebpf, config::LISTEN_BEGINS_AT_ADDRESS, 0) {
            tracing::warn!(error = %e, "cannot clear the listen switch; listens not made through listen(2) will be missing");
        }
    })
}

/// Attaches every hook of a set, or none: at the first refusal the ones
/// attached are unloaded (detaching them) and the refusal is returned. A
/// function of [`IF_PRESENT`] the kernel lacks is left out.
fn attach_all(
    ebpf: &mut Ebpf,
    list: &[(&'static str, Hook)],
    cgroup: &File,
    refuse_env: &str,
) -> std::result::Result<Vec<HookStatus>, String> {
    let needs_btf = list
        .iter()
        .any(|(_, h)| matches!(h, Hook::FEntry(_) | Hook::FExit(_)));
    let btf = if needs_btf {
        Some(Btf::from_sys_fs().map_err(|e| format!("no kernel BTF: {}", describe(&e)))?)
    } else {
        None
    };
    // A refusal on purpose at the Nth program, for the tests of the
    // fallback on kernels that accept the set (the rollback of a partly
    // attached set can only be seen there).
    let refuse_at: Option<usize> = std::env::var(refuse_env).ok().and_then(|v| v.parse().ok());
    let mut attached = Vec::new();
    for (i, (name, hook)) in list.iter().enumerate() {
        let r = (|| -> std::result::Result<bool, Box<dyn std::error::Error>> {
            if refuse_at == Some(i) {
                return Err(format!("refused on purpose ({refuse_env}={i})").into());
            }
            let prog = ebpf
                .program_mut(name)
                .ok_or_else(|| format!("program {name} is not in the object"))?;
            let btf = || btf.as_ref().expect("loaded for a set with trampolines");
            let loaded = match hook {
                Hook::FEntry(f) => {
                    let p: &mut FEntry = prog.try_into()?;
                    absent_if_optional(f, p.load(f, btf()))?
                }
                Hook::FExit(f) => {
                    let p: &mut FExit = prog.try_into()?;
                    absent_if_optional(f, p.load(f, btf()))?
                }
                Hook::SockAddr | Hook::TracePoint(..) => {
                    attach_one(ebpf, name, hook, cgroup, true)?;
                    return Ok(true);
                }
                _ => return Err("not a hook a set attaches all or nothing".into()),
            };
            if !loaded {
                return Ok(false);
            }
            let prog = ebpf.program_mut(name).expect("loaded above");
            match hook {
                Hook::FEntry(_) => <&mut FEntry>::try_from(prog)?.attach().map(drop)?,
                _ => <&mut FExit>::try_from(prog)?.attach().map(drop)?,
            }
            Ok(true)
        })();
        match r {
            Ok(true) => attached.push(HookStatus {
                hook: name,
                attached: true,
                error: None,
            }),
            Ok(false) => {
                tracing::debug!(
                    hook = name,
                    "the kernel lacks the function (no MPTCP); left out"
                )
            }
            Err(e) => {
                let why = format!("{name}: {}", describe(e.as_ref()));
                for (d, h) in &list[..=i] {
                    let p = ebpf.program_mut(d);
                    let _ = match (h, p) {
                        (Hook::FEntry(_), Some(p)) => {
                            <&mut FEntry>::try_from(p).map(|p| p.unload().is_ok())
                        }
                        (Hook::FExit(_), Some(p)) => {
                            <&mut FExit>::try_from(p).map(|p| p.unload().is_ok())
                        }
                        (Hook::SockAddr, Some(p)) => {
                            <&mut CgroupSockAddr>::try_from(p).map(|p| p.unload().is_ok())
                        }
                        (Hook::TracePoint(..), Some(p)) => {
                            <&mut TracePoint>::try_from(p).map(|p| p.unload().is_ok())
                        }
                        _ => Ok(false),
                    };
                }
                return Err(why);
            }
        }
    }
    Ok(attached)
}

/// A trampoline's load: `Ok(false)` when the kernel has no such function
/// and the function is one of [`IF_PRESENT`]; any other failure stands.
fn absent_if_optional(
    function: &str,
    load: std::result::Result<(), aya::programs::ProgramError>,
) -> std::result::Result<bool, aya::programs::ProgramError> {
    match load {
        Ok(()) => Ok(true),
        Err(aya::programs::ProgramError::Btf(aya::BtfError::UnknownBtfTypeName { .. }))
            if IF_PRESENT.contains(&function) =>
        {
            Ok(false)
        }
        Err(e) => Err(e),
    }
}

/// `BPF_LINK_TYPE_CGROUP` in `bpf_link_info.type`.
const BPF_LINK_TYPE_CGROUP: u32 = 3;

// Cgroup programs are attached as BPF links, which always coexist with
// other programs on the cgroup (the kernel refuses attach flags on links), so
// `Single` here neither replaces nor blocks anyone else's programs.
/// Loads (the first time) and attaches one hook; again (`load: false`)
/// re-attaches a loaded cgroup program whose link went away.
fn attach_one(
    ebpf: &mut Ebpf,
    name: &str,
    hook: &Hook,
    cgroup: &File,
    load: bool,
) -> std::result::Result<(), Box<dyn std::error::Error>> {
    let prog = ebpf
        .program_mut(name)
        .ok_or_else(|| format!("program {name} is not in the object"))?;
    match hook {
        Hook::TracePoint(cat, tp) => {
            if !load {
                return Err("tracepoints are not re-attached".into());
            }
            let p: &mut TracePoint = prog.try_into()?;
            p.load()?;
            p.attach(cat, tp)?;
        }
        Hook::FEntry(_) | Hook::FExit(_) => {
            return Err("trampolines attach as a set (attach_all)".into());
        }
        Hook::SockAddr => {
            let p: &mut CgroupSockAddr = prog.try_into()?;
            if load {
                p.load()?;
            }
            p.attach(cgroup, CgroupAttachMode::Single)?;
        }
        Hook::Sock => {
            let p: &mut CgroupSock = prog.try_into()?;
            // The storage programs were loaded when the store was chosen.
            if load && p.fd().is_err() {
                p.load()?;
            }
            p.attach(cgroup, CgroupAttachMode::Single)?;
        }
        Hook::SockOps => {
            let p: &mut SockOps = prog.try_into()?;
            if load {
                p.load()?;
            }
            p.attach(cgroup, CgroupAttachMode::Single)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_object_has_our_layout() {
        assert_eq!(object_layout_version(PROBE_OBJECT).unwrap(), LAYOUT_VERSION);
        check_layout(PROBE_OBJECT).unwrap();
    }

    #[test]
    fn object_of_another_layout_is_refused() {
        // Patch the version in a copy of the object, as a stale build would have it.
        let file = object::File::parse(PROBE_OBJECT).unwrap();
        let sym = file
            .symbols()
            .find(|s| s.name() == Ok(LAYOUT_SYMBOL))
            .unwrap();
        let section = file.section_by_index(sym.section_index().unwrap()).unwrap();
        let (file_off, _) = section.file_range().unwrap();
        let off = (file_off + sym.address() - section.address()) as usize;
        let mut patched = PROBE_OBJECT.to_vec();
        patched[off..off + 2].copy_from_slice(&(LAYOUT_VERSION + 1).to_le_bytes());
        let err = check_layout(&patched).unwrap_err();
        assert!(matches!(err, Error::LayoutMismatch { .. }), "{err}");
        assert!(err.to_string().contains("rebuild"), "{err}");
    }

    #[test]
    fn reads_recursion_misses_from_fdinfo() {
        // As a 6.1 kernel prints a tracepoint program's fdinfo.
        let info = "pos:\t0\nflags:\t02000002\nmnt_id:\t15\nino:\t2070\nlink_type:\tperf\n\
                    prog_type:\t5\nprog_jited:\t1\nprog_tag:\t0123456789abcdef\nmemlock:\t4096\n\
                    prog_id:\t42\nrun_time_ns:\t0\nrun_cnt:\t0\nrecursion_misses:\t17\nverified_insns:\t311\n";
        assert_eq!(recursion_misses(info), Some(17));
        // Kernels before 5.12 have no such line: no reading, not a 0.
        assert_eq!(recursion_misses("prog_type:\t5\nrun_cnt:\t0\n"), None);
    }

    #[test]
    fn garbage_is_not_an_object() {
        assert!(matches!(
            object_layout_version(b"not an elf"),
            Err(Error::BadObject(_))
        ));
    }

    #[test]
    fn finds_cgroup2_in_hybrid_and_unified_layouts() {
        let hybrid = "tmpfs /sys/fs/cgroup tmpfs rw 0 0\n\
                      cgroup /sys/fs/cgroup/cpu cgroup rw,cpu 0 0\n\
                      cgroup2 /sys/fs/cgroup/unified cgroup2 rw 0 0\n";
        assert_eq!(
            cgroup2_root_from(hybrid),
            Some(PathBuf::from("/sys/fs/cgroup/unified"))
        );
        let unified = "cgroup2 /sys/fs/cgroup cgroup2 rw,nosuid 0 0\n";
        assert_eq!(
            cgroup2_root_from(unified),
            Some(PathBuf::from("/sys/fs/cgroup"))
        );
        assert_eq!(cgroup2_root_from("proc /proc proc rw 0 0\n"), None);
        assert_eq!(
            cgroup2_root_from("none /my\\040cg cgroup2 rw 0 0\n"),
            Some(PathBuf::from("/my cg"))
        );
    }
}
