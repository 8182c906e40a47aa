//! Whether the database file has changed: a number that moves whenever
//! anything has been committed to the file since the last look, by this
//! process's writer or by any other process (the CLI, a script).
//!
//! The look reads the WAL-index header, the first 96 bytes of the `-shm`
//! file: two copies of SQLite's `WalIndexHdr`, which every commit
//! rewrites (its change counter `iChange` and last frame `mxFrame` move;
//! a restarted WAL changes its salts), in every process, before that
//! commit returns (<https://www.sqlite.org/walformat.html>, "The WAL-Index
//! Header"). One `pread` of a page the kernel already holds, no lock:
//! about a microsecond, against ten or more for a read transaction. Two
//! copies that differ are a commit in progress and count as a change, so
//! a torn read can only retire entries early, never keep a stale one.
//! Where the header cannot be read, the look falls back to SQLite's
//! `PRAGMA data_version` on a dedicated read connection, the same answer
//! through a read transaction.
//!
//! Caches in front of the projections tag what they keep with the number
//! they read *before* reading the database, and serve it only while the
//! number is the same, so nothing committed before a look is ever hidden
//! behind a cache. This module knows nothing of what is cached.
//!
//! The `-shm` file is opened once, lazily, and closed only when the log is
//! dropped, after its writer and readers have closed: closing a
//! descriptor of a file drops every POSIX lock the process holds on it,
//! SQLite's own shared-memory locks included.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use rusqlite::Connection;

use crate::LogError;

/// Both copies of the WAL-index header.
const HEADER_BYTES: usize = 96;

/// The watch: where it looks, what it last saw, and the generation.
pub struct Changes {
    shm: PathBuf,
    watch: Mutex<Option<Watch>>,
    generation: AtomicU64,
}

enum Watch {
    Header { file: File, seen: [u8; HEADER_BYTES] },
    Version { connection: Connection, seen: i64 },
}

/// What one look saw: a stable value, or a header being rewritten.
enum Seen {
    Header([u8; HEADER_BYTES]),
    Version(i64),
    Torn,
}

impl Changes {
    /// A watch of the database at `db` (its `-shm` file beside it).
    pub fn new(db: &std::path::Path) -> Changes {
        let mut shm = db.as_os_str().to_owned();
        shm.push("-shm");
        Changes { shm: PathBuf::from(shm), watch: Mutex::new(None), generation: AtomicU64::new(0) }
    }

    /// The current generation: moved on if anything was committed since
    /// the previous call. `open` makes the fallback's connection, if the
    /// header cannot be read.
    pub fn generation(
        &self,
        open: impl FnOnce() -> Result<Connection, LogError>,
    ) -> Result<u64, LogError> {
        // A panic under this lock leaves a descriptor and bytes, both still
        // valid: recover rather than fail every request after it.
        let mut watch = self.watch.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let changed = match watch.as_mut() {
            None => {
                *watch = Some(self.start(open)?);
                // Whatever was tagged before the watch existed is stale.
                true
            }
            Some(current) => match look(current)? {
                Seen::Torn => true,
                Seen::Header(header) => match current {
                    Watch::Header { seen, .. } if *seen != header => {
                        *seen = header;
                        true
                    }
                    _ => false,
                },
                Seen::Version(version) => match current {
                    Watch::Version { seen, .. } if *seen != version => {
                        *seen = version;
                        true
                    }
                    _ => false,
                },
            },
        };
        if changed {
            self.generation.fetch_add(1, Ordering::SeqCst);
        }
        Ok(self.generation.load(Ordering::SeqCst))
    }

    fn start(
        &self,
        open: impl FnOnce() -> Result<Connection, LogError>,
    ) -> Result<Watch, LogError> {
        if let Ok(file) = File::open(&self.shm)
            && let Some(seen) = read_header(&file)
        {
            // A torn first read is stored as it is: the next look differs
            // from it, and counts a change, which is only ever safe.
            let seen = match seen {
                Seen::Header(header) => header,
                _ => [0; HEADER_BYTES],
            };
            return Ok(Watch::Header { file, seen });
        }
        let connection = open()?;
        let seen = data_version(&connection)?;
        Ok(Watch::Version { connection, seen })
    }
}

fn look(watch: &Watch) -> Result<Seen, LogError> {
    match watch {
        // A header that cannot be read now (the file replaced or cut
        // short, which SQLite never does under an open connection) counts
        // as a change on every look: never stale, only slower.
        Watch::Header { file, .. } => Ok(read_header(file).unwrap_or(Seen::Torn)),
        Watch::Version { connection, .. } => Ok(Seen::Version(data_version(connection)?)),
    }
}

/// The header's two copies, if the file holds them.
fn read_header(file: &File) -> Option<Seen> {
    let mut bytes = [0u8; HEADER_BYTES];
    file.read_exact_at(&mut bytes, 0).ok()?;
    let (first, second) = bytes.split_at(HEADER_BYTES / 2);
    // isInit (byte 12) is zero until a connection has built the index.
    let initialised = first.get(12).is_some_and(|init| *init != 0);
    Some(if first == second && initialised { Seen::Header(bytes) } else { Seen::Torn })
}

fn data_version(connection: &Connection) -> Result<i64, LogError> {
    connection
        .prepare_cached("PRAGMA data_version")
        .and_then(|mut statement| statement.query_row([], |row| row.get(0)))
        .map_err(|error| LogError::storage("reading the database's data version", error))
}
