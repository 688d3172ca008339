//! `bindwatch who` without a daemon on Windows: the IP Helper tables for
//! the port, then the owners (what `netstat -ano` and TCPView show, plus
//! the service and what the holder blocks).

use bindwatch_core::holders::WhoQuery;
use bindwatch_core::who::WhoAnswer;

pub fn standalone(query: WhoQuery, _: &crate::containers::ContainersConfig) -> WhoAnswer {
    let r = super::KernelView::new().port(query.proto, query.port);
    WhoAnswer::from_host(query, r.holders, r.processes, Default::default())
}
