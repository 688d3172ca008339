//! A socket's last close, reported for the sockets bindwatch follows
//! (`BOUND`).

#[allow(unused_imports)]
use crate::prelude::*;

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
