//! The key store: every subject's data key (`events::seal`), in an SQLite
//! file of its own beside the database, `<db>.keys`, or, for a database on
//! PostgreSQL, in the `data_keys` table of that database, shared by every
//! node.
//!
//! It is outside the hash chain and outside the database file on purpose:
//! it can be backed up on its own, shorter schedule, and a backup of the
//! database alone holds personal values only sealed. Destroying a key
//! (an erasure) leaves a tombstone, so a key that was erased reads as
//! erased while a key that is simply missing (a key store restored from a
//! backup older than the log) is an error that says so.
//!
//! This module owns the file (on PostgreSQL, the `key_store` and
//! `data_keys` tables) and its in-memory cache. It never touches the
//! log or the projections. Ids are made in blocks numbered after every id the file
//! holds, under the file's write lock, and each process hands out only the
//! ids of the blocks it made: an id is never handed out twice. Which key is
//! whose is the user's `UserCreated::key`, folded into the directory row.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};

use events::db::{Db, OptionalExtension as _};
use events::params;
use events::postgres::PgPool;
use events::seal::{KeySource, KeyState, Keyring, SealError, SubjectKey};
use rusqlite::{Connection, OpenFlags, OptionalExtension as _};

/// Keys made at a time, in one durable transaction: a new subject costs
/// the key store one fsync per this many.
const ISSUE_AHEAD: u64 = 1024;

/// Keys kept in memory at most (about 100 bytes each); past it the cache
/// starts again empty.
const CACHED_KEYS_MAX: usize = 262_144;

const SCHEMA: &str = "
-- The database these keys belong to (its `database_identity`).
CREATE TABLE IF NOT EXISTS key_store (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    database TEXT NOT NULL
) STRICT;
CREATE TABLE IF NOT EXISTS data_keys (
    key_id INTEGER PRIMARY KEY,
    -- NULL once erased: the tombstone says the key existed.
    key BLOB CHECK (key IS NULL OR length(key) = 32),
    erased_at TEXT,
    CHECK ((key IS NULL) = (erased_at IS NOT NULL))
) STRICT;
";

/// How often a node on PostgreSQL looks whether another node erased keys
/// it holds in its cache: at most this long after an erasure elsewhere,
/// a key it cached still opens values here (the erased person's rows are
/// gone from the projections already, by the erasure's own commit).
const POSTGRES_REVALIDATE: std::time::Duration = std::time::Duration::from_secs(1);

/// Where the keys are kept.
enum Backing {
    File(Mutex<Connection>),
    Postgres { pool: Arc<PgPool>, checked: Mutex<Option<std::time::Instant>> },
}

pub struct KeyStore {
    path: PathBuf,
    writable: bool,
    /// Opened by [`KeyStore::bind`], once the database beside it is known
    /// to be a database: opening `--db` on a wrong path leaves no file.
    /// Empty after it for a reader with no key store file.
    connection: std::sync::OnceLock<Option<Backing>>,
    cache: RwLock<HashMap<u64, KeyState>>,
    /// The ids this process made and has not handed out yet.
    lease: Mutex<Vec<Arc<SubjectKey>>>,
    /// The change generation of the file when the cache was last known to
    /// match it: another process's erasure moves it, and the cache is
    /// dropped before the next key is handed out.
    seen: std::sync::atomic::AtomicU64,
    /// The file's change counter (its WAL-index header: one `pread`).
    changes: events::sqlite::Changes,
    /// The pool of a key store on PostgreSQL, until [`KeyStore::bind`].
    postgres: Option<Arc<PgPool>>,
    /// Keys an erasure recorded in the log that the file may still hold
    /// (its process died before destroying them, and this handle is a
    /// reader that may not): they read as erased all the same.
    forgotten: RwLock<std::collections::HashSet<u64>>,
}

impl std::fmt::Debug for KeyStore {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.debug_struct("KeyStore").field("path", &self.path).finish_non_exhaustive()
    }
}

fn store_error<E: std::fmt::Display>(context: &'static str) -> impl FnOnce(E) -> SealError {
    move |error| SealError::Store(format!("{context}: {error}"))
}

impl KeyStore {
    /// Where the key store of the database `db` lives.
    pub fn path_for(db: &Path) -> PathBuf {
        let mut name = db.as_os_str().to_owned();
        name.push(".keys");
        PathBuf::from(name)
    }

    /// The key store of `db`, for reading and writing; the file is opened
    /// (or created) by [`KeyStore::bind`].
    pub fn new(db: &Path) -> KeyStore {
        KeyStore::with(KeyStore::path_for(db), true)
    }

