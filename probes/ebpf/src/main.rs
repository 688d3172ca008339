//! bindwatch's kernel programs.
//!
//! A bind is seen by four hooks that run on the same thread, joined through
//! `PENDING_BIND` keyed by thread id:
//! `sys_enter_bind` copies the requested sockaddr (a failed bind leaves no
//! address in the socket), `cgroup/bind4|6` adds what only the socket knows
//! (protocol, type, reuse flags, cookies), `cgroup/post_bind4|6` the port the
//! kernel chose, and `sys_exit_bind` the result, then sends one event. In
//! the fexit set the cgroup bind hook also begins the bind (its context
//! holds the requested address), and a trampoline on the kernel's bind
//! ends it. Listen works the same way between `sys_enter_listen`, the
//! address from sock_ops or the state tracepoint, and `sys_exit_listen`.
//!
//! Every helper is `#[inline(always)]`: a local function symbol would carry
//! a crate hash derived from the checkout's path, and the committed object
//! must be the same bytes wherever it is rebuilt.
//!
//! Only stable interfaces are read: tracepoint formats and the cgroup
//! programs' UAPI contexts. No kernel struct is dereferenced.
#![no_std]
#![no_main]

use core::ffi::c_void;

use aya_ebpf::{
    EbpfContext,
    bindings::{
        BPF_NOEXIST, BPF_SOCK_OPS_PASSIVE_ESTABLISHED_CB, BPF_SOCK_OPS_STATE_CB,
        BPF_SOCK_OPS_STATE_CB_FLAG, BPF_SOCK_OPS_TCP_CONNECT_CB, BPF_SOCK_OPS_TCP_LISTEN_CB,
        bpf_sock_ops,
    },
    helpers::{
        bpf_get_current_cgroup_id, bpf_get_current_comm, bpf_get_current_pid_tgid,
        bpf_get_current_uid_gid, bpf_ktime_get_ns, bpf_probe_read_user,
        generated::{
            bpf_get_current_task, bpf_get_netns_cookie, bpf_get_socket_cookie, bpf_getsockopt,
        },
    },
    macros::{cgroup_sock, cgroup_sock_addr, fentry, fexit, map, sock_ops, tracepoint},
    maps::{Array, LruHashMap, PerCpuArray, PerCpuHashMap, RingBuf},
    programs::{
        FEntryContext, FExitContext, SockAddrContext, SockContext, SockOpsContext,
        TracePointContext,
    },
};
use bindwatch_common::{
    AF_INET, AF_INET6, AcceptKey, BoundSock, IPPROTO_TCP, LAYOUT_VERSION, RawEvent, bound, config,
    flags, kind, lost, tcp_state,
};

/// Read by the agent from the object file before loading, and copied into
/// every event, so a layout mismatch is caught at load and at decode.
#[unsafe(no_mangle)]
static BINDWATCH_LAYOUT_VERSION: u16 = LAYOUT_VERSION;

/// Default 4 MiB; the agent resizes it before load (`--ring-buffer-bytes`).
#[map]
static EVENTS: RingBuf = RingBuf::with_byte_size(4 << 20, 0);

#[map]
static LOST: PerCpuArray<u64> = PerCpuArray::with_max_entries(lost::SLOTS, 0);

#[map]
static ACCEPTS: PerCpuHashMap<AcceptKey, u64> = PerCpuHashMap::with_max_entries(8192, 0);

/// Per-thread state between a bind's start and end: one slot a thread,
/// kept between binds and written in place, so a bind costs lookups and
/// no insert or delete (an insert and a delete a syscall were the largest
/// part of the programs' cost in a bind storm). A slot is in use while its
/// `kind` is set; the end clears it. LRU: the slots of threads that have
/// exited are reclaimed by the kernel, oldest first, when the map is full.
#[map]
static PENDING_BIND: LruHashMap<u32, RawEvent> = LruHashMap::with_max_entries(16384, 0);

/// Bound sockets by cookie, for the release hook (see `BoundSock`). LRU: a
/// host with more bound sockets loses the oldest entries' release events,
/// which the agent's reconciliation with sock_diag makes up for.
#[map]
static BOUND: LruHashMap<u64, BoundSock> = LruHashMap::with_max_entries(131072, 0);

/// Switches set by the agent (see `bindwatch_common::config`).
#[map]
static CONFIG: Array<u32> = Array::with_max_entries(config::SLOTS, 0);

