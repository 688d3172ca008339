//! Typed socket events: what the probes saw, in the agent's own terms.
//!
//! Every later stage (trace output, holder table, metrics, timeline) consumes
//! [`Event`]; none of them sees a [`RawEvent`].

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use bindwatch_common::{AF_INET6, IPPROTO_TCP, IPPROTO_UDP, Kind, RawEvent, flags};
use serde::Serialize;

use crate::clock::Clock;
use crate::errno;

/// Version of the JSON event schema (`bindwatch trace --json`, the JSON-lines
/// export). Bump on any incompatible change of [`Event`]'s serialised form.
pub const JSON_SCHEMA_VERSION: u32 = 1;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    Bind,
    Listen,
    ListenStop,
    Release,
}

impl EventKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Bind => "bind",
            Self::Listen => "listen",
            Self::ListenStop => "listen_stop",
            Self::Release => "release",
        }
    }
}

#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, serde::Deserialize, PartialOrd, Ord,
)]
#[serde(rename_all = "snake_case")]
pub enum Proto {
    Tcp,
    Udp,
    /// The bind failed before the socket was examined, or another protocol.
    Unknown,
}

impl Proto {
    pub fn from_ip_proto(p: u8) -> Self {
        match p {
            IPPROTO_TCP => Self::Tcp,
            IPPROTO_UDP => Self::Udp,
            _ => Self::Unknown,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Tcp => "tcp",
            Self::Udp => "udp",
            Self::Unknown => "?",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s.to_ascii_lowercase().as_str() {
            "tcp" => Some(Self::Tcp),
            "udp" => Some(Self::Udp),
            _ => None,
        }
    }
}

impl fmt::Display for Proto {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Socket options the probe could read at bind time.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct SockOptions {
    pub reuseaddr: bool,
    pub reuseport: bool,
    /// SO_BINDTODEVICE / SO_BINDTOIFINDEX, as an interface index.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bound_ifindex: Option<u32>,
    /// The source could not read the options (ETW): the flags above are
    /// unknown, not off.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub unread: bool,
}

impl fmt::Display for SockOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts = Vec::new();
        if self.reuseaddr {
            parts.push("reuseaddr".to_owned());
        }
        if self.reuseport {
            parts.push("reuseport".to_owned());
        }
        if let Some(i) = self.bound_ifindex {
            parts.push(format!("dev={i}"));
        }
        f.write_str(&parts.join(","))
    }
}

/// One socket event.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Event {
    pub schema: u32,
    /// Unix time in nanoseconds.
    pub time_ns: u64,
    pub kind: EventKind,
    pub pid: u32,
    pub tid: u32,
    pub uid: u32,
    pub gid: u32,
    pub comm: String,
    pub cgroup_id: u64,
    /// The network namespace's cookie (`SO_NETNS_COOKIE`); None when the
    /// hook that saw the event cannot tell.
    pub netns_cookie: Option<u64>,
    /// The socket's cookie, as sock_diag reports it; None when unknown.
    pub sock_cookie: Option<u64>,
    pub proto: Proto,
    pub addr: IpAddr,
    /// The port asked for (bind) or held (listen, stop, release).
    pub port: u16,
    /// The port the socket holds after a successful bind (the kernel's choice
    /// for a port-0 bind); None when the bind failed.
    pub bound_port: Option<u16>,
    /// 0 on success, else the errno.
    pub errno: i32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<&'static str>,
    pub options: SockOptions,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub backlog: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fd: Option<i32>,
    /// The TCP state at release (10 = still listening); None for other kinds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub state: Option<u8>,
    /// Kernel socket address: joins events of one socket across hooks.
    #[serde(skip)]
    pub skaddr: u64,
}

fn nonzero(v: u64) -> Option<u64> {
    (v != 0).then_some(v)
}

fn comm_string(comm: &[u8; 16]) -> String {
    let end = comm.iter().position(|&b| b == 0).unwrap_or(comm.len());
    String::from_utf8_lossy(&comm[..end]).into_owned()
}

impl Event {
    /// Turns a validated raw record into an event.
    pub fn from_raw(raw: &RawEvent, clock: &Clock) -> Self {
        // `from_bytes` accepted only known kinds; the match is exhaustive.
        let kind = match raw.kind().unwrap_or(Kind::Release) {
            Kind::Bind => EventKind::Bind,
            Kind::Listen => EventKind::Listen,
            Kind::ListenStop => EventKind::ListenStop,
            Kind::Release => EventKind::Release,
        };
        let addr = if raw.family == AF_INET6 {
            IpAddr::V6(Ipv6Addr::from(raw.addr))
        } else {
            IpAddr::V4(Ipv4Addr::new(
                raw.addr[0],
                raw.addr[1],
                raw.addr[2],
                raw.addr[3],
            ))
        };
        // i32::MIN has no negation: a garbage return, kept as an unknown errno.
        let errno = if raw.ret < 0 {
            raw.ret.saturating_neg()
        } else {
            0
        };
        let sock_info = raw.flags & flags::SOCK_INFO != 0 || kind != EventKind::Bind;
        let proto = if sock_info {
            Proto::from_ip_proto(raw.protocol)
        } else {
            Proto::Unknown
        };
        let bound_port = match kind {
            EventKind::Bind if raw.flags & flags::BOUND != 0 && errno == 0 => Some(raw.bound_port),
            EventKind::Bind => None,
            _ => Some(raw.bound_port),
        };
        let options = SockOptions {
            reuseaddr: raw.flags & flags::REUSEADDR != 0,
            reuseport: raw.flags & flags::REUSEPORT != 0,
            bound_ifindex: (raw.bound_ifindex != 0).then_some(raw.bound_ifindex),
            unread: raw.flags & flags::OPTIONS_UNREAD != 0,
        };
        let syscall = matches!(kind, EventKind::Bind | EventKind::Listen) && raw.fd >= 0;
        Self {
            schema: JSON_SCHEMA_VERSION,
            time_ns: clock.unix_ns(raw.ts_ns),
            kind,
            pid: raw.pid,
            tid: raw.tid,
            uid: raw.uid,
            gid: raw.gid,
            comm: comm_string(&raw.comm),
            cgroup_id: raw.cgroup_id,
            netns_cookie: nonzero(raw.netns_cookie),
            sock_cookie: nonzero(raw.sock_cookie),
            proto,
            addr,
            port: raw.port,
            bound_port,
            errno,
            error: errno::name(errno),
            options,
            backlog: (kind == EventKind::Listen).then_some(raw.backlog),
            fd: syscall.then_some(raw.fd),
            state: (kind == EventKind::Release && raw.protocol == IPPROTO_TCP).then_some(raw.state),
            skaddr: raw.skaddr,
        }
    }

