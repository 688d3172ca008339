//! The ETW session: one real-time session named `bindwatch` enabling
//! Winsock-AFD, TCPIP and HttpService, read on a thread of its own. Each
//! record is read into an [`EtwRecord`], joined into raw events by the
//! shared [`Joiner`], named with its process's image, and queued for the
//! event loop, which decodes them as it decodes the Linux ring buffer.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use bindwatch_common::{RAW_EVENT_SIZE, RawEvent};
use ferrisetw::EventRecord;
use ferrisetw::parser::{Parser, Pointer};
use ferrisetw::provider::{EventFilter, Provider};
use ferrisetw::schema_locator::SchemaLocator;
use ferrisetw::trace::{TraceTrait, UserTrace, stop_trace_by_name};
use tokio::sync::mpsc;

pub use crate::source::{
    DEFAULT_RING_BUFFER_BYTES, HookIncident, HookStatus, LostCounts, ProbeConfig,
};

use crate::error::{Error, Result};
use bindwatch_core::etw::schema::{self as etw_schema, FieldType};
use bindwatch_core::etw::{EtwProvider, EtwRecord, HttpSys, Joiner, Value};

/// The session's name: a session of this name left by a crash is stopped
/// at start-up (ETW refuses a second one with "already exists").
pub const SESSION_NAME: &str = "bindwatch";
/// Most processes whose image names are cached for naming events.
const NAME_CACHE: usize = 4096;
/// How long a name read at a socket's create is taken as still true.
const NAME_FRESH: Duration = Duration::from_secs(2);
/// Winsock-AFD's create event.
const AFD_CREATE: u16 = 1000;

/// State the ETW thread and the event loop share.
struct Shared {
    joiner: Mutex<Joiner>,
    queue_full: AtomicU64,
    /// Records ETW delivered that could not be read (no schema for them):
    /// counted with the undecodable ones.
    unreadable: AtomicU64,
    /// Image names by pid, with when each was read.
    names: Mutex<HashMap<u32, ([u8; 16], Instant)>>,
}

static HTTP_SYS: OnceLock<Mutex<HttpSys>> = OnceLock::new();
/// The running session's state, for the snapshot's refresh of http.sys.
static SHARED: Mutex<Option<Arc<Shared>>> = Mutex::new(None);
/// Processes http.sys's registrations name: those not yet handed to the
/// daemon (`take_registrants`), and every one handed (bounded).
static REGISTRANTS: Mutex<(Vec<u32>, Option<HashSet<u32>>)> = Mutex::new((Vec::new(), None));
/// Registrants remembered as handed over, at most.
const REGISTRANTS_KEPT: usize = 4096;

/// http.sys as the session last saw it (listen list, URL registrations,
/// request queues).
pub fn http_sys() -> HttpSys {
    HTTP_SYS
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone()
}

/// Publishes the joiner's http.sys state and notes the processes it names
/// that the daemon has not read yet.
fn publish_http_sys(http: &HttpSys) {
    *HTTP_SYS
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner()) = http.clone();
    let mut r = REGISTRANTS.lock().unwrap_or_else(|e| e.into_inner());
    let (pending, handed) = &mut *r;
    let handed = handed.get_or_insert_with(HashSet::new);
    for pid in http.registrant_pids() {
        if handed.len() >= REGISTRANTS_KEPT {
            handed.clear();
        }
        if handed.insert(pid) {
            pending.push(pid);
        }
    }
}

/// Processes that registered URLs or own request queues, new since the
/// last call: the daemon reads them into its table while they run (an
/// idle app pool's worker may be gone by the time a bind fails).
pub fn take_registrants() -> Vec<u32> {
    std::mem::take(&mut REGISTRANTS.lock().unwrap_or_else(|e| e.into_inner()).0)
}

