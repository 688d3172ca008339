//! A bind: begun at the cgroup bind hook (the fexit and tracepoint sets)
//! or at `sys_enter_bind` (the entry set), completed by the cgroup hooks
//! (what only the socket knows, the port the kernel chose), ended with its
//! result at the syscall's exit tracepoint (or a trampoline, `fexit.rs`).

#[allow(unused_imports)]
use crate::prelude::*;

#[tracepoint]
pub fn sys_enter_bind(ctx: TracePointContext) -> u32 {
    let _ = try_enter_bind(&ctx);
    0
}

#[inline(always)]
pub(crate) fn try_enter_bind(ctx: &TracePointContext) -> Result<(), i32> {
    let fd: u64 = tp(ctx, 16);
    let uaddr: u64 = tp(ctx, 24);
    let len: u64 = tp(ctx, 32);
    begin_bind(fd as i32, uaddr, len)
}

/// Reads `N` bytes of the caller's sockaddr (the syscall's argument).
#[inline(always)]
pub(crate) fn read_addr<const N: usize>(addr: u64) -> Result<[u8; N], i32> {
    // SAFETY: the helper checks the address; a fault is an error.
    unsafe { bpf_probe_read_user(addr as *const [u8; N]).map_err(|e| e as i32) }
}

/// The start of a bind in the entry set: the requested address, read
/// before the call (a failed bind leaves none in the socket).
#[inline(always)]
pub(crate) fn begin_bind(fd: i32, uaddr: u64, len: u64) -> Result<(), i32> {
    if let Some(ev) = requested_bind(fd, uaddr, len)? {
        start_pending(&PENDING_BIND, &ev.tid, &ev);
    }
    Ok(())
}

/// A bind's event from its syscall arguments, stamped with the task; `None`
/// when the sockaddr is not inet.
#[inline(always)]
pub(crate) fn requested_bind(fd: i32, uaddr: u64, len: u64) -> Result<Option<RawEvent>, i32> {
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
        return Ok(None);
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
    Ok(Some(ev))
}

/// Puts a syscall's start in the thread's slot: written over the slot a
/// previous call left, inserted only for a thread's first call.
#[inline(always)]
pub(crate) fn start_pending<K>(map: &LruHashMap<K, RawEvent>, key: &K, ev: &RawEvent) {
    put_pending(map, map.get_ptr_mut(key), key, ev);
}

/// `start_pending` given the caller's lookup of the slot (`slot`).
#[inline(always)]
pub(crate) fn put_pending<K>(
    map: &LruHashMap<K, RawEvent>,
    slot: Option<*mut RawEvent>,
    key: &K,
    ev: &RawEvent,
) {
    match slot {
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
pub(crate) fn getsockopt_int(ctx: &SockAddrContext, optname: i32) -> Option<i32> {
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
pub(crate) fn on_bind_hook(ctx: &SockAddrContext) {
    if let Some(p) = pending_bind(current_tid()) {
        // SAFETY: this thread's slot, while its bind runs.
        sock_info(ctx, unsafe { &mut *p });
    }
}

/// What only the socket knows: protocol, type, reuse flags, device, cookies.
#[inline(always)]
pub(crate) fn sock_info(ctx: &SockAddrContext, ev: &mut RawEvent) {
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

// The fexit and tracepoint sets' bind hooks: the bind begins here, inside
// the kernel's bind for every socket that reaches it (MPTCP's included,
// which newer kernels bind without calling `inet_bind`); the requested
// address is in the context. A bind refused before this point (a sockaddr
// too short) is reported by the tracepoint set's exit, not by the fexit
// set.

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
pub(crate) fn begin_bind_at_hook(ctx: &SockAddrContext, v6: bool) {
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
    on_post_bind(&ctx, false, true);
    1
}

#[cgroup_sock(post_bind6)]
pub fn post_bind6(ctx: SockContext) -> i32 {
    on_post_bind(&ctx, true, true);
    1
}

/// `post_bind4` marking the socket in `BOUND` (see `release_map`).
#[cgroup_sock(post_bind4)]
pub fn post_bind4_map(ctx: SockContext) -> i32 {
    on_post_bind(&ctx, false, false);
    1
}

/// `post_bind6` marking the socket in `BOUND`.
#[cgroup_sock(post_bind6)]
pub fn post_bind6_map(ctx: SockContext) -> i32 {
    on_post_bind(&ctx, true, false);
    1
}

/// A bind that succeeded: the address the socket now holds (with the port
/// the kernel chose) is added to the thread's pending bind, and marked on
/// the socket for its release, in `BOUND`, or in its own storage unless
/// it is TCP: creating a socket's storage costs two allocations, the
/// largest part of a bind's cost, and a TCP socket's release is reported
/// from its state instead (`sock_release`), its address joined by the
/// agent from this bind's record.
#[inline(always)]
pub(crate) fn on_post_bind(ctx: &SockContext, v6: bool, storage: bool) {
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
    let slot = pending_bind(current_tid());
    if storage {
        if bound.protocol != IPPROTO_TCP {
            // A socket binds once: the entry is new, made from `bound`.
            let _ = bound_storage(ctx.as_ptr(), Some(&mut bound));
        }
    } else {
        // The bind hook read this socket's cookie into the slot: one helper
        // call less a bind (a bind begun elsewhere, or none, asks for it).
        // SAFETY: map value of this thread.
        let cookie = match slot.map(|p| unsafe { (*p).sock_cookie }) {
            Some(c) if c != 0 => c,
            _ => unsafe { bpf_get_socket_cookie(ctx.as_ptr()) },
        };
        let _ = BOUND.insert(&cookie, &bound, 0);
    }
    if let Some(p) = slot {
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

/// The end of a bind in the tracepoint set, where nothing runs at the
/// syscall's entry. A bind the kernel refused before the cgroup hook (a
/// bad descriptor or length, a security module's refusal) has no slot:
/// its arguments are read from the task's saved registers, and the
/// requested address from the caller's memory, still there at the exit.
#[tracepoint]
pub fn bind_exit(ctx: TracePointContext) -> u32 {
    let ret: i64 = tp(&ctx, 16);
    // A success without a slot is a bind of no inet socket: not ours.
    if !end_bind(ret) && ret < 0 {
        let _ = report_refused_bind(ret);
    }
    0
}

#[inline(always)]
pub(crate) fn report_refused_bind(ret: i64) -> Result<(), i32> {
    let Some(args) = syscall_args() else {
        return Ok(());
    };
    if let Some(mut ev) = requested_bind(args.fd as i32, args.second, args.third)? {
        ev.ret = ret as i32;
        emit(&ev);
    }
    Ok(())
}

/// The end of a bind, in every probe set: the result, and the event.
/// False when the thread had no bind under way.
#[inline(always)]
pub(crate) fn end_bind(ret: i64) -> bool {
    let Some(p) = pending_bind(current_tid()) else {
        return false;
    };
    // SAFETY: this thread's slot; sent from where it lies, then freed
    // for the thread's next bind.
    unsafe {
        (*p).ret = ret as i32;
        emit(&*p);
        (*p).kind = 0;
    }
    true
}
