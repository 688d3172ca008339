//! The conflict-rules matrix: every pair of holder and request over
//! addresses, families, IPV6_V6ONLY, SO_REUSEADDR, SO_REUSEPORT, users and
//! protocol, with the real sockets to make each side in a namespace.

use std::net::SocketAddr;

use bindwatch::core::conflict::{SockSpec, SockState};
use bindwatch::core::event::Proto;
use socket2::{Domain, Protocol, Socket, Type};

use crate::{Netns, drop_thread_to_uid};

pub const ADDRS: [&str; 6] = [
    "0.0.0.0",
    "127.0.0.1",
    "127.0.0.2",
    "::",
    "::1",
    "::ffff:127.0.0.1",
];

/// A socket with `spec`'s options, not bound.
pub fn make(spec: &SockSpec) -> Socket {
    let addr = SocketAddr::new(spec.addr, spec.port);
    let (ty, proto) = match spec.proto {
        Proto::Udp => (Type::DGRAM, Protocol::UDP),
        _ => (Type::STREAM, Protocol::TCP),
    };
    let s = Socket::new(Domain::for_address(addr), ty, Some(proto)).unwrap();
    if spec.addr.is_ipv6() {
        s.set_only_v6(spec.v6only).unwrap();
    }
    s.set_reuse_address(spec.reuseaddr).unwrap();
    s.set_reuse_port(spec.reuseport).unwrap();
    s
}

/// Binds `spec` on a thread of `ns` running as `spec.uid`; the socket
/// outlives the thread.
pub fn bind_as(ns: &Netns, spec: SockSpec) -> std::io::Result<Socket> {
    ns.run(move || {
        if spec.uid != 0 {
            drop_thread_to_uid(spec.uid);
        }
        let s = make(&spec);
        s.bind(&SocketAddr::new(spec.addr, spec.port).into())?;
        if spec.state == SockState::Listen {
            s.listen(8)?;
        }
        Ok(s)
    })
}

/// Every (holder, request) pair of the matrix, each on a port of its own
/// from `first_port` up (above the unprivileged start, so cases never
/// meet and no privilege enters).
pub fn cases(first_port: u16) -> Vec<(SockSpec, SockSpec)> {
    let mut out = Vec::new();
    let mut port = first_port;
    for proto in [Proto::Tcp, Proto::Udp] {
        for h_addr in ADDRS {
            for r_addr in ADDRS {
                for bits in 0u32..64 {
                    // IPV6_V6ONLY applies to IPv6 sockets, and such a socket
                    // cannot bind a v4-mapped address (EINVAL).
                    if bits & 16 != 0 && (!h_addr.contains(':') || h_addr.starts_with("::ffff:")) {
                        continue;
                    }
                    port += 1;
                    let base = |addr: &str| SockSpec::new(proto, addr.parse().unwrap(), port);
                    let mut holder = base(h_addr);
                    let mut req = base(r_addr);
                    holder.reuseaddr = bits & 1 != 0;
                    holder.reuseport = bits & 2 != 0;
                    req.reuseaddr = bits & 4 != 0;
                    req.reuseport = bits & 8 != 0;
                    holder.v6only = bits & 16 != 0;
                    // The request under another user in half the cases.
                    if bits & 32 != 0 {
                        req.uid = 1000;
                    }
                    out.push((holder, req));
                }
            }
        }
    }
    out
}

/// The kernel's answer to `req` while `holder` is bound in `ns`: whether
/// the bind fails with EADDRINUSE. Any other error fails the test.
pub fn kernel_refuses(ns: &Netns, holder: &SockSpec, req: &SockSpec) -> bool {
    match bind_as(ns, req.clone()) {
        Ok(_) => false,
        Err(e) if e.raw_os_error() == Some(libc::EADDRINUSE) => true,
        Err(e) => panic!("request {req:?} beside {holder:?}: unexpected {e}"),
    }
}

/// One case in words, for a disagreement's report.
pub fn describe(holder: &SockSpec, req: &SockSpec) -> String {
    format!(
        "{:?} holder {} v6only={} ra={} rp={} | request {} ra={} rp={} uid={}",
        holder.proto,
        holder.addr,
        holder.v6only,
        holder.reuseaddr,
        holder.reuseport,
        req.addr,
        req.reuseaddr,
        req.reuseport,
        req.uid
    )
}

/// Fails unless the whole matrix ran and nothing disagreed with the
/// kernel (the first 40 disagreements shown).
pub fn assert_all_agree(checked: usize, disagreements: &[String]) {
    assert!(checked >= 3000, "too few cases ran: {checked}");
    assert!(
        disagreements.is_empty(),
        "{} of {checked} disagree:\n{}",
        disagreements.len(),
        disagreements[..disagreements.len().min(40)].join("\n")
    );
}
