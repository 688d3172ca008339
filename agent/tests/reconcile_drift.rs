//! The holder table repairs itself: with a ring buffer too small for a
//! burst, bind events are lost (and counted), and the next reconciliation
//! with the kernel's tables finds the missing sockets and counts them as
//! drift.

mod support;

use std::time::Duration;

use socket2::{Domain, SockAddr, Socket, Type};
use support::*;

#[test]
fn reconciliation_finds_sockets_whose_events_were_lost() {
    let Some(tracer) = tracer_or_skip(
        "reconcile_drift",
        &["--ring-buffer-bytes", "4096", "--reconcile-every", "1"],
    ) else {
        return;
    };
    let ns = Netns::new("drift");
    let held = ns.run(|| {
        (0..2000u16)
            .map(|i| {
                let s = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
                let a: std::net::SocketAddr = format!("127.0.0.1:{}", 30000 + i).parse().unwrap();
                s.bind(&SockAddr::from(a)).unwrap();
                s.listen(4).unwrap();
                s
            })
            .collect::<Vec<_>>()
    });
    // Two reconciliation periods, sockets still held.
    std::thread::sleep(Duration::from_millis(2500));
    let events = tracer.stop();
    drop(held);
    let loss = final_loss(&events);
    assert!(
        loss["lost_ringbuf_full"].as_u64().unwrap() > 0,
        "the burst overflowed the ring: {loss}"
    );
    let holders = events
        .iter()
        .rev()
        .find(|e| e["kind"] == "holders")
        .expect("final holders line");
    let t = &holders["table"];
    assert!(t["drift_missing"].as_u64().unwrap() > 0, "{holders}");
    assert!(t["tracked"].as_u64().unwrap() >= 2000, "{holders}");
}
