//! What ends the loop on Windows: Ctrl-C, or the service manager's stop.
//! There is no SIGHUP: a changed file takes effect at the service's restart.

use crate::error::Result;

/// Ctrl-C, or the service manager's stop.
pub struct Shutdown {
    _private: (),
}

impl Shutdown {
    pub fn install() -> Result<Self> {
        Ok(Self { _private: () })
    }

    pub async fn recv(&mut self) {
        // A service may have no console to take Ctrl-C from: a handler that
        // cannot be installed must not read as a request to stop.
        let ctrl_c = async {
            if tokio::signal::ctrl_c().await.is_err() {
                std::future::pending::<()>().await
            }
        };
        tokio::select! {
            _ = ctrl_c => {}
            _ = super::service::stop_requested() => {}
        }
    }
}

/// Never fires on Windows (no SIGHUP).
pub struct Reload {
    _private: (),
}

impl Reload {
    pub fn install() -> Result<Self> {
        Ok(Self { _private: () })
    }

    pub async fn recv(&mut self) {
        std::future::pending::<()>().await
    }
}
