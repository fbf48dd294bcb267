//! Checks of the data files at open. A damaged store is refused with the
//! file named, never opened with data silently missing.

use std::io::Read;
use std::path::Path;

use rusqlite::Connection;

use super::classify;
use crate::{Error, Result};

const MAGIC: &[u8; 16] = b"SQLite format 3\0";

/// Checks the SQLite header of `path`, if it exists: not empty, magic, page
/// size, and that the file is as long as the header says (when no WAL holds
/// newer pages).
pub(super) fn file_header(path: &Path) -> Result<()> {
    let corrupt = |detail: String| Error::Corrupt {
        path: path.to_path_buf(),
        detail,
    };
    let mut file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(source) => {
            return Err(Error::Io {
                path: path.to_path_buf(),
                source,
            });
        }
    };
    let len = file
        .metadata()
        .map_err(|source| Error::Io {
            path: path.to_path_buf(),
            source,
        })?
        .len();
    if len == 0 {
        // `open` makes a new store whole before it is put in place, so an
        // empty file is never one of ours half-made: it is a log cut to
        // nothing (a failed copy, a full disk), and SQLite would open it as
        // a new, empty log with every event silently gone. A WAL beside it
        // may still hold the pages; then SQLite recovers them and
        // quick_check judges the result.
        let wal = path.with_extension("db-wal");
        if std::fs::metadata(&wal).map_or(0, |m| m.len()) == 0 {
            return Err(corrupt(
                "empty: 0 bytes where a log should be; refusing to start a new, empty \
                 log over it. Restore the file from a backup, or move it away to \
                 start an empty log on purpose"
                    .into(),
            ));
        }
        return Ok(());
    }
    let mut header = [0u8; 100];
    if len < 100 {
        return Err(corrupt(format!(
            "truncated: {len} bytes, shorter than its 100-byte header"
        )));
    }
    file.read_exact(&mut header).map_err(|source| Error::Io {
        path: path.to_path_buf(),
        source,
    })?;
    if &header[..16] != MAGIC {
        return Err(corrupt("wrong magic: not a SQLite database file".into()));
    }
    let page_size = match u16::from_be_bytes([header[16], header[17]]) {
        1 => 65_536u64,
        n if n >= 512 && n.is_power_of_two() => u64::from(n),
        n => return Err(corrupt(format!("page size {n} in the header is invalid"))),
    };
    let change_counter = u32::from_be_bytes([header[24], header[25], header[26], header[27]]);
    let pages = u64::from(u32::from_be_bytes([
        header[28], header[29], header[30], header[31],
    ]));
    let valid_for = u32::from_be_bytes([header[92], header[93], header[94], header[95]]);

    // A WAL with frames may hold pages the main file does not have yet;
    // SQLite recovers from it and quick_check judges the result.
    let wal = path.with_extension("db-wal");
    let wal_len = std::fs::metadata(&wal).map(|m| m.len()).unwrap_or(0);
    if wal_len == 0 && valid_for == change_counter {
        let expected = pages * page_size;
        if len < expected {
            return Err(corrupt(format!(
                "truncated: the header says {pages} pages of {page_size} bytes ({expected} bytes), the file has {len}"
            )));
        }
    }
    if len % page_size != 0 {
        return Err(corrupt(format!(
            "truncated: {len} bytes is not a whole number of {page_size}-byte pages"
        )));
    }
    Ok(())
}

/// SQLite's structural check of every page.
pub(super) fn quick_check(conn: &Connection, path: &Path) -> Result<()> {
    let mut stmt = conn
        .prepare("PRAGMA quick_check(20)")
        .map_err(|e| classify(path, e))?;
    let problems: Vec<String> = stmt
        .query_map([], |r| r.get::<_, String>(0))
        .map_err(|e| classify(path, e))?
        .collect::<rusqlite::Result<_>>()
        .map_err(|e| classify(path, e))?;
    if problems.len() == 1 && problems[0] == "ok" {
        return Ok(());
    }
    Err(Error::Corrupt {
        path: path.to_path_buf(),
        detail: format!("integrity check failed: {}", problems.join("; ")),
    })
}
