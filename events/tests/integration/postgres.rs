//! The log on a real PostgreSQL (issue 22): each test makes a database of
//! its own in the cluster the environment names (`PGHOST`, `PGPORT`,
//! `PGUSER`, `PGPASSWORD`: `scripts/test` runs the suite under Debian's
//! `pg_virtualenv`, a throw-away cluster with fsync on). Without one the
//! tests say so and pass, unless `ROLLCALL_REQUIRE_POSTGRES` is set, as
//! scripts/test sets it: there a missing cluster is a failure.

use std::time::Duration;

use events::db::Db;
use events::postgres::{PgLog, PgPool, PgWriter, PgWriterOptions};
use events::{
    Actor, AppendError, CommandContext, ExecuteError, ExpectedVersion, LogError, LogTransaction,
    NewEvent,
};

/// The cluster's connection settings, key-value form, without a database.
fn cluster() -> Option<String> {
    let host = std::env::var("PGHOST").ok()?;
    let mut settings = format!("host={host}");
    for (variable, key) in [("PGPORT", "port"), ("PGUSER", "user"), ("PGPASSWORD", "password")] {
        if let Ok(value) = std::env::var(variable) {
            settings.push_str(&format!(" {key}={value}"));
        }
    }
    Some(settings)
}

/// A fresh database's URL, or `None` (and why) where there is no cluster.
fn database() -> Option<String> {
    let Some(cluster) = cluster() else {
        assert!(
            std::env::var_os("ROLLCALL_REQUIRE_POSTGRES").is_none(),
            "ROLLCALL_REQUIRE_POSTGRES is set but PGHOST is not: no cluster to test against"
        );
        eprintln!("no PostgreSQL cluster (PGHOST unset): the PostgreSQL tests are skipped");
        return None;
    };
    let admin = PgPool::new(&format!("{cluster} dbname=postgres"), 1).unwrap();
    let name = format!("rollcall_{}", ulid::Ulid::generate().to_string().to_lowercase());
    admin.get().unwrap().execute_batch(&format!("CREATE DATABASE {name}")).unwrap();
    Some(format!("{cluster} dbname={name}"))
}

fn event(n: u64) -> NewEvent {
    NewEvent {
        event_type: "Noted".to_owned(),
        schema_version: 1,
        payload: format!("{{\"n\":{n}}}"),
    }
}

fn context() -> CommandContext {
    CommandContext::new(Actor::Cli { user: Some("test".to_owned()) })
}

#[test]
fn each_tenant_has_its_own_gapless_chain_and_a_tampered_event_is_named() {
    let Some(url) = database() else { return };
    let log = PgLog::connect(&url, 4).unwrap();
    for n in 1..=3 {
        let recorded =
            log.append("acme", "user:1", ExpectedVersion::Any, &[event(n)], &context()).unwrap();
        assert_eq!(recorded[0].position, n);
        assert_eq!(recorded[0].version, n);
    }
    let other = log
        .append("globex", "user:9", ExpectedVersion::NoStream, &[event(1), event(2)], &context())
        .unwrap();
    assert_eq!((other[0].position, other[1].position), (1, 2), "positions are per tenant");
    assert_eq!(log.tenant_head("acme").unwrap(), 3);
    let stream = log.read_stream("acme", "user:1").unwrap();
    assert_eq!(stream.len(), 3);
    assert_eq!(stream[1].prev_hash, stream[0].hash);
    assert!(stream.iter().all(events::RecordedEvent::hash_is_consistent));
    assert_eq!(log.verify_tenant("acme").unwrap(), 3);
    assert_eq!(log.verify_tenant("globex").unwrap(), 2);

    // A version conflict writes nothing and keeps the chain as it was.
    let conflict = log
        .append("acme", "user:1", ExpectedVersion::Exact(1), &[event(9)], &context())
        .unwrap_err();
    assert!(matches!(conflict, AppendError::Conflict { actual: Some(3), .. }), "{conflict:?}");
    assert_eq!(log.tenant_head("acme").unwrap(), 3);
    let bad = NewEvent { payload: "not json".to_owned(), ..event(1) };
    let refused =
        log.append("acme", "user:1", ExpectedVersion::Any, &[bad], &context()).unwrap_err();
    assert!(matches!(refused, AppendError::InvalidEvent { .. }), "{refused:?}");

    // The server itself refuses edits of the log.
    let raw_pool = PgPool::new(&url, 1).unwrap();
    let raw = raw_pool.get().unwrap();
    for edit in [
        "UPDATE events SET payload = '{\"n\":42}' WHERE tenant = 'acme' AND position = 2",
        "DELETE FROM events WHERE tenant = 'acme' AND position = 3",
        "TRUNCATE events",
    ] {
        let refused = raw.execute_batch(edit).unwrap_err().to_string();
        assert!(refused.contains("append-only"), "{edit}: {refused}");
    }
    let report = log.verify(events::VerifyScope::All).unwrap();
    assert_eq!((report.events_checked, &report.failure), (5, &None));
    assert!(report.missing_guards.is_empty() && report.altered_guards.is_empty(), "{report:?}");

    // With its guards switched off, an edit behind the log's back is found,
    // by position, and so are the guards.
    raw.execute_batch(
        "ALTER TABLE events DISABLE TRIGGER USER; \
         UPDATE events SET payload = '{\"n\":42}' WHERE tenant = 'acme' AND position = 2",
    )
    .unwrap();
    let broken = log.verify_tenant("acme").unwrap_err();
    assert!(matches!(broken, LogError::HashMismatch { position: 2, .. }), "{broken:?}");
    assert_eq!(log.verify_tenant("globex").unwrap(), 2, "another tenant is untouched");
    let report = log.verify(events::VerifyScope::Tenant("globex".to_owned())).unwrap();
    assert_eq!(report.missing_guards.len(), 2, "{report:?}");
    // The last event removed: the head row no longer matches the chain.
    raw.execute_batch("DELETE FROM events WHERE tenant = 'globex' AND position = 2").unwrap();
    let cut = log.verify(events::VerifyScope::Tenant("globex".to_owned())).unwrap();
    assert_eq!(cut.failure.map(|failure| failure.position), Some(2), "the cut end is found");
    // Reads by position and by time name their tenant.
    assert_eq!(log.read_at("acme", 3).unwrap().map(|event| event.position), Some(3));
    assert_eq!(log.read_at("globex", 3).unwrap(), None);
    assert_eq!(log.first_position_at("acme", "0000").unwrap(), 1);
    assert_eq!(log.first_position_at("acme", "9999").unwrap(), 4, "after the last: head + 1");
    assert_eq!(log.tenants().unwrap(), ["acme", "globex"]);
    assert_eq!(log.head().unwrap(), 3 + 2, "the head rows: acme at 3, globex at 2");
}

