//! The daemon's event loop on one core, end to end: the bytes of a batch
//! read from the ring buffer are decoded, and each event goes through the
//! loop's own step (`event_loop::batch_step`) into the daemon's own sink
//! (`daemon::Daemon`): holder table, diagnosis of each failed bind, its
//! log line (written, as the daemon writes it, to a file: /dev/null),
//! the recent-conflicts ring, the timeline's queue to the writer thread
//! (a real SQLite file, written on the other core), the bind aggregation,
//! the metrics' per-batch fold and the alert evaluation with a watched port.
//!
//! The mix, per cycle of 12 events: a TCP server that binds, listens and
//! closes (4), a UDP client and a TCP client each binding port 0 and
//! closing (4), a UDP server binding and closing (2), a failed bind on a
//! port one of 1,000 standing listeners holds (EADDRINUSE) and a failed
//! bind below the unprivileged port floor (EACCES). In the realistic mix
//! one cycle in ten has the two failures (one event in 51 fails); in the
//! failure storm every cycle has them (one in six). Some failures are on
//! the watched port, and fire its alert.
//!
//! The baseline is decoding the same bytes alone, the least any consumer
//! must do. Reported per event; events/s = 1e9 / ns. The writer thread's
//! own work is measured apart (record building, SQLite inserts).
//!
//! `cargo bench -p bindwatch --bench pipeline`

use std::hint::black_box;
use std::sync::Mutex;

use bindwatch::config::Config;
use bindwatch::daemon::Daemon;
use bindwatch::event_loop::batch_step;
use bindwatch::event_loop::correlate::Correlator;
use bindwatch::metrics::{Metrics, SharedMetrics};
use bindwatch_common::{IPPROTO_TCP, IPPROTO_UDP, RawEvent, kind, tcp_state};
use bindwatch_core::clock::Clock;
use bindwatch_core::decode::Decoder;
use bindwatch_core::testing;
use bindwatch_core::timeline::record;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

const CYCLES: u32 = 1_000;
/// The realistic mix: one cycle in ten has its failed binds (one event in
/// 51 fails); the storm has them in every cycle (one in six).
const FAIL_EVERY: u32 = 10;
const STANDING: u16 = 1_000;
const FIRST_STANDING: u16 = 20_000;
/// What the ring buffer hands the loop at once under load (the loop lets
/// events gather for 2 ms after a busy batch).
const BATCH: usize = 1_024;

/// The processes the events come from: real ones, so that the loop's
/// /proc reads find what they would on a host (`sleep` under each name).
struct Processes {
    children: Vec<std::process::Child>,
}

impl Processes {
    fn start(dir: &std::path::Path, names: &[&str]) -> Self {
        let sleep = std::path::Path::new("/bin/sleep");
        let children = names
            .iter()
            .map(|n| {
                let exe = dir.join(n);
                std::os::unix::fs::symlink(sleep, &exe).expect("symlink to sleep");
                std::process::Command::new(&exe)
                    .arg("3600")
                    .spawn()
                    .expect("a process for the mix")
            })
            .collect();
        Self { children }
    }

    fn pid(&self, i: usize) -> u32 {
        self.children[i].id()
    }
}

impl Drop for Processes {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

const NAMES: [&str; 6] = ["nginx", "worker", "resolver", "client", "statsd", "newsrv"];

struct Mix {
    netns: u64,
    pids: [u32; 6],
}

impl Mix {
    #[allow(clippy::too_many_arguments)]
    fn ev(
        &self,
        k: u8,
        proto: u8,
        addr: [u8; 4],
        port: u16,
        bound: u16,
        ret: i32,
        cookie: u64,
        state: i32,
        who: usize,
    ) -> RawEvent {
        let pid = self.pids[who];
        let ip = std::net::Ipv4Addr::from(addr).to_string();
        let mut r = testing::with_comm(testing::raw(k, &ip, port, proto, ret), NAMES[who]);
        r.sock_type = if proto == IPPROTO_TCP { 1 } else { 2 };
        r.bound_port = bound;
        r.pid = pid;
        r.tid = pid;
        r.uid = if who == 0 { 0 } else { 1000 };
        r.netns_cookie = self.netns;
        r.sock_cookie = cookie;
        r.skaddr = cookie;
        r.state = state as u8;
        r
    }