/// Per-thread state of a listen, slots kept as in `PENDING_BIND`, keyed by
/// the current task's address rather than its id: the sock_ops listen
/// callback that adds the address may not ask for the thread id (sock_ops
/// callbacks also run in softirq), but may ask for the current task.
#[map]
static PENDING_LISTEN: LruHashMap<u64, RawEvent> = LruHashMap::with_max_entries(16384, 0);

const SOL_SOCKET: i32 = 1;
const SO_REUSEADDR: i32 = 2;
const SO_REUSEPORT: i32 = 15;

#[inline(always)]
fn count_lost(slot: u32) {
    if let Some(p) = LOST.get_ptr_mut(slot) {
        // SAFETY: per-CPU slot, no concurrent writer on this CPU.
        unsafe { *p += 1 };
    }
}

#[inline(always)]
fn emit(ev: &RawEvent) {
    match EVENTS.reserve::<RawEvent>(0) {
        Some(mut entry) => {
            entry.write(*ev);
            entry.submit(0);
        }
        None => count_lost(lost::RINGBUF_FULL),
    }
}

/// An event stamped with the current task.
#[inline(always)]
fn task_event(kind: u8) -> RawEvent {
    let mut ev = RawEvent::zeroed();
    ev.kind = kind;
    ev.ts_ns = unsafe { bpf_ktime_get_ns() };
    put_task(&mut ev);
    ev.version = unsafe { core::ptr::read_volatile(&BINDWATCH_LAYOUT_VERSION) };
    ev
}

/// The current task's fields.
#[inline(always)]
fn put_task(ev: &mut RawEvent) {
    let pid_tgid = bpf_get_current_pid_tgid();
    let uid_gid = bpf_get_current_uid_gid();
    ev.pid = (pid_tgid >> 32) as u32;
    ev.tid = pid_tgid as u32;
    ev.uid = uid_gid as u32;
    ev.gid = (uid_gid >> 32) as u32;
    ev.cgroup_id = unsafe { bpf_get_current_cgroup_id() };
    ev.comm = bpf_get_current_comm().unwrap_or([0; 16]);
}

/// A field of a tracepoint's record, loaded directly: the verifier checks
/// the load is inside the record and aligned, and it costs no helper call
/// (`read_at` calls bpf_probe_read_kernel), which matters on
/// `inet_sock_set_state`, run for every TCP state change on the host.
#[inline(always)]
fn tp<T: Copy>(ctx: &TracePointContext, offset: usize) -> T {
    // SAFETY: see above; every offset used is a field of the record.
    unsafe { core::ptr::read((ctx.as_ptr() as *const u8).add(offset) as *const T) }
}

/// A switch of the `CONFIG` array the agent set (0 when it set none).
#[inline(always)]
fn config_on(slot: u32) -> bool {
    CONFIG.get(slot).is_some_and(|v| *v != 0)
}

#[inline(always)]
fn current_tid() -> u32 {
    bpf_get_current_pid_tgid() as u32
}

#[inline(always)]
fn current_task() -> u64 {
    // SAFETY: no arguments; returns the address of the running task.
    unsafe { bpf_get_current_task() }
}

/// This thread's pending bind, if one is under way.
#[inline(always)]
fn pending_bind(tid: u32) -> Option<*mut RawEvent> {
    let p = PENDING_BIND.get_ptr_mut(&tid)?;
    // SAFETY: a map value; `kind` is cleared when the bind ends.
    (unsafe { (*p).kind } == kind::BIND).then_some(p)
}

/// This task's pending listen, if one is under way.
#[inline(always)]
fn pending_listen(task: u64) -> Option<*mut RawEvent> {
    let p = PENDING_LISTEN.get_ptr_mut(&task)?;
    // SAFETY: as in `pending_bind`.
    (unsafe { (*p).kind } == kind::LISTEN).then_some(p)
}

// ---- bind ----------------------------------------------------------------

#[tracepoint]
pub fn sys_enter_bind(ctx: TracePointContext) -> u32 {
    let _ = try_enter_bind(&ctx);
    0
}

#[inline(always)]
fn try_enter_bind(ctx: &TracePointContext) -> Result<(), i32> {
    let fd: u64 = tp(ctx, 16);
    let uaddr: u64 = tp(ctx, 24);
    let len: u64 = tp(ctx, 32);
    begin_bind(fd as i32, uaddr, len)
}

/// Reads `N` bytes of the caller's sockaddr (the syscall's argument).
#[inline(always)]
fn read_addr<const N: usize>(addr: u64) -> Result<[u8; N], i32> {
    // SAFETY: the helper checks the address; a fault is an error.
    unsafe { bpf_probe_read_user(addr as *const [u8; N]).map_err(|e| e as i32) }
}