/// Reads http.sys's listen list and request queues again (with each
/// reconciliation snapshot): an iplisten entry deleted, or a queue or URL
/// group removed while no event said so, leaves the state here.
pub fn refresh_http_sys(taken_ns: u64) {
    let Some(shared) = SHARED.lock().unwrap_or_else(|e| e.into_inner()).clone() else {
        return;
    };
    let list = super::httpapi::listen_list();
    let queues = super::httpapi::request_queues();
    let mut j = shared.joiner.lock().unwrap_or_else(|e| e.into_inner());
    match list {
        Ok(list) => j.http.set_listen_list(list),
        Err(e) => tracing::debug!(error = %e, "cannot read http.sys's IP listen list"),
    }
    if let Some(q) = &queues {
        j.http.refresh_request_queues(q, taken_ns);
    }
    publish_http_sys(&j.http);
}

fn name_bytes(n: &str) -> [u8; 16] {
    let mut c = [0u8; 16];
    let b = n.as_bytes();
    let len = b.len().min(15);
    c[..len].copy_from_slice(&b[..len]);
    c
}

/// Names the socket's process at its create, while it surely runs, so a
/// server that exits right after its failed bind is still named. A name
/// read within [`NAME_FRESH`] is kept: a busy client's sockets do not each
/// cost a process lookup, and a pid Windows gave to a new process is read
/// again at that process's first socket after it.
fn remember_name(shared: &Shared, pid: u32) {
    if pid == 0 {
        return;
    }
    {
        let names = shared.names.lock().unwrap_or_else(|e| e.into_inner());
        if names
            .get(&pid)
            .is_some_and(|(_, at)| at.elapsed() < NAME_FRESH)
        {
            return;
        }
    }
    if let Some(n) = super::process::image_name(pid) {
        cache_name(shared, pid, name_bytes(&n));
    }
}

fn cache_name(shared: &Shared, pid: u32, c: [u8; 16]) {
    let mut names = shared.names.lock().unwrap_or_else(|e| e.into_inner());
    if names.len() >= NAME_CACHE && !names.contains_key(&pid) {
        names.clear();
    }
    names.insert(pid, (c, Instant::now()));
}

/// The image name of `pid`: as remembered (at its socket's create, or an
/// earlier event), else read now. A name not found is not remembered: the
/// next event tries again.
fn comm_of(shared: &Shared, pid: u32) -> [u8; 16] {
    if let Some((c, _)) = shared
        .names
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .get(&pid)
    {
        return *c;
    }
    match super::process::image_name(pid) {
        Some(n) => {
            let c = name_bytes(&n);
            cache_name(shared, pid, c);
            c
        }
        None => [0; 16],
    }
}

/// Reads the fields `etw::schema` names for the record's event, each as the
/// type the manifests give it (ferrisetw refuses a field read as another
/// type); a record of an id not known there is read for none (the joiner
/// counts it as unknown). None, counted and said once a kind, when ETW has
/// no schema for the record.
fn read_record(
    provider: EtwProvider,
    record: &EventRecord,
    locator: &SchemaLocator,
    shared: &Shared,
) -> Option<EtwRecord> {
    let schema = match locator.event_schema(record) {
        Ok(s) => s,
        Err(e) => {
            let n = shared.unreadable.fetch_add(1, Ordering::Relaxed);
            if n == 0 {
                tracing::warn!(provider = provider.name(), id = record.event_id(), error = ?e,
                    "ETW record without a schema; dropped and counted as undecodable (further ones at debug)");
            } else {
                tracing::debug!(provider = provider.name(), id = record.event_id(), error = ?e,
                    "ETW record without a schema");
            }
            return None;
        }
    };
    let parser = Parser::create(record, &schema);
    let mut r = EtwRecord::new(provider, record.event_id(), &schema.task_name());
    r.pid = record.process_id();
    r.tid = record.thread_id();
    r.time_ns = super::filetime_to_unix_ns(record.raw_timestamp() as u64);
    let fields = etw_schema::fields_of(provider, record.event_id()).unwrap_or_default();
    for f in fields {
        let v = match f.ty {
            FieldType::UInt32 => parser
                .try_parse::<u32>(f.name)
                .map(|v| Value::U64(v.into())),
            FieldType::UInt64 => parser.try_parse::<u64>(f.name).map(Value::U64),
            FieldType::Pointer => parser
                .try_parse::<Pointer>(f.name)
                .map(|p| Value::U64(*p as u64)),
            FieldType::Binary => parser.try_parse::<Vec<u8>>(f.name).map(Value::Bytes),
            FieldType::UnicodeString => parser.try_parse::<String>(f.name).map(Value::Str),
        };
        // A field missing from this version of the event is left out; the
        // joiner names what it needed and did not find.
        if let Ok(v) = v {
            r.fields.insert(f.name.to_owned(), v);
        }
    }
    Some(r)
}

