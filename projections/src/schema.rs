//! The projection tables, created beside the events table.
//!
//! Projection tables hold nothing the log does not: dropping them and
//! folding the log again must give the same rows. The exceptions are
//! `token_usage`, `request_log`, `audit_snapshot_key`, `database_identity`
//! and the `console_*` tables, operational state (when a token was last
//! used; each SCIM request as answered, failures included; the as-of
//! cache's signing key; which database this is; console sessions and the
//! last chain check) that is
//! deliberately not an event: recording every request in the log would
//! drown the facts auditors need. A rebuild leaves them alone.

use events::db::{Db, DbError, Dialect};
use serde_json::{Map, Value};

use crate::ProjectionError;
use crate::members::search_text;

const CREATE: &str = r#"
CREATE TABLE IF NOT EXISTS tenants (
    tenant_id TEXT PRIMARY KEY,
    name TEXT NOT NULL UNIQUE COLLATE NOCASE,
    created_at TEXT NOT NULL,
    position INTEGER NOT NULL
) STRICT;

CREATE TABLE IF NOT EXISTS tokens (
    token_id TEXT PRIMARY KEY,
    tenant_id TEXT NOT NULL REFERENCES tenants (tenant_id),
    scope TEXT NOT NULL,
    secret_sha256 BLOB NOT NULL UNIQUE,
    label TEXT,
    created_at TEXT NOT NULL,
    expires_at TEXT,
    revoked_at TEXT,
    position INTEGER NOT NULL,
    client_id TEXT
) STRICT;

CREATE INDEX IF NOT EXISTS tokens_by_client ON tokens (client_id) WHERE client_id IS NOT NULL;

-- OAuth 2.0 clients (client-credentials grant), by the hash of their secret.
CREATE TABLE IF NOT EXISTS oauth_clients (
    client_id TEXT PRIMARY KEY,
    tenant_id TEXT NOT NULL REFERENCES tenants (tenant_id),
    secret_sha256 BLOB NOT NULL,
    label TEXT,
    created_at TEXT NOT NULL,
    revoked_at TEXT,
    position INTEGER NOT NULL
) STRICT;

CREATE INDEX IF NOT EXISTS tokens_by_tenant ON tokens (tenant_id, created_at);

CREATE TABLE IF NOT EXISTS token_usage (
    token_id TEXT PRIMARY KEY,
    last_used_at TEXT NOT NULL
) STRICT;

-- SCIM requests of admitted tokens that wrote or failed, as answered:
-- telemetry, kept to a bounded number of rows (see `requests`). One index,
-- by tenant: each costs the writer a B-tree insert per request, and a
-- tenant's newest rows (the console's provisioning log, the lookup of one
-- request id) are all the reads need.
CREATE TABLE IF NOT EXISTS request_log (
    seq INTEGER PRIMARY KEY,
    tenant_id TEXT NOT NULL,
    request_id TEXT NOT NULL,
    at TEXT NOT NULL,
    token_id TEXT NOT NULL,
    method TEXT NOT NULL,
    target TEXT NOT NULL,
    status INTEGER NOT NULL,
    duration_ms INTEGER NOT NULL,
    user_agent TEXT,
    error TEXT
) STRICT;

CREATE INDEX IF NOT EXISTS request_log_by_tenant ON request_log (tenant_id, seq);
-- Failures are what an admin opens the log for; this index costs only
-- failed requests an insert.
CREATE INDEX IF NOT EXISTS request_log_failures ON request_log (tenant_id, seq)
    WHERE status >= 400;

-- Console sessions and one-time sign-in links, by the SHA-256 of their
-- secret (the cookie or link itself is never stored): operational state,
-- not events. A session acts as the token it signed in with, so the
-- token's revocation or expiry ends it.
CREATE TABLE IF NOT EXISTS console_sessions (
    secret_sha256 BLOB PRIMARY KEY,
    tenant_id TEXT NOT NULL,
    token_id TEXT NOT NULL,
    csrf TEXT NOT NULL,
    created_at TEXT NOT NULL,
    expires_at TEXT NOT NULL
) STRICT;