    /// The key store of `db`, for reading only; with no file, every sealed
    /// value fails to open with a message naming the file.
    pub fn read_only(db: &Path) -> KeyStore {
        KeyStore::with(KeyStore::path_for(db), false)
    }

    fn with(path: PathBuf, writable: bool) -> KeyStore {
        let path_for_changes = path.clone();
        KeyStore {
            path,
            writable,
            connection: std::sync::OnceLock::new(),
            cache: RwLock::default(),
            lease: Mutex::new(Vec::new()),
            seen: std::sync::atomic::AtomicU64::new(u64::MAX),
            changes: events::sqlite::Changes::new(&path_for_changes),
            postgres: None,
            forgotten: RwLock::default(),
        }
    }

    /// The key store of a database on PostgreSQL: its tables in that
    /// database, made by [`KeyStore::bind`].
    pub fn postgres(pool: Arc<PgPool>) -> KeyStore {
        let mut store = KeyStore::with(PathBuf::from("data_keys"), true);
        store.postgres = Some(pool);
        store
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn open_file(&self) -> Result<Option<Backing>, SealError> {
        if let Some(pool) = &self.postgres {
            let connection = pool.get().map_err(store_error("opening the key store"))?;
            connection
                .execute_batch(&format!(
                    "BEGIN; SELECT pg_advisory_xact_lock({}); {} COMMIT;",
                    events::postgres::SCHEMA_LOCK,
                    projections::schema::postgres_ddl(SCHEMA)
                ))
                .map_err(store_error("setting up the key store"))?;
            return Ok(Some(Backing::Postgres { pool: pool.clone(), checked: Mutex::new(None) }));
        }
        Ok(self.open_sqlite()?.map(|connection| Backing::File(Mutex::new(connection))))
    }

    fn open_sqlite(&self) -> Result<Option<Connection>, SealError> {
        if !self.writable {
            if !self.path.exists() {
                return Ok(None);
            }
            let connection = Connection::open_with_flags(
                &self.path,
                OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
            )
            .map_err(store_error("opening the key store"))?;
            connection
                .execute_batch("PRAGMA busy_timeout=10000;")
                .map_err(store_error("opening the key store"))?;
            return Ok(Some(connection));
        }
        let connection =
            Connection::open(&self.path).map_err(store_error("opening the key store"))?;
        // WAL: one fsync a commit. `secure_delete`: an erased key's bytes
        // are overwritten in the file, not left in a free page.
        connection
            .query_row("PRAGMA journal_mode=WAL", [], |_| Ok(()))
            .map_err(store_error("setting up the key store"))?;
        connection
            .execute_batch(
                "PRAGMA synchronous=FULL; PRAGMA secure_delete=ON; PRAGMA busy_timeout=10000;",
            )
            .and_then(|()| connection.execute_batch(SCHEMA))
            .map_err(store_error("setting up the key store"))?;
        Ok(Some(connection))
    }

    /// Opens the key store file and ties it to the database `identity`
    /// (`None`: a database from before identities, opened read-only):
    /// records it in a new key store, and refuses one that belongs to
    /// another database, whose keys would seal values that no key of this
    /// database opens.
    pub fn bind(&self, identity: Option<&str>) -> Result<(), SealError> {
        let backing = self.open_file()?;
        self.connection
            .set(backing)
            .map_err(|_| SealError::Store("the key store was opened twice".to_owned()))?;
        let Some(identity) = identity else { return Ok(()) };
        if matches!(self.connection.get(), Some(None)) {
            return Ok(());
        }
        self.with_db(|db| {
            let recorded: Option<String> = db
                .query_row("SELECT database FROM key_store WHERE id = 1", [], |row| row.get(0))
                .optional()
                .map_err(store_error("reading the key store's database"))?;
            match recorded {
                Some(recorded) if recorded == identity => Ok(()),
                Some(_) => Err(SealError::Store(format!(
                    "{} is the key store of another database; move it away, or put this \
                     database's key store (FILE.keys beside its backup) in its place",
                    self.path.display()
                ))),
                None if !self.writable => Ok(()),
                None => db
                    .execute(
                        "INSERT INTO key_store (id, database) VALUES (1, ?1) ON CONFLICT DO NOTHING",
                        [identity],
                    )
                    .map(drop)
                    .map_err(store_error("recording the key store's database")),
            }
        })
    }

    /// The database identity a key store file records, if any.
    pub fn database_of(path: &Path) -> Result<Option<String>, SealError> {
        if !path.is_file() {
            return Ok(None);
        }
        let connection = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY)
            .map_err(store_error("opening a key store"))?;
        connection
            .query_row("SELECT database FROM key_store WHERE id = 1", [], |row| row.get(0))
            .optional()
            .map_err(store_error("reading a key store's database"))
    }

