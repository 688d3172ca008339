//! Process details on Windows: image path and name, start time, command
//! line, and the services a process hosts (the "unit" of a svchost pid).

use std::collections::HashMap;

use windows_sys::Win32::Foundation::{CloseHandle, FILETIME, HANDLE};
use windows_sys::Win32::System::Services::{
    CloseServiceHandle, ENUM_SERVICE_STATUS_PROCESSW, EnumServicesStatusExW, OpenSCManagerW,
    SC_ENUM_PROCESS_INFO, SC_MANAGER_ENUMERATE_SERVICE, SERVICE_ACTIVE, SERVICE_WIN32,
};
use windows_sys::Win32::System::Threading::{
    GetProcessTimes, OpenProcess, PROCESS_NAME_WIN32, PROCESS_QUERY_LIMITED_INFORMATION,
    QueryFullProcessImageNameW,
};

use super::filetime_to_unix_ns;
use bindwatch_core::etw::httpsys::SYSTEM_PID;
use bindwatch_core::holders::ProcessInfo;

struct Handle(HANDLE);

impl Drop for Handle {
    fn drop(&mut self) {
        // SAFETY: a handle this module opened and still owns.
        unsafe { CloseHandle(self.0) };
    }
}

fn open(pid: u32) -> Option<Handle> {
    // SAFETY: plain call; a null handle means refused or gone.
    let h = unsafe { OpenProcess(PROCESS_QUERY_LIMITED_INFORMATION, 0, pid) };
    (!h.is_null()).then_some(Handle(h))
}

/// The image's full path (`C:\Windows\System32\inetsrv\w3wp.exe`).
pub fn image_path(pid: u32) -> Option<String> {
    let h = open(pid)?;
    let mut buf = vec![0u16; 1024];
    let mut len = buf.len() as u32;
    // SAFETY: buf holds len UTF-16 units; len is updated to the length used.
    let ok =
        unsafe { QueryFullProcessImageNameW(h.0, PROCESS_NAME_WIN32, buf.as_mut_ptr(), &mut len) };
    (ok != 0).then(|| String::from_utf16_lossy(&buf[..len as usize]))
}

/// The image's file name (`w3wp.exe`); `System` for PID 4.
pub fn image_name(pid: u32) -> Option<String> {
    if pid == SYSTEM_PID {
        return Some("System".into());
    }
    let path = image_path(pid)?;
    Some(path.rsplit('\\').next().unwrap_or(&path).to_owned())
}

/// The command line (`w3wp.exe -ap "DefaultAppPool" ...`), through
/// ProcessCommandLineInformation (Windows 8.1 and later).
fn command_line(pid: u32) -> Option<String> {
    use windows_sys::Wdk::System::Threading::{
        NtQueryInformationProcess, ProcessCommandLineInformation,
    };
    use windows_sys::Win32::Foundation::UNICODE_STRING;
    let h = open(pid)?;
    // A UNICODE_STRING followed by its characters; u64 for alignment.
    let mut buf = vec![0u64; 1024];
    let mut len = 0u32;
    for _ in 0..2 {
        // SAFETY: buf is writable for its size in bytes; len receives the size needed.
        let st = unsafe {
            NtQueryInformationProcess(
                h.0,
                ProcessCommandLineInformation,
                buf.as_mut_ptr().cast(),
                (buf.len() * 8) as u32,
                &mut len,
            )
        };
        if st >= 0 {
            // SAFETY: on success the buffer starts with a UNICODE_STRING
            // whose Buffer points inside it.
            let us = unsafe { &*(buf.as_ptr() as *const UNICODE_STRING) };
            if us.Buffer.is_null() {
                return None;
            }
            let units = usize::from(us.Length) / 2;
            // SAFETY: Length bytes at Buffer, inside buf.
            let s = unsafe { std::slice::from_raw_parts(us.Buffer, units) };
            return Some(String::from_utf16_lossy(s));
        }
        buf.resize((len as usize).div_ceil(8) + 1, 0);
    }
    None
}

