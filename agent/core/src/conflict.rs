//! Linux's bind-conflict rules, as the kernel applies them to an explicit
//! bind (`inet_csk_bind_conflict` with relax, `udp_lib_lport_inuse`,
//! `inet_rcv_saddr_equal` with wildcards), so that a failed bind is blamed
//! on the sockets that really block it and on no other.
//!
//! Pure: no I/O, no platform code. The holder table feeds it sockets.

use std::net::IpAddr;

use serde::Serialize;

use crate::event::Proto;

pub mod winsock;

/// Which platform's rules judge a failed bind.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RuleSet {
    /// This module's rules: the Linux kernel's.
    Linux,
    /// [`winsock`]: Windows's socket-sharing table and http.sys.
    Windows,
}

impl Default for RuleSet {
    fn default() -> Self {
        Self::NATIVE
    }
}

impl RuleSet {
    /// The rules of the platform bindwatch was built for.
    pub const NATIVE: Self = if cfg!(windows) {
        Self::Windows
    } else {
        Self::Linux
    };
}

/// What the conflict rules need to know of a socket.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SockSpec {
    /// Network-namespace cookie; None when unknown (then not compared).
    pub netns: Option<u64>,
    pub proto: Proto,
    pub addr: IpAddr,
    pub port: u16,
    pub v6only: bool,
    pub reuseaddr: bool,
    pub reuseport: bool,
    /// Effective uid of the socket's creator.
    pub uid: u32,
    pub bound_ifindex: Option<u32>,
    pub state: SockState,
}

impl SockSpec {
    /// A root-owned socket with no options, in an unknown namespace:
    /// listening for TCP, bound for UDP.
    pub fn new(proto: Proto, addr: IpAddr, port: u16) -> Self {
        Self {
            netns: None,
            proto,
            addr,
            port,
            v6only: false,
            reuseaddr: false,
            reuseport: false,
            uid: 0,
            bound_ifindex: None,
            state: if proto == Proto::Udp {
                SockState::Bound
            } else {
                SockState::Listen
            },
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SockState {
    Listen,
    /// Bound, not listening (a UDP socket, or TCP before listen/connect).
    Bound,
    /// A TCP leftover of a closed connection.
    TimeWait,
    /// A connected TCP socket holding the port (accepted or connected).
    Established,
}

/// How the two addresses overlap.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Overlap {
    /// The same address.
    Exact,
    /// The holder is bound to the wildcard of the requested family.
    HolderWildcard,
    /// The request is for the wildcard; the holder has a specific address.
    RequestWildcard,
    /// The holder is `[::]` without IPV6_V6ONLY: it also holds every IPv4 address.
    HolderDualStack,
    /// The request is `[::]` without IPV6_V6ONLY; the holder is IPv4.
    RequestDualStack,
}

/// Why a holder blocks a bind: the machine-readable reason code.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reason {
    SameAddress,
    WildcardHolder,
    WildcardRequest,
    DualStackHolder,
    DualStackRequest,
    /// One socket set SO_REUSEPORT and the other did not.
    ReusePortMismatch,
    /// Both set SO_REUSEPORT, under different users.
    ReusePortOtherUser,
    /// A closed connection's TIME_WAIT leftover, and the new socket (or the
    /// old one) lacks SO_REUSEADDR.
    TimeWait,
    /// An open connection (accepted from an old listener, or connected)
    /// still uses the port.
    Connection,
    /// An outbound connection (or its TIME_WAIT) was given the port by the
    /// kernel: it lies inside the namespace's ephemeral range, unreserved.
    EphemeralPort,
    /// Windows: the holder set SO_EXCLUSIVEADDRUSE.
    ExclusiveHolder,
    /// Windows: the new socket set SO_EXCLUSIVEADDRUSE, which no other
    /// socket on the address may share.
    ExclusiveRequest,
    /// Windows: the same address, and SO_REUSEADDR not set on both sockets.
    ReuseAddrNotShared,
    /// Windows: enhanced socket security refuses a socket of another
    /// account on an address the holder has (WSAEACCES).
    OtherAccount,
    /// Windows: http.sys (PID 4) listens on the address for IIS and the
    /// other URL registrations of the port.
    HttpSys,
}

impl Serialize for Reason {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.code())
    }
}