    /// Copies into the key store file `into` every key of `from` it lacks
    /// (a tombstone in `into` stays a tombstone).
    pub fn merge(from: &Path, into: &Path) -> Result<u64, SealError> {
        let connection = Connection::open(into).map_err(store_error("opening a key store"))?;
        connection
            .execute_batch("PRAGMA synchronous=FULL; PRAGMA busy_timeout=10000;")
            .map_err(store_error("opening a key store"))?;
        let source = from.to_str().ok_or(SealError::Malformed("a key store path is not UTF-8"))?;
        connection
            .execute("ATTACH DATABASE ?1 AS saved", [source])
            .map_err(store_error("reading a saved key store"))?;
        let added = connection
            .execute(
                "INSERT OR IGNORE INTO main.data_keys (key_id, key, erased_at) \
                 SELECT key_id, key, erased_at FROM saved.data_keys",
                [],
            )
            .map_err(store_error("merging a saved key store"))?;
        Ok(u64::try_from(added).unwrap_or(0))
    }

    fn backing(&self) -> Result<&Backing, SealError> {
        self.connection
            .get()
            .ok_or_else(|| SealError::Store("the key store is not open yet".to_owned()))?
            .as_ref()
            .ok_or_else(|| {
                SealError::Store(format!("there is no key store at {}", self.path.display()))
            })
    }

    /// Runs `work` on the key store's connection.
    fn with_db<T>(
        &self,
        work: impl FnOnce(&dyn Db) -> Result<T, SealError>,
    ) -> Result<T, SealError> {
        match self.backing()? {
            Backing::File(connection) => {
                let connection = connection
                    .lock()
                    .map_err(|_| SealError::Store("the key store's lock is poisoned".into()))?;
                work(&*connection)
            }
            Backing::Postgres { pool, .. } => {
                let connection = pool.get().map_err(store_error("reaching the key store"))?;
                work(&*connection)
            }
        }
    }

    /// Runs `work` in a transaction that holds the key store's write lock
    /// from its start (the file's, or the table's on PostgreSQL): two
    /// processes or nodes making keys wait for each other.
    fn write<T>(
        &self,
        context: &'static str,
        work: impl FnOnce(&dyn Db) -> Result<T, SealError>,
    ) -> Result<T, SealError> {
        self.with_db(|db| {
            let begin = match db.dialect() {
                events::db::Dialect::Sqlite => "BEGIN IMMEDIATE",
                events::db::Dialect::Postgres => {
                    "BEGIN; LOCK TABLE data_keys IN SHARE ROW EXCLUSIVE MODE"
                }
            };
            db.execute_batch(begin).map_err(store_error(context))?;
            match work(db) {
                Ok(done) => {
                    db.execute_batch("COMMIT").map_err(store_error(context))?;
                    Ok(done)
                }
                Err(error) => {
                    let _ = db.execute_batch("ROLLBACK");
                    Err(error)
                }
            }
        })
    }

    /// Destroys the keys `ids` (an erasure): each leaves a tombstone, its
    /// bytes overwritten in the file (`secure_delete`) and, by the
    /// checkpoint that follows, gone from the WAL too. Idempotent: a key
    /// erased already stays as it was. Returns how many it destroyed now.
    pub fn erase(&self, ids: &[u64], at: &str) -> Result<usize, SealError> {
        let destroyed = self.write("erasing keys", |db| {
            let mut destroyed = 0;
            for id in ids {
                let row = i64::try_from(*id).map_err(|_| SealError::MissingKey(*id))?;
                destroyed += db
                    .prepare_cached(
                        "UPDATE data_keys SET key = NULL, erased_at = ?2 \
                         WHERE key_id = ?1 AND key IS NOT NULL",
                    )
                    .and_then(|mut statement| statement.execute(params![row, at]))
                    .map_err(store_error("erasing keys"))?;
            }
            Ok(destroyed)
        })?;
        // The old bytes leave the file's WAL, or PostgreSQL's dead tuples.
        self.with_db(|db| match db.dialect() {
            events::db::Dialect::Sqlite => db
                .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
                .map_err(store_error("checkpointing the key store")),
            events::db::Dialect::Postgres => {
                db.execute_batch("VACUUM data_keys").map_err(store_error("vacuuming the key store"))
            }
        })?;
        for id in ids {
            self.remember(*id, KeyState::Erased);
        }
        Ok(destroyed)
    }

