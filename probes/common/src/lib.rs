//! The wire layout between bindwatch's kernel probes and its agent.
//!
//! This crate is `no_std` and has no dependencies: the probes compile it for
//! `bpfel-unknown-none`, the agent for the host. It knows nothing of tokio,
//! serde or Prometheus. With the `user` feature (the agent's, on Linux) it
//! also says that its map types are plain old data for aya, beside the
//! types themselves. Whatever changes the byte layout of [`RawEvent`] or
//! the meaning of a field must bump [`LAYOUT_VERSION`]; the agent refuses a
//! probe object built against another version.
#![no_std]

/// Version of the event layout. Stored in the probe object as the global
/// [`LAYOUT_SYMBOL`] and in every event.
pub const LAYOUT_VERSION: u16 = 2;

/// Name of the `u16` global in the probe object that holds [`LAYOUT_VERSION`].
pub const LAYOUT_SYMBOL: &str = "BINDWATCH_LAYOUT_VERSION";

/// Map and program names, shared so that a rename breaks the build, not the load.
pub mod names {
    pub const EVENTS: &str = "EVENTS";
    pub const LOST: &str = "LOST";
    pub const ACCEPTS: &str = "ACCEPTS";
    pub const BOUND: &str = "BOUND";
    pub const CONFIG: &str = "CONFIG";
    pub const SYS_ENTER_BIND: &str = "sys_enter_bind";
    pub const SYS_EXIT_BIND: &str = "sys_exit_bind";
    pub const BIND4: &str = "bind4";
    pub const BIND6: &str = "bind6";
    pub const POST_BIND4: &str = "post_bind4";
    pub const POST_BIND6: &str = "post_bind6";
    pub const SYS_ENTER_LISTEN: &str = "sys_enter_listen";
    pub const SYS_EXIT_LISTEN: &str = "sys_exit_listen";
    pub const SOCK_SET_STATE: &str = "inet_sock_set_state";
    pub const SOCK_RELEASE: &str = "sock_release";
    /// The TCP lifecycle from sock_ops callbacks, where the kernel has them:
    /// in place of `SOCK_SET_STATE`.
    pub const SOCK_OPS: &str = "tcp_lifecycle";
    // The fexit probe set: the bind begun at the cgroup bind hook, ended
    // by trampolines on the kernel's bind; a listen ended by trampolines
    // on the kernel's listen (begun at its address, or by MPTCP's entry).
    pub const BIND4_BEGIN: &str = "bind4_begin";
    pub const BIND6_BEGIN: &str = "bind6_begin";
    pub const FEXIT_INET_BIND: &str = "fexit_inet_bind";
    pub const FEXIT_INET6_BIND: &str = "fexit_inet6_bind";
    pub const FEXIT_MPTCP_BIND: &str = "fexit_mptcp_bind";
    pub const FEXIT_INET_LISTEN: &str = "fexit_inet_listen";
    pub const FENTRY_MPTCP_LISTEN: &str = "fentry_mptcp_listen";
    pub const FEXIT_MPTCP_LISTEN: &str = "fexit_mptcp_listen";
}

/// Slots of the `CONFIG` array: switches the agent sets after attaching.
pub mod config {
    /// Non-zero when the sock_ops lifecycle is attached: it drops a socket
    /// from `BOUND` when the socket connects, so the release hook may skip
    /// every TCP socket that is neither listening nor closed (accepted and
    /// client connections, the bulk of all closes) without a lookup.
    pub const RELEASE_SKIPS_CONNECTIONS: u32 = 0;
    /// Non-zero with the fexit set: a listen's address (sock_ops listen
    /// callback or state tracepoint) begins the listen's pending slot,
    /// which the exit trampoline ends, instead of reporting a listen it
    /// did not see begin; no entry program runs on `inet_listen`.
    pub const LISTEN_BEGINS_AT_ADDRESS: u32 = 1;
    pub const SLOTS: u32 = 2;
}

