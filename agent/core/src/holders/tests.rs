use std::net::IpAddr;

use bindwatch_common::{IPPROTO_TCP, IPPROTO_UDP, RawEvent, flags, kind};
use proptest::prelude::*;

use super::*;
use crate::conflict::Reason;

fn raw(k: u8, addr: &str, port: u16, proto: u8) -> RawEvent {
    crate::testing::raw(k, addr, port, proto, 0)
}

fn ev(r: &RawEvent) -> Event {
    crate::testing::event(r)
}

/// A successful bind (and listen, for TCP) by `pid` on socket `cookie`.
fn hold(t: &mut HolderTable, cookie: u64, pid: u32, addr: &str, port: u16, proto: u8) {
    let mut r = raw(kind::BIND, addr, port, proto);
    r.sock_cookie = cookie;
    r.pid = pid;
    r.ts_ns = cookie;
    t.apply(&ev(&r));
    if proto == IPPROTO_TCP {
        r.kind = kind::LISTEN;
        t.apply(&ev(&r));
    }
}

fn fail(addr: &str, port: u16, proto: u8, errno: i32) -> Event {
    let mut r = raw(kind::BIND, addr, port, proto);
    r.ret = -errno;
    r.pid = 999;
    r.flags = flags::SOCK_INFO;
    ev(&r)
}

fn blamed(d: &Diagnosis) -> Vec<(u32, Reason)> {
    d.holders
        .iter()
        .map(|b| (b.holder.owners[0].pid, b.reason))
        .collect()
}

#[test]
fn story_1_wildcard_holder_is_named_with_the_iplisten_hint() {
    let mut t = HolderTable::new();
    hold(&mut t, 1, 100, "0.0.0.0", 80, IPPROTO_TCP);
    hold(&mut t, 2, 200, "0.0.0.0", 8080, IPPROTO_TCP);
    let d = diagnose(&t, &fail("10.0.0.6", 80, IPPROTO_TCP, 98), &mut NoFacts).unwrap();
    assert_eq!(d.kind, DiagnosisKind::Conflict);
    assert_eq!(blamed(&d), vec![(100, Reason::WildcardHolder)]);
    assert!(d.holders[0].certain);
    assert!(d.hint.unwrap().contains("iplisten"));
    assert!(d.summary.contains("0.0.0.0:80"), "{}", d.summary);
}

#[test]
fn story_2_dual_stack_holder_with_unknown_v6only_is_blamed_uncertainly() {
    let mut t = HolderTable::new();
    hold(&mut t, 1, 100, "::", 443, IPPROTO_TCP);
    let d = diagnose(&t, &fail("0.0.0.0", 443, IPPROTO_TCP, 98), &mut NoFacts).unwrap();
    assert_eq!(blamed(&d), vec![(100, Reason::DualStackHolder)]);
    assert!(!d.holders[0].certain, "v6only was not read");
    assert!(d.hint.unwrap().contains("IPV6_V6ONLY"));
}

#[test]
fn a_certain_blame_wins_over_an_uncertain_one() {
    let mut t = HolderTable::new();
    hold(&mut t, 1, 100, "::", 443, IPPROTO_TCP);
    hold(&mut t, 2, 200, "0.0.0.0", 443, IPPROTO_TCP);
    let d = diagnose(&t, &fail("10.0.0.1", 443, IPPROTO_TCP, 98), &mut NoFacts).unwrap();
    assert_eq!(blamed(&d), vec![(200, Reason::WildcardHolder)]);
}

#[test]
fn story_3_the_holder_is_itself() {
    let mut t = HolderTable::new();
    hold(&mut t, 1, 999, "127.0.0.1", 8443, IPPROTO_TCP);
    let d = diagnose(&t, &fail("127.0.0.1", 8443, IPPROTO_TCP, 98), &mut NoFacts).unwrap();
    assert_eq!(blamed(&d), vec![(999, Reason::SameAddress)]);
    assert!(d.summary.contains("its own process"), "{}", d.summary);
}

#[test]
fn story_8_other_namespaces_are_never_blamed() {
    let mut t = HolderTable::new();
    let mut r = raw(kind::BIND, "0.0.0.0", 80, IPPROTO_TCP);
    r.sock_cookie = 5;
    r.netns_cookie = 2;
    r.pid = 500;
    t.apply(&ev(&r));
    let d = diagnose(&t, &fail("0.0.0.0", 80, IPPROTO_TCP, 98), &mut NoFacts).unwrap();
    assert_eq!(d.kind, DiagnosisKind::HolderNotFound);
    assert!(d.holders.is_empty());
}

