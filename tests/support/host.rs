//! The host as the tests need it: root, the binary under test, free
//! loopback ports, commands that must succeed, scratch directories, and
//! child processes killed when dropped.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Once;

/// Fails the test at once, in one line, unless it runs as root with
/// iproute2 installed. Called by everything that needs them.
pub fn require_root() {
    static CHECKED: Once = Once::new();
    CHECKED.call_once(|| {
        let euid = rustix::process::geteuid().as_raw();
        assert!(
            euid == 0,
            "the system tests need root (eBPF, network namespaces); \
             run them as root, or run only the unit tests: cargo test -p bindwatch"
        );
        assert!(
            Command::new("ip").arg("-V").output().is_ok(),
            "the system tests need iproute2 (`ip`): scripts/test installs it"
        );
    });
}

/// The `bindwatch` binary under test: `BINDWATCH_BIN`, else the one cargo
/// built beside this test (`cargo build --release -p bindwatch`, which
/// scripts/test runs first).
pub fn bindwatch_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("BINDWATCH_BIN") {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().expect("current_exe");
    // target/<profile>/deps/<test> -> target/<profile>/bindwatch
    let bin = exe
        .parent()
        .and_then(Path::parent)
        .expect("test binary outside a target directory")
        .join("bindwatch");
    assert!(
        bin.exists(),
        "{} is missing: build it first (cargo build --release -p bindwatch, or scripts/test)",
        bin.display()
    );
    bin
}

/// The repository's root.
pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_owned()
}

/// A loopback port nothing holds right now (see `free_local_addr`).
pub fn free_local_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    l.local_addr().expect("local_addr").port()
}

/// A loopback address with a port nothing holds right now, for the test's
/// own servers outside its namespaces (the daemon's HTTP, Prometheus,
/// Alertmanager), so a listener already on the host cannot break a test.
pub fn free_local_addr() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    l.local_addr().expect("local_addr").to_string()
}

pub fn run_ok(cmd: &str, args: &[&str]) {
    let out = Command::new(cmd)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{cmd}: {e}"));
    assert!(
        out.status.success(),
        "{cmd} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A fresh directory for the test; returns a `state` path inside it.
pub fn temp(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("bindwatch-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d.join("state")
}

/// A child process killed when the test ends, however it ends.
pub struct Proc(pub Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `cmd`, its standard error into `log`.
pub fn spawn(cmd: &str, args: &[&str], log: &Path) -> Proc {
    let f = std::fs::File::create(log).unwrap();
    Proc(
        Command::new(cmd)
            .args(args)
            .stdout(Stdio::null())
            .stderr(f)
            .spawn()
            .unwrap_or_else(|e| panic!("{cmd}: {e}")),
    )
}

pub use rustix::process::Signal;

/// Sends `sig` to process `pid` (a test's own child); Err when it is gone.
pub fn signal(pid: u32, sig: Signal) -> std::io::Result<()> {
    let p = i32::try_from(pid)
        .ok()
        .and_then(rustix::process::Pid::from_raw)
        .ok_or_else(|| std::io::Error::other(format!("{pid} is no process id")))?;
    Ok(rustix::process::kill_process(p, sig)?)
}
