//! IIS's configuration, read for the sites behind http.sys: the file
//! `applicationHost.config`, parsed by `bindwatch_core::owner::iis`, read
//! again when it changes (its modification time or size), at start and
//! with each reconciliation snapshot.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use bindwatch_core::owner::iis::IisConfig;

/// What was read last, and the file's state when it was.
struct Cached {
    stamp: Option<(SystemTime, u64)>,
    config: Option<Arc<IisConfig>>,
}

static CACHE: Mutex<Cached> = Mutex::new(Cached {
    stamp: None,
    config: None,
});

fn path() -> PathBuf {
    let windir = std::env::var_os("windir")
        .or_else(|| std::env::var_os("SystemRoot"))
        .unwrap_or_else(|| "C:\\Windows".into());
    PathBuf::from(windir).join("System32\\inetsrv\\config\\applicationHost.config")
}

/// IIS's sites, or None where IIS is not installed or its file cannot be
/// read (said in the log once per state of the file).
pub fn config() -> Option<Arc<IisConfig>> {
    let path = path();
    let mut cache = CACHE.lock().unwrap_or_else(|e| e.into_inner());
    let meta = match std::fs::metadata(&path) {
        Ok(m) => m,
        Err(e) => {
            if cache.stamp.is_some() || cache.config.is_some() {
                tracing::info!(path = %path.display(), error = %e, "IIS's configuration is gone");
            }
            cache.stamp = None;
            cache.config = None;
            return None;
        }
    };
    let stamp = Some((
        meta.modified().unwrap_or(SystemTime::UNIX_EPOCH),
        meta.len(),
    ));
    if stamp == cache.stamp {
        return cache.config.clone();
    }
    cache.stamp = stamp;
    cache.config = match std::fs::read_to_string(&path) {
        Ok(text) => match IisConfig::parse(&text) {
            Ok(c) => {
                for s in &c.skipped {
                    tracing::warn!(path = %path.display(), binding = %s, "IIS binding not understood; skipped");
                }
                tracing::info!(path = %path.display(), sites = c.sites.len(), "IIS's sites read");
                Some(Arc::new(c))
            }
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "IIS's configuration not read; http.sys's answers name no site");
                None
            }
        },
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "IIS's configuration not read; http.sys's answers name no site");
            None
        }
    };
    cache.config.clone()
}