impl Reason {
    pub fn code(self) -> &'static str {
        match self {
            Self::SameAddress => "same_address",
            Self::WildcardHolder => "wildcard_holder",
            Self::WildcardRequest => "wildcard_request",
            Self::DualStackHolder => "dual_stack_holder",
            Self::DualStackRequest => "dual_stack_request",
            Self::ReusePortMismatch => "reuseport_mismatch",
            Self::ReusePortOtherUser => "reuseport_other_user",
            Self::TimeWait => "time_wait",
            Self::Connection => "connection",
            Self::EphemeralPort => "ephemeral_port",
            Self::ExclusiveHolder => "exclusive_holder",
            Self::ExclusiveRequest => "exclusive_request",
            Self::ReuseAddrNotShared => "reuseaddr_not_shared",
            Self::OtherAccount => "other_account",
            Self::HttpSys => "http_sys",
        }
    }

    /// One line for people, about this holder and this request.
    pub fn explain(self, req: &SockSpec, holder: &SockSpec) -> String {
        let h = crate::event::endpoint(holder.addr, holder.port);
        let r = crate::event::endpoint(req.addr, req.port);
        match self {
            Self::SameAddress => format!("{h} is already bound by the holder"),
            Self::WildcardHolder => format!(
                "the holder is bound to {h}, the wildcard, which covers every {} address including {r}",
                family(holder.addr)
            ),
            Self::WildcardRequest => format!(
                "{r} asks for every {} address on the port, and the holder already has {h}",
                family(req.addr)
            ),
            Self::DualStackHolder => format!(
                "the holder is bound to {h} without IPV6_V6ONLY, so it also holds every IPv4 address on port {}",
                holder.port
            ),
            Self::DualStackRequest => {
                format!("{r} without IPV6_V6ONLY asks for IPv4 too, and the holder has {h}")
            }
            Self::ReusePortMismatch => format!(
                "SO_REUSEPORT shares {h} only when every socket sets it; here {} did not",
                if req.reuseport {
                    "the holder"
                } else {
                    "the new socket"
                }
            ),
            Self::ReusePortOtherUser => format!(
                "both sockets set SO_REUSEPORT on {h}, but it shares a port only between sockets of one user (holder uid {}, new socket uid {})",
                holder.uid, req.uid
            ),
            Self::TimeWait => format!(
                "a closed connection on {h} is in TIME_WAIT, and SO_REUSEADDR is not set on both sockets"
            ),
            Self::Connection => format!(
                "an open connection on {h} still uses the port, and SO_REUSEADDR is not set on both sockets"
            ),
            Self::EphemeralPort => format!(
                "an outbound connection was given {h} as its source port by the kernel, which covers {r}"
            ),
            Self::ExclusiveHolder => format!(
                "the holder of {h} set SO_EXCLUSIVEADDRUSE: no other socket may bind an address it covers, {r} included"
            ),
            Self::ExclusiveRequest => format!(
                "the new socket asks for {r} with SO_EXCLUSIVEADDRUSE, which it cannot have while the holder has {h}"
            ),
            Self::ReuseAddrNotShared => format!(
                "{h} is already bound by the holder; Windows shares an address only when both sockets set SO_REUSEADDR"
            ),
            Self::OtherAccount => format!(
                "the holder of {h} runs under another account, and Windows's socket security refuses {r} to it (WSAEACCES)"
            ),
            Self::HttpSys => format!("http.sys listens on {h}, which covers {r}"),
        }
    }

    /// What to change.
    pub fn hint(self) -> &'static str {
        match self {
            Self::SameAddress => {
                "stop the holder, or move one of the two to another port or address"
            }
            Self::WildcardHolder => {
                "bind the holder to the specific addresses it needs instead of the wildcard \
                 (nginx: `listen ADDRESS:PORT`; IIS/http.sys: an iplisten entry), then the other \
                 address is free"
            }
            Self::WildcardRequest => {
                "bind the new server to its specific address, or stop the holder of the other address"
            }
            Self::DualStackHolder => {
                "set IPV6_V6ONLY on the holder (nginx: `listen [::]:PORT ipv6only=on`), or bind it to \
                 the addresses it needs"
            }
            Self::DualStackRequest => {
                "set IPV6_V6ONLY on the new socket to take IPv6 only, or stop the IPv4 holder"
            }
            Self::ReusePortMismatch => "set SO_REUSEPORT on every socket that shares the port",
            Self::ReusePortOtherUser => {
                "run every process that shares the port with SO_REUSEPORT under the same user"
            }
            Self::TimeWait => {
                "set SO_REUSEADDR on the server's listening socket (most servers do); TIME_WAIT \
                 ends by itself within 60 s"
            }
            Self::Connection => {
                "set SO_REUSEADDR on the server's listening socket, or wait for the old \
                 connections to close"
            }
            Self::EphemeralPort => {
                "reserve the port (net.ipv4.ip_local_reserved_ports) so the kernel never hands \
                 it to an outbound connection, or move the service out of \
                 net.ipv4.ip_local_port_range"
            }
            Self::ExclusiveHolder => {
                "stop the holder or bind it to the addresses it needs; SO_EXCLUSIVEADDRUSE \
                 keeps every other socket off what it covers"
            }
            Self::ExclusiveRequest => {
                "bind without SO_EXCLUSIVEADDRUSE to a free address, or stop the holder first"
            }
            Self::ReuseAddrNotShared => {
                "stop the holder, or move one of the two to another port or address"
            }
            Self::OtherAccount => {
                "run both under the same account, or give each its own address or port"
            }
            Self::HttpSys => {
                "add an iplisten entry for each address IIS needs (`netsh http add iplisten \
                 ipaddress=ADDRESS`, then `net stop http /y` and `net start w3svc`): http.sys \
                 then leaves the other addresses free"
            }
        }
    }
}

