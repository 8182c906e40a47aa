//! Backups of a running server's database, and restoring one.
//!
//! `rollcall backup --to FILE` copies the database with `VACUUM INTO`: one
//! read transaction, so the copy is the database as of one commit, taken
//! beside a writer that keeps writing (SQLite's online backup API restarts
//! whenever another connection writes, and under steady load may never
//! finish). The copy is then checked on its own: `PRAGMA integrity_check`
//! and a walk of every tenant's hash chain. The webhook delivery state
//! beside the database (`<db>.deliveries`) is copied the same way to
//! `FILE.deliveries`, and then the key store (`<db>.keys`, which opens the
//! sealed personal values) to `FILE.keys`: keep that copy on the key
//! store's own, shorter schedule (docs/operations.md). The as-of snapshots
//! are a cache and are not copied.
//!
//! `rollcall restore --from FILE` checks the backup the same way, keeps the
//! database it replaces as `<db>.replaced-<time>`, and puts the backup in
//! its place with its delivery state; it refuses while a server has the
//! database open (the server holds `<db>.serve.lock` while it runs).
//!
//! This module owns the copies and the serve lock; it must not decide
//! anything about events (the chain walk is the log's own `verify`).

use std::fs::File;
use std::path::{Path, PathBuf};
use std::time::Instant;

use events::VerifyScope;
use events::sqlite::LogOptions;
use rusqlite::{Connection, OpenFlags};
use serde::Serialize;

use crate::error::Error;
use crate::store::keys::KeyStore;

