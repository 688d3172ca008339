//! A socket's last close, reported for the sockets bindwatch follows (those
//! with an entry in `BOUND_SK`, or in `BOUND` with the `_map` programs).

#[allow(unused_imports)]
use crate::prelude::*;

/// The last close of an inet socket. Only sockets bindwatch marked at
/// their bind (listeners, UDP servers, bound-but-idle sockets: the
/// holders) are reported; client sockets would only add volume. The
/// release context cannot read the source address, hence the mark. A TCP
/// socket bound and then connected is a client's from its connect on: not
/// reported (its port is held by the connection, then by TIME_WAIT; the
/// agent's reconciliation drops it).
///
/// A connection's close (half of a busy host's closes, two a connection on
/// loopback) leaves on two context loads: a connection never has the mark
/// (an accepted socket does not inherit it, a client loses it at its
/// connect) and is not reported either way. Any other socket costs one
/// look at its own storage; one without it (most closes on a host) ends
/// there.
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
