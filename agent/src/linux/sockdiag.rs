//! The kernel's own socket tables, read over sock_diag netlink (what `ss`
//! reads), for one network namespace: the one the netlink socket was
//! created in.

use std::net::IpAddr;

use netlink_packet_core::{
    NLM_F_DUMP, NLM_F_REQUEST, NetlinkHeader, NetlinkMessage, NetlinkPayload,
};
use netlink_packet_sock_diag::SockDiagMessage;
use netlink_packet_sock_diag::constants::{AF_INET, AF_INET6, IPPROTO_TCP, IPPROTO_UDP};
use netlink_packet_sock_diag::inet::{
    ExtensionFlags, InetRequest, SocketId, StateFlags, nlas::Nla,
};
use netlink_sys::{Socket, SocketAddr, protocols::NETLINK_SOCK_DIAG};

use bindwatch_core::event::Proto;

/// TCP states as sock_diag reports them (one byte), from the one
/// definition in `bindwatch_common::tcp_state`.
pub mod state {
    use bindwatch_common::tcp_state as k;
    pub const ESTABLISHED: u8 = k::ESTABLISHED as u8;
    pub const TIME_WAIT: u8 = k::TIME_WAIT as u8;
    pub const CLOSE: u8 = k::CLOSE as u8;
    pub const LISTEN: u8 = k::LISTEN as u8;
    pub const BOUND_INACTIVE: u8 = k::BOUND_INACTIVE as u8;
}

/// Every state a socket holding a local port can be in.
pub const ALL_STATES: u32 = (1 << 14) - 1;
/// The sockets the holder table follows: listeners, bound-only TCP sockets
/// and every UDP socket (UDP reports unconnected sockets as CLOSE).
pub const TABLE_STATES: u32 =
    (1 << state::LISTEN) | (1 << state::BOUND_INACTIVE) | (1 << state::CLOSE);

/// One socket as the kernel reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KernelSock {
    pub proto: Proto,
    pub state: u8,
    pub addr: IpAddr,
    pub port: u16,
    pub remote: Option<(IpAddr, u16)>,
    /// `SO_BINDTODEVICE` interface, 0 when none.
    pub ifindex: u32,
    pub cookie: u64,
    pub uid: u32,
    /// 0 for sockets without a file (TIME_WAIT, request sockets).
    pub inode: u64,
    /// Reported for IPv6 sockets only.
    pub v6only: Option<bool>,
}

/// What to dump.
#[derive(Clone, Copy, Debug)]
pub struct DiagQuery {
    pub proto: Proto,
    /// Bit mask of TCP states (`1 << state`).
    pub states: u32,
    /// Only sockets on this local port (filtered in the kernel).
    pub port: Option<u16>,
}

/// A sock_diag netlink socket, bound to the namespace it was created in.
pub struct DiagSocket {
    sock: Socket,
    buf: Vec<u8>,
    seq: u32,
}

/// `INET_DIAG_REQ_BYTECODE`: the filter attribute of a dump request.
const INET_DIAG_REQ_BYTECODE: u16 = 1;
const INET_DIAG_BC_S_GE: u8 = 2;
const INET_DIAG_BC_S_LE: u8 = 3;

/// Filter bytecode for `sport == port`, as `ss 'sport = :PORT'` sends it:
/// each op jumps `yes` bytes forward on a match and `no` bytes on a
/// mismatch; landing exactly at the end accepts, past it rejects.
fn port_bytecode(port: u16) -> Vec<u8> {
    let op = |code: u8, yes: u8, no: u16| {
        let mut b = vec![code, yes];
        b.extend_from_slice(&no.to_ne_bytes());
        b
    };
    let mut bc = Vec::with_capacity(16);
    bc.extend(op(INET_DIAG_BC_S_GE, 8, 20));
    bc.extend(op(0, 0, port));
    bc.extend(op(INET_DIAG_BC_S_LE, 8, 12));
    bc.extend(op(0, 0, port));
    bc
}

fn cookie_u64(c: [u8; 8]) -> u64 {
    // idiag_cookie is two host-order u32s, low word first.
    let lo = u32::from_ne_bytes([c[0], c[1], c[2], c[3]]) as u64;
    let hi = u32::from_ne_bytes([c[4], c[5], c[6], c[7]]) as u64;
    lo | (hi << 32)
}

impl DiagSocket {
    /// Opens a sock_diag socket in the calling thread's network namespace.
    pub fn open() -> std::io::Result<Self> {
        let mut sock = Socket::new(NETLINK_SOCK_DIAG)?;
        sock.bind_auto()?;
        sock.connect(&SocketAddr::new(0, 0))?;
        Ok(Self {
            sock,
            buf: vec![0; 64 * 1024],
            seq: 0,
        })
    }

