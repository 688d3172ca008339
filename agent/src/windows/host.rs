//! The host's sockets and processes, as the holder table needs them:
//! GetExtendedTcpTable / GetExtendedUdpTable with owner pids, the process
//! details behind them, the host's addresses, and http.sys's state.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use windows_sys::Win32::NetworkManagement::IpHelper::{
    FreeMibTable, GetExtendedTcpTable, GetExtendedUdpTable, GetUnicastIpAddressTable,
    MIB_TCP_STATE_LISTEN, MIB_TCP_STATE_TIME_WAIT, MIB_TCP6ROW_OWNER_PID, MIB_TCP6TABLE_OWNER_PID,
    MIB_TCPROW_OWNER_PID, MIB_TCPTABLE_OWNER_PID, MIB_UDP6ROW_OWNER_PID, MIB_UDP6TABLE_OWNER_PID,
    MIB_UDPROW_OWNER_PID, MIB_UDPTABLE_OWNER_PID, MIB_UNICASTIPADDRESS_ROW,
    MIB_UNICASTIPADDRESS_TABLE, TCP_TABLE_OWNER_PID_ALL, UDP_TABLE_OWNER_PID,
};
use windows_sys::Win32::Networking::WinSock::{AF_INET, AF_INET6, AF_UNSPEC};

use bindwatch_core::conflict::SockState;
use bindwatch_core::etw::HttpSys;
use bindwatch_core::etw::join::WINDOWS_NETNS;
use bindwatch_core::event::Proto;
use bindwatch_core::holders::ip_helper::{self, Row, holder};
use bindwatch_core::holders::{EphemeralPorts, Holder, HostFacts, ProcessInfo, Snapshot};

const ERROR_INSUFFICIENT_BUFFER: u32 = 122;

/// The one namespace Windows has, as the Linux view names its own.
pub struct Namespaces {
    pub own: Option<u64>,
}

/// Sockets of a port with their owners.
pub struct Resolved {
    pub holders: Vec<Holder>,
    pub processes: Vec<ProcessInfo>,
}

pub struct KernelView {
    pub namespaces: Namespaces,
    services: HashMap<u32, Vec<String>>,
    ports: super::ports::PortRanges,
}

impl Default for KernelView {
    fn default() -> Self {
        Self::new()
    }
}

/// What Linux notes to seed its probes' socket storage with: nothing here.
pub struct NoDescriptors;

impl KernelView {
    /// Linux notes descriptors to seed its probes' socket storage with;
    /// ETW needs none.
    pub fn record_descriptors(&mut self) {}

    pub fn take_descriptors(&mut self) -> NoDescriptors {
        NoDescriptors
    }
}

/// Calls an IP Helper table function until the buffer is large enough.
///
/// `call` receives a writable buffer and its size in bytes, both valid for
/// the duration of the call: that is the whole contract the `unsafe` calls
/// to GetExtendedTcpTable/GetExtendedUdpTable below rely on. The buffer is
/// u64-aligned, enough for every MIB_*TABLE_OWNER_PID layout.
fn table(call: impl Fn(*mut core::ffi::c_void, *mut u32) -> u32) -> Option<Vec<u64>> {
    let mut size = 64 * 1024u32;
    for _ in 0..4 {
        let mut buf = vec![0u64; (size as usize).div_ceil(8)];
        let r = call(buf.as_mut_ptr().cast(), &mut size);
        match r {
            0 => return Some(buf),
            ERROR_INSUFFICIENT_BUFFER => size += 16 * 1024,
            e => {
                tracing::warn!(error = e, "reading a socket table failed");
                return None;
            }
        }
    }
    None
}

fn port(p: u32) -> u16 {
    u16::from_be(p as u16)
}

fn v4(a: u32) -> IpAddr {
    IpAddr::V4(Ipv4Addr::from(a.to_ne_bytes()))
}

fn tcp_state(s: u32) -> SockState {
    match s as i32 {
        MIB_TCP_STATE_LISTEN => SockState::Listen,
        MIB_TCP_STATE_TIME_WAIT => SockState::TimeWait,
        _ => SockState::Established,
    }
}

/// The rows of an IP Helper table that `table` filled: a `u32` count at
/// the buffer's start, then that many `R` at `offset` (the table struct's
/// `table` field). Read through the buffer's own pointer, so every row is
/// within its provenance (a pointer taken from the struct's one-element
/// array would cover the first row only), and never past its end, whatever
/// the count says.
fn rows_of<R: Copy>(buf: &[u64], offset: usize) -> Vec<R> {
    let bytes = std::mem::size_of_val(buf);
    let Some(&first) = buf.first() else {
        return Vec::new();
    };
    // The count is the first u32 of the (little-endian) buffer.
    let count = (first & 0xffff_ffff) as usize;
    let room = bytes.saturating_sub(offset) / std::mem::size_of::<R>().max(1);
    let base: *const u8 = buf.as_ptr().cast();
    (0..count.min(room))
        .map(|i| {
            let row = base.wrapping_add(offset + i * std::mem::size_of::<R>());
            // SAFETY: inside the buffer (bounded by `room`); IP Helper wrote
            // every row below the count; read_unaligned needs no alignment.
            unsafe { row.cast::<R>().read_unaligned() }
        })
        .collect()
}

