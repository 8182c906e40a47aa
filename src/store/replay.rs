//! Folding the log again, with the same `projections::apply` the writer
//! uses: into scratch tables to see a tenant as of any past position
//! (`as_of`), to compare with the live projections (`fingerprint`,
//! `rollcall verify --projections`), and to rebuild them (`rebuild`).
//!
//! The live tables are only ever replaced whole, in one transaction, by
//! `rebuild`: a reader sees the old projection or the new one, never half
//! of each. Nothing here appends an event.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use events::{Event, EventLog, Position, RecordedEvent};
use projections::directory::query;
use projections::directory::schema::ResourceKind;
use projections::directory::store::{self as directory, ResourceRow};
use projections::members;
use rusqlite::types::ValueRef;
use rusqlite::{Connection, OptionalExtension, params};
use serde::Serialize;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::error::Error;
use crate::store::Store;

use super::snapshots::{Capture, Snapshots, Through};

/// The projections a rebuild can replace, and their tables. `token_usage`
/// is not among them: it is telemetry, not folded from events.
pub const PROJECTIONS: &[(&str, &[&str])] = &[
    ("tenancy", &["tenants", "tokens", "oauth_clients"]),
    ("directory", &["scim_resources", "scim_members"]),
    (
        "members",
        &[
            "members",
            "member_settings",
            "member_checkpoints",
            "member_deferred",
            "sync_runs",
            "erasures",
        ],
    ),
    ("audit", &["audit_movements", "audit_causes"]),
    ("feed", &["feed_rows"]),
    ("webhooks", &["webhooks"]),
];

/// Every folded table, in a fixed order.
pub fn all_tables() -> Vec<&'static str> {
    PROJECTIONS.iter().flat_map(|(_, tables)| tables.iter().copied()).collect()
}

fn storage(context: &'static str) -> impl FnOnce(rusqlite::Error) -> Error {
    move |error| Error::Internal(format!("{context}: {error}"))
}

/// A connection with the projection tables and the SQL functions they use;
/// returns the projections still to be folded (see `schema::migrate`).
fn prepare(connection: &Connection) -> Result<Vec<String>, Error> {
    projections::functions::register(connection).map_err(storage("registering SQL functions"))?;
    Ok(projections::schema::migrate(connection)?)
}

/// Empty projection tables in memory, without their secondary indexes
/// (see [`without_indexes`]).
pub fn scratch() -> Result<Connection, Error> {
    let connection = Connection::open_in_memory().map_err(storage("opening scratch tables"))?;
    prepare(&connection)?;
    without_indexes(&connection, None)?;
    Ok(connection)
}

/// One secondary index of a folded table, as the schema declares it.
struct Index {
    name: String,
    table: String,
    /// The `CREATE INDEX` statement, as `sqlite_schema` keeps it.
    sql: String,
}

/// The secondary indexes of every folded table, read once from the schema
/// itself (`projections::schema::migrate` into an empty connection), so a
/// new index needs no second list here.
fn folded_indexes() -> Result<&'static [Index], Error> {
    static INDEXES: std::sync::OnceLock<Vec<Index>> = std::sync::OnceLock::new();
    if let Some(indexes) = INDEXES.get() {
        return Ok(indexes);
    }
    let connection = Connection::open_in_memory().map_err(storage("opening scratch tables"))?;
    prepare(&connection)?;
    let tables = all_tables();
    let mut statement = connection
        .prepare(
            "SELECT name, tbl_name, sql FROM sqlite_schema \
             WHERE type = 'index' AND sql IS NOT NULL ORDER BY name",
        )
        .map_err(storage("reading the projections' indexes"))?;
    let indexes = statement
        .query_map([], |row| Ok(Index { name: row.get(0)?, table: row.get(1)?, sql: row.get(2)? }))
        .and_then(|rows| rows.collect::<Result<Vec<Index>, _>>())
        .map_err(storage("reading the projections' indexes"))?
        .into_iter()
        .filter(|index| tables.contains(&index.table.as_str()))
        .collect();
    Ok(INDEXES.get_or_init(|| indexes))
}

