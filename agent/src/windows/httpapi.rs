//! http.sys's configuration, read through the HTTP Server API: the IP
//! listen list (`netsh http show iplisten`), and its request queues through
//! netsh. Read at start-up and again with each reconciliation snapshot
//! (an entry deleted from the list comes with no event on older builds);
//! between them HttpService events (ReadIpListEntry, SetIpListenList)
//! tell of changes.

use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};

use windows_sys::Win32::Networking::HttpServer::{
    HTTP_INITIALIZE_CONFIG, HTTP_SERVICE_CONFIG_IP_LISTEN_QUERY, HTTPAPI_VERSION, HttpInitialize,
    HttpQueryServiceConfiguration, HttpServiceConfigIPListenList, HttpTerminate,
};
use windows_sys::Win32::Networking::WinSock::SOCKADDR_STORAGE;

const ERROR_INSUFFICIENT_BUFFER: u32 = 122;
const ERROR_FILE_NOT_FOUND: u32 = 2;

/// The listen list's addresses; empty when http.sys listens on every
/// address (no list configured). Err names the failing call.
pub fn listen_list() -> Result<Vec<IpAddr>, String> {
    let version = HTTPAPI_VERSION {
        HttpApiMajorVersion: 2,
        HttpApiMinorVersion: 0,
    };
    // SAFETY: plain initialisation for configuration calls.
    let r = unsafe { HttpInitialize(version, HTTP_INITIALIZE_CONFIG, std::ptr::null_mut()) };
    if r != 0 {
        return Err(format!("HttpInitialize failed with error {r}"));
    }
    let out = query();
    // SAFETY: paired with the successful HttpInitialize above.
    unsafe { HttpTerminate(HTTP_INITIALIZE_CONFIG, std::ptr::null_mut()) };
    out
}

fn query() -> Result<Vec<IpAddr>, String> {
    let mut buf: Vec<u64> = vec![0; 512];
    for _ in 0..3 {
        let mut needed = 0u32;
        // SAFETY: buf is writable for its size in bytes; no input, no overlapped.
        let r = unsafe {
            HttpQueryServiceConfiguration(
                std::ptr::null_mut(),
                HttpServiceConfigIPListenList,
                std::ptr::null(),
                0,
                buf.as_mut_ptr().cast(),
                (buf.len() * 8) as u32,
                &mut needed,
                std::ptr::null(),
            )
        };
        match r {
            0 => return Ok(parse(&buf)),
            ERROR_FILE_NOT_FOUND => return Ok(Vec::new()),
            ERROR_INSUFFICIENT_BUFFER => buf.resize((needed as usize).div_ceil(8) + 1, 0),
            e => {
                return Err(format!(
                    "HttpQueryServiceConfiguration failed with error {e}"
                ));
            }
        }
    }
    Err("HttpQueryServiceConfiguration kept asking for more room".into())
}

fn parse(buf: &[u64]) -> Vec<IpAddr> {
    // The query structure: a u32 count, then the SOCKADDR_STORAGE entries
    // at the offset of `AddrList`. Read as bytes from the buffer itself,
    // bounded by its length whatever the count says.
    let bytes: &[u8] = {
        let len = std::mem::size_of_val(buf);
        // SAFETY: the u64 buffer viewed as its bytes: same allocation and
        // length, u8 has no alignment or validity requirement.
        unsafe { std::slice::from_raw_parts(buf.as_ptr().cast::<u8>(), len) }
    };
    let Some(count) = bytes.get(..4) else {
        return Vec::new();
    };
    let count = u32::from_le_bytes([count[0], count[1], count[2], count[3]]) as usize;
    let offset = std::mem::offset_of!(HTTP_SERVICE_CONFIG_IP_LISTEN_QUERY, AddrList);
    let size = std::mem::size_of::<SOCKADDR_STORAGE>();
    bytes
        .get(offset..)
        .unwrap_or_default()
        .chunks_exact(size)
        .take(count)
        .filter_map(|sa| {
            bindwatch_core::etw::sockaddr::decode(sa)
                .ok()
                .map(|a| a.ip())
        })
        .collect()
}

/// netsh's failure is said once, not at every snapshot.
static WARNED: AtomicBool = AtomicBool::new(false);

/// The request queues with their worker processes and URLs, as `netsh http
/// show servicestate view=requestq` prints them (no documented API lists
/// them). None when netsh fails or prints another locale.
pub fn request_queues() -> Option<Vec<bindwatch_core::etw::httpsys::RequestQueue>> {
    let out = std::process::Command::new("netsh")
        .args(["http", "show", "servicestate", "view=requestq"])
        .output();
    match out {
        Ok(o) if o.status.success() => {
            let queues = bindwatch_core::etw::httpsys::parse_request_queues(
                &String::from_utf8_lossy(&o.stdout),
            );
            if queues.is_none() && !WARNED.swap(true, Ordering::Relaxed) {
                tracing::warn!(
                    "netsh http show servicestate printed no English request-queue view (another \
                     locale?); http.sys's registrations come from events only"
                );
            }
            queues
        }
        Ok(o) => {
            if !WARNED.swap(true, Ordering::Relaxed) {
                tracing::warn!(status = %o.status, "netsh http show servicestate failed");
            }
            None
        }
        Err(e) => {
            if !WARNED.swap(true, Ordering::Relaxed) {
                tracing::warn!(error = %e, "cannot run netsh for http.sys's request queues");
            }
            None
        }
    }
}
