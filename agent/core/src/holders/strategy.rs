//! The diagnosis of one failed bind, as the daemon runs it: the table
//! alone first (no I/O: the fast path), the host's facts only when the
//! table cannot answer (EACCES, EADDRNOTAVAIL, a holder the table does not
//! follow), http.sys's state when the holder is http.sys, and a check of
//! holders known only from their bind event (forked children share the
//! socket; IPV6_V6ONLY is unread), after which the answer is made again.

use super::diagnose::{Diagnosis, DiagnosisKind, HostFacts, NoFacts, diagnose};
use super::{HolderTable, ProcessInfo};
use crate::conflict::Reason;
use crate::event::Event;

/// Diagnoses the failed bind `ev` against `table` (which already holds
/// every event before it). `table_answered` is called as soon as the table
/// alone has named a conflicting holder, so the caller can time the fast
/// path. The table learns what the host said of unverified holders.
pub fn diagnose_failed_bind(
    table: &mut HolderTable,
    ev: &Event,
    facts: &mut impl HostFacts,
    mut table_answered: impl FnMut(),
) -> Option<Diagnosis> {
    let mut d = diagnose(table, ev, &mut NoFacts)?;
    match d.kind {
        DiagnosisKind::Conflict => table_answered(),
        // Port 0 with the range exhausted: nothing the host adds.
        DiagnosisKind::NoFreePort => {}
        _ => d = diagnose(table, ev, facts)?,
    }
    // http.sys's answer names the processes it listens for, which only the
    // host's facts know.
    if d.holders.iter().any(|b| b.reason == Reason::HttpSys) {
        d = diagnose(table, ev, facts)?;
    }
    if verify(table, &d, facts) {
        d = diagnose(table, ev, facts)?;
    }
    if let Some(owner) = requester(table, ev, facts) {
        d.set_requester(owner, ev);
    }
    Some(d)
}

/// Whom a failing middleman was binding for. Only a command that is a
/// middleman's is looked at, and its details are read at once if the
/// table has no command line yet (a docker-proxy that failed exits at
/// once; then the directory's starting container names it).
fn requester(
    table: &HolderTable,
    ev: &Event,
    facts: &mut impl HostFacts,
) -> Option<crate::owner::Owner> {
    // Before any /proc read: most failing processes stand for themselves.
    if !crate::owner::middleman::binds_for_others(&ev.comm) {
        return None;
    }
    let p = match table.process(ev.pid) {
        Some(p) if p.complete => Some(p.clone()),
        _ => facts.process(ev.pid),
    };
    crate::owner::requester(
        table.directory(),
        &ev.comm,
        p.as_ref().map(ProcessInfo::candidate),
        ev.proto,
        ev.port,
    )
}

/// Asks the host for holders the table knows only from their bind event;
/// true when the table changed.
fn verify(table: &mut HolderTable, d: &Diagnosis, facts: &mut impl HostFacts) -> bool {
    let mut changed = false;
    for b in &d.holders {
        let h = &b.holder;
        if h.owners_verified && b.certain {
            continue;
        }
        if let Some((k, processes)) = facts.owners_of(h.netns, h.proto, h.port, h.cookie) {
            table.refresh_from_kernel(&k, processes);
            changed = true;
        }
    }
    changed
}

#[cfg(test)]
mod tests {
    use std::net::IpAddr;

    use bindwatch_common::{IPPROTO_TCP, flags, kind};

    use super::*;
    use crate::event::Proto;
    use crate::holders::{Holder, ProcessInfo};

    /// Host facts written by the test; counts what was asked.
    #[derive(Default)]
    struct FakeHost {
        port_start: Option<u16>,
        owners: Option<(Holder, Vec<ProcessInfo>)>,
        asked: Vec<&'static str>,
    }