#[test]
fn story_9_udp_resolver() {
    let mut t = HolderTable::new();
    hold(&mut t, 1, 53, "127.0.0.53", 53, IPPROTO_UDP);
    hold(&mut t, 2, 54, "0.0.0.0", 53, IPPROTO_TCP);
    let d = diagnose(&t, &fail("0.0.0.0", 53, IPPROTO_UDP, 98), &mut NoFacts).unwrap();
    assert_eq!(blamed(&d), vec![(53, Reason::WildcardRequest)]);
}

#[test]
fn released_holder_is_remembered_as_last_known() {
    let mut t = HolderTable::new();
    hold(&mut t, 1, 100, "0.0.0.0", 80, IPPROTO_TCP);
    let mut r = raw(kind::RELEASE, "0.0.0.0", 80, IPPROTO_TCP);
    r.sock_cookie = 1;
    r.ts_ns = 77;
    t.apply(&ev(&r));
    assert!(t.is_empty());
    let d = diagnose(&t, &fail("0.0.0.0", 80, IPPROTO_TCP, 98), &mut NoFacts).unwrap();
    assert_eq!(d.kind, DiagnosisKind::HolderNotFound);
    let last = d.last_known.unwrap();
    assert_eq!(last.holder.owners[0].pid, 100);
    assert_eq!(last.gone_ns, 77);
    assert!(
        d.summary.contains("last held by test (pid 100"),
        "{}",
        d.summary
    );
}

#[test]
fn listen_stop_keeps_the_port_until_release() {
    let mut t = HolderTable::new();
    hold(&mut t, 1, 100, "0.0.0.0", 80, IPPROTO_TCP);
    let mut r = raw(kind::LISTEN_STOP, "0.0.0.0", 80, IPPROTO_TCP);
    r.sock_cookie = 1;
    t.apply(&ev(&r));
    assert_eq!(t.get(1).unwrap().state, SockState::Bound);
}

struct Facts;
impl HostFacts for Facts {
    fn unprivileged_port_start(&mut self, _: Option<u64>, _: u32) -> Option<u16> {
        Some(1024)
    }
    fn addresses(&mut self, _: Option<u64>, _: u32) -> Option<Vec<IpAddr>> {
        Some(vec![
            "127.0.0.1".parse().unwrap(),
            "10.0.0.5".parse().unwrap(),
        ])
    }
    fn port_sockets(
        &mut self,
        _: Option<u64>,
        _: u32,
        proto: Proto,
        port: u16,
    ) -> Option<(Vec<Holder>, Vec<ProcessInfo>)> {
        Some((
            vec![Holder {
                cookie: 9,
                netns: 1,
                proto,
                addr: "10.0.0.5".parse().unwrap(),
                port,
                state: SockState::TimeWait,
                v6only: Some(false),
                reuseaddr: None,
                reuseport: None,
                bound_ifindex: None,
                uid: 0,
                owners: Default::default(),
                owners_verified: true,
                since_ns: 0,
                source: Source::Snapshot,
                remote: None,
            }],
            vec![],
        ))
    }
}

#[test]
fn eacces_names_the_sysctl_and_the_capability() {
    let d = diagnose(
        &HolderTable::new(),
        &fail("0.0.0.0", 80, IPPROTO_TCP, 13),
        &mut Facts,
    )
    .unwrap();
    assert_eq!(d.kind, DiagnosisKind::PrivilegedPort);
    assert_eq!(d.unprivileged_port_start, Some(1024));
    assert!(d.summary.contains("below 1024"), "{}", d.summary);
    assert!(d.summary.contains("CAP_NET_BIND_SERVICE"), "{}", d.summary);
}

#[test]
fn eaddrnotavail_lists_the_namespace_addresses() {
    let d = diagnose(
        &HolderTable::new(),
        &fail("192.0.2.1", 80, IPPROTO_TCP, 99),
        &mut Facts,
    )
    .unwrap();
    assert_eq!(d.kind, DiagnosisKind::AddressNotAvailable);
    assert!(d.summary.contains("127.0.0.1, 10.0.0.5"), "{}", d.summary);
}

#[test]
fn time_wait_comes_from_the_kernel_fallback() {
    let d = diagnose(
        &HolderTable::new(),
        &fail("0.0.0.0", 8080, IPPROTO_TCP, 98),
        &mut Facts,
    )
    .unwrap();
    assert_eq!(d.kind, DiagnosisKind::Conflict);
    assert_eq!(d.holders[0].reason, Reason::TimeWait);
    assert!(d.summary.contains("TIME_WAIT"), "{}", d.summary);
}