/// Drops the secondary indexes of `tables` (of every folded table with
/// `None`). A fold reads and writes its tables by primary key only; an
/// index serves the readers after it, and one `CREATE INDEX` (a sort) at
/// the end costs less than keeping it through every update of a fold
/// (`perf` put half of a cold as-of in SQLite maintaining the member and
/// directory tables and their indexes).
fn without_indexes(connection: &Connection, tables: Option<&[&str]>) -> Result<(), Error> {
    drop_indexes(connection, folded_indexes()?, tables).map_err(storage("dropping an index"))
}

/// Creates the secondary indexes of `tables` (of every folded table with
/// `None`) that [`without_indexes`] dropped.
fn with_indexes(connection: &Connection, tables: Option<&[&str]>) -> Result<(), Error> {
    create_indexes(connection, folded_indexes()?, tables).map_err(storage("creating an index"))
}

fn drop_indexes(
    connection: &Connection,
    indexes: &[Index],
    tables: Option<&[&str]>,
) -> rusqlite::Result<()> {
    each_index(connection, indexes, tables, |index| {
        format!("DROP INDEX IF EXISTS \"{}\"", index.name)
    })
}

fn create_indexes(
    connection: &Connection,
    indexes: &[Index],
    tables: Option<&[&str]>,
) -> rusqlite::Result<()> {
    each_index(connection, indexes, tables, |index| index.sql.clone())
}

/// Runs `statement` of each of `indexes` on one of `tables` (every one
/// with `None`).
fn each_index(
    connection: &Connection,
    indexes: &[Index],
    tables: Option<&[&str]>,
    statement: impl Fn(&Index) -> String,
) -> rusqlite::Result<()> {
    for index in indexes {
        if tables.is_none_or(|tables| tables.contains(&index.table.as_str())) {
            connection.execute_batch(&statement(index))?;
        }
    }
    Ok(())
}

/// Events folded per transaction: large enough that commits cost nothing,
/// small enough that an interrupted rebuild loses little.
const FOLD_CHUNK_EVENTS: u64 = 20_000;

/// Which events a fold reads: after `after` up to `until`, of one tenant
/// or all.
#[derive(Debug, Clone, Copy)]
pub struct Span<'t> {
    pub after: Position,
    pub until: Position,
    pub tenant: Option<&'t str>,
}

/// Events a fold's reader hands over at a time, and how many such batches
/// it may hold ahead of the applying (a bound on memory: a few thousand
/// decoded events).
const READ_AHEAD_EVENTS: usize = 512;
const READ_AHEAD_BATCHES: usize = 4;

/// What the reader of a fold hands over: events read, re-hashed where the
/// log does so, and decoded.
type Decoded = Result<Vec<(RecordedEvent, Event)>, Error>;

/// Folds the events of `span` into `connection` with `apply`,
/// `FOLD_CHUNK_EVENTS` per transaction; `chunk_done` runs inside each
/// transaction before it commits (a rebuild records its progress there) and
/// `progress` after. Returns the last position folded.
///
/// Reading the log (and re-hashing what it reads) and decoding the
/// payloads run on a thread of their own, a few batches ahead of this one,
/// which only applies: in order, on the one connection, as before. On two
/// cores the two halves overlap instead of adding up.
pub fn fold(
    store: &Store,
    connection: &Connection,
    apply: projections::Apply,
    span: Span<'_>,
    chunk_done: &mut dyn FnMut(&Connection, Position) -> Result<(), Error>,
    progress: &mut dyn FnMut(Position),
) -> Result<Position, Error> {
    let Span { after, until, tenant } = span;
    let events = store.log().sqlite_for("a fold of the log")?.read_forward(after, tenant);
    let keys = store.keys();
    std::thread::scope(|scope| {
        let (sender, batches) = std::sync::mpsc::sync_channel::<Decoded>(READ_AHEAD_BATCHES);
        std::thread::Builder::new()
            .name("rollcall-fold-read".to_owned())
            .spawn_scoped(scope, move || read_ahead(events, until, keys, &sender))
            .map_err(|error| Error::Internal(format!("starting a fold's reader: {error}")))?;
        // `batches` moves into the applying: when it stops early (an error),
        // the reader's next send fails and it stops too.
        apply_batches(connection, apply, batches, after, chunk_done, progress)
    })
}