/// The late-commit bug of logs that number events from a sequence: a slow
/// transaction holds an earlier position while faster ones commit later
/// positions, and a reader tailing by position skips the slow one for
/// good. Here a slow append holds a tenant's head on one node while 64
/// appenders on two nodes queue behind it and a reader tails the tenant:
/// the reader sees every position, in order, none skipped or twice, and
/// another tenant appends freely meanwhile.
#[test]
fn a_slow_transaction_is_never_skipped_by_a_reader_across_two_nodes() {
    let Some(url) = database() else { return };
    let node_a = PgLog::connect(&url, 40).unwrap();
    let node_b = PgLog::connect(&url, 40).unwrap();
    node_a.append("acme", "setup", ExpectedVersion::NoStream, &[event(0)], &context()).unwrap();

    let mut slow = node_a.transaction().unwrap();
    let held = slow.append("acme", "slow", ExpectedVersion::NoStream, &[event(1)], &context());
    assert_eq!(held.unwrap()[0].position, 2, "the slow transaction holds position 2");

    const APPENDERS: u64 = 64;
    const EACH: u64 = 5;
    let total = 2 + APPENDERS * EACH;
    let reader_log = node_b.clone();
    let reader = std::thread::spawn(move || {
        let mut seen = 0;
        let started = std::time::Instant::now();
        while seen < total {
            for event in reader_log.read_forward("acme", seen, 50).unwrap() {
                assert_eq!(event.position, seen + 1, "a position was skipped or repeated");
                seen = event.position;
            }
            assert!(started.elapsed() < Duration::from_secs(60), "the reader stalled at {seen}");
            std::thread::sleep(Duration::from_millis(2));
        }
        seen
    });
    let mut appenders = Vec::new();
    for task in 0..APPENDERS {
        let node = if task % 2 == 0 { node_a.clone() } else { node_b.clone() };
        appenders.push(std::thread::spawn(move || {
            for n in 0..EACH {
                node.append(
                    "acme",
                    &format!("user:{task}"),
                    ExpectedVersion::Any,
                    &[event(n)],
                    &context(),
                )
                .unwrap();
            }
        }));
    }
    // While acme's head is held, another tenant is not held up.
    for n in 1..=20 {
        let started = std::time::Instant::now();
        let other =
            node_b.append("globex", "user:1", ExpectedVersion::Any, &[event(n)], &context());
        assert!(started.elapsed() < Duration::from_secs(5), "another tenant waits for nobody");
        assert_eq!(other.unwrap()[0].position, n);
    }
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(node_b.tenant_head("acme").unwrap(), 1, "nothing passed the slow one");
    slow.commit().unwrap();
    for appender in appenders {
        appender.join().unwrap();
    }
    assert_eq!(reader.join().unwrap(), total);
    assert_eq!(node_a.verify_tenant("acme").unwrap(), total);
    assert_eq!(node_b.verify_tenant("globex").unwrap(), 20);
}

