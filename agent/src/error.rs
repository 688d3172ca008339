//! The agent library's error type. The binary wraps it in `anyhow` at its edge.

use thiserror::Error;

#[derive(Debug, Error)]
pub enum Error {
    /// The kernel's refusal, then what this process lacks for the load
    /// (from its own capability sets and seccomp state).
    #[error("loading the kernel probes was refused ({0}): {1}")]
    NotPrivileged(String, String),

    #[error(
        "no cgroup v2 hierarchy is mounted (looked for a cgroup2 entry in /proc/mounts): \
         the bind and release hooks attach to its root; mount one with \
         `mount -t cgroup2 none /sys/fs/cgroup/unified` or boot with systemd.unified_cgroup_hierarchy=1"
    )]
    NoCgroup2,

    #[error(
        "the probe object was built for event layout version {object}, this agent speaks \
         version {agent}: rebuild the probes (scripts/build-probes) or the agent from one commit"
    )]
    LayoutMismatch { object: u16, agent: u16 },

    #[error("the probe object is unreadable: {0}")]
    BadObject(String),

    #[error("tracefs is not mounted and mounting it at {path} failed")]
    Tracefs {
        path: &'static str,
        #[source]
        source: std::io::Error,
    },

    #[error("the kernel refused the probe object: {0}")]
    Load(String),

    #[error("probe map {name} is missing or of the wrong type: {reason}")]
    Map { name: &'static str, reason: String },

    #[error("no probe hook could be attached; the first refusal was: {0}")]
    NothingAttached(String),

    #[error(
        "the kernel refused the fexit probe set ({0}); use --probes auto (falls back to \
         tracepoints) or --probes tracepoint"
    )]
    FexitRefused(String),

    #[error(
        "the ETW session could not start ({0}): run elevated (an Administrator, or the \
         service as LocalSystem)"
    )]
    Etw(String),

    #[error("HTTPS certificate or key {path}: {reason}")]
    Tls { path: String, reason: String },

    #[error(transparent)]
    Config(#[from] ConfigError),

    // The cause is printed by the chain (`{:#}` at the CLI edge), not here.
    #[error("{context}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
}

impl Error {
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Self::Io {
            context: context.into(),
            source,
        }
    }
}

/// A configuration error, naming the key and line.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Invalid { path: String, message: String },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// An error with its causes, as one line: HTTP clients put the cause that
/// matters (a certificate refused, a connection refused) under their own
/// words.
pub fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(c) = src {
        s.push_str(": ");
        s.push_str(&c.to_string());
        src = c.source();
    }
    s
}