/// The start of a bind in the tracepoint set: the requested address, read
/// before the call (a failed bind leaves none in the socket).
#[inline(always)]
fn begin_bind(fd: i32, uaddr: u64, len: u64) -> Result<(), i32> {
    // One read covers a sockaddr_in's family, port and address (a
    // sockaddr_in6's family and port); a shorter one only the family.
    let head: [u8; 8] = if len >= 8 {
        read_addr(uaddr)?
    } else {
        let f: [u8; 2] = read_addr(uaddr)?;
        [f[0], f[1], 0, 0, 0, 0, 0, 0]
    };
    let family = u16::from_ne_bytes([head[0], head[1]]);
    // Not inet (most binds on a host are AF_UNIX): nothing of ours, and
    // nothing gathered about the task.
    if family != AF_INET as u16 && family != AF_INET6 as u16 {
        return Ok(());
    }
    let mut ev = task_event(kind::BIND);
    ev.fd = fd;
    if family == AF_INET as u16 {
        ev.family = AF_INET;
        if len >= 8 {
            // sockaddr_in: family, port (network order), address.
            ev.port = u16::from_be_bytes([head[2], head[3]]);
            ev.addr[..4].copy_from_slice(&head[4..8]);
        }
    } else {
        ev.family = AF_INET6;
        if len >= 24 {
            // sockaddr_in6: family, port, flowinfo, address.
            let raw: [u8; 24] = read_addr(uaddr)?;
            ev.port = u16::from_be_bytes([raw[2], raw[3]]);
            ev.addr.copy_from_slice(&raw[8..24]);
        }
    }
    start_pending(&PENDING_BIND, &ev.tid, &ev);
    Ok(())
}

/// Puts a syscall's start in the thread's slot: written over the slot a
/// previous call left, inserted only for a thread's first call.
#[inline(always)]
fn start_pending<K>(map: &LruHashMap<K, RawEvent>, key: &K, ev: &RawEvent) {
    match map.get_ptr_mut(key) {
        // SAFETY: a map value; this thread's alone while its call runs.
        Some(p) => unsafe { *p = *ev },
        None => {
            if map.insert(key, ev, 0).is_err() {
                count_lost(lost::PENDING_MAP_FULL);
            }
        }
    }
}

#[cgroup_sock_addr(bind4)]
pub fn bind4(ctx: SockAddrContext) -> i32 {
    on_bind_hook(&ctx);
    1
}

#[cgroup_sock_addr(bind6)]
pub fn bind6(ctx: SockAddrContext) -> i32 {
    on_bind_hook(&ctx);
    1
}

#[inline(always)]
fn getsockopt_int(ctx: &SockAddrContext, optname: i32) -> Option<i32> {
    let mut v: i32 = 0;
    let rc = unsafe {
        bpf_getsockopt(
            ctx.as_ptr(),
            SOL_SOCKET,
            optname,
            (&mut v as *mut i32).cast::<c_void>(),
            4,
        )
    };
    (rc == 0).then_some(v)
}

#[inline(always)]
fn on_bind_hook(ctx: &SockAddrContext) {
    if let Some(p) = pending_bind(current_tid()) {
        // SAFETY: this thread's slot, while its bind runs.
        sock_info(ctx, unsafe { &mut *p });
    }
}

/// What only the socket knows: protocol, type, reuse flags, device, cookies.
#[inline(always)]
fn sock_info(ctx: &SockAddrContext, ev: &mut RawEvent) {
    let sa = ctx.sock_addr;
    let mut fl = flags::SOCK_INFO;
    if getsockopt_int(ctx, SO_REUSEADDR).unwrap_or(0) != 0 {
        fl |= flags::REUSEADDR;
    }
    if getsockopt_int(ctx, SO_REUSEPORT).unwrap_or(0) != 0 {
        fl |= flags::REUSEPORT;
    }
    // The bound device is a field of the socket the context points to: a
    // load, where SO_BINDTOIFINDEX would be a third helper call.
    // SAFETY: the context's socket, never null in a bind hook; the
    // verifier rewrites the field into a safe load.
    let ifindex = unsafe { (*(*sa).__bindgen_anon_1.sk).bound_dev_if };
    if ifindex > 0 {
        fl |= flags::BOUND_DEV;
    }
    // SAFETY: `sa` is the program context, whose fields the verifier
    // rewrites into safe loads.
    unsafe {
        ev.protocol = (*sa).protocol as u8;
        ev.sock_type = (*sa).type_ as u8;
        ev.sock_cookie = bpf_get_socket_cookie(ctx.as_ptr());
        ev.netns_cookie = bpf_get_netns_cookie(ctx.as_ptr());
        ev.skaddr = (*sa).__bindgen_anon_1.sk as u64;
    }
    ev.bound_ifindex = ifindex;
    ev.flags |= fl;
}

