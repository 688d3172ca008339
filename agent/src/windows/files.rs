//! The host's file permissions as the daemon needs them. Windows: the state
//! directory inherits ProgramData's ACL (administrators and SYSTEM), and a
//! file's ACL is not examined (see README, Windows). A leaf: it uses
//! nothing of the crate.

use std::path::Path;

/// Where the timeline lives unless configured.
pub const DEFAULT_STATE_DIR: &str = r"C:\ProgramData\bindwatch";

/// Never refused here: the ACL is not examined.
pub fn writable_by_anyone(_: &std::fs::Metadata, _: &Path) -> Option<String> {
    None
}

/// Never refused here: the ACL is not examined.
pub fn readable_by_anyone(_: &std::fs::Metadata, _: &Path) -> Option<String> {
    None
}

/// The directory inherits its parent's ACL.
pub fn private_dir(_: &mut std::fs::DirBuilder) {}

/// The file keeps the ACL it inherited.
pub fn make_private(_: &Path) {}

/// Windows has no umask.
pub fn private_from_now() {}
