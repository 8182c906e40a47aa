//! The as-of snapshot cache: a tenant's scratch tables as folded through
//! fixed positions of the log, so an as-of folds only the events since the
//! nearest snapshot instead of the tenant's whole history.
//!
//! A snapshot is written by an as-of that folds past one of the boundaries
//! (every `every` positions) and holds exactly the scratch tables that fold
//! had there, so continuing from it gives the tables a full fold gives. It
//! records the position and hash of the last tenant event it folded; one
//! whose event is no longer in the log with that hash (a rewritten chain)
//! is deleted instead of used. The cache is derived and disposable: it
//! lives in `<db>.as-of/`, one lz4-compressed SQLite image per tenant and
//! boundary, and
//! deleting the directory only makes the next as-of slower. Writing it is
//! best effort: a read-only directory leaves as-of correct, just slower.
//!
//! Each file is signed: an HMAC-SHA256 of its bytes, its tenant and its
//! boundary, under a key kept in the database (`audit_snapshot_key`, made
//! when a writer first opens the file). Whoever can write the folder but
//! not the database cannot make an as-of answer something the log does not
//! say: a file that fails its signature is discarded (with a warning) and
//! the answer folded from the log. A read-only copy without the key uses
//! and keeps no snapshots.
//!
//! It must never touch the database file but to read the key, and nothing
//! but `replay::as_of` reads it.

use std::path::{Path, PathBuf};

use events::Position;
use events::db::{Db, OptionalExtension as _};
use hmac::{KeyInit, Mac};
use rusqlite::{Connection, MAIN_DB, OptionalExtension as _, params};

use crate::error::Error;
use crate::store::Store;
use projections::sql_integer as sql;

/// The default distance between snapshots, in log positions: an as-of
/// folds at most this many events after loading one.
pub const DEFAULT_EVERY: u64 = 25_000;

/// Where and how often snapshots are kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshots {
    dir: PathBuf,
    /// 0: no snapshots.
    every: u64,
}

/// A snapshot's own record, inside its file.
const META: &str = "CREATE TABLE IF NOT EXISTS as_of_snapshot (\
    tenant_id TEXT NOT NULL, position INTEGER NOT NULL, \
    last_position INTEGER NOT NULL, last_hash BLOB NOT NULL)";

/// What reading one file found.
enum Read {
    Valid((Connection, Through)),
    /// Its signature does not match: edited, damaged, or signed by another
    /// database's key.
    Forged,
    /// Signed, but no longer what the log says (a rewritten chain).
    Stale,
}

/// What a loaded snapshot says of itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Through {
    /// The boundary it was folded through.
    pub position: Position,
    /// The last event of the tenant at or before it (0: none).
    pub last_event: Position,
}

type Signer = hmac::Hmac<sha2::Sha256>;

/// Bytes of the signature at the start of every file.
const SIGNATURE_BYTES: usize = 32;

/// Makes the signing key, once per database. Runs inside the writer's
/// migration.
pub fn ensure_key(connection: &dyn Db) -> Result<(), Error> {
    let mut key = [0u8; 32];
    getrandom::fill(&mut key)
        .map_err(|error| Error::Internal(format!("no randomness for a key: {error}")))?;
    connection
        .execute(
            "INSERT INTO audit_snapshot_key (id, key) VALUES (1, ?1) ON CONFLICT DO NOTHING",
            [&key[..]],
        )
        .map_err(|error| Error::Internal(format!("keeping the snapshot key: {error}")))?;
    Ok(())
}

/// The signing key, if the database has one.
fn key(store: &Store) -> Result<Option<Vec<u8>>, Error> {
    store.read(|connection| {
        let found = connection
            .query_row("SELECT key FROM audit_snapshot_key WHERE id = 1", [], |row| row.get(0))
            .optional();
        match found {
            Ok(key) => Ok(key),
            // A file from before the key existed, opened read-only.
            Err(error) if error.is_missing_table() => Ok(None),
            Err(error) => Err(Error::Internal(format!("reading the snapshot key: {error}"))),
        }
    })
}