// The fexit set's bind hooks: the bind begins here, inside the kernel's
// bind for every socket that reaches it (MPTCP's included, which newer
// kernels bind without calling `inet_bind`); the requested address is in
// the context. A bind refused before this point (a sockaddr too short) is
// not followed.

#[cgroup_sock_addr(bind4)]
pub fn bind4_begin(ctx: SockAddrContext) -> i32 {
    begin_bind_at_hook(&ctx, false);
    1
}

#[cgroup_sock_addr(bind6)]
pub fn bind6_begin(ctx: SockAddrContext) -> i32 {
    begin_bind_at_hook(&ctx, true);
    1
}

#[inline(always)]
fn begin_bind_at_hook(ctx: &SockAddrContext, v6: bool) {
    let sa = ctx.sock_addr;
    // SAFETY: context loads; bind4 may read user_ip4, bind6 user_ip6 (the
    // verifier refuses the other), both the family and the port.
    let (family, port) = unsafe { ((*sa).user_family, (*sa).user_port) };
    // The tracepoint set's rule: a sockaddr that is not inet (AF_UNSPEC)
    // is not followed.
    if family != AF_INET as u32 && family != AF_INET6 as u32 {
        return;
    }
    let mut ev = task_event(kind::BIND);
    ev.family = family as u8;
    // The port's two bytes in network order, in the low half.
    ev.port = u16::from_be(port as u16);
    if v6 {
        if family == AF_INET6 as u32 {
            let a = unsafe { (*sa).user_ip6 };
            ev.addr[..4].copy_from_slice(&a[0].to_ne_bytes());
            ev.addr[4..8].copy_from_slice(&a[1].to_ne_bytes());
            ev.addr[8..12].copy_from_slice(&a[2].to_ne_bytes());
            ev.addr[12..].copy_from_slice(&a[3].to_ne_bytes());
        }
    } else if family == AF_INET as u32 {
        ev.addr[..4].copy_from_slice(&unsafe { (*sa).user_ip4 }.to_ne_bytes());
    }
    sock_info(ctx, &mut ev);
    start_pending(&PENDING_BIND, &ev.tid, &ev);
}

#[cgroup_sock(post_bind4)]
pub fn post_bind4(ctx: SockContext) -> i32 {
    on_post_bind(&ctx, false);
    1
}

#[cgroup_sock(post_bind6)]
pub fn post_bind6(ctx: SockContext) -> i32 {
    on_post_bind(&ctx, true);
    1
}

#[inline(always)]
fn on_post_bind(ctx: &SockContext, v6: bool) {
    let sk = ctx.sock;
    let mut bound = BoundSock {
        addr: [0; 16],
        port: 0,
        family: if v6 { AF_INET6 } else { AF_INET },
        protocol: 0,
        flags: 0,
        _pad: [0; 3],
    };
    // SAFETY: context loads; post_bind4 may read src_ip4, post_bind6 src_ip6
    // (the verifier refuses the other), both src_port.
    unsafe {
        bound.port = (*sk).src_port as u16;
        bound.protocol = (*sk).protocol as u8;
        if v6 {
            let a = (*sk).src_ip6;
            bound.addr[..4].copy_from_slice(&a[0].to_ne_bytes());
            bound.addr[4..8].copy_from_slice(&a[1].to_ne_bytes());
            bound.addr[8..12].copy_from_slice(&a[2].to_ne_bytes());
            bound.addr[12..].copy_from_slice(&a[3].to_ne_bytes());
        } else {
            bound.addr[..4].copy_from_slice(&(*sk).src_ip4.to_ne_bytes());
        }
    }
    let cookie = unsafe { bpf_get_socket_cookie(ctx.as_ptr()) };
    let _ = BOUND.insert(&cookie, &bound, 0);
    if let Some(p) = pending_bind(current_tid()) {
        // SAFETY: map value of this thread.
        unsafe {
            (*p).bound_port = bound.port;
            (*p).flags |= flags::BOUND;
        }
    }
}

#[tracepoint]
pub fn sys_exit_bind(ctx: TracePointContext) -> u32 {
    let ret: i64 = tp(&ctx, 16);
    end_bind(ret);
    0
}