/// Slots of the per-CPU `LOST` array: what the probes could not deliver.
pub mod lost {
    /// Events the ring buffer had no room for.
    pub const RINGBUF_FULL: u32 = 0;
    /// Accept counts not kept because the accept map was full.
    pub const ACCEPT_MAP_FULL: u32 = 1;
    /// Syscalls not followed because the per-thread pending map was full.
    pub const PENDING_MAP_FULL: u32 = 2;
    pub const SLOTS: u32 = 3;
}

/// `RawEvent::kind`.
pub mod kind {
    /// A bind(2) on an AF_INET/AF_INET6 socket, with its result.
    pub const BIND: u8 = 1;
    /// A listen(2), with its result; on success the socket is listening.
    pub const LISTEN: u8 = 2;
    /// A TCP listener went from LISTEN to CLOSE.
    pub const LISTEN_STOP: u8 = 3;
    /// A bound, unconnected inet socket was released (closed for the last time).
    pub const RELEASE: u8 = 4;
}

/// `RawEvent::kind` as a type. Every kind the probes write is one of these,
/// and the agent matches them exhaustively: a kind added here is a compile
/// error wherever it is not yet handled.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Bind = kind::BIND,
    Listen = kind::LISTEN,
    ListenStop = kind::LISTEN_STOP,
    Release = kind::RELEASE,
}

impl Kind {
    pub const fn from_u8(v: u8) -> Option<Self> {
        match v {
            kind::BIND => Some(Self::Bind),
            kind::LISTEN => Some(Self::Listen),
            kind::LISTEN_STOP => Some(Self::ListenStop),
            kind::RELEASE => Some(Self::Release),
            _ => None,
        }
    }
}

/// Bits of `RawEvent::flags`.
pub mod flags {
    pub const REUSEADDR: u32 = 1 << 0;
    pub const REUSEPORT: u32 = 1 << 1;
    /// `bound_ifindex` is set (SO_BINDTODEVICE / SO_BINDTOIFINDEX).
    pub const BOUND_DEV: u32 = 1 << 2;
    /// The cgroup bind hook saw this bind: protocol, type, cookies and the
    /// reuse flags are valid. Without it only the syscall's view is known
    /// (the bind failed before the address was examined, e.g. EBADF).
    pub const SOCK_INFO: u32 = 1 << 3;
    /// The kernel assigned the port (`post_bind` ran): `bound_port` is real.
    pub const BOUND: u32 = 1 << 4;
    /// A listen event whose socket address was seen (by the state
    /// tracepoint or the sock_ops listen callback).
    pub const LISTEN_ADDR: u32 = 1 << 5;
}

/// Bits of `BoundSock::flags`.
pub mod bound {
    /// The release hook reports this socket's LISTEN to CLOSE itself: it
    /// was listening before the sock_ops callback could be armed on it (the
    /// agent's start-up seeding sets this when the lifecycle comes from
    /// sock_ops; with the state tracepoint nobody needs it).
    pub const REPORTS_STOP: u8 = 1 << 0;
}

pub const AF_INET: u8 = 2;
pub const AF_INET6: u8 = 10;
pub const IPPROTO_TCP: u8 = 6;
pub const IPPROTO_UDP: u8 = 17;

/// TCP states as the kernel numbers them (include/net/tcp_states.h): the
/// one definition, for the probes (the state tracepoint's `int` fields),
/// the decoder, sock_diag and the timeline.
pub mod tcp_state {
    pub const ESTABLISHED: i32 = 1;
    pub const SYN_RECV: i32 = 3;
    pub const TIME_WAIT: i32 = 6;
    pub const CLOSE: i32 = 7;
    pub const LISTEN: i32 = 10;
    /// Bound, neither listening nor connected (sock_diag dumps it since
    /// Linux 6.9).
    pub const BOUND_INACTIVE: i32 = 13;
}

