//! Volume and lifecycle: a 100k-cycle burst with nothing lost, loss counted
//! when the ring buffer is made tiny, and no program left after the agent
//! stops. Needs root and eBPF (see support::can_run). The tests of this
//! binary run one at a time: they count host-wide programs and losses.

mod support;

use std::collections::HashSet;
use std::sync::Mutex;

use serde_json::Value;
use socket2::{Domain, Socket, Type};
use support::{Netns, final_loss, in_netns, of_kind, tracer_or_skip};

static SERIAL: Mutex<()> = Mutex::new(());

/// `n` cycles of socket, bind to 127.0.0.1:`port`, close. Returns how many
/// binds succeeded.
fn bind_close_cycles(ns: &Netns, port: u16, n: usize) -> usize {
    ns.run(move || {
        let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let addr = addr.into();
        (0..n)
            .filter(|_| {
                let s = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
                s.bind(&addr).is_ok()
            })
            .count()
    })
}

fn count(events: &[Value], kind: &str, port: u64) -> usize {
    of_kind(events, kind)
        .iter()
        .filter(|e| e["port"] == port)
        .count()
}

#[test]
fn burst_of_100k_bind_close_cycles_loses_nothing() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let Some(tracer) = tracer_or_skip("burst_100k", &["--port", "9601"]) else {
        return;
    };
    const N: usize = 100_000;
    let ns = Netns::new("burst");
    let cookie = ns.cookie();
    assert_eq!(bind_close_cycles(&ns, 9601, N), N);
    let all = tracer.stop();
    let loss = final_loss(&all);
    let ours = in_netns(&all, cookie);
    eprintln!("burst: {N} cycles, final report {loss}");
    assert_eq!(loss["lost_ringbuf_full"], 0, "{loss}");
    assert_eq!(loss["lost_pending_map_full"], 0, "{loss}");
    assert_eq!(loss["malformed"], 0, "{loss}");
    assert_eq!(count(&ours, "bind", 9601), N, "every bind is accounted for");
    assert_eq!(
        count(&ours, "release", 9601),
        N,
        "every release is accounted for"
    );
}

#[test]
fn a_tiny_ring_buffer_counts_what_it_drops() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let Some(tracer) = tracer_or_skip(
        "tiny_ring",
        &["--port", "9602", "--ring-buffer-bytes", "4096"],
    ) else {
        return;
    };
    const N: usize = 20_000;
    let ns = Netns::new("tiny");
    let cookie = ns.cookie();
    assert_eq!(bind_close_cycles(&ns, 9602, N), N);
    let all = tracer.stop();
    let loss = final_loss(&all);
    let ours = in_netns(&all, cookie);
    let lost = loss["lost_ringbuf_full"].as_u64().unwrap();
    let seen = count(&ours, "bind", 9602) + count(&ours, "release", 9602);
    eprintln!("tiny ring: {N} cycles, {seen} of our events read, {lost} lost (host-wide)");
    assert!(lost > 0, "a 4 KiB ring cannot hold this burst: {loss}");
    assert!(
        seen as u64 + lost >= 2 * N as u64,
        "every event is either read or counted lost: read {seen}, lost {lost}"
    );
}

const OUR_PROGRAMS: &[&str] = &[
    "sys_enter_bind",
    "sys_exit_bind",
    "bind4",
    "bind6",
    "post_bind4",
    "post_bind6",
    "sys_enter_listen",
    "sys_exit_listen",
    "inet_sock_set_s",
    "sock_release",
];

fn our_program_ids() -> HashSet<u32> {
    aya::programs::loaded_programs()
        .flatten()
        .filter(|p| {
            p.name_as_str().is_some_and(|n| {
                OUR_PROGRAMS
                    .iter()
                    .any(|o| o.starts_with(n) && !n.is_empty())
            })
        })
        .map(|p| p.id())
        .collect()
}

#[test]
fn stopping_detaches_every_program() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    if !support::can_run("detach") {
        return;
    }
    let before = our_program_ids();
    let Some(tracer) = tracer_or_skip("detach", &["--port", "9603"]) else {
        return;
    };
    let during: HashSet<u32> = our_program_ids().difference(&before).copied().collect();
    assert_eq!(
        during.len(),
        OUR_PROGRAMS.len(),
        "all hooks loaded: {during:?}"
    );
    tracer.stop();
    let left: Vec<u32> = our_program_ids().intersection(&during).copied().collect();
    assert!(
        left.is_empty(),
        "programs left loaded after SIGTERM: {left:?}"
    );
}
