use rusqlite::Connection;

use super::schema::{MIGRATIONS, PAGE_SIZE};
use super::writer::insert;
use super::*;
use bindwatch_core::timeline::{Record, TimelineFilter};

fn rec(t: u64, kind: &str, port: u16, comm: &str) -> Record {
    Record {
        time_ns: t,
        kind: kind.into(),
        port: Some(port),
        proto: Some("tcp".into()),
        comm: Some(comm.into()),
        pid: Some(t as u32),
        summary: format!("{kind} {port}"),
        ..Record::default()
    }
}

/// A writer on a fresh file in a directory of the test's own (`name` and
/// the pid), whose retention keeps everything written.
fn keep_all_writer(
    name: &str,
) -> (
    std::path::PathBuf,
    std::path::PathBuf,
    StoreSender,
    std::thread::JoinHandle<()>,
) {
    let dir = std::env::temp_dir().join(format!("{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let path = dir.join(DB_FILE);
    let (tx, h) = spawn_writer(
        path.clone(),
        Retention {
            max_age: Duration::from_secs(3600 * 24 * 365 * 100),
            max_bytes: 1 << 30,
        },
        || {},
    )
    .unwrap();
    (dir, path, tx, h)
}

#[test]
fn writes_in_batches_and_reads_back_by_filter() {
    let (dir, path, mut tx, h) = keep_all_writer("bw-store");
    for i in 0..100u64 {
        tx.send(rec(
            i,
            if i % 2 == 0 { "listen" } else { "bind_failed" },
            80 + (i % 3) as u16,
            "nginx",
        ));
    }
    drop(tx);
    h.join().unwrap();
    let c = open_ro(&path).unwrap();
    let all = query(&c, &TimelineFilter::default()).unwrap();
    assert_eq!(all.len(), 100);
    assert!(all.windows(2).all(|w| w[0].time_ns <= w[1].time_ns));
    let f = TimelineFilter {
        port: Some(80),
        kinds: vec!["bind_failed".into()],
        since_ns: Some(10),
        until_ns: Some(60),
        ..Default::default()
    };
    let got = query(&c, &f).unwrap();
    assert!(!got.is_empty());
    assert!(
        got.iter().all(|r| r.port == Some(80)
            && r.kind == "bind_failed"
            && (10..=60).contains(&r.time_ns))
    );
    let v: i64 = c
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .unwrap();
    assert_eq!(v, SCHEMA_VERSION);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn retention_by_age_and_size() {
    let c = Connection::open_in_memory().unwrap();
    c.execute_batch(MIGRATIONS[0]).unwrap();
    {
        let tx = c.unchecked_transaction().unwrap();
        for i in 0..20_000u64 {
            let mut r = rec(i * 1_000_000_000, "bind_failed", 80, "x");
            r.summary = "y".repeat(200);
            insert(&tx, &r).unwrap();
        }
        tx.commit().unwrap();
    }
    let now = 20_000 * 1_000_000_000;
    // Age: keep the last hour.
    prune(
        &c,
        Retention {
            max_age: Duration::from_secs(3600),
            max_bytes: u64::MAX,
        },
        now,
    )
    .unwrap();
    let oldest: i64 = c
        .query_row("SELECT MIN(time_ns) FROM records", [], |r| r.get(0))
        .unwrap();
    assert!(oldest as u64 >= now - 3600 * 1_000_000_000);
    // Size: 256 KiB.
    prune(
        &c,
        Retention {
            max_age: Duration::from_secs(u32::MAX as u64),
            max_bytes: 256 << 10,
        },
        now,
    )
    .unwrap();
    assert!(used_bytes(&c).unwrap() <= 256 << 10);
    let newest: i64 = c
        .query_row("SELECT MAX(time_ns) FROM records", [], |r| r.get(0))
        .unwrap();
    assert_eq!(newest as u64, 19_999 * 1_000_000_000, "the newest survive");
}

#[test]
fn a_flood_through_the_writer_stays_within_the_size_limit() {
    let dir = std::env::temp_dir().join(format!("bw-flood-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let path = dir.join(DB_FILE);
    let limit = 512 << 10;
    let (mut tx, h) = spawn_writer(
        path.clone(),
        Retention {
            max_age: Duration::from_secs(3600),
            max_bytes: limit,
        },
        || {},
    )
    .unwrap();
    let now = bindwatch_core::clock::now_unix_ns();
    for i in 0..60_000u64 {
        let mut r = rec(
            now - 7200 * 1_000_000_000 + i * 100_000_000,
            "bind_failed",
            80,
            "x",
        );
        r.summary = "z".repeat(100);
        tx.send(r);
        // As the event loop hands them over: once per batch.
        if i % 1024 == 1023 {
            tx.flush();
        }
    }
    tx.flush();
    assert_eq!(tx.dropped(), 0, "ingestion kept up");
    drop(tx);
    h.join().unwrap();
    let c = open_rw(&path).unwrap();
    assert!(used_bytes(&c).unwrap() <= limit);
    let oldest: i64 = c
        .query_row("SELECT MIN(time_ns) FROM records", [], |r| r.get(0))
        .unwrap();
    assert!(oldest as u64 >= now - 3600 * 1_000_000_000, "age limit");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn ephemeral_binds_become_one_row_a_minute() {
    let mut a = BindAggregator::default();
    let min = 60_000_000_000u64;
    for i in 0..1000 {
        assert!(a.add(min * 5 + i, "curl", "tcp").is_empty());
    }
    let out = a.add(min * 6, "curl", "tcp");
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].detail.value()["count"], 1000);
    assert_eq!(out[0].time_ns, min * 5);
}
mod query_properties {
    use super::*;
    use bindwatch_core::timeline::{Record, TimelineFilter};
    use proptest::prelude::*;

    fn arb_record() -> impl Strategy<Value = Record> {
        (
            0u64..50,
            prop::sample::select(vec!["bind_failed", "listen", "release"]),
            prop::option::of(prop::sample::select(vec![53u16, 80, 443])),
            prop::option::of(prop::sample::select(vec!["tcp", "udp"])),
            prop::option::of(1u32..4),
            prop::option::of(prop::sample::select(vec!["nginx", "socat"])),
            prop::option::of(1u32..4),
            prop::option::of(prop::sample::select(vec!["nginx", "socat"])),
        )
            .prop_map(|(t, kind, port, proto, pid, comm, hpid, hcomm)| Record {
                time_ns: t,
                kind: kind.into(),
                port,
                proto: proto.map(Into::into),
                pid,
                comm: comm.map(Into::into),
                holder_pid: hpid,
                holder_comm: hcomm.map(Into::into),
                summary: kind.into(),
                ..Record::default()
            })
    }

    fn arb_filter() -> impl Strategy<Value = TimelineFilter> {
        (
            prop::option::of(prop::sample::select(vec![53u16, 80, 443, 8080])),
            prop::option::of(prop::sample::select(vec!["tcp", "udp"])),
            prop::option::of(1u32..5),
            prop::option::of(prop::sample::select(vec!["nginx", "socat", "sshd"])),
            prop::option::of(0u64..50),
            prop::option::of(0u64..50),
            prop::sample::subsequence(vec!["bind_failed", "listen", "release"], 0..=3),
            0usize..40,
        )
            .prop_map(|(port, proto, pid, comm, since, until, kinds, limit)| {
                TimelineFilter {
                    port,
                    proto: proto.map(Into::into),
                    pid,
                    comm: comm.map(Into::into),
                    since_ns: since,
                    until_ns: until,
                    kinds: kinds.into_iter().map(Into::into).collect(),
                    limit,
                }
            })
    }

    /// What `query` must return, computed the plain way.
    fn reference(records: &[Record], f: &TimelineFilter) -> Vec<(u64, usize)> {
        let mut hits: Vec<(u64, usize)> = records
            .iter()
            .enumerate()
            .filter(|(_, r)| {
                f.port.is_none_or(|p| r.port == Some(p))
                    && f.proto.as_ref().is_none_or(|p| r.proto.as_ref() == Some(p))
                    && f.pid
                        .is_none_or(|p| r.pid == Some(p) || r.holder_pid == Some(p))
                    && f.comm.as_ref().is_none_or(|c| {
                        r.comm.as_ref() == Some(c) || r.holder_comm.as_ref() == Some(c)
                    })
                    && f.since_ns.is_none_or(|s| r.time_ns >= s)
                    && f.until_ns.is_none_or(|u| r.time_ns <= u)
                    && (f.kinds.is_empty() || f.kinds.contains(&r.kind))
            })
            .map(|(i, r)| (r.time_ns, i))
            .collect();
        // The latest `limit` (0: the default), oldest first; ties in
        // time keep insertion order.
        hits.sort();
        let limit = if f.limit == 0 { 10_000 } else { f.limit };
        hits.split_off(hits.len().saturating_sub(limit))
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        #[test]
        fn query_returns_exactly_the_matching_records_in_order(
            records in prop::collection::vec(arb_record(), 0..60),
            filters in prop::collection::vec(arb_filter(), 1..8),
        ) {
            let mut conn = Connection::open_in_memory().unwrap();
            for m in MIGRATIONS {
                conn.execute_batch(m).unwrap();
            }
            // Each record's index in its summary, to compare identities.
            let tagged: Vec<Record> = records
                .iter()
                .enumerate()
                .map(|(i, r)| Record { summary: i.to_string(), ..r.clone() })
                .collect();
            write_batch(&mut conn, &tagged).unwrap();
            for f in &filters {
                let got: Vec<(u64, usize)> = query(&conn, f)
                    .unwrap()
                    .iter()
                    .map(|r| (r.time_ns, r.summary.parse().unwrap()))
                    .collect();
                prop_assert_eq!(got, reference(&tagged, f), "filter {:?}", f);
            }
        }
    }
}

/// Every index the schema keeps serves one of the queries the store makes
/// (a port's records, a time range), and nothing else is indexed: each
/// index costs every record's insert.
#[test]
fn every_index_serves_a_query_and_none_is_kept_for_nothing() {
    let c = Connection::open_in_memory().unwrap();
    for m in MIGRATIONS {
        c.execute_batch(m).unwrap();
    }
    let mut kept: Vec<String> = c
        .prepare("SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'records'")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<rusqlite::Result<_>>()
        .unwrap();
    kept.sort();
    let filters = [
        TimelineFilter {
            port: Some(80),
            ..Default::default()
        },
        TimelineFilter {
            since_ns: Some(10),
            until_ns: Some(60),
            ..Default::default()
        },
        TimelineFilter {
            pid: Some(7),
            ..Default::default()
        },
        TimelineFilter {
            comm: Some("nginx".into()),
            ..Default::default()
        },
    ];
    let mut used: Vec<String> = Vec::new();
    for f in &filters {
        let (sql, args) = super::query::select(f);
        let plan: Vec<String> = c
            .prepare(&format!("EXPLAIN QUERY PLAN {sql}"))
            .unwrap()
            .query_map(rusqlite::params_from_iter(args), |r| r.get(3))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap();
        for step in plan {
            if let Some(i) = kept.iter().find(|i| step.contains(i.as_str())) {
                used.push(i.clone());
            }
        }
    }
    used.sort();
    used.dedup();
    assert_eq!(
        used, kept,
        "indexes the queries use against those the schema keeps"
    );
}

/// Pruning, run every second, never walks the table: each of its
/// statements finds its rows through the time index or the row ids. (The
/// age pass once ordered by id, and the size pass counted every row, both
/// whole-table walks; at the default size limit they made deleting a
/// record cost four times its insert.)
#[test]
fn pruning_finds_its_rows_without_walking_the_table() {
    use super::retention::{DELETE_BEFORE_ID, DELETE_OLDER, ID_SPAN};
    let c = Connection::open_in_memory().unwrap();
    for m in MIGRATIONS {
        c.execute_batch(m).unwrap();
    }
    for (sql, args) in [(DELETE_OLDER, 2), (ID_SPAN, 0), (DELETE_BEFORE_ID, 1)] {
        let plan: Vec<String> = c
            .prepare(&format!("EXPLAIN QUERY PLAN {sql}"))
            .unwrap()
            .query_map(rusqlite::params_from_iter(vec![5; args]), |r| r.get(3))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap();
        assert!(
            plan.iter().all(|step| !step.starts_with("SCAN records")),
            "{sql}: {plan:?}"
        );
        assert!(
            plan.iter().any(|step| step.starts_with("SEARCH records")),
            "{sql}: {plan:?}"
        );
    }
}

/// A timeline written by the first schema opens with its records, and the
/// indexes no query used are gone.
#[test]
fn a_first_schema_timeline_is_migrated_with_its_records() {
    let dir = std::env::temp_dir().join(format!("bw-store-v1-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(DB_FILE);
    {
        let c = Connection::open(&path).unwrap();
        c.execute_batch(MIGRATIONS[0]).unwrap();
        c.pragma_update(None, "user_version", 1).unwrap();
        let tx = c.unchecked_transaction().unwrap();
        insert(&tx, &rec(5, "bind_failed", 80, "nginx")).unwrap();
        tx.commit().unwrap();
    }
    let c = open_rw(&path).unwrap();
    let v: i64 = c
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .unwrap();
    assert_eq!(v, SCHEMA_VERSION);
    let indexes: i64 = c
        .query_row(
            "SELECT COUNT(*) FROM sqlite_master WHERE name IN ('records_pid_time', 'records_comm_time')",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(indexes, 0);
    let got = query(
        &c,
        &TimelineFilter {
            comm: Some("nginx".into()),
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(got.len(), 1);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn the_checkpoint_thread_keeps_the_wal_to_about_a_batch() {
    let dir = std::env::temp_dir().join(format!("bw-store-ckpt-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let path = dir.join(DB_FILE);
    let mut conn = open_rw(&path).unwrap();
    let ckpt = Checkpointer::start(&path).unwrap();
    let wal = dir.join(format!("{DB_FILE}-wal"));
    // 40 batches of 200 records of about 1 KiB: some 8 MiB in all, under
    // the writer's own backstop, so only the thread can start it over.
    let mut largest = 0u64;
    for b in 0..40u64 {
        let batch: Vec<Record> = (0..200)
            .map(|i| {
                let mut r = rec(b * 1000 + i, "bind_failed", 8080, "socat");
                r.summary = "x".repeat(1000);
                r
            })
            .collect();
        write_batch(&mut conn, &batch).unwrap();
        let before = ckpt.completed();
        ckpt.nudge();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while ckpt.completed() == before {
            assert!(
                std::time::Instant::now() < deadline,
                "no checkpoint within 10 s of batch {b}"
            );
            std::thread::sleep(Duration::from_millis(2));
        }
        largest = largest.max(std::fs::metadata(&wal).unwrap().len());
    }
    let written: i64 = conn
        .query_row("SELECT COUNT(*) FROM records", [], |r| r.get(0))
        .unwrap();
    assert_eq!(written, 8000);
    assert!(
        largest < 1 << 20,
        "the WAL grew to {} KiB; each batch should start it over",
        largest >> 10
    );
    // A new file has the larger pages, and the writer's own checkpoint
    // waits until the log is well past what this test writes.
    let page: i64 = conn
        .pragma_query_value(None, "page_size", |r| r.get(0))
        .unwrap();
    assert_eq!(page, PAGE_SIZE);
    let backstop: i64 = conn
        .pragma_query_value(None, "wal_autocheckpoint", |r| r.get(0))
        .unwrap();
    assert_eq!((backstop * page) as u64, WAL_BACKSTOP_BYTES);
    assert!(std::fs::metadata(&path).unwrap().len() > 6 << 20);
    drop(ckpt);
    drop(conn);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn event_boxes_go_back_to_the_loop_and_are_reused() {
    use bindwatch_common::{AF_INET, IPPROTO_TCP, LAYOUT_VERSION, RawEvent, kind};
    use bindwatch_core::clock::Clock;
    use bindwatch_core::event::Event;

    let (dir, path, mut tx, h) = keep_all_writer("bw-store-boxes");
    let mut raw = RawEvent::zeroed();
    raw.kind = kind::LISTEN;
    raw.family = AF_INET;
    raw.protocol = IPPROTO_TCP;
    raw.addr[..4].copy_from_slice(&[127, 0, 0, 1]);
    raw.port = 8080;
    raw.bound_port = 8080;
    raw.pid = 42;
    raw.sock_cookie = 9;
    raw.netns_cookie = 7;
    raw.comm[..5].copy_from_slice(b"nginx");
    raw.version = LAYOUT_VERSION;
    let ev = Event::from_raw(&raw, &Clock::with_offset_ns(0));
    // More than the loop keeps: the rest are freed on the loop's side.
    let sent = writer::SPARE_KEPT + 500;
    for _ in 0..sent {
        tx.send_event(&ev, None);
    }
    tx.flush();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while tx.spare() < writer::SPARE_KEPT {
        assert!(
            std::time::Instant::now() < deadline,
            "the writer handed back {} boxes in 10 s",
            tx.spare()
        );
        std::thread::sleep(Duration::from_millis(10));
        tx.flush();
    }
    assert_eq!(tx.spare(), writer::SPARE_KEPT, "the spares are bounded");
    // The next records reuse them.
    for _ in 0..10 {
        tx.send_event(&ev, None);
    }
    assert_eq!(tx.spare(), writer::SPARE_KEPT - 10);
    drop(tx);
    h.join().unwrap();
    let got = query(&open_ro(&path).unwrap(), &TimelineFilter::default()).unwrap();
    assert_eq!(got.len(), sent + 10, "every event sent became a record");
    assert!(
        got.iter().all(|r| r.kind == "listen"
            && r.port == Some(8080)
            && r.comm.as_deref() == Some("nginx"))
    );
    let _ = std::fs::remove_dir_all(&dir);
}
