//! Records shaped as ferrisetw yields them (field names and types of the
//! public manifests), through the joiner.

use super::*;
use crate::clock::Clock;
use crate::etw::manifest;
use crate::etw::record::Value::{self, Bytes, Str, U64};
use crate::event::{Event, EventKind, Proto};

const T0: u64 = 1_700_000_000_000_000_000;
const NGINX: u32 = 3120;
const EP: u64 = 0xffff_a28c_5e3f_7010;

/// A record as the session reads it, built from the manifest's template.
fn rec(p: EtwProvider, id: u16, pid: u32, t: u64, values: &[(&str, Value)]) -> EtwRecord {
    manifest::record(p, id, pid, t, values)
}

use manifest::{
    addr, afd_bind as bind, afd_close as close, afd_create as create, tcp_listener as listener,
};

fn sa(s: &str) -> Vec<u8> {
    crate::etw::sockaddr::encode(s.parse().unwrap())
}

fn listen(ep: u64, pid: u32, t: u64) -> EtwRecord {
    manifest::afd_listen(ep, pid, t, 511)
}

fn events(j: &mut Joiner, recs: &[EtwRecord]) -> Vec<Event> {
    let mut out = Vec::new();
    for r in recs {
        // Each record one the session could read off the wire.
        manifest::check(r);
        j.on_record(r, &mut out).unwrap();
    }
    let clock = Clock::with_offset_ns(0);
    out.iter().map(|r| Event::from_raw(r, &clock)).collect()
}

#[test]
fn a_successful_bind_listen_and_close_become_the_linux_events() {
    let mut j = Joiner::new();
    let evs = events(
        &mut j,
        &[
            create(EP, NGINX, T0),
            bind(EP, NGINX, T0 + 10, true, "0.0.0.0:80", 0),
            bind(EP, NGINX, T0 + 20, false, "0.0.0.0:80", 0),
            listen(EP, NGINX, T0 + 30),
            close(EP, NGINX, T0 + 40),
        ],
    );
    let kinds: Vec<_> = evs.iter().map(|e| e.kind).collect();
    assert_eq!(
        kinds,
        [EventKind::Bind, EventKind::Listen, EventKind::Release]
    );
    let b = &evs[0];
    assert_eq!((b.pid, b.proto, b.errno), (NGINX, Proto::Tcp, 0));
    assert_eq!(b.endpoint(), "0.0.0.0:80");
    assert_eq!(b.bound_port, Some(80));
    assert_eq!(b.netns_cookie, Some(WINDOWS_NETNS));
    assert_eq!(b.time_ns, T0 + 20);
    let cookie = holder_cookie(IPPROTO_TCP, "0.0.0.0".parse().unwrap(), 80, NGINX);
    assert!(evs.iter().all(|e| e.sock_cookie == Some(cookie)));
    assert_eq!(evs[1].backlog, Some(511));
    assert_eq!(evs[2].state, Some(10), "released while listening");
    assert_eq!(j.endpoints(), 0);
}

#[test]
fn a_port_zero_bind_reports_the_port_windows_chose() {
    let mut j = Joiner::new();
    let evs = events(
        &mut j,
        &[
            create(EP, NGINX, T0),
            bind(EP, NGINX, T0 + 1, true, "0.0.0.0:0", 0),
            bind(EP, NGINX, T0 + 2, false, "0.0.0.0:51234", 0),
        ],
    );
    assert_eq!(evs[0].port, 0);
    assert_eq!(evs[0].effective_port(), 51234);
}

#[test]
fn eaddrinuse_from_afd_and_tcpip_is_one_failure_with_the_process() {
    let mut j = Joiner::new();
    let tcpip = manifest::tcp_bind_failure(
        T0 + 15,
        "10.0.0.6:80",
        status::STATUS_ADDRESS_ALREADY_EXISTS,
    );
    let evs = events(
        &mut j,
        &[
            create(EP, 4410, T0),
            bind(EP, 4410, T0 + 10, true, "10.0.0.6:80", 0),
            tcpip,
            bind(EP, 4410, T0 + 20, false, "10.0.0.6:80", 0xC000_020A),
        ],
    );
    assert_eq!(evs.len(), 1);
    let e = &evs[0];
    assert_eq!(e.error, Some("EADDRINUSE"));
    assert_eq!((e.pid, e.proto), (4410, Proto::Tcp));
    assert_eq!(e.endpoint(), "10.0.0.6:80");
    assert_eq!(e.bound_port, None);
    let mut late = Vec::new();
    j.drain(&mut late);
    assert!(late.is_empty(), "the TCPIP twin must not come out later");
    assert_eq!(j.stats().paired, 1);
}