    pub fn as_raw_fd(&self) -> std::os::fd::RawFd {
        use std::os::fd::AsRawFd;
        self.sock.as_raw_fd()
    }

    /// Every socket matching `q`, both address families.
    pub fn dump(&mut self, q: DiagQuery) -> std::io::Result<Vec<KernelSock>> {
        let mut out = Vec::new();
        for family in [AF_INET, AF_INET6] {
            self.dump_family(family, q, &mut out)?;
        }
        Ok(out)
    }

    fn dump_family(
        &mut self,
        family: u8,
        q: DiagQuery,
        out: &mut Vec<KernelSock>,
    ) -> std::io::Result<()> {
        let protocol = match q.proto {
            Proto::Udp => IPPROTO_UDP,
            _ => IPPROTO_TCP,
        };
        let mut hdr = NetlinkHeader::default();
        hdr.flags = NLM_F_REQUEST | NLM_F_DUMP;
        self.seq = self.seq.wrapping_add(1);
        hdr.sequence_number = self.seq;
        let mut msg = NetlinkMessage::new(
            hdr,
            SockDiagMessage::InetRequest(InetRequest {
                family,
                protocol,
                extensions: ExtensionFlags::empty(),
                states: StateFlags::from_bits_retain(q.states),
                socket_id: if family == AF_INET {
                    SocketId::new_v4()
                } else {
                    SocketId::new_v6()
                },
            })
            .into(),
        );
        msg.finalize();
        let mut req = vec![0u8; msg.buffer_len()];
        msg.serialize(&mut req);
        if let Some(port) = q.port {
            let bc = port_bytecode(port);
            let nla_len = (4 + bc.len()) as u16;
            req.extend_from_slice(&nla_len.to_ne_bytes());
            req.extend_from_slice(&INET_DIAG_REQ_BYTECODE.to_ne_bytes());
            req.extend_from_slice(&bc);
            let total = req.len() as u32;
            req[..4].copy_from_slice(&total.to_ne_bytes());
        }
        self.sock.send(&req, 0)?;

        loop {
            let n = self.sock.recv(&mut &mut self.buf[..], 0)?;
            let mut off = 0;
            while off < n {
                let msg = NetlinkMessage::<SockDiagMessage>::deserialize(&self.buf[off..n])
                    .map_err(|e| std::io::Error::other(format!("sock_diag reply: {e}")))?;
                let len = msg.header.length as usize;
                match msg.payload {
                    NetlinkPayload::Done(_) => return Ok(()),
                    NetlinkPayload::Error(e) => {
                        return Err(e
                            .code
                            .map(|c| std::io::Error::from_raw_os_error(-c.get()))
                            .unwrap_or_else(|| std::io::Error::other("sock_diag error")));
                    }
                    NetlinkPayload::InnerMessage(SockDiagMessage::InetResponse(r)) => {
                        let h = &r.header;
                        let v6only = r.nlas.iter().find_map(|n| match n {
                            Nla::SkV6Only(b) => Some(*b),
                            _ => None,
                        });
                        let id = &h.socket_id;
                        out.push(KernelSock {
                            proto: q.proto,
                            state: h.state,
                            addr: id.source_address,
                            port: id.source_port,
                            remote: (id.destination_port != 0)
                                .then_some((id.destination_address, id.destination_port)),
                            ifindex: id.interface_id,
                            cookie: cookie_u64(id.cookie),
                            uid: h.uid,
                            inode: h.inode as u64,
                            v6only,
                        });
                    }
                    _ => {}
                }
                if len == 0 {
                    break;
                }
                off += len;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_filter_is_two_ops_that_accept_only_the_port() {
        let bc = port_bytecode(0x1234);
        assert_eq!(bc.len(), 16);
        assert_eq!(bc[0], INET_DIAG_BC_S_GE);
        assert_eq!(u16::from_ne_bytes([bc[6], bc[7]]), 0x1234);
        assert_eq!(bc[8], INET_DIAG_BC_S_LE);
        // A mismatch jumps 4 bytes past the end: reject.
        assert_eq!(u16::from_ne_bytes([bc[2], bc[3]]) as usize, 16 + 4);
        assert_eq!(8 + u16::from_ne_bytes([bc[10], bc[11]]) as usize, 16 + 4);
    }

    #[test]
    fn cookie_is_low_word_first() {
        let mut c = [0u8; 8];
        c[..4].copy_from_slice(&1u32.to_ne_bytes());
        c[4..].copy_from_slice(&2u32.to_ne_bytes());
        assert_eq!(cookie_u64(c), (2 << 32) | 1);
    }
}
