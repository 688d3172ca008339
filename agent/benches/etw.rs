//! The Windows event path measured on any machine: ETW records (shaped as
//! ferrisetw yields them) joined into raw events and decoded, per record.
//! The baseline is the Linux path's decoding of ready raw events, the least
//! any source must cost the loop. Reported per record; records/s = 1e9 / ns.
//!
//! `cargo bench -p bindwatch --bench etw`

use std::hint::black_box;
use std::net::SocketAddr;

use bindwatch_core::clock::Clock;
use bindwatch_core::decode::Decoder;
use bindwatch_core::etw::record::Value::{Bytes, U64};
use bindwatch_core::etw::sockaddr::encode;
use bindwatch_core::etw::{EtwProvider, EtwRecord, Joiner};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

fn rec(p: EtwProvider, id: u16, task: &str, pid: u32, t: u64) -> EtwRecord {
    let mut r = EtwRecord::new(p, id, task);
    r.pid = pid;
    r.tid = pid;
    r.time_ns = t;
    r
}

/// Per cycle: a server that binds, listens and closes, and one whose bind
/// fails (with TCPIP's twin record): ten records, four events.
fn records(cycles: u32) -> Vec<EtwRecord> {
    let mut v = Vec::new();
    for i in 0..cycles {
        let t = 1_700_000_000_000_000_000 + u64::from(i) * 1_000;
        let port = 20_000 + (i % 10_000) as u16;
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let a = encode(addr);
        for (k, fail) in [(0u64, false), (1, true)] {
            let ep = u64::from(i) * 2 + k + 1;
            let pid = 1000 + i % 10;
            let st = if fail { 0xC000_020A } else { 0 };
            v.push(
                rec(EtwProvider::WinsockAfd, 1000, "AfdCreate", pid, t)
                    .with("Endpoint", U64(ep))
                    .with("AddressFamily", U64(2))
                    .with("SocketType", U64(1))
                    .with("Protocol", U64(6))
                    .with("ProcessId", U64(u64::from(pid))),
            );
            v.push(
                rec(
                    EtwProvider::WinsockAfd,
                    1030,
                    "AfdBindWithAddress",
                    pid,
                    t + 1,
                )
                .with("EnterExit", U64(0))
                .with("Endpoint", U64(ep))
                .with("Address", Bytes(a.clone())),
            );
            if fail {
                v.push(
                    rec(
                        EtwProvider::Tcpip,
                        1006,
                        "TcpBindEndpointPortFailure",
                        4,
                        t + 2,
                    )
                    .with("LocalAddress", Bytes(a.clone()))
                    .with("Status", U64(st)),
                );
            }
            v.push(
                rec(
                    EtwProvider::WinsockAfd,
                    1030,
                    "AfdBindWithAddress",
                    pid,
                    t + 3,
                )
                .with("EnterExit", U64(1))
                .with("Endpoint", U64(ep))
                .with("Status", U64(st))
                .with("Address", Bytes(a.clone())),
            );
            if !fail {
                v.push(
                    rec(EtwProvider::WinsockAfd, 1037, "AfdListen", pid, t + 4)
                        .with("EnterExit", U64(1))
                        .with("Endpoint", U64(ep))
                        .with("Backlog", U64(128))
                        .with("Status", U64(0)),
                );
            }
            v.push(
                rec(EtwProvider::WinsockAfd, 1001, "AfdClose", pid, t + 5)
                    .with("Endpoint", U64(ep)),
            );
        }
    }
    v
}

fn bench(c: &mut Criterion) {
    let recs = records(2_000);
    // The same events, already joined: what the Linux ring buffer hands over.
    let mut joined = Vec::new();
    let mut j = Joiner::new();
    for r in &recs {
        j.on_record(r, &mut joined).unwrap();
    }
    j.drain(&mut joined);
    assert_eq!(joined.len(), 2_000 * 4);
    let mut g = c.benchmark_group("etw_per_record");
    g.throughput(Throughput::Elements(recs.len() as u64));
    g.bench_function("baseline_decode_ready_raw_events", |b| {
        b.iter(|| {
            let mut d = Decoder::new(Clock::with_offset_ns(0));
            for ev in &joined {
                black_box(d.decode(ev.as_bytes()));
            }
        })
    });
    g.bench_function("join_records_and_decode", |b| {
        b.iter(|| {
            let mut j = Joiner::new();
            let mut d = Decoder::new(Clock::with_offset_ns(0));
            let mut out = Vec::with_capacity(64);
            for r in &recs {
                let _ = j.on_record(r, &mut out);
                for ev in out.drain(..) {
                    black_box(d.decode(ev.as_bytes()));
                }
            }
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