#[test]
fn a_tcpip_failure_without_afd_is_a_kernel_callers_and_comes_out_after_the_window() {
    let mut j = Joiner::new();
    let failed = listener(1122, 4, T0, "0.0.0.0:443", status::STATUS_SHARING_VIOLATION);
    let mut out = Vec::new();
    j.on_record(&failed, &mut out).unwrap();
    assert!(out.is_empty(), "waits for an AFD partner");
    j.flush(T0 + PAIR_WINDOW_NS - 1, &mut out);
    assert!(out.is_empty());
    j.flush(T0 + PAIR_WINDOW_NS, &mut out);
    let e = Event::from_raw(&out[0], &Clock::with_offset_ns(0));
    assert_eq!((e.pid, e.error, e.port), (4, Some("EADDRINUSE"), 443));
}

#[test]
fn http_sys_listeners_come_from_tcpip_and_are_not_doubled() {
    let mut j = Joiner::new();
    let act = listener(1123, 4, T0, "0.0.0.0:80", 0);
    let evs = events(&mut j, &[act.clone(), act]);
    assert_eq!(evs.len(), 1);
    assert_eq!((evs[0].kind, evs[0].pid), (EventKind::Listen, 4));
    let gone = listener(1124, 4, T0 + 5, "0.0.0.0:80", 0);
    let evs2 = events(&mut j, &[gone]);
    assert_eq!(evs2[0].kind, EventKind::Release);
    assert_eq!(evs2[0].sock_cookie, evs[0].sock_cookie);
}

#[test]
fn an_afd_listen_and_the_tcpip_listener_of_the_same_socket_are_one_listen() {
    let mut j = Joiner::new();
    let act = listener(1123, NGINX, T0 + 31, "0.0.0.0:8080", 0);
    let evs = events(
        &mut j,
        &[
            create(EP, NGINX, T0),
            bind(EP, NGINX, T0 + 10, true, "0.0.0.0:8080", 0),
            bind(EP, NGINX, T0 + 20, false, "0.0.0.0:8080", 0),
            listen(EP, NGINX, T0 + 30),
            act,
        ],
    );
    assert_eq!(
        evs.iter().filter(|e| e.kind == EventKind::Listen).count(),
        1
    );
}

#[test]
fn accepts_are_counted_by_local_port() {
    let mut j = Joiner::new();
    for i in 0..3 {
        let r = rec(
            EtwProvider::Tcpip,
            1017,
            4,
            T0 + i,
            &addr("LocalAddress", "LocalAddressLength", "10.0.0.5:80"),
        );
        j.on_record(&r, &mut Vec::new()).unwrap();
    }
    assert_eq!(j.accepts().get(&(AF_INET, 80)), Some(&3));
}