CREATE TABLE IF NOT EXISTS console_links (
    secret_sha256 BLOB PRIMARY KEY,
    tenant_id TEXT NOT NULL,
    token_id TEXT NOT NULL,
    expires_at TEXT NOT NULL
) STRICT;

-- The last chain check the console ran for a tenant.
CREATE TABLE IF NOT EXISTS console_verify (
    tenant_id TEXT PRIMARY KEY,
    at TEXT NOT NULL,
    ok INTEGER NOT NULL,
    events_checked INTEGER NOT NULL,
    checkpoint TEXT,
    problem TEXT
) STRICT;

-- The key the as-of snapshot cache signs its files with (one row): kept
-- in the database, so writing the cache's folder cannot forge a snapshot.
CREATE TABLE IF NOT EXISTS audit_snapshot_key (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    key BLOB NOT NULL CHECK (length(key) = 32)
) STRICT;

-- This database's identity (one row, random, made once). The key store
-- beside the database records it, so a key store of another database is
-- never sealed with or restored over this one.
CREATE TABLE IF NOT EXISTS database_identity (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    identity TEXT NOT NULL
) STRICT;

-- The SCIM directory. `name` is the unique name (a User's userName, a
-- Group's displayName); `name_key` its Unicode-folded form, unique per
-- tenant and kind. `document` holds the canonical attributes as JSON.
-- `created_position` (the position of the creating event) gives lists a
-- stable order.
CREATE TABLE IF NOT EXISTS scim_resources (
    tenant_id TEXT NOT NULL,
    kind TEXT NOT NULL CHECK (kind IN ('User', 'Group')),
    id TEXT NOT NULL,
    external_id TEXT,
    name TEXT NOT NULL,
    name_key TEXT NOT NULL,
    document TEXT NOT NULL,
    created TEXT NOT NULL,
    last_modified TEXT NOT NULL,
    version INTEGER NOT NULL,
    created_position INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, id)
) STRICT, WITHOUT ROWID;

CREATE UNIQUE INDEX IF NOT EXISTS scim_resources_by_name ON scim_resources (tenant_id, kind, name_key);
CREATE INDEX IF NOT EXISTS scim_resources_by_external_id ON scim_resources (tenant_id, kind, external_id);
CREATE INDEX IF NOT EXISTS scim_resources_in_order ON scim_resources (tenant_id, kind, created_position);

-- Group membership, apart from the group's document.
CREATE TABLE IF NOT EXISTS scim_members (
    tenant_id TEXT NOT NULL,
    group_id TEXT NOT NULL,
    member_id TEXT NOT NULL,
    member_type TEXT NOT NULL CHECK (member_type IN ('User', 'Group')),
    PRIMARY KEY (tenant_id, group_id, member_id)
) STRICT, WITHOUT ROWID;

CREATE INDEX IF NOT EXISTS scim_members_by_member ON scim_members (tenant_id, member_id);

-- The member directory: what Synchronize applied. `properties` and
-- `app_properties` are JSON objects, `roles` a JSON list.
CREATE TABLE IF NOT EXISTS members (
    tenant_id TEXT NOT NULL,
    member_id TEXT NOT NULL,
    user_id TEXT NOT NULL,
    external_id TEXT,
    user_name TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('active', 'disabled', 'left', 'purged')),
    properties TEXT NOT NULL,
    roles TEXT NOT NULL,
    app_properties TEXT NOT NULL,
    joined_at TEXT NOT NULL,
    left_at TEXT,
    grace_until TEXT,
    disabled_at TEXT,
    revoke_sessions INTEGER NOT NULL,
    updated_at TEXT NOT NULL,
    version INTEGER NOT NULL,
    last_position INTEGER NOT NULL,
    -- What a member search looks in (`members::search_text`). Nullable only
    -- because SQLite adds a column to an older file that way; `migrate`
    -- fills it in the same transaction.
    search_text TEXT,
    PRIMARY KEY (tenant_id, member_id)
) STRICT, WITHOUT ROWID;

