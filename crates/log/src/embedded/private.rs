//! Owner-only files and directories for the store (0600 and 0700 on unix;
//! elsewhere the platform's defaults).

use std::path::Path;

use crate::{Error, Result};

/// Creates `dir` and missing parents owner-only; an existing one is left
/// as it is (the data directory is the server's to narrow).
pub(super) fn dir(dir: &Path) -> std::io::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(0o700);
    }
    builder.create(dir)
}

/// Options that create a file owner-only.
pub(super) fn open_options() -> std::fs::OpenOptions {
    let mut options = std::fs::OpenOptions::new();
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    options
}

/// Creates `path` empty and owner-only, replacing nothing.
pub(super) fn create(path: &Path) -> std::io::Result<()> {
    open_options().write(true).create_new(true).open(path)?;
    Ok(())
}

/// Narrows `path`, and SQLite's `-wal` and `-shm` beside it, to owner-only
/// when a file made by an older build is open to others.
pub(super) fn narrow(path: &Path) -> Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let name = path.as_os_str();
        let mut wal = name.to_owned();
        wal.push("-wal");
        let mut shm = name.to_owned();
        shm.push("-shm");
        for file in [path.to_path_buf(), wal.into(), shm.into()] {
            let Ok(meta) = std::fs::metadata(&file) else {
                continue;
            };
            if meta.permissions().mode() & 0o077 != 0 {
                std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600))
                    .map_err(|source| Error::Io { path: file, source })?;
            }
        }
    }
    #[cfg(not(unix))]
    let _ = path;
    Ok(())
}