#[test]
fn http_sys_url_registrations_and_the_listen_list() {
    let mut j = Joiner::new();
    let add = rec(
        EtwProvider::HttpService,
        31,
        2120,
        T0,
        &[
            ("UrlGroupId", U64(0xFF00_0000_0000_0001)),
            ("Url", Str("http://+:80/".into())),
        ],
    );
    let refused = rec(
        EtwProvider::HttpService,
        31,
        2121,
        T0,
        &[
            ("UrlGroupId", U64(2)),
            ("Url", Str("http://+:81/".into())),
            ("Status", U64(0xC000_0022)),
        ],
    );
    // netsh stores a SOCKADDR; a bare address is read too (which one
    // comes is for a Windows host to say).
    let entry = rec(
        EtwProvider::HttpService,
        19,
        4,
        T0,
        &addr("IpAddress", "IpAddrLength", "10.0.0.5:0"),
    );
    let bare = rec(
        EtwProvider::HttpService,
        19,
        4,
        T0,
        &[
            ("IpAddrLength", U64(4)),
            ("IpAddress", Bytes(vec![10, 0, 0, 7])),
        ],
    );
    // A newer build's AddUrl names the registering process itself: on IIS
    // the WWW service in svchost, not the worker process.
    let by_process = rec(
        EtwProvider::HttpService,
        113,
        4,
        T0,
        &[
            ("UrlGroupId", U64(3)),
            ("Url", Str("http://+:8080/".into())),
            ("ProcessId", U64(1460)),
            (
                "ExecutablePath",
                Str("C:\\Windows\\System32\\svchost.exe".into()),
            ),
        ],
    );
    events(&mut j, &[add, refused, entry, bare, by_process]);
    let regs = j.http.urls_on_port(80);
    assert_eq!(regs.len(), 1);
    assert_eq!(regs[0].pid, 2120);
    assert!(j.http.urls_on_port(81).is_empty(), "a refused registration");
    assert_eq!(j.http.urls_on_port(8080)[0].pid, 1460);
    let mut shapes: Vec<_> = j.shapes_seen().collect();
    shapes.sort();
    assert_eq!(
        shapes,
        [
            "http.sys listen-list entries as a SOCKADDR",
            "http.sys listen-list entries as a bare IPv4 address"
        ]
    );
    assert_eq!(
        j.http.listen_list,
        vec![
            "10.0.0.5".parse::<IpAddr>().unwrap(),
            "10.0.0.7".parse().unwrap()
        ]
    );
    let rem = rec(
        EtwProvider::HttpService,
        33,
        2120,
        T0,
        &[("UrlGroupId", U64(0xFF00_0000_0000_0001))],
    );
    let rem_by_process = rec(
        EtwProvider::HttpService,
        114,
        4,
        T0,
        &[
            ("UrlGroupId", U64(3)),
            ("Url", Str("http://+:8080/".into())),
        ],
    );
    events(&mut j, &[rem, rem_by_process]);
    assert!(j.http.urls.is_empty());
}

/// 26H1's events: RemAllUrls and DeleteUrlGroup naming the process drop a
/// group's URLs; SetIpListenList replaces the whole list (an entry
/// deleted leaves it; an empty list is every address).
#[test]
fn http_sys_groups_deleted_and_listen_lists_set_leave_the_state() {
    let mut j = Joiner::new();
    let add = |j: &mut Joiner, group: u64, url: &str| {
        let r = rec(
            EtwProvider::HttpService,
            113,
            4,
            T0,
            &[
                ("UrlGroupId", U64(group)),
                ("Url", Str(url.into())),
                ("ProcessId", U64(1460)),
            ],
        );
        events(j, &[r]);
    };
    add(&mut j, 1, "http://*:80/");
    add(&mut j, 2, "http://*:8080/");
    add(&mut j, 3, "https://*:443/");
    let rem_all = rec(
        EtwProvider::HttpService,
        115,
        4,
        T0,
        &[("UrlGroupId", U64(1)), ("ProcessId", U64(1460))],
    );
    let delete_refused = rec(
        EtwProvider::HttpService,
        117,
        4,
        T0,
        &[
            ("UrlGroupId", U64(2)),
            ("Status", U64(0xC000_0022)),
            ("ProcessId", U64(1460)),
        ],
    );
    let delete = rec(
        EtwProvider::HttpService,
        117,
        4,
        T0,
        &[("UrlGroupId", U64(3)), ("ProcessId", U64(1460))],
    );
    events(&mut j, &[rem_all, delete_refused, delete]);
    let left: Vec<&str> = j.http.urls.values().map(|r| r.url.as_str()).collect();
    assert_eq!(left, ["http://*:8080/"], "a refused delete keeps its group");

    let set = |list: &str| {
        rec(
            EtwProvider::HttpService,
            122,
            4,
            T0,
            &[("IpList", Str(list.into())), ("ProcessId", U64(3300))],
        )
    };
    events(&mut j, &[set("10.0.0.5, 10.0.0.7")]);
    assert_eq!(
        j.http.listen_list,
        [
            "10.0.0.5".parse::<IpAddr>().unwrap(),
            "10.0.0.7".parse().unwrap()
        ]
    );
    events(&mut j, &[set("[fd00::5]:0;10.0.0.7")]);
    assert_eq!(
        j.http.listen_list,
        [
            "fd00::5".parse::<IpAddr>().unwrap(),
            "10.0.0.7".parse().unwrap()
        ]
    );
    events(&mut j, &[set("")]);
    assert!(j.http.listens_on_all() && j.http.listen_list_known);
    let mut out = Vec::new();
    let e = j
        .on_record(&set("10.0.0.5,localhost"), &mut out)
        .unwrap_err();
    assert_eq!(
        e.to_string(),
        "Microsoft-Windows-HttpService event 122 (HTTPSetupTraceTask): field IpList: \
         \"10.0.0.5,localhost\" is not a list of IP addresses"
    );
    assert_eq!(j.stats().malformed, 1);
    assert!(
        j.http.listens_on_all(),
        "a list not understood changes nothing"
    );
}