CREATE INDEX IF NOT EXISTS members_by_user ON members (tenant_id, user_id);
CREATE INDEX IF NOT EXISTS members_by_external_id ON members (tenant_id, external_id) WHERE external_id IS NOT NULL;
CREATE INDEX IF NOT EXISTS members_by_status ON members (tenant_id, status);

-- A tenant's mapping, role bindings and Synchronize settings, as last set.
CREATE TABLE IF NOT EXISTS member_settings (
    tenant_id TEXT NOT NULL,
    kind TEXT NOT NULL CHECK (kind IN ('mapping', 'roles', 'sync')),
    value TEXT NOT NULL,
    position INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, kind)
) STRICT, WITHOUT ROWID;

-- The log position the member directory reflects, per tenant.
CREATE TABLE IF NOT EXISTS member_checkpoints (
    tenant_id TEXT PRIMARY KEY,
    position INTEGER NOT NULL,
    run_id TEXT NOT NULL
) STRICT;

-- Users whose change the last run rejected or held: still pending.
CREATE TABLE IF NOT EXISTS member_deferred (
    tenant_id TEXT NOT NULL,
    user_id TEXT NOT NULL,
    reason TEXT NOT NULL,
    detail TEXT NOT NULL,
    run_id TEXT NOT NULL,
    PRIMARY KEY (tenant_id, user_id)
) STRICT, WITHOUT ROWID;

CREATE TABLE IF NOT EXISTS sync_runs (
    tenant_id TEXT NOT NULL,
    run_id TEXT NOT NULL,
    trigger TEXT NOT NULL,
    actor TEXT NOT NULL,
    status TEXT NOT NULL,
    started_at TEXT NOT NULL,
    finished_at TEXT,
    from_position INTEGER NOT NULL,
    to_position INTEGER NOT NULL,
    through_user TEXT,
    counts TEXT NOT NULL,
    duration_ms INTEGER,
    held_reason TEXT,
    error TEXT,
    applied_by TEXT,
    scheduled_for TEXT,
    approves TEXT,
    PRIMARY KEY (tenant_id, run_id)
) STRICT, WITHOUT ROWID;

CREATE INDEX IF NOT EXISTS sync_runs_by_start ON sync_runs (tenant_id, started_at);

-- Joiners and leavers: one row per movement of a member. `applied_by` and
-- `said_by` are JSON words (actor, request id, User-Agent, run).
CREATE TABLE IF NOT EXISTS audit_movements (
    tenant_id TEXT NOT NULL,
    position INTEGER NOT NULL,
    kind TEXT NOT NULL CHECK (kind IN ('joined', 'rejoined', 'disabled', 'enabled', 'left', 'purged')),
    member_id TEXT NOT NULL,
    user_id TEXT,
    user_name TEXT,
    external_id TEXT,
    effective_at TEXT NOT NULL,
    applied_by TEXT NOT NULL,
    said_position INTEGER,
    said_at TEXT,
    said_by TEXT,
    PRIMARY KEY (tenant_id, position)
) STRICT, WITHOUT ROWID;

-- Per user, the last SCIM event of each type that can ask for a movement.
CREATE TABLE IF NOT EXISTS audit_causes (
    tenant_id TEXT NOT NULL,
    user_id TEXT NOT NULL,
    event_type TEXT NOT NULL,
    position INTEGER NOT NULL,
    recorded_at TEXT NOT NULL,
    word TEXT NOT NULL,
    PRIMARY KEY (tenant_id, user_id, event_type)
) STRICT, WITHOUT ROWID;

-- Erased persons (`SubjectErased`), one row per SCIM user whose key was
-- destroyed: what every open of the database checks the key store against
-- (an erasure whose key outlived a crash is finished there), and what the
-- console and the API say of an erased member. Names nobody.
CREATE TABLE IF NOT EXISTS erasures (
    tenant_id TEXT NOT NULL,
    user_id TEXT NOT NULL,
    member_id TEXT,
    -- The keys the erasure destroyed, a JSON list (the same on each row
    -- of one erasure).
    keys TEXT NOT NULL,
    in_clear INTEGER NOT NULL,
    erased_at TEXT NOT NULL,
    position INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, user_id)
) STRICT, WITHOUT ROWID;

