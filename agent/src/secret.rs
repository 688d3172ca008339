//! Secret files (bearer tokens): read, trimmed, and refused when others
//! may read them or when empty. Used by the settings (checked at load), the
//! daemon, the alert delivery and the client, none of which needs the
//! others for it.

use std::path::Path;

use crate::error::ConfigError;

/// The token in `path`, refusing a file others can read (where the
/// platform can tell) and an empty one.
pub fn read_secret(path: &Path) -> Result<String, ConfigError> {
    let read = |source| ConfigError::Read {
        path: path.display().to_string(),
        source,
    };
    let meta = std::fs::metadata(path).map_err(read)?;
    if let Some(message) = crate::platform::files::readable_by_anyone(&meta, path) {
        return Err(ConfigError::Invalid {
            path: path.display().to_string(),
            message,
        });
    }
    let token = std::fs::read_to_string(path)
        .map_err(read)?
        .trim()
        .to_owned();
    if token.is_empty() {
        return Err(ConfigError::Invalid {
            path: path.display().to_string(),
            message: "is empty: the token file must hold the token".into(),
        });
    }
    Ok(token)
}