#[test]
fn bad_records_name_the_record_and_field_and_the_joiner_goes_on() {
    let mut j = Joiner::new();
    let mut out = Vec::new();
    let no_status = bind(EP, 1, T0, false, "0.0.0.0:80", 0);
    let mut no_status = no_status.clone();
    no_status.fields.remove("Status");
    let e = j.on_record(&no_status, &mut out).unwrap_err();
    assert_eq!(
        e.to_string(),
        "Microsoft-Windows-Winsock-AFD event 1030 (AfdBindWithAddress): field Status is missing"
    );
    let bad_addr = rec(
        EtwProvider::Tcpip,
        1123,
        4,
        T0,
        &[
            ("AddressLength", U64(8)),
            ("SocketAddress", Bytes(vec![9, 0, 0, 80, 1, 2, 3, 4])),
        ],
    );
    let e = j.on_record(&bad_addr, &mut out).unwrap_err();
    assert!(e.to_string().contains("unknown address family 9"), "{e}");
    let unknown = EtwRecord::new(EtwProvider::Tcpip, 1300, "TcpConnectTcbComplete");
    let e = j.on_record(&unknown, &mut out).unwrap_err();
    assert!(e.to_string().contains("not an event bindwatch reads"));
    assert_eq!((j.stats().malformed, j.stats().unknown), (2, 1));
    // Still working.
    let evs = events(
        &mut j,
        &[create(EP, 7, T0), bind(EP, 7, T0, true, "0.0.0.0:80", 0)],
    );
    assert!(evs.is_empty());
}

#[test]
fn a_record_of_an_id_the_session_does_not_ask_for_is_counted_as_unknown() {
    let mut j = Joiner::new();
    // Another release's number for a bind: the task name alone does not
    // make it one (the session's id filter keeps such records out).
    let mut r = bind(EP, 9, T0, false, "127.0.0.1:8080", 0xC000_0022);
    r.id = 2030;
    let mut out = Vec::new();
    let e = j.on_record(&r, &mut out).unwrap_err();
    assert_eq!(
        e.to_string(),
        "Microsoft-Windows-Winsock-AFD event 2030 (AfdBindWithAddress): not an event bindwatch reads"
    );
    assert!(out.is_empty());
    assert_eq!((j.stats().unknown, j.stats().malformed), (1, 0));
}

#[test]
fn unmapped_statuses_are_counted_and_kept_apart() {
    let mut j = Joiner::new();
    let evs = events(
        &mut j,
        &[
            create(EP, 9, T0),
            bind(EP, 9, T0, true, "0.0.0.0:80", 0),
            bind(EP, 9, T0, false, "0.0.0.0:80", 0xC000_0001),
        ],
    );
    assert_eq!(evs[0].error, Some("EUNMAPPED"));
    assert_eq!(j.stats().unmapped_status, 1);
}

#[test]
fn non_ip_sockets_are_ignored_and_the_endpoint_map_is_bounded() {
    let mut j = Joiner::new();
    let mut hv = create(EP, 9, T0);
    hv.fields.insert("AddressFamily".into(), U64(34));
    events(&mut j, &[hv]);
    assert_eq!(j.endpoints(), 0);
    for i in 0..(ENDPOINT_CAPACITY as u64 + 5) {
        j.on_record(&create(i + 1, 9, T0), &mut Vec::new()).unwrap();
    }
    assert_eq!(j.endpoints(), ENDPOINT_CAPACITY);
    assert_eq!(j.stats().endpoints_full, 5);
}