    pub fn failed(&self) -> bool {
        self.errno != 0
    }

    /// The port the event is about: the bound port when the kernel chose one.
    pub fn effective_port(&self) -> u16 {
        match self.bound_port {
            Some(p) if p != 0 => p,
            _ => self.port,
        }
    }

    /// `addr:port`, with brackets for IPv6.
    pub fn endpoint(&self) -> String {
        endpoint(self.addr, self.effective_port())
    }

    /// The result as people read it: `ok` or the errno name.
    pub fn result_str(&self) -> String {
        if self.errno == 0 {
            "ok".to_owned()
        } else {
            errno::display(self.errno)
        }
    }
}

pub fn endpoint(addr: IpAddr, port: u16) -> String {
    match addr {
        IpAddr::V4(a) => format!("{a}:{port}"),
        IpAddr::V6(a) => format!("[{a}]:{port}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bindwatch_common::{AF_INET, LAYOUT_VERSION};

    fn raw_bind() -> RawEvent {
        let mut r = RawEvent::zeroed();
        r.kind = bindwatch_common::kind::BIND;
        r.family = AF_INET;
        r.protocol = IPPROTO_TCP;
        r.flags = flags::SOCK_INFO | flags::REUSEADDR;
        r.addr[..4].copy_from_slice(&[10, 0, 0, 6]);
        r.port = 80;
        r.ret = -98;
        r.pid = 42;
        r.fd = 3;
        r.netns_cookie = 7;
        r.comm[..5].copy_from_slice(b"nginx");
        r.version = LAYOUT_VERSION;
        r
    }

    #[test]
    fn failed_bind_keeps_the_requested_address() {
        let ev = Event::from_raw(&raw_bind(), &Clock::with_offset_ns(0));
        assert_eq!(ev.kind, EventKind::Bind);
        assert_eq!(ev.endpoint(), "10.0.0.6:80");
        assert_eq!(ev.error, Some("EADDRINUSE"));
        assert_eq!(ev.bound_port, None);
        assert_eq!(ev.comm, "nginx");
        assert_eq!(ev.proto, Proto::Tcp);
        assert!(ev.options.reuseaddr && !ev.options.reuseport);
        assert_eq!(ev.netns_cookie, Some(7));
        assert_eq!(ev.sock_cookie, None);
    }

    #[test]
    fn port_zero_bind_reports_the_kernel_port() {
        let mut r = raw_bind();
        r.ret = 0;
        r.port = 0;
        r.bound_port = 40123;
        r.flags |= flags::BOUND;
        let ev = Event::from_raw(&r, &Clock::with_offset_ns(0));
        assert_eq!(ev.bound_port, Some(40123));
        assert_eq!(ev.effective_port(), 40123);
        assert_eq!(ev.result_str(), "ok");
    }

    #[test]
    fn bind_without_socket_info_has_unknown_protocol() {
        let mut r = raw_bind();
        r.flags = 0;
        r.ret = -9;
        let ev = Event::from_raw(&r, &Clock::with_offset_ns(0));
        assert_eq!(ev.proto, Proto::Unknown);
        assert_eq!(ev.error, Some("EBADF"));
    }

    /// Found by fuzzing with overflow checks: a return of i32::MIN has no
    /// negation. It is a failure with an errno nobody knows, not a panic.
    #[test]
    fn the_most_negative_return_is_an_unknown_errno() {
        let mut r = raw_bind();
        r.ret = i32::MIN;
        let ev = Event::from_raw(&r, &Clock::with_offset_ns(0));
        assert_eq!(ev.errno, i32::MAX);
        assert_eq!(ev.error, None);
        assert_ne!(ev.result_str(), "ok");
    }

    #[test]
    fn ipv6_endpoint_is_bracketed() {
        let mut r = raw_bind();
        r.family = AF_INET6;
        r.addr = [0; 16];
        r.port = 443;
        let ev = Event::from_raw(&r, &Clock::with_offset_ns(0));
        assert_eq!(ev.endpoint(), "[::]:443");
    }

    #[test]
    fn json_names_the_fields() {
        let ev = Event::from_raw(&raw_bind(), &Clock::with_offset_ns(1_000));
        let v: serde_json::Value = serde_json::to_value(&ev).unwrap();
        assert_eq!(v["kind"], "bind");
        assert_eq!(v["error"], "EADDRINUSE");
        assert_eq!(v["addr"], "10.0.0.6");
        assert_eq!(v["schema"], JSON_SCHEMA_VERSION);
        assert_eq!(v["time_ns"], 1_000);
        assert!(v.get("skaddr").is_none());
    }
}