/// Two nodes racing to create one stream: exactly one wins.
#[test]
fn racing_creates_on_two_nodes_let_exactly_one_through() {
    let Some(url) = database() else { return };
    let nodes = [PgLog::connect(&url, 16).unwrap(), PgLog::connect(&url, 16).unwrap()];
    let mut racers = Vec::new();
    for task in 0..32u64 {
        let node = nodes[(task % 2) as usize].clone();
        racers.push(std::thread::spawn(move || {
            node.append("acme", "user:same", ExpectedVersion::NoStream, &[event(task)], &context())
        }));
    }
    let mut won = 0;
    for racer in racers {
        match racer.join().unwrap() {
            Ok(_) => won += 1,
            Err(AppendError::Conflict { actual: Some(1), .. }) => {}
            Err(other) => panic!("{other:?}"),
        }
    }
    assert_eq!(won, 1);
    assert_eq!(nodes[1].verify_tenant("acme").unwrap(), 1);
    // A dropped, uncommitted transaction leaves nothing and holds nothing.
    let mut abandoned = nodes[0].transaction().unwrap();
    abandoned.append("acme", "user:x", ExpectedVersion::NoStream, &[event(1)], &context()).unwrap();
    drop(abandoned);
    let started = std::time::Instant::now();
    let next =
        nodes[1].append("acme", "user:y", ExpectedVersion::NoStream, &[event(1)], &context());
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "the abandoned transaction's lock is released"
    );
    assert_eq!(next.unwrap()[0].position, 2);
    assert!(nodes[0].read_stream("acme", "user:x").unwrap().is_empty());
}

/// The SQL seam on PostgreSQL reads what SQLite's reads: each type rollcall
/// stores, `NULL` as `None`, a column of the wrong type an error; and a
/// unique violation is recognised as one.
#[test]
fn the_sql_seam_reads_and_binds_each_type_as_sqlite_does() {
    use events::db::{DbError, OptionalExtension};
    use events::params;
    let Some(url) = database() else { return };
    let pool = PgPool::new(&url, 2).unwrap();
    let db = pool.get().unwrap();
    db.execute_batch("CREATE TABLE t (a TEXT PRIMARY KEY, b BIGINT, c BYTEA, d DOUBLE PRECISION)")
        .unwrap();
    let bytes: &[u8] = b"xy";
    assert_eq!(
        db.execute("INSERT INTO t VALUES (?1, ?2, ?3, ?4)", params!["x", 7i64, bytes, 1.5f64])
            .unwrap(),
        1
    );
    let row = db
        .query_row(
            "SELECT a, b, c, d, CAST(NULL AS TEXT), EXISTS (SELECT 1 FROM t) FROM t",
            [],
            |row| {
                Ok((
                    row.get::<_, String>(0)?,
                    row.get::<_, i64>(1)?,
                    row.get::<_, Vec<u8>>(2)?,
                    row.get::<_, f64>(3)?,
                    row.get::<_, Option<String>>(4)?,
                    row.get::<_, bool>(5)?,
                ))
            },
        )
        .unwrap();
    assert_eq!(row, ("x".to_owned(), 7, b"xy".to_vec(), 1.5, None, true));
    let wrong = db.query_row("SELECT b FROM t", [], |row| row.get::<_, String>(0));
    assert!(matches!(wrong, Err(DbError::Column { index: 0, .. })), "{wrong:?}");
    let none: Option<String> =
        db.query_row("SELECT a FROM t WHERE b = ?1", [8i64], |row| row.get(0)).optional().unwrap();
    assert_eq!(none, None);
    let mut statement = db.prepare_cached("SELECT a FROM t WHERE b > ?1 ORDER BY a").unwrap();
    let all: Vec<String> =
        statement.query_map([0i64], |row| row.get(0)).unwrap().collect::<Result<_, _>>().unwrap();
    assert_eq!(all, ["x"]);
    drop(statement);
    let twice = db.execute("INSERT INTO t (a) VALUES (?1)", ["x"]).unwrap_err();
    assert!(twice.is_unique_violation(), "{twice}");
    let missing = db.execute("DELETE FROM nowhere", []).unwrap_err();
    assert!(missing.is_missing_table(), "{missing}");
}

fn writer(url: &str, lanes: usize) -> (PgLog, PgWriter) {
    let log = PgLog::connect(url, lanes + 2).unwrap();
    let options = PgWriterOptions { lanes, ..PgWriterOptions::default() };
    let writer = PgWriter::start(log.pool().clone(), options).unwrap();
    (log, writer)
}