#[test]
fn joined_events_pass_the_shared_decoder_as_the_probes_records_do() {
    let mut j = Joiner::new();
    let mut out = Vec::new();
    for r in [
        create(EP, NGINX, T0),
        bind(EP, NGINX, T0 + 10, true, "[::]:443", 0),
        bind(EP, NGINX, T0 + 20, false, "[::]:443", 0),
        listen(EP, NGINX, T0 + 30),
    ] {
        j.on_record(&r, &mut out).unwrap();
    }
    // The clock the Windows build's `Clock::new()` gives: no offset.
    let mut d = crate::decode::Decoder::new(Clock::with_offset_ns(0));
    let evs: Vec<Event> = out.iter().filter_map(|r| d.decode(r.as_bytes())).collect();
    assert_eq!(evs.len(), 2);
    assert_eq!(d.stats().rejected(), 0);
    assert_eq!(evs[0].endpoint(), "[::]:443");
    // Windows stamps are Unix time already: the clock adds nothing.
    assert_eq!(evs[1].time_ns, T0 + 30);
}

mod arbitrary {
    use super::*;
    use proptest::prelude::*;

    fn value() -> impl Strategy<Value = crate::etw::Value> {
        prop_oneof![
            any::<u64>().prop_map(U64),
            prop_oneof![
                Just(0u64),
                Just(1),
                Just(0xC000_020A),
                Just(2),
                Just(23),
                Just(6),
                Just(17)
            ]
            .prop_map(U64),
            proptest::collection::vec(any::<u8>(), 0..40).prop_map(Bytes),
            prop_oneof![Just("0.0.0.0:80"), Just("10.0.0.6:80"), Just("[::]:443")]
                .prop_map(|a| Bytes(sa(a))),
            "[ -~]{0,24}".prop_map(Str),
        ]
    }

    fn record() -> impl Strategy<Value = EtwRecord> {
        let names = [
            "EnterExit",
            "Endpoint",
            "AddressFamily",
            "SocketType",
            "Protocol",
            "ProcessId",
            "Status",
            "Address",
            "LocalAddress",
            "SocketAddress",
            "AddressLen",
            "Backlog",
            "Url",
            "UrlGroupId",
            "IpAddress",
        ];
        (
            0usize..3,
            prop_oneof![
                Just(1000u16),
                Just(1001),
                Just(1029),
                Just(1030),
                Just(1037),
                Just(1006),
                Just(1017),
                Just(1121),
                Just(1122),
                Just(1123),
                Just(1124),
                Just(19),
                Just(31),
                Just(32),
                Just(33),
                any::<u16>()
            ],
            proptest::collection::vec((0usize..names.len(), value()), 0..8),
            0u64..4,
            any::<u32>(),
        )
            .prop_map(move |(p, id, fields, ep, pid)| {
                let mut r = EtwRecord::new(EtwProvider::ALL[p], id, "Task");
                r.pid = pid;
                r.time_ns = T0 + u64::from(id);
                for (i, v) in fields {
                    r.fields.insert(names[i].to_owned(), v);
                }
                // A few endpoints, so records meet each other.
                if r.fields.contains_key("Endpoint") {
                    r.fields.insert("Endpoint".into(), U64(ep));
                }
                r
            })
    }

    proptest! {
        /// Whatever the records, the joiner never panics, every record is
        /// either read or counted with an error naming it, and what it
        /// emits passes the shared decoder.
        #[test]
        fn any_records_are_read_or_counted(recs in proptest::collection::vec(record(), 1..60)) {
            let mut j = Joiner::new();
            let mut out = Vec::new();
            let mut errors = 0u64;
            for r in &recs {
                if let Err(e) = j.on_record(r, &mut out) {
                    prop_assert!(e.to_string().contains(&r.describe()));
                    errors += 1;
                }
            }
            j.drain(&mut out);
            let s = j.stats();
            prop_assert_eq!(s.records, recs.len() as u64);
            prop_assert_eq!(s.malformed + s.unknown, errors);
            let mut d = crate::decode::Decoder::new(Clock::with_offset_ns(0));
            for ev in &out {
                prop_assert!(d.decode(ev.as_bytes()).is_some());
            }
        }
    }
}

#[test]
fn an_empty_address_on_the_exit_half_keeps_the_bind_and_its_status() {
    let mut j = Joiner::new();
    let mut exit = bind(EP, 9, T0 + 2, false, "0.0.0.0:80", 0xC000_020A);
    exit.fields.insert("AddressLen".into(), U64(0));
    exit.fields.insert("Address".into(), Bytes(Vec::new()));
    let evs = events(
        &mut j,
        &[
            create(EP, 9, T0),
            bind(EP, 9, T0 + 1, true, "0.0.0.0:80", 0),
            exit,
        ],
    );
    assert_eq!(evs.len(), 1);
    assert_eq!(evs[0].error, Some("EADDRINUSE"));
    assert_eq!(evs[0].endpoint(), "0.0.0.0:80");
    assert_eq!(j.stats().malformed, 0);
}