/// TCP sockets in every state.
fn tcp_rows() -> Vec<Row> {
    let class = TCP_TABLE_OWNER_PID_ALL;
    let mut rows = Vec::new();
    let v4_table = table(|p, s| {
        // SAFETY: `p` and `s` are valid for the call (see `table`).
        unsafe { GetExtendedTcpTable(p, s, 0, AF_INET as u32, class, 0) }
    });
    if let Some(buf) = v4_table {
        let offset = std::mem::offset_of!(MIB_TCPTABLE_OWNER_PID, table);
        for r in rows_of::<MIB_TCPROW_OWNER_PID>(&buf, offset) {
            rows.push(Row {
                proto: Proto::Tcp,
                addr: v4(r.dwLocalAddr),
                port: port(r.dwLocalPort),
                state: tcp_state(r.dwState),
                pid: r.dwOwningPid,
            });
        }
    }
    let v6_table = table(|p, s| {
        // SAFETY: as above.
        unsafe { GetExtendedTcpTable(p, s, 0, AF_INET6 as u32, class, 0) }
    });
    if let Some(buf) = v6_table {
        let offset = std::mem::offset_of!(MIB_TCP6TABLE_OWNER_PID, table);
        for r in rows_of::<MIB_TCP6ROW_OWNER_PID>(&buf, offset) {
            rows.push(Row {
                proto: Proto::Tcp,
                addr: IpAddr::V6(Ipv6Addr::from(r.ucLocalAddr)),
                port: port(r.dwLocalPort),
                state: tcp_state(r.dwState),
                pid: r.dwOwningPid,
            });
        }
    }
    rows
}

fn udp_rows() -> Vec<Row> {
    let mut rows = Vec::new();
    let v4_table = table(|p, s| {
        // SAFETY: `p` and `s` are valid for the call (see `table`).
        unsafe { GetExtendedUdpTable(p, s, 0, AF_INET as u32, UDP_TABLE_OWNER_PID, 0) }
    });
    if let Some(buf) = v4_table {
        let offset = std::mem::offset_of!(MIB_UDPTABLE_OWNER_PID, table);
        for r in rows_of::<MIB_UDPROW_OWNER_PID>(&buf, offset) {
            rows.push(Row {
                proto: Proto::Udp,
                addr: v4(r.dwLocalAddr),
                port: port(r.dwLocalPort),
                state: SockState::Bound,
                pid: r.dwOwningPid,
            });
        }
    }
    let v6_table = table(|p, s| {
        // SAFETY: as above.
        unsafe { GetExtendedUdpTable(p, s, 0, AF_INET6 as u32, UDP_TABLE_OWNER_PID, 0) }
    });
    if let Some(buf) = v6_table {
        let offset = std::mem::offset_of!(MIB_UDP6TABLE_OWNER_PID, table);
        for r in rows_of::<MIB_UDP6ROW_OWNER_PID>(&buf, offset) {
            rows.push(Row {
                proto: Proto::Udp,
                addr: IpAddr::V6(Ipv6Addr::from(r.ucLocalAddr)),
                port: port(r.dwLocalPort),
                state: SockState::Bound,
                pid: r.dwOwningPid,
            });
        }
    }
    rows
}

impl KernelView {
    /// Windows has no network namespaces.
    pub fn own_netns(&self) -> Option<u64> {
        None
    }

    /// No NAT rules are read on Windows.
    pub fn nat_rules_everywhere(
        &mut self,
    ) -> std::collections::HashMap<u64, Vec<bindwatch_core::owner::NatRule>> {
        std::collections::HashMap::new()
    }

    /// No NAT rules are read on Windows.
    pub fn nat_rules(
        &mut self,
        _: impl IntoIterator<Item = u64>,
    ) -> std::collections::HashMap<u64, Vec<bindwatch_core::owner::NatRule>> {
        std::collections::HashMap::new()
    }

    pub fn new() -> Self {
        Self {
            namespaces: Namespaces {
                own: Some(WINDOWS_NETNS),
            },
            services: super::process::services_by_pid(),
            ports: Default::default(),
        }
    }

    /// Processes http.sys's registrations named since the last call, for
    /// the table to read while they run.
    pub fn registrants(&mut self) -> Vec<u32> {
        super::session::take_registrants()
    }

    pub fn for_reconciliation() -> Self {
        Self::new()
    }

    pub fn process_info(&mut self, pid: u32) -> Option<ProcessInfo> {
        super::process::process_info(pid, &self.services)
    }