/// One event as the probes write it into the ring buffer.
///
/// Plain integers only, naturally aligned with explicit padding, so the layout
/// is the same for the BPF and the host target and every byte is written.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RawEvent {
    /// `bpf_ktime_get_ns()`: CLOCK_MONOTONIC nanoseconds.
    pub ts_ns: u64,
    /// `bpf_get_socket_cookie()`; the same value sock_diag reports. 0 if unknown.
    pub sock_cookie: u64,
    /// `bpf_get_netns_cookie()`; 0 if unknown.
    pub netns_cookie: u64,
    pub cgroup_id: u64,
    /// Kernel address of the socket: a join key between hooks, never exported.
    pub skaddr: u64,
    /// Thread-group id (the user-visible pid).
    pub pid: u32,
    pub tid: u32,
    pub uid: u32,
    pub gid: u32,
    /// 0 or a negative errno.
    pub ret: i32,
    /// The file descriptor passed to bind/listen; -1 when not a syscall event.
    pub fd: i32,
    pub backlog: u32,
    /// Bits from [`flags`].
    pub flags: u32,
    pub bound_ifindex: u32,
    /// IPv4 in the first four bytes, network order; IPv6 all sixteen.
    pub addr: [u8; 16],
    /// Requested port, host order.
    pub port: u16,
    /// Port the socket holds after the call (differs for port-0 binds).
    pub bound_port: u16,
    pub kind: u8,
    pub family: u8,
    pub protocol: u8,
    /// SOCK_STREAM = 1, SOCK_DGRAM = 2, ...
    pub sock_type: u8,
    /// TCP state where it matters (release, listen stop).
    pub state: u8,
    pub _pad: u8,
    /// [`LAYOUT_VERSION`] of the probe that wrote it.
    pub version: u16,
    pub comm: [u8; 16],
}

// SAFETY: repr(C), plain integers valid for every bit pattern, padding
// explicit (`_pad`) and zeroed by `zeroed()`.
#[cfg(feature = "user")]
unsafe impl aya::Pod for RawEvent {}
// SAFETY: repr(C), plain integers, padding explicit (`_pad`).
#[cfg(feature = "user")]
unsafe impl aya::Pod for AcceptKey {}
// SAFETY: repr(C), plain integers, padding explicit (`_pad`; 24 bytes, tested).
#[cfg(feature = "user")]
unsafe impl aya::Pod for BoundSock {}

pub const RAW_EVENT_SIZE: usize = core::mem::size_of::<RawEvent>();

/// Why a record from the ring buffer was not accepted as an event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DecodeError {
    /// The record is not `RAW_EVENT_SIZE` bytes long.
    Size { got: usize },
    /// The record was written by a probe with another layout version.
    Version { got: u16 },
    /// `kind` is none of [`kind`]'s values.
    Kind { got: u8 },
    /// `family` is neither AF_INET nor AF_INET6.
    Family { got: u8 },
}

impl core::fmt::Display for DecodeError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::Size { got } => write!(f, "record of {got} bytes, expected {RAW_EVENT_SIZE}"),
            Self::Version { got } => {
                write!(f, "layout version {got}, expected {LAYOUT_VERSION}")
            }
            Self::Kind { got } => write!(f, "unknown event kind {got}"),
            Self::Family { got } => write!(f, "unknown address family {got}"),
        }
    }
}

impl RawEvent {
    /// An all-zero event, the starting point the probes fill in.
    pub const fn zeroed() -> Self {
        Self {
            ts_ns: 0,
            sock_cookie: 0,
            netns_cookie: 0,
            cgroup_id: 0,
            skaddr: 0,
            pid: 0,
            tid: 0,
            uid: 0,
            gid: 0,
            ret: 0,
            fd: -1,
            backlog: 0,
            flags: 0,
            bound_ifindex: 0,
            addr: [0; 16],
            port: 0,
            bound_port: 0,
            kind: 0,
            family: 0,
            protocol: 0,
            sock_type: 0,
            state: 0,
            _pad: 0,
            version: LAYOUT_VERSION,
            comm: [0; 16],
        }
    }