fn snap_holder(cookie: u64, port: u16, owners: Vec<u32>) -> Holder {
    Holder {
        cookie,
        netns: 1,
        proto: Proto::Tcp,
        addr: "0.0.0.0".parse().unwrap(),
        port,
        state: SockState::Listen,
        v6only: Some(false),
        reuseaddr: Some(false),
        reuseport: Some(false),
        bound_ifindex: None,
        uid: 0,
        owners: owners.into(),
        owners_verified: true,
        since_ns: 5,
        source: Source::Snapshot,
        remote: None,
    }
}

#[test]
fn reconciliation_counts_every_correction() {
    let mut t = HolderTable::new();
    hold(&mut t, 1, 100, "0.0.0.0", 80, IPPROTO_TCP); // kernel agrees
    hold(&mut t, 2, 100, "0.0.0.0", 81, IPPROTO_TCP); // kernel lost it
    hold(&mut t, 3, 100, "0.0.0.0", 82, IPPROTO_TCP); // kernel: not listening
    t.snapshot_begins();
    let mut changed = snap_holder(3, 82, vec![100]);
    changed.state = SockState::Bound;
    let snap = Snapshot {
        taken_ns: 1_000,
        holders: vec![
            snap_holder(1, 80, vec![100, 101]),
            changed,
            snap_holder(4, 83, vec![102]),
        ],
        processes: vec![],
        netns: [1].into(),
        others: Default::default(),
    };
    let r = t.reconcile(snap);
    assert_eq!((r.missing, r.stale, r.changed), (1, 1, 1), "{r:?}");
    let s = t.stats();
    assert_eq!(s.drift(), 3);
    assert_eq!(
        t.get(1).unwrap().owners.as_slice(),
        [100, 101],
        "fork-shared owners"
    );
    assert!(t.get(1).unwrap().owners_verified);
    assert!(t.get(2).is_none());
    assert_eq!(t.get(3).unwrap().state, SockState::Bound);
    assert!(t.get(4).is_some());
}

#[test]
fn reconciliation_does_not_undo_newer_events() {
    let mut t = HolderTable::new();
    t.snapshot_begins();
    // Released after the snapshot listed it: must not come back.
    hold(&mut t, 7, 100, "0.0.0.0", 90, IPPROTO_TCP);
    let mut r = raw(kind::RELEASE, "0.0.0.0", 90, IPPROTO_TCP);
    r.sock_cookie = 7;
    t.apply(&ev(&r));
    // Bound after the snapshot began: kernel did not list it, keep it.
    let mut late = raw(kind::BIND, "0.0.0.0", 91, IPPROTO_TCP);
    late.sock_cookie = 8;
    late.ts_ns = 5_000;
    t.apply(&ev(&late));
    let r = t.reconcile(Snapshot {
        taken_ns: 1_000,
        holders: vec![snap_holder(7, 90, vec![100])],
        processes: vec![],
        netns: [1].into(),
        others: Default::default(),
    });
    assert_eq!((r.missing, r.stale), (0, 0), "{r:?}");
    assert!(t.get(7).is_none());
    assert!(t.get(8).is_some());
}

#[test]
fn who_query_filters_by_blocked_address() {
    let mut t = HolderTable::new();
    hold(&mut t, 1, 100, "0.0.0.0", 80, IPPROTO_TCP);
    hold(&mut t, 2, 200, "10.0.0.7", 80, IPPROTO_TCP);
    hold(&mut t, 3, 300, "0.0.0.0", 80, IPPROTO_UDP);
    let q: WhoQuery = "10.0.0.6:80/tcp".parse().unwrap();
    let v = q.run(&t);
    assert_eq!(v.len(), 1);
    assert_eq!(v[0].owners[0].pid, 100);
    assert!(v[0].blocks[0].contains("every IPv4 address"));
    assert_eq!("80".parse::<WhoQuery>().unwrap().run(&t).len(), 3);
}

fn arb_addr() -> impl Strategy<Value = IpAddr> {
    prop_oneof![
        Just("0.0.0.0".parse().unwrap()),
        Just("10.0.0.6".parse().unwrap()),
        Just("10.0.0.7".parse().unwrap()),
        Just("127.0.0.1".parse().unwrap()),
        Just("::".parse().unwrap()),
        Just("::1".parse().unwrap()),
        Just("::ffff:10.0.0.6".parse().unwrap()),
    ]
}

