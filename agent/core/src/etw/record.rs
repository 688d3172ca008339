//! One ETW record: its header and the fields the joiner reads, by name.

use std::collections::BTreeMap;

/// The providers the Windows session enables.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EtwProvider {
    /// Microsoft-Windows-Winsock-AFD: user-mode sockets (create, bind,
    /// listen, accept, close), with the calling process.
    WinsockAfd,
    /// Microsoft-Windows-TCPIP: the transport's own view, which includes
    /// kernel-mode clients (http.sys) that never pass through AFD.
    Tcpip,
    /// Microsoft-Windows-HttpService: http.sys's listen list and URL
    /// registrations.
    HttpService,
}

impl EtwProvider {
    pub const ALL: [Self; 3] = [Self::WinsockAfd, Self::Tcpip, Self::HttpService];

    pub const fn name(self) -> &'static str {
        match self {
            Self::WinsockAfd => "Microsoft-Windows-Winsock-AFD",
            Self::Tcpip => "Microsoft-Windows-TCPIP",
            Self::HttpService => "Microsoft-Windows-HttpService",
        }
    }

    pub const fn guid(self) -> &'static str {
        match self {
            Self::WinsockAfd => "E53C6823-7BB8-44BB-90DC-3F86090D48A6",
            Self::Tcpip => "2F07E2EE-15DB-40F1-90EF-9D7BA282188A",
            Self::HttpService => "DD5EF90A-6398-47A4-AD34-4DCECDEF795F",
        }
    }

    /// Keywords enabled (`any`: an event is delivered when it carries one
    /// of them), each the one the manifests give the events read, so the
    /// session's buffers carry nothing else: AFD_KW_SOURCE_WINSOCK;
    /// ut:TcpipListener | ut:TcpipBind; HTTP_KEYWORD_SETUP |
    /// HTTP_KEYWORD_URL_GROUP. The event-id filter narrows further.
    pub const fn keywords(self) -> u64 {
        match self {
            Self::WinsockAfd => 0x4,
            Self::Tcpip => 0x2 | 0x8,
            Self::HttpService => 0x1 | 0x40,
        }
    }

    /// The event ids the session asks for (the kernel filters the rest);
    /// the fields read of each are in [`super::schema`].
    pub const fn event_ids(self) -> &'static [u16] {
        match self {
            // create, close, bind with address, listen. Not 1029
            // (AfdBindConnected): it carries no address.
            Self::WinsockAfd => &[1000, 1001, 1030, 1037],
            // bind port failure, accept complete, listener bind failed
            // (resolution, port), activated, unbound.
            Self::Tcpip => &[1006, 1017, 1121, 1122, 1123, 1124],
            // ReadIpListEntry, AddUrl, RemUrl, RemAllUrls; the AddUrl,
            // RemUrl and RemAllUrls that name the registering process,
            // DeleteUrlGroup and SetIpListenList (newer builds).
            Self::HttpService => &[19, 31, 32, 33, 113, 114, 115, 117, 122],
        }
    }

    pub fn from_guid(guid: &str) -> Option<Self> {
        let g = guid.trim_matches(|c| c == '{' || c == '}');
        Self::ALL
            .into_iter()
            .find(|p| p.guid().eq_ignore_ascii_case(g))
    }
}

/// A field's value, in the three shapes the joiner needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Value {
    /// Any integer or pointer (ferrisetw's u8..u64 and `Pointer`).
    U64(u64),
    Str(String),
    /// Binary fields (SOCKADDR), which ferrisetw leaves undecoded.
    Bytes(Vec<u8>),
}

/// One record: the header ferrisetw's `EventRecord` gives, the task name
/// from its schema, and the fields read by name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EtwRecord {
    pub provider: EtwProvider,
    pub id: u16,
    /// The schema's task name (`AfdBind`, `TcpListenerActivated`, ...), for
    /// the messages that name the record; ids alone decide what it means.
    pub task: String,
    /// The header's process and thread: the caller for AFD, often the
    /// System process (4) for TCPIP events logged from a DPC.
    pub pid: u32,
    pub tid: u32,
    /// Unix nanoseconds.
    pub time_ns: u64,
    pub fields: BTreeMap<String, Value>,
}

impl EtwRecord {
    pub fn new(provider: EtwProvider, id: u16, task: &str) -> Self {
        Self {
            provider,
            id,
            task: task.to_owned(),
            pid: 0,
            tid: 0,
            time_ns: 0,
            fields: BTreeMap::new(),
        }
    }

    pub fn with(mut self, name: &str, v: Value) -> Self {
        self.fields.insert(name.to_owned(), v);
        self
    }

    pub fn num(&self, name: &str) -> Option<u64> {
        match self.fields.get(name)? {
            Value::U64(v) => Some(*v),
            Value::Str(s) => s.trim().parse().ok(),
            Value::Bytes(_) => None,
        }
    }

    /// The first of `names` present as a number.
    pub fn num_of(&self, names: &[&str]) -> Option<u64> {
        names.iter().find_map(|n| self.num(n))
    }

    pub fn bytes_of(&self, names: &[&str]) -> Option<&[u8]> {
        names.iter().find_map(|n| match self.fields.get(*n)? {
            Value::Bytes(b) => Some(b.as_slice()),
            _ => None,
        })
    }

    pub fn str_of(&self, names: &[&str]) -> Option<&str> {
        names.iter().find_map(|n| match self.fields.get(*n)? {
            Value::Str(s) => Some(s.as_str()),
            _ => None,
        })
    }

    /// `provider/id (task)`, for errors that name the record.
    pub fn describe(&self) -> String {
        format!("{} event {} ({})", self.provider.name(), self.id, self.task)
    }
}