/// The account a process runs as (`IIS APPPOOL\\DefaultAppPool`,
/// `NT AUTHORITY\\SYSTEM`): what Windows's socket security compares.
fn account(pid: u32) -> Option<String> {
    use windows_sys::Win32::Security::{
        GetTokenInformation, LookupAccountSidW, SID_NAME_USE, TOKEN_QUERY, TOKEN_USER, TokenUser,
    };
    use windows_sys::Win32::System::Threading::OpenProcessToken;
    let p = open(pid)?;
    let mut token: HANDLE = std::ptr::null_mut();
    // SAFETY: a process handle this module owns; token receives a handle.
    if unsafe { OpenProcessToken(p.0, TOKEN_QUERY, &mut token) } == 0 {
        return None;
    }
    let token = Handle(token);
    let mut buf = vec![0u64; 64];
    let mut len = 0u32;
    // SAFETY: buf is writable for its size in bytes.
    let ok = unsafe {
        GetTokenInformation(
            token.0,
            TokenUser,
            buf.as_mut_ptr().cast(),
            (buf.len() * 8) as u32,
            &mut len,
        )
    };
    if ok == 0 {
        return None;
    }
    // SAFETY: on success the buffer starts with a TOKEN_USER.
    let user = unsafe { &*(buf.as_ptr() as *const TOKEN_USER) };
    let mut name = [0u16; 256];
    let mut domain = [0u16; 256];
    let (mut nlen, mut dlen) = (name.len() as u32, domain.len() as u32);
    let mut kind: SID_NAME_USE = 0;
    // SAFETY: the SID inside buf; two writable buffers with their lengths.
    let ok = unsafe {
        LookupAccountSidW(
            std::ptr::null(),
            user.User.Sid,
            name.as_mut_ptr(),
            &mut nlen,
            domain.as_mut_ptr(),
            &mut dlen,
            &mut kind,
        )
    };
    (ok != 0).then(|| {
        let n = String::from_utf16_lossy(&name[..nlen as usize]);
        let d = String::from_utf16_lossy(&domain[..dlen as usize]);
        if d.is_empty() { n } else { format!("{d}\\{n}") }
    })
}

fn started_ns(pid: u32) -> Option<u64> {
    let h = open(pid)?;
    let zero = FILETIME {
        dwLowDateTime: 0,
        dwHighDateTime: 0,
    };
    let (mut c, mut e, mut k, mut u) = (zero, zero, zero, zero);
    // SAFETY: four valid out-pointers.
    let ok = unsafe { GetProcessTimes(h.0, &mut c, &mut e, &mut k, &mut u) };
    (ok != 0).then(|| {
        filetime_to_unix_ns((u64::from(c.dwHighDateTime) << 32) | u64::from(c.dwLowDateTime))
    })
}

/// Service names by hosting pid (several for a shared svchost).
pub fn services_by_pid() -> HashMap<u32, Vec<String>> {
    let mut out: HashMap<u32, Vec<String>> = HashMap::new();
    // SAFETY: null machine and database: the local SCM, read-only access.
    let scm = unsafe {
        OpenSCManagerW(
            std::ptr::null(),
            std::ptr::null(),
            SC_MANAGER_ENUMERATE_SERVICE,
        )
    };
    if scm.is_null() {
        return out;
    }
    let mut buf: Vec<u8> = vec![0; 256 * 1024];
    let mut needed = 0u32;
    let mut count = 0u32;
    let mut resume = 0u32;
    loop {
        // SAFETY: buf is writable for its length; the out-pointers are valid.
        let ok = unsafe {
            EnumServicesStatusExW(
                scm,
                SC_ENUM_PROCESS_INFO,
                SERVICE_WIN32,
                SERVICE_ACTIVE,
                buf.as_mut_ptr(),
                buf.len() as u32,
                &mut needed,
                &mut count,
                &mut resume,
                std::ptr::null(),
            )
        };
        let entries = buf.as_ptr().cast::<ENUM_SERVICE_STATUS_PROCESSW>();
        let room = buf.len() / std::mem::size_of::<ENUM_SERVICE_STATUS_PROCESSW>();
        for i in 0..(count as usize).min(room) {
            // SAFETY: the SCM wrote `count` entries at the buffer's start
            // (bounded by its length); read_unaligned needs no alignment.
            let e = unsafe { entries.wrapping_add(i).read_unaligned() };
            // SAFETY: the name points into the same buffer, NUL-terminated.
            let name = unsafe { pwstr(e.lpServiceName) };
            out.entry(e.ServiceStatusProcess.dwProcessId)
                .or_default()
                .push(name);
        }
        if ok != 0 || resume == 0 {
            break;
        }
        if needed as usize > buf.len() {
            buf.resize(needed as usize, 0);
        }
    }
    // SAFETY: the handle opened above.
    unsafe { CloseServiceHandle(scm) };
    out
}

/// # Safety
/// `p` is null or points at a NUL-terminated UTF-16 string.
unsafe fn pwstr(p: *const u16) -> String {
    if p.is_null() {
        return String::new();
    }
    let mut n = 0;
    // SAFETY: NUL-terminated per the caller: every unit up to the NUL is
    // readable.
    while unsafe { p.wrapping_add(n).read_unaligned() } != 0 {
        n += 1;
    }
    // SAFETY: n units were just read.
    String::from_utf16_lossy(unsafe { std::slice::from_raw_parts(p, n) })
}

/// Reads one process: what the table shows for its owner. `services` maps
/// hosting pids to their services (read once per snapshot).
pub fn process_info(pid: u32, services: &HashMap<u32, Vec<String>>) -> Option<ProcessInfo> {
    let comm = image_name(pid)?;
    let exe = if pid == SYSTEM_PID {
        None
    } else {
        image_path(pid)
    };
    Some(ProcessInfo {
        pid,
        cmdline: crate::redact::redact(&command_line(pid).unwrap_or_default()),
        comm,
        exe,
        uid: 0,
        user: account(pid),
        unit: services.get(&pid).map(|v| v.join(",")),
        container: None,
        started_ns: started_ns(pid),
        complete: true,
    })
}
