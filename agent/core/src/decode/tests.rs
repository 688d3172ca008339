use super::*;
use bindwatch_common::{AF_INET, IPPROTO_TCP, flags, kind};

fn raw(k: u8, skaddr: u64) -> RawEvent {
    let mut r = RawEvent::zeroed();
    r.kind = k;
    r.family = AF_INET;
    r.protocol = IPPROTO_TCP;
    r.skaddr = skaddr;
    r
}

/// A decoder that has seen the socket at `skaddr` bound to 127.0.0.1, on
/// port 40000 the kernel chose, with socket cookie 11 and namespace
/// cookie 22.
fn bound_with_cookies(skaddr: u64) -> Decoder {
    let mut d = Decoder::new(Clock::with_offset_ns(0));
    let mut b = raw(kind::BIND, skaddr);
    b.flags = flags::SOCK_INFO | flags::BOUND;
    b.addr[..4].copy_from_slice(&[127, 0, 0, 1]);
    b.bound_port = 40000;
    b.sock_cookie = 11;
    b.netns_cookie = 22;
    d.decode(b.as_bytes()).unwrap();
    d
}

#[test]
fn a_stop_without_its_task_takes_the_releasing_one() {
    let mut d = Decoder::new(Clock::with_offset_ns(0));
    let mut rel = raw(kind::RELEASE, 0xffff_0002);
    rel.state = TCP_LISTEN;
    rel.pid = 4242;
    rel.tid = 4243;
    rel.comm[..5].copy_from_slice(b"nginx");
    rel.sock_cookie = 7;
    d.decode(rel.as_bytes()).unwrap();
    // The sock_ops state callback's stop: no task, no cookie.
    let s = d
        .decode(raw(kind::LISTEN_STOP, 0xffff_0002).as_bytes())
        .unwrap();
    assert_eq!((s.pid, s.tid, s.comm.as_str()), (4242, 4243, "nginx"));
    assert_eq!(s.sock_cookie, Some(7));
    // A stop with its own task keeps it.
    d.decode(rel.as_bytes()).unwrap();
    let mut own = raw(kind::LISTEN_STOP, 0xffff_0002);
    own.pid = 1;
    assert_eq!(d.decode(own.as_bytes()).unwrap().pid, 1);
}

#[test]
fn a_release_that_carries_the_stop_yields_both_in_order() {
    let mut d = bound_with_cookies(0xffff_0003);
    let mut rel = raw(kind::RELEASE, 0xffff_0003);
    rel.state = TCP_LISTEN;
    rel.pid = 4242;
    rel.comm[..5].copy_from_slice(b"nginx");
    rel.sock_cookie = 11;
    rel.port = 8080;
    rel.bound_ifindex = 3;
    rel.flags = flags::STOP_FOLDED;
    let mut out = Vec::new();
    d.decode_into(rel.as_bytes(), &mut out);
    let kinds: Vec<_> = out.iter().map(|e| e.kind).collect();
    assert_eq!(kinds, [EventKind::Release, EventKind::ListenStop]);
    let stop = &out[1];
    assert_eq!(
        (stop.pid, stop.comm.as_str(), stop.port),
        (4242, "nginx", 8080)
    );
    assert_eq!((stop.sock_cookie, stop.netns_cookie), (Some(11), Some(22)));
    assert_eq!((stop.state, stop.options), (None, SockOptions::default()));
    assert!(d.by_skaddr.is_empty(), "the stop closed the join");
    // Without the flag, a listener's release waits for its own stop.
    rel.flags = 0;
    out.clear();
    d.decode_into(rel.as_bytes(), &mut out);
    assert_eq!(out.len(), 1);
    assert_eq!(d.by_skaddr.len(), 1);
}

#[test]
fn listen_inherits_cookies_from_its_bind() {
    let mut d = bound_with_cookies(0xffff_0001);
    let l = d.decode(raw(kind::LISTEN, 0xffff_0001).as_bytes()).unwrap();
    assert_eq!((l.sock_cookie, l.netns_cookie), (Some(11), Some(22)));
    let s = d
        .decode(raw(kind::LISTEN_STOP, 0xffff_0001).as_bytes())
        .unwrap();
    assert_eq!(s.netns_cookie, Some(22));
    d.decode(raw(kind::RELEASE, 0xffff_0001).as_bytes())
        .unwrap();
    let again = d.decode(raw(kind::LISTEN, 0xffff_0001).as_bytes()).unwrap();
    assert_eq!(again.netns_cookie, None, "released sockets are forgotten");
}

#[test]
fn release_of_a_non_listener_forgets_the_socket() {
    let mut d = Decoder::new(Clock::with_offset_ns(0));
    let mut b = raw(kind::BIND, 9);
    b.netns_cookie = 4;
    d.decode(b.as_bytes()).unwrap();
    d.decode(raw(kind::RELEASE, 9).as_bytes()).unwrap();
    let l = d.decode(raw(kind::LISTEN, 9).as_bytes()).unwrap();
    assert_eq!(l.netns_cookie, None);
}

#[test]
fn failed_bind_is_not_remembered() {
    let mut d = Decoder::new(Clock::with_offset_ns(0));
    let mut b = raw(kind::BIND, 5);
    b.ret = -98;
    b.netns_cookie = 3;
    d.decode(b.as_bytes()).unwrap();
    let l = d.decode(raw(kind::LISTEN, 5).as_bytes()).unwrap();
    assert_eq!(l.netns_cookie, None);
}

