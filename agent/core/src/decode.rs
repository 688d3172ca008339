//! From ring-buffer records to [`Event`]s: validation, time conversion and
//! the join that gives hook-poor events (listen, listen stop) the socket and
//! namespace cookies their bind carried.

use std::collections::HashMap;

use bindwatch_common::{DecodeError, RawEvent, flags};

use crate::clock::Clock;
use crate::event::{Event, EventKind, SockOptions};

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
}

impl DecodeStats {
    pub fn rejected(&self) -> u64 {
        self.bad_size + self.bad_version + self.bad_kind + self.bad_family
    }
}

#[derive(Clone, Default)]
struct SockIds {
    sock_cookie: Option<u64>,
    netns_cookie: Option<u64>,
    /// The task that last listened on or released the socket: a stop from
    /// a hook that cannot read the task (the sock_ops state callback) is
    /// given the release's task (close) or else the listen's (shutdown).
    task: Option<Task>,
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
        if let Some(ids) = self.by_skaddr.get_mut(&ev.skaddr) {
            ev.sock_cookie = ev.sock_cookie.or(ids.sock_cookie);
            ev.netns_cookie = ev.netns_cookie.or(ids.netns_cookie);
            ids.task = task.or(ids.task.take());
        } else if self.by_skaddr.len() < JOIN_CAPACITY {
            let ids = SockIds {
                sock_cookie: ev.sock_cookie,
                netns_cookie: ev.netns_cookie,
                task,
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
                };
                if self.by_skaddr.len() < JOIN_CAPACITY || self.by_skaddr.contains_key(&ev.skaddr) {
                    self.by_skaddr.insert(ev.skaddr, ids);
                } else {
                    self.stats.join_full += 1;
                }
            }
            EventKind::Bind => {}
            EventKind::ListenStop => {
                if let Some(ids) = self.by_skaddr.remove(&ev.skaddr) {
                    ev.sock_cookie = ev.sock_cookie.or(ids.sock_cookie);
                    ev.netns_cookie = ev.netns_cookie.or(ids.netns_cookie);
                    if let (0, Some(t)) = (ev.pid, ids.task) {
                        ev.pid = t.pid;
                        ev.tid = t.tid;
                        ev.uid = t.uid;
                        ev.gid = t.gid;
                        ev.comm = t.comm;
                        ev.cgroup_id = t.cgroup_id;
                    }
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