/// The signer of one tenant's snapshot through `boundary`.
fn signer(key: &[u8], tenant: &str, boundary: Position) -> Result<Signer, Error> {
    let mut signer = <Signer as KeyInit>::new_from_slice(key)
        .map_err(|error| Error::Internal(format!("the snapshot key: {error}")))?;
    signer.update(&(tenant.len() as u64).to_be_bytes());
    signer.update(tenant.as_bytes());
    signer.update(&boundary.to_be_bytes());
    Ok(signer)
}

impl Snapshots {
    /// The cache beside the database file `db`.
    pub fn beside(db: &Path, every: u64) -> Snapshots {
        let mut dir = db.as_os_str().to_owned();
        dir.push(".as-of");
        Snapshots { dir: PathBuf::from(dir), every }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The boundaries after `after` up to `until`, in order.
    pub fn boundaries(&self, after: Position, until: Position) -> Vec<Position> {
        if self.every == 0 {
            return Vec::new();
        }
        let first = (after / self.every + 1).saturating_mul(self.every);
        (0..)
            .map(|step: u64| first.saturating_add(step.saturating_mul(self.every)))
            .take_while(|boundary| *boundary <= until)
            .collect()
    }

    fn file(&self, tenant: &str, boundary: Position) -> PathBuf {
        // Tenant ids are ULIDs; anything else is kept out of the path.
        let tenant: String = tenant.chars().filter(char::is_ascii_alphanumeric).collect();
        self.dir.join(format!("{tenant}-{boundary}.db.lz4"))
    }

    /// The newest valid snapshot of `tenant` at or before `position`, in
    /// memory and ready to fold on; invalid ones found on the way are
    /// deleted.
    pub fn load(
        &self,
        store: &Store,
        tenant: &str,
        position: Position,
    ) -> Result<Option<(Connection, Through)>, Error> {
        let Some(key) = key(store)? else { return Ok(None) };
        for boundary in self.boundaries(0, position).into_iter().rev() {
            let path = self.file(tenant, boundary);
            let Ok(file) = std::fs::File::open(&path) else {
                continue;
            };
            match self.read(store, &key, tenant, boundary, file) {
                Ok(Read::Valid(loaded)) => return Ok(Some(loaded)),
                Ok(Read::Forged) => {
                    tracing::warn!(
                        path = %path.display(),
                        "an as-of snapshot failed its signature (edited or damaged): discarded, folding from the log instead"
                    );
                    let _ = std::fs::remove_file(&path);
                }
                Ok(Read::Stale) | Err(_) => {
                    tracing::info!(path = %path.display(), "dropping a stale as-of snapshot");
                    let _ = std::fs::remove_file(&path);
                }
            }
        }
        Ok(None)
    }

    fn read(
        &self,
        store: &Store,
        key: &[u8],
        tenant: &str,
        boundary: Position,
        file: std::fs::File,
    ) -> Result<Read, Error> {
        let mut signed = Vec::new();
        std::io::Read::read_to_end(&mut { file }, &mut signed)
            .map_err(|error| Error::Internal(error.to_string()))?;
        let Some((signature, compressed)) = signed.split_at_checked(SIGNATURE_BYTES) else {
            return Ok(Read::Forged);
        };
        let mut check = signer(key, tenant, boundary)?;
        check.update(compressed);
        if check.verify_slice(signature).is_err() {
            return Ok(Read::Forged);
        }
        let bytes = lz4_flex::block::decompress_size_prepended(compressed)
            .map_err(|error| Error::Internal(error.to_string()))?;
        drop(signed);
        let mut connection =
            Connection::open_in_memory().map_err(|error| Error::Internal(error.to_string()))?;
        connection
            .deserialize_read_exact(MAIN_DB, bytes.as_slice(), bytes.len(), false)
            .map_err(|error| Error::Internal(error.to_string()))?;
        let meta: Option<(String, i64, i64, Vec<u8>)> = connection
            .query_row(
                "SELECT tenant_id, position, last_position, last_hash FROM as_of_snapshot",
                [],
                |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?)),
            )
            .optional()
            .map_err(|error| Error::Internal(error.to_string()))?;
        let Some((owner, position, last_position, last_hash)) = meta else {
            return Ok(Read::Stale);
        };
        let last_event = Position::try_from(last_position).unwrap_or(0);
        if owner != tenant || position != sql(boundary) {
            return Ok(Read::Stale);
        }
        if last_event > 0 {
            match store.log().read_at(tenant, last_event)? {
                Some(event) if event.hash.as_slice() == last_hash.as_slice() => {}
                _ => return Ok(Read::Stale),
            }
        }
        Ok(Read::Valid((connection, Through { position: boundary, last_event })))
    }

    /// Captures `scratch` as the snapshot of `tenant` through `through`,
    /// unless one is already there: the image of the tables as they are
    /// now, to be compressed, signed and written by [`Capture::write`]
    /// (on another thread, while the fold goes on). Best effort: a failure
    /// is logged and the as-of goes on without it.
    pub fn capture(
        &self,
        store: &Store,
        scratch: &mut Connection,
        tenant: &str,
        through: Through,
    ) -> Option<Capture> {
        let path = self.file(tenant, through.position);
        if path.exists() {
            return None;
        }
        let captured = (|| -> Result<Option<Capture>, Error> {
            let Some(key) = key(store)? else { return Ok(None) };
            let last_hash = match through.last_event {
                0 => Vec::new(),
                last => store
                    .log()
                    .read_at(tenant, last)?
                    .map(|event| event.hash.to_vec())
                    .unwrap_or_default(),
            };
            scratch
                .execute_batch(&format!("{META}; DELETE FROM as_of_snapshot;"))
                .and_then(|()| {
                    scratch.execute(
                        "INSERT INTO as_of_snapshot (tenant_id, position, last_position, last_hash) \
                         VALUES (?1, ?2, ?3, ?4)",
                        params![tenant, sql(through.position), sql(through.last_event), last_hash],
                    )
                })
                .map_err(|error| Error::Internal(error.to_string()))?;
            let image = scratch
                .serialize(MAIN_DB)
                .map_err(|error| Error::Internal(error.to_string()))?
                .to_vec();
            Ok(Some(Capture {
                dir: self.dir.clone(),
                path: path.clone(),
                key,
                tenant: tenant.to_owned(),
                position: through.position,
                image,
            }))
        })();
        captured.unwrap_or_else(|error| {
            tracing::info!(%error, path = %path.display(), "as-of snapshot not kept");
            None
        })
    }
}