/// The reading half of [`fold`]: events after the span's start up to
/// `until`, decoded, in batches. An error goes after the events before it,
/// and ends the reading.
fn read_ahead(
    events: impl Iterator<Item = Result<RecordedEvent, events::LogError>>,
    until: Position,
    keys: &dyn events::seal::Keyring,
    sender: &std::sync::mpsc::SyncSender<Decoded>,
) {
    let mut batch = Vec::with_capacity(READ_AHEAD_EVENTS);
    for recorded in events {
        let decoded = recorded.map_err(Error::from).and_then(|recorded| {
            if recorded.position > until {
                return Ok(None);
            }
            let event = recorded.decode(keys)?;
            Ok(Some((recorded, event)))
        });
        match decoded {
            Ok(Some(pair)) => batch.push(pair),
            Ok(None) => break,
            Err(error) => {
                if !batch.is_empty() && sender.send(Ok(std::mem::take(&mut batch))).is_err() {
                    return;
                }
                let _ = sender.send(Err(error));
                return;
            }
        }
        if batch.len() == READ_AHEAD_EVENTS
            && sender
                .send(Ok(std::mem::replace(&mut batch, Vec::with_capacity(READ_AHEAD_EVENTS))))
                .is_err()
        {
            return;
        }
    }
    if !batch.is_empty() {
        let _ = sender.send(Ok(batch));
    }
}

/// The applying half of [`fold`].
fn apply_batches(
    connection: &Connection,
    apply: projections::Apply,
    batches: std::sync::mpsc::Receiver<Decoded>,
    after: Position,
    chunk_done: &mut dyn FnMut(&Connection, Position) -> Result<(), Error>,
    progress: &mut dyn FnMut(Position),
) -> Result<Position, Error> {
    let mut last = after;
    let mut in_chunk = 0u64;
    connection.execute_batch("BEGIN").map_err(storage("folding"))?;
    let folded = (|| {
        for batch in batches {
            for (recorded, event) in batch? {
                apply(connection, &recorded, &event)?;
                last = recorded.position;
                in_chunk += 1;
                if in_chunk == FOLD_CHUNK_EVENTS {
                    chunk_done(connection, last)?;
                    connection.execute_batch("COMMIT; BEGIN").map_err(storage("folding"))?;
                    progress(last);
                    in_chunk = 0;
                }
            }
        }
        chunk_done(connection, last)
    })();
    match folded {
        Ok(()) => {
            connection.execute_batch("COMMIT").map_err(storage("folding"))?;
            progress(last);
            Ok(last)
        }
        Err(error) => {
            let _ = connection.execute_batch("ROLLBACK");
            Err(error)
        }
    }
}

