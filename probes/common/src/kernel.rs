//! What the kernel side sees: the event and map value types the probes
//! write, and the numbers they write into them. The probes use this module
//! alone.

use crate::LAYOUT_VERSION;

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
    /// Non-zero when the sock_ops lifecycle is attached (it arms the state
    /// callback on every listener at its listen): the release of an
    /// unmarked listener carries its stop (`flags::STOP_FOLDED`), and the
    /// state callback that follows on the same CPU sends nothing.
    pub const STOPS_FROM_SOCK_OPS: u32 = 2;
    pub const SLOTS: u32 = 3;
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
    /// The source cannot read the socket's options (ETW on Windows): the
    /// reuse flags are unknown, not off. The probes never set it.
    pub const OPTIONS_UNREAD: u32 = 1 << 6;
    /// A release of a listening socket whose LISTEN to CLOSE, which follows
    /// it in the kernel, is not reported in a record of its own: the agent
    /// makes the stop from this record (one ring record less a listener).
    pub const STOP_FOLDED: u32 = 1 << 7;
    /// A release of a TCP socket that carries no mark (see `BoundSock`):
    /// its address, which the release hook cannot read, is the one its
    /// bind or listen reported, joined by the agent on the socket's
    /// address and cookie. A socket whose bind the agent never saw (one
    /// that was never bound, a client whose connect failed) is dropped
    /// there, counted.
    pub const ADDRESS_JOINED: u32 = 1 << 8;
}

/// Bits of `BoundSock::flags`.
pub mod bound {
    /// The release hook reports this socket's LISTEN to CLOSE, folded into
    /// the release's record (`flags::STOP_FOLDED`). Set where the lifecycle
    /// comes from sock_ops: by the listen callback of the socket-storage
    /// programs, and by the agent's start-up seeding for sockets listening
    /// before the probes loaded (no callback was armed on them). With the
    /// state tracepoint, which reports every stop itself, nobody sets it.
    pub const REPORTS_STOP: u8 = 1 << 0;
    /// The socket was released while listening, and its release carried
    /// the stop: the state callback that follows sends nothing.
    pub const RELEASED: u8 = 1 << 1;
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
}

/// The mark of a bound socket, in its own storage (`BOUND_SK`) or in the
/// `BOUND` map keyed by cookie: the address it holds. The release hook
/// cannot read a socket's source address, so the post-bind hook records it
/// here (and the agent seeds it with the sockets that were bound before it
/// started). In socket-local storage, TCP sockets bound under the probes
/// carry none: creating a socket's storage (two allocations) was the
/// largest single cost of a bind, and their releases are found without it
/// (`flags::ADDRESS_JOINED`).
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