    /// Treats `ids` as erased from now on, whatever the file says.
    pub fn forget(&self, ids: &[u64]) {
        if let Ok(mut forgotten) = self.forgotten.write() {
            forgotten.extend(ids.iter().copied());
        }
    }

    /// Those of `ids` the file holds live (not erased).
    pub fn live_among(&self, ids: &[u64]) -> Result<Vec<u64>, SealError> {
        self.with_db(|db| {
            let mut live = Vec::new();
            for id in ids {
                let row = i64::try_from(*id).map_err(|_| SealError::MissingKey(*id))?;
                let found: Option<bool> = db
                    .prepare_cached("SELECT key IS NOT NULL FROM data_keys WHERE key_id = ?1")
                    .and_then(|mut statement| {
                        statement.query_row([row], |row| row.get(0)).optional()
                    })
                    .map_err(store_error("reading a key"))?;
                if found == Some(true) {
                    live.push(*id);
                }
            }
            Ok(live)
        })
    }

    /// Drops the cache when another connection (another process) changed
    /// the file since it was last looked at.
    fn revalidate(&self) -> Result<(), SealError> {
        use std::sync::atomic::Ordering;
        match self.connection.get() {
            // A reader with no key store file has nothing to keep fresh.
            Some(None) => return Ok(()),
            Some(Some(Backing::Postgres { checked, .. })) => {
                return self.revalidate_postgres(checked);
            }
            _ => {}
        }
        let generation = self
            .changes
            .generation(|| {
                Connection::open_with_flags(&self.path, OpenFlags::SQLITE_OPEN_READ_ONLY)
                    .map_err(|error| events::LogError::storage("watching the key store", error))
            })
            .map_err(|error| SealError::Store(error.to_string()))?;
        if self.seen.swap(generation, Ordering::AcqRel) != generation
            && let Ok(mut cache) = self.cache.write()
        {
            cache.clear();
        }
        Ok(())
    }

    /// On PostgreSQL, every [`POSTGRES_REVALIDATE`]: the count of erased
    /// keys, which only an erasure moves, stands for the file's counter.
    fn revalidate_postgres(
        &self,
        checked: &Mutex<Option<std::time::Instant>>,
    ) -> Result<(), SealError> {
        use std::sync::atomic::Ordering;
        {
            let mut checked = checked
                .lock()
                .map_err(|_| SealError::Store("the key store's lock is poisoned".into()))?;
            if checked.is_some_and(|at| at.elapsed() < POSTGRES_REVALIDATE) {
                return Ok(());
            }
            *checked = Some(std::time::Instant::now());
        }
        let erased: i64 = self.with_db(|db| {
            db.query_row("SELECT count(*) FROM data_keys WHERE key IS NULL", [], |row| row.get(0))
                .map_err(store_error("watching the key store"))
        })?;
        let erased = u64::try_from(erased).unwrap_or(0);
        if self.seen.swap(erased, Ordering::AcqRel) != erased
            && let Ok(mut cache) = self.cache.write()
        {
            cache.clear();
        }
        Ok(())
    }

    fn cached(&self, id: u64) -> Option<KeyState> {
        self.cache.read().ok().and_then(|cache| cache.get(&id).cloned())
    }

    fn remember(&self, id: u64, state: KeyState) {
        if let Ok(mut cache) = self.cache.write() {
            if cache.len() >= CACHED_KEYS_MAX {
                cache.clear();
            }
            cache.insert(id, state);
        }
    }

    /// The key store's row for `id`, read from the file.
    fn load(&self, id: u64) -> Result<Option<KeyState>, SealError> {
        let row = i64::try_from(id).map_err(|_| SealError::MissingKey(id))?;
        let found: Option<Option<Vec<u8>>> = self.with_db(|db| {
            db.prepare_cached("SELECT key FROM data_keys WHERE key_id = ?1")
                .and_then(|mut statement| statement.query_row([row], |row| row.get(0)).optional())
                .map_err(store_error("reading a key"))
        })?;
        match found {
            None => Ok(None),
            Some(None) => Ok(Some(KeyState::Erased)),
            Some(Some(bytes)) => {
                let key = SubjectKey::new(id, &bytes).ok_or_else(|| {
                    SealError::Store(format!("key {id} in the key store is damaged"))
                })?;
                Ok(Some(KeyState::Live(Arc::new(key))))
            }
        }
    }