fn family(a: IpAddr) -> &'static str {
    if a.is_ipv4() { "IPv4" } else { "IPv6" }
}

/// The IPv4 address an IPv6 socket answers for: its v4-mapped address.
fn mapped_v4(a: IpAddr) -> Option<std::net::Ipv4Addr> {
    match a {
        IpAddr::V6(v6) => v6.to_ipv4_mapped(),
        IpAddr::V4(v4) => Some(v4),
    }
}

/// Whether two sockets' addresses overlap, as `inet_rcv_saddr_equal` with
/// wildcards decides.
pub fn overlap(req: &SockSpec, holder: &SockSpec) -> Option<Overlap> {
    match (req.addr, holder.addr) {
        (IpAddr::V4(r), IpAddr::V4(h)) => {
            if r == h {
                Some(Overlap::Exact)
            } else if h.is_unspecified() {
                Some(Overlap::HolderWildcard)
            } else if r.is_unspecified() {
                Some(Overlap::RequestWildcard)
            } else {
                None
            }
        }
        (IpAddr::V4(r), IpAddr::V6(h)) => {
            if holder.v6only {
                None
            } else if h.is_unspecified() {
                Some(Overlap::HolderDualStack)
            } else {
                match mapped_v4(holder.addr) {
                    Some(m) if m == r => Some(Overlap::Exact),
                    Some(_) if r.is_unspecified() => Some(Overlap::RequestWildcard),
                    _ => None,
                }
            }
        }
        (IpAddr::V6(r), IpAddr::V4(h)) => {
            if req.v6only {
                None
            } else if r.is_unspecified() {
                Some(Overlap::RequestDualStack)
            } else {
                match mapped_v4(req.addr) {
                    Some(m) if m == h => Some(Overlap::Exact),
                    Some(_) if h.is_unspecified() => Some(Overlap::HolderWildcard),
                    _ => None,
                }
            }
        }
        (IpAddr::V6(r), IpAddr::V6(h)) => {
            if r == h {
                Some(Overlap::Exact)
            } else if h.is_unspecified() {
                // [::] v6only holder does not cover a v4-mapped request.
                if holder.v6only && r.to_ipv4_mapped().is_some() {
                    None
                } else {
                    Some(Overlap::HolderWildcard)
                }
            } else if r.is_unspecified() {
                if req.v6only && h.to_ipv4_mapped().is_some() {
                    None
                } else {
                    Some(Overlap::RequestWildcard)
                }
            } else {
                None
            }
        }
    }
}

