//! Converts the event sources' stamps into wall-clock time: the Linux
//! probes stamp CLOCK_MONOTONIC; the Windows source stamps Unix time itself
//! (ETW gives wall-clock stamps), so its offset is zero.

#[cfg(target_os = "linux")]
fn clock_ns(clock: libc::clockid_t) -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: valid clock id and a valid out-pointer.
    unsafe { libc::clock_gettime(clock, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// The offset between the monotonic and the real-time clock, read once.
/// A wall-clock step after start-up skews later stamps by the step; the
/// daemon re-reads it when it re-anchors.
#[derive(Clone, Copy, Debug)]
pub struct Clock {
    offset_ns: i128,
}

impl Clock {
    #[cfg(target_os = "linux")]
    pub fn new() -> Self {
        let mono = clock_ns(libc::CLOCK_MONOTONIC) as i128;
        let real = clock_ns(libc::CLOCK_REALTIME) as i128;
        Self {
            offset_ns: real - mono,
        }
    }

    #[cfg(not(target_os = "linux"))]
    pub fn new() -> Self {
        Self { offset_ns: 0 }
    }

    /// A fixed offset, for tests.
    pub fn with_offset_ns(offset_ns: i128) -> Self {
        Self { offset_ns }
    }

    /// Unix nanoseconds for a source's stamp.
    pub fn unix_ns(&self, mono_ns: u64) -> u64 {
        (mono_ns as i128 + self.offset_ns).max(0) as u64
    }
}

/// Wall-clock time now, in Unix nanoseconds.
#[cfg(target_os = "linux")]
pub fn now_unix_ns() -> u64 {
    clock_ns(libc::CLOCK_REALTIME)
}

/// Wall-clock time now, in Unix nanoseconds.
#[cfg(not(target_os = "linux"))]
pub fn now_unix_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

/// How a stamp is shown to a person, in the host's local time.
#[derive(Clone, Copy, Debug)]
pub enum Shown {
    /// `06:04:53.514`: live output, where the day is today.
    TimeOfDay,
    /// `2026-11-22 06:04:59`.
    Seconds,
    /// `2026-11-22 06:04:59.123`: the timeline.
    Millis,
}

/// The one formatter of Unix nanoseconds for people; None when the stamp
/// is out of chrono's range.
pub fn local(ns: u64, shown: Shown) -> Option<String> {
    let fmt = match shown {
        Shown::TimeOfDay => "%H:%M:%S%.3f",
        Shown::Seconds => "%Y-%m-%d %H:%M:%S",
        Shown::Millis => "%Y-%m-%d %H:%M:%S%.3f",
    };
    chrono::DateTime::from_timestamp((ns / 1_000_000_000) as i64, (ns % 1_000_000_000) as u32)
        .map(|t| t.with_timezone(&chrono::Local).format(fmt).to_string())
}

/// The host's offset from UTC at that moment, in seconds (what a page
/// adds to show local times as the tables do).
pub fn local_offset_secs(ns: u64) -> i32 {
    use chrono::Offset as _;
    chrono::DateTime::from_timestamp((ns / 1_000_000_000) as i64, 0)
        .map(|t| {
            t.with_timezone(&chrono::Local)
                .offset()
                .fix()
                .local_minus_utc()
        })
        .unwrap_or(0)
}

/// RFC 3339 in UTC with milliseconds, for machines (Alertmanager).
pub fn rfc3339_utc(ns: u64) -> String {
    chrono::DateTime::<chrono::Utc>::from_timestamp(
        (ns / 1_000_000_000) as i64,
        (ns % 1_000_000_000) as u32,
    )
    .unwrap_or_default()
    .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

impl Default for Clock {
    fn default() -> Self {
        Self::new()
    }
}