    /// Makes the next `ISSUE_AHEAD` keys, numbered after every key the
    /// store holds, in one durable transaction that takes its write lock
    /// first: two processes (or nodes) never make or hand out the same id.
    /// Returns their ids.
    fn make_keys(&self) -> Result<Vec<Arc<SubjectKey>>, SealError> {
        let made = self.write("making keys", |db| {
            let from: i64 = db
                .query_row("SELECT COALESCE(MAX(key_id), 0) + 1 FROM data_keys", [], |row| {
                    row.get(0)
                })
                .map_err(store_error("making keys"))?;
            let from =
                u64::try_from(from).map_err(|_| SealError::Store(format!("key id {from}")))?;
            let mut insert = db
                .prepare_cached("INSERT INTO data_keys (key_id, key) VALUES (?1, ?2)")
                .map_err(store_error("making keys"))?;
            let bytes = SubjectKey::generate_many(ISSUE_AHEAD as usize)?;
            let mut made = Vec::with_capacity(ISSUE_AHEAD as usize);
            for (id, key) in (from..).zip(bytes.chunks_exact(events::seal::KEY_LEN)) {
                let row = i64::try_from(id).map_err(|_| SealError::MissingKey(id))?;
                insert.execute(params![row, key]).map_err(store_error("making keys"))?;
                made.extend(SubjectKey::new(id, key).map(Arc::new));
            }
            Ok(made)
        })?;
        // This commit moved the file's counter: take it in now (dropping
        // the cache if anything else changed too), so the keys just made
        // stay cached past it.
        self.revalidate()?;
        for key in &made {
            self.remember(key.id, KeyState::Live(key.clone()));
        }
        Ok(made)
    }
}

impl Keyring for KeyStore {
    fn key(&self, id: u64) -> Result<KeyState, SealError> {
        if self.forgotten.read().is_ok_and(|forgotten| forgotten.contains(&id)) {
            return Ok(KeyState::Erased);
        }
        self.revalidate()?;
        if let Some(state) = self.cached(id) {
            return Ok(state);
        }
        let state = self.load(id)?.ok_or(SealError::MissingKey(id))?;
        self.remember(id, state.clone());
        Ok(state)
    }
}

impl KeySource for KeyStore {
    fn fresh(&self) -> Result<Arc<SubjectKey>, SealError> {
        let mut lease =
            self.lease.lock().map_err(|_| SealError::Store("the key lease is poisoned".into()))?;
        if lease.is_empty() {
            *lease = self.make_keys()?;
            // Handed out from the end: the lowest id first.
            lease.reverse();
        }
        lease.pop().ok_or_else(|| SealError::Store("no key was made".to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issued_keys_are_durable_and_read_back_by_another_handle() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("rollcall.db");
        let keys = KeyStore::new(&db);
        keys.bind(Some("db-1")).unwrap();
        let first = keys.fresh().unwrap();
        assert_eq!(first.id, 1);
        assert_eq!(keys.fresh().unwrap().id, 2);
        // Another handle (another process) gets ids of its own.
        let other = KeyStore::new(&db);
        other.bind(Some("db-1")).unwrap();
        assert_eq!(other.fresh().unwrap().id, ISSUE_AHEAD + 1);
        // Issued ahead, in one transaction: the next ones are there already.
        let rows: i64 = keys
            .with_db(|db| {
                Ok(db.query_row("SELECT count(*) FROM data_keys", [], |row| row.get(0)).unwrap())
            })
            .unwrap();
        assert_eq!(rows, 2 * ISSUE_AHEAD as i64);
        let reader = KeyStore::read_only(&db);
        reader.bind(Some("db-1")).unwrap();
        let KeyState::Live(read) = reader.key(1).unwrap() else { unreachable!("live") };
        let binding = events::seal::Binding { tenant: "t", stream: "s", version: 1, field: "f" };
        let sealed = events::seal::seal(&first, binding, "\"x\"").unwrap();
        assert_eq!(
            events::seal::open(&reader, binding, &sealed),
            Ok(events::seal::Opened::Value(serde_json::json!("x")))
        );
        assert_eq!(read.id, 1);
        let beyond = 2 * ISSUE_AHEAD + 1;
        assert_eq!(reader.key(beyond).unwrap_err(), SealError::MissingKey(beyond));
    }

    #[test]
    fn without_a_key_store_file_a_reader_says_where_it_looked() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("rollcall.db");
        let reader = KeyStore::read_only(&db);
        reader.bind(Some("db-1")).unwrap();
        let error = reader.key(1).unwrap_err().to_string();
        assert!(error.contains("rollcall.db.keys"), "{error}");
        assert!(!KeyStore::path_for(&db).exists(), "a reader creates nothing");
    }
}