/// A snapshot's image, taken and not yet written.
pub struct Capture {
    dir: PathBuf,
    path: PathBuf,
    key: Vec<u8>,
    tenant: String,
    position: Position,
    image: Vec<u8>,
}

impl Capture {
    /// Compresses, signs and writes the image. Best effort, like the
    /// capture: a failure is logged.
    pub fn write(self) {
        let Capture { dir, path, key, tenant, position, image } = self;
        let written = (|| -> Result<(), Error> {
            std::fs::create_dir_all(&dir).map_err(|error| Error::Internal(error.to_string()))?;
            // Written aside, then renamed: a reader never sees half a file.
            let partial = path.with_extension(format!("partial-{}", ulid::Ulid::generate()));
            // Compressed: pages of JSON documents shrink about fivefold,
            // and lz4 unpacks faster than the disk reads.
            let compressed = lz4_flex::block::compress_prepend_size(&image);
            drop(image);
            let mut sign = signer(&key, &tenant, position)?;
            sign.update(&compressed);
            let mut signed = sign.finalize().into_bytes().to_vec();
            signed.extend_from_slice(&compressed);
            drop(compressed);
            std::fs::write(&partial, signed)
                .and_then(|()| std::fs::rename(&partial, &path))
                .map_err(|error| {
                    let _ = std::fs::remove_file(&partial);
                    Error::Internal(error.to_string())
                })
        })();
        if let Err(error) = written {
            tracing::info!(%error, path = %path.display(), "as-of snapshot not kept");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boundaries_are_multiples_after_the_start() {
        let snapshots = Snapshots::beside(Path::new("/tmp/x.db"), 10);
        assert_eq!(snapshots.boundaries(0, 35), vec![10, 20, 30]);
        assert_eq!(snapshots.boundaries(10, 30), vec![20, 30]);
        assert_eq!(snapshots.boundaries(12, 19), Vec::<u64>::new());
        assert_eq!(
            Snapshots::beside(Path::new("/tmp/x.db"), 0).boundaries(0, 100),
            Vec::<u64>::new()
        );
        assert_eq!(snapshots.dir(), Path::new("/tmp/x.db.as-of"));
    }
}
