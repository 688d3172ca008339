//! The per-event pipeline on one core: decode, holder-table upkeep,
//! correlation of failures, metrics aggregation and the timeline's
//! disposition, over a synthetic mix (bind, listen, a failed bind, listen
//! stop, release per cycle). The baseline is decoding alone, the least any
//! consumer must do. Reported per event; events/s = 1e9 / ns.
//!
//! `cargo bench -p bindwatch --bench pipeline`

use std::hint::black_box;

use bindwatch::clock::Clock;
use bindwatch::decode::Decoder;
use bindwatch::holders::{HolderTable, NoFacts, diagnose};
use bindwatch::metrics::Aggregate;
use bindwatch::timeline::{Plan, plan, record};
use bindwatch_common::{AF_INET, IPPROTO_TCP, RawEvent, flags, kind};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

fn records(cycles: u32) -> Vec<RawEvent> {
    let mut v = Vec::new();
    for i in 0..cycles {
        let port = 20_000 + (i % 10_000) as u16;
        let mk = |k: u8, ret: i32, cookie: u64| {
            let mut r = RawEvent::zeroed();
            r.kind = k;
            r.family = AF_INET;
            r.protocol = IPPROTO_TCP;
            r.flags = flags::SOCK_INFO | if ret == 0 { flags::BOUND } else { 0 };
            r.addr[..4].copy_from_slice(&[127, 0, 0, 1]);
            r.port = port;
            r.bound_port = port;
            r.ret = ret;
            r.pid = 1000 + i % 10;
            r.tid = r.pid;
            r.netns_cookie = 1;
            r.sock_cookie = cookie;
            r.skaddr = cookie;
            r.state = 10;
            r.comm[..6].copy_from_slice(b"server");
            r
        };
        let c = 1 + i as u64 * 2;
        v.push(mk(kind::BIND, 0, c));
        v.push(mk(kind::LISTEN, 0, c));
        v.push(mk(kind::BIND, -98, c + 1));
        v.push(mk(kind::LISTEN_STOP, 0, c));
        v.push(mk(kind::RELEASE, 0, c));
    }
    v
}

fn bench(c: &mut Criterion) {
    let raw = records(2_000);
    let bytes: Vec<&[u8]> = raw.iter().map(|r| r.as_bytes()).collect();
    let mut g = c.benchmark_group("pipeline_per_event");
    g.throughput(Throughput::Elements(bytes.len() as u64));
    g.bench_function("baseline_decode_only", |b| {
        b.iter(|| {
            let mut d = Decoder::new(Clock::with_offset_ns(0));
            for x in &bytes {
                black_box(d.decode(x));
            }
        })
    });
    g.bench_function("decode_table_correlate_metrics_timeline", |b| {
        b.iter(|| {
            let mut d = Decoder::new(Clock::with_offset_ns(0));
            let mut t = HolderTable::new();
            let mut agg = Aggregate::default();
            for x in &bytes {
                let Some(ev) = d.decode(x) else { continue };
                t.apply(&ev);
                let diag = if ev.failed() {
                    diagnose(&t, &ev, &mut NoFacts)
                } else {
                    None
                };
                agg.event(&ev, diag.as_ref());
                // What the daemon's loop does for the timeline: decide, and
                // hand a clone to the writer thread.
                if plan(&ev) == Plan::Record {
                    let (ev, d) = (ev.clone(), diag.clone());
                    let build: Box<dyn FnOnce() -> _ + Send> =
                        Box::new(move || record(&ev, d.as_ref()));
                    drop(black_box(build));
                }
            }
        })
    });
    // The writer thread's share: building the records.
    let mut d = Decoder::new(Clock::with_offset_ns(0));
    let mut t = HolderTable::new();
    let evs: Vec<_> = bytes
        .iter()
        .filter_map(|x| d.decode(x))
        .map(|ev| {
            t.apply(&ev);
            let diag = ev
                .failed()
                .then(|| diagnose(&t, &ev, &mut NoFacts))
                .flatten();
            (ev, diag)
        })
        .collect();
    g.bench_function("writer_thread_record_building", |b| {
        b.iter(|| {
            for (ev, diag) in &evs {
                black_box(record(ev, diag.as_ref()));
            }
        })
    });
    // The writer thread's other share: SQLite inserts, in the batches it
    // commits (one transaction per batch), into a real database file.
    let recs: Vec<_> = evs
        .iter()
        .filter_map(|(ev, diag)| record(ev, diag.as_ref()))
        .collect();
    let dir = std::env::temp_dir().join(format!("bindwatch-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut conn = bindwatch::store::open_rw(&dir.join("timeline.db")).unwrap();
    g.throughput(Throughput::Elements(recs.len() as u64));
    g.bench_function("writer_thread_sqlite_insert_per_record", |b| {
        b.iter(|| bindwatch::store::write_batch(&mut conn, &recs).unwrap())
    });
    g.finish();
    drop(conn);
    let _ = std::fs::remove_dir_all(&dir);
}

criterion_group!(benches, bench);
criterion_main!(benches);
