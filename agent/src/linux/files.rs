//! The host's file permissions as the daemon needs them: its state
//! directory private, files others may write or read refused. A leaf: it
//! uses nothing of the crate, so the settings and the store may use it.

use std::os::unix::fs::{DirBuilderExt as _, PermissionsExt as _};
use std::path::Path;

/// Where the timeline lives unless configured.
pub const DEFAULT_STATE_DIR: &str = "/var/lib/bindwatch";

/// The file's mode when anyone may write it, with the command that fixes it.
pub fn writable_by_anyone(meta: &std::fs::Metadata, path: &Path) -> Option<String> {
    others_may(
        meta,
        path,
        0o002,
        "is world-writable",
        "; refusing it",
        "o-w",
    )
}

/// The file's mode when anyone may read it, with the command that fixes it.
pub fn readable_by_anyone(meta: &std::fs::Metadata, path: &Path) -> Option<String> {
    others_may(meta, path, 0o004, "is readable by everyone", "", "o-r")
}

fn others_may(
    meta: &std::fs::Metadata,
    path: &Path,
    bit: u32,
    what: &str,
    then: &str,
    chmod: &str,
) -> Option<String> {
    let mode = meta.permissions().mode();
    (mode & bit != 0).then(|| {
        format!(
            "{what} (mode {:o}){then}: `chmod {chmod} {}`",
            mode & 0o7777,
            path.display()
        )
    })
}

/// A directory created by this builder is its owner's alone: the timeline
/// names processes, users and command lines.
pub fn private_dir(builder: &mut std::fs::DirBuilder) {
    builder.mode(0o700);
}

/// The file readable by its owner only, whatever the umask was when it was
/// created (best effort: a file already gone is no error).
pub fn make_private(path: &Path) {
    let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600));
}

/// Files the daemon creates from now on (timeline, exports) are its own.
pub fn private_from_now() {
    rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o077));
}