-- The event feed: each public event as served and delivered (JSON), in
-- cursor order per tenant. A rowid table, the key in an index beside it:
-- a body is about 2 KB, over what a WITHOUT ROWID row keeps in its page
-- (about 1 KB on 4 KB pages), and there each row spilled into an overflow
-- page of its own (4.5 KB a row on disk and in the WAL; `feed_events`,
-- the layout before, is dropped and refolded as `feed_rows` on open).
CREATE TABLE IF NOT EXISTS feed_rows (
    tenant_id TEXT NOT NULL,
    position INTEGER NOT NULL,
    seq INTEGER NOT NULL,
    type TEXT NOT NULL,
    body TEXT NOT NULL,
    PRIMARY KEY (tenant_id, position, seq)
) STRICT;

-- Webhook endpoints (folded), and their signing secrets (not folded: kept
-- beside the log, never in it; a rebuild leaves them alone).
CREATE TABLE IF NOT EXISTS webhooks (
    tenant_id TEXT NOT NULL,
    webhook_id TEXT NOT NULL,
    settings TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('active', 'paused', 'disabled')),
    disabled_reason TEXT,
    from_position INTEGER NOT NULL,
    from_seq INTEGER NOT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    secret_rotated_at TEXT,
    previous_secret_valid_until TEXT,
    version INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, webhook_id)
) STRICT, WITHOUT ROWID;

CREATE TABLE IF NOT EXISTS webhook_secrets (
    tenant_id TEXT NOT NULL,
    webhook_id TEXT NOT NULL,
    secret TEXT NOT NULL,
    created_at TEXT NOT NULL,
    valid_until TEXT
) STRICT;

CREATE INDEX IF NOT EXISTS webhook_secrets_by_webhook ON webhook_secrets (tenant_id, webhook_id);

-- Projections created empty on a database that already had events: not to
-- be read until a rebuild has folded the log into them.
CREATE TABLE IF NOT EXISTS projections_pending (
    name TEXT PRIMARY KEY
) STRICT;
"#;

/// Projections a later build added, by name, with the table that marks
/// them present: on a database that already holds events they start empty
/// and must be folded from the log before they are read (see
/// [`migrate`]).
const ADDED_PROJECTIONS: &[(&str, &str)] = &[("audit", "audit_movements"), ("feed", "feed_rows")];

/// Tables of an earlier layout, replaced by a table of another name that
/// is folded anew (see [`ADDED_PROJECTIONS`]).
const DROPPED_TABLES: &[&str] = &["feed_events"];

/// Columns added to a projection table after it first shipped: a file made
/// by an earlier build gets them as NULL. For the `sync_runs` fields that
/// is what the events it folded said (they predate the fields);
/// `members.search_text` is derived, and filled right after (`migrate`).
const ADDED_COLUMNS: &[(&str, &str, &str)] = &[
    ("sync_runs", "scheduled_for", "TEXT"),
    ("sync_runs", "approves", "TEXT"),
    ("members", "search_text", "TEXT"),
    // The id of the data key that seals a user's personal values in the
    // log (`UserCreated::key`); NULL for groups and for users created
    // before sealing.
    ("scim_resources", "key_id", "INTEGER"),
    // When the member's person was erased (`SubjectErased`).
    ("members", "erased_at", "TEXT"),
];

/// Indexes over added columns, created once the columns are there and
/// filled. `members_list` answers a member list page from the index alone:
/// the name order, then every column a filter reads (status, roles, search
/// text), so neither a deep page nor a search reads a member row it does
/// not show (search at 100,000 members: 719 -> 47-74 ms). It replaced
/// `members_by_name`, which held the order only.
const AFTER_COLUMNS: &str = "
DROP INDEX IF EXISTS members_by_name;
CREATE INDEX IF NOT EXISTS members_list ON members
    (tenant_id, user_name COLLATE NOCASE, member_id, status, roles, search_text);
