//! A bounded soak of the real daemon: randomized bind, listen, close and
//! conflict churn by worker processes in three network namespaces (the
//! same ports in each), checked against the ground truth the generator
//! keeps: every failed bind is recorded with the right holder, the holder
//! table agrees at the end with the generator for every port of the test's
//! namespaces (so none of the test's own events was lost or misread), and
//! the daemon's own memory is flat after warm-up. The daemon's loss and
//! drift counters count the whole host: they are reported, not judged.
//!
//! `BINDWATCH_SOAK_SECS` sets the length (60 s by default, as in CI; the
//! full run is 600): `BINDWATCH_SOAK_SECS=600 cargo test --release --test soak -- --nocapture`.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::process::{ChildStdin, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use support::*;

const PORTS: std::ops::Range<u16> = 21000..21040;
const WORKERS: usize = 3;

const WORKER: &str = r#"
import socket, sys
held = {}
for line in sys.stdin:
    op, addr, port = line.split()
    port = int(port)
    if op == "hold":
        s = socket.socket()
        try:
            s.bind((addr, port)); s.listen(8); held[port] = s; print("ok")
        except OSError as e:
            s.close(); print("err", e.errno)
    elif op == "close":
        held.pop(port).close(); print("ok")
    else:
        s = socket.socket()
        try:
            s.bind((addr, port)); print("bound")
        except OSError as e:
            print("err", e.errno)
        s.close()
    sys.stdout.flush()
"#;

struct Worker {
    pid: u32,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
    _proc: Proc,
}

impl Worker {
    fn start(ns: &Netns) -> Self {
        let mut child = Command::new("ip")
            .args(["netns", "exec", &ns.name, "python3", "-c", WORKER])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let stdin = child.stdin.take().unwrap();
        let stdout = BufReader::new(child.stdout.take().unwrap());
        Self {
            pid: child.id(),
            stdin,
            stdout,
            _proc: Proc(child),
        }
    }

    fn ask(&mut self, op: &str, addr: &str, port: u16) -> String {
        writeln!(self.stdin, "{op} {addr} {port}").unwrap();
        let mut line = String::new();
        self.stdout.read_line(&mut line).unwrap();
        line.trim().to_owned()
    }
}

/// A small deterministic generator (xorshift), so a failing run can be
/// replayed with the seed it prints.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// A memory figure of the daemon's (`VmRSS`, `RssAnon`) in KiB; a reading
/// that cannot be had fails the test (a 0 would make the flat-memory check
/// pass).
fn status_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_else(|e| panic!("/proc/{pid}/status: {e}"));
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"))
}

struct FailureReader {
    db: rusqlite::Connection,
    last_id: i64,
}

/// Adds the failed binds recorded since the last call.
fn read_failures(r: &mut FailureReader, pids: &[u32], seen: &mut HashMap<(u32, u16, u32), u64>) {
    let mut st =
        r.db.prepare_cached(
            "SELECT id, pid, port, holder_pid FROM records
             WHERE kind = 'bind_failed' AND id > ?1 ORDER BY id",
        )
        .unwrap();
    let rows = st
        .query_map([r.last_id], |row| {
            Ok((
                row.get::<_, i64>(0)?,
                row.get::<_, u32>(1)?,
                row.get::<_, u16>(2)?,
                row.get::<_, Option<u32>>(3)?.unwrap_or(0),
            ))
        })
        .unwrap();
    for row in rows {
        let (id, pid, port, holder) = row.unwrap();
        r.last_id = id;
        if pids.contains(&pid) {
            *seen.entry((pid, port, holder)).or_default() += 1;
        }
    }
}