    /// The details of each owner of `rows`, once each.
    fn processes_of<'a>(&mut self, rows: impl Iterator<Item = &'a Row>) -> Vec<ProcessInfo> {
        let mut pids: Vec<u32> = rows.map(|r| r.pid).collect();
        pids.sort_unstable();
        pids.dedup();
        pids.into_iter()
            .filter_map(|p| self.process_info(p))
            .collect()
    }

    fn resolve(&mut self, rows: Vec<Row>) -> Resolved {
        let now = bindwatch_core::clock::now_unix_ns();
        let holders: Vec<Holder> = rows.iter().map(|r| holder(r, now)).collect();
        let processes = self.processes_of(rows.iter());
        Resolved { holders, processes }
    }

    /// Every listening TCP socket and bound UDP socket, with owners, and
    /// the other TCP sockets' ports and owners (see `ip_helper::snapshot`).
    /// http.sys's state is read again with it: its listen list, its
    /// request queues and IIS's sites, which no event may have told.
    pub fn snapshot(&mut self) -> Snapshot {
        self.services = super::process::services_by_pid();
        let taken_ns = bindwatch_core::clock::now_unix_ns();
        super::session::refresh_http_sys(taken_ns);
        let mut rows = tcp_rows();
        rows.extend(udp_rows());
        // The holders' owners only: a connection's is not needed.
        let processes = self.processes_of(
            rows.iter()
                .filter(|r| r.proto == Proto::Udp || r.state == SockState::Listen),
        );
        ip_helper::snapshot(taken_ns, &rows, processes)
    }

    /// The sockets of one port (every TCP state), for a query or a slow path.
    pub fn port(&mut self, proto: Option<Proto>, port: u16) -> Resolved {
        let mut rows = Vec::new();
        if proto != Some(Proto::Udp) {
            rows.extend(tcp_rows());
        }
        if proto != Some(Proto::Tcp) {
            rows.extend(udp_rows());
        }
        rows.retain(|r| r.port == port);
        self.resolve(rows)
    }
}

fn host_addresses() -> Option<Vec<IpAddr>> {
    let mut t: *mut MIB_UNICASTIPADDRESS_TABLE = std::ptr::null_mut();
    // SAFETY: the API allocates the table; freed below.
    let r = unsafe { GetUnicastIpAddressTable(AF_UNSPEC, &mut t) };
    if r != 0 || t.is_null() {
        return None;
    }
    let mut out = Vec::new();
    // SAFETY: a successful call returned a table the API allocated.
    let count = unsafe { (*t).NumEntries } as usize;
    // Rows from the table's own pointer: their provenance is the whole
    // allocation, not the one-element array's first row.
    let first = t
        .cast::<u8>()
        .wrapping_add(std::mem::offset_of!(MIB_UNICASTIPADDRESS_TABLE, Table))
        .cast::<MIB_UNICASTIPADDRESS_ROW>();
    for i in 0..count {
        // SAFETY: row i of NumEntries, inside the allocation.
        let row = unsafe { first.wrapping_add(i).read_unaligned() };
        let a = row.Address;
        // SAFETY: every arm of the union starts with the family.
        let family = unsafe { a.si_family };
        match family {
            AF_INET => {
                // SAFETY: an IPv4 address (si_family).
                let sin = unsafe { a.Ipv4 };
                // SAFETY: every arm of the in_addr union is the same four bytes.
                let v4 = unsafe { sin.sin_addr.S_un.S_addr };
                out.push(IpAddr::V4(Ipv4Addr::from(v4.to_ne_bytes())));
            }
            AF_INET6 => {
                // SAFETY: an IPv6 address (si_family).
                let sin6 = unsafe { a.Ipv6 };
                // SAFETY: every arm of the in6_addr union is the same 16 bytes.
                let v6 = unsafe { sin6.sin6_addr.u.Byte };
                out.push(IpAddr::V6(Ipv6Addr::from(v6)));
            }
            _ => {}
        }
    }
    // SAFETY: the table GetUnicastIpAddressTable allocated.
    unsafe { FreeMibTable(t.cast()) };
    Some(out)
}

impl HostFacts for KernelView {
    fn owners_of(
        &mut self,
        _netns: u64,
        proto: Proto,
        port: u16,
        cookie: u64,
    ) -> Option<(Holder, Vec<ProcessInfo>)> {
        let r = self.port(Some(proto), port);
        let holder = r.holders.into_iter().find(|h| h.cookie == cookie)?;
        Some((holder, r.processes))
    }

    fn unprivileged_port_start(&mut self, _: Option<u64>, _: u32) -> Option<u16> {
        None
    }

    fn addresses(&mut self, _: Option<u64>, _: u32) -> Option<Vec<IpAddr>> {
        host_addresses()
    }

    fn port_sockets(
        &mut self,
        _: Option<u64>,
        _: u32,
        proto: Proto,
        port: u16,
    ) -> Option<(Vec<Holder>, Vec<ProcessInfo>)> {
        let r = self.port(Some(proto), port);
        Some((r.holders, r.processes))
    }

    fn http_sys(&mut self) -> Option<HttpSys> {
        Some(super::session::http_sys())
    }

    fn iis(&mut self) -> Option<std::sync::Arc<bindwatch_core::owner::iis::IisConfig>> {
        super::iis::config()
    }

    fn ephemeral_ports(&mut self, _: Option<u64>, _: u32, proto: Proto) -> Option<EphemeralPorts> {
        self.ports.get(proto)
    }
}
