//! From ring-buffer records to [`Event`]s: validation, time conversion and
//! the join that gives hook-poor events (listen, listen stop) the socket and
//! namespace cookies their bind carried, and a TCP socket's release the
//! address it held (`flags::ADDRESS_JOINED`).

use std::collections::HashMap;
use std::net::IpAddr;

use bindwatch_common::{DecodeError, RawEvent, flags};

use crate::clock::Clock;
use crate::event::{Event, EventKind, Proto, SockOptions};

const TCP_LISTEN: u8 = bindwatch_common::tcp_state::LISTEN as u8;

/// How many sockets the join remembers. Past it, listen events of sockets
/// bound later lack the namespace cookie (counted in `join_full`).
pub const JOIN_CAPACITY: usize = 262_144;

/// Counters of what the decoder refused or could not join.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct DecodeStats {
    pub decoded: u64,
    pub bad_size: u64,
    pub bad_version: u64,
    pub bad_kind: u64,
    pub bad_family: u64,
    pub join_full: u64,
    /// Releases of TCP sockets that held a port (listening, or closed
    /// with one and no peer) whose bind or listen the decoder never saw:
    /// binds lost in the ring, clients bound by hand whose connect failed,
    /// or sockets bound before the probes loaded that the agent could not
    /// mark. Dropped, not malformed.
    pub releases_unjoined: u64,
}

impl DecodeStats {
    pub fn rejected(&self) -> u64 {
        self.bad_size + self.bad_version + self.bad_kind + self.bad_family
    }
}

#[derive(Default)]
struct SockIds {
    sock_cookie: Option<u64>,
    netns_cookie: Option<u64>,
    /// The task that last listened on or released the socket: a stop from
    /// a hook that cannot read the task (the sock_ops state callback) is
    /// given the release's task (close) or else the listen's (shutdown).
    task: Option<Task>,
    /// The address the socket holds, from its bind or listen: what its
    /// release gets when the probes could not read it.
    held: Option<Held>,
    /// Released while listening: the stop that follows ends the entry (a
    /// stop without a release leaves the socket, and its port, in place).
    released: bool,
}

#[derive(Clone, Copy)]
struct Held {
    addr: IpAddr,
    port: u16,
    proto: Proto,
}

impl Held {
    fn of(ev: &Event) -> Self {
        Self {
            addr: ev.addr,
            port: ev.bound_port.unwrap_or(ev.port),
            proto: ev.proto,
        }
    }
}

#[derive(Clone)]
struct Task {
    pid: u32,
    tid: u32,
    uid: u32,
    gid: u32,
    comm: String,
    cgroup_id: u64,
}

pub struct Decoder {
    clock: Clock,
    by_skaddr: HashMap<u64, SockIds>,
    stats: DecodeStats,
}

impl Decoder {
    /// Joins a listen, or a release while listening, to its socket's
    /// cookies, and remembers its task for the stop to come.
    fn remember(&mut self, ev: &mut Event) {
        let task = (ev.pid != 0).then(|| Task {
            pid: ev.pid,
            tid: ev.tid,
            uid: ev.uid,
            gid: ev.gid,
            comm: ev.comm.clone(),
            cgroup_id: ev.cgroup_id,
        });
        // A listen's address, for a socket whose bind was not seen (bound
        // before the probes loaded, or autobound by listen()).
        let held = (ev.kind == EventKind::Listen && !ev.failed()).then(|| Held::of(ev));
        let released = ev.kind == EventKind::Release;
        if let Some(ids) = self.by_skaddr.get_mut(&ev.skaddr) {
            ev.sock_cookie = ev.sock_cookie.or(ids.sock_cookie);
            ev.netns_cookie = ev.netns_cookie.or(ids.netns_cookie);
            ids.task = task.or(ids.task.take());
            ids.held = ids.held.or(held);
            ids.released |= released;
        } else if self.by_skaddr.len() < JOIN_CAPACITY {
            let ids = SockIds {
                sock_cookie: ev.sock_cookie,
                netns_cookie: ev.netns_cookie,
                task,
                held,
                released,
            };
            self.by_skaddr.insert(ev.skaddr, ids);
        } else {
            self.stats.join_full += 1;
        }
    }

    pub fn new(clock: Clock) -> Self {
        Self {
            clock,
            by_skaddr: HashMap::new(),
            stats: DecodeStats::default(),
        }
    }

    pub fn stats(&self) -> DecodeStats {
        self.stats
    }

    /// Decodes one record into `out`: its event and, for a release that
    /// carries its listener's stop (`flags::STOP_FOLDED`), the stop just
    /// after it, in the kernel's order. A malformed record is counted,
    /// logged once per kind of fault, and dropped; it never panics.
    pub fn decode_into(&mut self, bytes: &[u8], out: &mut Vec<Event>) {
        if let Some((ev, stop)) = self.decode_record(bytes) {
            out.push(ev);
            out.extend(stop);
        }
    }