    /// Reads and validates one ring-buffer record. Never panics.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, DecodeError> {
        if bytes.len() != RAW_EVENT_SIZE {
            return Err(DecodeError::Size { got: bytes.len() });
        }
        // SAFETY: the length is checked; RawEvent is plain integers, valid for
        // every bit pattern; read_unaligned does not need alignment.
        let ev: Self = unsafe { core::ptr::read_unaligned(bytes.as_ptr().cast()) };
        if ev.version != LAYOUT_VERSION {
            return Err(DecodeError::Version { got: ev.version });
        }
        if Kind::from_u8(ev.kind).is_none() {
            return Err(DecodeError::Kind { got: ev.kind });
        }
        if ev.family != AF_INET && ev.family != AF_INET6 {
            return Err(DecodeError::Family { got: ev.family });
        }
        Ok(ev)
    }

    /// The event's kind; always `Some` for an event `from_bytes` accepted.
    pub const fn kind(&self) -> Option<Kind> {
        Kind::from_u8(self.kind)
    }

    /// The event's bytes, as the probe would write them (tests and fuzzing).
    pub fn as_bytes(&self) -> &[u8] {
        // SAFETY: repr(C) with explicit padding: every byte is initialised.
        unsafe { core::slice::from_raw_parts((self as *const Self).cast(), RAW_EVENT_SIZE) }
    }
}

/// Value of the `BOUND` map, keyed by socket cookie: the address a socket
/// holds. The release hook cannot read a socket's source address, so the
/// post-bind hook records it here (and the agent seeds it with the sockets
/// that were bound before it started).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BoundSock {
    pub addr: [u8; 16],
    pub port: u16,
    pub family: u8,
    pub protocol: u8,
    /// Bits from [`bound`].
    pub flags: u8,
    pub _pad: [u8; 3],
}

/// Key of the per-CPU accept counter map: completed passive TCP handshakes
/// per local port and family. Neither the state tracepoint nor the sock_ops
/// callback carries a namespace, so the count is per port across namespaces.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct AcceptKey {
    pub port: u16,
    pub family: u8,
    pub _pad: u8,
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;

    #[test]
    fn layout_is_stable() {
        assert_eq!(RAW_EVENT_SIZE, 120);
        assert_eq!(core::mem::align_of::<RawEvent>(), 8);
        assert_eq!(core::mem::offset_of!(RawEvent, addr), 76);
        assert_eq!(core::mem::offset_of!(RawEvent, comm), 104);
        assert_eq!(core::mem::size_of::<AcceptKey>(), 4);
        assert_eq!(core::mem::size_of::<BoundSock>(), 24);
    }

    fn valid() -> RawEvent {
        let mut ev = RawEvent::zeroed();
        ev.kind = kind::BIND;
        ev.family = AF_INET;
        ev
    }

    #[test]
    fn round_trip() {
        let mut ev = valid();
        ev.port = 80;
        ev.ret = -98;
        assert_eq!(RawEvent::from_bytes(ev.as_bytes()), Ok(ev));
    }

    #[test]
    fn short_and_long_records_are_rejected() {
        let ev = valid();
        let bytes = ev.as_bytes();
        assert_eq!(
            RawEvent::from_bytes(&bytes[..10]),
            Err(DecodeError::Size { got: 10 })
        );
        assert_eq!(RawEvent::from_bytes(&[]), Err(DecodeError::Size { got: 0 }));
        let mut long = std::vec::Vec::from(bytes);
        long.push(0);
        assert_eq!(
            RawEvent::from_bytes(&long),
            Err(DecodeError::Size {
                got: RAW_EVENT_SIZE + 1
            })
        );
    }

    #[test]
    fn foreign_version_kind_and_family_are_rejected() {
        let mut ev = valid();
        ev.version = LAYOUT_VERSION + 1;
        assert_eq!(
            RawEvent::from_bytes(ev.as_bytes()),
            Err(DecodeError::Version {
                got: LAYOUT_VERSION + 1
            })
        );
        let mut ev = valid();
        ev.kind = 99;
        assert_eq!(
            RawEvent::from_bytes(ev.as_bytes()),
            Err(DecodeError::Kind { got: 99 })
        );
        let mut ev = valid();
        ev.family = 1;
        assert_eq!(
            RawEvent::from_bytes(ev.as_bytes()),
            Err(DecodeError::Family { got: 1 })
        );
    }
}
