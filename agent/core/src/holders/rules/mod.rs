//! The rules that differ per platform, one file each behind
//! [`PlatformRules`]: how one holder is judged against a request, what a
//! refusal (EACCES) means, and the words for addresses. The diagnosis
//! (`diagnose.rs`) is written once against this interface; a new platform
//! is a file here and an arm in [`of`].

mod linux;
mod windows;

use super::{Diagnosis, EphemeralPorts, Holder, HolderTable, HostFacts};
use crate::conflict::{Reason, RuleSet, SockSpec};
use crate::event::Event;
use crate::owner::http_sys::HttpSysState;

/// One holder weighed against one request.
pub struct Judged<'a> {
    pub req: &'a SockSpec,
    /// The request's IPV6_V6ONLY is known (`bindwatch check` states it).
    pub req_v6only_known: bool,
    pub ev: &'a Event,
    pub holder: &'a Holder,
    pub table: &'a HolderTable,
    /// http.sys's state, where the platform has it.
    pub http: Option<&'a HttpSysState>,
}

/// Why one holder blocks the request.
pub struct Verdict {
    pub reason: Reason,
    /// It blocks whatever the options nobody could read were.
    pub certain: bool,
    pub explanation: String,
    pub hint: String,
}

pub trait PlatformRules: Sync {
    /// Whether and why `j.holder` blocks the request.
    fn judge(&self, j: &Judged) -> Option<Verdict>;
    /// A bind refused with EACCES.
    fn denied(&self, table: &HolderTable, ev: &Event, facts: &mut dyn HostFacts) -> Diagnosis;
    /// A port no program may bind whatever holds it (Windows's excluded
    /// ranges); None where the platform has none.
    fn excluded(&self, _ev: &Event, _eph: &EphemeralPorts) -> Option<Diagnosis> {
        None
    }
    /// http.sys's state, read for a conflict; None where there is none.
    fn http_sys(&self, _facts: &mut dyn HostFacts) -> Option<HttpSysState> {
        None
    }
    /// A note the failing program's own documentation uses for the
    /// conflict (Windows Media Services' error code).
    fn conflict_note(&self, _table: &HolderTable, _ev: &Event) -> Option<&'static str> {
        None
    }
    /// What an address belongs to: "network namespace", "host".
    fn address_scope(&self) -> &'static str;
    /// The fix for binding an address the host does not have.
    fn address_hint(&self) -> &'static str;
}

/// The rules of a rule set.
pub fn of(rules: RuleSet) -> &'static dyn PlatformRules {
    match rules {
        RuleSet::Linux => &linux::Linux,
        RuleSet::Windows => &windows::Windows,
    }
}