";

/// Creates the projection tables if they are missing, and adds columns
/// that later builds introduced. Run through the writer, so it serialises
/// with every other write. Returns the projections still to be folded: the
/// ones it (or an earlier, interrupted open) created on a database that
/// already had tenants. The caller must rebuild them before anything reads
/// them; the rebuild clears their names from `projections_pending`.
pub fn migrate(connection: &dyn Db) -> Result<Vec<String>, ProjectionError> {
    let table_exists = |table: &str| {
        connection
            .table_exists(table)
            .map_err(ProjectionError::storage("reading the projection tables"))
    };
    if connection.dialect() == Dialect::Postgres {
        return migrate_postgres(connection);
    }
    let mut missing = Vec::new();
    if table_exists("tenants")? {
        let has_tenants: bool = connection
            .query_row("SELECT EXISTS (SELECT 1 FROM tenants)", [], |row| row.get(0))
            .map_err(ProjectionError::storage("reading the projection tables"))?;
        if has_tenants {
            for (projection, table) in ADDED_PROJECTIONS {
                if !table_exists(table)? {
                    missing.push(*projection);
                }
            }
        }
    }
    connection
        .execute_batch(CREATE)
        .map_err(ProjectionError::storage("creating projection tables"))?;
    for (table, column, kind) in ADDED_COLUMNS {
        let present: bool = connection
            .query_row(
                "SELECT EXISTS (SELECT 1 FROM pragma_table_info(?1) WHERE name = ?2)",
                [table, column],
                |row| row.get(0),
            )
            .map_err(ProjectionError::storage("reading a projection table's columns"))?;
        if !present {
            connection
                .execute_batch(&format!("ALTER TABLE {table} ADD COLUMN {column} {kind}"))
                .map_err(ProjectionError::storage("adding a projection column"))?;
            // In the same transaction as the column, so a file never has
            // it unfilled, and an open that did not add it scans nothing.
            if (*table, *column) == ("members", "search_text") {
                fill_search_text(connection)?;
            }
        }
    }
    connection
        .execute_batch(AFTER_COLUMNS)
        .map_err(ProjectionError::storage("creating projection indexes"))?;
    for table in DROPPED_TABLES {
        connection
            .execute_batch(&format!("DROP TABLE IF EXISTS {table}"))
            .map_err(ProjectionError::storage("dropping a replaced projection table"))?;
    }
    for projection in missing {
        connection
            .execute(
                "INSERT INTO projections_pending (name) VALUES (?1) ON CONFLICT DO NOTHING",
                [projection],
            )
            .map_err(ProjectionError::storage("marking a projection to fold"))?;
    }
    connection
        .prepare_cached("SELECT name FROM projections_pending ORDER BY name")
        .and_then(|mut statement| {
            statement
                .query_map([], |row| row.get::<_, String>(0))?
                .collect::<Result<Vec<String>, DbError>>()
        })
        .map_err(ProjectionError::storage("reading the projections to fold"))
}

/// ASCII case folding in PostgreSQL, as SQLite's NOCASE folds: the same
/// on every server whatever its locale (a collation would not be).
pub const POSTGRES_NOCASE: &str = "'ABCDEFGHIJKLMNOPQRSTUVWXYZ', 'abcdefghijklmnopqrstuvwxyz'";

/// `expression` as it compares in a NOCASE column (`tenants.name`): on
/// SQLite the column's collation folds it; on PostgreSQL the same ASCII
/// fold is spelled out.
pub fn nocase(connection: &dyn Db, expression: &str) -> String {
    match connection.dialect() {
        Dialect::Sqlite => expression.to_owned(),
        Dialect::Postgres => format!("translate({expression}, {POSTGRES_NOCASE})"),
    }
}