#[test]
fn malformed_records_are_counted_not_fatal() {
    let mut d = Decoder::new(Clock::with_offset_ns(0));
    assert!(d.decode(&[1, 2, 3]).is_none());
    let mut bad = raw(kind::BIND, 0);
    bad.kind = 77;
    assert!(d.decode(bad.as_bytes()).is_none());
    let mut v = raw(kind::BIND, 0);
    v.version = 999;
    assert!(d.decode(v.as_bytes()).is_none());
    let mut f = raw(kind::BIND, 0);
    f.family = 1;
    assert!(d.decode(f.as_bytes()).is_none());
    let s = d.stats();
    assert_eq!(
        (s.bad_size, s.bad_kind, s.bad_version, s.bad_family),
        (1, 1, 1, 1)
    );
    assert_eq!(s.rejected(), 4);
    assert_eq!(s.decoded, 0);
    assert!(d.decode(raw(kind::BIND, 0).as_bytes()).is_some());
}

#[test]
fn arbitrary_bytes_never_panic() {
    let mut d = Decoder::new(Clock::with_offset_ns(0));
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    for len in [0usize, 1, 119, 120, 121, 240] {
        for _ in 0..200 {
            let buf: Vec<u8> = (0..len)
                .map(|_| {
                    seed ^= seed << 13;
                    seed ^= seed >> 7;
                    seed ^= seed << 17;
                    seed as u8
                })
                .collect();
            let _ = d.decode(&buf);
        }
    }
}

/// The release hook's record of an unmarked TCP socket: no address.
fn unmarked_release(skaddr: u64, cookie: u64, state: u8) -> RawEvent {
    let mut r = raw(kind::RELEASE, skaddr);
    r.flags = flags::ADDRESS_JOINED;
    r.sock_cookie = cookie;
    r.netns_cookie = 22;
    r.state = state;
    r.pid = 4242;
    r
}

#[test]
fn an_unmarked_release_takes_the_address_its_bind_reported() {
    let mut d = bound_with_cookies(0xffff_0010);
    let rel = d
        .decode(unmarked_release(0xffff_0010, 11, TCP_LISTEN).as_bytes())
        .unwrap();
    assert_eq!(
        (rel.addr.to_string(), rel.port, rel.bound_port, rel.proto),
        ("127.0.0.1".to_string(), 40000, Some(40000), Proto::Tcp)
    );
    assert_eq!((rel.state, rel.pid), (Some(TCP_LISTEN), 4242));
    // The state callback's stop follows, and closes the join.
    let stop = d
        .decode(raw(kind::LISTEN_STOP, 0xffff_0010).as_bytes())
        .unwrap();
    assert_eq!((stop.pid, stop.sock_cookie), (4242, Some(11)));
    assert!(d.by_skaddr.is_empty(), "the stop after the release ends it");
}

#[test]
fn a_stop_without_a_release_keeps_the_address_for_the_release_to_come() {
    let mut d = bound_with_cookies(0xffff_0011);
    // shutdown(): LISTEN to CLOSE, the socket still bound.
    d.decode(raw(kind::LISTEN_STOP, 0xffff_0011).as_bytes())
        .unwrap();
    let rel = d
        .decode(unmarked_release(0xffff_0011, 11, 7).as_bytes())
        .unwrap();
    assert_eq!(
        (rel.addr.to_string(), rel.port),
        ("127.0.0.1".into(), 40000)
    );
    assert!(d.by_skaddr.is_empty(), "a release while closed ends it");
}

#[test]
fn a_listener_whose_bind_was_not_seen_is_joined_to_its_listen() {
    let mut d = Decoder::new(Clock::with_offset_ns(0));
    // Autobound by listen(): the sock_ops callback's address and cookie.
    let mut l = raw(kind::LISTEN, 0xffff_0012);
    l.flags = flags::LISTEN_ADDR;
    l.addr[..4].copy_from_slice(&[10, 0, 0, 2]);
    l.port = 5000;
    l.bound_port = 5000;
    l.sock_cookie = 5;
    d.decode(l.as_bytes()).unwrap();
    let rel = d
        .decode(unmarked_release(0xffff_0012, 5, TCP_LISTEN).as_bytes())
        .unwrap();
    assert_eq!((rel.addr.to_string(), rel.port), ("10.0.0.2".into(), 5000));
}

#[test]
fn an_unmarked_release_of_a_socket_not_seen_bound_is_dropped_and_counted() {
    let mut d = bound_with_cookies(0xffff_0013);
    // Never bound (a client whose connect failed): no entry.
    assert!(
        d.decode(unmarked_release(0xffff_0099, 12, 7).as_bytes())
            .is_none()
    );
    // The bound socket's memory, reused by one never bound: a new cookie.
    assert!(
        d.decode(unmarked_release(0xffff_0013, 13, 7).as_bytes())
            .is_none()
    );
    assert!(d.by_skaddr.is_empty(), "the stale entry is dropped");
    let s = d.stats();
    assert_eq!((s.releases_unjoined, s.rejected(), s.decoded), (2, 0, 3));
}