/// A path beside `db`: `db` with `suffix` appended.
fn beside(db: &Path, suffix: &str) -> PathBuf {
    let mut name = db.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

/// Held by `rollcall serve` for as long as it runs: an OS file lock, so a
/// killed server's lock goes with it.
#[derive(Debug)]
pub struct ServeLock {
    _file: File,
}

impl ServeLock {
    /// Takes the lock, or says that a server holds it.
    pub fn acquire(db: &Path) -> Result<ServeLock, Error> {
        match crate::store::Store::lock_beside(db, ".serve.lock")? {
            Some(file) => Ok(ServeLock { _file: file }),
            None => Err(Error::conflict(format!(
                "a rollcall server has {} open (it holds {}); stop it first",
                db.display(),
                beside(db, ".serve.lock").display()
            ))),
        }
    }
}

/// What a backup (or a restored backup) holds, checked.
#[derive(Debug, Serialize)]
pub struct Checked {
    pub file: String,
    pub bytes: u64,
    /// `PRAGMA integrity_check` said `ok`.
    pub integrity: &'static str,
    pub events: u64,
    pub heads: Vec<crate::audit::ChainHead>,
    /// The delivery state copied beside it, if there was one.
    pub deliveries: Option<String>,
    /// The key store copied beside it, if there was one.
    pub keys: Option<String>,
    pub took_ms: u64,
}

fn storage(what: String) -> impl FnOnce(rusqlite::Error) -> Error {
    move |error| Error::Internal(format!("{what}: {error}"))
}

/// Copies the SQLite file at `from` into the new file `to`, as of one
/// read transaction.
fn vacuum_into(from: &Path, to: &Path, with_functions: bool) -> Result<(), Error> {
    let source = Connection::open_with_flags(
        from,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(storage(format!("opening {}", from.display())))?;
    source
        .busy_timeout(std::time::Duration::from_secs(10))
        .map_err(storage("setting a busy timeout".to_owned()))?;
    // Indexes over the projections' SQL functions are rebuilt in the copy.
    if with_functions {
        projections::functions::register(&source)
            .map_err(storage("registering SQL functions".to_owned()))?;
    }
    let target = to.to_str().ok_or_else(|| Error::invalid("the backup path is not UTF-8"))?;
    source.execute("VACUUM INTO ?1", [target]).map_err(storage(format!(
        "copying {} into {}",
        from.display(),
        to.display()
    )))?;
    Ok(())
}

/// Checks a copy on its own: its pages, then every tenant's chain.
pub fn check(file: &Path, started: Instant) -> Result<Checked, Error> {
    if !file.is_file() {
        return Err(Error::not_found(format!("backup {}", file.display())));
    }
    let connection = Connection::open_with_flags(
        file,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(storage(format!("opening {}", file.display())))?;
    let problems: Vec<String> = connection
        .prepare("PRAGMA integrity_check")
        .and_then(|mut statement| statement.query_map([], |row| row.get::<_, String>(0))?.collect())
        .map_err(storage(format!("checking {}", file.display())))?;
    if problems != ["ok"] {
        return Err(Error::invalid(format!(
            "{} is damaged: {}",
            file.display(),
            problems.join("; ")
        )));
    }
    drop(connection);
    let store = crate::store::Store::open_read_only(file, LogOptions::default())?;
    let report = store.log().verify(VerifyScope::All)?;
    if !report.is_ok() {
        let why = report.failure.as_ref().map_or_else(
            || "its tamper guards are missing or altered".to_owned(),
            |failure| format!("position {}: {}", failure.position, failure.problem.describe()),
        );
        return Err(Error::invalid(format!("{} does not verify: {why}", file.display())));
    }
    let heads = crate::audit::chain_heads(&report);
    let deliveries = beside(file, ".deliveries");
    let keys = KeyStore::path_for(file);
    Ok(Checked {
        file: file.display().to_string(),
        bytes: std::fs::metadata(file).map(|metadata| metadata.len()).unwrap_or(0),
        integrity: "ok",
        events: report.events_checked,
        heads,
        deliveries: deliveries.is_file().then(|| deliveries.display().to_string()),
        keys: keys.is_file().then(|| keys.display().to_string()),
        took_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
    })
}

/// Backs up the database at `db` (a server may be running on it) to the
/// new file `to`, with its delivery state, and checks the copy.
pub fn backup(db: &Path, to: &Path) -> Result<Checked, Error> {
    let started = Instant::now();
    if !db.is_file() {
        return Err(Error::not_found(format!("database {}", db.display())));
    }
    if to.exists() {
        return Err(Error::conflict(format!(
            "{} exists already; a backup never overwrites a file",
            to.display()
        )));
    }
    vacuum_into(db, to, true)?;
    let deliveries = beside(db, ".deliveries");
    if deliveries.is_file() {
        vacuum_into(&deliveries, &beside(to, ".deliveries"), false)?;
    }
    // After the database: every key its copy seals with was made before
    // the event that used it, so the key store's copy holds it.
    let keys = KeyStore::path_for(db);
    if keys.is_file() {
        vacuum_into(&keys, &KeyStore::path_for(to), false)?;
    }
    match check(to, started) {
        Ok(checked) => Ok(checked),
        Err(error) => {
            // A copy that does not check is not a backup: leave none.
            let _ = std::fs::remove_file(to);
            let _ = std::fs::remove_file(beside(to, ".deliveries"));
            let _ = std::fs::remove_file(KeyStore::path_for(to));
            Err(error)
        }
    }
}

/// Moves `path` and its WAL files aside (or away, when `keep` is `None`).
fn set_aside(path: &Path, keep: Option<&Path>) -> Result<(), Error> {
    let io =
        |what: String| move |error: std::io::Error| Error::Internal(format!("{what}: {error}"));
    for suffix in ["-wal", "-shm"] {
        let file = beside(path, suffix);
        if file.exists() {
            std::fs::remove_file(&file).map_err(io(format!("removing {}", file.display())))?;
        }
    }
    if path.exists() {
        match keep {
            Some(kept) => std::fs::rename(path, kept).map_err(io(format!(
                "moving {} to {}",
                path.display(),
                kept.display()
            )))?,
            None => {
                std::fs::remove_file(path).map_err(io(format!("removing {}", path.display())))?
            }
        }
    }
    Ok(())
}

/// Copies `from` to `to` through a temporary file, synced, then renamed.
fn put_in_place(from: &Path, to: &Path) -> Result<(), Error> {
    let io =
        |what: String| move |error: std::io::Error| Error::Internal(format!("{what}: {error}"));
    let temporary = beside(to, ".restoring");
    std::fs::copy(from, &temporary).map_err(io(format!(
        "copying {} to {}",
        from.display(),
        temporary.display()
    )))?;
    File::open(&temporary)
        .and_then(|file| file.sync_all())
        .map_err(io(format!("syncing {}", temporary.display())))?;
    std::fs::rename(&temporary, to).map_err(io(format!(
        "moving {} to {}",
        temporary.display(),
        to.display()
    )))?;
    if let Some(directory) = to.parent().filter(|parent| !parent.as_os_str().is_empty()) {
        File::open(directory)
            .and_then(|file| file.sync_all())
            .map_err(io(format!("syncing {}", directory.display())))?;
    }
    Ok(())
}

/// What a restore did.
#[derive(Debug, Serialize)]
pub struct Restored {
    pub restored: Checked,
    /// Where the database it replaced was kept.
    pub replaced: Option<String>,
}

/// Puts the backup `from` in place of the database at `db` (no server may
/// have it open), keeping the database it replaces beside it.
pub fn restore(db: &Path, from: &Path) -> Result<Restored, Error> {
    let started = Instant::now();
    let _lock = ServeLock::acquire(db)?;
    check(from, started)?;
    let stamp = jiff::Timestamp::now().strftime("%Y%m%dT%H%M%SZ").to_string();
    let replaced = db.is_file().then(|| beside(db, &format!(".replaced-{stamp}")));
    set_aside(db, replaced.as_deref())?;
    put_in_place(from, db)?;
    let deliveries = beside(db, ".deliveries");
    set_aside(&deliveries, None)?;
    let saved = beside(from, ".deliveries");
    if saved.is_file() {
        put_in_place(&saved, &deliveries)?;
    }
    restore_keys(db, from, &stamp)?;
    // The as-of snapshots are of the database replaced.
    let snapshots = beside(db, ".as-of");
    if snapshots.is_dir() {
        let _ = std::fs::remove_dir_all(&snapshots);
    }
    Ok(Restored {
        restored: check(db, started)?,
        replaced: replaced.map(|path| path.display().to_string()),
    })
}

/// The key store of a restored database. The live one, when it is this
/// database's (the same `database_identity`), holds every key ever made
/// (each before its first use; an erased one as a tombstone): it opens the
/// older database as well and the erasures since the backup stay done, so
/// it is kept, with any key of the backup's copy it lacks added. Another
/// database's key store is set aside and the backup's put in its place.
fn restore_keys(db: &Path, from: &Path, stamp: &str) -> Result<(), Error> {
    let key_error = |error: events::seal::SealError| Error::Internal(error.to_string());
    let live = KeyStore::path_for(db);
    let saved = KeyStore::path_for(from);
    let restored = {
        let connection = Connection::open_with_flags(db, OpenFlags::SQLITE_OPEN_READ_ONLY)
            .map_err(storage(format!("opening {}", db.display())))?;
        crate::store::identity(&connection)?
    };
    let live_of = KeyStore::database_of(&live).map_err(key_error)?;
    if live.is_file() && live_of.is_some() && live_of == restored {
        if saved.is_file() {
            KeyStore::merge(&saved, &live).map_err(key_error)?;
        }
        return Ok(());
    }
    if live.is_file() {
        checkpoint(&live)?;
        set_aside(&live, Some(&beside(&live, &format!(".replaced-{stamp}"))))?;
    }
    if saved.is_file() {
        checkpoint(&saved)?;
        put_in_place(&saved, &live)?;
    }
    Ok(())
}

/// Folds an SQLite file's WAL into it, so the file alone is all of it.
fn checkpoint(path: &Path) -> Result<(), Error> {
    Connection::open(path)
        .and_then(|connection| {
            connection.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
        })
        .map_err(storage(format!("checkpointing {}", path.display())))
}

/// `serve --backup-dir DIR --backup-every D --backup-keep N`.
#[derive(Debug, Clone)]
pub struct Schedule {
    pub dir: PathBuf,
    pub every: std::time::Duration,
    pub keep: usize,
}

/// The backups of `dir` this schedule wrote, oldest first.
fn scheduled_backups(dir: &Path) -> Vec<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .map(|entry| entry.path())
                .filter(|path| {
                    path.file_name()
                        .and_then(|name| name.to_str())
                        .is_some_and(|name| name.starts_with("rollcall-") && name.ends_with(".db"))
                })
                .collect()
        })
        .unwrap_or_default();
    // The names carry the time, so their order is the backups' order.
    found.sort();
    found
}

