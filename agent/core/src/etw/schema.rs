//! What the Windows session reads of each event: for every provider and
//! event id it subscribes to, the fields the joiner uses, with the types
//! the providers' manifests give them. `windows::session` parses each field
//! as its type says (ferrisetw refuses a field read as another type), and
//! this module's tests check every entry against both manifests copied in
//! `manifests/` (Windows 10 build 18990 and Windows 11 26H1).

use super::record::EtwProvider;

/// A field's type, as both manifests name it (`win:` before it in the XML).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FieldType {
    UInt32,
    UInt64,
    /// A kernel address: 8 bytes on the 64-bit Windows bindwatch runs on.
    Pointer,
    /// Raw bytes (SOCKADDRs), with a length field beside them.
    Binary,
    UnicodeString,
}

impl FieldType {
    pub const fn manifest_name(self) -> &'static str {
        match self {
            Self::UInt32 => "UInt32",
            Self::UInt64 => "UInt64",
            Self::Pointer => "Pointer",
            Self::Binary => "Binary",
            Self::UnicodeString => "UnicodeString",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Field {
    pub name: &'static str,
    pub ty: FieldType,
}

const fn f(name: &'static str, ty: FieldType) -> Field {
    Field { name, ty }
}

use FieldType::{Binary, Pointer, UInt32, UInt64, UnicodeString};

// Microsoft-Windows-Winsock-AFD. Every event has an enter half (EnterExit 0)
// and an exit half (EnterExit 1); Status means something on the exit half.
const AFD_CREATE: &[Field] = &[
    f("EnterExit", UInt32),
    f("Endpoint", Pointer),
    f("AddressFamily", UInt32),
    f("SocketType", UInt32),
    f("Protocol", UInt32),
    f("ProcessId", Pointer),
    f("Status", UInt32),
];
const AFD_CLOSE: &[Field] = &[
    f("EnterExit", UInt32),
    f("Endpoint", Pointer),
    f("Status", UInt32),
];
const AFD_BIND_WITH_ADDRESS: &[Field] = &[
    f("EnterExit", UInt32),
    f("Endpoint", Pointer),
    f("Status", UInt32),
    f("AddressLen", UInt32),
    f("Address", Binary),
];
const AFD_LISTEN: &[Field] = &[
    f("EnterExit", UInt32),
    f("Endpoint", Pointer),
    f("Backlog", UInt32),
    f("Status", UInt32),
];

// Microsoft-Windows-TCPIP. Header pids are unreliable here (events logged
// from a DPC carry the System process): `ProcessId` fields are read.
const TCP_BIND_PORT_FAILURE: &[Field] = &[
    f("LocalAddressLength", UInt32),
    f("LocalAddress", Binary),
    f("Status", UInt32),
];
const TCP_ACCEPT: &[Field] = &[
    f("LocalAddressLength", UInt32),
    f("LocalAddress", Binary),
    f("Status", UInt32),
    f("ProcessId", UInt32),
];
const TCP_LISTENER: &[Field] = &[
    f("AddressLength", UInt32),
    f("SocketAddress", Binary),
    f("Status", UInt32),
    f("ProcessId", UInt32),
];

// Microsoft-Windows-HttpService.
const HTTP_IP_LIST_ENTRY: &[Field] = &[f("IpAddrLength", UInt32), f("IpAddress", Binary)];
const HTTP_ADD_URL: &[Field] = &[
    f("UrlGroupId", UInt64),
    f("Url", UnicodeString),
    f("Status", UInt32),
];
const HTTP_REM_URL: &[Field] = &[f("UrlGroupId", UInt64), f("Url", UnicodeString)];
const HTTP_REM_ALL_URLS: &[Field] = &[f("UrlGroupId", UInt64)];
const HTTP_ADD_URL_BY_PROCESS: &[Field] = &[
    f("UrlGroupId", UInt64),
    f("Url", UnicodeString),
    f("Status", UInt32),
    f("ProcessId", UInt64),
    f("ExecutablePath", UnicodeString),
];
const HTTP_REM_URL_BY_PROCESS: &[Field] = &[
    f("UrlGroupId", UInt64),
    f("Url", UnicodeString),
    f("ProcessId", UInt64),
    f("ExecutablePath", UnicodeString),
];

const HTTP_REM_ALL_URLS_BY_PROCESS: &[Field] = &[f("UrlGroupId", UInt64), f("ProcessId", UInt64)];
const HTTP_DELETE_URL_GROUP: &[Field] = &[
    f("UrlGroupId", UInt64),
    f("Status", UInt32),
    f("ProcessId", UInt64),
];
const HTTP_SET_IP_LISTEN_LIST: &[Field] = &[
    f("IpList", UnicodeString),
    f("Status", UInt32),
    f("ProcessId", UInt64),
];

/// The fields read of one subscribed event; None for an id the session
/// does not ask for.
pub fn fields_of(provider: EtwProvider, id: u16) -> Option<&'static [Field]> {
    use EtwProvider::*;
    Some(match (provider, id) {
        (WinsockAfd, 1000) => AFD_CREATE,
        (WinsockAfd, 1001) => AFD_CLOSE,
        (WinsockAfd, 1030) => AFD_BIND_WITH_ADDRESS,
        (WinsockAfd, 1037) => AFD_LISTEN,
        (Tcpip, 1006) => TCP_BIND_PORT_FAILURE,
        (Tcpip, 1017) => TCP_ACCEPT,
        (Tcpip, 1121..=1124) => TCP_LISTENER,
        (HttpService, 19) => HTTP_IP_LIST_ENTRY,
        (HttpService, 31) => HTTP_ADD_URL,
        (HttpService, 32) => HTTP_REM_URL,
        (HttpService, 33) => HTTP_REM_ALL_URLS,
        (HttpService, 113) => HTTP_ADD_URL_BY_PROCESS,
        (HttpService, 114) => HTTP_REM_URL_BY_PROCESS,
        (HttpService, 115) => HTTP_REM_ALL_URLS_BY_PROCESS,
        (HttpService, 117) => HTTP_DELETE_URL_GROUP,
        (HttpService, 122) => HTTP_SET_IP_LISTEN_LIST,
        _ => return None,
    })
}

/// Each binary address field, and the field beside it that gives how many
/// of its bytes are valid (0: no address).
pub const ADDRESSES: &[(&str, &str)] = &[
    ("Address", "AddressLen"),
    ("LocalAddress", "LocalAddressLength"),
    ("SocketAddress", "AddressLength"),
    ("IpAddress", "IpAddrLength"),
];

#[cfg(test)]
mod tests;