/// The end of a bind, in either probe set: the result, and the event.
#[inline(always)]
fn end_bind(ret: i64) {
    if let Some(p) = pending_bind(current_tid()) {
        // SAFETY: this thread's slot; sent from where it lies, then freed
        // for the thread's next bind.
        unsafe {
            (*p).ret = ret as i32;
            emit(&*p);
            (*p).kind = 0;
        }
    }
}

// ---- listen --------------------------------------------------------------

#[tracepoint]
pub fn sys_enter_listen(ctx: TracePointContext) -> u32 {
    let fd: u64 = tp(&ctx, 16);
    let backlog: u64 = tp(&ctx, 24);
    begin_listen(fd as i32, backlog as u32);
    0
}

#[inline(always)]
fn begin_listen(fd: i32, backlog: u32) {
    let mut ev = task_event(kind::LISTEN);
    ev.fd = fd;
    ev.backlog = backlog;
    // Family is not known until the state tracepoint; AF_INET keeps the
    // record decodable if listen fails before it (the agent drops those
    // without LISTEN_ADDR unless they failed).
    ev.family = AF_INET;
    ev.protocol = IPPROTO_TCP;
    start_pending(&PENDING_LISTEN, &current_task(), &ev);
}

#[tracepoint]
pub fn sys_exit_listen(ctx: TracePointContext) -> u32 {
    let ret: i64 = tp(&ctx, 16);
    end_listen(ret);
    0
}

#[inline(always)]
fn end_listen(ret: i64) {
    if let Some(p) = pending_listen(current_task()) {
        // SAFETY: as in end_bind.
        unsafe {
            (*p).ret = ret as i32;
            // A listen on a non-inet socket never reached the state
            // tracepoint and did not fail: nothing of ours.
            if (*p).flags & flags::LISTEN_ADDR != 0 || ret != 0 {
                emit(&*p);
            }
            (*p).kind = 0;
        }
    }
}

/// The end of a listen in the fexit set. A plain listen was begun by its
/// address (`config::LISTEN_BEGINS_AT_ADDRESS`), whose callback cannot
/// read the task: the task is added here. A listen that failed before
/// its address (no slot) is reported from here by `inet_listen`'s exit;
/// `mptcp_listen`'s only ends what its entry began, so a kernel whose MPTCP
/// calls `inet_listen` inside reports the failure once.
#[inline(always)]
fn end_listen_at_exit(ret: i64, backlog: u32, reports_failure: bool) {
    if let Some(p) = pending_listen(current_task()) {
        // SAFETY: this task's slot, until the end below.
        unsafe {
            if (*p).pid == 0 && (*p).tid == 0 {
                put_task(&mut *p);
            }
            (*p).backlog = backlog;
        }
        end_listen(ret);
    } else if reports_failure && ret != 0 {
        let mut ev = task_event(kind::LISTEN);
        ev.backlog = backlog;
        // As in `begin_listen`: the family is not known.
        ev.family = AF_INET;
        ev.protocol = IPPROTO_TCP;
        ev.ret = ret as i32;
        emit(&ev);
    }
}

// ---- bind and listen through BPF trampolines (the fexit probe set) -------
//
// Where the kernel runs fentry/fexit programs, these replace the four
// syscall tracepoints: while any syscall tracepoint has a program, every
// syscall of every process takes the kernel's slow entry path, and these
// run only on binds and listens. `inet_bind`, `inet6_bind` and
// `inet_listen` are called through the socket's ops table, so they are
// never inlined away; so are MPTCP's `mptcp_bind` and `mptcp_listen`,
// which newer kernels implement without calling the inet ones (older
// ones call both: the inner exit ends the call, the outer finds its slot
// free). A plain listen begins at its address (the sock_ops listen
// callback or the state tracepoint), so `inet_listen` needs no entry
// program; MPTCP's keeps one, which begins the listen before its inner
// calls. The file descriptor is not known there (-1: the event has none).

#[fexit(function = "inet_bind")]
pub fn fexit_inet_bind(ctx: FExitContext) -> i32 {
    // The return value follows the three arguments.
    end_bind(ctx.arg::<u64>(3) as i32 as i64);
    0
}

#[fexit(function = "inet6_bind")]
pub fn fexit_inet6_bind(ctx: FExitContext) -> i32 {
    end_bind(ctx.arg::<u64>(3) as i32 as i64);
    0
}

#[fexit(function = "mptcp_bind")]
pub fn fexit_mptcp_bind(ctx: FExitContext) -> i32 {
    end_bind(ctx.arg::<u64>(3) as i32 as i64);
    0
}

