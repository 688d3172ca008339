//! `bindwatch who` without a daemon on Windows: the IP Helper tables for
//! the port, then the owners (what `netstat -ano` and TCPView show, plus
//! the service and what the holder blocks).

use crate::holders::{HolderTable, Snapshot, WhoQuery};
use crate::who::{AnswerSource, WhoAnswer};

pub fn standalone(query: WhoQuery) -> WhoAnswer {
    let mut kv = super::KernelView::new();
    let r = kv.port(query.proto, query.port);
    let mut table = HolderTable::new();
    let mut snap = Snapshot {
        taken_ns: crate::clock::now_unix_ns(),
        holders: r.holders,
        processes: r.processes,
        netns: Default::default(),
    };
    snap.holders.retain(|h| query.matches(h));
    table.seed(snap);
    let holders = query.run(&table);
    WhoAnswer {
        query,
        source: AnswerSource::Kernel,
        holders,
    }
}
