//! The providers' manifests copied in `manifests/`, read for the tests:
//! the check of `schema` against them, and records built from their
//! templates (what the session would hand the joiner, field for field).

use std::collections::BTreeMap;

use super::record::{EtwProvider, EtwRecord, Value};
use super::schema::{self, FieldType};

/// One event as a manifest gives it.
#[derive(Clone, Debug)]
pub struct ManifestEvent {
    pub id: u16,
    pub version: u8,
    pub task: String,
    pub keywords: Vec<String>,
    /// (field, type) in template order.
    pub fields: Vec<(String, String)>,
}

pub struct Manifests {
    pub win11: Vec<ManifestEvent>,
    /// None where the id is newer than build 18990.
    pub win10: Vec<ManifestEvent>,
    /// Keyword name to mask, from the XML's definitions.
    pub keyword_masks: BTreeMap<String, u64>,
}

fn files(p: EtwProvider) -> (&'static str, &'static str) {
    match p {
        EtwProvider::WinsockAfd => (
            include_str!("manifests/winsock-afd.win11-26H1.tsv"),
            include_str!("manifests/winsock-afd.win10-18990.xml"),
        ),
        EtwProvider::Tcpip => (
            include_str!("manifests/tcpip.win11-26H1.tsv"),
            include_str!("manifests/tcpip.win10-18990.xml"),
        ),
        EtwProvider::HttpService => (
            include_str!("manifests/httpservice.win11-26H1.tsv"),
            include_str!("manifests/httpservice.win10-18990.xml"),
        ),
    }
}

/// `Name(Type Field, Type Field)` as the TSV writes an event's template.
fn tsv_fields(event: &str) -> Vec<(String, String)> {
    let inner = event
        .split_once('(')
        .and_then(|(_, rest)| rest.strip_suffix(')'))
        .unwrap_or("");
    inner
        .split(", ")
        .filter(|s| !s.is_empty())
        .map(|s| {
            let (ty, name) = s.split_once(' ').expect("`Type Name`");
            (name.to_owned(), ty.to_owned())
        })
        .collect()
}

fn parse_tsv(text: &str) -> Vec<ManifestEvent> {
    text.lines()
        .skip(1)
        .filter(|l| !l.is_empty())
        .map(|l| {
            let c: Vec<&str> = l.split('\t').collect();
            ManifestEvent {
                id: c[1].parse().expect("event id"),
                version: c[2].parse().expect("version"),
                fields: tsv_fields(c[3]),
                keywords: c[5].split_whitespace().map(str::to_owned).collect(),
                task: c[6].to_owned(),
            }
        })
        .collect()
}

fn parse_xml(text: &str) -> (Vec<ManifestEvent>, BTreeMap<String, u64>) {
    let doc = roxmltree::Document::parse(text).expect("the copied manifest is XML");
    let templates: BTreeMap<&str, Vec<(String, String)>> = doc
        .descendants()
        .filter(|n| n.has_tag_name("template"))
        .map(|t| {
            let fields = t
                .children()
                .filter(|d| d.has_tag_name("data"))
                .map(|d| {
                    let ty = d.attribute("inType").unwrap_or("");
                    (
                        d.attribute("name").unwrap_or("").to_owned(),
                        ty.trim_start_matches("win:").to_owned(),
                    )
                })
                .collect();
            (t.attribute("tid").unwrap_or(""), fields)
        })
        .collect();
    let events = doc
        .descendants()
        .filter(|n| n.has_tag_name("event") && n.attribute("value").is_some())
        .map(|e| ManifestEvent {
            id: e.attribute("value").unwrap().parse().expect("event id"),
            version: e
                .attribute("version")
                .unwrap_or("0")
                .parse()
                .expect("version"),
            task: e.attribute("task").unwrap_or("").to_owned(),
            keywords: e
                .attribute("keywords")
                .unwrap_or("")
                .split_whitespace()
                .map(str::to_owned)
                .collect(),
            fields: e
                .attribute("template")
                .and_then(|t| templates.get(t).cloned())
                .unwrap_or_default(),
        })
        .collect();
    let masks = doc
        .descendants()
        .filter(|n| n.has_tag_name("keyword"))
        .map(|k| {
            let m = k
                .attribute("mask")
                .unwrap_or("0x0")
                .trim_start_matches("0x");
            (
                k.attribute("name").unwrap_or("").to_owned(),
                u64::from_str_radix(m, 16).expect("hex mask"),
            )
        })
        .collect();
    (events, masks)
}

