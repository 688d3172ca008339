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

/// A decoder that has seen the socket at `skaddr` bound, with socket
/// cookie 11 and namespace cookie 22.
fn bound_with_cookies(skaddr: u64) -> Decoder {
    let mut d = Decoder::new(Clock::with_offset_ns(0));
    let mut b = raw(kind::BIND, skaddr);
    b.flags = flags::SOCK_INFO | flags::BOUND;
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