    /// The standing listeners (nginx, pid 1): what failed binds run into.
    fn standing(&self) -> Vec<RawEvent> {
        let mut v = Vec::new();
        for j in 0..STANDING {
            let (port, c) = (FIRST_STANDING + j, 1_000_000 + j as u64);
            let any = [0, 0, 0, 0];
            let l = tcp_state::LISTEN;
            v.push(self.ev(kind::BIND, IPPROTO_TCP, any, port, port, 0, c, 7, 0));
            v.push(self.ev(kind::LISTEN, IPPROTO_TCP, any, port, port, 0, c, l, 0));
        }
        v
    }

    /// `n` cycles; the two failed binds in one cycle of `fail_every`.
    fn cycles(&self, n: u32, fail_every: u32) -> Vec<RawEvent> {
        let (lo, any) = ([127, 0, 0, 1], [0, 0, 0, 0]);
        let (close, listen) = (tcp_state::CLOSE, tcp_state::LISTEN);
        let mut v = Vec::new();
        for i in 0..n {
            let c = 10 + i as u64 * 8;
            let srv = 30_000 + (i % 5_000) as u16;
            let eph = 40_000 + (i % 20_000) as u16;
            let tcp = IPPROTO_TCP;
            let udp = IPPROTO_UDP;
            v.push(self.ev(kind::BIND, tcp, lo, srv, srv, 0, c, close, 1));
            v.push(self.ev(kind::LISTEN, tcp, lo, srv, srv, 0, c, listen, 1));
            v.push(self.ev(kind::LISTEN_STOP, tcp, lo, srv, srv, 0, c, listen, 1));
            v.push(self.ev(kind::RELEASE, tcp, lo, srv, srv, 0, c, close, 1));
            v.push(self.ev(kind::BIND, udp, any, 0, eph, 0, c + 1, 7, 2));
            v.push(self.ev(kind::RELEASE, udp, any, 0, eph, 0, c + 1, 7, 2));
            v.push(self.ev(kind::BIND, tcp, any, 0, eph + 1, 0, c + 2, close, 3));
            v.push(self.ev(kind::RELEASE, tcp, any, 0, eph + 1, 0, c + 2, close, 3));
            v.push(self.ev(kind::BIND, udp, lo, srv, srv, 0, c + 3, 7, 4));
            v.push(self.ev(kind::RELEASE, udp, lo, srv, srv, 0, c + 3, 7, 4));
            if i % fail_every != 0 {
                continue;
            }
            let held = FIRST_STANDING + (i % STANDING as u32) as u16;
            v.push(self.ev(kind::BIND, tcp, lo, held, 0, -98, c + 4, close, 5));
            v.push(self.ev(kind::BIND, tcp, any, 80, 0, -13, c + 5, close, 5));
        }
        v
    }
}

/// The daemon's log format (`cli::init_logging`), written to a file as it
/// writes to stderr: one write per line.
fn log_like_the_daemon() {
    let null = std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/null")
        .expect("/dev/null");
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new("info"))
        .with_writer(Mutex::new(null))
        .with_ansi(false)
        .log_internal_errors(false)
        .init();
}

fn decode_all(bytes: &[&[u8]]) -> Vec<bindwatch_core::event::Event> {
    let mut d = Decoder::new(Clock::new());
    bytes.iter().filter_map(|x| d.decode(x)).collect()
}