/// A content hash of each table: every row in a total order, every value
/// with its type and length, so equal hashes mean equal tables.
pub fn fingerprint(
    connection: &Connection,
    tables: &[&str],
) -> Result<BTreeMap<String, String>, Error> {
    let mut hashes = BTreeMap::new();
    for table in tables {
        let columns = columns(connection, table)?;
        let order: Vec<String> = (1..=columns.len()).map(|index| index.to_string()).collect();
        let sql =
            format!("SELECT {} FROM {table} ORDER BY {}", columns.join(", "), order.join(", "));
        let mut statement = connection.prepare(&sql).map_err(storage("reading a projection"))?;
        let mut rows = statement.query([]).map_err(storage("reading a projection"))?;
        let mut hasher = Sha256::new();
        let mut count = 0u64;
        while let Some(row) = rows.next().map_err(storage("reading a projection"))? {
            count += 1;
            for index in 0..columns.len() {
                match row.get_ref(index).map_err(storage("reading a projection"))? {
                    ValueRef::Null => hasher.update([0u8]),
                    ValueRef::Integer(value) => {
                        hasher.update([1u8]);
                        hasher.update(value.to_be_bytes());
                    }
                    ValueRef::Real(value) => {
                        hasher.update([2u8]);
                        hasher.update(value.to_be_bytes());
                    }
                    ValueRef::Text(bytes) | ValueRef::Blob(bytes) => {
                        hasher.update([3u8]);
                        hasher.update((bytes.len() as u64).to_be_bytes());
                        hasher.update(bytes);
                    }
                }
            }
        }
        hasher.update(count.to_be_bytes());
        let digest: [u8; 32] = hasher.finalize().into();
        hashes.insert(
            (*table).to_owned(),
            format!("{} rows, {}", count, events::hash::to_hex(&digest)),
        );
    }
    Ok(hashes)
}

fn columns(connection: &Connection, table: &str) -> Result<Vec<String>, Error> {
    let mut statement = connection
        .prepare("SELECT name FROM pragma_table_info(?1) ORDER BY cid")
        .map_err(storage("reading a table's columns"))?;
    let names = statement
        .query_map([table], |row| row.get::<_, String>(0))
        .map_err(storage("reading a table's columns"))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(storage("reading a table's columns"))?;
    Ok(names)
}

/// What `verify --projections` found.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Drift {
    /// The log position both sides were compared at.
    pub position: Position,
    /// Each table: live fingerprint, refolded fingerprint.
    pub tables: BTreeMap<String, (String, String)>,
    /// The tables whose contents differ.
    pub drifted: Vec<String>,
}

/// Refolds the whole log into scratch tables and compares them with the
/// live projections at the same position.
pub fn check_projections(store: &Store) -> Result<Drift, Error> {
    // One read transaction on the live file: its head and its tables agree,
    // because the writer changes both in one transaction.
    let (position, live) = {
        let reader = store.log().sqlite_for("a check of the projections")?.reader()?;
        reader.execute_batch("BEGIN").map_err(storage("reading the projections"))?;
        let read = (|| {
            let head: i64 = reader
                .query_row("SELECT COALESCE(MAX(position), 0) FROM events", [], |row| row.get(0))
                .map_err(storage("reading the head"))?;
            Ok::<_, Error>((
                Position::try_from(head).unwrap_or(0),
                fingerprint(&reader, &all_tables())?,
            ))
        })();
        let _ = reader.execute_batch("COMMIT");
        read?
    };
    let scratch = scratch()?;
    fold(
        store,
        &scratch,
        projections::apply,
        Span { after: 0, until: position, tenant: None },
        &mut |_, _| Ok(()),
        &mut |_| {},
    )?;
    let refolded = fingerprint(&scratch, &all_tables())?;
    let mut tables = BTreeMap::new();
    let mut drifted = Vec::new();
    for table in all_tables() {
        let live = live.get(table).cloned().unwrap_or_default();
        let refolded = refolded.get(table).cloned().unwrap_or_default();
        if live != refolded {
            drifted.push(table.to_owned());
        }
        tables.insert(table.to_owned(), (live, refolded));
    }
    Ok(Drift { position, tables, drifted })
}

/// A tenant's SCIM directory and member directory as of one position.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct AsOf {
    pub position: Position,
    /// When the event at `position` was recorded (none before the first).
    pub recorded_at: Option<String>,
    pub users: Vec<Value>,
    pub groups: Vec<Value>,
    pub members: Vec<Value>,
}

/// What an as-of can show.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum View {
    Users,
    Groups,
    Members,
}

impl View {
    pub fn parse(text: &str) -> Option<View> {
        match text {
            "users" => Some(View::Users),
            "groups" => Some(View::Groups),
            "members" => Some(View::Members),
            _ => None,
        }
    }
}

