//! The timeline page as an operator reads it after an outage, in headless
//! Chromium, on a recorded incident with real processes: nginx holds port
//! 80 in a namespace, a second address fails to bind three times, nginx
//! stops, socat takes the port, nginx fails to restart on it, socat goes,
//! nginx comes back, and a last failure ends the incident about 30 s after
//! it began; the page is asked for the last 2 hours. The page must open on
//! the incident, zoom by a drag, say each thing once in its table, and
//! link a mark to its row and a row to the picture.
//!
//! The browser is driven by `tests/ui/page.mjs` (Playwright on Debian's
//! Chromium; `scripts/test` installs both); it reports what it measured
//! and this file judges it.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;
use support::*;

fn drive(mode: &str, url: &str, outdir: &Path) -> Value {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("ui/page.mjs");
    let out = Command::new("node")
        .arg(&script)
        .args([mode, url])
        .arg(outdir)
        .output()
        .unwrap_or_else(|e| panic!("node (scripts/test installs it): {e}"));
    assert!(
        out.status.success(),
        "{} {mode} {url} (scripts/test installs playwright-core under tests/ui):\n{}",
        script.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn f(v: &Value, k: &str) -> f64 {
    v[k].as_f64()
        .unwrap_or_else(|| panic!("no number {k} in {v}"))
}

/// How much of the plot's width the incident's elements cover: from the
/// leftmost to the rightmost edge of what was drawn (a bar still held at
/// the end counts by its start only).
fn incident_share(g: &Value) -> f64 {
    let mut xs = Vec::new();
    for m in g["marks"].as_array().unwrap() {
        xs.push((f(m, "left") + f(m, "right")) / 2.0);
    }
    for b in g["bars"].as_array().unwrap() {
        xs.push(f(b, "left"));
        if b["open"] != true {
            xs.push(f(b, "right"));
        }
    }
    assert!(!xs.is_empty(), "nothing drawn: {g}");
    let lo = xs.iter().cloned().fold(f64::INFINITY, f64::min);
    let hi = xs.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    (hi - lo) / f(&g["plot"], "width")
}

/// A grouped row's count (`▸3×`: its button, the number, the sign).
fn count_of(row: &Value) -> u64 {
    let text = row["count"].as_str().unwrap();
    text.trim_start_matches(['▸', '▾'])
        .trim_end_matches('×')
        .parse()
        .unwrap_or_else(|_| panic!("count {text:?}"))
}

fn view_span(g: &Value) -> f64 {
    g["view"][1].as_f64().unwrap() - g["view"][0].as_f64().unwrap()
}

/// The table the page should show for these records, computed here the
/// plain way: repeated failures (one process, one address, one holder)
/// are one row, an alert from firing to resolved is one row, every other
/// record is one row. Returns (failure groups, episodes, other rows).
fn expected_rows(records: &[Value]) -> (usize, usize, usize) {
    let mut groups = HashSet::new();
    let mut open: HashSet<(String, String)> = HashSet::new();
    let (mut episodes, mut others) = (0, 0);
    for r in records {
        let kind = r["kind"].as_str().unwrap();
        match kind {
            "bind_failed" => {
                groups.insert(format!(
                    "{}|{}|{}|{}|{}|{}",
                    r["pid"], r["proto"], r["addr"], r["port"], r["error"], r["holder_pid"]
                ));
            }
            "alert_firing" | "alert_resolved" => {
                let name = r["summary"]
                    .as_str()
                    .unwrap()
                    .split_whitespace()
                    .next()
                    .unwrap()
                    .to_owned();
                let key = (name, r["port"].to_string());
                let was_open = open.contains(&key);
                if kind == "alert_firing" {
                    if !was_open {
                        episodes += 1;
                        open.insert(key);
                    }
                } else if was_open {
                    open.remove(&key);
                } else {
                    episodes += 1;
                }
            }
            _ => others += 1,
        }
    }
    (groups.len(), episodes, others)
}

#[test]
fn the_page_fits_the_incident_zooms_and_says_each_thing_once() {
    let state = temp("tl-page");
    let ns = Netns::new("tlp");
    ns.ip(&["addr", "add", "10.77.0.1/24", "dev", "lo"]);
    let listen = &free_local_addr();
    let daemon = Daemon::start(
        &state,
        listen,
        &format!(
            "[[watch]]\nname = \"web\"\nport = 80\nnetns = \"/run/netns/{}\"\n[watch.owner]\ncommand = \"nginx\"\n",
            ns.name
        ),
    );
    let records = |since: &str| -> Vec<Value> {
        let v: Value = serde_json::from_str(
            &curl(&format!(
                "http://{listen}/api/v1/timeline?port=80&since={since}"
            ))
            .unwrap(),
        )
        .unwrap();
        v["records"].as_array().unwrap().clone()
    };
    let recorded = |what: &str, pred: &dyn Fn(&Value) -> bool| {
        wait_for(what, 30, || records("1h").iter().any(pred).then_some(()))
    };
    let fail_once = || {
        let err = ns.run(|| std::net::TcpListener::bind("10.77.0.1:80").unwrap_err());
        assert_eq!(err.raw_os_error(), Some(libc::EADDRINUSE));
    };
    let begun = Instant::now();
    let mut nginx = Server::nginx(&ns, &["0.0.0.0:80"], 80);
    let me = std::process::id();
    for n in 1..=3 {
        fail_once();
        recorded(&format!("failure {n} of the second address"), &|r| {
            r["kind"] == "bind_failed" && r["pid"] == me
        });
    }
    nginx.stop();
    recorded("port lost", &|r| alert_fired(r, "BindwatchPortLost"));
    let mut socat = Server::spawn(&ns, &["socat", "TCP4-LISTEN:80", "-"]);
    socat.wait_listening(&ns, 80);
    let restart = nginx.nginx_again(&ns);
    let restart_pid = restart.pid;
    recorded("nginx's failed restart", &|r| {
        r["kind"] == "bind_failed" && r["pid"] == restart_pid && r["holder_comm"] == "socat"
    });
    drop(restart);
    let socat_pid = socat.pid;
    drop(socat);
    recorded("socat gone", &|r| {
        (r["kind"] == "listen_stop" || r["kind"] == "release") && r["pid"] == socat_pid
    });
    let mut back = nginx.nginx_again(&ns);
    back.wait_listening(&ns, 80);
    let back_pid = back.pid;
    recorded("nginx back", &|r| {
        r["kind"] == "listen" && r["pid"] == back_pid
    });
    // The incident ends with one more failure about 30 s after it began.
    std::thread::sleep(Duration::from_secs(30).saturating_sub(begun.elapsed()));
    fail_once();
    wait_for("the last failure", 30, || {
        let mine = records("1h")
            .iter()
            .filter(|r| r["kind"] == "bind_failed" && r["pid"] == me)
            .count();
        (mine == 4).then_some(())
    });
    let recs = records("2h");
    let ui = drive(
        "fit",
        &format!("http://{listen}/ui?port=80&since=2h"),
        Path::new("/"),
    );
    daemon.stop();

    let html = state.parent().unwrap().join("timeline.html");
    timeline_cli(
        &state,
        &[
            "--port",
            "80",
            "--since",
            "2h",
            "--html",
            html.to_str().unwrap(),
        ],
    );
    let shots = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("timeline-page");
    std::fs::create_dir_all(&shots).unwrap();
    let page = drive("story", &format!("file://{}", html.display()), &shots);
    eprintln!(
        "timeline_page: screenshots in {}; {} records",
        shots.display(),
        recs.len()
    );

    // Fitted: the incident takes at least half the lanes' width, from the
    // file and from /ui; over the whole 2 hours it would be a sliver.
    for (what, g) in [("report", &page["default"]), ("/ui", &ui["default"])] {
        let share = incident_share(g);
        assert!(
            share >= 0.5,
            "{what}: the incident covers {share:.3} of the lane width: {g}"
        );
    }
    let whole = incident_share(&page["whole"]);
    assert!(whole < 0.05, "the whole window squeezes it: {whole:.3}");

    // Zoom by dragging across a bar too narrow for its label: the axis
    // narrows and the label appears.
    let dragged = page["dragged"]
        .as_str()
        .unwrap_or_else(|| panic!("every bar had its label in the default view: {page}"));
    let labelled = |g: &Value| {
        g["bars"]
            .as_array()
            .unwrap()
            .iter()
            .any(|b| b["label"] == dragged && b["labelled"] == true)
    };
    assert!(!labelled(&page["default"]));
    assert!(
        view_span(&page["zoomed"]) < view_span(&page["default"]) / 2.0,
        "the drag narrowed the axis: {} -> {}",
        view_span(&page["default"]),
        view_span(&page["zoomed"])
    );
    assert_ne!(page["zoomed"]["axis"], page["default"]["axis"]);
    assert!(
        labelled(&page["zoomed"]),
        "{dragged} labelled once zoomed: {}",
        page["zoomed"]["bars"]
    );

    // The wheel zooms in, an arrow key pans by a fifth, Esc fits again.
    let span = |v: &Value| v[1].as_f64().unwrap() - v[0].as_f64().unwrap();
    let (dflt, wheeled, panned) = (&page["default"]["view"], &page["wheeled"], &page["panned"]);
    assert!(
        span(wheeled) < span(dflt) * 0.7,
        "wheel: {dflt} -> {wheeled}"
    );
    let moved = panned[0].as_f64().unwrap() - wheeled[0].as_f64().unwrap();
    assert!(
        (moved / span(wheeled) - 0.2).abs() < 0.01 && (span(panned) - span(wheeled)).abs() < 1e3,
        "pan: {wheeled} -> {panned}"
    );
    assert_eq!(&page["reset"], dflt);

    // Each thing once: one row per failure group, per alert episode, per
    // other record.
    let rows = page["default"]["rows"].as_array().unwrap();
    let kinds: HashMap<&str, usize> = rows.iter().fold(HashMap::new(), |mut m, r| {
        *m.entry(r["kind"].as_str().unwrap()).or_default() += 1;
        m
    });
    let (groups, episodes, others) = expected_rows(&recs);
    assert_eq!(
        (
            kinds.get("bind_failed").copied().unwrap_or(0),
            kinds.get("alert episode").copied().unwrap_or(0),
            rows.len()
        ),
        (groups, episodes, groups + episodes + others),
        "rows: {rows:#?}"
    );
    let second = rows
        .iter()
        .find(|r| {
            r["kind"] == "bind_failed" && r["summary"].as_str().unwrap().contains("10.77.0.1:80")
        })
        .unwrap_or_else(|| panic!("no row for the second address: {rows:#?}"));
    // The last failure ran into the nginx that came back: another holder,
    // another row.
    assert_eq!(count_of(second), 3, "the three failures before: {second}");
    // A conflict episode covers at least the failure that raised it.
    for r in rows.iter().filter(|r| {
        r["kind"] == "alert episode"
            && r["summary"]
                .as_str()
                .unwrap()
                .starts_with("BindwatchBindConflict")
    }) {
        assert!(!r["count"].as_str().unwrap().contains(" 0 failed"), "{r}");
    }
    let firing = recs.iter().filter(|r| r["kind"] == "alert_firing").count();
    eprintln!(
        "timeline_page: {} records, {} rows; {firing} alert notifications in {episodes} episodes",
        recs.len(),
        rows.len()
    );

    // A mark selects its row and shows its record.
    let mark_row = page["clickedMark"]["row"].as_u64().expect("a mark clicked");
    let after = &page["afterMark"];
    let selected: Vec<u64> = after["rows"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["selected"] == true)
        .map(|r| r["row"].as_u64().unwrap())
        .collect();
    assert_eq!(selected, vec![mark_row]);
    let card = after["card"].as_str().expect("the record shown");
    for field in ["Diagnosis", "Holder", "Reason", "Fix"] {
        assert!(card.contains(field), "{field} in the card:\n{card}");
    }
    // A row lights its place in the picture; its button lists its records.
    let row = page["clickedRow"].as_u64().expect("a grouped row clicked");
    assert!(page["afterRow"]["highlights"].as_u64().unwrap() >= 1);
    assert!(
        page["afterRow"]["selectedInPicture"]
            .as_array()
            .unwrap()
            .contains(&Value::from(row)),
        "{}",
        page["afterRow"]
    );
    let count = count_of(&rows[row as usize]);
    assert_eq!(page["expanded"]["members"].as_u64(), Some(count));
    let _ = std::fs::remove_dir_all(state.parent().unwrap());
}