prop_compose! {
    fn arb_holder()(cookie in 1u64..1_000_000, netns in 1u64..4, udp in any::<bool>(),
                    addr in arb_addr(), port in 79u16..82, v6only in proptest::option::of(any::<bool>()),
                    ra in proptest::option::of(any::<bool>()), rp in proptest::option::of(any::<bool>()),
                    uid in 0u32..2, listen in any::<bool>()) -> Holder {
        Holder {
            cookie, netns,
            proto: if udp { Proto::Udp } else { Proto::Tcp },
            addr, port,
            state: if listen && !udp { SockState::Listen } else { SockState::Bound },
            v6only, reuseaddr: ra, reuseport: rp, bound_ifindex: None, uid,
            owners: smallvec::smallvec![cookie as u32], owners_verified: true, since_ns: 0,
            source: Source::Snapshot,
            remote: None,
        }
    }
}

proptest! {
    /// Whatever the table holds, a diagnosis never names a holder from
    /// another namespace, another protocol or port, or whose address does
    /// not overlap the request's.
    #[test]
    fn never_blames_a_non_overlapping_or_foreign_holder(
        holders in proptest::collection::vec(arb_holder(), 0..24),
        addr in arb_addr(), port in 79u16..82, udp in any::<bool>(),
        ra in any::<bool>(), rp in any::<bool>(), netns in 1u64..4,
    ) {
        let mut t = HolderTable::new();
        for h in holders {
            t.insert(h);
        }
        let mut r = raw(kind::BIND, &addr.to_string(), port, if udp { IPPROTO_UDP } else { IPPROTO_TCP });
        r.ret = -98;
        r.netns_cookie = netns;
        r.flags = flags::SOCK_INFO
            | if ra { flags::REUSEADDR } else { 0 }
            | if rp { flags::REUSEPORT } else { 0 };
        let e = ev(&r);
        let d = diagnose(&t, &e, &mut NoFacts).unwrap();
        for b in &d.holders {
            let h = t.get(b.holder.cookie).unwrap();
            prop_assert_eq!(h.netns, netns);
            prop_assert_eq!(h.proto, e.proto);
            prop_assert_eq!(h.port, port);
            // Unknown options can only widen an overlap (a holder without
            // IPV6_V6ONLY covers more), so judge against that widest reading.
            let req = crate::conflict::SockSpec::new(e.proto, addr, port);
            let mut widest = h.spec();
            widest.v6only = false;
            prop_assert!(
                crate::conflict::overlap(&req, &widest).is_some(),
                "{} blamed for {}", b.holder.endpoint, addr
            );
        }
    }
}

#[test]
fn a_threads_own_name_does_not_send_its_process_back_to_proc() {
    let mut t = HolderTable::new();
    let bind = |cookie: u64, tid: u32, comm: &str| {
        let mut r =
            crate::testing::with_comm(raw(kind::BIND, "127.0.0.1", 9000, IPPROTO_TCP), comm);
        r.sock_cookie = cookie;
        r.pid = 4000;
        r.tid = tid;
        ev(&r)
    };
    t.apply(&bind(1, 4000, "java"));
    assert_eq!(t.take_incomplete(64), vec![4000]);
    t.set_process(ProcessInfo {
        pid: 4000,
        comm: "java".into(),
        ..ProcessInfo::default()
    });
    // A worker thread named by its program binds: the same process.
    t.apply(&bind(2, 4001, "http-nio-8080"));
    assert_eq!(t.take_incomplete(64), Vec::<u32>::new());
    // The main thread under a new name: an exec, or the pid reused.
    t.apply(&bind(3, 4000, "python3"));
    assert_eq!(t.take_incomplete(64), vec![4000]);
}

#[test]
fn a_holder_stays_small_enough_for_a_table_of_100k() {
    // The table keeps one per socket; at 100k sockets each 8 bytes here is
    // about 1 MiB of resident memory (BENCHMARKS.md, footprint).
    let size = std::mem::size_of::<Holder>();
    assert!(size <= 96, "Holder is {size} bytes");
    // Up to four pids live inline, with no allocation of their own.
    let four: Owners = smallvec::smallvec![1, 2, 3, 4];
    assert!(!four.spilled());
    assert_eq!(
        std::mem::size_of::<Owners>(),
        std::mem::size_of::<Vec<u32>>()
    );
}