/// A tenant folded to a past position, read a page at a time.
#[derive(Debug)]
pub struct Folded {
    pub position: Position,
    /// When the event at `position` was recorded (none before the first).
    pub recorded_at: Option<String>,
    tenant_id: String,
    scratch: Connection,
}

impl Folded {
    /// The tables its readers read.
    const READS: &'static [&'static str] = &["scim_resources", "scim_members", "members"];

    /// How many users, groups and members the tenant had.
    pub fn counts(&self) -> Result<(u64, u64, u64), Error> {
        let count = |sql: &str| -> Result<u64, Error> {
            self.scratch
                .query_row(sql, [&self.tenant_id], |row| row.get::<_, i64>(0))
                .map(|count| u64::try_from(count).unwrap_or(0))
                .map_err(storage("counting scratch rows"))
        };
        Ok((
            count("SELECT count(*) FROM scim_resources WHERE tenant_id = ?1 AND kind = 'User'")?,
            count("SELECT count(*) FROM scim_resources WHERE tenant_id = ?1 AND kind = 'Group'")?,
            count("SELECT count(*) FROM members WHERE tenant_id = ?1")?,
        ))
    }

    /// One page of a view, in a fixed order (all of it without `limit`),
    /// read with the projections' own readers from the scratch tables:
    /// resources in creation order, a page's groups with their members in
    /// one query, members in name order as the admin API shows them.
    pub fn page(
        &self,
        view: View,
        offset: usize,
        limit: Option<usize>,
    ) -> Result<Vec<Value>, Error> {
        let tenant_id = self.tenant_id.as_str();
        let offset = u64::try_from(offset).unwrap_or(u64::MAX);
        let limit = limit.map_or(u64::MAX, |limit| u64::try_from(limit).unwrap_or(u64::MAX));
        let resources = |kind: ResourceKind| -> Result<Vec<ResourceRow>, Error> {
            query::search(&self.scratch, tenant_id, kind, None, offset, limit)
                .map(|page| page.resources)
                .map_err(|error| Error::Internal(format!("reading scratch tables: {error}")))
        };
        match view {
            View::Users => Ok(resources(ResourceKind::User)?.iter().map(resource_view).collect()),
            View::Groups => {
                let groups = resources(ResourceKind::Group)?;
                let ids: Vec<&str> = groups.iter().map(|group| group.id.as_str()).collect();
                let mut members = directory::members_of_groups(&self.scratch, tenant_id, &ids)?;
                Ok(groups
                    .iter()
                    .map(|group| {
                        let mut view = resource_view(group);
                        let of_group: Vec<Value> = members
                            .remove(&group.id)
                            .unwrap_or_default()
                            .into_iter()
                            .map(|member| json!({"value": member.member_id, "type": member.kind.as_str()}))
                            .collect();
                        if let Some(object) = view.as_object_mut() {
                            object.insert("members".to_owned(), Value::Array(of_group));
                        }
                        view
                    })
                    .collect())
            }
            View::Members => {
                let query =
                    members::MemberQuery { offset, limit, ..members::MemberQuery::default() };
                let (_, page) = members::list_members(&self.scratch, tenant_id, &query)?;
                Ok(page.iter().map(projections::members::MemberRow::view).collect())
            }
        }
    }

    /// Every view whole.
    pub fn everything(&self) -> Result<AsOf, Error> {
        Ok(AsOf {
            position: self.position,
            recorded_at: self.recorded_at.clone(),
            users: self.page(View::Users, 0, None)?,
            groups: self.page(View::Groups, 0, None)?,
            members: self.page(View::Members, 0, None)?,
        })
    }
}