/// Does `holder` block `req` from binding, and why? None when it does not.
pub fn conflict(req: &SockSpec, holder: &SockSpec) -> Option<Reason> {
    if req.proto != holder.proto || req.port != holder.port {
        return None;
    }
    if let (Some(a), Some(b)) = (req.netns, holder.netns)
        && a != b
    {
        return None;
    }
    // Sockets bound to different devices never conflict.
    if let (Some(a), Some(b)) = (req.bound_ifindex, holder.bound_ifindex)
        && a != b
    {
        return None;
    }
    let ov = overlap(req, holder)?;
    let same_user_reuseport = req.reuseport
        && holder.reuseport
        && (holder.state == SockState::TimeWait || req.uid == holder.uid);
    match req.proto {
        Proto::Udp => {
            if req.reuseaddr && holder.reuseaddr {
                return None;
            }
        }
        _ => {
            if req.reuseaddr && holder.reuseaddr && holder.state != SockState::Listen {
                return None;
            }
        }
    }
    if same_user_reuseport {
        return None;
    }
    Some(if holder.state == SockState::TimeWait {
        Reason::TimeWait
    } else if holder.state == SockState::Established {
        Reason::Connection
    } else if req.reuseport && holder.reuseport {
        Reason::ReusePortOtherUser
    } else if req.reuseport != holder.reuseport && (req.reuseport || holder.reuseport) {
        Reason::ReusePortMismatch
    } else {
        // SO_REUSEADDR on both sides never shares a TCP listener; the
        // overlap, not the flag, is what the operator must change.
        match ov {
            Overlap::Exact => Reason::SameAddress,
            Overlap::HolderWildcard => Reason::WildcardHolder,
            Overlap::RequestWildcard => Reason::WildcardRequest,
            Overlap::HolderDualStack => Reason::DualStackHolder,
            Overlap::RequestDualStack => Reason::DualStackRequest,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(addr: &str, port: u16) -> SockSpec {
        SockSpec {
            netns: Some(1),
            ..SockSpec::new(Proto::Tcp, addr.parse().unwrap(), port)
        }
    }

    fn udp(addr: &str, port: u16) -> SockSpec {
        SockSpec {
            netns: Some(1),
            ..SockSpec::new(Proto::Udp, addr.parse().unwrap(), port)
        }
    }

    /// (case, request, holder, expected reason)
    fn cases() -> Vec<(&'static str, SockSpec, SockSpec, Option<Reason>)> {
        let mut v6only = s("::", 443);
        v6only.v6only = true;
        let mut rp_a = s("0.0.0.0", 8080);
        rp_a.reuseport = true;
        let mut rp_b = rp_a.clone();
        rp_b.uid = 1000;
        let mut ra = s("0.0.0.0", 8080);
        ra.reuseaddr = true;
        let mut tw = ra.clone();
        tw.state = SockState::TimeWait;
        let mut tw_plain = s("0.0.0.0", 8080);
        tw_plain.state = SockState::TimeWait;
        let mut other_ns = s("0.0.0.0", 80);
        other_ns.netns = Some(2);
        let mut dev1 = udp("0.0.0.0", 67);
        dev1.bound_ifindex = Some(1);
        let mut dev2 = dev1.clone();
        dev2.bound_ifindex = Some(2);
        let mut udp_ra = udp("0.0.0.0", 5353);
        udp_ra.reuseaddr = true;
        vec![
            (
                "story 1: wildcard holder covers a specific address",
                s("10.0.0.6", 80),
                s("0.0.0.0", 80),
                Some(Reason::WildcardHolder),
            ),
            (
                "wildcard request blocked by a specific holder",
                s("0.0.0.0", 80),
                s("10.0.0.6", 80),
                Some(Reason::WildcardRequest),
            ),
            (
                "different specific addresses coexist",
                s("10.0.0.6", 80),
                s("10.0.0.7", 80),
                None,
            ),
            (
                "story 2: dual-stack [::] holder covers IPv4",
                s("0.0.0.0", 443),
                s("::", 443),
                Some(Reason::DualStackHolder),
            ),
            (
                "story 2: IPV6_V6ONLY holder leaves IPv4 free",
                s("0.0.0.0", 443),
                v6only.clone(),
                None,
            ),
            (
                "dual-stack request blocked by an IPv4 holder",
                s("::", 443),
                s("0.0.0.0", 443),
                Some(Reason::DualStackRequest),
            ),
            (
                "v6only request ignores IPv4 holders",
                v6only.clone(),
                s("0.0.0.0", 443),
                None,
            ),
            (
                "story 3: same address",
                s("127.0.0.1", 8443),
                s("127.0.0.1", 8443),
                Some(Reason::SameAddress),
            ),
            ("other port", s("0.0.0.0", 81), s("0.0.0.0", 80), None),
            ("other protocol", udp("0.0.0.0", 80), s("0.0.0.0", 80), None),
            (
                "story 8: other namespace never blamed",
                s("0.0.0.0", 80),
                other_ns,
                None,
            ),
            (
                "story 9: UDP resolver on 127.0.0.53 blocks 0.0.0.0:53",
                udp("0.0.0.0", 53),
                udp("127.0.0.53", 53),
                Some(Reason::WildcardRequest),
            ),
            (
                "story 10: SO_REUSEPORT on both, same user",
                rp_a.clone(),
                rp_a.clone(),
                None,
            ),
            (
                "story 10: SO_REUSEPORT on one side only",
                rp_a.clone(),
                s("0.0.0.0", 8080),
                Some(Reason::ReusePortMismatch),
            ),
            (
                "story 10: SO_REUSEPORT under different users",
                rp_a.clone(),
                rp_b.clone(),
                Some(Reason::ReusePortOtherUser),
            ),
            (
                "SO_REUSEADDR does not share a TCP listener",
                ra.clone(),
                ra.clone(),
                Some(Reason::SameAddress),
            ),
            (
                "SO_REUSEADDR on both passes a TIME_WAIT leftover",
                ra.clone(),
                tw,
                None,
            ),
            (
                "without SO_REUSEADDR a TIME_WAIT leftover blocks",
                s("0.0.0.0", 8080),
                tw_plain,
                Some(Reason::TimeWait),
            ),
            (
                "sockets on different devices coexist",
                dev1.clone(),
                dev2,
                None,
            ),
            (
                "UDP with SO_REUSEADDR on both shares",
                udp_ra.clone(),
                udp_ra,
                None,
            ),
            (
                "v4-mapped request meets its IPv4 holder",
                s("::ffff:10.0.0.6", 80),
                s("10.0.0.6", 80),
                Some(Reason::SameAddress),
            ),
        ]
    }

    #[test]
    fn conflict_rules_table() {
        for (name, req, holder, want) in cases() {
            assert_eq!(conflict(&req, &holder), want, "{name}");
        }
    }

    #[test]
    fn every_reason_explains_itself() {
        for (name, req, holder, want) in cases() {
            if let Some(r) = want {
                let line = r.explain(&req, &holder);
                assert!(line.contains(&holder.port.to_string()), "{name}: {line}");
                assert!(!r.hint().is_empty());
                assert!(!r.code().is_empty());
            }
        }
        let line = Reason::WildcardHolder.explain(&s("10.0.0.6", 80), &s("0.0.0.0", 80));
        assert_eq!(
            line,
            "the holder is bound to 0.0.0.0:80, the wildcard, which covers every IPv4 address including 10.0.0.6:80"
        );
        assert!(Reason::DualStackHolder.hint().contains("IPV6_V6ONLY"));
    }

    /// Never a holder from another namespace, never one whose address does
    /// not overlap, whatever the flags.
    #[test]
    fn never_blames_other_namespaces_or_disjoint_addresses() {
        let addrs = [
            "0.0.0.0",
            "10.0.0.6",
            "10.0.0.7",
            "::",
            "::1",
            "::ffff:10.0.0.6",
            "2001:db8::1",
        ];
        let mut n = 0;
        for ra in addrs {
            for ha in addrs {
                for bits in 0u32..64 {
                    let mut req = s(ra, 80);
                    let mut holder = s(ha, 80);
                    req.reuseaddr = bits & 1 != 0;
                    req.reuseport = bits & 2 != 0;
                    holder.reuseaddr = bits & 4 != 0;
                    holder.reuseport = bits & 8 != 0;
                    req.v6only = bits & 16 != 0;
                    holder.v6only = bits & 32 != 0;
                    let hit = conflict(&req, &holder);
                    if hit.is_some() {
                        assert!(overlap(&req, &holder).is_some(), "{ra} vs {ha}");
                    }
                    holder.netns = Some(99);
                    assert_eq!(
                        conflict(&req, &holder),
                        None,
                        "{ra} vs {ha} across namespaces"
                    );
                    n += 1;
                }
            }
        }
        assert_eq!(n, 7 * 7 * 64);
    }
}
