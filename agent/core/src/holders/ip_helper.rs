//! The IP Helper tables (GetExtendedTcpTable, GetExtendedUdpTable with
//! owner pids) as holders and as the snapshot reconciliation compares the
//! table with: `windows::host` reads the rows, this turns them into the
//! table's terms, where Linux can test it.

use std::collections::HashSet;
use std::net::IpAddr;

use super::{Holder, ProcessInfo, Snapshot, Source};
use crate::conflict::SockState;
use crate::etw::join::{WINDOWS_NETNS, holder_cookie};
use crate::event::Proto;

/// A socket as the IP Helper tables give it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Row {
    pub proto: Proto,
    pub addr: IpAddr,
    pub port: u16,
    pub state: SockState,
    pub pid: u32,
}

/// A row as a holder, with the cookie an event for the same socket gets.
pub fn holder(r: &Row, now: u64) -> Holder {
    let protocol = if r.proto == Proto::Udp { 17 } else { 6 };
    Holder {
        cookie: holder_cookie(protocol, r.addr, r.port, r.pid),
        netns: WINDOWS_NETNS,
        proto: r.proto,
        addr: r.addr,
        port: r.port,
        state: r.state,
        // Not in the tables: unknown (IPv6 sockets are taken as IPv6-only,
        // Windows's default, where the rules judge them).
        v6only: None,
        reuseaddr: None,
        // Windows has no SO_REUSEPORT.
        reuseport: Some(false),
        bound_ifindex: None,
        uid: 0,
        owners: smallvec::smallvec![r.pid],
        owners_verified: true,
        since_ns: now,
        source: Source::Snapshot,
        remote: None,
    }
}

/// The snapshot reconciliation compares the table with: TCP listeners and
/// UDP sockets are holders; every other TCP row (a connection) keeps a
/// holder of its owner on its port alive, as a socket bound before its
/// connect has in the table the address its bind named, not the one the
/// connection shows. A TCP socket bound and neither listening nor
/// connected is in no documented table: such a holder is taken as gone.
pub fn snapshot(taken_ns: u64, rows: &[Row], processes: Vec<ProcessInfo>) -> Snapshot {
    let mut holders = Vec::new();
    let mut others = HashSet::new();
    for r in rows {
        if r.proto == Proto::Tcp && r.state != SockState::Listen {
            others.insert((r.proto, r.port, r.pid));
        } else {
            holders.push(holder(r, taken_ns));
        }
    }
    Snapshot {
        taken_ns,
        holders,
        processes,
        netns: [WINDOWS_NETNS].into(),
        others,
    }
}