#[test]
fn soak_churn_across_namespaces_matches_ground_truth() {
    let secs: u64 = std::env::var("BINDWATCH_SOAK_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(60);
    let seed = std::env::var("BINDWATCH_SOAK_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| std::process::id() as u64 * 2654435761 + 1);
    eprintln!("soak: {secs} s, seed {seed}");
    let state = temp("soak");
    let listen = &free_local_addr();
    let daemon = Daemon::start(&state, listen, "[holders]\nreconcile_every_secs = 5\n");
    let daemon_pid = daemon.child.id();
    let namespaces: Vec<Netns> = (0..3).map(|i| Netns::new(&format!("soak{i}"))).collect();
    let mut workers: Vec<Vec<Worker>> = namespaces
        .iter()
        .map(|ns| (0..WORKERS).map(|_| Worker::start(ns)).collect())
        .collect();
    // Ground truth: per namespace, port -> (worker, address).
    let mut held: Vec<HashMap<u16, (usize, &str)>> = vec![HashMap::new(); namespaces.len()];
    // Expected failed binds: (failing pid, port, holder pid) -> count.
    let mut expected: HashMap<(u32, u16, u32), u64> = HashMap::new();
    let mut rng = Rng(seed);
    let (mut ops, mut conflicts) = (0u64, 0u64);
    let addrs = ["127.0.0.1", "0.0.0.0"];
    let start = Instant::now();
    let warm = Duration::from_secs(secs / 4);
    let mut samples: Vec<Sample> = Vec::new();
    let mut next_sample = start;
    // The timeline database itself, read as the soak goes: at this rate
    // the size limit prunes old records within a minute.
    let db_path = state.join("timeline.db");
    let mut reader = FailureReader {
        db: rusqlite::Connection::open_with_flags(
            &db_path,
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
        )
        .unwrap(),
        last_id: 0,
    };
    let pids: Vec<u32> = workers.iter().flatten().map(|w| w.pid).collect();
    let mut seen: HashMap<(u32, u16, u32), u64> = HashMap::new();
    while start.elapsed() < Duration::from_secs(secs) {
        if Instant::now() >= next_sample {
            samples.push(Sample {
                secs: start.elapsed().as_secs_f64(),
                anon_kib: status_kib(daemon_pid, "RssAnon"),
                rss_kib: status_kib(daemon_pid, "VmRSS"),
                dropped: metric(listen, "bindwatch_timeline_records_dropped_total") as u64,
                wal_bytes: std::fs::metadata(state.join("timeline.db-wal"))
                    .ok()
                    .map(|m| m.len()),
            });
            read_failures(&mut reader, &pids, &mut seen);
            next_sample += Duration::from_secs(2);
        }
        let n = rng.below(namespaces.len());
        let port = PORTS.start + rng.below(PORTS.len()) as u16;
        let addr = addrs[rng.below(2)];
        let w = rng.below(WORKERS);
        ops += 1;
        match held[n].get(&port).copied() {
            None => {
                let r = workers[n][w].ask("hold", addr, port);
                assert_eq!(r, "ok", "hold {addr}:{port} in ns {n}");
                held[n].insert(port, (w, addr));
            }
            Some((h, haddr)) if rng.below(3) == 0 => {
                let r = workers[n][h].ask("close", haddr, port);
                assert_eq!(r, "ok");
                held[n].remove(&port);
            }
            Some((h, _)) => {
                let other = (h + 1 + rng.below(WORKERS - 1)) % WORKERS;
                let r = workers[n][other].ask("try", addr, port);
                assert_eq!(r, "err 98", "a bind on held {port} in ns {n} must fail");
                *expected
                    .entry((workers[n][other].pid, port, workers[n][h].pid))
                    .or_default() += 1;
                conflicts += 1;
            }
        }
    }
    let elapsed = start.elapsed().as_secs_f64();
    eprintln!(
        "soak: {ops} operations ({:.0}/s), {conflicts} conflicts, {} ports held at the end",
        ops as f64 / elapsed,
        held.iter().map(|h| h.len()).sum::<usize>()
    );

    // 1. Every failed bind recorded with its holder (read as it went, and
    //    until the last ones are written).
    let total: u64 = expected.values().sum();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        read_failures(&mut reader, &pids, &mut seen);
        if seen.values().sum::<u64>() >= total || Instant::now() > deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let wrong: Vec<_> = seen
        .iter()
        .filter(|(k, n)| expected.get(k) != Some(n))
        .collect();
    let missing: Vec<_> = expected
        .iter()
        .filter(|(k, _)| !seen.contains_key(k))
        .collect();
    eprintln!(
        "soak: expected {} failed binds, recorded {}; timeline records dropped {}, events lost {}; e.g. {:?} expected {:?}",
        expected.values().sum::<u64>(),
        seen.values().sum::<u64>(),
        metric(listen, "bindwatch_timeline_records_dropped_total"),
        metric(listen, "bindwatch_events_lost_total"),
        wrong.first(),
        wrong.first().and_then(|(k, _)| expected.get(k)),
    );
    eprintln!(
        "soak: timeline writer every 2 s (s, records dropped so far, WAL KiB): {:?}",
        samples
            .iter()
            .map(|x| (
                x.secs.round() as u64,
                x.dropped,
                x.wal_bytes.map(|b| b / 1024)
            ))
            .collect::<Vec<_>>()
    );
    assert!(
        wrong.is_empty() && missing.is_empty(),
        "failed binds recorded differently from the ground truth: \
         {} keys wrong (e.g. {:?}), {} missing (e.g. {:?})",
        wrong.len(),
        wrong.first(),
        missing.len(),
        missing.first()
    );
    eprintln!(
        "soak: {} failed binds recorded, each with the right holder",
        seen.values().sum::<u64>()
    );

    // 2. The table agrees with the ground truth for every port of the
    //    test's namespaces (once the daemon has read the last events).
    for (n, ns) in namespaces.iter().enumerate() {
        let cookie = ns.cookie();
        for port in PORTS {
            let want: Vec<u64> = held[n]
                .get(&port)
                .map(|(w, _)| vec![workers[n][*w].pid as u64])
                .unwrap_or_default();
            let url =
                format!("http://{listen}/api/v1/holders?port={port}&proto=tcp&netns={cookie}");
            let mut got = Vec::new();
            let agreed = (0..150).any(|_| {
                let a: Value = serde_json::from_str(&curl(&url).unwrap()).unwrap();
                got = a["holders"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .filter_map(|h| h["owners"][0]["pid"].as_u64())
                    .collect();
                got == want || {
                    std::thread::sleep(Duration::from_millis(200));
                    false
                }
            });
            assert!(
                agreed,
                "holders of {port} in ns {n}: {got:?}, want {want:?}"
            );
        }
    }
    // Reported, not judged: both count the whole host, and the per-
    // namespace checks above are what this test stands on.
    let drift = metric(listen, "bindwatch_holder_table_drift_corrections_total");
    let lost = metric(listen, "bindwatch_events_lost_total");

    // 3. Memory flat after warm-up: see `grown`. Medians and every sample
    //    are reported.
    let after: Vec<&Sample> = samples
        .iter()
        .filter(|x| x.secs >= warm.as_secs_f64())
        .collect();
    let median = |mut v: Vec<u64>| {
        v.sort_unstable();
        v[v.len() / 2] as f64
    };
    let anon: Vec<u64> = after.iter().map(|x| x.anon_kib).collect();
    let rss: Vec<u64> = after.iter().map(|x| x.rss_kib).collect();
    let half = after.len() / 2;
    let (f1, f2, growth) = grown(&anon);
    let mib = |k: f64| (k / 102.4).round() / 10.0;
    eprintln!(
        "soak: own memory (RssAnon) after warm-up: lower quartile {} MiB then {} MiB ({:+.1} %), median {} then {} MiB, over {} samples: {:?} MiB; VmRSS median {} then {} MiB; drift corrections {drift}, lost {lost}",
        mib(f1),
        mib(f2),
        growth * 100.0,
        mib(median(anon[..half].to_vec())),
        mib(median(anon[half..].to_vec())),
        anon.len(),
        anon.iter().map(|&k| mib(k as f64)).collect::<Vec<_>>(),
        mib(median(rss[..half].to_vec())),
        mib(median(rss[half..].to_vec())),
    );
    assert!(
        growth <= MAX_GROWTH,
        "the daemon's own memory grew after warm-up: RssAnon's lower quartile {f1} -> {f2} KiB"
    );
    drop(workers.drain(..));
    daemon.stop();
}

/// One look at the daemon, every 2 s of the churn.
struct Sample {
    secs: f64,
    /// What a leak grows: the daemon's own memory.
    anon_kib: u64,
    /// Reported, not judged: it also counts the binary's pages, which the
    /// page cache evicts and faults back as the host's other work goes,
    /// and the ring buffer's, so it moves by megabytes with no leak at all.
    rss_kib: u64,
    /// Timeline records dropped so far and the WAL's size: when the writer
    /// falls behind, whether it stalled at once or slowed as the WAL grew.
    dropped: u64,
    /// None when the file could not be read, rather than an empty WAL.
    wal_bytes: Option<u64>,
}

/// How much more the later half of the after-warm-up samples sits on than
/// the earlier half. Transients lift single samples, and the median of
/// eleven, by up to 80 % (a batch being committed, a pruning pass, a burst
/// of diagnoses queued for the writer); the allocator handing a burst's
/// pages back drops single samples by 25 %. What a leak lifts is the level
/// the daemon comes back to between them, so each half is read at its
/// lower quartile, which neither a single lift nor a single dip moves.
/// The daemon still settles after the first quarter of a 60 s run (its
/// caches and the timeline fill until pruning starts): in seven flat runs
/// (six on one machine, one CI run's samples) the quartiles moved -5 to
/// +23 %, so the bound is 30 %.
/// At the soak's 9-11k operations a second, 30 % of a 15-20 MiB level over
/// the later half's 22 s is a leak of about 20-30 bytes an operation, less
/// than any allocation kept per event; the 600 s run bounds it tighter.
fn grown(anon_kib: &[u64]) -> (f64, f64, f64) {
    let quartile = |v: &[u64]| {
        let mut v = v.to_vec();
        v.sort_unstable();
        v[v.len() / 4] as f64
    };
    let (early, late) = anon_kib.split_at(anon_kib.len() / 2);
    let (q1, q2) = (quartile(early), quartile(late));
    (q1, q2, q2 / q1 - 1.0)
}

const MAX_GROWTH: f64 = 0.30;

#[test]
fn memory_growth_ignores_one_dip_or_lift_and_sees_a_leak() {
    // RssAnon in MiB from a soak that ran flat: one dip to 13.5 in the
    // earlier half, which failed the earlier check on the lowest sample.
    let flat = [
        17.3, 18.0, 18.0, 15.7, 17.1, 18.1, 17.7, 13.5, 19.4, 23.9, 18.3, 17.7, 17.5, 16.3, 18.5,
        17.9, 19.0, 18.1, 17.7, 17.8, 17.8, 17.9,
    ];
    let kib = |v: &[f64]| v.iter().map(|m| (m * 1024.0) as u64).collect::<Vec<_>>();
    assert!(
        grown(&kib(&flat)).2 <= MAX_GROWTH,
        "{:?}",
        grown(&kib(&flat))
    );
    // A run still settling through its first half (+23.4 %), the largest
    // of seven flat runs: within the bound.
    let settling = [
        12.6, 11.6, 15.9, 13.5, 14.2, 13.5, 12.0, 14.2, 14.8, 13.8, 16.6, 15.5, 17.3, 15.6, 15.7,
        17.4, 15.9, 14.7, 17.0, 15.9, 17.4, 16.1,
    ];
    assert!(grown(&kib(&settling)).2 <= MAX_GROWTH);
    // The same run with a lift of 80 % on one later sample: still flat.
    let mut lifted = flat;
    lifted[15] *= 1.8;
    assert!(grown(&kib(&lifted)).2 <= MAX_GROWTH);
    // A leak as the soak would see it: every sample 3.5 % of the level
    // above the one before (0.6 MiB every 2 s, about 30 bytes an
    // operation), with the same noise on top.
    let mut leak = flat;
    for (i, m) in leak.iter_mut().enumerate() {
        *m += 17.8 * 0.035 * i as f64;
    }
    assert!(
        grown(&kib(&leak)).2 > MAX_GROWTH,
        "{:?}",
        grown(&kib(&leak))
    );
}