#[test]
fn afd_1029_carries_no_address_and_is_neither_a_bind_nor_malformed() {
    let mut j = Joiner::new();
    let r = EtwRecord::new(EtwProvider::WinsockAfd, 1029, "AfdBind")
        .with("EnterExit", U64(1))
        .with("Endpoint", U64(EP))
        .with("Status", U64(0));
    let evs = events(&mut j, &[create(EP, 9, T0), r]);
    assert!(evs.is_empty());
    assert_eq!((j.stats().malformed, j.stats().unknown), (0, 0));
}

#[test]
fn a_creates_exit_half_with_zeros_keeps_what_the_enter_half_said() {
    let mut j = Joiner::new();
    let exit = rec(
        EtwProvider::WinsockAfd,
        1000,
        9,
        T0 + 1,
        &[("EnterExit", U64(1)), ("Endpoint", U64(EP))],
    );
    let evs = events(
        &mut j,
        &[
            create(EP, 9, T0),
            exit,
            bind(EP, 9, T0 + 2, true, "0.0.0.0:8080", 0),
            bind(EP, 9, T0 + 3, false, "0.0.0.0:8080", 0),
        ],
    );
    assert_eq!(j.endpoints(), 1);
    assert_eq!((evs[0].pid, evs[0].proto), (9, Proto::Tcp));
    let shapes: Vec<_> = j.shapes_seen().collect();
    assert_eq!(shapes, ["AfdCreate exit halves without the family"]);
}

/// An outbound connection's implicit bind: AFD logs 1030 with the wildcard
/// and port 0 on its enter half (or, on builds that log it so, no address
/// at all) and the port given on its exit half.
fn implicit_bind(ep: u64, pid: u32, t: u64, empty_enter: bool, port: u16) -> Vec<EtwRecord> {
    let mut enter = bind(ep, pid, t + 1, true, "0.0.0.0:0", 0);
    if empty_enter {
        enter.fields.insert("AddressLen".into(), U64(0));
        enter.fields.insert("Address".into(), Bytes(Vec::new()));
    }
    vec![
        create(ep, pid, t),
        enter,
        bind(ep, pid, t + 2, false, &format!("0.0.0.0:{port}"), 0),
        close(ep, pid, t + 3),
    ]
}

#[test]
fn a_connect_storms_implicit_binds_are_filed_as_port_zero_binds_and_leave_nothing_behind() {
    use crate::holders::HolderTable;
    use crate::timeline::{Plan, plan};
    let mut j = Joiner::new();
    let mut table = HolderTable::new();
    let (mut binds, mut releases) = (0, 0);
    for i in 0..10_000u64 {
        let mut recs = implicit_bind(
            EP + i,
            5000,
            T0 + i * 10,
            i % 2 == 0,
            49_152 + (i % 16_000) as u16,
        );
        // Every third close is lost: an outbound socket's bind must not
        // need its close to leave the table.
        if i % 3 == 0 {
            recs.pop();
        }
        for ev in events(&mut j, &recs) {
            table.apply(&ev);
            match ev.kind {
                EventKind::Bind => {
                    binds += 1;
                    assert_eq!(ev.port, 0, "filed as a port-0 bind: {ev:?}");
                    assert!(ev.sock_cookie.is_none(), "not a holder: {ev:?}");
                    assert_eq!(plan(&ev), Plan::Aggregate);
                }
                EventKind::Release => {
                    releases += 1;
                    assert_eq!(plan(&ev), Plan::Skip);
                }
                other => panic!("unexpected {other:?}"),
            }
        }
    }
    assert_eq!((binds, releases), (10_000, 10_000 - 3334));
    assert_eq!(
        table.len(),
        0,
        "no holder per outbound socket, closed or not"
    );
    assert_eq!(j.stats().malformed, 0);
    assert!(
        j.shapes_seen()
            .any(|s| s == "AfdBindWithAddress enter halves without an address")
    );
}