    /// The record's own event alone: a stop folded into a release is left
    /// out (the daemon reads records with [`Decoder::decode_into`]).
    pub fn decode(&mut self, bytes: &[u8]) -> Option<Event> {
        self.decode_record(bytes).map(|(ev, _)| ev)
    }

    fn decode_record(&mut self, bytes: &[u8]) -> Option<(Event, Option<Event>)> {
        match RawEvent::from_bytes(bytes) {
            Ok(raw) => {
                self.stats.decoded += 1;
                let mut ev = Event::from_raw(&raw, &self.clock);
                if ev.kind == EventKind::Release
                    && raw.flags & flags::ADDRESS_JOINED != 0
                    && !self.join_address(&mut ev)
                {
                    self.stats.releases_unjoined += 1;
                    return None;
                }
                self.join(&mut ev);
                let stop = (ev.kind == EventKind::Release && raw.flags & flags::STOP_FOLDED != 0)
                    .then(|| {
                        let mut stop = folded_stop(&ev);
                        self.join(&mut stop);
                        stop
                    });
                Some((ev, stop))
            }
            Err(e) => {
                let first = self.stats.rejected() == 0;
                match e {
                    DecodeError::Size { .. } => self.stats.bad_size += 1,
                    DecodeError::Version { .. } => self.stats.bad_version += 1,
                    DecodeError::Kind { .. } => self.stats.bad_kind += 1,
                    DecodeError::Family { .. } => self.stats.bad_family += 1,
                }
                if first {
                    tracing::warn!(error = %e, "dropped a malformed probe record (counted)");
                } else {
                    tracing::debug!(error = %e, "dropped a malformed probe record");
                }
                None
            }
        }
    }

    /// Gives an unmarked TCP socket's release the address its bind (or
    /// listen) reported: found by the socket's kernel address, and the
    /// same socket only if the cookie matches (an address the kernel
    /// reused for a socket whose bind was not seen has a new cookie).
    /// False when the socket is not one the decoder saw bound.
    fn join_address(&mut self, ev: &mut Event) -> bool {
        let Some(ids) = self.by_skaddr.get(&ev.skaddr) else {
            return false;
        };
        match ids.held {
            Some(h) if ids.sock_cookie.is_some() && ids.sock_cookie == ev.sock_cookie => {
                ev.addr = h.addr;
                ev.port = h.port;
                ev.bound_port = Some(h.port);
                ev.proto = h.proto;
                true
            }
            _ => {
                // Another socket's, freed unreported (a connection's).
                self.by_skaddr.remove(&ev.skaddr);
                false
            }
        }
    }

    fn join(&mut self, ev: &mut Event) {
        if ev.skaddr == 0 {
            return;
        }
        match ev.kind {
            EventKind::Bind if !ev.failed() => {
                let ids = SockIds {
                    sock_cookie: ev.sock_cookie,
                    netns_cookie: ev.netns_cookie,
                    task: None,
                    held: Some(Held::of(ev)),
                    released: false,
                };
                if self.by_skaddr.len() < JOIN_CAPACITY || self.by_skaddr.contains_key(&ev.skaddr) {
                    self.by_skaddr.insert(ev.skaddr, ids);
                } else {
                    self.stats.join_full += 1;
                }
            }
            EventKind::Bind => {}
            EventKind::ListenStop => {
                // A stop after a release ends the socket's entry; a stop
                // alone (shutdown) leaves the socket bound, and its
                // release to come needs the entry's address.
                let Some(ids) = self.by_skaddr.get(&ev.skaddr) else {
                    return;
                };
                ev.sock_cookie = ev.sock_cookie.or(ids.sock_cookie);
                ev.netns_cookie = ev.netns_cookie.or(ids.netns_cookie);
                if let (0, Some(t)) = (ev.pid, &ids.task) {
                    ev.pid = t.pid;
                    ev.tid = t.tid;
                    ev.uid = t.uid;
                    ev.gid = t.gid;
                    ev.comm = t.comm.clone();
                    ev.cgroup_id = t.cgroup_id;
                }
                if ids.released {
                    self.by_skaddr.remove(&ev.skaddr);
                }
            }
            EventKind::Listen => self.remember(ev),
            // The release hook runs before TCP closes a listener: a socket
            // released while listening still has its stop to come.
            EventKind::Release if ev.state == Some(TCP_LISTEN) => self.remember(ev),
            EventKind::Release => {
                self.by_skaddr.remove(&ev.skaddr);
            }
        }
    }
}

/// The stop of a listener its release carried: what the sock_ops state
/// callback's record would have said (the socket's address, no options),
/// with the release's task and cookies, which that callback cannot read.
fn folded_stop(release: &Event) -> Event {
    Event {
        kind: EventKind::ListenStop,
        state: None,
        options: SockOptions::default(),
        ..release.clone()
    }
}

#[cfg(test)]
mod tests;
