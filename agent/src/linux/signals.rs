//! The signals the daemon and the tracer answer: SIGINT and SIGTERM end the
//! loop, SIGHUP reloads the configuration.

use crate::error::{Error, Result};
use tokio::signal::unix::{Signal, SignalKind, signal};

/// SIGINT and SIGTERM, caught from the moment a command starts: a signal
/// that arrives while the probes load must still end the loop cleanly.
pub struct Shutdown {
    sigint: Signal,
    sigterm: Signal,
}

impl Shutdown {
    pub fn install() -> Result<Self> {
        Ok(Self {
            sigint: signal(SignalKind::interrupt()).map_err(|e| Error::io("SIGINT handler", e))?,
            sigterm: signal(SignalKind::terminate())
                .map_err(|e| Error::io("SIGTERM handler", e))?,
        })
    }

    pub async fn recv(&mut self) {
        tokio::select! {
            _ = self.sigint.recv() => {}
            _ = self.sigterm.recv() => {}
        }
    }
}

/// SIGHUP: read the configuration file again.
pub struct Reload(Signal);

impl Reload {
    pub fn install() -> Result<Self> {
        Ok(Self(
            signal(SignalKind::hangup()).map_err(|e| Error::io("SIGHUP handler", e))?,
        ))
    }

    pub async fn recv(&mut self) {
        self.0.recv().await;
    }
}