#[fexit(function = "inet_listen")]
pub fn fexit_inet_listen(ctx: FExitContext) -> i32 {
    end_listen_at_exit(
        ctx.arg::<u64>(2) as i32 as i64,
        ctx.arg::<u64>(1) as u32,
        true,
    );
    0
}

#[fentry(function = "mptcp_listen")]
pub fn fentry_mptcp_listen(ctx: FEntryContext) -> i32 {
    begin_listen(-1, ctx.arg::<u64>(1) as u32);
    0
}

#[fexit(function = "mptcp_listen")]
pub fn fexit_mptcp_listen(ctx: FExitContext) -> i32 {
    end_listen_at_exit(
        ctx.arg::<u64>(2) as i32 as i64,
        ctx.arg::<u64>(1) as u32,
        false,
    );
    0
}

/// Fills address fields from `sock/inet_sock_set_state`.
#[inline(always)]
fn read_state_addr(ctx: &TracePointContext, ev: &mut RawEvent) -> Result<(), i32> {
    let skaddr: u64 = tp(ctx, 8);
    let sport: u16 = tp(ctx, 24);
    let family: u16 = tp(ctx, 28);
    let mut addr = [0u8; 16];
    let family = if family == AF_INET6 as u16 {
        // Two 8-byte loads: a 16-byte copy from the context would become a
        // memcpy call on a moved context pointer, which the verifier refuses.
        let hi: u64 = tp(ctx, 40);
        let lo: u64 = tp(ctx, 48);
        addr[..8].copy_from_slice(&hi.to_ne_bytes());
        addr[8..].copy_from_slice(&lo.to_ne_bytes());
        AF_INET6
    } else {
        let v4: u32 = tp(ctx, 32);
        addr[..4].copy_from_slice(&v4.to_ne_bytes());
        AF_INET
    };
    put_addr(ev, family, addr, sport);
    ev.skaddr = skaddr;
    ev.protocol = IPPROTO_TCP;
    Ok(())
}

#[tracepoint]
pub fn inet_sock_set_state(ctx: TracePointContext) -> u32 {
    let _ = try_set_state(&ctx);
    0
}

#[inline(always)]
fn try_set_state(ctx: &TracePointContext) -> Result<(), i32> {
    let old: i32 = tp(ctx, 16);
    let new: i32 = tp(ctx, 20);
    let protocol: u16 = tp(ctx, 30);
    if protocol != IPPROTO_TCP as u16 {
        return Ok(());
    }
    if new == tcp_state::LISTEN {
        if let Some(p) = pending_listen(current_task()) {
            // SAFETY: map value of this thread.
            let ev = unsafe { &mut *p };
            read_state_addr(ctx, ev)?;
            ev.flags |= flags::LISTEN_ADDR;
        } else {
            let mut ev = task_event(kind::LISTEN);
            read_state_addr(ctx, &mut ev)?;
            ev.flags |= flags::LISTEN_ADDR;
            if config_on(config::LISTEN_BEGINS_AT_ADDRESS) {
                // The fexit set: the listen's exit ends it.
                start_pending(&PENDING_LISTEN, &current_task(), &ev);
            } else {
                // A listen that did not come through listen(2) (io_uring,
                // a kernel service): report it at once.
                emit(&ev);
            }
        }
    } else if old == tcp_state::LISTEN && new == tcp_state::CLOSE {
        let mut ev = task_event(kind::LISTEN_STOP);
        read_state_addr(ctx, &mut ev)?;
        ev.state = old as u8;
        emit(&ev);
    } else if old == tcp_state::SYN_RECV && new == tcp_state::ESTABLISHED {
        let sport: u16 = tp(ctx, 24);
        let family: u16 = tp(ctx, 28);
        count_accept(sport, family as u8);
    }
    Ok(())
}

// ---- the TCP lifecycle through sock_ops ----------------------------------
//
// Where the kernel runs sock_ops programs on the cgroup, this one program
// stands in for the state tracepoint, which runs on every state change of
// every TCP connection on the host. The kernel calls it for every TCP
// operation it has a callback for; it acts at a listen, at each passive
// handshake's end, at a connect, and on state changes of the sockets it
// asked for (listeners: the state callback is armed at listen, and
// disarmed on each accepted child, which inherits it).