fn on_record(
    provider: EtwProvider,
    record: &EventRecord,
    locator: &SchemaLocator,
    shared: &Shared,
    tx: &mpsc::Sender<RawEvent>,
) {
    let Some(rec) = read_record(provider, record, locator, shared) else {
        return;
    };
    if provider == EtwProvider::WinsockAfd && rec.id == AFD_CREATE {
        // The creating process is alive now; its bind may fail after it
        // has gone.
        let pid = rec
            .num_of(&["ProcessId"])
            .filter(|&p| p != 0)
            .map_or(rec.pid, |p| p as u32);
        remember_name(shared, pid);
    }
    let mut out = Vec::new();
    {
        let mut j = shared.joiner.lock().unwrap_or_else(|e| e.into_inner());
        // An error is counted and logged by the joiner; the record is dropped.
        let _ = j.on_record(&rec, &mut out);
        if provider == EtwProvider::HttpService {
            publish_http_sys(&j.http);
        }
    }
    send(shared, tx, out);
}

fn send(shared: &Shared, tx: &mpsc::Sender<RawEvent>, out: Vec<RawEvent>) {
    for mut ev in out {
        ev.comm = comm_of(shared, ev.pid);
        if tx.try_send(ev).is_err() {
            shared.queue_full.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// The running session.
pub struct Probes {
    trace: Option<UserTrace>,
    shared: Arc<Shared>,
    tx: mpsc::Sender<RawEvent>,
    hooks: Vec<HookStatus>,
}

/// The event loop's end of the queue.
pub struct RingReader {
    rx: mpsc::Receiver<RawEvent>,
}

/// Most raw events handed over per batch.
const BATCH: usize = 4096;

fn bytes(ev: &RawEvent) -> &[u8] {
    ev.as_bytes()
}

impl RingReader {
    pub fn new(rx: mpsc::Receiver<RawEvent>) -> std::io::Result<Self> {
        Ok(Self { rx })
    }

    /// Waits for events, then passes every queued one to `f`.
    pub async fn read_batch(&mut self, mut f: impl FnMut(&[u8])) -> std::io::Result<usize> {
        let Some(first) = self.rx.recv().await else {
            return Err(std::io::Error::other("the ETW session ended"));
        };
        f(bytes(&first));
        let mut n = 1;
        while n < BATCH {
            match self.rx.try_recv() {
                Ok(ev) => f(bytes(&ev)),
                Err(_) => break,
            }
            n += 1;
        }
        Ok(n)
    }

    /// Reads whatever is queued now, without waiting.
    pub fn drain(&mut self, mut f: impl FnMut(&[u8])) -> usize {
        let mut n = 0;
        while let Ok(ev) = self.rx.try_recv() {
            f(bytes(&ev));
            n += 1;
        }
        n
    }
}

/// ETW's loss counters for the session (ControlTrace query).
fn session_losses() -> Option<u64> {
    use windows_sys::Win32::System::Diagnostics::Etw::{
        CONTROLTRACE_HANDLE, ControlTraceW, EVENT_TRACE_CONTROL_QUERY, EVENT_TRACE_PROPERTIES,
    };
    let size = std::mem::size_of::<EVENT_TRACE_PROPERTIES>() + 2 * 1024;
    let mut buf = vec![0u64; size.div_ceil(8)];
    let props = buf.as_mut_ptr().cast::<EVENT_TRACE_PROPERTIES>();
    let name = super::wide(SESSION_NAME);
    // The properties as a value, written into the zeroed buffer, which is
    // large enough for them and the names ETW writes after them.
    // SAFETY: buf is u64-aligned, zeroed and larger than the properties,
    // which are plain data valid when zeroed.
    let mut p: EVENT_TRACE_PROPERTIES = unsafe { props.read() };
    p.Wnode.BufferSize = size as u32;
    p.LoggerNameOffset = std::mem::size_of::<EVENT_TRACE_PROPERTIES>() as u32;
    // SAFETY: as above: in bounds and aligned.
    unsafe { props.write(p) };
    // SAFETY: the properties and the room after them are writable; the name
    // is NUL-terminated UTF-16.
    let r = unsafe {
        ControlTraceW(
            CONTROLTRACE_HANDLE { Value: 0 },
            name.as_ptr(),
            props,
            EVENT_TRACE_CONTROL_QUERY,
        )
    };
    // SAFETY: as above; ETW filled the counters on success.
    let done = unsafe { props.read() };
    (r == 0).then(|| u64::from(done.EventsLost) + u64::from(done.RealTimeBuffersLost))
}

impl Probes {
    /// Stops a session left by a crash, reads http.sys's listen list, and
    /// starts the session with every provider enabled.
    pub fn load(cfg: &ProbeConfig) -> Result<(Self, mpsc::Receiver<RawEvent>)> {
        if stop_trace_by_name(SESSION_NAME).is_ok() {
            tracing::warn!(
                session = SESSION_NAME,
                "stopped an ETW session left by an earlier run"
            );
        }
        let mut joiner = Joiner::new();
        match super::httpapi::listen_list() {
            Ok(list) => joiner.http.set_listen_list(list),
            Err(e) => {
                tracing::warn!(error = %e, "cannot read http.sys's IP listen list; taking it as empty")
            }
        }
        let queues = super::httpapi::request_queues();
        if let Some(q) = &queues {
            joiner
                .http
                .add_request_queues(q, bindwatch_core::clock::now_unix_ns());
        }
        let iis = super::iis::config();
        tracing::info!(
            queues = queues.as_ref().map(Vec::len),
            urls = joiner.http.urls.len(),
            listen_list = ?joiner.http.listen_list,
            iis_sites = iis.as_ref().map(|c| c.sites.len()),
            "http.sys state read"
        );
        publish_http_sys(&joiner.http);
        let capacity = (cfg.ring_buffer_bytes as usize / RAW_EVENT_SIZE).max(64);
        let (tx, rx) = mpsc::channel(capacity);
        let shared = Arc::new(Shared {
            joiner: Mutex::new(joiner),
            queue_full: AtomicU64::new(0),
            unreadable: AtomicU64::new(0),
            names: Mutex::new(HashMap::new()),
        });
        *SHARED.lock().unwrap_or_else(|e| e.into_inner()) = Some(shared.clone());
        let mut builder = UserTrace::new().named(SESSION_NAME.to_owned());
        for p in EtwProvider::ALL {
            let shared = shared.clone();
            let tx = tx.clone();
            let provider = Provider::by_guid(p.guid())
                .any(p.keywords())
                .level(5)
                .add_filter(EventFilter::ByEventIds(p.event_ids().to_vec()))
                .add_callback(move |record: &EventRecord, locator: &SchemaLocator| {
                    on_record(p, record, locator, &shared, &tx)
                })
                .build();
            builder = builder.enable(provider);
        }
        let (trace, handle) = builder.start().map_err(|e| Error::Etw(format!("{e:?}")))?;
        std::thread::Builder::new()
            .name("bindwatch-etw".into())
            .spawn(move || {
                if let Err(e) = UserTrace::process_from_handle(handle) {
                    tracing::error!(error = ?e, "ETW processing stopped");
                }
            })
            .map_err(|e| Error::io("starting the ETW thread", e))?;
        let hooks = EtwProvider::ALL
            .iter()
            .map(|p| HookStatus {
                hook: p.name(),
                attached: true,
                error: None,
            })
            .collect();
        Ok((
            Self {
                trace: Some(trace),
                shared,
                tx,
                hooks,
            },
            rx,
        ))
    }

    /// The probe set in use: ETW, whatever `--probes` says.
    pub fn probe_set(&self) -> &'static str {
        "etw"
    }

    /// Where the TCP lifecycle comes from: ETW here too.
    pub fn lifecycle(&self) -> &'static str {
        "etw"
    }

    /// Why sock_ops is not used (it does not exist here).
    pub fn sock_ops_refused(&self) -> Option<&str> {
        None
    }

    /// Where bound sockets are marked for their release: ETW reports every
    /// close, so nowhere.
    pub fn bound_store(&self) -> &'static str {
        "none"
    }

    /// Why the marks are not in socket-local storage (not a question here).
    pub fn storage_refused(&self) -> Option<&str> {
        None
    }

    /// Why the asked-for probe set was not used (never, on Windows).
    pub fn fallback(&self) -> Option<&str> {
        None
    }

    /// Why the exit-only tracepoint set was refused (no such set here).
    pub fn exits_refused(&self) -> Option<&str> {
        None
    }

    pub fn source_name(&self) -> String {
        format!("ETW (session {SESSION_NAME})")
    }

    pub fn hooks(&self) -> &[HookStatus] {
        &self.hooks
    }

    pub fn attached_count(&self) -> usize {
        self.hooks.iter().filter(|h| h.attached).count()
    }

    /// Whether the session still runs (someone may stop it: `logman stop
    /// bindwatch -ets`); a stopped session is reported, not restarted.
    pub fn check_hooks(&mut self) -> Vec<HookIncident> {
        if session_losses().is_some() || self.hooks.iter().all(|h| !h.attached) {
            return Vec::new();
        }
        for h in &mut self.hooks {
            h.attached = false;
            h.error = Some("the ETW session was stopped".into());
        }
        vec![HookIncident {
            hook: "etw-session",
            what: "stopped",
            reattached: Err("restart bindwatch to start a new session".into()),
        }]
    }

    /// Loss counters. Reading them also releases TCPIP failures whose AFD
    /// twin never came (binds by kernel-mode callers) when the host is quiet.
    pub fn lost(&self) -> Result<LostCounts> {
        let mut out = Vec::new();
        let stats = {
            let mut j = self.shared.joiner.lock().unwrap_or_else(|e| e.into_inner());
            j.flush(bindwatch_core::clock::now_unix_ns(), &mut out);
            j.stats()
        };
        send(&self.shared, &self.tx, out);
        Ok(LostCounts {
            ringbuf_full: self.shared.queue_full.load(Ordering::Relaxed)
                + session_losses().unwrap_or(0),
            accept_map_full: 0,
            pending_map_full: stats.endpoints_full + stats.pending_full,
            program_skipped: 0,
            undecodable: stats.malformed
                + stats.unknown
                + self.shared.unreadable.load(Ordering::Relaxed),
        })
    }

    /// The Linux release hook needs pre-existing sockets; ETW does not.
    pub fn seed_bound(
        &mut self,
        _socks: &[(u64, bindwatch_common::BoundSock)],
        _descriptors: &super::host::NoDescriptors,
    ) -> Result<usize> {
        Ok(0)
    }

    pub fn accepts(&self) -> Result<HashMap<(u8, u16), u64>> {
        Ok(self
            .shared
            .joiner
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .accepts()
            .clone())
    }
}

impl Drop for Probes {
    fn drop(&mut self) {
        if let Some(t) = self.trace.take()
            && let Err(e) = t.stop()
        {
            tracing::warn!(error = ?e, "stopping the ETW session");
        }
    }
}
