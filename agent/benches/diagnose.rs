//! The fast path of a failed bind's diagnosis: from the event to the
//! conflicting holders, against a table of 10k listeners held by 10
//! processes (plus 10k more in other namespaces). The baseline is the
//! naive lookup, every socket of the table tried against the conflict
//! rules; the ratio is what the per-port index buys.
//!
//! `cargo bench -p bindwatch --bench diagnose`

use std::hint::black_box;

use bindwatch_common::{IPPROTO_TCP, kind};
use bindwatch_core::clock::Clock;
use bindwatch_core::conflict::conflict;
use bindwatch_core::event::Event;
use bindwatch_core::holders::{HolderTable, NoFacts, diagnose};
use bindwatch_core::testing;
use criterion::{Criterion, criterion_group, criterion_main};

fn event(k: u8, netns: u64, cookie: u64, pid: u32, addr: [u8; 4], port: u16, ret: i32) -> Event {
    let ip = std::net::Ipv4Addr::from(addr).to_string();
    let mut r = testing::with_comm(testing::raw(k, &ip, port, IPPROTO_TCP, ret), "server");
    r.pid = pid;
    r.tid = pid;
    r.netns_cookie = netns;
    r.sock_cookie = cookie;
    Event::from_raw(&r, &Clock::with_offset_ns(0))
}

/// 10k listeners on ports 20000.. over 10 pids in namespace 1, and the
/// same in namespace 2.
fn table() -> HolderTable {
    let mut t = HolderTable::new();
    let mut cookie = 1;
    for netns in [1u64, 2] {
        for i in 0..10_000u32 {
            let pid = 1000 + (i % 10);
            let port = 20_000 + i as u16;
            for k in [kind::BIND, kind::LISTEN] {
                t.apply(&event(k, netns, cookie, pid, [0, 0, 0, 0], port, 0));
            }
            cookie += 1;
        }
    }
    t
}

fn bench(c: &mut Criterion) {
    let t = table();
    let failed = event(kind::BIND, 1, 0, 77, [10, 0, 0, 6], 25_000, -98);
    let d = diagnose(&t, &failed, &mut NoFacts).unwrap();
    assert_eq!(d.holders.len(), 1);

    let mut g = c.benchmark_group("diagnose_eaddrinuse_10k_listeners");
    g.bench_function("baseline_scan_every_socket", |b| {
        b.iter(|| {
            let req = {
                let mut s =
                    bindwatch_core::conflict::SockSpec::new(failed.proto, failed.addr, failed.port);
                s.netns = failed.netns_cookie;
                s.state = bindwatch_core::conflict::SockState::Bound;
                s
            };
            let n = t
                .iter()
                .filter(|h| conflict(&req, &h.spec()).is_some())
                .count();
            black_box(n)
        })
    });
    g.bench_function("indexed_table_with_explanation", |b| {
        b.iter(|| black_box(diagnose(&t, black_box(&failed), &mut NoFacts)))
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