/// The provider's manifests, parsed once.
pub fn load(p: EtwProvider) -> &'static Manifests {
    static PARSED: std::sync::OnceLock<Vec<(EtwProvider, Manifests)>> = std::sync::OnceLock::new();
    let all = PARSED.get_or_init(|| {
        EtwProvider::ALL
            .into_iter()
            .map(|p| {
                let (tsv, xml) = files(p);
                let (win10, keyword_masks) = parse_xml(xml);
                let m = Manifests {
                    win11: parse_tsv(tsv),
                    win10,
                    keyword_masks,
                };
                (p, m)
            })
            .collect()
    });
    &all.iter().find(|(q, _)| *q == p).expect("every provider").1
}

/// Whether a value has the shape the session gives a field of type `ty`.
fn fits(ty: FieldType, v: &Value) -> bool {
    matches!(
        (ty, v),
        (
            FieldType::UInt32 | FieldType::UInt64 | FieldType::Pointer,
            Value::U64(_)
        ) | (FieldType::Binary, Value::Bytes(_))
            | (FieldType::UnicodeString, Value::Str(_))
    )
}

/// Checks a record fed to the joiner in a test against what the session
/// can produce: each field one `schema` reads of the event, present in the
/// manifest's template, in a shape its type takes. Records of ids not
/// subscribed (the joiner's task-name fallback) are not checked.
pub fn check(r: &EtwRecord) {
    let Some(read) = schema::fields_of(r.provider, r.id) else {
        return;
    };
    let m = load(r.provider);
    let templates: Vec<&ManifestEvent> = m.win11.iter().filter(|e| e.id == r.id).collect();
    for (name, v) in &r.fields {
        let spec = read.iter().find(|f| f.name == name).unwrap_or_else(|| {
            panic!(
                "{}: the session does not read {name} of this event (it reads {:?})",
                r.describe(),
                read.iter().map(|f| f.name).collect::<Vec<_>>()
            )
        });
        assert!(
            templates
                .iter()
                .all(|t| t.fields.iter().any(|(n, _)| n == name)),
            "{}: the manifest's template has no {name}",
            r.describe()
        );
        let fits = fits(spec.ty, v);
        assert!(
            fits,
            "{}: {name} is {:?}, given {v:?}",
            r.describe(),
            spec.ty
        );
    }
}

/// A record of `provider`/`id` as the session reads it off the wire: the
/// fields `schema` names, in the manifest's template order, each given a
/// value here or the zero of its type. Panics if a value is given for a
/// field the session does not read or the manifest does not have, or in a
/// shape its type cannot take.
pub fn record(
    provider: EtwProvider,
    id: u16,
    pid: u32,
    time_ns: u64,
    values: &[(&str, Value)],
) -> EtwRecord {
    let m = load(provider);
    let ev = m
        .win11
        .iter()
        .filter(|e| e.id == id)
        .min_by_key(|e| e.version)
        .unwrap_or_else(|| panic!("{} has no event {id}", provider.name()));
    let read = schema::fields_of(provider, id)
        .unwrap_or_else(|| panic!("{} event {id} is not subscribed", provider.name()));
    let mut r = EtwRecord::new(provider, id, &ev.task);
    r.pid = pid;
    r.tid = pid + 4;
    r.time_ns = time_ns;
    for (name, _) in &ev.fields {
        let Some(spec) = read.iter().find(|f| f.name == name) else {
            continue;
        };
        let v = values
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
            .unwrap_or(match spec.ty {
                FieldType::Binary => Value::Bytes(Vec::new()),
                FieldType::UnicodeString => Value::Str(String::new()),
                _ => Value::U64(0),
            });
        r.fields.insert(name.clone(), v);
    }
    for (name, v) in values {
        assert!(
            r.fields.contains_key(*name),
            "{}: no field {name} the session reads",
            r.describe()
        );
        r.fields.insert((*name).to_owned(), v.clone());
    }
    check(&r);
    r
}