#[test]
fn the_writer_commits_each_tenant_in_queue_order_while_tenants_write_in_parallel() {
    let Some(url) = database() else { return };
    let (log, writer) = writer(&url, 4);
    let writer = std::sync::Arc::new(writer);
    // Eight submitters, two per tenant, each queueing 40 appends to a
    // stream of its own without waiting in between: batches form.
    let submitters: Vec<_> = (0..8)
        .map(|submitter| {
            let writer = writer.clone();
            std::thread::spawn(move || {
                let tenant = format!("tenant-{}", submitter % 4);
                let stream = format!("s-{submitter}");
                let pending: Vec<_> = (1..=40)
                    .map(|n| {
                        let (tenant, stream) = (tenant.clone(), stream.clone());
                        writer.execute(&tenant.clone(), move |tx| {
                            let expected = if n == 1 {
                                ExpectedVersion::NoStream
                            } else {
                                ExpectedVersion::Exact(n - 1)
                            };
                            tx.append(&tenant, &stream, expected, &[event(n)], &context())
                        })
                    })
                    .collect();
                pending.into_iter().map(|answer| answer.wait().unwrap().len()).sum::<usize>()
            })
        })
        .collect();
    let appended: usize = submitters.into_iter().map(|thread| thread.join().unwrap()).sum();
    assert_eq!(appended, 320);
    for tenant in 0..4 {
        let tenant = format!("tenant-{tenant}");
        assert_eq!(log.verify_tenant(&tenant).unwrap(), 80, "{tenant}'s chain is whole");
    }
    // Versions were checked against each stream's last: queue order held.
    for submitter in 0..8 {
        let stream =
            log.read_stream(&format!("tenant-{}", submitter % 4), &format!("s-{submitter}"));
        let versions: Vec<u64> = stream.unwrap().iter().map(|event| event.version).collect();
        assert_eq!(versions, (1..=40).collect::<Vec<_>>());
    }
    writer.shutdown();
}

#[test]
fn a_failing_a_panicking_and_a_careless_command_are_undone_alone() {
    let Some(url) = database() else { return };
    let (log, writer) = writer(&url, 1);
    fn append(
        stream: &'static str,
    ) -> impl FnOnce(&mut dyn LogTransaction) -> Result<Vec<events::RecordedEvent>, AppendError>
    {
        move |tx| tx.append("acme", stream, ExpectedVersion::NoStream, &[event(1)], &context())
    }
    // A slow first command holds the only lane, so the rest form a batch.
    let first = writer.execute("acme", move |tx| {
        std::thread::sleep(Duration::from_millis(200));
        append("first")(tx)
    });
    let failing = writer.execute("acme", |tx| {
        append("failing")(tx)?;
        Err::<(), _>(AppendError::InvalidEvent {
            stream: "failing".to_owned(),
            reason: "no".to_owned(),
        })
    });
    let panicking = writer.execute("acme", |tx| -> Result<(), AppendError> {
        append("panicking")(tx)?;
        panic!("a bug in one command");
    });
    // Swallows a storage error: PostgreSQL aborted its transaction, so its
    // writes cannot be kept, and it is told so.
    let careless = writer.execute("acme", |tx| {
        append("careless")(tx)?;
        let _ = tx.db().execute_batch("SELECT * FROM no_such_table");
        Ok::<_, AppendError>(())
    });
    let last = writer.execute("acme", append("last"));
    assert_eq!(first.wait().unwrap().len(), 1);
    assert!(matches!(failing.wait(), Err(ExecuteError::Command(_))));
    assert!(
        matches!(panicking.wait(), Err(ExecuteError::Panicked(message)) if message.contains("a bug"))
    );
    assert!(matches!(careless.wait(), Err(ExecuteError::Log(_))));
    assert_eq!(last.wait().unwrap()[0].position, 2, "the undone appends left no gap");
    for gone in ["failing", "panicking", "careless"] {
        assert!(log.read_stream("acme", gone).unwrap().is_empty(), "{gone} was undone");
    }
    assert_eq!(log.verify_tenant("acme").unwrap(), 2);
}

#[test]
fn racing_commands_on_two_nodes_create_a_stream_once() {
    let Some(url) = database() else { return };
    let nodes = [writer(&url, 4), writer(&url, 4)];
    let pending: Vec<_> = (0..32)
        .map(|n| {
            nodes[n % 2].1.execute("acme", move |tx| {
                tx.append(
                    "acme",
                    "user:x",
                    ExpectedVersion::NoStream,
                    &[event(n as u64)],
                    &context(),
                )
            })
        })
        .collect();
    let won = pending.into_iter().map(|answer| answer.wait().is_ok()).filter(|ok| *ok).count();
    assert_eq!(won, 1);
    assert_eq!(nodes[0].0.verify_tenant("acme").unwrap(), 1);
}