#[sock_ops]
pub fn tcp_lifecycle(ctx: SockOpsContext) -> u32 {
    let op = ctx.op();
    if op == BPF_SOCK_OPS_PASSIVE_ESTABLISHED_CB {
        on_accepted(&ctx);
        return 1;
    }
    if op == BPF_SOCK_OPS_TCP_CONNECT_CB {
        // A socket that connects is a client from now on; its release is
        // skipped (see `sock_release`), so it leaves `BOUND` here.
        // SAFETY: the sock_ops flavour of the helper, on our context.
        let cookie = unsafe { bpf_get_socket_cookie(ctx.as_ptr()) };
        let _ = BOUND.remove(&cookie);
        return 1;
    }
    let stop = op == BPF_SOCK_OPS_STATE_CB
        && ctx.arg(0) as i32 == tcp_state::LISTEN
        && ctx.arg(1) as i32 == tcp_state::CLOSE;
    if !stop && op != BPF_SOCK_OPS_TCP_LISTEN_CB {
        return 1;
    }
    // One place reads the address: inlined twice, the compiler would share
    // the loads through a moved context pointer, which the verifier refuses.
    let mut ev = RawEvent::zeroed();
    sock_ops_addr(&ctx, &mut ev);
    if stop {
        on_listen_stop_cb(ev);
    } else {
        on_listen_cb(&ctx, ev);
    }
    1
}

/// A field of the sock_ops context, loaded at its own offset from the
/// context pointer (the only form of context load the verifier accepts).
#[inline(always)]
fn ops_u32(ctx: &SockOpsContext, offset: usize) -> u32 {
    // SAFETY: every offset used is a u32 field of `bpf_sock_ops`.
    unsafe { core::ptr::read_volatile((ctx.ops as *const u8).add(offset) as *const u32) }
}

/// The address a socket holds.
#[inline(always)]
fn put_addr(ev: &mut RawEvent, family: u8, addr: [u8; 16], port: u16) {
    ev.family = family;
    ev.addr = addr;
    ev.port = port;
    ev.bound_port = port;
}

/// The socket's local address, as the state tracepoint would give it.
#[inline(always)]
fn sock_ops_addr(ctx: &SockOpsContext, ev: &mut RawEvent) {
    // SAFETY: a context load the verifier rewrites (the socket's address).
    ev.skaddr = unsafe { (*ctx.ops).__bindgen_anon_2.sk } as u64;
    ev.protocol = IPPROTO_TCP;
    let mut addr = [0u8; 16];
    let family = if ctx.family() == AF_INET6 as u32 {
        // local_ip6: four words in network order.
        let at = core::mem::offset_of!(bpf_sock_ops, local_ip6);
        addr[..4].copy_from_slice(&ops_u32(ctx, at).to_ne_bytes());
        addr[4..8].copy_from_slice(&ops_u32(ctx, at + 4).to_ne_bytes());
        addr[8..12].copy_from_slice(&ops_u32(ctx, at + 8).to_ne_bytes());
        addr[12..].copy_from_slice(&ops_u32(ctx, at + 12).to_ne_bytes());
        AF_INET6
    } else {
        addr[..4].copy_from_slice(&ctx.local_ip4().to_ne_bytes());
        AF_INET
    };
    put_addr(ev, family, addr, ctx.local_port() as u16);
}

/// A successful listen, inside listen(2) (or io_uring's) on the listener's
/// thread: the address joins the entry the listen's start left, by task.
#[inline(always)]
fn on_listen_cb(ctx: &SockOpsContext, mut ev: RawEvent) {
    let _ = ctx.set_cb_flags((ctx.cb_flags() | BPF_SOCK_OPS_STATE_CB_FLAG) as i32);
    // SAFETY: the sock_ops flavour of the helper, on our context.
    let cookie = unsafe { bpf_get_socket_cookie(ctx.as_ptr()) };
    ev.sock_cookie = cookie;
    // The state callback now reports this socket's stop; a listener
    // autobound by listen() has no entry yet, and needs one for its release.
    match BOUND.get_ptr_mut(&cookie) {
        // SAFETY: a map value.
        Some(b) => unsafe { (*b).flags &= !bound::REPORTS_STOP },
        None => {
            let b = BoundSock {
                addr: ev.addr,
                port: ev.port,
                family: ev.family,
                protocol: IPPROTO_TCP,
                flags: 0,
                _pad: [0; 3],
            };
            let _ = BOUND.insert(&cookie, &b, 0);
        }
    }
    if let Some(p) = pending_listen(current_task()) {
        // SAFETY: the map value of this task, until its listen ends.
        let p = unsafe { &mut *p };
        put_addr(p, ev.family, ev.addr, ev.port);
        p.skaddr = ev.skaddr;
        p.sock_cookie = cookie;
        p.flags |= flags::LISTEN_ADDR;
    } else {
        ev.kind = kind::LISTEN;
        ev.ts_ns = unsafe { bpf_ktime_get_ns() };
        ev.flags = flags::LISTEN_ADDR;
        if config_on(config::LISTEN_BEGINS_AT_ADDRESS) {
            // The fexit set: the listen begins here, and its exit adds the
            // task, which these callbacks may not read.
            start_pending(&PENDING_LISTEN, &current_task(), &ev);
        } else {
            // A listen whose start was not seen (io_uring with the syscall
            // tracepoints): reported at once, without its task.
            emit(&ev);
        }
    }
}