/// The rows of a JSON array of strings bound at `param`, as a table `j`
/// with one column `value`: SQLite's `json_each`, PostgreSQL's
/// `jsonb_array_elements_text`.
pub fn json_list(connection: &dyn Db, param: &str) -> String {
    match connection.dialect() {
        Dialect::Sqlite => format!("json_each({param}) j"),
        Dialect::Postgres => {
            format!("jsonb_array_elements_text(CAST({param} AS TEXT)::jsonb) AS j(value)")
        }
    }
}

/// The join that keeps its left side as the outer loop: SQLite's CROSS
/// JOIN (a planner directive there); a plain JOIN on PostgreSQL, whose
/// planner needs no telling (and whose CROSS JOIN takes no ON).
pub fn outer_loop_join(connection: &dyn Db) -> &'static str {
    match connection.dialect() {
        Dialect::Sqlite => "CROSS JOIN",
        Dialect::Postgres => "JOIN",
    }
}

/// Whether the text `needle` occurs in `haystack`, bytewise: SQLite's
/// `instr`, PostgreSQL's `strpos`.
pub fn contains(connection: &dyn Db, haystack: &str, needle: &str) -> String {
    match connection.dialect() {
        Dialect::Sqlite => format!("instr({haystack}, {needle}) > 0"),
        Dialect::Postgres => format!("strpos({haystack}, {needle}) > 0"),
    }
}

/// SQLite table text as PostgreSQL spells it, so each layout is written
/// once (the projections', the key store's, the delivery state's): text is
/// `COLLATE "C"` (bytewise, as SQLite's BINARY), INTEGER is BIGINT, BLOB is
/// BYTEA, an `INTEGER PRIMARY KEY` (SQLite's rowid, given a value when an
/// insert leaves it out) an identity column, `STRICT` and `WITHOUT ROWID`
/// go, and comment lines with them. A NOCASE column loses its collation:
/// its fold is an index of its own (`postgres_tables`).
pub fn postgres_ddl(sqlite: &str) -> String {
    let mut out = String::with_capacity(sqlite.len() + 256);
    for line in sqlite.lines() {
        if line.trim_start().starts_with("--") {
            continue;
        }
        let line = line
            .replace(") STRICT, WITHOUT ROWID;", ");")
            .replace(") STRICT;", ");")
            .replace(" INTEGER PRIMARY KEY", " BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY")
            .replace(" INTEGER", " BIGINT")
            .replace(" BLOB", " BYTEA")
            .replace(" UNIQUE COLLATE NOCASE", "")
            .replace(" TEXT", " TEXT COLLATE \"C\"")
            .replace("length(key)", "octet_length(key)");
        out.push_str(&line);
        out.push('\n');
    }
    out
}

/// The tables on PostgreSQL: made whole at once (a PostgreSQL database
/// has no older layout to bring forward yet), under a transaction-scoped
/// advisory lock so that nodes starting together do not race.
fn migrate_postgres(connection: &dyn Db) -> Result<Vec<String>, ProjectionError> {
    connection
        .execute_batch(&format!(
            "SELECT pg_advisory_xact_lock({}); {}",
            events::postgres::SCHEMA_LOCK,
            postgres_tables()
        ))
        .map_err(ProjectionError::storage("creating projection tables"))?;
    Ok(Vec::new())
}

