//! A socket's last close, reported for the sockets bindwatch follows (those
//! with an entry in `BOUND_SK`, or in `BOUND` with the `_map` programs).

#[allow(unused_imports)]
use crate::prelude::*;

/// The last close of an inet socket. Only sockets bindwatch saw bound
/// (listeners, UDP servers, bound-but-idle sockets: the holders) are
/// reported; client sockets would only add volume. The release context
/// cannot read the source address. A TCP socket bound and then connected
/// is a client's from its connect on: not reported (its port is held by
/// the connection, then by TIME_WAIT; the agent's reconciliation drops it).
///
/// A connection's close (half of a busy host's closes, two a connection on
/// loopback) leaves on two context loads: it is not reported either way.
/// Any other socket costs one look at its own storage: a mark there (a UDP
/// socket's, or one the agent seeded) gives the address. A TCP socket has
/// no mark of its own (creating one cost more than the rest of its bind);
/// it is reported when it holds a port: listening, or closed with a local
/// port and no peer (bound and idle). Its address is the agent's join
/// (`flags::ADDRESS_JOINED`). Anything else (most closes on a host, and
/// every socket closed without a bind) ends at the empty storage.
#[cgroup_sock(sock_release)]
pub fn sock_release(ctx: SockContext) -> i32 {
    let sk = ctx.sock;
    // SAFETY: context loads the release hook may make.
    let (protocol, state) = unsafe { ((*sk).protocol as u8, (*sk).state as i32) };
    if is_connection(protocol, state) {
        return 1;
    }
    let mark = bound_storage(ctx.as_ptr(), None);
    if mark.is_null() {
        if protocol == IPPROTO_TCP && may_hold_port(&ctx, state) {
            report_unmarked(&ctx, state);
        }
        return 1;
    }
    // SAFETY: this socket's storage, freed only with the socket.
    let held = unsafe { *mark };
    let folded = folds_stop(&held, state);
    if folded {
        // The state callback that follows finds this and sends nothing.
        // SAFETY: as above.
        unsafe { (*mark).flags |= bound::RELEASED };
    }
    let cookie = unsafe { bpf_get_socket_cookie(ctx.as_ptr()) };
    report_release(&ctx, held, cookie, state, folded);
    1
}

/// Whether an unmarked TCP socket in `state` holds a port: listening, or
/// closed with a local port and no peer. A socket never bound has no local
/// port; one whose connect failed lost its peer's port and, unless it was
/// bound by hand, its own (an explicitly bound one is told from an idle
/// holder by the agent, which saw no bind of it).
#[inline(always)]
fn may_hold_port(ctx: &SockContext, state: i32) -> bool {
    if state == tcp_state::LISTEN {
        return true;
    }
    // SAFETY: a context load the release hook may make.
    state == tcp_state::CLOSE && unsafe { (*ctx.sock).dst_port } == 0 && local_port(ctx) != 0
}

/// `skc_num` in `struct sock_common`, which begins every `struct sock`:
/// after `skc_addrpair` (8 bytes), `skc_hash` (4) and `skc_dport` (2), a
/// layout unchanged since Linux 2.6. The release hook's context is the
/// socket itself but refuses a load of `src_port` (post_bind hooks only),
/// so the port is read with the checked helper.
const SKC_NUM: usize = 14;

/// The socket's local port (0 when it holds none, or when it cannot be
/// read: then it is not reported, as a socket that holds none).
#[inline(always)]
fn local_port(ctx: &SockContext) -> u16 {
    // SAFETY: a read of the kernel's socket through the checked helper.
    unsafe { bpf_probe_read_kernel((ctx.sock as *const u8).add(SKC_NUM) as *const u16) }
        .unwrap_or(0)
}

/// The release of an unmarked TCP socket: everything but the address.
#[inline(always)]
fn report_unmarked(ctx: &SockContext, state: i32) {
    // SAFETY: the release hook's helper, on its context.
    let cookie = unsafe { bpf_get_socket_cookie(ctx.as_ptr()) };
    let mut ev = release_event(ctx, cookie, state);
    ev.protocol = IPPROTO_TCP;
    // SAFETY: a context load the release hook may make.
    ev.family = unsafe { (*ctx.sock).family } as u8;
    ev.flags = flags::ADDRESS_JOINED;
    if state == tcp_state::LISTEN && config_on(config::STOPS_FROM_SOCK_OPS) {
        ev.flags |= flags::STOP_FOLDED;
        if let Some(p) = FOLDED.get_ptr_mut(0) {
            // SAFETY: this CPU's slot; programs do not nest on it.
            unsafe { *p = cookie };
        }
    }
    emit(&ev);
}

/// `sock_release` where the kernel refuses socket-local storage: the mark
/// is looked up by cookie in `BOUND` and deleted here.
#[cgroup_sock(sock_release)]
pub fn release_map(ctx: SockContext) -> i32 {
    let sk = ctx.sock;
    // SAFETY: context loads the release hook may make.
    let (protocol, state) = unsafe { ((*sk).protocol as u8, (*sk).state as i32) };
    // Connections (accepted, or clients) are most closes on a busy host
    // and never in `BOUND` while the sock_ops lifecycle runs: skipped
    // before the cookie and the lookup, which cost most of a miss.
    let connection = is_connection(protocol, state);
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
    report_release(&ctx, held, cookie, state, folds_stop(&held, state));
    1
}

/// A TCP socket neither listening nor closed: a connection's.
#[inline(always)]
fn is_connection(protocol: u8, state: i32) -> bool {
    protocol == IPPROTO_TCP && state != tcp_state::LISTEN && state != tcp_state::CLOSE
}

/// Whether this release carries the listener's stop (`bound::REPORTS_STOP`):
/// the release hook runs before TCP closes a listener, so a socket released
/// while listening always stops just after.
#[inline(always)]
fn folds_stop(held: &BoundSock, state: i32) -> bool {
    held.flags & bound::REPORTS_STOP != 0 && state == tcp_state::LISTEN
}

/// The release's record; `state` is the socket's, `folded` whether the
/// record carries the listener's stop (`folds_stop`).
#[inline(always)]
fn report_release(ctx: &SockContext, held: BoundSock, cookie: u64, state: i32, folded: bool) {
    let mut ev = release_event(ctx, cookie, state);
    put_addr(&mut ev, held.family, held.addr, held.port);
    ev.protocol = held.protocol;
    if folded {
        ev.flags |= flags::STOP_FOLDED;
    }
    emit(&ev);
}

/// What every release record carries: the task, the socket's identity and
/// state, its device and namespace.
#[inline(always)]
fn release_event(ctx: &SockContext, cookie: u64, state: i32) -> RawEvent {
    let sk = ctx.sock;
    let mut ev = task_event(kind::RELEASE);
    ev.sock_cookie = cookie;
    ev.state = state as u8;
    // SAFETY: context loads the release hook may make, and its helper.
    unsafe {
        ev.sock_type = (*sk).type_ as u8;
        ev.bound_ifindex = (*sk).bound_dev_if;
        ev.netns_cookie = bpf_get_netns_cookie(ctx.as_ptr());
    }
    ev.skaddr = sk as u64;
    ev
}
