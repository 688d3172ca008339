//! The conflict engine against the kernel it models: for every pair of
//! holder and request (addresses, families, IPV6_V6ONLY, SO_REUSEADDR,
//! SO_REUSEPORT, users, TCP listening or UDP), the real bind's outcome in a
//! namespace of its own must be what `conflict()` predicts. Needs root (no
//! eBPF).

use std::net::SocketAddr;

use bindwatch::conflict::{SockSpec, SockState, conflict};
use bindwatch::event::Proto;
use socket2::{Domain, Protocol, Socket, Type};
use support::{Netns, drop_thread_to_uid};

fn make(spec: &SockSpec) -> Socket {
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
fn bind_as(ns: &Netns, spec: SockSpec) -> std::io::Result<Socket> {
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

#[test]
fn engine_agrees_with_the_kernel() {
    let addrs = [
        "0.0.0.0",
        "127.0.0.1",
        "127.0.0.2",
        "::",
        "::1",
        "::ffff:127.0.0.1",
    ];
    let ns = Netns::new("rules");
    let mut checked = 0;
    let mut disagreements = Vec::new();
    // Ports above the unprivileged start, one per case, so cases never meet.
    let mut port = 20000u16;
    for proto in [Proto::Tcp, Proto::Udp] {
        for h_addr in addrs {
            for r_addr in addrs {
                for bits in 0u32..64 {
                    port += 1;
                    let base = |addr: &str| SockSpec::new(proto, addr.parse().unwrap(), port);
                    let mut holder = base(h_addr);
                    let mut req = base(r_addr);
                    holder.reuseaddr = bits & 1 != 0;
                    holder.reuseport = bits & 2 != 0;
                    req.reuseaddr = bits & 4 != 0;
                    req.reuseport = bits & 8 != 0;
                    holder.v6only = bits & 16 != 0 && holder.addr.is_ipv6();
                    // The request under another user in a quarter of cases.
                    if bits & 32 != 0 {
                        req.uid = 1000;
                    }
                    // IPV6_V6ONLY applies to IPv6 sockets, and such a socket
                    // cannot bind a v4-mapped address (EINVAL).
                    if bits & 16 != 0 && (!holder.addr.is_ipv6() || h_addr.starts_with("::ffff:")) {
                        continue;
                    }
                    let _held = bind_as(&ns, holder.clone()).unwrap_or_else(|e| {
                        panic!("holder {holder:?}: {e}");
                    });
                    let outcome = bind_as(&ns, req.clone());
                    let kernel_conflict = match &outcome {
                        Ok(_) => false,
                        Err(e) if e.raw_os_error() == Some(libc::EADDRINUSE) => true,
                        Err(e) => panic!("request {req:?}: unexpected {e}"),
                    };
                    let predicted = conflict(&req, &holder);
                    if predicted.is_some() != kernel_conflict {
                        disagreements.push(format!(
                            "{proto:?} holder {} v6only={} ra={} rp={} | request {} ra={} rp={} uid={} | kernel {} engine {:?}",
                            h_addr, holder.v6only, holder.reuseaddr, holder.reuseport,
                            r_addr, req.reuseaddr, req.reuseport, req.uid,
                            if kernel_conflict { "EADDRINUSE" } else { "ok" }, predicted
                        ));
                    }
                    checked += 1;
                }
            }
        }
    }
    eprintln!("checked {checked} holder/request pairs against the kernel");
    assert!(checked >= 3000, "too few cases ran: {checked}");
    assert!(
        disagreements.is_empty(),
        "{} of {checked} disagree:\n{}",
        disagreements.len(),
        disagreements[..disagreements.len().min(40)].join("\n")
    );
}
