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
/// it is reported when its state says it may hold a port: listening, or
/// closed without a peer (bound and idle, or never bound: only the agent,
/// which saw its bind, can tell, and it drops the others). Its address is
/// the agent's join (`flags::ADDRESS_JOINED`). Anything else (most closes
/// on a host) ends at the empty storage.
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

/// Whether an unmarked TCP socket in `state` may hold a port: listening,
/// or closed with no peer. A connect that failed leaves the socket closed
/// with its peer's port cleared too (a disconnect); the agent tells it
/// from a bound one by the bind it did not see.
#[inline(always)]
fn may_hold_port(ctx: &SockContext, state: i32) -> bool {
    // SAFETY: a context load the release hook may make.
    state == tcp_state::LISTEN
        || (state == tcp_state::CLOSE && unsafe { (*ctx.sock).dst_port } == 0)
}

/// The release of an unmarked TCP socket: everything but the address.
#[inline(always)]
fn report_unmarked(ctx: &SockContext, state: i32) {
    let sk = ctx.sock;
    let mut ev = task_event(kind::RELEASE);
    ev.protocol = IPPROTO_TCP;
    ev.state = state as u8;
    ev.flags = flags::ADDRESS_JOINED;
    // SAFETY: context loads the release hook may make, and its helpers.
    unsafe {
        ev.family = (*sk).family as u8;
        ev.sock_type = (*sk).type_ as u8;
        ev.bound_ifindex = (*sk).bound_dev_if;
        ev.sock_cookie = bpf_get_socket_cookie(ctx.as_ptr());
        ev.netns_cookie = bpf_get_netns_cookie(ctx.as_ptr());
    }
    ev.skaddr = sk as u64;
    if state == tcp_state::LISTEN && config_on(config::STOPS_FROM_SOCK_OPS) {
        ev.flags |= flags::STOP_FOLDED;
        if let Some(p) = FOLDED.get_ptr_mut(0) {
            // SAFETY: this CPU's slot; programs do not nest on it.
            unsafe { *p = ev.sock_cookie };
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
    let sk = ctx.sock;
    let mut ev = task_event(kind::RELEASE);
    put_addr(&mut ev, held.family, held.addr, held.port);
    ev.protocol = held.protocol;
    ev.sock_cookie = cookie;
    ev.state = state as u8;
    // SAFETY: context loads the release hook may make.
    unsafe {
        ev.sock_type = (*sk).type_ as u8;
        ev.bound_ifindex = (*sk).bound_dev_if;
        ev.netns_cookie = bpf_get_netns_cookie(ctx.as_ptr());
    }
    ev.skaddr = sk as u64;
    if folded {
        ev.flags |= flags::STOP_FOLDED;
    }
    emit(&ev);
}
