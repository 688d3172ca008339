//! Builders shared by the unit tests: kernel records as the probes write
//! them, without a kernel.

use std::net::IpAddr;

use bindwatch_common::{RawEvent, flags};

use crate::clock::Clock;
use crate::event::Event;

/// A record of `kind` for `addr:port` over `proto` (an IPPROTO_*), in
/// network namespace 1, by a process named `test`, carrying the socket
/// information the bind hooks add; `ret` is the syscall's result (0, or a
/// negative errno).
pub fn raw(kind: u8, addr: &str, port: u16, proto: u8, ret: i32) -> RawEvent {
    let mut r = RawEvent::zeroed();
    r.kind = kind;
    crate::etw::join::set_ip(&mut r, addr.parse::<IpAddr>().expect("an IP address"));
    r.protocol = proto;
    r.port = port;
    r.bound_port = port;
    r.ret = ret;
    r.flags = flags::SOCK_INFO | if ret == 0 { flags::BOUND } else { 0 };
    r.netns_cookie = 1;
    r.comm[..4].copy_from_slice(b"test");
    r
}

/// The record as the agent sees it, with the clock at zero.
pub fn event(r: &RawEvent) -> Event {
    Event::from_raw(r, &Clock::with_offset_ns(0))
}

/// Sets the process name of a record.
pub fn with_comm(mut r: RawEvent, comm: &str) -> RawEvent {
    r.comm = [0; 16];
    r.comm[..comm.len()].copy_from_slice(comm.as_bytes());
    r
}