/// One scheduled backup into `dir`, then the oldest beyond `keep` removed.
pub fn backup_into(db: &Path, schedule: &Schedule) -> Result<Checked, Error> {
    std::fs::create_dir_all(&schedule.dir).map_err(|error| {
        Error::Internal(format!("creating {}: {error}", schedule.dir.display()))
    })?;
    let stamp = jiff::Timestamp::now().strftime("%Y%m%dT%H%M%S%.3fZ").to_string();
    let checked = backup(db, &schedule.dir.join(format!("rollcall-{stamp}.db")))?;
    let found = scheduled_backups(&schedule.dir);
    let excess = found.len().saturating_sub(schedule.keep.max(1));
    for old in found.iter().take(excess) {
        let _ = std::fs::remove_file(old);
        let _ = std::fs::remove_file(beside(old, ".deliveries"));
        let _ = std::fs::remove_file(KeyStore::path_for(old));
    }
    Ok(checked)
}

/// Backs up at start and then every `schedule.every`, until `stopping`.
pub async fn run_scheduled(
    db: PathBuf,
    schedule: Schedule,
    metrics: std::sync::Arc<crate::metrics::Metrics>,
    mut stopping: tokio::sync::watch::Receiver<bool>,
) {
    loop {
        let (from, plan) = (db.clone(), schedule.clone());
        let done = tokio::task::spawn_blocking(move || backup_into(&from, &plan)).await;
        metrics.backup(matches!(done, Ok(Ok(_))));
        match done {
            Ok(Ok(checked)) => tracing::info!(
                file = %checked.file,
                bytes = checked.bytes,
                events = checked.events,
                took_ms = checked.took_ms,
                "scheduled backup written and checked"
            ),
            Ok(Err(error)) => tracing::error!(%error, "scheduled backup failed"),
            Err(error) => tracing::error!(%error, "scheduled backup task failed"),
        }
        tokio::select! {
            () = tokio::time::sleep(schedule.every) => {}
            () = crate::stop::until_stopped(&mut stopping) => return,
        }
    }
}
