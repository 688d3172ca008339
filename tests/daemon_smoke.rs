//! The daemon in brief, for every kernel of the matrix: it starts and says
//! it is ready, `/metrics` has every hook attached, `/healthz` and
//! `/metrics` name the probe set the kernel offers and where the TCP
//! lifecycle comes from, and a watched port that loses its holder (a
//! listener from before the daemon started) raises one alert at a real
//! webhook receiver.

use support::*;

#[test]
fn daemon_starts_scrapes_and_alerts_when_a_watched_port_is_lost() {
    let state = temp("smoke");
    let listen = free_local_addr();
    let hook: u16 = free_local_port();
    let got = webhook_receiver(hook);
    let ns = Netns::new("smoke");
    let mut holder = Server::spawn(&ns, &["socat", "TCP4-LISTEN:8088", "-"]);
    holder.wait_listening(&ns, 8088);
    let daemon = Daemon::start(
        &state,
        &listen,
        &format!(
            "[alerts]\nwebhook = [\"http://127.0.0.1:{hook}/hook\"]\n\
             [[watch]]\nname = \"smoke\"\nport = 8088\nnetns = \"/run/netns/{}\"\n\
             owner = {{ command = \"socat\" }}\n",
            ns.name
        ),
    );
    // Every hook the daemon has reports attached.
    let text = curl(&format!("http://{listen}/metrics")).unwrap();
    let hooks: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("bindwatch_probe_attached{"))
        .collect();
    assert!(!hooks.is_empty(), "no bindwatch_probe_attached series");
    for l in &hooks {
        assert!(l.ends_with(" 1"), "a hook is not attached: {l}");
    }
    // The probe set in use is named in /healthz and /metrics.
    let set = expected_probe_set();
    let health = curl(&format!("http://{listen}/healthz")).unwrap();
    assert!(
        health.contains(&format!("\"probes\":\"{set}\"")),
        "{set} in /healthz: {health}"
    );
    assert_eq!(
        metric(&listen, &format!("bindwatch_probe_set{{set=\"{set}\"}}")),
        1.0
    );
    let lifecycle = expected_lifecycle();
    assert!(
        health.contains(&format!("\"tcp_lifecycle\":\"{lifecycle}\"")),
        "{lifecycle} in /healthz: {health}"
    );
    assert_eq!(
        metric(
            &listen,
            &format!("bindwatch_tcp_lifecycle{{source=\"{lifecycle}\"}}")
        ),
        1.0
    );
    wait_for("the watched port up", 30, || {
        try_metric(&listen, "bindwatch_watched_port_up{watch=\"smoke\"}")
            .is_ok_and(|v| v == 1.0)
            .then_some(())
    });
    holder.stop();
    wait_for("the port-lost alert at the webhook", 30, || {
        let g = got.lock().unwrap();
        (g.contains("BindwatchPortLost") && g.contains("\"smoke\"")).then_some(())
    });
    wait_for("the watched port down in /metrics", 30, || {
        (metric(&listen, "bindwatch_watched_port_up{watch=\"smoke\"}") == 0.0).then_some(())
    });
    daemon.stop();
}