    impl HostFacts for FakeHost {
        fn unprivileged_port_start(&mut self, _: Option<u64>, _: u32) -> Option<u16> {
            self.asked.push("port_start");
            self.port_start
        }
        fn addresses(&mut self, _: Option<u64>, _: u32) -> Option<Vec<IpAddr>> {
            self.asked.push("addresses");
            Some(vec!["127.0.0.1".parse().unwrap()])
        }
        fn port_sockets(
            &mut self,
            _: Option<u64>,
            _: u32,
            _: Proto,
            _: u16,
        ) -> Option<(Vec<Holder>, Vec<ProcessInfo>)> {
            self.asked.push("port_sockets");
            Some((Vec::new(), Vec::new()))
        }
        fn owners_of(
            &mut self,
            _: u64,
            _: Proto,
            _: u16,
            _: u64,
        ) -> Option<(Holder, Vec<ProcessInfo>)> {
            self.asked.push("owners_of");
            self.owners.clone()
        }
    }

    fn listener(t: &mut HolderTable, pid: u32, port: u16) {
        let mut r = crate::testing::raw(kind::BIND, "0.0.0.0", port, IPPROTO_TCP, 0);
        r.sock_cookie = 7;
        r.pid = pid;
        t.apply(&crate::testing::event(&r));
        r.kind = kind::LISTEN;
        t.apply(&crate::testing::event(&r));
    }

    fn failed(port: u16, errno: i32) -> Event {
        let mut r = crate::testing::raw(kind::BIND, "0.0.0.0", port, IPPROTO_TCP, -errno);
        r.pid = 999;
        r.flags = flags::SOCK_INFO;
        crate::testing::event(&r)
    }

    fn process(pid: u32, comm: &str) -> ProcessInfo {
        ProcessInfo {
            pid,
            comm: comm.into(),
            ..ProcessInfo::default()
        }
    }

    #[test]
    fn a_verified_holder_is_named_from_the_table_alone() {
        let mut t = HolderTable::new();
        listener(&mut t, 100, 8080);
        // Verified once: the host is asked, and names the forked child too.
        let mut host = FakeHost::default();
        let mut k = t.get(7).cloned().unwrap();
        k.owners = smallvec::smallvec![100, 101];
        host.owners = Some((k, vec![process(100, "nginx"), process(101, "nginx")]));
        let mut fast = 0;
        let d = diagnose_failed_bind(&mut t, &failed(8080, 98), &mut host, || fast += 1).unwrap();
        assert_eq!(d.kind, DiagnosisKind::Conflict);
        assert_eq!(fast, 1, "the table named the holder at once");
        assert_eq!(host.asked, vec!["owners_of"]);
        let pids: Vec<u32> = d.holders[0].holder.owners.iter().map(|o| o.pid).collect();
        assert_eq!(pids, vec![100, 101], "the child the host reported is named");

        // The next failure needs no host at all.
        host.asked.clear();
        let d = diagnose_failed_bind(&mut t, &failed(8080, 98), &mut host, || fast += 1).unwrap();
        assert_eq!(d.holders.len(), 1);
        assert_eq!(fast, 2);
        assert!(
            host.asked.iter().all(|a| *a == "owners_of"),
            "{:?}",
            host.asked
        );
    }

    #[test]
    fn eacces_asks_the_host_for_the_sysctl() {
        let mut t = HolderTable::new();
        let mut host = FakeHost {
            port_start: Some(1024),
            ..FakeHost::default()
        };
        let mut fast = 0;
        let d = diagnose_failed_bind(&mut t, &failed(80, 13), &mut host, || fast += 1).unwrap();
        assert_eq!(d.kind, DiagnosisKind::PrivilegedPort);
        assert_eq!(fast, 0, "not a table answer");
        assert!(host.asked.contains(&"port_start"), "{:?}", host.asked);
    }

    #[test]
    fn a_holder_the_table_does_not_follow_is_looked_up_on_the_host() {
        let mut t = HolderTable::new();
        let mut host = FakeHost::default();
        let mut fast = 0;
        let d = diagnose_failed_bind(&mut t, &failed(9090, 98), &mut host, || fast += 1).unwrap();
        assert_eq!(fast, 0);
        assert!(host.asked.contains(&"port_sockets"), "{:?}", host.asked);
        assert_eq!(d.kind, DiagnosisKind::HolderNotFound);
    }
}