/// An address field's bytes (a SOCKADDR, as Windows logs it) and the
/// length field the manifests pair it with.
pub fn addr(field: &'static str, len: &'static str, a: &str) -> [(&'static str, Value); 2] {
    let b = super::sockaddr::encode(a.parse().expect("a socket address"));
    [(len, Value::U64(b.len() as u64)), (field, Value::Bytes(b))]
}

/// AfdCreate's enter half: the endpoint's family, type and protocol (TCP).
pub fn afd_create(ep: u64, pid: u32, t: u64) -> EtwRecord {
    record(
        EtwProvider::WinsockAfd,
        1000,
        pid,
        t,
        &[
            ("EnterExit", Value::U64(0)),
            ("Endpoint", Value::U64(ep)),
            ("AddressFamily", Value::U64(2)),
            ("SocketType", Value::U64(1)),
            ("Protocol", Value::U64(6)),
            ("ProcessId", Value::U64(u64::from(pid))),
        ],
    )
}

/// AfdBindWithAddress, enter half (the address asked for) or exit half
/// (the address bound and the status).
pub fn afd_bind(ep: u64, pid: u32, t: u64, enter: bool, a: &str, status: u32) -> EtwRecord {
    let mut v = vec![
        ("EnterExit", Value::U64(u64::from(!enter))),
        ("Endpoint", Value::U64(ep)),
        ("Status", Value::U64(u64::from(status))),
    ];
    v.extend(addr("Address", "AddressLen", a));
    record(EtwProvider::WinsockAfd, 1030, pid, t, &v)
}

/// AfdListen's exit half.
pub fn afd_listen(ep: u64, pid: u32, t: u64, backlog: u64) -> EtwRecord {
    record(
        EtwProvider::WinsockAfd,
        1037,
        pid,
        t,
        &[
            ("EnterExit", Value::U64(1)),
            ("Endpoint", Value::U64(ep)),
            ("Backlog", Value::U64(backlog)),
        ],
    )
}

/// AfdClose's exit half.
pub fn afd_close(ep: u64, pid: u32, t: u64) -> EtwRecord {
    record(
        EtwProvider::WinsockAfd,
        1001,
        pid,
        t,
        &[("EnterExit", Value::U64(1)), ("Endpoint", Value::U64(ep))],
    )
}

/// A TCPIP listener event (1121-1124) of `pid` on `a`, logged from the
/// System process.
pub fn tcp_listener(id: u16, pid: u32, t: u64, a: &str, status: u32) -> EtwRecord {
    let mut v = vec![
        ("ProcessId", Value::U64(u64::from(pid))),
        ("Status", Value::U64(u64::from(status))),
    ];
    v.extend(addr("SocketAddress", "AddressLength", a));
    record(EtwProvider::Tcpip, id, 4, t, &v)
}

/// TCPIP's bind port failure (1006), logged inside the bind.
pub fn tcp_bind_failure(t: u64, a: &str, status: u32) -> EtwRecord {
    let mut v = vec![("Status", Value::U64(u64::from(status)))];
    v.extend(addr("LocalAddress", "LocalAddressLength", a));
    record(EtwProvider::Tcpip, 1006, 4, t, &v)
}
