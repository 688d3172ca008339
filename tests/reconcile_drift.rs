//! The holder table repairs itself: the daemon is frozen while a namespace
//! of the test's own binds far more listeners than its tiny ring buffer
//! can hold, so most of their events are lost; reconciliation with the
//! kernel's tables must then find every one of them.

use socket2::{Domain, SockAddr, Socket, Type};
use support::*;

const RING: u32 = 4096;
const SOCKETS: u16 = 500;

#[test]
fn reconciliation_finds_sockets_whose_events_were_lost() {
    let state = temp("drift");
    let listen = free_local_addr();
    let mut daemon = Daemon::start(
        &state,
        &listen,
        &format!("[probes]\nring_buffer_bytes = {RING}\n[holders]\nreconcile_every_secs = 1\n"),
    );
    let ns = Netns::new("drift");
    let cookie = ns.cookie();
    let missing_metric = "bindwatch_holder_table_drift_corrections_total{kind=\"missing\"}";
    let lost_before = metric(&listen, "bindwatch_events_lost_total");
    let found_before = metric(&listen, missing_metric);
    // Frozen, the daemon reads nothing: a 4 KiB ring holds a few dozen
    // events (each is over 100 bytes), so most of these 1000 bind and
    // listen events are dropped whatever else the host does.
    support::signal(daemon.child.id(), support::Signal::STOP).expect("SIGSTOP");
    let ports: Vec<u16> = (0..SOCKETS).map(|i| 31000 + i).collect();
    let held = ns.run({
        let ports = ports.clone();
        move || {
            ports
                .iter()
                .map(|p| {
                    let s = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
                    let a: std::net::SocketAddr = format!("127.0.0.1:{p}").parse().unwrap();
                    s.bind(&SockAddr::from(a)).unwrap();
                    s.listen(4).unwrap();
                    s
                })
                .collect::<Vec<_>>()
        }
    });
    support::signal(daemon.child.id(), support::Signal::CONT).expect("SIGCONT");
    // Every listener of the namespace is in the table, found by asking for
    // each port in this namespace only.
    let mut missing = ports.clone();
    wait_for("every listener in the holder table", 60, || {
        missing.retain(|p| {
            let (status, body) = http_get(
                &listen,
                &format!("/api/v1/holders?port={p}&proto=tcp&netns={cookie}"),
            )
            .unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(status, 200, "{body}");
            let v: serde_json::Value = serde_json::from_str(&body).unwrap();
            !v["holders"].as_array().is_some_and(|h| {
                h.iter()
                    .any(|h| h["netns"] == cookie && h["state"] == "listen")
            })
        });
        missing.is_empty().then_some(())
    });
    // The path under test ran: events were dropped, and the reconciliation
    // (not the events) put most of this namespace's listeners in the table.
    // The ring held at most RING / 100 records, so at most that many of
    // them came from events; other sockets on the host can only add.
    let lost = metric(&listen, "bindwatch_events_lost_total") - lost_before;
    assert!(lost > 0.0, "no event was lost: the drift path did not run");
    let found = metric(&listen, missing_metric) - found_before;
    let floor = f64::from(SOCKETS) - f64::from(RING / 100);
    assert!(
        found >= floor,
        "the reconciliation added {found} missing sockets, fewer than the {floor} the ring could not carry"
    );
    drop(held);
    daemon.wait_ready(&listen);
}