/// Folds the tenant's events up to `position` into scratch tables and
/// reads them back; never looks at the live projections. It starts from
/// the nearest snapshot at or before `position` (the fold that made it
/// stopped there, so going on from it is the same fold), and keeps a
/// snapshot at each boundary it folds past.
pub fn as_of(
    store: &Store,
    tenant_id: &str,
    position: Position,
    snapshots: &Snapshots,
) -> Result<Folded, Error> {
    // Past the head nothing changes: fold to the head, not through every
    // snapshot boundary up to a position that does not exist.
    let position = position.min(store.log().head()?);
    let (mut scratch, mut through) = match snapshots.load(store, tenant_id, position)? {
        Some((connection, through)) => {
            projections::functions::register(&connection)
                .map_err(storage("registering SQL functions"))?;
            // A snapshot from a build that folded with its indexes.
            without_indexes(&connection, None)?;
            (connection, through)
        }
        None => (scratch()?, Through { position: 0, last_event: 0 }),
    };
    // One tenant's chain without the system chain that created it: its
    // tokens would name a tenant the scratch never saw. No journal: a
    // failed fold throws the scratch away, it never rolls back.
    scratch
        .execute_batch("PRAGMA foreign_keys=OFF; PRAGMA journal_mode=OFF")
        .map_err(storage("preparing scratch tables"))?;
    let fold_to = |scratch: &Connection, through: Through, until: Position| {
        let last = fold(
            store,
            scratch,
            projections::apply_directories,
            Span { after: through.position, until, tenant: Some(tenant_id) },
            &mut |_, _| Ok(()),
            &mut |_| {},
        )?;
        Ok::<_, Error>(Through {
            position: until,
            last_event: if last > through.position { last } else { through.last_event },
        })
    };
    // Snapshots are compressed and written on a thread of their own while
    // the fold goes on (a cold fold of a million events wrote 44 of them,
    // 3.3 GiB before compression: half its time when done in line). At
    // most one image waits while another is written, so memory stays at
    // the scratch tables plus two images of them.
    let boundaries = snapshots.boundaries(through.position, position);
    std::thread::scope(|scope| {
        let (images, queued) = std::sync::mpsc::sync_channel::<Capture>(1);
        if !boundaries.is_empty() {
            scope.spawn(move || {
                for capture in queued {
                    capture.write();
                }
            });
        }
        for boundary in boundaries {
            through = fold_to(&scratch, through, boundary)?;
            if let Some(capture) = snapshots.capture(store, &mut scratch, tenant_id, through) {
                // The writer only stops when this sender is dropped.
                let _ = images.send(capture);
            }
        }
        fold_to(&scratch, through, position).map(drop)
    })?;
    // The readers below are the live projections' own, and use their
    // indexes; only the tables they read get theirs back.
    with_indexes(&scratch, Some(Folded::READS))?;
    let recorded_at = match position {
        0 => None,
        position => store.log().read_at(tenant_id, position)?.map(|event| event.recorded_at),
    };
    Ok(Folded { position, recorded_at, tenant_id: tenant_id.to_owned(), scratch })
}

/// A user or group as an as-of shows it: its row, document and all.
fn resource_view(row: &ResourceRow) -> Value {
    json!({
        "id": row.id,
        "external_id": row.external_id,
        "name": directory::unique_name(row.kind, &row.document),
        "document": row.document,
        "created": row.created,
        "last_modified": row.last_modified,
        "version": row.version,
    })
}

/// Where a rebuild folds before it swaps: beside the database, so an
/// interrupted rebuild resumes from what it folded.
pub fn scratch_path(db: &Path) -> PathBuf {
    let mut path = db.as_os_str().to_owned();
    path.push(".rebuild");
    PathBuf::from(path)
}

/// How a rebuild went.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Rebuilt {
    pub projections: Vec<String>,
    /// Where the scratch fold started (0: from the beginning).
    pub resumed_from: Position,
    /// How far the tables now reflect the log.
    pub position: Position,
    /// False when `max_events` stopped it before the head: run it again.
    pub complete: bool,
}

