//! The TCP lifecycle (a listener's address and its stop, accept counts):
//! the `inet_sock_set_state` tracepoint, or one sock_ops program on the
//! cgroup where the kernel allows it.

#[allow(unused_imports)]
use crate::prelude::*;

/// Fills address fields from `sock/inet_sock_set_state`.
#[inline(always)]
pub(crate) fn read_state_addr(ctx: &TracePointContext, ev: &mut RawEvent) -> Result<(), i32> {
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
pub(crate) fn try_set_state(ctx: &TracePointContext) -> Result<(), i32> {
    let old: i32 = tp(ctx, 16);
    let new: i32 = tp(ctx, 20);
    let protocol: u16 = tp(ctx, 30);
    if protocol != IPPROTO_TCP as u16 {
        return Ok(());
    }
    if new == tcp_state::LISTEN {
        let task = current_task();
        let slot = PENDING_LISTEN.get_ptr_mut(&task);
        if let Some(p) = slot.filter(|p| is_pending(*p, kind::LISTEN)) {
            // SAFETY: map value of this thread.
            let ev = unsafe { &mut *p };
            read_state_addr(ctx, ev)?;
            ev.flags |= flags::LISTEN_ADDR;
        } else {
            let mut ev = task_event(kind::LISTEN);
            read_state_addr(ctx, &mut ev)?;
            ev.flags |= flags::LISTEN_ADDR;
            if config_on(config::LISTEN_BEGINS_AT_ADDRESS) {
                // The fexit and tracepoint sets: the listen's exit ends it.
                put_pending(&PENDING_LISTEN, slot, &task, &ev);
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
    on_sock_ops(&ctx, true)
}

/// `tcp_lifecycle` with the marks in `BOUND` (see `release_map`).
#[sock_ops]
pub fn lifecycle_map(ctx: SockOpsContext) -> u32 {
    on_sock_ops(&ctx, false)
}

#[inline(always)]
pub(crate) fn on_sock_ops(ctx: &SockOpsContext, storage: bool) -> u32 {
    // The operation first, and nothing read before it: most calls are for
    // operations this program does not act on.
    let op = ctx.op();
    if op == BPF_SOCK_OPS_PASSIVE_ESTABLISHED_CB {
        on_accepted(ctx);
        return 1;
    }
    if op == BPF_SOCK_OPS_TCP_CONNECT_CB {
        // A socket that connects is a client from now on: its mark goes.
        if storage {
            let sk = ops_sock(ctx);
            if !sk.is_null() {
                // SAFETY: the context's socket, checked for null.
                let _ = unsafe { bpf_sk_storage_delete(bound_sk(), sk) };
            }
        } else {
            // Its release is skipped (see `release_map`), so it leaves
            // `BOUND` here.
            // SAFETY: the sock_ops flavour of the helper, on our context.
            let cookie = unsafe { bpf_get_socket_cookie(ctx.as_ptr()) };
            let _ = BOUND.remove(&cookie);
        }
        return 1;
    }
    let stop = op == BPF_SOCK_OPS_STATE_CB
        && ctx.arg(0) as i32 == tcp_state::LISTEN
        && ctx.arg(1) as i32 == tcp_state::CLOSE;
    if !stop && op != BPF_SOCK_OPS_TCP_LISTEN_CB {
        return 1;
    }
    if stop && storage && released(ctx) {
        // Its release carried the stop (`flags::STOP_FOLDED`).
        return 1;
    }
    // One place reads the address: inlined twice, the compiler would share
    // the loads through a moved context pointer, which the verifier refuses.
    let mut ev = RawEvent::zeroed();
    sock_ops_addr(ctx, &mut ev);
    if stop {
        on_listen_stop_cb(ev);
    } else {
        on_listen_cb(ctx, ev, storage);
    }
    1
}

/// Whether the release hook already reported this listener's stop: an
/// unmarked listener's release just before on this CPU (`FOLDED`), or a
/// mark the agent seeded.
#[inline(always)]
pub(crate) fn released(ctx: &SockOpsContext) -> bool {
    if let Some(p) = FOLDED.get_ptr_mut(0) {
        // SAFETY: the sock_ops flavour of the helper, on our context; this
        // CPU's slot.
        unsafe {
            if *p != 0 && *p == bpf_get_socket_cookie(ctx.as_ptr()) {
                *p = 0;
                return true;
            }
        }
    }
    let sk = ops_sock(ctx);
    if sk.is_null() {
        return false;
    }
    let b = bound_storage(sk, None);
    // SAFETY: this socket's storage, checked for null.
    !b.is_null() && unsafe { (*b).flags } & bound::RELEASED != 0
}

/// The context's socket (null where the kernel gives none).
#[inline(always)]
pub(crate) fn ops_sock(ctx: &SockOpsContext) -> *mut c_void {
    // SAFETY: a context load the verifier rewrites.
    unsafe { (*ctx.ops).__bindgen_anon_2.sk as *mut c_void }
}

/// A field of the sock_ops context, loaded at its own offset from the
/// context pointer (the only form of context load the verifier accepts).
#[inline(always)]
pub(crate) fn ops_u32(ctx: &SockOpsContext, offset: usize) -> u32 {
    // SAFETY: every offset used is a u32 field of `bpf_sock_ops`.
    unsafe { core::ptr::read_volatile((ctx.ops as *const u8).add(offset) as *const u32) }
}

/// The address a socket holds.
#[inline(always)]
pub(crate) fn put_addr(ev: &mut RawEvent, family: u8, addr: [u8; 16], port: u16) {
    ev.family = family;
    ev.addr = addr;
    ev.port = port;
    ev.bound_port = port;
}

/// The socket's local address, as the state tracepoint would give it.
#[inline(always)]
pub(crate) fn sock_ops_addr(ctx: &SockOpsContext, ev: &mut RawEvent) {
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
pub(crate) fn on_listen_cb(ctx: &SockOpsContext, mut ev: RawEvent, storage: bool) {
    let _ = ctx.set_cb_flags((ctx.cb_flags() | BPF_SOCK_OPS_STATE_CB_FLAG) as i32);
    // SAFETY: the sock_ops flavour of the helper, on our context.
    let cookie = unsafe { bpf_get_socket_cookie(ctx.as_ptr()) };
    ev.sock_cookie = cookie;
    // The state callback now reports this socket's stop. With socket-local
    // storage nothing more: a TCP socket carries no mark, and its release
    // is found by its state (a listener autobound by listen() included, its
    // address joined from this listen's record); a mark the agent seeded
    // (bound before the probes loaded) keeps its flags, so that release
    // does not carry the stop the callback now sends.
    if !storage {
        // A listener autobound by listen() has no mark yet, and needs one
        // for its release.
        let mark = BoundSock {
            addr: ev.addr,
            port: ev.port,
            family: ev.family,
            protocol: IPPROTO_TCP,
            flags: 0,
            _pad: [0; 3],
        };
        match BOUND.get_ptr_mut(&cookie) {
            // SAFETY: a map value.
            Some(b) => unsafe { (*b).flags &= !bound::REPORTS_STOP },
            None => {
                let _ = BOUND.insert(&cookie, &mark, 0);
            }
        }
    }
    let task = current_task();
    // One lookup of the task's slot, whether its listen began or begins here.
    let slot = PENDING_LISTEN.get_ptr_mut(&task);
    if let Some(p) = slot.filter(|p| is_pending(*p, kind::LISTEN)) {
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
            // The fexit set and the tracepoint set: the listen begins here,
            // and its exit adds the task, which these callbacks may not read.
            put_pending(&PENDING_LISTEN, slot, &task, &ev);
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
pub(crate) fn on_listen_stop_cb(mut ev: RawEvent) {
    ev.kind = kind::LISTEN_STOP;
    ev.ts_ns = unsafe { bpf_ktime_get_ns() };
    ev.state = tcp_state::LISTEN as u8;
    emit(&ev);
}

#[inline(always)]
pub(crate) fn on_accepted(ctx: &SockOpsContext) {
    let cb = ctx.cb_flags();
    if cb & BPF_SOCK_OPS_STATE_CB_FLAG != 0 {
        // Inherited from the listener: the child's states are not ours.
        let _ = ctx.set_cb_flags((cb & !BPF_SOCK_OPS_STATE_CB_FLAG) as i32);
    }
    count_accept(ctx.local_port() as u16, ctx.family() as u8);
}

#[inline(always)]
pub(crate) fn count_accept(port: u16, family: u8) {
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
