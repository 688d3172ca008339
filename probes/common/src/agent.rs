//! What only the agent uses: the map and program names it loads by, a
//! ring-buffer record checked and read as a [`RawEvent`], and (with the
//! `user` feature, Linux) the map types declared plain old data for aya.

use crate::{AF_INET, AF_INET6, Kind, LAYOUT_VERSION, RawEvent};
#[cfg(feature = "user")]
use crate::{AcceptKey, BoundSock};

/// Map and program names, shared so that a rename breaks the build, not the load.
pub mod names {
    pub const EVENTS: &str = "EVENTS";
    pub const LOST: &str = "LOST";
    pub const ACCEPTS: &str = "ACCEPTS";
    pub const BOUND: &str = "BOUND";
    pub const BOUND_SK: &str = "BOUND_SK";
    pub const CONFIG: &str = "CONFIG";
    pub const SYS_ENTER_BIND: &str = "sys_enter_bind";
    pub const SYS_EXIT_BIND: &str = "sys_exit_bind";
    pub const BIND4: &str = "bind4";
    pub const BIND6: &str = "bind6";
    pub const POST_BIND4: &str = "post_bind4";
    pub const POST_BIND6: &str = "post_bind6";
    pub const SYS_ENTER_LISTEN: &str = "sys_enter_listen";
    pub const SYS_EXIT_LISTEN: &str = "sys_exit_listen";
    // The tracepoint set: exits alone (a bind begun at the cgroup bind
    // hook, a listen at its address), on the same tracepoints.
    pub const BIND_EXIT: &str = "bind_exit";
    pub const LISTEN_EXIT: &str = "listen_exit";
    pub const SOCK_SET_STATE: &str = "inet_sock_set_state";
    pub const SOCK_RELEASE: &str = "sock_release";
    /// The TCP lifecycle from sock_ops callbacks, where the kernel has them:
    /// in place of `SOCK_SET_STATE`.
    pub const SOCK_OPS: &str = "tcp_lifecycle";
    // The same three hooks and sock_ops program with the marks of bound
    // sockets in the `BOUND` map, where the kernel refuses socket-local
    // storage (`BOUND_SK`) to them.
    pub const POST_BIND4_MAP: &str = "post_bind4_map";
    pub const POST_BIND6_MAP: &str = "post_bind6_map";
    pub const RELEASE_MAP: &str = "release_map";
    pub const SOCK_OPS_MAP: &str = "lifecycle_map";
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