/// LISTEN to CLOSE of a listener armed at its listen. Its task is not
/// readable here; the agent takes it from the release just before.
#[inline(always)]
fn on_listen_stop_cb(mut ev: RawEvent) {
    ev.kind = kind::LISTEN_STOP;
    ev.ts_ns = unsafe { bpf_ktime_get_ns() };
    ev.state = tcp_state::LISTEN as u8;
    emit(&ev);
}

#[inline(always)]
fn on_accepted(ctx: &SockOpsContext) {
    let cb = ctx.cb_flags();
    if cb & BPF_SOCK_OPS_STATE_CB_FLAG != 0 {
        // Inherited from the listener: the child's states are not ours.
        let _ = ctx.set_cb_flags((cb & !BPF_SOCK_OPS_STATE_CB_FLAG) as i32);
    }
    count_accept(ctx.local_port() as u16, ctx.family() as u8);
}

#[inline(always)]
fn count_accept(port: u16, family: u8) {
    let key = AcceptKey {
        port,
        family,
        _pad: 0,
    };
    match ACCEPTS.get_ptr_mut(&key) {
        // SAFETY: per-CPU value, no concurrent writer on this CPU.
        Some(n) => unsafe { *n += 1 },
        None => {
            if ACCEPTS.insert(&key, &1, BPF_NOEXIST as u64).is_err() {
                count_lost(lost::ACCEPT_MAP_FULL);
            }
        }
    }
}

// ---- release -------------------------------------------------------------

/// The last close of an inet socket. Only sockets in `BOUND` are reported
/// (listeners, UDP servers, bound-but-idle sockets: the holders); client
/// sockets would only add volume. The release context cannot read the
/// source address, hence the lookup. A TCP socket bound and then
/// connected is a client's from its connect on: not reported (its port is
/// held by the connection, then by TIME_WAIT; the agent's reconciliation
/// drops it).
#[cgroup_sock(sock_release)]
pub fn sock_release(ctx: SockContext) -> i32 {
    let sk = ctx.sock;
    // SAFETY: context loads the release hook may make.
    let (protocol, state) = unsafe { ((*sk).protocol as u8, (*sk).state as i32) };
    // Connections (accepted, or clients) are most closes on a busy host
    // and never in `BOUND` while the sock_ops lifecycle runs: skipped
    // before the cookie and the lookup, which cost most of a miss.
    let connection =
        protocol == IPPROTO_TCP && state != tcp_state::LISTEN && state != tcp_state::CLOSE;
    if connection && config_on(config::RELEASE_SKIPS_CONNECTIONS) {
        return 1;
    }
    let cookie = unsafe { bpf_get_socket_cookie(ctx.as_ptr()) };
    if connection {
        // Without sock_ops nothing took it out of `BOUND` at its connect:
        // done here, and not reported either way.
        let _ = BOUND.remove(&cookie);
        return 1;
    }
    // SAFETY: a map value, copied before the entry is deleted.
    let Some(held) = (unsafe { BOUND.get(&cookie) }).copied() else {
        return 1;
    };
    let _ = BOUND.remove(&cookie);
    let mut ev = task_event(kind::RELEASE);
    put_addr(&mut ev, held.family, held.addr, held.port);
    ev.protocol = held.protocol;
    ev.sock_cookie = cookie;
    // SAFETY: context loads the release hook may make.
    unsafe {
        ev.sock_type = (*sk).type_ as u8;
        ev.state = (*sk).state as u8;
        ev.bound_ifindex = (*sk).bound_dev_if;
        ev.netns_cookie = bpf_get_netns_cookie(ctx.as_ptr());
    }
    ev.skaddr = sk as u64;
    emit(&ev);
    // A listener no callback was armed on (listening before bindwatch):
    // its stop, which the release precedes, is reported from here.
    if held.flags & bound::REPORTS_STOP != 0 && ev.state as i32 == tcp_state::LISTEN {
        ev.kind = kind::LISTEN_STOP;
        emit(&ev);
    }
    1
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}