/// Refolds the log into a scratch file beside the database (resuming what
/// an interrupted rebuild left there), then replaces the chosen
/// projections' tables with it in one transaction. `max_events` folds at
/// most that many now and stops, to be resumed. `progress` hears the
/// positions folded, out of the head.
pub fn rebuild(
    store: &Store,
    db: &Path,
    projections: &[&str],
    max_events: Option<u64>,
    progress: &mut dyn FnMut(Position, Position),
) -> Result<Rebuilt, Error> {
    let tables: Vec<&str> = PROJECTIONS
        .iter()
        .filter(|(name, _)| projections.contains(name))
        .flat_map(|(_, tables)| tables.iter().copied())
        .collect();
    let path = scratch_path(db);
    let scratch = Connection::open(&path).map_err(storage("opening the rebuild's scratch file"))?;
    scratch
        .execute_batch(
            // A large page cache: the fold inserts into every index of every
            // projection table, all over the file. No checkpoints: the
            // file is read once, by the swap, and then deleted, so copying
            // the WAL back into it (and the fsyncs that go with that) is
            // wasted; each chunk's commit is still atomic in the WAL.
            "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL; PRAGMA cache_size=-262144; \
             PRAGMA wal_autocheckpoint=0; \
             CREATE TABLE IF NOT EXISTS rebuild_progress (position INTEGER NOT NULL, hash BLOB NOT NULL);",
        )
        .map_err(storage("preparing the rebuild's scratch file"))?;
    // Nor a checkpoint when it closes: that would copy the whole WAL into
    // a file about to be deleted (an interrupted fold's WAL is read back
    // at the next open all the same).
    scratch
        .set_db_config(rusqlite::config::DbConfig::SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE, true)
        .map_err(storage("preparing the rebuild's scratch file"))?;
    if !prepare(&scratch)?.is_empty() {
        // Left by an older build that lacked some tables: its fold is
        // incomplete, start again.
        drop(scratch);
        remove_scratch(&path);
        return rebuild(store, db, projections, max_events, progress);
    }
    // Only the swap reads the scratch tables, each whole in key order.
    without_indexes(&scratch, None)?;
    // Resume only a fold of this very log: the event it stopped at must
    // still be there with the same hash.
    let saved: Option<(i64, Vec<u8>)> = scratch
        .query_row("SELECT position, hash FROM rebuild_progress", [], |row| {
            Ok((row.get(0)?, row.get(1)?))
        })
        .optional()
        .map_err(storage("reading the rebuild's progress"))?;
    let mut resumed_from = 0;
    if let Some((position, hash)) = saved {
        let position = Position::try_from(position).unwrap_or(0);
        match store.log().sqlite_for("a rebuild")?.read_at(position)? {
            Some(event) if event.hash.as_slice() == hash.as_slice() => resumed_from = position,
            _ => {
                drop(scratch);
                remove_scratch(&path);
                return rebuild(store, db, projections, max_events, progress);
            }
        }
    }
    let head = store.log().head()?;
    let until = match max_events {
        Some(max) => head.min(resumed_from.saturating_add(max)),
        None => head,
    };
    let log = store.log().sqlite_for("a rebuild")?;
    let mut record_progress = |connection: &Connection, position: Position| -> Result<(), Error> {
        if position == 0 {
            return Ok(());
        }
        let hash = log.read_at(position)?.map(|event| event.hash.to_vec()).unwrap_or_default();
        connection
            .execute_batch("DELETE FROM rebuild_progress")
            .and_then(|()| {
                connection.execute(
                    "INSERT INTO rebuild_progress (position, hash) VALUES (?1, ?2)",
                    params![i64::try_from(position).unwrap_or(i64::MAX), hash],
                )
            })
            .map(drop)
            .map_err(storage("recording the rebuild's progress"))
    };
    let folded = fold(
        store,
        &scratch,
        projections::apply,
        Span { after: resumed_from, until, tenant: None },
        &mut record_progress,
        &mut |position| progress(position, head),
    )?;
    if folded < head {
        return Ok(Rebuilt {
            projections: projections.iter().map(|name| (*name).to_owned()).collect(),
            resumed_from,
            position: folded,
            complete: false,
        });
    }

    // The swap. ATTACH must happen outside a transaction. The live
    // connection's read snapshot fixes a head; the scratch catches up with
    // whatever the log gained up to it; then the tables are replaced in
    // that same transaction. If a writer committed after the snapshot, the
    // upgrade to a write fails (SQLite will not write over a stale read)
    // and the swap is tried again from a new snapshot.
    let live = Connection::open(db).map_err(storage("opening the database"))?;
    live.busy_timeout(std::time::Duration::from_secs(30))
        .map_err(storage("opening the database"))?;
    prepare(&live)?;
    // Tables are emptied and refilled in turn: a tenant's row is briefly
    // gone while its tokens are not. The rebuilt rows were folded with
    // foreign keys on, so the end state satisfies them.
    live.execute_batch("PRAGMA foreign_keys=OFF").map_err(storage("opening the database"))?;
    live.execute("ATTACH DATABASE ?1 AS rebuilt", [path.to_string_lossy()])
        .map_err(storage("attaching the rebuilt tables"))?;
    let mut attempts = 0;
    let mut folded = folded;
    let position = loop {
        attempts += 1;
        live.execute_batch("BEGIN").map_err(storage("reading the database"))?;
        let swapped = (|| {
            let head_now: i64 = live
                .query_row("SELECT COALESCE(MAX(position), 0) FROM main.events", [], |row| {
                    row.get(0)
                })
                .map_err(storage("reading the head"))?;
            let head_now = Position::try_from(head_now).unwrap_or(0);
            folded = fold(
                store,
                &scratch,
                projections::apply,
                Span { after: folded, until: head_now, tenant: None },
                &mut record_progress,
                &mut |_| {},
            )?;
            // A bulk load: the tables refilled in key order without their
            // secondary indexes, each index then built by one sort, instead
            // of an insert into every index, all over it, per row.
            let indexes = folded_indexes()?;
            drop_indexes(&live, indexes, Some(&tables)).map_err(SwapError::Sql)?;
            for table in &tables {
                let columns = columns(&live, table)?.join(", ");
                live.execute_batch(&format!(
                    "DELETE FROM main.{table}; INSERT INTO main.{table} ({columns}) SELECT {columns} FROM rebuilt.{table};"
                ))
                .map_err(SwapError::Sql)?;
            }
            create_indexes(&live, indexes, Some(&tables)).map_err(SwapError::Sql)?;
            for projection in projections {
                live.execute("DELETE FROM main.projections_pending WHERE name = ?1", [projection])
                    .map_err(SwapError::Sql)?;
            }
            live.execute_batch("COMMIT").map_err(SwapError::Sql)?;
            Ok::<_, SwapError>(head_now)
        })();
        match swapped {
            Ok(position) => break position,
            Err(SwapError::Sql(error)) if is_busy(&error) && attempts < SWAP_ATTEMPTS => {
                let _ = live.execute_batch("ROLLBACK");
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
            Err(error) => {
                let _ = live.execute_batch("ROLLBACK");
                return Err(match error {
                    SwapError::Sql(error) => storage("replacing the projections' tables")(error),
                    SwapError::Other(error) => error,
                });
            }
        }
    };
    let _ = live.execute_batch("DETACH DATABASE rebuilt");
    drop(scratch);
    remove_scratch(&path);
    Ok(Rebuilt {
        projections: projections.iter().map(|name| (*name).to_owned()).collect(),
        resumed_from,
        position,
        complete: true,
    })
}

/// How many times a swap is tried while writers keep committing.
const SWAP_ATTEMPTS: u32 = 100;

enum SwapError {
    Sql(rusqlite::Error),
    Other(Error),
}

impl From<Error> for SwapError {
    fn from(error: Error) -> SwapError {
        SwapError::Other(error)
    }
}

fn is_busy(error: &rusqlite::Error) -> bool {
    matches!(
        error.sqlite_error_code(),
        Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked)
    )
}

fn remove_scratch(path: &Path) {
    for suffix in ["", "-wal", "-shm"] {
        let mut file = path.as_os_str().to_owned();
        file.push(suffix);
        let _ = std::fs::remove_file(PathBuf::from(file));
    }
}
