//! Joins ETW records into raw events: AFD's create gives an endpoint its
//! process and protocol, the bind's enter half the requested address, its
//! exit half the status; TCPIP adds what AFD never sees (kernel-mode
//! listeners such as http.sys, accepts) and failures logged without a
//! process; HttpService updates http.sys's listen list and URLs.
//!
//! A failed bind is logged twice (TCPIP inside the bind, AFD at its exit):
//! the TCPIP record waits [`PAIR_WINDOW_NS`] for its AFD partner, which
//! carries the process, and is emitted alone only for a kernel-mode caller.

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::{IpAddr, SocketAddr};

use bindwatch_common::{
    AF_INET, AF_INET6, IPPROTO_TCP, IPPROTO_UDP, LAYOUT_VERSION, RawEvent, flags, kind, tcp_state,
};

use super::httpsys::HttpSys;
use super::record::{EtwProvider, EtwRecord};
use super::sockaddr::{self, SockaddrError, WIN_AF_INET, WIN_AF_INET6};
use super::status;

/// Windows has no network namespaces bindwatch follows: every socket is in
/// this one.
pub const WINDOWS_NETNS: u64 = 1;
/// Endpoints followed between create and close; past it, new ones are
/// counted (`JoinStats::endpoints_full`) and their binds reported without
/// a protocol.
pub const ENDPOINT_CAPACITY: usize = 131_072;
/// How long a TCPIP failure waits for AFD's record of the same bind.
pub const PAIR_WINDOW_NS: u64 = 500_000_000;
/// TCPIP failures waiting for a partner, at most.
pub const PENDING_CAPACITY: usize = 4096;

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum JoinError {
    #[error("{record}: field {field} is missing")]
    Missing { record: String, field: &'static str },
    #[error("{record}: field {field}: {source}")]
    Address {
        record: String,
        field: &'static str,
        #[source]
        source: SockaddrError,
    },
    #[error("{record}: not an event bindwatch reads")]
    Unknown { record: String },
    #[error("{record}: field {field}: {value:?} is not a list of IP addresses")]
    NotAddresses {
        record: String,
        field: &'static str,
        value: String,
    },
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct JoinStats {
    pub records: u64,
    pub emitted: u64,
    /// Records that failed to decode (a field missing or malformed).
    pub malformed: u64,
    /// Records of ids and tasks the joiner does not read.
    pub unknown: u64,
    /// Binds that ended with a status no mapping covers (EUNMAPPED).
    pub unmapped_status: u64,
    pub endpoints_full: u64,
    /// TCPIP failures dropped because too many waited for a partner.
    pub pending_full: u64,
    /// TCPIP failures paired with AFD's record (reported once).
    pub paired: u64,
}

#[derive(Clone, Debug, Default)]
struct Endpoint {
    pid: u32,
    family: u16,
    protocol: u8,
    /// The address asked for, from the bind's enter half.
    requested: Option<SocketAddr>,
    bound: Option<SocketAddr>,
    listening: bool,
}

/// What a record means.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Meaning {
    Ignored,
    AfdCreate,
    AfdClose,
    AfdBind,
    AfdListen,
    TcpBindFailure,
    TcpListenerFailed,
    TcpListenerActivated,
    TcpListenerUnbound,
    TcpAccept,
    HttpIpListEntry,
    HttpAddUrl,
    HttpRemUrl,
    HttpRemAllUrls,
    HttpDeleteUrlGroup,
    HttpSetIpListenList,
}

/// What a record means, by its id. The session asks the kernel for these
/// ids only (an id filter), so a record of another id does not reach the
/// joiner from a live session; one that does is counted as unknown.
fn meaning(r: &EtwRecord) -> Option<Meaning> {
    use EtwProvider::*;
    use Meaning::*;
    match (r.provider, r.id) {
        (WinsockAfd, 1000) => Some(AfdCreate),
        (WinsockAfd, 1001) => Some(AfdClose),
        // AfdBindConnected: no address, nothing to learn; not asked for,
        // and not a malformed bind if it comes.
        (WinsockAfd, 1029) => Some(Ignored),
        (WinsockAfd, 1030) => Some(AfdBind),
        (WinsockAfd, 1037) => Some(AfdListen),
        (Tcpip, 1006) => Some(TcpBindFailure),
        (Tcpip, 1017) => Some(TcpAccept),
        (Tcpip, 1121 | 1122) => Some(TcpListenerFailed),
        (Tcpip, 1123) => Some(TcpListenerActivated),
        (Tcpip, 1124) => Some(TcpListenerUnbound),
        (HttpService, 19) => Some(HttpIpListEntry),
        (HttpService, 31 | 113) => Some(HttpAddUrl),
        (HttpService, 32 | 114) => Some(HttpRemUrl),
        (HttpService, 33 | 115) => Some(HttpRemAllUrls),
        (HttpService, 117) => Some(HttpDeleteUrlGroup),
        (HttpService, 122) => Some(HttpSetIpListenList),
        _ => None,
    }
}

/// A stable socket identity for the holder table, the same whether the
/// socket was learned from an event or from GetExtendedTcpTable (which has
/// no endpoint pointer): protocol, address, port and owner.
pub fn holder_cookie(protocol: u8, addr: IpAddr, port: u16, pid: u32) -> u64 {
    // FNV-1a: small, stable across releases (the timeline stores cookies).
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut eat = |b: u8| {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    };
    eat(protocol);
    match addr {
        IpAddr::V4(a) => a.octets().into_iter().for_each(&mut eat),
        IpAddr::V6(a) => a.octets().into_iter().for_each(&mut eat),
    }
    port.to_be_bytes().into_iter().for_each(&mut eat);
    pid.to_le_bytes().into_iter().for_each(&mut eat);
    h.max(1)
}

struct PendingFailure {
    ev: RawEvent,
    at_ns: u64,
}

/// The joining state. Feed it every record ([`Joiner::on_record`]) and call
/// [`Joiner::flush`] now and then so that lone TCPIP failures come out.
#[derive(Default)]
pub struct Joiner {
    endpoints: HashMap<u64, Endpoint>,
    pending: VecDeque<PendingFailure>,
    /// AFD failures recently reported: a late TCPIP twin is dropped.
    recent_afd: VecDeque<(SocketAddr, u64)>,
    listening: HashSet<u64>,
    accepts: HashMap<(u8, u16), u64>,
    pub http: HttpSys,
    stats: JoinStats,
    /// Record kinds that have failed to read, each warned of once: a new
    /// Windows build can make every record of a kind fail. At most one
    /// entry per (provider, event id).
    failed_kinds: HashSet<(EtwProvider, u16)>,
    /// The layouts of fields the manifests leave open, as they came.
    shapes_seen: HashSet<&'static str>,
}

fn raw(k: u8, time_ns: u64, pid: u32, tid: u32, protocol: u8, addr: SocketAddr) -> RawEvent {
    let mut r = RawEvent::zeroed();
    r.version = LAYOUT_VERSION;
    r.kind = k;
    r.ts_ns = time_ns;
    r.pid = pid;
    r.tid = tid;
    r.protocol = protocol;
    r.netns_cookie = WINDOWS_NETNS;
    r.fd = -1;
    // No Windows event or table carries SO_REUSEADDR or
    // SO_EXCLUSIVEADDRUSE: unknown, not off.
    r.flags |= flags::OPTIONS_UNREAD;
    set_ip(&mut r, addr.ip());
    r.port = addr.port();
    r.bound_port = addr.port();
    if protocol != 0 {
        r.flags |= flags::SOCK_INFO;
    }
    r
}

/// Puts an address into a raw event in the probes' form (Linux's family
/// numbers; IPv4 in the first four bytes).
pub fn set_ip(r: &mut RawEvent, ip: IpAddr) {
    match ip {
        IpAddr::V4(a) => {
            r.family = AF_INET;
            r.addr = [0; 16];
            r.addr[..4].copy_from_slice(&a.octets());
        }
        IpAddr::V6(a) => {
            r.family = AF_INET6;
            r.addr = a.octets();
        }
    }
}

fn protocol_of(protocol: Option<u64>, socket_type: Option<u64>) -> u8 {
    match (protocol, socket_type) {
        (Some(6), _) => IPPROTO_TCP,
        (Some(17), _) => IPPROTO_UDP,
        // SOCK_STREAM / SOCK_DGRAM with protocol 0 (the default).
        (_, Some(1)) => IPPROTO_TCP,
        (_, Some(2)) => IPPROTO_UDP,
        _ => 0,
    }
}

impl Joiner {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn stats(&self) -> JoinStats {
        self.stats
    }

    /// Accepted connections so far, by (family, local port), cumulative.
    pub fn accepts(&self) -> &HashMap<(u8, u16), u64> {
        &self.accepts
    }

    /// Endpoints followed now.
    pub fn endpoints(&self) -> usize {
        self.endpoints.len()
    }

    /// Reads one record; events it completes go to `out`. An error names
    /// the record and field; the record is dropped, counted, and logged
    /// (a warning the first time for its kind).
    pub fn on_record(&mut self, r: &EtwRecord, out: &mut Vec<RawEvent>) -> Result<(), JoinError> {
        self.stats.records += 1;
        self.flush(r.time_ns, out);
        let before = out.len();
        let res = self.dispatch(r, out);
        if let Err(e) = &res {
            match e {
                JoinError::Unknown { .. } => self.stats.unknown += 1,
                _ => self.stats.malformed += 1,
            }
            if self.failed_kinds.insert((r.provider, r.id)) {
                tracing::warn!(error = %e, "ETW record not read (counted; further ones of this kind at debug)");
            } else {
                tracing::debug!(error = %e, "ETW record not read");
            }
        }
        self.stats.emitted += (out.len() - before) as u64;
        res
    }

    /// Logs, once each, a shape of record the manifests leave open (which
    /// one a Windows build sends is for a Windows host to tell).
    fn saw(&mut self, shape: &'static str) {
        if self.shapes_seen.insert(shape) {
            tracing::info!(shape, "ETW records seen in this shape: {shape}");
        }
    }

    /// Shapes of record seen so far (see [`Self::saw`]).
    pub fn shapes_seen(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.shapes_seen.iter().copied()
    }

    /// Emits TCPIP failures whose AFD partner did not come within the
    /// window: binds by kernel-mode callers.
    pub fn flush(&mut self, now_ns: u64, out: &mut Vec<RawEvent>) {
        while let Some(p) = self.pending.front() {
            if now_ns.saturating_sub(p.at_ns) < PAIR_WINDOW_NS {
                break;
            }
            let p = self.pending.pop_front().expect("front exists");
            self.stats.emitted += 1;
            out.push(p.ev);
        }
        while let Some(&(_, t)) = self.recent_afd.front() {
            if now_ns.saturating_sub(t) < PAIR_WINDOW_NS {
                break;
            }
            self.recent_afd.pop_front();
        }
    }

    /// Everything still waiting, at shutdown.
    pub fn drain(&mut self, out: &mut Vec<RawEvent>) {
        self.flush(u64::MAX, out);
    }

    fn dispatch(&mut self, r: &EtwRecord, out: &mut Vec<RawEvent>) -> Result<(), JoinError> {
        let Some(m) = meaning(r) else {
            return Err(JoinError::Unknown {
                record: r.describe(),
            });
        };
        match m {
            Meaning::Ignored => Ok(()),
            Meaning::AfdCreate => self.afd_create(r),
            Meaning::AfdClose => self.afd_close(r, out),
            Meaning::AfdBind => self.afd_bind(r, out),
            Meaning::AfdListen => self.afd_listen(r, out),
            Meaning::TcpBindFailure | Meaning::TcpListenerFailed => self.tcp_failure(r),
            Meaning::TcpListenerActivated => self.tcp_listener(r, out),
            Meaning::TcpListenerUnbound => self.tcp_unbound(r, out),
            Meaning::TcpAccept => self.tcp_accept(r),
            Meaning::HttpIpListEntry => self.http_ip_list(r),
            Meaning::HttpAddUrl => self.http_add_url(r),
            Meaning::HttpRemUrl => {
                let url = r.str_of(&["Url"]).ok_or_else(|| missing(r, "Url"))?;
                self.http.remove_url(url);
                Ok(())
            }
            Meaning::HttpRemAllUrls | Meaning::HttpDeleteUrlGroup => {
                let g = r
                    .num_of(&["UrlGroupId"])
                    .ok_or_else(|| missing(r, "UrlGroupId"))?;
                if !r
                    .num_of(&["Status"])
                    .is_some_and(|s| status::failed(s as u32))
                {
                    self.http.remove_group(g);
                }
                Ok(())
            }
            Meaning::HttpSetIpListenList => self.http_set_listen_list(r),
        }
    }

    fn endpoint_id(r: &EtwRecord) -> Result<u64, JoinError> {
        r.num_of(&["Endpoint"])
            .ok_or_else(|| missing(r, "Endpoint"))
    }

    fn afd_create(&mut self, r: &EtwRecord) -> Result<(), JoinError> {
        let id = Self::endpoint_id(r)?;
        // The exit half of a failed create carries an error status.
        if !Self::is_enter(r)
            && r.num_of(&["Status"])
                .is_some_and(|s| status::failed(s as u32))
        {
            self.endpoints.remove(&id);
            return Ok(());
        }
        // The enter half carries the family, type and protocol; an exit
        // half may log zeros there, and then keeps what the enter said.
        let family = r.num_of(&["AddressFamily"]).unwrap_or(0) as u16;
        if !Self::is_enter(r) {
            self.saw(if family == 0 {
                "AfdCreate exit halves without the family"
            } else {
                "AfdCreate exit halves repeating the family"
            });
        }
        if family != 0 && family != WIN_AF_INET && family != WIN_AF_INET6 {
            // Not an IP socket (Hyper-V, Bluetooth, AF_UNIX): not ours.
            self.endpoints.remove(&id);
            return Ok(());
        }
        let pid = r
            .num_of(&["ProcessId"])
            .filter(|&p| p != 0)
            .map_or(r.pid, |p| p as u32);
        let protocol = protocol_of(r.num_of(&["Protocol"]), r.num_of(&["SocketType"]));
        if !self.endpoints.contains_key(&id) && self.endpoints.len() >= ENDPOINT_CAPACITY {
            self.stats.endpoints_full += 1;
            return Ok(());
        }
        let e = self.endpoints.entry(id).or_default();
        e.pid = pid;
        if family != 0 {
            e.family = family;
        }
        if protocol != 0 {
            e.protocol = protocol;
        }
        Ok(())
    }

    /// The record's address, if it has one: each binary address field is
    /// read up to the length logged beside it; a length of 0 (or no bytes)
    /// is no address, as Microsoft's own consumer of these events reads it.
    fn address(r: &EtwRecord) -> Result<Option<SocketAddr>, JoinError> {
        for &(name, len_name) in super::schema::ADDRESSES {
            let Some(b) = r.bytes_of(&[name]) else {
                continue;
            };
            let len = r
                .num_of(&[len_name])
                .map_or(b.len(), |l| (l as usize).min(b.len()));
            if len == 0 {
                return Ok(None);
            }
            return sockaddr::decode(&b[..len])
                .map(Some)
                .map_err(|source| JoinError::Address {
                    record: r.describe(),
                    field: name,
                    source,
                });
        }
        Ok(None)
    }

    /// Enter halves carry EnterExit 0; records without the field are exits.
    fn is_enter(r: &EtwRecord) -> bool {
        r.num_of(&["EnterExit"]) == Some(0)
    }

    fn afd_bind(&mut self, r: &EtwRecord, out: &mut Vec<RawEvent>) -> Result<(), JoinError> {
        let id = Self::endpoint_id(r)?;
        let addr = Self::address(r)?;
        if Self::is_enter(r) {
            let Some(addr) = addr else {
                // An enter half with an empty address: the exit half
                // carries the address bound, if any.
                self.saw("AfdBindWithAddress enter halves without an address");
                return Ok(());
            };
            if let Some(e) = self.endpoints.get_mut(&id) {
                e.requested = Some(addr);
            } else if self.endpoints.len() < ENDPOINT_CAPACITY {
                // Created before the session started: the caller is the
                // header's process; the protocol stays unknown.
                self.endpoints.insert(
                    id,
                    Endpoint {
                        pid: r.pid,
                        family: if addr.is_ipv4() {
                            WIN_AF_INET
                        } else {
                            WIN_AF_INET6
                        },
                        requested: Some(addr),
                        ..Endpoint::default()
                    },
                );
            } else {
                self.stats.endpoints_full += 1;
            }
            return Ok(());
        }
        let st = r.num_of(&["Status"]).ok_or_else(|| missing(r, "Status"))? as u32;
        let e = self.endpoints.get(&id).cloned().unwrap_or(Endpoint {
            pid: r.pid,
            ..Endpoint::default()
        });
        // No address on the enter half: an implicit bind (the one before
        // an outbound connect or a first send), whatever port it was
        // given, is filed as Linux files a port-0 bind (aggregated, not
        // recorded one by one).
        let Some(requested) = e
            .requested
            .or_else(|| addr.map(|a| SocketAddr::new(a.ip(), 0)))
        else {
            return Err(missing(r, "Address"));
        };
        let errno = status::errno_of_status(st);
        if errno == crate::errno::EUNMAPPED {
            self.stats.unmapped_status += 1;
            tracing::warn!(status = format_args!("{st:#010x}"), record = %r.describe(),
                "bind failed with a status bindwatch does not map; reported as EUNMAPPED");
        }
        // A bind that asked for no port (the implicit one before an
        // outbound connect, or an explicit bind to port 0 before
        // ConnectEx): like Linux's autobind at connect, it does not enter
        // the holder table; a listen on it does (the listen's event), and a
        // failed bind on its port finds it among the port's sockets.
        let ephemeral = requested.port() == 0;
        let mut ev = raw(kind::BIND, r.time_ns, e.pid, r.tid, e.protocol, requested);
        ev.ret = -errno;
        ev.bound_port = 0;
        if errno == 0 {
            let bound = addr.filter(|a| a.port() != 0).unwrap_or(requested);
            if bound.port() != 0 {
                ev.flags |= flags::BOUND;
                ev.bound_port = bound.port();
                if e.protocol != 0 && !ephemeral {
                    ev.sock_cookie = holder_cookie(e.protocol, bound.ip(), bound.port(), e.pid);
                }
            }
            if let Some(ep) = self.endpoints.get_mut(&id) {
                ep.bound = Some(bound);
            }
        } else {
            self.pair_with_tcpip(requested);
            self.recent_afd.push_back((requested, r.time_ns));
            if self.recent_afd.len() > PENDING_CAPACITY {
                self.recent_afd.pop_front();
            }
        }
        out.push(ev);
        Ok(())
    }

    /// Drops the TCPIP record of the failure AFD just reported.
    fn pair_with_tcpip(&mut self, requested: SocketAddr) {
        if let Some(i) = self
            .pending
            .iter()
            .position(|p| p.ev.port == requested.port() && ip_of(&p.ev) == requested.ip())
        {
            self.pending.remove(i);
            self.stats.paired += 1;
        }
    }

    fn afd_listen(&mut self, r: &EtwRecord, out: &mut Vec<RawEvent>) -> Result<(), JoinError> {
        if Self::is_enter(r) {
            return Ok(());
        }
        let id = Self::endpoint_id(r)?;
        let st = r.num_of(&["Status"]).unwrap_or(0) as u32;
        if status::failed(st) {
            return Ok(());
        }
        let Some(e) = self.endpoints.get_mut(&id) else {
            // Bound before the session started: TCPIP's listener record
            // (1123) reports it.
            return Ok(());
        };
        let Some(bound) = e.bound else {
            return Ok(());
        };
        e.listening = true;
        let (pid, protocol) = (e.pid, IPPROTO_TCP);
        let cookie = holder_cookie(protocol, bound.ip(), bound.port(), pid);
        if !self.listening.insert(cookie) {
            return Ok(());
        }
        let mut ev = raw(kind::LISTEN, r.time_ns, pid, r.tid, protocol, bound);
        ev.sock_cookie = cookie;
        ev.backlog = r.num_of(&["Backlog"]).unwrap_or(0) as u32;
        ev.flags |= flags::LISTEN_ADDR;
        out.push(ev);
        Ok(())
    }

    fn afd_close(&mut self, r: &EtwRecord, out: &mut Vec<RawEvent>) -> Result<(), JoinError> {
        let id = Self::endpoint_id(r)?;
        let Some(e) = self.endpoints.remove(&id) else {
            return Ok(());
        };
        let (Some(bound), true) = (e.bound, e.protocol != 0) else {
            return Ok(());
        };
        let cookie = holder_cookie(e.protocol, bound.ip(), bound.port(), e.pid);
        self.listening.remove(&cookie);
        let mut ev = raw(kind::RELEASE, r.time_ns, e.pid, r.tid, e.protocol, bound);
        ev.sock_cookie = cookie;
        if e.protocol == IPPROTO_TCP {
            ev.state = if e.listening {
                tcp_state::LISTEN as u8
            } else {
                tcp_state::CLOSE as u8
            };
        }
        out.push(ev);
        Ok(())
    }

    fn tcp_addr(r: &EtwRecord) -> Result<SocketAddr, JoinError> {
        Self::address(r)?.ok_or_else(|| missing(r, "LocalAddress"))
    }

    fn tcp_failure(&mut self, r: &EtwRecord) -> Result<(), JoinError> {
        let addr = Self::tcp_addr(r)?;
        let st = r.num_of(&["Status"]).ok_or_else(|| missing(r, "Status"))? as u32;
        if !status::failed(st) {
            return Ok(());
        }
        // AFD already reported this bind: keep one.
        if let Some(i) = self.recent_afd.iter().position(|(a, _)| *a == addr) {
            self.recent_afd.remove(i);
            self.stats.paired += 1;
            return Ok(());
        }
        let pid = r.num_of(&["ProcessId"]).map_or(r.pid, |p| p as u32);
        let mut ev = raw(kind::BIND, r.time_ns, pid, r.tid, IPPROTO_TCP, addr);
        ev.ret = -status::errno_of_status(st);
        ev.bound_port = 0;
        if self.pending.len() >= PENDING_CAPACITY {
            self.stats.pending_full += 1;
            return Ok(());
        }
        self.pending.push_back(PendingFailure {
            ev,
            at_ns: r.time_ns,
        });
        Ok(())
    }

    fn tcp_listener(&mut self, r: &EtwRecord, out: &mut Vec<RawEvent>) -> Result<(), JoinError> {
        let addr = Self::tcp_addr(r)?;
        let pid = r.num_of(&["ProcessId"]).map_or(r.pid, |p| p as u32);
        let cookie = holder_cookie(IPPROTO_TCP, addr.ip(), addr.port(), pid);
        if !self.listening.insert(cookie) {
            return Ok(());
        }
        let mut ev = raw(kind::LISTEN, r.time_ns, pid, r.tid, IPPROTO_TCP, addr);
        ev.sock_cookie = cookie;
        ev.flags |= flags::LISTEN_ADDR;
        out.push(ev);
        Ok(())
    }

    fn tcp_unbound(&mut self, r: &EtwRecord, out: &mut Vec<RawEvent>) -> Result<(), JoinError> {
        let addr = Self::tcp_addr(r)?;
        let pid = r.num_of(&["ProcessId"]).map_or(r.pid, |p| p as u32);
        let cookie = holder_cookie(IPPROTO_TCP, addr.ip(), addr.port(), pid);
        self.listening.remove(&cookie);
        let mut ev = raw(kind::RELEASE, r.time_ns, pid, r.tid, IPPROTO_TCP, addr);
        ev.sock_cookie = cookie;
        ev.state = tcp_state::LISTEN as u8;
        out.push(ev);
        Ok(())
    }

    fn tcp_accept(&mut self, r: &EtwRecord) -> Result<(), JoinError> {
        let addr = Self::tcp_addr(r)?;
        let family = if addr.is_ipv4() { AF_INET } else { AF_INET6 };
        *self.accepts.entry((family, addr.port())).or_default() += 1;
        Ok(())
    }

    /// An iplisten entry. The manifests give `IpAddress` as bytes and its
    /// length, not their layout: a SOCKADDR (what `netsh http add
    /// iplisten` stores) is read first, a bare 4- or 16-byte address
    /// second; which one came is logged once.
    fn http_ip_list(&mut self, r: &EtwRecord) -> Result<(), JoinError> {
        let b = r
            .bytes_of(&["IpAddress"])
            .ok_or_else(|| missing(r, "IpAddress"))?;
        let len = r
            .num_of(&["IpAddrLength"])
            .map_or(b.len(), |l| (l as usize).min(b.len()));
        let b = &b[..len];
        let (ip, shape) = match sockaddr::decode(b) {
            Ok(a) => (a.ip(), "http.sys listen-list entries as a SOCKADDR"),
            Err(e) => match b.len() {
                4 => (
                    IpAddr::from(<[u8; 4]>::try_from(b).expect("4 bytes")),
                    "http.sys listen-list entries as a bare IPv4 address",
                ),
                16 => (
                    IpAddr::from(<[u8; 16]>::try_from(b).expect("16 bytes")),
                    "http.sys listen-list entries as a bare IPv6 address",
                ),
                _ => {
                    return Err(JoinError::Address {
                        record: r.describe(),
                        field: "IpAddress",
                        source: e,
                    });
                }
            },
        };
        self.saw(shape);
        self.http.add_listen_entry(ip);
        Ok(())
    }

    /// SetIpListenList (26H1's event 122): the whole list, replacing what
    /// was known. The manifest gives `IpList` as a string without its
    /// layout: addresses (or `address:port`) separated by commas,
    /// semicolons or white space are read; an empty string is the empty
    /// list (every address). Which separator came is logged once.
    fn http_set_listen_list(&mut self, r: &EtwRecord) -> Result<(), JoinError> {
        let list = r.str_of(&["IpList"]).ok_or_else(|| missing(r, "IpList"))?;
        if r.num_of(&["Status"])
            .is_some_and(|s| status::failed(s as u32))
        {
            return Ok(());
        }
        let not_addresses = || JoinError::NotAddresses {
            record: r.describe(),
            field: "IpList",
            value: list.to_owned(),
        };
        let mut ips = Vec::new();
        for word in list
            .split(|c: char| c == ',' || c == ';' || c.is_whitespace())
            .filter(|w| !w.is_empty())
        {
            let ip = word
                .parse::<IpAddr>()
                .or_else(|_| word.parse::<SocketAddr>().map(|a| a.ip()))
                .or_else(|_| word.trim_matches(|c| c == '[' || c == ']').parse())
                .map_err(|_| not_addresses())?;
            if !ips.contains(&ip) {
                ips.push(ip);
            }
        }
        self.saw(if list.contains(',') {
            "http.sys listen lists separated by commas"
        } else if list.contains(';') {
            "http.sys listen lists separated by semicolons"
        } else {
            "http.sys listen lists of one address or none"
        });
        self.http.set_listen_list(ips);
        Ok(())
    }

    fn http_add_url(&mut self, r: &EtwRecord) -> Result<(), JoinError> {
        let url = r.str_of(&["Url"]).ok_or_else(|| missing(r, "Url"))?;
        if r.num_of(&["Status"])
            .is_some_and(|s| status::failed(s as u32))
        {
            return Ok(());
        }
        let group = r.num_of(&["UrlGroupId"]).unwrap_or(0);
        let pid = r.num_of(&["ProcessId"]).map_or(r.pid, |p| p as u32);
        self.http.add_url(url, pid, group, r.time_ns);
        Ok(())
    }
}

fn ip_of(ev: &RawEvent) -> IpAddr {
    if ev.family == AF_INET6 {
        IpAddr::from(ev.addr)
    } else {
        IpAddr::from([ev.addr[0], ev.addr[1], ev.addr[2], ev.addr[3]])
    }
}

fn missing(r: &EtwRecord, field: &'static str) -> JoinError {
    JoinError::Missing {
        record: r.describe(),
        field,
    }
}

#[cfg(test)]
mod tests;