/// [`CREATE`] in PostgreSQL's words, translated rather than written twice
/// so the two layouts cannot drift: every text column compares bytewise
/// (`COLLATE "C"`, SQLite's BINARY), integers are 64-bit, blobs `BYTEA`;
/// NOCASE columns get an index on their ASCII-folded value instead; the
/// table that orders by SQLite's `rowid` (`webhook_secrets`) gets a column
/// of that name.
/// What SCIM filters read on PostgreSQL (`directory::query`): each
/// document as `jsonb` and its folded copy (every string folded by
/// `functions::fold`, the one Rust function that decides case on both
/// engines), and two functions: the values at a path, one row for a
/// scalar and one per element of a list, each with its folded twin (what
/// SQLite's `json_each` gives, with `scim_fold` beside it), and an instant
/// read from text that is NULL rather than an error when it is none.
const POSTGRES_SEARCH: &str = r#"
ALTER TABLE scim_resources ADD COLUMN IF NOT EXISTS doc JSONB;
ALTER TABLE scim_resources ADD COLUMN IF NOT EXISTS folded JSONB;
CREATE OR REPLACE FUNCTION rollcall_values(doc JSONB, folded JSONB, path TEXT[])
RETURNS TABLE (type TEXT, value JSONB, folded JSONB)
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $values$
    SELECT jsonb_typeof(e.value), e.value, f.value
    FROM jsonb_array_elements(CASE WHEN jsonb_typeof(doc #> path) = 'array' THEN doc #> path
                                   WHEN doc #> path IS NULL THEN '[]'::jsonb
                                   ELSE jsonb_build_array(doc #> path) END)
         WITH ORDINALITY AS e(value, n)
    LEFT JOIN jsonb_array_elements(CASE WHEN jsonb_typeof(folded #> path) = 'array' THEN folded #> path
                                        WHEN folded #> path IS NULL THEN '[]'::jsonb
                                        ELSE jsonb_build_array(folded #> path) END)
         WITH ORDINALITY AS f(value, n) ON f.n = e.n
$values$;
CREATE OR REPLACE FUNCTION rollcall_instant(text TEXT) RETURNS TIMESTAMPTZ
LANGUAGE plpgsql STABLE PARALLEL SAFE AS $instant$
BEGIN
    RETURN text::timestamptz;
EXCEPTION WHEN others THEN
    RETURN NULL;
END
$instant$;
"#;

pub fn postgres_tables() -> String {
    let mut out = postgres_ddl(CREATE);
    // The one table that orders ties by SQLite's rowid gets a column of
    // that name.
    out = out.replace(
        "CREATE TABLE IF NOT EXISTS webhook_secrets (\n",
        "CREATE TABLE IF NOT EXISTS webhook_secrets (\n    rowid BIGINT GENERATED BY DEFAULT AS IDENTITY,\n",
    );
    for (table, column, kind) in ADDED_COLUMNS {
        let kind = match *kind {
            "INTEGER" => "BIGINT",
            _ => "TEXT COLLATE \"C\"",
        };
        out.push_str(&format!("ALTER TABLE {table} ADD COLUMN IF NOT EXISTS {column} {kind};\n"));
    }
    out.push_str(POSTGRES_SEARCH);
    out.push_str(&format!(
        "CREATE UNIQUE INDEX IF NOT EXISTS tenants_by_name ON tenants \
         (translate(name, {POSTGRES_NOCASE}));\n\
         CREATE INDEX IF NOT EXISTS members_list ON members \
         (tenant_id, translate(user_name, {POSTGRES_NOCASE}), member_id);\n"
    ));
    out
}

/// Fills `members.search_text` of every member of a file from an earlier
/// build, once, when the column is added.
fn fill_search_text(connection: &dyn Db) -> Result<(), ProjectionError> {
    let storage = ProjectionError::storage;
    let mut select = connection
        .prepare_cached(
            "SELECT tenant_id, member_id, user_name, external_id, properties FROM members \
             WHERE search_text IS NULL",
        )
        .map_err(storage("reading members to index"))?;
    let mut update = connection
        .prepare_cached(
            "UPDATE members SET search_text = ?3 WHERE tenant_id = ?1 AND member_id = ?2",
        )
        .map_err(storage("indexing members"))?;
    let mut rows = select.query([]).map_err(storage("reading members to index"))?;
    while let Some(row) = rows.next().map_err(storage("reading members to index"))? {
        let read = |index| row.get::<_, Option<String>>(index).map_err(storage("reading a member"));
        let (tenant, member_id) = (read(0)?, read(1)?);
        let properties: Map<String, Value> =
            read(4)?.and_then(|text| serde_json::from_str(&text).ok()).unwrap_or_default();
        let text = search_text(&read(2)?.unwrap_or_default(), read(3)?.as_deref(), &properties);
        update
            .execute(events::params![tenant, member_id, text])
            .map_err(storage("indexing members"))?;
    }
    Ok(())
}