fn bench(c: &mut Criterion) {
    log_like_the_daemon();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let _rt = rt.enter();
    let dir = std::env::temp_dir().join(format!("bindwatch-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("bench directory");
    let config = format!(
        "state_dir = \"{}\"\n[[watch]]\nname = \"web\"\nport = {FIRST_STANDING}\nproto = \"tcp\"\ngrace_secs = 0\n",
        dir.display()
    );
    let cfg = Config::parse(&config, "bench").expect("bench configuration");

    let mut correlator = Correlator::empty(std::time::Duration::ZERO);
    let procs = Processes::start(&dir, &NAMES);
    let mix = Mix {
        netns: correlator.own_netns().unwrap_or(1),
        pids: std::array::from_fn(|i| procs.pid(i)),
    };
    let metrics = SharedMetrics::new(Metrics::new(&cfg.metrics, cfg.watch.iter().map(|w| w.port)));
    let (store, writer) = bindwatch::store::spawn_writer(
        cfg.state_dir.join(bindwatch::store::DB_FILE),
        cfg.timeline.retention(),
        || {},
    )
    .expect("timeline writer");
    let dropped = store.dropped_counter();
    let mut daemon = Daemon::new(cfg, metrics, Some(store), Some(mix.netns));

    let standing: Vec<RawEvent> = mix.standing();
    let raw = mix.cycles(CYCLES, FAIL_EVERY);
    let bytes: Vec<&[u8]> = raw.iter().map(|r| r.as_bytes()).collect();
    let storm = mix.cycles(CYCLES, 1);
    let storm: Vec<&[u8]> = storm.iter().map(|r| r.as_bytes()).collect();
    let mut decoder = Decoder::new(Clock::new());
    let mut batch = Vec::with_capacity(BATCH);
    batch.extend(standing.iter().filter_map(|r| decoder.decode(r.as_bytes())));
    batch_step(&mut batch, &mut correlator, &mut daemon).expect("standing listeners");

    let mut g = c.benchmark_group("pipeline_per_event");
    g.throughput(Throughput::Elements(bytes.len() as u64));
    g.bench_function("baseline_decode_only", |b| {
        b.iter(|| {
            let mut d = Decoder::new(Clock::new());
            for x in &bytes {
                black_box(d.decode(x));
            }
        })
    });
    let mut run = |bytes: &[&[u8]]| {
        for chunk in bytes.chunks(BATCH) {
            batch.extend(chunk.iter().filter_map(|x| decoder.decode(x)));
            batch_step(&mut batch, &mut correlator, &mut daemon).expect("batch");
        }
    };
    g.bench_function("daemon_loop_end_to_end", |b| b.iter(|| run(&bytes)));
    g.throughput(Throughput::Elements(storm.len() as u64));
    g.bench_function("daemon_loop_failure_storm", |b| b.iter(|| run(&storm)));
    g.throughput(Throughput::Elements(bytes.len() as u64));
    let stats = correlator.stats();
    eprintln!(
        "daemon loop: {} diagnoses (table lookup p50 {:.2} µs), {} timeline records dropped by the writer's full queue",
        stats.diagnosis_latency.count,
        stats.diagnosis_latency.p50_us,
        dropped.load(std::sync::atomic::Ordering::Relaxed)
    );

    // The writer thread's share: building the records it is handed...
    let mut table = Correlator::empty(std::time::Duration::ZERO);
    let standing_bytes: Vec<&[u8]> = standing.iter().map(|r| r.as_bytes()).collect();
    for ev in decode_all(&standing_bytes) {
        table.on_event(&ev);
    }
    let evs: Vec<_> = decode_all(&bytes)
        .into_iter()
        .map(|ev| {
            let d = table.on_event(&ev);
            (ev, d)
        })
        .collect();
    g.bench_function("writer_thread_record_building", |b| {
        b.iter(|| {
            for (ev, diag) in &evs {
                black_box(record(ev, diag.as_ref()));
            }
        })
    });
    // ... and inserting them, in the batches it commits (one transaction
    // per batch), into a real database file.
    let recs: Vec<_> = evs
        .iter()
        .filter_map(|(ev, diag)| record(ev, diag.as_ref()))
        .collect();
    let mut conn = bindwatch::store::open_rw(&dir.join("insert.db")).expect("database");
    // The writer's own checkpoints run on a thread beside it, as here.
    let checkpointer =
        bindwatch::store::Checkpointer::start(&dir.join("insert.db")).expect("checkpointer");
    g.throughput(Throughput::Elements(recs.len() as u64));
    // The writer's steady state: batches later than the last, their
    // records a nanosecond apart, as a real writer's are (records that
    // repeat the same times land in the middle of the time index instead
    // of its end), and the default size limit enforced after every batch
    // (the writer does it once a second), so the file stays the size a
    // host keeps it and every record written is also deleted. Timed: the
    // commits and the pruning; not: the copy that restamps the records.
    let retention = bindwatch::store::Retention {
        max_age: std::time::Duration::from_secs(30 * 86_400),
        max_bytes: 256 << 20,
    };
    let mut round = 0u64;
    let mut batch = recs.clone();
    g.bench_function("writer_thread_sqlite_insert_per_record", |b| {
        b.iter_custom(|iters| {
            let mut spent = std::time::Duration::ZERO;
            for _ in 0..iters {
                round += 1;
                for (i, (r, orig)) in batch.iter_mut().zip(&recs).enumerate() {
                    r.time_ns = orig.time_ns + round * 1_000_000_000_000 + i as u64;
                }
                let t = std::time::Instant::now();
                bindwatch::store::write_batch(&mut conn, &batch).expect("insert");
                let now = batch[batch.len() - 1].time_ns;
                bindwatch::store::prune(&conn, retention, now).expect("prune");
                checkpointer.nudge();
                spent += t.elapsed();
            }
            spent
        })
    });
    g.finish();
    drop((checkpointer, conn, daemon, dropped, procs));
    let _ = writer.join();
    let _ = std::fs::remove_dir_all(&dir);
}

criterion_group!(benches, bench);
criterion_main!(benches);
