//! Writes the timeline page of a busy host's day (the benchmark's input):
//! `cargo run --release -p bindwatch --example busy_day -- OUT.html [RECORDS] [PORTS]`.
//!
//! 100,000 records over 100 ports by default, over 24 hours: each port's
//! holder restarts about every half hour (a listen_stop and a listen),
//! failed binds come in bursts from a few processes (each burst one
//! repeated failure), and conflict alerts fire, are re-sent and resolve
//! around the bursts. Failed binds carry a diagnosis like the daemon's.

use bindwatch_core::timeline::{Detail, Record};

const S: u64 = 1_000_000_000;

fn main() {
    let mut args = std::env::args().skip(1);
    let out = args
        .next()
        .expect("usage: busy_day OUT.html [RECORDS] [PORTS]");
    let total: usize = args.next().map_or(100_000, |n| n.parse().expect("RECORDS"));
    let ports: u64 = args.next().map_or(100, |n| n.parse().expect("PORTS"));
    let day = 86_400 * S;
    let t0 = 1_796_000_000 * S;
    // A small deterministic generator: the same page every run.
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let mut rand = move |n: u64| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed % n.max(1)
    };
    let mut recs = Vec::with_capacity(total + 1000);
    let rec = |t: u64, kind: &str, port: u64, pid: u32, comm: &str, summary: String| Record {
        time_ns: t,
        kind: kind.into(),
        port: Some(port as u16 + 8000),
        proto: Some("tcp".into()),
        addr: Some("0.0.0.0".into()),
        pid: Some(pid),
        comm: Some(comm.into()),
        summary,
        ..Record::default()
    };
    for p in 0..ports {
        let mut t = t0 + rand(1800) * S;
        let mut pid = 1000 + p as u32 * 10;
        recs.push(rec(
            t0,
            "held",
            p,
            pid,
            "app",
            format!("tcp 0.0.0.0:{} held by app", 8000 + p),
        ));
        while t < t0 + day {
            recs.push(rec(
                t,
                "listen_stop",
                p,
                pid,
                "app",
                "stopped listening".into(),
            ));
            pid += 1;
            recs.push(rec(t + 2 * S, "listen", p, pid, "app", "listens".into()));
            t += (1500 + rand(600)) * S;
        }
    }
    while recs.len() < total {
        let p = rand(ports);
        let start = t0 + rand(day);
        let pid = 50_000 + rand(200) as u32;
        let burst = 5 + rand(60);
        let summary = format!(
            "worker (pid {pid}) bind 0.0.0.0:{}: EADDRINUSE: app (pid {}) listens on 0.0.0.0:{}",
            8000 + p,
            1000 + p * 10,
            8000 + p
        );
        let detail = Detail::of(&serde_json::json!({
            "diagnosis": {
                "summary": summary,
                "holders": [{
                    "reason": "same_address",
                    "explanation": "the port is held on the same address",
                    "hint": "stop the holder or choose another port",
                    "holder": {"endpoint": format!("0.0.0.0:{}", 8000 + p),
                               "owners": [{"pid": 1000 + p * 10, "comm": "app", "cmdline": "/usr/bin/app --serve"}]},
                }],
            },
        }));
        recs.push(Record {
            time_ns: start,
            kind: "alert_firing".into(),
            summary: "BindwatchBindConflict firing: a bind failed on a watched port".into(),
            ..rec(start, "alert_firing", p, 0, "", String::new())
        });
        for i in 0..burst {
            let mut r = rec(
                start + i * S / 2,
                "bind_failed",
                p,
                pid,
                "worker",
                summary.clone(),
            );
            r.error = Some("EADDRINUSE".into());
            r.holder_pid = Some(1000 + p as u32 * 10);
            r.holder_comm = Some("app".into());
            r.reason = Some("same_address".into());
            r.detail = detail.clone();
            recs.push(r);
        }
        recs.push(Record {
            kind: "alert_resolved".into(),
            summary: "BindwatchBindConflict resolved: a bind failed on a watched port".into(),
            ..rec(
                start + burst * S / 2 + 300 * S,
                "alert_resolved",
                p,
                0,
                "",
                String::new(),
            )
        });
    }
    recs.truncate(total);
    recs.sort_by_key(|r| r.time_ns);
    let html = bindwatch::report::render_html(
        "bindwatch timeline: a busy day",
        &recs,
        t0,
        t0 + day,
        None,
        None,
    );
    std::fs::write(&out, html).expect("writing the page");
    eprintln!(
        "busy_day: {} records over {ports} ports in {out}",
        recs.len()
    );
}
